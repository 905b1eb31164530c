//! `ContainerSet`: one container template, placed on the hosts a label selector picks,
//! `replicasPerHost` copies on each.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::docker_host::is_false;
use crate::patterns::*;

/// The declared state of one group of identical containers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "ContainerSet",
    namespaced,
    shortname = "cs",
    status = "ContainerSetStatus",
    printcolumn = r#"{"name":"Hosts","type":"integer","jsonPath":".status.hostCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.readyReplicasText"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.currentRevision"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label: lowercase letters, digits and '-', at most 63 characters"),
    validation = Rule::new("!has(self.spec.dependsOn) || self.spec.dependsOn.all(d, d.name != self.metadata.name)").message("spec.dependsOn: a set cannot depend on itself")
)]
#[x_kube(
    validation = Rule::new("self.replicasPerHost <= 1 || !has(self.template.ports) || self.template.ports.all(p, !has(p.hostPort))").message("spec.replicasPerHost: a fixed hostPort allows at most one replica per host").field_path(".replicasPerHost"),
    validation = Rule::new("self.imagePolicy != 'Follow' || !has(self.template.image) || !self.template.image.contains('@')").message("spec.imagePolicy: Follow needs a tag to follow, and the image is already pinned to a digest").field_path(".imagePolicy"),
    validation = Rule::new("!has(self.mode) || self.mode != 'Task' || !has(self.template.restartPolicy) || self.template.restartPolicy in ['Never', 'OnFailure']").message("spec.template.restartPolicy: a Task takes Never (the default) or OnFailure").field_path(".template.restartPolicy"),
    validation = Rule::new("!has(self.mode) || self.mode != 'Task' || !has(self.strategy) || !has(self.strategy.autoRollback) || !self.strategy.autoRollback").message("spec.strategy.autoRollback: a Task is not rolled back").field_path(".strategy.autoRollback")
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSetSpec {
    /// The DockerHosts (same namespace) this set runs on. Empty selects every host.
    #[serde(default)]
    #[schemars(schema_with = "host_selector_schema")]
    pub host_selector: LabelSelector,

    /// Copies per selected host. 0 removes the containers (named volumes stay).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas_per_host: i32,

    /// The container every replica runs.
    pub template: ContainerTemplate,

    /// How a new revision replaces the old one.
    #[serde(default)]
    pub strategy: Strategy,

    /// How many old revisions are remembered.
    #[serde(default = "ten")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: i32,

    /// Stop a rollout where it is.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,

    /// What to do with containers changed behind berth's back.
    #[serde(default)]
    pub drift_policy: DriftPolicy,

    /// Whether named volumes declared by the template are deleted with the set.
    #[serde(default)]
    pub volume_reclaim_policy: VolumeReclaimPolicy,

    /// What a moved image tag does: `Pin` (default) keeps every revision on the digest its tag
    /// had when the revision was made; `Follow` makes a new revision when the tag moves.
    #[serde(default)]
    pub image_policy: ImagePolicy,

    /// How often `Follow` asks the registry where the tag points (`30s`, `5m`, `1h`; at least
    /// `10s`). Ignored under `Pin`.
    #[serde(default = "five_minutes")]
    #[schemars(regex(pattern = POLL_INTERVAL), length(max = 16))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("spec.imagePollInterval: must be at least 10s"))]
    pub image_poll_interval: String,

    /// `Service` (default): the containers keep running. `Task`: each replica runs to
    /// completion once per revision (a migration); exit 0 completes it, anything else fails
    /// the revision.
    #[serde(default, skip_serializing_if = "SetMode::is_service")]
    pub mode: SetMode,

    /// Sets of the same namespace that must be Started, Ready or Completed on a host before
    /// this set's new containers are created there (fleet-wide for a set placed elsewhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DEPENDENCIES))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(x, x.name == d.name))").message("spec.dependsOn: a set is named twice"))]
    pub depends_on: Vec<Dependency>,
}

/// At most this many dependencies per set.
pub const MAX_DEPENDENCIES: usize = 64;

/// What a set is for: serving, or running once.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum SetMode {
    /// Long-running containers, replaced when they stop.
    #[default]
    Service,
    /// Runs to completion once per revision; a completed task is not run again until its
    /// revision changes.
    Task,
}

impl SetMode {
    pub fn is_service(&self) -> bool {
        *self == SetMode::Service
    }
}

