//! A Docker host in memory: applies plan steps the way the engine would, and observes itself
//! the way the Docker adapter does. The planner's laws are checked against it.
//!
//! Drift is simulated too: a container's name and image are what the list shows (so renamed
//! and wrong-image containers are marked by the same [`list_drift`] the adapter uses), and
//! [`SimContainer::drift`] stands for what the event log would mark (update, exec, cp). A
//! created container has no drift. A create that finds a container on its name does what the
//! executor does: a foreign one is stopped and renamed aside (Replace) or refused (Report);
//! berth's own of the same revision, set and ordinal is work already done; any other of berth's
//! is refused.
//!
//! Readiness can fail: a container named in [`SimHost::never_ready`] never turns ready, and
//! its `WaitReady` fails as the executor's does (unhealthy, or exited without a healthcheck).

use std::collections::{BTreeMap, BTreeSet};

use super::model::{
    ContainerSpec, DesiredSet, Drift, DriftPolicy, Health, HostBinding, NameHolder, ObservedContainer, SetKey, State,
    labels, list_drift, squatter_name,
};
use super::plan::{HostPlan, Step};

/// One container on the simulated host.
#[derive(Clone, Debug)]
pub struct SimContainer {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: State,
    pub health: Option<Health>,
    pub has_healthcheck: bool,
    /// The image it runs, as the list shows it.
    pub image: String,
    /// Drift only the event stream would show (update, exec, cp).
    pub drift: Option<Drift>,
    /// How it exited, once it did.
    pub exit_code: Option<i64>,
}

/// A host in memory.
#[derive(Clone, Debug, Default)]
pub struct SimHost {
    pub containers: Vec<SimContainer>,
    pub volumes: BTreeSet<String>,
    pub networks: BTreeSet<String>,
    pub images: BTreeSet<String>,
    /// Names whose container never turns ready: `WaitReady` on one fails.
    pub never_ready: BTreeSet<String>,
    next_id: u64,
}

/// What a simulated step can fail with: the same conditions the real engine refuses.
#[derive(Debug, PartialEq, Eq)]
pub enum SimError {
    /// A container of berth's other than this create's (another revision, set or ordinal)
    /// holds the name: the executor's `NameTaken`.
    NameTaken(String),
    /// `Rename` onto a name another container holds.
    NameInUse(String),
    NoSuchContainer(String),
    RemoveRunning(String),
    UnknownSet(String),
    /// A foreign container holds the name, and the set's drift policy is Report.
    Squatter(String),
    /// The container did not turn ready (it is in [`SimHost::never_ready`]).
    NotReady(String),
}

