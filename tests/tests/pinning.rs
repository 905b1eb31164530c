//! Digest pinning: a revision runs one image digest on every host, whatever its tag does
//! later (`imagePolicy: Pin`), unless the set follows its tag (`imagePolicy: Follow`).
//!
//! The fleet is the local engine and two test-bed hosts (engines in network namespaces),
//! each behind a counting proxy, all pulling from one real registry. The registry listens on
//! the root namespace's loopback; a forwarder makes the same `127.0.0.1:PORT` reach it from
//! inside each test host's namespace, so one pinned reference names it on every engine.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

use berth_tests::testbed::RemoteHost;
use berth_tests::{
    BerthOutput, CountingProxy, ECHO_IMAGE, EchoSet, NamespaceGuard, Registry, berth_async, docker, ensure_echo_image,
    local_socket_path,
};
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveImageOptions};

/// One engine of the fleet: how berth reaches it (through the proxy) and how the test looks.
struct Host {
    name: String,
    docker: Docker,
    proxy: CountingProxy,
}

/// What runs of a namespace on one host: `(name, id, state, image it was created from)`.
type Running = Vec<(String, String, String, String)>;

async fn running(docker: &Docker, ns: &str) -> Running {
    let filters = std::collections::HashMap::from([("label".to_string(), vec![format!("berth.dev/namespace={ns}")])]);
    let list = docker
        .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build()))
        .await
        .expect("list containers");
    let mut out = Vec::new();
    for c in list {
        let id = c.id.unwrap_or_default();
        let inspect = docker.inspect_container(&id, None).await.expect("inspect container");
        out.push((
            inspect.name.unwrap_or_default().trim_start_matches('/').to_string(),
            id,
            c.state.map(|s| s.to_string()).unwrap_or_default(),
            inspect.config.and_then(|c| c.image).unwrap_or_default(),
        ));
    }
    out.sort();
    out
}

async fn fleet_state(hosts: &[Host], ns: &str) -> Vec<(String, Running)> {
    let mut out = Vec::new();
    for h in hosts {
        out.push((h.name.clone(), running(&h.docker, ns).await));
    }
    out
}

/// Every host runs exactly one container of the set, running, created from `image`.
fn assert_every_host_runs(state: &[(String, Running)], image: &str) {
    for (host, containers) in state {
        assert_eq!(containers.len(), 1, "host {host}: one container, got {containers:?}");
        let (name, _, st, img) = &containers[0];
        assert_eq!(st, "running", "host {host}: {name} is {st}");
        assert_eq!(img, image, "host {host}: {name} runs {img}, expected {image}");
    }
}

/// The manifest digest the registry serves for `repo:tag`, asked over HTTP directly (not
/// through an engine, so the test does not check berth with berth's own method).
fn registry_digest(addr: &str, repo: &str, tag: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the registry");
    write!(
        s,
        "HEAD /v2/{repo}/manifests/{tag} HTTP/1.0\r\nHost: {addr}\r\n\
         Accept: application/vnd.docker.distribution.manifest.v2+json\r\n\r\n"
    )
    .expect("send a HEAD request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read the response");
    response
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("docker-content-digest")))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("no digest for {repo}:{tag}:\n{response}"))
}

/// Builds a variant of the echo image (one label more: another config, so another digest)
/// with the engine's legacy builder, offline.
fn build_variant(tag: &str) {
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the docker CLI");
    let dockerfile = format!("FROM {ECHO_IMAGE}\nLABEL berth.test/variant=\"{tag}\"\n");
    child.stdin.take().expect("stdin").write_all(dockerfile.as_bytes()).expect("write the Dockerfile");
    let out = child.wait_with_output().expect("docker build");
    assert!(out.status.success(), "docker build of {tag} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Removes image references from the local engine when dropped, also when the test panics:
/// the tags the test made and the digest references its pushes and pulls left. An image
/// goes only with its last reference, so `example/echo:latest` stays.
#[derive(Default)]
struct RefsGuard(std::sync::Mutex<Vec<String>>);

impl RefsGuard {
    fn add(&self, reference: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(reference);
    }
}

impl Drop for RefsGuard {
    fn drop(&mut self) {
        let refs = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(async {
                let docker = docker().await;
                for r in refs {
                    let opts = RemoveImageOptions { noprune: true, ..Default::default() };
                    let _ = docker.remove_image(&r, Some(opts), None).await;
                }
            })
        })
        .join();
    }
}

fn host_yaml(ns: &str, name: &str, socket: &Path) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: DockerHost\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  endpoint: unix://{}\n---\n",
        socket.display()
    )
}

