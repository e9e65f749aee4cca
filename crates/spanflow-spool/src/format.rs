//! The on-disk format: segment header, record header, cursor file; parsing and resync.
//!
//! A segment file `{base:020}.seg` is a 32-byte segment header followed by records:
//!
//! ```text
//! segment header (32 B): magic "SFSPOOL1" | version u32 | 0u32 | base seq u64 | 0u32 | crc32c(0..28) u32
//! record header  (32 B): magic "SFR\x01" | len u32 | seq u64 | meta u64 | crc32c(data) u32 | crc32c(0..28) u32
//! record data    (len B)
//! cursor copy    (16 B): magic "SFC\x01" | committed seq u64 | crc32c(0..12) u32   (two per file)
//! ```
//!
//! All integers are little-endian. The record header carries its own checksum, so a reader that
//! lost its place (a corrupt record in the middle of a segment) resyncs by looking for the magic
//! and accepting the first candidate whose header checksum, data checksum and sequence number
//! (greater than the last good one) all hold: a false match needs two CRC collisions at once.
//! The sequence number in each record also makes a gap exact: the records lost in a corrupt
//! region are the numbers missing between its neighbours.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};

/// Length of the segment header.
pub(crate) const SEGMENT_HEADER_LEN: usize = 32;
/// Length of a record header.
pub(crate) const RECORD_HEADER_LEN: usize = 32;
const SEGMENT_MAGIC: &[u8; 8] = b"SFSPOOL1";
const RECORD_MAGIC: &[u8; 4] = b"SFR\x01";
const FORMAT_VERSION: u32 = 1;
const CURSOR_MAGIC: &[u8; 4] = b"SFC\x01";
/// Length of one copy of a cursor (magic, committed seq, crc32c); a cursor file holds two.
pub(crate) const CURSOR_LEN: usize = 16;
/// How much the resync scan reads at a time.
const RESYNC_WINDOW: usize = 64 << 10;

/// The file name of the segment whose first sequence number is `base`.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The base sequence number of a segment file name, if it is one.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The base sequence number in a segment header, or `None` when it is not a valid header.
pub(crate) fn decode_segment_header(h: &[u8]) -> Option<u64> {
    if h.len() < SEGMENT_HEADER_LEN || &h[0..8] != SEGMENT_MAGIC {
        return None;
    }
    if crc32c::crc32c(&h[0..28]) != le_u32(&h[28..32]) || le_u32(&h[8..12]) != FORMAT_VERSION {
        return None;
    }
    Some(le_u64(&h[16..24]))
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) len: u32,
    pub(crate) seq: u64,
    pub(crate) meta: u64,
    pub(crate) data_crc: u32,
}

impl RecordHeader {
    /// Bytes the record occupies on disk, header included.
    pub(crate) fn disk_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// Appends a record (header and data) to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, seq: u64, meta: u64, data: &[u8]) {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(RECORD_MAGIC);
    h[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&meta.to_le_bytes());
    h[24..28].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
}

/// Decodes a record header; `None` when the magic or the header checksum is wrong.
pub(crate) fn decode_record_header(h: &[u8]) -> Option<RecordHeader> {
    if h.len() < RECORD_HEADER_LEN || &h[0..4] != RECORD_MAGIC {
        return None;
    }
    if crc32c::crc32c(&h[0..28]) != le_u32(&h[28..32]) {
        return None;
    }
    Some(RecordHeader {
        len: le_u32(&h[4..8]),
        seq: le_u64(&h[8..16]),
        meta: le_u64(&h[16..24]),
        data_crc: le_u32(&h[24..28]),
    })
}

/// What lies at an offset of a segment.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A whole record with matching checksums.
    Record(RecordHeader, Bytes),
    /// The end (`limit`) comes before a whole header, or before the data of a valid header.
    Short,
    /// Bad magic, header checksum or data checksum, or a sequence number not above the floor.
    Corrupt,
}

/// Parses the record at `offset`, reading no byte at or past `limit`; a record must have a
/// sequence number of at least `min_seq` to count as valid.
pub(crate) fn parse_at(file: &File, offset: u64, limit: u64, min_seq: u64) -> io::Result<Parsed> {
    if offset + RECORD_HEADER_LEN as u64 > limit {
        return Ok(Parsed::Short);
    }
    let mut h = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut h, offset)?;
    let Some(header) = decode_record_header(&h) else {
        return Ok(Parsed::Corrupt);
    };
    if header.seq < min_seq {
        return Ok(Parsed::Corrupt);
    }
    if offset + header.disk_len() > limit {
        return Ok(Parsed::Short);
    }
    let mut data = BytesMut::zeroed(header.len as usize);
    file.read_exact_at(&mut data, offset + RECORD_HEADER_LEN as u64)?;
    if crc32c::crc32c(&data) != header.data_crc {
        return Ok(Parsed::Corrupt);
    }
    Ok(Parsed::Record(header, data.freeze()))
}

