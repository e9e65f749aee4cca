//! TLS for both exporters against in-process receivers, with a throwaway CA made per run.
//!
//! Checks that a configured CA is trusted (builder and configuration paths), that a server
//! the client cannot verify (unknown issuer, wrong name) is refused quickly with an error
//! that says why, and that a CA still works on a system without any root certificates.
#![cfg(not(loom))]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Receiver, TlsIdentity, batch, grpc_receiver_tls, http_receiver_tls};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use spanflow_export::{
    AnyExporter, Compression, ExportError, Exporter, ExporterConfig, OtlpGrpcExporter,
    OtlpHttpExporter, Protocol,
};

/// A CA and two server identities it signed: one for this host, one for another name; and a
/// client identity it signed (mutual TLS).
struct Pki {
    ca_pem: String,
    localhost: TlsIdentity,
    elsewhere: TlsIdentity,
    client: TlsIdentity,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "spanflow throwaway test ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let server = |names: &[&str]| {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).unwrap();
        TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            client_ca_pem: None,
        }
    };
    let client = {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "spanflow test client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca).unwrap();
        TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            client_ca_pem: None,
        }
    };
    Pki {
        ca_pem: ca.pem(),
        localhost: server(&["localhost", "127.0.0.1"]),
        elsewhere: server(&["collector.elsewhere.test"]),
        client,
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Grpc,
    Http,
}

const KINDS: [Kind; 2] = [Kind::Grpc, Kind::Http];
const TIMEOUT: Duration = Duration::from_secs(3);

async fn receiver(kind: Kind, identity: &TlsIdentity) -> Receiver {
    match kind {
        Kind::Grpc => grpc_receiver_tls(identity).await,
        Kind::Http => http_receiver_tls(identity).await,
    }
}

/// An exporter of `kind` for `rx`, trusting `ca` (PEM) if given, else the system roots only.
fn exporter(kind: Kind, rx: &Receiver, ca: Option<&str>) -> AnyExporter {
    match kind {
        Kind::Grpc => {
            let mut b = OtlpGrpcExporter::builder()
                .endpoint(rx.grpc_url())
                .timeout(TIMEOUT);
            if let Some(ca) = ca {
                b = b.ca_certificate_pem(ca);
            }
            AnyExporter::Grpc(Box::new(b.build().unwrap()))
        }
        Kind::Http => {
            let mut b = OtlpHttpExporter::builder()
                .endpoint(rx.http_url())
                .timeout(TIMEOUT);
            if let Some(ca) = ca {
                b = b.ca_certificate_pem(ca);
            }
            AnyExporter::Http(Box::new(b.build().unwrap()))
        }
    }
}

/// Export one batch and check that the receiver decoded exactly what was sent.
async fn export_intact(e: &AnyExporter, rx: &Receiver, first: u64, n: usize) {
    let b = batch(first, n);
    let sent = ExportTraceServiceRequest::decode(b.body.clone()).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), e.export(b))
        .await
        .expect("export hung")
        .unwrap_or_else(|err| panic!("{}: {err}", e.name()));
    assert_eq!((out.accepted, out.rejected), (n as u64, 0), "{}", e.name());
    assert_eq!(
        rx.seen.last_request.lock().as_ref(),
        Some(&sent),
        "{}",
        e.name()
    );
}

