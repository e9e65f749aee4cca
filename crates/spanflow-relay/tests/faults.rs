//! The fault suite: the real `spanflow-relay` binary against a real OTLP/gRPC backend in a
//! separate process that the test kills (SIGKILL), restarts on the same port, stalls
//! (SIGSTOP), slows down or makes reject, then checks the books exactly: every acknowledged
//! span is delivered or counted lost, nothing is counted twice, and the final line balances
//! (`accepted = exported + failed + dropped + unconfirmed + queued`).
//!
//! The backend is this test binary run again as `fault_sink_process` (see `faults/sink.rs`).
//! Heavy scenarios take the [`heavy`] lock so they run one at a time; they still run in every
//! `cargo test`. Each scenario prints a summary (`--nocapture` to see it when it passes).
//!
//! Harness: `SinkProcess::start(dir, Mode, record_bodies)` → `RelayProcess::start(dir,
//! &RelaySpec { toml, shutdown_timeout, args })` → `Load::start(relay.grpc_endpoint(),
//! LoadSpec)` → faults on the sink → `load.stop()` (the client's books) → `relay.terminate()`
//! and `relay.wait_stopped(slack)` (final line, exit time, peak RSS) → `sink.delivered()` →
//! `Verdict::books(...)` plus the scenario's own expectations → `verdict.finish()`.

#[path = "faults/mod.rs"]
mod harness;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tonic::Code;

use harness::books::Verdict;
use harness::client::{
    self, Attempt, Client, ClientBook, Load, LoadSpec, fresh_ids, request, small_runtime, span,
};
use harness::proc::{ScratchDir, heavy};
use harness::relay::{
    self, FAST_RETRY, PATIENT_RETRY, RelayProcess, RelaySpec, check_config, grpc_exporter,
};
use harness::sink::{self, Mode, SinkProcess};

/// Not a scenario: the fault sink's process entry. Run normally it returns at once; run by
/// `SinkProcess` (with `SPANFLOW_FAULT_SINK` set) it serves until killed.
#[test]
fn fault_sink_process() {
    sink::run_from_env();
}

/// The load's spans are the sizes the scenarios name: ~80 B and ~1.1 KB encoded (within a
/// request: the span's bytes plus its field tag and length).
#[test]
fn load_spans_have_the_documented_sizes() {
    let small = span(u64::MAX / 3, 0).encoded_len();
    let large = span(u64::MAX / 3, 1000).encoded_len();
    assert!((70..=90).contains(&small), "small span {small} B");
    assert!((1050..=1150).contains(&large), "large span {large} B");
}

const SECOND: Duration = Duration::from_secs(1);

/// Waits for the relay's exit with a deadline well past its own, so a slow exit is measured
/// and reported instead of cut off.
const EXIT_SLACK: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// 1. Backend killed and restarted under load.

/// 20k spans/s for 9 s; the backend is SIGKILLed after 2 s and restarted on the same port
/// 5 s later. The backend has the default retry (5 s initial backoff, 5 min in all), which
/// bridges the outage: no acknowledged span may be missing.
#[test]
fn backend_killed_and_restarted_under_load_loses_nothing_acknowledged() {
    let _heavy = heavy();
    let dir = ScratchDir::new("kill-restart");
    let mut sink = SinkProcess::start(dir.path(), Mode::Ok, false);
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            toml: grpc_exporter("b", &sink.endpoint(), None),
            shutdown_timeout: Some(60 * SECOND),
            args: vec![],
        },
    );
    let load = Load::start(
        &relay.grpc_endpoint(),
        LoadSpec {
            rate: 20_000,
            concurrency: 8,
            spans_per_request: 100,
            attr_bytes: 0,
        },
    );
    std::thread::sleep(2 * SECOND);
    sink.kill9();
    let killed = load.snapshot().acked.len();
    std::thread::sleep(5 * SECOND);
    sink.restart();
    let restarted = load.snapshot().acked.len();
    std::thread::sleep(2 * SECOND);
    let client = load.stop();
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    let delivered = sink.delivered();

    let mut v = Verdict::new("backend killed and restarted under load");
    v.note(format!(
        "acked before the kill {killed}, during the outage {}",
        restarted - killed
    ));
    let b = v.books(&client, &delivered, &stopped);
    v.expect(b.missing == 0, || {
        format!("{} acknowledged spans never reached the backend", b.missing)
    });
    v.expect(stopped.line.flushed() == Some(true), || {
        "flushed is not true with a 60 s deadline and a live backend".into()
    });
    v.expect(stopped.status.success(), || {
        format!("exit status {:?}", stopped.status)
    });
    v.expect(b.acked > 100_000, || {
        format!("only {} spans acked: the load did not run", b.acked)
    });
    v.finish();
}

// ---------------------------------------------------------------------------------------
// 2. Backend slow.

