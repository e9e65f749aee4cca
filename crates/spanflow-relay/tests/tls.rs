//! TLS on the receivers and the metrics endpoint with a throwaway CA (rcgen): clients that
//! trust the CA are served; with a client CA configured (mTLS) only clients holding a
//! certificate it issued are; a renewed certificate is served without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::uri::PathAndQuery;
use spanflow_relay::BytesCodec;
use spanflow_relay::Sink;
use spanflow_relay::{HumanDuration, RelayConfig, TlsConfig};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(tag: &str) -> Self {
        Self { dir: temp_dir(tag) }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn write_identity(&self, prefix: &str, id: &Identity) {
        // Key first: a reload between the two writes sees a key that does not match the
        // certificate and keeps the old pair.
        std::fs::write(self.path(&format!("{prefix}.key")), &id.key_pem).unwrap();
        std::fs::write(self.path(&format!("{prefix}.crt")), &id.cert_pem).unwrap();
    }
    fn tls(&self, prefix: &str, client_ca: Option<&Path>) -> TlsConfig {
        TlsConfig {
            cert_file: self.path(&format!("{prefix}.crt")),
            key_file: self.path(&format!("{prefix}.key")),
            client_ca_file: client_ca.map(Path::to_path_buf),
            reload_interval: HumanDuration(Duration::from_millis(100)),
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Sends one export over gRPC with TLS, trusting `ca`, presenting `identity` if given.
async fn grpc_tls(port: u16, ca: &str, identity: Option<&Identity>) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            &id.cert_pem,
            &id.key_pem,
        ));
    }
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5));
    let channel = tokio::time::timeout(DEADLINE, endpoint.connect())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let path = PathAndQuery::from_static(EXPORT);
    tokio::time::timeout(
        DEADLINE,
        grpc.unary(tonic::Request::new(payload().protobuf), path, BytesCodec),
    )
    .await
    .map_err(|_| "call timed out".to_owned())?
    .map(|_| ())
    .map_err(|s| format!("{s:?}"))
}

/// Sends one export over HTTPS, trusting `ca`, presenting `identity` if given; the status.
async fn http_tls(
    port: u16,
    path: &str,
    ca: &str,
    identity: Option<&Identity>,
) -> Result<u16, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5));
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    let client = builder.build().unwrap();
    let url = format!("https://127.0.0.1:{port}{path}");
    let request = if path == "/v1/traces" {
        client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(payload().protobuf.to_vec())
    } else {
        client.get(url)
    };
    request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

