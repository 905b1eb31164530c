//! Drift, end to end in operator mode: the unmodified `berth operator` on a strict fake
//! Kubernetes API, and the real local engine, where the test does to berth's containers what
//! people do behind its back.
//!
//! Each kind of drift gets a set of its own, once with `driftPolicy: Replace` and once with
//! `Report`: removed, stopped, renamed, `docker update`d, exec'd into, copied into
//! (`docker cp`), running another image (a container made by hand with the set's labels), and
//! a foreign container squatting the managed name. Under Replace a fresh container of the same
//! revision takes over (a squatter is stopped and renamed aside, never removed); under Report the
//! drifted container is left as it is and the `Drifted` condition names it and the kind (a
//! removed container leaves nothing to report: it is created again under both policies).
//!
//! The heal time of each kind is measured from the drift to berth's first Docker action on the
//! set (its reaction, from the engine's events), to the replacement's start (the engine's
//! `StartedAt`, so stopping the drifted container and creating the new one are included) and to
//! its first passing healthcheck, and printed as a table
//! (`cargo test -p berth-tests --test drift -- --nocapture`). A wrong image and a squatter are
//! set up while the operator is paused (SIGSTOP), so berth meets the finished swap; their drift
//! begins when it resumes. Times count from the start of the drift action (a `docker stop`
//! includes the container's own stop).

use std::collections::HashMap;
use std::time::Duration;

use berth_crd::{ContainerSet, DockerHost};
use berth_tests::*;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::models::{ContainerCreateBody, ContainerUpdateBody};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// An image other than the sets' own: the echo image committed anew (a different image id).
const WRONG_IMAGE: &str = "example/echo-drift:wrong";
/// The label of the containers the test makes by hand without berth's labels (squatters).
const FOREIGN_LABEL: &str = "berth-tests.drift";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Removed,
    Stopped,
    Renamed,
    Updated,
    Exec,
    Copied,
    WrongImage,
    Squatter,
}

const KINDS: [Kind; 8] = [
    Kind::Removed,
    Kind::Stopped,
    Kind::Renamed,
    Kind::Updated,
    Kind::Exec,
    Kind::Copied,
    Kind::WrongImage,
    Kind::Squatter,
];

impl Kind {
    fn slug(self) -> &'static str {
        match self {
            Kind::Removed => "removed",
            Kind::Stopped => "stopped",
            Kind::Renamed => "renamed",
            Kind::Updated => "updated",
            Kind::Exec => "exec",
            Kind::Copied => "copied",
            Kind::WrongImage => "wrong-image",
            Kind::Squatter => "squatter",
        }
    }

    /// How the `Drifted` condition words it (`None`: a removed container is not drift left).
    fn phrase(self) -> Option<&'static str> {
        match self {
            Kind::Removed => None,
            Kind::Stopped => Some("stopped"),
            Kind::Renamed => Some("renamed"),
            Kind::Updated => Some("changed with docker update"),
            Kind::Exec => Some("exec'd into"),
            Kind::Copied => Some("copied into (docker cp)"),
            Kind::WrongImage => Some("runs an image other than its spec's"),
            Kind::Squatter => Some("a foreign container holds its name"),
        }
    }
}

fn set_name(policy: &str, kind: Kind) -> String {
    format!("{}-{}", policy.to_lowercase(), kind.slug())
}

fn drift_set(ns: &str, name: &str, policy: &str) -> ContainerSet {
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "hostSelector": {"matchLabels": {"role": "web"}}, "replicasPerHost": 1, "driftPolicy": policy,
            "strategy": {"progressDeadlineSeconds": 30},
            "template": {
                "image": ECHO_IMAGE, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 5,
                "env": [{"name": "GREETING", "value": name}],
                "ports": [{"containerPort": 8080}],
                "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}
            }
        }
    }))
    .expect("a ContainerSet")
}

async fn create_host(client: &kube::Client, ns: &str) {
    let host: DockerHost = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "local", "namespace": ns, "labels": {"role": "web"}},
        "spec": {"endpoint": format!("unix://{}", local_socket_path().display())}
    }))
    .expect("a DockerHost");
    Api::<DockerHost>::namespaced(client.clone(), ns).create(&PostParams::default(), &host).await.expect("create host");
}

