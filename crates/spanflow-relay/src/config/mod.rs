//! The relay's configuration: a TOML file, `SPANFLOW_*` / `OTEL_EXPORTER_OTLP_*` environment
//! variables and command-line flags, merged with precedence CLI > env > file > defaults.
//!
//! Every struct denies unknown fields, so a typo in the file is an error naming the key; every
//! environment value that does not parse is an error naming the variable. `OTEL_EXPORTER_OTLP_*`
//! are read by the parser the `spanflow` facade uses too ([`spanflow::export::env`]).
//!
//! The `[pipeline]` section is the `spanflow` facade's [`PipelineConfig`] (batching, memory
//! budget, `spanflow-process` processors, `spanflow-export` exporters with fan-out and
//! fallback), embedded as is.
//!
//! ```
//! use spanflow_relay::config::RelayConfig;
//! let cfg = RelayConfig::from_toml_str("[receivers.grpc]\nendpoint = \"127.0.0.1:0\"\n").unwrap();
//! assert_eq!(cfg.receivers.grpc.endpoint.port(), 0);
//! assert_eq!(cfg.receivers.http.endpoint.port(), 4318);
//! assert!(RelayConfig::from_toml_str("[receivers.grpc]\nendpiont = \"x\"\n").is_err());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spanflow::PipelineConfig;
use spanflow::export::env::{EnvError, OtlpEnv};

/// The configuration embedded in the binary: what `serve` runs with when nothing is given.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// An invalid configuration; the message names the file key, variable or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a bad value.
    #[error("invalid config{}: {message}", origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when there is one.
        origin: Option<PathBuf>,
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// An environment variable or flag has a bad value.
    #[error("invalid value `{value}` for {key}: {reason}")]
    Value {
        /// The variable or flag.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// An OpenTelemetry variable (`OTEL_EXPORTER_OTLP_*`) has a bad value; the message is the
    /// shared parser's, the same the `spanflow` facade gives.
    #[error(transparent)]
    Environment(#[from] EnvError),
    /// The combination of settings is inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Sizes and durations in the configuration are spelled as in the durable queue's (`"64MiB"`,
/// `"200ms"`; integers are bytes and milliseconds): one parser, whose home is `spanflow-spool`.
pub use spanflow::spool::{ByteSize, HumanDuration};

/// The whole relay configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Directory of the default file exporter (used when no exporter is configured).
    pub data_dir: PathBuf,
    /// The OTLP receivers.
    pub receivers: ReceiversConfig,
    /// Self-metrics and logs.
    pub telemetry: TelemetryConfig,
    /// Longest a SIGTERM/SIGINT waits for everything accepted to be exported before the relay
    /// exits and reports what it could not deliver. Default 30 s.
    pub shutdown_timeout: HumanDuration,
    /// `[pipeline]`: the facade's configuration (batch, memory, export, processing,
    /// processors, exporters).
    #[serde(skip_serializing)]
    pub pipeline: PipelineConfig,
    /// The `[pipeline]` table as written plus overrides, for printing (the facade's types are
    /// not serializable).
    #[serde(skip)]
    pipeline_table: toml::Table,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let mut pipeline_table = toml::Table::new();
        let mut memory = toml::Table::new();
        memory.insert(
            "budget_bytes".into(),
            toml::Value::Integer(DEFAULT_MEMORY_BUDGET as i64),
        );
        pipeline_table.insert("memory".into(), toml::Value::Table(memory));
        let mut pipeline = PipelineConfig::default();
        pipeline.memory.budget_bytes = DEFAULT_MEMORY_BUDGET;
        Self {
            data_dir: PathBuf::from("./spanflow-data"),
            shutdown_timeout: HumanDuration(DEFAULT_SHUTDOWN_TIMEOUT),
            receivers: ReceiversConfig::default(),
            telemetry: TelemetryConfig::default(),
            pipeline,
            pipeline_table,
        }
    }
}

/// The embedded default configuration as a table.
fn default_table() -> toml::Table {
    // The embedded default is checked by a unit test; an empty table is the safe answer if it
    // ever failed to parse.
    toml::from_str(DEFAULT_TOML).unwrap_or_default()
}

/// Lays `over` onto `base` key by key: tables merge recursively, every other value (arrays
/// included: a list of exporters is replaced, not appended to) replaces the one in `base`.
fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// How long a signal waits for the flush by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The relay's default memory budget: 64 MiB of accepted, not yet exported requests.
pub const DEFAULT_MEMORY_BUDGET: usize = 64 << 20;

/// The file the default exporter writes in `data_dir` (rotated files get `.1`, `.2`, …).
pub const DEFAULT_DATA_FILE: &str = "spans.jsonl";

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

