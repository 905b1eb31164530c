//! Fleet rollouts in standalone mode (`berth apply -f`), on three engines of the multi-host
//! test bed reached over mutual TLS.
//!
//! What berth promises across hosts, checked against real engines: a new revision goes host
//! by host with `maxUnavailable: 1` (a client probing every host all along sees at least two
//! answering), a revision that fails its healthcheck on the first host is rolled back there
//! and never reaches the others, a host cut off mid-rollout is reported while the others
//! finish, `spec.paused` changes nothing, history lives on the hosts (a fresh folder sees
//! it, and `berth rollback` uses it), and images berth pulled for trimmed revisions are
//! collected while images it did not pull stay. A set whose `hostSelector` moves it to
//! another host serves from the old one until the new one is ready, and keeps the old one
//! when the new one fails.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use berth_tests::*;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerSummary, EventMessage};
use bollard::query_parameters::{
    CommitContainerOptions, CreateImageOptions, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptions, RemoveImageOptions,
};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::task::block_in_place;

/// Deadline of every wait: a rollout over three hosts takes seconds, not minutes.
const WAIT: Duration = Duration::from_secs(60);

/// The set every test rolls out.
const SET: &str = "web";

/// The fixed host port the set publishes in the rolling-update test, on each host's own address.
const PORT: u16 = 9000;

const HEALTHY: [&str; 3] = ["CMD", "/echo", "--probe"];
/// An unknown flag: the probe exits 2, so the container turns unhealthy.
const FAILING: [&str; 3] = ["CMD", "/echo", "--no-such-flag"];

/// Three test hosts declared to berth as DockerHosts `h1`, `h2`, `h3` (rolled in that order,
/// each labelled `host: <its name>` besides `role: web`) over TLS, their certificates in Secrets, all in one folder with the set's file.
struct Fleet {
    hosts: Vec<RemoteHost>,
    docker: Vec<Docker>,
    ns: String,
    dir: tempfile::TempDir,
}

impl Fleet {
    async fn start(slots: [u8; 3]) -> Fleet {
        let hosts = block_in_place(|| RemoteHost::start_all(&slots));
        let mut docker = Vec::new();
        for h in &hosts {
            docker.push(h.docker_tls().await);
        }
        let ns = unique_ns("rollout");
        let dir = tempfile::Builder::new().prefix("berth-rollout-").tempdir().expect("a temp dir");
        let mut docs = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            docs.push(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": format!("tls-{}", host_name(i)), "namespace": ns},
                "stringData": {"ca.crt": h.ca_pem(), "tls.crt": h.cert_pem(), "tls.key": h.key_pem()}
            }));
            docs.push(json!({
                "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
                "metadata": {"name": host_name(i), "namespace": ns, "labels": {"role": "web", "host": host_name(i)}},
                "spec": {"endpoint": h.tcp_endpoint(), "tls": {"secretName": format!("tls-{}", host_name(i))}}
            }));
        }
        write_docs(&dir.path().join("hosts.yaml"), &docs);
        Fleet { hosts, docker, ns, dir }
    }

    fn dir(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 temp path")
    }

    /// Writes the set's file (the only one that changes between applies).
    fn declare(&self, set: &Value) {
        write_docs(&self.dir.path().join("set.yaml"), std::slice::from_ref(set));
    }

    async fn apply(&self) -> BerthOutput {
        berth_async(["apply", "-f", self.dir()], &[]).await
    }

    async fn history(&self) -> Vec<Value> {
        let out = berth_async(["history", &format!("{}/{SET}", self.ns), "-f", self.dir(), "--json"], &[]).await;
        out.assert_success();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("berth history --json is not JSON ({e}): {out}"))
    }

    /// Every container of the test's namespace on host `i`, stopped ones too.
    async fn containers(&self, i: usize) -> Vec<Ctr> {
        containers_of(&self.docker[i], &self.ns).await
    }

    /// The revision every host serves, once each runs exactly one container of the set,
    /// running and healthy, all of one revision.
    async fn serving_revision(&self) -> Option<String> {
        let mut revs = Vec::new();
        for i in 0..self.hosts.len() {
            match self.containers(i).await.as_slice() {
                [c] if c.running && c.healthy => revs.push(c.revision.clone()),
                _ => return None,
            }
        }
        revs.dedup();
        (revs.len() == 1).then(|| revs.remove(0))
    }

    /// `(name, id)` of the set's containers per host.
    async fn ids(&self) -> Vec<Vec<(String, String)>> {
        let mut out = Vec::new();
        for i in 0..self.hosts.len() {
            out.push(self.containers(i).await.into_iter().map(|c| (c.name, c.id)).collect());
        }
        out
    }
}

fn host_name(i: usize) -> String {
    format!("h{}", i + 1)
}

