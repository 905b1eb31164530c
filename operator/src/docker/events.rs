//! Following a host's engine events: what changed behind berth's back, the moment it happens.
//!
//! Some drift is visible in a container list (a stopped, renamed or wrong-image container, see
//! [`super::observe`]); some only in the engine's event stream: `docker update`, `docker exec`
//! and `docker cp` leave no trace in a list. This module turns the stream of one host into
//! two things, for any front end (the operator's host pool, the standalone `berth watch`):
//!
//! - a **trigger** per event that should wake a reconcile of the container's set
//!   ([`ContainerEvent`], handed to the caller's callback);
//! - a **[`DriftLog`]**: for each host, the containers that drifted in a way only an event
//!   shows. Adapters apply it to what they observed before planning
//!   ([`DriftLog::mark`]), so the pure planner sees that drift as plain data.
//!
//! # Use
//!
//! ```no_run
//! # async fn example(docker: bollard::Docker) {
//! use std::ops::ControlFlow;
//! use berth::docker::events::{DriftLog, follow};
//!
//! let log = DriftLog::new();
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let follower = tokio::spawn({
//!     let log = log.clone();
//!     async move {
//!         // Runs until the callback breaks; reconnects (and resumes) by itself.
//!         follow("local", &docker, &log, |event| match tx.send(event.set) {
//!             Ok(()) => ControlFlow::Continue(()),
//!             Err(_) => ControlFlow::Break(()),
//!         })
//!         .await
//!     }
//! });
//! // In the reconcile: observe, then `log.mark("local", &mut observed)`, then plan.
//! # drop((follower, rx.recv()));
//! # }
//! ```
//!
//! Which engine events mean what (checked against Docker 20.10, API 1.41):
//!
//! | event                                   | meaning                                          |
//! |-----------------------------------------|--------------------------------------------------|
//! | `update`                                | drift [`Drift::Updated`] (`docker update`)       |
//! | `exec_start: <cmd>`                     | drift [`Drift::Exec`], unless `<cmd>` is the container's own healthcheck |
//! | `extract-to-dir`                        | drift [`Drift::Copied`] (`docker cp` into it; emitted once the copy succeeded) |
//! | `die`, `destroy`, `rename`, `pause`, `unpause`, `oom` | a change: reconcile (the list shows the rest) |
//! | `archive-path` (`docker cp` out), `exec_create`, `exec_die`, `start`, ... | nothing |
//!
//! The log lives in memory, so drift that only an event showed is known to the process that
//! saw the event: after a restart, berth sees list-visible drift again but not an exec that
//! happened before it started (unless the engine still buffers the event; a reconnect resumes
//! from the last event seen).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;

use crate::engine::{ContainerSpec, Drift, ObservedContainer, SetKey, labels};

/// What one engine event of a managed container means to berth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// Nothing to act on: a start, a copy out of it, the container's own healthcheck, ...
    Nothing,
    /// Its state or name changed: the set should be reconciled; the list shows what changed.
    Changed,
    /// It drifted in a way only this event shows.
    Drifted(Drift),
}

/// Actions whose effect a container list shows.
const CHANGES: [&str; 6] = ["die", "destroy", "rename", "pause", "unpause", "oom"];

/// Classify an event by its action (`exec_start: /bin/sh`, `update`, ...) and the container's
/// `berth.dev/spec` label (the event carries the container's labels as attributes).
pub fn classify(action: &str, spec_label: Option<&str>) -> Meaning {
    if let Some(command) = action.strip_prefix("exec_start: ") {
        // The engine runs the healthcheck as an exec too: that one is the spec's own.
        return if is_healthcheck(command, spec_label) { Meaning::Nothing } else { Meaning::Drifted(Drift::Exec) };
    }
    match action {
        "update" => Meaning::Drifted(Drift::Updated),
        "extract-to-dir" => Meaning::Drifted(Drift::Copied),
        a if CHANGES.contains(&a) => Meaning::Changed,
        _ => Meaning::Nothing,
    }
}

/// Whether an exec's command line is the healthcheck of the spec in the container's label.
/// The engine reports the command as its arguments joined by spaces; a `CMD-SHELL` check runs
/// as `/bin/sh -c <command>`.
pub fn is_healthcheck(command: &str, spec_label: Option<&str>) -> bool {
    let Some(spec) = spec_label.and_then(|s| serde_json::from_str::<ContainerSpec>(s).ok()) else {
        return false;
    };
    let Some(test) = spec.healthcheck.map(|h| h.test) else { return false };
    match test.split_first() {
        Some((kind, args)) if kind == "CMD" => args.join(" ") == command,
        Some((kind, args)) if kind == "CMD-SHELL" => format!("/bin/sh -c {}", args.join(" ")) == command,
        _ => false,
    }
}

/// An event that should wake a reconcile of `set` (already noted in the [`DriftLog`] if it was
/// drift).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The host name given to [`follow`].
    pub host: String,
    pub set: SetKey,
    pub container_id: String,
    /// The container's name when the event happened (after a rename, the new one).
    pub container_name: String,
    /// The engine's action: `die`, `update`, `exec_start: /bin/sh`, ...
    pub action: String,
    /// The drift this event shows, if it shows one that a list cannot.
    pub drift: Option<Drift>,
}

