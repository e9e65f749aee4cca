//! [`SpanProcessor`]: the drop-in replacement for `opentelemetry_sdk`'s `BatchSpanProcessor`.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData};

use crate::builder::PipelineBuilder;
use crate::error::{BuildError, FlushError, ShutdownError};
use crate::pipeline::Pipeline;
use crate::stats::PipelineStats;

/// Default for [`SpanProcessorBuilder::force_flush_timeout`]: the SDK's `force_flush()` takes no
/// timeout, so the processor carries one. Unlike `BatchSpanProcessor`'s hard-coded 5 s it is
/// configurable, and [`SpanProcessor::force_flush_with_timeout`] takes one per call.
pub const DEFAULT_FORCE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// An `opentelemetry_sdk` span processor that hands ended spans to a [`Pipeline`].
///
/// `on_end` costs one push into spanflow-batch's sharded intake (one uncontended per-thread
/// shard lock): no global lock, no encoding, no allocation beyond what the SDK already did. Spans are encoded on the pipeline's encoder thread, straight from
/// `SpanData`, and exported on the runtime the pipeline owns, so the processor works the same
/// with no runtime, inside a tokio `current_thread` runtime or inside a multi-thread runtime,
/// and `force_flush`/`shutdown` never `block_on` anything.
///
/// ```
/// use opentelemetry::trace::{Tracer, TracerProvider};
/// use opentelemetry_sdk::trace::SdkTracerProvider;
/// use spanflow::{NullExporter, Pipeline, SpanProcessor};
///
/// let pipeline = Pipeline::builder().exporter("null", NullExporter::default()).build()?;
/// let provider = SdkTracerProvider::builder()
///     .with_span_processor(SpanProcessor::new(pipeline.clone()))
///     .build();
/// provider.tracer("example").in_span("work", |_cx| {});
/// provider.force_flush()?;
/// assert_eq!(pipeline.stats().exported, 1);
/// provider.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SpanProcessor {
    pipeline: Pipeline,
    force_flush_timeout: Duration,
}

impl SpanProcessor {
    /// A processor feeding `pipeline`, with [`DEFAULT_FORCE_FLUSH_TIMEOUT`].
    pub fn new(pipeline: Pipeline) -> Self {
        Self {
            pipeline,
            force_flush_timeout: DEFAULT_FORCE_FLUSH_TIMEOUT,
        }
    }

    /// A builder that also builds the pipeline.
    pub fn builder() -> SpanProcessorBuilder {
        SpanProcessorBuilder {
            pipeline: Pipeline::builder(),
            force_flush_timeout: DEFAULT_FORCE_FLUSH_TIMEOUT,
        }
    }

    /// The pipeline behind this processor (for `stats()`).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Flushes with the caller's timeout; `Err(OTelSdkError::Timeout(timeout))` when it passes.
    pub fn force_flush_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        flush_result(self.pipeline.flush(timeout))
    }

    /// [`SpanProcessor::force_flush_with_timeout`] for async callers, with the same result: it
    /// awaits [`Pipeline::flush_async`], so the executor thread never blocks (any runtime,
    /// tokio's `current_thread` included).
    ///
    /// ```
    /// use std::time::Duration;
    /// use opentelemetry_sdk::trace::SpanProcessor as _;
    /// use spanflow::{NullExporter, SpanProcessor};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let processor = SpanProcessor::builder()
    ///     .pipeline(|p| p.exporter("null", NullExporter::default()))
    ///     .build()?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// runtime.block_on(async {
    ///     for span in spanflow::otlp::testing::span_batch(5, 1) {
    ///         processor.on_end(span);
    ///     }
    ///     processor.force_flush_async(Duration::from_secs(5)).await?;
    ///     assert_eq!(processor.pipeline().stats().exported, 5);
    ///     processor.shutdown_async(Duration::from_secs(5)).await
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn force_flush_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = OTelSdkResult> + Send + 'static {
        let flushed = self.pipeline.flush_async(timeout);
        async move { flush_result(flushed.await) }
    }

    /// The SDK's `shutdown_with_timeout` for async callers, with the same result: it awaits
    /// [`Pipeline::shutdown_async`], so the executor thread never blocks. (The tracer provider
    /// itself only calls the blocking one: use this when you own the processor's shutdown.)
    pub fn shutdown_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = OTelSdkResult> + Send + 'static {
        let shut_down = self.pipeline.shutdown_async(timeout);
        async move { shutdown_result(shut_down.await) }
    }
}

