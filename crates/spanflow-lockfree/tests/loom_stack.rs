//! Loom models of `TreiberStack`: push/pop races, `take_all` against concurrent pushes, and node
//! recycling (under loom popped nodes go to the epoch in chains of 2 and come back through the
//! per-thread free lists of `retire::node_memory`, so every model here runs that path too).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use spanflow_lockfree::TreiberStack;

#[test]
fn concurrent_push_pop_sees_each_value_once() {
    loom::model(|| {
        let stack = Arc::new(TreiberStack::new());
        stack.push(0);
        let s1 = stack.clone();
        let t1 = thread::spawn(move || {
            s1.push(1);
            s1.pop()
        });
        let s2 = stack.clone();
        let t2 = thread::spawn(move || s2.pop());
        let mut seen: Vec<i32> = [t1.join().unwrap(), t2.join().unwrap()]
            .into_iter()
            .flatten()
            .collect();
        seen.extend(stack.take_all());
        seen.sort_unstable();
        assert_eq!(seen, [0, 1]);
    });
}

#[test]
fn take_all_against_concurrent_push_list() {
    loom::model(|| {
        let stack = Arc::new(TreiberStack::new());
        let s1 = stack.clone();
        let t1 = thread::spawn(move || s1.push_list([1, 2]));
        let s2 = stack.clone();
        let t2 = thread::spawn(move || s2.push(3));
        let first: Vec<i32> = stack.take_all().into_fifo().collect();
        t1.join().unwrap();
        t2.join().unwrap();
        let second: Vec<i32> = stack.take_all().into_fifo().collect();
        // `push_list` publishes 1, 2 together and in order.
        for part in [&first, &second] {
            if let Some(pos) = part.iter().position(|&v| v == 1) {
                assert_eq!(part.get(pos + 1), Some(&2));
            }
        }
        let mut all: Vec<i32> = first.into_iter().chain(second).collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
    });
}

#[test]
fn pop_races_take_all() {
    loom::model(|| {
        let stack = Arc::new(TreiberStack::new());
        stack.push(1);
        stack.push(2);
        let s1 = stack.clone();
        let t1 = thread::spawn(move || s1.pop());
        let taken: Vec<i32> = stack.take_all().collect();
        let popped = t1.join().unwrap();
        let mut all: Vec<i32> = taken.into_iter().chain(popped).collect();
        all.extend(stack.take_all());
        all.sort_unstable();
        assert_eq!(all, [1, 2]);
    });
}

/// A pop retires its node; after two pops the chain goes to the epoch, and once no pinned
/// reader can still see those nodes their blocks are spliced onto a free list that the next
/// push takes from. A pop racing with all that must never see a node reused under it: every
/// value comes out exactly once.
#[test]
fn recycled_nodes_are_reused_only_after_their_readers_unpin() {
    loom::model(|| {
        let stack = Arc::new(TreiberStack::new());
        stack.push_list([1, 2, 3]);
        let s1 = stack.clone();
        let t1 = thread::spawn(move || {
            let popped = [s1.pop(), s1.pop()];
            // Advance the epoch as far as the other thread lets it (two steps run the chain's
            // splice here), then push into whatever block came back.
            crossbeam_epoch::pin().flush();
            crossbeam_epoch::pin().flush();
            s1.push(4);
            popped
        });
        let mine = stack.pop();
        let mut seen: Vec<i32> = t1.join().unwrap().into_iter().flatten().collect();
        seen.extend(mine);
        seen.extend(stack.take_all());
        seen.sort_unstable();
        assert_eq!(seen, [1, 2, 3, 4]);
    });
}
