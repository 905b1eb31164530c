//! The ContainerSet status as a pure function of what the reconcile observed and did, in the
//! `metav1.Condition` shape that kstatus (Flux) and Argo CD read without custom code.
//!
//! A replica is ready when its container serves (running, and healthy if it has a
//! healthcheck); a Task's when its container completed (exited 0), or when the history records
//! its revision completed on the host and the exited container is gone.
//!
//! Conditions: `Ready`, `Progressing`, `Degraded`, and `Drifted` (True while a container on a
//! host differs from its spec: left as is under driftPolicy Report, or not replaced yet; its
//! message names each as `host <h>: <container> <kind>`). [`drift_events`] says which Events
//! the drift of one reconcile deserves.

use berth_crd::{ContainerSetStatus, ContainerStatus, HostSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;

use crate::docker::HostOutcome;
use crate::engine::{Drift, DriftReport, Health, HostPlan, ObservedContainer, SetKey, squatter_name};

/// One host's part of a set, as the reconcile saw it.
#[derive(Clone, Debug, Default)]
pub struct HostReport {
    pub host: String,
    /// Replicas wanted here (0 when the set is not placed here).
    pub desired: u32,
    /// The set's containers after this reconcile.
    pub containers: Vec<ObservedContainer>,
    /// Why the host could not be converged (unreachable, a failed step).
    pub error: Option<String>,
    /// Changes the plan still wants (0 when converged).
    pub pending: usize,
    /// What this reconcile changed here, in words (for an Event), if anything.
    pub changed: Option<String>,
    /// Drift of the set here after this reconcile: left as is (driftPolicy Report), or not
    /// replaced (yet).
    pub drift: Vec<DriftReport>,
    /// Drift of the set this reconcile replaced.
    pub healed: Vec<DriftReport>,
    /// The set is a Task: a replica is ready once its container completed (exited 0).
    pub task: bool,
    /// A Task whose revision completed here, as its history records: every replica counts as
    /// ready, also when its exited container is gone.
    pub task_completed: bool,
}

impl HostReport {
    /// Note the drift of `set` on this host: `executed` is the plan that ran and how it went
    /// (`None` when nothing ran), `after` the plan of the host as observed afterwards (the same
    /// plan when nothing ran).
    pub fn note_drift(&mut self, set: &SetKey, executed: Option<(&HostPlan, &[HostOutcome])>, after: &HostPlan) {
        self.drift = after.drifted.iter().filter(|d| &d.set == set).cloned().collect();
        self.healed.clear();
        let Some((plan, outcomes)) = executed else { return };
        for squatter in outcomes.iter().flat_map(|o| &o.sets).filter(|s| &s.set == set).flat_map(|s| &s.drift) {
            if squatter.replaced { &mut self.healed } else { &mut self.drift }.push(squatter.clone());
        }
        let still: Vec<&str> = after.drifted.iter().map(|d| d.id.as_str()).collect();
        self.healed.extend(
            plan.drifted.iter().filter(|d| &d.set == set && d.replaced && !still.contains(&d.id.as_str())).cloned(),
        );
    }
}

/// An Event a reconcile's drift deserves.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftEvent {
    pub type_: EventType,
    /// `Drifted` (Warning: left as is) or `DriftReplaced` (Normal).
    pub reason: &'static str,
    pub note: String,
    pub kind: Drift,
}

/// The Events for the drift in `hosts`: one `DriftReplaced` per drifted container replaced,
/// one `Drifted` per drifted container left as is that the previous status did not list yet
/// (so a drift that stays is announced once, not on every reconcile).
pub fn drift_events(previous: Option<&ContainerSetStatus>, hosts: &[HostReport]) -> Vec<DriftEvent> {
    let listed = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Drifted" && c.status == "True"))
        .map(|c| c.message.as_str())
        .unwrap_or("");
    let mut events = Vec::new();
    for h in hosts {
        for d in &h.healed {
            let note = match d.kind {
                Drift::Squatter => format!(
                    "host {}: {}: a foreign container ({}) held the name; stopped it and renamed it to {}, created berth's",
                    h.host,
                    d.container,
                    d.id.chars().take(12).collect::<String>(),
                    squatter_name(&d.container, &d.id)
                ),
                kind => format!(
                    "host {}: {} {kind}; replaced it with a fresh container of the same revision",
                    h.host, d.container
                ),
            };
            events.push(DriftEvent { type_: EventType::Normal, reason: "DriftReplaced", note, kind: d.kind });
        }
        for d in h.drift.iter().filter(|d| !d.replaced) {
            let line = drift_line(&h.host, d);
            if !listed.split("; ").any(|l| l == line) {
                let note = format!("{line}; left as it is (driftPolicy Report)");
                events.push(DriftEvent { type_: EventType::Warning, reason: "Drifted", note, kind: d.kind });
            }
        }
    }
    events
}

