//! A real kill -9: this test binary re-executes itself as a writer that appends numbered
//! records under `Fsync::Always` and prints each completed sequence number; the parent kills
//! it with SIGKILL at a random moment, reopens the directory, and checks that every printed
//! (acknowledged) record is there, intact.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;
use spanflow_spool::{Fsync, Spool};

use common::{config, drain, payload};

const DIR_VAR: &str = "SPANFLOW_SPOOL_KILL9_DIR";
const CYCLES: usize = 6;

fn record_len(id: u64) -> usize {
    (id as usize * 37) % 3000
}

/// The child: appends from 4 threads until killed (or 10 s pass), printing
/// `ACK <seq> <id>` for every completed append.
#[test]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return; // Only runs as the child of `acknowledged_appends_survive_kill_9`.
    };
    let id_base: u64 = std::env::var("SPANFLOW_SPOOL_KILL9_IDS")
        .expect("ids")
        .parse()
        .expect("number");
    let spool = Spool::open(
        config(dir.as_ref(), Fsync::Always, 64 << 10, 1 << 30),
        &["audit"],
    )
    .expect("open");
    let spool = std::sync::Arc::new(spool);
    let deadline = Instant::now() + Duration::from_secs(10);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let spool = &spool;
            s.spawn(move || {
                let mut i = 0;
                while Instant::now() < deadline {
                    let id = id_base + t * 1_000_000 + i;
                    i += 1;
                    let seq = spool
                        .append(id, payload(id, record_len(id)))
                        .wait()
                        .expect("append");
                    // println! takes the stdout lock: a line is whole or absent.
                    println!("ACK {seq} {id}");
                }
            });
        }
    });
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let mut rng = rand::rng();
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill9_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .env(
                "SPANFLOW_SPOOL_KILL9_IDS",
                (cycle as u64 * 100_000_000).to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let lines = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let mut it = rest.split(' ');
                    let seq: u64 = it.next().and_then(|s| s.parse().ok()).expect("seq");
                    let id: u64 = it.next().and_then(|s| s.parse().ok()).expect("id");
                    let _ = tx.send((seq, id));
                }
            }
        });
        // Kill at a random moment after the first acknowledgement.
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the child acknowledged nothing");
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the child ended by itself");
        lines.join().expect("reader thread");
        let mut this_cycle = vec![first];
        this_cycle.extend(rx.try_iter());
        let min_new = this_cycle.iter().map(|p| p.0).min().expect("one");
        if let Some((&max_old, _)) = acked.iter().next_back() {
            assert!(
                min_new > max_old,
                "cycle {cycle}: seq {min_new} reused after {max_old}"
            );
        }
        acked.extend(this_cycle);

        // Reopen: every acknowledged record is there, intact.
        let spool = Spool::open(
            config(dir.path(), Fsync::Always, 64 << 10, 1 << 30),
            &["audit"],
        )
        .expect("reopen after kill");
        let rec = spool.recovery();
        assert!(rec.corrupt.is_empty(), "cycle {cycle}: {rec:?}");
        let all: BTreeMap<u64, (u64, bytes::Bytes)> =
            drain(&spool.reader("audit").expect("reader"))
                .into_iter()
                .map(|r| (r.seq, (r.meta, r.data)))
                .collect();
        for (&seq, &id) in &acked {
            let (meta, data) = all
                .get(&seq)
                .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged record {seq} lost"));
            assert_eq!(*meta, id);
            assert_eq!(&data[..], &payload(id, record_len(id))[..], "record {seq}");
        }
        spool.close().expect("close");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "kill -9 cycles took too long"
        );
    }
    assert!(acked.len() >= CYCLES);
}
