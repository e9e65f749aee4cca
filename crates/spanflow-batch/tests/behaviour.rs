//! One behaviour per test: triggers, flush, shutdown, policies, accounting, recycling, ordering.
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use spanflow_batch::{
    Batcher, BatcherBuildError, CutReason, ManualClock, Policy, RecvTimeoutError, SendError,
    TryRecvError, TrySendError,
};

mod support;
use support::{LIMIT, drain, join, next, woken};

fn manual<T: Send + 'static>() -> (spanflow_batch::BatcherBuilder<T>, ManualClock) {
    let clock = ManualClock::new();
    (
        Batcher::<T>::builder()
            .clock(clock.clone())
            .max_age(Duration::from_millis(100)),
        clock,
    )
}

#[test]
fn full_batch_is_cut_by_count() {
    let (builder, _clock) = manual::<u32>();
    let (tx, mut rx) = builder.max_items(3).build().unwrap();
    for i in 0..7 {
        tx.send(i).unwrap();
    }
    let a = rx.try_recv().unwrap();
    let b = rx.try_recv().unwrap();
    assert_eq!((&a[..], a.reason()), (&[0, 1, 2][..], CutReason::Count));
    assert_eq!((&b[..], b.reason()), (&[3, 4, 5][..], CutReason::Count));
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn batch_is_cut_by_bytes_when_the_next_item_does_not_fit() {
    let (builder, _clock) = manual::<u64>();
    let (tx, mut rx) = builder
        .max_items(100)
        .max_bytes(10)
        .weigh(|w: &u64| *w)
        .build()
        .unwrap();
    for w in [4, 4, 4, 10, 1] {
        tx.send(w).unwrap();
    }
    let a = rx.try_recv().unwrap();
    assert_eq!(
        (&a[..], a.bytes(), a.reason()),
        (&[4, 4][..], 8, CutReason::Bytes)
    );
    let b = rx.try_recv().unwrap();
    assert_eq!((&b[..], b.reason()), (&[4][..], CutReason::Bytes));
    let c = rx.try_recv().unwrap();
    assert_eq!((&c[..], c.reason()), (&[10][..], CutReason::Bytes));
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn item_heavier_than_max_bytes_travels_alone() {
    let (builder, _clock) = manual::<u64>();
    let (tx, mut rx) = builder.max_bytes(10).weigh(|w: &u64| *w).build().unwrap();
    tx.send(1).unwrap();
    tx.send(50).unwrap();
    tx.send(2).unwrap();
    assert_eq!(&rx.try_recv().unwrap()[..], &[1]);
    let big = rx.try_recv().unwrap();
    assert_eq!((&big[..], big.bytes()), (&[50][..], 50));
}

#[test]
fn partial_batch_is_cut_by_age_exactly_at_max_age() {
    let (builder, clock) = manual::<u32>();
    let (tx, mut rx) = builder.max_items(10).build().unwrap();
    tx.send(1).unwrap();
    clock.advance(Duration::from_millis(60));
    tx.send(2).unwrap();
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    clock.advance(Duration::from_millis(39));
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    clock.advance(Duration::from_millis(1));
    let b = rx.try_recv().unwrap();
    assert_eq!((&b[..], b.reason()), (&[1, 2][..], CutReason::Age));
    assert_eq!(b.age(), Duration::from_millis(100));
}

#[test]
fn blocking_recv_wakes_for_age_deadline() {
    let (tx, mut rx) = Batcher::<u32>::builder()
        .max_age(Duration::from_millis(20))
        .build()
        .unwrap();
    tx.send(9).unwrap();
    let b = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((&b[..], b.reason()), (&[9][..], CutReason::Age));
    assert!(b.age() >= Duration::from_millis(20));
}

#[test]
fn blocking_recv_wakes_when_a_full_batch_arrives() {
    let (tx, mut rx) = Batcher::<u32>::builder()
        .max_items(4)
        .max_age(Duration::from_secs(3600))
        .build()
        .unwrap();
    let consumer = thread::spawn(move || {
        let batch = woken(&mut rx);
        (batch.len(), batch.reason())
    });
    thread::sleep(Duration::from_millis(20));
    for i in 0..4 {
        tx.send(i).unwrap();
    }
    assert_eq!(join(consumer), (4, CutReason::Count));
}

#[test]
fn blocking_recv_wakes_when_sends_on_many_threads_complete_a_batch() {
    // Each of the last items lands alone in a shard of its own; only together with the items
    // already gathered into the consumer's open batch do they complete it.
    let (tx, mut rx) = Batcher::<u32>::builder()
        .max_items(16)
        .shards(8)
        .max_age(Duration::from_secs(3600))
        .build()
        .unwrap();
    let consumer = thread::spawn(move || {
        let batch = woken(&mut rx);
        (batch.len(), batch.reason())
    });
    let first = tx.clone();
    join(thread::spawn(move || {
        for i in 0..9 {
            first.send(i).unwrap();
        }
    }));
    thread::sleep(Duration::from_millis(20));
    for i in 9..16 {
        let tx = tx.clone();
        join(thread::spawn(move || tx.send(i).unwrap()));
    }
    assert_eq!(join(consumer), (16, CutReason::Count));
}

#[test]
fn recv_timeout_times_out_when_nothing_is_due() {
    let (tx, mut rx) = Batcher::<u32>::builder().build().unwrap();
    tx.send(1).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(10)).unwrap_err(),
        RecvTimeoutError::Timeout
    );
}

