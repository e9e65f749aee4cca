//! A real Kafka-API broker for the tests: `tansu` (crates.io, Apache-2.0), started on a free
//! loopback port in a scratch directory and killed when dropped. `.ci/run` installs it (`cargo
//! install tansu --locked --features dynostore,libsql`); without it the tests say so and pass
//! outside CI, and fail in CI (`CI` set).
//!
//! Storage: `memory://` for tests that keep the broker up; SQLite (libsql) for the test that
//! restarts it, so the topic, its records and the group's offsets survive. tansu resolves a
//! `sqlite://` path against its working directory even when it starts with `/`, so the broker
//! runs in the scratch directory with a relative path.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::proc::{ChildGuard, free_port, wait_until};

/// Where the broker keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    /// In memory: lost when the broker stops.
    Memory,
    /// A SQLite file in the scratch directory: survives a restart, even a SIGKILL.
    Sqlite,
}

/// A running broker.
#[derive(Debug)]
pub(crate) struct Broker {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    storage: Storage,
    child: Option<ChildGuard>,
}

/// The tansu binary: `$TANSU`, else `tansu` on `PATH`, else cargo's bin directory. `None`
/// when there is none; in CI (`CI` set) that is a failure, elsewhere the test is skipped.
pub(crate) fn tansu() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("TANSU") {
        candidates.push(p.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("tansu")));
    }
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(Path::new(&home).join("bin/tansu"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/tansu"));
    }
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no tansu broker (set TANSU or put it on PATH; .ci/run installs it)"
        );
        println!(
            "kafka: SKIPPED, no tansu broker on PATH (cargo install tansu --locked --features dynostore,libsql)"
        );
    }
    found
}

impl Broker {
    /// Starts a broker in `dir`; `None` (skipped) when tansu is not installed outside CI.
    pub(crate) fn start(dir: &Path, storage: Storage) -> Option<Self> {
        let bin = tansu()?;
        let mut broker = Self {
            bin,
            dir: dir.to_path_buf(),
            port: free_port(),
            storage,
            child: None,
        };
        broker.spawn();
        Some(broker)
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let storage = match self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Sqlite => "sqlite://tansu.db".to_owned(),
        };
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", &storage])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "warn");
        let child = ChildGuard::spawn(
            "tansu",
            cmd,
            &self.dir.join("broker.stdout"),
            &self.dir.join("broker.stderr"),
        );
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_until("the broker to listen", Duration::from_secs(30), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `topic` with `partitions` partitions (with tansu's own client).
    pub(crate) fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create"])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string()])
            .arg(topic)
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGKILLs the broker and starts it again on the same port and storage.
    pub(crate) fn kill_and_restart(&mut self, down_for: Duration) {
        if let Some(mut child) = self.child.take() {
            child.kill9();
        }
        std::thread::sleep(down_for);
        self.spawn();
    }
}
