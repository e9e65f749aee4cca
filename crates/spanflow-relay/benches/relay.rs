//! Relay throughput, gRPC in → gRPC out to a counting sink: the spanflow relay (bytes codec,
//! index-only parse, pipeline batching, OTLP/gRPC exporter) against a minimal relay that
//! prost-decodes every request and re-encodes it to forward it, the way a collector does.
//!
//! Both are measured as the time to push N spans from a client through the relay until the
//! counting sink has seen all N. Process CPU time (utime + stime from /proc/self/stat) is
//! measured around each function's runs and printed as CPU per span.

#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use spanflow_relay::client::{Answer, OtlpClient, Transport};
use spanflow_relay::config::RelayConfig;
use spanflow_relay::pipeline::PipelineSink;
use spanflow_relay::receiver::grpc::{BytesCodec, EXPORT_PATH};
use spanflow_relay::relay::RunningRelay;
use spanflow_relay::traffic::{AttributeMix, Payload, load_request};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::Channel;

const SPANS_PER_REQUEST: usize = 100;
const REQUESTS: usize = 200;
const SPANS: u64 = (SPANS_PER_REQUEST * REQUESTS) as u64;
const SENDERS: usize = 4;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A generic unary TraceService server over any handler `Bytes -> Bytes` or prost message.
#[derive(Clone)]
struct Service<H> {
    handler: H,
}

impl<H> NamedService for Service<H> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// Counts the spans it receives (indexing only) and answers OK.
#[derive(Clone)]
struct Counting {
    spans: Arc<AtomicU64>,
}

impl UnaryService<Bytes> for Counting {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let n =
            spanflow_otlp::TraceRequest::parse(request.into_inner()).map_or(0, |r| r.span_count());
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(Bytes::new())))
    }
}

impl<B> tower::Service<http::Request<B>> for Service<Counting>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let handler = self.handler.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(BytesCodec).max_decoding_message_size(64 << 20);
            Ok(grpc.unary(handler, req).await)
        })
    }
}

/// The peer: decodes every request with prost, re-encodes it and forwards it.
#[derive(Clone)]
struct ProstRelay {
    upstream: Channel,
}

impl UnaryService<ExportTraceServiceRequest> for ProstRelay {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<ExportTraceServiceRequest>) -> Self::Future {
        let upstream = self.upstream.clone();
        Box::pin(async move {
            let decoded = request.into_inner();
            let mut client = tonic::client::Grpc::new(upstream);
            client
                .ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic_prost::ProstCodec::<
                ExportTraceServiceRequest,
                ExportTraceServiceResponse,
            >::default();
            client
                .unary(
                    tonic::Request::new(decoded),
                    PathAndQuery::from_static(EXPORT_PATH),
                    codec,
                )
                .await?;
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for Service<ProstRelay>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let handler = self.handler.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<
                ExportTraceServiceResponse,
                ExportTraceServiceRequest,
            >::default();
            let mut grpc = Grpc::new(codec).max_decoding_message_size(64 << 20);
            Ok(grpc.unary(handler, req).await)
        })
    }
}

async fn serve<S>(service: S) -> SocketAddr
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

