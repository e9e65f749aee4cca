//! [`Injector`]: a Michael–Scott lock-free FIFO queue (PODC 1996) with epoch reclamation.
//!
//! `head` points at a dummy node whose value is gone; the values are in the nodes after it. A
//! consumer claims the value of `head.next` by swinging `head` to it with a CAS, and only then
//! reads the value, so no read races a write. `steal_batch` swings `head` over a run of up to 32
//! nodes with one CAS. `head` never passes `tail` (consumers help a lagging `tail` first), so
//! producers never link onto a retired node. Each node carries its position, which gives `len`.

use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr;

use crossbeam_epoch as epoch;
use crossbeam_utils::CachePadded;

use super::{MAX_BATCH, Steal, Worker, batch_size};
use crate::loom::{AtomicPtr, Backoff, Ordering, UnsafeCell};
use crate::retire::node_memory;
use std::alloc::Layout;
use std::ptr::NonNull;

struct Node<T> {
    /// Initialised while the node is after `head`; moved out by the consumer that makes the node
    /// the new dummy.
    value: UnsafeCell<MaybeUninit<T>>,
    next: AtomicPtr<Node<T>>,
    /// Position in the queue (the dummy's predecessor count); written before the node is linked.
    index: usize,
}

impl<T> Node<T> {
    /// Allocates a node from the per-thread node cache (`retire::node_memory`), which a
    /// producer/consumer pair would otherwise miss in the global allocator, because nodes are
    /// freed in epoch batches, long after and often on another thread.
    fn alloc(value: MaybeUninit<T>, index: usize) -> *mut Node<T> {
        let node = Node {
            value: UnsafeCell::new(value),
            next: AtomicPtr::new(ptr::null_mut()),
            index,
        };
        let block = node_memory::allocate(Layout::new::<Node<T>>()).cast::<Node<T>>();
        // SAFETY: `block` is a fresh, unused allocation with `Node<T>`'s layout.
        unsafe { block.as_ptr().write(node) };
        block.as_ptr()
    }

    /// Frees `count` nodes linked through `next` from `first`, memory only.
    ///
    /// # Safety
    /// The nodes came from [`Node::alloc`], nobody can reach them any more, their values were
    /// moved out (or dropped), and the first `count - 1` of them have their `next` set.
    unsafe fn free_run(first: *mut Node<T>, count: usize) {
        let mut node = first;
        let blocks = (0..count).map(|_| {
            // SAFETY: the caller owns the run; `next` is read before the block is yielded, and
            // releasing a block does not touch its memory.
            let current = unsafe { NonNull::new_unchecked(node) };
            // SAFETY: as above, `node` is live until released.
            node = unsafe { (*node).next.load(Ordering::Relaxed) };
            current.cast::<u8>()
        });
        // SAFETY: every node came from `Node::alloc` with this layout and holds no value.
        unsafe { node_memory::release_many(Layout::new::<Node<T>>(), blocks) };
    }

    /// Moves the value out.
    ///
    /// # Safety
    /// `node` is live, holds a value, and the caller claimed it (swung `head` onto or past it).
    unsafe fn take(node: *const Node<T>) -> T {
        // SAFETY: `node` is live (caller).
        let cell = unsafe { &(*node).value };
        cell.with(|p| {
            // SAFETY: the value was written before the node was linked (Release CAS on `next`,
            // Acquire load when we reached it) and the caller is its only consumer.
            let value = unsafe { p.read() };
            // SAFETY: as above, initialised.
            unsafe { value.assume_init() }
        })
    }
}

/// A `Send` wrapper to hand retired nodes to the epoch collector.
struct Retired<T>(*mut Node<T>, usize);
// SAFETY: the collector only frees memory; the values were moved out, no `T` is touched.
unsafe impl<T> Send for Retired<T> {}

