//! Serde configuration of a processor chain, as the relay reads it from its
//! file.
//!
//! ```toml
//! [[processors]]
//! type = "filter"
//! action = "drop"
//! match_type = "glob"
//! span_names = ["GET /health*"]
//!
//! [[processors]]
//! type = "attributes"
//! actions = [
//!   { key = "deployment.environment", action = "upsert", value = "prod", scope = "resource" },
//!   { key = "user.email", action = "hash" },
//! ]
//!
//! [[processors]]
//! type = "probabilistic_sampler"
//! ratio = 0.1
//! ```

use serde::{Deserialize, Serialize};

use crate::attributes::{AttributesConfig, AttributesProcessor};
use crate::error::ProcessorConfigError;
use crate::filter::{Filter, FilterConfig};
use crate::processor::Processor;
use crate::redact::{Redact, RedactConfig};
use crate::sampler::{ProbabilisticSampler, SamplerConfig};
use crate::span_stats::{SpanStats, SpanStatsConfig};

/// One processor of a chain, tagged by `type`.
///
/// Every variant denies unknown fields, so a typo in a configuration file is
/// an error rather than a silently ignored setting.
///
/// ```
/// use spanflow_process::ProcessorConfig;
///
/// #[derive(serde::Deserialize)]
/// struct File { processors: Vec<ProcessorConfig> }
///
/// let file: File = toml::from_str(r#"
///     [[processors]]
///     type = "probabilistic_sampler"
///     ratio = 0.5
/// "#)?;
/// assert_eq!(file.processors[0].kind(), "probabilistic_sampler");
/// assert!(toml::from_str::<File>("[[processors]]\ntype = \"sampler\"\nratio = 0.5").is_err());
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessorConfig {
    /// A [`Filter`].
    Filter(FilterConfig),
    /// An [`AttributesProcessor`].
    Attributes(AttributesConfig),
    /// A [`Redact`] processor.
    Redact(RedactConfig),
    /// A [`ProbabilisticSampler`].
    ProbabilisticSampler(SamplerConfig),
    /// A [`SpanStats`] processor.
    SpanStats(SpanStatsConfig),
}