/// Writes the fleet and the set (with `spec_extra` lines under `spec:`) as the input file
/// `dir/<file>.yaml`.
fn write_input(dir: &Path, file: &str, hosts: &[Host], set: &EchoSet, spec_extra: &str) -> String {
    let mut yaml: String = hosts.iter().map(|h| host_yaml(&set.namespace, &h.name, h.proxy.socket_path())).collect();
    yaml.push_str(&set.yaml().replace("spec:\n", &format!("spec:\n{spec_extra}")));
    let path = dir.join(format!("{file}.yaml"));
    std::fs::write(&path, yaml).expect("write the input");
    path.to_str().expect("a UTF-8 path").to_string()
}

fn reset(hosts: &[Host]) {
    hosts.iter().for_each(|h| h.proxy.reset());
}

/// No host got a mutating request, nor a registry question (`/distribution`) or an image
/// inspect: only reads of the container list (and version negotiation).
fn assert_only_lists(hosts: &[Host], out: &BerthOutput) {
    for h in hosts {
        let other = h
            .proxy
            .count_where(|r| !matches!(r.endpoint(), "/containers/json" | "/version" | "/_ping") || r.is_mutating());
        assert_eq!(other, 0, "host {}: more than the list:\n{}\n{out}", h.name, h.proxy.describe());
        let lists = h.proxy.count_where(|r| r.endpoint() == "/containers/json");
        assert_eq!(lists, 1, "host {}: one list:\n{}", h.name, h.proxy.describe());
    }
}

fn distribution_requests(hosts: &[Host]) -> usize {
    hosts.iter().map(|h| h.proxy.count_where(|r| r.endpoint().starts_with("/distribution/"))).sum()
}

