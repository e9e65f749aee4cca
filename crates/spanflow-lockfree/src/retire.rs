//! Node memory: a per-thread block cache in front of the global allocator, and batched retirement
//! of unlinked nodes through crossbeam-epoch.
//!
//! Deferring every popped node on its own costs a `Deferred` per node and, every 64 nodes, a
//! 2 KiB epoch bag; walking a chain of retired nodes again when the epoch frees it touches cold
//! memory. Here each thread links the nodes it retires into a chain through their first word (a
//! node's `next` link, which is also a free block's link), remembers the chain's tail, and defers
//! the whole chain with one call every `BATCH` nodes. When the epoch has passed, the chain is
//! spliced onto the free list of the thread that runs the deferred function in O(1), without
//! touching the nodes. Deferring later than the unlink is always sound: the grace period starts
//! at the deferral.
//!
//! Under loom (`--cfg loom --cfg crossbeam_loom`) the same code runs with small constants (a
//! chain of 2, a cache of 4 blocks, slabs of 2 blocks), so a model of a few pops hands chains to
//! the epoch and reuses their blocks. Two things differ there, both because of what loom is:
//! - A block's link word is read and written through the loom `AtomicPtr` that was the node's
//!   `next` (a loom atomic is an index into loom's object store, not a pointer); fresh slab
//!   blocks get one of their own. So loom sees every link access, and a chain read on another
//!   thread without a happens-before edge from its writer would read stale links.
//! - There is no process-wide pool, and an exiting thread leaks its free blocks and its last,
//!   unfinished chain instead of handing them on. loom drops its lazy statics (crossbeam-epoch's
//!   collector too) before the main thread's thread-locals, so that destructor would touch a
//!   dropped pool and collector; and loom drops a thread's thread-locals in no fixed order, so
//!   any loom operation in that destructor would make the model nondeterministic. The pool is a
//!   Treiber push and a take-all swap, and the thread-exit path is plain code; the Miri run of
//!   the stress tests covers both.

pub(crate) use node_memory::retire;

/// Node memory with a per-thread cache in front of the global allocator, refilled from a shared
/// pool.
///
/// Epoch reclamation frees popped nodes in batches, long after they were allocated and often on
/// another thread, which keeps glibc's per-thread cache (7 chunks per size) empty and sends every
/// `push` to its slow path. Freed node blocks are kept instead: each thread has an intrusive free
/// list per size class (up to `MAX_CACHED` blocks); what overflows goes to a process-wide pool
/// per size class, which a thread whose list ran dry takes whole with one swap. Pushing a chain
/// onto the pool is a CAS on its head and taking it is a swap, so the pool has no ABA problem.
/// Blocks are raw memory (no value inside), so a block freed by one stack may serve another
/// `Node` type of the same size class. A block's first word links free blocks.
pub(crate) mod node_memory {
    use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
    use std::cell::Cell;
    use std::ptr::{self, NonNull};

    use crossbeam_epoch::Guard;

    use crate::loom::{AtomicPtr, Ordering};

    /// Size classes: 8, 16, ..., 256 bytes, alignment at most 8.
    const CLASSES: usize = 32;
    const GRAIN: usize = 8;
    /// Blocks a thread keeps per size class before it gives them to the pool.
    #[cfg(not(loom))]
    const MAX_CACHED: usize = 4096;
    #[cfg(loom)]
    const MAX_CACHED: usize = 4;
    /// Bytes of node blocks allocated at once when the caches are empty (at least two blocks).
    /// Two blocks under loom, and under Miri, whose borrow tracker slows down with every
    /// reference into one allocation.
    #[cfg(not(any(loom, miri)))]
    const SLAB_BYTES: usize = 2048;
    #[cfg(any(loom, miri))]
    const SLAB_BYTES: usize = 0;
    /// Retired nodes per deferred call.
    #[cfg(not(loom))]
    const BATCH: usize = 32;
    #[cfg(loom)]
    const BATCH: usize = 2;

    /// The size class of `layout`, if it is pooled.
    #[inline]
    const fn class_of(layout: Layout) -> Option<usize> {
        let size = layout.size();
        if layout.align() <= GRAIN && size >= GRAIN && size <= CLASSES * GRAIN {
            Some(size.div_ceil(GRAIN) - 1)
        } else {
            None
        }
    }

    fn class_layout(class: usize) -> Layout {
        // The sizes are small multiples of 8 and the alignment 8: always a valid layout.
        Layout::from_size_align((class + 1) * GRAIN, GRAIN).unwrap_or_else(|_| Layout::new::<u64>())
    }

