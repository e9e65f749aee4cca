//! Zero-copy views over an indexed request.
//!
//! Views read fields lazily from the validated bytes. Scalar fields follow protobuf's
//! last-one-wins rule; a nested message that appears more than once is read from its
//! last occurrence (prost would merge them; OTLP encoders never repeat them).

use std::fmt;

use crate::error::DecodeError;
use crate::events::{Events, Links};
use crate::request::{Index, SpanMeta, TraceRequest};
use crate::wire::{Field, Fields, Value};

/// Reads a string field of an indexed request.
///
/// Every caller passes the body of a field the schema declares `string` (span name,
/// trace_state, status message, attribute keys and string values, scope name and version,
/// schema URLs), taken from a [`TraceRequest`]. A `TraceRequest`'s bytes are, field for
/// field, either validated by [`TraceRequest::parse`] (which checks UTF-8 of every known
/// `string` field), written by this crate from `&str`s or prost-encoded `String`s, or
/// copied verbatim from such requests; so these bytes are UTF-8. Tests and the fuzz
/// target run with debug assertions, which re-check it on every read.
pub(crate) fn as_str(bytes: &[u8]) -> &str {
    debug_assert!(
        std::str::from_utf8(bytes).is_ok(),
        "string field is not utf-8"
    );
    // SAFETY: `bytes` is the body of a validated `string` field, see above: the request's
    // construction (parse's UTF-8 check, or encoding from `&str`) guarantees UTF-8.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

pub(crate) fn last_len(body: &[u8], number: u32) -> Option<&[u8]> {
    let mut found = None;
    for field in Fields::new(body) {
        if field.number == number
            && let Value::Len(b) = field.value
        {
            found = Some(b);
        }
    }
    found
}

/// The last scalar field `number` of `body`, of any numeric wire type (protobuf's
/// last-one-wins rule).
pub(crate) fn last_scalar(body: &[u8], number: u32) -> Option<u64> {
    let mut found = None;
    for field in Fields::new(body) {
        if field.number == number {
            match field.value {
                Value::Varint(v) | Value::I64(v) => found = Some(v),
                Value::I32(v) => found = Some(u64::from(v)),
                _ => {}
            }
        }
    }
    found
}

/// `code` after merging the `Status` message `status` into a status whose code was `code`.
pub(crate) fn merge_status_code(status: &[u8], mut code: i32) -> i32 {
    for f in Fields::new(status) {
        if let (3, Value::Varint(v)) = (f.number, f.value) {
            code = v as i32;
        }
    }
    code
}

pub(crate) fn id<const N: usize>(bytes: Option<&[u8]>) -> Option<[u8; N]> {
    let bytes = bytes?;
    let mut out = [0u8; N];
    if bytes.len() != N {
        return None;
    }
    out.copy_from_slice(bytes);
    Some(out)
}

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
            .field("span_id", &hex::encode(self.span_id()))
            .finish_non_exhaustive()
    }
}

/// Header ranges (everything but the children) of a resource or scope.
fn header_ranges(extras: &[[u32; 2]], range: [u32; 2]) -> &[[u32; 2]] {
    extras
        .get(range[0] as usize..range[1] as usize)
        .unwrap_or(&[])
}

fn last_nested_str<'a>(
    buf: &'a [u8],
    ranges: &[[u32; 2]],
    wrapper: u32,
    number: u32,
) -> Option<&'a str> {
    let mut found = None;
    for r in ranges {
        let header = buf.get(r[0] as usize..r[1] as usize).unwrap_or(&[]);
        for outer in Fields::new(header) {
            let Value::Len(b) = outer.value else {
                continue;
            };
            if wrapper == 0 {
                if outer.number == number {
                    found = Some(as_str(b));
                }
            } else if outer.number == wrapper
                && let Some(s) = last_len(b, number)
            {
                found = Some(as_str(s));
            }
        }
    }
    found
}

/// One `ResourceSpans` of a request: its resource and schema URL.
#[derive(Clone, Copy)]
pub struct ResourceView<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) index: &'a Index,
    pub(crate) r: usize,
}

impl<'a> ResourceView<'a> {
    /// Position of the `ResourceSpans` in its request.
    pub fn index(&self) -> usize {
        self.r
    }

