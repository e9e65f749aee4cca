//! OTLP/JSON: the JSON mapping of OTLP from the OTLP specification (lowerCamelCase field
//! names, trace and span ids as hex strings, enums as integers, 64-bit integers as
//! decimal strings, bytes as base64), for the HTTP/JSON exporter and receiver.
//!
//! Both directions go through opentelemetry-proto's serde model, which implements that
//! mapping; JSON is the slow path by nature, so this costs one decode or encode.
//!
//! ```
//! use spanflow_otlp::json;
//!
//! let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
//!     "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
//!     "name":"GET /","kind":2,"startTimeUnixNano":"1544712660000000000",
//!     "attributes":[{"key":"http.status_code","value":{"intValue":"200"}}]}]}]}]}"#;
//! let request = json::from_json(body)?;
//! let span = request.span(0).unwrap();
//! assert_eq!(span.name(), "GET /");
//! assert_eq!(span.kind(), 2);
//! assert_eq!(span.start_time_unix_nano(), 1_544_712_660_000_000_000);
//! assert_eq!(span.attribute("http.status_code").and_then(|v| v.as_i64()), Some(200));
//!
//! let text = String::from_utf8(json::to_json(&request)?).unwrap();
//! assert!(text.contains(r#""traceId":"5b8efff798038103d269b633813fc60c""#));
//! assert!(text.contains(r#""startTimeUnixNano":"1544712660000000000""#));
//! # Ok::<(), spanflow_otlp::JsonError>(())
//! ```

use prost::Message;

use crate::TraceRequest;
use crate::error::JsonError;
use crate::proto::collector::trace::v1::ExportTraceServiceRequest;

/// Writes `request` as an OTLP/JSON `ExportTraceServiceRequest`.
///
/// The reader accepts only what prost decodes, so this fails only if that invariant were
/// broken; the error then says so instead of writing an empty request (which a file exporter
/// would count as exported).
pub fn to_json(request: &TraceRequest) -> Result<Vec<u8>, JsonError> {
    let decoded = request.to_proto()?;
    Ok(serde_json::to_vec(&decoded)?)
}

/// Reads an OTLP/JSON `ExportTraceServiceRequest` (64-bit integers may be strings or
/// numbers) into an indexed request.
pub fn from_json(body: &[u8]) -> Result<TraceRequest, JsonError> {
    let decoded: ExportTraceServiceRequest = serde_json::from_slice(body)?;
    Ok(TraceRequest::parse(decoded.encode_to_vec().into())?)
}
