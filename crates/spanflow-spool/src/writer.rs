//! The writer thread: takes every queued append at once, numbers the records, writes them with
//! one pwrite(2), rotates segments and enforces the disk budget.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::{Fsync, WhenFull};
use crate::error::{AppendError, is_disk_full};
use crate::format::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::recovery::create_segment;
use crate::state::{AwaitingSync, Completion, LogPos, Request, Shared};

/// Largest write buffer before a flush mid-batch, so a burst of big records does not pile up
/// in memory twice (queued and encoded).
const MAX_BUFFER: usize = 8 << 20;

pub(crate) fn run(shared: Arc<Shared>) {
    let mut writer = Writer::new(Arc::clone(&shared));
    let mut batch = Vec::new();
    loop {
        {
            let mut q = shared.queue.lock();
            while q.requests.is_empty() && !q.closed && !q.crash {
                shared.writer_wake.wait(&mut q);
            }
            if q.crash {
                // A crash drops what is queued: its appenders see `Closed`.
                q.requests.clear();
                return;
            }
            if q.closed && q.requests.is_empty() {
                return;
            }
            std::mem::swap(&mut batch, &mut q.requests);
        }
        writer.write_batch(&mut batch);
    }
}

struct Writer {
    shared: Arc<Shared>,
    buf: Vec<u8>,
    /// Records encoded in `buf`: sequence number, completion.
    pending: Vec<(u64, Completion)>,
    next_seq: u64,
    // The active segment, owned by this thread (others only read its published `len`).
    active_base: u64,
    active_path: PathBuf,
    active_file: Arc<File>,
    active_len: u64,
    active_records: u64,
    /// A failed write could not be undone: start a new segment before the next record.
    force_rotate: bool,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Self {
        let (base, path, file, len, records, next_seq) = {
            let st = shared.state.lock();
            let seg = st.segments.back().expect("open creates an active segment");
            (
                seg.base,
                seg.path.clone(),
                Arc::clone(&seg.file),
                seg.len,
                seg.records,
                st.written.seq_end,
            )
        };
        Self {
            shared,
            buf: Vec::with_capacity(1 << 20),
            pending: Vec::new(),
            next_seq,
            active_base: base,
            active_path: path,
            active_file: file,
            active_len: len,
            active_records: records,
            force_rotate: false,
        }
    }

