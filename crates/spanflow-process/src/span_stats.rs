//! Per-service, per-span-name statistics: count, errors, duration histogram.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use spanflow_otlp::{SpanView, TraceRequest};

use crate::error::{ProcessError, ProcessorConfigError};
use crate::processor::{Context, Processor};

/// OTLP `STATUS_CODE_ERROR`.
const STATUS_ERROR: i32 = 2;
/// Shards of the key map; a power of two so the shard is a mask of the hash.
const SHARDS: usize = 16;
/// Service name used when a resource has no `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// Service and span name of the entry that absorbs keys beyond `max_keys`.
pub const OVERFLOW_KEY: &str = "_overflow";

/// Configuration of [`SpanStats`].
///
/// ```toml
/// [[processors]]
/// type = "span_stats"
/// max_keys = 10000
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpanStatsConfig {
    /// Name in logs and panic counts and for [`Chain::span_stats`](crate::Chain::span_stats);
    /// defaults to `span_stats`.
    #[serde(default)]
    pub name: Option<String>,
    /// Distinct (service, span name) pairs tracked; spans of further pairs are
    /// counted under ([`OVERFLOW_KEY`], [`OVERFLOW_KEY`]) so a high-cardinality
    /// span name cannot exhaust memory.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    10_000
}

impl Default for SpanStatsConfig {
    fn default() -> Self {
        SpanStatsConfig {
            name: None,
            max_keys: default_max_keys(),
        }
    }
}

/// Observes spans and keeps, per service and span name, the count, the error
/// count and a duration histogram; passes every batch on unchanged.
///
/// Cloning gives another handle to the same statistics, so the clone kept by
/// the caller can read [`SpanStats::snapshot`] at any time while the chain
/// runs on many threads. Each batch is first aggregated locally (in parallel
/// chunks for large batches), then merged with one shard lookup and a few
/// atomic adds per distinct key: the hot path takes only read locks.
///
/// ```
/// use spanflow_process::SpanStats;
///
/// let stats = SpanStats::new();
/// assert!(stats.snapshot().is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct SpanStats {
    name: String,
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    shards: Box<[CachePadded<RwLock<ShardMap>>]>,
    hasher: std::collections::hash_map::RandomState,
    keys: AtomicUsize,
    max_keys: usize,
    overflow: Arc<Cells>,
}

/// service -> span name -> cells; nested so lookups borrow `&str`s.
type ShardMap = HashMap<Box<str>, HashMap<Box<str>, Arc<Cells>>>;

