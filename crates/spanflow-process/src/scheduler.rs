//! [`Scheduler`]: N named worker threads running a [`Chain`] over submitted
//! batches, built on a work-stealing deque.
//!
//! New batches go to a shared [`Injector`]; a worker takes a batch of jobs
//! from it into its own [`Worker`] deque (`steal_batch_and_pop`), works
//! through them, and when both are empty steals from the other workers'
//! deques. A worker with nothing to do backs off (spins, then yields) for a
//! bounded number of rounds, then parks on a condition variable; a submitter wakes one parked worker only when some are
//! parked, so a busy scheduler never touches the lock.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::thread::JoinHandle;

use crossbeam_utils::{Backoff, CachePadded};
use parking_lot::{Condvar, Mutex};
use spanflow_otlp::TraceRequest;

use crate::chain::{Chain, ChainStats};
use crate::deque::{Injector, Steal, Stealer, Worker};
use crate::error::{ProcessError, ProcessorConfigError, ScheduleError, panic_message};

/// Called once with the outcome of a submitted batch, on a worker thread.
pub type OnDone = Box<dyn FnOnce(Result<TraceRequest, ProcessError>) + Send + 'static>;

struct Job {
    batch: TraceRequest,
    on_done: OnDone,
}

struct Shared {
    chain: Arc<Chain>,
    injector: Injector<Job>,
    stealers: Box<[Stealer<Job>]>,
    /// Held by a worker from announcing itself asleep until it waits, and by
    /// a waker while notifying, so a wake-up cannot fall between a worker's
    /// last look for work and its wait.
    sleep_lock: Mutex<()>,
    wake: Condvar,
    sleepers: CachePadded<AtomicUsize>,
    /// Jobs submitted and not yet completed (their callback has returned).
    in_flight: CachePadded<AtomicUsize>,
    shutdown: AtomicBool,
    submitted: CachePadded<AtomicU64>,
    completed: CachePadded<AtomicU64>,
    steals: AtomicU64,
    callback_panics: AtomicU64,
}

