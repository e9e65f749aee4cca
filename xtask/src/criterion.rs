//! Reading criterion's own output: `<criterion dir>/**/new/{benchmark,estimates}.json`, and
//! the package attribution xtask keeps beside it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The file, inside criterion's directory, where xtask remembers which package and bench
/// target produced each group (criterion itself does not record it).
pub(crate) const PACKAGE_MAP_FILE: &str = "spanflow-packages.json";

/// One benchmark's latest result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurement {
    pub(crate) group_id: String,
    pub(crate) function_id: Option<String>,
    pub(crate) value_str: Option<String>,
    /// Median time per iteration, in nanoseconds.
    pub(crate) median_ns: f64,
}

/// `benchmark.json`: criterion's identity of the benchmark.
#[derive(Debug, Deserialize)]
struct BenchmarkRecord {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
}

/// `estimates.json`: criterion's statistics, of which the report uses the median.
#[derive(Debug, Deserialize)]
struct EstimatesRecord {
    median: Estimate,
}

#[derive(Debug, Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// Every `new/benchmark.json` under `dir` (criterion keeps the latest run in `new/`, the
/// previous one in `base/`); empty when `dir` does not exist yet.
pub(crate) fn benchmark_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    if dir.is_dir() {
        walk(dir, &mut found)?;
    }
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if file_type.is_dir() {
            walk(&path, found)?;
        } else if entry.file_name() == "benchmark.json"
            && dir.file_name().is_some_and(|name| name == "new")
        {
            found.push(path);
        }
    }
    Ok(())
}

/// The group id recorded in one `benchmark.json`.
pub(crate) fn group_of(benchmark_json: &Path) -> Result<String> {
    Ok(read_json::<BenchmarkRecord>(benchmark_json)?.group_id)
}

/// Every measurement under `dir`, sorted by group, function and value.
pub(crate) fn load_measurements(dir: &Path) -> Result<Vec<Measurement>> {
    let mut measurements = Vec::new();
    for benchmark_json in benchmark_files(dir)? {
        let record: BenchmarkRecord = read_json(&benchmark_json)?;
        let estimates: EstimatesRecord =
            read_json(&benchmark_json.with_file_name("estimates.json"))?;
        measurements.push(Measurement {
            group_id: record.group_id,
            function_id: record.function_id,
            value_str: record.value_str,
            median_ns: estimates.median.point_estimate,
        });
    }
    measurements.sort_by(|a, b| {
        (&a.group_id, &a.function_id, &a.value_str).cmp(&(
            &b.group_id,
            &b.function_id,
            &b.value_str,
        ))
    });
    Ok(measurements)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
}

/// When each `new/benchmark.json` was last written; compared before and after a bench run to
/// learn which groups that run produced, whether the group is new or re-measured.
pub(crate) type Snapshot = HashMap<PathBuf, SystemTime>;

pub(crate) fn snapshot(dir: &Path) -> Result<Snapshot> {
    let mut snapshot = Snapshot::new();
    for path in benchmark_files(dir)? {
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .with_context(|| format!("cannot stat {}", path.display()))?;
        snapshot.insert(path, modified);
    }
    Ok(snapshot)
}

/// Files that are new in `after` or were rewritten since `before`.
pub(crate) fn changed(before: &Snapshot, after: &Snapshot) -> Vec<PathBuf> {
    let mut changed: Vec<PathBuf> = after
        .iter()
        .filter(|(path, modified)| before.get(*path) != Some(modified))
        .map(|(path, _)| path.clone())
        .collect();
    changed.sort();
    changed
}

/// Where a group's numbers came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Origin {
    pub(crate) package: String,
    pub(crate) bench: String,
    /// Measured with `cargo xtask bench --quick` (short, noisier).
    pub(crate) quick: bool,
}

/// Group id → origin, persisted as [`PACKAGE_MAP_FILE`] so `bench-report` and partial runs
/// keep the attribution of groups measured earlier.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PackageMap {
    pub(crate) groups: BTreeMap<String, Origin>,
}

