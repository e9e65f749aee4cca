//! OTLP exporter configuration ([`ExporterConfig`], [`Protocol`], [`Compression`]): serde (TOML)
//! and the `OTEL_EXPORTER_OTLP_*` environment variables. `sinks` holds which exporter to build
//! ([`SinkConfig`], [`FanOutConfig`], [`AnyExporter`]); `duration_serde` the duration format.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod duration_serde;
mod sinks;

pub use sinks::{
    AnyExporter, BackendSpec, DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, FallbackSpec, FanOutConfig,
    FileConfig, SinkConfig,
};

use crate::error::ExportBuildError;
#[cfg(feature = "grpc")]
use crate::grpc::OtlpGrpcExporter;
#[cfg(feature = "http")]
use crate::http::{HttpEncoding, OtlpHttpExporter};

/// Default OTLP/gRPC endpoint.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// Default OTLP/HTTP traces endpoint.
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// Default per-attempt timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`'s default, 10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Request body compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (`grpc-encoding: gzip` / `Content-Encoding: gzip`).
    Gzip,
    /// zstd (`grpc-encoding: zstd` / `Content-Encoding: zstd`; not in the OTLP spec for HTTP,
    /// but accepted by the Collector).
    Zstd,
}

impl Compression {
    /// The name [`Compression::parse`] and the configuration take.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// The cargo feature this compression needs (`None` for [`Compression::None`]).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("gzip"),
            Self::Zstd => Some("zstd"),
        }
    }

    /// Whether this build can compress this way (its cargo feature is enabled).
    ///
    /// ```
    /// use spanflow_export::Compression;
    /// assert!(Compression::None.is_available());
    /// assert_eq!(Compression::Zstd.is_available(), cfg!(feature = "zstd"));
    /// ```
    pub fn is_available(self) -> bool {
        match self {
            Self::None => true,
            Self::Gzip => cfg!(feature = "gzip"),
            Self::Zstd => cfg!(feature = "zstd"),
        }
    }

    /// `Ok` when [`Compression::is_available`], else [`ExportBuildError::FeatureDisabled`]
    /// naming the feature.
    pub(crate) fn check_available(self) -> Result<(), ExportBuildError> {
        match self.feature() {
            Some(feature) if !self.is_available() => Err(ExportBuildError::feature_disabled(
                format!("compression {}", self.as_str()),
                feature,
            )),
            _ => Ok(()),
        }
    }

    /// Parse `none`, `gzip` or `zstd` (`OTEL_EXPORTER_OTLP_COMPRESSION`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Some(Self::None),
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// OTLP transport protocol (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Protocol {
    /// OTLP/gRPC.
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    #[serde(rename = "http/json")]
    HttpJson,
}

impl Protocol {
    /// The name [`Protocol::parse`] and the configuration take.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
        }
    }

    /// The cargo feature whose exporter speaks this protocol: `grpc` or `http`.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf | Self::HttpJson => "http",
        }
    }

    /// Whether this build has the exporter for this protocol (its cargo feature is enabled).
    ///
    /// ```
    /// use spanflow_export::Protocol;
    /// assert_eq!(Protocol::Grpc.is_available(), cfg!(feature = "grpc"));
    /// ```
    pub fn is_available(self) -> bool {
        match self {
            Self::Grpc => cfg!(feature = "grpc"),
            Self::HttpProtobuf | Self::HttpJson => cfg!(feature = "http"),
        }
    }

    /// Parse `grpc`, `http/protobuf` or `http/json`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            "http/json" => Some(Self::HttpJson),
            _ => None,
        }
    }
}

