//! SIGKILL of `berth apply` in the middle of a rollout, at several points, then apply again:
//! the host converges with no duplicate and no orphan container.
//!
//! The points are chosen by counting mutating Docker requests through the proxy: kill after
//! the 1st, 2nd, 4th, ... request, so each run stops between different steps (after a
//! create before its start, after a start before the old one is stopped, after a stop before
//! the remove, ...). No state lives outside the hosts, so the next run picks up from labels.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_tests::*;

const REPLICAS: u32 = 3;

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_rollout_then_applied_again_converges_without_duplicates_or_orphans() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("crash");
    let dir = tempfile::tempdir().unwrap();
    let set = EchoSet::new(ns.name(), "web").replicas(REPLICAS).env("V", "0");
    let file = set.write(dir.path());
    let file_s = file.to_str().unwrap().to_string();
    berth_async(["apply", "-f", &file_s], &[]).await.assert_success();

    // A replacement of 3 replicas is 3 × (create, start, stop, remove) = 12 mutating requests.
    for (round, kill_after) in [1usize, 2, 3, 5, 7, 10].into_iter().enumerate() {
        let proxy = CountingProxy::start(&local_socket_path());
        let host = proxy.docker_host();
        set.clone().env("V", &format!("{}", round + 1)).write(dir.path());
        let run = spawn_berth(["apply", "-f", &file_s], &[("DOCKER_HOST", host.as_str())]);
        // Poll tightly: the point is to stop between two particular requests.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while proxy.count_mutating() < kill_after && run_is_running(&run) {
            assert!(std::time::Instant::now() < deadline, "round {round}: {kill_after} mutating requests within 30s");
            std::thread::sleep(Duration::from_millis(1));
        }
        let out = run.kill();
        eprintln!("round {round}: killed after {} mutating requests (signal {:?})", proxy.count_mutating(), out.signal);

        // Apply again, undisturbed: it must finish the job.
        berth_async(["apply", "-f", &file_s], &[]).await.assert_success();
        assert_converged(&docker, ns.name(), round + 1).await;
        // And a further apply has nothing left to do.
        let again = berth_async(["plan", "-f", &file_s], &[]).await;
        assert_eq!(again.code, Some(0), "round {round}: converged after recovery:\n{again}");
    }
}

fn run_is_running(run: &BerthProcess) -> bool {
    // `is_running` needs `&mut`; the proxy count is the main condition, this only avoids
    // waiting the full deadline if apply finished before reaching the count.
    std::fs::metadata(format!("/proc/{}", run.pid())).is_ok()
        && std::fs::read_to_string(format!("/proc/{}/stat", run.pid())).is_ok_and(|s| !s.contains(") Z "))
}

/// Exactly one running container per ordinal, all of the latest revision, answering with the
/// latest env value; nothing else of the namespace on the engine.
async fn assert_converged(docker: &bollard::Docker, ns: &str, version: usize) {
    let all = containers_in(docker, ns).await;
    let mut by_ordinal: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut revisions = std::collections::BTreeSet::new();
    for c in &all {
        let labels = c.labels.clone().unwrap_or_default();
        by_ordinal.entry(labels["berth.dev/ordinal"].clone()).or_default().push(c.id.clone().unwrap_or_default());
        revisions.insert(labels["berth.dev/revision"].clone());
        assert_eq!(c.state.map(|s| s.to_string()).as_deref(), Some("running"), "every container runs: {c:?}");
    }
    assert_eq!(all.len(), REPLICAS as usize, "no duplicates or orphans: {:?}", names_ids_states(docker, ns).await);
    assert_eq!(by_ordinal.len(), REPLICAS as usize, "one container per ordinal: {by_ordinal:?}");
    assert_eq!(revisions.len(), 1, "a single revision: {revisions:?}");
    for c in &all {
        let name = c.names.clone().unwrap_or_default()[0].trim_start_matches('/').to_string();
        let addr = container_addr(docker, &name).await;
        let (_, v) = http_request(&addr, "GET", "/env/V", &[]).expect("answers");
        assert_eq!(v, version.to_string(), "{name} runs the latest spec");
    }
}
