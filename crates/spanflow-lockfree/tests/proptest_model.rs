//! Random single-threaded operation sequences checked against `Vec` / `VecDeque` models.
#![cfg(not(loom))]

use std::collections::VecDeque;

use proptest::prelude::*;
use spanflow_lockfree::TreiberStack;
use spanflow_lockfree::deque::{Injector, Steal, Worker};

#[derive(Debug, Clone)]
enum StackOp {
    Push(u32),
    PushList(Vec<u32>),
    Pop,
    TakeAllLifo,
    TakeAllFifo,
    TakeSomeThenFifo(usize),
}

fn stack_op() -> impl Strategy<Value = StackOp> {
    prop_oneof![
        4 => any::<u32>().prop_map(StackOp::Push),
        2 => prop::collection::vec(any::<u32>(), 0..20).prop_map(StackOp::PushList),
        4 => Just(StackOp::Pop),
        1 => Just(StackOp::TakeAllLifo),
        1 => Just(StackOp::TakeAllFifo),
        1 => (0usize..5).prop_map(StackOp::TakeSomeThenFifo),
    ]
}

#[derive(Debug, Clone)]
enum DequeOp {
    Push(u32),
    Pop,
    Steal,
    StealBatch,
    StealBatchAndPop,
}

fn deque_op() -> impl Strategy<Value = DequeOp> {
    prop_oneof![
        6 => any::<u32>().prop_map(DequeOp::Push),
        3 => Just(DequeOp::Pop),
        2 => Just(DequeOp::Steal),
        1 => Just(DequeOp::StealBatch),
        1 => Just(DequeOp::StealBatchAndPop),
    ]
}

/// Drains a destination worker into a vector (FIFO destination, so oldest first).
fn drain(w: &Worker<u32>) -> Vec<u32> {
    std::iter::from_fn(|| w.pop()).collect()
}

/// Under Miri, which interprets every step, a handful of short cases still walks every
/// operation; there is no failure file to read or write either (Miri isolates the file system).
fn config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig {
            cases: 4,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    } else {
        ProptestConfig::with_cases(256)
    }
}

/// Up to `n` operations per case (an eighth of that under Miri).
fn ops(n: usize) -> std::ops::Range<usize> {
    0..if cfg!(miri) { n / 8 } else { n }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn stack_matches_vec(ops in prop::collection::vec(stack_op(), ops(300))) {
        let stack = TreiberStack::new();
        let mut model: Vec<u32> = Vec::new();
        for op in ops {
            match op {
                StackOp::Push(v) => { stack.push(v); model.push(v); }
                StackOp::PushList(vs) => { stack.push_list(vs.clone()); model.extend(vs); }
                StackOp::Pop => prop_assert_eq!(stack.pop(), model.pop()),
                StackOp::TakeAllLifo => {
                    let got: Vec<u32> = stack.take_all().collect();
                    let want: Vec<u32> = model.drain(..).rev().collect();
                    prop_assert_eq!(got, want);
                }
                StackOp::TakeAllFifo => {
                    let got: Vec<u32> = stack.take_all().into_fifo().collect();
                    prop_assert_eq!(got, std::mem::take(&mut model));
                }
                StackOp::TakeSomeThenFifo(k) => {
                    let mut all = stack.take_all();
                    let mut got: Vec<u32> = all.by_ref().take(k).collect();
                    got.extend(all.into_fifo());
                    let k = k.min(model.len());
                    let mut want: Vec<u32> = model.iter().rev().take(k).copied().collect();
                    want.extend(model[..model.len() - k].iter().copied());
                    model.clear();
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert_eq!(stack.is_empty(), model.is_empty());
        }
    }

    #[test]
    fn lifo_worker_matches_vecdeque(ops in prop::collection::vec(deque_op(), ops(400))) {
        check_worker(Worker::new_lifo(), true, ops)?;
    }

    #[test]
    fn fifo_worker_matches_vecdeque(ops in prop::collection::vec(deque_op(), ops(400))) {
        check_worker(Worker::new_fifo(), false, ops)?;
    }

    #[test]
    fn injector_matches_vecdeque(ops in prop::collection::vec(deque_op(), ops(300))) {
        let q = Injector::new();
        let mut model: VecDeque<u32> = VecDeque::new();
        let dest = Worker::new_fifo();
        for op in ops {
            match op {
                DequeOp::Push(v) => { q.push(v); model.push_back(v); }
                DequeOp::Pop | DequeOp::Steal => {
                    prop_assert_eq!(q.steal().success(), model.pop_front());
                }
                DequeOp::StealBatch => {
                    let n = model.len().div_ceil(2).min(32);
                    let r = q.steal_batch(&dest);
                    prop_assert_eq!(r.is_success(), n > 0);
                    let want: Vec<u32> = model.drain(..n).collect();
                    prop_assert_eq!(drain(&dest), want);
                }
                DequeOp::StealBatchAndPop => {
                    let n = model.len().div_ceil(2).min(32);
                    let r = q.steal_batch_and_pop(&dest);
                    let mut want: Vec<u32> = model.drain(..n).collect();
                    if want.is_empty() {
                        prop_assert!(r.is_empty());
                    } else {
                        prop_assert_eq!(r, Steal::Success(want.remove(0)));
                    }
                    prop_assert_eq!(drain(&dest), want);
                }
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_empty(), model.is_empty());
        }
    }
}

fn check_worker(w: Worker<u32>, lifo: bool, ops: Vec<DequeOp>) -> Result<(), TestCaseError> {
    let s = w.stealer();
    let mut model: VecDeque<u32> = VecDeque::new();
    let dest = Worker::new_fifo();
    for op in ops {
        match op {
            DequeOp::Push(v) => {
                w.push(v);
                model.push_back(v);
            }
            DequeOp::Pop => {
                let want = if lifo {
                    model.pop_back()
                } else {
                    model.pop_front()
                };
                prop_assert_eq!(w.pop(), want);
            }
            DequeOp::Steal => prop_assert_eq!(s.steal().success(), model.pop_front()),
            DequeOp::StealBatch => {
                let n = model.len().div_ceil(2).min(32);
                let r = s.steal_batch(&dest);
                prop_assert_eq!(r.is_success(), n > 0);
                let want: Vec<u32> = model.drain(..n).collect();
                prop_assert_eq!(drain(&dest), want);
            }
            DequeOp::StealBatchAndPop => {
                let n = model.len().div_ceil(2).min(32);
                let r = s.steal_batch_and_pop(&dest);
                let mut want: Vec<u32> = model.drain(..n).collect();
                if want.is_empty() {
                    prop_assert!(r.is_empty());
                } else {
                    prop_assert_eq!(r, Steal::Success(want.remove(0)));
                }
                prop_assert_eq!(drain(&dest), want);
            }
        }
        prop_assert_eq!(w.len(), model.len());
        prop_assert_eq!(s.len(), model.len());
    }
    Ok(())
}
