//! Replay on open: scan every segment, truncate a torn tail, skip corrupt regions, read cursors.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::OpenError;
use crate::format::{
    self, CURSOR_LEN, Parsed, SEGMENT_HEADER_LEN, decode_segment_header, encode_segment_header,
    parse_segment_file_name, segment_file_name,
};
use crate::state::Segment;

/// What [`Spool::open`](crate::Spool::open) found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found.
    pub segments: u64,
    /// Valid records found in them.
    pub records: u64,
    /// The torn tail cut off the last segment: file, offset of the cut and bytes removed.
    pub truncated: Option<Truncation>,
    /// Corrupt regions skipped in the middle of the log, in log order.
    pub corrupt: Vec<CorruptRegion>,
    /// Per reader, in the order given to `open`.
    pub readers: Vec<ReaderRecovery>,
    /// The sequence number the next append gets.
    pub next_seq: u64,
}

impl RecoveryReport {
    /// Bytes cut from the tail (0 when the tail was clean).
    pub fn bytes_truncated(&self) -> u64 {
        self.truncated.as_ref().map_or(0, |t| t.bytes)
    }

    /// Records lost in corrupt regions (exact from the gaps in sequence numbers).
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt.iter().map(|c| c.records).sum()
    }
}

/// A torn tail: an incomplete or failing record at the end of the last segment, and what
/// followed it, cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file.
    pub path: PathBuf,
    /// The new end of the file.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
}

/// Bytes between two valid records (or a valid record and the end of a sealed segment) that
/// are not a valid record: skipped, and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRegion {
    /// The segment file.
    pub path: PathBuf,
    /// Where the region starts.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Sequence numbers missing between the valid records on either side: the records lost.
    pub records: u64,
}

/// Where a reader resumes after open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderRecovery {
    /// The reader's name.
    pub name: String,
    /// Its committed cursor: it is given records from here on.
    pub committed: u64,
    /// True when no (valid) cursor file existed: a new reader, started at the oldest record.
    pub new: bool,
    /// Records between its cursor and the head: what it will be given again or for the first time.
    pub pending: u64,
    /// Records below the oldest retained one that its cursor had not passed (deleted by
    /// `drop_oldest` or by hand): lost to it.
    pub lost: u64,
}

pub(crate) struct Recovered {
    pub(crate) segments: VecDeque<Segment>,
    pub(crate) report: RecoveryReport,
    /// Committed cursor per reader, in the order of the names given.
    pub(crate) cursors: Vec<u64>,
}

pub(crate) fn io_err(path: &Path, offset: Option<u64>) -> impl FnOnce(io::Error) -> OpenError {
    let path = path.to_path_buf();
    move |source| OpenError::Io {
        path,
        offset,
        source,
    }
}

pub(crate) fn readers_dir(dir: &Path) -> PathBuf {
    dir.join("readers")
}

pub(crate) fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    readers_dir(dir).join(format!("{name}.cursor"))
}

