//! Protobuf wire primitives: varints, tags, field iteration and writing.
//!
//! Everything here works on byte slices and reports positions relative to the
//! slice it was given; callers add their own base offset for error messages.

/// Wire type of a varint field.
pub(crate) const VARINT: u8 = 0;
/// Wire type of a fixed 64-bit field.
pub(crate) const I64: u8 = 1;
/// Wire type of a length-delimited field.
pub(crate) const LEN: u8 = 2;
/// Wire type that starts a (deprecated) group.
pub(crate) const SGROUP: u8 = 3;
/// Wire type that ends a (deprecated) group.
pub(crate) const EGROUP: u8 = 4;
/// Wire type of a fixed 32-bit field.
pub(crate) const I32: u8 = 5;

/// Tag byte of `ExportTraceServiceRequest.resource_spans` (field 1, length-delimited).
pub(crate) const TAG_RESOURCE_SPANS: u8 = 0x0a;
/// Tag byte of `ResourceSpans.scope_spans` (field 2, length-delimited).
pub(crate) const TAG_SCOPE_SPANS: u8 = 0x12;

/// Deepest nesting of messages and groups accepted, like prost's recursion limit.
pub(crate) const MAX_DEPTH: u32 = 100;

/// What went wrong while reading one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireError {
    Truncated,
    VarintOverflow,
    InvalidWireType(u8),
    InvalidFieldNumber,
    UnbalancedGroup,
    TooDeep,
}

/// The value of one field, borrowed from the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    I64(u64),
    Len(&'a [u8]),
    I32(u32),
    /// A group's body (between its start and end tags); never produced by OTLP encoders.
    Group,
}

/// One field: its number, value and the byte range `start..end` it occupies (tag included).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) number: u32,
    pub(crate) value: Value<'a>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Field<'_> {
    /// Wire type of the field.
    pub(crate) fn wire_type(&self) -> u8 {
        match self.value {
            Value::Varint(_) => VARINT,
            Value::I64(_) => I64,
            Value::Len(_) => LEN,
            Value::I32(_) => I32,
            Value::Group => SGROUP,
        }
    }

    /// Start of a length-delimited field's body, relative to the buffer.
    pub(crate) fn body_start(&self) -> usize {
        match self.value {
            Value::Len(b) => self.end - b.len(),
            _ => self.end,
        }
    }
}

/// Reads a varint at `*pos`, advancing it. Rejects encodings longer than 10 bytes or
/// overflowing 64 bits, as prost does.
#[inline]
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut result = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *buf.get(*pos).ok_or(WireError::Truncated)?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return Err(WireError::VarintOverflow);
        }
        result |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(result);
        }
        shift += 7;
    }
}

/// The well-formed varint `bytes` starts with (as [`read_varint`] accepts it) and its
/// length, `None` when there is none.
#[inline(always)]
pub(crate) fn varint_prefix(bytes: &[u8]) -> Option<(u64, usize)> {
    match bytes {
        [a, ..] if *a < 0x80 => Some((u64::from(*a), 1)),
        [a, b, ..] if *b < 0x80 => Some((u64::from(*a & 0x7f) | u64::from(*b) << 7, 2)),
        _ => {
            let mut pos = 0;
            read_varint(bytes, &mut pos).ok().map(|v| (v, pos))
        }
    }
}

/// Length of the well-formed varint `bytes` starts with (as [`read_varint`] accepts it),
/// `None` when there is none.
#[inline(always)]
pub(crate) fn varint_size(bytes: &[u8]) -> Option<usize> {
    varint_prefix(bytes).map(|(_, n)| n)
}

/// A length prefix of one or two bytes at the start of `bytes`: `(length, prefix size)`;
/// `None` for anything else (longer, or truncated), left to the general reader.
#[inline(always)]
pub(crate) fn short_len(bytes: &[u8]) -> Option<(usize, usize)> {
    match bytes {
        [a, ..] if *a < 0x80 => Some((usize::from(*a), 1)),
        [a, b, ..] if *b < 0x80 => Some((usize::from(*a & 0x7f) | usize::from(*b) << 7, 2)),
        _ => None,
    }
}

#[inline]
fn read_fixed<const N: usize>(buf: &[u8], pos: &mut usize) -> Result<[u8; N], WireError> {
    let bytes = buf.get(*pos..*pos + N).ok_or(WireError::Truncated)?;
    *pos += N;
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    Ok(out)
}

