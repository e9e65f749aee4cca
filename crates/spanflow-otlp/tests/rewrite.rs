//! Wire-level rewrites and the decode-edit path agree with the same edits made on
//! prost structs.
#![cfg(not(loom))]

mod common;

use common::*;
use opentelemetry::Value;
use proptest::prelude::*;
use prost::Message;
use spanflow_otlp::TraceRequest;
use spanflow_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_otlp::proto::common::v1::{AnyValue, KeyValue};

#[derive(Debug, Clone)]
enum Op {
    Drop,
    Remove(String),
    Set(String, i64),
    SetString(String, String),
    ResourceRemove(String),
    ResourceSet(String, bool),
}

fn op() -> impl Strategy<Value = Op> {
    // Short keys from a small alphabet so edits often hit existing attributes.
    let key = "[a-c.]{1,2}";
    prop_oneof![
        1 => Just(Op::Drop),
        3 => key.prop_map(Op::Remove),
        3 => (key, any::<i64>()).prop_map(|(k, v)| Op::Set(k, v)),
        2 => (key, "[a-z]{0,200}").prop_map(|(k, v)| Op::SetString(k, v)),
        1 => key.prop_map(Op::ResourceRemove),
        1 => (key, any::<bool>()).prop_map(|(k, v)| Op::ResourceSet(k, v)),
    ]
}

fn set_model(attrs: &mut Vec<KeyValue>, key: &str, value: Value) {
    attrs.retain(|kv| kv.key != key);
    attrs.push(KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue::from(value)),
        key_strindex: 0,
    });
}

/// Applies per-span op lists to the prost struct, the way `rewrite` promises to.
fn model(original: &ExportTraceServiceRequest, ops: &[Vec<Op>]) -> ExportTraceServiceRequest {
    let mut out = original.clone();
    let mut i = 0;
    for rs in &mut out.resource_spans {
        let mut resource_ops = Vec::new();
        for ss in &mut rs.scope_spans {
            let mut kept = Vec::new();
            for mut span in std::mem::take(&mut ss.spans) {
                let mut dropped = false;
                for op in &ops[i % ops.len()] {
                    match op {
                        Op::Drop => dropped = true,
                        Op::Remove(k) => span.attributes.retain(|kv| &kv.key != k),
                        Op::Set(k, v) => set_model(&mut span.attributes, k, Value::I64(*v)),
                        Op::SetString(k, v) => {
                            set_model(&mut span.attributes, k, Value::from(v.clone()));
                        }
                        other => resource_ops.push(other.clone()),
                    }
                }
                if !dropped {
                    kept.push(span);
                }
                i += 1;
            }
            ss.spans = kept;
        }
        if !resource_ops.is_empty() {
            let resource = rs.resource.get_or_insert_with(Default::default);
            for op in resource_ops {
                match op {
                    Op::ResourceRemove(k) => resource.attributes.retain(|kv| kv.key != k),
                    Op::ResourceSet(k, v) => {
                        set_model(&mut resource.attributes, &k, Value::Bool(v));
                    }
                    _ => {}
                }
            }
        }
        rs.scope_spans.retain(|s| !s.spans.is_empty());
    }
    out.resource_spans.retain(|r| !r.scope_spans.is_empty());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn rewrite_matches_the_same_edits_on_prost_structs(
        original in request(),
        ops in prop::collection::vec(prop::collection::vec(op(), 0..4), 1..7),
    ) {
        let request = TraceRequest::from_proto(&original);
        let rewritten = request.rewrite(|span, patch| {
            for op in &ops[span.index() % ops.len()] {
                match op {
                    Op::Drop => patch.drop_span(),
                    Op::Remove(k) => patch.remove_attribute(k),
                    Op::Set(k, v) => patch.set_attribute(k, *v),
                    Op::SetString(k, v) => patch.set_attribute(k, v.clone()),
                    Op::ResourceRemove(k) => patch.resource().remove_attribute(k),
                    Op::ResourceSet(k, v) => patch.resource().set_attribute(k, *v),
                }
            }
        });
        let decoded = ExportTraceServiceRequest::decode(&rewritten.as_bytes()[..]).unwrap();
        prop_assert_eq!(decoded, model(&original, &ops));
        // The rewritten request's index agrees with a fresh parse.
        let reparsed = TraceRequest::parse(rewritten.as_bytes().clone()).unwrap();
        prop_assert_eq!(reparsed.span_count(), rewritten.span_count());
        for (a, b) in reparsed.spans().zip(rewritten.spans()) {
            prop_assert_eq!(a.raw(), b.raw());
            prop_assert_eq!(a.name(), b.name());
            prop_assert!(a.attributes().eq(b.attributes()));
            let (x, y): (Vec<_>, Vec<_>) = (
                a.resource().attributes().collect(),
                b.resource().attributes().collect(),
            );
            prop_assert_eq!(x, y);
        }
    }

    #[test]
    fn copying_a_value_by_view_preserves_it(original in request()) {
        let request = TraceRequest::from_proto(&original);
        // Rename every attribute "k" to "k.copy" by copying its value's bytes.
        let rewritten = request.rewrite(|span, patch| {
            for kv in span.attributes() {
                patch.set_attribute_view(&format!("{}.copy", kv.key), kv.value);
            }
        });
        for (before, after) in request.spans().zip(rewritten.spans()) {
            for kv in before.attributes() {
                let copied = after.attribute(&format!("{}.copy", kv.key));
                prop_assert!(copied.is_some());
            }
        }
        let decoded = ExportTraceServiceRequest::decode(&rewritten.as_bytes()[..]).unwrap();
        for (span, original_span) in proto_spans(&decoded).into_iter().zip(proto_spans(&original)) {
            for kv in &original_span.attributes {
                let copy = span.attributes.iter().rev().find(|c| c.key == format!("{}.copy", kv.key));
                // The last attribute with a key wins when keys repeat; compare with that.
                let last = original_span.attributes.iter().rev().find(|c| c.key == kv.key);
                prop_assert_eq!(copy.and_then(|c| c.value.clone()), last.and_then(|c| c.value.clone()));
            }
        }
    }

    #[test]
    fn edit_span_and_edit_resource_splice_in_place(original in request(), pick in any::<prop::sample::Index>()) {
        let request = TraceRequest::from_proto(&original);
        let n = request.span_count();
        prop_assume!(n > 0);
        let i = pick.index(n);
        let edited = request.edit_span(i, |span| {
            span.name.push_str("-edited");
            span.events.clear();
        }).unwrap();
        let mut expected = original.clone();
        let mut k = 0;
        for rs in &mut expected.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    if k == i {
                        span.name.push_str("-edited");
                        span.events.clear();
                    }
                    k += 1;
                }
            }
        }
        prop_assert_eq!(edited.to_proto().unwrap(), expected);

        let r = pick.index(request.resource_count());
        let edited = request.edit_resource(r, |resource| resource.dropped_attributes_count = 7).unwrap();
        let mut expected = original.clone();
        expected.resource_spans[r].resource.get_or_insert_with(Default::default).dropped_attributes_count = 7;
        prop_assert_eq!(edited.to_proto().unwrap(), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn edit_spans_equals_editing_each_picked_span(
        original in request(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let request = TraceRequest::from_proto(&original);
        let n = request.span_count();
        prop_assume!(n > 0);
        // Repeats are allowed in the input; each span is edited once.
        let indices: Vec<usize> = picks.iter().map(|p| p.index(n)).collect();
        let mut seen = Vec::new();
        let edited = request.edit_spans(&indices, |i, span| {
            seen.push(i);
            span.name = format!("edited {i}");
            span.attributes.clear();
        }).unwrap();
        let mut want: Vec<usize> = indices.clone();
        want.sort_unstable();
        want.dedup();
        prop_assert_eq!(&seen, &want);
        let mut expected = original.clone();
        let mut k = 0;
        for rs in &mut expected.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    if want.contains(&k) {
                        span.name = format!("edited {k}");
                        span.attributes.clear();
                    }
                    k += 1;
                }
            }
        }
        prop_assert_eq!(edited.to_proto().unwrap(), expected);
        // Spans not picked are the same bytes.
        for k in (0..n).filter(|k| !want.contains(k)) {
            prop_assert_eq!(edited.span(k).unwrap().raw(), request.span(k).unwrap().raw());
        }
    }
}

