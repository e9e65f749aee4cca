//! Pipeline configuration: the serde model, its defaults and the `OTEL_BSP_*` environment variables.
//!
//! Every knob has a default a user can trust without reading this file; [`PipelineConfig::from_env`]
//! starts from those defaults and applies the standard OpenTelemetry batch-processor variables where
//! they have a meaning for spanflow, with the same rule for bad values as every other OpenTelemetry
//! variable (an error naming it; see [`spanflow_export::env`]). Exporter variables
//! (`OTEL_EXPORTER_OTLP_*`, `OTEL_TRACES_EXPORTER`, `OTEL_SDK_DISABLED`) are parsed by
//! `spanflow-export`'s [`spanflow_export::env`] and choose the exporter
//! [`crate::PipelineBuilder::build`] uses when none is configured.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spanflow_export::env::{EnvError, integer};
use spanflow_export::{BackendConfig, SinkConfig};
use spanflow_process::ProcessorConfig;

/// `OTEL_BSP_MAX_QUEUE_SIZE`: spans held before backpressure starts (spanflow raises its byte
/// budget to this many average spans when that is more; it never lowers it).
pub const OTEL_BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
/// `OTEL_BSP_SCHEDULE_DELAY`: milliseconds a partial batch may wait before it is exported.
pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: most spans in one export request.
pub const OTEL_BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
/// `OTEL_BSP_EXPORT_TIMEOUT`: milliseconds one export attempt may take.
pub const OTEL_BSP_EXPORT_TIMEOUT: &str = "OTEL_BSP_EXPORT_TIMEOUT";
/// `OTEL_BSP_MAX_CONCURRENT_EXPORTS`: export requests in flight at once.
pub const OTEL_BSP_MAX_CONCURRENT_EXPORTS: &str = "OTEL_BSP_MAX_CONCURRENT_EXPORTS";

/// The rough in-memory cost of one ended span with a handful of attributes, used to translate a
/// span count (`OTEL_BSP_MAX_QUEUE_SIZE`) into the byte budget spanflow actually enforces.
pub const AVERAGE_SPAN_BYTES: usize = 512;

/// Everything a [`crate::Pipeline`] can be told, as one serde document.
///
/// Unknown fields are an error so a typo in a config file cannot silently fall back to a default.
/// It serializes too, every value included (defaults as well), with durations and sizes in the
/// form the configuration accepts, so a printed configuration reads back to the same value.
///
/// ```
/// let config: spanflow::PipelineConfig =
///     serde_json::from_str(r#"{ "batch": { "max_spans": 1024 } }"#).unwrap();
/// assert_eq!(config.batch.max_spans, 1024);
/// assert_eq!(config.export.concurrency, spanflow::PipelineConfig::default().export.concurrency);
///
/// let printed = toml::to_string(&config).unwrap();
/// assert_eq!(toml::from_str::<spanflow::PipelineConfig>(&printed).unwrap(), config);
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// How spans are grouped into export requests.
    pub batch: BatchSettings,
    /// How much memory queued spans may hold and what happens when it is used up.
    pub memory: MemorySettings,
    /// How export requests are sent.
    pub export: ExportSettings,
    /// Where processors run.
    pub processing: ProcessingSettings,
    /// The processor chain, in order (`spanflow-process` configuration, tagged by `type`).
    pub processors: Vec<ProcessorConfig>,
    /// The backends, in order; a `fallback` entry backs the primary listed before it. Exporters
    /// added in code come after these.
    pub exporters: Vec<ExporterSpec>,
    /// Where processed batches wait for their backends: memory (the default) or a durable
    /// spool on local disk.
    pub queue: QueueSettings,
}

/// Where processed batches wait for their backends (`[queue]`).
///
/// ```
/// let config: spanflow::PipelineConfig = toml::from_str(r#"
///     [queue]
///     type = "disk"
///     dir = "/var/lib/spanflow/queue"
///     max_bytes = "2GiB"
///     fsync = "interval"
/// "#).unwrap();
/// let spanflow::QueueSettings::Disk(spool) = &config.queue else { panic!() };
/// assert_eq!(spool.max_bytes.0, 2 << 30);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum QueueSettings {
    /// In memory, bounded by the memory budget: lost if the process dies.
    #[default]
    Memory,
    /// On local disk (`spanflow-spool`): batches are written once, read back by every primary
    /// backend at its own pace, and survive kill -9 and restarts; the memory budget then covers
    /// only what is being encoded, processed, written or exported. A request is acknowledged
    /// (`submit_tracked`'s receipt, the relay's OK) once its batch is durable under `fsync`.
    Disk(spanflow_spool::SpoolConfig),
}

