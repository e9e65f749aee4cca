//! [`TraceRequest`]: an `ExportTraceServiceRequest` kept as bytes plus an index. This file
//! holds the type and its API for parsing, converting, counting and reading spans.
//!
//! - `index.rs` validates received bytes and builds the [`Index`] of byte offsets.
//! - `plan.rs` writes a new request from byte ranges of others (a [`Plan`]) and indexes it on
//!   the way.
//! - `reshape.rs` cuts and joins requests with plans: `select`, `select_indices`, `split`
//!   and `merge`.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::error::DecodeError;
use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::view::{ResourceView, SpanView};

mod index;
mod plan;
mod reshape;

pub(crate) use index::{Index, ResourceEntry, ScopeEntry, SpanEntry, SpanFields, SpanMeta};
pub(crate) use plan::{Piece, Plan, PlanSpan, Recorder};

/// An OTLP `ExportTraceServiceRequest` kept as its protobuf bytes plus an index of every
/// `ResourceSpans`, `ScopeSpans` and `Span` in it. Cloning is cheap (two reference counts).
///
/// Spans are read in place through [`SpanView`]s, and requests are cut and joined by
/// copying byte ranges: nothing is decoded into owned structs unless asked
/// ([`TraceRequest::edit_span`]).
///
/// ```
/// use spanflow_otlp::TraceRequest;
///
/// let spans = spanflow_otlp::testing::span_batch(10, 1);
/// let request = spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
///
/// // What a receiver does with bytes off the network:
/// let received = TraceRequest::parse(request.as_bytes().clone())?;
/// assert_eq!(received.span_count(), 10);
///
/// // Keep the even spans only, without decoding any of them.
/// let keep: Vec<bool> = (0..10).map(|i| i % 2 == 0).collect();
/// let even = received.select(&keep);
/// assert_eq!(even.span_count(), 5);
/// assert_eq!(even.span(1).unwrap().name(), received.span(2).unwrap().name());
/// # Ok::<(), spanflow_otlp::DecodeError>(())
/// ```
#[derive(Clone)]
pub struct TraceRequest {
    bytes: Bytes,
    index: Arc<Index>,
}

impl fmt::Debug for TraceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceRequest")
            .field("bytes", &self.bytes.len())
            .field("resources", &self.index.resources.len())
            .field("scopes", &self.index.scopes.len())
            .field("spans", &self.index.spans.len())
            .finish()
    }
}

impl Default for TraceRequest {
    fn default() -> Self {
        TraceRequest::empty()
    }
}

impl TraceRequest {
    /// Validates `bytes` as an `ExportTraceServiceRequest` and indexes it, in one pass.
    ///
    /// Validation makes the same checks prost's decoder makes (wire types of known fields,
    /// lengths, varints, UTF-8 of strings, nesting depth), so every accessor afterwards
    /// reads well-formed bytes. Unknown fields are accepted and kept by every splice,
    /// except unknown fields of the request message itself.
    ///
    /// ```
    /// use spanflow_otlp::{DecodeError, TraceRequest};
    /// // Field 1 (resource_spans) claiming 5 bytes with only 1 present.
    /// let err = TraceRequest::parse(bytes::Bytes::from_static(&[0x0a, 0x05, 0x00])).unwrap_err();
    /// assert!(matches!(err, DecodeError::Truncated { offset: 1, .. }));
    /// ```
    pub fn parse(bytes: Bytes) -> Result<TraceRequest, DecodeError> {
        if bytes.len() > u32::MAX as usize {
            return Err(DecodeError::TooLarge { len: bytes.len() });
        }
        let mut index = Index::default();
        // Spans are a few hundred bytes on the wire; reserving avoids regrowth.
        index.spans.reserve(bytes.len() / 256);
        index.index_request(&bytes)?;
        Ok(TraceRequest {
            bytes,
            index: Arc::new(index),
        })
    }

    /// A request with no spans (zero bytes).
    pub fn empty() -> TraceRequest {
        TraceRequest {
            bytes: Bytes::new(),
            index: Arc::new(Index::default()),
        }
    }

    /// Encodes an opentelemetry-proto request with prost and indexes it.
    pub fn from_proto(request: &ExportTraceServiceRequest) -> TraceRequest {
        let bytes = Bytes::from(request.encode_to_vec());
        // prost's own output always passes validation; fall back to empty for safety.
        TraceRequest::parse(bytes).unwrap_or_else(|_| TraceRequest::empty())
    }

    /// Decodes the whole request into opentelemetry-proto's structs (the slow path).
    pub fn to_proto(&self) -> Result<ExportTraceServiceRequest, prost::DecodeError> {
        ExportTraceServiceRequest::decode(&self.bytes[..])
    }

    pub(crate) fn from_parts(bytes: Bytes, index: Index) -> TraceRequest {
        TraceRequest {
            bytes,
            index: Arc::new(index),
        }
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// The request's protobuf bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The request's protobuf bytes, consuming the request.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Number of spans in the request.
    pub fn span_count(&self) -> usize {
        self.index.spans.len()
    }

    /// Number of `ResourceSpans` in the request.
    pub fn resource_count(&self) -> usize {
        self.index.resources.len()
    }

    /// Size of the request in bytes.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the request holds no spans.
    pub fn is_empty(&self) -> bool {
        self.index.spans.is_empty()
    }

    /// Every span, in wire order.
    pub fn spans(&self) -> impl ExactSizeIterator<Item = SpanView<'_>> + '_ {
        (0..self.index.spans.len()).map(move |i| SpanView::new(self, i))
    }

    /// Span `i`, if the request has that many.
    pub fn span(&self, i: usize) -> Option<SpanView<'_>> {
        (i < self.index.spans.len()).then(|| SpanView::new(self, i))
    }

    /// Every `ResourceSpans`, in wire order.
    pub fn resources(&self) -> impl ExactSizeIterator<Item = ResourceView<'_>> + '_ {
        (0..self.index.resources.len()).map(move |r| ResourceView {
            buf: &self.bytes,
            index: &self.index,
            r,
        })
    }
}