/// JSON is YAML: one document per object.
fn write_docs(path: &Path, docs: &[Value]) {
    let text: Vec<String> = docs.iter().map(|d| serde_json::to_string_pretty(d).expect("JSON")).collect();
    std::fs::write(path, text.join("\n---\n")).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The set: one echo replica per host saying `greeting` in `$GREETING`, healthchecked by
/// `probe`, one host at a time.
fn web(ns: &str, greeting: &str, probe: [&str; 3]) -> Value {
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": SET, "namespace": ns},
        "spec": {
            "replicasPerHost": 1,
            "strategy": {"type": "StartFirst", "maxUnavailable": 1, "progressDeadlineSeconds": 30},
            "template": {
                "image": ECHO_IMAGE, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 5,
                "env": [{"name": "GREETING", "value": greeting}],
                "ports": [{"containerPort": ECHO_PORT}],
                "healthcheck": {"test": probe, "interval": "200ms", "timeout": "1s", "retries": 3}
            }
        }
    })
}

/// A container of the set as the engine lists it.
#[derive(Clone, Debug)]
struct Ctr {
    name: String,
    id: String,
    revision: String,
    running: bool,
    healthy: bool,
}

async fn containers_of(docker: &Docker, ns: &str) -> Vec<Ctr> {
    let filters = HashMap::from([("label".to_string(), vec![format!("berth.dev/namespace={ns}")])]);
    let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    let list: Vec<ContainerSummary> = docker.list_containers(Some(opts)).await.expect("list containers");
    let mut out: Vec<Ctr> = list
        .into_iter()
        .map(|c| Ctr {
            name: c.names.unwrap_or_default().first().cloned().unwrap_or_default().trim_start_matches('/').into(),
            id: c.id.unwrap_or_default(),
            revision: c.labels.unwrap_or_default().get("berth.dev/revision").cloned().unwrap_or_default(),
            running: c.state.map(|s| s.to_string()).as_deref() == Some("running"),
            healthy: c.status.unwrap_or_default().contains("(healthy)"),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What changed containers: every event but health verdicts.
fn changes(events: &[EventMessage]) -> Vec<String> {
    describe(events).into_iter().filter(|e| !e.starts_with("health_status")).collect()
}

/// `action name` of each event, for messages.
fn describe(events: &[EventMessage]) -> Vec<String> {
    events.iter().map(|e| format!("{} {}", event_action(e), event_attr(e, "name"))).collect()
}

fn event_action(e: &EventMessage) -> &str {
    e.action.as_deref().unwrap_or("")
}

fn event_attr<'a>(e: &'a EventMessage, key: &str) -> &'a str {
    e.actor.as_ref().and_then(|a| a.attributes.as_ref()).and_then(|a| a.get(key)).map(String::as_str).unwrap_or("")
}

/// `GET /` answers the echo body within a short timeout (a host being replaced StopFirst
/// refuses the connection at once; the timeout only bounds a hang).
fn answers(addr: SocketAddr) -> bool {
    probe(addr).is_ok()
}

/// [`answers`], saying what went wrong.
fn probe(addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_millis(500);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {:?}", e.kind()))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {:?}", e.kind()))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {:?} after {} bytes", e.kind(), raw.len()))?;
    let raw = String::from_utf8_lossy(&raw);
    if raw.starts_with("HTTP/1.1 200") && raw.ends_with(ECHO_BODY) {
        Ok(())
    } else {
        Err(format!("answer: {:?}", raw.chars().take(40).collect::<String>()))
    }
}

/// One probe round: when it began, and how each host answered.
struct Round {
    at: Instant,
    results: Vec<Result<(), String>>,
}

impl Round {
    fn up(&self, host: usize) -> bool {
        self.results[host].is_ok()
    }

    fn answering(&self) -> usize {
        self.results.iter().filter(|r| r.is_ok()).count()
    }
}

/// Probes every address at the same instant (one thread each), round after round, until
/// `stop`. A round lasts as long as its slowest probe, so a host that hangs (its SYN dropped
/// while it starts) never makes a later instant of another host look simultaneous.
fn probe_rounds(addrs: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Round>> {
    std::thread::spawn(move || {
        let mut rounds = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let at = Instant::now();
            let results = std::thread::scope(|s| {
                let probes: Vec<_> = addrs.iter().map(|a| s.spawn(move || probe(*a))).collect();
                probes.into_iter().map(|p| p.join().expect("a probe thread")).collect()
            });
            rounds.push(Round { at, results });
            // The probe rate: every host about every 25 ms.
            std::thread::sleep(Duration::from_millis(20));
        }
        rounds
    })
}