/// Where the processor chain runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingSettings {
    /// 0 runs the chain on the encoder thread (no hand-off, the default); N runs it on a
    /// `spanflow-process` work-stealing scheduler with N workers, for heavy chains.
    pub threads: usize,
    /// Nice value of the pipeline's own threads (encoder, submit worker, export runtime) on
    /// Linux; 0 leaves them at the application's priority. Default 10: telemetry yields the
    /// cores to the application, and the memory budget's backpressure keeps that lossless.
    pub nice: i32,
}

impl Default for ProcessingSettings {
    fn default() -> Self {
        Self {
            threads: 0,
            nice: 10,
        }
    }
}

/// Whether a backend receives every batch or only what its primary failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendRole {
    /// Receives every batch (several primaries = fan-out).
    #[default]
    Primary,
    /// Receives the batches the primary before it finally failed on or could not queue.
    Fallback,
}

/// One backend in a configuration file.
///
/// ```
/// let spec: spanflow::ExporterSpec = toml::from_str(r#"
///     name = "collector"
///     sink = { type = "otlp", endpoint = "http://127.0.0.1:4317" }
/// "#).unwrap();
/// assert_eq!(spec.role, spanflow::BackendRole::Primary);
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterSpec {
    /// Unique name, used in stats and logs.
    pub name: String,
    /// Primary (default) or fallback.
    #[serde(default)]
    pub role: BackendRole,
    /// What to send to (`spanflow-export` configuration, tagged by `type`).
    pub sink: SinkConfig,
    /// Queue, concurrency, retry and timeout; `None` derives them from `[export]`.
    #[serde(default)]
    pub backend: Option<BackendConfig>,
}

/// How spans are grouped into export requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Most spans in one request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`). Default 2048.
    pub max_spans: usize,
    /// Most estimated bytes in one request. Default 4 MiB, the usual gRPC message limit.
    pub max_bytes: usize,
    /// Longest a partial batch waits before it is sent, in milliseconds (`OTEL_BSP_SCHEDULE_DELAY`).
    /// Default 200 ms: latency stays low and batches still fill under load.
    pub max_age_ms: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_spans: 2048,
            max_bytes: 4 << 20,
            max_age_ms: 200,
        }
    }
}

impl BatchSettings {
    /// [`Self::max_age_ms`] as a [`Duration`].
    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.max_age_ms)
    }
}

/// What happens to a span that arrives when the memory budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Wait up to `max_wait_ms` for room, then drop the span and count it. The default: a burst
    /// slows the producing threads down for a moment instead of losing spans.
    Block {
        /// Longest one `on_end` call waits for room, in milliseconds.
        max_wait_ms: u64,
    },
    /// Drop the span at once and count it (what `BatchSpanProcessor` does).
    Drop,
}

impl Default for OverflowPolicy {
    fn default() -> Self {
        Self::Block { max_wait_ms: 1_000 }
    }
}

/// How much memory queued spans may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    /// Bytes that accepted spans may hold, from acceptance until every backend is done with
    /// them: both intakes, the batch being encoded or processed, the export queues, retries and
    /// requests in flight all draw from this one budget (SDK spans are weighed by an estimate of
    /// their in-memory size until they are encoded, then by their encoded length; submitted
    /// requests by their encoded length). When it is used up, `on_end` applies
    /// [`Self::overflow`] and `try_submit` answers `Full`: a slow or dead backend becomes
    /// backpressure, never an unbounded queue.
    ///
    /// Default 256 MiB: about half a million typical spans, so a one-million-span burst is absorbed
    /// by the budget for half its length and by [`OverflowPolicy::Block`] for the rest.
    pub budget_bytes: usize,
    /// What happens when the budget is used up.
    pub overflow: OverflowPolicy,
    /// Which threads free the memory of SDK spans once they are encoded.
    pub free_spans_on: FreeSpansOn,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            budget_bytes: 256 << 20,
            overflow: OverflowPolicy::default(),
            free_spans_on: FreeSpansOn::default(),
        }
    }
}

