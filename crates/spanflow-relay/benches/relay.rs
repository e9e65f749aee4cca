//! Relay throughput, gRPC in → gRPC out to a counting sink: the spanflow relay (bytes codec,
//! index-only parse, pipeline batching, OTLP/gRPC exporter) against a minimal relay that
//! prost-decodes every request and re-encodes it to forward it, the way a collector does.
//!
//! Both are measured as the time to push N spans from a client through the relay until the
//! counting sink has seen all N, with the same payloads, load generator and sink.
//!
//! CPU per span counts only the relay's own CPU. The load generator, the counting sinks and the
//! bench thread run on threads the bench registers (tokio `on_thread_start`; a thread that
//! exits adds its final CPU time in `on_thread_stop`), and so does the peer relay's runtime. Per
//! thread CPU is `/proc/self/task/<tid>/schedstat` (nanoseconds on CPU). The spanflow relay is
//! everything else in the process: `CLOCK_PROCESS_CPUTIME_ID` (every thread, dead ones
//! included) minus the registered threads, which covers its receiver runtime and whatever
//! threads its pipeline starts. The "idle" line shows what that remainder is while the peer
//! runs (the idle spanflow relay plus criterion's own bookkeeping), so it can be judged.
//!
//! `relay/queue` (issue 20) runs the same workload through the spanflow relay three times in one
//! run: with the memory queue, and with the disk queue (`[pipeline.queue] type = "disk"`, a fresh
//! temporary directory each) under `fsync = "interval"` and `fsync = "always"`. With a disk
//! queue the relay answers a request only once its batch is written (under `always`: fsynced),
//! so the senders wait for the disk; it runs with 4 and with 16 concurrent senders. After the
//! group it prints each queue's throughput as a ratio of the memory queue's at the same
//! senders, and the spool's data fsyncs per second and batches (records) per fsync.

#![allow(missing_docs)]

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/sink.rs"]
mod sink;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use spanflow_relay::EXPORT_PATH;
use spanflow_relay::PipelineSink;
use spanflow_relay::RelayConfig;
use spanflow_relay::RunningRelay;
use spanflow_relay::tools::client::{OtlpClient, Transport};
use spanflow_relay::tools::traffic::{AttributeMix, Payload, load_request};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::Channel;

use cpu::{Threads, process_cpu_ns, runtime};
use sink::{Counting, send_all, serve};

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

/// CPU time so far: the registered non-relay threads, the peer relay, the whole process.
#[derive(Clone, Copy)]
struct CpuReading {
    harness: u64,
    peer: u64,
    process: u64,
}

#[derive(Clone)]
struct Meter {
    harness: Arc<Threads>,
    peer: Arc<Threads>,
}

impl Meter {
    fn read(&self) -> CpuReading {
        // The process total last, so it covers at least what the parts counted.
        let harness = self.harness.cpu_ns();
        let peer = self.peer.cpu_ns();
        CpuReading {
            harness,
            peer,
            process: process_cpu_ns(),
        }
    }
}

/// CPU spent between two readings, per part.
#[derive(Default, Clone, Copy)]
struct CpuSpent {
    /// The spanflow relay: the process minus the harness and the peer.
    ours: u64,
    peer: u64,
    harness: u64,
}

impl CpuSpent {
    fn between(a: CpuReading, b: CpuReading) -> Self {
        let harness = b.harness.saturating_sub(a.harness);
        let peer = b.peer.saturating_sub(a.peer);
        let process = b.process.saturating_sub(a.process);
        Self {
            ours: process.saturating_sub(harness + peer),
            peer,
            harness,
        }
    }
    fn add(&mut self, o: Self) {
        self.ours += o.ours;
        self.peer += o.peer;
        self.harness += o.harness;
    }
}

/// Sends every payload through `clients` (one task each), then waits until the sink counted
/// `target` spans.
async fn push(clients: &[OtlpClient], payloads: &Arc<Vec<Payload>>, sink: &AtomicU64, target: u64) {
    send_all(clients, payloads).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    assert!(
        sink.load(Ordering::Relaxed) >= target,
        "sink did not see every span"
    );
}

/// The bench relay's `[pipeline]`: the relay's default but for a short max age, so the last
/// partial batch of a run does not wait 200 ms.
const DEFAULT_PIPELINE: &str = "[pipeline.batch]\nmax_age_ms = 5\n";

