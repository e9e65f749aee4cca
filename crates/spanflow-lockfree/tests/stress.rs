//! Multi-threaded stress: every element seen exactly once, every value dropped exactly once.
//!
//! Sizes shrink when `SPANFLOW_STRESS_SCALE=small` (used for the valgrind memcheck run), shrink
//! further with `SPANFLOW_STRESS_SCALE=tiny` (the Miri run, which interprets every step), and
//! grow with `SPANFLOW_STRESS_SCALE=large`.
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use spanflow_lockfree::TreiberStack;
use spanflow_lockfree::deque::{Injector, Steal, Stealer, Worker};

fn scale(n: usize) -> usize {
    // Miri does not forward the environment unless told to (`-Zmiri-env-forward`), so a run
    // under Miri is tiny whatever the variable says.
    let requested = if cfg!(miri) {
        Ok("tiny".to_owned())
    } else {
        std::env::var("SPANFLOW_STRESS_SCALE")
    };
    match requested.as_deref() {
        Ok("small") => (n / 50).max(50),
        Ok("tiny") => (n / 1000).max(20),
        Ok("large") => n * 20,
        _ => n,
    }
}

/// A value that counts its drops and checks it is dropped once.
struct Tracked {
    id: usize,
    drops: Arc<Vec<AtomicUsize>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let before = self.drops[self.id].fetch_add(1, Ordering::Relaxed);
        assert_eq!(before, 0, "value {} dropped twice", self.id);
    }
}

fn drop_counters(n: usize) -> Arc<Vec<AtomicUsize>> {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

fn assert_all_dropped_once(drops: &[AtomicUsize]) {
    for (id, d) in drops.iter().enumerate() {
        assert_eq!(
            d.load(Ordering::Relaxed),
            1,
            "value {id} dropped {} times",
            d.load(Ordering::Relaxed)
        );
    }
}

/// Marks `id` as seen and fails on a duplicate.
fn see(seen: &[AtomicUsize], id: usize) {
    let before = seen[id].fetch_add(1, Ordering::Relaxed);
    assert_eq!(before, 0, "item {id} seen twice");
}

fn assert_all_seen_once(seen: &[AtomicUsize]) {
    for (id, s) in seen.iter().enumerate() {
        assert_eq!(
            s.load(Ordering::Relaxed),
            1,
            "item {id} seen {} times",
            s.load(Ordering::Relaxed)
        );
    }
}

#[test]
fn stack_push_pop_take_all_sees_each_item_once() {
    let threads = 4;
    let per = scale(20_000);
    let total = threads * per;
    let stack = TreiberStack::new();
    let seen: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (stack, seen) = (&stack, &seen);
            scope.spawn(move || {
                let mut i = 0;
                while i < per {
                    let id = t * per + i;
                    match i % 5 {
                        0 if i + 3 <= per => {
                            stack.push_list([id, id + 1, id + 2]);
                            i += 3;
                        }
                        _ => {
                            stack.push(id);
                            i += 1;
                        }
                    }
                    match t {
                        0 => {
                            if i % 7 == 0 {
                                for v in stack.take_all().into_fifo() {
                                    see(seen, v);
                                }
                            }
                        }
                        1 => {
                            if i % 11 == 0 {
                                for v in stack.take_all() {
                                    see(seen, v);
                                }
                            }
                        }
                        _ => {
                            if let Some(v) = stack.pop() {
                                see(seen, v);
                            }
                        }
                    }
                }
            });
        }
    });
    for v in stack.take_all() {
        see(&seen, v);
    }
    assert_all_seen_once(&seen);
}

#[test]
fn stack_drops_every_value_once_even_when_dropped_non_empty() {
    let threads = 3;
    let per = scale(10_000);
    let drops = drop_counters(threads * per);
    let stack = TreiberStack::new();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (stack, drops) = (&stack, &drops);
            scope.spawn(move || {
                for i in 0..per {
                    stack.push(Tracked {
                        id: t * per + i,
                        drops: drops.clone(),
                    });
                    if i % 3 == 0 {
                        drop(stack.pop());
                    }
                    if i % 101 == 0 {
                        // Consume part of a detached list and drop the rest with the iterator.
                        let mut all = stack.take_all();
                        drop(all.next());
                    }
                }
            });
        }
    });
    drop(stack);
    assert_all_dropped_once(&drops);
}

