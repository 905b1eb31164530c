//! `berth operator` running applications: `spec.dependsOn` and `spec.mode: Task` in the
//! cluster, with the unmodified binary, the strict fake Kubernetes API and the real engine.
//!
//! The operator reconciles one ContainerSet at a time, so a set's dependencies are not in its
//! run: it judges them from their status (`controller::depends`), waits (status reason
//! `WaitingForDependencies`) and is woken when a dependency's status changes what it makes of
//! it. What the engine did, and in which order, is read back from its event stream.
//!
//! Each test says, at its top, what breaking in berth would make it fail (each was checked by
//! breaking it so).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_crd::{ContainerSet, DockerHost};
use berth_tests::health_images::HealthImage;
use berth_tests::*;
use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt as _;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// How long the task runs before it exits 0.
const TASK_SECONDS: u32 = 3;

/// The most a dependent may take, from the moment its dependency may turn healthy to its own
/// container's create: the health probe passes (every 250 ms), the dependency's reconcile sees
/// it (polls at most every 500 ms), writes status, the watch carries it, the dependent is woken
/// (200 ms debounce) and runs. Well under the 5 s retry of a waiting set.
const WAKE_WITHIN: Duration = Duration::from_millis(3500);

fn condition(cs: &ContainerSet, kind: &str) -> Option<(String, String, String)> {
    cs.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The local engine as DockerHost `local`, granting `policy`.
async fn create_local_host(client: &kube::Client, ns: &str, policy: Value) {
    let host: DockerHost = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "local", "namespace": ns, "labels": {"role": "app"}},
        "spec": {"endpoint": format!("unix://{}", local_socket_path().display()), "policy": policy}
    }))
    .unwrap();
    Api::<DockerHost>::namespaced(client.clone(), ns).create(&PostParams::default(), &host).await.expect("create host");
}

/// A ContainerSet `name` on the local host, one replica, `spec_extra` merged into its spec.
fn set(ns: &str, name: &str, template: Value, spec_extra: Value) -> ContainerSet {
    let mut spec = json!({"hostSelector": {"matchLabels": {"role": "app"}}, "replicasPerHost": 1,
                          "strategy": {"progressDeadlineSeconds": 30}, "template": template});
    spec.as_object_mut().unwrap().extend(spec_extra.as_object().expect("an object").clone());
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

/// The echo app, healthchecked.
fn echo_template() -> Value {
    json!({
        "image": ECHO_IMAGE, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 2,
        "ports": [{"containerPort": ECHO_PORT}],
        "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}
    })
}

/// The echo app whose healthcheck never passes (the shell image: echo + busybox).
fn sick_db_template(shell_image: &str) -> Value {
    json!({
        "image": shell_image, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 2,
        "ports": [{"containerPort": ECHO_PORT}],
        "healthcheck": {"test": ["CMD", "/bin/false"], "interval": "200ms", "timeout": "1s", "retries": 2}
    })
}

/// A task in the shell image: sleeps [`TASK_SECONDS`], says so, exits 0 (the image's own
/// healthcheck, which wants a server, disabled).
fn task_template(shell_image: &str) -> Value {
    json!({
        "image": shell_image, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 1,
        "command": ["/bin/sh", "-c", format!("sleep {TASK_SECONDS}; echo migrated")],
        "healthcheck": {"test": ["NONE"]}
    })
}

fn depends_on(name: &str, condition: &str) -> Value {
    json!({"dependsOn": [{"name": name, "condition": condition}]})
}

/// Every event of a namespace's containers (health verdicts included, the healthcheck's execs
/// left out), from its start until dropped. Live, not read back afterwards: the engine keeps
/// only its last 256 events, and other tests on the same engine push ours out.
struct Recorder {
    seen: Arc<Mutex<Vec<EventMessage>>>,
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
                    if !e.action.as_deref().unwrap_or("").starts_with("exec_") {
                        seen.lock().expect("never poisoned").push(e);
                    }
                }
            }
        });
        docker.ping().await.expect("the engine answers");
        Recorder { seen, task }
    }

    fn all(&self) -> Vec<EventMessage> {
        self.seen.lock().expect("never poisoned").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When an engine event happened.
fn at(e: &EventMessage) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(e.time_nano.unwrap_or(0) as u64)
}

/// The first event `action` of a container whose name starts with `prefix`.
fn first<'a>(events: &'a [EventMessage], action: &str, prefix: &str) -> &'a EventMessage {
    events
        .iter()
        .find(|e| {
            let (a, n) = action_and_name(e);
            a == action && n.starts_with(prefix)
        })
        .unwrap_or_else(|| panic!("no {action} of {prefix}*: {:#?}", pairs(events)))
}

fn pairs(events: &[EventMessage]) -> Vec<(String, String)> {
    events.iter().map(action_and_name).collect()
}

