//! End to end to a loopback OTLP/gRPC receiver: nothing lost, nothing duplicated, every span
//! accounted for; timeouts are the caller's, not hard-coded.
#![cfg(not(loom))]

#[path = "../examples/common/mod.rs"]
mod common;
mod support;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::SpanProcessor as _;
use spanflow::export::{ExportBatch, ExportError, ExportOutcome, Exporter, OtlpGrpcExporter};
use spanflow::otlp::{Encoder, TraceRequest};
use spanflow::{FlushError, NullExporter, OverflowPolicy, Pipeline, SpanProcessor, SubmitError};
use support::{end_spans, provider, watchdog};

const LIMIT: Duration = Duration::from_secs(60);

fn scale() -> u64 {
    std::env::var("SPANFLOW_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn grpc(sink: &common::Sink) -> OtlpGrpcExporter {
    OtlpGrpcExporter::builder()
        .endpoint(sink.endpoint())
        .build()
        .expect("exporter")
}

#[test]
fn many_threads_lose_nothing_to_a_loopback_sink() {
    watchdog(LIMIT, "zero_loss", || {
        let sink = common::Sink::start();
        let processor = SpanProcessor::builder()
            .pipeline(|p| p.exporter("sink", grpc(&sink)).max_batch_spans(512))
            .build()
            .expect("processor");
        let pipeline = processor.pipeline().clone();
        let provider = provider(processor, "zero-loss");
        let per_thread = 20_000 * scale();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| end_spans(&provider, per_thread));
            }
        });
        provider
            .shutdown_with_timeout(Duration::from_secs(30))
            .expect("shutdown");
        let stats = pipeline.stats();
        let total = 4 * per_thread;
        assert_eq!(stats.accepted, total, "{stats:#?}");
        assert_eq!(stats.exported, total, "{stats:#?}");
        assert_eq!(
            stats.dropped.total() + stats.failed + stats.queued_spans,
            0,
            "{stats:#?}"
        );
        assert_eq!(stats.unaccounted(), 0);
        // Exactly once: the sink saw every span and no span twice.
        assert_eq!(sink.spans(), total);
    });
}

#[test]
fn a_burst_larger_than_the_budget_blocks_briefly_instead_of_dropping() {
    watchdog(LIMIT, "burst", || {
        let exporter = NullExporter::default();
        let pipeline = Pipeline::builder()
            .exporter("null", exporter.clone())
            // ~200 spans of room: the burst below is 100 times that.
            .memory_budget(200 * 700)
            .overflow(OverflowPolicy::Block { max_wait_ms: 5_000 })
            .build()
            .expect("pipeline");
        let provider = provider(SpanProcessor::new(pipeline.clone()), "burst");
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| end_spans(&provider, 10_000));
            }
        });
        let stats = pipeline
            .shutdown(Duration::from_secs(30))
            .expect("shutdown");
        assert_eq!(
            (stats.accepted, stats.exported, stats.dropped.total()),
            (20_000, 20_000, 0),
            "{stats:#?}"
        );
        assert_eq!(exporter.spans(), 20_000);
    });
}

#[test]
fn drop_policy_counts_every_span_it_drops() {
    watchdog(LIMIT, "drop_policy", || {
        let sink = common::Sink::start_with(common::Behaviour::Hang);
        let pipeline = Pipeline::builder()
            .exporter("hanging", grpc(&sink))
            .memory_budget(50 * 700)
            .overflow(OverflowPolicy::Drop)
            .export_concurrency(1)
            .build()
            .expect("pipeline");
        let provider = provider(SpanProcessor::new(pipeline.clone()), "drops");
        end_spans(&provider, 5_000);
        let stats = pipeline.shutdown(Duration::from_millis(300)).unwrap_err();
        let spanflow::ShutdownError::Timeout { stats, .. } = stats else {
            panic!("expected a timeout")
        };
        assert!(stats.refused.budget_full > 0, "{stats:#?}");
        assert_eq!(stats.sdk_spans_lost, stats.refused.total(), "{stats:#?}");
        assert_eq!(stats.received, 5_000, "{stats:#?}");
        assert_eq!(stats.exported, 0);
        assert_eq!(stats.unaccounted(), 0, "{stats:#?}");
    });
}

