//! Indexing: one validating pass over an `ExportTraceServiceRequest`'s bytes that records
//! where every `ResourceSpans`, `ScopeSpans` and `Span` is ([`Index`]), with the span field
//! reader the hot paths share ([`SpanFields`]).

use crate::error::DecodeError;
use crate::schema::{self, Msg};
use crate::wire::{self, Value};

/// One `ResourceSpans`: where its header fields are and which scopes it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResourceEntry {
    /// Range in [`Index::resource_extras`] of the byte ranges of every field except
    /// `scope_spans` (resource, schema_url, unknown fields).
    pub(crate) extras: [u32; 2],
    /// Range in [`Index::scopes`].
    pub(crate) scopes: [u32; 2],
}

/// One `ScopeSpans`: where its header fields are, its resource and its spans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScopeEntry {
    /// Range in [`Index::scope_extras`] of the byte ranges of every field except `spans`.
    pub(crate) extras: [u32; 2],
    pub(crate) resource: u32,
    /// Range in [`Index::spans`].
    pub(crate) spans: [u32; 2],
}

/// One `Span` field: `start..end` is the whole field (tag and length included), `body..end`
/// the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanEntry {
    pub(crate) start: u32,
    pub(crate) body: u32,
    pub(crate) end: u32,
    pub(crate) scope: u32,
    pub(crate) meta: SpanMeta,
}

/// Where a span's name and attributes are, relative to the span body. Found while
/// validating, so the hottest accessors need no scan; byte-copied spans keep it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SpanMeta {
    /// Body of the last `name` field.
    pub(crate) name: [u32; 2],
    /// From the start of the first to the end of the last `attributes` field (`[0, 0]`
    /// when there is none).
    pub(crate) attrs: [u32; 2],
}

impl SpanMeta {
    #[inline]
    pub(crate) fn note(&mut self, field: &wire::Field<'_>) {
        match (field.number, field.value) {
            (5, Value::Len(_)) => self.note_name(field),
            (9, Value::Len(_)) => self.note_attribute(field),
            _ => {}
        }
    }

    /// Notes a `name` field.
    #[inline(always)]
    fn note_name(&mut self, field: &wire::Field<'_>) {
        self.name = [field.body_start() as u32, field.end as u32];
    }

    /// Notes an `attributes` field.
    #[inline(always)]
    fn note_attribute(&mut self, field: &wire::Field<'_>) {
        if self.attrs[1] == 0 {
            self.attrs[0] = field.start as u32;
        }
        self.attrs[1] = field.end as u32;
    }

    /// Scans a (valid) span body.
    pub(crate) fn scan(body: &[u8]) -> SpanMeta {
        let mut meta = SpanMeta::default();
        for field in wire::Fields::new(body) {
            meta.note(&field);
        }
        meta
    }
}

/// Validates a span body found at byte `base` and locates its name and attributes.
///
/// Each field is first read by [`span_field_fast`] and checked by [`check_span_field`];
/// whatever those do not accept goes through the general reader and
/// [`schema::check_field`], which accepts or rejects it exactly as for any other message
/// (and says what is wrong and where).
fn index_span(buf: &[u8], base: usize) -> Result<SpanMeta, DecodeError> {
    let mut meta = SpanMeta::default();
    let mut pos = 0;
    while pos < buf.len() {
        if schema::fast_paths()
            && let Some(field) = span_field_fast(buf, pos)
            && check_span_field(&field, base, &mut meta)?
        {
            pos = field.end;
            continue;
        }
        match wire::next_field(buf, &mut pos) {
            Ok(Some(field)) => {
                schema::check_field(Msg::Span, &field, base, 3)?;
                meta.note(&field);
            }
            Ok(None) => break,
            Err((e, at)) => return Err(DecodeError::from_wire(e, Msg::Span.name(), base + at)),
        }
    }
    Ok(meta)
}

