//! `DropSite::Producers`: finished items are dropped by producers, each exactly once, and the
//! consumer drops what producers leave behind (idle, shut down).
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::thread::{self, ThreadId};
use std::time::Duration;

use parking_lot::Mutex;
use spanflow_batch::{Batcher, DropSite, MAX_SPENT_BATCHES, ManualClock, TryRecvError};

mod support;
use support::{LIMIT, join, next};

/// Records the thread that drops it.
struct Tracked {
    id: usize,
    log: Arc<Mutex<Vec<(usize, ThreadId)>>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.log.lock().push((self.id, thread::current().id()));
    }
}

fn dropped_on(log: &Mutex<Vec<(usize, ThreadId)>>, ids: std::ops::Range<usize>) -> Vec<ThreadId> {
    let log = log.lock();
    ids.map(|id| {
        let mut on = log.iter().filter(|(i, _)| *i == id).map(|(_, t)| *t);
        let first = on
            .next()
            .unwrap_or_else(|| panic!("item {id} never dropped"));
        assert!(on.next().is_none(), "item {id} dropped twice");
        first
    })
    .collect()
}

#[test]
fn finished_items_are_dropped_by_the_next_sends() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, mut rx) = Batcher::<Tracked>::builder()
        .max_items(4)
        .drop_site(DropSite::Producers)
        .build()
        .unwrap();
    let send = |ids: std::ops::Range<usize>| {
        let (tx, log) = (tx.clone(), Arc::clone(&log));
        join(thread::spawn(move || {
            for id in ids {
                tx.send(Tracked {
                    id,
                    log: Arc::clone(&log),
                })
                .unwrap();
            }
            thread::current().id()
        }))
    };
    send(0..8);
    for _ in 0..2 {
        drop(rx.try_recv().unwrap());
    }
    assert!(log.lock().is_empty(), "the consumer dropped nothing");
    let producer = send(8..16);
    assert_eq!(dropped_on(&log, 0..8), vec![producer; 8]);
    assert_eq!(log.lock().len(), 8, "items 8.. are still queued");
    drop(rx.try_recv().unwrap());
    drop(rx.try_recv().unwrap());
    tx.close();
    assert_eq!(rx.try_recv().err(), Some(TryRecvError::Closed));
    // The consumer ended: it dropped what no producer will.
    let me = thread::current().id();
    assert_eq!(dropped_on(&log, 8..16), vec![me; 8]);
}

#[test]
fn an_idle_consumer_drops_what_producers_left_after_a_second() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let clock = ManualClock::new();
    let (tx, mut rx) = Batcher::<Tracked>::builder()
        .max_items(2)
        .clock(clock.clone())
        .drop_site(DropSite::Producers)
        .build()
        .unwrap();
    for id in 0..2 {
        let log = Arc::clone(&log);
        tx.send(Tracked { id, log }).unwrap();
    }
    drop(rx.try_recv().unwrap());
    assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
    clock.advance(Duration::from_millis(999));
    assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
    assert!(log.lock().is_empty(), "parked for a second");
    clock.advance(Duration::from_millis(1));
    assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
    let me = thread::current().id();
    assert_eq!(dropped_on(&log, 0..2), vec![me; 2]);
}

#[test]
fn at_most_max_spent_batches_wait_for_producers() {
    let drops = Arc::new(AtomicUsize::new(0));
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let batches = MAX_SPENT_BATCHES + 3;
    let (tx, mut rx) = Batcher::<Counted>::builder()
        .max_items(1)
        .budget_items(None)
        .drop_site(DropSite::Producers)
        .build()
        .unwrap();
    for _ in 0..batches {
        tx.send(Counted(Arc::clone(&drops))).unwrap();
    }
    for _ in 0..batches {
        drop(rx.try_recv().unwrap());
    }
    // Beyond the bound, a batch dropped its items itself.
    assert_eq!(drops.load(Ordering::Relaxed), batches - MAX_SPENT_BATCHES);
    drop((tx, rx));
    assert_eq!(drops.load(Ordering::Relaxed), batches);
}

#[test]
fn many_producers_drop_every_item_exactly_once() {
    const PRODUCERS: usize = 4;
    const PER: usize = 20_000;
    let seen: Arc<Vec<AtomicU8>> =
        Arc::new((0..PRODUCERS * PER).map(|_| AtomicU8::new(0)).collect());
    struct Once {
        id: usize,
        seen: Arc<Vec<AtomicU8>>,
    }
    impl Drop for Once {
        fn drop(&mut self) {
            self.seen[self.id].fetch_add(1, Ordering::Relaxed);
        }
    }
    let (tx, rx) = Batcher::<Once>::builder()
        .max_items(64)
        .max_age(Duration::from_millis(1))
        .drop_site(DropSite::Producers)
        .policy(spanflow_batch::Policy::Block {
            timeout: Some(LIMIT),
        })
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
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (tx, seen) = (tx.clone(), Arc::clone(&seen));
            thread::spawn(move || {
                for i in 0..PER {
                    let id = p * PER + i;
                    tx.send(Once {
                        id,
                        seen: Arc::clone(&seen),
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    producers.into_iter().for_each(join);
    let stats = tx.shutdown_timeout(LIMIT).expect("shutdown");
    assert_eq!(stats.emitted as usize, PRODUCERS * PER);
    assert_eq!(join(consumer), PRODUCERS * PER);
    drop(tx);
    let counts: Vec<u8> = seen.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        counts.iter().all(|&c| c == 1),
        "an item was lost or dropped twice"
    );
}
