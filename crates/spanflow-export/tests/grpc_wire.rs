//! The OTLP/gRPC exporter's own request framing and response reading, against a scripted
//! HTTP/2 server: what goes on the wire (prefix, shared body, compression, headers) and
//! every way a server may answer (status in headers or trailers, HTTP errors, compressed
//! or missing response messages).
#![cfg(not(loom))]

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Body as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use parking_lot::Mutex;
use prost::Message;
use spanflow_export::{
    BackendConfig, Compression, ExportError, Exporter, FanOut, OtlpGrpcExporter, RetryConfig,
};
use tonic::Code;

/// One scripted answer.
#[derive(Clone, Default)]
struct Answer {
    http_status: u16,
    /// Extra response headers (e.g. `grpc-status` for a trailers-only answer).
    headers: Vec<(&'static str, String)>,
    /// Response body bytes (already gRPC-framed).
    body: Option<Bytes>,
    /// Trailers; `None` sends none.
    trailers: Option<Vec<(&'static str, String)>>,
}

/// What the server received.
#[derive(Clone, Debug)]
struct Received {
    headers: http::HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl tonic::server::NamedService for Scripted {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Scripted {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut body = std::pin::pin!(body);
            let mut data = BytesMut::new();
            while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                if let Ok(d) = frame.expect("request body").into_data() {
                    data.extend_from_slice(&d);
                }
            }
            me.received.lock().push(Received {
                headers: parts.headers,
                body: data.freeze(),
            });
            let answer = me.answers.lock().pop_front().unwrap_or_else(ok_answer);
            let mut response = http::Response::builder().status(answer.http_status);
            for (k, v) in &answer.headers {
                response = response.header(*k, v.as_str());
            }
            let body = ScriptedBody {
                data: answer.body,
                trailers: answer.trailers.map(|t| {
                    let mut map = http::HeaderMap::new();
                    for (k, v) in t {
                        map.insert(k, v.parse().expect("trailer value"));
                    }
                    map
                }),
            };
            Ok(response
                .body(tonic::body::Body::new(body))
                .expect("response"))
        })
    }
}

struct ScriptedBody {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for ScriptedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let me = self.get_mut();
        if let Some(d) = me.data.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        Poll::Ready(
            me.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

fn frame(flag: u8, message: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(flag);
    b.put_u32(message.len() as u32);
    b.extend_from_slice(message);
    b.freeze()
}

fn response_message(rejected: i64) -> Vec<u8> {
    ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: "too old".into(),
        }),
    }
    .encode_to_vec()
}

fn ok_trailers() -> Option<Vec<(&'static str, String)>> {
    Some(vec![("grpc-status", "0".into())])
}

fn ok_answer() -> Answer {
    Answer {
        http_status: 200,
        headers: vec![("content-type", "application/grpc".into())],
        body: Some(frame(0, &response_message(0))),
        trailers: ok_trailers(),
    }
}

async fn scripted(answers: Vec<Answer>) -> (String, Scripted) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let svc = Scripted {
        answers: Arc::new(Mutex::new(answers.into())),
        received: Arc::default(),
    };
    let server = svc.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (url, svc)
}

