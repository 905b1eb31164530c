//! The planner: `(desired, observed) -> Plan`, a pure function.
//!
//! For one host it compares the sets that should run there with the managed containers the
//! host reported, and produces the steps that make the host match. It never mutates: a
//! container of another revision is replaced by a new container, never changed.
//!
//! Laws (checked by property tests in `engine::laws`):
//! - the plan of a converged host is empty;
//! - applying a plan to a simulated host and planning again gives the empty plan;
//! - under StartFirst, no ready container is stopped before its replacement is ready;
//! - under StopFirst, no container is stopped before its replacement is created;
//! - no plan removes a named volume.
//!
//! Tasks (`spec.mode: Task`) are planned by [`plan_task`]: a container per ordinal that runs to
//! completion once per revision; their laws are in `engine::task_laws`.
//!
//! Drift: a container of the desired revision that drifted (renamed, updated, exec'd or copied
//! into, running another image, stopped) is replaced by a fresh container of the same revision
//! under [`DriftPolicy::Replace`]; under [`DriftPolicy::Report`] it is left exactly as it is and
//! the plan lists it in [`HostPlan::drifted`], with no change for it. Containers of an old
//! revision are replaced for that reason alone, drifted or not.
//!
//! A drifted replacement keeps the set's order: under StartFirst a live drifted container that
//! holds the deterministic name is renamed aside ([`drifted_name`]), its replacement is created
//! under the name and waited ready, and only then is it stopped and removed. A fixed hostPort
//! it publishes forces StopFirst (the copy binds the same port), as for a revision change. A
//! drifted container that serves nothing (exited, dead, created) goes first.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::diff::{FieldChange, diff_specs};
use super::model::{
    ContainerSpec, DesiredSet, Drift, DriftPolicy, DriftReport, ObservedContainer, Order, Pull, SetKey, State,
    drifted_name,
};

/// Which sets this run owns. A managed container of an owned set that is not desired on the
/// host is removed; containers of sets outside the scope are never touched.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub sets: BTreeSet<SetKey>,
    /// Every set in these namespaces is owned (`apply --prune`).
    pub namespaces: BTreeSet<String>,
}

impl Scope {
    pub fn owns(&self, set: &SetKey) -> bool {
        self.sets.contains(set) || self.namespaces.contains(&set.namespace)
    }

    /// A scope owning exactly the given sets.
    pub fn of_sets<'a>(sets: impl IntoIterator<Item = &'a SetKey>) -> Scope {
        Scope { sets: sets.into_iter().cloned().collect(), namespaces: BTreeSet::new() }
    }
}

/// One Docker operation. The executor runs a change's steps in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "camelCase")]
pub enum Step {
    /// Create the user-defined bridge network unless it exists.
    EnsureNetwork {
        name: String,
    },
    /// Create the named volume unless it exists. There is no step that removes one.
    EnsureVolume {
        name: String,
    },
    /// Make the image present per the pull policy.
    EnsureImage {
        image: String,
        pull: Pull,
    },
    /// Create the container (a name conflict with a container of the same labels is success).
    Create {
        name: String,
        ordinal: u32,
    },
    Start {
        name: String,
    },
    /// Wait until running and, with a healthcheck, healthy.
    WaitReady {
        name: String,
    },
    /// Wait until a task's container exits; exit code 0 completes it, any other fails it.
    WaitExit {
        name: String,
    },
    Stop {
        id: String,
        name: String,
    },
    /// Rename a container (a drifted one, aside, so its replacement can take its name while it
    /// still serves). Gone already is success.
    Rename {
        id: String,
        from: String,
        to: String,
    },
    Remove {
        id: String,
        name: String,
    },
}

impl Step {
    /// The step's kind, as in its JSON tag: `create`, `waitReady`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Step::EnsureNetwork { .. } => "ensureNetwork",
            Step::EnsureVolume { .. } => "ensureVolume",
            Step::EnsureImage { .. } => "ensureImage",
            Step::Create { .. } => "create",
            Step::Start { .. } => "start",
            Step::WaitReady { .. } => "waitReady",
            Step::WaitExit { .. } => "waitExit",
            Step::Stop { .. } => "stop",
            Step::Rename { .. } => "rename",
            Step::Remove { .. } => "remove",
        }
    }
}

