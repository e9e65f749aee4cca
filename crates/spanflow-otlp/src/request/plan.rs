//! Assembly: a [`Plan`] of byte ranges taken from one or more requests (resource and scope
//! headers, whole `Span` fields), written out as a new request whose index is built on the
//! way. Every splice (select, split, merge, rewrite) ends here.

use bytes::Bytes;

use super::TraceRequest;
use super::index::{Index, ResourceEntry, ScopeEntry, SpanEntry, SpanMeta};
use crate::wire;

impl TraceRequest {
    /// Byte ranges of resource `r`'s header (every field but `scope_spans`).
    pub(crate) fn resource_header(&self, r: usize) -> impl Iterator<Item = Piece> + '_ {
        let e = self.index.resources[r].extras;
        self.index.resource_extras[e[0] as usize..e[1] as usize]
            .iter()
            .map(|x| Piece::src(0, x[0], x[1]))
    }

    /// Byte ranges of scope `s`'s header (every field but `spans`).
    pub(crate) fn scope_header(&self, s: usize) -> impl Iterator<Item = Piece> + '_ {
        let e = self.index.scopes[s].extras;
        self.index.scope_extras[e[0] as usize..e[1] as usize]
            .iter()
            .map(|x| Piece::src(0, x[0], x[1]))
    }

    pub(crate) fn span_piece(&self, i: usize, src: u32) -> PlanSpan {
        let e = self.index.spans[i];
        PlanSpan {
            piece: Piece::src(src, e.start, e.end),
            body: e.body - e.start,
            meta: e.meta,
        }
    }
}

/// A byte range of one of the buffers handed to [`Plan::assemble`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    pub(crate) src: u32,
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Piece {
    pub(crate) fn src(src: u32, start: u32, end: u32) -> Piece {
        Piece { src, start, end }
    }

    pub(super) fn with_src(self, src: u32) -> Piece {
        Piece { src, ..self }
    }

    fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    fn bytes<'b>(&self, bufs: &[&'b [u8]]) -> &'b [u8] {
        bufs.get(self.src as usize)
            .and_then(|b| b.get(self.start as usize..self.end as usize))
            .unwrap_or(&[])
    }
}

/// A whole `Span` field to copy, the offset of its body inside the field, and its meta.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlanSpan {
    pub(crate) piece: Piece,
    pub(crate) body: u32,
    pub(crate) meta: SpanMeta,
}

#[derive(Debug, Clone, Copy)]
struct PlanResource {
    header: [u32; 2],
    scopes: [u32; 2],
}

#[derive(Debug, Clone, Copy)]
struct PlanScope {
    header: [u32; 2],
    spans: [u32; 2],
}

/// The shape of a request to assemble from byte ranges: resources, each with header
/// pieces and scopes, each with header pieces and whole `Span` fields.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    headers: Vec<Piece>,
    spans: Vec<PlanSpan>,
    scopes: Vec<PlanScope>,
    resources: Vec<PlanResource>,
}

impl Plan {
    pub(crate) fn open_resource(&mut self, header: impl IntoIterator<Item = Piece>) {
        let first = self.headers.len() as u32;
        self.headers.extend(header);
        let n = self.scopes.len() as u32;
        self.resources.push(PlanResource {
            header: [first, self.headers.len() as u32],
            scopes: [n, n],
        });
    }

    pub(crate) fn open_scope(&mut self, header: impl IntoIterator<Item = Piece>) {
        let first = self.headers.len() as u32;
        self.headers.extend(header);
        let n = self.spans.len() as u32;
        self.scopes.push(PlanScope {
            header: [first, self.headers.len() as u32],
            spans: [n, n],
        });
        if let Some(r) = self.resources.last_mut() {
            r.scopes[1] += 1;
        }
    }

    pub(crate) fn push_span(&mut self, span: PlanSpan) {
        self.spans.push(span);
        if let Some(s) = self.scopes.last_mut() {
            s.spans[1] += 1;
        }
    }

    fn header_len(&self, range: [u32; 2]) -> usize {
        self.headers[range[0] as usize..range[1] as usize]
            .iter()
            .map(Piece::len)
            .sum()
    }

    /// The body sizes of every scope and resource, and the size of the whole request: the
    /// length prefixes come before the bodies, so they are known before anything is written.
    fn sizes(&self) -> Sizes {
        let scope_bodies: Vec<usize> = self
            .scopes
            .iter()
            .map(|s| {
                self.header_len(s.header)
                    + self.spans[s.spans[0] as usize..s.spans[1] as usize]
                        .iter()
                        .map(|s| s.piece.len())
                        .sum::<usize>()
            })
            .collect();
        let resource_bodies: Vec<usize> = self
            .resources
            .iter()
            .map(|r| {
                self.header_len(r.header)
                    + scope_bodies[r.scopes[0] as usize..r.scopes[1] as usize]
                        .iter()
                        .map(|&b| wire::len_field_size(b))
                        .sum::<usize>()
            })
            .collect();
        let total = resource_bodies
            .iter()
            .map(|&b| wire::len_field_size(b))
            .sum();
        Sizes {
            scope_bodies,
            resource_bodies,
            total,
        }
    }

