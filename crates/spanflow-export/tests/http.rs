//! OTLP/HTTP exporter against an in-process axum receiver with fault injection.
#![cfg(not(loom))]

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{batch, http_receiver};
use spanflow_export::{
    BackendConfig, Compression, ExportError, Exporter, FanOut, HttpEncoding, OtlpHttpExporter,
    RetryConfig,
};

fn fast_retry() -> RetryConfig {
    RetryConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        multiplier: 2.0,
        jitter: 0.2,
        max_elapsed: Duration::from_secs(20),
    }
}

fn config() -> BackendConfig {
    BackendConfig {
        queue: 1024,
        concurrency: 4,
        retry: fast_retry(),
        timeout: Duration::from_secs(5),
        ..BackendConfig::default()
    }
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_and_json_bodies_with_each_compression() {
    let rx = http_receiver().await;
    let mut first = 0;
    for encoding in [HttpEncoding::Protobuf, HttpEncoding::Json] {
        for (compression, expected) in [
            (Compression::None, None),
            (Compression::Gzip, Some("gzip")),
            (Compression::Zstd, Some("zstd")),
        ] {
            let e = OtlpHttpExporter::builder()
                .endpoint(rx.http_url())
                .encoding(encoding)
                .compression(compression)
                .header("x-test", "hi")
                .build()
                .unwrap();
            let out = e.export(batch(first, 12)).await.unwrap();
            assert_eq!((out.accepted, out.rejected), (12, 0), "{encoding:?}");
            assert_eq!(rx.seen.last_header.lock().as_deref(), Some("hi"));
            assert_eq!(rx.seen.last_encoding.lock().as_deref(), expected);
            first += 12;
        }
    }
    assert_eq!(rx.seen.assert_all_arrived(first), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_endpoint_gets_v1_traces() {
    let rx = http_receiver().await;
    let e = OtlpHttpExporter::builder()
        .base_endpoint(format!("http://{}/", rx.addr))
        .build()
        .unwrap();
    e.export(batch(0, 1)).await.unwrap();
    rx.seen.assert_all_arrived(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_first_n_503_every_span_arrives() {
    let rx = http_receiver().await;
    rx.faults.fail_next.store(6, SeqCst);
    let e = OtlpHttpExporter::builder()
        .endpoint(rx.http_url())
        .build()
        .unwrap();
    let fan = FanOut::builder()
        .backend("http", e, config())
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for i in 0..30 {
        fan.send(batch(i * 10, 10)).unwrap();
    }
    fan.flush(deadline(30)).await.unwrap();
    let s = fan.shutdown(deadline(5)).await;
    let s = s.backend("http").unwrap();
    assert_eq!(rx.seen.assert_all_arrived(300), 0);
    assert_eq!(
        (s.exported_batches, s.retries, s.failed_batches),
        (30, 6, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_400_is_permanent_and_counted() {
    let rx = http_receiver().await;
    rx.faults.permanent.store(true, SeqCst);
    let e = OtlpHttpExporter::builder()
        .endpoint(rx.http_url())
        .build()
        .unwrap();
    let err = e.export(batch(0, 1)).await.unwrap_err();
    assert!(
        matches!(err, ExportError::Http { status: 400, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    let fan = FanOut::builder()
        .backend("http", e, config())
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for i in 0..4 {
        fan.send(batch(i, 1)).unwrap();
    }
    let s = fan.shutdown(deadline(10)).await;
    let s = s.backend("http").unwrap();
    assert_eq!((s.failed_batches, s.permanent_errors, s.retries), (4, 4, 0));
    assert_eq!(rx.seen.requests.load(SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_429_honours_retry_after() {
    let rx = http_receiver().await;
    rx.faults.fail_next.store(1, SeqCst);
    rx.faults.throttle_ms.store(1000, SeqCst);
    let e = OtlpHttpExporter::builder()
        .endpoint(rx.http_url())
        .build()
        .unwrap();
    let err = e.export(batch(0, 1)).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert!(err.is_retryable());
    rx.faults.fail_next.store(1, SeqCst);
    let fan = FanOut::builder()
        .backend("http", e, config())
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    let started = Instant::now();
    fan.send(batch(0, 3)).unwrap();
    fan.flush(deadline(10)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    let s = fan.shutdown(deadline(5)).await;
    assert_eq!(s.backend("http").unwrap().retries, 1);
    rx.seen.assert_all_arrived(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_protobuf_and_json() {
    let rx = http_receiver().await;
    rx.faults.reject.store(2, SeqCst);
    for encoding in [HttpEncoding::Protobuf, HttpEncoding::Json] {
        let e = OtlpHttpExporter::builder()
            .endpoint(rx.http_url())
            .encoding(encoding)
            .build()
            .unwrap();
        let out = e.export(batch(0, 5)).await.unwrap();
        assert_eq!((out.accepted, out.rejected), (3, 2), "{encoding:?}");
        assert_eq!(out.message.as_deref(), Some("too old"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_past_timeout_is_a_retryable_timeout() {
    let rx = http_receiver().await;
    rx.faults.hang.store(true, SeqCst);
    let e = OtlpHttpExporter::builder()
        .endpoint(rx.http_url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = e.export(batch(0, 1)).await.unwrap_err();
    assert!(matches!(err, ExportError::Timeout(_)), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_503_honours_retry_after_http_date() {
    let rx = http_receiver().await;
    rx.faults.retry_after_date.store(true, SeqCst);
    rx.faults.throttle_ms.store(2000, SeqCst);
    rx.faults.fail_next.store(1, SeqCst);
    let e = OtlpHttpExporter::builder()
        .endpoint(rx.http_url())
        .build()
        .unwrap();
    // The date has whole seconds: "now + 2 s" truncated is 1..=2 s after the receiver's clock,
    // which the client reads a moment later.
    let err = e.export(batch(0, 1)).await.unwrap_err();
    assert!(
        matches!(err, ExportError::Http { status: 503, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    let asked = err
        .retry_after()
        .expect("an HTTP-date Retry-After is a delay");
    assert!(
        asked > Duration::from_millis(500) && asked <= Duration::from_secs(2),
        "{asked:?}"
    );

    rx.faults.fail_next.store(1, SeqCst);
    let fan = FanOut::builder()
        .backend("http", e, config())
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    let started = Instant::now();
    fan.send(batch(0, 3)).unwrap();
    fan.flush(deadline(10)).await.unwrap();
    // Lower bound only: the computed backoff alone would retry after about 10 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let s = fan.shutdown(deadline(5)).await;
    let s = s.backend("http").unwrap();
    assert_eq!((s.retries, s.exported_batches, s.failed_batches), (1, 1, 0));
    assert_eq!(rx.seen.requests.load(SeqCst), 3);
    assert_eq!(rx.seen.assert_all_arrived(3), 0);
}