/// Why a container is replaced or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Reason {
    /// The template changed; these fields differ (empty when the old spec is unreadable).
    SpecChanged { from_revision: String, fields: Vec<FieldChange> },
    /// A container of the current revision is not running (killed, stopped, dead).
    NotRunning { state: State },
    /// The ordinal is beyond `replicasPerHost`.
    ScaledDown,
    /// The set is no longer declared, or no longer placed on this host.
    NotDesired,
    /// A second container claims the same ordinal.
    Duplicate,
    /// The container of the current revision drifted (driftPolicy Replace).
    Drifted { drift: Drift },
    /// A task's container of the current revision did not complete (it failed, or was
    /// stopped): it runs again, unless the history holds the revision.
    TaskFailed { state: State, exit_code: Option<i64> },
    /// A task's container of an earlier revision: the current revision completed.
    TaskDone { revision: String },
}

/// What happens to one ordinal of a set on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    Create,
    /// Start a container that was created but never started (a crash between the two).
    Start,
    /// Finish a replacement whose new container already runs: wait for it, remove the old.
    Complete,
    Replace {
        reasons: Vec<Reason>,
    },
    Remove {
        reason: Reason,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// `None` for a container whose ordinal label is unreadable.
    pub ordinal: Option<u32>,
    /// The container this change ends with (or removes).
    pub container: String,
    #[serde(flatten)]
    pub action: Action,
    pub steps: Vec<Step>,
}

/// The changes of one set on one host.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetPlan {
    pub set: SetKey,
    /// The desired revision; `None` when the set's containers are only removed.
    pub revision: Option<String>,
    /// The order replacements use; StopFirst is forced when a host port would collide.
    pub order: Order,
    /// Why StopFirst was forced, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forced_stop_first: Option<String>,
    /// Networks, volumes and image, before any change.
    pub prepare: Vec<Step>,
    pub changes: Vec<Change>,
    /// Replacements run one at a time (StopFirst), so one ordinal at most is down.
    pub sequential: bool,
    /// Only removals, of containers holding host ports that another set on this host binds:
    /// the executor finishes these sets before it starts any other (a port that moves from
    /// one set to another is freed before it is bound).
    pub frees_ports: bool,
}

/// The changes on one host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostPlan {
    pub host: String,
    pub sets: Vec<SetPlan>,
    /// Drifted containers of the desired revisions: replaced by this plan, or (driftPolicy
    /// Report) left as they are. Sorted by set and container.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drifted: Vec<DriftReport>,
}

impl HostPlan {
    /// No change to make. Drift that is only reported is no change.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    pub fn change_count(&self) -> usize {
        self.sets.iter().map(|s| s.changes.len()).sum()
    }
}

/// Plan one host: `desired` are the sets placed on it, `observed` its managed containers.
pub fn plan_host(host: &str, desired: &[DesiredSet], observed: &[ObservedContainer], scope: &Scope) -> HostPlan {
    let mut by_set: BTreeMap<&SetKey, Vec<&ObservedContainer>> = BTreeMap::new();
    for c in observed {
        by_set.entry(&c.set).or_default().push(c);
    }
    // The plan must not depend on the order the host happens to list its containers in.
    for containers in by_set.values_mut() {
        containers.sort_by(|a, b| {
            (a.ordinal.is_none(), a.ordinal, &a.name, &a.id).cmp(&(b.ordinal.is_none(), b.ordinal, &b.name, &b.id))
        });
    }
    let mut sets = Vec::new();
    let mut drifted = Vec::new();
    let desired_keys: BTreeSet<&SetKey> = desired.iter().map(|d| &d.key).collect();
    for d in desired {
        let containers = by_set.get(&d.key).map(Vec::as_slice).unwrap_or(&[]);
        sets.extend(plan_set(d, containers, &mut drifted));
    }
    drifted.sort();
    // Owned sets with containers here that should no longer run here.
    for (key, containers) in &by_set {
        if desired_keys.contains(key) || !scope.owns(key) {
            continue;
        }
        let changes = containers.iter().map(|c| remove(c, Reason::NotDesired)).collect();
        sets.push(SetPlan {
            set: (*key).clone(),
            revision: None,
            order: Order::StopFirst,
            forced_stop_first: None,
            prepare: Vec::new(),
            changes,
            sequential: false,
            frees_ports: false,
        });
    }
    mark_port_freeing(&mut sets, desired, &by_set);
    // Port-freeing sets first, as the executor runs them.
    sets.sort_by_key(|s| !s.frees_ports);
    HostPlan { host: host.to_string(), sets, drifted }
}

