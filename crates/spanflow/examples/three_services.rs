//! Three services collected concurrently: each service (here a thread with its own tracer
//! provider, resource and spanflow pipeline) ends spans at the same time, and one receiver
//! collects them all, counted per `service.name`.
//!
//! `cargo run -p spanflow --example three_services`

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

const SERVICES: [(&str, u64); 3] = [
    ("checkout", 12_000),
    ("payments", 8_000),
    ("inventory", 5_000),
];

/// One service: its own provider and pipeline, ending `spans` spans, then shutting down.
fn run_service(
    name: &'static str,
    spans: u64,
    endpoint: String,
) -> Result<spanflow::PipelineStats, String> {
    let exporter = OtlpGrpcExporter::builder()
        .endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    let processor = SpanProcessor::builder()
        .pipeline(|p| p.exporter("collector", exporter))
        .build()
        .map_err(|e| e.to_string())?;
    let pipeline = processor.pipeline().clone();
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(name).build())
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer(name);
    for i in 0..spans {
        let mut span = tracer.start("request");
        span.set_attribute(KeyValue::new("request.seq", i as i64));
        span.end();
    }
    provider
        .shutdown_with_timeout(Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    Ok(pipeline.stats())
}

fn main() -> ExitCode {
    let sink = common::Sink::start();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = SERVICES
            .iter()
            .map(|&(name, spans)| {
                let endpoint = sink.endpoint();
                (
                    name,
                    scope.spawn(move || run_service(name, spans, endpoint)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, handle)| (name, handle.join()))
            .collect()
    });

    let by_service = sink.spans_by_service();
    let mut ok = true;
    for ((name, result), &(_, expected)) in results.into_iter().zip(SERVICES.iter()) {
        let received = by_service.get(name).copied().unwrap_or(0);
        match result {
            Ok(Ok(stats)) => {
                println!(
                    "{name:>10}: ended {expected}, exported {}, receiver counted {received}",
                    stats.exported
                );
                ok &=
                    stats.exported == expected && received == expected && stats.unaccounted() == 0;
            }
            Ok(Err(err)) => {
                eprintln!("{name}: {err}");
                ok = false;
            }
            Err(_) => {
                eprintln!("{name}: service thread panicked");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
