//! Realistic span fixtures for tests and benchmarks (this crate's and others').
//!
//! Not part of the stable API.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// A small deterministic PRNG (SplitMix64), so fixtures need no `rand`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The resource used by the fixtures: `service.name = "checkout"` and a few more.
pub fn resource() -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "checkout"),
            KeyValue::new("service.version", "1.4.2"),
            KeyValue::new("host.name", "node-17.eu-west"),
            KeyValue::new("telemetry.sdk.language", "rust"),
        ])
        .build()
}

const NAMES: [&str; 6] = [
    "GET /api/cart",
    "POST /api/checkout",
    "SELECT orders",
    "redis GET",
    "publish order.created",
    "render invoice",
];

const ROUTES: [&str; 4] = ["/api/cart", "/api/checkout", "/api/orders/{id}", "/health"];

fn scopes() -> [InstrumentationScope; 2] {
    [
        InstrumentationScope::builder("checkout-http")
            .with_version("0.9.1")
            .build(),
        InstrumentationScope::builder("sqlx")
            .with_version("0.8.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.24.0")
            .with_attributes([KeyValue::new("db.system", "postgresql")])
            .build(),
    ]
}

/// One realistic span: 4–8 attributes of mixed types, 0–2 events, sometimes a link;
/// about 290 bytes on the wire.
pub fn span(rng: &mut Rng) -> SpanData {
    let [http, sql] = scopes();
    let scope = if rng.below(3) == 0 { sql } else { http };
    let trace_id = TraceId::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64() | 1));
    let span_id = SpanId::from(rng.next_u64() | 1);
    let parent = if rng.below(4) == 0 {
        SpanId::INVALID
    } else {
        SpanId::from(rng.next_u64() | 1)
    };
    let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + rng.below(1 << 40));
    let end = start + Duration::from_micros(rng.below(2_000_000));
    let mut attributes = vec![
        KeyValue::new(
            "http.request.method",
            if rng.below(2) == 0 { "GET" } else { "POST" },
        ),
        KeyValue::new("url.path", ROUTES[rng.below(ROUTES.len() as u64) as usize]),
        KeyValue::new(
            "http.response.status_code",
            [200i64, 201, 404, 500][rng.below(4) as usize],
        ),
        KeyValue::new("server.address", "checkout.internal"),
    ];
    let extra = rng.below(5);
    if extra > 0 {
        attributes.push(KeyValue::new(
            "user.id",
            format!("u-{}", rng.below(100_000)),
        ));
    }
    if extra > 1 {
        attributes.push(KeyValue::new("retry", rng.below(2) == 0));
    }
    if extra > 2 {
        attributes.push(KeyValue::new(
            "latency.ratio",
            rng.below(1000) as f64 / 997.0,
        ));
    }
    if extra > 3 {
        attributes.push(KeyValue::new(
            "cart.items",
            opentelemetry::Value::Array(opentelemetry::Array::String(vec![
                "sku-1".into(),
                "sku-22".into(),
            ])),
        ));
    }
    let mut events = SpanEvents::default();
    for _ in 0..rng.below(3) {
        events.events.push(Event::new(
            "cache.miss",
            start + Duration::from_micros(rng.below(1000)),
            vec![KeyValue::new("cache.key", "cart:42")],
            0,
        ));
    }
    let mut links = SpanLinks::default();
    if rng.below(3) == 0 {
        links.links.push(Link::new(
            SpanContext::new(
                TraceId::from(u128::from(rng.next_u64()) + 1),
                SpanId::from(rng.next_u64() | 1),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ),
            vec![KeyValue::new("link.kind", "follows_from")],
            0,
        ));
    }
    let status = match rng.below(10) {
        0 => Status::error("upstream timed out"),
        1 => Status::Ok,
        _ => Status::Unset,
    };
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: rng.below(8) == 0,
        span_kind: [SpanKind::Server, SpanKind::Client, SpanKind::Internal][rng.below(3) as usize]
            .clone(),
        name: Cow::Borrowed(NAMES[rng.below(NAMES.len() as u64) as usize]),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events,
        links,
        status,
        instrumentation_scope: scope,
    }
}

