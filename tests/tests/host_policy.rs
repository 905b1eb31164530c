//! A tenant who may write ContainerSets must not take a host over through them.
//!
//! A set asking for everything that would hand it the host — privileged, the host's network
//! and PID namespaces, an added capability, a bind mount of `/` — is refused on a DockerHost
//! whose `spec.policy` grants none of it: by `berth apply` and `berth plan` (exit 1, each
//! field named, not one request reaching the engine) and by the operator (`PolicyViolation`
//! in status and a Warning Event, naming the host and the fields; no mutating request to the
//! engine). On a host that grants it all, the container runs with exactly those settings.

use std::time::Duration;

use berth_crd::{ContainerSet, DockerHost};
use berth_tests::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// Everything a container could ask for to own its host (the echo app listens on `port`).
fn takeover_template(port: u16) -> serde_json::Value {
    json!({
        "image": ECHO_IMAGE, "imagePullPolicy": "Never",
        "privileged": true, "hostNetwork": true, "hostPID": true, "capAdd": ["NET_ADMIN"],
        "env": [{"name": "PORT", "value": port.to_string()}],
        "mounts": [{"type": "bind", "source": "/", "target": "/host", "readOnly": true}],
        "stopGracePeriodSeconds": 2,
        "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}
    })
}

/// The fields the takeover asks for, and the policy field that would grant each.
const REFUSED: [(&str, &str); 5] = [
    ("spec.template.privileged", "spec.policy.allowPrivileged"),
    ("spec.template.hostNetwork", "spec.policy.allowHostNetwork"),
    ("spec.template.hostPID", "spec.policy.allowHostPID"),
    ("spec.template.capAdd[0]", "spec.policy.allowedCapabilities"),
    ("spec.template.mounts[0].source", "spec.policy.allowedHostPaths"),
];

fn host_yaml(ns: &str, name: &str, endpoint: &str, policy: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": name, "namespace": ns, "labels": {"host": name}},
        "spec": {"endpoint": endpoint, "policy": policy}
    })
}

