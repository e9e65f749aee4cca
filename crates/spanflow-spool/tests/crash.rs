//! Crash simulation: records appended, the spool stopped as a crash would stop it, the last
//! segment cut at a random byte and random bytes flipped in other segments; the reopened spool
//! delivers every completed, uncorrupted record, reports the torn tail and every corrupt record
//! with file and offset, and goes on appending.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spanflow_spool::{Fsync, Spool};

use common::{bounded, config, drain, layout, payload, segment_files};

fn crash_cycle(seed: u64, fsync: Fsync) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), fsync, 8192, 1 << 30);
    // "audit" never reads before the crash, so nothing is deleted and everything can be checked.
    let names = ["worker", "audit"];
    let spool = Spool::open(cfg.clone(), &names).expect("open");
    let n = rng.random_range(20..120u64);
    let mut written = BTreeMap::new();
    for id in 0..n {
        let len = rng.random_range(0..1500);
        let seq = spool.append(id, payload(id, len)).wait().expect("append");
        written.insert(seq, (id, len));
    }
    let worker = spool.reader("worker").expect("reader");
    for r in worker
        .try_read(rng.random_range(0..n as usize), usize::MAX)
        .expect("read")
    {
        if rng.random_bool(0.7) {
            worker.ack(r.seq).expect("ack");
        }
    }
    spool.simulate_crash();

    // Damage: flip bytes inside random records of sealed segments, cut the last segment.
    let files = segment_files(dir.path());
    let (last, sealed) = files.split_last().expect("a segment");
    let mut corrupted = BTreeSet::new();
    let mut corrupt_offsets = BTreeSet::new();
    for path in sealed {
        let records = layout(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open segment");
        for rec in &records {
            if rng.random_bool(0.15) {
                let at = rec.offset + rng.random_range(0..rec.disk_len);
                let mut b = [0u8];
                file.read_exact_at(&mut b, at).expect("read byte");
                b[0] ^= 1 << rng.random_range(0..8);
                file.write_all_at(&b, at).expect("flip");
                corrupted.insert(rec.seq);
                corrupt_offsets.insert((path.clone(), rec.offset));
            }
        }
    }
    let last_records = layout(last);
    let last_len = std::fs::metadata(last).expect("metadata").len();
    let cut = rng.random_range(32..=last_len);
    OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open")
        .set_len(cut)
        .expect("cut");
    let torn: Vec<_> = last_records
        .iter()
        .filter(|r| r.offset + r.disk_len > cut)
        .collect();
    let lost_to_cut: BTreeSet<u64> = torn.iter().map(|r| r.seq).collect();

    let spool = Spool::open(cfg, &names).expect("reopen");
    let rec = spool.recovery().clone();

    // The torn tail: cut at the start of the first incomplete record.
    match torn.first() {
        Some(first) => {
            let t = rec.truncated.as_ref().expect("a truncation");
            assert_eq!(
                (&t.path, t.offset, t.bytes),
                (last, first.offset, cut - first.offset),
                "{rec:?}"
            );
        }
        None => assert_eq!(rec.truncated, None),
    }
    // Corrupt records: each region starts at a corrupted record's offset, and the records they
    // lost add up to the records corrupted (neighbours merge into one region).
    let reported: BTreeSet<_> = rec
        .corrupt
        .iter()
        .map(|c| (c.path.clone(), c.offset))
        .collect();
    assert!(
        reported.is_subset(&corrupt_offsets),
        "reported {reported:?}, corrupted {corrupt_offsets:?}"
    );
    assert_eq!(rec.corrupt_records(), corrupted.len() as u64, "{rec:?}");
    assert_eq!(
        rec.records,
        n - corrupted.len() as u64 - lost_to_cut.len() as u64
    );

    // Every completed record not corrupted and not torn off is delivered, intact, once.
    let audit = drain(&spool.reader("audit").expect("reader"));
    let want: Vec<u64> = written
        .keys()
        .copied()
        .filter(|s| !corrupted.contains(s) && !lost_to_cut.contains(s))
        .collect();
    assert_eq!(audit.iter().map(|r| r.seq).collect::<Vec<_>>(), want);
    for r in &audit {
        let (id, len) = written[&r.seq];
        assert_eq!(
            (r.meta, &r.data[..]),
            (id, &payload(id, len)[..]),
            "record {}",
            r.seq
        );
    }
    // The worker resumes at or before what it acknowledged, never past it.
    let worker = spool.reader("worker").expect("reader");
    assert!(worker.committed() <= n);

    // Appending goes on, numbered above every surviving record. (The numbers of a torn tail
    // may be given again: after a real crash they belong to appends that never completed.)
    let seq = spool
        .append(7, b"after".to_vec())
        .wait()
        .expect("append after crash");
    let floor = want
        .last()
        .map_or(0, |s| s + 1)
        .max(lost_to_cut.first().copied().unwrap_or(n));
    assert!(seq >= floor, "seq {seq} reused a number below {floor}");
    let next = spool
        .reader("audit")
        .expect("reader")
        .try_read(10, usize::MAX)
        .expect("read");
    assert_eq!(
        next.iter().map(|r| (r.seq, r.meta)).collect::<Vec<_>>(),
        [(seq, 7)]
    );
    spool.close().expect("close");
}

#[test]
fn crash_with_torn_tail_and_flipped_bytes_loses_only_damaged_records() {
    bounded(Duration::from_secs(60), || {
        for seed in 0..40 {
            let fsync = [Fsync::Always, Fsync::Interval, Fsync::Never][seed as usize % 3];
            crash_cycle(seed, fsync);
        }
    });
}

#[test]
fn crash_without_damage_loses_nothing_and_redelivers_unacknowledged() {
    bounded(Duration::from_secs(20), || {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), Fsync::Interval, 4096, 1 << 30);
        let spool = Spool::open(cfg.clone(), &["r"]).expect("open");
        for id in 0..30 {
            spool.append(id, payload(id, 500)).wait().expect("append");
        }
        let r = spool.reader("r").expect("reader");
        let got = r.try_read(10, usize::MAX).expect("read");
        for rec in &got {
            r.ack(rec.seq).expect("ack");
        }
        // Let the syncer persist the cursor (every 20 ms), then crash.
        common::eventually(Duration::from_secs(5), "cursor persisted", || {
            spool.stats().readers[0].persisted == 10
        });
        spool.simulate_crash();
        let spool = Spool::open(cfg, &["r"]).expect("reopen");
        let rec = spool.recovery();
        assert_eq!((rec.truncated.clone(), rec.corrupt.len()), (None, 0));
        assert_eq!(rec.readers[0].committed, 10);
        assert_eq!(rec.readers[0].pending, 20);
        let again = drain(&spool.reader("r").expect("reader"));
        assert_eq!(
            again.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (10..30).collect::<Vec<_>>()
        );
        assert_eq!(spool.stats().readers[0].replayed_at_open, 20);
    });
}