/// A global FIFO queue that many threads push to and workers steal batches from.
///
/// # Examples
///
/// ```
/// use spanflow_lockfree::deque::{Injector, Steal, Worker};
///
/// let injector = Injector::new();
/// for i in 0..8 {
///     injector.push(i);
/// }
/// let local = Worker::new_fifo();
/// assert_eq!(injector.steal_batch_and_pop(&local), Steal::Success(0));
/// assert_eq!(local.pop(), Some(1));
/// assert_eq!(injector.steal(), Steal::Success(4));
/// ```
pub struct Injector<T> {
    head: CachePadded<AtomicPtr<Node<T>>>,
    tail: CachePadded<AtomicPtr<Node<T>>>,
    _owns: PhantomData<T>,
}

// SAFETY: the queue owns its `T`s and hands each out by value once; `T: Send` suffices.
unsafe impl<T: Send> Send for Injector<T> {}
// SAFETY: shared access only moves `T`s in and out by value through the lock-free protocol.
unsafe impl<T: Send> Sync for Injector<T> {}

impl<T> Default for Injector<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Injector<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Injector").finish_non_exhaustive()
    }
}

impl<T> Injector<T> {
    /// Creates an empty queue.
    pub fn new() -> Self {
        let dummy = Node::alloc(MaybeUninit::uninit(), 0);
        Injector {
            head: CachePadded::new(AtomicPtr::new(dummy)),
            tail: CachePadded::new(AtomicPtr::new(dummy)),
            _owns: PhantomData,
        }
    }

    /// Appends an item at the back.
    pub fn push(&self, value: T) {
        let node = Node::alloc(MaybeUninit::new(value), 0);
        let _guard = epoch::pin();
        let backoff = Backoff::new();
        loop {
            // Acquire: pairs with the Release CAS that installed this tail, so its `index` is
            // visible.
            let tail = self.tail.load(Ordering::Acquire);
            // SAFETY: we are pinned and `tail` was reachable; nodes are freed only through the
            // epoch after `head` passed them, and `head` never passes `tail`.
            let next = unsafe { (*tail).next.load(Ordering::Acquire) };
            if !next.is_null() {
                // Help a lagging tail. Release: pairs with the Acquire tail loads.
                let _ =
                    self.tail
                        .compare_exchange(tail, next, Ordering::Release, Ordering::Relaxed);
                continue;
            }
            // SAFETY: `tail` is live (see above).
            let tail_ref = unsafe { &*tail };
            // SAFETY: `node` is still private (not linked yet), so we may write its fields.
            unsafe { (*node).index = tail_ref.index.wrapping_add(1) };
            let link = &tail_ref.next;
            // Release: publishes the node's value and index; pairs with the Acquire loads of
            // `next` in `steal` and `push`.
            if link
                .compare_exchange(next, node, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                // Release: pairs with the Acquire tail loads. Failure means someone helped.
                let _ =
                    self.tail
                        .compare_exchange(tail, node, Ordering::Release, Ordering::Relaxed);
                return;
            }
            backoff.spin();
        }
    }

