//! [`Chain`]: processors applied in order, with panic isolation and counts.

use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use spanflow_otlp::TraceRequest;

use crate::attributes::AttributesProcessor;
use crate::config::ProcessorConfig;
use crate::error::{ProcessError, ProcessorConfigError, panic_message};
use crate::filter::Filter;
use crate::processor::{Context, Parallelism, Processor, SpanPredicate};
use crate::redact::Redact;
use crate::sampler::ProbabilisticSampler;
use crate::span_stats::SpanStats;
use crate::wire_edit::{Edits, SpanPlan, apply_plans};

/// Processors applied in order to each batch.
///
/// A chain is `Send + Sync`: one chain serves every thread of a
/// [`Scheduler`](crate::Scheduler), processing many batches at once. A
/// processor that panics or fails costs only the batch it was processing:
/// [`Chain::process`] returns [`ProcessError`], the panic is logged with the
/// processor's name and counted in [`Chain::stats`], and the next batch is
/// processed normally.
///
/// Consecutive keep/drop processors ([`Filter`](crate::Filter),
/// [`ProbabilisticSampler`](crate::ProbabilisticSampler), anything exposing
/// [`Processor::as_predicate`]) are evaluated in one pass with one
/// keep-mask, so a chain copies the batch once per group, not once per
/// processor; a batch nothing touches is passed on as is (byte-identical).
///
/// ```
/// use spanflow_otlp::TraceRequest;
/// use spanflow_process::{Chain, ProcessorConfig};
///
/// let config: Vec<ProcessorConfig> = serde_json::from_str(r#"[
///     {"type": "filter", "span_names": ["GET /health"]},
///     {"type": "probabilistic_sampler", "ratio": 0.25}
/// ]"#)?;
/// let chain = Chain::from_config(&config)?;
/// let out = chain.process(TraceRequest::empty())?;
/// assert_eq!(out.span_count(), 0);
/// assert_eq!(chain.stats().batches, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Chain {
    processors: Vec<Box<dyn Processor>>,
    /// For built-in attribute editors, a copy the chain can fuse into a
    /// single rewrite with neighbouring keep/drop steps.
    editors: Vec<Option<Editor>>,
    steps: Vec<Step>,
    parallelism: Parallelism,
    span_stats: Vec<SpanStats>,
    counters: Counters,
}

#[derive(Debug)]
enum Step {
    One(usize),
    Predicates(Vec<usize>),
    /// Keep/drop rules, one attribute editor, then keep/drop rules that do
    /// not read attributes: one pass, one rewrite.
    Fused {
        before: Vec<usize>,
        editor: usize,
        after: Vec<usize>,
    },
}

/// A built-in processor whose work is a per-span attribute plan.
#[derive(Debug, Clone)]
enum Editor {
    Attributes(AttributesProcessor),
    Redact(Redact),
}

