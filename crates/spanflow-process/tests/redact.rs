//! `Redact` on nested attribute values, span events and links: hand-written
//! cases, then a proptest against a straightforward decoded model.
#![cfg(not(loom))]

mod common;

use common::*;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList, any_value};
use spanflow_process::*;

const CARD: &str = r"\b\d{4}[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b";
const EMAIL: &str = r"[\w.+-]+@[\w-]+\.[\w.]+";

fn run(p: &dyn Processor, req: TraceRequest) -> TraceRequest {
    p.process(req, &Context::sequential()).expect("processes")
}

fn redact(ignored: &[&str], summary: bool) -> Redact {
    Redact::from_config(&RedactConfig {
        ignored_keys: ignored.iter().map(|k| (*k).to_owned()).collect(),
        blocked_values: vec![CARD.into(), EMAIL.into()],
        summary,
        ..RedactConfig::default()
    })
    .expect("valid")
}

fn arr(values: Vec<AnyValue>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
    }
}

fn kvl(pairs: Vec<(&str, AnyValue)>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: pairs.into_iter().map(|(k, v)| kv(k, v)).collect(),
        })),
    }
}

fn b(v: bool) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::BoolValue(v)),
    }
}

fn d(v: f64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::DoubleValue(v)),
    }
}

fn bytes(v: &[u8]) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::BytesValue(v.to_vec())),
    }
}

fn empty() -> AnyValue {
    AnyValue { value: None }
}

/// `leaf` wrapped in `levels` arrays.
fn nest(levels: usize, leaf: AnyValue) -> AnyValue {
    (0..levels).fold(leaf, |v, _| arr(vec![v]))
}

fn value_of(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
}

#[test]
fn array_of_strings_is_masked_element_by_element() {
    let req = request(
        "svc",
        vec![span("a").attr(
            "mail.to",
            arr(vec![
                s("ann@example.com"),
                s("no one"),
                s("card 4111 1111 1111 1111 and bob@example.org"),
            ]),
        )],
    );
    let redact = redact(&[], true);
    let spans = spans_of(&run(&redact, req));
    assert_eq!(
        value_of(&spans[0], "mail.to"),
        Some(arr(vec![s("****"), s("no one"), s("card **** and ****")]))
    );
    assert_eq!(
        attr_of(&spans[0].attributes, MASKED_COUNT_KEY),
        Some(&any_value::Value::IntValue(2))
    );
    assert_eq!(
        redact.counts(),
        RedactCounts {
            spans: 1,
            values_masked: 2,
            keys_removed: 0
        }
    );
}

#[test]
fn nested_lists_and_arrays_keep_their_shape() {
    let value = kvl(vec![
        (
            "user",
            kvl(vec![("email", s("zoë@exämple.de")), ("id", i(7))]),
        ),
        (
            "payments",
            arr(vec![
                kvl(vec![("card", s("5500-0000-0000-0004")), ("ok", b(true))]),
                kvl(vec![("card", s("none")), ("ok", b(false))]),
            ]),
        ),
        // List keys are not masked, only values.
        ("x@y.zz", s("plain")),
    ]);
    let expected = kvl(vec![
        ("user", kvl(vec![("email", s("****")), ("id", i(7))])),
        (
            "payments",
            arr(vec![
                kvl(vec![("card", s("****")), ("ok", b(true))]),
                kvl(vec![("card", s("none")), ("ok", b(false))]),
            ]),
        ),
        ("x@y.zz", s("plain")),
    ]);
    let req = request("svc", vec![span("a").attr("payload", value)]);
    let redact = redact(&[], false);
    let spans = spans_of(&run(&redact, req));
    assert_eq!(value_of(&spans[0], "payload"), Some(expected));
    assert_eq!(redact.counts().values_masked, 2);
    assert_eq!(redact.counts().spans, 1);
}