    /// Returns `true` if the queue is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        let _guard = epoch::pin();
        // Acquire: pairs with the CAS that installed this head, so the node is fully visible.
        let head = self.head.load(Ordering::Acquire);
        // SAFETY: pinned, and `head` is reachable, so it is live.
        unsafe { (*head).next.load(Ordering::Relaxed) }.is_null()
    }

    /// The number of items in the queue (a snapshot).
    pub fn len(&self) -> usize {
        let _guard = epoch::pin();
        // Acquire: as in `is_empty`; `head` is read first so that `tail` is not behind it.
        let head = self.head.load(Ordering::Acquire);
        // Acquire: pairs with the Release CAS that installed the tail; its `index` is visible.
        let tail = self.tail.load(Ordering::Acquire);
        // SAFETY: pinned; `head` was reachable when loaded, so it is live.
        let head_index = unsafe { (*head).index };
        // SAFETY: pinned; `tail` was reachable when loaded, so it is live.
        let tail = unsafe { &*tail };
        let mut tail_index = tail.index;
        if !tail.next.load(Ordering::Relaxed).is_null() {
            tail_index = tail_index.wrapping_add(1);
        }
        (tail_index.wrapping_sub(head_index) as isize).max(0) as usize
    }

    /// Steals the oldest item.
    ///
    /// ```
    /// use spanflow_lockfree::deque::{Injector, Steal};
    /// let q = Injector::new();
    /// assert!(q.steal().is_empty());
    /// q.push('a');
    /// assert_eq!(q.steal(), Steal::Success('a'));
    /// ```
    pub fn steal(&self) -> Steal<T> {
        let guard = epoch::pin();
        match self.claim(1, &guard) {
            Claim::Empty => Steal::Empty,
            Claim::Lost => Steal::Retry,
            Claim::Run { old_head, count } => {
                // SAFETY: `claim` swung `head` from `old_head` over one node: `old_head.next`
                // is ours and live (pinned).
                let claimed = unsafe { (*old_head).next.load(Ordering::Relaxed) };
                // SAFETY: as above: the claimed node holds a value nobody else takes.
                let value = unsafe { Node::take(claimed) };
                // SAFETY: `old_head` is unlinked, its value was taken earlier.
                unsafe { retire(old_head, count, &guard) };
                Steal::Success(value)
            }
        }
    }

    /// Steals about half of the items (at most 32) into `dest`.
    pub fn steal_batch(&self, dest: &Worker<T>) -> Steal<()> {
        match self.steal_batch_inner(dest, MAX_BATCH, false) {
            Steal::Empty => Steal::Empty,
            Steal::Retry => Steal::Retry,
            Steal::Success(_) => Steal::Success(()),
        }
    }

    /// Steals about half of the items (at most 32), returns the oldest and moves the rest into
    /// `dest`.
    pub fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
        match self.steal_batch_inner(dest, MAX_BATCH, true) {
            Steal::Empty => Steal::Empty,
            Steal::Success(Some(value)) => Steal::Success(value),
            Steal::Retry | Steal::Success(None) => Steal::Retry,
        }
    }

    /// Steals about half of the items, at most `limit`, into `dest`.
    pub fn steal_batch_with_limit(&self, dest: &Worker<T>, limit: usize) -> Steal<()> {
        match self.steal_batch_inner(dest, limit, false) {
            Steal::Empty => Steal::Empty,
            Steal::Retry => Steal::Retry,
            Steal::Success(_) => Steal::Success(()),
        }
    }

    fn steal_batch_inner(
        &self,
        dest: &Worker<T>,
        limit: usize,
        pop_first: bool,
    ) -> Steal<Option<T>> {
        let guard = epoch::pin();
        let want = batch_size(self.len(), limit);
        match self.claim(want, &guard) {
            Claim::Empty => Steal::Empty,
            Claim::Lost => Steal::Retry,
            Claim::Run { old_head, count } => {
                let mut first = None;
                let mut node = old_head;
                for k in 0..count {
                    // SAFETY: `claim` swung `head` over `count` nodes after `old_head`; they are
                    // ours, linked (stable `next`), and live while we are pinned.
                    node = unsafe { (*node).next.load(Ordering::Relaxed) };
                    // SAFETY: as above; each claimed node is visited once.
                    let value = unsafe { Node::take(node) };
                    if k == 0 && pop_first {
                        first = Some(value);
                    } else {
                        dest.push(value);
                    }
                }
                // SAFETY: the `count` nodes from `old_head` are unlinked and their values taken.
                unsafe { retire(old_head, count, &guard) };
                Steal::Success(first)
            }
        }
    }

    /// Swings `head` over up to `want` nodes with one CAS.
    fn claim(&self, want: usize, _guard: &epoch::Guard) -> Claim<T> {
        // Acquire: pairs with the CAS that installed this head.
        let head = self.head.load(Ordering::Acquire);
        // Acquire: pairs with the Release CAS of `tail`. Loaded after `head`, so it is not
        // behind it: the run we claim below stops at `tail`.
        let tail = self.tail.load(Ordering::Acquire);
        let mut last = head;
        let mut count = 0;
        while count < want && last != tail {
            // SAFETY: pinned; `last` lies between `head` and `tail`, so it is live, and its
            // `next` is set (tail is reachable from it). Acquire: pairs with the Release CAS
            // linking it, so the node's value is visible.
            last = unsafe { (*last).next.load(Ordering::Acquire) };
            count += 1;
        }
        if count == 0 {
            // `head == tail`: empty, or `tail` lags behind a just-linked node.
            // SAFETY: pinned; `head` is live. Acquire: as above.
            let next = unsafe { (*head).next.load(Ordering::Acquire) };
            if next.is_null() {
                return Claim::Empty;
            }
            // Help the producer, then claim that one node. Release: pairs with Acquire tail loads.
            let _ = self
                .tail
                .compare_exchange(tail, next, Ordering::Release, Ordering::Relaxed);
            last = next;
            count = 1;
        }
        // Acquire on success: we read nothing new through it (the walk above did), but the next
        // consumer pairs with this store. Release: the nodes we claimed stay claimed for the next
        // consumer that reads this head (pairs with the Acquire head loads).
        match self
            .head
            .compare_exchange(head, last, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Claim::Run {
                old_head: head,
                count,
            },
            Err(_) => Claim::Lost,
        }
    }
}

