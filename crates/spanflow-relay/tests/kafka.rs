//! Kafka between relays, against a real broker (tansu, started here on loopback):
//!
//! - `tier1_to_kafka_to_a_group_of_two_delivers_every_span_once`: relay A (OTLP in, Kafka out)
//!   → a topic of 4 partitions → relays B and C in one consumer group → a sink: every span
//!   exactly once, and every span of a trace went through one partition;
//! - `a_member_killed_mid_stream_loses_nothing`: kill -9 of B mid-stream; C takes its
//!   partitions; nothing missing at the sink, duplicates counted and reported;
//! - `a_broker_restart_mid_stream_loses_nothing`: the broker (SQLite storage) is SIGKILLed and
//!   restarted mid-stream;
//! - `exporter_records_decode_as_the_request_sent` and
//!   `records_of_another_producer_are_consumed`: the record format is the Collector's
//!   `otlp_proto`, both ways; malformed records are counted and skipped.
//!
//! Needs the relay's `kafka` feature (`cargo xtask test` runs it) and the `tansu` broker.

#[allow(dead_code)]
#[path = "faults/proc.rs"]
mod proc;
#[allow(dead_code)]
#[path = "faults/relay.rs"]
mod relay;

#[path = "kafka/broker.rs"]
mod broker;
#[path = "kafka/spans.rs"]
mod spans;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use spanflow::export::kafka::{KafkaConfig, KafkaEncoding, KafkaExporter};
use spanflow::export::{ExportBatch, Exporter};
use spanflow_relay::MemorySink;
use spanflow_relay::RelayConfig;
use spanflow_relay::RunningRelay;
use spanflow_relay::TraceRequest;
use spanflow_relay::rdkafka;
use spanflow_relay::tools::client::{Answer, OtlpClient, Transport};
use spanflow_relay::tools::traffic::Payload;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use broker::{Broker, Storage};
use proc::{ScratchDir, heavy, wait_until};
use relay::{RelayProcess, RelaySpec};
use spans::Tally;

const PARTITIONS: u32 = 4;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An in-process OTLP/gRPC backend keeping every request it gets.
struct Sink {
    relay: Option<RunningRelay>,
    memory: Arc<MemorySink>,
    endpoint: String,
}

impl Sink {
    fn start(rt: &tokio::runtime::Runtime) -> Self {
        let mut cfg = RelayConfig::default();
        cfg.receivers.grpc.endpoint = "127.0.0.1:0".parse().expect("addr");
        cfg.receivers.http.enabled = false;
        cfg.telemetry.metrics_enabled = false;
        let memory = Arc::new(MemorySink::new(1 << 30));
        let relay = rt
            .block_on(RunningRelay::start(&cfg, memory.clone()))
            .expect("sink starts");
        let endpoint = format!("http://{}", relay.addresses().grpc.expect("grpc"));
        Self {
            relay: Some(relay),
            memory,
            endpoint,
        }
    }

    fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for r in self.memory.requests() {
            tally.add(&r);
        }
        tally
    }

    fn stop(&mut self, rt: &tokio::runtime::Runtime) {
        if let Some(relay) = self.relay.take() {
            rt.block_on(relay.shutdown(Duration::from_secs(5)));
        }
    }
}

/// Relay A: OTLP/gRPC in, Kafka out, retrying through a broker outage.
fn tier1(dir: &Path, broker: &Broker, topic: &str) -> RelayProcess {
    let toml = format!(
        r#"
[receivers.http]
enabled = false
[pipeline.batch]
max_age_ms = 50
[[pipeline.exporters]]
name = "kafka"
sink = {{ type = "kafka", brokers = "{}", topic = "{topic}", delivery_timeout = "4s" }}
backend = {{ timeout = "6s", retry = {{ initial_backoff = "100ms", max_backoff = "1s", max_elapsed = "120s" }} }}
"#,
        broker.bootstrap()
    );
    start_relay(dir, "a", toml)
}