/// How long an id noted in the log survives an observation that does not list it: an event can
/// be noted between a list call and the mark of its result.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
struct Noted {
    drift: Drift,
    at: Instant,
}

/// Per host, the containers that drifted in a way only an event shows (container id → drift).
/// Cheap to clone: clones share one log.
#[derive(Clone, Debug, Default)]
pub struct DriftLog {
    hosts: Arc<Mutex<HashMap<String, HashMap<String, Noted>>>>,
}

impl DriftLog {
    pub fn new() -> DriftLog {
        DriftLog::default()
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Noted>>> {
        // The map stays consistent whatever panicked while holding it: every update is one insert.
        self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Note that container `id` on `host` drifted. The first drift noted is kept: what happened
    /// first is what a person wants to know.
    pub fn record(&self, host: &str, id: &str, drift: Drift) {
        self.hosts()
            .entry(host.to_string())
            .or_default()
            .entry(id.to_string())
            .or_insert(Noted { drift, at: Instant::now() });
    }

    /// The drift noted for a container, if any.
    pub fn get(&self, host: &str, id: &str) -> Option<Drift> {
        self.hosts().get(host).and_then(|h| h.get(id)).map(|n| n.drift)
    }

    /// Forget a container (it was removed).
    pub fn forget(&self, host: &str, id: &str) {
        if let Some(h) = self.hosts().get_mut(host) {
            h.remove(id);
        }
    }

    /// Mark `observed` (every managed container of `host`, as one observe returns them) with
    /// the drift noted for them; drift the list itself showed is kept. Ids the observation no
    /// longer lists are forgotten.
    pub fn mark(&self, host: &str, observed: &mut [ObservedContainer]) {
        let mut hosts = self.hosts();
        let Some(noted) = hosts.get_mut(host) else { return };
        for c in observed.iter_mut() {
            if let Some(n) = noted.get(&c.id) {
                c.drift = c.drift.or(Some(n.drift));
            }
        }
        noted.retain(|id, n| n.at.elapsed() < GRACE || observed.iter().any(|c| &c.id == id));
    }
}

/// Follow `host`'s engine events of berth's containers until `on_event` breaks: note drift in
/// `log` and hand every event that should wake a reconcile to `on_event` (after noting it, so a
/// reconcile it wakes sees the drift). A broken stream is reconnected with backoff (0.5 s up
/// to 30 s), resuming from the last event seen so that nothing the engine still buffers is
/// missed.
pub async fn follow<F>(host: &str, docker: &Docker, log: &DriftLog, mut on_event: F)
where
    F: FnMut(ContainerEvent) -> ControlFlow<()>,
{
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), vec![format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE)]),
    ]);
    let mut since: Option<String> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut opts = EventsOptionsBuilder::default().filters(&filters);
        if let Some(s) = &since {
            opts = opts.since(s);
        }
        let mut stream = docker.events(Some(opts.build()));
        loop {
            let event = match stream.next().await {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    tracing::warn!(host, error = %super::message_of(&e), retry_in = ?backoff, "docker event stream broke");
                    break;
                }
                None => {
                    tracing::warn!(host, retry_in = ?backoff, "docker event stream ended");
                    break;
                }
            };
            backoff = Duration::from_millis(500);
            if let Some(t) = event.time_nano {
                since = Some(format!("{}.{:09}", t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000)));
            }
            let action = event.action.unwrap_or_default();
            let (id, attrs) = match event.actor {
                Some(a) => (a.id.unwrap_or_default(), a.attributes.unwrap_or_default()),
                None => continue,
            };
            if action == "destroy" {
                log.forget(host, &id);
            }
            let drift = match classify(&action, attrs.get(labels::SPEC).map(String::as_str)) {
                Meaning::Nothing => continue,
                Meaning::Changed => None,
                Meaning::Drifted(d) => {
                    log.record(host, &id, d);
                    Some(d)
                }
            };
            let (Some(ns), Some(set)) = (attrs.get(labels::NAMESPACE), attrs.get(labels::SET)) else { continue };
            if action == "die" {
                settle(docker, &id).await;
            }
            let event = ContainerEvent {
                host: host.to_string(),
                set: SetKey::new(ns.clone(), set.clone()),
                container_name: attrs.get("name").cloned().unwrap_or_default(),
                container_id: id,
                action,
                drift,
            };
            tracing::debug!(host, action = %event.action, set = %event.set, container = %event.container_name, drift = ?event.drift, "docker event");
            if on_event(event).is_break() {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Wait until the engine has recorded a container's exit, so that a list made after this
/// returns shows it stopped. The engine sends `die` while it still holds the container's lock
/// and updates the view that lists read only after that (cleanup first); an inspect waits for
/// the lock. Without this, a reconcile woken by the event can list the container as running
/// and find nothing to do (seen: `berth watch` missed a kill).
async fn settle(docker: &Docker, id: &str) {
    if let Err(e) = docker.inspect_container(id, None).await {
        tracing::debug!(container = id, error = %super::message_of(&e), "inspect after die");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ObservedContainer, State};

    const SPEC: &str = r#"{"image":"e:1","restartPolicy":"no","healthcheck":{"test":["CMD","/echo","--probe"]}}"#;

    #[test]
    fn a_healthcheck_exec_is_not_drift() {
        assert!(is_healthcheck("/echo --probe", Some(SPEC)));
        assert!(!is_healthcheck("/bin/sh", Some(SPEC)));
        let shell = r#"{"image":"e:1","restartPolicy":"no","healthcheck":{"test":["CMD-SHELL","curl -f localhost"]}}"#;
        assert!(is_healthcheck("/bin/sh -c curl -f localhost", Some(shell)));
        assert!(!is_healthcheck("/echo --probe", None));
    }

    #[test]
    fn events_are_classified_as_the_engine_names_them() {
        assert_eq!(classify("update", Some(SPEC)), Meaning::Drifted(Drift::Updated));
        assert_eq!(classify("exec_start: /bin/sh -c ls", Some(SPEC)), Meaning::Drifted(Drift::Exec));
        assert_eq!(classify("exec_start: /echo --probe", Some(SPEC)), Meaning::Nothing);
        assert_eq!(classify("extract-to-dir", Some(SPEC)), Meaning::Drifted(Drift::Copied));
        // Copying out of a container changes nothing in it.
        assert_eq!(classify("archive-path", Some(SPEC)), Meaning::Nothing);
        for a in ["die", "destroy", "rename", "pause", "oom"] {
            assert_eq!(classify(a, Some(SPEC)), Meaning::Changed, "{a}");
        }
        for a in ["start", "create", "exec_create: /bin/sh", "exec_die", "kill", "stop", "attach"] {
            assert_eq!(classify(a, Some(SPEC)), Meaning::Nothing, "{a}");
        }
    }

    fn observed(id: &str) -> ObservedContainer {
        ObservedContainer {
            id: id.into(),
            name: format!("ns.web.r1.{id}"),
            set: SetKey::new("ns", "web"),
            revision: "r1".into(),
            ordinal: None,
            state: State::Running,
            health: None,
            image: String::new(),
            spec_json: None,
            host_bindings: Vec::new(),
            drift: None,
        }
    }

    #[test]
    fn the_log_marks_per_host_keeps_list_drift_and_the_first_event() {
        let log = DriftLog::new();
        log.record("a", "c1", Drift::Exec);
        log.record("a", "c1", Drift::Updated);
        log.record("a", "c2", Drift::Copied);
        log.record("b", "c3", Drift::Updated);
        let mut seen = vec![observed("c1"), observed("c2"), observed("c3")];
        seen[1].drift = Some(Drift::Renamed);
        log.clone().mark("a", &mut seen);
        let marks: Vec<Option<Drift>> = seen.iter().map(|c| c.drift).collect();
        assert_eq!(marks, [Some(Drift::Exec), Some(Drift::Renamed), None]);
        log.forget("a", "c1");
        assert_eq!(log.get("a", "c1"), None);
        assert_eq!(log.get("b", "c3"), Some(Drift::Updated));
    }

    #[test]
    fn the_log_forgets_what_is_no_longer_observed_after_a_grace() {
        let log = DriftLog::new();
        log.record("a", "gone", Drift::Exec);
        log.mark("a", &mut []);
        assert_eq!(log.get("a", "gone"), Some(Drift::Exec), "noted a moment ago: may postdate the list");
        if let Some(n) = log.hosts().get_mut("a").and_then(|h| h.get_mut("gone")) {
            n.at = n.at.checked_sub(GRACE).expect("the clock started more than the grace ago");
        }
        log.mark("a", &mut [observed("other")]);
        assert_eq!(log.get("a", "gone"), None);
    }
}
