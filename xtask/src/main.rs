//! spanflow's project automation, reached through `cargo xtask` (the alias lives in
//! `.cargo/config.toml`).
//!
//! It replaces shell scripts so that CI and people run the same commands:
//!
//! - `cargo xtask test` is the whole gate CI runs: fmt, clippy, tests, doctests, the loom
//!   models, valgrind over the lock-free stress test and the fuzz smoke scripts;
//! - `cargo xtask bench` runs every criterion bench target, then writes `docs/BENCHMARKS.md`
//!   and `docs/benchmarks.svg` from criterion's own estimates;
//! - `cargo xtask bench-report` rewrites those two files from the criterion output already on
//!   disk, without running anything.
//!
//! xtask sits outside the library layering: it depends on no spanflow crate and only drives
//! `cargo`, so it keeps working while the crates it checks are broken.

mod bench;
mod command;
mod criterion;
mod flags;
mod machine;
mod report;
mod test_suite;
#[cfg(test)]
mod test_support;
mod workspace;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

fn main() -> ExitCode {
    match run(flags::Xtask::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line with the whole context chain; a backtrace of xtask itself would only
            // bury the failing command.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: flags::Xtask) -> Result<()> {
    let root = project_root();
    match flags.command {
        flags::Command::Test(args) => test_suite::run(&args, &root),
        flags::Command::Bench(args) => bench::run(&args, &root),
        flags::Command::BenchReport(args) => bench::report_only(&args, &root),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
///
/// `cargo run` sets `CARGO_MANIFEST_DIR` for the process; the compile-time value is the
/// fallback for a binary started by hand.
fn project_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}