fn mutating(hosts: &[Host]) -> usize {
    hosts.iter().map(|h| h.proxy.count_mutating()).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_changes_nothing_under_pin_and_rolls_out_under_follow() {
    ensure_echo_image();
    let local = docker().await;
    let mut registry = Registry::start(None);
    // Dropped after the namespace's containers are gone.
    let refs = RefsGuard::default();
    let guard = NamespaceGuard::new("pinning");
    let ns = guard.name().to_string();
    let remotes = RemoteHost::start_all(&[61, 62]);
    let _forwards: Vec<_> = remotes.iter().map(|r| registry.expose_in(r)).collect();
    let mut hosts =
        vec![Host { name: "local".into(), docker: local.clone(), proxy: CountingProxy::start(&local_socket_path()) }];
    for (i, r) in remotes.iter().enumerate() {
        hosts.push(Host {
            name: format!("remote-{}", i + 1),
            docker: r.docker_unix().await,
            proxy: CountingProxy::start(&r.unix_socket()),
        });
    }

    // The echo image as `:live`: digest D1.
    let repo = format!("{ns}/echo");
    let live = registry.push(&local, ECHO_IMAGE, &format!("{repo}:live")).await;
    let d1 = registry_digest(registry.addr(), &repo, "live");
    refs.add(live.clone());
    refs.add(format!("{}/{repo}@{d1}", registry.addr()));
    let dir = tempfile::Builder::new().prefix("berth-pinning-").tempdir().expect("a temp dir");
    let set = EchoSet::new(&ns, "web").image(&live, "IfNotPresent");
    let pin = write_input(dir.path(), "pin", &hosts, &set, "");

    let first = berth_async(["apply", "-f", &pin], &[]).await;
    first.assert_success();
    let pinned_d1 = format!("{live}@{d1}");
    let at_d1 = fleet_state(&hosts, &ns).await;
    assert_every_host_runs(&at_d1, &pinned_d1);
    assert!(first.stderr.contains(&d1), "apply says which digest it pinned:\n{first}");
    eprintln!("first apply:\n{first}");

    // The tag moves: a different image is pushed as `:live` (digest D2).
    let variant = format!("berth-test/echo-variant:{ns}");
    refs.add(variant.clone());
    build_variant(&variant);
    registry.push(&local, &variant, &format!("{repo}:live")).await;
    let d2 = registry_digest(registry.addr(), &repo, "live");
    refs.add(format!("{}/{repo}@{d2}", registry.addr()));
    assert_ne!(d1, d2, "the tag moved");

    // Pin: nothing changes anywhere, and nobody asks the registry.
    reset(&hosts);
    let again = berth_async(["apply", "-f", &pin], &[]).await;
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "{again}");
    assert_only_lists(&hosts, &again);
    assert_eq!(fleet_state(&hosts, &ns).await, at_d1, "the same containers, still on D1");
    berth_async(["plan", "-f", &pin], &[]).await.assert_code(0);

    // Follow: the moved tag is a new revision, D2 on every host, resolved once for all.
    let follow = write_input(dir.path(), "follow", &hosts, &set, "  imagePolicy: Follow\n  imagePollInterval: 30s\n");
    reset(&hosts);
    let followed = berth_async(["apply", "-f", &follow], &[]).await;
    followed.assert_success();
    assert_eq!(distribution_requests(&hosts), 1, "one registry question for the whole fleet");
    let at_d2 = fleet_state(&hosts, &ns).await;
    assert_every_host_runs(&at_d2, &format!("{live}@{d2}"));
    for ((host, before), (_, after)) in at_d1.iter().zip(&at_d2) {
        assert_ne!(before[0].1, after[0].1, "host {host}: a new container for the new revision");
    }

    // Rollback to the previous revision restores the old digest everywhere, and a later
    // apply of the same (Follow) files stays there: the revision left is held.
    let back = berth_async(["rollback", &format!("{ns}/web"), "-f", &follow], &[]).await;
    back.assert_success();
    let at_back = fleet_state(&hosts, &ns).await;
    assert_every_host_runs(&at_back, &pinned_d1);
    let history = berth_async(["history", &format!("{ns}/web"), "-f", &follow, "--json"], &[]).await;
    history.assert_success();
    assert!(history.stdout.contains(&d1) && history.stdout.contains(&d2), "{history}");
    let stay = berth_async(["apply", "-f", &follow], &[]).await;
    stay.assert_success();
    assert_eq!(fleet_state(&hosts, &ns).await, at_back, "held: the rollback sticks\n{stay}");
    let at_d2 = at_back;

    // The registry goes down. Pin with nothing to resolve: still a no-op.
    registry.stop();
    reset(&hosts);
    let down = berth_async(["apply", "-f", &pin], &[]).await;
    down.assert_success();
    assert!(down.stdout.contains("No changes"), "{down}");
    assert_only_lists(&hosts, &down);
    assert_eq!(fleet_state(&hosts, &ns).await, at_d2);

    // Follow must ask, and cannot: the set is left as it is, and the error names it.
    reset(&hosts);
    let out = berth_async(["apply", "-f", &follow], &[]).await;
    out.assert_code(1);
    eprintln!("registry down, Follow:\n{out}");
    assert!(out.stderr.contains(&format!("set {ns}/web: cannot pin")), "{out}");
    assert!(out.stderr.contains("cannot reach the registry"), "{out}");
    assert_eq!(mutating(&hosts), 0, "nothing changed:\n{out}");

    // A new template needs a digest, under Pin too: refused the same way, nothing stopped.
    let changed = set.clone().env("GREETING", "changed");
    let new_revision = write_input(dir.path(), "changed", &hosts, &changed, "");
    reset(&hosts);
    let out = berth_async(["apply", "-f", &new_revision], &[]).await;
    out.assert_code(1);
    assert!(out.stderr.contains(&format!("set {ns}/web: cannot pin")), "{out}");
    assert_eq!(mutating(&hosts), 0, "nothing changed:\n{out}");
    assert_eq!(fleet_state(&hosts, &ns).await, at_d2, "the old containers keep serving");
    let plan = berth_async(["plan", "-f", &new_revision], &[]).await;
    plan.assert_code(1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locally_built_image_is_not_pinned_and_says_so() {
    ensure_echo_image();
    let local = docker().await;
    let guard = NamespaceGuard::new("pin-local");
    let ns = guard.name().to_string();
    let dir = tempfile::Builder::new().prefix("berth-pin-local-").tempdir().expect("a temp dir");
    let file = EchoSet::new(&ns, "web").write(dir.path());
    let file = file.to_str().expect("a UTF-8 path");

    let out = berth_async(["apply", "-f", file], &[]).await;
    out.assert_success();
    assert!(out.stderr.contains("not pinned: local image without a registry digest"), "{out}");
    let state = running(&local, &ns).await;
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0].3, ECHO_IMAGE, "the image is run as declared");

    // The running revision is reused without asking anyone, and without a note.
    let proxy = CountingProxy::start(&local_socket_path());
    let again = berth_async(["apply", "-f", file], &[("DOCKER_HOST", &proxy.docker_host())]).await;
    again.assert_success();
    assert!(!again.stderr.contains("not pinned"), "{again}");
    assert_eq!(proxy.count_where(|r| !matches!(r.endpoint(), "/containers/json" | "/version" | "/_ping")), 0);
    assert_eq!(running(&local, &ns).await, state);
}
