//! `Image`: an image built from a Dockerfile, identified by a content digest of its inputs.
//!
//! A ContainerSet runs it with `template.imageFrom: {name: ...}` instead of `template.image`:
//! the built image's tag (`<repository or name>:berth-<16 hex of the input digest>`) becomes the
//! template's image, so a change of the source is a new revision, rolled out like any other.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::container_set::LocalObjectReference;
use crate::patterns::*;

/// An image berth builds and distributes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Image",
    namespaced,
    shortname = "img",
    status = "ImageStatus",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.latestImage"}"#,
    printcolumn = r#"{"name":"Input","type":"string","jsonPath":".status.inputDigest"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label: lowercase letters, digits and '-', at most 63 characters")
)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// What to build.
    pub build: Build,
    /// Push here (`registry[:port]/repo`, no tag); hosts then pull by digest. Without it, the
    /// image is carried from the builder to each host that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REPOSITORY))]
    pub repository: Option<String>,
    /// A Secret of type `kubernetes.io/dockerconfigjson` to push with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_secret: Option<LocalObjectReference>,
    /// The DockerHosts (same namespace) that may build it; the first by name builds. Empty: the
    /// first host of the input (or the local engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selector: Option<LabelSelector>,
}

/// A build: a context folder and a Dockerfile in it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    /// The context folder, relative to the file that declares the Image (standalone).
    #[schemars(length(min = 1, max = 4096))]
    pub context: String,
    /// The Dockerfile, relative to the context (default `Dockerfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub dockerfile: Option<String>,
    /// `--build-arg`s.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub args: BTreeMap<String, String>,
    /// The stage to build (`--target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = STAGE))]
    pub target: Option<String>,
    /// Labels on the built image. Keys under `berth.dev/` are reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_LABELS))]
    pub labels: BTreeMap<String, String>,
}

/// What berth built last.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// `sha256:...` of the build's inputs (context as sent, Dockerfile, args, target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_digest: Option<String>,
    /// The tag (or `repo@digest`) sets run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `template.imageFrom`: run an Image's current build.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageFrom {
    /// An Image in the same namespace.
    #[schemars(regex(pattern = DNS_LABEL), length(min = 1, max = 63))]
    pub name: String,
}

/// The tag of a build: `<repository or name>:berth-<first 16 hex of the input digest>`.
pub fn build_tag(image: &Image, input_digest: &str) -> String {
    let hex = input_digest.strip_prefix("sha256:").unwrap_or(input_digest);
    let repo = image.spec.repository.clone().unwrap_or_else(|| image.metadata.name.clone().unwrap_or_default());
    format!("{repo}:berth-{}", &hex[..hex.len().min(16)])
}
