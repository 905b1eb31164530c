//! The containers both tools run, written once as berth YAML and once as a compose file.
//!
//! The same container for both: the echo image with its own command, one env value `V`,
//! port 8080 exposed and not published, the default bridge network (compose's
//! `network_mode: bridge`, so compose creates no project network berth would not have),
//! restart policy `unless-stopped` (berth's default), a stop grace period of 5 s (the echo app
//! exits on SIGTERM at once, so no stop waits for it), no healthcheck. berth gets one
//! ContainerSet of one replica per container, compose one service per container: changing
//! one set's (one service's) env then replaces exactly one container in both tools.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use berth_tests::{ECHO_IMAGE, EchoSet};

/// Stop grace period of every benchmark container, in seconds (berth and compose alike).
pub const STOP_GRACE_SECONDS: u32 = 5;

/// The value of `V` in container `i`: `changed` is `Some((index, value))` for the one
/// container whose env a "change one" run alters.
fn value(i: usize, changed: Option<(usize, &str)>) -> String {
    match changed {
        Some((c, v)) if c == i => v.to_string(),
        _ => "1".to_string(),
    }
}

fn set_name(i: usize) -> String {
    format!("s{i:03}")
}

/// Writes `dir/sets.yaml`: `n` ContainerSets of one replica in `namespace`.
pub fn write_berth(dir: &Path, namespace: &str, n: usize, changed: Option<(usize, &str)>) -> anyhow::Result<PathBuf> {
    let mut yaml = String::new();
    for i in 0..n {
        let set = EchoSet::new(namespace, &set_name(i)).without_healthcheck().env("V", &value(i, changed));
        yaml.push_str("---\n");
        yaml.push_str(&set.yaml());
    }
    let path = dir.join("sets.yaml");
    std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Writes `dir/docker-compose.yml`: `n` services, the same containers as [`write_berth`].
pub fn write_compose(dir: &Path, n: usize, changed: Option<(usize, &str)>) -> anyhow::Result<PathBuf> {
    let mut yaml = String::from("version: \"2.4\"\nservices:\n");
    for i in 0..n {
        service(&mut yaml, &set_name(i), &value(i, changed), false);
    }
    let path = dir.join("docker-compose.yml");
    std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn service(yaml: &mut String, name: &str, v: &str, healthcheck: bool) {
    let _ = writeln!(yaml, "  {name}:\n    image: {ECHO_IMAGE}\n    environment:\n      V: {v:?}");
    let _ = writeln!(yaml, "    expose: [\"8080\"]\n    network_mode: bridge\n    restart: unless-stopped");
    let _ = writeln!(yaml, "    stop_grace_period: {STOP_GRACE_SECONDS}s");
    if healthcheck {
        // The same healthcheck as EchoSet's (berth's StartFirst waits for it; compose does not).
        let _ = writeln!(
            yaml,
            "    healthcheck:\n      test: [\"CMD\", \"/echo\", \"--probe\"]\n      interval: 200ms\n      timeout: 1s\n      retries: 3"
        );
    }
}

/// The StartFirst gap's berth set: one replica with a healthcheck, `V` = `v`.
pub fn write_berth_gap(dir: &Path, namespace: &str, v: &str) -> anyhow::Result<PathBuf> {
    let set = EchoSet::new(namespace, "gap").strategy("StartFirst").env("V", v);
    let path = dir.join("gap.yaml");
    std::fs::write(&path, set.yaml()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The StartFirst gap's compose service: the same container, `V` = `v`.
pub fn write_compose_gap(dir: &Path, v: &str) -> anyhow::Result<PathBuf> {
    let mut yaml = String::from("version: \"2.4\"\nservices:\n");
    service(&mut yaml, "gap", v, true);
    let path = dir.join("docker-compose.yml");
    std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