/// How many containers whose name starts with `prefix` were created among `events`.
fn creates(events: &[EventMessage], prefix: &str) -> usize {
    pairs(events).iter().filter(|(a, n)| a == "create" && n.starts_with(prefix)).count()
}

/// Waits until `name`'s status says it waits for its dependencies, naming `dependency`;
/// returns when the test saw it and the message.
async fn seen_waiting(sets: &Api<ContainerSet>, name: &str, dependency: &str) -> (SystemTime, String) {
    eventually(&format!("{name} WaitingForDependencies on {dependency}"), Duration::from_secs(60), || async {
        let cs = sets.get(name).await.ok()?;
        let (status, reason, message) = condition(&cs, "Degraded")?;
        (status == "True" && reason == "WaitingForDependencies" && message.contains(dependency))
            .then(|| (SystemTime::now(), message))
    })
    .await
}

/// Waits until `name` is Ready at its declared revision for its current generation.
async fn ready(sets: &Api<ContainerSet>, name: &str) -> ContainerSet {
    eventually(&format!("{name} Ready"), Duration::from_secs(90), || async {
        let cs = sets.get(name).await.ok()?;
        let st = cs.status.as_ref()?;
        (st.observed_generation == cs.metadata.generation
            && condition(&cs, "Ready")?.0 == "True"
            && st.current_revision.is_some()
            && st.current_revision == st.update_revision)
            .then_some(cs)
    })
    .await
}

/// Breaking any of these makes it fail:
/// - the operator passing no verdict for a dependency (`outside` empty again): web waits
///   forever ("web Ready" times out);
/// - a dependency judged satisfied regardless of its status: web never waits (no
///   WaitingForDependencies; were that looked past, web's create comes before db's
///   `health_status: healthy`);
/// - no WaitingForDependencies in web's status while it waits;
/// - no wake of web when db's status turns Ready, only its 5 s retry: db is let turn healthy
///   right after one of web's reconciles, so web's next retry comes about 5 s later, well past
///   [`WAKE_WITHIN`] (taken out, web came 5.4 s after).
#[tokio::test(flavor = "multi_thread")]
async fn a_dependent_is_created_once_its_dependency_is_ready_and_is_woken_by_it() {
    let shell = HealthImage::Shell.ensure();
    let docker = docker().await;
    let ns = NamespaceGuard::new("opdeps");
    let dir = tempfile::tempdir().unwrap();
    // db turns healthy when the test says so: its healthcheck looks for a file in a folder
    // bound read-only from here (no exec into it, which would be drift).
    let flags = dir.path().canonicalize().expect("the test's folder").join("flags");
    std::fs::create_dir(&flags).expect("create the flags folder");
    let (fake, client) = fake_cluster(ns.name()).await;
    create_local_host(&client, ns.name(), json!({"allowedHostPaths": [flags]})).await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    let db = json!({
        "image": shell, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 2,
        "ports": [{"containerPort": ECHO_PORT}],
        "mounts": [{"type": "bind", "source": flags.display().to_string(), "target": "/flags", "readOnly": true}],
        "healthcheck": {"test": ["CMD", "/bin/test", "-f", "/flags/ready"], "interval": "250ms",
                        "timeout": "2s", "startPeriod": "120s", "retries": 3}
    });
    // Both at once, the dependent first.
    sets.create(&PostParams::default(), &set(ns.name(), "web", echo_template(), depends_on("db", "Ready")))
        .await
        .unwrap();
    let db = set(ns.name(), "db", db, json!({"strategy": {"progressDeadlineSeconds": 120}}));
    sets.create(&PostParams::default(), &db).await.unwrap();
    let recorder = Recorder::start(&docker, ns.name()).await;
    let _op = OperatorLog(Some(spawn_operator(&fake, dir.path(), ns.name(), "op", free_port())));

    let (waiting_seen, message) = seen_waiting(&sets, "web", "db").await;
    eprintln!("web waits: {message}");
    assert!(message.contains("waits for db Ready"), "{message}");
    let db_prefix = format!("{}.db.", ns.name());
    eventually("db's container runs, not healthy yet", Duration::from_secs(30), || async {
        let all = names_ids_states(&docker, ns.name()).await;
        all.iter().any(|(n, _, state)| n.starts_with(&db_prefix) && state == "running").then_some(())
    })
    .await;
    // Right after one of web's reconciles (each reads web's history while web has a change
    // pending), db turns healthy: web's next retry is 5 s away.
    let seen = web_reconciles(&fake);
    eventually("one more reconcile of web", Duration::from_secs(30), || async {
        (web_reconciles(&fake) > seen).then_some(())
    })
    .await;
    let flagged = SystemTime::now();
    std::fs::write(flags.join("ready"), "").expect("write the flag");
    ready(&sets, "web").await;
    let db = ready(&sets, "db").await;
    assert_eq!(db.status.unwrap().ready_replicas, 1);

    let events = recorder.all();
    let web_prefix = format!("{}.web.", ns.name());
    let healthy = at(first(&events, "health_status: healthy", &db_prefix));
    let web_created = at(first(&events, "create", &web_prefix));
    assert!(flagged < healthy, "db turned healthy only once the test let it");
    assert!(healthy < web_created, "web is created only after db turned healthy: {:#?}", pairs(&events));
    assert!(waiting_seen < healthy, "web's status said it waited while db was not healthy yet");
    let woken = web_created.duration_since(flagged).unwrap();
    eprintln!(
        "db let healthy to web created: {woken:?} (healthy after {:?})",
        healthy.duration_since(flagged).unwrap()
    );
    assert!(woken < WAKE_WITHIN, "web is woken by db's status, not left to its retry: {woken:?}");
    assert_eq!(creates(&events, &web_prefix), 1, "{:#?}", pairs(&events));
    assert_eq!(creates(&events, &db_prefix), 1, "{:#?}", pairs(&events));
}

