//! [`Pipeline`]: the handle — intake, flush, shutdown and the books.
//!
//! Nothing ever calls `block_on` from inside a runtime: the pipeline's worker threads are plain
//! std threads (see [`crate::workers`]), and `flush`/`shutdown` wait on a condition variable or
//! a std channel with a deadline, while the async part of their work runs as a task on the
//! pipeline's own runtime. `flush_async`/`shutdown_async` run those same blocking calls on a
//! thread of their own and await the answer, so async callers never block their executor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use spanflow_batch::TrySendError;
use spanflow_otlp::TraceRequest;

use crate::books::Refusal;
use crate::builder::PipelineBuilder;
use crate::config::PipelineConfig;
use crate::error::{FlushError, ShutdownError, SubmitError};
use crate::stats::{PipelineStats, Undelivered};
use crate::workers::{ABANDONED, CLOSED, CLOSING, RUNNING, RequestFate, Shared, Submitted};

/// A running span pipeline. Cheap to clone (a handle to shared state); `Send + Sync`.
///
/// Build one with [`Pipeline::builder`], feed it through [`crate::SpanProcessor`] (SDK spans) or
/// [`Pipeline::try_submit`] (encoded requests), and end it with [`Pipeline::shutdown`], which
/// exports everything accepted before returning the final books. Dropping the last handle
/// without `shutdown` still drains in the background.
///
/// ```
/// use std::time::Duration;
/// use spanflow::{NullExporter, Pipeline};
///
/// let pipeline = Pipeline::builder().exporter("null", NullExporter::default()).build()?;
/// let request = spanflow::otlp::TraceRequest::empty();
/// pipeline.try_submit(request).expect("room in an empty pipeline");
/// let stats = pipeline.shutdown(Duration::from_secs(5))?;
/// assert_eq!(stats.unaccounted(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    owner: Arc<Owner>,
}

/// Dropped with the last `Pipeline` handle: starts a background drain.
#[derive(Debug)]
pub(crate) struct Owner {
    shared: Arc<Shared>,
}

impl Owner {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared
            .state
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Workers drain what was accepted; the last one out shuts the fan-out down.
            shared.spans.close();
            shared.requests.close();
        }
    }
}

impl Pipeline {
    /// A builder with the defaults described on [`PipelineConfig`].
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    pub(crate) fn from_owner(owner: Owner) -> Self {
        Self {
            owner: Arc::new(owner),
        }
    }

    fn shared(&self) -> &Shared {
        &self.owner.shared
    }

    /// Hands one ended SDK span to the intake (what [`crate::SpanProcessor`]'s `on_end` does).
    ///
    /// Never takes a global lock; waits only under [`crate::OverflowPolicy::Block`] while the
    /// memory budget is full, at most that policy's `max_wait_ms`, and not at all while the
    /// export side is known to be stuck (then the span is dropped and counted at once).
    pub fn push_span(&self, span: SpanData) {
        let shared = self.shared();
        match shared.spans.try_send(span) {
            Ok(()) => {
                // Relaxed: a hint (see `Shared::overloaded`); a load of a line written only
                // when the budget overflows.
                if shared.overloaded.load(Ordering::Relaxed) {
                    shared.overloaded.store(false, Ordering::Relaxed);
                }
            }
            Err(TrySendError::Full(span)) => shared.wait_for_room(span),
            // Counted by the batcher (`refused.closed`, `refused.too_large`); freed here.
            Err(TrySendError::Closed(span) | TrySendError::TooLarge(span)) => drop(span),
        }
    }

    /// Submits an already-encoded request (the relay's path). Never blocks.
    ///
    /// The request is weighed by its encoded length against the memory budget, which it holds
    /// until every backend is done with its spans; when the budget is used up it comes back in
    /// [`SubmitError::Full`] with a retry hint, and after shutdown in [`SubmitError::Closed`].
    /// Refused spans are counted in [`PipelineStats::refused`].
    pub fn try_submit(&self, request: TraceRequest) -> Result<(), SubmitError> {
        self.submit(request, None)
    }

