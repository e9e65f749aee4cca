//! Attribute edits planned by processors, applied in one wire-level rewrite.

use std::borrow::Cow;

use spanflow_otlp::TraceRequest;
use spanflow_otlp::proto::common::v1::AnyValue;

/// One planned change: set `key` to `value`, or remove it when `value` is
/// `None`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Edit<'a> {
    pub(crate) key: Cow<'a, str>,
    pub(crate) value: Option<AnyValue>,
}

/// The changes to one attribute list, at most one per key, in the order the
/// keys were first touched.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Edits<'a>(Vec<Edit<'a>>);

impl<'a> Edits<'a> {
    pub(crate) fn new() -> Self {
        Edits(Vec::new())
    }

    pub(crate) fn set(&mut self, key: Cow<'a, str>, value: Option<AnyValue>) {
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

/// Why edits could not be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error("{0}")]
    Edit(String),
}

/// Applies per-span edits (`span_edits[i]` for span `i`, or empty when the
/// slice is empty) and per-resource edits (`resource_edits[r]` for resource
/// `r`) in one rewrite. A batch with no edits at all is returned as is.
pub(crate) fn apply_edits(
    batch: &TraceRequest,
    span_edits: &[Edits<'_>],
    resource_edits: &[Edits<'_>],
) -> Result<TraceRequest, ApplyError> {
    if span_edits.iter().all(Edits::is_empty) && resource_edits.iter().all(Edits::is_empty) {
        return Ok(batch.clone());
    }
    // Interim path until spanflow-otlp's `rewrite` lands: decode, edit, re-encode.
    let mut proto = batch
        .to_proto()
        .map_err(|e| ApplyError::Edit(e.to_string()))?;
    let mut i = 0;
    for (r, rs) in proto.resource_spans.iter_mut().enumerate() {
        if let (Some(edits), Some(resource)) = (resource_edits.get(r), rs.resource.as_mut()) {
            apply_to_list(&mut resource.attributes, edits);
        }
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                if let Some(edits) = span_edits.get(i) {
                    apply_to_list(&mut span.attributes, edits);
                }
                i += 1;
            }
        }
    }
    Ok(TraceRequest::from_proto(&proto))
}

fn apply_to_list(list: &mut Vec<spanflow_otlp::proto::common::v1::KeyValue>, edits: &Edits<'_>) {
    for e in edits.iter() {
        match &e.value {
            Some(v) => match list.iter_mut().find(|kv| kv.key == e.key) {
                Some(kv) => kv.value = Some(v.clone()),
                None => list.push(spanflow_otlp::proto::common::v1::KeyValue {
                    key: e.key.to_string(),
                    value: Some(v.clone()),
                    ..Default::default()
                }),
            },
            None => list.retain(|kv| kv.key != e.key),
        }
    }
}
