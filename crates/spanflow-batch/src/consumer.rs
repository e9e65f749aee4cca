//! The consumer side: gathering shards into open batches, cutting them, and the receiver.

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{Batch, CutReason};
use crate::clock::now_nanos;
use crate::config::{Config, DropSite};
use crate::error::{RecvTimeoutError, TryRecvError};
use crate::intake::{AWAKE, Shared};
use crate::stats::Stats;
use crate::sync::Ordering;

/// `amount * part / whole`, rounded down, or an even `amount / parts` when `whole` is 0; the
/// results over all parts never add up to more than `amount`.
fn split(amount: u64, part: u64, whole: u64, parts: u64) -> u64 {
    if whole == 0 {
        return amount / parts.max(1);
    }
    let share = u128::from(amount) * u128::from(part) / u128::from(whole);
    // `part <= whole`, so the share fits in a u64.
    u64::try_from(share).unwrap_or(amount)
}

/// Drops every finished item that waits for producers, parked in the pool or held by a shard
/// (on the calling thread).
fn drop_spent<T: Send>(shared: &Shared<T>) {
    shared.pool.drop_spent();
    for shard in shared.shards.iter() {
        // Taken under the lock, dropped after it: an item's `Drop` is the user's code.
        let spent = mem::take(&mut shard.lock().spent);
        shared.pool.give(spent);
    }
}

/// How long the consumer stays idle before it drops the items that wait for producers
/// ([`DropSite::Producers`](crate::DropSite::Producers)) itself.
const SPENT_IDLE_NANOS: u64 = 1_000_000_000;

/// A batch being filled. Only the last open batch is ever unsealed.
struct OpenBatch<T> {
    items: VecDeque<T>,
    bytes: u64,
    /// Upper bound on the age origin of its oldest item.
    first_at: u64,
    sealed: Option<CutReason>,
}

/// Everything the consumer owns, behind one lock that producers take only on slow paths
/// (`DropOldest` eviction) and that flush, shutdown and stats take briefly.
pub(crate) struct Collector<T> {
    /// Items gathered from the shards, in batches, oldest first.
    open: VecDeque<OpenBatch<T>>,
    /// Swapped with a shard's vectors to gather it without copying under the shard's lock.
    spare_items: Vec<T>,
    spare_weights: Vec<u64>,
    pub(crate) pending_items: u64,
    pending_bytes: u64,
    /// Items that have left the queue (emitted or dropped) so far; flush targets count in it.
    pub(crate) retired: u64,
    emitted: u64,
    batches: u64,
    dropped_oldest: u64,
    dropped_disconnected: u64,
    /// Everything up to this `retired` count is cut with reason `Flush` as soon as possible.
    pub(crate) flush_target: u64,
    /// Threads waiting on `Shared::progress`.
    pub(crate) waiters: usize,
    /// The batcher is closed and everything accepted has left the queue.
    pub(crate) drained: bool,
    /// Clock time at which an idle consumer drops the items still waiting for producers
    /// (`DropSite::Producers`); `None` while busy or when nothing waits.
    sweep_at: Option<u64>,
    receiver_gone: bool,
    /// Items and bytes gathered from each shard since the consumer last slept: how the next
    /// quiet shares are split.
    delivered: Vec<(u64, u64)>,
    /// The quiet shares of the last `arm`, kept to reuse the allocation.
    shares: Vec<(usize, u64)>,
}

