//! The OTLP/gRPC receiver: `TraceService/Export` on tonic, with a codec that hands the request
//! body over as raw protobuf bytes, so spans are indexed by the wire model, never decoded.
//!
//! Before tonic sees a request, the receiver checks its credentials and content type from the
//! headers, and frames its body itself (`LimitedBody`): bytes are admitted as they arrive,
//! a message reaches tonic only when whole, the body has a deadline, and a unary call carries
//! exactly one message.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::ready;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::HeaderValue;
use http_body::Frame;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use parking_lot::Mutex;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::{NotTaken, Shared, ingest};
use crate::metrics::{Outcome, ReceiverProtocol};
use crate::wire::TraceRequest;

/// The gRPC path of the one method the receiver serves.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The pass-through codec the receiver serves with (request and response as encoded bytes).
pub use spanflow::export::grpc::BytesCodec;

/// The `TraceService` server: a tower service for tonic's router.
#[derive(Debug, Clone)]
pub(crate) struct TraceServiceServer {
    shared: Shared,
    max_message_size: usize,
}

impl TraceServiceServer {
    /// A server feeding `shared`'s sink, refusing messages larger than `max_message_size`
    /// (after decompression) with `RESOURCE_EXHAUSTED`.
    pub(crate) fn new(shared: Shared, max_message_size: usize) -> Self {
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
        let metrics = shared.metrics().clone();
        // Credentials first, from the headers alone: nothing of the body is read for a client
        // that may not send.
        if let Err((failure, _)) = shared.authenticate(ReceiverProtocol::Grpc, req.headers()) {
            let status = Status::unauthenticated(failure.message());
            return Box::pin(ready(Ok(status.into_http())));
        }
        if let Err(message) = check_content_type(req.headers()) {
            // As grpc-go answers: HTTP 415, so no HTTP client mistakes it for success, with a
            // gRPC status for gRPC clients.
            metrics.request(ReceiverProtocol::Grpc, Outcome::UnsupportedMediaType);
            let mut response = Status::invalid_argument(message).into_http();
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Box::pin(ready(Ok(response)));
        }
        if !shared.is_accepting() {
            metrics.request(ReceiverProtocol::Grpc, Outcome::Closed);
            return Box::pin(ready(Ok(closed().into_http())));
        }
        let max = self.max_message_size;
        // Request bytes are reserved as they arrive and held until the answer: across every
        // stream the receivers hold at most the allowance.
        let Some(reservation) = shared.reserve(0) else {
            metrics.request(ReceiverProtocol::Grpc, Outcome::Backpressure);
            return Box::pin(ready(Ok(in_flight_full().into_http())));
        };
        let compressed = req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() != b"identity");
        let verdict = Arc::new(Mutex::new(None));
        let req = req.map(|body| {
            LimitedBody::new(
                body,
                reservation,
                verdict.clone(),
                max as u64,
                compressed,
                shared.body_read_timeout(),
            )
        });
        Box::pin(async move {
            let mut grpc = Grpc::new(BytesCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max)
                .max_encoding_message_size(usize::MAX);
            let method = ExportMethod {
                shared: shared.clone(),
            };
            let response = grpc.unary(method, req).await;
            // The body's own refusals (set before tonic finished with it) are already counted
            // by their outcome; the rest are tonic's answers, mapped to OTLP's codes.
            let refused = verdict.lock().take();
            if let Some(outcome) = refused {
                metrics.request(ReceiverProtocol::Grpc, outcome);
                return Ok(response);
            }
            Ok(library_status_to_otlp(&shared, response))
        })
    }
}

/// Refuses a content type other than `application/grpc` or `application/grpc+proto` (the
/// receiver's codec is protobuf).
fn check_content_type(headers: &http::HeaderMap) -> Result<(), String> {
    let value = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/grpc")
        || essence.eq_ignore_ascii_case("application/grpc+proto")
    {
        Ok(())
    } else {
        Err(format!(
            "invalid gRPC request content-type `{value}`, expected application/grpc or application/grpc+proto"
        ))
    }
}

/// How long a client told "too many request bytes in flight" should wait: bodies in flight
/// are read and handed on within milliseconds.
const IN_FLIGHT_RETRY: Duration = Duration::from_millis(250);

/// The answer when the request bytes in flight across all streams are at their bound.
fn in_flight_full() -> Status {
    let message = "too many request bytes in flight, retry later";
    Status::with_error_details(
        Code::Unavailable,
        message,
        ErrorDetails::with_retry_info(Some(IN_FLIGHT_RETRY)),
    )
}

/// The answer while the relay drains.
fn closed() -> Status {
    Status::unavailable("relay is shutting down, retry later")
}

/// Length of a gRPC message prefix: compressed flag and big-endian length.
const PREFIX: usize = 5;

