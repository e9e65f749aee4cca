//! Property test: the batcher, driven by a manual clock from one thread, behaves exactly like a
//! plain sequential model (a shard `Vec`, a `VecDeque` of open batches, counters, and the
//! batches the consumer still holds, whose credits the budget still counts).
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use spanflow_batch::{
    Batcher, CutReason, ManualClock, Policy, SendError, Stats, TryRecvError, TrySendError,
};

/// Item: (id, weight).
type Item = (u32, u64);

#[derive(Debug, Clone)]
enum Op {
    Send(u64),
    TrySend(u64),
    Advance(u64),
    Recv,
    /// Receive one due batch and keep it (its credit stays taken).
    Hold,
    /// Drop the oldest batch kept by `Hold` (its credit comes back).
    Release,
    Flush,
    Close,
}

#[derive(Debug, Clone)]
struct Setup {
    max_items: usize,
    max_bytes: u64,
    max_age: u64,
    weighted: bool,
    budget_items: Option<u64>,
    budget_bytes: Option<u64>,
    policy: Policy,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1usize..6,
        1u64..40,
        1u64..100,
        any::<bool>(),
        prop::option::of(1u64..12),
        prop::option::of(1u64..60),
        prop_oneof![
            Just(Policy::DropNewest),
            Just(Policy::DropOldest),
            Just(Policy::Block {
                timeout: Some(Duration::ZERO)
            }),
        ],
    )
        .prop_map(
            |(max_items, max_bytes, max_age, weighted, budget_items, budget_bytes, policy)| Setup {
                max_items,
                max_bytes,
                max_age,
                weighted,
                budget_items,
                budget_bytes,
                policy,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..20).prop_map(Op::Send),
        2 => (0u64..20).prop_map(Op::TrySend),
        3 => (0u64..60).prop_map(Op::Advance),
        3 => Just(Op::Recv),
        2 => Just(Op::Hold),
        1 => Just(Op::Release),
        1 => Just(Op::Flush),
        1 => Just(Op::Close),
    ]
}

#[derive(Debug)]
struct ModelBatch {
    items: VecDeque<Item>,
    bytes: u64,
    first_at: u64,
    sealed: Option<CutReason>,
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    shard: Vec<Item>,
    shard_first_at: u64,
    open: VecDeque<ModelBatch>,
    retired: u64,
    flush_target: u64,
    closed: bool,
    stats: Stats,
    /// Items and bytes of the batches the consumer holds.
    held: VecDeque<(u64, u64)>,
}

impl Model {
    fn weight(&self, s: &Setup, w: u64) -> u64 {
        if s.weighted { w } else { 0 }
    }

    fn budget_bytes(&self, s: &Setup) -> u64 {
        match s.budget_bytes {
            Some(b) if s.weighted => b,
            _ => u64::MAX,
        }
    }

    fn fits(&self, s: &Setup, w: u64) -> bool {
        let held_items: u64 = self.held.iter().map(|h| h.0).sum();
        let held_bytes: u64 = self.held.iter().map(|h| h.1).sum();
        self.stats.queued + held_items < s.budget_items.unwrap_or(u64::MAX)
            && self.stats.queued_bytes + held_bytes + w <= self.budget_bytes(s)
    }

    fn accept(&mut self, item: Item) {
        if self.shard.is_empty() {
            self.shard_first_at = self.now;
        }
        self.shard.push(item);
        self.stats.accepted += 1;
        self.stats.queued += 1;
        self.stats.queued_bytes += item.1;
    }

    fn collect(&mut self, s: &Setup) {
        let first_at = self.shard_first_at;
        for (id, w) in std::mem::take(&mut self.shard) {
            if self.open.back().is_none_or(|b| b.sealed.is_some()) {
                self.open.push_back(ModelBatch {
                    items: VecDeque::new(),
                    bytes: 0,
                    first_at,
                    sealed: None,
                });
            }
            let back = self.open.back_mut().unwrap();
            if !back.items.is_empty() && back.bytes + w > s.max_bytes {
                back.sealed = Some(CutReason::Bytes);
                self.open.push_back(ModelBatch {
                    items: VecDeque::new(),
                    bytes: 0,
                    first_at,
                    sealed: None,
                });
            }
            let back = self.open.back_mut().unwrap();
            if back.items.is_empty() {
                back.first_at = first_at;
            }
            back.first_at = back.first_at.min(first_at);
            back.items.push_back((id, w));
            back.bytes += w;
            if back.items.len() == s.max_items {
                back.sealed = Some(CutReason::Count);
            } else if back.bytes >= s.max_bytes {
                back.sealed = Some(CutReason::Bytes);
            }
        }
    }