impl<T: Send> Collector<T> {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            open: VecDeque::new(),
            spare_items: Vec::new(),
            spare_weights: Vec::new(),
            pending_items: 0,
            pending_bytes: 0,
            retired: 0,
            emitted: 0,
            batches: 0,
            dropped_oldest: 0,
            dropped_disconnected: 0,
            flush_target: 0,
            waiters: 0,
            drained: false,
            sweep_at: None,
            receiver_gone: false,
            delivered: vec![(0, 0); shards],
            shares: Vec::with_capacity(shards),
        }
    }

    /// Moves every shard's items into the open batches; returns how many were moved.
    pub(crate) fn collect(&mut self, shared: &Shared<T>) -> u64 {
        self.gather(shared, None)
    }

    /// The consumer's last look before it sleeps: like [`collect`](Self::collect), and it also
    /// leaves each shard its quiet share (see [`quiet_shares`](Self::quiet_shares)), under the
    /// same lock. If this gathers nothing, a send that takes a shard past its share may be what
    /// completes the open batch, and wakes the consumer; no send short of that can complete it.
    /// Returns how many items were moved (then the consumer looks again instead of sleeping).
    pub(crate) fn arm(&mut self, shared: &Shared<T>) -> u64 {
        let mut shares = mem::take(&mut self.shares);
        self.quiet_shares(&shared.config, &mut shares);
        let gathered = self.gather(shared, Some(&shares));
        self.shares = shares;
        if gathered == 0 {
            // A new round: the next shares follow what each shard sends from now on.
            self.delivered.fill((0, 0));
        }
        gathered
    }

    fn gather(&mut self, shared: &Shared<T>, shares: Option<&[(usize, u64)]>) -> u64 {
        let mut gathered = 0;
        for (index, shard) in shared.shards.iter().enumerate() {
            let (first_at, bytes) = {
                let mut s = shard.lock();
                if let Some(&(items, bytes)) = shares.and_then(|shares| shares.get(index)) {
                    s.quiet_items = items;
                    s.quiet_bytes = bytes;
                }
                if s.items.is_empty() {
                    continue;
                }
                mem::swap(&mut s.items, &mut self.spare_items);
                mem::swap(&mut s.weights, &mut self.spare_weights);
                (s.first_at, mem::take(&mut s.bytes))
            };
            let n = self.spare_items.len() as u64;
            if let Some(delivered) = self.delivered.get_mut(index) {
                delivered.0 += n;
                delivered.1 += bytes;
            }
            gathered += n;
            self.absorb(shared, first_at, bytes);
        }
        if self.receiver_gone {
            self.discard_all(shared);
        }
        gathered
    }

    /// Items and bytes that complete the open batch: the unsealed last one, or a fresh one.
    /// (When the consumer sleeps, every earlier batch is sealed and so already cut.)
    fn needed(&self, config: &Config<T>) -> (u64, u64) {
        let max_items = config.max_items as u64;
        match self.open.back() {
            Some(b) if b.sealed.is_none() => (
                max_items.saturating_sub(b.items.len() as u64).max(1),
                config.max_bytes.saturating_sub(b.bytes).max(1),
            ),
            _ => (max_items, config.max_bytes),
        }
    }

    /// Splits what the shards may hold without waking a sleeping consumer: at most one item
    /// (and one byte) short of what completes the open batch, all shards together, so if every
    /// shard stays within its share the open batch is not complete. Whatever the split, a
    /// completed batch always takes some shard past its share, and that send wakes the
    /// consumer: no wake-up is missed, and no counter is shared between producers.
    ///
    /// The split follows what each shard delivered since the last one, so a steady load wakes
    /// the consumer about when the batch is complete; with no history it is even. A shard that
    /// sends more than its share wakes the consumer early (a spurious wake-up: it gathers, finds
    /// the batch still open, and splits again by the new history).
    fn quiet_shares(&self, config: &Config<T>, shares: &mut Vec<(usize, u64)>) {
        let (items, bytes) = self.needed(config);
        let spare_items = items - 1;
        let spare_bytes = bytes - 1;
        let shards = self.delivered.len() as u64;
        let (total_items, total_bytes) = self
            .delivered
            .iter()
            .fold((0u64, 0u64), |(i, b), d| (i + d.0, b + d.1));
        shares.clear();
        shares.extend(
            self.delivered
                .iter()
                .map(|&(delivered_items, delivered_bytes)| {
                    let items = split(spare_items, delivered_items, total_items, shards);
                    let bytes = split(spare_bytes, delivered_bytes, total_bytes, shards);
                    (usize::try_from(items).unwrap_or(usize::MAX), bytes)
                }),
        );
    }

    /// Appends `spare_items` to the open batches, sealing each as it fills.
    fn absorb(&mut self, shared: &Shared<T>, first_at: u64, bytes: u64) {
        let config = &shared.config;
        let n = self.spare_items.len();
        self.pending_items += n as u64;
        self.pending_bytes += bytes;
        let weighted = config.weighted();
        let weights = &self.spare_weights;
        let mut drain = self.spare_items.drain(..);
        let mut i = 0;
        while i < n {
            if self.open.back().is_none_or(|b| b.sealed.is_some()) {
                self.open.push_back(OpenBatch {
                    items: VecDeque::from(shared.pool.take(config.max_items)),
                    bytes: 0,
                    first_at,
                    sealed: None,
                });
            }
            let Some(back) = self.open.back_mut() else {
                break;
            };
            let room = config.max_items.saturating_sub(back.items.len());
            let take = if weighted {
                let mut total = back.bytes;
                let mut k = 0;
                while k < room && i + k < n {
                    let w = weights.get(i + k).copied().unwrap_or(0);
                    // An item heavier than max_bytes still travels, alone.
                    if back.items.len() + k > 0
                        && (total >= config.max_bytes || total.saturating_add(w) > config.max_bytes)
                    {
                        break;
                    }
                    total += w;
                    k += 1;
                }
                back.bytes = total;
                k
            } else {
                room.min(n - i)
            };
            if take > 0 {
                back.first_at = if back.items.is_empty() {
                    first_at
                } else {
                    back.first_at.min(first_at)
                };
            }
            back.items.extend(drain.by_ref().take(take));
            i += take;
            if back.items.len() >= config.max_items {
                back.sealed = Some(CutReason::Count);
            } else if back.bytes >= config.max_bytes || i < n {
                // Either full by weight, or the next item did not fit.
                back.sealed = Some(CutReason::Bytes);
            }
        }
        drop(drain);
        self.spare_weights.clear();
    }

    /// The front batch, if one is due at `now`.
    fn cut(&mut self, shared: &Shared<T>, now: u64, closed: bool) -> Option<Batch<T>> {
        let front = self.open.front()?;
        let reason = match front.sealed {
            Some(reason) => reason,
            None if now >= front.first_at.saturating_add(shared.config.max_age) => CutReason::Age,
            None if self.flush_target > self.retired => CutReason::Flush,
            None if closed => CutReason::Shutdown,
            None => return None,
        };
        let batch = self.open.pop_front()?;
        let n = batch.items.len() as u64;
        self.pending_items -= n;
        self.pending_bytes -= batch.bytes;
        self.retired += n;
        self.emitted += n;
        self.batches += 1;
        // The items' credits leave the queue with them: they come back when the batch (or the
        // credit taken from it) is dropped.
        Some(Batch::new(
            Vec::from(batch.items),
            batch.bytes,
            Duration::from_nanos(now.saturating_sub(batch.first_at)),
            reason,
            Arc::clone(&shared.pool),
            shared.credit(n, batch.bytes),
        ))
    }

    /// Clock time at which the front batch becomes due by age (`u64::MAX`: nothing queued).
    fn next_deadline(&self, max_age: u64) -> u64 {
        self.open
            .front()
            .map_or(u64::MAX, |b| b.first_at.saturating_add(max_age))
    }

    /// `DropOldest`: evicts the front (oldest) item; returns whether there was one.
    pub(crate) fn evict_front(&mut self, shared: &Shared<T>) -> bool {
        let Some(front) = self.open.front_mut() else {
            return false;
        };
        let Some(item) = front.items.pop_front() else {
            return false;
        };
        let w = shared.config.weight_of(&item);
        front.bytes = front.bytes.saturating_sub(w);
        if front.items.is_empty()
            && let Some(empty) = self.open.pop_front()
        {
            shared.pool.give(Vec::from(empty.items));
        }
        tracing::trace!("budget full, dropped the oldest item");
        self.pending_items -= 1;
        self.pending_bytes = self.pending_bytes.saturating_sub(w);
        self.retired += 1;
        self.dropped_oldest += 1;
        shared.give_credit(1, w);
        if self.waiters > 0 {
            shared.progress.notify_all();
        }
        drop(item);
        true
    }

    /// Nothing is queued: with `DropSite::Producers`, items that producers have not dropped are
    /// given one idle second, then dropped here. Returns until when to sleep.
    fn idle(&mut self, shared: &Shared<T>, now: u64) -> u64 {
        if shared.config.drop_site != DropSite::Producers {
            return u64::MAX;
        }
        match self.sweep_at {
            Some(at) if now >= at => {
                self.sweep_at = None;
                drop_spent(shared);
                tracing::trace!("idle: dropped the items left for producers");
                u64::MAX
            }
            Some(at) => at,
            None => {
                let waiting = shared.pool.has_spent()
                    || shared.shards.iter().any(|s| !s.lock().spent.is_empty());
                if waiting {
                    let at = now.saturating_add(SPENT_IDLE_NANOS);
                    self.sweep_at = Some(at);
                    at
                } else {
                    u64::MAX
                }
            }
        }
    }

    /// Drops everything queued (the receiver is gone), counting it.
    fn discard_all(&mut self, shared: &Shared<T>) {
        let n = self.pending_items;
        if n > 0 {
            tracing::debug!(dropped = n, "receiver dropped, discarding queued items");
        }
        let bytes = mem::take(&mut self.pending_bytes);
        self.open.clear();
        self.pending_items = 0;
        self.retired += n;
        self.dropped_disconnected += n;
        shared.give_credit(n, bytes);
    }

    /// Items and bytes gathered and not yet emitted or dropped.
    pub(crate) fn queued(&self) -> (u64, u64) {
        (self.pending_items, self.pending_bytes)
    }

    pub(crate) fn add_to(&self, stats: &mut Stats) {
        stats.emitted = self.emitted;
        stats.batches = self.batches;
        stats.dropped_by_reason.oldest = self.dropped_oldest;
        stats.dropped_by_reason.disconnected = self.dropped_disconnected;
        stats.queued += self.pending_items;
        stats.queued_bytes += self.pending_bytes;
    }
}

