//! One test per point where the fake API server is strict, driven through the kube 5 client as
//! berth's operator drives a real cluster.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use berth_crd::ContainerSet;
use berth_fake_api::FakeApi;
use common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

const NS: &str = "default";

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn names<K: Resource>(items: impl IntoIterator<Item = K>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(|o| o.meta().name.clone().unwrap_or_default()).collect();
    v.sort();
    v
}

fn rv<K: Resource>(o: &K) -> u64 {
    o.meta().resource_version.as_deref().expect("resourceVersion set").parse().expect("numeric resourceVersion")
}

async fn next_event<K, S>(stream: &mut S) -> WatchEvent<K>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a watch event within 5s")
        .expect("stream open")
        .expect("event decodes")
}

fn event_summary<K: Resource>(e: &WatchEvent<K>) -> (String, String) {
    match e {
        WatchEvent::Added(o) => ("ADDED".into(), o.meta().name.clone().unwrap_or_default()),
        WatchEvent::Modified(o) => ("MODIFIED".into(), o.meta().name.clone().unwrap_or_default()),
        WatchEvent::Deleted(o) => ("DELETED".into(), o.meta().name.clone().unwrap_or_default()),
        WatchEvent::Bookmark(_) => ("BOOKMARK".into(), String::new()),
        WatchEvent::Error(s) => ("ERROR".into(), s.reason.clone()),
    }
}

/// Built-in types: Namespaces, Secrets, ConfigMaps, both Event APIs, Leases, ControllerRevisions
/// and CRDs are all served with create / get / list / delete.
#[tokio::test]
async fn generic_over_builtin_resources() {
    let api = FakeApi::start();
    let client = api.client().await;
    let pp = PostParams::default();
    let lp = ListParams::default();

    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    let ns = nss.create(&pp, &ns).await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(
        names(nss.list(&lp).await.unwrap()),
        ["default", "kube-node-lease", "kube-public", "kube-system", "team"]
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "tls"}, "stringData": {"ca.crt": "PEM"}})).unwrap();
    let secret = secrets.create(&pp, &secret).await.unwrap();
    assert_eq!(secret.data.unwrap()["ca.crt"].0, b"PEM", "stringData is folded into data");
    assert!(secret.string_data.is_none());
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    cms.create(&pp, &cm("conf", &[])).await.unwrap();

    let core_events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "team");
    let ev = serde_json::from_value(json!({
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "ConfigMap", "name": "conf", "namespace": "team"},
        "reason": "Tested", "message": "hello", "type": "Normal",
    }))
    .unwrap();
    core_events.create(&pp, &ev).await.unwrap();

    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "team");
    let ev = serde_json::from_value(json!({
        "metadata": {"name": "e2"}, "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "berth",
        "reportingInstance": "berth-0", "action": "Test", "reason": "Tested", "type": "Normal",
        "regarding": {"kind": "ConfigMap", "name": "conf", "namespace": "team"},
    }))
    .unwrap();
    events.create(&pp, &ev).await.unwrap();

    let leases: Api<Lease> = Api::namespaced(client.clone(), "team");
    let lease = serde_json::from_value(
        json!({"metadata": {"name": "berth"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
    )
    .unwrap();
    leases.create(&pp, &lease).await.unwrap();

    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), "team");
    let revision =
        serde_json::from_value(json!({"metadata": {"name": "web-1"}, "revision": 1, "data": {"image": "nginx"}}))
            .unwrap();
    let revision = revisions.create(&pp, &revision).await.unwrap();
    assert_eq!(revision.revision, 1);

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(crds.list(&lp).await.unwrap().items.is_empty());
    install_crds(&client).await;
    assert_eq!(
        names(crds.list(&lp).await.unwrap()),
        ["containersets.berth.dev", "dockerhosts.berth.dev", "images.berth.dev"]
    );

    assert_eq!(names(secrets.list(&lp).await.unwrap()), ["tls"]);
    assert_eq!(names(cms.list(&lp).await.unwrap()), ["conf"]);
    assert_eq!(names(core_events.list(&lp).await.unwrap()), ["e1"]);
    assert_eq!(names(events.list(&lp).await.unwrap()), ["e2"]);
    assert_eq!(names(leases.list(&lp).await.unwrap()), ["berth"]);
    assert_eq!(names(revisions.list(&lp).await.unwrap()), ["web-1"]);

    // The two Event APIs are distinct resources: each sees only its own.
    core_events.delete("e1", &DeleteParams::default()).await.unwrap();
    assert_eq!(names(events.list(&lp).await.unwrap()), ["e2"]);
    secrets.delete("tls", &DeleteParams::default()).await.unwrap();
    leases.delete("berth", &DeleteParams::default()).await.unwrap();
    revisions.delete("web-1", &DeleteParams::default()).await.unwrap();
    for (code, what) in [
        (status(secrets.get("tls").await.unwrap_err()).code, "secret"),
        (status(leases.get("berth").await.unwrap_err()).code, "lease"),
        (status(revisions.get("web-1").await.unwrap_err()).code, "revision"),
    ] {
        assert_eq!(code, 404, "{what} deleted");
    }
}