/// One owner pushes and pops while thieves steal single items and batches.
fn deque_owner_and_thieves(owner: Worker<usize>) {
    let thieves = 3;
    let total = scale(100_000);
    let seen: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
    let done = AtomicBool::new(false);
    let stealer = owner.stealer();
    std::thread::scope(|scope| {
        for k in 0..thieves {
            let (stealer, seen, done): (Stealer<usize>, _, _) = (stealer.clone(), &seen, &done);
            scope.spawn(move || {
                let local = Worker::new_fifo();
                loop {
                    let r = match k {
                        0 => stealer.steal(),
                        1 => stealer.steal_batch_and_pop(&local),
                        _ => match stealer.steal_batch(&local) {
                            Steal::Success(()) => local.pop().map_or(Steal::Retry, Steal::Success),
                            Steal::Empty => Steal::Empty,
                            Steal::Retry => Steal::Retry,
                        },
                    };
                    match r {
                        Steal::Success(v) => see(seen, v),
                        Steal::Empty if done.load(Ordering::Acquire) => break,
                        _ => std::hint::spin_loop(),
                    }
                    while let Some(v) = local.pop() {
                        see(seen, v);
                    }
                }
                while let Some(v) = local.pop() {
                    see(seen, v);
                }
            });
        }
        // The owner pushes bursts (forcing growth) and pops some back (forcing shrink checks).
        let mut next = 0;
        while next < total {
            let burst = 1 + (next * 7919) % 300;
            for _ in 0..burst.min(total - next) {
                owner.push(next);
                next += 1;
            }
            for _ in 0..burst / 2 {
                if let Some(v) = owner.pop() {
                    see(&seen, v);
                }
            }
        }
        while let Some(v) = owner.pop() {
            see(&seen, v);
        }
        done.store(true, Ordering::Release);
    });
    assert_all_seen_once(&seen);
}

#[test]
fn lifo_deque_owner_and_thieves_see_each_item_once() {
    deque_owner_and_thieves(Worker::new_lifo());
}

#[test]
fn fifo_deque_owner_and_thieves_see_each_item_once() {
    deque_owner_and_thieves(Worker::new_fifo());
}

#[test]
fn deque_drops_every_value_once_even_when_dropped_non_empty() {
    let total = scale(50_000);
    let drops = drop_counters(total);
    {
        let owner = Worker::new_lifo();
        let stealer = owner.stealer();
        std::thread::scope(|scope| {
            let thief = scope.spawn(|| {
                let local = Worker::new_lifo();
                for i in 0..total / 4 {
                    if i % 2 == 0 {
                        drop(stealer.steal());
                    } else {
                        let _ = stealer.steal_batch(&local);
                    }
                }
                local // dropped non-empty at the end of the scope
            });
            for id in 0..total {
                owner.push(Tracked {
                    id,
                    drops: drops.clone(),
                });
                if id % 3 == 0 {
                    drop(owner.pop());
                }
            }
            drop(thief.join().expect("thief panicked"));
        });
        // `owner` and `stealer` are dropped here with items left inside.
    }
    assert_all_dropped_once(&drops);
}

#[test]
fn injector_producers_and_consumers_see_each_item_once() {
    let producers = 2;
    let consumers = 2;
    let per = scale(50_000);
    let total = producers * per;
    let q = Injector::new();
    let seen: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
    let taken = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for p in 0..producers {
            let q = &q;
            scope.spawn(move || {
                for i in 0..per {
                    q.push(p * per + i);
                }
            });
        }
        for c in 0..consumers {
            let (q, seen, taken) = (&q, &seen, &taken);
            scope.spawn(move || {
                let local = Worker::new_lifo();
                while taken.load(Ordering::Relaxed) < total {
                    let r = if c == 0 {
                        q.steal()
                    } else {
                        q.steal_batch_and_pop(&local)
                    };
                    if let Steal::Success(v) = r {
                        see(seen, v);
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                    while let Some(v) = local.pop() {
                        see(seen, v);
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert!(q.is_empty());
    assert_all_seen_once(&seen);
}

#[test]
fn injector_drops_every_value_once_even_when_dropped_non_empty() {
    let total = scale(20_000);
    let drops = drop_counters(total);
    {
        let q = Injector::new();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let local = Worker::new_fifo();
                for _ in 0..total / 8 {
                    drop(q.steal_batch_and_pop(&local));
                }
            });
            for id in 0..total {
                q.push(Tracked {
                    id,
                    drops: drops.clone(),
                });
            }
        });
    }
    assert_all_dropped_once(&drops);
}
