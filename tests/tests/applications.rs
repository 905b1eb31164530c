//! Applications, not just containers (issue 13): sets of one namespace find each other by
//! name, and a set that keeps data in a named volume never has two writers by default.
//!
//! - A client set whose own healthcheck fetches `http://web:8080/` and `http://web-1:8080/`
//!   turns healthy only when the engine's DNS answers to the set's name and to
//!   `<set>-<ordinal>` on the namespace's default network, which berth made on demand
//!   (no network in the YAML); `berth delete` removes that network with the last set.
//! - Sets rolled out side by side make one default network, not one each.
//! - A set with a read-write named volume and no `strategy.type` is replaced StopFirst (the
//!   plan says why, the old container is gone before the new one starts); with
//!   `strategy.type: StartFirst` given, the new one starts first.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_tests::health_images::HealthImage;
use berth_tests::*;
use bollard::Docker;
use bollard::query_parameters::ListNetworksOptions;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn set(ns: &str, name: &str, replicas: u32, template: Value) -> Value {
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicasPerHost": replicas, "strategy": {"progressDeadlineSeconds": 30}, "template": template}
    })
}

fn echo_template(greeting: &str) -> Value {
    json!({
        "image": ECHO_IMAGE, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 5,
        "env": [{"name": "GREETING", "value": greeting}],
        "ports": [{"containerPort": ECHO_PORT}],
        "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}
    })
}

async fn apply(path: &str) -> BerthOutput {
    berth_async(["apply", "-f", path], &[]).await
}

/// Networks named exactly `name`.
async fn networks_named(docker: &Docker, name: &str) -> Vec<bollard::models::Network> {
    let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
    let list = docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) })).await.expect("list networks");
    list.into_iter().filter(|n| n.name.as_deref() == Some(name)).collect()
}

/// The aliases container `name` answers to on network `net`.
async fn aliases(docker: &Docker, name: &str, net: &str) -> Vec<String> {
    let c = docker.inspect_container(name, None).await.expect("inspect container");
    let nets = c.network_settings.and_then(|n| n.networks).unwrap_or_default();
    let endpoint = nets.get(net).unwrap_or_else(|| panic!("{name} is not on {net}: {:?}", nets.keys()));
    endpoint.aliases.clone().unwrap_or_default()
}

async fn healthy(docker: &Docker, ns: &str, set: &str, n: usize) -> Result<(), String> {
    let all: Vec<_> = containers_in(docker, ns)
        .await
        .into_iter()
        .filter(|c| c.names.iter().flatten().any(|x| x.starts_with(&format!("/{ns}.{set}."))))
        .collect();
    let ok = all.iter().filter(|c| c.status.as_deref().unwrap_or_default().contains("(healthy)")).count();
    if ok == n && all.len() == n { Ok(()) } else { Err(format!("{ok} of {} healthy, want {n}", all.len())) }
}

#[tokio::test(flavor = "multi_thread")]
async fn sets_of_a_namespace_reach_each_other_by_name_on_their_default_network() {
    ensure_echo_image();
    let shell_image = HealthImage::Shell.ensure();
    let docker = docker().await;
    let guard = NamespaceGuard::new("names");
    let ns = guard.name().to_string();
    let dir = tempfile::tempdir().unwrap();
    // The client's own readiness is the name lookup: healthy only if `web` and `web-1` answer.
    let client = json!({
        "image": shell_image, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 1,
        "healthcheck": {"test": ["CMD-SHELL",
            "wget -q -O /dev/null http://web:8080/ && wget -q -O /dev/null http://web-1:8080/"],
            "interval": "300ms", "timeout": "2s", "retries": 3}
    });
    let path = write_documents(
        dir.path(),
        "app.yaml",
        &[set(&ns, "web", 2, echo_template("hi")), set(&ns, "client", 1, client)],
    );
    let out = apply(&path).await;
    out.assert_success();
    eventually("web's two replicas healthy", WAIT, || healthy(&docker, &ns, "web", 2)).await;
    eventually("the client healthy: it reached web and web-1 by name", WAIT, || healthy(&docker, &ns, "client", 1))
        .await;

    let net = format!("{ns}_default");
    let nets = networks_named(&docker, &net).await;
    assert_eq!(nets.len(), 1, "one default network {net}: {nets:?}");
    let labels = nets[0].labels.clone().unwrap_or_default();
    assert_eq!(labels.get("berth.dev/managed-by").map(String::as_str), Some("berth"), "{labels:?}");
    let webs: Vec<String> = names_ids_states(&docker, &ns)
        .await
        .into_iter()
        .map(|(name, _, _)| name)
        .filter(|n| n.starts_with(&format!("{ns}.web.")))
        .collect();
    assert_eq!(webs.len(), 2, "{webs:?}");
    for name in &webs {
        let ordinal = name.rsplit('.').next().expect("<ns>.<set>.<revision>.<ordinal>");
        let a = aliases(&docker, name, &net).await;
        for want in ["web".to_string(), format!("web-{ordinal}")] {
            assert!(a.contains(&want), "{name} answers to {want} on {net}: {a:?}");
        }
    }

    // The same files again change nothing; deleting the application removes its network.
    let again = apply(&path).await;
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "{again}");
    let deleted = berth_async(["delete", "-f", &path], &[]).await;
    deleted.assert_success();
    assert!(deleted.stdout.contains(&format!("removed network {net}")), "{deleted}");
    assert!(networks_named(&docker, &net).await.is_empty(), "{deleted}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sets_rolled_out_side_by_side_make_one_default_network() {
    ensure_echo_image();
    let docker = docker().await;
    let guard = NamespaceGuard::new("one-net");
    let ns = guard.name().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut t = echo_template("hi");
    t.as_object_mut().unwrap().remove("healthcheck");
    let sets: Vec<Value> = (0..8).map(|i| set(&ns, &format!("s{i}"), 1, t.clone())).collect();
    let path = write_documents(dir.path(), "many.yaml", &sets);
    let out = apply(&path).await;
    out.assert_success();
    let nets = networks_named(&docker, &format!("{ns}_default")).await;
    assert_eq!(nets.len(), 1, "eight sets made {} networks of one name:\n{out}", nets.len());
    assert_eq!(names_ids_states(&docker, &ns).await.len(), 8, "{out}");
}

