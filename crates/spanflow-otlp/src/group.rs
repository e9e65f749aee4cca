//! [`group_by_trace`]: a request's spans cut into one request per trace id, straight from its
//! bytes. What writing a batch as one Kafka record per trace needs, for a fraction of the cost
//! of [`TraceRequest::parse`](crate::TraceRequest::parse) followed by one
//! [`select_indices`](crate::TraceRequest::select_indices) per trace: it reads the framing of
//! the request, its `ResourceSpans` and `ScopeSpans` and the top-level fields of each span
//! (to find its trace id), builds no index and does not look inside span fields.

use std::collections::HashMap;

use bytes::Bytes;

use crate::error::DecodeError;
use crate::request::{Piece, Plan, PlanSpan, Recorder, SpanMeta};
use crate::schema::{self, Msg};
use crate::wire::{self, Value};

/// The spans of one trace, as an `ExportTraceServiceRequest` of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceGroup {
    /// The trace id every span in the group has (all zeros for spans whose trace id is
    /// absent or not 16 bytes long, as [`SpanView::trace_id`](crate::SpanView::trace_id)
    /// reads it).
    pub trace_id: [u8; 16],
    /// Number of spans in the group.
    pub spans: usize,
    /// The group's spans under their own `ResourceSpans` and `ScopeSpans` headers.
    pub request: Bytes,
}

/// Cuts an `ExportTraceServiceRequest` into one request per trace id, traces in order of
/// first appearance, spans in wire order.
///
/// The bytes are those [`TraceRequest::select_indices`](crate::TraceRequest::select_indices)
/// writes for the trace's span indices: each span is copied whole under the headers of its
/// scope and resource (every field but the span list, and unknown fields, copied as they
/// are); scopes and resources without a span of the trace are left out. A request of a
/// single trace is returned as it is (the same bytes, not a copy), and one without spans
/// gives no group. Every group's bytes live in one shared buffer.
///
/// What is checked: the framing of the request, its `ResourceSpans` and `ScopeSpans`
/// (with their resource and scope headers validated like
/// [`TraceRequest::parse`](crate::TraceRequest::parse) does), and the framing of each
/// span's top-level fields. What is not: the contents of those span fields (strings,
/// attributes, events, links), which are copied unread. It is meant for bytes that were
/// validated when they entered the process, as a pipeline's batches are.
///
/// ```
/// use spanflow_otlp::{TraceRequest, group_by_trace};
/// let spans = spanflow_otlp::testing::span_batch(6, 3);
/// let request = spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
/// let groups = group_by_trace(request.as_bytes())?;
/// assert_eq!(groups.iter().map(|g| g.spans).sum::<usize>(), 6);
/// for group in &groups {
///     let trace = TraceRequest::parse(group.request.clone())?;
///     assert!(trace.spans().all(|s| s.trace_id() == group.trace_id));
/// }
/// # Ok::<(), spanflow_otlp::DecodeError>(())
/// ```
pub fn group_by_trace(request: &Bytes) -> Result<Vec<TraceGroup>, DecodeError> {
    if request.len() > u32::MAX as usize {
        return Err(DecodeError::TooLarge { len: request.len() });
    }
    let mut layout = Layout::default();
    layout.scan_request(request)?;
    match layout.groups.as_slice() {
        [] => Ok(Vec::new()),
        [one] => Ok(vec![TraceGroup {
            trace_id: one.trace_id,
            spans: one.spans as usize,
            request: request.clone(),
        }]),
        _ => Ok(layout.write(request)),
    }
}

/// One `ResourceSpans`: the range of its header pieces in [`Layout::resource_headers`].
#[derive(Debug, Clone, Copy)]
struct Resource {
    header: [u32; 2],
}

/// One `ScopeSpans`: the range of its header pieces in [`Layout::scope_headers`], and its
/// resource.
#[derive(Debug, Clone, Copy)]
struct Scope {
    header: [u32; 2],
    resource: u32,
}

