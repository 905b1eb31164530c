//! Tests of the multi-host test bed (`berth_tests::testbed`) against real engines.
//!
//! Tests of berth across several hosts trust the test bed to give them real, separate
//! engines on their own addresses and real faults. These tests check that it does: hosts
//! start side by side and serve the echo image on their own addresses over mutual TLS,
//! clients without the host's client certificate are refused, a killed engine is down until
//! started again, a powered-off host stops serving and boots with its containers, a
//! partitioned host times out and answers again after healing, and neither dropping a host
//! nor crashing with one leaves anything behind.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::testbed::{RemoteHost, cleanup_stale};
use berth_tests::{ECHO_BODY, ECHO_IMAGE, ECHO_PORT, eventually, eventually_sync, http_get};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{CreateContainerOptions, ListContainersOptions};
use bollard::{ClientVersion, Docker};
use tokio::task::block_in_place;

const WAIT: Duration = Duration::from_secs(30);

/// The host port the echo container publishes (on the test host's own address).
const PUBLISHED: u16 = 9000;

/// Runs the echo image as `name`, publishing 8080 on the host's port 9000, with restart
/// policy `always` when `restart`; returns the container's id.
async fn run_echo(docker: &Docker, name: &str, restart: bool) -> String {
    let key = format!("{ECHO_PORT}/tcp");
    let body = ContainerCreateBody {
        image: Some(ECHO_IMAGE.to_string()),
        exposed_ports: Some(vec![key.clone()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                key,
                Some(vec![PortBinding { host_ip: None, host_port: Some(PUBLISHED.to_string()) }]),
            )])),
            restart_policy: restart
                .then_some(RestartPolicy { name: Some(RestartPolicyNameEnum::ALWAYS), maximum_retry_count: None }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
    let id = docker.create_container(Some(opts), body).await.expect("create the echo container").id;
    docker.start_container(name, None).await.expect("start the echo container");
    id
}

/// `GET http://<addr>/` answers the echo body.
fn answers(addr: &str) -> bool {
    http_get(addr).is_some_and(|(status, body)| status == 200 && body == ECHO_BODY)
}

async fn wait_answers(addr: &str) {
    eventually(&format!("GET http://{addr}/ to answer {ECHO_BODY:?}"), WAIT, || async move { answers(addr) }).await;
}

/// Whether a ping through `client` succeeds within `within`.
async fn pings(client: &Docker, within: Duration) -> bool {
    matches!(tokio::time::timeout(within, client.ping()).await, Ok(Ok(_)))
}

const API_1_41: ClientVersion = ClientVersion { major_version: 1, minor_version: 41 };

