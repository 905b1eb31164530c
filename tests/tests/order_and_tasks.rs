//! Start order between sets (`spec.dependsOn`) and sets that run to completion
//! (`spec.mode: Task`), on a real engine, read back from its event stream.
//!
//! - `dependsOn` with `condition: Ready`: the dependent's first create comes after the
//!   dependency's `health_status: healthy`; with no condition (`Started`) it comes after the
//!   dependency's start and before it is healthy; a dependency that fails (never healthy, a
//!   task exiting non-zero) or that runs but turned unhealthy keeps the dependent from being
//!   created, and a dependent that ran an older revision keeps running it untouched.
//! - `mode: Task`: each replica runs once per revision. The same files again run nothing,
//!   also once the exited container was removed by hand (completion is in berth's history);
//!   a changed template runs once more and the older revision's exited container goes; a
//!   non-zero exit fails the apply naming the container, the code and its last log lines, and
//!   the failed revision is held (not run again by the same files).
//!
//! The input errors of both (cycles, self and unknown dependencies, `Completed` on a service,
//! an unknown condition or mode, restart policies and autoRollback a task cannot have) are
//! cases of `tests/data/invalid/` (`depends-on-*`, `task-*`, `mode-unknown`).
//!
//! Each test says, at its top, what breaking in berth would make it fail.

use std::time::{Duration, SystemTime};

use berth_tests::busybox_image::ensure_busybox_image;
use berth_tests::health_images::HealthImage;
use berth_tests::*;
use bollard::Docker;
use bollard::models::{EventMessage, RestartPolicyNameEnum};
use serde_json::{Value, json};

/// The file every apply of a test writes and reads: "the same files" are the same path.
const FILE: &str = "app.yaml";

/// How long a test waits for a container's health to change.
const WAIT: Duration = Duration::from_secs(60);

/// How long the slow dependency takes before it turns healthy.
const DB_WARMUP_SECONDS: u32 = 3;

/// A ContainerSet `name` in `ns`, one replica, with `spec_extra` merged into its spec.
fn set(ns: &str, name: &str, template: Value, spec_extra: Value) -> Value {
    let mut spec = json!({"replicasPerHost": 1, "strategy": {"progressDeadlineSeconds": 30}, "template": template});
    spec.as_object_mut().unwrap().extend(spec_extra.as_object().expect("spec_extra is an object").clone());
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    })
}

/// The echo app, healthchecked, with `GREETING` set.
fn echo_template(greeting: &str) -> Value {
    json!({
        "image": ECHO_IMAGE, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 2,
        "env": [{"name": "GREETING", "value": greeting}],
        "ports": [{"containerPort": ECHO_PORT}],
        "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}
    })
}

/// The busybox image running `script` under `/bin/sh -c`, with `GREETING` set.
fn shell_template(image: &str, script: &str, greeting: &str) -> Value {
    json!({
        "image": image, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 1,
        "command": ["/bin/sh", "-c", script],
        "env": [{"name": "GREETING", "value": greeting}]
    })
}

/// A Task set running `script` in the busybox image.
fn task(ns: &str, name: &str, image: &str, script: &str, greeting: &str) -> Value {
    set(ns, name, shell_template(image, script, greeting), json!({"mode": "Task"}))
}

/// The echo app that turns healthy [`DB_WARMUP_SECONDS`] after it started: the shell image
/// (echo + busybox) touches `/ready` after a sleep, then becomes the echo server; the
/// healthcheck looks for the file (its failures before then fall in the start period and count
/// for nothing).
fn slow_db_template(shell_image: &str) -> Value {
    json!({
        "image": shell_image, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 2,
        "command": ["/bin/sh", "-c", format!("sleep {DB_WARMUP_SECONDS} && touch /ready && exec /echo")],
        "ports": [{"containerPort": ECHO_PORT}],
        "healthcheck": {"test": ["CMD", "/bin/test", "-f", "/ready"], "interval": "250ms",
                        "timeout": "2s", "startPeriod": "60s", "retries": 3}
    })
}

