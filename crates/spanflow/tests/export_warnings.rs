//! A backend that cannot be reached is reported at once: one WARN on its first failed export
//! attempt (naming the backend and the error), nothing more while it stays down, one INFO when
//! it recovers. A backend that flaps logs the start of an outage at most once per 10 s.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use spanflow::export::{ExportBatch, ExportError, ExportOutcome, Exporter, OtlpGrpcExporter};
use spanflow::{Pipeline, PipelineBuilder};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// One captured event: its level and its fields (the message under `message`).
#[derive(Debug, Clone)]
struct Event {
    level: tracing::Level,
    fields: Vec<(String, String)>,
}

impl Event {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

/// Keeps every INFO-or-more-severe event of the whole process (the pipeline logs from its own
/// threads, so a thread-local subscriber would not see them).
struct Capture(Arc<Mutex<Vec<Event>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::INFO {
            return;
        }
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        if let Ok(mut events) = self.0.lock() {
            events.push(Event { level, fields });
        }
    }
}

fn events() -> &'static Arc<Mutex<Vec<Event>>> {
    static EVENTS: OnceLock<Arc<Mutex<Vec<Event>>>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let events = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&events)));
        tracing::subscriber::set_global_default(subscriber).expect("only this sets a subscriber");
        events
    })
}

/// The captured events at `level` about `backend`.
fn about(backend: &str, level: tracing::Level) -> Vec<Event> {
    events()
        .lock()
        .expect("events lock")
        .iter()
        .filter(|e| e.level == level && e.field("backend") == Some(backend))
        .cloned()
        .collect()
}

/// Waits up to `limit` for the first event at `level` about `backend`.
fn wait_for(backend: &str, level: tracing::Level, limit: Duration) -> Option<Event> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(event) = about(backend, level).into_iter().next() {
            return Some(event);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An address nothing listens on: bound, then released.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

fn provider(pipeline: &Pipeline) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_span_processor(spanflow::SpanProcessor::new(pipeline.clone()))
        .build()
}

fn end_one_span(provider: &SdkTracerProvider) {
    provider.tracer("warnings").in_span("work", |_cx| {});
}

fn quick(builder: PipelineBuilder) -> PipelineBuilder {
    builder.max_batch_age(Duration::from_millis(10))
}

#[test]
fn first_failed_export_warns_at_once_then_stays_quiet() {
    events();
    let exporter = OtlpGrpcExporter::builder()
        .endpoint(closed_port())
        .build()
        .expect("exporter");
    let pipeline = quick(Pipeline::builder())
        .exporter("closed-port", exporter)
        .build()
        .expect("pipeline");
    let provider = provider(&pipeline);
    let started = Instant::now();
    end_one_span(&provider);

    let warning = wait_for("closed-port", tracing::Level::WARN, Duration::from_secs(5))
        .expect("no WARN about the unreachable backend within 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the WARN took {:?}",
        started.elapsed()
    );
    let error = warning.field("error").unwrap_or_default();
    assert!(!error.is_empty(), "the WARN names no error: {warning:?}");

    // Retries keep failing (100 ms, 150 ms, 225 ms… apart) without another WARN.
    std::thread::sleep(Duration::from_millis(1_500));
    let stats = pipeline.stats();
    assert!(stats.retried >= 2, "expected retries by now: {stats}");
    assert_eq!(
        about("closed-port", tracing::Level::WARN).len(),
        1,
        "one WARN per outage"
    );
    // The span cannot be delivered: shutdown gives up at its deadline.
    assert!(
        provider
            .shutdown_with_timeout(Duration::from_millis(200))
            .is_err()
    );
}

/// Fails while `down` is set.
#[derive(Debug, Clone, Default)]
struct Switchable {
    down: Arc<AtomicBool>,
}

impl Exporter for Switchable {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(ExportError::Transport("switched off".into()));
        }
        Ok(ExportOutcome::all_accepted(batch.spans))
    }

    fn name(&self) -> &str {
        "switchable"
    }
}

#[test]
fn recovery_is_logged_once_at_info() {
    events();
    let exporter = Switchable::default();
    exporter.down.store(true, Ordering::Relaxed);
    let pipeline = quick(Pipeline::builder())
        .exporter("flaky", exporter.clone())
        .build()
        .expect("pipeline");
    let provider = provider(&pipeline);
    end_one_span(&provider);
    let warning = wait_for("flaky", tracing::Level::WARN, Duration::from_secs(5))
        .expect("no WARN about the failing backend within 5 s");
    assert_eq!(
        warning.field("error"),
        Some("transport error: switched off")
    );
    assert!(about("flaky", tracing::Level::INFO).is_empty());

    exporter.down.store(false, Ordering::Relaxed);
    wait_for("flaky", tracing::Level::INFO, Duration::from_secs(5))
        .expect("no INFO about the recovered backend within 5 s");
    pipeline
        .flush(Duration::from_secs(5))
        .expect("delivered after recovery");
    end_one_span(&provider);
    pipeline
        .flush(Duration::from_secs(5))
        .expect("delivered while healthy");
    assert_eq!(about("flaky", tracing::Level::INFO).len(), 1);
    assert_eq!(about("flaky", tracing::Level::WARN).len(), 1);
    provider
        .shutdown_with_timeout(Duration::from_secs(5))
        .expect("shutdown");
    assert_eq!(pipeline.stats().exported, 2);
}

#[test]
fn a_flapping_backend_warns_once_per_interval() {
    events();
    let exporter = Switchable::default();
    let pipeline = quick(Pipeline::builder())
        .exporter("flapping", exporter.clone())
        .build()
        .expect("pipeline");
    let provider = provider(&pipeline);
    let started = Instant::now();
    // Five outages, each seen by a failed attempt and ended by a delivered span.
    for _ in 0..5 {
        exporter.down.store(true, Ordering::Relaxed);
        let failed_before = pipeline.stats().retried;
        end_one_span(&provider);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pipeline.stats().retried == failed_before {
            assert!(Instant::now() < deadline, "no failed attempt within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        exporter.down.store(false, Ordering::Relaxed);
        pipeline
            .flush(Duration::from_secs(5))
            .expect("delivered once the backend is back");
    }
    // The loop takes well under the 10 s interval (a second on a quiet machine): one WARN and
    // its one INFO. A machine slow enough to pass an interval may log one more pair per 10 s.
    let intervals = 1 + started.elapsed().as_secs() as usize / 10;
    let warnings = about("flapping", tracing::Level::WARN).len();
    assert!(
        (1..=intervals).contains(&warnings),
        "{warnings} WARNs in {:?}",
        started.elapsed()
    );
    assert_eq!(about("flapping", tracing::Level::INFO).len(), warnings);
    provider
        .shutdown_with_timeout(Duration::from_secs(5))
        .expect("shutdown");
    assert_eq!(pipeline.stats().exported, 5);
}
