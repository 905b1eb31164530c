//! `berth operator` rolling a set over three hosts (two engines in network namespaces over
//! mutual TLS, and the local engine), one host at a time:
//!
//! - a revision whose healthcheck fails on the first host is rolled back automatically; the
//!   other hosts are never touched; status (`Degraded`, reason `RolledBack`), an Event and the
//!   ControllerRevisions say why, naming the host and the container;
//! - the failed revision is not retried while the spec stays the same;
//! - the history survives an operator restart, and `berth history` / `berth rollback` work
//!   against the cluster (rollback writes the template back to the set).

use std::time::Duration;

use berth_crd::{ContainerSet, DockerHost};
use berth_tests::*;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn condition(cs: &ContainerSet, kind: &str) -> Option<(String, String, String)> {
    cs.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Every container of the namespace on a host, running or not: (name, id).
async fn all_containers(d: &bollard::Docker, ns: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> =
        names_ids_states(d, ns).await.into_iter().map(|(name, id, _)| (name, id)).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_revision_rolls_back_host_by_host_and_history_survives_a_restart() {
    ensure_echo_image();
    let local = docker().await;
    let a = RemoteHost::start(24);
    let b = RemoteHost::start(25);
    let ns = NamespaceGuard::new("orollout");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let hosts: Api<DockerHost> = Api::namespaced(client.clone(), ns.name());
    for (name, h) in [("a", &a), ("b", &b)] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-tls"), "namespace": ns.name()},
            "type": "kubernetes.io/tls",
            "stringData": {"ca.crt": h.ca_pem(), "tls.crt": h.cert_pem(), "tls.key": h.key_pem()}
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    for (name, spec) in [
        ("a", json!({"endpoint": a.tcp_endpoint(), "tls": {"secretName": "a-tls"}})),
        ("b", json!({"endpoint": b.tcp_endpoint(), "tls": {"secretName": "b-tls"}})),
        ("c", json!({"endpoint": format!("unix://{}", local_socket_path().display())})),
    ] {
        let h: DockerHost = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
            "metadata": {"name": name, "namespace": ns.name(), "labels": {"role": "web"}}, "spec": spec
        }))
        .unwrap();
        hosts.create(&PostParams::default(), &h).await.unwrap();
    }
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    let good_probe = json!(["CMD", "/echo", "--probe"]);
    let cs: ContainerSet = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": "web", "namespace": ns.name()},
        "spec": {"hostSelector": {"matchLabels": {"role": "web"}}, "replicasPerHost": 1,
                 "strategy": {"type": "StartFirst", "maxUnavailable": 1, "autoRollback": true, "progressDeadlineSeconds": 30},
                 "template": {"image": ECHO_IMAGE, "imagePullPolicy": "Never",
                              "env": [{"name": "GREETING", "value": "one"}],
                              "stopGracePeriodSeconds": 2,
                              "healthcheck": {"test": good_probe, "interval": "200ms", "retries": 2}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &cs).await.unwrap();
    let first_port = free_port();
    let mut op = OperatorLog(Some(spawn_operator(&fake, dir.path(), ns.name(), "first", first_port)));

    let ready = eventually("Ready on three hosts", Duration::from_secs(90), || async {
        let cs = sets.get("web").await.ok()?;
        let st = cs.status.clone()?;
        (condition(&cs, "Ready")?.0 == "True" && st.ready_replicas == 3).then_some(st)
    })
    .await;
    let good = ready.current_revision.clone().unwrap();
    let (da, db) = (a.docker_tls().await, b.docker_tls().await);
    let before_b = all_containers(&db, ns.name()).await;
    let before_c = all_containers(&local, ns.name()).await;
    assert_eq!((before_b.len(), before_c.len()), (1, 1));

    // A revision whose healthcheck fails. Host a comes first (hosts roll in name order).
    let started = std::time::Instant::now();
    let patch = json!({"spec": {"template": {"env": [{"name": "GREETING", "value": "two"}],
                        "healthcheck": {"test": ["CMD", "/echo", "--no-such-flag"], "interval": "200ms", "retries": 2}}}});
    sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let (_, _, message) = eventually("Degraded: RolledBack", Duration::from_secs(90), || async {
        let cs = sets.get("web").await.ok()?;
        condition(&cs, "Degraded").filter(|(s, r, _)| s == "True" && r == "RolledBack")
    })
    .await;
    eprintln!("failed revision detected and rolled back in {:.1}s", started.elapsed().as_secs_f64());
    assert!(message.contains("host a"), "names the host: {message}");
    assert!(message.contains("healthcheck"), "says what failed: {message}");
    let cs = sets.get("web").await.unwrap();
    let st = cs.status.clone().unwrap();
    let bad = st.update_revision.clone().unwrap();
    assert_ne!(bad, good);
    let container = format!("{}.web.{bad}.0", ns.name());
    assert!(message.contains(&container), "names the container {container}: {message}");
    assert_eq!(st.current_revision.as_deref(), Some(good.as_str()), "{st:?}");
    // The metrics count the stop by its kind, not by its text.
    let (_, metrics) =
        http_request(&format!("127.0.0.1:{first_port}"), "GET", "/metrics", &[]).expect("/metrics answers");
    assert!(metrics.contains("berth_rollout_errors_total{kind=\"not_ready\"} 1"), "{metrics}");

    // Host a is back on the good revision; b and c were never touched.
    let on_a = eventually("host a runs only the good revision", Duration::from_secs(30), || async {
        let v = all_containers(&da, ns.name()).await;
        (v.len() == 1 && v[0].0.contains(&good)).then_some(v)
    })
    .await;
    assert_eq!(on_a.len(), 1);
    assert_eq!(all_containers(&db, ns.name()).await, before_b, "host b untouched");
    assert_eq!(all_containers(&local, ns.name()).await, before_c, "host c untouched");

    // An Event says why.
    let events: Api<Event> = Api::namespaced(client.clone(), ns.name());
    let ev = eventually("a RolledBack Event", Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("RolledBack"))
    })
    .await;
    let note = ev.note.unwrap_or_default();
    assert!(note.contains("host a") && note.contains("rolled back to revision 1"), "{note}");

    // History: two ControllerRevisions owned by the set, the bad one Failed with the reason.
    let crs: Api<ControllerRevision> = Api::namespaced(client.clone(), ns.name());
    let list = crs.list(&ListParams::default().labels("berth.dev/set=web")).await.unwrap();
    let mut recs: Vec<(i64, String, String)> = list
        .items
        .iter()
        .map(|c| {
            let d = &c.data.as_ref().unwrap().0;
            (c.revision, d["hash"].as_str().unwrap().to_string(), d["outcome"].as_str().unwrap().to_string())
        })
        .collect();
    recs.sort();
    assert_eq!(recs, vec![(1, good.clone(), "Ready".into()), (2, bad.clone(), "Failed".into())]);
    assert!(list.items.iter().all(|c| c.metadata.owner_references.as_ref().is_some_and(|o| o[0].name == "web")));
    assert_eq!(st.history.len(), 2, "status lists the history: {:?}", st.history);

    // The failed revision is held: the operator does not try it again while the spec stays.
    let a_events_before = all_containers(&da, ns.name()).await;
    op.0.take().unwrap().kill();
    let port = free_port();
    op.0 = Some(spawn_operator(&fake, dir.path(), ns.name(), "second", port));
    // The new operator has reconciled the set (its metrics count it) and changed nothing.
    eventually("the second operator reconciled the set", Duration::from_secs(60), || async {
        let (_, m) = http_request(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[])?;
        m.lines()
            .filter(|l| l.starts_with("berth_reconciles_total{kind=\"containerset\"}"))
            .any(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 1.0))
            .then_some(())
    })
    .await;
    let kubeconfig = dir.path().join("second").join("kubeconfig");
    let kc = kubeconfig.to_str().unwrap().to_string();
    let env = [("KUBECONFIG", kc.as_str())];
    let out = berth_async(["history", &format!("{}/web", ns.name())], &env).await;
    out.assert_success();
    assert!(out.stdout.contains(&good) && out.stdout.contains(&bad) && out.stdout.contains("Failed"), "{out}");
    assert_eq!(all_containers(&da, ns.name()).await, a_events_before, "the held revision is not retried");

    // Rollback by hand writes revision 1's template back to the set.
    let out = berth_async(["rollback", &format!("{}/web", ns.name())], &env).await;
    out.assert_success();
    let cs = sets.get("web").await.unwrap();
    assert_eq!(cs.spec.template.healthcheck.as_ref().unwrap().test, vec!["CMD", "/echo", "--probe"]);
    assert_eq!(cs.spec.template.env[0].value.as_deref(), Some("one"));
    eventually("the set is Ready and not Degraded at the good revision", Duration::from_secs(60), || async {
        let cs = sets.get("web").await.ok()?;
        let st = cs.status.clone()?;
        (condition(&cs, "Ready")?.0 == "True"
            && condition(&cs, "Degraded")?.0 == "False"
            && st.update_revision.as_deref() == Some(good.as_str()))
        .then_some(())
    })
    .await;
    assert_eq!(all_containers(&db, ns.name()).await, before_b, "host b still untouched");
}
