//! spanflow-export: sends encoded OTLP trace batches to one or many backends.
//!
//! Layer 5 of spanflow, beside `spanflow-process` and above `spanflow-otlp`: its input is
//! pre-encoded `ExportTraceServiceRequest` bytes ([`ExportBatch`]); it knows nothing of how
//! they were produced or processed.
//!
//! - [`Exporter`]: one attempt to one backend. Provided: [`OtlpGrpcExporter`] (tonic, sends the
//!   bytes as they are), [`OtlpHttpExporter`] (reqwest + rustls, protobuf or JSON),
//!   [`FileExporter`] (OTLP/JSON lines, size-rotated) and [`StdoutExporter`].
//! - [`FanOut`]: per-backend queues ([`QueuePolicy`]), semaphore-bounded concurrency, OTLP
//!   retry ([`RetryConfig`]), per-attempt timeouts, primary/fallback, health on a `watch`
//!   channel, per-backend [`BackendStats`], and the settlement of every batch ([`Settled`]:
//!   exported, rejected, failed, dropped or unconfirmed, each counted once).
//! - `kafka::KafkaExporter` (cargo feature `kafka`): OTLP records on a Kafka topic, one per
//!   trace, keyed by trace id, from an idempotent `acks=all` producer.
//! - [`ExporterConfig`] / [`SinkConfig`] / [`FanOutConfig`]: serde (TOML) configuration.
//! - [`env`](mod@env): the one parser of the OpenTelemetry environment (`OTEL_EXPORTER_OTLP_*`,
//!   `OTEL_TRACES_EXPORTER`, `OTEL_SDK_DISABLED`), shared by the `spanflow` facade and the
//!   relay: unset or empty means unset, a bad value is an [`env::EnvError`] naming the variable.
//!
//!
//! Cargo features (all but `kafka` on by default): `grpc` ([`OtlpGrpcExporter`]), `http`
//! ([`OtlpHttpExporter`]), `tls` (`https` endpoints, CA files, client certificates), `gzip` and
//! `zstd` ([`Compression`]), `json` (the file and stdout exporters, OTLP/JSON; `http` turns it
//! on), `kafka`. The fan-out and the configuration types are in every build; a configuration naming something left out fails to
//! build with [`ExportBuildError::FeatureDisabled`], naming the feature.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use spanflow_export::{BackendConfig, ExportBatch, FanOut, OtlpGrpcExporter, RetryConfig};
//!
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! // Nothing listens on port 9: every attempt fails, the batch is counted, never lost silently.
//! let grpc = OtlpGrpcExporter::builder().endpoint("http://127.0.0.1:9").build().unwrap();
//! let config = BackendConfig { retry: RetryConfig::disabled(), ..BackendConfig::default() };
//! let fan = FanOut::builder().backend("collector", grpc, config).build(rt.handle()).unwrap();
//! fan.send(ExportBatch::new(bytes::Bytes::new(), 0)).unwrap();
//! let stats = rt.block_on(fan.shutdown(Instant::now() + Duration::from_secs(10)));
//! let s = stats.backend("collector").unwrap();
//! assert_eq!(s.received_batches, s.exported_batches + s.failed_batches + s.dropped_batches);
//! assert_eq!(fan.settled().batches, 1); // settled once, as failed
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod batch;
mod cancel;
#[cfg(any(feature = "grpc", feature = "http"))]
mod client_options;
pub mod config;
pub mod env;
mod error;
mod exporter;
mod fanout;
#[cfg(feature = "json")]
pub mod file;
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "json")]
pub mod json;
#[cfg(feature = "kafka")]
pub mod kafka;
mod retry;
mod stats;
mod tls;

pub use batch::{ExportBatch, ExportOutcome};
pub use config::{
    AnyExporter, BackendSpec, Compression, ExporterConfig, FallbackSpec, FanOutConfig, FileConfig,
    Protocol, SinkConfig,
};
pub use error::{ExportBuildError, ExportError};
pub use exporter::{BoxExportFuture, BoxShutdownFuture, DynExporter, Exporter};
pub use fanout::{
    BackendConfig, FanOut, FanOutBuilder, FanOutFlushError, QueuePolicy, SendError, SettleHook,
    Settled,
};
#[cfg(feature = "json")]
pub use file::{FileExporter, StdoutExporter};
#[cfg(feature = "grpc")]
pub use grpc::OtlpGrpcExporter;
#[cfg(feature = "http")]
pub use http::{HttpEncoding, OtlpHttpExporter};
pub use retry::RetryConfig;
pub use stats::{
    BackendHealth, BackendStats, FanOutStats, Health, LATENCY_BUCKETS, LatencyHistogram, Role,
};
