//! Reconciling one ContainerSet: the same engine as `berth apply`, fed from the API server.
//!
//! Gather the set's DockerHosts, Secrets and ConfigMaps → resolve them exactly as the CLI
//! resolves files → observe, plan and execute per host → write status (only when it
//! changed) and Events. A finalizer removes the containers when the set is deleted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_crd::{ContainerSet, ContainerSetStatus, DockerHost, Validate, VolumeReclaimPolicy};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::revisions::ControllerRevisions;
use super::status::{HostReport, RolloutNote, drift_events, invalid_status, set_status};
use super::{Context, Error, FIELD_MANAGER};
use crate::docker::{self, ExecOptions};
use crate::engine::{Action as PlanAction, HostPlan, SetKey, plan_host};
use crate::fleet::{self, HostView, SetResult};
use crate::input::{self, Input};
use crate::target::HostTarget;

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

/// Everything a reconcile of this set reads from the API server.
async fn gather(cs: &ContainerSet, ctx: &Context) -> Result<Input, Error> {
    let ns = cs.namespace().unwrap_or_else(|| "default".into());
    // From the watch cache, not a list per reconcile (1k hosts × 10k sets adds up).
    ctx.hosts.wait_until_ready().await.map_err(|_| Error::Stopped)?;
    let key = SetKey::new(ns.clone(), cs.name_any());
    let hosts = relevant_hosts(ctx.hosts.state().iter().map(|h| h.as_ref()), cs, |h| ctx.pool.may_hold(h, &key));
    let t = &cs.spec.template;
    let mut secret_names: BTreeSet<String> = t.image_pull_secrets.iter().map(|s| s.name.clone()).collect();
    secret_names
        .extend(t.env.iter().filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref().map(|r| r.name.clone())));
    secret_names.extend(hosts.iter().filter_map(|h| h.spec.tls.as_ref().map(|t| t.secret_name.clone())));
    let cm_names: BTreeSet<String> = t
        .env
        .iter()
        .filter_map(|e| e.value_from.as_ref()?.config_map_key_ref.as_ref().map(|r| r.name.clone()))
        .collect();
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut secrets = Vec::new();
    for name in secret_names {
        // A missing Secret is reported by resolve, naming the field that refers to it.
        if let Some(s) = secrets_api.get_opt(&name).await? {
            secrets.push(s);
        }
    }
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let mut config_maps = Vec::new();
    for name in cm_names {
        if let Some(c) = cm_api.get_opt(&name).await? {
            config_maps.push(c);
        }
    }
    Ok(Input::from_cluster(vec![cs.clone()], hosts, secrets, config_maps))
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
    let run = fleet::RunContext {
        sets: &resolved.set_infos,
        store: &store,
        rebuild: &rebuild,
        options: &options,
        progress: &StepCounter(&ctx.metrics),
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
        let mut report = HostReport {
            host: v.target.name.clone(),
            desired: v.target.desired.iter().find(|d| d.key == key).map(|d| d.replicas).unwrap_or(0),
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

/// The DockerHosts a reconcile of `cs` must look at: those its selector picks, and those that
/// `may_hold` its containers (the pool's last observation of the host showed some, or the host
/// was never observed). The rest hold nothing of the set, so their plan would be empty;
/// skipping them keeps a reconcile at a few list calls however many hosts share the namespace.
fn relevant_hosts<'a>(
    hosts: impl IntoIterator<Item = &'a DockerHost>,
    cs: &ContainerSet,
    may_hold: impl Fn(&str) -> bool,
) -> Vec<DockerHost> {
    // An invalid selector keeps every host: resolve reports it, naming the field.
    let selector = kube::core::Selector::try_from(cs.spec.host_selector.clone()).ok();
    hosts
        .into_iter()
        .filter(|h| h.metadata.namespace == cs.metadata.namespace)
        .filter(|h| {
            let labels = h.metadata.labels.clone().unwrap_or_default();
            selector.as_ref().is_none_or(|s| kube::core::SelectorExt::matches(s, &labels)) || may_hold(&h.name_any())
        })
        .cloned()
        .collect()
}

/// Connect through the pool and observe one host.
async fn view_of(target: &HostTarget, ctx: &Context) -> HostView {
    let docker = match ctx.pool.get(&target.name, &target.endpoint, "").await {
        Ok(d) => d,
        Err(e) => return HostView { target: target.clone(), docker: None, observed: Err(e) },
    };
    let observed = ctx.pool.observe(&target.name, &docker).await;
    if observed.is_err() {
        ctx.pool.forget(&target.name).await;
    }
    HostView { target: target.clone(), docker: Some(docker), observed }
}

/// What a host's execution did to the set, in words (for an Event).
fn change_summary(plan: &HostPlan, key: &SetKey, ran: &[docker::HostOutcome]) -> Option<String> {
    let (mut created, mut replaced, mut removed) = (0, 0, 0);
    for sp in plan.sets.iter().filter(|sp| &sp.set == key) {
        for c in &sp.changes {
            match c.action {
                PlanAction::Create | PlanAction::Start => created += 1,
                PlanAction::Replace { .. } | PlanAction::Complete => replaced += 1,
                PlanAction::Remove { .. } => removed += 1,
            }
            tracing::info!(host = %plan.host, set = %sp.set, container = %c.container, action = ?c.action, "change");
        }
    }
    let done: usize = ran.iter().flat_map(|o| &o.sets).filter(|s| &s.set == key).map(|s| s.done).sum();
    (created + replaced + removed > 0).then(|| {
        format!("host {}: {created} to create, {replaced} to replace, {removed} to remove; {done} done", plan.host)
    })
}

/// The rollout's part of the status: which revision the hosts should run, and what went wrong.
fn rollout_note(report: &Option<fleet::SetReport>, declared: &str, target: String) -> RolloutNote {
    let mut note = RolloutNote { declared: declared.to_string(), target, problem: None, history: None };
    let Some(r) = report else { return note };
    note.history = r.history.as_ref().map(|h| {
        h.records()
            .iter()
            .map(|r| berth_crd::RevisionRecord {
                revision: r.number as i64,
                hash: r.hash.clone(),
                image: r.image.clone(),
                digest: r.digest.clone(),
                time: Some(r.time.clone()),
                outcome: Some(format!("{:?}", r.outcome)),
                message: r.message.clone(),
            })
            .collect()
    });
    note.problem = match &r.result {
        SetResult::Failed { failure, rolled_back_to: Some(n), rollback_error: None } => Some((
            "RolledBack".into(),
            format!(
                "revision {declared} failed ({failure}); every host it reached is back on revision {n}; change the spec to roll out again"
            ),
        )),
        SetResult::Failed { failure, rolled_back_to, rollback_error } => Some((
            "RolloutFailed".into(),
            format!(
                "revision {declared} failed ({failure}){}{}",
                rolled_back_to.map(|n| format!("; rolling back to revision {n}")).unwrap_or_default(),
                rollback_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
        )),
        SetResult::Held { number, fallback, message, by_hand, .. } => Some((
            // The reason stays what the rollout that failed said, reconcile after reconcile.
            match (by_hand, fallback) {
                (true, _) => "RolledBackByHand",
                (false, Some(_)) => "RolledBack",
                (false, None) => "RevisionHeld",
            }
            .into(),
            format!(
                "revision {number} ({declared}) {}{}; {}; change the spec to roll out again",
                if *by_hand { "was rolled back" } else { "failed" },
                message.as_ref().map(|m| format!(": {m}")).unwrap_or_default(),
                match fallback {
                    Some(n) => format!("the set stays on revision {n}"),
                    None => "the hosts are left as they are (autoRollback is off)".into(),
                }
            ),
        )),
        SetResult::Error(e) => Some(("RolloutError".into(), e.to_string())),
        SetResult::Converged | SetResult::Paused { .. } => None,
    };
    note
}

/// Remove from `input` the DockerHosts that do not resolve on their own; those this set
/// selects become host reports with the reason.
fn split_broken_hosts(input: &mut Input, cs: &ContainerSet) -> Vec<HostReport> {
    let selector = kube::core::Selector::try_from(cs.spec.host_selector.clone()).ok();
    let secrets: Vec<Secret> = input.secrets.values().map(|s| s.object.clone()).collect();
    let mut broken = Vec::new();
    input.hosts.retain(|h| {
        let alone = Input::from_cluster(Vec::new(), vec![h.object.clone()], secrets.clone(), Vec::new());
        match input::resolve(&alone, false) {
            Ok(_) => true,
            Err(e) => {
                let labels = h.object.metadata.labels.clone().unwrap_or_default();
                if selector.as_ref().is_some_and(|s| kube::core::SelectorExt::matches(s, &labels)) {
                    broken.push(HostReport {
                        host: h.object.name_any(),
                        desired: cs.spec.replicas_per_host.max(0) as u32,
                        error: Some(
                            e.0.iter()
                                .map(|x| format!("{}: {}", x.field.as_deref().unwrap_or("spec"), x.message))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ),
                        ..Default::default()
                    });
                }
                false
            }
        }
    });
    broken
}

/// Observe, plan and execute one host without waves or history (the finalizer's removal of
/// a deleted set); report what is there afterwards.
async fn converge_host(
    target: &HostTarget,
    ctx: &Context,
    options: &ExecOptions,
    key: &crate::engine::SetKey,
) -> HostReport {
    let desired = target.desired.iter().find(|d| &d.key == key).map(|d| d.replicas).unwrap_or(0);
    let mut report = HostReport { host: target.name.clone(), desired, ..Default::default() };
    let docker = match ctx.pool.get(&target.name, &target.endpoint, "").await {
        Ok(d) => d,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let observed = match ctx.pool.observe(&target.name, &docker).await {
        Ok(o) => o,
        Err(e) => {
            ctx.pool.forget(&target.name).await;
            report.error = Some(e.to_string());
            return report;
        }
    };
    let plan = plan_host(&target.name, &target.desired, &observed, &target.scope);
    let mut after = observed;
    if !plan.is_empty() {
        let outcome = docker::execute_host(&docker, &plan, &target.desired, options, &StepCounter(&ctx.metrics)).await;
        for s in &outcome.sets {
            if let Some(e) = &s.error {
                report.error = Some(format!("{}: {e}", s.set));
            }
        }
        report.changed = change_summary(&plan, key, std::slice::from_ref(&outcome));
        after = match ctx.pool.observe(&target.name, &docker).await {
            Ok(o) => o,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let again = plan_host(&target.name, &target.desired, &after, &target.scope);
        report.pending = again.change_count();
        report.note_drift(key, Some((&plan, std::slice::from_ref(&outcome))), &again);
    } else {
        report.pending = plan.change_count();
        report.note_drift(key, None, &plan);
    }
    // Every observation covers all managed containers of the host: keep the gauge fresh.
    let mut by_state = std::collections::BTreeMap::new();
    for c in &after {
        *by_state.entry(c.state.to_string()).or_insert(0) += 1;
    }
    ctx.count_containers(&format!("{}/{}", key.namespace, target.name), by_state);
    report.containers = after.into_iter().filter(|c| &c.set == key).collect();
    report
}

/// The reason of a set refused because its spec (or what it refers to) is invalid.
const INVALID_SPEC: &str = "InvalidSpec";
/// The reason of a set refused because a host it selects does not grant what it asks for.
const POLICY_VIOLATION: &str = "PolicyViolation";

/// `field: message` for every policy violation of the set on a host it would be placed on
/// (selected, in its namespace, not cordoned: as resolve places it).
fn policy_refusals(input: &Input, cs: &ContainerSet) -> Vec<String> {
    let Ok(selector) = kube::core::Selector::try_from(cs.spec.host_selector.clone()) else {
        return Vec::new(); // resolve names the field
    };
    input
        .hosts
        .iter()
        .map(|h| &h.object)
        .filter(|h| h.metadata.namespace == cs.metadata.namespace && !h.spec.unschedulable)
        .filter(|h| kube::core::SelectorExt::matches(&selector, &h.metadata.labels.clone().unwrap_or_default()))
        .flat_map(|h| input::policy::policy_violations(&cs.spec.template, h))
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect()
}

/// The spec cannot be rolled out: say so in status and an Event; touch no host.
async fn refuse(cs: &ContainerSet, ctx: &Context, reason: &str, message: &str) -> Result<Action, Error> {
    publish(ctx, cs, EventType::Warning, reason, "Validate", message.to_string()).await;
    let known = known_status(cs, ctx);
    let status = invalid_status(cs.metadata.generation, reason, message, known.as_ref(), Timestamp::now());
    write_status(cs, ctx, known.as_ref(), status).await?;
    Ok(Action::await_change())
}

fn status_key(cs: &ContainerSet) -> String {
    format!("{}/{}", cs.namespace().unwrap_or_default(), cs.name_any())
}

/// The set's status as it is now: the cached object's, or berth's own last write while the
/// cache has not caught up with it (see [`super::written`]).
fn known_status(cs: &ContainerSet, ctx: &Context) -> Option<ContainerSetStatus> {
    ctx.written.current(&status_key(cs), cs.metadata.resource_version.as_deref(), cs.status.as_ref())
}

/// Server-side apply of the status under berth's field manager, only when it differs from the
/// `known` one: an unchanged world makes no write, hence no watch event and no reconcile loop.
async fn write_status(
    cs: &ContainerSet,
    ctx: &Context,
    known: Option<&ContainerSetStatus>,
    status: ContainerSetStatus,
) -> Result<(), Error> {
    if known == Some(&status) {
        return Ok(());
    }
    let api: Api<ContainerSet> = Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
    let patch = json!({ "apiVersion": berth_crd::API_VERSION, "kind": "ContainerSet", "metadata": { "name": cs.name_any() }, "status": status });
    api.patch_status(&cs.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    tracing::debug!(set = %status_key(cs), "status written");
    ctx.written.wrote(&status_key(cs), cs.metadata.resource_version.as_deref(), status);
    Ok(())
}

/// The set is being deleted: remove its containers on every host of its namespace. Named
/// volumes stay unless `volumeReclaimPolicy: Delete`. An unreachable host keeps the
/// finalizer (and the set) until it can be cleaned.
async fn cleanup(cs: &ContainerSet, ctx: &Context) -> Result<Action, Error> {
    let input = gather(cs, ctx).await?;
    let mut resolved = match input::resolve(&input, false) {
        Ok(r) => r,
        // An invalid set never ran anything that needs removing through its spec; its
        // containers, if any, are still found by labels on the namespace's hosts below.
        Err(_) => input::resolve(
            &Input::from_cluster(
                Vec::new(),
                input.hosts.iter().map(|h| h.object.clone()).collect(),
                input.secrets.values().map(|s| s.object.clone()).collect(),
                Vec::new(),
            ),
            false,
        )?,
    };
    let key = crate::engine::SetKey::new(cs.namespace().unwrap_or_default(), cs.name_any());
    let volumes: BTreeSet<String> = resolved
        .hosts
        .iter()
        .flat_map(|h| h.desired.iter().filter(|d| d.key == key).flat_map(|d| d.spec.volumes()))
        .collect();
    // Volumes are reclaimed only where the set ran: placed there, or had containers there.
    let placed: BTreeSet<String> =
        resolved.hosts.iter().filter(|h| h.desired.iter().any(|d| d.key == key)).map(|h| h.name.clone()).collect();
    for h in &mut resolved.hosts {
        h.desired.clear();
        h.scope.sets.insert(key.clone());
    }
    let options = ExecOptions::new(8, resolved.runtime.clone());
    let mut failures = Vec::new();
    let mut kept = Vec::new();
    for target in &resolved.hosts {
        let report = converge_host(target, ctx, &options, &key).boxed().await;
        if let Some(e) = report.error {
            failures.push(format!("host {}: {e}", target.name));
            continue;
        }
        let ran = placed.contains(&target.name) || report.changed.is_some();
        if cs.spec.volume_reclaim_policy == VolumeReclaimPolicy::Delete
            && ran
            && let Ok(d) = ctx.pool.get(&target.name, &target.endpoint, "").await
        {
            for v in &volumes {
                match docker::volume::reclaim(&target.name, &d, v, &key).await {
                    Ok(docker::volume::Reclaim::InUse) => {
                        kept.push(format!("host {}: volume {v} is still in use by a container", target.name))
                    }
                    Ok(docker::volume::Reclaim::NotOwned) => {
                        kept.push(format!("host {}: volume {v} was not created by berth for this set", target.name))
                    }
                    Ok(_) => {}
                    Err(e) => failures.push(format!("host {}: {e}", target.name)),
                }
            }
        }
    }
    // A kept volume is said, never a reason to keep the finalizer: its user holds it.
    if !kept.is_empty() {
        publish(ctx, cs, EventType::Warning, "VolumeKept", "Delete", kept.join("; ")).await;
    }
    if !failures.is_empty() {
        let msg = failures.join("; ");
        publish(ctx, cs, EventType::Warning, "CleanupFailed", "Delete", msg.clone()).await;
        return Err(Error::Cleanup(msg));
    }
    publish(ctx, cs, EventType::Normal, "Deleted", "Delete", "removed the set's containers on every host".into()).await;
    ctx.written.forget(&status_key(cs));
    Ok(Action::await_change())
}

/// Publish an Event; failing to is logged, never fatal.
async fn publish(ctx: &Context, cs: &ContainerSet, type_: EventType, reason: &str, action: &str, note: String) {
    let ev = KubeEvent { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &cs.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}

/// The executor's finished steps, counted in `berth_docker_steps_total`.
struct StepCounter<'a>(&'a crate::telemetry::Metrics);

impl docker::Progress for StepCounter<'_> {
    fn step_finished(&self, _host: &str, _set: &SetKey, step: &crate::engine::Step, _elapsed: std::time::Duration) {
        self.0.step_finished(step.kind());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(name: &str, group: &str) -> DockerHost {
        serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
            "metadata": {"name": name, "namespace": "ns", "labels": {"group": group}},
            "spec": {"endpoint": format!("unix:///run/{name}.sock")}
        }))
        .expect("a DockerHost")
    }

    #[test]
    fn a_reconcile_looks_at_selected_hosts_and_those_that_may_hold_the_set() {
        let web: ContainerSet = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"hostSelector": {"matchLabels": {"group": "web"}}, "template": {"image": "echo:1"}}
        }))
        .expect("a ContainerSet");
        let mut elsewhere = host("elsewhere", "web");
        elsewhere.metadata.namespace = Some("other".into());
        let hosts = [
            host("selected", "web"),
            host("left-behind", "api"),
            host("never-seen", "api"),
            host("empty", "api"),
            elsewhere,
        ];
        let may_hold = |h: &str| matches!(h, "left-behind" | "never-seen" | "elsewhere");
        let names: Vec<String> = relevant_hosts(&hosts, &web, may_hold).iter().map(|h| h.name_any()).collect();
        assert_eq!(names, ["selected", "left-behind", "never-seen"]);
    }
}