#[test]
fn flush_emits_everything_accepted_before_it() {
    let (tx, rx) = Batcher::<u32>::builder()
        .max_items(4)
        .max_age(Duration::from_secs(3600))
        .build()
        .unwrap();
    let consumer = thread::spawn(move || {
        let mut rx = rx;
        let mut batches = Vec::new();
        while let Some(b) = next(&mut rx) {
            batches.push((b.to_vec(), b.reason()));
        }
        batches
    });
    for i in 0..6 {
        tx.send(i).unwrap();
    }
    tx.flush_timeout(LIMIT).unwrap();
    let stats = tx.stats();
    assert_eq!((stats.emitted, stats.queued), (6, 0));
    drop(tx);
    let batches = join(consumer);
    assert_eq!(
        batches,
        vec![
            (vec![0, 1, 2, 3], CutReason::Count),
            (vec![4, 5], CutReason::Flush)
        ]
    );
}

#[test]
fn flush_with_nothing_queued_returns_at_once() {
    let (tx, _rx) = Batcher::<u32>::builder().build().unwrap();
    tx.flush_timeout(Duration::ZERO).unwrap();
}

#[test]
fn flush_times_out_without_a_consumer_and_still_cuts_later() {
    let (builder, _clock) = manual::<u32>();
    let (tx, mut rx) = builder.build().unwrap();
    tx.send(1).unwrap();
    assert!(tx.flush_timeout(Duration::from_millis(5)).is_err());
    let b = rx.try_recv().unwrap();
    assert_eq!((&b[..], b.reason()), (&[1][..], CutReason::Flush));
}

#[test]
fn shutdown_emits_everything_and_hands_later_items_back() {
    let (tx, rx) = Batcher::<u32>::builder().max_items(3).build().unwrap();
    let consumer = thread::spawn(move || drain(rx));
    for i in 0..10 {
        tx.send(i).unwrap();
    }
    let stats = tx.shutdown_timeout(LIMIT).unwrap();
    assert_eq!((stats.accepted, stats.emitted, stats.queued), (10, 10, 0));
    assert!(stats.is_consistent());
    assert_eq!(tx.send(11), Err(SendError::Closed(11)));
    assert_eq!(tx.try_send(12), Err(TrySendError::Closed(12)));
    assert_eq!(join(consumer), (0..10).collect::<Vec<_>>());
    assert_eq!(tx.stats().refused.closed, 2);
}

#[test]
fn shutdown_cuts_remaining_items_with_reason_shutdown() {
    let (builder, _clock) = manual::<u32>();
    let (tx, mut rx) = builder.build().unwrap();
    tx.send(1).unwrap();
    tx.close();
    let b = rx.try_recv().unwrap();
    assert_eq!(b.reason(), CutReason::Shutdown);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed);
    assert_eq!(tx.shutdown_timeout(Duration::ZERO).unwrap().emitted, 1);
}

#[test]
fn dropping_every_handle_ends_the_receiver() {
    let (tx, rx) = Batcher::<u32>::builder().build().unwrap();
    let tx2 = tx.clone();
    tx.send(1).unwrap();
    drop(tx);
    tx2.send(2).unwrap();
    drop(tx2);
    assert_eq!(drain(rx), [1, 2]);
}

#[test]
fn dropping_the_receiver_counts_queued_items_as_disconnected() {
    let (tx, rx) = Batcher::<u32>::builder().build().unwrap();
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    drop(rx);
    assert_eq!(tx.send(3), Err(SendError::Closed(3)));
    let stats = tx.shutdown_timeout(LIMIT).unwrap();
    assert_eq!(stats.dropped_by_reason.disconnected, 2);
    assert!(stats.is_consistent());
}

