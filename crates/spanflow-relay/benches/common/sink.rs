//! The relay benches' counting OTLP/gRPC sink and load generator, shared by `relay` and
//! `kafka`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use spanflow_relay::BytesCodec;
use spanflow_relay::tools::client::{Answer, OtlpClient};
use spanflow_relay::tools::traffic::Payload;
use tonic::server::{Grpc, NamedService, UnaryService};

/// An OTLP/gRPC TraceService that counts the spans it receives (indexing each request, no
/// decode) and answers OK.
#[derive(Clone)]
pub(crate) struct Counting {
    pub(crate) spans: Arc<AtomicU64>,
}

impl NamedService for Counting {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl UnaryService<Bytes> for Counting {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let n =
            spanflow_relay::TraceRequest::parse(request.into_inner()).map_or(0, |r| r.span_count());
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(Bytes::new())))
    }
}

impl<B> tower::Service<http::Request<B>> for Counting
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(BytesCodec).max_decoding_message_size(64 << 20);
            Ok(grpc.unary(svc, req).await)
        })
    }
}

/// Serves `service` on a fresh loopback port (on the current runtime) and returns its address.
pub(crate) async fn serve<S>(service: S) -> SocketAddr
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    addr
}

/// Sends every payload, spread over `clients` (one task each, payload `i` on client
/// `i % clients`), until each is accepted; a "retry later" is retried after a millisecond, at
/// most 10 000 times per payload.
pub(crate) async fn send_all(clients: &[OtlpClient], payloads: &Arc<Vec<Payload>>) {
    let senders = clients.len();
    let mut tasks = Vec::new();
    for (s, client) in clients.iter().enumerate() {
        let client = client.clone();
        let payloads = payloads.clone();
        tasks.push(tokio::spawn(async move {
            for p in payloads.iter().skip(s).step_by(senders) {
                // Bounded retries: the relays answer "retry" only under backpressure.
                for attempt in 0.. {
                    match client.send(p, Duration::from_secs(30)).await {
                        Answer::Accepted { .. } => break,
                        Answer::RetryLater { .. } if attempt < 10_000 => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Answer::RetryLater { .. } => panic!("relay kept refusing a payload"),
                        Answer::Failed { message } => panic!("relay failed: {message}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
}
