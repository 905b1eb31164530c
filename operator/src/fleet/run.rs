//! The run itself: prepare (plan, consult history) and execute (waves, gates, rollback).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::jiff::Timestamp;

use super::history::{HistoryError, HistoryStore};
use super::{HostView, plan_all};
use crate::docker::{self, DockerError, ExecOptions, HostOutcome, Progress};
use crate::engine::history::{History, HistoryWrite, Outcome, RevisionRecord, collectable_images};
use crate::engine::rollout::{HostRole, ReadyMark, RolloutHost, host_role, stayed_ready, waves};
use crate::engine::{DesiredSet, HostPlan, SetKey, SetPlan, Step, plan_host};
use crate::target::SetInfo;

/// Turns a recorded template back into the set's desired state per host (by host name), the
/// way the run's input resolves (Secrets and ConfigMaps as they are now).
pub type Rebuild<'a> =
    dyn Fn(&SetKey, &serde_json::Value) -> Result<HashMap<String, DesiredSet>, RebuildError> + Send + Sync + 'a;

/// Why a recorded template no longer resolves: the input reader's own error (this layer does
/// not know the input's types; it reports, never decides on, this error).
pub type RebuildError = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// Why a set could not finish its run for a reason that is not its revision's: nothing is
/// recorded as failed or rolled back, and the next run tries again.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RunError {
    /// A host's engine failed a step.
    #[error("host {host}: {source}")]
    Host { host: String, source: DockerError },
    /// A host could not be looked at during the `minReadySeconds` window.
    #[error("host {host}: minReadySeconds check: {source}")]
    MinReadyCheck { host: String, source: DockerError },
    /// The set's history could not be read or written.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A recorded revision to go back to no longer resolves (say, a Secret it used is gone).
    #[error("revision {number} cannot be rebuilt: {source}")]
    Rebuild { number: u64, source: RebuildError },
}

impl RunError {
    /// The kind, for decisions and metric labels: the host's error kind, `history` or `rebuild`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Host { source, .. } | RunError::MinReadyCheck { source, .. } => source.kind().as_str(),
            RunError::History(_) => "history",
            RunError::Rebuild { .. } => "rebuild",
        }
    }
}

impl FailureReason {
    /// `not_ready` or `did_not_stay_ready`, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FailureReason::NotReady(_) => "not_ready",
            FailureReason::DidNotStayReady { .. } => "did_not_stay_ready",
        }
    }
}

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
        if let Some(revision) = desired_revision(views, &key)
            && let Some(record) = history.held(&revision).cloned()
        {
            let fallback = history.last_ready(&revision).cloned();
            // A revision rolled back by hand always returns; a failed one only with autoRollback
            // (without it the hosts stay as the failure left them, for a person to look at).
            let returns = record.outcome == Outcome::RolledBack || sets[&key].policy.auto_rollback;
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
fn desired_revision(views: &[HostView], key: &SetKey) -> Option<String> {
    views.iter().find_map(|v| v.target.desired.iter().find(|d| &d.key == key)).map(|d| d.revision.clone())
}

/// Put another revision of `key` in place on every host.
fn substitute(views: &mut [HostView], key: &SetKey, by_host: &HashMap<String, DesiredSet>) {
    for v in views.iter_mut() {
        v.target.desired.retain(|d| &d.key != key);
        if let Some(d) = by_host.get(&v.target.name) {
            v.target.desired.push(d.clone());
        }
    }
}

/// Why a rollout stopped: the host, the container, what happened.
#[derive(Clone, Debug)]
pub struct Failure {
    pub host: String,
    pub container: Option<String>,
    pub reason: FailureReason,
}

/// What the revision's container did.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FailureReason {
    /// It exited, turned unhealthy, or missed `progressDeadlineSeconds`
    /// ([`DockerError::not_ready`]).
    #[error(transparent)]
    NotReady(DockerError),
    /// `minReadySeconds`: it was restarted, or stopped being ready, inside the window.
    #[error("did not stay ready for {seconds}s (minReadySeconds): {detail}")]
    DidNotStayReady { seconds: u64, detail: String },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = self.reason.to_string();
        match &self.container {
            Some(c) if !reason.contains(c.as_str()) => write!(f, "host {}: container {c}: {reason}", self.host),
            _ => write!(f, "host {}: {reason}", self.host),
        }
    }
}

