//! Fan-out behaviour: isolation of backends, overflow policies, fallback, flush, shutdown,
//! health, zero-copy sharing, and exact accounting.
#![cfg(not(loom))]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use proptest::prelude::*;
use spanflow_export::{
    BackendConfig, ExportBatch, ExportError, ExportOutcome, Exporter, FanOut, Health,
    OtlpGrpcExporter, QueuePolicy, RetryConfig,
};

fn deadline(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn id_batch(id: u64) -> ExportBatch {
    ExportBatch::new(Bytes::from(id.to_be_bytes().to_vec()), 1)
}

fn id_of(batch: &ExportBatch) -> u64 {
    u64::from_be_bytes(batch.body[..8].try_into().unwrap())
}

fn quick_retry() -> RetryConfig {
    RetryConfig {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        multiplier: 2.0,
        jitter: 0.0,
        max_elapsed: Duration::from_secs(10),
    }
}

fn cfg(queue: usize, concurrency: usize) -> BackendConfig {
    BackendConfig {
        queue,
        concurrency,
        retry: quick_retry(),
        timeout: Duration::from_secs(5),
        ..BackendConfig::default()
    }
}

/// `cfg` with a drop policy: the queue holds at most `queue` batches.
fn dropping(policy: QueuePolicy, queue: usize, concurrency: usize) -> BackendConfig {
    BackendConfig {
        policy,
        ..cfg(queue, concurrency)
    }
}

/// Records each batch it gets (id, body pointer); optionally waits on a gate first.
#[derive(Default)]
struct Recording {
    seen: Arc<Mutex<Vec<(u64, usize)>>>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Exporter for Recording {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.seen
            .lock()
            .push((id_of(&batch), batch.body.as_ptr() as usize));
        Ok(ExportOutcome::all_accepted(batch.spans))
    }
    fn name(&self) -> &str {
        "recording"
    }
}

/// Never answers.
struct Hanging;

impl Exporter for Hanging {
    async fn export(&self, _batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        std::future::pending().await
    }
    fn name(&self) -> &str {
        "hanging"
    }
}

/// Outcome chosen by the batch id: `id % 4 == 1` permanent, `id % 4 == 2` fails
/// `fails` times with a retryable error first, else succeeds.
struct Scripted {
    fails: u32,
    attempts: Mutex<HashMap<u64, u32>>,
}

impl Exporter for Scripted {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let id = id_of(&batch);
        let n = {
            let mut a = self.attempts.lock();
            let n = a.entry(id).or_default();
            *n += 1;
            *n
        };
        tokio::task::yield_now().await;
        match id % 4 {
            1 => Err(ExportError::InvalidBatch("scripted".into())),
            2 if n <= self.fails => Err(ExportError::Transport("scripted".into())),
            _ => Ok(ExportOutcome::all_accepted(batch.spans)),
        }
    }
    fn name(&self) -> &str {
        "scripted"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_bytes_are_shared_not_copied() {
    let recs: Vec<Recording> = (0..3).map(|_| Recording::default()).collect();
    let seen: Vec<_> = recs.iter().map(|r| r.seen.clone()).collect();
    let mut b = FanOut::builder();
    for (i, r) in recs.into_iter().enumerate() {
        b = b.backend(format!("b{i}"), r, cfg(64, 2));
    }
    let fan = b.build(&tokio::runtime::Handle::current()).unwrap();
    let mut ptrs = HashMap::new();
    for id in 0..20 {
        let batch = id_batch(id);
        ptrs.insert(id, batch.body.as_ptr() as usize);
        fan.send(batch).unwrap();
    }
    fan.flush(deadline(5000)).await.unwrap();
    for s in &seen {
        let s = s.lock();
        assert_eq!(s.len(), 20);
        for (id, ptr) in s.iter() {
            assert_eq!(ptrs[id], *ptr, "batch {id} was copied");
        }
    }
    fan.shutdown(deadline(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_fills_only_its_own_queue() {
    let rec = Recording::default();
    let seen = rec.seen.clone();
    let fan = FanOut::builder()
        .backend("healthy", rec, cfg(1000, 4))
        .backend("dead", Hanging, dropping(QueuePolicy::DropNewest, 8, 2))
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for id in 0..500 {
        fan.send(id_batch(id)).unwrap(); // never waits on "dead"
    }
    // The healthy backend finishes everything while the dead one holds 2 in flight + 8 queued.
    let start = Instant::now();
    while seen.lock().len() < 500 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "healthy backend stalled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = fan.stats();
    let dead = stats.backend("dead").unwrap();
    // Sends race with the dead backend's dispatcher: it holds at most 2 in flight + 8 queued.
    assert_eq!(dead.dropped_batches + dead.queued + dead.in_flight, 500);
    assert!(dead.in_flight <= 2 && dead.queued <= 8, "{dead:?}");
    assert!(dead.dropped_batches >= 490);
    assert_eq!(
        *fan.health()
            .borrow()
            .iter()
            .find(|h| h.name == "dead")
            .map(|h| &h.health)
            .unwrap(),
        Health::Degraded
    );
    let stats = fan.shutdown(deadline(200)).await;
    let dead = stats.backend("dead").unwrap();
    assert_eq!(
        dead.dropped_batches + dead.unconfirmed_batches,
        500,
        "cancelled ones are counted too"
    );
    assert!(
        dead.unconfirmed_batches <= 2,
        "only those in flight may have arrived"
    );
    assert_eq!((dead.in_flight, dead.queued), (0, 0));
    let healthy = stats.backend("healthy").unwrap();
    assert_eq!(healthy.exported_batches, 500);
    // Every batch settles once; none was delivered everywhere (the dead backend took none).
    let settled = fan.settled();
    assert_eq!(
        (settled.batches, settled.spans, settled.exported),
        (500, 500, 0)
    );
    assert_eq!(settled.dropped() + settled.unconfirmed, 500, "{settled:?}");
    assert!(
        fan.health()
            .borrow()
            .iter()
            .all(|h| h.health == Health::Stopped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_newest() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let rec = Recording {
        seen: Default::default(),
        gate: Some(gate.clone()),
    };
    let seen = rec.seen.clone();
    let fan = FanOut::builder()
        .backend(
            "b",
            rec,
            BackendConfig {
                policy: QueuePolicy::DropOldest,
                ..cfg(4, 1)
            },
        )
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    fan.send(id_batch(0)).unwrap();
    // Wait until batch 0 is in flight (holding the only permit).
    while fan.stats().backends[0].in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for id in 1..=10 {
        fan.send(id_batch(id)).unwrap();
    }
    gate.add_permits(100);
    fan.flush(deadline(5000)).await.unwrap();
    let ids: Vec<u64> = seen.lock().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![0, 7, 8, 9, 10]);
    let s = fan.shutdown(deadline(1000)).await;
    assert_eq!(s.backends[0].dropped_batches, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_the_oldest() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let rec = Recording {
        seen: Default::default(),
        gate: Some(gate.clone()),
    };
    let seen = rec.seen.clone();
    let fan = FanOut::builder()
        .backend("b", rec, dropping(QueuePolicy::DropNewest, 4, 1))
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    fan.send(id_batch(0)).unwrap();
    while fan.stats().backends[0].in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for id in 1..=10 {
        fan.send(id_batch(id)).unwrap();
    }
    gate.add_permits(100);
    fan.flush(deadline(5000)).await.unwrap();
    let ids: Vec<u64> = seen.lock().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    fan.shutdown(deadline(1000)).await;
    let settled = fan.settled();
    assert_eq!((settled.exported, settled.dropped_queue_full), (5, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_keeps_every_batch_of_a_stalled_backend() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let rec = Recording {
        seen: Default::default(),
        gate: Some(gate.clone()),
    };
    let seen = rec.seen.clone();
    // `queue` is 4, but under the default policy it does not limit anything.
    let fan = FanOut::builder()
        .backend("b", rec, cfg(4, 1))
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for id in 0..100 {
        fan.send(id_batch(id)).unwrap();
    }
    let s = fan.stats();
    assert_eq!(s.backends[0].dropped_batches, 0);
    assert_eq!(s.backends[0].queued + s.backends[0].in_flight, 100);
    assert_eq!(fan.pending_batches(), 100);
    gate.add_permits(1000);
    fan.flush(deadline(10_000)).await.unwrap();
    let ids: Vec<u64> = seen.lock().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    fan.shutdown(deadline(1000)).await;
    assert_eq!(fan.settled().exported, 100);
    assert_eq!(fan.pending_batches(), 0);
}

/// Answers only after a delay longer than the attempt timeout, so the attempt times out
/// although the backend processed it.
struct LateAnswer;

impl Exporter for LateAnswer {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(ExportOutcome::all_accepted(batch.spans))
    }
    fn name(&self) -> &str {
        "late"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_attempts_settle_as_unconfirmed_not_failed() {
    let fan = FanOut::builder()
        .backend(
            "late",
            LateAnswer,
            BackendConfig {
                timeout: Duration::from_millis(20),
                retry: RetryConfig {
                    max_elapsed: Duration::from_millis(50),
                    ..quick_retry()
                },
                ..cfg(16, 2)
            },
        )
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for id in 0..3 {
        fan.send(id_batch(id * 4)).unwrap();
    }
    fan.flush(deadline(10_000)).await.unwrap();
    let settled = fan.settled();
    assert_eq!((settled.unconfirmed, settled.failed), (3, 0), "{settled:?}");
    let b = &fan.shutdown(deadline(1000)).await.backends[0];
    assert_eq!((b.unconfirmed_batches, b.failed_batches), (3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_settles_in_flight_batches_as_unconfirmed() {
    let fan = FanOut::builder()
        .backend("hanging", Hanging, cfg(16, 2))
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for id in 0..5 {
        fan.send(id_batch(id * 4)).unwrap();
    }
    while fan.stats().backends[0].in_flight < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    fan.shutdown(deadline(100)).await;
    let settled = fan.settled();
    // Two were in flight (may have arrived); three never left the queue.
    assert_eq!(
        (
            settled.unconfirmed,
            settled.dropped_shutdown,
            settled.batches
        ),
        (2, 3, 5),
        "{settled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_failures_go_to_the_fallback() {
    let rx_primary = common::grpc_receiver().await;
    rx_primary.faults.permanent.store(true, SeqCst);
    let rx_fallback = common::grpc_receiver().await;
    let primary = OtlpGrpcExporter::builder()
        .endpoint(rx_primary.grpc_url())
        .build()
        .unwrap();
    let fallback = OtlpGrpcExporter::builder()
        .endpoint(rx_fallback.grpc_url())
        .build()
        .unwrap();
    let fan = FanOut::builder()
        .backend("primary", primary, cfg(64, 2))
        .fallback("fallback", fallback, cfg(64, 2))
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for i in 0..10 {
        fan.send(common::batch(i * 5, 5)).unwrap();
    }
    // flush covers the fallback attempts of batches that failed on the primary.
    fan.flush(deadline(10_000)).await.unwrap();
    rx_fallback.seen.assert_all_arrived(50);
    let s = fan.shutdown(deadline(1000)).await;
    let p = s.backend("primary").unwrap();
    let f = s.backend("fallback").unwrap();
    assert_eq!((p.failed_batches, p.to_fallback_batches), (10, 10));
    assert_eq!((f.received_batches, f.exported_batches), (10, 10));
    // Delivered through the fallback: exported, once.
    let settled = fan.settled();
    assert_eq!(
        (settled.batches, settled.exported, settled.failed),
        (10, 50, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_cancels_retries_and_counts_them() {
    let fan = FanOut::builder()
        .backend(
            "b",
            Scripted {
                fails: u32::MAX,
                attempts: Default::default(),
            },
            BackendConfig {
                // A real 30 s backoff (quick_retry's 5 ms cap would keep attempts running, and
                // an attempt cut off mid-flight is rightly unconfirmed, not dropped): at the
                // deadline every batch is in its backoff or still queued.
                retry: RetryConfig {
                    initial_backoff: Duration::from_secs(30),
                    max_backoff: Duration::from_secs(30),
                    max_elapsed: Duration::from_secs(120),
                    ..quick_retry()
                },
                ..cfg(64, 2)
            },
        )
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for id in [2, 6, 10, 14, 18] {
        fan.send(id_batch(id)).unwrap(); // all retryable forever, 30 s backoff
    }
    let started = Instant::now();
    let s = fan.shutdown(deadline(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let b = &s.backends[0];
    assert_eq!(b.dropped_batches, 5, "{b:?}");
    assert_eq!(b.received_batches, 5);
    // Every attempt failed before reaching the backend: certainly not delivered.
    assert_eq!(fan.settled().dropped_shutdown, 5);
    assert!(fan.send(id_batch(0)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_degraded_then_running() {
    let rx = common::grpc_receiver().await;
    rx.faults.fail_next.store(1, SeqCst);
    let e = OtlpGrpcExporter::builder()
        .endpoint(rx.grpc_url())
        .build()
        .unwrap();
    let fan = FanOut::builder()
        .backend(
            "g",
            e,
            BackendConfig {
                retry: RetryConfig {
                    initial_backoff: Duration::from_millis(100),
                    ..quick_retry()
                },
                ..cfg(8, 1)
            },
        )
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    let mut health = fan.health();
    assert_eq!(health.borrow()[0].health, Health::Idle);
    fan.send(common::batch(0, 1)).unwrap();
    let mut states = Vec::new();
    while states.last() != Some(&Health::Running) {
        tokio::time::timeout(Duration::from_secs(5), health.changed())
            .await
            .unwrap()
            .unwrap();
        states.push(health.borrow_and_update()[0].health);
    }
    assert_eq!(states, vec![Health::Degraded, Health::Running]);
    fan.shutdown(deadline(1000)).await;
}

#[test]
fn builder_rejects_bad_configurations() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.handle();
    assert!(FanOut::builder().build(h).is_err());
    assert!(
        FanOut::builder()
            .backend("a", Hanging, cfg(1, 1))
            .backend("a", Hanging, cfg(1, 1))
            .build(h)
            .is_err()
    );
    assert!(
        FanOut::builder()
            .backend("a", Hanging, cfg(0, 1))
            .build(h)
            .is_err()
    );
    assert!(
        FanOut::builder()
            .fallback("f", Hanging, cfg(1, 1))
            .build(h)
            .is_err()
    );
}

/// Many threads send to three backends at once: each backend sees every batch exactly once.
#[test]
fn concurrent_senders_nothing_lost_nothing_duplicated() {
    let threads = 4u64;
    let per_thread: u64 = std::env::var("SPANFLOW_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let recs: Vec<Recording> = (0..3).map(|_| Recording::default()).collect();
    let seen: Vec<_> = recs.iter().map(|r| r.seen.clone()).collect();
    let mut b = FanOut::builder();
    for (i, r) in recs.into_iter().enumerate() {
        b = b.backend(format!("b{i}"), r, cfg((threads * per_thread) as usize, 3));
    }
    let fan = Arc::new(b.build(rt.handle()).unwrap());
    std::thread::scope(|s| {
        for t in 0..threads {
            let fan = fan.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    fan.send(id_batch(t * per_thread + i)).unwrap();
                }
            });
        }
    });
    rt.block_on(fan.flush(deadline(30_000))).unwrap();
    for s in &seen {
        let mut ids: Vec<u64> = s.lock().iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..threads * per_thread).collect::<Vec<_>>());
    }
    let stats = rt.block_on(fan.shutdown(deadline(1000)));
    for b in &stats.backends {
        assert_eq!(b.exported_batches, threads * per_thread);
        assert_eq!(b.dropped_batches + b.failed_batches, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Against a sequential model: with a queue large enough, each batch's fate is decided by
    /// its id alone; the stats must say exactly that, and add up.
    #[test]
    fn accounting_matches_a_sequential_model(
        ids in proptest::collection::vec(0u64..1000, 1..60),
        fails in 0u32..3,
        concurrency in 1usize..4,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let retry = RetryConfig { max_elapsed: Duration::from_secs(10), ..quick_retry() };
        let fan = FanOut::builder()
            .backend("s", Scripted { fails, attempts: Default::default() }, BackendConfig { retry, ..cfg(64, concurrency) })
            .build(rt.handle())
            .unwrap();
        for &id in &ids {
            fan.send(id_batch(id)).unwrap();
        }
        let stats = rt.block_on(fan.shutdown(deadline(30_000)));
        let s = &stats.backends[0];
        // Model: ids % 4 == 1 fail permanently; id % 4 == 2 retry `fails` times per id
        // (attempts are counted per id, so a repeated id fails only on its first sends).
        let mut attempts: HashMap<u64, u32> = HashMap::new();
        let (mut ok, mut failed, mut retries) = (0u64, 0u64, 0u64);
        for &id in &ids {
            if id % 4 == 1 { failed += 1; continue; }
            if id % 4 == 2 {
                let a = attempts.entry(id).or_default();
                let left = fails.saturating_sub(*a);
                *a += left + 1;
                retries += left as u64;
            }
            ok += 1;
        }
        prop_assert_eq!(s.received_batches, ids.len() as u64);
        prop_assert_eq!(s.exported_batches, ok);
        prop_assert_eq!(s.failed_batches, failed);
        prop_assert_eq!(s.permanent_errors, failed);
        prop_assert_eq!(s.dropped_batches, 0);
        prop_assert_eq!(s.retries, retries);
        prop_assert_eq!(s.received_batches, s.exported_batches + s.failed_batches + s.dropped_batches);
        prop_assert_eq!((s.queued, s.in_flight), (0, 0));
        // The settlement agrees: one span per batch, each settled once.
        let settled = fan.settled();
        prop_assert_eq!(settled.batches, ids.len() as u64);
        prop_assert_eq!((settled.exported, settled.failed), (ok, failed));
        prop_assert_eq!(settled.spans, settled.exported + settled.failed);
    }
}

/// With one backend hanging, the healthy one's throughput stays where it is alone.
/// Structural part: `send` never waits and the healthy backend exports everything while the
/// hanging one holds only its own queue. Timing part, kept loose for noisy 2-core machines:
/// alone/with-hang runs interleaved, best of three each, ratio printed, bound generous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_backend_does_not_slow_the_healthy_one() {
    let healthy = common::grpc_receiver().await;
    let hanging = common::grpc_receiver().await;
    hanging.faults.hang.store(true, SeqCst);
    let batches = 300u64;
    let payload: Vec<ExportBatch> = (0..batches).map(|i| common::batch(i * 50, 50)).collect();
    let run = |with_hang: bool| {
        let payload = &payload;
        let healthy_url = healthy.grpc_url();
        let hanging_url = hanging.grpc_url();
        async move {
            let mut b = FanOut::builder().backend(
                "healthy",
                OtlpGrpcExporter::builder()
                    .endpoint(healthy_url)
                    .build()
                    .unwrap(),
                cfg(batches as usize, 4),
            );
            if with_hang {
                b = b.backend(
                    "hanging",
                    OtlpGrpcExporter::builder()
                        .endpoint(hanging_url)
                        .build()
                        .unwrap(),
                    BackendConfig {
                        timeout: Duration::from_secs(60),
                        ..dropping(QueuePolicy::DropNewest, 16, 4)
                    },
                );
            }
            let fan = b.build(&tokio::runtime::Handle::current()).unwrap();
            let started = Instant::now();
            for batch in payload {
                fan.send(batch.clone()).unwrap();
            }
            loop {
                let s = fan.stats();
                if s.backend("healthy").unwrap().exported_batches == batches {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "healthy backend stalled"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let took = started.elapsed();
            let stats = fan.shutdown(deadline(200)).await;
            if with_hang {
                let h = stats.backend("hanging").unwrap();
                assert_eq!(h.exported_batches, 0);
                assert_eq!(
                    h.dropped_batches + h.unconfirmed_batches,
                    batches,
                    "drops and cancels are all counted"
                );
            }
            took
        }
    };
    let (mut alone, mut with_hang) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        alone = alone.min(run(false).await);
        with_hang = with_hang.min(run(true).await);
    }
    let ratio = with_hang.as_secs_f64() / alone.as_secs_f64();
    println!(
        "healthy backend time alone {alone:?}, next to a hanging one {with_hang:?}, ratio {ratio:.3}"
    );
    assert!(ratio < 2.0, "healthy backend slowed down by {ratio:.2}x");
}
