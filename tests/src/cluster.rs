//! A Kubernetes API for the operator's tests: the strict fake from `e2e/fake-api`, with
//! berth's CRDs installed and a namespace created, and the `berth operator` process on it.

use std::path::Path;

use berth_fake_api::FakeApi;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

use std::time::Duration;

use berth_crd::ContainerSet;

use crate::berth_cli::{BerthProcess, spawn_berth};
use crate::wait::eventually;

/// The fake API with berth's CRDs and the namespace `ns`, and a client for it.
pub async fn fake_cluster(ns: &str) -> (FakeApi, kube::Client) {
    let fake = FakeApi::start();
    let client = fake.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in berth_crd::crds() {
        crds.create(&PostParams::default(), &crd).await.expect("create CRD");
    }
    let n: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("a namespace");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &n).await.expect("create namespace");
    (fake, client)
}

/// `berth operator` against the fake, its Lease in `ns`, a 3 s lease, HTTP on `port`.
/// The kubeconfig is written under `dir/<identity>/`.
pub fn spawn_operator(fake: &FakeApi, dir: &Path, ns: &str, identity: &str, port: u16) -> BerthProcess {
    spawn_operator_via(fake, &fake.url(), dir, ns, identity, port, 3)
}

/// [`spawn_operator`] with `RUST_LOG=rust_log` (e.g. `trace`, to see everything it could say).
pub fn spawn_operator_logging(
    fake: &FakeApi,
    dir: &Path,
    ns: &str,
    identity: &str,
    port: u16,
    rust_log: &str,
) -> BerthProcess {
    spawn_operator_with(fake, &fake.url(), dir, ns, identity, port, 3, rust_log)
}

/// [`spawn_operator`] reaching the fake at `api_url` (e.g. through a [`crate::link::Link`])
/// with a lease of `lease_seconds`.
pub fn spawn_operator_via(
    fake: &FakeApi,
    api_url: &str,
    dir: &Path,
    ns: &str,
    identity: &str,
    port: u16,
    lease_seconds: u32,
) -> BerthProcess {
    spawn_operator_with(fake, api_url, dir, ns, identity, port, lease_seconds, "berth=info")
}

#[allow(clippy::too_many_arguments)]
fn spawn_operator_with(
    fake: &FakeApi,
    api_url: &str,
    dir: &Path,
    ns: &str,
    identity: &str,
    port: u16,
    lease_seconds: u32,
    rust_log: &str,
) -> BerthProcess {
    let dir = dir.join(identity);
    std::fs::create_dir_all(&dir).expect("a folder for the kubeconfig");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig_yaml().replace(&fake.url(), api_url)).expect("write the kubeconfig");
    let kc = kubeconfig.to_str().expect("a UTF-8 path").to_string();
    let addr = format!("127.0.0.1:{port}");
    let lease = lease_seconds.to_string();
    spawn_berth(
        ["operator", "--http-addr", &addr, "--lease-namespace", ns, "--identity", identity, "--lease-seconds", &lease],
        &[("KUBECONFIG", kc.as_str()), ("RUST_LOG", rust_log)],
    )
}

/// A `berth operator` process whose log tail is printed if the test panics while it is held:
/// the log is what explains a failed wait. `None` while the test has it stopped.
pub struct OperatorLog(pub Option<BerthProcess>);

impl Drop for OperatorLog {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(p) = &self.0
        {
            let log = p.stderr();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- berth operator log (last 40 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Waits (up to `timeout`) until the set `name` is Ready with `ready` replicas ready, at a
/// revision other than `not`, for its current generation; returns that revision.
pub async fn ready_at_new_revision(
    sets: &kube::Api<ContainerSet>,
    name: &str,
    ready: u32,
    not: Option<&str>,
    timeout: Duration,
) -> String {
    eventually("the set Ready at the declared revision", timeout, || async {
        let cs = sets.get(name).await.ok()?;
        let st = cs.status.as_ref()?;
        let is_ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        let current = st.current_revision.clone()?;
        (is_ready
            && st.observed_generation == cs.metadata.generation
            && st.ready_replicas == ready as i32
            && st.update_revision.as_deref() == Some(current.as_str())
            && not != Some(current.as_str()))
        .then_some(current)
    })
    .await
}
