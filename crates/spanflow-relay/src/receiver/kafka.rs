//! The Kafka receiver (cargo feature `kafka`): a member of a consumer group that reads OTLP
//! records, indexes them with the wire model (no span decoding) and hands them to the sink,
//! committing each partition's offsets only as far as the spans read from it are settled.
//!
//! **Nothing lost.** A record's offset becomes committable when the pipeline has settled its
//! spans (exported, failed, dropped or unconfirmed: in the books either way), or at once when
//! the record is malformed (counted and skipped) or holds no span; per partition, only the
//! contiguous prefix of such offsets is committed. A relay killed at any moment therefore
//! leaves behind a committed offset at or before every record it had not settled: the
//! partition's next owner reads those again. Records read twice are possible (their spans
//! were exported but the commit had not happened); records skipped are not.
//!
//! **Bounded.** When the pipeline's budget is full, the partition of the refused record is
//! paused and the record held (one per partition) until the retry hint passes; records of a
//! paused partition that librdkafka had already fetched are not kept but fetched again later
//! (the partition is rewound to the first of them before it resumes). librdkafka's own prefetch
//! is bounded by `prefetch_bytes`.
//!
//! **Rebalances.** When partitions are revoked the receiver waits, at most
//! `rebalance_timeout`, for the spans read from them to settle, and commits them before giving
//! the partitions up, so a rebalance without a crash reads nothing twice.
//!
//! One plain thread owns the consumer: librdkafka calls the rebalance callback on the thread
//! that polls, so the partitions' state is only ever touched there, and waiting in the callback
//! blocks nothing but this consumer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use spanflow::export::kafka::KafkaLog;

use crate::config::{KafkaReceiverConfig, KafkaRecordEncoding, StartFrom};
use crate::metrics::{KafkaMetrics, RelayMetrics};
use crate::sink::{Refused, Sink, Tracked};
use crate::wire::{self, TraceRequest};

/// The Kafka client the receiver is built on (rust-rdkafka over librdkafka 2.12), for tools and
/// tests that talk to the same brokers.
pub use rdkafka;

/// Consumer settings the commit protocol rests on; `properties` may not change them.
const FIXED: [&str; 4] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "enable.partition.eof",
];

/// Longest a poll waits: also the period of settling, retries and commits.
const POLL: Duration = Duration::from_millis(50);

/// Why the Kafka receiver could not start.
#[derive(Debug, thiserror::Error)]
#[error("kafka receiver: {0}")]
pub struct KafkaStartError(String);