#[derive(Debug)]
struct Cells {
    count: AtomicU64,
    errors: AtomicU64,
    sum_ns: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Cells {
    fn new() -> Self {
        Cells {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    // Relaxed everywhere: the counters are independent statistics; a snapshot
    // may see a span in `count` before its bucket, which is acceptable for
    // monitoring and documented on `snapshot`.
    fn add(&self, local: &LocalCells) {
        self.count.fetch_add(local.count, Ordering::Relaxed);
        if local.errors > 0 {
            self.errors.fetch_add(local.errors, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(local.sum_ns, Ordering::Relaxed);
        for &(bucket, n) in &local.buckets {
            self.buckets[bucket as usize].fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One key's aggregate within one batch (or chunk).
#[derive(Debug, Default)]
struct LocalCells {
    count: u64,
    errors: u64,
    sum_ns: u64,
    /// (bucket, count), few entries per key in practice.
    buckets: Vec<(u16, u64)>,
}

impl LocalCells {
    fn record(&mut self, duration_ns: u64, error: bool) {
        self.count += 1;
        self.errors += u64::from(error);
        self.sum_ns = self.sum_ns.saturating_add(duration_ns);
        let b = bucket_of(duration_ns) as u16;
        match self.buckets.iter_mut().find(|(k, _)| *k == b) {
            Some((_, n)) => *n += 1,
            None => self.buckets.push((b, 1)),
        }
    }
}

type LocalMap<'a> = HashMap<(&'a str, &'a str), LocalCells>;

impl Default for SpanStats {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanStats {
    /// Empty statistics with the default configuration.
    pub fn new() -> Self {
        Self::build(&SpanStatsConfig::default(), "span_stats".to_owned())
    }

    /// Builds the processor from its configuration.
    ///
    /// # Errors
    ///
    /// [`ProcessorConfigError::Invalid`] if `max_keys` is zero.
    pub fn from_config(config: &SpanStatsConfig) -> Result<Self, ProcessorConfigError> {
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| "span_stats".to_owned());
        if config.max_keys == 0 {
            return Err(ProcessorConfigError::invalid(
                &name,
                "max_keys must be at least 1",
            ));
        }
        Ok(Self::build(config, name))
    }

    fn build(config: &SpanStatsConfig, name: String) -> Self {
        SpanStats {
            name,
            inner: Arc::new(Shared {
                shards: (0..SHARDS)
                    .map(|_| CachePadded::new(RwLock::new(HashMap::new())))
                    .collect(),
                hasher: Default::default(),
                keys: AtomicUsize::new(0),
                max_keys: config.max_keys,
                overflow: Arc::new(Cells::new()),
            }),
        }
    }

    /// Records every span of `batch`.
    pub fn record(&self, batch: &TraceRequest, cx: &Context<'_>) {
        let n = batch.span_count();
        if n == 0 {
            return;
        }
        if cx.parallelism().is_parallel_for(n) {
            // One dummy slot per span lets `for_each_chunk` cut the batch
            // into index ranges; each chunk aggregates locally and merges.
            let mut slots = vec![(); n];
            cx.parallelism().for_each_chunk(&mut slots, |first, chunk| {
                let mut local = LocalMap::new();
                for i in first..first + chunk.len() {
                    if let Some(span) = batch.span(i) {
                        local_record(&mut local, &span);
                    }
                }
                self.merge(local);
            });
        } else {
            let mut local = LocalMap::new();
            for span in batch.spans() {
                local_record(&mut local, &span);
            }
            self.merge(local);
        }
    }

    fn merge(&self, local: LocalMap<'_>) {
        for ((service, name), cells) in local {
            self.cells_for(service, name).add(&cells);
        }
    }

    fn cells_for(&self, service: &str, name: &str) -> Arc<Cells> {
        let shared = &*self.inner;
        let mut h = shared.hasher.build_hasher();
        service.hash(&mut h);
        name.hash(&mut h);
        let shard = &shared.shards[h.finish() as usize & (SHARDS - 1)];
        if let Some(cells) = shard.read().get(service).and_then(|m| m.get(name)) {
            return Arc::clone(cells);
        }
        let mut map = shard.write();
        if let Some(cells) = map.get(service).and_then(|m| m.get(name)) {
            return Arc::clone(cells);
        }
        // Relaxed: `keys` is a soft cardinality cap, not a synchronisation
        // point; racing inserts may overshoot by at most the shard count.
        if shared.keys.load(Ordering::Relaxed) >= shared.max_keys {
            return Arc::clone(&shared.overflow);
        }
        shared.keys.fetch_add(1, Ordering::Relaxed);
        let cells = Arc::new(Cells::new());
        map.entry(service.into())
            .or_default()
            .insert(name.into(), Arc::clone(&cells));
        cells
    }

    /// The statistics so far, sorted by service then span name.
    ///
    /// Taken while batches are being recorded, a snapshot may count a span in
    /// `count` but not yet in the histogram (counters are updated without a
    /// common lock); each value is exact once recording stops.
    pub fn snapshot(&self) -> Vec<SpanStatsEntry> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            for (service, names) in shard.read().iter() {
                for (name, cells) in names {
                    out.push(SpanStatsEntry::read(service, name, cells));
                }
            }
        }
        let overflow = &self.inner.overflow;
        if overflow.count.load(Ordering::Relaxed) > 0 {
            out.push(SpanStatsEntry::read(OVERFLOW_KEY, OVERFLOW_KEY, overflow));
        }
        out.sort_by(|a, b| (&a.service, &a.span_name).cmp(&(&b.service, &b.span_name)));
        out
    }
}

fn local_record<'a>(local: &mut LocalMap<'a>, span: &SpanView<'a>) {
    let service = span.resource().service_name().unwrap_or(UNKNOWN_SERVICE);
    let duration = span
        .end_time_unix_nano()
        .saturating_sub(span.start_time_unix_nano());
    local
        .entry((service, span.name()))
        .or_default()
        .record(duration, span.status_code() == STATUS_ERROR);
}

impl Processor for SpanStats {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, batch: TraceRequest, cx: &Context<'_>) -> Result<TraceRequest, ProcessError> {
        self.record(&batch, cx);
        Ok(batch)
    }
}

/// Statistics of one (service, span name) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanStatsEntry {
    /// The resource's `service.name`, or [`UNKNOWN_SERVICE`].
    pub service: String,
    /// The span name.
    pub span_name: String,
    /// Spans seen.
    pub count: u64,
    /// Spans with status `ERROR`.
    pub errors: u64,
    /// Durations (end − start; 0 when end precedes start).
    pub durations: DurationHistogram,
}

impl SpanStatsEntry {
    fn read(service: &str, name: &str, cells: &Cells) -> Self {
        SpanStatsEntry {
            service: service.to_owned(),
            span_name: name.to_owned(),
            count: cells.count.load(Ordering::Relaxed),
            errors: cells.errors.load(Ordering::Relaxed),
            durations: DurationHistogram {
                sum_ns: cells.sum_ns.load(Ordering::Relaxed),
                buckets: cells
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect(),
            },
        }
    }
}

/// Sub-buckets per power of two: bucket widths are at most a quarter of their
/// lower bound, so quantiles are within 25 %.
const SUB_BITS: u32 = 2;
const SUB: u64 = 1 << SUB_BITS;
/// Values below `2 * SUB` get one bucket each; above, 4 buckets per octave up
/// to `u64::MAX`.
const LINEAR: u64 = 2 * SUB;
const BUCKETS: usize = (LINEAR + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// Bucket index of a duration in nanoseconds.
fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    (LINEAR + u64::from(exp - SUB_BITS - 1) * SUB + sub) as usize
}

/// Smallest value of a bucket.
fn bucket_low(b: usize) -> u64 {
    let b = b as u64;
    if b < LINEAR {
        return b;
    }
    let exp = (b - LINEAR) / SUB + u64::from(SUB_BITS) + 1;
    let sub = (b - LINEAR) % SUB;
    (1u64 << exp) | (sub << (exp - u64::from(SUB_BITS)))
}

/// A log-linear histogram of durations: exact below 8 ns, then four buckets
/// per power of two (relative error at most 25 %).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationHistogram {
    sum_ns: u64,
    buckets: Vec<u64>,
}

impl DurationHistogram {
    /// Number of recorded durations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Sum of all durations (saturating).
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// Mean duration, `None` when empty.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_nanos(self.sum_ns / n))
    }

    /// The duration at quantile `q` in `[0, 1]` (clamped), reported as the
    /// lower bound of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(bucket_low(b)));
            }
        }
        None
    }

    /// Non-empty buckets as (lower bound, count), in increasing order.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(b, c)| (Duration::from_nanos(bucket_low(b)), *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_u64_in_order() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(7), 7);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        let mut values: Vec<u64> = (0..64)
            .flat_map(|s| {
                [
                    1u64 << s,
                    (1u64 << s) + 1,
                    (1u64 << s) / 2 * 3,
                    (1u64 << s) - 1,
                ]
            })
            .collect();
        values.sort_unstable();
        let mut last = 0;
        {
            for v in values {
                let b = bucket_of(v);
                assert!(b >= last, "monotone at {v}");
                assert!(bucket_low(b) <= v, "low bound {} > {v}", bucket_low(b));
                assert!(v - bucket_low(b) <= v / 4, "relative error at {v}");
                last = b;
            }
        }
        for b in 0..BUCKETS {
            assert_eq!(bucket_of(bucket_low(b)), b);
        }
    }

    #[test]
    fn quantiles_of_a_known_histogram() {
        let mut local = LocalCells::default();
        for v in 1..=100u64 {
            local.record(v * 1000, false);
        }
        let cells = Cells::new();
        cells.add(&local);
        let entry = SpanStatsEntry::read("s", "n", &cells);
        let h = &entry.durations;
        assert_eq!(h.count(), 100);
        assert_eq!(h.mean(), Some(Duration::from_nanos(50_500)));
        let p50 = h.quantile(0.5).expect("non-empty").as_nanos() as f64;
        assert!((50_000.0 * 0.75..=50_000.0).contains(&p50), "{p50}");
        let p100 = h.quantile(1.0).expect("non-empty").as_nanos() as f64;
        assert!((100_000.0 * 0.75..=100_000.0).contains(&p100), "{p100}");
        assert_eq!(
            DurationHistogram {
                sum_ns: 0,
                buckets: vec![0; BUCKETS]
            }
            .quantile(0.5),
            None
        );
    }
}
