//! The books and the budget across every stage: an outage turns into backpressure, never into
//! loss; the memory budget bounds what the export queues hold; every accepted span settles
//! exactly once; receipts say when.
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use spanflow::export::{ExportBatch, ExportError, ExportOutcome, Exporter};
use spanflow::otlp::TraceRequest;
use spanflow::{Pipeline, RequestFate, SubmitError};

const UP: u8 = 0;
const REFUSING: u8 = 1;
const STALLED: u8 = 2;
const TIMING_OUT: u8 = 3;

/// A backend whose state the test switches: up, refusing connections, or stalled.
#[derive(Clone, Default)]
struct Backend {
    state: Arc<AtomicU8>,
    spans: Arc<AtomicU64>,
}

impl Backend {
    fn set(&self, state: u8) {
        self.state.store(state, SeqCst);
    }
    fn spans(&self) -> u64 {
        self.spans.load(SeqCst)
    }
}

impl Exporter for Backend {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        loop {
            match self.state.load(SeqCst) {
                UP => {
                    self.spans.fetch_add(batch.spans as u64, SeqCst);
                    return Ok(ExportOutcome::all_accepted(batch.spans));
                }
                REFUSING => return Err(ExportError::Transport("connection refused".into())),
                TIMING_OUT => {
                    // Received, but the answer never comes in time.
                    self.spans.fetch_add(batch.spans as u64, SeqCst);
                    return Err(ExportError::Timeout(Duration::from_millis(1)));
                }
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }
    fn name(&self) -> &str {
        "switchable"
    }
}

/// A request of `spans` spans of about `bytes` each.
fn request(first_id: u64, spans: usize, bytes: usize) -> TraceRequest {
    use spanflow::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
    use spanflow::otlp::proto::common::v1::{AnyValue, KeyValue, any_value};
    use spanflow::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let spans = (0..spans as u64)
        .map(|i| Span {
            trace_id: [7u8; 16].to_vec(),
            span_id: (first_id + i + 1).to_be_bytes().to_vec(),
            name: "work".into(),
            attributes: vec![KeyValue {
                key: "payload".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("x".repeat(bytes))),
                }),
                ..KeyValue::default()
            }],
            ..Span::default()
        })
        .collect();
    TraceRequest::from_proto(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    })
}

fn pipeline(backend: &Backend, budget: usize) -> Pipeline {
    Pipeline::builder()
        .exporter("backend", backend.clone())
        .memory_budget(budget)
        .max_batch_age(Duration::from_millis(5))
        .export_timeout(Duration::from_secs(2))
        .build()
        .expect("pipeline")
}

