//! The direct encoder produces exactly what opentelemetry-proto's conversion (grouped the
//! way opentelemetry-otlp groups) produces.
#![cfg(not(loom))]

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use proptest::prelude::*;
use prost::Message;
use spanflow_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_otlp::{Encoder, TraceRequest};

fn value() -> impl Strategy<Value = Value> {
    let string = "[a-zé ]{0,10}".prop_map(StringValue::from);
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::I64),
        (-1e12f64..1e12).prop_map(Value::F64),
        "[a-zé0-9 ]{0,20}".prop_map(Value::from),
        prop::collection::vec(any::<bool>(), 0..4).prop_map(|v| Value::Array(Array::Bool(v))),
        prop::collection::vec(any::<i64>(), 0..4).prop_map(|v| Value::Array(Array::I64(v))),
        prop::collection::vec(-1e6f64..1e6, 0..4).prop_map(|v| Value::Array(Array::F64(v))),
        prop::collection::vec(string, 0..4).prop_map(|v| Value::Array(Array::String(v))),
    ]
}

fn attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(("[a-z._]{0,12}", value()), 0..max)
        .prop_map(|kvs| kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect())
}

fn trace_state() -> impl Strategy<Value = TraceState> {
    prop::collection::vec(("[a-z]{1,4}", "[a-z0-9]{1,4}"), 0..3).prop_map(|kvs| {
        let mut seen = std::collections::HashSet::new();
        let kvs: Vec<_> = kvs
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect();
        TraceState::from_key_value(kvs).unwrap_or_default()
    })
}

fn context() -> impl Strategy<Value = SpanContext> {
    (
        any::<u128>(),
        any::<u64>(),
        any::<u8>(),
        any::<bool>(),
        trace_state(),
    )
        .prop_map(|(trace, span, flags, remote, state)| {
            SpanContext::new(
                TraceId::from(trace),
                SpanId::from(span),
                TraceFlags::new(flags),
                remote,
                state,
            )
        })
}

fn scope() -> impl Strategy<Value = InstrumentationScope> {
    (
        0usize..3,
        prop::option::of("[0-9.]{0,4}"),
        prop::option::of("https://[a-z]{0,3}"),
        attributes(2),
    )
        .prop_map(|(name, version, schema, attrs)| {
            let mut b = InstrumentationScope::builder(["http", "sqlx", ""][name]);
            if let Some(v) = version {
                b = b.with_version(v);
            }
            if let Some(s) = schema {
                b = b.with_schema_url(s);
            }
            b.with_attributes(attrs).build()
        })
}

fn time() -> impl Strategy<Value = std::time::SystemTime> {
    prop_oneof![
        Just(UNIX_EPOCH),
        (0u64..u64::MAX / 2).prop_map(|n| UNIX_EPOCH + Duration::from_nanos(n)),
        (1u64..1000).prop_map(|s| UNIX_EPOCH - Duration::from_secs(s)),
    ]
}

fn span_data(scopes: Vec<InstrumentationScope>) -> impl Strategy<Value = SpanData> {
    (
        (
            context(),
            prop_oneof![Just(0u64), any::<u64>()],
            any::<bool>(),
            0usize..5,
            "[A-Za-z /é]{0,24}",
            time(),
            time(),
            attributes(9),
            any::<u32>(),
        ),
        (
            prop::collection::vec(("[a-z.]{0,8}", time(), attributes(3), any::<u32>()), 0..3),
            any::<u32>(),
            prop::collection::vec((context(), attributes(3), any::<u32>()), 0..3),
            any::<u32>(),
            prop_oneof![
                Just(Status::Unset),
                Just(Status::Ok),
                "[a-z ]{0,12}".prop_map(Status::error)
            ],
            0..scopes.len(),
        ),
    )
        .prop_map(
            move |(
                (ctx, parent, parent_remote, kind, name, start, end, attributes, dropped),
                (events, dropped_events, links, dropped_links, status, scope),
            )| SpanData {
                span_context: ctx,
                parent_span_id: SpanId::from(parent),
                parent_span_is_remote: parent_remote,
                span_kind: [
                    SpanKind::Internal,
                    SpanKind::Server,
                    SpanKind::Client,
                    SpanKind::Producer,
                    SpanKind::Consumer,
                ][kind]
                    .clone(),
                name: Cow::Owned(name),
                start_time: start,
                end_time: end,
                attributes,
                dropped_attributes_count: dropped,
                events: {
                    let mut e = SpanEvents::default();
                    e.events = events
                        .into_iter()
                        .map(|(n, t, a, d)| Event::new(n, t, a, d))
                        .collect();
                    e.dropped_count = dropped_events;
                    e
                },
                links: {
                    let mut l = SpanLinks::default();
                    l.links = links
                        .into_iter()
                        .map(|(c, a, d)| Link::new(c, a, d))
                        .collect();
                    l.dropped_count = dropped_links;
                    l
                },
                status,
                instrumentation_scope: scopes[scope].clone(),
            },
        )
}

