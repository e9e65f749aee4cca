//! ENOSPC from a real file system: a tiny tmpfs fills up, the append fails with `DiskFull`
//! (backpressure, no panic), and once readers free space a later append succeeds. Needs to
//! mount a tmpfs (root); elsewhere it says so and passes (the unit test
//! `disk_full_is_backpressure_and_the_next_append_retries` injects the error instead).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use spanflow_spool::{AppendError, Fsync, Spool};

use common::{bounded, config, drain, eventually, payload};

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn enospc_is_backpressure_and_appends_resume_once_space_is_freed() {
    bounded(Duration::from_secs(30), || {
        let outer = tempfile::tempdir().expect("tempdir");
        let Some(fs) = Tmpfs::mount(outer.path(), "512k") else {
            eprintln!("skipped: cannot mount a tmpfs here (not root?)");
            return;
        };
        let dir = fs.0.join("spool");
        // The budget is far above the file system's size: only ENOSPC can stop appends.
        let cfg = config(&dir, Fsync::Always, 64 << 10, 1 << 30);
        let spool = Spool::open(cfg.clone(), &["r"]).expect("open");
        let mut accepted = 0u64;
        let err = loop {
            match spool.append(accepted, payload(accepted, 4000)).wait() {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted < 1000, "a 512 KiB file system never filled");
        };
        assert!(matches!(err, AppendError::DiskFull { .. }), "{err:?}");
        assert!(err.is_backpressure());
        assert!(spool.stats().rejected_disk_full >= 1);
        // Still full: fails again, quickly, without a panic.
        assert!(spool.append(0, payload(0, 4000)).wait().is_err());

        // The reader catches up; its segments are deleted; appends go through again.
        let reader = spool.reader("r").expect("reader");
        let got = drain(&reader);
        assert_eq!(got.len() as u64, accepted);
        for r in &got {
            reader.ack(r.seq).expect("ack");
        }
        eventually(
            Duration::from_secs(10),
            "an append after space was freed",
            || spool.append(1, payload(1, 4000)).wait().is_ok(),
        );
        spool.close().expect("close");
        drop(spool);

        // Nothing of the failed writes is left to replay as damage.
        let spool = Spool::open(cfg, &["r"]).expect("reopen");
        let rec = spool.recovery();
        assert!(rec.corrupt.is_empty() && rec.truncated.is_none(), "{rec:?}");
        assert_eq!(drain(&spool.reader("r").expect("reader")).len(), 1);
        spool.close().expect("close");
    });
}
