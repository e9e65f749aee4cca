//! A pipeline with a disk queue: requests are acknowledged once written, every primary reads
//! them back at its own pace, and what a shutdown leaves unexported is exported after the next
//! start, exactly once when nothing was in flight.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message;
use spanflow::export::{ExportBatch, ExportError, ExportOutcome, Exporter};
use spanflow::otlp::TraceRequest;
use spanflow::spool::{Fsync, SpoolConfig};
use spanflow::{Pipeline, QueueSettings, RequestFate};

const UP: u8 = 0;
const DOWN: u8 = 1;

/// A backend that records every span id it takes, and can be switched down.
#[derive(Clone, Default)]
struct Backend {
    state: Arc<AtomicU8>,
    seen: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Backend {
    fn down() -> Self {
        let b = Self::default();
        b.state.store(DOWN, SeqCst);
        b
    }
    fn seen(&self) -> HashMap<u64, u32> {
        self.seen.lock().clone()
    }
}

impl Exporter for Backend {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        if self.state.load(SeqCst) == DOWN {
            return Err(ExportError::Transport("connection refused".into()));
        }
        let request =
            spanflow::otlp::proto::collector::trace::v1::ExportTraceServiceRequest::decode(
                batch.body.clone(),
            )
            .map_err(|e| ExportError::InvalidBatch(e.to_string()))?;
        let mut seen = self.seen.lock();
        for rs in &request.resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let id = u64::from_be_bytes(span.span_id[..8].try_into().unwrap_or_default());
                    *seen.entry(id).or_default() += 1;
                }
            }
        }
        Ok(ExportOutcome::all_accepted(batch.spans))
    }
    fn name(&self) -> &str {
        "recording"
    }
}

fn request(first_id: u64, spans: u64) -> TraceRequest {
    use spanflow::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
    use spanflow::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let spans = (first_id..first_id + spans)
        .map(|id| Span {
            trace_id: [9u8; 16].to_vec(),
            span_id: id.to_be_bytes().to_vec(),
            name: "work".into(),
            ..Span::default()
        })
        .collect();
    TraceRequest::from_proto(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    })
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "spanflow-durable-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        Self(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn durable(dir: &Path, backends: &[(&str, &Backend)]) -> Pipeline {
    let mut builder = Pipeline::builder()
        .max_batch_age(Duration::from_millis(2))
        .config(spanflow::PipelineConfig {
            queue: QueueSettings::Disk(SpoolConfig {
                fsync: Fsync::Always,
                ..SpoolConfig::new(dir)
            }),
            ..Default::default()
        });
    for (name, backend) in backends {
        builder = builder.exporter(*name, (*backend).clone());
    }
    builder.build().expect("pipeline")
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn acknowledged_spans_survive_a_restart_and_arrive_once() {
    let dir = Dir::new("restart");
    let backend = Backend::down();
    let pipeline = durable(&dir.0, &[("main", &backend)]);
    for i in 0..20 {
        let receipt = pipeline.submit_tracked(request(i * 10, 10)).expect("room");
        let fate = receipt
            .wait_timeout(Duration::from_secs(10))
            .expect("written");
        assert_eq!(fate, RequestFate::Durable);
    }
    let err = pipeline
        .shutdown(Duration::from_millis(300))
        .expect_err("the backend is down");
    let stats = err.stats().expect("books").clone();
    assert_eq!(stats.accepted, 200);
    assert_eq!(stats.queued_spans, 200, "they wait in the spool: {stats}");
    assert_eq!(stats.unaccounted(), 0, "{stats}");
    assert_eq!(stats.dropped.total() + stats.unconfirmed + stats.failed, 0);

    // Next start, backend up: everything arrives, exactly once.
    let backend = Backend::default();
    let pipeline = durable(&dir.0, &[("main", &backend)]);
    wait_for("the replay", Duration::from_secs(20), || {
        backend.seen().len() == 200
    });
    let stats = pipeline
        .shutdown(Duration::from_secs(10))
        .expect("shutdown");
    assert_eq!((stats.accepted, stats.exported), (200, 200), "{stats}");
    assert_eq!(stats.queued_spans, 0);
    let seen = backend.seen();
    assert_eq!(seen.len(), 200);
    assert!(seen.values().all(|n| *n == 1), "delivered more than once");
    let spool = stats.spool.expect("spool stats");
    assert_eq!(spool.readers[0].pending_records, 0);
}

#[test]
fn a_slow_backend_holds_back_only_its_own_cursor() {
    let dir = Dir::new("two-readers");
    let fast = Backend::default();
    let slow = Backend::down();
    let pipeline = durable(&dir.0, &[("fast", &fast), ("slow", &slow)]);
    for i in 0..10 {
        pipeline.try_submit(request(i * 5, 5)).expect("room");
    }
    wait_for("the fast backend", Duration::from_secs(20), || {
        fast.seen().len() == 50
    });
    let stats = pipeline.stats();
    assert_eq!(stats.exported, 0, "not exported everywhere yet: {stats}");
    let spool = stats.spool.expect("spool stats");
    assert_eq!(spool.readers[0].pending_records, 0);
    assert!(spool.readers[1].pending_records > 0);
    slow.state.store(UP, SeqCst);
    let stats = pipeline
        .shutdown(Duration::from_secs(20))
        .expect("shutdown");
    assert_eq!((stats.accepted, stats.exported), (50, 50), "{stats}");
    assert_eq!(slow.seen().len(), 50);
}

#[test]
fn the_queue_settings_read_from_toml() {
    let config: spanflow::PipelineConfig = toml::from_str(
        "[queue]\ntype = \"disk\"\ndir = \"spanflow-queue\"\nfsync = \"always\"\nmax_bytes = \"64MiB\"\n",
    )
    .expect("valid");
    let QueueSettings::Disk(spool) = config.queue else {
        panic!("disk expected")
    };
    assert_eq!(spool.fsync, Fsync::Always);
    assert_eq!(spool.max_bytes.0, 64 << 20);
    let err = toml::from_str::<spanflow::PipelineConfig>("[queue]\ntype = \"disk\"\ndri = \"x\"\n")
        .expect_err("typo");
    assert!(err.to_string().contains("dri"), "{err}");
    assert_eq!(
        toml::from_str::<spanflow::PipelineConfig>("")
            .expect("empty")
            .queue,
        QueueSettings::Memory
    );
}
