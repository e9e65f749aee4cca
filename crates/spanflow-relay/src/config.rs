//! The relay's configuration: a TOML file, `SPANFLOW_*` / `OTEL_EXPORTER_OTLP_*` environment
//! variables and command-line flags, merged with precedence CLI > env > file > defaults.
//!
//! Every struct denies unknown fields, so a typo in the file is an error naming the key; every
//! environment value that does not parse is an error naming the variable.
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

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The configuration embedded in the binary: what `serve` runs with when nothing is given.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// An invalid configuration; the message names the file key, variable or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
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
    /// The combination of settings is inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// A byte size: an integer, or a string like `"4MiB"`, `"512 KiB"`, `"1GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| "expected a byte size like 4194304 or \"4MiB\"".to_owned())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("unknown byte unit `{other}`, expected B, KiB, MiB, GiB, KB, MB or GB")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| "byte size overflows u64".to_owned())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n % size == 0 {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration: a string like `"200ms"`, `"5s"`, `"2m"`, `"1h"`, or an integer of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| "expected a duration like \"200ms\", \"5s\" or \"2m\"".to_owned())?;
        let d = match unit.trim() {
            "" | "ms" => Duration::from_millis(n),
            "us" => Duration::from_micros(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            other => return Err(format!("unknown duration unit `{other}`, expected ms, s, m or h")),
        };
        Ok(HumanDuration(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms > 0 && ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else if self.0.subsec_nanos() % 1_000_000 == 0 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}us", self.0.as_micros())
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(HumanDuration(Duration::from_millis(n))),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

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
    /// Batching, memory budget, processors and exporters.
    pub pipeline: PipelineSection,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./spanflow-data"),
            receivers: ReceiversConfig::default(),
            telemetry: TelemetryConfig::default(),
            pipeline: PipelineSection::default(),
        }
    }
}

/// `[receivers]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiversConfig {
    /// `[receivers.grpc]`.
    pub grpc: GrpcReceiverConfig,
    /// `[receivers.http]`.
    pub http: HttpReceiverConfig,
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
    /// Log filter (`RUST_LOG` syntax), e.g. `info` or `spanflow=debug`.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            metrics_enabled: true,
            metrics_endpoint: SocketAddr::from(([127, 0, 0, 1], 8888)),
            log_level: "info".to_owned(),
        }
    }
}

/// `[pipeline]`: what happens to accepted spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Bytes of accepted, not yet exported data the relay may hold; beyond it requests get
    /// backpressure answers.
    pub memory_budget: ByteSize,
    /// `[pipeline.batch]`.
    pub batch: BatchSection,
    /// `[[pipeline.processors]]`, applied in order.
    pub processors: Vec<ProcessorSection>,
    /// `[[pipeline.exporters]]`; empty means the default file exporter under `data_dir`.
    pub exporters: Vec<ExporterSection>,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            memory_budget: ByteSize(64 << 20),
            batch: BatchSection::default(),
            processors: Vec::new(),
            exporters: Vec::new(),
        }
    }
}

/// `[pipeline.batch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSection {
    /// Most spans per exported batch.
    pub max_spans: usize,
    /// Most bytes per exported batch.
    pub max_bytes: ByteSize,
    /// Longest a span waits for its batch to fill.
    pub max_age: HumanDuration,
}

impl Default for BatchSection {
    fn default() -> Self {
        Self {
            max_spans: 2048,
            max_bytes: ByteSize(2 << 20),
            max_age: HumanDuration(Duration::from_millis(200)),
        }
    }
}

/// One `[[pipeline.processors]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorSection {
    /// The built-in processor's name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its settings.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

/// The kind of an exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExporterKind {
    /// OTLP/gRPC.
    OtlpGrpc,
    /// OTLP/HTTP with protobuf bodies.
    OtlpHttp,
    /// OTLP/HTTP with JSON bodies.
    OtlpHttpJson,
    /// Rotated OTLP/JSON files in a directory.
    File,
    /// One OTLP/JSON line per batch on standard output.
    Stdout,
}

/// Whether an exporter gets every batch or only the ones the primaries failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExporterRole {
    /// Gets every batch (fan-out when there are several).
    #[default]
    Primary,
    /// Gets what a primary finally failed to export.
    Fallback,
}