/// Reads the span field at `pos` when it has one of the shapes encoders write: the
/// one-byte tag of a known `Span` field with its declared wire type (or the two-byte tag
/// of `flags`), then a well-formed varint, the fixed bytes, or a one- or two-byte length
/// and the whole body. Returns `None` for anything else (unknown fields, other wire types,
/// longer lengths, truncated or malformed bytes), which callers hand to
/// [`wire::next_field`]; where both read a field they read the same field.
///
/// The span reader of the hot paths: [`TraceRequest::parse`](crate::TraceRequest::parse)
/// validates spans through it, [`SpanView::head`](crate::SpanView::head),
/// [`SpanView::events`](crate::SpanView::events) and
/// [`SpanView::links`](crate::SpanView::links) read them through it ([`SpanFields`]). Each
/// tag gives its field number as a constant, so that once inlined a caller's match on the
/// number folds into the match on the tag (computing `tag >> 3` instead cost parse 8 % more
/// instructions).
#[inline(always)]
fn span_field_fast(buf: &[u8], pos: usize) -> Option<wire::Field<'_>> {
    let (&tag, rest) = buf.get(pos..)?.split_first()?;
    let fixed64 = |number| {
        let value = u64::from_le_bytes(*rest.first_chunk()?);
        Some((number, Value::I64(value), pos + 9))
    };
    let varint = |number| {
        let (value, n) = wire::varint_prefix(rest)?;
        Some((number, Value::Varint(value), pos + 1 + n))
    };
    let len = |number| {
        let (len, n) = wire::short_len(rest)?;
        let body = rest.get(n..n + len)?;
        Some((number, Value::Len(body), pos + 1 + n + len))
    };
    let (number, value, end) = match tag {
        0x0a => len(1)?,     // trace_id
        0x12 => len(2)?,     // span_id
        0x1a => len(3)?,     // trace_state
        0x22 => len(4)?,     // parent_span_id
        0x2a => len(5)?,     // name
        0x30 => varint(6)?,  // kind
        0x39 => fixed64(7)?, // start_time_unix_nano
        0x41 => fixed64(8)?, // end_time_unix_nano
        0x4a => len(9)?,     // attributes
        0x50 => varint(10)?, // dropped_attributes_count
        0x5a => len(11)?,    // events
        0x60 => varint(12)?, // dropped_events_count
        0x6a => len(13)?,    // links
        0x70 => varint(14)?, // dropped_links_count
        0x7a => len(15)?,    // status
        // flags (field 16, fixed32): tag bytes 0x85 0x01.
        0x85 => match rest {
            [0x01, a, b, c, d, ..] => {
                let value = Value::I32(u32::from_le_bytes([*a, *b, *c, *d]));
                (16, value, pos + 6)
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(wire::Field {
        number,
        value,
        start: pos,
        end,
    })
}

/// The fields of a span body in wire order, each read by [`span_field_fast`] where it can
/// and by the general reader elsewhere. Like [`wire::Fields`], stops at the first field
/// that does not read (a parsed request has none).
#[derive(Debug, Clone)]
pub(crate) struct SpanFields<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> SpanFields<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        SpanFields { body, pos: 0 }
    }
}

impl<'a> Iterator for SpanFields<'a> {
    type Item = wire::Field<'a>;

    #[inline(always)]
    fn next(&mut self) -> Option<wire::Field<'a>> {
        if self.pos >= self.body.len() {
            return None;
        }
        if let Some(field) = span_field_fast(self.body, self.pos) {
            self.pos = field.end;
            return Some(field);
        }
        match wire::next_field(self.body, &mut self.pos) {
            Ok(Some(field)) => Some(field),
            Ok(None) | Err(_) => {
                self.pos = self.body.len();
                None
            }
        }
    }
}

