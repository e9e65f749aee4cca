//! Ending spans, `force_flush` and `shutdown` work — and never deadlock — with no runtime, inside
//! a tokio `current_thread` runtime and inside a multi-thread runtime, with a real OTLP/gRPC
//! exporter (which needs a reactor: the pipeline brings its own).
#![cfg(not(loom))]

#[path = "../examples/common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use opentelemetry_sdk::trace::SpanProcessor as _;
use spanflow::SpanProcessor;
use spanflow::export::OtlpGrpcExporter;
use support::{end_spans, provider, watchdog};

const LIMIT: Duration = Duration::from_secs(30);

/// The whole life of a processor: build, end spans, flush, end more, shut down; every span
/// arrives and the books balance.
fn lifecycle(sink: &common::Sink) {
    let exporter = OtlpGrpcExporter::builder()
        .endpoint(sink.endpoint())
        .build()
        .expect("exporter");
    let processor = SpanProcessor::builder()
        .pipeline(|p| p.exporter("sink", exporter))
        .force_flush_timeout(Duration::from_secs(10))
        .build()
        .expect("processor");
    let pipeline = processor.pipeline().clone();
    let provider = provider(processor, "matrix");

    end_spans(&provider, 1_000);
    provider.force_flush().expect("force_flush");
    assert_eq!(pipeline.stats().exported, 1_000);
    assert_eq!(sink.spans(), 1_000);

    end_spans(&provider, 500);
    provider
        .shutdown_with_timeout(Duration::from_secs(10))
        .expect("shutdown");
    let stats = pipeline.stats();
    assert_eq!(
        (stats.accepted, stats.exported, stats.unaccounted()),
        (1_500, 1_500, 0),
        "{stats:#?}"
    );
    assert_eq!(sink.spans(), 1_500);
}

#[test]
fn no_runtime() {
    watchdog(LIMIT, "no_runtime", || lifecycle(&common::Sink::start()));
}

#[test]
fn inside_current_thread_runtime() {
    watchdog(LIMIT, "current_thread", || {
        let sink = common::Sink::start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Built, used, flushed, shut down and dropped on the runtime's only thread.
        runtime.block_on(async { lifecycle(&sink) });
    });
}

#[test]
fn inside_multi_thread_runtime_with_one_worker() {
    watchdog(LIMIT, "multi_thread", || {
        let sink = std::sync::Arc::new(common::Sink::start());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let task_sink = std::sync::Arc::clone(&sink);
        runtime.block_on(async move {
            tokio::spawn(async move { lifecycle(&task_sink) })
                .await
                .expect("task");
        });
    });
}

#[tokio::test(flavor = "current_thread")]
async fn from_a_tokio_test_on_the_current_thread() {
    // The calling thread is the runtime: blocking here would deadlock a processor that
    // `block_on`s its exports on the caller's runtime.
    lifecycle(&common::Sink::start());
}

#[test]
fn processor_built_outside_and_used_inside_a_runtime() {
    watchdog(LIMIT, "mixed", || {
        let sink = common::Sink::start();
        let exporter = OtlpGrpcExporter::builder()
            .endpoint(sink.endpoint())
            .build()
            .expect("exporter");
        let processor = SpanProcessor::builder()
            .pipeline(|p| p.exporter("sink", exporter))
            .build()
            .expect("processor");
        let pipeline = processor.pipeline().clone();
        let provider = provider(processor, "mixed");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            end_spans(&provider, 300);
            provider.force_flush().expect("flush inside");
        });
        drop(runtime);
        provider.shutdown().expect("shutdown outside");
        assert_eq!(pipeline.stats().exported, 300);
    });
}

#[test]
fn dropping_the_last_handle_inside_a_runtime_drains_in_the_background() {
    watchdog(LIMIT, "drop_inside", || {
        let sink = common::Sink::start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let exporter = OtlpGrpcExporter::builder()
                .endpoint(sink.endpoint())
                .build()
                .expect("exporter");
            let processor = SpanProcessor::builder()
                .pipeline(|p| p.exporter("sink", exporter))
                .build()
                .expect("processor");
            for span in spanflow::otlp::testing::span_batch(200, 7) {
                processor.on_end(span);
            }
            drop(processor); // no shutdown: must neither panic nor block this runtime thread
        });
        assert!(
            sink.wait_for(200, Duration::from_secs(10)),
            "background drain delivered {}",
            sink.spans()
        );
    });
}
