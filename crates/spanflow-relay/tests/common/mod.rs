//! Helpers for the relay's integration tests: a relay on free loopback ports, clients that
//! misbehave on the wire (raw TCP, hand-made HTTP/2 frames), good clients with a deadline, and
//! a throwaway PKI.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spanflow_relay::MemorySink;
use spanflow_relay::RunningRelay;
use spanflow_relay::tools::client::{Answer, OtlpClient, Transport};
use spanflow_relay::tools::traffic::{Payload, demo_traces};
use spanflow_relay::{ByteSize, RelayConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The longest any single wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A relay configuration on free loopback ports with 1 MiB request limits.
pub fn config() -> RelayConfig {
    let mut cfg = RelayConfig::default();
    cfg.receivers.grpc.endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.receivers.http.endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.telemetry.metrics_endpoint = "127.0.0.1:0".parse().unwrap();
    cfg.receivers.grpc.max_message_size = ByteSize(1 << 20);
    cfg.receivers.http.max_body_size = ByteSize(1 << 20);
    cfg
}

/// A relay on `cfg` feeding a fresh memory sink.
pub async fn start(cfg: &RelayConfig) -> (RunningRelay, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new(64 << 20));
    let relay = RunningRelay::start(cfg, sink.clone()).await.unwrap();
    (relay, sink)
}

/// The relay's addresses as URLs: (grpc, http, metrics).
pub fn urls(relay: &RunningRelay) -> (String, String, String) {
    let a = relay.addresses();
    (
        format!("http://{}", a.grpc.unwrap()),
        format!("http://{}", a.http.unwrap()),
        a.metrics.map(|m| format!("http://{m}")).unwrap_or_default(),
    )
}

/// A small valid request.
pub fn payload() -> Payload {
    let mut rng = rand::rng();
    Payload::new(&demo_traces(&mut rng, 2)[0])
}

/// Sends one good request on a new connection and returns how long the answer took; fails the
/// test unless it is accepted within `within`.
pub async fn served_within(transport: Transport, endpoint: &str, within: Duration) -> Duration {
    let client = OtlpClient::new(transport, endpoint, false).unwrap();
    let started = Instant::now();
    let answer = client.send(&payload(), within).await;
    let took = started.elapsed();
    assert_eq!(
        answer,
        Answer::Accepted { rejected: 0 },
        "{transport:?} client not served within {within:?} (took {took:?})"
    );
    took
}

/// `GET url` on a new connection: status and body.
pub async fn get(url: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = tokio::time::timeout(DEADLINE, client.get(url.parse().unwrap()))
        .await
        .expect("GET timed out")
        .expect("GET failed");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Opens a TCP connection and writes `bytes` (nothing when empty).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut tcp = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    if !bytes.is_empty() {
        tcp.write_all(bytes).await.unwrap();
    }
    tcp
}

/// Whether the server closed `tcp` within `within` (EOF or reset when reading).
pub async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// The HTTP/2 connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The client preface plus an empty SETTINGS frame.
pub fn h2_start() -> Vec<u8> {
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out
}

fn hpack_literal(index: u8, value: &str) -> Vec<u8> {
    // Literal header field without indexing, indexed name (4-bit prefix).
    let mut out = Vec::new();
    if index < 15 {
        out.push(index);
    } else {
        out.push(0x0f);
        out.push(index - 15);
    }
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// An HPACK block for `POST path` of a gRPC export with `content_type` (no dynamic table, no
/// Huffman coding), and optionally an `authorization` header.
pub fn grpc_headers_block(path: &str, content_type: &str, authorization: Option<&str>) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    block.extend(hpack_literal(4, path)); // :path
    block.extend(hpack_literal(1, "relay")); // :authority
    block.extend(hpack_literal(31, content_type)); // content-type
    block.push(0x00); // te: trailers, literal name
    block.push(2);
    block.extend_from_slice(b"te");
    block.push(8);
    block.extend_from_slice(b"trailers");
    if let Some(a) = authorization {
        block.extend(hpack_literal(23, a)); // authorization
    }
    block
}

/// The export method's path.
pub const EXPORT: &str = spanflow_relay::EXPORT_PATH;

/// A gRPC message: prefix and body.
pub fn grpc_message(compressed: bool, body: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An h2 client connection to `addr` (its connection task spawned).
pub async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = raw(addr, &[]).await;
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.ready().await.unwrap()
}

/// A gRPC export request's head for the h2 client.
pub fn grpc_request(extra: &[(&str, &str)]) -> http::Request<()> {
    let mut b = http::Request::post(format!("http://relay{EXPORT}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// The gRPC status of a response (from its headers, or from its trailers after the body).
pub async fn grpc_status(response: h2::client::ResponseFuture) -> (u16, i32, String) {
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("no response")
        .expect("response failed");
    let http_status = response.status().as_u16();
    let header = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<i32>().ok())
            .map(|code| {
                let message = h
                    .get("grpc-message")
                    .map(|m| percent_decode(m.as_bytes()))
                    .unwrap_or_default();
                (code, message)
            })
    };
    if let Some((code, message)) = header(response.headers()) {
        return (http_status, code, message);
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    let (code, message) = header(&trailers).expect("grpc-status in trailers");
    (http_status, code, message)
}

/// Waits until `check` holds, failing the test after `within`.
pub async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Raises this process's soft open-file limit to at least `needed` (up to the hard limit);
/// returns the soft limit now.
pub fn raise_open_files(needed: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live local of that type.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    let soft: u64 = limit.rlim_cur;
    if soft < needed {
        let raised = libc::rlimit {
            rlim_cur: needed.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` through a pointer to a live local of that type.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    soft
}

/// A throwaway certificate authority.
pub struct Ca {
    pub pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> Identity {
        self.issue(
            &["localhost", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Identity {
        self.issue(&[name], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> Identity {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A fresh temporary directory for this test.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "spanflow-relay-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One gRPC export call on a new HTTP/2 connection: `extra` headers, then `body` (raw bytes,
/// framing included) and the end of the stream; returns (HTTP status, grpc-status, message).
pub async fn grpc_call(
    addr: SocketAddr,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, i32, String) {
    let mut client = h2_client(addr).await;
    let mut head = grpc_request(&[]);
    for (k, v) in extra {
        head.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(head, body.is_empty()).unwrap();
    if !body.is_empty() {
        // The relay may answer from the headers alone and close the stream first.
        let _ = send.send_data(Bytes::copy_from_slice(body), true);
    }
    grpc_status(response).await
}

/// `POST url` with `headers` and `body` on a new connection: (status, headers, body).
pub async fn http_post(
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, http::HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(DEADLINE, client.request(req.body(Full::new(body)).unwrap()))
        .await
        .expect("POST timed out")
        .expect("POST failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// Decodes a percent-encoded `grpc-message`.
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