fn tls_config(files: &Files, client_ca: Option<&Path>) -> RelayConfig {
    let mut cfg = config();
    cfg.receivers.tls = Some(files.tls("server", client_ca));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_receivers_and_the_metrics_endpoint_serve_tls() {
    let ca = Ca::new("spanflow relay test ca");
    let files = Files::new("tls");
    files.write_identity("server", &ca.server());
    let mut cfg = tls_config(&files, None);
    cfg.telemetry.tls = Some(files.tls("server", None));
    let (relay, sink) = start(&cfg).await;
    let a = relay.addresses();
    let (grpc, http, metrics) = (
        a.grpc.unwrap().port(),
        a.http.unwrap().port(),
        a.metrics.unwrap().port(),
    );
    grpc_tls(grpc, &ca.pem, None).await.unwrap();
    assert_eq!(http_tls(http, "/v1/traces", &ca.pem, None).await, Ok(200));
    assert_eq!(http_tls(metrics, "/healthz", &ca.pem, None).await, Ok(200));
    assert_eq!(http_tls(metrics, "/metrics", &ca.pem, None).await, Ok(200));
    // A client that does not trust the CA is refused by its own handshake.
    let other = Ca::new("another ca");
    assert!(grpc_tls(grpc, &other.pem, None).await.is_err());
    assert!(
        http_tls(http, "/v1/traces", &other.pem, None)
            .await
            .is_err()
    );
    // Plain text on a TLS port gets no answer.
    let plain = spanflow_relay::tools::client::OtlpClient::new(
        spanflow_relay::tools::client::Transport::HttpProto,
        &format!("http://127.0.0.1:{http}"),
        false,
    )
    .unwrap();
    assert_ne!(
        plain.send(&payload(), Duration::from_secs(5)).await,
        spanflow_relay::tools::client::Answer::Accepted { rejected: 0 }
    );
    assert_eq!(sink.stats().accepted, 2 * payload().spans as u64);
    assert!(relay.shutdown(DEADLINE).await.flushed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_serves_only_clients_with_a_certificate_from_the_client_ca() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let stranger_ca = Ca::new("stranger ca");
    let files = Files::new("mtls");
    files.write_identity("server", &server_ca.server());
    std::fs::write(files.path("clients.crt"), &client_ca.pem).unwrap();
    let cfg = tls_config(&files, Some(&files.path("clients.crt")));
    let (relay, sink) = start(&cfg).await;
    let a = relay.addresses();
    let (grpc, http) = (a.grpc.unwrap().port(), a.http.unwrap().port());
    let good = client_ca.client("service-a");
    let stranger = stranger_ca.client("service-b");

    assert!(grpc_tls(grpc, &server_ca.pem, None).await.is_err());
    assert!(
        grpc_tls(grpc, &server_ca.pem, Some(&stranger))
            .await
            .is_err()
    );
    assert!(
        http_tls(http, "/v1/traces", &server_ca.pem, None)
            .await
            .is_err()
    );
    assert!(
        http_tls(http, "/v1/traces", &server_ca.pem, Some(&stranger))
            .await
            .is_err()
    );
    assert_eq!(sink.stats().accepted, 0);

    grpc_tls(grpc, &server_ca.pem, Some(&good)).await.unwrap();
    assert_eq!(
        http_tls(http, "/v1/traces", &server_ca.pem, Some(&good)).await,
        Ok(200)
    );
    assert_eq!(sink.stats().accepted, 2 * payload().spans as u64);
    assert!(relay.shutdown(DEADLINE).await.flushed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let old_ca = Ca::new("old ca");
    let new_ca = Ca::new("new ca");
    let files = Files::new("tls-reload");
    files.write_identity("server", &old_ca.server());
    let (relay, _sink) = start(&tls_config(&files, None)).await;
    let a = relay.addresses();
    let (grpc, http) = (a.grpc.unwrap().port(), a.http.unwrap().port());
    grpc_tls(grpc, &old_ca.pem, None).await.unwrap();
    assert!(grpc_tls(grpc, &new_ca.pem, None).await.is_err());

    files.write_identity("server", &new_ca.server());
    let end = Instant::now() + DEADLINE;
    while grpc_tls(grpc, &new_ca.pem, None).await.is_err() {
        assert!(
            Instant::now() < end,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        http_tls(http, "/v1/traces", &new_ca.pem, None).await,
        Ok(200)
    );
    assert!(grpc_tls(grpc, &old_ca.pem, None).await.is_err());
    // A half-written renewal (garbage key) keeps the certificate being served.
    std::fs::write(files.path("server.key"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    grpc_tls(grpc, &new_ca.pem, None).await.unwrap();
    let _ = Bytes::new();
    assert!(relay.shutdown(DEADLINE).await.flushed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_ends_is_cut_at_the_header_read_timeout() {
    let ca = Ca::new("ca");
    let files = Files::new("tls-stall");
    files.write_identity("server", &ca.server());
    let mut cfg = tls_config(&files, None);
    cfg.receivers.header_read_timeout = HumanDuration(Duration::from_millis(500));
    let (relay, _sink) = start(&cfg).await;
    let mut tcp = raw(relay.addresses().grpc.unwrap(), &[0x16, 0x03, 0x01]).await;
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);
    grpc_tls(relay.addresses().grpc.unwrap().port(), &ca.pem, None)
        .await
        .unwrap();
    assert!(relay.shutdown(DEADLINE).await.flushed);
}
