//! The relay under test: the real `spanflow-relay` binary in its own process, on free ports,
//! with a config file written per scenario; SIGTERM, bounded waits, RSS sampling, `/metrics`
//! scraping and the final stats line.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::proc::{ChildGuard, free_port, wait_until};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_spanflow-relay");

/// The prefix of the line the relay prints on stdout when it stops.
const FINAL_PREFIX: &str = "spanflow-relay stopped:";

/// The relay's built-in shutdown deadline when none is configured (today's hard-coded 30 s).
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A relay to start: the scenario's TOML (pipeline tables), its shutdown deadline and extra
/// flags. Endpoints and the data directory are added by the harness.
#[derive(Debug, Clone, Default)]
pub(crate) struct RelaySpec {
    pub(crate) toml: String,
    pub(crate) shutdown_timeout: Option<Duration>,
    pub(crate) args: Vec<String>,
}

/// `[[pipeline.exporters]]` for an OTLP/gRPC backend named `name`, with `backend` (a TOML
/// inline table, e.g. [`FAST_RETRY`]) when given.
pub(crate) fn grpc_exporter(name: &str, endpoint: &str, backend: Option<&str>) -> String {
    let backend = backend.map_or(String::new(), |b| format!("backend = {b}\n"));
    format!(
        "[[pipeline.exporters]]\nname = \"{name}\"\nsink = {{ type = \"otlp\", protocol = \"grpc\", endpoint = \"{endpoint}\" }}\n{backend}\n"
    )
}

/// Retry fast enough for a test: a 5 s outage is bridged within about a second of its end.
pub(crate) const FAST_RETRY: &str = r#"{ timeout = "2s", retry = { initial_backoff = "100ms", max_backoff = "1s", max_elapsed = "60s" } }"#;

/// For throttled backends: attempts may wait their turn for seconds, so they get 30 s before
/// they count as timed out; retry as in [`FAST_RETRY`].
pub(crate) const PATIENT_RETRY: &str = r#"{ timeout = "30s", retry = { initial_backoff = "100ms", max_backoff = "1s", max_elapsed = "60s" } }"#;

/// Whether the binary knows the top-level `shutdown_timeout` key (asked once with
/// `check-config`). Without it the harness leaves the key out, the relay keeps its built-in
/// deadline, and scenarios that time the shutdown fail on the time, not on the config.
pub(crate) fn knows_shutdown_timeout() -> bool {
    static KNOWN: OnceLock<bool> = OnceLock::new();
    *KNOWN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("spanflow-faults-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("probe dir");
        let out = check_config(&dir, "shutdown_timeout = \"5s\"\n", &[], &[]);
        let _ = std::fs::remove_dir_all(&dir);
        if !out.status.success() {
            println!(
                "faults: this relay does not know `shutdown_timeout` ({}); scenarios run with its built-in {DEFAULT_SHUTDOWN_TIMEOUT:?}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        out.status.success()
    })
}

/// A duration as the relay's config writes it: `"3s"` or `"1500ms"`.
pub(crate) fn human(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// `spanflow-relay check-config --config <dir>/check.toml <args>` with `toml` in the file and
/// a clean environment plus `env`.
pub(crate) fn check_config(dir: &Path, toml: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let file = dir.join("check.toml");
    std::fs::write(&file, toml).expect("write config");
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config")
        .arg("--config")
        .arg(&file)
        .args(args);
    clean_env(&mut cmd);
    cmd.envs(env.iter().copied());
    let (stdout, stderr) = (dir.join("check.stdout"), dir.join("check.stderr"));
    let _ = std::fs::remove_file(&stdout);
    let _ = std::fs::remove_file(&stderr);
    let mut child = ChildGuard::spawn("check-config", cmd, &stdout, &stderr);
    let status = child
        .wait_for(Duration::from_secs(60))
        .expect("check-config finished within 60 s");
    Output {
        status,
        stdout: std::fs::read(&stdout).unwrap_or_default(),
        stderr: std::fs::read(&stderr).unwrap_or_default(),
    }
}

/// Removes the variables that would change the relay's configuration behind the test's back.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("SPANFLOW_") || key.starts_with("OTEL_") || key == "RUST_LOG" {
            cmd.env_remove(&*key);
        }
    }
}

