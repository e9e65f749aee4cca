//! The reader: parse validates and indexes; views return what prost would decode;
//! select, split and merge splice spans without changing them.
#![cfg(not(loom))]

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use prost::Message;
use spanflow_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_otlp::{AnyValueView, DecodeError, TraceRequest};

fn decode(request: &TraceRequest) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(&request.as_bytes()[..]).expect("prost decodes our output")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn views_read_what_prost_decodes(original in request()) {
        let request = TraceRequest::from_proto(&original);
        let spans = proto_spans(&original);
        prop_assert_eq!(request.span_count(), spans.len());
        prop_assert_eq!(request.resource_count(), original.resource_spans.len());
        for (view, span) in request.spans().zip(&spans) {
            prop_assert_eq!(&view.trace_id()[..], &span.trace_id[..]);
            prop_assert_eq!(&view.span_id()[..], &span.span_id[..]);
            prop_assert_eq!(
                view.has_valid_ids(),
                view.trace_id() != [0; 16] && view.span_id() != [0; 8]
            );
            prop_assert_eq!(view.parent_span_id().map(|p| p.to_vec()).unwrap_or_default(), span.parent_span_id.clone());
            prop_assert_eq!(view.trace_state(), &span.trace_state);
            prop_assert_eq!(view.flags(), span.flags);
            prop_assert_eq!(view.name(), &span.name);
            prop_assert_eq!(view.kind(), span.kind);
            prop_assert_eq!(view.start_time_unix_nano(), span.start_time_unix_nano);
            prop_assert_eq!(view.end_time_unix_nano(), span.end_time_unix_nano);
            prop_assert_eq!(view.dropped_attributes_count(), span.dropped_attributes_count);
            prop_assert_eq!(view.event_count(), span.events.len());
            prop_assert_eq!(view.link_count(), span.links.len());
            let status = span.status.clone().unwrap_or_default();
            prop_assert_eq!(view.status_code(), status.code);
            prop_assert_eq!(view.status_message(), &status.message);
            let attributes: Vec<_> = view.attributes().map(|kv| kv.to_proto()).collect();
            prop_assert_eq!(&attributes, &span.attributes);
            if let Some(first) = span.attributes.first() {
                prop_assert_eq!(view.attribute(&first.key).map(|v| v.to_proto()), first.value.clone());
            }
        }
        for (view, rs) in request.resources().zip(&original.resource_spans) {
            let resource = rs.resource.clone().unwrap_or_default();
            let attributes: Vec<_> = view.attributes().map(|kv| kv.to_proto()).collect();
            prop_assert_eq!(&attributes, &resource.attributes);
            prop_assert_eq!(view.schema_url(), &rs.schema_url);
            prop_assert_eq!(view.span_count(), rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>());
        }
        let mut i = 0;
        for rs in &original.resource_spans {
            for ss in &rs.scope_spans {
                for _ in &ss.spans {
                    let view = request.span(i).unwrap();
                    let scope = ss.scope.clone().unwrap_or_default();
                    prop_assert_eq!(view.scope().name(), &scope.name);
                    prop_assert_eq!(view.scope().version(), &scope.version);
                    prop_assert_eq!(view.scope().schema_url(), &ss.schema_url);
                    let attributes: Vec<_> = view.scope().attributes().map(|kv| kv.to_proto()).collect();
                    prop_assert_eq!(&attributes, &scope.attributes);
                    let resource = rs.resource.clone().unwrap_or_default();
                    let attributes: Vec<_> = view.resource().attributes().map(|kv| kv.to_proto()).collect();
                    prop_assert_eq!(&attributes, &resource.attributes);
                    i += 1;
                }
            }
        }
    }

    #[test]
    fn select_drops_exactly_the_masked_spans(
        original in request(),
        mask_bits in prop::collection::vec(any::<bool>(), 64),
    ) {
        let request = TraceRequest::from_proto(&original);
        let n = request.span_count();
        let keep: Vec<bool> = (0..n).map(|i| mask_bits[i % 64]).collect();
        let selected = request.select(&keep);
        prop_assert_eq!(selected.span_count(), keep.iter().filter(|&&k| k).count());
        prop_assert_eq!(decode(&selected), model_select(&original, &keep));
        // The output's index is right: re-parsing gives the same views.
        let reparsed = TraceRequest::parse(selected.as_bytes().clone()).unwrap();
        prop_assert_eq!(reparsed.span_count(), selected.span_count());
        for (a, b) in reparsed.spans().zip(selected.spans()) {
            prop_assert_eq!(a.raw(), b.raw());
            prop_assert_eq!(a.scope().name(), b.scope().name());
            prop_assert_eq!(a.resource().index(), b.resource().index());
        }
    }

    #[test]
    fn select_indices_equals_select_with_the_same_mask(
        original in request(),
        mask_bits in prop::collection::vec(any::<bool>(), 64),
    ) {
        let request = TraceRequest::from_proto(&original);
        let n = request.span_count();
        let keep: Vec<bool> = (0..n).map(|i| mask_bits[i % 64]).collect();
        let indices: Vec<u32> = (0..n as u32).filter(|&i| keep[i as usize]).collect();
        let by_indices = request.select_indices(&indices);
        let by_mask = request.select(&keep);
        prop_assert_eq!(by_indices.as_bytes(), by_mask.as_bytes());
        prop_assert_eq!(by_indices.span_count(), indices.len());
        // Indices past the end are ignored.
        let mut past = indices.clone();
        past.push(n as u32 + 3);
        let past_end = request.select_indices(&past);
        prop_assert_eq!(past_end.as_bytes(), by_indices.as_bytes());
    }

    #[test]
    fn splicing_every_span_decodes_equal(original in request()) {
        let request = TraceRequest::from_proto(&original);
        let n = request.span_count();
        // A mask that keeps everything but is applied span by span (no fast path).
        let mut keep = vec![true; n + 1];
        keep[n] = false;
        let all = request.select(&keep[..n]);
        prop_assert_eq!(decode(&all), original.clone());
        let merged = TraceRequest::merge(&[TraceRequest::empty(), request.clone()]);
        prop_assert_eq!(decode(&merged), original);
    }

    #[test]
    fn split_respects_limits_and_merge_restores(
        original in request(),
        max_spans in 0usize..6,
        max_bytes in prop_oneof![Just(0usize), 100usize..3000],
    ) {
        let request = TraceRequest::from_proto(&original);
        let parts = request.split(max_spans, max_bytes);
        let total: usize = parts.iter().map(TraceRequest::span_count).sum();
        prop_assert_eq!(total, request.span_count());
        for part in &parts {
            prop_assert!(part.span_count() > 0);
            if max_spans > 0 {
                prop_assert!(part.span_count() <= max_spans);
            }
            if max_bytes > 0 && part.span_count() > 1 {
                prop_assert!(part.encoded_len() <= max_bytes, "{} > {}", part.encoded_len(), max_bytes);
            }
            // Every part is a valid request whose index matches a fresh parse.
            let reparsed = TraceRequest::parse(part.as_bytes().clone()).unwrap();
            prop_assert_eq!(reparsed.span_count(), part.span_count());
        }
        let merged = TraceRequest::merge(&parts);
        prop_assert_eq!(decode(&merged), model_select(&original, &vec![true; request.span_count()]));
    }
}

