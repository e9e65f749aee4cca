//! The fault sink: an OTLP/gRPC `TraceService` backend in its own process, so a test can
//! SIGKILL it, restart it on the same port, stop it (SIGSTOP) or switch what it answers.
//!
//! The process is this test binary run again with `--exact fault_sink_process` and
//! [`SINK_ENV`] holding a [`SinkSetup`] as JSON; the entry test calls [`run_from_env`], which
//! serves until the process is killed (and returns at once when the variable is absent).
//!
//! The sink records the span id of every span it accepts before it answers: one frame per
//! request (`u32` count, then 8-byte span ids) written with a single `write_all` to a file per
//! incarnation. A SIGKILL can cut only the frame being written, which the reader drops (that
//! request was never answered), and the page cache keeps everything written before.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tonic::codec::CompressionEncoding;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};

use super::proc::{ChildGuard, wait_until};

/// The variable that turns the entry test into a sink.
pub(crate) const SINK_ENV: &str = "SPANFLOW_FAULT_SINK";

/// The name of the entry test in `faults.rs`.
const ENTRY_TEST: &str = "fault_sink_process";

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What the sink answers. Read from `mode.json` in the sink's directory on every request, so
/// the test can switch it while the sink runs ([`SinkProcess::set_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Record everything, answer OK at once.
    Ok,
    /// Take `delay_ms` per request and at most `spans_per_sec` spans a second over all
    /// requests (0: no limit), then record and answer OK. The span rate makes the backend's
    /// capacity independent of how the relay batches.
    Slow { delay_ms: u64, spans_per_sec: u64 },
    /// After `delay_ms`, record nothing and answer the gRPC status `code` (e.g. 3,
    /// INVALID_ARGUMENT).
    Reject { code: i32, delay_ms: u64 },
    /// Refuse in `partial_success` every span whose id counter is a multiple of
    /// `reject_every_n` (deterministic across retries), record and accept the rest.
    Partial { reject_every_n: u64 },
}

/// How the parent starts one incarnation of the sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SinkSetup {
    /// 0 for the first start; the same port for restarts.
    port: u16,
    dir: PathBuf,
    incarnation: u32,
    /// Also keep every accepted request (prost re-encoded), for content checks.
    record_bodies: bool,
}

/// The span ids the sink recorded, over all incarnations.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    /// Times each span id was recorded.
    pub(crate) ids: HashMap<u64, u32>,
    /// Records in all (`total - ids.len()` are duplicates).
    pub(crate) total: u64,
    /// Requests answered OK or partially.
    pub(crate) requests: u64,
    /// Frames cut short by a kill (dropped: their requests were never answered).
    pub(crate) torn_frames: u64,
}

impl Delivered {
    pub(crate) fn unique(&self) -> u64 {
        self.ids.len() as u64
    }
    pub(crate) fn duplicates(&self) -> u64 {
        self.total - self.unique()
    }
}

/// The counter in a span id made by the load client (big-endian u64).
pub(crate) fn id_counter(span_id: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = span_id.len().min(8);
    b[..n].copy_from_slice(&span_id[..n]);
    u64::from_be_bytes(b)
}

// ----------------------------------------------------------------------------------------
// Parent side.

/// A running sink process (or a killed one waiting for [`SinkProcess::restart`]).
#[derive(Debug)]
pub(crate) struct SinkProcess {
    dir: PathBuf,
    port: u16,
    incarnation: u32,
    record_bodies: bool,
    child: Option<ChildGuard>,
}

