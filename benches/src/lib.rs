//! spanflow-benches: end-to-end comparisons of spanflow with opentelemetry_sdk's
//! `BatchSpanProcessor`, run on the same spans in the same process.
//!
//! - `cargo bench -p spanflow-benches --bench e2e`: criterion groups `e2e/end_span_1t`,
//!   `e2e/end_span_2t` (ending spans: spanflow vs BSP default, BSP with a queue large enough not
//!   to drop, no processor) and `e2e/grpc_delivery` (spans delivered per second to a loopback
//!   OTLP/gRPC receiver: spanflow vs BSP + opentelemetry-otlp).
//! - `cargo run --release -p spanflow-benches --bin burst`: spans dropped from a 1 M-span burst
//!   with default settings; prints a markdown fragment for `docs/BENCHMARKS.md`.
//!
//! This library holds what both share: the loopback receiver ([`wire_sink`], which counts spans
//! from the wire without decoding them, so the receiver is not the bottleneck every contestant
//! waits on), the providers under test and the span workload (4 attributes per span, as in the
//! issue's measurements).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span, Tracer, TracerProvider};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData,
};

pub mod wire_sink;

/// A `BatchSpanProcessor` queue large enough that a 1 M-span burst never fills it.
pub const LARGE_QUEUE: usize = 2_000_000;

/// An SDK exporter that counts spans and sends them nowhere (the "do-nothing exporter").
#[derive(Debug, Clone, Default)]
pub struct CountingSdkExporter {
    spans: Arc<AtomicU64>,
}

impl CountingSdkExporter {
    /// Spans exported so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

impl opentelemetry_sdk::trace::SpanExporter for CountingSdkExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn resource() -> Resource {
    Resource::builder().with_service_name("bench").build()
}

/// A provider with no span processor at all: the cost of creating and ending spans alone.
pub fn no_processor() -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_resource(resource())
        .build()
}

/// A span processor that drops every span it is given: the least any processor can cost, since
/// the SDK builds the `SpanData` and calls `on_end` for any registered processor.
#[derive(Debug, Default)]
pub struct DropProcessor;

impl opentelemetry_sdk::trace::SpanProcessor for DropProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        drop(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// A provider whose only processor is [`DropProcessor`].
pub fn drop_processor() -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_resource(resource())
        .with_span_processor(DropProcessor)
        .build()
}

/// A provider with a default `BatchSpanProcessor` (or one with `queue` spans of room) and a
/// do-nothing exporter.
pub fn bsp(queue: Option<usize>) -> (SdkTracerProvider, CountingSdkExporter) {
    let exporter = CountingSdkExporter::default();
    let mut config = BatchConfigBuilder::default();
    if let Some(queue) = queue {
        config = config.with_max_queue_size(queue);
    }
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .with_batch_config(config.build())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource())
        .with_span_processor(processor)
        .build();
    (provider, exporter)
}

/// Where spanflow frees encoded spans in these benches: on the application threads (the
/// default) with glibc's allocator, and on the pipeline's thread in the mimalloc build, which is
/// what [`spanflow::FreeSpansOn`] tells users of an allocator with cheap cross-thread frees.
pub const FREE_SPANS_ON: spanflow::FreeSpansOn = if cfg!(feature = "mimalloc") {
    spanflow::FreeSpansOn::Pipeline
} else {
    spanflow::FreeSpansOn::Application
};

/// A provider with spanflow's processor (defaults but [`FREE_SPANS_ON`]) and a do-nothing
/// exporter.
pub fn spanflow_null() -> (
    SdkTracerProvider,
    spanflow::Pipeline,
    spanflow::NullExporter,
) {
    spanflow_null_freeing_on(FREE_SPANS_ON)
}

/// [`spanflow_null`], with encoded spans freed on `threads`.
pub fn spanflow_null_freeing_on(
    threads: spanflow::FreeSpansOn,
) -> (
    SdkTracerProvider,
    spanflow::Pipeline,
    spanflow::NullExporter,
) {
    let exporter = spanflow::NullExporter::default();
    let processor = spanflow::SpanProcessor::builder()
        .pipeline(|p| p.exporter("null", exporter.clone()).free_spans_on(threads))
        .build()
        .expect("spanflow processor");
    let pipeline = processor.pipeline().clone();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource())
        .with_span_processor(processor)
        .build();
    (provider, pipeline, exporter)
}

