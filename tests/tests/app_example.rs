//! The example application (`examples/app/`) on the real engine, as a user runs it: PostgreSQL
//! in a named volume, a migration task, an HTTP app reading rows, nginx in front, ordered by
//! `spec.dependsOn`, the migration a `spec.mode: Task` (issue 13, item 7).
//!
//! The example's own file is the input: each test copies `examples/app/app.yaml` into a temp
//! dir and rewrites only its fixed names (namespace `shop`, host port 8080, volume
//! `shop-db-data`), so a test never clashes with a user's run of the example or another test,
//! and cleans up with `berth delete --volumes` (then force-removes whatever is left) on drop.
//! The images are the example's own, built by `examples/app/build.sh` (offline, from the
//! servers image).
//!
//! - From nothing: every set comes up in dependency order, the page is made of PostgreSQL rows,
//!   the migration ran exactly once; a second apply makes no mutating request, also after the
//!   task's exited container was `docker rm`ed.
//! - A db update (default strategy: StopFirst forced by the read-write volume) keeps the rows,
//!   runs no migration, touches no other set; a new migrate template runs the task once more.
//! - A web release while db keeps dying: the old web keeps serving and the apply fails naming
//!   db and saying what web waits for; once db can run again, the next apply heals db and rolls
//!   web only after app is Ready; so does a release after a single kill of db (the comment
//!   above those tests says why each is asserted).

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use berth_tests::paths::repo_root;
use berth_tests::*;
use bollard::Docker;
use bollard::models::EventMessage;
use serde_json::{Value, json};

/// The example's file, relative to the repository root.
const EXAMPLE: &str = "examples/app/app.yaml";
/// The example's fixed names, rewritten in each test's copy.
const EXAMPLE_NS: &str = "shop";
const EXAMPLE_PORT: u64 = 8080;
const EXAMPLE_VOLUME: &str = "shop-db-data";
/// Longest an apply of the example may take (the first one runs initdb).
const APPLY: Duration = Duration::from_secs(240);
/// How long a page may take to answer once berth said the sets are up.
const ANSWER: Duration = Duration::from_secs(15);
/// What app's page says (the migration's first row).
const GREETING: &str = "Hello from PostgreSQL";

/// Builds the example's images once per test process (`examples/app/build.sh`: the servers
/// image first, then db, migrate, app and web FROM it); the servers image's tag.
fn example_images() -> &'static str {
    static SERVERS: OnceLock<String> = OnceLock::new();
    SERVERS.get_or_init(|| {
        // Through the harness first: it builds the servers image under its own lock.
        let servers = ensure_servers_image().to_string();
        let _lock = berth_tests::lock::exclusive("app-example-images");
        let script = repo_root().join("examples/app/build.sh");
        let out = Command::new("bash").arg(&script).output().expect("run examples/app/build.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "examples/app/build.sh failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let tags: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            tags,
            ["berth-example/db:1", "berth-example/migrate:1", "berth-example/app:1", "berth-example/web:1"]
        );
        servers
    })
}

/// A copy of the example in a temp dir, under a namespace, host port and volume of its own.
struct App {
    ns: NamespaceGuard,
    _volumes: VolumeGuard,
    dir: tempfile::TempDir,
    docs: Vec<Value>,
    port: u16,
    volume: String,
    servers: &'static str,
}