impl SinkProcess {
    /// Starts a sink in `dir/sink` answering as `mode`, on a port it picks.
    pub(crate) fn start(dir: &Path, mode: Mode, record_bodies: bool) -> Self {
        let dir = dir.join("sink");
        std::fs::create_dir_all(&dir).expect("create sink dir");
        let mut sink = Self {
            dir,
            port: 0,
            incarnation: 0,
            record_bodies,
            child: None,
        };
        sink.set_mode(mode);
        sink.spawn(Duration::from_secs(30));
        sink
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches what the sink answers from its next request on.
    pub(crate) fn set_mode(&self, mode: Mode) {
        let json = serde_json::to_vec(&mode).expect("mode json");
        let tmp = self.dir.join("mode.json.tmp");
        std::fs::write(&tmp, json).expect("write mode");
        std::fs::rename(&tmp, self.dir.join("mode.json")).expect("rename mode");
    }

    /// SIGKILL, reaped.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill9();
        }
    }

    /// Starts a new incarnation on the same port (after [`SinkProcess::kill9`]).
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running sink");
        self.incarnation += 1;
        self.spawn(Duration::from_secs(30));
    }

    /// SIGSTOP: the kernel still accepts connections, nothing answers.
    pub(crate) fn stall(&mut self) {
        self.child_mut().signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`SinkProcess::stall`].
    pub(crate) fn resume(&mut self) {
        self.child_mut().signal(libc::SIGCONT);
    }

    fn child_mut(&mut self) -> &mut ChildGuard {
        self.child.as_mut().expect("sink is not running")
    }

    /// Spawns the incarnation `self.incarnation`, retrying while its port is taken (a
    /// restart binds the old port, which another process may hold for a moment).
    fn spawn(&mut self, limit: Duration) {
        let setup = SinkSetup {
            port: self.port,
            dir: self.dir.clone(),
            incarnation: self.incarnation,
            record_bodies: self.record_bodies,
        };
        let ready = ready_file(&self.dir, self.incarnation);
        let log = self.dir.join(format!("sink.{}.log", self.incarnation));
        let exe = std::env::current_exe().expect("current exe");
        let deadline = std::time::Instant::now() + limit;
        loop {
            let mut cmd = Command::new(&exe);
            cmd.args([ENTRY_TEST, "--exact", "--nocapture", "--test-threads", "1"])
                .env(SINK_ENV, serde_json::to_string(&setup).expect("setup json"));
            let mut child = ChildGuard::spawn("fault sink", cmd, &log, &log);
            let port = wait_until("the fault sink to listen", limit, || {
                if let Ok(text) = std::fs::read_to_string(&ready) {
                    return text.trim().parse::<u16>().ok().map(Some);
                }
                child.try_wait().map(|_| None)
            });
            if let Some(port) = port {
                self.port = port;
                self.child = Some(child);
                return;
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                std::time::Instant::now() < deadline,
                "the fault sink could not start on port {} within {limit:?}; its log {}:\n{text}",
                self.port,
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every span id recorded so far, over all incarnations.
    pub(crate) fn delivered(&self) -> Delivered {
        let mut out = Delivered::default();
        for inc in 0..=self.incarnation {
            let Ok(bytes) = std::fs::read(ids_file(&self.dir, inc)) else {
                continue;
            };
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let Some((count, body)) = frame(rest) else {
                    out.torn_frames += 1;
                    break;
                };
                let want = count as usize * 8;
                if body.len() < want {
                    out.torn_frames += 1;
                    break;
                }
                for id in body[..want].chunks_exact(8) {
                    *out.ids.entry(id_counter(id)).or_default() += 1;
                    out.total += 1;
                }
                out.requests += 1;
                rest = &body[want..];
            }
        }
        out
    }

    /// Every request the sink accepted, decoded (needs `record_bodies`).
    pub(crate) fn bodies(&self) -> Vec<ExportTraceServiceRequest> {
        assert!(
            self.record_bodies,
            "the sink was started without record_bodies"
        );
        let mut out = Vec::new();
        for inc in 0..=self.incarnation {
            let Ok(bytes) = std::fs::read(bodies_file(&self.dir, inc)) else {
                continue;
            };
            let mut rest = &bytes[..];
            while let Some((len, body)) = frame(rest) {
                let Some(message) = body.get(..len as usize) else {
                    break;
                };
                out.push(
                    ExportTraceServiceRequest::decode(message).expect("recorded body decodes"),
                );
                rest = &body[len as usize..];
            }
        }
        out
    }
}

fn frame(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, body) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), body))
}

fn ready_file(dir: &Path, incarnation: u32) -> PathBuf {
    dir.join(format!("ready.{incarnation}"))
}
fn ids_file(dir: &Path, incarnation: u32) -> PathBuf {
    dir.join(format!("ids.{incarnation}"))
}
fn bodies_file(dir: &Path, incarnation: u32) -> PathBuf {
    dir.join(format!("bodies.{incarnation}"))
}

// ----------------------------------------------------------------------------------------
// Child side.

/// Serves as the sink described by [`SINK_ENV`] until killed; returns at once without it.
pub(crate) fn run_from_env() {
    let Ok(json) = std::env::var(SINK_ENV) else {
        return;
    };
    let setup: SinkSetup = serde_json::from_str(&json).expect("valid sink setup");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("sink runtime");
    rt.block_on(serve(setup));
}

