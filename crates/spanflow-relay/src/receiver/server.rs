//! One server loop for the receivers and the metrics endpoint: accepts TCP connections within
//! the [`ConnectionTable`]'s limit, optionally wraps them in TLS, serves them with hyper
//! (HTTP/1.1 and/or HTTP/2, with hyper's own HTTP/2 stream limit) and closes them when they
//! idle too long, when a newer connection needs the slot, or at shutdown.
//!
//! Shutdown: the listener closes (new connections are refused by the kernel), idle connections
//! close at once (HTTP/2 ones get a GOAWAY first), connections with requests in progress get
//! a GOAWAY / `Connection: close` and may finish until the drain deadline; whatever is left
//! then is closed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::limits::{Admitted, Connection, ConnectionTable};
use super::tls::Tls;
use crate::metrics::{Closed, Listener, RelayMetrics};

/// Boxed errors of response bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a server serves: a cloneable tower service answering HTTP requests (the receivers'
/// and the metrics endpoint's routers). One name for the bounds every step of the loop needs.
pub(crate) trait HttpService<B>:
    tower::Service<
        http::Request<Incoming>,
        Response = http::Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A response body hyper can send.
pub(crate) trait ResponseBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static
{
}

/// How long a new connection at the connection limit waits for a slot before it is closed.
const ADMIT_WAIT: Duration = Duration::from_secs(1);

/// How long an idle connection asked to close may take to say goodbye (an HTTP/2 GOAWAY and its
/// ping) before it is closed without one.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// The HTTP versions a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Versions {
    /// HTTP/2 only (gRPC).
    Http2,
    /// HTTP/1.1 and HTTP/2 (told apart by the HTTP/2 preface).
    Http1AndHttp2,
}

/// How one server treats its connections.
#[derive(Debug, Clone)]
pub(crate) struct ServerSettings {
    /// Which server, for metrics and logs.
    pub(crate) listener: Listener,
    /// The HTTP versions served.
    pub(crate) versions: Versions,
    /// Open connections at most.
    pub(crate) max_connections: usize,
    /// Until a connection's first request has its headers (TLS handshake included).
    pub(crate) header_read_timeout: Duration,
    /// How long a connection may stay without a request in progress.
    pub(crate) idle_timeout: Duration,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub(crate) max_concurrent_streams: u32,
    /// TLS, when configured.
    pub(crate) tls: Option<Tls>,
}

/// A running server; [`Server::shutdown`] stops it.
#[derive(Debug)]
pub(crate) struct Server {
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

struct Shared<S> {
    settings: ServerSettings,
    builder: auto::Builder<TokioExecutor>,
    service: S,
    table: Arc<ConnectionTable>,
    metrics: Arc<RelayMetrics>,
}

impl Server {
    /// Serves `service` on `listener` until [`Server::shutdown`].
    pub(crate) fn spawn<S, B>(
        listener: TcpListener,
        settings: ServerSettings,
        service: S,
        metrics: Arc<RelayMetrics>,
    ) -> Self
    where
        S: HttpService<B>,
        B: ResponseBody,
    {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if settings.versions == Versions::Http2 {
            builder = builder.http2_only();
        }
        // The relay's own idle clock covers HTTP/1.1 between requests as well (see `limits`).
        builder.http1().header_read_timeout(None);
        builder
            .http2()
            .max_concurrent_streams(settings.max_concurrent_streams);
        let table = Arc::new(ConnectionTable::new(
            settings.max_connections,
            settings.header_read_timeout,
            settings.idle_timeout,
        ));
        let shared = Arc::new(Shared {
            settings,
            builder,
            service,
            table,
            metrics,
        });
        let (stop, stopped) = watch::channel(None);
        let task = tokio::spawn(accept_loop(listener, shared, stopped));
        Self { stop, task }
    }

