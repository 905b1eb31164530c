//! The planner's laws, checked by property tests against [`SimHost`], a Docker host in memory.
//!
//! [`plan_host`] is a pure function, so what it promises can be written down as laws and
//! checked over many random worlds. A world is a host onto which an earlier random desired
//! state was converged (through the planner and the simulated host), then disturbed the way
//! real hosts get disturbed: a container removed; one exited, dead, paused or created but
//! never started; a stray container of an old revision on an occupied ordinal; a container
//! berth did not make; a container whose ordinal label is garbled; an earlier apply that
//! crashed part-way; drift: a container renamed, `docker update`d, exec'd or copied into,
//! running another image than its spec's, or removed with a foreign container put on its name
//! (a squatter). A new random desired state (each set with a drift policy, Replace or Report)
//! and scope are then planned against it.
//!
//! The laws, one test each:
//! 1. **Idempotence**: a converged host plans to nothing, and planning is deterministic, even
//!    in the order the host happens to list its containers.
//! 2. **Convergence**: one plan, applied once (in order, or interleaved as the executor runs
//!    changes concurrently), converges; the host refuses none of its steps. Drift: one apply
//!    clears all drift of Replace sets; the drifted containers of Report sets are listed in the
//!    plan, no step touches them, and they are exactly as they were afterwards.
//! 3. **Result**: every desired set has exactly its replicas, of its revision, running and
//!    ready, on ordinals `0..replicas` under the deterministic names (under Report, a drifted
//!    container stands as it is in its ordinal's place); sets outside the scope and containers
//!    berth did not make are untouched, except squatters on a name berth creates, which are
//!    stopped and renamed aside, never removed; owned sets no longer desired are gone.
//! 4. **StartFirst safety**: replacing a set without host ports, its ready count never drops
//!    below `min(old replicas, new replicas)` after any single step, under any interleaving.
//!    Its StopFirst counterpart: never more than one below.
//! 5. **Nothing of value is destroyed**: volumes only ever appear, every volume a desired spec
//!    mounts exists afterwards, and `Stop`/`Remove` only target containers of owned sets.
//! 6. **Forced StopFirst**: when the old and new revision publish the same host port, the set
//!    is replaced StopFirst, the plan says which port, and every old container is stopped
//!    before its replacement is started, but only after it is created (a create the engine
//!    refuses leaves the old one serving); StopFirst is never forced without a shared port.
//! 7. **Scale down** removes the highest ordinals only; scale to 0 removes all, creates none.
//! 8. **StartFirst holds for drift**: a StartFirst set without host ports whose containers of
//!    the current revision drifted (update, exec, cp) keeps every replica ready through their
//!    replacement, under any interleaving: each drifted one is renamed aside and serves until
//!    its copy under its name is ready.
//! 9. **A replacement that never turns ready stops nothing**: when the simulated host fails
//!    the readiness wait of some new containers, the executor's rule (a failed change stops,
//!    changes of its set not yet begun are skipped) leaves a StartFirst set at least
//!    `min(old, new replicas)` ready after every step, every container the failed ones were to
//!    replace still running, and a StopFirst set at most one below.
//!
//! Beyond the sim's own refusals (name in use, no such container, removing a running one),
//! every step is checked for what a real host would also refuse: two live containers
//! publishing the same host port.
//!
//! The scenario tests at the end show the same behaviour on hand-written cases.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::diff::{FieldChange, diff_specs};
use super::model::{
    ContainerSpec, DesiredSet, Drift, DriftPolicy, DriftReport, EnvValue, Health, HealthSpec, HostBinding, MountKind,
    MountSpec, NameHolder, ObservedContainer, Order, PortSpec, Pull, SecretString, SetKey, State, labels,
    squatter_name,
};
use super::plan::{Action, HostPlan, Reason, Scope, Step, plan_host};
use super::sim::{SimError, SimHost};

const HOST: &str = "sim-1";
const CASES: u32 = 256;

/// `CASES` cases per law, unless `PROPTEST_CASES` asks for more (a deeper search).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES);
    // No regression files: a failure prints its minimal input, which belongs in a scenario test.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// The generated world

/// Two namespaces with two sets each: small enough that an earlier and a later desired state
/// often share sets.
const NAMESPACES: [&str; 2] = ["shop", "ops"];
const SET_NAMES: [&str; 2] = ["web", "worker"];
const KEYS: usize = NAMESPACES.len() * SET_NAMES.len();
const IMAGES: [&str; 2] = ["example/echo:1.0", "example/echo:1.1"];
const GREETINGS: [&str; 2] = ["hi", "hello"];
const NETWORKS: [&str; 2] = ["front", "back"];
const GARBLED: [&str; 5] = ["", "x", "-1", "4294967296", "one"];

fn key_of(i: usize) -> SetKey {
    SetKey::new(NAMESPACES[i / SET_NAMES.len()], SET_NAMES[i % SET_NAMES.len()])
}

/// Each set publishes its own host ports, so two different sets never collide.
fn host_port(key: usize, variant: u16) -> u16 {
    9000 + 10 * key as u16 + variant
}

/// The choices a container spec is built from (compact in a failure report).
#[derive(Clone, Debug, PartialEq)]
struct SpecGene {
    image: usize,
    greeting: usize,
    /// A Secret-sourced env value.
    token: Option<usize>,
    /// 0: no port; 1: container port only; 2, 3: also a host port (two variants).
    port: u8,
    /// 0: the set's own volume; 1: a volume shared by sets.
    volume: Option<usize>,
    /// A bit per network in [`NETWORKS`].
    networks: usize,
    health: bool,
}

impl SpecGene {
    fn has_host_port(&self) -> bool {
        self.port >= 2
    }

    fn build(&self, key: usize) -> ContainerSpec {
        let mut spec = ContainerSpec {
            image: IMAGES[self.image].into(),
            restart_policy: "unless-stopped".into(),
            ..ContainerSpec::default()
        };
        spec.env.insert("GREETING".into(), EnvValue::Plain(GREETINGS[self.greeting].into()));
        if let Some(t) = self.token {
            spec.env.insert("TOKEN".into(), EnvValue::Secret { value: SecretString::new(format!("token-{t}")) });
        }
        if self.port >= 1 {
            let host = self.has_host_port().then(|| host_port(key, u16::from(self.port - 2)));
            spec.ports.push(PortSpec {
                container_port: 8080,
                protocol: "tcp".into(),
                host_port: host,
                host_ip: String::new(),
            });
        }
        if let Some(v) = self.volume {
            let source =
                if v == 0 { format!("{}-data", SET_NAMES[key % SET_NAMES.len()]) } else { "shared-cache".into() };
            spec.mounts.push(MountSpec {
                kind: MountKind::Volume,
                source: Some(source),
                target: "/data".into(),
                read_only: false,
                tmpfs_size_bytes: None,
                tmpfs_mode: None,
            });
        }
        for (i, n) in NETWORKS.iter().enumerate() {
            if self.networks & (1 << i) != 0 {
                spec.networks.push((*n).into());
            }
        }
        if self.health {
            spec.healthcheck = Some(HealthSpec {
                test: vec!["CMD".into(), "/bin/echo".into(), "ok".into()],
                interval_ns: Some(1_000_000_000),
                timeout_ns: None,
                start_period_ns: None,
                retries: Some(3),
            });
        }
        spec
    }
}

/// `ports` bounds the port choice: `0..4` for any, `0..2` for no host port, `2..4` for one.
fn spec_gene(ports: std::ops::Range<u8>) -> impl Strategy<Value = SpecGene> {
    (
        0..IMAGES.len(),
        0..GREETINGS.len(),
        proptest::option::of(0..2usize),
        ports,
        proptest::option::of(0..2usize),
        0..(1usize << NETWORKS.len()),
        any::<bool>(),
    )
        .prop_map(|(image, greeting, token, port, volume, networks, health)| SpecGene {
            image,
            greeting,
            token,
            port,
            volume,
            networks,
            health,
        })
}

fn order() -> impl Strategy<Value = Order> {
    prop_oneof![Just(Order::StartFirst), Just(Order::StopFirst)]
}

/// One set as declared.
#[derive(Clone, Debug)]
struct SetGene {
    key: usize,
    spec: SpecGene,
    replicas: u32,
    order: Order,
    /// In a later desired state: keep the earlier spec of the same set (so its revision holds).
    reuse: bool,
    /// driftPolicy Report (else Replace).
    report: bool,
    /// The order is the user's (`strategy.type` given), not berth's default.
    declared: bool,
}

impl SetGene {
    fn desired(&self) -> DesiredSet {
        // Validation allows one replica per host when a host port is fixed.
        let replicas = if self.spec.has_host_port() { self.replicas.min(1) } else { self.replicas };
        let policy = if self.report { DriftPolicy::Report } else { DriftPolicy::Replace };
        let d = DesiredSet::new(key_of(self.key), self.spec.build(self.key), replicas, self.order, Pull::IfNotPresent)
            .with_drift_policy(policy);
        if self.declared { d } else { d.with_default_order() }
    }
}

/// 1–3 sets (so 1–2 namespaces), each with its own spec, 0–5 replicas and an order.
fn set_genes() -> impl Strategy<Value = Vec<SetGene>> {
    proptest::sample::subsequence((0..KEYS).collect::<Vec<_>>(), 1..=3).prop_flat_map(|keys| {
        keys.into_iter()
            .map(|key| {
                (spec_gene(0..4), 0..=5u32, order(), proptest::bool::weighted(0.5), any::<bool>(), any::<bool>())
                    .prop_map(move |(spec, replicas, order, reuse, report, declared)| SetGene {
                        key,
                        spec,
                        replicas,
                        order,
                        reuse,
                        report,
                        declared,
                    })
            })
            .collect::<Vec<_>>()
    })
}

