//! Time sources: the system's monotonic clock, and a manual clock that tests drive.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic time source measured from an arbitrary fixed origin.
///
/// The batcher reads it only when a shard goes from empty to non-empty (to stamp the age of a
/// batch's first item) and on the consumer side, never once per item.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Time elapsed since the clock's origin; never decreases.
    fn now(&self) -> Duration;
}

/// Nanoseconds since the clock's origin, saturating at `u64::MAX` (about 584 years).
pub(crate) fn now_nanos(clock: &dyn Clock) -> u64 {
    duration_nanos(clock.now())
}

pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The system's monotonic clock ([`Instant`]); the default.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// Drive the consumer with [`Receiver::try_recv`](crate::Receiver::try_recv) when using it: a
/// blocking `recv` sleeps in real time and is not woken by [`advance`](Self::advance).
///
/// ```
/// use spanflow_batch::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(clock.now(), Duration::from_millis(5));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        // Relaxed: the value is the only data; readers need no other memory ordered with it.
        self.nanos.fetch_add(duration_nanos(by), Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}
