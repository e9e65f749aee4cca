//! The README's answers table, row by row, for the rows issue 17 added or changed. The other
//! rows are covered elsewhere: accepted, invalid ids, garbage and truncated protobuf, too large
//! and a full memory budget in `receivers.rs`; the gRPC in-flight bound in `grpc_in_flight.rs`;
//! credentials in `auth.rs`; stalled bodies in `open_network.rs`.

mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use spanflow_relay::RunningRelay;
use spanflow_relay::{ByteSize, HumanDuration};
use spanflow_relay::{MemorySink, Sink};
use spanflow_relay::{Outcome, ReceiverProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Malformed over gRPC is INVALID_ARGUMENT whatever is wrong: garbage gzip, a compressed flag
/// without `grpc-encoding`, a flag other than 0/1, a truncated frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_framing_and_compression_is_invalid_argument() {
    let (relay, sink) = start(&config()).await;
    let addr = relay.addresses().grpc.unwrap();
    let good = payload().protobuf;
    let gz = [("grpc-encoding", "gzip")];
    let mut truncated = grpc_message(false, &good);
    truncated.truncate(truncated.len() - 10);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>);
    let cases: Vec<Case<'_>> = vec![
        (
            "garbage gzip",
            gz.to_vec(),
            grpc_message(true, b"definitely not gzip"),
        ),
        (
            "compressed flag without encoding",
            vec![],
            grpc_message(true, &gzip(&good)),
        ),
        ("flag 7", vec![], {
            let mut m = grpc_message(false, &good);
            m[0] = 7;
            m
        }),
        ("truncated frame", vec![], truncated),
        ("truncated prefix", vec![], vec![0, 0, 0]),
        ("garbage protobuf", vec![], grpc_message(false, &[0xff; 64])),
    ];
    for (what, headers, body) in &cases {
        let (_, code, message) = grpc_call(addr, headers, body).await;
        assert_eq!(code, Code::InvalidArgument as i32, "{what}: {message}");
    }
    // The well-formed gzip message is fine.
    let (_, code, _) = grpc_call(addr, &gz, &grpc_message(true, &gzip(&good))).await;
    assert_eq!(code, 0);
    assert_eq!(
        relay
            .metrics()
            .requests_with(ReceiverProtocol::Grpc, Outcome::Malformed),
        cases.len() as u64
    );
    assert_eq!(sink.stats().accepted, payload().spans as u64);
    relay.shutdown(DEADLINE).await;
}

/// A unary Export with two messages (or none) is a request cardinality violation:
/// UNIMPLEMENTED, as the gRPC status code table prescribes; nothing of it is accepted, and it
/// is counted as malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_with_two_messages_is_refused_and_counted() {
    let (relay, sink) = start(&config()).await;
    let addr = relay.addresses().grpc.unwrap();
    let mut rng = rand::rng();
    let two: Vec<u8> = spanflow_relay::tools::traffic::demo_traces(&mut rng, 50)[..2]
        .iter()
        .flat_map(|r| {
            grpc_message(
                false,
                &spanflow_relay::tools::traffic::Payload::new(r).protobuf,
            )
        })
        .collect();
    let (_, code, message) = grpc_call(addr, &[], &two).await;
    assert_eq!(code, Code::Unimplemented as i32, "{message}");
    assert!(
        message.contains("more than one request message"),
        "{message}"
    );

    // The second message arriving later, in its own DATA frame, is refused the same way.
    let mut client = h2_client(addr).await;
    client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(grpc_request(&[]), false).unwrap();
    let first = grpc_message(false, &payload().protobuf);
    send.send_data(Bytes::from(first.clone()), false).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    send.send_data(Bytes::from(first), true).unwrap();
    let (_, code, _) = grpc_status(response).await;
    assert_eq!(code, Code::Unimplemented as i32);

    let (_, code, message) = grpc_call(addr, &[], &[]).await;
    assert_eq!(code, Code::Unimplemented as i32, "{message}");

    assert_eq!(sink.stats().accepted, 0);
    assert_eq!(relay.metrics().counts().spans_accepted, 0);
    assert_eq!(
        relay
            .metrics()
            .requests_with(ReceiverProtocol::Grpc, Outcome::Malformed),
        3
    );
    relay.shutdown(DEADLINE).await;
}

