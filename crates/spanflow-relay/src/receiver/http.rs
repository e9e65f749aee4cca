//! The OTLP/HTTP receiver: `POST /v1/traces` on axum, protobuf or JSON, optionally gzipped.
//!
//! Answers follow the OTLP/HTTP spec: 200 with an ExportTraceServiceResponse in the request's
//! content type once the pipeline took the batch; 400 (malformed), 413 (too large),
//! 415 (unsupported content type or encoding) with a `google.rpc.Status` body; 503 with
//! `Retry-After` when the memory budget is full or the relay is draining, so clients retry;
//! 401 (before the body is read) without the configured credentials; 408 when the body does not
//! arrive within the body read timeout.

use std::io::Read as _;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use super::{NotTaken, Shared, ingest, retry_after_secs};
use crate::metrics::{Outcome, ReceiverProtocol};
use crate::wire::{TraceRequest, json};

/// The path of the traces endpoint.
pub(crate) const TRACES_PATH: &str = "/v1/traces";

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Debug, Clone)]
struct HttpState {
    shared: Shared,
    max_body_size: usize,
}

/// The OTLP/HTTP router: `POST /v1/traces` feeding `shared`'s sink, refusing bodies larger than
/// `max_body_size` bytes (before or after decompression) with 413.
pub(crate) fn router(shared: Shared, max_body_size: usize) -> Router {
    Router::new()
        .route(TRACES_PATH, post(export))
        .with_state(HttpState {
            shared,
            max_body_size,
        })
        // The limit is enforced by the handler, so it can answer 413 with an OTLP body.
        .layer(DefaultBodyLimit::disable())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Protobuf,
    Json,
}

impl Kind {
    fn content_type(self) -> &'static str {
        match self {
            Kind::Protobuf => PROTOBUF,
            Kind::Json => JSON,
        }
    }
}

fn kind_of(headers: &HeaderMap) -> Result<Kind, String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(
            "missing content-type, expected application/x-protobuf or application/json".into(),
        );
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        PROTOBUF => Ok(Kind::Protobuf),
        JSON => Ok(Kind::Json),
        _ => Err(format!(
            "unsupported content-type `{text}`, expected application/x-protobuf or application/json"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

fn encoding_of(headers: &HeaderMap) -> Result<Encoding, String> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(Encoding::Identity),
        Some(v) => match v
            .to_str()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            other => Err(format!(
                "unsupported content-encoding `{other}`, expected gzip"
            )),
        },
    }
}

