//! Deque and injector benchmarks: spanflow vs crossbeam-deque, side by side per group.
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

fn push_pop(c: &mut Criterion, n: usize) {
    let mut group = c.benchmark_group(format!("deque/push_pop_{n}"));
    group.throughput(Throughput::Elements(n as u64));
    let ours = spanflow_lockfree::Worker::new_lifo();
    group.bench_function("spanflow", |b| {
        b.iter(|| {
            for i in 0..n {
                ours.push(black_box(i));
            }
            for _ in 0..n {
                black_box(ours.pop());
            }
        });
    });
    let theirs = crossbeam_deque::Worker::new_lifo();
    group.bench_function("crossbeam", |b| {
        b.iter(|| {
            for i in 0..n {
                theirs.push(black_box(i));
            }
            for _ in 0..n {
                black_box(theirs.pop());
            }
        });
    });
    group.finish();
}

fn push_pop_32(c: &mut Criterion) {
    push_pop(c, 32);
}

fn push_pop_256(c: &mut Criterion) {
    push_pop(c, 256);
}

/// The owner pushes 64 items and pops until empty while one thief steals in a loop.
fn owner_thief(c: &mut Criterion) {
    const ROUND: usize = 64;
    let mut group = c.benchmark_group("deque/owner_thief");
    group.throughput(Throughput::Elements(ROUND as u64));
    group.bench_function("spanflow", |b| {
        b.iter_custom(|iters| {
            let w = spanflow_lockfree::Worker::new_lifo();
            let s = w.stealer();
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = black_box(s.steal());
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..ROUND {
                        w.push(black_box(i));
                    }
                    while let Some(v) = w.pop() {
                        black_box(v);
                    }
                }
                let elapsed = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                elapsed
            })
        });
    });
    group.bench_function("crossbeam", |b| {
        b.iter_custom(|iters| {
            let w = crossbeam_deque::Worker::new_lifo();
            let s = w.stealer();
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = black_box(s.steal());
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..ROUND {
                        w.push(black_box(i));
                    }
                    while let Some(v) = w.pop() {
                        black_box(v);
                    }
                }
                let elapsed = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                elapsed
            })
        });
    });
    group.finish();
}

/// Fill a FIFO source with 256 items, move them all with `steal_batch`, drain the destination.
fn steal_batch(c: &mut Criterion) {
    const N: usize = 256;
    let mut group = c.benchmark_group("deque/steal_batch");
    group.throughput(Throughput::Elements(N as u64));
    let (src, dest) = (
        spanflow_lockfree::Worker::new_fifo(),
        spanflow_lockfree::Worker::new_fifo(),
    );
    let s = src.stealer();
    group.bench_function("spanflow", |b| {
        b.iter(|| {
            for i in 0..N {
                src.push(i);
            }
            while s.steal_batch(&dest).is_success() {
                while let Some(v) = dest.pop() {
                    black_box(v);
                }
            }
        });
    });
    let (src, dest) = (
        crossbeam_deque::Worker::new_fifo(),
        crossbeam_deque::Worker::new_fifo(),
    );
    let s = src.stealer();
    group.bench_function("crossbeam", |b| {
        b.iter(|| {
            for i in 0..N {
                src.push(i);
            }
            while s.steal_batch(&dest).is_success() {
                while let Some(v) = dest.pop() {
                    black_box(v);
                }
            }
        });
    });
    group.finish();
}

/// Push 256 items into the injector, then drain it with `steal_batch_and_pop` + local pops.
fn injector(c: &mut Criterion) {
    const N: usize = 256;
    let mut group = c.benchmark_group("injector/push_steal");
    group.throughput(Throughput::Elements(N as u64));
    let q = spanflow_lockfree::Injector::new();
    let local = spanflow_lockfree::Worker::new_fifo();
    group.bench_function("spanflow", |b| {
        b.iter(|| {
            for i in 0..N {
                q.push(i);
            }
            while let spanflow_lockfree::Steal::Success(v) = q.steal_batch_and_pop(&local) {
                black_box(v);
                while let Some(v) = local.pop() {
                    black_box(v);
                }
            }
        });
    });
    let q = crossbeam_deque::Injector::new();
    let local = crossbeam_deque::Worker::new_fifo();
    group.bench_function("crossbeam", |b| {
        b.iter(|| {
            for i in 0..N {
                q.push(i);
            }
            while let crossbeam_deque::Steal::Success(v) = q.steal_batch_and_pop(&local) {
                black_box(v);
                while let Some(v) = local.pop() {
                    black_box(v);
                }
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = push_pop_32, push_pop_256, owner_thief, steal_batch, injector
}
criterion_main!(benches);
