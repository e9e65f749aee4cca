//! `load`: a load generator against any OTLP endpoint, reporting throughput and latency
//! percentiles. Also the engine under `demo`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::tools::client::{Answer, ClientError, OtlpClient, Transport};
use crate::tools::traffic::{AttributeMix, Payload, load_request};

/// How refused requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included; 1 means never retry.
    pub max_attempts: u32,
    /// Longest wait between attempts (the server's hint is capped to it).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 50,
            max_backoff: Duration::from_millis(200),
        }
    }
}

/// Options of `load`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where to send: `http://host:port` (gRPC) or `http://host:port[/v1/traces]` (HTTP).
    pub endpoint: String,
    /// Which protocol.
    pub transport: Transport,
    /// Target spans per second over all workers; 0 sends as fast as answers come back.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Concurrent senders.
    pub concurrency: usize,
    /// Spans per request.
    pub spans_per_request: usize,
    /// Attributes per span.
    pub attributes: AttributeMix,
    /// Gzip request bodies.
    pub gzip: bool,
    /// Retries of refused requests.
    pub retry: RetryPolicy,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".to_owned(),
            transport: Transport::Grpc,
            rate: 0,
            duration: Duration::from_secs(10),
            concurrency: 4,
            spans_per_request: 100,
            attributes: AttributeMix {
                count: 8,
                string_len: 24,
            },
            gzip: false,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Live counters, readable while the load runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests completed (accepted or finally failed).
    pub requests: AtomicU64,
    /// Spans sent (counted once per request, not per attempt).
    pub spans_sent: AtomicU64,
    /// Spans the server accepted.
    pub spans_accepted: AtomicU64,
    /// Spans the server refused as invalid (partial success).
    pub spans_rejected: AtomicU64,
    /// Spans given up on (final error or out of attempts).
    pub spans_failed: AtomicU64,
    /// Attempts answered with "retry later".
    pub retries: AtomicU64,
}

impl Progress {
    fn add(counter: &AtomicU64, n: u64) {
        // Independent totals read only for reporting.
        counter.fetch_add(n, Ordering::Relaxed);
    }
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The result of a load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Wall time.
    pub elapsed: Duration,
    /// Requests completed.
    pub requests: u64,
    /// Spans sent.
    pub spans_sent: u64,
    /// Spans accepted.
    pub spans_accepted: u64,
    /// Spans refused as invalid.
    pub spans_rejected: u64,
    /// Spans given up on.
    pub spans_failed: u64,
    /// "Retry later" answers.
    pub retries: u64,
    /// Latency of accepted attempts, microseconds.
    pub latency_us: Histogram<u64>,
    /// The first few final errors.
    pub errors: Vec<String>,
}

impl LoadReport {
    /// Accepted spans per second.
    pub fn spans_per_second(&self) -> f64 {
        self.spans_accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A human-readable summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let h = &self.latency_us;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{:<22}{:>14}",
            "duration",
            format!("{:.2} s", self.elapsed.as_secs_f64())
        );
        let _ = writeln!(out, "{:<22}{:>14}", "requests", self.requests);
        let _ = writeln!(out, "{:<22}{:>14}", "spans sent", self.spans_sent);
        let _ = writeln!(out, "{:<22}{:>14}", "spans accepted", self.spans_accepted);
        let _ = writeln!(out, "{:<22}{:>14}", "spans rejected", self.spans_rejected);
        let _ = writeln!(out, "{:<22}{:>14}", "spans failed", self.spans_failed);
        let _ = writeln!(out, "{:<22}{:>14}", "retries (backpressure)", self.retries);
        let _ = writeln!(
            out,
            "{:<22}{:>14}",
            "throughput",
            format!("{:.0} spans/s", self.spans_per_second())
        );
        if !h.is_empty() {
            let _ = writeln!(
                out,
                "{:<22}{:>14}",
                "latency p50/p90/p99",
                format!("{:.2}/{:.2}/{:.2} ms", ms(0.5), ms(0.9), ms(0.99))
            );
            let _ = writeln!(
                out,
                "{:<22}{:>14}",
                "latency max",
                format!("{:.2} ms", h.max() as f64 / 1000.0)
            );
        }
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        out
    }
}

/// Where a worker's payloads come from: called with a running sequence number.
pub type PayloadSource = Arc<dyn Fn(u64) -> Payload + Send + Sync>;

