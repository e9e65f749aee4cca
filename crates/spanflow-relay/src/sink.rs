//! Where the receivers hand accepted requests: a [`Sink`], normally a `spanflow::Pipeline`.
//!
//! The trait is the small slice of the pipeline the relay needs, so the receivers can be tested
//! against an in-process [`MemorySink`] and the relay can run against any pipeline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;

use spanflow::export::Settled;
use spanflow::{PipelineStats, RequestFate};

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
pub enum SinkFlushError {
    /// The deadline passed with spans not settled (shutdown settles them at the deadline as
    /// dropped or unconfirmed).
    #[error("did not finish in time: {0}")]
    Timeout(String),
    /// Everything settled in time, but some spans were not delivered (they are in the books).
    #[error("finished, but {0}")]
    Undelivered(String),
}

/// Resolves once a request taken by [`Sink::submit_tracked`] is settled (exported, failed,
/// dropped or unconfirmed: in the books either way); the Kafka receiver commits offsets on it.
#[must_use = "a tracked request tells its fate only when polled"]
pub struct Tracked(Pin<Box<dyn Future<Output = RequestFate> + Send>>);

impl Tracked {
    /// Wraps a future that yields the request's fate.
    pub fn new(fate: impl Future<Output = RequestFate> + Send + 'static) -> Self {
        Self(Box::pin(fate))
    }

    /// The fate if it is known now, without waiting (usable from a plain thread: the futures
    /// behind it are runtime-agnostic channels).
    pub fn try_fate(&mut self) -> Option<RequestFate> {
        match self
            .0
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(fate) => Some(fate),
            Poll::Pending => None,
        }
    }
}

impl Future for Tracked {
    type Output = RequestFate;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RequestFate> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracked")
    }
}

/// How a sink took a request.
#[derive(Debug)]
pub enum Accepted {
    /// The request is the sink's now: answer the client.
    Now,
    /// The request is the sink's once it is durable: answer the client when this resolves with
    /// anything but [`RequestFate::NotExported`] (the sink was shut down before it was written).
    WhenDurable(Tracked),
}

/// The pipeline as seen by the receivers.
pub trait Sink: Send + Sync + 'static {
    /// Takes `request` or refuses it at once; never blocks.
    fn try_submit(&self, request: TraceRequest) -> Result<Accepted, Refused>;
    /// [`Sink::try_submit`], and a [`Tracked`] that resolves when the request's spans are
    /// settled.
    fn submit_tracked(&self, request: TraceRequest) -> Result<Tracked, Refused>;
    /// Blocks until everything accepted so far is exported or finally failed, or `timeout` passes.
    fn flush(&self, timeout: Duration) -> Result<(), SinkFlushError>;
    /// Stops the sink after flushing, waiting at most `timeout`.
    fn shutdown(&self, timeout: Duration) -> Result<(), SinkFlushError> {
        self.flush(timeout)
    }
    /// The books now (see [`PipelineStats`]).
    fn stats(&self) -> PipelineStats;
}

impl<S: Sink + ?Sized> Sink for Arc<S> {
    fn try_submit(&self, request: TraceRequest) -> Result<Accepted, Refused> {
        (**self).try_submit(request)
    }
    fn submit_tracked(&self, request: TraceRequest) -> Result<Tracked, Refused> {
        (**self).submit_tracked(request)
    }
    fn flush(&self, timeout: Duration) -> Result<(), SinkFlushError> {
        (**self).flush(timeout)
    }
    fn shutdown(&self, timeout: Duration) -> Result<(), SinkFlushError> {
        (**self).shutdown(timeout)
    }
    fn stats(&self) -> PipelineStats {
        (**self).stats()
    }
}

/// An in-process sink that keeps every request it accepts, up to a byte budget.
///
/// Used by tests and benches: it "exports" at once, so `exported == accepted` unless
/// [`MemorySink::set_hold`] is on, in which case accepted requests stay queued and count
/// against the budget until [`MemorySink::release`].
///
/// ```
/// use spanflow_relay::{MemorySink, Sink};
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
    held: Vec<(
        TraceRequest,
        Option<tokio::sync::oneshot::Sender<RequestFate>>,
    )>,
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
        for (r, receipt) in held {
            inner.stats.exported += r.span_count() as u64;
            inner.stats.queued_spans -= r.span_count() as u64;
            inner.stats.memory_used_bytes -= r.encoded_len() as u64;
            if let Some(receipt) = receipt {
                let _ = receipt.send(exported(r.span_count()));
            }
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

/// The fate of a request of `spans` spans exported alone.
fn exported(spans: usize) -> RequestFate {
    let spans = spans as u64;
    RequestFate::Settled(Settled {
        batches: 1,
        spans,
        exported: spans,
        ..Settled::default()
    })
}

impl Sink for MemorySink {
    fn try_submit(&self, request: TraceRequest) -> Result<Accepted, Refused> {
        self.submit(request, None).map(|()| Accepted::Now)
    }

    fn submit_tracked(&self, request: TraceRequest) -> Result<Tracked, Refused> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(request, Some(tx))?;
        Ok(Tracked::new(async move {
            rx.await.unwrap_or(RequestFate::NotExported)
        }))
    }

    fn flush(&self, _timeout: Duration) -> Result<(), SinkFlushError> {
        Ok(())
    }
    fn stats(&self) -> PipelineStats {
        self.inner.lock().stats.clone()
    }
}

impl MemorySink {
    fn submit(
        &self,
        request: TraceRequest,
        receipt: Option<tokio::sync::oneshot::Sender<RequestFate>>,
    ) -> Result<(), Refused> {
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
            inner.held.push((request, receipt));
        } else {
            inner.stats.exported += spans;
            if let Some(receipt) = receipt {
                let _ = receipt.send(exported(request.span_count()));
            }
            inner.kept.push(request);
        }
        inner.stats.accepted += spans;
        inner.stats.received += spans;
        Ok(())
    }
}
