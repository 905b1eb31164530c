//! Health probes are not drift; a user's exec is.
//!
//! The engine runs every health probe as an exec and reports it in the event stream like a
//! user's `docker exec`. berth tells them apart by the container's *effective* healthcheck,
//! learned from the engine: here every set declares none, and its image brings its own, in
//! each form (exec, one-argument exec with the engine's trailing space, `CMD-SHELL`, and
//! `CMD-SHELL` under an image `SHELL` override; see `berth_tests::health_images`).
//!
//! Under `berth watch` and under `berth operator` (fake Kubernetes API, real engine), each
//! set's container is left alone until the engine's event stream showed at least
//! [`PROBES`] probes of it; then berth is given a reason to reconcile (a touched file, an
//! edited ContainerSet) and the test waits for that reconcile, which must change nothing:
//! the same containers, no `kill`, `create` or `destroy` of the namespace's containers.
//! Then a real exec into each container is still drift: the container is replaced. The
//! reaction (the exec's `exec_start` → berth's first action on the set) and the replacement
//! time (→ the new container's `health_status: healthy`), engine clock, are printed
//! (`cargo test -p berth-tests --test healthcheck_drift -- --nocapture`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_crd::{ContainerSet, DockerHost};
use berth_tests::health_images::HealthImage;
use berth_tests::*;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Probes of each container to see before berth is asked to reconcile.
const PROBES: usize = 8;
/// The user's exec: not any image's probe.
const USER_EXEC: [&str; 2] = ["/echo", "--version"];
/// berth's actions on containers, as the engine reports them.
const ACTIONS: [&str; 5] = ["kill", "stop", "rename", "create", "destroy"];

fn set_name(image: HealthImage) -> String {
    format!("hc-{}", image.slug())
}

/// One engine event of a container of the test's namespace.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    set: String,
    action: String,
    nanos: i64,
}

