//! The direct encoder: `SpanData` → `ExportTraceServiceRequest` bytes, no intermediate
//! structs, no per-span allocation.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

use crate::request::{Index, ResourceEntry, ScopeEntry, SpanEntry, SpanMeta, TraceRequest};
use crate::wire::{self, begin_len_field, end_len_field};

/// `SpanFlags::CONTEXT_HAS_IS_REMOTE_MASK`: the producer knows whether the parent is remote.
const HAS_IS_REMOTE: u32 = 0x100;
/// `SpanFlags::CONTEXT_IS_REMOTE_MASK`: the parent (or linked) context is remote.
const IS_REMOTE: u32 = 0x200;

/// Above this many distinct scopes in a batch, grouping switches from a linear scan to a map.
const LINEAR_SCOPES: usize = 8;

/// Writes `ExportTraceServiceRequest`s straight from `SpanData`, reusing its buffers from
/// batch to batch.
///
/// The bytes decode (with prost) to exactly what opentelemetry-proto's conversion and
/// opentelemetry-otlp's grouping produce: one `ResourceSpans`, one `ScopeSpans` per
/// distinct instrumentation scope in order of first appearance, spans in input order
/// within a scope, and every field, including the OTLP 1.x `is_remote` flag bits.
///
/// ```
/// use spanflow_otlp::Encoder;
///
/// let spans = spanflow_otlp::testing::span_batch(16, 3);
/// let resource = spanflow_otlp::testing::resource();
/// let mut encoder = Encoder::new();
/// let request = encoder.encode(&spans, &resource);
/// assert_eq!(request.span_count(), 16);
/// assert_eq!(request.resources().next().unwrap().service_name(), Some("checkout"));
/// ```
#[derive(Debug, Default)]
pub struct Encoder {
    /// Output buffer; its capacity is kept between batches (see `encode`).
    capacity: usize,
    groups: Vec<u32>,
    order: Vec<u32>,
    counts: Vec<u32>,
}

impl Encoder {
    /// A new encoder.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// Encodes `spans` under `resource`. An empty slice gives an empty request.
    pub fn encode(&mut self, spans: &[SpanData], resource: &Resource) -> TraceRequest {
        if spans.is_empty() {
            return TraceRequest::empty();
        }
        let scopes = self.group(spans);

        // The buffer becomes the request's `Bytes`, so it cannot be reused as such; sizing
        // it from the previous batch avoids regrowth instead.
        let mut out = Vec::with_capacity(self.capacity.max(spans.len() * 320));
        let mut index = Index {
            resources: Vec::with_capacity(1),
            scopes: Vec::with_capacity(scopes.len()),
            spans: Vec::with_capacity(spans.len()),
            resource_extras: Vec::with_capacity(2),
            scope_extras: Vec::with_capacity(scopes.len() * 2),
        };

        let resource_mark = begin_len_field(&mut out, 1, 3);
        let resource_header = out.len();
        let mark = begin_len_field(&mut out, 1, 2);
        for (key, value) in resource.iter() {
            write_key_value(&mut out, 1, key.as_str(), value);
        }
        wire::end_len_field(&mut out, mark);
        index
            .resource_extras
            .push([resource_header as u32, out.len() as u32]);

        let mut next = 0usize;
        for (g, scope) in scopes.iter().enumerate() {
            let count = self.counts[g] as usize;
            let s = index.scopes.len() as u32;
            let scope_mark = begin_len_field(&mut out, 2, 3);
            let scope_body = out.len();
            let first_extra = index.scope_extras.len();
            let first_span = index.spans.len();
            write_scope(&mut out, scope);
            index
                .scope_extras
                .push([scope_body as u32, out.len() as u32]);
            for &i in &self.order[next..next + count] {
                let span = &spans[i as usize];
                let start = out.len();
                let mark = begin_len_field(&mut out, 2, 2);
                let meta = write_span(&mut out, span);
                let body = end_len_field(&mut out, mark);
                index.spans.push(SpanEntry {
                    start: start as u32,
                    body: body as u32,
                    end: out.len() as u32,
                    scope: s,
                    meta,
                });
            }
            next += count;
            if let Some(url) = scope.schema_url().filter(|u| !u.is_empty()) {
                let at = out.len();
                wire::put_bytes_field(&mut out, 3, url.as_bytes());
                index.scope_extras.push([at as u32, out.len() as u32]);
            }
            let shift = end_len_field_shift(&mut out, scope_mark);
            shift_entries(&mut index, first_extra, first_span, None, shift);
            index.scopes.push(ScopeEntry {
                extras: [first_extra as u32, index.scope_extras.len() as u32],
                resource: 0,
                spans: [first_span as u32, index.spans.len() as u32],
            });
        }
        if let Some(url) = resource.schema_url().filter(|u| !u.is_empty()) {
            let at = out.len();
            wire::put_bytes_field(&mut out, 3, url.as_bytes());
            index.resource_extras.push([at as u32, out.len() as u32]);
        }
        let shift = end_len_field_shift(&mut out, resource_mark);
        shift_entries(&mut index, 0, 0, Some(0), shift);
        index.resources.push(ResourceEntry {
            extras: [0, index.resource_extras.len() as u32],
            scopes: [0, index.scopes.len() as u32],
        });
        self.capacity = out.len();
        TraceRequest::from_parts(Bytes::from(out), index)
    }

