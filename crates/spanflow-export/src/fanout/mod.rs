//! Fan-out to many backends: one queue, one dispatcher and a semaphore of in-flight exports per
//! backend, and the settlement of every batch once all its destinations are done with it.
//!
//! Here: the [`FanOut`] handle and the state its tasks share. `builder` checks the backends
//! and starts them; `dispatch` runs one backend's exports with retry; `queue` is a backend's
//! queue and flush watermark; `settle` settles a batch once every destination is done;
//! `log_limit` rate-limits the WARN lines.

mod builder;
mod dispatch;
mod log_limit;
mod queue;
mod settle;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use spanflow_spool::{Append, Reader, Spool};

pub use builder::FanOutBuilder;
pub use settle::{SettleHook, Settled};

use crate::config::duration_serde;
use crate::exporter::DynExporter;
use crate::stats::{BackendHealth, Counters, FanOutStats, Health, Role};
use crate::{ExportBatch, RetryConfig};
use queue::{Item, Parcel, QueueState};
use settle::{DropReason, Fate, SettledCounters, Ticket};

/// What a backend's queue does when a batch arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueuePolicy {
    /// Keep every batch: the queue is not limited by `queue`, so nothing is ever dropped here.
    /// Memory is bounded by whoever admits the batches: spanflow's `Pipeline` counts queued
    /// batches against its memory budget, so a slow or dead backend turns into backpressure at
    /// the pipeline's intake. The default.
    #[default]
    Block,
    /// With `queue` batches waiting, refuse the incoming batch (keeps the oldest data).
    DropNewest,
    /// With `queue` batches waiting, evict the oldest waiting batch (keeps the freshest data).
    DropOldest,
}

/// Queueing, concurrency, retry and timeout of one backend.
///
/// ```
/// use spanflow_export::{BackendConfig, QueuePolicy};
/// let c: BackendConfig = serde_json::from_str(
///     r#"{"queue": 512, "concurrency": 8, "policy": "drop_oldest", "timeout": "3s",
///         "retry": {"initial_backoff": "100ms", "max_elapsed": "30s"}}"#).unwrap();
/// assert_eq!((c.queue, c.concurrency, c.policy), (512, 8, QueuePolicy::DropOldest));
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Batches that may wait for this backend under a drop policy (its own queue, not shared);
    /// ignored under [`QueuePolicy::Block`].
    pub queue: usize,
    /// Exports in flight at once (retries included).
    pub concurrency: usize,
    /// What a full queue does.
    pub policy: QueuePolicy,
    /// Retry of transient failures.
    pub retry: RetryConfig,
    /// Timeout of each attempt, enforced here around the exporter's call (the exporter's own
    /// request timeout also applies; the smaller one wins). A timed-out attempt is retryable.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            queue: 256,
            concurrency: 4,
            policy: QueuePolicy::Block,
            retry: RetryConfig::default(),
            timeout: crate::config::DEFAULT_TIMEOUT,
        }
    }
}

/// Why [`FanOut::send`] or [`FanOut::append`] refused a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The fan-out is shutting down or shut down; the batch is handed back, uncounted.
    #[error("fan-out is shut down")]
    Closed(ExportBatch),
    /// The fan-out's primaries read from a spool ([`FanOutBuilder::spool`]): batches enter
    /// through [`FanOut::append`], not `send`; or, for `append`, the fan-out has no spool.
    #[error("wrong entry for this fan-out's queue type")]
    WrongQueue(ExportBatch),
}

/// Why [`FanOut::flush`] returned before everything was finished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FanOutFlushError {
    /// The deadline passed with batches still queued or in flight.
    #[error("flush deadline passed with {pending} batches unfinished")]
    Timeout {
        /// Batches sent before the flush and not yet finished.
        pending: u64,
    },
}

struct Backend {
    index: usize,
    name: String,
    role: Role,
    exporter: Arc<dyn DynExporter>,
    config: BackendConfig,
    state: Mutex<QueueState>,
    available: Notify,
    semaphore: Arc<Semaphore>,
    counters: Counters,
    /// Rate limits of this backend's WARN lines.
    logs: log_limit::BackendLogs,
    fallback: Option<usize>,
    /// Durable mode, primaries only: where this backend reads its batches, and its committed
    /// cursor when the spool was opened (records below it were settled here in an earlier run).
    durable: Option<(Reader, u64)>,
}