fn set_yaml(ns: &str, name: &str, host: &str, template: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hostSelector": {"matchLabels": {"host": host}}, "replicasPerHost": 1,
                 "strategy": {"progressDeadlineSeconds": 60}, "template": template}
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_grants_nothing_refuses_a_takeover_and_is_not_touched() {
    ensure_echo_image();
    let ns = NamespaceGuard::new("policy");
    let proxy = CountingProxy::start(&local_socket_path());
    let dir = tempfile::tempdir().unwrap();
    let file = write_documents(
        dir.path(),
        "tenant.yaml",
        &[
            host_yaml(ns.name(), "locked", &proxy.docker_host(), json!({})),
            set_yaml(ns.name(), "tenant", "locked", takeover_template(free_port())),
        ],
    );

    for args in [vec!["apply", "-f", &file], vec!["plan", "-f", &file]] {
        let out = berth_async(&args, &[]).await;
        out.assert_code(1);
        for (field, grant) in REFUSED {
            let line = out.stderr.lines().find(|l| l.contains(&format!("{field}: DockerHost locked does not allow")));
            let line = line.unwrap_or_else(|| panic!("`berth {}` names {field} and the host: {out}", args[0]));
            assert!(line.contains(grant), "the message says which policy field would allow it: {line}");
        }
    }
    assert_eq!(proxy.requests().len(), 0, "a refused input reaches no engine: {:?}", proxy.requests());
    assert!(containers_in(&docker().await, ns.name()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_grants_it_runs_the_container_with_those_settings() {
    ensure_echo_image();
    let ns = NamespaceGuard::new("policy");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let grant_all = json!({"allowPrivileged": true, "allowHostNetwork": true, "allowHostPID": true,
                           "allowedCapabilities": ["NET_ADMIN"], "allowedHostPaths": ["/"]});
    let endpoint = format!("unix://{}", local_socket_path().display());
    let mut takeover = takeover_template(port);
    takeover["privileged"] = json!(false); // apart, below
    let mut privileged = json!({"image": ECHO_IMAGE, "imagePullPolicy": "Never", "privileged": true,
                                "stopGracePeriodSeconds": 2});
    privileged["env"] = json!([{"name": "PORT", "value": free_port().to_string()}]);
    let file = write_documents(
        dir.path(),
        "trusted.yaml",
        &[
            host_yaml(ns.name(), "open", &endpoint, grant_all),
            set_yaml(ns.name(), "trusted", "open", takeover),
            set_yaml(ns.name(), "root", "open", privileged),
        ],
    );
    let out = berth_async(["apply", "-f", &file], &[]).await;

    let docker = docker().await;
    let host_config = |name: &'static str| {
        let docker = docker.clone();
        let ns = ns.name().to_string();
        async move {
            let all = containers_in(&docker, &ns).await;
            let c = all
                .iter()
                .find(|c| c.labels.as_ref().and_then(|l| l.get("berth.dev/set")).map(String::as_str) == Some(name))
                .unwrap_or_else(|| panic!("set {name} has a container: {all:?}"));
            docker.inspect_container(c.id.as_deref().unwrap(), None).await.unwrap().host_config.expect("a HostConfig")
        }
    };
    let hc = host_config("trusted").await;
    assert_eq!(hc.network_mode.as_deref(), Some("host"));
    assert_eq!(hc.pid_mode.as_deref(), Some("host"));
    assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_string()]));
    assert_ne!(hc.privileged, Some(true));
    let mounts = hc.mounts.unwrap_or_default();
    assert!(
        mounts.iter().any(|m| m.source.as_deref() == Some("/") && m.target.as_deref() == Some("/host")),
        "{mounts:?}"
    );
    // On the host's network, the app answers on the host's own address.
    assert_eq!(http_get(&format!("127.0.0.1:{port}")).map(|(_, b)| b).as_deref(), Some(ECHO_BODY));

    // Privileged: berth creates it so. The engine on the test machines cannot start one (the
    // machine itself lacks CAP_SYS_RESOURCE; `docker run --privileged` fails the same way),
    // so either it runs, or the start failed with exactly the engine's words for that.
    assert_eq!(host_config("root").await.privileged, Some(true));
    assert!(
        out.success() || (out.stderr.contains("root") && out.stderr.contains("unable to apply caps")),
        "apply succeeded but for the engine's own limit on privileged containers: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_refuses_a_takeover_naming_host_and_fields_and_touches_nothing() {
    ensure_echo_image();
    let ns = NamespaceGuard::new("policy");
    let proxy = CountingProxy::start(&local_socket_path());
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    let hosts: Api<DockerHost> = Api::namespaced(client.clone(), ns.name());
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    let host: DockerHost =
        serde_json::from_value(host_yaml(ns.name(), "locked", &proxy.docker_host(), json!({}))).unwrap();
    hosts.create(&PostParams::default(), &host).await.unwrap();
    let set: ContainerSet =
        serde_json::from_value(set_yaml(ns.name(), "tenant", "locked", takeover_template(free_port()))).unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let op = spawn_operator(&fake, dir.path(), ns.name(), "policy", free_port());

    let ready = eventually("the set is refused", Duration::from_secs(60), || async {
        let cs = sets.get("tenant").await.ok()?;
        cs.status?.conditions.into_iter().find(|c| c.type_ == "Ready" && c.reason == "PolicyViolation")
    })
    .await;
    assert_eq!(ready.status, "False");
    for (field, grant) in REFUSED {
        assert!(
            ready.message.contains(&format!("{field}: DockerHost locked does not allow"))
                && ready.message.contains(grant),
            "the condition names {field}, the host and {grant}: {}",
            ready.message
        );
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns.name());
    let warning = eventually("a Warning Event", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("PolicyViolation"))
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.note.unwrap_or_default().contains("spec.template.privileged: DockerHost locked"));

    // The host was probed (its own status), never changed.
    eventually("the host was probed through the proxy", Duration::from_secs(30), || async {
        (!proxy.requests().is_empty()).then_some(())
    })
    .await;
    let mutating: Vec<_> = proxy.requests().into_iter().filter(|r| r.is_mutating()).collect();
    assert!(mutating.is_empty(), "no mutating request to the host: {mutating:?}\n{}", op.stderr());
    assert!(containers_in(&docker().await, ns.name()).await.is_empty());
}

/// The implicit local engine (no DockerHost in the input) keeps compose's habit: a bind of a
/// path under the folder the input file sits in runs; the same set binding a path outside
/// it is refused before any request, saying how to allow it.
#[tokio::test(flavor = "multi_thread")]
async fn the_local_engine_allows_binds_under_the_input_folder_only() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("localpolicy");
    let dir = tempfile::tempdir().unwrap();
    let folder = std::fs::canonicalize(dir.path()).unwrap();
    let data = folder.join("data");
    std::fs::create_dir(&data).unwrap();
    let bind = |source: &str| {
        format!(
            "    mounts:\n      - type: bind\n        source: {source}\n        target: /data\n        readOnly: true\n"
        )
    };
    let mut inside = EchoSet::new(ns.name(), "web");
    inside.extra_template = bind(data.to_str().unwrap());
    let file = inside.write(&folder);
    berth_async(["apply", "-f", file.to_str().unwrap()], &[]).await.assert_success();
    assert_eq!(names_ids_states(&docker, ns.name()).await.len(), 1, "the set runs with its ./data bind");

    let proxy = CountingProxy::start(&local_socket_path());
    let mut outside = EchoSet::new(ns.name(), "web");
    outside.extra_template = bind("/etc");
    let file = outside.write(&folder);
    let host = proxy.docker_host();
    let refused = berth_async(["apply", "-f", file.to_str().unwrap()], &[("DOCKER_HOST", host.as_str())]).await;
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("spec.template.mounts[0].source: the local engine (no DockerHost in the input) does not allow bind mounts of \"/etc\" outside")
            && refused.stderr.contains("declare the local engine as a DockerHost"),
        "{refused}"
    );
    assert_eq!(proxy.requests().len(), 0, "a refused input reaches no engine: {}", proxy.describe());
}