#[inline]
fn read_tag(buf: &[u8], pos: &mut usize) -> Result<(u32, u8), WireError> {
    let key = read_varint(buf, pos)?;
    if key > u64::from(u32::MAX) {
        return Err(WireError::InvalidFieldNumber);
    }
    let wire_type = (key & 7) as u8;
    let number = (key >> 3) as u32;
    if wire_type > I32 {
        return Err(WireError::InvalidWireType(wire_type));
    }
    if number == 0 {
        return Err(WireError::InvalidFieldNumber);
    }
    Ok((number, wire_type))
}

/// Reads the field starting at `*pos`. Returns `Ok(None)` at the end of the buffer and
/// the error together with the position where it was found otherwise.
#[inline(always)]
pub(crate) fn next_field<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> Result<Option<Field<'a>>, (WireError, usize)> {
    let start = *pos;
    let Some(&tag) = buf.get(start) else {
        return Ok(None);
    };
    // Fast path: one-byte tag (fields 1..=15) and a one-byte length or varint, which is
    // nearly every field of an OTLP span.
    if (8..0x80).contains(&tag) {
        let number = u32::from(tag >> 3);
        match tag & 7 {
            I64 => {
                if let Some(bytes) = buf.get(start + 1..start + 9) {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(bytes);
                    *pos = start + 9;
                    return Ok(Some(Field {
                        number,
                        value: Value::I64(u64::from_le_bytes(v)),
                        start,
                        end: start + 9,
                    }));
                }
            }
            I32 => {
                if let Some(bytes) = buf.get(start + 1..start + 5) {
                    let mut v = [0u8; 4];
                    v.copy_from_slice(bytes);
                    *pos = start + 5;
                    return Ok(Some(Field {
                        number,
                        value: Value::I32(u32::from_le_bytes(v)),
                        start,
                        end: start + 5,
                    }));
                }
            }
            _ => {}
        }
        if let Some(&next) = buf.get(start + 1)
            && next < 0x80
        {
            match tag & 7 {
                LEN => {
                    let end = start + 2 + next as usize;
                    if let Some(body) = buf.get(start + 2..end) {
                        *pos = end;
                        return Ok(Some(Field {
                            number,
                            value: Value::Len(body),
                            start,
                            end,
                        }));
                    }
                }
                VARINT => {
                    *pos = start + 2;
                    return Ok(Some(Field {
                        number,
                        value: Value::Varint(u64::from(next)),
                        start,
                        end: start + 2,
                    }));
                }
                _ => {}
            }
        } else if tag & 7 == LEN
            && let Some(&[low, high]) = buf.get(start + 1..start + 3)
            && high < 0x80
        {
            // Two-byte length (128..16384 bytes): spans, events, resource and scope lists.
            let end = start + 3 + (usize::from(low & 0x7f) | usize::from(high) << 7);
            if let Some(body) = buf.get(start + 3..end) {
                *pos = end;
                return Ok(Some(Field {
                    number,
                    value: Value::Len(body),
                    start,
                    end,
                }));
            }
        }
    }
    next_field_slow(buf, pos)
}

#[inline(never)]
fn next_field_slow<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> Result<Option<Field<'a>>, (WireError, usize)> {
    let start = *pos;
    let (number, wire_type) = read_tag(buf, pos).map_err(|e| (e, start))?;
    let value_at = *pos;
    let value = read_value(buf, pos, number, wire_type, 0).map_err(|e| (e, value_at))?;
    Ok(Some(Field {
        number,
        value,
        start,
        end: *pos,
    }))
}

fn read_value<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    number: u32,
    wire_type: u8,
    depth: u32,
) -> Result<Value<'a>, WireError> {
    Ok(match wire_type {
        VARINT => Value::Varint(read_varint(buf, pos)?),
        I64 => Value::I64(u64::from_le_bytes(read_fixed::<8>(buf, pos)?)),
        LEN => {
            let len = read_varint(buf, pos)?;
            let remaining = (buf.len() - *pos) as u64;
            if len > remaining {
                return Err(WireError::Truncated);
            }
            let body = &buf[*pos..*pos + len as usize];
            *pos += len as usize;
            Value::Len(body)
        }
        I32 => Value::I32(u32::from_le_bytes(read_fixed::<4>(buf, pos)?)),
        SGROUP => {
            skip_group(buf, pos, number, depth + 1)?;
            Value::Group
        }
        // An end-group tag outside of a group.
        _ => return Err(WireError::UnbalancedGroup),
    })
}