/// Every event of the namespace's containers, from its start until dropped.
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(docker: &Docker, ns: &str) -> Recorder {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![format!("berth.dev/namespace={ns}")]),
        ]);
        let mut stream = docker.events(Some(EventsOptionsBuilder::default().filters(&filters).build()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Some(Ok(e)) = stream.next().await {
                    let (Some(actor), Some(action), Some(nanos)) = (e.actor, e.action, e.time_nano) else { continue };
                    let attrs = actor.attributes.unwrap_or_default();
                    let set = attrs.get("berth.dev/set").cloned().unwrap_or_default();
                    let id = actor.id.unwrap_or_default();
                    seen.lock().expect("never poisoned").push(Seen { id, set, action, nanos });
                }
            }
        });
        // The stream is live once the engine answered; a ping after subscribing orders the two.
        docker.ping().await.expect("the engine answers");
        Recorder { seen, task }
    }

    fn all(&self) -> Vec<Seen> {
        self.seen.lock().expect("never poisoned").clone()
    }

    /// berth's actions on the namespace's containers after `after` (engine nanoseconds).
    fn actions_after(&self, after: i64) -> Vec<Seen> {
        self.all().into_iter().filter(|s| s.nanos > after && ACTIONS.contains(&s.action.as_str())).collect()
    }

    /// The distinct `exec_start` texts of container `id`, with their counts.
    fn execs_of(&self, id: &str) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for s in self.all().into_iter().filter(|s| s.id == id && s.action.starts_with("exec_start: ")) {
            *out.entry(s.action).or_insert(0) += 1;
        }
        out
    }

    /// The engine time of the latest event it reported.
    fn last(&self) -> i64 {
        self.all().iter().map(|s| s.nanos).max().unwrap_or(0)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Each set's one container, if every set has exactly one and it runs healthy: set → id.
async fn healthy(docker: &Docker, ns: &str, sets: &[String]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (name, id, _) in names_ids_states(docker, ns).await {
        let set = name.split('.').nth(1).unwrap_or_default().to_string();
        let c = docker.inspect_container(&id, None).await.map_err(|e| format!("{name}: {e}"))?;
        let state = c.state.unwrap_or_default();
        let health = state.health.and_then(|h| h.status).map(|s| s.to_string());
        if state.status != Some(ContainerStateStatusEnum::RUNNING) || health.as_deref() != Some("healthy") {
            return Err(format!("{name}: {:?}, health {health:?}", state.status));
        }
        if out.insert(set.clone(), id).is_some() {
            return Err(format!("set {set} has more than one container"));
        }
    }
    for s in sets {
        if !out.contains_key(s) {
            return Err(format!("set {s} has no container"));
        }
    }
    Ok(out)
}

/// Wait until every container in `ids` showed [`PROBES`] probes in the event stream, failing
/// at once if berth acts on any container of the namespace meanwhile (each probe taken for
/// drift replaces the container: before the probe is told apart, that is at the first one).
async fn left_alone_over_probes(rec: &Recorder, ids: &HashMap<String, String>, since: i64) {
    eventually(&format!("{PROBES} health probes of each set's container"), Duration::from_secs(60), || async {
        let acted = rec.actions_after(since);
        assert!(
            acted.is_empty(),
            "berth acted on containers that were left alone (a probe taken for drift?): {acted:?}"
        );
        let counts: Vec<(&String, usize)> =
            ids.iter().map(|(set, id)| (set, rec.execs_of(id).values().sum::<usize>())).collect();
        counts.iter().all(|(_, n)| *n >= PROBES).then_some(()).ok_or(format!("{counts:?}"))
    })
    .await;
    for (set, id) in ids {
        eprintln!("{set}: probes seen {:?}", rec.execs_of(id));
    }
}

/// After berth's reconcile (already waited for): nothing changed since `since`.
async fn nothing_changed(docker: &Docker, ns: &str, rec: &Recorder, ids: &HashMap<String, String>, since: i64) {
    let sets: Vec<String> = ids.keys().cloned().collect();
    let now = healthy(docker, ns, &sets).await.expect("the same containers, healthy");
    assert_eq!(&now, ids, "every set kept its container");
    // Anything berth did before the reconcile ended is in the stream by now: a ping after it
    // orders the two.
    docker.ping().await.expect("the engine answers");
    let acted = rec.actions_after(since);
    assert!(acted.is_empty(), "berth acted on containers that were left alone: {acted:?}");
}

/// A user's exec into `id` (detached). On a loaded machine runc now and then fails to start
/// an exec: try again, unless the exec started after all (the engine reports it).
async fn user_exec(docker: &Docker, rec: &Recorder, id: &str) {
    let text = format!("exec_start: {}", USER_EXEC.join(" "));
    for attempt in 1.. {
        let cmd = Some(USER_EXEC.to_vec());
        let exec = docker.create_exec(id, CreateExecOptions { cmd, ..Default::default() }).await.expect("docker exec");
        let start = StartExecOptions { detach: true, ..Default::default() };
        match docker.start_exec(&exec.id, Some(start)).await {
            Ok(_) => return,
            Err(_) if rec.execs_of(id).contains_key(&text) => return,
            Err(e) if attempt < 5 => eprintln!("docker exec failed, trying again: {e}"),
            Err(e) => panic!("docker exec: {e}"),
        }
    }
}

/// Exec into each set's container in turn; each must be replaced by a healthy one. Returns,
/// per set, (exec → berth's first action, exec → the replacement's create, exec → it is
/// healthy), seconds of the engine's clock.
async fn exec_is_drift(
    docker: &Docker,
    ns: &str,
    rec: &Recorder,
    ids: &HashMap<String, String>,
) -> Vec<(String, f64, f64, f64)> {
    let all: Vec<String> = ids.keys().cloned().collect();
    let text = format!("exec_start: {}", USER_EXEC.join(" "));
    let mut sets: Vec<&String> = ids.keys().collect();
    sets.sort();
    let mut rows = Vec::new();
    for set in sets {
        let old = &ids[set];
        user_exec(docker, rec, old).await;
        let fresh =
            eventually(&format!("{set}: a healthy replacement after the exec"), Duration::from_secs(60), || async {
                let now = healthy(docker, ns, &all).await?;
                let id = now.get(set).ok_or("no container")?;
                if id == old { Err("the exec'd container still runs".to_string()) } else { Ok(id.clone()) }
            })
            .await;
        let events =
            eventually(&format!("{set}: the replacement's healthy event"), Duration::from_secs(10), || async {
                let all = rec.all();
                let exec = all.iter().find(|s| &s.id == old && s.action == text)?.nanos;
                let first =
                    all.iter().filter(|s| &s.set == set && s.nanos > exec && ACTIONS.contains(&s.action.as_str()));
                let first = first.map(|s| s.nanos).min()?;
                let create = all.iter().find(|s| s.id == fresh && s.action == "create")?.nanos;
                let healthy = all.iter().find(|s| s.id == fresh && s.action == "health_status: healthy")?.nanos;
                Some((exec, first, create, healthy))
            })
            .await;
        let (exec, first, create, healthy) = events;
        let secs = |t: i64| (t - exec) as f64 / 1e9;
        rows.push((set.clone(), secs(first), secs(create), secs(healthy)));
    }
    rows
}

fn print_rows(front: &str, rows: &[(String, f64, f64, f64)]) {
    eprintln!(
        "\n{front}: a user's exec → berth's first action / the replacement's create / it is healthy (engine clock)"
    );
    for (set, first, create, healthy) in rows {
        eprintln!("  {set:<18} {first:>7.3} s {create:>7.3} s {healthy:>7.3} s");
    }
}

/// Prints what a berth process said when the test fails, for the reader of the failure.
struct ShowOnPanic<'a>(&'a BerthProcess, &'static str);

impl Drop for ShowOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} stdout\n{}\n--- stderr\n{}", self.1, self.0.stdout(), self.0.stderr());
        }
    }
}