/// Which threads free an SDK span's memory (its `SpanData`, attribute vector and strings) once
/// the pipeline has encoded it.
///
/// ```
/// let config: spanflow::PipelineConfig =
///     toml::from_str("[memory]\nfree_spans_on = \"pipeline\"").unwrap();
/// assert_eq!(config.memory.free_spans_on, spanflow::FreeSpansOn::Pipeline);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreeSpansOn {
    /// The application threads that end spans: each `on_end` frees one span that the pipeline
    /// has already encoded (after releasing its intake shard). The default, because glibc's
    /// `malloc` (Rust's default allocator on Linux) returns memory freed by another thread to
    /// the allocating thread's arena under that arena's lock: freed on the encoder thread, the
    /// spans' memory contends with the application's next allocations and never reaches its
    /// thread cache. At most a few batches of encoded spans wait like this; an idle pipeline
    /// frees them itself after a second.
    #[default]
    Application,
    /// The pipeline's encoder thread, right after encoding. Better with an allocator whose
    /// cross-thread frees are cheap (mimalloc, jemalloc), where freeing on the application
    /// thread only adds work there.
    Pipeline,
}

/// How export requests are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSettings {
    /// Export requests in flight at once (`OTEL_BSP_MAX_CONCURRENT_EXPORTS`). Default 4.
    pub concurrency: usize,
    /// Longest one export attempt may take, in milliseconds (`OTEL_BSP_EXPORT_TIMEOUT`). Default 10 s.
    pub timeout_ms: u64,
    /// Worker threads of the runtime the pipeline owns for its exports; 0 picks 1 or 2 from the
    /// number of cores. Default 0.
    pub runtime_threads: usize,
    /// Batches that may wait per backend when its `policy` (in the backend's own settings) is a
    /// drop policy; backends added without settings keep every batch (`QueuePolicy::Block`),
    /// bounded by the memory budget instead. Default 64.
    pub queue: usize,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            timeout_ms: 10_000,
            runtime_threads: 0,
            queue: 64,
        }
    }
}

impl ExportSettings {
    /// [`Self::timeout_ms`] as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The runtime's worker thread count with `0` resolved: one per core, at most two.
    pub fn resolved_runtime_threads(&self) -> usize {
        if self.runtime_threads > 0 {
            return self.runtime_threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
    }
}

impl PipelineConfig {
    /// The defaults with the `OTEL_BSP_*` variables of this process applied (see
    /// [`Self::apply_env`]).
    pub fn from_env() -> Result<Self, EnvError> {
        let mut config = Self::default();
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Apply the `OTEL_BSP_*` variables found by `get` on top of `self`. Taking the lookup as a
    /// closure keeps tests away from the process environment, which other threads may be reading.
    ///
    /// The rule is the one of every OpenTelemetry variable spanflow reads
    /// ([`spanflow_export::env`]): unset or empty leaves the value alone, a value that is not an
    /// integer or is below the minimum (1; 0 for `OTEL_BSP_SCHEDULE_DELAY`) is an error naming
    /// the variable, and `self` is left unchanged. A bad variable stops the pipeline from being
    /// built rather than being ignored where nobody may see the warning.
    ///
    /// The variables are mapped so that none makes spanflow lossier than its own defaults:
    /// `OTEL_BSP_MAX_QUEUE_SIZE` (a span count; spanflow enforces bytes) only ever *raises* the
    /// memory budget, to `queue size ×` [`AVERAGE_SPAN_BYTES`] when that is more than the budget
    /// so far, and caps `batch.max_spans` at the queue size (the specification requires batch
    /// size ≤ queue size). The specification's default of 2048 therefore leaves the 256 MiB
    /// budget as it is. Unset variables keep spanflow's defaults, not the specification's
    /// (200 ms schedule delay and 10 s export timeout instead of 5 s and 30 s).
    ///
    /// ```
    /// use spanflow::PipelineConfig;
    /// let mut config = PipelineConfig::default();
    /// config.apply_env(|name| match name {
    ///     "OTEL_BSP_SCHEDULE_DELAY" => Some("50".to_owned()),
    ///     "OTEL_BSP_MAX_QUEUE_SIZE" => Some("2048".to_owned()),
    ///     _ => None,
    /// })?;
    /// assert_eq!(config.batch.max_age_ms, 50);
    /// assert_eq!(config.memory.budget_bytes, 256 << 20);
    ///
    /// let err = config.apply_env(|name| {
    ///     (name == "OTEL_BSP_MAX_EXPORT_BATCH_SIZE").then(|| "lots".to_owned())
    /// });
    /// assert_eq!(
    ///     err.unwrap_err().to_string(),
    ///     r#"invalid value "lots" for OTEL_BSP_MAX_EXPORT_BATCH_SIZE: expected an integer"#
    /// );
    /// # Ok::<(), spanflow::export::env::EnvError>(())
    /// ```
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), EnvError> {
        // Everything is read (and checked) before anything is changed.
        let batch_size = integer(&get, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 1)?;
        let delay = integer(&get, OTEL_BSP_SCHEDULE_DELAY, 0)?;
        let timeout = integer(&get, OTEL_BSP_EXPORT_TIMEOUT, 1)?;
        let concurrency = integer(&get, OTEL_BSP_MAX_CONCURRENT_EXPORTS, 1)?;
        let queue_size = integer(&get, OTEL_BSP_MAX_QUEUE_SIZE, 1)?;
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);

