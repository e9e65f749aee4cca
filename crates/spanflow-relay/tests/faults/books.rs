//! The books check every scenario ends with, and the scenario's verdict.
//!
//! The relay promises "acknowledged = delivered + counted drops, exactly". From outside the
//! process that reads: the sink holds no span the client was not told was accepted; the final
//! line balances (`accepted = exported + failed + dropped + unconfirmed + queued`); the relay
//! accepted exactly what the client was acknowledged; and every acknowledged span the sink
//! does not hold is one the relay counted as lost — where `unconfirmed` spans may have arrived
//! anyway (`exported <= delivered <= exported + unconfirmed`).

use std::collections::HashSet;

use super::client::ClientBook;
use super::relay::{FinalLine, Stopped};
use super::sink::Delivered;

/// The numbers of one books check.
#[derive(Debug, Clone, Default)]
pub(crate) struct Books {
    pub(crate) acked: u64,
    pub(crate) delivered: u64,
    pub(crate) duplicates: u64,
    /// Acknowledged, not delivered.
    pub(crate) missing: u64,
    /// Delivered, never acknowledged (nor sent in an attempt of unknown outcome).
    pub(crate) phantom: u64,
    pub(crate) accepted: u64,
    pub(crate) exported: u64,
    pub(crate) failed: u64,
    pub(crate) dropped: u64,
    pub(crate) unconfirmed: u64,
    pub(crate) queued: u64,
}

/// What one scenario found: summary lines and every violated expectation, reported together
/// at the end so a failure shows the whole picture, not only the first broken rule.
#[derive(Debug)]
pub(crate) struct Verdict {
    scenario: String,
    notes: Vec<String>,
    violations: Vec<String>,
}

impl Verdict {
    pub(crate) fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            notes: Vec::new(),
            violations: Vec::new(),
        }
    }

    pub(crate) fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// Records a violation `what` unless `ok`.
    pub(crate) fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.violations.push(what());
        }
    }

    /// The books check (see the module doc), noting the summary line.
    pub(crate) fn books(
        &mut self,
        client: &ClientBook,
        delivered: &Delivered,
        stopped: &Stopped,
    ) -> Books {
        let line = &stopped.line;
        let acked: HashSet<u64> = client.acked.iter().copied().collect();
        let unknown: HashSet<u64> = client.unknown.iter().copied().collect();
        let b = Books {
            acked: acked.len() as u64,
            delivered: delivered.unique(),
            duplicates: delivered.duplicates(),
            missing: acked
                .iter()
                .filter(|id| !delivered.ids.contains_key(id))
                .count() as u64,
            phantom: delivered
                .ids
                .keys()
                .filter(|id| !acked.contains(id) && !unknown.contains(id))
                .count() as u64,
            accepted: line.count("accepted"),
            exported: line.count("exported"),
            failed: line.count("failed"),
            dropped: line.count("dropped"),
            unconfirmed: line.count("unconfirmed"),
            queued: line.count("queued"),
        };
        self.expect(acked.len() == client.acked.len(), || {
            format!(
                "the client acknowledged {} span ids more than once",
                client.acked.len() - acked.len()
            )
        });
        self.note(format!(
            "books: acked={} delivered={} duplicates={} missing={} phantom={} | accepted={} exported={} failed={} dropped={} {:?} unconfirmed={} queued={} flushed={:?} | exit {:?} after {:.2}s, peak rss {:.1} MiB",
            b.acked,
            b.delivered,
            b.duplicates,
            b.missing,
            b.phantom,
            b.accepted,
            b.exported,
            b.failed,
            b.dropped,
            line.drop_reasons(),
            b.unconfirmed,
            b.queued,
            line.flushed(),
            stopped.status.code(),
            stopped.after_term.as_secs_f64(),
            stopped.peak_rss as f64 / f64::from(1 << 20),
        ));
        self.note(client.summary());
        self.note(format!(
            "sink: requests={} records={} torn_frames={}",
            delivered.requests, delivered.total, delivered.torn_frames
        ));
        self.note(format!("final line: {}", line.raw));

        // (1) No phantom spans.
        self.expect(b.phantom == 0, || {
            format!("{} delivered spans were never acknowledged", b.phantom)
        });
        // (2) The final line balances, and drops are counted by reason.
        let sum = b.exported + b.failed + b.dropped + b.unconfirmed + b.queued;
        self.expect(b.accepted == sum, || {
            format!(
                "accepted {} != exported {} + failed {} + dropped {} + unconfirmed {} + queued {} = {sum}",
                b.accepted, b.exported, b.failed, b.dropped, b.unconfirmed, b.queued
            )
        });
        self.drop_reasons_add_up(line);
        // (3) The relay accepted what the client was acknowledged.
        let slack = client.unknown_attempt_spans;
        self.expect(
            b.accepted >= b.acked && b.accepted <= b.acked + slack,
            || {
                format!(
                    "relay accepted {} spans, the client was acknowledged {} (plus at most {slack} from attempts of unknown outcome)",
                    b.accepted, b.acked
                )
            },
        );
        // (4) What is missing is what was counted lost; unconfirmed spans may have arrived.
        self.expect(b.exported <= b.delivered, || {
            format!(
                "relay counts {} exported, the sink holds only {}",
                b.exported, b.delivered
            )
        });
        let extra = b.delivered.saturating_sub(b.exported);
        self.expect(extra <= b.unconfirmed, || {
            format!(
                "{extra} delivered spans are not counted exported, more than the {} unconfirmed",
                b.unconfirmed
            )
        });
        let counted_lost = (b.failed + b.dropped + b.unconfirmed + b.queued).saturating_sub(extra);
        if slack == 0 {
            self.expect(b.missing == counted_lost, || {
                format!(
                    "{} acknowledged spans are missing but the relay counts {counted_lost} lost (failed + dropped + unconfirmed + queued - delivered-but-unconfirmed)",
                    b.missing
                )
            });
        } else {
            self.expect(
                b.missing <= counted_lost
                    && counted_lost <= b.missing + b.accepted.saturating_sub(b.acked),
                || {
                    format!(
                        "{} acknowledged spans are missing, the relay counts {counted_lost} lost (attempts of unknown outcome: {slack} spans)",
                        b.missing
                    )
                },
            );
        }
        b
    }

    /// `dropped.<reason>` tokens add up to `dropped`, and drops always come with a reason.
    fn drop_reasons_add_up(&mut self, line: &FinalLine) {
        let reasons = line.drop_reasons();
        let dropped = line.count("dropped");
        let by_reason: u64 = reasons.values().sum();
        self.expect(dropped == by_reason, || {
            format!("dropped={dropped} but the reasons add up to {by_reason}: {reasons:?}")
        });
    }

    /// Prints the summary; panics listing every violation, if any.
    pub(crate) fn finish(self) {
        println!("== {}", self.scenario);
        for n in &self.notes {
            println!("   {n}");
        }
        if self.violations.is_empty() {
            println!("   OK");
            return;
        }
        for v in &self.violations {
            println!("   VIOLATION: {v}");
        }
        panic!(
            "{}: {} violation(s):\n  - {}\n{}",
            self.scenario,
            self.violations.len(),
            self.violations.join("\n  - "),
            self.notes.join("\n")
        );
    }
}
