//! Which exporter, from configuration: [`SinkConfig`] (tagged by `type`), the fan-out's
//! [`FanOutConfig`] of backends and fallbacks, and [`AnyExporter`], the exporter it builds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ExporterConfig;
use crate::error::ExportBuildError;
#[cfg(feature = "json")]
use crate::file::{FileExporter, StdoutExporter};
#[cfg(feature = "grpc")]
use crate::grpc::OtlpGrpcExporter;
#[cfg(feature = "http")]
use crate::http::OtlpHttpExporter;
use crate::{BackendConfig, ExportBatch, ExportError, ExportOutcome, Exporter, FanOut};

/// Configuration of any exporter this crate provides, tagged by `type` (for TOML files).
///
/// ```
/// use spanflow_export::SinkConfig;
/// let c: SinkConfig = serde_json::from_str(r#"{"type": "file", "path": "spans.jsonl"}"#).unwrap();
/// assert!(matches!(c, SinkConfig::File(_)));
/// assert!(serde_json::from_str::<SinkConfig>(r#"{"type": "otlp", "endpont": "x"}"#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    /// An OTLP/gRPC or OTLP/HTTP backend.
    Otlp(ExporterConfig),
    /// OTLP/JSON lines in a size-rotated file.
    File(FileConfig),
    /// OTLP/JSON lines on standard output.
    Stdout,
    /// OTLP records on a Kafka topic (cargo feature `kafka`).
    #[cfg(feature = "kafka")]
    Kafka(crate::kafka::KafkaConfig),
}

impl SinkConfig {
    /// Build the exporter.
    pub fn build(&self) -> Result<AnyExporter, ExportBuildError> {
        match self {
            SinkConfig::Otlp(c) => c.build(),
            #[cfg(feature = "json")]
            SinkConfig::File(c) => Ok(AnyExporter::File(
                FileExporter::builder(&c.path)
                    .max_bytes(c.max_bytes)
                    .max_files(c.max_files)
                    .build()?,
            )),
            #[cfg(feature = "json")]
            SinkConfig::Stdout => Ok(AnyExporter::Stdout(StdoutExporter::new())),
            #[cfg(not(feature = "json"))]
            SinkConfig::File(_) => Err(ExportBuildError::feature_disabled(
                "the file exporter",
                "json",
            )),
            #[cfg(not(feature = "json"))]
            SinkConfig::Stdout => Err(ExportBuildError::feature_disabled(
                "the stdout exporter",
                "json",
            )),
            #[cfg(feature = "kafka")]
            SinkConfig::Kafka(c) => Ok(AnyExporter::Kafka(Box::new(
                crate::kafka::KafkaExporter::from_config(c)?,
            ))),
        }
    }
}

/// One backend of a [`FanOutConfig`]: what to export to, how to deliver, and an optional
/// fallback for the batches that finally fail there.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Unique backend name (stats, health, logs).
    pub name: String,
    /// The exporter.
    pub sink: SinkConfig,
    /// Queue, concurrency, overflow policy, retry and timeout.
    #[serde(default)]
    pub delivery: BackendConfig,
    /// Where batches go that finally fail on (or overflow) this backend.
    #[serde(default)]
    pub fallback: Option<FallbackSpec>,
}

/// The fallback of a [`BackendSpec`].
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSpec {
    /// Unique backend name.
    pub name: String,
    /// The exporter.
    pub sink: SinkConfig,
    /// Queue, concurrency, overflow policy, retry and timeout.
    #[serde(default)]
    pub delivery: BackendConfig,
}

/// A whole fan-out from configuration (for example the relay's TOML file).
///
/// ```
/// use spanflow_export::FanOutConfig;
/// let config: FanOutConfig = serde_json::from_str(r#"{"backends": [
///     {"name": "collector",
///      "sink": {"type": "otlp", "protocol": "grpc", "endpoint": "http://127.0.0.1:4317"},
///      "delivery": {"queue": 512, "concurrency": 8},
///      "fallback": {"name": "spool", "sink": {"type": "stdout"}}}
/// ]}"#).unwrap();
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let fan = config.build(rt.handle()).unwrap();
/// assert_eq!(fan.stats().backends.len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutConfig {
    /// The primary backends, each with its optional fallback.
    pub backends: Vec<BackendSpec>,
}

