//! Quickstart: a tracer provider whose spans go through spanflow to an OTLP/gRPC receiver.
//!
//! The receiver is a small in-process sink on 127.0.0.1 (see `common/mod.rs`); point the
//! exporter at your collector instead (or build the pipeline with `.from_env()` and set
//! `OTEL_EXPORTER_OTLP_ENDPOINT`). Exits non-zero if a single span is lost.
//!
//! `cargo run -p spanflow --example quickstart`

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span, Tracer, TracerProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use spanflow::SpanProcessor;
use spanflow::export::OtlpGrpcExporter;

const SPANS: u64 = 20_000;

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let sink = common::Sink::start();

    // 1. The processor and its pipeline: one OTLP/gRPC backend, defaults for everything else.
    let exporter = OtlpGrpcExporter::builder()
        .endpoint(sink.endpoint())
        .build()?;
    let processor = SpanProcessor::builder()
        .pipeline(|p| p.exporter("collector", exporter))
        .build()?;
    let pipeline = processor.pipeline().clone();

    // 2. A tracer provider that uses it, like it would use a BatchSpanProcessor.
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("quickstart").build())
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer("quickstart");

    // 3. Spans, from this thread (no async runtime needed anywhere).
    for i in 0..SPANS {
        let mut span = tracer.start("handle-request");
        span.set_attribute(KeyValue::new("request.id", i as i64));
        span.end();
    }

    // 4. Shutdown flushes everything accepted and stops the pipeline's own runtime.
    provider.shutdown_with_timeout(Duration::from_secs(10))?;
    let stats = pipeline.stats();
    sink.wait_for(SPANS, Duration::from_secs(5));
    println!(
        "ended {SPANS} spans: accepted {}, exported {}, dropped {}, failed {}; the receiver counted {}",
        stats.accepted,
        stats.exported,
        stats.dropped.total(),
        stats.failed,
        sink.spans()
    );
    if sink.spans() != SPANS || stats.exported != SPANS || stats.unaccounted() != 0 {
        eprintln!("span loss: {stats:#?}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
