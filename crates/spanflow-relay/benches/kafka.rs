//! Kafka at both ends of a relay (cargo feature `kafka`; needs the `tansu` broker on PATH).
//!
//! `relay/kafka_export`: the same relay, OTLP/gRPC in, measured with two exporters in the same
//! run on the same payloads: `otlp_grpc` (to an in-process counting sink) and `kafka` (records
//! per trace, idempotent producer, acks=all, to a tansu broker on loopback). Criterion times a
//! push of N spans until the pipeline counts them exported; the figure that matters is printed
//! after the group: relay CPU per span, where relay CPU is the whole process (librdkafka's
//! threads included) minus the load generator and the counting sink, which run on registered
//! threads; the broker is another process and is not counted. Each relay is then watched idle
//! for a second: librdkafka's threads wake on their own timers, so part of a slower run's CPU
//! per span comes from time, not spans; the figure net of idle CPU is printed beside it.
//!
//! `relay/kafka_consume`: a relay with `[receivers.kafka]` reads back every span the `kafka`
//! runs wrote and exports it over OTLP/gRPC to the counting sink: spans per second and spans
//! per relay CPU-second (per core).
//!
//! Traffic: requests of 100 spans made of 10 traces of 10 spans, 8 attributes per span.

#![allow(missing_docs)]

#[allow(dead_code)]
#[path = "../tests/faults/proc.rs"]
mod proc;

#[allow(dead_code)]
#[path = "../tests/kafka/broker.rs"]
mod broker;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/sink.rs"]
mod sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_relay::PipelineSink;
use spanflow_relay::RelayConfig;
use spanflow_relay::RunningRelay;
use spanflow_relay::tools::client::{OtlpClient, Transport};
use spanflow_relay::tools::traffic::{AttributeMix, Payload, load_request};

use cpu::{Threads, process_cpu_ns, runtime};
use sink::{Counting, send_all, serve};

const SPANS_PER_REQUEST: usize = 100;
const SPANS_PER_TRACE: usize = 10;
const REQUESTS: usize = 200;
const SPANS: u64 = (SPANS_PER_REQUEST * REQUESTS) as u64;
const SENDERS: usize = 4;

/// CPU of everything in the process but `harness` (load generator, sink, this thread).
fn relay_cpu_ns(harness: &Threads) -> u64 {
    process_cpu_ns().saturating_sub(harness.cpu_ns())
}

fn traffic() -> Arc<Vec<Payload>> {
    let mut rng = rand::rng();
    let mix = AttributeMix {
        count: 8,
        string_len: 24,
    };
    Arc::new(
        (0..REQUESTS)
            .map(|_| {
                let mut request = ExportTraceServiceRequest::default();
                for _ in 0..SPANS_PER_REQUEST / SPANS_PER_TRACE {
                    let trace = load_request(&mut rng, "bench", SPANS_PER_TRACE, mix);
                    if request.resource_spans.is_empty() {
                        request = trace;
                    } else {
                        let spans = trace.resource_spans[0].scope_spans[0].spans.clone();
                        request.resource_spans[0].scope_spans[0].spans.extend(spans);
                    }
                }
                Payload::protobuf_only(&request)
            })
            .collect(),
    )
}

/// A relay on `ours_rt` with OTLP/gRPC in and the exporter `sink_toml`, or `[receivers.kafka]`
/// when `receiver_toml` is given.
fn relay(
    rt: &tokio::runtime::Runtime,
    exporter: &str,
    receiver_toml: &str,
) -> (RunningRelay, Arc<PipelineSink>) {
    let text = format!(
        "[receivers.http]\nenabled = false\n[telemetry]\nmetrics_enabled = false\n\
         [receivers.grpc]\nendpoint = \"127.0.0.1:0\"\n{receiver_toml}\n\
         [pipeline.batch]\nmax_age_ms = 5\n\
         [[pipeline.exporters]]\nname = \"out\"\nsink = {exporter}\n"
    );
    let cfg = RelayConfig::from_toml_str(&text).expect("bench config");
    rt.block_on(async {
        let sink = Arc::new(PipelineSink::build(&cfg.pipeline).expect("pipeline"));
        let relay = RunningRelay::start(&cfg, sink.clone())
            .await
            .expect("relay");
        (relay, sink)
    })
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    spans: u64,
    wall: Duration,
    relay_cpu: u64,
    /// Relay CPU nanoseconds per second with no traffic, measured after the runs.
    idle_cpu_per_s: f64,
}

/// How long the relay is watched idle after its runs.
const IDLE_PROBE: Duration = Duration::from_secs(1);

