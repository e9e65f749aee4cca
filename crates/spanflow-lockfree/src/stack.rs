//! A Treiber stack (Treiber 1986) with epoch-based reclamation and whole-list operations.
//!
//! `head` points at the newest node. `push` links a private node and publishes it with one CAS
//! (it never dereferences a shared node, so it does not pin); `pop` pins, unlinks the head node
//! with one CAS and retires the node to crossbeam-epoch, because a concurrent `pop` may still be
//! reading its `next` field. A node's memory is freed (or reused by the per-thread node cache in
//! `retire::node_memory`) only after every thread pinned at its retirement has unpinned, so a
//! pinned `pop` never sees the address it loaded come back as a different node (no ABA).
//!
//! Retired nodes are linked per thread through their own `next` fields and handed to the epoch 32
//! at a time (`retire::retire`): one `Deferred` per 32 pops instead of one per pop, and no epoch
//! bag churn in the allocator. `next` is a node's first word (`repr(C)`), which is also the link
//! of a free block, so when the grace period is over the whole chain becomes free-list blocks by
//! one splice at its remembered tail, without walking the (by then cold) nodes. Relinking `next`
//! is harmless to a losing `pop` that still reads it: the field is atomic and its CAS fails
//! whatever it read.
//!
//! A lost CAS waits long (`loom::contention_pause`: 16 spin hints, doubling up to 1024). With two
//! threads on one stack, the usual short backoff retries at once and every operation then moves
//! the head's cache line between cores; the long wait gives the winner a run of operations on a
//! line it keeps, as a spinning mutex does. Uncontended operations never lose a CAS, so they
//! never wait. (On the 2-vCPU bench machine, `stack/push_pop_2t` went from about 0.45x
//! `parking_lot::Mutex<Vec>` with crossbeam's short backoff to about 0.7x-1.7x with this one,
//! depending on the other load; a shorter or yielding backoff measured no better.)
//!
//! A one-slot elimination exchanger (a `push` and a `pop` whose CASes collide hand the value over
//! outside `head`, Hendler et al. 2004) was tried and measured: on two threads it did not beat
//! retrying on `head` reliably (the pair rarely meets, and the offer's wait costs when it does
//! not), so it was left out.
//!
//! The value sits in a `ManuallyDrop`: it is moved out exactly once, by the winner of the unlink,
//! and the deferred destruction frees only the node's memory. (Naive epoch stacks read the value
//! on `pop` and drop it a second time when the node is destroyed.)

use std::fmt;
use std::iter::FusedIterator;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr;

use crossbeam_epoch as epoch;
use crossbeam_utils::CachePadded;

use crate::loom::{AtomicPtr, Ordering, UnsafeCell, contention_pause};
use crate::retire::node_memory;
use std::alloc::Layout;
use std::ptr::NonNull;

/// `repr(C)` with `next` first: the link is the block's first word, which is what
/// `retire::node_memory` chains retired and free blocks through.
#[repr(C)]
struct Node<T> {
    /// Atomic because a `pop` that lost the race may still read it while the new owner relinks
    /// the node (retirement and `TakeAll` reuse `next` for their own chains).
    next: AtomicPtr<Node<T>>,
    /// Written once before the node is published, moved out once by whoever unlinks the node.
    value: UnsafeCell<ManuallyDrop<T>>,
}

impl<T> Node<T> {
    const LAYOUT: Layout = Layout::new::<Node<T>>();

    #[inline]
    fn alloc(value: T) -> *mut Node<T> {
        let node = Node {
            next: AtomicPtr::new(ptr::null_mut()),
            value: UnsafeCell::new(ManuallyDrop::new(value)),
        };
        let block = node_memory::allocate(Self::LAYOUT).cast::<Node<T>>();
        // SAFETY: `block` is a fresh, unused allocation with `Node<T>`'s layout.
        unsafe { block.as_ptr().write(node) };
        block.as_ptr()
    }

    /// Frees a node's memory without dropping its value.
    ///
    /// # Safety
    /// `node` came from [`Node::alloc`], nobody can reach it any more, and its value was moved
    /// out (or is dropped by the caller).
    unsafe fn free(node: *mut Node<T>) {
        // SAFETY: a `Node` is never null.
        let block = unsafe { NonNull::new_unchecked(node.cast::<u8>()) };
        // SAFETY: forwarded from the caller; `Node<T>` needs no drop glue beyond the value
        // (`ManuallyDrop`) and the atomics (loom's hold only an index into loom's store).
        unsafe { node_memory::release(block, Self::LAYOUT) };
    }

