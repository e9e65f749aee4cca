//! The Chase–Lev deque: [`Worker`] (owner end) and [`Stealer`] (thief end).
//!
//! Indices grow without bound (wrapping `usize`); index `i` lives in slot `i & mask` of the current
//! buffer. Live items are `top..bottom`. See the module doc of [`crate::deque`] for the protocol.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::Arc;

use crossbeam_epoch as epoch;
use crossbeam_utils::CachePadded;

use super::{MAX_BATCH, Steal, batch_size};
use crate::loom::{AtomicPtr, AtomicUsize, Backoff, Ordering, UnsafeCell, fence};

/// Smallest buffer. Tiny under loom so that models exercise resizing.
#[cfg(not(loom))]
const MIN_CAP: usize = 64;
#[cfg(loom)]
const MIN_CAP: usize = 2;

/// Signed distance `b - t` between two wrapping indices.
#[inline]
fn distance(b: usize, t: usize) -> isize {
    b.wrapping_sub(t) as isize
}

struct Slot<T> {
    /// The index this slot may be written with next: `i` while index `i` is (or may be) held by
    /// the owner, `i + capacity` once the consumer that claimed `i` through `top` has read it.
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A ring of `mask + 1` slots (a power of two).
struct Buffer<T> {
    mask: usize,
    slots: Box<[Slot<T>]>,
}

impl<T> Buffer<T> {
    /// Allocates a buffer whose stamps make indices `start..start + cap` writable.
    fn alloc(cap: usize, start: usize) -> *mut Buffer<T> {
        debug_assert!(cap.is_power_of_two());
        let mask = cap - 1;
        let mut stamps = vec![0usize; cap];
        for j in 0..cap {
            let index = start.wrapping_add(j);
            stamps[index & mask] = index;
        }
        let slots = stamps
            .into_iter()
            .map(|stamp| Slot {
                stamp: AtomicUsize::new(stamp),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Box::into_raw(Box::new(Buffer { mask, slots }))
    }

    #[inline]
    fn cap(&self) -> usize {
        self.mask + 1
    }

    #[inline]
    fn slot(&self, index: usize) -> &Slot<T> {
        // SAFETY: `index & mask < mask + 1 == slots.len()`.
        unsafe { self.slots.get_unchecked(index & self.mask) }
    }

    /// Reads the value of `index` and releases the slot for `index + capacity`.
    ///
    /// # Safety
    /// As for [`Slot::read`]; the caller claimed `index` through the CAS on `top`.
    #[inline]
    unsafe fn consume(&self, index: usize) -> T {
        // SAFETY: forwarded from the caller.
        unsafe { self.slot(index).consume(index.wrapping_add(self.cap())) }
    }
}

impl<T> Slot<T> {
    /// Writes `value` into the slot.
    ///
    /// # Safety
    /// The caller is the owner, has checked `stamp == index` with Acquire (so the last reader of
    /// the slot is done), and the slot holds no live value.
    #[inline]
    unsafe fn write(&self, value: T) {
        self.value.with_mut(|p| {
            // SAFETY: by the caller's contract nobody else accesses the slot now.
            unsafe { p.write(MaybeUninit::new(value)) }
        });
    }

    /// Moves the value out (bitwise).
    ///
    /// # Safety
    /// The caller owns the slot's index (claimed it through `top`, or is the owner popping from
    /// the bottom), the write of that index happens-before this read, and the value is moved out
    /// once.
    #[inline]
    unsafe fn read(&self) -> T {
        self.value.with(|p| {
            // SAFETY: the slot holds the initialised value of the index (caller's contract); it is
            // not written concurrently (the owner waits for the stamp before rewriting it).
            let value = unsafe { p.read() };
            // SAFETY: as above, the value was initialised by `write`.
            unsafe { value.assume_init() }
        })
    }

    /// Reads the value and releases the slot for index `next` (the claimed index + capacity).
    ///
    /// # Safety
    /// As for [`Slot::read`]; the caller claimed the index through the CAS on `top`.
    #[inline]
    unsafe fn consume(&self, next: usize) -> T {
        // SAFETY: forwarded from the caller.
        let value = unsafe { self.read() };
        // Release: our read of the slot happens-before the owner's next write of it; pairs with
        // the Acquire stamp load in `Worker::push`.
        self.stamp.store(next, Ordering::Release);
        value
    }
}

/// Frees a buffer's memory without dropping any value in it.
///
/// # Safety
/// `buffer` came from `Buffer::alloc`, and nobody can access it any more.
unsafe fn free_buffer<T>(buffer: *mut Buffer<T>) {
    // SAFETY: forwarded; slots hold `MaybeUninit`, so no `T` is dropped here.
    drop(unsafe { Box::from_raw(buffer) });
}

/// A `Send` wrapper to hand a retired buffer to the epoch collector.
struct Retired<T>(*mut Buffer<T>);
// SAFETY: the collector only frees the memory; no `T` is touched on its thread.
unsafe impl<T> Send for Retired<T> {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Lifo,
    Fifo,
}

/// The two indices, on one cache line: the owner's `pop` and every `steal` read both and write
/// one, so keeping them together moves one line between the owner and a thief instead of two
/// (crossbeam-deque lays them out the same way).
struct Ends {
    /// Next index to steal. Advanced only by CAS.
    top: AtomicUsize,
    /// Next index to push. Written only by the owner.
    bottom: AtomicUsize,
}

struct Inner<T> {
    ends: CachePadded<Ends>,
    /// The current buffer; replaced only by the owner.
    buffer: CachePadded<AtomicPtr<Buffer<T>>>,
    flavor: Flavor,
}

impl<T> Inner<T> {
    /// The owner's half of the handshake of Lê et al.: store `bottom = b`, then read `top`.
    ///
    /// Paired with [`Inner::read_top_bottom`] this is Dekker's pattern: either the thief sees the
    /// decremented `bottom`, or the owner sees the thief's incremented `top` (and then the CAS on
    /// `top` decides the last item). Written as in the paper, `store; fence(SeqCst); load`, which
    /// loom can check (it models `SeqCst` fences but treats `SeqCst` accesses as `AcqRel`). It is
    /// also the fast form here: Rust emits the fence as `lock or` on the stack, and on this AMD
    /// machine a `SeqCst` store (`xchg` on the shared `bottom` line) made push+pop 1.7x slower.
    #[inline]
    fn publish_bottom_read_top(&self, b: usize) -> usize {
        // Release: thieves that read this `bottom` see the owner's earlier slot writes; pairs
        // with the Acquire load of `bottom` in `read_top_bottom`.
        self.ends.bottom.store(b, Ordering::Release);
        // SeqCst fence: orders the store above before the load below; pairs with the `SeqCst`
        // loads in `read_top_bottom`.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence.
        self.ends.top.load(Ordering::Relaxed)
    }

    /// The thief's half of the handshake: read `top`, then `bottom`, both `SeqCst`.
    ///
    /// Lê et al. put a `SeqCst` fence between two plain loads here. Two `SeqCst` loads give the
    /// same guarantee in the C++20 model (which Rust uses), and on x86 they are plain `mov`s, so
    /// an empty-handed steal costs no locked instruction. The argument, with the owner's
    /// `store bottom; fence(SeqCst) F; load top`: suppose the thief's load of `bottom` (Lb) misses
    /// the owner's store (so Lb is coherence-ordered before it) and the owner's load of `top` (Lt')
    /// misses the write the thief's load of `top` (Lt) read (so Lt' is coherence-ordered before
    /// Lt). In the single total order S of `SeqCst` operations: Lb precedes F ([atomics.order]
    /// p4.2: Lb is `SeqCst`, the store happens before F), F precedes Lt (p4.3: F happens before
    /// Lt', Lt is `SeqCst`), and Lt precedes Lb (sequenced before). That is a cycle, so at least
    /// one side sees the other, exactly as with the fence.
    ///
    /// Loom models `SeqCst` accesses as `AcqRel` (weaker than C++20, so it would report this
    /// pattern as racy), which is why the loom build keeps the paper's fence between the loads.
    #[inline]
    fn read_top_bottom(&self) -> (usize, usize) {
        // SeqCst: the thief's half of the handshake above (pairs with the owner's fence in
        // `publish_bottom_read_top`); also Acquire, pairing with the CAS that set `top`.
        let t = self.ends.top.load(Ordering::SeqCst);
        #[cfg(loom)]
        fence(Ordering::SeqCst);
        // SeqCst: as above; also Acquire, pairing with the Release stores of `bottom`, so the slot
        // of `t` and the buffer holding it are visible.
        (t, self.ends.bottom.load(Ordering::SeqCst))
    }
}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        // Relaxed: we are the last reference (Arc's drop synchronized with every other handle).
        let top = self.ends.top.load(Ordering::Relaxed);
        let bottom = self.ends.bottom.load(Ordering::Relaxed);
        let buffer = self.buffer.load(Ordering::Relaxed);
        // SAFETY: the current buffer is live until we free it below.
        let buffer_ref = unsafe { &*buffer };
        let mut index = top;
        while index != bottom {
            // SAFETY: indices `top..bottom` hold live values, owned by the deque, and the buffer is
            // current; no other handle exists.
            drop(unsafe { buffer_ref.slot(index).read() });
            index = index.wrapping_add(1);
        }
        // SAFETY: no handle exists any more; the buffer's values were dropped above.
        unsafe { free_buffer(buffer) };
    }
}

/// The owner end of a work-stealing deque.
///
/// The owner pushes at the back and pops from the back (LIFO flavour) or the front (FIFO flavour);
/// [`Stealer`]s take from the front. A `Worker` is `Send` but not `Sync`: exactly one thread uses it
/// at a time.
///
/// # Examples
///
/// ```
/// use spanflow_lockfree::deque::{Steal, Worker};
///
/// let w = Worker::new_lifo();
/// let s = w.stealer();
/// w.push(1);
/// w.push(2);
/// w.push(3);
/// assert_eq!(w.pop(), Some(3));          // the owner takes the newest
/// assert_eq!(s.steal(), Steal::Success(1)); // thieves take the oldest
/// assert_eq!(w.len(), 1);
/// ```
pub struct Worker<T> {
    inner: Arc<Inner<T>>,
    /// The owner's copy of `inner.buffer` (only the owner replaces it).
    buffer: Cell<*mut Buffer<T>>,
    /// The current buffer's first slot and mask, cached so that the owner's hot paths reach a
    /// slot with one load instead of going through `buffer` and the slice header.
    slots: Cell<*const Slot<T>>,
    mask: Cell<usize>,
    /// A lower bound of `top` (the last value the owner saw), so that `pop` on an empty deque
    /// returns without reading the thieves' cache line.
    top_seen: Cell<usize>,
    flavor: Flavor,
    /// Consecutive pops that left the buffer less than a quarter full (shrink hysteresis).
    sparse_pops: Cell<usize>,
    _not_sync: PhantomData<*mut ()>,
}

// SAFETY: the worker owns its `T`s; moving it to another thread moves them. It is not `Sync`
// (the `Cell`s and the raw `PhantomData` see to that): one owner thread at a time.
unsafe impl<T: Send> Send for Worker<T> {}

impl<T> Worker<T> {
    fn with_flavor(flavor: Flavor) -> Self {
        let buffer = Buffer::alloc(MIN_CAP, 0);
        let inner = Arc::new(Inner {
            ends: CachePadded::new(Ends {
                top: AtomicUsize::new(0),
                bottom: AtomicUsize::new(0),
            }),
            buffer: CachePadded::new(AtomicPtr::new(buffer)),
            flavor,
        });
        // SAFETY: `buffer` was just allocated and is live.
        let buffer_ref = unsafe { &*buffer };
        let (slots, mask) = (buffer_ref.slots.as_ptr(), buffer_ref.mask);
        Worker {
            inner,
            buffer: Cell::new(buffer),
            slots: Cell::new(slots),
            mask: Cell::new(mask),
            top_seen: Cell::new(0),
            flavor,
            sparse_pops: Cell::new(0),
            _not_sync: PhantomData,
        }
    }