/// A provider with spanflow's processor (defaults but [`FREE_SPANS_ON`]) exporting over
/// OTLP/gRPC to `endpoint`.
pub fn spanflow_grpc(endpoint: &str) -> (SdkTracerProvider, spanflow::Pipeline) {
    let exporter = spanflow::export::OtlpGrpcExporter::builder()
        .endpoint(endpoint)
        .build()
        .expect("grpc exporter");
    let processor = spanflow::SpanProcessor::builder()
        .pipeline(|p| p.exporter("sink", exporter).free_spans_on(FREE_SPANS_ON))
        .build()
        .expect("spanflow processor");
    let pipeline = processor.pipeline().clone();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource())
        .with_span_processor(processor)
        .build();
    (provider, pipeline)
}

/// A provider with a default `BatchSpanProcessor` and opentelemetry-otlp's tonic exporter to
/// `endpoint`. tonic needs a runtime for its connection: `runtime` must stay alive while the
/// provider is used (the BSP worker thread drives exports with `block_on`).
pub fn bsp_otlp(endpoint: &str, runtime: &tokio::runtime::Runtime) -> SdkTracerProvider {
    let _entered = runtime.enter();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("otlp exporter");
    SdkTracerProvider::builder()
        .with_resource(resource())
        .with_batch_exporter(exporter)
        .build()
}

/// Ends `n` spans with four attributes each on the calling thread.
pub fn end_spans(provider: &SdkTracerProvider, n: u64) {
    let tracer = provider.tracer("bench");
    for i in 0..n {
        let mut span = tracer.start("GET /items/{id}");
        span.set_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/items/{id}"),
            KeyValue::new("http.response.status_code", 200),
            KeyValue::new("item.id", i as i64),
        ]);
        span.end();
    }
}

/// Long-lived span-ending threads, as in a service: [`SpanThreads::run`] has each of them end a
/// burst of spans at once on a given provider and returns the burst's wall time.
///
/// The benches use these rather than [`end_spans_parallel`], which starts new threads for
/// every burst: a fresh thread begins with an empty allocator cache (and may be given another
/// glibc arena), so each burst would also measure a thread's start-up, which no service pays
/// per span.
#[derive(Debug)]
pub struct SpanThreads {
    jobs: Vec<std::sync::mpsc::Sender<(SdkTracerProvider, u64)>>,
    done: std::sync::mpsc::Receiver<(std::time::Instant, std::time::Instant)>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl SpanThreads {
    /// Starts `threads` span-ending threads, idle until [`SpanThreads::run`].
    pub fn new(threads: usize) -> Self {
        let barrier = Arc::new(std::sync::Barrier::new(threads));
        let (done_tx, done) = std::sync::mpsc::channel();
        let mut jobs = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, rx) = std::sync::mpsc::channel::<(SdkTracerProvider, u64)>();
            let barrier = barrier.clone();
            let done_tx = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("span-ending-{i}"))
                .spawn(move || {
                    while let Ok((provider, n)) = rx.recv() {
                        barrier.wait();
                        let start = std::time::Instant::now();
                        end_spans(&provider, n);
                        if done_tx.send((start, std::time::Instant::now())).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawn a span-ending thread");
            jobs.push(tx);
            handles.push(handle);
        }
        SpanThreads {
            jobs,
            done,
            handles,
        }
    }

    /// Ends `per_thread` spans on each thread at once; returns the wall time from the first
    /// thread's start to the last thread's end (each thread reads the clock itself).
    pub fn run(&self, provider: &SdkTracerProvider, per_thread: u64) -> Duration {
        for job in &self.jobs {
            job.send((provider.clone(), per_thread))
                .expect("span-ending thread alive");
        }
        let spans: Vec<_> = (0..self.jobs.len())
            .map(|_| self.done.recv().expect("span-ending thread alive"))
            .collect();
        wall_time(&spans)
    }
}

impl Drop for SpanThreads {
    fn drop(&mut self) {
        self.jobs.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Ends `per_thread` spans on each of `threads` threads at once; returns the wall time from the
/// first thread's start to the last thread's end (each thread reads the clock itself, so a
/// descheduled coordinating thread cannot shorten or stretch the measurement).
pub fn end_spans_parallel(
    provider: &SdkTracerProvider,
    threads: usize,
    per_thread: u64,
) -> Duration {
    let barrier = std::sync::Barrier::new(threads);
    let spans: Vec<(std::time::Instant, std::time::Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = std::time::Instant::now();
                    end_spans(provider, per_thread);
                    (start, std::time::Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("span-ending thread panicked"))
            .collect()
    });
    wall_time(&spans)
}

/// From the first thread's start to the last thread's end, given each thread's (start, end).
fn wall_time(spans: &[(std::time::Instant, std::time::Instant)]) -> Duration {
    let first = spans.iter().map(|s| s.0).min();
    let last = spans.iter().map(|s| s.1).max();
    match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    }
}
