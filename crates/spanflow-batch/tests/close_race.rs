//! Regression: two producers `send` until the last one closes the batcher; the consumer must
//! receive every accepted item (found by the intake benchmark, which lost one item in 100 000).
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use spanflow_batch::Batcher;

mod support;
use support::{join, next};

fn round(per_producer: usize) -> (usize, spanflow_batch::Stats) {
    let (tx, rx) = Batcher::<u64>::builder()
        .max_items(512)
        .budget_items((2 * per_producer) as u64)
        .build()
        .expect("valid config");
    let consumer = std::thread::spawn(move || {
        let mut rx = rx;
        let mut received = 0;
        while let Some(batch) = next(&mut rx) {
            received += batch.len();
        }
        received
    });
    let remaining = Arc::new(AtomicUsize::new(2));
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let tx = tx.clone();
            let remaining = Arc::clone(&remaining);
            std::thread::spawn(move || {
                for i in 0..per_producer {
                    tx.send(i as u64).expect("open");
                }
                if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    tx.close();
                }
            })
        })
        .collect();
    producers.into_iter().for_each(join);
    let received = join(consumer);
    (received, tx.stats())
}

#[test]
fn closing_after_the_last_send_loses_nothing() {
    let rounds = std::env::var("SPANFLOW_CLOSE_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    for r in 0..rounds {
        let (received, stats) = round(50_000);
        assert_eq!(
            received, 100_000,
            "round {r}: received {received} of 100000; stats {stats:?}"
        );
    }
}