/// POSTing a CRD makes its group/version/plural served and discoverable (legacy and aggregated
/// discovery, namespaced flag, verbs, short names, the status subresource).
#[tokio::test]
async fn crd_makes_custom_resource_served_with_discovery() {
    let api = FakeApi::start();
    let client = api.client().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let before = status(sets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((before.code, before.reason.as_str()), (404, "NotFound"));
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    assert!(!discovery.has_group("berth.dev"));

    install_crds(&client).await;

    for discovery in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone()).run_aggregated().await.unwrap(),
    ] {
        let group = discovery.get("berth.dev").expect("berth.dev discovered");
        for kind in ["ContainerSet", "DockerHost"] {
            let (ar, caps) = group.recommended_kind(kind).expect("kind discovered");
            assert_eq!(ar.version, "v1alpha1");
            assert_eq!(caps.scope, Scope::Namespaced);
            for verb in
                [verbs::CREATE, verbs::GET, verbs::LIST, verbs::WATCH, verbs::PATCH, verbs::UPDATE, verbs::DELETE]
            {
                assert!(caps.supports_operation(verb), "{kind} supports {verb}");
            }
            assert!(caps.subresources.iter().any(|(sr, _)| sr.plural == "status"), "{kind} has /status");
        }
        let core = discovery.get("").expect("core group");
        let (_, ns_caps) = core.recommended_kind("Namespace").expect("namespaces");
        assert_eq!(ns_caps.scope, Scope::Cluster);
        assert!(discovery.get("coordination.k8s.io").is_some() && discovery.get("events.k8s.io").is_some());
    }

    let list = client.list_api_group_resources("berth.dev/v1alpha1").await.unwrap();
    let cs = list.resources.iter().find(|r| r.name == "containersets").expect("containersets listed");
    assert!(cs.namespaced);
    assert_eq!(cs.kind, "ContainerSet");
    assert_eq!(cs.short_names.as_deref(), Some(&["cs".to_string()][..]));
    assert!(cs.verbs.contains(&"watch".to_string()));
    let st = list.resources.iter().find(|r| r.name == "containersets/status").expect("status subresource listed");
    assert_eq!(st.verbs, ["get", "patch", "update"]);
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "berth.dev"));
    let core = client.list_core_api_resources("v1").await.unwrap();
    assert!(core.resources.iter().any(|r| r.name == "namespaces" && !r.namespaced));
    assert!(client.list_core_api_versions().await.unwrap().versions.contains(&"v1".to_string()));

    // Now served, typed and dynamically.
    sets.create(&PostParams::default(), &container_set("web", "nginx:1")).await.unwrap();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, _) = discovery.get("berth.dev").unwrap().recommended_kind("ContainerSet").unwrap();
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
    let obj = dynamic.get("web").await.unwrap();
    assert_eq!(obj.data["spec"]["template"]["image"], "nginx:1");
    let all: Api<ContainerSet> = Api::all(client.clone());
    assert_eq!(names(all.list(&ListParams::default()).await.unwrap()), ["web"]);
}

/// uid, namespace, creationTimestamp, generation and resourceVersion are the server's.
#[tokio::test]
async fn server_sets_uid_namespace_creation_timestamp_and_resource_version() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let mut cs = container_set("a", "nginx:1");
    cs.metadata.uid = Some("client-chosen".into());
    cs.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2000-01-01T00:00:00Z".parse().unwrap()));
    cs.metadata.generation = Some(7);
    let a = sets.create(&PostParams::default(), &cs).await.unwrap();
    let b = sets.create(&PostParams::default(), &container_set("b", "nginx:1")).await.unwrap();
    assert_eq!(a.namespace().as_deref(), Some(NS));
    let uid = a.uid().unwrap();
    assert_ne!(uid, "client-chosen");
    assert_eq!(uid.len(), 36);
    assert_ne!(Some(uid), b.uid());
    let created = a.metadata.creation_timestamp.clone().unwrap().0;
    assert!(created > "2020-01-01T00:00:00Z".parse().unwrap());
    assert_eq!(a.metadata.generation, Some(1));
    assert!(rv(&b) > rv(&a));

    let mut with_rv = container_set("c", "nginx:1");
    with_rv.metadata.resource_version = Some("5".into());
    assert_eq!(status(sets.create(&PostParams::default(), &with_rv).await.unwrap_err()).code, 400);
    let mut other_ns = container_set("d", "nginx:1");
    other_ns.metadata.namespace = Some("kube-system".into());
    let err = status(sets.create(&PostParams::default(), &other_ns).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    let missing_ns: Api<ContainerSet> = Api::namespaced(client.clone(), "nope");
    let err = status(missing_ns.create(&PostParams::default(), &container_set("e", "nginx:1")).await.unwrap_err());
    assert_eq!((err.code, err.message.as_str()), (404, "namespaces \"nope\" not found"));
}

/// resourceVersion is one global counter: every write bumps it by one, across types; reads
/// never do; a list reports the current one.
#[tokio::test]
async fn resource_version_is_global_and_changes_only_on_writes() {
    let api = FakeApi::start();
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let start = api.resource_version();
    let a = cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    assert_eq!(rv(&a), start + 1);
    let s = secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap())
        .await
        .unwrap();
    assert_eq!(rv(&s), start + 2);
    let mut a2 = a.clone();
    a2.data = Some(BTreeMap::from([("k".into(), "changed".into())]));
    let a2 = cms.replace("a", &PostParams::default(), &a2).await.unwrap();
    assert_eq!(rv(&a2), start + 3);

    let before = api.resource_version();
    cms.get("a").await.unwrap();
    let list = cms.list(&ListParams::default()).await.unwrap();
    let _ = cms.watch(&WatchParams::default().timeout(1), "0").await.unwrap().boxed().next().await;
    assert_eq!(api.resource_version(), before, "reads do not change resourceVersion");
    assert_eq!(list.metadata.resource_version.as_deref(), Some(before.to_string().as_str()));
    assert_eq!(rv(&cms.get("a").await.unwrap()), start + 3, "an object keeps the rv of its last write");
}

/// A write that changes nothing is a no-op: same resourceVersion, no watch event.
#[tokio::test]
async fn noop_write_keeps_resource_version_and_emits_no_event() {
    let (api, client) = with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let a = cms.create(&PostParams::default(), &cm("a", &[("app", "web")])).await.unwrap();
    let mut events =
        cms.watch(&WatchParams::default().timeout(10), &a.resource_version().unwrap()).await.unwrap().boxed();
    let base = api.resource_version();

    let same = cms.replace("a", &PostParams::default(), &a).await.unwrap();
    assert_eq!(rv(&same), rv(&a));
    let same = cms
        .patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})))
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&a));
    let same = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "v"}])).unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&a));
    // Empty collections are normalised away, as the real server's decoding does.
    let same =
        cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {}}}))).await.unwrap();
    assert_eq!(rv(&same), rv(&a));
    assert_eq!(api.resource_version(), base);

    // Server-side apply: the first apply records a manager (a change); repeating it is not.
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let pp = PatchParams::apply("test").force();
    let applied = sets.patch("s", &pp, &Patch::Apply(container_set("s", "nginx:1"))).await.unwrap();
    let again = sets.patch("s", &pp, &Patch::Apply(container_set("s", "nginx:1"))).await.unwrap();
    assert_eq!(rv(&again), rv(&applied));
    let st = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet", "metadata": {"name": "s"}, "status": {"hostCount": 1}});
    let with_status = sets.patch_status("s", &pp, &Patch::Apply(&st)).await.unwrap();
    let again = sets.patch_status("s", &pp, &Patch::Apply(&st)).await.unwrap();
    assert_eq!(rv(&again), rv(&with_status));

    // The first event the ConfigMap watch sees is the first real change.
    let changed = cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "w"}}))).await.unwrap();
    assert_eq!(rv(&changed), api.resource_version());
    match next_event(&mut events).await {
        WatchEvent::Modified(o) => assert_eq!(rv(&o), rv(&changed)),
        other => panic!("expected the real change first, got {other:?}"),
    }
}