impl App {
    fn new(prefix: &str) -> App {
        let servers = example_images();
        let ns = NamespaceGuard::new(prefix);
        let volume = format!("{ns}-db-data");
        let _volumes = VolumeGuard::new(&docker_host(), ns.name(), &[volume.as_str()]);
        let port = free_port();
        let text = std::fs::read_to_string(repo_root().join(EXAMPLE)).expect("read the example");
        let mut docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{EXAMPLE} is not YAML: {e}"));
        let names: Vec<&str> = docs.iter().map(|d| d["metadata"]["name"].as_str().unwrap_or_default()).collect();
        assert_eq!(names, ["db", "migrate", "app", "web"], "the sets of {EXAMPLE}");

        let (mut ports, mut volumes) = (0, 0);
        for d in &mut docs {
            assert_eq!(d["kind"], "ContainerSet", "{d}");
            assert_eq!(d["metadata"]["namespace"], EXAMPLE_NS, "{d}");
            d["metadata"]["namespace"] = json!(ns.name());
            let template = &mut d["spec"]["template"];
            for p in template.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if p["hostPort"] == EXAMPLE_PORT {
                    p["hostPort"] = json!(port);
                    ports += 1;
                }
            }
            for m in template.get_mut("mounts").and_then(Value::as_array_mut).into_iter().flatten() {
                if m["source"] == EXAMPLE_VOLUME {
                    m["source"] = json!(volume);
                    volumes += 1;
                }
            }
        }
        assert_eq!((ports, volumes), (1, 1), "{EXAMPLE}: one hostPort {EXAMPLE_PORT}, one volume {EXAMPLE_VOLUME}");
        // A fixed name added to the example later would clash between tests: rewrite it above.
        let copy = serde_json::to_string(&docs).unwrap();
        assert!(
            !copy.contains(EXAMPLE_NS),
            "{EXAMPLE} names `{EXAMPLE_NS}` somewhere this test does not rewrite: {copy}"
        );

        let app = App { ns, _volumes, dir: tempfile::tempdir().unwrap(), docs, port, volume, servers };
        app.save();
        app
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    /// The folder holding the copy: what the user passes as `-f examples/app/`.
    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn save(&self) {
        write_documents(self.dir.path(), "app.yaml", &self.docs);
    }

    fn set_mut(&mut self, name: &str) -> &mut Value {
        self.docs.iter_mut().find(|d| d["metadata"]["name"] == name).unwrap_or_else(|| panic!("no set {name}"))
    }

    /// Sets env `key=value` in `set`'s template (a new revision of it), and saves.
    fn set_env(&mut self, set: &str, key: &str, value: &str) {
        let template = &mut self.set_mut(set)["spec"]["template"];
        if template["env"].is_null() {
            template["env"] = json!([]);
        }
        let env = template["env"].as_array_mut().unwrap();
        env.retain(|e| e["name"] != key);
        env.push(json!({"name": key, "value": value}));
        self.save();
    }

    async fn berth(&self, cmd: &str, env: &[(&str, &str)]) -> BerthOutput {
        berth_async([cmd, "-f", self.path()], env).await
    }

    /// `berth apply -f <copy>/`, which must finish within [`APPLY`].
    async fn apply(&self) -> BerthOutput {
        let run = spawn_berth(["apply", "-f", self.path()], &[]);
        tokio::task::spawn_blocking(move || {
            run.wait_timeout(APPLY).unwrap_or_else(|run| {
                let out = run.kill();
                panic!("berth apply still ran after {APPLY:?}: {out}")
            })
        })
        .await
        .unwrap()
    }

    /// `berth apply` through a counting proxy in front of the local engine.
    async fn apply_counted(&self) -> (BerthOutput, Vec<Request>) {
        let proxy = CountingProxy::start(&local_socket_path());
        let host = proxy.docker_host();
        let out = self.berth("apply", &[("DOCKER_HOST", host.as_str())]).await;
        (out, proxy.requests())
    }