impl Editor {
    fn of<P: Processor + 'static>(p: &P) -> Option<Editor> {
        let any: &dyn std::any::Any = p;
        if let Some(a) = any.downcast_ref::<AttributesProcessor>() {
            Some(Editor::Attributes(a.clone()))
        } else {
            any.downcast_ref::<Redact>()
                .map(|r| Editor::Redact(r.clone()))
        }
    }

    fn resource_plans<'a>(&'a self, batch: &'a TraceRequest) -> Vec<Edits<'a>> {
        match self {
            Editor::Attributes(a) => a.resource_plans(batch),
            Editor::Redact(_) => Vec::new(),
        }
    }

    /// The span's attribute edits, and whether it needs [`finish`](Self::finish).
    fn span_plan<'a>(
        &'a self,
        span: &spanflow_otlp::SpanView<'a>,
        tally: &mut [u64; 3],
    ) -> (Edits<'a>, bool) {
        match self {
            Editor::Attributes(a) => (a.span_plan(span), false),
            Editor::Redact(r) => r.span_plan(span, tally),
        }
    }

    /// Work left after the fused rewrite, on spans `todo` (indices in the
    /// rewritten batch): Redact masks their event and link attributes.
    fn finish(&self, batch: TraceRequest, todo: &[usize]) -> TraceRequest {
        match self {
            Editor::Redact(r) if !todo.is_empty() => r.mask_events(batch, todo),
            _ => batch,
        }
    }

    fn commit(&self, tally: [u64; 3]) {
        if let Editor::Redact(r) = self {
            r.add_counts(tally);
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    batches: CachePadded<AtomicU64>,
    failed: CachePadded<AtomicU64>,
    spans_in: CachePadded<AtomicU64>,
    spans_out: CachePadded<AtomicU64>,
    /// One per processor, same order.
    panics: Box<[AtomicU64]>,
    failures: Box<[AtomicU64]>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("processors", &self.names().collect::<Vec<_>>())
            .field("steps", &self.steps)
            .field("parallelism", &self.parallelism)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Chain`] from processors made in code.
///
/// ```
/// use spanflow_process::{Chain, Filter, FilterConfig, MatchType, Parallelism, ProbabilisticSampler};
///
/// let chain = Chain::builder()
///     .processor(Filter::from_config(&FilterConfig::drop().span_names(MatchType::Exact, ["ping"]))?)
///     .processor(ProbabilisticSampler::new(0.1)?)
///     .parallelism(Parallelism::sequential())
///     .build()?;
/// assert_eq!(chain.names().collect::<Vec<_>>(), ["filter", "probabilistic_sampler"]);
/// # Ok::<(), spanflow_process::ProcessorConfigError>(())
/// ```
#[must_use]
pub struct ChainBuilder {
    processors: Vec<Box<dyn Processor>>,
    editors: Vec<Option<Editor>>,
    parallelism: Option<Parallelism>,
    span_stats: Vec<SpanStats>,
}

impl fmt::Debug for ChainBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainBuilder")
            .field(
                "processors",
                &self.processors.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ChainBuilder {
    /// Appends a processor.
    pub fn processor<P: Processor + 'static>(mut self, p: P) -> Self {
        self.editors.push(Editor::of(&p));
        if let Some(stats) = (&p as &dyn std::any::Any).downcast_ref::<SpanStats>() {
            self.span_stats.push(stats.clone());
        }
        self.processors.push(Box::new(p));
        self
    }

    /// Appends a boxed processor.
    pub fn boxed(mut self, p: Box<dyn Processor>) -> Self {
        self.editors.push(None);
        self.processors.push(p);
        self
    }

    /// Appends a [`SpanStats`] (remembered for [`Chain::span_stats`], as any
    /// `SpanStats` given to [`ChainBuilder::processor`] is).
    pub fn span_stats(self, stats: SpanStats) -> Self {
        self.processor(stats)
    }

    /// The data parallelism inside large batches; default
    /// [`Parallelism::shared`].
    pub fn parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = Some(parallelism);
        self
    }

    /// Builds the chain.
    ///
    /// # Errors
    ///
    /// [`ProcessorConfigError::DuplicateName`] if two processors share a name.
    pub fn build(self) -> Result<Chain, ProcessorConfigError> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.processors {
            if !seen.insert(p.name()) {
                return Err(ProcessorConfigError::DuplicateName(p.name().to_owned()));
            }
        }
        let mut steps: Vec<Step> = Vec::new();
        for (i, p) in self.processors.iter().enumerate() {
            let pred = p.as_predicate();
            let editor = self.editors[i].is_some();
            match (pred, editor, steps.last_mut()) {
                (Some(_), _, Some(Step::Predicates(group))) => group.push(i),
                (Some(pr), _, Some(Step::Fused { after, .. })) if !pr.reads_attributes() => {
                    after.push(i);
                }
                (Some(_), _, _) => steps.push(Step::Predicates(vec![i])),
                (None, true, Some(Step::Predicates(_))) => {
                    if let Some(Step::Predicates(before)) = steps.pop() {
                        steps.push(Step::Fused {
                            before,
                            editor: i,
                            after: Vec::new(),
                        });
                    }
                }
                (None, true, _) => steps.push(Step::Fused {
                    before: Vec::new(),
                    editor: i,
                    after: Vec::new(),
                }),
                (None, false, _) => steps.push(Step::One(i)),
            }
        }
        let n = self.processors.len();
        Ok(Chain {
            counters: Counters {
                panics: (0..n).map(|_| AtomicU64::new(0)).collect(),
                failures: (0..n).map(|_| AtomicU64::new(0)).collect(),
                ..Counters::default()
            },
            processors: self.processors,
            editors: self.editors,
            steps,
            parallelism: self.parallelism.unwrap_or_else(Parallelism::shared),
            span_stats: self.span_stats,
        })
    }
}

