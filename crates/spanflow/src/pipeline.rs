//! [`Pipeline`]: intake → encode → processors → export, with exact accounting.
//!
//! Threads and who owns what:
//! - application threads only push into the span intake (`on_end`) or the request intake
//!   (`try_submit`), both `spanflow-batch` batchers: sharded, no global lock;
//! - one encoder thread takes span batches, encodes each once into a [`TraceRequest`] (straight
//!   from `SpanData`), runs the processor chain and hands the result to the fan-out;
//! - one request thread does the same for already-encoded requests (merging what queued up);
//! - optionally, a `spanflow-process` scheduler runs the chain on its own workers;
//! - exports run in `spanflow-export`'s [`FanOut`] on a tokio runtime the pipeline owns (see
//!   [`crate::runtime`]).
//!
//! Nothing ever calls `block_on` from inside a runtime: the pipeline's worker threads are plain
//! std threads, and `flush`/`shutdown` wait on a condition variable or a std channel with a
//! deadline, while the async part of their work runs as a task on the pipeline's own runtime.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use parking_lot::{Condvar, Mutex, RwLock};
use spanflow_batch::{Batcher, DropSite, Policy, Receiver, TrySendError};
use spanflow_export::{
    BackendConfig, DynExporter, ExportBatch, Exporter, ExporterConfig, FanOut, FanOutStats, Health,
    RetryConfig, Role, SinkConfig,
};
use spanflow_otlp::TraceRequest;
use spanflow_process::{Chain, Scheduler};

use crate::config::{BackendRole, ExporterSpec, FreeSpansOn, OverflowPolicy, PipelineConfig};
use crate::encode::{SpanEncoder, estimate_span_bytes};
use crate::error::{BuildError, FlushError, ShutdownError, SubmitError};
use crate::runtime::{OwnedRuntime, lower_current_thread_priority};
use crate::stats::{BackendStats, DroppedSpans, PipelineStats};

const RUNNING: u8 = 0;
const CLOSING: u8 = 1;
const CLOSED: u8 = 2;
/// The last handle was dropped without `shutdown`: the workers drain and shut the fan-out down.
const ABANDONED: u8 = 3;

/// Extra time `shutdown` gives the fan-out past the caller's deadline to cancel what is left
/// and report (it shuts exporters down with a short grace of its own).
const FANOUT_REPORT_GRACE: Duration = Duration::from_millis(500);

/// A running span pipeline. Cheap to clone (a handle to shared state); `Send + Sync`.
///
/// Build one with [`Pipeline::builder`], feed it through [`crate::SpanProcessor`] (SDK spans) or
/// [`Pipeline::try_submit`] (encoded requests), and end it with [`Pipeline::shutdown`], which
/// exports everything accepted before returning the final counters. Dropping the last handle
/// without `shutdown` still drains in the background.
///
/// ```
/// use std::time::Duration;
/// use spanflow::{NullExporter, Pipeline};
///
/// let pipeline = Pipeline::builder().exporter("null", NullExporter::default()).build()?;
/// let request = spanflow::otlp::TraceRequest::empty();
/// pipeline.try_submit(request).expect("room in an empty pipeline");
/// let stats = pipeline.shutdown(Duration::from_secs(5))?;
/// assert_eq!(stats.unaccounted(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    owner: Arc<Owner>,
}

/// Dropped with the last `Pipeline` handle: starts a background drain.
#[derive(Debug)]
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared
            .state
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Workers drain what was accepted; the last one out shuts the fan-out down.
            shared.spans.close();
            shared.requests.close();
        }
    }
}

/// Counters of the stages between the intakes and the fan-out; the intakes (spanflow-batch) and
/// the fan-out (spanflow-export) count for themselves, so the hot path bumps no counter of ours.
#[derive(Debug, Default)]
struct Counters {
    /// Spans in accepted submitted requests.
    requests_accepted: AtomicU64,
    /// Spans in refused submitted requests.
    refused: AtomicU64,
    /// Spans a processor removed, or lost with a batch the chain failed on.
    dropped_processor: AtomicU64,
    /// Spans handed to the fan-out.
    processed: AtomicU64,
    /// Spans the fan-out refused because it was already shut down.
    export_closed: AtomicU64,
    /// SDK spans dropped because the budget stayed full (the overflow policy gave up).
    intake_full: AtomicU64,
}

/// What a worker thread consumes.
enum Worker {
    Spans(Receiver<SpanData>),
    Requests(Receiver<TraceRequest>),
}

