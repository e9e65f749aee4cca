//! The nesting limit is prost's, exactly: every value nested as deep as prost decodes is
//! accepted, one level deeper is refused, wherever the value sits (resource, scope, span,
//! event or link attributes, arrays or maps). A relay that validates with the reader therefore
//! never accepts a request that a later stage (a prost-based backend, the JSON exporters)
//! cannot carry.
#![cfg(not(loom))]

use prost::Message;
use spanflow_otlp::TraceRequest;
use spanflow_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_otlp::proto::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use spanflow_otlp::proto::resource::v1::Resource;
use spanflow_otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

/// A value `levels` maps (or arrays) deep around a string.
fn nested(levels: usize, arrays: bool) -> AnyValue {
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 0..levels {
        value = AnyValue {
            value: Some(if arrays {
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })
            } else {
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(value),
                        ..KeyValue::default()
                    }],
                })
            }),
        };
    }
    value
}

#[derive(Clone, Copy, Debug)]
enum Place {
    Resource,
    Scope,
    Span,
    Event,
    Link,
}

const PLACES: [Place; 5] = [
    Place::Resource,
    Place::Scope,
    Place::Span,
    Place::Event,
    Place::Link,
];

fn request_with(place: Place, value: AnyValue) -> Vec<u8> {
    let attr = vec![KeyValue {
        key: "deep".into(),
        value: Some(value),
        ..KeyValue::default()
    }];
    let mut span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "s".into(),
        ..Span::default()
    };
    let mut resource = Resource::default();
    let mut scope = InstrumentationScope::default();
    match place {
        Place::Resource => resource.attributes = attr,
        Place::Scope => scope.attributes = attr,
        Place::Span => span.attributes = attr,
        Place::Event => {
            span.events = vec![span::Event {
                name: "e".into(),
                attributes: attr,
                ..span::Event::default()
            }];
        }
        Place::Link => {
            span.links = vec![span::Link {
                trace_id: vec![3; 16],
                span_id: vec![4; 8],
                attributes: attr,
                ..span::Link::default()
            }];
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans: vec![span],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

/// The deepest nesting prost decodes at `place`, and whether the reader agrees at every
/// level around it.
fn boundary(place: Place, arrays: bool) -> usize {
    let mut deepest = None;
    for levels in 0..60 {
        let body = request_with(place, nested(levels, arrays));
        let prost_ok = ExportTraceServiceRequest::decode(&body[..]).is_ok();
        let ours = TraceRequest::parse(body.into());
        assert_eq!(
            ours.is_ok(),
            prost_ok,
            "{place:?}, {} deep ({}): prost {}, reader {:?}",
            levels,
            if arrays { "arrays" } else { "maps" },
            if prost_ok { "decodes" } else { "refuses" },
            ours.err()
        );
        if prost_ok {
            deepest = Some(levels);
        }
    }
    deepest.expect("shallow values decode")
}

#[test]
fn the_reader_refuses_exactly_what_prost_refuses() {
    for place in PLACES {
        for arrays in [false, true] {
            let deepest = boundary(place, arrays);
            assert!(deepest < 59, "{place:?}: the limit was not reached");
        }
    }
}

#[cfg(feature = "json")]
#[test]
fn the_deepest_accepted_request_converts_to_json() {
    for place in PLACES {
        let deepest = boundary(place, false);
        let body = request_with(place, nested(deepest, false));
        let request = TraceRequest::parse(body.into()).expect("at the limit");
        let json = spanflow_otlp::json::to_json(&request).expect("convertible");
        let text = String::from_utf8(json).expect("utf-8");
        assert!(text.contains("\"leaf\""), "{place:?}: {text}");
    }
}