/// `(action, container name)` of the namespace's container events since `since`, oldest first,
/// without health verdicts.
async fn events_since(docker: &Docker, ns: &str, since: SystemTime) -> Vec<(String, String)> {
    container_events(docker, ns, since)
        .await
        .iter()
        .map(action_and_name)
        .filter(|(action, _)| !action.starts_with("health_status"))
        .collect()
}

/// Where in `events` the first `action` of a container whose name starts with `prefix` is.
fn position(events: &[(String, String)], action: &str, prefix: &str) -> usize {
    events
        .iter()
        .position(|(a, n)| a == action && n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {action} of {prefix}*: {events:?}"))
}

fn write(dir: &Path, doc: &Value) -> String {
    write_documents(dir, "db.yaml", std::slice::from_ref(doc))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_with_a_read_write_volume_is_replaced_stop_first_unless_start_first_is_declared() {
    ensure_echo_image();
    let docker = docker().await;
    let guard = NamespaceGuard::new("one-writer");
    let ns = guard.name().to_string();
    let volume = format!("{ns}-data");
    let dir = tempfile::tempdir().unwrap();
    let stateful = |greeting: &str, strategy: Option<&str>| {
        let mut t = echo_template(greeting);
        t["mounts"] = json!([{"type": "volume", "source": volume, "target": "/data"}]);
        let mut s = set(&ns, "db", 1, t);
        if let Some(kind) = strategy {
            s["spec"]["strategy"]["type"] = json!(kind);
        }
        s
    };
    apply(&write(dir.path(), &stateful("v1", None))).await.assert_success();
    eventually("db healthy", WAIT, || healthy(&docker, &ns, "db", 1)).await;
    let v1 = names_ids_states(&docker, &ns).await[0].0.clone();

    // A new revision, strategy left to berth: StopFirst, and said why.
    let path = write(dir.path(), &stateful("v2", None));
    let plan = berth_async(["plan", "-f", &path], &[]).await;
    plan.assert_code(2);
    let why = format!("StopFirst forced: volume {volume} is mounted read-write");
    assert!(plan.stdout.contains(&why), "plan says why:\n{plan}");
    let since = SystemTime::now();
    let out = apply(&path).await;
    out.assert_success();
    eventually("db v2 healthy", WAIT, || healthy(&docker, &ns, "db", 1)).await;
    let events = events_since(&docker, &ns, since).await;
    let v2 = names_ids_states(&docker, &ns).await[0].0.clone();
    assert_ne!(v1, v2);
    let (old_died, new_started) = (position(&events, "die", &v1), position(&events, "start", &v2));
    assert!(old_died < new_started, "the old writer is gone before the new one starts: {events:?}");
    assert!(
        position(&events, "create", &v2) < old_died,
        "the replacement is created before the old one stops (the outage is the start only): {events:?}"
    );

    // The user says StartFirst: then the new one starts while the old one still runs.
    let since = SystemTime::now();
    let out = apply(&write(dir.path(), &stateful("v3", Some("StartFirst")))).await;
    out.assert_success();
    assert!(!out.stdout.contains("StopFirst forced"), "{out}");
    eventually("db v3 healthy", WAIT, || healthy(&docker, &ns, "db", 1)).await;
    let events = events_since(&docker, &ns, since).await;
    let v3 = names_ids_states(&docker, &ns).await[0].0.clone();
    assert!(
        position(&events, "start", &v3) < position(&events, "die", &v2),
        "declared StartFirst starts the new one first: {events:?}"
    );
    let _ = docker.remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
}
