//! The errors a [`crate::Pipeline`] returns, one variant per thing a caller can act on.

use std::time::Duration;

use spanflow_otlp::TraceRequest;

use crate::stats::PipelineStats;

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
}

impl SubmitError {
    /// Takes the refused request back.
    pub fn into_request(self) -> TraceRequest {
        match self {
            SubmitError::Full { request, .. } | SubmitError::Closed { request } => request,
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
}

/// Why [`crate::Pipeline::shutdown`] did not finish cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShutdownError {
    /// The deadline passed first; what was still queued is counted as dropped
    /// (`dropped.shutdown_timeout`) in the final stats carried here.
    #[error("shutdown timed out after {timeout:?}, {} spans dropped", stats.dropped.shutdown_timeout)]
    Timeout {
        /// The timeout the caller gave.
        timeout: Duration,
        /// The final counters.
        stats: Box<PipelineStats>,
    },
    /// Called from one of the pipeline's own threads.
    #[error("shutdown called from a pipeline thread, which would deadlock")]
    OnPipelineThread,
    /// Already shut down (by this or another handle).
    #[error("pipeline was already shut down")]
    AlreadyShutDown,
}

/// Why [`crate::PipelineBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The export runtime or a worker thread could not be started.
    #[error("cannot start pipeline threads")]
    Threads(#[source] std::io::Error),
    /// An exporter or the fan-out could not be built.
    #[error("cannot build exporters: {0}")]
    Export(String),
    /// A processor could not be built.
    #[error("cannot build processors: {0}")]
    Process(String),
}
