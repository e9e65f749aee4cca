//! The wire model the receivers use: `spanflow_otlp`'s [`TraceRequest`] (protobuf bytes plus an
//! index), and the receiver-side checks on it.

pub use spanflow_otlp::TraceRequest;

/// OTLP/JSON bodies (`from_json` for the HTTP receiver, `to_json` for tools).
pub(crate) use spanflow_otlp::json;

/// Removes spans whose trace id or span id is invalid (absent, the wrong length or all zero,
/// which the OTLP spec calls invalid), returning the rest, how many were removed and a message
/// for `partial_success`. Valid requests pass through untouched, without a copy or an
/// allocation.
pub(crate) fn drop_invalid_spans(request: TraceRequest) -> (TraceRequest, usize, String) {
    if request.spans().all(|s| s.has_valid_ids()) {
        return (request, 0, String::new());
    }
    let keep: Vec<bool> = request.spans().map(|s| s.has_valid_ids()).collect();
    let rejected = keep.iter().filter(|k| !**k).count();
    let message = format!(
        "{rejected} span(s) with an invalid trace_id or span_id (must be 16 and 8 bytes, not all zero)"
    );
    (request.select(&keep), rejected, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn invalid_ids_are_dropped_and_counted() {
        let mut rng = rand::rng();
        let [mut a, _, _] = crate::tools::traffic::demo_traces(&mut rng, 2);
        let spans = &mut a.resource_spans[0].scope_spans[0].spans;
        spans[0].trace_id = vec![0; 16];
        spans[3].span_id = vec![1, 2, 3];
        let request = TraceRequest::from_proto(&a);
        let (kept, rejected, message) = drop_invalid_spans(request);
        assert_eq!((kept.span_count(), rejected), (2, 2));
        assert!(message.contains("2 span(s)"));
        let valid = TraceRequest::from_proto(&ExportTraceServiceRequest::default());
        assert_eq!(drop_invalid_spans(valid).1, 0);
    }

    #[test]
    fn the_one_pass_id_check_agrees_with_the_views() {
        let mut rng = rand::rng();
        let [mut a, _, _] = crate::tools::traffic::demo_traces(&mut rng, 4);
        let spans = &mut a.resource_spans[0].scope_spans[0].spans;
        spans[0].trace_id = vec![0; 16];
        spans[1].span_id = vec![1, 2, 3];
        spans[2].trace_id.clear();
        spans[3].span_id = vec![0; 8];
        spans[4].trace_id = vec![7; 17];
        let request = TraceRequest::from_proto(&a);
        for s in request.spans() {
            let slow = s.trace_id() != [0; 16] && s.span_id() != [0; 8];
            assert_eq!(s.has_valid_ids(), slow, "span {}", s.index());
        }
        let (_, rejected, _) = drop_invalid_spans(request);
        assert_eq!(rejected, 5);
    }
}