/// Sends every payload through `endpoint` with `SENDERS` concurrent clients, then waits until
/// the sink counted `target` spans.
async fn push(endpoint: &str, payloads: &Arc<Vec<Payload>>, sink: &AtomicU64, target: u64) {
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let client = OtlpClient::new(Transport::Grpc, endpoint, false).expect("client");
        let payloads = payloads.clone();
        tasks.push(tokio::spawn(async move {
            for p in payloads.iter().skip(s).step_by(SENDERS) {
                // Bounded retries: the relays answer "retry" only under backpressure.
                for _ in 0..10_000 {
                    match client.send(p, Duration::from_secs(30)).await {
                        Answer::Accepted { .. } => break,
                        Answer::RetryLater { .. } => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Answer::Failed { message } => panic!("relay failed: {message}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    assert!(
        sink.load(Ordering::Relaxed) >= target,
        "sink did not see every span"
    );
}

/// Process CPU time (user + system) so far, from /proc/self/stat, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux configuration that matters.
    Some((utime + stime) / 100.0)
}

fn relay_passthrough(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rng = rand::rng();
    let mix = AttributeMix {
        count: 8,
        string_len: 24,
    };
    let payloads: Arc<Vec<Payload>> = Arc::new(
        (0..REQUESTS)
            .map(|_| {
                Payload::protobuf_only(&load_request(&mut rng, "bench", SPANS_PER_REQUEST, mix))
            })
            .collect(),
    );

    // Counting sinks, one per relay.
    let ours_count = Arc::new(AtomicU64::new(0));
    let peer_count = Arc::new(AtomicU64::new(0));
    let (ours_endpoint, peer_endpoint, _relay) = rt.block_on(async {
        let ours_sink = serve(Service {
            handler: Counting {
                spans: ours_count.clone(),
            },
        })
        .await;
        let peer_sink = serve(Service {
            handler: Counting {
                spans: peer_count.clone(),
            },
        })
        .await;

        // spanflow: the relay with an OTLP/gRPC exporter to the counting sink.
        let text = format!(
            "[receivers.http]\nenabled = false\n[telemetry]\nmetrics_enabled = false\n\
             [receivers.grpc]\nendpoint = \"127.0.0.1:0\"\n\
             [pipeline.batch]\nmax_age_ms = 5\n\
             [[pipeline.exporters]]\nname = \"sink\"\n\
             sink = {{ type = \"otlp\", protocol = \"grpc\", endpoint = \"http://{ours_sink}\" }}\n"
        );
        let cfg = RelayConfig::from_toml_str(&text).expect("bench config");
        let sink = Arc::new(PipelineSink::build(&cfg.pipeline).expect("pipeline"));
        let relay = RunningRelay::start(&cfg, sink).await.expect("relay");
        let ours = format!("http://{}", relay.addresses().grpc.expect("grpc"));

        // prost_relay: decode, re-encode, forward.
        let upstream = Channel::from_shared(format!("http://{peer_sink}"))
            .expect("uri")
            .connect_lazy();
        let peer = serve(Service {
            handler: ProstRelay { upstream },
        })
        .await;
        (ours, format!("http://{peer}"), relay)
    });

    let mut group = c.benchmark_group("relay/grpc_passthrough");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(SPANS));
    let mut cpu = Vec::new();
    for (name, endpoint, count) in [
        ("spanflow", ours_endpoint.clone(), ours_count.clone()),
        ("prost_relay", peer_endpoint.clone(), peer_count.clone()),
    ] {
        let spans_pushed = Arc::new(AtomicU64::new(0));
        let cpu_before = cpu_seconds();
        let pushed = spans_pushed.clone();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let target = count.load(Ordering::Relaxed) + SPANS;
                        push(&endpoint, &payloads, &count, target).await;
                        pushed.fetch_add(SPANS, Ordering::Relaxed);
                    }
                    started.elapsed()
                })
            });
        });
        if let (Some(before), Some(after)) = (cpu_before, cpu_seconds()) {
            let spans = spans_pushed.load(Ordering::Relaxed).max(1);
            cpu.push((name, (after - before) / spans as f64 * 1e9));
        }
    }
    group.finish();

    // Baseline outside criterion (not a peer): the client straight into the counting sink, so
    // the relays' own CPU per span is the total minus this.
    let direct_count = Arc::new(AtomicU64::new(0));
    let direct = rt.block_on(async {
        let addr = serve(Service {
            handler: Counting {
                spans: direct_count.clone(),
            },
        })
        .await;
        format!("http://{addr}")
    });
    let rounds = 20;
    let baseline = cpu_seconds().and_then(|before| {
        rt.block_on(async {
            for _ in 0..rounds {
                let target = direct_count.load(Ordering::Relaxed) + SPANS;
                push(&direct, &payloads, &direct_count, target).await;
            }
        });
        Some((cpu_seconds()? - before) / (rounds * SPANS) as f64 * 1e9)
    });
    if let Some(base) = baseline {
        println!(
            "relay/grpc_passthrough baseline (client + counting sink, no relay): {base:.0} ns CPU per span"
        );
        let own: Vec<(&str, f64)> = cpu
            .iter()
            .map(|(n, ns)| (*n, (ns - base).max(1.0)))
            .collect();
        for (name, ns) in &own {
            println!(
                "relay/grpc_passthrough {name}: {ns:.0} ns relay CPU per span (total minus baseline)"
            );
        }
        if let [(_, ours), (_, peer)] = own.as_slice() {
            println!(
                "relay/grpc_passthrough relay CPU per span ratio prost_relay/spanflow: {:.2}x",
                peer / ours
            );
        }
    }
    for (name, ns) in &cpu {
        println!(
            "relay/grpc_passthrough {name}: {ns:.0} ns CPU per span (client, relay and sink in one process)"
        );
    }
    if let [(_, ours), (_, peer)] = cpu.as_slice() {
        println!(
            "relay/grpc_passthrough CPU per span ratio prost_relay/spanflow: {:.2}x",
            peer / ours
        );
    }
    let _ = Message::encoded_len(&ExportTraceServiceResponse::default());
}

criterion_group!(benches, relay_passthrough);
criterion_main!(benches);
