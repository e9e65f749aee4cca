//! An axum service instrumented with `tracing`, exported through spanflow with no exporter
//! configured: the processor reads `OTEL_EXPORTER_OTLP_ENDPOINT` like opentelemetry-otlp does.
//!
//! The service sends itself `REQUESTS` requests over loopback, shuts its tracer provider down
//! with a deadline, then checks at the receiver that every span arrived with its parent link
//! intact (same trace id, `parent_span_id` = the parent's `span_id`). Exits non-zero otherwise.
//!
//! Works with the versions this workspace pins: `opentelemetry` / `opentelemetry_sdk` 0.33,
//! `tracing-opentelemetry` 0.34 (each `tracing-opentelemetry` release targets one
//! `opentelemetry` minor version: 0.34 ↔ 0.33), `tracing-subscriber` 0.3, axum 0.8.
//!
//! `cargo run -p spanflow --example axum_service`

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use spanflow::SpanProcessor;
use spanflow::export::env::OTEL_EXPORTER_OTLP_ENDPOINT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::instrument;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

const REQUESTS: u64 = 200;
/// Spans per request: `checkout` → `load_order` → `query_stock`, and `checkout` → `charge`.
const SPANS_PER_REQUEST: u64 = 4;
/// Bound on each loopback request, so a broken server fails the example instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[instrument(skip_all, fields(order = order.0))]
async fn checkout(order: Path<u64>) -> String {
    let items = load_order(order.0).await;
    let cents = charge(order.0, items).await;
    format!("order {} charged {cents} cents\n", order.0)
}

#[instrument]
async fn load_order(order: u64) -> u64 {
    query_stock(order % 7 + 1).await
}

#[instrument]
async fn query_stock(items: u64) -> u64 {
    tokio::task::yield_now().await;
    items
}

#[instrument]
async fn charge(order: u64, items: u64) -> u64 {
    items * 1_250
}

/// One HTTP/1.1 GET over a fresh loopback connection; the response's status line.
async fn get_status(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// Starts the service on 127.0.0.1:0, sends it `REQUESTS` requests, stops it.
async fn serve_and_call() -> Result<(), Box<dyn std::error::Error>> {
    let app = Router::new().route("/checkout/{order}", get(checkout));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    for order in 0..REQUESTS {
        let path = format!("/checkout/{order}");
        let status = tokio::time::timeout(REQUEST_TIMEOUT, get_status(addr, &path))
            .await
            .map_err(|_| format!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))??;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(format!("GET {path}: {status}").into());
        }
    }

    // Graceful shutdown waits for every connection, so every handler span has closed (and
    // reached the processor) once this returns.
    let _ = stop.send(());
    tokio::time::timeout(REQUEST_TIMEOUT, server)
        .await
        .map_err(|_| "server did not stop in time")???;
    Ok(())
}

/// Checks every span arrived and each non-root span's parent is the one the code nests it in.
fn check_links(spans: &[common::SpanRecord]) -> Result<(), String> {
    let expected_parent = |name: &str| match name {
        "checkout" => Some(None),
        "load_order" | "charge" => Some(Some("checkout")),
        "query_stock" => Some(Some("load_order")),
        _ => None,
    };
    let by_id: HashMap<(&[u8], &[u8]), &common::SpanRecord> = spans
        .iter()
        .map(|s| ((s.trace_id.as_slice(), s.span_id.as_slice()), s))
        .collect();
    if by_id.len() != spans.len() {
        return Err(format!(
            "{} spans received but only {} distinct (trace id, span id) pairs: duplicates",
            spans.len(),
            by_id.len()
        ));
    }
    let mut per_name: HashMap<&str, u64> = HashMap::new();
    for span in spans {
        *per_name.entry(span.name.as_str()).or_default() += 1;
        let Some(parent_name) = expected_parent(&span.name) else {
            return Err(format!("unexpected span {:?}", span.name));
        };
        match parent_name {
            None if span.parent_span_id.is_empty() => {}
            None => return Err(format!("root span {:?} has a parent", span.name)),
            Some(parent_name) => {
                // Looking the parent up under the child's trace id checks both links at once.
                let parent = by_id.get(&(span.trace_id.as_slice(), span.parent_span_id.as_slice()));
                match parent {
                    Some(parent) if parent.name == parent_name => {}
                    Some(parent) => {
                        return Err(format!(
                            "{:?}'s parent is {:?}, expected {parent_name:?}",
                            span.name, parent.name
                        ));
                    }
                    None => {
                        return Err(format!(
                            "{:?} (span {}) names parent {} in trace {}, which did not arrive",
                            span.name,
                            hex(&span.span_id),
                            hex(&span.parent_span_id),
                            hex(&span.trace_id)
                        ));
                    }
                }
            }
        }
    }
    for name in ["checkout", "load_order", "query_stock", "charge"] {
        let seen = per_name.get(name).copied().unwrap_or(0);
        if seen != REQUESTS {
            return Err(format!(
                "{seen} {name:?} spans arrived, expected {REQUESTS}"
            ));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let sink = common::Sink::start();
    sink.record_spans();

    // Zero configuration: no exporter is given, so the pipeline exports OTLP as the
    // OpenTelemetry environment says (gRPC to http://localhost:4317 when nothing is set). A
    // service would write `SpanProcessor::builder().build()?` and set OTEL_EXPORTER_OTLP_ENDPOINT
    // in its deployment; here `from_env_with` supplies that one variable (pointing at the local
    // receiver) instead of the process environment, which the example neither changes nor
    // inherits.
    let endpoint = sink.endpoint();
    let processor = SpanProcessor::builder()
        .pipeline(|p| {
            p.from_env_with(move |name| {
                (name == OTEL_EXPORTER_OTLP_ENDPOINT).then(|| endpoint.clone())
            })
        })
        .build()?;
    let pipeline = processor.pipeline().clone();
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("axum-service")
                .build(),
        )
        .with_span_processor(processor)
        .build();

    // Only this crate's spans become OpenTelemetry spans: without the filter, the spans of
    // hyper, h2 and tonic (the exporter's own client among them) would be traced too.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("axum-service"))
        .with_filter(Targets::new().with_target("axum_service", tracing::Level::INFO));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(otel))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve_and_call())?;
    drop(runtime);

    // Shutdown flushes every span accepted so far, bounded by the deadline.
    if let Err(err) = provider.shutdown_with_timeout(Duration::from_secs(10)) {
        eprintln!("tracer provider shutdown failed: {err}");
        eprintln!("books: {}", pipeline.stats());
        return Ok(ExitCode::FAILURE);
    }
    let expected = REQUESTS * SPANS_PER_REQUEST;
    sink.wait_for(expected, Duration::from_secs(5));
    let stats = pipeline.stats();
    let spans = sink.spans_seen();
    println!(
        "{REQUESTS} requests: {} spans accepted, {} exported to {}; the receiver got {}",
        stats.accepted,
        stats.exported,
        stats.backends.first().map_or("?", |b| b.name.as_str()),
        spans.len()
    );
    if stats.exported != expected || spans.len() as u64 != expected || stats.unaccounted() != 0 {
        eprintln!("expected {expected} spans everywhere; books: {stats}");
        return Ok(ExitCode::FAILURE);
    }
    if let Err(problem) = check_links(&spans) {
        eprintln!("parent links broken: {problem}");
        return Ok(ExitCode::FAILURE);
    }
    println!("every span arrived with its parent link intact");
    Ok(ExitCode::SUCCESS)
}
