//! Start order between sets: `spec.dependsOn`.
//!
//! A set's new containers are created on a host only once every set it depends on is
//! satisfied there: *Started* (its containers of its current revision run), *Ready* (they run
//! and are healthy) or *Completed* (a task that exited 0 for its current revision, or whose
//! completion its history records). A dependency that is not placed on the host must be
//! satisfied on every host where it is placed (fleet-wide). The fleet runner observes; the
//! decisions are here, pure:
//!
//! - [`find_cycle`]: the input is refused when the dependencies loop (a set would wait for
//!   itself), naming the loop;
//! - [`gate`]: what, if anything, a set still waits for on a host, given what the hosts show.
//!
//! Laws (property tests below): a set never passes its gate on a host where a dependency
//! placed there is not satisfied; a gate that passes stays passed while nothing changes; and
//! running the sets of an acyclic input in the order "each after its dependencies" (what the
//! fleet runner does) lets every set through once every dependency is satisfied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::model::{DesiredSet, ObservedContainer, SetKey, State};

/// When a dependency counts as satisfied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Condition {
    Started,
    Ready,
    Completed,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Condition::Started => "Started",
            Condition::Ready => "Ready",
            Condition::Completed => "Completed",
        })
    }
}

/// One set another set waits for (same namespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Dependency {
    pub set: SetKey,
    pub condition: Condition,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.set.name, self.condition)
    }
}

/// A loop in the dependencies, first set repeated last: `a -> b -> a`.
pub fn find_cycle(edges: &BTreeMap<SetKey, Vec<SetKey>>) -> Option<Vec<SetKey>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        k: &SetKey,
        edges: &BTreeMap<SetKey, Vec<SetKey>>,
        marks: &mut BTreeMap<SetKey, Mark>,
        path: &mut Vec<SetKey>,
    ) -> Option<Vec<SetKey>> {
        match marks.get(k) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|p| p == k).expect("an open set is on the path");
                let mut cycle = path[from..].to_vec();
                cycle.push(k.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(k.clone(), Mark::Open);
        path.push(k.clone());
        for next in edges.get(k).into_iter().flatten() {
            if let Some(c) = visit(next, edges, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(k.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for k in edges.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(k, edges, &mut marks, &mut path) {
            return Some(c);
        }
    }
    None
}

/// `a -> b -> a`, by set name (a loop never leaves its namespace).
pub fn show_cycle(cycle: &[SetKey]) -> String {
    cycle.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(" -> ")
}

/// What one host shows, for the gate: the set as desired there (if placed there) and the
/// host's containers (`None`: it could not be observed).
pub struct HostState<'a> {
    pub host: &'a str,
    pub desired: &'a [DesiredSet],
    pub observed: Option<&'a [ObservedContainer]>,
}

/// A dependency that is not satisfied yet, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unmet {
    pub dependency: Dependency,
    /// The host where it falls short.
    pub host: String,
    pub why: String,
    /// Time alone may still satisfy it: a container of its revision runs (or is about to) and
    /// is not ready yet. Otherwise (exited, missing, unobservable) waiting would not help.
    pub may_come: bool,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "waits for {} on host {}: {}", self.dependency, self.host, self.why)
    }
}

/// What `deps` leave unmet for a set's new containers on host `on` (empty: go). A dependency
/// placed on `on` is judged there; one placed elsewhere only, on every host where it is placed.
pub fn gate(deps: &[Dependency], on: &str, hosts: &[HostState<'_>]) -> Vec<Unmet> {
    let mut unmet = Vec::new();
    for dep in deps {
        let placed: Vec<&HostState<'_>> = hosts.iter().filter(|h| h.desired.iter().any(|d| d.key == dep.set)).collect();
        let judged: Vec<&HostState<'_>> = match placed.iter().find(|h| h.host == on) {
            Some(here) => vec![*here],
            None => placed,
        };
        if judged.is_empty() {
            unmet.push(Unmet {
                dependency: dep.clone(),
                host: on.to_string(),
                why: format!("{} is placed on no host", dep.set.name),
                may_come: false,
            });
            continue;
        }
        for h in judged {
            if let Err((why, may_come)) = satisfied(dep, h) {
                unmet.push(Unmet { dependency: dep.clone(), host: h.host.to_string(), why, may_come });
                break;
            }
        }
    }
    unmet
}