impl SimHost {
    /// Observe, as the adapter's one label-filtered list does.
    pub fn observe(&self) -> Vec<ObservedContainer> {
        self.containers
            .iter()
            .filter(|c| c.labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGED_BY_VALUE))
            .map(|c| {
                let set = SetKey::new(
                    c.labels.get(labels::NAMESPACE).cloned().unwrap_or_default(),
                    c.labels.get(labels::SET).cloned().unwrap_or_default(),
                );
                let revision = c.labels.get(labels::REVISION).cloned().unwrap_or_default();
                let ordinal = c.labels.get(labels::ORDINAL).and_then(|o| o.parse().ok());
                let spec_json = c.labels.get(labels::SPEC).cloned();
                let drift = list_drift(&set, &revision, ordinal, &c.name, &c.image, spec_json.as_deref()).or(c.drift);
                ObservedContainer {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    set,
                    revision,
                    ordinal,
                    state: c.state,
                    health: c.health,
                    image: c.image.clone(),
                    spec_json,
                    host_bindings: c
                        .labels
                        .get(labels::HOST_PORTS)
                        .map(|s| s.split(',').filter_map(HostBinding::parse).collect())
                        .unwrap_or_default(),
                    drift,
                    exit_code: c.exit_code,
                }
            })
            .collect()
    }

    /// Ready containers of a set (running, healthy if checked).
    pub fn ready_count(&self, set: &SetKey) -> usize {
        self.observe().iter().filter(|c| &c.set == set && c.is_ready()).count()
    }

    /// Add a container as if made by an earlier berth run (or by a person, with other labels).
    pub fn add_container(
        &mut self,
        name: &str,
        labels: BTreeMap<String, String>,
        state: State,
        health: Option<Health>,
    ) {
        self.next_id += 1;
        let has_healthcheck = health.is_some();
        // It runs the image its spec label names, as a container berth created does.
        let image = labels
            .get(labels::SPEC)
            .and_then(|j| serde_json::from_str::<ContainerSpec>(j).ok())
            .map(|s| s.image)
            .unwrap_or_else(|| "example/other:1".to_string());
        self.containers.push(SimContainer {
            id: format!("sim{:06}", self.next_id),
            name: name.to_string(),
            labels,
            state,
            health,
            has_healthcheck,
            image,
            drift: None,
            exit_code: None,
        });
    }

    /// Apply one step. `sets` provides what `Create` needs (the real executor has the same).
    pub fn apply(&mut self, step: &Step, sets: &[DesiredSet], set: &SetKey) -> Result<(), SimError> {
        match step {
            Step::EnsureNetwork { name } => {
                self.networks.insert(name.clone());
            }
            Step::EnsureVolume { name } => {
                self.volumes.insert(name.clone());
            }
            Step::EnsureImage { image, .. } => {
                self.images.insert(image.clone());
            }
            Step::Create { name, ordinal } => {
                let d = sets.iter().find(|d| &d.key == set).ok_or_else(|| SimError::UnknownSet(set.to_string()))?;
                if let Some(c) = self.containers.iter_mut().find(|c| &c.name == name) {
                    match d.name_holder(*ordinal, |k| c.labels.get(k).map(String::as_str)) {
                        NameHolder::ThisContainer => return Ok(()),
                        NameHolder::OtherOfBerths => return Err(SimError::NameTaken(name.clone())),
                        NameHolder::Foreign => {}
                    }
                    if d.drift_policy == DriftPolicy::Report {
                        return Err(SimError::Squatter(name.clone()));
                    }
                    // As the executor does: stopped and renamed aside, never removed.
                    c.name = squatter_name(name, &c.id);
                    (c.state, c.health, c.exit_code) = (State::Exited, None, Some(137));
                }
                let hc = d.spec.healthcheck.is_some();
                self.add_container(name, d.container_labels(*ordinal), State::Created, None);
                self.containers.last_mut().unwrap().has_healthcheck = hc;
            }
            Step::Start { name } => {
                let c = self.by_name(name)?;
                c.state = State::Running;
                c.exit_code = None;
                c.health = c.has_healthcheck.then_some(Health::Starting);
            }
            Step::WaitReady { name } => {
                // The simulated healthcheck passes at once, unless the test said it never does.
                let never = self.never_ready.contains(name);
                let c = self.by_name(name)?;
                if never {
                    // As the engine shows a container that fails: unhealthy, or exited.
                    if c.has_healthcheck {
                        c.health = Some(Health::Unhealthy);
                    } else {
                        (c.state, c.health, c.exit_code) = (State::Exited, None, Some(1));
                    }
                    return Err(SimError::NotReady(name.clone()));
                }
                if c.state == State::Running && c.has_healthcheck && c.health == Some(Health::Starting) {
                    c.health = Some(Health::Healthy);
                }
            }
            Step::WaitExit { name } => {
                // A simulated task completes at once, unless the test said it never does.
                let fails = self.never_ready.contains(name);
                let c = self.by_name(name)?;
                if !matches!(c.state, State::Running | State::Restarting | State::Exited) {
                    return Err(SimError::NotReady(name.clone()));
                }
                if c.state != State::Exited {
                    (c.state, c.health, c.exit_code) = (State::Exited, None, Some(if fails { 1 } else { 0 }));
                }
                if c.exit_code != Some(0) {
                    return Err(SimError::NotReady(name.clone()));
                }
            }
            Step::Rename { id, to, .. } => {
                if self.containers.iter().any(|c| &c.name == to && &c.id != id) {
                    return Err(SimError::NameInUse(to.clone()));
                }
                // Gone already is success, as in the executor.
                if let Some(c) = self.containers.iter_mut().find(|c| &c.id == id) {
                    c.name = to.clone();
                }
            }
            Step::Stop { id, .. } => {
                let c = self.by_id(id)?;
                if c.state != State::Exited {
                    (c.state, c.health, c.exit_code) = (State::Exited, None, Some(137));
                }
            }
            Step::Remove { id, .. } => {
                let i = self
                    .containers
                    .iter()
                    .position(|c| &c.id == id)
                    .ok_or_else(|| SimError::NoSuchContainer(id.clone()))?;
                if self.containers[i].state == State::Running {
                    return Err(SimError::RemoveRunning(id.clone()));
                }
                self.containers.remove(i);
            }
        }
        Ok(())
    }

    /// Apply a whole plan, sets and changes in order.
    pub fn apply_plan(&mut self, plan: &HostPlan, sets: &[DesiredSet]) -> Result<(), SimError> {
        for sp in &plan.sets {
            for s in &sp.prepare {
                self.apply(s, sets, &sp.set)?;
            }
            for ch in &sp.changes {
                for s in &ch.steps {
                    self.apply(s, sets, &sp.set)?;
                }
            }
        }
        Ok(())
    }

    /// A container berth did not make, holding `name` (a squatter).
    pub fn add_foreign(&mut self, name: &str, running: bool) {
        let labels = BTreeMap::from([("com.example.owner".to_string(), "ops".to_string())]);
        let state = if running { State::Running } else { State::Exited };
        self.add_container(name, labels, state, None);
    }

    fn by_name(&mut self, name: &str) -> Result<&mut SimContainer, SimError> {
        self.containers.iter_mut().find(|c| c.name == name).ok_or_else(|| SimError::NoSuchContainer(name.to_string()))
    }

    fn by_id(&mut self, id: &str) -> Result<&mut SimContainer, SimError> {
        self.containers.iter_mut().find(|c| c.id == id).ok_or_else(|| SimError::NoSuchContainer(id.to_string()))
    }
}