    /// `GET path` through web's published port: `(status, body)`, `None` when nothing answers.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let (addr, path) = (format!("127.0.0.1:{}", self.port), path.to_string());
        tokio::task::spawn_blocking(move || http_request(&addr, "GET", &path, &[])).await.unwrap()
    }

    /// The body of `GET path` once it answers 200.
    async fn page(&self, path: &str) -> String {
        eventually(&format!("GET {path} through web answers 200"), ANSWER, || async {
            match self.get(path).await {
                Some((200, body)) => Ok(body),
                other => Err(other),
            }
        })
        .await
    }

    /// How many times the migration ran, as app reports it (`/cgi-bin/migrations.cgi`).
    async fn migrations(&self) -> u32 {
        let body = self.page("/cgi-bin/migrations.cgi").await;
        body.trim().parse().unwrap_or_else(|_| panic!("migrations.cgi said {body:?}"))
    }

    /// `(name, id, state)` of `set`'s containers.
    async fn containers(&self, docker: &Docker, set: &str) -> Vec<(String, String, String)> {
        let prefix = format!("{}.{set}.", self.ns());
        names_ids_states(docker, self.ns()).await.into_iter().filter(|(name, _, _)| name.starts_with(&prefix)).collect()
    }

    /// The ids of `set`'s running containers, sorted.
    async fn running(&self, docker: &Docker, set: &str) -> Vec<String> {
        let mut ids: Vec<String> =
            self.containers(docker, set).await.into_iter().filter(|c| c.2 == "running").map(|c| c.1).collect();
        ids.sort();
        ids
    }

    /// `psql -At -c SQL` on database `app` at `db`, from a plain client container on the
    /// namespace's network (never a `docker exec` into berth's container: that is drift).
    async fn psql(&self, sql: &str) -> Result<String, String> {
        let network = format!("{}_default", self.ns());
        let out = tokio::process::Command::new("docker")
            .args(["run", "--rm", "--network", &network, "-e", "PGCONNECT_TIMEOUT=3", self.servers])
            .args(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", "db", "-U", "postgres", "-d", "app", "-At", "-c", sql])
            .output()
            .await
            .map_err(|e| format!("cannot run docker: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // As a user cleans up; the guards (fields, dropped next) remove whatever it left.
        let out = berth(["delete", "--volumes", "-f", self.path()], &[]);
        if !out.success() {
            eprintln!("warning: berth delete --volumes of namespace {} failed: {out}", self.ns());
        }
    }
}

/// One engine event, reduced to what the assertions read.
#[derive(Debug, Clone)]
struct Ev {
    action: String,
    name: String,
    at: i64,
    exit_code: Option<String>,
}

async fn events(docker: &Docker, ns: &str, since: SystemTime) -> Vec<Ev> {
    container_events(docker, ns, since).await.iter().map(ev).collect()
}

fn ev(e: &EventMessage) -> Ev {
    let (action, name) = action_and_name(e);
    let exit_code = e.actor.as_ref().and_then(|a| a.attributes.as_ref()).and_then(|a| a.get("exitCode").cloned());
    Ev { action, name, at: e.time_nano.unwrap_or(0), exit_code }
}

/// Events `action` of containers of `set`.
fn of<'a>(evs: &'a [Ev], ns: &str, set: &str, action: &str) -> Vec<&'a Ev> {
    let prefix = format!("{ns}.{set}.");
    evs.iter().filter(|e| e.action == action && e.name.starts_with(&prefix)).collect()
}

/// The events, one a line: for assertion messages.
fn timeline(evs: &[Ev]) -> String {
    let t0 = evs.first().map_or(0, |e| e.at);
    evs.iter().map(|e| format!("+{:>8.3}s {:<28} {}\n", (e.at - t0) as f64 / 1e9, e.action, e.name)).collect()
}

const HEALTHY: &str = "health_status: healthy";

/// GETs `path` through a published port every 20 ms on its own thread until stopped: how long
/// it went without a 200.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ProbeReport>>,
}

#[derive(Debug, Default)]
struct ProbeReport {
    probes: usize,
    failed: usize,
    /// From the start of the first probe without a 200 to the start of the next probe that
    /// got one (the last stretch: until the prober stopped).
    longest_without_200: Duration,
    /// The first few probes without a 200: `(+seconds, status)`.
    first_failures: Vec<(f64, Option<u16>)>,
}