/// Runs a [`Chain`] over submitted batches on `workers` named threads
/// (`spanflow-proc-<i>`), work-stealing between them.
///
/// Each batch is processed exactly once, by one worker, and its callback is
/// called exactly once with the result. A panicking processor costs only its
/// batch (the callback gets [`ProcessError::Panicked`]); a panicking callback
/// is caught, counted and logged. [`Scheduler::shutdown`] (also run on drop)
/// stops accepting batches, drains every batch already accepted, and joins
/// the threads.
///
/// ```
/// use std::sync::mpsc;
/// use spanflow_otlp::TraceRequest;
/// use spanflow_process::{Chain, ProcessorConfig, Scheduler};
///
/// let config: Vec<ProcessorConfig> =
///     serde_json::from_str(r#"[{"type": "probabilistic_sampler", "ratio": 0.5}]"#)?;
/// let scheduler = Scheduler::new(Chain::from_config(&config)?, 2)?;
///
/// let (tx, rx) = mpsc::channel();
/// scheduler.submit(TraceRequest::empty(), move |result| {
///     let _ = tx.send(result.map(|batch| batch.span_count()));
/// })?;
/// assert_eq!(rx.recv()??, 0);
///
/// // Or wait on a ticket.
/// let out = scheduler.submit_ticket(TraceRequest::empty())?.wait()?;
/// assert_eq!(out.span_count(), 0);
///
/// scheduler.shutdown();
/// assert_eq!(scheduler.stats().completed, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Scheduler {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("workers", &self.shared.stealers.len())
            .field("chain", &self.shared.chain)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts `workers` threads running `chain`.
    ///
    /// # Errors
    ///
    /// [`ProcessorConfigError::Invalid`] if `workers` is zero or a thread cannot be
    /// spawned.
    pub fn new(
        chain: impl Into<Arc<Chain>>,
        workers: usize,
    ) -> Result<Scheduler, ProcessorConfigError> {
        if workers == 0 {
            return Err(ProcessorConfigError::invalid(
                "scheduler",
                "workers must be at least 1",
            ));
        }
        let locals: Vec<Worker<Job>> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let shared = Arc::new(Shared {
            chain: chain.into(),
            injector: Injector::new(),
            stealers: locals.iter().map(Worker::stealer).collect(),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            in_flight: CachePadded::new(AtomicUsize::new(0)),
            shutdown: AtomicBool::new(false),
            submitted: CachePadded::new(AtomicU64::new(0)),
            completed: CachePadded::new(AtomicU64::new(0)),
            steals: AtomicU64::new(0),
            callback_panics: AtomicU64::new(0),
        });
        let scheduler = Scheduler {
            shared: Arc::clone(&shared),
            threads: Mutex::new(Vec::with_capacity(workers)),
        };
        for (index, local) in locals.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("spanflow-proc-{index}"))
                .spawn(move || run_worker(&shared, index, &local))
                .map_err(|e| {
                    ProcessorConfigError::invalid("scheduler", format!("cannot spawn worker: {e}"))
                })?;
            scheduler.threads.lock().push(handle);
        }
        Ok(scheduler)
    }

    /// Submits a batch; `on_done` is called once, on a worker thread, with the
    /// processed batch or the error that cost it.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::ShutDown`] (with the batch) after
    /// [`Scheduler::shutdown`]; `on_done` is then not called.
    pub fn submit<F>(&self, batch: TraceRequest, on_done: F) -> Result<(), ScheduleError>
    where
        F: FnOnce(Result<TraceRequest, ProcessError>) + Send + 'static,
    {
        self.submit_boxed(batch, Box::new(on_done))
    }

    /// [`Scheduler::submit`] with an already boxed callback.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::ShutDown`] after [`Scheduler::shutdown`].
    pub fn submit_boxed(&self, batch: TraceRequest, on_done: OnDone) -> Result<(), ScheduleError> {
        let s = &*self.shared;
        // SeqCst pair with `shutdown`: either this load sees the flag, or the
        // workers' final `in_flight` check sees this increment and keeps
        // running until the job is done; never neither.
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        if s.shutdown.load(Ordering::SeqCst) {
            finish_one(s);
            return Err(ScheduleError::ShutDown(batch));
        }
        s.submitted.fetch_add(1, Ordering::Relaxed);
        s.injector.push(Job { batch, on_done });
        wake_one(s);
        Ok(())
    }

    /// Submits a batch and returns a [`Ticket`] to wait for its result.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::ShutDown`] after [`Scheduler::shutdown`].
    pub fn submit_ticket(&self, batch: TraceRequest) -> Result<Ticket, ScheduleError> {
        let slot = Arc::new(TicketSlot {
            result: Mutex::new(None),
            ready: Condvar::new(),
        });
        let filler = Arc::clone(&slot);
        self.submit(batch, move |result| {
            *filler.result.lock() = Some(result);
            filler.ready.notify_one();
        })?;
        Ok(Ticket { slot })
    }

    /// The chain the workers run.
    pub fn chain(&self) -> &Chain {
        &self.shared.chain
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        self.shared.stealers.len()
    }

    /// Counts so far, including the chain's.
    pub fn stats(&self) -> SchedulerStats {
        let s = &*self.shared;
        SchedulerStats {
            workers: s.stealers.len(),
            submitted: s.submitted.load(Ordering::Relaxed),
            completed: s.completed.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed) as u64,
            parked: s.sleepers.load(Ordering::Relaxed),
            steals: s.steals.load(Ordering::Relaxed),
            callback_panics: s.callback_panics.load(Ordering::Relaxed),
            chain: s.chain.stats(),
        }
    }

    /// Stops accepting batches, waits until every accepted batch is processed
    /// and its callback has returned, and joins the worker threads.
    /// Idempotent. Must not be called from a callback (it would wait for
    /// itself); a call from a worker thread only marks the shutdown.
    pub fn shutdown(&self) {
        let s = &*self.shared;
        // SeqCst: pairs with the load in `submit_boxed` (see there).
        s.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = s.sleep_lock.lock();
            s.wake.notify_all();
        }
        let me = std::thread::current().id();
        let handles: Vec<JoinHandle<()>> = {
            let mut threads = self.threads.lock();
            if threads.iter().any(|h| h.thread().id() == me) {
                return;
            }
            threads.drain(..).collect()
        };
        for handle in handles {
            if handle.join().is_err() {
                tracing::error!("a spanflow-process worker thread panicked");
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Counts of a [`Scheduler`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchedulerStats {
    /// Worker threads.
    pub workers: usize,
    /// Batches accepted.
    pub submitted: u64,
    /// Batches whose callback has returned.
    pub completed: u64,
    /// Batches accepted and not yet completed.
    pub in_flight: u64,
    /// Workers parked right now (an idle scheduler parks all of them rather
    /// than spinning).
    pub parked: usize,
    /// Successful steals from another worker's deque.
    pub steals: u64,
    /// Callbacks that panicked (caught; the worker went on).
    pub callback_panics: u64,
    /// The chain's counts: batches, failures, panics by processor, spans in/out.
    pub chain: ChainStats,
}

/// The pending result of [`Scheduler::submit_ticket`].
pub struct Ticket {
    slot: Arc<TicketSlot>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("ready", &self.slot.result.lock().is_some())
            .finish()
    }
}

struct TicketSlot {
    result: Mutex<Option<Result<TraceRequest, ProcessError>>>,
    ready: Condvar,
}

impl Ticket {
    /// Blocks until the batch is processed.
    ///
    /// # Errors
    ///
    /// The [`ProcessError`] that cost the batch.
    pub fn wait(self) -> Result<TraceRequest, ProcessError> {
        let mut result = self.slot.result.lock();
        loop {
            if let Some(r) = result.take() {
                return r;
            }
            self.slot.ready.wait(&mut result);
        }
    }

    /// The result if ready, else the ticket back.
    ///
    /// # Errors
    ///
    /// `Err(self)` while the batch is still being processed.
    pub fn try_wait(self) -> Result<Result<TraceRequest, ProcessError>, Ticket> {
        let taken = self.slot.result.lock().take();
        taken.ok_or(self)
    }
}

/// Marks one job done; the last one during shutdown wakes the parked workers
/// so they can see there is nothing left and exit.
fn finish_one(s: &Shared) {
    // SeqCst: pairs with the store in `shutdown`; whichever of the two comes
    // second in the total order sees the other and makes sure the workers are
    // woken (here, or by `shutdown`'s own notify_all).
    if s.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && s.shutdown.load(Ordering::SeqCst) {
        let _guard = s.sleep_lock.lock();
        s.wake.notify_all();
    }
}

/// Wakes one parked worker, if any, after work was published.
fn wake_one(s: &Shared) {
    // Dekker pattern with `park`: this fence orders the publication of the
    // job before the read of `sleepers`; `park` orders its increment of
    // `sleepers` before its look at the queues with the matching fence. So
    // either we see the sleeper and notify it, or it sees the job.
    fence(Ordering::SeqCst);
    if s.sleepers.load(Ordering::Relaxed) > 0 {
        let _guard = s.sleep_lock.lock();
        s.wake.notify_one();
    }
}

fn has_work(s: &Shared) -> bool {
    !s.injector.is_empty() || s.stealers.iter().any(|st| !st.is_empty())
}

fn run_worker(s: &Shared, index: usize, local: &Worker<Job>) {
    // Look for work with exponential backoff (spins, then yields) before
    // parking: a worker that just ran dry usually finds the next batch within
    // microseconds, and catching it while still awake spares both sides a
    // futex wake-up. Parking comes after a bounded number of rounds, so an
    // idle scheduler never spins.
    let backoff = Backoff::new();
    loop {
        if let Some(job) = find_job(s, index, local) {
            execute(s, job);
            backoff.reset();
        } else if backoff.is_completed() {
            if !park(s) {
                return;
            }
            backoff.reset();
        } else {
            backoff.snooze();
        }
    }
}

/// Parks until there may be work. Returns `false` when the scheduler is shut
/// down and nothing is in flight: the worker should exit.
fn park(s: &Shared) -> bool {
    let mut guard = s.sleep_lock.lock();
    s.sleepers.fetch_add(1, Ordering::Relaxed);
    // Pairs with the fence in `wake_one` (see there).
    fence(Ordering::SeqCst);
    let keep_going = if has_work(s) {
        true
    } else if s.shutdown.load(Ordering::SeqCst) && s.in_flight.load(Ordering::SeqCst) == 0 {
        false
    } else {
        s.wake.wait(&mut guard);
        true
    };
    s.sleepers.fetch_sub(1, Ordering::Relaxed);
    keep_going
}

fn find_job(s: &Shared, index: usize, local: &Worker<Job>) -> Option<Job> {
    if let Some(job) = local.pop() {
        return Some(job);
    }
    loop {
        let mut retry = false;
        match s.injector.steal_batch_and_pop(local) {
            Steal::Success(job) => {
                // We took several jobs: let a sleeping worker steal some.
                if !local.is_empty() {
                    wake_one(s);
                }
                return Some(job);
            }
            Steal::Retry => retry = true,
            Steal::Empty => {}
        }
        let n = s.stealers.len();
        for k in 1..n {
            match s.stealers[(index + k) % n].steal_batch_and_pop(local) {
                Steal::Success(job) => {
                    s.steals.fetch_add(1, Ordering::Relaxed);
                    return Some(job);
                }
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
        }
        if !retry {
            return None;
        }
    }
}

fn execute(s: &Shared, job: Job) {
    let Job { batch, on_done } = job;
    // `Chain::process` catches processor panics itself and counts them; this
    // outer guard only keeps the worker (and the in-flight count) alive if
    // something outside a processor panics.
    let result =
        catch_unwind(AssertUnwindSafe(|| s.chain.process(batch))).unwrap_or_else(|payload| {
            Err(ProcessError::Failed {
                processor: "chain".to_owned(),
                message: format!("panicked: {}", panic_message(payload.as_ref())),
            })
        });
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || on_done(result))) {
        s.callback_panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            panic = %panic_message(payload.as_ref()),
            "a spanflow-process completion callback panicked"
        );
    }
    s.completed.fetch_add(1, Ordering::Relaxed);
    finish_one(s);
}