/// Durable mode: the spool every primary reads from, and the settlement of its records.
struct Durable {
    spool: Arc<Spool>,
    /// Records being exported, by sequence number, with their settlement: created by the first
    /// reader to take a record, removed when its last destination settles it.
    tickets: Mutex<HashMap<u64, Arc<Ticket>>>,
    /// The spool's head when it was opened: records below it were appended by an earlier run.
    first_new_seq: u64,
    /// Spans of earlier runs' records picked up by this run's readers.
    recovered: AtomicU64,
}

struct Shared {
    backends: Vec<Backend>,
    durable: Option<Durable>,
    /// Primary backends: the destinations of every batch.
    primaries: usize,
    health: watch::Sender<Vec<BackendHealth>>,
    accepting: AtomicBool,
    cancel: CancellationToken,
    tracker: TaskTracker,
    shutdown: tokio::sync::Mutex<bool>,
    settled: SettledCounters,
}

/// Sends each batch to every primary backend concurrently, each through its own queue,
/// semaphore-bounded in-flight exports, retry and timeout; a batch that finally fails on a
/// primary goes to that primary's fallback.
///
/// Every batch is *settled* once all its destinations are done with it: exported, rejected,
/// failed, dropped or unconfirmed, counted in [`FanOut::settled`] (see [`Settled`]). Each
/// backend keeps its own counters too ([`FanOut::stats`]).
///
/// Delivery is at least once per backend: a batch is exported again only after an attempt
/// that failed from the client's view (timeout, connection reset, retryable status), so
/// duplicates happen exactly when the server had processed such an attempt, e.g. it answered
/// after the attempt timeout, or the connection broke after the request was received. Such a
/// batch counts as unconfirmed if no later attempt succeeds.
///
/// ```
/// use std::time::{Duration, Instant};
/// use spanflow_export::{BackendConfig, ExportBatch, FanOut, StdoutExporter};
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let fan = FanOut::builder()
///     .backend("stdout", StdoutExporter::new(), BackendConfig::default())
///     .build(rt.handle())
///     .unwrap();
/// let empty = prost::Message::encode_to_vec(
///     &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default());
/// fan.send(ExportBatch::new(empty.into(), 0)).unwrap();
/// let stats = rt.block_on(fan.shutdown(Instant::now() + Duration::from_secs(5)));
/// assert_eq!(stats.backend("stdout").unwrap().exported_batches, 1);
/// assert_eq!(fan.settled().batches, 1);
/// ```
pub struct FanOut {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field(
                "backends",
                &self
                    .shared
                    .backends
                    .iter()
                    .map(|b| &b.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl FanOut {
    /// A builder with no backend.
    pub fn builder() -> FanOutBuilder {
        FanOutBuilder::default()
    }

    /// Queue `batch` on every primary backend; never waits for any of them. Under a drop
    /// policy a full queue drops a batch and counts it. Callable from any thread, inside or
    /// outside the runtime. Once this returns `Ok`, the batch will be settled exactly once.
    pub fn send(&self, batch: ExportBatch) -> Result<(), SendError> {
        self.send_inner(batch, None)
    }

    /// [`FanOut::send`], and `hook` is called once with the batch's [`Settled`] when its last
    /// destination has a fate (on whichever thread settles it: keep it short). Not called when
    /// the batch is refused.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::{Duration, Instant};
    /// use spanflow_export::{BackendConfig, ExportBatch, FanOut, StdoutExporter};
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let fan = FanOut::builder()
    ///     .backend("stdout", StdoutExporter::new(), BackendConfig::default())
    ///     .build(rt.handle())
    ///     .unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// let empty = prost::Message::encode_to_vec(
    ///     &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default());
    /// fan.send_with(ExportBatch::new(empty.into(), 0), Box::new(move |s| tx.send(*s).unwrap()))
    ///     .unwrap();
    /// let settled = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(settled.batches, 1);
    /// rt.block_on(fan.shutdown(Instant::now() + Duration::from_secs(5)));
    /// ```
    pub fn send_with(&self, batch: ExportBatch, hook: SettleHook) -> Result<(), SendError> {
        self.send_inner(batch, Some(hook))
    }

    fn send_inner(&self, batch: ExportBatch, hook: Option<SettleHook>) -> Result<(), SendError> {
        // Relaxed: only a hint; a send racing with shutdown is caught by the queue's own
        // `closed` flag under its lock, and then settled as dropped.
        if !self.shared.accepting.load(Ordering::Relaxed) {
            return Err(SendError::Closed(batch));
        }
        if self.shared.durable.is_some() {
            return Err(SendError::WrongQueue(batch));
        }
        let ticket = Arc::new(Ticket::new(batch.spans as u64, self.shared.primaries, hook));
        for b in self
            .shared
            .backends
            .iter()
            .filter(|b| b.role == Role::Primary)
        {
            // A `Bytes` clone: a reference-count increment, never a copy of the body.
            let parcel = Parcel {
                batch: batch.clone(),
                ticket: Arc::clone(&ticket),
                in_doubt: false,
                ack: None,
            };
            if let Err(parcel) = self.shared.enqueue(b.index, parcel) {
                self.shared.discard(b, parcel, DropReason::ShutdownDeadline);
            }
        }
        Ok(())
    }

    /// Durable mode: writes `batch` once to the spool; the returned [`Append`] completes when
    /// it is durable under the spool's fsync policy (answer a client only then), or with the
    /// spool's error ([`spanflow_spool::AppendError::is_backpressure`] for a full disk budget).
    /// Every primary then reads, exports and settles it; the span count travels as the
    /// record's metadata.
    pub fn append(&self, batch: ExportBatch) -> Result<Append, SendError> {
        // Relaxed: see `send`.
        if !self.shared.accepting.load(Ordering::Relaxed) {
            return Err(SendError::Closed(batch));
        }
        match &self.shared.durable {
            Some(d) => Ok(d.spool.append(batch.spans as u64, batch.body)),
            None => Err(SendError::WrongQueue(batch)),
        }
    }

    /// The spool of a durable fan-out.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.shared.durable.as_ref().map(|d| &d.spool)
    }

    /// Durable mode: spans of records appended by an earlier run that this run's readers have
    /// picked up (they are settled like any other).
    pub fn recovered_spans(&self) -> u64 {
        self.shared
            .durable
            .as_ref()
            // Relaxed: a statistic.
            .map_or(0, |d| d.recovered.load(Ordering::Relaxed))
    }

    /// Wait until every batch sent before this call has finished on every backend (exported,
    /// or finally failed or dropped and counted), including the fallback attempts of
    /// those that failed on a primary.
    pub async fn flush(&self, deadline: Instant) -> Result<(), FanOutFlushError> {
        self.shared
            .wait_finished(deadline, false)
            .await
            .map_err(|pending| FanOutFlushError::Timeout { pending })
    }

    /// Stop accepting batches, let queued and in-flight ones finish until `deadline`, then
    /// cancel whatever is left: batches never sent are settled as dropped, batches in flight
    /// (or sent before and not confirmed) as unconfirmed; in durable mode they are not settled
    /// at all but stay in the spool for the next start. Shuts the exporters down and returns
    /// the final stats (it does not close the spool). Later calls just return the stats.
    pub async fn shutdown(&self, deadline: Instant) -> FanOutStats {
        let shared = &self.shared;
        let mut done = shared.shutdown.lock().await;
        if !*done {
            *done = true;
            // Relaxed: see `send`; the queues' `closed` flags are the real barrier.
            shared.accepting.store(false, Ordering::Relaxed);
            if shared.wait_finished(deadline, true).await.is_err() {
                tracing::warn!(
                    pending = shared.pending(),
                    "fan-out shutdown deadline reached; cancelling pending exports"
                );
            }
            shared.cancel.cancel();
            shared.tracker.close();
            shared.tracker.wait().await;
            let grace = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(200));
            for b in &shared.backends {
                match tokio::time::timeout(grace, b.exporter.shutdown_boxed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(backend = %b.name, error = %e, "exporter shutdown failed");
                    }
                    Err(_) => tracing::warn!(backend = %b.name, "exporter shutdown timed out"),
                }
                shared.set_health(b.index, Health::Stopped);
            }
        }
        self.stats()
    }

