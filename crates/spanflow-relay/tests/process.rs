//! The real binary under attack and at shutdown: SIGTERM with idle connections of every kind
//! exits at once having flushed; a flood of HTTP/2 streams keeps the relay's memory bounded;
//! with a small open-file limit the receivers' connections leave descriptors for `/healthz`.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::*;
use spanflow_relay::tools::client::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_spanflow-relay");

static SERIAL: Mutex<()> = Mutex::new(());

struct Relay {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    metrics: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    dir: std::path::PathBuf,
}

/// Starts `spanflow-relay serve` on free ports, through `sh -c "<shell_prefix> exec …"`.
fn spawn_relay(tag: &str, shell_prefix: &str) -> Relay {
    let dir = temp_dir(tag);
    let script = format!(
        "{shell_prefix} exec \"$0\" serve --grpc-endpoint 127.0.0.1:0 --http-endpoint 127.0.0.1:0 --metrics-endpoint 127.0.0.1:0 --log-level info --data-dir \"$1\""
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(BIN)
        .arg(&dir)
        .env_remove("SPANFLOW_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let keep = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let addr = |marker: &str| {
                line.split(marker)
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(|a| a.trim_end_matches("/metrics").to_owned())
            };
            for (what, marker) in [
                ("grpc", "otlp/grpc receiver listening tls=false addr="),
                ("http", "otlp/http receiver listening tls=false addr="),
                ("metrics", "self-metrics listening url=http://"),
            ] {
                if let Some(a) = addr(marker) {
                    let _ = tx.send((what, a));
                }
            }
            keep.lock().unwrap().push(line);
        }
    });
    let mut found = std::collections::HashMap::new();
    while found.len() < 3 {
        let (what, addr) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("relay did not start");
        found.insert(what, addr.parse::<SocketAddr>().unwrap());
    }
    Relay {
        child,
        grpc: found["grpc"],
        http: found["http"],
        metrics: found["metrics"],
        stderr: lines,
        dir,
    }
}

