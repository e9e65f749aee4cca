//! Intake cost per item: P producer threads send N items until a consumer thread has received
//! them all in batches of up to 512. Peers do the same work through a bounded channel of 2048
//! (opentelemetry_sdk's `BatchSpanProcessor` queue size) with a consumer that batches, so every
//! peer's time includes its consumer. Items are `u64` or 352-byte structs (the size of
//! `SpanData`). spanflow's budget is sized for the burst and each run asserts nothing dropped.
//!
//! `batch/intake_designs` compares intake designs considered for spanflow (not peers).

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_main};
use parking_lot::Mutex;
use spanflow_batch::Batcher;
use spanflow_lockfree::TreiberStack;

const N: usize = 100_000;
const BATCH: usize = 512;
const QUEUE: usize = 2048;

/// Something the size of an `opentelemetry_sdk::trace::SpanData` (~350 bytes).
#[derive(Clone)]
#[expect(
    dead_code,
    reason = "only moved around, like a span on its way to export"
)]
struct Span350 {
    words: [u64; 44],
}

trait Item: Send + 'static {
    fn make(i: u64) -> Self;
}

impl Item for u64 {
    fn make(i: u64) -> Self {
        i
    }
}

impl Item for Span350 {
    fn make(i: u64) -> Self {
        Span350 { words: [i; 44] }
    }
}

/// Spawns `p` producers running `produce(thread_index, count)` and a consumer; times from the
/// moment all are released until all have finished.
fn timed<C, P>(p: usize, consume: C, produce: P) -> Duration
where
    C: FnOnce() -> usize + Send + 'static,
    P: Fn(usize, usize) + Send + Sync + 'static,
{
    let start = Arc::new(Barrier::new(p + 2));
    let consumer = {
        let start = Arc::clone(&start);
        thread::spawn(move || {
            start.wait();
            consume()
        })
    };
    let produce = Arc::new(produce);
    let producers: Vec<_> = (0..p)
        .map(|t| {
            let start = Arc::clone(&start);
            let produce = Arc::clone(&produce);
            thread::spawn(move || {
                start.wait();
                produce(t, N / p);
            })
        })
        .collect();
    drop(produce);
    start.wait();
    let t0 = Instant::now();
    for h in producers {
        h.join().expect("producer");
    }
    let received = consumer.join().expect("consumer");
    let elapsed = t0.elapsed();
    assert_eq!(received, N / p * p, "every item arrives");
    elapsed
}

fn spanflow<T: Item>(p: usize) -> Duration {
    let (tx, rx) = Batcher::<T>::builder()
        .max_items(BATCH)
        .budget_items(N as u64)
        .build()
        .expect("valid config");
    let consume = move || {
        let mut n = 0;
        for batch in rx {
            n += batch.len();
            black_box(&batch[..]);
        }
        n
    };
    let control = tx.clone();
    let remaining = AtomicUsize::new(p);
    let d = timed(p, consume, move |_, count| {
        for i in 0..count {
            tx.send(T::make(i as u64)).expect("open");
        }
        // Like the channels' senders dropping: the last producer ends the stream.
        if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            tx.close();
        }
    });
    assert_eq!(
        control.stats().dropped(),
        0,
        "a budget sized for the burst drops nothing"
    );
    d
}

fn sync_channel<T: Item>(p: usize) -> Duration {
    let (tx, rx) = std::sync::mpsc::sync_channel::<T>(QUEUE);
    let consume = move || {
        let mut batch = Vec::with_capacity(BATCH);
        let mut n = 0;
        while let Ok(item) = rx.recv() {
            batch.push(item);
            if batch.len() == BATCH {
                n += batch.len();
                black_box(&batch[..]);
                batch.clear();
            }
        }
        n + batch.len()
    };
    let tx = Mutex::new(Some(tx));
    let senders: Vec<_> = (0..p).map(|_| tx.lock().clone()).collect();
    drop(tx);
    let senders = Mutex::new(senders);
    timed(p, consume, move |t, count| {
        let Some(tx) = senders.lock()[t].take() else {
            return;
        };
        for i in 0..count {
            tx.send(T::make(i as u64)).expect("open");
        }
    })
}

fn crossbeam_channel<T: Item>(p: usize) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<T>(QUEUE);
    let consume = move || {
        let mut batch = Vec::with_capacity(BATCH);
        let mut n = 0;
        while let Ok(item) = rx.recv() {
            batch.push(item);
            if batch.len() == BATCH {
                n += batch.len();
                black_box(&batch[..]);
                batch.clear();
            }
        }
        n + batch.len()
    };
    let senders = Mutex::new((0..p).map(|_| Some(tx.clone())).collect::<Vec<_>>());
    drop(tx);
    timed(p, consume, move |t, count| {
        let Some(tx) = senders.lock()[t].take() else {
            return;
        };
        for i in 0..count {
            tx.send(T::make(i as u64)).expect("open");
        }
    })
}

fn tokio_mpsc<T: Item>(p: usize) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<T>(QUEUE);
    let consume = move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut n = 0;
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                n += batch.len();
                black_box(&batch[..]);
                batch.clear();
            }
            n
        })
    };
    let senders = Mutex::new((0..p).map(|_| Some(tx.clone())).collect::<Vec<_>>());
    drop(tx);
    timed(p, consume, move |t, count| {
        let Some(tx) = senders.lock()[t].take() else {
            return;
        };
        for i in 0..count {
            tx.blocking_send(T::make(i as u64)).expect("open");
        }
    })
}

