//! The OTLP/gRPC exporter (cargo feature `grpc`).

#[cfg(any(feature = "gzip", feature = "zstd"))]
use std::io::Read;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::Body as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codegen::Service as _;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::{TRACE_EXPORT_PATH, error_chain, status_to_error};
use crate::batch::grpc_prefix;
use crate::client_options::ClientOptions;
use crate::config::{Compression, DEFAULT_GRPC_ENDPOINT, DEFAULT_TIMEOUT};
use crate::error::ExportBuildError;
use crate::tls::ClientIdentity;
use crate::{ExportBatch, ExportError, ExportOutcome, Exporter};

/// Exports batches over OTLP/gRPC.
///
/// The request is built by hand on tonic's transport [`Channel`] (connection management,
/// HTTP/2, TLS): its body is the 5-byte gRPC prefix followed by the batch's own [`Bytes`],
/// handed to HTTP/2 without a copy, so a fan-out to N backends shares one buffer. With
/// compression, the compressed and framed message is computed once per batch and shared by
/// every backend using the same compression ([`ExportBatch::compressed`]). The response
/// status comes from the headers (trailers-only answers) or the trailers, as tonic reads it,
/// and `partial_success` from the decoded `ExportTraceServiceResponse`.
///
/// The channel multiplexes concurrent exports over one HTTP/2 connection; it connects lazily
/// on the first export, so building needs no runtime and no reachable server.
///
/// ```
/// use std::time::Duration;
/// use spanflow_export::{Compression, OtlpGrpcExporter};
/// let exporter = OtlpGrpcExporter::builder()
///     .endpoint("http://127.0.0.1:4317")
///     .compression(Compression::Gzip)
///     .header("x-tenant", "7")
///     .timeout(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// assert_eq!(exporter.endpoint(), "http://127.0.0.1:4317/");
/// ```
#[derive(Debug)]
pub struct OtlpGrpcExporter {
    name: String,
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
    compression: Compression,
    /// Every request header: metadata, `te`, `content-type`, `grpc-encoding`, `grpc-timeout`.
    headers: HeaderMap,
}

/// Largest response body read (an `ExportTraceServiceResponse` is tiny).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

impl OtlpGrpcExporter {
    /// A builder with the defaults (`http://localhost:4317`, no compression, 10 s timeout).
    pub fn builder() -> OtlpGrpcExporterBuilder {
        OtlpGrpcExporterBuilder::default()
    }

    /// The endpoint URI.
    pub fn endpoint(&self) -> String {
        self.endpoint.uri().to_string()
    }

    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone()
    }

    /// The request body: the shared gRPC message, never a copy of the batch.
    fn body(&self, batch: &ExportBatch) -> Result<FramedBody, ExportError> {
        Ok(match self.compression {
            Compression::None => {
                let prefix = grpc_prefix(false, batch.body.len())?;
                FramedBody::new([Bytes::copy_from_slice(&prefix), batch.body.clone()])
            }
            c => FramedBody::new([batch.compressed(c, true)?, Bytes::new()]),
        })
    }
}