fn condition(cs: &ContainerSet, kind: &str) -> Option<(String, String)> {
    let c = cs.status.as_ref()?.conditions.iter().find(|c| c.type_ == kind)?;
    Some((c.status.clone(), c.message.clone()))
}

/// A container as the test looks at it.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    name: String,
    state: String,
}

/// Every container carrying the set's label (berth's, or one made by hand with its labels).
async fn containers_of(docker: &Docker, ns: &str, set: &str) -> Vec<Seen> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("berth.dev/namespace={ns}"), format!("berth.dev/set={set}")],
    )]);
    let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    docker
        .list_containers(Some(opts))
        .await
        .expect("list containers")
        .into_iter()
        .map(|c| Seen {
            id: c.id.unwrap_or_default(),
            name: c.names.unwrap_or_default().first().cloned().unwrap_or_default().trim_start_matches('/').into(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        })
        .collect()
}

async fn the_one_container(docker: &Docker, ns: &str, set: &str) -> Seen {
    let mut all = containers_of(docker, ns, set).await;
    assert_eq!(all.len(), 1, "{set}: {all:?}");
    all.remove(0)
}

/// The echo image committed anew, so it has an id of its own; made once per machine.
async fn ensure_wrong_image(docker: &Docker) {
    if docker.inspect_image(WRONG_IMAGE).await.is_ok() {
        return;
    }
    let tmp = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            ContainerCreateBody { image: Some(ECHO_IMAGE.into()), ..Default::default() },
        )
        .await
        .expect("a container to commit");
    let (repo, tag) = WRONG_IMAGE.split_once(':').expect("repo:tag");
    let opts = CommitContainerOptionsBuilder::default()
        .container(&tmp.id)
        .repo(repo)
        .tag(tag)
        .comment("berth drift test")
        .build();
    docker.commit_container(opts, bollard::models::ContainerConfig::default()).await.expect("commit the wrong image");
    let _ = docker.remove_container(&tmp.id, None::<bollard::query_parameters::RemoveContainerOptions>).await;
}

/// Removes the containers the test made without berth's labels, also when it fails.
struct ForeignGuard(String);

impl Drop for ForeignGuard {
    fn drop(&mut self) {
        let filter = format!("{FOREIGN_LABEL}={}", self.0);
        // Drop cannot await: a runtime of its own, on a thread of its own (this one may be a
        // runtime's worker).
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let docker = docker().await;
                let filters = HashMap::from([("label".to_string(), vec![filter])]);
                let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
                for c in docker.list_containers(Some(opts)).await.ok()? {
                    let force = RemoveContainerOptionsBuilder::default().force(true).build();
                    let _ = docker.remove_container(&c.id.unwrap_or_default(), Some(force)).await;
                }
                Some(())
            })
        });
        if !matches!(cleanup.join(), Ok(Some(()))) {
            eprintln!("warning: the drift test's foreign containers ({FOREIGN_LABEL}) were not all removed");
        }
    }
}

/// A one-file tar archive, as `docker cp` sends it.
fn tar_of(name: &str, body: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], body.len() as u64);
    octal(&mut h[136..148], 0);
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// Pauses the operator (SIGSTOP) while the test swaps a container, so berth meets the result,
/// not a half-done swap.
struct Paused<'a>(&'a BerthProcess);

