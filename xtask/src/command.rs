//! Child processes: printed before they run, output streamed, failures turned into errors.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

/// A command line to run, kept as data so it can be printed exactly as it runs.
///
/// The child inherits xtask's whole environment; `env` only adds or overrides variables, so a
/// `CARGO_TARGET_DIR` the user set reaches the child, and one the user did not set is never
/// invented (the loom step's separate target dir is the one deliberate override).
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
}

impl Cmd {
    pub(crate) fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
        }
    }

    /// The cargo that started xtask (`$CARGO`, set by `cargo run`), so the child uses the same
    /// toolchain; plain `cargo` otherwise.
    pub(crate) fn cargo() -> Self {
        Self::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
    }

    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    pub(crate) fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        command
    }

    /// Prints `$ <command>` and runs it with inherited stdio, so cargo's own output (colours,
    /// progress) reaches the terminal as it happens.
    pub(crate) fn run(&self) -> Result<()> {
        eprintln!("$ {self}");
        let status = self
            .command()
            .status()
            .with_context(|| format!("cannot start `{self}`"))?;
        self.check(status)
    }

    /// Runs quietly and returns stdout; for look-ups such as `cargo metadata` or `git`.
    pub(crate) fn read_stdout(&self) -> Result<String> {
        let output = self
            .command()
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot start `{self}`"))?;
        if !output.status.success() {
            bail!(
                "`{self}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8(output.stdout).with_context(|| format!("`{self}` printed non-UTF-8"))
    }

    pub(crate) fn check(&self, status: ExitStatus) -> Result<()> {
        if status.success() {
            Ok(())
        } else {
            bail!("`{self}` failed ({status})")
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The directory is shown only when it is not where the user already is.
        if let Some(dir) = &self.cwd
            && std::env::current_dir().ok().as_deref() != Some(dir.as_path())
        {
            write!(f, "cd {} && ", quote(dir.as_os_str()))?;
        }
        for (key, value) in &self.envs {
            write!(f, "{}={} ", key.to_string_lossy(), quote(value))?;
        }
        // `$CARGO` is an absolute toolchain path; the bare name is what a person would type.
        let program = Path::new(&self.program)
            .file_name()
            .unwrap_or(&self.program);
        write!(f, "{}", quote(program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

/// Quotes a word for a POSIX shell when it needs quoting, so a printed command can be pasted.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_reads_like_the_shell_command() {
        let cmd = Cmd::new("/opt/toolchain/bin/cargo").args(["fmt", "--all", "--", "--check"]);
        assert_eq!(cmd.to_string(), "cargo fmt --all -- --check");
    }

    #[test]
    fn display_quotes_env_values_and_args_with_spaces() {
        let cmd = Cmd::new("cargo")
            .env("RUSTFLAGS", "--cfg loom")
            .arg("it's")
            .current_dir("crates/x");
        assert_eq!(
            cmd.to_string(),
            r"cd crates/x && RUSTFLAGS='--cfg loom' cargo 'it'\''s'"
        );
    }

    #[test]
    fn failing_command_is_an_error_naming_it() {
        let err = Cmd::new("sh").args(["-c", "exit 3"]).run().unwrap_err();
        assert!(err.to_string().contains("sh -c 'exit 3'"), "{err}");
    }

    #[test]
    fn read_stdout_returns_output_and_env_reaches_child() {
        let out = Cmd::new("sh")
            .args(["-c", "printf %s \"$XTASK_PROBE\""])
            .env("XTASK_PROBE", "ok");
        assert_eq!(out.read_stdout().unwrap(), "ok");
    }
}
