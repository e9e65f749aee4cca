//! OTLP/gRPC exporter on tonic, sending the pre-encoded request bytes as they are.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::config::{Compression, DEFAULT_GRPC_ENDPOINT, DEFAULT_TIMEOUT};
use crate::error::BuildError;
use crate::{ExportBatch, ExportError, ExportOutcome, Exporter};

/// The gRPC method every OTLP trace receiver serves.
pub const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A tonic codec whose request message is the already-encoded protobuf: the bytes go into
/// the gRPC frame as they are (one copy into tonic's frame buffer, no decode, no re-encode);
/// the response is decoded with prost to read `partial_success`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreEncodedCodec;

impl Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PreEncodedEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

/// Encoder half of [`PreEncodedCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PreEncodedEncoder;

impl Encoder for PreEncodedEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put(item);
        Ok(())
    }
}

/// Decoder half of [`PreEncodedCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let len = src.remaining();
        let msg = ExportTraceServiceResponse::decode(src.copy_to_bytes(len))
            .map_err(|e| Status::internal(format!("cannot decode export response: {e}")))?;
        Ok(Some(msg))
    }
}

/// Exports batches over OTLP/gRPC.
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
    client: OnceLock<tonic::client::Grpc<Channel>>,
    compression: Compression,
    metadata: MetadataMap,
    timeout: Duration,
}

impl OtlpGrpcExporter {
    /// A builder with the defaults (`http://localhost:4317`, no compression, 10 s timeout).
    pub fn builder() -> OtlpGrpcExporterBuilder {
        OtlpGrpcExporterBuilder::default()
    }

    /// The endpoint URI.
    pub fn endpoint(&self) -> String {
        self.endpoint.uri().to_string()
    }

    fn client(&self) -> tonic::client::Grpc<Channel> {
        self.client
            .get_or_init(|| {
                let mut grpc = tonic::client::Grpc::new(self.endpoint.connect_lazy())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd);
                match self.compression {
                    Compression::None => {}
                    Compression::Gzip => grpc = grpc.send_compressed(CompressionEncoding::Gzip),
                    Compression::Zstd => grpc = grpc.send_compressed(CompressionEncoding::Zstd),
                }
                grpc
            })
            .clone()
    }
}

