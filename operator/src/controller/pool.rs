//! One connection per DockerHost, kept and reused; the engine's event stream of each turned
//! into reconcile triggers and drift marks.
//!
//! A connection is keyed by the host's name and endpoint; a changed endpoint (or TLS
//! material) makes a new one. For every connection a task follows `/events` of berth's
//! containers ([`crate::docker::events::follow`]): a managed container that dies, is
//! destroyed, renamed, updated, exec'd or copied into wakes the owning set's reconcile at once
//! instead of on the next resync, and drift only an event shows is noted in the pool's
//! [`DriftLog`], which [`HostPool::observe`] applies to every observation.
//!
//! Every observation through the pool also records which sets have containers on the host
//! ([`Holdings`]), so a set's reconcile looks only at the hosts that matter to it: those it is
//! placed on, those that still hold its containers, and those never observed yet. At 1k hosts
//! per namespace, observing every host for every set would be 1k list calls per reconcile.
//!
//! Triggers are throttled per set and container. The first event of a container goes out at
//! once (a drift heals without waiting) and is followed by one more look at the set a
//! one-second window after the set's last immediate trigger (the engine emits `die` before its
//! container list says `exited`); later events of the same container within the window fold
//! into that look. Each set also
//! has a budget of immediate triggers ([`BURST`], refilled at [`REFILL`] per second): berth's
//! own steps emit events too (a replaced container's `die`, a failed start's `die`), and a set
//! whose fresh containers keep dying must not be retried in a tight loop by them. Keying the
//! window by set alone held back a second kill within a second of the first (the removal of
//! the dead container opened the window): up to a second added to a heal.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use berth_crd::ContainerSet;

use crate::docker::{self, DockerError, DriftLog};
use crate::engine::{ObservedContainer, SetKey};
use crate::target::Endpoint;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::MethodLabels;

/// The window after an immediate trigger: repeated events of one container within it fold
/// into one look at its end.
const WINDOW: Duration = Duration::from_secs(1);
/// Immediate triggers a set may spend at once ...
const BURST: f64 = 5.0;
/// ... and how many it gets back per second: a set whose containers keep dying is woken by
/// their events at most about this often.
const REFILL: f64 = 2.0;

struct Connection {
    /// With its TLS material: rotated certificates make a new connection.
    endpoint: Endpoint,
    docker: Docker,
    events: tokio::task::JoinHandle<()>,
}

/// The live connections.
pub struct HostPool {
    connections: Mutex<HashMap<String, Connection>>,
    triggers: Throttle,
    metrics: Arc<Metrics>,
    drift: DriftLog,
    holdings: std::sync::Mutex<Holdings>,
}

impl HostPool {
    /// A pool whose event followers send the sets to reconcile into `triggers`.
    pub fn new(triggers: mpsc::UnboundedSender<ObjectRef<ContainerSet>>, metrics: Arc<Metrics>) -> Arc<HostPool> {
        Arc::new(HostPool {
            connections: Mutex::new(HashMap::new()),
            triggers: Throttle::new(triggers, WINDOW),
            metrics,
            drift: DriftLog::new(),
            holdings: std::sync::Mutex::default(),
        })
    }

    /// The drift the event followers noted, per host.
    pub fn drift_log(&self) -> &DriftLog {
        &self.drift
    }

    /// Observe `host` (one list call), mark the drift its events showed, and note which sets
    /// it holds.
    pub async fn observe(&self, host: &str, docker: &Docker) -> Result<Vec<ObservedContainer>, DockerError> {
        let ticket = self.holdings().ticket();
        let mut observed = docker::observe(host, docker).await?;
        self.drift.mark(host, &mut observed);
        self.holdings().record(host, ticket, observed.iter().map(|c| &c.set));
        Ok(observed)
    }

    /// Whether a reconcile of `set` must look at `host` although the set is not placed there:
    /// the host's last observation showed containers of the set, or it was never observed.
    pub fn may_hold(&self, host: &str, set: &SetKey) -> bool {
        self.holdings().may_hold(host, set)
    }