impl Exporter for OtlpGrpcExporter {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let body = self.body(&batch)?;
        let mut channel = self.channel();
        std::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .map_err(|e| ExportError::Transport(error_chain(&e)))?;
        let mut request = http::Request::new(tonic::body::Body::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static(TRACE_EXPORT_PATH);
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = self.headers.clone();
        let response = channel.call(request).await.map_err(|e| {
            // The request left unless the connection could not even be made.
            let chain = error_chain(&e);
            if is_connect_error(&e) {
                ExportError::Transport(chain)
            } else {
                ExportError::Interrupted(chain)
            }
        })?;
        let message = read_response(response).await?;
        Ok(match message.and_then(|m| m.partial_success) {
            Some(p) => ExportOutcome::partial(batch.spans, p.rejected_spans, p.error_message),
            None => ExportOutcome::all_accepted(batch.spans),
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A request body of up to two shared chunks (gRPC prefix and message), never copied.
#[derive(Debug)]
struct FramedBody {
    chunks: [Option<Bytes>; 2],
}

impl FramedBody {
    fn new(chunks: [Bytes; 2]) -> Self {
        Self {
            chunks: chunks.map(|c| (!c.is_empty()).then_some(c)),
        }
    }
}

impl http_body::Body for FramedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.get_mut().chunks.iter_mut().find_map(Option::take);
        Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.iter().all(Option::is_none)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let n = self.chunks.iter().flatten().map(|c| c.len() as u64).sum();
        http_body::SizeHint::with_exact(n)
    }
}

/// The gRPC status of a response and its message, read as tonic's client reads them:
/// `grpc-status` in the headers (trailers-only) ends the call; otherwise the body is read
/// and the trailers carry the status; a non-200 HTTP status without one is mapped as the
/// gRPC HTTP-to-status table says. `Ok(None)`: OK without a message (taken as all accepted).
/// Reads the answer: a status the server sent is a definitive [`ExportError::Grpc`]; a body
/// that breaks off (stream reset, connection lost, no trailers) leaves the outcome unknown
/// ([`ExportError::Interrupted`]).
async fn read_response(
    response: http::Response<tonic::body::Body>,
) -> Result<Option<ExportTraceServiceResponse>, ExportError> {
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        return if status.code() == Code::Ok {
            Ok(None)
        } else {
            Err(status_to_error(status))
        };
    }
    if parts.status != http::StatusCode::OK {
        return Err(status_to_error(http_status(parts.status)));
    }
    let mut body = std::pin::pin!(body);
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|status| ExportError::Interrupted(error_chain(&status)))?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(status_to_error(Status::internal(
                        "export response too large",
                    )));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() == Code::Ok => {}
        Some(status) => return Err(status_to_error(status)),
        None => {
            return Err(ExportError::Interrupted(
                "the answer ended without a grpc-status trailer".into(),
            ));
        }
    }
    decode_message(data.freeze(), &parts.headers).map_err(status_to_error)
}

/// Whether `e` is a rustls error (a failed handshake); never without the `tls` feature.
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(feature = "tls")]
    return e.downcast_ref::<rustls::Error>().is_some();
    #[cfg(not(feature = "tls"))]
    {
        let _ = e;
        false
    }
}

/// Whether `e` failed while connecting, before any byte of the request was sent: the
/// connection was refused, the address could not be resolved or reached, or the TLS
/// handshake failed.
fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if is_tls_error(err) {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let refused = matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::HostUnreachable
            );
            // rustls reports a failed handshake as an I/O error wrapping its own.
            if refused || io.get_ref().is_some_and(|inner| is_tls_error(inner)) {
                return true;
            }
        }
        let text = err.to_string();
        if text.contains("tcp connect error")
            || text.contains("error trying to connect")
            || text.contains("dns error")
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Decode the (at most one) length-prefixed `ExportTraceServiceResponse` of a body.
fn decode_message(
    mut data: Bytes,
    headers: &HeaderMap,
) -> Result<Option<ExportTraceServiceResponse>, Status> {
    if data.is_empty() {
        return Ok(None);
    }
    if data.len() < 5 {
        return Err(Status::internal("truncated grpc message prefix"));
    }
    let compressed = data.get_u8() != 0;
    let len = data.get_u32() as usize;
    if data.len() < len {
        return Err(Status::internal("truncated grpc message"));
    }
    let raw = data.split_to(len);
    let raw = if compressed {
        let encoding = headers
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity");
        Bytes::from(decompress(encoding, &raw)?)
    } else {
        raw
    };
    ExportTraceServiceResponse::decode(raw)
        .map(Some)
        .map_err(|e| Status::internal(format!("cannot decode export response: {e}")))
}

/// A compressed response message, inflated (at most [`MAX_RESPONSE_BYTES`]); an encoding this
/// build cannot read (its cargo feature is off) is an `INTERNAL` status.
#[cfg_attr(
    not(any(feature = "gzip", feature = "zstd")),
    allow(unused_mut, unused_variables)
)]
fn decompress(encoding: &str, raw: &[u8]) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    let result: std::io::Result<()> = match encoding {
        #[cfg(feature = "gzip")]
        "gzip" => {
            let mut d = flate2::read::GzDecoder::new(raw).take(MAX_RESPONSE_BYTES as u64);
            d.read_to_end(&mut out).map(drop)
        }
        #[cfg(feature = "zstd")]
        "zstd" => zstd::stream::Decoder::new(raw)
            .and_then(|d| d.take(MAX_RESPONSE_BYTES as u64).read_to_end(&mut out))
            .map(drop),
        other => Err(std::io::Error::other(format!(
            "unsupported grpc-encoding {other:?}"
        ))),
    };
    result.map_err(|e| Status::internal(format!("cannot decompress export response: {e}")))?;
    Ok(out)
}