/// Relays B and C: Kafka in (group `tier2`), OTLP/gRPC out to the sink.
fn tier2(dir: &Path, name: &str, broker: &Broker, topic: &str, sink: &str) -> RelayProcess {
    let toml = format!(
        r#"
[receivers.grpc]
enabled = false
[receivers.http]
enabled = false
[receivers.kafka]
enabled = true
brokers = "{}"
topic = "{topic}"
group_id = "tier2"
commit_interval = "200ms"
session_timeout = "6s"
rebalance_timeout = "10s"
[pipeline.batch]
max_age_ms = 50
[[pipeline.exporters]]
name = "sink"
sink = {{ type = "otlp", protocol = "grpc", endpoint = "{sink}" }}
backend = {{ timeout = "5s", retry = {{ initial_backoff = "100ms", max_backoff = "1s", max_elapsed = "120s" }} }}
"#,
        broker.bootstrap()
    );
    start_relay(dir, name, toml)
}

fn start_relay(dir: &Path, name: &str, toml: String) -> RelayProcess {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("relay dir");
    RelayProcess::start(
        &dir,
        &RelaySpec {
            toml,
            shutdown_timeout: Some(Duration::from_secs(10)),
            args: Vec::new(),
        },
    )
}

fn kafka_metric(relay: &RelayProcess, name: &str) -> u64 {
    relay
        .scrape()
        .total(&format!("spanflow_relay_kafka_{name}"))
        .unwrap_or(0.0) as u64
}

/// Waits until B and C share the topic's partitions.
fn wait_for_group(members: &[&RelayProcess]) {
    wait_until(
        "both members to own partitions",
        Duration::from_secs(40),
        || {
            let owned: Vec<u64> = members
                .iter()
                .map(|m| kafka_metric(m, "partitions"))
                .collect();
            (owned.iter().all(|&n| n > 0) && owned.iter().sum::<u64>() == u64::from(PARTITIONS))
                .then_some(())
        },
    );
}

/// Sends every request to `endpoint`, each until it is accepted, `pause` apart; calls
/// `midway` once half of them are sent.
fn send_all(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    requests: &[ExportTraceServiceRequest],
    pause: Duration,
    mut midway: impl FnMut(),
) {
    let client = {
        let _runtime = rt.enter();
        OtlpClient::new(Transport::Grpc, endpoint, false).expect("client")
    };
    for (i, request) in requests.iter().enumerate() {
        if i == requests.len() / 2 {
            midway();
        }
        let payload = Payload::protobuf_only(request);
        let started = Instant::now();
        loop {
            match rt.block_on(client.send(&payload, Duration::from_secs(30))) {
                Answer::Accepted { rejected: 0 } => break,
                Answer::RetryLater { after } => {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "relay A refused for a minute"
                    );
                    std::thread::sleep(after.unwrap_or(Duration::from_millis(100)));
                }
                other => panic!("relay A answered {other:?}"),
            }
        }
        std::thread::sleep(pause);
    }
}

