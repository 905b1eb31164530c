//! `berth operator` over two hosts: the local engine (unix socket) and an engine in its own
//! network namespace reached over TCP with mutual TLS, its certificates in a Secret.
//!
//! A set lands on both; stopping the remote engine's dockerd makes that host `Ready=False`
//! and the set `Degraded` naming it, while the local host is left alone; once the engine is
//! back, the set converges there again.

use std::time::Duration;

use berth_crd::{ContainerSet, DockerHost};
use berth_tests::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;

fn condition(cs: &ContainerSet, kind: &str) -> Option<(String, String)> {
    cs.status.as_ref()?.conditions.iter().find(|c| c.type_ == kind).map(|c| (c.status.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_spans_a_local_and_a_tls_host_and_survives_one_going_down() {
    ensure_echo_image();
    let local = docker().await;
    let mut remote = RemoteHost::start(21);
    let ns = NamespaceGuard::new("fleet");
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "remote-tls", "namespace": ns.name()},
        "type": "kubernetes.io/tls",
        "stringData": {"ca.crt": remote.ca_pem(), "tls.crt": remote.cert_pem(), "tls.key": remote.key_pem()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns.name()).create(&PostParams::default(), &secret).await.unwrap();
    let hosts: Api<DockerHost> = Api::namespaced(client.clone(), ns.name());
    for (name, spec) in [
        ("local", json!({"endpoint": format!("unix://{}", local_socket_path().display())})),
        ("remote", json!({"endpoint": remote.tcp_endpoint(), "tls": {"secretName": "remote-tls"}})),
    ] {
        let h: DockerHost = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
            "metadata": {"name": name, "namespace": ns.name(), "labels": {"role": "web"}}, "spec": spec
        }))
        .unwrap();
        hosts.create(&PostParams::default(), &h).await.unwrap();
    }
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    let port = free_port();
    let cs: ContainerSet = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": "web", "namespace": ns.name()},
        "spec": {"hostSelector": {"matchLabels": {"role": "web"}}, "replicasPerHost": 1,
                 "strategy": {"progressDeadlineSeconds": 30},
                 "template": {"image": ECHO_IMAGE, "imagePullPolicy": "Never",
                              "ports": [{"containerPort": 8080, "hostPort": port}],
                              "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &cs).await.unwrap();
    let _op = OperatorLog(Some(spawn_operator(&fake, dir.path(), ns.name(), "fleet", free_port())));

    // Both hosts run it; the remote one answers on its own address.
    eventually("Ready on both hosts", Duration::from_secs(60), || async {
        let cs = sets.get("web").await.ok()?;
        let st = cs.status.as_ref()?;
        (condition(&cs, "Ready")?.0 == "True" && st.ready_replicas == 2).then_some(())
    })
    .await;
    assert_eq!(http_get(&format!("{}:{port}", remote.ip())).map(|(_, b)| b).as_deref(), Some(ECHO_BODY));
    let remote_docker = remote.docker_tls().await;
    assert_eq!(containers_in(&remote_docker, ns.name()).await.len(), 1);
    let local_before = names_ids_states(&local, ns.name()).await;
    assert_eq!(local_before.len(), 1);
    let h = eventually("remote host status", Duration::from_secs(30), || async {
        let h = hosts.get("remote").await.ok()?;
        h.status.clone().filter(|s| s.engine_version.is_some())
    })
    .await;
    assert_eq!(h.conditions[0].status, "True", "{h:?}");

    // Host down: the remote engine dies. The host and the set say so; local is untouched.
    remote.kill_engine();
    eventually("remote host Ready=False", Duration::from_secs(60), || async {
        let h = hosts.get("remote").await.ok()?;
        (h.status?.conditions.first()?.status == "False").then_some(())
    })
    .await;
    let (_, message) = eventually("the set is Degraded naming the host", Duration::from_secs(60), || async {
        let cs = sets.get("web").await.ok()?;
        condition(&cs, "Degraded").filter(|(s, _)| s == "True")
    })
    .await;
    assert!(message.contains("host remote"), "Degraded names the host: {message}");
    assert_eq!(names_ids_states(&local, ns.name()).await, local_before, "the local host is left alone");

    // Back up: the engine restarts (the container comes back by its restart policy or is
    // recreated), and the set converges on both hosts again.
    remote.start_engine();
    eventually("Ready on both hosts again", Duration::from_secs(90), || async {
        let cs = sets.get("web").await.ok()?;
        let st = cs.status.as_ref()?;
        (condition(&cs, "Ready")?.0 == "True" && st.ready_replicas == 2).then_some(())
    })
    .await;
    assert_eq!(http_get(&format!("{}:{port}", remote.ip())).map(|(_, b)| b).as_deref(), Some(ECHO_BODY));
}
