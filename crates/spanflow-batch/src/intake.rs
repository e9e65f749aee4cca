//! The producer side: sharded intake, the budget's credit leases, backpressure, flush, shutdown.
//!
//! Each thread sends into one shard (a `parking_lot::Mutex<Vec<T>>` on its own cache line),
//! chosen round-robin when the thread first sends, so producers on different threads do not
//! share a lock or a written cache line on the hot path. The consumer swaps a shard's vector out
//! under that shard's lock. The budget is a pool of credits; a shard leases credits in small
//! chunks, so a send touches the global pool once per chunk, not once per item.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::batch::Pool;
use crate::budget::{Budget, Credit, Leases};
use crate::clock::now_nanos;
use crate::config::{Config, DropSite, Policy};
use crate::consumer::Collector;
use crate::error::{SendError, Timeout, TrySendError};
use crate::prefetch;
use crate::signal::Signal;
use crate::stats::{Refused, Stats};
use crate::sync::{self, AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering};
use crate::{BatcherBuilder, Receiver};

/// `sleep_until` value meaning "the consumer is awake and will look at every shard before it
/// sleeps again", so producers need not wake it.
pub(crate) const AWAKE: u64 = 0;

/// One producer shard. Every counter here changes only under the shard's lock, which is what
/// makes a stats snapshot consistent.
pub(crate) struct Shard<T> {
    pub(crate) items: Vec<T>,
    /// `DropSite::Producers`: items of finished batches, one dropped by each send.
    pub(crate) spent: Vec<T>,
    /// Weights of `items`, index for index; empty when no weigher is configured.
    pub(crate) weights: Vec<u64>,
    pub(crate) bytes: u64,
    /// Clock reading when `items` last went from empty to non-empty.
    pub(crate) first_at: u64,
    credit_items: u64,
    credit_bytes: u64,
    /// While the consumer sleeps, a send that leaves `items` holding more than `quiet_items`
    /// items, or `bytes` more than `quiet_bytes`, wakes it. The consumer sets both in its last
    /// look before sleeping (`Collector::arm`), so that together the shards' quiet shares stay
    /// short of completing its open batch.
    pub(crate) quiet_items: usize,
    pub(crate) quiet_bytes: u64,
    pub(crate) accepted: u64,
    pub(crate) dropped_newest: u64,
}

impl<T> Shard<T> {
    fn new() -> Self {
        Self {
            items: Vec::new(),
            spent: Vec::new(),
            weights: Vec::new(),
            bytes: 0,
            first_at: 0,
            credit_items: 0,
            credit_bytes: 0,
            quiet_items: 0,
            quiet_bytes: 0,
            accepted: 0,
            dropped_newest: 0,
        }
    }
}

#[derive(Default)]
struct RefusedCounters {
    full: AtomicU64,
    closed: AtomicU64,
    timeout: AtomicU64,
    too_large: AtomicU64,
}

impl RefusedCounters {
    fn bump(counter: &AtomicU64) {
        // Relaxed: a monotone counter read only for reporting.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Refused {
        Refused {
            full: self.full.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            timeout: self.timeout.load(Ordering::Relaxed),
            too_large: self.too_large.load(Ordering::Relaxed),
        }
    }
}

/// State shared by every handle, the receiver and the batches' pool.
pub(crate) struct Shared<T: Send> {
    pub(crate) config: Config<T>,
    pub(crate) shards: Box<[CachePadded<Mutex<Shard<T>>>]>,
    shard_mask: usize,
    /// Set once by `close`; read under a shard lock by producers.
    pub(crate) closed: AtomicBool,
    /// The memory budget, possibly shared with other batchers. Credits for queued items are
    /// held here (in the shards' and the collector's counts); a cut batch carries its own.
    pub(crate) budget: Arc<Budget>,
    /// Clock time the consumer sleeps until (`u64::MAX`: indefinitely, `AWAKE`: not sleeping).
    pub(crate) sleep_until: CachePadded<AtomicU64>,
    pub(crate) signal: Signal,
    pub(crate) collector: Mutex<Collector<T>>,
    /// Notified (with `collector` held) when items leave the queue or the batcher drains.
    pub(crate) progress: Condvar,
    pub(crate) pool: Arc<Pool<T>>,
    handles: AtomicUsize,
    refused: RefusedCounters,
}

