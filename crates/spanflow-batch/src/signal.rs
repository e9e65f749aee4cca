//! Wakes the single consumer, whether it sleeps on a condvar (`recv`) or in a task (`Stream`).

use std::task::Waker;
use std::time::Instant;

use crate::sync::{Condvar, Mutex};

#[derive(Default)]
struct State {
    signalled: bool,
    waker: Option<Waker>,
}

/// A level-triggered wake-up flag. A `notify` that happens while nobody waits is remembered, so a
/// consumer that checks [`take`](Signal::take) under the lock before sleeping never misses one.
#[derive(Default)]
pub(crate) struct Signal {
    state: Mutex<State>,
    cv: Condvar,
}

impl Signal {
    pub(crate) fn notify(&self) {
        let waker = {
            let mut s = self.state.lock();
            s.signalled = true;
            s.waker.take()
        };
        self.cv.notify_one();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Sleeps until notified or until `deadline` (`None`: no deadline); consumes the notification.
    pub(crate) fn wait(&self, deadline: Option<Instant>) {
        let mut s = self.state.lock();
        if !s.signalled {
            match deadline {
                Some(d) => {
                    self.cv.wait_until(&mut s, d);
                }
                None => self.cv.wait(&mut s),
            }
        }
        s.signalled = false;
    }

    /// Consumes a pending notification, or registers `waker` for the next one.
    /// Returns whether a notification was pending.
    pub(crate) fn take_or_register(&self, waker: &Waker) -> bool {
        let mut s = self.state.lock();
        if s.signalled {
            s.signalled = false;
            true
        } else {
            match &mut s.waker {
                Some(w) if w.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
            false
        }
    }
}
