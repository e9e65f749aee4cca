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
//! use spanflow_relay::RelayConfig;
//! let cfg = RelayConfig::from_toml_str("[receivers.grpc]\nendpoint = \"127.0.0.1:0\"\n").unwrap();
//! assert_eq!(cfg.receivers.grpc.endpoint.port(), 0);
//! assert_eq!(cfg.receivers.http.endpoint.port(), 4318);
//! assert!(RelayConfig::from_toml_str("[receivers.grpc]\nendpiont = \"x\"\n").is_err());
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spanflow::export::env::EnvError;
use spanflow::export::{FileConfig, SinkConfig};
use spanflow::{ExporterSpec, PipelineConfig};

/// The configuration embedded in the binary: what `serve` runs with when nothing is given.
pub(crate) const DEFAULT_TOML: &str = include_str!("../default.toml");

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

mod overrides;
mod receivers;
mod redact;

pub(crate) use overrides::OtelExporterEnv;
pub use overrides::Overrides;
use receivers::validate_kafka;
pub use receivers::{
    AuthConfig, AuthScheme, GrpcReceiverConfig, HttpReceiverConfig, KafkaReceiverConfig,
    KafkaRecordEncoding, ReceiversConfig, StartFrom, TlsConfig,
};
pub use redact::REDACTED;
use redact::{redact_exporter_headers, redact_properties};

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
    /// processors, exporters). Overrides are applied to it as typed values, and it is printed
    /// by serializing it, every default included.
    pub pipeline: PipelineConfig,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let mut pipeline = PipelineConfig::default();
        pipeline.memory.budget_bytes = DEFAULT_MEMORY_BUDGET;
        Self {
            data_dir: PathBuf::from("./spanflow-data"),
            shutdown_timeout: HumanDuration(DEFAULT_SHUTDOWN_TIMEOUT),
            receivers: ReceiversConfig::default(),
            telemetry: TelemetryConfig::default(),
            pipeline,
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
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The relay's default memory budget: 64 MiB of accepted, not yet exported requests.
pub(crate) const DEFAULT_MEMORY_BUDGET: usize = 64 << 20;

/// The file the default exporter writes in `data_dir` (rotated files get `.1`, `.2`, …).
pub(crate) const DEFAULT_DATA_FILE: &str = "spans.jsonl";

/// The name of the exporter the relay adds when none is configured, and the one
/// `OTEL_EXPORTER_OTLP_*` configure.
pub(crate) const DEFAULT_EXPORTER_NAME: &str = "default";

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
        toml::Value::Table(table).try_into().map_err(err)
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

    /// The default exporter: rotated OTLP/JSON files in `data_dir`.
    fn default_exporter(&self) -> ExporterSpec {
        ExporterSpec {
            name: DEFAULT_EXPORTER_NAME.to_owned(),
            role: spanflow::BackendRole::Primary,
            sink: SinkConfig::File(FileConfig {
                path: self.data_dir.join(DEFAULT_DATA_FILE),
                max_bytes: 16 << 20,
                max_files: 10_000,
            }),
            backend: None,
        }
    }

    /// Fills in the default exporter when none is configured and checks the settings fit
    /// together.
    pub fn resolve(&mut self) -> Result<(), ConfigError> {
        if self.pipeline.exporters.is_empty() {
            let default = self.default_exporter();
            self.pipeline.exporters.push(default);
        }
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

    /// The effective configuration as TOML, as `check-config` prints it: every value, the
    /// defaults of `[pipeline]` included, serialized from the typed configuration, so it reads
    /// back to the same configuration. Exporter header values (API keys, `Authorization`, from
    /// the file or `OTEL_EXPORTER_OTLP_HEADERS`) and librdkafka secrets are printed as
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
        if let Some(pipeline) = table
            .get_mut("pipeline")
            .and_then(toml::Value::as_table_mut)
        {
            redact_exporter_headers(pipeline);
        }
        toml::to_string_pretty(&table).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