#[test]
fn force_flush_honours_the_callers_timeout() {
    watchdog(LIMIT, "flush_timeout", || {
        let sink = common::Sink::start_with(common::Behaviour::Hang);
        let processor = SpanProcessor::builder()
            .pipeline(|p| {
                p.exporter("hanging", grpc(&sink))
                    .export_timeout(Duration::from_secs(60))
            })
            .force_flush_timeout(Duration::from_millis(400))
            .build()
            .expect("processor");
        for span in spanflow::otlp::testing::span_batch(10, 1) {
            processor.on_end(span);
        }
        let started = Instant::now();
        let result = processor.force_flush_with_timeout(Duration::from_millis(250));
        let took = started.elapsed();
        assert!(
            matches!(result, Err(OTelSdkError::Timeout(t)) if t == Duration::from_millis(250)),
            "{result:?}"
        );
        assert!(
            took >= Duration::from_millis(240) && took < Duration::from_secs(3),
            "took {took:?}"
        );

        let started = Instant::now();
        let result = processor.force_flush();
        assert!(
            matches!(result, Err(OTelSdkError::Timeout(t)) if t == Duration::from_millis(400)),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));

        let started = Instant::now();
        let result = processor.shutdown_with_timeout(Duration::from_millis(300));
        assert!(
            matches!(result, Err(OTelSdkError::Timeout(t)) if t == Duration::from_millis(300)),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "shutdown took {:?}",
            started.elapsed()
        );
        let stats = processor.pipeline().stats();
        assert_eq!(stats.accepted, 10);
        assert_eq!(stats.exported, 0);
        assert_eq!(stats.unaccounted(), 0, "{stats:#?}");
    });
}

#[test]
fn submitted_requests_are_exported_and_refused_when_full() {
    watchdog(LIMIT, "submit", || {
        let sink = common::Sink::start();
        let pipeline = Pipeline::builder()
            .exporter("sink", grpc(&sink))
            .build()
            .expect("pipeline");
        let mut encoder = Encoder::new();
        let resource = spanflow::otlp::testing::resource();
        let mut total = 0;
        for seed in 0..50 {
            let request = encoder.encode(&spanflow::otlp::testing::span_batch(40, seed), &resource);
            total += request.span_count() as u64;
            pipeline.try_submit(request).expect("room");
        }
        pipeline.flush(Duration::from_secs(10)).expect("flush");
        assert_eq!(sink.spans(), total);
        let stats = pipeline
            .shutdown(Duration::from_secs(10))
            .expect("shutdown");
        assert_eq!(
            (stats.accepted, stats.exported, stats.unaccounted()),
            (total, total, 0)
        );

        let closed = pipeline.try_submit(TraceRequest::empty()).unwrap_err();
        assert!(matches!(closed, SubmitError::Closed { .. }));
    });
}

#[test]
fn try_submit_refuses_with_full_when_the_budget_is_used_up() {
    watchdog(LIMIT, "submit_full", || {
        let sink = common::Sink::start_with(common::Behaviour::Hang);
        let pipeline = Pipeline::builder()
            .exporter("hanging", grpc(&sink))
            .memory_budget(64 << 10)
            .export_concurrency(1)
            .build()
            .expect("pipeline");
        let mut encoder = Encoder::new();
        let resource = spanflow::otlp::testing::resource();
        let mut full = None;
        for seed in 0..10_000 {
            let request =
                encoder.encode(&spanflow::otlp::testing::span_batch(100, seed), &resource);
            if let Err(err) = pipeline.try_submit(request) {
                full = Some(err);
                break;
            }
        }
        let Some(SubmitError::Full {
            request,
            retry_after,
        }) = full
        else {
            panic!("never refused: {full:?}")
        };
        assert_eq!(
            request.span_count(),
            100,
            "the refused request comes back whole"
        );
        assert!(retry_after > Duration::ZERO);
        assert!(pipeline.stats().refused.total() >= 100);
        let _ = pipeline.shutdown(Duration::from_millis(200));
    });
}

#[test]
fn a_failing_primary_falls_back_without_loss() {
    watchdog(LIMIT, "fallback", || {
        let primary = common::Sink::start_with(common::Behaviour::Reject);
        let fallback = common::Sink::start();
        let pipeline = Pipeline::builder()
            .exporter("primary", grpc(&primary))
            .fallback_exporter("fallback", grpc(&fallback))
            .build()
            .expect("pipeline");
        let provider = provider(SpanProcessor::new(pipeline.clone()), "fallback");
        end_spans(&provider, 3_000);
        provider
            .shutdown_with_timeout(Duration::from_secs(20))
            .expect("shutdown");
        let stats = pipeline.stats();
        assert_eq!(
            (stats.exported, stats.failed, stats.unaccounted()),
            (3_000, 0, 0),
            "{stats:#?}"
        );
        assert_eq!(fallback.spans(), 3_000);
        assert_eq!(primary.spans(), 0);
        let primary_stats = &stats.backends[0];
        assert_eq!(
            primary_stats.failed_spans + primary_stats.dropped_spans,
            3_000,
            "{primary_stats:#?}"
        );
    });
}