fn batch() -> impl Strategy<Value = (Vec<SpanData>, Resource)> {
    let scopes = prop::collection::vec(scope(), 1..4);
    let resource =
        (attributes(5), prop::option::of("https://[a-z]{1,4}")).prop_map(|(a, s)| match s {
            Some(s) => Resource::builder_empty().with_schema_url(a, s).build(),
            None => Resource::builder_empty().with_attributes(a).build(),
        });
    (scopes, resource).prop_flat_map(|(scopes, resource)| {
        (
            prop::collection::vec(span_data(scopes), 1..8),
            Just(resource),
        )
    })
}

/// What opentelemetry-otlp sends: opentelemetry-proto's conversion, grouped by scope.
fn reference(spans: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
    let resource: ResourceAttributesWithSchema = resource.into();
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans.to_vec(), &resource),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn encoding_decodes_equal_to_opentelemetry_proto_conversion((spans, resource) in batch()) {
        let mut encoder = Encoder::new();
        // Twice, to exercise buffer reuse.
        for _ in 0..2 {
            let ours = encoder.encode(&spans, &resource);
            let expected = reference(&spans, &resource);
            let decoded = ExportTraceServiceRequest::decode(&ours.as_bytes()[..]).unwrap();
            prop_assert_eq!(&decoded, &expected);
            // Fields are written in tag order with minimal varints: byte-identical to prost.
            prop_assert_eq!(&ours.as_bytes()[..], &expected.encode_to_vec()[..]);
            // The index built while encoding is the one parsing builds.
            let parsed = TraceRequest::parse(ours.as_bytes().clone()).unwrap();
            prop_assert_eq!(parsed.span_count(), ours.span_count());
            for (a, b) in parsed.spans().zip(ours.spans()) {
                prop_assert_eq!(a.raw(), b.raw());
                prop_assert_eq!(a.name(), b.name());
                prop_assert!(a.attributes().eq(b.attributes()));
                prop_assert_eq!(a.scope().name(), b.scope().name());
                prop_assert_eq!(a.scope().schema_url(), b.scope().schema_url());
            }
            let (pa, oa): (Vec<_>, Vec<_>) = (
                parsed.resources().flat_map(|r| r.attributes().map(|kv| kv.to_proto())).collect(),
                ours.resources().flat_map(|r| r.attributes().map(|kv| kv.to_proto())).collect(),
            );
            prop_assert_eq!(pa, oa);
        }
    }
}

#[test]
fn large_batches_with_many_scopes_and_long_values_match() {
    // Many distinct scopes (map-based grouping) and values over 128 bytes (length fix-ups).
    let mut spans = spanflow_otlp::testing::span_batch(300, 5);
    for (i, span) in spans.iter_mut().enumerate() {
        span.instrumentation_scope =
            InstrumentationScope::builder(format!("scope-{}", i % 13)).build();
        if i % 7 == 0 {
            span.attributes
                .push(KeyValue::new("big", "x".repeat(200 + i)));
        }
    }
    let resource = spanflow_otlp::testing::resource();
    let ours = Encoder::new().encode(&spans, &resource);
    let expected = reference(&spans, &resource);
    assert_eq!(&ours.as_bytes()[..], &expected.encode_to_vec()[..]);
    assert_eq!(ours.span_count(), 300);
    let parsed = TraceRequest::parse(ours.as_bytes().clone()).unwrap();
    for (a, b) in parsed.spans().zip(ours.spans()) {
        assert_eq!(a.raw(), b.raw());
    }
}

#[test]
fn fixtures_are_realistic() {
    let spans = spanflow_otlp::testing::span_batch(512, 1);
    let request = Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    let per_span = request.encoded_len() / 512;
    assert!((220..380).contains(&per_span), "{per_span} bytes per span");
    for span in request.spans() {
        let n = span.attributes().count();
        assert!((4..=8).contains(&n), "{n} attributes");
    }
}
