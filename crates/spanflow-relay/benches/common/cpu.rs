//! CPU accounting shared by the relay benches: the threads of a set (load generator, sink, a
//! peer relay) counted together through `/proc/self/task/<tid>/schedstat`, and the whole
//! process through `CLOCK_PROCESS_CPUTIME_ID`, so the relay under test is the difference.

use std::sync::Arc;

/// A set of threads whose CPU time is counted together.
#[derive(Default)]
pub(crate) struct Threads {
    /// Live thread ids, and the CPU nanoseconds of members that have exited.
    inner: parking_lot::Mutex<(Vec<u32>, u64)>,
}

fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Nanoseconds thread `tid` of this process has spent on a CPU.
fn thread_cpu_ns(tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Nanoseconds every thread of this process, live or exited, has spent on a CPU.
pub(crate) fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_PROCESS_CPUTIME_ID is a clock every Linux kernel supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Threads {
    pub(crate) fn register_current(&self) {
        if let Some(tid) = current_tid() {
            self.inner.lock().0.push(tid);
        }
    }

    /// Called on a member thread just before it exits: keeps its CPU time.
    pub(crate) fn exiting(&self) {
        if let Some(tid) = current_tid() {
            let mut inner = self.inner.lock();
            inner.1 += thread_cpu_ns(tid);
            inner.0.retain(|t| *t != tid);
        }
    }

    pub(crate) fn cpu_ns(&self) -> u64 {
        let inner = self.inner.lock();
        inner.1 + inner.0.iter().map(|t| thread_cpu_ns(*t)).sum::<u64>()
    }
}

/// A multi-thread runtime whose threads (workers and blocking ones) belong to `threads`.
pub(crate) fn runtime(
    name: &str,
    workers: usize,
    threads: &Arc<Threads>,
) -> tokio::runtime::Runtime {
    let (start, stop) = (threads.clone(), threads.clone());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .on_thread_start(move || start.register_current())
        .on_thread_stop(move || stop.exiting())
        .build()
        .expect("runtime")
}
