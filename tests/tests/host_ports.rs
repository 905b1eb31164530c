//! Fixed host ports: a port another container holds fails the rollout without taking down
//! what runs, and a replacement that keeps its port is forced to StopFirst.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use berth_tests::{
    BerthOutput, ECHO_BODY, ECHO_IMAGE, ECHO_PORT, EchoSet, NamespaceGuard, berth_async, docker, ensure_echo_image,
    eventually, free_port, http_get, http_request, names_ids_states,
};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};

const WAIT: Duration = Duration::from_secs(30);

/// A container berth does not manage (no berth labels) publishing 127.0.0.1:`port`;
/// force-removed on drop, also when the test panics.
struct Squatter {
    name: String,
}

impl Squatter {
    async fn start(docker: &Docker, name: &str, port: u16) -> Squatter {
        let key = format!("{ECHO_PORT}/tcp");
        let body = ContainerCreateBody {
            image: Some(ECHO_IMAGE.to_string()),
            exposed_ports: Some(vec![key.clone()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    key,
                    Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(port.to_string()) }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
        let squatter = Squatter { name: name.to_string() };
        docker.create_container(Some(opts), body).await.expect("create the unmanaged container");
        docker.start_container(name, None).await.expect("start the unmanaged container");
        squatter
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let name = self.name.clone();
        let removed = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(async {
                let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
                match docker().await.remove_container(&name, Some(opts)).await {
                    Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
                    Err(e) => Err(format!("cannot remove the unmanaged container {name}: {e}")),
                }
            })
        })
        .join();
        if let Ok(Err(e)) = removed {
            eprintln!("warning: {e}");
        }
    }
}