    fn ranges(&self) -> &'a [[u32; 2]] {
        self.index.resources.get(self.r).map_or(&[][..], |e| {
            header_ranges(&self.index.resource_extras, e.extras)
        })
    }

    /// The resource's attributes, in wire order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::nested(self.buf, self.ranges(), 1, 1)
    }

    /// The value of the first resource attribute named `key`.
    pub fn attribute(&self, key: &str) -> Option<AnyValueView<'a>> {
        self.attributes().value_of(key)
    }

    /// The `service.name` attribute, if it is a string.
    pub fn service_name(&self) -> Option<&'a str> {
        match self.attribute("service.name") {
            Some(AnyValueView::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The `ResourceSpans.schema_url`.
    pub fn schema_url(&self) -> &'a str {
        last_nested_str(self.buf, self.ranges(), 0, 3).unwrap_or("")
    }

    /// Number of spans under this resource.
    pub fn span_count(&self) -> usize {
        let Some(e) = self.index.resources.get(self.r) else {
            return 0;
        };
        let scopes = self
            .index
            .scopes
            .get(e.scopes[0] as usize..e.scopes[1] as usize)
            .unwrap_or(&[]);
        scopes
            .iter()
            .map(|s| (s.spans[1] - s.spans[0]) as usize)
            .sum()
    }
}

impl fmt::Debug for ResourceView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceView")
            .field("index", &self.r)
            .field("service_name", &self.service_name())
            .finish_non_exhaustive()
    }
}

/// One `ScopeSpans` of a request: its instrumentation scope and schema URL.
#[derive(Clone, Copy)]
pub struct ScopeView<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) index: &'a Index,
    pub(crate) s: usize,
}

impl<'a> ScopeView<'a> {
    /// Position of the `ScopeSpans` in its request.
    pub fn index(&self) -> usize {
        self.s
    }

    fn ranges(&self) -> &'a [[u32; 2]] {
        self.index.scopes.get(self.s).map_or(&[][..], |e| {
            header_ranges(&self.index.scope_extras, e.extras)
        })
    }

    /// The instrumentation scope's name.
    pub fn name(&self) -> &'a str {
        last_nested_str(self.buf, self.ranges(), 1, 1).unwrap_or("")
    }

    /// The instrumentation scope's version.
    pub fn version(&self) -> &'a str {
        last_nested_str(self.buf, self.ranges(), 1, 2).unwrap_or("")
    }

    /// The `ScopeSpans.schema_url`.
    pub fn schema_url(&self) -> &'a str {
        last_nested_str(self.buf, self.ranges(), 0, 3).unwrap_or("")
    }

    /// The instrumentation scope's attributes.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::nested(self.buf, self.ranges(), 1, 3)
    }
}

impl fmt::Debug for ScopeView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeView")
            .field("index", &self.s)
            .field("name", &self.name())
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

/// Iterator over borrowed attributes (`KeyValue` messages) of a span, resource, scope or
/// key-value list.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    ranges: std::slice::Iter<'a, [u32; 2]>,
    outer: Fields<'a>,
    /// Field number of the message holding the attributes inside `outer`; 0 when the
    /// attributes are fields of `outer` itself.
    wrapper: u32,
    inner: Fields<'a>,
    attr: u32,
}

impl<'a> Attributes<'a> {
    pub(crate) fn direct(body: &'a [u8], attr: u32) -> Self {
        Attributes {
            buf: &[],
            ranges: [].iter(),
            outer: Fields::new(body),
            wrapper: 0,
            inner: Fields::new(&[]),
            attr,
        }
    }

    fn nested(buf: &'a [u8], ranges: &'a [[u32; 2]], wrapper: u32, attr: u32) -> Self {
        Attributes {
            buf,
            ranges: ranges.iter(),
            outer: Fields::new(&[]),
            wrapper,
            inner: Fields::new(&[]),
            attr,
        }
    }
}

