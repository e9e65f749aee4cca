//! Fan-out to many backends: one bounded queue, one dispatcher and a semaphore of in-flight
//! exports per backend, so a slow or dead backend only ever fills its own queue.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::duration_serde;
use crate::error::BuildError;
use crate::exporter::DynExporter;
use crate::retry::{AttemptObserver, export_with_retry};
use crate::stats::{BackendHealth, Counters, FanOutStats, Health, Role};
use crate::{ExportBatch, ExportError, ExportOutcome, Exporter, RetryConfig};

/// What a backend does with a batch when its queue is full. Either way the batch is counted
/// as dropped (and handed to the fallback, if the backend has one); `send` never waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Refuse the incoming batch (keeps the oldest data).
    #[default]
    DropNewest,
    /// Evict the oldest queued batch to make room (keeps the freshest data).
    DropOldest,
}

/// Queueing, concurrency, retry and timeout of one backend.
///
/// ```
/// use spanflow_export::{BackendConfig, OverflowPolicy};
/// let c: BackendConfig = serde_json::from_str(
///     r#"{"queue": 512, "concurrency": 8, "policy": "drop_oldest", "timeout": "3s",
///         "retry": {"initial_backoff": "100ms", "max_elapsed": "30s"}}"#).unwrap();
/// assert_eq!((c.queue, c.concurrency, c.policy), (512, 8, OverflowPolicy::DropOldest));
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Batches that may wait for this backend (its own queue, not shared).
    pub queue: usize,
    /// Exports in flight at once (retries included).
    pub concurrency: usize,
    /// What to do when the queue is full.
    pub policy: OverflowPolicy,
    /// Retry of transient failures.
    pub retry: RetryConfig,
    /// Timeout of each attempt, enforced here around the exporter's call (the exporter's own
    /// request timeout also applies; the smaller one wins). A timed-out attempt is retryable.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            queue: 256,
            concurrency: 4,
            policy: OverflowPolicy::DropNewest,
            retry: RetryConfig::default(),
            timeout: crate::config::DEFAULT_TIMEOUT,
        }
    }
}

/// Why [`FanOut::send`] refused a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The fan-out is shutting down or shut down; the batch is handed back.
    #[error("fan-out is shut down")]
    Closed(ExportBatch),
}

/// Why [`FanOut::flush`] returned before everything was finished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The deadline passed with batches still queued or in flight.
    #[error("flush deadline passed with {pending} batches unfinished")]
    Timeout {
        /// Batches sent before the flush and not yet finished.
        pending: u64,
    },
}

struct Item {
    seq: u64,
    batch: ExportBatch,
}

/// Queue and completion tracking of one backend, under one lock.
struct QueueState {
    items: VecDeque<Item>,
    next_seq: u64,
    /// Sequence numbers enqueued and not yet finished (queued or in flight).
    unfinished: BTreeSet<u64>,
    closed: bool,
    /// Flush waiters: woken once the watermark reaches their target. Only they are woken,
    /// so finishing a batch with nobody flushing costs no wake-up.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl QueueState {
    /// Every batch with a sequence number below this has finished.
    fn watermark(&self) -> u64 {
        self.unfinished.first().copied().unwrap_or(self.next_seq)
    }

    /// Wake the flush waiters whose target the watermark reached.
    fn wake_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let wm = self.watermark();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(target, _)| *target <= wm);
        self.waiters = waiting;
        for (_, tx) in ready {
            // The waiter may have timed out and gone; nothing to do then.
            let _ = tx.send(());
        }
    }
}

struct Backend {
    index: usize,
    name: String,
    role: Role,
    exporter: Arc<dyn DynExporter>,
    config: BackendConfig,
    state: Mutex<QueueState>,
    available: Notify,
    semaphore: Arc<Semaphore>,
    counters: Counters,
    fallback: Option<usize>,
}

struct Shared {
    backends: Vec<Backend>,
    health: watch::Sender<Vec<BackendHealth>>,
    accepting: AtomicBool,
    cancel: CancellationToken,
    tracker: TaskTracker,
    shutdown: tokio::sync::Mutex<bool>,
}