    /// A snapshot of every backend's counters.
    pub fn stats(&self) -> FanOutStats {
        FanOutStats {
            backends: self
                .shared
                .backends
                .iter()
                .map(|b| b.counters.snapshot(&b.name, &b.role))
                .collect(),
        }
    }

    /// What became of the batches settled so far (see [`Settled`]). Cheap: a few relaxed loads.
    pub fn settled(&self) -> Settled {
        self.shared.settled.snapshot()
    }

    /// Batches waiting or in flight on every backend (0 when all are settled).
    pub fn pending_batches(&self) -> u64 {
        self.shared.pending()
    }

    /// The health of every backend, updated on each change.
    pub fn health(&self) -> watch::Receiver<Vec<BackendHealth>> {
        self.shared.health.subscribe()
    }
}

impl Drop for FanOut {
    /// Dropping without [`FanOut::shutdown`] cancels the dispatchers; whatever they still held
    /// is settled as dropped or unconfirmed, and logged.
    fn drop(&mut self) {
        if !self.shared.cancel.is_cancelled() {
            let pending = self.shared.pending();
            if pending > 0 {
                tracing::warn!(pending, "fan-out dropped without shutdown; cancelling");
            }
            self.shared.cancel.cancel();
        }
    }
}

impl Shared {
    /// Queue `parcel` on backend `index`; `Err` hands it back when the queue is closed.
    fn enqueue(&self, index: usize, parcel: Parcel) -> Result<(), Parcel> {
        let b = &self.backends[index];
        let spans = parcel.batch.spans as u64;
        let victim = {
            let mut st = b.state.lock();
            if st.closed {
                return Err(parcel);
            }
            Counters::add(&b.counters.received_batches, 1);
            Counters::add(&b.counters.received_spans, spans);
            let full = st.items.len() >= b.config.queue;
            match b.config.policy {
                QueuePolicy::DropNewest if full => Some(parcel),
                QueuePolicy::DropOldest if full => {
                    let old = st.evict_front();
                    st.push(parcel);
                    old.map(Parcel::from)
                }
                _ => {
                    st.push(parcel);
                    Counters::add(&b.counters.queued, 1);
                    None
                }
            }
        };
        match victim {
            // The incoming batch itself was refused: nothing new to wake the dispatcher for.
            Some(victim) if b.config.policy == QueuePolicy::DropNewest => {
                self.overflowed(b, victim);
            }
            Some(victim) => {
                b.available.notify_one();
                self.overflowed(b, victim);
            }
            None => b.available.notify_one(),
        }
        Ok(())
    }