/// Waits until the sink has every id in `1..=expected`, then a little longer for late
/// duplicates.
fn wait_for_all(sink: &Sink, expected: u64, limit: Duration) -> Tally {
    let deadline = Instant::now() + limit;
    loop {
        let tally = sink.tally();
        if tally.missing(expected) == 0 {
            std::thread::sleep(Duration::from_millis(1500));
            return sink.tally();
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?} the sink still misses {} of {expected} spans",
            tally.missing(expected)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record of `topic`: (partition, key, value). Read until nothing new came for 3 s:
/// tansu's high watermark undercounts partitions whose record batches hold several records, so
/// it cannot say where a partition ends.
fn read_topic(broker: &Broker, topic: &str) -> Vec<(i32, Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "kafka-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_new = Instant::now();
    while last_new.elapsed() < Duration::from_secs(3) && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let m = message.expect("record");
            out.push((
                m.partition(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
            last_new = Instant::now();
        }
    }
    out
}

#[test]
fn tier1_to_kafka_to_a_group_of_two_delivers_every_span_once() {
    let _heavy = heavy();
    let scratch = ScratchDir::new("kafka-e2e");
    let Some(broker) = Broker::start(scratch.path(), Storage::Memory) else {
        return;
    };
    let topic = "otlp_spans";
    broker.create_topic(topic, PARTITIONS);
    let rt = runtime();
    let mut sink = Sink::start(&rt);
    let mut a = tier1(scratch.path(), &broker, topic);
    let mut b = tier2(scratch.path(), "b", &broker, topic, &sink.endpoint);
    let mut c = tier2(scratch.path(), "c", &broker, topic, &sink.endpoint);
    wait_for_group(&[&b, &c]);

    let (traces, per_trace) = (400, 5);
    let expected = traces * per_trace;
    let requests = spans::traffic(0, traces, per_trace, 40);
    send_all(&rt, &a.grpc_endpoint(), &requests, Duration::ZERO, || {});
    let tally = wait_for_all(&sink, expected, Duration::from_secs(60));
    let (from_b, from_c) = (
        kafka_metric(&b, "records_total"),
        kafka_metric(&c, "records_total"),
    );
    println!(
        "kafka e2e: sent={expected} delivered={} duplicates={} records via B={from_b} via C={from_c}",
        tally.seen.len(),
        tally.duplicates()
    );
    assert_eq!(tally.missing(expected), 0);
    assert_eq!(tally.duplicates(), 0, "no fault, so no duplicate");
    assert_eq!(tally.unexpected(expected), 0);
    assert!(from_b > 0 && from_c > 0, "both members consumed");

    // The topic: one trace per record, keyed by its trace id, each trace in one partition,
    // each span written once.
    let mut partitions_of: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    let mut written = Tally::default();
    for (partition, key, value) in read_topic(&broker, topic) {
        let request = TraceRequest::parse(value.into()).expect("an OTLP record");
        assert!(
            request.spans().all(|s| s.trace_id()[..] == key[..]),
            "key = trace id"
        );
        partitions_of.entry(key).or_default().insert(partition);
        written.add(&request);
    }
    assert_eq!(partitions_of.len() as u64, traces);
    assert!(
        partitions_of.values().all(|p| p.len() == 1),
        "a trace went through one partition"
    );
    let used: BTreeSet<i32> = partitions_of.values().flatten().copied().collect();
    assert!(
        used.len() > 1,
        "traces spread over the partitions: {used:?}"
    );
    assert_eq!((written.missing(expected), written.duplicates()), (0, 0));

    for relay in [&mut b, &mut c, &mut a] {
        relay.terminate();
        let stopped = relay.wait_stopped(Duration::from_secs(20));
        assert!(stopped.status.success(), "{}", relay.stderr_tail());
    }
    sink.stop(&rt);
}

#[test]
fn a_member_killed_mid_stream_loses_nothing() {
    let _heavy = heavy();
    let scratch = ScratchDir::new("kafka-kill");
    let Some(broker) = Broker::start(scratch.path(), Storage::Memory) else {
        return;
    };
    let topic = "otlp_spans";
    broker.create_topic(topic, PARTITIONS);
    let rt = runtime();
    let mut sink = Sink::start(&rt);
    let a = tier1(scratch.path(), &broker, topic);
    let mut b = tier2(scratch.path(), "b", &broker, topic, &sink.endpoint);
    let c = tier2(scratch.path(), "c", &broker, topic, &sink.endpoint);
    wait_for_group(&[&b, &c]);

    let (traces, per_trace) = (1200, 5);
    let expected = traces * per_trace;
    let requests = spans::traffic(0, traces, per_trace, 40);
    let mut killed_at = None;
    send_all(
        &rt,
        &a.grpc_endpoint(),
        &requests,
        Duration::from_millis(25),
        || {
            killed_at = Some(kafka_metric(&b, "records_total"));
            b.kill9();
        },
    );
    // Kafka hands a dead member's partitions to the others once its session times out (6 s).
    // tansu 0.6 evicts the member and rebalances, but its next generation still assigns the
    // dead member's partitions (to nobody alive); then a new member joining takes them, and
    // resumes from the last commit all the same.
    let c_took_all = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        kafka_metric(&c, "partitions") == u64::from(PARTITIONS)
    });
    let _replacement =
        (!c_took_all).then(|| tier2(scratch.path(), "b2", &broker, topic, &sink.endpoint));
    let tally = wait_for_all(&sink, expected, Duration::from_secs(90));
    println!(
        "kafka kill -9: sent={expected} delivered={} missing={} duplicates={} (B had read {} records when killed; {})",
        tally.seen.len(),
        tally.missing(expected),
        tally.duplicates(),
        killed_at.unwrap_or(0),
        if c_took_all {
            "C took all partitions"
        } else {
            "C did not get B's partitions within 20 s; a replacement member took them"
        }
    );
    assert_eq!(tally.missing(expected), 0);
    assert_eq!(tally.unexpected(expected), 0);
    sink.stop(&rt);
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    let _heavy = heavy();
    let scratch = ScratchDir::new("kafka-restart");
    let Some(mut broker) = Broker::start(scratch.path(), Storage::Sqlite) else {
        return;
    };
    let topic = "otlp_spans";
    broker.create_topic(topic, PARTITIONS);
    let rt = runtime();
    let mut sink = Sink::start(&rt);
    let a = tier1(scratch.path(), &broker, topic);
    let b = tier2(scratch.path(), "b", &broker, topic, &sink.endpoint);
    let c = tier2(scratch.path(), "c", &broker, topic, &sink.endpoint);
    wait_for_group(&[&b, &c]);

    let (traces, per_trace) = (800, 5);
    let expected = traces * per_trace;
    let requests = spans::traffic(0, traces, per_trace, 40);
    send_all(
        &rt,
        &a.grpc_endpoint(),
        &requests,
        Duration::from_millis(25),
        || {
            broker.kill_and_restart(Duration::from_secs(2));
        },
    );
    let tally = wait_for_all(&sink, expected, Duration::from_secs(90));
    println!(
        "kafka broker restart: sent={expected} delivered={} missing={} duplicates={}",
        tally.seen.len(),
        tally.missing(expected),
        tally.duplicates()
    );
    assert_eq!(tally.missing(expected), 0);
    assert_eq!(tally.unexpected(expected), 0);
    drop((a, b, c));
    sink.stop(&rt);
}

#[test]
fn exporter_records_decode_as_the_request_sent() {
    let scratch = ScratchDir::new("kafka-export-format");
    let Some(broker) = Broker::start(scratch.path(), Storage::Memory) else {
        return;
    };
    let rt = runtime();
    for (topic, encoding) in [
        ("proto", KafkaEncoding::OtlpProto),
        ("json", KafkaEncoding::OtlpJson),
    ] {
        broker.create_topic(topic, PARTITIONS);
        let mut config = KafkaConfig::new(broker.bootstrap());
        config.topic = topic.to_owned();
        config.encoding = encoding;
        let exporter = KafkaExporter::from_config(&config).expect("exporter");
        // One trace over two resources: one record, the request itself.
        let mut one = spans::request("svc-a", vec![spans::span(7, 0, 1), spans::span(7, 1, 2)]);
        one.resource_spans
            .extend(spans::request("svc-b", vec![spans::span(7, 2, 3)]).resource_spans);
        // Several traces, interleaved: one record per trace.
        let many = &spans::traffic(100, 6, 3, 18)[0];
        for request in [&one, many] {
            let body = request.encode_to_vec();
            let outcome = rt
                .block_on(exporter.export(ExportBatch::new(body.into(), count(request))))
                .expect("exported");
            assert_eq!(outcome.accepted, count(request) as u64);
        }
        rt.block_on(exporter.shutdown()).expect("flushed");

        let records = read_topic(&broker, topic);
        assert_eq!(records.len(), 1 + 6, "{topic}: one record per trace");
        let decoded: Vec<(Vec<u8>, ExportTraceServiceRequest)> = records
            .into_iter()
            .map(|(_, key, value)| {
                let request = match encoding {
                    KafkaEncoding::OtlpProto => {
                        ExportTraceServiceRequest::decode(&value[..]).expect("otlp_proto")
                    }
                    KafkaEncoding::OtlpJson => {
                        serde_json::from_slice(&value).expect("OTLP/JSON by opentelemetry-proto")
                    }
                };
                (key, request)
            })
            .collect();
        let whole = decoded
            .iter()
            .find(|(key, _)| key[..] == spans::trace_id(7))
            .expect("trace 7's record");
        assert_eq!(whole.1, one, "{topic}: the record is the request sent");
        let mut spans_written = Vec::new();
        for (key, request) in &decoded {
            for rs in &request.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        assert_eq!(&s.trace_id[..], &key[..]);
                        spans_written.push(s.clone());
                    }
                }
            }
        }
        let mut sent: Vec<_> = [&one, many]
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|r| r.scope_spans.iter())
            .flat_map(|s| s.spans.iter().cloned())
            .collect();
        sent.sort_by(|x, y| x.span_id.cmp(&y.span_id));
        spans_written.sort_by(|x, y| x.span_id.cmp(&y.span_id));
        assert_eq!(spans_written, sent, "{topic}: every span once, unchanged");
    }
}

