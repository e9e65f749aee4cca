//! Errors, one enum per operation, one variant per thing a caller can act on.

use std::io;
use std::path::PathBuf;

/// [`Spool::open`](crate::Spool::open) failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is inconsistent (e.g. `max_bytes` below two segments).
    #[error("invalid spool config: {0}")]
    Config(String),
    /// A reader name is empty, too long, or not made of `[A-Za-z0-9_.-]`, or is repeated.
    #[error(
        "invalid reader name {0:?}: expected 1 to 64 of [A-Za-z0-9_.-], not starting with '.', each name once"
    )]
    ReaderName(String),
    /// Another `Spool` (in this or another process) has the directory open.
    #[error("spool directory is in use: {path} is locked by another open spool")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// Reading, writing or listing a file failed.
    #[error("i/o error on {path}{}", at(*offset))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Where in the file, when it matters.
        offset: Option<u64>,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// An append did not become durable; the caller still owns the record (retry or refuse it).
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The disk budget (`max_bytes`) is spent and `when_full = "backpressure"` (or nothing could
    /// be dropped). Answer "retry later"; readers acknowledging records frees space.
    #[error("spool is full: its {max_bytes}-byte budget is spent")]
    Full {
        /// The configured budget.
        max_bytes: u64,
    },
    /// The file system is full (ENOSPC) or over quota (EDQUOT). Nothing of the record stays on
    /// disk, and a later append tries again; treat it like [`AppendError::Full`].
    #[error("disk full writing {path} at offset {offset}")]
    DiskFull {
        /// The segment file.
        path: PathBuf,
        /// Where the write started.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The record is larger than a segment can hold (`segment_bytes` less 64 bytes).
    #[error("record of {len} bytes exceeds the largest record of {max} bytes")]
    TooLarge {
        /// The record's length.
        len: u64,
        /// The largest accepted length.
        max: u64,
    },
    /// The spool is closed (or its writer stopped).
    #[error("spool is closed")]
    Closed,
    /// Writing or fsyncing failed for another reason. The record may or may not be on disk
    /// (after a failed fsync nobody knows): it may be delivered later, so a retry can duplicate.
    #[error("i/o error on {path} at offset {offset}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// Where the write started.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl AppendError {
    /// Whether the caller should answer with retryable backpressure (`Full` or `DiskFull`).
    ///
    /// ```
    /// use spanflow_spool::AppendError;
    /// assert!(AppendError::Full { max_bytes: 1 }.is_backpressure());
    /// assert!(!AppendError::Closed.is_backpressure());
    /// ```
    pub fn is_backpressure(&self) -> bool {
        matches!(
            self,
            AppendError::Full { .. } | AppendError::DiskFull { .. }
        )
    }
}

/// A read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The spool is closed.
    #[error("spool is closed")]
    Closed,
    /// Reading a segment failed.
    #[error("i/o error reading {path} at offset {offset}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// Where the read started.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// An acknowledgement named a record that this reader has not been given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AckError {
    /// `seq` was never delivered to this reader (or not since the last restart).
    #[error("record {seq} was not delivered to reader {reader:?}")]
    NotDelivered {
        /// The reader.
        reader: String,
        /// The sequence number acknowledged.
        seq: u64,
    },
}

/// [`Spool::reader`](crate::Spool::reader) was given a name not passed to `open`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no reader named {0:?} was given to Spool::open")]
pub struct UnknownReader(pub String);

/// [`Spool::close`](crate::Spool::close) could not make everything durable.
#[derive(Debug, thiserror::Error)]
#[error("closing the spool: i/o error on {path}")]
pub struct CloseError {
    /// The file.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

fn at(offset: Option<u64>) -> String {
    offset
        .map(|o| format!(" at offset {o}"))
        .unwrap_or_default()
}

/// Whether an I/O error means "no space": ENOSPC or EDQUOT.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
