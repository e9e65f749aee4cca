//! Connection limits: how many connections a server keeps, which one gives way when a new
//! one arrives at the limit, when an idle connection is closed, and how many file descriptors
//! the process may use for them.
//!
//! A connection is *busy* while a request on it is in progress (from its headers to the end of
//! its response) and *idle* otherwise, however many bytes it is sending: a client trickling
//! request headers (slowloris), a bare TCP connect, an HTTP/2 preface with no stream and a TLS
//! handshake that never ends are all idle. An idle connection is closed when its deadline
//! passes (`header_read_timeout` after it opened if it never began a request, else
//! `idle_timeout` after its last request ended), when a new connection needs its slot, or at
//! shutdown. Busy connections are never evicted; their requests are bounded by the body read
//! timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::Closed;

/// The open connections of one server, at most `max` of them.
#[derive(Debug)]
pub(crate) struct ConnectionTable {
    slots: Arc<Semaphore>,
    live: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// One open connection's state, shared by its task and the [`ConnectionTable`].
#[derive(Debug)]
pub(crate) struct Connection {
    id: u64,
    /// Requests in progress.
    active: AtomicUsize,
    /// Whether a request ever began on it.
    served: AtomicBool,
    /// When it last became idle (opened, or its last request ended).
    idle_since: Mutex<Instant>,
    /// Why it was asked to close (a `Closed` as u8 + 1; 0 while not asked).
    close: AtomicU8,
    /// Wakes the connection's task when `active` or `close` change.
    changed: Notify,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// A connection's place in its table: holds the slot and removes the entry when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    table: Arc<ConnectionTable>,
    connection: Arc<Connection>,
    _slot: OwnedSemaphorePermit,
}

/// A request in progress on a connection; the connection is idle again when the last one drops.
#[derive(Debug)]
pub(crate) struct InRequest(Arc<Connection>);

impl ConnectionTable {
    pub(crate) fn new(max: usize, header_read_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            header_read_timeout,
            idle_timeout,
        }
    }

    /// A slot for a new connection: at once if one is free; else the idlest connection is
    /// asked to close and the slot it frees is taken, waiting at most `wait`. `None` when no
    /// slot came free in time (every connection is busy).
    pub(crate) async fn admit(self: &Arc<Self>, wait: Duration) -> Option<Admitted> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.evict_idlest();
                tokio::time::timeout(wait, self.slots.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        // Relaxed: ids only need to be unique.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            id,
            active: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            close: AtomicU8::new(0),
            changed: Notify::new(),
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
        });
        self.live.lock().insert(id, connection.clone());
        Some(Admitted {
            table: self.clone(),
            connection,
            _slot: slot,
        })
    }

    /// Asks the idle connection whose deadline comes first to close; false when none is idle.
    fn evict_idlest(&self) -> bool {
        let live = self.live.lock();
        let idlest = live
            .values()
            .filter(|c| c.close_requested().is_none())
            .filter_map(|c| c.idle_deadline().map(|d| (d, c)))
            .min_by_key(|(d, _)| *d);
        match idlest {
            Some((_, c)) => {
                c.request_close(Closed::Evicted);
                true
            }
            None => false,
        }
    }

    /// Asks every connection to close (shutdown): idle ones close at once, busy ones after
    /// their requests.
    pub(crate) fn close_all(&self) {
        for c in self.live.lock().values() {
            c.request_close(Closed::Shutdown);
        }
    }

    /// Connections open now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.lock().len()
    }
}

impl Admitted {
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.live.lock().remove(&self.connection.id);
    }
}

impl Connection {
    /// Marks a request begun; the connection is busy until the returned guard drops.
    pub(crate) fn begin_request(self: &Arc<Self>) -> InRequest {
        // Relaxed: the count is only compared with zero by this connection's own task and by
        // eviction, which both tolerate a stale value (a request racing an eviction is the
        // client's to retry, exactly as with a connection closed by the network).
        self.active.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        self.changed.notify_one();
        InRequest(self.clone())
    }

    /// When this connection, idle, is to be closed; `None` while busy.
    pub(crate) fn idle_deadline(&self) -> Option<Instant> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let timeout = if self.served.load(Ordering::Relaxed) {
            self.idle_timeout
        } else {
            self.header_read_timeout
        };
        Some(*self.idle_since.lock() + timeout)
    }

    /// When it last became idle.
    pub(crate) fn idle_since(&self) -> Instant {
        *self.idle_since.lock()
    }

    /// Whether no request is in progress.
    pub(crate) fn is_idle(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 0
    }

    /// Whether a request ever began on it.
    pub(crate) fn has_served(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }

    /// Asks the connection's task to close it (the first reason given wins).
    pub(crate) fn request_close(&self, why: Closed) {
        // Relaxed: the task re-reads it after the notification, which orders the two.
        let _ = self
            .close
            .compare_exchange(0, why as u8 + 1, Ordering::Relaxed, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Why the connection was asked to close, if it was.
    pub(crate) fn close_requested(&self) -> Option<Closed> {
        match self.close.load(Ordering::Relaxed) {
            0 => None,
            n => Closed::ALL.get(usize::from(n - 1)).copied(),
        }
    }

    /// Resolves when the request count or a close request changes (one waiter: the task).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        let c = &self.0;
        // Set before the count drops; a reader racing it may pair zero with the previous
        // idle start, which only makes an idle connection close a little early.
        *c.idle_since.lock() = Instant::now();
        c.active.fetch_sub(1, Ordering::Relaxed);
        c.changed.notify_one();
    }
}