/// metadata.generation is 1 on create and moves only when the spec changes (status and
/// metadata changes never move it).
#[tokio::test]
async fn generation_bumps_only_on_spec_changes() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let pp = PatchParams::default();
    let cs = sets.create(&PostParams::default(), &container_set("web", "nginx:1")).await.unwrap();
    assert_eq!(cs.metadata.generation, Some(1));
    let cs = sets
        .patch("web", &pp, &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}, "annotations": {"x": "y"}}})))
        .await
        .unwrap();
    assert_eq!(cs.metadata.generation, Some(1), "metadata change");
    let cs = sets.patch_status("web", &pp, &Patch::Merge(json!({"status": {"hostCount": 2}}))).await.unwrap();
    assert_eq!(cs.metadata.generation, Some(1), "status change");
    let cs = sets.patch("web", &pp, &Patch::Merge(json!({"spec": {"replicasPerHost": 3}}))).await.unwrap();
    assert_eq!(cs.metadata.generation, Some(2), "spec change");
    let mut edited = cs.clone();
    edited.spec.template.image = "nginx:2".into();
    let cs = sets.replace("web", &PostParams::default(), &edited).await.unwrap();
    assert_eq!(cs.metadata.generation, Some(3), "spec change by PUT");
    let cs = sets.replace("web", &PostParams::default(), &cs).await.unwrap();
    assert_eq!(cs.metadata.generation, Some(3), "no change");

    // Types without a status subresource: anything but metadata is the spec.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let c = cms.create(&PostParams::default(), &cm("c", &[])).await.unwrap();
    assert_eq!(c.metadata.generation, Some(1));
    let c = cms.patch("c", &pp, &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}}))).await.unwrap();
    assert_eq!(c.metadata.generation, Some(1));
    let c = cms.patch("c", &pp, &Patch::Merge(json!({"data": {"k": "changed"}}))).await.unwrap();
    assert_eq!(c.metadata.generation, Some(2));
}

/// With a status subresource, create and writes to the main resource ignore `status`; writes
/// to `/status` change only status.
#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let mut cs = container_set("web", "nginx:1");
    cs.status = Some(serde_json::from_value(json!({"hostCount": 9})).unwrap());
    let cs = sets.create(&PostParams::default(), &cs).await.unwrap();
    assert!(cs.status.is_none(), "status is dropped on create");

    let pp = PatchParams::default();
    let cs = sets
        .patch_status(
            "web",
            &pp,
            &Patch::Merge(
                json!({"spec": {"replicasPerHost": 5}, "metadata": {"labels": {"x": "y"}}, "status": {"hostCount": 3}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(cs.status.as_ref().unwrap().host_count, 3);
    assert_eq!(cs.spec.replicas_per_host, 1, "a /status write ignores spec");
    assert!(cs.labels().is_empty(), "a /status write ignores metadata");
    assert_eq!(cs.metadata.generation, Some(1));

    let mut edited = cs.clone();
    edited.spec.replicas_per_host = 2;
    edited.status.as_mut().unwrap().host_count = 100;
    let cs = sets.replace("web", &PostParams::default(), &edited).await.unwrap();
    assert_eq!(cs.spec.replicas_per_host, 2);
    assert_eq!(cs.status.as_ref().unwrap().host_count, 3, "a main write ignores status");
    let cs = sets.patch("web", &pp, &Patch::Merge(json!({"status": {"hostCount": 50}}))).await.unwrap();
    assert_eq!(cs.status.as_ref().unwrap().host_count, 3, "a main patch ignores status");

    let mut edited = cs.clone();
    edited.spec.replicas_per_host = 7;
    edited.status.as_mut().unwrap().host_count = 4;
    let cs = sets.replace_status("web", &PostParams::default(), &edited).await.unwrap();
    assert_eq!((cs.spec.replicas_per_host, cs.status.as_ref().unwrap().host_count), (2, 4));
    assert_eq!(cs.metadata.generation, Some(2), "status writes never bump generation");
    assert_eq!(sets.get_status("web").await.unwrap().status.unwrap().host_count, 4);
}

/// A PUT with a stale metadata.resourceVersion is a 409 Conflict (so is a patch or delete
/// precondition that carries one); a custom resource PUT without one is 422.
#[tokio::test]
async fn stale_resource_version_conflicts() {
    let (_api, client) = with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    let mut first = cms.get("a").await.unwrap();
    let mut second = cms.get("a").await.unwrap();
    first.data = Some(BTreeMap::from([("k".into(), "first".into())]));
    cms.replace("a", &PostParams::default(), &first).await.unwrap();
    second.data = Some(BTreeMap::from([("k".into(), "second".into())]));
    let err = status(cms.replace("a", &PostParams::default(), &second).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains("the object has been modified"), "{}", err.message);
    assert_eq!(err.details.as_ref().unwrap().name, "a");
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "first");

    let stale = second.resource_version().unwrap();
    let err = status(
        cms.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": stale}, "data": {"k": "x"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    let dp = DeleteParams {
        preconditions: Some(Preconditions { resource_version: Some(stale), uid: None }),
        ..Default::default()
    };
    assert_eq!(status(cms.delete("a", &dp).await.unwrap_err()).code, 409);

    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let mut cs = sets.create(&PostParams::default(), &container_set("s", "nginx:1")).await.unwrap();
    cs.metadata.resource_version = None;
    let err = status(sets.replace("s", &PostParams::default(), &cs).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
}

/// Creating a name that exists is 409 AlreadyExists.
#[tokio::test]
async fn duplicate_create_is_already_exists() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    sets.create(&PostParams::default(), &container_set("web", "nginx:1")).await.unwrap();
    let err = status(sets.create(&PostParams::default(), &container_set("web", "nginx:2")).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "containersets.berth.dev \"web\" already exists");
    let details = err.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.group.as_str(), details.kind.as_str()),
        ("web", "berth.dev", "containersets")
    );
    // The same name in another namespace is another object.
    let other: Api<ContainerSet> = Api::namespaced(client.clone(), "kube-system");
    other.create(&PostParams::default(), &container_set("web", "nginx:1")).await.unwrap();
}

