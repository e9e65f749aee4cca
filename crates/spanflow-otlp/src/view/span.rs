//! [`SpanView`]: one span of a request, its fields read in place.

use std::fmt;

use super::attributes::Attributes;
use super::fields::{as_str, id, last_len, last_scalar, merge_status_code};
use super::headers::{ResourceView, ScopeView};
use super::value::AnyValueView;
use crate::events::{Events, Links};
use crate::request::{Index, SpanMeta, TraceRequest};
use crate::wire::{Fields, Value};

/// One span of a [`TraceRequest`], read in place.
///
/// ```
/// # use spanflow_otlp::{Encoder, TraceRequest};
/// let spans = spanflow_otlp::testing::span_batch(3, 7);
/// let resource = spanflow_otlp::testing::resource();
/// let request = Encoder::new().encode(&spans, &resource);
/// let span = request.span(0).unwrap();
/// assert_eq!(span.name(), spans[0].name);
/// assert_eq!(span.span_id(), spans[0].span_context.span_id().to_bytes());
/// ```
#[derive(Clone, Copy)]
pub struct SpanView<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) index: &'a Index,
    pub(crate) i: usize,
    pub(crate) body: &'a [u8],
    pub(crate) meta: SpanMeta,
}

impl<'a> SpanView<'a> {
    pub(crate) fn new(request: &'a TraceRequest, i: usize) -> Self {
        let index = request.index();
        let buf: &'a [u8] = request.as_bytes();
        let (body, meta) = index
            .spans
            .get(i)
            .and_then(|e| Some((buf.get(e.body as usize..e.end as usize)?, e.meta)))
            .unwrap_or_default();
        SpanView {
            buf,
            index,
            i,
            body,
            meta,
        }
    }

    /// Position of the span in its request.
    pub fn index(&self) -> usize {
        self.i
    }

