//! `demo`: the relay with its embedded default configuration, in-process, plus a load generator
//! simulating three services (service-a, service-b, service-c) sending realistic traces over
//! gRPC and HTTP. Ends with a summary; it succeeds only if every span sent was exported, i.e.
//! found in the files the default exporter wrote.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{DEFAULT_DATA_FILE, Overrides, RelayConfig};
use crate::pipeline::PipelineSink;
use crate::relay::{FinalStats, RunningRelay};
use crate::sink::Sink;
use crate::tools::client::{OtlpClient, Transport};
use crate::tools::load::{LoadReport, PayloadSource, Progress, RetryPolicy, Worker, run_workers};
use crate::tools::traffic::{Payload, demo_traces};

/// Options of `demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long the services send.
    pub duration: Duration,
    /// Where the run's directory is created; `None` uses a temporary directory removed at the end.
    pub data_dir: Option<PathBuf>,
    /// Target spans per second over all services (0: as fast as the relay answers).
    pub rate: u64,
    /// Draw live progress.
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(8),
            data_dir: None,
            rate: 20_000,
            progress: true,
        }
    }
}

/// What the demo saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The load generator's totals.
    pub load: LoadReport,
    /// The relay's totals after its flush.
    pub relay: FinalStats,
    /// Spans found in the exported files.
    pub spans_in_files: u64,
    /// Where the files were written.
    pub data_dir: PathBuf,
    /// Whether `data_dir` is kept.
    pub kept: bool,
}

impl DemoReport {
    /// True when every span sent was accepted, exported and found in the files, none dropped.
    pub fn success(&self) -> bool {
        let sent = self.load.spans_sent;
        sent > 0
            && self.load.spans_accepted == sent
            && self.load.spans_failed == 0
            && self.load.spans_rejected == 0
            && self.relay.sink.exported == sent
            && self.relay.sink.failed == 0
            && self.relay.sink.dropped.total() == 0
            && self.spans_in_files == sent
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let row = |out: &mut String, k: &str, v: String| {
            let _ = writeln!(out, "  {k:<34}{v:>16}");
        };
        let _ = writeln!(out, "spanflow-relay demo summary");
        row(
            &mut out,
            "duration",
            format!("{:.1} s", self.load.elapsed.as_secs_f64()),
        );
        row(&mut out, "requests", self.load.requests.to_string());
        row(&mut out, "spans sent", self.load.spans_sent.to_string());
        row(
            &mut out,
            "spans accepted by the relay",
            self.load.spans_accepted.to_string(),
        );
        row(
            &mut out,
            "retries after backpressure",
            self.load.retries.to_string(),
        );
        row(
            &mut out,
            "spans exported by the pipeline",
            self.relay.sink.exported.to_string(),
        );
        row(
            &mut out,
            "spans found in files",
            self.spans_in_files.to_string(),
        );
        row(
            &mut out,
            "spans dropped",
            self.relay.sink.dropped.total().to_string(),
        );
        row(
            &mut out,
            "spans failed",
            (self.relay.sink.failed + self.load.spans_failed).to_string(),
        );
        row(
            &mut out,
            "throughput",
            format!("{:.0} spans/s", self.load.spans_per_second()),
        );
        if !self.load.latency_us.is_empty() {
            let h = &self.load.latency_us;
            row(
                &mut out,
                "request latency p50 / p99",
                format!(
                    "{:.1} / {:.1} ms",
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0
                ),
            );
        }
        row(
            &mut out,
            "data",
            if self.kept {
                self.data_dir.display().to_string()
            } else {
                "(temporary, removed)".to_owned()
            },
        );
        for e in &self.load.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        let verdict = if self.success() {
            "OK: every span sent was exported exactly once"
        } else {
            "FAILED: spans were lost or duplicated"
        };
        let _ = writeln!(out, "{verdict}");
        out
    }
}

/// Counts the spans in the OTLP/JSON-lines files (`spans.jsonl`, `spans.jsonl.1`, …) in `dir`.
pub fn count_spans_in_files(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_data = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DEFAULT_DATA_FILE));
        if !is_data {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            total += spans_in(&value);
        }
    }
    Ok(total)
}

fn spans_in(request: &serde_json::Value) -> u64 {
    let list = |v: &serde_json::Value, key: &str| -> Vec<serde_json::Value> {
        v.get(key)
            .and_then(|x| x.as_array())
            .cloned()
            .unwrap_or_default()
    };
    list(request, "resourceSpans")
        .iter()
        .flat_map(|rs| list(rs, "scopeSpans"))
        .map(|ss| list(&ss, "spans").len() as u64)
        .sum()
}

fn run_dir(base: Option<&Path>) -> PathBuf {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = format!("spanflow-demo-{}-{millis}", std::process::id());
    match base {
        Some(b) => b.join(name),
        None => std::env::temp_dir().join(name),
    }
}