/// Every verb on a missing object is 404 NotFound with the real message and details.
#[tokio::test]
async fn missing_object_is_not_found() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let pp = PatchParams::default();
    let errors = vec![
        sets.get("ghost").await.unwrap_err(),
        sets.replace("ghost", &PostParams::default(), &container_set("ghost", "x")).await.unwrap_err(),
        sets.patch("ghost", &pp, &Patch::Merge(json!({}))).await.unwrap_err(),
        sets.patch_status("ghost", &pp, &Patch::Merge(json!({}))).await.unwrap_err(),
        sets.delete("ghost", &DeleteParams::default()).await.unwrap_err(),
    ];
    for err in errors {
        let err = status(err);
        assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
        assert_eq!(err.message, "containersets.berth.dev \"ghost\" not found");
        assert_eq!(err.details.unwrap().kind, "containersets");
    }
    assert!(sets.get_opt("ghost").await.unwrap().is_none());
}

/// A create without name (or generateName) is 422 Invalid with the field in `details.causes`.
#[tokio::test]
async fn missing_name_is_invalid() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let mut cs = container_set("x", "nginx:1");
    cs.metadata.name = None;
    let err = status(sets.create(&PostParams::default(), &cs).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "metadata.name");
    assert_eq!(causes[0].reason, "FieldValueRequired");

    cs.metadata.generate_name = Some("web-".into());
    let created = sets.create(&PostParams::default(), &cs).await.unwrap();
    let name = created.name_any();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    let mut bad = container_set("Not_A_Name", "nginx:1");
    bad.metadata.generate_name = None;
    assert_eq!(status(sets.create(&PostParams::default(), &bad).await.unwrap_err()).code, 422);
}

/// dryRun is refused with 400 (berth never relies on it); unknown paths, groups and
/// subresources are 404 as metav1.Status.
#[tokio::test]
async fn dry_run_is_rejected_and_unknown_paths_are_not_found() {
    let (_api, client) = with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let err = status(cms.create(&PostParams { dry_run: true, ..Default::default() }, &cm("a", &[])).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert!(cms.get_opt("a").await.unwrap().is_none());

    for path in [
        "/apis/nope.dev/v1/things",
        "/apis/berth.dev/v9/containersets",
        "/api/v1/namespaces/default/containersets",
        "/apis/berth.dev/v1alpha1/namespaces/default/containersets/x/scale",
        "/nonsense",
    ] {
        let req = http::Request::get(path).body(vec![]).unwrap();
        let err = status(client.request::<Value>(req).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"), "{path}");
    }
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

/// labelSelector: `=`, `==`, `!=`, `in`, `notin`, exists and `!key`, per namespace and across
/// all namespaces; a malformed selector is 400.
#[tokio::test]
async fn list_with_label_selectors() {
    let api = FakeApi::start();
    let client = api.client().await;
    let here: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let there: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let all: Api<ConfigMap> = Api::all(client.clone());
    let pp = PostParams::default();
    here.create(&pp, &cm("web", &[("app", "web"), ("tier", "front")])).await.unwrap();
    here.create(&pp, &cm("db", &[("app", "db"), ("tier", "back")])).await.unwrap();
    here.create(&pp, &cm("plain", &[])).await.unwrap();
    there.create(&pp, &cm("web2", &[("app", "web")])).await.unwrap();

    let sel = |api: &Api<ConfigMap>, s: &str| {
        let api = api.clone();
        let s = s.to_string();
        async move { names(api.list(&ListParams::default().labels(&s)).await.unwrap()) }
    };
    assert_eq!(sel(&here, "app=web").await, ["web"]);
    assert_eq!(sel(&here, "app==db").await, ["db"]);
    assert_eq!(sel(&here, "app!=web").await, ["db", "plain"]);
    assert_eq!(sel(&here, "app in (web, db)").await, ["db", "web"]);
    assert_eq!(sel(&here, "app notin (web)").await, ["db", "plain"]);
    assert_eq!(sel(&here, "tier").await, ["db", "web"]);
    assert_eq!(sel(&here, "!tier").await, ["plain"]);
    assert_eq!(sel(&here, "app=web,tier=back").await, Vec::<String>::new());
    assert_eq!(sel(&all, "app=web").await, ["web", "web2"]);
    assert_eq!(sel(&all, "app").await, ["db", "web", "web2"]);
    let err = status(here.list(&ListParams::default().labels("app in web")).await.unwrap_err());
    assert_eq!(err.code, 400);
}

/// fieldSelector on metadata.name and metadata.namespace; other fields are 400.
#[tokio::test]
async fn list_with_field_selectors() {
    let api = FakeApi::start();
    let client = api.client().await;
    let pp = PostParams::default();
    Api::<ConfigMap>::namespaced(client.clone(), NS).create(&pp, &cm("a", &[])).await.unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), NS).create(&pp, &cm("b", &[])).await.unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "kube-system").create(&pp, &cm("a", &[])).await.unwrap();
    let all: Api<ConfigMap> = Api::all(client.clone());
    let list = |s: &str| {
        let all = all.clone();
        let s = s.to_string();
        async move {
            let mut v: Vec<String> = all
                .list(&ListParams::default().fields(&s))
                .await
                .unwrap()
                .into_iter()
                .map(|o| format!("{}/{}", o.namespace().unwrap(), o.name_any()))
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(list("metadata.name=a").await, ["default/a", "kube-system/a"]);
    assert_eq!(list("metadata.name=a,metadata.namespace=default").await, ["default/a"]);
    assert_eq!(list("metadata.namespace!=default").await, ["kube-system/a"]);
    assert_eq!(list("metadata.name!=a").await, ["default/b"]);
    assert_eq!(status(all.list(&ListParams::default().fields("data.k=v")).await.unwrap_err()).code, 400);
}

/// A list carries the collection's resourceVersion; `limit`/`continue` pages keep the first
/// page's resourceVersion so a watch from it loses nothing.
#[tokio::test]
async fn list_returns_collection_resource_version_and_pages() {
    let api = FakeApi::start();
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[])).await.unwrap();
    }
    let full = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(full.metadata.resource_version, Some(api.resource_version().to_string()));
    assert_eq!(full.items.len(), 5);

    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    let list_rv = first.metadata.resource_version.clone();
    let mut seen = names(first.items.clone());
    let mut token = first.metadata.continue_.clone();
    cms.create(&PostParams::default(), &cm("late", &[])).await.unwrap();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = cms.list(&ListParams::default().limit(2).continue_token(&t)).await.unwrap();
        assert_eq!(page.metadata.resource_version, list_rv, "pages keep the first page's rv");
        seen.extend(names(page.items.clone()));
        token = page.metadata.continue_;
    }
    assert!(seen.starts_with(&["c0".to_string(), "c1".into()]));
    assert!(seen.iter().filter(|n| n.starts_with('c')).count() == 5);
}