/// The traffic of every group: `REQUESTS` requests of `SPANS_PER_REQUEST` spans, 8 attributes
/// of 24-byte strings each.
fn payloads() -> Arc<Vec<Payload>> {
    let mut rng = rand::rng();
    let mix = AttributeMix {
        count: 8,
        string_len: 24,
    };
    Arc::new(
        (0..REQUESTS)
            .map(|_| {
                Payload::protobuf_only(&load_request(&mut rng, "bench", SPANS_PER_REQUEST, mix))
            })
            .collect(),
    )
}

/// The spanflow relay on `rt`: OTLP/gRPC in, `pipeline` (TOML under `[pipeline]`), and one
/// OTLP/gRPC exporter to the counting sink at `sink`.
fn spanflow_relay(
    rt: &tokio::runtime::Runtime,
    sink: SocketAddr,
    pipeline: &str,
) -> (RunningRelay, Arc<PipelineSink>) {
    let text = format!(
        "[receivers.http]\nenabled = false\n[telemetry]\nmetrics_enabled = false\n\
         [receivers.grpc]\nendpoint = \"127.0.0.1:0\"\n{pipeline}\n\
         [[pipeline.exporters]]\nname = \"sink\"\n\
         sink = {{ type = \"otlp\", protocol = \"grpc\", endpoint = \"http://{sink}\" }}\n"
    );
    let cfg = RelayConfig::from_toml_str(&text).expect("bench config");
    rt.block_on(async {
        let sink = Arc::new(PipelineSink::build(&cfg.pipeline).expect("pipeline"));
        let relay = RunningRelay::start(&cfg, sink.clone())
            .await
            .expect("relay");
        (relay, sink)
    })
}

/// What one function's runs added up to.
#[derive(Default, Clone, Copy)]
struct Totals {
    spans: u64,
    wall: Duration,
    cpu: CpuSpent,
}

fn relay_passthrough(c: &mut Criterion) {
    // The harness: load generator, counting sinks and this thread. The peer relay: its own
    // runtime. The spanflow relay: its own runtime plus its pipeline's threads (unregistered).
    let harness = Arc::new(Threads::default());
    harness.register_current();
    let peer_threads = Arc::new(Threads::default());
    let meter = Meter {
        harness: harness.clone(),
        peer: peer_threads.clone(),
    };
    let load_rt = runtime("bench-load", 2, &harness);
    let sink_rt = runtime("bench-sink", 1, &harness);
    let ours_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay-spanflow")
        .enable_all()
        .build()
        .expect("runtime");
    let peer_rt = runtime("relay-prost", 2, &peer_threads);

    let payloads = payloads();

    // Counting sinks, one per relay, on the same runtime.
    let ours_count = Arc::new(AtomicU64::new(0));
    let peer_count = Arc::new(AtomicU64::new(0));
    let (ours_sink, peer_sink) = sink_rt.block_on(async {
        let ours = serve(Counting {
            spans: ours_count.clone(),
        })
        .await;
        let peer = serve(Counting {
            spans: peer_count.clone(),
        })
        .await;
        (ours, peer)
    });

    // spanflow: the relay with an OTLP/gRPC exporter to the counting sink. Its pipeline is the
    // relay's default but for a short max age, so the last partial batch of a run does not
    // wait 200 ms; SPANFLOW_RELAY_BENCH_PIPELINE replaces that TOML to try other settings.
    let pipeline = std::env::var("SPANFLOW_RELAY_BENCH_PIPELINE")
        .unwrap_or_else(|_| DEFAULT_PIPELINE.to_owned());
    let (relay, _) = spanflow_relay(&ours_rt, ours_sink, &pipeline);
    let ours_endpoint = format!("http://{}", relay.addresses().grpc.expect("grpc"));

    // prost_relay: decode, re-encode, forward; its client channel lives on its runtime too.
    let peer_endpoint = peer_rt.block_on(async {
        let upstream = Channel::from_shared(format!("http://{peer_sink}"))
            .expect("uri")
            .tcp_nodelay(true)
            .connect_lazy();
        let addr = serve(Service {
            handler: ProstRelay { upstream },
        })
        .await;
        format!("http://{addr}")
    });

    let mut group = c.benchmark_group("relay/grpc_passthrough");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(SPANS));
    let mut totals = Vec::new();
    for (name, endpoint, count) in [
        ("spanflow", &ours_endpoint, &ours_count),
        ("prost_relay", &peer_endpoint, &peer_count),
    ] {
        // One set of connections per relay, reused by every run (as long-lived senders do).
        let clients: Vec<OtlpClient> = load_rt.block_on(async {
            (0..SENDERS)
                .map(|_| OtlpClient::new(Transport::Grpc, endpoint, false).expect("client"))
                .collect()
        });
        let mut total = Totals::default();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                load_rt.block_on(async {
                    let before = meter.read();
                    let started = Instant::now();
                    for _ in 0..iters {
                        let target = count.load(Ordering::Relaxed) + SPANS;
                        push(&clients, &payloads, count, target).await;
                    }
                    let elapsed = started.elapsed();
                    total.cpu.add(CpuSpent::between(before, meter.read()));
                    total.spans += iters * SPANS;
                    total.wall += elapsed;
                    elapsed
                })
            });
        });
        totals.push((name, total));
    }
    group.finish();

    let report = |name: &str, t: &Totals, relay_ns: u64| {
        let spans = t.spans.max(1) as f64;
        let ns = relay_ns as f64 / spans;
        println!(
            "relay/grpc_passthrough {name}: {:.0} spans/s, {ns:.0} ns relay CPU per span \
             ({:.0} spans per relay CPU-second; harness {:.0} ns/span)",
            spans / t.wall.as_secs_f64().max(1e-9),
            1e9 / ns.max(1e-9),
            t.harness_ns() as f64 / spans,
        );
        ns
    };
    let [(_, ours), (_, peer)] = totals.as_slice() else {
        unreachable!("two functions")
    };
    let ours_ns = (ours.spans > 0).then(|| report("spanflow", ours, ours.cpu.ours));
    let peer_ns = (peer.spans > 0).then(|| report("prost_relay", peer, peer.cpu.peer));
    if let (Some(ours_ns), Some(peer_ns)) = (ours_ns, peer_ns) {
        println!(
            "relay/grpc_passthrough idle: spanflow relay CPU while prost_relay ran {:.0} ns/span, \
             prost_relay CPU while spanflow ran {:.0} ns/span",
            peer.cpu.ours as f64 / peer.spans as f64,
            ours.cpu.peer as f64 / ours.spans as f64,
        );
        println!(
            "relay/grpc_passthrough relay CPU per span ratio prost_relay/spanflow: {:.2}x",
            peer_ns / ours_ns.max(1e-9)
        );
        println!(
            "relay/grpc_passthrough spans/s ratio spanflow/prost_relay: {:.2}x",
            (ours.spans as f64 / ours.wall.as_secs_f64().max(1e-9))
                / (peer.spans as f64 / peer.wall.as_secs_f64().max(1e-9))
        );
    }
    let shutdown = ours_rt.block_on(relay.shutdown(Duration::from_secs(5)));
    assert_eq!(shutdown.sink.failed, 0, "spanflow relay failed spans");
}