    /// Creates a worker whose `pop` takes the most recently pushed item.
    ///
    /// ```
    /// let w = spanflow_lockfree::Worker::new_lifo();
    /// w.push(1);
    /// w.push(2);
    /// assert_eq!(w.pop(), Some(2));
    /// ```
    pub fn new_lifo() -> Self {
        Self::with_flavor(Flavor::Lifo)
    }

    /// Creates a worker whose `pop` takes the oldest item.
    ///
    /// ```
    /// let w = spanflow_lockfree::Worker::new_fifo();
    /// w.push(1);
    /// w.push(2);
    /// assert_eq!(w.pop(), Some(1));
    /// ```
    pub fn new_fifo() -> Self {
        Self::with_flavor(Flavor::Fifo)
    }

    /// Creates a stealer for this deque.
    pub fn stealer(&self) -> Stealer<T> {
        Stealer {
            inner: self.inner.clone(),
        }
    }

    /// The number of items in the deque (a snapshot while thieves are active).
    pub fn len(&self) -> usize {
        // Relaxed: a snapshot; `bottom` is our own.
        let b = self.inner.ends.bottom.load(Ordering::Relaxed);
        let t = self.inner.ends.top.load(Ordering::Relaxed);
        distance(b, t).max(0) as usize
    }

    /// Returns `true` if the deque is empty (a snapshot while thieves are active).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(all(test, not(loom)))]
    fn buffer(&self) -> &Buffer<T> {
        // SAFETY: the owner's buffer is the current one; only the owner retires buffers, and it
        // updates this cell before retiring, so the pointer is live while `&self` is borrowed.
        unsafe { &*self.buffer.get() }
    }

