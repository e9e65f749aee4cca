//! Segment deletion, slow readers, the disk budget under both `when_full` policies, new
//! readers, and the directory lock.

mod common;

use std::time::{Duration, Instant};

use spanflow_spool::{AppendError, Fsync, OpenError, Spool, WhenFull};

use common::{bounded, config, drain, eventually, payload, segment_files};

const SEG: u64 = 4096;
const LIMIT: Duration = Duration::from_secs(20);

fn fill(spool: &Spool, from: u64, n: u64, len: usize) {
    for id in from..from + n {
        spool.append(id, payload(id, len)).wait().expect("append");
    }
}

fn ack_all(reader: &spanflow_spool::Reader) -> u64 {
    let got = drain(reader);
    for r in &got {
        reader.ack(r.seq).expect("ack");
    }
    got.len() as u64
}

#[test]
fn segments_are_deleted_once_every_reader_passed_them() {
    bounded(LIMIT, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(
            config(dir.path(), Fsync::Interval, SEG, 1 << 30),
            &["a", "b"],
        )
        .expect("open");
        fill(&spool, 0, 30, 1000);
        let before = segment_files(dir.path()).len();
        assert!(before >= 7, "{before} segments");
        let (a, b) = (spool.reader("a").expect("a"), spool.reader("b").expect("b"));
        assert_eq!(ack_all(&a), 30);
        // Only "a" passed them: everything stays.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(segment_files(dir.path()).len(), before);
        assert_eq!(ack_all(&b), 30);
        eventually(LIMIT, "deletion", || segment_files(dir.path()).len() == 1);
        let stats = spool.stats();
        assert_eq!(
            (stats.segments, stats.records_on_disk),
            (1, stats.records_on_disk)
        );
        assert!(stats.bytes_on_disk <= SEG);
        assert!(
            stats
                .readers
                .iter()
                .all(|r| r.pending_records == 0 && r.persisted == 30)
        );
    });
}

#[test]
fn a_slow_reader_keeps_exactly_the_segments_it_has_not_passed() {
    bounded(LIMIT, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(
            config(dir.path(), Fsync::Interval, SEG, 1 << 30),
            &["fast", "slow"],
        )
        .expect("open");
        fill(&spool, 0, 30, 1000);
        ack_all(&spool.reader("fast").expect("fast"));
        let slow = spool.reader("slow").expect("slow");
        let got = slow.try_read(12, usize::MAX).expect("read");
        // Out of order: the cursor moves only once 0..12 are all acknowledged.
        for r in got.iter().rev() {
            slow.ack(r.seq).expect("ack");
        }
        assert_eq!(slow.committed(), 12);
        eventually(LIMIT, "persisted", || {
            spool.stats().readers[1].persisted == 12
        });
        // Segments whose records are all below 12 go; the one holding 12 and later stay.
        eventually(LIMIT, "deletion", || {
            let files = segment_files(dir.path());
            let first: u64 = files[0]
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .expect("name");
            first <= 12 && files.len() > 1
        });
        let stats = spool.stats();
        assert_eq!(stats.readers[1].pending_records, 18);
        assert!(
            stats.readers[1].pending_bytes >= 18 * 1032,
            "{:?}",
            stats.readers[1]
        );
        assert_eq!(drain(&slow).first().map(|r| r.seq), Some(12));
    });
}

#[test]
fn backpressure_fails_fast_when_the_budget_is_spent_and_recovers_after_acks() {
    bounded(LIMIT, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool =
            Spool::open(config(dir.path(), Fsync::Interval, SEG, 2 * SEG), &["r"]).expect("open");
        let mut accepted = 0;
        let err = loop {
            match spool.append(accepted, payload(accepted, 1000)).wait() {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted < 100, "the budget was never enforced");
        };
        assert!(
            matches!(err, AppendError::Full { max_bytes } if max_bytes == 2 * SEG),
            "{err:?}"
        );
        assert!(err.is_backpressure());
        let t0 = Instant::now();
        assert!(spool.append(0, payload(0, 1000)).wait().is_err());
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "Full took {:?}",
            t0.elapsed()
        );
        let stats = spool.stats();
        assert!(stats.bytes_on_disk <= 2 * SEG, "{stats:?}");
        assert_eq!(stats.rejected_full, 2);
        // Nothing accepted was lost to make room.
        let r = spool.reader("r").expect("r");
        assert_eq!(ack_all(&r), accepted);
        eventually(LIMIT, "room after acks", || {
            spool.append(1, payload(1, 1000)).wait().is_ok()
        });
    });
}