/// Submits until the pipeline says it is full (or `limit` requests); returns spans accepted.
fn fill(pipeline: &Pipeline, next_id: &mut u64, limit: usize) -> (u64, bool) {
    let mut accepted = 0;
    for _ in 0..limit {
        match pipeline.try_submit(request(*next_id, 10, 1000)) {
            Ok(()) => {
                accepted += 10;
                *next_id += 10;
            }
            Err(SubmitError::Full { .. }) => return (accepted, true),
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    (accepted, false)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_dead_backend_fills_the_budget_and_then_pushes_back_without_losing_anything() {
    let backend = Backend::default();
    backend.set(REFUSING);
    let budget = 1 << 20;
    let pipeline = pipeline(&backend, budget);
    let mut next_id = 0;
    let (accepted, full) = fill(&pipeline, &mut next_id, 10_000);
    assert!(full, "a dead backend must turn into backpressure");
    let stats = pipeline.stats();
    assert_eq!(stats.accepted, accepted);
    assert!(
        stats.memory_used_bytes <= budget as u64,
        "the export queues hold {} bytes, over the {budget} budget",
        stats.memory_used_bytes
    );
    assert!(
        stats.memory_used_bytes > budget as u64 / 2,
        "the budget covers what waits for the backend: {stats}"
    );
    assert_eq!(stats.dropped.total() + stats.failed + stats.unconfirmed, 0);
    // The outage ends: everything accepted arrives, room comes back.
    backend.set(UP);
    pipeline.flush(Duration::from_secs(30)).expect("flush");
    let stats = pipeline.stats();
    assert_eq!(
        (stats.exported, stats.queued_spans),
        (accepted, 0),
        "{stats}"
    );
    assert_eq!(backend.spans(), accepted);
    assert_eq!(stats.memory_used_bytes, 0, "{stats}");
    let (more, _) = fill(&pipeline, &mut next_id, 5);
    assert_eq!(more, 50);
    let stats = pipeline
        .shutdown(Duration::from_secs(10))
        .expect("shutdown");
    assert_eq!(stats.exported, accepted + 50);
    assert_eq!(stats.unaccounted(), 0);
}

#[test]
fn a_stalled_backend_holds_the_budget_not_more() {
    let backend = Backend::default();
    backend.set(STALLED);
    let budget = 512 << 10;
    let pipeline = pipeline(&backend, budget);
    let mut next_id = 0;
    let mut accepted = 0;
    // Keep pushing for a while: the fan-out's queue may not grow past the budget.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        accepted += fill(&pipeline, &mut next_id, 100).0;
        let stats = pipeline.stats();
        assert!(stats.memory_used_bytes <= budget as u64, "{stats}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(pipeline.stats().memory_peak_bytes <= budget as u64);
    backend.set(UP);
    let stats = pipeline
        .shutdown(Duration::from_secs(30))
        .expect("shutdown");
    assert_eq!(
        (stats.accepted, stats.exported),
        (accepted, accepted),
        "{stats}"
    );
}

#[test]
fn shutdown_settles_a_stalled_backend_as_unconfirmed_and_never_sent_as_dropped() {
    let backend = Backend::default();
    backend.set(STALLED);
    let pipeline = Pipeline::builder()
        .exporter("backend", backend.clone())
        .max_batch_age(Duration::from_millis(1))
        .export_concurrency(2)
        .build()
        .expect("pipeline");
    let mut next_id = 0;
    for _ in 0..20 {
        fill(&pipeline, &mut next_id, 1);
        std::thread::sleep(Duration::from_millis(3));
    }
    wait_for("exports in flight", Duration::from_secs(10), || {
        pipeline.stats().backends[0].in_flight == 2
    });
    let err = pipeline
        .shutdown(Duration::from_millis(200))
        .expect_err("the deadline passes");
    let stats = err.stats().expect("final books").clone();
    assert_eq!(stats.accepted, 200);
    assert_eq!(stats.queued_spans, 0);
    assert_eq!(stats.unaccounted(), 0, "{stats}");
    // What was in flight may have arrived; what never left the queue certainly did not.
    assert!(
        stats.unconfirmed > 0 && stats.dropped.shutdown_deadline > 0,
        "{stats}"
    );
    assert_eq!(stats.unconfirmed + stats.dropped.shutdown_deadline, 200);
}

#[test]
fn an_attempt_that_timed_out_is_unconfirmed_never_failed() {
    let backend = Backend::default();
    backend.set(TIMING_OUT);
    let pipeline = Pipeline::builder()
        .backend(
            "backend",
            spanflow::BackendRole::Primary,
            Arc::new(backend.clone()),
            Some(spanflow::export::BackendConfig {
                retry: spanflow::export::RetryConfig {
                    initial_backoff: Duration::from_millis(1),
                    max_backoff: Duration::from_millis(2),
                    max_elapsed: Duration::from_millis(20),
                    ..Default::default()
                },
                ..Default::default()
            }),
        )
        .max_batch_age(Duration::from_millis(1))
        .build()
        .expect("pipeline");
    pipeline.try_submit(request(0, 10, 10)).expect("room");
    let err = pipeline
        .flush(Duration::from_secs(10))
        .expect_err("not delivered");
    assert!(
        matches!(err, spanflow::FlushError::Undelivered(u) if u.unconfirmed == 10),
        "{err}"
    );
    let stats = pipeline.stats();
    assert_eq!((stats.unconfirmed, stats.failed), (10, 0), "{stats}");
    assert!(backend.spans() >= 10, "the backend did receive them");
    let _ = pipeline.shutdown(Duration::from_secs(5));
}

#[test]
fn receipts_resolve_when_their_spans_settle() {
    let backend = Backend::default();
    backend.set(STALLED);
    let pipeline = pipeline(&backend, 1 << 20);
    let receipts: Vec<_> = (0..5)
        .map(|i| {
            pipeline
                .submit_tracked(request(i * 10, 10, 10))
                .expect("room")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    backend.set(UP);
    for receipt in receipts {
        let fate = receipt
            .wait_timeout(Duration::from_secs(10))
            .expect("settles");
        let RequestFate::Settled(settled) = fate else {
            panic!("{fate:?}")
        };
        assert_eq!(settled.exported, settled.spans);
        assert!(settled.spans >= 10);
    }
    let stats = pipeline.shutdown(Duration::from_secs(5)).expect("shutdown");
    assert_eq!(stats.exported, 50);
}

#[tokio::test(flavor = "current_thread")]
async fn a_receipt_is_awaitable_and_says_when_the_pipeline_never_exported() {
    let backend = Backend::default();
    let pipeline = pipeline(&backend, 1 << 20);
    let receipt = pipeline.submit_tracked(request(0, 3, 10)).expect("room");
    let fate = tokio::time::timeout(Duration::from_secs(10), receipt)
        .await
        .expect("settles in time");
    assert!(
        matches!(fate, RequestFate::Settled(s) if s.exported == 3),
        "{fate:?}"
    );
    let closed = pipeline.clone();
    tokio::task::spawn_blocking(move || closed.shutdown(Duration::from_secs(5)))
        .await
        .expect("join")
        .expect("shutdown");
    assert!(matches!(
        pipeline.submit_tracked(request(3, 1, 1)),
        Err(SubmitError::Closed { .. })
    ));
}
