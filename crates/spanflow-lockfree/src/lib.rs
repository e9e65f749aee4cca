//! Lock-free primitives for spanflow: a Treiber stack and a Chase–Lev work-stealing deque.
//!
//! This is the bottom layer of the spanflow workspace. It depends only on crossbeam-epoch and
//! crossbeam-utils and knows nothing of spans: `spanflow-batch` keeps its pools of batch
//! buffers in [`TreiberStack`]s (its intake is sharded mutexes, not this stack), and
//! `spanflow-process` schedules its work on the [`deque`].
//!
//! ```
//! use spanflow_lockfree::TreiberStack;
//!
//! let intake = TreiberStack::new();
//! intake.push("span-1");
//! intake.push_list(["span-2", "span-3"]);
//! let batch: Vec<_> = intake.take_all().into_fifo().collect();
//! assert_eq!(batch, ["span-1", "span-2", "span-3"]);
//! ```
//!
//! # The algorithms
//!
//! * [`TreiberStack`] (Treiber 1986): `push` links a private node and publishes it with one
//!   Release CAS on `head`; `pop` unlinks the head with one CAS while pinned, moves the value out
//!   of its `ManuallyDrop` exactly once, and retires the node through crossbeam-epoch (a losing
//!   `pop` may still read its `next`). `push_list` links any number of nodes privately and
//!   publishes them with one CAS; `take_all` detaches the whole list with one swap and iterates
//!   it LIFO, or FIFO after an in-place reversal. Retired nodes are chained per thread and
//!   handed to the epoch 32 at a time; when their grace period is over the chain is spliced,
//!   in O(1), onto a per-thread free list (refilled from a process-wide pool per size class, or
//!   from the allocator a 2 KiB slab at a time), so a push+pop pair does not go through the
//!   global allocator. (Node blocks of up to 256 bytes are kept for reuse, never returned to it:
//!   the memory held is bounded by the peak number of nodes alive or awaiting their grace
//!   period.) A lost CAS backs off long (16 spin hints, doubling, at most 1024), so two threads
//!   hammering one head take turns in runs instead of pulling its cache line across on every
//!   operation.
//! * [`Worker`]/[`Stealer`]: the dynamic circular work-stealing deque of Chase and Lev (SPAA
//!   2005) with the C11 orderings of Lê, Pop, Cohen and Zappa Nardelli (PPoPP 2013): the owner
//!   writes `bottom`, issues a `SeqCst` fence and reads `top`; a thief reads `top` and then
//!   `bottom` with `SeqCst` loads (equivalent to the paper's fence in the C++20 model, and free on
//!   x86); only the `SeqCst` CAS on `top` decides an item that both go for. The owner's `push` and
//!   `pop` touch no epoch pin unless they resize. Every ordering in the code carries a one-line
//!   reason naming its pair.
//! * [`Injector`]: a Michael–Scott queue (PODC 1996) with epoch reclamation; `steal_batch`
//!   claims a whole run of nodes with one CAS on `head`.
//!
//! # Two improvements over crossbeam-deque
//!
//! * **No data race on slots.** crossbeam's thief reads a slot speculatively before its CAS; the
//!   read may overlap the owner's write of the same slot, which crossbeam documents as technically
//!   undefined behaviour. Here a thief reads a slot only after its CAS claimed the index, and a
//!   per-slot stamp (released by the reader, acquired by the owner before it rewrites the slot)
//!   orders every write after the previous read. A slot still held by a slow thief makes the owner
//!   move to a fresh buffer instead of waiting.
//! * **No buffer thrash.** crossbeam shrinks whenever the buffer is under a quarter full, so a
//!   steady 256-item working set grows and shrinks it every round. This deque shrinks only after
//!   `capacity` consecutive sparse pops, which keeps a steady working set's buffer.
//!
//! # Model checking
//!
//! All atomics and cells go through an internal `loom` module (std or loom, as in tokio). The
//! models in `tests/loom_*.rs` run with
//! `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release
//! --test loom_<name>`; under loom the deque starts with 2 slots so that resizes are explored,
//! and the stack's retired nodes go to the epoch 2 at a time and come back through the
//! per-thread free lists, so the recycling path is explored too (without the process-wide pool,
//! which loom's teardown order rules out; see `retire.rs`). `cargo xtask test` also runs the
//! unit, property and stress tests under Miri, which checks what loom cannot see: the raw memory
//! of recycled blocks, alignment, provenance and the data races of non-atomic accesses.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod deque;
mod loom;
mod retire;
mod stack;

pub use deque::{Injector, Steal, Stealer, Worker};
pub use stack::{IntoFifo, TakeAll, TreiberStack};
