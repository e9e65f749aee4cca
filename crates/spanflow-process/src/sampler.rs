//! Consistent probabilistic sampling by trace id.

use serde::{Deserialize, Serialize};
use spanflow_otlp::{SpanHead, SpanView, TraceRequest};

use crate::error::{ProcessError, ProcessorConfigError};
use crate::processor::{Context, Processor, SpanPredicate};

/// Configuration of a [`ProbabilisticSampler`].
///
/// ```toml
/// [[processors]]
/// type = "probabilistic_sampler"
/// ratio = 0.25
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// Name in logs and panic counts; defaults to `probabilistic_sampler`.
    #[serde(default)]
    pub name: Option<String>,
    /// Fraction of traces kept, in `[0, 1]`.
    pub ratio: f64,
}

/// Keeps a fraction of traces, decided by trace id alone, exactly as
/// OpenTelemetry's `TraceIdRatioBased` sampler decides.
///
/// The rule (opentelemetry_sdk 0.33, `sample_based_on_probability`): read the
/// trace id's bytes 8..16 as a big-endian `u64`, shift it right by one, and keep
/// the trace when that is below `ratio * 2^63` (truncated to an integer);
/// a ratio of 1 or more keeps everything. Because the decision depends on the
/// trace id only, every span of a trace gets the same decision in every batch,
/// every process and every SDK that follows the rule: a trace is never half
/// kept.
///
/// ```
/// use spanflow_process::ProbabilisticSampler;
///
/// let sampler = ProbabilisticSampler::new(0.5)?;
/// let low = [0u8; 16];
/// let mut high = [0u8; 16];
/// high[8] = 0xff;
/// assert!(sampler.keeps_trace(&low));
/// assert!(!sampler.keeps_trace(&high));
/// # Ok::<(), spanflow_process::ProcessorConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProbabilisticSampler {
    name: String,
    ratio: f64,
    rule: TraceIdRatio,
}

/// The precomputed `TraceIdRatioBased` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TraceIdRatio {
    All,
    Below(u64),
}

impl TraceIdRatio {
    fn new(ratio: f64) -> Self {
        if ratio >= 1.0 {
            TraceIdRatio::All
        } else {
            // Same arithmetic as the SDK, including the saturating float->int
            // cast and `max` mapping NaN and negatives to 0.
            TraceIdRatio::Below((ratio.max(0.0) * (1u64 << 63) as f64) as u64)
        }
    }

    #[inline]
    fn keeps(self, trace_id: &[u8; 16]) -> bool {
        match self {
            TraceIdRatio::All => true,
            TraceIdRatio::Below(bound) => {
                let mut low = [0u8; 8];
                low.copy_from_slice(&trace_id[8..16]);
                (u64::from_be_bytes(low) >> 1) < bound
            }
        }
    }
}

impl ProbabilisticSampler {
    /// A sampler keeping `ratio` of traces.
    ///
    /// # Errors
    ///
    /// [`ProcessorConfigError::Invalid`] if `ratio` is not a number in `[0, 1]`.
    pub fn new(ratio: f64) -> Result<Self, ProcessorConfigError> {
        Self::from_config(&SamplerConfig { name: None, ratio })
    }

    /// Builds the sampler from its configuration.
    ///
    /// # Errors
    ///
    /// [`ProcessorConfigError::Invalid`] if `ratio` is not a number in `[0, 1]`.
    pub fn from_config(config: &SamplerConfig) -> Result<Self, ProcessorConfigError> {
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| "probabilistic_sampler".to_owned());
        if !(0.0..=1.0).contains(&config.ratio) {
            return Err(ProcessorConfigError::invalid(
                &name,
                format!("ratio must be in [0, 1], got {}", config.ratio),
            ));
        }
        Ok(ProbabilisticSampler {
            name,
            ratio: config.ratio,
            rule: TraceIdRatio::new(config.ratio),
        })
    }

    /// The configured ratio.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The decision for a trace id: `true` keeps the trace.
    #[inline]
    pub fn keeps_trace(&self, trace_id: &[u8; 16]) -> bool {
        self.rule.keeps(trace_id)
    }
}

impl SpanPredicate for ProbabilisticSampler {
    #[inline]
    fn keep(&self, _span: &SpanView<'_>, head: &SpanHead<'_>) -> bool {
        self.rule.keeps(&head.trace_id)
    }

    fn reads_attributes(&self) -> bool {
        false
    }
}

impl Processor for ProbabilisticSampler {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, batch: TraceRequest, cx: &Context<'_>) -> Result<TraceRequest, ProcessError> {
        if self.rule == TraceIdRatio::All {
            return Ok(batch);
        }
        let keep = cx.keep_mask(&batch, |span| self.rule.keeps(&span.trace_id()));
        if keep.iter().all(|k| *k) {
            return Ok(batch);
        }
        Ok(batch.select(&keep))
    }

    fn as_predicate(&self) -> Option<&dyn SpanPredicate> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(low: u64) -> [u8; 16] {
        let mut id = [0xabu8; 16];
        id[8..].copy_from_slice(&low.to_be_bytes());
        id
    }

    #[test]
    fn boundary_follows_the_sdk_rule() {
        let s = ProbabilisticSampler::new(0.5).expect("valid ratio");
        // bound = 2^62; kept iff (low >> 1) < 2^62 iff low < 2^63.
        assert!(s.keeps_trace(&id((1 << 63) - 1)));
        assert!(!s.keeps_trace(&id(1 << 63)));
        // The high 8 bytes play no part.
        let mut other = id(5);
        other[..8].copy_from_slice(&[0; 8]);
        assert_eq!(s.keeps_trace(&other), s.keeps_trace(&id(5)));
    }

    #[test]
    fn extremes_keep_all_or_nothing() {
        let all = ProbabilisticSampler::new(1.0).expect("valid");
        let none = ProbabilisticSampler::new(0.0).expect("valid");
        for low in [0, 1, u64::MAX / 2, u64::MAX] {
            assert!(all.keeps_trace(&id(low)));
            assert!(!none.keeps_trace(&id(low)));
        }
    }

    #[test]
    fn out_of_range_ratios_are_rejected() {
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(ProbabilisticSampler::new(bad).is_err(), "{bad}");
        }
    }
}