#[test]
fn other_types_in_a_masked_value_are_unchanged() {
    let value = arr(vec![
        i(-3),
        b(true),
        d(2.5),
        bytes(b"ann@example.com"), // bytes are not strings: left alone
        empty(),
        arr(vec![]),
        kvl(vec![]),
        s("ann@example.com"),
    ]);
    let mut expected = value.clone();
    if let Some(any_value::Value::ArrayValue(a)) = &mut expected.value {
        a.values[7] = s("****");
    }
    let req = request("svc", vec![span("a").attr("mixed", value)]);
    let spans = spans_of(&run(&redact(&[], false), req));
    assert_eq!(value_of(&spans[0], "mixed"), Some(expected));
}

#[test]
fn depth_bound_masks_too_deep_values_whole() {
    let leaf = || s("ann@example.com");
    let req = request(
        "svc",
        vec![
            span("at-bound")
                .attr("v", nest(MAX_NESTING, leaf()))
                .attr("keep", s("fine")),
            span("beyond").attr("v", nest(MAX_NESTING + 1, leaf())),
            // Too deep with nothing blocked in it: still masked whole.
            span("beyond-clean").attr("v", nest(MAX_NESTING + 1, i(1))),
            span("shallow-clean").attr("v", nest(MAX_NESTING, i(1))),
        ],
    );
    let redact = redact(&[], false);
    let spans = spans_of(&run(&redact, req));
    assert_eq!(value_of(&spans[0], "v"), Some(nest(MAX_NESTING, s("****"))));
    assert_eq!(str_attr(&spans[0].attributes, "keep"), Some("fine"));
    assert_eq!(value_of(&spans[1], "v"), Some(s("****")));
    assert_eq!(value_of(&spans[2], "v"), Some(s("****")));
    assert_eq!(value_of(&spans[3], "v"), Some(nest(MAX_NESTING, i(1))));
    assert_eq!(
        redact.counts(),
        RedactCounts {
            spans: 3,
            values_masked: 3,
            keys_removed: 0
        }
    );
}

#[test]
fn ignored_key_leaves_nested_values_alone() {
    let value = || {
        arr(vec![
            s("ann@example.com"),
            kvl(vec![("c", s("4111111111111111"))]),
        ])
    };
    let req = request(
        "svc",
        vec![span("a").attr("audit.raw", value()).attr("other", value())],
    );
    let redact = redact(&["audit.raw"], false);
    let spans = spans_of(&run(&redact, req));
    assert_eq!(value_of(&spans[0], "audit.raw"), Some(value()));
    assert_eq!(
        value_of(&spans[0], "other"),
        Some(arr(vec![s("****"), kvl(vec![("c", s("****"))])]))
    );
    assert_eq!(redact.counts().values_masked, 2);
}

#[test]
fn spans_without_matches_are_copied_byte_for_byte() {
    let clean = span("clean")
        .attr("list", arr(vec![s("a"), kvl(vec![("k", s("v"))])]))
        .attr("n", i(1));
    let dirty = span("dirty").attr("list", arr(vec![s("ann@example.com")]));
    let req = request("svc", vec![clean.clone(), dirty, clean]);
    let out = run(&redact(&[], true), req.clone());
    assert_eq!(out.span_count(), 3);
    for i in [0, 2] {
        assert_eq!(
            out.span(i).expect("span").raw(),
            req.span(i).expect("span").raw()
        );
    }
    assert_ne!(
        out.span(1).expect("span").raw(),
        req.span(1).expect("span").raw()
    );

    // A batch with nothing to mask comes back as the very same bytes.
    let req = request("svc", vec![span("clean").attr("list", arr(vec![s("a")]))]);
    let out = run(&redact(&[], true), req.clone());
    assert_eq!(out.as_bytes(), req.as_bytes());
}

#[test]
fn chain_fuses_nested_masking_like_the_processor_alone() {
    let req = request(
        "svc",
        vec![
            span("a").attr("list", arr(vec![s("ann@example.com"), i(1)])),
            span("b").attr("m", kvl(vec![("c", s("4111-1111-1111-1111"))])),
            span("c").attr("plain", s("bob@example.org")),
        ],
    );
    let alone = run(&redact(&[], true), req.clone());
    let chain = Chain::builder()
        .processor(redact(&[], true))
        .build()
        .expect("chain");
    let chained = chain.process(req).expect("processes");
    assert_eq!(decode(&chained), decode(&alone));
}
