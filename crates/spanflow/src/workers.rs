//! The pipeline's worker threads and the state they share with the handles.
//!
//! - one encoder thread takes span batches, encodes each once into a [`TraceRequest`] (straight
//!   from `SpanData`), runs the processor chain and hands the result to the fan-out;
//! - one request thread does the same for already-encoded requests (merging what queued up);
//! - optionally, a `spanflow-process` scheduler runs the chain on its own workers;
//! - exports run in `spanflow-export`'s [`FanOut`] on a tokio runtime the pipeline owns.
//!
//! Memory: a batch's budget credit leaves the intake with it, is resized to the encoded bytes,
//! and ends up owned by the export body's `Bytes`, so it returns to the budget only when the last
//! backend is done with the bytes (see [`budgeted`]).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use parking_lot::{Condvar, Mutex, RwLock};
use spanflow_batch::{Batcher, Credit, Receiver, TrySendError};
use spanflow_export::{ExportBatch, FanOut, Settled};
use spanflow_otlp::{Encoder, TraceRequest};
use spanflow_process::{Chain, Scheduler};
use spanflow_spool::AppendError;

use crate::books::Books;
use crate::config::{OverflowPolicy, PipelineConfig};
use crate::runtime::OwnedRuntime;
use crate::self_metrics::SelfMetrics;
use crate::stats::PipelineStats;

pub(crate) const RUNNING: u8 = 0;
pub(crate) const CLOSING: u8 = 1;
pub(crate) const CLOSED: u8 = 2;
/// The last handle was dropped without `shutdown`: the workers drain and shut the fan-out down.
pub(crate) const ABANDONED: u8 = 3;

/// Extra time `shutdown` gives the fan-out past the caller's deadline to cancel what is left
/// and report (it shuts exporters down with a short grace of its own).
const FANOUT_REPORT_GRACE: Duration = Duration::from_millis(500);

/// What a worker thread consumes.
pub(crate) enum Work {
    Spans(Receiver<SpanData>),
    Requests(Receiver<Submitted>),
}

/// A submitted request in the request intake, with the sender of its receipt if the caller
/// asked for one ([`crate::Pipeline::submit_tracked`]).
pub(crate) struct Submitted {
    pub(crate) request: TraceRequest,
    pub(crate) receipt: Option<ReceiptSender>,
}

/// What became of a submitted request, as its [`crate::Receipt`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFate {
    /// With a disk queue (`[queue] type = "disk"`): the batch that carries the request's spans
    /// is durable under the queue's fsync policy; its backends export it from there, across
    /// restarts if need be.
    Durable,
    /// The export batch that carried the request's spans settled (it may hold other requests'
    /// spans too): see [`Settled`] for how many were exported, failed, dropped or unconfirmed.
    Settled(Settled),
    /// A processor removed every span of the batch that carried it, or the chain failed on it
    /// (counted as `dropped.processor`).
    DroppedByProcessor,
    /// The pipeline shut down before the request reached export (counted as
    /// `dropped.shutdown_deadline`).
    NotExported,
    /// Export is disabled by the environment (`OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`): the spans were discarded (counted as `dropped.disabled`).
    ExportDisabled,
}

pub(crate) type ReceiptSender = tokio::sync::oneshot::Sender<RequestFate>;

/// Tells every receipt of a batch its fate.
fn resolve(receipts: Vec<ReceiptSender>, fate: RequestFate) {
    for receipt in receipts {
        // The caller may have dropped its receipt; nothing to tell then.
        let _ = receipt.send(fate);
    }
}

