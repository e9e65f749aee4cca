//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use spanflow_spool::{Fsync, HumanDuration, Reader, Record, SpoolConfig, WhenFull};

/// Runs `f` on its own thread and fails the test if it takes longer than `limit`, so that a
/// hang is a failure, not a stuck CI run.
pub fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the closure returned without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {limit:?}"),
    }
}

/// Polls `cond` every 5 ms until it holds; panics after `limit`.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A small-segment configuration for tests: segments of `segment` bytes, 20 ms ticks.
pub fn config(dir: &Path, fsync: Fsync, segment: u64, max: u64) -> SpoolConfig {
    SpoolConfig {
        fsync,
        segment_bytes: spanflow_spool::ByteSize(segment),
        max_bytes: spanflow_spool::ByteSize(max),
        fsync_interval: HumanDuration(Duration::from_millis(20)),
        when_full: WhenFull::Backpressure,
        ..SpoolConfig::new(dir)
    }
}

/// The bytes of record `id`: deterministic, `len` long, different for every id.
pub fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Everything the reader can read now.
pub fn drain(reader: &Reader) -> Vec<Record> {
    let mut all = Vec::new();
    loop {
        let got = reader.try_read(1000, usize::MAX).expect("read");
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

/// The segment files in `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A record as found by walking a segment file by the documented format: 32-byte segment
/// header, then records of a 32-byte header (magic, len u32 LE at 4..8, seq u64 LE at 8..16,
/// meta at 16..24, CRCs) and `len` bytes of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub seq: u64,
    pub offset: u64,
    pub disk_len: u64,
}

/// Walks an intact segment file up to its end or its preallocated, zero-filled rest.
pub fn layout(path: &Path) -> Vec<Layout> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut out = Vec::new();
    let mut off = 32usize;
    while off + 32 <= bytes.len() && &bytes[off..off + 4] == b"SFR\x01" {
        let len = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
        if off + 32 + len > bytes.len() {
            break;
        }
        out.push(Layout {
            seq,
            offset: off as u64,
            disk_len: (32 + len) as u64,
        });
        off += 32 + len;
    }
    out
}
