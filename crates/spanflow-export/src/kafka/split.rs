//! Cutting a batch into Kafka records by trace id, on the wire model (byte ranges, no decode).
//!
//! spanflow-otlp has no "group by trace" operation, so this is built here from its public
//! API: one indexing pass (`TraceRequest::parse`), the trace id of each span read in place
//! (`SpanView::trace_id`), and one `select_indices` per trace, which copies the trace's span
//! bytes under their own `ResourceSpans`/`ScopeSpans` headers.

use std::collections::HashMap;

use spanflow_otlp::TraceRequest;

/// One Kafka record's worth of spans: every span in it has the trace id `key` (when records
/// are partitioned by trace), and the request is at most the record size limit unless a
/// single span is larger.
#[derive(Debug, Clone)]
pub(crate) struct TraceRecord {
    /// The record key: the 16-byte trace id, or none for unkeyed records.
    pub(crate) key: Option<[u8; 16]>,
    /// The spans, as an `ExportTraceServiceRequest`.
    pub(crate) request: TraceRequest,
}

/// Cuts `request` into one record per trace id, in order of first appearance, each cut
/// further into records of at most `max_bytes` (same key, so the same partition) when a
/// trace is larger than that.
pub(crate) fn by_trace(request: &TraceRequest, max_bytes: usize) -> Vec<TraceRecord> {
    let n = request.span_count();
    if n == 0 {
        return Vec::new();
    }
    // Span indices of each trace, traces in order of first appearance.
    let mut group_of: HashMap<[u8; 16], usize> = HashMap::new();
    let mut groups: Vec<([u8; 16], Vec<u32>)> = Vec::new();
    for span in request.spans() {
        let id = span.trace_id();
        let g = *group_of.entry(id).or_insert_with(|| {
            groups.push((id, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(span.index() as u32);
    }
    let mut out = Vec::with_capacity(groups.len());
    if groups.len() == 1 {
        push_bounded(&mut out, Some(groups[0].0), request.clone(), max_bytes);
        return out;
    }
    // By indices, not by a mask: a mask per trace would walk the whole batch once per trace
    // (quadratic: a 2048-span batch of 10-span traces walked 205 times). Members are
    // ascending: spans are visited in order.
    for (id, members) in &groups {
        push_bounded(
            &mut out,
            Some(*id),
            request.select_indices(members),
            max_bytes,
        );
    }
    out
}

/// `request` as unkeyed records of at most `max_bytes` each.
pub(crate) fn unkeyed(request: &TraceRequest, max_bytes: usize) -> Vec<TraceRecord> {
    let mut out = Vec::new();
    if request.span_count() > 0 {
        push_bounded(&mut out, None, request.clone(), max_bytes);
    }
    out
}

fn push_bounded(
    out: &mut Vec<TraceRecord>,
    key: Option<[u8; 16]>,
    request: TraceRequest,
    max_bytes: usize,
) {
    if request.encoded_len() <= max_bytes || request.span_count() <= 1 {
        out.push(TraceRecord { key, request });
    } else {
        out.extend(
            request
                .split(0, max_bytes)
                .into_iter()
                .map(|request| TraceRecord { key, request }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("s{trace}-{id}"),
            ..Span::default()
        }
    }

    /// Two resources, traces interleaved across both.
    fn request() -> ExportTraceServiceRequest {
        let rs = |service: &str, spans: Vec<Span>| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                    key: "service.name".into(),
                    value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                service.into(),
                            ),
                        ),
                    }),
                    ..Default::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    ..InstrumentationScope::default()
                }),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                rs("a", vec![span(1, 1), span(2, 2), span(1, 3)]),
                rs("b", vec![span(3, 4), span(2, 5), span(1, 6)]),
            ],
        }
    }

    #[test]
    fn every_span_lands_once_in_the_record_of_its_trace() {
        let req = TraceRequest::from_proto(&request());
        let records = by_trace(&req, usize::MAX);
        assert_eq!(records.len(), 3);
        let mut seen = Vec::new();
        for r in &records {
            let key = r.key.unwrap();
            for s in r.request.spans() {
                assert_eq!(s.trace_id(), key);
                seen.push(s.span_id()[0]);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
        // Trace 1 keeps both of its resources, decoded as the original spans.
        let one = records[0].request.to_proto().unwrap();
        assert_eq!(one.resource_spans.len(), 2);
        assert_eq!(
            one.resource_spans[1].scope_spans[0].spans[0],
            request().resource_spans[1].scope_spans[0].spans[2]
        );
    }

    #[test]
    fn a_trace_larger_than_a_record_is_cut_under_the_same_key() {
        let req = TraceRequest::from_proto(&request());
        let records = by_trace(&req, 120);
        assert!(records.len() > 3);
        assert_eq!(
            records
                .iter()
                .map(|r| r.request.span_count())
                .sum::<usize>(),
            6
        );
        for r in &records {
            assert!(r.request.encoded_len() <= 120 || r.request.span_count() == 1);
            assert!(r.request.spans().all(|s| s.trace_id() == r.key.unwrap()));
        }
    }

    #[test]
    fn one_trace_is_the_request_itself() {
        let mut one = request();
        for rs in &mut one.resource_spans {
            for s in &mut rs.scope_spans[0].spans {
                s.trace_id = vec![9; 16];
            }
        }
        let req = TraceRequest::from_proto(&one);
        let records = by_trace(&req, usize::MAX);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].request.as_bytes(), req.as_bytes());
        assert!(by_trace(&TraceRequest::empty(), 10).is_empty());
        assert_eq!(unkeyed(&req, usize::MAX).len(), 1);
    }
}
