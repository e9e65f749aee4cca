//! Child processes, signals, ports, scratch directories and bounded waits.
//!
//! Every child is held by a [`ChildGuard`] that SIGKILLs and reaps it on drop, and is spawned
//! with `PR_SET_PDEATHSIG`, so neither a failing test nor a killed test binary leaves a relay or
//! a sink behind.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr appended to `stdout` and `stderr`, dying with the
    /// thread that spawned it.
    pub(crate) fn spawn(name: &str, mut cmd: Command, stdout: &Path, stderr: &Path) -> Self {
        let out = append(stdout);
        let err = append(stderr);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let die_with_parent = || {
            // SAFETY: `prctl(PR_SET_PDEATHSIG)` takes two integers and touches no memory; it
            // is async-signal-safe, as code between fork and exec must be.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the hook runs in the forked child before exec; it only calls `prctl` (see
        // above), allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(die_with_parent);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) unless the process already exited.
    pub(crate) fn signal(&mut self, signal: libc::c_int) {
        if self.try_wait().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: `kill` has no memory-safety preconditions; the pid is our unreaped child, so
        // it cannot have been recycled for another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}) of {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name))
    }

    /// Waits for the process to exit, at most `limit`; `None` when it is still running.
    pub(crate) fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the process and reaps it.
    pub(crate) fn kill9(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.wait_for(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{} survived SIGKILL for 10 s", self.name))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn append(path: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read, close). Callers retry when the
/// port is taken before they bind it.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Polls `f` every 20 ms until it returns `Some`, at most `limit`; panics naming `what`
/// when the time runs out.
pub(crate) fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scratch directory for one scenario; removed on drop unless the test is failing, so the
/// logs and records of a failure stay for inspection (the failure message names the path).
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub(crate) fn new(scenario: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "spanflow-faults-{scenario}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("faults: keeping {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs the heavy scenarios one at a time within the test binary (they load both cores for
/// seconds; two at once would measure each other), while the light ones run alongside.
pub(crate) fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
