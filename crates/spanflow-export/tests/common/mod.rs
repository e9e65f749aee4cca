//! In-process OTLP receivers on 127.0.0.1 with fault injection, and batch builders.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use parking_lot::Mutex;
use prost::Message;
use spanflow_export::ExportBatch;
use tokio_util::sync::CancellationToken;

/// A batch of `n` spans whose span ids are `first..first + n` (big-endian).
pub fn batch(first: u64, n: usize) -> ExportBatch {
    let spans = (0..n as u64)
        .map(|i| {
            let id = first + i;
            Span {
                trace_id: [&[7u8; 8][..], &id.to_be_bytes()[..]].concat(),
                span_id: id.to_be_bytes().to_vec(),
                name: format!("span-{id}"),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + id,
                end_time_unix_nano: 1_700_000_000_000_100_000 + id,
                attributes: vec![KeyValue {
                    key: "http.route".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("/api/items/{id}".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("test".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "spanflow-export-tests".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    ExportBatch::new(Bytes::from(req.encode_to_vec()), n)
}

/// Faults a receiver injects; every knob can change while it runs.
#[derive(Default)]
pub struct Faults {
    /// Fail this many more requests with UNAVAILABLE / 503.
    pub fail_next: AtomicU64,
    /// With `fail_next`: send RESOURCE_EXHAUSTED + RetryInfo / 429 + Retry-After of this many ms.
    pub throttle_ms: AtomicU64,
    /// Answer every request with INVALID_ARGUMENT / 400.
    pub permanent: AtomicBool,
    /// Hold every request this many ms before answering.
    pub delay_ms: AtomicU64,
    /// Never answer (until the server stops).
    pub hang: AtomicBool,
    /// Reject this many spans of each request via partial_success.
    pub reject: AtomicI64,
    /// Store the next this-many requests, then stall 2 s before answering (a client timeout
    /// after the server kept the data: the one case that duplicates spans).
    pub stall_after_store: AtomicU64,
    /// HTTP only, with `fail_next` and `throttle_ms`: answer 503 with `Retry-After` as an
    /// HTTP-date `throttle_ms` ahead (whole seconds, truncated) instead of 429 with seconds.
    pub retry_after_date: AtomicBool,
    /// Answer UNAVAILABLE / 503 until this instant.
    pub down_until: Mutex<Option<Instant>>,
}

/// What a receiver saw.
#[derive(Default)]
pub struct Seen {
    /// Requests received (any outcome).
    pub requests: AtomicU64,
    /// Spans in requests answered with success.
    pub spans: AtomicU64,
    /// How many times each span id arrived in a successful request.
    pub ids: Mutex<HashMap<u64, u32>>,
    /// Metadata / header value of `x-test` on the last request.
    pub last_header: Mutex<Option<String>>,
    /// Content-Encoding / grpc-encoding of the last request.
    pub last_encoding: Mutex<Option<String>>,
    /// The last request answered with success, decoded.
    pub last_request: Mutex<Option<ExportTraceServiceRequest>>,
}

impl Seen {
    fn record(&self, req: &ExportTraceServiceRequest) {
        *self.last_request.lock() = Some(req.clone());
        let mut ids = self.ids.lock();
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let id = u64::from_be_bytes(s.span_id.as_slice().try_into().unwrap_or([0; 8]));
                    *ids.entry(id).or_default() += 1;
                    self.spans.fetch_add(1, SeqCst);
                }
            }
        }
    }

    /// Span ids `0..n` each arrived at least once; returns how many arrived more than once.
    pub fn assert_all_arrived(&self, n: u64) -> u64 {
        let ids = self.ids.lock();
        for id in 0..n {
            assert!(ids.contains_key(&id), "span {id} never arrived");
        }
        ids.values().filter(|&&c| c > 1).count() as u64
    }
}

/// A server certificate chain and its private key, both PEM, for a TLS receiver.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    /// When set, the receiver asks for a client certificate signed by this CA (mutual TLS)
    /// and refuses clients without one.
    pub client_ca_pem: Option<String>,
}

impl TlsIdentity {
    fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        let config = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem),
        );
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => config,
        }
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    pub seen: Arc<Seen>,
    /// Whether the receiver speaks TLS (its URLs are `https`).
    pub tls: bool,
    stop: CancellationToken,
}