#[test]
fn edit_spans_out_of_range_changes_nothing() {
    let spans = spanflow_otlp::testing::span_batch(3, 1);
    let request = spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    let mut called = false;
    let result = request.edit_spans(&[0, 3], |_, _| called = true);
    assert!(matches!(
        result,
        Err(spanflow_otlp::EditError::OutOfRange { index: 3, len: 3 })
    ));
    assert!(!called, "no span is edited when an index is out of range");
}

#[test]
fn untouched_requests_are_returned_as_is() {
    let spans = spanflow_otlp::testing::span_batch(20, 4);
    let request = spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    let same = request.rewrite(|_, _| {});
    assert_eq!(same.as_bytes().as_ptr(), request.as_bytes().as_ptr());
}

#[test]
fn edits_out_of_range_are_errors() {
    let request = TraceRequest::empty();
    assert!(request.edit_span(0, |_| {}).is_err());
    assert!(request.edit_resource(3, |_| {}).is_err());
}

#[test]
fn unknown_span_fields_survive_rewrite() {
    // span { name: "s", attributes { key: "a" value { int 1 } }, field 99: "future" }
    let span = [
        0x2a, 0x01, b's', 0x4a, 0x07, 0x0a, 0x01, b'a', 0x12, 0x02, 0x18, 0x01, 0x9a, 0x06, 0x02,
        b'f', b'u',
    ];
    let mut scope = vec![0x12, span.len() as u8];
    scope.extend_from_slice(&span);
    let mut bytes = vec![0x0a, (scope.len() + 2) as u8, 0x12, scope.len() as u8];
    bytes.extend_from_slice(&scope);
    let request = TraceRequest::parse(bytes.into()).unwrap();
    let out = request.rewrite(|_, patch| patch.remove_attribute("a"));
    let raw = out.span(0).unwrap().raw();
    assert_eq!(raw, &[0x2a, 0x01, b's', 0x9a, 0x06, 0x02, b'f', b'u']);
}
