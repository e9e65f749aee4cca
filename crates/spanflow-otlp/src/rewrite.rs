//! Wire-level edits: drop spans and set or remove attributes of spans and resources by
//! rewriting byte ranges, and the decode path (`edit_span`, `edit_resource`) for
//! anything else.

use opentelemetry::Value;
use prost::Message;

use crate::error::EditError;
use crate::proto::resource::v1::Resource;
use crate::proto::trace::v1::Span;
use crate::request::{Piece, Plan, PlanSpan, SpanMeta, TraceRequest};
use crate::view::{AnyValueView, KeyValueView, SpanView};
use crate::wire::{self, Field, Fields, Value as WireValue, begin_len_field, end_len_field};

/// Field number of `Span.attributes`.
const SPAN_ATTRIBUTES: u32 = 9;
/// Field number of `Resource.attributes`.
const RESOURCE_ATTRIBUTES: u32 = 1;

/// One attribute edit: the key, and for a set the encoded `KeyValue` field to append.
#[derive(Debug, Clone, Copy)]
struct AttrEdit {
    key: [u32; 2],
    /// Range in `AttrPatch::arena` of the whole field to append; `None` for a removal
    /// (or a set overridden by a later edit of the same key).
    field: Option<[u32; 2]>,
}

/// Attribute removals and sets, encoded into one reusable arena (no allocation per edit
/// once warm).
#[derive(Debug, Default, Clone)]
struct AttrPatch {
    arena: Vec<u8>,
    edits: Vec<AttrEdit>,
}

impl AttrPatch {
    fn clear(&mut self) {
        self.arena.clear();
        self.edits.clear();
    }

    fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    fn bytes(&self, r: [u32; 2]) -> &[u8] {
        self.arena.get(r[0] as usize..r[1] as usize).unwrap_or(&[])
    }

    fn touches(&self, key: &str) -> bool {
        self.edits
            .iter()
            .any(|e| self.bytes(e.key) == key.as_bytes())
    }

    /// Records `key` as edited, cancelling any earlier set of it.
    fn push_key(&mut self, key: &[u8]) -> [u32; 2] {
        for e in &mut self.edits {
            if self.arena.get(e.key[0] as usize..e.key[1] as usize) == Some(key) {
                e.field = None;
            }
        }
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(key);
        [start, self.arena.len() as u32]
    }

    fn remove(&mut self, key: &str) {
        let key = self.push_key(key.as_bytes());
        self.edits.push(AttrEdit { key, field: None });
    }

    fn set_with(&mut self, number: u32, key: &str, write_value: impl FnOnce(&mut Vec<u8>)) {
        let key_range = self.push_key(key.as_bytes());
        let start = self.arena.len();
        let mark = begin_len_field(&mut self.arena, number, 1);
        if !key.is_empty() {
            wire::put_bytes_field(&mut self.arena, 1, key.as_bytes());
        }
        let value = begin_len_field(&mut self.arena, 2, 1);
        write_value(&mut self.arena);
        end_len_field(&mut self.arena, value);
        end_len_field(&mut self.arena, mark);
        self.edits.push(AttrEdit {
            key: key_range,
            field: Some([start as u32, self.arena.len() as u32]),
        });
    }

    fn absorb(&mut self, other: &AttrPatch) {
        for e in &other.edits {
            let key = self.push_key(other.bytes(e.key));
            let field = e.field.map(|f| {
                let start = self.arena.len() as u32;
                self.arena.extend_from_slice(other.bytes(f));
                [start, self.arena.len() as u32]
            });
            self.edits.push(AttrEdit { key, field });
        }
    }