pub(crate) fn new_pair<T: Send + 'static>(
    config: Config<T>,
    shards: usize,
    budget: Arc<Budget>,
) -> (Batcher<T>, Receiver<T>) {
    let pool = Arc::new(Pool::new(config.pool_capacity, config.drop_site));
    let shared = Arc::new(Shared {
        shards: (0..shards)
            .map(|_| CachePadded::new(Mutex::new(Shard::new())))
            .collect(),
        shard_mask: shards - 1,
        closed: AtomicBool::new(false),
        budget,
        sleep_until: CachePadded::new(AtomicU64::new(AWAKE)),
        signal: Signal::default(),
        collector: Mutex::new(Collector::new(shards)),
        progress: Condvar::new(),
        pool,
        handles: AtomicUsize::new(1),
        refused: RefusedCounters::default(),
        config,
    });
    if shared.config.budgeted {
        let holder: Weak<dyn Leases> = Arc::downgrade(&shared) as Weak<Shared<T>>;
        shared.budget.register(holder);
    }
    (
        Batcher {
            shared: Arc::clone(&shared),
            pinned: None,
        },
        Receiver::new(shared),
    )
}

enum Reject<T> {
    Closed(T),
    Full(T),
}

impl<T: Send> Shared<T> {
    fn shard_index(&self, pinned: Option<usize>) -> usize {
        let slot = pinned.unwrap_or_else(sync::thread_slot);
        slot & self.shard_mask
    }

    /// Credits the shard's lease so it covers one more item of weight `w`.
    /// `exact`: lease only what is needed (used when the pool is nearly empty).
    /// Returns `(leased, owe_wakeup)`; the caller holds the shard lock, so it must wake blocked
    /// producers (which takes `room`) only after releasing it, to keep the lock order
    /// `room` → shard.
    fn lease(&self, shard: &mut Shard<T>, w: u64, exact: bool) -> (bool, bool) {
        let need_items = u64::from(shard.credit_items == 0);
        let need_bytes = w.saturating_sub(shard.credit_bytes);
        let (want_items, want_bytes) = if exact {
            (need_items, need_bytes)
        } else {
            (
                if need_items > 0 {
                    self.config.lease_items
                } else {
                    0
                },
                if need_bytes > 0 {
                    need_bytes.max(self.config.lease_bytes)
                } else {
                    0
                },
            )
        };
        match self
            .budget
            .take(need_items, want_items, need_bytes, want_bytes)
        {
            Ok((items, bytes)) => {
                shard.credit_items += items;
                shard.credit_bytes += bytes;
                (true, false)
            }
            Err(owe_wakeup) => (false, owe_wakeup),
        }
    }

    /// Returns credits for items that left the batcher (dropped) and wakes producers blocked on
    /// the budget. Must not be called with a shard lock or `room` held.
    pub(crate) fn give_credit(&self, items: u64, bytes: u64) {
        if self.config.budgeted {
            self.budget.give(items, bytes);
        }
    }

    /// The credit for a batch of `items` items weighing `bytes`, cut from the queue.
    pub(crate) fn credit(&self, items: u64, bytes: u64) -> Credit {
        let (items, bytes) = if self.config.budgeted {
            (items, bytes)
        } else {
            (0, 0)
        };
        Credit::new(Arc::clone(&self.budget), items, bytes)
    }

    /// Moves the unused leases of every batcher on the budget back to it. `notify == false`
    /// when the caller holds `room`.
    fn reclaim(&self, notify: bool) {
        if self.config.budgeted {
            self.budget.reclaim_idle(notify);
        }
    }

