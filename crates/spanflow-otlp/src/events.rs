//! Zero-copy views of a span's events and links.

use std::fmt;

use crate::request::SpanFields;
use crate::view::{AnyValueView, Attributes, as_str, id, last_len, last_scalar};
use crate::wire::Value;

/// Field numbers of `Span.Event` and `Span.Link` the views read.
mod field {
    pub(super) const SPAN_EVENTS: u32 = 11;
    pub(super) const SPAN_LINKS: u32 = 13;
    pub(super) const EVENT_TIME: u32 = 1;
    pub(super) const EVENT_NAME: u32 = 2;
    pub(super) const EVENT_ATTRIBUTES: u32 = 3;
    pub(super) const EVENT_DROPPED_ATTRIBUTES: u32 = 4;
    pub(super) const LINK_TRACE_ID: u32 = 1;
    pub(super) const LINK_SPAN_ID: u32 = 2;
    pub(super) const LINK_TRACE_STATE: u32 = 3;
    pub(super) const LINK_ATTRIBUTES: u32 = 4;
    pub(super) const LINK_DROPPED_ATTRIBUTES: u32 = 5;
    pub(super) const LINK_FLAGS: u32 = 6;
}

/// The bodies of every length-delimited field `number` of a span body, in wire order.
#[derive(Clone, Debug)]
struct Repeated<'a> {
    fields: SpanFields<'a>,
    number: u32,
}

impl<'a> Iterator for Repeated<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let number = self.number;
        self.fields.by_ref().find_map(|f| match f.value {
            Value::Len(body) if f.number == number => Some(body),
            _ => None,
        })
    }
}

/// Iterator over a span's events ([`SpanView::events`](crate::SpanView::events)).
#[derive(Clone, Debug)]
pub struct Events<'a>(Repeated<'a>);

impl<'a> Events<'a> {
    pub(crate) fn new(span: &'a [u8]) -> Self {
        Events(Repeated {
            fields: SpanFields::new(span),
            number: field::SPAN_EVENTS,
        })
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = EventView<'a>;

    fn next(&mut self) -> Option<EventView<'a>> {
        self.0.next().map(|body| EventView { body })
    }
}

/// Iterator over a span's links ([`SpanView::links`](crate::SpanView::links)).
#[derive(Clone, Debug)]
pub struct Links<'a>(Repeated<'a>);

impl<'a> Links<'a> {
    pub(crate) fn new(span: &'a [u8]) -> Self {
        Links(Repeated {
            fields: SpanFields::new(span),
            number: field::SPAN_LINKS,
        })
    }
}

impl<'a> Iterator for Links<'a> {
    type Item = LinkView<'a>;

    fn next(&mut self) -> Option<LinkView<'a>> {
        self.0.next().map(|body| LinkView { body })
    }
}

/// One event of a span (`Span.Event`), read in place. Fields follow the same rules as
/// [`SpanView`](crate::SpanView)'s: the last occurrence of a field counts.
///
/// ```
/// let spans = spanflow_otlp::testing::span_batch(8, 5);
/// let request =
///     spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
/// let (span, data) = request
///     .spans()
///     .zip(&spans)
///     .find(|(_, data)| !data.events.is_empty())
///     .expect("a span with events");
/// let event = span.events().next().unwrap();
/// assert_eq!(event.name(), data.events[0].name);
/// assert_eq!(event.attributes().count(), data.events[0].attributes.len());
/// ```
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    body: &'a [u8],
}

impl<'a> EventView<'a> {
    /// The event's time in nanoseconds since the Unix epoch.
    pub fn time_unix_nano(&self) -> u64 {
        last_scalar(self.body, field::EVENT_TIME).unwrap_or(0)
    }

    /// The event's name.
    pub fn name(&self) -> &'a str {
        last_len(self.body, field::EVENT_NAME).map_or("", as_str)
    }

    /// The event's attributes, in wire order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::direct(self.body, field::EVENT_ATTRIBUTES)
    }

    /// The value of the first event attribute named `key`.
    pub fn attribute(&self, key: &str) -> Option<AnyValueView<'a>> {
        self.attributes().value_of(key)
    }

    /// Number of attributes the producer dropped from the event.
    pub fn dropped_attributes_count(&self) -> u32 {
        last_scalar(self.body, field::EVENT_DROPPED_ATTRIBUTES).unwrap_or(0) as u32
    }
}

impl fmt::Debug for EventView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventView")
            .field("name", &self.name())
            .field("time_unix_nano", &self.time_unix_nano())
            .finish_non_exhaustive()
    }
}

/// One link of a span (`Span.Link`) to another span, read in place. Fields follow the
/// same rules as [`SpanView`](crate::SpanView)'s: the last occurrence of a field counts.
#[derive(Clone, Copy)]
pub struct LinkView<'a> {
    body: &'a [u8],
}

impl<'a> LinkView<'a> {
    /// The linked span's 16-byte trace id (all zeros when absent or not 16 bytes long).
    pub fn trace_id(&self) -> [u8; 16] {
        id(last_len(self.body, field::LINK_TRACE_ID)).unwrap_or([0; 16])
    }

    /// The linked span's 8-byte span id (all zeros when absent or not 8 bytes long).
    pub fn span_id(&self) -> [u8; 8] {
        id(last_len(self.body, field::LINK_SPAN_ID)).unwrap_or([0; 8])
    }

    /// The W3C `tracestate` of the linked span context.
    pub fn trace_state(&self) -> &'a str {
        last_len(self.body, field::LINK_TRACE_STATE).map_or("", as_str)
    }

    /// The link's attributes, in wire order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::direct(self.body, field::LINK_ATTRIBUTES)
    }

    /// The value of the first link attribute named `key`.
    pub fn attribute(&self, key: &str) -> Option<AnyValueView<'a>> {
        self.attributes().value_of(key)
    }

    /// Number of attributes the producer dropped from the link.
    pub fn dropped_attributes_count(&self) -> u32 {
        last_scalar(self.body, field::LINK_DROPPED_ATTRIBUTES).unwrap_or(0) as u32
    }

    /// The link's `flags` (W3C trace flags plus the OTLP 1.x `is_remote` bits).
    pub fn flags(&self) -> u32 {
        last_scalar(self.body, field::LINK_FLAGS).unwrap_or(0) as u32
    }
}

impl fmt::Debug for LinkView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkView")
            .field(
                "trace_id",
                &format_args!("{:032x}", u128::from_be_bytes(self.trace_id())),
            )
            .field(
                "span_id",
                &format_args!("{:016x}", u64::from_be_bytes(self.span_id())),
            )
            .finish_non_exhaustive()
    }
}
