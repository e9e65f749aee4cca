//! A profiling and A/B aid for `e2e/end_span_*`: runs the same bursts as the criterion group
//! for the named contestants only, taking turns burst by burst, so that `perf record` sees only
//! what it is pointed at and a comparison is not skewed by this noisy machine drifting between
//! runs.
//!
//! `cargo run --release -p spanflow-benches --bin end_span_probe -- 5 spanflow no_processor`
//! runs bursts of 20 000 spans (per thread; `THREADS=2` for two) on long-lived threads
//! (`FRESH_THREADS=1` starts new ones for every burst) for about 5 s, each contestant
//! in turn, flushing (untimed) after each burst, and prints the median and the best time per
//! span. Contestants: `spanflow` (encoded spans freed on the application threads, the
//! default), `spanflow_free_on_pipeline`, `bsp_default`, `no_processor`, `drop_processor`, and
//! `handoff_floor`: a processor that only moves each span through a `sync_channel` to a thread
//! that drops it, the least any processor working off the application's threads pays here.

use std::time::{Duration, Instant};

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use spanflow::FreeSpansOn;
use spanflow_benches::{
    SpanThreads, bsp, drop_processor, end_spans_parallel, no_processor, spanflow_null_freeing_on,
};

/// `--features mimalloc`: as in the criterion bench, every contestant allocates with mimalloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPANS_PER_BURST: u64 = 20_000;

#[derive(Debug)]
struct HandoffProcessor {
    tx: std::sync::mpsc::SyncSender<SpanData>,
}

impl opentelemetry_sdk::trace::SpanProcessor for HandoffProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        let _ = self.tx.try_send(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn handoff_floor() -> SdkTracerProvider {
    let (tx, rx) = std::sync::mpsc::sync_channel(1 << 20);
    std::thread::spawn(move || while rx.recv().is_ok() {});
    SdkTracerProvider::builder()
        .with_span_processor(HandoffProcessor { tx })
        .build()
}

fn provider(name: &str) -> Option<SdkTracerProvider> {
    Some(match name {
        "spanflow" => spanflow_null_freeing_on(FreeSpansOn::Application).0,
        "spanflow_free_on_pipeline" => spanflow_null_freeing_on(FreeSpansOn::Pipeline).0,
        "bsp_default" => bsp(None).0,
        "no_processor" => no_processor(),
        "drop_processor" => drop_processor(),
        "handoff_floor" => handoff_floor(),
        _ => return None,
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut contestants = Vec::new();
    for name in args {
        match provider(&name) {
            Some(provider) => contestants.push((name, provider, Vec::new())),
            None => {
                eprintln!("unknown contestant {name}");
                std::process::exit(2);
            }
        }
    }
    // `FRESH_THREADS=1`: new span-ending threads for every burst, as the benches did before
    // they kept theirs.
    let fresh = std::env::var_os("FRESH_THREADS").is_some_and(|v| v == "1");
    let pool = SpanThreads::new(threads);
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        for (_, provider, samples) in &mut contestants {
            let took = if fresh {
                end_spans_parallel(provider, threads, SPANS_PER_BURST)
            } else {
                pool.run(provider, SPANS_PER_BURST)
            };
            let _ = provider.force_flush();
            samples.push(took.as_nanos() as f64 / SPANS_PER_BURST as f64);
        }
    }
    for (name, provider, mut samples) in contestants {
        samples.sort_by(f64::total_cmp);
        let median = samples.get(samples.len() / 2).copied().unwrap_or(0.0);
        let best = samples.first().copied().unwrap_or(0.0);
        println!(
            "{name:>26}: {:>5} bursts, median {median:6.1} ns/span, best {best:6.1} ns/span",
            samples.len()
        );
        let _ = provider.shutdown_with_timeout(Duration::from_secs(30));
    }
}