impl Prober {
    fn start(port: u16, path: &str) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (addr, path) = (format!("127.0.0.1:{port}"), path.to_string());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut report = ProbeReport::default();
            let mut down_since: Option<Instant> = None;
            while !flag.load(Ordering::SeqCst) {
                let at = Instant::now();
                let status = http_request(&addr, "GET", &path, &[]).map(|(s, _)| s);
                report.probes += 1;
                if status == Some(200) {
                    if let Some(since) = down_since.take() {
                        report.longest_without_200 = report.longest_without_200.max(at - since);
                    }
                } else {
                    report.failed += 1;
                    down_since.get_or_insert(at);
                    if report.first_failures.len() < 10 {
                        report.first_failures.push(((at - t0).as_secs_f64(), status));
                    }
                }
                std::thread::sleep(Duration::from_millis(20).saturating_sub(at.elapsed()));
            }
            if let Some(since) = down_since {
                report.longest_without_200 = report.longest_without_200.max(since.elapsed());
            }
            report
        });
        Prober { stop, thread: Some(thread) }
    }

    fn stop(mut self) -> ProbeReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("the prober panicked")
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn from_nothing_in_dependency_order_the_page_reads_postgres_and_a_second_apply_changes_nothing() {
    let app = App::new("app-up");
    let docker = docker().await;
    let ns = app.ns().to_string();

    let since = SystemTime::now();
    let t0 = Instant::now();
    app.apply().await.assert_success();
    let up = t0.elapsed();

    let body = app.page("/").await;
    assert!(body.contains(GREETING), "the page is made of the migration's row, read from PostgreSQL: {body:?}");
    assert_eq!(app.migrations().await, 1, "the migration ran exactly once");

    assert_eq!(app.running(&docker, "db").await.len(), 1);
    assert_eq!(app.running(&docker, "app").await.len(), 2);
    assert_eq!(app.running(&docker, "web").await.len(), 1);
    assert!(app.running(&docker, "migrate").await.is_empty(), "the task ran to completion and stopped");

    // The order dependsOn declares: db Ready -> migrate Completed -> app Ready -> web.
    let evs = events(&docker, &ns, since).await;
    let tl = timeline(&evs);
    let db_ready = of(&evs, &ns, "db", HEALTHY).first().unwrap_or_else(|| panic!("db never healthy:\n{tl}")).at;
    let task_starts = of(&evs, &ns, "migrate", "start");
    assert_eq!(task_starts.len(), 1, "the task started once:\n{tl}");
    assert!(task_starts[0].at > db_ready, "migrate started only once db was Ready:\n{tl}");
    let task_done = of(&evs, &ns, "migrate", "die");
    assert!(
        task_done.len() == 1 && task_done[0].exit_code.as_deref() == Some("0"),
        "the task exited once, with 0:\n{tl}"
    );
    let app_created = of(&evs, &ns, "app", "create");
    assert_eq!(app_created.len(), 2, "{tl}");
    assert!(
        app_created.iter().all(|c| c.at > task_done[0].at),
        "app's containers made only after migrate Completed:\n{tl}"
    );
    let app_ready = of(&evs, &ns, "app", HEALTHY);
    let mut ready_replicas: Vec<&str> = app_ready.iter().map(|e| e.name.as_str()).collect();
    ready_replicas.sort();
    ready_replicas.dedup();
    assert_eq!(ready_replicas.len(), 2, "both app replicas turned healthy:\n{tl}");
    let app_all_ready = app_ready.iter().map(|e| e.at).max().unwrap();
    let web_created = of(&evs, &ns, "web", "create");
    assert_eq!(web_created.len(), 1, "{tl}");
    assert!(web_created[0].at > app_all_ready, "web made only once app was Ready (both replicas):\n{tl}");

    // Converged: a second apply is reads only.
    let (again, requests) = app.apply_counted().await;
    again.assert_success();
    let mutating: Vec<String> = requests.iter().filter(|r| r.is_mutating()).map(ToString::to_string).collect();
    assert!(mutating.is_empty(), "a second apply made mutating requests: {mutating:?}\n{again}");
    app.berth("plan", &[]).await.assert_code(0);

    // The task's completion is in its history, not in its exited container: with that gone,
    // the task still does not run again.
    let task = app.containers(&docker, "migrate").await;
    for (name, _, state) in &task {
        assert_ne!(state, "running", "{name}");
        let rm = Command::new("docker").args(["rm", name]).output().unwrap();
        assert!(rm.status.success(), "docker rm {name}: {}", String::from_utf8_lossy(&rm.stderr));
    }
    let (third, requests) = app.apply_counted().await;
    third.assert_success();
    let mutating: Vec<String> = requests.iter().filter(|r| r.is_mutating()).map(ToString::to_string).collect();
    assert!(
        mutating.is_empty(),
        "after docker rm of the task's container ({task:?}), apply made mutating requests: {mutating:?}\n{third}"
    );
    assert_eq!(app.migrations().await, 1, "the migration still ran exactly once");
    let evs = events(&docker, &ns, since).await;
    assert_eq!(of(&evs, &ns, "migrate", "start").len(), 1, "{}", timeline(&evs));

    // And the user's clean-up: nothing of the namespace is left, the data volume included.
    berth_async(["delete", "--volumes", "-f", app.path()], &[]).await.assert_success();
    assert_eq!(names_ids_states(&docker, &ns).await, vec![], "berth delete left containers");
    let volume = docker.inspect_volume(&app.volume).await;
    assert!(volume.is_err(), "berth delete --volumes left {}", app.volume);
    eprintln!("app example: up from nothing in {up:.1?} (debug build)");
}

