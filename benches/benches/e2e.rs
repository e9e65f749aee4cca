//! End-to-end benchmarks: ending spans, and delivering them to a loopback OTLP/gRPC receiver.
//!
//! Groups (see the xtask report's naming convention): `e2e/end_span_1t`, `e2e/end_span_2t`
//! (functions `spanflow`, `bsp_default`, `bsp_large_queue`, `no_processor`, and
//! `drop_processor`: a processor that drops each span, the floor any processor pays) and
//! `e2e/grpc_delivery` (functions `spanflow`, `bsp_otlp`).
//!
//! Ending spans is measured as bursts: each iteration times `SPANS_PER_ITER` spans ended on
//! each of the long-lived span-ending threads ([`SpanThreads`]), then (untimed) flushes the
//! processor, so every iteration starts with an empty queue and no function is charged for the
//! previous iteration's backlog. The background work a burst causes (spanflow's encoding, BSP's
//! export loop) runs during the timed part and competes for the same cores. Sustained
//! saturation is what `e2e/grpc_delivery` and the `burst` binary measure.
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

/// `--features mimalloc`: every contestant allocates with mimalloc, whose frees from another
/// thread do not contend with the allocating thread the way glibc's arenas do.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The area of every group name: the mimalloc build reports its own groups
/// (`e2e_mimalloc/...`), so both runs stand side by side in the report.
const AREA: &str = if cfg!(feature = "mimalloc") {
    "e2e_mimalloc"
} else {
    "e2e"
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_sdk::trace::SdkTracerProvider;
use spanflow_benches::wire_sink::WireSink;
use spanflow_benches::{
    LARGE_QUEUE, SpanThreads, bsp, bsp_otlp, drop_processor, no_processor, spanflow_grpc,
    spanflow_null,
};

/// Spans each thread ends per criterion iteration (a burst).
const SPANS_PER_ITER: u64 = 20_000;

fn end_span_group(c: &mut Criterion, threads: usize) {
    let mut group = c.benchmark_group(format!("{AREA}/end_span_{threads}t"));
    group
        .sample_size(15)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(SPANS_PER_ITER * threads as u64));

    // The same long-lived threads end every contestant's spans, as a service's threads would.
    let pool = SpanThreads::new(threads);
    let mut run = |name: &str, provider: &SdkTracerProvider| {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += pool.run(provider, SPANS_PER_ITER);
                    // Untimed: drain, so the next burst starts from an empty queue.
                    let _ = provider.force_flush();
                }
                total
            });
        });
    };

    let (provider, pipeline, _exporter) = spanflow_null();
    run("spanflow", &provider);
    let _ = provider.shutdown_with_timeout(Duration::from_secs(30));
    let stats = pipeline.stats();
    eprintln!(
        "spanflow: accepted {} exported {} dropped {}",
        stats.accepted,
        stats.exported,
        stats.dropped.total()
    );

    let (provider, _) = bsp(None);
    run("bsp_default", &provider);
    let _ = provider.shutdown_with_timeout(Duration::from_secs(30));

    let (provider, _) = bsp(Some(LARGE_QUEUE));
    run("bsp_large_queue", &provider);
    let _ = provider.shutdown_with_timeout(Duration::from_secs(30));

    let provider = no_processor();
    run("no_processor", &provider);
    let _ = provider.shutdown();

    // The floor every processor pays: the SDK builds the SpanData and calls on_end.
    let provider = drop_processor();
    run("drop_processor", &provider);
    let _ = provider.shutdown();
    group.finish();
}

fn end_span_1t(c: &mut Criterion) {
    end_span_group(c, 1);
}

fn end_span_2t(c: &mut Criterion) {
    end_span_group(c, 2);
}

/// Spans per iteration of the delivery benchmark.
const DELIVERY_SPANS: u64 = 50_000;

/// Waits until the sink's count stops growing (nothing arrived for `quiet`) or reaches `target`;
/// returns how many spans arrived since `before`.
fn settle(sink: &WireSink, before: u64, target: u64, quiet: Duration, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = sink.spans();
    let mut last_change = Instant::now();
    while sink.spans() - before < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        let now = sink.spans();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            break;
        }
    }
    sink.spans() - before
}

/// Time to deliver `DELIVERY_SPANS` spans ended on one thread as fast as it can, measured until
/// the receiver has counted them all (or, when the processor dropped some, until nothing more
/// arrives). The time is scaled by `ended / delivered`, so criterion's throughput is the rate of
/// spans actually *delivered*: drops are not free speed.
fn delivery(provider: &SdkTracerProvider, sink: &WireSink, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let before = sink.spans();
        let start = Instant::now();
        spanflow_benches::end_spans(provider, DELIVERY_SPANS);
        let _ = provider.force_flush();
        let delivered = settle(
            sink,
            before,
            DELIVERY_SPANS,
            Duration::from_millis(300),
            Duration::from_secs(30),
        );
        // The quiet period that proved nothing more was coming is not delivery time.
        let mut elapsed = start.elapsed();
        if delivered < DELIVERY_SPANS {
            elapsed = elapsed.saturating_sub(Duration::from_millis(300));
        }
        let delivered = delivered.max(1);
        total += elapsed.mul_f64(DELIVERY_SPANS as f64 / delivered as f64);
        if delivered < DELIVERY_SPANS {
            eprintln!(
                "delivered {delivered} of {DELIVERY_SPANS} ({:.1} % dropped)",
                100.0 * (1.0 - delivered as f64 / DELIVERY_SPANS as f64)
            );
        }
    }
    total
}

fn grpc_delivery(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("{AREA}/grpc_delivery"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(DELIVERY_SPANS));

    let receiver = WireSink::start();
    let (provider, pipeline) = spanflow_grpc(&receiver.endpoint());
    group.bench_function("spanflow", |b| {
        b.iter_custom(|iters| delivery(&provider, &receiver, iters));
    });
    let _ = provider.shutdown_with_timeout(Duration::from_secs(30));
    let stats = pipeline.stats();
    eprintln!(
        "spanflow grpc: accepted {} exported {} dropped {}",
        stats.accepted,
        stats.exported,
        stats.dropped.total()
    );
    drop(receiver);

    let receiver = WireSink::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let provider = bsp_otlp(&receiver.endpoint(), &runtime);
    group.bench_function("bsp_otlp", |b| {
        b.iter_custom(|iters| delivery(&provider, &receiver, iters));
    });
    let _ = provider.shutdown_with_timeout(Duration::from_secs(30));
    drop(receiver);
    group.finish();
}

criterion_group!(benches, end_span_1t, end_span_2t, grpc_delivery);
criterion_main!(benches);