/// A gRPC request body that frames the request itself before tonic sees any of it, so that
/// what a client declares costs nothing until it is sent:
///
/// * each message's bytes are held here, reserved from the relay's in-flight allowance as they
///   arrive, and handed to tonic only once the whole message is in (tonic allocates the
///   declared length as soon as it reads a prefix); at that point room for tonic's copy and,
///   for a compressed message, its decompressed form is reserved too;
/// * the body must end within the body read timeout of the request's headers;
/// * the framing is checked as it arrives: a flag other than 0/1, a compressed flag without a
///   `grpc-encoding`, a message beyond the limit, a truncated message, and a unary call with
///   zero or several messages are each refused with their status (without the rest of the
///   body being read).
///
/// A refusal fails the body with that status, which tonic answers, and leaves its outcome in
/// `verdict` for the metrics.
struct LimitedBody<B> {
    inner: Pin<Box<B>>,
    reservation: super::Reservation,
    verdict: Arc<Mutex<Option<Outcome>>>,
    max_message: u64,
    compressed_allowed: bool,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The current message's prefix, as far as it has arrived.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// The current message's declared length, once its prefix is complete.
    declared: Option<u64>,
    /// The current message's bytes (prefix included) not yet handed to tonic.
    held: VecDeque<Bytes>,
    held_len: u64,
    /// Messages complete so far.
    messages: u32,
    /// Whether `held` is a complete message being handed on.
    releasing: bool,
    /// Set once the body failed; nothing more is read.
    failed: bool,
    /// Set once the end of the body was handed on.
    ended: bool,
}

impl<B> LimitedBody<B> {
    fn new(
        inner: B,
        reservation: super::Reservation,
        verdict: Arc<Mutex<Option<Outcome>>>,
        max_message: u64,
        compressed_allowed: bool,
        timeout: Duration,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
            reservation,
            verdict,
            max_message,
            compressed_allowed,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            prefix: [0; PREFIX],
            prefix_len: 0,
            declared: None,
            held: VecDeque::new(),
            held_len: 0,
            messages: 0,
            releasing: false,
            failed: false,
            ended: false,
        }
    }

    fn fail(
        &mut self,
        outcome: Outcome,
        status: Status,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.failed = true;
        self.held.clear();
        *self.verdict.lock() = Some(outcome);
        Poll::Ready(Some(Err(status)))
    }

    fn timed_out(&mut self) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let message = format!(
            "request message not received within {}",
            crate::config::HumanDuration(self.timeout)
        );
        self.fail(Outcome::Timeout, Status::deadline_exceeded(message))
    }

    /// Takes in a chunk of the body; `Err` is a refusal.
    fn take_in(&mut self, mut data: Bytes) -> Result<(), (Outcome, Status)> {
        while !data.is_empty() {
            if self.messages > 0 {
                return Err((
                    Outcome::Malformed,
                    Status::unimplemented(
                        "more than one request message in a unary call (request cardinality violation)",
                    ),
                ));
            }
            let Some(declared) = self.declared else {
                let take = (PREFIX - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
                self.prefix_len += take;
                self.hold(data.split_to(take));
                if self.prefix_len == PREFIX {
                    self.declared = Some(self.check_prefix()?);
                    self.complete_if_whole()?;
                }
                continue;
            };
            let missing = PREFIX as u64 + declared - self.held_len;
            let take = (missing.min(data.len() as u64)) as usize;
            self.hold(data.split_to(take));
            self.complete_if_whole()?;
        }
        if !self.reservation.grow_to(self.held_len) {
            return Err((Outcome::Backpressure, in_flight_full()));
        }
        Ok(())
    }

    fn hold(&mut self, bytes: Bytes) {
        self.held_len += bytes.len() as u64;
        self.held.push_back(bytes);
    }

    /// The declared length of a complete prefix, or the refusal of a bad one.
    fn check_prefix(&self) -> Result<u64, (Outcome, Status)> {
        let [flag, a, b, c, d] = self.prefix;
        let declared = u64::from(u32::from_be_bytes([a, b, c, d]));
        match flag {
            0 => {}
            1 if self.compressed_allowed => {}
            1 => {
                return Err((
                    Outcome::Malformed,
                    Status::invalid_argument(
                        "message has the compressed flag but the request has no grpc-encoding",
                    ),
                ));
            }
            other => {
                return Err((
                    Outcome::Malformed,
                    Status::invalid_argument(format!(
                        "invalid compressed flag {other} (0 or 1 expected)"
                    )),
                ));
            }
        }
        if declared > self.max_message {
            return Err((
                Outcome::TooLarge,
                Status::resource_exhausted(format!(
                    "message of {declared} bytes is larger than the limit of {} bytes",
                    self.max_message
                )),
            ));
        }
        Ok(declared)
    }

    /// When the message is whole: reserves room for tonic's copy of it (and its decompressed
    /// form) and starts handing it on.
    fn complete_if_whole(&mut self) -> Result<(), (Outcome, Status)> {
        let Some(declared) = self.declared else {
            return Ok(());
        };
        if self.held_len < PREFIX as u64 + declared {
            return Ok(());
        }
        self.messages += 1;
        let decompressed = if self.prefix[0] == 1 {
            self.max_message
        } else {
            0
        };
        if !self.reservation.grow_to(2 * self.held_len + decompressed) {
            return Err((Outcome::Backpressure, in_flight_full()));
        }
        self.releasing = true;
        Ok(())
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
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if self.failed {
                return Poll::Ready(None);
            }
            if self.releasing {
                if let Some(chunk) = self.held.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                self.releasing = false;
            }
            if tokio::time::Instant::now() >= self.deadline.deadline() {
                return self.timed_out();
            }
            let frame = match self.inner.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    if self.deadline.as_mut().poll(cx).is_ready() {
                        return self.timed_out();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    if self.messages == 0 {
                        let status = if self.prefix_len == 0 {
                            Status::unimplemented(
                                "no request message in a unary call (request cardinality violation)",
                            )
                        } else {
                            Status::invalid_argument(format!(
                                "truncated gRPC message: the stream ended after {} of {} bytes",
                                self.held_len,
                                self.declared
                                    .map_or("?".to_owned(), |d| (d + PREFIX as u64).to_string())
                            ))
                        };
                        return self.fail(Outcome::Malformed, status);
                    }
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(Status::from_error(e.into()))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(mut data) => data.copy_to_bytes(data.remaining()),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => return Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    Err(_) => continue,
                },
            };
            if let Err((outcome, status)) = self.take_in(data) {
                return self.fail(outcome, status);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not the inner body's: an empty body must still be polled, so that it is refused.
        self.failed || self.ended
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::default()
    }
}