/// One set this set waits for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// A ContainerSet in the same namespace.
    #[schemars(regex(pattern = DNS_LABEL), length(min = 1, max = 63))]
    pub name: String,
    /// What it must be before this set's new containers are created (default `Started`).
    #[serde(default)]
    pub condition: DependencyCondition,
}

/// When a dependency counts as satisfied.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum DependencyCondition {
    /// Its containers of its current revision run.
    #[default]
    Started,
    /// They run and are healthy (per their healthcheck).
    Ready,
    /// A Task that completed (exit 0) for its current revision.
    Completed,
}

/// Kubernetes' `LabelSelector` schema, plus what the API server checks for its own selectors
/// (an operator from the list, a non-empty key, values exactly when the operator takes them)
/// and a bound on the expressions.
fn host_selector_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use schemars::JsonSchema;
    let mut schema = LabelSelector::json_schema(generator);
    let exprs = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("matchExpressions"))
        .and_then(|m| m.as_object_mut())
        .expect("LabelSelector has matchExpressions");
    exprs.insert("maxItems".into(), MAX_SELECTOR_EXPRESSIONS.into());
    let item = exprs.get_mut("items").and_then(|i| i.as_object_mut()).expect("matchExpressions has items");
    item.insert(
        "x-kubernetes-validations".into(),
        serde_json::json!([{
            "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
            "message": "values: In and NotIn need at least one value; Exists and DoesNotExist take none",
            "fieldPath": ".values",
        }]),
    );
    let props = item.get_mut("properties").and_then(|p| p.as_object_mut()).expect("requirement has properties");
    props["key"]["minLength"] = 1.into();
    props["operator"]["enum"] = serde_json::json!(["In", "NotIn", "Exists", "DoesNotExist"]);
    schema
}

fn five_minutes() -> String {
    "5m".into()
}
fn one() -> i32 {
    1
}
fn ten() -> i32 {
    10
}

/// One container, Docker's knobs with Kubernetes' spelling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.image) != has(self.imageFrom)").message("spec.template.image: give exactly one of image and imageFrom").field_path(".image"),
    validation = Rule::new("!has(self.ports) || self.ports.all(p, !has(p.hostPort) || self.ports.exists_one(q, has(q.hostPort) && q.hostPort == p.hostPort && q.protocol == p.protocol && q.hostIP == p.hostIP))").message("spec.template.ports: duplicate hostPort/protocol/hostIP").field_path(".ports"),
    validation = Rule::new("!has(self.ports) || self.ports.all(p, self.ports.exists_one(q, q.containerPort == p.containerPort && q.protocol == p.protocol))").message("spec.template.ports: duplicate containerPort/protocol").field_path(".ports"),
    validation = Rule::new("!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))").message("spec.template.env: duplicate name").field_path(".env"),
    validation = Rule::new("!has(self.mounts) || self.mounts.all(m, self.mounts.exists_one(n, n.target == m.target))").message("spec.template.mounts: duplicate target").field_path(".mounts"),
    validation = Rule::new("!has(self.hostNetwork) || !self.hostNetwork || !has(self.networks) || size(self.networks) == 0").message("spec.template.networks: a container on the host's network joins no other network").field_path(".networks"),
    validation = Rule::new("!has(self.hostNetwork) || !self.hostNetwork || !has(self.ports) || self.ports.all(p, !has(p.hostPort))").message("spec.template.ports: a container on the host's network listens on the host directly; hostPort does not apply").field_path(".ports"),
    validation = Rule::new("!has(self.restartMaxRetries) || (has(self.restartPolicy) && self.restartPolicy == 'OnFailure')").message("spec.template.restartMaxRetries: applies to restartPolicy OnFailure only").field_path(".restartMaxRetries"),
    validation = Rule::new(format!("!has(self.shmSize) || !self.shmSize.matches('{ZERO_QUANTITY}')")).message("spec.template.shmSize: must be more than 0 (omit it for Docker's default of 64Mi)").field_path(".shmSize"),
    validation = Rule::new("!has(self.shmSize) || !has(self.ipcMode) || self.ipcMode in ['private', 'shareable']").message("spec.template.shmSize: applies to a private or shareable ipcMode only").field_path(".shmSize"),
    validation = Rule::new("!has(self.hostNetwork) || !self.hostNetwork || !has(self.sysctls) || self.sysctls.all(s, !s.name.startsWith('net.'))").message("spec.template.sysctls: net.* sysctls would change the host's network namespace (hostNetwork)").field_path(".sysctls"),
    validation = Rule::new(format!("!has(self.ipcMode) || self.ipcMode != 'host' || !has(self.sysctls) || self.sysctls.all(s, !(s.name in {IPC_SYSCTLS:?} || s.name.startsWith('fs.mqueue.')))")).message("spec.template.sysctls: IPC sysctls (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) would change the host's IPC namespace (ipcMode host)").field_path(".sysctls"),
    validation = Rule::new("!has(self.pidMode) || !has(self.hostPID) || !self.hostPID || self.pidMode == 'host'").message("spec.template.pidMode: hostPID already puts the container in the host's PID namespace").field_path(".pidMode")
)]
pub struct ContainerTemplate {
    /// An image reference: `[registry[:port]/]repo[:tag][@sha256:digest]`. Exactly one of
    /// `image` and `imageFrom`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = IMAGE))]
    pub image: String,

