//! Self-metrics: one snapshot type for the spool, one per reader, one for fsync latency.

use std::time::Duration;

use crate::recovery::RecoveryReport;

/// Number of fsync latency buckets: bucket `i` counts fsyncs that took `[2^i, 2^(i+1))` µs
/// (bucket 0 also counts anything under 1 µs, the last bucket anything above ~1 s).
pub const FSYNC_BUCKETS: usize = 21;

/// How many fsyncs of segment data the spool made and how long they took.
///
/// Counts the group-commit fsyncs (`always`), the background ones (`interval`) and the one made
/// when a segment is sealed; cursor-file fsyncs are counted apart ([`Stats::cursor_syncs`]).
///
/// ```
/// use spanflow_spool::FsyncStats;
/// use std::time::Duration;
/// let mut f = FsyncStats::default();
/// f.record(Duration::from_micros(3000));
/// f.record(Duration::from_micros(500));
/// assert_eq!(f.count, 2);
/// assert_eq!(f.max, Duration::from_micros(3000));
/// assert!(f.quantile(0.99) >= Duration::from_micros(3000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsyncStats {
    /// fsyncs completed (successfully or not).
    pub count: u64,
    /// fsyncs that returned an error.
    pub errors: u64,
    /// Sum of their durations.
    pub total: Duration,
    /// The longest.
    pub max: Duration,
    /// Log2 histogram of durations in microseconds (see [`FSYNC_BUCKETS`]).
    pub buckets: [u64; FSYNC_BUCKETS],
}

impl FsyncStats {
    /// Adds one fsync that took `took`.
    pub fn record(&mut self, took: Duration) {
        self.count += 1;
        self.total += took;
        self.max = self.max.max(took);
        let us = took.as_micros().max(1);
        let bucket = (127 - us.leading_zeros()) as usize;
        self.buckets[bucket.min(FSYNC_BUCKETS - 1)] += 1;
    }

    /// Mean duration (zero when none).
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            self.total / self.count as u32
        }
    }

    /// An upper bound of the `q` quantile (`0.0..=1.0`): the top of the bucket it falls in.
    pub fn quantile(&self, q: f64) -> Duration {
        let n: u64 = self.buckets.iter().sum();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(1 << (i + 1)).min(self.max);
            }
        }
        self.max
    }
}

/// One reader's position and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderStats {
    /// The reader's name.
    pub name: String,
    /// Committed cursor: every record below it is acknowledged (or was lost/skipped).
    pub committed: u64,
    /// The committed cursor as last persisted to its cursor file.
    pub persisted: u64,
    /// The next sequence number this reader will be given.
    pub next_read: u64,
    /// Records delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Records between the committed cursor and the head (what a restart would deliver).
    pub pending_records: u64,
    /// Bytes on disk between the committed cursor and the head (headers included, approximate
    /// when the reader has acknowledged out of order).
    pub pending_bytes: u64,
    /// Records delivered since open (redeliveries after a restart included).
    pub delivered: u64,
    /// Acknowledgements accepted since open.
    pub acked: u64,
    /// Records this reader never saw because `drop_oldest` deleted them first.
    pub dropped: u64,
    /// Records pending for this reader when the spool was opened (replayed after a restart).
    pub replayed_at_open: u64,
}

/// A snapshot of the whole spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Segment files.
    pub segments: u64,
    /// Bytes of segment files on disk.
    pub bytes_on_disk: u64,
    /// Valid records in the segment files.
    pub records_on_disk: u64,
    /// The sequence number the next append gets.
    pub head: u64,
    /// Appends completed since open.
    pub appended: u64,
    /// Appends refused with `Full` since open.
    pub rejected_full: u64,
    /// Appends refused with `DiskFull` since open.
    pub rejected_disk_full: u64,
    /// Segments deleted by `drop_oldest` before every reader had passed them.
    pub segments_dropped: u64,
    /// Corrupt regions met by readers after open (those found at open are in `recovery`).
    pub corrupt_skipped_live: u64,
    /// Segment data fsyncs.
    pub fsync: FsyncStats,
    /// Cursor file fsyncs.
    pub cursor_syncs: u64,
    /// What `open` found: records replayed, bytes truncated, corrupt records skipped.
    pub recovery: RecoveryReport,
    /// Per reader, in the order given to `open`.
    pub readers: Vec<ReaderStats>,
}
