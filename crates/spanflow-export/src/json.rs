//! OTLP/JSON bodies for the HTTP/JSON, file and stdout exporters.

use bytes::Bytes;
use spanflow_otlp::TraceRequest;

use crate::ExportError;

/// Convert an encoded `ExportTraceServiceRequest` to OTLP/JSON (hex ids, camelCase fields,
/// 64-bit integers as strings), through `spanflow_otlp::json::to_json`.
///
/// This is the one place of the export layer that looks inside a batch, and only for JSON
/// sinks; a body that is not a valid request is [`ExportError::InvalidBatch`] (permanent).
///
/// ```
/// use prost::Message;
/// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
/// let body = ExportTraceServiceRequest::default().encode_to_vec();
/// let json = spanflow_export::json::request_to_json(&body.into()).unwrap();
/// assert_eq!(json, b"{\"resourceSpans\":[]}");
/// assert!(spanflow_export::json::request_to_json(&bytes::Bytes::from_static(b"\xff")).is_err());
/// ```
pub fn request_to_json(body: &Bytes) -> Result<Vec<u8>, ExportError> {
    let request = TraceRequest::parse(body.clone())
        .map_err(|e| ExportError::InvalidBatch(format!("not an ExportTraceServiceRequest: {e}")))?;
    spanflow_otlp::json::to_json(&request)
        .map_err(|e| ExportError::InvalidBatch(format!("cannot convert to otlp/json: {e}")))
}
