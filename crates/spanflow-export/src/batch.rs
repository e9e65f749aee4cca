//! The unit of work of the export layer: one encoded request and what a backend said about it.

use bytes::Bytes;

/// One pre-encoded OTLP `ExportTraceServiceRequest` and the number of spans inside it.
///
/// Cloning is cheap (a reference-count increment on [`Bytes`]): the fan-out hands the same
/// bytes to every backend and never copies them.
///
/// ```
/// use spanflow_export::ExportBatch;
/// let batch = ExportBatch::new(bytes::Bytes::from_static(b""), 0);
/// let copy = batch.clone();
/// assert_eq!(copy.body.as_ptr(), batch.body.as_ptr()); // shared, not copied
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportBatch {
    /// The `ExportTraceServiceRequest` protobuf bytes, sent as they are.
    pub body: Bytes,
    /// Number of spans in `body`, used for accounting only (never re-counted by decoding).
    pub spans: usize,
}

impl ExportBatch {
    /// A batch from encoded request bytes and their span count.
    pub fn new(body: Bytes, spans: usize) -> Self {
        Self { body, spans }
    }
}

/// What a backend reported for one request it accepted at the transport level.
///
/// OTLP lets a server accept a request but reject some of its spans (`partial_success`);
/// `rejected` counts those and `message` carries the server's explanation, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Spans the backend kept.
    pub accepted: u64,
    /// Spans the backend refused (`partial_success.rejected_spans`); never retried.
    pub rejected: u64,
    /// The server's `partial_success.error_message`, when not empty.
    pub message: Option<String>,
}

impl ExportOutcome {
    /// The outcome for a batch of `spans` spans of which the server rejected `rejected`.
    ///
    /// ```
    /// use spanflow_export::ExportOutcome;
    /// let o = ExportOutcome::partial(10, 3, String::new());
    /// assert_eq!((o.accepted, o.rejected, o.message), (7, 3, None));
    /// ```
    pub fn partial(spans: usize, rejected: i64, message: String) -> Self {
        let rejected = rejected.max(0) as u64;
        let spans = spans as u64;
        Self {
            accepted: spans.saturating_sub(rejected),
            rejected: rejected.min(spans),
            message: (!message.is_empty()).then_some(message),
        }
    }

    /// Every span of a batch of `spans` spans was accepted.
    pub fn all_accepted(spans: usize) -> Self {
        Self {
            accepted: spans as u64,
            rejected: 0,
            message: None,
        }
    }
}
