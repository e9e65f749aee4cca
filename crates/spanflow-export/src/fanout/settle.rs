//! What became of each batch, once every destination is done with it: the fan-out's half of the
//! books.
//!
//! A batch sent to the fan-out goes to every primary backend. Each primary (and the fallback it
//! hands the batch to, if any) is one *destination*; a destination ends in exactly one [`Fate`].
//! When the last destination of a batch has its fate, the batch is *settled* once, into
//! [`Settled`] totals that every report reads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Why the fan-out discarded a batch on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// A drop policy (`DropNewest`, `DropOldest`) made room in a full queue.
    QueueFull,
    /// The batch was never sent before shutdown's deadline.
    ShutdownDeadline,
}

/// The final fate of one batch at one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// The backend answered success; it kept `accepted` spans and refused the rest through
    /// OTLP partial success.
    Exported { accepted: u64 },
    /// The backend certainly did not take it: it answered with an error, or every attempt failed
    /// before the request was sent.
    Failed,
    /// Discarded on purpose, never (or certainly not) delivered.
    Dropped(DropReason),
    /// At least one attempt may have reached the backend (it timed out, the connection broke
    /// mid-request, or shutdown's deadline cut it off) and none was confirmed.
    Unconfirmed,
}

/// Spans of settled batches by outcome; every span of a settled batch is in exactly one field
/// besides `spans`.
///
/// With one primary backend a batch's outcome is that backend's (or its fallback's). With several
/// primaries a span counts as exported only when every primary took it; otherwise it counts under
/// the first of these that applies at some destination: dropped, failed, unconfirmed, rejected.
///
/// ```
/// let s = spanflow_export::Settled::default();
/// assert_eq!(s.spans, s.exported + s.rejected + s.failed + s.dropped() + s.unconfirmed);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Batches settled.
    pub batches: u64,
    /// Spans in settled batches.
    pub spans: u64,
    /// Spans every destination confirmed.
    pub exported: u64,
    /// Spans a backend refused through OTLP partial success (a definitive answer, not retried).
    pub rejected: u64,
    /// Spans of batches a backend certainly did not take (an error answer, or retries exhausted
    /// without any attempt reaching it).
    pub failed: u64,
    /// Spans dropped by a queue's drop policy.
    pub dropped_queue_full: u64,
    /// Spans never sent before shutdown's deadline.
    pub dropped_shutdown: u64,
    /// Spans whose delivery is unknown: an attempt may have reached the backend but no success
    /// was confirmed (timeout, broken connection, cut off by shutdown's deadline).
    pub unconfirmed: u64,
}

impl Settled {
    /// Spans dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_shutdown
    }
}

/// The running totals behind [`Settled`]. Relaxed counters: each batch adds to them once, and a
/// report that needs exactness reads them after the fan-out's own synchronisation (flush,
/// shutdown).
#[derive(Debug, Default)]
pub(crate) struct SettledCounters {
    batches: AtomicU64,
    spans: AtomicU64,
    exported: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_shutdown: AtomicU64,
    unconfirmed: AtomicU64,
}