/// A watch from resourceVersion N delivers every change after N, in order, none lost, also
/// under concurrent writes.
#[tokio::test]
async fn watch_from_resource_version_delivers_every_later_event() {
    let api = FakeApi::start();
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let start = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "2"}}))).await.unwrap();
    cms.create(&PostParams::default(), &cm("b", &[])).await.unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();

    let mut stream = cms.watch(&WatchParams::default().timeout(10), &start).await.unwrap().boxed();
    let mut got = vec![];
    let mut rvs = vec![];
    for _ in 0..4 {
        let e = next_event(&mut stream).await;
        if let WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) = &e {
            rvs.push(rv(o));
        }
        got.push(event_summary(&e));
    }
    let expect: Vec<(String, String)> = [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
        .iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
    assert_eq!(got, expect);
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "increasing resourceVersions {rvs:?}");

    // Resuming from the second event's rv starts at the third.
    let mut resumed = cms.watch(&WatchParams::default().timeout(10), &rvs[1].to_string()).await.unwrap().boxed();
    assert_eq!(event_summary(&next_event(&mut resumed).await), ("ADDED".into(), "b".into()));

    // Concurrent writers: every one of 60 writes arrives.
    let now = api.resource_version().to_string();
    let mut live = cms.watch(&WatchParams::default().timeout(20), &now).await.unwrap().boxed();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let cms = cms.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    cms.create(&PostParams::default(), &cm(&format!("w{w}-{i}"), &[])).await.unwrap();
                }
            })
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut last = 0;
    while seen.len() < 60 {
        match next_event(&mut live).await {
            WatchEvent::Added(o) => {
                assert!(rv(&o) > last);
                last = rv(&o);
                seen.insert(o.name_any());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for w in writers {
        w.await.unwrap();
    }
}

/// A watch from a resourceVersion older than the kept history gets a 410 `Expired` ERROR event
/// (as do open watches when history is compacted).
#[tokio::test]
async fn watch_too_old_resource_version_is_gone() {
    let api = FakeApi::start();
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let old = cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap().resource_version().unwrap();
    let mut open = cms.watch(&WatchParams::default().timeout(10), &old).await.unwrap().boxed();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "2"}}))).await.unwrap();
    assert!(matches!(next_event(&mut open).await, WatchEvent::Modified(_)));
    api.compact_history();
    match next_event(&mut open).await {
        WatchEvent::Error(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    let mut stream = cms.watch(&WatchParams::default().timeout(10), &old).await.unwrap().boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.starts_with("too old resource version"), "{}", s.message);
        }
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().is_none(), "stream ends");

    // A bounded history expires the same way.
    api.set_history_limit(2);
    let from = api.resource_version().to_string();
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("h{i}"), &[])).await.unwrap();
    }
    let mut stream = cms.watch(&WatchParams::default().timeout(10), &from).await.unwrap().boxed();
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Error(s) if s.code == 410));
}

/// timeoutSeconds ends the watch stream cleanly.
#[tokio::test]
async fn watch_timeout_seconds_is_honoured() {
    let api = FakeApi::start();
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let began = std::time::Instant::now();
    let mut stream =
        cms.watch(&WatchParams::default().timeout(1), &api.resource_version().to_string()).await.unwrap().boxed();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("ends by itself");
    assert!(end.is_none(), "no event, then the end: {end:?}");
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");
}

/// allowWatchBookmarks is accepted; sendInitialEvents gives the current state as ADDED and a
/// bookmark marking the end of the initial events; resourceVersion 0 starts with the state.
#[tokio::test]
async fn watch_bookmarks_and_initial_events() {
    let api = FakeApi::start();
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    cms.create(&PostParams::default(), &cm("b", &[])).await.unwrap();

    let mut initial = cms.watch(&WatchParams::default().initial_events().timeout(10), "").await.unwrap().boxed();
    assert_eq!(event_summary(&next_event(&mut initial).await), ("ADDED".into(), "a".into()));
    assert_eq!(event_summary(&next_event(&mut initial).await), ("ADDED".into(), "b".into()));
    match next_event(&mut initial).await {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, api.resource_version().to_string());
            assert_eq!(b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str), Some("true"));
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    let mut from_zero = cms.watch(&WatchParams::default().timeout(10), "0").await.unwrap().boxed();
    assert_eq!(event_summary(&next_event(&mut from_zero).await), ("ADDED".into(), "a".into()));

    // kube-runtime's streaming-list mode works end to end.
    let (reader, writer) = reflector::store::<ConfigMap>();
    let rf = reflector(writer, watcher(cms.clone(), watcher::Config::default().streaming_lists()));
    let task = tokio::spawn(rf.applied_objects().for_each(|_| async {}));
    eventually(5, "streaming list", || {
        let reader = reader.clone();
        async move { (reader.state().len() == 2).then_some(()) }
    })
    .await;
    task.abort();
}

/// A selector-filtered watch sees an object enter (ADDED) and leave (DELETED) the selection.
#[tokio::test]
async fn watch_with_selector_sees_objects_enter_and_leave() {
    let api = FakeApi::start();
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let from = api.resource_version().to_string();
    let mut stream = cms.watch(&WatchParams::default().labels("app=web").timeout(10), &from).await.unwrap().boxed();
    cms.create(&PostParams::default(), &cm("x", &[("app", "db")])).await.unwrap();
    let pp = PatchParams::default();
    cms.patch("x", &pp, &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}}))).await.unwrap();
    cms.patch("x", &pp, &Patch::Merge(json!({"data": {"k": "2"}}))).await.unwrap();
    cms.patch("x", &pp, &Patch::Merge(json!({"metadata": {"labels": {"app": null}}}))).await.unwrap();
    let mut got = vec![];
    for _ in 0..3 {
        got.push(event_summary(&next_event(&mut stream).await).0);
    }
    assert_eq!(got, ["ADDED", "MODIFIED", "DELETED"]);
}