/// Sends each batch to every primary backend concurrently, each through its own bounded
/// queue, semaphore-bounded in-flight exports, retry and timeout; a batch that finally fails
/// on a primary goes to that primary's fallback.
///
/// Delivery is at least once per backend: a batch is exported again only after an attempt
/// that failed from the client's view (timeout, connection reset, retryable status), so
/// duplicates happen exactly when the server had processed such an attempt, e.g. it answered
/// after the attempt timeout, or the connection broke after the request was received.
/// The same holds for a fallback receiving a batch the primary had in fact stored.
///
/// ```
/// use std::time::{Duration, Instant};
/// use spanflow_export::{BackendConfig, ExportBatch, FanOut, StdoutExporter};
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let fan = FanOut::builder()
///     .backend("stdout", StdoutExporter::new(), BackendConfig::default())
///     .build(rt.handle())
///     .unwrap();
/// let empty = prost::Message::encode_to_vec(
///     &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default());
/// fan.send(ExportBatch::new(empty.into(), 0)).unwrap();
/// let stats = rt.block_on(fan.shutdown(Instant::now() + Duration::from_secs(5)));
/// assert_eq!(stats.backend("stdout").unwrap().exported_batches, 1);
/// ```
pub struct FanOut {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field(
                "backends",
                &self
                    .shared
                    .backends
                    .iter()
                    .map(|b| &b.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

struct Spec {
    name: String,
    exporter: Arc<dyn DynExporter>,
    config: BackendConfig,
    fallback_of: Option<usize>,
}

/// Builder of [`FanOut`].
#[derive(Default)]
pub struct FanOutBuilder {
    specs: Vec<Spec>,
    error: Option<String>,
}

impl std::fmt::Debug for FanOutBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutBuilder")
            .field(
                "backends",
                &self.specs.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl FanOutBuilder {
    /// Add a primary backend: it receives every batch.
    pub fn backend(
        self,
        name: impl Into<String>,
        exporter: impl Exporter,
        config: BackendConfig,
    ) -> Self {
        self.backend_dyn(name, Arc::new(exporter), config)
    }

    /// [`FanOutBuilder::backend`] for an exporter already behind an `Arc<dyn DynExporter>`.
    pub fn backend_dyn(
        mut self,
        name: impl Into<String>,
        exporter: Arc<dyn DynExporter>,
        config: BackendConfig,
    ) -> Self {
        self.specs.push(Spec {
            name: name.into(),
            exporter,
            config,
            fallback_of: None,
        });
        self
    }

    /// Give the primary added last a fallback: batches that finally fail there (or overflow
    /// its queue) are sent here instead.
    pub fn fallback(
        self,
        name: impl Into<String>,
        exporter: impl Exporter,
        config: BackendConfig,
    ) -> Self {
        self.fallback_dyn(name, Arc::new(exporter), config)
    }

    /// [`FanOutBuilder::fallback`] for an exporter already behind an `Arc<dyn DynExporter>`.
    pub fn fallback_dyn(
        mut self,
        name: impl Into<String>,
        exporter: Arc<dyn DynExporter>,
        config: BackendConfig,
    ) -> Self {
        let primary = self.specs.iter().rposition(|s| s.fallback_of.is_none());
        let name = name.into();
        match primary {
            Some(p) if self.specs.iter().any(|s| s.fallback_of == Some(p)) => {
                self.error
                    .get_or_insert(format!("second fallback {name:?} for one primary"));
            }
            Some(p) => self.specs.push(Spec {
                name,
                exporter,
                config,
                fallback_of: Some(p),
            }),
            None => {
                self.error
                    .get_or_insert(format!("fallback {name:?} added before any backend"));
            }
        }
        self
    }

    /// Start every backend's dispatcher on `handle`.
    pub fn build(self, handle: &Handle) -> Result<FanOut, BuildError> {
        if let Some(e) = self.error {
            return Err(BuildError::FanOut(e));
        }
        if !self.specs.iter().any(|s| s.fallback_of.is_none()) {
            return Err(BuildError::FanOut("no backend".into()));
        }
        for (i, s) in self.specs.iter().enumerate() {
            if self.specs[..i].iter().any(|o| o.name == s.name) {
                return Err(BuildError::FanOut(format!(
                    "duplicate backend name {:?}",
                    s.name
                )));
            }
            if s.config.queue == 0 || s.config.concurrency == 0 {
                return Err(BuildError::FanOut(format!(
                    "backend {:?}: queue and concurrency must be at least 1",
                    s.name
                )));
            }
        }
        let fallbacks: Vec<Option<usize>> = (0..self.specs.len())
            .map(|i| self.specs.iter().position(|s| s.fallback_of == Some(i)))
            .collect();
        let names: Vec<String> = self.specs.iter().map(|s| s.name.clone()).collect();
        let backends: Vec<Backend> = self
            .specs
            .into_iter()
            .enumerate()
            .map(|(index, s)| Backend {
                index,
                role: match s.fallback_of {
                    None => Role::Primary,
                    Some(p) => Role::Fallback {
                        of: names[p].clone(),
                    },
                },
                name: s.name,
                exporter: s.exporter,
                semaphore: Arc::new(Semaphore::new(s.config.concurrency)),
                state: Mutex::new(QueueState {
                    items: VecDeque::with_capacity(s.config.queue.min(4096)),
                    next_seq: 0,
                    unfinished: BTreeSet::new(),
                    closed: false,
                    waiters: Vec::new(),
                }),
                config: s.config,
                available: Notify::new(),
                counters: Counters::default(),
                fallback: fallbacks[index],
            })
            .collect();
        let health = watch::Sender::new(
            names
                .iter()
                .map(|name| BackendHealth {
                    name: name.clone(),
                    health: Health::Idle,
                })
                .collect(),
        );
        let shared = Arc::new(Shared {
            backends,
            health,
            accepting: AtomicBool::new(true),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            shutdown: tokio::sync::Mutex::new(false),
        });
        for i in 0..shared.backends.len() {
            shared
                .tracker
                .spawn_on(dispatch(Arc::clone(&shared), i), handle);
        }
        Ok(FanOut { shared })
    }
}

impl FanOut {
    /// A builder with no backend.
    pub fn builder() -> FanOutBuilder {
        FanOutBuilder::default()
    }

    /// Queue `batch` on every primary backend; never waits for any of them. A full queue
    /// applies that backend's [`OverflowPolicy`] and counts the drop.
    /// Callable from any thread, inside or outside the runtime.
    pub fn send(&self, batch: ExportBatch) -> Result<(), SendError> {
        // Relaxed: only a hint; a send racing with shutdown is caught by the queue's own
        // `closed` flag under its lock, and then counted as dropped.
        if !self.shared.accepting.load(Ordering::Relaxed) {
            return Err(SendError::Closed(batch));
        }
        for b in self
            .shared
            .backends
            .iter()
            .filter(|b| b.role == Role::Primary)
        {
            // A `Bytes` clone: a reference-count increment, never a copy of the body.
            if let Err(batch) = self.shared.enqueue(b.index, batch.clone()) {
                self.shared.count_dropped(b, &batch, "fan-out closed");
            }
        }
        Ok(())
    }

    /// Wait until every batch sent before this call has finished on every backend (exported,
    /// or finally failed or dropped and counted), including the fallback attempts of
    /// those that failed on a primary.
    pub async fn flush(&self, deadline: Instant) -> Result<(), FlushError> {
        self.shared
            .wait_finished(deadline, false)
            .await
            .map_err(|pending| FlushError::Timeout { pending })
    }

    /// Stop accepting batches, let queued and in-flight ones finish until `deadline`, then
    /// cancel whatever is still waiting or in flight and count it as dropped; shut the
    /// exporters down and return the final stats. Later calls just return the stats.
    pub async fn shutdown(&self, deadline: Instant) -> FanOutStats {
        let shared = &self.shared;
        let mut done = shared.shutdown.lock().await;
        if !*done {
            *done = true;
            // Relaxed: see `send`; the queues' `closed` flags are the real barrier.
            shared.accepting.store(false, Ordering::Relaxed);
            if shared.wait_finished(deadline, true).await.is_err() {
                tracing::warn!("fan-out shutdown deadline reached; cancelling pending exports");
            }
            shared.cancel.cancel();
            shared.tracker.close();
            shared.tracker.wait().await;
            let grace = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(200));
            for b in &shared.backends {
                match tokio::time::timeout(grace, b.exporter.shutdown_boxed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(backend = %b.name, error = %e, "exporter shutdown failed");
                    }
                    Err(_) => tracing::warn!(backend = %b.name, "exporter shutdown timed out"),
                }
                shared.set_health(b.index, Health::Stopped);
            }
        }
        self.stats()
    }

    /// A snapshot of every backend's counters.
    pub fn stats(&self) -> FanOutStats {
        FanOutStats {
            backends: self
                .shared
                .backends
                .iter()
                .map(|b| b.counters.snapshot(&b.name, &b.role))
                .collect(),
        }
    }

    /// The health of every backend, updated on each change.
    pub fn health(&self) -> watch::Receiver<Vec<BackendHealth>> {
        self.shared.health.subscribe()
    }
}

impl Drop for FanOut {
    /// Dropping without [`FanOut::shutdown`] cancels the dispatchers; whatever they still
    /// held is counted as dropped in the (then unreachable) stats, and logged.
    fn drop(&mut self) {
        if !self.shared.cancel.is_cancelled() {
            let pending: usize = self
                .shared
                .backends
                .iter()
                .map(|b| b.state.lock().unfinished.len())
                .sum();
            if pending > 0 {
                tracing::warn!(pending, "fan-out dropped without shutdown; cancelling");
            }
            self.shared.cancel.cancel();
        }
    }
}

impl Shared {
    /// Queue `batch` on backend `index`; `Err` hands it back when the queue is closed.
    fn enqueue(&self, index: usize, batch: ExportBatch) -> Result<(), ExportBatch> {
        let b = &self.backends[index];
        Counters::add(&b.counters.received_batches, 1);
        Counters::add(&b.counters.received_spans, batch.spans as u64);
        let (pushed, victim) = {
            let mut st = b.state.lock();
            if st.closed {
                return Err(batch);
            }
            if st.items.len() < b.config.queue {
                push(&mut st, batch);
                (true, None)
            } else {
                match b.config.policy {
                    OverflowPolicy::DropNewest => (false, Some(batch)),
                    OverflowPolicy::DropOldest => {
                        let old = st.items.pop_front();
                        if let Some(old) = &old {
                            st.unfinished.remove(&old.seq);
                        }
                        push(&mut st, batch);
                        st.wake_waiters();
                        (true, old.map(|o| o.batch))
                    }
                }
            }
        };
        if pushed {
            if victim.is_none() {
                Counters::add(&b.counters.queued, 1);
            }
            b.available.notify_one();
        }
        if let Some(victim) = victim {
            self.set_health(index, Health::Degraded);
            self.count_dropped(b, &victim, "queue full");
            self.hand_to_fallback(b, victim);
        }
        Ok(())
    }

    fn count_dropped(&self, b: &Backend, batch: &ExportBatch, why: &str) {
        Counters::add(&b.counters.dropped_batches, 1);
        Counters::add(&b.counters.dropped_spans, batch.spans as u64);
        tracing::debug!(backend = %b.name, spans = batch.spans, why, "batch dropped");
    }

    fn hand_to_fallback(&self, b: &Backend, batch: ExportBatch) {
        if let Some(f) = b.fallback {
            match self.enqueue(f, batch) {
                Ok(()) => Counters::add(&b.counters.to_fallback_batches, 1),
                Err(batch) => self.count_dropped(&self.backends[f], &batch, "fallback closed"),
            }
        }
    }

    /// Mark `seq` of backend `index` finished and wake the flushes it completes.
    fn finish(&self, index: usize, seq: u64) {
        let b = &self.backends[index];
        let mut st = b.state.lock();
        st.unfinished.remove(&seq);
        st.wake_waiters();
    }

    fn set_health(&self, index: usize, health: Health) {
        self.health.send_if_modified(|all| {
            let entry = &mut all[index].health;
            let changed = *entry != health && *entry != Health::Stopped;
            if changed {
                *entry = health;
            }
            changed
        });
    }

    /// Wait for every batch queued so far: primaries first, then fallbacks (which receive
    /// their batches before the primary marks them finished). With `close`, each group's
    /// queues are closed first, so "so far" is "ever". `Err` carries the unfinished count.
    async fn wait_finished(&self, deadline: Instant, close: bool) -> Result<(), u64> {
        let deadline = tokio::time::Instant::from_std(deadline);
        for primaries in [true, false] {
            let group = self
                .backends
                .iter()
                .filter(|b| (b.role == Role::Primary) == primaries);
            let mut targets = Vec::new();
            for b in group {
                let mut st = b.state.lock();
                if close {
                    st.closed = true;
                }
                targets.push((b, st.next_seq));
                drop(st);
                if close {
                    b.available.notify_one();
                }
            }
            for (b, target) in targets {
                let rx = {
                    let mut st = b.state.lock();
                    if st.watermark() >= target {
                        continue;
                    }
                    let (tx, rx) = oneshot::channel();
                    st.waiters.push((target, tx));
                    rx
                };
                if !matches!(tokio::time::timeout_at(deadline, rx).await, Ok(Ok(()))) {
                    return Err(self.pending());
                }
            }
        }
        Ok(())
    }

    fn pending(&self) -> u64 {
        self.backends
            .iter()
            .map(|b| b.state.lock().unfinished.len() as u64)
            .sum()
    }
}

fn push(st: &mut QueueState, batch: ExportBatch) {
    let seq = st.next_seq;
    st.next_seq += 1;
    st.unfinished.insert(seq);
    st.items.push_back(Item { seq, batch });
}

/// Per backend: take a permit, then a batch, and export it on its own task.
/// Taking the permit first leaves batches in the queue (where `DropOldest` can still evict
/// them) while every permit is busy.
async fn dispatch(shared: Arc<Shared>, index: usize) {
    let b = &shared.backends[index];
    loop {
        let permit = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            p = Arc::clone(&b.semaphore).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let item = loop {
            {
                let mut st = b.state.lock();
                if let Some(item) = st.items.pop_front() {
                    break Some(item);
                }
                if st.closed {
                    break None;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this await is not missed.
            tokio::select! {
                biased;
                _ = shared.cancel.cancelled() => break None,
                _ = b.available.notified() => {}
            }
        };
        let Some(item) = item else { break };
        Counters::sub(&b.counters.queued, 1);
        Counters::add(&b.counters.in_flight, 1);
        let task_shared = Arc::clone(&shared);
        shared.tracker.spawn(async move {
            run(&task_shared, index, item).await;
            drop(permit);
        });
    }
    // Cancelled (shutdown deadline or drop): whatever is still queued is dropped, counted.
    let left: Vec<Item> = b.state.lock().items.drain(..).collect();
    for item in left {
        Counters::sub(&b.counters.queued, 1);
        shared.count_dropped(b, &item.batch, "shutdown deadline");
        shared.finish(index, item.seq);
    }
}

struct Observer<'a> {
    shared: &'a Shared,
    index: usize,
}

impl AttemptObserver for Observer<'_> {
    fn attempt(&self, latency: Duration, result: &Result<ExportOutcome, ExportError>) {
        let b = &self.shared.backends[self.index];
        b.counters.latency.record(latency);
        let health = if result.is_ok() {
            Health::Running
        } else {
            Health::Degraded
        };
        self.shared.set_health(self.index, health);
    }
    fn retry(&self, _error: &ExportError, _delay: Duration) {
        Counters::add(&self.shared.backends[self.index].counters.retries, 1);
    }
}

async fn run(shared: &Shared, index: usize, item: Item) {
    let b = &shared.backends[index];
    let observer = Observer { shared, index };
    let result = export_with_retry(
        &*b.exporter,
        &item.batch,
        &b.config.retry,
        b.config.timeout,
        &shared.cancel,
        &observer,
    )
    .await;
    let c = &b.counters;
    match result {
        Ok(outcome) => {
            Counters::add(&c.exported_batches, 1);
            Counters::add(&c.accepted_spans, outcome.accepted);
            Counters::add(&c.rejected_spans, outcome.rejected);
            if outcome.rejected > 0 {
                tracing::warn!(backend = %b.name, rejected = outcome.rejected,
                    message = outcome.message.as_deref().unwrap_or(""), "backend rejected spans");
            }
        }
        Err(ExportError::Cancelled) => shared.count_dropped(b, &item.batch, "shutdown deadline"),
        Err(error) => {
            Counters::add(&c.failed_batches, 1);
            Counters::add(&c.failed_spans, item.batch.spans as u64);
            if !error.is_retryable() {
                Counters::add(&c.permanent_errors, 1);
            }
            tracing::warn!(backend = %b.name, spans = item.batch.spans, %error, "export failed");
            shared.hand_to_fallback(b, item.batch);
        }
    }
    Counters::sub(&c.in_flight, 1);
    shared.finish(index, item.seq);
}
