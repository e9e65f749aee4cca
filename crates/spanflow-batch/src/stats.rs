//! Accounting: every item the batcher takes is emitted, dropped for a named reason, or queued.

/// Items the batcher took and then discarded, by reason. A drop is never silent: it is counted here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// [`Policy::DropNewest`](crate::Policy::DropNewest) discarded the incoming item because the
    /// budget was full (also items heavier than the whole byte budget under a drop policy).
    pub newest: u64,
    /// [`Policy::DropOldest`](crate::Policy::DropOldest) evicted a queued item to make room.
    pub oldest: u64,
    /// The [`Receiver`](crate::Receiver) was dropped while the item was queued.
    pub disconnected: u64,
}

impl Dropped {
    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.newest + self.oldest + self.disconnected
    }
}

/// Items handed back to the caller (never taken by the batcher), by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    /// `try_send` found the budget full.
    pub full: u64,
    /// The batcher was closed.
    pub closed: u64,
    /// `Policy::Block` with a timeout gave up.
    pub timeout: u64,
    /// The item alone weighs more than the byte budget (`try_send` or `Policy::Block`).
    pub too_large: u64,
}

impl Refused {
    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.full + self.closed + self.timeout + self.too_large
    }
}

/// A consistent snapshot of the batcher's accounting.
///
/// `accepted == emitted + dropped_by_reason.total() + queued` holds in every snapshot, also
/// while producers and the consumer run: the snapshot is taken under the consumer-side lock (so
/// nothing moves between "queued" and "emitted" meanwhile) and reads each shard's counters and
/// contents under that shard's lock (so an item is never counted as accepted without being counted
/// as queued or dropped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Items the batcher took ownership of.
    pub accepted: u64,
    /// Items handed to the consumer inside batches.
    pub emitted: u64,
    /// Batches handed to the consumer.
    pub batches: u64,
    /// Items taken and then discarded, by reason.
    pub dropped_by_reason: Dropped,
    /// Items taken and not yet emitted or dropped.
    pub queued: u64,
    /// Total weight of the queued items.
    pub queued_bytes: u64,
    /// Items handed back to the caller, by reason; not part of `accepted`.
    pub refused: Refused,
}

impl Stats {
    /// All drops, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_by_reason.total()
    }

    /// Whether `accepted == emitted + dropped + queued`; true for every snapshot the batcher hands out.
    pub fn is_consistent(&self) -> bool {
        self.accepted == self.emitted + self.dropped() + self.queued
    }
}
