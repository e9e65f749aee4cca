//! Stress: many producers, one consumer, a stats watcher; every item arrives exactly once, the
//! accounting invariant holds in every snapshot, and shutdown loses nothing.
//!
//! Sizes scale with `SPANFLOW_STRESS_SCALE` (default 1) for longer local runs.
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use spanflow_batch::{Batcher, Policy, SendError, Stats};

mod support;
use support::{LIMIT, join, next};

fn scale() -> u64 {
    std::env::var("SPANFLOW_STRESS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

const PRODUCERS: u64 = 4;

fn id(producer: u64, seq: u64) -> u64 {
    producer << 32 | seq
}

/// Runs `PRODUCERS` threads sending `per_producer` items each through `tx`, a consumer thread
/// and a watcher that checks the invariant in a loop; returns (items received, per-producer
/// sequences of refused items, final stats).
fn run(
    tx: Batcher<u64>,
    rx: spanflow_batch::Receiver<u64>,
    per_producer: u64,
) -> (Vec<u64>, Vec<u64>, Stats) {
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let tx = tx.clone();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut snapshots = 0u64;
            let mut last = Stats::default();
            while !done.load(Ordering::Relaxed) {
                let s = tx.stats();
                assert!(s.is_consistent(), "inconsistent snapshot {s:?}");
                assert!(s.accepted >= last.accepted && s.emitted >= last.emitted);
                last = s;
                snapshots += 1;
                thread::yield_now();
            }
            snapshots
        })
    };
    let consumer = thread::spawn(move || {
        let mut rx = rx;
        let mut got = Vec::new();
        while let Some(batch) = next(&mut rx) {
            got.extend_from_slice(&batch);
        }
        got
    });
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut refused = Vec::new();
                for seq in 0..per_producer {
                    match tx.send(id(p, seq)) {
                        Ok(()) => {}
                        Err(
                            SendError::Closed(v) | SendError::Timeout(v) | SendError::TooLarge(v),
                        ) => {
                            refused.push(v);
                        }
                    }
                }
                refused
            })
        })
        .collect();
    let refused: Vec<u64> = producers.into_iter().flat_map(join).collect();
    let stats = tx.shutdown_timeout(LIMIT).expect("shutdown");
    done.store(true, Ordering::Relaxed);
    assert!(join(watcher) > 0);
    let got = join(consumer);
    (got, refused, stats)
}

/// Every received id is unique, each producer's ids arrive in increasing order.
fn check_unique_and_fifo(got: &[u64]) -> Vec<u64> {
    let mut counts = vec![0u64; PRODUCERS as usize];
    let mut last = vec![None::<u64>; PRODUCERS as usize];
    for &v in got {
        let (p, seq) = ((v >> 32) as usize, v & 0xffff_ffff);
        if let Some(prev) = last[p] {
            assert!(seq > prev, "producer {p}: {seq} after {prev}");
        }
        last[p] = Some(seq);
        counts[p] += 1;
    }
    counts
}

#[test]
fn every_item_arrives_exactly_once_with_a_roomy_budget() {
    let n = 50_000 * scale();
    let (tx, rx) = Batcher::<u64>::builder()
        .max_items(128)
        .max_age(Duration::from_millis(2))
        .budget_items(None)
        .build()
        .unwrap();
    let (got, refused, stats) = run(tx, rx, n);
    assert!(refused.is_empty());
    assert_eq!(check_unique_and_fifo(&got), vec![n; PRODUCERS as usize]);
    assert_eq!(stats.accepted, PRODUCERS * n);
    assert_eq!(
        (stats.emitted, stats.dropped(), stats.queued),
        (PRODUCERS * n, 0, 0)
    );
}