impl SettledCounters {
    fn add(&self, s: &Settled) {
        // Relaxed: independent statistics (see the type's comment). `spans` is added last so a
        // reader that reads it first never sees outcomes exceed it.
        self.exported.fetch_add(s.exported, Ordering::Relaxed);
        self.rejected.fetch_add(s.rejected, Ordering::Relaxed);
        self.failed.fetch_add(s.failed, Ordering::Relaxed);
        self.dropped_queue_full
            .fetch_add(s.dropped_queue_full, Ordering::Relaxed);
        self.dropped_shutdown
            .fetch_add(s.dropped_shutdown, Ordering::Relaxed);
        self.unconfirmed.fetch_add(s.unconfirmed, Ordering::Relaxed);
        self.batches.fetch_add(s.batches, Ordering::Relaxed);
        self.spans.fetch_add(s.spans, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Settled {
        Settled {
            batches: self.batches.load(Ordering::Relaxed),
            spans: self.spans.load(Ordering::Relaxed),
            exported: self.exported.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_shutdown: self.dropped_shutdown.load(Ordering::Relaxed),
            unconfirmed: self.unconfirmed.load(Ordering::Relaxed),
        }
    }
}

/// Called once with a batch's settlement (see [`crate::FanOut::send_with`]).
pub type SettleHook = Box<dyn FnOnce(&Settled) + Send + 'static>;

/// One batch's settlement, shared by its destinations.
pub(crate) struct Ticket {
    spans: u64,
    /// Destinations without a fate yet.
    remaining: AtomicUsize,
    /// The fates so far, combined.
    combined: Mutex<Combined>,
    /// Told the settlement once it is known.
    hook: Mutex<Option<SettleHook>>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("spans", &self.spans)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Combined {
    /// The fewest spans any destination accepted so far.
    min_accepted: u64,
    /// The most severe non-export fate so far.
    worst: Option<Fate>,
}

/// Which fate explains the spans not every destination took: the lower, the more severe.
fn severity(fate: Fate) -> u8 {
    match fate {
        Fate::Dropped(_) => 0,
        Fate::Failed => 1,
        Fate::Unconfirmed => 2,
        Fate::Exported { .. } => 3,
    }
}

impl Ticket {
    /// A ticket for a batch of `spans` spans going to `destinations` destinations (at least 1).
    pub(crate) fn new(spans: u64, destinations: usize, hook: Option<SettleHook>) -> Self {
        Self {
            spans,
            remaining: AtomicUsize::new(destinations.max(1)),
            combined: Mutex::new(Combined {
                min_accepted: spans,
                worst: None,
            }),
            hook: Mutex::new(hook),
        }
    }

    /// Records one destination's fate; the last one settles the batch into `totals` and gets
    /// `true`. Each destination calls this exactly once.
    pub(crate) fn settle(&self, fate: Fate, totals: &SettledCounters) -> bool {
        {
            let mut c = self.combined.lock();
            let accepted = match fate {
                Fate::Exported { accepted } => accepted.min(self.spans),
                _ => 0,
            };
            c.min_accepted = c.min_accepted.min(accepted);
            if !matches!(fate, Fate::Exported { accepted } if accepted >= self.spans)
                && c.worst.is_none_or(|w| severity(fate) < severity(w))
            {
                c.worst = Some(fate);
            }
        }
        // AcqRel: the last destination must see every other destination's fate, which each
        // recorded under the mutex before its decrement.
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return false;
        }
        let c = self.combined.lock();
        let mut s = Settled {
            batches: 1,
            spans: self.spans,
            exported: c.min_accepted,
            ..Settled::default()
        };
        let rest = self.spans - c.min_accepted;
        match c.worst {
            None => {}
            Some(Fate::Dropped(DropReason::QueueFull)) => s.dropped_queue_full = rest,
            Some(Fate::Dropped(DropReason::ShutdownDeadline)) => s.dropped_shutdown = rest,
            Some(Fate::Failed) => s.failed = rest,
            Some(Fate::Unconfirmed) => s.unconfirmed = rest,
            Some(Fate::Exported { .. }) => s.rejected = rest,
        }
        drop(c);
        totals.add(&s);
        if let Some(hook) = self.hook.lock().take() {
            hook(&s);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(spans: u64, fates: &[Fate]) -> Settled {
        let totals = SettledCounters::default();
        let ticket = Ticket::new(spans, fates.len(), None);
        for (i, fate) in fates.iter().enumerate() {
            assert_eq!(ticket.settle(*fate, &totals), i + 1 == fates.len());
            let settled = totals.snapshot();
            assert_eq!(settled.batches, u64::from(i + 1 == fates.len()));
        }
        let s = totals.snapshot();
        assert_eq!(
            s.spans,
            s.exported + s.rejected + s.failed + s.dropped() + s.unconfirmed
        );
        s
    }

    #[test]
    fn one_destination_settles_as_its_fate() {
        assert_eq!(settle(10, &[Fate::Exported { accepted: 10 }]).exported, 10);
        let s = settle(10, &[Fate::Exported { accepted: 7 }]);
        assert_eq!((s.exported, s.rejected), (7, 3));
        assert_eq!(settle(10, &[Fate::Failed]).failed, 10);
        assert_eq!(settle(10, &[Fate::Unconfirmed]).unconfirmed, 10);
        assert_eq!(
            settle(10, &[Fate::Dropped(DropReason::ShutdownDeadline)]).dropped_shutdown,
            10
        );
    }

    #[test]
    fn several_destinations_export_only_what_all_took() {
        let s = settle(
            10,
            &[
                Fate::Exported { accepted: 10 },
                Fate::Exported { accepted: 8 },
            ],
        );
        assert_eq!((s.exported, s.rejected), (8, 2));
        let s = settle(
            10,
            &[
                Fate::Unconfirmed,
                Fate::Failed,
                Fate::Exported { accepted: 10 },
            ],
        );
        assert_eq!((s.exported, s.failed, s.unconfirmed), (0, 10, 0));
        let s = settle(4, &[Fate::Dropped(DropReason::QueueFull), Fate::Failed]);
        assert_eq!(s.dropped_queue_full, 4);
    }
}