    /// Moves the value out of the node.
    ///
    /// # Safety
    /// `node` must be live and the caller must be the unique owner of its value (it unlinked the
    /// node), and the value must not have been taken before.
    #[inline]
    unsafe fn take_value(node: *mut Node<T>) -> T {
        // SAFETY: the caller guarantees `node` is live.
        let cell = unsafe { &(*node).value };
        // SAFETY: the caller is the unique owner of the value and it was not taken before, so
        // this bitwise move happens once per node and nobody reads the slot afterwards.
        cell.with_mut(|v| ManuallyDrop::into_inner(unsafe { ptr::read(v) }))
    }

    /// Retires one unlinked node whose value was moved out.
    ///
    /// # Safety
    /// `node` was unlinked by the caller's CAS and its value moved out; other threads may still
    /// read its `next` only while pinned (losing `pop`s, whose CAS fails whatever they read).
    #[inline]
    unsafe fn retire(node: *mut Node<T>, guard: &epoch::Guard) {
        // SAFETY: forwarded; `next` is the node's first word (`repr(C)`), an `AtomicPtr`, and
        // the node came from `node_memory::allocate` with `LAYOUT`.
        unsafe { crate::retire::retire(node.cast(), Self::LAYOUT, guard) };
    }
}

/// Hands a detached chain `head..=tail` of `len` consumed nodes to the epoch collector.
///
/// # Safety
/// The chain must have been unlinked from the stack (no new thread can reach it), linked through
/// `next` with `tail.next` null, every value must have been moved out, and no thread other than
/// concurrent, pinned `pop`s may access it.
unsafe fn retire_chain<T>(head: *mut Node<T>, tail: *mut Node<T>, len: usize) {
    if head.is_null() {
        return;
    }
    let guard = epoch::pin();
    // SAFETY: forwarded; `next` is each node's first word and the nodes came from
    // `node_memory::allocate` with `Node::<T>::LAYOUT`.
    unsafe {
        node_memory::retire_chain(head.cast(), tail.cast(), len, Node::<T>::LAYOUT, &guard);
    }
}

/// A lock-free LIFO stack whose nodes are reclaimed by crossbeam-epoch.
///
/// Besides `push`/`pop` it has two whole-list operations for batching: [`push_list`] publishes any
/// number of values with one CAS, and [`take_all`] detaches the whole stack with one swap.
///
/// [`push_list`]: TreiberStack::push_list
/// [`take_all`]: TreiberStack::take_all
///
/// # Examples
///
/// ```
/// use spanflow_lockfree::TreiberStack;
///
/// let stack = TreiberStack::new();
/// stack.push(1);
/// stack.push_list([2, 3, 4]);
/// assert_eq!(stack.pop(), Some(4));
///
/// // Detach everything at once and read it back in push order.
/// let batch: Vec<i32> = stack.take_all().into_fifo().collect();
/// assert_eq!(batch, [1, 2, 3]);
/// assert!(stack.is_empty());
/// ```
pub struct TreiberStack<T> {
    head: CachePadded<AtomicPtr<Node<T>>>,
    _owns: PhantomData<T>,
}

// SAFETY: the stack owns its `T`s and hands each one out by value exactly once; moving values
// between threads needs `T: Send`, and shared access never yields `&T`, so `Sync` needs only that.
unsafe impl<T: Send> Send for TreiberStack<T> {}
// SAFETY: see `Send`: `&TreiberStack<T>` only moves `T`s in and out by value.
unsafe impl<T: Send> Sync for TreiberStack<T> {}

impl<T> TreiberStack<T> {
    /// Creates an empty stack.
    ///
    /// ```
    /// let stack = spanflow_lockfree::TreiberStack::<u32>::new();
    /// assert!(stack.is_empty());
    /// ```
    pub fn new() -> Self {
        TreiberStack {
            head: CachePadded::new(AtomicPtr::new(ptr::null_mut())),
            _owns: PhantomData,
        }
    }
}

impl<T: Send> TreiberStack<T> {
    /// Pushes one value on top of the stack.
    ///
    /// ```
    /// let stack = spanflow_lockfree::TreiberStack::new();
    /// stack.push("a");
    /// assert_eq!(stack.pop(), Some("a"));
    /// ```
    #[inline]
    pub fn push(&self, value: T) {
        let node = Node::alloc(value);
        // SAFETY: `node` is fresh and private until the CAS in `publish` succeeds.
        unsafe { self.publish(node, node) }
    }

