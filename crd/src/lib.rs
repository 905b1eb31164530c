//! berth's API: the `DockerHost` and `ContainerSet` resources (group `berth.dev`, version
//! `v1alpha1`).
//!
//! The same types serve both front ends: the operator reads them from the Kubernetes API, the
//! standalone CLI reads them from YAML files. Validation therefore lives here twice and
//! consistently: as OpenAPI schema + CEL rules in the generated CRD (checked by the API server
//! at admission) and as [`validate`] in Rust (checked by the CLI before any host is touched).
//! The two share [`patterns`]; `tests/consistency.rs` evaluates the CRD offline, as the API
//! server would, and shows that both accept and reject the same objects at the same fields.

pub mod container_set;
pub mod docker_host;
pub mod host_ip;
pub mod image;
pub mod patterns;
pub mod quantity;
pub mod validate;

pub use container_set::*;
pub use docker_host::*;
pub use image::*;
pub use validate::{FieldError, Validate};

/// The API group of every berth resource.
pub const GROUP: &str = "berth.dev";
/// The API version of every berth resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in YAML.
pub const API_VERSION: &str = "berth.dev/v1alpha1";

/// The CRDs of all berth resources, in a stable order.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![DockerHost::crd(), ContainerSet::crd(), Image::crd()]
}

/// The CRDs as one multi-document YAML stream (what `berth crd` prints).
pub fn crds_yaml() -> String {
    crd_files().into_iter().map(|(_, yaml)| format!("---\n{yaml}")).collect()
}

/// Each CRD as `(file name, YAML)`, as checked in under `manifests/crd/`.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            (name, serde_saphyr::to_string(&crd).expect("a CRD always serializes"))
        })
        .collect()
}
