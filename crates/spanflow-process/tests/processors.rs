//! Each built-in processor against hand-written expectations.
#![cfg(not(loom))]

mod common;

use common::*;
use opentelemetry_proto::tonic::common::v1::any_value::Value as PV;
use sha2::Digest;
use spanflow_process::*;

fn run(p: &dyn Processor, req: TraceRequest) -> TraceRequest {
    p.process(req, &Context::sequential()).expect("processes")
}

fn sha(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

// ---------------------------------------------------------------- filter

fn filter(cfg: FilterConfig) -> Filter {
    Filter::from_config(&cfg).expect("valid filter")
}

#[test]
fn filter_drops_by_exact_glob_and_regex_name() {
    let req = request(
        "svc",
        vec![
            span("GET /health"),
            span("GET /healthz"),
            span("GET /api/cart"),
            span("Grüße /π"),
            span(""),
        ],
    );
    let exact =
        filter(FilterConfig::drop().span_names(MatchType::Exact, ["GET /health", "Grüße /π"]));
    assert_eq!(
        names(&run(&exact, req.clone())),
        ["GET /healthz", "GET /api/cart", ""]
    );

    let glob =
        filter(FilterConfig::drop().span_names(MatchType::Glob, ["GET /health*", "Grüße *"]));
    assert_eq!(names(&run(&glob, req.clone())), ["GET /api/cart", ""]);

    let regex = filter(FilterConfig::keep().span_names(MatchType::Regex, ["^GET /(api|healthz$)"]));
    assert_eq!(names(&run(&regex, req)), ["GET /healthz", "GET /api/cart"]);
}

#[test]
fn filter_by_kind_status_and_duration() {
    let req = request(
        "svc",
        vec![
            span("a").kind(2).status(2).duration_ms(5),
            span("b").kind(3).status(1).duration_ms(500),
            span("c").kind(2).status(0).duration_ms(50),
            span("d").kind(1).duration_ms(0),
        ],
    );
    let servers = filter(FilterConfig::keep().kinds([SpanKind::Server]));
    assert_eq!(names(&run(&servers, req.clone())), ["a", "c"]);
    let errors = filter(FilterConfig::keep().statuses([StatusCode::Error, StatusCode::Ok]));
    assert_eq!(names(&run(&errors, req.clone())), ["a", "b"]);
    let slow = filter(FilterConfig::drop().max_duration_ms(50.0));
    assert_eq!(names(&run(&slow, req.clone())), ["b"]);
    let window = filter(
        FilterConfig::keep()
            .min_duration_ms(5.0)
            .max_duration_ms(50.0),
    );
    assert_eq!(names(&run(&window, req.clone())), ["a", "c"]);
    // Conditions combine with AND.
    let both = filter(
        FilterConfig::drop()
            .kinds([SpanKind::Server])
            .min_duration_ms(10.0),
    );
    assert_eq!(names(&run(&both, req)), ["a", "b", "d"]);
}

#[test]
fn filter_by_span_and_resource_attributes() {
    let req = parse(&proto_request(vec![
        resource_spans(
            resource("cart", vec![kv("region", s("eu-west"))]),
            vec![
                span("a")
                    .attr("http.status_code", i(200))
                    .attr("user", s("Zoë")),
                span("b").attr("http.status_code", i(500)),
            ],
        ),
        resource_spans(
            resource("billing", Vec::new()),
            vec![span("c").attr("http.status_code", i(200))],
        ),
    ]));
    let ok =
        filter(FilterConfig::keep().attribute(AttributeMatch::equals("http.status_code", 200i64)));
    assert_eq!(names(&run(&ok, req.clone())), ["a", "c"]);
    let user = filter(FilterConfig::keep().attribute(AttributeMatch::glob("user", "Z*ë")));
    assert_eq!(names(&run(&user, req.clone())), ["a"]);
    let has_user = filter(FilterConfig::drop().attribute(AttributeMatch::exists("user")));
    assert_eq!(names(&run(&has_user, req.clone())), ["b", "c"]);
    let eu =
        filter(FilterConfig::drop().resource_attribute(AttributeMatch::regex("region", "^eu-")));
    let out = run(&eu, req.clone());
    assert_eq!(names(&out), ["c"]);
    assert_eq!(
        decode(&out).resource_spans.len(),
        1,
        "emptied resource is gone"
    );
    let cart = filter(
        FilterConfig::keep().resource_attribute(AttributeMatch::equals("service.name", "cart")),
    );
    assert_eq!(names(&run(&cart, req)), ["a", "b"]);
}

#[test]
fn filter_that_matches_nothing_returns_the_same_bytes() {
    let req = realistic_request(64, 1);
    let f = filter(FilterConfig::drop().span_names(MatchType::Exact, ["no such span"]));
    assert_eq!(run(&f, req.clone()).as_bytes(), req.as_bytes());
}

#[test]
fn every_processor_accepts_an_empty_batch() {
    let processors: Vec<Box<dyn Processor>> = vec![
        Box::new(filter(
            FilterConfig::drop().span_names(MatchType::Exact, ["x"]),
        )),
        Box::new(
            AttributesProcessor::from_config(&AttributesConfig::new([
                AttributeAction::upsert("k", "v"),
                AttributeAction::upsert("r", "v").on_resource(),
            ]))
            .expect("valid"),
        ),
        Box::new(
            Redact::from_config(&RedactConfig {
                blocked_values: vec!["x".into()],
                ..RedactConfig::default()
            })
            .expect("valid"),
        ),
        Box::new(ProbabilisticSampler::new(0.5).expect("valid")),
        Box::new(SpanStats::new()),
    ];
    for p in &processors {
        let out = run(p.as_ref(), TraceRequest::empty());
        assert_eq!(out.span_count(), 0, "{}", p.name());
        let out = run(p.as_ref(), request("svc", Vec::new()));
        assert_eq!(out.span_count(), 0, "{}", p.name());
    }
}

// ---------------------------------------------------------------- attributes

fn attributes(actions: Vec<AttributeAction>) -> AttributesProcessor {
    AttributesProcessor::from_config(&AttributesConfig::new(actions)).expect("valid attributes")
}

#[test]
fn attributes_insert_update_upsert_delete_hash_on_spans() {
    let req = request(
        "svc",
        vec![
            span("a")
                .attr("present", s("old"))
                .attr("email", s("jöhn@exämple.com"))
                .attr("gone", i(1))
                .attr("n", i(42)),
            span("b"),
        ],
    );
    let p = attributes(vec![
        AttributeAction::insert("present", "not-set"),
        AttributeAction::insert("new", "ünïcode ✓"),
        AttributeAction::update("present", "updated"),
        AttributeAction::update("absent", "never"),
        AttributeAction::upsert("up", 7i64),
        AttributeAction::delete("gone"),
        AttributeAction::hash("email"),
        AttributeAction::hash("n"),
        AttributeAction::hash("missing"),
    ]);
    let spans = spans_of(&run(&p, req));
    let a = &spans[0].attributes;
    assert_eq!(str_attr(a, "present"), Some("updated"));
    assert_eq!(str_attr(a, "new"), Some("ünïcode ✓"));
    assert_eq!(attr_of(a, "absent"), None);
    assert_eq!(attr_of(a, "up"), Some(&PV::IntValue(7)));
    assert_eq!(attr_of(a, "gone"), None);
    assert_eq!(str_attr(a, "email"), Some(sha("jöhn@exämple.com").as_str()));
    assert_eq!(str_attr(a, "n"), Some(sha("42").as_str()));
    assert_eq!(attr_of(a, "missing"), None);
    let b = &spans[1].attributes;
    assert_eq!(str_attr(b, "new"), Some("ünïcode ✓"));
    assert_eq!(attr_of(b, "up"), Some(&PV::IntValue(7)));
    // insert then update: the update sees the inserted key.
    assert_eq!(str_attr(b, "present"), Some("updated"));
    assert_eq!(b.len(), 3);
}

#[test]
fn attributes_copy_from_attribute_and_delete_by_pattern() {
    let req = request(
        "svc",
        vec![
            span("a")
                .attr("secret.token", s("t0k"))
                .attr("secret.key", s("k3y"))
                .attr("user.id", s("u-1")),
        ],
    );
    let p = attributes(vec![
        AttributeAction::upsert("enduser.id", "").from_attribute("user.id"),
        AttributeAction::insert("copy.of.missing", "").from_attribute("nope"),
        AttributeAction::delete_matching("^secret\\."),
    ]);
    let spans = spans_of(&run(&p, req));
    let a = &spans[0].attributes;
    assert_eq!(str_attr(a, "enduser.id"), Some("u-1"));
    assert_eq!(attr_of(a, "copy.of.missing"), None);
    assert_eq!(attr_of(a, "secret.token"), None);
    assert_eq!(attr_of(a, "secret.key"), None);
    assert_eq!(str_attr(a, "user.id"), Some("u-1"));
}

#[test]
fn attributes_on_resources_edit_each_resource_once() {
    let req = parse(&proto_request(vec![
        resource_spans(
            resource("cart", vec![kv("env", s("staging"))]),
            vec![span("a"), span("b")],
        ),
        resource_spans(resource("bill", Vec::new()), vec![span("c")]),
    ]));
    let p = attributes(vec![
        AttributeAction::update("env", "prod").on_resource(),
        AttributeAction::insert("region", "eu-west-1").on_resource(),
        AttributeAction::hash("service.name").on_resource(),
    ]);
    let out = decode(&run(&p, req));
    let r0 = &out.resource_spans[0]
        .resource
        .as_ref()
        .expect("resource")
        .attributes;
    assert_eq!(str_attr(r0, "env"), Some("prod"));
    assert_eq!(str_attr(r0, "region"), Some("eu-west-1"));
    assert_eq!(str_attr(r0, "service.name"), Some(sha("cart").as_str()));
    assert_eq!(r0.iter().filter(|kv| kv.key == "region").count(), 1);
    let r1 = &out.resource_spans[1]
        .resource
        .as_ref()
        .expect("resource")
        .attributes;
    assert_eq!(attr_of(r1, "env"), None);
    assert_eq!(str_attr(r1, "service.name"), Some(sha("bill").as_str()));
    assert_eq!(out.resource_spans[0].scope_spans[0].spans.len(), 2);
}

#[test]
fn attributes_that_change_nothing_return_the_same_bytes() {
    let req = realistic_request(32, 2);
    let p = attributes(vec![
        AttributeAction::update("absent", "x"),
        AttributeAction::delete("absent.too"),
    ]);
    assert_eq!(run(&p, req.clone()).as_bytes(), req.as_bytes());
}

#[test]
fn attribute_configs_are_validated() {
    let bad = [
        AttributesConfig::new([]),
        AttributesConfig::new([AttributeAction {
            key: None,
            ..AttributeAction::delete("x")
        }]),
        AttributesConfig::new([AttributeAction {
            pattern: Some("^a".into()),
            ..AttributeAction::upsert("x", 1i64)
        }]),
        AttributesConfig::new([AttributeAction {
            value: Some(Value::Int(1)),
            ..AttributeAction::delete("x")
        }]),
        AttributesConfig::new([AttributeAction::delete_matching("(")]),
    ];
    for cfg in bad {
        assert!(AttributesProcessor::from_config(&cfg).is_err(), "{cfg:?}");
    }
}

// ---------------------------------------------------------------- redact

#[test]
fn redact_masks_cards_and_emails_and_counts() {
    let req = request(
        "svc",
        vec![
            span("a")
                .attr(
                    "note",
                    s("paid with 4111 1111 1111 1111, mail zoë@exämple.de"),
                )
                .attr("card", s("5500-0000-0000-0004"))
                .attr("route", s("/api/4111111111111111"))
                .attr("count", i(4111)),
            span("b").attr("note", s("nothing to see ✓")),
        ],
    );
    let redact = Redact::from_config(&RedactConfig {
        ignored_keys: vec!["route".into()],
        blocked_values: vec![
            r"\b\d{4}[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b".into(),
            r"[\w.+-]+@[\w-]+\.[\w.]+".into(),
        ],
        summary: true,
        ..RedactConfig::default()
    })
    .expect("valid");
    let out = run(&redact, req);
    let spans = spans_of(&out);
    let a = &spans[0].attributes;
    assert_eq!(str_attr(a, "note"), Some("paid with ****, mail ****"));
    assert_eq!(str_attr(a, "card"), Some("****"));
    assert_eq!(str_attr(a, "route"), Some("/api/4111111111111111"));
    assert_eq!(attr_of(a, "count"), Some(&PV::IntValue(4111)));
    assert_eq!(attr_of(a, MASKED_COUNT_KEY), Some(&PV::IntValue(2)));
    assert_eq!(attr_of(a, REMOVED_COUNT_KEY), Some(&PV::IntValue(0)));
    assert_eq!(
        str_attr(&spans[1].attributes, "note"),
        Some("nothing to see ✓")
    );
    assert_eq!(attr_of(&spans[1].attributes, MASKED_COUNT_KEY), None);
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
fn redact_allow_list_removes_other_keys() {
    let req = request(
        "svc",
        vec![
            span("a")
                .attr("http.method", s("GET"))
                .attr("db.statement", s("SELECT * FROM users WHERE email='x@y.z'"))
                .attr("ключ", s("значение")),
        ],
    );
    let redact = Redact::from_config(&RedactConfig {
        allowed_keys: Some(vec!["http.method".into(), "ключ".into()]),
        ..RedactConfig::default()
    })
    .expect("valid");
    let spans = spans_of(&run(&redact, req));
    let keys: Vec<_> = spans[0]
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(keys, ["http.method", "ключ"]);
    assert_eq!(redact.counts().keys_removed, 1);
    assert_eq!(redact.counts().spans, 1);
}

// ---------------------------------------------------------------- span stats

#[test]
fn span_stats_count_errors_and_durations_per_service_and_name() {
    let req = parse(&proto_request(vec![
        resource_spans(
            resource("cart", Vec::new()),
            vec![
                span("GET /cart").duration_ms(10),
                span("GET /cart").duration_ms(20).status(2),
                span("Ωmega").duration_ms(1),
            ],
        ),
        resource_spans(
            opentelemetry_proto::tonic::resource::v1::Resource::default(),
            vec![span("GET /cart").duration_ms(30)],
        ),
    ]));
    let stats = SpanStats::new();
    let out = run(&stats, req.clone());
    assert_eq!(
        out.as_bytes(),
        req.as_bytes(),
        "observing does not change the batch"
    );
    run(&stats, req);
    let snap = stats.snapshot();
    let keys: Vec<_> = snap
        .iter()
        .map(|e| (e.service.as_str(), e.span_name.as_str(), e.count, e.errors))
        .collect();
    assert_eq!(
        keys,
        [
            ("cart", "GET /cart", 4, 2),
            ("cart", "Ωmega", 2, 0),
            (UNKNOWN_SERVICE, "GET /cart", 2, 0),
        ]
    );
    let h = &snap[0].durations;
    assert_eq!(h.count(), 4);
    assert_eq!(h.sum(), std::time::Duration::from_millis(60));
    let p25 = h.quantile(0.25).expect("non-empty").as_secs_f64();
    assert!((0.0075..=0.010).contains(&p25), "{p25}");
    let max = h.quantile(1.0).expect("non-empty").as_secs_f64();
    assert!((0.015..=0.020).contains(&max), "{max}");
}

#[test]
fn span_stats_caps_distinct_keys() {
    let stats = SpanStats::from_config(&SpanStatsConfig {
        name: None,
        max_keys: 2,
    })
    .expect("valid");
    let req = request("svc", vec![span("a"), span("b"), span("c"), span("d")]);
    run(&stats, req);
    let snap = stats.snapshot();
    assert_eq!(snap.len(), 3);
    assert_eq!(snap.iter().map(|e| e.count).sum::<u64>(), 4);
    assert!(
        snap.iter()
            .any(|e| e.service == OVERFLOW_KEY && e.count == 2)
    );
}

#[test]
fn span_stats_aggregate_concurrently_to_the_sequential_totals() {
    let stats = SpanStats::new();
    let par = Parallelism::new(2, 64).expect("pool");
    let chain = Chain::builder()
        .span_stats(stats.clone())
        .parallelism(par)
        .build()
        .expect("chain");
    let batches: Vec<TraceRequest> = (0..8).map(|k| realistic_request(300, k)).collect();
    std::thread::scope(|scope| {
        for part in batches.chunks(2) {
            let chain = &chain;
            scope.spawn(move || {
                for b in part {
                    chain.process(b.clone()).expect("processes");
                }
            });
        }
    });
    let sequential = SpanStats::new();
    for b in &batches {
        sequential.record(b, &Context::sequential());
    }
    assert_eq!(stats.snapshot(), sequential.snapshot());
    assert_eq!(
        stats.snapshot().iter().map(|e| e.count).sum::<u64>(),
        8 * 300
    );
}
