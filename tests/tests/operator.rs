//! `berth operator` end to end: the unmodified binary, a strict fake Kubernetes API over real
//! HTTP (through a kubeconfig, as against a cluster), and the real Docker engine.
//!
//! One scenario per test: create a set → containers and status Ready; change an env value →
//! a new revision replaces them; change a referenced Secret → rollout; remove a container
//! behind berth's back → healed from the engine's events; delete the set → containers gone,
//! the named volume kept; `volumeReclaimPolicy: Delete` removes the set's own volume and keeps
//! (with an Event, without holding the finalizer) one another container still uses; two replicas → one leads, the other takes over when it dies.

use std::time::{Duration, Instant};

use berth_crd::{ContainerSet, DockerHost};
use berth_tests::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn create_host(client: &kube::Client, ns: &str) {
    let host: DockerHost = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "local", "namespace": ns, "labels": {"role": "web"}},
        "spec": {"endpoint": format!("unix://{}", local_socket_path().display())}
    }))
    .unwrap();
    Api::<DockerHost>::namespaced(client.clone(), ns).create(&PostParams::default(), &host).await.expect("create host");
}

fn echo_set(ns: &str, name: &str, replicas: u32, greeting: &str, volume: Option<&str>) -> ContainerSet {
    let mut template = json!({
        "image": ECHO_IMAGE, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 5,
        "env": [{"name": "GREETING", "value": greeting}],
        "ports": [{"containerPort": 8080}],
        "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}
    });
    if let Some(v) = volume {
        template["mounts"] = json!([{"type": "volume", "source": v, "target": "/data"}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hostSelector": {"matchLabels": {"role": "web"}}, "replicasPerHost": replicas,
                  "strategy": {"progressDeadlineSeconds": 30}, "template": template}
    }))
    .unwrap()
}

fn condition(cs: &ContainerSet, kind: &str) -> Option<String> {
    cs.status.as_ref()?.conditions.iter().find(|c| c.type_ == kind).map(|c| c.status.clone())
}

