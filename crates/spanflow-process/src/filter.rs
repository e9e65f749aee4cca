//! Keep or drop spans by name, kind, status, duration and attributes.

use serde::{Deserialize, Serialize};
use spanflow_otlp::{SpanHead, SpanView, TraceRequest};

use crate::error::{ProcessError, ProcessorConfigError};
use crate::matching::{AttributeMatch, AttributeMatcher, MatchType, StringSet};
use crate::processor::{Context, Processor, SpanPredicate};

/// What a [`Filter`] does with the spans its conditions match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Drop matching spans, keep the rest.
    #[default]
    Drop,
    /// Keep only matching spans.
    Keep,
}

/// A span kind as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// `SPAN_KIND_UNSPECIFIED` (0).
    Unspecified,
    /// `SPAN_KIND_INTERNAL` (1).
    Internal,
    /// `SPAN_KIND_SERVER` (2).
    Server,
    /// `SPAN_KIND_CLIENT` (3).
    Client,
    /// `SPAN_KIND_PRODUCER` (4).
    Producer,
    /// `SPAN_KIND_CONSUMER` (5).
    Consumer,
}

impl SpanKind {
    /// The OTLP enum value.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// A span status code as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusCode {
    /// `STATUS_CODE_UNSET` (0).
    Unset,
    /// `STATUS_CODE_OK` (1).
    Ok,
    /// `STATUS_CODE_ERROR` (2).
    Error,
}

impl StatusCode {
    /// The OTLP enum value.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// Configuration of a [`Filter`].
///
/// A span *matches* when every condition that is set holds: its name matches
/// one of `span_names`, its kind is one of `kinds`, its status one of
/// `statuses`, its duration is within `[min_duration_ms, max_duration_ms]`,
/// and every entry of `attributes` / `resource_attributes` matches. At least
/// one condition must be set.
///
/// ```toml
/// [[processors]]
/// type = "filter"
/// action = "drop"
/// match_type = "glob"
/// span_names = ["GET /health*", "GET /metrics"]
/// kinds = ["server"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Name in logs and panic counts; defaults to `filter`.
    #[serde(default)]
    pub name: Option<String>,
    /// Drop the matching spans (default) or keep only them.
    #[serde(default)]
    pub action: FilterAction,
    /// How `span_names` are interpreted.
    #[serde(default)]
    pub match_type: MatchType,
    /// Span name patterns; a span matches if any pattern does.
    #[serde(default)]
    pub span_names: Vec<String>,
    /// Span kinds; a span matches if its kind is listed.
    #[serde(default)]
    pub kinds: Vec<SpanKind>,
    /// Status codes; a span matches if its status is listed.
    #[serde(default)]
    pub statuses: Vec<StatusCode>,
    /// Minimum duration in milliseconds (inclusive).
    #[serde(default)]
    pub min_duration_ms: Option<f64>,
    /// Maximum duration in milliseconds (inclusive).
    #[serde(default)]
    pub max_duration_ms: Option<f64>,
    /// Span attribute conditions, all of which must hold.
    #[serde(default)]
    pub attributes: Vec<AttributeMatch>,
    /// Resource attribute conditions, all of which must hold.
    #[serde(default)]
    pub resource_attributes: Vec<AttributeMatch>,
}

impl FilterConfig {
    /// A configuration that drops spans matching the conditions set later.
    pub fn drop() -> Self {
        FilterConfig::default()
    }

    /// A configuration that keeps only spans matching the conditions set later.
    pub fn keep() -> Self {
        FilterConfig {
            action: FilterAction::Keep,
            ..FilterConfig::default()
        }
    }

    /// Sets the span name patterns and how they are interpreted.
    pub fn span_names<I, S>(mut self, match_type: MatchType, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.match_type = match_type;
        self.span_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the span kinds.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = SpanKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Sets the status codes.
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Sets the minimum duration in milliseconds.
    pub fn min_duration_ms(mut self, ms: f64) -> Self {
        self.min_duration_ms = Some(ms);
        self
    }

    /// Sets the maximum duration in milliseconds.
    pub fn max_duration_ms(mut self, ms: f64) -> Self {
        self.max_duration_ms = Some(ms);
        self
    }

    /// Adds a span attribute condition.
    pub fn attribute(mut self, m: AttributeMatch) -> Self {
        self.attributes.push(m);
        self
    }

    /// Adds a resource attribute condition.
    pub fn resource_attribute(mut self, m: AttributeMatch) -> Self {
        self.resource_attributes.push(m);
        self
    }

    /// Sets the processor name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Keeps or drops spans by name (exact, glob or regex), kind, status,
/// duration, span attributes and resource attributes.
///
/// ```
/// use spanflow_process::{Filter, FilterConfig, MatchType};
///
/// let filter = Filter::from_config(
///     &FilterConfig::drop().span_names(MatchType::Glob, ["GET /health*"]),
/// )?;
/// assert_eq!(spanflow_process::Processor::name(&filter), "filter");
/// # Ok::<(), spanflow_process::ProcessorConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Filter {
    name: String,
    action: FilterAction,
    names: Option<StringSet>,
    /// Bit `k` set when kind `k` matches.
    kinds: Option<u64>,
    /// Bit `s` set when status `s` matches.
    statuses: Option<u64>,
    min_ns: Option<u64>,
    max_ns: Option<u64>,
    attributes: Vec<AttributeMatcher>,
    resource_attributes: Vec<AttributeMatcher>,
}

fn ms_to_ns(processor: &str, what: &str, ms: f64) -> Result<u64, ProcessorConfigError> {
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(ProcessorConfigError::invalid(
            processor,
            format!("{what} must be a non-negative number of milliseconds, got {ms}"),
        ));
    }
    Ok((ms * 1e6) as u64)
}