    fn evict_front(&mut self) -> bool {
        let Some(front) = self.open.front_mut() else {
            return false;
        };
        let (_, w) = front.items.pop_front().unwrap();
        front.bytes -= w;
        if front.items.is_empty() {
            self.open.pop_front();
        }
        self.retired += 1;
        self.stats.queued -= 1;
        self.stats.queued_bytes -= w;
        self.stats.dropped_by_reason.oldest += 1;
        true
    }

    /// The send, returning `Err(())` when the implementation must hand the item back.
    fn send(&mut self, s: &Setup, item: Item) -> Result<(), &'static str> {
        if self.closed {
            self.stats.refused.closed += 1;
            return Err("closed");
        }
        if self.fits(s, item.1) {
            self.accept(item);
            return Ok(());
        }
        let too_large = item.1 > self.budget_bytes(s);
        match s.policy {
            Policy::DropNewest => {
                self.stats.accepted += 1;
                self.stats.dropped_by_reason.newest += 1;
                Ok(())
            }
            Policy::DropOldest if too_large => {
                self.stats.accepted += 1;
                self.stats.dropped_by_reason.newest += 1;
                Ok(())
            }
            Policy::DropOldest => {
                self.collect(s);
                while !self.fits(s, item.1) {
                    if !self.evict_front() {
                        // Held batches keep the budget: only queued items can be evicted.
                        self.stats.accepted += 1;
                        self.stats.dropped_by_reason.newest += 1;
                        return Ok(());
                    }
                }
                self.accept(item);
                Ok(())
            }
            Policy::Block { .. } if too_large => {
                self.stats.refused.too_large += 1;
                Err("too large")
            }
            Policy::Block { .. } => {
                self.stats.refused.timeout += 1;
                Err("timeout")
            }
        }
    }

    fn try_send(&mut self, s: &Setup, item: Item) -> Result<(), &'static str> {
        if self.closed {
            self.stats.refused.closed += 1;
            Err("closed")
        } else if self.fits(s, item.1) {
            self.accept(item);
            Ok(())
        } else if item.1 > self.budget_bytes(s) {
            self.stats.refused.too_large += 1;
            Err("too large")
        } else {
            self.stats.refused.full += 1;
            Err("full")
        }
    }

    /// The next due batch: (items, bytes, age, reason).
    fn recv(&mut self, s: &Setup) -> Option<(Vec<Item>, u64, u64, CutReason)> {
        self.collect(s);
        let front = self.open.front()?;
        let reason = match front.sealed {
            Some(r) => r,
            None if self.now >= front.first_at + s.max_age => CutReason::Age,
            None if self.flush_target > self.retired => CutReason::Flush,
            None if self.closed => CutReason::Shutdown,
            None => return None,
        };
        let b = self.open.pop_front().unwrap();
        let n = b.items.len() as u64;
        self.retired += n;
        self.stats.emitted += n;
        self.stats.batches += 1;
        self.stats.queued -= n;
        self.stats.queued_bytes -= b.bytes;
        Some((b.items.into(), b.bytes, self.now - b.first_at, reason))
    }

    fn flush(&mut self, s: &Setup) {
        self.collect(s);
        let pending: u64 = self.open.iter().map(|b| b.items.len() as u64).sum();
        self.flush_target = self.flush_target.max(self.retired + pending);
    }
}