/// Checks a field [`span_field_fast`] read from a span body found at byte `base` as
/// [`schema::check_field`] would, and notes it in `meta` when it passes: UTF-8 for
/// strings, the simple attribute shape ([`schema::simple_key_value`]) for attributes, a
/// full validation of events, links and status (same body, offset and depth); ids and
/// scalars need nothing more. `Ok(false)` leaves the field to the general path, which
/// accepts it or says what is wrong. Since the tag fixed the field number and wire type,
/// accepting here is the decision the general path makes.
#[inline(always)]
fn check_span_field(
    field: &wire::Field<'_>,
    base: usize,
    meta: &mut SpanMeta,
) -> Result<bool, DecodeError> {
    let Value::Len(body) = field.value else {
        return Ok(true);
    };
    let inner = match field.number {
        3 => return Ok(wire::is_utf8(body)),
        5 => {
            let accepted = wire::is_utf8(body);
            if accepted {
                meta.note_name(field);
            }
            return Ok(accepted);
        }
        9 => {
            let accepted = schema::simple_key_value(body);
            if accepted {
                meta.note_attribute(field);
            }
            return Ok(accepted);
        }
        11 => Msg::Event,
        13 => Msg::Link,
        15 => Msg::Status,
        _ => return Ok(true),
    };
    schema::validate(inner, body, base + field.body_start(), 4)?;
    Ok(true)
}

/// Offsets of everything a splice needs, in flat vectors of `u32`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Index {
    pub(crate) resources: Vec<ResourceEntry>,
    pub(crate) scopes: Vec<ScopeEntry>,
    pub(crate) spans: Vec<SpanEntry>,
    pub(crate) resource_extras: Vec<[u32; 2]>,
    pub(crate) scope_extras: Vec<[u32; 2]>,
}

fn push_extra(extras: &mut Vec<[u32; 2]>, first: usize, start: usize, end: usize) {
    if extras.len() > first
        && let Some(last) = extras.last_mut()
        && last[1] as usize == start
    {
        last[1] = end as u32;
        return;
    }
    extras.push([start as u32, end as u32]);
}

impl Index {
    pub(super) fn index_request(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        let mut pos = 0;
        loop {
            let field = match wire::next_field(buf, &mut pos) {
                Ok(Some(field)) => field,
                Ok(None) => return Ok(()),
                Err((e, at)) => return Err(DecodeError::from_wire(e, Msg::Request.name(), at)),
            };
            match (field.number, field.value) {
                (1, Value::Len(body)) => self.index_resource_spans(body, field.body_start())?,
                // Unknown request-level fields are validated but not kept by splices.
                _ => schema::check_field(Msg::Request, &field, 0, 0)?,
            }
        }
    }

    fn index_resource_spans(&mut self, buf: &[u8], base: usize) -> Result<(), DecodeError> {
        let r = self.resources.len() as u32;
        let extras_first = self.resource_extras.len();
        let scopes_first = self.scopes.len();
        let mut pos = 0;
        loop {
            let field = match wire::next_field(buf, &mut pos) {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err((e, at)) => {
                    return Err(DecodeError::from_wire(
                        e,
                        Msg::ResourceSpans.name(),
                        base + at,
                    ));
                }
            };
            match (field.number, field.value) {
                (2, Value::Len(body)) => {
                    self.index_scope_spans(body, base + field.body_start(), r)?;
                }
                _ => {
                    schema::check_field(Msg::ResourceSpans, &field, base, 1)?;
                    push_extra(
                        &mut self.resource_extras,
                        extras_first,
                        base + field.start,
                        base + field.end,
                    );
                }
            }
        }
        self.resources.push(ResourceEntry {
            extras: [extras_first as u32, self.resource_extras.len() as u32],
            scopes: [scopes_first as u32, self.scopes.len() as u32],
        });
        Ok(())
    }