/// Something that happens to a host between two applies. `pick` chooses a managed container.
#[derive(Clone, Debug)]
enum Disturbance {
    Remove {
        pick: usize,
    },
    SetState {
        pick: usize,
        state: State,
    },
    /// A container of an older revision claiming the ordinal of `pick`.
    DuplicateOld {
        pick: usize,
        running: bool,
    },
    /// A container without berth's labels.
    Unmanaged {
        running: bool,
    },
    /// A copy of `pick` whose ordinal label cannot be read.
    GarbledOrdinal {
        pick: usize,
        label: usize,
        running: bool,
    },
    /// `docker rename`.
    Rename {
        pick: usize,
    },
    /// What only the event stream shows: `docker update`, `exec`, `cp`.
    Event {
        pick: usize,
        drift: Drift,
    },
    /// A container that claims `pick`'s labels but runs another image.
    WrongImage {
        pick: usize,
    },
    /// `pick` removed, and a container berth did not make started on its name.
    Squatter {
        pick: usize,
        running: bool,
    },
}

fn disturbance() -> impl Strategy<Value = Disturbance> {
    let pick = 0..64usize;
    prop_oneof![
        pick.clone().prop_map(|pick| Disturbance::Remove { pick }),
        (pick.clone(), prop_oneof![Just(State::Exited), Just(State::Dead), Just(State::Created), Just(State::Paused)])
            .prop_map(|(pick, state)| Disturbance::SetState { pick, state }),
        (pick.clone(), any::<bool>()).prop_map(|(pick, running)| Disturbance::DuplicateOld { pick, running }),
        any::<bool>().prop_map(|running| Disturbance::Unmanaged { running }),
        (pick.clone(), 0..GARBLED.len(), any::<bool>())
            .prop_map(|(pick, label, running)| { Disturbance::GarbledOrdinal { pick, label, running } }),
        pick.clone().prop_map(|pick| Disturbance::Rename { pick }),
        (pick.clone(), prop_oneof![Just(Drift::Updated), Just(Drift::Exec), Just(Drift::Copied)])
            .prop_map(|(pick, drift)| Disturbance::Event { pick, drift }),
        pick.clone().prop_map(|pick| Disturbance::WrongImage { pick }),
        (pick, any::<bool>()).prop_map(|(pick, running)| Disturbance::Squatter { pick, running }),
    ]
}

/// An earlier apply that stopped after `steps` steps of a schedule chosen by `choices`: an
/// apply of the new desired state itself (`toward: None`), or of an intermediate one.
#[derive(Clone, Debug)]
struct Interrupted {
    toward: Option<Vec<SetGene>>,
    steps: usize,
    choices: Vec<usize>,
}

#[derive(Clone, Debug)]
struct Scenario {
    earlier: Vec<SetGene>,
    disturbances: Vec<Disturbance>,
    interrupted: Option<Interrupted>,
    desired: Vec<SetGene>,
    /// Sets owned beyond the desired ones, by key index.
    also_owned: Vec<bool>,
    /// Namespaces pruned (every set in them owned).
    pruned: Vec<bool>,
}

fn choices() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..1000usize, 1..32)
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        set_genes(),
        proptest::collection::vec(disturbance(), 0..=3),
        proptest::option::weighted(
            0.3,
            (proptest::option::of(set_genes()), 0..40usize, choices())
                .prop_map(|(toward, steps, choices)| Interrupted { toward, steps, choices }),
        ),
        set_genes(),
        proptest::collection::vec(any::<bool>(), KEYS),
        proptest::collection::vec(proptest::bool::weighted(0.25), NAMESPACES.len()),
    )
        .prop_map(|(earlier, disturbances, interrupted, desired, also_owned, pruned)| Scenario {
            earlier,
            disturbances,
            interrupted,
            desired,
            also_owned,
            pruned,
        })
}

/// A host with what should run on it and what this run owns.
struct World {
    host: SimHost,
    desired: Vec<DesiredSet>,
    scope: Scope,
}

impl Scenario {
    fn desired(&self) -> Vec<DesiredSet> {
        self.desired
            .iter()
            .map(|g| {
                let mut g = g.clone();
                if g.reuse
                    && let Some(e) = self.earlier.iter().find(|e| e.key == g.key)
                {
                    g.spec = e.spec.clone();
                }
                g.desired()
            })
            .collect()
    }

    fn scope(&self, desired: &[DesiredSet]) -> Scope {
        let mut scope = Scope::of_sets(desired.iter().map(|d| &d.key));
        scope.sets.extend((0..KEYS).filter(|&k| self.also_owned[k]).map(key_of));
        scope.namespaces.extend((0..NAMESPACES.len()).filter(|&n| self.pruned[n]).map(|n| NAMESPACES[n].to_string()));
        scope
    }

    fn world(&self) -> Result<World, TestCaseError> {
        let earlier: Vec<DesiredSet> = self.earlier.iter().map(SetGene::desired).collect();
        let mut host = SimHost::default();
        let rounds = converge(&mut host, &earlier, &Scope::of_sets(earlier.iter().map(|d| &d.key)), 1)
            .map_err(|e| TestCaseError::fail(format!("converging the earlier state: {e}")))?;
        prop_assert!(rounds <= 1);
        for (k, d) in self.disturbances.iter().enumerate() {
            disturb(&mut host, d, k);
        }
        let desired = self.desired();
        let scope = self.scope(&desired);
        if squatted_under_report(&host, &desired) {
            return Err(TestCaseError::reject("a squatter on a Report set's name: refused by design"));
        }
        if let Some(i) = &self.interrupted {
            let toward: Vec<DesiredSet> = match &i.toward {
                Some(genes) => genes.iter().map(SetGene::desired).collect(),
                None => desired.clone(),
            };
            if squatted_under_report(&host, &toward) {
                return Err(TestCaseError::reject("a squatter on a Report set's name: refused by design"));
            }
            let toward_scope = Scope::of_sets(toward.iter().chain(&earlier).map(|d| &d.key));
            let plan = plan_host(HOST, &toward, &host.observe(), &toward_scope);
            let steps = schedule(&plan, Some(&i.choices));
            apply_steps(&mut host, &steps[..i.steps.min(steps.len())], &toward, &mut |_| Ok(()))
                .map_err(|e| TestCaseError::fail(format!("the interrupted apply: {e}")))?;
            // Time passes before the next apply: healthchecks that were starting pass.
            for c in &mut host.containers {
                if c.state == State::Running && c.health == Some(Health::Starting) {
                    c.health = Some(Health::Healthy);
                }
            }
        }
        Ok(World { host, desired, scope })
    }
}

/// Indices of the containers carrying berth's managed-by label.
fn managed(host: &SimHost) -> Vec<usize> {
    host.containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGED_BY_VALUE))
        .map(|(i, _)| i)
        .collect()
}

fn disturb(host: &mut SimHost, d: &Disturbance, k: usize) {
    let managed = managed(host);
    let pick = |p: usize| (!managed.is_empty()).then(|| managed[p % managed.len()]);
    match *d {
        Disturbance::Remove { pick: p } => {
            if let Some(i) = pick(p) {
                host.containers.remove(i);
            }
        }
        Disturbance::SetState { pick: p, state } => {
            // Only a running container can be paused (and keep its host ports).
            if let Some(i) = pick(p)
                && (state != State::Paused || host.containers[i].state == State::Running)
            {
                let c = &mut host.containers[i];
                c.state = state;
                c.health = None;
            }
        }
        Disturbance::DuplicateOld { pick: p, running } => {
            let Some(i) = pick(p) else { return };
            let c = &host.containers[i];
            let (Some(spec), Some(ordinal)) = (
                c.labels.get(labels::SPEC).and_then(|j| serde_json::from_str::<ContainerSpec>(j).ok()),
                c.labels.get(labels::ORDINAL).and_then(|o| o.parse::<u32>().ok()),
            ) else {
                return;
            };
            let key = SetKey::new(c.labels[labels::NAMESPACE].clone(), c.labels[labels::SET].clone());
            // An image no generated spec uses: a revision that is old for sure.
            let old = DesiredSet::new(
                key,
                ContainerSpec { image: format!("example/old:{k}"), ..spec },
                1,
                Order::StopFirst,
                Pull::Never,
            );
            let name = old.container_name(ordinal);
            if host.containers.iter().any(|c| c.name == name) {
                return;
            }
            // A live copy would hold the same host port, which a real host refuses.
            let live = running && old.spec.host_bindings().is_empty();
            let hc = old.spec.healthcheck.is_some();
            let (state, health) =
                if live { (State::Running, hc.then_some(Health::Healthy)) } else { (State::Exited, None) };
            host.add_container(&name, old.container_labels(ordinal), state, health);
            host.containers.last_mut().unwrap().has_healthcheck = hc;
        }
        Disturbance::Unmanaged { running } => {
            let labels = BTreeMap::from([("com.example.owner".to_string(), "ops".to_string())]);
            let state = if running { State::Running } else { State::Exited };
            host.add_container(&format!("manual-{k}"), labels, state, None);
        }
        Disturbance::GarbledOrdinal { pick: p, label, running } => {
            let Some(i) = pick(p) else { return };
            let c = host.containers[i].clone();
            let mut labels = c.labels.clone();
            labels.insert(labels::ORDINAL.into(), GARBLED[label].into());
            let live = running && !labels.contains_key(labels::HOST_PORTS);
            let (state, health) = if live {
                (State::Running, c.has_healthcheck.then_some(Health::Healthy))
            } else {
                (State::Exited, None)
            };
            host.add_container(&format!("{}-garbled{k}", c.name), labels, state, health);
            host.containers.last_mut().unwrap().has_healthcheck = c.has_healthcheck;
        }
        Disturbance::Rename { pick: p } => {
            if let Some(i) = pick(p) {
                host.containers[i].name = format!("{}.renamed{k}", host.containers[i].name);
            }
        }
        Disturbance::Event { pick: p, drift } => {
            if let Some(i) = pick(p) {
                host.containers[i].drift.get_or_insert(drift);
            }
        }
        Disturbance::WrongImage { pick: p } => {
            if let Some(i) = pick(p) {
                host.containers[i].image = "example/wrong:1".into();
            }
        }
        Disturbance::Squatter { pick: p, running } => {
            if let Some(i) = pick(p) {
                let name = host.containers.remove(i).name;
                host.add_foreign(&name, running);
            }
        }
    }
}

