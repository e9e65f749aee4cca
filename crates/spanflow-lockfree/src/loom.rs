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
}

pub(crate) use imp::*;
