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
//! | `exec_start: <cmd>`                     | drift [`Drift::Exec`], unless it is exactly the text of the container's own health probe (see below) |
//! | `extract-to-dir`                        | drift [`Drift::Copied`] (`docker cp` into it; emitted once the copy succeeded) |
//! | `die`, `destroy`, `rename`, `pause`, `unpause`, `oom` | a change: reconcile (the list shows the rest) |
//! | `archive-path` (`docker cp` out), `exec_create`, `exec_die`, `start`, `health_status`, ... | nothing |
//!
//! The engine runs every health probe as an exec and reports it like a user's: an
//! `exec_start` is the container's own probe only if its text is exactly the one the engine
//! formats from the container's *effective* healthcheck (`Config.Healthcheck` of an inspect:
//! the spec's, else the image's `HEALTHCHECK`; `CMD` and `CMD-SHELL` forms, the trailing
//! space of a one-argument check; see [`super::probe`]). Each container is inspected once, on
//! its first `exec_start` (cached by id, forgotten on `destroy`), by a task beside the loop:
//! its events wait meanwhile, other containers' do not. A container whose inspect failed has
//! an unknown probe: its execs are not taken for drift (retried after a while), since taking a
//! probe for drift would replace the container at every interval. A user's exec of exactly
//! the probe's command line looks like the probe and is not seen.
//!
//! A `die` is handed on only once an inspect of the container returned (also beside the loop):
//! the engine sends `die` while it still holds the container's lock and updates the view that
//! lists read only after that, and an inspect waits for the lock; a reconcile woken earlier can
//! list the container as running and find nothing to do (seen: `berth watch` missed a kill).
//!
//! The log lives in memory, so drift that only an event showed is known to the process that
//! saw the event: after a restart, berth sees list-visible drift again but not an exec that
//! happened before it started (unless the engine still buffers the event; a reconnect resumes
//! from the last event seen).

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::probe::{self, HealthProbe, LearnError};
use crate::engine::{Drift, ObservedContainer, SetKey, labels};

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
/// health probe as the engine runs it ([`HealthProbe`], learned from an inspect). `probe` is
/// `None` when it could not be learned: an exec then counts as nothing, never as drift,
/// because a probe taken for drift replaces the container, and its replacement's probe is
/// taken for drift again, every interval (see the module docs).
pub fn classify(action: &str, probe: Option<&HealthProbe>) -> Meaning {
    if action.starts_with("exec_start: ") {
        return match probe {
            Some(p) if !p.runs_as(action) => Meaning::Drifted(Drift::Exec),
            _ => Meaning::Nothing,
        };
    }
    match action {
        "update" => Meaning::Drifted(Drift::Updated),
        "extract-to-dir" => Meaning::Drifted(Drift::Copied),
        a if CHANGES.contains(&a) => Meaning::Changed,
        _ => Meaning::Nothing,
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
///
/// The loop never waits on an inspect. Two kinds of event need one before they can be
/// handed on: the first `exec_start` of a container (is it the container's health probe? see
/// [`super::probe`]) and every `die` (the inspect settles the exit, see the module docs). Such an
/// event, and every later event of the same container, is held while a spawned task inspects
/// it; events of other containers keep flowing.
pub async fn follow<F>(host: &str, docker: &Docker, log: &DriftLog, mut on_event: F)
where
    F: FnMut(ContainerEvent) -> ControlFlow<()>,
{
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), vec![format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE)]),
    ]);
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<Answer>();
    let mut follower = Follower::new(host, log.clone());
    let mut since: Option<String> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut opts = EventsOptionsBuilder::default().filters(&filters);
        if let Some(s) = &since {
            opts = opts.since(s);
        }
        let mut stream = docker.events(Some(opts.build()));
        loop {
            let out = tokio::select! {
                // Answers first: the events they release are older than the stream's next.
                biased;
                Some((id, result)) = answers.recv() => follower.answer(&id, result, Instant::now()),
                next = stream.next() => match next {
                    Some(Ok(event)) => {
                        backoff = Duration::from_millis(500);
                        if let Some(t) = event.time_nano {
                            since = Some(format!("{}.{:09}", t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000)));
                        }
                        let Some(raw) = Raw::of(event) else { continue };
                        follower.take(raw, Instant::now())
                    }
                    Some(Err(e)) => {
                        tracing::warn!(host, error = %super::message_of(&e), retry_in = ?backoff, "docker event stream broke");
                        break;
                    }
                    None => {
                        tracing::warn!(host, retry_in = ?backoff, "docker event stream ended");
                        break;
                    }
                },
            };
            if dispatch(out, docker, &answers_tx, &mut on_event).is_break() {
                return;
            }
        }
        // Held events still go out while the stream is down.
        let wake = tokio::time::sleep(backoff);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                Some((id, result)) = answers.recv() => {
                    let out = follower.answer(&id, result, Instant::now());
                    if dispatch(out, docker, &answers_tx, &mut on_event).is_break() {
                        return;
                    }
                }
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// An inspect's answer for a container: its health probe, or why it is not known.
type Answer = (String, Result<HealthProbe, LearnError>);

