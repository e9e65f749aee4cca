//! `cargo xtask test`: the CI gate, one step after another, stopping at the first failure.
//!
//! Contracts with the crates it checks:
//! - loom models are the `crates/*/tests/loom_*.rs` test targets, built with
//!   `--cfg loom --cfg crossbeam_loom` in `<target dir>/loom` so the normal build stays valid;
//! - `crates/spanflow-lockfree/tests/stress.rs` honours `SPANFLOW_STRESS_SCALE=small`, which
//!   valgrind needs to finish in reasonable time, and `SPANFLOW_STRESS_SCALE=tiny`, which Miri
//!   needs; tests that Miri runs shrink themselves further under `cfg(miri)` where they must;
//! - the Miri step runs the lock-free crate's unit and integration tests (the loom models are
//!   `cfg(loom)` and compile to nothing) and the batch crate's unit tests, on the nightly
//!   toolchain through `rustup run nightly cargo miri` (the component is installed by
//!   `.ci/run`);
//! - a crate with fuzz targets provides `fuzz/smoke`, a bash script run from the crate
//!   directory that exits non-zero on failure and runs for a bounded time;
//! - every example of a crate under `crates/` runs on its own (it starts whatever receiver it
//!   needs on 127.0.0.1) and exits non-zero on failure; so does `spanflow-relay demo`;
//! - the Kafka code sits behind the `kafka` features of spanflow-export and spanflow-relay;
//!   its integration tests are `crates/spanflow-relay/tests/kafka.rs`, which start the
//!   `tansu` broker themselves (found through `TANSU` or `PATH`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;

use crate::command::Cmd;
use crate::flags::TestArgs;
use crate::workspace::Metadata;

/// The cfgs that switch the loom models on: ours (`loom`) and crossbeam-epoch's
/// (`crossbeam_loom`, which makes it use loom's atomics).
const LOOM_CFGS: [&str; 4] = ["--cfg", "loom", "--cfg", "crossbeam_loom"];
/// The lock-free stress test that valgrind checks.
const STRESS_PACKAGE: &str = "spanflow-lockfree";
const STRESS_TEST: &str = "stress";

/// The steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Fmt,
    Clippy,
    Tests,
    Doctests,
    Loom,
    Miri,
    Valgrind,
    FuzzSmoke,
    Examples,
    Kafka,
}

impl Step {
    const ALL: [Step; 10] = [
        Step::Fmt,
        Step::Clippy,
        Step::Tests,
        Step::Doctests,
        Step::Loom,
        Step::Miri,
        Step::Valgrind,
        Step::FuzzSmoke,
        Step::Examples,
        Step::Kafka,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Tests => "tests",
            Step::Doctests => "doctests",
            Step::Loom => "loom models",
            Step::Miri => "miri",
            Step::Valgrind => "valgrind",
            Step::FuzzSmoke => "fuzz smoke",
            Step::Examples => "examples",
            Step::Kafka => "kafka",
        }
    }

    /// The flag that turns this step off, if the user passed it.
    fn disabled_by(self, args: &TestArgs) -> Option<&'static str> {
        let (off, flag) = match self {
            Step::Fmt => (args.skip_fmt, "--skip-fmt"),
            Step::Clippy => (args.skip_clippy, "--skip-clippy"),
            Step::Loom => (args.no_loom, "--no-loom"),
            Step::Miri => (args.no_miri, "--no-miri"),
            Step::Valgrind => (args.no_valgrind, "--no-valgrind"),
            Step::FuzzSmoke => (args.no_fuzz, "--no-fuzz"),
            Step::Examples => (args.no_examples, "--no-examples"),
            Step::Kafka => (args.no_kafka, "--no-kafka"),
            Step::Tests | Step::Doctests => (false, ""),
        };
        off.then_some(flag)
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Passed,
    Skipped(String),
    Failed,
    NotRun,
}

#[derive(Debug)]
struct StepReport {
    step: Step,
    outcome: Outcome,
    took: Duration,
}

