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
use spanflow_batch::{Batcher, BatcherBuilder, ManualClock, Policy};

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

/// `Policy::Block`: a producer that finds the budget full sleeps until a credit comes back,
/// and the return of that credit (by the consumer) must wake it.
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
