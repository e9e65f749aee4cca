//! The OTLP/gRPC receiver: `TraceService/Export` on tonic, with a codec that hands the request
//! body over as raw protobuf bytes, so spans are indexed by the wire model, never decoded.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::HeaderValue;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};

use super::{NotTaken, Shared, ingest};
use crate::metrics::{Outcome, Protocol};
use crate::wire::TraceRequest;

/// The gRPC path of the one method the receiver serves.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A tonic codec whose messages are raw protobuf bytes in both directions.
///
/// Decoding takes the (already decompressed) message body without copying; encoding writes
/// bytes that the caller prost-encoded itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

/// Encoder half of [`BytesCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesEncoder;

/// Decoder half of [`BytesCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesDecoder;

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

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The `TraceService` server: a tower service for tonic's router.
#[derive(Debug, Clone)]
pub struct TraceServiceServer {
    shared: Shared,
    max_message_size: usize,
}

impl TraceServiceServer {
    /// A server feeding `shared`'s sink, refusing messages larger than `max_message_size`
    /// (after decompression) with `RESOURCE_EXHAUSTED`.
    pub fn new(shared: Shared, max_message_size: usize) -> Self {
        Self {
            shared,
            max_message_size,
        }
    }
}

impl NamedService for TraceServiceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for TraceServiceServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            let status = Status::unimplemented(format!("unknown method {}", req.uri().path()));
            return Box::pin(ready(Ok(status.into_http())));
        }
        let shared = self.shared.clone();
        let max = self.max_message_size;
        Box::pin(async move {
            // Request bytes are reserved as they arrive, before tonic buffers them, and held
            // until the answer: across every stream the receivers hold at most the allowance.
            let Some(reservation) = shared.reserve(0) else {
                shared
                    .metrics()
                    .request(Protocol::Grpc, Outcome::Backpressure);
                return Ok(in_flight_full().into_http());
            };
            let reservation = Arc::new(reservation);
            let refused = Arc::new(AtomicBool::new(false));
            let req = req.map(|body| {
                LimitedBody::new(body, reservation.clone(), refused.clone(), max as u64)
            });
            let mut grpc = Grpc::new(BytesCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max)
                .max_encoding_message_size(usize::MAX);
            let method = ExportMethod {
                shared: shared.clone(),
            };
            let response = grpc.unary(method, req).await;
            drop(reservation);
            // Relaxed: set by the body, which tonic polled to completion inside `unary`.
            if refused.load(Ordering::Relaxed) {
                shared
                    .metrics()
                    .request(Protocol::Grpc, Outcome::Backpressure);
                return Ok(response);
            }
            Ok(too_large_is_resource_exhausted(&shared, response))
        })
    }
}

/// How long a client told "too many request bytes in flight" should wait: bodies in flight
/// are read and handed on within milliseconds.
const IN_FLIGHT_RETRY: Duration = Duration::from_millis(250);

/// The answer when the request bytes in flight across all streams are at their bound.
fn in_flight_full() -> Status {
    let message = "too many request bytes in flight, retry later";
    Status::with_details(
        Code::Unavailable,
        message,
        retry_info(Code::Unavailable, message, IN_FLIGHT_RETRY),
    )
}

/// A gRPC request body that reserves its bytes from the relay's in-flight allowance before
/// tonic buffers them: when the 5-byte message header arrives, the whole declared message
/// (and, if it is compressed, room for its decompressed form, bounded by the message limit)
/// is reserved at once, because tonic allocates that much as soon as it reads the header.
/// When the allowance cannot cover it the body fails with `UNAVAILABLE` and `RetryInfo`, and
/// tonic answers with that status without reading further.
struct LimitedBody<B> {
    inner: Pin<Box<B>>,
    reservation: Arc<super::Reservation>,
    refused: Arc<AtomicBool>,
    max_message: u64,
    header: [u8; 5],
    header_len: usize,
    received: u64,
}

