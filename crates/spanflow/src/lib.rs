//! spanflow: fast, lossless OpenTelemetry span pipelines.
//!
//! This is the facade, the top library layer: it re-exports the layers below
//! ([`lockfree`], [`batch`], [`otlp`], [`process`], [`export`]) and adds only their composition —
//! a [`Pipeline`] (intake → encode once → processors → exporters, with exact accounting) and a
//! drop-in [`SpanProcessor`] for `opentelemetry_sdk`. The relay binary sits above it.
//!
//! ```
//! use std::time::Duration;
//! use opentelemetry::trace::{Tracer, TracerProvider};
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//! use spanflow::{NullExporter, SpanProcessor};
//!
//! // `NullExporter` keeps this example off the network. Real services give no exporter (OTLP as
//! // the environment says) or a `spanflow::export` one: see the crate's README.md.
//! let processor = SpanProcessor::builder()
//!     .pipeline(|p| p.exporter("backend", NullExporter::default()))
//!     .build()?;
//! let pipeline = processor.pipeline().clone();
//! let provider = SdkTracerProvider::builder().with_span_processor(processor).build();
//! let tracer = provider.tracer("checkout");
//! for _ in 0..100 {
//!     tracer.in_span("charge", |_cx| {});
//! }
//! provider.shutdown_with_timeout(Duration::from_secs(5))?;
//! let stats = pipeline.stats();
//! assert_eq!((stats.accepted, stats.exported, stats.unaccounted()), (100, 100, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With no exporter given, a pipeline exports OTLP as the OpenTelemetry environment says
//! (`OTEL_EXPORTER_OTLP_*`, default gRPC to `http://localhost:4317`), or discards and counts
//! spans under `OTEL_SDK_DISABLED=true` / `OTEL_TRACES_EXPORTER=none`; `from_env()` applies the
//! `OTEL_BSP_*` variables. One parser reads them all ([`export::env`], shared with the relay), and
//! a bad value is a [`BuildError::Environment`] naming the variable (see
//! [`PipelineBuilder::build`] and [`PipelineConfig::apply_env`]).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

/// The README's Rust blocks, compiled and run as doctests so the page users follow stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod books;
mod builder;
mod config;
mod encode;
mod error;
mod pipeline;
mod processor;
mod runtime;
mod self_metrics;
mod stats;
mod workers;

pub use spanflow_batch as batch;
pub use spanflow_export as export;
pub use spanflow_lockfree as lockfree;
pub use spanflow_otlp as otlp;
pub use spanflow_process as process;
pub use spanflow_spool as spool;

pub use builder::PipelineBuilder;
pub use config::{
    AVERAGE_SPAN_BYTES, BackendRole, BatchSettings, ExportSettings, ExporterSpec, FreeSpansOn,
    MemorySettings, OTEL_BSP_EXPORT_TIMEOUT, OTEL_BSP_MAX_CONCURRENT_EXPORTS,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY,
    OverflowPolicy, PipelineConfig, ProcessingSettings, QueueSettings,
};
pub use error::{BuildError, FlushError, ShutdownError, SubmitError};
pub use pipeline::{Pipeline, Receipt};
pub use processor::{DEFAULT_FORCE_FLUSH_TIMEOUT, SpanProcessor, SpanProcessorBuilder};
pub use stats::{BackendStats, DroppedSpans, PipelineStats, RefusedSpans, Undelivered};
pub use workers::RequestFate;

/// An exporter that accepts every batch and sends it nowhere: for benchmarks, tests and dry runs.
///
/// It counts what it was given, so a test can check that every span arrived.
///
/// ```
/// use spanflow::NullExporter;
/// let exporter = NullExporter::default();
/// assert_eq!(exporter.spans(), 0);
/// ```
#[derive(Debug, Default, Clone)]
pub struct NullExporter {
    counts: std::sync::Arc<NullCounts>,
}

#[derive(Debug, Default)]
struct NullCounts {
    spans: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicU64,
}

impl NullExporter {
    /// Spans exported so far (by this exporter and its clones).
    pub fn spans(&self) -> u64 {
        self.counts.spans.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests exported so far.
    pub fn requests(&self) -> u64 {
        self.counts
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl export::Exporter for NullExporter {
    async fn export(
        &self,
        batch: export::ExportBatch,
    ) -> Result<export::ExportOutcome, export::ExportError> {
        self.counts
            .spans
            .fetch_add(batch.spans as u64, std::sync::atomic::Ordering::Relaxed);
        self.counts
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(export::ExportOutcome::all_accepted(batch.spans))
    }

    fn name(&self) -> &str {
        "null"
    }
}
