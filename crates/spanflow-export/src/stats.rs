//! Per-backend statistics and health of the fan-out.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The state of one backend, published on a `tokio::sync::watch` channel by
/// [`crate::FanOut::health`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Started; no export attempt has finished yet.
    Idle,
    /// The last attempt succeeded.
    Running,
    /// The last attempt failed (the backend is being retried) or its queue overflowed.
    Degraded,
    /// Shut down.
    Stopped,
}

/// The health of one backend, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    /// Backend name.
    pub name: String,
    /// Its current state.
    pub health: Health,
}

/// Whether a backend receives every batch or only the failures of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives every batch passed to [`crate::FanOut::send`].
    Primary,
    /// Receives the batches that finally failed on (or overflowed) the named primary.
    Fallback {
        /// Name of the primary backend.
        of: String,
    },
}

/// Number of latency buckets: bucket 0 holds `< 64 µs`, bucket `i` holds
/// `[64·2^(i-1) µs, 64·2^i µs)`, the last one everything above (~4.5 min).
pub const LATENCY_BUCKETS: usize = 23;

/// Lock-free log2 latency histogram (relaxed counters: statistics order nothing).
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = ((64 - (us >> 6).leading_zeros()) as usize).min(LATENCY_BUCKETS - 1);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(us, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

/// A snapshot of a backend's per-attempt latency distribution.
///
/// ```
/// let h = spanflow_export::LatencyHistogram::default();
/// assert_eq!(h.count(), 0);
/// assert_eq!(h.quantile(0.99), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Count per bucket (see [`LATENCY_BUCKETS`]).
    pub counts: Vec<u64>,
    /// Sum of all recorded latencies, in microseconds.
    pub sum_micros: u64,
}

impl LatencyHistogram {
    /// Exclusive upper bound of bucket `i`.
    pub fn bucket_upper_bound(i: usize) -> Duration {
        Duration::from_micros(64u64 << i.min(40))
    }
    /// Number of recorded attempts.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// Mean latency, if anything was recorded.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_micros(self.sum_micros / n))
    }
    /// Upper bound of the bucket holding quantile `q` (0..=1), if anything was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::bucket_upper_bound(i));
            }
        }
        Some(Self::bucket_upper_bound(LATENCY_BUCKETS - 1))
    }
}

/// Counters of one backend. Every batch offered to a backend ends in exactly one of
/// `exported`, `failed`, `unconfirmed` or `dropped` (or is still `queued` / `in_flight`):
/// `received = exported + failed + unconfirmed + dropped + queued + in_flight`. A batch this
/// backend failed on or dropped may still be delivered by its fallback
/// (`to_fallback_batches`); the fan-out's [`crate::Settled`] says what finally became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStats {
    /// Backend name.
    pub name: String,
    /// Primary or fallback.
    pub role: Role,
    /// Batches offered to this backend.
    pub received_batches: u64,
    /// Spans offered to this backend.
    pub received_spans: u64,
    /// Batches the backend answered with success (possibly partial).
    pub exported_batches: u64,
    /// Spans the backend accepted.
    pub accepted_spans: u64,
    /// Spans the backend rejected through `partial_success` (not retried).
    pub rejected_spans: u64,
    /// Retries scheduled (attempts after the first).
    pub retries: u64,
    /// Batches that finally failed (permanent error, or retries exhausted).
    pub failed_batches: u64,
    /// Spans in `failed_batches`.
    pub failed_spans: u64,
    /// Batches given up on after an attempt that may have reached the backend (a timeout, a
    /// connection lost mid-request, or cut off by shutdown's deadline): delivery unknown.
    pub unconfirmed_batches: u64,
    /// Spans in `unconfirmed_batches`.
    pub unconfirmed_spans: u64,
    /// Of `failed_batches`, those failed by a permanent (non-retryable) error.
    pub permanent_errors: u64,
    /// Batches dropped: queue overflow under a drop policy, or never sent before shutdown's
    /// deadline.
    pub dropped_batches: u64,
    /// Spans in `dropped_batches`.
    pub dropped_spans: u64,
    /// Of `failed_batches + dropped_batches`, those handed to the fallback backend.
    pub to_fallback_batches: u64,
    /// Batches waiting in the queue now.
    pub queued: u64,
    /// Batches being exported (or waiting to retry) now.
    pub in_flight: u64,
    /// Latency of each export attempt.
    pub latency: LatencyHistogram,
}

/// The stats of every backend, in the order they were added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FanOutStats {
    /// One entry per backend.
    pub backends: Vec<BackendStats>,
}

impl FanOutStats {
    /// The stats of the backend called `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// Live counters behind [`BackendStats`]; all relaxed: they are statistics, read after the
/// fan-out's own synchronization (flush/shutdown) when exactness matters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received_batches: AtomicU64,
    pub(crate) received_spans: AtomicU64,
    pub(crate) exported_batches: AtomicU64,
    pub(crate) accepted_spans: AtomicU64,
    pub(crate) rejected_spans: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    pub(crate) failed_spans: AtomicU64,
    pub(crate) unconfirmed_batches: AtomicU64,
    pub(crate) unconfirmed_spans: AtomicU64,
    pub(crate) permanent_errors: AtomicU64,
    pub(crate) dropped_batches: AtomicU64,
    pub(crate) dropped_spans: AtomicU64,
    pub(crate) to_fallback_batches: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) latency: Histogram,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    pub(crate) fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Relaxed);
    }

    pub(crate) fn snapshot(&self, name: &str, role: &Role) -> BackendStats {
        BackendStats {
            name: name.to_string(),
            role: role.clone(),
            received_batches: self.received_batches.load(Relaxed),
            received_spans: self.received_spans.load(Relaxed),
            exported_batches: self.exported_batches.load(Relaxed),
            accepted_spans: self.accepted_spans.load(Relaxed),
            rejected_spans: self.rejected_spans.load(Relaxed),
            retries: self.retries.load(Relaxed),
            failed_batches: self.failed_batches.load(Relaxed),
            failed_spans: self.failed_spans.load(Relaxed),
            unconfirmed_batches: self.unconfirmed_batches.load(Relaxed),
            unconfirmed_spans: self.unconfirmed_spans.load(Relaxed),
            permanent_errors: self.permanent_errors.load(Relaxed),
            dropped_batches: self.dropped_batches.load(Relaxed),
            dropped_spans: self.dropped_spans.load(Relaxed),
            to_fallback_batches: self.to_fallback_batches.load(Relaxed),
            queued: self.queued.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        h.record(Duration::from_micros(10));
        h.record(Duration::from_micros(100));
        h.record(Duration::from_millis(5));
        h.record(Duration::from_secs(100_000));
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[LATENCY_BUCKETS - 1], 1);
        assert_eq!(s.quantile(0.25), Some(Duration::from_micros(64)));
        assert_eq!(s.quantile(0.5), Some(Duration::from_micros(128)));
        assert!(s.quantile(0.75).unwrap() >= Duration::from_millis(5));
    }
}