/// The backend takes 200 ms per answer and 5k spans/s at most, so the relay falls behind a
/// 12k spans/s load of ~1.1 KB spans: the 16 MiB budget fills and clients are told to retry.
/// Nothing acknowledged may be missing, and `/metrics` agrees with the final line.
#[test]
fn slow_backend_pushes_back_and_loses_nothing_acknowledged() {
    let _heavy = heavy();
    let dir = ScratchDir::new("slow");
    let sink = SinkProcess::start(
        dir.path(),
        Mode::Slow {
            delay_ms: 200,
            spans_per_sec: 5_000,
        },
        false,
    );
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            toml: grpc_exporter("b", &sink.endpoint(), Some(PATIENT_RETRY)),
            shutdown_timeout: Some(60 * SECOND),
            args: args(&["--memory-budget", "16MiB"]),
        },
    );
    let load = Load::start(
        &relay.grpc_endpoint(),
        LoadSpec {
            rate: 12_000,
            concurrency: 8,
            spans_per_request: 100,
            attr_bytes: 1000,
        },
    );
    std::thread::sleep(5 * SECOND);
    let client = load.stop();
    let mut v = Verdict::new("slow backend");

    // Drained (bounded), then /metrics must tell the same story as the final line.
    let deadline = Instant::now() + 30 * SECOND;
    let metrics = loop {
        let m = relay.scrape();
        if drained(&m) {
            break m;
        }
        if Instant::now() > deadline {
            v.expect(false, || {
                "the relay did not drain within 30 s of the load's end".into()
            });
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    let delivered = sink.delivered();
    let b = v.books(&client, &delivered, &stopped);
    v.expect(client.retry_answers > 0, || {
        "no client was ever told to retry: the relay queued beyond its budget or dropped".into()
    });
    v.expect(b.missing == 0, || {
        format!("{} acknowledged spans never reached the backend", b.missing)
    });
    v.expect(stopped.line.flushed() == Some(true), || {
        "flushed is not true with a 60 s deadline".into()
    });
    for (family, key) in [
        ("spanflow_pipeline_spans_accepted_total", "accepted"),
        ("spanflow_pipeline_spans_exported_total", "exported"),
        ("spanflow_pipeline_spans_failed_total", "failed"),
        ("spanflow_pipeline_spans_unconfirmed_total", "unconfirmed"),
        ("spanflow_pipeline_spans_dropped_total", "dropped"),
    ] {
        let scraped = metrics.total(family);
        let last = stopped.line.count(key) as f64;
        v.expect(scraped == Some(last), || {
            format!(
                "/metrics {family} = {scraped:?} after draining, the final line says {key}={last}"
            )
        });
    }
    v.finish();
}

/// Whether `/metrics` shows every accepted span settled: by the pipeline's own books when it
/// has them (`accepted = exported + failed + unconfirmed + dropped`), else by an empty queue.
fn drained(m: &relay::Metrics) -> bool {
    let settled = [
        "spanflow_pipeline_spans_exported_total",
        "spanflow_pipeline_spans_failed_total",
        "spanflow_pipeline_spans_unconfirmed_total",
        "spanflow_pipeline_spans_dropped_total",
    ]
    .iter()
    .map(|f| m.total(f))
    .sum::<Option<f64>>();
    match (m.total("spanflow_pipeline_spans_accepted_total"), settled) {
        (Some(accepted), Some(settled)) => accepted == settled,
        _ => m.total("spanflow_pipeline_queue_spans") == Some(0.0),
    }
}

// ---------------------------------------------------------------------------------------
// 3. Backend rejecting.

/// A backend that answers INVALID_ARGUMENT to everything: every acknowledged span is counted
/// `failed`, once — not also dropped.
#[test]
fn rejecting_backend_counts_each_span_failed_once() {
    let dir = ScratchDir::new("reject");
    let sink = SinkProcess::start(
        dir.path(),
        Mode::Reject {
            code: 3,
            delay_ms: 0,
        },
        false,
    );
    let (client, stopped, delivered) = short_load(&dir, &sink, FAST_RETRY, 2 * SECOND);
    let mut v = Verdict::new("backend rejecting (INVALID_ARGUMENT)");
    let b = v.books(&client, &delivered, &stopped);
    v.expect(b.delivered == 0, || {
        format!("the rejecting sink recorded {}", b.delivered)
    });
    v.expect(b.failed == b.acked && b.dropped == 0, || {
        format!(
            "{} acked spans were all refused: expected failed={} dropped=0, got failed={} dropped={}",
            b.acked, b.acked, b.failed, b.dropped
        )
    });
    v.finish();
}

/// A backend whose `partial_success` refuses every third span: exactly those are `failed`,
/// the rest `exported`.
#[test]
fn partially_rejecting_backend_counts_the_rejected_spans_failed() {
    const EVERY: u64 = 3;
    let dir = ScratchDir::new("partial");
    let sink = SinkProcess::start(
        dir.path(),
        Mode::Partial {
            reject_every_n: EVERY,
        },
        false,
    );
    let (client, stopped, delivered) = short_load(&dir, &sink, FAST_RETRY, 2 * SECOND);
    let mut v = Verdict::new("backend rejecting (partial_success, every 3rd span)");
    let b = v.books(&client, &delivered, &stopped);
    let rejected = client
        .acked
        .iter()
        .filter(|id| id.is_multiple_of(EVERY))
        .count() as u64;
    v.expect(b.failed == rejected && b.dropped == 0, || {
        format!(
            "the sink refused {rejected} acked spans: expected failed={rejected} dropped=0, got failed={} dropped={}",
            b.failed, b.dropped
        )
    });
    v.expect(b.exported == b.delivered, || {
        format!("exported={} but the sink kept {}", b.exported, b.delivered)
    });
    v.finish();
}

/// A backend that rejects slowly (500 ms) behind a queue of two batches: the queue overflows,
/// and each span is counted once, `failed` or `dropped` — never both.
#[test]
fn rejecting_backend_behind_a_full_queue_counts_each_span_once() {
    let dir = ScratchDir::new("reject-queue");
    let sink = SinkProcess::start(
        dir.path(),
        Mode::Reject {
            code: 3,
            delay_ms: 500,
        },
        false,
    );
    let backend = r#"{ queue = 2, timeout = "30s", retry = { initial_backoff = "100ms", max_backoff = "1s", max_elapsed = "60s" } }"#;
    let (client, stopped, delivered) = short_load(&dir, &sink, backend, 3 * SECOND);
    let mut v = Verdict::new("backend rejecting slowly behind a full queue");
    let b = v.books(&client, &delivered, &stopped);
    v.expect(b.delivered == 0 && b.failed + b.dropped == b.acked, || {
        format!(
            "{} acked spans were all refused or dropped: expected failed + dropped = {}, got failed={} dropped={}",
            b.acked, b.acked, b.failed, b.dropped
        )
    });
    v.finish();
}

/// 5k spans/s of ~80 B spans for `duration` into a relay exporting to `sink` with `backend`
/// settings, then SIGTERM.
fn short_load(
    dir: &ScratchDir,
    sink: &SinkProcess,
    backend: &str,
    duration: Duration,
) -> (ClientBook, relay::Stopped, sink::Delivered) {
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            toml: grpc_exporter("b", &sink.endpoint(), Some(backend)),
            shutdown_timeout: Some(30 * SECOND),
            args: vec![],
        },
    );
    let load = Load::start(
        &relay.grpc_endpoint(),
        LoadSpec {
            rate: 5_000,
            concurrency: 4,
            spans_per_request: 100,
            attr_bytes: 0,
        },
    );
    std::thread::sleep(duration);
    let client = load.stop();
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    (client, stopped, sink.delivered())
}

// ---------------------------------------------------------------------------------------
// 4. Overload with a small budget.

/// The memory budget of the overload scenarios.
const OVERLOAD_BUDGET: u64 = 16 << 20;
/// Request bytes the receivers hold while reading and indexing requests, as they are measured
/// under this load (the relay's bound is max(budget, 2 × max_message_size) = 16 MiB, reached
/// only when every connection has a large request half read at once).
const REQUEST_IN_FLIGHT_BOUND: u64 = 8 << 20;
/// Everything that is neither budget nor requests in flight: the debug binary's code and
/// data, tokio, tonic and hyper buffers for ~40 connections, the exporter's HTTP/2 windows,
/// allocator slack and fragmentation. An idle debug relay sits at about 20 MiB.
const FIXED_OVERHEAD: u64 = 48 << 20;
/// The most resident memory the relay may use under overload.
const RSS_LIMIT: u64 = OVERLOAD_BUDGET + REQUEST_IN_FLIGHT_BOUND + FIXED_OVERHEAD;

