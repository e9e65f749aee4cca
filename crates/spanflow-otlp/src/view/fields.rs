//! Field readers shared by the views: strings of validated bytes, protobuf's last-one-wins
//! rule for length-delimited and scalar fields, ids and the merged status code.

use crate::wire::{Fields, Value};

/// Reads a string field of an indexed request.
///
/// Every caller passes the body of a field the schema declares `string` (span name,
/// trace_state, status message, attribute keys and string values, scope name and version,
/// schema URLs), taken from a [`TraceRequest`](crate::TraceRequest). A `TraceRequest`'s
/// bytes are, field for field, either validated by
/// [`TraceRequest::parse`](crate::TraceRequest::parse) (which checks UTF-8 of every known
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
