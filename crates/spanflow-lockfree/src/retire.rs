//! Hands single unlinked allocations to crossbeam-epoch in per-thread batches.
//!
//! Deferring every popped node on its own costs a `Deferred` per node and, every 64 nodes, a
//! 2 KiB epoch bag whose allocation makes glibc consolidate its fast bins; together that was most
//! of a `TreiberStack` push+pop pair. Here each thread links its retired nodes into a chain
//! through their own `next` fields (no allocation) and defers 32 of them with one call.
//! Deferring later than the unlink is always sound: the grace period starts at the deferral.

use crossbeam_epoch::Guard;

/// A type-erased chain of unlinked nodes, linked through their own `next` fields.
#[derive(Clone, Copy)]
pub(crate) struct Chain {
    head: *mut u8,
    len: usize,
    /// Frees every node of a chain starting at the given node (memory only).
    free_chain: unsafe fn(*mut u8),
}

/// How to link and free nodes of one type.
#[derive(Clone, Copy)]
pub(crate) struct NodeOps {
    /// Sets `node.next = next`.
    pub(crate) set_next: unsafe fn(node: *mut u8, next: *mut u8),
    /// Frees `node` and every node after it (memory only; values already moved out).
    pub(crate) free_chain: unsafe fn(*mut u8),
}

/// Defers freeing `chain` until the current epoch's readers are gone.
fn defer_chain(chain: Chain, guard: &Guard) {
    if chain.head.is_null() {
        return;
    }
    let free_all = move || {
        let chain = chain;
        // SAFETY: the chain was built by `retire` from unlinked nodes whose values were moved
        // out; the epoch has passed, so nobody reaches them.
        unsafe { (chain.free_chain)(chain.head) };
    };
    // SAFETY: every node in the chain was unlinked before it entered the chain, so threads that
    // can still reach it were pinned before this deferral; the collector waits for them.
    // `free_all` only frees memory.
    unsafe { guard.defer_unchecked(free_all) };
}

#[cfg(not(loom))]
mod imp {
    use std::cell::Cell;

    use super::{Chain, Guard, NodeOps, defer_chain};

    const BATCH: usize = 32;

    struct Pending(Cell<Option<Chain>>);

    impl Drop for Pending {
        fn drop(&mut self) {
            if let Some(chain) = self.0.take() {
                // Thread exit: hand over what is left. `pin` works during TLS teardown
                // (crossbeam-epoch registers a temporary participant).
                let guard = crossbeam_epoch::pin();
                defer_chain(chain, &guard);
            }
        }
    }

    thread_local! {
        static PENDING: Pending = const { Pending(Cell::new(None)) };
    }

    /// Retires an unlinked node; nodes are handed to the epoch 32 at a time.
    ///
    /// # Safety
    /// `node` was unlinked (no new thread can reach it), its value was moved out, `ops` are the
    /// functions of its type, and threads that may still read it only read its `next` field
    /// atomically and ignore the result (a losing `pop`), since `set_next` rewrites it.
    pub(crate) unsafe fn retire(node: *mut u8, ops: NodeOps, guard: &Guard) {
        let handed = PENDING.try_with(|pending| {
            let mut chain = match pending.0.take() {
                Some(chain) if std::ptr::fn_addr_eq(chain.free_chain, ops.free_chain) => chain,
                other => {
                    // A node of another type: flush the current chain first.
                    if let Some(chain) = other {
                        defer_chain(chain, guard);
                    }
                    Chain {
                        head: std::ptr::null_mut(),
                        len: 0,
                        free_chain: ops.free_chain,
                    }
                }
            };
            // SAFETY: the caller's contract: `node` is ours to relink.
            unsafe { (ops.set_next)(node, chain.head) };
            chain.head = node;
            chain.len += 1;
            if chain.len >= BATCH {
                defer_chain(chain, guard);
            } else {
                pending.0.set(Some(chain));
            }
        });
        if handed.is_err() {
            // The thread-local is gone (thread teardown): defer this node on its own.
            // SAFETY: as above.
            unsafe { (ops.set_next)(node, std::ptr::null_mut()) };
            let chain = Chain {
                head: node,
                len: 1,
                free_chain: ops.free_chain,
            };
            defer_chain(chain, guard);
        }
    }
}

#[cfg(loom)]
mod imp {
    use super::{Chain, Guard, NodeOps, defer_chain};

    /// Under loom the threads are not OS threads, so no thread-local batching: defer at once.
    ///
    /// # Safety
    /// As for the non-loom version.
    pub(crate) unsafe fn retire(node: *mut u8, ops: NodeOps, guard: &Guard) {
        // SAFETY: the caller's contract.
        unsafe { (ops.set_next)(node, std::ptr::null_mut()) };
        let chain = Chain {
            head: node,
            len: 1,
            free_chain: ops.free_chain,
        };
        defer_chain(chain, guard);
    }
}

pub(crate) use imp::retire;

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
/// `Node` type of the same size class.
#[cfg(not(loom))]
pub(crate) mod node_memory {
    use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
    use std::cell::Cell;
    use std::ptr::{self, NonNull};
    use std::sync::atomic::{AtomicPtr, Ordering};