fn is_managed(c: &super::sim::SimContainer) -> bool {
    c.labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGED_BY_VALUE)
}

/// Whether a foreign container holds a name that a Report set would create: the sim refuses
/// that create as the executor does, so such a world cannot converge (a scenario test checks it).
fn squatted_under_report(host: &SimHost, sets: &[DesiredSet]) -> bool {
    host.containers.iter().filter(|c| !is_managed(c)).any(|c| {
        sets.iter()
            .filter(|d| d.drift_policy == DriftPolicy::Report)
            .any(|d| (0..d.replicas).any(|o| d.container_name(o) == c.name))
    })
}

/// Foreign containers on a name one of `sets` creates (by id).
fn squatters(host: &SimHost, sets: &[DesiredSet]) -> BTreeSet<String> {
    host.containers
        .iter()
        .filter(|c| !is_managed(c) && sets.iter().any(|d| (0..d.replicas).any(|o| d.container_name(o) == c.name)))
        .map(|c| c.id.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running plans on the simulated host

/// The order steps run in. `None`: the plan's own order, set by set. `Some(choices)`: as the
/// executor may run them: every set's prepare steps first, then the changes interleaved, each
/// change's steps in order (a sequential set's changes one after another); `choices` decides
/// which change moves next.
fn schedule(plan: &HostPlan, choices: Option<&[usize]>) -> Vec<(SetKey, Step)> {
    let mut out = Vec::new();
    let Some(choices) = choices else {
        for sp in &plan.sets {
            out.extend(sp.prepare.iter().map(|s| (sp.set.clone(), s.clone())));
            for ch in &sp.changes {
                out.extend(ch.steps.iter().map(|s| (sp.set.clone(), s.clone())));
            }
        }
        return out;
    };
    // Port-freeing sets run to completion first, as the executor runs them.
    for sp in plan.sets.iter().filter(|sp| sp.frees_ports) {
        for ch in &sp.changes {
            out.extend(ch.steps.iter().map(|s| (sp.set.clone(), s.clone())));
        }
    }
    let mut queues: Vec<(SetKey, VecDeque<Step>)> = Vec::new();
    for sp in plan.sets.iter().filter(|sp| !sp.frees_ports) {
        out.extend(sp.prepare.iter().map(|s| (sp.set.clone(), s.clone())));
        if sp.sequential {
            queues.push((sp.set.clone(), sp.changes.iter().flat_map(|c| c.steps.iter().cloned()).collect()));
        } else {
            queues.extend(sp.changes.iter().map(|c| (sp.set.clone(), c.steps.iter().cloned().collect())));
        }
    }
    queues.retain(|q| !q.1.is_empty());
    let mut i = 0;
    while !queues.is_empty() {
        let c = choices.get(i % choices.len().max(1)).copied().unwrap_or(0) + i / choices.len().max(1);
        let q = c % queues.len();
        i += 1;
        let step = queues[q].1.pop_front().expect("queues are never empty");
        out.push((queues[q].0.clone(), step));
        if queues[q].1.is_empty() {
            queues.remove(q);
        }
    }
    out
}

fn host_bindings(c: &super::sim::SimContainer) -> Vec<HostBinding> {
    c.labels.get(labels::HOST_PORTS).map(|s| s.split(',').filter_map(HostBinding::parse).collect()).unwrap_or_default()
}

/// Two live containers publishing an overlapping host port: a real host refuses the second.
fn port_conflict(host: &SimHost) -> Option<String> {
    let live: Vec<_> = host
        .containers
        .iter()
        .filter(|c| matches!(c.state, State::Running | State::Paused | State::Restarting))
        .map(|c| (c, host_bindings(c)))
        .collect();
    for (i, (a, ab)) in live.iter().enumerate() {
        for (b, bb) in &live[i + 1..] {
            if let Some(x) = ab.iter().find(|x| bb.iter().any(|y| x.overlaps(y))) {
                return Some(format!("{} and {} both publish {x}", a.name, b.name));
            }
        }
    }
    None
}

/// Apply steps one by one, refusing what the sim or a real host would refuse, checking that
/// volumes only ever appear, and calling `after` after every step.
fn apply_steps(
    host: &mut SimHost,
    steps: &[(SetKey, Step)],
    sets: &[DesiredSet],
    after: &mut dyn FnMut(&SimHost) -> Result<(), String>,
) -> Result<(), String> {
    for (set, step) in steps {
        let volumes = host.volumes.clone();
        host.apply(step, sets, set).map_err(|e| format!("{set}: {step:?} refused: {e:?}"))?;
        if !host.volumes.is_superset(&volumes) {
            return Err(format!("{set}: {step:?} removed a volume"));
        }
        if let Some(conflict) = port_conflict(host) {
            return Err(format!("{set}: after {step:?}, {conflict}"));
        }
        after(host).map_err(|e| format!("{set}: after {step:?}: {e}"))?;
    }
    Ok(())
}

fn apply(host: &mut SimHost, plan: &HostPlan, sets: &[DesiredSet], choices: Option<&[usize]>) -> Result<(), String> {
    apply_steps(host, &schedule(plan, choices), sets, &mut |_| Ok(()))
}

/// Plan and apply until the plan is empty; the number of applies it took, at most `max`.
fn converge(host: &mut SimHost, desired: &[DesiredSet], scope: &Scope, max: usize) -> Result<usize, String> {
    for round in 0..=max {
        let plan = plan_host(HOST, desired, &host.observe(), scope);
        if plan.is_empty() {
            return Ok(round);
        }
        if round == max {
            return Err(format!("not converged after {max} applies; still planned: {plan:#?}"));
        }
        apply(host, &plan, desired, None)?;
    }
    unreachable!()
}

/// The same containers in another order (xorshift, so the case stays reproducible).
fn shuffled<T: Clone>(xs: &[T], seed: u64) -> Vec<T> {
    let mut out = xs.to_vec();
    let mut x = seed | 1;
    for i in (1..out.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.swap(i, (x % (i as u64 + 1)) as usize);
    }
    out
}

/// Apply `plan` in order and in the interleaving `choices` picks; after every step the set
/// has at least `floor` ready containers, and the host ends converged.
fn ready_never_below(
    host: &SimHost,
    plan: &HostPlan,
    new: &DesiredSet,
    scope: &Scope,
    floor: usize,
    choices: &[usize],
) -> Result<(), TestCaseError> {
    let desired = std::slice::from_ref(new);
    for order in [None, Some(choices)] {
        let mut h = host.clone();
        apply_steps(&mut h, &schedule(plan, order), desired, &mut |h| {
            let ready = h.ready_count(&new.key);
            if ready < floor { Err(format!("{ready} ready, fewer than {floor}")) } else { Ok(()) }
        })
        .map_err(fail)?;
        prop_assert!(plan_host(HOST, desired, &h.observe(), scope).is_empty());
    }
    Ok(())
}

/// Apply `plan` as the executor runs it when steps can fail: changes interleaved as `choices`
/// picks (one at a time for a sequential set); a change whose step fails stops there, and the
/// changes of its set not yet begun are skipped (those under way go on). `after` is called
/// after every step that succeeded. Returns the names whose readiness wait failed; any other
/// refusal is an error.
fn apply_with_failures(
    host: &mut SimHost,
    plan: &HostPlan,
    sets: &[DesiredSet],
    choices: &[usize],
    after: &mut dyn FnMut(&SimHost) -> Result<(), String>,
) -> Result<Vec<String>, String> {
    struct Queue {
        set: SetKey,
        steps: VecDeque<Step>,
        begun: bool,
    }
    let mut queues: Vec<Queue> = Vec::new();
    for sp in &plan.sets {
        for step in &sp.prepare {
            host.apply(step, sets, &sp.set).map_err(|e| format!("{}: {step:?} refused: {e:?}", sp.set))?;
        }
        if sp.sequential {
            // One change at a time: the set's changes in order, as one queue per change that
            // only becomes eligible when the one before it is done.
            let steps = sp.changes.iter().map(|c| c.steps.iter().cloned().collect::<VecDeque<_>>());
            queues.extend(steps.map(|steps| Queue { set: sp.set.clone(), steps, begun: false }));
        } else {
            queues.extend(sp.changes.iter().map(|c| Queue {
                set: sp.set.clone(),
                steps: c.steps.iter().cloned().collect(),
                begun: false,
            }));
        }
    }
    let sequential: BTreeSet<SetKey> = plan.sets.iter().filter(|sp| sp.sequential).map(|sp| sp.set.clone()).collect();
    let mut failed_sets: BTreeSet<SetKey> = BTreeSet::new();
    let mut not_ready = Vec::new();
    let mut i = 0;
    loop {
        // Skipped: changes of a failed set that have not begun. Empty queues are done.
        queues.retain(|q| !q.steps.is_empty() && (q.begun || !failed_sets.contains(&q.set)));
        // Eligible: for a sequential set only its first remaining change.
        let eligible: Vec<usize> = (0..queues.len())
            .filter(|&j| {
                !sequential.contains(&queues[j].set) || queues.iter().position(|q| q.set == queues[j].set) == Some(j)
            })
            .collect();
        if eligible.is_empty() {
            return Ok(not_ready);
        }
        let c = choices.get(i % choices.len().max(1)).copied().unwrap_or(0) + i / choices.len().max(1);
        i += 1;
        let q = &mut queues[eligible[c % eligible.len()]];
        q.begun = true;
        let step = q.steps.pop_front().expect("queues left are not empty");
        match host.apply(&step, sets, &q.set) {
            Ok(()) => {}
            Err(SimError::NotReady(name)) => {
                not_ready.push(name);
                failed_sets.insert(q.set.clone());
                q.steps.clear();
            }
            Err(e) => return Err(format!("{}: {step:?} refused: {e:?}", q.set)),
        }
        if let Some(conflict) = port_conflict(host) {
            return Err(format!("after {step:?}, {conflict}"));
        }
        after(host).map_err(|e| format!("after {step:?}: {e}"))?;
    }
}

fn fail(e: String) -> TestCaseError {
    TestCaseError::fail(e)
}

/// A container as the laws compare it before and after: id, name, state, health, labels.
type Snapshot = (String, String, State, Option<Health>, BTreeMap<String, String>);

fn snapshot(c: &super::sim::SimContainer) -> Snapshot {
    (c.id.clone(), c.name.clone(), c.state, c.health, c.labels.clone())
}

fn set_of(c: &super::sim::SimContainer) -> Option<SetKey> {
    (c.labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGED_BY_VALUE)).then(|| {
        SetKey::new(
            c.labels.get(labels::NAMESPACE).cloned().unwrap_or_default(),
            c.labels.get(labels::SET).cloned().unwrap_or_default(),
        )
    })
}

fn is_desired(desired: &[DesiredSet], key: &SetKey) -> bool {
    desired.iter().any(|d| &d.key == key)
}

/// Containers this run must not touch: not berth's (the `squatting` ids aside), or of a set
/// neither desired nor owned.
fn untouchable(world: &World, squatting: &BTreeSet<String>) -> Vec<Snapshot> {
    world
        .host
        .containers
        .iter()
        .filter(|c| !squatting.contains(&c.id))
        .filter(|c| match set_of(c) {
            None => true,
            Some(k) => !is_desired(&world.desired, &k) && !world.scope.owns(&k),
        })
        .map(snapshot)
        .collect()
}

/// The drift of the desired sets, split: Replace sets' and Report sets'.
fn drift_by_policy(plan: &HostPlan) -> (Vec<&DriftReport>, Vec<&DriftReport>) {
    plan.drifted.iter().partition(|d| d.replaced)
}

// ---------------------------------------------------------------------------------------------
// The laws

proptest! {
    #![proptest_config(config())]

    /// Law 1: a converged host plans to nothing, and the same host always plans the same,
    /// whatever order it lists its containers in.
    #[test]
    fn law1_idempotence(s in scenario(), seed in any::<u64>()) {
        let World { mut host, desired, scope } = s.world()?;
        let observed = host.observe();
        let plan = plan_host(HOST, &desired, &observed, &scope);
        prop_assert_eq!(&plan, &plan_host(HOST, &desired, &observed, &scope));
        prop_assert_eq!(&plan, &plan_host(HOST, &desired, &shuffled(&observed, seed), &scope));

        converge(&mut host, &desired, &scope, 3).map_err(fail)?;
        let observed = host.observe();
        let first = plan_host(HOST, &desired, &observed, &scope);
        prop_assert!(first.is_empty(), "a converged host planned {:#?}", first);
        // Converged means no drift of a Replace set is left; a Report set's is only listed.
        prop_assert!(first.drifted.iter().all(|d| !d.replaced), "{:#?}", first.drifted);
        prop_assert_eq!(first, plan_host(HOST, &desired, &observed, &scope));
    }

    /// Law 2: from any state, one plan applied once converges, whatever order the executor
    /// runs its changes in, and the host refuses none of its steps.
    #[test]
    fn law2_one_apply_converges(s in scenario(), choices in choices()) {
        let World { host, desired, scope } = s.world()?;
        let plan = plan_host(HOST, &desired, &host.observe(), &scope);
        let (_, reported) = drift_by_policy(&plan);
        // Under Report, no step touches a drifted container.
        for sp in &plan.sets {
            for step in sp.changes.iter().flat_map(|c| &c.steps) {
                if let Step::Stop { id, .. } | Step::Remove { id, .. } = step {
                    prop_assert!(!reported.iter().any(|d| &d.id == id), "{:?} touches a reported container", step);
                }
            }
        }
        let left: Vec<Snapshot> =
            host.containers.iter().filter(|c| reported.iter().any(|d| d.id == c.id)).map(snapshot).collect();
        for schedule in [None, Some(choices.as_slice())] {
            let mut h = host.clone();
            apply(&mut h, &plan, &desired, schedule).map_err(fail)?;
            let again = plan_host(HOST, &desired, &h.observe(), &scope);
            prop_assert!(again.is_empty(), "after applying {:#?}\n({:?}) the plan is still {:#?}", plan, schedule, again);
            // One apply clears all drift under Replace; Report's is exactly as it was.
            let (replaced, still_reported) = drift_by_policy(&again);
            prop_assert!(replaced.is_empty(), "drift left after one apply: {:#?}", replaced);
            prop_assert_eq!(still_reported, reported.clone());
            let after: Vec<Snapshot> = h.containers.iter().filter(|c| reported.iter().any(|d| d.id == c.id)).map(snapshot).collect();
            prop_assert_eq!(&after, &left);
        }
    }

    /// Law 3: after convergence every desired set is exactly as declared, untouchable
    /// containers are as they were, and owned sets no longer desired are gone.
    #[test]
    fn law3_result_is_what_was_declared(s in scenario()) {
        let mut world = s.world()?;
        let squatting_ids = squatters(&world.host, &world.desired);
        let before = untouchable(&world, &squatting_ids);
        let squatting: Vec<(String, String)> = world
            .host
            .containers
            .iter()
            .filter(|c| squatting_ids.contains(&c.id))
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect();
        converge(&mut world.host, &world.desired, &world.scope, 1).map_err(fail)?;
        let observed = world.host.observe();
        for d in &world.desired {
            let mut mine: Vec<&ObservedContainer> = observed.iter().filter(|c| c.set == d.key).collect();
            mine.sort_by_key(|c| c.ordinal);
            prop_assert_eq!(mine.len(), d.replicas as usize, "{}: {:#?}", d.key, mine);
            for (o, c) in mine.iter().enumerate() {
                prop_assert_eq!(&c.revision, &d.revision);
                prop_assert_eq!(c.ordinal, Some(o as u32));
                if c.drift_kind().is_some() {
                    prop_assert_eq!(d.drift_policy, DriftPolicy::Report, "{} drifted: {:?}", c.name, c.drift_kind());
                    continue;
                }
                prop_assert_eq!(&c.name, &d.container_name(o as u32));
                prop_assert!(c.is_ready(), "{} is {:?} / {:?}", c.name, c.state, c.health);
            }
            if d.replicas > 0 {
                prop_assert!(world.host.images.contains(&d.spec.image));
            }
        }
        for c in &observed {
            if !is_desired(&world.desired, &c.set) {
                prop_assert!(!world.scope.owns(&c.set), "{} of owned, undesired {} is left", c.name, c.set);
            }
        }
        prop_assert_eq!(before, untouchable(&world, &squatting_ids));
        // A squatter on a name berth created is stopped and renamed aside, never removed.
        for (id, name) in squatting {
            let c = world.host.containers.iter().find(|c| c.id == id);
            prop_assert!(c.is_some(), "squatter {} on {} was removed", id, name);
            let c = c.unwrap();
            prop_assert_eq!(&c.name, &squatter_name(&name, &id));
            prop_assert_eq!(c.state, State::Exited);
        }
    }

    /// Law 4: replacing a StartFirst set without host ports, the ready count never drops below
    /// min(old replicas, new replicas) after any step, in order or interleaved.
    #[test]
    fn law4_start_first_keeps_serving(
        old in spec_gene(0..2),
        new in spec_gene(0..2),
        old_replicas in 0..=5u32,
        new_replicas in 0..=5u32,
        choices in choices(),
    ) {
        let key = 0;
        let old = DesiredSet::new(key_of(key), old.build(key), old_replicas, Order::StopFirst, Pull::IfNotPresent);
        let new = DesiredSet::new(key_of(key), new.build(key), new_replicas, Order::StartFirst, Pull::IfNotPresent);
        let mut host = SimHost::default();
        converge(&mut host, std::slice::from_ref(&old), &Scope::of_sets([&old.key]), 1).map_err(fail)?;
        let floor = old_replicas.min(new_replicas) as usize;
        prop_assert_eq!(host.ready_count(&old.key), old_replicas as usize);

        let desired = std::slice::from_ref(&new);
        let scope = Scope::of_sets([&new.key]);
        let plan = plan_host(HOST, desired, &host.observe(), &scope);
        for sp in &plan.sets {
            prop_assert_eq!(sp.order, Order::StartFirst);
            prop_assert!(sp.forced_stop_first.is_none());
        }
        ready_never_below(&host, &plan, &new, &scope, floor, &choices)?;
    }

    /// Law 4, StopFirst: replacements run one at a time, so at most one ordinal is down:
    /// the ready count never drops below min(old replicas, new replicas) - 1.
    #[test]
    fn law4_stop_first_takes_down_one_at_a_time(
        old in spec_gene(0..4),
        new in spec_gene(0..4),
        old_replicas in 0..=5u32,
        new_replicas in 0..=5u32,
        choices in choices(),
    ) {
        let key = 3;
        let old = SetGene { key, spec: old, replicas: old_replicas, order: Order::StartFirst, reuse: false, report: false, declared: true }.desired();
        let new = SetGene { key, spec: new, replicas: new_replicas, order: Order::StopFirst, reuse: false, report: false, declared: true }.desired();
        let mut host = SimHost::default();
        converge(&mut host, std::slice::from_ref(&old), &Scope::of_sets([&old.key]), 1).map_err(fail)?;
        let floor = (old.replicas.min(new.replicas) as usize).saturating_sub(1);

        let desired = std::slice::from_ref(&new);
        let scope = Scope::of_sets([&new.key]);
        let plan = plan_host(HOST, desired, &host.observe(), &scope);
        for sp in &plan.sets {
            prop_assert_eq!(sp.order, Order::StopFirst);
            prop_assert!(sp.sequential);
        }
        ready_never_below(&host, &plan, &new, &scope, floor, &choices)?;
    }

    /// Law 5: volumes only ever appear (checked on every step), every volume a desired spec
    /// mounts exists after convergence, and Stop/Remove only target containers of owned sets.
    #[test]
    fn law5_nothing_of_value_is_destroyed(s in scenario()) {
        let mut world = s.world()?;
        let observed = world.host.observe();
        let plan = plan_host(HOST, &world.desired, &observed, &world.scope);
        for sp in &plan.sets {
            prop_assert!(is_desired(&world.desired, &sp.set) || world.scope.owns(&sp.set), "{} is not owned", sp.set);
            for step in sp.prepare.iter().chain(sp.changes.iter().flat_map(|c| &c.steps)) {
                if let Step::Stop { id, .. } | Step::Remove { id, .. } = step {
                    let target = observed.iter().find(|c| &c.id == id);
                    prop_assert!(target.is_some(), "{:?} targets a container berth did not list", step);
                    prop_assert_eq!(&target.unwrap().set, &sp.set, "{:?} targets another set", step);
                }
            }
        }
        let volumes = world.host.volumes.clone();
        converge(&mut world.host, &world.desired, &world.scope, 1).map_err(fail)?;
        prop_assert!(world.host.volumes.is_superset(&volumes));
        for d in world.desired.iter().filter(|d| d.replicas > 0) {
            for v in d.spec.volumes() {
                prop_assert!(world.host.volumes.contains(&v), "{}: volume {} is missing", d.key, v);
            }
            for n in &d.networks() {
                prop_assert!(world.host.networks.contains(n), "{}: network {} is missing", d.key, n);
            }
        }
    }

    /// Law 6: a host port shared by the old and the new revision forces StopFirst, says
    /// which port, and stops every old container before its replacement starts, after it is
    /// created.
    #[test]
    fn law6_shared_host_port_forces_stop_first(
        old in spec_gene(2..4),
        new in spec_gene(0..4),
        new_replicas in 0..=1u32,
        old_state in prop_oneof![Just(State::Running), Just(State::Exited), Just(State::Created), Just(State::Paused)],
    ) {
        let key = 1;
        let mut new = SpecGene { port: old.port, ..new };
        if new == old {
            new.greeting = 1 - new.greeting;
        }
        let old = DesiredSet::new(key_of(key), old.build(key), 1, Order::StopFirst, Pull::IfNotPresent);
        let new = DesiredSet::new(key_of(key), new.build(key), new_replicas, Order::StartFirst, Pull::IfNotPresent);
        let mut host = SimHost::default();
        converge(&mut host, std::slice::from_ref(&old), &Scope::of_sets([&old.key]), 1).map_err(fail)?;
        host.containers[0].state = old_state;
        let old_id = host.containers[0].id.clone();

        let desired = std::slice::from_ref(&new);
        let scope = Scope::of_sets([&new.key]);
        let plan = plan_host(HOST, desired, &host.observe(), &scope);
        prop_assert_eq!(plan.sets.len(), 1);
        let sp = &plan.sets[0];
        let port = old.spec.host_bindings()[0].clone();
        prop_assert_eq!(sp.order, Order::StopFirst);
        prop_assert!(sp.sequential);
        let why = sp.forced_stop_first.as_deref().unwrap_or_default();
        prop_assert!(why.contains(&port.to_string()), "{:?} does not name {}", sp.forced_stop_first, port);
        for ch in &sp.changes {
            let created = ch.steps.iter().position(|s| matches!(s, Step::Create { .. }));
            let started = ch.steps.iter().position(|s| matches!(s, Step::Start { .. }));
            let first_old = ch.steps.iter().position(|s| matches!(s, Step::Stop { id, .. } | Step::Remove { id, .. } if *id == old_id));
            let last_old = ch.steps.iter().rposition(|s| matches!(s, Step::Stop { id, .. } | Step::Remove { id, .. } if *id == old_id));
            if let (Some(started), Some(last_old)) = (started, last_old) {
                prop_assert!(last_old < started, "{:#?}", ch);
            }
            if let (Some(created), Some(first_old)) = (created, first_old) {
                prop_assert!(created < first_old, "the replacement is created before the old one goes: {:#?}", ch);
            }
        }
        apply(&mut host, &plan, desired, None).map_err(fail)?;
        prop_assert!(plan_host(HOST, desired, &host.observe(), &scope).is_empty());
    }

    /// Law 6, the other way: StopFirst is forced only when a port is in fact shared, or when
    /// berth chose the order and a live container of a set with a read-write named volume is
    /// replaced (one writer per data volume).
    #[test]
    fn law6_stop_first_is_forced_only_for_a_shared_port(s in scenario()) {
        let world = s.world()?;
        let observed = world.host.observe();
        let plan = plan_host(HOST, &world.desired, &observed, &world.scope);
        for sp in &plan.sets {
            let Some(d) = world.desired.iter().find(|d| d.key == sp.set) else { continue };
            // A container the new one replaces while it still publishes its ports: of another
            // revision, or a live drifted one of this revision (Replace, on a kept ordinal).
            let shared = observed.iter().any(|c| {
                let replaced_live = c.revision == d.revision
                    && d.drift_policy == DriftPolicy::Replace
                    && c.ordinal.is_some_and(|o| o < d.replicas)
                    && c.drift_kind().is_some()
                    && matches!(c.state, State::Running | State::Restarting | State::Paused);
                c.set == d.key
                    && (c.revision != d.revision || replaced_live)
                    && c.host_bindings.iter().any(|b| d.spec.host_bindings().iter().any(|n| n.overlaps(b)))
            });
            let replaces_a_writer = !d.order_declared
                && d.writable_volume().is_some()
                && observed.iter().any(|c| {
                    let live = matches!(c.state, State::Running | State::Restarting | State::Paused);
                    let replaced_live = c.revision == d.revision
                        && d.drift_policy == DriftPolicy::Replace
                        && c.ordinal.is_some_and(|o| o < d.replicas)
                        && c.drift_kind().is_some();
                    c.set == d.key && live && (c.revision != d.revision || replaced_live)
                });
            let forced = d.order == Order::StartFirst && (shared || replaces_a_writer);
            prop_assert_eq!(sp.forced_stop_first.is_some(), forced, "{:?}", sp.forced_stop_first);
            prop_assert_eq!(sp.order, if forced { Order::StopFirst } else { d.order });
        }
    }

    /// Law 10: one writer per data volume. With the order left to berth, replacing the one
    /// container of a set that mounts a named volume read-write (a new spec, or drift) never
    /// has two of its containers live at once, in order or interleaved, and the plan says why.
    #[test]
    fn law10_a_data_volume_never_has_two_writers(
        old in spec_gene(0..2),
        new in spec_gene(0..2),
        drift in prop_oneof![Just(Drift::Updated), Just(Drift::Exec), Just(Drift::Copied)],
        choices in choices(),
    ) {
        let key = 0;
        let stateful = |mut g: SpecGene| {
            g.volume = Some(0);
            g.build(key)
        };
        let old = DesiredSet::new(key_of(key), stateful(old), 1, Order::StartFirst, Pull::IfNotPresent)
            .with_default_order();
        let new = DesiredSet::new(key_of(key), stateful(new), 1, Order::StartFirst, Pull::IfNotPresent)
            .with_default_order();
        let mut host = SimHost::default();
        converge(&mut host, std::slice::from_ref(&old), &Scope::of_sets([&old.key]), 1).map_err(fail)?;
        if old.revision == new.revision {
            host.containers.iter_mut().for_each(|c| c.drift = Some(drift));
        }
        let scope = Scope::of_sets([&new.key]);
        let plan = plan_host(HOST, std::slice::from_ref(&new), &host.observe(), &scope);
        prop_assert_eq!(plan.sets.len(), 1);
        let sp = &plan.sets[0];
        prop_assert_eq!(sp.order, Order::StopFirst);
        let why = sp.forced_stop_first.clone().unwrap_or_default();
        prop_assert!(why.contains("read-write") || why.contains("hostPort"), "{}", why);
        for order in [None, Some(choices.as_slice())] {
            let mut h = host.clone();
            apply_steps(&mut h, &schedule(&plan, order), std::slice::from_ref(&new), &mut |h| {
                let live = h
                    .observe()
                    .iter()
                    .filter(|c| c.set == new.key && matches!(c.state, State::Running | State::Restarting | State::Paused))
                    .count();
                if live > 1 { Err(format!("{live} containers of the set write its volume at once")) } else { Ok(()) }
            })
            .map_err(fail)?;
            prop_assert!(plan_host(HOST, std::slice::from_ref(&new), &h.observe(), &scope).is_empty());
        }
    }

    /// Law 8: a StartFirst set without host ports whose current containers drifted (update,
    /// exec, cp) keeps all its replicas ready while they are replaced, in order or interleaved;
    /// each drifted container is renamed aside before its copy is created and stopped only
    /// after the copy is ready.
    #[test]
    fn law8_start_first_holds_for_drift(
        spec in spec_gene(0..2),
        replicas in 1..=5u32,
        drifts in proptest::collection::vec(
            (0..5u32, prop_oneof![Just(Drift::Updated), Just(Drift::Exec), Just(Drift::Copied)]), 1..=5),
        choices in choices(),
    ) {
        let key = 0;
        let set = DesiredSet::new(key_of(key), spec.build(key), replicas, Order::StartFirst, Pull::IfNotPresent);
        let mut host = SimHost::default();
        converge(&mut host, std::slice::from_ref(&set), &Scope::of_sets([&set.key]), 1).map_err(fail)?;
        let mut drifted = BTreeSet::new();
        for (ordinal, drift) in drifts {
            let name = set.container_name(ordinal % replicas);
            let c = host.containers.iter_mut().find(|c| c.name == name).expect("every ordinal runs");
            c.drift = Some(drift);
            drifted.insert(c.id.clone());
        }
        let scope = Scope::of_sets([&set.key]);
        let plan = plan_host(HOST, std::slice::from_ref(&set), &host.observe(), &scope);
        prop_assert_eq!(plan.sets.len(), 1);
        let sp = &plan.sets[0];
        prop_assert_eq!(sp.order, Order::StartFirst);
        prop_assert!(sp.forced_stop_first.is_none());
        prop_assert_eq!(sp.changes.len(), drifted.len());
        for ch in &sp.changes {
            let kinds: Vec<&str> = ch.steps.iter().map(Step::kind).collect();
            prop_assert_eq!(kinds, ["rename", "create", "start", "waitReady", "stop", "remove"]);
            let Step::Rename { id, .. } = &ch.steps[0] else { unreachable!() };
            prop_assert!(drifted.contains(id));
        }
        ready_never_below(&host, &plan, &set, &scope, replicas as usize, &choices)?;
    }

    /// Law 9: new containers that never turn ready (the simulated host fails their readiness
    /// wait) stop nothing they were to replace under StartFirst: the set keeps
    /// `min(old, new replicas)` ready after every step and each failed ordinal's old
    /// container still runs; under StopFirst it is never more than one below. The same for a
    /// drift replacement (the old container then runs under its aside name).
    #[test]
    fn law9_a_replacement_that_never_turns_ready_stops_nothing(
        old in spec_gene(0..2),
        new in spec_gene(0..2),
        old_replicas in 1..=4u32,
        new_replicas in 1..=4u32,
        order in order(),
        by_drift in any::<bool>(),
        never in proptest::collection::btree_set(0..4u32, 1..=4),
        choices in choices(),
    ) {
        let key = 0;
        let old = DesiredSet::new(key_of(key), old.build(key), old_replicas, Order::StartFirst, Pull::IfNotPresent);
        let mut host = SimHost::default();
        converge(&mut host, std::slice::from_ref(&old), &Scope::of_sets([&old.key]), 1).map_err(fail)?;
        let new = if by_drift {
            // The same revision; every container drifted (exec).
            for c in &mut host.containers {
                c.drift = Some(Drift::Exec);
            }
            DesiredSet { order, ..old.clone() }
        } else {
            let mut new = DesiredSet::new(key_of(key), new.build(key), new_replicas, order, Pull::IfNotPresent);
            if new.revision == old.revision {
                new.spec.env.insert("CHANGED".into(), EnvValue::Plain("yes".into()));
                new = DesiredSet::new(key_of(key), new.spec, new_replicas, order, Pull::IfNotPresent);
            }
            new
        };
        host.never_ready = never.iter().map(|&o| new.container_name(o)).collect();
        let ids_before: BTreeMap<Option<u32>, String> = host.observe().into_iter().map(|c| (c.ordinal, c.id)).collect();
        let floor = old.replicas.min(new.replicas) as usize;
        let floor = if order == Order::StartFirst { floor } else { floor.saturating_sub(1) };

        let desired = std::slice::from_ref(&new);
        let plan = plan_host(HOST, desired, &host.observe(), &Scope::of_sets([&new.key]));
        prop_assert!(!plan.is_empty());
        let failed = apply_with_failures(&mut host, &plan, desired, &choices, &mut |h| {
            let ready = h.ready_count(&new.key);
            if ready < floor { Err(format!("{ready} ready, fewer than {floor}")) } else { Ok(()) }
        })
        .map_err(fail)?;
        if order == Order::StartFirst {
            for name in &failed {
                let ordinal = never.iter().copied().find(|&o| &new.container_name(o) == name).expect("a never-ready name");
                if let Some(id) = ids_before.get(&Some(ordinal)) {
                    let c = host.containers.iter().find(|c| &c.id == id);
                    prop_assert!(
                        c.is_some_and(|c| c.state == State::Running),
                        "{} never turned ready, yet the container it was to replace is {:?}", name, c.map(|c| c.state)
                    );
                }
            }
        }
    }

    /// Law 7: scaling down removes the highest ordinals and nothing else; to 0, everything.
    #[test]
    fn law7_scale_down_removes_the_highest_ordinals(
        spec in spec_gene(0..4),
        from in 1..=5u32,
        to in 0..5u32,
        order in order(),
    ) {
        let key = 2;
        let from = if spec.has_host_port() { 1 } else { from };
        let to = to.min(from - 1);
        let before = DesiredSet::new(key_of(key), spec.build(key), from, Order::StartFirst, Pull::IfNotPresent);
        let after = DesiredSet { replicas: to, order, ..before.clone() };
        let mut host = SimHost::default();
        converge(&mut host, std::slice::from_ref(&before), &Scope::of_sets([&before.key]), 1).map_err(fail)?;
        let ids: BTreeMap<Option<u32>, String> = host.observe().into_iter().map(|c| (c.ordinal, c.id)).collect();

        let desired = std::slice::from_ref(&after);
        let scope = Scope::of_sets([&after.key]);
        let plan = plan_host(HOST, desired, &host.observe(), &scope);
        prop_assert_eq!(plan.sets.len(), 1);
        let sp = &plan.sets[0];
        prop_assert!(sp.prepare.is_empty());
        let removed: BTreeSet<u32> = sp.changes.iter().filter_map(|c| c.ordinal).collect();
        prop_assert_eq!(removed, (to..from).collect::<BTreeSet<u32>>());
        for ch in &sp.changes {
            prop_assert_eq!(&ch.action, &Action::Remove { reason: Reason::ScaledDown });
            prop_assert!(ch.steps.iter().all(|s| matches!(s, Step::Stop { .. } | Step::Remove { .. })), "{:?}", ch.steps);
        }
        apply(&mut host, &plan, desired, None).map_err(fail)?;
        let left: BTreeMap<Option<u32>, String> = host.observe().into_iter().map(|c| (c.ordinal, c.id)).collect();
        let kept: BTreeMap<Option<u32>, String> = ids.into_iter().filter(|(o, _)| o.is_some_and(|o| o < to)).collect();
        prop_assert_eq!(left, kept);
        prop_assert!(plan_host(HOST, desired, &host.observe(), &scope).is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

fn echo(greeting: &str) -> ContainerSpec {
    let mut spec = ContainerSpec {
        image: "example/echo:1.0".into(),
        restart_policy: "unless-stopped".into(),
        ..ContainerSpec::default()
    };
    spec.env.insert("GREETING".into(), EnvValue::Plain(greeting.into()));
    spec
}

fn web(spec: ContainerSpec, replicas: u32, order: Order) -> DesiredSet {
    DesiredSet::new(SetKey::new("shop", "web"), spec, replicas, order, Pull::IfNotPresent)
}

fn converged(sets: &[DesiredSet]) -> SimHost {
    let mut host = SimHost::default();
    converge(&mut host, sets, &Scope::of_sets(sets.iter().map(|d| &d.key)), 1).expect("converges");
    host
}

fn plan_for(host: &SimHost, sets: &[DesiredSet]) -> HostPlan {
    plan_host(HOST, sets, &host.observe(), &Scope::of_sets(sets.iter().map(|d| &d.key)))
}

fn container<'a>(host: &'a SimHost, name: &str) -> &'a super::sim::SimContainer {
    host.containers.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name} is on the host"))
}

#[test]
fn an_env_change_replaces_every_replica_and_explains_the_field() {
    let old = web(echo("hi"), 3, Order::StartFirst);
    let new = web(echo("hello"), 3, Order::StartFirst);
    let mut host = converged(std::slice::from_ref(&old));
    let old_ids: BTreeSet<String> = host.containers.iter().map(|c| c.id.clone()).collect();

    let plan = plan_for(&host, std::slice::from_ref(&new));
    assert_eq!(plan.sets.len(), 1);
    let sp = &plan.sets[0];
    assert_eq!(sp.revision.as_deref(), Some(new.revision.as_str()));
    // The namespace's default network (the set declares none), then the image.
    assert_eq!(
        sp.prepare,
        vec![
            Step::EnsureNetwork { name: super::default_network(&new.key.namespace) },
            Step::EnsureImage { image: "example/echo:1.0".into(), pull: Pull::IfNotPresent },
        ]
    );
    assert_eq!(sp.changes.len(), 3);
    let fields =
        vec![FieldChange { field: "env.GREETING".into(), from: Some("\"hi\"".into()), to: Some("\"hello\"".into()) }];
    assert_eq!(diff_specs(&old.spec, &new.spec), fields);
    for (o, ch) in sp.changes.iter().enumerate() {
        let o = o as u32;
        assert_eq!(ch.ordinal, Some(o));
        assert_eq!(ch.container, new.container_name(o));
        assert_eq!(
            ch.action,
            Action::Replace {
                reasons: vec![Reason::SpecChanged { from_revision: old.revision.clone(), fields: fields.clone() }]
            }
        );
        // StartFirst: the new container serves before the old one stops.
        let kinds: Vec<&str> = ch.steps.iter().map(Step::kind).collect();
        assert_eq!(kinds, ["create", "start", "waitReady", "stop", "remove"]);
    }

    apply(&mut host, &plan, std::slice::from_ref(&new), None).unwrap();
    assert!(plan_for(&host, std::slice::from_ref(&new)).is_empty());
    assert!(host.containers.iter().all(|c| !old_ids.contains(&c.id) && c.state == State::Running));
    assert_eq!(host.ready_count(&new.key), 3);
}

#[test]
fn a_created_but_not_started_container_is_started_not_recreated() {
    let set = web(echo("hi"), 2, Order::StartFirst);
    let sets = std::slice::from_ref(&set);
    let mut host = converged(sets);
    let name = set.container_name(1);
    let id = container(&host, &name).id.clone();
    host.containers.iter_mut().find(|c| c.name == name).unwrap().state = State::Created;

    let plan = plan_for(&host, sets);
    assert_eq!(plan.change_count(), 1);
    let sp = &plan.sets[0];
    assert!(sp.prepare.is_empty(), "nothing is created, so nothing is prepared");
    let ch = &sp.changes[0];
    assert_eq!(ch.ordinal, Some(1));
    assert_eq!(ch.action, Action::Start);
    assert_eq!(ch.steps, vec![Step::Start { name: name.clone() }, Step::WaitReady { name: name.clone() }]);

    apply(&mut host, &plan, sets, None).unwrap();
    let c = container(&host, &name);
    assert_eq!((c.id.as_str(), c.state), (id.as_str(), State::Running), "the same container, now running");
    assert!(plan_for(&host, sets).is_empty());
}

#[test]
fn a_killed_container_of_the_current_revision_is_replaced() {
    let mut spec = echo("hi");
    spec.healthcheck = Some(HealthSpec {
        test: vec!["CMD".into(), "true".into()],
        interval_ns: None,
        timeout_ns: None,
        start_period_ns: None,
        retries: None,
    });
    let set = web(spec, 2, Order::StartFirst);
    let sets = std::slice::from_ref(&set);
    let mut host = converged(sets);
    let killed = set.container_name(0);
    let killed_id = container(&host, &killed).id.clone();
    let other_id = container(&host, &set.container_name(1)).id.clone();
    let c = host.containers.iter_mut().find(|c| c.name == killed).unwrap();
    (c.state, c.health) = (State::Exited, None);

    let plan = plan_for(&host, sets);
    assert_eq!(plan.change_count(), 1);
    let ch = &plan.sets[0].changes[0];
    assert_eq!(ch.action, Action::Replace { reasons: vec![Reason::NotRunning { state: State::Exited }] });
    assert_eq!(
        ch.steps,
        vec![
            // Exited already: removed without a stop, and its name is free for the new one.
            Step::Remove { id: killed_id.clone(), name: killed.clone() },
            Step::Create { name: killed.clone(), ordinal: 0 },
            Step::Start { name: killed.clone() },
            Step::WaitReady { name: killed.clone() },
        ]
    );

    apply(&mut host, &plan, sets, None).unwrap();
    let c = container(&host, &killed);
    assert_ne!(c.id, killed_id);
    assert_eq!((c.state, c.health), (State::Running, Some(Health::Healthy)));
    assert_eq!(container(&host, &set.container_name(1)).id, other_id, "the healthy replica is left alone");
    assert!(plan_for(&host, sets).is_empty());
}

#[test]
fn a_fixed_host_port_forces_stop_first_and_says_why() {
    let mut spec = echo("hi");
    spec.ports.push(PortSpec {
        container_port: 8080,
        protocol: "tcp".into(),
        host_port: Some(9000),
        host_ip: String::new(),
    });
    let old = web(spec.clone(), 1, Order::StartFirst);
    spec.env.insert("GREETING".into(), EnvValue::Plain("hello".into()));
    let new = web(spec, 1, Order::StartFirst);
    let mut host = converged(std::slice::from_ref(&old));

    let plan = plan_for(&host, std::slice::from_ref(&new));
    let sp = &plan.sets[0];
    assert_eq!(sp.order, Order::StopFirst);
    assert!(sp.sequential);
    assert!(sp.forced_stop_first.as_deref().unwrap().contains("9000/tcp"), "{:?}", sp.forced_stop_first);
    let kinds: Vec<&str> = sp.changes[0].steps.iter().map(Step::kind).collect();
    assert_eq!(kinds, ["create", "stop", "remove", "start", "waitReady"]);
    apply(&mut host, &plan, std::slice::from_ref(&new), None).unwrap();
    assert!(plan_for(&host, std::slice::from_ref(&new)).is_empty());
}

#[test]
fn a_set_no_longer_declared_is_removed_only_when_owned() {
    let shop = web(echo("hi"), 2, Order::StartFirst);
    let ops = DesiredSet::new(SetKey::new("ops", "worker"), echo("hi"), 1, Order::StopFirst, Pull::IfNotPresent);
    let host = converged(&[shop.clone(), ops.clone()]);

    // Declaring only `shop/web`, with only it in scope: `ops/worker` is someone else's.
    assert!(plan_host(HOST, std::slice::from_ref(&shop), &host.observe(), &Scope::of_sets([&shop.key])).is_empty());

    // Pruning the `ops` namespace: its undeclared set goes.
    let mut scope = Scope::of_sets([&shop.key]);
    scope.namespaces.insert("ops".into());
    let plan = plan_host(HOST, std::slice::from_ref(&shop), &host.observe(), &scope);
    assert_eq!(plan.sets.len(), 1);
    assert_eq!(plan.sets[0].set, ops.key);
    assert_eq!(plan.sets[0].revision, None);
    assert_eq!(plan.sets[0].changes[0].action, Action::Remove { reason: Reason::NotDesired });
}

/// Moving a fixed host port to another set (renaming a set, or moving the port): the old
/// set's removal is marked `frees_ports` and runs before the new set's create, in any
/// interleaving the executor may choose.
#[test]
fn a_host_port_moved_to_another_set_is_freed_before_it_is_bound() {
    let mut spec = echo("hi");
    spec.ports.push(PortSpec {
        container_port: 8080,
        protocol: "tcp".into(),
        host_port: Some(9000),
        host_ip: String::new(),
    });
    let old = web(spec.clone(), 1, Order::StartFirst);
    let new = DesiredSet::new(SetKey::new("shop", "storefront"), spec, 1, Order::StartFirst, Pull::IfNotPresent);
    let host = converged(std::slice::from_ref(&old));
    let scope = Scope::of_sets([&old.key, &new.key]);
    let plan = plan_host(HOST, std::slice::from_ref(&new), &host.observe(), &scope);
    // Not vacuous: the old set's removal frees the port, the new set's create binds it.
    let freeing: Vec<&SetKey> = plan.sets.iter().filter(|sp| sp.frees_ports).map(|sp| &sp.set).collect();
    assert_eq!(freeing, [&old.key], "{plan:#?}");
    assert!(plan.sets.iter().any(|sp| sp.set == new.key && !sp.changes.is_empty()), "{plan:#?}");
    // In plan order, and with the executor running the two sets side by side either way round.
    for choices in [None, Some(&[0][..]), Some(&[1][..])] {
        let mut h = host.clone();
        apply(&mut h, &plan, std::slice::from_ref(&new), choices).unwrap();
        assert_eq!((h.ready_count(&new.key), h.ready_count(&old.key)), (1, 0), "the port moved");
    }
}

// ---------------------------------------------------------------------------------------------
// Drift scenarios

/// A converged host of `set`, with `drift` done to the container of ordinal 0.
fn drifted(set: &DesiredSet, drift: Drift) -> (SimHost, String) {
    let mut host = converged(std::slice::from_ref(set));
    let name = set.container_name(0);
    let c = host.containers.iter_mut().find(|c| c.name == name).expect("ordinal 0 runs");
    match drift {
        Drift::Stopped => (c.state, c.health) = (State::Exited, None),
        Drift::Renamed => c.name = "someone-renamed-it".into(),
        Drift::WrongImage => c.image = "example/wrong:1".into(),
        Drift::Updated | Drift::Exec | Drift::Copied => c.drift = Some(drift),
        Drift::Squatter => unreachable!("a squatter is met by the executor, not the planner"),
    }
    let id = c.id.clone();
    (host, id)
}

const EVERY_PLANNED_KIND: [Drift; 6] =
    [Drift::Stopped, Drift::Renamed, Drift::Updated, Drift::Exec, Drift::Copied, Drift::WrongImage];

#[test]
fn under_replace_each_kind_of_drift_is_replaced_by_a_fresh_container_of_the_same_revision() {
    let set = web(echo("hi"), 2, Order::StartFirst);
    let sets = std::slice::from_ref(&set);
    for kind in EVERY_PLANNED_KIND {
        let (mut host, id) = drifted(&set, kind);
        let old_name = host.containers.iter().find(|c| c.id == id).unwrap().name.clone();
        let other = container(&host, &set.container_name(1)).id.clone();
        let plan = plan_for(&host, sets);
        assert_eq!(
            plan.drifted,
            vec![DriftReport {
                set: set.key.clone(),
                container: old_name.clone(),
                id: id.clone(),
                kind,
                replaced: true
            }]
        );
        assert_eq!(plan.change_count(), 1, "{kind:?}");
        let ch = &plan.sets[0].changes[0];
        let reason = if kind == Drift::Stopped {
            Reason::NotRunning { state: State::Exited }
        } else {
            Reason::Drifted { drift: kind }
        };
        assert_eq!(ch.action, Action::Replace { reasons: vec![reason] }, "{kind:?}");
        let kinds: Vec<&str> = ch.steps.iter().map(Step::kind).collect();
        match kind {
            // Exited: nothing to stop. The name is free again once it is removed.
            Drift::Stopped => assert_eq!(kinds, ["remove", "create", "start", "waitReady"]),
            // The name is free already: the fresh copy serves before the renamed one goes.
            Drift::Renamed => assert_eq!(kinds, ["create", "start", "waitReady", "stop", "remove"]),
            // It holds the deterministic name and serves: renamed aside, it serves until its
            // copy under the name is ready, then goes (StartFirst holds for drift too).
            _ => {
                assert_eq!(kinds, ["rename", "create", "start", "waitReady", "stop", "remove"], "{kind:?}");
                let aside = super::model::drifted_name(&old_name, &id);
                assert_eq!(ch.steps[0], Step::Rename { id: id.clone(), from: old_name.clone(), to: aside.clone() });
                assert_eq!(ch.steps[4], Step::Stop { id: id.clone(), name: aside });
            }
        }
        apply(&mut host, &plan, sets, None).unwrap();
        let again = plan_for(&host, sets);
        assert!(again.is_empty() && again.drifted.is_empty(), "{kind:?}: {again:#?}");
        assert!(!host.containers.iter().any(|c| c.id == id), "{kind:?}: the drifted container is gone");
        assert_eq!(container(&host, &set.container_name(1)).id, other, "the other replica is left alone");
        assert_eq!(host.ready_count(&set.key), 2);
    }
}

#[test]
fn under_report_each_kind_of_drift_is_left_as_it_is_and_listed() {
    let set = web(echo("hi"), 2, Order::StartFirst).with_drift_policy(DriftPolicy::Report);
    let sets = std::slice::from_ref(&set);
    for kind in EVERY_PLANNED_KIND {
        let (host, id) = drifted(&set, kind);
        let name = host.containers.iter().find(|c| c.id == id).unwrap().name.clone();
        let plan = plan_for(&host, sets);
        assert!(plan.is_empty(), "{kind:?}: {plan:#?}");
        assert_eq!(
            plan.drifted,
            vec![DriftReport { set: set.key.clone(), container: name, id, kind, replaced: false }],
            "{kind:?}"
        );
    }
}

#[test]
fn a_renamed_container_holding_a_host_port_stops_before_its_copy_starts() {
    let mut spec = echo("hi");
    spec.ports.push(PortSpec {
        container_port: 8080,
        protocol: "tcp".into(),
        host_port: Some(9000),
        host_ip: String::new(),
    });
    let set = web(spec, 1, Order::StartFirst);
    let (mut host, _) = drifted(&set, Drift::Renamed);
    let plan = plan_for(&host, std::slice::from_ref(&set));
    let kinds: Vec<&str> = plan.sets[0].changes[0].steps.iter().map(Step::kind).collect();
    assert_eq!(kinds, ["stop", "remove", "create", "start", "waitReady"]);
    apply(&mut host, &plan, std::slice::from_ref(&set), Some(&[0])).unwrap();
}

#[test]
fn a_drifted_container_of_an_old_revision_is_just_replaced() {
    let old = web(echo("hi"), 1, Order::StartFirst);
    let new = web(echo("hello"), 1, Order::StartFirst).with_drift_policy(DriftPolicy::Report);
    let (host, _) = drifted(&old, Drift::Exec);
    let plan = plan_for(&host, std::slice::from_ref(&new));
    assert!(plan.drifted.is_empty(), "only drift of the desired revision is reported");
    assert!(
        matches!(&plan.sets[0].changes[0].action, Action::Replace { reasons } if matches!(reasons[..], [Reason::SpecChanged { .. }]))
    );
}

#[test]
fn under_report_a_stopped_container_stays_and_an_old_one_on_its_ordinal_still_goes() {
    let old = web(echo("hi"), 1, Order::StartFirst);
    let new = web(echo("hello"), 1, Order::StartFirst).with_drift_policy(DriftPolicy::Report);
    let mut host = converged(std::slice::from_ref(&old));
    let old_id = host.containers[0].id.clone();
    converge(&mut host, std::slice::from_ref(&new), &Scope::of_sets([&new.key]), 1).unwrap();
    let stopped = container(&host, &new.container_name(0)).id.clone();
    host.containers.iter_mut().find(|c| c.id == stopped).unwrap().state = State::Exited;
    // An old container back on the ordinal (an interrupted rollback, say).
    host.add_container(&old.container_name(0), old.container_labels(0), State::Running, None);
    let plan = plan_for(&host, std::slice::from_ref(&new));
    assert_eq!(plan.drifted.len(), 1);
    assert_eq!((plan.drifted[0].kind, plan.drifted[0].replaced), (Drift::Stopped, false));
    let ch = &plan.sets[0].changes;
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].container, old.container_name(0));
    assert!(matches!(ch[0].action, Action::Remove { reason: Reason::SpecChanged { .. } }));
    apply(&mut host, &plan, std::slice::from_ref(&new), None).unwrap();
    assert!(!host.containers.iter().any(|c| c.id == old_id));
    assert_eq!(container(&host, &new.container_name(0)).state, State::Exited, "left as it is");
}

