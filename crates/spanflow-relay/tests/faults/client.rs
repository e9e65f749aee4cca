//! The load client: an OTLP/gRPC client (tonic, prost) that sends spans with unique ids and
//! keeps the client's side of the books — exactly which span ids were acknowledged.
//!
//! Span ids are a process-wide counter (big-endian in the 8 bytes), so they are unique across
//! every scenario of the binary; four consecutive spans share a trace id. Like an SDK, the
//! client retries UNAVAILABLE and RESOURCE_EXHAUSTED with backoff (the server's `RetryInfo`
//! when given), and also retries an attempt whose outcome it cannot know (transport error,
//! timeout), remembering those spans as *unknown* unless a later attempt is acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use rand::Rng as _;
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

pub(crate) const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// One attempt waits at most this long for its answer; past it the outcome is unknown.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a client honours a `RetryInfo` delay (keeps scenarios short).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

static NEXT_SPAN: AtomicU64 = AtomicU64::new(1);

/// `n` fresh span ids.
pub(crate) fn fresh_ids(n: usize) -> std::ops::Range<u64> {
    let first = NEXT_SPAN.fetch_add(n as u64, Ordering::Relaxed);
    first..first + n as u64
}

/// A span with id `counter`, one string attribute `payload` of `attr_bytes` bytes and two
/// small ones. With `attr_bytes = 0` it encodes to about 80 bytes, with 1000 to about 1.1 KB.
pub(crate) fn span(counter: u64, attr_bytes: usize) -> Span {
    let mut trace_id = [0x5au8; 16];
    trace_id[..8].copy_from_slice(&(counter / 4).to_be_bytes());
    let mut attributes = vec![KeyValue {
        key: "http.status".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(200)),
        }),
        ..KeyValue::default()
    }];
    if attr_bytes > 0 {
        attributes.push(KeyValue {
            key: "payload".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("x".repeat(attr_bytes))),
            }),
            ..KeyValue::default()
        });
    }
    Span {
        trace_id: trace_id.to_vec(),
        span_id: counter.to_be_bytes().to_vec(),
        name: "fault-op".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000 + counter,
        end_time_unix_nano: 1_700_000_000_001_000_000 + counter,
        attributes,
        ..Span::default()
    }
}

/// One request holding `spans` under one resource and scope.
pub(crate) fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("fault-client".into())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "faults".into(),
                    ..InstrumentationScope::default()
                }),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// The span ids of a request made here.
pub(crate) fn ids_of(request: &ExportTraceServiceRequest) -> Vec<u64> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| super::sink::id_counter(&s.span_id))
        .collect()
}

/// How one attempt ended, as a client must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// OK; `rejected` spans were refused in `partial_success`.
    Ok { rejected: i64 },
    /// The server said retry (UNAVAILABLE or RESOURCE_EXHAUSTED), with its `RetryInfo`.
    Retry { after: Option<Duration> },
    /// No answer from the server: transport error or timeout. It may have been accepted.
    Unknown { why: String },
    /// The server refused for good.
    Refused { code: Code, message: String },
}

/// An OTLP/gRPC client of one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    channel: Channel,
}

impl Client {
    /// Connects lazily (so it can be made before the server listens). Must be called within
    /// a tokio runtime (the channel spawns its worker there).
    pub(crate) fn new(endpoint: &str) -> Self {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .expect("valid endpoint")
            .tcp_nodelay(true)
            .connect_lazy();
        Self { channel }
    }

    /// The raw channel, for hand-made requests.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// One attempt.
    pub(crate) async fn export(&self, request: ExportTraceServiceRequest) -> Attempt {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let codec =
            tonic_prost::ProstCodec::<ExportTraceServiceRequest, ExportTraceServiceResponse>::default();
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
            grpc.unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(EXPORT_PATH),
                codec,
            )
            .await
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
            Err(_) => Attempt::Unknown {
                why: format!("no answer in {ATTEMPT_TIMEOUT:?}"),
            },
            Ok(Ok(response)) => Attempt::Ok {
                rejected: response
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_spans),
            },
            Ok(Err(status)) => classify(&status),
        }
    }
}

/// A status the server sent has no error source; one tonic made from a transport failure
/// (connection refused or reset, h2 error) does, and then nobody knows whether the server
/// took the request.
fn classify(status: &tonic::Status) -> Attempt {
    if std::error::Error::source(status).is_some() {
        return Attempt::Unknown {
            why: format!("{:?}: {}", status.code(), status.message()),
        };
    }
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted => Attempt::Retry {
            after: tonic_types::StatusExt::get_details_retry_info(status)
                .and_then(|info| info.retry_delay),
        },
        code => Attempt::Refused {
            code,
            message: status.message().to_owned(),
        },
    }
}