async fn export(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let metrics = state.shared.metrics().clone();
    // Credentials first, from the headers alone: nothing of the body is read for a client
    // that may not send.
    if let Err((failure, challenge)) = state.shared.authenticate(ReceiverProtocol::Http, &headers) {
        let mut resp = match kind_of(&headers) {
            Ok(kind) => error_response(kind, StatusCode::UNAUTHORIZED, failure.message()),
            Err(_) => (StatusCode::UNAUTHORIZED, failure.message()).into_response(),
        };
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        return resp;
    }
    let kind = match kind_of(&headers) {
        Ok(k) => k,
        Err(message) => {
            metrics.request(ReceiverProtocol::Http, Outcome::UnsupportedMediaType);
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response();
        }
    };
    let fail = |status: StatusCode, outcome: Outcome, message: String| {
        metrics.request(ReceiverProtocol::Http, outcome);
        error_response(kind, status, &message)
    };
    let retry_later = |outcome: Outcome, message: &str, after: u64| {
        metrics.request(ReceiverProtocol::Http, outcome);
        let mut resp = error_response(kind, StatusCode::SERVICE_UNAVAILABLE, message);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(after));
        resp
    };
    let encoding = match encoding_of(&headers) {
        Ok(e) => e,
        Err(message) => {
            return fail(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Outcome::UnsupportedMediaType,
                message,
            );
        }
    };
    if !state.shared.is_accepting() {
        // Draining: answered without reading the body, so the connection frees up at once.
        return retry_later(Outcome::Closed, "relay is shutting down, retry later", 1);
    }
    let max = state.max_body_size;
    let too_large = || format!("request body larger than the limit of {max} bytes");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    // Bytes are reserved as they arrive, not as declared: a client that declares 4 MiB and
    // sends two bytes holds two bytes (and is cut off at the body read timeout).
    let Some(reservation) = state.shared.reserve(0) else {
        return retry_later(Outcome::Backpressure, IN_FLIGHT_FULL, 1);
    };
    let timeout = state.shared.body_read_timeout();
    let read = tokio::time::timeout(timeout, read_body(body, max, declared, &reservation)).await;
    let raw = match read {
        Err(_) => {
            return fail(
                StatusCode::REQUEST_TIMEOUT,
                Outcome::Timeout,
                format!(
                    "request body not received within {}",
                    crate::config::HumanDuration(timeout)
                ),
            );
        }
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::TooLarge)) => {
            return fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                Outcome::TooLarge,
                too_large(),
            );
        }
        Ok(Err(BodyError::InFlightFull)) => {
            return retry_later(Outcome::Backpressure, IN_FLIGHT_FULL, 1);
        }
        Ok(Err(BodyError::Read(e))) => {
            return fail(
                StatusCode::BAD_REQUEST,
                Outcome::Malformed,
                format!("could not read request body: {e}"),
            );
        }
    };
    let bytes = match encoding {
        Encoding::Identity => raw,
        Encoding::Gzip => {
            // Room for the decompressed form, bounded by the body limit.
            if !reservation.grow_to(raw.len() as u64 + max as u64) {
                return retry_later(Outcome::Backpressure, IN_FLIGHT_FULL, 1);
            }
            match gunzip(&raw, max) {
                Ok(b) => b,
                Err(Gunzip::TooLarge) => {
                    return fail(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        Outcome::TooLarge,
                        too_large(),
                    );
                }
                Err(Gunzip::Invalid(e)) => {
                    return fail(
                        StatusCode::BAD_REQUEST,
                        Outcome::Malformed,
                        format!("invalid gzip body: {e}"),
                    );
                }
            }
        }
    };
    let parsed = match kind {
        Kind::Protobuf => TraceRequest::parse(bytes).map_err(|e| e.to_string()),
        Kind::Json => json::from_json(&bytes).map_err(|e| e.to_string()),
    };
    let request = match parsed {
        Ok(r) => r,
        Err(message) => {
            tracing::debug!(error = %message, "malformed http export request");
            return fail(StatusCode::BAD_REQUEST, Outcome::Malformed, message);
        }
    };
    match ingest(&state.shared, ReceiverProtocol::Http, request).await {
        Ok(ingested) => {
            let partial = (ingested.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: ingested.rejected as i64,
                error_message: ingested.message,
            });
            success_response(kind, partial)
        }
        Err(NotTaken::Backpressure { retry_after }) => {
            let mut resp = error_response(
                kind,
                StatusCode::SERVICE_UNAVAILABLE,
                "memory budget full, retry later",
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(retry_after)),
            );
            resp
        }
        Err(NotTaken::Closed) => {
            let mut resp = error_response(
                kind,
                StatusCode::SERVICE_UNAVAILABLE,
                "relay is shutting down, retry later",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            resp
        }
        Err(NotTaken::TooLarge) => error_response(
            kind,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request is larger than the relay's whole memory budget",
        ),
    }
}

const IN_FLIGHT_FULL: &str = "too many request bytes in flight, retry later";

enum BodyError {
    TooLarge,
    InFlightFull,
    Read(axum::Error),
}

/// Past the limit the rest of the body is read and discarded (up to this many bytes) before
/// answering 413, so an HTTP/1.1 client still sending gets the answer instead of a reset.
const DISCARD_LIMIT: u64 = 64 << 20;

