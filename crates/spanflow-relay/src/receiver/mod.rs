//! The OTLP receivers: [`grpc`] (tonic) and [`http`] (axum). Both index requests with the wire
//! model (no span decoding), hand them to the [`Sink`] and answer only after the sink accepted.
//! With the cargo feature `kafka`, `kafka` reads OTLP records from a Kafka consumer group and
//! commits their offsets once the sink has settled their spans.
//!
//! What guards them on an open network lives beside them: the server loop with connection
//! limits, idle timeouts and the shutdown drain (`server`, `limits`), TLS with reload
//! (`tls`, [`reload`]) and bearer/basic authentication ([`auth`]). Request bytes in flight
//! are admitted here ([`admission`], through `Shared::reserve`) as they arrive, never by what a
//! client declares; the metrics only report the allowance's gauges.

pub(crate) mod admission;
pub(crate) mod auth;
pub(crate) mod grpc;
pub(crate) mod http;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;
pub(crate) mod limits;
pub(crate) mod reload;
pub(crate) mod server;
pub(crate) mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::metrics::{Outcome, ReceiverProtocol, RelayMetrics};
use crate::receiver::admission::{Admission, Reservation};
use crate::sink::{Accepted, Refused, Sink};
use crate::wire::{self, TraceRequest};

/// State shared by every receiver of one relay.
#[derive(Clone)]
pub(crate) struct Shared {
    sink: Arc<dyn Sink>,
    metrics: Arc<RelayMetrics>,
    admission: Arc<Admission>,
    accepting: Arc<AtomicBool>,
    auth: Option<auth::Authenticator>,
    body_read_timeout: Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("accepting", &self.accepting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Receivers feeding `sink`, counting into `metrics`, holding at most `in_flight_limit`
    /// bytes of request bodies at once (see [`RelayMetrics::in_flight`]).
    pub(crate) fn new(
        sink: Arc<dyn Sink>,
        metrics: Arc<RelayMetrics>,
        in_flight_limit: u64,
    ) -> Self {
        let admission = Arc::new(Admission::new(in_flight_limit));
        metrics.report_in_flight(&admission);
        Self {
            sink,
            metrics,
            admission,
            accepting: Arc::new(AtomicBool::new(true)),
            auth: None,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
        }
    }

    /// Requires the credentials `auth` checks on every request.
    pub(crate) fn with_auth(mut self, auth: Option<auth::Authenticator>) -> Self {
        self.auth = auth;
        self
    }

    /// Bounds the time a request's body may take to arrive after its headers.
    pub(crate) fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// The body read timeout.
    pub(crate) fn body_read_timeout(&self) -> Duration {
        self.body_read_timeout
    }

    /// Checks a request's credentials, when authentication is configured; a refusal is
    /// counted.
    pub(crate) fn authenticate(
        &self,
        protocol: ReceiverProtocol,
        headers: &::http::HeaderMap,
    ) -> Result<(), (auth::AuthFailure, &'static str)> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        auth.check(headers).map_err(|failure| {
            self.metrics.request(protocol, Outcome::Unauthenticated);
            tracing::debug!(?protocol, reason = failure.message(), "request refused");
            (failure, auth.challenge())
        })
    }

    /// Whether requests are still taken (false once shutdown began).
    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }
    /// Reserves `bytes` of the in-flight allowance, or `None` when it is used up. A single
    /// request larger than the whole allowance is let through alone (its size is already
    /// bounded by the receiver's own limit).
    pub(crate) fn reserve(&self, bytes: u64) -> Option<Reservation> {
        self.admission.reserve(bytes)
    }
    /// From now on every request is answered with "retry later" (shutdown).
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }
    /// The counters.
    pub(crate) fn metrics(&self) -> &Arc<RelayMetrics> {
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
    /// The request alone is larger than the pipeline's whole memory budget (the configuration
    /// check makes this impossible for requests within the receivers' size limits).
    TooLarge,
}

/// Hands a parsed request to the sink and does the accounting; with a durable sink, returns
/// once the request is written (the client is answered only then).
pub(crate) async fn ingest(
    shared: &Shared,
    protocol: ReceiverProtocol,
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
        Ok(Accepted::Now)
    } else {
        shared.sink.try_submit(request)
    };
    let taken = match submitted {
        Ok(Accepted::Now) => true,
        // The pipeline holds the request (and counts it accepted) from here; it either writes
        // it or, if shutdown closes the queue first, counts it dropped.
        Ok(Accepted::WhenDurable(receipt)) => receipt.await != spanflow::RequestFate::NotExported,
        Err(Refused::Full { retry_after, .. }) => {
            metrics.refused_backpressure(spans);
            metrics.request(protocol, Outcome::Backpressure);
            return Err(NotTaken::Backpressure { retry_after });
        }
        Err(Refused::TooLarge { .. }) => {
            metrics.refused_invalid(spans);
            metrics.request(protocol, Outcome::TooLarge);
            return Err(NotTaken::TooLarge);
        }
        Err(Refused::Closed { .. }) => {
            metrics.refused_closed(spans);
            metrics.request(protocol, Outcome::Closed);
            return Err(NotTaken::Closed);
        }
    };
    if !taken {
        metrics.request(protocol, Outcome::Closed);
        return Err(NotTaken::Closed);
    }
    metrics.accepted(protocol, spans);
    if rejected > 0 {
        metrics.refused_invalid(rejected);
        metrics.request(protocol, Outcome::Partial);
    } else {
        metrics.request(protocol, Outcome::Accepted);
    }
    Ok(Ingested { rejected, message })
}

/// The body read timeout of a [`Shared`] built without one.
const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Seconds for a `Retry-After` header: at least 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_report_the_receivers_allowance() {
        let sink = Arc::new(crate::sink::MemorySink::new(1 << 20));
        let shared = Shared::new(sink, Arc::new(RelayMetrics::default()), 100);
        let a = shared.reserve(60).expect("fits");
        assert!(shared.reserve(60).is_none());
        let in_flight = shared.metrics().in_flight();
        assert_eq!(
            (in_flight.used, in_flight.peak, in_flight.limit),
            (60, 60, 100)
        );
        drop(a);
        assert_eq!(shared.metrics().in_flight().used, 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }
}