/// How many reconciles of `web` the fake API has seen so far: each lists web's
/// ControllerRevisions (its history) while web has a change pending.
fn web_reconciles(fake: &berth_fake_api::FakeApi) -> usize {
    fake.request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/controllerrevisions"))
        .filter(|r| r.query.replace("%2F", "/").replace("%3D", "=").contains("berth.dev/set=web"))
        .count()
}

/// A dependency whose revision failed (its healthcheck never passes; no autoRollback, so its
/// container is left running, unhealthy) is Started, not Ready. In the operator its status is
/// what tells: it is written once its reconcile ended, after the health wait, so only a
/// reconcile that gave up on readiness shows a running, not ready dependency.
///
/// Breaking either makes it fail: `Ready` judged like `Started` (web is created), `Started`
/// judged like `Ready` (api is never created).
#[tokio::test(flavor = "multi_thread")]
async fn a_running_but_failed_dependency_is_started_not_ready() {
    let shell = HealthImage::Shell.ensure();
    let docker = docker().await;
    let ns = NamespaceGuard::new("opstarted");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    create_local_host(&client, ns.name(), json!({})).await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    let sick = sick_db_template(&shell);
    for cs in [
        set(ns.name(), "web", echo_template(), depends_on("db", "Ready")),
        set(ns.name(), "api", echo_template(), depends_on("db", "Started")),
        set(ns.name(), "db", sick, json!({"strategy": {"progressDeadlineSeconds": 3}})),
    ] {
        sets.create(&PostParams::default(), &cs).await.unwrap();
    }
    let _op = OperatorLog(Some(spawn_operator(&fake, dir.path(), ns.name(), "op", free_port())));

    // db's reconcile gave up on its health: its status is current, not Ready, its container runs.
    let message = eventually("db's status: not Ready, its container running", Duration::from_secs(60), || async {
        let cs = sets.get("db").await.ok()?;
        let st = cs.status.clone()?;
        let runs = st.hosts.iter().flat_map(|h| &h.containers).any(|c| c.state == "running");
        let (ready, reason, message) = condition(&cs, "Ready")?;
        let degraded = condition(&cs, "Degraded").map(|d| format!("{}: {}", d.1, d.2)).unwrap_or_default();
        (st.observed_generation == cs.metadata.generation && ready == "False" && runs)
            .then(|| format!("Ready False ({reason}: {message}); Degraded {degraded}"))
    })
    .await;
    eprintln!("db: {message}");
    ready(&sets, "api").await;
    // web was judged against db's failed status: it says so, and has no container.
    let message =
        eventually("web waits for db Ready, judged on db's failed status", Duration::from_secs(30), || async {
            let cs = sets.get("web").await.ok()?;
            let (_, reason, message) = condition(&cs, "Degraded")?;
            (reason == "WaitingForDependencies" && message.contains("it is not Ready")).then_some(message)
        })
        .await;
    eprintln!("web waits: {message}");
    let web_prefix = format!("{}.web.", ns.name());
    let all = names_ids_states(&docker, ns.name()).await;
    assert!(all.iter().all(|(n, _, _)| !n.starts_with(&web_prefix)), "web is not created: {all:?}");
    let db_prefix = format!("{}.db.", ns.name());
    assert!(
        all.iter().any(|(n, _, state)| n.starts_with(&db_prefix) && state == "running"),
        "db's container runs: {all:?}"
    );
}

