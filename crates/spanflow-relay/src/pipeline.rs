//! The relay's sink: a `spanflow::Pipeline` built from `[pipeline]`.

use std::sync::Arc;
use std::time::Duration;

use spanflow::{
    BuildError, FlushError as PipelineFlushError, Pipeline, PipelineConfig, PipelineStats,
    ShutdownError, SubmitError,
};

use crate::sink::{Accepted, Refused, Sink, SinkFlushError, Tracked};
use crate::wire::TraceRequest;

/// A running `spanflow::Pipeline` as the relay's [`Sink`].
#[derive(Debug, Clone)]
pub struct PipelineSink {
    pipeline: Pipeline,
    /// The pipeline has a disk queue: answer a client only once its request is written.
    durable: bool,
}

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An exporter could not be built from its configuration.
    #[error("exporter `{name}`")]
    Exporter {
        /// The exporter's name.
        name: String,
        /// Why.
        source: spanflow::export::ExportBuildError,
    },
    /// The pipeline refused the configuration.
    #[error(transparent)]
    Pipeline(#[from] BuildError),
}

impl PipelineSink {
    /// Builds the pipeline of `config`.
    pub fn build(config: &PipelineConfig) -> Result<Self, PipelineError> {
        Self::build_with(config, Vec::new())
    }

    /// Like [`PipelineSink::build`], adding `extra` code-built primary exporters after the
    /// configured ones (tests and benches use this for in-process sinks).
    pub fn build_with(
        config: &PipelineConfig,
        extra: Vec<(String, Arc<dyn spanflow::export::DynExporter>)>,
    ) -> Result<Self, PipelineError> {
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
            builder = builder.backend(spec.name, spec.role, Arc::new(exporter), spec.backend);
        }
        for (name, exporter) in extra {
            builder = builder.backend(name, spanflow::BackendRole::Primary, exporter, None);
        }
        let pipeline = builder.build()?;
        let durable = matches!(pipeline.config().queue, spanflow::QueueSettings::Disk(_));
        Ok(Self { pipeline, durable })
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
}

fn refused(e: SubmitError) -> Refused {
    match e {
        SubmitError::Full {
            request,
            retry_after,
        } => Refused::Full {
            request,
            retry_after,
        },
        SubmitError::Closed { request } => Refused::Closed { request },
        SubmitError::TooLarge { request } => Refused::TooLarge { request },
    }
}

impl Sink for PipelineSink {
    fn try_submit(&self, request: TraceRequest) -> Result<Accepted, Refused> {
        if self.durable {
            // Acknowledged only once written: the receipt resolves when the batch is durable.
            self.submit_tracked(request).map(Accepted::WhenDurable)
        } else {
            self.pipeline
                .try_submit(request)
                .map(|()| Accepted::Now)
                .map_err(refused)
        }
    }

    fn submit_tracked(&self, request: TraceRequest) -> Result<Tracked, Refused> {
        self.pipeline
            .submit_tracked(request)
            .map(Tracked::new)
            .map_err(refused)
    }

    fn flush(&self, timeout: Duration) -> Result<(), SinkFlushError> {
        self.pipeline.flush(timeout).map_err(|e| match e {
            PipelineFlushError::Undelivered(u) => SinkFlushError::Undelivered(u.to_string()),
            e => SinkFlushError::Timeout(e.to_string()),
        })
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), SinkFlushError> {
        if self.pipeline.is_shut_down() {
            return Ok(());
        }
        self.pipeline
            .shutdown(timeout)
            .map(|_| ())
            .map_err(|e| match e {
                ShutdownError::Undelivered { undelivered, .. } => {
                    SinkFlushError::Undelivered(undelivered.to_string())
                }
                e => SinkFlushError::Timeout(e.to_string()),
            })
    }

    fn stats(&self) -> PipelineStats {
        self.pipeline.stats()
    }
}