impl Chain {
    /// An empty builder.
    pub fn builder() -> ChainBuilder {
        ChainBuilder {
            processors: Vec::new(),
            editors: Vec::new(),
            parallelism: None,
            span_stats: Vec::new(),
        }
    }

    /// Builds a chain from configuration, in order, with
    /// [`Parallelism::shared`]. Unnamed processors are named after their
    /// type (`filter`, `attributes`, …), with `#<position>` appended when the
    /// type occurs more than once.
    ///
    /// # Errors
    ///
    /// The first [`ProcessorConfigError`] of any processor, or
    /// [`ProcessorConfigError::DuplicateName`].
    pub fn from_config(configs: &[ProcessorConfig]) -> Result<Chain, ProcessorConfigError> {
        Self::builder_from_config(configs)?.build()
    }

    /// Like [`Chain::from_config`] but returns the builder, so the caller can
    /// set the parallelism or append processors.
    ///
    /// # Errors
    ///
    /// The first [`ProcessorConfigError`] of any processor.
    pub fn builder_from_config(
        configs: &[ProcessorConfig],
    ) -> Result<ChainBuilder, ProcessorConfigError> {
        let mut builder = Chain::builder();
        for (i, config) in configs.iter().enumerate() {
            let mut config = config.clone();
            if config.name().is_none() {
                let kind = config.kind();
                let repeated = configs
                    .iter()
                    .filter(|c| c.name().is_none() && c.kind() == kind)
                    .count()
                    > 1;
                config.set_name(if repeated {
                    format!("{kind}#{i}")
                } else {
                    kind.to_owned()
                });
            }
            builder = match &config {
                ProcessorConfig::Filter(c) => builder.processor(Filter::from_config(c)?),
                ProcessorConfig::Attributes(c) => {
                    builder.processor(AttributesProcessor::from_config(c)?)
                }
                ProcessorConfig::Redact(c) => builder.processor(Redact::from_config(c)?),
                ProcessorConfig::ProbabilisticSampler(c) => {
                    builder.processor(ProbabilisticSampler::from_config(c)?)
                }
                ProcessorConfig::SpanStats(c) => builder.processor(SpanStats::from_config(c)?),
            };
        }
        Ok(builder)
    }

