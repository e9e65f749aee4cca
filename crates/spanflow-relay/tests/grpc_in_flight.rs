//! The gRPC receiver bounds request bytes in flight across all streams: many concurrent large
//! requests are answered `UNAVAILABLE` with `RetryInfo` once the allowance is used up, the
//! reserved bytes never pass the bound (counted, not timed), and every request retried that
//! way is delivered exactly once in the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spanflow_relay::RunningRelay;
use spanflow_relay::tools::client::{Answer, OtlpClient, Transport};
use spanflow_relay::tools::traffic::{AttributeMix, Payload, load_request};
use spanflow_relay::{ByteSize, RelayConfig};
use spanflow_relay::{MemorySink, Sink};
use spanflow_relay::{Outcome, ReceiverProtocol};

const MAX_MESSAGE: u64 = 1 << 20;
const SENDERS: u64 = 24;
const REQUESTS_PER_SENDER: u64 = 3;

#[derive(Default)]
struct Answers {
    accepted: AtomicU64,
    retry_with_info: AtomicU64,
    retry_without_info: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_grpc_requests_stay_within_the_in_flight_bound() {
    let mut cfg = RelayConfig::default();
    cfg.receivers.grpc.endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.receivers.http.enabled = false;
    cfg.telemetry.metrics_enabled = false;
    cfg.receivers.grpc.max_message_size = ByteSize(MAX_MESSAGE);
    cfg.receivers.http.max_body_size = ByteSize(MAX_MESSAGE);
    // The sink exports at once; its budget sizes the in-flight bound: max(budget, 2 x largest).
    let sink = Arc::new(MemorySink::new(2 * MAX_MESSAGE));
    let relay = RunningRelay::start(&cfg, sink.clone()).await.unwrap();
    let limit = relay.in_flight().limit;
    assert_eq!(limit, 2 * MAX_MESSAGE);
    let endpoint = format!("http://{}", relay.addresses().grpc.unwrap());

    // About 800 KB per request: two or three fit in the bound, 24 at once do not.
    let mut rng = rand::rng();
    let mix = AttributeMix {
        count: 8,
        string_len: 2_000,
    };
    let payload = Payload::protobuf_only(&load_request(&mut rng, "big", 200, mix));
    let size = payload.protobuf.len() as u64;
    assert!(
        (MAX_MESSAGE / 2..MAX_MESSAGE - 1024).contains(&size),
        "payload of {size} bytes"
    );

    let answers = Arc::new(Answers::default());
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let client = OtlpClient::new(Transport::Grpc, &endpoint, false).unwrap();
        let payload = payload.clone();
        let answers = answers.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..REQUESTS_PER_SENDER {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 10_000, "never accepted");
                    match client.send(&payload, Duration::from_secs(30)).await {
                        Answer::Accepted { rejected } => {
                            assert_eq!(rejected, 0);
                            answers.accepted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Answer::RetryLater { after: Some(_) } => {
                            answers.retry_with_info.fetch_add(1, Ordering::Relaxed);
                        }
                        Answer::RetryLater { after: None } => {
                            answers.retry_without_info.fetch_add(1, Ordering::Relaxed);
                        }
                        Answer::Failed { message } => panic!("final failure: {message}"),
                    }
                    // Shorter than the RetryInfo hint: the test counts, it does not time.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let accepted = answers.accepted.load(Ordering::Relaxed);
    let with_info = answers.retry_with_info.load(Ordering::Relaxed);
    let without_info = answers.retry_without_info.load(Ordering::Relaxed);
    assert_eq!(accepted, SENDERS * REQUESTS_PER_SENDER);
    assert!(with_info > 0, "the bound never refused a request");
    assert_eq!(without_info, 0, "backpressure answers carry RetryInfo");
    let metrics = relay.metrics();
    assert_eq!(
        metrics.requests_with(ReceiverProtocol::Grpc, Outcome::Backpressure),
        with_info
    );
    assert_eq!(
        metrics.requests_with(ReceiverProtocol::Grpc, Outcome::Accepted),
        accepted
    );

    // Memory: the reserved request bytes never passed the bound, and nothing stays reserved.
    let in_flight = relay.in_flight();
    assert!(
        in_flight.peak <= limit,
        "peak {} > limit {limit}",
        in_flight.peak
    );
    assert!(in_flight.peak >= size, "requests were reserved");
    assert_eq!(in_flight.used, 0);

    // Exactly once: every span of every accepted request, none of the refused ones.
    let spans = SENDERS * REQUESTS_PER_SENDER * payload.spans as u64;
    assert_eq!(sink.stats().accepted, spans);
    let stats = relay.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.relay.spans_accepted, spans);
}

/// A gzipped request reserves room for its decompressed form too, and releases it all.
#[tokio::test]
async fn a_gzipped_request_reserves_room_to_decompress() {
    let mut cfg = RelayConfig::default();
    cfg.receivers.grpc.endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.receivers.http.enabled = false;
    cfg.telemetry.metrics_enabled = false;
    cfg.receivers.grpc.max_message_size = ByteSize(MAX_MESSAGE);
    cfg.receivers.http.max_body_size = ByteSize(MAX_MESSAGE);
    let sink = Arc::new(MemorySink::new(MAX_MESSAGE));
    let relay = RunningRelay::start(&cfg, sink.clone()).await.unwrap();
    let endpoint = format!("http://{}", relay.addresses().grpc.unwrap());
    let mut rng = rand::rng();
    let mix = AttributeMix {
        count: 8,
        string_len: 200,
    };
    let payload = Payload::protobuf_only(&load_request(&mut rng, "zipped", 100, mix));
    let client = OtlpClient::new(Transport::Grpc, &endpoint, true).unwrap();
    let answer = client.send(&payload, Duration::from_secs(30)).await;
    assert_eq!(answer, Answer::Accepted { rejected: 0 });
    let in_flight = relay.in_flight();
    assert!(in_flight.peak > MAX_MESSAGE, "peak {}", in_flight.peak);
    assert!(in_flight.peak <= in_flight.limit);
    assert_eq!(in_flight.used, 0);
    assert_eq!(sink.stats().accepted, payload.spans as u64);
}
