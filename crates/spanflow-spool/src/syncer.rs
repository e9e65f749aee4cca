//! The syncer thread: group-commit fsyncs (`always`), the background fsync (`interval`), and
//! every `fsync_interval` the cursor files and the deletion of segments every reader passed.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use crate::config::Fsync;
use crate::error::AppendError;
use crate::format::{CURSOR_LEN, encode_cursor};
use crate::recovery::{cursor_path, sync_dir};
use crate::state::{AwaitingSync, Shared, State, Stop};

/// Longest wait for the appenders released by the previous fsync to come back (see `run`).
const MAX_LINGER: Duration = Duration::from_millis(1);

pub(crate) fn run(shared: Arc<Shared>) {
    let config = &shared.config;
    let interval = config.fsync_interval.0;
    let mut next_tick = Instant::now() + interval;
    // Group commit under `always`. Appenders released by an fsync come back within
    // microseconds with their next record, while the fsync takes milliseconds. Syncing at once
    // whatever is waiting would split a steady set of appenders into two alternating halves
    // (one half waits in the fsync while the other queues), halving the records per fsync. So
    // after an fsync that released `r` appenders with `w` still waiting, the next fsync waits
    // until `r + w` records are waiting, or a quarter of the usual fsync time (at most
    // `MAX_LINGER`) has passed.
    let mut expected = 0usize;
    let mut linger_until = Instant::now();
    let mut fsync_ewma = Duration::from_millis(1);
    let mut st = shared.state.lock();
    loop {
        if st.stop == Stop::Crash {
            // Their appends fail with `Closed` now, even while Reader handles keep the state.
            st.awaiting_sync.clear();
            return;
        }
        let clean = st.stop == Stop::Clean;
        let now = Instant::now();
        let unsynced = st.written.seq_end > st.synced_seq_end;
        let data_due = unsynced
            && match config.fsync {
                Fsync::Always => clean || st.awaiting_sync.len() >= expected || now >= linger_until,
                Fsync::Interval => clean || now >= next_tick,
                Fsync::Never => false,
            };
        let tick_due = clean || now >= next_tick;
        if !data_due && !tick_due {
            let mut deadline = next_tick;
            if config.fsync == Fsync::Always && unsynced {
                deadline = deadline.min(linger_until);
            }
            shared.syncer_wake.wait_until(&mut st, deadline);
            continue;
        }
        if data_due {
            let (took, released) = sync_data(&shared, &mut st);
            fsync_ewma = (fsync_ewma * 7 + took) / 8;
            expected = st.awaiting_sync.len() + released;
            linger_until = Instant::now() + (fsync_ewma / 4).min(MAX_LINGER);
        }
        if tick_due {
            next_tick = Instant::now() + interval;
            let syncs = MutexGuard::unlocked(&mut st, || persist_cursors(&shared));
            st.cursor_syncs += syncs;
            st.delete_passed(&shared.readers);
        }
        if clean && (config.fsync == Fsync::Never || st.written.seq_end <= st.synced_seq_end) {
            return;
        }
    }
}

/// fsyncs up to the written position and completes the appends it covers. Returns how long
/// the fsync took and how many appends it completed.
fn sync_data(shared: &Shared, st: &mut MutexGuard<'_, State>) -> (Duration, usize) {
    let target = st.written;
    let file = st.segment(target.seg_base).map(|s| Arc::clone(&s.file));
    // The segment can be gone only if `drop_oldest` deleted it after it was sealed, and
    // sealing fsynced it.
    let (result, took) = MutexGuard::unlocked(st, || {
        let t0 = Instant::now();
        let r = file.as_ref().map(|f| f.sync_data());
        (r, t0.elapsed())
    });
    let failed = match result {
        Some(Ok(())) => {
            st.fsync.record(took);
            None
        }
        Some(Err(e)) => {
            st.fsync.record(took);
            st.fsync.errors += 1;
            tracing::error!(error = %e, "spool: fsync failed; the appends it covered are failed");
            Some(e)
        }
        None => None,
    };
    st.synced_seq_end = st.synced_seq_end.max(target.seq_end);
    let mut released: Vec<AwaitingSync> = Vec::new();
    if shared.config.fsync == Fsync::Always {
        // After a failed fsync nobody knows what is on disk: the records stay readable (they
        // may be delivered, so an appender's retry can duplicate) but their appends fail.
        st.readable = target;
        while st
            .awaiting_sync
            .front()
            .is_some_and(|a| a.seq < target.seq_end)
        {
            if let Some(a) = st.awaiting_sync.pop_front() {
                released.push(a);
            }
        }
        if failed.is_none() {
            st.appended += released.len() as u64;
        }
    }
    let count = released.len();
    let path = st
        .segment(target.seg_base)
        .map(|s| s.path.clone())
        .unwrap_or_default();
    MutexGuard::unlocked(st, || {
        for a in released {
            let result = match &failed {
                None => Ok(a.seq),
                Some(e) => Err(AppendError::Io {
                    path: path.clone(),
                    offset: target.byte_end,
                    source: std::io::Error::new(e.kind(), e.to_string()),
                }),
            };
            let _ = a.done.send(result);
        }
        shared.readable_changed.notify_waiters();
    });
    (took, count)
}

/// Writes each changed committed cursor into its file, and only once that is fsynced counts
/// it as persisted. Returns the fsyncs made.
pub(crate) fn persist_cursors(shared: &Shared) -> u64 {
    let sync = shared.syncs();
    let mut syncs = 0;
    for slot in &shared.readers {
        let committed = slot.committed.load(Ordering::Relaxed);
        if committed == slot.persisted.load(Ordering::Relaxed) {
            continue;
        }
        let path = cursor_path(&shared.config.dir, &slot.name);
        let which = slot.cursor_writes.fetch_add(1, Ordering::Relaxed) % 2;
        match update_cursor(&path, committed, which, sync) {
            Ok(()) => {
                syncs += u64::from(sync);
                slot.persisted.store(committed, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "spool: cannot persist a cursor");
            }
        }
    }
    syncs
}

/// Overwrites slot `which` (0 or 1) of an existing cursor file in place.
///
/// A cursor file holds two copies, written in turn; the reader takes the larger valid one. An
/// update allocates nothing (so it works on a full disk, where freeing space depends on it),
/// needs no rename or directory fsync, and a torn write can only spoil the copy being written.
pub(crate) fn update_cursor(path: &Path, committed: u64, which: u64, sync: bool) -> io::Result<()> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        // Deleted by hand: make it again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return create_cursor(path, committed, sync);
        }
        Err(e) => return Err(e),
    };
    file.write_all_at(&encode_cursor(committed), which * CURSOR_LEN as u64)?;
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

/// Creates (or replaces) a cursor file with both copies set: write, fsync, rename, fsync the
/// directory.
pub(crate) fn create_cursor(path: &Path, committed: u64, sync: bool) -> io::Result<()> {
    let tmp = path.with_extension("cursor.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let one = encode_cursor(committed);
    f.write_all(&one)?;
    f.write_all(&one)?;
    if sync {
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    if sync && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}
