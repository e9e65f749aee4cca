//! Errors of the export layer, classified as the OTLP specification says.

use std::time::Duration;

/// Why one export attempt failed.
///
/// [`ExportError::is_retryable`] applies the OTLP exporter rules: which gRPC codes and HTTP
/// statuses are transient, and when a server-given delay (`RetryInfo`, `Retry-After`) applies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The gRPC server answered with a non-OK status.
    #[error("grpc status {code:?}: {message}")]
    Grpc {
        /// The status code.
        code: tonic::Code,
        /// The status message.
        message: String,
        /// Delay from a `google.rpc.RetryInfo` detail, if the server sent one.
        retry_after: Option<Duration>,
    },
    /// The HTTP server answered with a non-success status.
    #[error("http status {status}: {message}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The `google.rpc.Status` message of the body, or the body's text (truncated).
        message: String,
        /// Delay from a `Retry-After` header (delay-seconds, or an HTTP-date minus now, zero
        /// once passed), if present and valid.
        retry_after: Option<Duration>,
    },
    /// The request was never sent: connection refused, DNS, TLS handshake. The backend
    /// certainly did not receive it.
    #[error("transport error: {0}")]
    Transport(String),
    /// The request was sent, or partly sent, but the connection broke before an answer came:
    /// the backend may have received it.
    #[error("connection lost before an answer: {0}")]
    Interrupted(String),
    /// The attempt took longer than its timeout.
    #[error("export attempt timed out after {0:?}")]
    Timeout(Duration),
    /// The batch could not be converted for this exporter (for example to OTLP/JSON).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// A local write failed (file and stdout exporters).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Shutdown reached its deadline while the batch was still waiting or in flight.
    #[error("export cancelled by shutdown")]
    Cancelled,
}

impl ExportError {
    /// Whether a later attempt may succeed (OTLP spec, "Retry" of the exporter section).
    ///
    /// gRPC: `UNAVAILABLE`, `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`,
    /// `DATA_LOSS`, and `RESOURCE_EXHAUSTED` only when the server sent `RetryInfo`.
    /// HTTP: 429, 502, 503, 504. Transport failures and timeouts are retryable; everything
    /// else is permanent.
    ///
    /// ```
    /// use spanflow_export::ExportError;
    /// let e = ExportError::Http { status: 503, message: String::new(), retry_after: None };
    /// assert!(e.is_retryable());
    /// let e = ExportError::Http { status: 400, message: String::new(), retry_after: None };
    /// assert!(!e.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        use tonic::Code;
        match self {
            ExportError::Grpc {
                code, retry_after, ..
            } => match code {
                Code::Unavailable
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::DataLoss => true,
                Code::ResourceExhausted => retry_after.is_some(),
                _ => false,
            },
            ExportError::Http { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            ExportError::Transport(_) | ExportError::Interrupted(_) | ExportError::Timeout(_) => {
                true
            }
            ExportError::InvalidBatch(_) | ExportError::Io(_) | ExportError::Cancelled => false,
        }
    }

    /// Whether the backend may have received the batch although the attempt failed: the attempt
    /// timed out or its connection broke after the request went out. Every other error is a
    /// definitive "not delivered": an answer from the server, or a request that never left.
    ///
    /// ```
    /// use std::time::Duration;
    /// use spanflow_export::ExportError;
    /// assert!(ExportError::Timeout(Duration::from_secs(1)).may_have_arrived());
    /// assert!(!ExportError::Transport("connection refused".into()).may_have_arrived());
    /// ```
    pub fn may_have_arrived(&self) -> bool {
        matches!(self, ExportError::Timeout(_) | ExportError::Interrupted(_))
    }

    /// The delay the server asked for before the next attempt, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ExportError::Grpc { retry_after, .. } | ExportError::Http { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// Why an exporter or a configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportBuildError {
    /// The endpoint is not a valid URL for this exporter.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header name or value is not valid for HTTP/2 or gRPC metadata.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS configuration (CA certificate) could not be used.
    #[error("invalid tls configuration: {0}")]
    Tls(String),
    /// A compression this exporter does not support.
    #[error("compression {0} is not supported by this exporter")]
    UnsupportedCompression(&'static str),
    /// An environment variable or configuration value could not be parsed.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        /// The variable or key.
        key: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An OpenTelemetry environment variable is set to a value that cannot be used.
    #[error(transparent)]
    Environment(#[from] crate::env::EnvError),
    /// A file could not be opened or read (CA certificate, file exporter output). Its I/O error
    /// is the error's source.
    #[error("cannot use {path}")]
    File {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The fan-out configuration is inconsistent (no backend, duplicate names, zero sizes).
    #[error("invalid fan-out configuration: {0}")]
    FanOut(String),
    /// The configuration asks for something this build left out: a protocol, a compression or
    /// TLS whose cargo feature (of `spanflow-export`, or the same-named one of the `spanflow`
    /// facade) is not enabled.
    #[error("{what} needs the `{feature}` cargo feature, which this build does not enable")]
    FeatureDisabled {
        /// What was asked for (`"protocol http/protobuf"`, `"compression zstd"`,
        /// `"an https endpoint"`).
        what: String,
        /// The cargo feature to enable.
        feature: &'static str,
    },
}

impl ExportBuildError {
    /// [`ExportBuildError::FeatureDisabled`] for `what`, provided by `feature`.
    // Unused when every feature is on.
    #[allow(dead_code)]
    pub(crate) fn feature_disabled(what: impl Into<String>, feature: &'static str) -> Self {
        ExportBuildError::FeatureDisabled {
            what: what.into(),
            feature,
        }
    }
}
