//! A Chase–Lev work-stealing deque ([`Worker`], [`Stealer`]) and a global [`Injector`] queue.
//!
//! The API mirrors crossbeam-deque: each worker thread owns a [`Worker`] and pushes/pops at one
//! end; other threads hold [`Stealer`]s and take from the other end; an [`Injector`] is a shared
//! FIFO queue that workers steal batches from.
//!
//! # Algorithm
//!
//! The worker deque is Chase and Lev's "Dynamic circular work-stealing deque" (SPAA 2005) with the
//! C11 orderings that Lê, Pop, Cohen and Zappa Nardelli proved correct ("Correct and efficient
//! work-stealing for weak memory models", PPoPP 2013): `bottom` is written only by the owner, `top`
//! only by CAS; `pop` writes `bottom`, issues a `SeqCst` fence and reads `top`; `steal` reads `top`
//! and then `bottom` with `SeqCst` loads (the paper's thief-side fence, expressed the C++20 way;
//! see `Inner::read_top_bottom` for the argument). This guarantees that when the owner and a thief
//! go for the same last element, at least one of them sees the other and only the CAS on `top`
//! decides. Buffers grow by doubling; a replaced buffer is retired through crossbeam-epoch because
//! a thief may still be reading it.
//!
//! # Two differences from crossbeam-deque
//!
//! * **No data race on slots.** crossbeam's `steal` reads the slot *before* its CAS and throws the
//!   value away if the CAS fails; that read can overlap the owner's write of a new value into the
//!   same slot, which crossbeam documents as technically undefined behaviour. Here a thief reads a
//!   slot only *after* its CAS has claimed the index, and every slot carries a `stamp`: the consumer
//!   that claimed index `i` stores `i + capacity` (Release) once it has read the value, and the
//!   owner writes index `b` into a slot only after reading `stamp == b` (Acquire). So every write of
//!   a slot happens after the previous read of it, and every read after the write (through the
//!   Release/Acquire pair on `bottom`): no two accesses race. If a slow thief still holds the slot
//!   (or the stamp is stale because the thief read an older buffer), the owner moves to a fresh
//!   buffer of the same size instead of waiting, so the owner never blocks.
//! * **No buffer thrash.** crossbeam shrinks the buffer whenever it is less than a quarter full,
//!   so pushing and popping 256 items grows and shrinks it every round. This deque shrinks only
//!   after `capacity` consecutive pops that all left it less than a quarter full (a pop that
//!   leaves it at least a quarter full resets the count): shrinking stays amortised O(1) and a steady working set
//!   keeps its buffer.
//!
//! The [`Injector`] is a Michael–Scott linked queue (PODC 1996) with epoch reclamation; values are
//! read only after the CAS on `head` has claimed them, and `steal_batch` claims a whole run of
//! nodes with a single CAS.

mod injector;
mod worker;

pub use injector::Injector;
pub use worker::{Stealer, Worker};

/// The most items one `steal_batch` call moves.
pub(crate) const MAX_BATCH: usize = 32;

/// The result of a steal operation.
///
/// # Examples
///
/// ```
/// use spanflow_lockfree::deque::{Steal, Worker};
///
/// let w = Worker::new_fifo();
/// w.push(1);
/// let s = w.stealer();
/// assert_eq!(s.steal(), Steal::Success(1));
/// assert!(s.steal().is_empty());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Steal<T> {
    /// The queue was empty at the time of stealing.
    Empty,
    /// At least one item was stolen; this is the one returned to the caller.
    Success(T),
    /// Another thread won a race; the operation should be retried.
    Retry,
}

impl<T> Steal<T> {
    /// Returns `true` if the queue was empty at the time of stealing.
    pub fn is_empty(&self) -> bool {
        matches!(self, Steal::Empty)
    }

    /// Returns `true` if an item was stolen.
    pub fn is_success(&self) -> bool {
        matches!(self, Steal::Success(_))
    }

    /// Returns `true` if the steal should be retried.
    pub fn is_retry(&self) -> bool {
        matches!(self, Steal::Retry)
    }

    /// Returns the stolen item, if any.
    ///
    /// ```
    /// use spanflow_lockfree::Steal;
    /// assert_eq!(Steal::Success(3).success(), Some(3));
    /// assert_eq!(Steal::<i32>::Retry.success(), None);
    /// ```
    pub fn success(self) -> Option<T> {
        match self {
            Steal::Success(value) => Some(value),
            _ => None,
        }
    }

    /// If this is `Empty` or `Retry`, tries `f`; a `Retry` is kept if `f` finds nothing.
    ///
    /// ```
    /// use spanflow_lockfree::Steal;
    /// assert_eq!(Steal::Empty.or_else(|| Steal::Success(1)), Steal::Success(1));
    /// assert_eq!(Steal::<i32>::Retry.or_else(|| Steal::Empty), Steal::Retry);
    /// ```
    pub fn or_else(self, f: impl FnOnce() -> Steal<T>) -> Steal<T> {
        match self {
            Steal::Empty => f(),
            Steal::Success(_) => self,
            Steal::Retry => match f() {
                Steal::Empty => Steal::Retry,
                other => other,
            },
        }
    }
}

/// Collects steals: the first `Success` wins, otherwise `Retry` if any attempt asked for it.
impl<T> FromIterator<Steal<T>> for Steal<T> {
    fn from_iter<I: IntoIterator<Item = Steal<T>>>(iter: I) -> Self {
        let mut retry = false;
        for steal in iter {
            match steal {
                Steal::Empty => {}
                Steal::Success(value) => return Steal::Success(value),
                Steal::Retry => retry = true,
            }
        }
        if retry { Steal::Retry } else { Steal::Empty }
    }
}

/// How many items to take from a queue that holds `len`: about half, at least one, at most `limit`.
pub(crate) fn batch_size(len: usize, limit: usize) -> usize {
    len.div_ceil(2).clamp(1, limit.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_collects_first_success() {
        let all: Steal<i32> = [
            Steal::Empty,
            Steal::Retry,
            Steal::Success(2),
            Steal::Success(3),
        ]
        .into_iter()
        .collect();
        assert_eq!(all, Steal::Success(2));
        let none: Steal<i32> = [Steal::Empty, Steal::Retry].into_iter().collect();
        assert!(none.is_retry());
        let empty: Steal<i32> = [Steal::Empty].into_iter().collect();
        assert!(empty.is_empty());
    }

    #[test]
    fn batch_size_is_about_half() {
        assert_eq!(batch_size(1, 32), 1);
        assert_eq!(batch_size(5, 32), 3);
        assert_eq!(batch_size(1000, 32), 32);
        assert_eq!(batch_size(10, 0), 1);
    }
}