/// gRPC refuses a content type that is not gRPC (HTTP 415 with INVALID_ARGUMENT, as grpc-go
/// answers) and an unsupported `grpc-encoding` (UNIMPLEMENTED); HTTP answers 415 for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_or_encoding() {
    let (relay, sink) = start(&config()).await;
    let a = relay.addresses();
    let message = grpc_message(false, &payload().protobuf);
    let (http_status, code, _) = grpc_call(
        a.grpc.unwrap(),
        &[("content-type", "application/json")],
        &message,
    )
    .await;
    assert_eq!((http_status, code), (415, Code::InvalidArgument as i32));
    let (_, code, _) = grpc_call(a.grpc.unwrap(), &[("grpc-encoding", "br")], &message).await;
    assert_eq!(code, Code::Unimplemented as i32);
    let (_, code, _) = grpc_call(
        a.grpc.unwrap(),
        &[("content-type", "application/grpc+proto")],
        &message,
    )
    .await;
    assert_eq!(code, 0);
    let url = format!("http://{}/v1/traces", a.http.unwrap());
    let (status, _, _) =
        http_post(&url, &[("content-type", "text/plain")], payload().protobuf).await;
    assert_eq!(status, 415);
    let (status, _, _) = http_post(
        &url,
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "br"),
        ],
        payload().protobuf,
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(sink.stats().accepted, payload().spans as u64);
    relay.shutdown(DEADLINE).await;
}

/// A body that does not arrive within `body_read_timeout`: 408 / DEADLINE_EXCEEDED, and the
/// bytes it held are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time() {
    let mut cfg = config();
    cfg.receivers.body_read_timeout = HumanDuration(Duration::from_millis(500));
    let (relay, _sink) = start(&cfg).await;
    let a = relay.addresses();
    let body = payload().protobuf;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: relay\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut tcp = raw(a.http.unwrap(), head.as_bytes()).await;
    tcp.write_all(&body[..body.len() / 2]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"));

    // gRPC: a whole message, but the stream never ends.
    let mut client = h2_client(a.grpc.unwrap()).await;
    client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(grpc_request(&[]), false).unwrap();
    send.send_data(Bytes::from(grpc_message(false, &body)), false)
        .unwrap();
    let (_, code, _) = grpc_status(response).await;
    assert_eq!(code, Code::DeadlineExceeded as i32);
    let m = relay.metrics();
    assert_eq!(m.requests_with(ReceiverProtocol::Http, Outcome::Timeout), 1);
    assert_eq!(m.requests_with(ReceiverProtocol::Grpc, Outcome::Timeout), 1);
    eventually(DEADLINE, "reservations released", || {
        relay.in_flight().used == 0
    })
    .await;
    relay.shutdown(DEADLINE).await;
}

/// Request bytes in flight at their bound: HTTP 503 + Retry-After, gRPC UNAVAILABLE with
/// RetryInfo. A gRPC call holding a whole message without ending its stream keeps the bound
/// used until its body read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_in_flight_at_their_bound() {
    let mut cfg = config();
    cfg.receivers.grpc.max_message_size = ByteSize(1 << 20);
    cfg.receivers.http.max_body_size = ByteSize(1 << 20);
    // The bound: max(budget, 2 x largest) = 2 MiB.
    let sink = Arc::new(MemorySink::new(1 << 20));
    let relay = RunningRelay::start(&cfg, sink.clone()).await.unwrap();
    assert_eq!(relay.in_flight().limit, 2 << 20);
    let a = relay.addresses();
    let mut client = h2_client(a.grpc.unwrap()).await;
    client = client.ready().await.unwrap();
    let (_hold_response, mut hold) = client.send_request(grpc_request(&[]), false).unwrap();
    let big = vec![0u8; 900 << 10];
    for chunk in grpc_message(false, &big).chunks(16 << 10) {
        hold.reserve_capacity(chunk.len());
        hold.send_data(Bytes::copy_from_slice(chunk), false)
            .unwrap();
    }
    eventually(DEADLINE, "the held message reserved", || {
        relay.in_flight().used >= 2 * (900 << 10)
    })
    .await;
    let url = format!("http://{}/v1/traces", a.http.unwrap());
    let body = Bytes::from(vec![0u8; 400 << 10]);
    let (status, headers, _) =
        http_post(&url, &[("content-type", "application/x-protobuf")], body).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    let client = spanflow_relay::tools::client::OtlpClient::new(
        spanflow_relay::tools::client::Transport::Grpc,
        &format!("http://{}", a.grpc.unwrap()),
        false,
    )
    .unwrap();
    let mut rng = rand::rng();
    let mix = spanflow_relay::tools::traffic::AttributeMix {
        count: 8,
        string_len: 2500,
    };
    let large = spanflow_relay::tools::traffic::Payload::protobuf_only(
        &spanflow_relay::tools::traffic::load_request(&mut rng, "big", 100, mix),
    );
    assert!((300 << 10..1 << 20).contains(&large.protobuf.len()));
    assert_eq!(
        client.send(&large, DEADLINE).await,
        spanflow_relay::tools::client::Answer::RetryLater {
            after: Some(Duration::from_millis(250))
        }
    );
    hold.send_reset(h2::Reason::CANCEL);
    relay.shutdown(DEADLINE).await;
}

