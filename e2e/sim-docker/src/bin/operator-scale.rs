//! `operator-scale`: the `berth operator` binary at fleet scale, against berth's fake
//! Kubernetes API and simulated Docker engines (issue 5, part 4).
//!
//! ```text
//! cargo run --release -p berth-sim-docker --bin operator-scale -- --size 10000x1000
//! cargo run --release -p berth-sim-docker --bin operator-scale -- --size 100x10 --size 1000x100 --size 10000x1000
//! ```
//!
//! Per size (`SETSxHOSTS`): a fresh fake API holding HOSTS DockerHosts (simulated engines,
//! `tcp://127.0.0.1:PORT`, `insecure: true`) and SETS ContainerSets created before the operator
//! starts. Hosts come in groups of `--hosts-per-set` (label `group=gN`), set `j` selects group
//! `j mod groups` with `--replicas` per host: by default 1 host × 1 replica per set, so 10k
//! sets are 10k containers, 10 per host at 10k/1k. Then:
//!
//! 1. **converge**: spawn the release `berth operator` (KUBECONFIG = the fake) and wait until
//!    every set's status says `Ready=True` at `observedGeneration == generation`;
//! 2. **change**: change the template (an env value) of `--change-percent` of the sets and wait
//!    for them the same way.
//!
//! After each phase the run waits for quiet (no API write for [`QUIET`]), so late writes count
//! against the phase that caused them. Measured per phase: wall time, the operator's peak RSS
//! (`VmHWM`) and largest sampled `VmRSS`, ContainerSet reconciles (the operator's `/metrics`)
//! and reconciles/s, Kubernetes API requests per reconcile by verb (the fake's request log;
//! the benchmark's own writes carry `fieldManager=operator-scale` and are left out; it reads
//! the fake's store directly, which is not a request), Docker API requests per reconcile, and
//! status writes per set. Prints markdown tables.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use berth_crd::{ContainerSet, DockerHost};
use berth_fake_api::{FakeApi, RequestRecord};
use berth_sim_docker::SimFleet;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NAMESPACE: &str = "scale";
/// The field manager of the benchmark's own writes, which the request counts leave out.
const BENCH_MANAGER: &str = "operator-scale";
/// A phase is over when the API has seen no write for this long (the operator's event
/// throttle is 1 s, its debounce 0.2 s).
const QUIET: Duration = Duration::from_secs(3);
/// How often the sets' status and the operator's memory are looked at.
const POLL: Duration = Duration::from_millis(200);
/// Concurrent requests when the benchmark creates or changes objects.
const SETUP_CONCURRENCY: usize = 32;

struct Args {
    sizes: Vec<(usize, usize)>,
    hosts_per_set: usize,
    replicas: u32,
    change_percent: usize,
    berth: Option<PathBuf>,
    timeout: Duration,
    log_filter: String,
    keep_logs: bool,
}

fn usage() -> &'static str {
    "usage: operator-scale [--size SETSxHOSTS]... [--hosts-per-set K] [--replicas R] [--change-percent P]\n\
     \x20                     [--berth PATH] [--timeout-secs S] [--log FILTER] [--keep-logs]\n\
     defaults: --size 100x10 --hosts-per-set 1 --replicas 1 --change-percent 100 --timeout-secs 1800 --log berth=info\n\
     --berth defaults to target/release/berth, built first with `cargo build --release -p berth --bin berth`"
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        sizes: Vec::new(),
        hosts_per_set: 1,
        replicas: 1,
        change_percent: 100,
        berth: None,
        timeout: Duration::from_secs(1800),
        log_filter: "berth=info".into(),
        keep_logs: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--size" => {
                let v = value()?;
                let (s, h) = v.split_once('x').ok_or_else(|| format!("--size {v}: expected SETSxHOSTS"))?;
                let parse = |n: &str| n.parse::<usize>().map_err(|_| format!("--size {v}: expected SETSxHOSTS"));
                a.sizes.push((parse(s)?, parse(h)?));
            }
            "--hosts-per-set" => a.hosts_per_set = number(value()?)?.max(1),
            "--replicas" => a.replicas = number(value()?)? as u32,
            "--change-percent" => a.change_percent = number(value()?)?.min(100),
            "--berth" => a.berth = Some(PathBuf::from(value()?)),
            "--timeout-secs" => a.timeout = Duration::from_secs(number(value()?)? as u64),
            "--log" => a.log_filter = value()?,
            "--keep-logs" => a.keep_logs = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.sizes.is_empty() {
        a.sizes.push((100, 10));
    }
    for &(sets, hosts) in &a.sizes {
        if sets == 0 || hosts < a.hosts_per_set {
            return Err(format!("--size {sets}x{hosts}: needs at least one set and --hosts-per-set hosts"));
        }
    }
    Ok(a)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root exists")
}

