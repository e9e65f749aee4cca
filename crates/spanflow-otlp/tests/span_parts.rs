//! The views processors read beside the span's own fields: events, links, the one-pass
//! span head, and every value an attribute's bytes hold.
#![cfg(not(loom))]

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use prost::Message;
use spanflow_otlp::proto::common::v1::{AnyValue, KeyValue, any_value};
use spanflow_otlp::proto::trace::v1::Span;
use spanflow_otlp::testing::head_from_accessors;
use spanflow_otlp::{AnyValueView, SpanView, TraceRequest, ValueFields};

/// A length-delimited field `number` holding `body`.
fn field(number: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::bytes::encode(number, &body.to_vec(), &mut out);
    out
}

/// A request holding one span whose protobuf body is `span` (possibly several
/// concatenated `Span` encodings, which protobuf merges).
fn request_around(span: &[u8]) -> TraceRequest {
    TraceRequest::parse(Bytes::from(field(1, &field(2, &field(2, span))))).expect("valid request")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn events_and_links_read_what_prost_decodes(original in request()) {
        let request = TraceRequest::from_proto(&original);
        for (view, span) in request.spans().zip(proto_spans(&original)) {
            prop_assert_eq!(view.events().count(), span.events.len());
            prop_assert_eq!(view.dropped_events_count(), span.dropped_events_count);
            for (event, proto) in view.events().zip(&span.events) {
                prop_assert_eq!(event.time_unix_nano(), proto.time_unix_nano);
                prop_assert_eq!(event.name(), &proto.name);
                prop_assert_eq!(event.dropped_attributes_count(), proto.dropped_attributes_count);
                let attributes: Vec<_> = event.attributes().map(|kv| kv.to_proto()).collect();
                prop_assert_eq!(&attributes, &proto.attributes);
                if let Some(first) = proto.attributes.first() {
                    prop_assert_eq!(event.attribute(&first.key).map(|v| v.to_proto()), first.value.clone());
                }
            }
            prop_assert_eq!(view.links().count(), span.links.len());
            prop_assert_eq!(view.dropped_links_count(), span.dropped_links_count);
            for (link, proto) in view.links().zip(&span.links) {
                prop_assert_eq!(&link.trace_id()[..], &proto.trace_id[..]);
                prop_assert_eq!(&link.span_id()[..], &proto.span_id[..]);
                prop_assert_eq!(link.trace_state(), &proto.trace_state);
                prop_assert_eq!(link.flags(), proto.flags);
                prop_assert_eq!(link.dropped_attributes_count(), proto.dropped_attributes_count);
                let attributes: Vec<_> = link.attributes().map(|kv| kv.to_proto()).collect();
                prop_assert_eq!(&attributes, &proto.attributes);
            }
        }
    }

    /// Concatenated encodings merge (the last field wins), repeated scalars and unknown
    /// fields are read as the accessors read them. (Scalars of other wire types, which
    /// parse refuses, are compared in the crate's unit tests.)
    #[test]
    fn head_equals_the_view_accessors(
        spans in prop::collection::vec(proto_span(), 1..3),
        extra in prop::collection::vec((6u32..9, any::<u64>()), 0..3),
        unknown in prop::collection::vec((17u32..40, prop::collection::vec(any::<u8>(), 0..4)), 0..3),
    ) {
        let mut body: Vec<u8> = spans.iter().flat_map(Message::encode_to_vec).collect();
        for (number, value) in extra {
            match number {
                6 => prost::encoding::int32::encode(number, &(value as i32 % 6), &mut body),
                _ => prost::encoding::fixed64::encode(number, &value, &mut body),
            }
        }
        for (number, bytes) in unknown {
            body.extend(field(number, &bytes));
            prost::encoding::uint64::encode(number + 40, &u64::from(number), &mut body);
        }
        let request = request_around(&body);
        let span = request.span(0).expect("one span");
        let head = span.head();
        prop_assert_eq!(head, head_from_accessors(&span));
        prop_assert_eq!(head, spanflow_otlp::SpanHead::read(&span));
    }

    /// Whatever a decoder makes of an attribute written in several parts, every string it
    /// ends up with is among the values `value_fields` shows.
    #[test]
    fn value_fields_show_every_string_a_decoder_sees(
        parts in prop::collection::vec(prop::option::of(any_value()), 1..4),
    ) {
        let mut kv = Vec::new();
        for value in &parts {
            kv.extend(KeyValue { key: "k".into(), value: value.clone(), key_strindex: 0 }.encode_to_vec());
        }
        let span = [field(1, &[1; 16]), field(2, &[2; 8]), field(9, &kv)].concat();
        let request = request_around(&span);
        let view = request.span(0).expect("one span");
        let shown = view.attributes().next().expect("one attribute");
        let attribute = view.attributes().stored().next().expect("one attribute");
        prop_assert_eq!(attribute.key, shown.key);
        let decoded = KeyValue::decode(&kv[..]).expect("valid key-value");

        let mut decoded_strings = Vec::new();
        if let Some(value) = &decoded.value {
            proto_strings(value, &mut decoded_strings);
        }
        let mut stored = Vec::new();
        for value in attribute.value_fields() {
            view_strings(value, &mut stored);
        }
        for s in &decoded_strings {
            prop_assert!(stored.contains(s), "{s:?} not in {stored:?}");
        }
        // What the view shows is the last value of the last part.
        let last = attribute.value_fields().last().and_then(Iterator::last);
        prop_assert_eq!(last.unwrap_or(AnyValueView::Empty), shown.value);
        if parts.len() == 1 {
            let only: Vec<Vec<_>> = attribute.value_fields().map(Iterator::collect).collect();
            let expected = match shown.value {
                AnyValueView::Empty if parts[0].as_ref().is_none_or(|v| v.value.is_none()) => vec![],
                value => vec![value],
            };
            prop_assert_eq!(only.len(), usize::from(parts[0].is_some()));
            prop_assert_eq!(only.concat(), expected);
        }
    }
}

