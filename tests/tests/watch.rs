//! `berth watch -f DIR`: the standalone way to keep a folder and its hosts converged.
//!
//! Drift behind berth's back is healed from the engine's events (a killed container, an exec
//! into one), or reported under `driftPolicy: Report`; a changed file rolls out; a broken file
//! touches nothing until it is fixed. The heal times are printed (`--nocapture`).

use std::time::{Duration, Instant};

use berth_tests::*;
use bollard::Docker;
use bollard::models::ContainerStateStatusEnum;

/// The set's one container: (id, running and healthy).
async fn the_container(docker: &Docker, ns: &str) -> Option<(String, String)> {
    let list = names_ids_states(docker, ns).await;
    let [(name, id, _)] = list.as_slice() else { return None };
    let c = docker.inspect_container(name, None).await.ok()?;
    let state = c.state?;
    let healthy = state.status == Some(ContainerStateStatusEnum::RUNNING)
        && state.health.and_then(|h| h.status).map(|s| s.to_string()) == Some("healthy".into());
    healthy.then(|| (name.clone(), id.clone()))
}

/// Wait until the set's container is a healthy one other than `old`; returns it and the time.
async fn replaced(docker: &Docker, ns: &str, old: &str, since: Instant) -> ((String, String), f64) {
    let c = eventually("a healthy replacement", Duration::from_secs(30), || async {
        the_container(docker, ns).await.filter(|(_, id)| id != old)
    })
    .await;
    (c, since.elapsed().as_secs_f64())
}

fn docker_cli(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("docker").args(args).output().expect("the docker CLI runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// `docker exec -d` into the set's healthy container; returns its id. Detached, since berth
/// may stop the container before a foreground exec returns. Retried: runc now and then fails
/// an exec with "write init-p: broken pipe" (seen in CI on a loaded machine), which says
/// nothing about berth; the drift only exists once an exec started.
async fn exec_into(docker: &Docker, ns: &str, only: &str) -> String {
    eventually("an exec into the set's container", Duration::from_secs(20), || async {
        let (_, id) = the_container(docker, ns).await.ok_or("no healthy container")?;
        if id != only {
            // An exec the CLI reported as failed had started after all (the engine sent
            // `exec_start`), and berth replaced the container: the drift happened.
            return Ok(only.to_string());
        }
        docker_cli(&["exec", "-d", &id, "/echo", "--help"]).map(|()| id)
    })
    .await
}

/// Prints what `berth watch` said when the test fails, for the reader of the failure.
struct ShowOnPanic<'a>(&'a BerthProcess);

impl Drop for ShowOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- berth watch stdout\n{}\n--- stderr\n{}", self.0.stdout(), self.0.stderr());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_heals_drift_rolls_out_file_changes_and_ignores_broken_files() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("watch");
    let dir = tempfile::tempdir().unwrap();
    let set = EchoSet::new(ns.name(), "web").env("GREETING", "one");
    let file = set.write(dir.path());
    let watch = spawn_berth(["watch", "-f", dir.path().to_str().unwrap(), "--resync-seconds", "3600"], &[]);
    let show = ShowOnPanic(&watch);

    // Done means berth saw it ready too: a container killed while berth still waits for it to
    // turn ready fails its revision, which is not what this test is about.
    let converged = |runs: usize| {
        let watch = &watch;
        let docker = &docker;
        let ns = ns.name();
        async move {
            eventually("berth watch converged the set", Duration::from_secs(60), || async {
                let c = the_container(docker, ns).await?;
                (watch.stdout().matches("Converged:").count() >= runs).then_some(c)
            })
            .await
        }
    };
    let (_, first) = converged(1).await;

    // Killed behind berth's back: replaced from the engine's `die` event.
    let t = Instant::now();
    docker_cli(&["kill", &first]).unwrap();
    let ((_, second), killed) = replaced(&docker, ns.name(), &first, t).await;
    converged(2).await;

    // Exec'd into: the container can no longer be trusted; replaced from `exec_start`.
    let t = Instant::now();
    let second = exec_into(&docker, ns.name(), &second).await;
    let ((name, third), exec) = replaced(&docker, ns.name(), &second, t).await;
    // Replaced because of the exec, not for some other reason.
    assert!(watch.stdout().contains("exec_start: /echo --help"), "{}", watch.stdout());
    eprintln!("watch heal times (drift → replacement running and healthy): killed {killed:.2}s, exec {exec:.2}s");
    assert!(name.contains(".web."), "{name}");

    // A file change rolls out a new revision.
    set.clone().env("GREETING", "two").write(dir.path());
    let (name, _) = eventually("the new revision runs", Duration::from_secs(60), || async {
        let c = the_container(&docker, ns.name()).await?;
        (c.1 != third).then_some(c)
    })
    .await;
    let addr = container_addr(&docker, &name).await;
    assert_eq!(http_request(&addr, "GET", "/env/GREETING", &[]).map(|(_, b)| b).as_deref(), Some("two"));

    // A broken file: reported, nothing touched.
    let before = names_ids_states(&docker, ns.name()).await;
    std::fs::write(&file, set.yaml().replace("replicasPerHost: 1", "replicasPerHost: -3")).unwrap();
    eventually("the error is reported", Duration::from_secs(20), || async {
        watch.stderr().contains("replicasPerHost").then_some(())
    })
    .await;
    assert_eq!(names_ids_states(&docker, ns.name()).await, before, "a broken file touches nothing");

    // Report: an exec is left as it is and said.
    std::fs::write(&file, set.yaml().replace("spec:\n", "spec:\n  driftPolicy: Report\n")).unwrap();
    let (_, kept) = eventually("the set runs under Report", Duration::from_secs(60), || async {
        let c = the_container(&docker, ns.name()).await?;
        watch.stdout().contains("No changes").then_some(c)
    })
    .await;
    exec_into(&docker, ns.name(), &kept).await;
    eventually("the exec is reported", Duration::from_secs(20), || async {
        watch.stdout().contains("exec'd into").then_some(())
    })
    .await;
    assert_eq!(the_container(&docker, ns.name()).await.map(|c| c.1), Some(kept), "left as it is");
    drop(show);
    let out = watch.kill();
    assert!(!out.stdout.contains("panicked") && !out.stderr.contains("panicked"), "{out}");
}