impl<'a> Paused<'a> {
    fn new(op: &'a BerthProcess) -> Paused<'a> {
        op.signal(libc::SIGSTOP);
        Paused(op)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.signal(libc::SIGCONT);
    }
}

/// What the drift left: the drifted container's id and name (for a squatter, the foreign one),
/// and when the test's own part was done (later engine events are berth's).
struct Drifted {
    id: String,
    name: String,
    done: Timestamp,
}

/// Do `kind` to `c`, the set's container. Returns what was left, and when the drift began.
async fn drift(docker: &Docker, op: &BerthProcess, ns: &str, kind: Kind, c: &Seen) -> (Drifted, Timestamp) {
    let force = || Some(RemoveContainerOptionsBuilder::default().force(true).build());
    let mut left = Drifted { id: c.id.clone(), name: c.name.clone(), done: Timestamp::now() };
    // From the moment the drift begins: the engine reports some of it while the call runs.
    let began = Timestamp::now();
    match kind {
        Kind::Removed => docker.remove_container(&c.id, force()).await.expect("docker rm -f"),
        Kind::Stopped => docker
            .stop_container(&c.id, Some(StopContainerOptionsBuilder::default().t(5).build()))
            .await
            .expect("docker stop"),
        Kind::Renamed => {
            left.name = format!("{}-renamed", c.name);
            let opts = RenameContainerOptionsBuilder::default().name(&left.name).build();
            docker.rename_container(&c.id, opts).await.expect("docker rename");
        }
        Kind::Updated => {
            let update =
                ContainerUpdateBody { memory: Some(64 << 20), memory_swap: Some(128 << 20), ..Default::default() };
            docker.update_container(&c.id, update).await.expect("docker update --memory");
        }
        Kind::Exec => {
            // Not the healthcheck's own command line (`/echo --probe`), which berth ignores. On a
            // loaded machine runc now and then fails to start an exec: try again, unless the
            // container is already being replaced (the failed attempt was drift enough).
            for attempt in 1.. {
                let cmd = Some(vec!["/echo", "--probe", "by-hand"]);
                let Ok(exec) = docker.create_exec(&c.id, CreateExecOptions { cmd, ..Default::default() }).await else {
                    break;
                };
                let start = StartExecOptions { detach: true, ..Default::default() };
                match docker.start_exec(&exec.id, Some(start)).await {
                    Ok(_) => break,
                    Err(e) if attempt < 5 => eprintln!("docker exec failed, trying again: {e}"),
                    Err(e) => panic!("docker exec: {e}"),
                }
            }
        }
        Kind::Copied => {
            let opts = UploadToContainerOptionsBuilder::default().path("/").build();
            let tar = hyper::body::Bytes::from(tar_of("dropped-by-hand.txt", b"not from the spec\n"));
            docker.upload_to_container(&c.id, Some(opts), bollard::body_full(tar)).await.expect("docker cp");
        }
        Kind::WrongImage | Kind::Squatter => {
            let inspect = docker.inspect_container(&c.id, None).await.expect("inspect berth's container");
            let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
            let paused = Paused::new(op);
            docker.remove_container(&c.id, force()).await.expect("docker rm -f");
            let body = if kind == Kind::WrongImage {
                // Made by hand, claiming to be the set's container, from another image.
                ContainerCreateBody { image: Some(WRONG_IMAGE.into()), labels: Some(labels), ..Default::default() }
            } else {
                let labels = HashMap::from([(FOREIGN_LABEL.to_string(), ns.to_string())]);
                ContainerCreateBody { image: Some(ECHO_IMAGE.into()), labels: Some(labels), ..Default::default() }
            };
            let opts = CreateContainerOptionsBuilder::default().name(&c.name).build();
            left.id = docker.create_container(Some(opts), body).await.expect("docker create").id;
            docker.start_container(&left.id, None).await.expect("docker start");
            left.done = Timestamp::now();
            drop(paused);
            let resumed = left.done;
            return (left, resumed);
        }
    }
    left.done = Timestamp::now();
    (left, began)
}

/// Seconds from `t0` to an RFC 3339 time the engine reported.
fn since(t0: Timestamp, rfc3339: &str) -> Option<f64> {
    let t: Timestamp = rfc3339.parse().ok()?;
    Some(t.duration_since(t0).as_secs_f64())
}

/// berth's actions on a set's containers (`kill`, `destroy`, `create`), as the engine reports
/// them, collected from before a drift until dropped: when berth first acted after the drift
/// separates its reaction from the engine's work (stopping, creating, starting).
struct Actions {
    seen: std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Actions {
    async fn watch(docker: &Docker, ns: &str, set: &str) -> Actions {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["kill".to_string(), "destroy".to_string(), "create".to_string()]),
            ("label".to_string(), vec![format!("berth.dev/namespace={ns}"), format!("berth.dev/set={set}")]),
        ]);
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        let mut stream = docker.events(Some(opts));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Some(Ok(e)) = stream.next().await {
                    seen.lock().expect("never poisoned").extend(e.time_nano);
                }
            }
        });
        // The stream is live once the engine answered; a ping after subscribing orders the two.
        docker.ping().await.expect("the engine answers");
        Actions { seen, task }
    }

    /// Seconds from `t0` to berth's first action after `done` (what the test did itself is
    /// over by then).
    fn first_after(&self, t0: Timestamp, done: Timestamp) -> Option<f64> {
        let done = done.as_nanosecond() as i64;
        let first = self.seen.lock().expect("never poisoned").iter().copied().filter(|t| *t > done).min()?;
        Some((first - t0.as_nanosecond() as i64) as f64 / 1e9)
    }
}

