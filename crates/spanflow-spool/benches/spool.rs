//! Which storage for the durable queue: spanflow's segment log against redb and fjall, each
//! used the natural way for a queue.
//!
//! * `spanflow`: [`Spool::append`] from every appender thread, group commit inside the spool.
//! * `redb`: one table keyed by the `u64` sequence number. Appenders hand records to one
//!   committer thread (redb has one writer at a time), which takes everything waiting and
//!   writes it in one write transaction: `Durability::Immediate` for `always`; for `interval`,
//!   `Durability::None` plus an `Immediate` commit every 100 ms (redb 5 has no `Eventual`).
//! * `fjall`: one keyspace keyed by the big-endian sequence number, the same committer
//!   writing one `WriteBatch` per group, then `persist(SyncData)` (`always`) or every 100 ms
//!   (`interval`).
//!
//! Groups `spool/append_{4KiB,64KiB}_{always,interval}_{1,8}w`: time per append (so 8
//! appenders finishing 8 appends in the time of one show as 1/8 of it). Group
//! `spool/read_ack_4KiB`: a reader reads 64 records at a time, copies each out once and
//! acknowledges it (peers: a range read and a cursor update per 64, no fsync). After the run,
//! the fsyncs per second and records per fsync of each function are printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
use spanflow_spool::{ByteSize, Fsync, HumanDuration, Spool, SpoolConfig};

const RECORDS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("records");
const CURSORS: TableDefinition<'_, &str, u64> = TableDefinition::new("cursors");
const INTERVAL: Duration = Duration::from_millis(100);
const READ_RECORDS: u64 = 4000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Always,
    Interval,
}

/// fsyncs, appends and time per function, for the table printed at the end.
static FSYNCS: Mutex<BTreeMap<String, (u64, u64, Duration)>> = Mutex::new(BTreeMap::new());

fn note(key: &str, fsyncs: u64, appends: u64, took: Duration) {
    let mut m = FSYNCS.lock().expect("fsync table");
    let e = m.entry(key.to_owned()).or_default();
    e.0 += fsyncs;
    e.1 += appends;
    e.2 += took;
}

/// Runs `total` appends from `threads` threads through `append`; returns the wall time.
fn run_appenders(threads: u64, total: u64, append: &(dyn Fn(u64) + Sync)) -> Duration {
    let per = total.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..per {
                    append(t * per + i);
                }
            });
        }
    });
    start.elapsed()
}

fn spool_config(dir: &Path, mode: Mode) -> SpoolConfig {
    SpoolConfig {
        fsync: match mode {
            Mode::Always => Fsync::Always,
            Mode::Interval => Fsync::Interval,
        },
        fsync_interval: HumanDuration(INTERVAL),
        max_bytes: ByteSize(1 << 40),
        ..SpoolConfig::new(dir)
    }
}

fn spanflow_appends(key: &str, mode: Mode, threads: u64, total: u64, record: &Bytes) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    // One reader that never acknowledges, so the spool keeps everything, as the peers do.
    let spool = Spool::open(spool_config(dir.path(), mode), &["backend"]).expect("open");
    let took = run_appenders(threads, total, &|_| {
        spool.append(1, record.clone()).wait().expect("append");
    });
    note(key, spool.stats().fsync.count, total, took);
    spool.close().expect("close");
    took
}

/// The natural group commit for a store with one writer: appenders queue, one thread commits
/// everything queued in one transaction and answers them.
type Request = (Bytes, tokio::sync::oneshot::Sender<()>);

struct Committer {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    fsyncs: Arc<AtomicU64>,
}

impl Committer {
    fn new<C>(mode: Mode, mut commit: C) -> Self
    where
        C: FnMut(&[Request], bool) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Request>();
        let fsyncs = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&fsyncs);
        let thread = std::thread::spawn(move || {
            let mut last_sync = Instant::now();
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let durable = mode == Mode::Always || last_sync.elapsed() >= INTERVAL;
                commit(&batch, durable);
                if durable {
                    counter.fetch_add(1, Ordering::Relaxed);
                    last_sync = Instant::now();
                }
                for (_, done) in batch {
                    let _ = done.send(());
                }
            }
        });
        Self {
            tx: Some(tx),
            thread: Some(thread),
            fsyncs,
        }
    }

    fn append(&self, data: Bytes) {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.tx
            .as_ref()
            .expect("open")
            .send((data, done))
            .expect("committer");
        rx.blocking_recv().expect("committed");
    }

    fn finish(mut self) -> u64 {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            t.join().expect("committer thread");
        }
        self.fsyncs.load(Ordering::Relaxed)
    }
}

