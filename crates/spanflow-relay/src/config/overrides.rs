//! Overrides from the environment (`SPANFLOW_*`, `OTEL_EXPORTER_OTLP_*`) and the command line.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use spanflow::ExporterSpec;
use spanflow::export::SinkConfig;
use spanflow::export::env::OtlpEnv;

use super::{ByteSize, ConfigError, DEFAULT_EXPORTER_NAME, HumanDuration, RelayConfig};

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

    pub(super) fn apply(&self, cfg: &mut RelayConfig) {
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
        let pipeline = &mut cfg.pipeline;
        set(
            &mut pipeline.memory.budget_bytes,
            o.memory_budget
                .map(|b| usize::try_from(b.0).unwrap_or(usize::MAX)),
        );
        set(&mut pipeline.batch.max_spans, o.batch_max_spans);
        set(
            &mut pipeline.batch.max_age_ms,
            o.batch_max_age
                .map(|d| u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX)),
        );
    }
}

pub(super) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

pub(super) fn env_parse<T: FromStr>(
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
pub(crate) struct OtelExporterEnv(pub OtlpEnv);

impl OtelExporterEnv {
    /// Reads the variables through `get`; a bad value is [`ConfigError::Environment`], with
    /// the same message the facade gives for it.
    pub(crate) fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self(OtlpEnv::from_env(get)?))
    }

    /// Makes the exporter named `default` (or, when the file configures no exporter, a new one
    /// named `default`) an OTLP exporter with these settings. Other exporters are untouched.
    pub(super) fn apply(&self, cfg: &mut RelayConfig) {
        if !self.0.names_a_backend() {
            return;
        }
        let sink = SinkConfig::Otlp(self.0.exporter_config());
        let exporters = &mut cfg.pipeline.exporters;
        if let Some(default) = exporters
            .iter_mut()
            .find(|e| e.name == DEFAULT_EXPORTER_NAME)
        {
            default.sink = sink;
        } else if exporters.is_empty() {
            exporters.push(ExporterSpec {
                name: DEFAULT_EXPORTER_NAME.to_owned(),
                role: spanflow::BackendRole::Primary,
                sink,
                backend: None,
            });
        }
    }
}
