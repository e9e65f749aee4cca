//! Multi-backend with fallback: every batch goes to two primaries at once (fan-out), and the
//! batches one of them cannot take go to its fallback — one slow or broken backend never
//! stalls or loses the others' data.
//!
//! Three receivers on 127.0.0.1: `primary` and `archive` accept, `flaky` rejects everything and
//! is backed by `spill`. Exits non-zero if any backend misses a span it should have.
//!
//! `cargo run -p spanflow --example multi_backend`

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Duration;

use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use spanflow::export::OtlpGrpcExporter;
use spanflow::{Pipeline, SpanProcessor};

const SPANS: u64 = 10_000;

fn grpc(sink: &common::Sink) -> Result<OtlpGrpcExporter, spanflow::export::ExportBuildError> {
    OtlpGrpcExporter::builder()
        .endpoint(sink.endpoint())
        .build()
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let primary = common::Sink::start();
    let archive = common::Sink::start();
    let flaky = common::Sink::start_with(common::Behaviour::Reject);
    let spill = common::Sink::start();

    // Order matters: `exporter` adds a primary, `fallback_exporter` backs the primary before it.
    let pipeline = Pipeline::builder()
        .exporter("primary", grpc(&primary)?)
        .exporter("archive", grpc(&archive)?)
        .exporter("flaky", grpc(&flaky)?)
        .fallback_exporter("spill", grpc(&spill)?)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(SpanProcessor::new(pipeline.clone()))
        .build();
    let tracer = provider.tracer("multi-backend");
    for _ in 0..SPANS {
        tracer.in_span("checkout", |_cx| {});
    }
    provider.shutdown_with_timeout(Duration::from_secs(20))?;

    let stats = pipeline.stats();
    for backend in &stats.backends {
        println!(
            "{:>8}: received {:>6}, exported {:>6}, failed {:>6}, dropped {:>6}{}",
            backend.name,
            backend.received_spans,
            backend.accepted_spans,
            backend.failed_spans + backend.unconfirmed_spans,
            backend.dropped_spans,
            match &backend.role {
                spanflow::export::Role::Fallback { of } => format!(" (fallback of {of})"),
                spanflow::export::Role::Primary => String::new(),
            }
        );
    }
    let counted = [
        ("primary", &primary, SPANS),
        ("archive", &archive, SPANS),
        ("flaky", &flaky, 0),
        ("spill", &spill, SPANS),
    ];
    let mut ok = stats.exported == SPANS && stats.unaccounted() == 0;
    for (name, sink, expected) in counted {
        if sink.spans() != expected {
            eprintln!(
                "{name} received {} spans, expected {expected}",
                sink.spans()
            );
            ok = false;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