impl Relay {
    /// SIGTERM, then waits for the exit: how long it took and stdout.
    fn terminate(mut self) -> (Duration, String) {
        let started = Instant::now();
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "relay did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = started.elapsed();
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut stdout).unwrap();
        assert!(status.success(), "exit status {status:?}");
        std::fs::remove_dir_all(&self.dir).ok();
        (took, stdout)
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn sigterm_with_idle_connections_exits_at_once_having_flushed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = spawn_relay("sigterm-idle", "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (grpc, http, metrics) = (relay.grpc, relay.http, relay.metrics);
    let idle = rt.block_on(async move {
        served_within(Transport::Grpc, &format!("http://{grpc}"), DEADLINE).await;
        // An HTTP client whose keep-alive connection stays open after its request.
        let keep_alive = spanflow_relay::tools::client::OtlpClient::new(
            Transport::HttpProto,
            &format!("http://{http}"),
            false,
        )
        .unwrap();
        assert_eq!(
            keep_alive.send(&payload(), DEADLINE).await,
            spanflow_relay::tools::client::Answer::Accepted { rejected: 0 }
        );
        let idle = vec![
            raw(grpc, &[]).await,
            raw(grpc, &h2_start()).await,
            raw(grpc, &{
                let mut s = h2_start();
                s.extend(h2_frame(0x1, 0, 1, &[0x83]));
                s
            })
            .await,
            raw(http, &[]).await,
            raw(http, b"POST /v1/traces HTTP/1.1\r\nhost: re").await,
            raw(metrics, &[]).await,
        ];
        (idle, keep_alive)
    });
    std::thread::sleep(Duration::from_millis(200));
    let (took, stdout) = relay.terminate();
    println!(
        "SIGTERM with {} idle connections: exited in {took:?}",
        idle.0.len() + 1
    );
    assert!(stdout.contains("flushed=true"), "{stdout}");
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(field("requests="), Some(2), "{stdout}");
    assert_eq!(
        field("accepted="),
        Some(2 * payload().spans as u64),
        "{stdout}"
    );
    assert_eq!(field("exported="), field("accepted="), "{stdout}");
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    drop(idle);
}

/// 3 rounds of 32,768 headers-only HTTP/2 streams on one connection (hand-made frames, so the
/// client ignores the relay's stream limit). The relay refuses streams past
/// `max_concurrent_streams` and closes a connection that keeps opening them; its RSS stays
/// bounded and does not grow from round to round; good clients are served meanwhile.
#[test]
fn a_stream_flood_keeps_memory_bounded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = spawn_relay("stream-flood", "");
    let pid = relay.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let grpc = relay.grpc;
    let http = relay.http;
    rt.block_on(async {
        for _ in 0..20 {
            served_within(Transport::Grpc, &format!("http://{grpc}"), DEADLINE).await;
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let baseline = relay.rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let block = grpc_headers_block(EXPORT, "application/grpc", None);
    let mut after_round = Vec::new();
    for round in 0..3 {
        let (sent, good) = rt.block_on(async {
            let mut tcp = raw(grpc, &h2_start()).await;
            let (mut read, mut write) = tcp.split();
            let drain = async {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let flood = async {
                let mut sent = 0u32;
                let mut batch = Vec::with_capacity(1 << 20);
                for i in 0..32_768u32 {
                    batch.extend(h2_frame(0x1, 0x4, 2 * i + 1, &block));
                    if batch.len() > (64 << 10) {
                        if write.write_all(&batch).await.is_err() {
                            return sent;
                        }
                        batch.clear();
                    }
                    sent += 1;
                }
                let _ = write.write_all(&batch).await;
                sent
            };
            let good = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let g = served_within(
                    Transport::Grpc,
                    &format!("http://{grpc}"),
                    Duration::from_secs(1),
                )
                .await;
                let h = served_within(
                    Transport::HttpProto,
                    &format!("http://{http}"),
                    Duration::from_secs(1),
                )
                .await;
                (g, h)
            };
            let (sent, (), good) = tokio::time::timeout(DEADLINE, async {
                tokio::join!(
                    flood,
                    async {
                        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
                    },
                    good
                )
            })
            .await
            .expect("flood round timed out");
            (sent, good)
        });
        std::thread::sleep(Duration::from_millis(500));
        let rss = relay.rss_kib();
        println!(
            "round {round}: {sent} streams written, good clients served in {good:?}, RSS {rss} KiB (baseline {baseline} KiB)"
        );
        after_round.push(rss);
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "stream flood: RSS baseline {baseline} KiB, peak {peak} KiB, after rounds {after_round:?} KiB"
    );
    assert!(
        peak < baseline + 48 * 1024,
        "peak RSS {peak} KiB vs baseline {baseline} KiB"
    );
    assert!(
        after_round[2] < after_round[0] + 8 * 1024,
        "RSS grows from round to round: {after_round:?}"
    );
    let (_, stdout) = relay.terminate();
    assert!(stdout.contains("flushed=true"), "{stdout}");
}

/// With the open-file limit at 512 (soft and hard), the relay lowers its receivers' connection
/// limits so that the metrics server and the relay itself keep descriptors; 600 idle
/// connections to one receiver leave `/healthz` and good clients served.
#[test]
fn a_small_open_file_limit_leaves_room_for_healthz() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = spawn_relay("nofile", "ulimit -n 512 &&");
    let warned = relay
        .stderr
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("open-file limit"));
    assert!(warned, "no warning about the open-file limit");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (grpc, http, metrics) = (relay.grpc, relay.http, relay.metrics);
    let idle = rt.block_on(async move {
        let mut idle = Vec::new();
        for _ in 0..600 {
            idle.push(raw(grpc, &[]).await);
        }
        let started = Instant::now();
        let (status, _) = get(&format!("http://{metrics}/healthz")).await;
        let health = started.elapsed();
        assert_eq!(status, 200);
        assert!(health < Duration::from_secs(1), "/healthz took {health:?}");
        let g = served_within(Transport::Grpc, &format!("http://{grpc}"), Duration::from_secs(1)).await;
        let h = served_within(Transport::HttpProto, &format!("http://{http}"), Duration::from_secs(1)).await;
        println!("open-file limit 512, 600 idle connections: /healthz in {health:?}, grpc in {g:?}, http in {h:?}");
        let (_, page) = get(&format!("http://{metrics}/metrics")).await;
        let open: u64 = page
            .lines()
            .find(|l| l.starts_with("spanflow_relay_connections_open{listener=\"grpc\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap();
        assert!(open <= 160, "{open} grpc connections open");
        idle
    });
    let (_, stdout) = relay.terminate();
    assert!(stdout.contains("flushed=true"), "{stdout}");
    drop(idle);
}