    /// Copies the fields of `body`, leaving out attributes (field `number`) this patch
    /// edits. Returns where the copied span fields landed, relative to `out_body` (only
    /// meaningful when `body` is a span).
    fn copy_filtered(
        &self,
        body: &[u8],
        number: u32,
        out: &mut Vec<u8>,
        out_body: usize,
    ) -> SpanMeta {
        let mut meta = SpanMeta::default();
        for f in Fields::new(body) {
            if f.number == number
                && let WireValue::Len(kv) = f.value
                && self.touches(KeyValueView::key_of(kv))
            {
                continue;
            }
            let at = out.len() - out_body;
            meta.note(&Field {
                start: at,
                end: at + (f.end - f.start),
                ..f
            });
            out.extend_from_slice(body.get(f.start..f.end).unwrap_or(&[]));
        }
        meta
    }

    /// Appends the attributes this patch sets.
    fn append_sets(&self, out: &mut Vec<u8>) {
        for e in &self.edits {
            if let Some(f) = e.field {
                out.extend_from_slice(self.bytes(f));
            }
        }
    }
}

/// Writes the body of an `AnyValue` from a borrowed view (arrays and lists are copied as
/// bytes).
fn write_view(out: &mut Vec<u8>, value: &AnyValueView<'_>) {
    match *value {
        AnyValueView::Empty => {}
        AnyValueView::String(s) => wire::put_bytes_field(out, 1, s.as_bytes()),
        AnyValueView::Bool(b) => wire::put_varint_field(out, 2, u64::from(b)),
        AnyValueView::Int(i) => wire::put_varint_field(out, 3, i as u64),
        AnyValueView::Double(d) => wire::put_fixed64_field(out, 4, d.to_bits()),
        AnyValueView::Bytes(b) => wire::put_bytes_field(out, 7, b),
        AnyValueView::Array(a) => wire::put_bytes_field(out, 5, a.body),
        AnyValueView::KvList(l) => wire::put_bytes_field(out, 6, l.body),
    }
}

/// Changes to one span, filled in by the closure given to [`TraceRequest::rewrite`].
///
/// Setting an attribute removes every attribute with that key and appends the new one
/// at the end of the span; removing drops every attribute with the key. The span's other
/// bytes, unknown fields included, are copied unchanged.
#[derive(Debug, Default)]
pub struct SpanPatch {
    dropped: bool,
    attrs: AttrPatch,
    resource: ResourcePatch,
}

impl SpanPatch {
    fn clear(&mut self) {
        self.dropped = false;
        self.attrs.clear();
        self.resource.attrs.clear();
    }

    /// Removes the span from the output.
    pub fn drop_span(&mut self) {
        self.dropped = true;
    }

    /// Whether [`drop_span`](Self::drop_span) was called.
    pub fn is_dropped(&self) -> bool {
        self.dropped
    }

    /// Removes every attribute named `key`.
    pub fn remove_attribute(&mut self, key: &str) {
        self.attrs.remove(key);
    }

    /// Sets attribute `key` to `value` (replacing any attribute with that key).
    pub fn set_attribute(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        self.attrs.set_with(SPAN_ATTRIBUTES, key, |out| {
            crate::encode::write_any_value(out, &value);
        });
    }

    /// Sets attribute `key` to a value borrowed from a view (copied as bytes).
    pub fn set_attribute_view(&mut self, key: &str, value: AnyValueView<'_>) {
        self.attrs
            .set_with(SPAN_ATTRIBUTES, key, |out| write_view(out, &value));
    }

    /// Edits of the span's resource. They are collected from every span of the resource,
    /// in span order, and applied once to the resource.
    pub fn resource(&mut self) -> &mut ResourcePatch {
        &mut self.resource
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.dropped && self.attrs.is_empty() && self.resource.attrs.is_empty()
    }
}

/// Changes to a resource's attributes (see [`SpanPatch::resource`]).
#[derive(Debug, Default, Clone)]
pub struct ResourcePatch {
    attrs: AttrPatch,
}

impl ResourcePatch {
    /// Removes every resource attribute named `key`.
    pub fn remove_attribute(&mut self, key: &str) {
        self.attrs.remove(key);
    }