/// A running relay process.
#[derive(Debug)]
pub(crate) struct RelayProcess {
    child: ChildGuard,
    grpc: SocketAddr,
    metrics: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
    rss: RssSampler,
    /// The deadline the relay was given (or its built-in one).
    pub(crate) shutdown_timeout: Duration,
    term_sent: Option<Instant>,
}

impl RelayProcess {
    /// Starts the relay in `dir` and waits (at most 60 s) until `/healthz` answers 200.
    pub(crate) fn start(dir: &Path, spec: &RelaySpec) -> Self {
        let mut toml = String::new();
        let mut shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
        if let Some(t) = spec.shutdown_timeout
            && knows_shutdown_timeout()
        {
            toml.push_str(&format!("shutdown_timeout = \"{}\"\n", human(t)));
            shutdown_timeout = t;
        }
        toml.push_str(&spec.toml);
        let config = dir.join("relay.toml");
        std::fs::write(&config, &toml).expect("write relay config");
        let (stdout, stderr) = (dir.join("relay.stdout"), dir.join("relay.stderr"));
        for attempt in 1..=5 {
            let (grpc, http, metrics) = (free_port(), free_port(), free_port());
            let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
            let mut cmd = Command::new(BIN);
            cmd.arg("serve")
                .arg("--config")
                .arg(&config)
                .args(["--grpc-endpoint", &addr(grpc).to_string()])
                .args(["--http-endpoint", &addr(http).to_string()])
                .args(["--metrics-endpoint", &addr(metrics).to_string()])
                .args(["--log-level", "info"])
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(&spec.args);
            clean_env(&mut cmd);
            let mut child = ChildGuard::spawn("relay", cmd, &stdout, &stderr);
            let up = wait_until(
                "the relay to answer /healthz",
                Duration::from_secs(60),
                || {
                    if child.try_wait().is_some() {
                        return Some(false);
                    }
                    matches!(http_get(addr(metrics), "/healthz"), Ok((200, _))).then_some(true)
                },
            );
            if up {
                let rss = RssSampler::start(child.pid());
                return Self {
                    child,
                    grpc: addr(grpc),
                    metrics: addr(metrics),
                    stdout,
                    stderr,
                    rss,
                    shutdown_timeout,
                    term_sent: None,
                };
            }
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            assert!(
                log.contains("cannot listen") && attempt < 5,
                "the relay exited at start (config {}):\n{log}",
                config.display()
            );
        }
        unreachable!("the loop returns or panics")
    }

    /// `http://127.0.0.1:<grpc port>`.
    pub(crate) fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `GET /metrics`, parsed.
    pub(crate) fn scrape(&self) -> Metrics {
        match http_get(self.metrics, "/metrics") {
            Ok((200, body)) => Metrics::parse(&body),
            other => panic!("GET /metrics: {other:?}"),
        }
    }

    /// The highest RSS seen so far (sampled every 100 ms, and the kernel's high-water mark).
    pub(crate) fn peak_rss(&self) -> u64 {
        self.rss.peak()
    }

    /// Sends SIGTERM.
    /// SIGKILL: the relay gets no chance to flush or commit anything.
    pub(crate) fn kill9(&mut self) {
        self.child.kill9();
    }

    pub(crate) fn terminate(&mut self) {
        self.rss.sample_now();
        self.term_sent = Some(Instant::now());
        self.child.signal(libc::SIGTERM);
    }

    /// Waits for the exit after [`RelayProcess::terminate`] (at most the shutdown deadline plus
    /// `slack`) and reads the final line.
    pub(crate) fn wait_stopped(&mut self, slack: Duration) -> Stopped {
        let sent = self.term_sent.expect("terminate() first");
        let limit = self.shutdown_timeout + slack;
        let Some(status) = self.child.wait_for(limit.saturating_sub(sent.elapsed())) else {
            panic!(
                "the relay did not exit within {limit:?} of SIGTERM; stderr tail:\n{}",
                self.stderr_tail()
            );
        };
        let after_term = sent.elapsed();
        self.rss.stop();
        let stdout = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let line = FinalLine::parse(&stdout).unwrap_or_else(|e| {
            panic!(
                "{e}; exit {status:?}; stdout:\n{stdout}\nstderr tail:\n{}",
                self.stderr_tail()
            )
        });
        Stopped {
            status,
            after_term,
            line,
            peak_rss: self.rss.peak(),
        }
    }