struct Shared {
    config: PipelineConfig,
    spans: Batcher<SpanData>,
    requests: Batcher<TraceRequest>,
    /// Set when a producer's bounded wait for room timed out (the backend is down or far too
    /// slow); while set, producers drop instead of waiting, so a dead backend costs each
    /// application thread at most one wait. The encoder clears it when the fan-out has room.
    overloaded: AtomicBool,
    resource: RwLock<Arc<Resource>>,
    chain: Option<Arc<Chain>>,
    scheduler: Option<Scheduler>,
    fanout: FanOut,
    health: tokio::sync::watch::Receiver<Vec<spanflow_export::BackendHealth>>,
    /// Index (in fan-out order) of the backend whose outcome decides `exported`/`failed`: the
    /// first primary, and its fallback if it has one.
    record: usize,
    record_fallback: Option<usize>,
    runtime: OwnedRuntime,
    counters: Counters,
    state: AtomicU8,
    /// Woken whenever spans are handed off or a worker exits.
    progress_lock: Mutex<()>,
    progress: Condvar,
    live_workers: AtomicUsize,
    workers: Mutex<Vec<JoinHandle<()>>>,
    final_stats: OnceLock<PipelineStats>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("fanout", &self.fanout)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// One backend added in code.
struct CodeBackend {
    name: String,
    role: BackendRole,
    exporter: Arc<dyn DynExporter>,
    config: Option<BackendConfig>,
}

/// Configures and starts a [`Pipeline`].
///
/// ```
/// use spanflow::{NullExporter, OverflowPolicy, Pipeline};
/// let pipeline = Pipeline::builder()
///     .max_batch_spans(1024)
///     .memory_budget(64 << 20)
///     .overflow(OverflowPolicy::Drop)
///     .exporter("primary", NullExporter::default())
///     .build()?;
/// # pipeline.shutdown(std::time::Duration::from_secs(1))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
#[derive(Default)]
pub struct PipelineBuilder {
    config: PipelineConfig,
    backends: Vec<CodeBackend>,
    chain: Option<Chain>,
    resource: Option<Resource>,
    env_exporter: bool,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("config", &self.config)
            .field(
                "backends",
                &self
                    .backends
                    .iter()
                    .map(|b| (&b.name, b.role))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl PipelineBuilder {
    /// Replaces the whole configuration (for example one read from a file).
    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// Applies the `OTEL_BSP_*` variables on top of the configuration so far (see
    /// [`PipelineConfig::apply_env`]) and, if no exporter is configured by the time `build` runs,
    /// adds an OTLP exporter configured from the `OTEL_EXPORTER_OTLP_*` variables
    /// (`spanflow-export`'s [`ExporterConfig::from_env`]).
    pub fn from_env(mut self) -> Self {
        for warning in self.config.apply_env(|name| std::env::var(name).ok()) {
            tracing::warn!(variable = warning.name, value = %warning.value, reason = warning.reason,
                "ignoring environment variable");
        }
        self.env_exporter = true;
        self
    }

    /// Most spans in one export request.
    pub fn max_batch_spans(mut self, spans: usize) -> Self {
        self.config.batch.max_spans = spans;
        self
    }

    /// Longest a partial batch waits before it is exported.
    pub fn max_batch_age(mut self, age: Duration) -> Self {
        self.config.batch.max_age_ms = age.as_millis().try_into().unwrap_or(u64::MAX);
        self
    }

    /// Bytes queued spans may hold (see [`crate::MemorySettings::budget_bytes`]).
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.config.memory.budget_bytes = bytes;
        self
    }

    /// What happens to spans that arrive while the budget is used up.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.config.memory.overflow = policy;
        self
    }

    /// Which threads free encoded SDK spans (see [`FreeSpansOn`]).
    pub fn free_spans_on(mut self, threads: FreeSpansOn) -> Self {
        self.config.memory.free_spans_on = threads;
        self
    }

    /// Export requests in flight at once, per backend.
    pub fn export_concurrency(mut self, requests: usize) -> Self {
        self.config.export.concurrency = requests;
        self
    }

    /// Longest one export attempt may take.
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.config.export.timeout_ms = timeout.as_millis().try_into().unwrap_or(u64::MAX);
        self
    }

    /// Adds a primary backend: every batch goes to every primary (fan-out).
    pub fn exporter(self, name: impl Into<String>, exporter: impl Exporter) -> Self {
        self.backend(name, BackendRole::Primary, Arc::new(exporter), None)
    }

