//! Cutting a batch into Kafka records by trace id, on the wire model (byte ranges, no decode).
//!
//! [`spanflow_otlp::group_by_trace`] cuts the batch's bytes into one request per trace: it
//! reads only the framing and each span's trace id, builds no index and leaves the contents of
//! the spans unread (a pipeline's batches were validated when they entered it). A trace larger
//! than a record is then parsed and cut further with [`TraceRequest::split`].

use bytes::Bytes;
use spanflow_otlp::{DecodeError, TraceRequest, group_by_trace};

/// One Kafka record's worth of spans: every span in it has the trace id `key` (when records
/// are partitioned by trace), and the request is at most the record size limit unless a
/// single span is larger.
#[derive(Debug, Clone)]
pub(crate) struct TraceRecord {
    /// The record key: the 16-byte trace id, or none for unkeyed records.
    pub(crate) key: Option<[u8; 16]>,
    /// The spans, as an `ExportTraceServiceRequest` in protobuf.
    pub(crate) value: Bytes,
}

/// Cuts the request `body` into one record per trace id, in order of first appearance, each
/// cut further into records of at most `max_bytes` (same key, so the same partition) when a
/// trace is larger than that.
pub(crate) fn by_trace(body: &Bytes, max_bytes: usize) -> Result<Vec<TraceRecord>, DecodeError> {
    let groups = group_by_trace(body)?;
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let key = Some(group.trace_id);
        if group.request.len() <= max_bytes || group.spans <= 1 {
            out.push(TraceRecord {
                key,
                value: group.request,
            });
        } else {
            push_bounded(
                &mut out,
                key,
                TraceRequest::parse(group.request)?,
                max_bytes,
            );
        }
    }
    Ok(out)
}

/// The request `body` as unkeyed records of at most `max_bytes` each.
pub(crate) fn unkeyed(body: &Bytes, max_bytes: usize) -> Result<Vec<TraceRecord>, DecodeError> {
    let request = TraceRequest::parse(body.clone())?;
    let mut out = Vec::new();
    if request.span_count() > 0 {
        push_bounded(&mut out, None, request, max_bytes);
    }
    Ok(out)
}

fn push_bounded(
    out: &mut Vec<TraceRecord>,
    key: Option<[u8; 16]>,
    request: TraceRequest,
    max_bytes: usize,
) {
    if request.encoded_len() <= max_bytes || request.span_count() <= 1 {
        out.push(TraceRecord {
            key,
            value: request.into_bytes(),
        });
    } else {
        out.extend(
            request
                .split(0, max_bytes)
                .into_iter()
                .map(|request| TraceRecord {
                    key,
                    value: request.into_bytes(),
                }),
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

    fn parsed(record: &TraceRecord) -> TraceRequest {
        TraceRequest::parse(record.value.clone()).unwrap()
    }

    #[test]
    fn every_span_lands_once_in_the_record_of_its_trace() {
        let req = TraceRequest::from_proto(&request());
        let records = by_trace(req.as_bytes(), usize::MAX).unwrap();
        assert_eq!(records.len(), 3);
        let mut seen = Vec::new();
        for r in &records {
            let key = r.key.unwrap();
            for s in parsed(r).spans() {
                assert_eq!(s.trace_id(), key);
                seen.push(s.span_id()[0]);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
        // Trace 1 keeps both of its resources, decoded as the original spans.
        let one = parsed(&records[0]).to_proto().unwrap();
        assert_eq!(one.resource_spans.len(), 2);
        assert_eq!(
            one.resource_spans[1].scope_spans[0].spans[0],
            request().resource_spans[1].scope_spans[0].spans[2]
        );
    }

    #[test]
    fn a_trace_larger_than_a_record_is_cut_under_the_same_key() {
        let req = TraceRequest::from_proto(&request());
        let records = by_trace(req.as_bytes(), 120).unwrap();
        assert!(records.len() > 3);
        assert_eq!(
            records
                .iter()
                .map(|r| parsed(r).span_count())
                .sum::<usize>(),
            6
        );
        for r in &records {
            let request = parsed(r);
            assert!(request.encoded_len() <= 120 || request.span_count() == 1);
            assert!(request.spans().all(|s| s.trace_id() == r.key.unwrap()));
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
        let records = by_trace(req.as_bytes(), usize::MAX).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(&records[0].value, req.as_bytes());
        assert!(by_trace(&Bytes::new(), 10).unwrap().is_empty());
        assert_eq!(unkeyed(req.as_bytes(), usize::MAX).unwrap().len(), 1);
        assert!(unkeyed(&Bytes::new(), 10).unwrap().is_empty());
    }

    #[test]
    fn a_batch_that_does_not_frame_is_refused() {
        let req = TraceRequest::from_proto(&request());
        let cut = req.as_bytes().slice(..req.encoded_len() - 3);
        assert!(by_trace(&cut, usize::MAX).is_err());
        assert!(unkeyed(&cut, usize::MAX).is_err());
    }
}
