//! State shared by the handle, the writer thread, the syncer thread and the readers.
//!
//! Lock order: a reader's mutex, then `state`; `queue` is never held with another lock.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::{Notify, oneshot};

use crate::config::{Fsync, SpoolConfig};
use crate::error::AppendError;
use crate::reader::ReaderState;
use crate::recovery::RecoveryReport;
use crate::stats::FsyncStats;

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    /// A lower bound of the sequence numbers in it, and above every number in earlier
    /// segments: the first record's number when the writer created it.
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    /// Bytes of the file (header included) that readers may look at: the end of the last
    /// written record of the active segment, the file length of a sealed one.
    pub(crate) len: u64,
    pub(crate) records: u64,
    pub(crate) last_seq: Option<u64>,
    /// Corrupt regions `[start, end)` found at open; readers jump over them.
    pub(crate) skips: Vec<(u64, u64)>,
}

impl Segment {
    pub(crate) fn new(base: u64, path: PathBuf, file: Arc<File>, len: u64) -> Self {
        Self {
            base,
            path,
            file,
            len,
            records: 0,
            last_seq: None,
            skips: Vec::new(),
        }
    }

    pub(crate) fn note_record(&mut self, seq: u64) {
        self.records += 1;
        self.last_seq = Some(seq);
    }
}

/// A position in the log: the records below `seq_end`, which end at `byte_end` of segment
/// `seg_base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogPos {
    pub(crate) seq_end: u64,
    pub(crate) seg_base: u64,
    pub(crate) byte_end: u64,
}

/// How the background threads should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Run,
    /// Write what is queued, fsync, persist cursors.
    Clean,
    /// Stop at once, as a kill -9 would (tests only).
    Crash,
}

pub(crate) type Completion = oneshot::Sender<Result<u64, AppendError>>;

/// An append waiting for an fsync (`Fsync::Always`).
#[derive(Debug)]
pub(crate) struct AwaitingSync {
    pub(crate) seq: u64,
    pub(crate) done: Completion,
}

#[derive(Debug)]
pub(crate) struct State {
    /// Oldest first; the back one is the active segment.
    pub(crate) segments: VecDeque<Segment>,
    pub(crate) bytes_on_disk: u64,
    /// What the writer has written (into the page cache).
    pub(crate) written: LogPos,
    /// What readers may read: `written` under `interval`/`never`, the last fsynced position
    /// under `always` (a reader never sees a record its appender has not been told is durable).
    pub(crate) readable: LogPos,
    /// `seq_end` of the last fsync.
    pub(crate) synced_seq_end: u64,
    pub(crate) awaiting_sync: VecDeque<AwaitingSync>,
    pub(crate) fsync: FsyncStats,
    pub(crate) cursor_syncs: u64,
    pub(crate) appended: u64,
    pub(crate) rejected_full: u64,
    pub(crate) rejected_disk_full: u64,
    pub(crate) segments_dropped: u64,
    pub(crate) stop: Stop,
}

impl State {
    pub(crate) fn segment(&self, base: u64) -> Option<&Segment> {
        // Few segments (max_bytes / segment_bytes), searched by binary search on `base`.
        let i = self.segments.binary_search_by_key(&base, |s| s.base).ok()?;
        self.segments.get(i)
    }

    /// Deletes the oldest segments whose records every reader has committed (as persisted,
    /// so a restart cannot want them back). The active segment always stays.
    pub(crate) fn delete_passed(&mut self, shared_readers: &[ReaderSlot]) -> bool {
        let min = shared_readers
            .iter()
            .map(|r| r.persisted.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        let mut deleted = false;
        while self.segments.len() > 1 && self.segments[1].base <= min {
            if let Some(seg) = self.segments.pop_front() {
                self.remove(seg, "every reader passed it");
                deleted = true;
            }
        }
        deleted
    }

    pub(crate) fn remove(&mut self, seg: Segment, why: &str) {
        self.bytes_on_disk = self.bytes_on_disk.saturating_sub(seg.len);
        tracing::debug!(file = %seg.path.display(), why, "spool: deleting segment");
        if let Err(e) = fs::remove_file(&seg.path) {
            // The bytes are no longer counted: the file is out of the log either way, and the
            // next open would skip its numbers (they are below every cursor) or delete it.
            tracing::warn!(file = %seg.path.display(), error = %e, "spool: cannot delete segment");
        }
    }

    pub(crate) fn records_on_disk(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }
}

/// The append queue between callers and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub(crate) requests: Vec<Request>,
    pub(crate) closed: bool,
    pub(crate) crash: bool,
}

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) meta: u64,
    pub(crate) data: Bytes,
    pub(crate) done: Completion,
}

/// One named reader: its mutable state and the two numbers the syncer reads without its lock.
#[derive(Debug)]
pub(crate) struct ReaderSlot {
    pub(crate) name: String,
    pub(crate) state: Mutex<ReaderState>,
    /// Mirror of `state.committed`. Relaxed everywhere: it is a counter read on its own, no
    /// other memory is published through it.
    pub(crate) committed: AtomicU64,
    /// The committed cursor as last made durable in the cursor file (Relaxed: as above).
    pub(crate) persisted: AtomicU64,
    /// Updates of the cursor file; its parity picks the copy to overwrite (Relaxed: only the
    /// syncer, then `close` after the syncer stopped, write it).
    pub(crate) cursor_writes: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SpoolConfig,
    pub(crate) state: Mutex<State>,
    /// Wakes the syncer: new writes (`always`), stop. Paired with `state`.
    pub(crate) syncer_wake: Condvar,
    pub(crate) queue: Mutex<Queue>,
    /// Wakes the writer: new requests, close. Paired with `queue`.
    pub(crate) writer_wake: Condvar,
    /// Wakes async readers: `readable` moved, a segment was dropped, or the spool closed.
    pub(crate) readable_changed: Notify,
    pub(crate) readers: Vec<ReaderSlot>,
    /// Set once by close (Release), read by readers (Acquire) so that a reader seeing it also
    /// sees the final `readable` position published before it.
    pub(crate) closed: AtomicBool,
    /// Oldest sequence number still on disk after a `drop_oldest` deletion (Relaxed: readers
    /// re-check the segment list under the state lock before trusting any position).
    pub(crate) drop_floor: AtomicU64,
    pub(crate) corrupt_skipped_live: AtomicU64,
    pub(crate) recovery: RecoveryReport,
    /// Test hook: the next N flushes fail with ENOSPC after writing half their bytes.
    #[cfg(test)]
    pub(crate) inject_disk_full: std::sync::atomic::AtomicU32,
}

impl Shared {
    pub(crate) fn syncs(&self) -> bool {
        self.config.fsync != Fsync::Never
    }
}
