//! OTLP/gRPC exporter against an in-process tonic receiver with fault injection.
#![cfg(not(loom))]

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{batch, grpc_receiver};
use spanflow_export::{
    BackendConfig, Compression, ExportError, Exporter, FanOut, OtlpGrpcExporter, RetryConfig,
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

fn config(retry: RetryConfig) -> BackendConfig {
    BackendConfig {
        queue: 1024,
        concurrency: 4,
        retry,
        timeout: Duration::from_secs(5),
        ..BackendConfig::default()
    }
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_bytes_with_each_compression_and_metadata() {
    let rx = grpc_receiver().await;
    let mut first = 0;
    for (compression, expected) in [
        (Compression::None, None),
        (Compression::Gzip, Some("gzip")),
        (Compression::Zstd, Some("zstd")),
    ] {
        let e = OtlpGrpcExporter::builder()
            .endpoint(rx.grpc_url())
            .compression(compression)
            .header("x-test", "hello")
            .build()
            .unwrap();
        let out = e.export(batch(first, 25)).await.unwrap();
        assert_eq!((out.accepted, out.rejected), (25, 0));
        assert_eq!(rx.seen.last_header.lock().as_deref(), Some("hello"));
        assert_eq!(rx.seen.last_encoding.lock().as_deref(), expected);
        first += 25;
    }
    assert_eq!(rx.seen.assert_all_arrived(first), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_first_n_unavailable_every_span_arrives() {
    let rx = grpc_receiver().await;
    rx.faults.fail_next.store(7, SeqCst);
    let e = OtlpGrpcExporter::builder()
        .endpoint(rx.grpc_url())
        .build()
        .unwrap();
    let fan = FanOut::builder()
        .backend("grpc", e, config(fast_retry()))
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for i in 0..40 {
        fan.send(batch(i * 10, 10)).unwrap();
    }
    fan.flush(deadline(30)).await.unwrap();
    let s = fan.shutdown(deadline(5)).await;
    let s = s.backend("grpc").unwrap();
    // UNAVAILABLE is answered before the receiver stores anything: no duplicates here.
    assert_eq!(rx.seen.assert_all_arrived(400), 0);
    assert_eq!(s.exported_batches, 40);
    assert_eq!(s.accepted_spans, 400);
    assert_eq!(s.retries, 7);
    assert_eq!(s.failed_batches + s.dropped_batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_invalid_argument_is_counted_not_retried() {
    let rx = grpc_receiver().await;
    rx.faults.permanent.store(true, SeqCst);
    let e = OtlpGrpcExporter::builder()
        .endpoint(rx.grpc_url())
        .build()
        .unwrap();
    let direct = e.export(batch(0, 1)).await.unwrap_err();
    assert!(matches!(
        direct,
        ExportError::Grpc {
            code: tonic::Code::InvalidArgument,
            ..
        }
    ));
    let fan = FanOut::builder()
        .backend("grpc", e, config(fast_retry()))
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    for i in 0..5 {
        fan.send(batch(i * 3, 3)).unwrap();
    }
    let s = fan.shutdown(deadline(10)).await;
    let s = s.backend("grpc").unwrap();
    assert_eq!(s.failed_batches, 5);
    assert_eq!(s.failed_spans, 15);
    assert_eq!(s.permanent_errors, 5);
    assert_eq!(s.retries, 0);
    assert_eq!(
        rx.seen.requests.load(SeqCst),
        6,
        "one request per batch, none retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhausted_with_retry_info_waits_the_given_delay() {
    let rx = grpc_receiver().await;
    rx.faults.fail_next.store(1, SeqCst);
    rx.faults.throttle_ms.store(400, SeqCst);
    let e = OtlpGrpcExporter::builder()
        .endpoint(rx.grpc_url())
        .build()
        .unwrap();
    let fan = FanOut::builder()
        .backend("grpc", e, config(fast_retry()))
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    let started = Instant::now();
    fan.send(batch(0, 5)).unwrap();
    fan.flush(deadline(10)).await.unwrap();
    // The server's RetryInfo (400 ms) replaces the 10 ms backoff.
    assert!(started.elapsed() >= Duration::from_millis(400));
    let s = fan.shutdown(deadline(5)).await;
    let s = s.backend("grpc").unwrap();
    assert_eq!((s.retries, s.exported_batches), (1, 1));
    rx.seen.assert_all_arrived(5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_is_reported_and_not_retried() {
    let rx = grpc_receiver().await;
    rx.faults.reject.store(3, SeqCst);
    let e = OtlpGrpcExporter::builder()
        .endpoint(rx.grpc_url())
        .build()
        .unwrap();
    let out = e.export(batch(0, 10)).await.unwrap();
    assert_eq!((out.accepted, out.rejected), (7, 3));
    assert_eq!(out.message.as_deref(), Some("too old"));
    let fan = FanOut::builder()
        .backend("grpc", e, config(fast_retry()))
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    fan.send(batch(10, 10)).unwrap();
    let s = fan.shutdown(deadline(10)).await;
    let s = s.backend("grpc").unwrap();
    assert_eq!((s.accepted_spans, s.rejected_spans, s.retries), (7, 3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_past_timeout_is_retried_then_unconfirmed() {
    let rx = grpc_receiver().await;
    rx.faults.hang.store(true, SeqCst);
    let e = OtlpGrpcExporter::builder()
        .endpoint(rx.grpc_url())
        .build()
        .unwrap();
    let retry = RetryConfig {
        max_elapsed: Duration::from_millis(600),
        ..fast_retry()
    };
    let fan = FanOut::builder()
        .backend(
            "grpc",
            e,
            BackendConfig {
                timeout: Duration::from_millis(150),
                ..config(retry)
            },
        )
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    fan.send(batch(0, 4)).unwrap();
    fan.flush(deadline(10)).await.unwrap();
    let s = fan.shutdown(deadline(5)).await;
    let s = s.backend("grpc").unwrap();
    // The server received every attempt and never answered: delivery is unknown, not failed.
    assert_eq!((s.unconfirmed_batches, s.failed_batches), (1, 0));
    assert_eq!(s.permanent_errors, 0);
    assert!(s.retries >= 1, "{s:?}");
    assert_eq!(fan.settled().unconfirmed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = OtlpGrpcExporter::builder()
        .endpoint(format!("http://{addr}"))
        .build()
        .unwrap();
    let err = e.export(batch(0, 1)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

/// The scenario: the backend is down for 5 s; the queue is sized for it; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_for_5s_loses_nothing() {
    let rx = grpc_receiver().await;
    let down = Duration::from_secs(5);
    *rx.faults.down_until.lock() = Some(Instant::now() + down);
    let e = OtlpGrpcExporter::builder()
        .endpoint(rx.grpc_url())
        .build()
        .unwrap();
    let retry = RetryConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        multiplier: 2.0,
        jitter: 0.3,
        max_elapsed: Duration::from_secs(60),
    };
    // 10 batches / 100 ms for 6 s = 600 batches; the queue holds all of them.
    let fan = FanOut::builder()
        .backend(
            "grpc",
            e,
            BackendConfig {
                queue: 600,
                ..config(retry)
            },
        )
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    let mut id = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..60 {
        tick.tick().await;
        for _ in 0..10 {
            fan.send(batch(id, 8)).unwrap();
            id += 8;
        }
    }
    fan.flush(deadline(60)).await.unwrap();
    let s = fan.shutdown(deadline(5)).await;
    let s = s.backend("grpc").unwrap();
    assert_eq!(s.dropped_batches + s.failed_batches, 0, "{s:?}");
    assert_eq!(s.exported_batches, 600);
    assert!(s.retries > 0);
    assert_eq!(rx.seen.assert_all_arrived(id), 0);
}

/// At-least-once: the only duplicates come from an attempt the server stored but the client
/// saw fail (here: the answer comes after the attempt timeout), which is then retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_only_when_server_stored_a_timed_out_attempt() {
    let rx = grpc_receiver().await;
    rx.faults.stall_after_store.store(1, SeqCst);
    let e = OtlpGrpcExporter::builder()
        .endpoint(rx.grpc_url())
        .build()
        .unwrap();
    let fan = FanOut::builder()
        .backend(
            "grpc",
            e,
            BackendConfig {
                timeout: Duration::from_millis(300),
                concurrency: 1,
                ..config(fast_retry())
            },
        )
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    fan.send(batch(0, 10)).unwrap();
    fan.send(batch(10, 10)).unwrap();
    fan.flush(deadline(10)).await.unwrap();
    let s = fan.shutdown(deadline(5)).await;
    let s = s.backend("grpc").unwrap();
    assert_eq!((s.exported_batches, s.retries), (2, 1));
    // The first batch arrived twice, the second once.
    assert_eq!(rx.seen.assert_all_arrived(20), 10);
}