/// The gRPC status of an HTTP error without `grpc-status` (gRPC's HTTP-to-status mapping).
fn http_status(status: http::StatusCode) -> Status {
    use http::StatusCode as S;
    let code = match status {
        S::BAD_REQUEST => Code::Internal,
        S::UNAUTHORIZED => Code::Unauthenticated,
        S::FORBIDDEN => Code::PermissionDenied,
        S::NOT_FOUND => Code::Unimplemented,
        S::TOO_MANY_REQUESTS | S::BAD_GATEWAY | S::SERVICE_UNAVAILABLE | S::GATEWAY_TIMEOUT => {
            Code::Unavailable
        }
        _ => Code::Unknown,
    };
    Status::new(code, format!("http status {status} without grpc-status"))
}

/// A `grpc-timeout` value: the most precise unit whose value has at most 8 digits.
fn grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let secs = u128::from(timeout.as_secs());
    [
        (timeout.as_nanos(), 'n'),
        (timeout.as_micros(), 'u'),
        (timeout.as_millis(), 'm'),
        (secs, 'S'),
        (secs / 60, 'M'),
        (secs / 3600, 'H'),
    ]
    .into_iter()
    .find(|(v, _)| *v <= MAX)
    .map_or_else(|| format!("{MAX}H"), |(v, unit)| format!("{v}{unit}"))
}

/// Builder of [`OtlpGrpcExporter`].
#[derive(Debug)]
pub struct OtlpGrpcExporterBuilder {
    endpoint: String,
    timeout: Duration,
    client: ClientOptions,
}

impl Default for OtlpGrpcExporterBuilder {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_GRPC_ENDPOINT.to_string(),
            timeout: DEFAULT_TIMEOUT,
            client: ClientOptions::default(),
        }
    }
}

impl OtlpGrpcExporterBuilder {
    crate::client_options::client_setters!();

    /// Endpoint URL; `https` turns TLS on, a missing scheme means `http`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }
    /// Per-request deadline, sent as `grpc-timeout` and enforced by the channel.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Validate everything and build the exporter (no connection is made yet).
    ///
    /// A compression or an `https` endpoint that this build left out (cargo features `gzip`,
    /// `zstd`, `tls`) is [`ExportBuildError::FeatureDisabled`].
    pub fn build(self) -> Result<OtlpGrpcExporter, ExportBuildError> {
        self.client.compression.check_available()?;
        let raw = self.endpoint.trim();
        let uri = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let bad = |reason: String| ExportBuildError::InvalidEndpoint {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| bad(error_chain(&e)))?
            .timeout(self.timeout)
            .connect_timeout(self.client.connect_timeout)
            .tcp_nodelay(true);
        match endpoint.uri().scheme_str() {
            Some("http") if self.client.identity.is_some() => {
                return Err(bad(
                    "a client certificate (mTLS) needs an https endpoint".into()
                ));
            }
            Some("http") => {}
            Some("https") => {
                endpoint = with_tls(
                    endpoint,
                    self.client.ca_pem.as_deref(),
                    self.client.identity.as_ref(),
                )?;
            }
            other => return Err(bad(format!("unsupported scheme {other:?}"))),
        }
        let mut metadata = MetadataMap::new();
        // Headers gRPC reserves for itself are not metadata (tonic drops them too).
        const RESERVED: [&str; 7] = [
            "te",
            "content-type",
            "user-agent",
            "grpc-timeout",
            "grpc-encoding",
            "grpc-message",
            "grpc-status",
        ];
        for (k, v) in &self.client.headers {
            let invalid = |reason: String| ExportBuildError::InvalidHeader {
                name: k.clone(),
                reason,
            };
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|e| invalid(e.to_string()))?;
            let value = MetadataValue::try_from(v.as_str()).map_err(|e| invalid(e.to_string()))?;
            if RESERVED.contains(&key.as_str()) {
                tracing::warn!(header = %k, "ignoring a header gRPC reserves");
                continue;
            }
            metadata.insert(key, value);
        }
        let mut headers = metadata.into_headers();
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        match self.client.compression {
            Compression::None => {}
            Compression::Gzip => {
                headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
            }
            Compression::Zstd => {
                headers.insert("grpc-encoding", HeaderValue::from_static("zstd"));
            }
        }
        let timeout = HeaderValue::try_from(grpc_timeout(self.timeout))
            .map_err(|e| bad(format!("invalid timeout: {e}")))?;
        headers.insert("grpc-timeout", timeout);
        Ok(OtlpGrpcExporter {
            name: self
                .client
                .name
                .unwrap_or_else(|| format!("otlp-grpc {uri}")),
            endpoint,
            channel: OnceLock::new(),
            compression: self.client.compression,
            headers,
        })
    }
}