    /// The current buffer's capacity, from the owner's cache.
    #[inline]
    fn cap(&self) -> usize {
        self.mask.get() + 1
    }

    /// The slot of `index` in the current buffer, from the owner's cache.
    #[inline]
    fn slot(&self, index: usize) -> &Slot<T> {
        // SAFETY: `slots`/`mask` describe the current buffer (updated with `buffer` before any
        // retirement), so `index & mask` is in bounds of its slot array.
        let slot = unsafe { self.slots.get().add(index & self.mask.get()) };
        // SAFETY: the slot is in the current buffer, which only the owner retires, after
        // updating this cache; so it is live while `&self` is borrowed.
        unsafe { &*slot }
    }

    /// Pushes an item at the back.
    ///
    /// ```
    /// let w = spanflow_lockfree::Worker::new_lifo();
    /// w.push("task");
    /// assert_eq!(w.len(), 1);
    /// ```
    #[inline]
    pub fn push(&self, value: T) {
        // Relaxed: only this thread writes `bottom`.
        let b = self.inner.ends.bottom.load(Ordering::Relaxed);
        // Acquire: pairs with the Release stamp store in `Buffer::consume`; the last reader of
        // this slot is done before we overwrite it. `stamp == b` also proves there is room
        // (index `b - cap` is consumed), so the fast path does not touch the thieves' `top`.
        let mut slot = self.slot(b);
        if slot.stamp.load(Ordering::Acquire) != b {
            self.make_room(b);
            slot = self.slot(b);
        }
        // SAFETY: we are the owner and the stamp of `b`'s slot reads `b` (after `make_room`, in a
        // fresh buffer whose window contains `b`), so no reader is left and the slot is free.
        unsafe { slot.write(value) };
        // Release: publishes the slot write (and any buffer swap) to thieves; pairs with the
        // Acquire load of `bottom` in `steal`.
        self.inner
            .ends
            .bottom
            .store(b.wrapping_add(1), Ordering::Release);
    }

