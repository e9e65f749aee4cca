//! Benchmarks of spanflow-process.
//!
//! * `process/chain_512`: filter + attributes + sampler on a 512-span batch:
//!   `spanflow` (the chain on a batch already in the wire model, as batches
//!   are in the pipeline) against `prost` (decode the bytes into
//!   `ExportTraceServiceRequest`, mutate the structs, re-encode).
//! * `process/chain_512_from_bytes`: the same, but `spanflow` also indexes
//!   the received bytes first (`TraceRequest::parse`), bytes in to bytes out.
//! * `process/scheduler`: 256 batches of 64 spans through the same chain on 2
//!   workers, until every completion has fired: `spanflow` (the
//!   work-stealing [`Scheduler`]) against `rayon_spawn` (one `spawn` per batch
//!   on a 2-thread pool) and `crossbeam_channel` (2 threads on one MPMC
//!   channel). `process/scheduler_small`: the same with 2048 batches of 4
//!   spans, where scheduling overhead shows.
//! * `process/redact_512`: `Redact` masking e-mail addresses in a 512-span
//!   batch where every span has one in an attribute and every 8th span one
//!   in an exception event: `spanflow` (the processor on the wire model)
//!   against `prost` (decode, mask every string with the same
//!   `Redact::mask_str`, re-encode).
//! * `process/cutoff_<n>`: a span-stats + filter chain on one batch of `n`
//!   spans, `sequential` against `rayon` (the dedicated pool): where the
//!   parallel path starts to pay sets `DEFAULT_PARALLEL_CUTOFF`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use parking_lot::{Condvar, Mutex};
use prost::Message;
use spanflow_process::{
    AttributeAction, AttributesConfig, AttributesProcessor, Chain, Filter, FilterConfig, MatchType,
    Parallelism, ProbabilisticSampler, Redact, RedactConfig, Scheduler, SpanStats, TraceRequest,
};

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.to_owned())),
    })
}

fn i(v: i64) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::IntValue(v)),
    })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value,
        ..Default::default()
    }
}

/// A realistic span: varied names, 8 attributes, random-looking ids.
fn span(n: u64) -> Span {
    const NAMES: [&str; 6] = [
        "GET /api/cart",
        "POST /api/checkout",
        "SELECT orders",
        "GET /health",
        "publish order.created",
        "render invoice",
    ];
    let mix = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678;
    let mut trace_id = mix.to_be_bytes().to_vec();
    trace_id.extend_from_slice(
        &mix.rotate_left(23)
            .wrapping_mul(0xd1b5_4a32_d192_ed03)
            .to_be_bytes(),
    );
    Span {
        trace_id,
        span_id: mix.rotate_left(7).to_be_bytes().to_vec(),
        parent_span_id: mix.rotate_left(13).to_be_bytes().to_vec(),
        name: NAMES[(n % 6) as usize].to_owned(),
        kind: 1 + (n % 3) as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + n * 1000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + n * 1000 + (n % 50) * 1_000_000,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.route", s("/api/cart")),
            kv("http.status_code", i(200)),
            kv("user.email", s("jane.doe@example.com")),
            kv("net.peer.name", s("10.0.3.17")),
            kv("thread.id", i(n as i64 % 16)),
            kv("component", s("http")),
            kv("request.id", s(&format!("req-{n:08x}"))),
        ],
        status: Some(Status {
            code: if n.is_multiple_of(10) { 2 } else { 0 },
            message: String::new(),
        }),
        ..Default::default()
    }
}

fn request_bytes(spans: usize, seed: u64) -> Bytes {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("checkout")),
                    kv("host.name", s("node-17.eu-west")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "bench".to_owned(),
                    ..Default::default()
                }),
                spans: (0..spans as u64)
                    .map(|k| span(seed * 1_000_003 + k))
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    req.encode_to_vec().into()
}

const RATIO: f64 = 0.5;

/// The chain under test: drop health checks, tag and trim attributes, sample.
fn chain(parallelism: Parallelism) -> Chain {
    Chain::builder()
        .processor(
            Filter::from_config(
                &FilterConfig::drop().span_names(MatchType::Glob, ["GET /health*"]),
            )
            .unwrap(),
        )
        .processor(
            AttributesProcessor::from_config(&AttributesConfig::new([
                AttributeAction::upsert("deployment.environment", "prod"),
                AttributeAction::delete("thread.id"),
            ]))
            .unwrap(),
        )
        .processor(ProbabilisticSampler::new(RATIO).unwrap())
        .parallelism(parallelism)
        .build()
        .unwrap()
}

