//! Retry with exponential backoff, jitter, a cap and a maximum elapsed time (OTLP spec).

use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cancel::unless_cancelled;
use crate::config::duration_serde;
use crate::exporter::DynExporter;
use crate::{ExportBatch, ExportError, ExportOutcome};

/// How transient failures are retried.
///
/// The delay before retry `n` (0-based) is `min(initial_backoff * multiplier^n, max_backoff)`,
/// scaled by a random factor in `[1 - jitter, 1 + jitter]`. A delay the server asks for
/// (`RetryInfo`, `Retry-After` as seconds or an HTTP-date) is honoured as a lower bound: the
/// wait is the longer of the two, so a server cannot make the exporter wait less than its own
/// backoff (a `Retry-After: 0` repeated by an overloaded server still backs off exponentially
/// instead of retrying once per round trip). Retrying stops when the next
/// attempt would start after `max_elapsed` from the first one; the last error is then final.
/// `max_elapsed = 0` disables retry.
///
/// ```
/// use std::time::Duration;
/// use spanflow_export::RetryConfig;
/// let r = RetryConfig { jitter: 0.0, ..RetryConfig::default() };
/// assert_eq!(r.backoff(0), r.initial_backoff);
/// assert!(r.backoff(30) <= r.max_backoff);
/// assert_eq!(RetryConfig::disabled().max_elapsed, Duration::ZERO);
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Delay before the first retry.
    #[serde(with = "duration_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of the computed delay.
    #[serde(with = "duration_serde")]
    pub max_backoff: Duration,
    /// Growth factor between consecutive delays (≥ 1).
    pub multiplier: f64,
    /// Randomization factor in `[0, 1]`: each delay is scaled by `1 ± jitter`.
    pub jitter: f64,
    /// Give up when the next attempt would start later than this after the first.
    #[serde(with = "duration_serde")]
    pub max_elapsed: Duration,
}

impl Default for RetryConfig {
    /// The OpenTelemetry Collector's defaults: 5 s initial, 30 s cap, ×1.5, ±50 %, 5 min.
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            multiplier: 1.5,
            jitter: 0.5,
            max_elapsed: Duration::from_secs(300),
        }
    }
}

impl RetryConfig {
    /// No retry: the first failure is final.
    pub fn disabled() -> Self {
        Self {
            max_elapsed: Duration::ZERO,
            ..Self::default()
        }
    }

    /// The jittered delay before retry number `retry` (0-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let base = self.initial_backoff.as_secs_f64()
            * self.multiplier.max(1.0).powi(retry.min(1000) as i32);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter))
        } else {
            1.0
        };
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

/// Called once per attempt with its latency and result; lets the fan-out keep stats.
pub(crate) trait AttemptObserver: Sync {
    fn attempt(&self, latency: Duration, result: &Result<ExportOutcome, ExportError>);
    fn retry(&self, error: &ExportError, delay: Duration);
}

/// How [`export_with_retry`] ended.
#[derive(Debug)]
pub(crate) struct RetryEnd {
    /// The last attempt's result ([`ExportError::Cancelled`] when `cancel` cut the wait or the
    /// attempt in progress).
    pub(crate) result: Result<ExportOutcome, ExportError>,
    /// Some attempt may have reached the backend without a confirmed answer: one timed out or
    /// lost its connection mid-request, or `cancel` cut one off.
    pub(crate) in_doubt: bool,
}