/// Flag the removal-only set plans whose containers hold a host port another desired set
/// binds here.
fn mark_port_freeing(
    sets: &mut [SetPlan],
    desired: &[DesiredSet],
    by_set: &BTreeMap<&SetKey, Vec<&ObservedContainer>>,
) {
    for sp in sets.iter_mut() {
        if !sp.changes.iter().all(|c| matches!(c.action, Action::Remove { .. })) {
            continue;
        }
        let held: Vec<_> = by_set.get(&sp.set).into_iter().flatten().flat_map(|c| c.host_bindings.iter()).collect();
        sp.frees_ports = desired
            .iter()
            .filter(|d| d.key != sp.set)
            .flat_map(|d| d.spec.host_bindings())
            .any(|wanted| held.iter().any(|h| h.overlaps(&wanted)));
    }
}

fn remove(c: &ObservedContainer, reason: Reason) -> Change {
    Change {
        ordinal: c.ordinal,
        container: c.name.clone(),
        action: Action::Remove { reason },
        steps: stop_and_remove(c),
    }
}

fn stop_and_remove(c: &ObservedContainer) -> Vec<Step> {
    let mut steps = Vec::with_capacity(2);
    if matches!(c.state, State::Running | State::Restarting | State::Paused) {
        steps.push(Step::Stop { id: c.id.clone(), name: c.name.clone() });
    }
    if c.state != State::Removing {
        steps.push(Step::Remove { id: c.id.clone(), name: c.name.clone() });
    }
    steps
}

/// A live container of the desired revision, on a kept ordinal, that drifted and is to be
/// replaced: its copy would publish the same host ports while it still runs.
pub(crate) fn replaced_while_serving(d: &DesiredSet, c: &ObservedContainer) -> bool {
    c.revision == d.revision
        && d.drift_policy == DriftPolicy::Replace
        && c.ordinal.is_some_and(|o| o < d.replicas)
        && c.drift_kind().is_some()
        && is_live(c)
}

/// Running (or about to run again): it may serve, and it holds its host ports.
fn is_live(c: &ObservedContainer) -> bool {
    matches!(c.state, State::Running | State::Restarting | State::Paused)
}

fn create_and_start(d: &DesiredSet, ordinal: u32) -> Vec<Step> {
    let name = d.container_name(ordinal);
    vec![Step::Create { name: name.clone(), ordinal }, Step::Start { name: name.clone() }, Step::WaitReady { name }]
}