    /// [`Pipeline::try_submit`], and a [`Receipt`] that resolves once the request's spans are
    /// settled (exported, failed, dropped or unconfirmed, as the batch that carried them),
    /// for callers that must act on delivery: a Kafka consumer commits its offsets on it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use spanflow::{NullExporter, Pipeline, RequestFate};
    ///
    /// let pipeline = Pipeline::builder().exporter("null", NullExporter::default()).build()?;
    /// let receipt = pipeline.submit_tracked(spanflow::otlp::TraceRequest::empty())?;
    /// // No spans: nothing to export, so the request settles at once.
    /// let fate = receipt.wait_timeout(Duration::from_secs(5)).expect("settles");
    /// assert_eq!(fate, RequestFate::Settled(Default::default()));
    /// pipeline.shutdown(Duration::from_secs(5))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_tracked(&self, request: TraceRequest) -> Result<Receipt, SubmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(request, Some(tx))?;
        Ok(Receipt { rx })
    }

    fn submit(
        &self,
        request: TraceRequest,
        receipt: Option<tokio::sync::oneshot::Sender<RequestFate>>,
    ) -> Result<(), SubmitError> {
        let shared = self.shared();
        let spans = request.span_count() as u64;
        shared.books.request_accepted(spans);
        match shared.requests.try_send(Submitted { request, receipt }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Submitted { request, .. })) => {
                shared.books.request_refused(spans, Refusal::BudgetFull);
                let retry_after = shared.config.batch.max_age().max(Duration::from_millis(10));
                Err(SubmitError::Full {
                    request,
                    retry_after,
                })
            }
            Err(TrySendError::TooLarge(Submitted { request, .. })) => {
                shared.books.request_refused(spans, Refusal::TooLarge);
                Err(SubmitError::TooLarge { request })
            }
            Err(TrySendError::Closed(Submitted { request, .. })) => {
                shared.books.request_refused(spans, Refusal::ShutDown);
                Err(SubmitError::Closed { request })
            }
        }
    }

    /// Sets the resource SDK spans are encoded under (the tracer provider calls this through
    /// [`crate::SpanProcessor`]).
    pub fn set_resource(&self, resource: &Resource) {
        *self.shared().resource.write() = Arc::new(resource.clone());
    }

    /// Waits until every span accepted before this call is exported, failed, dropped or
    /// unconfirmed (all counted), or `timeout` passes. Spans that settled while it waited
    /// without being delivered make it return [`FlushError::Undelivered`].
    ///
    /// Safe from any thread, inside or outside any runtime: it waits on std primitives while the
    /// pipeline's own threads and runtime do the work. It does block the calling thread, though:
    /// in async code await [`Pipeline::flush_async`] instead. Refused with
    /// [`FlushError::OnPipelineThread`] on the pipeline's own threads (inside an exporter, say).
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let shared = self.shared();
        if shared.on_own_thread() {
            return Err(FlushError::OnPipelineThread);
        }
        if shared.state.load(Ordering::Acquire) == CLOSED {
            return Err(FlushError::Closed);
        }
        let deadline = Instant::now() + timeout;
        let before = shared.snapshot();
        let target = shared.accepted();
        let pending = |shared: &Shared| target.saturating_sub(shared.snapshot().settled());
        // 1. The batchers cut everything accepted so far now instead of at its age.
        let _ = shared.spans.flush_timeout(timeout);
        let _ = shared
            .requests
            .flush_timeout(deadline.saturating_duration_since(Instant::now()));
        // 2. The workers encode, process and hand it all to the fan-out.
        if !shared.wait_until(deadline, |s| s.books.left_workers() >= target) {
            return Err(FlushError::Timeout {
                timeout,
                pending_spans: pending(shared),
            });
        }
        // 3. With a disk queue, every batch handed off is written to it.
        if shared.fanout.spool().is_some() {
            let started = shared.books.appends_started();
            if !shared.wait_until(deadline, |s| s.books.appends_finished() >= started) {
                return Err(FlushError::Timeout {
                    timeout,
                    pending_spans: pending(shared),
                });
            }
        }
        // 4. The fan-out settles every batch it was given (on its runtime; we wait on a channel).
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let task_shared = Arc::clone(&self.owner.shared);
        shared.runtime.handle().spawn(async move {
            let _ = done.send(task_shared.fanout.flush(deadline).await.is_ok());
        });
        match finished.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(true) => {}
            _ => {
                return Err(FlushError::Timeout {
                    timeout,
                    pending_spans: pending(shared).max(1),
                });
            }
        }
        let undelivered = Undelivered::between(&before, &shared.snapshot());
        if undelivered.is_empty() {
            Ok(())
        } else {
            Err(FlushError::Undelivered(undelivered))
        }
    }

    /// Stops accepting spans, exports everything accepted, stops the runtime and returns the
    /// final books.
    ///
    /// Whatever is not delivered when `timeout` passes is settled at the deadline: still in the
    /// pipeline or never sent counts as `dropped.shutdown_deadline`, in flight as
    /// `unconfirmed`; the error then carries the final books. Spans that failed or were
    /// dropped while shutdown ran make it return [`ShutdownError::Undelivered`], also with the
    /// final books. Refused on the pipeline's own threads. It blocks the calling thread until
    /// done: in async code await [`Pipeline::shutdown_async`] instead.
    pub fn shutdown(&self, timeout: Duration) -> Result<PipelineStats, ShutdownError> {
        let shared = self.shared();
        if shared.on_own_thread() {
            return Err(ShutdownError::OnPipelineThread);
        }
        if shared
            .state
            .compare_exchange(RUNNING, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ShutdownError::AlreadyShutDown);
        }
        let deadline = Instant::now() + timeout;
        let before = shared.snapshot();
        shared.spans.close();
        shared.requests.close();
        let drained = shared.wait_until(deadline, |s| s.live_workers.load(Ordering::Acquire) == 0);
        let stats = Shared::finish(&self.owner.shared, deadline);
        let undelivered = Undelivered::between(&before, &stats);
        if !drained || Instant::now() > deadline {
            Err(ShutdownError::Timeout {
                timeout,
                undelivered,
                stats: Box::new(stats),
            })
        } else if !undelivered.is_empty() {
            Err(ShutdownError::Undelivered {
                undelivered,
                stats: Box::new(stats),
            })
        } else {
            Ok(stats)
        }
    }

    /// [`Pipeline::flush`] for async callers: the same wait, the same result, without blocking
    /// the executor thread.
    ///
    /// The returned future does nothing until polled; then it runs [`Pipeline::flush`] on a
    /// thread of its own and resolves with its result. It needs no particular runtime (any
    /// executor, including a tokio `current_thread` runtime whose only thread may also be
    /// driving your exporter's work) and never holds up the thread polling it. Dropping it
    /// before it resolves abandons the wait, not the flush: that thread still runs it to the
    /// deadline. Refused with [`FlushError::OnPipelineThread`] when polled on the pipeline's own
    /// threads (inside an exporter), as `flush` is; [`FlushError::WaiterThread`] when that
    /// thread cannot be started (nothing was flushed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use spanflow::{NullExporter, Pipeline};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// runtime.block_on(async {
    ///     let exporter = NullExporter::default();
    ///     let pipeline = Pipeline::builder().exporter("null", exporter.clone()).build()?;
    ///     let spans = spanflow::otlp::testing::span_batch(3, 1);
    ///     let request = spanflow::otlp::Encoder::new().encode(&spans, &spanflow::otlp::testing::resource());
    ///     pipeline.try_submit(request).expect("room in an empty pipeline");
    ///     pipeline.flush_async(Duration::from_secs(5)).await?;
    ///     assert_eq!(exporter.spans(), 3);
    ///     let stats = pipeline.shutdown_async(Duration::from_secs(5)).await?;
    ///     assert_eq!((stats.exported, stats.unaccounted()), (3, 0));
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })
    /// # }
    /// ```
    pub fn flush_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), FlushError>> + Send + 'static {
        let pipeline = self.clone();
        async move {
            if pipeline.shared().on_own_thread() {
                return Err(FlushError::OnPipelineThread);
            }
            match off_thread("spanflow-flush", pipeline, move |p| p.flush(timeout)).await {
                Ok(result) => result,
                Err(why) => Err(FlushError::WaiterThread(why)),
            }
        }
    }

    /// [`Pipeline::shutdown`] for async callers: the same shutdown, the same deadline, the same
    /// final books or errors, without blocking the executor thread.
    ///
    /// Like [`Pipeline::flush_async`], it does nothing until polled, then runs
    /// [`Pipeline::shutdown`] on a thread of its own, so it works on any executor (a tokio
    /// `current_thread` runtime included). Once polled, shutdown has begun: dropping the future
    /// abandons the wait, not the shutdown, which still finishes by its deadline. Refused with
    /// [`ShutdownError::OnPipelineThread`] when polled on the pipeline's own threads;
    /// [`ShutdownError::WaiterThread`] when its thread cannot be started (shutdown did not
    /// begin, so it may be tried again).
    ///
    /// ```
    /// use std::time::Duration;
    /// use spanflow::{NullExporter, Pipeline};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let pipeline = Pipeline::builder().exporter("null", NullExporter::default()).build()?;
    /// let stats = runtime.block_on(pipeline.shutdown_async(Duration::from_secs(5)))?;
    /// assert_eq!(stats.unaccounted(), 0);
    /// assert!(pipeline.is_shut_down());
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<PipelineStats, ShutdownError>> + Send + 'static {
        let pipeline = self.clone();
        async move {
            if pipeline.shared().on_own_thread() {
                return Err(ShutdownError::OnPipelineThread);
            }
            match off_thread("spanflow-shutdown", pipeline, move |p| p.shutdown(timeout)).await {
                Ok(result) => result,
                Err(why) => Err(ShutdownError::WaiterThread(why)),
            }
        }
    }

    /// The books now (after shutdown: the final books).
    pub fn stats(&self) -> PipelineStats {
        self.shared().stats()
    }

    /// Whether `shutdown` has begun (new spans are refused and counted).
    pub fn is_shut_down(&self) -> bool {
        self.shared().state.load(Ordering::Acquire) != RUNNING
    }

    /// The configuration the pipeline runs with.
    pub fn config(&self) -> &PipelineConfig {
        &self.shared().config
    }

    /// The live health of every backend, from the fan-out.
    pub fn health(&self) -> tokio::sync::watch::Receiver<Vec<spanflow_export::BackendHealth>> {
        self.shared().fanout.health()
    }
}