/// `n` realistic spans from `seed`.
pub fn span_batch(n: usize, seed: u64) -> Vec<SpanData> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| span(&mut rng)).collect()
}

/// The time every fixture span starts after (for tests that check times).
pub fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000)
}

/// The [`SpanHead`](crate::SpanHead) of `span` put together from the `SpanView`
/// accessors, one field at a time: what [`SpanView::head`](crate::SpanView::head) must
/// equal.
pub fn head_from_accessors<'a>(span: &crate::SpanView<'a>) -> crate::SpanHead<'a> {
    crate::SpanHead {
        trace_id: span.trace_id(),
        name: span.name(),
        kind: span.kind(),
        start_time_unix_nano: span.start_time_unix_nano(),
        end_time_unix_nano: span.end_time_unix_nano(),
        status_code: span.status_code(),
    }
}

/// Runs the reader and everything built on it over arbitrary bytes, panicking if an
/// invariant breaks: parse must agree with prost on what is a valid request, never panic,
/// and every splice of an accepted request must itself parse to the same spans.
///
/// This is the body of the fuzz target and of the mutation test.
pub fn exercise_reader(data: &[u8]) {
    use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
    use crate::{AnyValueView, DecodeError, TraceRequest};
    use prost::Message;

    fn touch(v: &AnyValueView<'_>) -> usize {
        match v {
            AnyValueView::Array(a) => a.iter().fold(0, |n, v| n.wrapping_add(touch(&v))),
            AnyValueView::KvList(l) => l.iter().fold(0, |n, kv| {
                n.wrapping_add(kv.key.len()).wrapping_add(touch(&kv.value))
            }),
            AnyValueView::String(s) => s.len(),
            AnyValueView::Bytes(b) => b.len(),
            _ => 1,
        }
    }

    let prost = ExportTraceServiceRequest::decode(data);
    let request = match TraceRequest::parse(bytes::Bytes::copy_from_slice(data)) {
        Ok(request) => request,
        Err(e) => {
            assert!(e.offset() <= data.len(), "error offset past the end: {e}");
            // prost's recursion limit counts differently; only compare other errors.
            if !matches!(e, DecodeError::TooDeep { .. }) {
                assert!(prost.is_err(), "rejected what prost accepts: {e}");
            }
            return;
        }
    };
    let decoded = match prost {
        Ok(decoded) => decoded,
        Err(e) => panic!("accepted what prost rejects: {e}"),
    };
    let spans: usize = decoded
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(request.span_count(), spans);

    let mut acc = 0usize;
    let mut add = |x: usize| acc = acc.wrapping_add(x);
    for span in request.spans() {
        add(span.name().len() + span.trace_state().len() + span.status_message().len());
        add(span.trace_id()[0] as usize + span.span_id()[0] as usize);
        add(span.parent_span_id().map_or(0, |p| p[0] as usize));
        add(span.kind() as usize);
        add(span.flags() as usize);
        add(span.status_code() as usize);
        add((span.start_time_unix_nano() ^ span.end_time_unix_nano()) as usize);
        add(span.event_count() + span.link_count());
        add(span.dropped_attributes_count() as usize);
        for kv in span.attributes() {
            add(kv.key.len());
            add(touch(&kv.value));
        }
        for kv in span.attributes().stored() {
            add(kv.key.len());
            add(kv.value_fields().flatten().map(|v| touch(&v)).sum());
        }
        assert_eq!(span.head(), head_from_accessors(&span), "head");
        assert_eq!(span.events().count(), span.event_count());
        assert_eq!(span.links().count(), span.link_count());
        add((span.dropped_events_count() ^ span.dropped_links_count()) as usize);
        for event in span.events() {
            add(event.name().len() + event.time_unix_nano() as usize);
            add(event.dropped_attributes_count() as usize);
            for kv in event.attributes() {
                add(kv.key.len() + touch(&kv.value));
            }
        }
        for link in span.links() {
            add(link.trace_id()[0] as usize + link.span_id()[0] as usize);
            add(link.trace_state().len() + link.flags() as usize);
            add(link.dropped_attributes_count() as usize);
            for kv in link.attributes() {
                add(kv.key.len() + touch(&kv.value));
            }
        }
        let scope = span.scope();
        add(scope.name().len() + scope.version().len() + scope.schema_url().len());
        add(scope.attributes().count());
        let resource = span.resource();
        for kv in resource.attributes() {
            add(touch(&kv.value));
        }
        add(resource.schema_url().len() + resource.service_name().map_or(0, str::len));
    }
    std::hint::black_box(acc);

    let check = |out: &TraceRequest, what: &str| {
        let again = match TraceRequest::parse(out.as_bytes().clone()) {
            Ok(again) => again,
            Err(e) => panic!("{what} produced an invalid request: {e}"),
        };
        assert_eq!(again.span_count(), out.span_count(), "{what}");
        for (a, b) in again.spans().zip(out.spans()) {
            assert_eq!(a.raw(), b.raw(), "{what}");
            assert_eq!(a.name(), b.name(), "{what}");
            // Compared through `Debug`, not `==`: a double attribute may be NaN, which is
            // never equal to itself although the bytes (checked above) are the same.
            let render = |span: &crate::SpanView<'_>| {
                span.attributes()
                    .map(|kv| format!("{:?}", (kv.key, kv.value)))
                    .collect::<Vec<_>>()
            };
            assert_eq!(render(&a), render(&b), "{what}");
        }
    };
    let n = request.span_count();
    let keep: Vec<bool> = (0..n)
        .map(|i| !(i * 7 + data.len()).is_multiple_of(3))
        .collect();
    let selected = request.select(&keep);
    assert_eq!(selected.span_count(), keep.iter().filter(|&&k| k).count());
    check(&selected, "select");
    let parts = request.split(2, 256);
    assert_eq!(parts.iter().map(TraceRequest::span_count).sum::<usize>(), n);
    for part in &parts {
        check(part, "split");
    }
    let merged = TraceRequest::merge(&parts);
    assert_eq!(merged.span_count(), n);
    check(&merged, "merge");
    // What the parser accepts, the trace grouping accepts: every span lands in exactly one
    // group, each a valid request of that trace alone.
    let groups = match crate::group_by_trace(request.as_bytes()) {
        Ok(groups) => groups,
        Err(e) => panic!("group_by_trace refused a request parse accepted: {e}"),
    };
    assert_eq!(
        groups.iter().map(|g| g.spans).sum::<usize>(),
        n,
        "group_by_trace"
    );
    for group in &groups {
        let trace = match TraceRequest::parse(group.request.clone()) {
            Ok(trace) => trace,
            Err(e) => panic!("group_by_trace produced an invalid request: {e}"),
        };
        assert_eq!(trace.span_count(), group.spans, "group_by_trace");
        assert!(
            trace.spans().all(|s| s.trace_id() == group.trace_id),
            "group_by_trace mixed traces"
        );
    }
    let rewritten = request.rewrite(|span, patch| {
        if span.index() % 4 == 1 {
            patch.drop_span();
        }
        if let Some(kv) = span.attributes().next() {
            patch.remove_attribute(kv.key);
            patch.set_attribute_view("copied", kv.value);
        }
        patch.set_attribute("fuzz", 1i64);
        patch.resource().set_attribute("fuzzed", true);
    });
    check(&rewritten, "rewrite");
    #[cfg(feature = "json")]
    json_round_trip(&request, n);
}

/// `request` to OTLP/JSON and back keeps its `n` spans.
#[cfg(feature = "json")]
fn json_round_trip(request: &crate::TraceRequest, n: usize) {
    let json = crate::json::to_json(request).expect("a parsed request converts");
    if let Ok(back) = crate::json::from_json(&json) {
        assert_eq!(back.span_count(), n, "json round trip");
    }
}
