//! The self-metrics server: `GET /metrics` and `GET /healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::RelayMetrics;
use crate::sink::Sink;

#[derive(Clone)]
struct MetricsState {
    metrics: Arc<RelayMetrics>,
    sink: Arc<dyn Sink>,
}

/// The router of the self-metrics server: `GET /metrics` and `GET /healthz`.
pub(crate) fn router(metrics: Arc<RelayMetrics>, sink: Arc<dyn Sink>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(MetricsState { metrics, sink })
}

async fn metrics_page(State(state): State<MetricsState>) -> impl IntoResponse {
    let stats = state.sink.stats();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&stats),
    )
}

async fn healthz(State(state): State<MetricsState>) -> impl IntoResponse {
    if state.metrics.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

/// The URL of a metrics server's page, for logs.
pub(crate) fn describe(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}/metrics")
}