    /// The hot path: one shard lock, no global write unless a lease or a report is due.
    fn push(
        &self,
        pinned: Option<usize>,
        item: T,
        w: u64,
        exact: bool,
        in_room: bool,
    ) -> Result<(), Reject<T>> {
        let config = &self.config;
        let mut wake = false;
        let mut owe_wakeup = false;
        // `DropSite::Producers`: a finished item to drop once the shard is unlocked, and an
        // emptied vector to return to the pool.
        let mut spent = None;
        let mut emptied = None;
        let result = 'locked: {
            let mut shard = self.shards[self.shard_index(pinned)].lock();
            // Relaxed: `close` stores before the consumer (or `close` itself) locks this shard
            // to drain it, so that lock orders the store before this load when it matters.
            if self.closed.load(Ordering::Relaxed) {
                break 'locked Err(Reject::Closed(item));
            }
            if config.budgeted {
                if shard.credit_items == 0 || shard.credit_bytes < w {
                    let (leased, owe) = self.lease(&mut shard, w, exact);
                    owe_wakeup = owe;
                    if !leased {
                        break 'locked Err(Reject::Full(item));
                    }
                }
                shard.credit_items -= 1;
                shard.credit_bytes -= w;
            }
            let was_empty = shard.items.is_empty();
            if shard.items.capacity() == 0 {
                // One allocation up front instead of a chain of doublings on the hot path;
                // afterwards the consumer swaps in vectors that keep their capacity.
                shard.items.reserve(config.max_items.min(4096));
            }
            shard.items.push(item);
            // Not while holding `room`: an item's `Drop` is the user's code.
            if config.drop_site == DropSite::Producers && !in_room {
                spent = shard.spent.pop();
                if spent.is_none()
                    && let Some(full) = self.pool.take_spent()
                {
                    emptied = Some(std::mem::replace(&mut shard.spent, full));
                    spent = shard.spent.pop();
                }
                // The item the third send from here drops, which the consumer wrote last (see
                // `prefetch`): the next send's alone would arrive too late to hide the transfer.
                if let Some(next) = shard.spent.len().checked_sub(3) {
                    prefetch::read(shard.spent.as_ptr().wrapping_add(next));
                }
            }
            if config.weighted() {
                shard.weights.push(w);
            }
            shard.bytes += w;
            shard.accepted += 1;
            // Relaxed: the consumer stores `sleep_until` before it locks the shards to look for
            // items, so the shard lock orders that store before this load when this item is one
            // the consumer did not see.
            let sleep_until = self.sleep_until.load(Ordering::Relaxed);
            if was_empty {
                let now = now_nanos(&*config.clock);
                shard.first_at = now;
                wake |= now.saturating_add(config.max_age) < sleep_until;
            }
            // Past its quiet share this shard may be what completes the consumer's open batch
            // (the shares of all shards add up to less than that batch still needs). The share
            // was set under this lock, in the same look that the `sleep_until` above pairs with.
            wake |= sleep_until != AWAKE
                && (shard.items.len() > shard.quiet_items || shard.bytes > shard.quiet_bytes);
            Ok(())
        };
        drop(spent);
        if let Some(v) = emptied {
            self.pool.give(v);
        }
        if wake {
            self.signal.notify();
        }
        // Inside `block` we hold `room`: every other blocked producer is asleep, none can have
        // judged the pool by the dip, so no wake-up is owed (and taking `room` would deadlock).
        if owe_wakeup && !in_room {
            self.budget.wake_blocked();
        }
        result
    }

    fn drop_newest(&self, pinned: Option<usize>, item: T) -> Result<(), SendError<T>> {
        {
            let mut shard = self.shards[self.shard_index(pinned)].lock();
            // Relaxed: as in `push`.
            if self.closed.load(Ordering::Relaxed) {
                drop(shard);
                RefusedCounters::bump(&self.refused.closed);
                return Err(SendError::Closed(item));
            }
            shard.accepted += 1;
            shard.dropped_newest += 1;
        }
        tracing::trace!("budget full, dropped the newest item");
        drop(item);
        Ok(())
    }

    /// `DropOldest`: under the consumer-side lock, gather every shard, then evict from the front
    /// of the queue one item at a time until the new item fits.
    fn drop_oldest(&self, pinned: Option<usize>, item: T, w: u64) -> Result<(), SendError<T>> {
        let result = self.evict_for(pinned, item, w);
        // The gathering moved items into the consumer's batches behind its back: a consumer
        // asleep since before it may hold quiet shares sized for a less full open batch, or a
        // batch that is now due. It must look again.
        self.signal.notify();
        result
    }

    fn evict_for(&self, pinned: Option<usize>, mut item: T, w: u64) -> Result<(), SendError<T>> {
        let mut collector = self.collector.lock();
        collector.collect(self);
        loop {
            match self.push(pinned, item, w, true, false) {
                Ok(()) => return Ok(()),
                Err(Reject::Closed(it)) => {
                    RefusedCounters::bump(&self.refused.closed);
                    return Err(SendError::Closed(it));
                }
                Err(Reject::Full(it)) => item = it,
            }
            if !collector.evict_front(self) {
                // Nothing left to evict: the budget is held by other threads' fresh leases.
                drop(collector);
                return self.drop_newest(pinned, item);
            }
        }
    }

    fn block(
        &self,
        pinned: Option<usize>,
        mut item: T,
        w: u64,
        timeout: Option<Duration>,
    ) -> Result<(), SendError<T>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // `room` counts the blocked producers; registering and re-checking the pool under it is
        // what makes `wake_blocked` unmissable.
        let mut room = self.budget.room();
        let room_cv = self.budget.room_cv();
        loop {
            *room += 1;
            self.reclaim(false);
            let attempt = self.push(pinned, item, w, true, true);
            let timed_out = match attempt {
                Ok(()) => {
                    *room -= 1;
                    // Reclaimed credits may let another waiter in too.
                    if *room > 0 {
                        room_cv.notify_all();
                    }
                    return Ok(());
                }
                Err(Reject::Closed(it)) => {
                    *room -= 1;
                    RefusedCounters::bump(&self.refused.closed);
                    return Err(SendError::Closed(it));
                }
                Err(Reject::Full(it)) => {
                    item = it;
                    // The consumer may be asleep with a late deadline; room comes from it.
                    self.signal.notify();
                    match deadline {
                        Some(d) => room_cv.wait_until(&mut room, d).timed_out(),
                        None => {
                            room_cv.wait(&mut room);
                            false
                        }
                    }
                }
            };
            *room -= 1;
            if timed_out {
                drop(room);
                self.reclaim(true);
                return match self.push(pinned, item, w, true, false) {
                    Ok(()) => Ok(()),
                    Err(Reject::Closed(it)) => {
                        RefusedCounters::bump(&self.refused.closed);
                        Err(SendError::Closed(it))
                    }
                    Err(Reject::Full(it)) => {
                        RefusedCounters::bump(&self.refused.timeout);
                        tracing::debug!("send timed out waiting for room in the budget");
                        Err(SendError::Timeout(it))
                    }
                };
            }
        }
    }

    fn too_large(&self, w: u64) -> bool {
        self.config.budgeted && w > self.budget.limit_bytes()
    }

    /// Closes intake; idempotent. Producers blocked on the budget and the consumer are woken.
    pub(crate) fn close(&self) {
        // Release: pairs with the consumer's Acquire load before its final gathering of the
        // shards, so a producer that locks a shard after that gathering sees `closed`.
        if !self.closed.swap(true, Ordering::AcqRel) {
            tracing::debug!("batcher closed");
        }
        self.signal.notify();
        // Under `room`: a producer of this batcher blocked on the budget either re-checks
        // `closed` after this or is already waiting. Producers of other batchers sharing the
        // budget wake too, re-check and sleep again.
        let _room = self.budget.room();
        self.budget.room_cv().notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        // Acquire: pairs with the Release in `close`.
        self.closed.load(Ordering::Acquire)
    }

    /// Snapshot under the consumer-side lock, each shard read under its own lock.
    pub(crate) fn stats_locked(&self, collector: &Collector<T>) -> Stats {
        let mut stats = Stats::default();
        for shard in self.shards.iter() {
            let s = shard.lock();
            stats.accepted += s.accepted;
            stats.dropped_by_reason.newest += s.dropped_newest;
            stats.queued += s.items.len() as u64;
            stats.queued_bytes += s.bytes;
        }
        collector.add_to(&mut stats);
        stats.refused = self.refused.snapshot();
        stats
    }

    /// Blocks until `done` holds for the collector, or `deadline` passes.
    fn wait_progress(
        &self,
        deadline: Option<Instant>,
        mut done: impl FnMut(&Collector<T>) -> bool,
    ) -> Result<(), Timeout> {
        let mut collector = self.collector.lock();
        collector.waiters += 1;
        let result = loop {
            if done(&collector) {
                break Ok(());
            }
            match deadline {
                Some(d) => {
                    if self.progress.wait_until(&mut collector, d).timed_out() && !done(&collector)
                    {
                        break Err(Timeout);
                    }
                }
                None => self.progress.wait(&mut collector),
            }
        };
        collector.waiters -= 1;
        result
    }

    fn flush(&self, deadline: Option<Instant>) -> Result<(), Timeout> {
        let target = {
            let mut collector = self.collector.lock();
            collector.collect(self);
            let target = collector.retired + collector.pending_items;
            if collector.retired >= target {
                return Ok(());
            }
            collector.flush_target = collector.flush_target.max(target);
            target
        };
        self.signal.notify();
        self.wait_progress(deadline, |c| c.retired >= target)
    }

    fn shutdown(&self, deadline: Option<Instant>) -> Result<Stats, Timeout> {
        self.close();
        self.wait_progress(deadline, |c| c.drained)?;
        let collector = self.collector.lock();
        Ok(self.stats_locked(&collector))
    }
}

