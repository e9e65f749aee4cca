//! Facts about the machine and the checkout, printed at the top of the benchmark report.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::command::Cmd;

/// What a reader needs to judge the numbers: where and when they were produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MachineFacts {
    pub(crate) cores: String,
    pub(crate) cpu: String,
    pub(crate) date: String,
    pub(crate) commit: String,
    pub(crate) rustc: String,
}

impl MachineFacts {
    /// Gathers the facts; any that cannot be found reads "unknown" rather than failing the
    /// report.
    pub(crate) fn gather(root: &Path) -> Self {
        let unknown = || "unknown".to_owned();
        let cores = std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| unknown());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| cpu_model(&info))
            .unwrap_or_else(unknown);
        let date = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| utc_minute(since.as_secs()))
            .unwrap_or_else(|_| unknown());
        let commit = git_commit(root).unwrap_or_else(|| "unknown (no commit yet)".to_owned());
        let rustc = Cmd::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .arg("--version")
            .read_stdout()
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| unknown());
        Self {
            cores,
            cpu,
            date,
            commit,
            rustc,
        }
    }
}

/// The short HEAD hash, with "(uncommitted changes)" when the tree is dirty.
fn git_commit(root: &Path) -> Option<String> {
    let git = || Cmd::new("git").current_dir(root);
    let hash = git()
        .args(["rev-parse", "--short", "HEAD"])
        .read_stdout()
        .ok()?;
    let dirty = git()
        .args(["status", "--porcelain", "--untracked-files=no"])
        .read_stdout()
        .is_ok_and(|s| !s.trim().is_empty());
    let hash = hash.trim();
    Some(if dirty {
        format!("{hash} (uncommitted changes)")
    } else {
        hash.to_owned()
    })
}

/// The first "model name" in /proc/cpuinfo.
pub(crate) fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc_minute(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`,
/// restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // March-based
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_minute_formats_known_instants() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 is a leap day in a century year.
        assert_eq!(
            utc_minute(951_782_400 + 3_600 + 120),
            "2000-02-29 01:02 UTC"
        );
        assert_eq!(utc_minute(1_735_689_599), "2024-12-31 23:59 UTC");
        assert_eq!(utc_minute(1_795_000_000), "2026-11-18 11:06 UTC");
    }

    #[test]
    fn cpu_model_reads_the_first_model_name() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) \
                    CPU @ 2.20GHz\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(
            cpu_model(info).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
    }
}