/// Start the inspects `out` asks for (each answers on `answers`), then hand its events on.
fn dispatch<F>(out: Out, docker: &Docker, answers: &mpsc::UnboundedSender<Answer>, on_event: &mut F) -> ControlFlow<()>
where
    F: FnMut(ContainerEvent) -> ControlFlow<()>,
{
    for id in out.inspect {
        let (docker, answers) = (docker.clone(), answers.clone());
        tokio::spawn(async move {
            let result = probe::learn(&docker, &id).await;
            // The follower may have ended meanwhile; then nobody waits for the answer.
            let _ = answers.send((id, result));
        });
    }
    for event in out.deliver {
        tracing::debug!(host = %event.host, action = %event.action, set = %event.set, container = %event.container_name, drift = ?event.drift, "docker event");
        on_event(event)?;
    }
    ControlFlow::Continue(())
}

/// One engine event of a managed container, kept as it came until it is classified.
#[derive(Clone, Debug)]
struct Raw {
    id: String,
    action: String,
    attrs: HashMap<String, String>,
}

impl Raw {
    fn of(event: bollard::models::EventMessage) -> Option<Raw> {
        let actor = event.actor?;
        Some(Raw {
            id: actor.id.unwrap_or_default(),
            action: event.action.unwrap_or_default(),
            attrs: actor.attributes.unwrap_or_default(),
        })
    }
}

/// What the follower knows of a container's health probe.
#[derive(Clone, Debug)]
enum Known {
    Probe(HealthProbe),
    /// Its inspect failed: the container's execs count as nothing (see [`classify`]) and the
    /// next one after `retry` asks again.
    Failed {
        retry: Instant,
    },
}

/// How long after a failed inspect the next exec of the container asks again: an engine
/// too slow to answer is not asked at every probe interval.
const RETRY_INSPECT: Duration = Duration::from_secs(10);

/// What the follower wants done after an event or an inspect's answer.
#[derive(Debug, Default)]
struct Out {
    /// Events for the caller, in order.
    deliver: Vec<ContainerEvent>,
    /// Containers to inspect; each answer goes to [`Follower::answer`].
    inspect: Vec<String>,
}

/// The follower of one host, as a state machine without I/O (the caller inspects and hands
/// on what it asks for), so that its ordering is unit-tested.
///
/// - A container's health probe is learned once (the first `exec_start` of it asks), cached
///   by container id for the host, and forgotten on `destroy`: a container's healthcheck
///   never changes. An inspect that fails (or times out) leaves the probe unknown.
/// - A `die` is handed on only once an inspect of the container returned: the engine sends
///   `die` while it still holds the container's lock and updates the view that lists read
///   only after that; an inspect waits for the lock. Without this, a reconcile woken by the
///   event can list the container as running and find nothing to do (seen: `berth watch`
///   missed a kill).
/// - While a container's inspect is in flight its later events wait behind the one that
///   asked, so each container's events go out in the engine's order.
struct Follower {
    host: String,
    log: DriftLog,
    known: HashMap<String, Known>,
    /// Containers with an inspect in flight, and their events since (the first one asked).
    held: HashMap<String, VecDeque<Raw>>,
}

impl Follower {
    fn new(host: &str, log: DriftLog) -> Follower {
        Follower { host: host.to_string(), log, known: HashMap::new(), held: HashMap::new() }
    }

    /// An event from the stream.
    fn take(&mut self, raw: Raw, now: Instant) -> Out {
        let mut out = Out::default();
        match self.held.get_mut(&raw.id) {
            Some(queue) => queue.push_back(raw),
            None => self.next(raw, VecDeque::new(), now, &mut out),
        }
        out
    }

    /// An inspect's answer for container `id`: release its held events.
    fn answer(&mut self, id: &str, result: Result<HealthProbe, LearnError>, now: Instant) -> Out {
        let mut out = Out::default();
        let Some(mut queue) = self.held.remove(id) else { return out };
        let asked_by_exec = queue.front().is_some_and(|r| r.action.starts_with("exec_start: "));
        match result {
            Ok(probe) => {
                tracing::debug!(host = %self.host, container = id, ?probe, "health probe learned");
                self.known.insert(id.to_string(), Known::Probe(probe));
            }
            Err(e) => {
                // A `die`'s inspect only settles the exit; a probe learned before stays.
                if asked_by_exec {
                    tracing::warn!(host = %self.host, error = %e, "the container's healthcheck is unknown: its execs are not taken for drift until it is learned");
                    self.known.insert(id.to_string(), Known::Failed { retry: now + RETRY_INSPECT });
                }
            }
        }
        if let Some(first) = queue.pop_front() {
            self.deliver(first, &mut out);
        }
        if let Some(raw) = queue.pop_front() {
            self.next(raw, queue, now, &mut out);
        }
        out
    }

