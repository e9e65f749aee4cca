//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span, Tracer, TracerProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use spanflow::SpanProcessor;

/// Runs `f` on its own thread and fails the test if it has not returned within `limit`: a
/// deadlock becomes a failure instead of a hung CI job. Panics inside `f` propagate.
pub fn watchdog<T: Send + 'static>(
    limit: Duration,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("watched-{name}"))
        .spawn(move || {
            let out = f();
            let _ = done.send(());
            out
        })
        .expect("spawn watched thread");
    match finished.recv_timeout(limit) {
        Ok(()) => thread.join().expect("watched thread panicked"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Ok(_) => unreachable!("sender dropped without sending"),
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: did not finish within {limit:?} (deadlock?)")
        }
    }
}

/// A tracer provider with one spanflow processor.
pub fn provider(processor: SpanProcessor, service: &'static str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build())
        .with_span_processor(processor)
        .build()
}

/// Ends `n` spans with four attributes each, like the benchmarks.
pub fn end_spans(provider: &SdkTracerProvider, n: u64) {
    let tracer = provider.tracer("tests");
    for i in 0..n {
        let mut span = tracer.start("operation");
        span.set_attributes([
            KeyValue::new("http.method", "GET"),
            KeyValue::new("http.route", "/items/{id}"),
            KeyValue::new("http.status_code", 200),
            KeyValue::new("item.id", i as i64),
        ]);
        span.end();
    }
}
