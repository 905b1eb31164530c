//! The `berth` binary under test: finding it, building it, running it.
//!
//! Integration tests drive berth the way users do, through its CLI. Cargo does not build a
//! dependency's binaries for another package's tests, so the harness builds
//! `cargo build -p berth --bin berth` itself, once per test process and under a file lock
//! (cargo is a no-op when the binary is fresh, and a fresh build means tests never run a
//! stale binary), into the same target directory and profile as the running test.
//! `BERTH_BIN=/path/to/berth` skips the build and uses that binary.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::lock;
use crate::paths::{profile_dir, repo_root};

/// The path of the `berth` binary, built (once per process) if needed.
///
/// The binary is `target/<profile>/berth`, next to the running test's `deps/` directory.
///
/// # Panics
/// When the build fails (with cargo's output).
pub fn berth_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("BERTH_BIN").filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "BERTH_BIN={} is not a file", bin.display());
            return bin;
        }
        let profile_dir = profile_dir();
        let bin = profile_dir.join("berth");
        let _lock = lock::exclusive("berth-bin");
        // `cargo test --workspace` has just built the binary with the test run's feature set;
        // a nested `cargo build -p berth` would resolve features differently and rebuild half
        // the graph (minutes). Build only when the binary is missing or older than a source.
        if !is_fresh(&bin) {
            build_berth(&profile_dir);
        }
        assert!(bin.is_file(), "cargo built berth but {} does not exist", bin.display());
        bin
    })
    .clone()
}

/// The binary exists and is newer than every source file it is built from.
fn is_fresh(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else { return false };
    let root = repo_root();
    let mut stack: Vec<PathBuf> = ["operator/src", "crd/src", "operator/Cargo.toml", "crd/Cargo.toml", "Cargo.lock"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else { return false };
        if meta.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => stack.extend(rd.filter_map(|e| e.ok().map(|e| e.path()))),
                Err(_) => return false,
            }
        } else if meta.modified().map_or(true, |m| m > built) {
            return false;
        }
    }
    true
}

/// Remove the variables cargo sets for the running test from a command that runs cargo.
///
/// cargo sets them for the test (CARGO_MANIFEST_DIR=<repo>/tests, CARGO_PKG_NAME=berth-tests,
/// ...). Build scripts such as ring's declare `rerun-if-env-changed` on them, so passing them
/// on makes a nested build re-run those scripts and rebuild ring, rustls, kube... and the next
/// `cargo test` rebuild them back.
pub fn without_cargo_test_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(key.as_ref());
        }
    }
}

fn build_berth(profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    let target_dir = profile_dir.parent().expect("the profile directory has a parent (the target directory)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    without_cargo_test_env(&mut cmd);
    let out = cmd
        .current_dir(repo_root())
        .args(["build", "--quiet", "-p", "berth", "--bin", "berth", "--profile"])
        .arg(&profile)
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run cargo to build berth");
    assert!(
        out.status.success(),
        "cargo build -p berth --bin berth --profile {profile} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `Command` for the `berth` binary with `args` and extra `env` (the test's environment is
/// inherited). For anything [`berth()`] and [`spawn_berth`] do not cover.
pub fn berth_command<I, S>(args: I, env: &[(&str, &str)]) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(berth_bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// What a finished `berth` run left: exit code and output.
#[derive(Debug, Clone)]
pub struct BerthOutput {
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl BerthOutput {
    fn new(status: ExitStatus, stdout: Vec<u8>, stderr: Vec<u8>) -> Self {
        use std::os::unix::process::ExitStatusExt;
        BerthOutput {
            code: status.code(),
            signal: status.signal(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Whether berth exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics (showing the output) unless berth exited with code 0; returns `self`.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "berth did not succeed: {self}");
        self
    }

    /// Panics (showing the output) unless berth exited with `code`; returns `self`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "berth exited otherwise: {self}");
        self
    }
}

impl std::fmt::Display for BerthOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?} signal {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.signal, self.stdout, self.stderr
        )
    }
}

/// Runs `berth ARGS...` to completion with extra `env`, capturing its exit code and output.
///
/// Blocks the calling thread; from an async test prefer [`berth_async`] (or a multi-thread
/// runtime).
pub fn berth<I, S>(args: I, env: &[(&str, &str)]) -> BerthOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = berth_command(args, env).output().expect("cannot run the berth binary");
    BerthOutput::new(out.status, out.stdout, out.stderr)
}

/// [`berth()`] without blocking the async runtime.
pub async fn berth_async<I, S>(args: I, env: &[(&str, &str)]) -> BerthOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let cmd = berth_command(args, env);
    let out = tokio::process::Command::from(cmd).output().await.expect("cannot run the berth binary");
    BerthOutput::new(out.status, out.stdout, out.stderr)
}

/// A running `berth` process, e.g. to SIGKILL it mid-way. Its stdout and stderr go to files
/// (so a chatty process never blocks on a full pipe) and can be read while it runs.
/// Dropping it SIGKILLs the process if it still runs.
pub struct BerthProcess {
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `berth ARGS...` with extra `env` in the background.
pub fn spawn_berth<I, S>(args: I, env: &[(&str, &str)]) -> BerthProcess
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let dir = tempfile::Builder::new().prefix("berth-run-").tempdir().expect("a temp dir for berth's output");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let child = berth_command(args, env)
        .stdout(File::create(&stdout_path).expect("berth stdout file"))
        .stderr(File::create(&stderr_path).expect("berth stderr file"))
        .spawn()
        .expect("cannot spawn the berth binary");
    BerthProcess { child, stdout_path, stderr_path, _dir: dir }
}

impl BerthProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has written to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`, `libc::SIGINT`) without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed: {}", self.pid(), std::io::Error::last_os_error());
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait on berth").is_none()
    }

    /// SIGKILLs the process (no cleanup in berth can run) and returns what it left.
    pub fn kill(mut self) -> BerthOutput {
        let _ = self.child.kill();
        self.finish()
    }

    /// Waits for it to exit by itself and returns what it left.
    pub fn wait(mut self) -> BerthOutput {
        self.finish()
    }

    /// Waits up to `timeout` for it to exit; `Err(self)` if it still runs then.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<BerthOutput, BerthProcess> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.try_wait().expect("try_wait on berth").is_some() {
                return Ok(self.finish());
            }
            if Instant::now() >= deadline {
                return Err(self);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(&mut self) -> BerthOutput {
        let status = self.child.wait().expect("wait on berth");
        BerthOutput::new(
            status,
            std::fs::read(&self.stdout_path).unwrap_or_default(),
            std::fs::read(&self.stderr_path).unwrap_or_default(),
        )
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