fn sample() -> TraceRequest {
    let spans = spanflow_otlp::testing::span_batch(12, 99);
    spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource())
}

fn exercise(request: &TraceRequest) -> usize {
    let mut n = 0;
    for span in request.spans() {
        n += span.name().len() + span.trace_state().len() + span.status_message().len();
        n += span.kind() as usize + span.flags() as usize % 7 + span.event_count();
        n += span.attributes().count() + span.scope().name().len();
        n += span.resource().attributes().count() + usize::from(span.parent_span_id().is_some());
        for kv in span.attributes() {
            if let AnyValueView::Array(a) = kv.value {
                n += a.iter().count();
            }
        }
    }
    n
}

#[test]
fn every_truncation_is_rejected_like_prost_without_panicking() {
    let bytes = sample().into_bytes();
    for len in 0..bytes.len() {
        let prefix = bytes.slice(..len);
        let ours = TraceRequest::parse(prefix.clone());
        let prost = ExportTraceServiceRequest::decode(&prefix[..]);
        assert_eq!(ours.is_ok(), prost.is_ok(), "prefix {len}: ours {ours:?}");
        if let Ok(request) = ours {
            exercise(&request);
            let _ = request.split(3, 200);
        }
    }
}

/// Mutation fuzzing without libFuzzer: seeded random bit flips, byte overwrites,
/// truncations and splices of valid requests, through the same checks as the fuzz target.
/// `SPANFLOW_FUZZ_ITERATIONS` scales it (default 3000).
#[test]
fn random_mutations_pass_the_fuzz_checks() {
    let iterations: u64 = std::env::var("SPANFLOW_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seeds = [sample().into_bytes(), {
        let spans = spanflow_otlp::testing::span_batch(3, 5);
        spanflow_otlp::Encoder::new()
            .encode(&spans, &spanflow_otlp::testing::resource())
            .into_bytes()
    }];
    let mut rng = spanflow_otlp::testing::Rng::new(0x5eed);
    for _ in 0..iterations {
        let mut data = seeds[rng.below(2) as usize].to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(data.len() as u64) as usize;
            match rng.below(4) {
                0 => data[at] ^= 1 << rng.below(8),
                1 => data[at] = rng.next_u64() as u8,
                2 => data.truncate(at),
                _ => {
                    let from = rng.below(data.len() as u64) as usize;
                    let len = rng.below(16) as usize;
                    let chunk: Vec<u8> = data[from..(from + len).min(data.len())].to_vec();
                    data.splice(at..at, chunk);
                }
            }
            if data.is_empty() {
                break;
            }
        }
        spanflow_otlp::testing::exercise_reader(&data);
    }
}