fn exporter(url: &str, compression: Compression) -> OtlpGrpcExporter {
    OtlpGrpcExporter::builder()
        .endpoint(url)
        .compression(compression)
        .header("x-test", "wire")
        .timeout(Duration::from_millis(2500))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_is_prefix_plus_the_batch_bytes_with_grpc_headers() {
    let (url, server) = scripted(vec![]).await;
    let b = common::batch(0, 10);
    let out = exporter(&url, Compression::None)
        .export(b.clone())
        .await
        .unwrap();
    assert_eq!((out.accepted, out.rejected), (10, 0));
    let got = server.received.lock()[0].clone();
    assert_eq!(got.body[0], 0);
    assert_eq!(&got.body[1..5], &(b.body.len() as u32).to_be_bytes());
    assert_eq!(&got.body[5..], &b.body[..]);
    let h = |n: &str| {
        got.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(h("content-type").as_deref(), Some("application/grpc"));
    assert_eq!(h("te").as_deref(), Some("trailers"));
    assert_eq!(h("x-test").as_deref(), Some("wire"));
    assert_eq!(h("grpc-timeout").as_deref(), Some("2500000u"));
    assert_eq!(h("grpc-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_carry_the_flag_and_decode_to_the_batch() {
    let (url, server) = scripted(vec![]).await;
    let b = common::batch(0, 50);
    for c in [Compression::Gzip, Compression::Zstd] {
        exporter(&url, c).export(b.clone()).await.unwrap();
    }
    let got = server.received.lock().clone();
    for (r, name) in got.iter().zip(["gzip", "zstd"]) {
        assert_eq!(r.headers.get("grpc-encoding").unwrap(), name);
        assert_eq!(r.body[0], 1);
        let len = u32::from_be_bytes(r.body[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, r.body.len() - 5);
        let mut plain = Vec::new();
        if name == "gzip" {
            flate2::read::GzDecoder::new(&r.body[5..])
                .read_to_end(&mut plain)
                .unwrap();
        } else {
            plain = zstd::stream::decode_all(&r.body[5..]).unwrap();
        }
        assert_eq!(plain, b.body);
    }
}

async fn answer(a: Answer) -> Result<spanflow_export::ExportOutcome, ExportError> {
    let (url, _server) = scripted(vec![a]).await;
    exporter(&url, Compression::None)
        .export(common::batch(0, 10))
        .await
}

fn grpc_code(r: &Result<spanflow_export::ExportOutcome, ExportError>) -> (Code, String) {
    match r {
        Err(ExportError::Grpc { code, message, .. }) => (*code, message.clone()),
        other => panic!("expected a grpc error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_is_read_from_the_message() {
    let out = answer(Answer {
        body: Some(frame(0, &response_message(3))),
        ..ok_answer()
    })
    .await
    .unwrap();
    assert_eq!(
        (out.accepted, out.rejected, out.message.as_deref()),
        (7, 3, Some("too old"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_compressed_response_is_decoded() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &response_message(4)).unwrap();
    let out = answer(Answer {
        headers: vec![
            ("content-type", "application/grpc".into()),
            ("grpc-encoding", "gzip".into()),
        ],
        body: Some(frame(1, &gz.finish().unwrap())),
        ..ok_answer()
    })
    .await
    .unwrap();
    assert_eq!((out.accepted, out.rejected), (6, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_headers_ends_the_call() {
    // Trailers-only error: retryable UNAVAILABLE with a percent-encoded message.
    let r = answer(Answer {
        http_status: 200,
        headers: vec![
            ("grpc-status", "14".into()),
            ("grpc-message", "going%20away".into()),
        ],
        body: None,
        trailers: None,
    })
    .await;
    assert_eq!(grpc_code(&r), (Code::Unavailable, "going away".into()));
    assert!(r.unwrap_err().is_retryable());
    // Trailers-only OK without a message: every span accepted.
    let out = answer(Answer {
        http_status: 200,
        headers: vec![("grpc-status", "0".into())],
        body: None,
        trailers: None,
    })
    .await
    .unwrap();
    assert_eq!((out.accepted, out.rejected), (10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_trailers_after_a_body_is_an_error() {
    let details = spanflow_export::grpc::retry_info_details(8, "full", Duration::from_millis(700));
    let details = base64_no_pad(&details);
    let r = answer(Answer {
        body: Some(frame(0, &response_message(0))),
        trailers: Some(vec![
            ("grpc-status", "8".into()),
            ("grpc-message", "full".into()),
            ("grpc-status-details-bin", details),
        ]),
        ..ok_answer()
    })
    .await;
    assert_eq!(grpc_code(&r), (Code::ResourceExhausted, "full".into()));
    let e = r.unwrap_err();
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_millis(700)));
    let r = answer(Answer {
        trailers: Some(vec![("grpc-status", "3".into())]),
        ..ok_answer()
    })
    .await;
    assert_eq!(grpc_code(&r).0, Code::InvalidArgument);
    assert!(!r.unwrap_err().is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_without_grpc_status_are_mapped() {
    for (http, code, retryable) in [
        (503, Code::Unavailable, true),
        (429, Code::Unavailable, true),
        (404, Code::Unimplemented, false),
        (401, Code::Unauthenticated, false),
        (500, Code::Unknown, false),
    ] {
        let r = answer(Answer {
            http_status: http,
            headers: vec![],
            body: Some(Bytes::from_static(b"<html>oops</html>")),
            trailers: None,
        })
        .await;
        assert_eq!(grpc_code(&r).0, code, "http {http}");
        assert_eq!(r.unwrap_err().is_retryable(), retryable, "http {http}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_trailers_and_garbage_messages_are_errors() {
    // An answer that ends without its status: the server may have processed the request.
    let r = answer(Answer {
        trailers: None,
        ..ok_answer()
    })
    .await;
    assert!(
        matches!(&r, Err(e @ ExportError::Interrupted(_)) if e.may_have_arrived() && e.is_retryable()),
        "{r:?}"
    );
    let r = answer(Answer {
        body: Some(Bytes::from_static(b"\0\0\0")),
        ..ok_answer()
    })
    .await;
    assert_eq!(grpc_code(&r).0, Code::Internal);
    let r = answer(Answer {
        body: Some(frame(0, b"\xff\xff\xff")),
        ..ok_answer()
    })
    .await;
    assert_eq!(grpc_code(&r).0, Code::Internal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_of_one_compressed_batch_reaches_every_backend() {
    let mut servers = Vec::new();
    let mut fan = FanOut::builder();
    for i in 0..3 {
        let (url, server) = scripted(vec![]).await;
        let config = BackendConfig {
            retry: RetryConfig::disabled(),
            ..BackendConfig::default()
        };
        fan = fan.backend(format!("b{i}"), exporter(&url, Compression::Gzip), config);
        servers.push(server);
    }
    let fan = fan.build(&tokio::runtime::Handle::current()).unwrap();
    let b = common::batch(0, 40);
    fan.send(b.clone()).unwrap();
    let stats = fan.shutdown(Instant::now() + Duration::from_secs(10)).await;
    let bodies: Vec<Bytes> = servers
        .iter()
        .map(|s| s.received.lock()[0].body.clone())
        .collect();
    // Every backend got the very same compressed message (compressed once, then shared).
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(bodies[0], b.compressed(Compression::Gzip, true).unwrap());
    for s in &stats.backends {
        assert_eq!(
            (s.exported_batches, s.accepted_spans),
            (1, 40),
            "{}",
            s.name
        );
    }
}

/// Standard base64 without padding, as gRPC sends binary metadata.
fn base64_no_pad(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
