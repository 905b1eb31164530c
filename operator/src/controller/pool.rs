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
//! Triggers are throttled per set: the first event after a quiet second goes out at once (a
//! drift heals without waiting) and is followed by one more at the end of that second (the
//! engine emits `die` before its container list says `exited`); later events within a second
//! fold into one at its end. berth's own steps emit events too (a replaced container's `die`, a
//! failed start's `die`), so without it a set that cannot converge would be retried in a tight
//! loop.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use berth_crd::ContainerSet;

use crate::docker::{self, DockerError, DriftLog, Endpoint};
use crate::engine::{ObservedContainer, SetKey};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::MethodLabels;

/// The per-set window of event triggers: the first at once, the rest folded into one at its end.
const THROTTLE: Duration = Duration::from_secs(1);

struct Connection {
    endpoint: String,
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
            triggers: Throttle::new(triggers, THROTTLE),
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
        let mut observed = docker::observe(docker).await?;
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
    /// `key` identifies the TLS material, so rotated certificates reconnect.
    pub async fn get(&self, host: &str, endpoint: &Endpoint, key: &str) -> Result<Docker, DockerError> {
        let id = format!("{endpoint}|{key}");
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(host)
            && c.endpoint == id
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
                    if triggers.send(set) { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }
                })
                .await
            }
        });
        if let Some(old) = conns.insert(host.to_string(), Connection { endpoint: id, docker: docker.clone(), events }) {
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

/// Per set: when its last trigger went out, and whether one is scheduled.
type Windows = HashMap<ObjectRef<ContainerSet>, (Instant, bool)>;

/// Sends set triggers on the leading edge of a per-set window (see the module docs).
#[derive(Clone)]
struct Throttle {
    tx: mpsc::UnboundedSender<ObjectRef<ContainerSet>>,
    window: Duration,
    sets: Arc<std::sync::Mutex<Windows>>,
}

impl Throttle {
    fn new(tx: mpsc::UnboundedSender<ObjectRef<ContainerSet>>, window: Duration) -> Throttle {
        Throttle { tx, window, sets: Arc::default() }
    }

    /// Trigger `set` now (and once more at the end of its window), or, within a window, once
    /// at its end. False when the controller is gone.
    fn send(&self, set: ObjectRef<ContainerSet>) -> bool {
        let now = Instant::now();
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        // Forget quiet sets, so the map does not grow with every set ever seen.
        sets.retain(|_, (last, scheduled)| *scheduled || now.duration_since(*last) < self.window);
        match sets.get_mut(&set) {
            // A trigger is due at the end of the window: it covers this event too.
            Some((_, true)) => {}
            Some((last, scheduled)) => {
                *scheduled = true;
                self.later(set, *last + self.window);
            }
            None => {
                // The trailing trigger looks again once the engine has settled: it emits `die`
                // before the container list says `exited` (the state is saved after cleanup).
                sets.insert(set.clone(), (now, true));
                self.later(set.clone(), now + self.window);
                return self.tx.send(set).is_ok();
            }
        }
        !self.tx.is_closed()
    }

    fn later(&self, set: ObjectRef<ContainerSet>, at: Instant) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            this.sets.lock().unwrap_or_else(|p| p.into_inner()).insert(set.clone(), (Instant::now(), false));
            let _ = this.tx.send(set);
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

    #[tokio::test]
    async fn the_first_trigger_goes_at_once_the_rest_fold_into_one_at_the_end_of_the_window() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let window = Duration::from_millis(100);
        let t = Throttle::new(tx, window);
        let web = ObjectRef::<ContainerSet>::new("web").within("ns");
        let api = ObjectRef::<ContainerSet>::new("api").within("ns");
        assert!(t.send(web.clone()));
        assert_eq!(rx.try_recv().ok(), Some(web.clone()), "at once");
        assert!(t.send(api.clone()));
        assert_eq!(rx.try_recv().ok(), Some(api.clone()), "another set is not held back");
        for _ in 0..5 {
            assert!(t.send(web.clone()));
        }
        assert!(rx.try_recv().is_err(), "held within the window");
        let mut trailing = Vec::new();
        while let Ok(Some(set)) = tokio::time::timeout(window * 3, rx.recv()).await {
            trailing.push(set);
        }
        trailing.sort_by_key(|s| s.name.clone());
        assert_eq!(trailing, [api, web.clone()], "one more look at each set at the end of its window");
        tokio::time::sleep(window * 2).await;
        assert!(t.send(web.clone()));
        assert_eq!(rx.try_recv().ok(), Some(web), "after a quiet window, at once again");
    }
}
