//! The Prometheus text format (0.0.4) of the relay's counters and the pipeline's books.

use std::fmt::Write as _;

use spanflow::PipelineStats;
use spanflow::export::LatencyHistogram;

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Closed, Listener, Outcome, ReceiverProtocol, RelayMetrics, pidx};

impl RelayMetrics {
    /// Renders the relay's and the sink's counters in the Prometheus text format (0.0.4).
    pub fn render(&self, books: &PipelineStats) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            name.to_owned()
        };
        let requests = family(
            "spanflow_relay_requests_total",
            "counter",
            "Export requests received, by protocol and outcome.",
        );
        let mut lines = String::new();
        for p in ReceiverProtocol::ALL {
            for o in Outcome::ALL {
                let _ = writeln!(
                    lines,
                    "{requests}{{protocol=\"{}\",outcome=\"{}\"}} {}",
                    p.label(),
                    o.label(),
                    self.requests_with(p, o)
                );
            }
        }
        out.push_str(&lines);
        lines.clear();
        let simple = write_family;
        let per_proto = |a: &[AtomicU64; 2]| -> Vec<(String, f64)> {
            ReceiverProtocol::ALL
                .iter()
                .map(|p| {
                    (
                        format!("protocol=\"{}\"", p.label()),
                        a[pidx(*p)].load(Ordering::Relaxed) as f64,
                    )
                })
                .collect()
        };
        simple(
            &mut out,
            "spanflow_relay_spans_received_total",
            "counter",
            "Spans received in well-formed requests.",
            &per_proto(&self.spans_received),
        );
        simple(
            &mut out,
            "spanflow_relay_spans_accepted_total",
            "counter",
            "Spans the pipeline accepted.",
            &per_proto(&self.spans_accepted),
        );
        let c = self.counts();
        simple(
            &mut out,
            "spanflow_relay_spans_refused_total",
            "counter",
            "Spans refused at the receiver, by reason (backpressure and closed are retried by clients).",
            &[
                (
                    "reason=\"backpressure\"".into(),
                    c.spans_refused_backpressure as f64,
                ),
                ("reason=\"closed\"".into(), c.spans_refused_closed as f64),
                ("reason=\"invalid\"".into(), c.spans_refused_invalid as f64),
            ],
        );
        let one = |v: u64| vec![(String::new(), v as f64)];
        let labelled = |label: &str, values: &[(&str, u64)]| -> Vec<(String, f64)> {
            values
                .iter()
                .map(|(k, v)| (format!("{label}=\"{}\"", escape(k)), *v as f64))
                .collect()
        };
        simple(
            &mut out,
            "spanflow_pipeline_spans_accepted_total",
            "counter",
            "Spans the pipeline took responsibility for.",
            &one(books.accepted),
        );
        simple(
            &mut out,
            "spanflow_pipeline_spans_exported_total",
            "counter",
            "Accepted spans every primary backend (or its fallback) confirmed.",
            &one(books.exported),
        );
        simple(
            &mut out,
            "spanflow_pipeline_spans_failed_total",
            "counter",
            "Accepted spans a backend certainly did not take (an error answer, a partial-success rejection, or retries exhausted).",
            &one(books.failed),
        );
        simple(
            &mut out,
            "spanflow_pipeline_spans_rejected_total",
            "counter",
            "Of the failed spans, those a backend refused through OTLP partial success.",
            &one(books.rejected),
        );
        simple(
            &mut out,
            "spanflow_pipeline_spans_dropped_total",
            "counter",
            "Accepted spans discarded on purpose, by reason.",
            &labelled(
                "reason",
                &[
                    ("processor", books.dropped.processor),
                    ("disabled", books.dropped.disabled),
                    ("queue_full", books.dropped.queue_full),
                    ("shutdown_deadline", books.dropped.shutdown_deadline),
                ],
            ),
        );
        simple(
            &mut out,
            "spanflow_pipeline_spans_unconfirmed_total",
            "counter",
            "Accepted spans sent without a confirmed answer (timeout, connection lost, shutdown deadline): they may or may not have arrived.",
            &one(books.unconfirmed),
        );
        simple(
            &mut out,
            "spanflow_pipeline_spans_refused_total",
            "counter",
            "Spans the pipeline did not take, by reason (the relay's clients were told to retry).",
            &labelled(
                "reason",
                &[
                    ("budget_full", books.refused.budget_full),
                    ("shut_down", books.refused.shut_down),
                    ("too_large", books.refused.too_large),
                ],
            ),
        );
        simple(
            &mut out,
            "spanflow_pipeline_export_retries_total",
            "counter",
            "Export attempts that were retries.",
            &one(books.retried),
        );
        simple(
            &mut out,
            "spanflow_pipeline_queue_spans",
            "gauge",
            "Accepted spans not yet settled (in an intake, being processed, queued for or in flight to a backend).",
            &one(books.queued_spans),
        );
        simple(
            &mut out,
            "spanflow_pipeline_memory_used_bytes",
            "gauge",
            "Bytes accepted spans hold now, at every stage.",
            &one(books.memory_used_bytes),
        );
        simple(
            &mut out,
            "spanflow_pipeline_memory_peak_bytes",
            "gauge",
            "The most bytes accepted spans ever held at once.",
            &one(books.memory_peak_bytes),
        );
        simple(
            &mut out,
            "spanflow_pipeline_memory_budget_bytes",
            "gauge",
            "The pipeline's memory budget.",
            &one(books.memory_budget_bytes),
        );
        let mut per_backend = Vec::new();
        for b in &books.backends {
            let name = escape(&b.name);
            for (outcome, n) in [
                ("exported", b.accepted_spans),
                ("rejected", b.rejected_spans),
                ("failed", b.failed_spans),
                ("unconfirmed", b.unconfirmed_spans),
                ("dropped", b.dropped_spans),
            ] {
                per_backend.push((
                    format!("backend=\"{name}\",outcome=\"{outcome}\""),
                    n as f64,
                ));
            }
        }
        simple(
            &mut out,
            "spanflow_backend_spans_total",
            "counter",
            "Spans each backend finished with, by outcome (a fallback may still deliver what its primary failed on).",
            &per_backend,
        );
        let queued: Vec<(String, f64)> = books
            .backends
            .iter()
            .map(|b| {
                (
                    format!("backend=\"{}\"", escape(&b.name)),
                    (b.queued + b.in_flight) as f64,
                )
            })
            .collect();
        simple(
            &mut out,
            "spanflow_backend_batches_pending",
            "gauge",
            "Batches queued for or in flight to each backend.",
            &queued,
        );
        if let Some(spool) = &books.spool {
            render_spool(&mut out, spool);
        }
        let in_flight = self.in_flight();
        simple(
            &mut out,
            "spanflow_relay_in_flight_bytes",
            "gauge",
            "Request bytes being read or decoded by the receivers now.",
            &one(in_flight.used),
        );
        simple(
            &mut out,
            "spanflow_relay_in_flight_peak_bytes",
            "gauge",
            "The most request bytes the receivers held at once.",
            &one(in_flight.peak),
        );
        simple(
            &mut out,
            "spanflow_relay_in_flight_limit_bytes",
            "gauge",
            "Request bytes the receivers may hold at once before answering retry later.",
            &one(in_flight.limit),
        );
        let open: Vec<(String, f64)> = Listener::ALL
            .iter()
            .map(|l| {
                (
                    format!("listener=\"{}\"", l.label()),
                    self.connections_open(*l) as f64,
                )
            })
            .collect();
        simple(
            &mut out,
            "spanflow_relay_connections_open",
            "gauge",
            "Connections open now, by listener.",
            &open,
        );
        let closed: Vec<(String, f64)> = Listener::ALL
            .iter()
            .flat_map(|l| {
                Closed::ALL.iter().map(move |c| {
                    (
                        format!("listener=\"{}\",reason=\"{}\"", l.label(), c.label()),
                        self.connections_closed(*l, *c) as f64,
                    )
                })
            })
            .collect();
        simple(
            &mut out,
            "spanflow_relay_connections_closed_total",
            "counter",
            "Connections ended (or refused at the limit), by listener and reason.",
            &closed,
        );
        let k = self.kafka.counts();
        for (name, kind, help, value) in [
            (
                "records_total",
                "counter",
                "Records read from Kafka.",
                k.records,
            ),
            (
                "spans_total",
                "counter",
                "Spans in well-formed Kafka records.",
                k.spans,
            ),
            (
                "spans_accepted_total",
                "counter",
                "Spans from Kafka the pipeline accepted.",
                k.spans_accepted,
            ),
            (
                "records_malformed_total",
                "counter",
                "Kafka records skipped as malformed or too large.",
                k.records_malformed,
            ),
            (
                "commits_total",
                "counter",
                "Offset commits sent (only offsets whose spans are settled).",
                k.commits,
            ),
            (
                "commit_errors_total",
                "counter",
                "Offset commits that failed.",
                k.commit_errors,
            ),
            (
                "pauses_total",
                "counter",
                "Partitions paused because the pipeline's budget was full.",
                k.pauses,
            ),
            (
                "rebalances_total",
                "counter",
                "Partition assignments and revocations.",
                k.rebalances,
            ),
            (
                "partitions",
                "gauge",
                "Partitions this relay owns now.",
                k.partitions,
            ),
            (
                "records_pending",
                "gauge",
                "Records handed to the pipeline whose offsets are not committed yet.",
                k.records_pending,
            ),
        ] {
            simple(
                &mut out,
                &format!("spanflow_relay_kafka_{name}"),
                kind,
                help,
                &one(value),
            );
        }
        let _ = writeln!(
            out,
            "# HELP spanflow_pipeline_export_duration_seconds Time one export attempt took, per backend."
        );
        let _ = writeln!(
            out,
            "# TYPE spanflow_pipeline_export_duration_seconds histogram"
        );
        for b in &books.backends {
            render_latency(&mut out, &escape(&b.name), &b.latency);
        }
        out
    }
}

