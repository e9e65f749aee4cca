//! The OTLP trace message schema (field numbers and types) and a validator that walks
//! any message with it: the same checks prost makes while decoding, without building
//! anything.

use crate::error::DecodeError;
use crate::wire::{self, MAX_DEPTH, Value};

/// Messages of `opentelemetry/proto/{trace,common,resource}/v1` the reader knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// Every message, in declaration order (the row index of [`FIELDS`]).
const MSGS: [Msg; 14] = [
    Msg::Request,
    Msg::ResourceSpans,
    Msg::Resource,
    Msg::EntityRef,
    Msg::ScopeSpans,
    Msg::Scope,
    Msg::Span,
    Msg::Event,
    Msg::Link,
    Msg::Status,
    Msg::KeyValue,
    Msg::AnyValue,
    Msg::ArrayValue,
    Msg::KeyValueList,
];

/// Highest field number any known message uses.
const MAX_FIELD: usize = 16;

type FieldInfo = Option<(&'static str, Kind)>;

/// `FIELDS[msg][number]`: the schema as a table, built at compile time from
/// [`Msg::field_by_match`].
static FIELDS: [[FieldInfo; MAX_FIELD + 1]; MSGS.len()] = {
    let mut table: [[FieldInfo; MAX_FIELD + 1]; MSGS.len()] = [[None; MAX_FIELD + 1]; MSGS.len()];
    let mut m = 0;
    while m < MSGS.len() {
        let mut n = 0;
        while n <= MAX_FIELD {
            table[m][n] = MSGS[m].field_by_match(n as u32);
            n += 1;
        }
        m += 1;
    }
    table
};

/// Declared type of a field, as far as the wire cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    Str,
    Bytes,
    Message(Msg),
}

impl Kind {
    fn wire_type(self) -> u8 {
        match self {
            Kind::Varint => wire::VARINT,
            Kind::Fixed64 => wire::I64,
            Kind::Fixed32 => wire::I32,
            Kind::Str | Kind::Bytes | Kind::Message(_) => wire::LEN,
        }
    }
}

impl Msg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Msg::Request => "ExportTraceServiceRequest",
            Msg::ResourceSpans => "ResourceSpans",
            Msg::Resource => "Resource",
            Msg::EntityRef => "EntityRef",
            Msg::ScopeSpans => "ScopeSpans",
            Msg::Scope => "InstrumentationScope",
            Msg::Span => "Span",
            Msg::Event => "Span.Event",
            Msg::Link => "Span.Link",
            Msg::Status => "Status",
            Msg::KeyValue => "KeyValue",
            Msg::AnyValue => "AnyValue",
            Msg::ArrayValue => "ArrayValue",
            Msg::KeyValueList => "KeyValueList",
        }
    }

    /// Name and kind of field `number`, `None` for fields this schema does not know.
    #[inline(always)]
    pub(crate) fn field(self, number: u32) -> Option<(&'static str, Kind)> {
        // A table lookup: the equivalent `match` compiles to a chain of comparisons that
        // showed up as the hottest line of parsing.
        let n = number as usize;
        if n <= MAX_FIELD {
            // `self as usize < MSGS.len()` for every variant (checked by a test).
            FIELDS[self as usize][n]
        } else {
            None
        }
    }

    const fn field_by_match(self, number: u32) -> Option<(&'static str, Kind)> {
        use Kind::*;
        Some(match (self, number) {
            (Msg::Request, 1) => ("resource_spans", Message(Msg::ResourceSpans)),
            (Msg::ResourceSpans, 1) => ("resource", Message(Msg::Resource)),
            (Msg::ResourceSpans, 2) => ("scope_spans", Message(Msg::ScopeSpans)),
            (Msg::ResourceSpans, 3) => ("schema_url", Str),
            (Msg::Resource, 1) => ("attributes", Message(Msg::KeyValue)),
            (Msg::Resource, 2) => ("dropped_attributes_count", Varint),
            (Msg::Resource, 3) => ("entity_refs", Message(Msg::EntityRef)),
            (Msg::EntityRef, 1) => ("schema_url", Str),
            (Msg::EntityRef, 2) => ("type", Str),
            (Msg::EntityRef, 3) => ("id_keys", Str),
            (Msg::EntityRef, 4) => ("description_keys", Str),
            (Msg::ScopeSpans, 1) => ("scope", Message(Msg::Scope)),
            (Msg::ScopeSpans, 2) => ("spans", Message(Msg::Span)),
            (Msg::ScopeSpans, 3) => ("schema_url", Str),
            (Msg::Scope, 1) => ("name", Str),
            (Msg::Scope, 2) => ("version", Str),
            (Msg::Scope, 3) => ("attributes", Message(Msg::KeyValue)),
            (Msg::Scope, 4) => ("dropped_attributes_count", Varint),
            (Msg::Span, 1) => ("trace_id", Bytes),
            (Msg::Span, 2) => ("span_id", Bytes),
            (Msg::Span, 3) => ("trace_state", Str),
            (Msg::Span, 4) => ("parent_span_id", Bytes),
            (Msg::Span, 5) => ("name", Str),
            (Msg::Span, 6) => ("kind", Varint),
            (Msg::Span, 7) => ("start_time_unix_nano", Fixed64),
            (Msg::Span, 8) => ("end_time_unix_nano", Fixed64),
            (Msg::Span, 9) => ("attributes", Message(Msg::KeyValue)),
            (Msg::Span, 10) => ("dropped_attributes_count", Varint),
            (Msg::Span, 11) => ("events", Message(Msg::Event)),
            (Msg::Span, 12) => ("dropped_events_count", Varint),
            (Msg::Span, 13) => ("links", Message(Msg::Link)),
            (Msg::Span, 14) => ("dropped_links_count", Varint),
            (Msg::Span, 15) => ("status", Message(Msg::Status)),
            (Msg::Span, 16) => ("flags", Fixed32),
            (Msg::Event, 1) => ("time_unix_nano", Fixed64),
            (Msg::Event, 2) => ("name", Str),
            (Msg::Event, 3) => ("attributes", Message(Msg::KeyValue)),
            (Msg::Event, 4) => ("dropped_attributes_count", Varint),
            (Msg::Link, 1) => ("trace_id", Bytes),
            (Msg::Link, 2) => ("span_id", Bytes),
            (Msg::Link, 3) => ("trace_state", Str),
            (Msg::Link, 4) => ("attributes", Message(Msg::KeyValue)),
            (Msg::Link, 5) => ("dropped_attributes_count", Varint),
            (Msg::Link, 6) => ("flags", Fixed32),
            (Msg::Status, 2) => ("message", Str),
            (Msg::Status, 3) => ("code", Varint),
            (Msg::KeyValue, 1) => ("key", Str),
            (Msg::KeyValue, 2) => ("value", Message(Msg::AnyValue)),
            (Msg::KeyValue, 3) => ("key_strindex", Varint),
            (Msg::AnyValue, 1) => ("string_value", Str),
            (Msg::AnyValue, 2) => ("bool_value", Varint),
            (Msg::AnyValue, 3) => ("int_value", Varint),
            (Msg::AnyValue, 4) => ("double_value", Fixed64),
            (Msg::AnyValue, 5) => ("array_value", Message(Msg::ArrayValue)),
            (Msg::AnyValue, 6) => ("kvlist_value", Message(Msg::KeyValueList)),
            (Msg::AnyValue, 7) => ("bytes_value", Bytes),
            (Msg::AnyValue, 8) => ("string_value_strindex", Varint),
            (Msg::ArrayValue, 1) => ("values", Message(Msg::AnyValue)),
            (Msg::KeyValueList, 1) => ("values", Message(Msg::KeyValue)),
            _ => return None,
        })
    }
}