#[test]
fn drop_newest_discards_and_counts_the_incoming_item() {
    let (builder, _clock) = manual::<u32>();
    let (tx, mut rx) = builder
        .budget_items(3)
        .policy(Policy::DropNewest)
        .build()
        .unwrap();
    for i in 0..5 {
        tx.send(i).unwrap();
    }
    let stats = tx.stats();
    assert_eq!(
        (stats.accepted, stats.queued, stats.dropped_by_reason.newest),
        (5, 3, 2)
    );
    tx.close();
    assert_eq!(&rx.try_recv().unwrap()[..], &[0, 1, 2]);
}

#[test]
fn drop_oldest_evicts_the_oldest_queued_items() {
    let (builder, _clock) = manual::<u32>();
    let (tx, mut rx) = builder
        .max_items(2)
        .budget_items(3)
        .policy(Policy::DropOldest)
        .build()
        .unwrap();
    for i in 0..6 {
        tx.send(i).unwrap();
    }
    let stats = tx.stats();
    assert_eq!(
        (stats.accepted, stats.queued, stats.dropped_by_reason.oldest),
        (6, 3, 3)
    );
    tx.close();
    let mut got = Vec::new();
    while let Ok(b) = rx.try_recv() {
        got.extend_from_slice(&b);
    }
    assert_eq!(got, [3, 4, 5]);
}

#[test]
fn drop_oldest_respects_the_byte_budget() {
    let (builder, _clock) = manual::<u64>();
    let (tx, mut rx) = builder
        .weigh(|w: &u64| *w)
        .budget_bytes(10)
        .policy(Policy::DropOldest)
        .build()
        .unwrap();
    for w in [3, 3, 3, 6] {
        tx.send(w).unwrap();
    }
    let stats = tx.stats();
    assert_eq!(
        (stats.queued, stats.queued_bytes, stats.dropped()),
        (2, 9, 2)
    );
    tx.close();
    assert_eq!(&rx.try_recv().unwrap()[..], &[3, 6]);
}

#[test]
fn try_send_hands_the_item_back_when_full() {
    let (tx, mut rx) = Batcher::<u32>::builder()
        .max_items(2)
        .budget_items(2)
        .build()
        .unwrap();
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    drop(rx.try_recv().unwrap());
    tx.try_send(3).unwrap();
    let stats = tx.stats();
    assert_eq!(
        (stats.accepted, stats.refused.full, stats.dropped()),
        (3, 1, 0)
    );
}

#[test]
fn too_large_items_are_refused_or_dropped() {
    let (tx, _rx) = Batcher::<u64>::builder()
        .weigh(|w: &u64| *w)
        .budget_bytes(10)
        .policy(Policy::Block {
            timeout: Some(LIMIT),
        })
        .build()
        .unwrap();
    assert_eq!(tx.send(11), Err(SendError::TooLarge(11)));
    assert_eq!(tx.try_send(11), Err(TrySendError::TooLarge(11)));
    let (tx, _rx) = Batcher::<u64>::builder()
        .weigh(|w: &u64| *w)
        .budget_bytes(10)
        .build()
        .unwrap();
    tx.send(11).unwrap();
    assert_eq!(tx.stats().dropped_by_reason.newest, 1);
}

#[test]
fn block_with_timeout_hands_the_item_back() {
    let (tx, _rx) = Batcher::<u32>::builder()
        .budget_items(1)
        .policy(Policy::Block {
            timeout: Some(Duration::from_millis(10)),
        })
        .build()
        .unwrap();
    tx.send(1).unwrap();
    assert_eq!(tx.send(2), Err(SendError::Timeout(2)));
    let stats = tx.stats();
    assert_eq!((stats.accepted, stats.refused.timeout), (1, 1));
}

#[test]
fn block_waits_until_the_consumer_makes_room() {
    let (tx, rx) = Batcher::<u32>::builder()
        .max_items(2)
        .budget_items(2)
        .max_age(Duration::from_millis(5))
        .policy(Policy::Block {
            timeout: Some(LIMIT),
        })
        .build()
        .unwrap();
    let consumer = thread::spawn(move || drain(rx));
    for i in 0..100 {
        tx.send(i).unwrap();
    }
    let stats = tx.shutdown_timeout(LIMIT).unwrap();
    assert_eq!((stats.emitted, stats.dropped()), (100, 0));
    assert_eq!(join(consumer), (0..100).collect::<Vec<_>>());
}

#[test]
fn blocked_sender_is_released_by_close() {
    let (tx, _rx) = Batcher::<u32>::builder()
        .budget_items(1)
        .policy(Policy::Block { timeout: None })
        .build()
        .unwrap();
    tx.send(1).unwrap();
    let tx2 = tx.clone();
    let blocked = thread::spawn(move || tx2.send(2));
    thread::sleep(Duration::from_millis(20));
    tx.close();
    assert_eq!(join(blocked), Err(SendError::Closed(2)));
}

