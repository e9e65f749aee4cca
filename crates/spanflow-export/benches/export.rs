//! Export benchmarks against loopback gRPC sinks that count spans without decoding them.
//!
//! - `export/grpc_throughput`: spans/s from `SpanData` to the sink. `spanflow` encodes each
//!   batch with `spanflow_otlp::Encoder` and sends it through a one-backend [`FanOut`]
//!   (4 requests in flight); `opentelemetry_otlp` is opentelemetry-otlp's tonic
//!   `SpanExporter::export`, one batch at a time as the SDK's contract requires.
//! - `export/fanout_3_vs_1`: the measured "time" is the CPU time of the exporting side
//!   (the sending thread plus the export runtime's threads, from `/proc/.../schedstat`;
//!   the sinks run on their own runtime and are not counted) for encoding and exporting the
//!   same batches to 3 sinks (`spanflow`) or to 1 (`one_sink`). Here the "peer" is our own
//!   single-sink run, so the speedup is below 1 by nature: `one_sink / spanflow` is the
//!   inverse of the CPU multiplier of fanning out to three backends.
//! - `export/fanout_3_vs_1_gzip`: the same with gzip on every backend. A batch is compressed
//!   once and the compressed bytes are shared, so compression is paid per batch, not per
//!   backend.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use spanflow_export::{
    BackendConfig, Compression, ExportBatch, FanOut, OtlpGrpcExporter, RetryConfig,
};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Spans per batch (env `SPANFLOW_EXPORT_BENCH_SPANS`, default 512) and batches per round.
fn spans_per_batch() -> usize {
    std::env::var("SPANFLOW_EXPORT_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}
const BATCHES: usize = 32;

// ---------------------------------------------------------------------------------------
// The sink: a tonic server whose codec hands over raw bytes; spans are counted by walking
// the protobuf framing (ResourceSpans → ScopeSpans → Span), never decoded.

#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self {
        RawCodec
    }
    fn decoder(&mut self) -> Self {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Calls `f` with the payload of every length-delimited field `field` of `msg`.
fn each_field(msg: &[u8], field: u64, mut f: impl FnMut(&[u8])) -> Option<()> {
    let mut pos = 0;
    while pos < msg.len() {
        let key = varint(msg, &mut pos)?;
        match key & 7 {
            0 => {
                varint(msg, &mut pos)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = varint(msg, &mut pos)? as usize;
                let body = msg.get(pos..pos + len)?;
                if key >> 3 == field {
                    f(body);
                }
                pos += len;
            }
            _ => return None,
        }
    }
    Some(())
}

fn count_spans(request: &[u8]) -> u64 {
    let mut n = 0;
    each_field(request, 1, |rs| {
        each_field(rs, 2, |ss| {
            each_field(ss, 2, |_| n += 1);
        });
    });
    n
}

#[derive(Clone)]
struct CountingSink(Arc<AtomicU64>);

impl tonic::server::NamedService for CountingSink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct Count(Arc<AtomicU64>);

impl tonic::server::UnaryService<Bytes> for Count {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        self.0.fetch_add(count_spans(request.get_ref()), Relaxed);
        // An empty ExportTraceServiceResponse: no partial_success.
        std::future::ready(Ok(tonic::Response::new(Bytes::new())))
    }
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for CountingSink {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let count = Count(self.0.clone());
        Box::pin(async move {
            Ok(tonic::server::Grpc::new(RawCodec)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .unary(count, request)
                .await)
        })
    }
}

struct Sink {
    url: String,
    spans: Arc<AtomicU64>,
}

fn start_sink(rt: &tokio::runtime::Runtime) -> Sink {
    let spans = Arc::new(AtomicU64::new(0));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind sink");
    let url = format!("http://{}", listener.local_addr().expect("sink addr"));
    let svc = CountingSink(spans.clone());
    rt.spawn(async move {
        tonic::transport::Server::builder()
            // 1 MiB flow-control windows, grpc-java's default (grpc-go, the Collector's
            // server, grows its windows from the measured bandwidth-delay product); with
            // HTTP/2's 64 KiB default every contestant mostly waits on window updates.
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(4 << 20))
            .add_service(svc)
            .serve_with_incoming(
                // TCP_NODELAY, as every gRPC server sets it: with Nagle, the sink's small
                // response frames wait for the client's delayed ACK (40 ms) whenever several
                // requests share the connection.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await
            .expect("sink server");
    });
    Sink { url, spans }
}

fn wait_for(spans: &AtomicU64, target: u64) {
    let start = Instant::now();
    while spans.load(Relaxed) < target {
        assert!(start.elapsed() < Duration::from_secs(60), "sink starved");
        std::thread::yield_now();
    }
}

// ---------------------------------------------------------------------------------------
// CPU time of a set of threads, from /proc/<pid>/task/<tid>/schedstat (nanoseconds on CPU).

fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

fn thread_cpu(tid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

struct CpuMeter(Arc<parking_lot::Mutex<Vec<u32>>>);

impl CpuMeter {
    fn total(&self) -> Duration {
        let mut tids = self.0.lock().clone();
        tids.extend(current_tid());
        tids.into_iter().map(thread_cpu).sum()
    }
}

fn export_runtime() -> (tokio::runtime::Runtime, CpuMeter) {
    let tids = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let record = tids.clone();
    let workers = std::env::var("SPANFLOW_EXPORT_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("export-rt")
        .enable_all()
        .on_thread_start(move || record.lock().extend(current_tid()))
        .build()
        .expect("runtime");
    (rt, CpuMeter(tids))
}

fn sink_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sink-rt")
        .enable_all()
        .build()
        .expect("runtime")
}

fn fan_out(rt: &tokio::runtime::Runtime, sinks: &[&Sink]) -> FanOut {
    fan_out_with(rt, sinks, Compression::None)
}

fn fan_out_with(rt: &tokio::runtime::Runtime, sinks: &[&Sink], compression: Compression) -> FanOut {
    let mut b = FanOut::builder();
    for (i, s) in sinks.iter().enumerate() {
        let e = OtlpGrpcExporter::builder()
            .endpoint(s.url.clone())
            .compression(compression)
            .build()
            .expect("exporter");
        b = b.backend(
            format!("sink{i}"),
            e,
            BackendConfig {
                queue: 4 * BATCHES,
                concurrency: 4,
                retry: RetryConfig::disabled(),
                ..BackendConfig::default()
            },
        );
    }
    b.build(rt.handle()).expect("fan-out")
}

fn batches() -> Vec<Vec<SpanData>> {
    let data: Vec<Vec<SpanData>> = (0..BATCHES)
        .map(|i| spanflow_otlp::testing::span_batch(spans_per_batch(), i as u64))
        .collect();
    let request =
        spanflow_otlp::Encoder::new().encode(&data[0], &spanflow_otlp::testing::resource());
    eprintln!(
        "{} batches of {} spans, {} bytes per request",
        BATCHES,
        spans_per_batch(),
        request.encoded_len()
    );
    data
}

/// Encode every batch once and hand it to the fan-out; wait (parked, not spinning) until
/// every backend finished, then check the sinks counted every span.
fn spanflow_round(
    rt: &tokio::runtime::Runtime,
    fan: &FanOut,
    encoder: &mut spanflow_otlp::Encoder,
    resource: &opentelemetry_sdk::Resource,
    data: &[Vec<SpanData>],
    sinks: &[&Sink],
) {
    let before: Vec<u64> = sinks.iter().map(|s| s.spans.load(Relaxed)).collect();
    for spans in data {
        let request = encoder.encode(spans, resource);
        let n = request.span_count();
        fan.send(ExportBatch::new(request.into_bytes(), n))
            .expect("send");
    }
    rt.block_on(fan.flush(Instant::now() + Duration::from_secs(60)))
        .expect("flush");
    let total = (data.len() * spans_per_batch()) as u64;
    for (s, b) in sinks.iter().zip(before) {
        wait_for(&s.spans, b + total);
    }
}

fn grpc_throughput(c: &mut Criterion) {
    let sink_rt = sink_runtime();
    let sink = start_sink(&sink_rt);
    let (rt, _) = export_runtime();
    let data = batches();
    let resource = spanflow_otlp::testing::resource();

    let mut g = c.benchmark_group("export/grpc_throughput");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements((BATCHES * spans_per_batch()) as u64));

    let fan = fan_out(&rt, &[&sink]);
    let mut encoder = spanflow_otlp::Encoder::new();
    g.bench_function("spanflow", |b| {
        b.iter(|| spanflow_round(&rt, &fan, &mut encoder, &resource, &data, &[&sink]));
    });

    let mut peer = {
        let _guard = rt.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(sink.url.clone())
            .build()
            .expect("opentelemetry-otlp exporter")
    };
    peer.set_resource(&resource);
    g.bench_function("opentelemetry_otlp", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // The SDK hands the exporter owned Vecs; cloning them is not timed.
                let owned: Vec<Vec<SpanData>> = data.clone();
                let before = sink.spans.load(Relaxed);
                let start = Instant::now();
                rt.block_on(async {
                    for spans in owned {
                        peer.export(spans).await.expect("peer export");
                    }
                });
                wait_for(&sink.spans, before + (BATCHES * spans_per_batch()) as u64);
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
    rt.block_on(fan.shutdown(Instant::now() + Duration::from_secs(5)));
}

fn fanout_3_vs_1(c: &mut Criterion) {
    fanout_group(c, "export/fanout_3_vs_1", Compression::None);
}

/// The same with gzip: each batch is compressed once and the compressed bytes are shared by the
/// three backends, so compression is a cost of the batch, not of each backend.
fn fanout_3_vs_1_gzip(c: &mut Criterion) {
    fanout_group(c, "export/fanout_3_vs_1_gzip", Compression::Gzip);
}

fn fanout_group(c: &mut Criterion, name: &str, compression: Compression) {
    let sink_rt = sink_runtime();
    let sinks: Vec<Sink> = (0..3).map(|_| start_sink(&sink_rt)).collect();
    let data = batches();
    let resource = spanflow_otlp::testing::resource();

    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements((BATCHES * spans_per_batch()) as u64));

    for (id, targets) in [
        ("spanflow", vec![&sinks[0], &sinks[1], &sinks[2]]),
        ("one_sink", vec![&sinks[0]]),
    ] {
        let (rt, cpu) = export_runtime();
        let fan = fan_out_with(&rt, &targets, compression);
        let mut encoder = spanflow_otlp::Encoder::new();
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let before = cpu.total();
                for _ in 0..iters {
                    spanflow_round(&rt, &fan, &mut encoder, &resource, &data, &targets);
                }
                cpu.total().saturating_sub(before)
            });
        });
        rt.block_on(fan.shutdown(Instant::now() + Duration::from_secs(5)));
    }
    g.finish();
}

criterion_group!(benches, grpc_throughput, fanout_3_vs_1, fanout_3_vs_1_gzip);
criterion_main!(benches);
