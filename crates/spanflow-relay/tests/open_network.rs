//! Cheap clients must not take the relay out of service. Each test runs one attack from issue
//! 17 against an in-process relay and checks that good clients are still served within a
//! second while it runs, that the attackers' resources are bounded, and that the attackers
//! are cut off by the timeouts. The tests run one at a time (they measure latency on a
//! two-core machine).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use spanflow_relay::Sink;
use spanflow_relay::tools::client::Transport;
use spanflow_relay::{ByteSize, HumanDuration};
use spanflow_relay::{Closed, Listener, Outcome, ReceiverProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SERVED: Duration = Duration::from_secs(1);

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// 64 HTTP clients declare 4 MiB bodies and send 2 bytes. Bytes are reserved as they arrive,
/// so they hold almost nothing; good clients are served at once; at the body read timeout each
/// slow client gets 408 and everything reserved is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_bodies_hold_no_reservation_and_time_out() {
    let _serial = serial().await;
    let mut cfg = config();
    cfg.receivers.http.max_body_size = ByteSize(4 << 20);
    cfg.receivers.grpc.max_message_size = ByteSize(4 << 20);
    cfg.receivers.body_read_timeout = HumanDuration(Duration::from_secs(2));
    let (relay, sink) = start(&cfg).await;
    let (grpc, http, _) = urls(&relay);
    let addr = relay.addresses().http.unwrap();
    let head = "POST /v1/traces HTTP/1.1\r\nhost: relay\r\ncontent-type: application/x-protobuf\r\ncontent-length: 4194304\r\n\r\nab";
    let mut slow = Vec::new();
    for _ in 0..64 {
        slow.push(raw(addr, head.as_bytes()).await);
    }
    eventually(DEADLINE, "64 slow bodies being read", || {
        relay.metrics().connections_open(Listener::Http) >= 64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = relay.in_flight().used;
    assert_eq!(held, 64 * 2, "slow bodies hold what they sent");
    let g = served_within(Transport::Grpc, &grpc, SERVED).await;
    let h = served_within(Transport::HttpProto, &http, SERVED).await;
    println!("during 64 slow bodies: grpc served in {g:?}, http in {h:?}, reserved {held} bytes");

    let started = Instant::now();
    for tcp in &mut slow {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "slow client never answered");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    println!("slow bodies cut after {:?}", started.elapsed());
    assert_eq!(
        relay
            .metrics()
            .requests_with(ReceiverProtocol::Http, Outcome::Timeout),
        64
    );
    eventually(DEADLINE, "reservations released", || {
        relay.in_flight().used == 0
    })
    .await;
    let stats = relay.shutdown(DEADLINE).await;
    assert_eq!(stats.sink.accepted, sink.stats().accepted);
    assert!(stats.flushed);
}

/// One connection opens 64 gRPC streams that each send a 5-byte prefix declaring a 4 MiB
/// message and stall. They hold 320 bytes in all; good clients are served at once; at the
/// body read timeout each stream is answered `DEADLINE_EXCEEDED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_grpc_streams_hold_what_they_sent_and_time_out() {
    let _serial = serial().await;
    let mut cfg = config();
    cfg.receivers.http.max_body_size = ByteSize(4 << 20);
    cfg.receivers.grpc.max_message_size = ByteSize(4 << 20);
    cfg.receivers.body_read_timeout = HumanDuration(Duration::from_secs(2));
    let (relay, _sink) = start(&cfg).await;
    let (grpc, http, _) = urls(&relay);
    let mut client = h2_client(relay.addresses().grpc.unwrap()).await;
    let prefix = Bytes::from(vec![0, 0x00, 0x3f, 0xff, 0xfb]);
    let mut streams = Vec::new();
    for _ in 0..64 {
        client = client.ready().await.unwrap();
        let (response, mut send) = client.send_request(grpc_request(&[]), false).unwrap();
        send.send_data(prefix.clone(), false).unwrap();
        streams.push((response, send));
    }
    eventually(DEADLINE, "64 prefixes reserved", || {
        relay.in_flight().used == 320
    })
    .await;
    let g = served_within(Transport::Grpc, &grpc, SERVED).await;
    let h = served_within(Transport::HttpProto, &http, SERVED).await;
    println!("during 64 stalled streams: grpc served in {g:?}, http in {h:?}, reserved 320 bytes");

    for (response, _send) in streams {
        let (_, code, message) = grpc_status(response).await;
        assert_eq!(code, tonic::Code::DeadlineExceeded as i32, "{message}");
    }
    assert_eq!(
        relay
            .metrics()
            .requests_with(ReceiverProtocol::Grpc, Outcome::Timeout),
        64
    );
    eventually(DEADLINE, "reservations released", || {
        relay.in_flight().used == 0
    })
    .await;
    assert!(relay.shutdown(DEADLINE).await.flushed);
}

/// Idle connections of every kind, twice the connection limit on each receiver: a new
/// connection at the limit makes the idlest one give way, so good clients (and `/healthz`,
/// which has its own connections) are served at once; the rest are closed by the header read
/// timeout.
///
/// The figure is 2,000 idle connections; this opens 2,000 per receiver when the
/// open-file limit allows (about 6,200 descriptors in this process) and scales down otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_give_way_to_good_clients() {
    let _serial = serial().await;
    let soft = raise_open_files(8192);
    let per_receiver = if soft >= 8192 {
        2000
    } else {
        ((soft.saturating_sub(600)) / 3) as usize
    };
    assert!(
        per_receiver >= 200,
        "open-file limit {soft} is too low for this test"
    );
    let mut cfg = config();
    cfg.receivers.header_read_timeout = HumanDuration(Duration::from_secs(5));
    cfg.receivers.max_connections = per_receiver / 2;
    let (relay, _sink) = start(&cfg).await;
    let (grpc, http, metrics) = urls(&relay);
    let a = relay.addresses();
    let (grpc_addr, http_addr) = (a.grpc.unwrap(), a.http.unwrap());
    let h2 = h2_start();
    let half_h1 = b"POST /v1/traces HTTP/1.1\r\nhost: re";
    let started = Instant::now();
    let mut idle = Vec::new();
    for i in 0..per_receiver {
        let (g, h): (&[u8], &[u8]) = match i % 3 {
            0 => (&[], &[]),
            1 => (&h2, &h2),
            _ => (&h2, half_h1),
        };
        idle.push(raw(grpc_addr, g).await);
        idle.push(raw(http_addr, h).await);
    }
    println!(
        "{} idle connections opened in {:?}",
        idle.len(),
        started.elapsed()
    );
    let g = served_within(Transport::Grpc, &grpc, SERVED).await;
    let h = served_within(Transport::HttpProto, &http, SERVED).await;
    let started = Instant::now();
    let (status, _) = get(&format!("{metrics}/healthz")).await;
    let health = started.elapsed();
    assert_eq!(status, 200);
    assert!(health < SERVED, "/healthz took {health:?}");
    println!(
        "with {per_receiver} idle connections per receiver: grpc served in {g:?}, http in {h:?}, /healthz in {health:?}"
    );
    let m = relay.metrics();
    assert!(m.connections_open(Listener::Grpc) <= cfg.receivers.max_connections as u64);
    assert!(m.connections_open(Listener::Http) <= cfg.receivers.max_connections as u64);
    assert!(m.connections_closed(Listener::Grpc, Closed::Evicted) > 0);
    assert!(m.connections_closed(Listener::Http, Closed::Evicted) > 0);

    // Every idle connection is closed by now or by the header read timeout.
    let end = Instant::now() + Duration::from_secs(5) + Duration::from_secs(10);
    for tcp in &mut idle {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            closed_within(tcp, left).await,
            "an idle connection was kept"
        );
    }
    assert!(relay.shutdown(DEADLINE).await.flushed);
}

