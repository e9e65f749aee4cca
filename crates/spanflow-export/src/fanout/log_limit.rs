//! Rate limits for the fan-out's WARN lines, so an outage or a flapping backend tells the
//! operator at once and then at most once per interval, with a count of what it held back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often one kind of WARN may repeat for one backend.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets one message through per interval and counts the ones it held back.
///
/// The first message always passes, so the first failure of a backend is logged at once.
#[derive(Debug)]
pub(crate) struct LogEvery {
    origin: Instant,
    every_ms: u64,
    /// Milliseconds since `origin` before which no further message passes.
    next_ms: AtomicU64,
    /// Messages held back since the last one that passed.
    held: AtomicU64,
}

impl LogEvery {
    pub(crate) fn new(every: Duration) -> Self {
        LogEvery {
            origin: Instant::now(),
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last message)` when this message may be logged now; `None`
    /// (and counted) when it must stay quiet.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Relaxed: the counters only shape log output; no other memory is published through
        // them, and the compare-exchange alone decides which caller logs.
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The WARN limits of one backend.
#[derive(Debug)]
pub(crate) struct BackendLogs {
    /// "backend failed" at the start of an outage (one per flap at most every interval).
    pub(crate) outage: LogEvery,
    /// Whether the current outage's WARN was logged, so its recovery is logged too.
    pub(crate) outage_logged: AtomicBool,
    /// "export failed" for a batch given up on.
    pub(crate) gave_up: LogEvery,
    /// "backend rejected spans" (partial success).
    pub(crate) rejected: LogEvery,
}

impl BackendLogs {
    pub(crate) fn new() -> Self {
        BackendLogs {
            outage: LogEvery::new(WARN_EVERY),
            outage_logged: AtomicBool::new(false),
            gave_up: LogEvery::new(WARN_EVERY),
            rejected: LogEvery::new(WARN_EVERY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_passes_then_one_per_interval_with_the_count_held_back() {
        let limit = LogEvery::new(Duration::from_millis(200));
        assert_eq!(limit.admit(), Some(0), "the first message passes at once");
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.admit(), None);
        // Bounded: the interval is 200 ms; give it up to 10 s on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut held_at_pass = None;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            if let Some(held) = limit.admit() {
                held_at_pass = Some(held);
                break;
            }
        }
        let held = held_at_pass.expect("a message passes once the interval is over");
        assert!(
            held >= 2,
            "the two held back before the wait are counted, got {held}"
        );
        assert_eq!(limit.admit(), None, "and the next interval starts again");
    }

    #[test]
    fn racing_callers_let_exactly_one_through() {
        let limit = std::sync::Arc::new(LogEvery::new(Duration::from_secs(3600)));
        // (messages that passed, held-back counts they reported)
        let (passed, reported) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let limit = &limit;
                    s.spawn(move || {
                        let admitted: Vec<u64> = (0..100).filter_map(|_| limit.admit()).collect();
                        (admitted.len(), admitted.iter().sum::<u64>())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no caller panics"))
                .fold((0, 0), |(n, r), (n2, r2)| (n + n2, r + r2))
        });
        assert_eq!(passed, 1);
        // Every message held back is counted once: reported by the one that passed, or still held.
        assert_eq!(reported + limit.held.load(Ordering::Relaxed), 399);
    }
}
