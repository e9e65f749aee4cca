//! The relay in front of a real `spanflow::Pipeline`: SDK exporters in, an in-process exporter
//! out (every span exactly once, identical); a blocked backend makes the relay answer with
//! backpressure while the pipeline stays within its memory budget, and nothing is lost once
//! the backend recovers and clients retry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::SpanExporter as _;
use parking_lot::Mutex;
use prost::Message;
use spanflow::export::{ExportBatch, ExportError, ExportOutcome, Exporter};
use spanflow_otlp::Encoder;
use spanflow_relay::PipelineSink;
use spanflow_relay::RunningRelay;
use spanflow_relay::Sink;
use spanflow_relay::tools::client::{Answer, OtlpClient, Transport};
use spanflow_relay::tools::traffic::{Payload, demo_traces};
use spanflow_relay::{ByteSize, RelayConfig};
use tokio::sync::watch;

/// Keeps every batch; while `open` is false, exports wait.
#[derive(Clone)]
struct Collect {
    batches: Arc<Mutex<Vec<ExportBatch>>>,
    open: watch::Receiver<bool>,
}

impl Exporter for Collect {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
        let spans = batch.spans as u64;
        // A copy: the batch's own bytes hold its share of the memory budget until dropped.
        let copy = ExportBatch::new(bytes::Bytes::copy_from_slice(&batch.body), batch.spans);
        self.batches.lock().push(copy);
        Ok(ExportOutcome {
            accepted: spans,
            rejected: 0,
            message: None,
        })
    }
    fn name(&self) -> &str {
        "collect"
    }
}

fn relay_config(budget: usize, max_request: u64) -> RelayConfig {
    let text = format!(
        "[receivers.grpc]\nendpoint = \"127.0.0.1:0\"\nmax_message_size = {max_request}\n\
         [receivers.http]\nendpoint = \"127.0.0.1:0\"\nmax_body_size = {max_request}\n\
         [telemetry]\nmetrics_enabled = false\n\
         [pipeline.batch]\nmax_age_ms = 20\nmax_spans = 200\n\
         [pipeline.export]\nqueue = 1\nconcurrency = 1\n\
         [pipeline.memory]\nbudget_bytes = {budget}\n\
         [[pipeline.exporters]]\nname = \"unused\"\nsink = {{ type = \"stdout\" }}\n"
    );
    RelayConfig::from_toml_str(&text).unwrap()
}

async fn start(
    budget: usize,
    max_request: u64,
    open: bool,
) -> (
    RunningRelay,
    Arc<PipelineSink>,
    Arc<Mutex<Vec<ExportBatch>>>,
    watch::Sender<bool>,
) {
    let cfg = relay_config(budget, max_request);
    let mut pipeline = cfg.pipeline.clone();
    pipeline.exporters.clear();
    let (gate, open_rx) = watch::channel(open);
    let batches = Arc::new(Mutex::new(Vec::new()));
    let collect = Collect {
        batches: batches.clone(),
        open: open_rx,
    };
    let sink = Arc::new(
        PipelineSink::build_with(&pipeline, vec![("collect".into(), Arc::new(collect))]).unwrap(),
    );
    let relay = RunningRelay::start(&cfg, sink.clone()).await.unwrap();
    (relay, sink, batches, gate)
}

fn decoded_spans(requests: &[ExportTraceServiceRequest]) -> Vec<String> {
    let mut out = Vec::new();
    for r in requests {
        for rs in &r.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(format!("{:?}|{:?}|{:?}", rs.resource, ss.scope, s));
                }
            }
        }
    }
    out.sort();
    out
}

fn exported(batches: &Mutex<Vec<ExportBatch>>) -> Vec<ExportTraceServiceRequest> {
    batches
        .lock()
        .iter()
        .map(|b| ExportTraceServiceRequest::decode(b.body.clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_spans_cross_relay_and_pipeline_exactly_once() {
    let (relay, _sink, batches, _gate) = start(64 << 20, 4 << 20, true).await;
    let a = relay.addresses();
    let resource = spanflow_otlp::testing::resource();
    let mut grpc = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", a.grpc.unwrap()))
        .build()
        .unwrap();
    let mut http = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://{}/v1/traces", a.http.unwrap()))
        .build()
        .unwrap();
    grpc.set_resource(&resource);
    http.set_resource(&resource);
    let mut encoder = Encoder::new();
    let mut expected = Vec::new();
    for b in 0..30u64 {
        let spans = spanflow_otlp::testing::span_batch(40, 7_000 + b);
        expected.push(encoder.encode(&spans, &resource).to_proto().unwrap());
        if b % 2 == 0 {
            grpc.export(spans).await.unwrap();
        } else {
            http.export(spans).await.unwrap();
        }
    }
    let stats = relay.shutdown(Duration::from_secs(30)).await;
    assert!(stats.flushed);
    let (got, want) = (decoded_spans(&exported(&batches)), decoded_spans(&expected));
    assert_eq!(got.len(), 30 * 40);
    assert!(got == want, "exported spans differ from the spans sent");
    assert_eq!(stats.sink.exported, 30 * 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_backpressure_within_budget_and_loses_nothing() {
    let budget = 1 << 20;
    let (relay, sink, batches, gate) = start(budget, 256 << 10, false).await;
    let a = relay.addresses();
    let (grpc, http) = (
        format!("http://{}", a.grpc.unwrap()),
        format!("http://{}", a.http.unwrap()),
    );

    let mut rng = rand::rng();
    let mut sent = Vec::new();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let payloads: Vec<(ExportTraceServiceRequest, Payload)> = (0..25)
            .map(|_| {
                let r = demo_traces(&mut rng, 30)[w % 3].clone();
                let p = Payload::new(&r);
                (r, p)
            })
            .collect();
        sent.extend(payloads.iter().map(|(r, _)| r.clone()));
        let (transport, endpoint) = if w % 2 == 0 {
            (Transport::Grpc, grpc.clone())
        } else {
            (Transport::HttpProto, http.clone())
        };
        tasks.push(tokio::spawn(async move {
            let client = OtlpClient::new(transport, &endpoint, false).unwrap();
            let mut retries = 0u32;
            for (_, p) in &payloads {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 5_000, "request never accepted");
                    match client.send(p, Duration::from_secs(30)).await {
                        Answer::Accepted { rejected: 0 } => break,
                        Answer::RetryLater { .. } => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            retries
        }));
    }

    // While the backend is blocked the pipeline fills to its budget and no further.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut peak = 0;
    while relay.metrics().counts().spans_refused_backpressure == 0 && Instant::now() < deadline {
        peak = peak.max(sink.stats().memory_used_bytes);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..50 {
        peak = peak.max(sink.stats().memory_used_bytes);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        relay.metrics().counts().spans_refused_backpressure > 0,
        "no backpressure under overload"
    );
    assert!(
        peak <= budget as u64,
        "queued {peak} bytes over the {budget} byte budget"
    );

    // The backend recovers; retrying clients get everything through.
    let _ = gate.send(true);
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    assert!(retries > 0);
    let stats = relay.shutdown(Duration::from_secs(30)).await;
    assert!(stats.flushed);
    let (got, want) = (decoded_spans(&exported(&batches)), decoded_spans(&sent));
    assert_eq!(got.len(), want.len(), "lost or duplicated spans");
    assert!(got == want, "exported spans differ from the spans sent");
    let _ = ByteSize(0);
}
