//! Secret values never leak: not in any output of any command, not in logs at the most
//! verbose level, not in anything berth writes to Kubernetes or to a host's labels.
//!
//! Three secrets, each a unique random marker: an env value from a Secret (`secretKeyRef`),
//! the password of a registry with htpasswd auth (`imagePullSecrets`), and the private key
//! of a TLS host (a line of its PEM). A set on a test-bed host reached over mutual TLS pulls
//! its image from that registry and gets the env value; then the env Secret changes (a new
//! revision, so `plan` has a diff to print). Standalone: `plan` (text and JSON), `apply`,
//! `status` (every format) and `history` (text and JSON), all with `RUST_LOG=trace`. The
//! operator: the same objects in the fake API, reconciled with `RUST_LOG=trace`, the Secret
//! changed there too.
//!
//! Then every byte of output, the operator's log, every object in the fake API (Secrets
//! aside: they are where the values live) — statuses, Events, ControllerRevisions, Leases —
//! and every label of every container and volume on the host are searched for each marker,
//! in clear and base64 (how registry credentials travel). The one place a secret env value
//! may be is the container's own environment (`Config.Env` in Docker's inspect): the test
//! checks that it is there, and nowhere else in the inspect.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use base64::Engine as _;
use berth_crd::ContainerSet;
use berth_tests::*;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptions};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);
const REGISTRY_USER: &str = "berth";

/// A random marker no test or tool would print by chance.
fn marker(kind: &str) -> String {
    let random = |_| std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{kind}{:016x}{:016x}", random(0), random(1))
}

/// The forms a secret takes on its way: itself, and base64 at each of the three alignments
/// (standard and URL-safe alphabets), edges trimmed so that the bytes around it do not matter.
fn leak_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    for pad in 0..3 {
        let text = format!("{}{secret}", "x".repeat(pad));
        for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE] {
            let b64 = engine.encode(&text);
            forms.push(b64[4..b64.len() - 4].to_string());
        }
    }
    forms
}

/// The secrets of this test and where each was found.
struct Secrets {
    named: Vec<(&'static str, String)>,
}

impl Secrets {
    /// `(secret, place)` for every secret found in `text`.
    fn found_in(&self, place: &str, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (what, secret) in &self.named {
            if leak_forms(secret).iter().any(|f| text.contains(f.as_str())) {
                out.push(format!("the {what} in {place}"));
            }
        }
        out
    }
}

fn tls_secret(ns: &str, host: &RemoteHost) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "remote-tls", "namespace": ns},
        "stringData": {"ca.crt": host.ca_pem(), "tls.crt": host.cert_pem(), "tls.key": host.key_pem()}
    })
}

fn env_secret(ns: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "app", "namespace": ns}, "stringData": {"token": value}
    })
}

fn pull_secret(ns: &str, registry: &Registry, password: &str) -> Value {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{REGISTRY_USER}:{password}"));
    let config = json!({"auths": {registry.addr(): {"auth": auth}}}).to_string();
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred", "namespace": ns}, "stringData": {".dockerconfigjson": config}
    })
}

fn docker_host(ns: &str, host: &RemoteHost) -> Value {
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "remote", "namespace": ns, "labels": {"role": "web"}},
        "spec": {"endpoint": host.tcp_endpoint(), "tls": {"secretName": "remote-tls"}}
    })
}

fn container_set(ns: &str, image: &str) -> Value {
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "hostSelector": {"matchLabels": {"role": "web"}}, "replicasPerHost": 1,
            "strategy": {"progressDeadlineSeconds": 60},
            "template": {
                "image": image, "imagePullPolicy": "IfNotPresent", "imagePullSecrets": [{"name": "regcred"}],
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app", "key": "token"}}},
                        {"name": "MODE", "value": "test"}],
                "stopGracePeriodSeconds": 2,
                "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}
            }
        }
    })
}

