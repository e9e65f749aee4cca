//! The facade and the OpenTelemetry environment: with no exporter given, the pipeline exports
//! OTLP as the environment says (or, disabled, discards and counts); bad values are build
//! errors from the one shared parser, with its words.
//!
//! Every test reads the environment through `from_env_with`, never the process environment.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use spanflow::export::env::OtelEnv;
use spanflow::{BuildError, NullExporter, Pipeline, SpanProcessor};
use support::{end_spans, provider, watchdog};

const LIMIT: Duration = Duration::from_secs(60);

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

/// An OTLP/gRPC collector on 127.0.0.1:0 counting the spans it receives.
struct Collector {
    addr: SocketAddr,
    spans: Arc<AtomicU64>,
    runtime: tokio::runtime::Runtime,
}

struct Counting(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Counting {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::SeqCst);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans = Arc::new(AtomicU64::new(0));
        let service = TraceServiceServer::new(Counting(Arc::clone(&spans)));
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        Self {
            addr,
            spans,
            runtime,
        }
    }

    fn wait_for(&self, spans: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.spans.load(Ordering::SeqCst) < spans && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.spans.load(Ordering::SeqCst)
    }
}

#[test]
fn without_an_exporter_spans_go_to_otlp_as_the_environment_says() {
    watchdog(LIMIT, "default-otlp", || {
        let collector = Collector::start();
        let endpoint = format!("http://{}", collector.addr);
        let processor = SpanProcessor::builder()
            .pipeline(|p| p.from_env_with(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)])))
            .build()
            .expect("a pipeline with no exporter exports OTLP");
        let pipeline = processor.pipeline().clone();
        let provider = provider(processor, "env-default");
        end_spans(&provider, 50);
        provider.force_flush().expect("flush");
        assert_eq!(collector.wait_for(50), 50);
        provider.shutdown().expect("shutdown");
        let stats = pipeline.stats();
        assert_eq!(stats.backends[0].name, "otlp");
        assert_eq!((stats.exported, stats.unaccounted()), (50, 0));
        drop(collector.runtime);
    });
}

#[test]
fn the_default_exporter_is_built_without_any_variable() {
    // Nothing listens on the spec's default endpoint here: the pipeline still builds (the
    // exporter connects lazily) and names its backend `otlp`.
    let pipeline = Pipeline::builder()
        .from_env_with(env(&[]))
        .build()
        .expect("build");
    assert_eq!(pipeline.stats().backends[0].name, "otlp");
    pipeline.shutdown(Duration::from_secs(5)).expect("shutdown");
    let pipeline = Pipeline::builder()
        .from_env_with(env(&[("OTEL_TRACES_EXPORTER", "otlp,console")]))
        .build()
        .expect("build");
    let names: Vec<String> = pipeline
        .stats()
        .backends
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["otlp", "console"]);
    pipeline.shutdown(Duration::from_secs(5)).expect("shutdown");
}

#[test]
fn disabled_export_discards_and_counts_every_span() {
    for pairs in [
        &[("OTEL_SDK_DISABLED", "true")][..],
        &[("OTEL_TRACES_EXPORTER", "none")][..],
    ] {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        watchdog(LIMIT, "disabled", move || {
            let get = move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let processor = SpanProcessor::builder()
                .pipeline(|p| p.from_env_with(get))
                .build()
                .expect("build");
            let pipeline = processor.pipeline().clone();
            let provider = provider(processor, "env-disabled");
            end_spans(&provider, 40);
            provider.force_flush().expect("nothing is undelivered");
            provider.shutdown().expect("shutdown");
            let stats = pipeline.stats();
            assert_eq!(stats.accepted, 40);
            assert_eq!(stats.dropped.disabled, 40);
            assert_eq!(stats.exported, 0);
            assert_eq!(stats.undelivered(), 0);
            assert_eq!(stats.unaccounted(), 0);
            assert_eq!(stats.backends[0].name, "disabled");
            assert_eq!(stats.backends[0].received_batches, 0);
            assert!(stats.to_string().contains("dropped.disabled=40"));
        });
    }
}

#[test]
fn exporters_given_in_code_win_over_the_environment() {
    let null = NullExporter::default();
    let pipeline = Pipeline::builder()
        .from_env_with(env(&[("OTEL_SDK_DISABLED", "true")]))
        .exporter("null", null.clone())
        .build()
        .expect("build");
    let spans = spanflow::otlp::testing::span_batch(20, 5);
    let n = spans.len() as u64;
    for span in spans {
        pipeline.push_span(span);
    }
    pipeline
        .shutdown(Duration::from_secs(10))
        .expect("shutdown");
    assert_eq!(null.spans(), n);
}

/// The facade reports a bad value with the shared parser's own message.
#[test]
fn a_bad_value_is_a_build_error_in_the_shared_parsers_words() {
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/key.pem"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_SDK_DISABLED", "yes"),
    ] {
        let shared = OtelEnv::from_env(env(&[(name, value)])).expect_err(name);
        let err = Pipeline::builder()
            .from_env_with(env(&[(name, value)]))
            .build()
            .expect_err(name);
        assert!(matches!(err, BuildError::Environment(_)), "{err:?}");
        assert_eq!(err.to_string(), shared.to_string());
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn a_bad_bsp_value_is_a_build_error_naming_the_variable() {
    let err = SpanProcessor::builder()
        .pipeline(|p| {
            p.from_env_with(env(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]))
                .exporter("null", NullExporter::default())
        })
        .build()
        .expect_err("OTEL_BSP_MAX_QUEUE_SIZE=0 is refused");
    assert!(matches!(err, BuildError::Environment(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        r#"invalid value "0" for OTEL_BSP_MAX_QUEUE_SIZE: must be at least 1"#
    );
}

#[test]
fn the_spec_default_queue_size_keeps_the_memory_budget() {
    let pipeline = Pipeline::builder()
        .from_env_with(env(&[("OTEL_BSP_MAX_QUEUE_SIZE", "2048")]))
        .exporter("null", NullExporter::default())
        .build()
        .expect("build");
    assert_eq!(pipeline.config().memory.budget_bytes, 256 << 20);
    assert_eq!(pipeline.stats().memory_budget_bytes, 256 << 20);
    pipeline.shutdown(Duration::from_secs(5)).expect("shutdown");
}