/// One sender: a client, a payload source and a pace.
pub(crate) struct Worker {
    pub(crate) client: OtlpClient,
    pub(crate) source: PayloadSource,
    /// Time between requests; zero means back to back.
    pub(crate) period: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Duration,
}

struct Shared {
    latency: Mutex<Histogram<u64>>,
    errors: Mutex<Vec<String>>,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

impl Worker {
    async fn run(self, deadline: Instant, progress: Arc<Progress>, shared: Arc<Shared>) {
        let mut local = new_histogram();
        let mut seq = 0u64;
        let mut next = tokio::time::Instant::now();
        while Instant::now() < deadline {
            if !self.period.is_zero() {
                tokio::time::sleep_until(next).await;
                next += self.period;
                // After a stall do not burst to catch up.
                let now = tokio::time::Instant::now();
                if next < now {
                    next = now;
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            let payload = (self.source)(seq);
            seq += 1;
            let spans = payload.spans as u64;
            Progress::add(&progress.spans_sent, spans);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let started = Instant::now();
                let answer = self.client.send(&payload, self.timeout).await;
                match answer {
                    Answer::Accepted { rejected } => {
                        let _ = local.record((started.elapsed().as_micros() as u64).max(1));
                        Progress::add(&progress.spans_accepted, spans.saturating_sub(rejected));
                        Progress::add(&progress.spans_rejected, rejected);
                        break;
                    }
                    Answer::RetryLater { after } if attempt < self.retry.max_attempts => {
                        Progress::add(&progress.retries, 1);
                        let wait = after
                            .unwrap_or(Duration::from_millis(20))
                            .min(self.retry.max_backoff)
                            .max(Duration::from_millis(5));
                        tokio::time::sleep(wait).await;
                    }
                    Answer::RetryLater { .. } => {
                        Progress::add(&progress.spans_failed, spans);
                        push_error(&shared, format!("gave up after {attempt} attempts"));
                        break;
                    }
                    Answer::Failed { message } => {
                        Progress::add(&progress.spans_failed, spans);
                        push_error(&shared, message);
                        break;
                    }
                }
            }
            Progress::add(&progress.requests, 1);
        }
        let _ = shared.latency.lock().add(&local);
    }
}

fn push_error(shared: &Shared, message: String) {
    let mut errors = shared.errors.lock();
    if errors.len() < 5 {
        errors.push(message);
    }
}

/// Runs `workers` until `duration` passes, then returns the totals.
pub(crate) async fn run_workers(
    workers: Vec<Worker>,
    duration: Duration,
    progress: Arc<Progress>,
) -> LoadReport {
    let shared = Arc::new(Shared {
        latency: Mutex::new(new_histogram()),
        errors: Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = workers
        .into_iter()
        .map(|w| tokio::spawn(w.run(deadline, progress.clone(), shared.clone())))
        .collect();
    for h in handles {
        let _ = h.await;
    }
    let latency_us = shared.latency.lock().clone();
    let errors = shared.errors.lock().clone();
    LoadReport {
        elapsed: started.elapsed(),
        requests: Progress::get(&progress.requests),
        spans_sent: Progress::get(&progress.spans_sent),
        spans_accepted: Progress::get(&progress.spans_accepted),
        spans_rejected: Progress::get(&progress.spans_rejected),
        spans_failed: Progress::get(&progress.spans_failed),
        retries: Progress::get(&progress.retries),
        latency_us,
        errors,
    }
}

/// Runs `load` with `options`, updating `progress` as it goes.
pub async fn run(
    options: &LoadOptions,
    progress: Arc<Progress>,
) -> Result<LoadReport, ClientError> {
    let concurrency = options.concurrency.max(1);
    let spans = options.spans_per_request.max(1);
    // A pool of distinct requests, built once, so the generator measures the server.
    let mut rng = rand::rng();
    let pool: Arc<Vec<Payload>> = Arc::new(
        (0..32)
            .map(|_| {
                Payload::new(&load_request(
                    &mut rng,
                    "spanflow-load",
                    spans,
                    options.attributes,
                ))
            })
            .collect(),
    );
    let period = if options.rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(spans as f64 * concurrency as f64 / options.rate as f64)
    };
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let client = OtlpClient::new(options.transport, &options.endpoint, options.gzip)?;
        let pool = pool.clone();
        let source: PayloadSource =
            Arc::new(move |seq| pool[(seq as usize + w) % pool.len()].clone());
        workers.push(Worker {
            client,
            source,
            period,
            retry: options.retry,
            timeout: options.timeout,
        });
    }
    Ok(run_workers(workers, options.duration, progress).await)
}