/// kube-runtime's watcher (list, then watch) keeps a reflector in sync through creates,
/// updates, deletes and a forced re-list after history compaction.
#[tokio::test]
async fn kube_runtime_watcher_and_reflector_stay_in_sync() {
    let api = FakeApi::start();
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    cms.create(&PostParams::default(), &cm("pre", &[])).await.unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(writer, watcher(cms.clone(), watcher::Config::default())).default_backoff();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();

    let expect = |want: Vec<(&'static str, &'static str)>| {
        let reader = reader.clone();
        async move {
            let want: Vec<(String, String)> = want.into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            eventually(5, "reflector state", || {
                let reader = reader.clone();
                let want = want.clone();
                async move {
                    let mut got: Vec<(String, String)> = reader
                        .state()
                        .iter()
                        .map(|o| (o.name_any(), o.data.clone().unwrap_or_default()["k"].clone()))
                        .collect();
                    got.sort();
                    (got == want).then_some(())
                }
            })
            .await
        }
    };
    expect(vec![("pre", "v")]).await;
    let pp = PatchParams::default();
    cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    cms.patch("pre", &pp, &Patch::Merge(json!({"data": {"k": "2"}}))).await.unwrap();
    expect(vec![("a", "v"), ("pre", "2")]).await;

    let lists_before = api
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/configmaps") && !r.is_watch())
        .count();
    api.compact_history();
    cms.delete("pre", &DeleteParams::default()).await.unwrap();
    cms.create(&PostParams::default(), &cm("b", &[])).await.unwrap();
    expect(vec![("a", "v"), ("b", "v")]).await;
    let lists_after = api
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/configmaps") && !r.is_watch())
        .count();
    assert!(lists_after > lists_before, "the watcher re-listed after 410");
    task.abort();
}

/// DELETE of an object with finalizers only marks it (deletionTimestamp, grace 0, MODIFIED);
/// no finalizer may be added then; it goes (DELETED) when the last finalizer is removed.
#[tokio::test]
async fn delete_with_finalizers_waits_for_them() {
    let (api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let mut cs = container_set("web", "nginx:1");
    cs.metadata.finalizers = Some(vec!["berth.dev/cleanup".into(), "other/x".into()]);
    let cs = sets.create(&PostParams::default(), &cs).await.unwrap();
    let mut events =
        sets.watch(&WatchParams::default().timeout(10), &cs.resource_version().unwrap()).await.unwrap().boxed();

    let marked = sets.delete("web", &DeleteParams::default()).await.unwrap().left().expect("the object comes back");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    match next_event(&mut events).await {
        WatchEvent::Modified(o) => assert!(o.metadata.deletion_timestamp.is_some()),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    assert!(sets.get("web").await.is_ok(), "still there");
    let again = sets.delete("web", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(rv(&again), rv(&marked), "deleting again changes nothing");

    let err = status(
        sets.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["berth.dev/cleanup", "other/x", "new/y"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    sets.patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"still": "writable"}}})))
        .await
        .unwrap();
    assert!(matches!(next_event(&mut events).await, WatchEvent::Modified(_)));
    sets.patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": ["other/x"]}})))
        .await
        .unwrap();
    assert!(matches!(next_event(&mut events).await, WatchEvent::Modified(_)));
    let before = api.resource_version();
    let patch: json_patch_ops::Ops = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "other/x"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]))
    .unwrap();
    sets.patch("web", &PatchParams::default(), &Patch::Json::<()>(patch)).await.unwrap();
    match next_event(&mut events).await {
        WatchEvent::Deleted(o) => assert_eq!(rv(&o), before + 1),
        other => panic!("expected DELETED, got {other:?}"),
    }
    assert!(sets.get_opt("web").await.unwrap().is_none());

    // Without finalizers, DELETE removes at once.
    sets.create(&PostParams::default(), &container_set("plain", "nginx:1")).await.unwrap();
    sets.delete("plain", &DeleteParams::default()).await.unwrap();
    assert!(matches!(next_event(&mut events).await, WatchEvent::Added(_)));
    assert!(matches!(next_event(&mut events).await, WatchEvent::Deleted(_)));
    assert!(sets.get_opt("plain").await.unwrap().is_none());
}

mod json_patch_ops {
    /// kube re-exports json-patch's `Patch`; named here for readability.
    pub type Ops = json_patch::Patch;
}

/// application/merge-patch+json: RFC 7386 (maps merge, null deletes, lists replace).
#[tokio::test]
async fn merge_patch() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let mut cs = container_set("web", "nginx:1");
    cs.metadata.labels = Some(BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]));
    cs.spec.template.command = Some(vec!["x".into(), "y".into()]);
    sets.create(&PostParams::default(), &cs).await.unwrap();
    let cs = sets
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"template": {"command": ["z"], "user": "1000"}}})),
        )
        .await
        .unwrap();
    assert_eq!(cs.labels(), &BTreeMap::from([("b".to_string(), "2".to_string()), ("c".into(), "3".into())]));
    assert_eq!(cs.spec.template.command, Some(vec!["z".to_string()]));
    assert_eq!(cs.spec.template.image, "nginx:1");
    assert_eq!(cs.spec.template.user.as_deref(), Some("1000"));
    assert_eq!(
        status(sets.patch("web", &PatchParams::default(), &Patch::Merge(json!([1]))).await.unwrap_err()).code,
        400
    );
}

