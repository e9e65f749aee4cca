//! `flush_async` / `shutdown_async` on a tokio `current_thread` runtime, with a real loopback
//! OTLP/gRPC sink: they resolve with the blocking calls' results while the runtime's only
//! thread keeps running other tasks. Every wait is bounded by `tokio::time::timeout`.
#![cfg(not(loom))]

#[path = "../examples/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_sdk::trace::SpanProcessor as _;
use spanflow::export::{ExportBatch, ExportError, ExportOutcome, Exporter, OtlpGrpcExporter};
use spanflow::{FlushError, Pipeline, ShutdownError, SpanProcessor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// The most any one wait in these tests may take before the test fails instead of hanging.
const BOUND: Duration = Duration::from_secs(30);

fn grpc(sink: &common::Sink) -> OtlpGrpcExporter {
    OtlpGrpcExporter::builder()
        .endpoint(sink.endpoint())
        .build()
        .expect("exporter")
}

/// Counts the turns a task on the test's runtime gets: it only gets any while the test's own
/// task is parked in an `.await`, not blocking the thread.
fn ticker() -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let ticks = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&ticks);
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            // Relaxed: a count read by the same runtime thread, nothing else ordered by it.
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    (ticks, task)
}

#[tokio::test(flavor = "current_thread")]
async fn flush_async_returns_ok_after_the_spans_arrive() {
    let sink = common::Sink::start();
    let processor = SpanProcessor::builder()
        .pipeline(|p| p.exporter("sink", grpc(&sink)))
        .build()
        .expect("processor");
    let pipeline = processor.pipeline().clone();
    let provider = support::provider(processor.clone(), "async-flush");

    support::end_spans(&provider, 500);
    timeout(BOUND, pipeline.flush_async(Duration::from_secs(10)))
        .await
        .expect("flush_async resolved in time")
        .expect("flush_async");
    assert_eq!(
        sink.spans(),
        500,
        "every span arrived before flush_async returned"
    );
    assert_eq!(pipeline.stats().exported, 500);

    // The processor's async flush, then its async shutdown.
    support::end_spans(&provider, 100);
    timeout(BOUND, processor.force_flush_async(Duration::from_secs(10)))
        .await
        .expect("force_flush_async resolved in time")
        .expect("force_flush_async");
    assert_eq!(sink.spans(), 600);
    timeout(BOUND, processor.shutdown_async(Duration::from_secs(10)))
        .await
        .expect("shutdown_async resolved in time")
        .expect("shutdown_async");
    let stats = pipeline.stats();
    assert_eq!(
        (stats.accepted, stats.exported, stats.unaccounted()),
        (600, 600, 0),
        "{stats:#?}"
    );
    // Shut down already: the same answers as the blocking calls.
    assert_eq!(
        timeout(BOUND, pipeline.flush_async(Duration::from_secs(1)))
            .await
            .expect("bounded"),
        Err(FlushError::Closed)
    );
    assert_eq!(
        timeout(BOUND, pipeline.shutdown_async(Duration::from_secs(1)))
            .await
            .expect("bounded"),
        Err(ShutdownError::AlreadyShutDown)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_async_with_the_backend_down_names_the_undelivered_spans_by_its_deadline() {
    let sink = common::Sink::start_with(common::Behaviour::Unavailable);
    let processor = SpanProcessor::builder()
        .pipeline(|p| p.exporter("down", grpc(&sink)).max_batch_spans(50))
        .build()
        .expect("processor");
    let pipeline = processor.pipeline().clone();
    for span in spanflow::otlp::testing::span_batch(200, 3) {
        processor.on_end(span);
    }
    let (ticks, ticking) = ticker();

    let deadline = Duration::from_millis(800);
    let started = Instant::now();
    let err = timeout(BOUND, pipeline.shutdown_async(deadline))
        .await
        .expect("shutdown_async resolved in time")
        .expect_err("the backend is down: not everything can be delivered");
    let took = started.elapsed();
    ticking.abort();

    // The deadline, plus the fan-out's short report grace: never the 5 minutes of retries.
    assert!(took < deadline + Duration::from_secs(2), "took {took:?}");
    let ShutdownError::Timeout {
        timeout: given,
        undelivered,
        stats,
    } = &err
    else {
        panic!("expected a timeout, got {err:?}")
    };
    assert_eq!(*given, deadline);
    assert_eq!(
        undelivered.failed + undelivered.dropped + undelivered.unconfirmed,
        200,
        "{err}"
    );
    assert_eq!((stats.exported, stats.unaccounted()), (0, 0), "{stats:#?}");
    let message = err.to_string();
    assert!(message.contains("not delivered"), "{message}");
    assert!(
        message.contains(&format!("{} dropped", undelivered.dropped)),
        "{message}"
    );
    // The runtime's only thread kept running other tasks the whole time.
    // Relaxed: written on this very thread (the ticker is a task of this runtime).
    let ticks = ticks.load(Ordering::Relaxed);
    assert!(
        ticks >= 20,
        "the executor was blocked: {ticks} ticks in {took:?}"
    );
}

/// An exporter whose answers come from a task on the application's runtime, as a user's
/// exporter built on their own runtime's services would.
struct OnCallersRuntime {
    requests: mpsc::UnboundedSender<(usize, oneshot::Sender<()>)>,
}

impl Exporter for OnCallersRuntime {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let (reply, replied) = oneshot::channel();
        self.requests
            .send((batch.spans, reply))
            .map_err(|_| ExportError::Transport("the application's task is gone".into()))?;
        replied
            .await
            .map_err(|_| ExportError::Transport("the application's task dropped it".into()))?;
        Ok(ExportOutcome::all_accepted(batch.spans))
    }

    fn name(&self) -> &str {
        "on-callers-runtime"
    }
}

#[tokio::test(flavor = "current_thread")]
async fn flush_async_completes_when_the_exporter_needs_the_callers_current_thread_runtime() {
    let (requests, mut incoming) = mpsc::unbounded_channel::<(usize, oneshot::Sender<()>)>();
    let answered = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&answered);
    let answering = tokio::spawn(async move {
        while let Some((spans, reply)) = incoming.recv().await {
            // Relaxed: read on this same runtime thread, after the flush that waited for it.
            counted.fetch_add(spans as u64, Ordering::Relaxed);
            let _ = reply.send(());
        }
    });
    let pipeline = Pipeline::builder()
        .exporter("app", OnCallersRuntime { requests })
        .build()
        .expect("pipeline");
    let processor = SpanProcessor::new(pipeline.clone());
    for span in spanflow::otlp::testing::span_batch(300, 5) {
        processor.on_end(span);
    }

    // The blocking flush holds the runtime's only thread, so the exporter's answers cannot
    // come: it can only run into its own timeout.
    let blocked = pipeline.flush(Duration::from_millis(300));
    assert!(
        matches!(blocked, Err(FlushError::Timeout { .. })),
        "{blocked:?}"
    );
    // The async one leaves the thread to the answering task.
    timeout(BOUND, pipeline.flush_async(Duration::from_secs(10)))
        .await
        .expect("flush_async resolved in time")
        .expect("flush_async");
    assert_eq!(answered.load(Ordering::Relaxed), 300);
    let stats = timeout(BOUND, pipeline.shutdown_async(Duration::from_secs(10)))
        .await
        .expect("shutdown_async resolved in time")
        .expect("shutdown_async");
    assert_eq!(
        (stats.exported, stats.unaccounted()),
        (300, 0),
        "{stats:#?}"
    );
    answering.abort();
}

