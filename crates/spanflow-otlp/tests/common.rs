//! Shared strategies and helpers for the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use proptest::prelude::*;
use spanflow_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_otlp::proto::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use spanflow_otlp::proto::resource::v1::Resource;
use spanflow_otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

pub fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        "[a-z0-9 ]{0,12}".prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        (-1e9f64..1e9).prop_map(any_value::Value::DoubleValue),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(any_value::Value::BytesValue),
    ];
    let leaf = leaf.prop_map(|v| AnyValue { value: Some(v) });
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|values| any_value::Value::ArrayValue(ArrayValue { values })),
            prop::collection::vec(("[a-z]{1,5}", inner), 0..3).prop_map(|kvs| {
                any_value::Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, v)| KeyValue {
                            key,
                            value: Some(v),
                            key_strindex: 0,
                        })
                        .collect(),
                })
            }),
        ]
        .prop_map(|v| AnyValue { value: Some(v) })
    })
}

pub fn key_value() -> impl Strategy<Value = KeyValue> {
    ("[a-z.]{1,10}", any_value()).prop_map(|(key, value)| KeyValue {
        key,
        value: Some(value),
        key_strindex: 0,
    })
}

pub fn attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(key_value(), 0..max)
}

pub fn proto_span() -> impl Strategy<Value = Span> {
    (
        (
            prop::collection::vec(any::<u8>(), 16),
            prop::collection::vec(any::<u8>(), 8),
            prop_oneof![Just(vec![]), prop::collection::vec(any::<u8>(), 8)],
            "([a-z]{1,3}=[a-z0-9]{1,4})?",
            any::<u32>(),
            "[A-Za-z /]{0,16}",
            0i32..6,
            any::<u64>(),
            any::<u64>(),
        ),
        (
            attributes(6),
            any::<u32>(),
            prop::collection::vec(
                (any::<u64>(), "[a-z]{0,6}", attributes(2), any::<u32>()),
                0..3,
            ),
            any::<u32>(),
            prop::collection::vec(
                (
                    prop::collection::vec(any::<u8>(), 16),
                    prop::collection::vec(any::<u8>(), 8),
                    attributes(2),
                    any::<u32>(),
                ),
                0..2,
            ),
            any::<u32>(),
            prop::option::of((0i32..3, "[a-z ]{0,10}")),
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, trace_state, flags, name, kind, start, end),
                (
                    attributes,
                    dropped_attributes,
                    events,
                    dropped_events,
                    links,
                    dropped_links,
                    status,
                ),
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id,
                flags,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count: dropped_attributes,
                events: events
                    .into_iter()
                    .map(
                        |(time_unix_nano, name, attributes, dropped_attributes_count)| {
                            span::Event {
                                time_unix_nano,
                                name,
                                attributes,
                                dropped_attributes_count,
                            }
                        },
                    )
                    .collect(),
                dropped_events_count: dropped_events,
                links: links
                    .into_iter()
                    .map(|(trace_id, span_id, attributes, flags)| span::Link {
                        trace_id,
                        span_id,
                        trace_state: String::new(),
                        attributes,
                        dropped_attributes_count: 0,
                        flags,
                    })
                    .collect(),
                dropped_links_count: dropped_links,
                status: status.map(|(code, message)| Status { message, code }),
            },
        )
}

/// Random requests whose resources and scopes are non-empty and pairwise distinct.
pub fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = (
        "[a-z]{1,6}",
        "[0-9.]{0,4}",
        attributes(2),
        prop::collection::vec(proto_span(), 1..5),
        "(https://s/[a-z]{1,3})?",
    );
    let resource = (
        attributes(3),
        prop::collection::vec(scope, 1..4),
        "(https://r/[a-z]{1,3})?",
    );
    prop::collection::vec(resource, 0..4).prop_map(|resources| ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .enumerate()
            .map(|(r, (mut attrs, scopes, schema_url))| {
                attrs.push(KeyValue {
                    key: "resource.index".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(r as i64)),
                    }),
                    key_strindex: 0,
                });
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: attrs,
                        dropped_attributes_count: 0,
                        entity_refs: vec![],
                    }),
                    scope_spans: scopes
                        .into_iter()
                        .enumerate()
                        .map(
                            |(s, (name, version, attributes, spans, schema_url))| ScopeSpans {
                                scope: Some(InstrumentationScope {
                                    name: format!("{name}{s}"),
                                    version,
                                    attributes,
                                    dropped_attributes_count: 0,
                                }),
                                spans,
                                schema_url,
                            },
                        )
                        .collect(),
                    schema_url,
                }
            })
            .collect(),
    })
}

/// The spans of a request in wire order.
pub fn proto_spans(request: &ExportTraceServiceRequest) -> Vec<&Span> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
        .collect()
}

/// The model of `select`: keep masked spans, drop scopes and resources left empty.
pub fn model_select(
    request: &ExportTraceServiceRequest,
    keep: &[bool],
) -> ExportTraceServiceRequest {
    let mut i = 0;
    let mut out = request.clone();
    for r in &mut out.resource_spans {
        for s in &mut r.scope_spans {
            s.spans.retain(|_| {
                let k = keep[i];
                i += 1;
                k
            });
        }
        r.scope_spans.retain(|s| !s.spans.is_empty());
    }
    out.resource_spans.retain(|r| !r.scope_spans.is_empty());
    out
}