/// Breaking any of these makes it fail:
/// - a task's completed (exited 0) container not counted as ready in status: migrate never
///   turns Ready, app waits forever;
/// - `Completed` judged like `Started` (migrate's container runs): app is created before
///   migrate's container exited;
/// - a task run again on a later reconcile (its completion not read from the history, here
///   ControllerRevisions): once its exited container is removed, migrate's status lists the
///   container of its second run;
/// - a completed task whose container was removed not counted as ready (the history's
///   `task_completed` left out of status): migrate is no longer Ready.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_runs_once_and_gates_what_waits_for_its_completion() {
    let shell = HealthImage::Shell.ensure();
    let docker = docker().await;
    let ns = NamespaceGuard::new("optask");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    create_local_host(&client, ns.name(), json!({})).await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    sets.create(&PostParams::default(), &set(ns.name(), "app", echo_template(), depends_on("migrate", "Completed")))
        .await
        .unwrap();
    sets.create(&PostParams::default(), &set(ns.name(), "migrate", task_template(&shell), json!({"mode": "Task"})))
        .await
        .unwrap();
    let recorder = Recorder::start(&docker, ns.name()).await;
    let port = free_port();
    let mut op = OperatorLog(Some(spawn_operator(&fake, dir.path(), ns.name(), "op", port)));

    let (waiting_seen, message) = seen_waiting(&sets, "app", "migrate").await;
    eprintln!("app waits: {message}");
    assert!(message.contains("waits for migrate Completed"), "{message}");
    let migrate = ready(&sets, "migrate").await;
    let st = migrate.status.clone().unwrap();
    assert_eq!((st.ready_replicas, st.desired_replicas), (1, 1), "the completed task counts: {st:?}");
    assert_eq!(st.hosts[0].containers[0].state, "exited");
    ready(&sets, "app").await;

    let events = recorder.all();
    let (migrate_prefix, app_prefix) = (format!("{}.migrate.", ns.name()), format!("{}.app.", ns.name()));
    let exited = at(first(&events, "die", &migrate_prefix));
    let app_created = at(first(&events, "create", &app_prefix));
    assert!(exited < app_created, "app is created only after migrate exited: {:#?}", pairs(&events));
    assert!(waiting_seen < exited, "app's status said it waited while migrate ran");
    eprintln!("migrate exited to app created: {:?}", app_created.duration_since(exited).unwrap());

    // Another reconcile (a watch event without a new generation): nothing runs again.
    let reconciled = set_reconciles(port).expect("the operator counts its reconciles");
    let poke = json!({"metadata": {"annotations": {"test.berth.dev/poke": "1"}}});
    sets.patch("migrate", &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
    eventually("the operator reconciled the poked task", Duration::from_secs(30), || async {
        set_reconciles(port).filter(|n| *n > reconciled)
    })
    .await;

    // Its exited container removed by hand, while no operator runs (an operator that looks
    // while the engine is still removing it sees the container `Removing` and runs the task
    // again: a planner matter, see the report of this change), then a new operator: the
    // history says the revision completed here, so it does not run again, and it stays Ready.
    let (name, id, _) = names_ids_states(&docker, ns.name())
        .await
        .into_iter()
        .find(|(n, _, _)| n.starts_with(&migrate_prefix))
        .expect("migrate's container");
    op.0.take().expect("the operator runs").kill();
    docker.remove_container(&id, None).await.unwrap_or_else(|e| panic!("docker rm {name}: {e}"));
    op.0 = Some(spawn_operator(&fake, dir.path(), ns.name(), "second", free_port()));
    let short = &id[..12];
    let after = eventually("migrate's status without its removed container", Duration::from_secs(60), || async {
        let cs = sets.get("migrate").await.ok()?;
        let st = cs.status.clone()?;
        let listed = st.hosts.iter().flat_map(|h| &h.containers).any(|c| c.id == short);
        (!listed && condition(&cs, "Ready")?.0 == "True").then_some(cs)
    })
    .await;
    let st = after.status.clone().unwrap();
    assert!(st.hosts.iter().all(|h| h.containers.is_empty()), "the task did not run again: {st:?}");
    assert_eq!((st.ready_replicas, st.updated_replicas, st.desired_replicas), (1, 1, 1), "{st:?}");

    // Still Completed for a dependent that comes now.
    sets.create(&PostParams::default(), &set(ns.name(), "late", echo_template(), depends_on("migrate", "Completed")))
        .await
        .unwrap();
    ready(&sets, "late").await;
    let events = recorder.all();
    assert_eq!(creates(&events, &migrate_prefix), 1, "the task ran once: {:#?}", pairs(&events));
    assert_eq!(creates(&events, &app_prefix), 1, "{:#?}", pairs(&events));
    assert!(
        names_ids_states(&docker, ns.name()).await.iter().all(|(n, _, _)| !n.starts_with(&migrate_prefix)),
        "the removed task stays removed"
    );
}