    /// The slot of `b` is not free: the buffer is full, a thief that claimed `b - cap` has not
    /// finished reading it, or it read it from an older buffer (leaving this stamp stale).
    /// Never waits: grows when full, otherwise moves to a fresh buffer of the same size, whose
    /// stamps are exact and which no thief has seen.
    #[cold]
    fn make_room(&self, b: usize) {
        // Relaxed: a capacity estimate; a stale (smaller) `top` only makes us grow early.
        let t = self.inner.ends.top.load(Ordering::Relaxed);
        let cap = self.cap();
        if distance(b, t) >= cap as isize {
            self.resize(cap * 2);
        } else {
            self.resize(cap);
        }
    }

    /// Pops an item: the newest for a LIFO worker, the oldest for a FIFO one.
    ///
    /// ```
    /// let w = spanflow_lockfree::Worker::new_lifo();
    /// assert_eq!(w.pop(), None);
    /// w.push(5);
    /// assert_eq!(w.pop(), Some(5));
    /// ```
    #[inline]
    pub fn pop(&self) -> Option<T> {
        match self.flavor {
            Flavor::Lifo => self.pop_back(),
            Flavor::Fifo => self.pop_front(),
        }
    }

    #[inline]
    fn pop_back(&self) -> Option<T> {
        // Relaxed: only this thread writes `bottom`.
        let b = self.inner.ends.bottom.load(Ordering::Relaxed);
        // A quick emptiness check against the last `top` we saw, without touching the thieves'
        // line: `top` only grows, so `b <= top_seen` means empty for sure.
        if distance(b, self.top_seen.get()) <= 0 {
            return None;
        }
        let b = b.wrapping_sub(1);
        let t = self.inner.publish_bottom_read_top(b);
        self.top_seen.set(t);
        let len = distance(b, t);
        if len < 0 {
            // A thief took the last item meanwhile; restore `bottom`.
            // Release: as for the decrement above.
            self.inner
                .ends
                .bottom
                .store(b.wrapping_add(1), Ordering::Release);
            return None;
        }
        if len > 0 {
            // SAFETY: `t < b`: after the handshake thieves claim only indices below `b`, so
            // index `b` is ours; we wrote it ourselves.
            let value = unsafe { self.slot(b).read() };
            self.maybe_shrink(len as usize);
            return Some(value);
        }
        // The last item: race the thieves for it with the CAS on `top`.
        // SeqCst: the same total order as the thieves' CAS (Lê et al.).
        let won = self
            .inner
            .ends
            .top
            .compare_exchange(t, t.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        // Release: as for the decrement above; the deque is now empty at `t + 1`.
        self.inner
            .ends
            .bottom
            .store(b.wrapping_add(1), Ordering::Release);
        if won {
            self.top_seen.set(t.wrapping_add(1));
            // SAFETY: the CAS claimed index `t == b`; we wrote it ourselves.
            let value = unsafe { self.slot(t).consume(t.wrapping_add(self.cap())) };
            self.maybe_shrink(0);
            Some(value)
        } else {
            None
        }
    }

    #[inline]
    fn pop_front(&self) -> Option<T> {
        let backoff = Backoff::new();
        loop {
            // Relaxed: only used as the CAS's expected value.
            let t = self.inner.ends.top.load(Ordering::Relaxed);
            // Relaxed: only this thread writes `bottom`.
            let b = self.inner.ends.bottom.load(Ordering::Relaxed);
            let len = distance(b, t);
            if len <= 0 {
                return None;
            }
            // SeqCst: the same total order as the thieves' CAS on `top`.
            if self
                .inner
                .ends
                .top
                .compare_exchange(t, t.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                // SAFETY: the CAS claimed index `t`, which we wrote into our current buffer.
                let value = unsafe { self.slot(t).consume(t.wrapping_add(self.cap())) };
                self.maybe_shrink((len - 1) as usize);
                return Some(value);
            }
            backoff.spin();
        }
    }

    /// Shrinks the buffer after `capacity` consecutive pops that left it under a quarter full; a
    /// pop that leaves it at least a quarter full resets the count. A buffer of `MIN_CAP` slots
    /// never shrinks, so it skips the bookkeeping (`resize` resets the count).
    #[inline]
    fn maybe_shrink(&self, len: usize) {
        let cap = self.cap();
        if cap <= MIN_CAP {
            return;
        }
        if len >= cap / 4 {
            if self.sparse_pops.get() != 0 {
                self.sparse_pops.set(0);
            }
        } else {
            let n = self.sparse_pops.get() + 1;
            if n >= cap {
                self.resize(cap / 2);
            } else {
                self.sparse_pops.set(n);
            }
        }
    }

    /// Moves the live items into a new buffer of `new_cap` slots and retires the old buffer.
    #[cold]
    fn resize(&self, new_cap: usize) {
        // Relaxed: only this thread writes `bottom`.
        let b = self.inner.ends.bottom.load(Ordering::Relaxed);
        // Acquire: pairs with thieves' CAS on `top` so the window starts as late as we can see;
        // a stale value only copies dead slots.
        let t = self.inner.ends.top.load(Ordering::Acquire);
        let old = self.buffer.get();
        let new = Buffer::<T>::alloc(new_cap, t);
        // SAFETY: `old` is our current buffer; only we retire it, below.
        let old_ref = unsafe { &*old };
        // SAFETY: `new` was just allocated and is private.
        let new_ref = unsafe { &*new };
        let mut index = t;
        while index != b {
            // SAFETY: `old` is our current buffer and `index` in `t..b` holds a value we wrote;
            // thieves may read it concurrently (reads do not race), and whoever claims the index
            // takes it from whichever copy it reads.
            let value = old_ref.slot(index).value.with(|p| unsafe { p.read() });
            new_ref.slot(index).value.with_mut(|p| {
                // SAFETY: `new` is private until the store below; plain bitwise copy.
                unsafe { p.write(value) }
            });
            index = index.wrapping_add(1);
        }
        self.buffer.set(new);
        self.slots.set(new_ref.slots.as_ptr());
        self.mask.set(new_ref.mask);
        self.sparse_pops.set(0);
        // Release: thieves that load the new buffer see its slots and stamps; pairs with the
        // Acquire load of `buffer` in `steal`.
        self.inner.buffer.store(new, Ordering::Release);
        let retired = Retired(old);
        let free = move || {
            let retired = retired;
            // SAFETY: the epoch has passed: no thief still reads the old buffer.
            unsafe { free_buffer(retired.0) }
        };
        let guard = epoch::pin();
        // SAFETY: the old buffer is no longer reachable from `inner.buffer`; thieves that loaded
        // it are pinned, and the collector waits for them. Its values now belong to the new
        // buffer (or to thieves), so freeing drops none.
        unsafe { guard.defer_unchecked(free) };
    }
}

impl<T> fmt::Debug for Worker<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("flavor", &self.flavor)
            .field("len", &self.len())
            .finish()
    }
}