fn default_reload_interval() -> HumanDuration {
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

/// `[telemetry]`: the relay's own metrics and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Whether the `/metrics` + `/healthz` server runs.
    pub metrics_enabled: bool,
    /// Its listen address.
    pub metrics_endpoint: SocketAddr,
    /// Open connections to it. These are kept apart from the receivers' connections (and
    /// their file descriptors), so `/healthz` answers while the receivers are flooded.
    pub metrics_max_connections: usize,
    /// `[telemetry.tls]`: serve `/metrics` and `/healthz` over TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Log filter (`RUST_LOG` syntax), e.g. `info` or `spanflow=debug`.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            metrics_enabled: true,
            metrics_endpoint: SocketAddr::from(([127, 0, 0, 1], 8888)),
            metrics_max_connections: 64,
            tls: None,
            log_level: "info".to_owned(),
        }
    }
}

/// Overrides from the environment or the command line; `None` leaves the value alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `receivers.grpc.endpoint`.
    pub grpc_endpoint: Option<SocketAddr>,
    /// `receivers.http.endpoint`.
    pub http_endpoint: Option<SocketAddr>,
    /// `telemetry.metrics_endpoint`.
    pub metrics_endpoint: Option<SocketAddr>,
    /// `receivers.grpc.max_message_size`.
    pub grpc_max_message_size: Option<ByteSize>,
    /// `receivers.http.max_body_size`.
    pub http_max_body_size: Option<ByteSize>,
    /// `pipeline.memory.budget_bytes`.
    pub memory_budget: Option<ByteSize>,
    /// `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `telemetry.log_level`.
    pub log_level: Option<String>,
    /// `pipeline.batch.max_spans`.
    pub batch_max_spans: Option<usize>,
    /// `pipeline.batch.max_age_ms`.
    pub batch_max_age: Option<HumanDuration>,
    /// `shutdown_timeout`.
    pub shutdown_timeout: Option<HumanDuration>,
}

impl Overrides {
    /// Reads `SPANFLOW_*` variables through `get` (normally `std::env::var`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            grpc_endpoint: env_parse(&get, "SPANFLOW_GRPC_ENDPOINT")?,
            http_endpoint: env_parse(&get, "SPANFLOW_HTTP_ENDPOINT")?,
            metrics_endpoint: env_parse(&get, "SPANFLOW_METRICS_ENDPOINT")?,
            grpc_max_message_size: env_parse(&get, "SPANFLOW_GRPC_MAX_MESSAGE_SIZE")?,
            http_max_body_size: env_parse(&get, "SPANFLOW_HTTP_MAX_BODY_SIZE")?,
            memory_budget: env_parse(&get, "SPANFLOW_MEMORY_BUDGET")?,
            data_dir: get("SPANFLOW_DATA_DIR").map(PathBuf::from),
            log_level: get("SPANFLOW_LOG_LEVEL"),
            batch_max_spans: env_parse(&get, "SPANFLOW_BATCH_MAX_SPANS")?,
            batch_max_age: env_parse(&get, "SPANFLOW_BATCH_MAX_AGE")?,
            shutdown_timeout: env_parse(&get, "SPANFLOW_SHUTDOWN_TIMEOUT")?,
        })
    }

    fn apply(&self, cfg: &mut RelayConfig) {
        let o = self.clone();
        set(&mut cfg.receivers.grpc.endpoint, o.grpc_endpoint);
        set(&mut cfg.receivers.http.endpoint, o.http_endpoint);
        set(&mut cfg.telemetry.metrics_endpoint, o.metrics_endpoint);
        set(
            &mut cfg.receivers.grpc.max_message_size,
            o.grpc_max_message_size,
        );
        set(&mut cfg.receivers.http.max_body_size, o.http_max_body_size);
        set(&mut cfg.data_dir, o.data_dir);
        set(&mut cfg.telemetry.log_level, o.log_level);
        set(&mut cfg.shutdown_timeout, o.shutdown_timeout);
        let int = |n: u64| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        if let Some(b) = o.memory_budget {
            cfg.set_pipeline_value(&["memory", "budget_bytes"], int(b.0));
        }
        if let Some(n) = o.batch_max_spans {
            cfg.set_pipeline_value(&["batch", "max_spans"], int(n as u64));
        }
        if let Some(d) = o.batch_max_age {
            cfg.set_pipeline_value(&["batch", "max_age_ms"], int(d.0.as_millis() as u64));
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn env_parse<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    match get(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e: T::Err| ConfigError::Value {
            key: key.to_owned(),
            value: v.clone(),
            reason: e.to_string(),
        }),
    }
}

/// The standard `OTEL_EXPORTER_OTLP_*` settings, read by the one parser of the OpenTelemetry
/// environment ([`spanflow::export::env::OtlpEnv`], shared with the `spanflow` facade) and
/// applied to the default exporter.
///
/// The relay is not an SDK: `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER` are not read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtelExporterEnv(pub OtlpEnv);

