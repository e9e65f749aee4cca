//! Loom models of the intake's two handshakes, written against loom's primitives with the same
//! steps and orderings as `src/intake.rs` and `src/consumer.rs` (the crate itself uses
//! `parking_lot`, which loom cannot instrument):
//!
//! 1. wake-up: the consumer publishes `sleep_until`, looks at every shard once more, then sleeps
//!    on the signal; a producer pushes under its shard lock, reads `sleep_until` inside that
//!    lock, and signals after unlocking. No item may be left while the consumer sleeps forever.
//! 2. room: a producer blocked on a full budget registers in the `room` count, retries the lease
//!    and sleeps on `room_cv`, all under `room`; the consumer returns credits, then takes `room`
//!    and notifies if anyone waits. No blocked producer may sleep past a credit.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p spanflow-batch --test loom_intake --release`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

const AWAKE: u64 = 0;
const FOREVER: u64 = u64::MAX;

struct Signal {
    signalled: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    fn notify(&self) {
        *self.signalled.lock().unwrap() = true;
        self.cv.notify_one();
    }

    fn wait(&self) {
        let mut s = self.signalled.lock().unwrap();
        while !*s {
            s = self.cv.wait(s).unwrap();
        }
        *s = false;
    }
}

struct Intake {
    shards: [Mutex<Vec<u32>>; 2],
    sleep_until: AtomicU64,
    signal: Signal,
}

impl Intake {
    fn push(&self, shard: usize, item: u32) {
        let wake = {
            let mut s = self.shards[shard].lock().unwrap();
            let was_empty = s.is_empty();
            s.push(item);
            // As in `Shared::push`: read under the shard lock; first item of a shard wakes a
            // consumer that sleeps without a deadline.
            was_empty && self.sleep_until.load(Ordering::Relaxed) == FOREVER
        };
        if wake {
            self.signal.notify();
        }
    }

    fn collect(&self) -> usize {
        self.shards
            .iter()
            .map(|s| std::mem::take(&mut *s.lock().unwrap()).len())
            .sum()
    }
}

#[test]
fn consumer_never_sleeps_past_an_item() {
    loom::model(|| {
        let intake = Arc::new(Intake {
            shards: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
            sleep_until: AtomicU64::new(AWAKE),
            signal: Signal {
                signalled: Mutex::new(false),
                cv: Condvar::new(),
            },
        });
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let intake = Arc::clone(&intake);
                thread::spawn(move || intake.push(p, p as u32))
            })
            .collect();
        // The consumer, as in `Receiver::step` + `recv`.
        let mut got = 0;
        loop {
            intake.sleep_until.store(AWAKE, Ordering::Relaxed);
            got += intake.collect();
            if got == 2 {
                break;
            }
            intake.sleep_until.store(FOREVER, Ordering::Relaxed);
            let late = intake.collect();
            if late > 0 {
                got += late;
                continue;
            }
            intake.signal.wait();
        }
        for p in producers {
            p.join().unwrap();
        }
    });
}

struct Budget {
    free: AtomicU64,
    /// Number of blocked producers.
    room: Mutex<usize>,
    room_cv: Condvar,
}

impl Budget {
    fn take(&self) -> bool {
        let mut cur = self.free.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return false;
            }
            match self
                .free
                .compare_exchange(cur, cur - 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// As in `Shared::block`.
    fn block(&self) {
        let mut room = self.room.lock().unwrap();
        loop {
            *room += 1;
            if self.take() {
                *room -= 1;
                return;
            }
            room = self.room_cv.wait(room).unwrap();
            *room -= 1;
        }
    }

    /// As in `Shared::give_credit_inner` + `wake_blocked`.
    fn give(&self) {
        self.free.fetch_add(1, Ordering::Relaxed);
        let waiters = self.room.lock().unwrap();
        if *waiters > 0 {
            self.room_cv.notify_all();
        }
    }
}

#[test]
fn blocked_producer_never_sleeps_past_a_credit() {
    loom::model(|| {
        let budget = Arc::new(Budget {
            free: AtomicU64::new(0),
            room: Mutex::new(0),
            room_cv: Condvar::new(),
        });
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let budget = Arc::clone(&budget);
                thread::spawn(move || budget.block())
            })
            .collect();
        budget.give();
        budget.give();
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(budget.free.load(Ordering::Relaxed), 0);
    });
}