/// Writes rows, replaces db with a new revision and reads them back. The example declares
/// `strategy.type: StopFirst` for db; this copy leaves it out, so the StopFirst it gets is
/// berth's own default for a set that mounts a named volume read-write.
#[tokio::test(flavor = "multi_thread")]
async fn a_db_update_stops_the_old_postmaster_first_keeps_the_rows_and_runs_no_migration() {
    let mut app = App::new("app-db-update");
    let docker = docker().await;
    let ns = app.ns().to_string();
    app.set_mut("db")["spec"]["strategy"].as_object_mut().unwrap().remove("type");
    app.set_env("db", "MARK", "one");
    app.apply().await.assert_success();
    assert!(app.page("/").await.contains(GREETING));

    let rows = "create table notes (id integer primary key, note text not null);
        insert into notes select i, 'note ' || i from generate_series(1, 300) i;
        insert into greetings (id, message) values (2, 'Written before the db update');";
    eventually("PostgreSQL takes the client's rows", ANSWER, || app.psql(rows)).await;
    let checksum = "select count(*) || ' ' || md5(string_agg(id || '=' || note, ',' order by id)) from notes";
    let before = app.psql(checksum).await.expect("checksum before");
    assert!(before.starts_with("300 "), "{before}");
    let old_db = app.containers(&docker, "db").await;
    let others = (app.running(&docker, "app").await, app.running(&docker, "web").await);
    assert_eq!(old_db.len(), 1, "{old_db:?}");

    app.set_env("db", "MARK", "two");
    let plan = app.berth("plan", &[]).await;
    plan.assert_code(2);
    assert!(
        plan.stdout.contains(&format!("StopFirst forced: volume {} is mounted read-write", app.volume)),
        "the plan says why db stops first:\n{plan}"
    );
    for set in ["migrate", "app", "web"] {
        assert!(!plan.stdout.contains(&format!("{ns}.{set}.")), "the plan touches only db, not {set}:\n{plan}");
    }

    let since = SystemTime::now();
    let t0 = Instant::now();
    app.apply().await.assert_success();
    let took = t0.elapsed();

    let new_db = app.containers(&docker, "db").await;
    assert!(
        new_db.len() == 1 && new_db[0].2 == "running" && new_db[0].0 != old_db[0].0,
        "db runs one container of the new revision: {old_db:?} -> {new_db:?}"
    );
    // Never two postmasters on the data directory: the old one died before the new one started.
    let evs = events(&docker, &ns, since).await;
    let tl = timeline(&evs);
    let old_died = evs.iter().find(|e| e.name == old_db[0].0 && e.action == "die").unwrap_or_else(|| panic!("{tl}"));
    let new_started =
        evs.iter().find(|e| e.name == new_db[0].0 && e.action == "start").unwrap_or_else(|| panic!("{tl}"));
    assert!(old_died.at < new_started.at, "StopFirst: the old db stopped before the new one started:\n{tl}");
    assert!(of(&evs, &ns, "migrate", "start").is_empty(), "a db update runs no migration:\n{tl}");
    assert_eq!(
        (app.running(&docker, "app").await, app.running(&docker, "web").await),
        others,
        "app and web keep their containers: their templates did not change:\n{tl}"
    );

    let after = eventually("the new PostgreSQL answers", ANSWER, || app.psql(checksum)).await;
    assert_eq!(after, before, "the rows written before the update are all there after it");
    let body = app.page("/").await;
    assert!(body.contains(GREETING) && body.contains("Written before the db update"), "{body:?}");
    assert_eq!(app.migrations().await, 1, "the migration did not run again");

    // The task runs again when, and only when, its own template changes; its dependents stay.
    app.set_env("migrate", "MARK", "two");
    let since = SystemTime::now();
    app.apply().await.assert_success();
    assert_eq!(app.migrations().await, 2, "a new revision of the task ran once");
    let evs = events(&docker, &ns, since).await;
    assert_eq!(of(&evs, &ns, "migrate", "start").len(), 1, "{}", timeline(&evs));
    assert_eq!(
        (app.running(&docker, "app").await, app.running(&docker, "web").await),
        others,
        "a new task revision replaces none of the sets that depend on it:\n{}",
        timeline(&evs)
    );
    app.berth("plan", &[]).await.assert_code(0);
    eprintln!("app example: db update (StopFirst) applied in {took:.1?} (debug build); rows kept: {after}");
}