impl PackageMap {
    /// Loads the map from criterion's directory; empty when the file does not exist.
    pub(crate) fn load(criterion_dir: &Path) -> Result<Self> {
        let path = criterion_dir.join(PACKAGE_MAP_FILE);
        if !path.exists() {
            return Ok(Self::default());
        }
        read_json(&path)
    }

    pub(crate) fn save(&self, criterion_dir: &Path) -> Result<()> {
        let path = criterion_dir.join(PACKAGE_MAP_FILE);
        std::fs::create_dir_all(criterion_dir)
            .with_context(|| format!("cannot create {}", criterion_dir.display()))?;
        let json =
            serde_json::to_string_pretty(self).context("cannot serialise the package map")?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub(crate) fn package_of(&self, group_id: &str) -> Option<&Origin> {
        self.groups.get(group_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{TempDir, fixture_criterion_dir};

    #[test]
    fn loads_every_new_measurement_and_ignores_base() {
        let measurements = load_measurements(&fixture_criterion_dir()).unwrap();
        let ids: Vec<String> = measurements
            .iter()
            .map(|m| {
                format!(
                    "{}|{}|{}",
                    m.group_id,
                    m.function_id.as_deref().unwrap_or("-"),
                    m.value_str.as_deref().unwrap_or("-")
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                "batch/flush_by_count|crossbeam_channel|1024",
                "batch/flush_by_count|crossbeam_channel|64",
                "batch/flush_by_count|spanflow|1024",
                "batch/flush_by_count|spanflow|64",
                "batch/flush_by_count|sync_channel|64",
                "deque/push_pop_256|crossbeam|-",
                "deque/push_pop_256|mutex_vec|-",
                "deque/push_pop_256|spanflow|-",
                "otlp/encode_span|prost|-",
            ]
        );
        let spanflow_deque = &measurements[7];
        // The fixture's base/ holds 9999 ns; new/ holds the latest median.
        assert_eq!(spanflow_deque.median_ns, 1234.5);
    }

    #[test]
    fn missing_criterion_dir_has_no_measurements() {
        let tmp = TempDir::new();
        assert!(
            load_measurements(&tmp.path().join("criterion"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn corrupt_estimates_name_the_file() {
        let tmp = TempDir::new();
        let new = tmp.path().join("g/f/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"g","function_id":"f"}"#,
        )
        .unwrap();
        std::fs::write(new.join("estimates.json"), "{").unwrap();
        let err = load_measurements(tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("estimates.json"), "{err:#}");
    }

    #[test]
    fn snapshot_diff_finds_new_and_rewritten_files() {
        let tmp = TempDir::new();
        let write = |group: &str| {
            let new = tmp.path().join(group).join("spanflow/new");
            std::fs::create_dir_all(&new).unwrap();
            std::fs::write(
                new.join("benchmark.json"),
                format!(r#"{{"group_id":"{group}"}}"#),
            )
            .unwrap();
            new.join("benchmark.json")
        };
        let kept = write("kept");
        let rewritten = write("rewritten");
        let before = snapshot(tmp.path()).unwrap();
        // Make the rewrite visible even on file systems with coarse timestamps.
        let file = std::fs::File::options()
            .write(true)
            .open(&rewritten)
            .unwrap();
        file.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let added = write("added");
        let after = snapshot(tmp.path()).unwrap();
        let changed = changed(&before, &after);
        assert_eq!(changed, {
            let mut expected = vec![added, rewritten];
            expected.sort();
            expected
        });
        assert!(!changed.contains(&kept));
        assert_eq!(group_of(&changed[0]).unwrap(), "added");
    }

    #[test]
    fn package_map_round_trips_through_its_file() {
        let tmp = TempDir::new();
        let dir = tmp.path().join("criterion");
        assert_eq!(PackageMap::load(&dir).unwrap(), PackageMap::default());
        let mut map = PackageMap::default();
        let origin = Origin {
            package: "spanflow-lockfree".into(),
            bench: "deque".into(),
            quick: true,
        };
        map.groups
            .insert("deque/push_pop_256".into(), origin.clone());
        map.save(&dir).unwrap();
        let loaded = PackageMap::load(&dir).unwrap();
        assert_eq!(loaded, map);
        assert_eq!(loaded.package_of("deque/push_pop_256"), Some(&origin));
    }
}