/// Maps tonic's own answers to the statuses OTLP and the README promise: an over-long message
/// `OUT_OF_RANGE` → `RESOURCE_EXHAUSTED` (without RetryInfo, so clients do not retry it);
/// undecodable compression `INTERNAL` → `INVALID_ARGUMENT`; and counts them. The export method
/// itself never answers these codes.
fn library_status_to_otlp(
    shared: &Shared,
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok());
    let mut set = |code: Code, outcome: Outcome| {
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from(code as i32));
        shared.metrics().request(ReceiverProtocol::Grpc, outcome);
    };
    match code.map(Code::from_i32) {
        Some(Code::OutOfRange) => set(Code::ResourceExhausted, Outcome::TooLarge),
        Some(Code::ResourceExhausted) => set(Code::ResourceExhausted, Outcome::TooLarge),
        Some(Code::Internal) => set(Code::InvalidArgument, Outcome::Malformed),
        // An unsupported grpc-encoding: tonic answers UNIMPLEMENTED with grpc-accept-encoding.
        Some(Code::Unimplemented) => set(Code::Unimplemented, Outcome::UnsupportedMediaType),
        _ => {}
    }
    response
}

struct ExportMethod {
    shared: Shared,
}

impl UnaryService<Bytes> for ExportMethod {
    type Response = Bytes;
    type Future = BoxFuture<Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            export(&shared, request.into_inner())
                .await
                .map(tonic::Response::new)
        })
    }
}

async fn export(shared: &Shared, body: Bytes) -> Result<Bytes, Status> {
    let request = match TraceRequest::parse(body) {
        Ok(r) => r,
        Err(e) => {
            shared
                .metrics()
                .request(ReceiverProtocol::Grpc, Outcome::Malformed);
            tracing::debug!(error = %e, "malformed grpc export request");
            return Err(Status::invalid_argument(e.to_string()));
        }
    };
    match ingest(shared, ReceiverProtocol::Grpc, request).await {
        Ok(ingested) => {
            let partial_success = (ingested.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: ingested.rejected as i64,
                error_message: ingested.message,
            });
            Ok(Bytes::from(
                ExportTraceServiceResponse { partial_success }.encode_to_vec(),
            ))
        }
        Err(NotTaken::Backpressure { retry_after }) => Err(Status::with_error_details(
            Code::Unavailable,
            "memory budget full, retry later",
            ErrorDetails::with_retry_info(Some(retry_after)),
        )),
        Err(NotTaken::Closed) => Err(closed()),
        Err(NotTaken::TooLarge) => Err(Status::resource_exhausted(
            "request is larger than the relay's whole memory budget",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backpressure_carries_the_retry_delay() {
        let status = in_flight_full();
        assert_eq!(status.code(), Code::Unavailable);
        let info = status.get_details_retry_info().expect("a RetryInfo detail");
        assert_eq!(info.retry_delay, Some(IN_FLIGHT_RETRY));
    }
}