/// The thief end of a work-stealing deque: `Clone + Send + Sync`.
///
/// # Examples
///
/// ```
/// use spanflow_lockfree::deque::{Steal, Worker};
///
/// let w = Worker::new_lifo();
/// w.push(1);
/// let s = w.stealer();
/// std::thread::spawn(move || assert_eq!(s.steal(), Steal::Success(1))).join().unwrap();
/// ```
pub struct Stealer<T> {
    inner: Arc<Inner<T>>,
}

// SAFETY: stealers only move `T`s out by value; with `T: Send` they may live on any thread.
unsafe impl<T: Send> Send for Stealer<T> {}
// SAFETY: every operation through `&Stealer` is a lock-free protocol on atomics; see above.
unsafe impl<T: Send> Sync for Stealer<T> {}

impl<T> Clone for Stealer<T> {
    fn clone(&self) -> Self {
        Stealer {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for Stealer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stealer").field("len", &self.len()).finish()
    }
}

impl<T> Stealer<T> {
    /// The number of items in the deque (a snapshot).
    pub fn len(&self) -> usize {
        // Acquire/Acquire: a consistent-enough snapshot; nothing behind the indices is read.
        let t = self.inner.ends.top.load(Ordering::Acquire);
        let b = self.inner.ends.bottom.load(Ordering::Acquire);
        distance(b, t).max(0) as usize
    }

