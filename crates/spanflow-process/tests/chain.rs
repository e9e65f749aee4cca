//! Chains: identity, fusion of keep/drop steps, panic isolation, config.
#![cfg(not(loom))]

mod common;

use common::*;
use proptest::prelude::*;
use spanflow_process::*;

fn keep_everything_configs() -> Vec<ProcessorConfig> {
    serde_json::from_str(
        r#"[
        {"type": "filter", "match_type": "glob", "span_names": ["no-such-span*"]},
        {"type": "attributes", "actions": [
            {"key": "absent", "action": "update", "value": "x"},
            {"key": "absent.too", "action": "delete"}
        ]},
        {"type": "redact", "blocked_values": ["will-not-match-\\d{40}"]},
        {"type": "probabilistic_sampler", "ratio": 1.0},
        {"type": "span_stats"},
        {"type": "filter", "action": "keep", "min_duration_ms": 0}
    ]"#,
    )
    .expect("valid json")
}

#[test]
fn a_chain_that_keeps_everything_is_byte_identical() {
    let chain = Chain::from_config(&keep_everything_configs()).expect("valid chain");
    assert_eq!(
        chain.names().collect::<Vec<_>>(),
        [
            "filter#0",
            "attributes",
            "redact",
            "probabilistic_sampler",
            "span_stats",
            "filter#5"
        ]
    );
    for req in [
        realistic_request(1, 1),
        realistic_request(512, 2),
        TraceRequest::empty(),
    ] {
        let out = chain.process(req.clone()).expect("processes");
        assert_eq!(out.as_bytes(), req.as_bytes());
    }
    let stats = chain.stats();
    assert_eq!(stats.batches, 3);
    assert_eq!(stats.spans_in, 513);
    assert_eq!(stats.spans_out, 513);
    let seen: u64 = chain
        .span_stats("span_stats")
        .expect("stats handle")
        .snapshot()
        .iter()
        .map(|e| e.count)
        .sum();
    assert_eq!(seen, 513);
}

#[test]
fn the_same_chain_is_byte_identical_on_the_parallel_path() {
    let chain = Chain::builder_from_config(&keep_everything_configs())
        .expect("valid")
        .parallelism(Parallelism::new(2, 100).expect("pool"))
        .build()
        .expect("chain");
    let req = realistic_request(1500, 9);
    assert_eq!(
        chain.process(req.clone()).expect("ok").as_bytes(),
        req.as_bytes()
    );
}

#[test]
fn duplicate_names_are_rejected() {
    let configs: Vec<ProcessorConfig> = serde_json::from_str(
        r#"[{"type": "span_stats", "name": "x"}, {"type": "probabilistic_sampler", "name": "x", "ratio": 0.5}]"#,
    )
    .expect("json");
    assert!(
        matches!(Chain::from_config(&configs), Err(ProcessorConfigError::DuplicateName(n)) if n == "x")
    );
}

/// Panics on any batch containing a span named "boom".
struct Bomb {
    name: &'static str,
    as_predicate: bool,
}

impl SpanPredicate for Bomb {
    fn keep(&self, span: &spanflow_otlp::SpanView<'_>, _: &SpanHead<'_>) -> bool {
        assert!(span.name() != "boom", "boom in {}", self.name);
        true
    }
}

impl Processor for Bomb {
    fn name(&self) -> &str {
        self.name
    }
    fn process(&self, batch: TraceRequest, cx: &Context<'_>) -> Result<TraceRequest, ProcessError> {
        let keep = cx.keep_mask(&batch, |s| self.keep(s, &SpanHead::read(s)));
        Ok(batch.select(&keep))
    }
    fn as_predicate(&self) -> Option<&dyn SpanPredicate> {
        self.as_predicate.then_some(self as &dyn SpanPredicate)
    }
}

fn bomb_chain(as_predicate: bool, parallelism: Parallelism) -> Chain {
    Chain::builder()
        .processor(ProbabilisticSampler::new(1.0).expect("valid"))
        .processor(Bomb {
            name: "bomb",
            as_predicate,
        })
        .processor(
            Filter::from_config(&FilterConfig::drop().span_names(MatchType::Exact, ["dropme"]))
                .expect("valid"),
        )
        .parallelism(parallelism)
        .build()
        .expect("chain")
}

#[test]
fn a_panicking_processor_costs_only_its_batch() {
    for (as_predicate, parallelism) in [
        (false, Parallelism::sequential()),
        (true, Parallelism::sequential()),
        (true, Parallelism::new(2, 8).expect("pool")),
        (false, Parallelism::new(2, 8).expect("pool")),
    ] {
        let chain = bomb_chain(as_predicate, parallelism);
        let mut spans: Vec<_> = (0..40).map(|k| span(&format!("s{k}"))).collect();
        spans[33] = span("boom");
        let bad = request("svc", spans);
        let good = request("svc", vec![span("ok"), span("dropme")]);

        let err = chain.process(bad.clone()).expect_err("panics");
        assert!(
            matches!(&err, ProcessError::Panicked { processor, message }
            if processor == "bomb" && message.contains("boom in bomb")),
            "{err:?}"
        );
        assert_eq!(
            names(&chain.process(good.clone()).expect("goes on")),
            ["ok"]
        );
        chain.process(bad).expect_err("panics again");
        chain.process(good).expect("still goes on");

        let stats = chain.stats();
        assert_eq!(stats.panics_of("bomb"), 2);
        assert_eq!(stats.total_panics(), 2);
        assert_eq!(stats.failed_batches, 2);
        assert_eq!(stats.batches, 2);
        assert_eq!(stats.spans_out, 2);
        assert_eq!(chain.parallelism().escaped_panics(), 0);
    }
}