/// `host remote: default.web.ab12cd34ef.0 exec'd into`.
fn drift_line(host: &str, d: &DriftReport) -> String {
    format!("host {host}: {d}")
}

/// The rollout's part of a status.
#[derive(Clone, Debug, Default)]
pub struct RolloutNote {
    /// The revision the spec declares.
    pub declared: String,
    /// The revision the hosts should run: the declared one, or the one a failed revision fell
    /// back to.
    pub target: String,
    /// A failed or held revision: the `Degraded` reason and message.
    pub problem: Option<(String, String)>,
    /// The revision history, when this reconcile read it (else the previous status's stays).
    pub history: Option<Vec<berth_crd::RevisionRecord>>,
}

impl RolloutNote {
    /// A plain rollout of `revision`, nothing held or failed.
    pub fn of(revision: &str) -> Self {
        RolloutNote { declared: revision.into(), target: revision.into(), ..Default::default() }
    }
}

/// Build the status. `previous` keeps each condition's `lastTransitionTime` while its status
/// stays the same, so an unchanged world writes an identical status (and no write at all).
pub fn set_status(
    generation: Option<i64>,
    note: &RolloutNote,
    paused: bool,
    hosts: &[HostReport],
    previous: Option<&ContainerSetStatus>,
    now: Timestamp,
) -> ContainerSetStatus {
    let revision = note.target.as_str();
    let mut status = ContainerSetStatus {
        observed_generation: generation,
        update_revision: Some(note.declared.clone()),
        history: note.history.clone().or_else(|| previous.map(|p| p.history.clone())).unwrap_or_default(),
        ..Default::default()
    };
    let mut errors = Vec::new();
    for h in hosts {
        let done = |c: &&ObservedContainer| if h.task { c.completed() } else { c.is_ready() };
        let mut updated = h.containers.iter().filter(|c| c.revision == revision).count() as i32;
        let mut ready = h.containers.iter().filter(|c| c.revision == revision).filter(done).count() as i32;
        // A completed task's replicas stay ready once their exited containers were removed.
        if h.task_completed {
            updated = updated.max(h.desired as i32);
            ready = ready.max(h.desired as i32);
        }
        status.desired_replicas += h.desired as i32;
        status.updated_replicas += updated;
        status.ready_replicas += ready;
        if let Some(e) = &h.error {
            errors.push(format!("host {}: {e}", h.host));
        }
        if h.desired == 0 && h.containers.is_empty() && h.error.is_none() {
            continue;
        }
        status.hosts.push(HostSetStatus {
            host: h.host.clone(),
            revision: (h.desired > 0).then(|| revision.to_string()),
            ready: h.error.is_none()
                && ready == h.desired as i32
                && (h.containers.len() == h.desired as usize || h.task_completed && h.containers.is_empty()),
            containers: h
                .containers
                .iter()
                .map(|c| container_status(c, h.drift.iter().find(|d| d.id == c.id).map(|d| d.kind)))
                .collect(),
            message: h.error.clone(),
        });
    }
    status.host_count = status.hosts.iter().filter(|h| h.revision.is_some()).count() as i32;
    status.ready_replicas_text = Some(format!("{}/{}", status.ready_replicas, status.desired_replicas));
    let converged = errors.is_empty()
        && hosts.iter().all(|h| h.pending == 0)
        && status.ready_replicas == status.desired_replicas
        && status.updated_replicas == status.desired_replicas;
    if converged {
        status.current_revision = Some(revision.to_string());
    } else {
        status.current_revision = previous.and_then(|p| p.current_revision.clone());
    }

    let ready = if converged {
        (
            "True",
            "Converged",
            format!("{} of {} replicas ready at revision {revision}", status.ready_replicas, status.desired_replicas),
        )
    } else {
        (
            "False",
            "NotConverged",
            format!("{} of {} replicas ready at revision {revision}", status.ready_replicas, status.desired_replicas),
        )
    };
    let drift: Vec<String> = hosts.iter().flat_map(|h| h.drift.iter().map(|d| drift_line(&h.host, d))).collect();
    let progressing = if let Some((reason, _)) = &note.problem {
        ("False", reason.as_str(), "the declared revision is not rolled out; see Degraded".to_string())
    } else if converged {
        ("False", "RolloutComplete", format!("revision {revision} is rolled out"))
    } else if errors.is_empty() && hosts.iter().all(|h| h.pending == 0) && !drift.is_empty() {
        ("False", "DriftReported", "drifted containers are left as they are (driftPolicy Report); see Drifted".into())
    } else if paused {
        ("False", "Paused", "the rollout is paused (spec.paused)".to_string())
    } else if errors.is_empty() {
        ("True", "RollingOut", format!("rolling out revision {revision}"))
    } else {
        ("False", "RolloutStopped", "the rollout stopped at an error; see Degraded".to_string())
    };
    let degraded = match &note.problem {
        Some((reason, message)) => {
            let mut m = message.clone();
            if !errors.is_empty() {
                m.push_str("; ");
                m.push_str(&errors.join("; "));
            }
            ("True", reason.as_str(), m)
        }
        None if errors.is_empty() => ("False", "AsExpected", "no host reports a problem".to_string()),
        None => ("True", "HostError", errors.join("; ")),
    };
    let drifted = if drift.is_empty() {
        ("False", "NoDrift", "every container is as berth created it".to_string())
    } else {
        ("True", "Drifted", drift.join("; "))
    };
    let prev = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    status.conditions = vec![
        condition("Ready", ready, generation, prev, now),
        condition("Progressing", progressing, generation, prev, now),
        condition("Degraded", degraded, generation, prev, now),
        condition("Drifted", drifted, generation, prev, now),
    ];
    status
}

