//! Realistic OTLP traffic for `load` and `demo`: spans built with the prost model and encoded
//! once, so the generator spends its time sending, not building.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand::Rng;

/// One request body, encoded both ways, with its span count.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The ExportTraceServiceRequest as protobuf.
    pub protobuf: Bytes,
    /// The same request as OTLP/JSON.
    pub json: Bytes,
    /// Spans in it.
    pub spans: usize,
}

impl Payload {
    /// Encodes `request` as protobuf only (the JSON body stays empty).
    pub fn protobuf_only(request: &ExportTraceServiceRequest) -> Self {
        let mut p = Self::encode(request, false);
        p.json = Bytes::new();
        p
    }

    /// Encodes `request` both ways.
    pub fn new(request: &ExportTraceServiceRequest) -> Self {
        Self::encode(request, true)
    }

    fn encode(request: &ExportTraceServiceRequest, json: bool) -> Self {
        let spans = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        Self {
            protobuf: Bytes::from(request.encode_to_vec()),
            json: if json {
                Bytes::from(serde_json::to_vec(request).unwrap_or_default())
            } else {
                Bytes::new()
            },
            spans,
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            s("service.name", service),
            s("service.version", "1.4.2"),
            s("deployment.environment.name", "demo"),
            s("host.name", format!("{service}-7f9c")),
            s("telemetry.sdk.language", "rust"),
        ],
        ..Resource::default()
    }
}

fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(service)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: format!("{service}-instrumentation"),
                    version: "0.33.0".to_owned(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn nonzero<const N: usize>(rng: &mut impl Rng) -> [u8; N] {
    let mut id = [0u8; N];
    rng.fill(&mut id[..]);
    id[0] |= 1;
    id
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &str,
    kind: SpanKind,
    start: u64,
    micros: u64,
    attributes: Vec<KeyValue>,
    error: bool,
) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.to_owned(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + micros * 1000,
        attributes,
        status: Some(Status {
            code: if error {
                StatusCode::Error
            } else {
                StatusCode::Ok
            } as i32,
            message: if error {
                "upstream timeout".to_owned()
            } else {
                String::new()
            },
        }),
        flags: 0x100 | 1,
        ..Span::default()
    }
}

/// The three demo services' requests for `traces` traces: service-a (frontend) calls
/// service-b (checkout), which calls service-c (payments, with a database query). Each service
/// reports its own spans in its own request, as instrumented services do.
pub fn demo_traces(rng: &mut impl Rng, traces: usize) -> [ExportTraceServiceRequest; 3] {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let routes = ["/checkout", "/cart", "/product/{id}", "/search"];
    for _ in 0..traces {
        let trace: [u8; 16] = nonzero(rng);
        let t0 = now_nanos().saturating_sub(rng.random_range(1_000_000..50_000_000));
        let error = rng.random_ratio(1, 50);
        let route = routes[rng.random_range(0..routes.len())];
        let status = if error { 500 } else { 200 };
        let (a_root, a_client, b_server, b_internal, b_client, c_server, c_db) = (
            nonzero(rng),
            nonzero(rng),
            nonzero(rng),
            nonzero(rng),
            nonzero(rng),
            nonzero(rng),
            nonzero(rng),
        );
        let user = format!("user-{}", rng.random_range(1..5000));
        a.push(span(
            trace,
            a_root,
            None,
            &format!("GET {route}"),
            SpanKind::Server,
            t0,
            48_000,
            vec![
                s("http.request.method", "GET"),
                s("http.route", route),
                s(
                    "url.path",
                    route.replace("{id}", &rng.random_range(1..900).to_string()),
                ),
                s("url.scheme", "https"),
                i("http.response.status_code", status),
                s(
                    "client.address",
                    format!(
                        "10.0.{}.{}",
                        rng.random_range(0..255),
                        rng.random_range(1..255)
                    ),
                ),
                s(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                ),
                s("enduser.id", user.clone()),
            ],
            error,
        ));
        a.push(span(
            trace,
            a_client,
            Some(a_root),
            "POST checkout",
            SpanKind::Client,
            t0 + 2_000_000,
            40_000,
            vec![
                s("http.request.method", "POST"),
                s("server.address", "service-b"),
                i("server.port", 8080),
                s("url.full", "http://service-b:8080/api/checkout"),
                i("http.response.status_code", status),
            ],
            error,
        ));
        b.push(span(
            trace,
            b_server,
            Some(a_client),
            "POST /api/checkout",
            SpanKind::Server,
            t0 + 3_000_000,
            37_000,
            vec![
                s("http.request.method", "POST"),
                s("http.route", "/api/checkout"),
                i("http.response.status_code", status),
                s("enduser.id", user),
            ],
            error,
        ));
        b.push(span(
            trace,
            b_internal,
            Some(b_server),
            "compute cart total",
            SpanKind::Internal,
            t0 + 3_500_000,
            2_000,
            vec![
                i("cart.items", rng.random_range(1..12)),
                kv(
                    "cart.total",
                    any_value::Value::DoubleValue(rng.random_range(5.0..500.0)),
                ),
                kv(
                    "cart.coupon",
                    any_value::Value::BoolValue(rng.random_ratio(1, 5)),
                ),
            ],
            false,
        ));
        b.push(span(
            trace,
            b_client,
            Some(b_server),
            "POST charge",
            SpanKind::Client,
            t0 + 6_000_000,
            30_000,
            vec![
                s("http.request.method", "POST"),
                s("server.address", "service-c"),
                i("server.port", 8080),
                i("http.response.status_code", status),
            ],
            error,
        ));
        c.push(span(
            trace,
            c_server,
            Some(b_client),
            "POST /charge",
            SpanKind::Server,
            t0 + 7_000_000,
            28_000,
            vec![
                s("http.request.method", "POST"),
                s("http.route", "/charge"),
                i("http.response.status_code", status),
                s(
                    "payment.provider",
                    ["visa", "mastercard", "paypal"][rng.random_range(0..3)],
                ),
            ],
            error,
        ));
        c.push(span(
            trace,
            c_db,
            Some(c_server),
            "INSERT payments",
            SpanKind::Client,
            t0 + 8_000_000,
            9_000,
            vec![
                s("db.system.name", "postgresql"),
                s("db.namespace", "payments"),
                s("db.operation.name", "INSERT"),
                s(
                    "db.query.text",
                    "INSERT INTO payments (order_id, amount, currency) VALUES ($1, $2, $3)",
                ),
                s("server.address", "postgres.internal"),
            ],
            false,
        ));
    }
    [
        request("service-a", a),
        request("service-b", b),
        request("service-c", c),
    ]
}

