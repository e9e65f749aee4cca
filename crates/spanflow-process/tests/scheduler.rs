//! Scheduler: every batch processed exactly once, panics isolated, clean
//! shutdown.
#![cfg(not(loom))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use parking_lot::Mutex;
use spanflow_process::*;

/// Multiplies the stress sizes (default 1) for longer local runs.
fn scale() -> usize {
    std::env::var("SPANFLOW_STRESS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Panics on batches whose first span is named "boom".
struct Bomb;

impl Processor for Bomb {
    fn name(&self) -> &str {
        "bomb"
    }
    fn process(&self, batch: TraceRequest, _: &Context<'_>) -> Result<TraceRequest, ProcessError> {
        if batch.span(0).is_some_and(|s| s.name() == "boom") {
            panic!("boom");
        }
        Ok(batch)
    }
}

fn chain() -> Chain {
    Chain::builder()
        .processor(
            Filter::from_config(&FilterConfig::drop().span_names(MatchType::Exact, ["drop"]))
                .expect("valid"),
        )
        .processor(Bomb)
        .parallelism(Parallelism::sequential())
        .build()
        .expect("chain")
}

/// A batch identified by its first span's name: `b<id>`, plus one span to drop.
fn batch(id: usize, boom: bool) -> TraceRequest {
    let first = if boom {
        "boom".to_owned()
    } else {
        format!("b{id}")
    };
    request(
        "svc",
        vec![span(&first), span("drop"), span(&format!("tail{id}"))],
    )
}

#[test]
fn every_batch_is_processed_exactly_once_under_concurrent_submitters() {
    let per_submitter = 1500 * scale();
    let submitters = 3;
    let total = per_submitter * submitters;
    let scheduler = Scheduler::new(chain(), 4).expect("starts");
    let seen: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    std::thread::scope(|scope| {
        for sub in 0..submitters {
            let scheduler = &scheduler;
            let seen = Arc::clone(&seen);
            scope.spawn(move || {
                for k in 0..per_submitter {
                    let id = sub * per_submitter + k;
                    let seen = Arc::clone(&seen);
                    scheduler
                        .submit(batch(id, false), move |result| {
                            let out = result.expect("no panic");
                            assert_eq!(names(&out), [format!("b{id}"), format!("tail{id}")]);
                            seen[id].fetch_add(1, Ordering::Relaxed);
                        })
                        .expect("accepted");
                    if k % 64 == 0 {
                        // Let the workers go idle now and then, so parking and
                        // waking are exercised too.
                        std::thread::yield_now();
                    }
                }
            });
        }
    });
    scheduler.shutdown();
    for (id, n) in seen.iter().enumerate() {
        assert_eq!(n.load(Ordering::Relaxed), 1, "batch {id}");
    }
    let stats = scheduler.stats();
    assert_eq!(stats.submitted, total as u64);
    assert_eq!(stats.completed, total as u64);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.chain.batches, total as u64);
    assert_eq!(stats.chain.spans_in, 3 * total as u64);
    assert_eq!(stats.chain.spans_out, 2 * total as u64);
}

#[test]
fn a_panicking_processor_does_not_stop_the_others() {
    let scheduler = Scheduler::new(chain(), 3).expect("starts");
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let n = 700;
    for id in 0..n {
        let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
        scheduler
            .submit(batch(id, id % 7 == 0), move |result| match result {
                Ok(_) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failed.lock().push(e.processor().to_owned()),
            })
            .expect("accepted");
    }
    scheduler.shutdown();
    let booms = (0..n).filter(|id| id % 7 == 0).count();
    assert_eq!(ok.load(Ordering::Relaxed) as usize, n - booms);
    let failed = failed.lock();
    assert_eq!(failed.len(), booms);
    assert!(failed.iter().all(|p| p == "bomb"));
    let stats = scheduler.stats();
    assert_eq!(stats.chain.panics_of("bomb"), booms as u64);
    assert_eq!(stats.chain.panics_of("filter"), 0);
    assert_eq!(stats.completed, n as u64);
}

#[test]
fn a_panicking_callback_is_caught_and_counted() {
    let scheduler = Scheduler::new(chain(), 2).expect("starts");
    for id in 0..50 {
        scheduler
            .submit(batch(id, false), move |_| {
                assert!(id % 10 != 3, "callback {id} fails");
            })
            .expect("accepted");
    }
    let last = scheduler.submit_ticket(batch(99, false)).expect("accepted");
    assert_eq!(names(&last.wait().expect("ok"))[0], "b99");
    scheduler.shutdown();
    let stats = scheduler.stats();
    assert_eq!(stats.callback_panics, 5);
    assert_eq!(stats.completed, 51);
}

#[test]
fn submit_after_shutdown_hands_the_batch_back() {
    let scheduler = Scheduler::new(chain(), 1).expect("starts");
    scheduler.shutdown();
    scheduler.shutdown(); // idempotent
    let err = scheduler
        .submit(batch(1, false), |_| panic!("must not be called"))
        .expect_err("refused");
    assert_eq!(err.into_inner().span_count(), 3);
    assert_eq!(scheduler.stats().submitted, 0);
}

#[test]
fn shutdown_drains_everything_already_submitted() {
    // One slow worker, many batches: shutdown must wait for all of them.
    struct Slow;
    impl Processor for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn process(&self, b: TraceRequest, _: &Context<'_>) -> Result<TraceRequest, ProcessError> {
            std::thread::sleep(std::time::Duration::from_micros(200));
            Ok(b)
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    {
        let scheduler = Scheduler::new(Chain::builder().processor(Slow).build().expect("chain"), 1)
            .expect("starts");
        for id in 0..200 {
            let done = Arc::clone(&done);
            scheduler
                .submit(batch(id, false), move |r| {
                    r.expect("ok");
                    done.fetch_add(1, Ordering::Relaxed);
                })
                .expect("accepted");
        }
        // Dropping the scheduler shuts it down.
    }
    assert_eq!(done.load(Ordering::Relaxed), 200);
}

#[test]
fn workers_are_named_and_idle_workers_wake_for_new_work() {
    let names_seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let scheduler = Scheduler::new(chain(), 2).expect("starts");
    for round in 0..5 {
        // Long enough for the workers to park between rounds.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let tickets: Vec<_> = (0..4)
            .map(|k| {
                let names_seen = Arc::clone(&names_seen);
                let ticket = scheduler
                    .submit_ticket(batch(round * 10 + k, false))
                    .expect("ok");
                scheduler
                    .submit(batch(0, false), move |_| {
                        let name = std::thread::current().name().unwrap_or("").to_owned();
                        names_seen.lock().insert(name);
                    })
                    .expect("ok");
                ticket
            })
            .collect();
        for t in tickets {
            t.wait().expect("processed");
        }
    }
    scheduler.shutdown();
    assert!(
        names_seen
            .lock()
            .iter()
            .all(|n| n.starts_with("spanflow-proc-"))
    );
}

#[test]
fn idle_workers_park_instead_of_spinning() {
    let scheduler = Scheduler::new(chain(), 3).expect("starts");
    scheduler
        .submit_ticket(batch(1, false))
        .expect("accepted")
        .wait()
        .expect("processed");
    // Workers spin only a few rounds before parking; give them time even on
    // a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while scheduler.stats().parked < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(scheduler.stats().parked, 3);
    // And parked workers still wake for new work.
    let out = scheduler
        .submit_ticket(batch(2, false))
        .expect("accepted")
        .wait()
        .expect("processed");
    assert_eq!(names(&out)[0], "b2");
}