    fn holdings(&self) -> std::sync::MutexGuard<'_, Holdings> {
        // Every update is one insert: consistent whatever panicked while holding it.
        self.holdings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection to `host` at `endpoint`, made (and its event follower started) if new.
    /// A changed endpoint or TLS material (rotated certificates) makes a new connection.
    pub async fn get(&self, host: &str, endpoint: &Endpoint) -> Result<Docker, DockerError> {
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(host)
            && &c.endpoint == endpoint
            && !c.events.is_finished()
        {
            return Ok(c.docker.clone());
        }
        let metrics = self.metrics.clone();
        // Count every request by method (labels stay bounded: a handful of methods).
        let docker = docker::connect(endpoint).await?.with_request_modifier(move |req| {
            metrics.docker_requests.get_or_create(&MethodLabels { method: req.method().to_string() }).inc();
            req
        });
        let events = tokio::spawn({
            let (host, docker, log, triggers) =
                (host.to_string(), docker.clone(), self.drift.clone(), self.triggers.clone());
            async move {
                docker::follow(&host, &docker, &log, |event| {
                    let set = ObjectRef::new(&event.set.name).within(&event.set.namespace);
                    if triggers.send(set, &event.container_id) {
                        ControlFlow::Continue(())
                    } else {
                        ControlFlow::Break(())
                    }
                })
                .await
            }
        });
        if let Some(old) =
            conns.insert(host.to_string(), Connection { endpoint: endpoint.clone(), docker: docker.clone(), events })
        {
            old.events.abort();
        }
        Ok(docker)
    }

    /// Drop a host's connection (after an error, so the next use reconnects).
    pub async fn forget(&self, host: &str) {
        if let Some(c) = self.connections.lock().await.remove(host) {
            c.events.abort();
        }
    }
}

/// Per host, the sets its last observation showed containers of.
///
/// An observation replaces the host's entry only if it started after the one recorded: two
/// reconciles observe the same host concurrently, and the list that started first (before the
/// other's create) must not overwrite the later one when its answer arrives last.
#[derive(Default)]
struct Holdings {
    next_ticket: u64,
    hosts: HashMap<String, (u64, HashSet<SetKey>)>,
}

impl Holdings {
    /// A number for an observation about to start; later observations get larger ones.
    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn record<'a>(&mut self, host: &str, ticket: u64, sets: impl Iterator<Item = &'a SetKey>) {
        let newer = self.hosts.get(host).is_none_or(|(recorded, _)| *recorded < ticket);
        if newer {
            self.hosts.insert(host.to_string(), (ticket, sets.cloned().collect()));
        }
    }

    fn may_hold(&self, host: &str, set: &SetKey) -> bool {
        self.hosts.get(host).is_none_or(|(_, sets)| sets.contains(set))
    }
}

/// One set's throttle state.
struct SetWindow {
    /// Immediate triggers left (see [`BURST`]), as of `refilled`.
    tokens: f64,
    refilled: Instant,
    /// When the look at the end of the window is due, if one is scheduled.
    trailing: Option<Instant>,
    /// Containers that sent an immediate trigger, and when.
    containers: HashMap<String, Instant>,
}

impl SetWindow {
    fn new(now: Instant) -> SetWindow {
        SetWindow { tokens: BURST, refilled: now, trailing: None, containers: HashMap::new() }
    }

    /// Bring the budget and the containers' windows up to `now`.
    fn advance(&mut self, now: Instant, window: Duration) {
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * REFILL).min(BURST);
        self.refilled = now;
        self.containers.retain(|_, sent| now.duration_since(*sent) < window);
    }

    /// Nothing left to remember: full budget, nothing scheduled, no container in its window.
    fn quiet(&self) -> bool {
        self.trailing.is_none() && self.tokens >= BURST && self.containers.is_empty()
    }
}

/// Sends set triggers: at once for a container's first event, folded otherwise (see the
/// module docs).
#[derive(Clone)]
struct Throttle {
    tx: mpsc::UnboundedSender<ObjectRef<ContainerSet>>,
    window: Duration,
    sets: Arc<std::sync::Mutex<HashMap<ObjectRef<ContainerSet>, SetWindow>>>,
}

impl Throttle {
    fn new(tx: mpsc::UnboundedSender<ObjectRef<ContainerSet>>, window: Duration) -> Throttle {
        Throttle { tx, window, sets: Arc::default() }
    }

    /// Trigger `set` for an event of `container`: now (and once more at the end of the window)
    /// if the container has not triggered within the window and the set has budget left, else
    /// once at the end of the window. False when the controller is gone.
    fn send(&self, set: ObjectRef<ContainerSet>, container: &str) -> bool {
        let now = Instant::now();
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        // Forget quiet sets, so the map does not grow with every set ever seen.
        sets.retain(|_, w| {
            w.advance(now, self.window);
            !w.quiet()
        });
        let w = sets.entry(set.clone()).or_insert_with(|| SetWindow::new(now));
        let immediate = !w.containers.contains_key(container) && w.tokens >= 1.0;
        if immediate {
            w.tokens -= 1.0;
            w.containers.insert(container.to_string(), now);
        }
        // The look at the end of the window covers this event too, and sees the engine settled:
        // a full window after every immediate trigger (a look due sooner is moved), within one
        // for a folded event.
        let due = now + self.window;
        if w.trailing.is_none() || (immediate && w.trailing.is_some_and(|t| t < due)) {
            w.trailing = Some(due);
            self.later(set.clone(), due);
        }
        if immediate { self.tx.send(set).is_ok() } else { !self.tx.is_closed() }
    }

