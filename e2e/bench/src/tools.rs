//! Running the two tools under test, `berth` and `docker-compose`, through the counting proxy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context as _;
use berth_tests::{CountingProxy, berth_command};

use crate::sample::Sample;
use crate::workload;

/// One of the two tools under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Berth,
    Compose,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Berth => "berth",
            Tool::Compose => "docker-compose",
        }
    }
}

/// One tool's deployment: the namespace (berth) or project (compose) that owns its
/// containers, registered for cleanup from the start, and the folder of its input file.
pub struct Deployment {
    pub tool: Tool,
    pub owner: String,
    dir: PathBuf,
}

impl Deployment {
    /// A fresh owner (`PREFIX-…` for berth, `PREFIX-compose-…` for compose), its folder in
    /// `work`, and its label registered for cleanup.
    pub fn new(tool: Tool, work: &Path, prefix: &str) -> anyhow::Result<Deployment> {
        let owner = match tool {
            Tool::Berth => berth_tests::unique_ns(prefix),
            Tool::Compose => berth_tests::unique_ns(&format!("{prefix}-compose")),
        };
        let dir = work.join(&owner);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let d = Deployment { tool, owner, dir };
        crate::cleanup::register(&d.label());
        Ok(d)
    }

    /// The label every container of the deployment carries (`key=value`).
    pub fn label(&self) -> String {
        match self.tool {
            Tool::Berth => format!("berth.dev/namespace={}", self.owner),
            Tool::Compose => format!("com.docker.compose.project={}", self.owner),
        }
    }

    /// Writes the `n` containers' input, `changed` altering one env value.
    pub fn write(&self, n: usize, changed: Option<(usize, &str)>) -> anyhow::Result<PathBuf> {
        match self.tool {
            Tool::Berth => workload::write_berth(&self.dir, &self.owner, n, changed),
            Tool::Compose => workload::write_compose(&self.dir, n, changed),
        }
    }

    /// Writes the StartFirst gap's one-container input with `V` = `v`.
    pub fn write_gap(&self, v: &str) -> anyhow::Result<PathBuf> {
        match self.tool {
            Tool::Berth => workload::write_berth_gap(&self.dir, &self.owner, v),
            Tool::Compose => workload::write_compose_gap(&self.dir, v),
        }
    }

    /// `berth apply -f FILE` / `docker-compose up -d`.
    pub async fn apply(&self, runner: &Runner<'_>, file: &Path) -> anyhow::Result<Sample> {
        match self.tool {
            Tool::Berth => runner.berth("apply", file).await,
            Tool::Compose => runner.compose(&self.owner, file, &["up", "-d"]).await,
        }
    }

    /// `berth delete -f FILE` / `docker-compose down`.
    pub async fn delete(&self, runner: &Runner<'_>, file: &Path) -> anyhow::Result<Sample> {
        match self.tool {
            Tool::Berth => runner.berth("delete", file).await,
            Tool::Compose => runner.compose(&self.owner, file, &["down"]).await,
        }
    }
}

/// Everything a timed run needs.
pub struct Runner<'a> {
    pub proxy: &'a CountingProxy,
    /// `--concurrency N` for berth's apply and delete, when set.
    pub berth_concurrency: Option<u16>,
    /// `COMPOSE_PARALLEL_LIMIT` for docker-compose; see [`compose_parallel_limit`].
    pub compose_parallel_limit: usize,
}

/// docker-compose 1.x deadlocks with more services than `COMPOSE_PARALLEL_LIMIT` (default 64):
/// `up` holds one slot of that global semaphore per service while each service's containers
/// wait for another slot (compose/parallel.py, `GlobalLimit`). Seen here: `up -d` of 100
/// services stopped for good after 30 containers. Twice the largest size (at least the default
/// 64) lets every service and its container run at once — what the default already allows
/// below 32 services, so compose's behaviour at N = 20 is unchanged.
pub fn compose_parallel_limit(largest: usize) -> usize {
    (2 * largest).max(64)
}

impl Runner<'_> {
    /// `berth apply -f FILE` (or `delete`), timed from spawn to exit.
    pub async fn berth(&self, verb: &str, file: &Path) -> anyhow::Result<Sample> {
        let mut args: Vec<String> = vec![verb.to_string(), "-f".to_string(), file.display().to_string()];
        if let Some(c) = self.berth_concurrency {
            args.extend(["--concurrency".to_string(), c.to_string()]);
        }
        let host = self.proxy.docker_host();
        let cmd = berth_command(&args, &[("DOCKER_HOST", host.as_str())]);
        self.timed(cmd, &format!("berth {}", args.join(" "))).await
    }

    /// `docker-compose -p PROJECT -f FILE ARGS...`, timed from spawn to exit.
    pub async fn compose(&self, project: &str, file: &Path, args: &[&str]) -> anyhow::Result<Sample> {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-p").arg(project).arg("-f").arg(file).args(args);
        cmd.env("DOCKER_HOST", self.proxy.docker_host())
            .env("COMPOSE_PARALLEL_LIMIT", self.compose_parallel_limit.to_string())
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROJECT_NAME");
        cmd.stdin(Stdio::null());
        self.timed(cmd, &format!("docker-compose -p {project} -f {} {}", file.display(), args.join(" "))).await
    }

    async fn timed(&self, cmd: Command, what: &str) -> anyhow::Result<Sample> {
        crate::cleanup::check_interrupted()?;
        self.proxy.reset();
        let started = Instant::now();
        let out = tokio::process::Command::from(cmd).output().await.with_context(|| format!("cannot run {what}"))?;
        let wall = started.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "{what} failed ({}):\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Sample { started, wall, requests: self.proxy.requests() })
    }
}

/// The `docker-compose` on PATH; when there is none, installs Debian's package (as root, or
/// with sudo) and says so.
pub fn ensure_compose() -> anyhow::Result<PathBuf> {
    if let Some(path) = which("docker-compose") {
        return Ok(path);
    }
    eprintln!(
        "docker-compose not found: installing Debian's docker-compose package (apt-get install -y docker-compose)"
    );
    let root = is_root();
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = if root {
            Command::new(args[0])
        } else {
            anyhow::ensure!(which("sudo").is_some(), "installing docker-compose needs root (or sudo): run as root");
            let mut c = Command::new("sudo");
            c.arg(args[0]);
            c
        };
        // apt's output goes to stderr with the progress: stdout is the report.
        cmd.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive").stdin(Stdio::null()).stdout(std::io::stderr());
        let status = cmd.status().with_context(|| format!("cannot run {}", args.join(" ")))?;
        anyhow::ensure!(status.success(), "{} failed ({status})", args.join(" "));
        Ok(())
    };
    run(&["apt-get", "update"])?;
    run(&["apt-get", "install", "-y", "docker-compose"])?;
    which("docker-compose").context("apt-get installed docker-compose but it is not on PATH")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// `docker-compose version --short`.
pub fn compose_version() -> String {
    Command::new("docker-compose")
        .args(["version", "--short"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
