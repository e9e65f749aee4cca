//! The command line, parsed with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// spanflow project automation: the CI gate and the benchmark report.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
pub(crate) struct Xtask {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the CI gate in order, stopping at the first failure: fmt, clippy, tests, doctests,
    /// loom models, Miri, valgrind memcheck of the lock-free stress test, fuzz smoke scripts,
    /// examples.
    Test(TestArgs),
    /// Run the criterion benches (one `cargo bench -p P --bench B` per bench target), then
    /// write docs/BENCHMARKS.md and docs/benchmarks.svg.
    Bench(BenchArgs),
    /// Rewrite docs/BENCHMARKS.md and docs/benchmarks.svg from the criterion output already on
    /// disk, without running any benchmark.
    BenchReport(ReportArgs),
}

/// Flags of `cargo xtask test`; CI passes none of them.
#[derive(Debug, Default, Args)]
pub(crate) struct TestArgs {
    /// Skip the loom models (step 5).
    #[arg(long)]
    pub(crate) no_loom: bool,
    /// Skip the Miri run of the lock-free and batch tests (step 6).
    #[arg(long)]
    pub(crate) no_miri: bool,
    /// Skip the valgrind memcheck of the lock-free stress test (step 7).
    #[arg(long)]
    pub(crate) no_valgrind: bool,
    /// Skip the fuzz smoke scripts (step 8).
    #[arg(long)]
    pub(crate) no_fuzz: bool,
    /// Skip running the examples and the relay demo (step 9).
    #[arg(long)]
    pub(crate) no_examples: bool,
    /// Skip the Kafka lints and broker tests (step 10).
    #[arg(long)]
    pub(crate) no_kafka: bool,
    /// Skip `cargo fmt --check` (step 1).
    #[arg(long)]
    pub(crate) skip_fmt: bool,
    /// Skip `cargo clippy` (step 2): of the workspace, and of the `spanflow` facade with its
    /// minimal, HTTP-only and full feature sets.
    #[arg(long)]
    pub(crate) skip_clippy: bool,
}

/// Flags of `cargo xtask bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Short measurements (criterion `--warm-up-time 0.3 --measurement-time 1
    /// --sample-size 10`); groups that set their own times keep them. Results are noisier
    /// and marked "quick" in the report.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Packages to benchmark (default: every workspace member with a bench target).
    #[arg(value_name = "PACKAGE")]
    pub(crate) packages: Vec<String>,
}

/// Flags of `cargo xtask bench-report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Criterion's output directory (default: $CRITERION_HOME, else criterion/ in the target directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) criterion_dir: Option<PathBuf>,
    /// Where BENCHMARKS.md and benchmarks.svg are written (default: docs/ in the workspace).
    #[arg(long, value_name = "DIR")]
    pub(crate) out_dir: Option<PathBuf>,
}