enum Claim<T> {
    Empty,
    Lost,
    /// `head` moved from `old_head` over `count` nodes; their values are ours.
    Run {
        old_head: *mut Node<T>,
        count: usize,
    },
}

/// Hands `count` unlinked nodes starting at `first` to the epoch collector.
///
/// # Safety
/// The nodes were unlinked by our CAS on `head` and their values were taken; other threads may
/// reach them only while pinned.
unsafe fn retire<T>(first: *mut Node<T>, count: usize, guard: &epoch::Guard) {
    let retired = Retired(first, count);
    let free = move || {
        let retired = retired;
        // SAFETY: the epoch has passed: nobody reaches the nodes; `next` links are stable and
        // the values were taken.
        unsafe { Node::free_run(retired.0, retired.1) };
    };
    // SAFETY: readers of these nodes are pinned; the collector runs `free` after they unpin.
    // `free` touches memory only (values are `MaybeUninit` and already moved out).
    unsafe { guard.defer_unchecked(free) };
}

impl<T> Drop for Injector<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self`; every other thread's access happened-before this drop.
        let head = self.head.load(Ordering::Relaxed);
        // SAFETY: exclusive access; the dummy is live.
        let mut node = unsafe { (*head).next.load(Ordering::Relaxed) };
        // SAFETY: exclusive access; the dummy's value is gone, so only free its memory.
        unsafe { Node::free_run(head, 1) };
        while !node.is_null() {
            // SAFETY: exclusive access; nodes after the dummy hold values, each dropped once.
            drop(unsafe { Node::take(node) });
            // SAFETY: as above; the node is live.
            let next = unsafe { (*node).next.load(Ordering::Relaxed) };
            // SAFETY: exclusive access; its value is now gone: free memory only.
            unsafe { Node::free_run(node, 1) };
            node = next;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_order_and_len() {
        let q = Injector::new();
        assert!(q.is_empty());
        for i in 0..10 {
            q.push(i);
        }
        assert_eq!(q.len(), 10);
        let got: Vec<_> = std::iter::from_fn(|| q.steal().success()).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn steal_batch_takes_half_in_order() {
        let q = Injector::new();
        for i in 0..10 {
            q.push(i);
        }
        let w = Worker::new_fifo();
        assert_eq!(q.steal_batch(&w), Steal::Success(()));
        assert_eq!(w.len(), 5);
        assert_eq!(q.steal_batch_and_pop(&w), Steal::Success(5));
        assert_eq!(w.len(), 7);
        let got: Vec<_> = std::iter::from_fn(|| w.pop()).collect();
        assert_eq!(got, [0, 1, 2, 3, 4, 6, 7]);
        assert_eq!(q.len(), 2);
        let many = Injector::new();
        (0..100).for_each(|i| many.push(i));
        assert_eq!(many.steal_batch_with_limit(&w, 7), Steal::Success(()));
        assert_eq!(w.len(), 7);
    }

    #[test]
    fn drop_frees_remaining_items() {
        let counter = Arc::new(());
        {
            let q = Injector::new();
            for _ in 0..100 {
                q.push(counter.clone());
            }
            drop(q.steal());
        }
        assert_eq!(Arc::strong_count(&counter), 1);
    }
}