impl Filter {
    /// Builds the filter from its configuration.
    ///
    /// # Errors
    ///
    /// [`ProcessorConfigError`] if a pattern does not compile, a duration is negative
    /// or not a number, `min > max`, or no condition is set.
    pub fn from_config(config: &FilterConfig) -> Result<Self, ProcessorConfigError> {
        let name = config.name.clone().unwrap_or_else(|| "filter".to_owned());
        let names = if config.span_names.is_empty() {
            None
        } else {
            Some(StringSet::new(
                &name,
                config.match_type,
                &config.span_names,
            )?)
        };
        let bits = |values: &mut dyn Iterator<Item = i32>| {
            values.fold(0u64, |acc, v| acc | (1u64 << (v as u32 & 63)))
        };
        let kinds =
            (!config.kinds.is_empty()).then(|| bits(&mut config.kinds.iter().map(|k| k.as_i32())));
        let statuses = (!config.statuses.is_empty())
            .then(|| bits(&mut config.statuses.iter().map(|s| s.as_i32())));
        let min_ns = config
            .min_duration_ms
            .map(|ms| ms_to_ns(&name, "min_duration_ms", ms))
            .transpose()?;
        let max_ns = config
            .max_duration_ms
            .map(|ms| ms_to_ns(&name, "max_duration_ms", ms))
            .transpose()?;
        if let (Some(min), Some(max)) = (min_ns, max_ns)
            && min > max
        {
            return Err(ProcessorConfigError::invalid(
                &name,
                "min_duration_ms is greater than max_duration_ms",
            ));
        }
        let attributes = config
            .attributes
            .iter()
            .map(|m| AttributeMatcher::new(&name, m))
            .collect::<Result<Vec<_>, _>>()?;
        let resource_attributes = config
            .resource_attributes
            .iter()
            .map(|m| AttributeMatcher::new(&name, m))
            .collect::<Result<Vec<_>, _>>()?;
        let filter = Filter {
            name,
            action: config.action,
            names,
            kinds,
            statuses,
            min_ns,
            max_ns,
            attributes,
            resource_attributes,
        };
        if filter.names.is_none()
            && filter.kinds.is_none()
            && filter.statuses.is_none()
            && filter.min_ns.is_none()
            && filter.max_ns.is_none()
            && filter.attributes.is_empty()
            && filter.resource_attributes.is_empty()
        {
            return Err(ProcessorConfigError::invalid(
                &filter.name,
                "a filter needs at least one condition",
            ));
        }
        Ok(filter)
    }

    /// Whether `span` meets every condition (before applying the action).
    pub fn matches(&self, span: &SpanView<'_>) -> bool {
        self.matches_head(span, &span.head())
    }

    fn matches_head(&self, span: &SpanView<'_>, head: &SpanHead<'_>) -> bool {
        let in_set = |bits: u64, v: i32| (0..64).contains(&v) && bits & (1u64 << v) != 0;
        // Each field is read only when a condition needs it: reading one
        // walks the span's fields.
        if let Some(bits) = self.kinds
            && !in_set(bits, head.kind)
        {
            return false;
        }
        if let Some(bits) = self.statuses
            && !in_set(bits, head.status_code)
        {
            return false;
        }
        if self.min_ns.is_some() || self.max_ns.is_some() {
            let d = head.duration_nanos();
            if self.min_ns.is_some_and(|min| d < min) || self.max_ns.is_some_and(|max| d > max) {
                return false;
            }
        }
        if let Some(names) = &self.names
            && !names.is_match(head.name)
        {
            return false;
        }
        let attrs_ok = self
            .attributes
            .iter()
            .all(|m| span.attribute(&m.key).is_some_and(|v| m.value_matches(&v)));
        if !attrs_ok {
            return false;
        }
        if !self.resource_attributes.is_empty() {
            let resource = span.resource();
            return self.resource_attributes.iter().all(|m| {
                resource
                    .attribute(&m.key)
                    .is_some_and(|v| m.value_matches(&v))
            });
        }
        true
    }
}

impl SpanPredicate for Filter {
    fn keep(&self, span: &SpanView<'_>, head: &SpanHead<'_>) -> bool {
        match self.action {
            FilterAction::Drop => !self.matches_head(span, head),
            FilterAction::Keep => self.matches_head(span, head),
        }
    }

    fn reads_attributes(&self) -> bool {
        !self.attributes.is_empty() || !self.resource_attributes.is_empty()
    }
}

impl Processor for Filter {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, batch: TraceRequest, cx: &Context<'_>) -> Result<TraceRequest, ProcessError> {
        let keep = cx.keep_mask(&batch, |span| self.keep(span, &span.head()));
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

    #[test]
    fn a_filter_without_conditions_is_rejected() {
        assert!(matches!(
            Filter::from_config(&FilterConfig::drop()),
            Err(ProcessorConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for cfg in [
            FilterConfig::drop().min_duration_ms(-1.0),
            FilterConfig::drop().max_duration_ms(f64::NAN),
            FilterConfig::drop()
                .min_duration_ms(5.0)
                .max_duration_ms(1.0),
        ] {
            assert!(Filter::from_config(&cfg).is_err(), "{cfg:?}");
        }
    }
}
