//! StartFirst holds for a drift replacement too (issue 11, item 2).
//!
//! A drifted container of the current revision holds the set's deterministic name. Under
//! StartFirst berth renames it aside (`<name>.drifted-<id>`), creates and starts its
//! replacement under the name, waits until it is ready, and only then stops and removes the
//! renamed one: the set never has fewer ready replicas than it declares. A fixed hostPort
//! forces StopFirst (the copy binds the same port) and the plan says so.
//!
//! Checked under `berth watch` with a user's `docker exec` as the drift, and a probe that asks
//! every running replica of the set, round after round, all along.

use std::time::Duration;

use berth_tests::*;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions};

/// What the user runs in the container: ordinary, and not the container's healthcheck.
const USER_EXEC: [&str; 3] = ["/echo", "--probe", "--user-was-here"];

/// The running containers of `set` in `ns`: (name, id), sorted by name.
async fn running(docker: &Docker, ns: &str, set: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = names_ids_states(docker, ns)
        .await
        .into_iter()
        .filter(|(name, _, state)| name.starts_with(&format!("{ns}.{set}.")) && state == "running")
        .map(|(name, id, _)| (name, id))
        .collect();
    out.sort();
    out
}

/// The ids of `set`'s containers, once there are exactly `n`, all healthy.
async fn healthy_ids(docker: &Docker, ns: &str, set: &str, n: usize) -> Result<Vec<String>, String> {
    let all = running(docker, ns, set).await;
    if all.len() != n {
        return Err(format!("{} running, not {n}: {all:?}", all.len()));
    }
    for (name, id) in &all {
        let c = docker.inspect_container(id, None).await.map_err(|e| format!("inspect {name}: {e}"))?;
        let health = c.state.and_then(|s| s.health).and_then(|h| h.status).map(|s| s.to_string());
        if health.as_deref() != Some("healthy") {
            return Err(format!("{name} is {health:?}"));
        }
    }
    Ok(all.into_iter().map(|(_, id)| id).collect())
}

/// A user's `docker exec` into `id`, detached. runc now and then fails to start an exec on a
/// loaded machine: try again.
async fn user_exec(docker: &Docker, id: &str) {
    for attempt in 1.. {
        let cmd = Some(USER_EXEC.to_vec());
        let exec = docker.create_exec(id, CreateExecOptions { cmd, ..Default::default() }).await.expect("docker exec");
        match docker.start_exec(&exec.id, Some(StartExecOptions { detach: true, ..Default::default() })).await {
            Ok(_) => return,
            Err(e) if attempt < 5 => eprintln!("docker exec failed, trying again: {e}"),
            Err(e) => panic!("docker exec: {e}"),
        }
    }
}

/// Prints what berth said when the test fails.
struct ShowOnPanic<'a>(&'a BerthProcess);

impl Drop for ShowOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- berth watch stdout\n{}\n--- stderr\n{}", self.0.stdout(), self.0.stderr());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drifted_replica_serves_until_its_replacement_is_ready() {
    const REPLICAS: usize = 2;
    let docker = docker().await;
    let ns = NamespaceGuard::new("driftsf");
    let dir = tempfile::tempdir().unwrap();
    EchoSet::new(ns.name(), "web").replicas(REPLICAS as u32).write(dir.path());
    let watch = spawn_berth(["watch", "-f", dir.path().to_str().unwrap(), "--resync-seconds", "3600"], &[]);
    let _show = ShowOnPanic(&watch);
    let before = eventually("berth watch converged the set", Duration::from_secs(90), || async {
        let ids = healthy_ids(&docker, ns.name(), "web", REPLICAS).await?;
        if watch.stdout().contains("Converged:") { Ok(ids) } else { Err("no pass converged yet".to_string()) }
    })
    .await;

    let probe = ServingProbe::containers(&docker_host(), ns.name());
    let (name0, drifted) = running(&docker, ns.name(), "web").await.into_iter().next().expect("ordinal 0 runs");
    user_exec(&docker, &drifted).await;
    let after = eventually("a healthy replacement, the drifted one gone", Duration::from_secs(60), || async {
        let ids = healthy_ids(&docker, ns.name(), "web", REPLICAS).await?;
        if ids.contains(&drifted) { Err("the drifted container still runs".to_string()) } else { Ok(ids) }
    })
    .await;
    let report = probe.stop();

    eprintln!(
        "\ndrift replacement under StartFirst ({REPLICAS} replicas): lowest ready (answering) count {:?} over {} rounds \
         ({} with containers changing); lowest round {}",
        report.min_serving, report.rounds, report.changed_rounds, report.min_round
    );
    // The probe ran from before the exec until the replacement was healthy and the drifted
    // one gone: its rounds cover the whole replacement.
    assert_eq!(report.min_serving, Some(REPLICAS), "never fewer than {REPLICAS} answered: {report:?}");
    // The other replica was left alone; the replacement took the deterministic name.
    let kept: Vec<&String> = before.iter().filter(|id| **id != drifted).collect();
    assert!(kept.iter().all(|id| after.contains(id)), "only the drifted replica was replaced: {before:?} → {after:?}");
    let names: Vec<String> = running(&docker, ns.name(), "web").await.into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&name0), "the replacement runs under {name0}: {names:?}");
    // The progress lines, in the order of the steps.
    let progress = watch.stderr();
    let aside = format!("{name0}.drifted-{}", &drifted[..12]);
    let at = |line: String| progress.find(&line).unwrap_or_else(|| panic!("no {line:?} in\n{progress}"));
    let renamed = at(format!("renamed {name0} aside to {aside}"));
    let ready = renamed + progress[renamed..].find(&format!("ready {name0} ")).expect("the replacement is ready");
    let stopped = at(format!("stopped {aside}"));
    assert!(renamed < ready && ready < stopped, "rename aside, replacement ready, then stop:\n{progress}");
    assert!(!watch.stdout().contains("StopFirst forced"), "{}", watch.stdout());

    drop(_show);
    let out = watch.kill();
    assert!(!out.stdout.contains("panicked") && !out.stderr.contains("panicked"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drifted_replica_on_a_fixed_host_port_is_replaced_stop_first_and_the_plan_says_why() {
    let docker = docker().await;
    let ns = NamespaceGuard::new("driftsfport");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    EchoSet::new(ns.name(), "web").host_port(port).write(dir.path());
    let watch = spawn_berth(["watch", "-f", dir.path().to_str().unwrap(), "--resync-seconds", "3600"], &[]);
    let _show = ShowOnPanic(&watch);
    let before = eventually("berth watch converged the set", Duration::from_secs(90), || async {
        let ids = healthy_ids(&docker, ns.name(), "web", 1).await?;
        if watch.stdout().contains("Converged:") { Ok(ids) } else { Err("no pass converged yet".to_string()) }
    })
    .await;
    user_exec(&docker, &before[0]).await;
    eventually("a healthy replacement on the port", Duration::from_secs(60), || async {
        let ids = healthy_ids(&docker, ns.name(), "web", 1).await?;
        if ids == before { Err("the drifted container still runs".to_string()) } else { Ok(()) }
    })
    .await;
    let out = watch.stdout();
    assert!(out.contains(&format!("StopFirst forced: hostPort 127.0.0.1:{port}/tcp is fixed")), "{out}");
    assert!(!out.contains(".drifted-"), "no rename aside: the old container stops first\n{out}");
    let answer = http_get(&format!("127.0.0.1:{port}"));
    assert_eq!(answer.map(|(code, _)| code), Some(200), "the replacement answers on the port");
    drop(_show);
    watch.kill();
}