    /// Returns `true` if the deque is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steals the oldest item.
    ///
    /// ```
    /// use spanflow_lockfree::deque::{Steal, Worker};
    /// let w = Worker::new_lifo();
    /// w.push(1);
    /// w.push(2);
    /// assert_eq!(w.stealer().steal(), Steal::Success(1));
    /// ```
    #[inline]
    pub fn steal(&self) -> Steal<T> {
        let (t, b) = self.inner.read_top_bottom();
        if distance(b, t) <= 0 {
            return Steal::Empty;
        }
        let _guard = epoch::pin();
        // Acquire: pairs with the Release store in `Worker::resize`. A buffer loaded after `top`
        // holds index `t` unless `top` has moved past `t`, in which case the CAS below fails.
        let buffer = self.inner.buffer.load(Ordering::Acquire);
        // SeqCst: the CAS that decides between thieves and the owner's last-item pop (Lê et al.).
        if self
            .inner
            .ends
            .top
            .compare_exchange(t, t.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return Steal::Retry;
        }
        // SAFETY: we are pinned, so `buffer` is live.
        let buffer = unsafe { &*buffer };
        // SAFETY: the CAS claimed index `t`, whose write happens-before our `bottom` load, and
        // whose slot the owner will not rewrite until we release the stamp in `consume`.
        Steal::Success(unsafe { buffer.consume(t) })
    }

