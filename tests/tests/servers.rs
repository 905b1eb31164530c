//! Real servers from Debian's packages (the image of [`ensure_servers_image`]) run as berth
//! ContainerSets: PostgreSQL keeps its rows in a named volume across a replacement of its
//! container; Redis and nginx start and answer; the image loads into a test-bed host.
//!
//! Clients are never `docker exec`s into berth's containers (that is drift, and the operator
//! replaces a container someone exec'd into): they are plain `docker run --rm` containers of
//! the same image, on the set's network, or the test's own sockets on the bridge addresses.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::*;

/// How long a server may take to answer once berth said the set is up.
const ANSWER: Duration = Duration::from_secs(30);

/// What a test made besides containers: removed after them (fields drop in this order), also
/// when the test panicked.
struct Cleanup {
    ns: NamespaceGuard,
    _volumes: VolumeGuard,
    network: Option<NetworkGuard>,
}

/// Removes a user-defined network when dropped.
struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let out = Command::new("docker").args(["network", "rm", &self.0]).output();
        match out {
            Ok(o) if o.status.success() || String::from_utf8_lossy(&o.stderr).contains("No such network") => {}
            Ok(o) => eprintln!("warning: docker network rm {}: {}", self.0, String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("warning: cannot run docker network rm {}: {e}", self.0),
        }
    }
}

impl Cleanup {
    fn new(prefix: &str, volumes: &[&str], network: bool) -> Cleanup {
        let ns = NamespaceGuard::new(prefix);
        let volumes: Vec<String> = volumes.iter().map(|v| format!("{ns}-{v}")).collect();
        let names: Vec<&str> = volumes.iter().map(String::as_str).collect();
        let _volumes = VolumeGuard::new(&docker_host(), ns.name(), &names);
        let network = network.then(|| NetworkGuard(format!("{ns}-net")));
        Cleanup { ns, _volumes, network }
    }

    fn network(&self) -> &str {
        &self.network.as_ref().expect("this test has a network").0
    }
}

/// The one running container of `set`: `(name, id)`.
async fn only_container(docker: &bollard::Docker, ns: &str, set: &str) -> (String, String) {
    let mut running: Vec<(String, String)> = names_ids_states(docker, ns)
        .await
        .into_iter()
        .filter(|(name, _, state)| name.starts_with(&format!("{ns}.{set}.")) && state == "running")
        .map(|(name, id, _)| (name, id))
        .collect();
    assert_eq!(running.len(), 1, "one running container of {set}: {running:?}");
    running.remove(0)
}

/// The container's address on `network` (or on its first network when `None`).
async fn address_on(docker: &bollard::Docker, container: &str, network: Option<&str>) -> String {
    let c = docker.inspect_container(container, None).await.expect("inspect container");
    let nets = c.network_settings.and_then(|n| n.networks).unwrap_or_default();
    let endpoint = match network {
        Some(n) => nets.get(n).cloned().unwrap_or_else(|| panic!("{container} is not on {n}: {:?}", nets.keys())),
        None => nets.into_values().next().unwrap_or_else(|| panic!("{container} is on no network")),
    };
    endpoint.ip_address.filter(|ip| !ip.is_empty()).unwrap_or_else(|| panic!("{container} has no address"))
}

