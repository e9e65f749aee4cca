//! Treiber stack benchmarks: spanflow vs `parking_lot::Mutex<Vec>`, crossbeam `SegQueue` and
//! `ArrayQueue`, side by side per group.
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::sync::Barrier;
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

/// A push+pop pair on each of `threads` threads; reports wall time per pair per thread.
fn pairs_on_threads(threads: usize, iters: u64, pair: impl Fn(u64) + Sync) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    for i in 0..iters {
                        pair(i);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        start.elapsed()
    })
}

fn push_pop(c: &mut Criterion, threads: usize) {
    let mut group = c.benchmark_group(format!("stack/push_pop_{threads}t"));
    group.throughput(Throughput::Elements(1));
    let stack = TreiberStack::new();
    group.bench_function("spanflow", |b| {
        b.iter_custom(|iters| {
            pairs_on_threads(threads, iters, |i| {
                stack.push(i);
                black_box(stack.pop());
            })
        });
    });
    let mutex = Mutex::new(Vec::new());
    group.bench_function("mutex_vec", |b| {
        b.iter_custom(|iters| {
            pairs_on_threads(threads, iters, |i| {
                mutex.lock().push(i);
                black_box(mutex.lock().pop());
            })
        });
    });
    let seg = SegQueue::new();
    group.bench_function("seg_queue", |b| {
        b.iter_custom(|iters| {
            pairs_on_threads(threads, iters, |i| {
                seg.push(i);
                black_box(seg.pop());
            })
        });
    });
    group.finish();
}

fn push_pop_1t(c: &mut Criterion) {
    push_pop(c, 1);
}

fn push_pop_2t(c: &mut Criterion) {
    push_pop(c, 2);
}

/// Two producers push `iters` items in total while one consumer collects them all.
fn take_all_2p(c: &mut Criterion) {
    let mut group = c.benchmark_group("stack/take_all_2p");
    group.throughput(Throughput::Elements(1));
    group.bench_function("spanflow", |b| {
        b.iter_custom(|iters| {
            let stack = TreiberStack::new();
            let per = iters / 2;
            let total = per * 2;
            let barrier = Barrier::new(3);
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        barrier.wait();
                        for i in 0..per {
                            stack.push(i);
                        }
                    });
                }
                barrier.wait();
                let start = Instant::now();
                let mut seen = 0;
                while seen < total {
                    for v in stack.take_all().into_fifo() {
                        black_box(v);
                        seen += 1;
                    }
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("array_queue", |b| {
        b.iter_custom(|iters| {
            let queue = ArrayQueue::new(4096);
            let per = iters / 2;
            let total = per * 2;
            let barrier = Barrier::new(3);
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        barrier.wait();
                        for i in 0..per {
                            let mut item = i;
                            while let Err(back) = queue.push(item) {
                                item = back;
                                std::hint::spin_loop();
                            }
                        }
                    });
                }
                barrier.wait();
                let start = Instant::now();
                let mut seen = 0;
                while seen < total {
                    while let Some(v) = queue.pop() {
                        black_box(v);
                        seen += 1;
                    }
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = push_pop_1t, push_pop_2t, take_all_2p
}
criterion_main!(benches);