impl Receiver {
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
    pub fn grpc_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr)
    }
    pub fn http_url(&self) -> String {
        format!("{}://{}/v1/traces", self.scheme(), self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

enum Decision {
    Ok,
    Unavailable,
    Throttle(Duration),
    Invalid,
}

async fn decide(faults: &Faults, stop: &CancellationToken) -> Decision {
    let delay = faults.delay_ms.load(SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if faults.hang.load(SeqCst) {
        stop.cancelled().await;
        return Decision::Unavailable;
    }
    if faults.permanent.load(SeqCst) {
        return Decision::Invalid;
    }
    if faults.down_until.lock().is_some_and(|t| Instant::now() < t) {
        return Decision::Unavailable;
    }
    let failed = faults
        .fail_next
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failed {
        let ms = faults.throttle_ms.load(SeqCst);
        if ms > 0 {
            return Decision::Throttle(Duration::from_millis(ms));
        }
        return Decision::Unavailable;
    }
    Decision::Ok
}

fn response(faults: &Faults) -> ExportTraceServiceResponse {
    let reject = faults.reject.load(SeqCst);
    ExportTraceServiceResponse {
        partial_success: (reject > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: reject,
            error_message: "too old".into(),
        }),
    }
}

struct GrpcService {
    faults: Arc<Faults>,
    seen: Arc<Seen>,
    stop: CancellationToken,
}

#[tonic::async_trait]
impl TraceService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.seen.requests.fetch_add(1, SeqCst);
        *self.seen.last_header.lock() = request
            .metadata()
            .get("x-test")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        *self.seen.last_encoding.lock() = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match decide(&self.faults, &self.stop).await {
            Decision::Ok => {
                self.seen.record(request.get_ref());
                let stall = self
                    .faults
                    .stall_after_store
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if stall {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Ok(tonic::Response::new(response(&self.faults)))
            }
            Decision::Unavailable => Err(tonic::Status::unavailable("injected outage")),
            Decision::Throttle(d) => Err(tonic::Status::with_details(
                tonic::Code::ResourceExhausted,
                "slow down",
                spanflow_export::grpc::retry_info_details(8, "slow down", d),
            )),
            Decision::Invalid => Err(tonic::Status::invalid_argument("injected bad request")),
        }
    }
}

/// Start an OTLP/gRPC receiver on 127.0.0.1:0.
pub async fn grpc_receiver() -> Receiver {
    grpc_receiver_with(None).await
}

/// Start an OTLP/gRPC receiver over TLS with `identity` on 127.0.0.1:0.
pub async fn grpc_receiver_tls(identity: &TlsIdentity) -> Receiver {
    grpc_receiver_with(Some(identity)).await
}

async fn grpc_receiver_with(tls: Option<&TlsIdentity>) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = Arc::new(Faults::default());
    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();
    let svc = GrpcService {
        faults: faults.clone(),
        seen: seen.clone(),
        stop: stop.clone(),
    };
    let server = TraceServiceServer::new(svc)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
    let signal = stop.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = tls {
        builder = builder.tls_config(identity.server_config()).unwrap();
    }
    tokio::spawn(async move {
        builder
            .add_service(server)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                signal.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    Receiver {
        addr,
        faults,
        seen,
        tls: tls.is_some(),
        stop,
    }
}

#[derive(Clone)]
struct HttpState {
    faults: Arc<Faults>,
    seen: Arc<Seen>,
    stop: CancellationToken,
}

async fn http_export(
    axum::extract::State(state): axum::extract::State<HttpState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    state.seen.requests.fetch_add(1, SeqCst);
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    *state.seen.last_header.lock() = get("x-test");
    let encoding = get("content-encoding");
    *state.seen.last_encoding.lock() = encoding.clone();
    let raw = match encoding.as_deref() {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("zstd") => zstd::stream::decode_all(&body[..]).unwrap(),
        _ => body.to_vec(),
    };
    let json = get("content-type").is_some_and(|c| c == "application/json");
    let req: ExportTraceServiceRequest = if json {
        match serde_json::from_slice(&raw) {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    } else {
        match ExportTraceServiceRequest::decode(&raw[..]) {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    };
    match decide(&state.faults, &state.stop).await {
        Decision::Ok => {
            state.seen.record(&req);
            let resp = response(&state.faults);
            if json {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::to_vec(&resp).unwrap(),
                )
                    .into_response()
            } else {
                (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    resp.encode_to_vec(),
                )
                    .into_response()
            }
        }
        Decision::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, "injected outage").into_response()
        }
        Decision::Throttle(d) if state.faults.retry_after_date.load(SeqCst) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                header::RETRY_AFTER,
                httpdate::fmt_http_date(SystemTime::now() + d),
            )],
            "come back later",
        )
            .into_response(),
        Decision::Throttle(d) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, d.as_secs().to_string())],
            "slow down",
        )
            .into_response(),
        Decision::Invalid => (StatusCode::BAD_REQUEST, "injected bad request").into_response(),
    }
}

/// Start an OTLP/HTTP receiver (axum) on 127.0.0.1:0, serving `POST /v1/traces`.
pub async fn http_receiver() -> Receiver {
    http_receiver_with(None).await
}

/// Start an OTLP/HTTP receiver over TLS with `identity` on 127.0.0.1:0: the same axum routes,
/// served by tonic's server (hyper + tokio-rustls; ALPN negotiates HTTP/2).
pub async fn http_receiver_tls(identity: &TlsIdentity) -> Receiver {
    http_receiver_with(Some(identity)).await
}

async fn http_receiver_with(tls: Option<&TlsIdentity>) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = Arc::new(Faults::default());
    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();
    let state = HttpState {
        faults: faults.clone(),
        seen: seen.clone(),
        stop: stop.clone(),
    };
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(http_export))
        .with_state(state);
    let signal = stop.clone();
    match tls {
        None => {
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal.cancelled_owned())
                    .await
                    .unwrap();
            });
        }
        Some(identity) => {
            let mut builder = tonic::transport::Server::builder()
                .tls_config(identity.server_config())
                .unwrap()
                .accept_http1(true);
            tokio::spawn(async move {
                builder
                    .add_routes(tonic::service::Routes::from(app))
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        signal.cancelled_owned(),
                    )
                    .await
                    .unwrap();
            });
        }
    }
    Receiver {
        addr,
        faults,
        seen,
        tls: tls.is_some(),
        stop,
    }
}
