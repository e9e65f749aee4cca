//! Mask sensitive attribute values and remove keys not on an allow-list.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use spanflow_otlp::proto::common::v1::{AnyValue, any_value};
use spanflow_otlp::proto::trace::v1::Span;
use spanflow_otlp::{
    AnyValueBuf, AnyValueView, SpanView, StoredKeyValue, TraceRequest, ValueFields,
};

use crate::error::{ProcessError, ProcessorConfigError};
use crate::matching::{Regex, RegexSet, compile_regex, regex_set, replace_all_literal};
use crate::processor::{Context, Processor};
use crate::wire_edit::{Edits, NewValue, apply_edits};

/// Attribute added (when `summary` is on) with the number of values masked
/// in the span.
pub const MASKED_COUNT_KEY: &str = "redaction.masked.count";
/// Attribute added (when `summary` is on) with the number of keys removed
/// from the span.
pub const REMOVED_COUNT_KEY: &str = "redaction.removed.count";

/// How many array / key-value-list levels of one attribute value (of a
/// span, event or link) [`Redact`] opens to look for blocked strings. An
/// attribute value with an array or list nested deeper than this is not
/// inspected further: the whole value is replaced by the mask string
/// (counted as one masked value), so nothing passes unchecked.
pub const MAX_NESTING: usize = 16;

/// A value nests arrays or lists deeper than [`MAX_NESTING`]: mask it whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TooDeep;

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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Name in logs and panic counts; defaults to `redact`.
    #[serde(default)]
    pub name: Option<String>,
    /// If set, span attributes whose key is not listed are removed (event
    /// and link attributes are not).
    #[serde(default)]
    pub allowed_keys: Option<Vec<String>>,
    /// Attribute keys (of spans, events and links) whose values, nested ones
    /// included, are never masked.
    #[serde(default)]
    pub ignored_keys: Vec<String>,
    /// Regexes (unanchored); every match inside a string value of a span,
    /// event or link attribute, nested ones included (see [`Redact`]), is
    /// replaced by `mask`.
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
    /// String values (top-level or nested, in span, event or link
    /// attributes) in which at least one match was masked, plus values
    /// masked whole for nesting deeper than [`MAX_NESTING`].
    pub values_masked: u64,
    /// Attributes removed because their key was not allowed.
    pub keys_removed: u64,
}

