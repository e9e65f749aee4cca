//! Per backend: the dispatcher that takes batches off the queue, and the export of one batch
//! with retry, ending in its fate at this destination.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::queue::{Item, Parcel};
use super::settle::{DropReason, Fate};
use super::{Backend, Shared};
use crate::cancel::unless_cancelled;
use crate::retry::{AttemptObserver, RetryEnd, export_with_retry};
use crate::stats::{Counters, Health};
use crate::{ExportError, ExportOutcome};

/// Per backend: take a permit, then a batch, and export it on its own task.
/// Taking the permit first leaves batches in the queue (where `DropOldest` can still evict
/// them) while every permit is busy.
pub(super) async fn dispatch(shared: Arc<Shared>, index: usize) {
    let b = &shared.backends[index];
    loop {
        let Some(Ok(permit)) =
            unless_cancelled(&shared.cancel, Arc::clone(&b.semaphore).acquire_owned()).await
        else {
            break;
        };
        let item = loop {
            {
                let mut st = b.state.lock();
                if let Some(item) = st.items.pop_front() {
                    break Some(item);
                }
                if st.closed {
                    break None;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this await is not missed.
            if unless_cancelled(&shared.cancel, b.available.notified())
                .await
                .is_none()
            {
                break None;
            }
        };
        let Some(item) = item else { break };
        Counters::sub(&b.counters.queued, 1);
        Counters::add(&b.counters.in_flight, 1);
        let task_shared = Arc::clone(&shared);
        shared.tracker.spawn(async move {
            run(&task_shared, index, item).await;
            drop(permit);
        });
    }
    // Cancelled (shutdown deadline or drop): whatever still waits was never sent from here.
    let left: Vec<Item> = b.state.lock().items.drain(..).collect();
    for item in left {
        Counters::sub(&b.counters.queued, 1);
        let seq = item.seq;
        shared.discard(b, Parcel::from(item), DropReason::ShutdownDeadline);
        shared.finish(index, seq);
    }
}

/// Durable mode, per primary: take a permit, then the next record from this backend's spool
/// reader, and export it on its own task. Records wait in the spool, not in memory: the
/// permits bound what this backend holds.
pub(super) async fn dispatch_spool(shared: Arc<Shared>, index: usize) {
    let b = &shared.backends[index];
    let Some((reader, _)) = &b.durable else {
        return;
    };
    loop {
        let Some(Ok(permit)) =
            unless_cancelled(&shared.cancel, Arc::clone(&b.semaphore).acquire_owned()).await
        else {
            break;
        };
        let records = match unless_cancelled(&shared.cancel, reader.read(1, usize::MAX)).await {
            None => break,
            Some(Ok(records)) => records,
            Some(Err(e)) => {
                tracing::debug!(backend = %b.name, error = %e, "spool reader stopped");
                break;
            }
        };
        let Some(record) = records.into_iter().next() else {
            continue;
        };
        let spans = record.meta;
        Counters::add(&b.counters.received_batches, 1);
        Counters::add(&b.counters.received_spans, spans);
        Counters::add(&b.counters.in_flight, 1);
        let item = Item {
            seq: record.seq,
            ticket: shared.ticket_for(record.seq, spans),
            batch: crate::ExportBatch::new(record.data, spans as usize),
            in_doubt: false,
            ack: Some((index, record.seq)),
            queued: false,
        };
        let task_shared = Arc::clone(&shared);
        shared.tracker.spawn(async move {
            run(&task_shared, index, item).await;
            drop(permit);
        });
    }
}

struct Observer<'a> {
    shared: &'a Shared,
    index: usize,
}

impl AttemptObserver for Observer<'_> {
    fn attempt(&self, latency: Duration, result: &Result<ExportOutcome, ExportError>) {
        let b = &self.shared.backends[self.index];
        b.counters.latency.record(latency);
        let health = if result.is_ok() {
            Health::Running
        } else {
            Health::Degraded
        };
        // Of several attempts failing at once, exactly one sees the backend turn degraded.
        let before = self.shared.set_health(self.index, health);
        // Logged on the change only: the first failure of a healthy (or new) backend at once,
        // then nothing more until it recovers, however long the outage and its retries last
        // (each retry is at debug level in `retry`). A flapping backend logs the start of an
        // outage at most once per `WARN_EVERY`, with the count of outages it held back, and
        // its recovery only when that outage's WARN was logged.
        match (before, result) {
            (Some(Health::Idle | Health::Running), Err(error)) => {
                let logged = b.logs.outage.admit().inspect(|&held_back| {
                    tracing::warn!(backend = %b.name, %error, retryable = error.is_retryable(),
                        outages_not_logged = held_back,
                        "export to backend failed (logged once until it recovers)");
                });
                // Relaxed: it only decides whether a log line is written; a recovery racing
                // this store can at worst leave out one INFO line.
                b.logs
                    .outage_logged
                    .store(logged.is_some(), Ordering::Relaxed);
            }
            (Some(Health::Degraded), Ok(_))
                if b.logs.outage_logged.swap(false, Ordering::Relaxed) =>
            {
                tracing::info!(backend = %b.name, "backend recovered: export succeeded");
            }
            _ => {}
        }
    }
    fn retry(&self, _error: &ExportError, _delay: Duration) {
        Counters::add(&self.shared.backends[self.index].counters.retries, 1);
    }
}

