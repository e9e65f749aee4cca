//! Attribute edits planned by processors, applied in one wire-level rewrite.

use std::borrow::Cow;

use spanflow_otlp::{AnyValueView, TraceRequest};

/// A value to write: borrowed from the batch or the processor's
/// configuration, or computed (a hash, a masked string).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NewValue<'a> {
    View(AnyValueView<'a>),
    Owned(String),
}

impl NewValue<'_> {
    pub(crate) fn as_view(&self) -> AnyValueView<'_> {
        match self {
            NewValue::View(v) => *v,
            NewValue::Owned(s) => AnyValueView::String(s),
        }
    }
}

/// One planned change: set `key` to `value`, or remove it when `value` is
/// `None`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Edit<'a> {
    pub(crate) key: Cow<'a, str>,
    pub(crate) value: Option<NewValue<'a>>,
}

/// The changes to one attribute list, at most one per key, in the order the
/// keys were first touched.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Edits<'a>(Vec<Edit<'a>>);

impl<'a> Edits<'a> {
    pub(crate) fn new() -> Self {
        Edits(Vec::new())
    }

    pub(crate) fn set(&mut self, key: Cow<'a, str>, value: Option<NewValue<'a>>) {
        match self.0.iter_mut().find(|e| e.key == key) {
            Some(e) => e.value = value,
            None => self.0.push(Edit { key, value }),
        }
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Edit<'a>> {
        self.0.iter()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Applies per-span edits (`span_edits[i]` for span `i`; none when the
/// slice is empty) and per-resource edits (`resource_edits[r]` for resource
/// `r`) in one wire-level rewrite: untouched spans are copied as bytes and no
/// span is decoded. A batch with no edits at all is returned as is.
pub(crate) fn apply_edits(
    batch: &TraceRequest,
    span_edits: &[Edits<'_>],
    resource_edits: &[Edits<'_>],
) -> TraceRequest {
    if span_edits.iter().all(Edits::is_empty) && resource_edits.iter().all(Edits::is_empty) {
        return batch.clone();
    }
    // Resource edits are handed to the first span of each resource only;
    // `rewrite` applies them once per resource.
    let mut resource_done = vec![false; resource_edits.len()];
    batch.rewrite(|span, patch| {
        if let Some(edits) = span_edits.get(span.index()) {
            for e in edits.iter() {
                match &e.value {
                    Some(v) => patch.set_attribute_view(&e.key, v.as_view()),
                    None => patch.remove_attribute(&e.key),
                }
            }
        }
        let r = span.resource().index();
        if let (Some(edits), Some(done)) = (resource_edits.get(r), resource_done.get_mut(r))
            && !*done
        {
            *done = true;
            let resource = patch.resource();
            for e in edits.iter() {
                match &e.value {
                    Some(v) => resource.set_attribute_view(&e.key, v.as_view()),
                    None => resource.remove_attribute(&e.key),
                }
            }
        }
    })
}