/// Design alternative: one Treiber stack; the consumer detaches everything with `take_all`.
fn treiber_take_all<T: Item>(p: usize) -> Duration {
    let stack = Arc::new(TreiberStack::<T>::new());
    let consumer_stack = Arc::clone(&stack);
    let consume = move || {
        let mut batch = Vec::with_capacity(BATCH);
        let mut n = 0;
        while n + batch.len() < N / p * p {
            let mut any = false;
            for item in consumer_stack.take_all().into_fifo() {
                any = true;
                batch.push(item);
                if batch.len() == BATCH {
                    n += batch.len();
                    black_box(&batch[..]);
                    batch.clear();
                }
            }
            if !any {
                thread::yield_now();
            }
        }
        n + batch.len()
    };
    timed(p, consume, move |_, count| {
        for i in 0..count {
            stack.push(T::make(i as u64));
        }
    })
}

/// Design alternative: one Treiber stack per producer thread.
fn sharded_treiber<T: Item>(p: usize) -> Duration {
    let stacks: Arc<Vec<TreiberStack<T>>> = Arc::new((0..p).map(|_| TreiberStack::new()).collect());
    let consumer_stacks = Arc::clone(&stacks);
    let consume = move || {
        let mut batch = Vec::with_capacity(BATCH);
        let mut n = 0;
        while n + batch.len() < N / p * p {
            let mut any = false;
            for stack in consumer_stacks.iter() {
                for item in stack.take_all().into_fifo() {
                    any = true;
                    batch.push(item);
                    if batch.len() == BATCH {
                        n += batch.len();
                        black_box(&batch[..]);
                        batch.clear();
                    }
                }
            }
            if !any {
                thread::yield_now();
            }
        }
        n + batch.len()
    };
    timed(p, consume, move |t, count| {
        for i in 0..count {
            stacks[t].push(T::make(i as u64));
        }
    })
}

/// Design alternative: one mutex-protected vector swapped out by the consumer.
fn global_mutex<T: Item>(p: usize) -> Duration {
    let shared = Arc::new(Mutex::new(Vec::<T>::new()));
    let consumer_shared = Arc::clone(&shared);
    let consume = move || {
        let mut spare = Vec::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut n = 0;
        while n + batch.len() < N / p * p {
            std::mem::swap(&mut *consumer_shared.lock(), &mut spare);
            if spare.is_empty() {
                thread::yield_now();
            }
            for item in spare.drain(..) {
                batch.push(item);
                if batch.len() == BATCH {
                    n += batch.len();
                    black_box(&batch[..]);
                    batch.clear();
                }
            }
        }
        n + batch.len()
    };
    timed(p, consume, move |_, count| {
        for i in 0..count {
            shared.lock().push(T::make(i as u64));
        }
    })
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(N as u64));
}

fn run(total: &mut Duration, iters: u64, f: impl Fn() -> Duration) -> Duration {
    *total = Duration::ZERO;
    for _ in 0..iters {
        *total += f();
    }
    *total
}

fn peers<T: Item>(c: &mut Criterion, name: &str, p: usize) {
    let mut group = c.benchmark_group(name);
    configure(&mut group);
    let mut total = Duration::ZERO;
    group.bench_function("spanflow", |b| {
        b.iter_custom(|iters| run(&mut total, iters, || spanflow::<T>(p)));
    });
    group.bench_function("sync_channel", |b| {
        b.iter_custom(|iters| run(&mut total, iters, || sync_channel::<T>(p)));
    });
    group.bench_function("crossbeam_channel", |b| {
        b.iter_custom(|iters| run(&mut total, iters, || crossbeam_channel::<T>(p)));
    });
    group.bench_function("tokio_mpsc", |b| {
        b.iter_custom(|iters| run(&mut total, iters, || tokio_mpsc::<T>(p)));
    });
    group.finish();
}

fn intake(c: &mut Criterion) {
    peers::<Span350>(c, "batch/intake_1p_350b", 1);
    peers::<Span350>(c, "batch/intake_2p_350b", 2);
    peers::<u64>(c, "batch/intake_1p_u64", 1);
    peers::<u64>(c, "batch/intake_2p_u64", 2);
}

fn designs(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch/intake_designs");
    configure(&mut group);
    let mut total = Duration::ZERO;
    group.bench_function("spanflow", |b| {
        b.iter_custom(|iters| run(&mut total, iters, || spanflow::<Span350>(2)));
    });
    group.bench_function("treiber_take_all", |b| {
        b.iter_custom(|iters| run(&mut total, iters, || treiber_take_all::<Span350>(2)));
    });
    group.bench_function("sharded_treiber", |b| {
        b.iter_custom(|iters| run(&mut total, iters, || sharded_treiber::<Span350>(2)));
    });
    group.bench_function("global_mutex", |b| {
        b.iter_custom(|iters| run(&mut total, iters, || global_mutex::<Span350>(2)));
    });
    group.finish();
}

// criterion_group! generates an undocumented pub fn; a private module keeps it internal.
mod group {
    criterion::criterion_group!(benches, super::intake, super::designs);
}
use group::benches;
criterion_main!(benches);