#[test]
fn drop_newest_counts_every_drop_under_a_tight_budget() {
    let n = 50_000 * scale();
    let (tx, rx) = Batcher::<u64>::builder()
        .max_items(64)
        .max_age(Duration::from_millis(1))
        .weigh(|v: &u64| v % 7 + 1)
        .max_bytes(300)
        .budget_items(200)
        .budget_bytes(700)
        .policy(Policy::DropNewest)
        .build()
        .unwrap();
    let (got, refused, stats) = run(tx, rx, n);
    assert!(refused.is_empty());
    let counts = check_unique_and_fifo(&got);
    assert_eq!(counts.iter().sum::<u64>(), stats.emitted);
    assert_eq!(stats.accepted, PRODUCERS * n);
    assert_eq!(
        stats.accepted,
        stats.emitted + stats.dropped_by_reason.newest
    );
    assert_eq!(stats.queued, 0);
}

#[test]
fn drop_oldest_counts_every_eviction_under_a_tight_budget() {
    let n = 30_000 * scale();
    let (tx, rx) = Batcher::<u64>::builder()
        .max_items(64)
        .max_age(Duration::from_millis(1))
        .budget_items(100)
        .policy(Policy::DropOldest)
        .build()
        .unwrap();
    let (got, refused, stats) = run(tx, rx, n);
    assert!(refused.is_empty());
    let counts = check_unique_and_fifo(&got);
    assert_eq!(counts.iter().sum::<u64>(), stats.emitted);
    assert_eq!(stats.accepted, PRODUCERS * n);
    assert_eq!(
        stats.accepted,
        stats.emitted + stats.dropped_by_reason.oldest
    );
    assert_eq!(stats.queued, 0);
}

#[test]
fn block_loses_nothing_under_a_tight_budget() {
    let n = 30_000 * scale();
    let (tx, rx) = Batcher::<u64>::builder()
        .max_items(32)
        .max_age(Duration::from_millis(1))
        .weigh(|v: &u64| v % 5 + 1)
        .budget_items(50)
        .budget_bytes(120)
        .policy(Policy::Block { timeout: None })
        .build()
        .unwrap();
    let (got, refused, stats) = run(tx, rx, n);
    assert!(refused.is_empty());
    assert_eq!(check_unique_and_fifo(&got), vec![n; PRODUCERS as usize]);
    assert_eq!((stats.emitted, stats.dropped()), (PRODUCERS * n, 0));
}

#[test]
fn shutdown_during_sends_loses_nothing_accepted() {
    for round in 0..(5 * scale()) {
        let (tx, rx) = Batcher::<u64>::builder()
            .max_items(50)
            .max_age(Duration::from_millis(1))
            .budget_items(None)
            .build()
            .unwrap();
        let consumer = thread::spawn(move || {
            let mut rx = rx;
            let mut got = Vec::new();
            while let Some(batch) = next(&mut rx) {
                got.extend_from_slice(&batch);
            }
            got
        });
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut sent = 0u64;
                    loop {
                        match tx.send(id(p, sent)) {
                            Ok(()) => sent += 1,
                            Err(SendError::Closed(v)) => {
                                assert_eq!(v, id(p, sent), "the refused item comes back");
                                return sent;
                            }
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(5 + round));
        let stats = tx.shutdown_timeout(LIMIT).expect("shutdown");
        let sent: Vec<u64> = producers.into_iter().map(join).collect();
        let got = join(consumer);
        assert_eq!(check_unique_and_fifo(&got), sent, "round {round}");
        assert_eq!(stats.accepted, sent.iter().sum::<u64>());
        assert_eq!((stats.emitted, stats.queued), (stats.accepted, 0));
    }
}

#[test]
fn flush_covers_everything_sent_before_it() {
    let (tx, rx) = Batcher::<u64>::builder()
        .max_items(1000)
        .max_age(Duration::from_secs(3600))
        .build()
        .unwrap();
    let consumer = thread::spawn(move || {
        let mut rx = rx;
        let mut n = 0;
        while let Some(batch) = next(&mut rx) {
            n += batch.len();
        }
        n
    });
    let mut sent = 0;
    for round in 0..(200 * scale()) {
        for i in 0..(round % 37) {
            tx.send(i).unwrap();
            sent += 1;
        }
        tx.flush_timeout(LIMIT).unwrap();
        let stats = tx.stats();
        assert_eq!((stats.emitted, stats.queued), (sent, 0));
    }
    drop(tx);
    assert_eq!(join(consumer) as u64, sent);
}