/// How one set's part of the run ended.
#[derive(Clone, Debug)]
pub enum SetResult {
    /// Every reachable host runs the revision the run aimed for.
    Converged,
    /// `spec.paused`: the changes wait.
    Paused { pending: usize },
    /// The declared revision failed before (or was rolled back) and is not retried until the
    /// spec changes; the set stays on `fallback` if there is one.
    Held { revision: String, number: u64, fallback: Option<u64>, message: Option<String>, by_hand: bool },
    /// The revision failed in this run.
    Failed { failure: Failure, rolled_back_to: Option<u64>, rollback_error: Option<String> },
    /// A step failed for a reason that is not the revision's (a pull, the engine); retried
    /// next time.
    Error(RunError),
}

/// One set's part of the run.
#[derive(Clone, Debug)]
pub struct SetReport {
    pub key: SetKey,
    /// The revision the run aimed for (a fallback when held).
    pub revision: Option<String>,
    pub result: SetResult,
    /// Hosts of the set that could not be reached; the others went on.
    pub unreachable: Vec<String>,
    /// History as it stands after the run, when the run read it.
    pub history: Option<History>,
}

/// What a run did.
pub struct FleetReport {
    /// Per view: what its execution did.
    pub outcomes: Vec<Vec<HostOutcome>>,
    pub sets: Vec<SetReport>,
}

/// Records `(host, image)` for each pull the executor reports.
struct PullRecorder<'a> {
    inner: &'a dyn Progress,
    pulls: Mutex<BTreeSet<(String, String)>>,
}

impl Progress for PullRecorder<'_> {
    fn step_started(&self, host: &str, set: &SetKey, step: &Step) {
        self.inner.step_started(host, set, step)
    }
    fn step_finished(&self, host: &str, set: &SetKey, step: &Step, elapsed: Duration) {
        self.inner.step_finished(host, set, step, elapsed)
    }
    fn pull_progress(&self, host: &str, image: &str, layer: &str, status: &str, current: i64, total: i64) {
        self.pulls.lock().expect("never poisoned").insert((host.to_string(), image.to_string()));
        self.inner.pull_progress(host, image, layer, status, current, total)
    }
}

/// Everything `execute` needs besides the views.
pub struct RunContext<'a> {
    pub sets: &'a HashMap<SetKey, SetInfo>,
    pub store: &'a dyn HistoryStore,
    pub rebuild: &'a Rebuild<'a>,
    pub options: &'a ExecOptions,
    pub progress: &'a dyn Progress,
}

/// Execute a prepared run: removals first (they free host ports), then every set's waves,
/// sets side by side. A set that is still declared and only leaves some hosts empties them
/// inside its own rollout, after the hosts it gains ([`leaves_in_rollout`]).
pub async fn execute(views: &mut [HostView], prepared: Prepared, ctx: &RunContext<'_>) -> FleetReport {
    let progress = PullRecorder { inner: ctx.progress, pulls: Mutex::new(BTreeSet::new()) };
    let mut outcomes: Vec<Vec<HostOutcome>> = views.iter().map(|_| Vec::new()).collect();

    // Removals of sets no longer declared, and port-freeing ones, all at once.
    let views_ref: &[HostView] = views;
    let removals = views.iter().zip(&prepared.plans).map(|(v, p)| {
        // A paused set keeps even the containers it would remove.
        let paused = |k: &SetKey| ctx.sets.get(k).is_some_and(|i| i.policy.paused);
        let sets: Vec<SetPlan> = p
            .iter()
            .flat_map(|p| &p.sets)
            .filter(|sp| {
                (sp.frees_ports || (sp.revision.is_none() && !leaves_in_rollout(views_ref, ctx, sp)))
                    && !paused(&sp.set)
            })
            .cloned()
            .collect();
        let progress = &progress;
        async move {
            match (&v.docker, sets.is_empty()) {
                (Some(d), false) => {
                    let plan = HostPlan { host: v.target.name.clone(), sets, drifted: Vec::new() };
                    Some(docker::execute_host(d, &plan, &v.target.desired, ctx.options, progress).await)
                }
                _ => None,
            }
        }
    });
    for (i, o) in futures::future::join_all(removals).await.into_iter().enumerate() {
        outcomes[i].extend(o);
    }

    // Every set in the run, each with its waves.
    let mut keys: Vec<SetKey> = ctx.sets.keys().cloned().collect();
    keys.sort();
    let runs = keys.iter().map(|key| run_set(views_ref, &prepared, key, ctx, &progress).boxed());
    let results = futures::future::join_all(runs).await;
    let mut reports = Vec::new();
    let mut substitutions = Vec::new();
    for (report, host_outcomes, subst) in results {
        for (i, o) in host_outcomes {
            outcomes[i].push(o);
        }
        if let Some(s) = subst {
            substitutions.push(s);
        }
        reports.push(report);
    }
    // A rollback changed what the set's hosts should run: the views say so from now on.
    for (key, by_host) in substitutions {
        substitute(views, &key, &by_host);
    }
    FleetReport { outcomes, sets: reports }
}