fn redb_open(dir: &Path) -> Arc<redb::Database> {
    let db = redb::Database::create(dir.join("queue.redb")).expect("redb");
    let tx = db.begin_write().expect("begin");
    tx.open_table(RECORDS).expect("table");
    tx.open_table(CURSORS).expect("table");
    tx.commit().expect("commit");
    Arc::new(db)
}

fn redb_committer(db: Arc<redb::Database>, mode: Mode) -> Committer {
    let mut seq = 0u64;
    Committer::new(mode, move |batch, durable| {
        let mut tx = db.begin_write().expect("begin");
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .expect("durability");
        {
            let mut t = tx.open_table(RECORDS).expect("table");
            for (data, _) in batch {
                t.insert(seq, &data[..]).expect("insert");
                seq += 1;
            }
        }
        tx.commit().expect("commit");
    })
}

fn redb_appends(key: &str, mode: Mode, threads: u64, total: u64, record: &Bytes) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let committer = redb_committer(redb_open(dir.path()), mode);
    let took = run_appenders(threads, total, &|_| {
        committer.append(record.clone());
    });
    note(key, committer.finish(), total, took);
    took
}

fn fjall_open(dir: &Path) -> (fjall::Database, fjall::Keyspace) {
    let db = fjall::Database::builder(dir).open().expect("fjall");
    let ks = db
        .keyspace("records", fjall::KeyspaceCreateOptions::default)
        .expect("keyspace");
    (db, ks)
}

fn fjall_committer(db: fjall::Database, ks: fjall::Keyspace, mode: Mode) -> Committer {
    let mut seq = 0u64;
    Committer::new(mode, move |batch, durable| {
        let mut b = db.batch();
        for (data, _) in batch {
            b.insert(&ks, seq.to_be_bytes(), &data[..]);
            seq += 1;
        }
        b.commit().expect("commit");
        if durable {
            db.persist(fjall::PersistMode::SyncData).expect("persist");
        }
    })
}

fn fjall_appends(key: &str, mode: Mode, threads: u64, total: u64, record: &Bytes) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, ks) = fjall_open(dir.path());
    let committer = fjall_committer(db, ks, mode);
    let took = run_appenders(threads, total, &|_| {
        committer.append(record.clone());
    });
    note(key, committer.finish(), total, took);
    took
}

fn appends(c: &mut Criterion) {
    for (size, size_name) in [(4usize << 10, "4KiB"), (64 << 10, "64KiB")] {
        let record = Bytes::from(vec![0xA5u8; size]);
        for (mode, mode_name) in [(Mode::Always, "always"), (Mode::Interval, "interval")] {
            for threads in [1u64, 8] {
                let group_name = format!("spool/append_{size_name}_{mode_name}_{threads}w");
                let mut g = c.benchmark_group(&group_name);
                g.throughput(Throughput::Bytes(size as u64));
                type Run = fn(&str, Mode, u64, u64, &Bytes) -> Duration;
                let peers: [(&str, Run); 3] = [
                    ("spanflow", spanflow_appends),
                    ("redb", redb_appends),
                    ("fjall", fjall_appends),
                ];
                for (name, run) in peers {
                    let key = format!("{group_name}/{name}");
                    g.bench_function(name, |b| {
                        b.iter_custom(|iters| {
                            run(&key, mode, threads, iters.max(threads), &record)
                        });
                    });
                }
                g.finish();
            }
        }
    }
}

/// What a backend does with a record: copies it out once (into a socket, say). Without it the
/// peers, which hand out references into their caches, would be timed for not reading at all.
fn consume(sink: &mut Vec<u8>, data: &[u8]) {
    sink.clear();
    sink.extend_from_slice(data);
    std::hint::black_box(&sink);
}

