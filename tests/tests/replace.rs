//! Replacing, never mutating: a changed template means new containers of a new revision,
//! health-gated, with the old ones removed only after; data on named volumes survives.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_env_change_replaces_exactly_the_affected_containers() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("envchange");
    let dir = tempfile::tempdir().unwrap();
    let web = EchoSet::new(ns.name(), "web").replicas(2).env("GREETING", "hi");
    let other = EchoSet::new(ns.name(), "other").replicas(1).env("GREETING", "hi");
    web.write(dir.path());
    other.write(dir.path());
    let dir_s = dir.path().to_str().unwrap();
    berth_async(["apply", "-f", dir_s], &[]).await.assert_success();
    let before = names_ids_states(&docker, ns.name()).await;
    assert_eq!(before.len(), 3);

    web.clone().env("GREETING", "hello").write(dir.path());
    let plan = berth_async(["plan", "-f", dir_s], &[]).await;
    plan.assert_code(2);
    assert!(plan.stdout.contains("env.GREETING: \"hi\" → \"hello\""), "plan explains which field changed:\n{plan}");
    assert_eq!(plan.stdout.matches("~ replace").count(), 2, "two replacements planned:\n{plan}");
    assert!(!plan.stdout.contains(&format!("set {}/other", ns.name())), "the other set is not in the plan:\n{plan}");

    let json = berth_async(["plan", "-o", "json", "-f", dir_s], &[]).await;
    json.assert_code(2);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan -o json is JSON");
    assert_eq!(v["pending"], true);

    berth_async(["apply", "-f", dir_s], &[]).await.assert_success();
    let after = names_ids_states(&docker, ns.name()).await;
    assert_eq!(after.len(), 3, "no leftovers: {after:?}");

    let ids_before: BTreeSet<&String> = before.iter().map(|c| &c.1).collect();
    let (web_after, other_after): (Vec<_>, Vec<_>) = after.iter().partition(|c| c.0.contains(".web."));
    for c in &web_after {
        assert!(!ids_before.contains(&c.1), "web container {} is new", c.0);
        let addr = container_addr(&docker, &c.0).await;
        let (_, body) = http_request(&addr, "GET", "/env/GREETING", &[]).expect("answers");
        assert_eq!(body, "hello", "{} runs the new env", c.0);
    }
    assert_eq!(other_after.len(), 1);
    assert!(ids_before.contains(&other_after[0].1), "the unchanged set keeps its container");
    // Old web containers are gone, not stopped and left.
    for c in before.iter().filter(|c| c.0.contains(".web.")) {
        assert!(!after.iter().any(|a| a.1 == c.1), "old container {} removed", c.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_first_keeps_serving_during_a_replacement() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("startfirst");
    let dir = tempfile::tempdir().unwrap();
    let set = EchoSet::new(ns.name(), "web").replicas(1).env("V", "1");
    let file = set.write(dir.path());
    let file_s = file.to_str().unwrap().to_string();
    berth_async(["apply", "-f", &file_s], &[]).await.assert_success();
    let old = names_ids_states(&docker, ns.name()).await;
    let old_addr = container_addr(&docker, &old[0].0).await;

    set.clone().env("V", "2").write(dir.path());
    let run = spawn_berth(["apply", "-f", &file_s], &[]);
    // While the rollout runs, the old container keeps answering until the new one is ready.
    let mut saw_both = false;
    let mut run = Some(run);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Some(mut r) = run.take() {
        let now = names_ids_states(&docker, ns.name()).await;
        let old_running = now.iter().any(|c| c.1 == old[0].1 && c.2 == "running");
        let new_running = now.iter().any(|c| c.1 != old[0].1 && c.2 == "running");
        if old_running && new_running {
            saw_both = true;
        }
        if old_running && !new_running {
            assert_eq!(http_get(&old_addr).map(|(s, _)| s), Some(200), "the old container serves until replaced");
        }
        assert!(now.iter().any(|c| c.2 == "running"), "at every instant some container of the set runs: {now:?}");
        if r.is_running() {
            assert!(std::time::Instant::now() < deadline, "apply took too long");
            run = Some(r);
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else {
            r.wait().assert_success();
        }
    }
    assert!(saw_both, "old and new ran side by side (StartFirst)");
    let after = names_ids_states(&docker, ns.name()).await;
    assert_eq!(after.len(), 1);
    assert_ne!(after[0].1, old[0].1);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_on_a_named_volume_survives_a_replacement_and_a_delete() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("volume");
    let volume = format!("{}-data", ns.name());
    let dir = tempfile::tempdir().unwrap();
    let set = EchoSet::new(ns.name(), "db").volume(&volume, "/data").env("BOOT_LOG", "/data/boot.log");
    let file = set.write(dir.path());
    let file_s = file.to_str().unwrap().to_string();
    berth_async(["apply", "-f", &file_s], &[]).await.assert_success();

    set.clone().env("V", "2").write(dir.path());
    berth_async(["apply", "-f", &file_s], &[]).await.assert_success();
    let now = names_ids_states(&docker, ns.name()).await;
    assert_eq!(now.len(), 1);
    let addr = container_addr(&docker, &now[0].0).await;
    let (status, log) = http_request(&addr, "GET", "/file/data/boot.log", &[]).expect("answers");
    assert_eq!(status, 200);
    assert_eq!(log.lines().count(), 2, "both containers' boot lines are on the volume:\n{log}");

    // delete keeps the volume; delete --volumes removes it.
    berth_async(["delete", "-f", &file_s], &[]).await.assert_success();
    assert!(containers_in(&docker, ns.name()).await.is_empty());
    docker.inspect_volume(&volume).await.expect("delete without --volumes keeps the named volume");
    berth_async(["delete", "--volumes", "-f", &file_s], &[]).await.assert_success();
    assert!(docker.inspect_volume(&volume).await.is_err(), "delete --volumes removes it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_revision_stops_the_rollout_and_the_old_container_keeps_serving() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("failing");
    let dir = tempfile::tempdir().unwrap();
    let set = EchoSet::new(ns.name(), "web").replicas(2);
    let file = set.write(dir.path());
    let file_s = file.to_str().unwrap().to_string();
    berth_async(["apply", "-f", &file_s], &[]).await.assert_success();
    let before = names_ids_states(&docker, ns.name()).await;

    // A revision whose entrypoint does not exist: its containers never become ready.
    let mut bad = set.clone();
    bad.extra_template = "    command: [\"/missing-binary\"]\n".into();
    bad.write(dir.path());
    let out = berth_async(["apply", "-f", &file_s], &[]).await;
    out.assert_code(1);
    assert!(out.stderr.contains("missing-binary") || out.stderr.contains("no such file"), "the error says why:\n{out}");
    let after = names_ids_states(&docker, ns.name()).await;
    for (name, id, _) in &before {
        let still = after.iter().find(|c| &c.1 == id).unwrap_or_else(|| panic!("old {name} was kept: {after:?}"));
        assert_eq!(still.2, "running", "old {name} still runs");
        assert_eq!(http_get(&container_addr(&docker, name).await).map(|(s, _)| s), Some(200));
    }
}