/// A TLS client for `host` that trusts its CA but presents `key`/`cert` (which may not
/// exist: then it presents no certificate at all).
fn tls_client_with(host: &RemoteHost, key: &Path, cert: &Path) -> Docker {
    Docker::connect_with_ssl(host.tcp_endpoint(), key, cert, &host.cert_dir().join("ca.pem"), 5, &API_1_41)
        .expect("a TLS client")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_start_side_by_side_and_serve_over_mutual_tls() {
    let started = Instant::now();
    let hosts = block_in_place(|| RemoteHost::start_all(&[1, 2]));
    println!("two RemoteHosts started in parallel in {:?}", started.elapsed());
    for h in &hosts {
        println!("{} at {}: {:?}", h.name(), h.ip(), h.timings());
    }
    assert_ne!(hosts[0].ip(), hosts[1].ip(), "two hosts share an address");
    assert_eq!(hosts[0].ip(), format!("10.250.{}.2", hosts[0].slot()));
    assert_eq!(hosts[0].tcp_endpoint(), format!("tcp://10.250.{}.2:2376", hosts[0].slot()));
    for h in &hosts {
        assert!(h.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"), "ca_pem of {}", h.name());
        assert!(h.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"), "cert_pem of {}", h.name());
        assert!(h.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"), "key_pem of {}", h.name());
    }

    let mut engine_ids = Vec::new();
    for h in &hosts {
        let docker = h.docker_tls().await;
        docker.ping().await.expect("ping over TLS");
        let info = docker.info().await.expect("info over TLS");
        engine_ids.push(info.id.expect("the engine has an id"));
        run_echo(&docker, "echo", false).await;
        wait_answers(&format!("{}:{PUBLISHED}", h.ip())).await;
    }
    assert_ne!(engine_ids[0], engine_ids[1], "the two hosts are one engine");
    // Separate engines: each sees its own container only, also over its unix socket.
    for h in &hosts {
        let listed = h.docker_unix().await.list_containers(Some(ListContainersOptions::default())).await.unwrap();
        assert_eq!(listed.len(), 1, "{} lists {listed:?}", h.name());
    }

    for (i, h) in hosts.iter().enumerate() {
        let other = &hosts[1 - i];
        let none = h.dir().join("no-client-certificate");
        let anonymous = tls_client_with(h, &none.join("key.pem"), &none.join("cert.pem"));
        assert!(!pings(&anonymous, WAIT).await, "{} answered a client without a certificate", h.name());
        let foreign = tls_client_with(h, &other.cert_dir().join("key.pem"), &other.cert_dir().join("cert.pem"));
        assert!(!pings(&foreign, WAIT).await, "{} answered a client certified by {}'s CA", h.name(), other.name());
        let own = tls_client_with(h, &h.cert_dir().join("key.pem"), &h.cert_dir().join("cert.pem"));
        assert!(pings(&own, WAIT).await, "{} refused its own client certificate", h.name());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_engine_is_down_until_started_again() {
    let mut host = block_in_place(|| RemoteHost::start(3));
    let addr = format!("{}:{PUBLISHED}", host.ip());
    run_echo(&host.docker_tls().await, "echo", true).await;
    wait_answers(&addr).await;

    block_in_place(|| host.kill_engine());
    assert!(!host.engine_running());
    let probe = host.tls_client(Duration::from_secs(2));
    assert!(!pings(&probe, Duration::from_secs(5)).await, "the engine answered over TLS after kill_engine");
    // (The socket file stays behind a SIGKILLed engine; were it gone, that is no answer too.)
    if let Ok(unix) = Docker::connect_with_unix(&host.unix_endpoint(), 2, &API_1_41) {
        assert!(!pings(&unix, Duration::from_secs(5)).await, "the engine answered on its socket after kill_engine");
    }
    // Like after a dockerd crash, the container itself runs on.
    assert!(answers(&addr), "the container stopped serving when only its engine was killed");

    let restarted = Instant::now();
    block_in_place(|| host.start_engine());
    println!("start_engine after kill_engine: {:?}", restarted.elapsed());
    assert!(pings(&probe, WAIT).await, "the engine does not answer over TLS after start_engine");
    let docker = host.docker_tls().await;
    eventually("the echo container (restart: always) to run again", WAIT, || {
        let docker = docker.clone();
        async move { docker.inspect_container("echo", None).await.ok()?.state?.running.filter(|r| *r) }
    })
    .await;
    wait_answers(&addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_powered_off_host_stops_serving_and_boots_with_its_containers() {
    let mut host = block_in_place(|| RemoteHost::start(4));
    let addr = format!("{}:{PUBLISHED}", host.ip());
    run_echo(&host.docker_tls().await, "echo", true).await;
    wait_answers(&addr).await;

    block_in_place(|| host.power_off());
    assert!(!host.engine_running());
    assert!(!pings(&host.tls_client(Duration::from_secs(2)), Duration::from_secs(5)).await, "answered after power_off");
    eventually("the powered-off host to stop serving", WAIT, || {
        let addr = addr.clone();
        async move { !answers(&addr) }
    })
    .await;

    let booted = Instant::now();
    block_in_place(|| host.start_engine());
    println!("start_engine after power_off: {:?}", booted.elapsed());
    wait_answers(&addr).await;
    println!("serving again {:?} after start_engine began", booted.elapsed());

    // Dropped while powered off (its shims SIGKILLed), a host leaves nothing either.
    let id = host.docker_unix().await.inspect_container("echo", None).await.unwrap().id.unwrap();
    let (name, veth, dir, pid) =
        (host.name().to_string(), host.veth().to_string(), host.dir().to_path_buf(), host.engine_pid().unwrap());
    block_in_place(|| host.power_off());
    let left = remains(&name, &veth, &dir, pid, &id);
    assert!(left.iter().any(|r| r.starts_with("shim socket")), "a SIGKILLed shim leaves its socket: {left:?}");
    block_in_place(|| drop(host));
    assert_eq!(remains(&name, &veth, &dir, pid, &id), Vec::<String>::new(), "left behind by the dropped host");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_host_times_out_and_answers_after_heal() {
    let host = block_in_place(|| RemoteHost::start(5));
    println!("{}: {:?}", host.name(), host.timings());
    let probe = host.tls_client(Duration::from_secs(2));
    assert!(pings(&probe, WAIT).await, "no answer before the partition");

    host.partition();
    assert!(host.is_partitioned());
    let t = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), probe.ping()).await;
    let took = t.elapsed();
    println!("ping during the partition: {outcome:?} after {took:?}");
    assert!(!matches!(outcome, Ok(Ok(_))), "the partitioned host answered over TCP");
    assert!(took < Duration::from_secs(5), "the failing ping took {took:?}, not the client's 2 s timeout");
    // The engine itself runs on: only the network is cut.
    host.docker_unix().await.ping().await.expect("the partitioned engine answers on its socket");

    host.heal();
    assert!(!host.is_partitioned());
    let healed = Instant::now();
    eventually("the healed host to answer over TLS", WAIT, || {
        let probe = probe.clone();
        async move { probe.ping().await }
    })
    .await;
    println!("answering {:?} after heal", healed.elapsed());
}

/// The socket containerd 1.6 gives the shim of container `id` of host `name`:
/// `/run/containerd/s/<sha256(<containerd address>/<namespace>/<id>)>`, outside the host's
/// directory.
fn shim_socket(name: &str, dir: &Path, id: &str) -> PathBuf {
    let key = format!("{}/exec/containerd/containerd.sock/{name}/{id}", dir.display());
    let mut child =
        Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run sha256sum");
    child.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string();
    Path::new("/run/containerd/s").join(hash)
}

/// What is left of a host named `name` (netns `name`, veth `veth`, directory `dir`, engine
/// `pid`, container `container`): an empty list when nothing.
fn remains(name: &str, veth: &str, dir: &Path, pid: u32, container: &str) -> Vec<String> {
    let mut left = Vec::new();
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if ip(&["netns", "list"]).lines().any(|l| l.split_whitespace().next() == Some(name)) {
        left.push(format!("netns {name}"));
    }
    if ip(&["-o", "link", "show"]).contains(&format!(" {veth}@")) {
        left.push(format!("veth {veth}"));
    }
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let (exact, under) = (format!(" {} ", dir.display()), format!(" {}/", dir.display()));
    left.extend(mountinfo.lines().filter(|l| l.contains(&exact) || l.contains(&under)).map(|l| format!("mount {l}")));
    for controller in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if controller.path().join(name).exists() {
            left.push(format!("cgroup {}", controller.path().join(name).display()));
        }
    }
    let socket = shim_socket(name, dir, container);
    if socket.exists() {
        left.push(format!("shim socket {}", socket.display()));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if !stat.is_empty() && !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) {
        left.push(format!("dockerd {pid}"));
    }
    left
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_host_removes_everything_it_made() {
    let host = block_in_place(|| RemoteHost::start(6));
    // A container, so that there are mounts, cgroups, a shim and a docker-proxy to remove.
    let id = run_echo(&host.docker_tls().await, "echo", true).await;
    wait_answers(&format!("{}:{PUBLISHED}", host.ip())).await;
    let (name, veth, dir, pid) =
        (host.name().to_string(), host.veth().to_string(), host.dir().to_path_buf(), host.engine_pid().unwrap());
    let ip = host.ip().to_string();
    let before = remains(&name, &veth, &dir, pid, &id);
    assert!(before.iter().any(|r| r.starts_with("shim socket")), "no shim socket found: {before:?}");
    assert!(before.len() > 4, "a running host shows its parts: {before:?}");

    let dropped = Instant::now();
    block_in_place(|| drop(host));
    println!("dropping a host with one container: {:?}", dropped.elapsed());
    assert_eq!(remains(&name, &veth, &dir, pid, &id), Vec::<String>::new(), "left behind by the dropped host");
    // Its address is not routed off the machine now: it fails at once.
    let route = Command::new("ip").args(["route", "get", &ip]).output().unwrap();
    assert!(!route.status.success(), "{ip} is still routed: {}", String::from_utf8_lossy(&route.stdout));
}

const CRASH_CHILD: &str = "BERTH_TESTBED_CRASH_CHILD";
const HOST_LINE: &str = "BERTH-TESTBED-HOST ";

/// In the child (run with `CRASH_CHILD` set): starts a host with a container, says which,
/// waits for stdin to close and aborts, so no destructor runs: a crashed test run.
fn crash_child() -> ! {
    let host = RemoteHost::start(7);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt.block_on(async { run_echo(&host.docker_tls().await, "echo", true).await });
    let pid = host.engine_pid().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{HOST_LINE}{} {} {} {pid} {id}", host.name(), host.veth(), host.dir().display()).unwrap();
    out.flush().unwrap();
    let _ = std::io::stdin().read_line(&mut String::new());
    std::process::abort();
}

#[test]
fn leftovers_of_a_crashed_run_are_removed() {
    if std::env::var_os(CRASH_CHILD).is_some() {
        crash_child();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["leftovers_of_a_crashed_run_are_removed", "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the crashing child");
    // libtest prints "test NAME ... " before the test's own output, on the same line.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let line = loop {
        match lines_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(at) = line.find(HOST_LINE) {
                    break line[at + HOST_LINE.len()..].to_string();
                }
            }
            Err(why) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the child did not start a host ({why:?}, {}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let (name, veth, dir, pid, id) =
        (fields[0], fields[1], Path::new(fields[2]), fields[3].parse::<u32>().unwrap(), fields[4]);
    let alive = remains(name, veth, dir, pid, id);
    assert!(alive.len() > 4, "the child's host shows its parts: {alive:?}");

    drop(child.stdin.take()); // the child aborts
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was to abort, it ended with {status}");
    println!("left by the crashed run: {:?}", remains(name, veth, dir, pid, id));

    let t = Instant::now();
    let removed = cleanup_stale();
    println!("cleanup_stale removed {removed:?} in {:?}", t.elapsed());
    // Another test's start may be sweeping them right now: wait for it to finish.
    eventually_sync("the crashed run's leftovers to be gone", WAIT, || remains(name, veth, dir, pid, id).is_empty());
}
