//! The memory-budget weight of an SDK span before it is encoded.

use opentelemetry_sdk::trace::SpanData;

/// A rough, cheap estimate of the heap and inline bytes an ended span holds, for the memory
/// budget. It reads only lengths (no string contents), so it costs a few loads on the hot path.
pub(crate) fn estimate_span_bytes(span: &SpanData) -> usize {
    const KEY_VALUE_BYTES: usize = 64;
    const EVENT_BYTES: usize = 96;
    const LINK_BYTES: usize = 96;
    let name = match &span.name {
        std::borrow::Cow::Borrowed(_) => 0,
        std::borrow::Cow::Owned(s) => s.len(),
    };
    std::mem::size_of::<SpanData>()
        + name
        + span.attributes.len() * KEY_VALUE_BYTES
        + span.events.len() * EVENT_BYTES
        + span
            .events
            .iter()
            .map(|e| e.attributes.len() * KEY_VALUE_BYTES)
            .sum::<usize>()
        + span.links.len() * LINK_BYTES
}