/// Configuration of one OTLP exporter (gRPC or HTTP).
///
/// `endpoint` is the full URL used as it is (for HTTP, including `/v1/traces`); when absent,
/// the protocol's default applies. [`ExporterConfig::from_env`] reads the standard variables
/// through [`crate::env`], deriving the HTTP path from `OTEL_EXPORTER_OTLP_ENDPOINT` as the
/// spec says.
///
/// ```
/// use spanflow_export::{Compression, ExporterConfig, Protocol};
/// let env = |k: &str| match k {
///     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318/".to_string()),
///     "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_string()),
///     "OTEL_EXPORTER_OTLP_HEADERS" => Some("api-key=a%20b,tenant=7".to_string()),
///     "OTEL_EXPORTER_OTLP_COMPRESSION" => Some("gzip".to_string()),
///     _ => None,
/// };
/// let c = ExporterConfig::from_env_with(env).unwrap();
/// assert_eq!(c.protocol, Protocol::HttpProtobuf);
/// assert_eq!(c.resolved_endpoint(), "http://collector:4318/v1/traces");
/// assert_eq!(c.headers["api-key"], "a b");
/// assert_eq!(c.compression, Compression::Gzip);
///
/// let toml_like: ExporterConfig = serde_json::from_str(r#"{"endpoint": "http://c:4317", "timeout": "2s"}"#).unwrap();
/// assert_eq!(toml_like.timeout, std::time::Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Full endpoint URL; `None` means the protocol's default.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Extra headers (gRPC metadata) sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout (integer milliseconds or a string like `"10s"`, `"500ms"`).
    #[serde(default = "default_timeout", with = "duration_serde")]
    pub timeout: Duration,
    /// Body compression.
    #[serde(default)]
    pub compression: Compression,
    /// PEM file with the CA certificate(s) to trust in addition to the system roots
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`); building fails when it holds no certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate (chain) presented to the server for mutual TLS
    /// (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`); needs [`Self::client_key`] and an `https`
    /// endpoint.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// PEM file with the private key of [`Self::client_certificate`]
    /// (`OTEL_EXPORTER_OTLP_CLIENT_KEY`).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::Grpc,
            endpoint: None,
            headers: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            compression: Compression::None,
            ca_file: None,
            client_certificate: None,
            client_key: None,
        }
    }
}

impl ExporterConfig {
    /// Read the `OTEL_EXPORTER_OTLP_*` variables of the process environment (see
    /// [`crate::env`], the one parser of them).
    pub fn from_env() -> Result<Self, ExportBuildError> {
        Self::from_env_with(|k| std::env::var(k).ok())
    }

    /// Read the `OTEL_EXPORTER_OTLP_*` variables through `get` (testable without touching the
    /// process environment): [`OtlpEnv::from_env`](crate::env::OtlpEnv::from_env), then
    /// [`OtlpEnv::exporter_config`](crate::env::OtlpEnv::exporter_config). A bad value is
    /// [`ExportBuildError::Environment`], naming the variable.
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Result<Self, ExportBuildError> {
        Ok(crate::env::OtlpEnv::from_env(get)?.exporter_config())
    }

    /// The endpoint this configuration exports to (its own or the protocol's default).
    pub fn resolved_endpoint(&self) -> String {
        match (&self.endpoint, self.protocol) {
            (Some(e), _) => e.clone(),
            (None, Protocol::Grpc) => DEFAULT_GRPC_ENDPOINT.to_string(),
            (None, _) => DEFAULT_HTTP_ENDPOINT.to_string(),
        }
    }

