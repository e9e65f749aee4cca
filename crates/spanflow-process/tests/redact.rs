//! `Redact` on nested attribute values, span events and links: hand-written
//! cases, then a proptest against a straightforward decoded model.
#![cfg(not(loom))]

mod common;

use common::*;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
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

fn value_of(span: &Span, key: &str) -> Option<AnyValue> {
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

// ---------------------------------------------------------------- events and links

fn event(name: &str, attributes: Vec<(&str, AnyValue)>) -> Event {
    Event {
        time_unix_nano: 1_001_000_000,
        name: name.to_owned(),
        attributes: attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
        dropped_attributes_count: 0,
    }
}

fn link(attributes: Vec<(&str, AnyValue)>) -> Link {
    Link {
        trace_id: trace_id(7, 8),
        span_id: vec![8; 8],
        attributes: attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
        ..Default::default()
    }
}

fn event_value(span: &Span, event: usize, key: &str) -> Option<AnyValue> {
    span.events[event]
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
}

#[test]
fn exception_event_message_is_masked() {
    let mut with_events = span("a").attr("http.route", s("/pay"));
    with_events.events = vec![
        event("start", vec![("step", s("1"))]),
        event(
            "exception",
            vec![
                ("exception.type", s("CardDeclined")),
                (
                    "exception.message",
                    s("card 4111-1111-1111-1111 declined for ann@example.com"),
                ),
                ("exception.details", arr(vec![s("bob@example.org"), i(3)])),
                ("audit", s("ann@example.com")),
            ],
        ),
    ];
    with_events.links = vec![link(vec![(
        "peer",
        kvl(vec![("mail", s("cy@example.net"))]),
    )])];
    let req = request("svc", vec![with_events.clone()]);
    let redact = redact(&["audit"], true);
    let out = run(&redact, req);
    let spans = spans_of(&out);
    let got = &spans[0];
    assert_eq!(
        event_value(got, 1, "exception.message"),
        Some(s("card **** declined for ****"))
    );
    assert_eq!(
        event_value(got, 1, "exception.details"),
        Some(arr(vec![s("****"), i(3)]))
    );
    assert_eq!(
        event_value(got, 1, "exception.type"),
        Some(s("CardDeclined"))
    );
    assert_eq!(event_value(got, 1, "audit"), Some(s("ann@example.com")));
    assert_eq!(got.events[0], with_events.events[0]);
    assert_eq!(got.events[1].name, "exception");
    assert_eq!(
        got.links[0].attributes[0].value,
        Some(kvl(vec![("mail", s("****"))]))
    );
    assert_eq!(got.links[0].trace_id, with_events.links[0].trace_id);
    // Span attributes untouched but the summary, which counts event values.
    assert_eq!(str_attr(&got.attributes, "http.route"), Some("/pay"));
    assert_eq!(
        attr_of(&got.attributes, MASKED_COUNT_KEY),
        Some(&any_value::Value::IntValue(3))
    );
    assert_eq!(
        redact.counts(),
        RedactCounts {
            spans: 1,
            values_masked: 3,
            keys_removed: 0
        }
    );
}

#[test]
fn allow_list_applies_to_span_attributes_only() {
    let mut a = span("a")
        .attr("http.method", s("GET"))
        .attr("secret", s("x"));
    a.events = vec![event(
        "exception",
        vec![
            ("exception.message", s("ann@example.com")),
            ("other", s("y")),
        ],
    )];
    let redact = Redact::from_config(&RedactConfig {
        allowed_keys: Some(vec!["http.method".into()]),
        blocked_values: vec![EMAIL.into()],
        ..RedactConfig::default()
    })
    .expect("valid");
    let spans = spans_of(&run(&redact, request("svc", vec![a])));
    let keys: Vec<_> = spans[0]
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(keys, ["http.method"]);
    assert_eq!(event_value(&spans[0], 0, "other"), Some(s("y")));
    assert_eq!(
        event_value(&spans[0], 0, "exception.message"),
        Some(s("****"))
    );
    assert_eq!(
        redact.counts(),
        RedactCounts {
            spans: 1,
            values_masked: 1,
            keys_removed: 1
        }
    );
}

/// A request with one span whose event `log` holds one attribute `msg`
/// written as the key-value messages `parts`, one after the other (which a
/// decoder merges into one).
fn span_with_split_event_attribute(parts: &[AnyValue]) -> TraceRequest {
    use prost::Message;
    fn field(number: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::bytes::encode(number, &body.to_vec(), &mut out);
        out
    }
    let kv: Vec<u8> = parts
        .iter()
        .flat_map(|v| kv("msg", v.clone()).encode_to_vec())
        .collect();
    let event = [event("log", vec![]).encode_to_vec(), field(3, &kv)].concat();
    let span = [span("split").encode_to_vec(), field(11, &event)].concat();
    let resource = resource("svc", vec![]).encode_to_vec();
    let resource_spans = [field(1, &resource), field(2, &field(2, &span))].concat();
    TraceRequest::parse(field(1, &resource_spans).into()).expect("valid request")
}

#[test]
fn event_values_split_over_several_fields_are_all_scanned() {
    // The view of the attribute shows the last part only; a decoder joins
    // the arrays, so the first part's address must be masked too.
    let req =
        span_with_split_event_attribute(&[arr(vec![s("ann@example.com")]), arr(vec![s("ok")])]);
    let joined = redact(&[], false);
    let out = run(&joined, req);
    assert_eq!(
        event_value(&spans_of(&out)[0], 0, "msg"),
        Some(arr(vec![s("****"), s("ok")]))
    );
    assert_eq!(joined.counts().values_masked, 1);

    // A decoder keeps the last of two strings; the blocked first one is
    // still counted and the span re-encoded, so its bytes do not pass on.
    let req = span_with_split_event_attribute(&[s("ann@example.com"), s("ok")]);
    let replaced = redact(&[], false);
    let out = run(&replaced, req);
    assert_eq!(event_value(&spans_of(&out)[0], 0, "msg"), Some(s("ok")));
    let bytes = out.as_bytes();
    assert!(!bytes.windows(15).any(|w| w == b"ann@example.com"));
    assert_eq!(
        replaced.counts(),
        RedactCounts {
            spans: 1,
            values_masked: 1,
            keys_removed: 0
        }
    );
}

#[test]
fn spans_with_clean_events_stay_byte_for_byte() {
    let mut clean = span("clean").attr("k", s("v"));
    clean.events = vec![event(
        "exception",
        vec![("exception.message", s("timeout"))],
    )];
    clean.links = vec![link(vec![("peer", s("db"))])];
    let mut dirty = span("dirty");
    dirty.events = vec![event("log", vec![("msg", s("to ann@example.com"))])];
    let req = request("svc", vec![clean.clone(), dirty, clean]);
    let out = run(&redact(&[], false), req.clone());
    for i in [0, 2] {
        assert_eq!(
            out.span(i).expect("span").raw(),
            req.span(i).expect("span").raw()
        );
    }
    let spans = spans_of(&out);
    assert_eq!(event_value(&spans[1], 0, "msg"), Some(s("to ****")));
    assert_eq!(spans[1].name, "dirty");
}

#[test]
fn chain_masks_events_after_dropping_spans() {
    let with_event = |name: &str| {
        let mut sp = span(name);
        sp.events = vec![event("e", vec![("m", s(&format!("{name}@example.com")))])];
        sp
    };
    let req = request(
        "svc",
        vec![
            with_event("dropme"),
            with_event("keep1"),
            with_event("dropme"),
            with_event("keep2"),
        ],
    );
    let chain = Chain::builder()
        .processor(
            Filter::from_config(&FilterConfig::drop().span_names(MatchType::Exact, ["dropme"]))
                .expect("filter"),
        )
        .processor(redact(&[], false))
        .build()
        .expect("chain");
    let spans = spans_of(&chain.process(req).expect("processes"));
    let names: Vec<_> = spans.iter().map(|sp| sp.name.as_str()).collect();
    assert_eq!(names, ["keep1", "keep2"]);
    for sp in &spans {
        assert_eq!(event_value(sp, 0, "m"), Some(s("****")));
    }
}

// ---------------------------------------------------------------- model

mod model {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::trace::v1::Span;

    /// Container levels of `v` (0 for a scalar).
    fn levels(v: &AnyValue) -> usize {
        match &v.value {
            Some(any_value::Value::ArrayValue(a)) => {
                1 + a.values.iter().map(levels).max().unwrap_or(0)
            }
            Some(any_value::Value::KvlistValue(l)) => {
                1 + l
                    .values
                    .iter()
                    .map(|kv| kv.value.as_ref().map_or(0, levels))
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }

    pub(super) struct Model {
        pub(super) regexes: Vec<regex::Regex>,
        pub(super) ignored: Vec<String>,
    }

    impl Model {
        fn mask_str(&self, s: &str) -> Option<String> {
            let mut out = s.to_owned();
            for re in &self.regexes {
                out = re.replace_all(&out, regex::NoExpand("****")).into_owned();
            }
            (self.regexes.iter().any(|re| re.is_match(s))).then_some(out)
        }

        /// Masks every blocked string; returns how many.
        fn mask_strings(&self, v: &mut AnyValue) -> u64 {
            match &mut v.value {
                Some(any_value::Value::StringValue(s)) => match self.mask_str(s) {
                    Some(m) => {
                        *s = m;
                        1
                    }
                    None => 0,
                },
                Some(any_value::Value::ArrayValue(a)) => {
                    a.values.iter_mut().map(|v| self.mask_strings(v)).sum()
                }
                Some(any_value::Value::KvlistValue(l)) => l
                    .values
                    .iter_mut()
                    .filter_map(|kv| kv.value.as_mut())
                    .map(|v| self.mask_strings(v))
                    .sum(),
                _ => 0,
            }
        }

        fn mask_top(&self, v: &mut AnyValue) -> u64 {
            if levels(v) > MAX_NESTING {
                *v = s("****");
                1
            } else {
                self.mask_strings(v)
            }
        }

        fn mask_kvs(&self, kvs: &mut [KeyValue], moved: &mut Vec<KeyValue>) -> u64 {
            let mut n = 0;
            for kv in kvs.iter_mut() {
                if self.ignored.contains(&kv.key) {
                    continue;
                }
                if let Some(v) = kv.value.as_mut() {
                    let k = self.mask_top(v);
                    if k > 0 {
                        moved.push(kv.clone());
                    }
                    n += k;
                }
            }
            n
        }

        /// The masked span, and the number of masked strings in it.
        pub(super) fn span(&self, span: &Span) -> (Span, u64) {
            let mut out = span.clone();
            let mut moved = Vec::new();
            let mut n = self.mask_kvs(&mut out.attributes, &mut moved);
            let mut unused = Vec::new();
            for e in &mut out.events {
                n += self.mask_kvs(&mut e.attributes, &mut unused);
            }
            for l in &mut out.links {
                n += self.mask_kvs(&mut l.attributes, &mut unused);
            }
            // Wire edits re-append edited attributes at the end.
            let moved_keys: Vec<String> = moved.iter().map(|kv| kv.key.clone()).collect();
            out.attributes.retain(|kv| !moved_keys.contains(&kv.key));
            out.attributes.extend(moved);
            if n > 0 {
                out.attributes.push(kv(MASKED_COUNT_KEY, i(n as i64)));
                out.attributes.push(kv(REMOVED_COUNT_KEY, i(0)));
            }
            (out, n)
        }

        pub(super) fn request(
            &self,
            req: &ExportTraceServiceRequest,
        ) -> (ExportTraceServiceRequest, u64, u64) {
            let mut out = req.clone();
            let (mut masked, mut spans) = (0, 0);
            for rs in &mut out.resource_spans {
                for ss in &mut rs.scope_spans {
                    for span in &mut ss.spans {
                        let (m, n) = self.span(span);
                        *span = m;
                        masked += n;
                        spans += u64::from(n > 0);
                    }
                }
            }
            (out, masked, spans)
        }
    }
}

mod props {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = AnyValue> {
        prop_oneof![
            3 => "[a-z @.]{0,6}".prop_map(|v| s(&v)),
            1 => Just(s("ann@example.com")),
            1 => "[a-z]{1,3}@[a-z]{1,3}\\.de".prop_map(|v| s(&format!("mail {v} end"))),
            1 => Just(s("pay 4111 1111 1111 1111 now")),
            1 => any::<i64>().prop_map(i),
            1 => any::<bool>().prop_map(b),
            1 => Just(bytes(b"ann@example.com")),
            1 => Just(empty()),
        ]
    }

    fn value() -> impl Strategy<Value = AnyValue> {
        let nested = leaf().prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(arr),
                prop::collection::vec(("[a-c]", inner), 0..3).prop_map(|pairs| {
                    kvl(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
                }),
            ]
        });
        prop_oneof![
            8 => nested,
            1 => (MAX_NESTING - 1..MAX_NESTING + 2, leaf()).prop_map(|(n, l)| nest(n, l)),
        ]
    }

    /// Attributes with distinct keys (some ignored).
    fn attributes() -> impl Strategy<Value = Vec<opentelemetry_proto::tonic::common::v1::KeyValue>>
    {
        prop::collection::btree_map(
            prop_oneof![
                Just("k1"),
                Just("k2"),
                Just("k3"),
                Just("audit"),
                Just("exception.message")
            ],
            value(),
            0..4,
        )
        .prop_map(|m| m.into_iter().map(|(k, v)| kv(k, v)).collect())
    }

    fn a_span() -> impl Strategy<Value = Span> {
        (
            "[a-e]{1,3}",
            attributes(),
            prop::collection::vec(("[a-z]{1,4}", attributes()), 0..3),
            prop::collection::vec(attributes(), 0..2),
        )
            .prop_map(|(name, attributes, events, links)| Span {
                attributes,
                events: events
                    .into_iter()
                    .enumerate()
                    .map(|(k, (name, attributes))| Event {
                        time_unix_nano: 1_000 + k as u64,
                        name,
                        attributes,
                        dropped_attributes_count: 0,
                    })
                    .collect(),
                links: links
                    .into_iter()
                    .map(|attributes| Link {
                        trace_id: trace_id(3, 4),
                        span_id: vec![9; 8],
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                ..span(&name)
            })
    }

    fn a_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
        // At least one span per resource: a rewrite leaves out resources without
        // spans, which carry no data.
        prop::collection::vec(prop::collection::vec(a_span(), 1..4), 1..3).prop_map(|groups| {
            proto_request(
                groups
                    .into_iter()
                    .enumerate()
                    .map(|(k, spans)| {
                        resource_spans(
                            resource(&format!("svc{k}"), vec![kv("owner", s("ann@example.com"))]),
                            spans,
                        )
                    })
                    .collect(),
            )
        })
    }

    /// Attribute lists compared as sets: wire edits move edited keys last.
    fn normalized(mut req: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
        for rs in &mut req.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    span.attributes.sort_by(|a, b| a.key.cmp(&b.key));
                }
            }
        }
        req
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        /// `chained`: run in a chain behind a filter that drops spans named
        /// `a*`, so the fused path, with drops, is checked too.
        fn redact_matches_the_model(req in a_request(), chained in any::<bool>()) {
            let model = model::Model {
                regexes: vec![regex::Regex::new(CARD).expect("regex"), regex::Regex::new(EMAIL).expect("regex")],
                ignored: vec!["audit".to_owned()],
            };
            let dropped = |span: &Span| chained && span.name.starts_with('a');
            let mut kept_req = req.clone();
            for rs in &mut kept_req.resource_spans {
                for ss in &mut rs.scope_spans {
                    ss.spans.retain(|span| !dropped(span));
                }
                rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            }
            kept_req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
            let (expected, masked, spans) = model.request(&kept_req);
            let input = parse(&req);
            let processor = redact(&["audit"], true);
            let out = if chained {
                let chain = Chain::builder()
                    .processor(
                        Filter::from_config(&FilterConfig::drop().span_names(MatchType::Glob, ["a*"]))
                            .expect("filter"),
                    )
                    .processor(processor.clone())
                    .build()
                    .expect("chain");
                chain.process(input.clone()).expect("processes")
            } else {
                run(&processor, input.clone())
            };
            // A valid request, equal to the model up to attribute order.
            let reparsed = TraceRequest::parse(out.as_bytes().clone()).expect("valid output");
            let flat = |r: &ExportTraceServiceRequest| -> Vec<Span> {
                r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| ss.spans.clone()).collect()
            };
            prop_assert_eq!(reparsed.span_count(), flat(&kept_req).len());
            prop_assert_eq!(normalized(decode(&out)), normalized(expected.clone()));
            prop_assert_eq!(
                processor.counts(),
                RedactCounts { spans, values_masked: masked, keys_removed: 0 }
            );
            // Spans the model leaves alone are copied byte for byte.
            let kept_in: Vec<usize> = flat(&req)
                .iter()
                .enumerate()
                .filter(|(_, span)| !dropped(span))
                .map(|(k, _)| k)
                .collect();
            for (k, (before, after)) in flat(&kept_req).iter().zip(&flat(&expected)).enumerate() {
                if before == after {
                    prop_assert_eq!(
                        out.span(k).expect("span").raw(),
                        input.span(kept_in[k]).expect("span").raw()
                    );
                }
            }
            if masked == 0 && !chained {
                prop_assert_eq!(out.as_bytes(), input.as_bytes());
            }
        }
    }
}
