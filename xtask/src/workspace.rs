//! What xtask needs to know about the workspace, from `cargo metadata --no-deps`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::command::Cmd;

/// The part of `cargo metadata --format-version 1 --no-deps` xtask reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Metadata {
    /// Workspace members, in the order of `[workspace] members`.
    pub(crate) packages: Vec<Package>,
    /// The target directory cargo uses, honouring `CARGO_TARGET_DIR` and `build.target-dir`.
    pub(crate) target_directory: PathBuf,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Package {
    pub(crate) name: String,
    pub(crate) manifest_path: PathBuf,
    pub(crate) targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) kind: Vec<String>,
    pub(crate) src_path: PathBuf,
    /// `required-features`: cargo skips the target (and refuses `--bench <it>`) without them.
    #[serde(default, rename = "required-features")]
    pub(crate) required_features: Vec<String>,
}

impl Target {
    pub(crate) fn is(&self, kind: &str) -> bool {
        self.kind.iter().any(|k| k == kind)
    }
}

impl Package {
    /// The directory holding this package's Cargo.toml.
    pub(crate) fn dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("."))
    }

    /// This package's bench targets.
    pub(crate) fn benches(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.is("bench"))
    }
}

impl Metadata {
    /// Runs `cargo metadata` in `root`; it reads manifests only, builds nothing.
    pub(crate) fn load(root: &Path) -> Result<Self> {
        let json = Cmd::cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(root)
            .read_stdout()
            .context("cannot read the workspace layout")?;
        Self::parse(&json)
    }

    pub(crate) fn parse(json: &str) -> Result<Self> {
        serde_json::from_str(json).context("cannot parse `cargo metadata` output")
    }

    /// Criterion's output directory: `$CRITERION_HOME` when set (criterion's own rule), else
    /// `<target dir>/criterion`.
    pub(crate) fn criterion_dir(&self) -> PathBuf {
        match std::env::var_os("CRITERION_HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home),
            _ => self.target_directory.join("criterion"),
        }
    }
}
