//! A Kubernetes API for the operator's tests: the strict fake from `e2e/fake-api`, with
//! berth's CRDs installed and a namespace created, and the `berth operator` process on it.

use std::path::Path;

use berth_fake_api::FakeApi;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

use crate::berth_cli::{BerthProcess, spawn_berth};

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
    spawn_operator_logging(fake, dir, ns, identity, port, "berth=info")
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
    let dir = dir.join(identity);
    std::fs::create_dir_all(&dir).expect("a folder for the kubeconfig");
    let kubeconfig = fake.write_kubeconfig(&dir);
    let kc = kubeconfig.to_str().expect("a UTF-8 path").to_string();
    let addr = format!("127.0.0.1:{port}");
    spawn_berth(
        ["operator", "--http-addr", &addr, "--lease-namespace", ns, "--identity", identity, "--lease-seconds", "3"],
        &[("KUBECONFIG", kc.as_str()), ("RUST_LOG", rust_log)],
    )
}