impl Drop for Actions {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The replacement's start and first passing healthcheck, in seconds after `t0`.
async fn heal_times(docker: &Docker, name: &str, t0: Timestamp) -> (f64, Option<f64>) {
    let c = docker.inspect_container(name, None).await.expect("inspect the replacement");
    let state = c.state.unwrap_or_default();
    let started = state.started_at.as_deref().and_then(|s| since(t0, s)).unwrap_or(f64::NAN);
    let healthy = state
        .health
        .and_then(|h| h.log)
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.exit_code == Some(0))
        .and_then(|r| r.end)
        .and_then(|e| since(t0, &e));
    (started, healthy)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_drift_is_healed_under_replace_and_reported_under_report() {
    ensure_echo_image();
    let docker = docker().await;
    ensure_wrong_image(&docker).await;
    let ns = NamespaceGuard::new("drift");
    let _foreign = ForeignGuard(ns.name().to_string());
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (fake, client) = fake_cluster(ns.name()).await;
    create_host(&client, ns.name()).await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    for policy in ["Replace", "Report"] {
        for kind in KINDS {
            sets.create(&PostParams::default(), &drift_set(ns.name(), &set_name(policy, kind), policy))
                .await
                .expect("create the set");
        }
    }
    let port = free_port();
    let op = spawn_operator(&fake, dir.path(), ns.name(), "op-drift", port);
    eventually("every set Ready", Duration::from_secs(90), || async {
        let all = sets.list(&ListParams::default()).await.ok()?;
        let ready = all.items.iter().filter(|cs| condition(cs, "Ready").is_some_and(|c| c.0 == "True")).count();
        (ready == 2 * KINDS.len()).then_some(())
    })
    .await;

    let mut table = Vec::new();
    for kind in KINDS {
        let set = set_name("Replace", kind);
        let before = the_one_container(&docker, ns.name(), &set).await;
        let actions = Actions::watch(&docker, ns.name(), &set).await;
        let (left, t0) = drift(&docker, &op, ns.name(), kind, &before).await;
        let fresh = eventually(
            &format!("{set}: a fresh container replaces the {kind:?} one"),
            Duration::from_secs(30),
            || async {
                let now = containers_of(&docker, ns.name(), &set).await;
                let fresh = now.iter().find(|c| c.name == before.name && c.id != left.id && c.state == "running")?;
                let drifted_gone = !now.iter().any(|c| c.id == left.id);
                (drifted_gone && now.len() == 1).then(|| fresh.clone())
            },
        )
        .await;
        if kind == Kind::Squatter {
            let s = docker.inspect_container(&left.id, None).await.expect("the squatter is never removed");
            let short: String = left.id.chars().take(12).collect();
            assert_eq!(s.name.as_deref(), Some(format!("/{}.squatter-{short}", before.name).as_str()));
            assert_eq!(s.state.and_then(|s| s.running), Some(false), "stopped");
        }
        let cs = eventually(&format!("{set}: Ready, no drift"), Duration::from_secs(30), || async {
            let cs = sets.get(&set).await.ok()?;
            let ready = condition(&cs, "Ready")?.0 == "True" && condition(&cs, "Drifted")?.0 == "False";
            let fresh_listed = cs.status.as_ref()?.hosts.first()?.containers.first()?.id == fresh.id[..12];
            (ready && fresh_listed).then_some(cs)
        })
        .await;
        assert_eq!(
            cs.status.and_then(|s| s.current_revision).as_deref(),
            Some(fresh.name.split('.').nth(2).unwrap_or(""))
        );
        // The replacement has healthchecked by the time the set is Ready.
        let (started, healthy) = heal_times(&docker, &fresh.name, t0).await;
        let reacted = actions.first_after(t0, left.done).map(|r| format!("{r:.3} s"));
        table.push(("Replace", kind, reacted, format!("{started:.3} s"), healthy.map(|h| format!("{h:.3} s"))));
    }

    for kind in KINDS {
        let set = set_name("Report", kind);
        let before = the_one_container(&docker, ns.name(), &set).await;
        let (left, t0) = drift(&docker, &op, ns.name(), kind, &before).await;
        let Some(phrase) = kind.phrase() else {
            // Nothing is left of a removed container: it is created again, and no drift stays.
            eventually(&format!("{set}: created again"), Duration::from_secs(30), || async {
                let cs = sets.get(&set).await.ok()?;
                let ok = condition(&cs, "Ready")?.0 == "True" && condition(&cs, "Drifted")?.0 == "False";
                let now = containers_of(&docker, ns.name(), &set).await;
                (ok && now.len() == 1 && now[0].id != before.id && now[0].state == "running").then_some(())
            })
            .await;
            table.push(("Report", kind, None, "created again".into(), None));
            continue;
        };
        let line = format!("host local: {} {phrase}", left.name);
        let message = eventually(&format!("{set}: Drifted names {line:?}"), Duration::from_secs(30), || async {
            let cs = sets.get(&set).await.ok()?;
            let (status, message) = condition(&cs, "Drifted")?;
            (status == "True" && message.contains(&line)).then_some(message)
        })
        .await;
        let took = Timestamp::now().duration_since(t0).as_secs_f64();
        assert_eq!(message, line, "one drifted container, one line");
        // Left exactly as it is: the same container, nothing created beside it.
        let now = containers_of(&docker, ns.name(), &set).await;
        let expected_state = if kind == Kind::Stopped { "exited" } else { "running" };
        match kind {
            Kind::Squatter => {
                assert!(now.is_empty(), "berth created nothing under a squatted name: {now:?}");
                let s = docker.inspect_container(&left.id, None).await.expect("the squatter is left");
                assert_eq!(s.name.as_deref(), Some(format!("/{}", left.name).as_str()));
                let cs = sets.get(&set).await.expect("the set");
                let degraded = condition(&cs, "Degraded").expect("Degraded");
                assert!(degraded.0 == "True" && degraded.1.contains("foreign container"), "{degraded:?}");
            }
            _ => {
                assert_eq!(now.len(), 1, "{now:?}");
                assert_eq!((now[0].id.as_str(), now[0].name.as_str()), (left.id.as_str(), left.name.as_str()));
                assert_eq!(now[0].state, expected_state);
            }
        }
        table.push(("Report", kind, None, format!("reported in {took:.3} s"), None));
    }

    // Events: one DriftReplaced per healed kind, one Drifted warning per reported kind.
    let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items;
    let with = |reason: &str, set: &str| {
        events.iter().any(|e| {
            e.reason.as_deref() == Some(reason) && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(set)
        })
    };
    for kind in KINDS.into_iter().filter(|k| *k != Kind::Removed) {
        assert!(with("DriftReplaced", &set_name("Replace", kind)), "a DriftReplaced Event for {kind:?}");
        assert!(with("Drifted", &set_name("Report", kind)), "a Drifted Event for {kind:?}");
    }

    // The drift metric counts by kind, without object labels: a Replace and a Report set each.
    let (_, metrics) = http_request(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[]).expect("/metrics answers");
    for kind in ["stopped", "renamed", "updated", "exec", "copied", "wrongImage", "squatter"] {
        let series = format!("berth_drift_events_total{{kind=\"{kind}\"}} ");
        let count = metrics.lines().find_map(|l| l.strip_prefix(&series)).and_then(|n| n.parse::<f64>().ok());
        assert!(count.is_some_and(|n| n >= 2.0), "{series}: {count:?} in {metrics}");
    }

    eprintln!("\ndrift → replacement, seconds after the drift (Replace): berth's first Docker action on the set,");
    eprintln!("the fresh container's start (StartedAt), its first passing healthcheck");
    eprintln!("{:<8} {:<12} {:>9} {:>22} {:>9}", "policy", "kind", "reacted", "started", "healthy");
    for (policy, kind, reacted, started, healthy) in &table {
        let (r, h) = (reacted.as_deref().unwrap_or("-"), healthy.as_deref().unwrap_or("-"));
        eprintln!("{policy:<8} {:<12} {r:>9} {started:>22} {h:>9}", kind.slug());
    }
}
