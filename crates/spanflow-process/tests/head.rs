//! `SpanHead::read` returns exactly what the `SpanView` accessors return,
//! including for spans whose fields repeat (protobuf merge: last one wins).
#![cfg(not(loom))]

use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use proptest::prelude::*;
use prost::Message;
use spanflow_otlp::TraceRequest;
use spanflow_process::SpanHead;

/// `tag` (field number, wire type 2) + length + bytes.
fn len_field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// A request holding one span whose body is `body` (possibly several
/// concatenated `Span` encodings, which protobuf merges).
fn request_with_span_body(body: &[u8]) -> TraceRequest {
    let scope_spans = len_field(2, body);
    let resource_spans = len_field(2, &scope_spans);
    let request = len_field(1, &resource_spans);
    TraceRequest::parse(request.into()).expect("valid request")
}

fn arb_span() -> impl Strategy<Value = Span> {
    (
        prop::sample::select(vec![0usize, 8, 16, 16, 16])
            .prop_flat_map(|n| prop::collection::vec(any::<u8>(), n)),
        "\\PC{0,12}",
        prop::sample::select(vec![0i32, 1, 2, 3, 4, 5, 17, -1]),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(prop::sample::select(vec![0i32, 1, 2, 9, -3])),
    )
        .prop_map(|(trace_id, name, kind, start, end, status)| Span {
            trace_id,
            span_id: vec![1; 8],
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            status: status.map(|code| Status {
                code,
                message: "m".into(),
            }),
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn head_equals_the_view_accessors(first in arb_span(), second in prop::option::of(arb_span())) {
        let mut body = first.encode_to_vec();
        if let Some(second) = second {
            body.extend(second.encode_to_vec());
        }
        let req = request_with_span_body(&body);
        let span = req.span(0).expect("one span");
        let head = SpanHead::read(&span);
        prop_assert_eq!(head.trace_id, span.trace_id());
        prop_assert_eq!(head.name, span.name());
        prop_assert_eq!(head.kind, span.kind());
        prop_assert_eq!(head.start_time_unix_nano, span.start_time_unix_nano());
        prop_assert_eq!(head.end_time_unix_nano, span.end_time_unix_nano());
        prop_assert_eq!(head.status_code, span.status_code());
    }
}
