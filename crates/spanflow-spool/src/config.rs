//! The spool's serde configuration, with humane sizes (`"64MiB"`) and durations (`"100ms"`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// Smallest accepted `segment_bytes`: a segment must hold a header and a few records.
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Largest accepted `segment_bytes`: a record's length is a `u32`.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// When an append counts as done, and how often the data is fsynced.
///
/// | mode | an append completes | lost by a process crash (kill -9) | lost by a machine crash |
/// |---|---|---|---|
/// | `Always` | after an fsync covering it; every append waiting at that moment shares the fsync | nothing | nothing |
/// | `Interval` | after write(2) into the page cache; a background fsync every `fsync_interval` | nothing | up to one interval of completed appends |
/// | `Never` | after write(2); the OS writes back when it likes | nothing | anything not yet written back (typically up to 30 s on Linux) |
///
/// ```
/// use spanflow_spool::Fsync;
/// let f: Fsync = serde_json::from_str("\"always\"")?;
/// assert_eq!(f, Fsync::Always);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Complete an append only once it is on stable storage (group commit).
    Always,
    /// Complete after write(2); fsync in the background every `fsync_interval`.
    #[default]
    Interval,
    /// Complete after write(2); never fsync.
    Never,
}

/// What an append does when the disk budget (`max_bytes`) is spent.
///
/// ```
/// use spanflow_spool::WhenFull;
/// let w: WhenFull = serde_json::from_str("\"drop_oldest\"")?;
/// assert_eq!(w, WhenFull::DropOldest);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Fail the append at once with [`AppendError::Full`](crate::AppendError::Full); the caller
    /// answers "retry later" (gRPC UNAVAILABLE, HTTP 503).
    #[default]
    Backpressure,
    /// Delete the oldest segment even if some reader has not read it; each reader counts the
    /// records it lost that way ([`ReaderStats::dropped`](crate::ReaderStats::dropped)).
    DropOldest,
}

/// `[spool]`: where the durable queue lives and how it behaves.
///
/// Every field but `dir` has a default; unknown fields are an error.
///
/// ```
/// use spanflow_spool::{Fsync, SpoolConfig, WhenFull};
/// use std::time::Duration;
///
/// let config: SpoolConfig = toml::from_str(r#"
///     dir = "/var/lib/spanflow/spool"
///     max_bytes = "2GiB"
///     segment_bytes = "64MiB"
///     fsync = "always"
///     fsync_interval = "100ms"
///     when_full = "backpressure"
/// "#)?;
/// assert_eq!(config.max_bytes.0, 2 << 30);
/// assert_eq!(config.fsync, Fsync::Always);
/// assert_eq!(config.fsync_interval.0, Duration::from_millis(100));
/// assert_eq!(config.when_full, WhenFull::Backpressure);
/// assert!(toml::from_str::<SpoolConfig>("dir = \"x\"\nfsync_intervall = \"1s\"").is_err());
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the segment files, cursor files and the lock file; created if missing.
    pub dir: PathBuf,
    /// Disk budget for the segment files (default 1 GiB); at least two segments.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Size at which a segment is sealed and a new one started (default 64 MiB). Also the
    /// largest record, less 64 bytes of headers.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: ByteSize,
    /// When an append completes (default `interval`).
    #[serde(default)]
    pub fsync: Fsync,
    /// Period of the background fsync under `interval`, and of cursor persistence and segment
    /// deletion under every mode (default 100 ms).
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval: HumanDuration,
    /// What an append does when `max_bytes` is spent (default `backpressure`).
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_max_bytes() -> ByteSize {
    ByteSize(1 << 30)
}

fn default_segment_bytes() -> ByteSize {
    ByteSize(64 << 20)
}

fn default_fsync_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