/// A removal that waits for its set's rollout: the set is still declared and placed somewhere
/// (it only leaves this host), and the removal frees no port another set needs here now.
fn leaves_in_rollout(views: &[HostView], ctx: &RunContext<'_>, sp: &SetPlan) -> bool {
    sp.revision.is_none()
        && !sp.frees_ports
        && ctx.sets.contains_key(&sp.set)
        && views.iter().any(|v| v.target.desired.iter().any(|d| d.key == sp.set))
}

type SetRun = (SetReport, Vec<(usize, HostOutcome)>, Option<(SetKey, HashMap<String, DesiredSet>)>);

async fn run_set(
    views: &[HostView],
    prepared: &Prepared,
    key: &SetKey,
    ctx: &RunContext<'_>,
    progress: &PullRecorder<'_>,
) -> SetRun {
    let info = &ctx.sets[key];
    let revision = desired_revision(views, key);
    let mut report = SetReport {
        key: key.clone(),
        revision: revision.clone(),
        result: SetResult::Converged,
        unreachable: views
            .iter()
            .filter(|v| v.observed.is_err() && v.target.scope.owns(key))
            .map(|v| v.target.name.clone())
            .collect(),
        history: prepared.histories.get(key).cloned(),
    };
    let mut outcomes = Vec::new();
    if let Some(e) = prepared.errors.get(key) {
        report.result = SetResult::Error(e.clone());
        return (report, outcomes, None);
    }
    let held = prepared.held.get(key);
    if let Some(h) = held {
        report.result = SetResult::Held {
            revision: h.record.hash.clone(),
            number: h.record.number,
            fallback: h.fallback.as_ref().map(|f| f.number),
            message: h.record.message.clone(),
            by_hand: h.record.outcome == Outcome::RolledBack,
        };
    }
    // The hosts where this set changes, with their plans.
    let work: Vec<(usize, SetPlan)> = prepared
        .plans
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let sp = p
                .as_ref()?
                .sets
                .iter()
                .find(|sp| &sp.set == key && (sp.revision.is_some() || leaves_in_rollout(views, ctx, sp)))?;
            (!sp.changes.is_empty() && views[i].docker.is_some()).then(|| (i, sp.clone()))
        })
        .collect();
    if work.is_empty() {
        return (report, outcomes, None);
    }
    if info.policy.paused {
        report.result = SetResult::Paused { pending: work.iter().map(|(_, sp)| sp.changes.len()).sum() };
        return (report, outcomes, None);
    }
    let revision = revision.unwrap_or_default();
    let mut history = prepared.histories.get(key).cloned().unwrap_or_default();
    // A new revision is recorded before the first container of it is made.
    let rolling_new = held.is_none() && history.latest().is_none_or(|l| l.hash != revision);
    if rolling_new {
        let record = new_record(views, key, &revision, info, Outcome::Progressing, None);
        if let Err(e) = write_all(ctx.store, key, &mut history, record, info.policy.history_limit).await {
            report.result = SetResult::Error(e.into());
            return (report, outcomes, None);
        }
    }

    let roles: Vec<RolloutHost> = work
        .iter()
        .map(|(i, sp)| {
            let observed = views[*i].observed.as_deref().unwrap_or(&[]);
            RolloutHost {
                host: views[*i].target.name.clone(),
                role: host_role(sp, observed),
                started: observed.iter().any(|c| &c.set == key && c.revision == revision),
                leaving: sp.revision.is_none(),
            }
        })
        .collect();
    let disruptive = roles.iter().filter(|r| r.role == HostRole::Disruptive).count();
    let plan_of = |name: &str| work.iter().find(|(i, _)| views[*i].target.name == name).expect("a wave host has work");

    let mut failure: Option<Failure> = None;
    let mut transient: Option<RunError> = None;
    let mut touched: Vec<usize> = Vec::new();
    for wave in waves(&roles, info.policy.max_unavailable.wave_size(disruptive)) {
        let runs = wave.iter().map(|name| {
            let (i, sp) = plan_of(name);
            let v = &views[*i];
            let plan = HostPlan { host: v.target.name.clone(), sets: vec![sp.clone()], drifted: Vec::new() };
            async move {
                let d = v.docker.as_ref().expect("work hosts are connected");
                (*i, docker::execute_host(d, &plan, &v.target.desired, ctx.options, progress).await)
            }
            .boxed()
        });
        let results = futures::future::join_all(runs).await;
        let mut ran_ok = Vec::new();
        for (i, outcome) in results {
            touched.push(i);
            let v = &views[i];
            match outcome.sets.iter().find(|s| s.error.is_some()) {
                None => ran_ok.push(i),
                Some(s) => {
                    let error = s.error.clone().expect("found by its error");
                    if let Some(container) = error.not_ready() {
                        failure.get_or_insert(Failure {
                            host: v.target.name.clone(),
                            container: Some(container.to_string()),
                            reason: FailureReason::NotReady(error),
                        });
                    } else if docker::observe(&v.target.name, v.docker.as_ref().expect("connected")).await.is_err() {
                        // Cut off mid-rollout: report it, let the other hosts go on.
                        report.unreachable.push(v.target.name.clone());
                    } else {
                        transient.get_or_insert(RunError::Host { host: v.target.name.clone(), source: error });
                    }
                }
            }
            outcomes.push((i, outcome));
        }
        // Hosts the set left have nothing of the revision to stay ready.
        ran_ok.retain(|i| plan_of(&views[*i].target.name).1.revision.is_some());
        if failure.is_none() && transient.is_none() && !info.policy.min_ready.is_zero() && !ran_ok.is_empty() {
            match min_ready_window(views, &ran_ok, key, &revision, info.policy.min_ready).await {
                Ok(()) => {}
                Err(WindowEnd::Failed(f)) => failure = Some(f),
                // The host, not the revision: retried next time, nothing recorded or rolled back.
                Err(WindowEnd::HostError(e)) => transient = Some(e),
            }
        }
        if failure.is_some() || transient.is_some() {
            break;
        }
    }

    let mut substitution = None;
    if let Some(f) = failure {
        let mut rolled_back_to = None;
        let mut rollback_error = None;
        if held.is_none() {
            let record = new_record(views, key, &revision, info, Outcome::Failed, Some(f.to_string()));
            if let Err(e) = write_all(ctx.store, key, &mut history, record, info.policy.history_limit).await {
                rollback_error = Some(e.to_string());
            }
        }
        if info.policy.auto_rollback && held.is_none() {
            match history.last_ready(&revision).cloned() {
                None => rollback_error = Some("no earlier revision was ready everywhere".into()),
                Some(fb) => match (ctx.rebuild)(key, &fb.template) {
                    Err(e) => rollback_error = Some(format!("revision {} cannot be rebuilt: {e}", fb.number)),
                    Ok(by_host) => {
                        tracing::warn!(set = %key, failed = %revision, back_to = fb.number, "rolling back");
                        let errs = roll_back(views, key, &by_host, &touched, ctx, progress, &mut outcomes).await;
                        rollback_error = (!errs.is_empty()).then(|| errs.join("; "));
                        rolled_back_to = Some(fb.number);
                        substitution = Some((key.clone(), by_host));
                    }
                },
            }
        }
        report.result = SetResult::Failed { failure: f, rolled_back_to, rollback_error };
    } else if let Some(t) = transient {
        report.result = SetResult::Error(t);
    } else if report.unreachable.is_empty() && held.is_none() {
        let mut record = new_record(views, key, &revision, info, Outcome::Ready, None);
        record.pulled_on = progress
            .pulls
            .lock()
            .expect("never poisoned")
            .iter()
            .filter(|(h, img)| img == &record.image && work.iter().any(|(i, _)| &views[*i].target.name == h))
            .map(|(h, _)| h.clone())
            .collect();
        let before = history.clone();
        let writes = before.record(record, info.policy.history_limit);
        for w in &writes {
            if let Err(e) = ctx.store.write(key, w).await {
                report.result = SetResult::Error(e.into());
            }
        }
        collect_images(views, &writes, &before).await;
        history = before.apply(&writes);
    }
    report.history = Some(history);
    (report, outcomes, substitution)
}

