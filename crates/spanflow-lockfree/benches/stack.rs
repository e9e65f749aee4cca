//! Treiber stack benchmarks: spanflow vs `parking_lot::Mutex<Vec>`, crossbeam `SegQueue` and
//! `ArrayQueue`, side by side per group.
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::{ArrayQueue, SegQueue};
use parking_lot::Mutex;
use spanflow_lockfree::TreiberStack;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

/// Two long-lived threads driven sample by sample, so thread start-up and cold thread-locals
/// (epoch participant, node cache) stay out of the measurement, as in a real pipeline.
fn on_two_threads(b: &mut criterion::Bencher<'_>, work: &(dyn Fn(u64) + Sync)) {
    const STOP: u64 = u64::MAX;
    let iters = AtomicU64::new(0);
    let start = Barrier::new(3);
    let end = Barrier::new(3);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    start.wait();
                    let n = iters.load(Ordering::Acquire);
                    if n == STOP {
                        break;
                    }
                    work(n);
                    end.wait();
                }
            });
        }
        b.iter_custom(|n| {
            iters.store(n, Ordering::Release);
            start.wait();
            let t0 = Instant::now();
            end.wait();
            t0.elapsed()
        });
        iters.store(STOP, Ordering::Release);
        start.wait();
    });
}

fn push_pop_1t(c: &mut Criterion) {
    let mut group = c.benchmark_group("stack/push_pop_1t");
    group.throughput(Throughput::Elements(1));
    let stack = TreiberStack::new();
    group.bench_function("spanflow", |b| {
        b.iter(|| {
            stack.push(black_box(1u64));
            black_box(stack.pop())
        });
    });
    let mutex = Mutex::new(Vec::new());
    group.bench_function("mutex_vec", |b| {
        b.iter(|| {
            mutex.lock().push(black_box(1u64));
            black_box(mutex.lock().pop())
        });
    });
    let seg = SegQueue::new();
    group.bench_function("seg_queue", |b| {
        b.iter(|| {
            seg.push(black_box(1u64));
            black_box(seg.pop())
        });
    });
    group.finish();
}

/// Each of two threads does `iters` push+pop pairs; time is per pair per thread.
fn push_pop_2t(c: &mut Criterion) {
    let mut group = c.benchmark_group("stack/push_pop_2t");
    group.throughput(Throughput::Elements(1));
    let stack = TreiberStack::new();
    group.bench_function("spanflow", |b| {
        on_two_threads(b, &|n| {
            for i in 0..n {
                stack.push(i);
                black_box(stack.pop());
            }
        });
    });
    let mutex = Mutex::new(Vec::new());
    group.bench_function("mutex_vec", |b| {
        on_two_threads(b, &|n| {
            for i in 0..n {
                mutex.lock().push(i);
                black_box(mutex.lock().pop());
            }
        });
    });
    let seg = SegQueue::new();
    group.bench_function("seg_queue", |b| {
        on_two_threads(b, &|n| {
            for i in 0..n {
                seg.push(i);
                black_box(seg.pop());
            }
        });
    });
    group.finish();
}

/// Two producers push `iters / 2` items each while the bench thread collects all of them.
fn take_all_2p(c: &mut Criterion) {
    let mut group = c.benchmark_group("stack/take_all_2p");
    group.throughput(Throughput::Elements(1));
    let stack = TreiberStack::new();
    group.bench_function("spanflow", |b| {
        drive_producers(
            b,
            &|per| {
                for i in 0..per {
                    stack.push(i);
                }
            },
            &|total| {
                let mut seen = 0;
                while seen < total {
                    let before = seen;
                    for v in stack.take_all().into_fifo() {
                        black_box(v);
                        seen += 1;
                    }
                    if seen == before {
                        // Nothing to take: give the core to a producer, as a parked consumer would.
                        std::thread::yield_now();
                    }
                }
            },
        );
    });
    let queue = ArrayQueue::new(4096);
    group.bench_function("array_queue", |b| {
        drive_producers(
            b,
            &|per| {
                for i in 0..per {
                    let mut item = i;
                    while let Err(back) = queue.push(item) {
                        item = back;
                        // Full: let the consumer run (it may share this core).
                        std::thread::yield_now();
                    }
                }
            },
            &|total| {
                let mut seen = 0;
                while seen < total {
                    let before = seen;
                    while let Some(v) = queue.pop() {
                        black_box(v);
                        seen += 1;
                    }
                    if seen == before {
                        std::thread::yield_now();
                    }
                }
            },
        );
    });
    group.finish();
}

/// Two long-lived producer threads each run `produce(iters / 2)`; the bench thread runs
/// `consume(2 * (iters / 2))`; the time covers both.
fn drive_producers(
    b: &mut criterion::Bencher<'_>,
    produce: &(dyn Fn(u64) + Sync),
    consume: &dyn Fn(u64),
) {
    const STOP: u64 = u64::MAX;
    let per = AtomicU64::new(0);
    let start = Barrier::new(3);
    let end = Barrier::new(3);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    start.wait();
                    let n = per.load(Ordering::Acquire);
                    if n == STOP {
                        break;
                    }
                    produce(n);
                    end.wait();
                }
            });
        }
        b.iter_custom(|iters| {
            let n = (iters / 2).max(1);
            per.store(n, Ordering::Release);
            start.wait();
            let t0 = Instant::now();
            consume(2 * n);
            let elapsed = t0.elapsed();
            end.wait();
            elapsed
        });
        per.store(STOP, Ordering::Release);
        start.wait();
    });
}

criterion_group! {
    name = benches;
    config = config();
    targets = push_pop_1t, push_pop_2t, take_all_2p
}
criterion_main!(benches);
