//! The errors a [`crate::Pipeline`] returns, one variant per thing a caller can act on.

use std::time::Duration;

use spanflow_otlp::TraceRequest;

use crate::stats::{PipelineStats, Undelivered};

/// Why [`crate::Pipeline::try_submit`] refused a request; the request is handed back untouched.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The memory budget is used up; try again after about `retry_after` (a relay answers its
    /// client with "unavailable, retry" and this hint).
    #[error("pipeline memory budget is full, retry after {retry_after:?}")]
    Full {
        /// The refused request.
        request: TraceRequest,
        /// A hint for when room is likely: one batch age.
        retry_after: Duration,
    },
    /// The pipeline is shut down.
    #[error("pipeline is shut down")]
    Closed {
        /// The refused request.
        request: TraceRequest,
    },
    /// The request alone is larger than the whole memory budget: it can never be accepted.
    #[error("request is larger than the pipeline's whole memory budget")]
    TooLarge {
        /// The refused request.
        request: TraceRequest,
    },
}

impl SubmitError {
    /// Takes the refused request back.
    pub fn into_request(self) -> TraceRequest {
        match self {
            SubmitError::Full { request, .. }
            | SubmitError::Closed { request }
            | SubmitError::TooLarge { request } => request,
        }
    }
}

/// Why [`crate::Pipeline::flush`] returned before everything was settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// The timeout passed with spans still queued or in flight; they are still being worked on.
    #[error("flush timed out after {timeout:?} with {pending_spans} spans pending")]
    Timeout {
        /// The timeout the caller gave.
        timeout: Duration,
        /// Spans accepted before the flush that had not settled.
        pending_spans: u64,
    },
    /// Called from one of the pipeline's own threads (for example inside an exporter), where
    /// waiting for the pipeline would wait for itself.
    #[error("flush called from a pipeline thread, which would deadlock")]
    OnPipelineThread,
    /// The pipeline is shut down; nothing is left to flush.
    #[error("pipeline is shut down")]
    Closed,
    /// Everything settled in time, but not everything was delivered: spans failed, were
    /// dropped or are unconfirmed (or SDK spans were lost at the intake) while the flush ran.
    #[error("flush finished but spans were not delivered: {0}")]
    Undelivered(Undelivered),
    /// [`crate::Pipeline::flush_async`] could not start the thread its wait runs on (the
    /// system is out of threads); nothing was flushed. The message says why.
    #[error("flush did not start: {0}")]
    WaiterThread(String),
}

/// Why [`crate::Pipeline::shutdown`] did not finish cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShutdownError {
    /// The deadline passed first: what was not delivered by then is settled as
    /// `dropped.shutdown_deadline` (never sent) or `unconfirmed` (in flight) in the final books
    /// carried here.
    #[error("shutdown timed out after {timeout:?}; not delivered: {undelivered}")]
    Timeout {
        /// The timeout the caller gave.
        timeout: Duration,
        /// What was not delivered while shutdown ran.
        undelivered: Undelivered,
        /// The final books.
        stats: Box<PipelineStats>,
    },
    /// Everything settled before the deadline, but some spans failed, were dropped or are
    /// unconfirmed while shutdown ran.
    #[error("shutdown finished but spans were not delivered: {undelivered}")]
    Undelivered {
        /// What was not delivered while shutdown ran.
        undelivered: Undelivered,
        /// The final books.
        stats: Box<PipelineStats>,
    },
    /// Called from one of the pipeline's own threads.
    #[error("shutdown called from a pipeline thread, which would deadlock")]
    OnPipelineThread,
    /// Already shut down (by this or another handle).
    #[error("pipeline was already shut down")]
    AlreadyShutDown,
    /// [`crate::Pipeline::shutdown_async`] could not start the thread its shutdown runs on (the
    /// system is out of threads); shutdown did not begin and may be tried again. The message
    /// says why.
    #[error("shutdown did not start: {0}")]
    WaiterThread(String),
}

impl ShutdownError {
    /// The final books, when shutdown got as far as producing them.
    pub fn stats(&self) -> Option<&PipelineStats> {
        match self {
            ShutdownError::Timeout { stats, .. } | ShutdownError::Undelivered { stats, .. } => {
                Some(stats)
            }
            ShutdownError::OnPipelineThread
            | ShutdownError::AlreadyShutDown
            | ShutdownError::WaiterThread(_) => None,
        }
    }
}

/// Why [`crate::PipelineBuilder::build`] failed. Each variant keeps the error of the layer that
/// refused as its [`source`](std::error::Error::source), so a caller can match on it and a
/// logger that prints the chain prints every cause once.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A batcher refused its settings.
    #[error("invalid batch settings")]
    Batch(#[source] spanflow_batch::BatcherBuildError),
    /// The export runtime or a worker thread could not be started.
    #[error("cannot start pipeline threads")]
    Threads(#[source] std::io::Error),
    /// An exporter could not be built from its configuration.
    #[error("cannot build exporter `{name}`")]
    Exporter {
        /// The exporter's name in the configuration.
        name: String,
        /// Why.
        #[source]
        source: spanflow_export::ExportBuildError,
    },
    /// The fan-out over the exporters could not be built.
    #[error("cannot build the export fan-out")]
    FanOut(#[source] spanflow_export::ExportBuildError),
    /// A processor, or the scheduler that runs them, could not be built.
    #[error("cannot build processors")]
    Process(#[source] spanflow_process::ProcessorConfigError),
    /// An OpenTelemetry variable (`OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`, `OTEL_TRACES_EXPORTER`,
    /// `OTEL_SDK_DISABLED`) has a bad value. The message is the one parser's
    /// ([`spanflow_export::env`]), the same the relay gives for the same value.
    #[error(transparent)]
    Environment(#[from] spanflow_export::env::EnvError),
    /// The disk queue could not be opened (bad settings, locked by another process, I/O).
    #[error("cannot open the disk queue")]
    Queue(#[source] spanflow_spool::OpenError),
}