/// How a `minReadySeconds` window ended when it did not end well.
enum WindowEnd {
    /// A container of the revision did not stay ready: the revision failed.
    Failed(Failure),
    /// A host could not be looked at: a host error, not the revision's.
    HostError(RunError),
}

/// `minReadySeconds`: mark every container of the revision on `hosts` (inspect: start time,
/// restart count) as the wave becomes ready, wait the window, mark again; each must have
/// stayed ready the whole time ([`stayed_ready`]), not just look ready at the end.
async fn min_ready_window(
    views: &[HostView],
    hosts: &[usize],
    key: &SetKey,
    revision: &str,
    min_ready: Duration,
) -> Result<(), WindowEnd> {
    let mark_all = || futures::future::join_all(hosts.iter().map(|&i| ready_marks(&views[i], key, revision)));
    let at_start = mark_all().await;
    tokio::time::sleep(min_ready).await;
    let at_end = mark_all().await;
    for ((&i, start), end) in hosts.iter().zip(at_start).zip(at_end) {
        let host = &views[i].target.name;
        let (start, end) = match (start, end) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(e), _) | (_, Err(e)) => {
                return Err(WindowEnd::HostError(RunError::MinReadyCheck { host: host.clone(), source: e }));
            }
        };
        if let Err(n) = stayed_ready(&start, &end) {
            return Err(WindowEnd::Failed(Failure {
                host: host.clone(),
                container: Some(n.container),
                reason: FailureReason::DidNotStayReady { seconds: min_ready.as_secs(), detail: n.reason },
            }));
        }
    }
    Ok(())
}

