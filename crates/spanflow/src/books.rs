//! The books: where every span count and the memory budget are kept, and the one function that
//! turns them into a [`PipelineStats`].
//!
//! Each counter lives where the event happens, once:
//!
//! | count | kept by |
//! |---|---|
//! | SDK spans accepted, refused as closed or too large | the span intake (`spanflow-batch` [`Stats`]) |
//! | SDK spans given up on while the budget stayed full | [`Books::sdk_budget_full`] |
//! | request spans accepted / refused, by reason | [`Books::request_accepted`] / [`Books::request_refused`] |
//! | spans removed by processors or lost with a failed chain | [`Books::processor_dropped`] |
//! | spans discarded because export is disabled by the environment | [`Books::disabled_dropped`] |
//! | spans handed to the fan-out / refused by a closed fan-out | [`Books::handed_off`] / [`Books::export_closed`] |
//! | exported, rejected, failed, dropped by a queue policy or the deadline, unconfirmed | the fan-out's settlement (`spanflow-export` [`Settled`]) |
//! | bytes held at every stage | the shared [`Budget`] (credits travel with the data) |
//!
//! `queued` is never counted: it is `accepted` minus everything settled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use spanflow_batch::{Budget, Stats};
use spanflow_export::{FanOut, Settled};

use crate::stats::{DroppedSpans, PipelineStats, RefusedSpans};

/// Why a submitted request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    BudgetFull,
    ShutDown,
    TooLarge,
}

/// The pipeline's own counters and its memory budget. Relaxed counters: each event is counted
/// once, and exact reads happen after `flush`/`shutdown`, whose own synchronisation orders them.
#[derive(Debug)]
pub(crate) struct Books {
    budget: Arc<Budget>,
    requests_accepted: AtomicU64,
    requests_refused: [AtomicU64; 3],
    sdk_budget_full: AtomicU64,
    processor_dropped: AtomicU64,
    disabled_dropped: AtomicU64,
    handed_off: AtomicU64,
    export_closed: AtomicU64,
    /// Durable mode: spans whose batches the spool holds (appended by this run).
    appended: AtomicU64,
    /// Durable mode: spans of batches the spool could not take at all (larger than a segment).
    append_refused: AtomicU64,
    /// Durable mode: appends started and finished (successfully or not).
    appends_started: AtomicU64,
    appends_finished: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    // Relaxed: see the type's comment.
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Books {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self {
            budget,
            requests_accepted: AtomicU64::new(0),
            requests_refused: Default::default(),
            sdk_budget_full: AtomicU64::new(0),
            processor_dropped: AtomicU64::new(0),
            disabled_dropped: AtomicU64::new(0),
            handed_off: AtomicU64::new(0),
            export_closed: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            append_refused: AtomicU64::new(0),
            appends_started: AtomicU64::new(0),
            appends_finished: AtomicU64::new(0),
        }
    }

    /// Durable mode: an append of a batch began (its spans count as handed off).
    pub(crate) fn append_started(&self) {
        add(&self.appends_started, 1);
    }

    /// Durable mode: an append ended; `appended` spans are now in the spool, `refused` spans
    /// could never be written (the batch is larger than a segment).
    pub(crate) fn append_finished(&self, appended: u64, refused: u64) {
        add(&self.appended, appended);
        add(&self.append_refused, refused);
        add(&self.appends_finished, 1);
    }

    /// Appends started so far.
    pub(crate) fn appends_started(&self) -> u64 {
        get(&self.appends_started)
    }

    /// Appends finished so far.
    pub(crate) fn appends_finished(&self) -> u64 {
        get(&self.appends_finished)
    }

    /// Durable mode: spans the spool holds for the next start at shutdown: appended or
    /// recovered by this run and not settled.
    pub(crate) fn carried(&self, fanout: &FanOut) -> u64 {
        (get(&self.appended) + fanout.recovered_spans()).saturating_sub(fanout.settled().spans)
    }

    /// A submitted request's spans, counted before the request enters the intake so that a
    /// flush racing with it never misses them; [`Self::request_refused`] takes them back.
    pub(crate) fn request_accepted(&self, spans: u64) {
        add(&self.requests_accepted, spans);
    }

