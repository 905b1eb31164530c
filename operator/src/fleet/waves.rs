//! Executing a prepared run: removals that free ports first, then each set's waves side by
//! side — `maxUnavailable` disruptive hosts at a time, each wave gated on readiness and
//! `minReadySeconds`, hosts the set leaves last — and what a failure then does: record it,
//! roll back, or stop for a retry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use super::HostView;
use super::history::HistoryStore;
use super::min_ready::{WindowEnd, min_ready_window};
use super::prepare::{Prepared, Rebuild, desired_revision, substitute};
use super::record::{collect_images, new_record, write_all};
use super::report::{Failure, FailureReason, FleetReport, RollbackError, RunError, SetReport, SetResult};
use super::rollback::roll_back;
use crate::docker::{self, ExecOptions, HostOutcome, Progress};
use crate::engine::history::Outcome;
use crate::engine::order::{Condition, Dependency, HostState, Unmet, gate, topological};
use crate::engine::rollout::{HostRole, RolloutHost, host_role, waves};
use crate::engine::{DesiredSet, HostPlan, ObservedContainer, SetKey, SetPlan, Step};
use crate::target::SetInfo;

/// Records `(host, image)` for each pull the executor reports, and counts each set's started
/// containers (a dependent waiting for `Started` looks again at each).
struct PullRecorder<'a> {
    inner: &'a dyn Progress,
    pulls: Mutex<BTreeSet<(String, String)>>,
    starts: HashMap<SetKey, watch::Sender<u64>>,
}

impl Progress for PullRecorder<'_> {
    fn step_started(&self, host: &str, set: &SetKey, step: &Step) {
        self.inner.step_started(host, set, step)
    }
    fn step_finished(&self, host: &str, set: &SetKey, step: &Step, elapsed: Duration) {
        if let (Step::Start { .. }, Some(started)) = (step, self.starts.get(set)) {
            started.send_modify(|n| *n += 1);
        }
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
    /// Dependencies (`dependsOn`) this run does not hold, judged by the caller: the operator
    /// reconciles one set and reads the others' status from the cluster. `Err` says why one
    /// is not satisfied. A dependency neither in the run nor here is unmet.
    pub outside: &'a HashMap<SetKey, Result<(), String>>,
}