impl OtelExporterEnv {
    /// Reads the variables through `get`; a bad value is [`ConfigError::Environment`], with
    /// the same message the facade gives for it.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self(OtlpEnv::from_env(get)?))
    }

    /// The `sink = { type = "otlp", ... }` table these settings describe.
    fn sink_table(&self) -> toml::Table {
        let e = self.0.exporter_config();
        let mut sink = toml::Table::new();
        sink.insert("type".into(), "otlp".into());
        sink.insert("protocol".into(), e.protocol.as_str().into());
        if let Some(endpoint) = e.endpoint {
            sink.insert("endpoint".into(), endpoint.into());
        }
        if !e.headers.is_empty() {
            let headers: toml::Table = e
                .headers
                .into_iter()
                .map(|(k, v)| (k, toml::Value::from(v)))
                .collect();
            sink.insert("headers".into(), toml::Value::Table(headers));
        }
        sink.insert("compression".into(), e.compression.as_str().into());
        sink.insert(
            "timeout".into(),
            format!("{}ms", e.timeout.as_millis()).into(),
        );
        for (key, path) in [
            ("ca_file", e.ca_file),
            ("client_certificate", e.client_certificate),
            ("client_key", e.client_key),
        ] {
            if let Some(path) = path {
                sink.insert(key.into(), path.display().to_string().into());
            }
        }
        sink
    }

    /// Makes the exporter named `default` (or, when the file configures no exporter, a new one
    /// named `default`) an OTLP exporter with these settings. Other exporters are untouched.
    fn apply(&self, cfg: &mut RelayConfig) {
        if !self.0.names_a_backend() {
            return;
        }
        let sink = toml::Value::Table(self.sink_table());
        let exporters = cfg.exporters_mut();
        if let Some(default) = exporters
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .find(|t| t.get("name").and_then(toml::Value::as_str) == Some("default"))
        {
            default.insert("sink".into(), sink);
        } else if exporters.is_empty() {
            let mut entry = toml::Table::new();
            entry.insert("name".into(), "default".into());
            entry.insert("sink".into(), sink);
            exporters.push(toml::Value::Table(entry));
        }
    }
}

