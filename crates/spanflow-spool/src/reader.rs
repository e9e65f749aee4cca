//! Named readers: in-order delivery from a cursor, out-of-order acknowledgement, and a
//! committed cursor at the contiguous acknowledged prefix.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use std::os::unix::fs::FileExt;

use crate::error::{AckError, ReadError};
use crate::format::{self, Parsed, SEGMENT_HEADER_LEN};
use crate::state::{Shared, State};
use crate::stats::ReaderStats;

/// How much a reader reads from a segment at a time (records are cut out of this buffer
/// without copying).
const READ_AHEAD: u64 = 1 << 20;

/// A record as stored: its sequence number, the caller's metadata and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number, unique and increasing across segments and restarts.
    pub seq: u64,
    /// The `u64` given to [`Spool::append`](crate::Spool::append) (e.g. a span count).
    pub meta: u64,
    /// The bytes given to `append`.
    pub data: Bytes,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    disk_len: u64,
    acked: bool,
}

#[derive(Debug)]
pub(crate) struct ReaderState {
    pub(crate) committed: u64,
    next_read: u64,
    /// Segment base and offset of the next record to look at; `None`: find it from `next_read`.
    pos: Option<(u64, u64)>,
    /// Delivered records from the committed cursor on, in sequence order.
    in_flight: VecDeque<InFlight>,
    /// The last chunk read: segment base, offset, bytes.
    ahead: Option<(u64, u64, Bytes)>,
    delivered: u64,
    acked: u64,
    dropped: u64,
    replayed_at_open: u64,
}

impl ReaderState {
    pub(crate) fn new(committed: u64, replayed_at_open: u64, lost_at_open: u64) -> Self {
        Self {
            committed,
            next_read: committed,
            pos: None,
            in_flight: VecDeque::new(),
            ahead: None,
            delivered: 0,
            acked: 0,
            dropped: lost_at_open,
            replayed_at_open,
        }
    }

    /// The committed cursor is the first delivered record not yet acknowledged, or, when all
    /// are, the next record to deliver (numbers in between do not exist: skipped or burned).
    fn advance_committed(&mut self) {
        while self.in_flight.front().is_some_and(|f| f.acked) {
            self.in_flight.pop_front();
        }
        let c = self.in_flight.front().map_or(self.next_read, |f| f.seq);
        self.committed = self.committed.max(c);
    }
}

/// What a reader may read of one segment, copied out of the state lock.
struct View {
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    offset: u64,
    /// Readable end in this segment.
    limit: u64,
    /// The next segment, when this one is sealed and readable to its end.
    next: Option<u64>,
    skips: Vec<(u64, u64)>,
}

/// A named reader (one per backend). Cheap to clone; clones share the cursor.
///
/// [`read`](Reader::read) hands out records in sequence order from where the last read ended;
/// any number may be in flight. [`ack`](Reader::ack) them in any order: the committed cursor
/// moves to the end of the contiguous acknowledged prefix, and is persisted every
/// `fsync_interval`. After a restart the reader is given everything from its persisted
/// committed cursor again: duplicates are possible, loss is not.
///
/// ```
/// use spanflow_spool::{Spool, SpoolConfig};
/// # let dir = tempfile::tempdir()?;
/// let spool = Spool::open(SpoolConfig::new(dir.path()), &["backend-a"])?;
/// for i in 0..3u64 {
///     spool.append(i, vec![b'x'; 10]).wait()?;
/// }
/// let reader = spool.reader("backend-a")?;
/// let records = reader.try_read(10, usize::MAX)?;
/// assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2]);
/// reader.ack(2)?; // out of order: the cursor waits for 0 and 1
/// assert_eq!(reader.committed(), 0);
/// reader.ack(0)?;
/// reader.ack(1)?;
/// assert_eq!(reader.committed(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Reader {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
}

impl Reader {
    /// The reader's name.
    pub fn name(&self) -> &str {
        &self.shared.readers[self.index].name
    }

    /// The committed cursor: every record below it is acknowledged.
    pub fn committed(&self) -> u64 {
        self.shared.readers[self.index].state.lock().committed
    }