/// The same chain, the obvious way: decode, mutate the structs, re-encode.
fn prost_chain(bytes: &Bytes, glob: &globset::GlobSet, sampler: &ProbabilisticSampler) -> Vec<u8> {
    let mut req = ExportTraceServiceRequest::decode(bytes.clone()).unwrap();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| !glob.is_match(&span.name));
            for span in &mut ss.spans {
                match span
                    .attributes
                    .iter_mut()
                    .find(|kv| kv.key == "deployment.environment")
                {
                    Some(kv) => kv.value = s("prod"),
                    None => span
                        .attributes
                        .push(kv("deployment.environment", s("prod"))),
                }
                span.attributes.retain(|kv| kv.key != "thread.id");
            }
            ss.spans.retain(|span| {
                <[u8; 16]>::try_from(span.trace_id.as_slice())
                    .is_ok_and(|id| sampler.keeps_trace(&id))
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    req.encode_to_vec()
}

fn bench_chain(c: &mut Criterion) {
    let bytes = request_bytes(512, 1);
    let chain = chain(Parallelism::sequential());
    let glob = globset::GlobSetBuilder::new()
        .add(globset::Glob::new("GET /health*").unwrap())
        .build()
        .unwrap();
    let sampler = ProbabilisticSampler::new(RATIO).unwrap();

    // Both ways must agree on what they keep.
    let ours = chain
        .process(TraceRequest::parse(bytes.clone()).unwrap())
        .unwrap();
    let theirs =
        ExportTraceServiceRequest::decode(&prost_chain(&bytes, &glob, &sampler)[..]).unwrap();
    assert_eq!(
        ours.to_proto().unwrap(),
        theirs,
        "spanflow and prost chains disagree"
    );

    // The chain's own cost: the batch is already in the wire model, as it is
    // in the pipeline (built by the Encoder or indexed once at intake).
    let parsed = TraceRequest::parse(bytes.clone()).unwrap();
    let mut g = c.benchmark_group("process/chain_512");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(512));
    g.bench_function("spanflow", |b| {
        b.iter(|| black_box(chain.process(black_box(&parsed).clone()).unwrap()));
    });
    g.bench_function("prost", |b| {
        b.iter(|| black_box(prost_chain(black_box(&bytes), &glob, &sampler)));
    });
    g.finish();

    // Bytes in, bytes out: includes indexing the received bytes.
    let mut g = c.benchmark_group("process/chain_512_from_bytes");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(512));
    g.bench_function("spanflow", |b| {
        b.iter(|| {
            let req = TraceRequest::parse(black_box(&bytes).clone()).unwrap();
            black_box(chain.process(req).unwrap().into_bytes())
        });
    });
    g.bench_function("prost", |b| {
        b.iter(|| black_box(prost_chain(black_box(&bytes), &glob, &sampler)));
    });
    g.finish();
}

/// A 512-span batch for Redact: every span carries an e-mail address in an
/// attribute, every 8th also in an exception event.
fn redact_request() -> ExportTraceServiceRequest {
    let mut req = ExportTraceServiceRequest::decode(request_bytes(512, 3)).unwrap();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for (n, span) in ss.spans.iter_mut().enumerate() {
                if n % 8 == 0 {
                    span.events.push(Event {
                        time_unix_nano: span.start_time_unix_nano + 1,
                        name: "exception".to_owned(),
                        attributes: vec![
                            kv("exception.type", s("AuthError")),
                            kv(
                                "exception.message",
                                s("login failed for jane.doe@example.com"),
                            ),
                        ],
                        dropped_attributes_count: 0,
                    });
                }
            }
        }
    }
    req
}

fn mask_kvs(redact: &Redact, kvs: &mut [KeyValue]) {
    for kv in kvs {
        if let Some(any_value::Value::StringValue(v)) =
            kv.value.as_mut().and_then(|a| a.value.as_mut())
            && let Some(masked) = redact.mask_str(v)
        {
            *v = masked;
        }
    }
}

/// Redact the obvious way: decode, mask the strings of span and event
/// attributes, re-encode.
fn prost_redact(bytes: &Bytes, redact: &Redact) -> Vec<u8> {
    let mut req = ExportTraceServiceRequest::decode(bytes.clone()).unwrap();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                mask_kvs(redact, &mut span.attributes);
                for event in &mut span.events {
                    mask_kvs(redact, &mut event.attributes);
                }
            }
        }
    }
    req.encode_to_vec()
}

/// Attributes sorted by key, so outputs that list them in another order compare equal.
fn sorted(mut req: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.attributes.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
    }
    req
}

fn bench_redact(c: &mut Criterion) {
    let bytes: Bytes = redact_request().encode_to_vec().into();
    let redact = Redact::from_config(&RedactConfig {
        blocked_values: vec![r"[\w.+-]+@[\w-]+\.[\w.]+".to_owned()],
        ..RedactConfig::default()
    })
    .unwrap();
    let chain = Chain::builder()
        .processor(redact.clone())
        .parallelism(Parallelism::sequential())
        .build()
        .unwrap();
    let parsed = TraceRequest::parse(bytes.clone()).unwrap();

    // Both ways must mask the same strings (Redact moves a masked attribute
    // to the end of the span's list, hence the sort).
    let ours = chain.process(parsed.clone()).unwrap();
    let theirs = ExportTraceServiceRequest::decode(&prost_redact(&bytes, &redact)[..]).unwrap();
    assert_eq!(
        sorted(ours.to_proto().unwrap()),
        sorted(theirs),
        "spanflow and prost redaction disagree"
    );

    let mut g = c.benchmark_group("process/redact_512");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(512));
    g.bench_function("spanflow", |b| {
        b.iter(|| black_box(chain.process(black_box(&parsed).clone()).unwrap()));
    });
    g.bench_function("prost", |b| {
        b.iter(|| black_box(prost_redact(black_box(&bytes), &redact)));
    });
    g.finish();
}