    /// Pushes every item of `items`, in order, publishing them all with a single CAS.
    ///
    /// The result is the same as pushing them one by one (the last item ends on top), but other
    /// threads see all of them appear at once, and the shared head is touched once.
    ///
    /// ```
    /// let stack = spanflow_lockfree::TreiberStack::new();
    /// stack.push_list(vec![1, 2, 3]);
    /// assert_eq!(stack.pop(), Some(3));
    /// ```
    pub fn push_list<I: IntoIterator<Item = T>>(&self, items: I) {
        let mut iter = items.into_iter();
        let Some(first) = iter.next() else {
            return;
        };
        // Build the chain privately: `last` is the bottom of the new segment, `top` its top.
        let last = Node::alloc(first);
        let mut top = last;
        for value in iter {
            let node = Node::alloc(value);
            // SAFETY: `node` is fresh and private; nobody else can see it yet.
            unsafe { (*node).next.store(top, Ordering::Relaxed) };
            top = node;
        }
        // SAFETY: `top..=last` is a private chain built above.
        unsafe { self.publish(top, last) }
    }

    /// Same as [`push_list`](TreiberStack::push_list); callable through `&self`, so a shared stack
    /// can be extended without the `Extend` trait's `&mut`.
    ///
    /// ```
    /// let stack = spanflow_lockfree::TreiberStack::new();
    /// stack.extend(0..3);
    /// assert_eq!(stack.pop(), Some(2));
    /// ```
    pub fn extend<I: IntoIterator<Item = T>>(&self, items: I) {
        self.push_list(items);
    }

    /// Links the private chain `top..=last` on top of the stack with one CAS.
    ///
    /// # Safety
    /// `top..=last` must be a chain of fresh nodes linked through `next`, owned by the caller.
    unsafe fn publish(&self, top: *mut Node<T>, last: *mut Node<T>) {
        let mut failures = 0u32;
        // Relaxed: the value is only used as the CAS's expected value and as `last.next`; nothing
        // behind it is dereferenced here.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `last` is still private (the CAS below has not succeeded yet).
            unsafe { (*last).next.store(head, Ordering::Relaxed) };
            // Release: publishes the nodes' values and `next` links; pairs with the Acquire
            // load/swap of `head` in `pop` and `take_all`.
            match self
                .head
                .compare_exchange_weak(head, top, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(current) => {
                    head = current;
                    contention_pause(&mut failures);
                }
            }
        }
    }

    /// Pops the value on top of the stack, or `None` if the stack is empty.
    ///
    /// ```
    /// let stack = spanflow_lockfree::TreiberStack::new();
    /// assert_eq!(stack.pop(), None);
    /// stack.push(7);
    /// assert_eq!(stack.pop(), Some(7));
    /// ```
    #[inline]
    pub fn pop(&self) -> Option<T> {
        let guard = epoch::pin();
        let mut failures = 0u32;
        loop {
            // Acquire: pairs with the Release CAS in `publish` (or continues its release sequence
            // through other CASes), so the node's value and `next` are visible.
            let head = self.head.load(Ordering::Acquire);
            if head.is_null() {
                return None;
            }
            // SAFETY: we are pinned and loaded `head` from the stack; nodes are reused only via
            // epoch after being unlinked, so `head` is still allocated.
            let next = unsafe { (*head).next.load(Ordering::Relaxed) };
            // Relaxed on success: the Acquire load above already synchronized with the push; the
            // CAS only decides who owns the node. Relaxed on failure: we reload with Acquire.
            if self
                .head
                .compare_exchange_weak(head, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                // SAFETY: the CAS unlinked `head`, so we are the unique owner of its value.
                let value = unsafe { Node::take_value(head) };
                // SAFETY: `head` is unlinked and its value moved out. Pinned `pop`s that lost
                // may still read its `next` atomically; their CAS fails whatever they read, and
                // the epoch waits for them before the memory is reused.
                unsafe { Node::retire(head, &guard) };
                return Some(value);
            }
            contention_pause(&mut failures);
        }
    }

    /// Returns `true` if the stack was empty at the moment of the check.
    ///
    /// ```
    /// let stack = spanflow_lockfree::TreiberStack::new();
    /// assert!(stack.is_empty());
    /// stack.push(());
    /// assert!(!stack.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        // Relaxed: a snapshot; nothing behind the pointer is read.
        self.head.load(Ordering::Relaxed).is_null()
    }

    /// Detaches the whole stack with one atomic swap and returns its values.
    ///
    /// The returned iterator yields newest first (LIFO); [`TakeAll::into_fifo`] turns it into an
    /// iterator in push order. Values not consumed are dropped with the iterator.
    ///
    /// ```
    /// let stack = spanflow_lockfree::TreiberStack::new();
    /// stack.extend([1, 2, 3]);
    /// assert_eq!(stack.take_all().collect::<Vec<_>>(), [3, 2, 1]);
    /// assert!(stack.take_all().next().is_none());
    /// ```
    pub fn take_all(&self) -> TakeAll<T> {
        if self.is_empty() {
            return TakeAll::empty();
        }
        // Acquire: pairs with the Release CAS in `publish`, making every node of the chain and
        // its value visible.
        let head = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        TakeAll {
            next: head,
            consumed: ptr::null_mut(),
            consumed_tail: ptr::null_mut(),
            consumed_len: 0,
            _owns: PhantomData,
        }
    }
}