/// ~80 B spans at 10× what the backend takes (3.2k spans/s), from 32 clients: the backlog
/// passes the budget after about 6 s.
#[test]
fn overload_with_small_spans_stays_within_the_memory_budget() {
    overload("overload, ~80 B spans", 0, 3_200);
}

/// ~1.1 KB spans at 10× what the backend takes (1.6k spans/s): the budget is full within a
/// second.
#[test]
fn overload_with_large_spans_stays_within_the_memory_budget() {
    overload("overload, ~1.1 KB spans", 1000, 1_600);
}

/// 8 s of `10 × capacity` spans/s into a relay with a 16 MiB budget whose backend takes
/// `capacity` spans/s; RSS sampled every 100 ms, `memory_used_bytes` every 250 ms.
fn overload(scenario: &str, attr_bytes: usize, capacity: u64) {
    let _heavy = heavy();
    let dir = ScratchDir::new("overload");
    let sink = SinkProcess::start(
        dir.path(),
        Mode::Slow {
            delay_ms: 50,
            spans_per_sec: capacity,
        },
        false,
    );
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            toml: grpc_exporter("b", &sink.endpoint(), Some(PATIENT_RETRY)),
            shutdown_timeout: Some(60 * SECOND),
            args: args(&["--memory-budget", &OVERLOAD_BUDGET.to_string()]),
        },
    );
    let load = Load::start(
        &relay.grpc_endpoint(),
        LoadSpec {
            rate: 10 * capacity,
            concurrency: 32,
            spans_per_request: 50,
            attr_bytes,
        },
    );
    let mut used_peak = None::<f64>;
    let until = Instant::now() + 8 * SECOND;
    while Instant::now() < until {
        if let Some(used) = relay.scrape().total("spanflow_pipeline_memory_used_bytes") {
            used_peak = Some(used_peak.map_or(used, |p: f64| p.max(used)));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let rss_under_load = relay.peak_rss();
    let client = load.stop();
    // Let the backend catch up so the books close with everything delivered.
    sink.set_mode(Mode::Ok);
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    let delivered = sink.delivered();

    let mut v = Verdict::new(scenario);
    v.note(format!(
        "capacity ~{capacity} spans/s, offered {} spans/s; peak RSS under load {:.1} MiB (limit {:.0} MiB = budget {} + in flight {} + overhead {}); peak memory_used_bytes {used_peak:?}",
        10 * capacity,
        rss_under_load as f64 / f64::from(1 << 20),
        RSS_LIMIT as f64 / f64::from(1 << 20),
        OVERLOAD_BUDGET >> 20,
        REQUEST_IN_FLIGHT_BOUND >> 20,
        FIXED_OVERHEAD >> 20,
    ));
    v.books(&client, &delivered, &stopped);
    v.expect(stopped.peak_rss <= RSS_LIMIT, || {
        format!(
            "peak RSS {:.1} MiB > {:.0} MiB",
            stopped.peak_rss as f64 / f64::from(1 << 20),
            RSS_LIMIT as f64 / f64::from(1 << 20)
        )
    });
    v.expect(
        used_peak.is_some_and(|u| u <= OVERLOAD_BUDGET as f64),
        || format!("spanflow_pipeline_memory_used_bytes peaked at {used_peak:?}, budget {OVERLOAD_BUDGET}"),
    );
    v.expect(client.retry_answers > 0, || {
        "no client was told to retry at 10x capacity".into()
    });
    v.finish();
}

// ---------------------------------------------------------------------------------------
// 5. SIGTERM with a full queue.

/// Fills the 16 MiB budget through a slow backend (100 ms per answer, 2k spans/s) with
/// ~1.1 KB spans, stops the load, and sends SIGTERM with `deadline`.
fn sigterm_with_full_queue(
    dir: &ScratchDir,
    deadline: Duration,
) -> (ClientBook, relay::Stopped, sink::Delivered) {
    let sink = SinkProcess::start(
        dir.path(),
        Mode::Slow {
            delay_ms: 100,
            spans_per_sec: 2_000,
        },
        false,
    );
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            toml: grpc_exporter("b", &sink.endpoint(), Some(PATIENT_RETRY)),
            shutdown_timeout: Some(deadline),
            args: args(&["--memory-budget", "16MiB"]),
        },
    );
    let load = Load::start(
        &relay.grpc_endpoint(),
        LoadSpec {
            rate: 10_000,
            concurrency: 16,
            spans_per_request: 100,
            attr_bytes: 1000,
        },
    );
    // Full: clients are being told to retry (or 8 s passed; the books still decide).
    let started = Instant::now();
    while started.elapsed() < 8 * SECOND
        && (started.elapsed() < 2 * SECOND || load.snapshot().retry_answers == 0)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = load.stop();
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    (client, stopped, sink.delivered())
}

/// With `shutdown_timeout = "3s"` the relay exits within the deadline plus 2 s, and counts
/// what it abandons: in flight → `unconfirmed`, never sent → dropped with a reason.
#[test]
fn sigterm_with_a_full_queue_exits_by_the_deadline_and_counts_what_it_abandons() {
    const DEADLINE: Duration = Duration::from_secs(3);
    let _heavy = heavy();
    let dir = ScratchDir::new("sigterm-deadline");
    let (client, stopped, delivered) = sigterm_with_full_queue(&dir, DEADLINE);
    let mut v = Verdict::new("SIGTERM, full queue, slow backend, 3 s deadline");
    let b = v.books(&client, &delivered, &stopped);
    v.expect(stopped.after_term <= DEADLINE + 2 * SECOND, || {
        format!(
            "exited {:.2} s after SIGTERM with a {DEADLINE:?} deadline",
            stopped.after_term.as_secs_f64()
        )
    });
    v.expect(stopped.status.success(), || {
        format!("exit status {:?}", stopped.status)
    });
    // ~14k spans queued at ~2k spans/s cannot all go out in 3 s.
    v.expect(
        stopped.line.flushed() == Some(false) && b.dropped + b.unconfirmed > 0,
        || "the deadline cut nothing: the scenario did not fill the queue".into(),
    );
    v.finish();
}

/// The same with a generous deadline: everything goes out, `flushed=true`.
#[test]
fn sigterm_with_a_full_queue_and_a_generous_deadline_delivers_everything() {
    let _heavy = heavy();
    let dir = ScratchDir::new("sigterm-generous");
    let (client, stopped, delivered) = sigterm_with_full_queue(&dir, 60 * SECOND);
    let mut v = Verdict::new("SIGTERM, full queue, slow backend, 60 s deadline");
    let b = v.books(&client, &delivered, &stopped);
    v.expect(b.missing == 0, || {
        format!("{} acknowledged spans never reached the backend", b.missing)
    });
    v.expect(stopped.line.flushed() == Some(true), || {
        "flushed is not true".into()
    });
    v.finish();
}

