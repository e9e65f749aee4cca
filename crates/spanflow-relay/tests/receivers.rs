//! The receivers against an in-process sink: good requests over every transport arrive once
//! and intact; bad ones get the OTLP status without disturbing concurrent good ones; a full
//! budget answers with backpressure and memory stays within it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_relay::RunningRelay;
use spanflow_relay::tools::client::{Answer, OtlpClient, Transport};
use spanflow_relay::tools::traffic::{Payload, demo_traces};
use spanflow_relay::{ByteSize, RelayConfig};
use spanflow_relay::{MemorySink, Sink};

const TIMEOUT: Duration = Duration::from_secs(20);

fn test_config() -> RelayConfig {
    let mut cfg = RelayConfig::default();
    cfg.receivers.grpc.endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.receivers.http.endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.telemetry.metrics_endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.receivers.grpc.max_message_size = ByteSize(1 << 20);
    cfg.receivers.http.max_body_size = ByteSize(1 << 20);
    cfg
}

async fn start(sink: Arc<MemorySink>) -> (RunningRelay, String, String) {
    let relay = RunningRelay::start(&test_config(), sink).await.unwrap();
    let a = relay.addresses();
    let grpc = format!("http://{}", a.grpc.unwrap());
    let http = format!("http://{}", a.http.unwrap());
    (relay, grpc, http)
}