/// The client's side of the books.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientBook {
    /// Span ids acknowledged (answered OK, not rejected), each once.
    pub(crate) acked: Vec<u64>,
    /// Span ids sent in an attempt whose outcome is unknown and never acknowledged after.
    pub(crate) unknown: Vec<u64>,
    /// Spans in attempts with unknown outcome, acknowledged later or not (the most the relay
    /// may have accepted beyond `acked`).
    pub(crate) unknown_attempt_spans: u64,
    /// Attempts whose outcome is unknown, with the first reasons seen.
    pub(crate) unknown_attempts: u64,
    pub(crate) unknown_reasons: Vec<String>,
    /// Spans refused for good, with the first reasons seen.
    pub(crate) refused_spans: u64,
    pub(crate) refused_reasons: Vec<String>,
    /// Spans given up when the load stopped while they waited for a retry.
    pub(crate) abandoned_spans: u64,
    /// Requests started, attempts made, and "retry later" answers (with `RetryInfo` or not).
    pub(crate) requests: u64,
    pub(crate) attempts: u64,
    pub(crate) retry_answers: u64,
    pub(crate) retry_answers_with_info: u64,
}

impl ClientBook {
    fn note(list: &mut Vec<String>, why: String) {
        if list.len() < 5 {
            list.push(why);
        }
    }

    /// Records the final fate of one request whose span ids are `ids`, given its last
    /// attempt and how many of its attempts had an unknown outcome.
    pub(crate) fn settle(&mut self, ids: &[u64], last: &Attempt, unknown_attempts: u64) {
        let n = ids.len() as u64;
        self.requests += 1;
        self.unknown_attempt_spans += unknown_attempts * n;
        match last {
            Attempt::Ok { rejected: 0 } => self.acked.extend_from_slice(ids),
            Attempt::Ok { rejected } if *rejected as u64 >= n => {
                self.refused_spans += n;
                Self::note(&mut self.refused_reasons, format!("{rejected} rejected"));
            }
            Attempt::Ok { rejected } => {
                // Which spans were refused is not said: their fate is unknown to the client.
                self.unknown.extend_from_slice(ids);
                self.unknown_attempt_spans += n;
                Self::note(
                    &mut self.unknown_reasons,
                    format!("partial_success rejected {rejected} of {n} spans"),
                );
            }
            Attempt::Refused { code, message } => {
                self.refused_spans += n;
                Self::note(&mut self.refused_reasons, format!("{code:?}: {message}"));
            }
            Attempt::Retry { .. } | Attempt::Unknown { .. } => {
                if unknown_attempts > 0 {
                    self.unknown.extend_from_slice(ids);
                } else {
                    self.abandoned_spans += n;
                }
            }
        }
    }

    /// Counts one attempt (the load does it for its own; hand-made requests call this).
    pub(crate) fn record(&mut self, attempt: &Attempt) {
        self.attempts += 1;
        match attempt {
            Attempt::Retry { after } => {
                self.retry_answers += 1;
                self.retry_answers_with_info += u64::from(after.is_some());
            }
            Attempt::Unknown { why } => {
                self.unknown_attempts += 1;
                Self::note(&mut self.unknown_reasons, why.clone());
            }
            _ => {}
        }
    }

    /// Adds another client's books (ids are unique across clients).
    pub(crate) fn merge(&mut self, other: ClientBook) {
        self.acked.extend(other.acked);
        self.unknown.extend(other.unknown);
        self.unknown_attempt_spans += other.unknown_attempt_spans;
        self.unknown_attempts += other.unknown_attempts;
        self.unknown_reasons.extend(other.unknown_reasons);
        self.refused_spans += other.refused_spans;
        self.refused_reasons.extend(other.refused_reasons);
        self.abandoned_spans += other.abandoned_spans;
        self.requests += other.requests;
        self.attempts += other.attempts;
        self.retry_answers += other.retry_answers;
        self.retry_answers_with_info += other.retry_answers_with_info;
    }

    /// One line for the scenario summary.
    pub(crate) fn summary(&self) -> String {
        let mut reasons = String::new();
        if !self.unknown_reasons.is_empty() {
            reasons += &format!(" unknown because {:?}", self.unknown_reasons);
        }
        if !self.refused_reasons.is_empty() {
            reasons += &format!(" refused because {:?}", self.refused_reasons);
        }
        format!(
            "client: requests={} attempts={} acked={} retry_answers={} (with RetryInfo {}) unknown_attempts={} unknown_spans={} refused={} abandoned={}{reasons}",
            self.requests,
            self.attempts,
            self.acked.len(),
            self.retry_answers,
            self.retry_answers_with_info,
            self.unknown_attempts,
            self.unknown.len(),
            self.refused_spans,
            self.abandoned_spans
        )
    }
}

