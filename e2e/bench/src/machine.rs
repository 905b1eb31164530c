//! The facts a reader needs to compare a run with theirs.

use std::path::Path;
use std::process::Command;

use bollard::Docker;

/// Machine, versions and load.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub docker: String,
    pub compose: String,
    pub berth: String,
    pub load: String,
}

impl Machine {
    pub async fn gather(docker: &Docker, berth_bin: &Path, compose_version: String) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let kernel = read_trimmed("/proc/sys/kernel/osrelease");
        let docker = match docker.version().await {
            Ok(v) => format!(
                "{} (API {})",
                v.version.unwrap_or_else(|| "?".into()),
                v.api_version.unwrap_or_else(|| "?".into())
            ),
            Err(e) => format!("unknown ({e})"),
        };
        Machine { cpu, cores, kernel, docker, compose: compose_version, berth: berth_version(berth_bin), load: load() }
    }

    /// Markdown lines.
    pub fn markdown(&self) -> String {
        format!(
            "- CPU: {} ({} cores)\n- kernel: {}\n- Docker engine: {}\n- docker-compose: {}\n- berth: {}\n- load average (1/5/15 min) at the end: {}\n",
            self.cpu, self.cores, self.kernel, self.docker, self.compose, self.berth, self.load
        )
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// `/proc/loadavg`'s first three fields: the machine is shared, so say how busy it was.
pub fn load() -> String {
    read_trimmed("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// `berth --version`, the git revision of the checkout it was built from, and its path.
fn berth_version(bin: &Path) -> String {
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let root = berth_tests::paths::repo_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--", "operator", "crd"]).is_some_and(|s| !s.is_empty());
    format!("{version}, git {rev}{} ({})", if dirty { " + uncommitted changes" } else { "" }, bin.display())
}
