//! Helpers shared by the test binaries.
#![allow(dead_code)]

use std::time::Duration;

use berth_crd::ContainerSet;
use berth_fake_api::FakeApi;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::core::Status;
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

/// A ContainerSet with a one-image template.
pub fn container_set(name: &str, image: &str) -> ContainerSet {
    let spec = serde_json::from_value(json!({"template": {"image": image}})).expect("spec");
    ContainerSet::new(name, spec)
}

/// Installs berth's CRDs and waits until they are established.
pub async fn install_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in berth_crd::crds() {
        let name = crd.metadata.name.clone().expect("named");
        crds.create(&PostParams::default(), &crd).await.expect("create CRD");
        tokio::time::timeout(
            Duration::from_secs(10),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .expect("await CRD");
    }
}

/// A started server, a client, and berth's CRDs installed.
pub async fn with_crds() -> (FakeApi, kube::Client) {
    let api = FakeApi::start();
    let client = api.client().await;
    install_crds(&client).await;
    (api, client)
}

/// The `metav1.Status` of an API error (panics on other errors).
pub fn status(err: kube::Error) -> Box<Status> {
    match err {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
