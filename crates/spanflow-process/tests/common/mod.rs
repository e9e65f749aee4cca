//! Test fixtures: requests built with prost structs, parsed into `TraceRequest`.
#![allow(dead_code, unreachable_pub)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use spanflow_otlp::TraceRequest;

pub fn s(v: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(v.to_owned())),
    }
}

pub fn i(v: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(v)),
    }
}

pub fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

/// A trace id whose low 8 bytes are `low` (the sampler reads only those).
pub fn trace_id(high: u64, low: u64) -> Vec<u8> {
    let mut id = high.to_be_bytes().to_vec();
    id.extend_from_slice(&low.to_be_bytes());
    id
}

#[derive(Clone)]
pub struct SpanSpec {
    pub span: Span,
}

pub fn span(name: &str) -> Span {
    Span {
        trace_id: trace_id(1, 2),
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        name: name.to_owned(),
        kind: 1,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_002_000_000,
        ..Default::default()
    }
}

pub trait SpanExt {
    fn attr(self, key: &str, value: AnyValue) -> Self;
    fn kind(self, kind: i32) -> Self;
    fn status(self, code: i32) -> Self;
    fn duration_ms(self, ms: u64) -> Self;
    fn trace(self, id: Vec<u8>) -> Self;
}

impl SpanExt for Span {
    fn attr(mut self, key: &str, value: AnyValue) -> Self {
        self.attributes.push(kv(key, value));
        self
    }
    fn kind(mut self, kind: i32) -> Self {
        self.kind = kind;
        self
    }
    fn status(mut self, code: i32) -> Self {
        self.status = Some(Status {
            code,
            message: String::new(),
        });
        self
    }
    fn duration_ms(mut self, ms: u64) -> Self {
        self.end_time_unix_nano = self.start_time_unix_nano + ms * 1_000_000;
        self
    }
    fn trace(mut self, id: Vec<u8>) -> Self {
        self.trace_id = id;
        self
    }
}

pub fn resource(service: &str, extra: Vec<KeyValue>) -> Resource {
    let mut attributes = vec![kv("service.name", s(service))];
    attributes.extend(extra);
    Resource {
        attributes,
        ..Default::default()
    }
}

/// One resource with one scope holding `spans`.
pub fn resource_spans(resource: Resource, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(resource),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "test-scope".to_owned(),
                version: "1.0".to_owned(),
                ..Default::default()
            }),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

pub fn proto_request(resource_spans: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans }
}

pub fn parse(req: &ExportTraceServiceRequest) -> TraceRequest {
    TraceRequest::parse(req.encode_to_vec().into()).expect("valid request")
}

/// A request with one resource (`service`) holding `spans`.
pub fn request(service: &str, spans: Vec<Span>) -> TraceRequest {
    parse(&proto_request(vec![resource_spans(
        resource(service, Vec::new()),
        spans,
    )]))
}

pub fn names(req: &TraceRequest) -> Vec<String> {
    req.spans().map(|s| s.name().to_owned()).collect()
}

pub fn decode(req: &TraceRequest) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(req.as_bytes().clone()).expect("valid output")
}

/// All spans of a decoded request, in order.
pub fn spans_of(req: &TraceRequest) -> Vec<Span> {
    decode(req)
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

pub fn attr_of<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr_of(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// A realistic span for benches and stress tests: 8 attributes, varied names.
pub fn realistic_span(n: u64) -> Span {
    const NAMES: [&str; 6] = [
        "GET /api/cart",
        "POST /api/checkout",
        "SELECT orders",
        "GET /health",
        "publish order.created",
        "render invoice",
    ];
    let mix = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    span(NAMES[(n % 6) as usize])
        .trace(trace_id(mix ^ 0x5555, mix.rotate_left(17)))
        .kind(1 + (n % 3) as i32)
        .status(if n.is_multiple_of(10) { 2 } else { 0 })
        .duration_ms(n % 50)
        .attr("http.method", s("GET"))
        .attr("http.route", s("/api/cart"))
        .attr("http.status_code", i(200))
        .attr("user.email", s("jane.doe@example.com"))
        .attr("net.peer.name", s("10.0.3.17"))
        .attr("thread.id", i(n as i64 % 16))
        .attr("component", s("http"))
        .attr("request.id", s(&format!("req-{n:08x}")))
}

/// A request of `n` realistic spans under one resource.
pub fn realistic_request(n: usize, seed: u64) -> TraceRequest {
    let spans = (0..n as u64)
        .map(|k| realistic_span(seed * 1_000_003 + k))
        .collect();
    parse(&proto_request(vec![resource_spans(
        resource("checkout", vec![kv("host.name", s("node-17"))]),
        spans,
    )]))
}