    /// Assigns each span to a scope group (first appearance order) and fills `order` with
    /// span indices sorted by group, stably.
    fn group<'s>(&mut self, spans: &'s [SpanData]) -> Vec<&'s InstrumentationScope> {
        let mut scopes: Vec<&'s InstrumentationScope> = Vec::new();
        let mut map: HashMap<&'s InstrumentationScope, u32> = HashMap::new();
        self.groups.clear();
        let mut last: Option<(&'s InstrumentationScope, u32)> = None;
        for span in spans {
            let scope = &span.instrumentation_scope;
            let g = match last {
                Some((prev, g)) if std::ptr::eq(prev, scope) || prev == scope => g,
                _ => {
                    let found = if scopes.len() <= LINEAR_SCOPES {
                        scopes.iter().position(|s| *s == scope).map(|g| g as u32)
                    } else {
                        map.get(scope).copied()
                    };
                    let g = match found {
                        Some(g) => g,
                        None => {
                            let g = scopes.len() as u32;
                            scopes.push(scope);
                            if scopes.len() > LINEAR_SCOPES {
                                if map.is_empty() {
                                    for (k, s) in scopes.iter().enumerate() {
                                        map.insert(s, k as u32);
                                    }
                                } else {
                                    map.insert(scope, g);
                                }
                            }
                            g
                        }
                    };
                    last = Some((scope, g));
                    g
                }
            };
            self.groups.push(g);
        }
        self.counts.clear();
        self.counts.resize(scopes.len(), 0);
        for &g in &self.groups {
            self.counts[g as usize] += 1;
        }
        let mut starts: Vec<u32> = Vec::with_capacity(scopes.len());
        let mut acc = 0;
        for &c in &self.counts {
            starts.push(acc);
            acc += c;
        }
        self.order.clear();
        self.order.resize(spans.len(), 0);
        for (i, &g) in self.groups.iter().enumerate() {
            let slot = &mut starts[g as usize];
            self.order[*slot as usize] = i as u32;
            *slot += 1;
        }
        scopes
    }
}

/// [`end_len_field`] that reports how far the body moved.
fn end_len_field_shift(out: &mut Vec<u8>, mark: (usize, usize)) -> isize {
    let body = end_len_field(out, mark);
    body as isize - (mark.0 + mark.1) as isize
}