/// Export `batch`, retrying transient failures as `retry` says, each attempt bounded by
/// `timeout`; `cancel` aborts the wait or the attempt in progress.
pub(crate) async fn export_with_retry(
    exporter: &dyn DynExporter,
    batch: &ExportBatch,
    retry: &RetryConfig,
    timeout: Duration,
    cancel: &CancellationToken,
    observer: &dyn AttemptObserver,
) -> RetryEnd {
    let first = Instant::now();
    let mut retries = 0u32;
    let mut in_doubt = false;
    loop {
        let started = Instant::now();
        let attempt = tokio::time::timeout(timeout, exporter.export_boxed(batch.clone()));
        let result = match unless_cancelled(cancel, attempt).await {
            None => {
                return RetryEnd {
                    result: Err(ExportError::Cancelled),
                    in_doubt: true,
                };
            }
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ExportError::Timeout(timeout)),
        };
        observer.attempt(started.elapsed(), &result);
        let error = match result {
            Ok(outcome) => {
                return RetryEnd {
                    result: Ok(outcome),
                    in_doubt,
                };
            }
            Err(e) => e,
        };
        in_doubt |= error.may_have_arrived();
        if !error.is_retryable() {
            return RetryEnd {
                result: Err(error),
                in_doubt,
            };
        }
        let backoff = retry.backoff(retries);
        let delay = error
            .retry_after()
            .map_or(backoff, |asked| asked.max(backoff));
        // Saturating: a server may ask for an absurd delay (`Retry-After: 18446744073709551615`).
        if first.elapsed().saturating_add(delay) > retry.max_elapsed {
            tracing::debug!(exporter = exporter.dyn_name(), %error, "retries exhausted");
            return RetryEnd {
                result: Err(error),
                in_doubt,
            };
        }
        observer.retry(&error, delay);
        tracing::debug!(exporter = exporter.dyn_name(), %error, ?delay, "retrying export");
        if unless_cancelled(cancel, tokio::time::sleep(delay))
            .await
            .is_none()
        {
            return RetryEnd {
                result: Err(ExportError::Cancelled),
                in_doubt,
            };
        }
        retries = retries.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let r = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
            max_elapsed: Duration::from_secs(10),
        };
        let d: Vec<_> = (0..6).map(|i| r.backoff(i).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
    }

    /// Always answers 503 with the given `Retry-After`.
    struct Throttled(Duration);
    impl crate::Exporter for Throttled {
        async fn export(&self, _: ExportBatch) -> Result<ExportOutcome, ExportError> {
            Err(ExportError::Http {
                status: 503,
                message: "later".into(),
                retry_after: Some(self.0),
            })
        }
        fn name(&self) -> &str {
            "throttled"
        }
    }

    struct NoObserver;
    impl AttemptObserver for NoObserver {
        fn attempt(&self, _: Duration, _: &Result<ExportOutcome, ExportError>) {}
        fn retry(&self, _: &ExportError, _: Duration) {}
    }

    /// Records the delays chosen before each retry.
    #[derive(Default)]
    struct Delays(parking_lot::Mutex<Vec<Duration>>);
    impl AttemptObserver for Delays {
        fn attempt(&self, _: Duration, _: &Result<ExportOutcome, ExportError>) {}
        fn retry(&self, _: &ExportError, delay: Duration) {
            self.0.lock().push(delay);
        }
    }

    #[tokio::test]
    async fn a_zero_server_delay_still_backs_off() {
        let retry = RetryConfig {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            multiplier: 2.0,
            jitter: 0.0,
            max_elapsed: Duration::from_millis(150),
        };
        let delays = Delays::default();
        let result = export_with_retry(
            &Throttled(Duration::ZERO),
            &ExportBatch::new(bytes::Bytes::new(), 1),
            &retry,
            Duration::from_secs(1),
            &CancellationToken::new(),
            &delays,
        )
        .await;
        assert!(result.result.is_err());
        let got: Vec<u128> = delays.0.lock().iter().map(|d| d.as_millis()).collect();
        // How many retries fit in 150 ms depends on the machine; the first three do.
        assert!(got.len() >= 3 && got.len() <= 6, "{:?}", got.len());
        assert_eq!(got[..3], [10, 20, 40]);
        assert!(got.iter().all(|d| (10..=40).contains(d)), "{got:?}");
    }

    #[tokio::test]
    async fn a_longer_server_delay_wins_over_the_backoff() {
        let delays = Delays::default();
        let retry = RetryConfig {
            initial_backoff: Duration::from_millis(10),
            jitter: 0.0,
            max_elapsed: Duration::from_millis(450),
            ..RetryConfig::default()
        };
        let _ = export_with_retry(
            &Throttled(Duration::from_millis(300)),
            &ExportBatch::new(bytes::Bytes::new(), 1),
            &retry,
            Duration::from_secs(1),
            &CancellationToken::new(),
            &delays,
        )
        .await;
        assert_eq!(
            delays.0.lock().as_slice(),
            [Duration::from_millis(300)].as_slice()
        );
    }

    #[tokio::test]
    async fn absurd_server_delay_gives_up_instead_of_overflowing() {
        let result = export_with_retry(
            &Throttled(Duration::MAX),
            &ExportBatch::new(bytes::Bytes::new(), 1),
            &RetryConfig::default(),
            Duration::from_secs(1),
            &CancellationToken::new(),
            &NoObserver,
        )
        .await;
        assert!(
            matches!(result.result, Err(ExportError::Http { status: 503, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let r = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            jitter: 0.5,
            ..RetryConfig::default()
        };
        for _ in 0..1000 {
            let d = r.backoff(0).as_secs_f64();
            assert!((0.05..=0.15).contains(&d), "{d}");
        }
    }
}