#[test]
fn drop_oldest_deletes_unread_segments_and_counts_what_each_reader_lost() {
    bounded(LIMIT, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), Fsync::Interval, SEG, 3 * SEG);
        cfg.when_full = WhenFull::DropOldest;
        let spool = Spool::open(cfg, &["keeps-up", "stalled"]).expect("open");
        let keeps_up = spool.reader("keeps-up").expect("reader");
        for id in 0..100 {
            spool
                .append(id, payload(id, 1000))
                .wait()
                .expect("drop_oldest never refuses");
            assert_eq!(ack_all(&keeps_up), 1);
        }
        let stats = spool.stats();
        assert!(
            stats.segments_dropped > 0 && stats.bytes_on_disk <= 3 * SEG,
            "{stats:?}"
        );
        let stalled = spool.reader("stalled").expect("reader");
        let got = drain(&stalled);
        let first = got.first().expect("the newest records remain").seq;
        assert!(first > 0);
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (first..100).collect::<Vec<_>>()
        );
        let stats = spool.stats();
        assert_eq!(stats.readers[1].dropped, first, "{:?}", stats.readers[1]);
        // Only what the other reader had already acknowledged was deleted under it.
        assert_eq!(stats.readers[0].dropped, 0);
        assert_eq!(stats.readers[0].delivered, 100);
    });
}

#[test]
fn a_reader_added_later_starts_at_the_oldest_retained_record() {
    bounded(LIMIT, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), Fsync::Interval, SEG, 1 << 30);
        let spool = Spool::open(cfg.clone(), &["a"]).expect("open");
        fill(&spool, 0, 20, 1000);
        let a = spool.reader("a").expect("a");
        for r in a.try_read(9, usize::MAX).expect("read") {
            a.ack(r.seq).expect("ack");
        }
        eventually(LIMIT, "deletion", || spool.stats().segments < 6);
        spool.close().expect("close");
        drop(spool);

        let spool = Spool::open(cfg, &["a", "b"]).expect("reopen");
        let rec = spool.recovery();
        assert!(!rec.readers[0].new && rec.readers[1].new, "{rec:?}");
        let oldest: u64 = segment_files(dir.path())[0]
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("segment name");
        assert!(oldest > 0 && oldest <= 9, "oldest retained {oldest}");
        assert_eq!(rec.readers[1].committed, oldest);
        let b = drain(&spool.reader("b").expect("b"));
        assert_eq!(b.first().map(|r| r.seq), Some(oldest));
        assert_eq!(b.len() as u64, 20 - oldest);
        assert_eq!(
            drain(&spool.reader("a").expect("a")).first().map(|r| r.seq),
            Some(9)
        );
    });
}

#[test]
fn a_directory_opens_once_at_a_time() {
    bounded(LIMIT, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), Fsync::Never, SEG, 1 << 30);
        let spool = Spool::open(cfg.clone(), &["r"]).expect("open");
        assert!(matches!(
            Spool::open(cfg.clone(), &["r"]),
            Err(OpenError::Locked { .. })
        ));
        spool.close().expect("close");
        let again = Spool::open(cfg.clone(), &["r"]).expect("open after close");
        again.simulate_crash();
        Spool::open(cfg, &["r"]).expect("open after a crash");
    });
}

#[test]
fn bad_reader_names_and_configs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), Fsync::Never, SEG, 1 << 30);
    for bad in ["", ".hidden", "a/b", "x y"] {
        assert!(
            matches!(
                Spool::open(cfg.clone(), &[bad]),
                Err(OpenError::ReaderName(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        Spool::open(cfg.clone(), &["a", "a"]),
        Err(OpenError::ReaderName(_))
    ));
    let small = config(dir.path(), Fsync::Never, SEG, SEG);
    assert!(matches!(
        Spool::open(small, &["a"]),
        Err(OpenError::Config(_))
    ));
    let spool = Spool::open(cfg, &["a"]).expect("open");
    assert!(matches!(
        spool.append(0, vec![0u8; SEG as usize]).wait(),
        Err(AppendError::TooLarge { .. })
    ));
    assert!(spool.reader("nobody").is_err());
}
