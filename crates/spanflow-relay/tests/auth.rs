//! Receiver authentication: without the configured bearer token or basic credentials a request
//! is answered `UNAUTHENTICATED` / 401 from its headers alone (before any of its body is sent)
//! and never reaches the pipeline; with them it is accepted; a changed token file is used
//! without a restart.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use spanflow_relay::RunningRelay;
use spanflow_relay::{AuthConfig, AuthScheme, HumanDuration, RelayConfig};
use spanflow_relay::{MemorySink, Sink};
use spanflow_relay::{Outcome, ReceiverProtocol};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

const UNAUTHENTICATED: i32 = tonic::Code::Unauthenticated as i32;

fn with_auth(
    scheme: AuthScheme,
    file: Option<std::path::PathBuf>,
    env: Option<&str>,
) -> RelayConfig {
    let mut cfg = config();
    cfg.receivers.auth = Some(AuthConfig {
        scheme,
        file,
        env: env.map(str::to_owned),
        reload_interval: HumanDuration(Duration::from_millis(100)),
    });
    cfg
}

/// Sends one export with `authorization` (if any) over both receivers: (grpc code, http status).
async fn export_both(relay: &RunningRelay, authorization: Option<&str>) -> (i32, u16) {
    let a = relay.addresses();
    let body = payload();
    let mut grpc_headers = Vec::new();
    let mut http_headers = vec![("content-type", "application/x-protobuf")];
    if let Some(v) = authorization {
        grpc_headers.push(("authorization", v));
        http_headers.push(("authorization", v));
    }
    let message = grpc_message(false, &body.protobuf);
    let (_, code, _) = grpc_call(a.grpc.unwrap(), &grpc_headers, &message).await;
    let url = format!("http://{}/v1/traces", a.http.unwrap());
    let (status, headers, _) = http_post(&url, &http_headers, body.protobuf.clone()).await;
    if status == 401 {
        assert!(
            headers.contains_key("www-authenticate"),
            "401 without a challenge"
        );
    }
    (code, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_a_file_guard_both_receivers() {
    let dir = temp_dir("auth-bearer");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "# team tokens\nalpha-token\n\nbeta-token\n").unwrap();
    let (relay, sink) = start(&with_auth(AuthScheme::Bearer, Some(tokens.clone()), None)).await;

    assert_eq!(export_both(&relay, None).await, (UNAUTHENTICATED, 401));
    assert_eq!(
        export_both(&relay, Some("Bearer wrong")).await,
        (UNAUTHENTICATED, 401)
    );
    assert_eq!(
        export_both(&relay, Some("Basic YWxwaGEtdG9rZW4=")).await,
        (UNAUTHENTICATED, 401)
    );
    assert_eq!(
        sink.stats().accepted,
        0,
        "a refused request reached the pipeline"
    );
    assert_eq!(
        export_both(&relay, Some("Bearer alpha-token")).await,
        (0, 200)
    );
    assert_eq!(
        export_both(&relay, Some("bearer beta-token")).await,
        (0, 200)
    );
    let spans = payload().spans as u64;
    assert_eq!(sink.stats().accepted, 4 * spans);
    let m = relay.metrics();
    assert_eq!(
        m.requests_with(ReceiverProtocol::Grpc, Outcome::Unauthenticated),
        3
    );
    assert_eq!(
        m.requests_with(ReceiverProtocol::Http, Outcome::Unauthenticated),
        3
    );

    // A new token file is used without a restart; the old tokens stop working.
    std::fs::write(&tokens, "gamma-token\n").unwrap();
    let end = Instant::now() + DEADLINE;
    while export_both(&relay, Some("Bearer gamma-token")).await != (0, 200) {
        assert!(Instant::now() < end, "the new token file was never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        export_both(&relay, Some("Bearer alpha-token")).await,
        (UNAUTHENTICATED, 401)
    );
    // A broken file keeps the loaded tokens.
    std::fs::remove_file(&tokens).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        export_both(&relay, Some("Bearer gamma-token")).await,
        (0, 200)
    );
    relay.shutdown(DEADLINE).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_from_the_environment() {
    let cfg = with_auth(AuthScheme::Basic, None, Some("RELAY_TEST_BASIC"));
    let sink = Arc::new(MemorySink::new(64 << 20));
    let env = |k: &str| (k == "RELAY_TEST_BASIC").then(|| "otel:pa55word".to_owned());
    let relay = RunningRelay::start_with_env(&cfg, sink.clone(), env)
        .await
        .unwrap();
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("otel:pa55word")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("otel:guess")
    );
    assert_eq!(
        export_both(&relay, Some(&bad)).await,
        (UNAUTHENTICATED, 401)
    );
    assert_eq!(
        export_both(&relay, Some("Bearer pa55word")).await,
        (UNAUTHENTICATED, 401)
    );
    assert_eq!(sink.stats().accepted, 0);
    assert_eq!(export_both(&relay, Some(&good)).await, (0, 200));
    relay.shutdown(DEADLINE).await;

    // The variable must be set.
    let err = RunningRelay::start_with_env(&cfg, sink, |_| None)
        .await
        .unwrap_err();
    let chain = chain(&err);
    assert!(chain.contains("RELAY_TEST_BASIC"), "{chain}");
}

/// The refusal comes from the headers: a client that sends headers and then nothing gets its
/// answer at once, without the relay waiting for (or reserving) a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_before_the_body_is_read() {
    let dir = temp_dir("auth-early");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "alpha-token\n").unwrap();
    let (relay, sink) = start(&with_auth(AuthScheme::Bearer, Some(tokens), None)).await;
    let a = relay.addresses();

    let started = Instant::now();
    let mut tcp = raw(
        a.http.unwrap(),
        b"POST /v1/traces HTTP/1.1\r\nhost: relay\r\ncontent-type: application/x-protobuf\r\ncontent-length: 100000\r\n\r\n",
    )
    .await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut answer))
        .await
        .expect("no answer before the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{text}"
    );

    let mut client = h2_client(a.grpc.unwrap()).await;
    client = client.ready().await.unwrap();
    let (response, _send) = client.send_request(grpc_request(&[]), false).unwrap();
    let (_, code, _) = tokio::time::timeout(Duration::from_secs(1), grpc_status(response))
        .await
        .expect("no answer before the body");
    assert_eq!(code, UNAUTHENTICATED);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        relay.in_flight().peak,
        0,
        "bytes were reserved for a refused request"
    );
    assert_eq!(sink.stats().accepted, 0);
    relay.shutdown(DEADLINE).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_file_stops_the_start() {
    let dir = temp_dir("auth-missing");
    let cfg = with_auth(AuthScheme::Bearer, Some(dir.join("absent")), None);
    let sink = Arc::new(MemorySink::new(1 << 20));
    let err = RunningRelay::start(&cfg, sink).await.unwrap_err();
    let chain = chain(&err);
    assert!(chain.contains("absent"), "{chain}");
    let _ = Bytes::new();
    std::fs::remove_dir_all(&dir).ok();
}

/// An error and its sources, as the binary prints them.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