/// The set's plan on one host, `None` when nothing changes. `containers` are sorted by ordinal
/// (those without one last), as [`plan_host`] sorts them.
fn plan_set(d: &DesiredSet, containers: &[&ObservedContainer], drifted: &mut Vec<DriftReport>) -> Option<SetPlan> {
    if d.spec.task {
        return plan_task(d, containers);
    }
    debug_assert!(containers.is_sorted_by_key(|c| (c.ordinal.is_none(), c.ordinal)));
    let mut changes = Vec::new();
    for c in containers {
        match c.ordinal {
            Some(o) if o < d.replicas => {}
            Some(_) => changes.push(remove(c, Reason::ScaledDown)),
            None => changes.push(remove(c, Reason::Duplicate)),
        }
    }

    // StopFirst is forced when an old container publishes a host port the new one needs: one
    // of another revision, or a live drifted one of this revision that is to be replaced.
    let new_bindings = d.spec.host_bindings();
    let mut forced_stop_first = None;
    if d.order == Order::StartFirst {
        'outer: for c in containers.iter().filter(|c| c.revision != d.revision || replaced_while_serving(d, c)) {
            for b in &c.host_bindings {
                if new_bindings.iter().any(|n| n.overlaps(b)) {
                    forced_stop_first = Some(format!(
                        "hostPort {b} is fixed: the old container must stop before the new one can bind it"
                    ));
                    break 'outer;
                }
            }
        }
    }
    // A data volume has one writer: unless the user chose StartFirst, a replacement of a live
    // container of a set that mounts a named volume read-write stops the old one first.
    if d.order == Order::StartFirst
        && !d.order_declared
        && forced_stop_first.is_none()
        && let Some(volume) = d.writable_volume()
        && containers.iter().any(|c| is_live(c) && (c.revision != d.revision || replaced_while_serving(d, c)))
    {
        forced_stop_first = Some(format!(
            "volume {volume} is mounted read-write: two containers must not write it at once \
             (strategy.type: StartFirst allows it)"
        ));
    }
    let order = if forced_stop_first.is_some() { Order::StopFirst } else { d.order };

    // The containers of each ordinal are a run of the sorted slice: walk it once.
    let mut at = 0;
    for ordinal in 0..d.replicas {
        let start = at;
        while containers.get(at).is_some_and(|c| c.ordinal == Some(ordinal)) {
            at += 1;
        }
        changes.extend(plan_ordinal(d, ordinal, &containers[start..at], order, drifted));
    }
    if changes.is_empty() {
        return None;
    }

    Some(set_plan(d, changes, order, forced_stop_first))
}

/// The set's plan from its changes: networks, volumes and image prepared when it creates.
fn set_plan(d: &DesiredSet, mut changes: Vec<Change>, order: Order, forced_stop_first: Option<String>) -> SetPlan {
    let creates = changes.iter().any(|c| c.steps.iter().any(|s| matches!(s, Step::Create { .. })));
    let mut prepare = Vec::new();
    if creates {
        for name in d.networks() {
            prepare.push(Step::EnsureNetwork { name });
        }
        for v in d.spec.volumes() {
            prepare.push(Step::EnsureVolume { name: v });
        }
        prepare.push(Step::EnsureImage { image: d.spec.image.clone(), pull: d.pull });
    }
    changes.sort_by(|a, b| {
        (a.ordinal.is_none(), a.ordinal, &a.container).cmp(&(b.ordinal.is_none(), b.ordinal, &b.container))
    });
    SetPlan {
        set: d.key.clone(),
        revision: Some(d.revision.clone()),
        order,
        forced_stop_first,
        prepare,
        changes,
        sequential: order == Order::StopFirst,
        frees_ports: false,
    }
}

/// A task's plan on one host: each ordinal runs to completion once per revision.
///
/// A task's container is judged by how it ended, not by drift: a completed one (exited 0)
/// stays, so `berth logs` shows its output, until a later revision of the task completed; a
/// running one is waited for, never stopped (stopping a migration half-way is the harm to
/// avoid); one that failed runs again, unless the history holds its revision (the fleet runner
/// drops a held task's plan); none at all runs, unless the history records the revision
/// completed on this host ([`DesiredSet::task_completed`]). Containers of earlier revisions
/// are removed once the current one completed, and never while they run.
fn plan_task(d: &DesiredSet, containers: &[&ObservedContainer]) -> Option<SetPlan> {
    let mut changes = Vec::new();
    for c in containers {
        match c.ordinal {
            Some(o) if o < d.replicas => {}
            Some(_) => changes.push(remove(c, Reason::ScaledDown)),
            None => changes.push(remove(c, Reason::Duplicate)),
        }
    }
    let mut at = 0;
    for ordinal in 0..d.replicas {
        let start = at;
        while containers.get(at).is_some_and(|c| c.ordinal == Some(ordinal)) {
            at += 1;
        }
        changes.extend(plan_task_ordinal(d, ordinal, &containers[start..at]));
    }
    (!changes.is_empty()).then(|| set_plan(d, changes, d.order, None))
}