    fn later(&self, set: ObjectRef<ContainerSet>, at: Instant) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let mut sets = this.sets.lock().unwrap_or_else(|p| p.into_inner());
            // A look moved later is another task's to send.
            if let Some(w) = sets.get_mut(&set).filter(|w| w.trailing == Some(at)) {
                w.trailing = None;
                drop(sets);
                let _ = this.tx.send(set);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_may_hold_a_set_until_an_observation_shows_it_does_not() {
        let mut h = Holdings::default();
        let (web, api) = (SetKey::new("ns", "web"), SetKey::new("ns", "api"));
        assert!(h.may_hold("a", &web), "never observed: anything may be there");
        let first = h.ticket();
        h.record("a", first, [&web].into_iter());
        assert!(h.may_hold("a", &web));
        assert!(!h.may_hold("a", &api));
        assert!(h.may_hold("b", &api), "another host is still unknown");
        // Two observations in flight: the later one (after api's create) answers first.
        let (early, late) = (h.ticket(), h.ticket());
        h.record("a", late, [&web, &api].into_iter());
        h.record("a", early, [&web].into_iter());
        assert!(h.may_hold("a", &api), "the earlier list, answered last, does not hide api's container");
        let after_removal = h.ticket();
        h.record("a", after_removal, std::iter::empty());
        assert!(!h.may_hold("a", &web) && !h.may_hold("a", &api));
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<ObjectRef<ContainerSet>>) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(set) = rx.try_recv() {
            got.push(set.name);
        }
        got.sort();
        got
    }

    /// Lets the scheduled looks whose time has come run.
    async fn pass(d: Duration) {
        tokio::time::advance(d).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    // Paused time: the clock moves only when the test moves it, so the windows are exact.
    #[tokio::test(start_paused = true)]
    async fn a_containers_first_event_goes_at_once_repeats_fold_into_one_look_at_the_end() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t = Throttle::new(tx, WINDOW);
        let web = ObjectRef::<ContainerSet>::new("web").within("ns");
        let api = ObjectRef::<ContainerSet>::new("api").within("ns");
        assert!(t.send(web.clone(), "a"));
        assert_eq!(drain(&mut rx), ["web"], "at once");
        for _ in 0..5 {
            assert!(t.send(web.clone(), "a"));
        }
        assert!(drain(&mut rx).is_empty(), "the same container's repeats are held within the window");
        pass(WINDOW / 2).await;
        assert!(t.send(web.clone(), "b"));
        assert!(t.send(api.clone(), "x"));
        assert_eq!(drain(&mut rx), ["api", "web"], "another container, another set: at once");
        pass(WINDOW / 2).await;
        assert!(drain(&mut rx).is_empty(), "web's look moved to a full window after b's trigger");
        pass(WINDOW / 2).await;
        assert_eq!(drain(&mut rx), ["api", "web"], "one look at each set, a window after its last immediate trigger");
        pass(WINDOW * 2).await;
        assert!(drain(&mut rx).is_empty(), "nothing more without events");
        assert!(t.send(web.clone(), "a"));
        assert_eq!(drain(&mut rx), ["web"], "after a quiet window, a again at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_set_whose_fresh_containers_keep_dying_is_held_to_its_budget() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t = Throttle::new(tx, WINDOW);
        let web = ObjectRef::<ContainerSet>::new("web").within("ns");
        let mut at_once = 0;
        for i in 0..20 {
            assert!(t.send(web.clone(), &format!("c{i}")));
            at_once += drain(&mut rx).len();
        }
        assert_eq!(at_once, BURST as usize, "a burst of fresh containers spends the budget, then folds");
        pass(WINDOW).await;
        assert_eq!(drain(&mut rx), ["web"], "the folded events: one look");
        // One window later the budget has REFILL tokens back.
        let mut at_once = 0;
        for i in 20..40 {
            assert!(t.send(web.clone(), &format!("c{i}")));
            at_once += drain(&mut rx).len();
        }
        assert_eq!(at_once, REFILL as usize, "refilled at REFILL per second");
        // Quiet long enough to refill: the set is forgotten on the next event of any set.
        pass(WINDOW * 10).await;
        drain(&mut rx);
        let api = ObjectRef::<ContainerSet>::new("api").within("ns");
        assert!(t.send(api, "x"));
        assert_eq!(t.sets.lock().unwrap().len(), 1, "web's state is dropped once quiet");
    }

    #[tokio::test]
    async fn false_once_the_controller_is_gone() {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = Throttle::new(tx, WINDOW);
        drop(rx);
        assert!(!t.send(ObjectRef::<ContainerSet>::new("web").within("ns"), "a"));
        assert!(!t.send(ObjectRef::<ContainerSet>::new("web").within("ns"), "a"));
    }
}
