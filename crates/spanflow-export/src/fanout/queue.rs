//! One backend's queue and its completion tracking (for flush), under one lock.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::settle::Ticket;
use crate::ExportBatch;

/// A batch waiting for (or being exported to) one backend.
pub(super) struct Item {
    pub(super) seq: u64,
    pub(super) batch: ExportBatch,
    /// The batch's settlement, shared with its other destinations.
    pub(super) ticket: Arc<Ticket>,
    /// An earlier attempt (at the primary this item fell back from) may have delivered it.
    pub(super) in_doubt: bool,
    /// Durable mode: the spool reader (primary index) and record to acknowledge once this
    /// destination has a fate.
    pub(super) ack: Option<(usize, u64)>,
    /// Whether it sits in a memory queue whose watermark `seq` belongs to (false for a record
    /// read from the spool, whose `seq` is the record's).
    pub(super) queued: bool,
}

/// A batch on its way to a destination, before it gets a sequence number in a queue.
pub(super) struct Parcel {
    pub(super) batch: ExportBatch,
    pub(super) ticket: Arc<Ticket>,
    pub(super) in_doubt: bool,
    pub(super) ack: Option<(usize, u64)>,
}

pub(super) struct QueueState {
    pub(super) items: VecDeque<Item>,
    next_seq: u64,
    /// Sequence numbers enqueued and not yet finished (queued or in flight).
    unfinished: BTreeSet<u64>,
    pub(super) closed: bool,
    /// Flush waiters: woken once the watermark reaches their target. Only they are woken,
    /// so finishing a batch with nobody flushing costs no wake-up.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl QueueState {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(capacity.min(4096)),
            next_seq: 0,
            unfinished: BTreeSet::new(),
            closed: false,
            waiters: Vec::new(),
        }
    }

    /// Appends `parcel` with the next sequence number.
    pub(super) fn push(&mut self, parcel: Parcel) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unfinished.insert(seq);
        self.items.push_back(Item {
            seq,
            batch: parcel.batch,
            ticket: parcel.ticket,
            in_doubt: parcel.in_doubt,
            ack: parcel.ack,
            queued: true,
        });
    }

    /// Removes the oldest waiting item (it will not be exported here).
    pub(super) fn evict_front(&mut self) -> Option<Item> {
        let old = self.items.pop_front()?;
        self.unfinished.remove(&old.seq);
        self.wake_waiters();
        Some(old)
    }

    /// The sequence number the next pushed item gets: every item before it was pushed already.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every item with a sequence number below this has finished.
    pub(super) fn watermark(&self) -> u64 {
        self.unfinished.first().copied().unwrap_or(self.next_seq)
    }

    pub(super) fn unfinished(&self) -> usize {
        self.unfinished.len()
    }

    /// Marks `seq` finished and wakes the flushes it completes.
    pub(super) fn finish(&mut self, seq: u64) {
        self.unfinished.remove(&seq);
        self.wake_waiters();
    }

    /// A receiver woken once every item below `target` has finished.
    pub(super) fn wait_for(&mut self, target: u64) -> Option<oneshot::Receiver<()>> {
        if self.watermark() >= target {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push((target, tx));
        Some(rx)
    }

    /// Wake the flush waiters whose target the watermark reached.
    fn wake_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let wm = self.watermark();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(target, _)| *target <= wm);
        self.waiters = waiting;
        for (_, tx) in ready {
            // The waiter may have timed out and gone; nothing to do then.
            let _ = tx.send(());
        }
    }
}
