//! Planning a run: every host's plan, and for each set with pending changes its history. A
//! revision that failed or was rolled back is *held*: the set stays on (or returns to) its
//! last ready revision, rebuilt from its record, until the spec changes.

use std::collections::{BTreeSet, HashMap};

use super::history::HistoryStore;
use super::report::RunError;
use super::{HostView, plan_all};
use crate::engine::history::{History, Outcome, RevisionRecord};
use crate::engine::{DesiredSet, HostPlan, SetKey};
use crate::target::SetInfo;

/// Turns a recorded template back into the set's desired state per host (by host name), the
/// way the run's input resolves (Secrets and ConfigMaps as they are now).
pub type Rebuild<'a> =
    dyn Fn(&SetKey, &serde_json::Value) -> Result<HashMap<String, DesiredSet>, RebuildError> + Send + Sync + 'a;

/// Why a recorded template no longer resolves: the input reader's own error (this layer does
/// not know the input's types; it reports, never decides on, this error).
pub type RebuildError = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// A set whose desired revision is held back by its history.
#[derive(Clone, Debug)]
pub struct Held {
    /// The record of the desired revision (Failed or RolledBack).
    pub record: RevisionRecord,
    /// The ready revision the set stays on instead, if there is one and it could be rebuilt.
    pub fallback: Option<RevisionRecord>,
}

/// The run, planned.
pub struct Prepared {
    /// Per view, its plan (None: the host could not be observed).
    pub plans: Vec<Option<HostPlan>>,
    pub held: HashMap<SetKey, Held>,
    pub histories: HashMap<SetKey, History>,
    /// Sets that cannot run this time (history unreadable, a held template that no longer
    /// resolves); their plans are dropped.
    pub errors: HashMap<SetKey, RunError>,
}

/// Plan the run. History is read only for sets with pending changes, so a converged fleet
/// costs one list per host and nothing else.
pub async fn prepare(
    views: &mut [HostView],
    sets: &HashMap<SetKey, SetInfo>,
    store: &dyn HistoryStore,
    rebuild: &Rebuild<'_>,
) -> Prepared {
    prepare_consulting(views, sets, store, rebuild, &BTreeSet::new()).await
}

/// [`prepare`], reading the history of the sets in `consult` even when their hosts already
/// run the declared revision: right after `berth rollback` has recorded that revision as
/// rolled back, nothing is pending, yet the set must return.
pub async fn prepare_consulting(
    views: &mut [HostView],
    sets: &HashMap<SetKey, SetInfo>,
    store: &dyn HistoryStore,
    rebuild: &Rebuild<'_>,
    consult: &BTreeSet<SetKey>,
) -> Prepared {
    let plans = plan_all(views);
    let mut pending: BTreeSet<SetKey> = consult.iter().filter(|k| sets.contains_key(*k)).cloned().collect();
    for p in plans.iter().flatten() {
        for sp in &p.sets {
            if sp.revision.is_some() && sets.contains_key(&sp.set) {
                pending.insert(sp.set.clone());
            }
        }
    }
    let mut prepared = Prepared { plans, held: HashMap::new(), histories: HashMap::new(), errors: HashMap::new() };
    let mut substituted = false;
    // Every pending set's history at once: a run with many new sets does not wait on each in turn.
    let loads = futures::future::join_all(pending.iter().map(|key| store.load(key))).await;
    for (key, loaded) in pending.into_iter().zip(loads) {
        let history = match loaded {
            Ok(h) => h,
            Err(e) => {
                prepared.errors.insert(key, e.into());
                continue;
            }
        };
        // A task that completed on a host is not run there again, also when its exited
        // container is gone: the planner learns it from the history.
        if let Some(revision) = desired_revision(views, &key)
            && sets[&key].task
        {
            let completed = history.completed_on(&revision);
            for v in views.iter_mut().filter(|v| completed.contains(&v.target.name)) {
                for d in v.target.desired.iter_mut().filter(|d| d.key == key && !d.task_completed) {
                    d.task_completed = true;
                    substituted = true;
                }
            }
        }
        if let Some(revision) = desired_revision(views, &key)
            && let Some(record) = history.held(&revision).cloned()
        {
            let fallback = history.last_ready(&revision).cloned();
            // A revision rolled back by hand always returns; a failed one only with autoRollback
            // (without it the hosts stay as the failure left them, for a person to look at). A
            // task never returns: running an earlier revision again would repeat its work.
            let returns =
                !sets[&key].task && (record.outcome == Outcome::RolledBack || sets[&key].policy.auto_rollback);
            let mut held = Held { record, fallback: None };
            if let Some(fb) = fallback.filter(|_| returns) {
                match rebuild(&key, &fb.template) {
                    Ok(by_host) => {
                        substitute(views, &key, &by_host);
                        substituted = true;
                        held.fallback = Some(fb);
                    }
                    Err(e) => {
                        prepared.errors.insert(key.clone(), RunError::Rebuild { number: fb.number, source: e });
                    }
                }
            }
            prepared.held.insert(key.clone(), held);
        }
        prepared.histories.insert(key, history);
    }
    if substituted {
        prepared.plans = plan_all(views);
    }
    // A held set without a way back, or with an error, changes nothing this run.
    for (key, held) in &prepared.held {
        if held.fallback.is_none() {
            drop_set(&mut prepared.plans, key);
        }
    }
    for key in prepared.errors.keys() {
        drop_set(&mut prepared.plans, key);
    }
    prepared
}

fn drop_set(plans: &mut [Option<HostPlan>], key: &SetKey) {
    for p in plans.iter_mut().flatten() {
        p.sets.retain(|sp| &sp.set != key || sp.revision.is_none());
    }
}

/// The set's desired revision, as its first placed host has it.
pub(super) fn desired_revision(views: &[HostView], key: &SetKey) -> Option<String> {
    views.iter().find_map(|v| v.target.desired.iter().find(|d| &d.key == key)).map(|d| d.revision.clone())
}

/// Put another revision of `key` in place on every host.
pub(super) fn substitute(views: &mut [HostView], key: &SetKey, by_host: &HashMap<String, DesiredSet>) {
    for v in views.iter_mut() {
        v.target.desired.retain(|d| &d.key != key);
        if let Some(d) = by_host.get(&v.target.name) {
            v.target.desired.push(d.clone());
        }
    }
}