async fn wait_ready(sets: &Api<ContainerSet>, name: &str, revision_not: Option<&str>) -> ContainerSet {
    eventually(&format!("ContainerSet {name} Ready"), Duration::from_secs(60), || async {
        let cs = sets.get(name).await.ok()?;
        let st = cs.status.as_ref()?;
        let fresh = st.observed_generation == cs.metadata.generation;
        let new_rev = revision_not.is_none_or(|r| st.current_revision.as_deref() != Some(r));
        (fresh && new_rev && condition(&cs, "Ready").as_deref() == Some("True")).then_some(cs)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_converges_rolls_out_heals_and_cleans_up() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("op");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    create_host(&client, ns.name()).await;
    let volume = format!("{}-data", ns.name());
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    sets.create(&PostParams::default(), &echo_set(ns.name(), "web", 2, "hi", Some(&volume))).await.unwrap();

    let port = free_port();
    let op = spawn_operator(&fake, dir.path(), ns.name(), "op-a", port);

    // Converge: two containers, status Ready, finalizer on, host probed.
    let started = Instant::now();
    let cs = wait_ready(&sets, "web", None).await;
    eprintln!("operator start to set Ready: {:?}", started.elapsed());
    let st = cs.status.clone().unwrap();
    assert_eq!((st.ready_replicas, st.desired_replicas), (2, 2));
    assert!(cs.metadata.finalizers.unwrap_or_default().contains(&"berth.dev/cleanup".to_string()));
    let first = names_ids_states(&docker, ns.name()).await;
    assert_eq!(first.len(), 2, "{first:?}");
    let hosts: Api<DockerHost> = Api::namespaced(client.clone(), ns.name());
    let host = eventually("DockerHost status", Duration::from_secs(30), || async {
        let h = hosts.get("local").await.ok()?;
        h.status.clone().filter(|s| s.engine_version.is_some()).map(|_| h)
    })
    .await;
    let hs = host.status.unwrap();
    assert_eq!(hs.conditions[0].status, "True");
    assert!(hs.api_version.is_some() && hs.cpus.is_some());
    let (code, _) = http_request(&format!("127.0.0.1:{port}"), "GET", "/readyz", &[]).expect("readyz answers");
    assert_eq!(code, 200);
    let (_, metrics) = http_request(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[]).unwrap();
    assert!(metrics.contains("berth_reconciles_total{kind=\"containerset\"}"), "{metrics}");
    assert!(metrics.contains("berth_managed_containers{state=\"running\"}"), "{metrics}");
    assert!(metrics.contains("berth_docker_steps_total{step=\"create\"}"), "{metrics}");
    assert!(metrics.contains("berth_docker_requests_total{method=\"GET\"}"), "{metrics}");
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", op.pid()))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .unwrap_or_default();
    eprintln!("operator RSS after converging: {rss_kib} KiB");

    // Converged means quiet: a reconcile of the converged set writes nothing (status
    // unchanged). Trigger one (an annotation: a watch event, no new generation) and wait for the
    // operator to have finished it, rather than watching the clock.
    let reconciled = set_reconciles(port).expect("the operator counts its reconciles");
    let writes = fake.count_writes();
    let poke = json!({"metadata": {"annotations": {"test.berth.dev/poke": "1"}}});
    let by_test = PatchParams { field_manager: Some("test-poke".into()), ..Default::default() };
    sets.patch("web", &by_test, &Patch::Merge(&poke)).await.unwrap();
    eventually("the operator reconciled the poked set", Duration::from_secs(30), || async {
        set_reconciles(port).filter(|n| *n > reconciled)
    })
    .await;
    let extra: Vec<_> = fake
        .request_log()
        .into_iter()
        .filter(|r| r.is_write())
        .skip(writes)
        .filter(|r| !r.query.contains("fieldManager=test-poke"))
        .collect();
    assert!(extra.iter().all(|r| r.path.contains("/leases/")), "only lease renewals once converged: {extra:?}");

    // An env change is a new revision, rolled out by replacement.
    let rev1 = st.current_revision.clone().unwrap();
    let patch = json!({"spec": {"template": {"env": [{"name": "GREETING", "value": "hello"}]}}});
    let changed_at = Instant::now();
    sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let cs = wait_ready(&sets, "web", Some(&rev1)).await;
    eprintln!("env change to rolled out (2 replicas, health-gated): {:?}", changed_at.elapsed());
    let second = names_ids_states(&docker, ns.name()).await;
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|c| !first.iter().any(|f| f.1 == c.1)), "all replaced: {first:?} → {second:?}");
    let addr = container_addr(&docker, &second[0].0).await;
    assert_eq!(http_request(&addr, "GET", "/env/GREETING", &[]).unwrap().1, "hello");

    // A changed Secret value is a new revision too.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "app", "namespace": ns.name()}, "stringData": {"token": "one"}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let patch = json!({"spec": {"template": {"env": [
        {"name": "GREETING", "value": "hello"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app", "key": "token"}}}]}}});
    sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let rev2 = cs.status.unwrap().current_revision.unwrap();
    let cs = wait_ready(&sets, "web", Some(&rev2)).await;
    let rev3 = cs.status.unwrap().current_revision.unwrap();
    secrets
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({"stringData": {"token": "two"}})))
        .await
        .unwrap();
    wait_ready(&sets, "web", Some(&rev3)).await;
    let third = names_ids_states(&docker, ns.name()).await;
    let addr = container_addr(&docker, &third[0].0).await;
    assert_eq!(http_request(&addr, "GET", "/env/TOKEN", &[]).unwrap().1, "two");

    // Removed behind berth's back: healed from the engine's event, not a resync.
    let victim = third[0].clone();
    let removed_at = Instant::now();
    docker
        .remove_container(
            &victim.1,
            Some(bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .unwrap();
    eventually("the removed container is replaced", Duration::from_secs(20), || async {
        let now = names_ids_states(&docker, ns.name()).await;
        (now.len() == 2 && now.iter().all(|c| c.2 == "running") && !now.iter().any(|c| c.1 == victim.1)).then_some(())
    })
    .await;
    eprintln!("healed a removed container in {:?}", removed_at.elapsed());
    assert!(removed_at.elapsed() < Duration::from_secs(15), "healed well before the 300 s resync");

    // Delete: the finalizer removes the containers; the named volume stays.
    sets.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("the set is gone", Duration::from_secs(30), || async {
        sets.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(containers_in(&docker, ns.name()).await.is_empty());
    docker.inspect_volume(&volume).await.expect("the named volume is kept");
    docker.remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_reclaim_delete_removes_the_sets_own_volume_and_keeps_one_in_use_without_holding_the_finalizer() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("op-reclaim");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    create_host(&client, ns.name()).await;
    let (own, shared) = (format!("{}-own", ns.name()), format!("{}-shared", ns.name()));
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    for (name, volume) in [("solo", &own), ("lender", &shared)] {
        let mut cs = echo_set(ns.name(), name, 1, "hi", Some(volume));
        cs.spec.volume_reclaim_policy = berth_crd::VolumeReclaimPolicy::Delete;
        sets.create(&PostParams::default(), &cs).await.unwrap();
    }
    let _op = spawn_operator(&fake, dir.path(), ns.name(), "op-a", free_port());
    wait_ready(&sets, "solo", None).await;
    wait_ready(&sets, "lender", None).await;

    // Someone else's container (not berth's) mounts the lender's volume.
    let user = format!("{}-user", ns.name());
    let body = bollard::models::ContainerCreateBody {
        image: Some(ECHO_IMAGE.into()),
        host_config: Some(bollard::models::HostConfig {
            binds: Some(vec![format!("{shared}:/data")]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = bollard::query_parameters::CreateContainerOptions { name: Some(user.clone()), ..Default::default() };
    docker.create_container(Some(opts), body).await.expect("create the user's container");

    for name in ["solo", "lender"] {
        sets.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["solo", "lender"] {
        eventually(&format!("ContainerSet {name} is gone (its finalizer done)"), Duration::from_secs(30), || async {
            sets.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    let own_left = docker.inspect_volume(&own).await.is_ok();
    let shared_left = docker.inspect_volume(&shared).await.is_ok();
    let force = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(&user, Some(force)).await;
    let _ = docker.remove_volume(&shared, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
    assert!(containers_in(&docker, ns.name()).await.is_empty());
    assert!(!own_left, "the set's own volume {own} is removed");
    assert!(shared_left, "the volume {shared} another container uses is kept");
    let events: Api<Event> = Api::namespaced(client.clone(), ns.name());
    let ev = eventually("a VolumeKept Event", Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("VolumeKept"))
    })
    .await;
    let note = ev.note.unwrap_or_default();
    assert!(note.contains(&format!("host local: volume {shared} is still in use by a container")), "{note}");
    assert_eq!(ev.regarding.and_then(|r| r.name).as_deref(), Some("lender"), "the Event is the lender's");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_one_leads_and_the_other_takes_over() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("op-ha");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    create_host(&client, ns.name()).await;
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    sets.create(&PostParams::default(), &echo_set(ns.name(), "web", 1, "hi", None)).await.unwrap();

    let a = spawn_operator(&fake, dir.path(), ns.name(), "op-a", free_port());
    let cs = wait_ready(&sets, "web", None).await;
    let b = spawn_operator(&fake, dir.path(), ns.name(), "op-b", free_port());
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    let holder = || async { leases.get("berth-operator").await.ok().and_then(|l| l.spec?.holder_identity) };
    assert_eq!(holder().await.as_deref(), Some("op-a"));

    // Only the leader acts: b stays standby while a renews.
    let b_out = b.stderr();
    assert!(!b_out.contains("leading"), "b must not lead while a holds the lease:\n{b_out}");

    // Kill the leader; the standby takes over within a few lease periods and rolls out a change.
    a.kill();
    eventually("op-b holds the lease", Duration::from_secs(20), || async {
        (holder().await.as_deref() == Some("op-b")).then_some(())
    })
    .await;
    let rev = cs.status.unwrap().current_revision.unwrap();
    let patch = json!({"spec": {"template": {"env": [{"name": "GREETING", "value": "after-failover"}]}}});
    sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_ready(&sets, "web", Some(&rev)).await;
    let now = names_ids_states(&docker, ns.name()).await;
    let addr = container_addr(&docker, &now[0].0).await;
    assert_eq!(http_request(&addr, "GET", "/env/GREETING", &[]).unwrap().1, "after-failover");
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_host_is_reported_and_the_others_still_converge() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("op-broken");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    create_host(&client, ns.name()).await;
    // A TCP host whose TLS Secret does not exist: it cannot even be connected to.
    let ghost: DockerHost = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "ghost", "namespace": ns.name(), "labels": {"role": "web"}},
        "spec": {"endpoint": "tcp://10.250.250.2:2376", "tls": {"secretName": "missing"}}
    }))
    .unwrap();
    Api::<DockerHost>::namespaced(client.clone(), ns.name()).create(&PostParams::default(), &ghost).await.unwrap();
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    sets.create(&PostParams::default(), &echo_set(ns.name(), "web", 1, "hi", None)).await.unwrap();
    let _op = spawn_operator(&fake, dir.path(), ns.name(), "op-a", free_port());

    let message = eventually("Degraded naming the broken host", Duration::from_secs(60), || async {
        let cs = sets.get("web").await.ok()?;
        let st = cs.status.as_ref()?;
        let degraded = st.conditions.iter().find(|c| c.type_ == "Degraded" && c.status == "True")?;
        (st.ready_replicas == 1).then(|| degraded.message.clone())
    })
    .await;
    assert!(message.contains("host ghost") && message.contains("missing"), "{message}");
    let running = names_ids_states(&docker, ns.name()).await;
    assert_eq!(running.len(), 1, "the local host converged anyway: {running:?}");
}
