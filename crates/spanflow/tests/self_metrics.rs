//! Self-metrics (`PipelineBuilder::meter`) read back through opentelemetry_sdk's in-memory
//! metric exporter: the instruments report the same books as `Pipeline::stats`, and they do not
//! keep the pipeline alive.
#![cfg(not(loom))]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use spanflow::export::{ExportBatch, ExportError, ExportOutcome, Exporter};
use spanflow::process::{Chain, Filter, FilterConfig, MatchType};
use spanflow::{NullExporter, Pipeline, SpanProcessor};
use support::watchdog;

const LIMIT: Duration = Duration::from_secs(60);

/// A meter provider whose every collection lands in the returned exporter.
fn meters() -> (SdkMeterProvider, InMemoryMetricExporter) {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    (provider, exporter)
}

/// One data point: its attributes as sorted `(key, value)` strings, and its value.
type Point = (Vec<(String, String)>, f64);

/// Collects now and returns every data point of `name` (none if it reported nothing).
fn collect(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
    name: &str,
) -> Vec<Point> {
    exporter.reset();
    provider.force_flush().expect("collect");
    let mut points = Vec::new();
    for resource in exporter.get_finished_metrics().expect("finished metrics") {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics().filter(|m| m.name() == name) {
                push_points(metric.data(), &mut points);
            }
        }
    }
    points
}

fn attributes<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Vec<(String, String)> {
    let mut out: Vec<_> = kvs
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    out.sort();
    out
}

fn push_points(data: &AggregatedMetrics, out: &mut Vec<Point>) {
    /// Values as `f64`: exact below 2^53, far above anything these tests count.
    fn points<T: Copy>(data: &MetricData<T>, to_f64: fn(T) -> f64, out: &mut Vec<Point>) {
        match data {
            MetricData::Sum(sum) => out.extend(
                sum.data_points()
                    .map(|p| (attributes(p.attributes()), to_f64(p.value()))),
            ),
            MetricData::Gauge(gauge) => out.extend(
                gauge
                    .data_points()
                    .map(|p| (attributes(p.attributes()), to_f64(p.value()))),
            ),
            MetricData::Histogram(_) | MetricData::ExponentialHistogram(_) => {
                panic!("spanflow registers no histograms")
            }
        }
    }
    match data {
        AggregatedMetrics::F64(data) => points(data, |v| v, out),
        AggregatedMetrics::U64(data) => points(data, |v| v as f64, out),
        AggregatedMetrics::I64(data) => points(data, |v| v as f64, out),
    }
}

/// The value of the point whose attributes are exactly `attrs`.
fn value(points: &[Point], attrs: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<(String, String)> = attrs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    wanted.sort();
    points.iter().find(|(a, _)| *a == wanted).map(|(_, v)| *v)
}

/// Drops every span named `drop-me`.
fn drop_filter() -> Chain {
    let filter =
        Filter::from_config(&FilterConfig::drop().span_names(MatchType::Exact, ["drop-me"]))
            .expect("filter");
    Chain::builder().processor(filter).build().expect("chain")
}

#[test]
fn counters_read_the_books_exported_and_dropped_by_reason() {
    watchdog(LIMIT, "self_metrics", || {
        let (meter_provider, metrics) = meters();
        let exporter = NullExporter::default();
        let processor = SpanProcessor::builder()
            .pipeline(|p| {
                p.exporter("null", exporter.clone())
                    .processors(drop_filter())
                    .memory_budget(8 << 20)
            })
            .meter(meter_provider.meter("spanflow"))
            .build()
            .expect("processor");
        let pipeline = processor.pipeline().clone();
        let provider = support::provider(processor, "self-metrics");

        const N: u64 = 250;
        support::end_spans(&provider, N);
        pipeline.flush(Duration::from_secs(10)).expect("flush");
        assert_eq!(exporter.spans(), N);
        let exported = collect(&meter_provider, &metrics, "spanflow.spans.exported");
        assert_eq!(value(&exported, &[]), Some(N as f64), "{exported:?}");
        let dropped = collect(&meter_provider, &metrics, "spanflow.spans.dropped");
        assert_eq!(
            value(&dropped, &[("spanflow.reason", "processor")]),
            Some(0.0),
            "{dropped:?}"
        );
        let queued = collect(&meter_provider, &metrics, "spanflow.queue.spans");
        assert_eq!(value(&queued, &[]), Some(0.0), "{queued:?}");
        let limit = collect(&meter_provider, &metrics, "spanflow.memory.limit");
        assert_eq!(value(&limit, &[]), Some((8u64 << 20) as f64), "{limit:?}");
        let attempts = collect(&meter_provider, &metrics, "spanflow.export.attempts");
        let attempts = value(&attempts, &[("spanflow.backend", "null")]).expect("attempts");
        assert!(attempts >= 1.0, "{attempts}");
        let time = collect(&meter_provider, &metrics, "spanflow.export.time");
        assert!(
            value(&time, &[("spanflow.backend", "null")]).is_some(),
            "{time:?}"
        );
        let retries = collect(&meter_provider, &metrics, "spanflow.export.retries");
        assert_eq!(value(&retries, &[("spanflow.backend", "null")]), Some(0.0));

        // A forced drop: the filter removes these.
        let tracer = provider.tracer("self-metrics");
        for _ in 0..7 {
            tracer.in_span("drop-me", |_cx| {});
        }
        pipeline.flush(Duration::from_secs(10)).expect("flush");
        let dropped = collect(&meter_provider, &metrics, "spanflow.spans.dropped");
        assert_eq!(
            value(&dropped, &[("spanflow.reason", "processor")]),
            Some(7.0),
            "{dropped:?}"
        );
        assert_eq!(
            value(&dropped, &[("spanflow.reason", "queue_full")]),
            Some(0.0),
            "{dropped:?}"
        );
        let exported = collect(&meter_provider, &metrics, "spanflow.spans.exported");
        assert_eq!(value(&exported, &[]), Some(N as f64));

        // After shutdown the instruments report the final books.
        provider
            .shutdown_with_timeout(Duration::from_secs(10))
            .expect("shutdown");
        let stats = pipeline.stats();
        assert_eq!(
            (stats.exported, stats.dropped.processor),
            (N, 7),
            "{stats:#?}"
        );
        let exported = collect(&meter_provider, &metrics, "spanflow.spans.exported");
        assert_eq!(value(&exported, &[]), Some(N as f64));
        meter_provider.shutdown().expect("meter provider shutdown");
    });
}