impl Exporter for OtlpGrpcExporter {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let mut client = self.client();
        client
            .ready()
            .await
            .map_err(|e| ExportError::Transport(error_chain(&e)))?;
        let mut request = tonic::Request::new(batch.body);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        let response = client
            .unary(
                request,
                PathAndQuery::from_static(TRACE_EXPORT_PATH),
                PreEncodedCodec,
            )
            .await
            .map_err(status_to_error)?;
        Ok(match response.into_inner().partial_success {
            Some(p) => ExportOutcome::partial(batch.spans, p.rejected_spans, p.error_message),
            None => ExportOutcome::all_accepted(batch.spans),
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Builder of [`OtlpGrpcExporter`].
#[derive(Debug)]
pub struct OtlpGrpcExporterBuilder {
    name: Option<String>,
    endpoint: String,
    compression: Compression,
    headers: BTreeMap<String, String>,
    timeout: Duration,
    connect_timeout: Duration,
    ca_pem: Option<Vec<u8>>,
}

impl Default for OtlpGrpcExporterBuilder {
    fn default() -> Self {
        Self {
            name: None,
            endpoint: DEFAULT_GRPC_ENDPOINT.to_string(),
            compression: Compression::None,
            headers: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            ca_pem: None,
        }
    }
}

impl OtlpGrpcExporterBuilder {
    /// Exporter name for logs and stats (default: `otlp-grpc <endpoint>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Endpoint URL; `https` turns TLS on, a missing scheme means `http`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }
    /// Request compression.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }
    /// Add metadata entries sent with every request.
    pub fn headers<K: Into<String>, V: Into<String>>(
        mut self,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.headers
            .extend(headers.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }
    /// Add one metadata entry sent with every request.
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers([(name, value)])
    }
    /// Per-request deadline, sent as `grpc-timeout` and enforced by the channel.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// TCP connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Trust these PEM CA certificate(s) (for `https` endpoints) in addition to the system roots.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Validate everything and build the exporter (no connection is made yet).
    pub fn build(self) -> Result<OtlpGrpcExporter, BuildError> {
        let raw = self.endpoint.trim();
        let uri = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let bad = |reason: String| BuildError::InvalidEndpoint {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| bad(error_chain(&e)))?
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        match endpoint.uri().scheme_str() {
            Some("http") => {}
            Some("https") => {
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if let Some(pem) = &self.ca_pem {
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| BuildError::Tls(error_chain(&e)))?;
            }
            other => return Err(bad(format!("unsupported scheme {other:?}"))),
        }
        let mut metadata = MetadataMap::new();
        for (k, v) in &self.headers {
            let invalid = |reason: String| BuildError::InvalidHeader {
                name: k.clone(),
                reason,
            };
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|e| invalid(e.to_string()))?;
            let value = MetadataValue::try_from(v.as_str()).map_err(|e| invalid(e.to_string()))?;
            metadata.insert(key, value);
        }
        Ok(OtlpGrpcExporter {
            name: self.name.unwrap_or_else(|| format!("otlp-grpc {uri}")),
            endpoint,
            client: OnceLock::new(),
            compression: self.compression,
            metadata,
            timeout: self.timeout,
        })
    }
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The delay of a `google.rpc.RetryInfo` inside `grpc-status-details-bin`, if any.
pub(crate) fn retry_info_delay(details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(details).ok()?;
    status
        .details
        .iter()
        .filter(|any| any.type_url.ends_with("google.rpc.RetryInfo"))
        .find_map(|any| RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay)
        .map(|d| {
            Duration::new(
                d.seconds.max(0) as u64,
                d.nanos.clamp(0, 999_999_999) as u32,
            )
        })
}

/// Encode a `google.rpc.Status` with a `RetryInfo` detail (for servers and tests).
///
/// ```
/// use std::time::Duration;
/// let details = spanflow_export::grpc::retry_info_details(8, "slow down", Duration::from_millis(1500));
/// let status = tonic::Status::with_details(tonic::Code::ResourceExhausted, "slow down", details);
/// assert!(!status.details().is_empty());
/// ```
pub fn retry_info_details(code: i32, message: &str, delay: Duration) -> Bytes {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    RpcStatus {
        code,
        message: message.to_string(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE.to_string(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
    .into()
}

/// Decode the message of a `google.rpc.Status` body (OTLP/HTTP error responses).
pub(crate) fn rpc_status_message(body: &[u8]) -> Option<String> {
    RpcStatus::decode(body).ok().map(|s| s.message)
}

fn status_to_error(status: Status) -> ExportError {
    let retry_after = retry_info_delay(status.details());
    let code = status.code();
    let message = if code == Code::Unknown || code == Code::Unavailable {
        // Transport failures surface as these codes; the source chain says what happened.
        let mut m = status.message().to_string();
        if let Some(src) = std::error::Error::source(&status) {
            m = format!("{m}: {}", error_chain(src));
        }
        m
    } else {
        status.message().to_string()
    };
    ExportError::Grpc {
        code,
        message,
        retry_after,
    }
}

/// An error and its sources, joined by `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_round_trips() {
        let d = retry_info_details(8, "x", Duration::from_millis(1250));
        assert_eq!(retry_info_delay(&d), Some(Duration::from_millis(1250)));
        assert_eq!(retry_info_delay(b"garbage\xff"), None);
    }

    #[test]
    fn resource_exhausted_needs_retry_info() {
        let plain = status_to_error(Status::resource_exhausted("full"));
        assert!(!plain.is_retryable());
        let with = status_to_error(Status::with_details(
            Code::ResourceExhausted,
            "full",
            retry_info_details(8, "full", Duration::from_secs(1)),
        ));
        assert!(with.is_retryable());
        assert_eq!(with.retry_after(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn spec_codes_are_classified() {
        for code in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert!(
                status_to_error(Status::new(code, "")).is_retryable(),
                "{code:?}"
            );
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Internal,
            Code::Unimplemented,
        ] {
            assert!(
                !status_to_error(Status::new(code, "")).is_retryable(),
                "{code:?}"
            );
        }
    }

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
    fn https_endpoint_turns_tls_on() {
        let e = OtlpGrpcExporter::builder()
            .endpoint("https://collector:4317")
            .build()
            .unwrap();
        assert_eq!(e.endpoint(), "https://collector:4317/");
    }
}
