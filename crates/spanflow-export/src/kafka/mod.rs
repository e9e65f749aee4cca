//! Kafka as a backend: OTLP trace batches written to a topic, one record per trace.
//!
//! Behind the `kafka` cargo feature (it builds librdkafka 2.12, bundled by `rdkafka-sys`,
//! from source and links it statically). [`KafkaExporter`] is an [`crate::Exporter`] like
//! the OTLP ones, so it serves as a primary or a fallback of a [`crate::FanOut`] with the same
//! retry, queueing and per-backend stats; in configuration it is
//! `sink = { type = "kafka", brokers = "…" }` ([`KafkaConfig`]).
//!
//! What goes on the wire is what the OpenTelemetry Collector's kafkaexporter writes with
//! `encoding: otlp_proto` and `partition_traces_by_id: true`:
//!
//! - record value: an `ExportTraceServiceRequest` in protobuf (or OTLP/JSON with
//!   `encoding = "otlp_json"`), made from the batch's bytes by byte ranges, never decoded
//!   ([`spanflow_otlp::group_by_trace`] reads only the framing and each span's trace id);
//! - record key: the 16 raw bytes of the trace id; a batch is cut into one record per trace,
//!   so every span of a trace goes to one partition (a trace larger than `max_record_bytes` is
//!   cut into several records with the same key);
//! - default topic `otlp_spans`.
//!
//! **Delivery.** The producer is idempotent with `acks=all`: librdkafka's own retries never
//! duplicate a record. One [`crate::Exporter::export`] call is one attempt: it hands every
//! record of the batch to librdkafka and waits for every delivery report (counted per attempt
//! as librdkafka delivers them; the attempt is woken once, by its last report), and reports
//! the batch exported only when all of them are acknowledged. Otherwise the batch fails as a
//! whole and the fan-out retries it like any backend's. The contract is **at least once**:
//! when an attempt fails after some of its records were acknowledged (or may have been: a
//! record that timed out after it was sent), the error says the batch may have arrived
//! ([`crate::ExportError::Interrupted`]), and a retry writes those records again; consumers
//! see them twice. An attempt that put nothing on the wire fails with
//! [`crate::ExportError::Transport`].
//!
//! ```no_run
//! use spanflow_export::kafka::{KafkaConfig, KafkaExporter};
//! let config: KafkaConfig = serde_json::from_str(r#"{"brokers": "127.0.0.1:9092"}"#).unwrap();
//! assert_eq!(config.topic, "otlp_spans");
//! let exporter = KafkaExporter::from_config(&config).unwrap();
//! ```

mod exporter;
mod split;
mod tally;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use exporter::{KafkaExporter, KafkaLog};

use crate::config::duration_serde;

/// The Collector's default topic for spans.
pub const DEFAULT_TOPIC: &str = "otlp_spans";

/// The default largest record value: Kafka's default `message.max.bytes` (1 MB) less room for
/// the record and batch headers.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000 - 16 * 1024;

/// How record values are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaEncoding {
    /// `ExportTraceServiceRequest` protobuf bytes (the Collector's `otlp_proto`).
    #[default]
    OtlpProto,
    /// OTLP/JSON (the Collector's `otlp_json`).
    OtlpJson,
}

/// Kafka-level compression of record batches (`compression.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaCompression {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl KafkaCompression {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
            KafkaCompression::Zstd => "zstd",
        }
    }
}

/// How records are keyed and so partitioned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// One record per trace, keyed by the trace id: a trace's spans share a partition (the
    /// Collector's `partition_traces_by_id: true`).
    #[default]
    TraceId,
    /// One record per batch (or per `max_record_bytes`), without a key: librdkafka spreads
    /// them over the partitions.
    None,
}

/// Configuration of a [`KafkaExporter`]: `sink = { type = "kafka", … }`.
///
/// ```
/// use spanflow_export::kafka::{KafkaCompression, KafkaConfig, KafkaEncoding};
/// let c: KafkaConfig = serde_json::from_str(r#"{
///     "brokers": "10.0.0.1:9092,10.0.0.2:9092", "topic": "spans",
///     "compression": "zstd", "encoding": "otlp_json",
///     "properties": {"security.protocol": "ssl"}}"#).unwrap();
/// assert_eq!(c.compression, KafkaCompression::Zstd);
/// assert_eq!(c.encoding, KafkaEncoding::OtlpJson);
/// assert!(serde_json::from_str::<KafkaConfig>(r#"{"brokers": "b:9092", "topik": "x"}"#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port…]` (`bootstrap.servers`).
    pub brokers: String,
    /// The topic written.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Record value encoding.
    #[serde(default)]
    pub encoding: KafkaEncoding,
    /// How records are keyed.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// Kafka-level compression.
    #[serde(default)]
    pub compression: KafkaCompression,
    /// Largest record value; a larger trace is cut into several records with the same key.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// How long librdkafka may try to deliver a record (`message.timeout.ms`). Keep it below
    /// the backend's attempt timeout (`delivery.timeout`, 10 s by default) so a record's fate
    /// is known when the attempt ends.
    #[serde(default = "default_delivery_timeout", with = "duration_serde")]
    pub delivery_timeout: Duration,
    /// How long librdkafka waits to fill a record batch (`linger.ms`).
    #[serde(default = "default_linger", with = "duration_serde")]
    pub linger: Duration,
    /// Further librdkafka producer settings (`security.protocol`, `sasl.*`, `ssl.*`, …),
    /// applied last. `acks` and `enable.idempotence` cannot be changed: the delivery contract
    /// rests on them.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_topic() -> String {
    DEFAULT_TOPIC.to_owned()
}
fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(8)
}
fn default_linger() -> Duration {
    Duration::from_millis(5)
}

impl KafkaConfig {
    /// A configuration with every default, writing to `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: default_topic(),
            encoding: KafkaEncoding::default(),
            partitioning: Partitioning::default(),
            compression: KafkaCompression::default(),
            max_record_bytes: default_max_record_bytes(),
            delivery_timeout: default_delivery_timeout(),
            linger: default_linger(),
            properties: BTreeMap::new(),
        }
    }
}
