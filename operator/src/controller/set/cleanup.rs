//! The finalizer's work when a set is deleted: its containers removed on every host where it
//! ran, and with `volumeReclaimPolicy: Delete` the volumes berth created for it there; a volume
//! another container still uses is kept, said in an Event, and does not hold up the finalizer.

use std::collections::BTreeSet;

use berth_crd::{ContainerSet, VolumeReclaimPolicy};
use futures::FutureExt;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::execute::converge_host;
use super::gather::gather;
use super::report::{publish, status_key};
use crate::controller::{Context, Error};
use crate::docker::{self, ExecOptions};
use crate::input::{self, Input};

/// The set is being deleted: remove its containers on every host of its namespace. Named
/// volumes stay unless `volumeReclaimPolicy: Delete`. An unreachable host keeps the
/// finalizer (and the set) until it can be cleaned.
pub(super) async fn cleanup(cs: &ContainerSet, ctx: &Context) -> Result<Action, Error> {
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
            && let Ok(d) = ctx.pool.get(&target.name, &target.endpoint).await
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
