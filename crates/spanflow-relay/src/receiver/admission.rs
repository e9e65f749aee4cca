//! Admission of request bytes in flight: the one allowance every receiver draws from while it
//! reads, decompresses or indexes a request body, reserved as the bytes arrive (never by what a
//! client declares) and released when the request is done.
//!
//! The allowance lives here, with the receivers that enforce it; the metrics only read its
//! gauges ([`Admission::in_flight`]) to report them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The in-flight allowance: bytes reserved now, the peak, and the limit.
///
/// Plain relaxed counters: the reservations need only `used`'s own value, and the gauges are
/// read only for reporting.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Bytes reserved now.
    used: AtomicU64,
    /// The most ever reserved at once.
    peak: AtomicU64,
    /// The most that may be reserved at once (one request alone may exceed it).
    limit: u64,
}

/// A copy of the in-flight request bytes gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlightBytes {
    /// Bytes of request bodies reserved now.
    pub used: u64,
    /// The most reserved at once since the relay started.
    pub peak: u64,
    /// The bound: a request that would take more is told to retry.
    pub limit: u64,
}

impl Admission {
    /// An allowance of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Reserves `bytes`, or `None` when the allowance is used up. A single request larger
    /// than the whole allowance is let through alone (its size is already bounded by the
    /// receiver's own limit).
    pub(crate) fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        self.take(bytes, 0).then(|| Reservation {
            admission: Arc::clone(self),
            bytes: AtomicU64::new(bytes),
        })
    }

    /// The gauges, for reporting.
    pub(crate) fn in_flight(&self) -> InFlightBytes {
        InFlightBytes {
            used: self.used.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            limit: self.limit,
        }
    }

    /// Adds `bytes` to the use, for a request already holding `mine` of it; refused when that
    /// would pass the limit, unless the request holds everything in use.
    fn take(&self, bytes: u64, mine: u64) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used > mine && used + bytes > self.limit {
                return false;
            }
            // Relaxed: the counter guards no other memory; only its value matters.
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.peak.fetch_max(used + bytes, Ordering::Relaxed);
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }
}

/// A reservation of request bytes in flight (bodies being read, decompressed or indexed),
/// released on drop. Every receiver draws from one [`Admission`], so a flood of large
/// concurrent requests cannot take memory beyond it: a request that does not fit is answered
/// with "retry later" instead of being read.
#[derive(Debug)]
pub(crate) struct Reservation {
    admission: Arc<Admission>,
    /// Bytes held; only the request that owns the reservation grows it.
    bytes: AtomicU64,
}

impl Reservation {
    /// Grows the reservation to at least `total` bytes; false (and unchanged) when the
    /// allowance cannot cover it. A request holding all that is reserved may grow alone past
    /// the limit (its size is already bounded by the receiver's own limit).
    pub(crate) fn grow_to(&self, total: u64) -> bool {
        // Relaxed: `bytes` is only written by the one task that owns this request.
        let mine = self.bytes.load(Ordering::Relaxed);
        if total <= mine {
            return true;
        }
        if !self.admission.take(total - mine, mine) {
            return false;
        }
        self.bytes.store(total, Ordering::Relaxed);
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Relaxed: a counter whose only readers are other reservations' CAS loops and reports.
        let bytes = self.bytes.load(Ordering::Relaxed);
        self.admission.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit() {
        let admission = Arc::new(Admission::new(100));
        let a = admission.reserve(60).expect("fits");
        assert!(admission.reserve(60).is_none());
        let b = admission.reserve(40).expect("fits exactly");
        drop(a);
        let c = admission.reserve(60).expect("room again");
        drop((b, c));
        // One oversized request alone is let through; a second is not.
        let big = admission.reserve(500).expect("alone");
        assert!(admission.reserve(1).is_none());
        drop(big);
        assert!(admission.reserve(100).is_some());
        assert_eq!(admission.in_flight().peak, 500);
        assert_eq!(admission.in_flight().used, 0);
        assert_eq!(admission.in_flight().limit, 100);
    }

    #[test]
    fn a_reservation_grows_within_the_limit_or_alone() {
        let admission = Arc::new(Admission::new(100));
        let a = admission.reserve(0).expect("empty");
        assert!(a.grow_to(70));
        assert!(a.grow_to(50), "shrinking is a no-op");
        assert_eq!(admission.in_flight().used, 70);
        let b = admission.reserve(20).expect("fits");
        assert!(!a.grow_to(90), "90 + 20 > 100");
        assert_eq!(admission.in_flight().used, 90);
        assert!(a.grow_to(80));
        drop(b);
        // Alone, a request may grow past the limit.
        assert!(a.grow_to(150));
        assert_eq!(admission.in_flight().used, 150);
        assert!(admission.reserve(1).is_none());
        drop(a);
        assert_eq!(admission.in_flight().used, 0);
        assert_eq!(admission.in_flight().peak, 150);
    }
}