    /// Adds a fallback for the primary added just before: it gets the batches that primary
    /// finally failed on or could not queue.
    pub fn fallback_exporter(self, name: impl Into<String>, exporter: impl Exporter) -> Self {
        self.backend(name, BackendRole::Fallback, Arc::new(exporter), None)
    }

    /// Adds a backend with full control: a type-erased exporter and, optionally, its own
    /// queue/concurrency/retry/timeout (otherwise derived from [`crate::ExportSettings`]).
    pub fn backend(
        mut self,
        name: impl Into<String>,
        role: BackendRole,
        exporter: Arc<dyn DynExporter>,
        config: Option<BackendConfig>,
    ) -> Self {
        self.backends.push(CodeBackend {
            name: name.into(),
            role,
            exporter,
            config,
        });
        self
    }

    /// Runs every batch through `chain` before export (after the chain from the configuration,
    /// which this replaces if both are given).
    pub fn processors(mut self, chain: Chain) -> Self {
        self.chain = Some(chain);
        self
    }

    /// The resource SDK spans are encoded under until the tracer provider sets its own.
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// The backend settings derived from `[export]`, for backends that bring none.
    fn default_backend_config(config: &PipelineConfig) -> BackendConfig {
        BackendConfig {
            queue: config.export.queue,
            concurrency: config.export.concurrency,
            timeout: config.export.timeout(),
            retry: RetryConfig {
                // Retries stay inside a few export timeouts, so a flush or shutdown with a
                // generous deadline is not outlived by one batch's retries.
                max_elapsed: config.export.timeout() * 3,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                ..RetryConfig::default()
            },
            ..BackendConfig::default()
        }
    }