/// Reads at most `max` bytes of body; a larger (declared or actual) body is
/// [`BodyError::TooLarge`] and is never buffered. The buffer grows only as bytes arrive, and
/// each growth is taken from `reservation` before it is allocated.
async fn read_body(
    mut body: Body,
    max: usize,
    declared: Option<u64>,
    reservation: &super::Reservation,
) -> Result<Bytes, BodyError> {
    let mut too_large = declared.is_some_and(|len| len > max as u64);
    if too_large && declared.is_some_and(|len| len > DISCARD_LIMIT) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if !too_large && buf.len() + data.len() > max {
            too_large = true;
            buf = bytes::BytesMut::new();
        }
        if too_large {
            if seen > DISCARD_LIMIT {
                break;
            }
            continue;
        }
        let needed = buf.len() + data.len();
        if needed > buf.capacity() {
            let ceiling = declared.map_or(max, |d| (d as usize).min(max)).max(needed);
            // Doubling: amortised copies, and never more than twice what arrived.
            let capacity = (buf.capacity() * 2).max(needed).min(ceiling);
            if !reservation.grow_to(capacity as u64) {
                return Err(BodyError::InFlightFull);
            }
            buf.reserve(capacity - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    if too_large {
        return Err(BodyError::TooLarge);
    }
    Ok(buf.freeze())
}

enum Gunzip {
    TooLarge,
    Invalid(std::io::Error),
}

/// Decompresses at most `max` bytes; more is [`Gunzip::TooLarge`] (a gzip bomb stops there).
fn gunzip(raw: &[u8], max: usize) -> Result<Bytes, Gunzip> {
    let mut out = Vec::with_capacity((raw.len() * 4).min(max));
    flate2::read::MultiGzDecoder::new(raw)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Gunzip::Invalid)?;
    if out.len() > max {
        return Err(Gunzip::TooLarge);
    }
    Ok(Bytes::from(out))
}

fn success_response(kind: Kind, partial: Option<ExportTracePartialSuccess>) -> Response {
    let body = match kind {
        Kind::Protobuf => ExportTraceServiceResponse {
            partial_success: partial,
        }
        .encode_to_vec(),
        Kind::Json => {
            let value = match partial {
                None => serde_json::json!({}),
                Some(p) => serde_json::json!({
                    "partialSuccess": {
                        "rejectedSpans": p.rejected_spans.to_string(),
                        "errorMessage": p.error_message,
                    }
                }),
            };
            value.to_string().into_bytes()
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, kind.content_type())],
        body,
    )
        .into_response()
}

fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument as i32,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated as i32,
        StatusCode::REQUEST_TIMEOUT => tonic::Code::DeadlineExceeded as i32,
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted as i32,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::InvalidArgument as i32,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable as i32,
        _ => tonic::Code::Unknown as i32,
    }
}

/// An error answer whose body is a `google.rpc.Status` in the request's content type.
fn error_response(kind: Kind, status: StatusCode, message: &str) -> Response {
    let code = grpc_code(status);
    let body = match kind {
        Kind::Protobuf => tonic_types::Status {
            code,
            message: message.to_owned(),
            details: Vec::new(),
        }
        .encode_to_vec(),
        Kind::Json => serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    };
    (status, [(header::CONTENT_TYPE, kind.content_type())], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).expect("valid header"));
        }
        h
    }

    #[test]
    fn content_types_with_parameters_are_recognised() {
        let h = headers(&[(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")]);
        assert_eq!(kind_of(&h), Ok(Kind::Json));
        let h = headers(&[(header::CONTENT_TYPE, "application/x-protobuf")]);
        assert_eq!(kind_of(&h), Ok(Kind::Protobuf));
        let h = headers(&[(header::CONTENT_TYPE, "text/plain")]);
        assert!(kind_of(&h).is_err_and(|m| m.contains("text/plain")));
        assert!(kind_of(&HeaderMap::new()).is_err());
    }

    #[test]
    fn gunzip_stops_at_the_limit() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![0u8; 10_000]).expect("write");
        let gz = enc.finish().expect("finish");
        assert!(matches!(gunzip(&gz, 9_999), Err(Gunzip::TooLarge)));
        assert_eq!(gunzip(&gz, 10_000).ok().map(|b| b.len()), Some(10_000));
        assert!(matches!(gunzip(b"not gzip", 100), Err(Gunzip::Invalid(_))));
    }
}
