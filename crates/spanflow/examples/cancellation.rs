//! Cancellation with a token: worker tasks end spans until a `CancellationToken` fires, then the
//! service shuts its tracer provider down from inside its async runtime — and every span ended
//! before the cancellation is delivered.
//!
//! `cargo run -p spanflow --example cancellation`

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Duration;

use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use spanflow::SpanProcessor;
use spanflow::export::OtlpGrpcExporter;
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
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
                .with_service_name("cancellation")
                .build(),
        )
        .with_span_processor(processor)
        .build();

    let token = CancellationToken::new();
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let token = token.child_token();
            let tracer = provider.tracer("worker");
            tokio::spawn(async move {
                let mut ended = 0u64;
                loop {
                    tokio::select! {
                        // Checked first, so a cancelled worker stops at once.
                        biased;
                        () = token.cancelled() => break,
                        () = tokio::task::yield_now() => {
                            for _ in 0..100 {
                                tracer.in_span(format!("job-{worker}"), |_cx| {});
                            }
                            ended += 100;
                        }
                    }
                }
                ended
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel();
    let mut ended = 0;
    for worker in workers {
        ended += worker.await?;
    }

    // Shut down from a runtime thread: the pipeline waits on its own threads, never on this
    // runtime, so this neither deadlocks nor panics with "no reactor running".
    let shutdown = tokio::task::spawn_blocking(move || {
        provider.shutdown_with_timeout(Duration::from_secs(20))
    });
    shutdown.await??;
    let stats = pipeline.stats();
    println!(
        "cancelled after {ended} spans; exported {}, receiver counted {}",
        stats.exported,
        sink.spans()
    );
    let ok =
        ended > 0 && stats.exported == ended && sink.spans() == ended && stats.unaccounted() == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