/// What the SDK is told of a flush.
fn flush_result(result: Result<(), FlushError>) -> OTelSdkResult {
    result.map_err(|err| match err {
        FlushError::Timeout { timeout, .. } => OTelSdkError::Timeout(timeout),
        FlushError::Closed => OTelSdkError::AlreadyShutdown,
        FlushError::OnPipelineThread | FlushError::Undelivered(_) | FlushError::WaiterThread(_) => {
            OTelSdkError::InternalFailure(err.to_string())
        }
    })
}

/// What the SDK is told of a shutdown (problems are logged here: the SDK drops the details).
fn shutdown_result(result: Result<PipelineStats, ShutdownError>) -> OTelSdkResult {
    match result {
        Ok(stats) => {
            tracing::debug!(?stats, "spanflow span processor shut down");
            Ok(())
        }
        Err(ShutdownError::Timeout {
            timeout,
            undelivered,
            ..
        }) => {
            tracing::warn!(%undelivered, "spanflow span processor shutdown timed out");
            Err(OTelSdkError::Timeout(timeout))
        }
        Err(err @ ShutdownError::Undelivered { .. }) => {
            tracing::warn!(error = %err, "spanflow span processor shut down");
            Err(OTelSdkError::InternalFailure(err.to_string()))
        }
        Err(ShutdownError::AlreadyShutDown) => Err(OTelSdkError::AlreadyShutdown),
        Err(err @ (ShutdownError::OnPipelineThread | ShutdownError::WaiterThread(_))) => {
            Err(OTelSdkError::InternalFailure(err.to_string()))
        }
    }
}

impl opentelemetry_sdk::trace::SpanProcessor for SpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // Recording-but-unsampled spans reach processors too; they are not to be exported.
        if span.span_context.is_sampled() {
            self.pipeline.push_span(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.force_flush_with_timeout(self.force_flush_timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        shutdown_result(self.pipeline.shutdown(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.pipeline.set_resource(resource);
    }
}

/// Builds a [`SpanProcessor`] and its [`Pipeline`] in one go.
///
/// ```
/// use std::time::Duration;
/// use spanflow::{NullExporter, SpanProcessor};
/// let processor = SpanProcessor::builder()
///     .pipeline(|p| p.exporter("null", NullExporter::default()).max_batch_spans(512))
///     .force_flush_timeout(Duration::from_secs(2))
///     .build()?;
/// # drop(processor);
/// # Ok::<(), spanflow::BuildError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct SpanProcessorBuilder {
    pipeline: PipelineBuilder,
    force_flush_timeout: Duration,
}

impl SpanProcessorBuilder {
    /// Configures the pipeline.
    pub fn pipeline(mut self, configure: impl FnOnce(PipelineBuilder) -> PipelineBuilder) -> Self {
        self.pipeline = configure(self.pipeline);
        self
    }

    /// Reports the pipeline's own health through `meter` (see [`PipelineBuilder::meter`]).
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.pipeline = self.pipeline.meter(meter);
        self
    }

    /// Attributes added to every self-metric observation (see
    /// [`PipelineBuilder::meter_attributes`]).
    pub fn meter_attributes(
        mut self,
        attributes: impl IntoIterator<Item = opentelemetry::KeyValue>,
    ) -> Self {
        self.pipeline = self.pipeline.meter_attributes(attributes);
        self
    }

    /// The timeout `force_flush()` (which takes none) uses.
    pub fn force_flush_timeout(mut self, timeout: Duration) -> Self {
        self.force_flush_timeout = timeout;
        self
    }

    /// Builds the pipeline and the processor.
    pub fn build(self) -> Result<SpanProcessor, BuildError> {
        let pipeline = self.pipeline.build()?;
        Ok(SpanProcessor {
            pipeline,
            force_flush_timeout: self.force_flush_timeout,
        })
    }
}
