//! The ContainerSet status as a pure function of what the reconcile observed and did, in the
//! `metav1.Condition` shape that kstatus (Flux) and Argo CD read without custom code.

use berth_crd::{ContainerSetStatus, ContainerStatus, HostSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::engine::{Health, ObservedContainer};

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
        let updated = h.containers.iter().filter(|c| c.revision == revision).count() as i32;
        let ready = h.containers.iter().filter(|c| c.revision == revision && c.is_ready()).count() as i32;
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
            ready: h.error.is_none() && ready == h.desired as i32 && h.containers.len() == h.desired as usize,
            containers: h.containers.iter().map(container_status).collect(),
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
    let progressing = if let Some((reason, _)) = &note.problem {
        ("False", reason.as_str(), "the declared revision is not rolled out; see Degraded".to_string())
    } else if converged {
        ("False", "RolloutComplete", format!("revision {revision} is rolled out"))
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
    let prev = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    status.conditions = vec![
        condition("Ready", ready, generation, prev, now),
        condition("Progressing", progressing, generation, prev, now),
        condition("Degraded", degraded, generation, prev, now),
    ];
    status
}

/// A status for a set whose spec berth refuses (invalid, or referring to missing objects).
pub fn invalid_status(
    generation: Option<i64>,
    message: &str,
    previous: Option<&ContainerSetStatus>,
    now: Timestamp,
) -> ContainerSetStatus {
    let prev = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.conditions = vec![
        condition("Ready", ("False", "InvalidSpec", message.to_string()), generation, prev, now),
        condition(
            "Progressing",
            ("False", "InvalidSpec", "nothing is rolled out until the spec is fixed".into()),
            generation,
            prev,
            now,
        ),
        condition("Degraded", ("True", "InvalidSpec", message.to_string()), generation, prev, now),
    ];
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

fn container_status(c: &ObservedContainer) -> ContainerStatus {
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
        image_digest: None,
        message: None,
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
}