impl<B> LimitedBody<B> {
    fn new(
        inner: B,
        reservation: Arc<super::Reservation>,
        refused: Arc<AtomicBool>,
        max_message: u64,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
            reservation,
            refused,
            max_message,
            header: [0; 5],
            header_len: 0,
            received: 0,
        }
    }

    /// Bytes this body needs reserved once `data` has arrived.
    fn needed(&mut self, data: &[u8]) -> u64 {
        let take = (self.header.len() - self.header_len).min(data.len());
        self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
        self.header_len += take;
        self.received += data.len() as u64;
        if self.header_len < self.header.len() {
            return self.received;
        }
        let [flag, a, b, c, d] = self.header;
        let declared = u64::from(u32::from_be_bytes([a, b, c, d]));
        if declared > self.max_message {
            // tonic refuses it from the header alone, before allocating anything.
            return self.received;
        }
        let decompressed = if flag == 1 { self.max_message } else { 0 };
        self.received.max(5 + declared) + decompressed
    }
}

impl<B> http_body::Body for LimitedBody<B>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let frame = match self.inner.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(Status::from_error(e.into()))));
            }
            Poll::Ready(Some(Ok(frame))) => {
                frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
            }
        };
        if let Some(data) = frame.data_ref() {
            let needed = self.needed(data);
            if !self.reservation.grow_to(needed) {
                // Relaxed: read by the request's own future after tonic finished with the body.
                self.refused.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(in_flight_full())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// tonic answers an over-long message with `OUT_OF_RANGE`; OTLP wants `RESOURCE_EXHAUSTED`
/// (without RetryInfo, so clients do not retry it). Over-long after decompression is already
/// `RESOURCE_EXHAUSTED`. The export method itself never answers either code.
fn too_large_is_resource_exhausted(
    shared: &Shared,
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok());
    match code.map(Code::from_i32) {
        Some(Code::OutOfRange) => {
            response.headers_mut().insert(
                "grpc-status",
                HeaderValue::from(Code::ResourceExhausted as i32),
            );
            shared.metrics().request(Protocol::Grpc, Outcome::TooLarge);
        }
        Some(Code::ResourceExhausted) => {
            shared.metrics().request(Protocol::Grpc, Outcome::TooLarge);
        }
        Some(Code::Internal) => {
            // Undecodable compression or framing.
            shared.metrics().request(Protocol::Grpc, Outcome::Malformed);
        }
        _ => {}
    }
    response
}

struct ExportMethod {
    shared: Shared,
}

impl UnaryService<Bytes> for ExportMethod {
    type Response = Bytes;
    type Future = Ready<Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        ready(export(&self.shared, request.into_inner()).map(tonic::Response::new))
    }
}

fn export(shared: &Shared, body: Bytes) -> Result<Bytes, Status> {
    let request = match TraceRequest::parse(body) {
        Ok(r) => r,
        Err(e) => {
            shared.metrics().request(Protocol::Grpc, Outcome::Malformed);
            tracing::debug!(error = %e, "malformed grpc export request");
            return Err(Status::invalid_argument(e.to_string()));
        }
    };
    match ingest(shared, Protocol::Grpc, request) {
        Ok(ingested) => {
            let partial_success = (ingested.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: ingested.rejected as i64,
                error_message: ingested.message,
            });
            Ok(Bytes::from(
                ExportTraceServiceResponse { partial_success }.encode_to_vec(),
            ))
        }
        Err(NotTaken::Backpressure { retry_after }) => Err(Status::with_details(
            Code::Unavailable,
            "memory budget full, retry later",
            retry_info(
                Code::Unavailable,
                "memory budget full, retry later",
                retry_after,
            ),
        )),
        Err(NotTaken::Closed) => Err(Status::unavailable("relay is shutting down, retry later")),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// A `google.rpc.Status` carrying a `google.rpc.RetryInfo`, for `grpc-status-details-bin`.
fn retry_info(code: Code, message: &str, delay: Duration) -> Bytes {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let status = RpcStatus {
        code: code as i32,
        message: message.to_owned(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".to_owned(),
            value: info.encode_to_vec(),
        }],
    };
    Bytes::from(status.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_round_trips() {
        let bytes = retry_info(Code::Unavailable, "full", Duration::from_millis(1500));
        let status = RpcStatus::decode(bytes).expect("valid status");
        assert_eq!(status.code, Code::Unavailable as i32);
        assert_eq!(status.details.len(), 1);
        let info = RetryInfo::decode(status.details[0].value.as_slice()).expect("valid info");
        let d = info.retry_delay.expect("delay");
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
    }
}