impl Totals {
    fn harness_ns(&self) -> u64 {
        self.cpu.harness
    }
}

/// The queues `relay/queue` compares: function name and the `[pipeline.queue]` fsync policy
/// (`None`: the memory queue).
const QUEUES: [(&str, Option<&str>); 3] = [
    ("memory", None),
    ("disk_interval", Some("interval")),
    ("disk_always", Some("always")),
];

/// Concurrent senders in `relay/queue`. With a disk queue a sender waits for the write (and
/// under `always` the fsync) before it sends again, so 4 senders measure how the relay does
/// when few clients wait on it; 16 keep it busy, which is what a throughput figure asks.
const QUEUE_SENDERS: [usize; 2] = [4, 16];

/// What the spool did during one function's runs.
#[derive(Default, Clone, Copy)]
struct SpoolWork {
    batches: u64,
    fsyncs: u64,
    fsync_time: Duration,
    appends: u64,
}

impl SpoolWork {
    fn of(sink: &PipelineSink) -> Self {
        let stats = sink.pipeline().stats();
        let batches = stats.backends.iter().map(|b| b.exported_batches).sum();
        stats.spool.map_or(
            Self {
                batches,
                ..Self::default()
            },
            |s| Self {
                batches,
                fsyncs: s.fsync.count,
                fsync_time: s.fsync.total,
                appends: s.appended,
            },
        )
    }
    fn since(self, before: Self) -> Self {
        Self {
            batches: self.batches - before.batches,
            fsyncs: self.fsyncs - before.fsyncs,
            fsync_time: self.fsync_time.saturating_sub(before.fsync_time),
            appends: self.appends - before.appends,
        }
    }
    fn add(&mut self, o: Self) {
        self.batches += o.batches;
        self.fsyncs += o.fsyncs;
        self.fsync_time += o.fsync_time;
        self.appends += o.appends;
    }
}

