//! The memory budget: item and byte credits that travel with the data they pay for, from the
//! send that accepts an item until the last [`Credit`] for it is dropped, and the `room`
//! handshake that wakes producers blocked on it.

use std::fmt;
use std::sync::{Arc, Weak};

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU64, Condvar, Mutex, MutexGuard, Ordering};

/// Something that leases credits from a [`Budget`] ahead of need: a batcher's shards.
pub(crate) trait Leases: Send + Sync {
    /// Takes every unused lease back; returns the items and bytes it held.
    fn reclaim_leases(&self) -> (u64, u64);
    /// Items and bytes leased and not yet used by an item.
    fn unused_leases(&self) -> (u64, u64);
}

/// A memory budget that one or more batchers draw on, and whose credits travel with the data
/// downstream.
///
/// It counts items and bytes (the batcher's weights) held from the moment a send accepts an
/// item until the credit for it comes back: when the item is dropped by the batcher (an
/// eviction, a dropped receiver), or when the [`Batch`](crate::Batch) that carries it is dropped,
/// or, if the consumer took the batch's [`Credit`] with
/// [`Batch::take_credit`](crate::Batch::take_credit), when that credit is dropped, which may be
/// long after and on another thread (after export, say). Sends never take more than the
/// limits; only [`force_take`](Self::force_take) and [`Credit::resize_bytes`] may over-commit,
/// for data that grew on its way.
///
/// Share one budget between batchers with [`BatcherBuilder::budget`](crate::BatcherBuilder::budget):
/// a producer blocked by [`Policy::Block`](crate::Policy::Block) on one of them is woken by any
/// credit that comes back, whoever held it.
///
/// ```
/// use spanflow_batch::{Batcher, Budget};
///
/// let budget = Budget::with_items(4, 1 << 20);
/// let (batcher, mut receiver) = Batcher::<Vec<u8>>::builder()
///     .max_items(2)
///     .weigh(|v: &Vec<u8>| v.len() as u64)
///     .budget(budget.clone())
///     .build()?;
/// batcher.send(vec![0; 100])?;
/// batcher.send(vec![0; 50])?;
/// let mut batch = receiver.try_recv()?;
/// let credit = batch.take_credit(); // the 150 bytes stay counted...
/// drop(batch);
/// assert_eq!(budget.used_bytes(), 150);
/// drop(credit); // ...until the data they pay for is gone
/// assert_eq!(budget.used_bytes(), 0);
/// // Counts what shards leased ahead too: an upper bound on the peak of `used_bytes`.
/// assert!(budget.peak_used_bytes() >= 150);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Budget {
    limit_items: u64,
    limit_bytes: u64,
    /// Credits taken: held by accepted items (queued, in batches, in outstanding `Credit`s) or
    /// leased to shards for their next items. At most the limit, unless over-committed.
    taken_items: CachePadded<AtomicU64>,
    taken_bytes: CachePadded<AtomicU64>,
    peak_bytes: AtomicU64,
    /// Producers blocked on this budget (count of waiters), with their condvar.
    room: Mutex<usize>,
    room_cv: Condvar,
    /// The batchers drawing on this budget, whose idle leases a full budget reclaims.
    holders: Mutex<Vec<Weak<dyn Leases>>>,
}

impl Budget {
    /// A budget of `bytes` bytes and any number of items.
    pub fn new(bytes: u64) -> Arc<Budget> {
        Self::with_items(u64::MAX, bytes)
    }