    /// Checks the configuration, starts the export runtime and the worker threads.
    pub fn build(self) -> Result<Pipeline, BuildError> {
        let config = self.config;
        if config.batch.max_spans == 0 || config.batch.max_bytes == 0 {
            return Err(BuildError::Config(
                "batch.max_spans and batch.max_bytes must be positive".into(),
            ));
        }
        if config.export.concurrency == 0 || config.export.queue == 0 {
            return Err(BuildError::Config(
                "export.concurrency and export.queue must be positive".into(),
            ));
        }

        // Backends: configuration first, then code, then the environment if nothing else.
        let mut backends: Vec<CodeBackend> = Vec::new();
        for ExporterSpec {
            name,
            role,
            sink,
            backend,
        } in &config.exporters
        {
            let exporter = sink
                .build()
                .map_err(|err| BuildError::Export(format!("{name}: {err}")))?;
            backends.push(CodeBackend {
                name: name.clone(),
                role: *role,
                exporter: Arc::new(exporter),
                config: backend.clone(),
            });
        }
        backends.extend(self.backends);
        if backends.is_empty() && self.env_exporter {
            let env =
                ExporterConfig::from_env().map_err(|err| BuildError::Export(err.to_string()))?;
            let exporter = SinkConfig::Otlp(env)
                .build()
                .map_err(|err| BuildError::Export(err.to_string()))?;
            backends.push(CodeBackend {
                name: "otlp".into(),
                role: BackendRole::Primary,
                exporter: Arc::new(exporter),
                config: None,
            });
        }
        let Some(record) = backends.iter().position(|b| b.role == BackendRole::Primary) else {
            return Err(BuildError::Config(
                "no exporter configured (a primary backend is required)".into(),
            ));
        };
        let record_fallback = backends
            .get(record + 1)
            .filter(|b| b.role == BackendRole::Fallback)
            .map(|_| record + 1);

        let chain = match (self.chain, config.processors.is_empty()) {
            (Some(chain), _) => Some(Arc::new(chain)),
            (None, false) => Some(Arc::new(
                Chain::from_config(&config.processors)
                    .map_err(|err| BuildError::Process(err.to_string()))?,
            )),
            (None, true) => None,
        };
        let scheduler = match (&chain, config.processing.threads) {
            (Some(chain), threads) if threads > 0 => Some(
                Scheduler::new(Arc::clone(chain), threads)
                    .map_err(|err| BuildError::Process(err.to_string()))?,
            ),
            _ => None,
        };

        let budget = config.memory.budget_bytes as u64;
        // The batcher cuts by count, bytes and age, never because the budget is full: a batch
        // must therefore fit the budget several times over, or a small budget would make every
        // batch wait for its age.
        let batch_bytes = (config.batch.max_bytes as u64).min(budget / 4).max(1);
        let (spans, span_receiver) = Batcher::<SpanData>::builder()
            .max_items(config.batch.max_spans)
            .max_bytes(batch_bytes)
            .max_age(config.batch.max_age())
            .weigh(|span: &SpanData| estimate_span_bytes(span) as u64)
            .drop_site(match config.memory.free_spans_on {
                FreeSpansOn::Application => DropSite::Producers,
                FreeSpansOn::Pipeline => DropSite::Consumer,
            })
            .budget_items(None)
            .budget_bytes(budget)
            // Only `try_send` is used; the overflow policy is applied in `wait_for_room`.
            .policy(Policy::DropNewest)
            .build()
            .map_err(|err| BuildError::Config(err.to_string()))?;
        // Submitted requests are merged only with what already queued up: no added latency.
        let (requests, request_receiver) = Batcher::<TraceRequest>::builder()
            .max_items(64)
            .max_bytes(batch_bytes)
            .max_age(Duration::ZERO)
            .weigh(|request: &TraceRequest| request.encoded_len() as u64)
            .budget_items(None)
            .budget_bytes(budget)
            .policy(Policy::DropNewest)
            .build()
            .map_err(|err| BuildError::Config(err.to_string()))?;

        let runtime = OwnedRuntime::start(
            config.export.resolved_runtime_threads(),
            config.processing.nice,
        )
        .map_err(BuildError::Threads)?;
        let default_backend = Self::default_backend_config(&config);
        let mut fanout = FanOut::builder();
        for backend in backends {
            let backend_config = backend.config.unwrap_or_else(|| default_backend.clone());
            fanout = match backend.role {
                BackendRole::Primary => {
                    fanout.backend_dyn(backend.name, backend.exporter, backend_config)
                }
                BackendRole::Fallback => {
                    fanout.fallback_dyn(backend.name, backend.exporter, backend_config)
                }
            };
        }
        let fanout = fanout
            .build(runtime.handle())
            .map_err(|err| BuildError::Export(err.to_string()))?;
        let health = fanout.health();

        let shared = Arc::new(Shared {
            spans,
            requests,
            overloaded: AtomicBool::new(false),
            resource: RwLock::new(Arc::new(
                self.resource
                    .unwrap_or_else(|| Resource::builder_empty().build()),
            )),
            chain,
            scheduler,
            fanout,
            health,
            record,
            record_fallback,
            runtime,
            counters: Counters::default(),
            state: AtomicU8::new(RUNNING),
            progress_lock: Mutex::new(()),
            progress: Condvar::new(),
            live_workers: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
            final_stats: OnceLock::new(),
            config,
        });
        let mut workers = Vec::with_capacity(2);
        for (name, worker) in [
            ("spanflow-encode", Worker::Spans(span_receiver)),
            ("spanflow-submit", Worker::Requests(request_receiver)),
        ] {
            shared.live_workers.fetch_add(1, Ordering::AcqRel);
            let worker_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    worker_shared.runtime.mark_current_thread();
                    lower_current_thread_priority(worker_shared.config.processing.nice);
                    match worker {
                        Worker::Spans(receiver) => worker_shared.run_span_worker(receiver),
                        Worker::Requests(receiver) => worker_shared.run_request_worker(receiver),
                    }
                    worker_shared.worker_exited();
                });
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(err) => {
                    shared.live_workers.fetch_sub(1, Ordering::AcqRel);
                    shared.spans.close();
                    shared.requests.close();
                    return Err(BuildError::Threads(err));
                }
            }
        }
        *shared.workers.lock() = workers;
        Ok(Pipeline {
            owner: Arc::new(Owner { shared }),
        })
    }
}

impl Pipeline {
    /// A builder with the defaults described on [`PipelineConfig`].
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    fn shared(&self) -> &Shared {
        &self.owner.shared
    }