    /// Sets resource attribute `key` to `value` (replacing any attribute with that key).
    pub fn set_attribute(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        self.attrs.set_with(RESOURCE_ATTRIBUTES, key, |out| {
            crate::encode::write_any_value(out, &value);
        });
    }

    /// Sets resource attribute `key` to a value borrowed from a view.
    pub fn set_attribute_view(&mut self, key: &str, value: AnyValueView<'_>) {
        self.attrs
            .set_with(RESOURCE_ATTRIBUTES, key, |out| write_view(out, &value));
    }
}

/// A span of the output: its index in the source and, if rewritten, its bytes in scratch
/// (`[start, end, body offset]`).
type OutSpan = (u32, Option<([u32; 3], SpanMeta)>);

impl TraceRequest {
    /// Rewrites spans at the wire level: `f` sees every span and may drop it, set or remove
    /// its attributes, or set or remove attributes of its resource. Untouched spans are
    /// copied as byte ranges and edited spans are re-spliced without decoding them. If
    /// nothing changes, the request itself is returned.
    ///
    /// ```
    /// use spanflow_otlp::{AnyValueView, Encoder};
    ///
    /// let spans = spanflow_otlp::testing::span_batch(6, 2);
    /// let request = Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    /// let out = request.rewrite(|span, patch| {
    ///     if span.index() == 0 {
    ///         patch.drop_span();
    ///     }
    ///     patch.remove_attribute("user.id");
    ///     patch.set_attribute("deployment", "blue");
    ///     patch.resource().remove_attribute("host.name");
    /// });
    /// assert_eq!(out.span_count(), 5);
    /// for span in out.spans() {
    ///     assert!(span.attribute("user.id").is_none());
    ///     assert_eq!(span.attribute("deployment"), Some(AnyValueView::String("blue")));
    ///     assert!(span.resource().attribute("host.name").is_none());
    /// }
    /// ```
    pub fn rewrite(&self, mut f: impl FnMut(SpanView<'_>, &mut SpanPatch)) -> TraceRequest {
        let index = self.index();
        let mut patch = SpanPatch::default();
        let mut resource_patches: Vec<Option<ResourcePatch>> =
            (0..index.resources.len()).map(|_| None).collect();
        let mut scratch = Vec::new();
        let mut out: Vec<OutSpan> = Vec::with_capacity(index.spans.len());
        let mut changed = false;
        for i in 0..index.spans.len() {
            patch.clear();
            let view = SpanView::new(self, i);
            f(view, &mut patch);
            if patch.is_empty() {
                out.push((i as u32, None));
                continue;
            }
            changed = true;
            let r = index.scopes[index.spans[i].scope as usize].resource as usize;
            if !patch.resource.attrs.is_empty() {
                resource_patches[r]
                    .get_or_insert_with(ResourcePatch::default)
                    .attrs
                    .absorb(&patch.resource.attrs);
            }
            if patch.dropped {
                continue;
            }
            if patch.attrs.is_empty() {
                out.push((i as u32, None));
                continue;
            }
            let start = scratch.len();
            let mark = begin_len_field(&mut scratch, 2, 2);
            let body_guess = scratch.len();
            let mut meta =
                patch
                    .attrs
                    .copy_filtered(view.raw(), SPAN_ATTRIBUTES, &mut scratch, body_guess);
            let sets = scratch.len() - body_guess;
            patch.attrs.append_sets(&mut scratch);
            if scratch.len() - body_guess > sets {
                if meta.attrs[1] == 0 {
                    meta.attrs[0] = sets as u32;
                }
                meta.attrs[1] = (scratch.len() - body_guess) as u32;
            }
            // The body moves as a whole, so offsets relative to it stay right.
            let body = end_len_field(&mut scratch, mark);
            out.push((
                i as u32,
                Some((
                    [start as u32, scratch.len() as u32, (body - start) as u32],
                    meta,
                )),
            ));
        }
        if !changed {
            return self.clone();
        }
        let mut headers: Vec<Option<[u32; 2]>> = vec![None; index.resources.len()];
        for (r, p) in resource_patches.iter().enumerate() {
            if let Some(p) = p {
                let start = scratch.len();
                self.write_resource_header(
                    r,
                    &mut scratch,
                    |body, out| {
                        p.attrs.copy_filtered(body, RESOURCE_ATTRIBUTES, out, 0);
                    },
                    |out| p.attrs.append_sets(out),
                );
                headers[r] = Some([start as u32, scratch.len() as u32]);
            }
        }
        self.rebuild(&out, &headers, &scratch)
    }

    /// Decodes span `i` into opentelemetry-proto's struct, lets `f` change it, and splices
    /// the re-encoded span in place of the original. Unknown fields of that span are lost
    /// (prost does not keep them); every other span is copied as bytes.
    ///
    /// ```
    /// let spans = spanflow_otlp::testing::span_batch(3, 2);
    /// let request = spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    /// let renamed = request.edit_span(1, |span| span.name = "renamed".into())?;
    /// assert_eq!(renamed.span(1).unwrap().name(), "renamed");
    /// assert_eq!(renamed.span(0).unwrap().raw(), request.span(0).unwrap().raw());
    /// # Ok::<(), spanflow_otlp::EditError>(())
    /// ```
    pub fn edit_span(
        &self,
        i: usize,
        f: impl FnOnce(&mut Span),
    ) -> Result<TraceRequest, EditError> {
        let mut f = Some(f);
        self.edit_spans(&[i], |_, span| {
            if let Some(f) = f.take() {
                f(span);
            }
        })
    }

    /// [`edit_span`](Self::edit_span) for several spans in one pass: each span whose index is
    /// in `indices` is decoded, changed by `f` (called once per distinct index, in ascending
    /// order, with the index), re-encoded and spliced in; every other span is copied as bytes.
    /// The cost is one copy of the request plus the edited spans, however many they are.
    ///
    /// Fails without changing anything if an index is out of range or a span does not decode.
    ///
    /// ```
    /// let spans = spanflow_otlp::testing::span_batch(4, 2);
    /// let request = spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    /// let out = request.edit_spans(&[3, 1], |i, span| span.name = format!("edited {i}"))?;
    /// assert_eq!(out.span(1).unwrap().name(), "edited 1");
    /// assert_eq!(out.span(3).unwrap().name(), "edited 3");
    /// assert_eq!(out.span(0).unwrap().raw(), request.span(0).unwrap().raw());
    /// # Ok::<(), spanflow_otlp::EditError>(())
    /// ```
    pub fn edit_spans(
        &self,
        indices: &[usize],
        mut f: impl FnMut(usize, &mut Span),
    ) -> Result<TraceRequest, EditError> {
        let len = self.span_count();
        let mut todo = indices.to_vec();
        todo.sort_unstable();
        todo.dedup();
        if let Some(&index) = todo.last()
            && index >= len
        {
            return Err(EditError::OutOfRange { index, len });
        }
        let mut scratch = Vec::new();
        let mut out: Vec<OutSpan> = (0..len as u32).map(|k| (k, None)).collect();
        for i in todo {
            let view = self
                .span(i)
                .ok_or(EditError::OutOfRange { index: i, len })?;
            let mut span = Span::decode(view.raw())?;
            f(i, &mut span);
            let encoded = span.encode_to_vec();
            let start = scratch.len();
            wire::put_bytes_field(&mut scratch, 2, &encoded);
            let end = scratch.len();
            // The body starts after the field's tag and length.
            let body = (end - start - encoded.len()) as u32;
            out[i].1 = Some(([start as u32, end as u32, body], SpanMeta::scan(&encoded)));
        }
        Ok(self.rebuild(&out, &vec![None; self.resource_count()], &scratch))
    }

    /// Decodes resource `r` (of the `r`-th `ResourceSpans`) into opentelemetry-proto's
    /// struct, lets `f` change it, and splices it back; spans are copied as bytes.
    pub fn edit_resource(
        &self,
        r: usize,
        f: impl FnOnce(&mut Resource),
    ) -> Result<TraceRequest, EditError> {
        let len = self.resource_count();
        if r >= len {
            return Err(EditError::OutOfRange { index: r, len });
        }
        let mut resource = Resource::default();
        for piece in self.resource_header(r) {
            let header = self
                .as_bytes()
                .get(piece.start as usize..piece.end as usize)
                .unwrap_or(&[]);
            for field in Fields::new(header) {
                if let (1, WireValue::Len(body)) = (field.number, field.value) {
                    resource.merge(body)?;
                }
            }
        }
        f(&mut resource);
        let encoded = resource.encode_to_vec();
        let mut scratch = Vec::new();
        wire::put_bytes_field(&mut scratch, 1, &encoded);
        for piece in self.resource_header(r) {
            let header = self
                .as_bytes()
                .get(piece.start as usize..piece.end as usize)
                .unwrap_or(&[]);
            for field in Fields::new(header) {
                if field.number != 1 {
                    scratch.extend_from_slice(header.get(field.start..field.end).unwrap_or(&[]));
                }
            }
        }
        let mut headers = vec![None; len];
        headers[r] = Some([0, scratch.len() as u32]);
        let out: Vec<OutSpan> = (0..self.span_count() as u32).map(|k| (k, None)).collect();
        Ok(self.rebuild(&out, &headers, &scratch))
    }

    /// Writes resource `r`'s header with its `Resource` messages merged into one, whose
    /// body is produced by `filter` (per original body) then `append`.
    fn write_resource_header(
        &self,
        r: usize,
        out: &mut Vec<u8>,
        filter: impl Fn(&[u8], &mut Vec<u8>),
        append: impl FnOnce(&mut Vec<u8>),
    ) {
        let bytes = self.as_bytes();
        let mark = begin_len_field(out, 1, 2);
        for piece in self.resource_header(r) {
            let header = bytes
                .get(piece.start as usize..piece.end as usize)
                .unwrap_or(&[]);
            for field in Fields::new(header) {
                if let (1, WireValue::Len(body)) = (field.number, field.value) {
                    filter(body, out);
                }
            }
        }
        append(out);
        end_len_field(out, mark);
        for piece in self.resource_header(r) {
            let header = bytes
                .get(piece.start as usize..piece.end as usize)
                .unwrap_or(&[]);
            for field in Fields::new(header) {
                if field.number != 1 {
                    out.extend_from_slice(header.get(field.start..field.end).unwrap_or(&[]));
                }
            }
        }
    }

    /// Assembles the spans `out` (source spans or scratch replacements) under their
    /// original scopes and resources, with resource headers replaced where `headers` says.
    fn rebuild(
        &self,
        out: &[OutSpan],
        headers: &[Option<[u32; 2]>],
        scratch: &[u8],
    ) -> TraceRequest {
        let index = self.index();
        let mut plan = Plan::default();
        let (mut cur_r, mut cur_s) = (None, None);
        for &(i, replacement) in out {
            let s = index.spans[i as usize].scope;
            if cur_s != Some(s) {
                let r = index.scopes[s as usize].resource;
                if cur_r != Some(r) {
                    match headers.get(r as usize).copied().flatten() {
                        Some([a, b]) => plan.open_resource([Piece::src(1, a, b)]),
                        None => plan.open_resource(self.resource_header(r as usize)),
                    }
                    cur_r = Some(r);
                }
                plan.open_scope(self.scope_header(s as usize));
                cur_s = Some(s);
            }
            match replacement {
                Some(([a, b, body], meta)) => plan.push_span(PlanSpan {
                    piece: Piece::src(1, a, b),
                    body,
                    meta,
                }),
                None => plan.push_span(self.span_piece(i as usize, 0)),
            }
        }
        plan.assemble(&[self.as_bytes(), scratch])
    }
}