/// `psql -At -c SQL` against `host` from a plain client container on `network`: its output,
/// or what went wrong.
async fn psql(image: &str, network: &str, host: &str, sql: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("docker")
        .args(["run", "--rm", "--network", network, "-e", "PGCONNECT_TIMEOUT=3", image])
        .args(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", host, "-U", "postgres", "-At", "-c", sql])
        .output()
        .await
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A ContainerSet `db` of the servers image running PostgreSQL, its data in `volume`
/// (mounted at `target`), on `network`. `mark` is an env value: changing it makes a new
/// revision.
fn postgres_set(ns: &str, image: &str, volume: &str, target: &str, network: &str, mark: &str) -> String {
    let script = serde_json::to_string(POSTGRES_START).expect("JSON string");
    format!(
        "apiVersion: berth.dev/v1alpha1
kind: ContainerSet
metadata:
  name: db
  namespace: {ns}
spec:
  replicasPerHost: 1
  strategy:
    type: StopFirst
    progressDeadlineSeconds: 60
  template:
    image: {image}
    imagePullPolicy: Never
    user: postgres
    command: [\"bash\", \"-c\", {script}]
    env:
      - name: MARK
        value: {mark}
    mounts:
      - type: volume
        source: {volume}
        target: {target}
    networks: [{network}]
    healthcheck:
      test: [\"CMD\", \"pg_isready\", \"-h\", \"127.0.0.1\"]
      interval: 500ms
      timeout: 2s
      retries: 3
      # initdb on the first start takes seconds: failures then do not count (without it the
      # container turned unhealthy before PostgreSQL listened, 1 run in ~10 here).
      startPeriod: 30s
    stopSignal: SIGINT
    stopGracePeriodSeconds: 10
"
    )
}

/// What the test compares before and after: how many rows, and a digest of all of them.
const CHECKSUM: &str = "select count(*) || ' ' || md5(string_agg(id || '=' || note, ',' order by id)) from notes";

#[tokio::test(flavor = "multi_thread")]
async fn postgres_rows_in_a_named_volume_survive_a_replacement_of_the_db_container() {
    let image = ensure_servers_image();
    let docker = docker().await;
    let c = Cleanup::new("servers-pg", &["pgdata"], true);
    let (ns, network) = (c.ns.name(), c.network());
    let volume = format!("{ns}-pgdata");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.yaml");
    let file_arg = file.to_str().unwrap();

    let t0 = Instant::now();
    std::fs::write(&file, postgres_set(ns, image, &volume, "/var/lib/postgresql", network, "one")).unwrap();
    berth_async(["apply", "-f", file_arg], &[]).await.assert_success();
    let (first, first_id) = only_container(&docker, ns, "db").await;
    let addr = address_on(&docker, &first, Some(network)).await;
    let up = t0.elapsed();

    // Rows written by a client in another container, over the network.
    let write = format!(
        "create table notes (id integer primary key, note text not null);
         insert into notes select i, '{ns}-' || i from generate_series(1, 500) i;"
    );
    eventually("PostgreSQL accepts the client's rows", ANSWER, || psql(image, network, &addr, &write)).await;
    let before = psql(image, network, &addr, CHECKSUM).await.expect("checksum before");
    assert!(before.starts_with("500 "), "500 rows written: {before}");

    // A spec change: a new revision replaces the container (StopFirst: never two postmasters
    // on one data directory).
    let t1 = Instant::now();
    std::fs::write(&file, postgres_set(ns, image, &volume, "/var/lib/postgresql", network, "two")).unwrap();
    berth_async(["apply", "-f", file_arg], &[]).await.assert_success();
    let replaced = t1.elapsed();
    let (second, second_id) = only_container(&docker, ns, "db").await;
    assert_ne!(first_id, second_id, "the spec change replaced the container ({first} -> {second})");
    assert_ne!(first, second, "a new revision, a new name");
    let all = names_ids_states(&docker, ns).await;
    assert_eq!(all.len(), 1, "the old container is gone: {all:?}");

    let addr = address_on(&docker, &second, Some(network)).await;
    let after = eventually("the new PostgreSQL answers", ANSWER, || psql(image, network, &addr, CHECKSUM)).await;
    assert_eq!(after, before, "the rows written before the replacement are all there after it");
    // Applying the same file again changes nothing.
    berth_async(["plan", "-f", file_arg], &[]).await.assert_code(0);
    eprintln!("postgres: up in {up:.1?}, replaced (StopFirst) in {replaced:.1?}; rows kept: {after}");
}

/// Redis and nginx, each a set of the servers image on the default bridge, answering the
/// test's own sockets.
fn redis_and_nginx(ns: &str, image: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1
kind: ContainerSet
metadata:
  name: redis
  namespace: {ns}
spec:
  replicasPerHost: 1
  strategy:
    progressDeadlineSeconds: 60
  template:
    image: {image}
    imagePullPolicy: Never
    user: redis
    command: [\"redis-server\", \"--protected-mode\", \"no\", \"--save\", \"\", \"--appendonly\", \"no\"]
    ports:
      - containerPort: 6379
    healthcheck:
      test: [\"CMD\", \"redis-cli\", \"ping\"]
      interval: 500ms
      timeout: 2s
      retries: 3
      startPeriod: 10s
    stopGracePeriodSeconds: 5
---
apiVersion: berth.dev/v1alpha1
kind: ContainerSet
metadata:
  name: nginx
  namespace: {ns}
spec:
  replicasPerHost: 1
  strategy:
    progressDeadlineSeconds: 60
  template:
    image: {image}
    imagePullPolicy: Never
    command: [\"nginx\", \"-g\", \"daemon off;\"]
    ports:
      - containerPort: 80
    healthcheck:
      test: [\"CMD\", \"bash\", \"-c\", \"exec 3<>/dev/tcp/127.0.0.1/80\"]
      interval: 500ms
      timeout: 2s
      retries: 3
      startPeriod: 10s
    stopSignal: SIGQUIT
    stopGracePeriodSeconds: 5
"
    )
}

/// One RESP command to Redis at `addr`; the raw reply.
async fn redis(addr: &str, args: &[&str]) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .map_err(|_| "no reply within 2s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_and_nginx_of_the_servers_image_start_and_answer() {
    let image = ensure_servers_image();
    let docker = docker().await;
    let c = Cleanup::new("servers-kv-web", &[], false);
    let ns = c.ns.name();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("servers.yaml");
    std::fs::write(&file, redis_and_nginx(ns, image)).unwrap();

    let t0 = Instant::now();
    berth_async(["apply", "-f", file.to_str().unwrap()], &[]).await.assert_success();
    let up = t0.elapsed();

    let (redis_name, _) = only_container(&docker, ns, "redis").await;
    let redis_addr = format!("{}:6379", address_on(&docker, &redis_name, None).await);
    let pong = eventually("Redis answers PING", ANSWER, || async {
        redis(&redis_addr, &["PING"]).await.and_then(|r| if r == "+PONG\r\n" { Ok(r) } else { Err(r) })
    })
    .await;
    assert_eq!(pong, "+PONG\r\n");
    assert_eq!(redis(&redis_addr, &["SET", "greeting", ns]).await.unwrap(), "+OK\r\n");
    let got = redis(&redis_addr, &["GET", "greeting"]).await.unwrap();
    assert_eq!(got, format!("${}\r\n{ns}\r\n", ns.len()), "Redis gives back what was set");

    let (nginx_name, _) = only_container(&docker, ns, "nginx").await;
    let nginx_addr = format!("{}:80", address_on(&docker, &nginx_name, None).await);
    let (status, body) = eventually("nginx answers GET /", ANSWER, || {
        let addr = nginx_addr.clone();
        async move { tokio::task::spawn_blocking(move || http_get(&addr)).await.ok().flatten() }
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Welcome to nginx"), "Debian's default page: {body}");
    eprintln!("redis and nginx: up in {up:.1?}");
}

#[test]
fn the_servers_image_loads_into_a_test_bed_host_with_the_same_id() {
    let image = ensure_servers_image();
    let local_id = image_id(None, image).expect("the servers image is on the local engine");
    let host = RemoteHost::start(71);
    let t0 = Instant::now();
    host.load_image(image);
    let loaded = t0.elapsed();
    let remote_id = image_id(Some(&host.unix_endpoint()), image);
    assert_eq!(remote_id.as_deref(), Some(local_id.as_str()), "same image on both engines");
    eprintln!("servers image loaded into test host {} in {loaded:.1?}", host.name());
}

/// The image's ID on the engine at `host` (the local one when `None`), by the Docker CLI.
fn image_id(host: Option<&str>, image: &str) -> Option<String> {
    let mut cmd = Command::new("docker");
    if let Some(h) = host {
        cmd.args(["-H", h]);
    }
    let out = cmd.args(["image", "inspect", "--format", "{{.Id}}", image]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
