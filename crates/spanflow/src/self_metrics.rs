//! Self-metrics: the pipeline's books as OpenTelemetry instruments, for
//! [`crate::PipelineBuilder::meter`].
//!
//! Every instrument is asynchronous: its callback reads [`Shared::stats`] — the same snapshot
//! `Pipeline::stats` returns, built from the counters that already exist (the books, the
//! intakes, the fan-out's settlement and per-backend stats) — when the user's metric reader
//! collects. Nothing is counted a second time, and the hot path does no metrics work at all.
//!
//! The callbacks hold a [`Weak`] reference: a meter provider that outlives the pipeline never
//! keeps it (its runtime, threads and memory) alive; once the pipeline is gone they observe
//! nothing. After shutdown, while a handle is left, they report the final books.

use std::sync::{Arc, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter, ObservableCounter, ObservableUpDownCounter};

use crate::stats::PipelineStats;
use crate::workers::Shared;

/// The attribute naming why spans were dropped, refused or failed.
pub(crate) const REASON: &str = "spanflow.reason";
/// The attribute naming the backend of per-backend instruments.
pub(crate) const BACKEND: &str = "spanflow.backend";

/// The registered instruments, kept for the pipeline's life (dropping them does not unregister
/// their callbacks in opentelemetry 0.33, but a later API may tie the two together).
#[derive(Debug)]
pub(crate) struct SelfMetrics {
    _up_down: Vec<ObservableUpDownCounter<i64>>,
    _counters: Vec<ObservableCounter<u64>>,
    _seconds: ObservableCounter<f64>,
}

/// Wraps `observe` into a callback that takes one snapshot of the books per call, or observes
/// nothing once the pipeline is gone. Every observation gets `extra` after its own attributes.
fn reading<T: 'static>(
    shared: &Weak<Shared>,
    extra: &Arc<[KeyValue]>,
    observe: impl Fn(&PipelineStats, &dyn AsyncInstrument<T>) + Send + Sync + 'static,
) -> impl Fn(&dyn AsyncInstrument<T>) + Send + Sync + 'static {
    let shared = Weak::clone(shared);
    let extra = Arc::clone(extra);
    move |instrument| {
        let Some(pipeline) = shared.upgrade() else {
            return;
        };
        let stats = pipeline.stats();
        // Not held while observing: the SDK's aggregation is not the pipeline's business.
        drop(pipeline);
        if extra.is_empty() {
            observe(&stats, instrument);
        } else {
            observe(
                &stats,
                &Tagged {
                    instrument,
                    extra: &extra,
                },
            );
        }
    }
}

/// An instrument that adds the pipeline's own attributes to every observation.
struct Tagged<'a, T> {
    instrument: &'a dyn AsyncInstrument<T>,
    extra: &'a [KeyValue],
}

impl<T> AsyncInstrument<T> for Tagged<'_, T> {
    fn observe(&self, measurement: T, attributes: &[KeyValue]) {
        let all: Vec<KeyValue> = attributes.iter().chain(self.extra).cloned().collect();
        self.instrument.observe(measurement, &all);
    }
}

