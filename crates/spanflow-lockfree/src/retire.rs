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

/// Node memory with a small per-thread cache in front of the global allocator.
///
/// Epoch reclamation frees popped nodes in batches, long after they were allocated, which keeps
/// glibc's per-thread cache (7 chunks per size) empty and sends every `push` to its slow path.
/// Keeping up to `MAX_CACHED` freed node blocks per size class per thread lets `push` reuse them.
/// Blocks are raw memory (no value inside), so a block freed by one stack may serve another
/// `Node` type of the same layout.
#[cfg(not(loom))]
pub(crate) mod node_memory {
    use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
    use std::cell::RefCell;
    use std::ptr::NonNull;

    const CLASSES: usize = 4;
    const MAX_CACHED: usize = 8192;

    struct Class {
        layout: Layout,
        free: Vec<NonNull<u8>>,
    }

    struct Cache {
        classes: Vec<Class>,
    }

    impl Drop for Cache {
        fn drop(&mut self) {
            for class in &mut self.classes {
                for block in class.free.drain(..) {
                    // SAFETY: every cached block came from `alloc(class.layout)` and is unused.
                    unsafe { dealloc(block.as_ptr(), class.layout) };
                }
            }
        }
    }

    thread_local! {
        static CACHE: RefCell<Cache> = const { RefCell::new(Cache { classes: Vec::new() }) };
    }

    /// Allocates a block for `layout` (non-zero size), from the cache when possible.
    pub(crate) fn allocate(layout: Layout) -> NonNull<u8> {
        let cached = CACHE
            .try_with(|cache| {
                let mut cache = cache.borrow_mut();
                cache
                    .classes
                    .iter_mut()
                    .find(|class| class.layout == layout)
                    .and_then(|class| class.free.pop())
            })
            .ok()
            .flatten();
        if let Some(block) = cached {
            return block;
        }
        // SAFETY: callers pass layouts of `Node` types, which have a non-zero size.
        let raw = unsafe { alloc(layout) };
        NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout))
    }

    /// Returns many blocks of one layout to the cache with a single thread-local access.
    ///
    /// # Safety
    /// As for [`release`], for every block yielded.
    pub(crate) unsafe fn release_many(layout: Layout, blocks: impl Iterator<Item = NonNull<u8>>) {
        let mut blocks = blocks.peekable();
        let _ = CACHE.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let index = match cache.classes.iter().position(|c| c.layout == layout) {
                Some(index) => index,
                None if cache.classes.len() < CLASSES => {
                    cache.classes.push(Class {
                        layout,
                        free: Vec::new(),
                    });
                    cache.classes.len() - 1
                }
                None => return,
            };
            let class = &mut cache.classes[index];
            while class.free.len() < MAX_CACHED {
                match blocks.next() {
                    Some(block) => class.free.push(block),
                    None => break,
                }
            }
        });
        for block in blocks {
            // SAFETY: the caller's contract: allocated with `layout`, unused from now on.
            unsafe { dealloc(block.as_ptr(), layout) };
        }
    }

    /// Returns a block to the cache (or to the allocator when the cache is full).
    ///
    /// # Safety
    /// `block` came from [`allocate`] with the same `layout`, holds no live value, and nobody
    /// will access it again.
    pub(crate) unsafe fn release(block: NonNull<u8>, layout: Layout) {
        let mut slot = Some(block);
        let _ = CACHE.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let index = match cache.classes.iter().position(|c| c.layout == layout) {
                Some(index) => index,
                None if cache.classes.len() < CLASSES => {
                    cache.classes.push(Class {
                        layout,
                        free: Vec::new(),
                    });
                    cache.classes.len() - 1
                }
                None => return,
            };
            let class = &mut cache.classes[index];
            if class.free.len() < MAX_CACHED {
                class.free.extend(slot.take());
            }
        });
        if let Some(block) = slot {
            // SAFETY: the caller's contract: allocated with `layout`, unused from now on.
            unsafe { dealloc(block.as_ptr(), layout) };
        }
    }
}
