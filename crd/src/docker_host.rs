//! `DockerHost`: one Docker engine that berth places containers on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::patterns::{
    CAPABILITY, DNS_SUBDOMAIN, ENDPOINT, MAX_SECURITY_OPT, MAX_SYSCTL, NORMAL_PATH, SECURITY_OPT_GRANT, SYSCTL_GLOB,
};

/// A Docker engine reached over its API: a unix socket, or TCP with mutual TLS.
///
/// Its `metadata.labels` are what a ContainerSet's `hostSelector` matches.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "DockerHost",
    namespaced,
    shortname = "dh",
    status = "DockerHostStatus",
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.engineVersion"}"#,
    printcolumn = r#"{"name":"Containers","type":"integer","jsonPath":".status.managedContainers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label: lowercase letters, digits and '-', at most 63 characters")
)]
#[x_kube(
    validation = Rule::new("!self.endpoint.startsWith('tcp://') || has(self.tls) || (has(self.insecure) && self.insecure)").message("spec.tls: a tcp:// endpoint needs tls.secretName (or spec.insecure: true)").field_path(".tls")
)]
#[serde(rename_all = "camelCase")]
pub struct DockerHostSpec {
    /// The engine's API address: `unix:///var/run/docker.sock` or `tcp://10.0.0.5:2376`.
    #[schemars(regex(pattern = ENDPOINT))]
    pub endpoint: String,

    /// Mutual TLS for `tcp://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HostTls>,

    /// Allow a `tcp://` endpoint without TLS. Anyone who reaches the port owns the host.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,

    /// Cordon: no new containers are placed here; running ones stay.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unschedulable: bool,

    /// What containers placed here may do. Everything is denied by default.
    #[serde(default)]
    pub policy: HostPolicy,
}

/// Where the client certificate for a TLS endpoint comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostTls {
    /// A Secret in the host's namespace with keys `ca.crt`, `tls.crt` and `tls.key`.
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub secret_name: String,
}

/// What a host grants to the containers placed on it. Everything that would let a container
/// take the host over is denied unless listed here: whoever may write ContainerSets in the
/// namespace gets exactly this much of the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPolicy {
    /// Containers may run `privileged` (every capability and device: the host itself).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_privileged: bool,
    /// Containers may use the host's network namespace (`template.hostNetwork`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_host_network: bool,
    /// Containers may use the host's PID namespace (`template.hostPID`).
    #[serde(default, rename = "allowHostPID", skip_serializing_if = "is_false")]
    pub allow_host_pid: bool,
    /// Capabilities `template.capAdd` may add (`NET_ADMIN`, `SYS_TIME`, ...; with or without
    /// `CAP_`). `ALL` here allows any, and is the only way to allow `capAdd: [ALL]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = CAPABILITY)))]
    pub allowed_capabilities: Vec<String>,
    /// Bind mounts may use host paths equal to or under these prefixes: absolute and
    /// normalised (no `.` or `..` segments, no `//`, no trailing `/` except `/` itself).
    /// The check is lexical: the host's symlinks are not followed (see docs/security.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = NORMAL_PATH)))]
    pub allowed_host_paths: Vec<String>,
    /// Containers may use the host's IPC namespace (`template.ipcMode: host`).
    #[serde(default, rename = "allowHostIPC", skip_serializing_if = "is_false")]
    pub allow_host_ipc: bool,
    /// Containers may join another container's PID or IPC namespace (`template.pidMode` or
    /// `template.ipcMode: container:NAME`), and see or signal its processes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_container_namespaces: bool,
    /// Devices `template.devices` may use: host paths equal to or under these prefixes
    /// (`/dev/fuse`, `/dev/snd`), absolute and normalised, compared as `allowedHostPaths` are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = NORMAL_PATH)))]
    pub allowed_devices: Vec<String>,
    /// `template.securityOpt` entries allowed here, as written (`seccomp=unconfined`,
    /// `apparmor=unconfined`), or a kind alone (`seccomp`, `apparmor`, `label`) for every option
    /// of that kind. `no-new-privileges` takes nothing from the host and needs no grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = SECURITY_OPT_GRANT), length(max = MAX_SECURITY_OPT)))]
    pub allowed_security_opts: Vec<String>,
    /// Namespaced sysctls beyond Kubernetes' safe set that `template.sysctls` may set: names
    /// (`net.core.somaxconn`), prefixes ending in `*` (`kernel.msg*`, `net.core.*`), or `*`.
    /// (A sysctl that is not namespaced is the host's own; no policy makes runc set it.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = SYSCTL_GLOB), length(max = MAX_SYSCTL)))]
    pub allowed_sysctls: Vec<String>,
}

/// What berth last saw of the engine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerHostStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_containers: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