    /// Processor names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.processors.iter().map(|p| p.name())
    }

    /// The [`SpanStats`] processors of this chain, by name, to read snapshots.
    pub fn span_stats(&self, name: &str) -> Option<&SpanStats> {
        self.span_stats.iter().find(|s| s.name() == name)
    }

    /// The chain's data parallelism.
    pub fn parallelism(&self) -> &Parallelism {
        &self.parallelism
    }

    /// Runs the batch through every processor, on the calling thread (and the
    /// rayon pool for batches above the parallel cutoff).
    ///
    /// # Errors
    ///
    /// [`ProcessError`] if a processor panicked or failed; the batch is lost.
    pub fn process(&self, batch: TraceRequest) -> Result<TraceRequest, ProcessError> {
        let spans_in = batch.span_count() as u64;
        // Relaxed: statistics only, read by `stats` without ordering needs.
        self.counters
            .spans_in
            .fetch_add(spans_in, Ordering::Relaxed);
        match self.run(batch) {
            Ok(out) => {
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .spans_out
                    .fetch_add(out.span_count() as u64, Ordering::Relaxed);
                Ok(out)
            }
            Err((index, e)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let per = match e {
                    ProcessError::Panicked { .. } => &self.counters.panics,
                    _ => &self.counters.failures,
                };
                per[index].fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    processor = e.processor(),
                    spans = spans_in,
                    error = %e,
                    "batch dropped"
                );
                Err(e)
            }
        }
    }

    fn run(&self, mut batch: TraceRequest) -> Result<TraceRequest, (usize, ProcessError)> {
        let cx = Context::new(&self.parallelism);
        for step in &self.steps {
            batch = match step {
                Step::One(i) => {
                    let p = &self.processors[*i];
                    match catch_unwind(AssertUnwindSafe(|| p.process(batch, &cx))) {
                        Ok(Ok(out)) => out,
                        Ok(Err(e)) => return Err((*i, e)),
                        Err(payload) => {
                            return Err((
                                *i,
                                ProcessError::Panicked {
                                    processor: p.name().to_owned(),
                                    message: panic_message(payload.as_ref()),
                                },
                            ));
                        }
                    }
                }
                // Rule and editor panics are caught and attributed inside;
                // this catches the rest (building the output batch) and
                // blames the step's editor, or its first rule.
                Step::Predicates(group) => {
                    self.guarded(group[0], || self.run_predicates(batch, group))?
                }
                Step::Fused {
                    before,
                    editor,
                    after,
                } => self.guarded(*editor, || self.run_fused(batch, before, *editor, after))?,
            };
        }
        Ok(batch)
    }

    fn guarded(
        &self,
        blame: usize,
        step: impl FnOnce() -> Result<TraceRequest, (usize, ProcessError)>,
    ) -> Result<TraceRequest, (usize, ProcessError)> {
        catch_unwind(AssertUnwindSafe(step)).unwrap_or_else(|payload| {
            Err((
                blame,
                ProcessError::Panicked {
                    processor: self.processors[blame].name().to_owned(),
                    message: panic_message(payload.as_ref()),
                },
            ))
        })
    }

    /// Evaluates a group of predicates in one pass over the batch.
    fn run_predicates(
        &self,
        batch: TraceRequest,
        group: &[usize],
    ) -> Result<TraceRequest, (usize, ProcessError)> {
        let n = batch.span_count();
        if n == 0 {
            return Ok(batch);
        }
        let preds: Vec<&dyn SpanPredicate> = group
            .iter()
            .filter_map(|&i| self.processors[i].as_predicate())
            .collect();
        let panicked: Mutex<Option<(usize, String)>> = Mutex::new(None);
        let mut mask = vec![false; n];
        self.parallelism.for_each_chunk(&mut mask, |first, chunk| {
            let current = Cell::new(0usize);
            let result = catch_unwind(AssertUnwindSafe(|| {
                for (offset, slot) in chunk.iter_mut().enumerate() {
                    let Some(span) = batch.span(first + offset) else {
                        continue;
                    };
                    let head = span.head();
                    let mut keep = true;
                    for (k, pred) in preds.iter().enumerate() {
                        current.set(k);
                        if !pred.keep(&span, &head) {
                            keep = false;
                            break;
                        }
                    }
                    *slot = keep;
                }
            }));
            if let Err(payload) = result {
                panicked
                    .lock()
                    .get_or_insert((current.get(), panic_message(payload.as_ref())));
            }
        });
        if let Some((k, message)) = panicked.into_inner() {
            let i = group[k];
            return Err((
                i,
                ProcessError::Panicked {
                    processor: self.processors[i].name().to_owned(),
                    message,
                },
            ));
        }
        if mask.iter().all(|k| *k) {
            Ok(batch)
        } else {
            Ok(batch.select(&mask))
        }
    }

    /// Evaluates keep/drop rules and one attribute editor in one pass over the
    /// batch, then drops and edits in one rewrite.
    fn run_fused(
        &self,
        batch: TraceRequest,
        before: &[usize],
        editor_index: usize,
        after: &[usize],
    ) -> Result<TraceRequest, (usize, ProcessError)> {
        let n = batch.span_count();
        let Some(editor) = self.editors.get(editor_index).and_then(Option::as_ref) else {
            return Ok(batch);
        };
        if n == 0 {
            return Ok(batch);
        }
        let panicked_in = |i: usize, payload: &(dyn std::any::Any + Send)| {
            (
                i,
                ProcessError::Panicked {
                    processor: self.processors[i].name().to_owned(),
                    message: panic_message(payload),
                },
            )
        };
        let preds = |group: &[usize]| -> Vec<(usize, &dyn SpanPredicate)> {
            group
                .iter()
                .filter_map(|&i| self.processors[i].as_predicate().map(|p| (i, p)))
                .collect()
        };
        let (before, after) = (preds(before), preds(after));
        let stateless = matches!(editor, Editor::Attributes(_));
        let resource_edits = catch_unwind(AssertUnwindSafe(|| editor.resource_plans(&batch)))
            .map_err(|payload| panicked_in(editor_index, payload.as_ref()))?;
        let mut plans: Vec<SpanPlan<'_>> = Vec::new();
        plans.resize_with(n, SpanPlan::default);
        let tally = Mutex::new([0u64; 3]);
        let panicked: Mutex<Option<(usize, String)>> = Mutex::new(None);
        self.parallelism.for_each_chunk(&mut plans, |first, chunk| {
            let current = Cell::new(editor_index);
            let result = catch_unwind(AssertUnwindSafe(|| {
                let mut local = [0u64; 3];
                for (offset, plan) in chunk.iter_mut().enumerate() {
                    let Some(span) = batch.span(first + offset) else {
                        continue;
                    };
                    let head = span.head();
                    let keep_all = |rules: &[(usize, &dyn SpanPredicate)]| {
                        rules.iter().all(|&(i, p)| {
                            current.set(i);
                            p.keep(&span, &head)
                        })
                    };
                    if !keep_all(&before) {
                        continue;
                    }
                    if stateless {
                        // The later rules ignore attributes and the editor
                        // keeps no counts: skip planning edits for spans
                        // about to be dropped.
                        if !keep_all(&after) {
                            continue;
                        }
                        current.set(editor_index);
                        (plan.edits, plan.decode) = editor.span_plan(&span, &mut local);
                        plan.keep = true;
                    } else {
                        current.set(editor_index);
                        (plan.edits, plan.decode) = editor.span_plan(&span, &mut local);
                        plan.keep = keep_all(&after);
                    }
                }
                local
            }));
            match result {
                Ok(local) => {
                    let mut tally = tally.lock();
                    for (t, n) in tally.iter_mut().zip(local) {
                        *t += n;
                    }
                }
                Err(payload) => {
                    panicked
                        .lock()
                        .get_or_insert((current.get(), panic_message(payload.as_ref())));
                }
            }
        });
        if let Some((i, message)) = panicked.into_inner() {
            return Err((
                i,
                ProcessError::Panicked {
                    processor: self.processors[i].name().to_owned(),
                    message,
                },
            ));
        }
        let out = apply_plans(&batch, &plans, &resource_edits);
        // Where the spans to decode land once the dropped ones are gone.
        let todo: Vec<usize> = plans
            .iter()
            .filter(|p| p.keep)
            .enumerate()
            .filter_map(|(k, p)| p.decode.then_some(k))
            .collect();
        let out = catch_unwind(AssertUnwindSafe(|| editor.finish(out, &todo)))
            .map_err(|payload| panicked_in(editor_index, payload.as_ref()))?;
        editor.commit(tally.into_inner());
        Ok(out)
    }

    /// Counts so far.
    pub fn stats(&self) -> ChainStats {
        let c = &self.counters;
        let per = |v: &[AtomicU64]| {
            self.processors
                .iter()
                .zip(v)
                .map(|(p, n)| (p.name().to_owned(), n.load(Ordering::Relaxed)))
                .collect()
        };
        ChainStats {
            batches: c.batches.load(Ordering::Relaxed),
            failed_batches: c.failed.load(Ordering::Relaxed),
            spans_in: c.spans_in.load(Ordering::Relaxed),
            spans_out: c.spans_out.load(Ordering::Relaxed),
            panics: per(&c.panics),
            failures: per(&c.failures),
        }
    }
}

/// A snapshot of a chain's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainStats {
    /// Batches processed successfully.
    pub batches: u64,
    /// Batches dropped because a processor panicked or failed.
    pub failed_batches: u64,
    /// Spans that entered the chain (including those of failed batches).
    pub spans_in: u64,
    /// Spans that left the chain in successful batches.
    pub spans_out: u64,
    /// Panics per processor name, in chain order.
    pub panics: Vec<(String, u64)>,
    /// Non-panic failures per processor name, in chain order.
    pub failures: Vec<(String, u64)>,
}

impl ChainStats {
    /// Total panics over all processors.
    pub fn total_panics(&self) -> u64 {
        self.panics.iter().map(|(_, n)| n).sum()
    }

    /// Panics of the processor called `name` (0 if unknown).
    pub fn panics_of(&self, name: &str) -> u64 {
        self.panics
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| *c)
    }
}