fn count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

#[test]
fn records_of_another_producer_are_consumed() {
    let scratch = ScratchDir::new("kafka-interop");
    let Some(broker) = Broker::start(scratch.path(), Storage::Memory) else {
        return;
    };
    let topic = "otlp_spans";
    broker.create_topic(topic, 1);
    let rt = runtime();
    // Another producer, writing as the Collector's kafkaexporter does with otlp_proto:
    // prost's encoding of the request, keyed by trace id.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("producer");
    let first = spans::request(
        "collector",
        vec![spans::span(1, 0, 1), spans::span(1, 1, 2)],
    );
    let second = spans::request("collector", vec![spans::span(2, 0, 3)]);
    let records: [(&[u8], Vec<u8>); 3] = [
        (&spans::trace_id(1), first.encode_to_vec()),
        (b"garbage", b"\x0a\xff\xff\xff\x0fnot protobuf".to_vec()),
        (&spans::trace_id(2), second.encode_to_vec()),
    ];
    for (key, value) in &records {
        rt.block_on(producer.send(
            FutureRecord::to(topic).key(*key).payload(value),
            Duration::from_secs(10),
        ))
        .expect("produced");
    }

    let mut cfg = RelayConfig::default();
    cfg.receivers.grpc.enabled = false;
    cfg.receivers.http.enabled = false;
    cfg.telemetry.metrics_enabled = false;
    cfg.receivers.kafka.enabled = true;
    cfg.receivers.kafka.brokers = broker.bootstrap();
    cfg.receivers.kafka.group_id = "interop".into();
    cfg.receivers.kafka.commit_interval.0 = Duration::from_millis(100);
    cfg.validate().expect("valid");
    let memory = Arc::new(MemorySink::new(1 << 30));
    let relay = rt
        .block_on(RunningRelay::start(&cfg, memory.clone()))
        .expect("relay starts");
    wait_until("two requests", Duration::from_secs(30), || {
        (memory.requests().len() == 2).then_some(())
    });
    let got: Vec<ExportTraceServiceRequest> = memory
        .requests()
        .iter()
        .map(|r| r.to_proto().expect("decodes"))
        .collect();
    assert_eq!(got, vec![first, second]);
    wait_until("the offsets committed", Duration::from_secs(10), || {
        (relay.metrics().kafka().counts().commits > 0).then_some(())
    });
    let kafka = relay.metrics().kafka().counts();
    assert_eq!((kafka.records, kafka.records_malformed), (3, 1));
    rt.block_on(relay.shutdown(Duration::from_secs(10)));

    // The group's committed offset is past all three records, the malformed one included.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "interop")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let committed = reader
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    assert_eq!(
        committed.find_partition(topic, 0).map(|e| e.offset()),
        Some(Offset::Offset(3))
    );
}