/// Runs the demo: relay in-process on free local ports, three simulated services for
/// `options.duration`, then a flush and the count of what reached the files.
pub async fn run(options: &DemoOptions) -> anyhow::Result<DemoReport> {
    let dir = run_dir(options.data_dir.as_deref());
    std::fs::create_dir_all(&dir)?;
    let local = "127.0.0.1:0".parse()?;
    let overrides = Overrides {
        grpc_endpoint: Some(local),
        http_endpoint: Some(local),
        metrics_endpoint: Some(local),
        data_dir: Some(dir.clone()),
        ..Overrides::default()
    };
    // The embedded default as `serve` runs it, minus the environment, on free ports.
    let cfg = RelayConfig::load(None, |_| None, &overrides)?;
    let sink = Arc::new(PipelineSink::build(&cfg.pipeline)?);
    let relay = RunningRelay::start(&cfg, sink.clone()).await?;
    let addrs = relay.addresses();
    let grpc = format!(
        "http://{}",
        addrs
            .grpc
            .ok_or_else(|| anyhow::anyhow!("grpc receiver disabled"))?
    );
    let http = format!(
        "http://{}",
        addrs
            .http
            .ok_or_else(|| anyhow::anyhow!("http receiver disabled"))?
    );
    tracing::info!(%grpc, %http, data = %dir.display(), "demo relay running");

    // (service index, transport, gzip): every service and every transport is exercised.
    let plan = [
        (0, Transport::Grpc, false),
        (0, Transport::Grpc, true),
        (1, Transport::Grpc, false),
        (1, Transport::HttpJson, false),
        (2, Transport::HttpProto, false),
        (2, Transport::HttpProto, true),
    ];
    const TRACES_PER_REQUEST: usize = 20;
    // Spans per request: service-a 2, service-b 3, service-c 2 per trace.
    let spans_per_trace = [2usize, 3, 2];
    let per_worker_rate = options.rate as f64 / plan.len() as f64;
    let mut workers = Vec::new();
    for (service, transport, gzip) in plan {
        let endpoint = if transport == Transport::Grpc {
            &grpc
        } else {
            &http
        };
        let json = transport == Transport::HttpJson;
        let source: PayloadSource = Arc::new(move |_| {
            let mut rng = rand::rng();
            let [a, b, c] = demo_traces(&mut rng, TRACES_PER_REQUEST);
            let request = [a, b, c].into_iter().nth(service).unwrap_or_default();
            if json {
                Payload::new(&request)
            } else {
                Payload::protobuf_only(&request)
            }
        });
        let spans = (spans_per_trace[service] * TRACES_PER_REQUEST) as f64;
        let period = if options.rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(spans / per_worker_rate)
        };
        workers.push(Worker {
            client: OtlpClient::new(transport, endpoint, gzip)?,
            source,
            period,
            // Backpressure is answered by waiting, never by dropping: the demo proves no loss.
            retry: RetryPolicy {
                max_attempts: 10_000,
                max_backoff: Duration::from_millis(100),
            },
            timeout: Duration::from_secs(30),
        });
    }

    let progress = Arc::new(Progress::default());
    let ticker = spawn_progress(options, progress.clone(), sink.clone());
    let load = run_workers(workers, options.duration, progress.clone()).await;
    ticker.finish(&progress, sink.as_ref());

    let relay_stats = relay.shutdown(Duration::from_secs(60)).await;
    let spans_in_files = count_spans_in_files(&dir)?;
    let kept = options.data_dir.is_some();
    let report = DemoReport {
        load,
        relay: relay_stats,
        spans_in_files,
        data_dir: dir.clone(),
        kept,
    };
    if !kept {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

struct Ticker {
    bar: Option<ProgressBar>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    fn finish(self, progress: &Progress, sink: &dyn Sink) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_with_message(line(progress, sink, None));
        }
    }
}

fn line(progress: &Progress, sink: &dyn Sink, rate: Option<f64>) -> String {
    let stats = sink.stats();
    let mut s = format!(
        "sent {:>9}  accepted {:>9}  exported {:>9}  dropped {:>4}",
        Progress::get(&progress.spans_sent),
        Progress::get(&progress.spans_accepted),
        stats.exported,
        stats.dropped.total(),
    );
    if let Some(r) = rate {
        let _ = write!(s, "  {r:>8.0} spans/s");
    }
    s
}

fn spawn_progress(
    options: &DemoOptions,
    progress: Arc<Progress>,
    sink: Arc<PipelineSink>,
) -> Ticker {
    let tty = std::io::stderr().is_terminal();
    let bar = (options.progress && tty).then(|| {
        let bar = ProgressBar::new(options.duration.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:24}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let plain = options.progress && !tty;
    let task_bar = bar.clone();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            n += 1;
            let accepted = Progress::get(&progress.spans_accepted);
            let rate = (accepted - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
            last = (Instant::now(), accepted);
            let msg = line(&progress, sink.as_ref(), Some(rate));
            if let Some(bar) = &task_bar {
                bar.set_position(started.elapsed().as_millis() as u64);
                bar.set_message(msg);
            } else if plain && n.is_multiple_of(4) {
                eprintln!("[{:>4.1}s] {msg}", started.elapsed().as_secs_f64());
            }
        }
    });
    Ticker { bar, task }
}
