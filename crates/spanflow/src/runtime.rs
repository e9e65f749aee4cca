//! The tokio runtime a [`crate::Pipeline`] owns for its exports.
//!
//! The pipeline never borrows the caller's runtime (`Handle::current()`): a caller may have none, a
//! `current_thread` runtime whose only thread is the one calling `shutdown`, or a busy multi-thread
//! runtime. Exports therefore run on a small multi-thread runtime built for the pipeline, and the
//! `Runtime` value itself lives on a dedicated driver thread. That thread is the only place the
//! runtime is dropped, so dropping the last `Pipeline` handle inside an async context never hits
//! tokio's "cannot drop a runtime in a context where blocking is not allowed" panic.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Which pipeline runtime (if any) the current thread belongs to; 0 for none.
    static OWNING_RUNTIME: Cell<u64> = const { Cell::new(0) };
}

/// A multi-thread tokio runtime owned by one pipeline, driven from its own thread.
#[derive(Debug)]
pub(crate) struct OwnedRuntime {
    id: u64,
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<mpsc::Sender<Duration>>>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl OwnedRuntime {
    /// Builds the runtime with `threads` workers (time and I/O enabled) and its driver thread;
    /// its threads run at `nice` (see [`lower_current_thread_priority`]).
    pub(crate) fn start(threads: usize, nice: i32) -> std::io::Result<Self> {
        let id = NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(4)
            .thread_name(format!("spanflow-export-{id}"))
            .on_thread_start(move || {
                OWNING_RUNTIME.with(|owner| owner.set(id));
                lower_current_thread_priority(nice);
            })
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = mpsc::channel::<Duration>();
        let driver = std::thread::Builder::new()
            .name(format!("spanflow-runtime-{id}"))
            .spawn(move || {
                // Sender dropped without a message (the pipeline was dropped): no grace period.
                let grace = stopped.recv().unwrap_or(Duration::ZERO);
                runtime.shutdown_timeout(grace);
            })?;
        Ok(Self {
            id,
            handle,
            stop: Mutex::new(Some(stop)),
            driver: Mutex::new(Some(driver)),
        })
    }

    /// A handle for spawning onto the runtime from any thread.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Marks the calling thread (a pipeline worker thread) as belonging to this pipeline, so
    /// `flush`/`shutdown` called from it are refused instead of waiting for themselves.
    pub(crate) fn mark_current_thread(&self) {
        OWNING_RUNTIME.with(|owner| owner.set(self.id));
    }

    /// Whether the calling thread is one of this runtime's threads; blocking there on work the
    /// runtime itself must do would deadlock.
    pub(crate) fn is_current_thread(&self) -> bool {
        OWNING_RUNTIME.with(Cell::get) == self.id
    }

    /// Stops the runtime, giving spawned tasks up to `grace` to finish, and waits for the driver
    /// thread unless called from one of the runtime's own threads. Idempotent.
    pub(crate) fn stop(&self, grace: Duration) {
        if let Some(stop) = self.stop.lock().take() {
            // The driver only exits after receiving, so the send can only fail if it panicked.
            let _ = stop.send(grace);
        }
        if self.is_current_thread() {
            // The driver waits for this very thread to leave the runtime: joining it would hang.
            return;
        }
        if let Some(driver) = self.driver.lock().take() {
            let _ = driver.join();
        }
    }
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux; elsewhere, and for
/// `nice <= 0`, a no-op). Pipeline threads do telemetry work: when cores are scarce, the
/// application's threads should win them. Starving the pipeline cannot lose spans — a full
/// budget makes producers wait, and waiting producers give the cores back.
pub(crate) fn lower_current_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: `gettid` has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() };
        // SAFETY: `setpriority` only reads its three integer arguments; on Linux `PRIO_PROCESS`
        // with a thread id changes that one thread's nice value.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice.min(19)) };
        if rc != 0 {
            tracing::debug!(nice, "could not lower the pipeline thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        // Dropping the sender tells the driver to shut the runtime down without waiting; the
        // driver is detached so a drop inside an async context never blocks.
        self.stop.lock().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_and_know_their_runtime() {
        let runtime = OwnedRuntime::start(1, 0).unwrap();
        assert!(!runtime.is_current_thread());
        let (tx, rx) = std::sync::mpsc::channel();
        let id = runtime.id;
        runtime.handle().spawn(async move {
            tx.send(OWNING_RUNTIME.with(Cell::get)).unwrap();
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), id);
        runtime.stop(Duration::from_secs(1));
    }

    #[test]
    fn dropping_inside_an_async_context_does_not_panic() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        outer.block_on(async {
            let runtime = OwnedRuntime::start(1, 0).unwrap();
            drop(runtime);
        });
    }

    #[test]
    fn stop_from_inside_its_own_runtime_returns() {
        let runtime = std::sync::Arc::new(OwnedRuntime::start(1, 0).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = runtime.clone();
        runtime.handle().spawn(async move {
            inner.stop(Duration::from_millis(10));
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
}
