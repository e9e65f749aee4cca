//! The unit the consumer receives, and the pool that recycles its vector.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use spanflow_lockfree::TreiberStack;

use crate::budget::Credit;
use crate::config::DropSite;
use crate::sync::{AtomicBool, AtomicUsize, Ordering};

/// With [`DropSite::Producers`], at most this many dropped batches wait at once for producers to
/// drop their items; a batch dropped beyond that drops its items itself.
///
/// A parked batch has already returned its items' credits to the budget (they are finished,
/// only not yet freed): this bound, not the budget, limits the memory they hold.
pub const MAX_SPENT_BATCHES: usize = 4;

/// Why a batch was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CutReason {
    /// It holds `max_items` items.
    Count,
    /// It reached `max_bytes`, or the next item would not have fitted.
    Bytes,
    /// Its oldest item reached `max_age`.
    Age,
    /// A flush asked for everything accepted before it.
    Flush,
    /// The batcher is shutting down.
    Shutdown,
}

/// Emptied batch vectors waiting for reuse, on a Treiber stack so that a consumer dropping a
/// batch on any thread never takes a lock; and, with [`DropSite::Producers`], the dropped
/// batches whose items wait for producers to drop them, on a second one.
pub(crate) struct Pool<T> {
    stack: TreiberStack<Vec<T>>,
    /// Approximate number of vectors held; bounds the memory the pool keeps.
    len: AtomicUsize,
    capacity: usize,
    spent: TreiberStack<Vec<T>>,
    /// Approximate number of vectors in `spent` (a soft bound, like `len`).
    spent_len: AtomicUsize,
    /// Set with [`DropSite::Producers`]; cleared when the consumer ends: nobody sends any more,
    /// so batches drop their own items.
    parking: AtomicBool,
}

impl<T: Send> Pool<T> {
    pub(crate) fn new(capacity: usize, drop_site: DropSite) -> Self {
        Self {
            stack: TreiberStack::new(),
            len: AtomicUsize::new(0),
            capacity,
            spent: TreiberStack::new(),
            spent_len: AtomicUsize::new(0),
            parking: AtomicBool::new(drop_site == DropSite::Producers),
        }
    }

    /// Takes a finished batch's vector: parks its items for the producers, or drops them here.
    fn retire(&self, v: Vec<T>) {
        // Relaxed: a batch that misses the store parks its items once more, and they are
        // dropped with the pool.
        if self.parking.load(Ordering::Relaxed) && !v.is_empty() {
            // Relaxed: a soft bound, as for `len`.
            if self.spent_len.fetch_add(1, Ordering::Relaxed) < MAX_SPENT_BATCHES {
                self.spent.push(v);
                return;
            }
            self.spent_len.fetch_sub(1, Ordering::Relaxed);
        }
        self.give(v);
    }

    /// A parked vector of items for a producer to drop, if any.
    pub(crate) fn take_spent(&self) -> Option<Vec<T>> {
        // Relaxed: a hint that saves the stack's pin when nothing is parked; a stale zero only
        // leaves the items for the next send.
        if self.spent_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let v = self.spent.pop()?;
        self.spent_len.fetch_sub(1, Ordering::Relaxed);
        Some(v)
    }

    /// An empty vector with room for `cap` items, recycled when possible.
    pub(crate) fn take(&self, cap: usize) -> Vec<T> {
        // Relaxed: a hint that saves the stack's pin when the pool is empty; a stale zero
        // only allocates a vector that the pool could have given.
        if self.len.load(Ordering::Relaxed) == 0 {
            return Vec::with_capacity(cap);
        }
        match self.stack.pop() {
            Some(mut v) => {
                // Relaxed: `len` is a soft bound, not a synchronisation point.
                self.len.fetch_sub(1, Ordering::Relaxed);
                v.reserve(cap);
                v
            }
            None => Vec::with_capacity(cap),
        }
    }

    /// Whether parked items wait for producers.
    pub(crate) fn has_spent(&self) -> bool {
        // Relaxed: a hint for the consumer's idle sweep.
        self.spent_len.load(Ordering::Relaxed) > 0
    }

    /// Stops parking items: the consumer has ended, so batches drop their own items.
    pub(crate) fn stop_parking(&self) {
        self.parking.store(false, Ordering::Relaxed);
    }

    /// Drops every parked item on the calling thread.
    pub(crate) fn drop_spent(&self) {
        while let Some(v) = self.take_spent() {
            self.give(v);
        }
    }

