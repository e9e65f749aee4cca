//! [`SpanHead`]: the fields keep/drop rules read, in one pass over a span.

use spanflow_otlp::SpanView;

/// The scalar fields of a span that keep/drop rules usually need, read in a
/// single pass over the span's bytes.
///
/// Each [`SpanView`] accessor walks the span's fields on its own (protobuf's
/// last-one-wins rule means a field may appear again later); a chain reads
/// the head once per span and hands it to every [`SpanPredicate`], so a
/// filter and a sampler together walk the span once instead of four or five
/// times. Values are exactly what the `SpanView` accessors return.
///
/// [`SpanPredicate`]: crate::SpanPredicate
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanHead<'a> {
    /// As [`SpanView::trace_id`].
    pub trace_id: [u8; 16],
    /// As [`SpanView::name`].
    pub name: &'a str,
    /// As [`SpanView::kind`].
    pub kind: i32,
    /// As [`SpanView::start_time_unix_nano`].
    pub start_time_unix_nano: u64,
    /// As [`SpanView::end_time_unix_nano`].
    pub end_time_unix_nano: u64,
    /// As [`SpanView::status_code`].
    pub status_code: i32,
}

impl<'a> SpanHead<'a> {
    /// Reads the head of `span`.
    pub fn read(span: &SpanView<'a>) -> SpanHead<'a> {
        read_fast(span.raw()).unwrap_or_else(|| SpanHead {
            trace_id: span.trace_id(),
            name: span.name(),
            kind: span.kind(),
            start_time_unix_nano: span.start_time_unix_nano(),
            end_time_unix_nano: span.end_time_unix_nano(),
            status_code: span.status_code(),
        })
    }

    /// `end - start`, or 0 when the end precedes the start.
    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano
            .saturating_sub(self.start_time_unix_nano)
    }
}

/// One pass over the `Span` message body. `None` for anything unexpected
/// (malformed varints, lengths past the end, groups, a name that is not
/// UTF-8): the caller then falls back to the `SpanView` accessors, which
/// define the answer.
fn read_fast(body: &[u8]) -> Option<SpanHead<'_>> {
    let mut trace_id: Option<&[u8]> = None;
    let mut name: &[u8] = b"";
    let mut kind = 0u64;
    let mut start = 0u64;
    let mut end = 0u64;
    let mut status_code = 0u64;
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = varint(rest)?;
        rest = after;
        let number = key >> 3;
        // Scalars of any numeric wire type count, as in `SpanView`.
        let scalar = match key & 7 {
            0 => {
                let (v, after) = varint(rest)?;
                rest = after;
                Some(v)
            }
            1 => {
                let (bytes, after) = split(rest, 8)?;
                rest = after;
                Some(u64::from_le_bytes(bytes.try_into().ok()?))
            }
            5 => {
                let (bytes, after) = split(rest, 4)?;
                rest = after;
                Some(u64::from(u32::from_le_bytes(bytes.try_into().ok()?)))
            }
            2 => {
                let (len, after) = varint(rest)?;
                let (bytes, after) = split(after, usize::try_from(len).ok()?)?;
                rest = after;
                match number {
                    1 => trace_id = Some(bytes),
                    5 => name = bytes,
                    // Several `status` messages merge: the last code wins.
                    15 => {
                        if let Some(code) = status_code_of(bytes)? {
                            status_code = code;
                        }
                    }
                    _ => {}
                }
                None
            }
            _ => return None,
        };
        match (number, scalar) {
            (6, Some(v)) => kind = v,
            (7, Some(v)) => start = v,
            (8, Some(v)) => end = v,
            _ => {}
        }
    }
    let trace_id = match trace_id {
        Some(id) => <[u8; 16]>::try_from(id).unwrap_or([0; 16]),
        None => [0; 16],
    };
    Some(SpanHead {
        trace_id,
        name: std::str::from_utf8(name).ok()?,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        status_code: status_code as i32,
    })
}

/// The last varint field 3 (`code`) of a `Status` body; `Some(None)` when it
/// has none, `None` when malformed.
fn status_code_of(mut s: &[u8]) -> Option<Option<u64>> {
    let mut code = None;
    while !s.is_empty() {
        let (key, after) = varint(s)?;
        s = after;
        match key & 7 {
            0 => {
                let (v, after) = varint(s)?;
                s = after;
                if key >> 3 == 3 {
                    code = Some(v);
                }
            }
            1 => s = split(s, 8)?.1,
            2 => {
                let (len, after) = varint(s)?;
                s = split(after, usize::try_from(len).ok()?)?.1;
            }
            5 => s = split(s, 4)?.1,
            _ => return None,
        }
    }
    Some(code)
}

fn split(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_and_reject_overlong_input() {
        assert_eq!(varint(&[0x96, 0x01, 9]), Some((150, &[9u8][..])));
        assert_eq!(varint(&[0x80]), None);
        assert_eq!(varint(&[0xff; 11]), None);
        assert_eq!(varint(&[]), None);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(read_fast(&[0x2a, 0x05, b'a']).is_none()); // length past the end
        assert!(read_fast(&[0x0b]).is_none()); // group
        assert!(read_fast(&[0x2a, 0x01, 0xff]).is_none()); // name not utf-8
        assert_eq!(read_fast(&[]).map(|h| h.name), Some(""));
    }
}