/// The release `berth` binary: `--berth`, or built (a no-op when fresh) and taken from target/.
fn berth_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.is_file() { Ok(p) } else { Err(format!("--berth {}: no such file", p.display())) };
    }
    let root = workspace_root();
    eprintln!("building berth: cargo build --release -p berth --bin berth");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "berth", "--bin", "berth"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build --release -p berth failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/berth"))
}

/// What one phase cost.
#[derive(Default)]
struct Phase {
    name: &'static str,
    /// Sets the phase waited for.
    sets: usize,
    /// From spawn (converge) or the first change sent (change) to the last set converged.
    converged_in: Duration,
    /// How long sending the changes took (change phase).
    sending: Duration,
    /// Until quiet, after convergence.
    settled_in: Duration,
    peak_rss_kb: u64,
    max_sampled_rss_kb: u64,
    end_rss_kb: u64,
    set_reconciles: f64,
    host_reconciles: f64,
    reconcile_errors: f64,
    /// Kubernetes API requests by the operator: verb → count.
    kube_by_verb: BTreeMap<String, usize>,
    /// `verb resource` → count.
    kube_by_resource: BTreeMap<String, usize>,
    /// Status writes per set name (sets the phase waited for; 0 when none).
    status_writes: BTreeMap<String, usize>,
    docker: BTreeMap<String, u64>,
    containers: usize,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.set_reconciles / self.converged_in.as_secs_f64().max(1e-9)
    }

    fn per_reconcile(&self, n: f64) -> f64 {
        n / self.set_reconciles.max(1.0)
    }

    fn status_writes_max(&self) -> usize {
        self.status_writes.values().copied().max().unwrap_or(0)
    }

    fn status_writes_mean(&self) -> f64 {
        self.status_writes.values().sum::<usize>() as f64 / self.sets.max(1) as f64
    }

    fn sets_over_one(&self) -> usize {
        self.status_writes.values().filter(|n| **n > 1).count()
    }
}

/// The Kubernetes verb of a request.
fn verb(r: &RequestRecord) -> &'static str {
    if r.is_watch() {
        return "watch";
    }
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    // `/api/v1/...` or `/apis/group/version/...`: what follows is the resource path.
    let rest = match segs.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => &[][..],
    };
    let collection = matches!(rest, [_] | ["namespaces", _, _]) && !matches!(rest, ["namespaces", _]);
    match (r.method.as_str(), collection) {
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => "other",
    }
}

/// `containersets`, `containersets/status`, `events`, ... of a request path.
fn resource(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segs.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return path.to_string(),
    };
    match rest {
        ["namespaces", _, plural, _, sub] => format!("{plural}/{sub}"),
        ["namespaces", _, plural, ..] => plural.to_string(),
        [plural, _, sub] => format!("{plural}/{sub}"),
        [plural, ..] => plural.to_string(),
        [] => path.to_string(),
    }
}

/// The set a status write is for, if the request is one.
fn status_write_of(r: &RequestRecord) -> Option<String> {
    if !matches!(r.method.as_str(), "PATCH" | "PUT") {
        return None;
    }
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [.., "containersets", name, "status"] => Some(name.to_string()),
        _ => None,
    }
}

fn is_bench(r: &RequestRecord) -> bool {
    form_urlencoded::parse(r.query.as_bytes()).any(|(k, v)| k == "fieldManager" && v == BENCH_MANAGER)
}