impl<T: Send> Leases for Shared<T> {
    fn reclaim_leases(&self) -> (u64, u64) {
        let (mut items, mut bytes) = (0, 0);
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            items += std::mem::take(&mut s.credit_items);
            bytes += std::mem::take(&mut s.credit_bytes);
        }
        (items, bytes)
    }

    fn unused_leases(&self) -> (u64, u64) {
        let (mut items, mut bytes) = (0, 0);
        for shard in self.shards.iter() {
            let s = shard.lock();
            items += s.credit_items;
            bytes += s.credit_bytes;
        }
        (items, bytes)
    }
}

impl<T: Send> Drop for Shared<T> {
    /// A budget outlives the batchers that draw on it: what this one still holds goes back.
    /// That is its unused leases; a dropped receiver has already discarded the queued items and
    /// returned their credits, so the queue's part is normally zero.
    fn drop(&mut self) {
        if !self.config.budgeted {
            return;
        }
        let (mut items, mut bytes) = self.reclaim_leases();
        for shard in self.shards.iter() {
            let s = shard.lock();
            items += s.items.len() as u64;
            bytes += s.bytes;
        }
        let (queued_items, queued_bytes) = self.collector.lock().queued();
        self.budget.give(items + queued_items, bytes + queued_bytes);
    }
}