    pub(crate) fn give(&self, mut v: Vec<T>) {
        v.clear();
        if v.capacity() == 0 {
            return;
        }
        // Relaxed: `len` is a soft bound; racing givers may overshoot by a few vectors.
        if self.len.fetch_add(1, Ordering::Relaxed) < self.capacity {
            self.stack.push(v);
        } else {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A batch of items with its weight, the age of its oldest item and why it was cut.
///
/// Dereferences to `[T]`. Dropping it (or calling [`drain`](Self::drain) and then dropping it)
/// returns its vector to the batcher's pool, so steady state allocates no batch vectors (with
/// [`DropSite::Producers`] its items go along, for producers to drop);
/// [`into_vec`](Self::into_vec) takes the vector out of recycling.
///
/// It carries the budget credit of its items ([`credit`](Self::credit)): dropping the batch
/// returns it, after its items are dropped (or parked for the producers). To keep the budget
/// charged while the data lives on in another form (encoded, queued for export), take the credit
/// with [`take_credit`](Self::take_credit) and drop it when that data is gone.
///
/// ```
/// use spanflow_batch::{Batcher, CutReason};
///
/// let (batcher, mut receiver) = Batcher::<u64>::builder().max_items(2).build()?;
/// batcher.send(1)?;
/// batcher.send(2)?;
/// let mut batch = receiver.recv().expect("a full batch is due");
/// assert_eq!(batch.reason(), CutReason::Count);
/// assert_eq!(&batch[..], &[1, 2]);
/// let items: Vec<u64> = batch.drain().collect();
/// assert_eq!(items, [1, 2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Batch<T: Send> {
    items: Vec<T>,
    bytes: u64,
    age: Duration,
    reason: CutReason,
    pool: Option<Arc<Pool<T>>>,
    /// Dropped after `Drop::drop` has retired the items, so the credit comes back last.
    credit: Credit,
}

impl<T: Send> Batch<T> {
    pub(crate) fn new(
        items: Vec<T>,
        bytes: u64,
        age: Duration,
        reason: CutReason,
        pool: Arc<Pool<T>>,
        credit: Credit,
    ) -> Self {
        Self {
            items,
            bytes,
            age,
            reason,
            pool: Some(pool),
            credit,
        }
    }

    /// The budget credit the batch holds for its items (empty once taken, or when the batcher
    /// has no budget).
    pub fn credit(&self) -> &Credit {
        &self.credit
    }

    /// Takes the credit of the batch's items, leaving the batch an empty one: the budget stays
    /// charged until the returned [`Credit`] is dropped, whenever and wherever that is.
    ///
    /// ```
    /// use spanflow_batch::{Batcher, Budget};
    ///
    /// let budget = Budget::with_items(2, u64::MAX);
    /// let (batcher, mut receiver) = Batcher::<u32>::builder()
    ///     .max_items(2)
    ///     .budget(budget.clone())
    ///     .build()?;
    /// batcher.send(1)?;
    /// batcher.send(2)?;
    /// let mut batch = receiver.try_recv()?;
    /// let credit = batch.take_credit();
    /// drop(batch);
    /// assert!(batcher.try_send(3).is_err(), "the credit still holds the budget");
    /// std::thread::spawn(move || drop(credit)).join().unwrap();
    /// batcher.try_send(3)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_credit(&mut self) -> Credit {
        let empty = Credit::new(Arc::clone(self.credit.budget()), 0, 0);
        std::mem::replace(&mut self.credit, empty)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch holds no items (a batch is never emitted empty).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Total weight of the items when the batch was cut.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How long the oldest item had been queued when the batch was cut. Measured from the moment
    /// the item's intake shard last went from empty to non-empty, so it is an upper bound.
    pub fn age(&self) -> Duration {
        self.age
    }

    /// Why the batch was cut.
    pub fn reason(&self) -> CutReason {
        self.reason
    }

    /// The items, in emission order.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Moves the items out; the emptied vector still goes back to the pool on drop.
    pub fn drain(&mut self) -> std::vec::Drain<'_, T> {
        self.items.drain(..)
    }

    /// The items as a vector, taken out of recycling. The batch's credit (unless taken before)
    /// returns to the budget now, as the batcher no longer sees the items.
    pub fn into_vec(mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
    }
}

impl<T: Send> Drop for Batch<T> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.retire(std::mem::take(&mut self.items));
        }
    }
}

impl<T: Send> Deref for Batch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T: Send> DerefMut for Batch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items
    }
}

impl<'a, T: Send> IntoIterator for &'a Batch<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<T: Send + fmt::Debug> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.items.len())
            .field("bytes", &self.bytes)
            .field("age", &self.age)
            .field("reason", &self.reason)
            .field("credit", &self.credit)
            .field("items", &self.items)
            .finish()
    }
}