/// `VmHWM` and `VmRSS` of a process, in kB.
fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// The operator's `/metrics` as `name{labels}` → value.
fn scrape(addr: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("metrics at {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("metrics at {addr}: {e}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect())
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

fn errors_total(m: &BTreeMap<String, f64>) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with("berth_reconcile_errors_total")).map(|(_, v)| v).sum()
}

/// The running operator and what is needed to read it.
struct Operator {
    child: Child,
    http: String,
    log: PathBuf,
}

impl Operator {
    fn spawn(berth: &Path, fake: &FakeApi, dir: &Path, log_filter: &str) -> Result<Operator, String> {
        let kubeconfig = fake.write_kubeconfig(dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let http = format!("127.0.0.1:{port}");
        let log = dir.join("operator.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(berth)
            .args(["operator", "--http-addr", &http, "--lease-namespace", NAMESPACE, "--identity", "operator-scale"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", berth.display()))?;
        Ok(Operator { child, http, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the operator exited ({status}); log: {}", self.log.display())),
            Err(e) => Err(format!("the operator: {e}")),
        }
    }

    /// Metrics, once the endpoint answers (it starts before the operator leads).
    fn metrics(&mut self) -> Result<BTreeMap<String, f64>, String> {
        self.alive()?;
        scrape(&self.http)
    }

    fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a stored set reports `Ready=True` for its current generation.
fn converged(set: &Value) -> bool {
    let generation = set["metadata"]["generation"].as_i64();
    let status = &set["status"];
    generation.is_some()
        && status["observedGeneration"].as_i64() == generation
        && status["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Ready" && c["status"] == "True" && c["observedGeneration"].as_i64() == generation
            })
        })
}

fn set_name(j: usize) -> String {
    format!("cs-{j:05}")
}

/// Wait until every set in `pending` is converged, sampling the operator's memory.
fn wait_converged(
    fake: &FakeApi,
    op: &mut Operator,
    mut pending: BTreeSet<String>,
    timeout: Duration,
    max_rss: &mut u64,
) -> Result<(), String> {
    let started = Instant::now();
    let total = pending.len();
    let mut last_report = Instant::now();
    let mut last_rv = 0;
    while !pending.is_empty() {
        op.alive()?;
        if let Some((_, rss)) = memory_kb(op.pid()) {
            *max_rss = (*max_rss).max(rss);
        }
        // Read in place, and only when something changed: polling must not slow the server.
        let rv = fake.resource_version();
        if rv != last_rv {
            last_rv = rv;
            pending.retain(|name| {
                fake.with_object("berth.dev/v1alpha1", "containersets", NAMESPACE, name, converged) != Some(true)
            });
        }
        if started.elapsed() > timeout {
            let example = pending.iter().next().cloned().unwrap_or_default();
            let status = fake
                .object("berth.dev/v1alpha1", "containersets", NAMESPACE, &example)
                .map(|s| s["status"].to_string())
                .unwrap_or_default();
            return Err(format!(
                "{} of {total} sets not converged after {timeout:?}; e.g. {example}: {status}\n--- operator log (tail) ---\n{}",
                pending.len(),
                op.log_tail(30)
            ));
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:>6.1}s: {} of {total} sets converged",
                started.elapsed().as_secs_f64(),
                total - pending.len()
            );
            last_report = Instant::now();
        }
        if !pending.is_empty() {
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// Wait until the fake API has seen no write for [`QUIET`] (at most `limit`).
fn wait_quiet(fake: &FakeApi, op: &mut Operator, limit: Duration, max_rss: &mut u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut writes = fake.count_writes();
    let mut since = Instant::now();
    while since.elapsed() < QUIET && started.elapsed() < limit {
        op.alive()?;
        if let Some((_, rss)) = memory_kb(op.pid()) {
            *max_rss = (*max_rss).max(rss);
        }
        std::thread::sleep(POLL);
        let now = fake.count_writes();
        if now != writes {
            writes = now;
            since = Instant::now();
        }
    }
    Ok(started.elapsed())
}

/// Fill in a phase's counts from what happened between two snapshots.
fn account(
    phase: &mut Phase,
    log: &[RequestRecord],
    sets: &BTreeSet<String>,
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    docker_before: &BTreeMap<String, u64>,
    docker_after: &BTreeMap<String, u64>,
) {
    phase.set_reconciles = metric(after, r#"berth_reconciles_total{kind="containerset"}"#)
        - metric(before, r#"berth_reconciles_total{kind="containerset"}"#);
    phase.host_reconciles = metric(after, r#"berth_reconciles_total{kind="dockerhost"}"#)
        - metric(before, r#"berth_reconciles_total{kind="dockerhost"}"#);
    phase.reconcile_errors = errors_total(after) - errors_total(before);
    phase.status_writes = sets.iter().map(|s| (s.clone(), 0)).collect();
    for r in log.iter().filter(|r| !is_bench(r)) {
        *phase.kube_by_verb.entry(verb(r).to_string()).or_default() += 1;
        *phase.kube_by_resource.entry(format!("{} {}", verb(r), resource(&r.path))).or_default() += 1;
        if let Some(set) = status_write_of(r)
            && let Some(n) = phase.status_writes.get_mut(&set)
        {
            *n += 1;
        }
    }
    phase.docker = docker_after
        .iter()
        .map(|(k, v)| (k.clone(), v - docker_before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
}

struct SizeResult {
    sets: usize,
    hosts: usize,
    containers: usize,
    phases: Vec<Phase>,
    setup: Duration,
    unknown_docker_routes: BTreeMap<String, u64>,
}

async fn create_all<K, I>(api: &Api<K>, objects: I) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    I: IntoIterator<Item = K>,
{
    let pp = PostParams { field_manager: Some(BENCH_MANAGER.into()), ..Default::default() };
    futures::stream::iter(objects)
        .map(|o| {
            let pp = pp.clone();
            async move { api.create(&pp, &o).await.map(|_| ()) }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<()>()
        .await
        .map_err(|e| format!("create: {e}"))
}

async fn run_size(args: &Args, berth: &Path, sets: usize, hosts: usize) -> Result<SizeResult, String> {
    let setup_started = Instant::now();
    let groups = hosts / args.hosts_per_set;
    let fake = FakeApi::start();
    let client = fake.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    create_all(&crds, berth_crd::crds()).await?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).map_err(|e| e.to_string())?;
    create_all(&Api::<Namespace>::all(client.clone()), [ns]).await?;
    let sim = SimFleet::start(hosts).map_err(|e| format!("simulated engines: {e}"))?;
    let host_objects = (0..hosts).map(|i| {
        serde_json::from_value::<DockerHost>(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
            "metadata": {"name": format!("h-{i:04}"), "namespace": NAMESPACE,
                         "labels": {"group": format!("g{}", (i / args.hosts_per_set).min(groups - 1))}},
            "spec": {"endpoint": sim.endpoint(i), "insecure": true}
        }))
        .expect("a valid DockerHost")
    });
    create_all(&Api::<DockerHost>::namespaced(client.clone(), NAMESPACE), host_objects).await?;
    let set_objects = (0..sets).map(|j| {
        serde_json::from_value::<ContainerSet>(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
            "metadata": {"name": set_name(j), "namespace": NAMESPACE},
            "spec": {"hostSelector": {"matchLabels": {"group": format!("g{}", j % groups)}},
                     "replicasPerHost": args.replicas,
                     "template": {"image": "sim/app:1", "env": [{"name": "ROUND", "value": "0"}]}}
        }))
        .expect("a valid ContainerSet")
    });
    let set_api: Api<ContainerSet> = Api::namespaced(client.clone(), NAMESPACE);
    create_all(&set_api, set_objects).await?;
    let setup = setup_started.elapsed();
    let containers = sets * args.hosts_per_set * args.replicas as usize;
    eprintln!("{sets} sets over {hosts} hosts ({containers} containers): set up in {setup:.1?}; starting the operator");

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let all: BTreeSet<String> = (0..sets).map(set_name).collect();
    let mut phases = Vec::new();

    // Phase 1: from spawn to every set converged.
    let log_start = fake.request_log().len();
    let docker_before = sim.requests().by_route();
    let started = Instant::now();
    let mut op = Operator::spawn(berth, &fake, dir.path(), &args.log_filter)?;
    let mut max_rss = 0;
    wait_converged(&fake, &mut op, all.clone(), args.timeout, &mut max_rss)?;
    let mut phase = Phase { name: "converge", sets, converged_in: started.elapsed(), ..Default::default() };
    phase.settled_in = wait_quiet(&fake, &mut op, Duration::from_secs(120), &mut max_rss)?;
    let metrics = op.metrics()?;
    let log = fake.request_log();
    account(
        &mut phase,
        &log[log_start..],
        &all,
        &BTreeMap::new(),
        &metrics,
        &docker_before,
        &sim.requests().by_route(),
    );
    (phase.peak_rss_kb, phase.end_rss_kb) = memory_kb(op.pid()).unwrap_or_default();
    phase.max_sampled_rss_kb = max_rss;
    phase.containers = sim.container_count();
    eprintln!("  converged in {:.1?}", phase.converged_in);
    phases.push(phase);

    // Phase 2: change a share of the templates.
    let changed: BTreeSet<String> = (0..sets).filter(|j| j % 100 < args.change_percent).map(set_name).collect();
    let before = op.metrics()?;
    let log_start = fake.request_log().len();
    let docker_before = sim.requests().by_route();
    let mut max_rss = 0;
    let started = Instant::now();
    let pp = PatchParams { field_manager: Some(BENCH_MANAGER.into()), ..Default::default() };
    let patch = json!({"spec": {"template": {"env": [{"name": "ROUND", "value": "1"}]}}});
    futures::stream::iter(changed.iter())
        .map(|name| {
            let (api, pp, patch) = (&set_api, &pp, &patch);
            async move { api.patch(name, pp, &Patch::Merge(patch)).await.map(|_| ()) }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<()>()
        .await
        .map_err(|e| format!("change: {e}"))?;
    let sending = started.elapsed();
    wait_converged(&fake, &mut op, changed.clone(), args.timeout, &mut max_rss)?;
    let mut phase =
        Phase { name: "change", sets: changed.len(), converged_in: started.elapsed(), sending, ..Default::default() };
    phase.settled_in = wait_quiet(&fake, &mut op, Duration::from_secs(120), &mut max_rss)?;
    let metrics = op.metrics()?;
    let log = fake.request_log();
    account(&mut phase, &log[log_start..], &changed, &before, &metrics, &docker_before, &sim.requests().by_route());
    (phase.peak_rss_kb, phase.end_rss_kb) = memory_kb(op.pid()).unwrap_or_default();
    phase.max_sampled_rss_kb = max_rss;
    phase.containers = sim.container_count();
    eprintln!("  changed {} sets, converged in {:.1?}", changed.len(), phase.converged_in);
    phases.push(phase);

    let unknown_docker_routes = sim.requests().unknown();
    drop(op);
    if args.keep_logs {
        eprintln!("  operator log kept: {}", dir.keep().join("operator.log").display());
    }
    Ok(SizeResult { sets, hosts, containers, phases, setup, unknown_docker_routes })
}

fn mb(kb: u64) -> String {
    format!("{:.0}", kb as f64 / 1024.0)
}

fn verbs_per_reconcile(p: &Phase) -> String {
    let total: usize = p.kube_by_verb.values().sum();
    let mut parts = vec![format!("{:.2} total", p.per_reconcile(total as f64))];
    parts.extend(p.kube_by_verb.iter().map(|(v, n)| format!("{v} {:.2}", p.per_reconcile(*n as f64))));
    parts.join(", ")
}

fn print_report(args: &Args, results: &[SizeResult], wall: Duration) {
    println!("\n## berth operator at scale (simulated engines, fake Kubernetes API)\n");
    println!(
        "{} host(s) per set, {} replica(s) per host, change round: {}% of the sets (one env value). \
         Wall time of the whole run: {:.1} s.\n",
        args.hosts_per_set,
        args.replicas,
        args.change_percent,
        wall.as_secs_f64()
    );
    println!(
        "| sets × hosts | phase | converged in | peak RSS (VmHWM) | max sampled RSS | set reconciles | reconciles/s | \
         K8s requests per reconcile | Docker requests per reconcile | status writes per set (mean / max / sets > 1) | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        for p in &r.phases {
            let docker: u64 = p.docker.values().sum();
            println!(
                "| {} × {} | {} ({} sets) | {:.1} s | {} MB | {} MB | {:.0} | {:.0} | {} | {:.2} | {:.2} / {} / {} | {:.0} |",
                r.sets,
                r.hosts,
                p.name,
                p.sets,
                p.converged_in.as_secs_f64(),
                mb(p.peak_rss_kb),
                mb(p.max_sampled_rss_kb),
                p.set_reconciles,
                p.rate(),
                verbs_per_reconcile(p),
                p.per_reconcile(docker as f64),
                p.status_writes_mean(),
                p.status_writes_max(),
                p.sets_over_one(),
                p.reconcile_errors,
            );
        }
    }
    for r in results {
        println!(
            "\n### {} sets × {} hosts ({} containers; setup {:.1} s)\n",
            r.sets,
            r.hosts,
            r.containers,
            r.setup.as_secs_f64()
        );
        for p in &r.phases {
            println!(
                "- **{}**: converged in {:.2} s (changes sent in {:.2} s), quiet {:.1} s later; {} containers on the engines; \
                 {:.0} DockerHost reconciles; RSS at the end {} MB",
                p.name,
                p.converged_in.as_secs_f64(),
                p.sending.as_secs_f64(),
                p.settled_in.as_secs_f64(),
                p.containers,
                p.host_reconciles,
                mb(p.end_rss_kb)
            );
            let kube: Vec<String> = p.kube_by_resource.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("  - Kubernetes API (operator): {}", kube.join(", "));
            let docker: Vec<String> = p.docker.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("  - Docker API: {}", docker.join(", "));
        }
        if !r.unknown_docker_routes.is_empty() {
            println!("- **unknown Docker routes** (answered 404): {:?}", r.unknown_docker_routes);
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("operator-scale: {e}");
            }
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    let berth = match berth_binary(args.berth.clone()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("operator-scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let wall = Instant::now();
    let mut results = Vec::new();
    for &(sets, hosts) in &args.sizes {
        match run_size(&args, &berth, sets, hosts).await {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("operator-scale: {sets} sets × {hosts} hosts: {e}");
                print_report(&args, &results, wall.elapsed());
                return ExitCode::FAILURE;
            }
        }
    }
    print_report(&args, &results, wall.elapsed());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, query: &str) -> RequestRecord {
        RequestRecord { method: method.into(), path: path.into(), query: query.into(), status: 200 }
    }

    #[test]
    fn requests_are_told_apart_by_verb_and_resource() {
        let sets = "/apis/berth.dev/v1alpha1/namespaces/scale/containersets";
        assert_eq!(verb(&req("GET", sets, "")), "list");
        assert_eq!(verb(&req("GET", sets, "watch=true&resourceVersion=5")), "watch");
        assert_eq!(verb(&req("GET", &format!("{sets}/cs-00001"), "")), "get");
        assert_eq!(verb(&req("GET", "/apis/berth.dev/v1alpha1/containersets", "")), "list");
        assert_eq!(verb(&req("GET", "/api/v1/namespaces/scale", "")), "get");
        let status = req("PATCH", &format!("{sets}/cs-00001/status"), "fieldManager=berth&force=true");
        assert_eq!(verb(&status), "patch");
        assert_eq!(resource(&status.path), "containersets/status");
        assert_eq!(status_write_of(&status).as_deref(), Some("cs-00001"));
        assert_eq!(status_write_of(&req("PATCH", &format!("{sets}/cs-00001"), "")), None);
        assert!(is_bench(&req("PATCH", &format!("{sets}/cs-00001"), "fieldManager=operator-scale")));
        assert!(!is_bench(&status));
    }

    #[test]
    fn a_set_is_converged_when_ready_at_its_generation() {
        let mut set = json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 2}]}});
        assert!(converged(&set));
        set["status"]["observedGeneration"] = 1.into();
        assert!(!converged(&set), "the status is of an older generation");
        assert!(!converged(&json!({"metadata": {"generation": 1}})));
    }
}