/// Export to a server the client must not trust: the attempt ends well within the timeout
/// with a connection-level error whose text names the certificate problem.
async fn export_refused(e: &AnyExporter, rx: &Receiver, why: &str) {
    let requests = || rx.seen.requests.load(std::sync::atomic::Ordering::SeqCst);
    let before = requests();
    let started = Instant::now();
    let err = tokio::time::timeout(TIMEOUT * 3, e.export(batch(0, 3)))
        .await
        .expect("a refused handshake must not hang")
        .expect_err("an unverifiable server must be refused");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            ExportError::Transport(_)
                | ExportError::Grpc {
                    code: tonic::Code::Unavailable,
                    ..
                }
        ),
        "{}: not a connection-level error: {text}",
        e.name()
    );
    // Transport-level failures stay retryable, as the OTLP spec says; the fan-out's
    // max_elapsed bounds the retries of a server that keeps presenting a bad certificate.
    assert!(err.is_retryable(), "{text}");
    assert!(
        text.contains("certificate") && text.contains(why),
        "{}: the error should say why: {text}",
        e.name()
    );
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    assert_eq!(
        requests(),
        before,
        "no request may reach an unverified server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_spans_arrive_intact() {
    let pki = pki();
    for kind in KINDS {
        let rx = receiver(kind, &pki.localhost).await;
        let e = exporter(kind, &rx, Some(&pki.ca_pem));
        // Two exports: the second reuses the TLS connection.
        export_intact(&e, &rx, 0, 25).await;
        export_intact(&e, &rx, 25, 7).await;
        assert_eq!(rx.seen.assert_all_arrived(32), 0, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_from_configuration_is_applied() {
    let pki = pki();
    let dir = scratch_dir("ca-file");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    for (kind, protocol) in [
        (Kind::Grpc, Protocol::Grpc),
        (Kind::Http, Protocol::HttpProtobuf),
        (Kind::Http, Protocol::HttpJson),
    ] {
        let rx = receiver(kind, &pki.localhost).await;
        let endpoint = match kind {
            Kind::Grpc => rx.grpc_url(),
            Kind::Http => rx.http_url(),
        };
        let config = ExporterConfig {
            protocol,
            endpoint: Some(endpoint),
            compression: Compression::Gzip,
            ca_file: Some(ca_file.clone()),
            timeout: TIMEOUT,
            ..ExporterConfig::default()
        };
        let e = config.build().unwrap();
        export_intact(&e, &rx, 0, 10).await;
        // The same configuration without the CA file does not trust the receiver.
        let e = ExporterConfig {
            ca_file: None,
            ..config
        }
        .build()
        .unwrap();
        export_refused(&e, &rx, "UnknownIssuer").await;
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_the_server_is_refused_quickly() {
    let pki = pki();
    for kind in KINDS {
        let rx = receiver(kind, &pki.localhost).await;
        let e = exporter(kind, &rx, None);
        export_refused(&e, &rx, "UnknownIssuer").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused() {
    let pki = pki();
    for kind in KINDS {
        // Signed by the trusted CA, but for collector.elsewhere.test, not 127.0.0.1.
        let rx = receiver(kind, &pki.elsewhere).await;
        let e = exporter(kind, &rx, Some(&pki.ca_pem));
        export_refused(&e, &rx, "not valid for name").await;
    }
}

/// Mutual TLS from the environment: `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
/// `OTEL_EXPORTER_OTLP_CLIENT_KEY` reach both exporters, and a receiver that demands a client
/// certificate takes the spans; without them it refuses the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_the_environment_passes_mutual_tls() {
    let pki = pki();
    let dir = scratch_dir("mtls");
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let ca = write("ca.pem", &pki.ca_pem);
    let cert = write("client.pem", &pki.client.cert_pem);
    let key = write("client.key", &pki.client.key_pem);
    let demanding = TlsIdentity {
        client_ca_pem: Some(pki.ca_pem.clone()),
        ..pki.localhost.clone()
    };
    for (kind, protocol) in [(Kind::Grpc, "grpc"), (Kind::Http, "http/protobuf")] {
        let rx = receiver(kind, &demanding).await;
        let endpoint = match kind {
            Kind::Grpc => rx.grpc_url(),
            Kind::Http => rx.http_url(),
        };
        let vars = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint),
            (
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                TIMEOUT.as_millis().to_string(),
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.clone()),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.clone()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.clone()),
        ];
        let with_identity = |n: usize| {
            let vars = vars[..n].to_vec();
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            }
        };
        let e = ExporterConfig::from_env_with(with_identity(vars.len()))
            .unwrap()
            .build()
            .unwrap();
        export_intact(&e, &rx, 0, 10).await;
        // Without the client identity the server ends the handshake: nothing arrives.
        let e = ExporterConfig::from_env_with(with_identity(4))
            .unwrap()
            .build()
            .unwrap();
        let err = tokio::time::timeout(TIMEOUT * 3, e.export(batch(100, 3)))
            .await
            .expect("a refused handshake must not hang")
            .expect_err("a server demanding a client certificate must refuse");
        assert!(err.is_retryable(), "{kind:?}: {err}");
        let requests = rx.seen.requests.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            requests, 1,
            "{kind:?}: only the export with the identity arrived"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_client_identity_needs_https_and_a_real_key() {
    let pki = pki();
    let grpc = |endpoint: &str, key: &str| {
        OtlpGrpcExporter::builder()
            .endpoint(endpoint)
            .client_identity_pem(pki.client.cert_pem.clone(), key.to_string())
            .build()
            .map(drop)
    };
    let http = |endpoint: &str, key: &str| {
        OtlpHttpExporter::builder()
            .endpoint(endpoint)
            .client_identity_pem(pki.client.cert_pem.clone(), key.to_string())
            .build()
            .map(drop)
    };
    let key = pki.client.key_pem.as_str();
    assert!(grpc("https://127.0.0.1:4317", key).is_ok());
    assert!(http("https://127.0.0.1:4318/v1/traces", key).is_ok());
    assert!(grpc("http://127.0.0.1:4317", key).is_err());
    assert!(http("http://127.0.0.1:4318/v1/traces", key).is_err());
    assert!(grpc("https://127.0.0.1:4317", "not a key").is_err());
    assert!(http("https://127.0.0.1:4318/v1/traces", "not a key").is_err());
}

/// Set in the child process [`a_given_ca_works_without_any_system_roots`] starts.
const CHILD_ENV: &str = "SPANFLOW_EXPORT_TLS_TEST_CHILD";

/// Regression: tonic refuses TLS with system roots when the system has none, which made the
/// gRPC exporter's CA option unusable in a container without a CA bundle (build error
/// "native certs not found"). rustls-native-certs reads only `SSL_CERT_FILE`/`SSL_CERT_DIR`
/// when they are set, so pointing them at empty places simulates such a system; that
/// happens in a child process (this same test binary) to leave this process's environment
/// alone.
#[test]
fn a_given_ca_works_without_any_system_roots() {
    if std::env::var_os(CHILD_ENV).is_some() {
        without_system_roots();
        return;
    }
    let dir = scratch_dir("no-roots");
    let empty_file = dir.join("empty.pem");
    std::fs::write(&empty_file, "").unwrap();
    let empty_dir = dir.join("certs");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let name = "a_given_ca_works_without_any_system_roots";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, "1")
        .env("SSL_CERT_FILE", &empty_file)
        .env("SSL_CERT_DIR", &empty_dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(dir).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
}

fn without_system_roots() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = pki();
        for kind in KINDS {
            let rx = receiver(kind, &pki.localhost).await;
            let e = exporter(kind, &rx, Some(&pki.ca_pem));
            export_intact(&e, &rx, 0, 5).await;
        }
        // Without a CA there is nothing to verify a server with: gRPC says so when built.
        let no_ca = OtlpGrpcExporter::builder()
            .endpoint("https://127.0.0.1:4317")
            .build();
        assert!(
            matches!(no_ca, Err(spanflow_export::ExportBuildError::Tls(_))),
            "{no_ca:?}"
        );
    });
}

/// A fresh directory under the system temp dir for this process and `what`.
fn scratch_dir(what: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("spanflow-export-tls-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
