//! Attributes: [`Attributes`] iterates the `KeyValue` messages of a span, resource, scope,
//! event, link or key-value list as [`KeyValueView`]s; [`StoredAttributes`] yields them as
//! [`StoredKeyValue`]s, with every value their bytes hold.

use std::fmt;

use super::fields::{as_str, last_len};
use super::value::{AnyValueView, ValueFields};
use crate::wire::{Fields, Value};

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

    pub(super) fn nested(buf: &'a [u8], ranges: &'a [[u32; 2]], wrapper: u32, attr: u32) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

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
