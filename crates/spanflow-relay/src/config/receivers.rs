//! `[receivers]`: the OTLP receivers (gRPC, HTTP, Kafka) and what guards them on an open network.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ByteSize, ConfigError, HumanDuration};

/// `[receivers]`: the two OTLP receivers and what guards them on an open network. Timeouts,
/// limits, TLS and authentication apply to both receivers alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiversConfig {
    /// `[receivers.grpc]`.
    pub grpc: GrpcReceiverConfig,
    /// `[receivers.http]`.
    pub http: HttpReceiverConfig,
    /// A new connection must have the headers of its first request complete within this (TLS
    /// handshake included), or it is closed.
    pub header_read_timeout: HumanDuration,
    /// A request's body (for gRPC: its message and the end of the stream) must have arrived
    /// this long after its headers, or it is answered 408 / `DEADLINE_EXCEEDED`.
    pub body_read_timeout: HumanDuration,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout: HumanDuration,
    /// Open connections per receiver. At the limit, a new connection closes the connection
    /// that has been idle longest; when none is idle it waits up to a second for room.
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have open (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// At shutdown, how long requests already in progress may take to finish; idle
    /// connections are closed at once.
    pub drain_timeout: HumanDuration,
    /// `[receivers.tls]`: serve TLS (and with `client_ca_file`, require client certificates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// `[receivers.auth]`: require a bearer token or basic credentials on every request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// `[receivers.kafka]`: consume OTLP records from a Kafka topic in a consumer group (the
    /// relay's cargo feature `kafka`). The guards above are for the network receivers; this one
    /// is bounded by the pipeline's budget and its own prefetch limit.
    pub kafka: KafkaReceiverConfig,
}

impl Default for ReceiversConfig {
    fn default() -> Self {
        Self {
            grpc: GrpcReceiverConfig::default(),
            http: HttpReceiverConfig::default(),
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            body_read_timeout: HumanDuration(Duration::from_secs(30)),
            idle_timeout: HumanDuration(Duration::from_secs(60)),
            max_connections: 1024,
            max_concurrent_streams: 100,
            drain_timeout: HumanDuration(Duration::from_secs(10)),
            tls: None,
            auth: None,
            kafka: KafkaReceiverConfig::default(),
        }
    }
}

/// How the records a Kafka receiver reads are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaRecordEncoding {
    /// `ExportTraceServiceRequest` protobuf (the Collector's `otlp_proto`).
    #[default]
    OtlpProto,
    /// OTLP/JSON (the Collector's `otlp_json`).
    OtlpJson,
}

/// Where a consumer group with no committed offset for a partition starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest record still in the partition (nothing written before the group existed is
    /// skipped).
    #[default]
    Earliest,
    /// Only records written from now on.
    Latest,
}

/// `[receivers.kafka]`: a member of a Kafka consumer group reading OTLP records.
///
/// Offsets are committed only for records whose spans the pipeline has settled (exported,
/// failed, dropped or unconfirmed: all in the books), so a relay killed at any moment loses
/// nothing: another member resumes from the last commit and may read some records again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaReceiverConfig {
    /// Whether the receiver runs.
    pub enabled: bool,
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic read.
    pub topic: String,
    /// The consumer group; relays with the same group share the topic's partitions.
    pub group_id: String,
    /// Record value encoding.
    pub encoding: KafkaRecordEncoding,
    /// Where a new group starts reading.
    pub start_from: StartFrom,
    /// How often settled offsets are committed (and at every rebalance and at shutdown).
    pub commit_interval: HumanDuration,
    /// When partitions are taken away, how long the relay waits for the spans it read from
    /// them to settle so it can commit them; what is not settled by then is read again by the
    /// partitions' next owner.
    pub rebalance_timeout: HumanDuration,
    /// The group's session timeout: a member silent this long (killed, say) loses its
    /// partitions to the others.
    pub session_timeout: HumanDuration,
    /// Largest record taken; larger ones are counted as malformed and skipped.
    pub max_record_size: ByteSize,
    /// Records librdkafka may fetch ahead of the pipeline, in bytes
    /// (`queued.max.messages.kbytes`); the only buffer outside the pipeline's budget.
    pub prefetch_bytes: ByteSize,
    /// Further librdkafka consumer settings (`security.protocol`, `sasl.*`, …), applied last.
    /// The offset-commit settings cannot be changed.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaReceiverConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            brokers: "127.0.0.1:9092".to_owned(),
            topic: "otlp_spans".to_owned(),
            group_id: "spanflow-relay".to_owned(),
            encoding: KafkaRecordEncoding::OtlpProto,
            start_from: StartFrom::Earliest,
            commit_interval: HumanDuration(Duration::from_secs(1)),
            rebalance_timeout: HumanDuration(Duration::from_secs(10)),
            session_timeout: HumanDuration(Duration::from_secs(10)),
            max_record_size: ByteSize(4 << 20),
            prefetch_bytes: ByteSize(16 << 20),
            properties: BTreeMap::new(),
        }
    }
}

