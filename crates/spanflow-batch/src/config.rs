//! Configuration: triggers, budget, backpressure policy, weigher, clock, and the builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::budget::Budget;
use crate::clock::{Clock, SystemClock, duration_nanos};
use crate::error::BatcherBuildError;
use crate::{Batcher, Receiver};

/// Default `max_items`: the batch size of opentelemetry_sdk's `BatchSpanProcessor`.
pub const DEFAULT_MAX_ITEMS: usize = 512;
/// Default `max_bytes`: 4 MiB, gRPC's default maximum message size, so a batch fits one request.
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Default `max_age`: one second. Shorter than the SDK's 5 s schedule so spans show up sooner;
/// under load batches are cut by count long before, so it costs nothing there.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(1);
/// Default item budget: 65 536 queued items (32 SDK-sized batches; ~22 MiB of 350-byte spans).
pub const DEFAULT_BUDGET_ITEMS: u64 = 65_536;
/// Default byte budget: 64 MiB of queued weight (binds only when a weigher is set).
pub const DEFAULT_BUDGET_BYTES: u64 = 64 * 1024 * 1024;

/// What `send` does when the budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Wait for room, at most `timeout` if given; on timeout the item is handed back
    /// ([`SendError::Timeout`](crate::SendError::Timeout)).
    Block {
        /// How long to wait at most; `None` waits until there is room or the batcher closes.
        timeout: Option<Duration>,
    },
    /// Discard the incoming item (counted in `dropped_by_reason.newest`). The default: sending
    /// never blocks the application.
    #[default]
    DropNewest,
    /// Accept the incoming item and evict the oldest queued items to make room (counted in
    /// `dropped_by_reason.oldest`). The overflowing producer does the eviction itself under the
    /// consumer-side lock, so the budget is never exceeded.
    DropOldest,
}

/// Which threads drop the items of a batch once the consumer is done with it.
///
/// With an allocator whose cross-thread frees are expensive, where each item is dropped
/// matters as much as where it is sent: glibc's `malloc` returns a block freed by another thread
/// to the allocating thread's arena under that arena's lock, so a consumer freeing what
/// producers allocated contends with their next allocations, and the producers' per-thread
/// caches never see the block again. [`DropSite::Producers`] hands the items back instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropSite {
    /// Whoever drops the [`Batch`](crate::Batch) drops its items (the consumer). The default.
    #[default]
    Consumer,
    /// A dropped [`Batch`](crate::Batch) hands its items back to the batcher, and every
    /// accepted send drops one of them on the sending thread, after releasing its shard. At
    /// most [`MAX_SPENT_BATCHES`](crate::MAX_SPENT_BATCHES) batches wait like this (beyond that
    /// the batch drops its items itself), plus the one a shard is working through. Once the
    /// consumer has had nothing to do for a second (by the batcher's clock) it drops whatever
    /// still waits, parked or in a shard, and it does so at once when it ends. So a shard whose
    /// threads stopped sending keeps up to one batch of items while other shards keep the
    /// consumer busy. A parked batch has returned its budget credit already (its items are
    /// finished): that bound, not the [`Budget`], limits the memory they hold.
    Producers,
}

/// Gives an item's weight in bytes, for the byte trigger and the byte budget.
///
/// Must be deterministic: [`Policy::DropOldest`] weighs an evicted item again to return its
/// weight to the budget. Any `Fn(&T) -> u64 + Send + Sync` closure is a `Weigh`.
pub trait Weigh<T>: Send + Sync {
    /// The item's weight in bytes.
    fn weigh(&self, item: &T) -> u64;
}

impl<T, F> Weigh<T> for F
where
    F: Fn(&T) -> u64 + Send + Sync + 'static,
{
    fn weigh(&self, item: &T) -> u64 {
        self(item)
    }
}

/// Resolved settings shared by every handle.
pub(crate) struct Config<T> {
    pub(crate) max_items: usize,
    pub(crate) max_bytes: u64,
    pub(crate) max_age: u64,
    pub(crate) policy: Policy,
    pub(crate) weigh: Option<Box<dyn Weigh<T>>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Whether the budget binds this batcher at all (otherwise leasing and credits are
    /// skipped: its items are counted nowhere).
    pub(crate) budgeted: bool,
    /// Credits a shard leases from the budget at once.
    pub(crate) lease_items: u64,
    pub(crate) lease_bytes: u64,
    pub(crate) pool_capacity: usize,
    pub(crate) drop_site: DropSite,
}

impl<T> Config<T> {
    pub(crate) fn weighted(&self) -> bool {
        self.weigh.is_some()
    }

