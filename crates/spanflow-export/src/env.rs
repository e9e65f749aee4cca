//! The OpenTelemetry environment: the one parser of the `OTEL_*` variables spanflow honours,
//! shared by the facade (`spanflow`) and the relay (`spanflow-relay`).
//!
//! Every function here reads through a `get: impl Fn(&str) -> Option<String>` (normally
//! `|name| std::env::var(name).ok()`), so tests never touch the process environment.
//!
//! One rule for every variable: an unset or empty value (after trimming) means "not set", as the
//! OpenTelemetry specification says; a value that is set but cannot be used is an
//! [`EnvError`] naming the variable and the value, returned when the pipeline (or the relay's
//! configuration) is built. Nothing is ignored with a warning that may go nowhere.
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_SDK_DISABLED` | `true`: the environment configures no exporter (see [`OtelEnv`]) |
//! | `OTEL_TRACES_EXPORTER` | comma-separated `otlp` (default), `console`/`logging` (OTLP/JSON lines on stdout) or `none` |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` | `grpc` (default), `http/protobuf`, `http/json` |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the full URL, used as it is |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | gRPC: used as it is; HTTP: a base URL to which `v1/traces` is appended |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)INSECURE` | gRPC endpoint without a scheme: `true` plain text, `false` (default) TLS |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `..._TRACES_HEADERS` | `k=v,k2=v2`, percent-encoded; both apply, the `TRACES_` value wins per key |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION` | `none`, `gzip`, `zstd` |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` | milliseconds per export attempt, at least 1 |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE` | PEM file of CA certificates to trust |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE` | PEM client certificate (chain) for mTLS; needs the key |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY` | PEM private key for mTLS; needs the certificate |
//!
//! Where a `TRACES_` form exists it wins over the generic one. Files are read when the exporter
//! is built ([`ExporterConfig::build`]), whose error then names the path.
//!
//! ```
//! use spanflow_export::env::{OtelEnv, TracesExporter};
//! use spanflow_export::{Compression, Protocol};
//!
//! let env = |name: &str| match name {
//!     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("https://collector:4318".to_string()),
//!     "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_string()),
//!     "OTEL_EXPORTER_OTLP_COMPRESSION" => Some("zstd".to_string()),
//!     _ => None,
//! };
//! let otel = OtelEnv::from_env(env)?;
//! assert_eq!(otel.traces_exporters, [TracesExporter::Otlp]);
//! let config = otel.otlp.exporter_config();
//! assert_eq!(config.protocol, Protocol::HttpProtobuf);
//! assert_eq!(config.resolved_endpoint(), "https://collector:4318/v1/traces");
//! assert_eq!(config.compression, Compression::Zstd);
//!
//! let bad = OtelEnv::from_env(|name: &str| {
//!     (name == "OTEL_EXPORTER_OTLP_TIMEOUT").then(|| "ten".to_string())
//! });
//! assert_eq!(
//!     bad.unwrap_err().to_string(),
//!     r#"invalid value "ten" for OTEL_EXPORTER_OTLP_TIMEOUT: expected an integer"#
//! );
//! # Ok::<(), spanflow_export::env::EnvError>(())
//! ```

use std::collections::BTreeMap;
use std::num::ParseIntError;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ExporterConfig, SinkConfig, append_traces_path};
use crate::{Compression, Protocol};

/// `OTEL_SDK_DISABLED`.
pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
/// `OTEL_TRACES_EXPORTER`.
pub const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_HEADERS`.
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`.
pub const OTEL_EXPORTER_OTLP_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";

/// Shown instead of a header value in errors: header values carry API keys.
const HIDDEN: &str = "<hidden>";

