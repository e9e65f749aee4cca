//! The books as a reader sees them: one snapshot type, one definition of every outcome.
//!
//! A span handed to a pipeline is either *refused* (never taken) or *accepted*. An accepted
//! span ends in exactly one of *exported*, *failed*, *dropped* or *unconfirmed*, and until then
//! it is *queued*:
//!
//! `accepted = exported + failed + dropped + unconfirmed + queued`
//!
//! The relay's `/metrics`, its final line and [`crate::Pipeline::stats`] all read this one
//! type; [`crate::books`](self) says where each counter is kept.

use std::fmt;

pub use spanflow_export::BackendStats;

/// Spans the pipeline never took, by reason. A submitted request that is refused comes back to
/// its caller (the relay answers its client "retry later"); an SDK span has no caller to go back
/// to, so for [`crate::SpanProcessor`] these spans are lost — and counted here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedSpans {
    /// The memory budget was full (for SDK spans: for longer than the overflow policy waits).
    pub budget_full: u64,
    /// The pipeline was shutting down or shut down.
    pub shut_down: u64,
    /// One item weighed more than the whole memory budget.
    pub too_large: u64,
}

impl RefusedSpans {
    /// All refused spans.
    pub fn total(&self) -> u64 {
        self.budget_full + self.shut_down + self.too_large
    }
}

/// Accepted spans discarded on purpose, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedSpans {
    /// Removed by a processor (filter, sampler), or lost with a batch a processor failed on.
    pub processor: u64,
    /// Discarded because the environment disabled export (`OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`, with no exporter configured in code or configuration).
    pub disabled: u64,
    /// Pushed out of a backend's queue by its drop policy (`drop_newest`/`drop_oldest`).
    pub queue_full: u64,
    /// Certainly not delivered when shutdown's deadline passed: still in the pipeline, never
    /// sent, or given up between retries.
    pub shutdown_deadline: u64,
}

impl DroppedSpans {
    /// All dropped spans.
    pub fn total(&self) -> u64 {
        self.processor + self.disabled + self.queue_full + self.shutdown_deadline
    }
}

/// A snapshot of a pipeline's books.
///
/// Counters are read one at a time while spans keep moving, so a snapshot under load may place
/// a span that is just settling in `queued_spans`; after `flush` or `shutdown` the books balance
/// exactly and [`PipelineStats::unaccounted`] is 0.
///
/// Its `Display` form is the space-separated `key=value` line the relay prints when it stops.
///
/// ```
/// let stats = spanflow::PipelineStats { accepted: 3, exported: 2, queued_spans: 1, ..Default::default() };
/// assert_eq!(stats.unaccounted(), 0);
/// assert!(stats.to_string().starts_with("accepted=3 exported=2 failed=0 dropped=0 unconfirmed=0 queued=1"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Spans handed to the pipeline: `accepted + refused`.
    pub received: u64,
    /// Spans the pipeline took responsibility for.
    pub accepted: u64,
    /// Spans never taken, by reason.
    pub refused: RefusedSpans,
    /// Of `refused`, SDK spans: they had no caller to go back to, so they are lost.
    pub sdk_spans_lost: u64,
    /// Spans every primary backend (or its fallback) confirmed.
    pub exported: u64,
    /// Spans a backend certainly did not take: it refused them (see `rejected`), answered with
    /// an error, or could not be reached until retries ran out.
    pub failed: u64,
    /// Of `failed`, spans a backend refused through OTLP partial success.
    pub rejected: u64,
    /// Accepted spans discarded on purpose, by reason.
    pub dropped: DroppedSpans,
    /// Spans whose delivery is unknown: sent, but no attempt was confirmed (an attempt timed
    /// out, its connection broke mid-request, or shutdown's deadline cut it off). They may or
    /// may not have arrived.
    pub unconfirmed: u64,
    /// Accepted spans not yet settled: in an intake, being encoded or processed, waiting for a
    /// backend or in flight to it.
    pub queued_spans: u64,
    /// Bytes accepted spans hold now, at every stage (see [`crate::MemorySettings`]).
    pub memory_used_bytes: u64,
    /// The most `memory_used_bytes` ever was.
    pub memory_peak_bytes: u64,
    /// The memory budget.
    pub memory_budget_bytes: u64,
    /// Export attempts that were retries, over all backends.
    pub retried: u64,
    /// Each backend's own counters (a batch a primary failed on may still be exported by its
    /// fallback; the totals above say what finally became of it).
    pub backends: Vec<BackendStats>,
    /// The durable queue's own statistics (disk use, per-backend cursors, what it replayed,
    /// truncated or skipped at start, fsyncs), when the pipeline has one. After shutdown,
    /// `queued_spans` is what waits in it for the next start.
    pub spool: Option<spanflow_spool::Stats>,
}