        if let Some(n) = batch_size {
            self.batch.max_spans = to_usize(n);
        }
        if let Some(ms) = delay {
            self.batch.max_age_ms = ms;
        }
        if let Some(ms) = timeout {
            self.export.timeout_ms = ms;
        }
        if let Some(n) = concurrency {
            self.export.concurrency = to_usize(n);
        }
        if let Some(n) = queue_size {
            let n = to_usize(n);
            self.memory.budget_bytes = self
                .memory
                .budget_bytes
                .max(n.saturating_mul(AVERAGE_SPAN_BYTES));
            self.batch.max_spans = self.batch.max_spans.min(n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn no_variables_keep_the_defaults() {
        let mut config = PipelineConfig::default();
        config.apply_env(env(&[])).unwrap();
        assert_eq!(config, PipelineConfig::default());
    }

    #[test]
    fn empty_variables_keep_the_defaults() {
        let mut config = PipelineConfig::default();
        config
            .apply_env(env(&[
                (OTEL_BSP_MAX_QUEUE_SIZE, ""),
                (OTEL_BSP_SCHEDULE_DELAY, "  "),
                (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, ""),
                (OTEL_BSP_EXPORT_TIMEOUT, ""),
                (OTEL_BSP_MAX_CONCURRENT_EXPORTS, " "),
            ]))
            .unwrap();
        assert_eq!(config, PipelineConfig::default());
    }

    #[test]
    fn every_bsp_variable_is_honoured() {
        let mut config = PipelineConfig::default();
        config
            .apply_env(env(&[
                (OTEL_BSP_MAX_QUEUE_SIZE, "1000000"),
                (OTEL_BSP_SCHEDULE_DELAY, "25"),
                (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "256"),
                (OTEL_BSP_EXPORT_TIMEOUT, "3000"),
                (OTEL_BSP_MAX_CONCURRENT_EXPORTS, "8"),
            ]))
            .unwrap();
        assert_eq!(config.memory.budget_bytes, 1_000_000 * AVERAGE_SPAN_BYTES);
        assert_eq!(config.batch.max_age_ms, 25);
        assert_eq!(config.batch.max_spans, 256);
        assert_eq!(config.export.timeout_ms, 3000);
        assert_eq!(config.export.concurrency, 8);
    }

    #[test]
    fn queue_size_never_shrinks_the_budget() {
        for size in ["1", "2048", "100000"] {
            let mut config = PipelineConfig::default();
            config
                .apply_env(env(&[(OTEL_BSP_MAX_QUEUE_SIZE, size)]))
                .unwrap();
            assert_eq!(
                config.memory.budget_bytes,
                MemorySettings::default().budget_bytes,
                "{size}"
            );
        }
        // A budget configured before (here larger than the default) is not lowered either.
        let mut config = PipelineConfig::default();
        config.memory.budget_bytes = 1 << 30;
        config
            .apply_env(env(&[(OTEL_BSP_MAX_QUEUE_SIZE, "2048")]))
            .unwrap();
        assert_eq!(config.memory.budget_bytes, 1 << 30);
    }

    #[test]
    fn batch_size_never_exceeds_queue_size() {
        let mut config = PipelineConfig::default();
        config
            .apply_env(env(&[(OTEL_BSP_MAX_QUEUE_SIZE, "100")]))
            .unwrap();
        assert_eq!(config.batch.max_spans, 100);
    }

    #[test]
    fn every_bad_bsp_value_is_an_error_naming_the_variable_and_changes_nothing() {
        for (name, value) in [
            (OTEL_BSP_MAX_QUEUE_SIZE, "0"),
            (OTEL_BSP_MAX_QUEUE_SIZE, "lots"),
            (OTEL_BSP_SCHEDULE_DELAY, "5s"),
            (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "-3"),
            (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "0"),
            (OTEL_BSP_EXPORT_TIMEOUT, "0"),
            (OTEL_BSP_EXPORT_TIMEOUT, "1.5"),
            (OTEL_BSP_MAX_CONCURRENT_EXPORTS, "0"),
        ] {
            let mut config = PipelineConfig::default();
            // A good variable beside the bad one is not applied either.
            let good = if name == OTEL_BSP_SCHEDULE_DELAY {
                (OTEL_BSP_EXPORT_TIMEOUT, "5")
            } else {
                (OTEL_BSP_SCHEDULE_DELAY, "1")
            };
            let err = config.apply_env(env(&[(name, value), good])).unwrap_err();
            assert_eq!(err.variable(), name);
            let text = err.to_string();
            assert!(
                text.contains(name) && text.contains(value),
                "{name}={value}: {text}"
            );
            assert_eq!(config, PipelineConfig::default(), "{name}={value}");
        }
    }

    /// Serializes `config` to TOML and JSON and reads both back.
    fn assert_round_trips(config: &PipelineConfig) {
        let text = toml::to_string(config).unwrap();
        let back: PipelineConfig = toml::from_str(&text).unwrap();
        assert_eq!(&back, config, "{text}");
        let json = serde_json::to_string(config).unwrap();
        let back: PipelineConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, config, "{json}");
    }

    const FULL: &str = r#"
        [batch]
        max_spans = 512
        [memory]
        budget_bytes = 1048576
        free_spans_on = "pipeline"
        [memory.overflow.block]
        max_wait_ms = 5
        [processing]
        threads = 2
        [queue]
        type = "disk"
        dir = "/var/lib/spanflow/queue"
        max_bytes = "2GiB"
        fsync_interval = "250ms"

        [[processors]]
        type = "filter"
        name = "no-health"
        match_type = "glob"
        span_names = ["GET /health*"]
        kinds = ["server"]
        min_duration_ms = 0.5
        attributes = [{ key = "http.status_code", value = 200 }, { key = "ok", value = true }]

        [[processors]]
        type = "attributes"
        actions = [
          { key = "env", action = "insert", value = "prod", scope = "resource" },
          { key = "ratio", action = "upsert", value = 0.25 },
          { pattern = '^secret\.', action = "delete" },
        ]

        [[processors]]
        type = "redact"
        allowed_keys = ["http.method"]
        blocked_values = ['\d{16}']

        [[processors]]
        type = "probabilistic_sampler"
        ratio = 0.5

        [[processors]]
        type = "span_stats"

        [[exporters]]
        name = "primary"
        sink = { type = "otlp", protocol = "http/protobuf", endpoint = "http://127.0.0.1:4318/v1/traces", headers = { "api-key" = "k" }, timeout = "2500ms", compression = "gzip" }
        backend = { queue = 8, policy = "drop_oldest", timeout = "3s", retry = { initial_backoff = "100ms", max_elapsed = "1m" } }

        [[exporters]]
        name = "spill"
        role = "fallback"
        sink = { type = "file", path = "spans.jsonl", max_bytes = 1024 }

        [[exporters]]
        name = "out"
        sink = { type = "stdout" }
    "#;

    #[test]
    fn the_defaults_round_trip_and_print_every_value() {
        let config = PipelineConfig::default();
        assert_round_trips(&config);
        let text = toml::to_string(&config).unwrap();
        for key in [
            "max_spans = 2048",
            "budget_bytes = 268435456",
            "max_wait_ms = 1000",
            "free_spans_on = \"application\"",
            "timeout_ms = 10000",
            "nice = 10",
            "type = \"memory\"",
        ] {
            assert!(text.contains(key), "{key} missing from\n{text}");
        }
    }

    #[test]
    fn a_full_config_round_trips_with_human_durations_and_sizes() {
        let config: PipelineConfig = toml::from_str(FULL).unwrap();
        assert_round_trips(&config);
        let text = toml::to_string(&config).unwrap();
        for key in [
            "max_bytes = \"2GiB\"",
            "fsync_interval = \"250ms\"",
            "timeout = \"2500ms\"",
            "timeout = \"3s\"",
            "max_elapsed = \"60s\"",
        ] {
            assert!(text.contains(key), "{key} missing from\n{text}");
        }
    }

    #[test]
    fn generated_configs_round_trip() {
        // A small deterministic generator (xorshift) instead of a property-testing crate.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        let base: PipelineConfig = toml::from_str(FULL).unwrap();
        for _ in 0..200 {
            let mut config = base.clone();
            config.batch.max_spans = next(1 << 20) as usize + 1;
            config.batch.max_bytes = next(1 << 30) as usize + 1;
            config.batch.max_age_ms = next(1 << 40);
            config.memory.budget_bytes = next(1 << 40) as usize;
            config.memory.overflow = if next(2) == 0 {
                OverflowPolicy::Drop
            } else {
                OverflowPolicy::Block {
                    max_wait_ms: next(100_000),
                }
            };
            config.export.concurrency = next(64) as usize;
            config.export.timeout_ms = next(1 << 40);
            config.processing.nice = next(40) as i32 - 20;
            if let Some(backend) = config.exporters[0].backend.as_mut() {
                backend.timeout = Duration::from_nanos(next(1 << 45));
                backend.retry.initial_backoff = Duration::from_millis(next(1 << 30));
                backend.retry.multiplier = 1.0 + next(1000) as f64 / 7.0;
            }
            if let QueueSettings::Disk(spool) = &mut config.queue {
                spool.max_bytes = spanflow_spool::ByteSize(next(1 << 50));
                spool.fsync_interval =
                    spanflow_spool::HumanDuration(Duration::from_micros(next(1 << 40)));
            }
            if next(3) == 0 {
                config.queue = QueueSettings::Memory;
            }
            assert_round_trips(&config);
        }
    }

    #[test]
    fn config_reads_from_toml_and_rejects_unknown_fields() {
        let text = r#"
            [memory]
            budget_bytes = 1048576
            overflow = "drop"

            [[processors]]
            type = "probabilistic_sampler"
            ratio = 0.5

            [[exporters]]
            name = "primary"
            sink = { type = "otlp", endpoint = "http://127.0.0.1:4317" }

            [[exporters]]
            name = "spill"
            role = "fallback"
            sink = { type = "stdout" }
        "#;
        let config: PipelineConfig = toml::from_str(text).unwrap();
        assert_eq!(
            config.memory,
            MemorySettings {
                budget_bytes: 1 << 20,
                overflow: OverflowPolicy::Drop,
                free_spans_on: FreeSpansOn::Application,
            }
        );
        assert_eq!(config.processors.len(), 1);
        assert_eq!(config.exporters[1].role, BackendRole::Fallback);
        assert_eq!(config.batch, BatchSettings::default());
        let typo = "[batch]\nmax_span = 5\n";
        assert!(toml::from_str::<PipelineConfig>(typo).is_err());
        let block: PipelineConfig =
            toml::from_str("[memory.overflow.block]\nmax_wait_ms = 5\n").unwrap();
        assert_eq!(
            block.memory.overflow,
            OverflowPolicy::Block { max_wait_ms: 5 }
        );
    }
}
