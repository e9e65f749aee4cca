//! Many producers → batches by count, bytes and age, with a memory budget, backpressure and exact
//! accounting.
//!
//! Layer 2 of spanflow: it sits on [`spanflow_lockfree`], beside the wire model (neither crate
//! depends on the other); it is generic over the item type and knows nothing of spans. The facade's `SpanProcessor::on_end` calls
//! [`Batcher::send`] on application threads, so the intake is the product's hottest path; a
//! consumer thread (or task) takes [`Batch`]es from the [`Receiver`] and exports them.
//!
//! ```
//! use spanflow_batch::{Batcher, CutReason, Policy};
//! use std::time::Duration;
//!
//! let (batcher, receiver) = Batcher::<String>::builder()
//!     .max_items(512)
//!     .max_age(Duration::from_millis(100))
//!     .weigh(|s: &String| s.len() as u64)
//!     .policy(Policy::DropNewest)
//!     .build()?;
//! let consumer = std::thread::spawn(move || {
//!     receiver.map(|batch| batch.len()).sum::<usize>()
//! });
//! for i in 0..1000 {
//!     batcher.send(format!("item {i}"))?;
//! }
//! let stats = batcher.shutdown(); // closes intake, waits until everything is emitted
//! assert_eq!(stats.emitted, 1000);
//! assert!(stats.is_consistent());
//! assert_eq!(consumer.join().expect("consumer"), 1000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! **Intake.** Each thread sends into one of a few *shards*, a `parking_lot::Mutex<Vec<T>>` on
//! its own cache line, picked round-robin the first time the thread sends. A send is one
//! uncontended lock, a `Vec::push`, and a few plain counter updates inside the lock; it writes no
//! cache line shared with other producers except once per lease chunk (budget). The consumer
//! gathers a shard by swapping its vector with an empty
//! one under the shard's lock, so it holds that lock for a few nanoseconds whatever the shard
//! holds, and moves the items into batches outside it.
//!
//! Alternatives measured in the `batch/intake_designs` bench group (two producers, 100 000
//! items of 352 bytes, the same batching consumer; two runs on a 2-core machine shared with
//! other builds, so only the order is trustworthy):
//!
//! | design | time per 100 000 items | why |
//! |---|---|---|
//! | sharded `parking_lot` mutex + vector swap (kept) | 11.2 ms, 19.4 ms | one uncontended lock and a `push` per item; the consumer takes a whole shard in one swap |
//! | one Treiber stack per producer, `take_all` | 24.0 ms, 26.2 ms | a heap node per item, and the consumer walks a linked list (reversing it for FIFO) |
//! | one shared Treiber stack, `take_all` | 32.5 ms, 35.9 ms | the above plus a contended CAS per item |
//! | one global mutex + vector swap | 47.7 ms, 37.0 ms | producers and consumer fight over one cache line |
//!
//! The alternatives in that group have no budget, accounting or wake-ups, so they are lower
//! bounds for their designs, and the kept design still won. The Treiber stack is used where it
//! fits: the lock-free pool of batch vectors, which consumers return to from any thread.
//!
//! **Budget.** The [`Budget`] (items and bytes) is a pool of credits that covers an item from
//! the send that accepts it until its data is gone: a cut [`Batch`] carries its items' credit
//! and returns it when dropped, or hands it on ([`Batch::take_credit`]) as a [`Credit`] that
//! the consumer drops once the data has been exported, on any thread. Several batchers can draw
//! on one budget ([`BatcherBuilder::budget`]). A shard leases credits in chunks (a quarter of
//! the budget spread over the shards, at most 64 items), so producers rarely touch the shared
//! counters. When the budget runs dry a producer first reclaims unused leases from every shard
//! of every batcher on it, and only then applies the [`Policy`]: the budget is exact, never
//! exceeded by sends (only [`Budget::force_take`] and a growing [`Credit`] over-commit), and
//! never reported full while credits sit idle (up to a transient dip while another thread
//! leases). A producer blocked by [`Policy::Block`] registers and re-checks the budget under
//! its `room` mutex, which every credit return takes (once per batch or credit, whichever
//! thread returns it), so a wake-up cannot be missed; `tests/loom_intake.rs` model-checks this
//! handshake, also for a credit dropped on another thread while a producer of another batcher
//! on the same budget waits.
//!
//! **Policies.** [`Policy::DropNewest`] (default) counts and discards the incoming item;
//! [`Policy::Block`] waits (optionally with a timeout that hands the item back);
//! [`Policy::DropOldest`] needs the consumer's cooperation: the overflowing producer takes the
//! consumer-side lock, gathers every shard and evicts from the front of the queue — the oldest
//! gathered items, and per thread exactly the oldest — until the new item fits.
//! [`Batcher::try_send`] never blocks or drops: it hands the item back with `Full` or `Closed`.
//!
//! **Accounting.** Every counter that an item moves between changes under a lock that the
//! snapshot also takes: producers' counters under their shard's lock, the consumer's under the
//! consumer-side lock. [`Batcher::stats`] holds the consumer-side lock and reads each shard under
//! its lock, so `accepted == emitted + dropped + queued` holds in every snapshot.
//!
//! **Triggers and wake-ups.** The consumer sleeps until the oldest queued batch's age deadline
//! (or indefinitely when nothing is queued) and publishes that deadline. Its last look at the
//! shards before sleeping also leaves each shard a *quiet share*: how many items and bytes it
//! may take before a send must wake the consumer. The shares add up to one item (and one byte)
//! less than what completes the consumer's open batch, so a completed batch always takes some
//! shard past its share, and that send wakes the consumer; they are split by what each shard
//! delivered in the last round, so a steady load wakes it about when the batch is complete. A
//! producer also wakes it when its shard goes from empty to non-empty with an earlier deadline,
//! and when the budget is full. Every check reads only its own shard (under the lock it holds)
//! and `sleep_until`, so producers share no counter for wake-ups. Ages are measured from the
//! moment a shard last went from empty to non-empty, so the clock is read once per gathering,
//! not once per item, and [`Batch::age`] is an upper bound. `tests/loom_intake.rs`
//! model-checks these wake-ups on the crate's own code.
//!
//! **Ordering promise.** Items sent from one thread are emitted in send order (per-thread FIFO);
//! [`Batcher::pinned`] gives a handle with per-handle FIFO whatever thread sends. Nothing is
//! promised between threads.
//!
//! **Recycling.** Emitted batch vectors return to a bounded pool (a
//! [`spanflow_lockfree::TreiberStack`]) when the [`Batch`] is dropped, and shard vectors are
//! swapped rather than reallocated, so steady state allocates no vectors. With
//! [`DropSite::Producers`] a dropped batch does not drop its items: it parks them (at most
//! [`MAX_SPENT_BATCHES`] batches, on a second Treiber stack) and each later send drops one on the
//! sending thread, so an allocator whose cross-thread frees contend (glibc's) sees memory freed
//! where it is allocated again. The consumer drops what still waits once it has been idle for a
//! second, and when it ends.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod batch;
mod budget;
mod clock;
mod config;
mod consumer;
mod countdown;
mod error;
mod intake;
mod prefetch;
mod signal;
mod stats;
#[cfg(feature = "tokio")]
mod stream;
mod sync;

pub use batch::{Batch, CutReason, MAX_SPENT_BATCHES};
pub use budget::{Budget, Credit};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    BatcherBuilder, DEFAULT_BUDGET_BYTES, DEFAULT_BUDGET_ITEMS, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS, DropSite, Policy, Weigh,
};
pub use consumer::Receiver;
pub use countdown::{Countdown, Settled};
pub use error::{
    BatcherBuildError, RecvTimeoutError, SendError, Timeout, TryRecvError, TrySendError,
};
pub use intake::Batcher;
pub use stats::{Dropped, Refused, Stats};
#[cfg(feature = "tokio")]
pub use stream::BatchStream;