    fn index_scope_spans(&mut self, buf: &[u8], base: usize, r: u32) -> Result<(), DecodeError> {
        let s = self.scopes.len() as u32;
        let extras_first = self.scope_extras.len();
        let spans_first = self.spans.len();
        let mut pos = 0;
        loop {
            let field = match wire::next_field(buf, &mut pos) {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err((e, at)) => {
                    return Err(DecodeError::from_wire(e, Msg::ScopeSpans.name(), base + at));
                }
            };
            match (field.number, field.value) {
                (2, Value::Len(body)) => {
                    let body_at = base + field.body_start();
                    let meta = index_span(body, body_at)?;
                    self.spans.push(SpanEntry {
                        start: (base + field.start) as u32,
                        body: body_at as u32,
                        end: (base + field.end) as u32,
                        scope: s,
                        meta,
                    });
                }
                _ => {
                    schema::check_field(Msg::ScopeSpans, &field, base, 2)?;
                    push_extra(
                        &mut self.scope_extras,
                        extras_first,
                        base + field.start,
                        base + field.end,
                    );
                }
            }
        }
        self.scopes.push(ScopeEntry {
            extras: [extras_first as u32, self.scope_extras.len() as u32],
            resource: r,
            spans: [spans_first as u32, self.spans.len() as u32],
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;

    use crate::TraceRequest;

    type Outcome = Result<Vec<(u32, u32, u32, SpanMeta)>, DecodeError>;

    fn outcome(bytes: &[u8]) -> Outcome {
        TraceRequest::parse(Bytes::copy_from_slice(bytes)).map(|r| {
            r.index()
                .spans
                .iter()
                .map(|e| (e.start, e.body, e.end, e.meta))
                .collect()
        })
    }

    fn general_outcome(bytes: &[u8]) -> Outcome {
        schema::GENERAL_ONLY.with(|g| g.set(true));
        let out = outcome(bytes);
        schema::GENERAL_ONLY.with(|g| g.set(false));
        out
    }

    /// The inline fast paths must accept, index and reject (with the same error, message,
    /// field and offset) exactly like the general field-by-field path.
    #[test]
    fn fast_paths_decide_and_report_like_the_general_path() {
        let spans = crate::testing::span_batch(12, 99);
        let seed = crate::Encoder::new()
            .encode(&spans, &crate::testing::resource())
            .into_bytes();
        let mut rng = crate::testing::Rng::new(11);
        let mut rejected = 0;
        for i in 0..3000 {
            let mut data = seed.to_vec();
            if i > 0 {
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(data.len() as u64) as usize;
                    match rng.below(3) {
                        0 => data[at] ^= 1 << rng.below(8),
                        1 => data[at] = rng.next_u64() as u8,
                        _ => data.truncate(at),
                    }
                    if data.is_empty() {
                        break;
                    }
                }
            }
            let fast = outcome(&data);
            assert_eq!(fast, general_outcome(&data), "mutation {i}");
            rejected += usize::from(fast.is_err());
        }
        assert!(rejected > 100, "{rejected}");
    }

    #[test]
    fn errors_inside_events_and_attributes_are_located() {
        // span { events { name: <invalid utf-8> } }
        let bad = [
            0x0a, 0x0b, 0x12, 0x09, 0x12, 0x07, 0x5a, 0x05, 0x12, 0x03, b'a', 0xff, b'b',
        ];
        let err = TraceRequest::parse(Bytes::copy_from_slice(&bad)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid utf-8 in Span.Event.name at byte 10"
        );
        assert_eq!(Err(err), general_outcome(&bad));
        // span { attributes { key: "k", value { string_value: <invalid utf-8> } } }
        let bad = [
            0x0a, 0x0e, 0x12, 0x0c, 0x12, 0x0a, 0x4a, 0x08, 0x0a, 0x01, b'k', 0x12, 0x03, 0x0a,
            0x01, 0xc3,
        ];
        let err = TraceRequest::parse(Bytes::copy_from_slice(&bad)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid utf-8 in AnyValue.string_value at byte 15"
        );
        assert_eq!(Err(err), general_outcome(&bad));
    }
}