/// Runs `wait` (the blocking [`Pipeline::flush`] or [`Pipeline::shutdown`], the one home of
/// their logic) on a new thread named `name` and resolves with what it returned, awaiting a
/// oneshot channel: the polling executor thread never blocks, whatever the executor. A panic in
/// `wait` is resumed in the awaiting task, as the blocking call would have panicked in its
/// caller. `Err` carries why the thread could not be started or did not answer.
async fn off_thread<T: Send + 'static>(
    name: &str,
    pipeline: Pipeline,
    wait: impl FnOnce(&Pipeline) -> T + Send + 'static,
) -> Result<T, String> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // AssertUnwindSafe: the pipeline's state is atomics and locks that stay consistent
            // across a panic in a wait, and the panic is resumed in the caller below.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wait(&pipeline)));
            // The caller may have dropped the future: nobody left to tell.
            let _ = answer.send(outcome);
        })
        .map_err(|err| format!("cannot start the `{name}` thread: {err}"))?;
    match answered.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // Only a thread that died without unwinding (never with `catch_unwind` above) gets here.
        Err(_) => Err(format!("the `{name}` thread ended without an answer")),
    }
}

/// Resolves when a request submitted with [`Pipeline::submit_tracked`] is settled; awaitable
/// (any runtime) or waited on from a plain thread with [`Receipt::wait_timeout`].
#[derive(Debug)]
#[must_use = "a receipt does nothing unless awaited or waited on"]
pub struct Receipt {
    rx: tokio::sync::oneshot::Receiver<RequestFate>,
}

impl Receipt {
    /// Blocks the calling thread until the request settles, at most `timeout`; `None` when
    /// the timeout passed first. Do not call it inside an async task: await the receipt there.
    pub fn wait_timeout(mut self, timeout: Duration) -> Option<RequestFate> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            match self.rx.try_recv() {
                Ok(fate) => return Some(fate),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Some(RequestFate::NotExported);
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

impl std::future::Future for Receipt {
    type Output = RequestFate;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<RequestFate> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|fate| fate.unwrap_or(RequestFate::NotExported))
    }
}