/// During the shutdown drain: `/healthz` 503, `/metrics` still served, requests in progress on
/// open connections answered 503 + Retry-After / UNAVAILABLE, new connections refused; the
/// drain ends as soon as they are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_during_the_shutdown_drain() {
    let mut cfg = config();
    cfg.receivers.drain_timeout = HumanDuration(Duration::from_secs(10));
    let (relay, sink) = start(&cfg).await;
    let a = relay.addresses();
    let (http, grpc, metrics) = (a.http.unwrap(), a.grpc.unwrap(), a.metrics.unwrap());
    let body = payload().protobuf;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: relay\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut h1 = raw(http, head.as_bytes()).await;
    h1.write_all(&body[..10]).await.unwrap();
    let mut client = h2_client(grpc).await;
    client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(grpc_request(&[]), false).unwrap();
    let message = grpc_message(false, &body);
    send.send_data(Bytes::copy_from_slice(&message[..10]), false)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let shutdown = tokio::spawn(relay.shutdown(DEADLINE));
    let end = Instant::now() + DEADLINE;
    while get(&format!("http://{metrics}/healthz")).await.0 != 503 {
        assert!(Instant::now() < end, "/healthz never turned 503");
    }
    let (status, page) = get(&format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200);
    assert!(page.contains("spanflow_relay_requests_total"));
    let refused = tokio::net::TcpStream::connect(http).await;
    if let Ok(mut tcp) = refused {
        assert!(
            closed_within(&mut tcp, Duration::from_secs(2)).await,
            "a new connection was served"
        );
    }

    h1.write_all(&body[10..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, h1.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    send.send_data(Bytes::copy_from_slice(&message[10..]), true)
        .unwrap();
    let (_, code, _) = grpc_status(response).await;
    assert_eq!(code, Code::Unavailable as i32);

    let stats = tokio::time::timeout(DEADLINE, shutdown)
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "drain took {took:?}");
    assert!(stats.flushed);
    assert_eq!(stats.relay.spans_refused_closed, 2 * payload().spans as u64);
    assert_eq!(sink.stats().accepted, 0);
}

/// More streams than `max_concurrent_streams` on one connection: the relay advertises the
/// limit, so a well-behaved client queues its calls instead of opening more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_is_advertised() {
    let mut cfg = config();
    cfg.receivers.max_concurrent_streams = 7;
    let (relay, _sink) = start(&cfg).await;
    let tcp = raw(relay.addresses().grpc.unwrap(), &[]).await;
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(async move {
        let mut connection = connection;
        std::future::poll_fn(|cx| {
            let _ = std::pin::Pin::new(&mut connection).poll(cx);
            if connection.max_concurrent_send_streams() == 7 {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    });
    let _client = client;
    tokio::time::timeout(DEADLINE, connection)
        .await
        .expect("SETTINGS_MAX_CONCURRENT_STREAMS 7 never arrived")
        .unwrap();
    relay.shutdown(DEADLINE).await;
}

/// An unknown gRPC method is UNIMPLEMENTED, an unknown HTTP path 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_or_path() {
    let (relay, _sink) = start(&config()).await;
    let a = relay.addresses();
    let mut client = h2_client(a.grpc.unwrap()).await;
    client = client.ready().await.unwrap();
    let head = http::Request::post(
        "http://relay/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    )
    .header("content-type", "application/grpc")
    .body(())
    .unwrap();
    let (response, _) = client.send_request(head, true).unwrap();
    let (_, code, _) = grpc_status(response).await;
    assert_eq!(code, Code::Unimplemented as i32);
    let (status, _, _) = http_post(
        &format!("http://{}/v1/logs", a.http.unwrap()),
        &[("content-type", "application/x-protobuf")],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 404);
    relay.shutdown(DEADLINE).await;
}

/// Requests still in progress at `drain_timeout` have their connections closed, so a stalled
/// client cannot hold the shutdown (or the final flush) past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_closes_requests_still_in_progress() {
    let mut cfg = config();
    cfg.receivers.drain_timeout = HumanDuration(Duration::from_millis(500));
    let (relay, _sink) = start(&cfg).await;
    let a = relay.addresses();
    let mut client = h2_client(a.grpc.unwrap()).await;
    client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(grpc_request(&[]), false).unwrap();
    send.send_data(Bytes::from_static(&[0, 0, 0, 1, 0]), false)
        .unwrap();
    let mut h1 = raw(
        a.http.unwrap(),
        b"POST /v1/traces HTTP/1.1\r\nhost: relay\r\ncontent-type: application/x-protobuf\r\ncontent-length: 1000\r\n\r\nab",
    )
    .await;
    eventually(DEADLINE, "both requests in progress", || {
        relay.in_flight().used == 7
    })
    .await;
    let started = Instant::now();
    let stats = relay.shutdown(DEADLINE).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert!(stats.flushed);
    assert!(closed_within(&mut h1, Duration::from_secs(1)).await);
    assert!(
        tokio::time::timeout(DEADLINE, response)
            .await
            .unwrap()
            .is_err()
    );
}