/// A running Kafka receiver; stop it with [`KafkaReceiver::stop`] and [`KafkaReceiver::join`].
#[derive(Debug)]
pub(crate) struct KafkaReceiver {
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct StopSignal {
    requested: AtomicBool,
    deadline: Mutex<Option<Instant>>,
}

impl KafkaReceiver {
    /// Creates the consumer, subscribes to the topic and starts the consumer thread. Nothing
    /// waits for the brokers here: librdkafka connects in the background.
    pub(crate) fn start(
        cfg: &KafkaReceiverConfig,
        sink: Arc<dyn Sink>,
        metrics: Arc<RelayMetrics>,
    ) -> Result<Self, KafkaStartError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", cfg.brokers.trim())
            .set(
                "auto.offset.reset",
                match cfg.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .set(
                "session.timeout.ms",
                cfg.session_timeout.0.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout.0.as_millis() / 3).max(1).to_string(),
            )
            .set(
                "queued.max.messages.kbytes",
                (cfg.prefetch_bytes.0 / 1024).max(1).to_string(),
            );
        for (key, value) in &cfg.properties {
            if FIXED.contains(&key.as_str()) {
                return Err(KafkaStartError(format!(
                    "receivers.kafka.properties.{key} is fixed by spanflow: offsets are committed only for settled spans"
                )));
            }
            client.set(key, value);
        }
        client
            .set("group.id", cfg.group_id.trim())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set_log_level(RDKafkaLogLevel::Warning);
        let context = GroupContext {
            topic: cfg.topic.clone(),
            encoding: cfg.encoding,
            max_record_size: cfg.max_record_size.0,
            rebalance_timeout: cfg.rebalance_timeout.0,
            sink,
            metrics,
            partitions: Mutex::new(BTreeMap::new()),
        };
        let consumer: BaseConsumer<GroupContext> = client
            .create_with_context(context)
            .map_err(|e| KafkaStartError(e.to_string()))?;
        consumer
            .subscribe(&[cfg.topic.as_str()])
            .map_err(|e| KafkaStartError(e.to_string()))?;
        let stop = Arc::new(StopSignal::default());
        let commit_interval = cfg.commit_interval.0;
        let thread = std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn({
                let stop = stop.clone();
                move || run(consumer, commit_interval, &stop)
            })
            .map_err(|e| KafkaStartError(e.to_string()))?;
        tracing::info!(brokers = %cfg.brokers, topic = %cfg.topic, group = %cfg.group_id, "kafka receiver consuming");
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops reading records: the partitions are paused, held records released (they are read
    /// again by whoever owns the partition next), and the thread commits what settles until
    /// `deadline`, then leaves the group.
    pub(crate) fn stop(&self, deadline: Instant) {
        *self.stop.deadline.lock() = Some(deadline);
        self.stop.requested.store(true, Ordering::Release);
    }

    /// Waits for the consumer thread to finish (after [`KafkaReceiver::stop`]).
    pub(crate) fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for KafkaReceiver {
    fn drop(&mut self) {
        // A receiver dropped without `stop` still ends its thread (it commits what settled).
        if !self.stop.requested.load(Ordering::Acquire) {
            self.stop(Instant::now());
        }
    }
}

/// A record handed to the pipeline, or finished without it (`receipt: None`).
struct Pending {
    offset: i64,
    receipt: Option<Tracked>,
}

/// A record the pipeline refused for lack of room, waiting (its partition paused) to be offered
/// again.
struct Held {
    offset: i64,
    request: TraceRequest,
    retry_at: Instant,
}

/// What the receiver knows of one partition it owns.
#[derive(Default)]
struct Partition {
    /// Records read and not yet settled, in offset order.
    pending: VecDeque<Pending>,
    /// One past the last offset of the settled prefix: what the next commit says.
    settled_to: Option<i64>,
    /// What was last committed.
    committed: Option<i64>,
    held: Option<Held>,
    /// Paused for `held`; resumed once it is taken.
    paused: bool,
    /// The first offset of records fetched for the partition while it was paused and let go;
    /// the partition is rewound there before it resumes.
    rewind: Option<i64>,
}

impl Partition {
    /// Pops the settled prefix of `pending`; returns how many records it held.
    fn settle(&mut self) -> u64 {
        let mut popped = 0;
        while let Some(front) = self.pending.front_mut() {
            let settled = match &mut front.receipt {
                None => true,
                Some(receipt) => receipt.try_fate().is_some(),
            };
            if !settled {
                break;
            }
            self.settled_to = Some(front.offset + 1);
            self.pending.pop_front();
            popped += 1;
        }
        popped
    }

    /// A record that needs nothing from the pipeline: settled once every earlier one is.
    fn done(&mut self, offset: i64) {
        if self.pending.is_empty() {
            self.settled_to = Some(offset + 1);
        } else {
            self.pending.push_back(Pending {
                offset,
                receipt: None,
            });
        }
    }

    /// Whether records read now must be let go (paused for a held record or a rewind).
    fn blocked(&self) -> bool {
        self.held.is_some() || self.rewind.is_some()
    }

    fn let_go(&mut self, offset: i64) {
        self.rewind = Some(self.rewind.map_or(offset, |r| r.min(offset)));
    }
}

/// The consumer's context: the partitions' state, shared between the poll loop and the
/// rebalance callback, which librdkafka runs inside `poll` on the same thread.
struct GroupContext {
    topic: String,
    encoding: KafkaRecordEncoding,
    max_record_size: u64,
    rebalance_timeout: Duration,
    sink: Arc<dyn Sink>,
    metrics: Arc<RelayMetrics>,
    partitions: Mutex<BTreeMap<i32, Partition>>,
}

impl GroupContext {
    fn kafka(&self) -> &KafkaMetrics {
        self.metrics.kafka()
    }

    /// Settles every partition's prefix.
    fn settle(&self, partitions: &mut BTreeMap<i32, Partition>) {
        let popped: u64 = partitions.values_mut().map(Partition::settle).sum();
        if popped > 0 {
            self.kafka()
                .records_pending
                .fetch_sub(popped, Ordering::Relaxed);
        }
    }

    /// Commits the settled offsets of `which` (every partition when `None`) that moved.
    fn commit(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        partitions: &mut BTreeMap<i32, Partition>,
        which: Option<&[i32]>,
        mode: CommitMode,
    ) {
        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (&p, part) in partitions.iter() {
            if which.is_some_and(|w| !w.contains(&p)) {
                continue;
            }
            if let Some(to) = part.settled_to.filter(|to| Some(*to) != part.committed)
                && tpl
                    .add_partition_offset(&self.topic, p, Offset::Offset(to))
                    .is_ok()
            {
                moved.push((p, to));
            }
        }
        if moved.is_empty() {
            return;
        }
        self.kafka().commits.fetch_add(1, Ordering::Relaxed);
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                for (p, to) in moved {
                    if let Some(part) = partitions.get_mut(&p) {
                        part.committed = Some(to);
                    }
                }
            }
            Err(e) => {
                self.kafka().commit_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "kafka offset commit failed; it is tried again");
            }
        }
    }

