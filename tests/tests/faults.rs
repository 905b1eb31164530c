//! Faults on the way of a rollout, each with its check:
//!
//! - dockerd SIGKILLed and started again mid-rollout, as it starts the first new container (a
//!   test host with live-restore): apply again converges, no duplicates, and replicas kept answering all along (StartFirst: the
//!   old revision was never all gone, not even partly);
//! - the registry down while a rollout needs a pull: nothing is stopped (the pull comes
//!   before any change, StopFirst included), the old container answers throughout, the error
//!   names the set and the image; the registry back, the rollout converges;
//! - a test host's data root full when the new container is created: a clear error, the old
//!   container (StopFirst, forced by its fixed host port) still answers and is not removed;
//!   space freed, the rollout converges;
//! - the Kubernetes API unreachable for a while: the operator leaves the hosts as they are
//!   (no container stopped, removed or created) and, once the API is back, converges a spec
//!   change made after it.
//!
//! - a host partitioned (its veth down) mid-rollout of the operator: the host before it
//!   finishes, the cut-off host keeps its old container running, and after the heal the set
//!   converges there too. (The standalone variant is `rollout.rs`'s
//!   `a_host_cut_off_mid_rollout_is_reported_and_converges_after_heal`.)

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use berth_crd::{ContainerSet, DockerHost};
use berth_tests::*;
use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::block_in_place;

/// Deadline of every wait for convergence (a loaded 2-core machine; not a measure of speed).
const WAIT: Duration = Duration::from_secs(120);

const SET: &str = "web";