fn images() -> Vec<(HealthImage, String)> {
    HealthImage::ALL.iter().map(|i| (*i, i.ensure())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_leaves_healthchecked_containers_alone_and_replaces_an_exec() {
    let images = images();
    let docker = docker().await;
    let ns = NamespaceGuard::new("hcwatch");
    let dir = tempfile::tempdir().unwrap();
    let sets: Vec<String> = images.iter().map(|(i, _)| set_name(*i)).collect();
    let mut files = Vec::new();
    for (image, tag) in &images {
        // No healthcheck in the spec: the image's own is the container's.
        files.push(
            EchoSet::new(ns.name(), &set_name(*image)).image(tag, "Never").without_healthcheck().write(dir.path()),
        );
    }
    let watch = spawn_berth(["watch", "-f", dir.path().to_str().unwrap(), "--resync-seconds", "3600"], &[]);
    let _show = ShowOnPanic(&watch, "berth watch");
    let ids = eventually("berth watch converged every set", Duration::from_secs(90), || async {
        let ids = healthy(&docker, ns.name(), &sets).await?;
        if watch.stdout().contains("Converged:") { Ok(ids) } else { Err("no pass converged yet".to_string()) }
    })
    .await;

    let rec = Recorder::start(&docker, ns.name()).await;
    let since = rec.last().max(0);
    left_alone_over_probes(&rec, &ids, since).await;
    // A reason for a pass (a touched file), and the pass itself, which must change nothing.
    let passes = watch.stdout().matches("No changes").count();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(&files[0], &text).unwrap();
    eventually("a pass after the touched file, with no changes", Duration::from_secs(30), || async {
        watch.stdout().matches("No changes").count() > passes
    })
    .await;
    nothing_changed(&docker, ns.name(), &rec, &ids, since).await;

    let rows = exec_is_drift(&docker, ns.name(), &rec, &ids).await;
    assert!(watch.stdout().contains(&format!("exec_start: {}", USER_EXEC.join(" "))), "replaced for the exec");
    print_rows("berth watch", &rows);
    drop(_show);
    let out = watch.kill();
    assert!(!out.stdout.contains("panicked") && !out.stderr.contains("panicked"), "{out}");
}

fn metric(metrics: &str, series: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// The sum of a counter family's series.
fn family(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_leaves_healthchecked_containers_alone_and_replaces_an_exec() {
    let images = images();
    let docker = docker().await;
    let ns = NamespaceGuard::new("hcop");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    let host: DockerHost = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "local", "namespace": ns.name(), "labels": {"role": "web"}},
        "spec": {"endpoint": format!("unix://{}", local_socket_path().display())}
    }))
    .unwrap();
    Api::<DockerHost>::namespaced(client.clone(), ns.name()).create(&PostParams::default(), &host).await.unwrap();
    let api: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    let sets: Vec<String> = images.iter().map(|(i, _)| set_name(*i)).collect();
    for (image, tag) in &images {
        // No healthcheck in the spec: the image's own is the container's.
        let cs: ContainerSet = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
            "metadata": {"name": set_name(*image), "namespace": ns.name()},
            "spec": {
                "hostSelector": {"matchLabels": {"role": "web"}}, "replicasPerHost": 1,
                "strategy": {"progressDeadlineSeconds": 30},
                "template": {
                    "image": tag, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 5,
                    "ports": [{"containerPort": 8080}]
                }
            }
        }))
        .unwrap();
        api.create(&PostParams::default(), &cs).await.unwrap();
    }
    let port = free_port();
    let op = OperatorLog(Some(spawn_operator(&fake, dir.path(), ns.name(), "op-hc", port)));
    let metrics = || http_request(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[]).map(|(_, b)| b);
    for s in &sets {
        ready_at_new_revision(&api, s, 1, None, Duration::from_secs(90)).await;
    }
    let ids =
        eventually("every set's container healthy", Duration::from_secs(30), || healthy(&docker, ns.name(), &sets))
            .await;

    let rec = Recorder::start(&docker, ns.name()).await;
    let since = rec.last().max(0);
    left_alone_over_probes(&rec, &ids, since).await;
    // A reason to reconcile every set (an edit of each ContainerSet), and those reconciles,
    // which must change nothing.
    let before = metrics().expect("/metrics answers");
    let reconciles = metric(&before, "berth_reconciles_total{kind=\"containerset\"} ");
    for s in &sets {
        let poke = json!({"metadata": {"annotations": {"berth-tests/poke": "1"}}});
        api.patch(s, &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
    }
    eventually("a reconcile of every edited set", Duration::from_secs(30), || async {
        let now = metrics()?;
        (metric(&now, "berth_reconciles_total{kind=\"containerset\"} ") >= reconciles + sets.len() as f64).then_some(())
    })
    .await;
    let after = metrics().expect("/metrics answers");
    assert_eq!(
        family(&after, "berth_docker_steps_total"),
        family(&before, "berth_docker_steps_total"),
        "no Docker step since the containers were left alone"
    );
    nothing_changed(&docker, ns.name(), &rec, &ids, since).await;

    let rows = exec_is_drift(&docker, ns.name(), &rec, &ids).await;
    // Counted when a reconcile that replaced a drifted container ends.
    eventually("every exec counted as drift", Duration::from_secs(30), || async {
        let m = metrics().ok_or("no /metrics")?;
        let n = metric(&m, "berth_drift_events_total{kind=\"exec\"} ");
        if n >= sets.len() as f64 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    print_rows("berth operator", &rows);
    drop(op);
}

/// The follower never waits on an inspect: while the engine sits on the inspect that settles
/// one container's `die` (a proxy holds it), an exec into another container of the same host
/// is acted on at once; the held container's events go on once its inspect returns.
/// `ids`: the converged sets `slow` and `quick` on a host reached through `proxy`.
async fn a_held_inspect_holds_up_nothing_else(
    docker: &Docker,
    ns: &str,
    proxy: &berth_tests::inspect_stall::StallProxy,
    ids: &HashMap<String, String>,
) -> f64 {
    let rec = Recorder::start(docker, ns).await;
    // `slow` dies; berth's inspect of it (to settle the exit) is held by the proxy.
    proxy.hold(&ids["slow"]);
    docker.kill_container(&ids["slow"], None::<bollard::query_parameters::KillContainerOptions>).await.unwrap();
    eventually("berth's inspect of the dead container is held", Duration::from_secs(10), || async {
        proxy.held().0 >= 1
    })
    .await;

    // Meanwhile a user's exec into `quick` is drift, acted on at once.
    user_exec(docker, &rec, &ids["quick"]).await;
    let text = format!("exec_start: {}", USER_EXEC.join(" "));
    let (exec, create) = eventually("quick's replacement is created", Duration::from_secs(20), || async {
        let all = rec.all();
        let exec = all.iter().find(|s| s.id == ids["quick"] && s.action == text)?.nanos;
        let create =
            all.iter().filter(|s| s.set == "quick" && s.action == "create" && s.nanos > exec).map(|s| s.nanos).min()?;
        Some((exec, create))
    })
    .await;
    assert!(proxy.held().0 >= 1, "the dead container's inspect is still held: it did not hold up the other's exec");

    // Released: the held container is replaced too (if the exec's reconcile did not already).
    proxy.release(&ids["slow"]);
    let sets: Vec<String> = ids.keys().cloned().collect();
    eventually("both sets healthy with new containers", Duration::from_secs(60), || async {
        let now = healthy(docker, ns, &sets).await?;
        if sets.iter().all(|s| now[s] != ids[s]) { Ok(()) } else { Err(format!("{now:?}")) }
    })
    .await;
    (create - exec) as f64 / 1e9
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_a_stalled_inspect_holds_up_only_its_own_container() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("hcstall");
    let proxy = berth_tests::inspect_stall::StallProxy::start(&local_socket_path());
    let dir = tempfile::tempdir().unwrap();
    let host = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: DockerHost\nmetadata:\n  name: stalled\n  namespace: {}\nspec:\n  endpoint: {}\n",
        ns.name(),
        proxy.docker_host()
    );
    std::fs::write(dir.path().join("host.yaml"), host).unwrap();
    let sets = vec!["slow".to_string(), "quick".to_string()];
    for s in &sets {
        EchoSet::new(ns.name(), s).write(dir.path());
    }
    let watch = spawn_berth(["watch", "-f", dir.path().to_str().unwrap(), "--resync-seconds", "3600"], &[]);
    let _show = ShowOnPanic(&watch, "berth watch");
    let ids = eventually("berth watch converged both sets", Duration::from_secs(90), || async {
        let ids = healthy(&docker, ns.name(), &sets).await?;
        if watch.stdout().contains("Converged:") { Ok(ids) } else { Err("no pass converged yet".to_string()) }
    })
    .await;
    let took = a_held_inspect_holds_up_nothing_else(&docker, ns.name(), &proxy, &ids).await;
    eprintln!("berth watch: exec → the replacement's create {took:.3} s, while another container's inspect was held");
    drop(_show);
    let out = watch.kill();
    assert!(!out.stdout.contains("panicked") && !out.stderr.contains("panicked"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_a_stalled_inspect_holds_up_only_its_own_container() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("hcopstall");
    let proxy = berth_tests::inspect_stall::StallProxy::start(&local_socket_path());
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    let host: DockerHost = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "stalled", "namespace": ns.name(), "labels": {"role": "web"}},
        "spec": {"endpoint": proxy.docker_host()}
    }))
    .unwrap();
    Api::<DockerHost>::namespaced(client.clone(), ns.name()).create(&PostParams::default(), &host).await.unwrap();
    let api: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    let sets = vec!["slow".to_string(), "quick".to_string()];
    for s in &sets {
        let cs: ContainerSet = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
            "metadata": {"name": s, "namespace": ns.name()},
            "spec": {
                "hostSelector": {"matchLabels": {"role": "web"}}, "replicasPerHost": 1,
                "strategy": {"progressDeadlineSeconds": 30},
                "template": {
                    "image": ECHO_IMAGE, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 5,
                    "ports": [{"containerPort": 8080}],
                    "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}
                }
            }
        }))
        .unwrap();
        api.create(&PostParams::default(), &cs).await.unwrap();
    }
    let op = OperatorLog(Some(spawn_operator(&fake, dir.path(), ns.name(), "op-hcstall", free_port())));
    for s in &sets {
        ready_at_new_revision(&api, s, 1, None, Duration::from_secs(90)).await;
    }
    let ids =
        eventually("both sets' containers healthy", Duration::from_secs(30), || healthy(&docker, ns.name(), &sets))
            .await;
    let took = a_held_inspect_holds_up_nothing_else(&docker, ns.name(), &proxy, &ids).await;
    eprintln!(
        "berth operator: exec → the replacement's create {took:.3} s, while another container's inspect was held"
    );
    drop(op);
}
