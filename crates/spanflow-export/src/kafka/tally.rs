//! [`Tally`]: the delivery reports of one export attempt, counted as librdkafka's delivery
//! thread hands them over, and the attempt's verdict from them.
//!
//! Every record of an attempt carries the attempt's `Arc<Tally>` as its delivery opaque;
//! [`super::exporter::Deliveries`] counts each report into it. The attempt is woken once,
//! when its last record is reported, not once per record: the wake-up protocol is
//! [`spanflow_batch::Countdown`]'s, which has its loom models there.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use spanflow_batch::Countdown;

use crate::{ExportError, ExportOutcome};

/// The delivery reports of one attempt: the records not yet reported (a [`Countdown`] the
/// attempt seals once it has handed over its last record), the acknowledged ones, and what
/// the failed ones said.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    reports: Countdown,
    acknowledged: AtomicUsize,
    failures: Mutex<Failures>,
}

/// What the records that failed said.
#[derive(Debug)]
struct Failures {
    /// Failed records that may have been written anyway.
    unknown: usize,
    /// Whether every failure so far is one no retry overcomes.
    all_permanent: bool,
    first_error: Option<String>,
}

impl Default for Failures {
    fn default() -> Self {
        Self {
            unknown: 0,
            all_permanent: true,
            first_error: None,
        }
    }
}

impl Tally {
    /// A record is about to be handed to librdkafka: its report is awaited. Called before
    /// the hand-over, since the report may arrive before the hand-over returns.
    pub(crate) fn expect(&self) {
        self.reports.expect();
    }

    /// librdkafka refused the record [`Tally::expect`] announced: no report will come.
    pub(crate) fn withdraw(&self) {
        self.reports.complete();
    }

    /// The attempt has handed over every record it will.
    pub(crate) fn seal(&self) {
        self.reports.seal();
    }

    /// A delivery report: acknowledged, or failed with `error`.
    pub(crate) fn report(&self, result: Result<(), &KafkaError>) {
        match result {
            Ok(()) => {
                // Relaxed: published by the countdown's release just below.
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                let code = error.rdkafka_error_code();
                let mut failures = self.failures.lock();
                if !code.is_some_and(certainly_not_written) {
                    failures.unknown += 1;
                }
                failures.all_permanent &= code.is_some_and(permanent);
                failures
                    .first_error
                    .get_or_insert_with(|| error.to_string());
            }
        }
        self.reports.complete();
    }

    /// Waits until the attempt is sealed and every record it handed over is reported.
    pub(crate) async fn settled(&self) {
        self.reports.settled().await;
    }

    /// The attempt's verdict, once [`settled`](Tally::settled): exported when all `total`
    /// records of the batch of `spans` spans are acknowledged. `refused` is the error that
    /// stopped the hand-over, if one did (the records after it were never handed over).
    ///
    /// Otherwise: [`ExportError::Interrupted`] when some records are, or may be, in the topic
    /// (a retry writes them again); [`ExportError::InvalidBatch`] when every failure is one
    /// no retry overcomes; [`ExportError::Transport`] else.
    pub(crate) fn verdict(
        &self,
        total: usize,
        spans: usize,
        refused: Option<&KafkaError>,
    ) -> Result<ExportOutcome, ExportError> {
        // Relaxed: read only after `settled`, whose Acquire load of the count at zero ordered
        // every report's increment before it (the countdown's loom models check this).
        let acknowledged = self.acknowledged.load(Ordering::Relaxed);
        if acknowledged == total && refused.is_none() {
            return Ok(ExportOutcome::all_accepted(spans));
        }
        let failures = self.failures.lock();
        let mut all_permanent = failures.all_permanent;
        let mut first_error = failures.first_error.clone();
        if let Some(e) = refused {
            all_permanent &= e.rdkafka_error_code().is_some_and(permanent);
            first_error.get_or_insert_with(|| e.to_string());
        }
        let error = first_error.unwrap_or_default();
        let summary = format!("{acknowledged} of {total} records acknowledged: {error}");
        if acknowledged > 0 || failures.unknown > 0 {
            // Some records are (or may be) in the topic: a retry writes them again.
            Err(ExportError::Interrupted(summary))
        } else if all_permanent {
            Err(ExportError::InvalidBatch(summary))
        } else {
            Err(ExportError::Transport(summary))
        }
    }
}

/// A delivery error that certainly left the record unwritten: the broker refused it, or it
/// never left this process.
fn certainly_not_written(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidRequiredAcks
            | RDKafkaErrorCode::PurgeQueue
            | RDKafkaErrorCode::QueueFull
    )
}

