//! The OTLP receivers: [`grpc`] (tonic) and [`http`] (axum). Both index requests with the wire
//! model (no span decoding), hand them to the [`Sink`] and answer only after the sink accepted.

pub mod grpc;
pub mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::{Outcome, Protocol, RelayMetrics};
use crate::sink::{Refused, Sink};
use crate::wire::{self, TraceRequest};

/// State shared by every receiver of one relay.
#[derive(Clone)]
pub struct Shared {
    sink: Arc<dyn Sink>,
    metrics: Arc<RelayMetrics>,
    accepting: Arc<AtomicBool>,
    in_flight: Arc<InFlight>,
}

/// Bytes of request bodies being read or decompressed right now, bounded so that a flood of
/// large concurrent requests cannot take memory beyond the pipeline's budget: a request that
/// does not fit is answered with "retry later" before its body is read.
#[derive(Debug)]
struct InFlight {
    used: AtomicU64,
    limit: u64,
}

/// A reservation of in-flight bytes, released on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    in_flight: Arc<InFlight>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Relaxed: a counter whose only readers are other reservations' CAS loops.
        self.in_flight.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("accepting", &self.accepting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Receivers feeding `sink`, counting into `metrics`, reading at most `in_flight_limit`
    /// bytes of request bodies at once.
    pub fn new(sink: Arc<dyn Sink>, metrics: Arc<RelayMetrics>, in_flight_limit: u64) -> Self {
        Self {
            sink,
            metrics,
            accepting: Arc::new(AtomicBool::new(true)),
            in_flight: Arc::new(InFlight {
                used: AtomicU64::new(0),
                limit: in_flight_limit,
            }),
        }
    }

    /// Reserves `bytes` of the in-flight allowance, or `None` when it is used up. A single
    /// request larger than the whole allowance is let through alone (its size is already
    /// bounded by the receiver's own limit).
    pub(crate) fn reserve(&self, bytes: u64) -> Option<Reservation> {
        let in_flight = &self.in_flight;
        let mut used = in_flight.used.load(Ordering::Relaxed);
        loop {
            if used > 0 && used + bytes > in_flight.limit {
                return None;
            }
            // Relaxed: the counter guards no other memory; only its value matters.
            match in_flight.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Reservation {
                        in_flight: in_flight.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }
    /// From now on every request is answered with "retry later" (shutdown).
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }
    /// The counters.
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        &self.metrics
    }
}

/// A request the sink took, possibly without its invalid spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ingested {
    /// Spans refused as invalid (reported as partial_success; the client must not retry them).
    pub(crate) rejected: usize,
    /// Why they were refused.
    pub(crate) message: String,
}

/// A request the sink did not take; the client should retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotTaken {
    /// The memory budget is full.
    Backpressure { retry_after: Duration },
    /// The relay is shutting down.
    Closed,
}

/// Hands a parsed request to the sink and does the accounting.
pub(crate) fn ingest(
    shared: &Shared,
    protocol: Protocol,
    request: TraceRequest,
) -> Result<Ingested, NotTaken> {
    let metrics = &shared.metrics;
    metrics.received(protocol, request.span_count());
    let (request, rejected, message) = wire::drop_invalid_spans(request);
    if !shared.accepting.load(Ordering::Relaxed) {
        metrics.refused_closed(request.span_count());
        metrics.request(protocol, Outcome::Closed);
        return Err(NotTaken::Closed);
    }
    let spans = request.span_count();
    let submitted = if spans == 0 {
        Ok(())
    } else {
        shared.sink.try_submit(request)
    };
    match submitted {
        Ok(()) => {
            metrics.accepted(protocol, spans);
            if rejected > 0 {
                metrics.refused_invalid(rejected);
                metrics.request(protocol, Outcome::Partial);
            } else {
                metrics.request(protocol, Outcome::Accepted);
            }
            Ok(Ingested { rejected, message })
        }
        Err(Refused::Full { retry_after, .. }) => {
            metrics.refused_backpressure(spans);
            metrics.request(protocol, Outcome::Backpressure);
            Err(NotTaken::Backpressure { retry_after })
        }
        Err(Refused::Closed { .. }) => {
            metrics.refused_closed(spans);
            metrics.request(protocol, Outcome::Closed);
            Err(NotTaken::Closed)
        }
    }
}

/// Seconds for a `Retry-After` header: at least 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_reservations_stay_within_the_limit() {
        let sink = Arc::new(crate::sink::MemorySink::new(1 << 20));
        let shared = Shared::new(sink, Arc::new(RelayMetrics::default()), 100);
        let a = shared.reserve(60).expect("fits");
        assert!(shared.reserve(60).is_none());
        let b = shared.reserve(40).expect("fits exactly");
        drop(a);
        let c = shared.reserve(60).expect("room again");
        drop((b, c));
        // One oversized request alone is let through; a second is not.
        let big = shared.reserve(500).expect("alone");
        assert!(shared.reserve(1).is_none());
        drop(big);
        assert!(shared.reserve(100).is_some());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }
}
