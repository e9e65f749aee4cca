//! Lock-free primitives for spanflow: a Treiber stack and a Chase–Lev work-stealing deque.
//!
//! This is the bottom layer of the spanflow workspace. It depends only on crossbeam-epoch and
//! crossbeam-utils and knows nothing of spans: `spanflow-batch` uses [`TreiberStack`] for its
//! intake and buffer pools, `spanflow-process` uses the [`deque`] for its scheduler.
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
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod deque;
mod loom;
mod retire;
mod stack;

pub use deque::{Injector, Steal, Stealer, Worker};
pub use stack::{IntoFifo, TakeAll, TreiberStack};