impl SpoolConfig {
    /// The defaults, in `dir`.
    ///
    /// ```
    /// use spanflow_spool::{Fsync, SpoolConfig};
    /// let config = SpoolConfig { fsync: Fsync::Always, ..SpoolConfig::new("spanflow-spool") };
    /// assert_eq!(config.segment_bytes.0, 64 << 20);
    /// ```
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            fsync: Fsync::default(),
            fsync_interval: default_fsync_interval(),
            when_full: WhenFull::default(),
        }
    }

    /// The largest record payload this configuration accepts.
    pub fn max_record_bytes(&self) -> u64 {
        self.segment_bytes.0 - (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN) as u64
    }

    /// Checks the relations between fields; `open` calls it.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let seg = self.segment_bytes.0;
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&seg) {
            return Err(format!(
                "segment_bytes {} must be between {} and {}",
                self.segment_bytes,
                ByteSize(MIN_SEGMENT_BYTES),
                ByteSize(MAX_SEGMENT_BYTES)
            ));
        }
        // Two segments: the one being written and at least one that DropOldest can delete.
        if self.max_bytes.0 < 2 * seg {
            return Err(format!(
                "max_bytes {} must be at least twice segment_bytes {}",
                self.max_bytes, self.segment_bytes
            ));
        }
        if self.fsync_interval.0.is_zero() {
            return Err("fsync_interval must be positive".into());
        }
        Ok(())
    }
}

/// A byte size: a string like `"64MiB"`, `"1GB"`, `"4096"`, or an integer of bytes.
///
/// ```
/// use spanflow_spool::ByteSize;
/// assert_eq!("64MiB".parse::<ByteSize>()?, ByteSize(64 << 20));
/// assert_eq!("2 GB".parse::<ByteSize>()?, ByteSize(2_000_000_000));
/// assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s)
            .ok_or_else(|| format!("expected a byte size like 4096 or \"64MiB\", got {s:?}"))?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown byte unit `{other}`, expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("byte size {s:?} overflows u64"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrText::deserialize(d)? {
            IntOrText::Int(n) => Ok(ByteSize(n)),
            IntOrText::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration: a string like `"100ms"`, `"5s"`, `"2m"`, `"1h"`, or an integer of milliseconds.
///
/// ```
/// use spanflow_spool::HumanDuration;
/// use std::time::Duration;
/// assert_eq!("100ms".parse::<HumanDuration>()?, HumanDuration(Duration::from_millis(100)));
/// assert_eq!("2m".parse::<HumanDuration>()?, HumanDuration(Duration::from_secs(120)));
/// assert_eq!(HumanDuration(Duration::from_secs(5)).to_string(), "5s");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s)
            .ok_or_else(|| format!("expected a duration like \"100ms\" or \"5s\", got {s:?}"))?;
        let d = match unit {
            "" | "ms" => Duration::from_millis(n),
            "us" => Duration::from_micros(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            other => {
                return Err(format!(
                    "unknown duration unit `{other}`, expected us, ms, s, m or h"
                ));
            }
        };
        Ok(HumanDuration(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms > 0 && ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else if self.0.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}us", self.0.as_micros())
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrText::deserialize(d)? {
            IntOrText::Int(n) => Ok(HumanDuration(Duration::from_millis(n))),
            IntOrText::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Splits `"64MiB"` / `"100 ms"` into the leading integer and the (trimmed) unit after it.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrText {
    Int(u64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_everything_but_dir() {
        let c: SpoolConfig = serde_json::from_str(r#"{"dir": "d"}"#).unwrap();
        assert_eq!(c, SpoolConfig::new("d"));
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<SpoolConfig>("{}").is_err());
    }

    #[test]
    fn validation_names_the_bad_relation() {
        let mut c = SpoolConfig::new("d");
        c.max_bytes = ByteSize(64 << 20);
        assert!(c.validate().unwrap_err().contains("twice"));
        c.segment_bytes = ByteSize(100);
        assert!(c.validate().unwrap_err().contains("segment_bytes"));
    }

    #[test]
    fn sizes_and_durations_round_trip() {
        for s in ["1KiB", "64MiB", "3GiB", "17B"] {
            assert_eq!(s.parse::<ByteSize>().unwrap().to_string(), s);
        }
        for s in ["100ms", "5s", "250us"] {
            assert_eq!(s.parse::<HumanDuration>().unwrap().to_string(), s);
        }
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("99999999999999999999GiB".parse::<ByteSize>().is_err());
    }
}