/// Whether `dep` is satisfied on one host where it is placed; if not, why, and whether time
/// alone may still satisfy it.
fn satisfied(dep: &Dependency, h: &HostState<'_>) -> Result<(), (String, bool)> {
    let d = h.desired.iter().find(|d| d.key == dep.set).expect("judged hosts place the dependency");
    let Some(observed) = h.observed else {
        return Err(("the host could not be observed".into(), false));
    };
    if dep.condition == Condition::Completed && !d.spec.task {
        return Err((format!("{} is not a Task: it never completes", dep.set.name), false));
    }
    if d.task_completed {
        return Ok(());
    }
    for ordinal in 0..d.replicas {
        let name = d.container_name(ordinal);
        let c = observed
            .iter()
            .filter(|c| c.set == d.key && c.revision == d.revision && c.ordinal == Some(ordinal))
            .min_by_key(|c| c.name != name);
        let Some(c) = c else {
            return Err((format!("no container of its revision {} yet", d.revision), false));
        };
        let ok = match (dep.condition, d.spec.task) {
            // A task has started once it runs or ran; it is ready once it completed.
            (Condition::Started, true) => matches!(c.state, State::Running | State::Restarting) || c.completed(),
            (Condition::Started, false) => matches!(c.state, State::Running | State::Restarting),
            (Condition::Ready | Condition::Completed, true) => c.completed(),
            (Condition::Ready, false) => c.is_ready(),
            (Condition::Completed, false) => false,
        };
        if !ok {
            let may_come = matches!(c.state, State::Running | State::Restarting | State::Created);
            return Err((format!("container {} is {}", c.name, describe(c)), may_come));
        }
    }
    Ok(())
}

/// A container's state in words: `running, unhealthy`, `exited (code 3)`.
pub fn describe(c: &ObservedContainer) -> String {
    let mut s = c.state.to_string();
    if let (State::Exited, Some(code)) = (c.state, c.exit_code) {
        s = format!("exited (code {code})");
    }
    if let Some(h) = c.health {
        s = format!(
            "{s}, {}",
            serde_json::to_value(h).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        );
    }
    s
}