    /// Stops accepting, closes idle connections at once, lets requests in progress finish
    /// until `drain_deadline`, then closes what is left; returns when every connection is closed.
    pub(crate) async fn shutdown(self, drain_deadline: Instant) {
        let _ = self.stop.send(Some(drain_deadline));
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "server task failed");
        }
    }
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    shared: Arc<Shared<S>>,
    mut stop: watch::Receiver<Option<Instant>>,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let what = shared.settings.listener;
    let mut connections = JoinSet::new();
    let drain_deadline = loop {
        let stopping = *stop.borrow_and_update();
        if let Some(deadline) = stopping {
            break deadline;
        }
        let accepted = tokio::select! {
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                // The relay was dropped without a shutdown: stop now.
                Err(_) => break Instant::now(),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Per-connection errors (reset before accept) need no pause; running out of
                // descriptors does, or the loop would spin.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) {
                    tracing::warn!(error = %e, listener = what.label(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let admitted = tokio::select! {
            admitted = shared.table.admit(ADMIT_WAIT) => admitted,
            _ = stop.changed() => None,
        };
        let Some(admitted) = admitted else {
            shared.metrics.connection_refused(what);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        shared.metrics.connection_opened(what);
        connections.spawn(serve_connection(tcp, admitted, shared.clone()));
    };
    drop(listener);
    shared.table.close_all();
    let drained = tokio::time::timeout_at(drain_deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = what.label(),
            open = connections.len(),
            "drain timeout: closing connections with requests still in progress"
        );
        connections.shutdown().await;
    }
}

/// Counts the connection's end, with `Shutdown` when its task is cancelled at the drain
/// deadline.
struct Ending {
    metrics: Arc<RelayMetrics>,
    listener: Listener,
    why: Closed,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.metrics.connection_closed(self.listener, self.why);
    }
}

async fn serve_connection<S, B>(tcp: TcpStream, admitted: Admitted, shared: Arc<Shared<S>>)
where
    S: HttpService<B>,
    B: ResponseBody,
{
    let mut ending = Ending {
        metrics: shared.metrics.clone(),
        listener: shared.settings.listener,
        why: Closed::Shutdown,
    };
    let connection = admitted.connection().clone();
    ending.why = match &shared.settings.tls {
        None => drive(tcp, &connection, &shared).await,
        Some(tls) => match handshake(tls, tcp, &connection).await {
            Ok(stream) => drive(stream, &connection, &shared).await,
            Err(why) => why,
        },
    };
    drop(admitted);
}

/// The TLS handshake, bounded by the connection's header read deadline and its close requests.
async fn handshake(
    tls: &Tls,
    tcp: TcpStream,
    connection: &Connection,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Closed> {
    let accept = tls.acceptor().accept(tcp);
    tokio::pin!(accept);
    loop {
        if let Some(why) = connection.close_requested() {
            return Err(why);
        }
        tokio::select! {
            done = accept.as_mut() => {
                return done.map_err(|e| {
                    tracing::debug!(error = %e, "tls handshake failed");
                    Closed::TlsHandshake
                });
            }
            () = connection.changed() => {}
            () = sleep_until(connection.idle_deadline()) => return Err(Closed::HeaderTimeout),
        }
    }
}

/// Serves HTTP on `io` until the client closes it or the relay does; returns why it ended.
async fn drive<I, S, B>(io: I, connection: &Arc<Connection>, shared: &Shared<S>) -> Closed
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<B>,
    B: ResponseBody,
{
    let service = TowerToHyperService::new(Tracked {
        inner: shared.service.clone(),
        connection: connection.clone(),
    });
    let conn = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing: Option<(Closed, Instant)> = None;
    loop {
        if closing.is_none()
            && let Some(why) = connection.close_requested()
        {
            // A connection evicted for a newer one before it ever began a request has nothing
            // to flush and goes at once: the new connection waits for its slot, and an HTTP/2
            // client that does not answer the GOAWAY's ping would hold it for the whole grace.
            if why == Closed::Evicted && connection.is_idle() && !connection.has_served() {
                return why;
            }
            conn.as_mut().graceful_shutdown();
            closing = Some((why, Instant::now()));
        }
        let idle_deadline = match closing {
            None => connection.idle_deadline(),
            Some(_) => None,
        };
        // Once asked to close, an idle connection gets a moment for the goodbye (and to flush
        // the last response, which hyper may still hold when the request counts as ended); a
        // busy one keeps going until its requests end (or the server's drain deadline).
        let goodbye_deadline = closing
            .filter(|_| connection.is_idle())
            .map(|(_, since)| since.max(connection.idle_since()) + CLOSE_GRACE);
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return closing.map_or(Closed::Client, |(why, _)| why);
            }
            () = connection.changed() => {}
            () = sleep_until(idle_deadline) => {
                connection.request_close(if connection.has_served() {
                    Closed::IdleTimeout
                } else {
                    Closed::HeaderTimeout
                });
            }
            () = sleep_until(goodbye_deadline) => {
                return closing.map_or(Closed::Client, |(why, _)| why);
            }
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The service of one connection: marks the connection busy from a request's headers until
/// its response body is done or dropped.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    connection: Arc<Connection>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> tower::Service<http::Request<Incoming>> for Tracked<S>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<UnsyncBoxBody<Bytes, BoxError>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        let busy = self.connection.begin_request();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                body.map_err(Into::into)
                    .map_frame(move |frame| {
                        // The request ends with its response body.
                        let _ = &busy;
                        frame
                    })
                    .boxed_unsync()
            }))
        })
    }
}