/// The backend stops answering (SIGSTOP) under load; SIGTERM with a 3 s deadline. The relay
/// must exit in time and count the exports left hanging as `unconfirmed`; once it is gone the
/// backend resumes and may still take what was in its socket — which the books allow.
#[test]
fn sigterm_with_a_stalled_backend_counts_hanging_exports_unconfirmed() {
    const DEADLINE: Duration = Duration::from_secs(3);
    let _heavy = heavy();
    let dir = ScratchDir::new("stalled");
    let mut sink = SinkProcess::start(dir.path(), Mode::Ok, false);
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            // A long attempt timeout, so the exports hang until the deadline.
            toml: grpc_exporter("b", &sink.endpoint(), Some(PATIENT_RETRY)),
            shutdown_timeout: Some(DEADLINE),
            args: vec![],
        },
    );
    let load = Load::start(
        &relay.grpc_endpoint(),
        LoadSpec {
            rate: 5_000,
            concurrency: 4,
            spans_per_request: 100,
            attr_bytes: 0,
        },
    );
    std::thread::sleep(SECOND);
    sink.stall();
    std::thread::sleep(2 * SECOND);
    let client = load.stop();
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    sink.resume();
    std::thread::sleep(SECOND);
    let delivered = sink.delivered();

    let mut v = Verdict::new("SIGTERM, stalled backend, 3 s deadline");
    let b = v.books(&client, &delivered, &stopped);
    v.expect(stopped.after_term <= DEADLINE + 2 * SECOND, || {
        format!(
            "exited {:.2} s after SIGTERM with a {DEADLINE:?} deadline",
            stopped.after_term.as_secs_f64()
        )
    });
    v.expect(b.unconfirmed > 0, || {
        "exports hanging at the deadline are not counted unconfirmed".into()
    });
    v.finish();
}

/// A client whose connection stays open but which no longer reads (its process frozen, say)
/// must not hold the shutdown: the relay still flushes its queue to a live backend and exits
/// well before a 10 s deadline, with nothing missing. (An open HTTP/2 connection whose peer
/// never acknowledges the GOAWAY today keeps the gRPC server from stopping for the whole
/// deadline, and the flush then gets no time at all.)
#[test]
fn sigterm_with_a_frozen_client_connection_still_flushes_in_time() {
    const DEADLINE: Duration = Duration::from_secs(10);
    let _heavy = heavy();
    let dir = ScratchDir::new("frozen-client");
    let sink = SinkProcess::start(
        dir.path(),
        Mode::Slow {
            delay_ms: 100,
            spans_per_sec: 20_000,
        },
        false,
    );
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            toml: grpc_exporter("b", &sink.endpoint(), Some(PATIENT_RETRY)),
            shutdown_timeout: Some(DEADLINE),
            args: vec![],
        },
    );
    // The frozen client: one acknowledged request, then its runtime is never driven again
    // while the relay stops (the socket stays open until the runtime is dropped at the end).
    let frozen = small_runtime();
    let frozen_client = {
        let _runtime = frozen.enter();
        Client::new(&relay.grpc_endpoint())
    };
    let mut book = ClientBook::default();
    let one = request(fresh_ids(10).map(|id| span(id, 0)).collect());
    let ids = client::ids_of(&one);
    let attempt = frozen.block_on(frozen_client.export(one));
    book.record(&attempt);
    book.settle(&ids, &attempt, 0);
    let load = Load::start(
        &relay.grpc_endpoint(),
        LoadSpec {
            rate: 10_000,
            concurrency: 4,
            spans_per_request: 100,
            attr_bytes: 0,
        },
    );
    std::thread::sleep(2 * SECOND);
    book.merge(load.stop());
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    drop(frozen_client);
    drop(frozen);
    let delivered = sink.delivered();

    let mut v = Verdict::new("SIGTERM with a frozen client connection");
    let b = v.books(&book, &delivered, &stopped);
    v.expect(stopped.after_term < DEADLINE, || {
        format!(
            "exited {:.2} s after SIGTERM: the frozen connection held the shutdown to the {DEADLINE:?} deadline",
            stopped.after_term.as_secs_f64()
        )
    });
    v.expect(b.missing == 0, || {
        format!("{} acknowledged spans never reached the backend", b.missing)
    });
    v.expect(stopped.line.flushed() == Some(true), || {
        "flushed is not true".into()
    });
    v.finish();
}

// ---------------------------------------------------------------------------------------
// The final line itself.

/// The final line carries every counter of the books and the drop reasons.
#[test]
fn final_line_reports_every_counter() {
    let dir = ScratchDir::new("final-line");
    let sink = SinkProcess::start(dir.path(), Mode::Ok, false);
    let (_, stopped, _) = short_load(&dir, &sink, FAST_RETRY, SECOND / 2);
    let mut v = Verdict::new("final line");
    v.note(stopped.line.raw.clone());
    for key in [
        "accepted",
        "exported",
        "failed",
        "dropped",
        "unconfirmed",
        "queued",
        "flushed",
    ] {
        v.expect(stopped.line.has(key), || {
            format!("the final line has no `{key}`")
        });
    }
    v.finish();
}

// ---------------------------------------------------------------------------------------
// 6. Config files with partial tables.

/// The relay's documented defaults (`src/default.toml`, README).
const DEFAULT_BUDGET: i64 = 64 << 20;
const DEFAULT_BATCH_MAX_BYTES: i64 = 4 << 20;
const DEFAULT_BATCH_MAX_AGE_MS: i64 = 200;
const DEFAULT_BATCH_MAX_SPANS: i64 = 2048;

/// `check-config` with `toml`, parsed; panics with stderr when it fails.
fn effective_config(
    dir: &ScratchDir,
    toml: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> toml::Table {
    let out = check_config(dir.path(), toml, env, args);
    assert!(
        out.status.success(),
        "check-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.parse()
        .unwrap_or_else(|e| panic!("check-config printed invalid TOML ({e}):\n{text}"))
}

fn value<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(*p)?.as_table()?;
    }
    t.get(*last)
}

fn int(table: &toml::Table, path: &[&str]) -> Option<i64> {
    match value(table, path)? {
        toml::Value::Integer(n) => Some(*n),
        toml::Value::String(s) => s
            .parse::<spanflow_relay::ByteSize>()
            .ok()
            .map(|b| b.0 as i64),
        _ => None,
    }
}

