//! `spec.dependsOn` in the cluster. The operator reconciles one ContainerSet per run, so the
//! sets it depends on are not in its run: each is judged here from its object and status (as
//! the watch cache, or berth's own last status write, shows them), and the verdicts go to the
//! fleet runner as `RunContext::outside`. The judgement is fleet-wide (a status sums up every
//! host), where `berth apply`, holding every set in one run, judges a dependency placed on the
//! same host on that host alone.
//!
//! - *Started*: its replicas of its declared revision (`updateRevision`) run, or it is Ready;
//! - *Ready*: its `Ready` condition is True and its declared revision is the one it runs
//!   (`updateRevision == currentRevision`): a set mid-rollout, or rolled back from a failed
//!   revision, is not Ready for its dependents;
//! - *Completed*: a Task (`spec.mode: Task`) that is Ready as above: every replica of its
//!   revision exited 0 (or its history records that it did, its container since removed).
//!
//! Always unmet: a set that does not exist, is being deleted, is placed on no host, or whose
//! status is not for its current generation yet.
//!
//! [`Dependents`] says which sets a change of a set wakes: those that depend on it, when the
//! change changes a verdict.

use std::collections::{HashMap, HashSet};

use berth_crd::{ContainerSet, ContainerSetStatus, DependencyCondition, SetMode};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

/// Whether the set `name` of `namespace`, as `found` (`None`: there is none) with `status`
/// (the freshest known; `found`'s own unless berth wrote a newer one), satisfies `condition`;
/// `Err` says why not.
pub fn judge(
    condition: DependencyCondition,
    name: &str,
    namespace: &str,
    found: Option<&ContainerSet>,
    status: Option<&ContainerSetStatus>,
) -> Result<(), String> {
    let Some(set) = found else {
        return Err(format!("no ContainerSet {name} in namespace {namespace}"));
    };
    if set.metadata.deletion_timestamp.is_some() {
        return Err(format!("{name} is being deleted"));
    }
    if condition == DependencyCondition::Completed && set.spec.mode != SetMode::Task {
        return Err(format!("{name} is not a Task (spec.mode: Task): it never completes"));
    }
    let Some(st) = status.filter(|s| s.observed_generation == set.metadata.generation) else {
        return Err("its status is not current yet".into());
    };
    if st.desired_replicas == 0 && set.spec.replicas_per_host > 0 {
        return Err(format!("{name} is placed on no host"));
    }
    let ready = ready(st);
    match condition {
        DependencyCondition::Ready | DependencyCondition::Completed => ready,
        DependencyCondition::Started if ready.is_ok() => Ok(()),
        DependencyCondition::Started => {
            let revision = st.update_revision.as_deref().unwrap_or_default();
            let running = st
                .hosts
                .iter()
                .flat_map(|h| &h.containers)
                .filter(|c| c.revision == revision && matches!(c.state.as_str(), "running" | "restarting"))
                .count() as i32;
            if running >= st.desired_replicas {
                Ok(())
            } else {
                Err(format!("{running} of {} replicas run at revision {revision}", st.desired_replicas))
            }
        }
    }
}

/// Ready at the declared revision.
fn ready(st: &ContainerSetStatus) -> Result<(), String> {
    let Some(c) = st.conditions.iter().find(|c| c.type_ == "Ready") else {
        return Err("it has no Ready condition yet".into());
    };
    if c.status != "True" {
        let mut why = format!("it is not Ready ({}: {})", c.reason, c.message);
        if let Some(d) = st.conditions.iter().find(|c| c.type_ == "Degraded" && c.status == "True") {
            why.push_str(&format!("; Degraded ({}: {})", d.reason, d.message));
        }
        return Err(why);
    }
    match (st.update_revision.as_deref(), st.current_revision.as_deref()) {
        (Some(u), Some(c)) if u == c => Ok(()),
        (u, c) => Err(format!(
            "its declared revision {} is not the one it runs ({})",
            u.unwrap_or("?"),
            c.unwrap_or("none yet")
        )),
    }
}