/// Execute a prepared run: removals first (they free host ports), then every set's waves,
/// sets side by side. A set that is still declared and only leaves some hosts empties them
/// inside its own rollout, after the hosts it gains ([`leaves_in_rollout`]).
pub async fn execute(views: &mut [HostView], prepared: Prepared, ctx: &RunContext<'_>) -> FleetReport {
    let progress = PullRecorder {
        inner: ctx.progress,
        pulls: Mutex::new(BTreeSet::new()),
        starts: ctx.sets.keys().map(|k| (k.clone(), watch::channel(0).0)).collect(),
    };
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

    // Every set in the run, each with its waves, side by side; a set with `dependsOn` starts
    // once the runs of the sets it depends on (in this run) ended, then passes its gate.
    let mut keys: Vec<SetKey> = ctx.sets.keys().cloned().collect();
    keys.sort();
    let finished: HashMap<&SetKey, watch::Sender<bool>> = keys.iter().map(|k| (k, watch::channel(false).0)).collect();
    // Sets whose run in this run did not converge: a dependent does not wait for them.
    let failed_runs: Mutex<BTreeSet<SetKey>> = Mutex::new(BTreeSet::new());
    let edges: BTreeMap<SetKey, Vec<SetKey>> =
        keys.iter().map(|k| (k.clone(), ctx.sets[k].depends_on.iter().map(|d| d.set.clone()).collect())).collect();
    // Acyclic by input validation; were it not, waiting could never end, so nobody waits.
    let ordered = topological(&edges).is_ok();
    let runs = keys.iter().map(|key| {
        let after: Vec<&Dependency> = if ordered {
            ctx.sets[key].depends_on.iter().filter(|d| finished.contains_key(&d.set)).collect()
        } else {
            Vec::new()
        };
        let done = &finished[key];
        let finished = &finished;
        let failed_runs = &failed_runs;
        let prepared = &prepared;
        let progress = &progress;
        async move {
            for d in after {
                // The senders live as long as this future: they cannot close before they send.
                let mut ended = finished[&d.set].subscribe();
                if d.condition != Condition::Started {
                    let _ = ended.wait_for(|ended| *ended).await;
                    continue;
                }
                // Started: go once its containers run everywhere it is placed, without
                // waiting for them to turn ready (what Ready is for).
                let mut starts = progress.starts[&d.set].subscribe();
                loop {
                    starts.borrow_and_update();
                    if *ended.borrow_and_update() || started_everywhere(views_ref, d).await {
                        break;
                    }
                    tokio::select! {
                        _ = ended.changed() => {}
                        _ = starts.changed() => {}
                    }
                }
            }
            let failed = failed_runs.lock().expect("never poisoned").clone();
            let run = run_set(views_ref, prepared, key, ctx, progress, &failed).await;
            if !matches!(run.0.result, SetResult::Converged | SetResult::Paused { .. }) {
                failed_runs.lock().expect("never poisoned").insert(key.clone());
            }
            done.send_replace(true);
            run
        }
        .boxed()
    });
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

/// Whether some work host's gate is unmet only by dependencies that time may still satisfy.
fn dependency_on_its_way(
    views: &[HostView],
    fresh: &[Option<Vec<ObservedContainer>>],
    info: &SetInfo,
    work: &[(usize, SetPlan)],
    ctx: &RunContext<'_>,
    failed: &BTreeSet<SetKey>,
) -> bool {
    let states: Vec<HostState<'_>> = views
        .iter()
        .zip(fresh)
        .map(|(v, o)| HostState { host: &v.target.name, desired: &v.target.desired, observed: o.as_deref() })
        .collect();
    let inside: Vec<Dependency> =
        info.depends_on.iter().filter(|d| !ctx.outside.contains_key(&d.set)).cloned().collect();
    work.iter().filter(|(_, sp)| sp.revision.is_some()).any(|(i, _)| {
        let unmet = gate(&inside, &views[*i].target.name, &states);
        !unmet.is_empty() && unmet.iter().all(|u| u.may_come && !failed.contains(&u.dependency.set))
    })
}

/// Whether `dep` is Started on every host where it is placed, as the hosts show it now.
async fn started_everywhere(views: &[HostView], dep: &Dependency) -> bool {
    let fresh = observe_again(views).await;
    let states: Vec<HostState<'_>> = views
        .iter()
        .zip(&fresh)
        .map(|(v, o)| HostState { host: &v.target.name, desired: &v.target.desired, observed: o.as_deref() })
        .collect();
    let dep = std::slice::from_ref(dep);
    views
        .iter()
        .filter(|v| v.target.desired.iter().any(|d| d.key == dep[0].set))
        .all(|v| gate(dep, &v.target.name, &states).is_empty())
}

/// Every host's containers as they are now (`None`: not observable), for a `dependsOn` gate:
/// the sets depended on may have changed them in this run.
async fn observe_again(views: &[HostView]) -> Vec<Option<Vec<ObservedContainer>>> {
    let looks = views.iter().map(|v| async move {
        let d = v.docker.as_ref()?;
        docker::observe(&v.target.name, d).await.ok()
    });
    futures::future::join_all(looks).await
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
    failed_dependencies: &BTreeSet<SetKey>,
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
    // dependsOn: hosts where a dependency is not satisfied get none of the new revision.
    let mut work = work;
    let mut waiting = Vec::new();
    if !info.depends_on.is_empty() {
        // A dependency that is on its way (running, not healthy yet) is waited for, up to the
        // set's progress deadline; one that failed or is missing stops the set at once.
        let deadline = ctx.options.sets.get(key).map_or(Duration::from_secs(600), |r| r.progress_deadline);
        let until = tokio::time::Instant::now() + deadline;
        let mut fresh = observe_again(views).await;
        while tokio::time::Instant::now() < until
            && dependency_on_its_way(views, &fresh, info, &work, ctx, failed_dependencies)
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            fresh = observe_again(views).await;
        }
        let states: Vec<HostState<'_>> = views
            .iter()
            .zip(&fresh)
            .map(|(v, o)| HostState { host: &v.target.name, desired: &v.target.desired, observed: o.as_deref() })
            .collect();
        work.retain(|(i, sp)| {
            if sp.revision.is_none() {
                return true; // only removals: leaving a host waits for nothing
            }
            let host = &views[*i].target.name;
            let (outside, inside): (Vec<Dependency>, Vec<Dependency>) =
                info.depends_on.iter().cloned().partition(|d| ctx.outside.contains_key(&d.set));
            let mut unmet = gate(&inside, host, &states);
            for d in outside {
                if let Err(why) = &ctx.outside[&d.set] {
                    unmet.push(Unmet { dependency: d, host: host.clone(), why: why.clone(), may_come: false });
                }
            }
            for u in &unmet {
                tracing::info!(set = %key, host = %views[*i].target.name, "{u}");
            }
            let go = unmet.is_empty();
            waiting.extend(unmet);
            go
        });
        if work.is_empty() {
            report.result = SetResult::Waiting(waiting);
            return (report, outcomes, None);
        }
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
        if failure.is_none()
            && transient.is_none()
            && !info.task
            && !info.policy.min_ready.is_zero()
            && !ran_ok.is_empty()
        {
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

    // A revision that was Ready everywhere and only had a container replaced (drift, a killed
    // container) did not fail: the host did. Retried next run, never held or rolled back.
    let repair = !rolling_new && !info.task && history.by_hash(&revision).is_some_and(|r| r.outcome == Outcome::Ready);
    if repair
        && let Some(Failure { host, reason: FailureReason::NotReady(error), .. }) = &failure
        && held.is_none()
    {
        tracing::warn!(set = %key, %host, "replacing a container of a ready revision failed; retried next run");
        report.result = SetResult::Error(RunError::Host { host: host.clone(), source: error.clone() });
        report.history = Some(history);
        return (report, outcomes, None);
    }
    let mut substitution = None;
    if let Some(f) = failure {
        let mut rolled_back_to = None;
        let mut rollback_error = None;
        if held.is_none() {
            let record = new_record(views, key, &revision, info, Outcome::Failed, Some(f.to_string()));
            if let Err(e) = write_all(ctx.store, key, &mut history, record, info.policy.history_limit).await {
                rollback_error = Some(RunError::from(e).into());
            }
        }
        if info.policy.auto_rollback && !info.task && held.is_none() {
            match history.last_ready(&revision).cloned() {
                None => rollback_error = Some(RollbackError::NothingToGoBackTo),
                Some(fb) => match (ctx.rebuild)(key, &fb.template) {
                    Err(e) => rollback_error = Some(RunError::Rebuild { number: fb.number, source: e }.into()),
                    Ok(by_host) => {
                        tracing::warn!(set = %key, failed = %revision, back_to = fb.number, "rolling back");
                        let errs = roll_back(views, key, &by_host, &touched, ctx, progress, &mut outcomes).await;
                        rollback_error = (!errs.is_empty()).then_some(RollbackError::Hosts(errs));
                        rolled_back_to = Some(fb.number);
                        substitution = Some((key.clone(), by_host));
                    }
                },
            }
        }
        report.result = SetResult::Failed { failure: f, rolled_back_to, rollback_error };
    } else if let Some(t) = transient {
        report.result = SetResult::Error(t);
    } else if !waiting.is_empty() {
        report.result = SetResult::Waiting(waiting);
    } else if report.unreachable.is_empty() && held.is_none() {
        let mut record = new_record(views, key, &revision, info, Outcome::Ready, None);
        if info.task {
            // Every host of the set now shows it completed (those without work already did).
            record.completed_on = views
                .iter()
                .filter(|v| v.target.desired.iter().any(|d| &d.key == key))
                .map(|v| v.target.name.clone())
                .collect();
        }
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