/// The set: `replicas` echo replicas saying `v` in `$V`, healthchecked, with `extra` merged
/// into its spec (strategy, ports, image...).
fn web(ns: &str, v: &str, replicas: u32, extra: Value) -> Value {
    let mut set = json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": SET, "namespace": ns},
        "spec": {
            "replicasPerHost": replicas,
            "strategy": {"type": "StartFirst", "progressDeadlineSeconds": 60},
            "template": {
                "image": ECHO_IMAGE, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 5,
                "env": [{"name": "V", "value": v}],
                "ports": [{"containerPort": ECHO_PORT}],
                "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "timeout": "1s", "retries": 3}
            }
        }
    });
    merge(&mut set["spec"], &extra);
    set
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// JSON is YAML: one document per object.
fn write_docs(path: &Path, docs: &[Value]) {
    let text: Vec<String> = docs.iter().map(|d| serde_json::to_string_pretty(d).expect("JSON")).collect();
    std::fs::write(path, text.join("\n---\n")).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A folder declaring one test host (over its unix socket) as DockerHost `h1`, and the set.
struct Input {
    dir: tempfile::TempDir,
}

impl Input {
    fn new(ns: &str, endpoint: Option<&str>) -> Input {
        let dir = tempfile::Builder::new().prefix("berth-faults-").tempdir().expect("a temp dir");
        if let Some(endpoint) = endpoint {
            let host = json!({
                "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
                "metadata": {"name": "h1", "namespace": ns}, "spec": {"endpoint": endpoint}
            });
            write_docs(&dir.path().join("hosts.yaml"), &[host]);
        }
        Input { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 temp path")
    }

    fn declare(&self, set: &Value) {
        write_docs(&self.dir.path().join("set.yaml"), std::slice::from_ref(set));
    }

    async fn apply(&self) -> BerthOutput {
        berth_async(["apply", "-f", self.path()], &[]).await
    }

    /// `berth plan` finds nothing to do.
    async fn assert_converged(&self) {
        let plan = berth_async(["plan", "-f", self.path()], &[]).await;
        assert_eq!(plan.code, Some(0), "converged: nothing left to do:\n{plan}");
    }
}

/// `(name, id, state)` of the namespace's containers; one per ordinal, all running, one
/// revision: no duplicates. Returns the revision.
async fn assert_one_per_ordinal(docker: &Docker, ns: &str, replicas: u32) -> String {
    let all = containers_in(docker, ns).await;
    let listing = names_ids_states(docker, ns).await;
    let mut ordinals: Vec<String> = Vec::new();
    let mut revisions = std::collections::BTreeSet::new();
    for c in &all {
        let labels = c.labels.clone().unwrap_or_default();
        ordinals.push(labels.get("berth.dev/ordinal").cloned().unwrap_or_default());
        revisions.insert(labels.get("berth.dev/revision").cloned().unwrap_or_default());
        assert_eq!(c.state.map(|s| s.to_string()).as_deref(), Some("running"), "every replica runs: {listing:?}");
    }
    ordinals.sort();
    let expected: Vec<String> = (0..replicas).map(|o| o.to_string()).collect();
    assert_eq!(ordinals, expected, "one container per ordinal, no duplicates: {listing:?}");
    assert_eq!(revisions.len(), 1, "a single revision: {listing:?}");
    revisions.into_iter().next().unwrap()
}

/// What happened to the namespace's containers on an engine since `since`: `action name`,
/// without healthcheck execs and health verdicts.
async fn changes_since(docker: &Docker, ns: &str, since: SystemTime) -> Vec<String> {
    container_events(docker, ns, since)
        .await
        .iter()
        .map(action_and_name)
        .filter(|(action, _)| !action.starts_with("health_status"))
        .map(|(action, name)| format!("{action} {name}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dockerd_restarted_mid_rollout_converges_without_duplicates_and_never_drops_a_replica() {
    let t0 = Instant::now();
    let mut host =
        block_in_place(|| RemoteHost::start_with(61, HostOptions { live_restore: true, ..Default::default() }));
    let ns = unique_ns("fault-dockerd");
    let d = host.docker_unix().await;
    // berth reaches the host through a proxy, so the test sees its requests.
    let proxy = CountingProxy::start(&host.unix_socket());
    let input = Input::new(&ns, Some(&proxy.docker_host()));
    let replicas = 3;
    input.declare(&web(&ns, "1", replicas, json!({})));
    input.apply().await.assert_success();
    let v1 = assert_one_per_ordinal(&d, &ns, replicas).await;

    let probe = ServingProbe::containers_in_netns(&host.unix_endpoint(), &ns, host.name());
    input.declare(&web(&ns, "2", replicas, json!({})));
    proxy.reset();
    let run = spawn_berth(["apply", "-f", input.path()], &[]);
    // The engine dies while it starts the first new container: the moment that leaves the most
    // behind (a runtime task the restarted engine does not know it started).
    let starting = |r: &Request| r.method == "POST" && r.endpoint().ends_with("/start");
    eventually("berth to start a new container", WAIT, || async { proxy.count_where(starting) > 0 }).await;
    host.kill_engine();
    let killed_at = Instant::now();
    let out = match block_in_place(|| run.wait_timeout(WAIT)) {
        Ok(out) => out,
        Err(run) => panic!("apply still runs {WAIT:?} after its engine died:\n{}", run.kill()),
    };
    println!("apply with dockerd killed mid-rollout ended after {:?}: exit {:?}", killed_at.elapsed(), out.code);
    assert_eq!(out.code, Some(1), "apply reports the lost engine:\n{out}");
    assert!(out.stderr.contains("h1"), "the error names the host:\n{out}");

    block_in_place(|| host.start_engine());
    let t = Instant::now();
    let again = input.apply().await;
    again.assert_success();
    println!("apply after the engine restart converged in {:?}:\n{}", t.elapsed(), again.stderr.trim());
    let serving = probe.stop();
    input.assert_converged().await;
    let v2 = assert_one_per_ordinal(&d, &ns, replicas).await;
    assert_ne!(v1, v2);
    let min = serving.min_serving.unwrap_or(0);
    println!(
        "min replicas answering: {min}/{replicas} over {} probe rounds, {} of them while containers changed ({}); test took {:?}",
        serving.rounds,
        serving.changed_rounds,
        serving.min_round,
        t0.elapsed()
    );
    assert!(serving.rounds >= 10, "too few probe rounds: {serving:?}");
    assert_eq!(min, replicas as usize, "StartFirst with live-restore: every replica answered throughout");
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_down_stops_nothing_and_the_rollout_converges_when_it_is_back() {
    ensure_echo_image();
    let docker = docker().await;
    let mut registry = Registry::start(None);
    let ns = NamespaceGuard::new("fault-registry");
    let _volumes = VolumeGuard::new(&docker_host(), ns.name(), &[]);
    let image = registry.push(&docker, ECHO_IMAGE, &format!("{}/echo:v2", ns.name())).await;
    let _tag = TagGuard(image.clone());
    let opts = RemoveImageOptions { noprune: true, ..Default::default() };
    docker.remove_image(&image, Some(opts), None).await.expect("untag the pushed image");

    // A fixed host port: the new revision must replace StopFirst, the order in which a tool
    // that pulls late would stop the old container first.
    let port = free_port();
    let ports = json!({"ports": [{"containerPort": ECHO_PORT, "hostPort": port, "hostIP": "127.0.0.1"}]});
    let input = Input::new(ns.name(), None);
    input.declare(&web(ns.name(), "1", 1, json!({"template": ports})));
    input.apply().await.assert_success();
    let before = names_ids_states(&docker, ns.name()).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    registry.stop();
    let with_image = json!({"template": {"image": image, "imagePullPolicy": "IfNotPresent", "ports": ports["ports"]}});
    input.declare(&web(ns.name(), "2", 1, with_image.clone()));
    let since = SystemTime::now();
    let probe = ServingProbe::addresses(vec![addr]);
    let out = input.apply().await;
    let serving = probe.stop();
    assert_eq!(out.code, Some(1), "the rollout fails:\n{out}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains(&image), "the error names the image:\n{out}");
    assert!(said.contains(&format!("{}/{SET}", ns.name())), "the error names the set:\n{out}");
    assert_eq!(names_ids_states(&docker, ns.name()).await, before, "the old container runs on, untouched");
    let changed = changes_since(&docker, ns.name(), since).await;
    assert!(changed.is_empty(), "nothing was stopped, created or removed: {changed:?}");
    assert_eq!(serving.min_serving, Some(1), "the old container answered throughout: {serving:?}");
    println!("registry down: apply failed as it should:\n{}", out.stderr.trim());

    registry.restart();
    input.apply().await.assert_success();
    input.assert_converged().await;
    let after = names_ids_states(&docker, ns.name()).await;
    assert!(after.len() == 1 && after[0].1 != before[0].1, "replaced once the image could be pulled: {after:?}");
    let c = docker.inspect_container(&after[0].1, None).await.unwrap();
    let runs = c.config.and_then(|c| c.image).unwrap_or_default();
    assert!(runs.starts_with(&image), "runs the pulled image: {runs}");
    assert_eq!(http_request(&addr.to_string(), "GET", "/env/V", &[]), Some((200, "2".into())));
}

/// Fills the file system of `dir` with a file `dir/fill` until only `spare` bytes are left;
/// returns the fill's size.
fn fill(dir: &Path, spare: u64) -> u64 {
    use std::io::Write as _;
    let mut f = std::fs::File::create(dir.join("fill")).expect("create the fill file");
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    // The last partial pages, byte by byte in small writes.
    while let Ok(n) = f.write(&chunk[..512]) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    let kept = written.saturating_sub(spare);
    f.set_len(kept).expect("free the spare bytes");
    kept
}

/// What a full data root keeps free (tmpfs pages are 4 KiB).
const SPARE: u64 = 16 << 10;

#[tokio::test(flavor = "multi_thread")]
async fn a_full_data_root_at_create_is_a_clear_error_and_the_old_container_serves_on() {
    let host = block_in_place(|| {
        RemoteHost::start_with(62, HostOptions { data_root_bytes: Some(96 << 20), ..Default::default() })
    });
    let ns = unique_ns("fault-disk");
    let d = host.docker_unix().await;
    let input = Input::new(&ns, Some(&host.unix_endpoint()));
    let port = 9000;
    let ports = json!({"ports": [{"containerPort": ECHO_PORT, "hostPort": port}]});
    input.declare(&web(&ns, "1", 1, json!({"template": ports})));
    input.apply().await.assert_success();
    let before = names_ids_states(&d, &ns).await;
    let addr: std::net::SocketAddr = format!("{}:{port}", host.ip()).parse().unwrap();
    eventually("the replica answers on the host's address", WAIT, || async move { http_get(&addr.to_string()) }).await;

    // Room for berth's history record (a few bolt pages in the engine's volume database),
    // none for a container's files: the new revision's container is what the full disk refuses.
    let filled = block_in_place(|| fill(&host.data_root(), SPARE));
    println!("filled the data root with {} MiB", filled >> 20);
    input.declare(&web(&ns, "2", 1, json!({"template": ports})));
    let since = SystemTime::now();
    let probe = ServingProbe::addresses(vec![addr]);
    let out = input.apply().await;
    let serving = probe.stop();
    println!("apply on a full disk:\n{}", out.stderr.trim());
    assert_eq!(out.code, Some(1), "the rollout fails:\n{out}");
    assert!(out.stderr.contains("no space left on device"), "the error says why:\n{out}");
    assert!(out.stderr.contains("h1"), "the error names the host:\n{out}");
    let now: Vec<_> = names_ids_states(&d, &ns).await.into_iter().filter(|(_, _, s)| s == "running").collect();
    assert_eq!(now, before, "the old container runs on");
    // (The engine destroys the half-made new container itself.)
    let changed = changes_since(&d, &ns, since).await;
    let old = &before[0].0;
    assert!(
        !changed
            .iter()
            .any(|c| c.ends_with(old.as_str()) && ["kill", "die", "stop", "destroy"].iter().any(|a| c.starts_with(a))),
        "the old container was neither stopped nor removed: {changed:?}"
    );
    assert!(out.stderr.contains("create container"), "the create is what failed:\n{out}");
    assert_eq!(serving.min_serving, Some(1), "the old container answered throughout: {serving:?}");

    std::fs::remove_file(host.data_root().join("fill")).expect("free the space");
    input.apply().await.assert_success();
    input.assert_converged().await;
    let after = assert_one_per_ordinal(&d, &ns, 1).await;
    assert!(!before[0].0.contains(&after), "a new revision runs");
    assert_eq!(http_request(&addr.to_string(), "GET", "/env/V", &[]), Some((200, "2".into())));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubernetes_api_unreachable_leaves_hosts_as_they_are_and_the_operator_resumes() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("fault-api");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    let mut link = Link::start(fake.addr());
    let host: DockerHost = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "local", "namespace": ns.name(), "labels": {"role": "web"}},
        "spec": {"endpoint": format!("unix://{}", local_socket_path().display())}
    }))
    .unwrap();
    Api::<DockerHost>::namespaced(client.clone(), ns.name()).create(&PostParams::default(), &host).await.unwrap();
    let mut set = web(ns.name(), "1", 2, json!({"hostSelector": {"matchLabels": {"role": "web"}}}));
    set["metadata"]["namespace"] = json!(ns.name());
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    sets.create(&PostParams::default(), &serde_json::from_value(set).unwrap()).await.unwrap();
    // A lease longer than the outage: the operator keeps it (a shorter one would make it step
    // down and exit, as it must, so that two replicas never act at once).
    let mut op =
        OperatorLog(Some(spawn_operator_via(&fake, &link.url(), dir.path(), ns.name(), "outage", free_port(), 30)));
    let v1 = ready_at_new_revision(&sets, SET, 2, None, WAIT).await;
    let before = names_ids_states(&docker, ns.name()).await;

    link.cut();
    let since = SystemTime::now();
    // The outage lasts a while: its length is the scenario (well past a watch's reconnect
    // backoff and the operator's periodic work, well short of the lease).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let operator = op.0.as_mut().expect("the operator");
    assert!(operator.is_running(), "the operator survives an outage shorter than its lease:\n{}", operator.stderr());
    let changed = changes_since(&docker, ns.name(), since).await;
    assert!(changed.is_empty(), "nothing changed on the host during the outage: {changed:?}");
    assert_eq!(names_ids_states(&docker, ns.name()).await, before);

    link.restore();
    let restored = Instant::now();
    let patch = json!({"spec": {"template": {"env": [{"name": "V", "value": "2"}]}}});
    sets.patch(SET, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let v2 = ready_at_new_revision(&sets, SET, 2, Some(&v1), WAIT).await;
    println!("after an 8 s API outage, a spec change converged {:?} after the API came back", restored.elapsed());
    eventually("only the new revision's containers", WAIT, || async {
        (containers_in(&docker, ns.name()).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(assert_one_per_ordinal(&docker, ns.name(), 2).await, v2);
    for (name, _, _) in names_ids_states(&docker, ns.name()).await {
        let addr = container_addr(&docker, &name).await;
        assert_eq!(http_request(&addr, "GET", "/env/V", &[]), Some((200, "2".into())), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_goes_on_past_a_host_partitioned_mid_rollout_and_converges_it_after_heal() {
    let hosts = block_in_place(|| RemoteHost::start_all(&[63, 64]));
    let ns = unique_ns("fault-partition");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(&ns).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let docker_hosts: Api<DockerHost> = Api::namespaced(client.clone(), &ns);
    for (name, h) in ["a", "b"].into_iter().zip(&hosts) {
        let secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-tls"), "namespace": ns},
            "type": "kubernetes.io/tls",
            "stringData": {"ca.crt": h.ca_pem(), "tls.crt": h.cert_pem(), "tls.key": h.key_pem()}
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        let host = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
            "metadata": {"name": name, "namespace": ns, "labels": {"role": "web"}},
            "spec": {"endpoint": h.tcp_endpoint(), "tls": {"secretName": format!("{name}-tls")}}
        }))
        .unwrap();
        docker_hosts.create(&PostParams::default(), &host).await.unwrap();
    }
    // Host by host (a, then b), each new container ready for 2 s before the next host.
    let spec = json!({"hostSelector": {"matchLabels": {"role": "web"}}, "strategy": {"maxUnavailable": 1, "minReadySeconds": 2}});
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), &ns);
    sets.create(&PostParams::default(), &serde_json::from_value(web(&ns, "1", 1, spec)).unwrap()).await.unwrap();
    let _op = OperatorLog(Some(spawn_operator(&fake, dir.path(), &ns, "partition", free_port())));
    let v1 = ready_at_new_revision(&sets, SET, 2, None, WAIT).await;
    let (da, db) = (hosts[0].docker_unix().await, hosts[1].docker_unix().await);

    let patch = json!({"spec": {"template": {"env": [{"name": "V", "value": "2"}]}}});
    sets.patch(SET, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    // Host a's wave has begun: cut off b, which comes after it.
    eventually("a container of the new revision on host a", WAIT, || async {
        containers_in(&da, &ns).await.iter().any(|c| c.labels.as_ref().is_some_and(|l| l["berth.dev/revision"] != v1))
    })
    .await;
    hosts[1].partition();
    let cut = Instant::now();
    // The rest goes on: a finishes its part.
    let v2 = eventually("host a runs only the new revision", WAIT, || async {
        let on_a = containers_in(&da, &ns).await;
        let revision = on_a.first()?.labels.as_ref()?.get("berth.dev/revision")?.clone();
        (on_a.len() == 1 && revision != v1 && on_a[0].state.map(|s| s.to_string()).as_deref() == Some("running"))
            .then_some(revision)
    })
    .await;
    // b, seen over its unix socket, still serves the old revision.
    let on_b = names_ids_states(&db, &ns).await;
    assert!(
        on_b.iter().any(|(name, _, state)| name.contains(&v1) && state == "running"),
        "host b keeps its old container running while cut off: {on_b:?}"
    );
    // Cut off for a while: long enough that a request to it hangs, shorter than the engine
    // client's 120 s timeout (TCP retransmits then get through).
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut.elapsed())).await;
    hosts[1].heal();
    let healed = Instant::now();
    let now = ready_at_new_revision(&sets, SET, 2, Some(&v1), WAIT).await;
    assert_eq!(now, v2);
    println!("host b converged {:?} after the heal", healed.elapsed());
    eventually("host b runs only the new revision", WAIT, || async {
        let on_b = names_ids_states(&db, &ns).await;
        (on_b.len() == 1 && on_b[0].0.contains(&v2) && on_b[0].2 == "running").then_some(())
    })
    .await;
}