/// Moves the offsets recorded inside a field whose body moved by `shift` bytes.
fn shift_entries(
    index: &mut Index,
    first_extra: usize,
    first_span: usize,
    resource: Option<usize>,
    shift: isize,
) {
    if shift == 0 {
        return;
    }
    let mv = |x: &mut u32| *x = (*x as isize + shift) as u32;
    for e in &mut index.scope_extras[first_extra..] {
        mv(&mut e[0]);
        mv(&mut e[1]);
    }
    for s in &mut index.spans[first_span..] {
        mv(&mut s.start);
        mv(&mut s.body);
        mv(&mut s.end);
    }
    if let Some(first) = resource {
        for e in &mut index.resource_extras[first..] {
            mv(&mut e[0]);
            mv(&mut e[1]);
        }
    }
}

fn to_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kind_value(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn write_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    let mark = begin_len_field(out, 1, 1);
    if !scope.name().is_empty() {
        wire::put_bytes_field(out, 1, scope.name().as_bytes());
    }
    if let Some(version) = scope.version().filter(|v| !v.is_empty()) {
        wire::put_bytes_field(out, 2, version.as_bytes());
    }
    for kv in scope.attributes() {
        write_key_value(out, 3, kv.key.as_str(), &kv.value);
    }
    end_len_field(out, mark);
}

/// Writes a `tracestate` as its W3C header (`k=v,k=v`) without building the string.
fn write_trace_state(out: &mut Vec<u8>, number: u32, state: &TraceState) {
    let mut len = 0;
    let mut entries = 0;
    for (k, v) in state {
        len += k.len() + 1 + v.len();
        entries += 1;
    }
    if entries == 0 {
        return;
    }
    len += entries - 1;
    wire::put_tag(out, number, wire::LEN);
    wire::put_varint(out, len as u64);
    for (i, (k, v)) in state.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
    }
}

/// Writes a span's body; returns where its name and attributes are relative to the body.
pub(crate) fn write_span(out: &mut Vec<u8>, span: &SpanData) -> SpanMeta {
    let base = out.len();
    let mut meta = SpanMeta::default();
    let ctx = &span.span_context;
    wire::put_bytes_field(out, 1, &ctx.trace_id().to_bytes());
    wire::put_bytes_field(out, 2, &ctx.span_id().to_bytes());
    write_trace_state(out, 3, ctx.trace_state());
    if span.parent_span_id != SpanId::INVALID {
        wire::put_bytes_field(out, 4, &span.parent_span_id.to_bytes());
    }
    if !span.name.is_empty() {
        wire::put_bytes_field(out, 5, span.name.as_bytes());
        let end = out.len() - base;
        meta.name = [(end - span.name.len()) as u32, end as u32];
    }
    wire::put_varint_field(out, 6, kind_value(&span.span_kind));
    let start = to_nanos(span.start_time);
    if start != 0 {
        wire::put_fixed64_field(out, 7, start);
    }
    let end = to_nanos(span.end_time);
    if end != 0 {
        wire::put_fixed64_field(out, 8, end);
    }
    let attrs_start = out.len() - base;
    for kv in &span.attributes {
        write_key_value(out, 9, kv.key.as_str(), &kv.value);
    }
    if !span.attributes.is_empty() {
        meta.attrs = [attrs_start as u32, (out.len() - base) as u32];
    }
    if span.dropped_attributes_count != 0 {
        wire::put_varint_field(out, 10, u64::from(span.dropped_attributes_count));
    }
    for event in span.events.iter() {
        let mark = begin_len_field(out, 11, 1);
        let time = to_nanos(event.timestamp);
        if time != 0 {
            wire::put_fixed64_field(out, 1, time);
        }
        if !event.name.is_empty() {
            wire::put_bytes_field(out, 2, event.name.as_bytes());
        }
        for kv in &event.attributes {
            write_key_value(out, 3, kv.key.as_str(), &kv.value);
        }
        if event.dropped_attributes_count != 0 {
            wire::put_varint_field(out, 4, u64::from(event.dropped_attributes_count));
        }
        end_len_field(out, mark);
    }
    if span.events.dropped_count != 0 {
        wire::put_varint_field(out, 12, u64::from(span.events.dropped_count));
    }
    for link in span.links.iter() {
        let mark = begin_len_field(out, 13, 1);
        let lc = &link.span_context;
        wire::put_bytes_field(out, 1, &lc.trace_id().to_bytes());
        wire::put_bytes_field(out, 2, &lc.span_id().to_bytes());
        write_trace_state(out, 3, lc.trace_state());
        for kv in &link.attributes {
            write_key_value(out, 4, kv.key.as_str(), &kv.value);
        }
        if link.dropped_attributes_count != 0 {
            wire::put_varint_field(out, 5, u64::from(link.dropped_attributes_count));
        }
        let mut flags = u32::from(lc.trace_flags().to_u8()) | HAS_IS_REMOTE;
        if lc.is_remote() {
            flags |= IS_REMOTE;
        }
        wire::put_fixed32_field(out, 6, flags);
        end_len_field(out, mark);
    }
    if span.links.dropped_count != 0 {
        wire::put_varint_field(out, 14, u64::from(span.links.dropped_count));
    }
    let mark = begin_len_field(out, 15, 1);
    match &span.status {
        Status::Unset => {}
        Status::Ok => wire::put_varint_field(out, 3, 1),
        Status::Error { description } => {
            if !description.is_empty() {
                wire::put_bytes_field(out, 2, description.as_bytes());
            }
            wire::put_varint_field(out, 3, 2);
        }
    }
    end_len_field(out, mark);
    let mut flags = u32::from(ctx.trace_flags().to_u8()) | HAS_IS_REMOTE;
    if span.parent_span_is_remote {
        flags |= IS_REMOTE;
    }
    wire::put_fixed32_field(out, 16, flags);
    meta
}