/// Everything berth wrote to the host: every label of its containers and volumes, and the
/// containers' inspect with `Config.Env` taken out (checked apart).
async fn host_state(docker: &bollard::Docker, ns: &str) -> (String, Vec<Vec<String>>) {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&std::collections::HashMap::from([("label", vec![format!("berth.dev/namespace={ns}")])]))
        .build();
    let mut text = String::new();
    let mut envs = Vec::new();
    for c in docker.list_containers(Some(opts)).await.unwrap() {
        let mut inspect =
            serde_json::to_value(docker.inspect_container(c.id.as_deref().unwrap(), None).await.unwrap()).unwrap();
        let env = inspect["Config"]["Env"].take();
        envs.push(serde_json::from_value(env).unwrap_or_default());
        text.push_str(&inspect.to_string());
    }
    let volumes = docker.list_volumes(None::<ListVolumesOptions>).await.unwrap();
    for v in volumes.volumes.unwrap_or_default() {
        text.push_str(&format!("\nvolume {} {:?}", v.name, v.labels));
    }
    (text, envs)
}

/// Every object in the fake API but Secrets, as JSON text.
async fn cluster_objects(client: &kube::Client) -> String {
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let mut text = String::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if ar.kind == "Secret" || !caps.supports_operation(kube::discovery::verbs::LIST) {
                continue;
            }
            // Cluster-scoped and namespaced alike: every namespace.
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let list = api.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("list {}: {e}", ar.plural));
            for o in list.items {
                text.push_str(&format!("\n{} {}\n", ar.kind, serde_json::to_string(&o).unwrap()));
            }
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_values_never_leak() {
    ensure_echo_image();
    let env_value = marker("envsecret");
    let env_value_2 = marker("envsecrettwo");
    let password = marker("regpass");
    let host = RemoteHost::start(41);
    // The key's second PEM line: key material only, unique to this host.
    let key_line = host.key_pem().lines().nth(1).expect("a PEM body").to_string();
    let secrets = Secrets {
        named: vec![
            ("env value", env_value.clone()),
            ("second env value", env_value_2.clone()),
            ("registry password", password.clone()),
            ("TLS key", key_line),
        ],
    };
    let registry = Registry::start(Some((REGISTRY_USER, &password)));
    let _forward = registry.expose_in(&host);
    let image = registry.push(&docker().await, ECHO_IMAGE, "leak/echo:v1").await;
    let remote = host.docker_unix().await;
    let mut leaks = Vec::new();
    let mut said = |place: &str, text: &str| leaks.extend(secrets.found_in(place, text));

    // Standalone.
    let ns = unique_ns("leak");
    let dir = tempfile::tempdir().unwrap();
    let write = |env: &str| {
        let docs = [
            tls_secret(&ns, &host),
            env_secret(&ns, env),
            pull_secret(&ns, &registry, &password),
            docker_host(&ns, &host),
            container_set(&ns, &image),
        ];
        write_documents(dir.path(), "app.yaml", &docs);
    };
    let f = dir.path().display().to_string();
    let trace = [("RUST_LOG", "trace")];
    let mut run = |args: &[&str], code: i32| {
        let out = berth(args, &trace);
        out.assert_code(code);
        let place = format!("`berth {}`", args.join(" "));
        said(&format!("{place} stdout"), &out.stdout);
        said(&format!("{place} stderr"), &out.stderr);
        out
    };
    write(&env_value);
    run(&["plan", "-f", &f], 2);
    run(&["plan", "-f", &f, "-o", "json"], 2);
    run(&["apply", "-f", &f], 0);
    write(&env_value_2);
    let plan = run(&["plan", "-f", &f], 2);
    assert!(plan.stdout.contains("env.TOKEN"), "the plan says the secret env changed: {plan}");
    assert!(plan.stdout.contains("<secret>"), "and shows it redacted: {plan}");
    run(&["plan", "-f", &f, "-o", "json"], 2);
    run(&["apply", "-f", &f], 0);
    for format in ["table", "json", "yaml"] {
        run(&["status", "-f", &f, "-o", format], 0);
    }
    let set = format!("{ns}/web");
    run(&["history", &set, "-f", &f], 0);
    run(&["history", &set, "-f", &f, "--json"], 0);

    let (state, envs) = host_state(&remote, &ns).await;
    said("the host's containers (inspect without Config.Env) and volumes", &state);
    assert_eq!(envs.len(), 1, "one container runs");
    assert!(
        envs[0].contains(&format!("TOKEN={env_value_2}")),
        "the container's own env is where the value goes: {:?}",
        envs[0].iter().map(|e| e.split('=').next().unwrap_or_default()).collect::<Vec<_>>()
    );
    cleanup_containers(&remote, &ns).await;
    // Gone from the host, so that the operator pulls it again with the credentials.
    let pulled = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&std::collections::HashMap::from([("reference", vec![format!("{}/leak/echo", registry.addr())])]))
        .build();
    let pulled = remote.list_images(Some(pulled)).await.unwrap();
    assert!(!pulled.is_empty(), "the image was pulled from the registry");
    for i in pulled {
        let force = bollard::query_parameters::RemoveImageOptions { force: true, ..Default::default() };
        remote.remove_image(&i.id, Some(force), None).await.unwrap();
    }

    // The operator, at its most verbose.
    let ns = unique_ns("leak");
    let (fake, client) = fake_cluster(&ns).await;
    let create = |doc: Value| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let ar = match doc["kind"].as_str() {
                Some("Secret") => kube::discovery::ApiResource::erase::<Secret>(&()),
                Some("ContainerSet") => kube::discovery::ApiResource::erase::<ContainerSet>(&()),
                _ => kube::discovery::ApiResource::erase::<berth_crd::DockerHost>(&()),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
            api.create(&PostParams::default(), &serde_json::from_value(doc).unwrap()).await.unwrap();
        }
    };
    create(tls_secret(&ns, &host)).await;
    create(env_secret(&ns, &env_value)).await;
    create(pull_secret(&ns, &registry, &password)).await;
    create(docker_host(&ns, &host)).await;
    create(container_set(&ns, &image)).await;
    let op_dir = tempfile::tempdir().unwrap();
    let op = spawn_operator_logging(&fake, op_dir.path(), &ns, "leak", free_port(), "trace");
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), &ns);
    let ready_revision = || async {
        let cs = sets.get("web").await.ok()?;
        let st = cs.status?;
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && st.ready_replicas == 1).then_some(st.current_revision?)
    };
    let first = eventually("the set is Ready", WAIT, ready_revision).await;
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"stringData": {"token": env_value_2}});
    secret_api.patch("app", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually("the changed Secret is rolled out", WAIT, || async { ready_revision().await.filter(|r| *r != first) })
        .await;
    let (state, envs) = host_state(&remote, &ns).await;
    let objects = cluster_objects(&client).await;
    let log = op.kill();
    said("the host's containers (inspect without Config.Env) and volumes, operator", &state);
    said("the fake API's objects", &objects);
    said("the operator's log (RUST_LOG=trace)", &format!("{}{}", log.stdout, log.stderr));
    assert!(objects.contains("ControllerRevision") && objects.contains("\"reason\""), "objects were read");
    assert!(log.stderr.lines().count() > 100, "the log is verbose: {} lines", log.stderr.lines().count());
    assert_eq!(envs.len(), 1, "one container runs");
    assert!(envs[0].contains(&format!("TOKEN={env_value_2}")), "the container's own env has the value");
    cleanup_containers(&remote, &ns).await;

    let mut unique = BTreeMap::new();
    for l in leaks {
        *unique.entry(l).or_insert(0) += 1;
    }
    assert!(unique.is_empty(), "secrets leaked: {unique:#?}");
}