impl<T> Default for TreiberStack<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for TreiberStack<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreiberStack")
            .field("is_empty", &self.head.load(Ordering::Relaxed).is_null())
            .finish()
    }
}

impl<T> Drop for TreiberStack<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` means no other thread holds a reference; the hand-off to us (a
        // join, a channel, an `Arc` drop) already synchronized.
        let mut node = self.head.load(Ordering::Relaxed);
        while !node.is_null() {
            // SAFETY: `&mut self`: the chain is exclusively ours and every node still holds its
            // value (unlinked nodes are never reachable from `head`).
            let current = unsafe { &*node };
            let next = current.next.load(Ordering::Relaxed);
            current.value.with_mut(|v| {
                // SAFETY: the value was never moved out (the node was still linked); drop it
                // once. (`ManuallyDrop<T>` is `repr(transparent)`, so the cast points at the `T`.)
                unsafe { ptr::drop_in_place(v.cast::<T>()) }
            });
            // SAFETY: exclusively ours, value dropped above: free memory only.
            unsafe { Node::free(node) };
            node = next;
        }
    }
}

impl<T: Send> Extend<T> for TreiberStack<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        self.push_list(iter);
    }
}

impl<T: Send> Extend<T> for &TreiberStack<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        self.push_list(iter);
    }
}

impl<T: Send> FromIterator<T> for TreiberStack<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let stack = TreiberStack::new();
        stack.push_list(iter);
        stack
    }
}

/// The values detached by [`TreiberStack::take_all`], newest first.
///
/// Dropping it drops the values not consumed. The nodes' memory goes to the epoch collector in
/// one deferred call, because a concurrent `pop` that lost the race may still be reading them.
pub struct TakeAll<T> {
    /// The remaining chain, still holding values.
    next: *mut Node<T>,
    /// Nodes whose value was moved out, relinked into a private chain for one deferred free.
    consumed: *mut Node<T>,
    /// The first consumed node: the end of the `consumed` chain.
    consumed_tail: *mut Node<T>,
    consumed_len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: `TakeAll` owns the detached values; sending it sends `T`s.
unsafe impl<T: Send> Send for TakeAll<T> {}
// SAFETY: `&TakeAll` exposes nothing (all access needs `&mut`).
unsafe impl<T: Sync> Sync for TakeAll<T> {}

impl<T> TakeAll<T> {
    fn empty() -> Self {
        TakeAll {
            next: ptr::null_mut(),
            consumed: ptr::null_mut(),
            consumed_tail: ptr::null_mut(),
            consumed_len: 0,
            _owns: PhantomData,
        }
    }

    /// Turns the remaining values into an iterator in push (FIFO) order.
    ///
    /// The remaining list is reversed in place, once, in O(n) and without allocating.
    ///
    /// ```
    /// let stack = spanflow_lockfree::TreiberStack::new();
    /// stack.extend(["a", "b", "c"]);
    /// let fifo: Vec<_> = stack.take_all().into_fifo().collect();
    /// assert_eq!(fifo, ["a", "b", "c"]);
    /// ```
    pub fn into_fifo(mut self) -> IntoFifo<T> {
        let mut reversed: *mut Node<T> = ptr::null_mut();
        let mut node = self.next;
        while !node.is_null() {
            // SAFETY: the chain is ours since the swap in `take_all`; the nodes stay allocated
            // until `retire_chain`. Losing `pop`s may read `next` concurrently, which is why it
            // is atomic; their CAS fails whatever they read.
            let following = unsafe { (*node).next.load(Ordering::Relaxed) };
            // SAFETY: as above.
            unsafe { (*node).next.store(reversed, Ordering::Relaxed) };
            reversed = node;
            node = following;
        }
        self.next = reversed;
        IntoFifo { inner: self }
    }

    /// Returns `true` if no value is left.
    pub fn is_empty(&self) -> bool {
        self.next.is_null()
    }
}

