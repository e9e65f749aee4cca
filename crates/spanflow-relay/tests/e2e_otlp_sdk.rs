//! End to end with the real OpenTelemetry Rust SDK exporter as the client (gRPC, gRPC+gzip,
//! HTTP/protobuf, HTTP/JSON) → relay → an in-process sink: every span arrives exactly once with
//! identical content, compared decoded.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use spanflow_otlp::Encoder;
use spanflow_relay::MemorySink;
use spanflow_relay::RelayConfig;
use spanflow_relay::RunningRelay;

fn config() -> RelayConfig {
    let mut cfg = RelayConfig::default();
    cfg.receivers.grpc.endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.receivers.http.endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.telemetry.metrics_enabled = false;
    cfg
}

/// (resource, scope, span) of every span, decoded and sorted, so order does not matter but
/// duplicates and differences do.
fn decoded(requests: impl IntoIterator<Item = ExportTraceServiceRequest>) -> Vec<String> {
    let mut out = Vec::new();
    for r in requests {
        for rs in &r.resource_spans {
            let mut resource = rs.resource.clone().unwrap_or_default();
            resource.attributes.sort_by(|a, b| a.key.cmp(&b.key));
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(format!(
                        "{:?}|{:?}|{}|{s:?}",
                        s.span_id,
                        resource,
                        ss.scope.as_ref().map_or("", |s| &s.name)
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

enum Client {
    Grpc { gzip: bool },
    Http(Protocol),
}

async fn export_through_relay(client: Client, batches: usize, per_batch: usize) {
    let sink = Arc::new(MemorySink::new(256 << 20));
    let relay = RunningRelay::start(&config(), sink.clone()).await.unwrap();
    let addrs = relay.addresses();
    let mut exporter = match client {
        Client::Grpc { gzip } => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{}", addrs.grpc.unwrap()))
                .with_timeout(Duration::from_secs(20));
            if gzip {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            b.build().unwrap()
        }
        Client::Http(protocol) => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(format!("http://{}/v1/traces", addrs.http.unwrap()))
            .with_timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    };
    let resource = spanflow_otlp::testing::resource();
    exporter.set_resource(&resource);
    let mut expected = Vec::new();
    let mut encoder = Encoder::new();
    for b in 0..batches {
        let spans: Vec<SpanData> = spanflow_otlp::testing::span_batch(per_batch, 1000 + b as u64);
        expected.push(encoder.encode(&spans, &resource).to_proto().unwrap());
        exporter.export(spans).await.unwrap();
    }
    let stats = relay.shutdown(Duration::from_secs(20)).await;
    let got: Vec<_> = sink
        .requests()
        .iter()
        .map(|r| r.to_proto().unwrap())
        .collect();
    let (got, want) = (decoded(got), decoded(expected));
    assert_eq!(got.len(), batches * per_batch, "span count");
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    assert_eq!(stats.relay.spans_accepted, (batches * per_batch) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_exporter_spans_arrive_once_and_identical() {
    export_through_relay(Client::Grpc { gzip: false }, 20, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_gzip_exporter_spans_arrive_once_and_identical() {
    export_through_relay(Client::Grpc { gzip: true }, 10, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_protobuf_exporter_spans_arrive_once_and_identical() {
    export_through_relay(Client::Http(Protocol::HttpBinary), 20, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_json_exporter_spans_arrive_once_and_identical() {
    export_through_relay(Client::Http(Protocol::HttpJson), 10, 50).await;
}
