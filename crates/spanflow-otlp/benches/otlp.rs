//! spanflow-otlp against opentelemetry-proto + prost on the same inputs.
//!
//! Groups: `otlp/encode_512`, `otlp/read_512`, `otlp/split_512_into_4` (of an indexed
//! request), `otlp/parse_split_512_into_4` (from bytes), `otlp/rewrite_512` (parse +
//! remove one attribute + set one, per span). Function `spanflow` is ours; the others are the peers.
//! `otlp/by_trace_512` compares two ways of ours to cut bytes into a request per trace (64
//! traces of 8 spans, a Kafka record each): `group_by_trace`, and a parse followed by one
//! `select_indices` per trace.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use prost::Message;
use spanflow_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_otlp::proto::common::v1::{AnyValue, KeyValue, any_value};
use spanflow_otlp::proto::trace::v1::{ResourceSpans, ScopeSpans};
use spanflow_otlp::{AnyValueView, Encoder, TraceRequest, group_by_trace};

const SPANS: usize = 512;

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(SPANS as u64));
}

fn fixture() -> (
    Vec<opentelemetry_sdk::trace::SpanData>,
    opentelemetry_sdk::Resource,
    bytes::Bytes,
) {
    let spans = spanflow_otlp::testing::span_batch(SPANS, 2024);
    let resource = spanflow_otlp::testing::resource();
    let bytes = Encoder::new().encode(&spans, &resource).into_bytes();
    (spans, resource, bytes)
}

fn encode(c: &mut Criterion) {
    let (spans, resource, _) = fixture();
    let mut group = c.benchmark_group("otlp/encode_512");
    configure(&mut group);
    let mut encoder = Encoder::new();
    group.bench_function("spanflow", |b| {
        b.iter(|| black_box(encoder.encode(black_box(&spans), &resource)));
    });
    // What opentelemetry-otlp's exporter does per batch: clone the batch, convert it with
    // opentelemetry-proto grouped by scope (the resource conversion is cached), encode.
    let resource_attrs: ResourceAttributesWithSchema = (&resource).into();
    group.bench_function("opentelemetry_otlp", |b| {
        b.iter(|| {
            let batch = black_box(&spans).clone();
            let request = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(batch, &resource_attrs),
            };
            black_box(request.encode_to_vec())
        });
    });
    group.finish();
}

fn visit_value(v: &AnyValueView<'_>) -> usize {
    match v {
        AnyValueView::String(s) => s.len(),
        AnyValueView::Int(i) => *i as usize,
        AnyValueView::Array(a) => a.iter().count(),
        _ => 1,
    }
}

fn visit_proto_value(v: &Option<AnyValue>) -> usize {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.len(),
        Some(any_value::Value::IntValue(i)) => *i as usize,
        Some(any_value::Value::ArrayValue(a)) => a.values.len(),
        _ => 1,
    }
}

fn read(c: &mut Criterion) {
    let (_, _, bytes) = fixture();
    let mut group = c.benchmark_group("otlp/read_512");
    configure(&mut group);
    group.bench_function("spanflow", |b| {
        b.iter(|| {
            let request = TraceRequest::parse(black_box(&bytes).clone()).expect("valid");
            let mut acc = 0usize;
            for span in request.spans() {
                acc = acc.wrapping_add(span.name().len());
                for kv in span.attributes() {
                    acc = acc
                        .wrapping_add(kv.key.len())
                        .wrapping_add(visit_value(&kv.value));
                }
            }
            black_box(acc)
        });
    });
    group.bench_function("prost", |b| {
        b.iter(|| {
            let request = ExportTraceServiceRequest::decode(&black_box(&bytes)[..]).expect("valid");
            let mut acc = 0usize;
            for rs in &request.resource_spans {
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        acc = acc.wrapping_add(span.name.len());
                        for kv in &span.attributes {
                            acc = acc
                                .wrapping_add(kv.key.len())
                                .wrapping_add(visit_proto_value(&kv.value));
                        }
                    }
                }
            }
            black_box(acc)
        });
    });
    group.finish();
}

/// Splits a decoded request into `parts` requests of consecutive spans, keeping the
/// resource and scope grouping (what a relay without a wire model does).
fn prost_split(
    request: ExportTraceServiceRequest,
    per_part: usize,
) -> Vec<ExportTraceServiceRequest> {
    let mut out = Vec::new();
    let mut current = ExportTraceServiceRequest::default();
    let mut count = 0;
    for rs in request.resource_spans {
        let mut rs_out = ResourceSpans {
            resource: rs.resource.clone(),
            scope_spans: Vec::new(),
            schema_url: rs.schema_url.clone(),
        };
        for ss in rs.scope_spans {
            let mut ss_out = ScopeSpans {
                scope: ss.scope.clone(),
                spans: Vec::new(),
                schema_url: ss.schema_url.clone(),
            };
            for span in ss.spans {
                if count == per_part {
                    let mut rs_done = std::mem::replace(
                        &mut rs_out,
                        ResourceSpans {
                            resource: rs.resource.clone(),
                            scope_spans: Vec::new(),
                            schema_url: rs.schema_url.clone(),
                        },
                    );
                    let ss_done = std::mem::replace(
                        &mut ss_out,
                        ScopeSpans {
                            scope: ss.scope.clone(),
                            spans: Vec::new(),
                            schema_url: ss.schema_url.clone(),
                        },
                    );
                    if !ss_done.spans.is_empty() {
                        rs_done.scope_spans.push(ss_done);
                    }
                    if !rs_done.scope_spans.is_empty() {
                        current.resource_spans.push(rs_done);
                    }
                    out.push(std::mem::take(&mut current));
                    count = 0;
                }
                ss_out.spans.push(span);
                count += 1;
            }
            if !ss_out.spans.is_empty() {
                rs_out.scope_spans.push(ss_out);
            }
        }
        if !rs_out.scope_spans.is_empty() {
            current.resource_spans.push(rs_out);
        }
    }
    if count > 0 {
        out.push(current);
    }
    out
}