/// One metric family: its `HELP` and `TYPE` lines and one sample per `(labels, value)`.
fn write_family(out: &mut String, name: &str, kind: &str, help: &str, values: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The disk queue's families: what it holds, each backend's cursor, what start-up recovered,
/// truncated or skipped, and its fsyncs.
fn render_spool(out: &mut String, spool: &spanflow::spool::Stats) {
    let simple = write_family;
    let one = |v: u64| vec![(String::new(), v as f64)];
    let per_reader = |f: &dyn Fn(&spanflow::spool::ReaderStats) -> u64| -> Vec<(String, f64)> {
        spool
            .readers
            .iter()
            .map(|r| (format!("backend=\"{}\"", escape(&r.name)), f(r) as f64))
            .collect()
    };
    simple(
        out,
        "spanflow_queue_bytes",
        "gauge",
        "Bytes of segment files the disk queue holds.",
        &one(spool.bytes_on_disk),
    );
    simple(
        out,
        "spanflow_queue_records",
        "gauge",
        "Records (batches) in the disk queue's segment files.",
        &one(spool.records_on_disk),
    );
    simple(
        out,
        "spanflow_queue_pending_records",
        "gauge",
        "Records each backend has not acknowledged yet (what a restart would send it again).",
        &per_reader(&|r| r.pending_records),
    );
    simple(
        out,
        "spanflow_queue_pending_bytes",
        "gauge",
        "Bytes each backend has not acknowledged yet.",
        &per_reader(&|r| r.pending_bytes),
    );
    simple(
        out,
        "spanflow_queue_replayed_records_total",
        "counter",
        "Records pending for each backend when the queue was opened (replayed after a restart).",
        &per_reader(&|r| r.replayed_at_open),
    );
    simple(
        out,
        "spanflow_queue_dropped_records_total",
        "counter",
        "Records each backend lost because drop_oldest deleted them before it read them.",
        &per_reader(&|r| r.dropped),
    );
    simple(
        out,
        "spanflow_queue_truncated_bytes_total",
        "counter",
        "Bytes of a torn tail cut off at start.",
        &one(spool.recovery.bytes_truncated()),
    );
    simple(
        out,
        "spanflow_queue_corrupt_records_total",
        "counter",
        "Records lost to corruption, found at start or while reading.",
        &one(spool.recovery.corrupt_records() + spool.corrupt_skipped_live),
    );
    simple(
        out,
        "spanflow_queue_appends_total",
        "counter",
        "Records written since start.",
        &one(spool.appended),
    );
    simple(
        out,
        "spanflow_queue_full_total",
        "counter",
        "Writes refused because the disk budget or the disk was full (retried).",
        &one(spool.rejected_full + spool.rejected_disk_full),
    );
    simple(
        out,
        "spanflow_queue_fsyncs_total",
        "counter",
        "Segment fsyncs.",
        &one(spool.fsync.count),
    );
    simple(
        out,
        "spanflow_queue_fsync_seconds_sum",
        "counter",
        "Time spent in segment fsyncs.",
        &[(String::new(), spool.fsync.total.as_secs_f64())],
    );
    simple(
        out,
        "spanflow_queue_fsync_seconds_max",
        "gauge",
        "The longest segment fsync.",
        &[(String::new(), spool.fsync.max.as_secs_f64())],
    );
}

/// One backend's attempt latencies as cumulative Prometheus buckets (the fan-out's log2 buckets,
/// bounded at the exclusive upper bound of each).
fn render_latency(out: &mut String, backend: &str, latency: &LatencyHistogram) {
    let name = "spanflow_pipeline_export_duration_seconds";
    let mut seen = 0;
    for (i, count) in latency.counts.iter().enumerate() {
        seen += count;
        let bound = LatencyHistogram::bucket_upper_bound(i).as_secs_f64();
        if i + 1 < latency.counts.len() {
            let _ = writeln!(
                out,
                "{name}_bucket{{backend=\"{backend}\",le=\"{bound}\"}} {seen}"
            );
        }
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{backend=\"{backend}\",le=\"+Inf\"}} {seen}"
    );
    let _ = writeln!(
        out,
        "{name}_sum{{backend=\"{backend}\"}} {}",
        latency.sum_micros as f64 / 1e6
    );
    let _ = writeln!(out, "{name}_count{{backend=\"{backend}\"}} {seen}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_family_and_counts() {
        let m = RelayMetrics::default();
        m.request(ReceiverProtocol::Grpc, Outcome::Accepted);
        m.received(ReceiverProtocol::Grpc, 10);
        m.accepted(ReceiverProtocol::Grpc, 10);
        m.refused_backpressure(3);
        let stats = PipelineStats {
            dropped: spanflow::DroppedSpans {
                processor: 2,
                ..Default::default()
            },
            exported: 8,
            backends: vec![spanflow::export::BackendStats {
                name: "main".into(),
                role: spanflow::export::Role::Primary,
                received_batches: 1,
                received_spans: 8,
                exported_batches: 1,
                accepted_spans: 8,
                rejected_spans: 0,
                retries: 0,
                failed_batches: 0,
                failed_spans: 0,
                unconfirmed_batches: 0,
                unconfirmed_spans: 0,
                permanent_errors: 0,
                dropped_batches: 0,
                dropped_spans: 0,
                to_fallback_batches: 0,
                queued: 0,
                in_flight: 0,
                latency: spanflow::export::LatencyHistogram {
                    counts: vec![0, 1, 0],
                    sum_micros: 100,
                },
            }],
            ..PipelineStats::default()
        };
        let text = m.render(&stats);
        assert!(
            text.contains(
                "spanflow_relay_requests_total{protocol=\"grpc\",outcome=\"accepted\"} 1"
            )
        );
        assert!(text.contains("spanflow_relay_spans_received_total{protocol=\"grpc\"} 10"));
        assert!(text.contains("spanflow_relay_spans_refused_total{reason=\"backpressure\"} 3"));
        assert!(text.contains("spanflow_pipeline_spans_dropped_total{reason=\"processor\"} 2"));
        assert!(text.contains("spanflow_pipeline_spans_exported_total 8"));
        assert!(text.contains("spanflow_pipeline_memory_used_bytes 0"));
        assert!(
            text.contains("spanflow_backend_spans_total{backend=\"main\",outcome=\"exported\"} 8")
        );
        assert!(text.contains(
            "spanflow_pipeline_export_duration_seconds_bucket{backend=\"main\",le=\"0.000128\"} 1"
        ));
        assert!(
            text.contains("spanflow_pipeline_export_duration_seconds_count{backend=\"main\"} 1")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