impl PipelineStats {
    /// Accepted spans whose fate is final: exported, failed, dropped or unconfirmed.
    pub fn settled(&self) -> u64 {
        self.exported + self.failed + self.dropped.total() + self.unconfirmed
    }

    /// Accepted spans the books cannot explain; 0 when they balance.
    pub fn unaccounted(&self) -> i128 {
        i128::from(self.accepted) - i128::from(self.settled()) - i128::from(self.queued_spans)
    }

    /// Accepted spans that were not delivered, or may not have been: failed, dropped by
    /// spanflow's own policies or deadline, or unconfirmed (processors' drops and drops of a
    /// disabled pipeline are intended and not counted here).
    pub fn undelivered(&self) -> u64 {
        self.failed + self.dropped.queue_full + self.dropped.shutdown_deadline + self.unconfirmed
    }
}

impl fmt::Display for PipelineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted={} exported={} failed={} dropped={} unconfirmed={} queued={} refused={} \
             rejected={} dropped.processor={} dropped.disabled={} dropped.queue_full={} \
             dropped.shutdown_deadline={} refused.budget_full={} refused.shut_down={} refused.too_large={} retried={} \
             memory_peak_bytes={}",
            self.accepted,
            self.exported,
            self.failed,
            self.dropped.total(),
            self.unconfirmed,
            self.queued_spans,
            self.refused.total(),
            self.rejected,
            self.dropped.processor,
            self.dropped.disabled,
            self.dropped.queue_full,
            self.dropped.shutdown_deadline,
            self.refused.budget_full,
            self.refused.shut_down,
            self.refused.too_large,
            self.retried,
            self.memory_peak_bytes,
        )
    }
}

/// What a flush or shutdown could not deliver among the spans that settled while it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Undelivered {
    /// Spans that failed.
    pub failed: u64,
    /// Spans dropped by a queue's drop policy or shutdown's deadline.
    pub dropped: u64,
    /// Spans whose delivery is unknown.
    pub unconfirmed: u64,
    /// SDK spans lost at the intake (budget full, or ended after shutdown began).
    pub refused: u64,
}

impl Undelivered {
    /// The change between two snapshots, `before` taken first.
    pub(crate) fn between(before: &PipelineStats, after: &PipelineStats) -> Self {
        let lost = |s: &PipelineStats| s.dropped.queue_full + s.dropped.shutdown_deadline;
        Self {
            failed: after.failed.saturating_sub(before.failed),
            dropped: lost(after).saturating_sub(lost(before)),
            unconfirmed: after.unconfirmed.saturating_sub(before.unconfirmed),
            refused: after.sdk_spans_lost.saturating_sub(before.sdk_spans_lost),
        }
    }

    /// Whether everything was delivered.
    pub fn is_empty(&self) -> bool {
        self.failed + self.dropped + self.unconfirmed + self.refused == 0
    }
}

impl fmt::Display for Undelivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed, {} dropped, {} unconfirmed, {} refused",
            self.failed, self.dropped, self.unconfirmed, self.refused
        )
    }
}