impl FanOutConfig {
    /// Build every exporter and start the fan-out on `handle`.
    pub fn build(&self, handle: &tokio::runtime::Handle) -> Result<FanOut, ExportBuildError> {
        let mut builder = FanOut::builder();
        for b in &self.backends {
            builder = builder.backend(b.name.clone(), b.sink.build()?, b.delivery.clone());
            if let Some(f) = &b.fallback {
                builder = builder.fallback(f.name.clone(), f.sink.build()?, f.delivery.clone());
            }
        }
        builder.build(handle)
    }
}

/// Configuration of a `FileExporter` (cargo feature `json`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file written; rotated files get `.1`, `.2`, … appended.
    pub path: PathBuf,
    /// Rotate before a write would make the file larger than this.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
}

/// Default size at which the file exporter rotates (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default number of rotated files kept.
pub const DEFAULT_MAX_FILES: usize = 4;

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_max_files() -> usize {
    DEFAULT_MAX_FILES
}

/// Any exporter of this crate, as built from configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyExporter {
    /// OTLP/gRPC (cargo feature `grpc`).
    #[cfg(feature = "grpc")]
    Grpc(Box<OtlpGrpcExporter>),
    /// OTLP/HTTP (cargo feature `http`).
    #[cfg(feature = "http")]
    Http(Box<OtlpHttpExporter>),
    /// OTLP/JSON lines file (cargo feature `json`).
    #[cfg(feature = "json")]
    File(FileExporter),
    /// OTLP/JSON lines on stdout (cargo feature `json`).
    #[cfg(feature = "json")]
    Stdout(StdoutExporter),
    /// Kafka (cargo feature `kafka`).
    #[cfg(feature = "kafka")]
    Kafka(Box<crate::kafka::KafkaExporter>),
}

impl Exporter for AnyExporter {
    // With no exporter compiled in, `AnyExporter` has no variants and `batch` goes unused.
    #[cfg_attr(
        not(any(
            feature = "grpc",
            feature = "http",
            feature = "json",
            feature = "kafka"
        )),
        allow(unused_variables)
    )]
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        match *self {
            #[cfg(feature = "grpc")]
            AnyExporter::Grpc(ref e) => e.export(batch).await,
            #[cfg(feature = "http")]
            AnyExporter::Http(ref e) => e.export(batch).await,
            #[cfg(feature = "json")]
            AnyExporter::File(ref e) => e.export(batch).await,
            #[cfg(feature = "json")]
            AnyExporter::Stdout(ref e) => e.export(batch).await,
            #[cfg(feature = "kafka")]
            AnyExporter::Kafka(ref e) => e.export(batch).await,
        }
    }

    fn name(&self) -> &str {
        match *self {
            #[cfg(feature = "grpc")]
            AnyExporter::Grpc(ref e) => e.name(),
            #[cfg(feature = "http")]
            AnyExporter::Http(ref e) => e.name(),
            #[cfg(feature = "json")]
            AnyExporter::File(ref e) => e.name(),
            #[cfg(feature = "json")]
            AnyExporter::Stdout(ref e) => e.name(),
            #[cfg(feature = "kafka")]
            AnyExporter::Kafka(ref e) => e.name(),
        }
    }

    async fn shutdown(&self) -> Result<(), ExportError> {
        match *self {
            #[cfg(feature = "grpc")]
            AnyExporter::Grpc(ref e) => e.shutdown().await,
            #[cfg(feature = "http")]
            AnyExporter::Http(ref e) => e.shutdown().await,
            #[cfg(feature = "json")]
            AnyExporter::File(ref e) => e.shutdown().await,
            #[cfg(feature = "json")]
            AnyExporter::Stdout(ref e) => e.shutdown().await,
            #[cfg(feature = "kafka")]
            AnyExporter::Kafka(ref e) => e.shutdown().await,
        }
    }
}
