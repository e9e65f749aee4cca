//! The handle: open (lock, replay, start the threads), append, readers, stats, close.

use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::{Notify, oneshot};

use crate::config::SpoolConfig;
use crate::error::{AppendError, CloseError, OpenError, UnknownReader};
use crate::reader::{Reader, ReaderState, reader_stats};
use crate::recovery::{self, RecoveryReport, io_err};
use crate::state::{LogPos, Queue, ReaderSlot, Request, Shared, State, Stop};
use crate::stats::{FsyncStats, Stats};
use crate::{syncer, writer};

/// A durable queue of records in one directory, read by a fixed set of named readers.
///
/// Appends go to one writer thread, which writes everything queued with one write(2); a
/// syncer thread fsyncs (group commit) and persists cursors. [`append`](Spool::append) returns
/// an [`Append`] to `.await` or [`wait`](Append::wait) on. Share the spool between tasks and
/// threads with an `Arc`.
///
/// ```
/// use spanflow_spool::{Fsync, Spool, SpoolConfig};
/// # let dir = tempfile::tempdir()?;
/// let config = SpoolConfig { fsync: Fsync::Always, ..SpoolConfig::new(dir.path()) };
/// let spool = Spool::open(config.clone(), &["otlp", "archive"])?;
/// let seq = spool.append(12, b"an encoded batch of 12 spans".to_vec()).wait()?;
/// assert_eq!(seq, 0);
/// let otlp = spool.reader("otlp")?;
/// let batch = otlp.try_read(100, 4 << 20)?;
/// assert_eq!((batch[0].meta, &batch[0].data[..]), (12, &b"an encoded batch of 12 spans"[..]));
/// otlp.ack(batch[0].seq)?;
/// spool.close()?;
///
/// // After a restart "otlp" has nothing left; "archive" gets the record.
/// let spool = Spool::open(config, &["otlp", "archive"])?;
/// assert!(spool.reader("otlp")?.try_read(100, usize::MAX)?.is_empty());
/// assert_eq!(spool.reader("archive")?.try_read(100, usize::MAX)?.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Spool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Holds the directory's lock until the spool is closed (or crashed, or dropped).
    lock: Mutex<Option<File>>,
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir` for the readers named in `readers`.
    ///
    /// Replays the segments: a torn tail of the last segment is truncated, corrupt records in
    /// the middle are skipped and logged with file and offset; [`recovery`](Spool::recovery)
    /// says what was found. Each reader resumes at its persisted committed cursor; a reader
    /// with no cursor file (new) starts at the oldest record on disk. Cursor files of names
    /// not in `readers` are left alone and hold nothing back (a spool opened with no readers
    /// keeps only its active segment).
    ///
    /// Reader names are 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`. Fails with
    /// [`OpenError::Locked`] when another `Spool` has the directory open.
    pub fn open(config: SpoolConfig, readers: &[&str]) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        for (i, name) in readers.iter().enumerate() {
            let valid = !name.is_empty()
                && name.len() <= 64
                && !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if !valid || readers[..i].contains(name) {
                return Err(OpenError::ReaderName((*name).to_owned()));
            }
        }
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir, None))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path, None))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(OpenError::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => return Err(io_err(&lock_path, None)(e)),
        }

        let sync = config.fsync != crate::Fsync::Never;
        let recovered = recovery::recover(&dir, readers, sync, config.segment_bytes.0)?;
        let report = recovered.report;
        // A new (or clamped) reader's cursor is written at once: from now on the segments it
        // has not read are kept for it, across restarts too.
        for r in report.readers.iter().filter(|r| r.new || r.lost > 0) {
            let path = recovery::cursor_path(&dir, &r.name);
            syncer::create_cursor(&path, r.committed, sync).map_err(io_err(&path, None))?;
        }
        let next_seq = report.next_seq;
        let active = recovered
            .segments
            .back()
            .map_or((next_seq, 0), |s| (s.base, s.len));
        let written = LogPos {
            seq_end: next_seq,
            seg_base: active.0,
            byte_end: active.1,
        };
        let bytes_on_disk = recovered.segments.iter().map(|s| s.len).sum();
        let slots = readers
            .iter()
            .zip(&recovered.cursors)
            .zip(&report.readers)
            .map(|((name, &committed), rec)| ReaderSlot {
                name: (*name).to_owned(),
                state: Mutex::new(ReaderState::new(committed, rec.pending, rec.lost)),
                committed: AtomicU64::new(committed),
                persisted: AtomicU64::new(committed),
                cursor_writes: AtomicU64::new(0),
            })
            .collect();
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                segments: recovered.segments,
                bytes_on_disk,
                written,
                readable: written,
                synced_seq_end: next_seq,
                awaiting_sync: Default::default(),
                fsync: FsyncStats::default(),
                cursor_syncs: 0,
                appended: 0,
                rejected_full: 0,
                rejected_disk_full: 0,
                segments_dropped: 0,
                stop: Stop::Run,
            }),
            syncer_wake: Condvar::new(),
            queue: Mutex::new(Queue::default()),
            writer_wake: Condvar::new(),
            readable_changed: Notify::new(),
            readers: slots,
            closed: AtomicBool::new(false),
            drop_floor: AtomicU64::new(0),
            corrupt_skipped_live: AtomicU64::new(0),
            recovery: report,
            #[cfg(test)]
            inject_disk_full: std::sync::atomic::AtomicU32::new(0),
        });

        let spawn = |name: &str, f: fn(Arc<Shared>)| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(shared))
                .map_err(io_err(&dir, None))
        };
        let threads = vec![
            spawn("spool-writer", writer::run)?,
            spawn("spool-syncer", syncer::run)?,
        ];
        Ok(Self {
            shared,
            threads: Mutex::new(threads),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Appends a record: `data` plus the caller's `meta` (e.g. a span count).
    ///
    /// Returns at once; the [`Append`] completes with the record's sequence number when the
    /// record is durable under the `fsync` mode (after the fsync that covers it under
    /// `always`, after write(2) otherwise), or with an error: [`AppendError::Full`] /
    /// [`AppendError::DiskFull`] for backpressure, `TooLarge`, `Closed`, `Io`. Appends are
    /// numbered in the order they reach the writer.
    pub fn append(&self, meta: u64, data: impl Into<Bytes>) -> Append {
        let data = data.into();
        let max = self.shared.config.max_record_bytes();
        if data.len() as u64 > max {
            return Append::ready(Err(AppendError::TooLarge {
                len: data.len() as u64,
                max,
            }));
        }
        let (done, rx) = oneshot::channel();
        {
            let mut q = self.shared.queue.lock();
            if q.closed {
                return Append::ready(Err(AppendError::Closed));
            }
            q.requests.push(Request { meta, data, done });
        }
        self.shared.writer_wake.notify_one();
        Append {
            inner: AppendInner::Waiting(rx),
        }
    }

    /// The handle of reader `name` (one of the names given to `open`). Clones share the
    /// cursor; any number of handles may exist.
    pub fn reader(&self, name: &str) -> Result<Reader, UnknownReader> {
        let index = self
            .shared
            .readers
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| UnknownReader(name.to_owned()))?;
        Ok(Reader {
            shared: Arc::clone(&self.shared),
            index,
        })
    }

    /// What `open` found and repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.shared.recovery
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let shared = &*self.shared;
        let st = shared.state.lock();
        Stats {
            segments: st.segments.len() as u64,
            bytes_on_disk: st.bytes_on_disk,
            records_on_disk: st.records_on_disk(),
            head: st.written.seq_end,
            appended: st.appended,
            rejected_full: st.rejected_full,
            rejected_disk_full: st.rejected_disk_full,
            segments_dropped: st.segments_dropped,
            corrupt_skipped_live: shared.corrupt_skipped_live.load(Ordering::Relaxed),
            fsync: st.fsync.clone(),
            cursor_syncs: st.cursor_syncs,
            recovery: shared.recovery.clone(),
            readers: (0..shared.readers.len())
                .map(|i| reader_stats(shared, i, &st))
                .collect(),
        }
    }

    /// Stops taking appends, writes and fsyncs everything queued (completing those appends),
    /// persists every cursor, and stops the threads. Readers then fail with `Closed`.
    /// Idempotent; dropping the spool does the same, ignoring errors.
    pub fn close(&self) -> Result<(), CloseError> {
        self.stop(Stop::Clean);
        let result = self.persist_final();
        self.release_lock();
        result
    }

    fn persist_final(&self) -> Result<(), CloseError> {
        // The syncer persisted the cursors on its way out; one it could not write is retried
        // here, and a failure reported.
        for slot in &self.shared.readers {
            let committed = slot.committed.load(Ordering::Relaxed);
            if slot.persisted.load(Ordering::Relaxed) != committed {
                let path = recovery::cursor_path(&self.shared.config.dir, &slot.name);
                let which = slot.cursor_writes.fetch_add(1, Ordering::Relaxed) % 2;
                syncer::update_cursor(&path, committed, which, self.shared.syncs())
                    .map_err(|source| CloseError { path, source })?;
                slot.persisted.store(committed, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Stops the threads as a kill -9 would: queued appends fail with `Closed`, nothing more
    /// is fsynced, cursors acknowledged since the last persist are not written, and the lock
    /// is released. What write(2) already handed to the kernel stays, as it would.
    #[doc(hidden)]
    pub fn simulate_crash(self) {
        self.stop(Stop::Crash);
        self.release_lock();
    }

    fn stop(&self, how: Stop) {
        let threads = std::mem::take(&mut *self.threads.lock());
        if threads.is_empty() {
            return;
        }
        {
            let mut q = self.shared.queue.lock();
            q.closed = true;
            q.crash = how == Stop::Crash;
        }
        self.shared.writer_wake.notify_all();
        let mut threads = threads.into_iter();
        // The writer first: under a clean stop it writes what is queued before the syncer's
        // last fsync.
        if let Some(writer) = threads.next() {
            let _ = writer.join();
        }
        {
            let mut st = self.shared.state.lock();
            st.stop = how;
        }
        self.shared.syncer_wake.notify_all();
        for t in threads {
            let _ = t.join();
        }
        // Release pairs with the Acquire load in `Reader::try_read`.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.readable_changed.notify_waiters();
    }

    /// Closing the file releases the lock; Reader handles may live on, but only fail.
    fn release_lock(&self) {
        drop(self.lock.lock().take());
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.lock.lock().is_some() {
            let _ = self.close();
        }
    }
}

/// A pending append: `.await` it, or [`wait`](Append::wait) for it on a thread that is not
/// running async code. Dropping it does not cancel the append.
#[derive(Debug)]
#[must_use = "an append is only known to be durable once its Append completes"]
pub struct Append {
    inner: AppendInner,
}

#[derive(Debug)]
enum AppendInner {
    Ready(Option<Result<u64, AppendError>>),
    Waiting(oneshot::Receiver<Result<u64, AppendError>>),
}

impl Append {
    fn ready(result: Result<u64, AppendError>) -> Self {
        Self {
            inner: AppendInner::Ready(Some(result)),
        }
    }

    /// Blocks the thread until the append completes. Panics when called from async code (use
    /// `.await` there).
    pub fn wait(self) -> Result<u64, AppendError> {
        match self.inner {
            AppendInner::Ready(r) => r.unwrap_or(Err(AppendError::Closed)),
            AppendInner::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(AppendError::Closed)),
        }
    }
}

impl Future for Append {
    type Output = Result<u64, AppendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().inner {
            AppendInner::Ready(r) => Poll::Ready(r.take().unwrap_or(Err(AppendError::Closed))),
            AppendInner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(AppendError::Closed))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Fsync, WhenFull};

    fn config(dir: &std::path::Path) -> SpoolConfig {
        SpoolConfig {
            fsync: Fsync::Always,
            when_full: WhenFull::Backpressure,
            fsync_interval: crate::HumanDuration(Duration::from_millis(20)),
            ..SpoolConfig::new(dir)
        }
    }

    /// ENOSPC in the middle of a write surfaces as `DiskFull` (backpressure), leaves no byte of
    /// the failed records behind, and the next append writes again.
    #[test]
    fn disk_full_is_backpressure_and_the_next_append_retries() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(config(dir.path()), &["r"]).unwrap();
        assert_eq!(spool.append(1, vec![1u8; 1000]).wait().unwrap(), 0);
        spool
            .shared
            .inject_disk_full
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let err = spool.append(2, vec![2u8; 1000]).wait().unwrap_err();
        assert!(err.is_backpressure(), "{err}");
        assert!(matches!(err, AppendError::DiskFull { .. }), "{err:?}");
        assert_eq!(spool.stats().rejected_disk_full, 1);
        // The retry succeeds; its number skips the burned one.
        let seq = spool.append(3, vec![3u8; 1000]).wait().unwrap();
        assert_eq!(seq, 2);
        let reader = spool.reader("r").unwrap();
        let got = reader.try_read(10, usize::MAX).unwrap();
        assert_eq!(
            got.iter().map(|r| (r.seq, r.meta)).collect::<Vec<_>>(),
            [(0, 1), (2, 3)]
        );
        spool.close().unwrap();
        let spool = Spool::open(config(dir.path()), &["r"]).unwrap();
        let rec = spool.recovery();
        assert_eq!((rec.records, rec.bytes_truncated()), (2, 0));
        assert!(rec.corrupt.is_empty(), "{rec:?}");
    }
}

#[cfg(test)]
mod traits {
    use super::*;

    #[test]
    fn handles_can_be_shared_across_threads_and_tasks() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Spool>();
        send_sync::<Reader>();
        send::<Append>();
        send::<crate::Record>();
    }
}