fn proto_strings(value: &AnyValue, out: &mut Vec<String>) {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => out.push(s.clone()),
        Some(any_value::Value::ArrayValue(a)) => {
            a.values.iter().for_each(|v| proto_strings(v, out));
        }
        Some(any_value::Value::KvlistValue(l)) => l
            .values
            .iter()
            .filter_map(|kv| kv.value.as_ref())
            .for_each(|v| proto_strings(v, out)),
        _ => {}
    }
}

fn view_strings(value: ValueFields<'_>, out: &mut Vec<String>) {
    for v in value {
        match v {
            AnyValueView::String(s) => out.push(s.to_owned()),
            AnyValueView::Array(a) => a.element_fields().for_each(|e| view_strings(e, out)),
            AnyValueView::KvList(l) => l
                .iter()
                .stored()
                .flat_map(|kv| kv.value_fields())
                .for_each(|v| view_strings(v, out)),
            _ => {}
        }
    }
}

#[test]
fn span_without_events_or_links_has_none() {
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "bare".into(),
        ..Span::default()
    };
    let request = request_around(&span.encode_to_vec());
    let view: SpanView<'_> = request.span(0).expect("one span");
    assert_eq!(view.events().count(), 0);
    assert_eq!(view.links().count(), 0);
    assert_eq!(
        (view.dropped_events_count(), view.dropped_links_count()),
        (0, 0)
    );
}

#[test]
fn head_of_a_fixture_batch_matches_the_accessors() {
    let spans = spanflow_otlp::testing::span_batch(64, 3);
    let request = spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    for span in request.spans() {
        let head = span.head();
        assert_eq!(head, head_from_accessors(&span));
        assert_eq!(
            head.duration_nanos(),
            span.end_time_unix_nano()
                .saturating_sub(span.start_time_unix_nano())
        );
    }
}