fn split(c: &mut Criterion) {
    let (_, _, bytes) = fixture();
    // Splitting a request the relay has already indexed (parse cost is `otlp/read_512`'s
    // and `otlp/parse_split_512_into_4`'s).
    let indexed = TraceRequest::parse(bytes.clone()).expect("valid");
    let mut group = c.benchmark_group("otlp/split_512_into_4");
    configure(&mut group);
    group.bench_function("spanflow", |b| {
        b.iter(|| {
            let parts = black_box(&indexed).split(SPANS / 4, 0);
            assert_eq!(parts.len(), 4);
            black_box(parts)
        });
    });
    group.bench_function("prost", |b| {
        b.iter(|| {
            let request = ExportTraceServiceRequest::decode(&black_box(&bytes)[..]).expect("valid");
            let parts: Vec<Vec<u8>> = prost_split(request, SPANS / 4)
                .iter()
                .map(Message::encode_to_vec)
                .collect();
            assert_eq!(parts.len(), 4);
            black_box(parts)
        });
    });
    group.finish();

    // The same starting from received bytes: parse + split.
    let mut group = c.benchmark_group("otlp/parse_split_512_into_4");
    configure(&mut group);
    group.bench_function("spanflow", |b| {
        b.iter(|| {
            let request = TraceRequest::parse(black_box(&bytes).clone()).expect("valid");
            let parts = request.split(SPANS / 4, 0);
            assert_eq!(parts.len(), 4);
            black_box(parts)
        });
    });
    group.bench_function("prost", |b| {
        b.iter(|| {
            let request = ExportTraceServiceRequest::decode(&black_box(&bytes)[..]).expect("valid");
            let parts: Vec<Vec<u8>> = prost_split(request, SPANS / 4)
                .iter()
                .map(Message::encode_to_vec)
                .collect();
            assert_eq!(parts.len(), 4);
            black_box(parts)
        });
    });
    group.finish();
}

fn rewrite(c: &mut Criterion) {
    let (_, _, bytes) = fixture();
    let mut group = c.benchmark_group("otlp/rewrite_512");
    configure(&mut group);
    // An attributes processor: drop one attribute, add one.
    group.bench_function("spanflow", |b| {
        b.iter(|| {
            let request = TraceRequest::parse(black_box(&bytes).clone()).expect("valid");
            black_box(request.rewrite(|_, patch| {
                patch.remove_attribute("user.id");
                patch.set_attribute("deployment.environment", "prod");
            }))
        });
    });
    group.bench_function("prost", |b| {
        b.iter(|| {
            let mut request =
                ExportTraceServiceRequest::decode(&black_box(&bytes)[..]).expect("valid");
            for rs in &mut request.resource_spans {
                for ss in &mut rs.scope_spans {
                    for span in &mut ss.spans {
                        span.attributes
                            .retain(|kv| kv.key != "user.id" && kv.key != "deployment.environment");
                        span.attributes.push(KeyValue {
                            key: "deployment.environment".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue("prod".into())),
                            }),
                            key_strindex: 0,
                        });
                    }
                }
            }
            black_box(request.encode_to_vec())
        });
    });
    group.finish();
}

fn by_trace(c: &mut Criterion) {
    const PER_TRACE: usize = 8;
    let (mut spans, resource, _) = fixture();
    for (i, span) in spans.iter_mut().enumerate() {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(1 + (i / PER_TRACE) as u64).to_be_bytes());
        span.span_context = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(id),
            span.span_context.span_id(),
            span.span_context.trace_flags(),
            false,
            span.span_context.trace_state().clone(),
        );
    }
    let bytes = Encoder::new().encode(&spans, &resource).into_bytes();
    let traces = SPANS / PER_TRACE;
    let mut group = c.benchmark_group("otlp/by_trace_512");
    configure(&mut group);
    group.bench_function("group_by_trace", |b| {
        b.iter(|| {
            let groups = group_by_trace(black_box(&bytes)).expect("valid");
            assert_eq!(groups.len(), traces);
            black_box(groups)
        });
    });
    group.bench_function("parse_select_indices", |b| {
        b.iter(|| {
            let request = TraceRequest::parse(black_box(&bytes).clone()).expect("valid");
            let mut members: Vec<([u8; 16], Vec<u32>)> = Vec::new();
            let mut group_of = std::collections::HashMap::new();
            for span in request.spans() {
                let g = *group_of.entry(span.trace_id()).or_insert_with(|| {
                    members.push((span.trace_id(), Vec::new()));
                    members.len() - 1
                });
                members[g].1.push(span.index() as u32);
            }
            let parts: Vec<TraceRequest> = members
                .iter()
                .map(|(_, m)| request.select_indices(m))
                .collect();
            assert_eq!(parts.len(), traces);
            black_box(parts)
        });
    });
    group.finish();
}

criterion_group!(benches, encode, read, split, rewrite, by_trace);
criterion_main!(benches);
