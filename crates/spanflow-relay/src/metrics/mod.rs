//! Self-observability: the relay's own counters (here), their Prometheus rendering together
//! with the pipeline's books (`render`), and the `/metrics` + `/healthz` server (`server`).
//!
//! Counters are plain relaxed atomics: each is an independent running total read only for
//! reporting, so no ordering with other memory is needed.

mod render;
mod server;

pub(crate) use server::{describe, router};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::receiver::admission::Admission;
pub use crate::receiver::admission::InFlightBytes;

/// The receiving protocol of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP.
    Http,
}

impl ReceiverProtocol {
    const ALL: [ReceiverProtocol; 2] = [ReceiverProtocol::Grpc, ReceiverProtocol::Http];
    fn label(self) -> &'static str {
        match self {
            ReceiverProtocol::Grpc => "grpc",
            ReceiverProtocol::Http => "http",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every span accepted.
    Accepted,
    /// Some spans refused as invalid, the rest accepted.
    Partial,
    /// Not a valid request.
    Malformed,
    /// Larger than the configured limit.
    TooLarge,
    /// Content type not supported.
    UnsupportedMediaType,
    /// Refused because the memory budget was full.
    Backpressure,
    /// Refused because the relay is shutting down.
    Closed,
    /// Refused for missing or wrong credentials, before its body was read.
    Unauthenticated,
    /// Its body did not arrive within the body read timeout.
    Timeout,
}

impl Outcome {
    const ALL: [Outcome; 9] = [
        Outcome::Accepted,
        Outcome::Partial,
        Outcome::Malformed,
        Outcome::TooLarge,
        Outcome::UnsupportedMediaType,
        Outcome::Backpressure,
        Outcome::Closed,
        Outcome::Unauthenticated,
        Outcome::Timeout,
    ];
    fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Partial => "partial",
            Outcome::Malformed => "malformed",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::Backpressure => "backpressure",
            Outcome::Closed => "closed",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Timeout => "timeout",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// The relay's own counters, shared by the receivers.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    requests: [[AtomicU64; 9]; 2],
    spans_received: [AtomicU64; 2],
    spans_accepted: [AtomicU64; 2],
    spans_refused_backpressure: AtomicU64,
    spans_refused_closed: AtomicU64,
    spans_refused_invalid: AtomicU64,
    ready: AtomicBool,
    /// The receivers' in-flight allowance, read for reporting only.
    in_flight: OnceLock<Arc<Admission>>,
    connections_open: [AtomicU64; 3],
    connections_closed: [[AtomicU64; 7]; 3],
    kafka: KafkaMetrics,
}

/// The Kafka receiver's counters (`spanflow_relay_kafka_*`).
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    /// Records read.
    pub records: AtomicU64,
    /// Spans in well-formed records.
    pub spans: AtomicU64,
    /// Spans the pipeline accepted.
    pub spans_accepted: AtomicU64,
    /// Records skipped as malformed (not OTLP, or too large).
    pub records_malformed: AtomicU64,
    /// Offset commits sent.
    pub commits: AtomicU64,
    /// Offset commits that failed.
    pub commit_errors: AtomicU64,
    /// Times a partition was paused because the pipeline's budget was full.
    pub pauses: AtomicU64,
    /// Partition assignments and revocations.
    pub rebalances: AtomicU64,
    /// Partitions owned now.
    pub partitions: AtomicU64,
    /// Records handed to the pipeline whose offsets are not committed yet.
    pub records_pending: AtomicU64,
}

/// A copy of [`KafkaMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaCounts {
    /// Records read.
    pub records: u64,
    /// Spans in well-formed records.
    pub spans: u64,
    /// Spans the pipeline accepted.
    pub spans_accepted: u64,
    /// Records skipped as malformed.
    pub records_malformed: u64,
    /// Offset commits sent.
    pub commits: u64,
    /// Offset commits that failed.
    pub commit_errors: u64,
    /// Partition pauses for backpressure.
    pub pauses: u64,
    /// Assignments and revocations.
    pub rebalances: u64,
    /// Partitions owned.
    pub partitions: u64,
    /// Records not yet committed.
    pub records_pending: u64,
}

impl KafkaMetrics {
    /// A copy of the counters.
    pub fn counts(&self) -> KafkaCounts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        KafkaCounts {
            records: l(&self.records),
            spans: l(&self.spans),
            spans_accepted: l(&self.spans_accepted),
            records_malformed: l(&self.records_malformed),
            commits: l(&self.commits),
            commit_errors: l(&self.commit_errors),
            pauses: l(&self.pauses),
            rebalances: l(&self.rebalances),
            partitions: l(&self.partitions),
            records_pending: l(&self.records_pending),
        }
    }
}

/// A server the relay runs, for the connection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The OTLP/gRPC receiver.
    Grpc,
    /// The OTLP/HTTP receiver.
    Http,
    /// `/metrics` and `/healthz`.
    Metrics,
}

impl Listener {
    const ALL: [Listener; 3] = [Listener::Grpc, Listener::Http, Listener::Metrics];
    /// The name used in logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Listener::Grpc => "grpc",
            Listener::Http => "http",
            Listener::Metrics => "metrics",
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client closed it, or it failed.
    Client,
    /// No request began within the header read timeout after it opened.
    HeaderTimeout,
    /// It had no request in progress for the idle timeout.
    IdleTimeout,
    /// The listener was at its connection limit and this was the idlest connection.
    Evicted,
    /// The listener was at its connection limit with no idle connection to close.
    Refused,
    /// The TLS handshake failed.
    TlsHandshake,
    /// Closed by the shutdown (idle at once, busy after its requests or the drain timeout).
    Shutdown,
}

