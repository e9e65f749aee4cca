//! Loom models of the `Injector`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use spanflow_lockfree::deque::{Injector, Steal, Worker};

#[test]
fn push_against_steal() {
    loom::model(|| {
        let q = Arc::new(Injector::new());
        q.push(1);
        let q1 = q.clone();
        let producer = thread::spawn(move || q1.push(2));
        let stolen = q.steal().success();
        producer.join().unwrap();
        let mut all: Vec<i32> = stolen.into_iter().collect();
        all.extend(std::iter::from_fn(|| q.steal().success()));
        all.sort_unstable();
        assert_eq!(all, [1, 2]);
    });
}

#[test]
fn steal_batch_against_steal() {
    loom::model(|| {
        let q = Arc::new(Injector::new());
        q.push(1);
        q.push(2);
        q.push(3);
        let q1 = q.clone();
        let thief = thread::spawn(move || {
            let dest = Worker::new_fifo();
            let mut got: Vec<i32> = Vec::new();
            if let Steal::Success(v) = q1.steal_batch_and_pop(&dest) {
                got.push(v);
            }
            got.extend(std::iter::from_fn(|| dest.pop()));
            got
        });
        let mut all: Vec<i32> = q.steal().success().into_iter().collect();
        all.extend(thief.join().unwrap());
        all.extend(std::iter::from_fn(|| q.steal().success()));
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
    });
}

#[test]
fn concurrent_producers_then_drain_in_order_per_producer() {
    loom::model(|| {
        let q = Arc::new(Injector::new());
        let q1 = q.clone();
        let producer = thread::spawn(move || {
            q1.push(1);
            q1.push(2);
        });
        q.push(3);
        producer.join().unwrap();
        let all: Vec<i32> = std::iter::from_fn(|| q.steal().success()).collect();
        let pos1 = all.iter().position(|&v| v == 1).unwrap();
        let pos2 = all.iter().position(|&v| v == 2).unwrap();
        assert!(pos1 < pos2);
        assert_eq!(all.len(), 3);
    });
}
