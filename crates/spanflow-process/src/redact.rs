//! Mask sensitive attribute values and remove keys not on an allow-list.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use spanflow_otlp::{AnyValueView, TraceRequest};

use crate::error::{ConfigError, ProcessError};
use crate::matching::compile_regex;
use crate::processor::{Context, Processor};
use crate::wire_edit::{Edits, NewValue, apply_edits};

/// Attribute added (when `summary` is on) with the number of values masked
/// in the span.
pub const MASKED_COUNT_KEY: &str = "redaction.masked.count";
/// Attribute added (when `summary` is on) with the number of keys removed
/// from the span.
pub const REMOVED_COUNT_KEY: &str = "redaction.removed.count";

fn default_mask() -> String {
    "****".to_owned()
}

/// Configuration of a [`Redact`] processor.
///
/// ```toml
/// [[processors]]
/// type = "redact"
/// allowed_keys = ["http.method", "http.route", "user.note"]
/// ignored_keys = ["http.route"]
/// blocked_values = ['\b\d{4}[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b', '[\w.+-]+@[\w-]+\.[\w.]+']
/// mask = "****"
/// summary = true
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Name in logs and panic counts; defaults to `redact`.
    #[serde(default)]
    pub name: Option<String>,
    /// If set, span attributes whose key is not listed are removed.
    #[serde(default)]
    pub allowed_keys: Option<Vec<String>>,
    /// Keys whose values are never masked.
    #[serde(default)]
    pub ignored_keys: Vec<String>,
    /// Regexes (unanchored); every match inside a string value is replaced by
    /// `mask`.
    #[serde(default)]
    pub blocked_values: Vec<String>,
    /// The replacement text; default `****`.
    #[serde(default = "default_mask")]
    pub mask: String,
    /// Add [`MASKED_COUNT_KEY`] and [`REMOVED_COUNT_KEY`] to spans that were
    /// changed.
    #[serde(default)]
    pub summary: bool,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            name: None,
            allowed_keys: None,
            ignored_keys: Vec::new(),
            blocked_values: Vec::new(),
            mask: default_mask(),
            summary: false,
        }
    }
}

/// Counts of what a [`Redact`] processor did, since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedactCounts {
    /// Spans with at least one value masked or key removed.
    pub spans: u64,
    /// String values in which at least one match was masked.
    pub values_masked: u64,
    /// Attributes removed because their key was not allowed.
    pub keys_removed: u64,
}

/// Masks attribute values that match blocked regexes (card numbers, email
/// addresses, …) and removes attributes whose keys are not on an allow-list,
/// counting what it did.
///
/// Applies to span attributes with string values (values inside arrays and
/// maps are not inspected). Cloning gives another handle to the same counts.
///
/// ```
/// use spanflow_process::{Redact, RedactConfig};
///
/// let redact = Redact::from_config(&RedactConfig {
///     blocked_values: vec![r"\d{4}-\d{4}-\d{4}-\d{4}".into()],
///     ..RedactConfig::default()
/// })?;
/// assert_eq!(redact.mask_str("card 4111-1111-1111-1111 ok").as_deref(), Some("card **** ok"));
/// assert_eq!(redact.counts().values_masked, 0); // `mask_str` does not count
/// # Ok::<(), spanflow_process::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Redact {
    name: String,
    allowed: Option<HashSet<String>>,
    ignored: HashSet<String>,
    blocked: Vec<regex::Regex>,
    any_blocked: Option<regex::RegexSet>,
    mask: String,
    summary: bool,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    spans: AtomicU64,
    values_masked: AtomicU64,
    keys_removed: AtomicU64,
}

impl Redact {
    /// Builds the processor from its configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if a regex does not compile, or if neither
    /// `allowed_keys` nor `blocked_values` is set.
    pub fn from_config(config: &RedactConfig) -> Result<Self, ConfigError> {
        let name = config.name.clone().unwrap_or_else(|| "redact".to_owned());
        if config.allowed_keys.is_none() && config.blocked_values.is_empty() {
            return Err(ConfigError::invalid(
                &name,
                "set allowed_keys or blocked_values (or both)",
            ));
        }
        let blocked = config
            .blocked_values
            .iter()
            .map(|p| compile_regex(&name, p))
            .collect::<Result<Vec<_>, _>>()?;
        let any_blocked = if blocked.is_empty() {
            None
        } else {
            Some(
                regex::RegexSet::new(&config.blocked_values).map_err(|source| {
                    ConfigError::Regex {
                        processor: name.clone(),
                        pattern: config.blocked_values.join(", "),
                        source: Box::new(source),
                    }
                })?,
            )
        };
        Ok(Redact {
            allowed: config
                .allowed_keys
                .as_ref()
                .map(|keys| keys.iter().cloned().collect()),
            ignored: config.ignored_keys.iter().cloned().collect(),
            blocked,
            any_blocked,
            mask: config.mask.clone(),
            summary: config.summary,
            counts: Arc::new(Counts::default()),
            name,
        })
    }