/// The rounds around round `i`, one line each, for a failure message.
fn timeline(rounds: &[Round], i: usize) -> String {
    let t0 = rounds[0].at;
    rounds[i.saturating_sub(8)..(i + 8).min(rounds.len())]
        .iter()
        .map(|r| {
            let hosts: Vec<String> = r
                .results
                .iter()
                .enumerate()
                .map(|(h, res)| format!("{} {}", host_name(h), res.as_ref().err().map_or("ok", String::as_str)))
                .collect();
            format!("  +{:>8.3}s  {}", (r.at - t0).as_secs_f64(), hosts.join(" | "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn started_at(inspect: &bollard::models::ContainerInspectResponse) -> k8s_openapi::jiff::Timestamp {
    let at = inspect.state.as_ref().and_then(|s| s.started_at.clone()).unwrap_or_default();
    at.parse().unwrap_or_else(|e| panic!("StartedAt {at:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_update_keeps_two_of_three_hosts_serving() {
    let fleet = Fleet::start([41, 42, 43]).await;
    let published = |mut set: Value| {
        set["spec"]["template"]["ports"] = json!([{"containerPort": ECHO_PORT, "hostPort": PORT}]);
        set
    };
    fleet.declare(&published(web(&fleet.ns, "v1", HEALTHY)));
    fleet.apply().await.assert_success();
    let v1 = eventually("revision 1 serving on every host", WAIT, || fleet.serving_revision()).await;
    let addrs: Vec<SocketAddr> =
        fleet.hosts.iter().map(|h| format!("{}:{PORT}", h.ip()).parse().expect("an address")).collect();
    for a in &addrs {
        let a = *a;
        eventually(&format!("{a} to answer"), WAIT, || async move { answers(a) }).await;
    }

    // A new env value: the same host port, so each host replaces StopFirst and is down meanwhile.
    fleet.declare(&published(web(&fleet.ns, "v2", HEALTHY)));
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe_rounds(addrs.clone(), stop.clone());
    let t = Instant::now();
    let out = fleet.apply().await;
    let took = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    let rounds = prober.join().expect("the prober thread");
    out.assert_success();
    assert_eq!(out.stdout.matches("StopFirst forced").count(), 3, "every host replaces StopFirst:\n{out}");

    let min = rounds.iter().map(Round::answering).min().unwrap_or(0);
    println!("rolling update over 3 hosts took {took:?}: {} probe rounds, min hosts answering {min}", rounds.len());
    assert!(rounds.len() >= 30, "too few probe rounds ({}) to say anything", rounds.len());
    if let Some(i) = rounds.iter().position(|r| r.answering() < 2) {
        panic!(
            "only {} host(s) answered in probe round {i}:\n{}\n--- berth apply\n{out}",
            rounds[i].answering(),
            timeline(&rounds, i)
        );
    }
    // Each host was really down during its own replacement, and one after another.
    let mut windows = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let down: Vec<Instant> = rounds.iter().filter(|r| !r.up(i)).map(|r| r.at).collect();
        assert!(!down.is_empty(), "{} ({a}) never seen down: was it replaced StopFirst?", host_name(i));
        let (first, last) = (down[0], *down.last().unwrap());
        println!("{} down from +{:?} to +{:?}", host_name(i), first - rounds[0].at, last - rounds[0].at);
        windows.push((first, last));
    }
    for i in 1..windows.len() {
        assert!(
            windows[i - 1].1 < windows[i].0,
            "{} went down before {} was back: the rollout was not host by host",
            host_name(i),
            host_name(i - 1)
        );
    }

    // The whole fleet is on the new revision, started host by host in name order.
    let v2 = eventually("revision 2 serving on every host", WAIT, || fleet.serving_revision()).await;
    assert_ne!(v1, v2);
    let mut starts = Vec::new();
    for (i, d) in fleet.docker.iter().enumerate() {
        let c = &fleet.containers(i).await[0];
        starts.push(started_at(&d.inspect_container(&c.id, None).await.expect("inspect")));
        let (status, body) = http_get_path(addrs[i], "/env/GREETING");
        assert_eq!((status, body.as_str()), (200, "v2"), "{} serves the new env value", host_name(i));
    }
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "new containers started in host order: {starts:?}");
    let again = fleet.apply().await;
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "a second apply changes nothing:\n{again}");
}

/// `(action, container name, time)` of the events that change containers, oldest first.
fn timed_changes(events: &[EventMessage]) -> Vec<(String, String, i64)> {
    events
        .iter()
        .filter(|e| !event_action(e).starts_with("health_status"))
        .map(|e| (event_action(e).to_string(), event_attr(e, "name").to_string(), e.time_nano.unwrap_or(0)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_that_moves_serves_until_its_new_host_is_ready_and_keeps_its_old_host_when_the_new_one_fails() {
    let fleet = Fleet::start([56, 57, 58]).await;
    let on = |host: &str| {
        let mut set = web(&fleet.ns, "v1", HEALTHY);
        set["spec"]["hostSelector"] = json!({"matchLabels": {"host": host}});
        set["spec"]["template"]["ports"] = json!([{"containerPort": ECHO_PORT, "hostPort": PORT}]);
        set
    };
    let addrs: Vec<SocketAddr> =
        fleet.hosts.iter().map(|h| format!("{}:{PORT}", h.ip()).parse().expect("an address")).collect();
    let only_on = |host: usize| {
        let fleet = &fleet;
        async move {
            for i in 0..fleet.hosts.len() {
                let cs = fleet.containers(i).await;
                let ok = if i == host { cs.len() == 1 && cs[0].running && cs[0].healthy } else { cs.is_empty() };
                if !ok {
                    return None;
                }
            }
            Some(fleet.containers(host).await.remove(0))
        }
    };
    fleet.declare(&on("h1"));
    fleet.apply().await.assert_success();
    let first = eventually("the set serving on h1 alone", WAIT, || only_on(0)).await;
    let a = addrs[0];
    eventually("h1 to answer", WAIT, || async move { answers(a) }).await;

    // The selector moves it to h2: h2's container is made and ready before h1's goes.
    fleet.declare(&on("h2"));
    let since = SystemTime::now();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe_rounds(addrs[..2].to_vec(), stop.clone());
    let out = fleet.apply().await;
    stop.store(true, Ordering::SeqCst);
    let rounds = prober.join().expect("the prober thread");
    out.assert_success();
    let moved = eventually("the set serving on h2 alone", WAIT, || only_on(1)).await;
    assert_eq!(moved.revision, first.revision, "a move is no new revision");
    println!(
        "move h1 -> h2: {} probe rounds, min hosts answering {}",
        rounds.len(),
        rounds.iter().map(Round::answering).min().unwrap_or(0)
    );
    assert!(rounds.len() >= 10, "too few probe rounds ({}) to say anything", rounds.len());
    if let Some(i) = rounds.iter().position(|r| r.answering() == 0) {
        panic!("neither h1 nor h2 answered in probe round {i}:\n{}\n--- berth apply\n{out}", timeline(&rounds, i));
    }
    let (h1_events, h2_events) = (
        container_events(&fleet.docker[0], &fleet.ns, since).await,
        container_events(&fleet.docker[1], &fleet.ns, since).await,
    );
    let healthy_on_h2 = h2_events
        .iter()
        .find(|e| event_action(e) == "health_status: healthy")
        .and_then(|e| e.time_nano)
        .unwrap_or_else(|| panic!("h2's container never turned healthy: {:?}", describe(&h2_events)));
    let h1_changes = timed_changes(&h1_events);
    let first_change_on_h1 =
        h1_changes.first().unwrap_or_else(|| panic!("h1's container was never removed: {:?}", describe(&h1_events)));
    assert!(
        first_change_on_h1.2 > healthy_on_h2,
        "h1's container ({} at +{} ms) went before h2's was healthy:\n h1 {h1_changes:?}\n h2 {:?}",
        first_change_on_h1.0,
        (first_change_on_h1.2 - healthy_on_h2) / 1_000_000,
        describe(&h2_events)
    );

    // To h3, where something else holds the host port: h3 cannot start it, so h2 keeps serving,
    // untouched, and the error names h3.
    let blocker = format!("{}-port-holder", fleet.ns);
    let binding =
        bollard::models::PortBinding { host_ip: Some(fleet.hosts[2].ip().into()), host_port: Some(PORT.to_string()) };
    fleet.docker[2]
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(blocker.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(ECHO_IMAGE.into()),
                exposed_ports: Some(vec![format!("{ECHO_PORT}/tcp")]),
                host_config: Some(bollard::models::HostConfig {
                    port_bindings: Some(HashMap::from([(format!("{ECHO_PORT}/tcp"), Some(vec![binding]))])),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("create the port holder on h3");
    fleet.docker[2].start_container(&blocker, None).await.expect("start the port holder on h3");
    fleet.declare(&on("h3"));
    let since = SystemTime::now();
    let failed = fleet.apply().await;
    let h2_changes = changes(&container_events(&fleet.docker[1], &fleet.ns, since).await);
    let _ = fleet.docker[2]
        .remove_container(&blocker, Some(RemoveContainerOptions { force: true, ..Default::default() }))
        .await;
    failed.assert_code(1);
    assert!(failed.stderr.contains("host h3"), "the error names h3:\n{failed}");
    assert!(h2_changes.is_empty(), "h2 was touched although h3 failed: {h2_changes:?}\n{failed}");
    let kept = fleet.containers(1).await;
    assert!(
        kept.len() == 1 && kept[0].id == moved.id && kept[0].running,
        "h2 still runs the very container it ran: {kept:?}\n{failed}"
    );
    let b = addrs[1];
    assert!(answers(b), "h2 still answers after h3 failed");
}

async fn volume_labels(docker: &Docker, name: &str) -> Option<HashMap<String, String>> {
    match docker.inspect_volume(name).await {
        Ok(v) => Some(v.labels),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => None,
        Err(e) => panic!("inspect volume {name}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_volumes_removes_the_sets_volumes_only_on_the_hosts_where_it_ran() {
    let fleet = Fleet::start([65, 66, 67]).await;
    let volume = format!("{}-data", fleet.ns);
    let mut set = web(&fleet.ns, "v1", HEALTHY);
    set["spec"]["hostSelector"] = json!({"matchLabels": {"host": "h1"}});
    set["spec"]["template"]["mounts"] = json!([{"type": "volume", "source": volume, "target": "/data"}]);
    fleet.declare(&set);
    fleet.apply().await.assert_success();
    let labels = volume_labels(&fleet.docker[0], &volume).await.expect("apply created the volume on h1");
    assert_eq!(
        labels.get("berth.dev/set").map(String::as_str),
        Some(SET),
        "berth labels the volume it made: {labels:?}"
    );

    // On h2, where the set never ran, a volume of the same name and the very same labels (a
    // restore from h1's backup, say): it is not berth's to remove there.
    let twin = bollard::models::VolumeCreateRequest {
        name: Some(volume.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    fleet.docker[1].create_volume(twin).await.expect("create the twin volume on h2");

    let out = berth_async(["delete", "-f", fleet.dir(), "--volumes"], &[]).await;
    let (on_h1, on_h2) =
        (volume_labels(&fleet.docker[0], &volume).await, volume_labels(&fleet.docker[1], &volume).await);
    let _ = fleet.docker[1].remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
    out.assert_success();
    assert!(out.stdout.contains(&format!("h1: removed volume {volume}")), "{out}");
    assert!(on_h1.is_none(), "the set's volume is gone from h1\n{out}");
    assert!(on_h2.is_some(), "h2's volume is kept: the set never ran there\n{out}");
    assert!(!out.stdout.contains("h2:"), "nothing is said of h2's volume\n{out}");
}

fn http_get_path(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(&addr.to_string(), "GET", path, &[]).unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_revision_is_rolled_back_on_the_first_host_and_never_reaches_the_others() {
    let fleet = Fleet::start([44, 45, 46]).await;
    let with_rollback = |mut set: Value| {
        set["spec"]["strategy"]["autoRollback"] = json!(true);
        set
    };
    fleet.declare(&with_rollback(web(&fleet.ns, "v1", HEALTHY)));
    fleet.apply().await.assert_success();
    let v1 = eventually("revision 1 serving on every host", WAIT, || fleet.serving_revision()).await;
    let before = fleet.ids().await;

    // Revision 2 fails its healthcheck: StartFirst, so the old containers serve throughout.
    fleet.declare(&with_rollback(web(&fleet.ns, "v2", FAILING)));
    let since = SystemTime::now();
    let t = Instant::now();
    let out = fleet.apply().await;
    let took = t.elapsed();
    out.assert_code(1);
    let events: Vec<Vec<EventMessage>> = {
        let mut v = Vec::new();
        for d in &fleet.docker {
            v.push(container_events(d, &fleet.ns, since).await);
        }
        v
    };
    let created: Vec<&EventMessage> = events[0].iter().filter(|e| event_action(e) == "create").collect();
    assert_eq!(created.len(), 1, "one container of revision 2 was made on h1: {:?}", describe(&events[0]));
    let failed_name = event_attr(created[0], "name").to_string();
    let v2 = event_attr(created[0], "berth.dev/revision").to_string();
    assert_ne!(v2, v1);
    for needle in ["host h1", failed_name.as_str(), "healthcheck failed", "rolled back to revision 1"] {
        assert!(out.stderr.contains(needle), "the error says {needle:?}:\n{out}");
    }
    // h1 is back on revision 1: the very containers it had (StartFirst never stopped them),
    // the failed one removed. h2 and h3 were never touched.
    assert_eq!(fleet.ids().await, before, "every host runs the containers it ran before");
    assert_eq!(fleet.serving_revision().await.as_deref(), Some(v1.as_str()));
    for (i, evs) in events.iter().enumerate().skip(1) {
        let changed = changes(evs);
        assert!(changed.is_empty(), "{} was touched by the failed rollout: {changed:?}", host_name(i));
    }
    let at = |action: &str| {
        events[0]
            .iter()
            .find(|e| event_action(e) == action && event_attr(e, "name") == failed_name)
            .and_then(|e| e.time_nano)
            .unwrap_or_else(|| panic!("no {action:?} event of {failed_name} on h1: {:?}", describe(&events[0])))
    };
    let (unhealthy, destroyed) = (at("health_status: unhealthy"), at("destroy"));
    println!(
        "failed rollout with auto-rollback took {took:?}; on h1, unhealthy -> failed container removed in {:?}",
        Duration::from_nanos((destroyed - unhealthy).max(0) as u64)
    );

    // History says why; revision 1 stays the way back.
    let history = fleet.history().await;
    let outcomes: Vec<(u64, &str, &str)> = history
        .iter()
        .map(|r| (r["number"].as_u64().unwrap(), r["hash"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(outcomes, [(1, v1.as_str(), "Ready"), (2, v2.as_str(), "Failed")], "{history:#?}");
    let message = history[1]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("host h1") && message.contains(&failed_name) && message.contains("healthcheck"),
        "the record says where and why: {message}"
    );

    // The same files again: held, nothing changes anywhere, and it says why.
    let since = SystemTime::now();
    let held = fleet.apply().await;
    held.assert_code(1);
    let said = format!("{}{}", held.stdout, held.stderr);
    assert!(said.contains("revision 2") && said.contains("failed"), "it names the held revision:\n{held}");
    assert!(said.contains("change the spec"), "it says how to roll out again:\n{held}");
    assert_eq!(fleet.ids().await, before);
    for (i, d) in fleet.docker.iter().enumerate() {
        let changed = changes(&container_events(d, &fleet.ns, since).await);
        assert!(changed.is_empty(), "{} changed for a held revision: {changed:?}", host_name(i));
    }

    // A good spec rolls out everywhere.
    fleet.declare(&with_rollback(web(&fleet.ns, "v3", HEALTHY)));
    fleet.apply().await.assert_success();
    let v3 = eventually("revision 3 serving on every host", WAIT, || fleet.serving_revision()).await;
    assert!(v3 != v1 && v3 != v2);
    let last = fleet.history().await;
    assert_eq!(last.last().unwrap()["outcome"], "Ready", "{last:#?}");
    assert_eq!(last.last().unwrap()["number"], 3, "{last:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_cut_off_mid_rollout_is_reported_and_converges_after_heal() {
    let fleet = Fleet::start([47, 48, 49]).await;
    let slow = |mut set: Value| {
        set["spec"]["strategy"]["minReadySeconds"] = json!(2);
        set
    };
    fleet.declare(&slow(web(&fleet.ns, "v1", HEALTHY)));
    fleet.apply().await.assert_success();
    let v1 = eventually("revision 1 serving on every host", WAIT, || fleet.serving_revision()).await;

    fleet.declare(&slow(web(&fleet.ns, "v2", HEALTHY)));
    let t = Instant::now();
    let run = spawn_berth(["apply", "-f", fleet.dir()], &[]);
    // The first wave (h1) has begun: cut off h3, which the waves reach last.
    let v2 = eventually("a revision 2 container on h1", WAIT, || async {
        fleet.containers(0).await.into_iter().find(|c| c.revision != v1).map(|c| c.revision)
    })
    .await;
    assert!(fleet.containers(1).await.iter().all(|c| c.revision == v1), "h2 changed during the first wave");
    fleet.hosts[2].partition();
    let partitioned_at = t.elapsed();
    let out = match block_in_place(|| run.wait_timeout(Duration::from_secs(200))) {
        Ok(out) => out,
        Err(run) => panic!("apply still runs 200 s after h3 was cut off:\n{}", run.kill()),
    };
    println!("apply with h3 cut off at +{partitioned_at:?} ended after {:?}", t.elapsed());
    out.assert_code(1);
    assert!(out.stderr.contains("host h3 was cut off during the rollout"), "it names the cut-off host:\n{out}");
    for i in 0..2 {
        let cs = fleet.containers(i).await;
        assert!(
            cs.len() == 1 && cs[0].revision == v2 && cs[0].running,
            "{} runs revision 2 only: {cs:?}",
            host_name(i)
        );
    }
    // h3 itself (seen over its unix socket) still runs revision 1.
    let h3 = containers_of(&fleet.hosts[2].docker_unix().await, &fleet.ns).await;
    assert!(
        h3.iter().any(|c| c.revision == v1 && c.running) && !h3.iter().any(|c| c.revision == v2),
        "h3 keeps serving revision 1, untouched: {h3:?}"
    );

    fleet.hosts[2].heal();
    eventually("h3 to answer over TLS again", WAIT, || fleet.docker[2].ping()).await;
    let t = Instant::now();
    fleet.apply().await.assert_success();
    println!("apply after heal converged h3 in {:?}", t.elapsed());
    assert_eq!(fleet.serving_revision().await.as_deref(), Some(v2.as_str()));
    let history = fleet.history().await;
    assert_eq!(history.last().unwrap()["outcome"], "Ready", "{history:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_set_changes_nothing_until_unpaused() {
    let fleet = Fleet::start([50, 51, 52]).await;
    fleet.declare(&web(&fleet.ns, "v1", HEALTHY));
    fleet.apply().await.assert_success();
    let v1 = eventually("revision 1 serving on every host", WAIT, || fleet.serving_revision()).await;
    let before = fleet.ids().await;

    let mut paused = web(&fleet.ns, "v2", HEALTHY);
    paused["spec"]["paused"] = json!(true);
    fleet.declare(&paused);
    let since = SystemTime::now();
    let out = fleet.apply().await;
    out.assert_success();
    assert!(out.stdout.contains("paused (spec.paused); 3 change(s) wait"), "apply says what waits:\n{out}");
    assert!(!out.stdout.contains("Converged"), "nothing converged while paused:\n{out}");
    assert_eq!(fleet.ids().await, before, "no container changed on any host");
    for (i, d) in fleet.docker.iter().enumerate() {
        let changed = changes(&container_events(d, &fleet.ns, since).await);
        assert!(changed.is_empty(), "{} changed while paused: {changed:?}", host_name(i));
    }

    paused["spec"]["paused"] = json!(false);
    fleet.declare(&paused);
    fleet.apply().await.assert_success();
    let v2 = eventually("revision 2 serving on every host", WAIT, || fleet.serving_revision()).await;
    assert_ne!(v1, v2);
}

#[tokio::test(flavor = "multi_thread")]
async fn history_lives_on_the_hosts_and_rollback_to_revision_1_sticks() {
    let fleet = Fleet::start([53, 54, 55]).await;
    let mut revisions = Vec::new();
    for greeting in ["v1", "v2", "v3"] {
        fleet.declare(&web(&fleet.ns, greeting, HEALTHY));
        fleet.apply().await.assert_success();
        revisions.push(eventually("the revision serving on every host", WAIT, || fleet.serving_revision()).await);
    }
    let here = fleet.history().await;
    let summary = |h: &[Value]| -> Vec<(u64, String, String)> {
        h.iter()
            .map(|r| (r["number"].as_u64().unwrap(), r["hash"].as_str().unwrap().into(), r["outcome"].to_string()))
            .collect()
    };
    let expected: Vec<(u64, String, String)> =
        revisions.iter().enumerate().map(|(i, h)| (i as u64 + 1, h.clone(), "\"Ready\"".into())).collect();
    assert_eq!(summary(&here), expected);

    // Another machine: the same files in a fresh folder, a fresh HOME, run from there.
    let fresh = tempfile::Builder::new().prefix("berth-fresh-").tempdir().unwrap();
    let home = tempfile::Builder::new().prefix("berth-home-").tempdir().unwrap();
    let files = fresh.path().join("files");
    std::fs::create_dir(&files).unwrap();
    for f in ["hosts.yaml", "set.yaml"] {
        std::fs::copy(fleet.dir.path().join(f), files.join(f)).unwrap();
    }
    let run = |args: &[&str]| {
        let out = berth_command(args, &[("HOME", home.path().to_str().unwrap())])
            .current_dir(fresh.path())
            .output()
            .expect("run berth");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let set = format!("{}/{SET}", fleet.ns);
    let (code, stdout, stderr) = block_in_place(|| run(&["history", &set, "-f", "files", "--json"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let there: Vec<Value> = serde_json::from_str(&stdout).expect("JSON history");
    assert_eq!(there, here, "a fresh folder sees the same records");

    let before_rollback = fleet.ids().await;
    let (code, stdout, stderr) = block_in_place(|| run(&["rollback", &set, "-f", "files", "--to-revision", "1"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let back = eventually("revision 1 serving on every host", WAIT, || fleet.serving_revision()).await;
    assert_eq!(back, revisions[0]);
    assert_ne!(fleet.ids().await, before_rollback);
    let after = fleet.history().await;
    let newest: Vec<(String, String)> = after
        .iter()
        .rev()
        .take(2)
        .map(|r| (r["hash"].as_str().unwrap().to_string(), r["outcome"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        newest,
        [(revisions[2].clone(), "RolledBack".to_string()), (revisions[0].clone(), "Ready".to_string())],
        "{after:#?}"
    );

    // The unchanged files (which still declare revision 3) keep revision 1.
    let ids = fleet.ids().await;
    let (code, stdout, stderr) = block_in_place(|| run(&["apply", "-f", "files"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("No changes"), "{stdout}{stderr}");
    assert_eq!(fleet.ids().await, ids);
    let again = fleet.apply().await;
    again.assert_success();
    assert_eq!(fleet.ids().await, ids, "the original folder keeps revision 1 too:\n{again}");
}

/// Removes what the image-GC test made on the local engine: its containers (by its
/// namespace guard), history volumes, and images.
struct LocalLeftovers {
    docker: Docker,
    ns: String,
    /// The container the test's images are committed from.
    holder: String,
    images: Vec<String>,
}

impl Drop for LocalLeftovers {
    fn drop(&mut self) {
        let (docker, ns, images) = (self.docker.clone(), self.ns.clone(), self.images.clone());
        let holder = self.holder.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                cleanup_containers(&docker, &ns).await;
                let force = RemoveContainerOptions { force: true, ..Default::default() };
                let _ = docker.remove_container(&holder, Some(force)).await;
                let filters = HashMap::from([("label".to_string(), vec![format!("berth.dev/namespace={ns}")])]);
                let opts = ListVolumesOptionsBuilder::default().filters(&filters).build();
                for v in docker.list_volumes(Some(opts)).await.ok().and_then(|l| l.volumes).unwrap_or_default() {
                    let _ = docker.remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
                }
                for i in images {
                    let opts = RemoveImageOptions { force: true, ..Default::default() };
                    let _ = docker.remove_image(&i, Some(opts), None).await;
                }
            })
        })
        .join();
    }
}

async fn image_exists(docker: &Docker, id: &str) -> bool {
    match docker.inspect_image(id).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(e) => panic!("inspect image {id}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn images_berth_pulled_are_collected_with_their_records_and_no_others() {
    ensure_echo_image();
    let docker = docker().await;
    let registry = Registry::start(None);
    let ns = unique_ns("image-gc");
    let holder = format!("{ns}-commit");
    let mut leftovers =
        LocalLeftovers { docker: docker.clone(), ns: ns.clone(), holder: holder.clone(), images: Vec::new() };

    // Three different images (the echo image with a label each), pushed as three tags of one
    // repository, then gone from the engine so that only a pull brings them back.
    docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(holder.clone()),
                ..Default::default()
            }),
            ContainerCreateBody { image: Some(ECHO_IMAGE.into()), ..Default::default() },
        )
        .await
        .expect("create a container to commit");
    let mut refs = Vec::new();
    let mut ids = Vec::new();
    for tag in ["v1", "v2", "v3"] {
        let local = format!("berth-gc-{ns}:{tag}");
        let opts = CommitContainerOptions {
            container: Some(holder.clone()),
            repo: Some(format!("berth-gc-{ns}")),
            tag: Some(tag.into()),
            changes: Some(format!("LABEL berth.test.gc={tag}")),
            ..Default::default()
        };
        let id = docker.commit_container(opts, bollard::models::ContainerConfig::default()).await.unwrap().id;
        leftovers.images.push(id.clone());
        refs.push(registry.push(&docker, &local, &format!("{ns}/echo:{tag}")).await);
        for r in [&local, refs.last().unwrap()] {
            docker.remove_image(r, None::<RemoveImageOptions>, None).await.unwrap();
        }
        assert!(!image_exists(&docker, &id).await, "image {tag} is gone from the engine before the test");
        ids.push(id);
    }
    docker.remove_container(&holder, Some(RemoveContainerOptions { force: true, ..Default::default() })).await.unwrap();

    let dir = tempfile::Builder::new().prefix("berth-gc-").tempdir().unwrap();
    let set = |image: &str| {
        let mut s = web(&ns, "gc", HEALTHY);
        s["spec"]["revisionHistoryLimit"] = json!(1);
        s["spec"]["template"]["image"] = json!(image);
        s["spec"]["template"]["imagePullPolicy"] = json!("IfNotPresent");
        s
    };
    let apply = |image: &str| {
        write_docs(&dir.path().join("set.yaml"), &[set(image)]);
        berth_async(["apply", "-f", dir.path().to_str().unwrap()], &[])
    };
    let history = || async {
        let out =
            berth_async(["history", &format!("{ns}/{SET}"), "-f", dir.path().to_str().unwrap(), "--json"], &[]).await;
        out.assert_success();
        serde_json::from_str::<Vec<Value>>(&out.stdout).expect("JSON")
    };

    // v1: berth pulls it.
    apply(&refs[0]).await.assert_success();
    assert!(image_exists(&docker, &ids[0]).await, "berth pulled v1");
    let h = history().await;
    assert_eq!(h.len(), 1, "{h:#?}");
    assert_eq!(h[0]["pulledOn"], json!(["local"]), "the record says berth pulled v1 here: {h:#?}");

    // v2: the test puts it there itself, so berth does not pull it. v1's record is trimmed
    // (limit 1) and the image berth pulled for it goes.
    let mut pull = docker.create_image(
        Some(CreateImageOptions { from_image: Some(refs[1].clone()), ..Default::default() }),
        None,
        None,
    );
    while let Some(p) = pull.next().await {
        p.expect("the test's own pull of v2");
    }
    assert!(image_exists(&docker, &ids[1]).await);
    apply(&refs[1]).await.assert_success();
    let h = history().await;
    assert_eq!(h.len(), 1, "history is trimmed to 1: {h:#?}");
    assert!(h[0].get("pulledOn").is_none_or(|p| p == &json!([])), "berth did not pull v2: {h:#?}");
    assert!(!image_exists(&docker, &ids[0]).await, "the image berth pulled for the trimmed revision 1 is removed");
    assert!(image_exists(&docker, &ids[1]).await, "v2 is in use");

    // v3: berth pulls it; v2's record goes, but berth never pulled v2: it stays.
    apply(&refs[2]).await.assert_success();
    let h = history().await;
    assert_eq!(h.len(), 1, "{h:#?}");
    assert!(image_exists(&docker, &ids[1]).await, "an image berth did not pull is never removed");
    assert!(image_exists(&docker, &ids[2]).await, "the image in use stays");
    assert!(!image_exists(&docker, &ids[0]).await);
    let running = containers_of(&docker, &ns).await;
    assert!(running.len() == 1 && running[0].running, "{running:?}");
    let image_of = docker.inspect_container(&running[0].id, None).await.unwrap().image.unwrap_or_default();
    assert_eq!(image_of, ids[2], "the set runs v3");
    drop(leftovers);
}
