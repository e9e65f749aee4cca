//! End-to-end runs of the xtask binary: `bench-report` on the checked-in criterion fixture,
//! and `test` against a fake workspace whose `cargo` and `valgrind` are logging scripts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("xtask-cli-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_script(path: &Path, body: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn help_lists_the_commands() {
    let out = xtask().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in ["test", "bench", "bench-report"] {
        assert!(help.contains(command), "{help}");
    }
    let out = xtask().args(["test", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    for flag in [
        "--no-loom",
        "--no-miri",
        "--no-valgrind",
        "--no-fuzz",
        "--skip-fmt",
        "--skip-clippy",
    ] {
        assert!(help.contains(flag), "{help}");
    }
}

#[test]
fn bench_report_writes_markdown_and_svg_from_criterion_output() {
    let tmp = TempDir::new("report");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/criterion");
    let out = xtask()
        .arg("bench-report")
        .arg("--criterion-dir")
        .arg(&fixture)
        .arg("--out-dir")
        .arg(tmp.0.join("docs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = fs::read_to_string(tmp.0.join("docs/BENCHMARKS.md")).unwrap();
    assert!(
        md.contains("| `deque/push_pop_256` | crossbeam | 1.23 µs | 2.47 µs | 2.00 |"),
        "{md}"
    );
    assert!(md.contains("| cores |"), "{md}");
    let svg = fs::read_to_string(tmp.0.join("docs/benchmarks.svg")).unwrap();
    assert!(svg.contains("deque/push_pop_256 vs crossbeam"));
    assert!(svg.contains("batch/flush_by_count (64) vs sync_channel"));
}

/// A fake workspace: `CARGO_MANIFEST_DIR` makes xtask take it as the root, `CARGO` and
/// `PATH` send cargo, rustup and valgrind to scripts that log their arguments and environment
/// (and put a stand-in `tansu` broker first on `PATH`).
struct FakeWorkspace {
    tmp: TempDir,
}

impl FakeWorkspace {
    fn new(name: &str) -> Self {
        let tmp = TempDir::new(name);
        let root = &tmp.0;
        fs::create_dir_all(root.join("xtask")).unwrap();
        fs::create_dir_all(root.join("crates/spanflow-lockfree/tests")).unwrap();
        let lockfree = root.join("crates/spanflow-lockfree");
        let metadata = format!(
            r#"{{"packages":[{{"name":"spanflow-lockfree","manifest_path":"{m}","targets":[
                {{"name":"loom_deque","kind":["test"],"src_path":"{t}/loom_deque.rs"}},
                {{"name":"stress","kind":["test"],"src_path":"{t}/stress.rs"}}]}}],
              "target_directory":"{target}"}}"#,
            m = lockfree.join("Cargo.toml").display(),
            t = lockfree.join("tests").display(),
            target = root.join("target").display(),
        );
        fs::write(root.join("metadata.json"), metadata).unwrap();
        let artifact = format!(
            r#"{{"reason":"compiler-artifact","target":{{"name":"stress","kind":["test"]}},"profile":{{"test":true}},"executable":"{}"}}"#,
            root.join("target/release/deps/stress-1234").display()
        );
        write_script(
            &root.join("bin/cargo"),
            &format!(
                r#"echo "cargo $* | RUSTFLAGS=$RUSTFLAGS LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS CARGO_TARGET_DIR=$CARGO_TARGET_DIR" >> "{log}"
case "$1" in
  metadata) cat "{root}/metadata.json" ;;
  *) case " $* " in *" $FAKE_CARGO_FAIL_ON "*) exit 101 ;; esac
     case " $* " in *" --message-format=json "*) echo '{artifact}' ;; esac ;;
esac
"#,
                log = root.join("log").display(),
                root = root.display(),
            ),
        );
        write_script(
            &root.join("bin/rustup"),
            &format!(
                r#"echo "rustup $* | MIRIFLAGS=$MIRIFLAGS SPANFLOW_STRESS_SCALE=$SPANFLOW_STRESS_SCALE" >> "{}""#,
                root.join("log").display()
            ),
        );
        // A broker on PATH, so the Kafka step runs whether or not this machine has tansu.
        write_script(&root.join("bin/tansu"), "echo tansu 0.0.0");
        write_script(
            &root.join("bin/valgrind"),
            &format!(
                r#"echo "valgrind $* | SPANFLOW_STRESS_SCALE=$SPANFLOW_STRESS_SCALE" >> "{}""#,
                root.join("log").display()
            ),
        );
        Self { tmp }
    }

    fn root(&self) -> &Path {
        &self.tmp.0
    }

    fn run(&self, args: &[&str], fail_on: &str) -> Output {
        let path = format!(
            "{}:{}",
            self.root().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        xtask()
            .arg("test")
            .args(args)
            .current_dir(self.root())
            .env("CARGO_MANIFEST_DIR", self.root().join("xtask"))
            .env("CARGO", self.root().join("bin/cargo"))
            .env("PATH", path)
            .env("FAKE_CARGO_FAIL_ON", fail_on)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("MIRIFLAGS")
            .env_remove("TANSU")
            .output()
            .unwrap()
    }

    fn log(&self) -> Vec<String> {
        let log = fs::read_to_string(self.root().join("log")).unwrap_or_default();
        log.lines().map(str::to_owned).collect()
    }
}

