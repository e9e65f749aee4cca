//! Random appends, reads, out-of-order acks and clean reopens, checked against a dumb model: a
//! `VecDeque` of records and, per reader, a committed cursor and the records in flight.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use proptest::prelude::*;
use spanflow_spool::{Fsync, Spool};

use common::{bounded, config, payload};

const READERS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Append {
        meta: u64,
        len: usize,
    },
    Read {
        reader: usize,
        max: usize,
    },
    /// Acknowledge the `pick`-th (modulo) record in flight: any order.
    Ack {
        reader: usize,
        pick: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u64>(), 0usize..1500).prop_map(|(meta, len)| Op::Append { meta, len }),
        3 => (0..READERS.len(), 1usize..8).prop_map(|(reader, max)| Op::Read { reader, max }),
        4 => (0..READERS.len(), any::<usize>()).prop_map(|(reader, pick)| Op::Ack { reader, pick }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default, Clone)]
struct ModelReader {
    committed: u64,
    next_read: u64,
    /// Delivered and not acknowledged.
    in_flight: BTreeSet<u64>,
    /// Acknowledged at or above `committed`.
    acked: BTreeSet<u64>,
}

impl ModelReader {
    fn advance(&mut self) {
        while self.acked.remove(&self.committed) {
            self.committed += 1;
        }
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small segments so that rotation and deletion happen; `never` keeps the run fast (a clean
    // close makes everything readable again either way).
    let cfg = config(dir.path(), Fsync::Never, 4096, 1 << 30);
    let mut spool = Spool::open(cfg.clone(), &READERS).expect("open");
    let mut log: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut readers = vec![ModelReader::default(); READERS.len()];
    for op in ops {
        match op {
            Op::Append { meta, len } => {
                let seq = spool
                    .append(meta, payload(log.len() as u64, len))
                    .wait()
                    .expect("append");
                assert_eq!(seq, log.len() as u64);
                log.push_back((meta, payload(seq, len)));
            }
            Op::Read { reader, max } => {
                let m = &mut readers[reader];
                let got = spool
                    .reader(READERS[reader])
                    .expect("reader")
                    .try_read(max, usize::MAX)
                    .expect("read");
                let want: Vec<u64> = (m.next_read..log.len() as u64).take(max).collect();
                assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), want);
                for r in &got {
                    let (meta, data) = &log[r.seq as usize];
                    assert_eq!(
                        (&r.meta, &r.data[..]),
                        (meta, &data[..]),
                        "record {}",
                        r.seq
                    );
                    m.in_flight.insert(r.seq);
                }
                m.next_read += got.len() as u64;
            }
            Op::Ack { reader, pick } => {
                let m = &mut readers[reader];
                if m.in_flight.is_empty() {
                    continue;
                }
                let seq = *m
                    .in_flight
                    .iter()
                    .nth(pick % m.in_flight.len())
                    .expect("pick");
                m.in_flight.remove(&seq);
                m.acked.insert(seq);
                m.advance();
                spool
                    .reader(READERS[reader])
                    .expect("reader")
                    .ack(seq)
                    .expect("ack");
            }
            Op::Reopen => {
                spool.close().expect("close");
                drop(spool);
                spool = Spool::open(cfg.clone(), &READERS).expect("reopen");
                for m in &mut readers {
                    // Everything after the committed cursor is delivered again.
                    m.next_read = m.committed;
                    m.in_flight.clear();
                    m.acked.clear();
                }
                let rec = spool.recovery();
                assert!(rec.truncated.is_none() && rec.corrupt.is_empty(), "{rec:?}");
                assert_eq!(rec.next_seq, log.len() as u64);
            }
        }
        for (i, m) in readers.iter().enumerate() {
            assert_eq!(
                spool.reader(READERS[i]).expect("reader").committed(),
                m.committed,
                "reader {}",
                READERS[i]
            );
        }
    }
    // Retention never deleted a record some reader still needs: each reader can be given
    // everything from its committed cursor on.
    spool.close().expect("close");
    drop(spool);
    let spool = Spool::open(cfg, &READERS).expect("reopen");
    for (i, m) in readers.iter().enumerate() {
        let got = common::drain(&spool.reader(READERS[i]).expect("reader"));
        let want: Vec<u64> = (m.committed..log.len() as u64).collect();
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            want,
            "reader {}",
            READERS[i]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn spool_matches_a_queue_with_cursors(ops in prop::collection::vec(op(), 1..120)) {
        bounded(Duration::from_secs(30), move || run(ops));
    }
}
