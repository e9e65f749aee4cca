//! spanflow-relay: an OTLP relay. Services send OTLP/gRPC or OTLP/HTTP to it; it indexes each
//! request with the wire model (no span decoding), hands it to a spanflow `Pipeline` and
//! answers once the pipeline accepted it, with backpressure answers when the memory budget is
//! full. It sits at the top of the spanflow layering, above the `spanflow` facade.
//!
//! The binary (`src/main.rs`) is a thin clap front end over this library, so tests and benches
//! can run a relay in-process:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use spanflow_relay::{MemorySink, RelayConfig, RunningRelay};
//! let mut cfg = RelayConfig::default();
//! cfg.receivers.grpc.endpoint = "127.0.0.1:0".parse()?;
//! cfg.receivers.http.endpoint = "127.0.0.1:0".parse()?;
//! cfg.telemetry.metrics_enabled = false;
//! let sink = Arc::new(MemorySink::new(64 << 20));
//! let relay = RunningRelay::start(&cfg, sink.clone()).await?;
//! // ... send OTLP to relay.addresses().grpc ...
//! let stats = relay.shutdown(std::time::Duration::from_secs(5)).await;
//! assert_eq!(stats.sink.exported, stats.relay.spans_accepted);
//! # Ok(()) }
//! ```
//!
//! The server's modules are private; what the binary, the tests and the benches need is
//! re-exported here. [`tools`] (the OTLP client, load generator and demo) is a public module.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod config;
mod metrics;
mod pipeline;
mod receiver;
mod relay;
mod sink;
pub mod tools;
mod wire;

pub use config::{
    AuthConfig, AuthScheme, ByteSize, ConfigError, GrpcReceiverConfig, HttpReceiverConfig,
    HumanDuration, KafkaReceiverConfig, KafkaRecordEncoding, Overrides, REDACTED, ReceiversConfig,
    RelayConfig, StartFrom, TelemetryConfig, TlsConfig,
};
pub use metrics::{Closed, InFlightBytes, Listener, Outcome, ReceiverProtocol, RelayCounts};
pub use pipeline::PipelineSink;
pub use receiver::grpc::{BytesCodec, EXPORT_PATH};
#[cfg(feature = "kafka")]
pub use receiver::kafka::{KafkaStartError, rdkafka};
pub use relay::{Addresses, FinalStats, RunningRelay, StartError};
pub use sink::{Accepted, MemorySink, Refused, Sink, SinkFlushError, Tracked};
pub use wire::TraceRequest;