    /// Size classes: 8, 16, ..., 256 bytes, alignment at most 8.
    const CLASSES: usize = 32;
    const GRAIN: usize = 8;
    const MAX_CACHED: usize = 4096;

    /// The size class of `layout`, if it is pooled. A block's first word links free blocks.
    fn class_of(layout: Layout) -> Option<usize> {
        let size = layout.size();
        (layout.align() <= GRAIN && (GRAIN..=CLASSES * GRAIN).contains(&size))
            .then(|| size.div_ceil(GRAIN) - 1)
    }

    fn class_layout(class: usize) -> Layout {
        // The sizes are small multiples of 8 and the alignment 8: always a valid layout.
        Layout::from_size_align((class + 1) * GRAIN, GRAIN).unwrap_or_else(|_| Layout::new::<u64>())
    }

    /// Reads the link word of a free block.
    ///
    /// # Safety
    /// `block` is a free block of a pooled class (at least 8 bytes, 8-aligned) owned by the caller.
    unsafe fn next_of(block: *mut u8) -> *mut u8 {
        // SAFETY: the caller owns the free block, whose first word holds the link.
        unsafe { block.cast::<*mut u8>().read() }
    }

    /// # Safety
    /// As for [`next_of`].
    unsafe fn set_next(block: *mut u8, next: *mut u8) {
        // SAFETY: as above.
        unsafe { block.cast::<*mut u8>().write(next) };
    }

    static POOL: [AtomicPtr<u8>; CLASSES] = [const { AtomicPtr::new(ptr::null_mut()) }; CLASSES];

    struct Local {
        heads: [Cell<*mut u8>; CLASSES],
        counts: [Cell<usize>; CLASSES],
    }

    impl Drop for Local {
        fn drop(&mut self) {
            // Thread exit: give the blocks to the pool for the other threads.
            for class in 0..CLASSES {
                let head = self.heads[class].replace(ptr::null_mut());
                // SAFETY: the list holds free blocks of `class` owned by this thread.
                unsafe { give_to_pool(class, head) };
            }
        }
    }

    thread_local! {
        static LOCAL: Local = const {
            Local {
                heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
                counts: [const { Cell::new(0) }; CLASSES],
            }
        };
    }

    /// Pushes the chain starting at `head` onto the pool of `class` with one CAS.
    ///
    /// # Safety
    /// `head..` is a null-terminated chain of free blocks of `class` owned by the caller.
    unsafe fn give_to_pool(class: usize, head: *mut u8) {
        if head.is_null() {
            return;
        }
        let mut last = head;
        loop {
            // SAFETY: the chain is ours.
            let next = unsafe { next_of(last) };
            if next.is_null() {
                break;
            }
            last = next;
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

    /// Allocates a block for `layout` (non-zero size), from the caches when possible.
    pub(crate) fn allocate(layout: Layout) -> NonNull<u8> {
        if let Some(class) = class_of(layout) {
            let cached = LOCAL.try_with(|local| {
                let mut head = local.heads[class].get();
                if head.is_null() {
                    // Acquire: pairs with the Release CAS in `give_to_pool`; the links are ours.
                    head = POOL[class].swap(ptr::null_mut(), Ordering::Acquire);
                    local.counts[class].set(0);
                    if head.is_null() {
                        return None;
                    }
                }
                // SAFETY: `head` is a free block of this class owned by this thread.
                local.heads[class].set(unsafe { next_of(head) });
                local.counts[class].set(local.counts[class].get().saturating_sub(1));
                NonNull::new(head)
            });
            if let Ok(Some(block)) = cached {
                return block;
            }
            // SAFETY: class layouts have a non-zero size.
            let raw = unsafe { alloc(class_layout(class)) };
            return NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout));
        }
        // SAFETY: callers pass layouts of `Node` types, which have a non-zero size.
        let raw = unsafe { alloc(layout) };
        NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout))
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
        let mut last: *mut u8 = ptr::null_mut();
        let mut count = 0usize;
        for block in blocks {
            // SAFETY: the block is free and ours (caller's contract).
            unsafe { set_next(block.as_ptr(), head) };
            if head.is_null() {
                last = block.as_ptr();
            }
            head = block.as_ptr();
            count += 1;
        }
        if head.is_null() {
            return;
        }
        let kept = LOCAL.try_with(|local| {
            let held = local.counts[class].get();
            if held >= MAX_CACHED {
                return false;
            }
            // Splice the chain in front of the local list.
            // SAFETY: `last` ends our private chain.
            unsafe { set_next(last, local.heads[class].get()) };
            local.heads[class].set(head);
            local.counts[class].set(held + count);
            true
        });
        if kept != Ok(true) {
            // SAFETY: the chain is ours and of `class`.
            unsafe { give_to_pool(class, head) };
        }
    }

    /// Returns a block to the caches.
    ///
    /// # Safety
    /// As for [`release_many`], for one block.
    #[allow(dead_code)]
    pub(crate) unsafe fn release(block: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { release_many(layout, std::iter::once(block)) };
    }
}
