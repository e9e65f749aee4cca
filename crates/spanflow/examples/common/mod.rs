//! A small in-process OTLP/gRPC trace receiver for the examples, tests and benches: it listens on
//! 127.0.0.1:0, counts the spans it receives, and can be told to fail or hang.
//!
//! With [`Sink::record_spans`] it also keeps each span's identity (trace id, span id, parent span
//! id, name), so an example can check that parent links survived the pipeline.
//!
//! It runs on its own thread with its own tokio runtime, so it can be started from `main`, from a
//! test, or from inside any runtime without interfering with the code under test.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// What the sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Accept every span.
    Accept = 0,
    /// Answer `UNAVAILABLE` (retryable) to every request.
    Unavailable = 1,
    /// Answer `INVALID_ARGUMENT` (permanent) to every request.
    Reject = 2,
    /// Never answer.
    Hang = 3,
}

#[derive(Debug, Default)]
struct Counts {
    spans: AtomicU64,
    requests: AtomicU64,
    behaviour: AtomicU8,
    /// Spans per service.name, for the multi-service example.
    services: parking_lot::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Whether to keep every span's identity in `spans_seen` (off by default: the throughput
    /// examples and tests send millions of spans).
    recording: AtomicBool,
    spans_seen: parking_lot::Mutex<Vec<SpanRecord>>,
}

/// The identity of one received span, as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// 16 bytes.
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    pub parent_span_id: Vec<u8>,
    pub name: String,
    /// The `service.name` of its resource (empty if none).
    pub service: String,
}

#[derive(Debug, Clone)]
struct Service {
    counts: Arc<Counts>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        match self.counts.behaviour.load(Ordering::Relaxed) {
            1 => return Err(tonic::Status::unavailable("sink told to be unavailable")),
            2 => return Err(tonic::Status::invalid_argument("sink told to reject")),
            3 => std::future::pending::<()>().await,
            _ => {}
        }
        let request = request.into_inner();
        let mut spans = 0u64;
        let mut services = self.counts.services.lock();
        for resource_spans in &request.resource_spans {
            let n: u64 = resource_spans
                .scope_spans
                .iter()
                .map(|s| s.spans.len() as u64)
                .sum();
            spans += n;
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            if self.counts.recording.load(Ordering::Relaxed) {
                let mut seen = self.counts.spans_seen.lock();
                for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                    seen.push(SpanRecord {
                        trace_id: span.trace_id.clone(),
                        span_id: span.span_id.clone(),
                        parent_span_id: span.parent_span_id.clone(),
                        name: span.name.clone(),
                        service: service.clone(),
                    });
                }
            }
            *services.entry(service).or_default() += n;
        }
        drop(services);
        self.counts.spans.fetch_add(spans, Ordering::Relaxed);
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running sink; stopped when dropped.
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    /// Starts a sink that accepts everything.
    pub fn start() -> Sink {
        Self::start_with(Behaviour::Accept)
    }

    /// Starts a sink with the given behaviour.
    pub fn start_with(behaviour: Behaviour) -> Sink {
        let counts = Arc::new(Counts::default());
        counts.behaviour.store(behaviour as u8, Ordering::Relaxed);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = Service {
            counts: Arc::clone(&counts),
        };
        let thread = std::thread::Builder::new()
            .name("otlp-sink".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("sink runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let incoming = tokio_stream_shim::TcpIncoming(listener);
                    let server = tonic::transport::Server::builder()
                        .add_service(
                            TraceServiceServer::new(service).max_decoding_message_size(64 << 20),
                        )
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stopped.await;
                        });
                    if let Err(err) = server.await {
                        eprintln!("otlp sink stopped: {err}");
                    }
                });
                // Hanging requests must not keep the process alive.
                runtime.shutdown_background();
            })
            .expect("spawn sink thread");
        Sink {
            addr,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, for exporters.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.counts.spans.load(Ordering::Relaxed)
    }

    /// Requests answered with success so far.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// Spans received per `service.name`.
    pub fn spans_by_service(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts.services.lock().clone()
    }

    /// Keeps the identity of every span received from now on (see [`Sink::spans_seen`]).
    pub fn record_spans(&self) {
        self.counts.recording.store(true, Ordering::Relaxed);
    }

    /// The spans received since [`Sink::record_spans`], in arrival order.
    pub fn spans_seen(&self) -> Vec<SpanRecord> {
        self.counts.spans_seen.lock().clone()
    }

    /// Changes what the sink answers from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.counts
            .behaviour
            .store(behaviour as u8, Ordering::Relaxed);
    }

    /// Waits until at least `spans` spans arrived; false on timeout.
    pub fn wait_for(&self, spans: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.spans() < spans {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Join only if the server stops promptly; a hanging request may hold it open.
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// Adapts a tokio `TcpListener` into the stream of connections tonic's server takes, without
/// pulling in `tokio-stream` for one type.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct TcpIncoming(pub tokio::net::TcpListener);

    impl futures_core::Stream for TcpIncoming {
        type Item = std::io::Result<tokio::net::TcpStream>;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.0.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => {
                    let _ = stream.set_nodelay(true);
                    Poll::Ready(Some(Ok(stream)))
                }
                Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}