    /// Hands one ended SDK span to the intake (what [`crate::SpanProcessor`]'s `on_end` does).
    ///
    /// Never takes a global lock; waits only under [`OverflowPolicy::Block`] while the memory
    /// budget is full, at most that policy's `max_wait_ms`, and not at all while the export side
    /// is known to be stuck (then the span is dropped and counted at once).
    pub fn push_span(&self, span: SpanData) {
        let shared = self.shared();
        match shared.spans.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(span)) => shared.wait_for_room(span),
            // Counted by the batcher (`refused.closed`, `refused.too_large`); freed here.
            Err(TrySendError::Closed(span) | TrySendError::TooLarge(span)) => drop(span),
        }
    }

    /// Submits an already-encoded request (the relay's path). Never blocks.
    ///
    /// The request is weighed by its encoded length against the memory budget; when the budget is
    /// used up it comes back in [`SubmitError::Full`] with a retry hint, and after shutdown in
    /// [`SubmitError::Closed`]. Refused spans are counted in [`PipelineStats::refused`].
    pub fn try_submit(&self, request: TraceRequest) -> Result<(), SubmitError> {
        let shared = self.shared();
        let spans = request.span_count() as u64;
        // Counted before the send so a flush racing with it never misses these spans.
        shared
            .counters
            .requests_accepted
            .fetch_add(spans, Ordering::Relaxed);
        let refused = |request: &TraceRequest| {
            shared
                .counters
                .requests_accepted
                .fetch_sub(spans, Ordering::Relaxed);
            shared
                .counters
                .refused
                .fetch_add(request.span_count() as u64, Ordering::Relaxed);
        };
        match shared.requests.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(request) | TrySendError::TooLarge(request)) => {
                refused(&request);
                let retry_after = shared.config.batch.max_age().max(Duration::from_millis(10));
                Err(SubmitError::Full {
                    request,
                    retry_after,
                })
            }
            Err(TrySendError::Closed(request)) => {
                refused(&request);
                Err(SubmitError::Closed { request })
            }
        }
    }

    /// Sets the resource SDK spans are encoded under (the tracer provider calls this through
    /// [`crate::SpanProcessor`]).
    pub fn set_resource(&self, resource: &Resource) {
        *self.shared().resource.write() = Arc::new(resource.clone());
    }

    /// Waits until every span accepted before this call is exported, failed or dropped (all
    /// counted), or `timeout` passes.
    ///
    /// Safe from any thread, inside or outside any runtime: it waits on std primitives while the
    /// pipeline's own threads and runtime do the work. Refused with
    /// [`FlushError::OnPipelineThread`] on the pipeline's own threads (inside an exporter, say).
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let shared = self.shared();
        if shared.on_own_thread() {
            return Err(FlushError::OnPipelineThread);
        }
        if shared.state.load(Ordering::Acquire) == CLOSED {
            return Err(FlushError::Closed);
        }
        let deadline = Instant::now() + timeout;
        let target = shared.accepted();
        let pending = |shared: &Shared| target.saturating_sub(shared.settled());
        // 1. The batchers cut everything accepted so far now instead of at its age.
        let _ = shared.spans.flush_timeout(timeout);
        let _ = shared
            .requests
            .flush_timeout(deadline.saturating_duration_since(Instant::now()));
        // 2. The workers encode, process and hand it all to the fan-out.
        if !shared.wait_until(deadline, |s| s.handed_off() >= target) {
            return Err(FlushError::Timeout {
                timeout,
                pending_spans: pending(shared),
            });
        }
        // 3. The fan-out finishes every batch it was given (on its runtime; we wait on a channel).
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let task_shared = Arc::clone(&self.owner.shared);
        shared.runtime.handle().spawn(async move {
            let _ = done.send(task_shared.fanout.flush(deadline).await.is_ok());
        });
        match finished.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(true) => Ok(()),
            _ => Err(FlushError::Timeout {
                timeout,
                pending_spans: pending(shared).max(1),
            }),
        }
    }

    /// Stops accepting spans, exports everything accepted, stops the runtime and returns the
    /// final counters. Whatever is still queued when `timeout` passes is counted as
    /// `dropped.shutdown_timeout` (or by the fan-out as failed) and the error carries the final
    /// counters. Refused on the pipeline's own threads.
    pub fn shutdown(&self, timeout: Duration) -> Result<PipelineStats, ShutdownError> {
        let shared = self.shared();
        if shared.on_own_thread() {
            return Err(ShutdownError::OnPipelineThread);
        }
        if shared
            .state
            .compare_exchange(RUNNING, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ShutdownError::AlreadyShutDown);
        }
        let deadline = Instant::now() + timeout;
        shared.spans.close();
        shared.requests.close();
        let drained = shared.wait_until(deadline, |s| s.live_workers.load(Ordering::Acquire) == 0);
        let stats = Shared::finish(&self.owner.shared, deadline);
        // Failed exports are final outcomes, not a shutdown problem; they are in the stats.
        if drained && stats.dropped.shutdown_timeout == 0 {
            Ok(stats)
        } else {
            Err(ShutdownError::Timeout {
                timeout,
                stats: Box::new(stats),
            })
        }
    }

    /// The counters now (after shutdown: the final counters).
    pub fn stats(&self) -> PipelineStats {
        let shared = self.shared();
        shared
            .final_stats
            .get()
            .cloned()
            .unwrap_or_else(|| shared.snapshot(&shared.fanout.stats()))
    }

    /// Whether `shutdown` has begun (new spans are refused and counted).
    pub fn is_shut_down(&self) -> bool {
        self.shared().state.load(Ordering::Acquire) != RUNNING
    }

    /// The configuration the pipeline runs with.
    pub fn config(&self) -> &PipelineConfig {
        &self.shared().config
    }

    /// The live health of every backend, from the fan-out.
    pub fn health(&self) -> tokio::sync::watch::Receiver<Vec<spanflow_export::BackendHealth>> {
        self.shared().fanout.health()
    }
}