/// Checks one field of `msg` found at `base + field.start` against the schema, validating
/// nested messages recursively. Unknown fields only have to be well-formed.
#[inline]
pub(crate) fn check_field(
    msg: Msg,
    field: &wire::Field<'_>,
    base: usize,
    depth: u32,
) -> Result<(), DecodeError> {
    let Some((_, kind)) = msg.field(field.number) else {
        return Ok(());
    };
    if field.wire_type() != kind.wire_type() {
        return Err(wrong_wire_type(msg, field, base));
    }
    match (kind, field.value) {
        (Kind::Str, Value::Len(body)) if !wire::is_utf8(body) => {
            Err(invalid_utf8(msg, field, base))
        }
        // Most attributes have exactly this shape; anything else takes the general path. The
        // shortcut skips the key-value (at `depth + 1`) and its value (at `depth + 2`), so it
        // applies only where both are within the depth limit.
        (Kind::Message(Msg::KeyValue), Value::Len(body))
            if depth + 2 <= MAX_DEPTH && simple_key_value(body) =>
        {
            Ok(())
        }
        (Kind::Message(inner), Value::Len(body)) => {
            validate(inner, body, base + field.body_start(), depth + 1)
        }
        _ => Ok(()),
    }
}

#[cold]
#[inline(never)]
fn wrong_wire_type(msg: Msg, field: &wire::Field<'_>, base: usize) -> DecodeError {
    let (name, kind) = msg.field(field.number).unwrap_or(("?", Kind::Varint));
    DecodeError::WrongWireType {
        message: msg.name(),
        field: name,
        found: field.wire_type(),
        expected: kind.wire_type(),
        offset: base + field.start,
    }
}

#[cold]
#[inline(never)]
fn invalid_utf8(msg: Msg, field: &wire::Field<'_>, base: usize) -> DecodeError {
    DecodeError::InvalidUtf8 {
        message: msg.name(),
        field: msg.field(field.number).map_or("?", |(name, _)| name),
        offset: base + field.body_start(),
    }
}