/// A port free a moment ago that is none of `taken`.
fn another_free_port(taken: &[u16]) -> u16 {
    loop {
        let p = free_port();
        if !taken.contains(&p) {
            return p;
        }
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("berth-host-ports-").tempdir().expect("a temp dir")
}

async fn berth_file(command: &str, path: &Path) -> BerthOutput {
    berth_async([command, "-f", path.to_str().expect("a UTF-8 path")], &[]).await
}

fn answers(port: u16) -> bool {
    http_get(&format!("127.0.0.1:{port}")).is_some_and(|(s, b)| s == 200 && b == ECHO_BODY)
}

async fn wait_answers(what: &str, port: u16) {
    eventually(what, WAIT, || async move { answers(port) }).await;
}

/// `(name, id)` of the only running container of the namespace.
async fn the_running_container(docker: &Docker, ns: &str) -> (String, String) {
    let all = names_ids_states(docker, ns).await;
    let running: Vec<_> = all.iter().filter(|(_, _, s)| s == "running").collect();
    assert_eq!(running.len(), 1, "one running container in {ns}: {all:?}");
    (running[0].0.clone(), running[0].1.clone())
}

/// Probes `port` in the background until stopped; counts the probes that did not answer.
struct Prober {
    stop: Arc<AtomicBool>,
    misses: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    fn start(port: u16) -> Prober {
        let (stop, misses, probes) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, m, p) = (stop.clone(), misses.clone(), probes.clone());
        let task = tokio::task::spawn_blocking(move || {
            while !s.load(Ordering::SeqCst) {
                if !answers(port) {
                    m.fetch_add(1, Ordering::SeqCst);
                }
                p.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        Prober { stop, misses, probes, task }
    }

    /// `(probes, misses)`.
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the prober");
        (self.probes.load(Ordering::SeqCst), self.misses.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_port_taken_by_another_container_fails_the_apply_and_the_old_container_keeps_serving() {
    ensure_echo_image();
    let docker = docker().await;
    let guard = NamespaceGuard::new("hostport-taken");
    let ns = guard.name().to_string();
    let dir = temp_dir();

    let p = free_port();
    let set = EchoSet::new(&ns, "web").host_port(p);
    let path: PathBuf = set.write(dir.path());
    berth_file("apply", &path).await.assert_success();
    wait_answers("the set to answer on its first port", p).await;
    let (old_name, old_id) = the_running_container(&docker, &ns).await;

    // Another container, not berth's, takes port Q.
    let q = another_free_port(&[p]);
    let squatter = Squatter::start(&docker, &format!("{ns}-squatter"), q).await;
    wait_answers("the unmanaged container to answer on Q", q).await;

    // The set moves to Q: the new container cannot start; the old one serves throughout.
    set.clone().host_port(q).write(dir.path());
    let prober = Prober::start(p);
    let out = berth_file("apply", &path).await;
    let (probes, misses) = prober.finish().await;
    out.assert_code(1);
    assert!(
        out.stderr.contains("port is already allocated") || out.stderr.contains("address already in use"),
        "stderr says the port is taken\n{out}"
    );
    assert!(out.stderr.contains(&q.to_string()), "stderr names the port {q}\n{out}");
    let new_prefix = format!("{ns}.web.");
    let names_new = out.stderr.lines().filter(|l| l.starts_with("error:")).any(|l| {
        l.contains(&format!("start container {new_prefix}")) && !l.contains(&format!("start container {old_name}"))
    });
    assert!(names_new, "stderr names the new container that could not start\n{out}");
    assert!(out.stderr.contains("the rollout stopped: 0 change(s) done, 1 failed, 0 not started"), "{out}");
    assert!(
        probes > 0 && misses == 0,
        "the old container answered on {p} throughout the failed apply: {misses} of {probes} probes failed"
    );

    assert!(answers(p), "the old container still answers on {p} after the failed apply");
    let after = names_ids_states(&docker, &ns).await;
    assert!(
        after.iter().any(|(n, id, s)| n == &old_name && id == &old_id && s == "running"),
        "the old container {old_name} still runs: {after:?}"
    );
    assert!(
        http_get(&format!("127.0.0.1:{q}")).is_some_and(|(s, _)| s == 200),
        "the unmanaged container still holds Q"
    );

    // The replacement is still pending, and plan says so.
    let plan = berth_file("plan", &path).await;
    plan.assert_code(2);
    assert!(plan.stdout.contains("~ replace"), "{plan}");
    assert!(plan.stdout.contains(&format!("ports[0].hostPort: {p} → {q}")), "the plan shows the port change\n{plan}");

    // Once the port is free, the same input converges.
    drop(squatter);
    berth_file("apply", &path).await.assert_success();
    wait_answers("the set to answer on Q once it is free", q).await;
    let (new_name, _) = the_running_container(&docker, &ns).await;
    assert_ne!(new_name, old_name);
    assert_eq!(names_ids_states(&docker, &ns).await.len(), 1, "the old container is gone");
    berth_file("plan", &path).await.assert_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_env_with_a_fixed_host_port_forces_stop_first_on_the_same_port() {
    ensure_echo_image();
    let docker = docker().await;
    let guard = NamespaceGuard::new("hostport-stopfirst");
    let ns = guard.name().to_string();
    let dir = temp_dir();
    let p = free_port();
    let addr = format!("127.0.0.1:{p}");

    let set = EchoSet::new(&ns, "web").host_port(p).env("GREETING", "first");
    let path = set.write(dir.path());
    berth_file("apply", &path).await.assert_success();
    wait_answers("the set to answer", p).await;
    let (old_name, _) = the_running_container(&docker, &ns).await;

    set.clone().env("GREETING", "second").write(dir.path());
    let plan = berth_file("plan", &path).await;
    plan.assert_code(2);
    assert!(plan.stdout.contains("(StopFirst)"), "{plan}");
    assert!(
        plan.stdout.contains(&format!("! StopFirst forced: hostPort 127.0.0.1:{p}/tcp is fixed")),
        "plan says StopFirst is forced and names the port\n{plan}"
    );
    assert!(plan.stdout.contains("env.GREETING: \"first\" → \"second\""), "{plan}");

    let out = berth_file("apply", &path).await;
    out.assert_success();
    assert!(out.stdout.contains("StopFirst forced"), "apply prints the plan it runs\n{out}");
    wait_answers("the new container to answer on the same port", p).await;
    let (new_name, _) = the_running_container(&docker, &ns).await;
    assert_ne!(new_name, old_name, "the container was replaced");
    assert_eq!(names_ids_states(&docker, &ns).await.len(), 1, "only the new container is left");
    let greeting = http_request(&addr, "GET", "/env/GREETING", &[]);
    assert_eq!(greeting, Some((200, "second".to_string())), "the new container has the new env");
    berth_file("plan", &path).await.assert_code(0);
}