/// Runs every step that is not switched off, stops at the first failure, then prints a
/// summary; the error (and so the non-zero exit) is the failing step's.
pub(crate) fn run(args: &TestArgs, root: &Path) -> Result<()> {
    let mut reports = Vec::new();
    let mut failure = None;
    for step in Step::ALL {
        if failure.is_some() {
            reports.push(StepReport {
                step,
                outcome: Outcome::NotRun,
                took: Duration::ZERO,
            });
            continue;
        }
        if let Some(flag) = step.disabled_by(args) {
            reports.push(StepReport {
                step,
                outcome: Outcome::Skipped(flag.to_owned()),
                took: Duration::ZERO,
            });
            continue;
        }
        eprintln!("\n== {} ==", step.name());
        let started = Instant::now();
        let result = run_step(step, root);
        let took = started.elapsed();
        let outcome = match result {
            Ok(StepEnd::Done) => Outcome::Passed,
            Ok(StepEnd::Skipped(why)) => {
                eprintln!("note: {} skipped: {why}", step.name());
                Outcome::Skipped(why)
            }
            Err(err) => {
                failure = Some(err.context(format!("step `{}` failed", step.name())));
                Outcome::Failed
            }
        };
        reports.push(StepReport {
            step,
            outcome,
            took,
        });
    }
    eprintln!("\n{}", summary(&reports));
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

enum StepEnd {
    Done,
    Skipped(String),
}

fn run_step(step: Step, root: &Path) -> Result<StepEnd> {
    let cargo = || Cmd::cargo().current_dir(root);
    match step {
        Step::Fmt => cargo().args(["fmt", "--all", "--", "--check"]).run()?,
        Step::Clippy => return run_clippy(root),
        // `--all-targets` also builds the criterion benches in the test profile and runs each
        // benchmark once (criterion's test mode): a smoke check that they still work.
        Step::Tests => cargo()
            .args(["test", "--workspace", "--all-targets", "--locked"])
            .run()?,
        Step::Doctests => cargo()
            .args(["test", "--workspace", "--doc", "--locked"])
            .run()?,
        Step::Loom => return run_loom(root),
        Step::Miri => return run_miri(root),
        Step::Valgrind => return run_valgrind(root),
        Step::FuzzSmoke => return run_fuzz_smoke(root),
        Step::Examples => return run_examples(root),
        Step::Kafka => return run_kafka(root),
    }
    Ok(StepEnd::Done)
}

/// Feature sets of the `spanflow` facade linted on their own, besides the workspace (where the
/// relay turns every exporter feature on, so code a feature leaves out is never compiled away
/// there): the minimal build (`grpc`, the one the README's dependency count is for), the other
/// transport alone, and everything but Kafka (which the Kafka step lints, with librdkafka).
const FACADE_FEATURE_SETS: [&str; 3] = ["grpc", "http", "full"];

/// `cargo clippy` of the whole workspace, then of the facade with each of
/// [`FACADE_FEATURE_SETS`] (without its defaults), all with warnings denied.
fn run_clippy(root: &Path) -> Result<StepEnd> {
    let cargo = || Cmd::cargo().current_dir(root);
    cargo()
        .args(["clippy", "--workspace", "--all-targets", "--locked"])
        .args(["--", "-D", "warnings"])
        .run()?;
    for features in FACADE_FEATURE_SETS {
        cargo()
            .args([
                "clippy",
                "--locked",
                "-p",
                "spanflow",
                "--no-default-features",
            ])
            .args(["--features", features])
            .args(["--", "-D", "warnings"])
            .run()?;
    }
    Ok(StepEnd::Done)
}

/// The Kafka features and the test that needs a broker.
const KAFKA_FEATURES: &str = "spanflow-export/kafka,spanflow-relay/kafka";
const KAFKA_TEST: &str = "kafka";

/// Lints and tests the Kafka exporter and receiver (their features are off in the steps above,
/// so librdkafka is built only here), then runs the broker tests. Without `tansu` the step is
/// skipped with a note, except in CI (`CI` set), where a missing broker is a failure.
fn run_kafka(root: &Path) -> Result<StepEnd> {
    let tansu_found = std::env::var_os("TANSU").is_some()
        || Cmd::new("tansu").arg("--version").read_stdout().is_ok();
    if !tansu_found {
        if std::env::var_os("CI").is_some() {
            return Err(anyhow!(
                "the Kafka tests need the tansu broker on PATH (.ci/run installs it: cargo install tansu --locked --features dynostore,libsql)"
            ));
        }
        return Ok(StepEnd::Skipped(
            "tansu is not on PATH (cargo install tansu --locked --features dynostore,libsql)"
                .to_owned(),
        ));
    }
    let cargo = || Cmd::cargo().current_dir(root);
    let packages = ["-p", "spanflow-export", "-p", "spanflow-relay"];
    cargo()
        .args([
            "clippy",
            "--locked",
            "--all-targets",
            "--features",
            KAFKA_FEATURES,
        ])
        .args(packages)
        .args(["--", "-D", "warnings"])
        .run()?;
    cargo()
        .args([
            "test",
            "--locked",
            "-p",
            "spanflow-export",
            "--features",
            "kafka",
            "--lib",
        ])
        .args(["--", "kafka"])
        .run()?;
    cargo()
        .args([
            "test",
            "--locked",
            "-p",
            "spanflow-relay",
            "--features",
            "kafka",
        ])
        .args(["--test", KAFKA_TEST])
        .run()?;
    Ok(StepEnd::Done)
}

/// A loom model: the package and its `tests/loom_*.rs` target.
#[derive(Debug, PartialEq, Eq)]
struct LoomModel {
    package: String,
    test: String,
}

/// Every `crates/*/tests/loom_*.rs` test target, in member order.
fn loom_models(metadata: &Metadata, root: &Path) -> Vec<LoomModel> {
    let crates = root.join("crates");
    let mut models = Vec::new();
    for package in &metadata.packages {
        if !package.dir().starts_with(&crates) {
            continue;
        }
        let tests_dir = package.dir().join("tests");
        for target in package.targets.iter().filter(|t| t.is("test")) {
            let file = target
                .src_path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("");
            let in_tests = target.src_path.parent() == Some(tests_dir.as_path());
            if in_tests && file.starts_with("loom_") && file.ends_with(".rs") {
                models.push(LoomModel {
                    package: package.name.clone(),
                    test: target.name.clone(),
                });
            }
        }
    }
    models
}

/// The environment variable carrying the loom cfgs, appended to whatever the user set.
///
/// Cargo reads `CARGO_ENCODED_RUSTFLAGS` (flags separated by 0x1f) in preference to
/// `RUSTFLAGS`, so when the former is set the cfgs must go there or they would be ignored.
fn loom_rustflags(encoded: Option<&str>, plain: Option<&str>) -> (&'static str, String) {
    match encoded {
        Some(encoded) => {
            let mut flags: Vec<&str> = encoded.split('\x1f').filter(|f| !f.is_empty()).collect();
            flags.extend(LOOM_CFGS);
            ("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        }
        None => {
            let mut flags = plain.unwrap_or("").trim().to_owned();
            if !flags.is_empty() {
                flags.push(' ');
            }
            flags.push_str(&LOOM_CFGS.join(" "));
            ("RUSTFLAGS", flags)
        }
    }
}

fn run_loom(root: &Path) -> Result<StepEnd> {
    let metadata = Metadata::load(root)?;
    let models = loom_models(&metadata, root);
    if models.is_empty() {
        return Ok(StepEnd::Skipped(
            "no crates/*/tests/loom_*.rs found".to_owned(),
        ));
    }
    let encoded = std::env::var("CARGO_ENCODED_RUSTFLAGS").ok();
    let plain = std::env::var("RUSTFLAGS").ok();
    let (flags_var, flags) = loom_rustflags(encoded.as_deref(), plain.as_deref());
    // A separate target dir: the cfg change would otherwise invalidate the normal build.
    let target_dir = metadata.target_directory.join("loom");
    for model in &models {
        Cmd::cargo()
            .current_dir(root)
            .args([
                "test",
                "--release",
                "--locked",
                "-p",
                &model.package,
                "--test",
                &model.test,
            ])
            .env(flags_var, &flags)
            .env("LOOM_MAX_PREEMPTIONS", "2")
            .env("CARGO_TARGET_DIR", &target_dir)
            .run()?;
    }
    Ok(StepEnd::Done)
}

/// What the Miri step runs, one `cargo miri test` each: the lock-free crate's unit and
/// integration tests, the batch crate's unit tests. (The batch crate's integration tests wait on
/// real time by design, which under Miri's interpreter takes far longer than what they check.)
/// Target selectors apply to every `-p` of one cargo command, hence one command per package.
const MIRI_RUNS: [&[&str]; 2] = [
    &["-p", "spanflow-lockfree", "--lib", "--tests"],
    &["-p", "spanflow-batch", "--lib"],
];
/// Tree Borrows rather than Stacked Borrows: crossbeam-epoch breaks Stacked Borrows' rules (its
/// intrusive list retags a pointer to a field as the whole entry) but not Tree Borrows', which
/// is what crossbeam's own Miri CI uses (crossbeam-rs/crossbeam#996). Permissive provenance:
/// crossbeam-epoch tags pointers through integers. Leaks are not checked: the bags of garbage a
/// thread hands to crossbeam-epoch's global collector at exit stay queued until the process
/// ends, behind pointers stored as integers, so Miri cannot see that a static still reaches
/// them and reports every one. Our own leaks are caught elsewhere: valgrind's memcheck of the
/// stress test (a definite leak fails the step) and the drop-counting tests.
/// Everything else is Miri's default: the data race detector, alignment and
/// uninitialised-memory checks, and a random scheduler that preempts threads.
const MIRIFLAGS: &str = "-Zmiri-tree-borrows -Zmiri-permissive-provenance -Zmiri-ignore-leaks";

/// `rustup run nightly cargo`: Miri needs the nightly toolchain, whatever toolchain runs xtask.
fn nightly_cargo() -> Cmd {
    Cmd::new("rustup").args(["run", "nightly", "cargo"])
}

fn run_miri(root: &Path) -> Result<StepEnd> {
    let found = nightly_cargo().args(["miri", "--version"]).read_stdout();
    found.map(drop).map_err(|err| {
        anyhow!(
            "Miri is required for this step but is not usable ({err:#}); install it \
             (`rustup component add miri rust-src --toolchain nightly`) or pass --no-miri for a \
             local run"
        )
    })?;
    let user_flags = std::env::var("MIRIFLAGS").unwrap_or_default();
    for selection in MIRI_RUNS {
        nightly_cargo()
            .current_dir(root)
            .args(["miri", "test", "--locked"])
            .args(selection)
            .env("MIRIFLAGS", miri_flags(&user_flags))
            .env("SPANFLOW_STRESS_SCALE", "tiny")
            .run()?;
    }
    Ok(StepEnd::Done)
}

/// Ours, after whatever the user set (Miri takes the last of conflicting flags, so ours win).
fn miri_flags(user: &str) -> String {
    let user = user.trim();
    if user.is_empty() {
        MIRIFLAGS.to_owned()
    } else {
        format!("{user} {MIRIFLAGS}")
    }
}

fn run_valgrind(root: &Path) -> Result<StepEnd> {
    let stress = root
        .join("crates")
        .join(STRESS_PACKAGE)
        .join("tests")
        .join("stress.rs");
    if !stress.is_file() {
        return Ok(StepEnd::Skipped(format!(
            "{} does not exist",
            stress.display()
        )));
    }
    ensure_valgrind()?;
    let build = Cmd::cargo().current_dir(root).args([
        "test",
        "--release",
        "--locked",
        "-p",
        STRESS_PACKAGE,
        "--test",
        STRESS_TEST,
        "--no-run",
        "--message-format=json",
    ]);
    let exe = build_test_executable(&build, STRESS_TEST)?;
    Cmd::new("valgrind")
        .current_dir(root)
        .args([
            "--error-exitcode=1",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
        ])
        .arg(exe)
        .arg("--test-threads=1")
        .env("SPANFLOW_STRESS_SCALE", "small")
        .run()?;
    Ok(StepEnd::Done)
}

fn ensure_valgrind() -> Result<()> {
    let found = Cmd::new("valgrind").arg("--version").read_stdout();
    found.map(drop).map_err(|err| {
        anyhow!(
            "valgrind is required for this step but is not usable ({err:#}); install it \
             (e.g. `apt-get install valgrind`) or pass --no-valgrind for a local run"
        )
    })
}

/// One line of cargo's `--message-format=json` output, the fields xtask reads.
#[derive(Debug, Deserialize)]
struct CargoMessage {
    reason: String,
    target: Option<MessageTarget>,
    profile: Option<MessageProfile>,
    executable: Option<PathBuf>,
    message: Option<Diagnostic>,
}

#[derive(Debug, Deserialize)]
struct MessageTarget {
    name: String,
    kind: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct MessageProfile {
    test: bool,
}

#[derive(Debug, Deserialize)]
struct Diagnostic {
    rendered: Option<String>,
}

/// Runs a `--no-run --message-format=json` build and returns the test executable for
/// `test_name`. Diagnostics are re-printed as cargo would show them; cargo's status lines go
/// to stderr untouched.
fn build_test_executable(build: &Cmd, test_name: &str) -> Result<PathBuf> {
    eprintln!("$ {build}");
    let mut child = build
        .command()
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{build}`"))?;
    let stdout = child
        .stdout
        .take()
        .context("child stdout was not captured")?;
    let mut executable = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("cannot read cargo's output")?;
        if let Some(found) = handle_message(&line, test_name) {
            executable = Some(found);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{build}`"))?;
    build.check(status)?;
    executable.with_context(|| format!("`{build}` reported no executable for test `{test_name}`"))
}

/// Prints a compiler diagnostic, or returns the executable if this line announces it.
fn handle_message(line: &str, test_name: &str) -> Option<PathBuf> {
    let Ok(message) = serde_json::from_str::<CargoMessage>(line) else {
        // Not JSON (a build script printing to stdout, say): show it as it is.
        println!("{line}");
        return None;
    };
    match message.reason.as_str() {
        "compiler-message" => {
            if let Some(rendered) = message.message.and_then(|m| m.rendered) {
                eprint!("{rendered}");
            }
            None
        }
        "compiler-artifact" => {
            let target = message.target?;
            let is_test = target.kind.iter().any(|k| k == "test");
            let test_profile = message.profile.is_some_and(|p| p.test);
            (target.name == test_name && is_test && test_profile)
                .then_some(message.executable)
                .flatten()
        }
        _ => None,
    }
}

/// The crate directories holding a `fuzz/smoke` script, and the `fuzz/` directories that
/// lack one, both sorted.
fn fuzz_smoke_scripts(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let crates = root.join("crates");
    let mut scripts = Vec::new();
    let mut fuzz_dirs_without_script = Vec::new();
    let entries = match std::fs::read_dir(&crates) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((scripts, Vec::new())),
        Err(err) => return Err(err).with_context(|| format!("cannot list {}", crates.display())),
    };
    for entry in entries {
        let crate_dir = entry
            .with_context(|| format!("cannot list {}", crates.display()))?
            .path();
        let fuzz = crate_dir.join("fuzz");
        if !fuzz.is_dir() {
            continue;
        }
        if fuzz.join("smoke").is_file() {
            scripts.push(crate_dir);
        } else {
            fuzz_dirs_without_script.push(fuzz);
        }
    }
    scripts.sort();
    fuzz_dirs_without_script.sort();
    Ok((scripts, fuzz_dirs_without_script))
}

fn run_fuzz_smoke(root: &Path) -> Result<StepEnd> {
    let (crate_dirs, without_script) = fuzz_smoke_scripts(root)?;
    for fuzz in &without_script {
        eprintln!(
            "warning: {} has no `smoke` script; nothing to run there",
            fuzz.display()
        );
    }
    if crate_dirs.is_empty() {
        return Ok(StepEnd::Skipped("no crates/*/fuzz/smoke script".to_owned()));
    }
    for crate_dir in crate_dirs {
        // Run from the crate directory, where `cargo fuzz` expects to be.
        Cmd::new("bash")
            .arg("fuzz/smoke")
            .current_dir(crate_dir)
            .run()?;
    }
    Ok(StepEnd::Done)
}

/// Every example target of a workspace member under `crates/`: (package, example).
fn examples(metadata: &Metadata, root: &Path) -> Vec<(String, String)> {
    let crates = root.join("crates");
    metadata
        .packages
        .iter()
        .filter(|package| package.dir().starts_with(&crates))
        .flat_map(|package| {
            package
                .targets
                .iter()
                .filter(|t| t.is("example"))
                .map(|t| (package.name.clone(), t.name.clone()))
        })
        .collect()
}

/// Runs every example (each starts its own loopback receiver and exits non-zero on loss),
/// then the relay's demo, the README's main job, for a short time.
fn run_examples(root: &Path) -> Result<StepEnd> {
    let metadata = Metadata::load(root)?;
    for (package, example) in examples(&metadata, root) {
        Cmd::cargo()
            .current_dir(root)
            .args(["run", "--locked", "-p", &package, "--example", &example])
            .run()?;
    }
    if metadata.packages.iter().any(|p| p.name == DEMO_PACKAGE) {
        Cmd::cargo()
            .current_dir(root)
            .args(["run", "--locked", "-p", DEMO_PACKAGE, "--"])
            .args(["demo", "--duration", "3s", "--no-progress"])
            .run()?;
    }
    Ok(StepEnd::Done)
}

/// The package whose `demo` subcommand is the project's main job.
const DEMO_PACKAGE: &str = "spanflow-relay";

fn summary(reports: &[StepReport]) -> String {
    let mut out = String::from("summary:\n");
    for report in reports {
        let (tag, detail) = match &report.outcome {
            Outcome::Passed => ("PASS", format_duration(report.took)),
            Outcome::Failed => ("FAIL", format_duration(report.took)),
            Outcome::Skipped(why) if report.took.is_zero() => ("SKIP", why.clone()),
            Outcome::Skipped(why) => ("SKIP", format!("{why} ({})", format_duration(report.took))),
            Outcome::NotRun => ("----", "not run".to_owned()),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "  {tag}  {:<12} {detail}", report.step.name());
    }
    out
}

fn format_duration(took: Duration) -> String {
    let secs = took.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", took.as_secs() / 60, took.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn metadata_for(root: &Path) -> Metadata {
        let package = |name: &str, dir: &str, targets: &[(&str, &str, &str)]| {
            let targets: Vec<String> = targets
                .iter()
                .map(|(name, kind, src)| {
                    format!(
                        r#"{{"name":"{name}","kind":["{kind}"],"src_path":"{}"}}"#,
                        root.join(dir).join(src).display()
                    )
                })
                .collect();
            format!(
                r#"{{"name":"{name}","manifest_path":"{}","targets":[{}]}}"#,
                root.join(dir).join("Cargo.toml").display(),
                targets.join(",")
            )
        };
        let packages = [
            package(
                "spanflow-lockfree",
                "crates/spanflow-lockfree",
                &[
                    ("spanflow_lockfree", "lib", "src/lib.rs"),
                    ("loom_deque", "test", "tests/loom_deque.rs"),
                    ("stress", "test", "tests/stress.rs"),
                    ("loom_stack", "test", "tests/loom_stack.rs"),
                ],
            ),
            package(
                "spanflow-batch",
                "crates/spanflow-batch",
                &[("loom_budget", "test", "tests/loom_budget.rs")],
            ),
            // A loom-looking file outside crates/ or outside tests/ is not a model.
            package(
                "spanflow-benches",
                "benches",
                &[("loom_e2e", "test", "tests/loom_e2e.rs")],
            ),
            package(
                "spanflow-otlp",
                "crates/spanflow-otlp",
                &[("loom_x", "test", "other/loom_x.rs")],
            ),
        ];
        let json = format!(
            r#"{{"packages":[{}],"target_directory":"{}","workspace_members":[],"version":1}}"#,
            packages.join(","),
            root.join("target").display()
        );
        Metadata::parse(&json).unwrap()
    }

    #[test]
    fn loom_models_are_the_loom_test_files_of_crates() {
        let root = Path::new("/ws");
        let models = loom_models(&metadata_for(root), root);
        let names: Vec<(&str, &str)> = models
            .iter()
            .map(|m| (m.package.as_str(), m.test.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("spanflow-lockfree", "loom_deque"),
                ("spanflow-lockfree", "loom_stack"),
                ("spanflow-batch", "loom_budget")
            ]
        );
    }

    #[test]
    fn loom_cfgs_are_appended_to_user_rustflags() {
        assert_eq!(
            loom_rustflags(None, None),
            ("RUSTFLAGS", "--cfg loom --cfg crossbeam_loom".to_owned())
        );
        assert_eq!(
            loom_rustflags(None, Some(" -C target-cpu=native ")),
            (
                "RUSTFLAGS",
                "-C target-cpu=native --cfg loom --cfg crossbeam_loom".to_owned()
            )
        );
        assert_eq!(
            loom_rustflags(Some("-C\x1fdebuginfo=1"), Some("ignored by cargo")),
            (
                "CARGO_ENCODED_RUSTFLAGS",
                "-C\x1fdebuginfo=1\x1f--cfg\x1floom\x1f--cfg\x1fcrossbeam_loom".to_owned()
            )
        );
        assert_eq!(
            loom_rustflags(Some(""), None),
            (
                "CARGO_ENCODED_RUSTFLAGS",
                "--cfg\x1floom\x1f--cfg\x1fcrossbeam_loom".to_owned()
            )
        );
    }

    #[test]
    fn miri_flags_follow_the_users() {
        assert_eq!(miri_flags(""), MIRIFLAGS);
        assert_eq!(
            miri_flags(" -Zmiri-seed=7 "),
            format!("-Zmiri-seed=7 {MIRIFLAGS}")
        );
    }

    #[test]
    fn executable_comes_from_the_test_artifact_only() {
        let artifact = |name: &str, kind: &str, test: bool, exe: &str| {
            format!(
                r#"{{"reason":"compiler-artifact","target":{{"name":"{name}","kind":["{kind}"]}},"profile":{{"test":{test}}},"executable":{exe}}}"#
            )
        };
        let lib = artifact("spanflow_lockfree", "lib", false, "null");
        assert_eq!(handle_message(&lib, "stress"), None);
        let other = artifact("loom_deque", "test", true, r#""/t/loom_deque-1""#);
        assert_eq!(handle_message(&other, "stress"), None);
        let stress = artifact("stress", "test", true, r#""/t/stress-abc""#);
        assert_eq!(
            handle_message(&stress, "stress"),
            Some(PathBuf::from("/t/stress-abc"))
        );
        let diagnostic = r#"{"reason":"compiler-message","message":{"rendered":"warning: x\n"}}"#;
        assert_eq!(handle_message(diagnostic, "stress"), None);
        assert_eq!(handle_message("not json", "stress"), None);
        assert_eq!(
            handle_message(r#"{"reason":"build-finished","success":true}"#, "stress"),
            None
        );
    }

    #[test]
    fn fuzz_smoke_scripts_are_found_per_crate() {
        let tmp = TempDir::new();
        let root = tmp.path();
        for dir in [
            "crates/b/fuzz",
            "crates/a/fuzz",
            "crates/c/fuzz",
            "crates/d/src",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("crates/b/fuzz/smoke"), "exit 0\n").unwrap();
        std::fs::write(root.join("crates/a/fuzz/smoke"), "exit 0\n").unwrap();
        let (scripts, without) = fuzz_smoke_scripts(root).unwrap();
        assert_eq!(scripts, [root.join("crates/a"), root.join("crates/b")]);
        assert_eq!(without, [root.join("crates/c/fuzz")]);
        let (scripts, without) = fuzz_smoke_scripts(&root.join("nowhere")).unwrap();
        assert!(scripts.is_empty() && without.is_empty());
    }

    #[test]
    fn clippy_covers_the_minimal_facade_and_leaves_kafka_to_its_step() {
        assert_eq!(FACADE_FEATURE_SETS[0], "grpc");
        assert!(FACADE_FEATURE_SETS.contains(&"full"));
        assert!(FACADE_FEATURE_SETS.iter().all(|f| !f.contains("kafka")));
    }

    #[test]
    fn flags_switch_off_their_steps_only() {
        let args = TestArgs {
            no_loom: true,
            skip_fmt: true,
            ..TestArgs::default()
        };
        let off: Vec<(&str, &str)> = Step::ALL
            .iter()
            .filter_map(|s| Some((s.name(), s.disabled_by(&args)?)))
            .collect();
        assert_eq!(off, [("fmt", "--skip-fmt"), ("loom models", "--no-loom")]);
        let args = TestArgs {
            no_miri: true,
            ..TestArgs::default()
        };
        let off: Vec<&str> = Step::ALL
            .iter()
            .filter_map(|s| s.disabled_by(&args))
            .collect();
        assert_eq!(off, ["--no-miri"]);
        assert!(
            Step::ALL
                .iter()
                .all(|s| s.disabled_by(&TestArgs::default()).is_none())
        );
    }

    #[test]
    fn summary_lists_every_step_with_its_outcome() {
        let reports = [
            StepReport {
                step: Step::Fmt,
                outcome: Outcome::Skipped("--skip-fmt".into()),
                took: Duration::ZERO,
            },
            StepReport {
                step: Step::Clippy,
                outcome: Outcome::Passed,
                took: Duration::from_millis(41_250),
            },
            StepReport {
                step: Step::Tests,
                outcome: Outcome::Failed,
                took: Duration::from_secs(75),
            },
            StepReport {
                step: Step::Doctests,
                outcome: Outcome::NotRun,
                took: Duration::ZERO,
            },
        ];
        let text = summary(&reports);
        assert_eq!(
            text,
            "summary:\n  SKIP  fmt          --skip-fmt\n  PASS  clippy       41.2s\n  \
             FAIL  tests        1m15s\n  ----  doctests     not run\n"
        );
    }
}
