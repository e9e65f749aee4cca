//! Reshaping: [`TraceRequest::select`], [`select_indices`](TraceRequest::select_indices),
//! [`split`](TraceRequest::split) and [`merge`](TraceRequest::merge) build new requests by
//! copying byte ranges of old ones into a [`Plan`]; no span is decoded.

use std::collections::HashMap;

use super::TraceRequest;
use super::plan::{Piece, Plan, PlanSpan};
use crate::wire;

impl TraceRequest {
    /// Keeps the spans whose entry in `keep` is `true` (a missing entry counts as `false`),
    /// copying their bytes and re-wrapping them in their `ScopeSpans` and `ResourceSpans`
    /// headers. Scopes and resources left without spans are dropped. Spans are never decoded.
    ///
    /// When every span is kept the request itself is returned.
    pub fn select(&self, keep: &[bool]) -> TraceRequest {
        let n = self.span_count();
        if keep.len() >= n && keep[..n].iter().all(|&k| k) {
            return self.clone();
        }
        let mut plan = Plan::default();
        let mut current = Position::default();
        for (i, entry) in self.index.spans.iter().enumerate() {
            if keep.get(i).copied().unwrap_or(false) {
                current.enter(self, &mut plan, entry.scope);
                plan.push_span(self.span_piece(i, 0));
            }
        }
        plan.assemble(&[&self.bytes])
    }

    /// [`select`](Self::select) by span indices instead of a mask: keeps the spans at
    /// `indices`, which must be strictly ascending (indices at or past
    /// [`span_count`](Self::span_count) are ignored). It costs O(`indices.len()`), where a mask
    /// costs O(`span_count()`), so cutting a batch into many small groups (a Kafka record per
    /// trace) stays linear in the batch.
    ///
    /// ```
    /// let spans = spanflow_otlp::testing::span_batch(3, 1);
    /// let request =
    ///     spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    /// let first_and_last = request.select_indices(&[0, 2]);
    /// assert_eq!(first_and_last.as_bytes(), request.select(&[true, false, true]).as_bytes());
    /// ```
    pub fn select_indices(&self, indices: &[u32]) -> TraceRequest {
        debug_assert!(
            indices.windows(2).all(|w| w[0] < w[1]),
            "select_indices needs strictly ascending indices"
        );
        let n = self.span_count();
        // Ascending: the indices below n come first, and as many of them as there are spans
        // means every span (the same fast path as `select`, so both give the same bytes).
        let kept = indices.partition_point(|&i| (i as usize) < n);
        if kept == n {
            return self.clone();
        }
        let mut plan = Plan::default();
        let mut current = Position::default();
        for &i in &indices[..kept] {
            let i = i as usize;
            // Only out-of-order indices (a broken precondition) can miss here.
            let Some(entry) = self.index.spans.get(i) else {
                continue;
            };
            current.enter(self, &mut plan, entry.scope);
            plan.push_span(self.span_piece(i, 0));
        }
        plan.assemble(&[&self.bytes])
    }

    /// Splits the request into requests of at most `max_spans` spans and at most
    /// `max_bytes` bytes each (0 means no limit), in span order. A span that alone
    /// exceeds `max_bytes` travels alone. Spans are never decoded.
    pub fn split(&self, max_spans: usize, max_bytes: usize) -> Vec<TraceRequest> {
        let max_spans = if max_spans == 0 {
            usize::MAX
        } else {
            max_spans
        };
        let max_bytes = if max_bytes == 0 {
            usize::MAX
        } else {
            max_bytes
        };
        let n = self.span_count();
        if n == 0 {
            return Vec::new();
        }
        if n <= max_spans && self.encoded_len() <= max_bytes {
            return vec![self.clone()];
        }
        let header_len =
            |ranges: &[[u32; 2]]| -> usize { ranges.iter().map(|r| (r[1] - r[0]) as usize).sum() };
        let mut out = Vec::new();
        let mut plan = Plan::default();
        let mut current = Position::default();
        let mut size = SizeTracker::default();
        for (i, entry) in self.index.spans.iter().enumerate() {
            let span_len = (entry.end - entry.start) as usize;
            let scope = &self.index.scopes[entry.scope as usize];
            let new_resource = current.resource != Some(scope.resource);
            let new_scope = current.scope != Some(entry.scope);
            let resource_header = header_len(
                &self.index.resource_extras[self.index.resources[scope.resource as usize].extras[0]
                    as usize
                    ..self.index.resources[scope.resource as usize].extras[1] as usize],
            );
            let scope_header = header_len(
                &self.index.scope_extras[scope.extras[0] as usize..scope.extras[1] as usize],
            );
            let grown = size.with_span(
                new_resource,
                new_scope,
                resource_header,
                scope_header,
                span_len,
            );
            if size.spans > 0 && (size.spans + 1 > max_spans || grown.total() > max_bytes) {
                out.push(std::mem::take(&mut plan).assemble(&[&self.bytes]));
                current = Position::default();
                size = SizeTracker::default().with_span(
                    true,
                    true,
                    resource_header,
                    scope_header,
                    span_len,
                );
            } else {
                size = grown;
            }
            current.enter(self, &mut plan, entry.scope);
            plan.push_span(self.span_piece(i, 0));
        }
        if size.spans > 0 {
            out.push(plan.assemble(&[&self.bytes]));
        }
        out
    }

