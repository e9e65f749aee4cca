//! OTLP/gRPC: the exporter on tonic (cargo feature `grpc`), sending the pre-encoded request
//! bytes as they are, and what every build has: the byte codec, the `google.rpc.Status` and
//! `RetryInfo` helpers, and the error classification the HTTP exporter shares.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, RpcStatusExt as _, StatusExt as _};

use crate::ExportError;

#[cfg(feature = "grpc")]
mod client;
#[cfg(feature = "grpc")]
pub use client::{OtlpGrpcExporter, OtlpGrpcExporterBuilder};

/// The gRPC method every OTLP trace receiver serves.
pub const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A tonic codec for messages that are already encoded protobuf, both ways: what is sent goes
/// into the gRPC frame as it is (one copy into tonic's frame buffer, no re-encode), and what is
/// received is handed over as the frame's bytes (no decode). The relay's receiver serves with
/// it, and clients of `tonic::client::Grpc` (the relay's load generator, tests) send with it;
/// [`OtlpGrpcExporter`] itself skips tonic's codec and hands the shared bytes to HTTP/2 without
/// that copy.
///
/// ```
/// use bytes::Bytes;
/// use spanflow_export::grpc::{BytesCodec, TRACE_EXPORT_PATH};
///
/// async fn send(channel: tonic::transport::Channel, body: Bytes) -> Result<Bytes, tonic::Status> {
///     let mut client = tonic::client::Grpc::new(channel);
///     client.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
///     let path = http::uri::PathAndQuery::from_static(TRACE_EXPORT_PATH);
///     // `body` goes out as it is; the answer comes back as the response message's bytes.
///     let answer = client.unary(tonic::Request::new(body), path, BytesCodec).await?;
///     Ok(answer.into_inner())
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

/// Encoder half of [`BytesCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put(item);
        Ok(())
    }
}

/// Decoder half of [`BytesCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The delay of a `google.rpc.RetryInfo` inside `grpc-status-details-bin` (an encoded
/// `google.rpc.Status`), if any.
///
/// ```
/// use std::time::Duration;
/// let details = spanflow_export::grpc::retry_info_details(8, "slow down", Duration::from_millis(1500));
/// assert_eq!(spanflow_export::grpc::retry_info_delay(&details), Some(Duration::from_millis(1500)));
/// assert_eq!(spanflow_export::grpc::retry_info_delay(b"not a status"), None);
/// ```
pub fn retry_info_delay(details: &[u8]) -> Option<Duration> {
    tonic_types::Status::decode(details)
        .ok()?
        .get_details_retry_info()?
        .retry_delay
}

/// Encode a `google.rpc.Status` with a `RetryInfo` detail, the value of
/// `grpc-status-details-bin` (for servers and tests).
///
/// ```
/// use std::time::Duration;
/// let details = spanflow_export::grpc::retry_info_details(8, "slow down", Duration::from_millis(1500));
/// let status = tonic::Status::with_details(tonic::Code::ResourceExhausted, "slow down", details);
/// assert!(!status.details().is_empty());
/// ```
pub fn retry_info_details(code: i32, message: &str, delay: Duration) -> Bytes {
    let status = Status::with_error_details(
        Code::from_i32(code),
        message,
        ErrorDetails::with_retry_info(Some(delay)),
    );
    Bytes::copy_from_slice(status.details())
}

/// Decode the message of a `google.rpc.Status` body (OTLP/HTTP error responses).
#[cfg(feature = "http")]
pub(crate) fn rpc_status_message(body: &[u8]) -> Option<String> {
    tonic_types::Status::decode(body).ok().map(|s| s.message)
}

#[cfg_attr(not(feature = "grpc"), allow(dead_code))]
pub(crate) fn status_to_error(status: Status) -> ExportError {
    let retry_after = retry_info_delay(status.details());
    let code = status.code();
    let message = if code == Code::Unknown || code == Code::Unavailable {
        // Transport failures surface as these codes; the source chain says what happened.
        let m = status.message().to_string();
        match std::error::Error::source(&status).map(error_chain) {
            Some(chain) if chain.contains(&m) => chain,
            Some(chain) => format!("{m}: {chain}"),
            None => m,
        }
    } else {
        status.message().to_string()
    };
    ExportError::Grpc {
        code,
        message,
        retry_after,
    }
}

/// An error and its sources, joined by `: `; a source whose text is already there (many
/// errors print their source in their own message) is not repeated.
#[cfg_attr(not(any(feature = "grpc", feature = "http")), allow(dead_code))]
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let text = src.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = src.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Chained(&'static str, Option<Box<Chained>>);
    impl std::fmt::Display for Chained {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Chained {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chain_does_not_repeat_sources_already_in_the_message() {
        let leaf = Chained("invalid peer certificate: UnknownIssuer", None);
        let mid = Chained(
            "transport error: invalid peer certificate: UnknownIssuer",
            Some(Box::new(leaf)),
        );
        let top = Chained("client error (Connect)", Some(Box::new(mid)));
        assert_eq!(
            error_chain(&top),
            "client error (Connect): transport error: invalid peer certificate: UnknownIssuer"
        );
        let plain = Chained("a", Some(Box::new(Chained("b", None))));
        assert_eq!(error_chain(&plain), "a: b");
    }

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
}