/// Issue 20: the relay's throughput with the disk queue against the memory queue, same run.
fn relay_queue(c: &mut Criterion) {
    let harness = Arc::new(Threads::default());
    harness.register_current();
    let meter = Meter {
        harness: harness.clone(),
        peer: Arc::new(Threads::default()),
    };
    let load_rt = runtime("bench-load", 2, &harness);
    let sink_rt = runtime("bench-sink", 1, &harness);
    let ours_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay-spanflow")
        .enable_all()
        .build()
        .expect("runtime");
    let payloads = payloads();
    let count = Arc::new(AtomicU64::new(0));
    let sink_addr = sink_rt.block_on(serve(Counting {
        spans: count.clone(),
    }));

    let mut group = c.benchmark_group("relay/queue");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(SPANS));
    let mut totals = Vec::new();
    for senders in QUEUE_SENDERS {
        for (name, fsync) in QUEUES {
            // A fresh directory per run, removed when the relay is done with it.
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut pipeline = std::env::var("SPANFLOW_RELAY_BENCH_PIPELINE")
                .unwrap_or_else(|_| DEFAULT_PIPELINE.to_owned());
            if let Some(fsync) = fsync {
                let dir = toml::Value::String(dir.path().display().to_string());
                pipeline.push_str(&format!(
                    "[pipeline.queue]\ntype = \"disk\"\ndir = {dir}\nfsync = \"{fsync}\"\n"
                ));
            }
            let (relay, sink) = spanflow_relay(&ours_rt, sink_addr, &pipeline);
            let endpoint = format!("http://{}", relay.addresses().grpc.expect("grpc"));
            let clients: Vec<OtlpClient> = load_rt.block_on(async {
                (0..senders)
                    .map(|_| OtlpClient::new(Transport::Grpc, &endpoint, false).expect("client"))
                    .collect()
            });
            let mut total = Totals::default();
            let mut spool = SpoolWork::default();
            group.bench_function(BenchmarkId::new(name, senders), |b| {
                b.iter_custom(|iters| {
                    let spool_before = SpoolWork::of(&sink);
                    let elapsed = load_rt.block_on(async {
                        let before = meter.read();
                        let started = Instant::now();
                        for _ in 0..iters {
                            let target = count.load(Ordering::Relaxed) + SPANS;
                            push(&clients, &payloads, &count, target).await;
                        }
                        let elapsed = started.elapsed();
                        total.cpu.add(CpuSpent::between(before, meter.read()));
                        elapsed
                    });
                    spool.add(SpoolWork::of(&sink).since(spool_before));
                    total.spans += iters * SPANS;
                    total.wall += elapsed;
                    elapsed
                });
            });
            drop(clients);
            let shutdown = ours_rt.block_on(relay.shutdown(Duration::from_secs(10)));
            assert_eq!(shutdown.sink.failed, 0, "{name}/{senders}: failed spans");
            totals.push((name, senders, total, spool));
        }
    }
    group.finish();

    let rate = |t: &Totals| t.spans as f64 / t.wall.as_secs_f64().max(1e-9);
    for (name, senders, t, spool) in &totals {
        if t.spans == 0 {
            continue; // filtered out
        }
        let secs = t.wall.as_secs_f64().max(1e-9);
        let mut line = format!(
            "relay/queue {name}/{senders}: {:.0} spans/s, {:.0} ns relay CPU per span, \
             {:.0} spans per exported batch",
            rate(t),
            t.cpu.ours as f64 / t.spans as f64,
            t.spans as f64 / spool.batches.max(1) as f64,
        );
        let memory = totals
            .iter()
            .find(|(n, s, m, _)| *n == "memory" && s == senders && m.spans > 0);
        if let Some((_, _, memory, _)) = memory {
            line.push_str(&format!(
                ", {:.2}x the memory queue's spans/s",
                rate(t) / rate(memory)
            ));
        }
        if spool.appends > 0 {
            line.push_str(&format!(
                ", {:.1} fsyncs/s ({:.1} batches per fsync, mean fsync {:.2} ms)",
                spool.fsyncs as f64 / secs,
                spool.appends as f64 / spool.fsyncs.max(1) as f64,
                spool.fsync_time.as_secs_f64() * 1e3 / spool.fsyncs.max(1) as f64,
            ));
        }
        println!("{line}");
    }
}

criterion_group!(benches, relay_passthrough, relay_queue);
criterion_main!(benches);
