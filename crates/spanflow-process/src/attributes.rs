//! Insert, update, upsert, delete and hash span or resource attributes.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
#[cfg(feature = "hash")]
use sha2::{Digest, Sha256};
use spanflow_otlp::{AnyValueView, KeyValueView, SpanView, TraceRequest};

use crate::error::{ProcessError, ProcessorConfigError};
use crate::matching::{Regex, Value, compile_regex};
use crate::processor::{Context, Processor};
use crate::wire_edit::{Edit, Edits, NewValue, apply_edits};

/// What an [`AttributeAction`] does, as in the OpenTelemetry Collector's
/// attributes processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Set the key only if it is absent.
    Insert,
    /// Set the key only if it is present.
    Update,
    /// Set the key whether present or not.
    Upsert,
    /// Remove the key (or every key matching `pattern`).
    Delete,
    /// Replace the value by the lowercase hex SHA-256 of its bytes (see
    /// [`AttributesProcessor`]); absent keys stay absent.
    Hash,
}

/// Which attributes an action edits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The span's own attributes.
    #[default]
    Span,
    /// The attributes of the resource the span belongs to (edited once per
    /// resource).
    Resource,
}

/// One edit of an [`AttributesProcessor`].
///
/// Exactly one of `key` and `pattern` is set; `pattern` (a regex over keys)
/// is allowed for `delete` and `hash` only. `insert`, `update` and `upsert`
/// take the new value from `value` or, if `from_attribute` is set, from
/// that attribute of the same span or resource (nothing happens when it is
/// absent).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeAction {
    /// The attribute key.
    #[serde(default)]
    pub key: Option<String>,
    /// A regex selecting keys (unanchored), for `delete` and `hash`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// What to do.
    pub action: ActionKind,
    /// The new value for `insert` / `update` / `upsert`.
    #[serde(default)]
    pub value: Option<Value>,
    /// Copy the new value from this attribute instead of `value`.
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// Span (default) or resource attributes.
    #[serde(default)]
    pub scope: Scope,
}

impl AttributeAction {
    fn with(action: ActionKind, key: impl Into<String>, value: Option<Value>) -> Self {
        AttributeAction {
            key: Some(key.into()),
            pattern: None,
            action,
            value,
            from_attribute: None,
            scope: Scope::Span,
        }
    }

    /// Sets `key` to `value` if absent.
    pub fn insert(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::with(ActionKind::Insert, key, Some(value.into()))
    }

    /// Sets `key` to `value` if present.
    pub fn update(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::with(ActionKind::Update, key, Some(value.into()))
    }

    /// Sets `key` to `value`.
    pub fn upsert(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::with(ActionKind::Upsert, key, Some(value.into()))
    }

    /// Removes `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        Self::with(ActionKind::Delete, key, None)
    }

    /// Removes every key matching the regex `pattern`.
    pub fn delete_matching(pattern: impl Into<String>) -> Self {
        AttributeAction {
            key: None,
            pattern: Some(pattern.into()),
            ..Self::with(ActionKind::Delete, "", None)
        }
    }

    /// Replaces the value of `key` by its SHA-256.
    pub fn hash(key: impl Into<String>) -> Self {
        Self::with(ActionKind::Hash, key, None)
    }

    /// Takes the new value from attribute `from` instead of a literal.
    pub fn from_attribute(mut self, from: impl Into<String>) -> Self {
        self.value = None;
        self.from_attribute = Some(from.into());
        self
    }

    /// Applies the action to resource attributes instead of span attributes.
    pub fn on_resource(mut self) -> Self {
        self.scope = Scope::Resource;
        self
    }
}

/// Configuration of an [`AttributesProcessor`].
///
/// ```toml
/// [[processors]]
/// type = "attributes"
/// actions = [
///   { key = "env", action = "upsert", value = "prod", scope = "resource" },
///   { key = "user.email", action = "hash" },
///   { pattern = "^internal\\.", action = "delete" },
/// ]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// Name in logs and panic counts; defaults to `attributes`.
    #[serde(default)]
    pub name: Option<String>,
    /// The edits, applied in order (a later action sees the effect of an
    /// earlier one).
    pub actions: Vec<AttributeAction>,
}