/// Scans `dir`, repairing what needs repair, and makes sure a last (active) segment exists.
pub(crate) fn recover(
    dir: &Path,
    readers: &[&str],
    sync: bool,
    segment_bytes: u64,
) -> Result<Recovered, OpenError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir, None))? {
        let entry = entry.map_err(io_err(dir, None))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();

    let mut report = RecoveryReport {
        segments: bases.len() as u64,
        ..RecoveryReport::default()
    };
    let mut segments = VecDeque::with_capacity(bases.len() + 1);
    // Next sequence number expected; records must not go below it.
    let mut expected = bases.first().copied().unwrap_or(0);
    // Corrupt regions whose record count waits for the next valid sequence number.
    let mut open_regions: Vec<usize> = Vec::new();
    let mut region_from = 0u64;
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        if base > expected {
            // A segment's name is a lower bound of its numbers: a corrupt end of the previous
            // segment lost the numbers up to it. (A jump with no corrupt region before it comes
            // from numbers burned by a failed write, and loses nothing.)
            close_regions(&mut report, &mut open_regions, region_from, base);
            expected = base;
        }
        let path = dir.join(segment_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, None))?;
        let file_len = file.metadata().map_err(io_err(&path, None))?.len();
        let mut seg = Segment::new(base, path.clone(), Arc::new(file), file_len);

        let mut header = [0u8; SEGMENT_HEADER_LEN];
        let header_ok = file_len >= SEGMENT_HEADER_LEN as u64
            && seg.file.read_exact_at(&mut header, 0).is_ok()
            && decode_segment_header(&header) == Some(base);
        if !header_ok {
            if file_len <= SEGMENT_HEADER_LEN as u64 {
                // Torn while being created: no record can be in it; write the header anew.
                rewrite_header(&seg.file, base, sync).map_err(io_err(&path, Some(0)))?;
                seg.len = SEGMENT_HEADER_LEN as u64;
                segments.push_back(seg);
                continue;
            }
            tracing::warn!(file = %path.display(), offset = 0, "spool: corrupt segment header, scanning its records");
            report.corrupt.push(CorruptRegion {
                path: path.clone(),
                offset: 0,
                len: SEGMENT_HEADER_LEN as u64,
                records: 0,
            });
            seg.skips.push((0, SEGMENT_HEADER_LEN as u64));
        }

        let mut off = SEGMENT_HEADER_LEN as u64;
        while off < file_len {
            match format::parse_at(&seg.file, off, file_len, expected)
                .map_err(io_err(&path, Some(off)))?
            {
                Parsed::Record(h, _) => {
                    if !open_regions.is_empty() {
                        close_regions(&mut report, &mut open_regions, region_from, h.seq);
                    }
                    seg.note_record(h.seq);
                    report.records += 1;
                    expected = h.seq + 1;
                    off += h.disk_len();
                }
                Parsed::Short | Parsed::Corrupt => {
                    // The unwritten, preallocated end of the active segment reads as zeros.
                    // (A sealed segment was cut to its last record: zeros there are damage.)
                    if last
                        && all_zero(&seg.file, off, file_len).map_err(io_err(&path, Some(off)))?
                    {
                        seg.len = off;
                        break;
                    }
                    let next = format::resync(&seg.file, off + 1, file_len, expected)
                        .map_err(io_err(&path, Some(off)))?;
                    match next {
                        Some(next) => {
                            tracing::warn!(file = %path.display(), offset = off, len = next - off, "spool: skipping a corrupt record");
                            seg.skips.push((off, next));
                            open_region(
                                &mut report,
                                &mut open_regions,
                                &mut region_from,
                                &path,
                                off,
                                next - off,
                                expected,
                            );
                            off = next;
                        }
                        None if last => {
                            tracing::warn!(file = %path.display(), offset = off, bytes = file_len - off, "spool: truncating a torn tail");
                            seg.file.set_len(off).map_err(io_err(&path, Some(off)))?;
                            if sync {
                                seg.file.sync_all().map_err(io_err(&path, Some(off)))?;
                            }
                            // Preallocated again, as the writer expects of the active segment.
                            let _ = seg.file.set_len(segment_bytes.max(off));
                            report.truncated = Some(Truncation {
                                path: path.clone(),
                                offset: off,
                                bytes: file_len - off,
                            });
                            seg.len = off;
                            break;
                        }
                        None => {
                            tracing::warn!(file = %path.display(), offset = off, len = file_len - off, "spool: skipping a corrupt end of a sealed segment");
                            seg.skips.push((off, file_len));
                            open_region(
                                &mut report,
                                &mut open_regions,
                                &mut region_from,
                                &path,
                                off,
                                file_len - off,
                                expected,
                            );
                            break;
                        }
                    }
                }
            }
        }
        segments.push_back(seg);
    }

    // Cursors. A reader without a valid cursor file starts at the oldest retained record.
    let rdir = readers_dir(dir);
    fs::create_dir_all(&rdir).map_err(io_err(&rdir, None))?;
    let oldest = segments.front().map_or(expected, |s| s.base);
    let mut cursors = Vec::with_capacity(readers.len());
    let mut max_cursor = 0;
    for &name in readers {
        let path = cursor_path(dir, name);
        let stored = match fs::read(&path) {
            Ok(bytes) => {
                let c = format::decode_cursor_file(&bytes);
                if c.is_none() {
                    tracing::warn!(file = %path.display(), len = bytes.len(), expected_len = 2 * CURSOR_LEN, "spool: corrupt cursor file, the reader restarts at the oldest record");
                }
                c
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&path, None)(e)),
        };
        let committed = stored.unwrap_or(oldest).max(oldest);
        let lost = stored.map_or(0, |c| oldest.saturating_sub(c));
        max_cursor = max_cursor.max(committed);
        cursors.push(committed);
        report.readers.push(ReaderRecovery {
            name: name.to_owned(),
            committed,
            new: stored.is_none(),
            pending: 0,
            lost,
        });
    }

    // A cursor can be ahead of the log when acknowledged records were lost by a machine crash
    // (`interval`, `never`); numbering resumes above it so no new record hides behind a cursor.
    let next_seq = expected.max(max_cursor);
    close_regions(&mut report, &mut open_regions, region_from, next_seq);
    for r in &mut report.readers {
        r.pending = next_seq.saturating_sub(r.committed);
    }

    if segments.is_empty() {
        segments.push_back(
            create_segment(dir, next_seq, sync, segment_bytes)
                .map_err(|(path, e)| io_err(&path, None)(e))?,
        );
    }
    report.next_seq = next_seq;
    Ok(Recovered {
        segments,
        report,
        cursors,
    })
}