    /// A submitted request counted by [`Self::request_accepted`] was refused after all.
    pub(crate) fn request_refused(&self, spans: u64, why: Refusal) {
        // Relaxed: as `add`; the counter only ever goes back by what it was given.
        self.requests_accepted.fetch_sub(spans, Ordering::Relaxed);
        add(&self.requests_refused[why as usize], spans);
    }

    /// An SDK span given up on because the budget stayed full.
    pub(crate) fn sdk_budget_full(&self) {
        add(&self.sdk_budget_full, 1);
    }

    /// Spans a processor removed, or lost with a batch the chain failed on.
    pub(crate) fn processor_dropped(&self, spans: u64) {
        add(&self.processor_dropped, spans);
    }

    /// Spans discarded because export is disabled (`OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`).
    pub(crate) fn disabled_dropped(&self, spans: u64) {
        add(&self.disabled_dropped, spans);
    }

    /// Spans handed to the fan-out, which will settle them.
    pub(crate) fn handed_off(&self, spans: u64) {
        add(&self.handed_off, spans);
    }

    /// Spans the fan-out refused because it had already shut down.
    pub(crate) fn export_closed(&self, spans: u64) {
        add(&self.export_closed, spans);
    }

    /// Spans accepted so far, given the span intake's stats.
    pub(crate) fn accepted(&self, spans: &Stats) -> u64 {
        spans.accepted + get(&self.requests_accepted)
    }

    /// Spans that left the worker threads: to the fan-out, to a processor's drop, discarded by
    /// a disabled pipeline, or refused by a closed fan-out. A flush waits for this to reach what was accepted before it.
    pub(crate) fn left_workers(&self) -> u64 {
        get(&self.handed_off)
            + get(&self.processor_dropped)
            + get(&self.disabled_dropped)
            + get(&self.export_closed)
    }

    /// The books now. `settled` is read first and `spans` (the intake) after it: every span
    /// settled was accepted before, so `queued` cannot come out negative from the order of
    /// the reads.
    pub(crate) fn snapshot(&self, fanout: &FanOut, spans: impl FnOnce() -> Stats) -> PipelineStats {
        let settled: Settled = fanout.settled();
        let processor = get(&self.processor_dropped);
        let export_closed = get(&self.export_closed);
        let append_refused = get(&self.append_refused);
        let spans = spans();
        // Durable mode: spans of earlier runs' records count as accepted once picked up.
        let accepted = self.accepted(&spans) + fanout.recovered_spans();
        let sdk_lost = get(&self.sdk_budget_full) + spans.refused.closed + spans.refused.too_large;
        let refused = RefusedSpans {
            budget_full: get(&self.requests_refused[Refusal::BudgetFull as usize])
                + get(&self.sdk_budget_full),
            shut_down: get(&self.requests_refused[Refusal::ShutDown as usize])
                + spans.refused.closed,
            too_large: get(&self.requests_refused[Refusal::TooLarge as usize])
                + spans.refused.too_large,
        };
        let dropped = DroppedSpans {
            processor,
            disabled: get(&self.disabled_dropped),
            queue_full: settled.dropped_queue_full + append_refused,
            // The span intake drops only what its receiver never took (the encoder ended).
            shutdown_deadline: settled.dropped_shutdown + export_closed + spans.dropped(),
        };
        let mut stats = PipelineStats {
            received: accepted + refused.total(),
            accepted,
            refused,
            sdk_spans_lost: sdk_lost,
            exported: settled.exported,
            failed: settled.failed + settled.rejected,
            rejected: settled.rejected,
            dropped,
            unconfirmed: settled.unconfirmed,
            queued_spans: 0,
            memory_used_bytes: self.budget.used_bytes(),
            memory_peak_bytes: self.budget.peak_used_bytes(),
            memory_budget_bytes: self.budget.limit_bytes(),
            retried: 0,
            backends: Vec::new(),
            spool: fanout.spool().map(|spool| spool.stats()),
        };
        stats.queued_spans = accepted.saturating_sub(stats.settled());
        let backends = fanout.stats().backends;
        stats.retried = backends.iter().map(|b| b.retries).sum();
        stats.backends = backends;
        stats
    }
}