    /// A drop policy pushed `parcel` out of `b`'s queue: its fallback gets it, or it is dropped.
    fn overflowed(&self, b: &Backend, parcel: Parcel) {
        self.set_health(b.index, Health::Degraded);
        Counters::add(&b.counters.dropped_batches, 1);
        Counters::add(&b.counters.dropped_spans, parcel.batch.spans as u64);
        tracing::debug!(backend = %b.name, spans = parcel.batch.spans, "queue full, batch dropped");
        self.to_fallback_or(b, parcel, |_| Fate::Dropped(DropReason::QueueFull));
    }

    /// Hands `parcel` to `b`'s fallback if it has one (and it is open); otherwise settles this
    /// destination with `fate` (turned into unconfirmed if an attempt may have delivered it).
    fn to_fallback_or(&self, b: &Backend, parcel: Parcel, fate: impl FnOnce(&Parcel) -> Fate) {
        let parcel = match b.fallback {
            Some(f) => match self.enqueue(f, parcel) {
                Ok(()) => {
                    Counters::add(&b.counters.to_fallback_batches, 1);
                    return;
                }
                Err(parcel) => parcel,
            },
            None => parcel,
        };
        let fate = fate(&parcel);
        self.settle(parcel, fate);
    }

    /// Settles one destination of `parcel`'s batch without exporting it.
    fn discard(&self, b: &Backend, parcel: Parcel, reason: DropReason) {
        // A durable record interrupted by shutdown is not dropped: it waits in the spool.
        if parcel.ack.is_none() || reason != DropReason::ShutdownDeadline {
            Counters::add(&b.counters.dropped_batches, 1);
            Counters::add(&b.counters.dropped_spans, parcel.batch.spans as u64);
        }
        self.settle(parcel, Fate::Dropped(reason));
    }