fn open_region(
    report: &mut RecoveryReport,
    open: &mut Vec<usize>,
    region_from: &mut u64,
    path: &Path,
    offset: u64,
    len: u64,
    expected: u64,
) {
    if open.is_empty() {
        *region_from = expected;
    }
    open.push(report.corrupt.len());
    report.corrupt.push(CorruptRegion {
        path: path.to_path_buf(),
        offset,
        len,
        records: 0,
    });
}

/// The records lost in the open regions are the numbers from `from` up to `next_valid`; the
/// first region of a run takes the whole gap (regions in a row share one gap).
fn close_regions(report: &mut RecoveryReport, open: &mut Vec<usize>, from: u64, next_valid: u64) {
    if let Some(&first) = open.first() {
        report.corrupt[first].records = next_valid.saturating_sub(from);
    }
    open.clear();
}

fn rewrite_header(file: &File, base: u64, sync: bool) -> io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(&encode_segment_header(base), 0)?;
    if sync {
        file.sync_all()?;
    }
    Ok(())
}

/// Whether `from..to` of the file holds only zero bytes.
fn all_zero(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Creates segment `base` with its header, preallocated (sparse) to `size` bytes so that an
/// fdatasync after an append does not also have to write the file's new size; with `sync`,
/// fsyncs it and the directory.
pub(crate) fn create_segment(
    dir: &Path,
    base: u64,
    sync: bool,
    size: u64,
) -> Result<Segment, (PathBuf, io::Error)> {
    let path = dir.join(segment_file_name(base));
    let result = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all_at(&encode_segment_header(base), 0)?;
        file.set_len(size)?;
        if sync {
            file.sync_all()?;
            sync_dir(dir)?;
        }
        Ok(file)
    })();
    match result {
        Ok(file) => Ok(Segment::new(
            base,
            path,
            Arc::new(file),
            SEGMENT_HEADER_LEN as u64,
        )),
        Err(e) => {
            // Best effort: leave no half-made segment behind (open would repair it anyway).
            let _ = fs::remove_file(&path);
            Err((path, e))
        }
    }
}

/// fsyncs a directory, making the creation, rename or removal of its entries durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
