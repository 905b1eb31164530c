//! Reconciling one ContainerSet: the same engine as `berth apply`, fed from the API server.
//!
//! `gather` the set's DockerHosts, Secrets and ConfigMaps → resolve them exactly as the CLI
//! resolves files → observe, plan and `execute` per host → write status (only when it
//! changed) and Events (`report`). A finalizer (`cleanup`) removes the containers when the
//! set is deleted.

mod cleanup;
mod execute;
mod gather;
mod report;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_crd::{ContainerSet, SetMode, Validate};
use futures::FutureExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;

use crate::controller::depends;
use crate::controller::revisions::ControllerRevisions;
use crate::controller::status::{HostReport, drift_events, set_status};
use crate::controller::{Context, Error};
use crate::docker::ExecOptions;
use crate::engine::{SetKey, plan_host};
use crate::fleet::{self, SetResult};
use crate::input::{self};
use cleanup::cleanup;
use execute::{StepCounter, change_summary, view_of};
use gather::{gather, policy_refusals, split_broken_hosts};
use report::{INVALID_SPEC, POLICY_VIOLATION, known_status, publish, refuse, rollout_note, status_key, write_status};

/// The finalizer berth puts on every ContainerSet.
pub const FINALIZER: &str = "berth.dev/cleanup";

/// How often a converged set is looked at again without any trigger (the safety net).
const RESYNC: Duration = Duration::from_secs(300);

/// How soon a set that is not converged yet is looked at again.
const RETRY: Duration = Duration::from_secs(5);

pub async fn reconcile(cs: Arc<ContainerSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = cs.namespace().unwrap_or_else(|| "default".into());
    let name = cs.name_any();
    let api: Api<ContainerSet> = Api::namespaced(ctx.client.clone(), &ns);
    // Boxed futures: the compiler cannot otherwise prove the reconcile future `Send` for
    // every lifetime (rust-lang/rust#102211).
    let result = finalizer(&api, FINALIZER, cs, |event| {
        let ctx = ctx.clone();
        async move {
            match event {
                FinalizerEvent::Apply(cs) => apply(&cs, &ctx).await,
                FinalizerEvent::Cleanup(cs) => cleanup(&cs, &ctx).await,
            }
        }
        .boxed()
    })
    .boxed()
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled("containerset", started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&format!("set/{ns}/{name}"));
    }
    result
}

pub fn error_policy(cs: Arc<ContainerSet>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(set = %cs.name_any(), namespace = ?cs.namespace(), %error, "reconcile failed");
    ctx.metrics.failed("containerset", error.metric_label());
    let key = format!("set/{}/{}", cs.namespace().unwrap_or_default(), cs.name_any());
    Action::requeue(ctx.backoff(&key))
}

/// Each set `cs` depends on, judged from its object and status in the cache (or the status
/// berth wrote last, while the cache has not shown it yet): `Err` says why it is not satisfied.
async fn dependencies(cs: &ContainerSet, ctx: &Context) -> Result<HashMap<SetKey, Result<(), String>>, Error> {
    if cs.spec.depends_on.is_empty() {
        return Ok(HashMap::new());
    }
    ctx.sets.wait_until_ready().await.map_err(|_| Error::Stopped)?;
    let ns = cs.namespace().unwrap_or_else(|| "default".into());
    Ok(cs
        .spec
        .depends_on
        .iter()
        .map(|d| {
            let found = ctx.sets.get(&ObjectRef::new(&d.name).within(&ns));
            let status = found.as_ref().and_then(|f| {
                ctx.written.current(&status_key(f), f.metadata.resource_version.as_deref(), f.status.as_ref())
            });
            let verdict = depends::judge(d.condition, &d.name, &ns, found.as_deref(), status.as_ref());
            (SetKey::new(ns.clone(), d.name.clone()), verdict)
        })
        .collect())
}

