//! Where the receivers hand accepted requests: a [`Sink`], normally a `spanflow::Pipeline`.
//!
//! The trait is the small slice of the pipeline the relay needs, so the receivers can be tested
//! against an in-process [`MemorySink`] and the relay can run against any pipeline.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use spanflow::{PipelineStats, Receipt};

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
    /// The request alone is larger than the sink's whole memory budget.
    TooLarge {
        /// The refused request.
        request: TraceRequest,
    },
}

/// Error from [`Sink::flush`] or [`Sink::shutdown`].
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The deadline passed with spans not settled (shutdown settles them at the deadline as
    /// dropped or unconfirmed).
    #[error("did not finish in time: {0}")]
    Timeout(String),
    /// Everything settled in time, but some spans were not delivered (they are in the books).
    #[error("finished, but {0}")]
    Undelivered(String),
}

/// How a sink took a request.
#[derive(Debug)]
pub enum Accepted {
    /// The request is the sink's now: answer the client.
    Now,
    /// The request is the sink's once it is durable: answer the client when this resolves with
    /// anything but [`spanflow::RequestFate::NotExported`] (the sink was shut down before it was written).
    WhenDurable(Receipt),
}

/// The pipeline as seen by the receivers.
pub trait Sink: Send + Sync + 'static {
    /// Takes `request` or refuses it at once; never blocks.
    fn try_submit(&self, request: TraceRequest) -> Result<Accepted, Refused>;
    /// Blocks until everything accepted so far is exported or finally failed, or `timeout` passes.
    fn flush(&self, timeout: Duration) -> Result<(), FlushError>;
    /// Stops the sink after flushing, waiting at most `timeout`.
    fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        self.flush(timeout)
    }
    /// The books now (see [`PipelineStats`]).
    fn stats(&self) -> PipelineStats;
}

impl<S: Sink + ?Sized> Sink for Arc<S> {
    fn try_submit(&self, request: TraceRequest) -> Result<Accepted, Refused> {
        (**self).try_submit(request)
    }
    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        (**self).flush(timeout)
    }
    fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        (**self).shutdown(timeout)
    }
    fn stats(&self) -> PipelineStats {
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
/// assert_eq!(sink.stats().accepted, 0);
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
    stats: PipelineStats,
    peak_queued_bytes: u64,
}

impl MemorySink {
    /// A sink that refuses with `Full` once `budget` bytes are held.
    pub fn new(budget: u64) -> Self {
        let sink = Self {
            inner: Mutex::new(MemoryInner::default()),
            budget,
        };
        sink.inner.lock().stats.memory_budget_bytes = budget;
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
            inner.stats.exported += r.span_count() as u64;
            inner.stats.queued_spans -= r.span_count() as u64;
            inner.stats.memory_used_bytes -= r.encoded_len() as u64;
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
    fn try_submit(&self, request: TraceRequest) -> Result<Accepted, Refused> {
        let mut inner = self.inner.lock();
        let spans = request.span_count() as u64;
        if inner.closed {
            inner.stats.refused.shut_down += spans;
            inner.stats.received += spans;
            return Err(Refused::Closed { request });
        }
        let bytes = request.encoded_len() as u64;
        if inner.hold {
            if self.budget > 0 && inner.stats.memory_used_bytes + bytes > self.budget {
                inner.stats.refused.budget_full += spans;
                inner.stats.received += spans;
                return Err(Refused::Full {
                    request,
                    retry_after: Duration::from_millis(100),
                });
            }
            inner.stats.memory_used_bytes += bytes;
            inner.stats.queued_spans += spans;
            inner.peak_queued_bytes = inner.peak_queued_bytes.max(inner.stats.memory_used_bytes);
            inner.stats.memory_peak_bytes = inner.peak_queued_bytes;
            inner.held.push(request);
        } else {
            inner.stats.exported += spans;
            inner.kept.push(request);
        }
        inner.stats.accepted += spans;
        inner.stats.received += spans;
        Ok(Accepted::Now)
    }
    fn flush(&self, _timeout: Duration) -> Result<(), FlushError> {
        Ok(())
    }
    fn stats(&self) -> PipelineStats {
        self.inner.lock().stats.clone()
    }
}