    /// Run an `Image`'s current build (same namespace) instead of `image`: its content tag
    /// becomes part of the revision, so a source change rolls out like any other change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_from: Option<crate::image::ImageFrom>,

    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// Secrets of type `kubernetes.io/dockerconfigjson` used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Replaces the image's ENTRYPOINT. Omit it to keep the image's; an empty list is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub command: Option<Vec<String>>,

    /// Replaces the image's CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV))]
    pub env: Vec<EnvVar>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PORTS))]
    pub ports: Vec<ContainerPort>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MOUNTS))]
    pub mounts: Vec<Mount>,

    /// User-defined bridge networks, created on demand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_NETWORKS), inner(regex(pattern = DOCKER_NAME)))]
    #[x_kube(validation = Rule::new("self.all(n, !(n in ['host', 'none', 'bridge', 'default']))").message("spec.template.networks: host, none, bridge and default are built-in networks; name a user-defined bridge network"))]
    pub networks: Vec<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,

    /// Unset: `UnlessStopped` for a service, `Never` for a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// A user name or `uid[:gid]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = USER))]
    pub user: Option<String>,

    /// An absolute path inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ABSOLUTE_PATH))]
    pub working_dir: Option<String>,

    /// Extra container labels. Keys under `berth.dev/` are reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_LABELS))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('berth.dev/'))").message("spec.template.labels: keys under berth.dev/ are reserved for berth"))]
    pub labels: BTreeMap<String, String>,

    /// The signal that asks the process to stop (e.g. `SIGTERM`, `SIGQUIT`, or a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = STOP_SIGNAL))]
    pub stop_signal: Option<String>,

    /// How long a stop waits before killing. Docker's default is 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stop_grace_period_seconds: Option<i64>,

    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only_root_filesystem: bool,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = CAPABILITY)))]
    pub cap_add: Vec<String>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = CAPABILITY)))]
    pub cap_drop: Vec<String>,

    /// Needs the host's `policy.allowPrivileged`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,

    /// Run in the host's network namespace (Docker's `--network host`), as a Pod's
    /// `hostNetwork`. Excludes `networks` and `ports[].hostPort`. Needs the host's
    /// `policy.allowHostNetwork`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub host_network: bool,

    /// Run in the host's PID namespace (Docker's `--pid host`): the container sees, and as
    /// root can signal, every process of the host. Spelled as a Pod's `hostPID`. Needs the
    /// host's `policy.allowHostPID`.
    #[serde(default, rename = "hostPID", skip_serializing_if = "is_false")]
    pub host_pid: bool,

    /// The container's host name (Docker's default: the short container id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HOSTNAME), length(max = MAX_CONTAINER_HOSTNAME))]
    pub hostname: Option<String>,

    /// Lines added to the container's `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_EXTRA_HOSTS))]
    pub extra_hosts: Vec<ExtraHost>,

    /// Name servers (IP addresses) for the container's `/etc/resolv.conf`, instead of the
    /// host's (or the engine's embedded DNS on a user-defined network, which forwards to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DNS), inner(length(max = MAX_IP)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a))").message("spec.template.dns: every entry must be an IP address"))]
    pub dns: Vec<String>,

    /// Search domains for the container's `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DNS), inner(regex(pattern = HOSTNAME), length(max = MAX_HOSTNAME)))]
    pub dns_search: Vec<String>,

    /// Resource limits of the container's processes (`nofile`, `nproc`, `memlock`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = ULIMIT_NAMES.len()))]
    #[x_kube(validation = Rule::new("self.all(u, self.exists_one(v, v.name == u.name))").message("spec.template.ulimits: duplicate name"))]
    pub ulimits: Vec<Ulimit>,

    /// The size of `/dev/shm`, as a quantity (`256Mi`); Docker's default is 64Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MEMORY), length(max = 32))]
    pub shm_size: Option<String>,

    /// Run an init process (Docker's `tini`) as PID 1, which reaps zombies and forwards signals.
    #[serde(default, skip_serializing_if = "is_false")]
    pub init: bool,

    /// Allocate a terminal for the container's process.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,

    /// Keep the container's standard input open (`docker run -i`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_open: bool,

    /// Where the container's output goes; the engine's default driver when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,

    /// Kernel parameters of the container's own namespaces (`net.*`, `kernel.shm*`, `kernel.msg*`,
    /// `kernel.sem`, `fs.mqueue.*`, `kernel.domainname`); others are the host's and cannot be
    /// set. Kubernetes' safe set runs anywhere; any other needs the host's
    /// `policy.allowedSysctls`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SYSCTLS))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("spec.template.sysctls: duplicate name"))]
    pub sysctls: Vec<Sysctl>,

    /// With `restartPolicy: OnFailure`: the engine gives up after this many restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub restart_max_retries: Option<i64>,

    /// Ports the container serves on without publishing them, as `docker run --expose`: a port
    /// (TCP) or `"port/protocol"` (`"53/udp"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "expose_schema")]
    pub expose: Vec<IntOrString>,

    /// Host devices made available in the container. Needs the host's `policy.allowedDevices`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DEVICES))]
    pub devices: Vec<Device>,

    /// Docker's `--security-opt`: `no-new-privileges` (allowed everywhere), `seccomp=...`,
    /// `apparmor=...`, `label=...` (each needs the host's `policy.allowedSecurityOpts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SECURITY_OPTS), inner(regex(pattern = SECURITY_OPT), length(max = MAX_SECURITY_OPT)))]
    pub security_opt: Vec<String>,

    /// `host` (as `hostPID`) or `container:NAME`, another container's PID namespace. Needs the
    /// host's `policy.allowHostPID` or `policy.allowContainerNamespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PID_MODE), length(max = MAX_NAMESPACE_MODE))]
    pub pid_mode: Option<String>,

    /// `private`, `shareable`, `none`; or, with the host's `policy.allowHostIPC` or
    /// `policy.allowContainerNamespaces`, `host` or `container:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IPC_MODE), length(max = MAX_NAMESPACE_MODE))]
    pub ipc_mode: Option<String>,
}