/// Parses a record from the front of `buf`, which holds the file from some offset on.
/// Returns `Short` when `buf` ends before the record does (the caller reads more).
pub(crate) fn parse_in(buf: &Bytes, min_seq: u64) -> Parsed {
    if buf.len() < RECORD_HEADER_LEN {
        return Parsed::Short;
    }
    let Some(header) = decode_record_header(&buf[..RECORD_HEADER_LEN]) else {
        return Parsed::Corrupt;
    };
    if header.seq < min_seq {
        return Parsed::Corrupt;
    }
    let end = RECORD_HEADER_LEN + header.len as usize;
    if buf.len() < end {
        return Parsed::Short;
    }
    let data = buf.slice(RECORD_HEADER_LEN..end);
    if crc32c::crc32c(&data) != header.data_crc {
        return Parsed::Corrupt;
    }
    Parsed::Record(header, data)
}

/// Finds the first offset in `from..limit` where a valid record with `seq >= min_seq` starts.
pub(crate) fn resync(file: &File, from: u64, limit: u64, min_seq: u64) -> io::Result<Option<u64>> {
    let mut window = vec![0u8; RESYNC_WINDOW];
    let mut pos = from;
    while pos + RECORD_HEADER_LEN as u64 <= limit {
        let n = (limit - pos).min(RESYNC_WINDOW as u64) as usize;
        let buf = &mut window[..n];
        file.read_exact_at(buf, pos)?;
        let mut i = 0;
        while i + RECORD_MAGIC.len() <= n {
            if buf[i..].starts_with(RECORD_MAGIC)
                && let Parsed::Record(..) = parse_at(file, pos + i as u64, limit, min_seq)?
            {
                return Ok(Some(pos + i as u64));
            }
            i += 1;
        }
        if n < RESYNC_WINDOW {
            break;
        }
        // Overlap by the magic's length less one, so a magic across the boundary is found.
        pos += (n - (RECORD_MAGIC.len() - 1)) as u64;
    }
    Ok(None)
}

pub(crate) fn encode_cursor(committed: u64) -> [u8; CURSOR_LEN] {
    let mut c = [0u8; CURSOR_LEN];
    c[0..4].copy_from_slice(CURSOR_MAGIC);
    c[4..12].copy_from_slice(&committed.to_le_bytes());
    let crc = crc32c::crc32c(&c[0..12]);
    c[12..16].copy_from_slice(&crc.to_le_bytes());
    c
}

/// The larger valid copy in a cursor file.
pub(crate) fn decode_cursor_file(bytes: &[u8]) -> Option<u64> {
    bytes
        .chunks_exact(CURSOR_LEN)
        .filter_map(decode_cursor)
        .max()
}

pub(crate) fn decode_cursor(c: &[u8]) -> Option<u64> {
    if c.len() != CURSOR_LEN || &c[0..4] != CURSOR_MAGIC {
        return None;
    }
    if crc32c::crc32c(&c[0..12]) != le_u32(&c[12..16]) {
        return None;
    }
    Some(le_u64(&c[4..12]))
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_any_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, 42, b"hello spool");
        let bytes = Bytes::from(buf.clone());
        match parse_in(&bytes, 0) {
            Parsed::Record(h, data) => {
                assert_eq!((h.seq, h.meta, &data[..]), (7, 42, &b"hello spool"[..]));
            }
            other => panic!("{other:?}"),
        }
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let parsed = parse_in(&Bytes::from(bad), 0);
            // A flipped length bit may also make the record look longer than the buffer.
            assert!(
                matches!(parsed, Parsed::Corrupt | Parsed::Short),
                "bit {bit}: {parsed:?}"
            );
        }
    }

    #[test]
    fn segment_names_and_headers_round_trip() {
        assert_eq!(parse_segment_file_name(&segment_file_name(123)), Some(123));
        assert_eq!(parse_segment_file_name("123.seg"), None);
        assert_eq!(decode_segment_header(&encode_segment_header(99)), Some(99));
        assert_eq!(decode_cursor(&encode_cursor(5)), Some(5));
        let mut c = encode_cursor(5);
        c[5] ^= 1;
        assert_eq!(decode_cursor(&c), None);
        // One torn copy: the other one counts.
        let file = [c, encode_cursor(4)].concat();
        assert_eq!(decode_cursor_file(&file), Some(4));
        let file = [encode_cursor(9), encode_cursor(4)].concat();
        assert_eq!(decode_cursor_file(&file), Some(9));
    }
}