    /// Writes the planned request's bytes, telling `recorder` where each part landed.
    pub(crate) fn write(&self, bufs: &[&[u8]], recorder: &mut impl Recorder) -> Vec<u8> {
        self.write_sized(&self.sizes(), bufs, recorder)
    }

    fn write_sized(&self, sizes: &Sizes, bufs: &[&[u8]], recorder: &mut impl Recorder) -> Vec<u8> {
        let mut out = Vec::with_capacity(sizes.total);
        for (res, &resource_body) in self.resources.iter().zip(&sizes.resource_bodies) {
            out.push(wire::TAG_RESOURCE_SPANS);
            wire::put_varint(&mut out, resource_body as u64);
            let header_start = out.len();
            for p in &self.headers[res.header[0] as usize..res.header[1] as usize] {
                out.extend_from_slice(p.bytes(bufs));
            }
            recorder.resource(res.scopes, [header_start, out.len()]);
            let range = res.scopes[0] as usize..res.scopes[1] as usize;
            for (s, (scope, &scope_body)) in (range.clone()).zip(
                self.scopes[range.clone()]
                    .iter()
                    .zip(&sizes.scope_bodies[range]),
            ) {
                out.push(wire::TAG_SCOPE_SPANS);
                wire::put_varint(&mut out, scope_body as u64);
                let header_start = out.len();
                for p in &self.headers[scope.header[0] as usize..scope.header[1] as usize] {
                    out.extend_from_slice(p.bytes(bufs));
                }
                recorder.scope(scope.spans, [header_start, out.len()]);
                for span in &self.spans[scope.spans[0] as usize..scope.spans[1] as usize] {
                    let start = out.len();
                    out.extend_from_slice(span.piece.bytes(bufs));
                    recorder.span(span, s as u32, [start, out.len()]);
                }
            }
            recorder.resource_end(out.len());
        }
        debug_assert_eq!(out.len(), sizes.total);
        out
    }

    /// Writes the planned request and builds its index on the way.
    pub(crate) fn assemble(&self, bufs: &[&[u8]]) -> TraceRequest {
        let sizes = self.sizes();
        if sizes.total > u32::MAX as usize {
            // The index addresses bytes with u32 offsets; a request this large cannot be
            // indexed, so it is not built (only reachable by merging > 4 GiB of parts).
            return TraceRequest::empty();
        }
        let mut indexer = Indexer {
            index: Index {
                resources: Vec::with_capacity(self.resources.len()),
                scopes: Vec::with_capacity(self.scopes.len()),
                spans: Vec::with_capacity(self.spans.len()),
                resource_extras: Vec::with_capacity(self.resources.len()),
                scope_extras: Vec::with_capacity(self.scopes.len()),
            },
        };
        let out = self.write_sized(&sizes, bufs, &mut indexer);
        TraceRequest::from_parts(Bytes::from(out), indexer.index)
    }
}

/// Body sizes computed before writing ([`Plan::sizes`]).
struct Sizes {
    scope_bodies: Vec<usize>,
    resource_bodies: Vec<usize>,
    total: usize,
}

/// Told by [`Plan::write`] where each part of the request landed, in writing order: a
/// resource (after its header), each of its scopes (after their headers) with their spans,
/// then the resource's end. Offsets are into the written bytes.
pub(crate) trait Recorder {
    /// A resource whose scopes are `scopes` (plan numbering); its header fields span `header`.
    fn resource(&mut self, _scopes: [u32; 2], _header: [usize; 2]) {}
    /// A scope of the resource last reported, whose spans are `spans` (plan numbering); its
    /// header fields span `header`.
    fn scope(&mut self, _spans: [u32; 2], _header: [usize; 2]) {}
    /// A whole `Span` field of scope `scope`, written at `at`.
    fn span(&mut self, _span: &PlanSpan, _scope: u32, _at: [usize; 2]) {}
    /// The resource last reported ends at `end`.
    fn resource_end(&mut self, _end: usize) {}
}

/// Builds the written request's index ([`Plan::assemble`]).
struct Indexer {
    index: Index,
}

impl Recorder for Indexer {
    fn resource(&mut self, scopes: [u32; 2], header: [usize; 2]) {
        let extras = push_header(&mut self.index.resource_extras, header);
        self.index.resources.push(ResourceEntry { extras, scopes });
    }

    fn scope(&mut self, spans: [u32; 2], header: [usize; 2]) {
        let extras = push_header(&mut self.index.scope_extras, header);
        let resource = self.index.resources.len() as u32 - 1;
        self.index.scopes.push(ScopeEntry {
            extras,
            resource,
            spans,
        });
    }

    fn span(&mut self, span: &PlanSpan, scope: u32, at: [usize; 2]) {
        let start = at[0] as u32;
        self.index.spans.push(SpanEntry {
            start,
            body: start + span.body,
            end: at[1] as u32,
            scope,
            meta: span.meta,
        });
    }
}

/// Records a header's bytes (all its fields, one range) in `extras` unless it is empty;
/// returns the header's range of `extras` entries.
fn push_header(extras: &mut Vec<[u32; 2]>, header: [usize; 2]) -> [u32; 2] {
    let first = extras.len() as u32;
    if header[1] > header[0] {
        extras.push([header[0] as u32, header[1] as u32]);
    }
    [first, extras.len() as u32]
}
