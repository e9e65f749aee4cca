//! [`KafkaExporter`]: one export attempt = every record of a batch produced and acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use spanflow_otlp::{DecodeError, TraceRequest};

use super::split::{self, TraceRecord};
use super::tally::Tally;
use super::{KafkaConfig, KafkaEncoding, Partitioning};
use crate::{ExportBatch, ExportBuildError, ExportError, ExportOutcome, Exporter};

/// Settings the delivery contract rests on; `properties` may not change them.
const FIXED: [(&str, &str); 3] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    // Idempotence allows up to 5; librdkafka keeps order and never duplicates within them.
    ("max.in.flight.requests.per.connection", "5"),
];

/// How long a record waits for room in librdkafka's local queue before the attempt gives up
/// on it (its records sent so far keep their fate).
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Writes OTLP trace batches to a Kafka topic; see [the module](super) for the record format
/// and the delivery contract.
pub struct KafkaExporter {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    encoding: KafkaEncoding,
    partitioning: Partitioning,
    max_record_bytes: usize,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for KafkaExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaExporter")
            .field("topic", &self.topic)
            .field("encoding", &self.encoding)
            .field("partitioning", &self.partitioning)
            .finish_non_exhaustive()
    }
}

impl KafkaExporter {
    /// Creates the producer `config` describes. It connects in the background; nothing is
    /// checked against the brokers here.
    pub fn from_config(config: &KafkaConfig) -> Result<Self, ExportBuildError> {
        let invalid = |key: &str, value: &str, reason: &str| ExportBuildError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if config.brokers.trim().is_empty() {
            return Err(invalid("brokers", &config.brokers, "no broker given"));
        }
        if config.topic.is_empty() {
            return Err(invalid("topic", &config.topic, "empty topic name"));
        }
        if config.max_record_bytes == 0 {
            return Err(invalid("max_record_bytes", "0", "must be positive"));
        }
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", config.brokers.trim())
            .set("compression.type", config.compression.as_str())
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("linger.ms", config.linger.as_millis().to_string())
            // A record of max_record_bytes plus its headers must fit in a produce request.
            .set(
                "message.max.bytes",
                (config.max_record_bytes + 64 * 1024)
                    .clamp(1_000_000, 1_000_000_000)
                    .to_string(),
            );
        for (key, value) in &config.properties {
            if FIXED.iter().any(|(k, _)| k == key) {
                return Err(invalid(
                    &format!("properties.{key}"),
                    value,
                    "fixed by spanflow: the idempotent, acks=all delivery contract rests on it",
                ));
            }
            client.set(key, value);
        }
        for (key, value) in FIXED {
            client.set(key, value);
        }
        client.set_log_level(RDKafkaLogLevel::Warning);
        let producer = client
            .create_with_context(Deliveries)
            .map_err(|e| invalid("properties", "", &e.to_string()))?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            encoding: config.encoding,
            partitioning: config.partitioning,
            max_record_bytes: config.max_record_bytes,
            delivery_timeout: config.delivery_timeout,
        })
    }

    /// The batch as records, each with its encoded value.
    fn records(&self, batch: &ExportBatch) -> Result<Vec<TraceRecord>, ExportError> {
        let invalid = |e: DecodeError| ExportError::InvalidBatch(e.to_string());
        let records = match self.partitioning {
            Partitioning::TraceId => split::by_trace(&batch.body, self.max_record_bytes),
            Partitioning::None => split::unkeyed(&batch.body, self.max_record_bytes),
        }
        .map_err(invalid)?;
        match self.encoding {
            KafkaEncoding::OtlpProto => Ok(records),
            KafkaEncoding::OtlpJson => records
                .into_iter()
                .map(|r| {
                    let request = TraceRequest::parse(r.value).map_err(invalid)?;
                    let json = spanflow_otlp::json::to_json(&request)
                        .map_err(|e| ExportError::InvalidBatch(e.to_string()))?;
                    Ok(TraceRecord {
                        key: r.key,
                        value: Bytes::from(json),
                    })
                })
                .collect(),
        }
    }
}

impl Exporter for KafkaExporter {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let records = self.records(&batch)?;
        let total = records.len();
        // Every record carries the attempt's tally; the attempt wakes once, when its last
        // record is reported.
        let tally = Arc::new(Tally::default());
        let mut refused: Option<KafkaError> = None;
        let queue_deadline = Instant::now() + QUEUE_WAIT;
        'records: for TraceRecord { key, value } in &records {
            loop {
                tally.expect();
                let mut record =
                    BaseRecord::<[u8], [u8], _>::with_opaque_to(&self.topic, Arc::clone(&tally))
                        .payload(&value[..]);
                if let Some(key) = key {
                    record = record.key(&key[..]);
                }
                let Err((error, _)) = self.producer.send(record) else {
                    break;
                };
                // Refused: no report will come for this record.
                tally.withdraw();
                match error {
                    // librdkafka's local queue is full: wait for it to drain, boundedly.
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                        if Instant::now() < queue_deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    e => {
                        refused = Some(e);
                        break 'records;
                    }
                }
            }
        }
        drop(records);
        tally.seal();
        tally.settled().await;
        tally.verdict(total, batch.spans, refused.as_ref())
    }

    fn name(&self) -> &str {
        "kafka"
    }

    async fn shutdown(&self) -> Result<(), ExportError> {
        // Every export has settled by now; flush returns at once unless something is queued.
        let producer = self.producer.clone();
        let timeout = self.delivery_timeout;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| ExportError::Transport(e.to_string()))?
            .map_err(|e| ExportError::Transport(e.to_string()))
    }
}

/// The producer's context: logs like [`KafkaLog`] and counts each delivery report into the
/// [`Tally`] of the attempt its record belongs to.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deliveries;

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        KafkaLog.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        KafkaLog.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<Tally>;

    fn delivery(&self, result: &DeliveryResult<'_>, tally: Arc<Tally>) {
        tally.report(result.as_ref().map(|_| ()).map_err(|(e, _)| e));
    }
}

/// Routes librdkafka's log lines and errors to `tracing`, one level down: a broker that is
/// briefly unreachable is a warning for an exporter that retries, not an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaLog;

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac} {message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}