    /// Hand on `raw` and then `rest` (all of one container), until one needs an inspect: that
    /// one and what follows it are held.
    fn next(&mut self, raw: Raw, mut rest: VecDeque<Raw>, now: Instant, out: &mut Out) {
        let mut raw = Some(raw);
        while let Some(r) = raw.take().or_else(|| rest.pop_front()) {
            if self.needs_inspect(&r, now) {
                let id = r.id.clone();
                out.inspect.push(id.clone());
                rest.push_front(r);
                self.held.insert(id, rest);
                return;
            }
            self.deliver(r, out);
        }
    }

    fn needs_inspect(&self, raw: &Raw, now: Instant) -> bool {
        if raw.action == "die" {
            return true;
        }
        raw.action.starts_with("exec_start: ")
            && match self.known.get(&raw.id) {
                None => true,
                Some(Known::Probe(_)) => false,
                Some(Known::Failed { retry }) => now >= *retry,
            }
    }

    /// Classify `raw` with what is known of its container, note drift, and hand it on if it
    /// should wake a reconcile.
    fn deliver(&mut self, raw: Raw, out: &mut Out) {
        if raw.action == "destroy" {
            self.log.forget(&self.host, &raw.id);
            self.known.remove(&raw.id);
        }
        let probe = match self.known.get(&raw.id) {
            Some(Known::Probe(p)) => Some(p),
            _ => None,
        };
        let drift = match classify(&raw.action, probe) {
            Meaning::Nothing => return,
            Meaning::Changed => None,
            Meaning::Drifted(d) => {
                self.log.record(&self.host, &raw.id, d);
                Some(d)
            }
        };
        let (Some(ns), Some(set)) = (raw.attrs.get(labels::NAMESPACE), raw.attrs.get(labels::SET)) else { return };
        out.deliver.push(ContainerEvent {
            host: self.host.clone(),
            set: SetKey::new(ns.clone(), set.clone()),
            container_name: raw.attrs.get("name").cloned().unwrap_or_default(),
            container_id: raw.id,
            action: raw.action,
            drift,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ObservedContainer, State};

    fn probe(text: &str) -> HealthProbe {
        HealthProbe::Exec(text.to_string())
    }

    #[test]
    fn a_healthcheck_exec_is_not_drift_and_any_other_exec_is() {
        let p = probe("exec_start: /probe ");
        assert_eq!(classify("exec_start: /probe ", Some(&p)), Meaning::Nothing);
        assert_eq!(classify("exec_start: /probe", Some(&p)), Meaning::Drifted(Drift::Exec));
        assert_eq!(classify("exec_start: /bin/sh", Some(&p)), Meaning::Drifted(Drift::Exec));
        assert_eq!(classify("exec_start: /probe ", Some(&HealthProbe::None)), Meaning::Drifted(Drift::Exec));
        // Unknown (the inspect failed): never drift, so a probe cannot loop the container.
        assert_eq!(classify("exec_start: /bin/sh", None), Meaning::Nothing);
    }

    #[test]
    fn events_are_classified_as_the_engine_names_them() {
        let p = probe("exec_start: /echo --probe");
        let p = Some(&p);
        assert_eq!(classify("update", p), Meaning::Drifted(Drift::Updated));
        assert_eq!(classify("exec_start: /bin/sh -c ls", p), Meaning::Drifted(Drift::Exec));
        assert_eq!(classify("exec_start: /echo --probe", p), Meaning::Nothing);
        assert_eq!(classify("extract-to-dir", p), Meaning::Drifted(Drift::Copied));
        // Copying out of a container changes nothing in it.
        assert_eq!(classify("archive-path", p), Meaning::Nothing);
        for a in ["die", "destroy", "rename", "pause", "oom"] {
            assert_eq!(classify(a, p), Meaning::Changed, "{a}");
        }
        for a in
            ["start", "create", "exec_create: /bin/sh", "exec_die", "kill", "stop", "attach", "health_status: healthy"]
        {
            assert_eq!(classify(a, p), Meaning::Nothing, "{a}");
        }
    }

    fn raw(id: &str, action: &str) -> Raw {
        let attrs = HashMap::from([
            (labels::NAMESPACE.to_string(), "ns".to_string()),
            (labels::SET.to_string(), "web".to_string()),
            ("name".to_string(), format!("ns.web.r1.{id}")),
        ]);
        Raw { id: id.into(), action: action.into(), attrs }
    }

    fn actions(out: &Out) -> Vec<(String, String)> {
        out.deliver.iter().map(|e| (e.container_id.clone(), e.action.clone())).collect()
    }

    fn pair(id: &str, action: &str) -> (String, String) {
        (id.to_string(), action.to_string())
    }

    #[test]
    fn a_containers_first_exec_waits_for_its_inspect_while_others_flow() {
        let now = Instant::now();
        let mut f = Follower::new("a", DriftLog::new());
        let out = f.take(raw("c1", "exec_start: /probe "), now);
        assert_eq!((out.inspect.as_slice(), out.deliver.len()), (["c1".to_string()].as_slice(), 0));
        // Held behind the inspect, in order.
        let out = f.take(raw("c1", "exec_start: /bin/sh"), now);
        assert!(out.inspect.is_empty() && out.deliver.is_empty());
        // Another container's events are not held.
        let out = f.take(raw("c2", "update"), now);
        assert_eq!(actions(&out), [pair("c2", "update")]);
        // The answer: the probe is nothing, the user's shell is drift.
        let out = f.answer("c1", Ok(probe("exec_start: /probe ")), now);
        assert_eq!(actions(&out), [pair("c1", "exec_start: /bin/sh")]);
        assert!(out.inspect.is_empty());
        assert_eq!(f.log.get("a", "c1"), Some(Drift::Exec));
        // Learned once: later probes need no inspect.
        let out = f.take(raw("c1", "exec_start: /probe "), now);
        assert!(out.inspect.is_empty() && out.deliver.is_empty());
    }

    #[test]
    fn a_die_goes_out_once_its_inspect_returned_and_what_follows_waits_behind_it() {
        let now = Instant::now();
        let mut f = Follower::new("a", DriftLog::new());
        let out = f.take(raw("c1", "die"), now);
        assert_eq!((out.inspect, out.deliver.len()), (vec!["c1".to_string()], 0));
        assert!(f.take(raw("c1", "destroy"), now).deliver.is_empty(), "waits behind the die");
        // The settle inspect may fail (the container is going away): the die goes out anyway.
        let error = LearnError::Timeout { id: "c1".into() };
        let out = f.answer("c1", Err(error), now);
        assert_eq!(actions(&out), [pair("c1", "die"), pair("c1", "destroy")]);
        assert!(f.held.is_empty() && f.known.is_empty(), "destroy forgets the container");
    }

    #[test]
    fn a_second_inspect_in_the_queue_holds_the_rest_again() {
        let now = Instant::now();
        let mut f = Follower::new("a", DriftLog::new());
        f.take(raw("c1", "exec_start: /bin/sh"), now);
        f.take(raw("c1", "die"), now);
        f.take(raw("c1", "destroy"), now);
        let out = f.answer("c1", Ok(HealthProbe::None), now);
        assert_eq!(actions(&out), [pair("c1", "exec_start: /bin/sh")]);
        assert_eq!(out.inspect, ["c1"], "the die asks for its settle inspect");
        let out = f.answer("c1", Ok(HealthProbe::None), now);
        assert_eq!(actions(&out), [pair("c1", "die"), pair("c1", "destroy")]);
        assert!(f.known.is_empty());
    }

    #[test]
    fn an_unknown_probe_is_never_drift_and_is_asked_again_later() {
        let now = Instant::now();
        let mut f = Follower::new("a", DriftLog::new());
        f.take(raw("c1", "exec_start: /probe "), now);
        let out = f.answer("c1", Err(LearnError::Timeout { id: "c1".into() }), now);
        assert!(out.deliver.is_empty(), "an unknown exec wakes nothing");
        let out = f.take(raw("c1", "exec_start: /probe "), now + RETRY_INSPECT / 2);
        assert!(out.inspect.is_empty() && out.deliver.is_empty(), "not asked at every probe");
        let out = f.take(raw("c1", "exec_start: /bin/sh"), now + RETRY_INSPECT);
        assert_eq!(out.inspect, ["c1"]);
        let out = f.answer("c1", Ok(probe("exec_start: /probe ")), now + RETRY_INSPECT);
        assert_eq!(actions(&out), [pair("c1", "exec_start: /bin/sh")]);
        assert_eq!(out.deliver[0].drift, Some(Drift::Exec));
        assert_eq!(f.log.get("a", "c1"), Some(Drift::Exec));
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
            exit_code: None,
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