/// One `Span` field (tag and length included), its scope and its trace's group.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
    scope: u32,
    group: u32,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    trace_id: [u8; 16],
    spans: u32,
}

/// Where everything is, as far as cutting by trace needs.
#[derive(Debug, Default)]
struct Layout {
    resources: Vec<Resource>,
    scopes: Vec<Scope>,
    spans: Vec<Span>,
    /// Byte ranges of the resource headers' fields (every field but `scope_spans`).
    resource_headers: Vec<[u32; 2]>,
    /// Byte ranges of the scope headers' fields (every field but `spans`).
    scope_headers: Vec<[u32; 2]>,
    groups: Vec<Group>,
    group_of: HashMap<[u8; 16], u32>,
}

impl Layout {
    fn scan_request(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        let mut pos = 0;
        while let Some(field) = wire::next_field(buf, &mut pos)
            .map_err(|(e, at)| DecodeError::from_wire(e, Msg::Request.name(), at))?
        {
            match (field.number, field.value) {
                (1, Value::Len(body)) => self.scan_resource_spans(body, field.body_start())?,
                // Unknown request-level fields are checked but not kept, as by every splice.
                _ => schema::check_field(Msg::Request, &field, 0, 0)?,
            }
        }
        Ok(())
    }

    fn scan_resource_spans(&mut self, buf: &[u8], base: usize) -> Result<(), DecodeError> {
        let r = self.resources.len() as u32;
        let first = self.resource_headers.len() as u32;
        let mut pos = 0;
        while let Some(field) = wire::next_field(buf, &mut pos)
            .map_err(|(e, at)| DecodeError::from_wire(e, Msg::ResourceSpans.name(), base + at))?
        {
            match (field.number, field.value) {
                (2, Value::Len(body)) => {
                    self.scan_scope_spans(body, base + field.body_start(), r)?;
                }
                _ => {
                    schema::check_field(Msg::ResourceSpans, &field, base, 1)?;
                    self.resource_headers
                        .push([(base + field.start) as u32, (base + field.end) as u32]);
                }
            }
        }
        self.resources.push(Resource {
            header: [first, self.resource_headers.len() as u32],
        });
        Ok(())
    }

    fn scan_scope_spans(&mut self, buf: &[u8], base: usize, r: u32) -> Result<(), DecodeError> {
        let s = self.scopes.len() as u32;
        let first = self.scope_headers.len() as u32;
        let mut pos = 0;
        while let Some(field) = wire::next_field(buf, &mut pos)
            .map_err(|(e, at)| DecodeError::from_wire(e, Msg::ScopeSpans.name(), base + at))?
        {
            match (field.number, field.value) {
                (2, Value::Len(body)) => {
                    let trace_id = trace_id(body, base + field.body_start())?;
                    let group = self.group(trace_id);
                    self.spans.push(Span {
                        start: (base + field.start) as u32,
                        end: (base + field.end) as u32,
                        scope: s,
                        group,
                    });
                }
                _ => {
                    schema::check_field(Msg::ScopeSpans, &field, base, 2)?;
                    self.scope_headers
                        .push([(base + field.start) as u32, (base + field.end) as u32]);
                }
            }
        }
        self.scopes.push(Scope {
            header: [first, self.scope_headers.len() as u32],
            resource: r,
        });
        Ok(())
    }

    /// The group of `trace_id`, opened if new. Spans of a trace usually follow each other,
    /// so the previous span's group is tried first.
    fn group(&mut self, trace_id: [u8; 16]) -> u32 {
        if let Some(last) = self.spans.last()
            && self.groups[last.group as usize].trace_id == trace_id
        {
            self.groups[last.group as usize].spans += 1;
            return last.group;
        }
        let next = self.groups.len() as u32;
        let g = *self.group_of.entry(trace_id).or_insert(next);
        if g == next {
            self.groups.push(Group { trace_id, spans: 0 });
        }
        self.groups[g as usize].spans += 1;
        g
    }