/// Fills a store with `READ_RECORDS` records of 4 KiB (untimed), then times one reader
/// reading them all, 64 at a time, and acknowledging each.
fn read_ack(c: &mut Criterion) {
    let record = Bytes::from(vec![0x5Au8; 4 << 10]);
    let mut g = c.benchmark_group("spool/read_ack_4KiB");
    g.throughput(Throughput::Bytes(record.len() as u64 * READ_RECORDS));
    g.bench_function("spanflow", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let spool = Spool::open(spool_config(dir.path(), Mode::Interval), &["backend"])
                    .expect("open");
                for _ in 0..READ_RECORDS {
                    spool.append(1, record.clone()).wait().expect("append");
                }
                let reader = spool.reader("backend").expect("reader");
                let mut sink = Vec::with_capacity(record.len());
                let start = Instant::now();
                let mut n = 0;
                while n < READ_RECORDS {
                    for r in reader.try_read(64, usize::MAX).expect("read") {
                        consume(&mut sink, &r.data);
                        reader.ack(r.seq).expect("ack");
                        n += 1;
                    }
                }
                total += start.elapsed();
                spool.close().expect("close");
            }
            total
        });
    });
    g.bench_function("redb", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = redb_open(dir.path());
                let committer = redb_committer(Arc::clone(&db), Mode::Interval);
                for _ in 0..READ_RECORDS {
                    committer.append(record.clone());
                }
                committer.finish();
                let mut sink = Vec::with_capacity(record.len());
                let start = Instant::now();
                let mut cursor = 0u64;
                while cursor < READ_RECORDS {
                    let read = db.begin_read().expect("read");
                    let table = read.open_table(RECORDS).expect("table");
                    let mut last = cursor;
                    for item in table.range(cursor..).expect("range").take(64) {
                        let (k, v) = item.expect("item");
                        consume(&mut sink, v.value());
                        last = k.value();
                    }
                    drop(table);
                    drop(read);
                    cursor = last + 1;
                    let mut tx = db.begin_write().expect("begin");
                    tx.set_durability(Durability::None).expect("durability");
                    tx.open_table(CURSORS)
                        .expect("table")
                        .insert("backend", cursor)
                        .expect("insert");
                    tx.commit().expect("commit");
                }
                total += start.elapsed();
            }
            total
        });
    });
    g.bench_function("fjall", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let (db, ks) = fjall_open(dir.path());
                let cursors = db
                    .keyspace("cursors", fjall::KeyspaceCreateOptions::default)
                    .expect("keyspace");
                let committer = fjall_committer(db.clone(), ks.clone(), Mode::Interval);
                for _ in 0..READ_RECORDS {
                    committer.append(record.clone());
                }
                committer.finish();
                let mut sink = Vec::with_capacity(record.len());
                let start = Instant::now();
                let mut cursor = 0u64;
                while cursor < READ_RECORDS {
                    let mut last = cursor;
                    for guard in ks.range(cursor.to_be_bytes()..).take(64) {
                        let (k, v) = guard.into_inner().expect("item");
                        consume(&mut sink, &v);
                        last = u64::from_be_bytes(k[..8].try_into().expect("key"));
                    }
                    cursor = last + 1;
                    cursors
                        .insert("backend", cursor.to_be_bytes())
                        .expect("cursor");
                }
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    appends(&mut c);
    read_ack(&mut c);
    c.final_summary();
    let table = FSYNCS.lock().expect("fsync table");
    if !table.is_empty() {
        println!(
            "\n{:<48} {:>12} {:>16}",
            "function", "fsyncs/s", "records/fsync"
        );
        for (key, (fsyncs, appends, took)) in table.iter() {
            let per_s = *fsyncs as f64 / took.as_secs_f64().max(1e-9);
            let per_fsync = *appends as f64 / (*fsyncs).max(1) as f64;
            println!("{key:<48} {per_s:>12.0} {per_fsync:>16.1}");
        }
    }
}