fn check_defaults(v: &mut Verdict, cfg: &toml::Table, max_spans: i64) {
    for (path, want) in [
        (&["pipeline", "memory", "budget_bytes"][..], DEFAULT_BUDGET),
        (&["pipeline", "batch", "max_spans"][..], max_spans),
        (
            &["pipeline", "batch", "max_bytes"][..],
            DEFAULT_BATCH_MAX_BYTES,
        ),
        (
            &["pipeline", "batch", "max_age_ms"][..],
            DEFAULT_BATCH_MAX_AGE_MS,
        ),
    ] {
        let got = int(cfg, path);
        v.expect(got == Some(want), || {
            format!("{} = {got:?}, want {want}", path.join("."))
        });
    }
}

/// Only `[[pipeline.exporters]]`: the relay's 64 MiB budget and batch defaults stay — in what
/// `check-config` prints and in what `serve` runs with.
#[test]
fn config_with_only_an_exporter_table_keeps_the_relay_defaults() {
    let dir = ScratchDir::new("config-exporters");
    let toml = grpc_exporter("b", "http://127.0.0.1:9", None);
    let cfg = effective_config(&dir, &toml, &[], &[]);
    let mut v = Verdict::new("config: only [[pipeline.exporters]]");
    check_defaults(&mut v, &cfg, DEFAULT_BATCH_MAX_SPANS);
    let exporters = value(&cfg, &["pipeline", "exporters"]).and_then(|e| e.as_array());
    v.expect(exporters.is_some_and(|e| e.len() == 1), || {
        format!("exporters = {exporters:?}, want the one configured")
    });
    check_running_budget(&mut v, &dir, &toml);
    v.finish();
}

/// The budget a relay serving `toml` reports on `/metrics` is the documented default.
fn check_running_budget(v: &mut Verdict, dir: &ScratchDir, toml: &str) {
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            toml: toml.to_owned(),
            shutdown_timeout: Some(5 * SECOND),
            args: vec![],
        },
    );
    let budget = relay
        .scrape()
        .total("spanflow_pipeline_memory_budget_bytes");
    v.expect(budget == Some(DEFAULT_BUDGET as f64), || {
        format!("the running relay's spanflow_pipeline_memory_budget_bytes = {budget:?}, want {DEFAULT_BUDGET}")
    });
    relay.terminate();
    relay.wait_stopped(EXIT_SLACK);
}

/// Only `[pipeline.batch] max_spans = 100`: that one value changes, the rest (budget, the
/// other batch settings, the default file exporter) stay.
#[test]
fn config_with_only_batch_max_spans_keeps_the_relay_defaults() {
    let dir = ScratchDir::new("config-batch");
    let toml = "[pipeline.batch]\nmax_spans = 100\n";
    let cfg = effective_config(&dir, toml, &[], &[]);
    let mut v = Verdict::new("config: only [pipeline.batch] max_spans");
    check_defaults(&mut v, &cfg, 100);
    let sink_type = value(&cfg, &["pipeline", "exporters"])
        .and_then(|e| e.as_array())
        .and_then(|e| e.first())
        .and_then(|e| e.get("sink"))
        .and_then(|s| s.get("type"))
        .and_then(|t| t.as_str());
    v.expect(sink_type == Some("file"), || {
        format!("first exporter's sink type = {sink_type:?}, want the default file exporter")
    });
    check_running_budget(&mut v, &dir, toml);
    v.finish();
}

/// `shutdown_timeout` comes from the file, `SPANFLOW_SHUTDOWN_TIMEOUT` or `--shutdown-timeout`,
/// with the usual precedence, and `check-config` shows it.
#[test]
fn config_shutdown_timeout_from_file_env_and_flag() {
    let dir = ScratchDir::new("config-shutdown");
    let mut v = Verdict::new("config: shutdown_timeout");
    let file = "shutdown_timeout = \"7s\"\n";
    for (env, args, want) in [
        (&[][..], &[][..], 7),
        (&[("SPANFLOW_SHUTDOWN_TIMEOUT", "8s")][..], &[][..], 8),
        (
            &[("SPANFLOW_SHUTDOWN_TIMEOUT", "8s")][..],
            &["--shutdown-timeout", "9s"][..],
            9,
        ),
    ] {
        let out = check_config(dir.path(), file, env, args);
        if !out.status.success() {
            v.expect(false, || {
                format!(
                    "check-config {args:?} with {env:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let cfg: toml::Table = text.parse().expect("valid TOML");
        let got = value(&cfg, &["shutdown_timeout"])
            .and_then(|t| t.as_str())
            .and_then(|t| t.parse::<spanflow_relay::HumanDuration>().ok())
            .map(|d| d.0);
        v.expect(got == Some(Duration::from_secs(want)), || {
            format!("with {env:?} {args:?}: shutdown_timeout = {got:?}, want {want}s")
        });
    }
    v.finish();
}

// ---------------------------------------------------------------------------------------
// 7. Nesting boundary.

/// An attribute value nested `depth` key-value lists deep, with a string at the bottom.
fn nested(depth: usize) -> AnyValue {
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("bottom".into())),
    };
    for _ in 0..depth {
        value = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(value),
                    ..KeyValue::default()
                }],
            })),
        };
    }
    value
}

/// The OTLP/JSON form of [`nested`].
fn nested_json(depth: usize) -> serde_json::Value {
    let mut value = serde_json::json!({ "stringValue": "bottom" });
    for _ in 0..depth {
        value =
            serde_json::json!({ "kvlistValue": { "values": [{ "key": "k", "value": value }] } });
    }
    value
}

/// Depths probed: well past every limit in play. The deepest the relay can possibly deliver is
/// set by prost's recursion limit of 100 nested messages at the backend: the request is at
/// depth 0, resource spans 1, scope spans 2, span 3, the attribute's KeyValue 4 and its
/// AnyValue 5; each list level adds three (AnyValue → KeyValueList → KeyValue → AnyValue), so
/// the bottom string of a depth-d value sits at 5 + 3d: d = 31 decodes (98), d = 32 does not
/// (101). The relay's own validator (`spanflow-otlp`, `MAX_DEPTH = 100` with a fast path for
/// the innermost simple KeyValue) takes d = 32 today; `MAX_NESTING` (16) is how deep the
/// redact processor looks, so the relay must take at least that.
const PROBE_DEPTHS: std::ops::RangeInclusive<usize> = 1..=40;

