//! Loom models of [`Countdown`]'s wake-up protocol, run against the crate's own code: under
//! `--cfg loom` its counter and the signal it wakes the waiter with are loom's (`src/sync.rs`).
//!
//! What they check, in every interleaving loom explores: the waiter (blocking or a task) is
//! woken, never left asleep; exactly one release reports itself the last; what each settler
//! recorded with a `Relaxed` store before completing is visible to the waiter once the count
//! settles (the Kafka exporter reads its acknowledged count that way).
//!
//! Run: `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release
//! -p spanflow-batch --test loom_countdown`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use spanflow_batch::Countdown;

/// One settler thread per piece: each records an acknowledgement, then completes its piece.
fn settlers(
    countdown: &Arc<Countdown>,
    recorded: &Arc<AtomicUsize>,
    pieces: usize,
) -> Vec<thread::JoinHandle<bool>> {
    (0..pieces)
        .map(|_| {
            countdown.expect();
            let (countdown, recorded) = (Arc::clone(countdown), Arc::clone(recorded));
            thread::spawn(move || {
                recorded.fetch_add(1, Ordering::Relaxed);
                countdown.complete()
            })
        })
        .collect()
}

/// Two pieces settle on two threads while the hand-over is sealed and the waiter blocks.
#[test]
fn a_blocking_waiter_wakes_and_sees_every_settler_record() {
    loom::model(|| {
        let countdown = Arc::new(Countdown::new());
        let recorded = Arc::new(AtomicUsize::new(0));
        let handles = settlers(&countdown, &recorded, 2);
        let sealed_last = countdown.seal();
        countdown.wait();
        assert_eq!(recorded.load(Ordering::Relaxed), 2);
        let lasts = handles
            .into_iter()
            .map(|h| h.join().expect("settler"))
            .filter(|&last| last)
            .count()
            + usize::from(sealed_last);
        assert_eq!(lasts, 1, "exactly one release is the last");
    });
}

/// The waiter is a future polled by loom's executor: registering its waker races the last
/// settler's notification.
#[test]
fn an_async_waiter_wakes_and_sees_every_settler_record() {
    loom::model(|| {
        let countdown = Arc::new(Countdown::new());
        let recorded = Arc::new(AtomicUsize::new(0));
        let handles = settlers(&countdown, &recorded, 2);
        countdown.seal();
        loom::future::block_on(countdown.settled());
        assert_eq!(recorded.load(Ordering::Relaxed), 2);
        for h in handles {
            h.join().expect("settler");
        }
    });
}

/// A piece handed out after an earlier one already settled: the early settlement must not
/// look like the end, since the sealer's share is still held.
#[test]
fn a_piece_settled_during_the_hand_over_does_not_end_it() {
    loom::model(|| {
        let countdown = Arc::new(Countdown::new());
        let recorded = Arc::new(AtomicUsize::new(0));
        let first = settlers(&countdown, &recorded, 1);
        let second = settlers(&countdown, &recorded, 1);
        countdown.seal();
        loom::future::block_on(countdown.settled());
        assert_eq!(recorded.load(Ordering::Relaxed), 2);
        for h in first.into_iter().chain(second) {
            h.join().expect("settler");
        }
    });
}