    /// A budget of `items` items and `bytes` bytes (`u64::MAX`: unlimited).
    pub fn with_items(items: u64, bytes: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit_items: items,
            limit_bytes: bytes,
            taken_items: CachePadded::new(AtomicU64::new(0)),
            taken_bytes: CachePadded::new(AtomicU64::new(0)),
            peak_bytes: AtomicU64::new(0),
            room: Mutex::new(0),
            room_cv: Condvar::new(),
            holders: Mutex::new(Vec::new()),
        })
    }

    /// The item limit (`u64::MAX`: unlimited).
    pub fn limit_items(&self) -> u64 {
        self.limit_items
    }

    /// The byte limit (`u64::MAX`: unlimited).
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// Bytes held by accepted items anywhere: in intake shards, open batches, emitted batches
    /// and outstanding [`Credit`]s. Credits a shard leased for its next items do not count.
    /// Exact when nothing moves; while sends run it is a snapshot that may be off by what they
    /// move meanwhile.
    pub fn used_bytes(&self) -> u64 {
        self.used().1
    }

    /// Items held by accepted items anywhere, counted like [`used_bytes`](Self::used_bytes).
    pub fn used_items(&self) -> u64 {
        self.used().0
    }

    fn used(&self) -> (u64, u64) {
        let (mut items, mut bytes) = (0u64, 0u64);
        for holder in self.holders() {
            let (i, b) = holder.unused_leases();
            items += i;
            bytes += b;
        }
        // Relaxed: a snapshot for reporting.
        let taken_items = self.taken_items.load(Ordering::Relaxed);
        let taken_bytes = self.taken_bytes.load(Ordering::Relaxed);
        (
            taken_items.saturating_sub(items),
            taken_bytes.saturating_sub(bytes),
        )
    }

    /// The most bytes taken from this budget at once so far. Measured when credits are taken,
    /// so it also counts what shards leased for their next items (a lease is small: a quarter
    /// of the budget spread over the shards, at most 1 MiB): an upper bound on the peak of
    /// [`used_bytes`](Self::used_bytes), and at most [`limit_bytes`](Self::limit_bytes) unless
    /// credits were over-committed.
    pub fn peak_used_bytes(&self) -> u64 {
        // Relaxed: a monotone value read for reporting.
        self.peak_bytes.load(Ordering::Relaxed)
    }

    /// Takes `items` items and `bytes` bytes of credit if the budget has room for them now,
    /// reclaiming credits that batchers leased and left unused first. Never blocks.
    ///
    /// ```
    /// use spanflow_batch::Budget;
    ///
    /// let budget = Budget::new(100);
    /// let credit = budget.try_take(1, 60).expect("room");
    /// assert!(budget.try_take(1, 60).is_none());
    /// drop(credit);
    /// assert!(budget.try_take(1, 60).is_some());
    /// ```
    pub fn try_take(self: &Arc<Self>, items: u64, bytes: u64) -> Option<Credit> {
        let mut owed = false;
        let mut taken = self.take_exact(items, bytes);
        if let Err(owe) = taken {
            owed = owe;
            self.reclaim_idle(true);
            taken = self.take_exact(items, bytes);
            owed |= taken.err().unwrap_or(false);
        }
        // A failed take may have hidden credits from a blocked producer for a moment.
        if owed {
            self.wake_blocked();
        }
        taken
            .ok()
            .map(|()| Credit::new(Arc::clone(self), items, bytes))
    }

    /// Takes `items` items and `bytes` bytes of credit whether or not the budget has room, for
    /// data that already exists (it grew on its way): `used` may then exceed the limit, and
    /// sends find the budget full until enough credits come back.
    pub fn force_take(self: &Arc<Self>, items: u64, bytes: u64) -> Credit {
        self.commit(items, bytes);
        Credit::new(Arc::clone(self), items, bytes)
    }

    /// Adds to the taken counters without looking at the limits.
    fn commit(&self, items: u64, bytes: u64) {
        // Relaxed: a counter; see `take`.
        self.taken_items.fetch_add(items, Ordering::Relaxed);
        let now = self.taken_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.note_peak(now);
    }

    fn note_peak(&self, taken_bytes: u64) {
        // Relaxed: a monotone maximum read for reporting; the load saves the RMW mostly.
        if taken_bytes > self.peak_bytes.load(Ordering::Relaxed) {
            self.peak_bytes.fetch_max(taken_bytes, Ordering::Relaxed);
        }
    }

    /// Takes exactly `items` and `bytes`. On failure nothing is taken; `Err(true)` means a
    /// blocked producer may have judged the budget by the transient dip and is owed a wake-up.
    fn take_exact(&self, items: u64, bytes: u64) -> Result<(), bool> {
        self.take(items, items, bytes, bytes).map(drop)
    }

    /// Takes between `need_*` and `want_*` credits of each kind; `Err` as for `take_exact`.
    ///
    /// Anything beyond `need` is capped at half of what is free, so a lease never empties the
    /// budget for the other shards: a producer that reclaimed stranded leases and retries with
    /// an exact lease must not find them all re-leased by a neighbour (that was a false "full": a
    /// counted drop while the budget still had room).
    pub(crate) fn take(
        &self,
        need_items: u64,
        want_items: u64,
        need_bytes: u64,
        want_bytes: u64,
    ) -> Result<(u64, u64), bool> {
        let Some(items) = take_from(&self.taken_items, self.limit_items, need_items, want_items)
        else {
            return Err(false);
        };
        let Some(bytes) = take_from(&self.taken_bytes, self.limit_bytes, need_bytes, want_bytes)
        else {
            // Undo; a producer that judged the budget by the dip and went to sleep is owed a
            // wake-up, given by the caller once it holds no shard lock.
            self.give_quietly(items, 0);
            return Err(items > 0);
        };
        if bytes > 0 {
            // Relaxed: a snapshot for the peak only.
            self.note_peak(self.taken_bytes.load(Ordering::Relaxed));
        }
        Ok((items, bytes))
    }

    /// Returns credits and wakes producers blocked on the budget. Must not be called with a
    /// shard lock, `room` or `holders` held.
    pub(crate) fn give(&self, items: u64, bytes: u64) {
        if items == 0 && bytes == 0 {
            return;
        }
        self.give_quietly(items, bytes);
        self.wake_blocked();
    }

    /// Returns credits without waking anyone: the caller holds `room` (and wakes the waiters
    /// itself if needed) or a shard lock (and owes a wake-up after releasing it).
    pub(crate) fn give_quietly(&self, items: u64, bytes: u64) {
        // Relaxed: see `take_from`; `wake_blocked` publishes the credits to blocked producers
        // through the `room` mutex.
        let before_items = self.taken_items.fetch_sub(items, Ordering::Relaxed);
        let before_bytes = self.taken_bytes.fetch_sub(bytes, Ordering::Relaxed);
        debug_assert!(
            before_items >= items && before_bytes >= bytes,
            "a credit came back twice"
        );
    }

    /// Wakes producers blocked on the budget. Must not be called with a shard lock, `room` or
    /// `holders` held.
    ///
    /// Takes `room` unconditionally: a blocked producer registers and re-checks the budget under
    /// `room`, so either it saw the credits returned before this call, or it is counted in
    /// `room` and already waiting (it releases `room` only by waiting). Once per batch or
    /// credit, not per item, so the lock is cheap; a "check a waiter counter first" shortcut
    /// would need a SeqCst store-load (Dekker) pair instead.
    pub(crate) fn wake_blocked(&self) {
        let waiters = self.room.lock();
        if *waiters > 0 {
            self.room_cv.notify_all();
        }
    }

    /// The count of blocked producers, locked: held while a producer registers, re-checks and
    /// waits, and by every credit return (`wake_blocked`).
    pub(crate) fn room(&self) -> MutexGuard<'_, usize> {
        self.room.lock()
    }

    pub(crate) fn room_cv(&self) -> &Condvar {
        &self.room_cv
    }

    /// Adds a batcher whose leases `reclaim_idle` and `used_bytes` look at.
    pub(crate) fn register(&self, holder: Weak<dyn Leases>) {
        let mut holders = self.holders.lock();
        holders.retain(|h| h.strong_count() > 0);
        holders.push(holder);
    }

    fn holders(&self) -> Vec<Arc<dyn Leases>> {
        self.holders
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Moves every batcher's unused leases back to the budget. `notify == false` when the
    /// caller holds `room` (lock order: `room`, then `holders`, then a shard).
    pub(crate) fn reclaim_idle(&self, notify: bool) {
        // Upgraded under `holders`, used after it: a batcher dropped meanwhile is freed here,
        // outside the lock.
        let holders = self.holders();
        let (mut items, mut bytes) = (0, 0);
        for holder in &holders {
            let (i, b) = holder.reclaim_leases();
            items += i;
            bytes += b;
        }
        if notify {
            self.give(items, bytes);
        } else {
            self.give_quietly(items, bytes);
        }
    }
}