async fn apply(cs: &ContainerSet, ctx: &Context) -> Result<Action, Error> {
    let problems = cs.validate();
    if !problems.is_empty() {
        let msg = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        return refuse(cs, ctx, INVALID_SPEC, &msg).await;
    }
    let mut input = gather(cs, ctx).await?;
    // A host that does not grant what the template asks for: the set is refused as a whole
    // (resolve would refuse it too), so no host runs half of what a tenant may not have.
    let violations = policy_refusals(&input, cs);
    if !violations.is_empty() {
        return refuse(cs, ctx, POLICY_VIOLATION, &violations.join("; ")).await;
    }
    // A DockerHost that cannot be resolved (say, its TLS Secret is missing) is that host's
    // problem: report it for this set if selected, and go on with the other hosts.
    let broken = split_broken_hosts(&mut input, cs);
    let resolved = match input::resolve(&input, false) {
        Ok(r) => r,
        Err(errors) => {
            let msg = errors
                .0
                .iter()
                .map(|e| format!("{}: {}", e.field.as_deref().unwrap_or("spec"), e.message))
                .collect::<Vec<_>>()
                .join("; ");
            return refuse(cs, ctx, INVALID_SPEC, &msg).await;
        }
    };
    let key = SetKey::new(cs.namespace().unwrap_or_default(), cs.name_any());
    let mut views = futures::future::join_all(resolved.hosts.iter().map(|t| view_of(t, ctx).boxed())).await;
    // One digest for every host: pinned before planning (the revision includes it).
    let pins = crate::fleet::pin_images(&mut views, &resolved.image_policies, &resolved.runtime).await;
    let pin_problem = pins.problems().next().map(ToString::to_string);
    if let Some(p) = &pin_problem {
        publish(ctx, cs, EventType::Warning, "PinFailed", "Pin", p.clone()).await;
    }
    for note in pins.notes().into_iter().filter(|_| pin_problem.is_none()) {
        tracing::debug!(set = %key, note, "image");
    }
    let declared =
        views.iter().find_map(|v| v.target.desired.iter().find(|d| d.key == key)).map(|d| d.revision.clone());
    let store = ControllerRevisions::new(ctx.client.clone(), cs);
    let rebuild = |k: &SetKey, t: &serde_json::Value| {
        input::resolve::rebuild(&input, false, k, t).map_err(|e| std::sync::Arc::new(e) as fleet::RebuildError)
    };
    let prepared = fleet::prepare(&mut views, &resolved.set_infos, &store, &rebuild).await;
    let plans = prepared.plans.clone();
    let options = ExecOptions::new(8, resolved.runtime.clone());
    // dependsOn: the sets depended on are not in this run; their status says how they are.
    let outside = dependencies(cs, ctx).await?;
    let run = fleet::RunContext {
        sets: &resolved.set_infos,
        store: &store,
        rebuild: &rebuild,
        options: &options,
        progress: &StepCounter(&ctx.metrics),
        outside: &outside,
    };
    let fleet_report = fleet::execute(&mut views, prepared, &run).boxed().await;
    let set_report = fleet_report.sets.into_iter().find(|s| s.key == key);
    match set_report.as_ref().map(|s| &s.result) {
        Some(SetResult::Failed { failure, .. }) => ctx.metrics.rollout_stopped(failure.reason.kind()),
        Some(SetResult::Error(e)) => ctx.metrics.rollout_stopped(e.kind()),
        _ => {}
    }

    let mut reports = Vec::new();
    for (i, v) in views.iter().enumerate() {
        let ran = &fleet_report.outcomes[i];
        let desired = v.target.desired.iter().find(|d| d.key == key);
        let mut report = HostReport {
            host: v.target.name.clone(),
            desired: desired.map(|d| d.replicas).unwrap_or(0),
            task: cs.spec.mode == SetMode::Task,
            task_completed: desired.is_some_and(|d| d.task_completed),
            ..Default::default()
        };
        let mut observed = v.observed.clone();
        if !ran.is_empty()
            && let Some(d) = &v.docker
        {
            observed = ctx.pool.observe(&v.target.name, d).await;
            report.changed = plans[i].as_ref().and_then(|p| change_summary(p, &key, ran));
        }
        for (set, e) in ran.iter().flat_map(|o| o.errors()) {
            report.error = Some(format!("{set}: {e}"));
        }
        match observed {
            Ok(after) => {
                let again = plan_host(&v.target.name, &v.target.desired, &after, &v.target.scope);
                report.pending = again.change_count();
                let executed = plans[i].as_ref().filter(|_| !ran.is_empty()).map(|p| (p, ran.as_slice()));
                report.note_drift(&key, executed, &again);
                let mut by_state = std::collections::BTreeMap::new();
                for c in &after {
                    *by_state.entry(c.state.to_string()).or_insert(0) += 1;
                }
                ctx.count_containers(&format!("{}/{}", key.namespace, v.target.name), by_state);
                report.containers = after.into_iter().filter(|c| c.set == key).collect();
            }
            Err(e) => {
                ctx.pool.forget(&v.target.name).await;
                report.error = Some(e.to_string());
            }
        }
        reports.push(report);
    }
    reports.extend(broken);

    for r in &reports {
        if let Some(c) = &r.changed {
            publish(ctx, cs, EventType::Normal, "Converging", "Apply", c.clone()).await;
        }
        if let Some(e) = &r.error {
            publish(ctx, cs, EventType::Warning, "HostError", "Reconcile", format!("host {}: {e}", r.host)).await;
        }
    }
    let known = known_status(cs, ctx);
    for e in drift_events(known.as_ref(), &reports) {
        ctx.metrics.drifted(e.kind);
        publish(ctx, cs, e.type_, e.reason, "Drift", e.note).await;
    }
    let target = views
        .iter()
        .find_map(|v| v.target.desired.iter().find(|d| d.key == key))
        .map(|d| d.revision.clone())
        .or(declared.clone())
        .unwrap_or_default();
    let mut note = rollout_note(&set_report, declared.as_deref().unwrap_or_default(), target);
    if let Some(p) = pin_problem.clone() {
        note.problem.get_or_insert(("PinFailed".into(), p));
    }
    if let Some(s) = &set_report
        && let SetResult::Failed { failure, rolled_back_to, rollback_error } = &s.result
    {
        let mut msg = format!("revision {} failed: {failure}", declared.as_deref().unwrap_or("?"));
        match (rolled_back_to, rollback_error) {
            (Some(n), None) => msg.push_str(&format!("; rolled back to revision {n}")),
            (Some(n), Some(e)) => msg.push_str(&format!("; rolling back to revision {n} failed: {e}")),
            (None, Some(e)) => msg.push_str(&format!("; no rollback: {e}")),
            (None, None) => {}
        }
        let reason = if rolled_back_to.is_some() { "RolledBack" } else { "RolloutFailed" };
        publish(ctx, cs, EventType::Warning, reason, "Rollout", msg).await;
    }
    let now = Timestamp::now();
    let status = set_status(cs.metadata.generation, &note, cs.spec.paused, &reports, known.as_ref(), now);
    let converged = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    let settled =
        matches!(set_report.as_ref().map(|s| &s.result), Some(SetResult::Held { .. } | SetResult::Failed { .. }));
    write_status(cs, ctx, known.as_ref(), status).await?;
    let mut next = if converged || settled { RESYNC } else { RETRY };
    // imagePolicy: Follow polls the registry on its own interval.
    if let Some(poll) = resolved.image_policies.get(&key).and_then(|p| p.poll_interval()) {
        next = next.min(poll);
    }
    Ok(Action::requeue(next))
}