    /// Joins requests into one. `ResourceSpans` whose headers (resource, schema URL,
    /// unknown fields) are byte-identical are joined, and within them `ScopeSpans` with
    /// byte-identical headers, in order of first appearance; spans keep their order.
    /// So `merge(&request.split(..))` rebuilds `request` when its resources and scopes are
    /// distinct. Spans are never decoded. The result must stay under 4 GiB (the index uses
    /// 32-bit offsets); a larger merge yields an empty request.
    pub fn merge(parts: &[TraceRequest]) -> TraceRequest {
        match parts {
            [] => return TraceRequest::empty(),
            [one] => return one.clone(),
            _ => {}
        }
        struct OutScope {
            key: Vec<u8>,
            header: Vec<Piece>,
            spans: Vec<PlanSpan>,
        }
        struct OutResource {
            header: Vec<Piece>,
            scopes: Vec<OutScope>,
        }
        let mut resources: Vec<OutResource> = Vec::new();
        let mut by_key: HashMap<Vec<u8>, usize> = HashMap::new();
        for (p, part) in parts.iter().enumerate() {
            let src = p as u32;
            let index = part.index();
            for (r, res) in index.resources.iter().enumerate() {
                let header: Vec<Piece> = part.resource_header(r).map(|x| x.with_src(src)).collect();
                let key = concat_pieces(&header, &part.bytes);
                let ro = *by_key.entry(key).or_insert_with(|| {
                    resources.push(OutResource {
                        header,
                        scopes: Vec::new(),
                    });
                    resources.len() - 1
                });
                for s in res.scopes[0] as usize..res.scopes[1] as usize {
                    let scope = &index.scopes[s];
                    if scope.spans[0] == scope.spans[1] {
                        continue;
                    }
                    let header: Vec<Piece> =
                        part.scope_header(s).map(|x| x.with_src(src)).collect();
                    let key = concat_pieces(&header, &part.bytes);
                    let scopes = &mut resources[ro].scopes;
                    let so = match scopes.iter().position(|x| x.key == key) {
                        Some(so) => so,
                        None => {
                            scopes.push(OutScope {
                                key,
                                header,
                                spans: Vec::new(),
                            });
                            scopes.len() - 1
                        }
                    };
                    let spans = &mut scopes[so].spans;
                    for i in scope.spans[0] as usize..scope.spans[1] as usize {
                        spans.push(part.span_piece(i, src));
                    }
                }
            }
        }
        let mut plan = Plan::default();
        for res in resources {
            if res.scopes.is_empty() {
                continue;
            }
            plan.open_resource(res.header);
            for scope in res.scopes {
                plan.open_scope(scope.header);
                for span in scope.spans {
                    plan.push_span(span);
                }
            }
        }
        let bufs: Vec<&[u8]> = parts.iter().map(|p| &p.bytes[..]).collect();
        plan.assemble(&bufs)
    }
}

fn concat_pieces(pieces: &[Piece], buf: &[u8]) -> Vec<u8> {
    let mut key = Vec::new();
    for p in pieces {
        key.extend_from_slice(buf.get(p.start as usize..p.end as usize).unwrap_or(&[]));
    }
    key
}

/// Which resource and scope a plan under construction is currently filling.
#[derive(Debug, Default, Clone, Copy)]
struct Position {
    resource: Option<u32>,
    scope: Option<u32>,
}

impl Position {
    /// Opens scope `s` (and its resource) of `request` in `plan` unless it is already open.
    fn enter(&mut self, request: &TraceRequest, plan: &mut Plan, s: u32) {
        if self.scope == Some(s) {
            return;
        }
        let r = request.index.scopes[s as usize].resource;
        if self.resource != Some(r) {
            plan.open_resource(request.resource_header(r as usize));
            self.resource = Some(r);
        }
        plan.open_scope(request.scope_header(s as usize));
        self.scope = Some(s);
    }
}

/// Exact encoded size of a chunk being filled by [`TraceRequest::split`].
#[derive(Debug, Default, Clone, Copy)]
struct SizeTracker {
    /// Bytes of the `ResourceSpans` fields already closed.
    closed: usize,
    /// Body bytes of the open resource, excluding the open scope.
    resource_body: usize,
    /// Body bytes of the open scope.
    scope_body: usize,
    open: bool,
    spans: usize,
}

impl SizeTracker {
    fn with_span(
        self,
        new_resource: bool,
        new_scope: bool,
        resource_header: usize,
        scope_header: usize,
        span_len: usize,
    ) -> SizeTracker {
        let mut next = self;
        if !self.open || new_resource {
            if self.open {
                next.closed = self.total();
            }
            next.resource_body = resource_header;
            next.scope_body = scope_header;
        } else if new_scope {
            next.resource_body += wire::len_field_size(self.scope_body);
            next.scope_body = scope_header;
        }
        next.open = true;
        next.scope_body += span_len;
        next.spans += 1;
        next
    }

    fn total(&self) -> usize {
        if !self.open {
            return self.closed;
        }
        let resource_body = self.resource_body + wire::len_field_size(self.scope_body);
        self.closed + wire::len_field_size(resource_body)
    }
}