    /// Up to `max_records` records (and about `max_bytes` of data, but at least one record),
    /// without waiting; empty when nothing new is readable. Reads segment files with pread(2)
    /// on the calling thread (page-cache hits mostly, for a reader that keeps up).
    pub fn try_read(&self, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, ReadError> {
        let shared = &*self.shared;
        // Acquire pairs with the Release store in `Spool::close`.
        if shared.closed.load(Ordering::Acquire) {
            return Err(ReadError::Closed);
        }
        let slot = &shared.readers[self.index];
        let mut r = slot.state.lock();
        self.apply_drop_floor(&mut r);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_records && (out.is_empty() || bytes < max_bytes) {
            let view = {
                let st = shared.state.lock();
                view_at(&mut r, &st)
            };
            let Some(view) = view else { break };
            if view.offset >= view.limit {
                match view.next {
                    Some(next) => {
                        r.pos = Some((next, SEGMENT_HEADER_LEN as u64));
                        continue;
                    }
                    None => break,
                }
            }
            self.read_segment(&mut r, &view, max_records, max_bytes, &mut out, &mut bytes)?;
        }
        r.advance_committed();
        slot.committed.store(r.committed, Ordering::Relaxed);
        Ok(out)
    }

    /// Like [`try_read`](Reader::try_read), but waits until at least one record is readable
    /// (`max_records` of 0 counts as 1). Fails with [`ReadError::Closed`] once the spool is
    /// closed. The reading itself is pread(2) on the calling thread, as in `try_read`.
    pub async fn read(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, ReadError> {
        let max_records = max_records.max(1);
        loop {
            let notified = self.shared.readable_changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so a publish between the look and the await wakes us.
            notified.as_mut().enable();
            let got = self.try_read(max_records, max_bytes)?;
            if !got.is_empty() {
                return Ok(got);
            }
            notified.await;
        }
    }

    /// Acknowledges record `seq` (in any order). Acknowledging a record below the committed
    /// cursor again is a no-op; one never delivered is an error.
    pub fn ack(&self, seq: u64) -> Result<(), AckError> {
        let slot = &self.shared.readers[self.index];
        let mut r = slot.state.lock();
        if seq < r.committed {
            return Ok(());
        }
        let Ok(i) = r.in_flight.binary_search_by_key(&seq, |f| f.seq) else {
            return Err(AckError::NotDelivered {
                reader: slot.name.clone(),
                seq,
            });
        };
        if !r.in_flight[i].acked {
            r.in_flight[i].acked = true;
            r.acked += 1;
        }
        r.advance_committed();
        slot.committed.store(r.committed, Ordering::Relaxed);
        Ok(())
    }

    /// This reader's counters and position.
    pub fn stats(&self) -> ReaderStats {
        let st = self.shared.state.lock();
        reader_stats(&self.shared, self.index, &st)
    }

    /// `drop_oldest` deleted segments below `drop_floor`: records there that this reader was
    /// never given are lost to it.
    fn apply_drop_floor(&self, r: &mut ReaderState) {
        let floor = self.shared.drop_floor.load(Ordering::Relaxed);
        if r.next_read < floor {
            r.dropped += floor - r.next_read;
            r.next_read = floor;
            r.pos = None;
            r.ahead = None;
            r.advance_committed();
        }
    }

    fn read_segment(
        &self,
        r: &mut ReaderState,
        view: &View,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
        bytes: &mut usize,
    ) -> Result<(), ReadError> {
        let io = |offset: u64| {
            let path = view.path.clone();
            move |source| ReadError::Io {
                path,
                offset,
                source,
            }
        };
        let mut off = view.offset;
        // Numbers increase within a segment; a record (or resync candidate) below this is not
        // one of ours.
        let mut floor = view.base;
        while off < view.limit {
            if let Some(&(_, end)) = view.skips.iter().find(|(s, e)| *s <= off && off < *e) {
                off = end;
                continue;
            }
            let chunk_end = view
                .skips
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| *s > off)
                .min()
                .unwrap_or(view.limit)
                .min(view.limit);
            let chunk = chunk(r, view, off, chunk_end).map_err(io(off))?;
            let mut i = 0usize;
            let mut corrupt = false;
            while i < chunk.len() {
                let parsed = match format::parse_in(&chunk.slice(i..), 0) {
                    Parsed::Short if i == 0 => {
                        // Larger than the read-ahead: read it alone.
                        format::parse_at(&view.file, off, chunk_end, 0).map_err(io(off))?
                    }
                    Parsed::Short => break,
                    p => p,
                };
                let (h, data) = match parsed {
                    Parsed::Record(h, data) if h.seq >= floor => (h, data),
                    _ => {
                        corrupt = true;
                        break;
                    }
                };
                floor = h.seq + 1;
                i += h.disk_len() as usize;
                let at = off + i as u64;
                if h.seq >= r.next_read {
                    *bytes += data.len();
                    out.push(Record {
                        seq: h.seq,
                        meta: h.meta,
                        data,
                    });
                    r.in_flight.push_back(InFlight {
                        seq: h.seq,
                        disk_len: h.disk_len(),
                        acked: false,
                    });
                    r.next_read = h.seq + 1;
                    r.delivered += 1;
                    if out.len() >= max_records || *bytes >= max_bytes {
                        r.pos = Some((view.base, at));
                        return Ok(());
                    }
                }
                if i >= chunk.len() {
                    // Also after a record read alone, which ends past the chunk.
                    break;
                }
            }
            off += i as u64;
            if corrupt {
                let next = format::resync(&view.file, off + 1, view.limit, floor)
                    .map_err(io(off))?
                    .unwrap_or(view.limit);
                tracing::warn!(file = %view.path.display(), offset = off, len = next - off, "spool: reader skipping a corrupt record");
                self.shared
                    .corrupt_skipped_live
                    .fetch_add(1, Ordering::Relaxed);
                off = next;
            }
            r.pos = Some((view.base, off));
        }
        r.pos = Some((view.base, off));
        Ok(())
    }
}

/// The bytes of the segment from `off` up to at most `end`, from the read-ahead when it has
/// them.
fn chunk(r: &mut ReaderState, view: &View, off: u64, end: u64) -> std::io::Result<Bytes> {
    if let Some((base, at, buf)) = &r.ahead
        && *base == view.base
        && *at <= off
        && off < *at + buf.len() as u64
    {
        let stop = (*at + buf.len() as u64).min(end);
        return Ok(buf.slice((off - at) as usize..(stop - at) as usize));
    }
    let want = (end - off).min(READ_AHEAD) as usize;
    // Reuse the last chunk's memory when every record cut from it has been dropped: no
    // zeroing and no fresh pages for a reader that keeps up.
    let mut buf = match r.ahead.take().map(|(_, _, b)| b.try_into_mut()) {
        Some(Ok(mut b)) if b.len() >= want / 2 => {
            if b.len() >= want {
                b.truncate(want);
            } else {
                b.resize(want, 0);
            }
            b
        }
        _ => BytesMut::zeroed(want),
    };
    view.file.read_exact_at(&mut buf, off)?;
    let buf = buf.freeze();
    r.ahead = Some((view.base, off, buf.clone()));
    Ok(buf)
}

/// Where the reader stands, as a view of one segment; `None` when nothing is readable.
fn view_at(r: &mut ReaderState, st: &State) -> Option<View> {
    let readable = st.readable;
    if r.next_read >= readable.seq_end {
        return None;
    }
    let (i, offset) = match r.pos.and_then(|(base, off)| {
        st.segments
            .binary_search_by_key(&base, |s| s.base)
            .ok()
            .map(|i| (i, off))
    }) {
        Some(found) => found,
        None => {
            let i = st.segments.partition_point(|s| s.base <= r.next_read);
            if i == 0 {
                // Below the oldest segment (deleted by drop_oldest or by hand).
                let oldest = st.segments.front()?.base;
                r.dropped += oldest - r.next_read;
                r.next_read = oldest;
                (0, SEGMENT_HEADER_LEN as u64)
            } else {
                (i - 1, SEGMENT_HEADER_LEN as u64)
            }
        }
    };
    let seg = &st.segments[i];
    if seg.base > readable.seg_base {
        return None;
    }
    let (limit, next) = if seg.base == readable.seg_base {
        (readable.byte_end.min(seg.len), None)
    } else {
        (seg.len, st.segments.get(i + 1).map(|s| s.base))
    };
    r.pos = Some((seg.base, offset));
    Some(View {
        base: seg.base,
        path: seg.path.clone(),
        file: Arc::clone(&seg.file),
        offset,
        limit,
        next,
        skips: seg.skips.clone(),
    })
}

pub(crate) fn reader_stats(shared: &Shared, index: usize, st: &State) -> ReaderStats {
    let slot = &shared.readers[index];
    // Lock order is reader then state; the caller holds state, so only try the reader lock
    // and fall back to the lock-free numbers.
    let head = st.readable.seq_end;
    let persisted = slot.persisted.load(Ordering::Relaxed);
    let committed = slot.committed.load(Ordering::Relaxed);
    let mut stats = ReaderStats {
        name: slot.name.clone(),
        committed,
        persisted,
        next_read: committed,
        in_flight: 0,
        pending_records: head.saturating_sub(committed),
        pending_bytes: 0,
        delivered: 0,
        acked: 0,
        dropped: 0,
        replayed_at_open: 0,
    };
    let unread_from = |base: u64, off: u64| -> u64 {
        st.segments
            .iter()
            .filter(|s| s.base >= base)
            .map(|s| {
                if s.base == base {
                    s.len.saturating_sub(off)
                } else {
                    s.len - SEGMENT_HEADER_LEN as u64
                }
            })
            .sum()
    };
    if let Some(r) = slot.state.try_lock() {
        stats.next_read = r.next_read;
        stats.in_flight = r.in_flight.iter().filter(|f| !f.acked).count() as u64;
        stats.delivered = r.delivered;
        stats.acked = r.acked;
        stats.dropped = r.dropped;
        stats.replayed_at_open = r.replayed_at_open;
        let unacked: u64 = r
            .in_flight
            .iter()
            .filter(|f| !f.acked)
            .map(|f| f.disk_len)
            .sum();
        let unread = match r.pos {
            Some((base, off)) => unread_from(base, off),
            None => {
                let i = st.segments.partition_point(|s| s.base <= r.next_read);
                let base = st.segments.get(i.saturating_sub(1)).map_or(0, |s| s.base);
                unread_from(base, SEGMENT_HEADER_LEN as u64)
            }
        };
        stats.pending_bytes = unacked + unread;
    } else {
        let i = st.segments.partition_point(|s| s.base <= committed);
        let base = st.segments.get(i.saturating_sub(1)).map_or(0, |s| s.base);
        stats.pending_bytes = unread_from(base, SEGMENT_HEADER_LEN as u64);
    }
    stats
}