fn sorted_spans(requests: &[ExportTraceServiceRequest]) -> Vec<(String, Vec<u8>, String)> {
    let mut out = Vec::new();
    for rs in requests.iter().flat_map(|r| &r.resource_spans) {
        let resource = format!("{:?}", rs.resource);
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push((
                    resource.clone(),
                    s.span_id.clone(),
                    format!("{:?}{s:?}", ss.scope),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_delivers_each_span_once_and_intact() {
    let sink = Arc::new(MemorySink::new(64 << 20));
    let (relay, grpc, http) = start(sink.clone()).await;
    let mut rng = rand::rng();
    let mut sent = Vec::new();
    let clients = [
        OtlpClient::new(Transport::Grpc, &grpc, false).unwrap(),
        OtlpClient::new(Transport::Grpc, &grpc, true).unwrap(),
        OtlpClient::new(Transport::HttpProto, &http, false).unwrap(),
        OtlpClient::new(Transport::HttpProto, &http, true).unwrap(),
        OtlpClient::new(Transport::HttpJson, &http, false).unwrap(),
        OtlpClient::new(Transport::HttpJson, &http, true).unwrap(),
    ];
    for client in &clients {
        for _ in 0..3 {
            for req in demo_traces(&mut rng, 4) {
                let answer = client.send(&Payload::new(&req), TIMEOUT).await;
                assert_eq!(answer, Answer::Accepted { rejected: 0 });
                sent.push(req);
            }
        }
    }
    let stats = relay.shutdown(TIMEOUT).await;
    let received: Vec<ExportTraceServiceRequest> = sink
        .requests()
        .iter()
        .map(|r| r.to_proto().unwrap())
        .collect();
    let (got, want) = (sorted_spans(&received), sorted_spans(&sent));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    let total: u64 = sent.iter().map(|r| Payload::new(r).spans as u64).sum();
    assert_eq!(stats.relay.spans_accepted, total);
    assert_eq!(stats.sink.exported, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_span_ids_get_partial_success() {
    let sink = Arc::new(MemorySink::new(64 << 20));
    let (relay, grpc, http) = start(sink.clone()).await;
    let mut rng = rand::rng();
    for (transport, endpoint) in [
        (Transport::Grpc, &grpc),
        (Transport::HttpProto, &http),
        (Transport::HttpJson, &http),
    ] {
        let [mut a, _, _] = demo_traces(&mut rng, 2);
        a.resource_spans[0].scope_spans[0].spans[1].span_id = vec![0; 8];
        let client = OtlpClient::new(transport, endpoint, false).unwrap();
        let answer = client.send(&Payload::new(&a), TIMEOUT).await;
        assert_eq!(answer, Answer::Accepted { rejected: 1 }, "{transport:?}");
    }
    let stats = relay.shutdown(TIMEOUT).await;
    assert_eq!(stats.relay.spans_refused_invalid, 3);
    assert_eq!(stats.sink.exported, 3 * 3);
}

async fn raw_http(
    url: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Bytes,
) -> (u16, String, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::post(url).header("content-type", content_type);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = client
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        ct,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn failed_with(answer: &Answer, code: &str) -> bool {
    matches!(answer, Answer::Failed { message } if message.starts_with(code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_while_good_ones_succeed() {
    let sink = Arc::new(MemorySink::new(64 << 20));
    let (relay, grpc, http) = start(sink.clone()).await;
    let traces = format!("{http}/v1/traces");

    // Good traffic running alongside.
    let good = {
        let (grpc, http) = (grpc.clone(), http.clone());
        let mut rng = rand::rng();
        let payloads: Vec<Payload> = (0..40)
            .map(|_| Payload::new(&demo_traces(&mut rng, 3)[0]))
            .collect();
        tokio::spawn(async move {
            let g = OtlpClient::new(Transport::Grpc, &grpc, false).unwrap();
            let h = OtlpClient::new(Transport::HttpProto, &http, false).unwrap();
            let mut spans = 0u64;
            for (i, p) in payloads.iter().enumerate() {
                let client = if i % 2 == 0 { &g } else { &h };
                assert_eq!(
                    client.send(p, TIMEOUT).await,
                    Answer::Accepted { rejected: 0 }
                );
                spans += p.spans as u64;
            }
            spans
        })
    };

    let mut rng = rand::rng();
    let [a, _, _] = demo_traces(&mut rng, 3);
    let good_bytes = Payload::new(&a).protobuf;
    let garbage = Payload {
        protobuf: Bytes::from_static(&[0xff; 64]),
        json: Bytes::from_static(b"{nope"),
        spans: 0,
    };
    let truncated = Payload {
        protobuf: good_bytes.slice(..good_bytes.len() - 7),
        json: Bytes::from_static(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"#),
        spans: 0,
    };
    let huge_request = demo_traces(&mut rng, 2500);
    let huge = Payload::new(&huge_request[1]);
    assert!(huge.protobuf.len() > 1 << 20);

    for transport in [Transport::Grpc, Transport::HttpProto, Transport::HttpJson] {
        let endpoint = if transport == Transport::Grpc {
            &grpc
        } else {
            &http
        };
        let client = OtlpClient::new(transport, endpoint, false).unwrap();
        let gz = OtlpClient::new(transport, endpoint, true).unwrap();
        let (bad, too_large) = match transport {
            Transport::Grpc => ("InvalidArgument", "ResourceExhausted"),
            _ => ("http 400", "http 413"),
        };
        let a = client.send(&garbage, TIMEOUT).await;
        assert!(failed_with(&a, bad), "{transport:?} garbage: {a:?}");
        let a = client.send(&truncated, TIMEOUT).await;
        assert!(failed_with(&a, bad), "{transport:?} truncated: {a:?}");
        let a = client.send(&huge, TIMEOUT).await;
        assert!(failed_with(&a, too_large), "{transport:?} huge: {a:?}");
        // Small on the wire, too large once decompressed.
        let a = gz.send(&huge, TIMEOUT).await;
        assert!(failed_with(&a, too_large), "{transport:?} huge gzip: {a:?}");
    }

    let (status, _, body) = raw_http(&traces, "text/plain", None, good_bytes.clone()).await;
    assert_eq!(status, 415);
    assert!(String::from_utf8_lossy(&body).contains("text/plain"));
    let (status, _, _) = raw_http(
        &traces,
        "application/x-protobuf",
        Some("br"),
        good_bytes.clone(),
    )
    .await;
    assert_eq!(status, 415);
    let (status, ct, _) = raw_http(
        &traces,
        "application/x-protobuf",
        Some("gzip"),
        good_bytes.clone(),
    )
    .await;
    assert_eq!((status, ct.as_str()), (400, "application/x-protobuf"));
    let (status, ct, body) = raw_http(
        &traces,
        "application/json",
        None,
        Bytes::from_static(b"[1,2"),
    )
    .await;
    assert_eq!((status, ct.as_str()), (400, "application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(v["message"].as_str().unwrap().contains("json"));
    // The success body is an ExportTraceServiceResponse in the request's content type.
    let (status, ct, body) =
        raw_http(&traces, "application/json", None, Payload::new(&a).json).await;
    assert_eq!(
        (status, ct.as_str(), &body[..]),
        (200, "application/json", &b"{}"[..])
    );

    let good_spans = good.await.unwrap();
    let stats = relay.shutdown(TIMEOUT).await;
    assert_eq!(stats.sink.exported, good_spans + 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_answers_backpressure_and_stays_within_it() {
    let budget = 256 << 10;
    let sink = Arc::new(MemorySink::new(budget));
    sink.set_hold(true);
    let (relay, grpc, http) = start(sink.clone()).await;
    let mut rng = rand::rng();
    let payloads: Vec<Payload> = (0..8)
        .map(|_| Payload::new(&demo_traces(&mut rng, 40)[1]))
        .collect();
    let mut tasks = Vec::new();
    for (w, p) in payloads.iter().enumerate() {
        let (transport, endpoint) = match w % 3 {
            0 => (Transport::Grpc, grpc.clone()),
            1 => (Transport::HttpProto, http.clone()),
            _ => (Transport::HttpJson, http.clone()),
        };
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let client = OtlpClient::new(transport, &endpoint, false).unwrap();
            let mut answers = Vec::new();
            for _ in 0..30 {
                answers.push(client.send(&p, TIMEOUT).await);
            }
            answers
        }));
    }
    let mut accepted = 0;
    let mut retry_later = 0;
    for t in tasks {
        for a in t.await.unwrap() {
            match a {
                Answer::Accepted { rejected: 0 } => accepted += 1,
                Answer::RetryLater { after: Some(_) } => retry_later += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    assert!(
        accepted > 0 && retry_later > 0,
        "accepted {accepted}, retry {retry_later}"
    );
    assert!(sink.peak_queued_bytes() <= budget);
    assert!(sink.stats().memory_used_bytes <= budget);

    // Once the sink drains, clients that retry get through.
    sink.release();
    sink.set_hold(false);
    let client = OtlpClient::new(Transport::Grpc, &grpc, false).unwrap();
    assert_eq!(
        client.send(&payloads[0], TIMEOUT).await,
        Answer::Accepted { rejected: 0 }
    );

    let metrics = relay.addresses().metrics.unwrap();
    let (status, _, body) = raw_http(
        &format!("http://{metrics}/metrics"),
        "text/plain",
        None,
        Bytes::new(),
    )
    .await;
    // POST is not routed; GET is.
    assert_eq!(status, 405);
    let _ = body;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{metrics}/metrics").parse().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("outcome=\"backpressure\""));
    let resp = client
        .get(format!("http://{metrics}/healthz").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stats = relay.shutdown(TIMEOUT).await;
    assert!(stats.relay.spans_refused_backpressure > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_begins_requests_are_told_to_retry() {
    let sink = Arc::new(MemorySink::new(64 << 20));
    sink.close();
    let (relay, grpc, http) = start(sink.clone()).await;
    let mut rng = rand::rng();
    let p = Payload::new(&demo_traces(&mut rng, 2)[0]);
    for (t, e) in [(Transport::Grpc, &grpc), (Transport::HttpProto, &http)] {
        let client = OtlpClient::new(t, e, false).unwrap();
        assert!(matches!(
            client.send(&p, TIMEOUT).await,
            Answer::RetryLater { .. }
        ));
    }
    let stats = relay.shutdown(TIMEOUT).await;
    assert_eq!(stats.relay.spans_refused_closed, 2 * p.spans as u64);
}