/// application/strategic-merge-patch+json: accepted and applied as a merge patch with `$`
/// directives dropped (lists are replaced, never merged by key — documented simplification).
#[tokio::test]
async fn strategic_merge_patch_is_a_merge_patch() {
    let api = FakeApi::start();
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let mut c = cm("c", &[("a", "1")]);
    c.metadata.finalizers = Some(vec!["x/one".into(), "x/two".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    let c = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Strategic(json!({"$retainKeys": ["data"], "metadata": {"labels": {"b": "2"}, "finalizers": ["x/one"], "$setElementOrder/finalizers": ["x/one"]}, "data": {"k2": "v2"}})),
        )
        .await
        .unwrap();
    assert_eq!(c.labels().len(), 2);
    assert_eq!(c.finalizers(), ["x/one"]);
    assert_eq!(c.data.unwrap().len(), 2);
}

/// application/json-patch+json: RFC 6902, atomic; a `test` on a missing path compares with
/// null (kube-runtime's finalizer helper depends on it).
#[tokio::test]
async fn json_patch_with_test_on_missing_path() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    sets.create(&PostParams::default(), &container_set("web", "nginx:1")).await.unwrap();
    let ops = |v: Value| Patch::Json::<()>(serde_json::from_value(v).unwrap());
    let pp = PatchParams::default();
    let cs = sets
        .patch(
            "web",
            &pp,
            &ops(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["berth.dev/cleanup"]},
            ])),
        )
        .await
        .unwrap();
    assert_eq!(cs.finalizers(), ["berth.dev/cleanup"]);
    // The same guard now fails (the path exists), and nothing of the patch applies.
    let err = status(
        sets.patch(
            "web",
            &pp,
            &ops(json!([
                {"op": "add", "path": "/metadata/labels", "value": {"half": "applied"}},
                {"op": "test", "path": "/metadata/finalizers", "value": null},
            ])),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let err = status(
        sets.patch("web", &pp, &ops(json!([{"op": "test", "path": "/metadata/annotations", "value": {"a": "b"}}])))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    let cs = sets.get("web").await.unwrap();
    assert!(cs.labels().is_empty(), "atomic");
    let cs = sets
        .patch("web", &pp, &ops(json!([{"op": "replace", "path": "/spec/replicasPerHost", "value": 4}, {"op": "add", "path": "/metadata/finalizers/-", "value": "b/c"}])))
        .await
        .unwrap();
    assert_eq!((cs.spec.replicas_per_host, cs.finalizers().len(), cs.metadata.generation), (4, 2, Some(2)));
}

/// application/apply-patch+yaml: fieldManager required; creates when absent; merges over the
/// stored object; records managedFields; removes fields a manager stops applying; conflicts
/// between managers are 409 unless force.
#[tokio::test]
async fn server_side_apply() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let applied = |labels: Value| json!({"apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet", "metadata": {"name": "web", "labels": labels}, "spec": {"template": {"image": "nginx:1"}}});
    let err = status(sets.patch("web", &PatchParams::default(), &Patch::Apply(applied(json!({})))).await.unwrap_err());
    assert_eq!(err.code, 422, "fieldManager is required");

    let alice = PatchParams::apply("alice");
    let cs = sets.patch("web", &alice, &Patch::Apply(applied(json!({"a": "1", "b": "2"})))).await.unwrap();
    assert_eq!(cs.metadata.generation, Some(1), "apply created the object");
    let managed = cs.metadata.managed_fields.clone().unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!((managed[0].manager.as_deref(), managed[0].operation.as_deref()), (Some("alice"), Some("Apply")));
    let fields = serde_json::to_value(&managed[0].fields_v1).unwrap();
    assert!(
        fields.pointer("/f:metadata/f:labels/f:a").is_some() && fields.pointer("/f:spec/f:template/f:image").is_some(),
        "{fields}"
    );

    // Merged over what is stored: a field written by a plain patch survives.
    sets.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": true}}))).await.unwrap();
    let cs = sets.patch("web", &alice, &Patch::Apply(applied(json!({"a": "1"})))).await.unwrap();
    assert!(cs.spec.paused, "fields of others stay");
    assert_eq!(cs.labels().keys().collect::<Vec<_>>(), ["a"], "a field alice stopped applying is removed");

    let bob = PatchParams::apply("bob");
    let err = status(sets.patch("web", &bob, &Patch::Apply(applied(json!({"a": "changed"})))).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains("conflict with \"alice\""), "{}", err.message);
    // Same value: shared ownership, no conflict.
    sets.patch("web", &bob, &Patch::Apply(applied(json!({"a": "1"})))).await.unwrap();
    let cs = sets.patch("web", &bob.clone().force(), &Patch::Apply(applied(json!({"a": "changed"})))).await.unwrap();
    assert_eq!(cs.labels()["a"], "changed");
    let managers: Vec<String> = cs.metadata.managed_fields.unwrap().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"bob".to_string()));

    let wrong = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost", "metadata": {"name": "web"}});
    assert_eq!(status(sets.patch("web", &alice, &Patch::Apply(wrong)).await.unwrap_err()).code, 400);
}

/// PATCH works on /status with every patch type, server-side apply included (how berth writes
/// status), and touches only status.
#[tokio::test]
async fn patch_on_status_subresource() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    sets.create(&PostParams::default(), &container_set("web", "nginx:1")).await.unwrap();
    let pp = PatchParams::apply("berth").force();
    let st = |n: i32| json!({"apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet", "metadata": {"name": "web"}, "spec": {"paused": true}, "status": {"hostCount": n, "observedGeneration": 1}});
    let cs = sets.patch_status("web", &pp, &Patch::Apply(st(2))).await.unwrap();
    assert_eq!(cs.status.as_ref().unwrap().host_count, 2);
    assert!(!cs.spec.paused, "apply on /status ignores spec");
    let entry =
        cs.metadata.managed_fields.unwrap().into_iter().find(|m| m.manager.as_deref() == Some("berth")).unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));

    let cs = sets
        .patch_status("web", &PatchParams::default(), &Patch::Merge(json!({"status": {"readyReplicas": 1}})))
        .await
        .unwrap();
    assert_eq!((cs.status.as_ref().unwrap().host_count, cs.status.as_ref().unwrap().ready_replicas), (2, 1));
    let ops: json_patch_ops::Ops =
        serde_json::from_value(json!([{"op": "replace", "path": "/status/hostCount", "value": 5}])).unwrap();
    let cs = sets.patch_status("web", &PatchParams::default(), &Patch::Json::<()>(ops)).await.unwrap();
    assert_eq!(cs.status.as_ref().unwrap().host_count, 5);
    assert_eq!(cs.metadata.generation, Some(1));
}

/// Leases have plain PUT/conflict semantics, which is all leader election needs: of two
/// candidates updating from the same read, exactly one wins.
#[tokio::test]
async fn leases_support_leader_election() {
    let api = FakeApi::start();
    let a = api.client().await;
    let b = api.client().await;
    let leases_a: Api<Lease> = Api::namespaced(a, NS);
    let leases_b: Api<Lease> = Api::namespaced(b, NS);
    let lease = |holder: &str| -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "berth-operator"}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 0}})).unwrap()
    };
    leases_a.create(&PostParams::default(), &lease("a")).await.unwrap();
    let err = status(leases_b.create(&PostParams::default(), &lease("b")).await.unwrap_err());
    assert_eq!(err.reason, "AlreadyExists");

    let seen_a = leases_a.get("berth-operator").await.unwrap();
    let seen_b = leases_b.get("berth-operator").await.unwrap();
    let mut renew = seen_a.clone();
    renew.spec.as_mut().unwrap().renew_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime("2025-01-01T00:00:01.000001Z".parse().unwrap()));
    let mut steal = seen_b.clone();
    steal.spec.as_mut().unwrap().holder_identity = Some("b".into());
    steal.spec.as_mut().unwrap().lease_transitions = Some(1);
    leases_a.replace("berth-operator", &PostParams::default(), &renew).await.unwrap();
    let err = status(leases_b.replace("berth-operator", &PostParams::default(), &steal).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let now = leases_b.get("berth-operator").await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("a"));
    // Releasing by merge patch and taking over by apply work too.
    leases_a
        .patch("berth-operator", &PatchParams::default(), &Patch::Merge(json!({"spec": {"holderIdentity": null}})))
        .await
        .unwrap();
    let taken = leases_b
        .patch(
            "berth-operator",
            &PatchParams::apply("b").force(),
            &Patch::Apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "berth-operator"}, "spec": {"holderIdentity": "b"}})),
        )
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