impl<'a> Attributes<'a> {
    /// The same attributes, each with every value its bytes hold
    /// ([`StoredKeyValue::value_fields`]), for readers that must not miss one.
    pub fn stored(self) -> StoredAttributes<'a> {
        StoredAttributes(self)
    }

    /// The value of the first attribute named `key`.
    pub(crate) fn value_of(mut self, key: &str) -> Option<AnyValueView<'a>> {
        self.find(|kv| kv.key == key).map(|kv| kv.value)
    }

    /// The next `KeyValue` message.
    #[inline]
    fn next_body(&mut self) -> Option<&'a [u8]> {
        // Span and key-value-list attributes are usually nothing but `attr` fields.
        if self.wrapper == 0
            && self.attr < 16
            && let Some(b) = self.outer.next_len_if((self.attr as u8) << 3 | 2)
        {
            return Some(b);
        }
        loop {
            if self.wrapper != 0 {
                for field in self.inner.by_ref() {
                    if let (true, Value::Len(b)) = (field.number == self.attr, field.value) {
                        return Some(b);
                    }
                }
            }
            match self.outer.next() {
                Some(field) => {
                    if let Value::Len(b) = field.value {
                        if self.wrapper == 0 {
                            if field.number == self.attr {
                                return Some(b);
                            }
                        } else if field.number == self.wrapper {
                            self.inner = Fields::new(b);
                        }
                    }
                }
                None => {
                    let r = self.ranges.next()?;
                    self.outer =
                        Fields::new(self.buf.get(r[0] as usize..r[1] as usize).unwrap_or(&[]));
                }
            }
        }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = KeyValueView<'a>;

    #[inline]
    fn next(&mut self) -> Option<KeyValueView<'a>> {
        self.next_body().map(KeyValueView::parse)
    }
}

/// Iterator over attributes with every value their bytes hold ([`Attributes::stored`]).
#[derive(Clone, Debug)]
pub struct StoredAttributes<'a>(Attributes<'a>);

impl<'a> Iterator for StoredAttributes<'a> {
    type Item = StoredKeyValue<'a>;

    #[inline]
    fn next(&mut self) -> Option<StoredKeyValue<'a>> {
        self.0.next_body().map(|body| StoredKeyValue {
            key: KeyValueView::key_of(body),
            body,
        })
    }
}

/// An attribute as its bytes hold it: the key and every value
/// ([`Attributes::stored`]).
#[derive(Clone, Copy)]
pub struct StoredKeyValue<'a> {
    /// The attribute's key (the last `key` field, as in [`KeyValueView`]).
    pub key: &'a str,
    /// The `KeyValue` message.
    body: &'a [u8],
}

impl<'a> StoredKeyValue<'a> {
    /// Every value the attribute's bytes hold: one [`ValueFields`] per `value` field, in
    /// wire order.
    ///
    /// Encoders write one `value` holding one member of the `AnyValue` oneof, and then
    /// this yields that one value (the [`KeyValueView::value`] of the same attribute). A
    /// decoder that finds more merges them (the last scalar or string wins, arrays and
    /// lists of the same kind are joined), and the views show only the last one; a reader
    /// that must not miss a value a decoder could see, such as redaction, reads them all
    /// here.
    ///
    /// ```
    /// use prost::Message;
    /// use spanflow_otlp::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
    /// use spanflow_otlp::proto::trace::v1::Span;
    /// use spanflow_otlp::{AnyValueView, TraceRequest};
    ///
    /// fn field(number: u32, body: &[u8]) -> Vec<u8> {
    ///     let mut out = Vec::new();
    ///     prost::encoding::bytes::encode(number, &body.to_vec(), &mut out);
    ///     out
    /// }
    /// let kv = |v: &str| KeyValue {
    ///     key: "k".into(),
    ///     value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
    ///     ..Default::default()
    /// };
    /// // One attribute whose value is written twice: a decoder keeps "second".
    /// let mut split = kv("first").encode_to_vec();
    /// split.extend(kv("second").encode_to_vec());
    /// let mut span = Span { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() }
    ///     .encode_to_vec();
    /// span.extend(field(9, &split)); // Span.attributes
    /// let request = TraceRequest::parse(field(1, &field(2, &field(2, &span))).into())?;
    /// let span = request.span(0).unwrap();
    ///
    /// let shown = span.attributes().next().unwrap();
    /// assert_eq!(shown.value, AnyValueView::String("second"));
    /// let stored = span.attributes().stored().next().unwrap();
    /// assert_eq!(stored.key, "k");
    /// let every: Vec<Vec<AnyValueView<'_>>> =
    ///     stored.value_fields().map(Iterator::collect).collect();
    /// assert_eq!(every, [[AnyValueView::String("first")], [AnyValueView::String("second")]]);
    /// # Ok::<(), spanflow_otlp::DecodeError>(())
    /// ```
    pub fn value_fields(&self) -> impl Iterator<Item = ValueFields<'a>> + use<'a> {
        Fields::new(self.body).filter_map(|f| match (f.number, f.value) {
            (2, Value::Len(b)) => Some(ValueFields::new(b)),
            _ => None,
        })
    }
}

