//! Errors. Every error that refuses an item hands it back.

use thiserror::Error;

/// Why [`Batcher::send`](crate::Batcher::send) handed the item back.
#[derive(Error, PartialEq, Eq)]
pub enum SendError<T> {
    /// The batcher was shut down (or every consumer is gone); the item was not taken.
    #[error("batcher is closed")]
    Closed(T),
    /// `Policy::Block` with a timeout waited that long without room.
    #[error("timed out waiting for room in the budget")]
    Timeout(T),
    /// The item alone weighs more than the whole byte budget, so waiting cannot help.
    #[error("item weighs more than the byte budget")]
    TooLarge(T),
}

/// Why [`Batcher::try_send`](crate::Batcher::try_send) handed the item back.
#[derive(Error, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The budget is full right now; try later.
    #[error("budget is full")]
    Full(T),
    /// The batcher was shut down (or every consumer is gone).
    #[error("batcher is closed")]
    Closed(T),
    /// The item alone weighs more than the whole byte budget.
    #[error("item weighs more than the byte budget")]
    TooLarge(T),
}

macro_rules! item_error_impls {
    ($name:ident { $($variant:ident),* }) => {
        impl<T> $name<T> {
            /// The refused item, handed back.
            pub fn into_inner(self) -> T {
                match self {
                    $(Self::$variant(item) => item,)*
                }
            }
        }

        impl<T> std::fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $(Self::$variant(_) => f.write_str(concat!(stringify!($name), "::", stringify!($variant), "(..)")),)*
                }
            }
        }
    };
}

item_error_impls!(SendError {
    Closed,
    Timeout,
    TooLarge
});
item_error_impls!(TrySendError {
    Full,
    Closed,
    TooLarge
});

/// A flush or shutdown did not finish within its timeout; the work it started goes on.
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("timed out")]
pub struct Timeout;

/// The configuration given to [`BatcherBuilder::build`](crate::BatcherBuilder::build) is unusable.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum BatcherBuildError {
    /// `max_items` must be at least 1.
    #[error("max_items must be at least 1")]
    ZeroMaxItems,
    /// `max_bytes` must be at least 1.
    #[error("max_bytes must be at least 1")]
    ZeroMaxBytes,
    /// The item budget must allow at least one item.
    #[error("budget_items must be at least 1")]
    ZeroBudget,
    /// `shards` must be between 1 and 1024.
    #[error("shards must be between 1 and 1024, got {0}")]
    Shards(usize),
}

/// Why [`Receiver::try_recv`](crate::Receiver::try_recv) returned no batch.
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// No batch is due yet.
    #[error("no batch is due")]
    Empty,
    /// The batcher is closed and everything has been emitted.
    #[error("batcher is closed and drained")]
    Closed,
}

/// Why [`Receiver::recv_timeout`](crate::Receiver::recv_timeout) returned no batch.
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// No batch became due within the timeout.
    #[error("timed out waiting for a batch")]
    Timeout,
    /// The batcher is closed and everything has been emitted.
    #[error("batcher is closed and drained")]
    Closed,
}