async fn serve(setup: SinkSetup) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", setup.port))
        .await
        .unwrap_or_else(|e| panic!("fault sink cannot bind port {}: {e}", setup.port));
    let port = listener.local_addr().expect("local addr").port();
    let open = |path: PathBuf| {
        File::options()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    };
    let service = SinkService {
        state: Arc::new(SinkState {
            mode_file: setup.dir.join("mode.json"),
            free_at: Mutex::new(tokio::time::Instant::now()),
            ids: Mutex::new(open(ids_file(&setup.dir, setup.incarnation))),
            bodies: setup
                .record_bodies
                .then(|| Mutex::new(open(bodies_file(&setup.dir, setup.incarnation)))),
        }),
    };
    let ready = ready_file(&setup.dir, setup.incarnation);
    let tmp = ready.with_extension("tmp");
    std::fs::write(&tmp, port.to_string()).expect("write ready file");
    std::fs::rename(&tmp, &ready).expect("publish ready file");
    eprintln!("fault sink {} listening on {port}", setup.incarnation);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(incoming)
        .await
        .expect("fault sink server");
}

#[derive(Debug)]
struct SinkState {
    mode_file: PathBuf,
    /// When the backend's span budget is next free ([`Mode::Slow`]).
    free_at: Mutex<tokio::time::Instant>,
    ids: Mutex<File>,
    bodies: Option<Mutex<File>>,
}

impl SinkState {
    fn mode(&self) -> Mode {
        let text = std::fs::read(&self.mode_file).expect("read mode file");
        serde_json::from_slice(&text).expect("valid mode file")
    }

    /// Appends one frame of span ids (and the body) with one write each, before the answer.
    fn record(&self, ids: &[[u8; 8]], request: &ExportTraceServiceRequest) {
        let mut frame = Vec::with_capacity(4 + ids.len() * 8);
        frame.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            frame.extend_from_slice(id);
        }
        if let Some(bodies) = &self.bodies {
            let body = request.encode_to_vec();
            let mut framed = (body.len() as u32).to_le_bytes().to_vec();
            framed.extend_from_slice(&body);
            bodies
                .lock()
                .expect("bodies lock")
                .write_all(&framed)
                .expect("record body");
        }
        self.ids
            .lock()
            .expect("ids lock")
            .write_all(&frame)
            .expect("record span ids");
    }

    async fn export(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, Status> {
        let mode = self.mode();
        if let Mode::Slow {
            delay_ms,
            spans_per_sec,
        } = mode
        {
            let spans = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum::<usize>();
            let start = tokio::time::Instant::now();
            let mut done = start + Duration::from_millis(delay_ms);
            if spans_per_sec > 0 {
                // The next free moment of the backend's span budget, shared by all requests.
                let mut free = self.free_at.lock().expect("throttle lock");
                let begin = (*free).max(start);
                *free = begin + Duration::from_secs_f64(spans as f64 / spans_per_sec as f64);
                done = done.max(*free);
            }
            tokio::time::sleep_until(done).await;
        }
        if let Mode::Reject { code, delay_ms } = mode {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            return Err(Status::new(Code::from_i32(code), "fault sink rejects"));
        }
        let every = match mode {
            Mode::Partial { reject_every_n } => reject_every_n,
            _ => 0,
        };
        let mut kept = Vec::new();
        let mut rejected = 0i64;
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let counter = id_counter(&span.span_id);
            if every > 0 && counter.is_multiple_of(every) {
                rejected += 1;
            } else {
                kept.push(counter.to_be_bytes());
            }
        }
        self.record(&kept, &request);
        Ok(ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: format!("fault sink rejects every {every}th span"),
            }),
        })
    }
}

#[derive(Debug, Clone)]
struct SinkService {
    state: Arc<SinkState>,
}

impl NamedService for SinkService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl tower::Service<http::Request<tonic::body::Body>> for SinkService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            let status = Status::unimplemented(req.uri().path().to_owned());
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = ExportMethod {
            state: self.state.clone(),
        };
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<
                ExportTraceServiceResponse,
                ExportTraceServiceRequest,
            >::default();
            let mut grpc = Grpc::new(codec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(usize::MAX);
            Ok(grpc.unary(method, req).await)
        })
    }
}

struct ExportMethod {
    state: Arc<SinkState>,
}

impl UnaryService<ExportTraceServiceRequest> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Result<tonic::Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<ExportTraceServiceRequest>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            state
                .export(request.into_inner())
                .await
                .map(tonic::Response::new)
        })
    }
}