/// Writes a `KeyValue` as field `number` (key omitted when empty, as prost does).
pub(crate) fn write_key_value(out: &mut Vec<u8>, number: u32, key: &str, value: &Value) {
    let mark = begin_len_field(out, number, 1);
    if !key.is_empty() {
        wire::put_bytes_field(out, 1, key.as_bytes());
    }
    let value_mark = begin_len_field(out, 2, 1);
    write_any_value(out, value);
    end_len_field(out, value_mark);
    end_len_field(out, mark);
}

/// Writes the body of an `AnyValue`.
pub(crate) fn write_any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => wire::put_varint_field(out, 2, u64::from(*b)),
        Value::I64(i) => wire::put_varint_field(out, 3, *i as u64),
        Value::F64(f) => wire::put_fixed64_field(out, 4, f.to_bits()),
        Value::String(s) => wire::put_bytes_field(out, 1, s.as_str().as_bytes()),
        Value::Array(array) => {
            let mark = begin_len_field(out, 5, 1);
            match array {
                Array::Bool(values) => {
                    for v in values {
                        write_array_element(out, |out| {
                            wire::put_varint_field(out, 2, u64::from(*v));
                        });
                    }
                }
                Array::I64(values) => {
                    for v in values {
                        write_array_element(out, |out| wire::put_varint_field(out, 3, *v as u64));
                    }
                }
                Array::F64(values) => {
                    for v in values {
                        write_array_element(out, |out| {
                            wire::put_fixed64_field(out, 4, v.to_bits());
                        });
                    }
                }
                Array::String(values) => {
                    for v in values {
                        write_array_element(out, |out| {
                            wire::put_bytes_field(out, 1, v.as_str().as_bytes());
                        });
                    }
                }
                // A future array type: an empty array is the closest faithful encoding.
                _ => {}
            }
            end_len_field(out, mark);
        }
        // A future value type: leave the AnyValue empty.
        _ => {}
    }
}

fn write_array_element(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let mark = begin_len_field(out, 1, 1);
    body(out);
    end_len_field(out, mark);
}