/// A refusal no retry will overcome.
fn permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn failed(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn every_record_acknowledged_is_exported() {
        let tally = Tally::default();
        for _ in 0..3 {
            tally.expect();
        }
        for _ in 0..3 {
            tally.report(Ok(()));
        }
        assert!(!tally.reports.is_settled(), "not sealed yet");
        tally.seal();
        assert!(tally.reports.is_settled());
        assert_eq!(
            tally.verdict(3, 30, None).unwrap(),
            ExportOutcome::all_accepted(30)
        );
    }

    #[test]
    fn no_record_is_exported() {
        let tally = Tally::default();
        tally.seal();
        assert!(tally.reports.is_settled());
        assert_eq!(tally.verdict(0, 0, None).unwrap().accepted, 0);
    }

    #[test]
    fn a_failure_after_an_acknowledgement_is_interrupted() {
        let tally = Tally::default();
        tally.expect();
        tally.expect();
        tally.report(Ok(()));
        tally.report(Err(&failed(RDKafkaErrorCode::MessageSizeTooLarge)));
        tally.seal();
        let err = tally.verdict(2, 20, None).unwrap_err();
        assert!(matches!(err, ExportError::Interrupted(ref m) if m.starts_with("1 of 2")));
    }

    #[test]
    fn failures_are_classified_like_the_single_report_ones() {
        // Certainly not written and permanent: the batch itself is refused.
        let tally = Tally::default();
        tally.expect();
        tally.report(Err(&failed(RDKafkaErrorCode::MessageSizeTooLarge)));
        tally.seal();
        assert!(matches!(
            tally.verdict(1, 5, None),
            Err(ExportError::InvalidBatch(_))
        ));
        // Certainly not written, not permanent: a transport failure, retried.
        let tally = Tally::default();
        tally.expect();
        tally.report(Err(&failed(RDKafkaErrorCode::UnknownTopicOrPartition)));
        tally.seal();
        assert!(matches!(
            tally.verdict(1, 5, None),
            Err(ExportError::Transport(_))
        ));
        // A timeout after sending: maybe written.
        let tally = Tally::default();
        tally.expect();
        tally.report(Err(&failed(RDKafkaErrorCode::MessageTimedOut)));
        tally.seal();
        assert!(matches!(
            tally.verdict(1, 5, None),
            Err(ExportError::Interrupted(_))
        ));
    }

    #[test]
    fn a_refused_hand_over_fails_the_attempt() {
        // Nothing handed over: the refusal alone decides.
        let tally = Tally::default();
        tally.expect();
        tally.withdraw();
        tally.seal();
        assert!(tally.reports.is_settled());
        let err = tally
            .verdict(2, 20, Some(&failed(RDKafkaErrorCode::QueueFull)))
            .unwrap_err();
        assert!(matches!(err, ExportError::Transport(ref m) if m.contains("0 of 2")));
        let err = tally
            .verdict(
                2,
                20,
                Some(&failed(RDKafkaErrorCode::TopicAuthorizationFailed)),
            )
            .unwrap_err();
        assert!(matches!(err, ExportError::InvalidBatch(_)));
        // The first record acknowledged, the second refused: interrupted.
        let tally = Tally::default();
        tally.expect();
        tally.report(Ok(()));
        tally.expect();
        tally.withdraw();
        tally.seal();
        let err = tally
            .verdict(2, 20, Some(&failed(RDKafkaErrorCode::QueueFull)))
            .unwrap_err();
        assert!(matches!(err, ExportError::Interrupted(_)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_attempt_wakes_once_the_last_report_arrives() {
        for records in [0usize, 1, 10, 1000] {
            let tally = Arc::new(Tally::default());
            for _ in 0..records {
                tally.expect();
            }
            // Reports from another thread, racing the seal and the wait.
            let reporter = {
                let tally = Arc::clone(&tally);
                std::thread::spawn(move || {
                    for i in 0..records {
                        if i % 2 == 0 {
                            tally.report(Ok(()));
                        } else {
                            tally.report(Err(&failed(RDKafkaErrorCode::MessageTimedOut)));
                        }
                    }
                })
            };
            tally.seal();
            tokio::time::timeout(Duration::from_secs(10), tally.settled())
                .await
                .expect("settled");
            reporter.join().expect("reporter");
            assert_eq!(
                tally.acknowledged.load(Ordering::Relaxed),
                records.div_ceil(2)
            );
            let verdict = tally.verdict(records, records, None);
            if records < 2 {
                // No report failed.
                assert!(verdict.is_ok());
            } else {
                assert!(matches!(verdict, Err(ExportError::Interrupted(_))));
            }
        }
    }
}