impl AttributesConfig {
    /// A configuration with these actions.
    pub fn new(actions: impl IntoIterator<Item = AttributeAction>) -> Self {
        AttributesConfig {
            name: None,
            actions: actions.into_iter().collect(),
        }
    }
}

#[derive(Debug, Clone)]
enum Target {
    Key(String),
    Pattern(Regex),
}

#[derive(Debug, Clone)]
enum Source {
    None,
    Literal(Value),
    From(String),
}

#[derive(Debug, Clone)]
struct Action {
    kind: ActionKind,
    target: Target,
    source: Source,
}

/// Inserts, updates, upserts, deletes or hashes span and resource attributes,
/// in the spirit of the OpenTelemetry Collector's attributes processor.
///
/// Edits are made on the wire (only the edited spans and resources are
/// re-encoded; everything else is copied as bytes), and a batch no action
/// applies to is passed on unchanged. `hash` replaces a value by the
/// lowercase hex SHA-256 of: the UTF-8 bytes of a string, the raw bytes of a
/// bytes value, the decimal text of an integer, the shortest round-trip text
/// of a double, `true`/`false` for a boolean; arrays, maps and empty values
/// are left as they are.
///
/// ```
/// use spanflow_process::{AttributeAction, AttributesProcessor, AttributesConfig};
///
/// let p = AttributesProcessor::from_config(&AttributesConfig::new([
///     AttributeAction::upsert("env", "prod").on_resource(),
///     AttributeAction::hash("user.email"),
/// ]))?;
/// assert_eq!(spanflow_process::Processor::name(&p), "attributes");
/// # Ok::<(), spanflow_process::ProcessorConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct AttributesProcessor {
    name: String,
    span_actions: ActionList,
    resource_actions: ActionList,
}

impl AttributesProcessor {
    /// Builds the processor from its configuration.
    ///
    /// # Errors
    ///
    /// [`ProcessorConfigError`] if an action has neither or both of `key` and
    /// `pattern`, a `pattern` on a set action, a set action without a value
    /// source (or with both), a value on `delete`/`hash`, or a bad regex.
    pub fn from_config(config: &AttributesConfig) -> Result<Self, ProcessorConfigError> {
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| "attributes".to_owned());
        if config.actions.is_empty() {
            return Err(ProcessorConfigError::invalid(
                &name,
                "attributes needs at least one action",
            ));
        }
        let mut span_actions = ActionList::default();
        let mut resource_actions = ActionList::default();
        for (i, a) in config.actions.iter().enumerate() {
            let bad =
                |msg: &str| ProcessorConfigError::invalid(&name, format!("action {i}: {msg}"));
            if a.action == ActionKind::Hash && !cfg!(feature = "hash") {
                return Err(ProcessorConfigError::FeatureDisabled {
                    what: "the attributes action `hash` (SHA-256)",
                    feature: "hash",
                });
            }
            let target = match (&a.key, &a.pattern) {
                (Some(k), None) => Target::Key(k.clone()),
                (None, Some(p)) => {
                    if !matches!(a.action, ActionKind::Delete | ActionKind::Hash) {
                        return Err(bad("pattern is only allowed for delete and hash"));
                    }
                    Target::Pattern(compile_regex(&name, p)?)
                }
                _ => return Err(bad("set exactly one of key and pattern")),
            };
            let source = match (a.action, &a.value, &a.from_attribute) {
                (ActionKind::Delete | ActionKind::Hash, None, None) => Source::None,
                (ActionKind::Delete | ActionKind::Hash, _, _) => {
                    return Err(bad("delete and hash take no value"));
                }
                (_, Some(v), None) => Source::Literal(v.clone()),
                (_, None, Some(from)) => Source::From(from.clone()),
                (_, None, None) => return Err(bad("set one of value and from_attribute")),
                (_, Some(_), Some(_)) => {
                    return Err(bad("set only one of value and from_attribute"));
                }
            };
            let action = Action {
                kind: a.action,
                target,
                source,
            };
            match a.scope {
                Scope::Span => span_actions.push(action),
                Scope::Resource => resource_actions.push(action),
            }
        }
        Ok(AttributesProcessor {
            name,
            span_actions,
            resource_actions,
        })
    }
}

