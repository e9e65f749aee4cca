//! The [`Processor`] trait and the data parallelism processors may use.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "rayon")]
use rayon::prelude::*;
use spanflow_otlp::{SpanHead, SpanView, TraceRequest};

use crate::error::{ProcessError, ProcessorConfigError};

/// One step of span processing: takes a batch, returns the batch to pass on.
///
/// A processor may drop spans (through [`TraceRequest::select`]), edit spans or
/// resources (through [`TraceRequest::rewrite`]) or only observe. It is shared
/// by every thread of a [`Scheduler`](crate::Scheduler), so it is `Send + Sync`
/// and takes `&self`; state it keeps (counters, statistics) must be
/// thread-safe.
///
/// A processor may panic: the [`Chain`](crate::Chain) running it catches the
/// panic, drops that one batch, counts the panic under [`Processor::name`] and
/// goes on with the next batch.
///
/// # Example
///
/// ```
/// use spanflow_otlp::TraceRequest;
/// use spanflow_process::{Chain, Context, ProcessError, Processor};
///
/// /// Drops every span whose name is empty.
/// #[derive(Debug)]
/// struct DropUnnamed;
///
/// impl Processor for DropUnnamed {
///     fn name(&self) -> &str {
///         "drop_unnamed"
///     }
///     fn process(&self, batch: TraceRequest, cx: &Context<'_>) -> Result<TraceRequest, ProcessError> {
///         let keep = cx.keep_mask(&batch, |span| !span.name().is_empty());
///         Ok(batch.select(&keep))
///     }
/// }
///
/// let chain = Chain::builder().processor(DropUnnamed).build()?;
/// let out = chain.process(TraceRequest::empty())?;
/// assert_eq!(out.span_count(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Processor: Send + Sync {
    /// The name used in logs, errors and panic counts; unique within a chain.
    fn name(&self) -> &str;

    /// Processes one batch.
    ///
    /// # Errors
    ///
    /// A processor returns [`ProcessError::Failed`] when it cannot produce a
    /// batch; the chain then drops the batch.
    fn process(&self, batch: TraceRequest, cx: &Context<'_>) -> Result<TraceRequest, ProcessError>;

    /// If this processor only keeps or drops spans one at a time, by a rule
    /// that reads nothing but the span (and its resource and scope), it may
    /// expose that rule here. The chain then evaluates consecutive predicates
    /// in a single pass and applies one keep-mask, instead of copying the
    /// batch once per processor. The result must be the same as calling
    /// [`Processor::process`].
    fn as_predicate(&self) -> Option<&dyn SpanPredicate> {
        None
    }
}

impl<P: Processor + ?Sized> Processor for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn process(&self, batch: TraceRequest, cx: &Context<'_>) -> Result<TraceRequest, ProcessError> {
        (**self).process(batch, cx)
    }
    fn as_predicate(&self) -> Option<&dyn SpanPredicate> {
        (**self).as_predicate()
    }
}

/// A keep/drop rule evaluated on one span at a time; see
/// [`Processor::as_predicate`].
pub trait SpanPredicate: Send + Sync {
    /// Whether the span goes on down the chain. `head` holds the span's
    /// commonly needed fields, read once for every rule of a chain (see
    /// [`SpanHead`]); `span` gives access to everything else.
    fn keep(&self, span: &SpanView<'_>, head: &SpanHead<'_>) -> bool;

    /// Whether the rule reads span or resource attributes. A rule that does
    /// not (a trace-id sampler, a name filter) may be evaluated in the same
    /// pass as an earlier attribute edit, on the unedited span, because the
    /// edit cannot change its answer. Defaults to `true`, the safe answer.
    fn reads_attributes(&self) -> bool {
        true
    }
}

/// What a processor gets besides its batch: the chain's data parallelism.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    parallelism: &'a Parallelism,
}

