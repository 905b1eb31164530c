//! Rollouts across hosts: in which waves a set's changes reach its hosts.
//!
//! [`super::plan_host`] decides what changes on one host. This module decides when: a host
//! where the set serves (has a ready container) and the plan would stop or remove one is
//! *disruptive*, and at most `maxUnavailable` disruptive hosts are changed at a time, each
//! wave gated on the new containers being ready (and staying ready for `minReadySeconds`).
//! A host where the set serves nothing (a new host, every container dead) has nothing to
//! lose and joins the first wave.
//!
//! Pure: the fleet runner (`crate::fleet`) does the waiting and the Docker calls.

use std::time::Duration;

use super::model::ObservedContainer;
use super::plan::{SetPlan, Step};

/// `spec.strategy.maxUnavailable`: how many disruptive hosts change at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxUnavailable {
    Hosts(u32),
    /// A percentage of the set's disruptive hosts, rounded down.
    Percent(u32),
}

impl MaxUnavailable {
    /// The wave size for `hosts` disruptive hosts: never below 1, or no rollout could progress.
    pub fn wave_size(self, hosts: usize) -> usize {
        let n = match self {
            MaxUnavailable::Hosts(n) => n as usize,
            MaxUnavailable::Percent(p) => hosts * p.min(100) as usize / 100,
        };
        n.max(1)
    }
}

impl Default for MaxUnavailable {
    /// One host at a time: the smallest blast radius, and what a fleet of a few hosts wants.
    fn default() -> Self {
        MaxUnavailable::Hosts(1)
    }
}

/// How one set rolls out across its hosts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutPolicy {
    pub max_unavailable: MaxUnavailable,
    /// How long new containers must stay ready before their host counts as done.
    pub min_ready: Duration,
    /// `spec.paused`: nothing of the set changes.
    pub paused: bool,
    /// Return every host to the last fully ready revision when a revision fails.
    pub auto_rollback: bool,
    /// `revisionHistoryLimit`.
    pub history_limit: usize,
}

/// Whether changing a host can take away something that serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostRole {
    /// The plan stops or removes a container of the set that is ready.
    Disruptive,
    /// The set serves nothing here, or the plan only adds.
    Free,
}

/// The role of a set's plan on a host; `observed` are the host's containers (any set).
pub fn host_role(plan: &SetPlan, observed: &[ObservedContainer]) -> HostRole {
    let ready: Vec<&str> =
        observed.iter().filter(|c| c.set == plan.set && c.is_ready()).map(|c| c.id.as_str()).collect();
    let disrupts = plan.changes.iter().flat_map(|c| &c.steps).any(|s| match s {
        Step::Stop { id, .. } | Step::Remove { id, .. } => ready.contains(&id.as_str()),
        _ => false,
    });
    if disrupts { HostRole::Disruptive } else { HostRole::Free }
}

/// One host of a set's rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutHost {
    pub host: String,
    pub role: HostRole,
    /// The host already runs a container of the desired revision: an interrupted rollout
    /// reached it, so it finishes first and the number of half-done hosts stays bounded.
    pub started: bool,
}

/// Split the hosts into waves, in order. Free hosts join the first wave; disruptive hosts
/// follow `size` at a time, hosts an interrupted rollout already started first, then by name.
pub fn waves(hosts: &[RolloutHost], size: usize) -> Vec<Vec<String>> {
    let size = size.max(1);
    let mut disruptive: Vec<&RolloutHost> = hosts.iter().filter(|h| h.role == HostRole::Disruptive).collect();
    disruptive.sort_by(|a, b| (!a.started, &a.host).cmp(&(!b.started, &b.host)));
    let mut free: Vec<String> = hosts.iter().filter(|h| h.role == HostRole::Free).map(|h| h.host.clone()).collect();
    free.sort();
    let mut out: Vec<Vec<String>> =
        disruptive.chunks(size).map(|c| c.iter().map(|h| h.host.clone()).collect()).collect();
    if out.is_empty() {
        if !free.is_empty() {
            out.push(free);
        }
    } else {
        free.extend(out[0].drain(..));
        out[0] = free;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(name: &str, role: HostRole, started: bool) -> RolloutHost {
        RolloutHost { host: name.into(), role, started }
    }

    #[test]
    fn wave_size_is_never_zero() {
        assert_eq!(MaxUnavailable::Hosts(0).wave_size(3), 1);
        assert_eq!(MaxUnavailable::Hosts(2).wave_size(3), 2);
        assert_eq!(MaxUnavailable::Percent(25).wave_size(3), 1);
        assert_eq!(MaxUnavailable::Percent(50).wave_size(10), 5);
        assert_eq!(MaxUnavailable::Percent(100).wave_size(7), 7);
        assert_eq!(MaxUnavailable::Percent(250).wave_size(4), 4);
    }

    #[test]
    fn one_host_at_a_time_started_first() {
        let hosts = [
            host("a", HostRole::Disruptive, false),
            host("b", HostRole::Disruptive, true),
            host("c", HostRole::Disruptive, false),
            host("new", HostRole::Free, false),
        ];
        assert_eq!(waves(&hosts, 1), vec![vec!["new", "b"], vec!["a"], vec!["c"]]);
        assert_eq!(waves(&hosts, 2), vec![vec!["new", "b", "a"], vec!["c"]]);
    }

    #[test]
    fn free_hosts_alone_make_one_wave() {
        let hosts = [host("b", HostRole::Free, false), host("a", HostRole::Free, false)];
        assert_eq!(waves(&hosts, 1), vec![vec!["a", "b"]]);
        assert!(waves(&[], 1).is_empty());
    }

    proptest! {
        /// Every host is in exactly one wave, and no wave holds more disruptive hosts than allowed.
        #[test]
        fn waves_cover_and_bound(roles in prop::collection::vec((any::<bool>(), any::<bool>()), 0..30), size in 1usize..6) {
            let hosts: Vec<RolloutHost> = roles.iter().enumerate().map(|(i, (d, s))| host(
                &format!("h{i:02}"), if *d { HostRole::Disruptive } else { HostRole::Free }, *s)).collect();
            let w = waves(&hosts, size);
            let mut all: Vec<String> = w.iter().flatten().cloned().collect();
            all.sort();
            let mut names: Vec<String> = hosts.iter().map(|h| h.host.clone()).collect();
            names.sort();
            prop_assert_eq!(all, names);
            for wave in &w {
                prop_assert!(!wave.is_empty());
                let disruptive = wave.iter().filter(|n| hosts.iter().any(|h| &h.host == *n && h.role == HostRole::Disruptive)).count();
                prop_assert!(disruptive <= size);
            }
            // Free hosts never wait behind a disruptive wave.
            for (i, wave) in w.iter().enumerate().skip(1) {
                prop_assert!(wave.iter().all(|n| hosts.iter().any(|h| &h.host == n && h.role == HostRole::Disruptive)), "wave {}", i);
            }
        }
    }
}