pub(crate) enum Step<T: Send> {
    Ready(Batch<T>),
    End,
    /// Nothing is due before this clock time (`u64::MAX`: until woken).
    Wait(u64),
}

/// The consumer: yields [`Batch`]es as they become due.
///
/// There is exactly one; it is not `Clone`. As an [`Iterator`] it blocks for the next batch and
/// ends once the batcher is closed (by [`Batcher::shutdown`](crate::Batcher::shutdown),
/// [`Batcher::close`](crate::Batcher::close) or dropping every handle) and everything queued has
/// been emitted. With the `tokio` feature, [`into_stream`](Self::into_stream) gives a `Stream`.
/// Dropping the receiver closes the batcher and counts what was queued as
/// `dropped_by_reason.disconnected`.
///
/// ```
/// use spanflow_batch::{Batcher, CutReason, TryRecvError};
///
/// let (batcher, mut receiver) = Batcher::<u32>::builder().max_items(4).build()?;
/// for i in 0..6 {
///     batcher.send(i)?;
/// }
/// let batch = receiver.try_recv()?;
/// assert_eq!((batch.len(), batch.reason()), (4, CutReason::Count));
/// assert_eq!(receiver.try_recv().err(), Some(TryRecvError::Empty)); // 2 items, not yet due
/// batcher.close();
/// let rest = receiver.try_recv()?;
/// assert_eq!((&rest[..], rest.reason()), (&[4, 5][..], CutReason::Shutdown));
/// assert_eq!(receiver.try_recv().err(), Some(TryRecvError::Closed));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Receiver<T: Send> {
    pub(crate) shared: Arc<Shared<T>>,
}

