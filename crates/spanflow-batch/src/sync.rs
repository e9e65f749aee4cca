//! The one place where the crate chooses between its real primitives and loom's.
//!
//! The intake, the consumer, the budget and the signal import their mutexes, condvars, atomics
//! and per-thread shard slots from here only, so they are written once and model-checked as they
//! are (`RUSTFLAGS="--cfg loom --cfg crossbeam_loom"`, the models in `tests/loom_*.rs`), the way
//! tokio and crossbeam do it. Outside loom this is `parking_lot` and `std`; under loom, thin
//! wrappers give loom's `Mutex` and `Condvar` `parking_lot`'s API shape (a guard passed by
//! `&mut`, no poisoning).
//!
//! Under loom a timed wait (`Condvar::wait_until`) waits for a notification only, as if its
//! deadline were far away: loom has no clock. A model therefore must not depend on a deadline
//! passing; in exchange, a wake-up that the code forgets shows up as a deadlock, which loom
//! reports.

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    /// Round-robin source of shard slots (per thread, and per pinned handle).
    static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        static THREAD_SLOT: usize = next_slot();
    }

    /// A fresh slot number; consecutive calls spread over the shards.
    pub(crate) fn next_slot() -> usize {
        // Relaxed: only spreading matters, not ordering.
        NEXT_SLOT.fetch_add(1, Ordering::Relaxed)
    }

    /// The calling thread's slot, drawn once, the first time the thread sends.
    pub(crate) fn thread_slot() -> usize {
        THREAD_SLOT.with(|slot| *slot)
    }
}

#[cfg(loom)]
mod imp {
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    loom::lazy_static! {
        // Per model execution, so every execution hands out the same slots in the same order.
        static ref NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
    }

    loom::thread_local! {
        static THREAD_SLOT: usize = next_slot();
    }

    pub(crate) fn next_slot() -> usize {
        NEXT_SLOT.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn thread_slot() -> usize {
        THREAD_SLOT.with(|slot| *slot)
    }

    /// loom's mutex with `parking_lot`'s API: `lock` returns the guard, no poisoning.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // A panic while locked fails the model anyway; poisoning adds nothing.
            let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
            MutexGuard(Some(guard))
        }
    }

    /// The guard; `None` only inside [`Condvar::wait`], while loom holds it.
    #[derive(Debug)]
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_deref().expect("guard held outside a wait")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_deref_mut().expect("guard held outside a wait")
        }
    }

    /// `parking_lot::WaitTimeoutResult`'s shape.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct WaitTimeoutResult(bool);

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(self) -> bool {
            self.0
        }
    }

    /// loom's condvar with `parking_lot`'s API: waits take the guard by `&mut`.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("guard held outside a wait");
            let inner = self.0.wait(inner).unwrap_or_else(|e| e.into_inner());
            guard.0 = Some(inner);
        }

        /// Waits for a notification only: loom has no clock (see the module docs).
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitTimeoutResult {
            self.wait(guard);
            WaitTimeoutResult(false)
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

pub(crate) use imp::*;
