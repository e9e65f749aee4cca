//! Test traffic and its accounting: traces whose spans are spread over several requests, each
//! span with a unique id, and a tally of the ids a sink received.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use spanflow_relay::TraceRequest;

/// The trace id of trace `t`.
pub(crate) fn trace_id(t: u64) -> [u8; 16] {
    let mut id = [0x7eu8; 16];
    id[..8].copy_from_slice(&(t + 1).to_be_bytes());
    id
}

/// Span `j` of trace `t`, with span id `id`.
pub(crate) fn span(t: u64, j: u64, id: u64) -> Span {
    Span {
        trace_id: trace_id(t).to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if j == 0 {
            Vec::new()
        } else {
            (id - j).to_be_bytes().to_vec()
        },
        name: format!("op-{j}"),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000 + id,
        end_time_unix_nano: 1_700_000_000_001_000_000 + id,
        attributes: vec![KeyValue {
            key: "http.route".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("/items/{t}"))),
            }),
            ..KeyValue::default()
        }],
        ..Span::default()
    }
}

/// A request of `spans` under one resource of service `service`.
pub(crate) fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "kafka-test".into(),
                    ..InstrumentationScope::default()
                }),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// `traces` traces of `per_trace` spans (ids from `first_id`), interleaved so that every
/// request holds spans of several traces and every trace spans several requests: requests
/// of `per_request` spans.
pub(crate) fn traffic(
    first_trace: u64,
    traces: u64,
    per_trace: u64,
    per_request: usize,
) -> Vec<ExportTraceServiceRequest> {
    let mut spans = Vec::new();
    const BLOCK: u64 = 16;
    let mut block = first_trace;
    while block < first_trace + traces {
        let end = (block + BLOCK).min(first_trace + traces);
        for j in 0..per_trace {
            for t in block..end {
                spans.push(span(t, j, t * per_trace + j + 1));
            }
        }
        block = end;
    }
    spans
        .chunks(per_request)
        .enumerate()
        .map(|(i, chunk)| request(&format!("svc-{}", i % 3), chunk.to_vec()))
        .collect()
}

/// How often each span id arrived.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) seen: BTreeMap<u64, u32>,
}

impl Tally {
    pub(crate) fn add(&mut self, request: &TraceRequest) {
        for s in request.spans() {
            *self
                .seen
                .entry(u64::from_be_bytes(s.span_id()))
                .or_default() += 1;
        }
    }

    /// Ids among `1..=expected` that never arrived.
    pub(crate) fn missing(&self, expected: u64) -> u64 {
        (1..=expected)
            .filter(|id| !self.seen.contains_key(id))
            .count() as u64
    }

    /// Arrivals beyond the first, over every id.
    pub(crate) fn duplicates(&self) -> u64 {
        self.seen.values().map(|&n| u64::from(n) - 1).sum()
    }

    /// Ids that arrived and were never sent.
    pub(crate) fn unexpected(&self, expected: u64) -> u64 {
        self.seen
            .keys()
            .filter(|&&id| id == 0 || id > expected)
            .count() as u64
    }
}