/// `expose`: ports as integers (1 to 65535) or strings (`"8080"`, `"53/udp"`).
fn expose_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": MAX_PORTS,
        "items": {"x-kubernetes-int-or-string": true, "minimum": 1, "maximum": 65535, "pattern": EXPOSE},
    })
}

/// A line of `/etc/hosts`: `ip hostname`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.ip == 'host-gateway' || isIP(self.ip)").message("ip: must be an IP address or host-gateway").field_path(".ip"))]
pub struct ExtraHost {
    #[schemars(regex(pattern = HOSTNAME), length(max = MAX_HOSTNAME))]
    pub hostname: String,
    /// An IP address, or `host-gateway`: the host's address as the container reaches it.
    #[schemars(length(max = MAX_IP))]
    pub ip: String,
}

/// One resource limit; `-1` is unlimited.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.hard <= -1 || (self.soft != -1 && self.soft <= self.hard)").message("soft: must not be above hard (-1 is unlimited)").field_path(".soft"))]
pub struct Ulimit {
    /// `nofile`, `nproc`, `memlock`, `core`, `stack`, ... (as `docker run --ulimit`).
    #[schemars(extend("enum" = ULIMIT_NAMES), length(max = 16))]
    pub name: String,
    #[schemars(range(min = -1))]
    pub soft: i64,
    #[schemars(range(min = -1))]
    pub hard: i64,
}

