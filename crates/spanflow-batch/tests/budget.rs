//! The memory budget: credits travel with batches, one budget can be shared by several
//! batchers, every credit comes back exactly once, and its return wakes blocked producers.
#![cfg(not(loom))]

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use spanflow_batch::{
    Batcher, BatcherBuilder, Budget, DropSite, ManualClock, Policy, SendError, TrySendError,
};

mod support;
use support::{LIMIT, join};

/// Weighted by value, a manual clock (ages never cut), one shard.
fn weighted(budget: &Arc<Budget>) -> BatcherBuilder<u64> {
    Batcher::<u64>::builder()
        .clock(ManualClock::new())
        .max_age(Duration::from_secs(3600))
        .weigh(|w: &u64| *w)
        .shards(1)
        .budget(Arc::clone(budget))
}

#[test]
fn credits_come_back_when_the_batch_is_dropped_not_when_it_is_cut() {
    let (tx, mut rx) = Batcher::<u32>::builder()
        .max_items(2)
        .budget_items(4)
        .build()
        .unwrap();
    for i in 0..4 {
        tx.try_send(i).unwrap();
    }
    let first = rx.try_recv().unwrap();
    let second = rx.try_recv().unwrap();
    assert_eq!(tx.stats().queued, 0);
    assert_eq!(
        tx.try_send(4),
        Err(TrySendError::Full(4)),
        "emitted batches hold it"
    );
    drop(first);
    tx.try_send(4).unwrap();
    tx.try_send(5).unwrap();
    assert_eq!(tx.try_send(6), Err(TrySendError::Full(6)));
    drop(second);
    tx.try_send(6).unwrap();
    let stats = tx.stats();
    assert!(stats.is_consistent(), "{stats:?}");
    assert_eq!((stats.accepted, stats.emitted, stats.queued), (7, 4, 3));
}

#[test]
fn used_bytes_counts_every_held_item_and_never_the_leases() {
    let budget = Budget::new(1000);
    let (tx, mut rx) = weighted(&budget).max_items(2).build().unwrap();
    for w in [100, 200, 300] {
        tx.send(w).unwrap();
    }
    assert_eq!(
        budget.used_bytes(),
        600,
        "queued in the shard and open batch"
    );
    let mut batch = rx.try_recv().unwrap();
    assert_eq!(
        budget.used_bytes(),
        600,
        "one batch emitted, one item queued"
    );
    let credit = batch.take_credit();
    assert_eq!((credit.items(), credit.bytes()), (2, 300));
    assert!(batch.credit().is_empty());
    drop(batch);
    assert_eq!(
        budget.used_bytes(),
        600,
        "the credit still holds the emitted bytes"
    );
    drop(credit);
    assert_eq!((budget.used_items(), budget.used_bytes()), (1, 300));
    drop(rx);
    assert_eq!(
        budget.used_bytes(),
        0,
        "a dropped receiver discards and returns"
    );
    drop(tx);
    assert_eq!(
        format!("{budget:?}")
            .split(", ")
            .filter(|f| f.starts_with("taken"))
            .collect::<Vec<_>>(),
        ["taken_items: 0", "taken_bytes: 0"],
        "a dropped batcher returns its leases"
    );
    assert!((600..=1000).contains(&budget.peak_used_bytes()));
}

#[test]
fn two_batchers_share_one_budget() {
    let budget = Budget::with_items(3, 100);
    let (spans, mut span_rx) = weighted(&budget).max_items(1).build().unwrap();
    let (requests, _request_rx) = weighted(&budget).build().unwrap();
    spans.try_send(60).unwrap();
    assert_eq!(requests.try_send(50), Err(TrySendError::Full(50)));
    requests.try_send(40).unwrap();
    assert_eq!(spans.try_send(1), Err(TrySendError::Full(1)));
    let batch = span_rx.try_recv().unwrap();
    assert_eq!(requests.try_send(1), Err(TrySendError::Full(1)));
    drop(batch);
    requests.try_send(1).unwrap();
    spans.try_send(59).unwrap();
    assert_eq!(budget.used_items(), 3, "the item limit is shared too");
    assert_eq!(spans.try_send(0), Err(TrySendError::Full(0)));
}

