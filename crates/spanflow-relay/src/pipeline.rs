//! The relay's sink: a `spanflow::Pipeline` built from `[pipeline]`, with every backend wrapped
//! so the relay can report export latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spanflow::export::{ExportBatch, ExportError, ExportOutcome, Exporter};
use spanflow::{BuildError, Pipeline, PipelineConfig, PipelineStats, SubmitError};

use crate::sink::{FlushError, LatencySnapshot, Refused, Sink, SinkStats};
use crate::wire::TraceRequest;

/// Upper bounds (seconds) of the export latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Export latency, as a fixed-bucket histogram of relaxed atomics (independent counters read
/// only for reporting).
#[derive(Debug, Default)]
pub struct ExportLatency {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl ExportLatency {
    fn record(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The histogram now (cumulative buckets, as Prometheus wants them).
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: LATENCY_BUCKETS
                .iter()
                .zip(&self.buckets)
                .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// An exporter that times every export of the one it wraps.
struct Timed<E> {
    inner: E,
    latency: Arc<ExportLatency>,
}

impl<E: Exporter> Exporter for Timed<E> {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let started = Instant::now();
        let result = self.inner.export(batch).await;
        self.latency.record(started.elapsed());
        result
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn shutdown(&self) -> Result<(), ExportError> {
        self.inner.shutdown().await
    }
}

/// A running `spanflow::Pipeline` as the relay's [`Sink`].
#[derive(Debug, Clone)]
pub struct PipelineSink {
    pipeline: Pipeline,
    latency: Arc<ExportLatency>,
}

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An exporter could not be built from its configuration.
    #[error("exporter `{name}`: {source}")]
    Exporter {
        /// The exporter's name.
        name: String,
        /// Why.
        source: spanflow::export::BuildError,
    },
    /// The pipeline refused the configuration.
    #[error(transparent)]
    Pipeline(#[from] BuildError),
}

impl PipelineSink {
    /// Builds the pipeline of `config`: the configured exporters are built here and added in
    /// order (timed), so the facade sees the same backends, roles and settings.
    pub fn build(config: &PipelineConfig) -> Result<Self, PipelineError> {
        Self::build_with(config, Vec::new())
    }

    /// Like [`PipelineSink::build`], adding `extra` code-built primary exporters after the
    /// configured ones (tests and benches use this for in-process sinks).
    pub fn build_with(
        config: &PipelineConfig,
        extra: Vec<(String, Arc<dyn spanflow::export::DynExporter>)>,
    ) -> Result<Self, PipelineError> {
        let latency = Arc::new(ExportLatency::default());
        let mut config = config.clone();
        let specs = std::mem::take(&mut config.exporters);
        let mut builder = Pipeline::builder().config(config);
        for spec in specs {
            let exporter = spec
                .sink
                .build()
                .map_err(|source| PipelineError::Exporter {
                    name: spec.name.clone(),
                    source,
                })?;
            let timed = Timed {
                inner: exporter,
                latency: latency.clone(),
            };
            builder = builder.backend(spec.name, spec.role, Arc::new(timed), spec.backend);
        }
        for (name, exporter) in extra {
            let timed = Timed {
                inner: DynAdapter(exporter),
                latency: latency.clone(),
            };
            builder = builder.backend(name, spanflow::BackendRole::Primary, Arc::new(timed), None);
        }
        Ok(Self {
            pipeline: builder.build()?,
            latency,
        })
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
}

/// Lets an `Arc<dyn DynExporter>` be wrapped like any [`Exporter`].
struct DynAdapter(Arc<dyn spanflow::export::DynExporter>);

impl Exporter for DynAdapter {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        self.0.export_boxed(batch).await
    }
    fn name(&self) -> &str {
        self.0.dyn_name()
    }
    async fn shutdown(&self) -> Result<(), ExportError> {
        self.0.shutdown_boxed().await
    }
}

/// The relay's view of the facade's counters.
pub fn sink_stats(
    stats: &PipelineStats,
    budget: usize,
    latency: Option<LatencySnapshot>,
) -> SinkStats {
    let d = &stats.dropped;
    let mut dropped = vec![
        ("intake_full".to_owned(), d.intake_full),
        ("after_shutdown".to_owned(), d.after_shutdown),
        ("processor".to_owned(), d.processor),
        ("shutdown_timeout".to_owned(), d.shutdown_timeout),
    ];
    for b in &stats.backends {
        dropped.push((format!("backend_queue:{}", b.name), b.dropped));
    }
    SinkStats {
        accepted_spans: stats.accepted,
        refused_spans: stats.refused,
        dropped_spans: dropped,
        exported_spans: stats.exported,
        failed_spans: stats.failed,
        retried: stats.retried,
        queued_spans: stats.queued_spans,
        queued_bytes: stats.queued_bytes,
        budget_bytes: budget as u64,
        export_latency: latency,
    }
}

impl Sink for PipelineSink {
    fn try_submit(&self, request: TraceRequest) -> Result<(), Refused> {
        self.pipeline.try_submit(request).map_err(|e| match e {
            SubmitError::Full {
                request,
                retry_after,
            } => Refused::Full {
                request,
                retry_after,
            },
            SubmitError::Closed { request } => Refused::Closed { request },
        })
    }

    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        self.pipeline
            .flush(timeout)
            .map_err(|e| FlushError(e.to_string()))
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.pipeline.is_shut_down() {
            return Ok(());
        }
        self.pipeline
            .shutdown(timeout)
            .map(|_| ())
            .map_err(|e| FlushError(e.to_string()))
    }

    fn stats(&self) -> SinkStats {
        sink_stats(
            &self.pipeline.stats(),
            self.pipeline.config().memory.budget_bytes,
            Some(self.latency.snapshot()),
        )
    }
}