/// Every input in the fuzz target's seed directory, including inputs the fuzzer once reported
/// (a NaN double attribute, for one), passes the fuzz checks in an ordinary test run.
#[test]
fn fuzz_seeds_pass_the_fuzz_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds exists") {
        let data = std::fs::read(entry.expect("readable dir entry").path()).expect("readable seed");
        spanflow_otlp::testing::exercise_reader(&data);
        seen += 1;
    }
    assert!(seen >= 4, "expected the committed seeds, found {seen}");
}

#[test]
fn bit_flips_never_panic_and_agree_with_prost() {
    let bytes = sample().into_bytes();
    let mut rng = spanflow_otlp::testing::Rng::new(7);
    let mut accepted = 0;
    for _ in 0..4000 {
        let mut mutated = bytes.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(mutated.len() as u64) as usize;
            mutated[at] ^= 1 << rng.below(8);
        }
        let prost = ExportTraceServiceRequest::decode(&mutated[..]);
        match TraceRequest::parse(Bytes::from(mutated)) {
            Ok(request) => {
                accepted += 1;
                assert!(prost.is_ok(), "we accepted what prost rejects: {prost:?}");
                exercise(&request);
                let keep: Vec<bool> = (0..request.span_count()).map(|i| i % 2 == 0).collect();
                let selected = request.select(&keep);
                let again =
                    TraceRequest::parse(selected.as_bytes().clone()).expect("splices stay valid");
                assert_eq!(again.span_count(), selected.span_count());
            }
            Err(e) => {
                assert!(prost.is_err(), "we rejected what prost accepts: {e}");
                assert!(e.offset() <= bytes.len());
            }
        }
    }
    assert!(accepted > 0);
}

#[test]
fn errors_say_what_and_where() {
    // resource_spans { scope_spans { spans { name: <invalid utf-8> } } }
    let bad = [0x0a, 0x07, 0x12, 0x05, 0x12, 0x03, 0x2a, 0x01, 0xff];
    let err = TraceRequest::parse(Bytes::copy_from_slice(&bad)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            message: "Span",
            field: "name",
            offset: 8
        }
    );
    assert_eq!(err.to_string(), "invalid utf-8 in Span.name at byte 8");
    // span.kind sent as a length-delimited field.
    let bad = [0x0a, 0x06, 0x12, 0x04, 0x12, 0x02, 0x32, 0x00];
    let err = TraceRequest::parse(Bytes::copy_from_slice(&bad)).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::WrongWireType {
                message: "Span",
                field: "kind",
                offset: 6,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn repeated_scalars_follow_last_one_wins() {
    // span { name: "a", kind: 1, name: "bb", kind: 3 }
    let span_body = [
        0x2a, 0x01, b'a', 0x30, 0x01, 0x2a, 0x02, b'b', b'b', 0x30, 0x03,
    ];
    let mut bytes = vec![
        0x0a,
        (span_body.len() + 4) as u8,
        0x12,
        (span_body.len() + 2) as u8,
        0x12,
        span_body.len() as u8,
    ];
    bytes.extend_from_slice(&span_body);
    let request = TraceRequest::parse(Bytes::from(bytes)).unwrap();
    let span = request.span(0).unwrap();
    assert_eq!(span.name(), "bb");
    assert_eq!(span.kind(), 3);
    let prost = request.to_proto().unwrap();
    assert_eq!(prost.resource_spans[0].scope_spans[0].spans[0].name, "bb");
}

#[test]
fn unknown_fields_survive_splices() {
    // span { name: "s0", field 99: "future" }, span { name: "s1" } in a scope with unknown
    // field 50 (varint 7) and a resource with unknown field 40 (fixed32).
    let mut span0 = vec![0x2a, 0x02, b's', b'0'];
    span0.extend_from_slice(&[0x9a, 0x06, 0x06]);
    span0.extend_from_slice(b"future");
    let span1 = vec![0x2a, 0x02, b's', b'1'];
    let mut scope = vec![0x90, 0x03, 0x07];
    for s in [&span0, &span1] {
        scope.push(0x12);
        scope.push(s.len() as u8);
        scope.extend_from_slice(s);
    }
    let mut resource = vec![0xc5, 0x02, 1, 2, 3, 4, 0x12, scope.len() as u8];
    resource.extend_from_slice(&scope);
    let mut bytes = vec![0x0a, resource.len() as u8];
    bytes.extend_from_slice(&resource);
    let request = TraceRequest::parse(Bytes::from(bytes)).unwrap();
    assert_eq!(request.span_count(), 2);

    let first = request.select(&[true, false]);
    let out = first.as_bytes();
    let contains = |needle: &[u8]| out.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"\x9a\x06\x06future"), "span unknown field kept");
    assert!(contains(&[0x90, 0x03, 0x07]), "scope unknown field kept");
    assert!(
        contains(&[0xc5, 0x02, 1, 2, 3, 4]),
        "resource unknown field kept"
    );
    assert_eq!(first.span(0).unwrap().name(), "s0");
    let parts = request.split(1, 0);
    assert_eq!(parts.len(), 2);
    assert_eq!(TraceRequest::merge(&parts).as_bytes(), request.as_bytes());
}