/// Two pipelines on one meter: `meter_attributes` keeps their series apart, every observation
/// carrying the pipeline's attribute after the instrument's own.
#[test]
fn meter_attributes_tell_pipelines_on_one_meter_apart() {
    watchdog(LIMIT, "self_metrics", || {
        let (meter_provider, metrics) = meters();
        let meter = meter_provider.meter("spanflow");
        let mut pipelines = Vec::new();
        for (name, spans) in [("checkout", 30u64), ("audit", 12)] {
            let processor = SpanProcessor::builder()
                .pipeline(|p| p.exporter("null", NullExporter::default()))
                .meter(meter.clone())
                .meter_attributes([opentelemetry::KeyValue::new("spanflow.pipeline", name)])
                .build()
                .expect("processor");
            let pipeline = processor.pipeline().clone();
            let provider = support::provider(processor, "self-metrics");
            support::end_spans(&provider, spans);
            pipeline.flush(Duration::from_secs(10)).expect("flush");
            pipelines.push((name, spans, provider));
        }
        let exported = collect(&meter_provider, &metrics, "spanflow.spans.exported");
        let attempts = collect(&meter_provider, &metrics, "spanflow.export.attempts");
        for (name, spans, _) in &pipelines {
            assert_eq!(
                value(&exported, &[("spanflow.pipeline", name)]),
                Some(*spans as f64),
                "{exported:?}"
            );
            assert!(
                value(
                    &attempts,
                    &[("spanflow.backend", "null"), ("spanflow.pipeline", name)]
                )
                .is_some_and(|a| a >= 1.0),
                "{attempts:?}"
            );
        }
        assert_eq!(
            value(&exported, &[]),
            None,
            "no series without the attribute"
        );
        for (_, _, provider) in pipelines {
            provider
                .shutdown_with_timeout(Duration::from_secs(10))
                .expect("shutdown");
        }
        meter_provider.shutdown().expect("meter provider shutdown");
    });
}

/// A [`NullExporter`] that also holds `token`, so a test can see when the pipeline that owns
/// the exporter is gone.
struct Holding {
    token: Arc<()>,
    inner: NullExporter,
}

impl Exporter for Holding {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let _ = &self.token;
        self.inner.export(batch).await
    }

    fn name(&self) -> &str {
        "holding"
    }
}

#[test]
fn the_callbacks_do_not_keep_the_pipeline_alive() {
    watchdog(LIMIT, "self_metrics_weak", || {
        let (meter_provider, metrics) = meters();
        let token = Arc::new(());
        let pipeline = Pipeline::builder()
            .exporter(
                "holding",
                Holding {
                    token: Arc::clone(&token),
                    inner: NullExporter::default(),
                },
            )
            .meter(meter_provider.meter("spanflow"))
            .build()
            .expect("pipeline");
        let processor = SpanProcessor::new(pipeline.clone());
        for span in spanflow::otlp::testing::span_batch(20, 2) {
            opentelemetry_sdk::trace::SpanProcessor::on_end(&processor, span);
        }
        pipeline
            .shutdown(Duration::from_secs(10))
            .expect("shutdown");
        let exported = collect(&meter_provider, &metrics, "spanflow.spans.exported");
        assert_eq!(value(&exported, &[]), Some(20.0), "{exported:?}");

        drop(processor);
        drop(pipeline);
        // The meter provider (and the callbacks it holds) lives on; the pipeline must not.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&token) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(Arc::strong_count(&token), 1, "the pipeline is still alive");
        let exported = collect(&meter_provider, &metrics, "spanflow.spans.exported");
        assert!(
            exported.is_empty(),
            "a dropped pipeline still reports: {exported:?}"
        );
        meter_provider.shutdown().expect("meter provider shutdown");
    });
}