/// Takes between `need` and `want` credits from a counter of credits taken under `limit`;
/// `None` if fewer than `need` are free.
fn take_from(taken: &AtomicU64, limit: u64, need: u64, want: u64) -> Option<u64> {
    if need == 0 {
        return Some(0);
    }
    // Relaxed: the counter's RMWs are atomic; a blocked producer learns of returned credits
    // through the `room` mutex (see `Shared::block`), not through this load.
    let mut cur = taken.load(Ordering::Relaxed);
    loop {
        let free = limit.saturating_sub(cur);
        if free < need {
            return None;
        }
        let take = need.max(want.min(free / 2));
        match taken.compare_exchange_weak(cur, cur + take, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(take),
            Err(now) => cur = now,
        }
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("limit_items", &self.limit_items)
            .field("limit_bytes", &self.limit_bytes)
            .field("taken_items", &self.taken_items.load(Ordering::Relaxed))
            .field("taken_bytes", &self.taken_bytes.load(Ordering::Relaxed))
            .field("peak_bytes", &self.peak_bytes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Items and bytes of a [`Budget`] held for some data; dropping it returns them exactly once
/// and wakes producers blocked on that budget.
///
/// A [`Batch`](crate::Batch) carries the credit of its items; take it with
/// [`Batch::take_credit`](crate::Batch::take_credit) to keep the budget charged for the data
/// after the batch is gone (while it is encoded, queued and exported, say), and drop it when
/// the data is gone. Split it when the data splits, merge credits when data merges, resize it
/// when the data changes size.
///
/// ```
/// use spanflow_batch::Budget;
///
/// let budget = Budget::new(1000);
/// let mut credit = budget.try_take(10, 800).expect("room");
/// let half = credit.split_off(5, 400);
/// assert_eq!((credit.items(), credit.bytes()), (5, 400));
/// credit.resize_bytes(100); // the data shrank: 300 bytes come back at once
/// assert_eq!(budget.used_bytes(), 500);
/// credit.absorb(half);
/// assert_eq!((credit.items(), credit.bytes()), (10, 500));
/// drop(credit);
/// assert_eq!(budget.used_bytes(), 0);
/// ```
#[must_use = "dropping a credit returns it to the budget at once"]
pub struct Credit {
    budget: Arc<Budget>,
    items: u64,
    bytes: u64,
}

impl Credit {
    /// Wraps credits already taken from `budget`.
    pub(crate) fn new(budget: Arc<Budget>, items: u64, bytes: u64) -> Self {
        Self {
            budget,
            items,
            bytes,
        }
    }

    /// Items held.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items == 0 && self.bytes == 0
    }

    /// The budget it belongs to.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Makes it hold `bytes` bytes: shrinking returns the difference at once (waking blocked
    /// producers), growing takes more whether or not the budget has room (see
    /// [`Budget::force_take`]).
    pub fn resize_bytes(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.give(0, self.bytes - bytes);
        } else {
            self.budget.commit(0, bytes - self.bytes);
        }
        self.bytes = bytes;
    }

    /// Merges `other` into this credit. Both should belong to the same budget; if they do not
    /// (a bug the debug build reports), `other` is returned to its budget and as much is taken
    /// from this one, so both budgets stay exact.
    pub fn absorb(&mut self, mut other: Credit) {
        let (items, bytes) = (other.items, other.bytes);
        let same = Arc::ptr_eq(&self.budget, &other.budget);
        debug_assert!(same, "absorbed a credit of another budget");
        if same {
            other.items = 0;
            other.bytes = 0;
        } else {
            self.budget.commit(items, bytes);
            drop(other);
        }
        self.items += items;
        self.bytes += bytes;
    }

    /// Splits off a credit of `items` items and `bytes` bytes (at most what this one holds),
    /// leaving the rest here.
    pub fn split_off(&mut self, items: u64, bytes: u64) -> Credit {
        let items = items.min(self.items);
        let bytes = bytes.min(self.bytes);
        self.items -= items;
        self.bytes -= bytes;
        Credit::new(Arc::clone(&self.budget), items, bytes)
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        self.budget.give(self.items, self.bytes);
    }
}

impl fmt::Debug for Credit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credit")
            .field("items", &self.items)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn take_from_takes_up_to_want_but_at_least_need() {
        let taken = AtomicU64::new(0);
        assert_eq!(take_from(&taken, 10, 1, 4), Some(4));
        assert_eq!(take_from(&taken, 10, 2, 1), Some(2));
        assert_eq!(take_from(&taken, 10, 5, 64), None);
        // Beyond `need`, at most half of what is free.
        assert_eq!(take_from(&taken, 10, 3, 64), Some(3));
        assert_eq!(taken.load(Ordering::Relaxed), 9);
        assert_eq!(take_from(&taken, 10, 1, 64), Some(1));
        assert_eq!(take_from(&taken, 10, 1, 1), None);
        assert_eq!(take_from(&taken, 10, 0, 1), Some(0));
    }

    #[test]
    fn a_dropped_credit_returns_exactly_what_it_holds() {
        let budget = Budget::with_items(10, 100);
        let mut a = budget.try_take(4, 40).expect("room");
        let b = a.split_off(1, 70);
        assert_eq!((a.items(), a.bytes(), b.items(), b.bytes()), (3, 0, 1, 40));
        assert!(budget.try_take(7, 61).is_none(), "nothing came back yet");
        drop(b);
        assert_eq!((budget.used_items(), budget.used_bytes()), (3, 0));
        drop(a);
        assert_eq!((budget.used_items(), budget.used_bytes()), (0, 0));
        assert_eq!(budget.peak_used_bytes(), 40);
    }

    #[test]
    fn growing_and_forcing_over_commit_until_credits_come_back() {
        let budget = Budget::new(100);
        let mut credit = budget.try_take(1, 80).expect("room");
        credit.resize_bytes(150);
        assert_eq!(budget.used_bytes(), 150);
        assert!(budget.try_take(0, 1).is_none(), "over-committed: full");
        let forced = budget.force_take(2, 10);
        assert_eq!((budget.used_items(), budget.used_bytes()), (3, 160));
        assert_eq!(budget.peak_used_bytes(), 160);
        credit.resize_bytes(20);
        assert!(budget.try_take(0, 70).is_some());
        drop((credit, forced));
        assert_eq!(budget.used_bytes(), 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "another budget")]
    fn absorbing_a_credit_of_another_budget_is_reported_in_debug_builds() {
        let (one, two) = (Budget::new(100), Budget::new(100));
        let mut credit = one.try_take(1, 10).expect("room");
        credit.absorb(two.try_take(1, 30).expect("room"));
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn absorbing_a_credit_of_another_budget_keeps_both_exact() {
        let (one, two) = (Budget::new(100), Budget::new(100));
        let mut credit = one.try_take(1, 10).expect("room");
        credit.absorb(two.try_take(1, 30).expect("room"));
        assert_eq!((one.used_bytes(), two.used_bytes()), (40, 0));
        drop(credit);
        assert_eq!(one.used_bytes(), 0);
    }

    #[test]
    fn credits_and_budgets_are_send_and_sync() {
        fn check<T: Send + Sync + fmt::Debug>() {}
        check::<Credit>();
        check::<Budget>();
    }
}
