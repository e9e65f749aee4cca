//! A service instrumented with `tracing` (`#[instrument]`), exported through spanflow via
//! `tracing-opentelemetry`: the usual Rust setup, with spanflow's processor in place of the
//! `BatchSpanProcessor`.
//!
//! `cargo run -p spanflow --example tracing_service`

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Duration;

use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use spanflow::SpanProcessor;
use spanflow::export::OtlpGrpcExporter;
use tracing::instrument;
use tracing_subscriber::layer::SubscriberExt;

const REQUESTS: u64 = 2_000;

#[instrument]
fn handle_request(id: u64) -> u64 {
    let user = load_user(id % 100);
    render(user)
}

#[instrument]
fn load_user(user: u64) -> u64 {
    user * 7
}

#[instrument(skip_all, fields(bytes))]
fn render(user: u64) -> u64 {
    let bytes = 512 + user;
    tracing::Span::current().record("bytes", bytes);
    bytes
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let sink = common::Sink::start();
    let exporter = OtlpGrpcExporter::builder()
        .endpoint(sink.endpoint())
        .build()?;
    let processor = SpanProcessor::builder()
        .pipeline(|p| p.exporter("collector", exporter))
        .build()?;
    let pipeline = processor.pipeline().clone();
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("tracing-service")
                .build(),
        )
        .with_span_processor(processor)
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tracing-service")));

    let mut bytes = 0;
    tracing::subscriber::with_default(subscriber, || {
        for id in 0..REQUESTS {
            bytes += handle_request(id);
        }
    });

    provider.shutdown_with_timeout(Duration::from_secs(20))?;
    let expected = REQUESTS * 3; // handle_request, load_user, render
    let stats = pipeline.stats();
    println!(
        "{REQUESTS} requests ({bytes} bytes rendered): exported {} spans, receiver counted {}",
        stats.exported,
        sink.spans()
    );
    Ok(if stats.exported == expected && sink.spans() == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