/// An exporter that calls `flush_async` on its own pipeline, from the pipeline's runtime.
struct FlushesItself {
    pipeline: Arc<std::sync::OnceLock<Pipeline>>,
    seen: Arc<std::sync::OnceLock<Result<(), FlushError>>>,
}

impl Exporter for FlushesItself {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        if let Some(pipeline) = self.pipeline.get() {
            let flushed = pipeline.flush_async(Duration::from_secs(5)).await;
            let _ = self.seen.set(flushed);
        }
        Ok(ExportOutcome::all_accepted(batch.spans))
    }

    fn name(&self) -> &str {
        "flushes-itself"
    }
}

#[tokio::test(flavor = "current_thread")]
async fn flush_async_on_a_pipeline_thread_is_refused_as_flush_is() {
    let slot = Arc::new(std::sync::OnceLock::new());
    let seen = Arc::new(std::sync::OnceLock::new());
    let pipeline = Pipeline::builder()
        .exporter(
            "flushes-itself",
            FlushesItself {
                pipeline: Arc::clone(&slot),
                seen: Arc::clone(&seen),
            },
        )
        .build()
        .expect("pipeline");
    // A handle inside its own exporter: released when the exporter is, at shutdown.
    assert!(slot.set(pipeline.clone()).is_ok(), "empty slot");
    SpanProcessor::new(pipeline.clone()).on_end(
        spanflow::otlp::testing::span_batch(1, 9)
            .pop()
            .expect("one span"),
    );
    timeout(BOUND, pipeline.flush_async(Duration::from_secs(10)))
        .await
        .expect("flush_async resolved in time")
        .expect("flush_async");
    assert_eq!(seen.get(), Some(&Err(FlushError::OnPipelineThread)));
    timeout(BOUND, pipeline.shutdown_async(Duration::from_secs(10)))
        .await
        .expect("shutdown_async resolved in time")
        .expect("shutdown_async");
}