/// The producer handle, and the control handle for flush and shutdown.
///
/// Cheap to clone, `Send + Sync`; clone it into every producing thread (or share one by
/// reference). Each thread sends into its own intake shard, so sends from different threads do
/// not contend. When the last handle is dropped the batcher closes, and the receiver ends after
/// emitting what is queued.
///
/// Ordering: items sent from one thread are emitted in the order they were sent (per-thread
/// FIFO); items from different threads interleave in no promised order. A task that migrates
/// between threads may see its items reordered across the migration; use [`pinned`](Self::pinned)
/// for a handle that keeps FIFO order whatever thread sends.
///
/// ```
/// use spanflow_batch::{Batcher, CutReason};
/// use std::thread;
///
/// let (batcher, receiver) = Batcher::<u64>::builder().max_items(100).build()?;
/// let producers: Vec<_> = (0..2)
///     .map(|p| {
///         let batcher = batcher.clone();
///         thread::spawn(move || {
///             for i in 0..1000 {
///                 batcher.send(p * 1000 + i).expect("open");
///             }
///         })
///     })
///     .collect();
/// drop(batcher); // the receiver ends once every handle is gone and everything is emitted
/// let consumer = thread::spawn(move || receiver.map(|batch| batch.len()).sum::<usize>());
/// for p in producers {
///     p.join().expect("producer");
/// }
/// assert_eq!(consumer.join().expect("consumer"), 2000);
/// # Ok::<(), spanflow_batch::BatcherBuildError>(())
/// ```
pub struct Batcher<T: Send> {
    shared: Arc<Shared<T>>,
    pinned: Option<usize>,
}