/// State shared by every handle and worker of one pipeline.
pub(crate) struct Shared {
    pub(crate) config: PipelineConfig,
    pub(crate) spans: Batcher<SpanData>,
    pub(crate) requests: Batcher<Submitted>,
    /// Set when a producer's bounded wait for room timed out (the backend is down or far too
    /// slow); while set, producers drop instead of waiting, so a dead backend costs each
    /// application thread at most one wait. A send that finds room clears it.
    pub(crate) overloaded: AtomicBool,
    pub(crate) resource: RwLock<Arc<Resource>>,
    pub(crate) chain: Option<Arc<Chain>>,
    pub(crate) scheduler: Option<Scheduler>,
    pub(crate) fanout: FanOut,
    pub(crate) runtime: OwnedRuntime,
    pub(crate) books: Books,
    /// Export is off (`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`): every batch
    /// is discarded before processing and counted as `dropped.disabled`.
    pub(crate) export_disabled: bool,
    pub(crate) state: AtomicU8,
    /// Woken whenever spans are handed off or a worker exits.
    progress_lock: Mutex<()>,
    progress: Condvar,
    pub(crate) live_workers: AtomicUsize,
    pub(crate) workers: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) final_stats: OnceLock<PipelineStats>,
    /// The self-metrics instruments, when the builder was given a meter; held for the
    /// pipeline's life (their callbacks hold only a `Weak` to this).
    pub(crate) self_metrics: OnceLock<SelfMetrics>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("fanout", &self.fanout)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The parts [`Shared::new`] takes.
pub(crate) struct Parts {
    pub(crate) config: PipelineConfig,
    pub(crate) spans: Batcher<SpanData>,
    pub(crate) requests: Batcher<Submitted>,
    pub(crate) resource: Resource,
    pub(crate) chain: Option<Arc<Chain>>,
    pub(crate) scheduler: Option<Scheduler>,
    pub(crate) fanout: FanOut,
    pub(crate) runtime: OwnedRuntime,
    pub(crate) books: Books,
    pub(crate) export_disabled: bool,
}

/// Why a durable append gave up.
enum AppendEnd {
    TooLarge,
    Closed,
}

/// One batch on its way from an intake to the fan-out.
struct Job {
    request: TraceRequest,
    /// Accepted spans it holds (a processor may remove some).
    spans: u64,
    /// The budget's credit for its bytes.
    credit: Credit,
    /// Receipts of the submitted requests merged into it.
    receipts: Vec<ReceiptSender>,
}

/// `bytes` owning `credit`: the budget gets the credit back when the last clone of the
/// returned `Bytes` (one per backend, plus any in flight) is dropped.
fn budgeted(bytes: Bytes, credit: Credit) -> Bytes {
    struct Held {
        bytes: Bytes,
        _credit: Credit,
    }
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    Bytes::from_owner(Held {
        bytes,
        _credit: credit,
    })
}

impl Shared {
    pub(crate) fn new(parts: Parts) -> Self {
        Self {
            config: parts.config,
            spans: parts.spans,
            requests: parts.requests,
            overloaded: AtomicBool::new(false),
            resource: RwLock::new(Arc::new(parts.resource)),
            chain: parts.chain,
            scheduler: parts.scheduler,
            fanout: parts.fanout,
            runtime: parts.runtime,
            books: parts.books,
            export_disabled: parts.export_disabled,
            state: AtomicU8::new(RUNNING),
            progress_lock: Mutex::new(()),
            progress: Condvar::new(),
            live_workers: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
            final_stats: OnceLock::new(),
            self_metrics: OnceLock::new(),
        }
    }