fn skip_group(buf: &[u8], pos: &mut usize, number: u32, depth: u32) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep);
    }
    loop {
        if *pos >= buf.len() {
            return Err(WireError::Truncated);
        }
        let (inner, wire_type) = read_tag(buf, pos)?;
        if wire_type == EGROUP {
            return if inner == number {
                Ok(())
            } else {
                Err(WireError::UnbalancedGroup)
            };
        }
        read_value(buf, pos, inner, wire_type, depth)?;
    }
}

/// Lenient field iterator for already validated bytes: stops at the first malformed field.
#[derive(Debug, Clone)]
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }
}

impl<'a> Fields<'a> {
    /// Fast path for readers: when the next field has the one-byte tag `tag` of a
    /// length-delimited field and a one- or two-byte length, returns its body and moves
    /// past it; otherwise returns `None` and leaves the iterator where it was.
    #[inline(always)]
    pub(crate) fn next_len_if(&mut self, tag: u8) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.pos..)?;
        let (len, n) = match rest {
            [t, a, ..] if *t == tag && *a < 0x80 => (usize::from(*a), 2),
            [t, a, b, ..] if *t == tag && *b < 0x80 => {
                (usize::from(*a & 0x7f) | usize::from(*b) << 7, 3)
            }
            _ => return None,
        };
        let body = rest.get(n..n + len)?;
        self.pos += n + len;
        Some(body)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    #[inline]
    fn next(&mut self) -> Option<Field<'a>> {
        match next_field(self.buf, &mut self.pos) {
            Ok(field) => field,
            Err(_) => {
                self.pos = self.buf.len();
                None
            }
        }
    }
}

/// Whether `bytes` is UTF-8, with an inlined fast path for short ASCII strings (nearly
/// every key and name in OTLP).
#[inline(always)]
pub(crate) fn is_utf8(bytes: &[u8]) -> bool {
    is_short_ascii(bytes) || std::str::from_utf8(bytes).is_ok()
}

/// Whether `bytes` is at most 64 bytes of ASCII, checked a word at a time: the 8-byte
/// chunks, then the last 8 bytes again (overlapping) for the tail; shorter strings with
/// two overlapping 4-byte or three single-byte reads. Longer strings are left to
/// `std::str::from_utf8`, which has its own vectorised ASCII path.
#[inline(always)]
fn is_short_ascii(bytes: &[u8]) -> bool {
    const HIGH64: u64 = 0x8080_8080_8080_8080;
    const HIGH32: u32 = 0x8080_8080;
    if let Some(last) = bytes.last_chunk::<8>() {
        if bytes.len() > 64 {
            return false;
        }
        let (chunks, _) = bytes.as_chunks::<8>();
        let acc = chunks.iter().fold(u64::from_ne_bytes(*last), |acc, c| {
            acc | u64::from_ne_bytes(*c)
        });
        acc & HIGH64 == 0
    } else if let (Some(first), Some(last)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        (u32::from_ne_bytes(*first) | u32::from_ne_bytes(*last)) & HIGH32 == 0
    } else {
        match bytes {
            [] => true,
            [a] => *a < 0x80,
            [a, b] => (a | b) < 0x80,
            [a, b, c, ..] => (a | b | c) < 0x80,
        }
    }
}

/// Number of bytes `value` takes as a varint.
#[inline]
pub(crate) fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits; `| 1` makes 0 take one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `value` as a varint.
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a field tag.
#[inline]
pub(crate) fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

/// Appends a length-delimited field with the given body.
#[inline]
pub(crate) fn put_bytes_field(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    put_tag(out, number, LEN);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends a varint field.
#[inline]
pub(crate) fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_tag(out, number, VARINT);
    put_varint(out, value);
}

/// Appends a fixed64 field.
#[inline]
pub(crate) fn put_fixed64_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_tag(out, number, I64);
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a fixed32 field.
#[inline]
pub(crate) fn put_fixed32_field(out: &mut Vec<u8>, number: u32, value: u32) {
    put_tag(out, number, I32);
    out.extend_from_slice(&value.to_le_bytes());
}