/// One `[[pipeline.exporters]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterSection {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: ExporterKind,
    /// Primary or fallback.
    #[serde(default)]
    pub role: ExporterRole,
    /// For OTLP exporters: the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// For OTLP exporters: extra headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// For OTLP exporters: `gzip` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// For OTLP exporters: per-request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// For the file exporter: the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// For the file exporter: rotate after this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<ByteSize>,
}

impl ExporterSection {
    /// The default exporter: rotated OTLP/JSON files under `dir`.
    pub fn default_file(dir: &Path) -> Self {
        Self {
            name: "default".to_owned(),
            kind: ExporterKind::File,
            role: ExporterRole::Primary,
            endpoint: None,
            headers: BTreeMap::new(),
            compression: None,
            timeout: None,
            path: Some(dir.to_path_buf()),
            max_file_size: Some(ByteSize(16 << 20)),
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
    /// `pipeline.memory_budget`.
    pub memory_budget: Option<ByteSize>,
    /// `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `telemetry.log_level`.
    pub log_level: Option<String>,
    /// `pipeline.batch.max_spans`.
    pub batch_max_spans: Option<usize>,
    /// `pipeline.batch.max_age`.
    pub batch_max_age: Option<HumanDuration>,
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
        })
    }

    fn apply(&self, cfg: &mut RelayConfig) {
        let o = self.clone();
        set(&mut cfg.receivers.grpc.endpoint, o.grpc_endpoint);
        set(&mut cfg.receivers.http.endpoint, o.http_endpoint);
        set(&mut cfg.telemetry.metrics_endpoint, o.metrics_endpoint);
        set(&mut cfg.receivers.grpc.max_message_size, o.grpc_max_message_size);
        set(&mut cfg.receivers.http.max_body_size, o.http_max_body_size);
        set(&mut cfg.pipeline.memory_budget, o.memory_budget);
        set(&mut cfg.data_dir, o.data_dir);
        set(&mut cfg.telemetry.log_level, o.log_level);
        set(&mut cfg.pipeline.batch.max_spans, o.batch_max_spans);
        set(&mut cfg.pipeline.batch.max_age, o.batch_max_age);
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

/// The standard `OTEL_EXPORTER_OTLP_*` settings for the default exporter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtelExporterEnv {
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (`/v1/traces` appended for HTTP).
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: `grpc`, `http/protobuf` or `http/json`.
    pub kind: Option<ExporterKind>,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`: `k=v,k2=v2`.
    pub headers: BTreeMap<String, String>,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION`.
    pub compression: Option<String>,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` in milliseconds.
    pub timeout: Option<HumanDuration>,
}

impl OtelExporterEnv {
    /// Reads the variables through `get`; the `TRACES_` form wins over the generic one.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let pick = |name: &str| -> Option<(String, String)> {
            let specific = format!("OTEL_EXPORTER_OTLP_TRACES_{name}");
            let generic = format!("OTEL_EXPORTER_OTLP_{name}");
            get(&specific)
                .map(|v| (specific, v))
                .or_else(|| get(&generic).map(|v| (generic, v)))
        };
        let kind = match pick("PROTOCOL") {
            None => None,
            Some((key, v)) => Some(match v.trim() {
                "grpc" => ExporterKind::OtlpGrpc,
                "http/protobuf" => ExporterKind::OtlpHttp,
                "http/json" => ExporterKind::OtlpHttpJson,
                _ => {
                    return Err(ConfigError::Value {
                        key,
                        value: v,
                        reason: "expected grpc, http/protobuf or http/json".into(),
                    });
                }
            }),
        };
        let endpoint = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(e), _) => Some(e),
            (None, Some(base)) => Some(match kind {
                Some(ExporterKind::OtlpHttp | ExporterKind::OtlpHttpJson) => {
                    format!("{}/v1/traces", base.trim_end_matches('/'))
                }
                _ => base,
            }),
            (None, None) => None,
        };
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConfigError::Value {
                key: "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                value: e.clone(),
                reason: "expected an http:// or https:// URL".into(),
            });
        }
        let mut headers = BTreeMap::new();
        if let Some((key, v)) = pick("HEADERS") {
            for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
                let Some((k, val)) = pair.split_once('=') else {
                    return Err(ConfigError::Value {
                        key,
                        value: v.clone(),
                        reason: "expected comma-separated key=value pairs".into(),
                    });
                };
                headers.insert(k.trim().to_owned(), val.trim().to_owned());
            }
        }
        let compression = match pick("COMPRESSION") {
            None => None,
            Some((key, v)) => match v.trim() {
                "gzip" | "none" => Some(v.trim().to_owned()),
                _ => {
                    return Err(ConfigError::Value {
                        key,
                        value: v,
                        reason: "expected gzip or none".into(),
                    });
                }
            },
        };
        let timeout = match pick("TIMEOUT") {
            None => None,
            Some((key, v)) => Some(HumanDuration(Duration::from_millis(
                v.trim().parse().map_err(|_| ConfigError::Value {
                    key,
                    value: v.clone(),
                    reason: "expected milliseconds".into(),
                })?,
            ))),
        };
        Ok(Self {
            endpoint,
            kind,
            headers,
            compression,
            timeout,
        })
    }

    fn is_set(&self) -> bool {
        self.endpoint.is_some() || self.kind.is_some()
    }

    /// Applies to the exporter named `default`, or makes an OTLP exporter the default when the
    /// file configured no exporters.
    fn apply(&self, cfg: &mut RelayConfig) {
        if !self.is_set() {
            return;
        }
        let kind = self.kind.unwrap_or(ExporterKind::OtlpGrpc);
        let exporter = if let Some(e) = cfg.pipeline.exporters.iter_mut().find(|e| e.name == "default") {
            e
        } else if cfg.pipeline.exporters.is_empty() {
            cfg.pipeline.exporters.push(ExporterSection {
                kind,
                path: None,
                max_file_size: None,
                ..ExporterSection::default_file(&cfg.data_dir)
            });
            let last = cfg.pipeline.exporters.len() - 1;
            &mut cfg.pipeline.exporters[last]
        } else {
            return;
        };
        if let Some(k) = self.kind {
            exporter.kind = k;
        }
        if !matches!(exporter.kind, ExporterKind::OtlpGrpc | ExporterKind::OtlpHttp | ExporterKind::OtlpHttpJson) {
            exporter.kind = kind;
        }
        exporter.path = None;
        exporter.max_file_size = None;
        let default_endpoint = match exporter.kind {
            ExporterKind::OtlpGrpc => "http://localhost:4317",
            _ => "http://localhost:4318/v1/traces",
        };
        exporter.endpoint = Some(
            self.endpoint
                .clone()
                .or_else(|| exporter.endpoint.clone())
                .unwrap_or_else(|| default_endpoint.to_owned()),
        );
        exporter.headers.extend(self.headers.clone());
        if self.compression.is_some() {
            exporter.compression = self.compression.clone();
        }
        if self.timeout.is_some() {
            exporter.timeout = self.timeout;
        }
    }
}

impl RelayConfig {
    /// Parses a TOML document (unknown keys are errors).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, None)
    }

    fn parse(text: &str, origin: Option<&Path>) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.map(Path::to_path_buf),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    /// The effective configuration: `file` (or the embedded default), then the environment
    /// read through `env`, then `cli`; finally the default exporter is filled in and the
    /// result validated.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String> + Copy,
        cli: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(p) => Self::from_file(p)?,
            None => Self::from_toml_str(DEFAULT_TOML)?,
        };
        Overrides::from_env(env)?.apply(&mut cfg);
        OtelExporterEnv::from_env(env)?.apply(&mut cfg);
        cli.apply(&mut cfg);
        cfg.resolve()?;
        Ok(cfg)
    }

    /// Fills in the default exporter and checks the settings fit together.
    pub fn resolve(&mut self) -> Result<(), ConfigError> {
        if self.pipeline.exporters.is_empty() {
            self.pipeline
                .exporters
                .push(ExporterSection::default_file(&self.data_dir));
        }
        self.validate()
    }

    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let budget = self.pipeline.memory_budget.0;
        let largest = self
            .receivers
            .grpc
            .max_message_size
            .0
            .max(self.receivers.http.max_body_size.0);
        if budget == 0 {
            return Err(ConfigError::Invalid("pipeline.memory_budget must be positive".into()));
        }
        if largest > budget / 2 {
            return Err(ConfigError::Invalid(format!(
                "pipeline.memory_budget ({}) must be at least twice the largest request size ({}), or requests could never fit",
                self.pipeline.memory_budget,
                ByteSize(largest)
            )));
        }
        if self.pipeline.batch.max_spans == 0 {
            return Err(ConfigError::Invalid("pipeline.batch.max_spans must be positive".into()));
        }
        if !self.receivers.grpc.enabled && !self.receivers.http.enabled {
            return Err(ConfigError::Invalid(
                "receivers.grpc.enabled and receivers.http.enabled are both false: nothing to receive".into(),
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
            let needs_endpoint = matches!(
                e.kind,
                ExporterKind::OtlpGrpc | ExporterKind::OtlpHttp | ExporterKind::OtlpHttpJson
            );
            if needs_endpoint && e.endpoint.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "pipeline.exporters[{i}] (`{}`) needs an endpoint",
                    e.name
                )));
            }
            if e.kind == ExporterKind::File && e.path.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "pipeline.exporters[{i}] (`{}`) needs a path",
                    e.name
                )));
            }
        }
        if !self
            .pipeline
            .exporters
            .iter()
            .any(|e| e.role == ExporterRole::Primary)
        {
            return Err(ConfigError::Invalid(
                "pipeline.exporters has no primary exporter".into(),
            ));
        }
        Ok(())
    }

    /// The configuration as TOML, as `check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn embedded_default_is_valid_and_matches_the_defaults() {
        let cfg = RelayConfig::load(None, no_env, &Overrides::default()).expect("valid default");
        assert_eq!(cfg.receivers.grpc.endpoint, "127.0.0.1:4317".parse().unwrap());
        assert_eq!(cfg.receivers.http.endpoint, "127.0.0.1:4318".parse().unwrap());
        assert_eq!(cfg.pipeline.exporters.len(), 1);
        assert_eq!(cfg.pipeline.exporters[0].kind, ExporterKind::File);
        assert_eq!(cfg.pipeline.exporters[0].path.as_deref(), Some(Path::new("./spanflow-data")));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = RelayConfig::from_toml_str("[receivers.grpc]\nmax_mesage_size = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_mesage_size"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = RelayConfig::from_toml_str("[pipeline]\nmemory_budget = \"12 parsecs\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("memory_budget") && text.contains("parsecs"), "{text}");
    }

    #[test]
    fn precedence_is_cli_then_env_then_file() {
        let dir = std::env::temp_dir().join(format!("spanflow-relay-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("relay.toml");
        std::fs::write(
            &file,
            "[receivers.grpc]\nendpoint = \"127.0.0.1:1000\"\n[receivers.http]\nendpoint = \"127.0.0.1:2000\"\n[telemetry]\nmetrics_endpoint = \"127.0.0.1:3000\"\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "SPANFLOW_HTTP_ENDPOINT" => Some("127.0.0.1:2001".to_owned()),
            "SPANFLOW_METRICS_ENDPOINT" => Some("127.0.0.1:3001".to_owned()),
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
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = |k: &str| (k == "SPANFLOW_MEMORY_BUDGET").then(|| "lots".to_owned());
        let err = RelayConfig::load(None, env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("SPANFLOW_MEMORY_BUDGET"), "{err}");
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
        let e = &cfg.pipeline.exporters[0];
        assert_eq!(e.kind, ExporterKind::OtlpHttp);
        assert_eq!(e.endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        assert_eq!(e.headers.get("api-key").map(String::as_str), Some("s3cret"));
        assert_eq!(e.path, None);
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let cfg = RelayConfig::load(None, no_env, &Overrides::default()).unwrap();
        let again = RelayConfig::from_toml_str(&cfg.to_toml()).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!("4MiB".parse::<ByteSize>(), Ok(ByteSize(4 << 20)));
        assert_eq!("512 KiB".parse::<ByteSize>(), Ok(ByteSize(512 << 10)));
        assert_eq!("100".parse::<ByteSize>(), Ok(ByteSize(100)));
        assert!("4 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
        assert_eq!("200ms".parse::<HumanDuration>(), Ok(HumanDuration(Duration::from_millis(200))));
        assert_eq!("2m".parse::<HumanDuration>(), Ok(HumanDuration(Duration::from_secs(120))));
        assert_eq!(HumanDuration(Duration::from_secs(5)).to_string(), "5s");
    }

    #[test]
    fn budget_smaller_than_a_request_is_refused() {
        let mut cfg = RelayConfig::default();
        cfg.pipeline.memory_budget = ByteSize(1 << 20);
        let err = cfg.resolve().unwrap_err();
        assert!(err.to_string().contains("memory_budget"), "{err}");
    }
}