/// Exports `item` to backend `index` with retry, then records its fate here: exported,
/// handed to the fallback, or settled as failed, dropped or unconfirmed.
async fn run(shared: &Shared, index: usize, item: Item) {
    let b = &shared.backends[index];
    let observer = Observer { shared, index };
    let RetryEnd { result, in_doubt } = export_with_retry(
        &*b.exporter,
        &item.batch,
        &b.config.retry,
        b.config.timeout,
        &shared.cancel,
        &observer,
    )
    .await;
    let (seq, queued) = (item.seq, item.queued);
    let mut parcel = Parcel::from(item);
    parcel.in_doubt |= in_doubt;
    let c = &b.counters;
    let spans = parcel.batch.spans as u64;
    match result {
        Ok(outcome) => {
            Counters::add(&c.exported_batches, 1);
            Counters::add(&c.accepted_spans, outcome.accepted);
            Counters::add(&c.rejected_spans, outcome.rejected);
            if outcome.rejected > 0
                && let Some(held_back) = b.logs.rejected.admit()
            {
                tracing::warn!(backend = %b.name, rejected = outcome.rejected,
                    message = outcome.message.as_deref().unwrap_or(""),
                    similar_not_logged = held_back, "backend rejected spans");
            }
            // A success settles even a batch an earlier attempt may have delivered: it arrived.
            parcel.in_doubt = false;
            shared.settle(
                parcel,
                Fate::Exported {
                    accepted: outcome.accepted,
                },
            );
        }
        Err(ExportError::Cancelled) if parcel.ack.is_some() => {
            // Durable: shutdown's deadline leaves the record unacknowledged in the spool; it
            // is exported after the next start (a duplicate if this attempt got through).
            shared.settle(parcel, Fate::Dropped(DropReason::ShutdownDeadline));
        }
        Err(ExportError::Cancelled) => {
            // Shutdown's deadline: no fallback runs any more.
            if parcel.in_doubt {
                Counters::add(&c.unconfirmed_batches, 1);
                Counters::add(&c.unconfirmed_spans, spans);
            } else {
                Counters::add(&c.dropped_batches, 1);
                Counters::add(&c.dropped_spans, spans);
            }
            shared.settle(parcel, Fate::Dropped(DropReason::ShutdownDeadline));
        }
        Err(error) => {
            count_unfinished(b, spans, parcel.in_doubt);
            if !error.is_retryable() {
                Counters::add(&c.permanent_errors, 1);
            }
            match b.logs.gave_up.admit() {
                Some(held_back) => tracing::warn!(backend = %b.name, spans, %error,
                    in_doubt = parcel.in_doubt, similar_not_logged = held_back, "export failed"),
                None => tracing::debug!(backend = %b.name, spans, %error,
                    in_doubt = parcel.in_doubt, "export failed"),
            }
            shared.to_fallback_or(b, parcel, |_| Fate::Failed);
        }
    }
    Counters::sub(&c.in_flight, 1);
    if queued {
        shared.finish(index, seq);
    }
}

/// Counts a batch this backend gave up on: unconfirmed if an attempt may have delivered it,
/// otherwise failed.
fn count_unfinished(b: &Backend, spans: u64, in_doubt: bool) {
    let c = &b.counters;
    if in_doubt {
        Counters::add(&c.unconfirmed_batches, 1);
        Counters::add(&c.unconfirmed_spans, spans);
    } else {
        Counters::add(&c.failed_batches, 1);
        Counters::add(&c.failed_spans, spans);
    }
}
