//! [`PipelineBuilder`]: checks a configuration, builds the exporters, the intakes sharing one
//! memory budget, the fan-out and the worker threads.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use spanflow_batch::{Batcher, Budget, DropSite, Policy};
use spanflow_export::env::{EnvError, OtelEnv};
use spanflow_export::{BackendConfig, DynExporter, Exporter, FanOut, QueuePolicy, RetryConfig};
use spanflow_process::{Chain, Scheduler};
use spanflow_spool::Spool;

use crate::NullExporter;
use crate::books::Books;
use crate::config::{
    BackendRole, ExporterSpec, FreeSpansOn, OverflowPolicy, PipelineConfig, QueueSettings,
};
use crate::encode::estimate_span_bytes;
use crate::error::BuildError;
use crate::pipeline::{Owner, Pipeline};
use crate::runtime::{OwnedRuntime, lower_current_thread_priority};
use crate::self_metrics::SelfMetrics;
use crate::workers::{Parts, Shared, Submitted, Work};

/// How the builder reads the OpenTelemetry environment.
type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

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
    /// Where the OpenTelemetry variables are read; `None`: the process environment.
    env: Option<Lookup>,
    /// The first bad `OTEL_BSP_*` value met by `from_env`, returned by `build`.
    env_error: Option<EnvError>,
    /// Where the pipeline reports its own health (see [`PipelineBuilder::meter`]).
    meter: Option<Meter>,
    /// Added to every self-metric observation ([`PipelineBuilder::meter_attributes`]).
    meter_attributes: Vec<KeyValue>,
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

    /// Applies the `OTEL_BSP_*` variables of the process on top of the configuration so far
    /// (see [`PipelineConfig::apply_env`] for how they map). A bad value is not ignored:
    /// [`build`](Self::build) returns it as [`BuildError::Environment`], naming the variable.
    ///
    /// Exporter variables need no call: they are read whenever no exporter is configured (see
    /// [`build`](Self::build)).
    pub fn from_env(self) -> Self {
        self.from_env_with(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading every OpenTelemetry variable (the
    /// `OTEL_BSP_*` ones now, the exporter ones in [`build`](Self::build)) through `get`
    /// instead of the process environment: for tests, or for a program that keeps its
    /// settings elsewhere.
    ///
    /// ```
    /// use spanflow::{BuildError, Pipeline};
    /// let err = Pipeline::builder()
    ///     .from_env_with(|name| (name == "OTEL_BSP_SCHEDULE_DELAY").then(|| "soon".to_owned()))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, BuildError::Environment(_)));
    /// assert!(err.to_string().contains("OTEL_BSP_SCHEDULE_DELAY"));
    /// ```
    pub fn from_env_with(
        mut self,
        get: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        if let Err(err) = self.config.apply_env(&get) {
            self.env_error.get_or_insert(err);
        }
        self.env = Some(Arc::new(get));
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

    /// Reports the pipeline's own health through `meter`, into your metrics backend: queued
    /// spans and bytes, spans exported, failed, dropped and refused (by reason), and per
    /// backend retries and export attempts and time (see the crate's README for the list).
    ///
    /// The instruments are asynchronous: their callbacks read the same books as
    /// [`Pipeline::stats`] when your metric reader collects, so spans pay nothing for them.
    /// They hold no strong reference to the pipeline: a meter provider that outlives it keeps
    /// nothing alive and, once it is gone, reports nothing for it. When several pipelines
    /// report to one provider, tell their series apart with
    /// [`meter_attributes`](Self::meter_attributes) or give each its own meter (a different
    /// scope name).
    ///
    /// ```
    /// use std::time::Duration;
    /// use opentelemetry::metrics::MeterProvider as _;
    /// use opentelemetry_sdk::metrics::SdkMeterProvider;
    /// use spanflow::{NullExporter, Pipeline};
    ///
    /// // Your application's provider, with its own reader and exporter.
    /// let meter_provider = SdkMeterProvider::builder().build();
    /// let pipeline = Pipeline::builder()
    ///     .exporter("backend", NullExporter::default())
    ///     .meter(meter_provider.meter("spanflow"))
    ///     .build()?;
    /// pipeline.shutdown(Duration::from_secs(5))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Attributes added to every observation of the self-metrics ([`meter`](Self::meter)),
    /// after the instrument's own (`spanflow.reason`, `spanflow.backend`): what tells two
    /// pipelines on one meter apart.
    ///
    /// ```
    /// use std::time::Duration;
    /// use opentelemetry::KeyValue;
    /// use opentelemetry::metrics::MeterProvider as _;
    /// use opentelemetry_sdk::metrics::SdkMeterProvider;
    /// use spanflow::{NullExporter, Pipeline};
    ///
    /// let meter = SdkMeterProvider::builder().build().meter("spanflow");
    /// let pipelines = ["checkout", "audit"].map(|name| {
    ///     Pipeline::builder()
    ///         .exporter("backend", NullExporter::default())
    ///         .meter(meter.clone())
    ///         .meter_attributes([KeyValue::new("spanflow.pipeline", name)])
    ///         .build()
    /// });
    /// for pipeline in pipelines {
    ///     pipeline?.shutdown(Duration::from_secs(5))?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn meter_attributes(mut self, attributes: impl IntoIterator<Item = KeyValue>) -> Self {
        self.meter_attributes.extend(attributes);
        self
    }

    /// The backend settings derived from `[export]`, for backends that bring none.
    fn default_backend_config(config: &PipelineConfig) -> BackendConfig {
        BackendConfig {
            queue: config.export.queue,
            concurrency: config.export.concurrency,
            timeout: config.export.timeout(),
            // Never drops: queued batches hold budget credits, so a slow or dead backend turns
            // into backpressure at the intakes.
            policy: QueuePolicy::Block,
            retry: RetryConfig {
                // A backend outage is retried for as long as the Collector retries (5 min by
                // default), quickly at first; flush and shutdown cut it short at their deadline.
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                ..RetryConfig::default()
            },
        }
    }

    /// Checks the configuration, starts the export runtime and the worker threads.
    ///
    /// Backends come from the configuration, then from code. When there are none, the
    /// OpenTelemetry environment chooses them, as opentelemetry-otlp does
    /// ([`spanflow_export::env::OtelEnv`], read from the process or
    /// [`from_env_with`](Self::from_env_with)'s lookup):
    ///
    /// - by default one OTLP backend named `otlp`: gRPC to `http://localhost:4317`, or with
    ///   `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` (`http/json`) to
    ///   `http://localhost:4318/v1/traces`, each overridden by the `OTEL_EXPORTER_OTLP_*`
    ///   variables; `OTEL_TRACES_EXPORTER=console` adds (or instead gives) OTLP/JSON lines on
    ///   stdout;
    /// - with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`, none: the pipeline
    ///   accepts spans and discards them without exporting, counted as `dropped.disabled` in
    ///   [`crate::PipelineStats`] (a disabled service still shows how many spans it made).
    ///
    /// Exporters given in code or configuration always win: the environment is not consulted
    /// for them (as with OpenTelemetry's autoconfiguration, `OTEL_SDK_DISABLED` disables only
    /// what the environment would configure). A bad value of any variable read is
    /// [`BuildError::Environment`], naming it.
    ///
    /// ```
    /// use spanflow::Pipeline;
    /// let pipeline = Pipeline::builder()
    ///     .from_env_with(|name| (name == "OTEL_SDK_DISABLED").then(|| "true".to_owned()))
    ///     .build()?;
    /// assert_eq!(pipeline.stats().backends[0].name, "disabled");
    /// # pipeline.shutdown(std::time::Duration::from_secs(5))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<Pipeline, BuildError> {
        if let Some(err) = self.env_error {
            return Err(err.into());
        }
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
            let exporter = sink.build().map_err(|source| BuildError::Exporter {
                name: name.clone(),
                source,
            })?;
            backends.push(CodeBackend {
                name: name.clone(),
                role: *role,
                exporter: Arc::new(exporter),
                config: backend.clone(),
            });
        }
        backends.extend(self.backends);
        let mut export_disabled = false;
        if backends.is_empty() {
            let env = match &self.env {
                Some(get) => OtelEnv::from_env(|name| get(name)),
                None => OtelEnv::from_process_env(),
            }?;
            export_disabled = env.export_disabled();
            if export_disabled {
                // The fan-out needs a primary; with export disabled it is never given a batch.
                backends.push(CodeBackend {
                    name: "disabled".into(),
                    role: BackendRole::Primary,
                    exporter: Arc::new(NullExporter::default()),
                    config: None,
                });
            }
            for (name, sink) in env.sinks() {
                let exporter = sink.build().map_err(|source| BuildError::Exporter {
                    name: name.clone(),
                    source,
                })?;
                backends.push(CodeBackend {
                    name,
                    role: BackendRole::Primary,
                    exporter: Arc::new(exporter),
                    config: None,
                });
            }
        }
        if !backends.iter().any(|b| b.role == BackendRole::Primary) {
            return Err(BuildError::Config(
                "no primary exporter configured (a fallback backs the primary before it)".into(),
            ));
        }

        let chain = match (self.chain, config.processors.is_empty()) {
            (Some(chain), _) => Some(Arc::new(chain)),
            (None, false) => Some(Arc::new(
                Chain::from_config(&config.processors).map_err(BuildError::Process)?,
            )),
            (None, true) => None,
        };
        let scheduler = match (&chain, config.processing.threads) {
            (Some(chain), threads) if threads > 0 => {
                Some(Scheduler::new(Arc::clone(chain), threads).map_err(BuildError::Process)?)
            }
            _ => None,
        };

        let budget = Budget::new(config.memory.budget_bytes as u64);
        // The batcher cuts by count, bytes and age, never because the budget is full: a batch
        // must therefore fit the budget several times over, or a small budget would make every
        // batch wait for its age.
        let batch_bytes = (config.batch.max_bytes as u64)
            .min(budget.limit_bytes() / 4)
            .max(1);
        let (spans, span_receiver) = Batcher::<SpanData>::builder()
            .max_items(config.batch.max_spans)
            .max_bytes(batch_bytes)
            .max_age(config.batch.max_age())
            .weigh(|span: &SpanData| estimate_span_bytes(span) as u64)
            .drop_site(match config.memory.free_spans_on {
                FreeSpansOn::Application => DropSite::Producers,
                FreeSpansOn::Pipeline => DropSite::Consumer,
            })
            .budget(Arc::clone(&budget))
            // Only `try_send` is used; the overflow policy is applied in `wait_for_room`.
            .policy(Policy::DropNewest)
            .build()
            .map_err(BuildError::Batch)?;
        // Submitted requests are merged only with what already queued up: no added latency.
        let (requests, request_receiver) = Batcher::<Submitted>::builder()
            .max_items(64)
            .max_bytes(batch_bytes)
            .max_age(Duration::ZERO)
            .weigh(|submitted: &Submitted| submitted.request.encoded_len() as u64)
            .budget(Arc::clone(&budget))
            .policy(Policy::DropNewest)
            .build()
            .map_err(BuildError::Batch)?;

        let runtime = OwnedRuntime::start(
            config.export.resolved_runtime_threads(),
            config.processing.nice,
        )
        .map_err(BuildError::Threads)?;
        let default_backend = Self::default_backend_config(&config);
        let backend_names: Vec<(String, BackendRole)> =
            backends.iter().map(|b| (b.name.clone(), b.role)).collect();
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
        if let (QueueSettings::Disk(spool_config), false) = (&config.queue, export_disabled) {
            let primaries: Vec<&str> = backend_names
                .iter()
                .filter(|(_, role)| *role == BackendRole::Primary)
                .map(|(name, _)| name.as_str())
                .collect();
            let spool = Spool::open(spool_config.clone(), &primaries).map_err(BuildError::Queue)?;
            let report = spool.recovery();
            tracing::info!(
                dir = %spool_config.dir.display(),
                records = report.records,
                truncated_bytes = report.bytes_truncated(),
                corrupt = report.corrupt_records(),
                "disk queue opened"
            );
            fanout = fanout.spool(Arc::new(spool));
        }
        let fanout = fanout.build(runtime.handle()).map_err(BuildError::FanOut)?;

        let shared = Arc::new(Shared::new(Parts {
            config,
            spans,
            requests,
            resource: self
                .resource
                .unwrap_or_else(|| Resource::builder_empty().build()),
            chain,
            scheduler,
            fanout,
            runtime,
            books: Books::new(budget),
            export_disabled,
        }));
        if let Some(meter) = &self.meter {
            // Set once, here, before any handle exists: `set` cannot find it taken.
            let _ = shared.self_metrics.set(SelfMetrics::register(
                meter,
                &self.meter_attributes,
                &shared,
            ));
        }
        let mut workers = Vec::with_capacity(2);
        for (name, work) in [
            ("spanflow-encode", Work::Spans(span_receiver)),
            ("spanflow-submit", Work::Requests(request_receiver)),
        ] {
            shared.live_workers.fetch_add(1, Ordering::AcqRel);
            let worker_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    worker_shared.runtime.mark_current_thread();
                    lower_current_thread_priority(worker_shared.config.processing.nice);
                    worker_shared.run(work);
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
        Ok(Pipeline::from_owner(Owner::new(shared)))
    }
}
