//! Rollouts across hosts: in which waves a set's changes reach its hosts.
//!
//! [`super::plan_host`] decides what changes on one host. This module decides when: a host
//! where the set serves (has a ready container) and the plan would stop or remove one is
//! *disruptive*, and at most `maxUnavailable` disruptive hosts are changed at a time, each
//! wave gated on the new containers being ready (and staying ready for `minReadySeconds`).
//! A host where the set serves nothing (a new host, every container dead) has nothing to
//! lose and joins the first wave.
//!
//! A host the set *leaves* (its selector or the host's labels no longer place it there, while
//! the set is still declared) is emptied only after every host that gains or changes has
//! passed its gated wave: a set that moves from one host to another keeps serving, and when
//! the new hosts fail, the old ones keep their containers.
//!
//! `minReadySeconds` means the new containers stayed ready the whole window: the runner marks
//! each one (start time, restart count) when its wave is ready and again at the end, and
//! [`stayed_ready`] compares the two.
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
    /// The set is no longer placed here (only removals): it waits for every other host.
    pub leaving: bool,
}

/// Split the hosts into waves, in order. Free hosts join the first wave; disruptive hosts
/// follow `size` at a time, hosts an interrupted rollout already started first, then by name.
/// Hosts the set leaves come last, in waves of their own arranged the same way, so none is
/// emptied before every host that gains the set has been through a gated wave.
pub fn waves(hosts: &[RolloutHost], size: usize) -> Vec<Vec<String>> {
    let (leaving, staying): (Vec<&RolloutHost>, Vec<&RolloutHost>) = hosts.iter().partition(|h| h.leaving);
    let mut out = arrange(&staying, size);
    out.extend(arrange(&leaving, size));
    out
}

fn arrange(hosts: &[&RolloutHost], size: usize) -> Vec<Vec<String>> {
    let size = size.max(1);
    let mut disruptive: Vec<&RolloutHost> = hosts.iter().copied().filter(|h| h.role == HostRole::Disruptive).collect();
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
        free.append(&mut out[0]);
        out[0] = free;
    }
    out
}

/// One container of the new revision at one moment of the `minReadySeconds` window, from an
/// inspect: a restart by the restart policy changes `started_at` and `restart_count` even
/// when the container looks ready again by the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyMark {
    pub id: String,
    pub name: String,
    pub started_at: String,
    pub restart_count: i64,
    pub ready: bool,
    /// What the engine says of it, for the message (`running, healthy`).
    pub state: String,
}

/// A container that did not stay ready through the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotStayedReady {
    pub container: String,
    pub reason: String,
}