impl<'a> Context<'a> {
    /// A context that runs everything on the calling thread.
    pub fn sequential() -> Context<'static> {
        static SEQUENTIAL: OnceLock<Parallelism> = OnceLock::new();
        Context {
            parallelism: SEQUENTIAL.get_or_init(Parallelism::sequential),
        }
    }

    pub(crate) fn new(parallelism: &'a Parallelism) -> Self {
        Context { parallelism }
    }

    /// The chain's data parallelism.
    pub fn parallelism(&self) -> &'a Parallelism {
        self.parallelism
    }

    /// Evaluates `keep` on every span of `batch` and returns the keep-mask for
    /// [`TraceRequest::select`], in parallel on the rayon pool when the batch
    /// is at least the parallel cutoff, else on the calling thread.
    pub fn keep_mask<F>(&self, batch: &TraceRequest, keep: F) -> Vec<bool>
    where
        F: Fn(&SpanView<'_>) -> bool + Sync,
    {
        let mut mask = vec![false; batch.span_count()];
        self.parallelism.for_each_chunk(&mut mask, |first, chunk| {
            fill_mask(batch, first, chunk, &keep);
        });
        mask
    }
}

fn fill_mask<F>(batch: &TraceRequest, first: usize, chunk: &mut [bool], keep: &F)
where
    F: Fn(&SpanView<'_>) -> bool,
{
    for (offset, slot) in chunk.iter_mut().enumerate() {
        *slot = batch.span(first + offset).is_some_and(|span| keep(&span));
    }
}

/// Spans per batch at or above which work inside a batch is split over the
/// rayon pool (in chunks of 1024 spans, so this is the smallest batch that
/// gives the pool two chunks). Chosen with the `process/cutoff_<n>`
/// benchmarks (span stats + filter on one batch, 2-thread pool): on a 2-core
/// machine shared with other builds, the pool won at 2048 and 8192 spans in
/// every run (about 1.3–1.5× at 8192), while at 512 spans the result flipped
/// between runs. Below that, the per-span work of the built-in processors
/// (tens of nanoseconds) does not reliably pay for waking pool threads.
pub const DEFAULT_PARALLEL_CUTOFF: usize = 2048;

/// Spans handed to one rayon task; large enough that task overhead is noise.
#[cfg(feature = "rayon")]
const CHUNK_SPANS: usize = 1024;

/// Data parallelism inside one batch: a dedicated, named rayon pool and the
/// batch size from which it is used.
///
/// Panics in pool tasks are caught by the code that started them (so the
/// chain can blame the right processor); anything that escapes reaches the
/// pool's panic handler, which logs it and counts it in
/// [`Parallelism::escaped_panics`] instead of aborting the process.
///
/// Without the `rayon` cargo feature there is no pool: [`Parallelism::new`] is an error naming
/// the feature, and [`Parallelism::shared`] is [`Parallelism::sequential`].
///
/// ```
/// use spanflow_process::Parallelism;
///
/// # #[cfg(feature = "rayon")] {
/// let par = Parallelism::new(2, 2048)?;
/// assert_eq!(par.threads(), 2);
/// assert_eq!(par.cutoff(), 2048);
/// # }
/// # Ok::<(), spanflow_process::ProcessorConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Parallelism {
    pool: Option<Arc<Pool>>,
    cutoff: usize,
    escaped_panics: Arc<AtomicU64>,
}

