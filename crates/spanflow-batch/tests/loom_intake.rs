//! Loom models of the intake's wake-up protocols, run against the crate's own code: under
//! `--cfg loom` every mutex, condvar and atomic of `spanflow-batch` is loom's (`src/sync.rs`),
//! so these drive the real `send`, `recv` and credit paths.
//!
//! loom has no clock: a timed wait waits for a notification only (see `src/sync.rs`). A wake-up
//! the code forgets therefore shows up as a deadlock, which loom reports, instead of as a batch
//! that waits for its age deadline. The clock is a `ManualClock` standing still, so ages never
//! cut a batch here: only a wake-up can.
//!
//! Run: `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release
//! -p spanflow-batch --test loom_intake`.
#![cfg(loom)]

use std::time::Duration;

use loom::thread;
use spanflow_batch::{Batcher, BatcherBuilder, Budget, CutReason, ManualClock, Policy};

/// Small and deterministic: two shards, no recycling (the pool's Treiber stack has its own
/// models in spanflow-lockfree), ages that never expire.
fn builder(max_items: usize) -> BatcherBuilder<u32> {
    Batcher::<u32>::builder()
        .max_items(max_items)
        .max_age(Duration::from_secs(3600))
        .clock(ManualClock::new())
        .shards(2)
        .pool_capacity(0)
        .budget_items(None)
}

/// The consumer gathers the first item into its open batch and goes to sleep; the second item
/// completes that batch, so the producer must wake it although its shard alone holds one item.
#[test]
fn consumer_wakes_when_a_send_completes_its_open_batch() {
    loom::model(|| {
        let (tx, mut rx) = builder(2).build().unwrap();
        let producer = thread::spawn(move || {
            tx.send(1).unwrap();
            tx.send(2).unwrap();
            // Kept open: closing would wake the consumer whatever the protocol does.
            tx
        });
        let batch = rx.recv().expect("the batcher is open");
        assert_eq!(
            (&batch[..], batch.reason()),
            (&[1, 2][..], CutReason::Count)
        );
        drop(producer.join().unwrap());
    });
}

/// Two producers on two shards: three items complete a batch whatever the split between the
/// consumer's open batch and the shards, and whichever shard gets the last one.
#[test]
fn consumer_wakes_when_sends_on_several_shards_complete_its_open_batch() {
    loom::model(|| {
        let (tx, mut rx) = builder(3).build().unwrap();
        let first = {
            let tx = tx.clone();
            thread::spawn(move || {
                tx.send(1).unwrap();
                tx.send(2).unwrap();
                tx
            })
        };
        let second = thread::spawn(move || {
            tx.send(3).unwrap();
            tx
        });
        let batch = rx.recv().expect("the batcher is open");
        assert_eq!((batch.len(), batch.reason()), (3, CutReason::Count));
        drop((first.join().unwrap(), second.join().unwrap()));
    });
}

/// `Policy::Block`: a producer that finds the budget full sleeps until a credit comes back,
/// and the return of that credit (the consumer drops the batch) must wake it.
#[test]
fn blocked_producer_wakes_when_a_credit_returns() {
    loom::model(|| {
        let (tx, mut rx) = builder(1)
            .budget_items(1)
            .policy(Policy::Block { timeout: None })
            .build()
            .unwrap();
        let producer = thread::spawn(move || {
            tx.send(1).unwrap();
            tx.send(2).unwrap();
            tx
        });
        let first = rx.recv().expect("open");
        drop(first);
        let second = rx.recv().expect("open");
        assert_eq!(&second[..], &[2]);
        drop(producer.join().unwrap());
    });
}

/// Two batchers share one budget; the only credit is held by a `Credit` taken from a batch of
/// the first. A producer of the second, blocked on the budget, must be woken when that credit
/// is dropped on another thread, long after the batch left its batcher.
#[test]
fn a_credit_dropped_elsewhere_wakes_a_producer_blocked_on_the_shared_budget() {
    loom::model(|| {
        let budget = Budget::with_items(1, u64::MAX);
        let (spans, mut span_rx) = builder(1).budget(budget.clone()).build().unwrap();
        let (requests, _request_rx) = builder(1)
            .budget(budget.clone())
            .policy(Policy::Block { timeout: None })
            .build()
            .unwrap();
        spans.send(1).unwrap();
        let mut batch = span_rx.try_recv().unwrap();
        let credit = batch.take_credit();
        drop(batch);
        let exporter = thread::spawn(move || drop(credit));
        requests.send(2).unwrap();
        exporter.join().unwrap();
        assert_eq!(budget.used_items(), 1);
    });
}