/// Whether every container marked at the start of the window stayed ready until its end:
/// still there, never restarted (same start time and restart count), ready at both marks.
pub fn stayed_ready(at_start: &[ReadyMark], at_end: &[ReadyMark]) -> Result<(), NotStayedReady> {
    let fail = |m: &ReadyMark, reason: String| Err(NotStayedReady { container: m.name.clone(), reason });
    for m in at_start {
        if !m.ready {
            return fail(m, format!("not ready when its wave was ({})", m.state));
        }
        let Some(end) = at_end.iter().find(|e| e.id == m.id) else {
            return fail(m, "gone before the window ended".into());
        };
        if end.restart_count != m.restart_count || end.started_at != m.started_at {
            return fail(
                m,
                format!(
                    "restarted inside the window ({} restart(s), started again at {})",
                    end.restart_count - m.restart_count,
                    end.started_at
                ),
            );
        }
        if !end.ready {
            return fail(m, format!("not ready at the end of the window ({})", end.state));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(name: &str, role: HostRole, started: bool) -> RolloutHost {
        RolloutHost { host: name.into(), role, started, leaving: false }
    }

    fn leaving(name: &str, role: HostRole) -> RolloutHost {
        RolloutHost { host: name.into(), role, started: false, leaving: true }
    }

    fn mark(id: &str, started_at: &str, restarts: i64, ready: bool) -> ReadyMark {
        ReadyMark {
            id: id.into(),
            name: format!("c-{id}"),
            started_at: started_at.into(),
            restart_count: restarts,
            ready,
            state: if ready { "running".into() } else { "running, unhealthy".into() },
        }
    }

    #[test]
    fn a_set_that_moves_empties_the_old_host_last() {
        let hosts = [leaving("a", HostRole::Disruptive), host("b", HostRole::Free, false)];
        assert_eq!(waves(&hosts, 1), vec![vec!["b"], vec!["a"]]);
        // Free hosts alone, one leaving: it still comes after (once found by the property).
        let hosts = [host("h00", HostRole::Free, false), leaving("h01", HostRole::Free)];
        assert_eq!(waves(&hosts, 1), vec![vec!["h00"], vec!["h01"]]);
        let hosts = [
            leaving("old1", HostRole::Disruptive),
            leaving("old2", HostRole::Disruptive),
            leaving("dead", HostRole::Free),
            host("kept", HostRole::Disruptive, false),
        ];
        assert_eq!(waves(&hosts, 1), vec![vec!["kept"], vec!["dead", "old1"], vec!["old2"]]);
        // A set that only shrinks still leaves maxUnavailable hosts at a time.
        assert_eq!(waves(&hosts[..2], 1), vec![vec!["old1"], vec!["old2"]]);
    }

    #[test]
    fn a_restart_inside_the_window_is_not_staying_ready() {
        let start = [mark("1", "t0", 0, true), mark("2", "t0", 0, true)];
        assert_eq!(stayed_ready(&start, &start), Ok(()));
        // Crashed and restarted by the policy: ready again at the end, yet it did not stay.
        let end = [mark("1", "t0", 0, true), mark("2", "t3", 1, true)];
        let e = stayed_ready(&start, &end).unwrap_err();
        assert_eq!(e.container, "c-2");
        assert!(e.reason.contains("restarted"), "{e:?}");
        // The start time alone tells too (a restart count the engine reset, a new start).
        assert!(stayed_ready(&start, &[mark("1", "t0", 0, true), mark("2", "t4", 0, true)]).is_err());
        assert!(stayed_ready(&start, &[mark("1", "t0", 0, true)]).unwrap_err().reason.contains("gone"));
        assert!(stayed_ready(&start, &[mark("1", "t0", 0, true), mark("2", "t0", 0, false)]).is_err());
        assert!(stayed_ready(&[mark("1", "t0", 0, false)], &[mark("1", "t0", 0, true)]).is_err());
        assert_eq!(stayed_ready(&[], &[]), Ok(()));
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
        // No regression files: a failure prints its minimal input, which belongs in a unit test.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

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

        /// A host the set leaves is never emptied before every host that gains or changes it
        /// is in an earlier (gated) wave, and leaving still respects maxUnavailable.
        #[test]
        fn leaving_hosts_wait_for_every_gaining_host(
            roles in prop::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 0..30),
            size in 1usize..6,
        ) {
            let hosts: Vec<RolloutHost> = roles.iter().enumerate().map(|(i, (d, s, l))| RolloutHost {
                host: format!("h{i:02}"),
                role: if *d { HostRole::Disruptive } else { HostRole::Free },
                started: *s,
                leaving: *l,
            }).collect();
            let w = waves(&hosts, size);
            let wave_of = |name: &str| w.iter().position(|wave| wave.iter().any(|n| n == name)).expect("every host is in a wave");
            let mut all: Vec<String> = w.iter().flatten().cloned().collect();
            all.sort();
            prop_assert_eq!(all.len(), hosts.len());
            for gone in hosts.iter().filter(|h| h.leaving) {
                for gaining in hosts.iter().filter(|h| !h.leaving) {
                    prop_assert!(wave_of(&gaining.host) < wave_of(&gone.host), "{} before {}", gaining.host, gone.host);
                }
            }
            for wave in &w {
                prop_assert!(!wave.is_empty());
                let disruptive = wave.iter().filter(|n| hosts.iter().any(|h| &h.host == *n && h.role == HostRole::Disruptive)).count();
                prop_assert!(disruptive <= size);
            }
        }
    }
}