    /// Header pieces of resource `r` (all in the one source buffer).
    fn resource_header(&self, r: u32) -> impl Iterator<Item = Piece> + '_ {
        let h = self.resources[r as usize].header;
        self.resource_headers[h[0] as usize..h[1] as usize]
            .iter()
            .map(|x| Piece::src(0, x[0], x[1]))
    }

    /// Header pieces of scope `s`.
    fn scope_header(&self, s: u32) -> impl Iterator<Item = Piece> + '_ {
        let h = self.scopes[s as usize].header;
        self.scope_headers[h[0] as usize..h[1] as usize]
            .iter()
            .map(|x| Piece::src(0, x[0], x[1]))
    }

    /// Writes every group into one buffer: one [`Plan`] holding each group's resources,
    /// scopes and spans one group after the other, written without an index.
    fn write(&self, buf: &Bytes) -> Vec<TraceGroup> {
        // Span indices ordered by group, each group's in wire order (a counting sort).
        let mut starts: Vec<u32> = Vec::with_capacity(self.groups.len() + 1);
        let mut at = 0u32;
        for g in &self.groups {
            starts.push(at);
            at += g.spans;
        }
        starts.push(at);
        let mut next = starts.clone();
        let mut order = vec![0u32; self.spans.len()];
        for (i, span) in self.spans.iter().enumerate() {
            let slot = &mut next[span.group as usize];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }

        // Each group opens its own resources and scopes: a new one whenever its next span
        // belongs to another. `resources_through[g]`: how many resources the plan holds once
        // group g is in, so group g's bytes end where resource `resources_through[g] - 1` does.
        let mut plan = Plan::default();
        let mut resources_through = Vec::with_capacity(self.groups.len());
        let mut resources = 0usize;
        for g in 0..self.groups.len() {
            let mut scope: Option<u32> = None;
            let mut resource: Option<u32> = None;
            for &i in &order[starts[g] as usize..starts[g + 1] as usize] {
                let span = self.spans[i as usize];
                if scope != Some(span.scope) {
                    let r = self.scopes[span.scope as usize].resource;
                    if resource != Some(r) {
                        plan.open_resource(self.resource_header(r));
                        resources += 1;
                        resource = Some(r);
                    }
                    plan.open_scope(self.scope_header(span.scope));
                    scope = Some(span.scope);
                }
                // Copied whole: the body offset and meta only serve an index, built by no one.
                plan.push_span(PlanSpan {
                    piece: Piece::src(0, span.start, span.end),
                    body: 0,
                    meta: SpanMeta::default(),
                });
            }
            resources_through.push(resources);
        }
        let mut ends = ResourceEnds(Vec::with_capacity(resources));
        let out = Bytes::from(plan.write(&[buf], &mut ends));
        let mut start = 0;
        self.groups
            .iter()
            .zip(resources_through)
            .map(|(group, resources)| {
                // Every group has a span, so at least one resource of its own.
                let end = ends
                    .0
                    .get(resources.wrapping_sub(1))
                    .copied()
                    .unwrap_or(start);
                let request = out.slice(start..end);
                start = end;
                TraceGroup {
                    trace_id: group.trace_id,
                    spans: group.spans as usize,
                    request,
                }
            })
            .collect()
    }
}

/// Where each resource written by the plan ends.
struct ResourceEnds(Vec<usize>);

impl Recorder for ResourceEnds {
    fn resource_end(&mut self, end: usize) {
        self.0.push(end);
    }
}