/// The mix of attributes on each generated `load` span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeMix {
    /// Attributes per span (strings, ints, doubles and bools in turn).
    pub count: usize,
    /// Length of each string value.
    pub string_len: usize,
}

/// A `load` request: `spans` spans of service `service`, each with `mix` attributes.
pub fn load_request(
    rng: &mut impl Rng,
    service: &str,
    spans: usize,
    mix: AttributeMix,
) -> ExportTraceServiceRequest {
    let trace: [u8; 16] = nonzero(rng);
    let root: [u8; 8] = nonzero(rng);
    let t0 = now_nanos();
    let filler: String = "abcdefghijklmnopqrstuvwxyz0123456789"
        .chars()
        .cycle()
        .take(mix.string_len)
        .collect();
    let list = (0..spans)
        .map(|n| {
            let attributes = (0..mix.count)
                .map(|k| {
                    let key = format!("load.attr.{k}");
                    match k % 4 {
                        0 => s(&key, filler.clone()),
                        1 => i(&key, rng.random_range(0..1_000_000)),
                        2 => kv(&key, any_value::Value::DoubleValue(rng.random())),
                        _ => kv(&key, any_value::Value::BoolValue(rng.random())),
                    }
                })
                .collect();
            let id = if n == 0 { root } else { nonzero(rng) };
            span(
                trace,
                id,
                (n > 0).then_some(root),
                &format!("load-operation-{}", n % 16),
                if n == 0 {
                    SpanKind::Server
                } else {
                    SpanKind::Internal
                },
                t0 + n as u64 * 1000,
                250,
                attributes,
                false,
            )
        })
        .collect();
    request(service, list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_traces_link_across_the_three_services() {
        let mut rng = rand::rng();
        let [a, b, c] = demo_traces(&mut rng, 3);
        let spans =
            |r: &ExportTraceServiceRequest| r.resource_spans[0].scope_spans[0].spans.clone();
        assert_eq!(
            (spans(&a).len(), spans(&b).len(), spans(&c).len()),
            (6, 9, 6)
        );
        let b_server = &spans(&b)[0];
        assert_eq!(b_server.parent_span_id, spans(&a)[1].span_id);
        assert_eq!(b_server.trace_id, spans(&a)[0].trace_id);
        let p = Payload::new(&a);
        assert_eq!(p.spans, 6);
        let back: ExportTraceServiceRequest = serde_json::from_slice(&p.json).expect("json");
        assert_eq!(back, a);
    }

    #[test]
    fn load_request_has_the_asked_shape() {
        let mut rng = rand::rng();
        let mix = AttributeMix {
            count: 6,
            string_len: 20,
        };
        let r = load_request(&mut rng, "load", 10, mix);
        let spans = &r.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 10);
        assert!(spans.iter().all(|s| s.attributes.len() == 6));
    }
}