/// Slowloris: 100 HTTP/1.1 connections send their request headers a byte at a time; 50 HTTP/2
/// connections a valid header block a byte per frame (HEADERS without END_HEADERS, then
/// CONTINUATION frames) and 50 a PING but never a request; every 100 ms for up to 45 s. Good clients are served meanwhile, and each slow connection is cut at the header read
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_the_header_read_timeout() {
    let _serial = serial().await;
    let mut cfg = config();
    let timeout = Duration::from_secs(1);
    cfg.receivers.header_read_timeout = HumanDuration(timeout);
    let (relay, _sink) = start(&cfg).await;
    let (grpc, http, _) = urls(&relay);
    let a = relay.addresses();
    let (grpc_addr, http_addr) = (a.grpc.unwrap(), a.http.unwrap());
    let mut attackers = Vec::new();
    for i in 0..200 {
        attackers.push(tokio::spawn(async move {
            let started = Instant::now();
            // A valid header block, sent a byte per frame and never ended.
            let block = grpc_headers_block(EXPORT, "application/grpc", None);
            let mut tcp = if i % 2 == 0 {
                raw(http_addr, b"POST /v1/traces HTTP/1.1\r\n").await
            } else if i % 4 == 3 {
                raw(grpc_addr, &h2_start()).await
            } else {
                let mut start = h2_start();
                // HEADERS on stream 1 without END_HEADERS.
                start.extend(h2_frame(0x1, 0, 1, &block[..1]));
                raw(grpc_addr, &start).await
            };
            let mut next = 1;
            // One byte (or one-byte CONTINUATION) every 100 ms, for up to 45 s.
            while started.elapsed() < Duration::from_secs(45) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let piece = if i % 2 == 0 {
                    b"x".to_vec()
                } else if i % 4 == 1 {
                    next += 1;
                    h2_frame(0x9, 0, 1, &block[(next - 1) % block.len()..][..1])
                } else {
                    // A PING on a connection that never completes a request.
                    h2_frame(0x6, 0, 0, &[0; 8])
                };
                if tcp.write_all(&piece).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 1024];
                // Anything the server sent (SETTINGS, GOAWAY) or its close.
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await
                {
                    break;
                }
            }
            started.elapsed()
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let g = served_within(Transport::Grpc, &grpc, SERVED).await;
    let h = served_within(Transport::HttpProto, &http, SERVED).await;
    println!("during slowloris: grpc served in {g:?}, http in {h:?}");
    let mut longest = Duration::ZERO;
    for a in attackers {
        let held = tokio::time::timeout(DEADLINE, a).await.unwrap().unwrap();
        longest = longest.max(held);
    }
    println!("slowloris connections cut after at most {longest:?}");
    assert!(
        longest < timeout + Duration::from_secs(3),
        "held for {longest:?}"
    );
    let m = relay.metrics();
    for l in [Listener::Http, Listener::Grpc] {
        println!(
            "{l:?}: header_timeout {} client {}",
            m.connections_closed(l, Closed::HeaderTimeout),
            m.connections_closed(l, Closed::Client)
        );
    }
    // HTTP/1.1 trickles and HTTP/2 pings without a request are cut by the header read
    // timeout; HTTP/2 CONTINUATION trickles already by h2's own limit on CONTINUATION frames
    // (GOAWAY ENHANCE_YOUR_CALM), before it.
    assert_eq!(
        m.connections_closed(Listener::Http, Closed::HeaderTimeout),
        100
    );
    assert_eq!(
        m.connections_closed(Listener::Grpc, Closed::HeaderTimeout),
        50
    );
    assert!(relay.shutdown(DEADLINE).await.flushed);
}
