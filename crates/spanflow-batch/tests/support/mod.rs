//! Bounded waits for the integration tests: a wake-up that never comes fails the test after
//! [`LIMIT`] instead of stalling the whole suite.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses the part it needs"
)]

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spanflow_batch::{Batch, Receiver, RecvTimeoutError};

/// How long any single wait may take. Generous, because a 2-core CI machine shared with other
/// builds is slow, but finite: the longest legitimate wait in these tests is milliseconds.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Joins `handle`, failing the test if the thread has not finished within [`LIMIT`] (the
/// thread is left behind; the test process ends without it). A panic in the thread is re-raised.
#[track_caller]
pub fn join<T>(handle: JoinHandle<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    while !handle.is_finished() {
        assert!(
            Instant::now() < deadline,
            "thread still running after {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The next batch, `None` once the receiver has ended; fails the test if nothing comes within
/// [`LIMIT`].
#[track_caller]
pub fn next<T: Send>(rx: &mut Receiver<T>) -> Option<Batch<T>> {
    match rx.recv_timeout(LIMIT) {
        Ok(batch) => Some(batch),
        Err(RecvTimeoutError::Closed) => None,
        Err(RecvTimeoutError::Timeout) => panic!("no batch and no end within {LIMIT:?}"),
    }
}

/// The next batch, which must come from a wake-up: fails the test if the wait used up its
/// whole [`LIMIT`] (`recv_timeout` looks once more when its limit runs out, so a lost wake-up
/// would otherwise pass, only late).
#[track_caller]
pub fn woken<T: Send>(rx: &mut Receiver<T>) -> Batch<T> {
    let started = Instant::now();
    let batch = next(rx).expect("the batcher is open");
    assert!(
        started.elapsed() < LIMIT,
        "the batch came only when the wait ran out: nobody woke the consumer"
    );
    batch
}

/// Every item the receiver still emits, in order, until it ends (each wait bounded).
#[track_caller]
pub fn drain<T: Send>(mut rx: Receiver<T>) -> Vec<T> {
    let mut items = Vec::new();
    while let Some(mut batch) = next(&mut rx) {
        items.extend(batch.drain());
    }
    items
}