#[test]
fn empty_and_degenerate_inputs() {
    let empty = TraceRequest::parse(Bytes::new()).unwrap();
    assert_eq!(empty.span_count(), 0);
    assert!(empty.split(10, 10).is_empty());
    assert_eq!(empty.select(&[]).span_count(), 0);
    assert_eq!(TraceRequest::merge(&[]).span_count(), 0);
    assert!(empty.span(0).is_none());
    // A 4 KiB limit with one span larger than that: it travels alone.
    let request = sample();
    let parts = request.split(0, 1);
    assert_eq!(parts.len(), request.span_count());
}

/// A request holding one span whose protobuf body is `span`, under one resource and scope.
fn request_around(span: &[u8]) -> Result<TraceRequest, DecodeError> {
    fn field(number: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2];
        let mut len = body.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(body);
        out
    }
    let scope = field(2, span);
    let resource = field(2, &scope);
    TraceRequest::parse(Bytes::from(field(1, &resource)))
}

#[test]
fn id_check_reads_the_last_id_fields_and_skips_the_rest() {
    let field = |n: u8, v: &[u8]| {
        let mut f = vec![(n << 3) | 2, v.len() as u8];
        f.extend_from_slice(v);
        f
    };
    let check = |body: &[u8]| {
        let request = request_around(body).expect("a well-formed span");
        let view = request.span(0).expect("one span");
        assert_eq!(
            view.has_valid_ids(),
            view.trace_id() != [0; 16] && view.span_id() != [0; 8],
            "one pass agrees with the two views"
        );
        view.has_valid_ids()
    };
    let good = [field(1, &[1; 16]), field(2, &[2; 8])].concat();
    assert!(check(&good));
    let zero_last = [good.clone(), field(1, &[0; 16])].concat();
    assert!(!check(&zero_last));
    let fixed_last = [field(1, &[0; 16]), good.clone()].concat();
    assert!(check(&fixed_last));
    // Fixed-width fields (start_time_unix_nano, flags) are skipped.
    let fixed = [
        good.clone(),
        vec![(7 << 3) | 1],
        vec![0; 8],
        vec![0x85, 0x01],
        vec![0; 4],
    ];
    assert!(check(&fixed.concat()));
    assert!(!check(&[]));
    assert!(!check(&[field(1, &[7; 17]), field(2, &[2; 8])].concat()));
    assert!(!check(&[field(1, &[1; 16]), field(2, &[1, 2, 3])].concat()));
    // A varint field 1 (a wrong wire type), a group or a truncated span body: refused at parse,
    // or read like the views read it.
    for odd in [
        [good.clone(), vec![1 << 3, 5]].concat(),
        [good.clone(), vec![(9 << 3) | 3]].concat(),
        good[..good.len() - 1].to_vec(),
    ] {
        if let Ok(request) = request_around(&odd)
            && let Some(view) = request.span(0)
        {
            assert_eq!(
                view.has_valid_ids(),
                view.trace_id() != [0; 16] && view.span_id() != [0; 8]
            );
        }
    }
}