    /// Steals about half of the items (at most 32) into `dest`.
    ///
    /// ```
    /// use spanflow_lockfree::deque::Worker;
    /// let src = Worker::new_fifo();
    /// (0..10).for_each(|i| src.push(i));
    /// let dest = Worker::new_fifo();
    /// assert!(src.stealer().steal_batch(&dest).is_success());
    /// assert_eq!(dest.len(), 5);
    /// ```
    pub fn steal_batch(&self, dest: &Worker<T>) -> Steal<()> {
        self.steal_batch_with_limit(dest, MAX_BATCH)
    }

    /// Steals about half of the items, at most `limit`, into `dest`.
    pub fn steal_batch_with_limit(&self, dest: &Worker<T>, limit: usize) -> Steal<()> {
        match self.steal_batch_inner(dest, limit, false) {
            Steal::Empty => Steal::Empty,
            Steal::Retry => Steal::Retry,
            Steal::Success(_) => Steal::Success(()),
        }
    }

    /// Steals about half of the items (at most 32), returns one and moves the rest into `dest`.
    ///
    /// ```
    /// use spanflow_lockfree::deque::{Steal, Worker};
    /// let src = Worker::new_fifo();
    /// (0..4).for_each(|i| src.push(i));
    /// let dest = Worker::new_fifo();
    /// assert_eq!(src.stealer().steal_batch_and_pop(&dest), Steal::Success(0));
    /// assert_eq!(dest.pop(), Some(1));
    /// ```
    pub fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
        self.steal_batch_with_limit_and_pop(dest, MAX_BATCH)
    }

    /// Like [`steal_batch_and_pop`](Stealer::steal_batch_and_pop) with at most `limit` items.
    pub fn steal_batch_with_limit_and_pop(&self, dest: &Worker<T>, limit: usize) -> Steal<T> {
        match self.steal_batch_inner(dest, limit, true) {
            Steal::Empty => Steal::Empty,
            Steal::Retry => Steal::Retry,
            Steal::Success(first) => match first {
                Some(value) => Steal::Success(value),
                // Unreachable in practice: with `pop_first` the first item is always returned.
                None => Steal::Retry,
            },
        }
    }