/// The containers of `revision` of `key` on one host, each inspected. One that is gone by
/// the time it is inspected is left out (the comparison then finds it missing).
async fn ready_marks(view: &HostView, key: &SetKey, revision: &str) -> Result<Vec<ReadyMark>, DockerError> {
    let Some(d) = view.docker.as_ref() else { return Ok(Vec::new()) };
    let host = &view.target.name;
    let observed = docker::observe(host, d).await?;
    let mut marks = Vec::new();
    for c in observed.iter().filter(|c| &c.set == key && c.revision == revision) {
        let inspect =
            docker::bounds::read(host, "inspect container", docker::bounds::READ, || d.inspect_container(&c.id, None));
        let inspect = match inspect.await? {
            Ok(i) => i,
            Err(e) if docker::status_of(&e) == Some(404) => continue,
            Err(e) => return Err(DockerError::api("inspect container", &c.name, e)),
        };
        let state = inspect.state.unwrap_or_default();
        let running = state.running == Some(true) && state.restarting != Some(true);
        let health = state
            .health
            .as_ref()
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none");
        let ready = running && matches!(health.as_deref(), None | Some("healthy"));
        marks.push(ReadyMark {
            id: c.id.clone(),
            name: c.name.clone(),
            started_at: state.started_at.unwrap_or_default(),
            restart_count: inspect.restart_count.unwrap_or_default(),
            ready,
            state: match (&state.status, health) {
                (Some(s), Some(h)) => format!("{s}, {h}"),
                (Some(s), None) => s.to_string(),
                (None, _) => "unknown".into(),
            },
        });
    }
    Ok(marks)
}