/// A create that finds berth's own container on its name: the simulated host decides as the
/// executor does, by [`DesiredSet::name_holder`]: this very container (a crash after the
/// create) is work done; another revision's, set's or ordinal's is a name taken.
#[test]
fn a_create_on_a_name_berth_holds_is_done_only_when_it_is_this_very_container() {
    let set = web(echo("hi"), 1, Order::StartFirst);
    let sets = std::slice::from_ref(&set);
    let name = set.container_name(0);
    let create = Step::Create { name: name.clone(), ordinal: 0 };
    let other = web(echo("other"), 1, Order::StartFirst);
    type Case = (&'static str, BTreeMap<String, String>, Result<(), SimError>);
    let cases: [Case; 4] = [
        ("this container", set.container_labels(0), Ok(())),
        ("another revision", other.container_labels(0), Err(SimError::NameTaken(name.clone()))),
        ("another ordinal", set.container_labels(1), Err(SimError::NameTaken(name.clone()))),
        (
            "another set",
            DesiredSet { key: SetKey::new("shop", "worker"), ..set.clone() }.container_labels(0),
            Err(SimError::NameTaken(name.clone())),
        ),
    ];
    for (what, held_by, expected) in cases {
        let mut host = SimHost::default();
        host.add_container(&name, held_by.clone(), State::Running, None);
        let holder = set.name_holder(0, |k| held_by.get(k).map(String::as_str));
        assert_eq!(holder == NameHolder::ThisContainer, expected.is_ok(), "{what}: {holder:?}");
        assert_eq!(host.apply(&create, sets, &set.key), expected, "{what}");
        assert_eq!(host.containers.len(), 1, "{what}: nothing made, nothing removed");
    }
    assert_eq!(set.name_holder(0, |_| None), NameHolder::Foreign);
}

#[test]
fn a_squatter_is_renamed_aside_under_replace_and_refused_under_report() {
    for policy in [DriftPolicy::Replace, DriftPolicy::Report] {
        let set = web(echo("hi"), 1, Order::StartFirst).with_drift_policy(policy);
        let sets = std::slice::from_ref(&set);
        let name = set.container_name(0);
        let mut host = SimHost::default();
        host.add_foreign(&name, true);
        let squatter = host.containers[0].id.clone();
        let plan = plan_for(&host, sets);
        assert_eq!(plan.sets[0].changes[0].action, Action::Create, "the planner does not see foreign containers");
        let r = apply(&mut host, &plan, sets, None);
        let c = host.containers.iter().find(|c| c.id == squatter).expect("never removed");
        match policy {
            DriftPolicy::Replace => {
                r.unwrap();
                assert_eq!((c.name.clone(), c.state), (squatter_name(&name, &squatter), State::Exited));
                assert!(plan_for(&host, sets).is_empty());
            }
            DriftPolicy::Report => {
                assert!(r.unwrap_err().contains("Squatter"));
                assert_eq!((c.name.as_str(), c.state), (name.as_str(), State::Running), "left as it is");
            }
        }
    }
}

#[test]
fn the_list_shows_renames_and_wrong_images_but_not_a_moved_tag() {
    let set = web(echo("hi"), 1, Order::StartFirst);
    let spec = set.spec.canonical_json();
    let list =
        |name: &str, image: &str| super::model::list_drift(&set.key, &set.revision, Some(0), name, image, Some(&spec));
    let name = set.container_name(0);
    assert_eq!(list(&name, "example/echo:1.0"), None);
    assert_eq!(list(&name, "docker.io/example/echo:1.0"), None, "the same reference, normalized");
    assert_eq!(list("web-old", "example/echo:1.0"), Some(Drift::Renamed));
    assert_eq!(list(&name, "example/echo:1.1"), Some(Drift::WrongImage));
    assert_eq!(list(&name, "busybox"), Some(Drift::WrongImage));
    // A bare id: created by id, or the tag moved since; a list cannot tell, so it is not drift.
    assert_eq!(list(&name, "sha256:419bb3308900aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), None);
    assert_eq!(list(&name, "419bb3308900"), None);
}