/// Masks attribute values that match blocked regexes (card numbers, email
/// addresses, …) and removes attributes whose keys are not on an allow-list,
/// counting what it did.
///
/// Masking applies to the attribute values of spans and of their events
/// (such as `exception.message` on an exception event) and links: a string
/// value, and every string inside an array or key-value-list value, at any
/// depth up to [`MAX_NESTING`] levels. Such a composite value is rewritten
/// with the same structure, each matching string masked and everything else
/// (other elements, other types, list keys) unchanged; each masked string
/// counts once in [`RedactCounts::values_masked`] (and in
/// [`MASKED_COUNT_KEY`]). A value nested deeper than [`MAX_NESTING`] is
/// replaced whole by the mask string (counted once) rather than passed on
/// unchecked. `ignored_keys` names attribute keys (of the span, an event or
/// a link) whose values, nested ones included, are left alone; keys inside
/// lists are never masked, nor are bytes values, span names or resource
/// attributes. The allow-list (`allowed_keys`) removes span attributes
/// only; event and link attributes are masked, never removed.
///
/// Cost: spans with nothing to mask are copied as bytes. Span attributes
/// are edited at the wire level. A span whose event or link attributes need
/// masking is decoded and re-encoded whole (its unknown fields are lost),
/// and each such span costs one copy of the batch; a span that cannot be
/// decoded (a parsed request always can) is dropped with a warning rather
/// than passed on unmasked.
///
/// Cloning gives another handle to the same counts.
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
/// # Ok::<(), spanflow_process::ProcessorConfigError>(())
/// ```
///
/// Strings nested in arrays and key-value lists, and in event attributes,
/// are masked in place:
///
/// ```
/// use spanflow_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
/// use spanflow_otlp::proto::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
/// use spanflow_otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event};
/// use spanflow_process::{Context, Processor, Redact, RedactConfig, TraceRequest};
///
/// let s = |v: &str| AnyValue { value: Some(Value::StringValue(v.into())) };
/// let emails = AnyValue {
///     value: Some(Value::ArrayValue(ArrayValue {
///         values: vec![s("ann@example.com"), s("n/a"), AnyValue { value: Some(Value::IntValue(7)) }],
///     })),
/// };
/// let span = Span {
///     trace_id: vec![1; 16],
///     span_id: vec![2; 8],
///     attributes: vec![KeyValue { key: "to".into(), value: Some(emails), ..Default::default() }],
///     events: vec![Event {
///         name: "exception".into(),
///         attributes: vec![KeyValue {
///             key: "exception.message".into(),
///             value: Some(s("no mailbox bob@example.org")),
///             ..Default::default()
///         }],
///         ..Default::default()
///     }],
///     ..Default::default()
/// };
/// let request = TraceRequest::from_proto(&ExportTraceServiceRequest {
///     resource_spans: vec![ResourceSpans {
///         scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
///         ..Default::default()
///     }],
/// });
///
/// let redact = Redact::from_config(&RedactConfig {
///     blocked_values: vec![r"[\w.+-]+@[\w-]+\.[\w.]+".into()],
///     ..RedactConfig::default()
/// })?;
/// let out = redact.process(request, &Context::sequential())?.to_proto()?;
/// let span = &out.resource_spans[0].scope_spans[0].spans[0];
/// let to = span.attributes[0].value.clone();
/// let Some(Value::ArrayValue(array)) = to.and_then(|v| v.value) else { panic!("an array") };
/// assert_eq!(array.values, [s("****"), s("n/a"), AnyValue { value: Some(Value::IntValue(7)) }]);
/// assert_eq!(span.events[0].attributes[0].value, Some(s("no mailbox ****")));
/// assert_eq!(redact.counts().values_masked, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Redact {
    name: String,
    allowed: Option<HashSet<String>>,
    ignored: HashSet<String>,
    blocked: Vec<Regex>,
    any_blocked: Option<RegexSet>,
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
    /// [`ProcessorConfigError`] if a regex does not compile, or if neither
    /// `allowed_keys` nor `blocked_values` is set.
    pub fn from_config(config: &RedactConfig) -> Result<Self, ProcessorConfigError> {
        let name = config.name.clone().unwrap_or_else(|| "redact".to_owned());
        if config.allowed_keys.is_none() && config.blocked_values.is_empty() {
            return Err(ProcessorConfigError::invalid(
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
            Some(regex_set(&name, &config.blocked_values)?)
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
            if let Cow::Owned(replaced) = replace_all_literal(re, &out, &self.mask) {
                out = Cow::Owned(replaced);
            }
        }
        match out {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        }
    }

    /// Whether `s` holds a match of any blocked regex.
    fn is_blocked(&self, s: &str) -> bool {
        self.any_blocked.as_ref().is_some_and(|set| set.is_match(s))
    }

    /// How many strings in `value` (at nesting `depth`) hold a blocked
    /// match, reading the view in place.
    fn scan_view(&self, value: AnyValueView<'_>, depth: usize) -> Result<u64, TooDeep> {
        match value {
            AnyValueView::String(s) => Ok(u64::from(self.is_blocked(s))),
            AnyValueView::Array(a) => {
                if depth >= MAX_NESTING {
                    return Err(TooDeep);
                }
                a.iter()
                    .try_fold(0, |n, v| Ok(n + self.scan_view(v, depth + 1)?))
            }
            AnyValueView::KvList(l) => {
                if depth >= MAX_NESTING {
                    return Err(TooDeep);
                }
                l.iter()
                    .try_fold(0, |n, kv| Ok(n + self.scan_view(kv.value, depth + 1)?))
            }
            _ => Ok(0),
        }
    }

    /// The replacement for a span attribute's value and how many strings
    /// were masked in it, or `None` if it holds nothing blocked.
    fn masked_view<'a>(&self, value: AnyValueView<'a>) -> Option<(NewValue<'a>, u64)> {
        self.any_blocked.as_ref()?;
        match value {
            AnyValueView::String(s) => self.mask_str(s).map(|m| (NewValue::Owned(m), 1)),
            AnyValueView::Array(_) | AnyValueView::KvList(_) => match self.scan_view(value, 0) {
                Ok(0) => None,
                Ok(_) => {
                    let mut rebuilt = value.to_proto();
                    let n = self.mask_value(&mut rebuilt);
                    Some((NewValue::Composite(AnyValueBuf::new(&rebuilt)), n))
                }
                Err(TooDeep) => Some((NewValue::Owned(self.mask.clone()), 1)),
            },
            _ => None,
        }
    }

    /// Masks every blocked match in the strings of `value` (a whole
    /// attribute value) in place; a value nested deeper than
    /// [`MAX_NESTING`] becomes the mask string. Returns how many strings
    /// were masked (one for a too-deep value).
    fn mask_value(&self, value: &mut AnyValue) -> u64 {
        if self.any_blocked.is_none() {
            return 0;
        }
        match self.mask_nested(value, 0) {
            Ok(n) => n,
            Err(TooDeep) => {
                value.value = Some(any_value::Value::StringValue(self.mask.clone()));
                1
            }
        }
    }

    fn mask_nested(&self, value: &mut AnyValue, depth: usize) -> Result<u64, TooDeep> {
        match &mut value.value {
            Some(any_value::Value::StringValue(s)) => Ok(match self.mask_str(s) {
                Some(m) => {
                    *s = m;
                    1
                }
                None => 0,
            }),
            Some(any_value::Value::ArrayValue(a)) => {
                if depth >= MAX_NESTING {
                    return Err(TooDeep);
                }
                a.values
                    .iter_mut()
                    .try_fold(0, |n, v| Ok(n + self.mask_nested(v, depth + 1)?))
            }
            Some(any_value::Value::KvlistValue(l)) => {
                if depth >= MAX_NESTING {
                    return Err(TooDeep);
                }
                l.values.iter_mut().try_fold(0, |n, kv| {
                    Ok(n + match kv.value.as_mut() {
                        Some(v) => self.mask_nested(v, depth + 1)?,
                        None => 0,
                    })
                })
            }
            _ => Ok(0),
        }
    }

    /// How many strings in the attributes of the span's events and links
    /// hold a blocked match (a value too deep to inspect counts one), read in
    /// place.
    fn scan_events(&self, span: &SpanView<'_>) -> u64 {
        if self.any_blocked.is_none() {
            return 0;
        }
        let events = span.events().flat_map(|e| e.attributes().stored());
        let links = span.links().flat_map(|l| l.attributes().stored());
        events.chain(links).map(|kv| self.scan_stored(&kv)).sum()
    }

    /// Blocked strings in one event or link attribute (none if its key is
    /// ignored). Every value its bytes hold is scanned, not just the one the
    /// view shows, so a value split over several fields (which decoders
    /// merge) is not missed.
    fn scan_stored(&self, kv: &StoredKeyValue<'_>) -> u64 {
        if self.ignored.contains(kv.key) {
            return 0;
        }
        kv.value_fields()
            .map(|value| self.scan_fields(value, 0).unwrap_or(1))
            .sum()
    }

    /// Blocked strings in every value one encoded `AnyValue` holds, at
    /// nesting `depth`: [`scan_view`](Self::scan_view) over all of them.
    fn scan_fields(&self, mut value: ValueFields<'_>, depth: usize) -> Result<u64, TooDeep> {
        value.try_fold(0, |n, v| {
            Ok(n + match v {
                AnyValueView::String(s) => u64::from(self.is_blocked(s)),
                AnyValueView::Array(a) => {
                    if depth >= MAX_NESTING {
                        return Err(TooDeep);
                    }
                    a.element_fields()
                        .try_fold(0, |k, e| Ok(k + self.scan_fields(e, depth + 1)?))?
                }
                AnyValueView::KvList(l) => {
                    if depth >= MAX_NESTING {
                        return Err(TooDeep);
                    }
                    l.iter()
                        .stored()
                        .flat_map(|kv| kv.value_fields())
                        .try_fold(0, |k, v| Ok(k + self.scan_fields(v, depth + 1)?))?
                }
                _ => 0,
            })
        })
    }

    /// Masks the attributes of a decoded span's events and links in place.
    fn mask_span_events(&self, span: &mut Span) {
        let events = span.events.iter_mut().flat_map(|e| e.attributes.iter_mut());
        let links = span.links.iter_mut().flat_map(|l| l.attributes.iter_mut());
        for kv in events.chain(links) {
            if !self.ignored.contains(&kv.key)
                && let Some(value) = kv.value.as_mut()
            {
                self.mask_value(value);
            }
        }
    }

    /// The second pass over a batch whose span attributes were already
    /// edited: masks the event and link attributes of spans `todo` (indices
    /// in `batch`, ascending, as the plans found them), decoding and
    /// re-encoding only those spans (each other span is copied as bytes), in
    /// one pass over the batch however many spans need it.
    /// Counts nothing: the plan did.
    ///
    /// A span that cannot be decoded is dropped (and logged) rather than
    /// passed on unmasked; a request that parsed always decodes.
    pub(crate) fn mask_events(&self, batch: TraceRequest, todo: &[usize]) -> TraceRequest {
        if todo.is_empty() {
            return batch;
        }
        match batch.edit_spans(todo, |_, span| self.mask_span_events(span)) {
            Ok(edited) => edited,
            // Some span did not decode: go span by span to find and drop it.
            Err(_) => self.mask_events_one_by_one(batch, todo),
        }
    }

    /// [`mask_events`](Self::mask_events) one span at a time (a copy of the
    /// batch per span), dropping the spans that do not decode.
    fn mask_events_one_by_one(&self, batch: TraceRequest, todo: &[usize]) -> TraceRequest {
        let mut out = batch;
        // Backwards, so a dropped span does not shift the ones still to do.
        for &i in todo.iter().rev() {
            out = match out.edit_span(i, |span| self.mask_span_events(span)) {
                Ok(edited) => edited,
                Err(error) => {
                    tracing::warn!(
                        processor = %self.name,
                        span = i,
                        %error,
                        "span dropped: its event attributes could not be decoded for masking"
                    );
                    out.rewrite(|view, patch| {
                        if view.index() == i {
                            patch.drop_span();
                        }
                    })
                }
            };
        }
        out
    }

    /// The edits of one span's attributes, counting the event and link
    /// values [`mask_events`](Self::mask_events) will mask, and whether
    /// there are any (the span must then go through `mask_events`); adds
    /// (spans, masked, removed) to `tally`.
    pub(crate) fn span_plan<'a>(
        &self,
        span: &SpanView<'a>,
        tally: &mut [u64; 3],
    ) -> (Edits<'a>, bool) {
        let in_events = self.scan_events(span);
        let (edits, masked, removed) = self.plan(span.attributes(), in_events);
        tally[0] += u64::from(!edits.is_empty() || in_events > 0);
        tally[1] += masked;
        tally[2] += removed;
        (edits, in_events > 0)
    }

    /// Adds a batch's (spans, masked, removed) tally to the counts.
    pub(crate) fn add_counts(&self, tally: [u64; 3]) {
        // Relaxed: monitoring counters.
        let c = &self.counts;
        c.spans.fetch_add(tally[0], Ordering::Relaxed);
        c.values_masked.fetch_add(tally[1], Ordering::Relaxed);
        c.keys_removed.fetch_add(tally[2], Ordering::Relaxed);
    }

    /// The edits for one span's attributes, and (masked, removed) counts;
    /// `in_events` values masked elsewhere in the span join the count.
    fn plan<'a>(
        &self,
        attrs: impl Iterator<Item = spanflow_otlp::KeyValueView<'a>>,
        in_events: u64,
    ) -> (Edits<'a>, u64, u64) {
        let mut edits = Edits::new();
        let (mut masked, mut removed) = (in_events, 0u64);
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
            if let Some((value, n)) = self.masked_view(kv.value) {
                edits.set(Cow::Borrowed(kv.key), Some(value));
                masked += n;
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
        let mut span_edits: Vec<(Edits<'_>, bool)> = Vec::new();
        span_edits.resize_with(batch.span_count(), Default::default);
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
        let (edits, decode): (Vec<Edits<'_>>, Vec<bool>) = span_edits.into_iter().unzip();
        // Redact drops no span: indices stay those of `batch`.
        let todo: Vec<usize> = (0..decode.len()).filter(|&i| decode[i]).collect();
        let out = self.mask_events(apply_edits(&batch, &edits, &[]), &todo);
        // Counted only once the batch is actually rewritten.
        self.add_counts(total.into_inner());
        Ok(out)
    }
}