impl ProcessorConfig {
    /// The `type` tag: `filter`, `attributes`, `redact`,
    /// `probabilistic_sampler` or `span_stats`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorConfig::Filter(_) => "filter",
            ProcessorConfig::Attributes(_) => "attributes",
            ProcessorConfig::Redact(_) => "redact",
            ProcessorConfig::ProbabilisticSampler(_) => "probabilistic_sampler",
            ProcessorConfig::SpanStats(_) => "span_stats",
        }
    }

    /// The configured name, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            ProcessorConfig::Filter(c) => c.name.as_deref(),
            ProcessorConfig::Attributes(c) => c.name.as_deref(),
            ProcessorConfig::Redact(c) => c.name.as_deref(),
            ProcessorConfig::ProbabilisticSampler(c) => c.name.as_deref(),
            ProcessorConfig::SpanStats(c) => c.name.as_deref(),
        }
    }

    /// Sets the name.
    pub fn set_name(&mut self, name: String) {
        let slot = match self {
            ProcessorConfig::Filter(c) => &mut c.name,
            ProcessorConfig::Attributes(c) => &mut c.name,
            ProcessorConfig::Redact(c) => &mut c.name,
            ProcessorConfig::ProbabilisticSampler(c) => &mut c.name,
            ProcessorConfig::SpanStats(c) => &mut c.name,
        };
        *slot = Some(name);
    }

    /// Builds the processor this configuration describes.
    ///
    /// # Errors
    ///
    /// The processor's [`ProcessorConfigError`].
    pub fn build_processor(&self) -> Result<Box<dyn Processor>, ProcessorConfigError> {
        Ok(match self {
            ProcessorConfig::Filter(c) => Box::new(Filter::from_config(c)?),
            ProcessorConfig::Attributes(c) => Box::new(AttributesProcessor::from_config(c)?),
            ProcessorConfig::Redact(c) => Box::new(Redact::from_config(c)?),
            ProcessorConfig::ProbabilisticSampler(c) => {
                Box::new(ProbabilisticSampler::from_config(c)?)
            }
            ProcessorConfig::SpanStats(c) => Box::new(SpanStats::from_config(c)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        processors: Vec<ProcessorConfig>,
    }

    #[test]
    fn a_full_toml_file_parses() {
        let file: File = toml::from_str(
            r#"
            [[processors]]
            type = "filter"
            name = "no-health"
            action = "drop"
            match_type = "glob"
            span_names = ["GET /health*"]
            kinds = ["server", "internal"]
            statuses = ["ok"]
            min_duration_ms = 0.5
            attributes = [{ key = "http.status_code", value = 200 }]
            resource_attributes = [{ key = "service.name", value = "cart*", match_type = "glob" }]

            [[processors]]
            type = "attributes"
            actions = [
              { key = "env", action = "insert", value = "prod", scope = "resource" },
              { key = "user.email", action = "hash" },
              { key = "copy", action = "upsert", from_attribute = "orig" },
              { pattern = "^secret\\.", action = "delete" },
            ]

            [[processors]]
            type = "redact"
            allowed_keys = ["http.method", "note"]
            blocked_values = ["\\b\\d{4}[- ]?\\d{4}[- ]?\\d{4}[- ]?\\d{4}\\b"]

            [[processors]]
            type = "probabilistic_sampler"
            ratio = 0.25

            [[processors]]
            type = "span_stats"
            "#,
        )
        .expect("valid config");
        let kinds: Vec<_> = file.processors.iter().map(|p| p.kind()).collect();
        assert_eq!(
            kinds,
            [
                "filter",
                "attributes",
                "redact",
                "probabilistic_sampler",
                "span_stats"
            ]
        );
        for p in &file.processors {
            p.build_processor().expect("builds");
        }
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Chain {
        processors: Vec<ProcessorConfig>,
    }

    #[test]
    fn every_processor_config_round_trips_and_keeps_its_type_tag() {
        let chain: Chain = toml::from_str(
            r#"
            [[processors]]
            type = "filter"
            match_type = "regex"
            span_names = ["^GET"]
            statuses = ["error"]
            max_duration_ms = 12.5
            attributes = [{ key = "n", value = 3 }, { key = "s", value = "x", match_type = "glob" }]

            [[processors]]
            type = "attributes"
            name = "edit"
            actions = [
              { key = "env", action = "insert", value = "prod", scope = "resource" },
              { key = "b", action = "upsert", value = false },
              { key = "copy", action = "upsert", from_attribute = "orig" },
            ]

            [[processors]]
            type = "redact"
            ignored_keys = ["note"]
            mask = "***"
            summary = true

            [[processors]]
            type = "probabilistic_sampler"
            ratio = 0.125

            [[processors]]
            type = "span_stats"
            max_keys = 7
            "#,
        )
        .expect("valid config");
        let printed = toml::to_string(&chain).expect("serializes");
        // The attributes processor's type is still spelled `attributes` (the Rust type is
        // `AttributesProcessor`, the configuration's word is the Collector's).
        assert!(printed.contains("type = \"attributes\""), "{printed}");
        assert_eq!(
            toml::from_str::<Chain>(&printed).expect("reads back"),
            chain
        );
        let json = serde_json::to_string(&chain).expect("serializes");
        assert_eq!(
            serde_json::from_str::<Chain>(&json).expect("reads back"),
            chain
        );
    }

    #[test]
    fn unknown_fields_and_types_are_errors() {
        for bad in [
            "[[processors]]\ntype = \"filter\"\nspan_name = [\"x\"]",
            "[[processors]]\ntype = \"nope\"",
            "[[processors]]\ntype = \"probabilistic_sampler\"\nratio = 0.5\nseed = 1",
            "[[processors]]\ntype = \"attributes\"\nactions = [{ key = \"k\", action = \"frobnicate\" }]",
            "[[processors]]\ntype = \"filter\"\nkinds = [\"serverr\"]",
        ] {
            assert!(toml::from_str::<File>(bad).is_err(), "accepted: {bad}");
        }
    }
}