    pub(crate) fn weight_of(&self, item: &T) -> u64 {
        match &self.weigh {
            Some(w) => w.weigh(item),
            None => 0,
        }
    }
}

/// Builds a [`Batcher`] and its [`Receiver`]; every knob has a documented default.
///
/// ```
/// use spanflow_batch::{Batcher, Policy};
/// use std::time::Duration;
///
/// let (batcher, receiver) = Batcher::<Vec<u8>>::builder()
///     .max_items(256)
///     .max_bytes(1 << 20)
///     .max_age(Duration::from_millis(200))
///     .weigh(|item: &Vec<u8>| item.len() as u64)
///     .budget_bytes(16 << 20)
///     .policy(Policy::Block { timeout: Some(Duration::from_millis(50)) })
///     .build()?;
/// # drop((batcher, receiver));
/// # Ok::<(), spanflow_batch::BatcherBuildError>(())
/// ```
pub struct BatcherBuilder<T> {
    max_items: usize,
    max_bytes: u64,
    max_age: Duration,
    policy: Policy,
    weigh: Option<Box<dyn Weigh<T>>>,
    clock: Arc<dyn Clock>,
    budget_items: Option<u64>,
    budget_bytes: Option<u64>,
    budget: Option<Arc<Budget>>,
    shards: Option<usize>,
    pool_capacity: usize,
    drop_site: DropSite,
}

impl<T> fmt::Debug for BatcherBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatcherBuilder")
            .field("max_items", &self.max_items)
            .field("max_bytes", &self.max_bytes)
            .field("max_age", &self.max_age)
            .field("policy", &self.policy)
            .field("weighted", &self.weigh.is_some())
            .field("clock", &self.clock)
            .field("budget_items", &self.budget_items)
            .field("budget_bytes", &self.budget_bytes)
            .field("budget", &self.budget)
            .field("shards", &self.shards)
            .field("pool_capacity", &self.pool_capacity)
            .field("drop_site", &self.drop_site)
            .finish()
    }
}