impl RelayConfig {
    /// Parses a TOML document (unknown keys are errors) and resolves it (default exporter,
    /// checks).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let mut cfg = Self::parse(text, None)?;
        cfg.resolve()?;
        Ok(cfg)
    }

    fn parse(text: &str, origin: Option<&Path>) -> Result<Self, ConfigError> {
        let err = |e: toml::de::Error| ConfigError::Parse {
            origin: origin.map(Path::to_path_buf),
            message: e.to_string().trim_end().to_owned(),
        };
        // Typed first: its errors carry the key and the position.
        toml::from_str::<RelayConfig>(text).map_err(err)?;
        let written: toml::Table = toml::from_str(text).map_err(err)?;
        // The file is laid over the embedded default key by key, so a table the file leaves
        // out, or a key it leaves out of a table, keeps the relay's documented default.
        let mut table = default_table();
        merge_tables(&mut table, written);
        let mut cfg: RelayConfig = toml::Value::Table(table.clone()).try_into().map_err(err)?;
        cfg.pipeline_table = match table.remove("pipeline") {
            Some(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        Ok(cfg)
    }

    /// Reads a TOML file, without resolving it.
    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    /// The effective configuration: `file` (or the embedded default), then the environment
    /// read through `env`, then `cli`; finally the default exporter is filled in and the
    /// result checked.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String> + Copy,
        cli: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(p) => Self::from_file(p)?,
            None => Self::parse(DEFAULT_TOML, None)?,
        };
        Overrides::from_env(env)?.apply(&mut cfg);
        OtelExporterEnv::from_env(env)?.apply(&mut cfg);
        cli.apply(&mut cfg);
        cfg.resolve()?;
        Ok(cfg)
    }

    fn pipeline_value_mut(&mut self, path: &[&str]) -> Option<&mut toml::Table> {
        let mut table = &mut self.pipeline_table;
        for key in path {
            let entry = table
                .entry((*key).to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut()?;
        }
        Some(table)
    }

    /// Sets `pipeline.<path>` in the table form (applied to the typed form by `resolve`).
    fn set_pipeline_value(&mut self, path: &[&str], value: toml::Value) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        if let Some(t) = self.pipeline_value_mut(parents) {
            t.insert((*last).to_owned(), value);
        }
    }

    fn exporters_mut(&mut self) -> &mut Vec<toml::Value> {
        let entry = self
            .pipeline_table
            .entry("exporters")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if !entry.is_array() {
            *entry = toml::Value::Array(Vec::new());
        }
        match entry {
            toml::Value::Array(a) => a,
            // Made an array just above.
            _ => unreachable!("exporters is an array"),
        }
    }

    /// The default exporter's table: rotated OTLP/JSON files in `data_dir`.
    fn default_exporter(&self) -> toml::Value {
        let mut sink = toml::Table::new();
        sink.insert("type".into(), "file".into());
        sink.insert(
            "path".into(),
            self.data_dir
                .join(DEFAULT_DATA_FILE)
                .display()
                .to_string()
                .into(),
        );
        sink.insert("max_bytes".into(), toml::Value::Integer(16 << 20));
        sink.insert("max_files".into(), toml::Value::Integer(10_000));
        let mut entry = toml::Table::new();
        entry.insert("name".into(), "default".into());
        entry.insert("sink".into(), toml::Value::Table(sink));
        toml::Value::Table(entry)
    }

    /// Fills in the default exporter, rebuilds the typed `[pipeline]` from the table and checks
    /// the settings fit together.
    pub fn resolve(&mut self) -> Result<(), ConfigError> {
        if self.exporters_mut().is_empty() {
            let default = self.default_exporter();
            self.exporters_mut().push(default);
        }
        self.pipeline = toml::Value::Table(self.pipeline_table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: None,
                message: format!("in [pipeline]: {}", e.to_string().trim_end()),
            })?;
        self.validate()
    }

    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let budget = self.pipeline.memory.budget_bytes as u64;
        let kafka = &self.receivers.kafka;
        let largest = self
            .receivers
            .grpc
            .max_message_size
            .0
            .max(self.receivers.http.max_body_size.0)
            .max(if kafka.enabled {
                kafka.max_record_size.0
            } else {
                0
            });
        if largest > budget / 2 {
            return Err(ConfigError::Invalid(format!(
                "pipeline.memory.budget_bytes ({}) must be at least twice the largest request size ({}), or some requests could never be accepted",
                ByteSize(budget),
                ByteSize(largest)
            )));
        }
        if let spanflow::QueueSettings::Disk(queue) = &self.pipeline.queue
            && queue.max_record_bytes() < largest.max(self.pipeline.batch.max_bytes as u64)
        {
            return Err(ConfigError::Invalid(format!(
                "pipeline.queue.segment_bytes ({}) leaves room for records of {} at most, less than the largest request or batch ({}); raise it",
                queue.segment_bytes,
                ByteSize(queue.max_record_bytes()),
                ByteSize(largest.max(self.pipeline.batch.max_bytes as u64))
            )));
        }
        if self.pipeline.batch.max_spans == 0 || self.pipeline.batch.max_bytes == 0 {
            return Err(ConfigError::Invalid(
                "pipeline.batch.max_spans and pipeline.batch.max_bytes must be positive".into(),
            ));
        }
        self.validate_receivers()?;
        if !self.receivers.grpc.enabled && !self.receivers.http.enabled && !kafka.enabled {
            return Err(ConfigError::Invalid(
                "receivers.grpc, receivers.http and receivers.kafka are all disabled: nothing to receive".into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.pipeline.exporters.iter().enumerate() {
            if !names.insert(e.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "pipeline.exporters[{i}].name `{}` is used twice",
                    e.name
                )));
            }
        }
        if self
            .pipeline
            .exporters
            .first()
            .is_some_and(|e| e.role == spanflow::BackendRole::Fallback)
        {
            return Err(ConfigError::Invalid(
                "pipeline.exporters[0] is a fallback; a fallback backs the primary listed before it".into(),
            ));
        }
        Ok(())
    }

    /// Checks `[receivers]` and `[telemetry]` limits, timeouts, TLS and auth.
    fn validate_receivers(&self) -> Result<(), ConfigError> {
        let r = &self.receivers;
        for (key, d) in [
            ("receivers.header_read_timeout", r.header_read_timeout),
            ("receivers.body_read_timeout", r.body_read_timeout),
            ("receivers.idle_timeout", r.idle_timeout),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::Invalid(format!("{key} must be positive")));
            }
        }
        for (key, n) in [
            ("receivers.max_connections", r.max_connections as u64),
            (
                "receivers.max_concurrent_streams",
                u64::from(r.max_concurrent_streams),
            ),
            (
                "telemetry.metrics_max_connections",
                self.telemetry.metrics_max_connections as u64,
            ),
        ] {
            if n == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be positive")));
            }
        }
        for (key, tls) in [
            ("receivers.tls", &r.tls),
            ("telemetry.tls", &self.telemetry.tls),
        ] {
            if tls.as_ref().is_some_and(|t| t.reload_interval.0.is_zero()) {
                return Err(ConfigError::Invalid(format!(
                    "{key}.reload_interval must be positive"
                )));
            }
        }
        if r.kafka.enabled {
            validate_kafka(&r.kafka)?;
        }
        if let Some(auth) = &r.auth {
            if auth.file.is_none() && auth.env.is_none() {
                return Err(ConfigError::Invalid(
                    "receivers.auth needs `file` or `env` (or both) to say where the credentials are".into(),
                ));
            }
            if auth.reload_interval.0.is_zero() {
                return Err(ConfigError::Invalid(
                    "receivers.auth.reload_interval must be positive".into(),
                ));
            }
        }
        Ok(())
    }

    /// The configuration as TOML, as `check-config` prints it: exporter header values (API
    /// keys, `Authorization`, from the file or `OTEL_EXPORTER_OTLP_HEADERS`) are printed as
    /// [`REDACTED`], so the output can be pasted into a ticket.
    pub fn to_toml(&self) -> String {
        let mut table = match toml::Table::try_from(self) {
            Ok(t) => t,
            Err(e) => return format!("# cannot render config: {e}\n"),
        };
        redact_properties(
            table
                .get_mut("receivers")
                .and_then(toml::Value::as_table_mut)
                .and_then(|r| r.get_mut("kafka"))
                .and_then(toml::Value::as_table_mut)
                .and_then(|k| k.get_mut("properties")),
        );
        let mut pipeline = self.pipeline_table.clone();
        redact_exporter_headers(&mut pipeline);
        table.insert("pipeline".into(), toml::Value::Table(pipeline));
        toml::to_string_pretty(&table).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Checks an enabled `[receivers.kafka]`.
fn validate_kafka(k: &KafkaReceiverConfig) -> Result<(), ConfigError> {
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

/// Whether a librdkafka setting holds a secret (printed as [`REDACTED`]).
fn is_secret_property(key: &str) -> bool {
    ["password", "secret", "token"]
        .iter()
        .any(|s| key.to_ascii_lowercase().contains(s))
}

/// Replaces the secret values of a `properties` table with [`REDACTED`].
fn redact_properties(properties: Option<&mut toml::Value>) {
    let Some(table) = properties.and_then(toml::Value::as_table_mut) else {
        return;
    };
    for (key, value) in table.iter_mut() {
        if is_secret_property(key) {
            *value = toml::Value::String(REDACTED.into());
        }
    }
}

/// What [`RelayConfig::to_toml`] prints instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Replaces every `pipeline.exporters[].sink.headers` value with [`REDACTED`].
fn redact_exporter_headers(pipeline: &mut toml::Table) {
    let Some(toml::Value::Array(exporters)) = pipeline.get_mut("exporters") else {
        return;
    };
    for exporter in exporters.iter_mut().filter_map(toml::Value::as_table_mut) {
        let Some(sink) = exporter.get_mut("sink").and_then(toml::Value::as_table_mut) else {
            continue;
        };
        let headers = sink.get_mut("headers").and_then(toml::Value::as_table_mut);
        for (_, value) in headers.into_iter().flat_map(|h| h.iter_mut()) {
            *value = toml::Value::String(REDACTED.to_owned());
        }
        // A Kafka sink's librdkafka settings may hold SASL or TLS key passwords.
        redact_properties(sink.get_mut("properties"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spanflow::export::SinkConfig;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn embedded_default_is_valid_and_writes_files_under_the_data_dir() {
        let cfg = RelayConfig::load(None, no_env, &Overrides::default()).expect("valid default");
        assert_eq!(
            cfg.receivers.grpc.endpoint,
            "127.0.0.1:4317".parse().unwrap()
        );
        assert_eq!(
            cfg.receivers.http.endpoint,
            "127.0.0.1:4318".parse().unwrap()
        );
        assert_eq!(cfg.pipeline.exporters.len(), 1);
        let SinkConfig::File(file) = &cfg.pipeline.exporters[0].sink else {
            panic!("default exporter is not a file exporter");
        };
        assert_eq!(
            file.path,
            Path::new("./spanflow-data").join(DEFAULT_DATA_FILE)
        );
        assert_eq!(cfg.pipeline.memory.budget_bytes, DEFAULT_MEMORY_BUDGET);
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            RelayConfig::from_toml_str("[receivers.grpc]\nmax_mesage_size = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_mesage_size"), "{err}");
        let err = RelayConfig::from_toml_str("[pipeline.batch]\nmax_spanz = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_spanz"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = RelayConfig::from_toml_str("[receivers.http]\nmax_body_size = \"12 parsecs\"\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("max_body_size") && text.contains("parsecs"),
            "{text}"
        );
        let err =
            RelayConfig::from_toml_str("[pipeline.batch]\nmax_spans = \"many\"\n").unwrap_err();
        assert!(err.to_string().contains("max_spans"), "{err}");
    }

    #[test]
    fn processors_and_fan_out_exporters_are_the_facade_types() {
        let cfg = RelayConfig::from_toml_str(
            r#"
[[pipeline.processors]]
type = "probabilistic_sampler"
ratio = 0.5

[[pipeline.exporters]]
name = "collector"
sink = { type = "otlp", protocol = "grpc", endpoint = "http://127.0.0.1:4317" }

[[pipeline.exporters]]
name = "spill"
role = "fallback"
sink = { type = "file", path = "spill/spans.jsonl" }

[[pipeline.exporters]]
name = "debug"
sink = { type = "stdout" }
"#,
        );
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.pipeline.processors.len(), 1);
        assert_eq!(cfg.pipeline.exporters.len(), 3);
        assert_eq!(
            cfg.pipeline.exporters[1].role,
            spanflow::BackendRole::Fallback
        );
    }

    #[test]
    fn precedence_is_cli_then_env_then_file() {
        let dir = std::env::temp_dir().join(format!("spanflow-relay-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("relay.toml");
        std::fs::write(
            &file,
            "[receivers.grpc]\nendpoint = \"127.0.0.1:1000\"\n[receivers.http]\nendpoint = \"127.0.0.1:2000\"\n[telemetry]\nmetrics_endpoint = \"127.0.0.1:3000\"\n[pipeline.batch]\nmax_spans = 10\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "SPANFLOW_HTTP_ENDPOINT" => Some("127.0.0.1:2001".to_owned()),
            "SPANFLOW_METRICS_ENDPOINT" => Some("127.0.0.1:3001".to_owned()),
            "SPANFLOW_BATCH_MAX_SPANS" => Some("20".to_owned()),
            _ => None,
        };
        let cli = Overrides {
            metrics_endpoint: Some("127.0.0.1:3002".parse().unwrap()),
            ..Overrides::default()
        };
        let cfg = RelayConfig::load(Some(&file), env, &cli).unwrap();
        assert_eq!(cfg.receivers.grpc.endpoint.port(), 1000);
        assert_eq!(cfg.receivers.http.endpoint.port(), 2001);
        assert_eq!(cfg.telemetry.metrics_endpoint.port(), 3002);
        assert_eq!(cfg.pipeline.batch.max_spans, 20);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = |k: &str| (k == "SPANFLOW_MEMORY_BUDGET").then(|| "lots".to_owned());
        let err = RelayConfig::load(None, env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("SPANFLOW_MEMORY_BUDGET"), "{err}");
        let env =
            |k: &str| (k == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "carrier-pigeon".to_owned());
        let err = RelayConfig::load(None, env, &Overrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{err}"
        );
    }

    #[test]
    fn otel_env_turns_the_default_exporter_into_otlp() {
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_owned()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_owned()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("api-key=s3cret, x=y".to_owned()),
            _ => None,
        };
        let cfg = RelayConfig::load(None, env, &Overrides::default()).unwrap();
        let SinkConfig::Otlp(e) = &cfg.pipeline.exporters[0].sink else {
            panic!("default exporter is not otlp");
        };
        assert_eq!(
            e.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(e.headers.get("api-key").map(String::as_str), Some("s3cret"));
    }

    #[test]
    fn otel_env_reaches_the_sink_through_the_shared_parser() {
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("collector:4317".to_owned()),
            "OTEL_EXPORTER_OTLP_INSECURE" => Some("true".to_owned()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("a=1,b=2".to_owned()),
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => Some("b=3".to_owned()),
            "OTEL_EXPORTER_OTLP_COMPRESSION" => Some("zstd".to_owned()),
            "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("1500".to_owned()),
            "OTEL_EXPORTER_OTLP_CERTIFICATE" => Some("/etc/ca.pem".to_owned()),
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" => Some("/etc/client.pem".to_owned()),
            "OTEL_EXPORTER_OTLP_CLIENT_KEY" => Some("/etc/client.key".to_owned()),
            // The relay is not an SDK: these are not its business.
            "OTEL_SDK_DISABLED" => Some("true".to_owned()),
            "OTEL_TRACES_EXPORTER" => Some("none".to_owned()),
            _ => None,
        };
        let cfg = RelayConfig::load(None, env, &Overrides::default()).unwrap();
        let SinkConfig::Otlp(e) = &cfg.pipeline.exporters[0].sink else {
            panic!("default exporter is not otlp");
        };
        let shared = OtlpEnv::from_env(env).unwrap().exporter_config();
        assert_eq!(e, &shared);
        assert_eq!(e.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(e.compression, spanflow::export::Compression::Zstd);
        assert_eq!(e.headers.get("b").map(String::as_str), Some("3"));
        assert_eq!(e.timeout, Duration::from_millis(1500));
        assert!(e.client_key.is_some() && e.ca_file.is_some());
    }

    /// The relay, the facade and the shared parser say the same thing about the same bad value.
    #[test]
    fn bad_otel_values_read_as_in_the_facade() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "1"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem"),
        ] {
            let env = move |k: &str| (k == name).then(|| value.to_owned());
            let relay = RelayConfig::load(None, env, &Overrides::default()).unwrap_err();
            assert!(matches!(relay, ConfigError::Environment(_)), "{relay:?}");
            let facade = spanflow::Pipeline::builder()
                .from_env_with(env)
                .build()
                .unwrap_err();
            let shared = OtlpEnv::from_env(env).unwrap_err();
            assert_eq!(relay.to_string(), shared.to_string());
            assert_eq!(facade.to_string(), shared.to_string());
            assert!(relay.to_string().contains(name), "{relay}");
        }
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let cfg = RelayConfig::load(None, no_env, &Overrides::default()).unwrap();
        let text = cfg.to_toml();
        let again = RelayConfig::from_toml_str(&text).unwrap();
        assert_eq!(cfg, again, "{text}");
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!("4MiB".parse::<ByteSize>(), Ok(ByteSize(4 << 20)));
        assert_eq!("512 KiB".parse::<ByteSize>(), Ok(ByteSize(512 << 10)));
        assert_eq!("100".parse::<ByteSize>(), Ok(ByteSize(100)));
        assert!("4 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
        assert_eq!(
            "200ms".parse::<HumanDuration>(),
            Ok(HumanDuration(Duration::from_millis(200)))
        );
        assert_eq!(
            "2m".parse::<HumanDuration>(),
            Ok(HumanDuration(Duration::from_secs(120)))
        );
        assert_eq!(HumanDuration(Duration::from_secs(5)).to_string(), "5s");
    }

    #[test]
    fn printed_config_redacts_exporter_headers() {
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4317".to_owned()),
            "OTEL_EXPORTER_OTLP_HEADERS" => {
                Some("api-key=s3cret,authorization=Bearer abc".to_owned())
            }
            _ => None,
        };
        let cfg = RelayConfig::load(None, env, &Overrides::default()).unwrap();
        let text = cfg.to_toml();
        assert!(!text.contains("s3cret") && !text.contains("abc"), "{text}");
        assert!(
            text.contains("api-key") && text.contains(REDACTED),
            "{text}"
        );
        // The loaded configuration itself keeps the real value.
        let SinkConfig::Otlp(e) = &cfg.pipeline.exporters[0].sink else {
            panic!("default exporter is not otlp");
        };
        assert_eq!(e.headers.get("api-key").map(String::as_str), Some("s3cret"));
    }

    #[test]
    fn receiver_guards_parse_and_are_checked() {
        let cfg = RelayConfig::from_toml_str(
            r#"
[receivers]
header_read_timeout = "2s"
max_connections = 10
[receivers.tls]
cert_file = "server.crt"
key_file = "server.key"
client_ca_file = "clients.crt"
[receivers.auth]
type = "bearer"
file = "tokens"
[telemetry.tls]
cert_file = "m.crt"
key_file = "m.key"
"#,
        )
        .unwrap();
        assert_eq!(cfg.receivers.header_read_timeout.0, Duration::from_secs(2));
        assert_eq!(cfg.receivers.max_connections, 10);
        assert_eq!(cfg.receivers.idle_timeout.0, Duration::from_secs(60));
        let tls = cfg.receivers.tls.as_ref().unwrap();
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some(Path::new("clients.crt"))
        );
        assert_eq!(tls.reload_interval.0, Duration::from_secs(60));
        assert_eq!(
            cfg.receivers.auth.as_ref().unwrap().scheme,
            AuthScheme::Bearer
        );
        assert!(cfg.telemetry.tls.is_some());
        let again = RelayConfig::from_toml_str(&cfg.to_toml()).unwrap();
        assert_eq!(cfg, again);

        let err = RelayConfig::from_toml_str("[receivers.auth]\ntype = \"bearer\"\n").unwrap_err();
        assert!(err.to_string().contains("receivers.auth"), "{err}");
        let err = RelayConfig::from_toml_str("[receivers.auth]\ntype = \"digest\"\nfile = \"x\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("digest"), "{err}");
        let err =
            RelayConfig::from_toml_str("[receivers.tls]\ncert_file = \"a\"\nkye_file = \"b\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("kye_file"), "{err}");
        let err = RelayConfig::from_toml_str("[receivers]\nmax_connections = 0\n").unwrap_err();
        assert!(
            err.to_string().contains("receivers.max_connections"),
            "{err}"
        );
    }

    #[test]
    fn budget_smaller_than_a_request_is_refused() {
        let cli = Overrides {
            memory_budget: Some(ByteSize(1 << 20)),
            ..Overrides::default()
        };
        let err = RelayConfig::load(None, no_env, &cli).unwrap_err();
        assert!(err.to_string().contains("budget_bytes"), "{err}");
    }

    #[test]
    fn a_partial_pipeline_table_keeps_every_other_default() {
        let only_exporters =
            "[[pipeline.exporters]]\nname = \"out\"\nsink = { type = \"stdout\" }\n";
        let only_batch = "[pipeline.batch]\nmax_spans = 100\n";
        for text in [only_exporters, only_batch, "[pipeline]\n", ""] {
            let cfg = RelayConfig::from_toml_str(text).unwrap();
            assert_eq!(
                cfg.pipeline.memory.budget_bytes, DEFAULT_MEMORY_BUDGET,
                "{text:?}"
            );
            assert_eq!(cfg.pipeline.batch.max_age_ms, 200, "{text:?}");
            assert_eq!(cfg.shutdown_timeout.0, DEFAULT_SHUTDOWN_TIMEOUT, "{text:?}");
            assert!(
                cfg.to_toml().contains("budget_bytes = 67108864"),
                "{text:?}"
            );
        }
        let cfg = RelayConfig::from_toml_str(only_batch).unwrap();
        assert_eq!(cfg.pipeline.batch.max_spans, 100);
        assert_eq!(cfg.pipeline.batch.max_bytes, 4 << 20);
        let cfg = RelayConfig::from_toml_str(only_exporters).unwrap();
        assert_eq!(cfg.pipeline.exporters.len(), 1);
        assert_eq!(cfg.pipeline.exporters[0].name, "out");
    }

    #[test]
    fn a_partial_receivers_table_keeps_the_other_keys() {
        let cfg =
            RelayConfig::from_toml_str("[receivers.grpc]\nmax_message_size = \"1MiB\"\n").unwrap();
        assert_eq!(cfg.receivers.grpc.max_message_size, ByteSize(1 << 20));
        assert_eq!(
            cfg.receivers.grpc.endpoint,
            RelayConfig::default().receivers.grpc.endpoint
        );
        assert!(cfg.receivers.http.enabled);
    }

    #[test]
    fn shutdown_timeout_comes_from_file_env_and_flag() {
        let cfg = RelayConfig::from_toml_str("shutdown_timeout = \"5s\"\n").unwrap();
        assert_eq!(cfg.shutdown_timeout.0, Duration::from_secs(5));
        let env = |k: &str| (k == "SPANFLOW_SHUTDOWN_TIMEOUT").then(|| "7s".to_owned());
        let cfg = RelayConfig::load(None, env, &Overrides::default()).unwrap();
        assert_eq!(cfg.shutdown_timeout.0, Duration::from_secs(7));
        let cli = Overrides {
            shutdown_timeout: Some(HumanDuration(Duration::from_secs(9))),
            ..Overrides::default()
        };
        let cfg = RelayConfig::load(None, env, &cli).unwrap();
        assert_eq!(cfg.shutdown_timeout.0, Duration::from_secs(9));
    }

    #[test]
    fn a_kafka_only_relay_is_valid_with_the_feature_and_its_secrets_are_redacted() {
        let text = r#"
[receivers.grpc]
enabled = false
[receivers.http]
enabled = false
[receivers.kafka]
enabled = true
brokers = "10.0.0.1:9092"
group_id = "tier2"
properties = { "sasl.password" = "hunter2", "security.protocol" = "sasl_ssl" }
"#;
        let result = RelayConfig::from_toml_str(text);
        if !cfg!(feature = "kafka") {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("feature `kafka`"), "{err}");
            return;
        }
        let cfg = result.unwrap();
        let k = &cfg.receivers.kafka;
        assert_eq!(
            (k.topic.as_str(), k.group_id.as_str()),
            ("otlp_spans", "tier2")
        );
        assert_eq!(k.commit_interval.0, Duration::from_secs(1));
        let printed = cfg.to_toml();
        assert!(!printed.contains("hunter2") && printed.contains("sasl_ssl"));
        assert!(
            RelayConfig::from_toml_str(&text.replace("group_id = \"tier2\"", "group_id = \"\""))
                .is_err()
        );
    }

    #[test]
    fn the_kafka_receiver_is_off_by_default_and_typos_are_errors() {
        let cfg = RelayConfig::from_toml_str("").unwrap();
        assert!(!cfg.receivers.kafka.enabled);
        assert!(
            RelayConfig::from_toml_str(
                "[receivers.kafka]
topik = \"x\"\n"
            )
            .is_err()
        );
    }
}
