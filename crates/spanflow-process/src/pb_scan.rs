//! A minimal protobuf field reader over borrowed bytes, for the few places
//! where spanflow-otlp offers no view (span events and links).
//!
//! It never panics: on bytes it cannot read it stops and records that it
//! stopped early ([`Fields::incomplete`]), so callers can fail closed.

/// How deep groups (wire types 3/4) may nest before the reader gives up.
const MAX_GROUP_DEPTH: u32 = 32;

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Val<'a> {
    /// Length-delimited: a string, bytes or an embedded message.
    Len(&'a [u8]),
    /// Any other wire type (varint, fixed, group); its value is not needed.
    Other,
}

/// Iterator over the (field number, value) pairs of one message body.
#[derive(Debug, Clone)]
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    incomplete: bool,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Fields {
            buf,
            pos: 0,
            incomplete: false,
        }
    }

    /// Whether iteration stopped on bytes that are not valid protobuf.
    pub(crate) fn incomplete(&self) -> bool {
        self.incomplete
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    /// Skips a value of `wire_type` (the tag already read); `None` if malformed.
    fn skip(&mut self, wire_type: u64, number: u64, depth: u32) -> Option<Val<'a>> {
        match wire_type {
            0 => self.varint().map(|_| Val::Other),
            1 => self.take(8).map(|_| Val::Other),
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                self.take(len).map(Val::Len)
            }
            3 => {
                if depth >= MAX_GROUP_DEPTH {
                    return None;
                }
                loop {
                    let tag = self.varint()?;
                    if tag & 7 == 4 {
                        return (tag >> 3 == number).then_some(Val::Other);
                    }
                    self.skip(tag & 7, tag >> 3, depth + 1)?;
                }
            }
            5 => self.take(4).map(|_| Val::Other),
            _ => None,
        }
    }

    fn read(&mut self) -> Option<(u32, Val<'a>)> {
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).ok().filter(|&n| n != 0)?;
        let value = self.skip(tag & 7, tag >> 3, 0)?;
        Some((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Val<'a>);

    fn next(&mut self) -> Option<(u32, Val<'a>)> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let field = self.read();
        if field.is_none() {
            self.incomplete = true;
            self.pos = self.buf.len();
        }
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type() {
        // 1: varint 150, 2: "hi", 3: fixed64, 4: group { 1: varint 1 }, 5: fixed32, 6: "x"
        let body = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x23, 0x08,
            0x01, 0x24, 0x2d, 0, 0, 0, 0, 0x32, 0x01, b'x',
        ];
        let mut fields = Fields::new(&body);
        let got: Vec<_> = fields.by_ref().collect();
        assert!(!fields.incomplete());
        assert_eq!(
            got,
            [
                (1, Val::Other),
                (2, Val::Len(b"hi")),
                (3, Val::Other),
                (4, Val::Other),
                (5, Val::Other),
                (6, Val::Len(b"x")),
            ]
        );
    }

    #[test]
    fn malformed_bytes_stop_and_flag() {
        let cases: &[&[u8]] = &[
            &[0x12, 0x05, b'a'],       // length past the end
            &[0x08],                   // varint missing
            &[0x08, 0xff, 0xff],       // varint unterminated
            &[0x00, 0x01],             // field number 0
            &[0x0f],                   // wire type 7
            &[0x23, 0x08, 0x01],       // group without end
            &[0x23, 0x2c],             // group ended by another number
            &[0x12, 0x01, b'a', 0x0e], // good field, then wire type 6
        ];
        for case in cases {
            let mut fields = Fields::new(case);
            let _ = fields.by_ref().count();
            assert!(fields.incomplete(), "{case:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut fields = Fields::new(&bytes);
            for (number, value) in fields.by_ref() {
                proptest::prop_assert!(number > 0);
                if let Val::Len(b) = value {
                    proptest::prop_assert!(b.len() <= bytes.len());
                    // Nested bodies are read the same way.
                    let _ = Fields::new(b).count();
                }
            }
        }
    }

    #[test]
    fn deep_groups_are_refused_not_overflowed() {
        let body = vec![0x0b; 10_000]; // field 1, start group, again and again
        let mut fields = Fields::new(&body);
        let _ = fields.by_ref().count();
        assert!(fields.incomplete());
    }
}
