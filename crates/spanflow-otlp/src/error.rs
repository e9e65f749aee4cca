//! Error types of the wire model.

use crate::wire::WireError;

/// Why a buffer is not a well-formed `ExportTraceServiceRequest`.
///
/// Every variant names the protobuf message being read and the byte offset (from the
/// start of the request) where the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A field, length or varint runs past the end of its enclosing message.
    #[error("truncated {message} at byte {offset}")]
    Truncated {
        /// Protobuf message being read.
        message: &'static str,
        /// Byte offset in the request.
        offset: usize,
    },
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("invalid varint in {message} at byte {offset}")]
    InvalidVarint {
        /// Protobuf message being read.
        message: &'static str,
        /// Byte offset in the request.
        offset: usize,
    },
    /// A tag carries wire type 6 or 7.
    #[error("invalid wire type {wire_type} in {message} at byte {offset}")]
    InvalidWireType {
        /// Protobuf message being read.
        message: &'static str,
        /// The wire type found.
        wire_type: u8,
        /// Byte offset in the request.
        offset: usize,
    },
    /// A tag carries field number 0 or does not fit 32 bits.
    #[error("invalid field number in {message} at byte {offset}")]
    InvalidFieldNumber {
        /// Protobuf message being read.
        message: &'static str,
        /// Byte offset in the request.
        offset: usize,
    },
    /// A group end tag without a matching start, or a group that never ends.
    #[error("unbalanced group in {message} at byte {offset}")]
    UnbalancedGroup {
        /// Protobuf message being read.
        message: &'static str,
        /// Byte offset in the request.
        offset: usize,
    },
    /// A known field arrived with a wire type its declared type cannot have.
    #[error(
        "field {field} of {message} has wire type {found}, expected {expected}, at byte {offset}"
    )]
    WrongWireType {
        /// Protobuf message being read.
        message: &'static str,
        /// Name of the field.
        field: &'static str,
        /// Wire type found.
        found: u8,
        /// Wire type the field's type requires.
        expected: u8,
        /// Byte offset in the request.
        offset: usize,
    },
    /// A `string` field holds bytes that are not UTF-8.
    #[error("invalid utf-8 in {message}.{field} at byte {offset}")]
    InvalidUtf8 {
        /// Protobuf message being read.
        message: &'static str,
        /// Name of the field.
        field: &'static str,
        /// Byte offset in the request.
        offset: usize,
    },
    /// Messages (or groups) nest deeper than 100 levels.
    #[error("messages nested deeper than 100 levels at byte {offset}")]
    TooDeep {
        /// Byte offset in the request.
        offset: usize,
    },
    /// The request is larger than the 4 GiB the index can address.
    #[error("request of {len} bytes exceeds the 4 GiB limit")]
    TooLarge {
        /// Length of the request.
        len: usize,
    },
}

impl DecodeError {
    /// Byte offset in the request where the problem was found (0 for [`DecodeError::TooLarge`]).
    pub fn offset(&self) -> usize {
        match *self {
            DecodeError::Truncated { offset, .. }
            | DecodeError::InvalidVarint { offset, .. }
            | DecodeError::InvalidWireType { offset, .. }
            | DecodeError::InvalidFieldNumber { offset, .. }
            | DecodeError::UnbalancedGroup { offset, .. }
            | DecodeError::WrongWireType { offset, .. }
            | DecodeError::InvalidUtf8 { offset, .. }
            | DecodeError::TooDeep { offset } => offset,
            DecodeError::TooLarge { .. } => 0,
        }
    }

    pub(crate) fn from_wire(error: WireError, message: &'static str, offset: usize) -> Self {
        match error {
            WireError::Truncated => DecodeError::Truncated { message, offset },
            WireError::VarintOverflow => DecodeError::InvalidVarint { message, offset },
            WireError::InvalidWireType(wire_type) => DecodeError::InvalidWireType {
                message,
                wire_type,
                offset,
            },
            WireError::InvalidFieldNumber => DecodeError::InvalidFieldNumber { message, offset },
            WireError::UnbalancedGroup => DecodeError::UnbalancedGroup { message, offset },
            WireError::TooDeep => DecodeError::TooDeep { offset },
        }
    }
}

/// Why [`TraceRequest::edit_span`](crate::TraceRequest::edit_span) or
/// [`TraceRequest::edit_resource`](crate::TraceRequest::edit_resource) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The span or resource index is not in the request.
    #[error("index {index} out of range (the request has {len})")]
    OutOfRange {
        /// Index asked for.
        index: usize,
        /// Number of spans or resources in the request.
        len: usize,
    },
    /// prost could not decode the span or resource (it passed the reader's checks, so this
    /// means prost is stricter about something, e.g. an unknown enum layout).
    #[error("decoding for edit failed: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Why an OTLP/JSON body could not be read.
#[cfg(feature = "json")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The body is not valid JSON or does not match the OTLP/JSON mapping.
    #[error("invalid otlp/json: {0}")]
    Syntax(#[from] serde_json::Error),
    /// The body decoded but re-encoding to protobuf produced something the reader rejects.
    #[error("otlp/json converted to an invalid request: {0}")]
    Decode(#[from] DecodeError),
    /// A request could not be decoded for conversion to JSON (the reader accepted something
    /// prost refuses: a broken invariant, reported rather than hidden).
    #[error("cannot decode the request for otlp/json: {0}")]
    Proto(#[from] prost::DecodeError),
}