#[test]
fn test_runs_every_step_in_order() {
    let ws = FakeWorkspace::new("all");
    let root = ws.root();
    fs::write(root.join("crates/spanflow-lockfree/tests/stress.rs"), "").unwrap();
    let marker = root.join("smoke-ran");
    write_script(
        &root.join("crates/spanflow-otlp/fuzz/smoke"),
        &format!("pwd > {}\n", marker.display()),
    );
    let out = ws.run(&[], "never-matches");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let target = root.join("target");
    let exe = root.join("target/release/deps/stress-1234");
    let plain = "| RUSTFLAGS= LOOM_MAX_PREEMPTIONS= CARGO_TARGET_DIR=";
    assert_eq!(
        ws.log(),
        [
            format!("cargo fmt --all -- --check {plain}"),
            format!("cargo clippy --workspace --all-targets --locked -- -D warnings {plain}"),
            format!(
                "cargo clippy --locked -p spanflow --no-default-features --features grpc \
                 -- -D warnings {plain}"
            ),
            format!(
                "cargo clippy --locked -p spanflow --no-default-features --features http \
                 -- -D warnings {plain}"
            ),
            format!(
                "cargo clippy --locked -p spanflow --no-default-features --features full \
                 -- -D warnings {plain}"
            ),
            format!("cargo test --workspace --all-targets --locked {plain}"),
            format!("cargo test --workspace --doc --locked {plain}"),
            format!("cargo metadata --format-version 1 --no-deps {plain}"),
            format!(
                "cargo test --release --locked -p spanflow-lockfree --test loom_deque | \
                 RUSTFLAGS=--cfg loom --cfg crossbeam_loom LOOM_MAX_PREEMPTIONS=2 \
                 CARGO_TARGET_DIR={}",
                target.join("loom").display()
            ),
            "rustup run nightly cargo miri --version | MIRIFLAGS= SPANFLOW_STRESS_SCALE="
                .to_owned(),
            "rustup run nightly cargo miri test --locked -p spanflow-lockfree --lib --tests | \
             MIRIFLAGS=-Zmiri-tree-borrows -Zmiri-permissive-provenance -Zmiri-ignore-leaks \
             SPANFLOW_STRESS_SCALE=tiny"
                .to_owned(),
            "rustup run nightly cargo miri test --locked -p spanflow-batch --lib | \
             MIRIFLAGS=-Zmiri-tree-borrows -Zmiri-permissive-provenance -Zmiri-ignore-leaks \
             SPANFLOW_STRESS_SCALE=tiny"
                .to_owned(),
            "valgrind --version | SPANFLOW_STRESS_SCALE=".to_owned(),
            format!(
                "cargo test --release --locked -p spanflow-lockfree --test stress --no-run \
                 --message-format=json {plain}"
            ),
            format!(
                "valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
                 {} --test-threads=1 | SPANFLOW_STRESS_SCALE=small",
                exe.display()
            ),
            // The examples step lists the example targets; the fake workspace has none.
            format!("cargo metadata --format-version 1 --no-deps {plain}"),
            format!(
                "cargo clippy --locked --all-targets --features \
                 spanflow-export/kafka,spanflow-relay/kafka -p spanflow-export -p spanflow-relay \
                 -- -D warnings {plain}"
            ),
            format!(
                "cargo test --locked -p spanflow-export --features kafka --lib -- kafka {plain}"
            ),
            format!("cargo test --locked -p spanflow-relay --features kafka --test kafka {plain}"),
        ]
    );
    let smoke_dir = fs::read_to_string(&marker).unwrap();
    assert_eq!(
        Path::new(smoke_dir.trim()),
        root.join("crates/spanflow-otlp")
    );
    assert!(stderr.contains("$ cargo fmt --all -- --check"), "{stderr}");
    for line in [
        "PASS  fmt",
        "PASS  loom models",
        "PASS  miri",
        "PASS  valgrind",
        "PASS  fuzz smoke",
        "PASS  examples",
        "PASS  kafka",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in {stderr}");
    }
}

#[test]
fn test_stops_at_the_first_failure_and_reports_it() {
    let ws = FakeWorkspace::new("fail");
    let out = ws.run(&["--skip-fmt", "--no-fuzz"], "--all-targets");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    // clippy also passes --all-targets, so it is the first to fail.
    assert_eq!(ws.log().len(), 1, "{:?}", ws.log());
    assert!(ws.log()[0].starts_with("cargo clippy"));
    for line in [
        "SKIP  fmt          --skip-fmt",
        "FAIL  clippy",
        "----  tests        not run",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in {stderr}");
    }
    assert!(stderr.contains("step `clippy` failed"), "{stderr}");
}

#[test]
fn test_skips_valgrind_and_fuzz_when_their_inputs_are_absent() {
    let ws = FakeWorkspace::new("absent");
    let out = ws.run(
        &["--skip-fmt", "--skip-clippy", "--no-loom"],
        "never-matches",
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("SKIP  valgrind") && stderr.contains("stress.rs does not exist"));
    assert!(
        stderr.contains("SKIP  fuzz smoke   no crates/*/fuzz/smoke script"),
        "{stderr}"
    );
    assert!(!ws.log().iter().any(|l| l.starts_with("valgrind")));
}