impl Closed {
    /// Every reason, in declaration order (`why as usize` indexes it).
    pub(crate) const ALL: [Closed; 7] = [
        Closed::Client,
        Closed::HeaderTimeout,
        Closed::IdleTimeout,
        Closed::Evicted,
        Closed::Refused,
        Closed::TlsHandshake,
        Closed::Shutdown,
    ];
    fn label(self) -> &'static str {
        match self {
            Closed::Client => "client",
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
            Closed::TlsHandshake => "tls_handshake",
            Closed::Shutdown => "shutdown",
        }
    }
}

/// A point-in-time copy of the relay's request and span counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounts {
    /// Requests received, any outcome.
    pub requests: u64,
    /// Spans in well-formed requests.
    pub spans_received: u64,
    /// Spans the pipeline accepted.
    pub spans_accepted: u64,
    /// Spans refused because the budget was full (the client was told to retry).
    pub spans_refused_backpressure: u64,
    /// Spans refused because the relay was closing (the client was told to retry).
    pub spans_refused_closed: u64,
    /// Spans refused as invalid (reported in partial_success).
    pub spans_refused_invalid: u64,
}

fn pidx(p: ReceiverProtocol) -> usize {
    p as usize
}

impl RelayMetrics {
    /// Counts a finished request.
    pub fn request(&self, protocol: ReceiverProtocol, outcome: Outcome) {
        self.requests[pidx(protocol)][outcome.index()].fetch_add(1, Ordering::Relaxed);
    }
    /// Counts spans in a well-formed request.
    pub fn received(&self, protocol: ReceiverProtocol, spans: usize) {
        self.spans_received[pidx(protocol)].fetch_add(spans as u64, Ordering::Relaxed);
    }
    /// Counts spans the pipeline accepted.
    pub fn accepted(&self, protocol: ReceiverProtocol, spans: usize) {
        self.spans_accepted[pidx(protocol)].fetch_add(spans as u64, Ordering::Relaxed);
    }
    /// Counts spans refused for backpressure.
    pub fn refused_backpressure(&self, spans: usize) {
        self.spans_refused_backpressure
            .fetch_add(spans as u64, Ordering::Relaxed);
    }
    /// Counts spans refused because the relay is closing.
    pub fn refused_closed(&self, spans: usize) {
        self.spans_refused_closed
            .fetch_add(spans as u64, Ordering::Relaxed);
    }
    /// Counts spans refused as invalid.
    pub fn refused_invalid(&self, spans: usize) {
        self.spans_refused_invalid
            .fetch_add(spans as u64, Ordering::Relaxed);
    }
    /// Marks the relay ready (or not) for `/healthz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    /// Whether `/healthz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    /// A copy of the totals.
    pub fn counts(&self) -> RelayCounts {
        let sum = |a: &[AtomicU64; 2]| a.iter().map(|x| x.load(Ordering::Relaxed)).sum();
        RelayCounts {
            requests: self
                .requests
                .iter()
                .flatten()
                .map(|x| x.load(Ordering::Relaxed))
                .sum(),
            spans_received: sum(&self.spans_received),
            spans_accepted: sum(&self.spans_accepted),
            spans_refused_backpressure: self.spans_refused_backpressure.load(Ordering::Relaxed),
            spans_refused_closed: self.spans_refused_closed.load(Ordering::Relaxed),
            spans_refused_invalid: self.spans_refused_invalid.load(Ordering::Relaxed),
        }
    }
    /// The request bytes being read or decoded across every receiver, with their peak and
    /// bound (zeros before the receivers are set up).
    pub fn in_flight(&self) -> InFlightBytes {
        self.in_flight
            .get()
            .map(|admission| admission.in_flight())
            .unwrap_or_default()
    }
    /// Reports the gauges of `admission`, the receivers' allowance, from now on (the first
    /// one given: one relay, one allowance).
    pub(crate) fn report_in_flight(&self, admission: &Arc<Admission>) {
        // A second allowance for the same metrics is a test's; the first stays reported.
        let _ = self.in_flight.set(Arc::clone(admission));
    }
    /// Counts a connection opened on `listener`.
    pub fn connection_opened(&self, listener: Listener) {
        self.connections_open[listener as usize].fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a connection of `listener` ended, and why.
    pub fn connection_closed(&self, listener: Listener, why: Closed) {
        self.connections_open[listener as usize].fetch_sub(1, Ordering::Relaxed);
        self.count_closed(listener, why);
    }
    /// Counts a connection refused at the limit (never opened).
    pub fn connection_refused(&self, listener: Listener) {
        self.count_closed(listener, Closed::Refused);
    }
    fn count_closed(&self, listener: Listener, why: Closed) {
        self.connections_closed[listener as usize][why as usize].fetch_add(1, Ordering::Relaxed);
    }
    /// Connections open now on `listener`.
    pub fn connections_open(&self, listener: Listener) -> u64 {
        self.connections_open[listener as usize].load(Ordering::Relaxed)
    }
    /// Connections of `listener` ended for `why`.
    pub fn connections_closed(&self, listener: Listener, why: Closed) -> u64 {
        self.connections_closed[listener as usize][why as usize].load(Ordering::Relaxed)
    }
    /// The Kafka receiver's counters.
    pub fn kafka(&self) -> &KafkaMetrics {
        &self.kafka
    }
    /// Requests with `outcome` on `protocol`.
    pub fn requests_with(&self, protocol: ReceiverProtocol, outcome: Outcome) -> u64 {
        self.requests[pidx(protocol)][outcome.index()].load(Ordering::Relaxed)
    }
}