impl<T: Send> Receiver<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>) -> Self {
        Self { shared }
    }

    /// One look at the queue: gather, cut if due, otherwise say until when to sleep.
    pub(crate) fn step(&mut self) -> Step<T> {
        let shared = &*self.shared;
        let mut collector = shared.collector.lock();
        loop {
            // Relaxed: producers read it under a shard lock; the collect below takes every
            // shard lock after this store.
            shared.sleep_until.store(AWAKE, Ordering::Relaxed);
            // Read before gathering: once closed, this gathering sees every accepted item.
            let closed = shared.is_closed();
            collector.collect(shared);
            let now = now_nanos(&*shared.config.clock);
            if let Some(batch) = collector.cut(shared, now, closed) {
                collector.sweep_at = None;
                if closed && collector.pending_items == 0 {
                    collector.drained = true;
                }
                if collector.waiters > 0 {
                    shared.progress.notify_all();
                }
                return Step::Ready(batch);
            }
            if closed {
                if shared.config.drop_site == DropSite::Producers {
                    shared.pool.stop_parking();
                    drop_spent(shared);
                }
                collector.drained = true;
                if collector.waiters > 0 {
                    shared.progress.notify_all();
                }
                return Step::End;
            }
            let deadline = collector.next_deadline(shared.config.max_age);
            // Relaxed: published to producers by the shard locks the `arm` below takes; a
            // producer that pushes after that look sees it, and its shard's quiet share, and
            // wakes us if needed.
            shared.sleep_until.store(deadline, Ordering::Relaxed);
            if collector.arm(shared) == 0 && !shared.is_closed() {
                if deadline != u64::MAX {
                    collector.sweep_at = None;
                    return Step::Wait(deadline);
                }
                // `sleep_until` stays "forever": the first new item still wakes us.
                return Step::Wait(collector.idle(shared, now));
            }
        }
    }

    fn wait_signal(&self, deadline: u64, limit: Option<Instant>) {
        let clock_wait = (deadline != u64::MAX).then(|| {
            let now = now_nanos(&*self.shared.config.clock);
            Instant::now() + Duration::from_nanos(deadline.saturating_sub(now))
        });
        let until = match (clock_wait, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.shared.signal.wait(until);
    }

    /// Blocks until a batch is due and returns it; `None` once the batcher is closed and
    /// everything has been emitted.
    pub fn recv(&mut self) -> Option<Batch<T>> {
        loop {
            match self.step() {
                Step::Ready(batch) => return Some(batch),
                Step::End => return None,
                Step::Wait(deadline) => self.wait_signal(deadline, None),
            }
        }
    }

    /// [`recv`](Self::recv), waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Batch<T>, RecvTimeoutError> {
        let limit = Instant::now() + timeout;
        loop {
            match self.step() {
                Step::Ready(batch) => return Ok(batch),
                Step::End => return Err(RecvTimeoutError::Closed),
                Step::Wait(deadline) => {
                    if Instant::now() >= limit {
                        self.shared.sleep_until.store(AWAKE, Ordering::Relaxed);
                        return Err(RecvTimeoutError::Timeout);
                    }
                    self.wait_signal(deadline, Some(limit));
                }
            }
        }
    }

    /// The next batch if one is due now (by the configured clock), without blocking.
    pub fn try_recv(&mut self) -> Result<Batch<T>, TryRecvError> {
        match self.step() {
            Step::Ready(batch) => Ok(batch),
            Step::End => Err(TryRecvError::Closed),
            Step::Wait(_) => {
                // Nobody sleeps, so producers need not try to wake us.
                // Relaxed: a hint; the next step stores it again before looking.
                self.shared.sleep_until.store(AWAKE, Ordering::Relaxed);
                Err(TryRecvError::Empty)
            }
        }
    }

    /// A consistent snapshot of the accounting (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let collector = self.shared.collector.lock();
        self.shared.stats_locked(&collector)
    }

    /// This receiver as an async `Stream` of batches (needs a tokio runtime with time enabled).
    #[cfg(feature = "tokio")]
    pub fn into_stream(self) -> crate::stream::BatchStream<T> {
        crate::stream::BatchStream::new(self)
    }
}