    /// The slow path of `push_span`: the budget is full. Under [`OverflowPolicy::Block`] retry
    /// with a growing pause until the policy's wait is over, unless the export side is known to
    /// be stuck; then drop and count.
    ///
    /// The wait is done here, with `try_send`, rather than with the batcher's own blocking
    /// policy, because it must also give up early once the export side is known to be stuck
    /// (`overloaded`), so that application threads stop paying the wait when it cannot help.
    #[cold]
    pub(crate) fn wait_for_room(&self, mut span: SpanData) {
        let max_wait = match self.config.memory.overflow {
            // Relaxed: a hint; a stale value costs one bounded wait or one early drop, both counted.
            OverflowPolicy::Block { max_wait_ms } if !self.overloaded.load(Ordering::Relaxed) => {
                Duration::from_millis(max_wait_ms)
            }
            _ => Duration::ZERO,
        };
        let deadline = Instant::now() + max_wait;
        let mut pause = Duration::from_micros(20);
        while Instant::now() < deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
            match self.spans.try_send(span) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => span = back,
                Err(TrySendError::Closed(_) | TrySendError::TooLarge(_)) => return,
            }
        }
        if !max_wait.is_zero() {
            self.overloaded.store(true, Ordering::Relaxed);
            tracing::warn!(
                ?max_wait,
                "span intake stayed full for the whole overflow wait; dropping until it drains"
            );
        }
        self.books.sdk_budget_full();
    }

    /// The books now (after shutdown: the final books).
    pub(crate) fn stats(&self) -> PipelineStats {
        match self.final_stats.get() {
            Some(stats) => stats.clone(),
            None => self.snapshot(),
        }
    }

    pub(crate) fn snapshot(&self) -> PipelineStats {
        self.books.snapshot(&self.fanout, || self.spans.stats())
    }

    /// Spans the pipeline is responsible for so far.
    pub(crate) fn accepted(&self) -> u64 {
        self.books.accepted(&self.spans.stats())
    }

    fn notify_progress(&self) {
        let _guard = self.progress_lock.lock();
        self.progress.notify_all();
    }

    /// Waits until `done(self)` or the deadline; true when done.
    pub(crate) fn wait_until(&self, deadline: Instant, done: impl Fn(&Shared) -> bool) -> bool {
        let mut guard = self.progress_lock.lock();
        loop {
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Bounded slices: the condition reads counters updated outside the lock (some by the
            // fan-out, which does not notify us), so a slice caps what a missed wake-up costs.
            self.progress
                .wait_for(&mut guard, (deadline - now).min(Duration::from_millis(5)));
        }
    }

    pub(crate) fn on_own_thread(&self) -> bool {
        self.runtime.is_current_thread()
    }

    pub(crate) fn run(self: &Arc<Self>, work: Work) {
        match work {
            Work::Spans(receiver) => self.run_span_worker(receiver),
            Work::Requests(receiver) => self.run_request_worker(receiver),
        }
        self.worker_exited();
    }

    fn run_span_worker(self: &Arc<Self>, mut receiver: Receiver<SpanData>) {
        let mut encoder = Encoder::new();
        while let Some(mut batch) = receiver.recv() {
            let spans = batch.len() as u64;
            let credit = batch.take_credit();
            let resource = Arc::clone(&self.resource.read());
            let request = encoder.encode(&batch, &resource);
            // With `FreeSpansOn::Application` the batch parks its spans for the application
            // threads to free; otherwise they are freed here.
            drop(batch);
            self.process_and_export(Job {
                request,
                spans,
                credit,
                receipts: Vec::new(),
            });
        }
    }

    fn run_request_worker(self: &Arc<Self>, mut receiver: Receiver<Submitted>) {
        while let Some(mut batch) = receiver.recv() {
            let credit = batch.take_credit();
            let mut requests = Vec::with_capacity(batch.len());
            let mut receipts = Vec::new();
            for submitted in batch.drain() {
                requests.push(submitted.request);
                receipts.extend(submitted.receipt);
            }
            drop(batch);
            let spans: u64 = requests.iter().map(|r| r.span_count() as u64).sum();
            let request = match requests.len() {
                1 => requests.pop().unwrap_or_else(TraceRequest::empty),
                _ => TraceRequest::merge(&requests),
            };
            drop(requests);
            self.process_and_export(Job {
                request,
                spans,
                credit,
                receipts,
            });
        }
    }

    /// Runs the chain on the job's request, on this thread or the scheduler, then hands the
    /// result to the fan-out.
    fn process_and_export(self: &Arc<Self>, mut job: Job) {
        if self.export_disabled {
            // The job's credit goes back to the budget as the job drops here.
            self.books.disabled_dropped(job.spans);
            resolve(job.receipts, RequestFate::ExportDisabled);
            self.notify_progress();
            return;
        }
        job.credit.resize_bytes(job.request.encoded_len() as u64);
        match (&self.scheduler, &self.chain) {
            (Some(scheduler), _) => {
                let shared = Arc::clone(self);
                let Job {
                    request,
                    spans,
                    credit,
                    receipts,
                } = job;
                // The callback runs exactly once, or `submit` fails and hands nothing back:
                // the receipts go with the callback either way (a failed submit drops them,
                // and a dropped receipt sender resolves its receipt as not exported).
                let submitted = scheduler.submit(request, move |result| match result {
                    Ok(request) => shared.export(Job {
                        request,
                        spans,
                        credit,
                        receipts,
                    }),
                    Err(err) => shared.chain_failed(&err, spans, receipts),
                });
                if let Err(err) = submitted {
                    self.chain_failed(&err, spans, Vec::new());
                }
            }
            (None, Some(chain)) => match chain.process(job.request) {
                Ok(request) => self.export(Job { request, ..job }),
                Err(err) => self.chain_failed(&err, job.spans, job.receipts),
            },
            (None, None) => self.export(job),
        }
    }

    fn chain_failed(&self, err: &dyn std::error::Error, spans: u64, receipts: Vec<ReceiptSender>) {
        tracing::warn!(error = %err, spans, "processor chain failed; batch dropped");
        self.books.processor_dropped(spans);
        resolve(receipts, RequestFate::DroppedByProcessor);
        self.notify_progress();
    }

    /// Hands a processed request to the fan-out, which never waits: its queues are bounded by
    /// the memory budget the request's credit belongs to (or, with a disk queue, writes it to
    /// the spool first).
    fn export(self: &Arc<Self>, job: Job) {
        let Job {
            request,
            spans,
            mut credit,
            receipts,
        } = job;
        let out = (request.span_count() as u64).min(spans);
        if out < spans {
            self.books.processor_dropped(spans - out);
        }
        if out == 0 {
            let fate = if spans == 0 {
                // Nothing to deliver: settled as it stands.
                RequestFate::Settled(Settled::default())
            } else {
                RequestFate::DroppedByProcessor
            };
            resolve(receipts, fate);
            self.notify_progress();
            return;
        }
        let bytes = request.into_bytes();
        credit.resize_bytes(bytes.len() as u64);
        if self.fanout.spool().is_some() {
            self.append(ExportBatch::new(bytes, out as usize), credit, receipts);
            self.notify_progress();
            return;
        }
        let batch = ExportBatch::new(budgeted(bytes, credit), out as usize);
        let sent = if receipts.is_empty() {
            self.fanout.send(batch)
        } else {
            self.fanout.send_with(
                batch,
                Box::new(move |settled| resolve(receipts, RequestFate::Settled(*settled))),
            )
        };
        match sent {
            Ok(()) => self.books.handed_off(out),
            // The refused batch took its hook (and the receipts) with it: they resolve as not
            // exported when their senders drop.
            Err(_) => self.books.export_closed(out),
        }
        self.notify_progress();
    }

    /// Durable mode: writes `batch` to the spool, holding `credit` until it is written, and
    /// tells the receipts once it is durable (a task on the pipeline's runtime waits for that).
    /// A full disk budget (or a full disk) is retried with a growing pause: the memory budget
    /// then fills and the intakes push back, so nothing accepted is dropped for want of disk.
    fn append(self: &Arc<Self>, batch: ExportBatch, credit: Credit, receipts: Vec<ReceiptSender>) {
        let spans = batch.spans as u64;
        self.books.append_started();
        self.books.handed_off(spans);
        // Queued for the spool's writer here, on the worker thread (it never blocks), so the
        // write does not wait for the runtime to schedule the task below: with a disk queue
        // the client's answer waits for the write, and that wake-up is one hand-off fewer on
        // its path. It also numbers the batches in the order the worker made them.
        let first = self.fanout.append(batch.clone());
        let shared = Arc::clone(self);
        self.runtime.handle().spawn(async move {
            let mut pause = Duration::from_millis(10);
            let mut warned = false;
            let mut next = Some(first);
            let written = loop {
                let attempt = match next.take() {
                    Some(first) => first,
                    None => shared.fanout.append(batch.clone()),
                };
                let Ok(append) = attempt else {
                    break Err(AppendEnd::Closed);
                };
                match append.await {
                    Ok(_) => break Ok(()),
                    Err(AppendError::TooLarge { len, max }) => {
                        tracing::error!(
                            len,
                            max,
                            spans,
                            "batch larger than a spool segment; dropped"
                        );
                        break Err(AppendEnd::TooLarge);
                    }
                    Err(AppendError::Closed) => break Err(AppendEnd::Closed),
                    // Full, DiskFull, or an I/O error after which the record may be on disk:
                    // write it again (a duplicate at worst), once there is room.
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "cannot write to the disk queue; retrying");
                            warned = true;
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                }
            };
            drop(credit);
            match written {
                Ok(()) => {
                    shared.books.append_finished(spans, 0);
                    resolve(receipts, RequestFate::Durable);
                }
                Err(AppendEnd::TooLarge) => shared.books.append_finished(0, spans),
                Err(AppendEnd::Closed) => {
                    // Shutdown closed the spool before the batch reached it.
                    shared.books.export_closed(spans);
                    shared.books.append_finished(0, 0);
                }
            }
            shared.notify_progress();
        });
    }

    fn worker_exited(self: &Arc<Self>) {
        // AcqRel: the last worker out must see every other worker's hand-offs.
        let last = self.live_workers.fetch_sub(1, Ordering::AcqRel) == 1;
        if last && self.state.load(Ordering::Acquire) == ABANDONED {
            // Last worker out after the handles were dropped without `shutdown`: finish the
            // exports already started (this is a plain std thread, so it may block), then let the
            // runtime go with the last reference.
            if let Some(scheduler) = &self.scheduler {
                scheduler.shutdown();
            }
            let deadline = Instant::now() + self.config.export.timeout();
            let _ = self
                .runtime
                .handle()
                .block_on(self.fanout.shutdown(deadline));
        }
        self.notify_progress();
    }

    /// Shuts the scheduler and the fan-out down by `deadline`, freezes the final books and
    /// stops the runtime.
    pub(crate) fn finish(self: &Arc<Self>, deadline: Instant) -> PipelineStats {
        if let Some(scheduler) = &self.scheduler {
            // Drains what was submitted; its callbacks hand the results to the fan-out.
            scheduler.shutdown();
        }
        let durable = self.fanout.spool().is_some();
        if durable {
            // Batches on their way to the spool get there (or fail) before it closes.
            let started = self.books.appends_started();
            self.wait_until(deadline, |s| s.books.appends_finished() >= started);
        }
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let task_shared = Arc::clone(self);
        self.runtime.handle().spawn(async move {
            task_shared.fanout.shutdown(deadline).await;
            let _ = done.send(());
        });
        let wait = deadline.saturating_duration_since(Instant::now()) + FANOUT_REPORT_GRACE;
        if finished.recv_timeout(wait).is_err() {
            tracing::warn!("the fan-out did not finish its shutdown in time");
        }
        if let Some(spool) = self.fanout.spool()
            && let Err(e) = spool.close()
        {
            tracing::error!(error = %e, "closing the disk queue failed");
        }
        let mut stats = self.snapshot();
        // With a disk queue, what the spool holds waits there for the next start: it stays
        // queued. Everything else still queued was in an intake or a worker when the deadline
        // passed (or, if the fan-out did not report in time, in it): not delivered by then.
        let carried = if durable {
            self.books.carried(&self.fanout).min(stats.queued_spans)
        } else {
            0
        };
        stats.dropped.shutdown_deadline += stats.queued_spans - carried;
        stats.queued_spans = carried;
        let stats = self.final_stats.get_or_init(|| stats).clone();
        self.state.store(CLOSED, Ordering::Release);
        self.runtime.stop(Duration::from_millis(100));
        for worker in std::mem::take(&mut *self.workers.lock()) {
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
        stats
    }
}
