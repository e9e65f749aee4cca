//! Attribute edits planned by processors, applied in one wire-level rewrite.

use std::borrow::Cow;

use spanflow_otlp::{AnyValueBuf, AnyValueView, TraceRequest};

/// A value to write: borrowed from the batch or the processor's
/// configuration, or computed (a hash, a masked string, a rebuilt array or
/// key-value list).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NewValue<'a> {
    View(AnyValueView<'a>),
    Owned(String),
    /// A computed value of any shape (an array or list view is copied as
    /// bytes by the rewrite).
    Composite(AnyValueBuf),
}

impl NewValue<'_> {
    pub(crate) fn as_view(&self) -> AnyValueView<'_> {
        match self {
            NewValue::View(v) => *v,
            NewValue::Owned(s) => AnyValueView::String(s),
            NewValue::Composite(c) => c.view(),
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
            None => {
                if self.0.capacity() == 0 {
                    // Most plans touch a few keys: one allocation, not three.
                    self.0.reserve(4);
                }
                self.0.push(Edit { key, value });
            }
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
    rewrite(batch, |i| (true, span_edits.get(i)), resource_edits)
}

/// One span's fate in a fused pass: kept or dropped, and its edits.
#[derive(Debug, Default)]
pub(crate) struct SpanPlan<'a> {
    pub(crate) keep: bool,
    pub(crate) edits: Edits<'a>,
    /// The span also needs a decoding edit after the rewrite (Redact's
    /// event and link masking).
    pub(crate) decode: bool,
}

/// Drops and edits spans as `plans` say (one per span), and edits resources,
/// in one rewrite; returns the batch as is when nothing changes.
pub(crate) fn apply_plans(
    batch: &TraceRequest,
    plans: &[SpanPlan<'_>],
    resource_edits: &[Edits<'_>],
) -> TraceRequest {
    if plans.iter().all(|p| p.keep && p.edits.is_empty())
        && resource_edits.iter().all(Edits::is_empty)
    {
        return batch.clone();
    }
    if resource_edits.iter().all(Edits::is_empty) && plans.iter().all(|p| p.edits.is_empty()) {
        // Only drops: the keep-mask path is the cheaper copy.
        let keep: Vec<bool> = plans.iter().map(|p| p.keep).collect();
        return batch.select(&keep);
    }
    rewrite(
        batch,
        |i| {
            plans
                .get(i)
                .map_or((true, None), |p| (p.keep, Some(&p.edits)))
        },
        resource_edits,
    )
}

fn rewrite<'e, 'd: 'e, F>(
    batch: &TraceRequest,
    span: F,
    resource_edits: &[Edits<'_>],
) -> TraceRequest
where
    F: Fn(usize) -> (bool, Option<&'e Edits<'d>>),
{
    // Resource edits are handed to the first span of each resource only;
    // `rewrite` applies them once per resource.
    let mut resource_done = vec![false; resource_edits.len()];
    batch.rewrite(|view, patch| {
        let (keep, edits) = span(view.index());
        if !keep {
            patch.drop_span();
        } else if let Some(edits) = edits {
            for e in edits.iter() {
                match &e.value {
                    Some(v) => patch.set_attribute_view(&e.key, v.as_view()),
                    None => patch.remove_attribute(&e.key),
                }
            }
        }
        let r = view.resource().index();
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