/// A kernel parameter of the container's namespaces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("!self.name.matches('{SYSCTL}') || self.name in {IPC_SYSCTLS:?} || self.name.startsWith('fs.mqueue.') || self.name.startsWith('net.') || self.name == 'kernel.domainname'")).message("name: not a namespaced sysctl; runc refuses to set the host's kernel parameters in a container").field_path(".name"))]
pub struct Sysctl {
    /// `net.core.somaxconn`, `kernel.shm_rmid_forced`, ...
    #[schemars(regex(pattern = SYSCTL), length(max = MAX_SYSCTL))]
    pub name: String,
    /// One line, as `sysctl -w` takes it (`"1024 65535"`).
    #[schemars(regex(pattern = SYSCTL_VALUE), length(max = MAX_SYSCTL))]
    pub value: String,
}

/// A logging driver and its options.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Logging {
    /// `json-file`, `local`, `journald`, `syslog`, `none`, ... or a plugin's name.
    #[schemars(regex(pattern = LOG_DRIVER), length(max = MAX_LOG_TEXT))]
    pub driver: String,
    /// The driver's options (`max-size: 10m`, `tag: web`), as `docker run --log-opt`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    // The keys' syntax is checked in Rust only: a map's keys have no maxLength, and a pattern
    // over them exceeds the API server's CEL cost budget. The engine refuses an unknown option.
    #[schemars(extend("maxProperties" = MAX_LOG_OPTIONS))]
    pub options: BTreeMap<String, String>,
}

/// A host device in the container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The device's path on the host (`/dev/fuse`), absolute and normalised.
    #[schemars(regex(pattern = NORMAL_PATH), length(max = MAX_PATH))]
    pub host_path: String,
    /// Where it appears in the container; the host's path when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MOUNT_TARGET), length(max = MAX_PATH))]
    pub container_path: Option<String>,
    /// Some of `r`, `w`, `m` (mknod); `rwm` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DEVICE_PERMISSIONS))]
    pub permissions: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum PullPolicy {
    /// Pull only when the host lacks the image.
    #[default]
    IfNotPresent,
    /// Pull whenever a container is created.
    Always,
    /// Never pull; the image must already be on the host.
    Never,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
pub struct LocalObjectReference {
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(max = 253))]
    pub name: String,
}

/// An environment variable: a literal `value`, or `valueFrom` a Secret or ConfigMap key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))").message("value and valueFrom are mutually exclusive"))]
pub struct EnvVar {
    #[schemars(regex(pattern = ENV_NAME), length(max = MAX_ENV_NAME))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)").message("exactly one of secretKeyRef and configMapKeyRef"))]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
}

/// One key of a Secret or ConfigMap in the set's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
pub struct KeySelector {
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(max = 253))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
    /// A missing object or key yields no variable instead of an error.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
}

/// A port the container listens on, optionally published on the host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.hostIP == '' || isIP(self.hostIP)").message("hostIP: must be empty or an IP address").field_path(".hostIP"))]
pub struct ContainerPort {
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    /// Publish on this host port. Absent: not published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: Option<i32>,
    /// The host address to publish on; empty means every address.
    #[serde(default, rename = "hostIP")]
    #[schemars(length(max = MAX_IP))]
    pub host_ip: String,
    // maxLength bounds the cost the API server estimates for comparing protocols.
    #[serde(default)]
    #[schemars(length(max = 4))]
    pub protocol: Protocol,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Docker's spelling: `tcp`, `udp`, `sctp`.
    pub fn as_docker(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A filesystem mounted into the container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'tmpfs' ? !has(self.source) : has(self.source)").message("source: is required for volume and bind mounts and not allowed for tmpfs").field_path(".source"),
    validation = Rule::new("self.type != 'bind' || !has(self.source) || self.source.startsWith('/')").message("source: a bind mount's source must be an absolute host path").field_path(".source"),
    validation = Rule::new(format!("self.type != 'bind' || !has(self.source) || !self.source.startsWith('/') || self.source.matches('{NORMAL_PATH}')")).message("source: a bind mount's source must be a normalised path: no . or .. segments, no // and no trailing /").field_path(".source"),
    validation = Rule::new(format!("self.type != 'volume' || !has(self.source) || self.source.matches('{DOCKER_NAME}')")).message("source: a volume name must match [a-zA-Z0-9][a-zA-Z0-9_.-]*").field_path(".source"),
    validation = Rule::new("self.type == 'tmpfs' || !has(self.tmpfs)").message("tmpfs: applies to a tmpfs mount only").field_path(".tmpfs")
)]
pub struct Mount {
    #[serde(rename = "type", default)]
    pub kind: MountKind,
    /// Volume name (volume) or host path (bind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PATH))]
    pub source: Option<String>,
    /// Absolute path inside the container (not `/`, no trailing `/`).
    #[schemars(regex(pattern = MOUNT_TARGET), length(max = MAX_PATH))]
    pub target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// A tmpfs mount's size and mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
}

