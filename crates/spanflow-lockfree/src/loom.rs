//! The one place where the crate chooses between `std` and `loom` primitives.
//!
//! The algorithm code imports atomics, cells and the spin backoff from here only, so it is written
//! once and model-checked as is (`--cfg loom --cfg crossbeam_loom`), the way tokio and
//! crossbeam-epoch do it.

#[cfg(loom)]
#[allow(unused_imports, dead_code)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicUsize, Ordering, fence};

    /// Backoff for CAS retry loops and short waits. Under loom every wait is a plain yield, so the
    /// model explores the other threads instead of spinning.
    #[derive(Debug, Default)]
    pub(crate) struct Backoff;

    impl Backoff {
        pub(crate) fn new() -> Self {
            Backoff
        }
        pub(crate) fn spin(&self) {
            loom::thread::yield_now();
        }
        pub(crate) fn snooze(&self) {
            loom::thread::yield_now();
        }
    }

    /// Under loom a lost CAS just yields, so the model explores the other threads.
    pub(crate) fn contention_pause(failures: &mut u32) {
        *failures += 1;
        loom::thread::yield_now();
    }
}

#[cfg(not(loom))]
#[allow(unused_imports, dead_code)]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering, fence};

    /// `std`'s `UnsafeCell` with loom's closure-based API, so call sites are the same under both.
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        #[inline]
        pub(crate) const fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }
        #[inline]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        #[inline]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Exponential backoff for CAS retry loops (crossbeam-utils' `Backoff`).
    #[derive(Debug, Default)]
    pub(crate) struct Backoff(crossbeam_utils::Backoff);

    impl Backoff {
        #[inline]
        pub(crate) fn new() -> Self {
            Backoff(crossbeam_utils::Backoff::new())
        }
        #[inline]
        pub(crate) fn spin(&self) {
            self.0.spin();
        }
        #[inline]
        pub(crate) fn snooze(&self) {
            self.0.snooze();
        }
    }

    /// Spin-loop hints after the first lost CAS of an operation; doubles per further loss.
    /// One under Miri, which interprets every hint and fails most weak CASes on purpose: the
    /// length of the wait is a performance choice, not a correctness one.
    const FIRST_PAUSE: u32 = if cfg!(miri) { 1 } else { 16 };
    /// At most `FIRST_PAUSE << MAX_DOUBLINGS` hints per wait.
    const MAX_DOUBLINGS: u32 = if cfg!(miri) { 0 } else { 6 };

    /// Backs off after a lost CAS on a hot word (the `TreiberStack` head), long enough to give
    /// the winner a run of uncontended operations.
    ///
    /// When two threads hammer one head, a short backoff makes every operation pull the cache
    /// line across cores and lose CASes to the other thread; a wait of a few dozen operations'
    /// time lets one thread keep the line for a streak, the way a spinning mutex does. A lost CAS
    /// is rare unless threads really collide, so uncontended operations never wait. Exponential
    /// and capped, as usual; `failures` counts the losses of the current operation.
    #[cold]
    #[inline(never)]
    pub(crate) fn contention_pause(failures: &mut u32) {
        let hints = FIRST_PAUSE << (*failures).min(MAX_DOUBLINGS);
        *failures = failures.saturating_add(1);
        for _ in 0..hints {
            std::hint::spin_loop();
        }
    }
}

pub(crate) use imp::*;