/// Every nesting depth the relay acknowledges is delivered intact to the gRPC backend and to
/// the file exporter; from one level deeper on, requests are refused at the door with
/// INVALID_ARGUMENT and counted nowhere.
#[test]
fn nesting_up_to_the_limit_is_delivered_intact_and_deeper_is_refused_at_the_door() {
    let dir = ScratchDir::new("nesting");
    let sink = SinkProcess::start(dir.path(), Mode::Ok, true);
    let file = dir.path().join("nest.jsonl");
    let toml = format!(
        "{}[[pipeline.exporters]]\nname = \"f\"\nsink = {{ type = \"file\", path = \"{}\" }}\n",
        grpc_exporter("b", &sink.endpoint(), Some(FAST_RETRY)),
        file.display()
    );
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            toml,
            shutdown_timeout: Some(30 * SECOND),
            // One span per batch: a span the backend cannot take does not take others along.
            args: args(&["--batch-max-spans", "1"]),
        },
    );
    let mut book = ClientBook::default();
    let mut sent: Vec<(usize, Span, Attempt)> = Vec::new();
    let (book_in, sent_in) = (&mut book, &mut sent);
    with_client(&relay, |client| async move {
        for depth in PROBE_DEPTHS {
            let id = fresh_ids(1).start;
            let mut s = span(id, 0);
            s.attributes = vec![KeyValue {
                key: "nest".into(),
                value: Some(nested(depth)),
                ..KeyValue::default()
            }];
            let attempt = client.export(request(vec![s.clone()])).await;
            book_in.record(&attempt);
            book_in.settle(&[id], &attempt, 0);
            sent_in.push((depth, s, attempt));
        }
    });
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    let delivered = sink.delivered();

    let mut v = Verdict::new("nesting boundary");
    let deepest = sent
        .iter()
        .take_while(|(_, _, a)| *a == Attempt::Ok { rejected: 0 })
        .map(|(d, _, _)| *d)
        .last()
        .unwrap_or(0);
    v.note(format!("deepest depth acknowledged: {deepest}"));
    v.books(&book, &delivered, &stopped);
    v.expect(deepest >= spanflow::process::MAX_NESTING, || {
        format!(
            "the relay refuses depth {} (MAX_NESTING is {})",
            deepest + 1,
            spanflow::process::MAX_NESTING
        )
    });
    for (depth, _, attempt) in sent.iter().filter(|(d, _, _)| *d > deepest) {
        v.expect(
            matches!(attempt, Attempt::Refused { code: Code::InvalidArgument, .. }),
            || format!("depth {depth} (past the first refusal) answered {attempt:?}, want INVALID_ARGUMENT"),
        );
    }
    // Intact at the gRPC backend.
    let bodies = sink.bodies();
    let at_backend: std::collections::HashMap<Vec<u8>, &Span> = bodies
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| (s.span_id.clone(), s))
        .collect();
    // Intact in the file.
    let in_file = file_spans(&file);
    for (depth, s, _) in sent.iter().filter(|(d, _, _)| *d <= deepest) {
        let got = at_backend.get(&s.span_id);
        v.expect(got == Some(&s), || match got {
            None => format!("depth {depth}: not at the gRPC backend"),
            Some(_) => format!("depth {depth}: changed on the way to the gRPC backend"),
        });
        let json = in_file.get(&hex(&s.span_id));
        let attr = json.and_then(|span| {
            span["attributes"]
                .as_array()?
                .iter()
                .find(|a| a["key"] == "nest")
                .map(|a| a["value"].clone())
        });
        v.expect(attr == Some(nested_json(*depth)), || match (json, attr) {
            (None, _) => format!("depth {depth}: not in the file"),
            (Some(_), None) => format!("depth {depth}: in the file without its attribute"),
            (Some(_), Some(a)) => format!("depth {depth}: file has {a}"),
        });
    }
    v.finish();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Spans in the OTLP/JSON lines file (and its rotations), by span id.