impl<T: Send + 'static> Batcher<T> {
    /// A builder with the documented defaults.
    pub fn builder() -> BatcherBuilder<T> {
        BatcherBuilder::new()
    }
}

impl<T: Send> Batcher<T> {
    /// Hands `item` to the batcher. Never blocks unless the policy is [`Policy::Block`] and the
    /// budget is full. Under `DropNewest` / `DropOldest` a full budget drops an item (counted in
    /// [`Stats::dropped_by_reason`]) and this returns `Ok`.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let w = self.shared.config.weight_of(&item);
        let item = match self.shared.push(self.pinned, item, w, false, false) {
            Ok(()) => return Ok(()),
            Err(Reject::Closed(item)) => {
                RefusedCounters::bump(&self.shared.refused.closed);
                return Err(SendError::Closed(item));
            }
            Err(Reject::Full(item)) => item,
        };
        self.overflow(item, w)
    }

    #[cold]
    fn overflow(&self, item: T, w: u64) -> Result<(), SendError<T>> {
        let shared = &*self.shared;
        shared.signal.notify();
        let policy = shared.config.policy;
        if shared.too_large(w) {
            return match policy {
                Policy::Block { .. } => {
                    RefusedCounters::bump(&shared.refused.too_large);
                    Err(SendError::TooLarge(item))
                }
                Policy::DropNewest | Policy::DropOldest => shared.drop_newest(self.pinned, item),
            };
        }
        // Leases stranded in idle shards may be what fills the budget.
        shared.reclaim(true);
        let item = match shared.push(self.pinned, item, w, true, false) {
            Ok(()) => return Ok(()),
            Err(Reject::Closed(item)) => {
                RefusedCounters::bump(&shared.refused.closed);
                return Err(SendError::Closed(item));
            }
            Err(Reject::Full(item)) => item,
        };
        match policy {
            Policy::DropNewest => shared.drop_newest(self.pinned, item),
            Policy::DropOldest => shared.drop_oldest(self.pinned, item, w),
            Policy::Block { timeout } => shared.block(self.pinned, item, w, timeout),
        }
    }

    /// Hands `item` to the batcher if the budget has room right now; never blocks, never drops:
    /// on a full budget or a closed batcher the item comes back in the error.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let shared = &*self.shared;
        let w = shared.config.weight_of(&item);
        let item = match shared.push(self.pinned, item, w, false, false) {
            Ok(()) => return Ok(()),
            Err(Reject::Closed(item)) => {
                RefusedCounters::bump(&shared.refused.closed);
                return Err(TrySendError::Closed(item));
            }
            Err(Reject::Full(item)) => item,
        };
        shared.signal.notify();
        if shared.too_large(w) {
            RefusedCounters::bump(&shared.refused.too_large);
            return Err(TrySendError::TooLarge(item));
        }
        shared.reclaim(true);
        match shared.push(self.pinned, item, w, true, false) {
            Ok(()) => Ok(()),
            Err(Reject::Closed(item)) => {
                RefusedCounters::bump(&shared.refused.closed);
                Err(TrySendError::Closed(item))
            }
            Err(Reject::Full(item)) => {
                RefusedCounters::bump(&shared.refused.full);
                Err(TrySendError::Full(item))
            }
        }
    }

    /// Returns once every item accepted before the call has been emitted to the consumer (or
    /// dropped for a counted reason). Needs a consumer running on another thread or task.
    pub fn flush(&self) {
        // Without a deadline the wait cannot time out.
        let _ = self.shared.flush(None);
    }

    /// [`flush`](Self::flush), giving up after `timeout`. The flush keeps going after a timeout:
    /// the consumer still cuts everything accepted before the call with reason `Flush`.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), Timeout> {
        self.shared.flush(Some(Instant::now() + timeout))
    }

    /// Closes intake without waiting: later sends get `Closed` with their item back, and the
    /// consumer emits what is queued and then ends. Safe to call from the consumer's thread.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether the batcher is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Closes intake, waits until the consumer has emitted everything still queued, and returns
    /// the final stats (`queued == 0`). Nothing accepted before the call is lost. Needs a
    /// consumer running on another thread or task (or a dropped receiver, whose queued items are
    /// counted as `dropped_by_reason.disconnected`).
    pub fn shutdown(&self) -> Stats {
        match self.shared.shutdown(None) {
            Ok(stats) => stats,
            // Unreachable without a deadline; report what is known rather than panic.
            Err(Timeout) => self.stats(),
        }
    }

    /// [`shutdown`](Self::shutdown), giving up the wait after `timeout` (intake stays closed and
    /// the consumer keeps draining).
    pub fn shutdown_timeout(&self, timeout: Duration) -> Result<Stats, Timeout> {
        self.shared.shutdown(Some(Instant::now() + timeout))
    }

    /// A consistent snapshot of the accounting (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let collector = self.shared.collector.lock();
        self.shared.stats_locked(&collector)
    }

    /// A handle bound to one shard (chosen round-robin) instead of the calling thread's shard:
    /// everything sent through it is emitted in send order, whatever thread sends. Use one per
    /// task when a task may migrate between threads and order matters.
    pub fn pinned(&self) -> Self {
        let mut handle = self.clone();
        handle.pinned = Some(sync::next_slot());
        handle
    }
}