impl<T: Send + 'static> Default for BatcherBuilder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> BatcherBuilder<T> {
    /// A builder with the defaults: 512 items, 4 MiB, 1 s, budget 65 536 items / 64 MiB,
    /// [`Policy::DropNewest`], no weigher (every item weighs 0), [`SystemClock`].
    pub fn new() -> Self {
        Self {
            max_items: DEFAULT_MAX_ITEMS,
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: DEFAULT_MAX_AGE,
            policy: Policy::default(),
            weigh: None,
            clock: Arc::new(SystemClock::new()),
            budget_items: Some(DEFAULT_BUDGET_ITEMS),
            budget_bytes: Some(DEFAULT_BUDGET_BYTES),
            budget: None,
            shards: None,
            pool_capacity: 16,
            drop_site: DropSite::Consumer,
        }
    }

    /// A batch holds at most this many items (cut reason `Count`).
    pub fn max_items(mut self, n: usize) -> Self {
        self.max_items = n;
        self
    }

    /// A batch weighs at most this many bytes (cut reason `Bytes`), except that an item heavier
    /// than this travels alone.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// A batch is emitted no later than this after its first item arrived (cut reason `Age`),
    /// up to scheduling.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// What `send` does when the budget is full.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How to weigh an item (a closure `Fn(&T) -> u64` or a [`Weigh`] implementation).
    pub fn weigh(mut self, weigh: impl Weigh<T> + 'static) -> Self {
        self.weigh = Some(Box::new(weigh));
        self
    }

    /// The time source (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// At most this many items held at once (queued, or in batches not yet dropped; see
    /// [`Budget`]); `None` for no limit. Sets up a budget of this batcher's own; ignored when a
    /// shared one is given with [`budget`](Self::budget).
    pub fn budget_items(mut self, n: impl Into<Option<u64>>) -> Self {
        self.budget_items = n.into();
        self
    }

    /// At most this much weight held at once, like [`budget_items`](Self::budget_items);
    /// `None` for no limit. Binds only with a weigher.
    pub fn budget_bytes(mut self, n: impl Into<Option<u64>>) -> Self {
        self.budget_bytes = n.into();
        self
    }

    /// Draws on `budget`, which other batchers may share, instead of a budget of this
    /// batcher's own (`budget_items` and `budget_bytes` are then ignored). Its byte limit binds
    /// only with a weigher. A producer blocked on it ([`Policy::Block`]) is woken by credits
    /// that come back from any batcher or [`Credit`](crate::Credit) of the budget.
    ///
    /// ```
    /// use spanflow_batch::{Batcher, Budget, TrySendError};
    ///
    /// let budget = Budget::new(100);
    /// let (spans, _span_rx) = Batcher::<Vec<u8>>::builder()
    ///     .weigh(|v: &Vec<u8>| v.len() as u64)
    ///     .budget(budget.clone())
    ///     .build()?;
    /// let (requests, _request_rx) = Batcher::<Vec<u8>>::builder()
    ///     .weigh(|v: &Vec<u8>| v.len() as u64)
    ///     .budget(budget.clone())
    ///     .build()?;
    /// spans.try_send(vec![0; 70])?;
    /// assert!(matches!(requests.try_send(vec![0; 40]), Err(TrySendError::Full(_))));
    /// assert_eq!(budget.used_bytes(), 70);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Number of intake shards (default: 4 × available parallelism, rounded up to a power of
    /// two, between 4 and 64). Each thread writes to one shard chosen when it first sends.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// How many emptied batch vectors are kept for reuse (default 16).
    pub fn pool_capacity(mut self, n: usize) -> Self {
        self.pool_capacity = n;
        self
    }

    /// Which threads drop the items of finished batches (default [`DropSite::Consumer`]).
    ///
    /// ```
    /// use spanflow_batch::{Batcher, DropSite};
    ///
    /// let (batcher, mut receiver) = Batcher::<String>::builder()
    ///     .max_items(2)
    ///     .drop_site(DropSite::Producers)
    ///     .build()?;
    /// batcher.send("a".to_string())?;
    /// batcher.send("b".to_string())?;
    /// let batch = receiver.recv().expect("a full batch");
    /// drop(batch); // its two strings wait for the producers
    /// batcher.send("c".to_string())?; // drops one of them here
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drop_site(mut self, site: DropSite) -> Self {
        self.drop_site = site;
        self
    }

    /// Validates the settings and creates the producer handle and the consumer.
    pub fn build(self) -> Result<(Batcher<T>, Receiver<T>), BatcherBuildError> {
        if self.max_items == 0 {
            return Err(BatcherBuildError::ZeroMaxItems);
        }
        if self.max_bytes == 0 {
            return Err(BatcherBuildError::ZeroMaxBytes);
        }
        let weighted = self.weigh.is_some();
        let (budget, shared) = match self.budget {
            Some(budget) => (budget, true),
            None => {
                let bytes = match self.budget_bytes {
                    Some(b) if weighted => b,
                    _ => u64::MAX,
                };
                let items = self.budget_items.unwrap_or(u64::MAX);
                (Budget::with_items(items, bytes), false)
            }
        };
        if budget.limit_items() == 0 {
            return Err(BatcherBuildError::ZeroBudget);
        }
        let shards = match self.shards {
            Some(n) if (1..=1024).contains(&n) => n.next_power_of_two(),
            Some(n) => return Err(BatcherBuildError::Shards(n)),
            None => {
                let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
                (cpus * 4).next_power_of_two().clamp(4, 64)
            }
        };
        let (budget_items, budget_bytes) = (budget.limit_items(), budget.limit_bytes());
        // A shared budget counts the weights of every batcher on it (its `used_bytes`), even
        // when nothing limits them; a budget of the batcher's own is skipped when it binds
        // nothing, which saves the leases.
        let budgeted =
            budget_items != u64::MAX || (weighted && (budget_bytes != u64::MAX || shared));
        // A quarter of the budget spread over the shards, so stranded leases are rare and small.
        let spread = 4 * shards as u64;
        let lease_items = (budget_items / spread).clamp(1, 64);
        let lease_bytes = (budget_bytes / spread).clamp(1, 1 << 20);
        let config = Config {
            max_items: self.max_items,
            max_bytes: self.max_bytes,
            max_age: duration_nanos(self.max_age),
            policy: self.policy,
            weigh: self.weigh,
            clock: self.clock,
            budgeted,
            lease_items,
            lease_bytes,
            pool_capacity: self.pool_capacity,
            drop_site: self.drop_site,
        };
        Ok(crate::intake::new_pair(config, shards, budget))
    }
}