impl<T: Send> Iterator for Receiver<T> {
    type Item = Batch<T>;

    fn next(&mut self) -> Option<Batch<T>> {
        self.recv()
    }
}

impl<T: Send> Drop for Receiver<T> {
    fn drop(&mut self) {
        let shared = &*self.shared;
        shared.close();
        let mut collector = shared.collector.lock();
        collector.receiver_gone = true;
        collector.collect(shared);
        collector.discard_all(shared);
        collector.drained = true;
        shared.progress.notify_all();
    }
}

impl<T: Send> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::split;
    use crate::{Batcher, CutReason, ManualClock};

    #[test]
    fn split_never_hands_out_more_than_the_amount() {
        for amount in [0, 1, 7, 511, u64::MAX - 1] {
            for parts in [[3, 0, 5], [0, 0, 0], [1, 1, 1], [u64::MAX / 4, 1, 9]] {
                let whole: u64 = parts.iter().sum();
                let total: u128 = parts
                    .iter()
                    .map(|&p| u128::from(split(amount, p, whole, 3)))
                    .sum();
                assert!(total <= u128::from(amount), "{amount} {parts:?}");
            }
        }
        assert_eq!(split(10, 1, 0, 4), 2, "no history: an even split");
        assert_eq!(
            split(99, 3, 4, 4),
            74,
            "in proportion to what each delivered"
        );
    }

    #[test]
    fn quiet_shares_leave_the_open_batch_one_short() {
        // No budget: the items below are put in the shards by hand, without credits.
        let (_tx, rx) = Batcher::<u32>::builder()
            .max_items(10)
            .budget_items(None)
            .shards(4)
            .clock(ManualClock::new())
            .build()
            .expect("valid");
        let shared = &rx.shared;
        let mut collector = shared.collector.lock();
        // Shard 0 delivered three items, shard 2 one: four of ten are in the open batch.
        for (shard, n) in [(0, 3), (2, 1)] {
            let mut s = shared.shards[shard].lock();
            s.items.extend(std::iter::repeat_n(7, n));
            s.accepted += n as u64;
        }
        assert_eq!(collector.collect(shared), 4);
        assert_eq!(collector.arm(shared), 0);
        let shares: Vec<usize> = shared.shards.iter().map(|s| s.lock().quiet_items).collect();
        // Six more complete the batch: the shards may hold five together, split 3:0:1:0.
        assert_eq!(shares, [3, 0, 1, 0]);
        assert!(shares.iter().sum::<usize>() < 6);
    }

    #[test]
    fn absorb_seals_every_full_batch_and_keeps_one_open() {
        let (tx, rx) = Batcher::<u32>::builder()
            .max_items(4)
            .clock(ManualClock::new())
            .build()
            .expect("valid");
        for i in 0..10 {
            tx.send(i).expect("room");
        }
        let shared = &rx.shared;
        let mut collector = shared.collector.lock();
        assert_eq!(collector.collect(shared), 10);
        let shape: Vec<_> = collector
            .open
            .iter()
            .map(|b| (b.items.len(), b.sealed))
            .collect();
        assert_eq!(
            shape,
            [
                (4, Some(CutReason::Count)),
                (4, Some(CutReason::Count)),
                (2, None)
            ]
        );
        assert_eq!(collector.pending_items, 10);
    }

    #[test]
    fn evict_front_removes_the_oldest_and_empties_batches() {
        let (tx, rx) = Batcher::<u32>::builder()
            .max_items(2)
            .clock(ManualClock::new())
            .build()
            .expect("valid");
        for i in 0..3 {
            tx.send(i).expect("room");
        }
        let shared = &rx.shared;
        let mut collector = shared.collector.lock();
        collector.collect(shared);
        assert!(collector.evict_front(shared));
        assert!(collector.evict_front(shared));
        assert_eq!(collector.open.len(), 1, "the emptied front batch is gone");
        assert_eq!(collector.open[0].items.front(), Some(&2));
        assert_eq!((collector.retired, collector.dropped_oldest), (2, 2));
    }
}
