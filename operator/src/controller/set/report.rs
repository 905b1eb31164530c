//! What a reconcile says: the status it writes (only when it changed), the Events it
//! publishes, and the notes a rollout leaves (rolled back, held, failed).

use berth_crd::{ContainerSet, ContainerSetStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::controller::status::{RolloutNote, invalid_status};
use crate::controller::{Context, Error, FIELD_MANAGER};
use crate::fleet::{self, SetResult};

/// The reason of a set refused because its spec (or what it refers to) is invalid.
pub(super) const INVALID_SPEC: &str = "InvalidSpec";

/// The reason of a set refused because a host it selects does not grant what it asks for.
pub(super) const POLICY_VIOLATION: &str = "PolicyViolation";

/// The rollout's part of the status: which revision the hosts should run, and what went wrong.
pub(super) fn rollout_note(report: &Option<fleet::SetReport>, declared: &str, target: String) -> RolloutNote {
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
        SetResult::Waiting(unmet) => Some((
            "WaitingForDependencies".into(),
            unmet.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        )),
        SetResult::Converged | SetResult::Paused { .. } => None,
    };
    note
}

/// The spec cannot be rolled out: say so in status and an Event; touch no host.
pub(super) async fn refuse(cs: &ContainerSet, ctx: &Context, reason: &str, message: &str) -> Result<Action, Error> {
    publish(ctx, cs, EventType::Warning, reason, "Validate", message.to_string()).await;
    let known = known_status(cs, ctx);
    let status = invalid_status(cs.metadata.generation, reason, message, known.as_ref(), Timestamp::now());
    write_status(cs, ctx, known.as_ref(), status).await?;
    Ok(Action::await_change())
}

pub(super) fn status_key(cs: &ContainerSet) -> String {
    format!("{}/{}", cs.namespace().unwrap_or_default(), cs.name_any())
}

/// The set's status as it is now: the cached object's, or berth's own last write while the
/// cache has not caught up with it (see [`super::written`]).
pub(super) fn known_status(cs: &ContainerSet, ctx: &Context) -> Option<ContainerSetStatus> {
    ctx.written.current(&status_key(cs), cs.metadata.resource_version.as_deref(), cs.status.as_ref())
}

/// Server-side apply of the status under berth's field manager, only when it differs from the
/// `known` one: an unchanged world makes no write, hence no watch event and no reconcile loop.
pub(super) async fn write_status(
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

/// Publish an Event; failing to is logged, never fatal.
pub(super) async fn publish(
    ctx: &Context,
    cs: &ContainerSet,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = KubeEvent { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &cs.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}
