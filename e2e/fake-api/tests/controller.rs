//! End to end: a real kube-runtime `Controller` over `ContainerSet` — finalizer helper, status
//! by server-side apply, cleanup on delete — converges against the fake API server and then
//! stays quiet.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_crd::{ContainerSet, ContainerSetStatus};
use berth_fake_api::FakeApi;
use common::*;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

const FINALIZER: &str = "berth.dev/cleanup";
const MANAGER: &str = "berth-e2e";

struct Ctx {
    client: kube::Client,
    /// The highest resourceVersion a finished reconcile has seen.
    observed: tokio::sync::watch::Sender<u64>,
    cleanups: AtomicUsize,
    errors: AtomicUsize,
}

type Error = kube::runtime::finalizer::Error<kube::Error>;

/// The status this toy controller derives from the spec.
fn desired_status(cs: &ContainerSet) -> ContainerSetStatus {
    ContainerSetStatus {
        observed_generation: cs.metadata.generation,
        desired_replicas: cs.spec.replicas_per_host,
        ready_replicas_text: Some(format!("0/{}", cs.spec.replicas_per_host)),
        ..Default::default()
    }
}

async fn reconcile(cs: Arc<ContainerSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let api: Api<ContainerSet> = Api::namespaced(ctx.client.clone(), &cs.namespace().expect("namespaced"));
    let seen: u64 = cs.resource_version().and_then(|v| v.parse().ok()).unwrap_or(0);
    let result = finalizer(&api, FINALIZER, cs, |event| async {
        match event {
            Finalizer::Apply(cs) => {
                let desired = desired_status(&cs);
                // Write only what differs: a converged controller makes no requests that write.
                if cs.status.as_ref() != Some(&desired) {
                    let patch = json!({
                        "apiVersion": ContainerSet::api_version(&()),
                        "kind": ContainerSet::kind(&()),
                        "metadata": {"name": cs.name_any()},
                        "status": desired,
                    });
                    api.patch_status(&cs.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(patch))
                        .await?;
                }
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await;
    ctx.observed.send_modify(|v| *v = (*v).max(seen));
    result
}

fn error_policy(_: Arc<ContainerSet>, err: &Error, ctx: Arc<Ctx>) -> Action {
    eprintln!("reconcile error: {err}");
    ctx.errors.fetch_add(1, Ordering::SeqCst);
    Action::requeue(Duration::from_millis(200))
}

/// Writes after `from` in the request log, as `METHOD path?query`.
fn writes_since(api: &FakeApi, from: usize) -> Vec<String> {
    api.request_log()
        .into_iter()
        .filter(|r| r.is_write())
        .skip(from)
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect()
}

/// Waits until a reconcile that saw at least `rv` has finished.
async fn reconciled(ctx: &Ctx, rv: u64) {
    let mut rx = ctx.observed.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|seen| *seen >= rv))
        .await
        .unwrap_or_else(|_| panic!("no reconcile observed resourceVersion {rv}"))
        .expect("controller alive");
}

/// The bounded quiet window: after the condition-based checks, watch the request log for
/// 750 ms and require that no write arrives (catches delayed requeues and stray retries).
async fn assert_quiet(api: &FakeApi, writes: usize) {
    let until = tokio::time::Instant::now() + Duration::from_millis(750);
    while tokio::time::Instant::now() < until {
        assert_eq!(api.count_writes(), writes, "unexpected writes: {:?}", writes_since(api, writes));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn controller_converges_and_stays_quiet() {
    let api = FakeApi::start();
    let client = api.client().await;
    install_crds(&client).await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), "default");
    sets.create(&PostParams::default(), &container_set("web", "nginx:1")).await.unwrap();

    let (observed, _) = tokio::sync::watch::channel(0u64);
    let ctx =
        Arc::new(Ctx { client: client.clone(), observed, cleanups: AtomicUsize::new(0), errors: AtomicUsize::new(0) });
    let before = api.count_writes();
    let controller = tokio::spawn(
        Controller::new(Api::<ContainerSet>::all(client.clone()), watcher::Config::default())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {}),
    );

    // 1. Converge: finalizer added, then status written by server-side apply.
    let converged = |generation: i64| {
        let sets = sets.clone();
        async move {
            eventually(10, "convergence", || {
                let sets = sets.clone();
                async move {
                    let cs = sets.get("web").await.ok()?;
                    (cs.finalizers() == [FINALIZER]
                        && cs.metadata.generation == Some(generation)
                        && cs.status.as_ref() == Some(&desired_status(&cs)))
                    .then_some(cs)
                }
            })
            .await
        }
    };
    let cs = converged(1).await;
    reconciled(&ctx, cs.resource_version().unwrap().parse().unwrap()).await;
    let writes = writes_since(&api, before);
    assert_eq!(writes.len(), 2, "finalizer patch + status apply: {writes:?}");
    assert!(
        writes[0].starts_with("PATCH /apis/berth.dev/v1alpha1/namespaces/default/containersets/web?"),
        "{writes:?}"
    );
    assert!(
        writes[1].starts_with("PATCH /apis/berth.dev/v1alpha1/namespaces/default/containersets/web/status?"),
        "{writes:?}"
    );
    assert!(writes[1].contains("fieldManager=berth-e2e") && writes[1].contains("force=true"), "{writes:?}");
    let managed = cs.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        managed.iter().any(|m| m.manager.as_deref() == Some(MANAGER) && m.subresource.as_deref() == Some("status"))
    );

    // 2. Converged means quiet: a change that needs nothing (a label) is reconciled without a
    //    write. The condition is "a reconcile that saw the label change has finished".
    let writes_now = api.count_writes();
    let labelled = sets
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})))
        .await
        .unwrap();
    reconciled(&ctx, labelled.resource_version().unwrap().parse().unwrap()).await;
    assert_eq!(api.count_writes(), writes_now + 1, "only the test's label patch: {:?}", writes_since(&api, writes_now));
    assert_quiet(&api, writes_now + 1).await;

    // 3. A spec change is picked up: exactly one status write follows, then quiet again.
    let writes_now = api.count_writes();
    sets.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicasPerHost": 2}}))).await.unwrap();
    let cs = converged(2).await;
    reconciled(&ctx, cs.resource_version().unwrap().parse().unwrap()).await;
    assert_eq!(cs.status.as_ref().unwrap().desired_replicas, 2);
    assert_eq!(
        api.count_writes(),
        writes_now + 2,
        "spec patch + one status apply: {:?}",
        writes_since(&api, writes_now)
    );
    assert_quiet(&api, writes_now + 2).await;

    // 4. Delete: the finalizer holds the object until cleanup ran, then it is gone.
    let uid = cs.uid().unwrap();
    let writes_now = api.count_writes();
    sets.delete("web", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), await_condition(sets.clone(), "web", conditions::is_deleted(&uid)))
        .await
        .expect("deleted in time")
        .unwrap();
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    let writes = writes_since(&api, writes_now);
    assert_eq!(writes.len(), 2, "the delete + the finalizer removal: {writes:?}");
    assert!(writes[0].starts_with("DELETE ") && writes[1].starts_with("PATCH "), "{writes:?}");
    assert_quiet(&api, writes_now + 2).await;

    assert_eq!(ctx.errors.load(Ordering::SeqCst), 0, "no reconcile failed");
    // The controller ran on one list and its watch: no re-list from a decode error or 410.
    let log = api.request_log();
    let collection = "/apis/berth.dev/v1alpha1/containersets";
    let lists = log.iter().filter(|r| r.method == "GET" && r.path == collection && !r.is_watch()).count();
    let watches = log.iter().filter(|r| r.path == collection && r.is_watch()).count();
    assert_eq!((lists, watches), (1, 1), "{log:#?}");
    controller.abort();
}