/// File descriptors kept for everything but the servers' connections: listeners, exporter
/// connections, files, the runtime's own.
pub(crate) const RESERVED_FDS: u64 = 128;

/// Fits the receivers' connection limits under the process's open-file limit, so that the
/// metrics server's connections (and the relay's own files and exporter connections) always
/// have descriptors left: raises the soft limit towards the hard one when needed (as the Go
/// runtime does at start) and, when that is not enough, lowers the receivers' limits
/// proportionally. Returns the limits to use, in the order given.
pub(crate) fn fit_to_open_file_limit(receivers: &[usize], metrics: usize) -> Vec<usize> {
    let wanted: u64 = receivers.iter().map(|&n| n as u64).sum::<u64>() + metrics as u64;
    let needed = wanted + RESERVED_FDS;
    let Some(limit) = raise_open_file_limit(needed) else {
        return receivers.to_vec();
    };
    if limit >= needed {
        return receivers.to_vec();
    }
    let room = limit.saturating_sub(RESERVED_FDS + metrics as u64);
    let total: u64 = receivers.iter().map(|&n| n as u64).sum();
    let fitted: Vec<usize> = receivers
        .iter()
        .map(|&n| ((n as u64 * room) / total.max(1)).max(1) as usize)
        .collect();
    tracing::warn!(
        open_file_limit = limit,
        wanted = ?receivers,
        using = ?fitted,
        "the open-file limit cannot hold receivers.max_connections per receiver plus the metrics server's connections and {RESERVED_FDS} for the relay itself; fewer connections are allowed (raise `ulimit -n` to keep them)"
    );
    fitted
}

/// The soft `RLIMIT_NOFILE` after raising it to `needed` (at most to the hard limit); `None`
/// when it cannot be read.
#[cfg(unix)]
fn raise_open_file_limit(needed: u64) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live local of that type.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let (soft, hard): (u64, u64) = (limit.rlim_cur, limit.rlim_max);
    if soft >= needed {
        return Some(soft);
    }
    let raised = libc::rlimit {
        rlim_cur: needed.min(hard) as libc::rlim_t,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads one `rlimit` through a pointer to a live local of that type.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Some(soft);
    }
    Some(needed.min(hard))
}

#[cfg(not(unix))]
fn raise_open_file_limit(_needed: u64) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_table_evicts_the_idle_connection_closest_to_its_deadline() {
        let table = Arc::new(ConnectionTable::new(
            2,
            Duration::from_secs(10),
            Duration::from_secs(60),
        ));
        let fresh = table.admit(Duration::ZERO).await.expect("slot");
        tokio::time::advance(Duration::from_secs(1)).await;
        let served = table.admit(Duration::ZERO).await.expect("slot");
        drop(served.connection().begin_request());
        // `fresh` must start a request by 10 s, `served` is idle until 61 s: `fresh` goes.
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.admit(Duration::from_secs(1)).await.is_some() }
        });
        tokio::task::yield_now().await;
        assert_eq!(fresh.connection().close_requested(), Some(Closed::Evicted));
        assert_eq!(served.connection().close_requested(), None);
        drop(fresh);
        assert!(waiting.await.expect("task"));
        assert_eq!(
            table.len(),
            1,
            "the admitted connection was dropped by the task"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_are_never_evicted() {
        let table = Arc::new(ConnectionTable::new(
            1,
            Duration::from_secs(10),
            Duration::from_secs(60),
        ));
        let busy = table.admit(Duration::ZERO).await.expect("slot");
        let request = busy.connection().begin_request();
        assert!(table.admit(Duration::from_millis(100)).await.is_none());
        assert_eq!(busy.connection().close_requested(), None);
        assert_eq!(busy.connection().idle_deadline(), None);
        drop(request);
        let deadline = busy.connection().idle_deadline().expect("idle");
        assert_eq!(deadline, Instant::now() + Duration::from_secs(60));
    }

    #[test]
    fn limits_that_fit_are_kept() {
        assert_eq!(fit_to_open_file_limit(&[4, 4], 2), vec![4, 4]);
    }
}