/// A chain with an attribute editor between keep/drop steps runs as one fused
/// pass; it must equal the processors applied one by one.
fn editor_chain_matches_one_by_one(
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
    ratio: f64,
) {
    let filter = Filter::from_config(&FilterConfig::drop().span_names(MatchType::Glob, ["GET *"]))
        .expect("valid");
    let attributes = AttributesProcessor::from_config(&AttributesConfig::new([
        AttributeAction::upsert("env", "prod"),
        AttributeAction::delete("k"),
        AttributeAction::hash("user"),
        AttributeAction::insert("tier", 2i64).on_resource(),
    ]))
    .expect("valid");
    let redact = Redact::from_config(&RedactConfig {
        blocked_values: vec!["\\d{3}".into()],
        ..RedactConfig::default()
    })
    .expect("valid");
    let sampler = ProbabilisticSampler::new(ratio).expect("valid");
    let req = request("svc", spans);
    let cx = Context::sequential();
    let mut expected = req.clone();
    for p in [
        &filter as &dyn Processor,
        &attributes,
        &sampler,
        &redact,
        &sampler,
    ] {
        expected = p.process(expected, &cx).expect("ok");
    }
    let expected_counts = redact.counts();
    for par in [
        Parallelism::sequential(),
        Parallelism::new(2, 5).expect("pool"),
    ] {
        let redact = Redact::from_config(&RedactConfig {
            blocked_values: vec!["\\d{3}".into()],
            ..RedactConfig::default()
        })
        .expect("valid");
        let chain = Chain::builder()
            .processor(filter.clone())
            .processor(attributes.clone())
            .processor(sampler.clone())
            .processor(redact.clone())
            .processor(sampler.clone().named_for_test())
            .parallelism(par)
            .build()
            .expect("chain");
        let out = chain.process(req.clone()).expect("ok");
        assert_eq!(spans_of(&out), spans_of(&expected));
        assert_eq!(decode(&out), decode(&expected));
        assert_eq!(out.as_bytes(), expected.as_bytes());
        assert_eq!(redact.counts(), expected_counts);
    }
}

trait NamedForTest {
    fn named_for_test(self) -> ProbabilisticSampler;
}

impl NamedForTest for ProbabilisticSampler {
    fn named_for_test(self) -> ProbabilisticSampler {
        ProbabilisticSampler::from_config(&SamplerConfig {
            name: Some("sampler-2".into()),
            ratio: self.ratio(),
        })
        .expect("valid")
    }
}

fn arb_span() -> impl Strategy<Value = opentelemetry_proto::tonic::trace::v1::Span> {
    (
        prop::sample::select(vec!["GET /a", "GET /b", "héllo", "POST /a", ""]),
        any::<u64>(),
        0i32..6,
        0u64..100,
    )
        .prop_map(|(name, low, kind, ms)| {
            span(name)
                .trace(trace_id(1, low))
                .kind(kind)
                .duration_ms(ms)
        })
}

fn arb_attributed_span() -> impl Strategy<Value = opentelemetry_proto::tonic::trace::v1::Span> {
    (
        arb_span(),
        prop::option::of("[a-z0-9 ]{0,12}"),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(span, user, k, env)| {
            let mut span = span;
            if let Some(user) = user {
                span = span.attr("user", s(&user));
            }
            if k {
                span = span.attr("k", i(1));
            }
            if env {
                span = span.attr("env", s("dev 123"));
            }
            span.attr("note", s("call 555-1234"))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fused_editor_steps_equal_processors_one_by_one(
        spans in prop::collection::vec(arb_attributed_span(), 0..40),
        ratio in 0.0f64..=1.0,
    ) {
        editor_chain_matches_one_by_one(spans, ratio);
    }

    /// A fused run of keep/drop steps equals applying each processor alone.
    #[test]
    fn fused_predicates_equal_processors_one_by_one(
        spans in prop::collection::vec(arb_span(), 0..60),
        ratio in 0.0f64..=1.0,
    ) {
        let filter = Filter::from_config(
            &FilterConfig::drop().span_names(MatchType::Glob, ["GET *"]).min_duration_ms(20.0),
        ).expect("valid");
        let sampler = ProbabilisticSampler::new(ratio).expect("valid");
        let kinds = Filter::from_config(
            &FilterConfig::keep().kinds([SpanKind::Server, SpanKind::Client, SpanKind::Internal]).named("kinds"),
        ).expect("valid");
        let req = request("svc", spans.clone());

        let cx = Context::sequential();
        let mut expected = req.clone();
        for p in [&filter as &dyn Processor, &sampler, &kinds] {
            expected = p.process(expected, &cx).expect("ok");
        }
        // The model: plain Rust over the prost structs.
        let model: Vec<String> = spans
            .iter()
            .filter(|s| {
                let ms = (s.end_time_unix_nano - s.start_time_unix_nano) / 1_000_000;
                !(s.name.starts_with("GET ") && ms >= 20)
            })
            .filter(|s| {
                let mut id = [0u8; 16];
                id.copy_from_slice(&s.trace_id);
                sampler.keeps_trace(&id)
            })
            .filter(|s| (1..=3).contains(&s.kind))
            .map(|s| s.name.clone())
            .collect();
        prop_assert_eq!(names(&expected), model);

        for par in [Parallelism::sequential(), Parallelism::new(2, 7).expect("pool")] {
            let chain = Chain::builder()
                .processor(filter.clone())
                .processor(sampler.clone())
                .processor(kinds.clone())
                .parallelism(par)
                .build()
                .expect("chain");
            let out = chain.process(req.clone()).expect("ok");
            prop_assert_eq!(out.as_bytes(), expected.as_bytes());
        }
    }
}