fn run(s: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let mut builder = Batcher::<Item>::builder()
        .clock(clock.clone())
        .max_items(s.max_items)
        .max_bytes(s.max_bytes)
        .max_age(Duration::from_millis(s.max_age))
        .budget_items(s.budget_items)
        .budget_bytes(s.budget_bytes)
        .policy(s.policy)
        .shards(1);
    if s.weighted {
        builder = builder.weigh(|item: &Item| item.1);
    }
    let (tx, mut rx) = builder.build().unwrap();
    let mut model = Model::default();
    let mut held = VecDeque::new();
    let mut next_id = 0u32;
    for op in ops {
        match op {
            Op::Send(w) | Op::TrySend(w) => {
                let item = (next_id, model.weight(&s, w));
                next_id += 1;
                let is_try = matches!(op, Op::TrySend(_));
                let expected = if is_try {
                    model.try_send(&s, item)
                } else {
                    model.send(&s, item)
                };
                let got = if is_try {
                    tx.try_send(item).map_err(|e| match e {
                        TrySendError::Full(i) => ("full", i),
                        TrySendError::Closed(i) => ("closed", i),
                        TrySendError::TooLarge(i) => ("too large", i),
                    })
                } else {
                    tx.send(item).map_err(|e| match e {
                        SendError::Closed(i) => ("closed", i),
                        SendError::Timeout(i) => ("timeout", i),
                        SendError::TooLarge(i) => ("too large", i),
                    })
                };
                match (expected, got) {
                    (Ok(()), Ok(())) => {}
                    (Err(want), Err((why, back))) => {
                        prop_assert_eq!(want, why);
                        prop_assert_eq!(back, item, "the refused item is handed back");
                    }
                    (want, got) => prop_assert!(false, "send: model {:?}, batcher {:?}", want, got),
                }
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(ms));
                model.now += ms;
            }
            Op::Recv => loop {
                let want = model.recv(&s);
                match (want, rx.try_recv()) {
                    (None, Err(e)) => {
                        let closed_and_empty = model.closed && model.stats.queued == 0;
                        let expected = if closed_and_empty {
                            TryRecvError::Closed
                        } else {
                            TryRecvError::Empty
                        };
                        prop_assert_eq!(e, expected);
                        break;
                    }
                    (Some((items, bytes, age, reason)), Ok(batch)) => {
                        prop_assert_eq!(&batch[..], &items[..]);
                        prop_assert_eq!(batch.bytes(), bytes);
                        prop_assert_eq!(batch.reason(), reason);
                        prop_assert_eq!(batch.age(), Duration::from_millis(age));
                    }
                    (want, got) => prop_assert!(
                        false,
                        "recv: model {:?}, batcher {:?}",
                        want,
                        got.map(|b| b.to_vec())
                    ),
                }
            },
            Op::Hold => match (model.recv(&s), rx.try_recv()) {
                (None, Err(_)) => {}
                (Some((items, bytes, _, _)), Ok(batch)) => {
                    prop_assert_eq!(&batch[..], &items[..]);
                    let budgeted =
                        s.budget_items.is_some() || (s.weighted && s.budget_bytes.is_some());
                    if budgeted {
                        prop_assert_eq!(batch.credit().items(), items.len() as u64);
                        prop_assert_eq!(batch.credit().bytes(), bytes);
                    }
                    model.held.push_back((items.len() as u64, bytes));
                    held.push_back(batch);
                }
                (want, got) => prop_assert!(
                    false,
                    "hold: model {:?}, batcher {:?}",
                    want,
                    got.map(|b| b.to_vec())
                ),
            },
            Op::Release => {
                model.held.pop_front();
                drop(held.pop_front());
            }
            Op::Flush => {
                model.flush(&s);
                let pending = model.flush_target > model.retired;
                let result = tx.flush_timeout(Duration::ZERO);
                prop_assert_eq!(result.is_err(), pending);
            }
            Op::Close => {
                model.closed = true;
                tx.close();
            }
        }
        let stats = tx.stats();
        prop_assert!(stats.is_consistent(), "{:?}", stats);
        prop_assert_eq!(stats, model.stats);
    }
    // Shutdown drains everything: nothing accepted is lost.
    tx.close();
    model.closed = true;
    while let Some((items, _, _, _)) = model.recv(&s) {
        let batch = rx.try_recv().unwrap();
        prop_assert_eq!(&batch[..], &items[..]);
    }
    prop_assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed);
    let stats = tx.shutdown_timeout(Duration::from_secs(5)).unwrap();
    prop_assert_eq!(stats.queued, 0);
    prop_assert_eq!(stats.accepted, stats.emitted + stats.dropped());
    prop_assert_eq!(stats, model.stats);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn batcher_matches_sequential_model(s in setup(), ops in prop::collection::vec(op(), 0..80)) {
        run(s, ops)?;
    }
}