/// The trace id of the span whose body is `body` (found at byte `base`): its last
/// length-delimited field 1 (protobuf's last-one-wins rule), all zeros when that is absent
/// or not 16 bytes long. Reads only the framing of the span's top-level fields.
fn trace_id(body: &[u8], base: usize) -> Result<[u8; 16], DecodeError> {
    let mut found: Option<&[u8]> = None;
    let mut pos = 0;
    while let Some(field) = wire::next_field(body, &mut pos)
        .map_err(|(e, at)| DecodeError::from_wire(e, Msg::Span.name(), base + at))?
    {
        if let (1, Value::Len(id)) = (field.number, field.value) {
            found = Some(id);
        }
    }
    Ok(found
        .and_then(|id| <[u8; 16]>::try_from(id).ok())
        .unwrap_or([0; 16]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TraceRequest;

    /// What the grouping must equal: a parse, then `select_indices` per trace.
    fn reference(request: &TraceRequest) -> Vec<TraceGroup> {
        let mut groups: Vec<([u8; 16], Vec<u32>)> = Vec::new();
        for span in request.spans() {
            let id = span.trace_id();
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, members)) => members.push(span.index() as u32),
                None => groups.push((id, vec![span.index() as u32])),
            }
        }
        groups
            .into_iter()
            .map(|(trace_id, members)| TraceGroup {
                trace_id,
                spans: members.len(),
                request: request.select_indices(&members).into_bytes(),
            })
            .collect()
    }

    fn encoded(n: usize, seed: u64, traces: u8) -> TraceRequest {
        let mut spans = crate::testing::span_batch(n, seed);
        for (i, span) in spans.iter_mut().enumerate() {
            // Interleaved traces: 0, 1, 2, 0, 1, 2, …
            let mut id = [0u8; 16];
            id[0] = 1 + (i % usize::from(traces)) as u8;
            span.span_context = opentelemetry::trace::SpanContext::new(
                opentelemetry::trace::TraceId::from_bytes(id),
                span.span_context.span_id(),
                span.span_context.trace_flags(),
                false,
                span.span_context.trace_state().clone(),
            );
        }
        crate::Encoder::new().encode(&spans, &crate::testing::resource())
    }

    #[test]
    fn groups_are_the_bytes_select_indices_writes() {
        for traces in [1, 2, 3, 7] {
            let request = encoded(20, u64::from(traces), traces);
            let groups = group_by_trace(request.as_bytes()).unwrap();
            assert_eq!(groups, reference(&request), "{traces} traces");
            assert_eq!(groups.len(), usize::from(traces));
        }
    }

    #[test]
    fn one_trace_is_the_request_itself_and_no_span_no_group() {
        let request = encoded(5, 1, 1);
        let groups = group_by_trace(request.as_bytes()).unwrap();
        assert_eq!(groups[0].request.as_ptr(), request.as_bytes().as_ptr());
        assert!(group_by_trace(&Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn broken_framing_is_an_error_never_a_panic() {
        let request = encoded(12, 5, 3);
        let bytes = request.as_bytes();
        for cut in 1..bytes.len() {
            let prefix = bytes.slice(..cut);
            if TraceRequest::parse(prefix.clone()).is_err() {
                // Whatever parse rejects by its framing alone, this rejects too; the rest
                // must not panic.
                let _ = group_by_trace(&prefix);
            } else {
                assert_eq!(
                    group_by_trace(&prefix).unwrap(),
                    reference(&TraceRequest::parse(prefix).unwrap())
                );
            }
        }
        let mut rng = crate::testing::Rng::new(7);
        for _ in 0..2000 {
            let mut data = bytes.to_vec();
            let at = rng.below(data.len() as u64) as usize;
            data[at] = rng.next_u64() as u8;
            let data = Bytes::from(data);
            match (TraceRequest::parse(data.clone()), group_by_trace(&data)) {
                (Ok(parsed), Ok(groups)) => assert_eq!(groups, reference(&parsed)),
                // A change inside a span field passes the framing check only.
                (Err(_), _) => {}
                (Ok(_), Err(e)) => panic!("valid request refused: {e}"),
            }
        }
    }
}