fn literal_view(v: &Value) -> AnyValueView<'_> {
    match v {
        Value::Bool(b) => AnyValueView::Bool(*b),
        Value::Int(i) => AnyValueView::Int(*i),
        Value::Double(d) => AnyValueView::Double(*d),
        Value::String(s) => AnyValueView::String(s),
    }
}

/// The SHA-256 hex of a value, `None` for values that are not hashed.
#[cfg(feature = "hash")]
pub(crate) fn hash_value(v: &AnyValueView<'_>) -> Option<String> {
    let digest = match v {
        AnyValueView::String(s) => Sha256::digest(s.as_bytes()),
        AnyValueView::Bytes(b) => Sha256::digest(b),
        AnyValueView::Int(i) => Sha256::digest(i.to_string().as_bytes()),
        AnyValueView::Double(d) => Sha256::digest(d.to_string().as_bytes()),
        AnyValueView::Bool(b) => Sha256::digest(if *b { b"true" as &[u8] } else { b"false" }),
        AnyValueView::Empty | AnyValueView::Array(_) | AnyValueView::KvList(_) => return None,
    };
    Some(hex::encode(digest))
}

/// Without the `hash` feature no `hash` action is ever built, so nothing is hashed.
#[cfg(not(feature = "hash"))]
pub(crate) fn hash_value(_v: &AnyValueView<'_>) -> Option<String> {
    None
}

fn hashed<'a>(v: &AnyValueView<'_>) -> Option<NewValue<'a>> {
    hash_value(v).map(NewValue::Owned)
}

/// The current value of a key while planning: the pending edit if any, else
/// the original.
enum Current<'v, 'a> {
    Absent,
    Original(AnyValueView<'a>),
    Pending(&'v NewValue<'a>),
}

/// Actions of one scope, with what planning needs to know about them.
#[derive(Debug, Clone, Default)]
struct ActionList {
    actions: Vec<Action>,
    /// Keys whose original value some action reads (deletes do not read).
    lookups: Vec<String>,
    /// Some action uses a key pattern: every original attribute is needed.
    needs_all: bool,
}

impl ActionList {
    fn push(&mut self, action: Action) {
        match (&action.target, action.kind) {
            (Target::Pattern(_), _) => self.needs_all = true,
            (Target::Key(_), ActionKind::Delete) => {}
            (Target::Key(_), ActionKind::Upsert) => {}
            (Target::Key(k), _) => self.lookups.push(k.clone()),
        }
        if let Source::From(from) = &action.source {
            self.lookups.push(from.clone());
        }
        self.actions.push(action);
    }

    fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Runs the actions against one attribute list and returns the edits.
    ///
    /// One pass over the original attributes collects the values actions
    /// read; deletes are planned blind (the rewrite ignores removals of absent
    /// keys) and checked against the original only when nothing else changes,
    /// so a batch no action applies to stays byte-identical.
    fn plan<'a, I>(&'a self, attrs: I) -> Edits<'a>
    where
        I: Iterator<Item = KeyValueView<'a>> + Clone,
    {
        let mut found: Vec<KeyValueView<'a>> = Vec::new();
        if self.needs_all {
            found.extend(attrs.clone());
        } else if !self.lookups.is_empty() {
            found.extend(
                attrs
                    .clone()
                    .filter(|kv| self.lookups.iter().any(|k| k == kv.key)),
            );
        }
        let mut edits = Edits::new();
        let mut changed = false;
        fn current<'v, 'a>(
            edits: &'v Edits<'a>,
            found: &[KeyValueView<'a>],
            key: &str,
        ) -> Current<'v, 'a> {
            match edits.iter().rev().find(|e| e.key == key) {
                Some(Edit { value: Some(v), .. }) => Current::Pending(v),
                Some(Edit { value: None, .. }) => Current::Absent,
                None => match found.iter().rev().find(|kv| kv.key == key) {
                    Some(kv) => Current::Original(kv.value),
                    None => Current::Absent,
                },
            }
        }
        for action in &self.actions {
            match (&action.target, action.kind) {
                (
                    Target::Key(key),
                    ActionKind::Insert | ActionKind::Update | ActionKind::Upsert,
                ) => {
                    let applies = match action.kind {
                        ActionKind::Upsert => true,
                        kind => {
                            let present = !matches!(current(&edits, &found, key), Current::Absent);
                            (kind == ActionKind::Insert) != present
                        }
                    };
                    if !applies {
                        continue;
                    }
                    let value = match &action.source {
                        Source::Literal(v) => NewValue::View(literal_view(v)),
                        Source::From(from) => match current(&edits, &found, from) {
                            Current::Absent => continue,
                            Current::Original(v) => NewValue::View(v),
                            Current::Pending(v) => v.clone(),
                        },
                        Source::None => continue,
                    };
                    edits.set(Cow::Borrowed(key.as_str()), Some(value));
                    changed = true;
                }
                (Target::Key(key), ActionKind::Delete) => {
                    edits.set(Cow::Borrowed(key.as_str()), None);
                }
                (Target::Key(key), ActionKind::Hash) => {
                    let h = match current(&edits, &found, key) {
                        Current::Absent => None,
                        Current::Original(v) => hashed(&v),
                        Current::Pending(v) => hashed(&v.as_view()),
                    };
                    if h.is_some() {
                        edits.set(Cow::Borrowed(key.as_str()), h);
                        changed = true;
                    }
                }
                (Target::Pattern(re), kind) => {
                    // Keys of the original list plus keys set by earlier actions.
                    let mut keys: Vec<Cow<'a, str>> = found
                        .iter()
                        .map(|kv| Cow::Borrowed(kv.key))
                        .filter(|k| re.is_match(k))
                        .collect();
                    for e in edits.iter() {
                        if re.is_match(&e.key) && !keys.contains(&e.key) {
                            keys.push(e.key.clone());
                        }
                    }
                    for key in keys {
                        let h = match (kind, current(&edits, &found, &key)) {
                            (_, Current::Absent) => continue,
                            (ActionKind::Hash, Current::Original(v)) => hashed(&v),
                            (ActionKind::Hash, Current::Pending(v)) => hashed(&v.as_view()),
                            _ => {
                                edits.set(key, None);
                                changed = true;
                                continue;
                            }
                        };
                        if h.is_some() {
                            edits.set(key, h);
                            changed = true;
                        }
                    }
                }
            }
        }
        if !changed && !edits.is_empty() {
            // Only blind removals: keep them only if a removed key exists.
            let removes_something = attrs
                .clone()
                .any(|kv| edits.iter().any(|e| e.value.is_none() && e.key == kv.key));
            if !removes_something {
                return Edits::new();
            }
        }
        edits
    }
}

impl AttributesProcessor {
    /// The edits of every resource of `batch`, by resource index (empty when
    /// there are no resource actions).
    pub(crate) fn resource_plans<'a>(&'a self, batch: &'a TraceRequest) -> Vec<Edits<'a>> {
        if self.resource_actions.is_empty() {
            return Vec::new();
        }
        batch
            .resources()
            .map(|r| self.resource_actions.plan(r.attributes()))
            .collect()
    }

    /// The edits of one span.
    pub(crate) fn span_plan<'a>(&'a self, span: &SpanView<'a>) -> Edits<'a> {
        if self.span_actions.is_empty() {
            return Edits::new();
        }
        self.span_actions.plan(span.attributes())
    }
}

impl Processor for AttributesProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, batch: TraceRequest, cx: &Context<'_>) -> Result<TraceRequest, ProcessError> {
        if batch.span_count() == 0 {
            return Ok(batch);
        }
        let resource_edits = self.resource_plans(&batch);
        let mut span_edits: Vec<Edits<'_>> = Vec::new();
        if !self.span_actions.is_empty() {
            span_edits.resize_with(batch.span_count(), Edits::new);
            cx.parallelism()
                .for_each_chunk(&mut span_edits, |first, chunk| {
                    for (offset, slot) in chunk.iter_mut().enumerate() {
                        if let Some(span) = batch.span(first + offset) {
                            *slot = self.span_plan(&span);
                        }
                    }
                });
        }
        Ok(apply_edits(&batch, &span_edits, &resource_edits))
    }
}