fn plan_task_ordinal(d: &DesiredSet, ordinal: u32, here: &[&ObservedContainer]) -> Vec<Change> {
    let name = d.container_name(ordinal);
    // A container being removed is gone already: not a failed run (it may have completed).
    let (mut current, old): (Vec<&ObservedContainer>, Vec<&ObservedContainer>) =
        here.iter().filter(|c| c.state != State::Removing).partition(|c| c.revision == d.revision);
    // The one that counts: under its name, and the furthest along (completed, running, created).
    current.sort_by_key(|c| {
        (
            c.name != name,
            !c.completed(),
            !matches!(c.state, State::Running | State::Restarting),
            c.state != State::Created,
        )
    });
    let mut changes: Vec<Change> = current.iter().skip(1).map(|c| remove(c, Reason::Duplicate)).collect();
    let olds = |changes: &mut Vec<Change>| {
        for c in &old {
            changes.push(remove(c, Reason::TaskDone { revision: d.revision.clone() }));
        }
    };
    // Earlier revisions that still run are left to finish: a task is never stopped half-way.
    if old.iter().any(|c| matches!(c.state, State::Running | State::Restarting)) {
        return changes;
    }
    match current.first() {
        Some(c) if c.completed() => olds(&mut changes),
        None if d.task_completed => olds(&mut changes),
        Some(c) if matches!(c.state, State::Running | State::Restarting) => {
            let mut steps = vec![Step::WaitExit { name: c.name.clone() }];
            old.iter().for_each(|o| steps.extend(stop_and_remove(o)));
            changes.push(Change { ordinal: Some(ordinal), container: c.name.clone(), action: Action::Complete, steps });
        }
        Some(c) if c.state == State::Created && c.name == name => {
            let mut steps = vec![Step::Start { name: name.clone() }, Step::WaitExit { name: name.clone() }];
            old.iter().for_each(|o| steps.extend(stop_and_remove(o)));
            changes.push(Change { ordinal: Some(ordinal), container: name, action: Action::Start, steps });
        }
        current => {
            let mut reasons: Vec<Reason> = old.iter().map(|c| spec_changed(d, c)).collect();
            let mut steps = Vec::new();
            if let Some(c) = current {
                reasons.insert(0, Reason::TaskFailed { state: c.state, exit_code: c.exit_code });
                steps.extend(stop_and_remove(c));
            }
            steps.extend([
                Step::Create { name: name.clone(), ordinal },
                Step::Start { name: name.clone() },
                Step::WaitExit { name: name.clone() },
            ]);
            old.iter().for_each(|o| steps.extend(stop_and_remove(o)));
            let action = if reasons.is_empty() { Action::Create } else { Action::Replace { reasons } };
            changes.push(Change { ordinal: Some(ordinal), container: name, action, steps });
        }
    }
    changes
}