    /// The last 40 lines the relay logged.
    pub(crate) fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// How the relay stopped.
#[derive(Debug)]
pub(crate) struct Stopped {
    pub(crate) status: ExitStatus,
    /// From SIGTERM to exit.
    pub(crate) after_term: Duration,
    pub(crate) line: FinalLine,
    pub(crate) peak_rss: u64,
}

/// The final stats line: `spanflow-relay stopped: key=value ...`.
#[derive(Debug, Clone)]
pub(crate) struct FinalLine {
    pub(crate) raw: String,
    values: BTreeMap<String, String>,
}

impl FinalLine {
    /// Finds exactly one final line in `stdout`.
    pub(crate) fn parse(stdout: &str) -> Result<Self, String> {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with(FINAL_PREFIX))
            .collect();
        let [line] = lines[..] else {
            return Err(format!(
                "expected one `{FINAL_PREFIX}` line, found {}",
                lines.len()
            ));
        };
        let mut values = BTreeMap::new();
        for token in line[FINAL_PREFIX.len()..].split_whitespace() {
            let (k, v) = token
                .split_once('=')
                .ok_or_else(|| format!("token `{token}` is not key=value in `{line}`"))?;
            values.insert(k.to_owned(), v.to_owned());
        }
        Ok(Self {
            raw: line.to_owned(),
            values,
        })
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// A counter; absent keys count 0 (today's line has no `unconfirmed` or `queued`).
    pub(crate) fn count(&self, key: &str) -> u64 {
        self.values.get(key).map_or(0, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v} is not a count"))
        })
    }

    pub(crate) fn flushed(&self) -> Option<bool> {
        self.values.get("flushed").and_then(|v| v.parse().ok())
    }

    /// `dropped.<reason>=N` tokens.
    pub(crate) fn drop_reasons(&self) -> BTreeMap<String, u64> {
        self.values
            .keys()
            .filter_map(|k| k.strip_prefix("dropped."))
            .map(|r| (r.to_owned(), self.count(&format!("dropped.{r}"))))
            .collect()
    }
}

/// A Prometheus text page.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    samples: Vec<(String, String, f64)>,
    /// Families declared with `# TYPE`, with or without samples.
    families: Vec<String>,
}

impl Metrics {
    fn parse(text: &str) -> Self {
        let families = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                Some((name.to_owned(), labels.to_owned(), value))
            })
            .collect();
        Self { samples, families }
    }

    /// The sum over every series of `name` (0 for a declared family without series), `None`
    /// when the family is absent.
    pub(crate) fn total(&self, name: &str) -> Option<f64> {
        let mut found = self.samples.iter().filter(|(n, _, _)| n == name).peekable();
        if found.peek().is_none() && !self.families.iter().any(|f| f == name) {
            return None;
        }
        Some(found.map(|(_, _, v)| v).sum())
    }
}

/// A tiny HTTP/1.0 GET (no chunked answers), bounded by timeouts.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

/// Samples a process's RSS every 100 ms on a thread, keeping the highest value and the
/// kernel's own high-water mark (`VmHWM`), whichever is larger.
#[derive(Debug)]
struct RssSampler {
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            // Relaxed: a flag and a maximum read only for reporting; no other memory depends
            // on them.
            while !s.load(Ordering::Relaxed) {
                match rss_bytes(pid) {
                    Some(v) => {
                        p.fetch_max(v, Ordering::Relaxed);
                    }
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { pid, peak, stop }
    }

    fn sample_now(&self) {
        if let Some(v) = rss_bytes(self.pid) {
            self.peak.fetch_max(v, Ordering::Relaxed);
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// max(VmRSS, VmHWM) of `pid` in bytes; `None` once the process is gone.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let rss = field("VmRSS:")?;
    Some(rss.max(field("VmHWM:").unwrap_or(0)))
}