/// Size of a length-delimited field (tag, length and body) whose tag fits one byte.
#[inline]
pub(crate) fn len_field_size(body_len: usize) -> usize {
    1 + varint_len(body_len as u64) + body_len
}

/// Starts a length-delimited field whose length is not known yet: writes the tag and
/// reserves `guess` bytes for the length. Finish it with [`end_len_field`].
#[inline]
pub(crate) fn begin_len_field(out: &mut Vec<u8>, number: u32, guess: usize) -> (usize, usize) {
    put_tag(out, number, LEN);
    let mark = out.len();
    out.resize(mark + guess, 0);
    (mark, guess)
}

/// Finishes a field started with [`begin_len_field`]: writes the minimal varint length,
/// moving the body when the reserved room was the wrong size. Returns where the body
/// starts now.
#[inline]
pub(crate) fn end_len_field(out: &mut Vec<u8>, (mark, guess): (usize, usize)) -> usize {
    let body_start = mark + guess;
    let len = out.len() - body_start;
    let need = varint_len(len as u64);
    if need != guess {
        if need > guess {
            let grow = need - guess;
            out.resize(out.len() + grow, 0);
            out.copy_within(body_start..body_start + len, body_start + grow);
        } else {
            let shrink = guess - need;
            out.copy_within(body_start..body_start + len, body_start - shrink);
            out.truncate(out.len() - shrink);
        }
    }
    let mut value = len as u64;
    let mut at = mark;
    while value >= 0x80 {
        out[at] = (value as u8) | 0x80;
        value >>= 7;
        at += 1;
    }
    out[at] = value as u8;
    mark + need
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_and_sizes() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos), Ok(v));
            assert_eq!(pos, out.len());
            out.push(0x01);
            assert_eq!(varint_prefix(&out), Some((v, pos)), "{v}");
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let buf = [0xff; 11];
        assert_eq!(read_varint(&buf, &mut 0), Err(WireError::VarintOverflow));
        assert_eq!(read_varint(&[0x80], &mut 0), Err(WireError::Truncated));
        assert_eq!(varint_prefix(&buf), None);
        assert_eq!(varint_prefix(&[0x80]), None);
        assert_eq!(varint_prefix(&[]), None);
    }

    #[test]
    fn len_field_fixup_moves_body_both_ways() {
        for (guess, body_len) in [
            (1, 10),
            (1, 200),
            (2, 10),
            (2, 200),
            (3, 20_000),
            (1, 20_000),
        ] {
            let mut out = vec![9u8];
            let mark = begin_len_field(&mut out, 2, guess);
            out.extend((0..body_len).map(|i| i as u8));
            end_len_field(&mut out, mark);
            let mut pos = 1;
            let field = next_field(&out, &mut pos).unwrap().unwrap();
            match field.value {
                Value::Len(b) => assert_eq!(b.len(), body_len),
                _ => panic!("not a len field"),
            }
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn short_ascii_check_agrees_with_std() {
        let mut buf = [b'a'; 80];
        for len in 0..=80 {
            assert!(is_utf8(&buf[..len]), "{len}");
            for at in 0..len {
                for bad in [0x80u8, 0xc3, 0xff] {
                    buf[at] = bad;
                    assert_eq!(
                        is_utf8(&buf[..len]),
                        std::str::from_utf8(&buf[..len]).is_ok(),
                        "{len} {at} {bad}"
                    );
                    assert!(!is_short_ascii(&buf[..len]), "{len} {at} {bad}");
                }
                buf[at] = b'a';
            }
        }
        assert!(is_utf8("h\u{e9}llo w\u{f6}rld, \u{1f600}".as_bytes()));
    }

    #[test]
    fn groups_are_skipped_and_checked() {
        // field 1 start group, field 2 varint 5, field 1 end group, then field 3 varint 1.
        let buf = [0x0b, 0x10, 0x05, 0x0c, 0x18, 0x01];
        let mut it = Fields::new(&buf);
        assert_eq!(it.next().map(|f| f.number), Some(1));
        assert_eq!(it.next().map(|f| f.number), Some(3));
        assert!(it.next().is_none());
        let bad = [0x0b, 0x10, 0x05, 0x14];
        assert_eq!(
            next_field(&bad, &mut 0).unwrap_err().0,
            WireError::UnbalancedGroup
        );
    }
}
