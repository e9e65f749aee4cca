//! The [`Exporter`] trait and its object-safe twin used inside the fan-out.

use std::future::Future;
use std::pin::Pin;

use crate::{ExportBatch, ExportError, ExportOutcome};

/// Sends one encoded batch to one backend: a single attempt, no retry.
///
/// Retry, per-attempt timeouts, queueing and concurrency live in [`crate::FanOut`], so an
/// exporter stays a thin transport. Implementations must be cheap to call concurrently:
/// the fan-out keeps several exports of the same exporter in flight.
///
/// ```
/// use spanflow_export::{ExportBatch, ExportError, ExportOutcome, Exporter};
///
/// struct Counting(std::sync::atomic::AtomicUsize);
/// impl Exporter for Counting {
///     async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
///         self.0.fetch_add(batch.spans, std::sync::atomic::Ordering::Relaxed);
///         Ok(ExportOutcome::all_accepted(batch.spans))
///     }
///     fn name(&self) -> &str { "counting" }
/// }
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let e = Counting(Default::default());
/// let out = rt.block_on(e.export(ExportBatch::new(bytes::Bytes::new(), 3))).unwrap();
/// assert_eq!(out.accepted, 3);
/// ```
pub trait Exporter: Send + Sync + 'static {
    /// Export one batch; `Ok` carries the server's partial-success report.
    fn export(
        &self,
        batch: ExportBatch,
    ) -> impl Future<Output = Result<ExportOutcome, ExportError>> + Send;

    /// A short name for logs and stats.
    fn name(&self) -> &str;

    /// Release resources (flush files); called once by [`crate::FanOut::shutdown`].
    fn shutdown(&self) -> impl Future<Output = Result<(), ExportError>> + Send {
        async { Ok(()) }
    }
}

/// A boxed export future, as returned by [`DynExporter::export_boxed`].
pub type BoxExportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ExportOutcome, ExportError>> + Send + 'a>>;

/// A boxed shutdown future, as returned by [`DynExporter::shutdown_boxed`].
pub type BoxShutdownFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ExportError>> + Send + 'a>>;

/// Object-safe form of [`Exporter`], implemented for every exporter, so backends of
/// different types can live side by side (`Arc<dyn DynExporter>`).
pub trait DynExporter: Send + Sync + 'static {
    /// [`Exporter::export`], boxed.
    fn export_boxed(&self, batch: ExportBatch) -> BoxExportFuture<'_>;
    /// [`Exporter::shutdown`], boxed.
    fn shutdown_boxed(&self) -> BoxShutdownFuture<'_>;
    /// [`Exporter::name`].
    fn dyn_name(&self) -> &str;
}

impl<E: Exporter> DynExporter for E {
    fn export_boxed(&self, batch: ExportBatch) -> BoxExportFuture<'_> {
        Box::pin(self.export(batch))
    }
    fn shutdown_boxed(&self) -> BoxShutdownFuture<'_> {
        Box::pin(self.shutdown())
    }
    fn dyn_name(&self) -> &str {
        self.name()
    }
}
