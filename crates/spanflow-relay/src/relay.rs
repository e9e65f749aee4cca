//! A running relay: the receivers and the metrics server on their listeners, feeding one sink.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{RelayConfig, TlsConfig};
use crate::metrics::{Listener, RelayCounts, RelayMetrics};
use crate::receiver::auth::Authenticator;
use crate::receiver::grpc::TraceServiceServer;
use crate::receiver::limits;
use crate::receiver::reload::LoadError;
use crate::receiver::server::{Server, ServerSettings, Versions};
use crate::receiver::tls::{ALPN_H2, ALPN_HTTP, Tls};
use crate::receiver::{self, Shared};
use crate::sink::{Sink, SinkFlushError};
use spanflow::PipelineStats;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} for {what}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS certificate or the credentials could not be loaded.
    #[error("{what}")]
    Load {
        /// Which setting.
        what: &'static str,
        /// Why.
        source: LoadError,
    },
    /// The Kafka consumer could not be created.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    Kafka(#[from] crate::receiver::kafka::KafkaStartError),
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
    /// The pipeline's final books.
    pub sink: PipelineStats,
    /// Whether everything accepted settled before the deadline (delivered or not: what was not
    /// delivered is in the books).
    pub flushed: bool,
}

impl std::fmt::Display for FinalStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} spans_received={} invalid={} {} flushed={}",
            self.relay.requests,
            self.relay.spans_received,
            self.relay.spans_refused_invalid,
            self.sink,
            self.flushed
        )
    }
}