impl fmt::Debug for StoredKeyValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKeyValue")
            .field("key", &self.key)
            .field("values", &self.value_fields().count())
            .finish()
    }
}

/// A borrowed attribute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeyValueView<'a> {
    /// The attribute's key.
    pub key: &'a str,
    /// The attribute's value: the last `value` field, as everywhere in the views (see
    /// [`StoredKeyValue::value_fields`] for all of them).
    pub value: AnyValueView<'a>,
}

impl<'a> KeyValueView<'a> {
    #[inline]
    pub(crate) fn parse(body: &'a [u8]) -> Self {
        // Common shape: key (one-byte length) then value as the last field.
        if let [0x0a, key_len, rest @ ..] = body
            && *key_len < 0x80
            && let Some((key, rest)) = rest.split_at_checked(*key_len as usize)
            && let [0x12, value_len, value @ ..] = rest
            && *value_len < 0x80
            && *value_len as usize == value.len()
        {
            return KeyValueView {
                key: as_str(key),
                value: AnyValueView::parse(value),
            };
        }
        let mut key = "";
        let mut value = AnyValueView::Empty;
        for field in Fields::new(body) {
            match (field.number, field.value) {
                (1, Value::Len(b)) => key = as_str(b),
                (2, Value::Len(b)) => value = AnyValueView::parse(b),
                _ => {}
            }
        }
        KeyValueView { key, value }
    }