impl Parallelism {
    /// No pool: every batch is processed on the calling thread.
    pub fn sequential() -> Self {
        Parallelism {
            pool: None,
            cutoff: usize::MAX,
            escaped_panics: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A dedicated pool of `threads` threads named `spanflow-par-<i>`, used for
    /// batches of at least `cutoff` spans.
    ///
    /// # Errors
    ///
    /// [`ProcessorConfigError::Invalid`] if `threads` is zero or the pool cannot be
    /// built (the OS refused a thread).
    pub fn new(threads: usize, cutoff: usize) -> Result<Self, ProcessorConfigError> {
        if threads == 0 {
            return Err(ProcessorConfigError::invalid(
                "parallelism",
                "threads must be at least 1",
            ));
        }
        let escaped_panics = Arc::new(AtomicU64::new(0));
        let pool = Pool::build(threads, Arc::clone(&escaped_panics))?;
        Ok(Parallelism {
            pool: Some(Arc::new(pool)),
            cutoff: cutoff.max(1),
            escaped_panics,
        })
    }

    /// The process-wide default: one shared pool with a thread per available
    /// core, and [`DEFAULT_PARALLEL_CUTOFF`]. Built on first use; falls back to
    /// sequential if the pool cannot be built, and is sequential without the
    /// `rayon` cargo feature.
    pub fn shared() -> Self {
        if !cfg!(feature = "rayon") {
            return Parallelism::sequential();
        }
        static SHARED: OnceLock<Parallelism> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                Parallelism::new(threads, DEFAULT_PARALLEL_CUTOFF).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "no rayon pool; processing sequentially");
                    Parallelism::sequential()
                })
            })
            .clone()
    }

    /// Threads in the pool (1 when sequential).
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// Batches with at least this many spans are split over the pool.
    pub fn cutoff(&self) -> usize {
        self.cutoff
    }

    /// Panics that reached the pool's panic handler (none should: the chain
    /// catches processor panics itself).
    pub fn escaped_panics(&self) -> u64 {
        self.escaped_panics.load(Ordering::Relaxed)
    }

    /// Whether a batch of `spans` spans would be split over the pool.
    pub fn is_parallel_for(&self, spans: usize) -> bool {
        self.pool.is_some() && spans >= self.cutoff
    }

    /// Runs `op` on the pool (so nested rayon calls use it), or inline when
    /// sequential.
    pub fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(op),
            None => op(),
        }
    }

    /// Calls `f(first_index, chunk)` over `out` (typically one entry per span
    /// of a batch): in chunks on the pool when `out` is at least the cutoff,
    /// else once on the calling thread with the whole slice.
    pub fn for_each_chunk<T, F>(&self, out: &mut [T], f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Sync,
    {
        match &self.pool {
            Some(pool) if out.len() >= self.cutoff => pool.for_each_chunk(out, f),
            _ => f(0, out),
        }
    }
}

/// The rayon pool behind [`Parallelism`].
#[cfg(feature = "rayon")]
#[derive(Debug)]
struct Pool(rayon::ThreadPool);

#[cfg(feature = "rayon")]
impl Pool {
    /// A pool of `threads` threads named `spanflow-par-<i>` whose escaped panics are logged and
    /// counted in `escaped_panics`.
    fn build(threads: usize, escaped_panics: Arc<AtomicU64>) -> Result<Self, ProcessorConfigError> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("spanflow-par-{i}"))
            .panic_handler(move |payload| {
                escaped_panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    panic = %crate::error::panic_message(payload.as_ref()),
                    "panic escaped a spanflow-process rayon task"
                );
            })
            .build()
            .map(Pool)
            .map_err(|e| {
                ProcessorConfigError::invalid("parallelism", format!("cannot build pool: {e}"))
            })
    }

    fn current_num_threads(&self) -> usize {
        self.0.current_num_threads()
    }

    fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        self.0.install(op)
    }

    fn for_each_chunk<T, F>(&self, out: &mut [T], f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Sync,
    {
        self.0.install(|| {
            out.par_chunks_mut(CHUNK_SPANS)
                .enumerate()
                .for_each(|(i, chunk)| f(i * CHUNK_SPANS, chunk));
        });
    }
}

/// Without the `rayon` feature there is no pool: this type has no values.
#[cfg(not(feature = "rayon"))]
#[derive(Debug)]
enum Pool {}

#[cfg(not(feature = "rayon"))]
impl Pool {
    fn build(
        _threads: usize,
        _escaped_panics: Arc<AtomicU64>,
    ) -> Result<Self, ProcessorConfigError> {
        Err(ProcessorConfigError::FeatureDisabled {
            what: "a parallelism pool (Parallelism::new)",
            feature: "rayon",
        })
    }

    fn current_num_threads(&self) -> usize {
        match *self {}
    }

    fn install<R: Send>(&self, _op: impl FnOnce() -> R + Send) -> R {
        match *self {}
    }

    fn for_each_chunk<T, F>(&self, _out: &mut [T], _f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Sync,
    {
        match *self {}
    }
}
