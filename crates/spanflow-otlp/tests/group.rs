//! `group_by_trace` writes, for each trace, the request `select_indices` writes for the
//! trace's spans, and the model of that on prost structs.
#![cfg(not(loom))]

mod common;

use common::*;
use proptest::prelude::*;
use prost::Message;
use spanflow_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_otlp::{TraceRequest, group_by_trace};

/// `request` with each span's trace id replaced by one of `traces` ids (picked by `pick`),
/// some of them empty or of the wrong length (read as all zeros).
fn with_traces(
    mut request: ExportTraceServiceRequest,
    pick: &[u8],
    traces: u8,
) -> ExportTraceServiceRequest {
    let mut i = 0;
    for r in &mut request.resource_spans {
        for s in &mut r.scope_spans {
            for span in &mut s.spans {
                let t = pick.get(i).copied().unwrap_or(0) % traces;
                span.trace_id = match t {
                    0 => Vec::new(),
                    1 => vec![1; 8],
                    t => vec![t; 16],
                };
                i += 1;
            }
        }
    }
    request
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn groups_are_select_indices_per_trace(
        original in request(),
        pick in prop::collection::vec(any::<u8>(), 0..64),
        traces in 1u8..6,
    ) {
        let original = with_traces(original, &pick, traces);
        let request = TraceRequest::from_proto(&original);
        let groups = group_by_trace(request.as_bytes()).unwrap();

        // Reference: traces in order of first appearance, each cut with select_indices.
        let mut order: Vec<([u8; 16], Vec<u32>)> = Vec::new();
        for span in request.spans() {
            let id = span.trace_id();
            match order.iter_mut().find(|(t, _)| *t == id) {
                Some((_, members)) => members.push(span.index() as u32),
                None => order.push((id, vec![span.index() as u32])),
            }
        }
        prop_assert_eq!(groups.len(), order.len());
        for (group, (id, members)) in groups.iter().zip(&order) {
            prop_assert_eq!(group.trace_id, *id);
            prop_assert_eq!(group.spans, members.len());
            prop_assert_eq!(&group.request, &request.select_indices(members).into_bytes());
            // And the model: the original with every other trace's spans left out.
            let keep: Vec<bool> = request.spans().map(|s| s.trace_id() == *id).collect();
            let decoded = ExportTraceServiceRequest::decode(&group.request[..]).unwrap();
            prop_assert_eq!(decoded, model_select(&original, &keep));
        }
    }
}