/// One observation per reason, each with its [`REASON`] attribute.
fn by_reason(instrument: &dyn AsyncInstrument<u64>, reasons: &[(&'static str, u64)]) {
    for &(reason, spans) in reasons {
        instrument.observe(spans, &[KeyValue::new(REASON, reason)]);
    }
}

/// A gauge-like value as the `i64` an up-down counter takes.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl SelfMetrics {
    /// Registers every instrument on `meter`, reading the pipeline behind `shared`; every
    /// observation carries `attributes` too.
    pub(crate) fn register(meter: &Meter, attributes: &[KeyValue], shared: &Arc<Shared>) -> Self {
        let weak = Arc::downgrade(shared);
        let extra: Arc<[KeyValue]> = attributes.into();
        let gauge = |name: &'static str,
                     unit: &'static str,
                     description: &'static str,
                     read: fn(&PipelineStats) -> u64| {
            meter
                .i64_observable_up_down_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(reading(&weak, &extra, move |stats, instrument| {
                    instrument.observe(signed(read(stats)), &[]);
                }))
                .build()
        };
        let up_down = vec![
            gauge(
                "spanflow.queue.spans",
                "{span}",
                "Accepted spans not yet settled: in an intake, being encoded or processed, \
                 waiting for a backend or in flight to it",
                |s| s.queued_spans,
            ),
            gauge(
                "spanflow.memory.usage",
                "By",
                "Bytes the queued spans hold, at every stage, against the memory budget",
                |s| s.memory_used_bytes,
            ),
            gauge(
                "spanflow.memory.limit",
                "By",
                "The memory budget queued spans may hold",
                |s| s.memory_budget_bytes,
            ),
        ];

        let counter =
            |name: &'static str,
             unit: &'static str,
             description: &'static str,
             observe: fn(&PipelineStats, &dyn AsyncInstrument<u64>)| {
                meter
                    .u64_observable_counter(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(reading(&weak, &extra, observe))
                    .build()
            };
        let counters = vec![
            counter(
                "spanflow.spans.exported",
                "{span}",
                "Spans every primary backend (or its fallback) confirmed",
                |s, i| i.observe(s.exported, &[]),
            ),
            counter(
                "spanflow.spans.failed",
                "{span}",
                "Spans a backend certainly did not take, by reason: `rejected` through OTLP \
                 partial success, `error` for an error answer or retries run out",
                |s, i| {
                    by_reason(
                        i,
                        &[
                            ("rejected", s.rejected),
                            ("error", s.failed.saturating_sub(s.rejected)),
                        ],
                    );
                },
            ),
            counter(
                "spanflow.spans.dropped",
                "{span}",
                "Accepted spans discarded, by reason: `processor`, `disabled`, `queue_full`, \
                 `shutdown_deadline`",
                |s, i| {
                    by_reason(
                        i,
                        &[
                            ("processor", s.dropped.processor),
                            ("disabled", s.dropped.disabled),
                            ("queue_full", s.dropped.queue_full),
                            ("shutdown_deadline", s.dropped.shutdown_deadline),
                        ],
                    );
                },
            ),
            counter(
                "spanflow.spans.refused",
                "{span}",
                "Spans the pipeline never took, by reason: `budget_full`, `shut_down`, \
                 `too_large` (SDK spans refused are lost)",
                |s, i| {
                    by_reason(
                        i,
                        &[
                            ("budget_full", s.refused.budget_full),
                            ("shut_down", s.refused.shut_down),
                            ("too_large", s.refused.too_large),
                        ],
                    );
                },
            ),
            counter(
                "spanflow.spans.unconfirmed",
                "{span}",
                "Spans sent without a confirmed answer (attempt timed out, connection broke, \
                 shutdown's deadline): they may or may not have arrived",
                |s, i| i.observe(s.unconfirmed, &[]),
            ),
            counter(
                "spanflow.export.retries",
                "{retry}",
                "Export attempts that were retries, per backend",
                |s, i| {
                    for backend in &s.backends {
                        i.observe(
                            backend.retries,
                            &[KeyValue::new(BACKEND, backend.name.clone())],
                        );
                    }
                },
            ),
            counter(
                "spanflow.export.attempts",
                "{attempt}",
                "Export attempts that finished, per backend (with spanflow.export.time: the \
                 mean attempt latency over any window)",
                |s, i| {
                    for backend in &s.backends {
                        i.observe(
                            backend.latency.count(),
                            &[KeyValue::new(BACKEND, backend.name.clone())],
                        );
                    }
                },
            ),
        ];

        let seconds = meter
            .f64_observable_counter("spanflow.export.time")
            .with_unit("s")
            .with_description(
                "Time spent in finished export attempts, per backend; divided by the increase \
                 of spanflow.export.attempts it is the mean export latency",
            )
            .with_callback(reading(&weak, &extra, |stats, instrument| {
                for backend in &stats.backends {
                    let seconds = backend.latency.sum_micros as f64 / 1e6;
                    instrument.observe(seconds, &[KeyValue::new(BACKEND, backend.name.clone())]);
                }
            }))
            .build();

        Self {
            _up_down: up_down,
            _counters: counters,
            _seconds: seconds,
        }
    }
}
