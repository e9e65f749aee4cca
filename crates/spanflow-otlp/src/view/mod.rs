//! Zero-copy views over an indexed request.
//!
//! Views read fields lazily from the validated bytes. Scalar fields follow protobuf's
//! last-one-wins rule; a nested message that appears more than once is read from its
//! last occurrence (prost would merge them; OTLP encoders never repeat them).
//!
//! - `span.rs`: [`SpanView`], one span's fields.
//! - `headers.rs`: [`ResourceView`] and [`ScopeView`], the headers a span sits under.
//! - `attributes.rs`: [`Attributes`] and [`KeyValueView`], and [`StoredAttributes`] /
//!   [`StoredKeyValue`] for every value an attribute's bytes hold.
//! - `value.rs`: attribute values: [`AnyValueView`] (with [`ArrayView`], [`KvListView`] and
//!   [`ValueFields`]) and [`AnyValueBuf`] for values computed outside a request.
//! - `fields.rs`: the last-one-wins field readers the views (and `events.rs`, `head.rs`)
//!   share.

mod attributes;
mod fields;
mod headers;
mod span;
mod value;

pub use attributes::{Attributes, KeyValueView, StoredAttributes, StoredKeyValue};
pub(crate) use fields::{as_str, id, last_len, last_scalar, merge_status_code};
pub use headers::{ResourceView, ScopeView};
pub use span::SpanView;
pub use value::{AnyValueBuf, AnyValueView, ArrayView, KvListView, ValueFields};