    /// Reads only the key of a `KeyValue` body (used by wire-level edits).
    pub(crate) fn key_of(body: &'a [u8]) -> &'a str {
        last_len(body, 1).map_or("", as_str)
    }
}

/// A borrowed attribute value (`AnyValue`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AnyValueView<'a> {
    /// No value set.
    Empty,
    /// A UTF-8 string.
    String(&'a str),
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Double(f64),
    /// Raw bytes.
    Bytes(&'a [u8]),
    /// A list of values.
    Array(ArrayView<'a>),
    /// A list of key-value pairs.
    KvList(KvListView<'a>),
}

impl<'a> AnyValueView<'a> {
    /// Reads an encoded `AnyValue` message (as prost writes it) after checking it the way
    /// [`TraceRequest::parse`] checks the values of a request (well-formed, UTF-8 strings,
    /// bounded nesting). Lets a value computed outside a request be written by wire edits.
    ///
    /// ```
    /// use prost::Message;
    /// use spanflow_otlp::AnyValueView;
    /// use spanflow_otlp::proto::common::v1::{AnyValue, ArrayValue, any_value::Value};
    ///
    /// let s = |v: &str| AnyValue { value: Some(Value::StringValue(v.into())) };
    /// let array = AnyValue { value: Some(Value::ArrayValue(ArrayValue { values: vec![s("a"), s("b")] })) };
    /// let bytes = array.encode_to_vec();
    /// let AnyValueView::Array(view) = AnyValueView::decode(&bytes)? else { panic!() };
    /// assert_eq!(view.iter().collect::<Vec<_>>(), [AnyValueView::String("a"), AnyValueView::String("b")]);
    /// assert!(AnyValueView::decode(&[0x0a, 0x01, 0xff]).is_err()); // not UTF-8
    /// # Ok::<(), spanflow_otlp::DecodeError>(())
    /// ```
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        crate::schema::validate(crate::schema::Msg::AnyValue, bytes, 0, 0)?;
        Ok(Self::parse(bytes))
    }

    #[inline]
    pub(crate) fn parse(body: &'a [u8]) -> Self {
        // A single field, as encoders write it (then it is also the last one).
        match body {
            [0x0a, len, s @ ..] if *len < 0x80 && usize::from(*len) == s.len() => {
                return AnyValueView::String(as_str(s));
            }
            [0x10, v] if *v < 0x80 => return AnyValueView::Bool(*v != 0),
            [0x18, v] if *v < 0x80 => return AnyValueView::Int(i64::from(*v)),
            [0x18, a, b] if *a >= 0x80 && *b < 0x80 => {
                return AnyValueView::Int(i64::from(*a & 0x7f) | i64::from(*b) << 7);
            }
            [0x21, rest @ ..] => {
                if let Ok(bits) = <[u8; 8]>::try_from(rest) {
                    return AnyValueView::Double(f64::from_bits(u64::from_le_bytes(bits)));
                }
            }
            _ => {}
        }
        Self::parse_fields(body)
    }

    fn parse_fields(body: &'a [u8]) -> Self {
        ValueFields::new(body).last().unwrap_or(AnyValueView::Empty)
    }

    /// The value one field of an `AnyValue` sets, `None` for a field that is no member of
    /// its oneof (or not of the member's wire type).
    #[inline]
    fn member(field: &Field<'a>) -> Option<Self> {
        Some(match (field.number, field.value) {
            (1, Value::Len(b)) => AnyValueView::String(as_str(b)),
            (2, Value::Varint(v)) => AnyValueView::Bool(v != 0),
            (3, Value::Varint(v)) => AnyValueView::Int(v as i64),
            (4, Value::I64(v)) => AnyValueView::Double(f64::from_bits(v)),
            (5, Value::Len(b)) => AnyValueView::Array(ArrayView { body: b }),
            (6, Value::Len(b)) => AnyValueView::KvList(KvListView { body: b }),
            (7, Value::Len(b)) => AnyValueView::Bytes(b),
            _ => return None,
        })
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            AnyValueView::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer value.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AnyValueView::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// Converts to opentelemetry-proto's owned value.
    pub fn to_proto(&self) -> crate::proto::common::v1::AnyValue {
        use crate::proto::common::v1::{AnyValue, ArrayValue, KeyValueList, any_value};
        let value = match *self {
            AnyValueView::Empty => None,
            AnyValueView::String(s) => Some(any_value::Value::StringValue(s.to_owned())),
            AnyValueView::Bool(b) => Some(any_value::Value::BoolValue(b)),
            AnyValueView::Int(i) => Some(any_value::Value::IntValue(i)),
            AnyValueView::Double(d) => Some(any_value::Value::DoubleValue(d)),
            AnyValueView::Bytes(b) => Some(any_value::Value::BytesValue(b.to_vec())),
            AnyValueView::Array(a) => Some(any_value::Value::ArrayValue(ArrayValue {
                values: a.iter().map(|v| v.to_proto()).collect(),
            })),
            AnyValueView::KvList(l) => Some(any_value::Value::KvlistValue(KeyValueList {
                values: l.iter().map(|kv| kv.to_proto()).collect(),
            })),
        };
        AnyValue { value }
    }
}

/// The fields of one encoded `AnyValue`, each read as the value it sets, in wire order
/// (see [`StoredKeyValue::value_fields`]): one item for what encoders write, none for an
/// empty value, several only where the bytes repeat the oneof, in which case a decoder
/// and [`AnyValueView`] keep the last.
#[derive(Clone, Debug)]
pub struct ValueFields<'a> {
    fields: Fields<'a>,
}

impl<'a> ValueFields<'a> {
    fn new(body: &'a [u8]) -> Self {
        ValueFields {
            fields: Fields::new(body),
        }
    }
}

impl<'a> Iterator for ValueFields<'a> {
    type Item = AnyValueView<'a>;

    #[inline]
    fn next(&mut self) -> Option<AnyValueView<'a>> {
        self.fields.by_ref().find_map(|f| AnyValueView::member(&f))
    }
}

impl KeyValueView<'_> {
    /// Converts to opentelemetry-proto's owned key-value.
    pub fn to_proto(&self) -> crate::proto::common::v1::KeyValue {
        crate::proto::common::v1::KeyValue {
            key: self.key.to_owned(),
            value: Some(self.value.to_proto()),
            key_strindex: 0,
        }
    }
}

/// An `AnyValue` computed outside a request (a rebuilt array or key-value list, say),
/// held encoded so that it reads as an [`AnyValueView`], which wire edits
/// ([`SpanPatch::set_attribute_view`](crate::SpanPatch::set_attribute_view)) copy as bytes.
///
/// ```
/// use spanflow_otlp::{AnyValueBuf, AnyValueView};
/// use spanflow_otlp::proto::common::v1::{AnyValue, ArrayValue, any_value::Value};
///
/// let s = |v: &str| AnyValue { value: Some(Value::StringValue(v.into())) };
/// let array = AnyValue { value: Some(Value::ArrayValue(ArrayValue { values: vec![s("a"), s("b")] })) };
/// let value = AnyValueBuf::new(&array);
/// let AnyValueView::Array(view) = value.view() else { panic!("an array") };
/// assert_eq!(view.iter().collect::<Vec<_>>(), [AnyValueView::String("a"), AnyValueView::String("b")]);
/// assert_eq!(value.view().to_proto(), array);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AnyValueBuf {
    /// An `AnyValue` message that passed [`AnyValueView::decode`]'s checks.
    bytes: Vec<u8>,
}