#[test]
fn a_credit_dropped_on_another_thread_wakes_a_producer_of_another_batcher() {
    let budget = Budget::with_items(1, u64::MAX);
    let (spans, mut span_rx) = Batcher::<u32>::builder()
        .max_items(1)
        .budget(Arc::clone(&budget))
        .build()
        .unwrap();
    let (requests, _request_rx) = Batcher::<u32>::builder()
        .budget(Arc::clone(&budget))
        .policy(Policy::Block {
            timeout: Some(LIMIT),
        })
        .build()
        .unwrap();
    spans.send(1).unwrap();
    let credit = span_rx.try_recv().unwrap().take_credit();
    let blocked = thread::spawn(move || requests.send(2));
    thread::sleep(Duration::from_millis(20));
    assert!(!blocked.is_finished(), "the budget is full");
    join(thread::spawn(move || drop(credit)));
    assert_eq!(join(blocked), Ok(()));
}

#[test]
fn drop_oldest_evicts_queued_items_only() {
    let budget = Budget::with_items(3, u64::MAX);
    let (tx, mut rx) = Batcher::<u32>::builder()
        .max_items(2)
        .shards(1)
        .budget(Arc::clone(&budget))
        .policy(Policy::DropOldest)
        .build()
        .unwrap();
    for i in 0..3 {
        tx.send(i).unwrap();
    }
    let held = rx.try_recv().unwrap();
    tx.send(3).unwrap();
    let stats = tx.stats();
    assert_eq!(
        (stats.dropped_by_reason.oldest, stats.queued),
        (1, 1),
        "item 2 made room for 3"
    );
    tx.send(4).unwrap();
    assert_eq!(tx.stats().dropped_by_reason.oldest, 2);
    drop(held);
    tx.close();
    assert_eq!(&rx.try_recv().unwrap()[..], &[4]);
    assert!(tx.stats().is_consistent());
}

#[test]
fn a_batch_whose_items_wait_for_producers_has_returned_its_credit() {
    let budget = Budget::with_items(2, u64::MAX);
    let (tx, mut rx) = Batcher::<String>::builder()
        .max_items(2)
        .drop_site(DropSite::Producers)
        .budget(Arc::clone(&budget))
        .build()
        .unwrap();
    tx.send("a".into()).unwrap();
    tx.send("b".into()).unwrap();
    drop(rx.try_recv().unwrap());
    // The strings are parked for the producers; the budget is free again.
    assert_eq!(budget.used_items(), 0);
    tx.try_send("c".into()).unwrap();
    tx.try_send("d".into()).unwrap();
}

#[test]
fn try_take_reclaims_what_batchers_leased_and_left_unused() {
    let budget = Budget::new(1000);
    let (tx, _rx) = weighted(&budget).shards(4).build().unwrap();
    tx.send(1).unwrap();
    let credit = budget.try_take(0, 999).expect("the idle lease comes back");
    assert_eq!(budget.used_bytes(), 1000);
    assert!(budget.try_take(0, 1).is_none());
    drop(credit);
}

#[test]
fn a_blocked_send_times_out_while_credits_are_held_elsewhere() {
    let budget = Budget::new(10);
    let held = budget.force_take(0, 10);
    let (tx, _rx) = weighted(&budget)
        .policy(Policy::Block {
            timeout: Some(Duration::from_millis(10)),
        })
        .build()
        .unwrap();
    assert_eq!(tx.send(1), Err(SendError::Timeout(1)));
    drop(held);
    tx.send(1).unwrap();
}

#[test]
fn a_shared_budget_with_no_items_is_refused() {
    let err = Batcher::<u8>::builder()
        .budget(Budget::with_items(0, 10))
        .build()
        .unwrap_err();
    assert_eq!(err, spanflow_batch::BatcherBuildError::ZeroBudget);
}
