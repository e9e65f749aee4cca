//! [`Countdown`]: waits for work handed out piece by piece, whose pieces settle on other
//! threads, without knowing up front how many pieces there will be.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::signal::Signal;
use crate::sync::{AtomicUsize, Ordering};

/// Counts pieces of work handed out and not yet settled, plus one share held by whoever hands
/// them out until it [seals](Countdown::seal) the count; one waiter learns when the count
/// reaches zero.
///
/// The share held until the seal is what makes an open-ended hand-over safe: pieces settled
/// while more are still being handed out never bring the count to zero early. Whatever each
/// settler records before [`Countdown::complete`] (even with `Relaxed` stores) is visible to
/// the waiter once it sees the count settled.
///
/// spanflow's Kafka exporter hands a batch to librdkafka record by record and counts each
/// record's delivery report, which arrives on librdkafka's thread, into one of these.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use spanflow_batch::Countdown;
///
/// let countdown = Arc::new(Countdown::new());
/// let acknowledged = Arc::new(AtomicUsize::new(0));
/// let mut settlers = Vec::new();
/// for _ in 0..4 {
///     countdown.expect(); // before the hand-over: the piece may settle before it returns
///     let (countdown, acknowledged) = (countdown.clone(), acknowledged.clone());
///     settlers.push(std::thread::spawn(move || {
///         acknowledged.fetch_add(1, Ordering::Relaxed);
///         countdown.complete();
///     }));
/// }
/// countdown.seal();
/// countdown.wait();
/// assert_eq!(acknowledged.load(Ordering::Relaxed), 4);
/// # for s in settlers { s.join().unwrap(); }
/// ```
pub struct Countdown {
    outstanding: AtomicUsize,
    settled: Signal,
}

impl std::fmt::Debug for Countdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Countdown")
            // Relaxed: a snapshot for display.
            .field("outstanding", &self.outstanding.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Countdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Countdown {
    /// An open count: no piece handed out, not sealed.
    pub fn new() -> Self {
        Self {
            outstanding: AtomicUsize::new(1),
            settled: Signal::default(),
        }
    }

    /// A piece is about to be handed out. Call it before the hand-over, since the piece may
    /// settle before the hand-over returns, and only before [`Countdown::seal`].
    pub fn expect(&self) {
        // Relaxed: the count stays above zero (the sealer's share) until `seal`, whose AcqRel
        // decrement orders this increment before any thread can see the count reach zero.
        let before = self.outstanding.fetch_add(1, Ordering::Relaxed);
        debug_assert!(before > 0, "Countdown::expect after the count settled");
    }

    /// A piece settled, or will never settle (its hand-over failed). Returns whether it was the
    /// last outstanding one of a sealed count.
    pub fn complete(&self) -> bool {
        self.release()
    }

    /// Every piece is handed out. Returns whether none was still outstanding.
    pub fn seal(&self) -> bool {
        self.release()
    }

    fn release(&self) -> bool {
        // AcqRel: the Release half publishes what this settler recorded before; the Acquire
        // half makes the thread that reaches zero see every earlier settler's records too.
        let last = self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1;
        if last {
            // Level-triggered: remembered when the waiter is not waiting yet.
            self.settled.notify();
        }
        last
    }

    /// Whether the count is sealed and every piece settled.
    pub fn is_settled(&self) -> bool {
        // Acquire: pairs with the settlers' AcqRel decrements, so whatever they recorded
        // before settling is visible to the caller once this returns true.
        self.outstanding.load(Ordering::Acquire) == 0
    }

    /// Blocks the calling thread until [`Countdown::is_settled`].
    pub fn wait(&self) {
        while !self.is_settled() {
            self.settled.wait(None);
        }
    }

    /// Resolves once [`Countdown::is_settled`]. One waiter at a time: a second concurrent
    /// waiter may not be woken.
    pub fn settled(&self) -> Settled<'_> {
        Settled { countdown: self }
    }
}

/// The future [`Countdown::settled`] returns.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Settled<'a> {
    countdown: &'a Countdown,
}

impl Future for Settled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.countdown.is_settled() {
                return Poll::Ready(());
            }
            // The last release notifies after its decrement: registered before that
            // notification, the waker is woken; registered after it, the notification is
            // pending and consumed here, and the count is looked at again.
            if !self.countdown.settled.take_or_register(cx.waker()) {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn settles_only_once_sealed_and_every_piece_completed() {
        let c = Countdown::new();
        assert!(!c.is_settled());
        c.expect();
        c.expect();
        assert!(!c.complete());
        assert!(!c.complete(), "not sealed yet");
        assert!(!c.is_settled());
        assert!(c.seal());
        assert!(c.is_settled());
        c.wait();
    }

    #[test]
    fn sealing_before_the_last_piece_completes_leaves_the_last_to_it() {
        let c = Countdown::new();
        c.expect();
        assert!(!c.seal());
        assert!(!c.is_settled());
        assert!(c.complete());
        assert!(c.is_settled());
    }

    #[test]
    fn an_empty_count_settles_at_its_seal() {
        let c = Countdown::default();
        assert!(c.seal());
        c.wait();
    }

    #[test]
    fn the_waiter_wakes_when_another_thread_completes_the_last_piece() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        for pieces in [0usize, 1, 10, 1000] {
            let c = Arc::new(Countdown::new());
            for _ in 0..pieces {
                c.expect();
            }
            let settler = {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..pieces {
                        c.complete();
                    }
                })
            };
            c.seal();
            runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), c.settled()).await
                })
                .expect("settled within 10 s");
            settler.join().expect("settler");
        }
    }
}