    /// Offers a record's spans to the pipeline.
    fn submit(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        p: i32,
        part: &mut Partition,
        offset: i64,
        request: TraceRequest,
    ) {
        let spans = request.span_count() as u64;
        match self.sink.submit_tracked(request) {
            Ok(receipt) => {
                part.pending.push_back(Pending {
                    offset,
                    receipt: Some(receipt),
                });
                let k = self.kafka();
                k.records_pending.fetch_add(1, Ordering::Relaxed);
                k.spans_accepted.fetch_add(spans, Ordering::Relaxed);
            }
            Err(Refused::Full {
                request,
                retry_after,
            }) => {
                part.held = Some(Held {
                    offset,
                    request,
                    retry_at: Instant::now() + retry_after,
                });
                self.kafka().pauses.fetch_add(1, Ordering::Relaxed);
                self.pause(consumer, p, true);
                part.paused = true;
            }
            Err(Refused::Closed { request }) => {
                // Shutting down: never taken, never committed; read again by the next owner.
                part.held = Some(Held {
                    offset,
                    request,
                    retry_at: Instant::now() + Duration::from_secs(1),
                });
                self.pause(consumer, p, true);
                part.paused = true;
            }
            Err(Refused::TooLarge { .. }) => {
                self.kafka()
                    .records_malformed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    partition = p,
                    offset,
                    "kafka record larger than the pipeline's whole budget; skipped"
                );
                part.done(offset);
            }
        }
    }

    fn pause(&self, consumer: &BaseConsumer<GroupContext>, p: i32, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, p);
        let result = if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if let Err(e) = result {
            tracing::warn!(partition = p, pause, error = %e, "kafka pause/resume failed");
        }
    }

    /// Reads one record: malformed ones are counted and finished, the rest offered to the
    /// pipeline.
    fn record(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        message: &BorrowedMessage<'_>,
        stopping: bool,
    ) {
        if message.topic() != self.topic {
            return;
        }
        let (p, offset) = (message.partition(), message.offset());
        let mut partitions = self.partitions.lock();
        let part = partitions.entry(p).or_default();
        if stopping || part.blocked() {
            part.let_go(offset);
            return;
        }
        let k = self.kafka();
        k.records.fetch_add(1, Ordering::Relaxed);
        let payload = message.payload().unwrap_or_default();
        let parsed = if payload.len() as u64 > self.max_record_size {
            Err(format!(
                "{} bytes, more than max_record_size ({})",
                payload.len(),
                self.max_record_size
            ))
        } else {
            match self.encoding {
                KafkaRecordEncoding::OtlpProto => {
                    TraceRequest::parse(Bytes::copy_from_slice(payload)).map_err(|e| e.to_string())
                }
                KafkaRecordEncoding::OtlpJson => {
                    wire::json::from_json(payload).map_err(|e| e.to_string())
                }
            }
        };
        let request = match parsed {
            Ok(request) => request,
            Err(error) => {
                k.records_malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(partition = p, offset, %error, "malformed kafka record skipped");
                part.done(offset);
                return;
            }
        };
        let (request, rejected, _) = wire::drop_invalid_spans(request);
        k.spans
            .fetch_add((request.span_count() + rejected) as u64, Ordering::Relaxed);
        if rejected > 0 {
            self.metrics.refused_invalid(rejected);
        }
        if request.is_empty() {
            part.done(offset);
            return;
        }
        self.submit(consumer, p, part, offset, request);
    }

    /// Offers held records again once their hint has passed; resumes (after rewinding) the
    /// partitions that are free again.
    fn retry_held(&self, consumer: &BaseConsumer<GroupContext>) {
        let mut partitions = self.partitions.lock();
        let now = Instant::now();
        for (&p, part) in partitions.iter_mut() {
            if let Some(held) = part.held.take_if(|h| h.retry_at <= now) {
                self.submit(consumer, p, part, held.offset, held.request);
            }
            if part.held.is_some() || !part.paused {
                continue;
            }
            if let Some(rewind) = part.rewind {
                if let Err(e) =
                    consumer.seek(&self.topic, p, Offset::Offset(rewind), Duration::ZERO)
                {
                    tracing::debug!(partition = p, error = %e, "kafka rewind failed; tried again");
                    continue;
                }
                part.rewind = None;
            }
            self.pause(consumer, p, false);
            part.paused = false;
        }
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        KafkaLog.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        KafkaLog.error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            if let Rebalance::Error(e) = rebalance {
                tracing::warn!(error = %e, "kafka rebalance error");
            }
            return;
        };
        let revoked: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let mut partitions = self.partitions.lock();
        if !consumer.assignment_lost() {
            // Give the spans read from these partitions time to settle, then commit them, so
            // the next owner does not read them again.
            let deadline = Instant::now() + self.rebalance_timeout;
            loop {
                self.settle(&mut partitions);
                let outstanding: usize = revoked
                    .iter()
                    .filter_map(|p| partitions.get(p))
                    .map(|part| part.pending.len())
                    .sum();
                if outstanding == 0 || Instant::now() >= deadline {
                    if outstanding > 0 {
                        tracing::warn!(
                            outstanding,
                            "kafka partitions revoked with records not yet settled; their next owner reads them again"
                        );
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            self.commit(consumer, &mut partitions, Some(&revoked), CommitMode::Sync);
        }
        let mut dropped = 0;
        for p in &revoked {
            if let Some(part) = partitions.remove(p) {
                dropped += part.pending.len() as u64;
            }
        }
        let k = self.kafka();
        k.records_pending.fetch_sub(dropped, Ordering::Relaxed);
        k.rebalances.fetch_add(1, Ordering::Relaxed);
        k.partitions
            .store(partitions.len() as u64, Ordering::Relaxed);
        tracing::info!(?revoked, "kafka partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let assigned: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let mut partitions = self.partitions.lock();
        for p in &assigned {
            partitions.entry(*p).or_default();
        }
        let k = self.kafka();
        k.rebalances.fetch_add(1, Ordering::Relaxed);
        k.partitions
            .store(partitions.len() as u64, Ordering::Relaxed);
        tracing::info!(?assigned, "kafka partitions assigned");
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.kafka().commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "kafka offset commit refused");
        }
    }
}