    /// Reads the link word of a free block.
    ///
    /// # Safety
    /// `block` is a free block (at least 8 bytes, 8-aligned) owned by the caller, whose link
    /// was written by [`set_next`] or [`init_link`] (or is a retired node's `next`).
    #[cfg(not(loom))]
    #[inline]
    unsafe fn next_of(block: *mut u8) -> *mut u8 {
        // SAFETY: the caller owns the free block, whose first word holds the link.
        unsafe { block.cast::<*mut u8>().read() }
    }

    /// Writes the link word of a free block that already has one.
    ///
    /// # Safety
    /// As for [`next_of`].
    #[cfg(not(loom))]
    #[inline]
    unsafe fn set_next(block: *mut u8, next: *mut u8) {
        // SAFETY: as above.
        unsafe { block.cast::<*mut u8>().write(next) };
    }

    /// Writes the link word of a block fresh from the allocator.
    ///
    /// # Safety
    /// `block` is at least 8 bytes, 8-aligned and owned by the caller.
    #[cfg(not(loom))]
    #[inline]
    unsafe fn init_link(block: *mut u8, next: *mut u8) {
        // SAFETY: forwarded; a plain word needs no initialisation beyond the write.
        unsafe { set_next(block, next) };
    }

    /// Under loom the link is the loom atomic at the block's start (see the module docs).
    ///
    /// # Safety
    /// As for the non-loom [`next_of`]; the block's first word is a loom `AtomicPtr`.
    #[cfg(loom)]
    unsafe fn next_of(block: *mut u8) -> *mut u8 {
        // SAFETY: the caller's contract: a live loom atomic sits at the block's start.
        let link = unsafe { &*block.cast::<AtomicPtr<u8>>() };
        // Relaxed: the block is ours; whatever ordered its hand-over to us (the epoch, the
        // thread's own program order) must also order this read after the write.
        link.load(Ordering::Relaxed)
    }

    /// # Safety
    /// As for [`next_of`].
    #[cfg(loom)]
    unsafe fn set_next(block: *mut u8, next: *mut u8) {
        // SAFETY: as above.
        let link = unsafe { &*block.cast::<AtomicPtr<u8>>() };
        // Relaxed: as in `next_of`.
        link.store(next, Ordering::Relaxed);
    }

    /// # Safety
    /// `block` is at least a loom `AtomicPtr` in size and alignment and owned by the caller.
    #[cfg(loom)]
    unsafe fn init_link(block: *mut u8, next: *mut u8) {
        // SAFETY: the caller owns the fresh block; writing (not assigning) a new atomic.
        unsafe { block.cast::<AtomicPtr<u8>>().write(AtomicPtr::new(next)) };
    }

    /// Hints the CPU to bring `block`'s cache line in for writing; a no-op elsewhere (and under
    /// Miri, which runs no assembly).
    #[inline(always)]
    fn prefetch_for_write(block: *mut u8) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: a prefetch is only a hint: it never faults (not even on a null or dangling
        // address), writes no memory and changes no flags.
        unsafe {
            std::arch::asm!(
                "prefetchw [{0}]",
                in(reg) block,
                options(nostack, preserves_flags, readonly)
            );
        }
        #[cfg(any(not(target_arch = "x86_64"), miri))]
        let _ = block;
    }

    #[cfg(not(loom))]
    static POOL: [AtomicPtr<u8>; CLASSES] = [const { AtomicPtr::new(ptr::null_mut()) }; CLASSES];

    /// This thread's chain of retired nodes not yet handed to the epoch.
    struct Pending {
        /// The newest retired node; null when the chain is empty.
        head: Cell<*mut u8>,
        /// The oldest retired node, whose link is null.
        tail: Cell<*mut u8>,
        len: Cell<usize>,
        /// The layout of every node in the chain.
        layout: Cell<Layout>,
    }

    struct Local {
        heads: [Cell<*mut u8>; CLASSES],
        counts: [Cell<usize>; CLASSES],
        pending: Pending,
    }

    #[cfg(not(loom))]
    impl Drop for Local {
        fn drop(&mut self) {
            // Thread exit: hand the retired chain to the epoch (`pin` works during TLS teardown:
            // crossbeam-epoch registers a temporary participant), then give the free blocks to
            // the pool for the other threads.
            if !self.pending.head.get().is_null() {
                let guard = crossbeam_epoch::pin();
                defer_pending(&self.pending, &guard);
            }
            for class in 0..CLASSES {
                let head = self.heads[class].replace(ptr::null_mut());
                self.counts[class].set(0);
                // SAFETY: the list holds free blocks of `class` owned by this thread.
                unsafe { give_to_pool(class, head, ptr::null_mut()) };
            }
        }
    }