fn depends_on(name: &str, condition: Option<&str>) -> Value {
    match condition {
        Some(c) => json!({"dependsOn": [{"name": name, "condition": c}]}),
        None => json!({"dependsOn": [{"name": name}]}),
    }
}

/// One test's namespace (containers and history volumes removed on drop, also when the test
/// fails), its folder of YAML and the engine.
struct Scene {
    // Fields drop in this order: the containers first, then the volumes they may hold.
    ns: NamespaceGuard,
    _volumes: VolumeGuard,
    dir: tempfile::TempDir,
    docker: Docker,
}

impl Scene {
    async fn new(prefix: &str) -> Scene {
        ensure_echo_image();
        let ns = NamespaceGuard::new(prefix);
        let volumes = VolumeGuard::new(&docker_host(), ns.name(), &[]);
        Scene { ns, _volumes: volumes, dir: tempfile::tempdir().unwrap(), docker: docker().await }
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    /// Writes `docs` into the test's one file and returns its path.
    fn write(&self, docs: &[Value]) -> String {
        write_documents(self.dir.path(), FILE, docs)
    }

    fn path(&self) -> String {
        self.dir.path().join(FILE).display().to_string()
    }

    async fn apply(&self) -> BerthOutput {
        berth_async(["apply", "-f", &self.path()], &[]).await
    }

    async fn plan(&self) -> BerthOutput {
        berth_async(["plan", "-f", &self.path()], &[]).await
    }

    /// `berth logs NS/SET --file FILE`, which must succeed: its stdout.
    async fn logs(&self, set: &str) -> String {
        let out = berth_async(["logs", &format!("{}/{set}", self.ns()), "--file", &self.path()], &[]).await;
        out.assert_success();
        out.stdout
    }

    /// `berth delete` of the test's file, which must succeed (the guards clean up after a
    /// failed test).
    async fn delete(&self) {
        berth_async(["delete", "-f", &self.path()], &[]).await.assert_success();
    }

    /// The namespace's container events since `since`, with health verdicts, oldest first.
    async fn events(&self, since: SystemTime) -> Vec<EventMessage> {
        container_events(&self.docker, self.ns(), since).await
    }

    fn prefix(&self, set: &str) -> String {
        format!("{}.{set}.", self.ns())
    }

    /// `(name, id, state)` of set `set`'s containers, sorted by name.
    async fn containers(&self, set: &str) -> Vec<(String, String, String)> {
        let prefix = self.prefix(set);
        names_ids_states(&self.docker, self.ns()).await.into_iter().filter(|(n, _, _)| n.starts_with(&prefix)).collect()
    }

    /// The one container of `set`: `(name, id, state)`.
    async fn only_container(&self, set: &str) -> (String, String, String) {
        let all = self.containers(set).await;
        assert_eq!(all.len(), 1, "set {set} has exactly one container: {all:?}");
        all.into_iter().next().unwrap()
    }

    /// The exit code of an exited container.
    async fn exit_code(&self, name: &str) -> i64 {
        let c = self.docker.inspect_container(name, None).await.expect("inspect container");
        let state = c.state.expect("a container state");
        assert_eq!(state.running, Some(false), "{name} has exited: {state:?}");
        state.exit_code.expect("an exit code")
    }

    async fn restart_policy(&self, name: &str) -> Option<RestartPolicyNameEnum> {
        let c = self.docker.inspect_container(name, None).await.expect("inspect container");
        c.host_config.and_then(|h| h.restart_policy).and_then(|r| r.name)
    }
}

/// `(action, container name)` of each event.
fn pairs(events: &[EventMessage]) -> Vec<(String, String)> {
    events.iter().map(action_and_name).collect()
}

/// Names of the containers created, among `events`, whose name starts with `prefix`.
fn created(events: &[EventMessage], prefix: &str) -> Vec<String> {
    pairs(events).into_iter().filter(|(a, n)| a == "create" && n.starts_with(prefix)).map(|(_, n)| n).collect()
}

/// Where in `events` the first `action` of a container whose name starts with `prefix` is.
fn first(events: &[(String, String)], action: &str, prefix: &str) -> usize {
    events
        .iter()
        .position(|(a, n)| a == action && n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {action} of {prefix}*: {events:#?}"))
}

/// Where in `events` the last `action` of a container whose name starts with `prefix` is.
fn last(events: &[(String, String)], action: &str, prefix: &str) -> usize {
    events
        .iter()
        .rposition(|(a, n)| a == action && n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {action} of {prefix}*: {events:#?}"))
}

/// Whether one line of `text` contains every one of `words`.
fn a_line_with(text: &str, words: &[&str]) -> bool {
    text.lines().any(|l| words.iter().all(|w| l.contains(w)))
}

// ---------------------------------------------------------------------------------------------
// Start order

/// Fails when berth ignores `dependsOn` (web is created beside db, seconds before db is
/// healthy), or takes `Ready` for `Started` (web is created right after db's start).
#[tokio::test(flavor = "multi_thread")]
async fn a_dependent_is_created_only_after_its_ready_dependency_turned_healthy() {
    let shell = HealthImage::Shell.ensure();
    let s = Scene::new("order-ready").await;
    let ns = s.ns().to_string();
    // web first in the file: berth must not go by the order of the input.
    s.write(&[
        set(&ns, "web", echo_template("hi"), depends_on("db", Some("Ready"))),
        set(&ns, "db", slow_db_template(&shell), json!({})),
    ]);
    let since = SystemTime::now();
    s.apply().await.assert_success();
    let events = pairs(&s.events(since).await);
    let (db, web) = (s.prefix("db"), s.prefix("web"));
    let healthy = first(&events, "health_status: healthy", &db);
    let web_created = first(&events, "create", &web);
    assert!(healthy < web_created, "web is created after db turned healthy: {events:#?}");
    assert!(first(&events, "start", &db) < healthy, "{events:#?}");
    assert_eq!(s.only_container("web").await.2, "running");
    assert_eq!(s.only_container("db").await.2, "running");

    // Converged, the pair stays converged: dependencies add no pending change.
    let plan = s.plan().await;
    plan.assert_code(0);
    assert!(plan.stdout.contains("No changes"), "{plan}");
    s.delete().await;
}

/// Fails when the default condition is not `Started`: taken for `Ready`, web's create comes
/// after db's `healthy` ([`DB_WARMUP_SECONDS`] later); with no gate at all, web's create
/// lands beside db's, before db's start (create ~9 ms, start ~170 ms on this engine).
#[tokio::test(flavor = "multi_thread")]
async fn a_dependency_without_a_condition_needs_its_containers_started_not_healthy() {
    let shell = HealthImage::Shell.ensure();
    let s = Scene::new("order-started").await;
    let ns = s.ns().to_string();
    let mut db = set(&ns, "db", slow_db_template(&shell), json!({}));
    db["spec"]["replicasPerHost"] = json!(2);
    s.write(&[set(&ns, "web", echo_template("hi"), depends_on("db", None)), db]);
    let since = SystemTime::now();
    s.apply().await.assert_success();
    let events = pairs(&s.events(since).await);
    let (db, web) = (s.prefix("db"), s.prefix("web"));
    let web_created = first(&events, "create", &web);
    assert!(last(&events, "start", &db) < web_created, "web is created after both db containers started: {events:#?}");
    assert!(
        web_created < first(&events, "health_status: healthy", &db),
        "Started does not wait for db to be healthy: {events:#?}"
    );
    s.delete().await;
}

/// Fails when a dependency that failed (its revision turned unhealthy) still lets the
/// dependent roll out, or when the apply does not fail naming the dependency.
#[tokio::test(flavor = "multi_thread")]
async fn a_dependent_of_a_set_that_never_gets_healthy_is_not_created() {
    let shell = HealthImage::Shell.ensure();
    let s = Scene::new("order-unhealthy").await;
    let ns = s.ns().to_string();
    let mut sick = slow_db_template(&shell);
    sick["command"] = json!(["/echo"]);
    sick["healthcheck"] = json!({"test": ["CMD", "/bin/false"], "interval": "200ms", "timeout": "1s", "retries": 2});
    s.write(&[
        set(&ns, "web", echo_template("hi"), depends_on("sickdb", Some("Ready"))),
        set(&ns, "sickdb", sick, json!({})),
    ]);
    let since = SystemTime::now();
    let out = s.apply().await;
    out.assert_code(1);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(a_line_with(&said, &["waits", "sickdb"]), "the error names the dependency web waits for:\n{out}");
    let events = s.events(since).await;
    assert!(created(&events, &s.prefix("web")).is_empty(), "web is never created: {:#?}", pairs(&events));
    assert!(s.containers("web").await.is_empty());
    s.delete().await;
}

/// Fails when `Ready` is judged by the dependency's container state alone (running) and not by
/// its health: here db runs but is unhealthy, and nothing of db changes in the run that adds
/// web, so only the gate stands between web and its create.
#[tokio::test(flavor = "multi_thread")]
async fn a_ready_dependency_that_turned_unhealthy_holds_back_its_dependent() {
    let shell = HealthImage::Shell.ensure();
    let s = Scene::new("order-unhealthy-later").await;
    let ns = s.ns().to_string();
    // db is healthy while the flag file is absent; the test makes it sick from the outside (a
    // read-only bind of a folder beside the input file: no exec, which would be drift).
    let flags = s.dir.path().canonicalize().expect("the test's folder").join("flags");
    std::fs::create_dir(&flags).expect("create the flags folder");
    let db = set(
        &ns,
        "db",
        json!({
            "image": shell, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 2,
            "ports": [{"containerPort": ECHO_PORT}],
            "mounts": [{"type": "bind", "source": flags.display().to_string(), "target": "/flags", "readOnly": true}],
            "healthcheck": {"test": ["CMD", "/bin/test", "!", "-f", "/flags/sick"], "interval": "250ms",
                            "timeout": "2s", "retries": 2}
        }),
        json!({}),
    );
    s.write(std::slice::from_ref(&db));
    s.apply().await.assert_success();
    let (db_name, db_id, _) = s.only_container("db").await;
    let health = |want: &'static str| {
        let (docker, name) = (s.docker.clone(), db_name.clone());
        async move {
            let c = docker.inspect_container(&name, None).await.map_err(|e| e.to_string())?;
            let status = c.state.and_then(|st| st.health).and_then(|h| h.status).map(|h| h.to_string());
            if status.as_deref() == Some(want) { Ok(()) } else { Err(format!("{name}: {status:?}")) }
        }
    };
    std::fs::write(flags.join("sick"), "").expect("write the flag");
    eventually("db unhealthy", WAIT, || health("unhealthy")).await;

    s.write(&[set(&ns, "web", echo_template("hi"), depends_on("db", Some("Ready"))), db.clone()]);
    let since = SystemTime::now();
    let out = s.apply().await;
    out.assert_code(1);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(a_line_with(&said, &["waits", "db"]), "the error names the dependency web waits for:\n{out}");
    let events = s.events(since).await;
    assert!(created(&events, &s.prefix("web")).is_empty(), "web is not created: {:#?}\n{out}", pairs(&events));
    assert_eq!(s.only_container("db").await.1, db_id, "db was not touched");

    // db healthy again: the same files roll web out.
    std::fs::remove_file(flags.join("sick")).expect("remove the flag");
    eventually("db healthy again", WAIT, || health("healthy")).await;
    s.apply().await.assert_success();
    assert_eq!(s.only_container("web").await.2, "running");
    s.delete().await;
}

// ---------------------------------------------------------------------------------------------
// Tasks

/// Fails when a task is run like a service (the exited container is replaced on the next
/// apply), when its completion is not recorded (removed by hand, it runs again), when a changed
/// template does not run it again, when the older revision's exited container stays, when
/// apply returns before the task finished, or when the task's restart policy is not `no`.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_runs_once_per_revision() {
    let image = ensure_busybox_image();
    let s = Scene::new("task-once").await;
    let ns = s.ns().to_string();
    // It sleeps first: an apply that does not wait for the task returns while it still runs.
    let script = "sleep 1; echo task-says-$GREETING";
    let job = s.prefix("job");

    s.write(&[task(&ns, "job", &image, script, "v1")]);
    let since = SystemTime::now();
    s.apply().await.assert_success();
    let events = s.events(since).await;
    let first_run = created(&events, &job);
    assert_eq!(first_run.len(), 1, "one container runs the task: {:#?}", pairs(&events));
    let (v1, _, state) = s.only_container("job").await;
    assert_eq!(v1, first_run[0]);
    assert_eq!(state, "exited", "apply waited for the task to finish");
    assert_eq!(s.exit_code(&v1).await, 0);
    let policy = s.restart_policy(&v1).await;
    assert!(
        matches!(policy, Some(RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY)),
        "a task is not restarted by the engine: {policy:?}"
    );
    assert!(s.logs("job").await.contains("task-says-v1"), "berth logs shows the task's output");

    // The same file again: nothing runs.
    let since = SystemTime::now();
    s.apply().await.assert_success();
    let events = s.events(since).await;
    assert!(created(&events, "").is_empty(), "a completed task does not run again: {:#?}", pairs(&events));
    let plan = s.plan().await;
    plan.assert_code(0);
    assert!(plan.stdout.contains("No changes"), "{plan}");

    // A changed template is a new revision: it runs once, and the older one's container goes.
    s.write(&[task(&ns, "job", &image, script, "v2")]);
    s.plan().await.assert_code(2);
    let since = SystemTime::now();
    s.apply().await.assert_success();
    let events = s.events(since).await;
    let second_run = created(&events, &job);
    assert_eq!(second_run.len(), 1, "the new revision runs once: {:#?}", pairs(&events));
    let (v2, _, state) = s.only_container("job").await;
    assert_eq!(v2, second_run[0], "only the new revision's container remains");
    assert_ne!(v2, v1);
    assert_eq!(state, "exited");
    assert_eq!(s.exit_code(&v2).await, 0);
    assert!(s.logs("job").await.contains("task-says-v2"));

    // Removed by hand, the completed task does not run again: its completion is in the history.
    s.docker.remove_container(&v2, None).await.expect("docker rm the exited task");
    let since = SystemTime::now();
    let out = s.apply().await;
    out.assert_success();
    let events = s.events(since).await;
    assert!(
        created(&events, "").is_empty(),
        "a removed completed task does not run again: {:#?}\n{out}",
        pairs(&events)
    );
    let plan = s.plan().await;
    plan.assert_code(0);
    assert!(plan.stdout.contains("No changes"), "{plan}");
    s.delete().await;
}

/// Fails when a task's restart policy is forced to `no` even where the template asks for
/// `OnFailure`.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_keeps_a_declared_on_failure_restart_policy() {
    let image = ensure_busybox_image();
    let s = Scene::new("task-on-failure").await;
    let ns = s.ns().to_string();
    let mut t = task(&ns, "job", &image, "echo done", "x");
    t["spec"]["template"]["restartPolicy"] = json!("OnFailure");
    s.write(&[t]);
    s.apply().await.assert_success();
    let (name, _, _) = s.only_container("job").await;
    assert_eq!(s.exit_code(&name).await, 0);
    assert_eq!(s.restart_policy(&name).await, Some(RestartPolicyNameEnum::ON_FAILURE));
    s.delete().await;
}

/// Fails when a non-zero exit counts as done (apply exits 0), when the error leaves out the
/// container, the code or its last log lines, or when the dependent waiting for `Completed`
/// is created anyway.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_task_fails_the_apply_and_its_dependent_is_never_created() {
    let image = ensure_busybox_image();
    let s = Scene::new("task-fails").await;
    let ns = s.ns().to_string();
    s.write(&[
        set(&ns, "app", echo_template("hi"), depends_on("migrate", Some("Completed"))),
        task(&ns, "migrate", &image, "echo boom; exit 3", "v1"),
    ]);
    let since = SystemTime::now();
    let out = s.apply().await;
    out.assert_code(1);
    let (migrate, _, _) = s.only_container("migrate").await;
    assert_eq!(s.exit_code(&migrate).await, 3);
    for want in [migrate.as_str(), "exited with code 3", "boom"] {
        assert!(out.stderr.contains(want), "stderr says {want:?}:\n{out}");
    }
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(a_line_with(&said, &["waits", "migrate"]), "the error names the dependency app waits for:\n{out}");
    let events = s.events(since).await;
    assert!(created(&events, &s.prefix("app")).is_empty(), "app is never created: {:#?}", pairs(&events));
    assert!(s.containers("app").await.is_empty());
    s.delete().await;
}

/// Fails when `Completed` lets the dependent start before the task exited, when a failed task
/// lets the dependent roll out (or stops its running revision), or when the failed revision
/// is run again by the same files (not held).
#[tokio::test(flavor = "multi_thread")]
async fn a_dependent_keeps_its_running_revision_when_its_task_fails_and_the_failed_task_is_held() {
    let image = ensure_busybox_image();
    let s = Scene::new("task-held").await;
    let ns = s.ns().to_string();
    let (app, migrate) = (s.prefix("app"), s.prefix("migrate"));
    let files = |greeting: &str, script: &str| {
        [
            set(&ns, "app", echo_template(greeting), depends_on("migrate", Some("Completed"))),
            task(&ns, "migrate", &image, script, greeting),
        ]
    };

    // v1: the task succeeds (after a while), then the app starts.
    s.write(&files("v1", "sleep 2; echo migrated-$GREETING"));
    let since = SystemTime::now();
    s.apply().await.assert_success();
    let events = s.events(since).await;
    let seq = pairs(&events);
    let died = first(&seq, "die", &migrate);
    assert_eq!(
        events[died]
            .actor
            .as_ref()
            .and_then(|a| a.attributes.as_ref())
            .and_then(|a| a.get("exitCode"))
            .map(String::as_str),
        Some("0"),
        "{seq:#?}"
    );
    assert!(died < first(&seq, "create", &app), "app is created once migrate completed: {seq:#?}");
    let (app_v1, app_v1_id, state) = s.only_container("app").await;
    assert_eq!(state, "running");

    // v2 of both: the task fails; the app stays on v1, untouched.
    s.write(&files("v2", "echo boom; exit 3"));
    let since = SystemTime::now();
    let out = s.apply().await;
    out.assert_code(1);
    for want in ["exited with code 3", "boom"] {
        assert!(out.stderr.contains(want), "stderr says {want:?}:\n{out}");
    }
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(a_line_with(&said, &["waits", "migrate"]), "the error names the dependency app waits for:\n{out}");
    let events = s.events(since).await;
    assert_eq!(created(&events, &migrate).len(), 1, "the new task runs once: {:#?}", pairs(&events));
    // (Its healthcheck's verdicts are the engine's, not berth's doing.)
    let touched: Vec<_> =
        pairs(&events).into_iter().filter(|(a, n)| n.starts_with(&app) && !a.starts_with("health_status")).collect();
    assert!(touched.is_empty(), "app's containers are not touched: {touched:?}");
    assert_eq!(s.containers("app").await, vec![(app_v1.clone(), app_v1_id.clone(), "running".to_string())]);

    // The same files again: the failed revision is held, nothing runs, the app still runs v1.
    let since = SystemTime::now();
    let held = s.apply().await;
    held.assert_code(1);
    let said = format!("{}{}", held.stdout, held.stderr);
    assert!(said.contains("failed") && said.contains("change the spec"), "it says the revision is held:\n{held}");
    let events = s.events(since).await;
    assert!(created(&events, "").is_empty(), "a held task does not run again: {:#?}\n{held}", pairs(&events));
    assert_eq!(s.containers("app").await, vec![(app_v1, app_v1_id, "running".to_string())]);
    s.delete().await;
}