/// Which sets a ContainerSet change wakes: the sets that name it in their `dependsOn` (same
/// namespace), and only when the change changes what they make of it, its verdict under each
/// condition. A rollout flips that a few times; the status writes between (replica counts,
/// container states, history) leave it be.
///
/// Fed every event of the one watch of the sets, it keeps its own index of who depends on
/// whom, so that a change costs a lookup, not a pass over every set. Until the first list is
/// complete, nothing wakes: every set is reconciled at start anyway.
#[derive(Default)]
pub struct Dependents {
    verdicts: HashMap<ObjectRef<ContainerSet>, [bool; 3]>,
    /// Per set, the sets it depends on.
    depends_on: HashMap<ObjectRef<ContainerSet>, Vec<ObjectRef<ContainerSet>>>,
    /// Per set depended on (whether it exists or not), the sets that depend on it.
    depended_by: HashMap<ObjectRef<ContainerSet>, HashSet<ObjectRef<ContainerSet>>>,
    /// The sets a relist has shown so far (`None`: no relist under way).
    listed: Option<HashSet<ObjectRef<ContainerSet>>>,
    synced: bool,
}

impl Dependents {
    /// The sets to wake for one event of the watch.
    pub fn on_event(&mut self, event: &watcher::Event<ContainerSet>) -> Vec<ObjectRef<ContainerSet>> {
        match event {
            watcher::Event::Init => {
                self.listed = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(cs) => {
                if let Some(listed) = &mut self.listed {
                    listed.insert(ObjectRef::from(cs));
                }
                self.applied(cs)
            }
            watcher::Event::Apply(cs) => self.applied(cs),
            watcher::Event::Delete(cs) => self.deleted(&ObjectRef::from(cs)),
            watcher::Event::InitDone => {
                // A relist: the sets deleted while the watch was down are gone now.
                let listed = self.listed.take().unwrap_or_default();
                let gone: Vec<ObjectRef<ContainerSet>> =
                    self.verdicts.keys().filter(|k| !listed.contains(*k)).cloned().collect();
                let woken = gone.iter().flat_map(|k| self.deleted(k)).collect();
                self.synced = true;
                woken
            }
        }
    }

    fn verdicts(set: Option<&ContainerSet>) -> [bool; 3] {
        let ns = set.and_then(|s| s.metadata.namespace.clone()).unwrap_or_default();
        let name = set.map(|s| s.name_any()).unwrap_or_default();
        let status = set.and_then(|s| s.status.as_ref());
        [DependencyCondition::Started, DependencyCondition::Ready, DependencyCondition::Completed]
            .map(|c| judge(c, &name, &ns, set, status).is_ok())
    }

    fn applied(&mut self, set: &ContainerSet) -> Vec<ObjectRef<ContainerSet>> {
        let me = ObjectRef::from(set);
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        let on: Vec<ObjectRef<ContainerSet>> =
            set.spec.depends_on.iter().map(|d| ObjectRef::new(&d.name).within(&ns)).collect();
        self.index(&me, on);
        let now = Self::verdicts(Some(set));
        let before = self.verdicts.insert(me.clone(), now).unwrap_or(Self::verdicts(None));
        if before != now { self.woken(&me) } else { Vec::new() }
    }

    fn deleted(&mut self, me: &ObjectRef<ContainerSet>) -> Vec<ObjectRef<ContainerSet>> {
        self.index(me, Vec::new());
        match self.verdicts.remove(me) {
            Some(before) if before != Self::verdicts(None) => self.woken(me),
            _ => Vec::new(),
        }
    }

    /// Note that `me` depends on `on` (and on nothing else).
    fn index(&mut self, me: &ObjectRef<ContainerSet>, on: Vec<ObjectRef<ContainerSet>>) {
        for old in self.depends_on.remove(me).unwrap_or_default() {
            if let Some(by) = self.depended_by.get_mut(&old) {
                by.remove(me);
                if by.is_empty() {
                    self.depended_by.remove(&old);
                }
            }
        }
        for new in &on {
            self.depended_by.entry(new.clone()).or_default().insert(me.clone());
        }
        if !on.is_empty() {
            self.depends_on.insert(me.clone(), on);
        }
    }

    fn woken(&self, me: &ObjectRef<ContainerSet>) -> Vec<ObjectRef<ContainerSet>> {
        if !self.synced {
            return Vec::new();
        }
        let mut woken: Vec<ObjectRef<ContainerSet>> = self.depended_by.get(me).into_iter().flatten().cloned().collect();
        woken.sort_by(|a, b| a.name.cmp(&b.name));
        woken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DependencyCondition::{Completed, Ready, Started};
    use serde_json::{Value, json};

    fn cond(kind: &str, status: &str, reason: &str, message: &str) -> Value {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    /// A set `db` at generation 2, its status for `observed` with `status_extra` merged in.
    fn set(mode: &str, observed: i64, status_extra: Value) -> ContainerSet {
        let mut status = json!({"observedGeneration": observed, "desiredReplicas": 2,
                                "updateRevision": "r2", "currentRevision": "r2",
                                "conditions": [cond("Ready", "True", "Converged", "2 of 2 replicas ready at revision r2")]});
        status.as_object_mut().unwrap().extend(status_extra.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
            "metadata": {"name": "db", "namespace": "ns", "generation": 2},
            "spec": {"mode": mode, "template": {"image": "db:1"}},
            "status": status
        }))
        .expect("a ContainerSet")
    }

    fn judged(c: DependencyCondition, cs: &ContainerSet) -> Result<(), String> {
        judge(c, "db", "ns", Some(cs), cs.status.as_ref())
    }

    fn container(revision: &str, state: &str) -> Value {
        json!({"name": format!("ns.db.{revision}.0"), "id": "abc", "revision": revision, "state": state})
    }

    #[test]
    fn a_missing_set_satisfies_nothing_and_says_so() {
        for c in [Started, Ready, Completed] {
            assert_eq!(judge(c, "db", "ns", None, None), Err("no ContainerSet db in namespace ns".into()));
        }
    }

    #[test]
    fn a_status_of_an_earlier_generation_satisfies_nothing() {
        let stale = set("Task", 1, json!({}));
        for c in [Started, Ready, Completed] {
            assert_eq!(judged(c, &stale), Err("its status is not current yet".into()), "{c:?}");
        }
        let mut none = set("Task", 2, json!({}));
        none.status = None;
        assert_eq!(judged(Started, &none), Err("its status is not current yet".into()));
        // The freshest status counts, not the object's own (berth wrote a newer one).
        let fresh = set("Task", 2, json!({})).status;
        assert_eq!(judge(Ready, "db", "ns", Some(&stale), fresh.as_ref()), Ok(()));
    }

    #[test]
    fn ready_needs_the_ready_condition_at_the_declared_revision() {
        let service = set("Service", 2, json!({}));
        assert_eq!(judged(Ready, &service), Ok(()));
        assert_eq!(judged(Started, &service), Ok(()), "Ready is Started too");

        let not_ready = set(
            "Service",
            2,
            json!({"conditions": [cond("Ready", "False", "NotConverged", "1 of 2 replicas ready at revision r2"),
                                  cond("Degraded", "True", "HostError", "host a: connection refused")]}),
        );
        let why = judged(Ready, &not_ready).unwrap_err();
        assert!(why.contains("not Ready (NotConverged: 1 of 2 replicas ready"), "{why}");
        assert!(why.contains("Degraded (HostError: host a: connection refused)"), "{why}");

        // Ready on a fallback (its declared revision failed and was rolled back), or ready on
        // the previous revision while the declared one rolls out: not Ready for a dependent.
        let rolled_back = set("Service", 2, json!({"currentRevision": "r1"}));
        let why = judged(Ready, &rolled_back).unwrap_err();
        assert!(why.contains("declared revision r2 is not the one it runs (r1)"), "{why}");
        let never = set("Service", 2, json!({"currentRevision": null}));
        assert!(judged(Ready, &never).unwrap_err().contains("(none yet)"));
        let mut bare = set("Service", 2, json!({"conditions": []}));
        assert_eq!(judged(Ready, &bare), Err("it has no Ready condition yet".into()));
        bare.status.as_mut().unwrap().desired_replicas = 0;
        assert_eq!(judged(Ready, &bare), Err("db is placed on no host".into()));
    }

    #[test]
    fn started_needs_every_replica_of_the_declared_revision_running() {
        let starting = |containers: Value| {
            set(
                "Service",
                2,
                json!({"currentRevision": "r1",
                       "conditions": [cond("Ready", "False", "NotConverged", "0 of 2 replicas ready at revision r2")],
                       "hosts": [{"host": "a", "ready": false, "containers": containers}]}),
            )
        };
        let both = starting(json!([container("r2", "running"), container("r2", "restarting")]));
        assert_eq!(judged(Started, &both), Ok(()));
        assert!(judged(Ready, &both).is_err(), "running is not healthy");
        let one = starting(json!([container("r2", "running"), container("r2", "created")]));
        assert_eq!(judged(Started, &one), Err("1 of 2 replicas run at revision r2".into()));
        let old = starting(json!([container("r1", "running"), container("r1", "running")]));
        assert_eq!(judged(Started, &old), Err("0 of 2 replicas run at revision r2".into()));
        let exited = starting(json!([container("r2", "running"), container("r2", "exited")]));
        assert!(judged(Started, &exited).is_err());
    }

    #[test]
    fn completed_is_a_ready_task_and_never_a_service() {
        let task = set("Task", 2, json!({}));
        assert_eq!(judged(Completed, &task), Ok(()));
        let service = set("Service", 2, json!({}));
        assert_eq!(judged(Completed, &service), Err("db is not a Task (spec.mode: Task): it never completes".into()));
        let running =
            set("Task", 2, json!({"conditions": [cond("Ready", "False", "NotConverged", "0 of 2 replicas ready")]}));
        assert!(judged(Completed, &running).unwrap_err().contains("not Ready"));
        let mut deleting = set("Task", 2, json!({}));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(judged(Completed, &deleting), Err("db is being deleted".into()));
    }

    fn depending(ns: &str, name: &str, on: &[&str]) -> ContainerSet {
        let deps: Vec<Value> = on.iter().map(|d| json!({"name": d, "condition": "Ready"})).collect();
        serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"template": {"image": "app:1"}, "dependsOn": deps}
        }))
        .expect("a ContainerSet")
    }

    fn names(refs: Vec<ObjectRef<ContainerSet>>) -> Vec<String> {
        refs.into_iter().map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name)).collect()
    }

    #[test]
    fn only_a_changed_verdict_wakes_dependents() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let mut d = Dependents::default();
        let converging =
            set("Task", 2, json!({"conditions": [cond("Ready", "False", "NotConverged", "0 of 2 replicas ready")]}));
        let web = depending("ns", "web", &["db"]);
        assert!(d.on_event(&Init).is_empty());
        assert!(d.on_event(&InitApply(web.clone())).is_empty());
        assert!(d.on_event(&InitApply(converging.clone())).is_empty());
        let done = set("Task", 2, json!({}));
        assert!(d.on_event(&InitApply(done.clone())).is_empty(), "the first list wakes nothing");
        assert!(d.on_event(&InitDone).is_empty());
        assert!(d.on_event(&Apply(done.clone())).is_empty(), "the same verdicts");
        assert_eq!(names(d.on_event(&Apply(converging.clone()))), ["ns/web"], "no longer Ready");
        let mut counted = converging.clone();
        counted.status.as_mut().unwrap().ready_replicas = 1;
        assert!(d.on_event(&Apply(counted)).is_empty(), "a status write that changes no verdict");
        assert_eq!(names(d.on_event(&Apply(done.clone()))), ["ns/web"], "now Completed");
        let mut edited = done.clone();
        edited.metadata.generation = Some(3);
        assert_eq!(
            names(d.on_event(&Apply(edited.clone()))),
            ["ns/web"],
            "a new generation: nothing is satisfied until its status is current"
        );
        assert!(d.on_event(&Delete(edited)).is_empty(), "gone: it satisfied nothing before either");
        assert_eq!(names(d.on_event(&Apply(done.clone()))), ["ns/web"], "re-created, already satisfying");
        assert_eq!(names(d.on_event(&Delete(done.clone()))), ["ns/web"], "deleted while satisfying");
        // web no longer depends on db: db's changes wake nothing.
        assert!(d.on_event(&Apply(depending("ns", "web", &[]))).is_empty());
        assert!(d.on_event(&Apply(done)).is_empty());
    }

    #[test]
    fn the_dependents_of_a_set_are_those_of_its_namespace_that_name_it() {
        use watcher::Event::{Apply, Init, InitApply, InitDone};
        let mut d = Dependents::default();
        d.on_event(&InitDone);
        for cs in [
            depending("ns", "web", &["db"]),
            depending("ns", "api", &["cache", "db"]),
            depending("ns", "cache", &[]),
            depending("other", "web", &["db"]),
        ] {
            d.on_event(&Apply(cs));
        }
        assert_eq!(names(d.on_event(&Apply(set("Service", 2, json!({}))))), ["ns/api", "ns/web"]);
        // A relist that no longer shows api (deleted while the watch was down) drops it.
        let db_ready = set("Service", 2, json!({}));
        d.on_event(&Init);
        for cs in [depending("ns", "web", &["db"]), db_ready.clone()] {
            d.on_event(&InitApply(cs));
        }
        d.on_event(&InitDone);
        let mut gone = db_ready;
        gone.status = None;
        assert_eq!(names(d.on_event(&Apply(gone))), ["ns/web"]);
    }
}
