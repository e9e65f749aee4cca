//! Spans dropped from a 1 M-span burst with default settings: spanflow vs `BatchSpanProcessor`.
//!
//! Two producer threads end 500 000 spans each as fast as they can; then the provider is shut
//! down and the spans that reached the exporter are counted. Run twice: with a do-nothing
//! exporter, and over OTLP/gRPC to a loopback receiver. Prints a markdown fragment for
//! `docs/BENCHMARKS.md`.
//!
//! `cargo run --release -p spanflow-benches --bin burst` (`BURST_SPANS=n` to change the size)

use std::time::{Duration, Instant};

use opentelemetry_sdk::trace::SdkTracerProvider;
use spanflow_benches::wire_sink::WireSink;
use spanflow_benches::{bsp, bsp_otlp, end_spans_parallel, spanflow_grpc, spanflow_null};

const THREADS: usize = 2;

struct Row {
    processor: &'static str,
    exporter: &'static str,
    ended: u64,
    delivered: u64,
    end_time: Duration,
    total_time: Duration,
}

fn burst(provider: &SdkTracerProvider, per_thread: u64) -> (Duration, Duration) {
    let start = Instant::now();
    let end_time = end_spans_parallel(provider, THREADS, per_thread);
    let _ = provider.shutdown_with_timeout(Duration::from_secs(120));
    (end_time, start.elapsed())
}

fn main() {
    let total: u64 = std::env::var("BURST_SPANS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let per_thread = total / THREADS as u64;
    let ended = per_thread * THREADS as u64;
    let mut rows = Vec::new();

    let (provider, pipeline, exporter) = spanflow_null();
    let (end_time, total_time) = burst(&provider, per_thread);
    let stats = pipeline.stats();
    assert_eq!(
        stats.unaccounted(),
        0,
        "spanflow books do not balance: {stats:#?}"
    );
    rows.push(Row {
        processor: "spanflow",
        exporter: "do-nothing",
        ended,
        delivered: exporter.spans(),
        end_time,
        total_time,
    });

    let (provider, exporter) = bsp(None);
    let (end_time, total_time) = burst(&provider, per_thread);
    rows.push(Row {
        processor: "BatchSpanProcessor",
        exporter: "do-nothing",
        ended,
        delivered: exporter.spans(),
        end_time,
        total_time,
    });

    let receiver = WireSink::start();
    let (provider, _pipeline) = spanflow_grpc(&receiver.endpoint());
    let (end_time, total_time) = burst(&provider, per_thread);
    rows.push(Row {
        processor: "spanflow",
        exporter: "OTLP/gRPC loopback",
        ended,
        delivered: receiver.spans(),
        end_time,
        total_time,
    });
    drop(receiver);

    let receiver = WireSink::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let provider = bsp_otlp(&receiver.endpoint(), &runtime);
    let (end_time, total_time) = burst(&provider, per_thread);
    receiver.wait_for(ended, Duration::from_secs(2));
    rows.push(Row {
        processor: "BatchSpanProcessor + opentelemetry-otlp",
        exporter: "OTLP/gRPC loopback",
        ended,
        delivered: receiver.spans(),
        end_time,
        total_time,
    });
    drop(receiver);

    println!("### Spans dropped from a {ended}-span burst ({THREADS} threads, default settings)\n");
    println!(
        "| processor | exporter | ended | delivered | dropped | dropped % | ending took | until all delivered |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let dropped = row.ended.saturating_sub(row.delivered);
        println!(
            "| {} | {} | {} | {} | {} | {:.1} % | {:.2} s | {:.2} s |",
            row.processor,
            row.exporter,
            row.ended,
            row.delivered,
            dropped,
            100.0 * dropped as f64 / row.ended as f64,
            row.end_time.as_secs_f64(),
            row.total_time.as_secs_f64(),
        );
    }
    let spanflow_dropped = rows
        .iter()
        .filter(|r| r.processor == "spanflow")
        .map(|r| r.ended - r.delivered)
        .sum::<u64>();
    if spanflow_dropped > 0 {
        eprintln!("spanflow dropped {spanflow_dropped} spans with default settings");
        std::process::exit(1);
    }
}