impl<T> Iterator for TakeAll<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let node = self.next;
        if node.is_null() {
            return None;
        }
        // SAFETY: `node` belongs to the chain detached by `take_all`, which we own; it is still
        // allocated (freed only after `retire_chain`) and its value has not been taken.
        self.next = unsafe { (*node).next.load(Ordering::Relaxed) };
        // SAFETY: as above; each node is visited once, so the value is moved out once.
        let value = unsafe { Node::take_value(node) };
        // SAFETY: as above; relinking into our private `consumed` chain.
        unsafe { (*node).next.store(self.consumed, Ordering::Relaxed) };
        if self.consumed.is_null() {
            self.consumed_tail = node;
        }
        self.consumed = node;
        self.consumed_len += 1;
        Some(value)
    }
}

impl<T> FusedIterator for TakeAll<T> {}

impl<T> Drop for TakeAll<T> {
    fn drop(&mut self) {
        for value in self.by_ref() {
            drop(value);
        }
        // SAFETY: `consumed` holds only nodes detached by `take_all` whose values were moved
        // out; concurrent losing `pop`s are covered by the epoch.
        unsafe { retire_chain(self.consumed, self.consumed_tail, self.consumed_len) };
    }
}

impl<T> fmt::Debug for TakeAll<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TakeAll")
            .field("is_empty", &self.next.is_null())
            .finish()
    }
}

/// The values detached by [`TreiberStack::take_all`], oldest first; see [`TakeAll::into_fifo`].
pub struct IntoFifo<T> {
    inner: TakeAll<T>,
}

impl<T> IntoFifo<T> {
    /// Returns `true` if no value is left.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

impl<T> Iterator for IntoFifo<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.inner.next()
    }
}

impl<T> FusedIterator for IntoFifo<T> {}

impl<T> fmt::Debug for IntoFifo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoFifo")
            .field("is_empty", &self.inner.is_empty())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;

    #[derive(Debug)]
    struct Counted(Arc<StdAtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn push_then_pop_is_lifo() {
        let s = TreiberStack::new();
        for i in 0..10 {
            s.push(i);
        }
        for i in (0..10).rev() {
            assert_eq!(s.pop(), Some(i));
        }
        assert_eq!(s.pop(), None);
        assert!(s.is_empty());
    }

    #[test]
    fn push_list_equals_sequential_pushes() {
        let s = TreiberStack::new();
        s.push(0);
        s.push_list(1..5);
        s.push_list(std::iter::empty());
        assert_eq!(s.take_all().collect::<Vec<_>>(), [4, 3, 2, 1, 0]);
    }

    #[test]
    fn take_all_lifo_and_fifo() {
        let s: TreiberStack<i32> = (0..6).collect();
        assert_eq!(s.take_all().collect::<Vec<_>>(), [5, 4, 3, 2, 1, 0]);
        s.extend(0..6);
        assert_eq!(
            s.take_all().into_fifo().collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
        assert!(s.take_all().is_empty());
        assert_eq!(s.take_all().into_fifo().next(), None);
    }

    #[test]
    fn fifo_after_partial_lifo_consumption() {
        let s: TreiberStack<i32> = (0..6).collect();
        let mut all = s.take_all();
        assert_eq!(all.next(), Some(5));
        assert_eq!(all.next(), Some(4));
        assert_eq!(all.into_fifo().collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn every_value_dropped_once() {
        let drops = Arc::new(StdAtomicUsize::new(0));
        {
            let s = TreiberStack::new();
            for _ in 0..10 {
                s.push(Counted(drops.clone()));
            }
            s.push_list((0..10).map(|_| Counted(drops.clone())));
            drop(s.pop());
            let mut all = s.take_all();
            drop(all.next());
            drop(all); // 18 values left in the iterator
            s.push_list((0..5).map(|_| Counted(drops.clone())));
            let mut fifo = s.take_all().into_fifo();
            drop(fifo.next());
            drop(fifo);
            s.push_list((0..7).map(|_| Counted(drops.clone())));
            // 7 left in the stack, dropped with it
        }
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 32);
    }

    #[test]
    fn concurrent_push_pop_counts() {
        let s = Arc::new(TreiberStack::new());
        let threads = 4;
        // Miri interprets every step; a few hundred operations still interleave the threads.
        let per = if cfg!(miri) { 200 } else { 2_000 };
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for i in 0..per {
                        if i % 3 == 0 {
                            s.push_list([t * per + i]);
                        } else {
                            s.push(t * per + i);
                        }
                        if let Some(v) = s.pop() {
                            got.push(v);
                        }
                    }
                    got
                })
            })
            .collect();
        let mut seen: Vec<usize> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        seen.extend(s.take_all());
        seen.sort_unstable();
        assert_eq!(seen, (0..threads * per).collect::<Vec<_>>());
    }
}
