//! `minReadySeconds` means the new containers stayed ready the whole window (issue 11,
//! item 6), against the real engine: a container that crashes inside the window and is
//! restarted by its restart policy fails the revision (it looks ready again by the end), and
//! a host that cannot be looked at inside the window is a host error, retried, never a failed
//! revision that gets recorded, rolled back and held.

use std::time::Duration;

use berth_tests::*;
use bollard::query_parameters::ListContainersOptionsBuilder;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The set: one echo replica, healthchecked, restarted by the engine when its process dies,
/// `minReadySeconds: 5`, rolled back when a revision fails.
fn set(ns: &str, version: &str) -> String {
    let mut s = EchoSet::new(ns, "web").env("VERSION", version);
    s.extra_template = "    restartPolicy: Always\n".into();
    s.yaml().replace(
        "  strategy:\n    progressDeadlineSeconds: 30\n",
        "  strategy:\n    progressDeadlineSeconds: 30\n    minReadySeconds: 5\n    autoRollback: true\n",
    )
}

/// The name in berth's plain progress line `HOST: ready NAME (N ms)`, once it is there.
fn ready_line(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| l.split(": ready ").nth(1)).map(|rest| rest.split(' ').next().unwrap_or("").to_string())
}

async fn running_revisions(docker: &bollard::Docker, ns: &str) -> Vec<String> {
    let filters = std::collections::HashMap::from([("label", vec![format!("berth.dev/namespace={ns}")])]);
    let opts = ListContainersOptionsBuilder::default().all(false).filters(&filters).build();
    let list = docker.list_containers(Some(opts)).await.expect("list containers");
    list.iter().filter_map(|c| c.labels.as_ref()?.get("berth.dev/revision").cloned()).collect()
}

fn history(dir: &str, ns: &str, env: &[(&str, &str)]) -> Vec<Value> {
    let out = berth(["history", &format!("{ns}/web"), "-f", dir, "--json"], env);
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("berth history --json is not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_restarted_inside_min_ready_seconds_fails_its_revision() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("minready");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yaml");
    let d = dir.path().to_str().unwrap();
    std::fs::write(&path, set(ns.name(), "1")).unwrap();
    berth_async(["apply", "-f", d], &[]).await.assert_success();
    let v1 = running_revisions(&docker, ns.name()).await;
    assert_eq!(v1.len(), 1, "{v1:?}");

    // Revision 2: once its wave is done (the new container ready, the old one removed: the
    // window begins), its process dies once; the restart policy brings it back and it is
    // healthy again well before the window ends.
    std::fs::write(&path, set(ns.name(), "2")).unwrap();
    let run = spawn_berth(["apply", "-f", d], &[]);
    eventually_sync("the wave to be done", WAIT, || run.stderr().contains(": removed ").then_some(()));
    let name = ready_line(&run.stderr()).expect("berth said which container is ready");
    let inspect = docker.inspect_container(&name, None).await.expect("inspect the new container");
    let pid = inspect.state.and_then(|s| s.pid).expect("a running container has a pid");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is the container's process.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0, "kill {pid}");
    eventually("the engine to restart it", WAIT, || {
        let docker = docker.clone();
        let name = name.clone();
        async move {
            let i = docker.inspect_container(&name, None).await.ok()?;
            (i.restart_count.unwrap_or(0) >= 1).then_some(())
        }
    })
    .await;
    let out = run.wait();
    out.assert_code(1);
    for needle in ["minReadySeconds", "restarted", name.as_str(), "rolled back to revision 1"] {
        assert!(out.stderr.contains(needle), "the error says {needle:?}:\n{out}");
    }
    assert_eq!(running_revisions(&docker, ns.name()).await, v1, "back on revision 1");
    let outcomes: Vec<String> =
        history(d, ns.name(), &[]).iter().map(|r| r["outcome"].as_str().unwrap().to_string()).collect();
    assert_eq!(outcomes, ["Ready", "Failed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_cannot_be_looked_at_inside_the_window_is_an_error_not_a_failed_revision() {
    ensure_echo_image();
    let ns = NamespaceGuard::new("minready-lost");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yaml");
    let d = dir.path().to_str().unwrap();
    std::fs::write(&path, set(ns.name(), "1")).unwrap();
    berth_async(["apply", "-f", d], &[]).await.assert_success();

    // Revision 2 through a proxy that goes away once the wave is done (the new container
    // ready, the old one removed): the look at the end of the window cannot reach the engine.
    std::fs::write(&path, set(ns.name(), "2")).unwrap();
    let proxy = CountingProxy::start(&local_socket_path());
    let via = proxy.docker_host();
    let run = spawn_berth(["apply", "-f", d], &[("DOCKER_HOST", via.as_str())]);
    eventually_sync("the wave to be done", WAIT, || run.stderr().contains(": removed ").then_some(()));
    drop(proxy);
    let out = run.wait();
    out.assert_code(1);
    assert!(out.stderr.contains("minReadySeconds check"), "it says the check could not look:\n{out}");
    assert!(!out.stderr.contains("rolled back") && !out.stderr.contains("rolling back"), "no rollback:\n{out}");

    // Nothing recorded as failed, nothing rolled back, nothing held: revision 2 still runs
    // and the next run (engine reachable) leaves it there.
    let outcomes: Vec<String> =
        history(d, ns.name(), &[]).iter().map(|r| r["outcome"].as_str().unwrap().to_string()).collect();
    assert_eq!(outcomes, ["Ready", "Progressing"]);
    let again = berth_async(["apply", "-f", d], &[]).await;
    again.assert_success();
    assert!(!again.stderr.contains("held") && !again.stdout.contains("held"), "not held:\n{again}");
    let docker = docker().await;
    let running = running_revisions(&docker, ns.name()).await;
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(name_has_revision(&out.stdout, &running[0]), "revision 2 runs: {running:?}\n{out}");
}

/// Whether the plan printed in `stdout` rolled out `revision` (`→ revision <hash>`).
fn name_has_revision(stdout: &str, revision: &str) -> bool {
    stdout.contains(&format!("revision {revision}"))
}