/// Recognises (and thereby validates) the common attribute shape: `key` (one-byte length,
/// UTF-8) then `value` as the last field holding one scalar or short string. Returns
/// `false` for anything else, which is then validated field by field.
#[inline(always)]
pub(crate) fn simple_key_value(body: &[u8]) -> bool {
    let [0x0a, key_len, rest @ ..] = body else {
        return false;
    };
    let key_len = *key_len as usize;
    if key_len >= 0x80 || rest.len() < key_len {
        return false;
    }
    let (key, rest) = rest.split_at(key_len);
    let [0x12, value_len, value @ ..] = rest else {
        return false;
    };
    if *value_len >= 0x80 || *value_len as usize != value.len() || !wire::is_utf8(key) {
        return false;
    }
    match value {
        // string_value
        [0x0a, len, s @ ..] => *len < 0x80 && *len as usize == s.len() && wire::is_utf8(s),
        // bool_value or int_value
        [0x10 | 0x18, varint @ ..] => is_one_varint(varint),
        // double_value
        [0x21, _, _, _, _, _, _, _, _] => true,
        _ => false,
    }
}

/// Whether `bytes` is exactly one well-formed varint (as [`wire::read_varint`] accepts).
#[inline(always)]
fn is_one_varint(bytes: &[u8]) -> bool {
    match bytes {
        [] => false,
        [init @ .., last] => {
            init.len() < 10
                && *last < 0x80
                && init.iter().all(|&b| b >= 0x80)
                && (init.len() < 9 || *last <= 1)
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Switches the inline fast paths off, so tests can compare them with the general path.
    pub(crate) static GENERAL_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the inline fast paths are on (always, outside of tests).
#[cfg(test)]
pub(crate) fn fast_paths() -> bool {
    !GENERAL_ONLY.with(std::cell::Cell::get)
}

/// Whether the inline fast paths are on (always, outside of tests).
#[cfg(not(test))]
#[inline(always)]
pub(crate) const fn fast_paths() -> bool {
    true
}

/// Validates a whole message body found at byte `base` of the request.
pub(crate) fn validate(msg: Msg, buf: &[u8], base: usize, depth: u32) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep { offset: base });
    }
    let mut pos = 0;
    while pos < buf.len() {
        if fast_paths()
            && let Some(next) = fast_field(msg, buf, pos, depth)
        {
            pos = next;
            continue;
        }
        match wire::next_field(buf, &mut pos) {
            Ok(Some(field)) => check_field(msg, &field, base, depth)?,
            Ok(None) => break,
            Err((e, at)) => return Err(DecodeError::from_wire(e, msg.name(), base + at)),
        }
    }
    Ok(())
}

/// Validates the field of `msg` at `pos` when it has a one-byte tag of a known field with
/// its declared wire type, a one- or two-byte length, and is a scalar, bytes, a UTF-8
/// string or a simple attribute ([`simple_key_value`]). Returns the position after it, or
/// `None` for anything else (nested messages, unknown or malformed fields), which
/// [`check_field`] then accepts or rejects. Accepting here is the decision `check_field`
/// makes for the same field: the tag fixes number and wire type, the body gets the same
/// check.
///
/// `depth` is `msg`'s own depth: a simple attribute is taken here only where its value (two
/// levels down) is within the depth limit.
#[inline(always)]
fn fast_field(msg: Msg, buf: &[u8], pos: usize, depth: u32) -> Option<usize> {
    let (&tag, rest) = buf.get(pos..)?.split_first()?;
    if tag >= 0x80 {
        return None;
    }
    let (_, kind) = msg.field(u32::from(tag >> 3))?;
    let size = match (tag & 7, kind) {
        (wire::I64, Kind::Fixed64) => rest.get(..8).map(|_| 8)?,
        (wire::I32, Kind::Fixed32) => rest.get(..4).map(|_| 4)?,
        (wire::VARINT, Kind::Varint) => wire::varint_size(rest)?,
        (wire::LEN, Kind::Bytes | Kind::Str | Kind::Message(Msg::KeyValue)) => {
            let (len, n) = wire::short_len(rest)?;
            let body = rest.get(n..n + len)?;
            let ok = match kind {
                Kind::Str => wire::is_utf8(body),
                Kind::Message(_) => depth + 2 <= MAX_DEPTH && simple_key_value(body),
                _ => true,
            };
            if !ok {
                return None;
            }
            n + len
        }
        _ => return None,
    };
    Some(pos + 1 + size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_follow_msg_order() {
        for (i, msg) in MSGS.iter().enumerate() {
            assert_eq!(*msg as usize, i);
            for n in 0..40 {
                assert_eq!(msg.field(n), msg.field_by_match(n));
            }
        }
    }

    #[test]
    fn one_varint_matches_the_reader() {
        let cases: &[&[u8]] = &[
            &[],
            &[0x00],
            &[0x7f],
            &[0x80],
            &[0x80, 0x01],
            &[0x80, 0x01, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ];
        for case in cases {
            let mut pos = 0;
            let reader = wire::read_varint(case, &mut pos).is_ok() && pos == case.len();
            assert_eq!(is_one_varint(case), reader, "{case:?}");
        }
    }
}