/// Without the `tls` feature an `https` endpoint is refused, naming the feature.
#[cfg(not(feature = "tls"))]
fn with_tls(
    _endpoint: Endpoint,
    _ca_pem: Option<&[u8]>,
    _identity: Option<&ClientIdentity>,
) -> Result<Endpoint, ExportBuildError> {
    Err(ExportBuildError::feature_disabled(
        "an https endpoint",
        "tls",
    ))
}

/// Turn TLS on for `endpoint`: the system roots plus the CA `ca_pem`, if given.
///
/// tonic refuses to build a TLS config with system roots when the system has none (a
/// minimal container without a CA bundle), which would make a configured CA unusable
/// there; with a CA, that case falls back to trusting the CA alone, as the HTTP exporter
/// (reqwest) does. Without a CA it stays a build error: no server could be verified.
/// `identity`, if given, is presented to the server (mutual TLS).
#[cfg(feature = "tls")]
fn with_tls(
    endpoint: Endpoint,
    ca_pem: Option<&[u8]>,
    identity: Option<&ClientIdentity>,
) -> Result<Endpoint, ExportBuildError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    if let Some(identity) = identity {
        identity.check()?;
    }
    let config = |native_roots: bool| {
        let mut tls = ClientTlsConfig::new();
        if native_roots {
            tls = tls.with_native_roots();
        }
        if let Some(pem) = ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some(identity) = identity {
            tls = tls.identity(Identity::from_pem(&identity.certificate, &identity.key));
        }
        tls
    };
    let Some(pem) = ca_pem else {
        return endpoint
            .tls_config(config(true))
            .map_err(|e| ExportBuildError::Tls(error_chain(&e)));
    };
    // tonic skips what is not a certificate: refuse a CA that adds nothing.
    crate::tls::ca_certificates(pem)?;
    match endpoint.clone().tls_config(config(true)) {
        Ok(endpoint) => Ok(endpoint),
        Err(e) => {
            tracing::debug!(
                error = %error_chain(&e),
                "system root certificates unusable; trusting only the given CA"
            );
            endpoint
                .tls_config(config(false))
                .map_err(|e| ExportBuildError::Tls(error_chain(&e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_endpoints_and_headers_are_build_errors() {
        assert!(
            OtlpGrpcExporter::builder()
                .endpoint("ftp://x")
                .build()
                .is_err()
        );
        assert!(
            OtlpGrpcExporter::builder()
                .header("bad header", "v")
                .build()
                .is_err()
        );
        assert!(
            OtlpGrpcExporter::builder()
                .endpoint("localhost:4317")
                .build()
                .is_ok()
        );
    }

    #[test]
    fn grpc_timeout_uses_the_most_precise_unit_of_at_most_8_digits() {
        assert_eq!(grpc_timeout(Duration::from_millis(50)), "50000000n");
        assert_eq!(grpc_timeout(Duration::from_secs(10)), "10000000u");
        assert_eq!(grpc_timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
        assert_eq!(grpc_timeout(Duration::MAX), "99999999H");
    }

    #[test]
    fn reserved_headers_are_not_sent_as_metadata() {
        let e = OtlpGrpcExporter::builder()
            .header("content-type", "text/plain")
            .header("x-ok", "1")
            .build()
            .unwrap();
        assert_eq!(e.headers["content-type"], "application/grpc");
        assert_eq!(e.headers["x-ok"], "1");
    }

    #[test]
    #[cfg(feature = "tls")]
    fn https_endpoint_turns_tls_on() {
        let e = OtlpGrpcExporter::builder()
            .endpoint("https://collector:4317")
            .build()
            .unwrap();
        assert_eq!(e.endpoint(), "https://collector:4317/");
    }

    #[test]
    #[cfg(feature = "tls")]
    fn a_ca_without_certificates_is_a_build_error() {
        for pem in [
            &b"not a pem"[..],
            b"",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let e = OtlpGrpcExporter::builder()
                .endpoint("https://collector:4317")
                .ca_certificate_pem(pem.to_vec())
                .build();
            assert!(matches!(e, Err(ExportBuildError::Tls(_))), "{pem:?}: {e:?}");
        }
    }
}