/// Return the hosts a failed revision reached to the fallback revision, all at once: each
/// already lost what the failed revision took.
async fn roll_back(
    views: &[HostView],
    key: &SetKey,
    by_host: &HashMap<String, DesiredSet>,
    touched: &[usize],
    ctx: &RunContext<'_>,
    progress: &dyn Progress,
    outcomes: &mut Vec<(usize, HostOutcome)>,
) -> Vec<String> {
    let runs = touched.iter().map(|&i| {
        let v = &views[i];
        async move {
            let d = v.docker.as_ref()?;
            let mut desired: Vec<DesiredSet> = v.target.desired.iter().filter(|d| &d.key != key).cloned().collect();
            desired.extend(by_host.get(&v.target.name).cloned());
            let observed = match docker::observe(&v.target.name, d).await {
                Ok(o) => o,
                Err(e) => return Some(Err(format!("host {}: {e}", v.target.name))),
            };
            let mut plan = plan_host(&v.target.name, &desired, &observed, &v.target.scope);
            plan.sets.retain(|sp| &sp.set == key);
            let outcome = docker::execute_host(d, &plan, &desired, ctx.options, progress).await;
            Some(Ok((i, outcome)))
        }
        .boxed()
    });
    let mut errors = Vec::new();
    for r in futures::future::join_all(runs).await.into_iter().flatten() {
        match r {
            Ok((i, outcome)) => {
                for (set, e) in outcome.errors() {
                    errors.push(format!("host {}: {set}: {e}", views[i].target.name));
                }
                outcomes.push((i, outcome));
            }
            Err(e) => errors.push(e),
        }
    }
    errors
}

/// The record of `revision` as this run knows it.
fn new_record(
    views: &[HostView],
    key: &SetKey,
    revision: &str,
    info: &SetInfo,
    outcome: Outcome,
    message: Option<String>,
) -> RevisionRecord {
    let image = views
        .iter()
        .find_map(|v| v.target.desired.iter().find(|d| &d.key == key))
        .map(|d| d.spec.image.clone())
        .unwrap_or_default();
    let mut template = info.template.clone();
    if let Some(obj) = template.as_object_mut() {
        obj.insert("image".into(), image.clone().into());
    }
    RevisionRecord {
        number: 0,
        hash: revision.to_string(),
        template,
        digest: image.split_once('@').map(|(_, d)| d.to_string()),
        image,
        time: Timestamp::now().to_string(),
        outcome,
        message,
        pulled_on: Vec::new(),
    }
}

async fn write_all(
    store: &dyn HistoryStore,
    key: &SetKey,
    history: &mut History,
    record: RevisionRecord,
    limit: usize,
) -> Result<(), HistoryError> {
    let writes = history.record(record, limit);
    for w in &writes {
        store.write(key, w).await?;
    }
    *history = history.apply(&writes);
    Ok(())
}

/// Remove images berth pulled for revisions the history no longer keeps. Docker refuses to
/// remove an image a container uses; that is fine, it is tried again after the next trim.
async fn collect_images(views: &[HostView], writes: &[HistoryWrite], before: &History) {
    for v in views {
        let Some(d) = &v.docker else { continue };
        for image in collectable_images(writes, before, &v.target.name) {
            let remove = d.remove_image(&image, None::<bollard::query_parameters::RemoveImageOptions>, None);
            match docker::bounds::within(&v.target.name, "remove image", docker::bounds::CHANGE, remove).await {
                Err(e) => tracing::warn!(host = %v.target.name, image, error = %e, "image kept"),
                Ok(Ok(_)) => tracing::info!(host = %v.target.name, image, "removed an image no kept revision uses"),
                Ok(Err(e)) => {
                    tracing::debug!(host = %v.target.name, image, error = %docker::message_of(&e), "image kept")
                }
            }
        }
    }
}