    /// Claims a batch and pushes it into `dest`; with `pop_first`, returns the first item instead
    /// of pushing it. `Success(None)` means items were moved without popping one.
    fn steal_batch_inner(
        &self,
        dest: &Worker<T>,
        limit: usize,
        pop_first: bool,
    ) -> Steal<Option<T>> {
        if Arc::ptr_eq(&self.inner, &dest.inner) {
            // Stealing from ourselves: nothing moves.
            return match dest.pop() {
                Some(value) if pop_first => Steal::Success(Some(value)),
                Some(value) => {
                    dest.push(value);
                    Steal::Success(None)
                }
                None => Steal::Empty,
            };
        }
        let (t, b) = self.inner.read_top_bottom();
        let len = distance(b, t);
        if len <= 0 {
            return Steal::Empty;
        }
        let n = batch_size(len as usize, limit);
        let guard = epoch::pin();
        // Acquire: as in `steal`.
        let buffer = self.inner.buffer.load(Ordering::Acquire);
        match self.inner.flavor {
            // The owner pops from the front with a CAS too and never takes items from the back,
            // so the whole run `t..t + n` is present and one CAS claims it.
            Flavor::Fifo => {
                // SeqCst: the same total order as the other CASes on `top`.
                if self
                    .inner
                    .ends
                    .top
                    .compare_exchange(t, t.wrapping_add(n), Ordering::SeqCst, Ordering::Relaxed)
                    .is_err()
                {
                    return Steal::Retry;
                }
                let mut first = None;
                // SAFETY: pinned, so `buffer` is live.
                let buffer = unsafe { &*buffer };
                for k in 0..n {
                    let index = t.wrapping_add(k);
                    // SAFETY: the CAS claimed `t..t + n`, all below the `bottom` we loaded with
                    // Acquire after their writes; the owner waits for our stamp release.
                    let value = unsafe { buffer.consume(index) };
                    if k == 0 && pop_first {
                        first = Some(value);
                    } else {
                        dest.push(value);
                    }
                }
                drop(guard);
                Steal::Success(first)
            }
            // The owner may pop from the back at any time, so claim one index per CAS, each
            // validated like a single `steal` (crossbeam-deque does the same).
            Flavor::Lifo => {
                drop(guard);
                let mut first = None;
                let mut moved = 0usize;
                while moved < n {
                    match self.steal() {
                        Steal::Success(value) => {
                            if moved == 0 && pop_first {
                                first = Some(value);
                            } else {
                                dest.push(value);
                            }
                            moved += 1;
                        }
                        Steal::Empty | Steal::Retry => break,
                    }
                }
                if moved == 0 {
                    Steal::Retry
                } else {
                    Steal::Success(first)
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn lifo_pop_order_and_steal_order() {
        let w = Worker::new_lifo();
        let s = w.stealer();
        for i in 0..10 {
            w.push(i);
        }
        assert_eq!(w.pop(), Some(9));
        assert_eq!(s.steal(), Steal::Success(0));
        assert_eq!(w.len(), 8);
        assert_eq!(s.len(), 8);
        let rest: Vec<_> = std::iter::from_fn(|| w.pop()).collect();
        assert_eq!(rest, [8, 7, 6, 5, 4, 3, 2, 1]);
        assert!(s.steal().is_empty());
        assert!(w.is_empty());
    }

    #[test]
    fn fifo_pop_order() {
        let w = Worker::new_fifo();
        for i in 0..5 {
            w.push(i);
        }
        let all: Vec<_> = std::iter::from_fn(|| w.pop()).collect();
        assert_eq!(all, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn grows_and_shrinks_with_hysteresis() {
        // Smaller under Miri, which interprets every step; the same growth and shrinking.
        let (rounds, n): (usize, usize) = if cfg!(miri) { (2, 200) } else { (4, 1000) };
        let cap = n.next_power_of_two();
        let w = Worker::new_lifo();
        for round in 0..rounds {
            for i in 0..n {
                w.push(i);
            }
            assert_eq!(w.buffer().cap(), cap, "round {round}");
            for i in (0..n).rev() {
                assert_eq!(w.pop(), Some(i));
            }
            // A steady working set keeps its buffer.
            assert_eq!(w.buffer().cap(), cap);
        }
        // A small working set eventually gives the memory back.
        for _ in 0..10 * n {
            w.push(1);
            w.pop();
        }
        assert_eq!(w.buffer().cap(), MIN_CAP);
    }

    #[test]
    fn busy_stamp_moves_to_a_fresh_buffer() {
        let w = Worker::new_lifo();
        let s = w.stealer();
        for i in 0..MIN_CAP {
            w.push(i);
        }
        // Simulate a thief that claimed index 0 but has not released its slot yet.
        let before = w.buffer.get();
        assert_eq!(s.steal(), Steal::Success(0));
        w.buffer().slot(0).stamp.store(0, Ordering::Relaxed);
        w.push(MIN_CAP);
        assert_ne!(w.buffer.get(), before);
        let mut all: Vec<_> = std::iter::from_fn(|| w.pop()).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=MIN_CAP).collect::<Vec<_>>());
    }

    #[test]
    fn steal_batch_moves_about_half() {
        for src in [Worker::new_lifo(), Worker::new_fifo()] {
            for i in 0..100 {
                src.push(i);
            }
            let dest = Worker::new_fifo();
            let s = src.stealer();
            assert_eq!(s.steal_batch(&dest), Steal::Success(()));
            assert_eq!(dest.len(), 32);
            assert_eq!(
                s.steal_batch_with_limit_and_pop(&dest, 4),
                Steal::Success(32)
            );
            assert_eq!(dest.len(), 35);
            let got: Vec<_> = std::iter::from_fn(|| dest.pop()).collect();
            let want: Vec<_> = (0..32).chain(33..36).collect();
            assert_eq!(got, want);
            assert_eq!(src.len(), 64);
        }
    }

    #[test]
    fn steal_batch_from_self_moves_nothing() {
        let w = Worker::new_fifo();
        w.push(1);
        let s = w.stealer();
        assert_eq!(s.steal_batch(&w), Steal::Success(()));
        assert_eq!(s.steal_batch_and_pop(&w), Steal::Success(1));
        assert!(s.steal_batch(&w).is_empty());
    }

    #[test]
    fn drop_frees_remaining_items() {
        let counter = Arc::new(());
        {
            let w = Worker::new_lifo();
            for _ in 0..200 {
                w.push(counter.clone());
            }
            let s = w.stealer();
            drop(s.steal());
            drop(w.pop());
            drop(w);
            assert!(s.steal().is_success());
        }
        assert_eq!(Arc::strong_count(&counter), 1);
    }
}
