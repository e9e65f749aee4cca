//! Where the receivers hand accepted requests: a [`Sink`], normally a `spanflow::Pipeline`.
//!
//! The trait is the small slice of the pipeline the relay needs, so the receivers can be tested
//! against an in-process [`MemorySink`] and the relay can run against any pipeline.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::wire::TraceRequest;

/// Why a sink did not take a request. The request is handed back untouched.
#[derive(Debug)]
pub enum Refused {
    /// The memory budget is exhausted; the client should retry after `retry_after`.
    Full {
        /// The refused request.
        request: TraceRequest,
        /// A hint for when there may be room again.
        retry_after: Duration,
    },
    /// The sink is shutting down and takes nothing more.
    Closed {
        /// The refused request.
        request: TraceRequest,
    },
}

/// Counters a sink reports for the relay's `/metrics` page. Every field is a running total
/// except the `queued_*` gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkStats {
    /// Spans the sink accepted.
    pub accepted_spans: u64,
    /// Spans the sink refused (budget full or closed).
    pub refused_spans: u64,
    /// Spans dropped after acceptance, by reason (e.g. "filtered", "export_failed").
    pub dropped_spans: Vec<(String, u64)>,
    /// Spans a backend confirmed.
    pub exported_spans: u64,
    /// Spans that finally failed to export.
    pub failed_spans: u64,
    /// Export attempts that were retried.
    pub retried: u64,
    /// Spans waiting in the sink.
    pub queued_spans: u64,
    /// Bytes waiting in the sink.
    pub queued_bytes: u64,
    /// The sink's memory budget in bytes, 0 when unbounded.
    pub budget_bytes: u64,
    /// Export latency, when the sink measures it.
    pub export_latency: Option<LatencySnapshot>,
}

/// A latency histogram: cumulative `(upper bound in seconds, count)` buckets, count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Cumulative buckets, ascending bounds.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum_seconds: f64,
}

impl SinkStats {
    /// Total spans dropped after acceptance, over all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_spans.iter().map(|(_, n)| n).sum()
    }
}

/// Error from [`Sink::flush`].
#[derive(Debug, thiserror::Error)]
#[error("flush did not finish: {0}")]
pub struct FlushError(pub String);

/// The pipeline as seen by the receivers.
pub trait Sink: Send + Sync + 'static {
    /// Takes `request` or refuses it at once; never blocks.
    fn try_submit(&self, request: TraceRequest) -> Result<(), Refused>;
    /// Blocks until everything accepted so far is exported or finally failed, or `timeout` passes.
    fn flush(&self, timeout: Duration) -> Result<(), FlushError>;
    /// Stops the sink after flushing, waiting at most `timeout`.
    fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        self.flush(timeout)
    }
    /// Current counters.
    fn stats(&self) -> SinkStats;
}

impl<S: Sink + ?Sized> Sink for Arc<S> {
    fn try_submit(&self, request: TraceRequest) -> Result<(), Refused> {
        (**self).try_submit(request)
    }
    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        (**self).flush(timeout)
    }
    fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        (**self).shutdown(timeout)
    }
    fn stats(&self) -> SinkStats {
        (**self).stats()
    }
}

/// An in-process sink that keeps every request it accepts, up to a byte budget.
///
/// Used by tests and benches: it "exports" at once, so `exported == accepted` unless
/// [`MemorySink::hold`] is set, in which case accepted requests stay queued and count
/// against the budget until [`MemorySink::release`].
///
/// ```
/// use spanflow_relay::sink::{MemorySink, Sink};
/// let sink = MemorySink::new(1 << 20);
/// assert_eq!(sink.stats().accepted_spans, 0);
/// ```
#[derive(Debug, Default)]
pub struct MemorySink {
    inner: Mutex<MemoryInner>,
    budget: u64,
}

#[derive(Debug, Default)]
struct MemoryInner {
    kept: Vec<TraceRequest>,
    held: Vec<TraceRequest>,
    hold: bool,
    closed: bool,
    stats: SinkStats,
    peak_queued_bytes: u64,
}

impl MemorySink {
    /// A sink that refuses with `Full` once `budget` bytes are held.
    pub fn new(budget: u64) -> Self {
        let sink = Self {
            inner: Mutex::new(MemoryInner::default()),
            budget,
        };
        sink.inner.lock().stats.budget_bytes = budget;
        sink
    }
    /// While `hold` is true, accepted requests stay queued (counting against the budget).
    pub fn set_hold(&self, hold: bool) {
        self.inner.lock().hold = hold;
    }
    /// Moves every held request to the kept list, as if exported.
    pub fn release(&self) {
        let mut inner = self.inner.lock();
        let held = std::mem::take(&mut inner.held);
        for r in held {
            inner.stats.exported_spans += r.span_count() as u64;
            inner.stats.queued_spans -= r.span_count() as u64;
            inner.stats.queued_bytes -= r.encoded_len() as u64;
            inner.kept.push(r);
        }
    }
    /// Every exported request, in acceptance order.
    pub fn requests(&self) -> Vec<TraceRequest> {
        self.inner.lock().kept.clone()
    }
    /// The most bytes ever queued at once.
    pub fn peak_queued_bytes(&self) -> u64 {
        self.inner.lock().peak_queued_bytes
    }
    /// Refuse everything from now on with `Closed`.
    pub fn close(&self) {
        self.inner.lock().closed = true;
    }
}

impl Sink for MemorySink {
    fn try_submit(&self, request: TraceRequest) -> Result<(), Refused> {
        let mut inner = self.inner.lock();
        let spans = request.span_count() as u64;
        if inner.closed {
            inner.stats.refused_spans += spans;
            return Err(Refused::Closed { request });
        }
        let bytes = request.encoded_len() as u64;
        if inner.hold {
            if self.budget > 0 && inner.stats.queued_bytes + bytes > self.budget {
                inner.stats.refused_spans += spans;
                return Err(Refused::Full {
                    request,
                    retry_after: Duration::from_millis(100),
                });
            }
            inner.stats.queued_bytes += bytes;
            inner.stats.queued_spans += spans;
            inner.peak_queued_bytes = inner.peak_queued_bytes.max(inner.stats.queued_bytes);
            inner.held.push(request);
        } else {
            inner.stats.exported_spans += spans;
            inner.kept.push(request);
        }
        inner.stats.accepted_spans += spans;
        Ok(())
    }
    fn flush(&self, _timeout: Duration) -> Result<(), FlushError> {
        Ok(())
    }
    fn stats(&self) -> SinkStats {
        self.inner.lock().stats.clone()
    }
}