    /// Build the exporter this configuration describes (reading its certificate files).
    ///
    /// A protocol, compression or `https` endpoint this build left out is
    /// [`ExportBuildError::FeatureDisabled`], naming the cargo feature to enable; nothing is
    /// read or built then.
    #[cfg_attr(not(any(feature = "grpc", feature = "http")), allow(unused_variables))]
    pub fn build(&self) -> Result<AnyExporter, ExportBuildError> {
        self.check_features()?;
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ExportBuildError::File {
                path: path.display().to_string(),
                source,
            })
        };
        let identity = match (&self.client_certificate, &self.client_key) {
            (Some(cert), Some(key)) => Some(crate::tls::ClientIdentity {
                certificate: read(cert)?,
                key: read(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(ExportBuildError::Tls(
                    "client_certificate and client_key go together (mTLS)".into(),
                ));
            }
        };
        #[cfg(any(feature = "grpc", feature = "http"))]
        let client = crate::client_options::ClientOptions {
            compression: self.compression,
            headers: self.headers.clone(),
            ca_pem: self.ca_file.as_ref().map(read).transpose()?,
            identity,
            ..Default::default()
        };
        let endpoint = self.resolved_endpoint();
        match self.protocol {
            #[cfg(feature = "grpc")]
            Protocol::Grpc => Ok(AnyExporter::Grpc(Box::new(
                OtlpGrpcExporter::builder()
                    .endpoint(endpoint)
                    .timeout(self.timeout)
                    .client(client)
                    .build()?,
            ))),
            #[cfg(feature = "http")]
            Protocol::HttpProtobuf | Protocol::HttpJson => Ok(AnyExporter::Http(Box::new(
                OtlpHttpExporter::builder()
                    .endpoint(endpoint)
                    .encoding(if self.protocol == Protocol::HttpJson {
                        HttpEncoding::Json
                    } else {
                        HttpEncoding::Protobuf
                    })
                    .timeout(self.timeout)
                    .client(client)
                    .build()?,
            ))),
            // Refused by `check_features` above.
            #[allow(unreachable_patterns)]
            other => Err(ExportBuildError::feature_disabled(
                format!("protocol {}", other.as_str()),
                other.feature(),
            )),
        }
    }

    /// Whether this build has what the configuration asks for: the protocol's exporter, the
    /// compression, and TLS for an `https` endpoint or a client certificate.
    ///
    /// ```
    /// use spanflow_export::{Compression, ExporterConfig};
    /// let c = ExporterConfig { compression: Compression::Zstd, ..ExporterConfig::default() };
    /// match c.check_features() {
    ///     Ok(()) => assert!(cfg!(feature = "zstd")),
    ///     Err(e) => assert!(e.to_string().contains("`zstd` cargo feature")),
    /// }
    /// ```
    pub fn check_features(&self) -> Result<(), ExportBuildError> {
        if !self.protocol.is_available() {
            return Err(ExportBuildError::feature_disabled(
                format!("protocol {}", self.protocol.as_str()),
                self.protocol.feature(),
            ));
        }
        self.compression.check_available()?;
        if !cfg!(feature = "tls") {
            let endpoint = self.resolved_endpoint();
            let https = endpoint
                .get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
            if https {
                return Err(ExportBuildError::feature_disabled(
                    format!("the https endpoint {endpoint}"),
                    "tls",
                ));
            }
            if self.client_certificate.is_some() || self.client_key.is_some() {
                return Err(ExportBuildError::feature_disabled(
                    "a client certificate (mTLS)",
                    "tls",
                ));
            }
        }
        Ok(())
    }
}