/// Counts completions down to zero and wakes the waiter.
struct Latch {
    left: Mutex<usize>,
    done: Condvar,
}

impl Latch {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Latch {
            left: Mutex::new(n),
            done: Condvar::new(),
        })
    }
    fn count_down(&self) {
        let mut left = self.left.lock();
        *left -= 1;
        if *left == 0 {
            self.done.notify_all();
        }
    }
    fn wait(&self) {
        let mut left = self.left.lock();
        while *left > 0 {
            self.done.wait(&mut left);
        }
    }
}

const SCHED_WORKERS: usize = 2;

fn bench_scheduler(c: &mut Criterion) {
    // Pipeline-sized batches, and the many small requests a relay receives.
    scheduler_group(c, "process/scheduler", 256, 64);
    scheduler_group(c, "process/scheduler_small", 2048, 4);
}

fn scheduler_group(c: &mut Criterion, group: &str, count: usize, spans: usize) {
    let batches: Vec<TraceRequest> = (0..count as u64)
        .map(|k| TraceRequest::parse(request_bytes(spans, k)).unwrap())
        .collect();
    let chain = Arc::new(chain(Parallelism::sequential()));

    let scheduler = Scheduler::new(Arc::clone(&chain), SCHED_WORKERS).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(SCHED_WORKERS)
        .thread_name(|i| format!("bench-rayon-{i}"))
        .build()
        .unwrap();
    type Job = (TraceRequest, Arc<Latch>);
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let channel_workers: Vec<_> = (0..SCHED_WORKERS)
        .map(|_| {
            let rx = rx.clone();
            let chain = Arc::clone(&chain);
            std::thread::spawn(move || {
                for (batch, latch) in rx {
                    black_box(chain.process(batch).unwrap());
                    latch.count_down();
                }
            })
        })
        .collect();

    let mut g = c.benchmark_group(group);
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements((count * spans) as u64));
    g.bench_function("spanflow", |b| {
        b.iter(|| {
            let latch = Latch::new(batches.len());
            for batch in &batches {
                let latch = Arc::clone(&latch);
                scheduler
                    .submit(batch.clone(), move |r| {
                        black_box(r.unwrap());
                        latch.count_down();
                    })
                    .unwrap();
            }
            latch.wait();
        });
    });
    g.bench_function("rayon_spawn", |b| {
        b.iter(|| {
            let latch = Latch::new(batches.len());
            for batch in &batches {
                let latch = Arc::clone(&latch);
                let chain = Arc::clone(&chain);
                let batch = batch.clone();
                pool.spawn(move || {
                    black_box(chain.process(batch).unwrap());
                    latch.count_down();
                });
            }
            latch.wait();
        });
    });
    g.bench_function("crossbeam_channel", |b| {
        b.iter(|| {
            let latch = Latch::new(batches.len());
            for batch in &batches {
                tx.send((batch.clone(), Arc::clone(&latch))).unwrap();
            }
            latch.wait();
        });
    });
    g.finish();
    drop(tx);
    for w in channel_workers {
        w.join().unwrap();
    }
    scheduler.shutdown();
}

fn bench_cutoff(c: &mut Criterion) {
    let par = Parallelism::new(2, 1).unwrap();
    for spans in [512usize, 2048, 8192] {
        let req = TraceRequest::parse(request_bytes(spans, 7)).unwrap();
        let build = |p: Parallelism| {
            Chain::builder()
                .span_stats(SpanStats::new())
                .processor(
                    Filter::from_config(
                        &FilterConfig::drop().span_names(MatchType::Regex, ["^GET /health"]),
                    )
                    .unwrap(),
                )
                .parallelism(p)
                .build()
                .unwrap()
        };
        let sequential = build(Parallelism::sequential());
        let parallel = build(par.clone());
        let mut g = c.benchmark_group(format!("process/cutoff_{spans}"));
        g.sample_size(20)
            .measurement_time(Duration::from_secs(1))
            .warm_up_time(Duration::from_millis(300))
            .throughput(Throughput::Elements(spans as u64));
        g.bench_with_input(BenchmarkId::from_parameter("sequential"), &req, |b, req| {
            b.iter(|| black_box(sequential.process(req.clone()).unwrap()));
        });
        g.bench_with_input(BenchmarkId::from_parameter("rayon"), &req, |b, req| {
            b.iter(|| black_box(parallel.process(req.clone()).unwrap()));
        });
        g.finish();
    }
}

criterion_group!(
    benches,
    bench_chain,
    bench_redact,
    bench_scheduler,
    bench_cutoff
);
criterion_main!(benches);