/// A variable that is set but cannot be used.
///
/// Its message names the variable and the value (header values excepted: they carry secrets,
/// so only the position of the bad entry is given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The value is not one this variable takes.
    #[error("invalid value {value:?} for {variable}: {reason}")]
    Invalid {
        /// The variable.
        variable: String,
        /// The value as found.
        value: String,
        /// What the variable takes.
        reason: String,
    },
    /// The value is not an integer.
    #[error("invalid value {value:?} for {variable}: expected an integer")]
    NotAnInteger {
        /// The variable.
        variable: String,
        /// The value as found.
        value: String,
        /// Why it did not parse.
        source: ParseIntError,
    },
    /// The variable only makes sense with another one, which is not set.
    #[error("{variable} is set but {missing} is not: {reason}")]
    Incomplete {
        /// The variable that is set.
        variable: String,
        /// The variable that is missing.
        missing: String,
        /// Why they go together.
        reason: String,
    },
}

impl EnvError {
    /// The variable the error is about.
    pub fn variable(&self) -> &str {
        match self {
            EnvError::Invalid { variable, .. }
            | EnvError::NotAnInteger { variable, .. }
            | EnvError::Incomplete { variable, .. } => variable,
        }
    }

    fn invalid(variable: &str, value: &str, reason: impl Into<String>) -> Self {
        EnvError::Invalid {
            variable: variable.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// The value of `name`, trimmed; `None` when it is unset or empty (the specification's rule).
///
/// ```
/// use spanflow_export::env::var;
/// let get = |name: &str| (name == "A").then(|| "  x ".to_string());
/// assert_eq!(var(&get, "A").as_deref(), Some("x"));
/// assert_eq!(var(&|_: &str| Some("  ".to_string()), "A"), None);
/// ```
pub fn var(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The integer value of `name`, at least `min`; an [`EnvError`] naming `name` otherwise.
///
/// ```
/// use spanflow_export::env::integer;
/// let get = |name: &str| match name {
///     "N" => Some("42".to_string()),
///     "Z" => Some("0".to_string()),
///     _ => None,
/// };
/// assert_eq!(integer(&get, "N", 1), Ok(Some(42)));
/// assert_eq!(integer(&get, "UNSET", 1), Ok(None));
/// assert!(integer(&get, "Z", 1).unwrap_err().to_string().contains("at least 1"));
/// ```
pub fn integer(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    min: u64,
) -> Result<Option<u64>, EnvError> {
    let Some(value) = var(get, name) else {
        return Ok(None);
    };
    let n: u64 = value.parse().map_err(|source| EnvError::NotAnInteger {
        variable: name.to_string(),
        value: value.clone(),
        source,
    })?;
    if n < min {
        return Err(EnvError::invalid(
            name,
            &value,
            format!("must be at least {min}"),
        ));
    }
    Ok(Some(n))
}

/// The boolean value of `name`: `true` or `false`, in any case.
///
/// The specification asks to read any other value as `false` with a warning; spanflow makes it
/// an error like every other bad value, so `OTEL_SDK_DISABLED=yes` cannot silently leave the
/// SDK on.
///
/// ```
/// use spanflow_export::env::boolean;
/// assert_eq!(boolean(&|_: &str| Some("TRUE".to_string()), "B"), Ok(Some(true)));
/// assert!(boolean(&|_: &str| Some("yes".to_string()), "B").is_err());
/// ```
pub fn boolean(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<bool>, EnvError> {
    let Some(value) = var(get, name) else {
        return Ok(None);
    };
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        _ => Err(EnvError::invalid(name, &value, "expected true or false")),
    }
}

/// The trace-specific form of an exporter variable if set, else the generic one, with the name
/// of the variable that was used.
fn signal(get: &impl Fn(&str) -> Option<String>, suffix: &str) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .into_iter()
    .find_map(|name| var(get, &name).map(|value| (name, value)))
}

/// An exporter `OTEL_TRACES_EXPORTER` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TracesExporter {
    /// OTLP, configured by the `OTEL_EXPORTER_OTLP_*` variables ([`OtlpEnv`]).
    Otlp,
    /// OTLP/JSON lines on standard output (`console`, or the deprecated `logging`): spanflow's
    /// [`StdoutExporter`](crate::StdoutExporter).
    Console,
}

/// Everything the OpenTelemetry environment says about trace export.
///
/// [`OtelEnv::sinks`] turns it into the exporters to use when the program configures none:
/// with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` there are none, otherwise one
/// per name in `OTEL_TRACES_EXPORTER` (default `otlp`). The relay is not an SDK: it reads only
/// [`OtlpEnv`].
///
/// ```
/// use spanflow_export::env::OtelEnv;
/// let off = OtelEnv::from_env(|name: &str| {
///     (name == "OTEL_TRACES_EXPORTER").then(|| "none".to_string())
/// })?;
/// assert!(off.sinks().is_empty());
/// let default = OtelEnv::from_env(|_: &str| None)?;
/// assert_eq!(default.sinks()[0].0, "otlp");
/// # Ok::<(), spanflow_export::env::EnvError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OtelEnv {
    /// `OTEL_SDK_DISABLED=true`.
    pub sdk_disabled: bool,
    /// `OTEL_TRACES_EXPORTER`, without duplicates; empty for `none`.
    pub traces_exporters: Vec<TracesExporter>,
    /// The `OTEL_EXPORTER_OTLP_*` variables.
    pub otlp: OtlpEnv,
}

impl OtelEnv {
    /// Reads the variables of this process.
    pub fn from_process_env() -> Result<Self, EnvError> {
        Self::from_env(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get`. Every variable is checked, also those that end up
    /// unused (a bad `OTEL_EXPORTER_OTLP_TIMEOUT` is an error even with `OTEL_SDK_DISABLED`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let sdk_disabled = boolean(&get, OTEL_SDK_DISABLED)?.unwrap_or(false);
        let traces_exporters = match var(&get, OTEL_TRACES_EXPORTER) {
            None => vec![TracesExporter::Otlp],
            Some(value) => traces_exporters(&value)?,
        };
        Ok(Self {
            sdk_disabled,
            traces_exporters,
            otlp: OtlpEnv::from_env(get)?,
        })
    }

    /// Whether the environment turns export off (`OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`).
    pub fn export_disabled(&self) -> bool {
        self.sdk_disabled || self.traces_exporters.is_empty()
    }

    /// The exporters the environment asks for, named `otlp` and `console`; none when export is
    /// disabled.
    pub fn sinks(&self) -> Vec<(String, SinkConfig)> {
        if self.sdk_disabled {
            return Vec::new();
        }
        self.traces_exporters
            .iter()
            .map(|e| match e {
                TracesExporter::Otlp => (
                    "otlp".to_string(),
                    SinkConfig::Otlp(self.otlp.exporter_config()),
                ),
                TracesExporter::Console => ("console".to_string(), SinkConfig::Stdout),
            })
            .collect()
    }
}

fn traces_exporters(value: &str) -> Result<Vec<TracesExporter>, EnvError> {
    let mut out = Vec::new();
    let mut none = false;
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let exporter = match name.to_ascii_lowercase().as_str() {
            "none" => {
                none = true;
                continue;
            }
            "otlp" => TracesExporter::Otlp,
            "console" | "logging" => TracesExporter::Console,
            _ => {
                return Err(EnvError::invalid(
                    OTEL_TRACES_EXPORTER,
                    value,
                    format!("unknown exporter {name:?}; spanflow offers otlp, console and none"),
                ));
            }
        };
        if !out.contains(&exporter) {
            out.push(exporter);
        }
    }
    if none && !out.is_empty() {
        return Err(EnvError::invalid(
            OTEL_TRACES_EXPORTER,
            value,
            "none cannot be combined with other exporters",
        ));
    }
    Ok(out)
}

/// The `OTEL_EXPORTER_OTLP_*` variables, checked; `None` (or empty) where a variable is unset.
///
/// `endpoint` is resolved as far as the environment allows: the `TRACES_` form as it is, the
/// generic form with `v1/traces` appended for HTTP, a gRPC endpoint without a scheme given
/// `http://` when `INSECURE` is `true` and `https://` otherwise (the specification's rule:
/// `INSECURE` applies only there; an endpoint with a scheme keeps it). An HTTP endpoint needs a
/// scheme.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtlpEnv {
    /// `..._PROTOCOL`.
    pub protocol: Option<Protocol>,
    /// `..._TRACES_ENDPOINT` or `..._ENDPOINT`, resolved as described above.
    pub endpoint: Option<String>,
    /// `..._HEADERS` merged with `..._TRACES_HEADERS` (which wins per key).
    pub headers: BTreeMap<String, String>,
    /// `..._COMPRESSION`.
    pub compression: Option<Compression>,
    /// `..._TIMEOUT`.
    pub timeout: Option<Duration>,
    /// `..._CERTIFICATE`.
    pub certificate: Option<PathBuf>,
    /// `..._CLIENT_CERTIFICATE` (always together with `client_key`).
    pub client_certificate: Option<PathBuf>,
    /// `..._CLIENT_KEY` (always together with `client_certificate`).
    pub client_key: Option<PathBuf>,
    /// `..._INSECURE`.
    pub insecure: Option<bool>,
}

impl OtlpEnv {
    /// Reads and checks the variables through `get`.
    ///
    /// ```
    /// use spanflow_export::env::OtlpEnv;
    /// let env = |name: &str| match name {
    ///     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("collector:4317".to_string()),
    ///     "OTEL_EXPORTER_OTLP_INSECURE" => Some("true".to_string()),
    ///     "OTEL_EXPORTER_OTLP_HEADERS" => Some("api-key=a%20b".to_string()),
    ///     _ => None,
    /// };
    /// let otlp = OtlpEnv::from_env(env)?;
    /// assert_eq!(otlp.endpoint.as_deref(), Some("http://collector:4317"));
    /// assert_eq!(otlp.headers["api-key"], "a b");
    /// # Ok::<(), spanflow_export::env::EnvError>(())
    /// ```
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let mut env = OtlpEnv::default();
        if let Some((name, value)) = signal(&get, "PROTOCOL") {
            env.protocol = Some(Protocol::parse(&value).ok_or_else(|| {
                EnvError::invalid(&name, &value, "expected grpc, http/protobuf or http/json")
            })?);
        }
        if let Some((name, _)) = signal(&get, "INSECURE") {
            env.insecure = boolean(&get, &name)?;
        }
        if let Some((name, value)) = signal(&get, "COMPRESSION") {
            env.compression =
                Some(Compression::parse(&value).ok_or_else(|| {
                    EnvError::invalid(&name, &value, "expected none, gzip or zstd")
                })?);
        }
        if let Some((name, _)) = signal(&get, "TIMEOUT") {
            env.timeout = integer(&get, &name, 1)?.map(Duration::from_millis);
        }
        for name in [
            OTEL_EXPORTER_OTLP_HEADERS,
            OTEL_EXPORTER_OTLP_TRACES_HEADERS,
        ] {
            if let Some(value) = var(&get, name) {
                env.headers.extend(parse_headers(name, &value)?);
            }
        }
        let path = |suffix: &str| signal(&get, suffix).map(|(name, v)| (name, PathBuf::from(v)));
        env.certificate = path("CERTIFICATE").map(|(_, p)| p);
        match (path("CLIENT_CERTIFICATE"), path("CLIENT_KEY")) {
            (Some((_, cert)), Some((_, key))) => {
                env.client_certificate = Some(cert);
                env.client_key = Some(key);
            }
            (Some((name, _)), None) => {
                return Err(incomplete_identity(&name, "OTEL_EXPORTER_OTLP_CLIENT_KEY"));
            }
            (None, Some((name, _))) => {
                return Err(incomplete_identity(
                    &name,
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                ));
            }
            (None, None) => {}
        }
        env.endpoint = env.endpoint(&get)?;
        Ok(env)
    }

    fn endpoint(&self, get: &impl Fn(&str) -> Option<String>) -> Result<Option<String>, EnvError> {
        let grpc = self.protocol.unwrap_or_default() == Protocol::Grpc;
        let (name, value) = match (
            var(get, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
            var(get, OTEL_EXPORTER_OTLP_ENDPOINT),
        ) {
            (Some(url), _) => (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, url),
            (None, Some(base)) => (OTEL_EXPORTER_OTLP_ENDPOINT, base),
            (None, None) => return Ok(None),
        };
        let url = match value.split_once("://") {
            Some(("http" | "https", _)) => value.clone(),
            Some((scheme, _)) => {
                return Err(EnvError::invalid(
                    name,
                    &value,
                    format!("unsupported scheme {scheme:?}; expected http or https"),
                ));
            }
            None if grpc => {
                let scheme = if self.insecure == Some(true) {
                    "http"
                } else {
                    "https"
                };
                format!("{scheme}://{value}")
            }
            None => {
                return Err(EnvError::invalid(
                    name,
                    &value,
                    "expected an http:// or https:// URL",
                ));
            }
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| EnvError::invalid(name, &value, e.to_string()))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(EnvError::invalid(name, &value, "the URL has no host"));
        }
        Ok(Some(if name == OTEL_EXPORTER_OTLP_ENDPOINT && !grpc {
            append_traces_path(&url)
        } else {
            url
        }))
    }

    /// Whether the environment names an OTLP backend: an endpoint or a protocol is set. The
    /// relay turns its default exporter into OTLP only then.
    pub fn names_a_backend(&self) -> bool {
        self.endpoint.is_some() || self.protocol.is_some()
    }

    /// The exporter configuration these variables describe, the rest left at its defaults.
    pub fn exporter_config(&self) -> ExporterConfig {
        let defaults = ExporterConfig::default();
        ExporterConfig {
            protocol: self.protocol.unwrap_or(defaults.protocol),
            endpoint: self.endpoint.clone(),
            headers: self.headers.clone(),
            timeout: self.timeout.unwrap_or(defaults.timeout),
            compression: self.compression.unwrap_or(defaults.compression),
            ca_file: self.certificate.clone(),
            client_certificate: self.client_certificate.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

fn incomplete_identity(variable: &str, missing: &str) -> EnvError {
    EnvError::Incomplete {
        variable: variable.to_string(),
        missing: missing.to_string(),
        reason: "a client certificate and its private key go together (mTLS)".into(),
    }
}

/// Parses an `OTEL_EXPORTER_OTLP_HEADERS`-style value: `key1=value1,key2=value2`, keys and
/// values percent-encoded, blanks around them ignored. `name` is the variable, for errors;
/// errors hide the value (it carries API keys) and give the position of the bad entry.
///
/// ```
/// use spanflow_export::env::parse_headers;
/// let h = parse_headers("X", " a = 1 ,b=x%3Dy").unwrap();
/// assert_eq!(h, vec![("a".to_string(), "1".to_string()), ("b".to_string(), "x=y".to_string())]);
/// let err = parse_headers("X", "a=1,s3cret").unwrap_err().to_string();
/// assert!(err.contains("entry 2") && !err.contains("s3cret"), "{err}");
/// ```
pub fn parse_headers(name: &str, value: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut out = Vec::new();
    for (i, pair) in value.split(',').enumerate() {
        if pair.trim().is_empty() {
            continue;
        }
        let bad =
            |reason: &str| EnvError::invalid(name, HIDDEN, format!("entry {}: {reason}", i + 1));
        let (k, v) = pair.split_once('=').ok_or_else(|| bad("not key=value"))?;
        let k = percent_decode(k.trim()).ok_or_else(|| bad("bad percent-encoding in the key"))?;
        if k.is_empty() {
            return Err(bad("empty key"));
        }
        let v = percent_decode(v.trim()).ok_or_else(|| bad("bad percent-encoding in the value"))?;
        out.push((k, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // `from_str_radix` would take a sign ("%+f"); only two hex digits are an escape.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