    impl Local {
        const fn new() -> Self {
            Local {
                heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
                counts: [const { Cell::new(0) }; CLASSES],
                pending: Pending {
                    head: Cell::new(ptr::null_mut()),
                    tail: Cell::new(ptr::null_mut()),
                    len: Cell::new(0),
                    layout: Cell::new(Layout::new::<u64>()),
                },
            }
        }
    }

    #[cfg(not(loom))]
    thread_local! {
        static LOCAL: Local = const { Local::new() };
    }

    #[cfg(loom)]
    loom::thread_local! {
        static LOCAL: Local = Local::new();
    }

    /// Pushes the chain `head..=tail` onto the pool of `class` with one CAS (`tail` may be null:
    /// then the chain is walked to find it).
    ///
    /// # Safety
    /// `head..` is a null-terminated chain of free blocks of `class` owned by the caller, and
    /// `tail`, if not null, is its last block.
    #[cfg(not(loom))]
    unsafe fn give_to_pool(class: usize, head: *mut u8, tail: *mut u8) {
        if head.is_null() {
            return;
        }
        let mut last = tail;
        if last.is_null() {
            last = head;
            loop {
                // SAFETY: the chain is ours.
                let next = unsafe { next_of(last) };
                if next.is_null() {
                    break;
                }
                last = next;
            }
        }
        let pool = &POOL[class];
        // Relaxed: only used as the CAS's expected value and as `last`'s link.
        let mut current = pool.load(Ordering::Relaxed);
        loop {
            // SAFETY: `last` is still ours until the CAS succeeds.
            unsafe { set_next(last, current) };
            // Release: the links written above are visible to the thread that swaps the pool
            // out; pairs with the Acquire swap in `allocate`.
            match pool.compare_exchange_weak(current, head, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Under loom there is no pool (see the module docs): the chain is leaked.
    ///
    /// # Safety
    /// As for the non-loom `give_to_pool`.
    #[cfg(loom)]
    unsafe fn give_to_pool(_class: usize, _head: *mut u8, _tail: *mut u8) {}

    /// Takes the whole pool of `class`, if it holds any block.
    #[cfg(not(loom))]
    fn take_pool(class: usize) -> *mut u8 {
        // Acquire: pairs with the Release CAS in `give_to_pool`; the links are ours.
        POOL[class].swap(ptr::null_mut(), Ordering::Acquire)
    }

    #[cfg(loom)]
    fn take_pool(_class: usize) -> *mut u8 {
        ptr::null_mut()
    }

    /// Allocates a block for `layout` (non-zero size), from the caches when possible.
    #[inline]
    pub(crate) fn allocate(layout: Layout) -> NonNull<u8> {
        if let Some(class) = class_of(layout) {
            let cached = LOCAL.try_with(|local| {
                let head = local.heads[class].get();
                if head.is_null() {
                    return None;
                }
                // SAFETY: `head` is a free block of this class owned by this thread.
                let next = unsafe { next_of(head) };
                local.heads[class].set(next);
                local.counts[class].set(local.counts[class].get().saturating_sub(1));
                // The next push writes `next` and reads its link: start fetching it now, so a
                // list of blocks gone cold (reclaimed after a long grace period) is not walked
                // one cache miss at a time.
                prefetch_for_write(next);
                NonNull::new(head)
            });
            if let Ok(Some(block)) = cached {
                return block;
            }
            return allocate_slow(class);
        }
        // SAFETY: callers pass layouts of `Node` types, which have a non-zero size.
        let raw = unsafe { alloc(layout) };
        NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout))
    }

    /// The local list of `class` is empty: refill it from the pool, else from the allocator, a
    /// slab of blocks at a time.
    ///
    /// A thread descheduled while pinned holds back reclamation, and meanwhile the others need
    /// fresh blocks at their full rate; one allocation per `SLAB_BYTES` keeps that cheap.
    #[cold]
    fn allocate_slow(class: usize) -> NonNull<u8> {
        let refilled = LOCAL.try_with(|local| {
            let head = take_pool(class);
            if !head.is_null() {
                // SAFETY: `head` is a free block of this class, now owned by this thread. The
                // count of the taken chain is unknown; it restarts at 0 (it only bounds the
                // list's growth).
                local.heads[class].set(unsafe { next_of(head) });
                local.counts[class].set(0);
                return NonNull::new(head);
            }
            let block_size = (class + 1) * GRAIN;
            let blocks = (SLAB_BYTES / block_size).max(2);
            let layout = Layout::from_size_align(block_size * blocks, GRAIN).ok()?;
            // SAFETY: the layout has a non-zero size.
            let slab = NonNull::new(unsafe { alloc(layout) })?;
            // Block 0 is returned; blocks 1.. are linked onto the (empty) local list. The slab
            // is never freed as a whole: its blocks live on in the caches (like every block).
            let mut list = local.heads[class].get();
            for index in (1..blocks).rev() {
                // SAFETY: `index * block_size` is inside the fresh slab (`index < blocks`).
                let block = unsafe { slab.as_ptr().add(index * block_size) };
                // SAFETY: the block is 8-aligned, at least 8 bytes, and ours.
                unsafe { init_link(block, list) };
                list = block;
            }
            local.heads[class].set(list);
            local.counts[class].set(local.counts[class].get().saturating_add(blocks - 1));
            Some(slab)
        });
        if let Ok(Some(block)) = refilled {
            return block;
        }
        // Thread teardown (or a failed slab): one block on its own.
        let layout = class_layout(class);
        // SAFETY: class layouts have a non-zero size.
        let raw = unsafe { alloc(layout) };
        NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout))
    }

    /// Puts the chain `head..=tail` of `len` free blocks of `class` on this thread's list, or in
    /// the pool if the list is full or gone.
    ///
    /// # Safety
    /// `head..=tail` is a chain of free blocks of `class` linked through their first words,
    /// owned by the caller; `tail` is its last block.
    unsafe fn release_chain(class: usize, head: *mut u8, tail: *mut u8, len: usize) {
        let kept = LOCAL.try_with(|local| {
            let held = local.counts[class].get();
            if held >= MAX_CACHED {
                return false;
            }
            // SAFETY: `tail` ends our private chain.
            unsafe { set_next(tail, local.heads[class].get()) };
            local.heads[class].set(head);
            local.counts[class].set(held + len);
            true
        });
        if !matches!(kept, Ok(true)) {
            // SAFETY: the chain is ours and of `class`; `give_to_pool` relinks `tail`.
            unsafe { give_to_pool(class, head, tail) };
        }
    }

    /// Returns many blocks of one layout with a single thread-local access.
    ///
    /// # Safety
    /// Every block came from [`allocate`] with `layout`, holds no live value, and nobody will
    /// access it again. The iterator must read whatever it needs from a block before yielding it.
    pub(crate) unsafe fn release_many(layout: Layout, blocks: impl Iterator<Item = NonNull<u8>>) {
        let Some(class) = class_of(layout) else {
            for block in blocks {
                // SAFETY: the caller's contract; unpooled blocks came from `alloc(layout)`.
                unsafe { dealloc(block.as_ptr(), layout) };
            }
            return;
        };
        // Link the blocks into a private chain first.
        let mut head: *mut u8 = ptr::null_mut();
        let mut tail: *mut u8 = ptr::null_mut();
        let mut count = 0usize;
        for block in blocks {
            // SAFETY: the block is free and ours (caller's contract); its first word may have
            // held anything, so the link is written anew.
            unsafe { init_link(block.as_ptr(), head) };
            if head.is_null() {
                tail = block.as_ptr();
            }
            head = block.as_ptr();
            count += 1;
        }
        if head.is_null() {
            return;
        }
        // SAFETY: `head..=tail` is the private chain built above.
        unsafe { release_chain(class, head, tail, count) };
    }

    /// Returns one block to the caches.
    ///
    /// # Safety
    /// As for [`release_many`], for one block.
    pub(crate) unsafe fn release(block: NonNull<u8>, layout: Layout) {
        match class_of(layout) {
            Some(class) => {
                // SAFETY: the caller's contract: the block is free and ours; its first word may
                // have held anything, so the link is written anew.
                unsafe { init_link(block.as_ptr(), ptr::null_mut()) };
                // SAFETY: as above; a chain of one block.
                unsafe { release_chain(class, block.as_ptr(), block.as_ptr(), 1) };
            }
            // SAFETY: the caller's contract; unpooled blocks came from `alloc(layout)`.
            None => unsafe { dealloc(block.as_ptr(), layout) },
        }
    }

    /// A retired chain handed to the epoch: at most three words, so crossbeam stores the closure
    /// inline in its bag instead of boxing it.
    struct Deferred {
        head: *mut u8,
        /// The chain's last block (pooled classes) or the layout's size (unpooled).
        tail_or_size: usize,
        /// `len << 8 | class` (pooled classes) or the layout's alignment (unpooled).
        meta: usize,
    }

    /// Defers freeing this thread's pending chain until the current epoch's readers are gone.
    fn defer_pending(pending: &Pending, guard: &Guard) {
        let head = pending.head.replace(ptr::null_mut());
        if head.is_null() {
            return;
        }
        let tail = pending.tail.get();
        let len = pending.len.replace(0);
        let layout = pending.layout.get();
        if let Some(class) = class_of(layout) {
            let chain = Deferred {
                head,
                tail_or_size: tail as usize,
                meta: (len << 8) | class,
            };
            let splice = move || {
                let chain = chain;
                // SAFETY: the chain was built by `retire` from unlinked nodes of this class
                // whose values were moved out, linked through their first words and ending at
                // `tail`; the epoch has passed, so nobody reaches them.
                unsafe {
                    release_chain(
                        chain.meta & 0xff,
                        chain.head,
                        chain.tail_or_size as *mut u8,
                        chain.meta >> 8,
                    );
                }
            };
            // SAFETY: every node in the chain was unlinked before it entered the chain, so
            // threads that can still reach it were pinned before this deferral; the collector
            // waits for them. `splice` only recycles memory.
            unsafe { guard.defer_unchecked(splice) };
        } else {
            let chain = Deferred {
                head,
                tail_or_size: layout.size(),
                meta: layout.align(),
            };
            let free_all = move || {
                let chain = chain;
                // SAFETY: as above; each block came from `alloc` with this size and alignment,
                // which formed a valid layout when it was allocated.
                let layout =
                    unsafe { Layout::from_size_align_unchecked(chain.tail_or_size, chain.meta) };
                let mut block = chain.head;
                while !block.is_null() {
                    // SAFETY: the chain is exclusively ours (see above); read the link first.
                    let next = unsafe { next_of(block) };
                    // SAFETY: the block came from `alloc(layout)` and holds no value.
                    unsafe { dealloc(block, layout) };
                    block = next;
                }
            };
            // SAFETY: as above; `free_all` only frees memory.
            unsafe { guard.defer_unchecked(free_all) };
        }
    }

    /// Hands a whole chain of unlinked nodes to the epoch with one deferred call.
    ///
    /// # Safety
    /// `head..=tail` is a chain of `len` nodes linked through their first words (`tail`'s link
    /// is null), allocated by [`allocate`] with `layout`, unlinked from every shared structure,
    /// values moved out; threads that may still read a node only read its link atomically.
    pub(crate) unsafe fn retire_chain(
        head: *mut u8,
        tail: *mut u8,
        len: usize,
        layout: Layout,
        guard: &Guard,
    ) {
        let chain = Pending {
            head: Cell::new(head),
            tail: Cell::new(tail),
            len: Cell::new(len),
            layout: Cell::new(layout),
        };
        defer_pending(&chain, guard);
    }

    /// Retires an unlinked node; nodes are handed to the epoch `BATCH` at a time.
    ///
    /// # Safety
    /// `node` came from [`allocate`] with `layout`, its first word is an `AtomicPtr` link (its
    /// `next`), it was unlinked (no new thread can reach it) and its value was moved out, and
    /// threads that may still read it only read that link atomically and ignore the result (a
    /// losing `pop`), since it is rewritten here. `guard` pins the current thread.
    #[inline]
    pub(crate) unsafe fn retire(node: *mut u8, layout: Layout, guard: &Guard) {
        // SAFETY: the caller's contract: the first word of `node` is an `AtomicPtr`.
        let link = unsafe { &*node.cast::<AtomicPtr<u8>>() };
        let handed = LOCAL.try_with(|local| {
            let pending = &local.pending;
            let head = pending.head.get();
            if head.is_null() {
                pending.tail.set(node);
                pending.layout.set(layout);
            } else if pending.layout.get() != layout {
                // A node of another layout: hand the current chain over first.
                defer_pending(pending, guard);
                pending.tail.set(node);
                pending.layout.set(layout);
            }
            // Relaxed: losing `pop`s read the link only to fail their CAS; the epoch orders
            // every later reuse of the block after them.
            link.store(pending.head.get(), Ordering::Relaxed);
            pending.head.set(node);
            let len = pending.len.get() + 1;
            pending.len.set(len);
            if len >= BATCH {
                defer_pending(pending, guard);
            }
        });
        if handed.is_err() {
            // The thread-local is gone (thread teardown): defer this node on its own.
            // Relaxed: as above.
            link.store(ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: a chain of one node, under the caller's contract.
            unsafe { retire_chain(node, node, 1, layout, guard) };
        }
    }
}