    /// What this processor (and its clones) did so far.
    pub fn counts(&self) -> RedactCounts {
        RedactCounts {
            spans: self.counts.spans.load(Ordering::Relaxed),
            values_masked: self.counts.values_masked.load(Ordering::Relaxed),
            keys_removed: self.counts.keys_removed.load(Ordering::Relaxed),
        }
    }

    /// `s` with every blocked match replaced by the mask, or `None` if
    /// nothing matched. Does not count.
    pub fn mask_str(&self, s: &str) -> Option<String> {
        if !self.any_blocked.as_ref()?.is_match(s) {
            return None;
        }
        let mut out = Cow::Borrowed(s);
        for re in &self.blocked {
            if let Cow::Owned(replaced) = re.replace_all(&out, regex::NoExpand(&self.mask)) {
                out = Cow::Owned(replaced);
            }
        }
        match out {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        }
    }

    /// The edits of one span; adds (spans, masked, removed) to `tally`.
    pub(crate) fn span_plan<'a>(
        &self,
        span: &spanflow_otlp::SpanView<'a>,
        tally: &mut [u64; 3],
    ) -> Edits<'a> {
        let (edits, masked, removed) = self.plan(span.attributes());
        tally[0] += u64::from(!edits.is_empty());
        tally[1] += masked;
        tally[2] += removed;
        edits
    }

    /// Adds a batch's (spans, masked, removed) tally to the counts.
    pub(crate) fn add_counts(&self, tally: [u64; 3]) {
        // Relaxed: monitoring counters.
        let c = &self.counts;
        c.spans.fetch_add(tally[0], Ordering::Relaxed);
        c.values_masked.fetch_add(tally[1], Ordering::Relaxed);
        c.keys_removed.fetch_add(tally[2], Ordering::Relaxed);
    }

    /// The edits for one span's attributes, and (masked, removed) counts.
    fn plan<'a>(
        &self,
        attrs: impl Iterator<Item = spanflow_otlp::KeyValueView<'a>>,
    ) -> (Edits<'a>, u64, u64) {
        let mut edits = Edits::new();
        let (mut masked, mut removed) = (0u64, 0u64);
        for kv in attrs {
            if let Some(allowed) = &self.allowed
                && !allowed.contains(kv.key)
            {
                edits.set(Cow::Borrowed(kv.key), None);
                removed += 1;
                continue;
            }
            if self.ignored.contains(kv.key) {
                continue;
            }
            if let AnyValueView::String(s) = kv.value
                && let Some(m) = self.mask_str(s)
            {
                edits.set(Cow::Borrowed(kv.key), Some(NewValue::Owned(m)));
                masked += 1;
            }
        }
        if self.summary && (masked > 0 || removed > 0) {
            edits.set(Cow::Borrowed(MASKED_COUNT_KEY), Some(count_value(masked)));
            edits.set(Cow::Borrowed(REMOVED_COUNT_KEY), Some(count_value(removed)));
        }
        (edits, masked, removed)
    }
}

fn count_value<'a>(n: u64) -> NewValue<'a> {
    NewValue::View(AnyValueView::Int(i64::try_from(n).unwrap_or(i64::MAX)))
}

impl Processor for Redact {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, batch: TraceRequest, cx: &Context<'_>) -> Result<TraceRequest, ProcessError> {
        if batch.span_count() == 0 {
            return Ok(batch);
        }
        let mut span_edits: Vec<Edits<'_>> = Vec::new();
        span_edits.resize_with(batch.span_count(), Edits::new);
        let total = parking_lot::Mutex::new([0u64; 3]);
        cx.parallelism()
            .for_each_chunk(&mut span_edits, |first, chunk| {
                let mut tally = [0u64; 3];
                for (offset, slot) in chunk.iter_mut().enumerate() {
                    if let Some(span) = batch.span(first + offset) {
                        *slot = self.span_plan(&span, &mut tally);
                    }
                }
                let mut total = total.lock();
                for (t, n) in total.iter_mut().zip(tally) {
                    *t += n;
                }
            });
        let out = apply_edits(&batch, &span_edits, &[]);
        // Counted only once the batch is actually rewritten.
        self.add_counts(total.into_inner());
        Ok(out)
    }
}
