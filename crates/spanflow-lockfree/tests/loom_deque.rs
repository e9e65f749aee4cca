//! Loom models of the Chase–Lev deque (the buffer starts at 2 slots under loom, so resizes happen).
#![cfg(loom)]

use loom::thread;
use spanflow_lockfree::deque::{Steal, Worker};

fn steal_until_done<T>(s: &spanflow_lockfree::Stealer<T>) -> Option<T> {
    loop {
        match s.steal() {
            Steal::Success(v) => return Some(v),
            Steal::Empty => return None,
            Steal::Retry => thread::yield_now(),
        }
    }
}

#[test]
fn pop_against_steal_on_the_last_element() {
    loom::model(|| {
        let w = Worker::new_lifo();
        let s = w.stealer();
        w.push(1);
        let thief = thread::spawn(move || steal_until_done(&s));
        let popped = w.pop();
        let stolen = thief.join().unwrap();
        let mut all: Vec<i32> = popped.into_iter().chain(stolen).collect();
        all.sort_unstable();
        assert_eq!(all, [1]);
    });
}

#[test]
fn steal_during_resize_sees_each_item_once() {
    loom::model(|| {
        let w = Worker::new_lifo();
        let s = w.stealer();
        w.push(1);
        w.push(2);
        let thief = thread::spawn(move || steal_until_done(&s));
        // The third push grows the 2-slot buffer while the thief may be reading it.
        w.push(3);
        let mut all: Vec<i32> = std::iter::from_fn(|| w.pop()).collect();
        all.extend(thief.join().unwrap());
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
    });
}

#[test]
fn owner_reuses_slot_after_steal() {
    loom::model(|| {
        let w = Worker::new_fifo();
        let s = w.stealer();
        w.push(1);
        w.push(2);
        let thief = thread::spawn(move || steal_until_done(&s));
        // These pushes wrap onto the slot a thief may still be reading.
        let first = w.pop();
        w.push(3);
        w.push(4);
        let mut all: Vec<i32> = first.into_iter().collect();
        all.extend(std::iter::from_fn(|| w.pop()));
        all.extend(thief.join().unwrap());
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3, 4]);
    });
}

#[test]
fn steal_batch_against_pop() {
    loom::model(|| {
        let w = Worker::new_fifo();
        let s = w.stealer();
        w.push(1);
        w.push(2);
        w.push(3);
        let thief = thread::spawn(move || {
            let dest = Worker::new_fifo();
            let mut got = Vec::new();
            if let Steal::Success(v) = s.steal_batch_and_pop(&dest) {
                got.push(v);
            }
            got.extend(std::iter::from_fn(|| dest.pop()));
            got
        });
        let mut all: Vec<i32> = w.pop().into_iter().collect();
        all.extend(thief.join().unwrap());
        all.extend(std::iter::from_fn(|| w.pop()));
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
    });
}

#[test]
fn lifo_steal_batch_against_pop() {
    loom::model(|| {
        let w = Worker::new_lifo();
        let s = w.stealer();
        w.push(1);
        w.push(2);
        let thief = thread::spawn(move || {
            let dest = Worker::new_lifo();
            let _ = s.steal_batch(&dest);
            std::iter::from_fn(|| dest.pop()).collect::<Vec<i32>>()
        });
        let mut all: Vec<i32> = w.pop().into_iter().collect();
        all.extend(thief.join().unwrap());
        all.extend(std::iter::from_fn(|| w.pop()));
        all.sort_unstable();
        assert_eq!(all, [1, 2]);
    });
}
