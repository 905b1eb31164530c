//! Unique namespaces per test, and cleanup of the containers in them.
//!
//! berth labels every container it manages with `berth.dev/namespace`; tests share one
//! engine and run in parallel, so each test works in a namespace of its own and only ever
//! touches containers labelled with it. [`NamespaceGuard`] force-removes them when the test
//! ends, whether it passed or panicked, so no run leaves containers behind.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};

use crate::rt;

/// The label berth puts on its containers to say which namespace they belong to.
pub const NAMESPACE_LABEL: &str = "berth.dev/namespace";

/// Longest prefix kept: the name stays well within a 63-character DNS label.
const MAX_PREFIX: usize = 24;

/// A namespace name unique to this call in this test run: `<prefix>-<pid>-<run>-<n>`.
///
/// Lowercase `[a-z0-9-]` only (the prefix is sanitized and shortened), at most ~45
/// characters, starting with a letter: a valid DNS label. `<run>` is derived from the
/// process start time, so a leftover from an earlier run with the same pid never collides.
pub fn unique_ns(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        base36(secs % 36u64.pow(4))
    });
    let mut clean: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(MAX_PREFIX)
        .collect();
    clean = clean.trim_matches('-').to_string();
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert(0, 't');
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{clean}-{}-{run}-{n}", std::process::id())
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Force-removes every container (running or not) labelled `berth.dev/namespace=<namespace>`,
/// with its anonymous volumes, then the namespace's default network. Returns how many
/// containers it removed.
///
/// # Panics
/// When the engine cannot list or remove them (a container already gone is fine).
pub async fn cleanup_containers(docker: &Docker, namespace: &str) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![format!("{NAMESPACE_LABEL}={namespace}")])]);
    let containers = docker
        .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
        .await
        .unwrap_or_else(|e| panic!("cannot list containers of namespace {namespace}: {e}"));
    let mut removed = 0;
    for c in containers {
        let Some(id) = c.id else { continue };
        let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match docker.remove_container(&id, Some(opts)).await {
            Ok(()) => removed += 1,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            // 409: removal already in progress (berth or another cleanup racing us).
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {}
            Err(e) => panic!("cannot remove container {id} of namespace {namespace}: {e}"),
        }
    }
    // The namespace's default network (berth makes one per namespace): an engine has room for
    // about thirty bridge networks, so a suite that left them behind would run out.
    match docker.remove_network(&format!("{namespace}_default")).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(e) => eprintln!("warning: cannot remove network {namespace}_default: {e}"),
    }
    removed
}

/// A unique namespace whose containers are force-removed on drop (also when the test
/// panics), on the local engine or the one given to [`NamespaceGuard::on_host`].
pub struct NamespaceGuard {
    name: String,
    host: Option<String>,
}

impl NamespaceGuard {
    /// A fresh namespace from [`unique_ns`]`(prefix)`, cleaned up on the local engine.
    pub fn new(prefix: &str) -> NamespaceGuard {
        NamespaceGuard { name: unique_ns(prefix), host: None }
    }

    /// A fresh namespace cleaned up on the engine at `host` (a `DOCKER_HOST` value).
    pub fn on_host(prefix: &str, host: &str) -> NamespaceGuard {
        NamespaceGuard { name: unique_ns(prefix), host: Some(host.to_string()) }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `berth.dev/namespace=<name>`: a label filter for listing its containers.
    pub fn label_filter(&self) -> String {
        format!("{NAMESPACE_LABEL}={}", self.name)
    }
}

impl std::fmt::Display for NamespaceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        let host = self.host.clone().unwrap_or_else(crate::engine::docker_host);
        // Runs on its own runtime and thread, so it works from sync and async tests; a
        // failure is reported, never a second panic while unwinding.
        let result = rt::try_block_on(async {
            let docker = crate::engine::docker_at(&host).await;
            cleanup_containers(&docker, &name).await
        });
        if result.is_err() {
            eprintln!("warning: cleanup of namespace {name} on {host} failed (see the panic above)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dns_labels() {
        let a = unique_ns("Converge_Test!");
        let b = unique_ns("Converge_Test!");
        assert_ne!(a, b);
        for n in [&a, &b, &unique_ns("9lives"), &unique_ns(&"x".repeat(100))] {
            assert!(n.len() <= 63, "{n}");
            assert!(n.starts_with(|c: char| c.is_ascii_lowercase()), "{n}");
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{n}");
            assert!(!n.ends_with('-'), "{n}");
        }
        assert!(a.starts_with("converge-test-"), "{a}");
    }
}