/// A status for a set whose spec berth refuses (invalid, or referring to missing objects).
pub fn invalid_status(
    generation: Option<i64>,
    reason: &str,
    message: &str,
    previous: Option<&ContainerSetStatus>,
    now: Timestamp,
) -> ContainerSetStatus {
    let prev = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.conditions = vec![
        condition("Ready", ("False", reason, message.to_string()), generation, prev, now),
        condition(
            "Progressing",
            ("False", reason, "nothing is rolled out until the spec is fixed".into()),
            generation,
            prev,
            now,
        ),
        condition("Degraded", ("True", reason, message.to_string()), generation, prev, now),
    ];
    // No host is looked at: what was last known about drift stays.
    status.conditions.extend(prev.iter().find(|c| c.type_ == "Drifted").cloned());
    status
}

fn condition(
    kind: &str,
    (status, reason, message): (&str, &str, String),
    generation: Option<i64>,
    prev: &[Condition],
    now: Timestamp,
) -> Condition {
    let since = prev
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

fn container_status(c: &ObservedContainer, drift: Option<Drift>) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        id: c.id.chars().take(12).collect(),
        revision: c.revision.clone(),
        state: c.state.to_string(),
        health: c.health.map(|h| {
            match h {
                Health::Starting => "starting",
                Health::Healthy => "healthy",
                Health::Unhealthy => "unhealthy",
            }
            .to_string()
        }),
        image_digest: crate::engine::pin::digest_of(&c.image).map(str::to_string),
        message: drift.map(|d| format!("drift: {d}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{SetKey, State};

    fn running(rev: &str, ordinal: u32) -> ObservedContainer {
        ObservedContainer {
            id: format!("id{ordinal}"),
            name: format!("ns.web.{rev}.{ordinal}"),
            set: SetKey::new("ns", "web"),
            revision: rev.into(),
            ordinal: Some(ordinal),
            state: State::Running,
            health: Some(Health::Healthy),
            image: String::new(),
            spec_json: None,
            host_bindings: Vec::new(),
            drift: None,
            exit_code: None,
        }
    }

    fn cond<'a>(s: &'a ContainerSetStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn converged_is_ready_and_stable() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let hosts = [HostReport {
            host: "a".into(),
            desired: 2,
            containers: vec![running("r1", 0), running("r1", 1)],
            ..Default::default()
        }];
        let s0 = set_status(Some(3), &RolloutNote::of("r1"), false, &hosts, None, t0);
        assert_eq!(cond(&s0, "Ready").status, "True");
        assert_eq!(s0.current_revision.as_deref(), Some("r1"));
        assert_eq!(s0.ready_replicas_text.as_deref(), Some("2/2"));
        // Same world later: identical status, so no write.
        let s1 = set_status(Some(3), &RolloutNote::of("r1"), false, &hosts, Some(&s0), t1);
        assert_eq!(s0, s1);
    }

    #[test]
    fn an_unreachable_host_is_named_in_degraded() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let hosts = [
            HostReport { host: "a".into(), desired: 1, containers: vec![running("r1", 0)], ..Default::default() },
            HostReport { host: "b".into(), desired: 1, error: Some("connection refused".into()), ..Default::default() },
        ];
        let s = set_status(Some(1), &RolloutNote::of("r1"), false, &hosts, None, now);
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Degraded").status, "True");
        assert!(cond(&s, "Degraded").message.contains("host b: connection refused"));
        assert_eq!(s.ready_replicas, 1);
        assert_eq!(s.desired_replicas, 2);
    }

    #[test]
    fn a_rollout_in_progress_keeps_the_previous_current_revision() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let done = set_status(
            Some(1),
            &RolloutNote::of("r1"),
            false,
            &[HostReport { host: "a".into(), desired: 1, containers: vec![running("r1", 0)], ..Default::default() }],
            None,
            now,
        );
        let mid = set_status(
            Some(2),
            &RolloutNote::of("r2"),
            false,
            &[HostReport {
                host: "a".into(),
                desired: 1,
                containers: vec![running("r1", 0)],
                pending: 1,
                ..Default::default()
            }],
            Some(&done),
            now,
        );
        assert_eq!(mid.current_revision.as_deref(), Some("r1"));
        assert_eq!(mid.update_revision.as_deref(), Some("r2"));
        assert_eq!(cond(&mid, "Progressing").status, "True");
    }

    #[test]
    fn a_rolled_back_revision_is_degraded_with_the_reason_and_ready_on_the_fallback() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let note = RolloutNote {
            declared: "r2".into(),
            target: "r1".into(),
            problem: Some(("RolledBack".into(), "revision r2 failed (host a: unhealthy)".into())),
            history: Some(vec![berth_crd::RevisionRecord { revision: 2, hash: "r2".into(), ..Default::default() }]),
        };
        let hosts =
            [HostReport { host: "a".into(), desired: 1, containers: vec![running("r1", 0)], ..Default::default() }];
        let s = set_status(Some(2), &note, false, &hosts, None, now);
        assert_eq!(cond(&s, "Ready").status, "True", "the hosts run what they should: the fallback");
        assert_eq!(cond(&s, "Degraded").status, "True");
        assert_eq!(cond(&s, "Degraded").reason, "RolledBack");
        assert!(cond(&s, "Degraded").message.contains("host a: unhealthy"));
        assert_eq!(cond(&s, "Progressing").status, "False");
        assert_eq!(s.update_revision.as_deref(), Some("r2"));
        assert_eq!(s.current_revision.as_deref(), Some("r1"));
        assert_eq!(s.history.len(), 1);
        // A later reconcile that did not read history keeps it.
        let later = set_status(Some(2), &RolloutNote { history: None, ..note }, false, &hosts, Some(&s), now);
        assert_eq!(later.history, s.history);
    }

    fn exited(rev: &str, ordinal: u32, code: i64) -> ObservedContainer {
        ObservedContainer { state: State::Exited, exit_code: Some(code), health: None, ..running(rev, ordinal) }
    }

    #[test]
    fn a_task_is_ready_once_its_containers_completed() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let task = |containers: Vec<ObservedContainer>, pending: usize| {
            let hosts =
                [HostReport { host: "a".into(), desired: 2, containers, pending, task: true, ..Default::default() }];
            set_status(Some(1), &RolloutNote::of("r1"), false, &hosts, None, now)
        };
        let mut no_check = running("r1", 1);
        no_check.health = None;
        let half = task(vec![exited("r1", 0, 0), no_check], 1);
        assert_eq!(cond(&half, "Ready").status, "False", "a running task has not completed");
        assert_eq!((half.ready_replicas, half.updated_replicas), (1, 2));
        let done = task(vec![exited("r1", 0, 0), exited("r1", 1, 0)], 0);
        assert_eq!(cond(&done, "Ready").status, "True");
        assert_eq!(done.current_revision.as_deref(), Some("r1"));
        assert!(done.hosts[0].ready);
        let failed = task(vec![exited("r1", 0, 0), exited("r1", 1, 3)], 0);
        assert_eq!(cond(&failed, "Ready").status, "False", "exit 3 did not complete");
        assert_eq!(failed.ready_replicas, 1);
        // A service's exited container is not ready, whatever its code.
        let service =
            [HostReport { host: "a".into(), desired: 1, containers: vec![exited("r1", 0, 0)], ..Default::default() }];
        let s = set_status(Some(1), &RolloutNote::of("r1"), false, &service, None, now);
        assert_eq!(s.ready_replicas, 0);
    }

    #[test]
    fn a_completed_task_whose_containers_were_removed_stays_ready() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let hosts =
            [HostReport { host: "a".into(), desired: 1, task: true, task_completed: true, ..Default::default() }];
        let s = set_status(Some(1), &RolloutNote::of("r1"), false, &hosts, None, now);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!((s.ready_replicas, s.updated_replicas, s.desired_replicas), (1, 1, 1));
        assert_eq!(s.current_revision.as_deref(), Some("r1"));
        assert!(s.hosts[0].ready && s.hosts[0].containers.is_empty());
        // Recorded or not, the completed container counts once.
        let kept = [HostReport { containers: vec![exited("r1", 0, 0)], ..hosts[0].clone() }];
        let s = set_status(Some(1), &RolloutNote::of("r1"), false, &kept, None, now);
        assert_eq!((s.ready_replicas, s.updated_replicas), (1, 1));
        assert!(s.hosts[0].ready);
    }

    fn exec_drift(replaced: bool) -> DriftReport {
        DriftReport {
            set: SetKey::new("ns", "web"),
            container: "ns.web.r1.0".into(),
            id: "id0".into(),
            kind: Drift::Exec,
            replaced,
        }
    }

    #[test]
    fn drift_left_as_is_is_a_drifted_condition_and_one_warning() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clean = [HostReport {
            host: "remote".into(),
            desired: 1,
            containers: vec![running("r1", 0)],
            ..Default::default()
        }];
        let s0 = set_status(Some(1), &RolloutNote::of("r1"), false, &clean, None, now);
        let no = cond(&s0, "Drifted");
        assert_eq!((no.status.as_str(), no.reason.as_str()), ("False", "NoDrift"));

        let hosts = [HostReport { drift: vec![exec_drift(false)], ..clean[0].clone() }];
        let s1 = set_status(Some(1), &RolloutNote::of("r1"), false, &hosts, Some(&s0), now);
        let d = cond(&s1, "Drifted");
        assert_eq!(d.status, "True");
        assert_eq!(d.message, "host remote: ns.web.r1.0 exec'd into");
        assert_eq!(cond(&s1, "Ready").status, "True", "an exec'd container still serves");
        assert_eq!(s1.hosts[0].containers[0].message.as_deref(), Some("drift: exec'd into"));

        let events = drift_events(Some(&s0), &hosts);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].type_, events[0].reason), (EventType::Warning, "Drifted"));
        assert!(
            events[0].note.starts_with("host remote: ns.web.r1.0 exec'd into; left as it is"),
            "{}",
            events[0].note
        );
        // Announced once: the next reconcile sees it listed already.
        assert!(drift_events(Some(&s1), &hosts).is_empty());
    }

    #[test]
    fn a_stopped_container_left_as_is_is_not_a_rollout_in_progress() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut stopped = running("r1", 0);
        stopped.state = State::Exited;
        let report = DriftReport { kind: Drift::Stopped, ..exec_drift(false) };
        let hosts = [HostReport {
            host: "a".into(),
            desired: 1,
            containers: vec![stopped],
            drift: vec![report],
            ..Default::default()
        }];
        let s = set_status(Some(1), &RolloutNote::of("r1"), false, &hosts, None, now);
        assert_eq!(cond(&s, "Ready").status, "False");
        let p = cond(&s, "Progressing");
        assert_eq!((p.status.as_str(), p.reason.as_str()), ("False", "DriftReported"));
    }

    #[test]
    fn replaced_drift_is_a_normal_event_and_no_condition() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let squatter = DriftReport { kind: Drift::Squatter, id: "abcdef012345".into(), ..exec_drift(true) };
        let hosts = [HostReport {
            host: "a".into(),
            desired: 1,
            containers: vec![running("r1", 0)],
            healed: vec![exec_drift(true), squatter],
            ..Default::default()
        }];
        let s = set_status(Some(1), &RolloutNote::of("r1"), false, &hosts, None, now);
        assert_eq!(cond(&s, "Drifted").status, "False");
        let events = drift_events(None, &hosts);
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.type_ == EventType::Normal && e.reason == "DriftReplaced"));
        assert!(events[1].note.contains("renamed it to ns.web.r1.0.squatter-abcdef012345"), "{}", events[1].note);
    }
}