/// Events accept create and patch: kube-runtime's Recorder creates an events.k8s.io Event and
/// patches its series on repetition.
#[tokio::test]
async fn events_accept_create_and_patch() {
    let (api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let cs = sets.create(&PostParams::default(), &container_set("web", "nginx:1")).await.unwrap();
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter { controller: "berth".into(), instance: Some("berth-0".into()) },
    );
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Converged".into(),
        note: Some("all replicas ready".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference: ObjectReference = cs.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    let log = api.request_log();
    let event_writes: Vec<&str> =
        log.iter().filter(|r| r.path.contains("/events") && r.is_write()).map(|r| r.method.as_str()).collect();
    assert_eq!(event_writes, ["POST", "PATCH"]);

    // core/v1 Events: create then merge patch of the count.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), NS);
    let ev = serde_json::from_value(json!({"metadata": {"name": "web.1"}, "involvedObject": {"kind": "ContainerSet", "name": "web"}, "reason": "X", "count": 1})).unwrap();
    core.create(&PostParams::default(), &ev).await.unwrap();
    let ev = core.patch("web.1", &PatchParams::default(), &Patch::Merge(json!({"count": 2}))).await.unwrap();
    assert_eq!(ev.count, Some(2));
}

/// Requests for PartialObjectMetadata (kube's metadata API and metadata_watcher) get that form.
#[tokio::test]
async fn metadata_only_requests() {
    let (_api, client) = with_crds().await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    let mut cs = container_set("web", "nginx:1");
    cs.metadata.labels = Some(BTreeMap::from([("a".into(), "b".into())]));
    sets.create(&PostParams::default(), &cs).await.unwrap();
    let meta: PartialObjectMeta<ContainerSet> = sets.get_metadata("web").await.unwrap();
    assert_eq!(meta.labels()["a"], "b");
    let list = sets.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let (reader, writer) = reflector::store::<PartialObjectMeta<ContainerSet>>();
    let task = tokio::spawn(
        reflector(
            writer,
            watcher(Api::<PartialObjectMeta<ContainerSet>>::namespaced(client.clone(), NS), watcher::Config::default()),
        )
        .applied_objects()
        .for_each(|_| async {}),
    );
    eventually(5, "metadata reflector", || {
        let reader = reader.clone();
        async move { (reader.state().len() == 1).then_some(()) }
    })
    .await;
    task.abort();
}

/// Deleting a namespace deletes its contents (honouring their finalizers) and refuses new
/// content meanwhile; deleting a CRD deletes its instances and stops serving the resource.
#[tokio::test]
async fn namespace_and_crd_deletion_cascade() {
    let (api, client) = with_crds().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap())
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), "team");
    cms.create(&PostParams::default(), &cm("c", &[])).await.unwrap();
    let mut cs = container_set("web", "nginx:1");
    cs.metadata.finalizers = Some(vec!["berth.dev/cleanup".into()]);
    sets.create(&PostParams::default(), &cs).await.unwrap();

    nss.delete("team", &DeleteParams::default()).await.unwrap();
    assert_eq!(nss.get("team").await.unwrap().status.unwrap().phase.as_deref(), Some("Terminating"));
    assert!(cms.get_opt("c").await.unwrap().is_none());
    assert!(sets.get("web").await.unwrap().metadata.deletion_timestamp.is_some());
    let err = status(cms.create(&PostParams::default(), &cm("late", &[])).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    sets.patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert!(nss.get_opt("team").await.unwrap().is_none(), "namespace gone once empty");

    let defaults: Api<ContainerSet> = Api::namespaced(client.clone(), NS);
    defaults.create(&PostParams::default(), &container_set("x", "nginx:1")).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("containersets.berth.dev", &DeleteParams::default()).await.unwrap();
    assert!(crds.get_opt("containersets.berth.dev").await.unwrap().is_none());
    assert!(api.object("berth.dev/v1alpha1", "containersets", NS, "x").is_none());
    assert_eq!(status(defaults.list(&ListParams::default()).await.unwrap_err()).code, 404);
}

/// Sync use: start, write a kubeconfig, load it as the operator would (KUBECONFIG path),
/// inspect the request log and write count, stop.
#[test]
fn sync_use_with_kubeconfig_file_and_inspection() {
    let api = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = api.write_kubeconfig(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&api.url()) && api.url().starts_with("http://127.0.0.1:"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        assert_eq!(config.default_namespace, "default");
        let client = kube::Client::try_from(config).unwrap();
        let cms: Api<ConfigMap> = Api::default_namespaced(client);
        assert!(cms.list(&ListParams::default()).await.unwrap().items.is_empty());
        assert_eq!(api.count_writes(), 0);
        cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
        let _ = cms.create(&PostParams::default(), &cm("a", &[])).await.unwrap_err();
    });
    assert_eq!(api.count_writes(), 2, "failed writes count too");
    let log = api.request_log();
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/api/v1/namespaces/default/configmaps");
    assert_eq!((log[1].method.as_str(), log[1].status), ("POST", 201));
    assert_eq!(log[2].status, 409);
    assert!(api.object("v1", "configmaps", "default", "a").is_some());
    let addr = api.addr();
    api.stop();
    assert!(std::net::TcpStream::connect(addr).is_err(), "stopped");
}

/// The `fake-api` binary serves and writes a kubeconfig a client can use.
#[tokio::test]
async fn binary_serves_and_writes_kubeconfig() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fake-api"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(first.starts_with("listening on http://127.0.0.1:"), "{first}");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nss: Api<Namespace> = Api::all(client);
    assert!(nss.get("default").await.is_ok());
    child.kill().await.unwrap();
}