    /// The span's protobuf body (without its tag and length).
    pub fn raw(&self) -> &'a [u8] {
        self.body
    }

    fn fields(&self) -> Fields<'a> {
        Fields::new(self.body)
    }

    fn last_varint(&self, number: u32) -> Option<u64> {
        last_scalar(self.body, number)
    }

    /// The 16-byte trace id (all zeros when absent or not 16 bytes long).
    pub fn trace_id(&self) -> [u8; 16] {
        id(last_len(self.body, 1)).unwrap_or([0; 16])
    }

    /// The 8-byte span id (all zeros when absent or not 8 bytes long).
    pub fn span_id(&self) -> [u8; 8] {
        id(last_len(self.body, 2)).unwrap_or([0; 8])
    }

    /// Whether the trace id is 16 bytes and the span id 8 bytes, neither all zero: the OTLP
    /// rule for a span a receiver may accept. The same answer as checking [`Self::trace_id`]
    /// and [`Self::span_id`] against zero, in one pass over the span's fields instead of two.
    ///
    /// ```
    /// let spans = spanflow_otlp::testing::span_batch(1, 9);
    /// let request =
    ///     spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    /// assert!(request.span(0).unwrap().has_valid_ids());
    /// ```
    pub fn has_valid_ids(&self) -> bool {
        let (mut trace, mut span) = (None, None);
        for field in self.fields() {
            if let Value::Len(bytes) = field.value {
                match field.number {
                    1 => trace = Some(bytes),
                    2 => span = Some(bytes),
                    _ => {}
                }
            }
        }
        let valid = |bytes: Option<&[u8]>, len: usize| {
            bytes.is_some_and(|b| b.len() == len && b.iter().any(|x| *x != 0))
        };
        valid(trace, 16) && valid(span, 8)
    }

    /// The parent span id, `None` for a root span (absent, empty or malformed field).
    pub fn parent_span_id(&self) -> Option<[u8; 8]> {
        id(last_len(self.body, 4))
    }

    /// The W3C `tracestate` header value.
    pub fn trace_state(&self) -> &'a str {
        last_len(self.body, 3).map_or("", as_str)
    }

    /// The span's `flags` (W3C trace flags plus the OTLP 1.x `is_remote` bits).
    pub fn flags(&self) -> u32 {
        self.last_varint(16).unwrap_or(0) as u32
    }

    /// The span's name.
    pub fn name(&self) -> &'a str {
        let [start, end] = self.meta.name;
        as_str(self.body.get(start as usize..end as usize).unwrap_or(&[]))
    }

    /// The span kind as the protobuf `SpanKind` value (0 unspecified … 5 consumer).
    pub fn kind(&self) -> i32 {
        self.last_varint(6).unwrap_or(0) as i32
    }

    /// Start time in nanoseconds since the Unix epoch.
    pub fn start_time_unix_nano(&self) -> u64 {
        self.last_varint(7).unwrap_or(0)
    }

    /// End time in nanoseconds since the Unix epoch.
    pub fn end_time_unix_nano(&self) -> u64 {
        self.last_varint(8).unwrap_or(0)
    }

    /// Number of attributes the producer dropped.
    pub fn dropped_attributes_count(&self) -> u32 {
        self.last_varint(10).unwrap_or(0) as u32
    }

    /// Number of events (span field 11).
    pub fn event_count(&self) -> usize {
        self.fields().filter(|f| f.number == 11).count()
    }

    /// The span's events, in wire order.
    ///
    /// ```
    /// let spans = spanflow_otlp::testing::span_batch(4, 3);
    /// let request =
    ///     spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    /// for (span, data) in request.spans().zip(&spans) {
    ///     let names: Vec<&str> = span.events().map(|e| e.name()).collect();
    ///     let expected: Vec<&str> = data.events.iter().map(|e| e.name.as_ref()).collect();
    ///     assert_eq!(names, expected);
    /// }
    /// ```
    pub fn events(&self) -> Events<'a> {
        Events::new(self.body)
    }

    /// Number of events the producer dropped.
    pub fn dropped_events_count(&self) -> u32 {
        self.last_varint(12).unwrap_or(0) as u32
    }

    /// Number of links (span field 13).
    pub fn link_count(&self) -> usize {
        self.fields().filter(|f| f.number == 13).count()
    }

    /// The span's links, in wire order.
    pub fn links(&self) -> Links<'a> {
        Links::new(self.body)
    }

    /// Number of links the producer dropped.
    pub fn dropped_links_count(&self) -> u32 {
        self.last_varint(14).unwrap_or(0) as u32
    }

    /// Status code as the protobuf `StatusCode` value (0 unset, 1 ok, 2 error).
    /// Several `status` fields merge, as in protobuf.
    pub fn status_code(&self) -> i32 {
        let mut code = 0;
        for status in self.fields().filter(|f| f.number == 15) {
            if let Value::Len(b) = status.value {
                code = merge_status_code(b, code);
            }
        }
        code
    }

    /// Status message (set for errors).
    pub fn status_message(&self) -> &'a str {
        let mut message = "";
        for status in self.fields().filter(|f| f.number == 15) {
            if let Value::Len(b) = status.value {
                for f in Fields::new(b) {
                    if let (2, Value::Len(m)) = (f.number, f.value) {
                        message = as_str(m);
                    }
                }
            }
        }
        message
    }

    /// The span's attributes, in wire order.
    pub fn attributes(&self) -> Attributes<'a> {
        let [start, end] = self.meta.attrs;
        Attributes::direct(
            self.body.get(start as usize..end as usize).unwrap_or(&[]),
            9,
        )
    }

    /// The value of the first attribute named `key`.
    pub fn attribute(&self, key: &str) -> Option<AnyValueView<'a>> {
        self.attributes().value_of(key)
    }

    /// The resource the span belongs to.
    pub fn resource(&self) -> ResourceView<'a> {
        let scope = self.index.spans.get(self.i).map_or(0, |s| s.scope as usize);
        let resource = self
            .index
            .scopes
            .get(scope)
            .map_or(0, |s| s.resource as usize);
        ResourceView {
            buf: self.buf,
            index: self.index,
            r: resource,
        }
    }

    /// The instrumentation scope the span belongs to.
    pub fn scope(&self) -> ScopeView<'a> {
        let scope = self.index.spans.get(self.i).map_or(0, |s| s.scope as usize);
        ScopeView {
            buf: self.buf,
            index: self.index,
            s: scope,
        }
    }
}

impl fmt::Debug for SpanView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanView")
            .field("index", &self.i)
            .field("name", &self.name())
            .field(
                "span_id",
                &format_args!("{:016x}", u64::from_be_bytes(self.span_id())),
            )
            .finish_non_exhaustive()
    }
}
