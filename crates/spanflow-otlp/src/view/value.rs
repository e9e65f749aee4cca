//! Attribute values: [`AnyValueView`] reads an `AnyValue` in place (arrays and key-value
//! lists as [`ArrayView`] and [`KvListView`], every member the bytes set as
//! [`ValueFields`]); [`AnyValueBuf`] holds one computed outside a request.

use std::fmt;

use super::attributes::Attributes;
use super::fields::as_str;
use crate::error::DecodeError;
use crate::wire::{Field, Fields, Value};

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
    /// [`TraceRequest::parse`](crate::TraceRequest::parse) checks the values of a request
    /// (well-formed, UTF-8 strings, bounded nesting). Lets a value computed outside a
    /// request be written by wire edits.
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
/// (see [`StoredKeyValue::value_fields`](crate::StoredKeyValue::value_fields)): one item
/// for what encoders write, none for an empty value, several only where the bytes repeat
/// the oneof, in which case a decoder and [`AnyValueView`] keep the last.
#[derive(Clone, Debug)]
pub struct ValueFields<'a> {
    fields: Fields<'a>,
}

impl<'a> ValueFields<'a> {
    pub(super) fn new(body: &'a [u8]) -> Self {
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
    /// (see [`StoredKeyValue::value_fields`](crate::StoredKeyValue::value_fields)).
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
}