fn kafka(c: &mut Criterion) {
    let scratch = proc::ScratchDir::new("kafka-bench");
    let Some(broker) = broker::Broker::start(scratch.path(), broker::Storage::Memory) else {
        return;
    };
    let topic = "otlp_spans";
    broker.create_topic(topic, 4);
    let harness = Arc::new(Threads::default());
    harness.register_current();
    let load_rt = runtime("bench-load", 2, &harness);
    let sink_rt = runtime("bench-sink", 1, &harness);
    let ours_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay-spanflow")
        .enable_all()
        .build()
        .expect("runtime");
    let counted = Arc::new(AtomicU64::new(0));
    let sink_addr = sink_rt.block_on(serve(Counting {
        spans: counted.clone(),
    }));
    let grpc_sink =
        format!("{{ type = \"otlp\", protocol = \"grpc\", endpoint = \"http://{sink_addr}\" }}");
    let kafka_sink = format!(
        "{{ type = \"kafka\", brokers = \"{}\", topic = \"{topic}\" }}",
        broker.bootstrap()
    );
    let payloads = traffic();

    let mut group = c.benchmark_group("relay/kafka_export");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(SPANS));
    let mut totals = Vec::new();
    for (name, exporter) in [("otlp_grpc", &grpc_sink), ("kafka", &kafka_sink)] {
        let (relay, sink) = relay(&ours_rt, exporter, "");
        let endpoint = format!("http://{}", relay.addresses().grpc.expect("grpc"));
        let clients: Vec<OtlpClient> = load_rt.block_on(async {
            (0..SENDERS)
                .map(|_| OtlpClient::new(Transport::Grpc, &endpoint, false).expect("client"))
                .collect()
        });
        let mut total = Totals::default();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                load_rt.block_on(async {
                    let cpu = relay_cpu_ns(&harness);
                    let started = Instant::now();
                    for _ in 0..iters {
                        let target = sink.pipeline().stats().exported + SPANS;
                        send_all(&clients, &payloads).await;
                        wait_for("the spans exported", || {
                            sink.pipeline().stats().exported >= target
                        })
                        .await;
                    }
                    let elapsed = started.elapsed();
                    total.relay_cpu += relay_cpu_ns(&harness).saturating_sub(cpu);
                    total.spans += iters * SPANS;
                    total.wall += elapsed;
                    elapsed
                })
            });
        });
        // The relay's CPU while nothing is sent: what a span's share of it depends on the
        // throughput (librdkafka's threads wake on their own timers, for one).
        let cpu = relay_cpu_ns(&harness);
        std::thread::sleep(IDLE_PROBE);
        total.idle_cpu_per_s =
            relay_cpu_ns(&harness).saturating_sub(cpu) as f64 / IDLE_PROBE.as_secs_f64();
        let stats = ours_rt.block_on(relay.shutdown(Duration::from_secs(10)));
        assert_eq!(stats.sink.failed, 0, "{name}: failed spans");
        totals.push((name, total, stats.sink.exported));
    }
    group.finish();
    let per_span = |t: &Totals| t.relay_cpu as f64 / t.spans.max(1) as f64;
    // The same, less what the relay spends idle for as long as the runs took.
    let net_per_span = |t: &Totals| {
        (t.relay_cpu as f64 - t.idle_cpu_per_s * t.wall.as_secs_f64()).max(0.0)
            / t.spans.max(1) as f64
    };
    for (name, t, _) in &totals {
        if t.spans == 0 {
            continue; // filtered out
        }
        println!(
            "relay/kafka_export {name}: {:.0} spans/s, {:.0} ns relay CPU per span \
             (idle relay: {:.1} ms CPU per second; net of idle {:.0} ns per span)",
            t.spans as f64 / t.wall.as_secs_f64().max(1e-9),
            per_span(t),
            t.idle_cpu_per_s / 1e6,
            net_per_span(t),
        );
    }
    if let [(_, grpc, _), (_, kafka, written)] = totals.as_slice()
        && grpc.spans > 0
        && kafka.spans > 0
    {
        println!(
            "relay/kafka_export relay CPU per span ratio kafka/otlp_grpc: {:.2}x \
             (net of idle: {:.2}x)",
            per_span(kafka) / per_span(grpc).max(1e-9),
            net_per_span(kafka) / net_per_span(grpc).max(1e-9)
        );
        consume(
            &ours_rt, &harness, &broker, topic, &grpc_sink, &counted, *written,
        );
    }
}

/// Reads back everything the `kafka` runs wrote, once, through a relay's Kafka receiver.
fn consume(
    rt: &tokio::runtime::Runtime,
    harness: &Threads,
    broker: &broker::Broker,
    topic: &str,
    grpc_sink: &str,
    counted: &AtomicU64,
    written: u64,
) {
    let receiver = format!(
        "[receivers.kafka]\nenabled = true\nbrokers = \"{}\"\ntopic = \"{topic}\"\n\
         group_id = \"bench\"\nprefetch_bytes = \"32MiB\"\n",
        broker.bootstrap()
    );
    let before = counted.load(Ordering::Relaxed);
    let cpu = relay_cpu_ns(harness);
    let started = Instant::now();
    let (relay, _sink) = relay(rt, grpc_sink, &receiver);
    rt.block_on(wait_for("every span read back", || {
        counted.load(Ordering::Relaxed) >= before + written
    }));
    let wall = started.elapsed();
    let relay_cpu = relay_cpu_ns(harness).saturating_sub(cpu);
    let k = relay.metrics().kafka().counts();
    rt.block_on(relay.shutdown(Duration::from_secs(10)));
    println!(
        "relay/kafka_consume: {written} spans in {:.2} s: {:.0} spans/s, {:.0} spans per relay CPU-second ({:.0} ns relay CPU per span; {} records, {} commits)",
        wall.as_secs_f64(),
        written as f64 / wall.as_secs_f64().max(1e-9),
        written as f64 / (relay_cpu as f64 / 1e9).max(1e-9),
        relay_cpu as f64 / written.max(1) as f64,
        k.records,
        k.commits
    );
}

criterion_group!(benches, kafka);
criterion_main!(benches);