/// The consumer thread: poll, hand records over, settle, commit; at stop, drain and leave.
fn run(consumer: BaseConsumer<GroupContext>, commit_interval: Duration, stop: &StopSignal) {
    let context = consumer.context().clone();
    let mut last_commit = Instant::now();
    let mut stopping: Option<Instant> = None;
    loop {
        if stopping.is_none() && stop.requested.load(Ordering::Acquire) {
            let deadline = stop.deadline.lock().unwrap_or_else(Instant::now);
            stopping = Some(deadline);
            // Read nothing more; what is held was never taken and is read again later.
            let mut partitions = context.partitions.lock();
            if let Ok(assigned) = consumer.assignment() {
                let _ = consumer.pause(&assigned);
            }
            for part in partitions.values_mut() {
                if let Some(held) = part.held.take() {
                    part.let_go(held.offset);
                }
            }
        }
        if stopping.is_none() {
            context.retry_held(&consumer);
        }
        {
            let mut partitions = context.partitions.lock();
            context.settle(&mut partitions);
            if let Some(deadline) = stopping {
                let drained = partitions.values().all(|p| p.pending.is_empty());
                if drained || Instant::now() >= deadline {
                    context.commit(&consumer, &mut partitions, None, CommitMode::Sync);
                    break;
                }
            }
            if last_commit.elapsed() >= commit_interval {
                context.commit(&consumer, &mut partitions, None, CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        // The lock is released: the rebalance callback runs inside poll and takes it.
        match consumer.poll(POLL) {
            None => {}
            Some(Ok(message)) => context.record(&consumer, &message, stopping.is_some()),
            Some(Err(e)) => tracing::debug!(error = %e, "kafka consumer"),
        }
    }
    let unsettled: usize = context
        .partitions
        .lock()
        .values()
        .map(|p| p.pending.len())
        .sum();
    if unsettled > 0 {
        tracing::warn!(
            unsettled,
            "kafka receiver stopped with records not settled; the group reads them again"
        );
    }
    // Dropping the consumer closes it: it leaves the group (the revoke callback commits what
    // settled meanwhile).
    drop(consumer);
}