impl<T: Send> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        // Relaxed: as for `Arc::clone`, a new handle is made from an existing one.
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
            pinned: self.pinned,
        }
    }
}

impl<T: Send> Drop for Batcher<T> {
    fn drop(&mut self) {
        // AcqRel: as for `Arc::drop`, the last handle's close happens after every other
        // handle's sends.
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl<T: Send> fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("shards", &self.shared.shards.len())
            .field("closed", &self.shared.is_closed())
            .field("pinned", &self.pinned)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn leases_are_returned_by_reclaim() {
        let (tx, _rx) = Batcher::<u8>::builder()
            .budget_items(100)
            .shards(4)
            .build()
            .expect("valid");
        tx.send(1).expect("room");
        let budget = &tx.shared.budget;
        assert_eq!(budget.used_items(), 1, "used counts items, not leases");
        assert!(
            format!("{budget:?}").contains("taken_items: 6"),
            "a send leases a chunk"
        );
        tx.shared.reclaim(true);
        assert!(format!("{budget:?}").contains("taken_items: 1,"));
    }

    #[test]
    fn each_thread_keeps_its_shard() {
        let (tx, _rx) = Batcher::<u8>::builder().shards(8).build().expect("valid");
        let here = tx.shared.shard_index(None);
        assert_eq!(tx.shared.shard_index(None), here);
        let there = std::thread::scope(|s| {
            s.spawn(|| tx.shared.shard_index(None))
                .join()
                .expect("thread")
        });
        assert_ne!(here, there, "consecutive threads get different shards");
    }
}
