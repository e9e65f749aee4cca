//! spanflow-otlp — the wire model of spanflow: OTLP trace data kept as protobuf bytes with
//! an index over them, so spans move, fan out, split and merge without being decoded.
//!
//! It sits at the bottom of the layering beside `spanflow-lockfree` and `spanflow-batch`
//! (it depends on neither, and they know nothing of spans), below `spanflow-process`,
//! `spanflow-export`, the `spanflow` facade and the relay, which all share its
//! [`TraceRequest`]. It is the only crate that reads protobuf: the others read spans
//! through its views and change them through its splices and edits.
//!
//! - [`Encoder`] writes an `ExportTraceServiceRequest` straight from
//!   `opentelemetry_sdk` [`SpanData`](opentelemetry_sdk::trace::SpanData), with no
//!   intermediate structs.
//! - [`TraceRequest::parse`] validates and indexes received bytes in one pass; [`SpanView`]
//!   reads a span's fields in place, [`SpanView::head`] the ones keep/drop rules need in
//!   one pass ([`SpanHead`]), [`SpanView::events`] and [`SpanView::links`] its events and
//!   links ([`EventView`], [`LinkView`]); [`Attributes::stored`] shows every value an
//!   attribute's bytes hold, for readers that must not miss one.
//! - [`TraceRequest::select`], [`split`](TraceRequest::split),
//!   [`merge`](TraceRequest::merge) and [`rewrite`](TraceRequest::rewrite) build new
//!   requests by copying byte ranges; [`SpanPatch`] sets attributes to borrowed values or
//!   computed ones ([`AnyValueBuf`]), and [`TraceRequest::edit_spans`] decodes only the
//!   spans it changes.
//! - [`group_by_trace`] cuts request bytes into one request per trace id, reading only the
//!   framing and each span's trace id (a Kafka record per trace).
//! - [`json`] converts to and from the OTLP/JSON mapping (feature `json`, on by default).
//!
//! ```
//! use spanflow_otlp::{Encoder, TraceRequest};
//!
//! let spans = spanflow_otlp::testing::span_batch(8, 42);
//! let resource = spanflow_otlp::testing::resource();
//! let mut encoder = Encoder::new();
//! let request: TraceRequest = encoder.encode(&spans, &resource);
//!
//! for span in request.spans() {
//!     assert!(!span.name().is_empty());
//!     assert_eq!(span.resource().service_name(), Some("checkout"));
//! }
//! let halves = request.split(4, 0);
//! assert_eq!(halves.len(), 2);
//! let whole = TraceRequest::merge(&halves);
//! assert_eq!(whole.to_proto().unwrap(), request.to_proto().unwrap());
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub use opentelemetry_proto::tonic as proto;

// Code map, one job per file:
// - `request/`: `TraceRequest`. `mod.rs` the type and its API (parse, conversions, counts,
//   views), `index.rs` the validating pass that builds the `Index` (and `SpanFields`, the
//   span field reader of the hot paths), `plan.rs` writing a request from byte ranges of
//   others (`Plan`), `reshape.rs` `select`, `split` and `merge`.
// - `view/`: the views. `span.rs` `SpanView`, `headers.rs` `ResourceView` and `ScopeView`,
//   `attributes.rs` `Attributes` and `KeyValueView` (and the stored variants), `value.rs`
//   `AnyValueView` and its parts and `AnyValueBuf`, `fields.rs` the field readers they share.
// - `events.rs` and `head.rs`: more views of a span (events and links; `SpanHead`).
// - `rewrite.rs`: splices and edits (`SpanPatch`, `ResourcePatch`, `edit_spans`).
// - `group.rs`: `group_by_trace`, request bytes cut per trace id without an index.
// - `encode.rs`: `Encoder`, `SpanData` straight to request bytes.
// - `schema.rs`: the OTLP message schema and the validator; `wire.rs`: wire primitives.
// - `json.rs`: OTLP/JSON; `error.rs`: error types; `testing.rs`: fixtures.
mod encode;
mod error;
mod events;
mod group;
mod head;
#[cfg(feature = "json")]
pub mod json;
mod request;
mod rewrite;
mod schema;
#[doc(hidden)]
pub mod testing;
mod view;
mod wire;

pub use encode::Encoder;
#[cfg(feature = "json")]
pub use error::JsonError;
pub use error::{DecodeError, EditError};
pub use events::{EventView, Events, LinkView, Links};
pub use group::{TraceGroup, group_by_trace};
pub use head::SpanHead;
pub use request::TraceRequest;
pub use rewrite::{ResourcePatch, SpanPatch};
pub use view::{
    AnyValueBuf, AnyValueView, ArrayView, Attributes, KeyValueView, KvListView, ResourceView,
    ScopeView, SpanView, StoredAttributes, StoredKeyValue, ValueFields,
};