#[test]
fn processors_drop_spans_and_the_books_still_balance() {
    watchdog(LIMIT, "processors", || {
        let exporter = NullExporter::default();
        let config: spanflow::PipelineConfig = toml::from_str(
            r#"
            [[processors]]
            type = "filter"
            match_type = "exact"
            span_names = ["health"]
            "#,
        )
        .expect("config");
        let pipeline = Pipeline::builder()
            .config(config)
            .exporter("null", exporter.clone())
            .build()
            .expect("pipeline");
        let provider = provider(SpanProcessor::new(pipeline.clone()), "processors");
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "t");
        for i in 0..1_000 {
            let name = if i % 4 == 0 { "health" } else { "work" };
            opentelemetry::trace::Tracer::in_span(&tracer, name, |_| {});
        }
        let stats = pipeline
            .shutdown(Duration::from_secs(10))
            .expect("shutdown");
        assert_eq!(
            (stats.accepted, stats.dropped.processor, stats.exported),
            (1_000, 250, 750),
            "{stats:#?}"
        );
        assert_eq!(stats.unaccounted(), 0);
        assert_eq!(exporter.spans(), 750);
    });
}

#[test]
fn processors_can_run_on_the_scheduler() {
    watchdog(LIMIT, "scheduler", || {
        let exporter = NullExporter::default();
        let config: spanflow::PipelineConfig = toml::from_str(
            r#"
            [processing]
            threads = 2

            [[processors]]
            type = "probabilistic_sampler"
            ratio = 1.0
            "#,
        )
        .expect("config");
        let pipeline = Pipeline::builder()
            .config(config)
            .exporter("null", exporter.clone())
            .build()
            .expect("pipeline");
        let provider = provider(SpanProcessor::new(pipeline.clone()), "scheduler");
        end_spans(&provider, 5_000);
        pipeline.flush(Duration::from_secs(10)).expect("flush");
        assert_eq!(exporter.spans(), 5_000);
        let stats = pipeline
            .shutdown(Duration::from_secs(10))
            .expect("shutdown");
        assert_eq!(
            (stats.exported, stats.unaccounted()),
            (5_000, 0),
            "{stats:#?}"
        );
    });
}

/// An exporter that calls back into its own pipeline, as a misbehaving plugin might.
struct Reentrant {
    pipeline: Arc<OnceLock<Pipeline>>,
    seen: Arc<OnceLock<Result<(), FlushError>>>,
}

impl Exporter for Reentrant {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        if let Some(pipeline) = self.pipeline.get() {
            let _ = self.seen.set(pipeline.flush(Duration::from_secs(5)));
        }
        Ok(ExportOutcome::all_accepted(batch.spans))
    }

    fn name(&self) -> &str {
        "reentrant"
    }
}

#[test]
fn flush_from_a_pipeline_thread_is_refused_not_deadlocked() {
    watchdog(LIMIT, "reentrant", || {
        let slot = Arc::new(OnceLock::new());
        let seen = Arc::new(OnceLock::new());
        let pipeline = Pipeline::builder()
            .exporter(
                "reentrant",
                Reentrant {
                    pipeline: Arc::clone(&slot),
                    seen: Arc::clone(&seen),
                },
            )
            .build()
            .expect("pipeline");
        let _ = slot.set(pipeline.clone());
        let processor = SpanProcessor::new(pipeline.clone());
        for span in spanflow::otlp::testing::span_batch(5, 3) {
            processor.on_end(span);
        }
        pipeline
            .flush(Duration::from_secs(10))
            .expect("flush from outside");
        assert_eq!(seen.get(), Some(&Err(FlushError::OnPipelineThread)));
        pipeline.shutdown(Duration::from_secs(5)).expect("shutdown");
    });
}

#[test]
fn bsp_environment_variables_reach_the_pipeline() {
    let mut config = spanflow::PipelineConfig::default();
    config
        .apply_env(|name| {
            (name == spanflow::OTEL_BSP_MAX_EXPORT_BATCH_SIZE).then(|| "128".to_owned())
        })
        .expect("a valid value");
    let pipeline = Pipeline::builder()
        .config(config)
        .exporter("null", NullExporter::default())
        .build()
        .expect("pipeline");
    assert_eq!(pipeline.config().batch.max_spans, 128);
    pipeline.shutdown(Duration::from_secs(5)).expect("shutdown");
}