#[test]
fn budget_is_not_stranded_in_idle_shards() {
    // Leases taken by one thread's shard are reclaimed when another thread finds the pool dry.
    let (tx, mut rx) = Batcher::<u32>::builder()
        .budget_items(64)
        .max_items(1000)
        .shards(8)
        .build()
        .unwrap();
    let tx2 = tx.clone();
    join(thread::spawn(move || tx2.send(0).unwrap()));
    for i in 1..64 {
        tx.try_send(i).unwrap();
    }
    assert_eq!(tx.try_send(64), Err(TrySendError::Full(64)));
    tx.close();
    assert_eq!(rx.try_recv().unwrap().len(), 64);
}

#[test]
fn batch_vectors_are_recycled() {
    let (builder, _clock) = manual::<u64>();
    let (tx, mut rx) = builder.max_items(8).build().unwrap();
    let mut seen = std::collections::HashSet::new();
    for round in 0..50 {
        for i in 0..8 {
            tx.send(round * 8 + i).unwrap();
        }
        let batch = rx.try_recv().unwrap();
        seen.insert(batch.as_ptr() as usize);
    }
    assert!(
        seen.len() <= 3,
        "{} distinct vectors for 50 batches",
        seen.len()
    );
}

#[test]
fn per_thread_order_is_fifo() {
    let (tx, rx) = Batcher::<(u32, u32)>::builder()
        .max_items(7)
        .build()
        .unwrap();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || (0..2000).for_each(|i| tx.send((p, i)).unwrap()))
        })
        .collect();
    drop(tx);
    let consumer = thread::spawn(move || {
        let mut rx = rx;
        let mut expected = [0u32; 4];
        while let Some(batch) = next(&mut rx) {
            for &(p, i) in batch.iter() {
                assert_eq!(i, expected[p as usize], "producer {p} out of order");
                expected[p as usize] += 1;
            }
        }
        expected
    });
    producers.into_iter().for_each(join);
    assert_eq!(join(consumer), [2000; 4]);
}

#[test]
fn pinned_handle_keeps_fifo_across_threads() {
    let (tx, rx) = Batcher::<u32>::builder().shards(4).build().unwrap();
    let pinned = Arc::new(tx.pinned());
    drop(tx);
    for chunk in 0..4 {
        let pinned = Arc::clone(&pinned);
        join(thread::spawn(move || {
            (chunk * 100..chunk * 100 + 100).for_each(|i| pinned.send(i).unwrap());
        }));
    }
    drop(pinned);
    assert_eq!(drain(rx), (0..400).collect::<Vec<_>>());
}

#[test]
fn drops_run_for_every_item_exactly_once() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = Batcher::<Counted>::builder()
        .max_items(3)
        .budget_items(5)
        .policy(Policy::DropOldest)
        .build()
        .unwrap();
    for _ in 0..10 {
        tx.send(Counted(Arc::clone(&drops))).unwrap();
    }
    assert_eq!(drops.load(Ordering::Relaxed), 5);
    let batch = rx.try_recv().unwrap();
    let n = batch.len();
    drop(batch);
    assert_eq!(drops.load(Ordering::Relaxed), 5 + n);
    drop(rx);
    assert_eq!(drops.load(Ordering::Relaxed), 10);
}

#[test]
fn invalid_configuration_is_an_error() {
    assert_eq!(
        Batcher::<u8>::builder().max_items(0).build().unwrap_err(),
        BatcherBuildError::ZeroMaxItems
    );
    assert_eq!(
        Batcher::<u8>::builder()
            .budget_items(0)
            .build()
            .unwrap_err(),
        BatcherBuildError::ZeroBudget
    );
    assert_eq!(
        Batcher::<u8>::builder().shards(0).build().unwrap_err(),
        BatcherBuildError::Shards(0)
    );
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn stream_yields_batches_and_ends_after_shutdown() {
    use futures::StreamExt;
    let (tx, rx) = Batcher::<u32>::builder()
        .max_items(10)
        .max_age(Duration::from_millis(20))
        .build()
        .unwrap();
    let consumer = tokio::spawn(async move {
        let mut stream = rx.into_stream();
        let mut out = Vec::new();
        while let Some(batch) = stream.next().await {
            out.push((batch.len(), batch.reason()));
        }
        out
    });
    for i in 0..25 {
        tx.send(i).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    tx.close();
    let out = tokio::time::timeout(LIMIT, consumer)
        .await
        .expect("the stream ends within the limit")
        .unwrap();
    assert_eq!(
        out,
        [
            (10, CutReason::Count),
            (10, CutReason::Count),
            (5, CutReason::Age)
        ]
    );
}