/// A relay whose servers are running on the current tokio runtime.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use std::sync::Arc;
/// use spanflow_relay::{MemorySink, RelayConfig, RunningRelay};
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
    receivers: Vec<Server>,
    metrics_server: Option<Server>,
    /// Tasks that reload certificates and credentials.
    watchers: Vec<JoinHandle<()>>,
    drain_timeout: Duration,
    /// The Kafka consumer, when `[receivers.kafka]` is enabled.
    #[cfg(feature = "kafka")]
    kafka: Option<crate::receiver::kafka::KafkaReceiver>,
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
        Self::start_with_env(cfg, sink, |k| std::env::var(k).ok()).await
    }

    /// [`RunningRelay::start`], reading the environment variables the configuration names
    /// (`receivers.auth.env`) through `get_env`.
    pub async fn start_with_env(
        cfg: &RelayConfig,
        sink: Arc<dyn Sink>,
        get_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StartError> {
        let metrics = Arc::new(RelayMetrics::default());
        let receivers_cfg = &cfg.receivers;
        // Bodies being read may take as much again as the pipeline's budget, at most, and
        // always room for one largest request with its decompressed form.
        let largest = receivers_cfg
            .http
            .max_body_size
            .0
            .max(receivers_cfg.grpc.max_message_size.0);
        let in_flight = sink
            .stats()
            .memory_budget_bytes
            .max(largest.saturating_mul(2));
        let mut watchers = Vec::new();
        // Load certificates and credentials before binding, so a bad file leaves nothing
        // running.
        let mut load_tls = |what: &'static str, tls: &Option<TlsConfig>, alpn| match tls {
            None => Ok(None),
            Some(t) => {
                let (tls, task) =
                    Tls::load(what, t, alpn).map_err(|source| StartError::Load { what, source })?;
                watchers.push(task);
                Ok::<_, StartError>(Some(tls))
            }
        };
        let grpc_tls = load_tls("receivers.tls", &receivers_cfg.tls, ALPN_H2)?;
        let http_tls = load_tls("receivers.tls", &receivers_cfg.tls, ALPN_HTTP)?;
        let metrics_tls = load_tls("telemetry.tls", &cfg.telemetry.tls, ALPN_HTTP)?;
        let auth = match &receivers_cfg.auth {
            None => None,
            Some(a) => {
                let (auth, task) =
                    Authenticator::load(a, get_env).map_err(|source| StartError::Load {
                        what: "receivers.auth",
                        source,
                    })?;
                watchers.push(task);
                Some(auth)
            }
        };
        let shared = Shared::new(sink.clone(), metrics.clone(), in_flight)
            .with_auth(auth)
            .with_body_read_timeout(receivers_cfg.body_read_timeout.0);
        let mut addresses = Addresses {
            grpc: None,
            http: None,
            metrics: None,
        };
        // Bind everything first so a bind error leaves nothing running.
        let grpc = match receivers_cfg.grpc.enabled {
            true => Some(bind("otlp/grpc", receivers_cfg.grpc.endpoint).await?),
            false => None,
        };
        let http = match receivers_cfg.http.enabled {
            true => Some(bind("otlp/http", receivers_cfg.http.endpoint).await?),
            false => None,
        };
        let metrics_listener = match cfg.telemetry.metrics_enabled {
            true => Some(bind("metrics", cfg.telemetry.metrics_endpoint).await?),
            false => None,
        };
        let metrics_connections = if metrics_listener.is_some() {
            cfg.telemetry.metrics_max_connections
        } else {
            0
        };
        let receiver_connections = |enabled: bool| {
            if enabled {
                receivers_cfg.max_connections
            } else {
                0
            }
        };
        let fitted = limits::fit_to_open_file_limit(
            &[
                receiver_connections(grpc.is_some()),
                receiver_connections(http.is_some()),
            ],
            metrics_connections,
        );
        let settings = |listener, versions, max_connections, tls| ServerSettings {
            listener,
            versions,
            max_connections,
            header_read_timeout: receivers_cfg.header_read_timeout.0,
            idle_timeout: receivers_cfg.idle_timeout.0,
            max_concurrent_streams: receivers_cfg.max_concurrent_streams,
            tls,
        };
        let mut receivers = Vec::new();
        if let Some(listener) = grpc {
            let addr = local(&listener, receivers_cfg.grpc.endpoint);
            addresses.grpc = Some(addr);
            let service = TraceServiceServer::new(
                shared.clone(),
                receivers_cfg.grpc.max_message_size.0 as usize,
            );
            let secure = grpc_tls.is_some();
            receivers.push(Server::spawn(
                listener,
                settings(Listener::Grpc, Versions::Http2, fitted[0], grpc_tls),
                service,
                metrics.clone(),
            ));
            warn_if_exposed("otlp/grpc", addr, secure, receivers_cfg.auth.is_some());
            tracing::info!(tls = secure, %addr, "otlp/grpc receiver listening");
        }
        if let Some(listener) = http {
            let addr = local(&listener, receivers_cfg.http.endpoint);
            addresses.http = Some(addr);
            let router =
                receiver::http::router(shared.clone(), receivers_cfg.http.max_body_size.0 as usize);
            let secure = http_tls.is_some();
            receivers.push(Server::spawn(
                listener,
                settings(Listener::Http, Versions::Http1AndHttp2, fitted[1], http_tls),
                router,
                metrics.clone(),
            ));
            warn_if_exposed("otlp/http", addr, secure, receivers_cfg.auth.is_some());
            tracing::info!(tls = secure, %addr, "otlp/http receiver listening");
        }
        let mut metrics_server = None;
        if let Some(listener) = metrics_listener {
            let addr = local(&listener, cfg.telemetry.metrics_endpoint);
            addresses.metrics = Some(addr);
            let router = crate::metrics::router(metrics.clone(), sink.clone());
            let secure = metrics_tls.is_some();
            metrics_server = Some(Server::spawn(
                listener,
                settings(
                    Listener::Metrics,
                    Versions::Http1AndHttp2,
                    metrics_connections,
                    metrics_tls,
                ),
                router,
                metrics.clone(),
            ));
            tracing::info!(url = %crate::metrics::describe(addr, secure), "self-metrics listening");
        }
        // Started last: records it reads are settled only once the pipeline exports them, and a
        // start error above must not leave a group member behind.
        #[cfg(feature = "kafka")]
        let kafka = match receivers_cfg.kafka.enabled {
            true => Some(crate::receiver::kafka::KafkaReceiver::start(
                &receivers_cfg.kafka,
                sink.clone(),
                metrics.clone(),
            )?),
            false => None,
        };
        metrics.set_ready(true);
        Ok(Self {
            #[cfg(feature = "kafka")]
            kafka,
            addresses,
            shared,
            sink,
            receivers,
            metrics_server,
            watchers,
            drain_timeout: receivers_cfg.drain_timeout.0,
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
    pub fn sink_stats(&self) -> PipelineStats {
        self.sink.stats()
    }

    /// Shuts down within about `timeout` in all:
    ///
    /// 1. `/healthz` turns 503 and requests still arriving on open connections are told to
    ///    retry (503 + `Retry-After` / `UNAVAILABLE`);
    /// 2. the receivers stop accepting connections and close their idle ones at once; requests
    ///    in progress may finish until `receivers.drain_timeout` (or `timeout`, if sooner),
    ///    then their connections are closed;
    /// 3. the sink is flushed with the time left;
    /// 4. the metrics server, which kept answering throughout, stops.
    pub async fn shutdown(self, timeout: Duration) -> FinalStats {
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let drain_deadline = start + self.drain_timeout.min(timeout);
        self.shared.stop_accepting();
        self.shared.metrics().set_ready(false);
        // The Kafka receiver reads no more and commits what settles while the sink drains.
        #[cfg(feature = "kafka")]
        if let Some(kafka) = &self.kafka {
            kafka.stop(std::time::Instant::now() + timeout);
        }
        let draining = self
            .receivers
            .into_iter()
            .map(|server| server.shutdown(drain_deadline));
        if tokio::time::timeout_at(deadline, futures::future::join_all(draining))
            .await
            .is_err()
        {
            tracing::warn!("a receiver did not stop in time");
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let sink = self.sink.clone();
        let flushed = match tokio::task::spawn_blocking(move || sink.shutdown(remaining)).await {
            Ok(Ok(())) => true,
            Ok(Err(SinkFlushError::Undelivered(what))) => {
                tracing::warn!(%what, "not everything accepted was delivered");
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shutdown did not finish in time");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "shutdown task failed");
                false
            }
        };
        #[cfg(feature = "kafka")]
        if let Some(kafka) = self.kafka {
            // Its last commit and leaving the group; bounded, and the thread is left behind
            // (the process is ending) if the brokers do not answer.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let joined = tokio::task::spawn_blocking(move || kafka.join());
            if tokio::time::timeout(left + Duration::from_secs(2), joined)
                .await
                .is_err()
            {
                tracing::warn!("the kafka receiver did not leave its group in time");
            }
        }
        // Closing the metrics server's connections is immediate: its requests take no time.
        if let Some(server) = self.metrics_server {
            server.shutdown(tokio::time::Instant::now()).await;
        }
        for watcher in &self.watchers {
            watcher.abort();
        }
        FinalStats {
            relay: self.shared.metrics().counts(),
            sink: self.sink.stats(),
            flushed,
        }
    }
}

/// Warns when a receiver listens beyond loopback without TLS or without authentication.
fn warn_if_exposed(what: &'static str, addr: SocketAddr, tls: bool, auth: bool) {
    if addr.ip().is_loopback() || (tls && auth) {
        return;
    }
    let missing = match (tls, auth) {
        (false, false) => "without TLS and without authentication",
        (false, true) => "without TLS: credentials and spans cross the network in clear text",
        _ => "without authentication: anyone who can reach it can send spans",
    };
    let scope = if addr.ip().is_unspecified() {
        " (every interface)"
    } else {
        ""
    };
    tracing::warn!(
        %addr,
        "{what} listens beyond loopback{scope} {missing}; set [receivers.tls] and [receivers.auth], or listen on 127.0.0.1"
    );
}
