//! A running relay: the receivers and the metrics server on their listeners, feeding one sink.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::RelayConfig;
use crate::metrics::{RelayCounts, RelayMetrics};
use crate::receiver::grpc::TraceServiceServer;
use crate::receiver::{self, Shared};
use crate::sink::{Sink, SinkStats};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Where a started relay listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// OTLP/gRPC, when enabled.
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP, when enabled.
    pub http: Option<SocketAddr>,
    /// `/metrics` and `/healthz`, when enabled.
    pub metrics: Option<SocketAddr>,
}

/// The totals at shutdown.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalStats {
    /// The receivers' counters.
    pub relay: RelayCounts,
    /// The sink's counters after the flush.
    pub sink: SinkStats,
    /// Whether everything accepted was flushed in time.
    pub flushed: bool,
}

impl std::fmt::Display for FinalStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} spans_received={} accepted={} refused_backpressure={} refused_invalid={} exported={} failed={} dropped={} flushed={}",
            self.relay.requests,
            self.relay.spans_received,
            self.relay.spans_accepted,
            self.relay.spans_refused_backpressure + self.relay.spans_refused_closed,
            self.relay.spans_refused_invalid,
            self.sink.exported_spans,
            self.sink.failed_spans,
            self.sink.dropped_total(),
            self.flushed
        )
    }
}

/// A relay whose servers are running on the current tokio runtime.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use std::sync::Arc;
/// use spanflow_relay::{config::RelayConfig, relay::RunningRelay, sink::MemorySink};
/// let mut cfg = RelayConfig::default();
/// cfg.receivers.grpc.endpoint = "127.0.0.1:0".parse()?;
/// cfg.receivers.http.endpoint = "127.0.0.1:0".parse()?;
/// cfg.telemetry.metrics_endpoint = "127.0.0.1:0".parse()?;
/// let relay = RunningRelay::start(&cfg, Arc::new(MemorySink::new(64 << 20))).await?;
/// println!("grpc on {:?}", relay.addresses().grpc);
/// let stats = relay.shutdown(std::time::Duration::from_secs(5)).await;
/// println!("{stats}");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RunningRelay {
    addresses: Addresses,
    shared: Shared,
    sink: Arc<dyn Sink>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for dyn Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

impl RunningRelay {
    /// Binds every enabled listener of `cfg` and starts serving into `sink`.
    pub async fn start(cfg: &RelayConfig, sink: Arc<dyn Sink>) -> Result<Self, StartError> {
        let metrics = Arc::new(RelayMetrics::default());
        // Bodies being read may take as much again as the pipeline's budget, at most, and
        // always room for one largest request with its decompressed form.
        let largest = cfg
            .receivers
            .http
            .max_body_size
            .0
            .max(cfg.receivers.grpc.max_message_size.0);
        let in_flight = sink.stats().budget_bytes.max(largest.saturating_mul(2));
        let shared = Shared::new(sink.clone(), metrics.clone(), in_flight);
        let (stop, stopped) = watch::channel(false);
        let mut servers = Vec::new();
        let mut addresses = Addresses {
            grpc: None,
            http: None,
            metrics: None,
        };
        // Bind everything first so a bind error leaves nothing running.
        let grpc = match cfg.receivers.grpc.enabled {
            true => Some(bind("otlp/grpc", cfg.receivers.grpc.endpoint).await?),
            false => None,
        };
        let http = match cfg.receivers.http.enabled {
            true => Some(bind("otlp/http", cfg.receivers.http.endpoint).await?),
            false => None,
        };
        let metrics_listener = match cfg.telemetry.metrics_enabled {
            true => Some(bind("metrics", cfg.telemetry.metrics_endpoint).await?),
            false => None,
        };
        if let Some(listener) = grpc {
            let addr = local(&listener, cfg.receivers.grpc.endpoint);
            addresses.grpc = Some(addr);
            let service = TraceServiceServer::new(
                shared.clone(),
                cfg.receivers.grpc.max_message_size.0 as usize,
            );
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let mut stopped = stopped.clone();
            servers.push(tokio::spawn(async move {
                let result = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "otlp/grpc server failed");
                }
            }));
            tracing::info!(%addr, "otlp/grpc receiver listening");
        }
        if let Some(listener) = http {
            let addr = local(&listener, cfg.receivers.http.endpoint);
            addresses.http = Some(addr);
            let router =
                receiver::http::router(shared.clone(), cfg.receivers.http.max_body_size.0 as usize);
            servers.push(spawn_axum("otlp/http", listener, router, stopped.clone()));
            tracing::info!(%addr, "otlp/http receiver listening");
        }
        if let Some(listener) = metrics_listener {
            let addr = local(&listener, cfg.telemetry.metrics_endpoint);
            addresses.metrics = Some(addr);
            let router = crate::metrics::router(metrics.clone(), sink.clone());
            servers.push(spawn_axum("metrics", listener, router, stopped.clone()));
            tracing::info!(url = %crate::metrics::describe(addr), "self-metrics listening");
        }
        metrics.set_ready(true);
        Ok(Self {
            addresses,
            shared,
            sink,
            stop,
            servers,
        })
    }

    /// Where the servers listen.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// The receivers' counters.
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        self.shared.metrics()
    }

    /// Request bytes the receivers are reading or decoding now, their peak and their bound.
    pub fn in_flight(&self) -> crate::metrics::InFlightBytes {
        self.shared.metrics().in_flight()
    }

    /// The sink's counters now.
    pub fn sink_stats(&self) -> SinkStats {
        self.sink.stats()
    }

    /// Stops accepting (new requests are told to retry), closes the listeners, waits for
    /// requests in flight, then flushes the sink; waits at most about `timeout` in all.
    pub async fn shutdown(self, timeout: Duration) -> FinalStats {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared.stop_accepting();
        self.shared.metrics().set_ready(false);
        let _ = self.stop.send(true);
        for server in self.servers {
            if tokio::time::timeout_at(deadline, server).await.is_err() {
                tracing::warn!("a server did not stop in time");
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let sink = self.sink.clone();
        let flushed = tokio::task::spawn_blocking(move || sink.shutdown(remaining))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        FinalStats {
            relay: self.shared.metrics().counts(),
            sink: self.sink.stats(),
            flushed,
        }
    }
}

fn spawn_axum(
    what: &'static str,
    listener: TcpListener,
    router: axum::Router,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, server = what, "server failed");
        }
    })
}
