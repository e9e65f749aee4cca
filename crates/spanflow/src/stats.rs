//! End-to-end accounting: every span a pipeline received is accepted, refused or dropped with a
//! reason, and every accepted span is exported, failed, dropped with a reason, or still queued.

use serde::Serialize;

/// Why spans were dropped; each field is a span count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DroppedSpans {
    /// The memory budget stayed full for longer than the overflow policy allows.
    pub intake_full: u64,
    /// Spans ended after the pipeline was shut down.
    pub after_shutdown: u64,
    /// Removed on purpose by a processor (filter, sampler) or lost with a batch a processor
    /// failed on.
    pub processor: u64,
    /// Still queued when `shutdown`'s deadline passed.
    pub shutdown_timeout: u64,
}

impl DroppedSpans {
    /// All dropped spans.
    pub fn total(&self) -> u64 {
        self.intake_full + self.after_shutdown + self.processor + self.shutdown_timeout
    }
}

/// One export backend's counters, in spans (from `spanflow-export`'s fan-out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackendStats {
    /// The backend's name.
    pub name: String,
    /// For a fallback, the primary it backs; `None` for a primary.
    pub fallback_of: Option<String>,
    /// Spans offered to the backend.
    pub received: u64,
    /// Spans the backend accepted.
    pub exported: u64,
    /// Spans the backend refused through OTLP partial success.
    pub rejected: u64,
    /// Spans in batches that finally failed (permanent error or retries exhausted).
    pub failed: u64,
    /// Spans in batches dropped (queue overflow, or cancelled at the shutdown deadline).
    pub dropped: u64,
    /// Export attempts that were retries.
    pub retried: u64,
    /// Batches waiting in the backend's queue.
    pub queued_batches: u64,
    /// Batches being exported.
    pub in_flight_batches: u64,
}

/// A snapshot of a pipeline's counters.
///
/// The counters are read one at a time while spans keep moving, so a snapshot taken under load
/// can be off by the spans that moved between two reads; after `flush` or `shutdown` it balances
/// exactly ([`PipelineStats::unaccounted`] is 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PipelineStats {
    /// Spans handed to the pipeline (`on_end` calls plus spans in submitted requests).
    pub received: u64,
    /// Spans the pipeline took responsibility for.
    pub accepted: u64,
    /// Spans in submitted requests refused with `Full` or `Closed` (the caller kept them).
    pub refused: u64,
    /// Spans dropped, by reason.
    pub dropped: DroppedSpans,
    /// Spans that came out of the processor chain (handed to export).
    pub processed: u64,
    /// Spans delivered, as reported by the record backend: the first primary (plus what its
    /// fallback took of the batches it gave up on). Every backend's own counts are in `backends`.
    pub exported: u64,
    /// Spans the record backend (and its fallback) finally did not take.
    pub failed: u64,
    /// Export attempts that were retried.
    pub retried: u64,
    /// Accepted spans not yet exported, failed or dropped.
    pub queued_spans: u64,
    /// Estimated bytes held by spans still in the intakes (encoded batches waiting in the
    /// fan-out are bounded by its queue length and not counted here).
    pub queued_bytes: u64,
    /// Per-backend export counters.
    pub backends: Vec<BackendStats>,
}

impl PipelineStats {
    /// Accepted spans whose fate the counters cannot explain; 0 when the books balance.
    ///
    /// ```
    /// let stats = spanflow::PipelineStats { accepted: 3, exported: 2, queued_spans: 1, ..Default::default() };
    /// assert_eq!(stats.unaccounted(), 0);
    /// ```
    pub fn unaccounted(&self) -> i128 {
        let after_accept = self.dropped.processor + self.dropped.shutdown_timeout;
        i128::from(self.accepted)
            - i128::from(self.exported)
            - i128::from(self.failed)
            - i128::from(after_accept)
            - i128::from(self.queued_spans)
    }
}