impl AnyValueBuf {
    /// Encodes `value`. A value [`AnyValueView::decode`] would refuse (nested deeper than
    /// a request may nest) reads as [`AnyValueView::Empty`].
    pub fn new(value: &crate::proto::common::v1::AnyValue) -> Self {
        use prost::Message;
        let bytes = value.encode_to_vec();
        match crate::schema::validate(crate::schema::Msg::AnyValue, &bytes, 0, 0) {
            Ok(()) => AnyValueBuf { bytes },
            Err(_) => AnyValueBuf { bytes: Vec::new() },
        }
    }

    /// The value.
    pub fn view(&self) -> AnyValueView<'_> {
        // Checked in `new`, as `decode` checks.
        AnyValueView::parse(&self.bytes)
    }
}

impl fmt::Debug for AnyValueBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AnyValueBuf").field(&self.view()).finish()
    }
}

/// A borrowed `ArrayValue`.
#[derive(Clone, Copy, PartialEq)]
pub struct ArrayView<'a> {
    pub(crate) body: &'a [u8],
}

impl<'a> ArrayView<'a> {
    /// The values, in order.
    pub fn iter(&self) -> impl Iterator<Item = AnyValueView<'a>> + 'a {
        self.elements().map(AnyValueView::parse)
    }

    /// Every value each element's bytes hold, in order: one [`ValueFields`] per element
    /// (see [`StoredKeyValue::value_fields`]).
    pub fn element_fields(&self) -> impl Iterator<Item = ValueFields<'a>> + use<'a> {
        self.elements().map(ValueFields::new)
    }

    fn elements(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        Fields::new(self.body).filter_map(|f: Field<'a>| match (f.number, f.value) {
            (1, Value::Len(b)) => Some(b),
            _ => None,
        })
    }
}

impl fmt::Debug for ArrayView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A borrowed `KeyValueList`.
#[derive(Clone, Copy, PartialEq)]
pub struct KvListView<'a> {
    pub(crate) body: &'a [u8],
}

impl<'a> KvListView<'a> {
    /// The key-value pairs, in order.
    pub fn iter(&self) -> Attributes<'a> {
        Attributes::direct(self.body, 1)
    }
}

impl fmt::Debug for KvListView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_fast_path_agrees_with_field_walk() {
        let cases: &[&[u8]] = &[
            &[],
            &[0x0a, 0x00],
            &[0x0a, 0x02, b'h', b'i'],
            &[0x0a, 0x01, b'h', 0x18, 0x05],
            &[0x10, 0x00],
            &[0x10, 0x01],
            &[0x18, 0x7f],
            &[0x18, 0xc8, 0x01],
            &[0x18, 0xff, 0x7f],
            &[0x18, 0x80, 0x80, 0x01],
            &[0x18, 0x05, 0x18, 0x06],
            &[0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f],
            &[0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x18, 0x01],
            &[0x3a, 0x01, 0xff],
        ];
        for case in cases {
            assert_eq!(
                AnyValueView::parse(case),
                AnyValueView::parse_fields(case),
                "{case:?}"
            );
        }
    }

    #[test]
    fn attribute_fast_path_handles_two_byte_lengths() {
        let value = "v".repeat(200);
        let mut kv = vec![0x0a, 0x01, b'k', 0x12];
        kv.extend([0xcb, 0x01, 0x0a, 0xc8, 0x01]);
        kv.extend(value.as_bytes());
        let mut body = vec![0x4a, (kv.len() as u8) | 0x80, (kv.len() >> 7) as u8];
        body.extend(&kv);
        body.extend([0x4a, 0x05, 0x0a, 0x01, b'x', 0x12, 0x00]);
        let got: Vec<_> = Attributes::direct(&body, 9).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].key, "k");
        assert_eq!(got[0].value, AnyValueView::String(&value));
        assert_eq!(got[1].key, "x");
        assert_eq!(got[1].value, AnyValueView::Empty);
    }
}