/// One ordinal: `here` are the containers that carry it, of any revision. Drift of the
/// container of the desired revision is noted in `drifted`.
fn plan_ordinal(
    d: &DesiredSet,
    ordinal: u32,
    here: &[&ObservedContainer],
    order: Order,
    drifted: &mut Vec<DriftReport>,
) -> Vec<Change> {
    // The common case, a converged ordinal: its one container, of this revision, running, no
    // drift. What the general path below decides for it too, without allocating.
    if let [c] = here
        && c.revision == d.revision
        && c.drift_kind().is_none()
        && matches!(c.state, State::Running | State::Restarting)
    {
        return Vec::new();
    }
    let name = d.container_name(ordinal);
    let (mut current, old): (Vec<&ObservedContainer>, Vec<&ObservedContainer>) =
        here.iter().partition(|c| c.revision == d.revision);
    // Prefer the container with the expected name; any other of the same revision is extra.
    current.sort_by_key(|c| (c.name != name, c.state != State::Running, c.drift_kind().is_some()));
    let extra: Vec<&ObservedContainer> = current.iter().skip(1).copied().collect();
    let current = current.first().copied();

    let mut steps = Vec::new();
    let mut reasons = Vec::new();
    let old_live: Vec<&ObservedContainer> = old.iter().copied().chain(extra.iter().copied()).collect();
    for c in &old {
        reasons.push(spec_changed(d, c));
    }
    if !extra.is_empty() {
        reasons.push(Reason::Duplicate);
    }
    let drift = current.and_then(|c| c.drift_kind().map(|k| (c, k)));
    let report = d.drift_policy == DriftPolicy::Report;
    if let Some((c, kind)) = drift {
        drifted.push(DriftReport {
            set: d.key.clone(),
            container: c.name.clone(),
            id: c.id.clone(),
            kind,
            replaced: !report,
        });
    }

    let action = match current {
        Some(_) if report && drift.is_some() => {
            // Left exactly as it is, for a person to look at; only what is not it goes.
            let mut changes: Vec<Change> = old.iter().map(|c| remove(c, spec_changed(d, c))).collect();
            changes.extend(extra.iter().map(|c| remove(c, Reason::Duplicate)));
            return changes;
        }
        Some(c) if drift.is_none() && matches!(c.state, State::Running | State::Restarting) => {
            if old_live.is_empty() {
                return Vec::new();
            }
            // A replacement was interrupted after the new container started.
            steps.push(Step::WaitReady { name: c.name.clone() });
            old_live.iter().for_each(|c| steps.extend(stop_and_remove(c)));
            Action::Complete
        }
        Some(c) if drift.is_none() && c.state == State::Created && old_live.is_empty() => {
            steps.push(Step::Start { name: c.name.clone() });
            steps.push(Step::WaitReady { name: c.name.clone() });
            Action::Start
        }
        Some(c) if drift.is_none() && c.state == State::Created => {
            // Created but never started, next to an old container: start it in place.
            let mut s = vec![Step::Start { name: c.name.clone() }, Step::WaitReady { name: c.name.clone() }];
            let olds: Vec<Step> = old_live.iter().flat_map(|c| stop_and_remove(c)).collect();
            if order == Order::StartFirst {
                s.extend(olds);
            } else {
                s.splice(0..0, olds);
            }
            return vec![Change {
                ordinal: Some(ordinal),
                container: name,
                action: Action::Replace { reasons },
                steps: s,
            }];
        }
        _ => {
            // Nothing usable of the current revision: (re)create it.
            let (mut dead_before, mut dead_after) = (Vec::new(), Vec::new());
            if let Some(c) = current {
                reasons.insert(
                    0,
                    match c.drift {
                        Some(kind) => Reason::Drifted { drift: kind },
                        None => Reason::NotRunning { state: c.state },
                    },
                );
                // Under StartFirst a live drifted container serves until its copy is ready: one
                // holding the name is renamed aside first; a renamed one (by a person, or aside
                // by a berth that stopped there) no longer holds it. A host port it publishes
                // forced StopFirst above. One that serves nothing goes first.
                if is_live(c) && order == Order::StartFirst {
                    if c.name == name {
                        let aside = drifted_name(&name, &c.id);
                        steps.push(Step::Rename { id: c.id.clone(), from: c.name.clone(), to: aside.clone() });
                        dead_after = stop_and_remove(&ObservedContainer { name: aside, ..(*c).clone() });
                    } else {
                        dead_after = stop_and_remove(c);
                    }
                } else {
                    dead_before = stop_and_remove(c);
                }
            }
            let olds: Vec<Step> = old_live.iter().flat_map(|c| stop_and_remove(c)).collect();
            steps.extend(dead_before);
            match order {
                Order::StartFirst => {
                    steps.extend(create_and_start(d, ordinal));
                    steps.extend(dead_after);
                    steps.extend(olds);
                }
                Order::StopFirst => {
                    // Created before the old ones stop (creating binds no port; starting
                    // does): a create the engine refuses (disk full, a config it rejects)
                    // then leaves them serving instead of leaving the ordinal down.
                    let mut create = create_and_start(d, ordinal);
                    let start_and_wait = create.split_off(1);
                    steps.extend(create);
                    steps.extend(olds);
                    steps.extend(start_and_wait);
                    steps.extend(dead_after);
                }
            }
            if reasons.is_empty() { Action::Create } else { Action::Replace { reasons } }
        }
    };
    vec![Change { ordinal: Some(ordinal), container: name, action, steps }]
}

fn spec_changed(d: &DesiredSet, old: &ObservedContainer) -> Reason {
    let fields = old
        .spec_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<ContainerSpec>(j).ok())
        .map(|old_spec| diff_specs(&old_spec, &d.spec))
        .unwrap_or_default();
    Reason::SpecChanged { from_revision: old.revision.clone(), fields }
}
