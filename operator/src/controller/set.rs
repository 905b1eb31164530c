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
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::status::{HostReport, drift_events, invalid_status, set_status};
use super::{Context, Error, FIELD_MANAGER};
use crate::docker::{self, ExecOptions};
use crate::engine::{Action as PlanAction, plan_host};
use crate::input::{self, HostTarget, Input};

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
    let hosts: Vec<DockerHost> =
        Api::<DockerHost>::namespaced(ctx.client.clone(), &ns).list(&ListParams::default()).await?.items;
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
        return refuse(cs, ctx, &msg).await;
    }
    let mut input = gather(cs, ctx).await?;
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
            return refuse(cs, ctx, &msg).await;
        }
    };
    let key = crate::engine::SetKey::new(cs.namespace().unwrap_or_default(), cs.name_any());
    let revision =
        resolved.hosts.iter().find_map(|h| h.desired.iter().find(|d| d.key == key)).map(|d| d.revision.clone());
    let options = ExecOptions { concurrency: 8, sets: resolved.runtime.clone() };
    let mut reports = futures::future::join_all(
        resolved.hosts.iter().map(|target| converge_host(target, ctx, &options, cs.spec.paused, &key).boxed()),
    )
    .await;
    reports.extend(broken);

    for r in &reports {
        if let Some(c) = &r.changed {
            publish(ctx, cs, EventType::Normal, "Converging", "Apply", c.clone()).await;
        }
        if let Some(e) = &r.error {
            publish(ctx, cs, EventType::Warning, "HostError", "Reconcile", format!("host {}: {e}", r.host)).await;
        }
    }
    for e in drift_events(cs.status.as_ref(), &reports) {
        ctx.metrics.drifted(e.kind);
        publish(ctx, cs, e.type_, e.reason, "Drift", e.note).await;
    }
    let now = Timestamp::now();
    let revision = revision.unwrap_or_default();
    let status = set_status(cs.metadata.generation, &revision, cs.spec.paused, &reports, cs.status.as_ref(), now);
    let converged = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    write_status(cs, ctx, status).await?;
    Ok(Action::requeue(if converged { RESYNC } else { RETRY }))
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

/// Observe, plan and (unless paused) execute one host; report what is there afterwards.
async fn converge_host(
    target: &HostTarget,
    ctx: &Context,
    options: &ExecOptions,
    paused: bool,
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
    if !plan.is_empty() && !paused {
        let outcome = docker::execute_host(&docker, &plan, &target.desired, options, ctx.metrics.as_ref()).await;
        for s in &outcome.sets {
            if let Some(e) = &s.error {
                report.error = Some(format!("{}: {e}", s.set));
            }
        }
        let (mut created, mut replaced, mut removed) = (0, 0, 0);
        for sp in plan.sets.iter().filter(|sp| &sp.set == key) {
            for c in &sp.changes {
                match c.action {
                    PlanAction::Create | PlanAction::Start => created += 1,
                    PlanAction::Replace { .. } | PlanAction::Complete => replaced += 1,
                    PlanAction::Remove { .. } => removed += 1,
                }
                tracing::info!(host = %target.name, set = %sp.set, container = %c.container, action = ?c.action, "change");
            }
        }
        let done: usize = outcome.sets.iter().filter(|s| &s.set == key).map(|s| s.done).sum();
        report.changed = Some(format!(
            "host {}: {created} to create, {replaced} to replace, {removed} to remove; {done} done",
            target.name
        ));
        after = match ctx.pool.observe(&target.name, &docker).await {
            Ok(o) => o,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let again = plan_host(&target.name, &target.desired, &after, &target.scope);
        report.pending = again.change_count();
        report.note_drift(key, Some((&plan, &outcome)), &again);
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

/// The spec cannot be rolled out: say so in status and an Event; touch no host.
async fn refuse(cs: &ContainerSet, ctx: &Context, message: &str) -> Result<Action, Error> {
    publish(ctx, cs, EventType::Warning, "InvalidSpec", "Validate", message.to_string()).await;
    let status = invalid_status(cs.metadata.generation, message, cs.status.as_ref(), Timestamp::now());
    write_status(cs, ctx, status).await?;
    Ok(Action::await_change())
}

/// Server-side apply of the status under berth's field manager, only when it changed: an
/// unchanged world makes no write, hence no watch event and no reconcile loop.
async fn write_status(cs: &ContainerSet, ctx: &Context, status: ContainerSetStatus) -> Result<(), Error> {
    if cs.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<ContainerSet> = Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
    let patch = json!({ "apiVersion": berth_crd::API_VERSION, "kind": "ContainerSet", "metadata": { "name": cs.name_any() }, "status": status });
    api.patch_status(&cs.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
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
    for h in &mut resolved.hosts {
        h.desired.clear();
        h.scope.sets.insert(key.clone());
    }
    let options = ExecOptions { concurrency: 8, sets: resolved.runtime.clone() };
    let mut failures = Vec::new();
    for target in &resolved.hosts {
        let report = converge_host(target, ctx, &options, false, &key).boxed().await;
        if let Some(e) = report.error {
            failures.push(format!("host {}: {e}", target.name));
            continue;
        }
        if cs.spec.volume_reclaim_policy == VolumeReclaimPolicy::Delete
            && let Ok(d) = ctx.pool.get(&target.name, &target.endpoint, "").await
        {
            for v in &volumes {
                if let Err(e) = d.remove_volume(v, None::<bollard::query_parameters::RemoveVolumeOptions>).await
                    && docker::status_of(&e) != Some(404)
                {
                    failures.push(format!("host {}: remove volume {v}: {}", target.name, docker::message_of(&e)));
                }
            }
        }
    }
    if !failures.is_empty() {
        let msg = failures.join("; ");
        publish(ctx, cs, EventType::Warning, "CleanupFailed", "Delete", msg.clone()).await;
        return Err(Error::Cleanup(msg));
    }
    publish(ctx, cs, EventType::Normal, "Deleted", "Delete", "removed the set's containers on every host".into()).await;
    Ok(Action::await_change())
}

/// Publish an Event; failing to is logged, never fatal.
async fn publish(ctx: &Context, cs: &ContainerSet, type_: EventType, reason: &str, action: &str, note: String) {
    let ev = KubeEvent { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &cs.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}
