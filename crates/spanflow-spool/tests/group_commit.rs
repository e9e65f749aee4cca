//! Group commit: concurrent appenders under `Fsync::Always` share fsyncs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use spanflow_spool::{Fsync, Spool};

use common::{bounded, config, drain, payload};

#[test]
fn eight_appenders_share_fsyncs() {
    bounded(Duration::from_secs(60), || {
        const THREADS: u64 = 8;
        const EACH: u64 = 500;
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Arc::new(
            Spool::open(config(dir.path(), Fsync::Always, 64 << 20, 1 << 30), &["r"])
                .expect("open"),
        );
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let spool = &spool;
                s.spawn(move || {
                    for i in 0..EACH {
                        let id = t * EACH + i;
                        spool.append(id, payload(id, 256)).wait().expect("append");
                    }
                });
            }
        });
        let stats = spool.stats();
        let appends = THREADS * EACH;
        eprintln!(
            "{appends} appends, {} fsyncs, mean {:?}, max {:?}",
            stats.fsync.count,
            stats.fsync.mean(),
            stats.fsync.max
        );
        assert_eq!(stats.appended, appends);
        assert!(
            stats.fsync.count < appends / 4,
            "{} fsyncs for {appends} appends",
            stats.fsync.count
        );
        assert!(stats.fsync.max >= stats.fsync.mean() && stats.fsync.total > Duration::ZERO);
        // Every record is there once.
        let mut ids: Vec<u64> = drain(&spool.reader("r").expect("r"))
            .iter()
            .map(|r| r.meta)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..appends).collect::<Vec<_>>());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_appends_complete_and_async_readers_wake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Arc::new(
        Spool::open(config(dir.path(), Fsync::Always, 1 << 20, 1 << 30), &["r"]).expect("open"),
    );
    let reader = spool.reader("r").expect("r");
    let consumer = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 200 {
            for r in reader.read(50, usize::MAX).await.expect("read") {
                reader.ack(r.seq).expect("ack");
                seen.push(r.seq);
            }
        }
        seen
    });
    let appends: Vec<_> = (0..200u64)
        .map(|i| spool.append(i, payload(i, 100)))
        .collect();
    for (i, a) in appends.into_iter().enumerate() {
        let seq = tokio::time::timeout(Duration::from_secs(10), a)
            .await
            .expect("append in time")
            .expect("append");
        assert_eq!(seq, i as u64);
    }
    let seen = tokio::time::timeout(Duration::from_secs(10), consumer)
        .await
        .expect("reader in time")
        .expect("join");
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
    // A reader waiting when the spool closes is told so.
    let waiting = spool.reader("r").expect("r");
    let wait = tokio::spawn(async move { waiting.read(1, usize::MAX).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    spool.close().expect("close");
    let res = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("woken")
        .expect("join");
    assert!(matches!(res, Err(spanflow_spool::ReadError::Closed)));
}