/// Sends `request` until it is acknowledged or refused for good, or `stop` turns true while
/// it waits to retry; settles it in `book`.
pub(crate) async fn send_with_retry(
    client: &Client,
    request: ExportTraceServiceRequest,
    book: &Mutex<ClientBook>,
    stop: &mut watch::Receiver<bool>,
) -> Attempt {
    let ids = ids_of(&request);
    let mut unknown_attempts = 0;
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = client.export(request.clone()).await;
        book.lock().expect("book").record(&attempt);
        let hint = match &attempt {
            Attempt::Retry { after } => *after,
            Attempt::Unknown { .. } => {
                unknown_attempts += 1;
                None
            }
            Attempt::Ok { .. } | Attempt::Refused { .. } => {
                book.lock()
                    .expect("book")
                    .settle(&ids, &attempt, unknown_attempts);
                return attempt;
            }
        };
        let jitter = rand::rng().random_range(0.75..1.25);
        let delay = hint
            .map_or(backoff, |h| h.min(MAX_RETRY_DELAY))
            .mul_f64(jitter);
        backoff = (backoff * 2).min(Duration::from_secs(1));
        if !*stop.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        if *stop.borrow() {
            book.lock()
                .expect("book")
                .settle(&ids, &attempt, unknown_attempts);
            return attempt;
        }
    }
}

/// The shape of a load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadSpec {
    /// Spans per second over all senders; 0 sends as fast as answers come back.
    pub(crate) rate: u64,
    /// Concurrent senders (each one request at a time, like one SDK exporter).
    pub(crate) concurrency: usize,
    pub(crate) spans_per_request: usize,
    /// Size of the `payload` attribute (0: none, ~80 B spans; 1000: ~1.1 KB spans).
    pub(crate) attr_bytes: usize,
}

/// A running load against one endpoint, on its own runtime.
#[derive(Debug)]
pub(crate) struct Load {
    rt: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    book: Arc<Mutex<ClientBook>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    pub(crate) fn start(endpoint: &str, spec: LoadSpec) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("fault-load")
            .build()
            .expect("load runtime");
        let (stop, stopped) = watch::channel(false);
        let book = Arc::new(Mutex::new(ClientBook::default()));
        let client = {
            let _runtime = rt.enter();
            Client::new(endpoint)
        };
        let interval = (spec.rate > 0).then(|| {
            Duration::from_secs_f64(
                (spec.spans_per_request * spec.concurrency) as f64 / spec.rate as f64,
            )
        });
        let started = Instant::now();
        let tasks = (0..spec.concurrency)
            .map(|i| {
                let (client, book, mut stopped) = (client.clone(), book.clone(), stopped.clone());
                rt.spawn(async move {
                    // Senders start spread over one interval, not in lockstep.
                    let mut next = tokio::time::Instant::now()
                        + interval
                            .unwrap_or_default()
                            .mul_f64(i as f64 / spec.concurrency as f64);
                    while !*stopped.borrow() {
                        if let Some(interval) = interval {
                            tokio::select! {
                                _ = tokio::time::sleep_until(next) => {}
                                _ = stopped.wait_for(|s| *s) => break,
                            }
                            // A sender held up by retries does not burst to catch up.
                            next = (next + interval).max(tokio::time::Instant::now() - interval);
                        }
                        let spans = fresh_ids(spec.spans_per_request)
                            .map(|id| span(id, spec.attr_bytes))
                            .collect();
                        send_with_retry(&client, request(spans), &book, &mut stopped).await;
                    }
                })
            })
            .collect();
        Self {
            rt,
            stop,
            book,
            tasks,
            started,
        }
    }

    /// The client's books so far.
    pub(crate) fn snapshot(&self) -> ClientBook {
        self.book.lock().expect("book").clone()
    }

    /// Stops sending: no new requests, no more retries; attempts in flight get their answer.
    /// Returns the client's books.
    pub(crate) fn stop(self) -> ClientBook {
        let _ = self.stop.send(true);
        let elapsed = self.started.elapsed();
        let tasks = self.tasks;
        self.rt.block_on(async {
            let limit = ATTEMPT_TIMEOUT + Duration::from_secs(15);
            for task in tasks {
                tokio::time::timeout(limit, task)
                    .await
                    .unwrap_or_else(|_| panic!("a load sender did not stop within {limit:?}"))
                    .expect("load sender panicked");
            }
        });
        let book = self.book.lock().expect("book").clone();
        println!(
            "load ran {:.1} s: {:.0} acked spans/s",
            elapsed.as_secs_f64(),
            book.acked.len() as f64 / elapsed.as_secs_f64()
        );
        book
    }
}

/// A single-threaded runtime for scenarios that send a few requests by hand.
pub(crate) fn small_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