    fn write_batch(&mut self, batch: &mut Vec<Request>) {
        let segment_bytes = self.shared.config.segment_bytes.0;
        let max_bytes = self.shared.config.max_bytes.0;
        for req in batch.drain(..) {
            let need = (RECORD_HEADER_LEN + req.data.len()) as u64;
            let in_segment = self.active_records + self.pending.len() as u64;
            if self.force_rotate
                || (in_segment > 0
                    && self.active_len + self.buf.len() as u64 + need > segment_bytes)
            {
                self.flush();
                if let Err(e) = self.rotate() {
                    let _ = req.done.send(Err(e));
                    continue;
                }
            }
            if !self.has_room(need) {
                self.flush();
                if !self.make_room(need) {
                    self.shared.state.lock().rejected_full += 1;
                    let _ = req.done.send(Err(AppendError::Full { max_bytes }));
                    continue;
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            format::encode_record(&mut self.buf, seq, req.meta, &req.data);
            self.pending.push((seq, req.done));
            if self.buf.len() >= MAX_BUFFER {
                self.flush();
            }
        }
        self.flush();
    }

    fn has_room(&self, need: u64) -> bool {
        let st = self.shared.state.lock();
        st.bytes_on_disk + self.buf.len() as u64 + need <= self.shared.config.max_bytes.0
    }

    /// Frees space for `need` more bytes (nothing is buffered): deletes segments every reader
    /// has passed, then, under `drop_oldest`, the oldest sealed segments.
    fn make_room(&self, need: u64) -> bool {
        let shared = &self.shared;
        let max = shared.config.max_bytes.0;
        let mut st = shared.state.lock();
        st.delete_passed(&shared.readers);
        let mut dropped = false;
        while st.bytes_on_disk + need > max
            && shared.config.when_full == WhenFull::DropOldest
            && st.segments.len() > 1
        {
            let Some(seg) = st.segments.pop_front() else {
                break;
            };
            let floor = st.segments.front().map_or(self.next_seq, |s| s.base);
            tracing::warn!(file = %seg.path.display(), records = seg.records, "spool: disk budget spent, dropping the oldest segment");
            st.segments_dropped += 1;
            st.remove(seg, "drop_oldest");
            shared.drop_floor.fetch_max(floor, Ordering::Relaxed);
            dropped = true;
        }
        let fits = st.bytes_on_disk + need <= max;
        drop(st);
        if dropped {
            shared.readable_changed.notify_waiters();
        }
        fits
    }

    /// Writes `buf` at the end of the active segment and publishes it; completes the appends
    /// (or hands them to the syncer under `always`).
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let offset = self.active_len;
        let result = self.write_at(offset);
        let pending = std::mem::take(&mut self.pending);
        let n = self.buf.len() as u64;
        self.buf.clear();
        if let Err(e) = result {
            self.fail(pending, offset, e);
            return;
        }
        self.active_len += n;
        self.active_records += pending.len() as u64;
        let last_seq = pending.last().map(|p| p.0);
        let pos = LogPos {
            seq_end: self.next_seq,
            seg_base: self.active_base,
            byte_end: self.active_len,
        };
        let shared = &self.shared;
        let always = shared.config.fsync == Fsync::Always;
        {
            let mut st = shared.state.lock();
            if let Some(seg) = st.segments.back_mut() {
                seg.len = self.active_len;
                seg.records = self.active_records;
                seg.last_seq = last_seq.or(seg.last_seq);
            }
            st.bytes_on_disk += n;
            st.written = pos;
            if always {
                st.awaiting_sync.extend(
                    pending
                        .into_iter()
                        .map(|(seq, done)| AwaitingSync { seq, done }),
                );
                shared.syncer_wake.notify_one();
                return;
            }
            st.readable = pos;
            st.appended += pending.len() as u64;
        }
        shared.readable_changed.notify_waiters();
        for (seq, done) in pending {
            let _ = done.send(Ok(seq));
        }
    }

    fn write_at(&self, offset: u64) -> io::Result<()> {
        #[cfg(test)]
        {
            let inject = &self.shared.inject_disk_full;
            if inject
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                // Write part of the batch, as a real ENOSPC in the middle of a write would.
                self.active_file
                    .write_all_at(&self.buf[..self.buf.len() / 2], offset)?;
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
        }
        self.active_file.write_all_at(&self.buf, offset)
    }

    /// A write failed: undo it (nothing of it may be read or replayed) and fail its appends.
    /// Their sequence numbers are burned, never reused: if the undo failed, a record with such
    /// a number may survive in the file, and numbers must stay unique.
    fn fail(&mut self, pending: Vec<(u64, Completion)>, offset: u64, e: io::Error) {
        let disk_full = is_disk_full(&e);
        tracing::warn!(file = %self.active_path.display(), offset, error = %e, disk_full, "spool: write failed");
        if let Err(undo) = self.active_file.set_len(offset) {
            tracing::warn!(file = %self.active_path.display(), offset, error = %undo, "spool: cannot cut a failed write, sealing the segment");
            self.force_rotate = true;
        }
        {
            let mut st = self.shared.state.lock();
            if disk_full {
                st.rejected_disk_full += pending.len() as u64;
            }
        }
        for (_, done) in pending {
            let _ = done.send(Err(self.append_error(&e, offset, disk_full)));
        }
    }

    fn append_error(&self, e: &io::Error, offset: u64, disk_full: bool) -> AppendError {
        let source = match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        };
        let path = self.active_path.clone();
        if disk_full {
            AppendError::DiskFull {
                path,
                offset,
                source,
            }
        } else {
            AppendError::Io {
                path,
                offset,
                source,
            }
        }
    }

    /// Seals the active segment (fsync, so no later segment is durable before it) and starts
    /// a new one named after the next sequence number.
    fn rotate(&mut self) -> Result<(), AppendError> {
        let shared = &self.shared;
        let sync = shared.syncs();
        // Cut the preallocated rest: a sealed segment ends at its last record.
        if let Err(e) = self.active_file.set_len(self.active_len) {
            let disk_full = is_disk_full(&e);
            return Err(self.append_error(&e, self.active_len, disk_full));
        }
        if sync {
            let t0 = Instant::now();
            let r = self.active_file.sync_data();
            let mut st = shared.state.lock();
            st.fsync.record(t0.elapsed());
            if let Err(e) = r {
                st.fsync.errors += 1;
                drop(st);
                let disk_full = is_disk_full(&e);
                return Err(self.append_error(&e, self.active_len, disk_full));
            }
        }
        let size = shared.config.segment_bytes.0;
        let seg = create_segment(&shared.config.dir, self.next_seq, sync, size).map_err(
            |(path, e)| {
                let disk_full = is_disk_full(&e);
                if disk_full {
                    shared.state.lock().rejected_disk_full += 1;
                    AppendError::DiskFull {
                        path,
                        offset: 0,
                        source: e,
                    }
                } else {
                    AppendError::Io {
                        path,
                        offset: 0,
                        source: e,
                    }
                }
            },
        )?;
        self.active_base = seg.base;
        self.active_path = seg.path.clone();
        self.active_file = Arc::clone(&seg.file);
        self.active_len = SEGMENT_HEADER_LEN as u64;
        self.active_records = 0;
        self.force_rotate = false;
        // The sealed segment keeps its `len`: bytes of a failed, uncut write past it are never
        // read, and the next open reports them as a corrupt end.
        let mut st = shared.state.lock();
        st.bytes_on_disk += SEGMENT_HEADER_LEN as u64;
        st.segments.push_back(seg);
        Ok(())
    }
}