/// Kills every running container of `set` as soon as it shows up (a poll every 50 ms), until
/// stopped: a server that keeps crashing.
struct Killer {
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Killer {
    fn start(ns: &str, set: &str) -> Killer {
        let (stop, kills) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (flag, count) = (stop.clone(), kills.clone());
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("berth.dev/namespace={ns}"), format!("berth.dev/set={set}")],
        )]);
        let task = tokio::spawn(async move {
            let docker = docker().await;
            while !flag.load(Ordering::SeqCst) {
                let opts = bollard::query_parameters::ListContainersOptions {
                    filters: Some(filters.clone()),
                    ..Default::default()
                };
                for c in docker.list_containers(Some(opts)).await.unwrap_or_default() {
                    let id = c.id.unwrap_or_default();
                    if docker.kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>).await.is_ok()
                    {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Killer { stop, kills, task }
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the killer panicked");
        self.kills.load(Ordering::SeqCst)
    }
}

/// Whether every container of `set` reports `(unhealthy)`.
async fn all_unhealthy(docker: &Docker, ns: &str, set: &str, n: usize) -> Result<(), String> {
    let prefix = format!("/{ns}.{set}.");
    let cs: Vec<String> = containers_in(docker, ns)
        .await
        .into_iter()
        .filter(|c| c.names.iter().flatten().any(|x| x.starts_with(&prefix)))
        .map(|c| c.status.unwrap_or_default())
        .collect();
    if cs.len() == n && cs.iter().all(|s| s.contains("(unhealthy)")) { Ok(()) } else { Err(format!("{cs:?}")) }
}

// What berth must do when db dies while web is being released. `web` dependsOn `app` Ready;
// `app` is Ready only when it can read a row from `db` (its healthcheck, `ready.cgi`), so a dead
// db leaves web's dependency unmet. web publishes a fixed host port, so its update is StopFirst
// (forced): were berth to stop the old web before knowing its new container may be made, the
// site would be down with nothing to replace it.
//
// A single `docker kill` at a random moment of the apply races it: killed before berth looks at
// db, the apply heals db and goes on; killed after web was rolled, there is nothing for this
// apply to see. So the tests fix the moment:
//
// - db keeps dying (every db container is killed as soon as it runs, as a crash-looping
//   database would) and app's replicas already say unhealthy when the apply starts: the apply
//   exits 1 naming db, makes no container of web's new revision, does not stop the old web
//   (same container, and its /healthz through the published port answers 200 at every probe
//   of the apply), and does not run the completed migration again;
// - then db can run again: the next apply replaces the killed db (drift, Replace) — its
//   revision was Ready before, so its failed replacement must not hold it as a failed
//   revision — and rolls web only once app is Ready again;
// - db killed once, then a web release: the apply heals db, waits for app to recover (it is
//   not changed in this run; it turns healthy at its next probe after db answers) and rolls
//   web after it: exit 0.

/// web's release (a new env value) applied while db keeps dying: what the apply said, the old
/// web container's id, how its /healthz fared during the apply, and the apply's events.
struct ReleaseWhileDbDies {
    out: BerthOutput,
    old_web: Vec<String>,
    probe: ProbeReport,
    evs: Vec<Ev>,
    kills: usize,
}

async fn release_web_while_db_keeps_dying(app: &mut App, docker: &Docker) -> ReleaseWhileDbDies {
    let ns = app.ns().to_string();
    // Should berth one day wait for an unmet dependency, it waits at most this long here.
    app.set_mut("web")["spec"]["strategy"] = json!({"progressDeadlineSeconds": 60});
    app.save();
    app.apply().await.assert_success();
    assert!(app.page("/").await.contains(GREETING));
    let old_web = app.running(docker, "web").await;
    assert_eq!(old_web.len(), 1);

    let killer = Killer::start(&ns, "db");
    eventually("app says unhealthy with db dead", Duration::from_secs(60), || all_unhealthy(docker, &ns, "app", 2))
        .await;
    match app.get("/").await {
        Some((503, body)) => assert!(body.contains("no rows from db"), "{body:?}"),
        other => panic!("with db dead, web still answers and app says so with a 503: {other:?}"),
    }
    app.set_env("web", "RELEASE", "2");
    let plan = app.berth("plan", &[]).await;
    plan.assert_code(2);
    assert!(
        plan.stdout.contains("StopFirst forced") && plan.stdout.contains(&format!("127.0.0.1:{}", app.port)),
        "web's fixed host port forces StopFirst, and the plan says so:\n{plan}"
    );

    let since = SystemTime::now();
    let prober = Prober::start(app.port, "/healthz");
    let out = app.apply().await;
    let probe = prober.stop();
    let kills = killer.stop().await;
    let evs = events(docker, &ns, since).await;
    ReleaseWhileDbDies { out, old_web, probe, evs, kills }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_release_while_db_keeps_dying_fails_naming_db_and_leaves_the_old_web_serving() {
    let mut app = App::new("app-db-dies");
    let docker = docker().await;
    let ns = app.ns().to_string();
    let r = release_web_while_db_keeps_dying(&mut app, &docker).await;
    let tl = timeline(&r.evs);
    assert_eq!(r.out.code, Some(1), "the apply fails while db cannot run:\n{}\n{tl}", r.out);
    assert!(r.out.stderr.contains(&format!("set {ns}/db: ")), "the failure names db:\n{}", r.out);
    assert!(
        r.out.stderr.contains(&format!("set {ns}/web: waits for app Ready")),
        "and says what web waits for:\n{}",
        r.out
    );
    assert_eq!(app.running(&docker, "web").await, r.old_web, "the old web still runs:\n{tl}");
    assert!(of(&r.evs, &ns, "web", "create").is_empty(), "no container of web's new revision was made:\n{tl}");
    for action in ["kill", "stop", "die"] {
        assert!(of(&r.evs, &ns, "web", action).is_empty(), "the old web was not stopped ({action}):\n{tl}");
    }
    assert!(
        r.probe.failed == 0 && r.probe.probes > 0,
        "web's /healthz answered 200 all through the apply: {:?}",
        r.probe
    );
    assert!(of(&r.evs, &ns, "migrate", "start").is_empty(), "the completed migration did not run again:\n{tl}");
    eprintln!(
        "db killed {} times; the apply exited 1; {} probes of the old web, all 200:\n{}",
        r.kills, r.probe.probes, r.out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn once_db_can_run_again_the_next_apply_heals_it_and_rolls_web_after_app_is_ready() {
    let mut app = App::new("app-db-back");
    let docker = docker().await;
    let ns = app.ns().to_string();
    let r = release_web_while_db_keeps_dying(&mut app, &docker).await;
    assert_eq!(r.out.code, Some(1), "{}", r.out);
    assert!(app.running(&docker, "db").await.is_empty(), "db is down when the next apply starts");

    let since = SystemTime::now();
    let healed = app.apply().await;
    let evs = events(&docker, &ns, since).await;
    let tl = timeline(&evs);
    assert!(
        !healed.stdout.contains("change the spec to roll out again"),
        "db's revision was Ready before it was killed: a replacement of it that failed while it \
         kept dying must not hold it as a failed revision, or db stays down until its spec changes:\n{healed}"
    );
    assert!(healed.success(), "with db able to run, the apply heals it and rolls web:\n{healed}\n{tl}");
    assert_web_rolled_after_db_and_app_were_ready(&app, &docker, &r.old_web, &evs).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_release_after_db_was_killed_heals_db_and_waits_for_app_to_recover() {
    let mut app = App::new("app-db-killed");
    let docker = docker().await;
    let ns = app.ns().to_string();
    app.apply().await.assert_success();
    let old_web = app.running(&docker, "web").await;
    let db = app.running(&docker, "db").await;
    assert_eq!(db.len(), 1);
    docker.kill_container(&db[0], None::<bollard::query_parameters::KillContainerOptions>).await.expect("docker kill");
    eventually("app says unhealthy with db dead", Duration::from_secs(60), || all_unhealthy(&docker, &ns, "app", 2))
        .await;
    app.set_env("web", "RELEASE", "2");

    let since = SystemTime::now();
    let out = app.apply().await;
    let evs = events(&docker, &ns, since).await;
    let tl = timeline(&evs);
    // What is always true: web's gate never lets it through while app is unhealthy.
    if let Some(web_died) = of(&evs, &ns, "web", "die").first() {
        let app_ready = of(&evs, &ns, "app", HEALTHY);
        assert!(app_ready.len() >= 2 && app_ready.iter().all(|e| e.at < web_died.at), "{tl}");
    }
    // What berth should do: app is not changed in this run, it is on its way back (it turns
    // healthy at its next probe after db answers); web's release waits for it instead of
    // failing the apply at the first look.
    assert!(
        out.success(),
        "the apply healed db; web's release must wait for app to turn healthy again, not fail at once:\n{out}\n{tl}"
    );
    assert_web_rolled_after_db_and_app_were_ready(&app, &docker, &old_web, &evs).await;
}

/// After an apply that healed db and released web: web runs a new container, made after db's
/// new container and then both app replicas turned healthy; the page reads the rows; the
/// migration ran once in all.
async fn assert_web_rolled_after_db_and_app_were_ready(app: &App, docker: &Docker, old_web: &[String], evs: &[Ev]) {
    let ns = app.ns();
    let tl = timeline(evs);
    let new_web = app.running(docker, "web").await;
    assert!(new_web.len() == 1 && new_web != old_web, "web runs its new revision: {new_web:?}\n{tl}");
    let db_ready = of(evs, ns, "db", HEALTHY).first().unwrap_or_else(|| panic!("db never healthy:\n{tl}")).at;
    let app_ready = of(evs, ns, "app", HEALTHY);
    let mut ready_replicas: Vec<&str> = app_ready.iter().map(|e| e.name.as_str()).collect();
    ready_replicas.sort();
    ready_replicas.dedup();
    assert_eq!(ready_replicas.len(), 2, "both app replicas turned healthy again:\n{tl}");
    let app_all_ready = app_ready.iter().map(|e| e.at).max().unwrap();
    let old_web_died = of(evs, ns, "web", "die");
    assert_eq!(old_web_died.len(), 1, "{tl}");
    assert!(
        old_web_died[0].at > db_ready && old_web_died[0].at > app_all_ready,
        "the old web stopped only once db and then app were Ready again:\n{tl}"
    );
    assert!(app.page("/").await.contains(GREETING));
    assert_eq!(app.migrations().await, 1, "the migration ran exactly once in all");
    app.berth("plan", &[]).await.assert_code(0);
}