/// The size and mode of a tmpfs mount.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("!has(self.size) || !self.size.matches('{ZERO_QUANTITY}')")).message("size: must be more than 0 (omit it for no limit but the host's memory)").field_path(".size"))]
pub struct TmpfsOptions {
    /// A quantity (`64Mi`); without it the mount may grow to half the host's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MEMORY), length(max = 32))]
    pub size: Option<String>,
    /// Octal permissions of the mount's root (`1777`, `0700`), as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = FILE_MODE))]
    pub mode: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A named Docker volume, created on demand and never deleted unless asked.
    #[default]
    Volume,
    /// A host path (the host's policy must allow it).
    Bind,
    /// An in-memory filesystem.
    Tmpfs,
}

/// A Docker-native healthcheck. Use the exec form (`["CMD", "/app", "--probe"]`) for images
/// without a shell.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.test) > 0 && ((self.test[0] in ['CMD', 'CMD-SHELL'] && size(self.test) >= 2) || (self.test[0] == 'NONE' && size(self.test) == 1))").message(r#"spec.template.healthcheck.test: must be ["CMD", exe, args...], ["CMD-SHELL", command] or ["NONE"]"#).field_path(".test"))]
pub struct Healthcheck {
    /// `["CMD", exe, args...]`, `["CMD-SHELL", "command"]` or `["NONE"]` (disables the image's).
    #[schemars(length(min = 1))]
    pub test: Vec<String>,
    /// Between checks, e.g. `5s`, `500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub retries: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum RestartPolicy {
    /// Restarted by the engine unless berth (or a person) stopped it.
    #[default]
    UnlessStopped,
    Always,
    OnFailure,
    Never,
}

/// Limits, as Kubernetes quantities: `cpus: "500m"` or `"1.5"`, `memory: "256Mi"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CPUS))]
    pub cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MEMORY))]
    pub memory: Option<String>,
}

/// How a new revision replaces the old one on a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// `StartFirst` unless the set's containers mount a named volume read-write: then
    /// `StopFirst`, so one data volume never has two writers. Say `StartFirst` to have it anyway.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StrategyType>,
    /// Hosts updated at a time (an integer, or a percentage like `"25%"`).
    // As in JSON Schema, `minimum` constrains an integer and `pattern` a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "pattern" = PERCENT))]
    pub max_unavailable: Option<IntOrString>,
    /// How long a new container must be ready before it counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: Option<i32>,
    /// How long a new container may take to become ready before the rollout fails.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: i32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_rollback: bool,
}

fn default_deadline() -> i32 {
    600
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            kind: None,
            max_unavailable: None,
            min_ready_seconds: None,
            progress_deadline_seconds: default_deadline(),
            auto_rollback: false,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum StrategyType {
    /// The new container is healthy before the old one stops (zero downtime).
    #[default]
    StartFirst,
    /// The old container stops first. berth forces this when a fixed hostPort would collide.
    StopFirst,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum DriftPolicy {
    #[default]
    Replace,
    Report,
}

/// What a moved image tag does to a set.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum ImagePolicy {
    /// A revision's tag is resolved to a digest once, when the revision is made; every host
    /// runs that digest until the template changes.
    #[default]
    Pin,
    /// The tag is resolved at every apply (and every `imagePollInterval` in the operator); a
    /// new digest is a new revision, rolled out like any other.
    Follow,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum VolumeReclaimPolicy {
    #[default]
    Retain,
    Delete,
}

/// What berth observed and did, in the shape kstatus and Argo CD read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    #[serde(default)]
    pub desired_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub host_count: i32,
    /// `ready/desired`, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas_text: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostSetStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The set's containers on one host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostSetStatus {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub id: String,
    pub revision: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One immutable revision of the template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub revision: i64,
    pub hash: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `Progressing`, `Ready`, `Failed` or `RolledBack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why the revision failed: host, container, what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