/// `base` + `v1/traces`, with exactly one `/` between them (OTLP/HTTP endpoint rule).
pub fn append_traces_path(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn grpc_uses_generic_endpoint_as_is() {
        let c =
            ExporterConfig::from_env_with(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]))
                .unwrap();
        assert_eq!(c.resolved_endpoint(), "http://c:4317");
    }

    #[test]
    fn signal_endpoint_wins_and_is_used_as_is() {
        let c = ExporterConfig::from_env_with(env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://d:9/custom"),
        ]))
        .unwrap();
        assert_eq!(c.resolved_endpoint(), "http://d:9/custom");
        assert_eq!(c.protocol, Protocol::HttpJson);
    }

    #[test]
    fn http_generic_endpoint_gets_traces_path() {
        for base in ["http://c:4318", "http://c:4318/", "http://c:4318/base/"] {
            let c = ExporterConfig::from_env_with(env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", base),
            ]))
            .unwrap();
            assert_eq!(
                c.resolved_endpoint(),
                format!("{}/v1/traces", base.trim_end_matches('/'))
            );
        }
    }

    #[test]
    fn defaults_without_env() {
        let c = ExporterConfig::from_env_with(env(&[])).unwrap();
        assert_eq!(c.resolved_endpoint(), DEFAULT_GRPC_ENDPOINT);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        let c = ExporterConfig {
            protocol: Protocol::HttpProtobuf,
            ..c
        };
        assert_eq!(c.resolved_endpoint(), DEFAULT_HTTP_ENDPOINT);
    }

    #[test]
    fn timeout_and_traces_headers_override() {
        let c = ExporterConfig::from_env_with(env(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=3"),
        ]))
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.headers["a"], "1");
        assert_eq!(c.headers["b"], "3");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(
            ExporterConfig::from_env_with(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "ten")])).is_err()
        );
        assert!(
            ExporterConfig::from_env_with(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")])).is_err()
        );
        assert!(
            ExporterConfig::from_env_with(env(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]))
                .is_err()
        );
    }

    /// A configuration asking for a left-out capability fails to build with an error naming
    /// the feature; with the feature on, the same check passes. (Each half runs in the builds
    /// that leave the feature out or in.)
    #[test]
    fn left_out_capabilities_are_typed_errors_naming_the_feature() {
        let disabled = |c: ExporterConfig, feature: &str| match c.build() {
            Err(ExportBuildError::FeatureDisabled { feature: f, what }) => {
                assert_eq!(f, feature, "{what}");
                let e = c.check_features().unwrap_err();
                assert!(
                    e.to_string()
                        .contains(&format!("`{feature}` cargo feature")),
                    "{e}"
                );
            }
            other => panic!("expected FeatureDisabled({feature}), got {other:?}"),
        };
        let grpc = ExporterConfig::default();
        let http = ExporterConfig {
            protocol: Protocol::HttpProtobuf,
            ..ExporterConfig::default()
        };
        for (c, on, feature) in [
            (grpc.clone(), cfg!(feature = "grpc"), "grpc"),
            (http.clone(), cfg!(feature = "http"), "http"),
        ] {
            if on {
                assert!(c.check_features().is_ok());
            } else {
                disabled(c, feature);
            }
        }
        let transport = if cfg!(feature = "grpc") { grpc } else { http };
        if !cfg!(any(feature = "grpc", feature = "http")) {
            return;
        }
        for (compression, feature) in [(Compression::Gzip, "gzip"), (Compression::Zstd, "zstd")] {
            let c = ExporterConfig {
                compression,
                ..transport.clone()
            };
            if compression.is_available() {
                assert!(c.check_features().is_ok());
            } else {
                disabled(c, feature);
            }
        }
        let https = ExporterConfig {
            endpoint: Some("https://collector:4317".into()),
            ..transport
        };
        if cfg!(feature = "tls") {
            assert!(https.check_features().is_ok());
        } else {
            disabled(https, "tls");
        }
    }

    /// The file and stdout exporters write OTLP/JSON: without `json` they are typed errors.
    #[test]
    fn json_sinks_need_the_json_feature() {
        let path = std::env::temp_dir().join(format!(
            "spanflow-json-sink-{}-{:?}.jsonl",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = SinkConfig::File(FileConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
            max_files: 1,
        });
        let json = cfg!(feature = "json");
        for sink in [file, SinkConfig::Stdout] {
            match sink.build() {
                Ok(_) => assert!(json, "{sink:?} built without json"),
                Err(ExportBuildError::FeatureDisabled { feature, what }) => {
                    assert!(!json, "{what}");
                    assert_eq!(feature, "json", "{what}");
                }
                Err(e) => panic!("{sink:?}: {e}"),
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_json::from_str::<ExporterConfig>(r#"{"endpont": "x"}"#).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            duration_serde::parse("250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            duration_serde::parse("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(duration_serde::parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(duration_serde::parse("7"), Some(Duration::from_millis(7)));
        assert_eq!(duration_serde::parse("7 weeks"), None);
    }

    #[test]
    fn durations_format_to_what_they_parse_from() {
        for (d, text) in [
            (Duration::from_secs(10), "10s"),
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1001), "1001ms"),
            (Duration::from_micros(1500), "0.0015s"),
            (Duration::new(3, 1), "3.000000001s"),
        ] {
            assert_eq!(duration_serde::format(d), text);
            assert_eq!(duration_serde::parse(text), Some(d), "{text}");
        }
        for ms in (0..100_000u64).step_by(997) {
            let d = Duration::from_millis(ms);
            assert_eq!(duration_serde::parse(&duration_serde::format(d)), Some(d));
        }
    }

    #[test]
    fn sink_config_round_trips_through_serde() {
        let text = r#"{"type": "otlp", "protocol": "http/json", "endpoint": "http://c:4318/v1/traces",
            "headers": {"api-key": "k"}, "timeout": "2500ms", "compression": "gzip"}"#;
        let config: SinkConfig = serde_json::from_str(text).unwrap();
        let printed = serde_json::to_string(&config).unwrap();
        assert!(printed.contains(r#""timeout":"2500ms""#), "{printed}");
        assert_eq!(
            serde_json::from_str::<SinkConfig>(&printed).unwrap(),
            config
        );
    }
}