    /// Records `fate` for one destination of `parcel`'s batch (in durable mode, acknowledging
    /// the record to its primary's reader).
    fn settle(&self, parcel: Parcel, fate: Fate) {
        if let Some((primary, seq)) = parcel.ack {
            if fate == Fate::Dropped(DropReason::ShutdownDeadline) {
                // Durable: what shutdown interrupts is not lost, it waits in the spool for the
                // next start (unacknowledged, so it is read again). Not settled here.
                return;
            }
            if let Some((reader, _)) = &self.backends[primary].durable
                && let Err(e) = reader.ack(seq)
            {
                tracing::error!(error = %e, "cannot acknowledge a spool record");
            }
        }
        let fate = match fate {
            Fate::Failed | Fate::Dropped(_) if parcel.in_doubt => Fate::Unconfirmed,
            fate => fate,
        };
        let last = parcel.ticket.settle(fate, &self.settled);
        if last && let (Some(durable), Some((_, seq))) = (&self.durable, parcel.ack) {
            durable.tickets.lock().remove(&seq);
        }
    }

    /// Durable mode: the settlement of record `seq` (of `spans` spans), shared by the
    /// primaries that still have to export it.
    fn ticket_for(&self, seq: u64, spans: u64) -> Arc<Ticket> {
        let Some(durable) = &self.durable else {
            return Arc::new(Ticket::new(spans, self.primaries, None));
        };
        let mut tickets = durable.tickets.lock();
        Arc::clone(tickets.entry(seq).or_insert_with(|| {
            let destinations = if seq >= durable.first_new_seq {
                self.primaries
            } else {
                // Appended by an earlier run: only the primaries whose cursor was not past it
                // when the spool opened will export it now.
                // Relaxed: a statistic.
                durable.recovered.fetch_add(spans, Ordering::Relaxed);
                self.backends
                    .iter()
                    .filter_map(|b| b.durable.as_ref())
                    .filter(|(_, initial)| *initial <= seq)
                    .count()
            };
            Arc::new(Ticket::new(spans, destinations, None))
        }))
    }

    /// Mark `seq` of backend `index` finished and wake the flushes it completes.
    fn finish(&self, index: usize, seq: u64) {
        self.backends[index].state.lock().finish(seq);
    }

    /// Sets a backend's health (a stopped backend stays stopped) and returns what it was, if
    /// this call changed it. The change is read and made under the channel's lock, so of
    /// several callers moving a backend to the same health exactly one sees the change.
    fn set_health(&self, index: usize, health: Health) -> Option<Health> {
        let mut before = None;
        self.health.send_if_modified(|all| {
            let entry = &mut all[index].health;
            let changed = *entry != health && *entry != Health::Stopped;
            if changed {
                before = Some(*entry);
                *entry = health;
            }
            changed
        });
        before
    }

    /// Wait for every batch queued so far: primaries first, then fallbacks (which receive
    /// their batches before the primary marks them finished). With `close`, each group's
    /// queues are closed first, so "so far" is "ever". `Err` carries the unfinished count.
    async fn wait_finished(&self, deadline: Instant, close: bool) -> Result<(), u64> {
        if let Some(durable) = &self.durable {
            // Every record appended so far, acknowledged by every primary (which acknowledges
            // only after its fallback, if any, is done with it).
            let head = durable.spool.stats().head;
            loop {
                let behind = self
                    .backends
                    .iter()
                    .filter_map(|b| b.durable.as_ref())
                    .any(|(reader, _)| reader.committed() < head);
                if !behind {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(self.pending());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        for primaries in [true, false] {
            let group = self
                .backends
                .iter()
                .filter(|b| (b.role == Role::Primary) == primaries);
            let mut targets = Vec::new();
            for b in group {
                let mut st = b.state.lock();
                if close {
                    st.closed = true;
                }
                targets.push((b, st.next_seq()));
                drop(st);
                if close {
                    b.available.notify_one();
                }
            }
            for (b, target) in targets {
                let Some(rx) = b.state.lock().wait_for(target) else {
                    continue;
                };
                if !matches!(tokio::time::timeout_at(deadline, rx).await, Ok(Ok(()))) {
                    return Err(self.pending());
                }
            }
        }
        Ok(())
    }

    fn pending(&self) -> u64 {
        self.backends
            .iter()
            .map(|b| match &b.durable {
                Some((reader, _)) => reader.stats().pending_records,
                None => b.state.lock().unfinished() as u64,
            })
            .sum()
    }
}

impl From<Item> for Parcel {
    fn from(item: Item) -> Self {
        Parcel {
            batch: item.batch,
            ticket: item.ticket,
            in_doubt: item.in_doubt,
            ack: item.ack,
        }
    }
}