fn file_spans(path: &std::path::Path) -> std::collections::HashMap<String, serde_json::Value> {
    let mut out = std::collections::HashMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // The deepest spans nest past serde_json's default recursion limit (128) in JSON.
        let mut de = serde_json::Deserializer::from_str(line);
        de.disable_recursion_limit();
        let Ok(request) = <serde_json::Value as serde::Deserialize>::deserialize(&mut de) else {
            continue;
        };
        let spans = request["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["scopeSpans"].as_array().into_iter().flatten())
            .flat_map(|s| s["spans"].as_array().into_iter().flatten());
        for s in spans {
            if let Some(id) = s["spanId"].as_str() {
                out.insert(id.to_ascii_lowercase(), s.clone());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// 8. Multi-message unary call.

/// A unary `Export` call whose body carries two length-prefixed messages (50 spans each) is
/// refused, and neither message's spans are counted accepted or delivered. A good request
/// before it keeps the books from being trivially empty.
#[test]
fn unary_call_with_two_messages_is_refused_and_counts_nothing() {
    let dir = ScratchDir::new("two-messages");
    let sink = SinkProcess::start(dir.path(), Mode::Ok, false);
    let mut relay = RelayProcess::start(
        dir.path(),
        &RelaySpec {
            toml: grpc_exporter("b", &sink.endpoint(), Some(FAST_RETRY)),
            shutdown_timeout: Some(30 * SECOND),
            args: vec![],
        },
    );
    let mut book = ClientBook::default();
    let batch = |n: usize| request(fresh_ids(n).map(|id| span(id, 0)).collect());
    let (first, second) = (batch(50), batch(50));
    let endpoint = relay.grpc_endpoint();
    let (book_in, two) = (&mut book, [&first, &second]);
    let (answer, status) = with_client(&relay, |client| async move {
        let good = batch(10);
        let ids = client::ids_of(&good);
        let attempt = client.export(good).await;
        book_in.record(&attempt);
        book_in.settle(&ids, &attempt, 0);

        let mut body = BytesMut::new();
        for m in two {
            let bytes = m.encode_to_vec();
            body.put_u8(0);
            body.put_u32(bytes.len() as u32);
            body.put_slice(&bytes);
        }
        let status = raw_unary(client.channel(), &endpoint, body.freeze()).await;
        (attempt, status)
    });
    // A client told OK for the call counts both messages acknowledged.
    if status == Some(0) {
        let mut ids = client::ids_of(&first);
        ids.extend(client::ids_of(&second));
        book.settle(&ids, &Attempt::Ok { rejected: 0 }, 0);
    }
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    let delivered = sink.delivered();

    let mut v = Verdict::new("unary call with two messages");
    v.note(format!("grpc-status of the two-message call: {status:?}"));
    v.expect(answer == Attempt::Ok { rejected: 0 }, || {
        format!("the good request was answered {answer:?}")
    });
    v.expect(status.is_some_and(|s| s != 0), || {
        format!("the two-message call was answered grpc-status {status:?}, want a refusal")
    });
    let b = v.books(&book, &delivered, &stopped);
    v.expect(b.accepted == 10, || {
        format!("accepted={} after one good 10-span request", b.accepted)
    });
    let two: HashSet<u64> = client::ids_of(&first)
        .into_iter()
        .chain(client::ids_of(&second))
        .collect();
    let leaked = delivered.ids.keys().filter(|id| two.contains(id)).count();
    v.expect(leaked == 0, || {
        format!("{leaked} spans of the refused call reached the backend")
    });
    v.finish();
}

/// POSTs `body` as a gRPC `Export` call as is (no framing added) and returns its grpc-status;
/// the whole call is bounded by 10 s.
async fn raw_unary(
    mut channel: tonic::transport::Channel,
    endpoint: &str,
    body: Bytes,
) -> Option<i32> {
    use tower::Service as _;
    let request = http::Request::post(format!("{endpoint}{}", client::EXPORT_PATH))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(body)))
        .expect("request");
    let grpc_status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
    };
    let call = async {
        futures::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .expect("channel ready");
        let response = channel.call(request).await.expect("http/2 response");
        if let Some(status) = grpc_status(response.headers()) {
            return Some(status);
        }
        let collected = response.into_body().collect().await.ok()?;
        collected.trailers().and_then(grpc_status)
    };
    tokio::time::timeout(10 * SECOND, call)
        .await
        .expect("the two-message call answered within 10 s")
}

/// Runs `f` with a client of the relay on a runtime of its own, and closes the client's
/// connection before returning: an open idle connection would hold the relay's shutdown (see
/// the report on `a server did not stop in time`).
fn with_client<F, Fut, T>(relay: &RelayProcess, f: F) -> T
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = T>,
{
    let rt = small_runtime();
    let client = {
        let _runtime = rt.enter();
        Client::new(&relay.grpc_endpoint())
    };
    rt.block_on(f(client))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------
// 9. The durable queue (`[pipeline.queue] type = "disk"`).

/// The `[pipeline.queue]` table of a disk queue in `dir`.
fn disk_queue(dir: &std::path::Path, fsync: &str) -> String {
    format!(
        "[pipeline.queue]\ntype = \"disk\"\ndir = \"{}\"\nfsync = \"{fsync}\"\nmax_bytes = \"256MiB\"\nsegment_bytes = \"8MiB\"\n",
        dir.join("queue").display()
    )
}

/// Twenty cycles of kill -9 of a relay under load, with a slow backend (and a failing one in
/// every fourth cycle), each restart on the same queue directory; then a last run with a
/// healthy backend drains the queue. Every span any of the relays acknowledged must arrive:
/// duplicates are allowed (records exported but not yet acknowledged to the queue when the
/// relay died are sent again) and reported, missing spans are not.
#[test]
fn durable_queue_survives_twenty_kill9_cycles_under_load() {
    let _heavy = heavy();
    let dir = ScratchDir::new("durable-kill9");
    let sink = SinkProcess::start(
        dir.path(),
        Mode::Slow {
            delay_ms: 50,
            spans_per_sec: 4_000,
        },
        false,
    );
    let toml = format!(
        "{}{}",
        disk_queue(dir.path(), "interval"),
        grpc_exporter("b", &sink.endpoint(), Some(FAST_RETRY))
    );
    let spec = RelaySpec {
        toml,
        shutdown_timeout: Some(60 * SECOND),
        args: vec![],
    };
    let mut book = ClientBook::default();
    let started = Instant::now();
    for cycle in 0..20u32 {
        sink.set_mode(if cycle % 4 == 3 {
            Mode::Reject {
                code: Code::Unavailable as i32,
                delay_ms: 0,
            }
        } else {
            Mode::Slow {
                delay_ms: 50,
                spans_per_sec: 4_000,
            }
        });
        let run = dir.path().join(format!("run{cycle}"));
        std::fs::create_dir_all(&run).expect("run dir");
        let mut relay = RelayProcess::start(&run, &spec);
        let load = Load::start(
            &relay.grpc_endpoint(),
            LoadSpec {
                rate: 10_000,
                concurrency: 4,
                spans_per_request: 50,
                attr_bytes: 100,
            },
        );
        // Killed at a different moment of each cycle.
        std::thread::sleep(Duration::from_millis(300 + u64::from(cycle % 5) * 150));
        relay.kill9();
        book.merge(load.stop());
    }
    sink.set_mode(Mode::Ok);
    let last = dir.path().join("last");
    std::fs::create_dir_all(&last).expect("run dir");
    let mut relay = RelayProcess::start(&last, &spec);
    let acked: HashSet<u64> = book.acked.iter().copied().collect();
    let drained = harness::proc::wait_until(
        "the queue to drain to the backend",
        Duration::from_secs(120),
        || {
            let delivered = sink.delivered();
            acked
                .iter()
                .all(|id| delivered.ids.contains_key(id))
                .then_some(true)
        },
    );
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    let delivered = sink.delivered();

    let mut v = Verdict::new("durable queue, 20 kill -9 cycles under load");
    let missing = acked
        .iter()
        .filter(|id| !delivered.ids.contains_key(id))
        .count();
    let duplicates = delivered.total - delivered.ids.len() as u64;
    let unacked = delivered
        .ids
        .keys()
        .filter(|id| !acked.contains(id))
        .count();
    v.note(format!(
        "acked {} in 20 cycles ({:.1} s), delivered {} unique, {duplicates} duplicates, \
         {unacked} delivered without an acknowledgement (written, then the relay died before \
         answering), missing {missing}",
        acked.len(),
        started.elapsed().as_secs_f64(),
        delivered.ids.len()
    ));
    v.note(format!("last run: {}", stopped.line.raw));
    v.expect(drained && missing == 0, || {
        format!("{missing} acknowledged spans never reached the backend")
    });
    v.expect(acked.len() > 20_000, || {
        format!("only {} spans acked: the load did not run", acked.len())
    });
    v.expect(stopped.status.success(), || {
        format!("exit status {:?}", stopped.status)
    });
    v.expect(stopped.line.count("queued") == 0, || {
        "the last run left spans in the queue".into()
    });
    v.finish();
}

/// Sends `requests` requests of `spans` spans one at a time (each waits for its answer, so
/// each becomes its own batch and record) and returns the acknowledged ids per request.
fn send_one_by_one(endpoint: &str, requests: usize, spans: usize) -> Vec<Vec<u64>> {
    let rt = small_runtime();
    rt.block_on(async {
        let client = Client::new(endpoint);
        let mut acked = Vec::new();
        for _ in 0..requests {
            let ids: Vec<u64> = fresh_ids(spans).collect();
            let body = request(ids.iter().map(|&id| span(id, 64)).collect());
            let attempt = client.export(body).await;
            assert!(
                matches!(attempt, Attempt::Ok { rejected: 0 }),
                "not acknowledged: {attempt:?}"
            );
            acked.push(ids);
        }
        acked
    })
}

/// A backend down while 2,000 spans are acknowledged; the relay is stopped (SIGTERM) and
/// started again on the same directory with the backend up: every span arrives exactly once.
#[test]
fn durable_queue_delivers_across_a_restart_exactly_once() {
    let _heavy = heavy();
    let dir = ScratchDir::new("durable-restart");
    let mut sink = SinkProcess::start(dir.path(), Mode::Ok, false);
    let endpoint = sink.endpoint();
    sink.kill9();
    let spec = RelaySpec {
        toml: format!(
            "{}{}",
            disk_queue(dir.path(), "always"),
            grpc_exporter("b", &endpoint, Some(FAST_RETRY))
        ),
        shutdown_timeout: Some(2 * SECOND),
        args: vec![],
    };
    let mut relay = RelayProcess::start(dir.path(), &spec);
    let acked: Vec<u64> = send_one_by_one(&relay.grpc_endpoint(), 40, 50)
        .into_iter()
        .flatten()
        .collect();
    relay.terminate();
    let first = relay.wait_stopped(EXIT_SLACK);
    sink.restart();
    // A new run directory (its own config copy and stdout), the same queue directory.
    let run2 = dir.path().join("run2");
    std::fs::create_dir_all(&run2).expect("run dir");
    let mut relay = RelayProcess::start(&run2, &spec);
    let all = harness::proc::wait_until("the replay", Duration::from_secs(60), || {
        (sink.delivered().ids.len() >= acked.len()).then_some(true)
    });
    relay.terminate();
    let second = relay.wait_stopped(EXIT_SLACK);
    let delivered = sink.delivered();

    let mut v = Verdict::new("durable queue across a restart");
    v.note(format!("first run: {}", first.line.raw));
    v.note(format!("second run: {}", second.line.raw));
    v.expect(all, || "not everything arrived".into());
    v.expect(first.line.count("queued") == acked.len() as u64, || {
        format!(
            "the first run should leave all {} spans queued in the spool",
            acked.len()
        )
    });
    v.expect(
        first.line.count("dropped") + first.line.count("unconfirmed") == 0,
        || "the first run counted spans lost although the queue kept them".into(),
    );
    let missing = acked
        .iter()
        .filter(|id| !delivered.ids.contains_key(id))
        .count();
    v.expect(missing == 0, || format!("{missing} spans missing"));
    v.expect(
        delivered.total == acked.len() as u64 && delivered.ids.len() == acked.len(),
        || {
            format!(
                "delivered {} records of {} unique ids for {} acknowledged: not exactly once",
                delivered.total,
                delivered.ids.len(),
                acked.len()
            )
        },
    );
    v.expect(second.line.count("exported") == acked.len() as u64, || {
        "the second run did not export the replayed spans".into()
    });
    v.finish();
}

/// The records of a stopped relay's queue are damaged: the last one torn in the middle, one
/// earlier one with flipped bytes. The next start reports both, serves, and delivers every
/// other record; exactly the two damaged requests' spans are missing.
#[test]
fn durable_queue_skips_damaged_records_and_loses_nothing_else() {
    let _heavy = heavy();
    let dir = ScratchDir::new("durable-corrupt");
    let mut sink = SinkProcess::start(dir.path(), Mode::Ok, false);
    let endpoint = sink.endpoint();
    sink.kill9();
    let spec = RelaySpec {
        toml: format!(
            "{}{}",
            disk_queue(dir.path(), "always"),
            grpc_exporter("b", &endpoint, Some(FAST_RETRY))
        ),
        shutdown_timeout: Some(2 * SECOND),
        args: vec![],
    };
    let mut relay = RelayProcess::start(dir.path(), &spec);
    let requests = send_one_by_one(&relay.grpc_endpoint(), 10, 20);
    relay.terminate();
    relay.wait_stopped(EXIT_SLACK);

    // Find the records (magic "SFR\x01") of the only segment; tear the last, flip the third.
    let queue = dir.path().join("queue");
    let segment = std::fs::read_dir(&queue)
        .expect("queue dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let starts: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"SFR\x01")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), requests.len(), "one record per request");
    let lens: Vec<usize> = starts
        .iter()
        .map(|&at| u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize)
        .collect();
    let third = starts[2] + 32 + lens[2] / 2;
    bytes[third] ^= 0xff;
    bytes[third + 1] ^= 0x55;
    let last = starts.len() - 1;
    bytes.truncate(starts[last] + 32 + lens[last] / 2);
    std::fs::write(&segment, &bytes).expect("write segment");

    sink.restart();
    let run2 = dir.path().join("run2");
    std::fs::create_dir_all(&run2).expect("run dir");
    let mut relay = RelayProcess::start(&run2, &spec);
    let expected: Vec<u64> = requests
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2 && *i != requests.len() - 1)
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    let all = harness::proc::wait_until("the replay", Duration::from_secs(60), || {
        let delivered = sink.delivered();
        expected
            .iter()
            .all(|id| delivered.ids.contains_key(id))
            .then_some(true)
    });
    let metrics = relay.scrape();
    relay.terminate();
    let stopped = relay.wait_stopped(EXIT_SLACK);
    let delivered = sink.delivered();
    let log = std::fs::read_to_string(run2.join("relay.stderr")).unwrap_or_default();

    let mut v = Verdict::new("durable queue with damaged records");
    v.note(format!("after the damage: {}", stopped.line.raw));
    v.expect(all, || {
        "records other than the damaged two were lost".into()
    });
    let lost: Vec<u64> = requests[2]
        .iter()
        .chain(&requests[requests.len() - 1])
        .copied()
        .collect();
    v.expect(
        lost.iter().all(|id| !delivered.ids.contains_key(id)),
        || "a damaged record was delivered".into(),
    );
    v.expect(delivered.ids.len() == expected.len(), || {
        format!(
            "delivered {} spans, expected exactly {}",
            delivered.ids.len(),
            expected.len()
        )
    });
    v.expect(
        metrics.total("spanflow_queue_corrupt_records_total") == Some(1.0),
        || "the corrupt record is not counted in /metrics".into(),
    );
    v.expect(
        metrics
            .total("spanflow_queue_truncated_bytes_total")
            .is_some_and(|b| b > 0.0),
        || "the torn tail is not counted in /metrics".into(),
    );
    v.expect(log.contains("corrupt") && log.contains(".seg"), || {
        "the corrupt record is not logged with its file".into()
    });
    v.finish();
}
