//! OTLP/JSON bodies for the HTTP/JSON, file and stdout exporters.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::ExportError;

/// Convert an encoded `ExportTraceServiceRequest` to OTLP/JSON (hex ids, camelCase fields,
/// 64-bit integers as strings).
///
/// This is the one place of the export layer that decodes a batch, and only for JSON sinks.
///
/// ```
/// use prost::Message;
/// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
/// let body = ExportTraceServiceRequest::default().encode_to_vec();
/// let json = spanflow_export::json::request_to_json(&body.into()).unwrap();
/// assert_eq!(json, b"{\"resourceSpans\":[]}");
/// ```
pub fn request_to_json(body: &Bytes) -> Result<Vec<u8>, ExportError> {
    let request = ExportTraceServiceRequest::decode(body.clone())
        .map_err(|e| ExportError::InvalidBatch(format!("not an ExportTraceServiceRequest: {e}")))?;
    serde_json::to_vec(&request).map_err(|e| ExportError::InvalidBatch(e.to_string()))
}