impl Shared {
    /// The slow path of `push_span`: the budget is full. Under [`OverflowPolicy::Block`] retry
    /// with a growing pause until the policy's wait is over, unless the export side is known to
    /// be stuck; then drop and count.
    ///
    /// The wait is done here, with `try_send`, rather than with the batcher's own blocking
    /// policy, because it must also give up early once the export side is known to be stuck
    /// (`overloaded`), so that application threads stop paying the wait when it cannot help.
    #[cold]
    fn wait_for_room(&self, mut span: SpanData) {
        let max_wait = match self.config.memory.overflow {
            // Relaxed: a hint; a stale value costs one bounded wait or one early drop, both counted.
            OverflowPolicy::Block { max_wait_ms } if !self.overloaded.load(Ordering::Relaxed) => {
                Duration::from_millis(max_wait_ms)
            }
            _ => Duration::ZERO,
        };
        let deadline = Instant::now() + max_wait;
        let mut pause = Duration::from_micros(20);
        while Instant::now() < deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
            match self.spans.try_send(span) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => span = back,
                Err(TrySendError::Closed(_) | TrySendError::TooLarge(_)) => return,
            }
        }
        if !max_wait.is_zero() {
            self.overloaded.store(true, Ordering::Relaxed);
            tracing::warn!(
                ?max_wait,
                "span intake stayed full for the whole overflow wait; dropping until it drains"
            );
        }
        self.counters.intake_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Spans the pipeline is responsible for (emitted or still queued in the intakes, plus
    /// accepted requests).
    fn accepted(&self) -> u64 {
        let spans = self.spans.stats();
        spans.emitted + spans.queued + self.counters.requests_accepted.load(Ordering::Relaxed)
    }

    /// Spans that left the workers: handed to the fan-out, dropped by processors or refused by a
    /// closed fan-out.
    fn handed_off(&self) -> u64 {
        let c = &self.counters;
        c.processed.load(Ordering::Acquire)
            + c.dropped_processor.load(Ordering::Acquire)
            + c.export_closed.load(Ordering::Acquire)
    }

    /// Spans whose fate is final (see [`Self::record_outcome`]).
    fn settled(&self) -> u64 {
        let (exported, failed) = self.record_outcome(&self.fanout.stats());
        exported
            + failed
            + self.counters.dropped_processor.load(Ordering::Acquire)
            + self.counters.export_closed.load(Ordering::Acquire)
    }

    /// `(exported, failed)` spans by the record backend: what the first primary accepted, plus
    /// what its fallback accepted of the batches the primary gave up on; the rest of what either
    /// finished is failed.
    fn record_outcome(&self, fanout: &FanOutStats) -> (u64, u64) {
        let Some(primary) = fanout.backends.get(self.record) else {
            return (0, 0);
        };
        match self.record_fallback.and_then(|i| fanout.backends.get(i)) {
            Some(fallback) => (
                primary.accepted_spans + fallback.accepted_spans,
                primary.rejected_spans
                    + fallback.rejected_spans
                    + fallback.failed_spans
                    + fallback.dropped_spans,
            ),
            None => (
                primary.accepted_spans,
                primary.rejected_spans + primary.failed_spans + primary.dropped_spans,
            ),
        }
    }

    /// Spans the record backend (or its fallback, if it has one) dropped.
    fn record_dropped(&self, fanout: &FanOutStats) -> u64 {
        let index = self.record_fallback.unwrap_or(self.record);
        fanout.backends.get(index).map_or(0, |b| b.dropped_spans)
    }

    fn notify_progress(&self) {
        let _guard = self.progress_lock.lock();
        self.progress.notify_all();
    }

    /// Waits until `done(self)` or the deadline; true when done.
    fn wait_until(&self, deadline: Instant, done: impl Fn(&Shared) -> bool) -> bool {
        let mut guard = self.progress_lock.lock();
        loop {
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Bounded slices: the condition reads counters updated outside the lock (some by the
            // fan-out, which does not notify us), so a slice caps what a missed wake-up costs.
            self.progress
                .wait_for(&mut guard, (deadline - now).min(Duration::from_millis(5)));
        }
    }

    fn on_own_thread(&self) -> bool {
        self.runtime.is_current_thread()
    }

    fn run_span_worker(self: &Arc<Self>, mut receiver: Receiver<SpanData>) {
        let mut encoder = SpanEncoder::new();
        while let Some(batch) = receiver.recv() {
            let spans = batch.len() as u64;
            let resource = Arc::clone(&self.resource.read());
            let request = encoder.encode(&batch, &resource);
            // With `FreeSpansOn::Application` the batch parks its spans for the application
            // threads to free; otherwise they are freed here.
            drop(batch);
            self.process_and_export(request, spans);
        }
    }

    fn run_request_worker(self: &Arc<Self>, mut receiver: Receiver<TraceRequest>) {
        while let Some(mut batch) = receiver.recv() {
            let spans: u64 = batch.iter().map(|r| r.span_count() as u64).sum();
            let request = match batch.len() {
                1 => batch.drain().next().unwrap_or_else(TraceRequest::empty),
                _ => TraceRequest::merge(&batch),
            };
            drop(batch);
            self.process_and_export(request, spans);
        }
    }

    /// Runs the chain on `request` (holding `spans` accepted spans), on this thread or the
    /// scheduler, then hands the result to the fan-out.
    fn process_and_export(self: &Arc<Self>, request: TraceRequest, spans: u64) {
        match (&self.scheduler, &self.chain) {
            (Some(scheduler), _) => {
                let shared = Arc::clone(self);
                let submitted = scheduler.submit(request, move |result| match result {
                    Ok(out) => shared.export(out, spans),
                    Err(err) => shared.chain_failed(&err, spans),
                });
                if let Err(err) = submitted {
                    self.chain_failed(&err, spans);
                }
            }
            (None, Some(chain)) => match chain.process(request) {
                Ok(out) => self.export(out, spans),
                Err(err) => self.chain_failed(&err, spans),
            },
            (None, None) => self.export(request, spans),
        }
    }

    fn chain_failed(&self, err: &dyn std::error::Error, spans: u64) {
        tracing::warn!(error = %err, spans, "processor chain failed; batch dropped");
        self.counters
            .dropped_processor
            .fetch_add(spans, Ordering::Release);
        self.notify_progress();
    }

    /// Hands a processed request to the fan-out, first waiting (bounded) while the record
    /// backend is healthy but its queue is full, so a burst slows the intake down instead of
    /// overflowing the fan-out.
    fn export(&self, request: TraceRequest, spans: u64) {
        let out = (request.span_count() as u64).min(spans);
        if out < spans {
            self.counters
                .dropped_processor
                .fetch_add(spans - out, Ordering::Release);
        }
        if out == 0 {
            self.notify_progress();
            return;
        }
        let had_room = self.wait_for_export_room();
        if had_room {
            // Relaxed: a hint for producers (see `push_span`).
            self.overloaded.store(false, Ordering::Relaxed);
        }
        let batch = ExportBatch::new(request.into_bytes(), out as usize);
        match self.fanout.send(batch) {
            // Release: pairs with the Acquire loads in `handed_off`, which flush reads before
            // it asks the fan-out to flush.
            Ok(()) => self.counters.processed.fetch_add(out, Ordering::Release),
            Err(_) => self
                .counters
                .export_closed
                .fetch_add(out, Ordering::Release),
        };
        self.notify_progress();
    }

    /// Waits while the record backend is healthy and its queue has no room; true if there was
    /// room (at once or after waiting), false if it gave up.
    fn wait_for_export_room(&self) -> bool {
        let limit = self.config.export.queue as u64;
        let give_up = Instant::now() + self.config.export.timeout();
        loop {
            let stats = self.fanout.stats();
            let Some(primary) = stats.backends.get(self.record) else {
                return true;
            };
            if primary.queued + 1 < limit.max(2) {
                return true;
            }
            let degraded = self
                .health
                .borrow()
                .get(self.record)
                .is_some_and(|h| matches!(h.health, Health::Degraded | Health::Stopped));
            if degraded || Instant::now() >= give_up {
                return false;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    fn worker_exited(self: &Arc<Self>) {
        let last = self.live_workers.fetch_sub(1, Ordering::AcqRel) == 1;
        if last && self.state.load(Ordering::Acquire) == ABANDONED {
            // Last worker out after the handles were dropped without `shutdown`: finish the
            // exports already started (this is a plain std thread, so it may block), then let the
            // runtime go with the last reference.
            if let Some(scheduler) = &self.scheduler {
                scheduler.shutdown();
            }
            let deadline = Instant::now() + self.config.export.timeout();
            let _ = self
                .runtime
                .handle()
                .block_on(self.fanout.shutdown(deadline));
        }
        self.notify_progress();
    }

    /// Shuts the scheduler and the fan-out down by `deadline`, freezes the final counters and
    /// stops the runtime.
    fn finish(self: &Arc<Self>, deadline: Instant) -> PipelineStats {
        if let Some(scheduler) = &self.scheduler {
            // Drains what was submitted; its callbacks hand the results to the fan-out.
            scheduler.shutdown();
        }
        let dropped_before = self.record_dropped(&self.fanout.stats());
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let task_shared = Arc::clone(self);
        self.runtime.handle().spawn(async move {
            let _ = done.send(task_shared.fanout.shutdown(deadline).await);
        });
        let wait = deadline.saturating_duration_since(Instant::now()) + FANOUT_REPORT_GRACE;
        let fanout = finished
            .recv_timeout(wait)
            .unwrap_or_else(|_| self.fanout.stats());
        let mut stats = self.snapshot(&fanout);
        if Instant::now() >= deadline {
            // The fan-out cancelled what it still held at the deadline and counted it as
            // dropped; those spans were lost to the deadline, not to a backend.
            let cancelled = self.record_dropped(&fanout).saturating_sub(dropped_before);
            let cancelled = cancelled.min(stats.failed);
            stats.failed -= cancelled;
            stats.dropped.shutdown_timeout += cancelled;
        }
        if stats.queued_spans > 0 {
            // Never handed to (or never finished by) the fan-out before the deadline.
            stats.dropped.shutdown_timeout += stats.queued_spans;
            stats.queued_spans = 0;
            stats.queued_bytes = 0;
        }
        let stats = self.final_stats.get_or_init(|| stats).clone();
        self.state.store(CLOSED, Ordering::Release);
        self.runtime.stop(Duration::from_millis(100));
        for worker in std::mem::take(&mut *self.workers.lock()) {
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
        stats
    }

    fn snapshot(&self, fanout: &FanOutStats) -> PipelineStats {
        let c = &self.counters;
        // Outcomes first: everything they count was counted in `accepted` earlier, so reading
        // them first keeps `queued` from going negative under load.
        let (exported, failed) = self.record_outcome(fanout);
        let dropped_processor = c.dropped_processor.load(Ordering::Acquire);
        let export_closed = c.export_closed.load(Ordering::Acquire);
        let processed = c.processed.load(Ordering::Acquire);
        let span_intake = self.spans.stats();
        let request_intake = self.requests.stats();
        let requests_accepted = c.requests_accepted.load(Ordering::Relaxed);
        let accepted = span_intake.emitted + span_intake.queued + requests_accepted;
        let dropped = DroppedSpans {
            // `refused.full` counts every attempt of the retry loop, not spans: our own counter
            // has the spans that were finally dropped.
            intake_full: c.intake_full.load(Ordering::Relaxed)
                + span_intake.dropped_by_reason.newest
                + span_intake.dropped_by_reason.oldest
                + span_intake.refused.timeout
                + span_intake.refused.too_large,
            after_shutdown: span_intake.refused.closed + span_intake.dropped_by_reason.disconnected,
            processor: dropped_processor,
            shutdown_timeout: 0,
        };
        let refused = c.refused.load(Ordering::Relaxed);
        let settled = exported + failed + dropped_processor + export_closed;
        PipelineStats {
            received: accepted + refused + dropped.intake_full + dropped.after_shutdown,
            accepted,
            refused,
            dropped,
            processed,
            exported,
            failed: failed + export_closed,
            retried: fanout.backends.iter().map(|b| b.retries).sum(),
            queued_spans: accepted.saturating_sub(settled),
            queued_bytes: span_intake.queued_bytes + request_intake.queued_bytes,
            backends: fanout
                .backends
                .iter()
                .map(|b| BackendStats {
                    name: b.name.clone(),
                    fallback_of: match &b.role {
                        Role::Primary => None,
                        Role::Fallback { of } => Some(of.clone()),
                    },
                    received: b.received_spans,
                    exported: b.accepted_spans,
                    rejected: b.rejected_spans,
                    failed: b.failed_spans,
                    dropped: b.dropped_spans,
                    retried: b.retries,
                    queued_batches: b.queued,
                    in_flight_batches: b.in_flight,
                })
                .collect(),
        }
    }
}
