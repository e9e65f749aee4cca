//! The binary: `check-config` prints the effective configuration or names the bad key;
//! `serve` stops on SIGTERM after flushing, exits 0 and prints a final stats line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_spanflow-relay");

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("spanflow-relay-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_config_prints_the_effective_config() {
    let out = Command::new(BIN)
        .args(["check-config", "--grpc-endpoint", "127.0.0.1:5317"])
        .env_remove("SPANFLOW_CONFIG")
        .env("SPANFLOW_HTTP_ENDPOINT", "127.0.0.1:5318")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("endpoint = \"127.0.0.1:5317\""), "{text}");
    assert!(text.contains("endpoint = \"127.0.0.1:5318\""), "{text}");
    assert!(
        text.contains("[pipeline.memory]") || text.contains("budget_bytes"),
        "{text}"
    );
    assert!(text.contains("type = \"file\""), "{text}");
}

#[test]
fn check_config_names_a_bad_key_and_a_bad_value() {
    let dir = temp_dir("bad");
    let file = dir.join("relay.toml");
    std::fs::write(&file, "[receivers.grpc]\nmax_mesage_size = \"4MiB\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_mesage_size"), "{err}");

    std::fs::write(&file, "[pipeline.batch]\nmax_spans = \"lots\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_spans"), "{err}");

    let out = Command::new(BIN)
        .args(["check-config"])
        .env("SPANFLOW_MEMORY_BUDGET", "plenty")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SPANFLOW_MEMORY_BUDGET"));
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn serve_flushes_and_exits_zero_on_sigterm() {
    use spanflow_relay::tools::client::{Answer, OtlpClient, Transport};
    use spanflow_relay::tools::traffic::{Payload, demo_traces};

    let dir = temp_dir("serve");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--grpc-endpoint",
            "127.0.0.1:0",
            "--http-endpoint",
            "127.0.0.1:0",
            "--metrics-endpoint",
            "127.0.0.1:0",
            "--log-level",
            "info",
            "--data-dir",
        ])
        .arg(&dir)
        .env_remove("SPANFLOW_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("otlp/grpc receiver listening")
                && let Some(addr) = line.split("addr=").nth(1)
            {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("relay did not start");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand::rng();
    let payload = Payload::new(&demo_traces(&mut rng, 10)[1]);
    let answer = rt.block_on(async {
        let client = OtlpClient::new(Transport::Grpc, &format!("http://{addr}"), false).unwrap();
        client.send(&payload, Duration::from_secs(20)).await
    });
    assert_eq!(answer, Answer::Accepted { rejected: 0 });

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(stdout.contains("spanflow-relay stopped:"), "{stdout}");
    let in_files = spanflow_relay::tools::demo::count_spans_in_files(&dir).unwrap();
    assert_eq!(in_files, payload.spans as u64);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_config_redacts_exporter_headers() {
    let out = Command::new(BIN)
        .args(["check-config"])
        .env_remove("SPANFLOW_CONFIG")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=s3cret-value,authorization=Bearer tok3n",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains("s3cret-value") && !text.contains("tok3n"),
        "{text}"
    );
    assert!(
        text.contains("api-key") && text.contains("<redacted>"),
        "{text}"
    );
}

#[cfg(unix)]
#[test]
fn listening_beyond_loopback_without_tls_or_auth_warns() {
    let dir = temp_dir("exposed");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--grpc-endpoint",
            "0.0.0.0:0",
            "--http-endpoint",
            "127.0.0.1:0",
            "--metrics-endpoint",
            "127.0.0.1:0",
            "--log-level",
            "info",
            "--data-dir",
        ])
        .arg(&dir)
        .env_remove("SPANFLOW_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut warning = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("relay did not start");
        if line.contains("beyond loopback") {
            warning = Some(line.clone());
        }
        if line.contains("self-metrics listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let warning = warning.expect("no warning about 0.0.0.0");
    assert!(
        warning.contains("WARN") && warning.contains("otlp/grpc"),
        "{warning}"
    );
    assert!(
        warning.contains("without TLS and without authentication"),
        "{warning}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