/// `[receivers.tls]` or `[telemetry.tls]`: a server certificate (PEM files), optionally a CA
/// that client certificates must chain to. The files are read again every `reload_interval`
/// and a changed certificate is used for new connections without a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for a new certificate.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: HumanDuration,
}

pub(super) fn default_reload_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// The credentials scheme of `[receivers.auth]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic <base64(user:password)>`.
    Basic,
}

/// `[receivers.auth]`: every request must carry one of the configured credentials, or it is
/// answered `UNAUTHENTICATED` / 401 before its body is read. Credentials come from a file
/// (one per line: a token, or `user:password`; blank lines and `#` comments are skipped; read
/// again every `reload_interval`) and/or an environment variable holding one; never from this
/// file itself, so the configuration can be printed and shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `bearer` or `basic`.
    #[serde(rename = "type")]
    pub scheme: AuthScheme,
    /// A file of credentials, one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The name of an environment variable holding one credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// How often `file` is read again.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: HumanDuration,
}

/// `[receivers.grpc]`: OTLP/gRPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcReceiverConfig {
    /// Whether the receiver runs.
    pub enabled: bool,
    /// Listen address (port 0 picks a free port).
    pub endpoint: SocketAddr,
    /// Largest accepted message, after decompression; larger is `RESOURCE_EXHAUSTED`.
    pub max_message_size: ByteSize,
}

impl Default for GrpcReceiverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            endpoint: SocketAddr::from(([127, 0, 0, 1], 4317)),
            max_message_size: ByteSize(4 << 20),
        }
    }
}

/// `[receivers.http]`: OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpReceiverConfig {
    /// Whether the receiver runs.
    pub enabled: bool,
    /// Listen address (port 0 picks a free port).
    pub endpoint: SocketAddr,
    /// Largest accepted body, before and after decompression; larger is 413.
    pub max_body_size: ByteSize,
}

impl Default for HttpReceiverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            endpoint: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_body_size: ByteSize(4 << 20),
        }
    }
}

/// Checks an enabled `[receivers.kafka]`.
pub(super) fn validate_kafka(k: &KafkaReceiverConfig) -> Result<(), ConfigError> {
    if !cfg!(feature = "kafka") {
        return Err(ConfigError::Invalid(
            "receivers.kafka is enabled, but this relay was built without its cargo feature `kafka`".into(),
        ));
    }
    for (key, value) in [
        ("receivers.kafka.brokers", &k.brokers),
        ("receivers.kafka.topic", &k.topic),
        ("receivers.kafka.group_id", &k.group_id),
    ] {
        if value.trim().is_empty() {
            return Err(ConfigError::Invalid(format!("{key} must not be empty")));
        }
    }
    for (key, d) in [
        ("receivers.kafka.commit_interval", k.commit_interval),
        ("receivers.kafka.rebalance_timeout", k.rebalance_timeout),
        ("receivers.kafka.session_timeout", k.session_timeout),
    ] {
        if d.0.is_zero() {
            return Err(ConfigError::Invalid(format!("{key} must be positive")));
        }
    }
    if k.max_record_size.0 == 0 || k.prefetch_bytes.0 < 1024 {
        return Err(ConfigError::Invalid(
            "receivers.kafka.max_record_size must be positive and prefetch_bytes at least 1KiB"
                .into(),
        ));
    }
    Ok(())
}
