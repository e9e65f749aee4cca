//! A loopback OTLP/gRPC receiver for throughput benchmarks: it reads each request body, walks
//! the protobuf framing down to the spans (checking every length, decoding no span) and counts
//! them, then answers `grpc-status: 0`.
//!
//! A real backend runs on other machines; here it shares the two cores with the code under test,
//! so it must be cheap or it becomes the bottleneck that every contestant waits on (the examples'
//! sink prost-decodes every span, about 2 µs each, which caps any exporter near 0.5 M spans/s per
//! core). Walking the framing costs a few nanoseconds per span.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The gRPC message frame of an empty `ExportTraceServiceResponse`: uncompressed, length 0.
const EMPTY_RESPONSE_FRAME: [u8; 5] = [0, 0, 0, 0, 0];

#[derive(Debug, Default)]
struct Counts {
    spans: AtomicU64,
    requests: AtomicU64,
    malformed: AtomicU64,
}

/// A running counting receiver; stops when dropped.
#[derive(Debug)]
pub struct WireSink {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WireSink {
    /// Starts the receiver on 127.0.0.1 (an ephemeral port) with its own one-thread runtime.
    pub fn start() -> WireSink {
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, addr) = std::sync::mpsc::channel();
        let task_counts = Arc::clone(&counts);
        let thread = std::thread::Builder::new()
            .name("wire-sink".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("sink runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind the sink");
                    let _ = ready.send(listener.local_addr().expect("sink address"));
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, task_counts) => {}
                    }
                });
            })
            .expect("spawn the sink thread");
        let addr = addr.recv().expect("sink started");
        WireSink {
            addr,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans counted so far.
    pub fn spans(&self) -> u64 {
        self.counts.spans.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// Requests whose body was not a well-formed OTLP message (answered `INVALID_ARGUMENT`).
    pub fn malformed(&self) -> u64 {
        self.counts.malformed.load(Ordering::Relaxed)
    }

    /// Waits until `spans` spans were counted (true) or `timeout` passes (false).
    pub fn wait_for(&self, spans: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.spans() < spans {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
}

impl Drop for WireSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, counts: Arc<Counts>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let counts = Arc::clone(&counts);
                async move { Ok::<_, Infallible>(answer(request, &counts).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(request: Request<Incoming>, counts: &Counts) -> Response<Body> {
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return grpc_response(13, "could not read the request body"),
    };
    counts.requests.fetch_add(1, Ordering::Relaxed);
    match spans_in(body) {
        Some(spans) => {
            counts.spans.fetch_add(spans, Ordering::Relaxed);
            grpc_response(0, "")
        }
        None => {
            counts.malformed.fetch_add(1, Ordering::Relaxed);
            grpc_response(3, "not an uncompressed OTLP trace request")
        }
    }
}

/// Spans in one gRPC request body: a single uncompressed length-prefixed message.
fn spans_in(mut body: Bytes) -> Option<u64> {
    if body.len() < 5 || body[0] != 0 {
        return None;
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    if body.len() != len {
        return None;
    }
    let mut spans = 0;
    for resource_spans in LenFields::new(&body, 1) {
        for scope_spans in LenFields::new(resource_spans?, 2) {
            for span in LenFields::new(scope_spans?, 2) {
                span?;
                spans += 1;
            }
        }
    }
    Some(spans)
}

/// The length-delimited occurrences of one field number in a protobuf message, skipping every
/// other field; yields `None` (and then stops) at the first malformed byte.
struct LenFields<'a> {
    rest: &'a [u8],
    wanted: u64,
}

impl<'a> LenFields<'a> {
    fn new(message: &'a [u8], wanted: u64) -> Self {
        LenFields {
            rest: message,
            wanted,
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    /// The next wanted field's bytes; `Ok(None)` at the end of the message.
    fn next_wanted(&mut self) -> Option<Option<&'a [u8]>> {
        while !self.rest.is_empty() {
            let key = self.varint()?;
            match key & 7 {
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.take(8)?;
                }
                2 => {
                    let len = usize::try_from(self.varint()?).ok()?;
                    let bytes = self.take(len)?;
                    if key >> 3 == self.wanted {
                        return Some(Some(bytes));
                    }
                }
                5 => {
                    self.take(4)?;
                }
                _ => return None,
            }
        }
        Some(None)
    }
}

impl<'a> Iterator for LenFields<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_wanted() {
            Some(Some(bytes)) => Some(Some(bytes)),
            Some(None) => None,
            None => {
                self.rest = &[];
                Some(None)
            }
        }
    }
}

fn grpc_response(status: u32, message: &str) -> Response<Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(status));
    if let Ok(message) = http::HeaderValue::from_str(message)
        && !message.is_empty()
    {
        trailers.insert("grpc-message", message);
    }
    let frame = if status == 0 {
        Bytes::from_static(&EMPTY_RESPONSE_FRAME)
    } else {
        Bytes::new()
    };
    let body = Full::new(frame)
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_spans_of_a_framed_request() {
        let spans = spanflow::otlp::testing::span_batch(7, 1);
        let request =
            spanflow::otlp::Encoder::new().encode(&spans, &spanflow::otlp::testing::resource());
        let body = request.into_bytes();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        assert_eq!(spans_in(Bytes::from(framed)), Some(7));
    }

    #[test]
    fn counts_what_the_index_counts() {
        for (batch, seed) in [(1, 3), (64, 4), (700, 5)] {
            let spans = spanflow::otlp::testing::span_batch(batch, seed);
            let body = spanflow::otlp::Encoder::new()
                .encode(&spans, &spanflow::otlp::testing::resource())
                .into_bytes();
            let indexed = spanflow::otlp::TraceRequest::parse(body.clone())
                .map(|r| r.span_count() as u64)
                .ok();
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
            framed.extend_from_slice(&body);
            assert_eq!(spans_in(Bytes::from(framed.clone())), indexed);
            // Cut inside the message (length prefix fixed up): the walk must refuse it.
            let cut = body.len() / 2;
            let mut truncated = vec![0u8];
            truncated.extend_from_slice(&(cut as u32).to_be_bytes());
            truncated.extend_from_slice(&body[..cut]);
            assert_eq!(spans_in(Bytes::from(truncated)), None);
        }
    }

    #[test]
    fn refuses_compressed_truncated_and_garbage_bodies() {
        assert_eq!(spans_in(Bytes::from_static(&[1, 0, 0, 0, 0])), None);
        assert_eq!(spans_in(Bytes::from_static(&[0, 0, 0, 0, 9, 1])), None);
        assert_eq!(spans_in(Bytes::from_static(&[0, 0, 0])), None);
        assert_eq!(
            spans_in(Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff])),
            None
        );
    }
}