/// The sets in an order where each comes after everything it depends on (ties by key), or
/// the loop that makes that impossible.
pub fn topological(edges: &BTreeMap<SetKey, Vec<SetKey>>) -> Result<Vec<SetKey>, Vec<SetKey>> {
    if let Some(c) = find_cycle(edges) {
        return Err(c);
    }
    let mut done: BTreeSet<SetKey> = BTreeSet::new();
    let mut out = Vec::new();
    let all: BTreeSet<&SetKey> = edges.keys().chain(edges.values().flatten()).collect();
    while out.len() < all.len() {
        for k in &all {
            if !done.contains(*k) && edges.get(*k).into_iter().flatten().all(|d| done.contains(d)) {
                done.insert((*k).clone());
                out.push((*k).clone());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::{ContainerSpec, Health, Order, Pull};
    use proptest::prelude::*;

    fn key(n: &str) -> SetKey {
        SetKey::new("shop", n)
    }

    fn set(n: &str, task: bool, replicas: u32) -> DesiredSet {
        let spec = ContainerSpec {
            image: "example/echo:1".into(),
            restart_policy: if task { "no" } else { "unless-stopped" }.into(),
            task,
            ..ContainerSpec::default()
        };
        DesiredSet::new(key(n), spec, replicas, Order::StartFirst, Pull::Never)
    }

    fn container(
        d: &DesiredSet,
        ordinal: u32,
        state: State,
        health: Option<Health>,
        exit: Option<i64>,
    ) -> ObservedContainer {
        ObservedContainer {
            id: format!("{}-{ordinal}", d.key.name),
            name: d.container_name(ordinal),
            set: d.key.clone(),
            revision: d.revision.clone(),
            ordinal: Some(ordinal),
            state,
            health,
            image: d.spec.image.clone(),
            spec_json: None,
            host_bindings: Vec::new(),
            drift: None,
            exit_code: exit,
        }
    }

    fn dep(n: &str, condition: Condition) -> Dependency {
        Dependency { set: key(n), condition }
    }

    #[test]
    fn a_cycle_is_named_from_where_it_closes() {
        let edges = BTreeMap::from([
            (key("a"), vec![key("b")]),
            (key("b"), vec![key("c")]),
            (key("c"), vec![key("a")]),
            (key("d"), vec![key("a")]),
        ]);
        assert_eq!(show_cycle(&find_cycle(&edges).unwrap()), "a -> b -> c -> a");
        let edges = BTreeMap::from([(key("web"), vec![key("app")]), (key("app"), vec![key("db"), key("migrate")])]);
        assert_eq!(find_cycle(&edges), None);
        assert_eq!(topological(&edges).unwrap(), vec![key("db"), key("migrate"), key("app"), key("web")]);
    }

    #[test]
    fn ready_needs_every_replica_running_and_healthy_on_the_host() {
        let db = set("db", false, 2);
        let desired = [db.clone()];
        let healthy = [
            container(&db, 0, State::Running, Some(Health::Healthy), None),
            container(&db, 1, State::Running, Some(Health::Starting), None),
        ];
        let h = [HostState { host: "a", desired: &desired, observed: Some(&healthy) }];
        let unmet = gate(&[dep("db", Condition::Ready)], "a", &h);
        assert_eq!(unmet.len(), 1);
        assert!(unmet[0].to_string().contains("waits for db Ready on host a: container shop.db."), "{}", unmet[0]);
        assert!(unmet[0].why.ends_with("running, starting"), "{}", unmet[0].why);
        assert!(gate(&[dep("db", Condition::Started)], "a", &h).is_empty());
        let both = [healthy[0].clone(), container(&db, 1, State::Running, Some(Health::Healthy), None)];
        let h = [HostState { host: "a", desired: &desired, observed: Some(&both) }];
        assert!(gate(&[dep("db", Condition::Ready)], "a", &h).is_empty());
        // A container of another revision is not the dependency's current one.
        let mut old = both.clone();
        old[1].revision = "0123456789".into();
        let h = [HostState { host: "a", desired: &desired, observed: Some(&old) }];
        assert!(gate(&[dep("db", Condition::Ready)], "a", &h)[0].why.contains("no container of its revision"));
    }

    #[test]
    fn completed_means_exit_zero_or_recorded() {
        let mig = set("migrate", true, 1);
        let desired = [mig.clone()];
        for (state, exit, ok) in [
            (State::Exited, Some(0), true),
            (State::Exited, Some(3), false),
            (State::Running, None, false),
            (State::Created, None, false),
        ] {
            let obs = [container(&mig, 0, state, None, exit)];
            let h = [HostState { host: "a", desired: &desired, observed: Some(&obs) }];
            assert_eq!(gate(&[dep("migrate", Condition::Completed)], "a", &h).is_empty(), ok, "{state:?} {exit:?}");
        }
        let obs = [container(&mig, 0, State::Exited, None, Some(3))];
        let h = [HostState { host: "a", desired: &desired, observed: Some(&obs) }];
        assert!(gate(&[dep("migrate", Condition::Completed)], "a", &h)[0].why.contains("exited (code 3)"));
        // Its container removed after it completed: the history's record stands for it.
        let recorded = [DesiredSet { task_completed: true, ..mig.clone() }];
        let h = [HostState { host: "a", desired: &recorded, observed: Some(&[]) }];
        assert!(gate(&[dep("migrate", Condition::Completed)], "a", &h).is_empty());
        let h = [HostState { host: "a", desired: &desired, observed: Some(&[]) }];
        assert_eq!(gate(&[dep("migrate", Condition::Completed)], "a", &h).len(), 1);
        // Completed of a service never holds (input validation refuses it; the gate agrees).
        let db = [set("db", false, 1)];
        let obs = [container(&db[0], 0, State::Running, None, None)];
        let h = [HostState { host: "a", desired: &db, observed: Some(&obs) }];
        assert!(gate(&[dep("db", Condition::Completed)], "a", &h)[0].why.contains("not a Task"));
    }

    #[test]
    fn a_dependency_placed_elsewhere_is_judged_on_every_host_where_it_runs() {
        let db = set("db", false, 1);
        let web = set("web", false, 1);
        let on_b = [db.clone()];
        let on_c = [db.clone()];
        let web_only = [web.clone()];
        let ready = [container(&db, 0, State::Running, None, None)];
        let exited = [container(&db, 0, State::Exited, None, Some(137))];
        let hosts = [
            HostState { host: "a", desired: &web_only, observed: Some(&[]) },
            HostState { host: "b", desired: &on_b, observed: Some(&ready) },
            HostState { host: "c", desired: &on_c, observed: Some(&exited) },
        ];
        let unmet = gate(&[dep("db", Condition::Ready)], "a", &hosts);
        assert_eq!(unmet.len(), 1);
        assert_eq!(unmet[0].host, "c");
        // On b itself only b counts.
        assert!(gate(&[dep("db", Condition::Ready)], "b", &hosts).is_empty());
        // An unobservable host where it runs is not a satisfied one.
        let hosts = [
            HostState { host: "a", desired: &web_only, observed: Some(&[]) },
            HostState { host: "b", desired: &on_b, observed: None },
        ];
        assert!(gate(&[dep("db", Condition::Started)], "a", &hosts)[0].why.contains("could not be observed"));
        // Placed nowhere: nothing to wait for would be a guess; it is unmet, and says so.
        let hosts = [HostState { host: "a", desired: &web_only, observed: Some(&[]) }];
        assert!(gate(&[dep("db", Condition::Started)], "a", &hosts)[0].why.contains("placed on no host"));
        // Zero replicas where it is placed: nothing to wait for.
        let none = [set("db", false, 0)];
        let hosts = [HostState { host: "a", desired: &none, observed: Some(&[]) }];
        assert!(gate(&[dep("db", Condition::Ready)], "a", &hosts).is_empty());
    }

    /// A small world: sets `s0..s4`, each with random dependencies on lower-numbered sets (so
    /// acyclic) or on any (maybe cyclic), each placed on some of hosts `h0..h2`, each
    /// container in a random state.
    /// Per set its dependencies (set, condition), its placement (a bit per host), and the
    /// state of its container per host.
    type World = (Vec<Vec<(usize, u8)>>, Vec<u8>, Vec<Vec<u8>>);

    fn world() -> impl Strategy<Value = World> {
        (
            prop::collection::vec(prop::collection::vec((0usize..5, 0u8..3), 0..3), 5),
            prop::collection::vec(0u8..8, 5),
            prop::collection::vec(prop::collection::vec(0u8..6, 3), 5),
        )
    }

    fn cond(c: u8) -> Condition {
        [Condition::Started, Condition::Ready, Condition::Completed][c as usize]
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// find_cycle finds a loop exactly when a topological order does not exist, and the
        /// loop it names is made of real edges.
        #[test]
        fn a_cycle_is_found_exactly_when_there_is_one(deps in prop::collection::vec(prop::collection::vec(0usize..6, 0..3), 6)) {
            let edges: BTreeMap<SetKey, Vec<SetKey>> = deps.iter().enumerate()
                .map(|(i, ds)| (key(&format!("s{i}")), ds.iter().map(|d| key(&format!("s{d}"))).collect()))
                .collect();
            match topological(&edges) {
                Ok(order) => {
                    for (i, k) in order.iter().enumerate() {
                        for d in edges.get(k).into_iter().flatten() {
                            prop_assert!(order[..i].contains(d), "{} before {}", d, k);
                        }
                    }
                }
                Err(cycle) => {
                    prop_assert_eq!(cycle.first(), cycle.last());
                    for w in cycle.windows(2) {
                        prop_assert!(edges[&w[0]].contains(&w[1]));
                    }
                }
            }
        }

        /// The gate passes on a host only when every dependency placed there is satisfied
        /// there by the containers the host shows, and every one placed elsewhere only is
        /// satisfied on all its hosts; it is deterministic.
        #[test]
        fn the_gate_passes_only_when_every_dependency_is_satisfied((deps, placement, states) in world()) {
            let sets: Vec<DesiredSet> = (0..5).map(|i| set(&format!("s{i}"), i % 2 == 1, 1)).collect();
            let hosts = ["h0", "h1", "h2"];
            let desired: Vec<Vec<DesiredSet>> = (0..3).map(|h| sets.iter().enumerate()
                .filter(|(i, _)| placement[*i] & (1 << h) != 0).map(|(_, d)| d.clone()).collect()).collect();
            let observed: Vec<Vec<ObservedContainer>> = (0..3).map(|h| desired[h].iter().filter_map(|d| {
                let i: usize = d.key.name[1..].parse().unwrap();
                match states[i][h] {
                    0 => None,
                    1 => Some(container(d, 0, State::Running, None, None)),
                    2 => Some(container(d, 0, State::Running, Some(Health::Unhealthy), None)),
                    3 => Some(container(d, 0, State::Exited, None, Some(0))),
                    4 => Some(container(d, 0, State::Exited, None, Some(1))),
                    _ => Some(container(d, 0, State::Created, None, None)),
                }
            }).collect()).collect();
            let views: Vec<HostState<'_>> = (0..3).map(|h| HostState { host: hosts[h], desired: &desired[h], observed: Some(&observed[h]) }).collect();
            for (i, ds) in deps.iter().enumerate() {
                let deps: Vec<Dependency> = ds.iter().filter(|(d, _)| *d != i).map(|(d, c)| dep(&format!("s{d}"), cond(*c))).collect();
                for on in hosts {
                    let unmet = gate(&deps, on, &views);
                    prop_assert_eq!(&unmet, &gate(&deps, on, &views));
                    for dp in &deps {
                        let d = &sets[dp.set.name[1..].parse::<usize>().unwrap()];
                        let judged: Vec<usize> = if desired[hosts.iter().position(|h| *h == on).unwrap()].iter().any(|x| x.key == d.key) {
                            vec![hosts.iter().position(|h| *h == on).unwrap()]
                        } else {
                            (0..3).filter(|h| desired[*h].iter().any(|x| x.key == d.key)).collect()
                        };
                        let ok_on = |h: usize| observed[h].iter().find(|c| c.set == d.key).is_some_and(|c| match (dp.condition, d.spec.task) {
                            (Condition::Started, true) => c.state == State::Running || c.completed(),
                            (Condition::Started, false) => c.state == State::Running,
                            (_, true) => c.completed(),
                            (Condition::Ready, false) => c.is_ready(),
                            (Condition::Completed, false) => false,
                        });
                        let met = !judged.is_empty() && judged.iter().all(|h| ok_on(*h));
                        prop_assert_eq!(met, !unmet.iter().any(|u| u.dependency == *dp), "{} on {}", dp, on);
                    }
                }
            }
        }
    }
}
