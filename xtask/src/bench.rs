//! `cargo xtask bench` and `cargo xtask bench-report`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::command::Cmd;
use crate::criterion::{self, Origin, PackageMap};
use crate::flags::{BenchArgs, ReportArgs};
use crate::machine::MachineFacts;
use crate::report;
use crate::workspace::Metadata;

/// Criterion arguments for `--quick`. Criterion applies them as defaults, so a group that
/// sets its own `sample_size`/`measurement_time` keeps its values; 10 is criterion's minimum
/// sample size.
const QUICK_ARGS: [&str; 6] = [
    "--warm-up-time",
    "0.3",
    "--measurement-time",
    "1",
    "--sample-size",
    "10",
];

/// One `cargo bench -p <package> --bench <bench> [--features <features>]` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BenchTarget {
    package: String,
    bench: String,
    /// Comma-separated; empty for none.
    features: String,
}

/// Bench targets that run a second time with extra features; the build with the features
/// names its criterion groups differently, so both runs appear in the report.
const EXTRA_RUNS: &[(&str, &str, &str)] = &[("spanflow-benches", "e2e", "mimalloc")];

/// The bench targets of the requested packages (all members with benches when none is
/// named), in member order.
fn select_targets(metadata: &Metadata, requested: &[String]) -> Result<Vec<BenchTarget>> {
    let with_benches: Vec<&str> = metadata
        .packages
        .iter()
        .filter(|p| p.benches().next().is_some())
        .map(|p| p.name.as_str())
        .collect();
    for name in requested {
        if !with_benches.contains(&name.as_str()) {
            bail!(
                "package `{name}` has no bench target; packages with benches: {}",
                if with_benches.is_empty() {
                    "none".to_owned()
                } else {
                    with_benches.join(", ")
                }
            );
        }
    }
    let targets = metadata
        .packages
        .iter()
        .filter(|p| requested.is_empty() || requested.contains(&p.name))
        .flat_map(|p| {
            p.benches().flat_map(|bench| {
                // A target with `required-features` (the Kafka bench) runs with them: cargo
                // would refuse `--bench` without.
                let plain = BenchTarget {
                    package: p.name.clone(),
                    bench: bench.name.clone(),
                    features: bench.required_features.join(","),
                };
                let extra = EXTRA_RUNS
                    .iter()
                    .filter(|(package, b, _)| *package == p.name && *b == bench.name)
                    .map(|(_, _, features)| BenchTarget {
                        features: [plain.features.as_str(), features]
                            .into_iter()
                            .filter(|f| !f.is_empty())
                            .collect::<Vec<_>>()
                            .join(","),
                        ..plain.clone()
                    });
                std::iter::once(plain.clone())
                    .chain(extra)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    Ok(targets)
}

pub(crate) fn run(args: &BenchArgs, root: &Path) -> Result<()> {
    let metadata = Metadata::load(root)?;
    let targets = select_targets(&metadata, &args.packages)?;
    if targets.is_empty() {
        bail!("no workspace member has a bench target");
    }
    let criterion_dir = metadata.criterion_dir();
    let mut packages = PackageMap::load(&criterion_dir)?;

    let bar = ProgressBar::new(targets.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8.cyan.bold} [{bar:30}] {pos}/{len} {wide_msg}")
            .context("invalid progress bar template")?
            .progress_chars("=> "),
    );
    bar.set_prefix("bench");
    for (index, target) in targets.iter().enumerate() {
        bar.set_message(format!("{} --bench {}", target.package, target.bench));
        let mut cmd = Cmd::cargo().current_dir(root).args([
            "bench",
            "--locked",
            "-p",
            &target.package,
            "--bench",
            &target.bench,
        ]);
        if !target.features.is_empty() {
            cmd = cmd.args(["--features", &target.features]);
        }
        if args.quick {
            cmd = cmd.arg("--").args(QUICK_ARGS);
        }
        let before = criterion::snapshot(&criterion_dir)?;
        bar.suspend(|| eprintln!("[{}/{}] $ {cmd}", index + 1, targets.len()));
        let outcome = run_under_bar(&bar, &cmd);
        // Attribute what was measured even when the run failed part-way.
        let after = criterion::snapshot(&criterion_dir)?;
        for path in criterion::changed(&before, &after) {
            let group = criterion::group_of(&path)?;
            let origin = Origin {
                package: target.package.clone(),
                bench: target.bench.clone(),
                quick: args.quick,
            };
            packages.groups.insert(group, origin);
        }
        packages.save(&criterion_dir)?;
        if let Err(err) = outcome {
            bar.abandon();
            return Err(err);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_report(
        root,
        &criterion_dir,
        &root.join("docs"),
        &member_order(&metadata),
    )
}

/// Runs `cmd` with its output piped and re-printed line by line above the progress bar, so
/// the bar stays intact while cargo and criterion still stream.
fn run_under_bar(bar: &ProgressBar, cmd: &Cmd) -> Result<()> {
    let mut child = cmd
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{cmd}`"))?;
    let stdout = child
        .stdout
        .take()
        .context("child stdout was not captured")?;
    let stderr = child
        .stderr
        .take()
        .context("child stderr was not captured")?;
    let err_bar = bar.clone();
    let stderr_thread = std::thread::spawn(move || forward(stderr, &err_bar, Stream::Stderr));
    forward(stdout, bar, Stream::Stdout);
    // The reader thread only forwards lines; if it panicked the output is incomplete, not
    // wrong, so the exit status below still decides.
    let _ = stderr_thread.join();
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{cmd}`"))?;
    cmd.check(status)
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

fn forward(from: impl Read, bar: &ProgressBar, to: Stream) {
    for line in BufReader::new(from).lines() {
        let Ok(line) = line else { break };
        bar.suspend(|| match to {
            Stream::Stdout => println!("{line}"),
            Stream::Stderr => eprintln!("{line}"),
        });
    }
}

pub(crate) fn report_only(args: &ReportArgs, root: &Path) -> Result<()> {
    // The workspace layout only orders the sections and locates criterion's directory;
    // without it (a broken manifest, say) the report still works from explicit paths.
    let metadata = Metadata::load(root);
    let criterion_dir = match (&args.criterion_dir, &metadata) {
        (Some(dir), _) => dir.clone(),
        (None, Ok(metadata)) => metadata.criterion_dir(),
        (None, Err(err)) => {
            bail!("{err:#}\n(pass --criterion-dir to name criterion's directory explicitly)")
        }
    };
    let out_dir = args.out_dir.clone().unwrap_or_else(|| root.join("docs"));
    let order = metadata.map(|m| member_order(&m)).unwrap_or_default();
    write_report(root, &criterion_dir, &out_dir, &order)
}

fn member_order(metadata: &Metadata) -> Vec<String> {
    metadata.packages.iter().map(|p| p.name.clone()).collect()
}

/// Reads criterion's output and the package map, writes both report files into `out_dir`.
fn write_report(
    root: &Path,
    criterion_dir: &Path,
    out_dir: &Path,
    member_order: &[String],
) -> Result<()> {
    let measurements = criterion::load_measurements(criterion_dir)?;
    let packages = PackageMap::load(criterion_dir)?;
    let sections = report::sections(&measurements, &packages, member_order);
    report::write_report(out_dir, &MachineFacts::gather(root), &sections)?;
    eprintln!(
        "wrote BENCHMARKS.md and benchmarks.svg in {} ({} benchmarks from {})",
        out_dir.display(),
        measurements.len(),
        criterion_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> Metadata {
        let package = |name: &str, benches: &[&str]| {
            let mut targets = vec![format!(
                r#"{{"name":"{name}","kind":["lib"],"src_path":"/ws/{name}/src/lib.rs"}}"#
            )];
            targets.extend(benches.iter().map(|b| {
                format!(
                    r#"{{"name":"{b}","kind":["bench"],"src_path":"/ws/{name}/benches/{b}.rs"}}"#
                )
            }));
            format!(
                r#"{{"name":"{name}","manifest_path":"/ws/{name}/Cargo.toml","targets":[{}]}}"#,
                targets.join(",")
            )
        };
        let packages = [
            package("spanflow-lockfree", &["deque", "stack"]),
            package("spanflow-relay", &[]),
            package("spanflow-benches", &["e2e"]),
        ];
        Metadata::parse(&format!(
            r#"{{"packages":[{}],"target_directory":"/ws/target"}}"#,
            packages.join(",")
        ))
        .unwrap()
    }

    fn pairs(targets: &[BenchTarget]) -> Vec<(&str, &str)> {
        targets
            .iter()
            .map(|t| (t.package.as_str(), t.bench.as_str()))
            .collect()
    }

    #[test]
    fn default_selection_is_every_bench_target_in_member_order() {
        let targets = select_targets(&metadata(), &[]).unwrap();
        assert_eq!(
            pairs(&targets),
            [
                ("spanflow-lockfree", "deque"),
                ("spanflow-lockfree", "stack"),
                ("spanflow-benches", "e2e"),
                ("spanflow-benches", "e2e")
            ]
        );
        // The second e2e run is the mimalloc build.
        let features: Vec<_> = targets.iter().map(|t| t.features.as_str()).collect();
        assert_eq!(features, ["", "", "", "mimalloc"]);
    }

    #[test]
    fn a_bench_with_required_features_runs_with_them() {
        let metadata = Metadata::parse(
            r#"{"packages":[{"name":"spanflow-relay","manifest_path":"/ws/relay/Cargo.toml",
                "targets":[
                  {"name":"relay","kind":["bench"],"src_path":"/ws/relay/benches/relay.rs"},
                  {"name":"kafka","kind":["bench"],"src_path":"/ws/relay/benches/kafka.rs",
                   "required-features":["kafka"]}]}],
               "target_directory":"/ws/target"}"#,
        )
        .unwrap();
        let targets = select_targets(&metadata, &[]).unwrap();
        let runs: Vec<_> = targets
            .iter()
            .map(|t| (t.bench.as_str(), t.features.as_str()))
            .collect();
        assert_eq!(runs, [("relay", ""), ("kafka", "kafka")]);
    }

    #[test]
    fn named_packages_keep_member_order() {
        let requested = [
            "spanflow-benches".to_owned(),
            "spanflow-lockfree".to_owned(),
        ];
        let targets = select_targets(&metadata(), &requested).unwrap();
        assert_eq!(targets.len(), 4);
        assert_eq!(targets[0].package, "spanflow-lockfree");
    }

    #[test]
    fn package_without_benches_is_an_error_listing_the_choices() {
        let err = select_targets(&metadata(), &["spanflow-relay".to_owned()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "package `spanflow-relay` has no bench target; packages with benches: \
             spanflow-lockfree, spanflow-benches"
        );
    }
}
