//! The plain data the planner works on: what a set wants ([`DesiredSet`]) and what a host
//! has ([`ObservedContainer`]). No Kubernetes and no Docker types: adapters translate.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use berth_crd::host_ip::host_ips_overlap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Label keys berth writes on every container it creates. The hosts are the state: these
/// labels are all a restarted berth needs to know what it made.
pub mod labels {
    pub const MANAGED_BY: &str = "berth.dev/managed-by";
    pub const MANAGED_BY_VALUE: &str = "berth";
    pub const NAMESPACE: &str = "berth.dev/namespace";
    pub const SET: &str = "berth.dev/set";
    pub const REVISION: &str = "berth.dev/revision";
    pub const ORDINAL: &str = "berth.dev/ordinal";
    /// The redacted canonical spec, so a later plan can say which fields changed.
    pub const SPEC: &str = "berth.dev/spec";
    /// Host ports the container publishes (`9000/tcp`, `127.0.0.1:53/udp`), so the planner can
    /// see a port collision between revisions without an inspect.
    pub const HOST_PORTS: &str = "berth.dev/host-ports";
}

/// A set's identity: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SetKey {
    pub namespace: String,
    pub name: String,
}

impl SetKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        SetKey { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for SetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The deterministic container name: `<namespace>.<set>.<revision>.<ordinal>`. A create that
/// collides after a crash is thereby recognised as work already done.
pub fn container_name(set: &SetKey, revision: &str, ordinal: u32) -> String {
    format!("{}.{}.{}.{}", set.namespace, set.name, revision, ordinal)
}

/// The name a foreign container holding a managed name is renamed to, so berth can create its
/// own without deleting a container it did not make: `<name>.squatter-<12-char id>`.
pub fn squatter_name(name: &str, id: &str) -> String {
    format!("{name}.squatter-{}", id.chars().take(12).collect::<String>())
}

/// The name a drifted container of the current revision is renamed to under StartFirst, so its
/// replacement can take the deterministic name while it still serves:
/// `<name>.drifted-<12-char id>`. Not the deterministic name, so a berth that stops after the
/// rename finds it as a renamed container of the revision and replaces it the same way.
pub fn drifted_name(name: &str, id: &str) -> String {
    format!("{name}.drifted-{}", id.chars().take(12).collect::<String>())
}

/// How a replacement is ordered on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    /// The new container is ready before the old one stops.
    StartFirst,
    /// The old container stops before the new one starts.
    StopFirst,
}

/// When to pull an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pull {
    IfNotPresent,
    Always,
    Never,
}

/// A published port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

impl PortSpec {
    /// The host binding as written in the `host-ports` label, if the port is published.
    pub fn host_binding(&self) -> Option<HostBinding> {
        self.host_port.map(|port| HostBinding { ip: self.host_ip.clone(), port, protocol: self.protocol.clone() })
    }
}

/// One published host address: two containers with overlapping bindings cannot both run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostBinding {
    /// Empty means every address; `0.0.0.0` every IPv4 one, `::` every IPv6 one.
    pub ip: String,
    pub port: u16,
    pub protocol: String,
}

impl HostBinding {
    /// Whether both cannot be published at once: same port and protocol, and addresses that
    /// meet by the one notion of "every address" input validation uses too.
    pub fn overlaps(&self, other: &HostBinding) -> bool {
        self.port == other.port && self.protocol == other.protocol && host_ips_overlap(&self.ip, &other.ip)
    }

    /// Parse one item of the `host-ports` label.
    pub fn parse(s: &str) -> Option<HostBinding> {
        let (addr, protocol) = s.split_once('/')?;
        let (ip, port) = match addr.rsplit_once(':') {
            Some((ip, port)) => (ip.to_string(), port),
            None => (String::new(), addr),
        };
        Some(HostBinding { ip, port: port.parse().ok()?, protocol: protocol.to_string() })
    }
}

impl fmt::Display for HostBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ip.is_empty() {
            write!(f, "{}/{}", self.port, self.protocol)
        } else {
            write!(f, "{}:{}/{}", self.ip, self.port, self.protocol)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountSpec {
    pub kind: MountKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// A tmpfs mount's size limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size_bytes: Option<i64>,
    /// A tmpfs mount's mode in octal digits without leading zeros (`1777`, `700`), as `plan`
    /// shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_mode: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSpec {
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// An environment value. Values that came from a Secret are kept apart so that the spec
/// written into a label (and shown by `plan`) carries a digest, never the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvValue {
    Plain(String),
    Secret { value: SecretString },
}

/// The network the sets of `namespace` join when they declare none, named like compose's
/// project network.
pub fn default_network(namespace: &str) -> String {
    format!("{namespace}_default")
}

/// A secret value: shown and serialized as a digest, readable only through [`Self::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }
    /// The value itself, for the container's environment only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// A short digest that changes when the value changes.
    pub fn digest(&self) -> String {
        let d = Sha256::digest(self.0.as_bytes());
        format!("sha256:{}", &hex::encode(d)[..16])
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret {}>", self.digest())
    }
}

impl Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("<secret {}>", self.digest()))
    }
}

impl<'de> Deserialize<'de> for SecretString {
    /// Only redacted forms are ever deserialized (from a container label); the digest text
    /// stands in for the value, which is all a diff needs.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

/// Everything that defines a container, canonical and resolved (env from Secrets and
/// ConfigMaps filled in, quantities and durations in Docker's units). Its hash is the
/// revision; a container is created from it once and never changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthSpec>,
    /// Docker's name: `no`, `always`, `unless-stopped`, `on-failure`.
    pub restart_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Docker's `NetworkMode=host`. Skipped when false, so revisions made before the field
    /// existed keep their hash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// Docker's `PidMode=host`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_pid: bool,
    // The fields below came after the first release: each is skipped at its default, so a spec
    // that does not use it keeps its revision hash (tests/revision_golden.rs holds them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `/etc/hosts` lines in Docker's form, `name:ip`, in declared order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// By name, so their order in the YAML is no new revision and `plan` names the limit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, UlimitSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LogSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// With `on-failure`: Docker's `MaximumRetryCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_max_retries: Option<i64>,
    /// Exposed, unpublished ports in Docker's form (`8080/tcp`), sorted and without duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// `container:NAME` (the host's PID namespace is [`Self::host_pid`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<String>,
    /// `spec.mode: Task`: runs to completion once. Part of the revision, so a service and a
    /// task of one template are different revisions (a switch replaces the container).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub task: bool,
}

/// A resource limit; `-1` is unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UlimitSpec {
    pub soft: i64,
    pub hard: i64,
}

/// A logging driver and its options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogSpec {
    pub driver: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// A host device in the container, with its defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    pub host_path: String,
    pub container_path: String,
    /// Some of `rwm`.
    pub permissions: String,
}

impl ContainerSpec {
    /// The canonical JSON: stable field order, secrets as digests. Written into the
    /// container's `berth.dev/spec` label and hashed into the revision.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a ContainerSpec always serializes")
    }

    /// The revision hash: the first 10 hex digits of SHA-256 over the canonical JSON.
    pub fn revision(&self) -> String {
        let d = Sha256::digest(self.canonical_json().as_bytes());
        hex::encode(d)[..10].to_string()
    }

    /// Host bindings this spec publishes.
    pub fn host_bindings(&self) -> Vec<HostBinding> {
        self.ports.iter().filter_map(PortSpec::host_binding).collect()
    }

    /// Named volumes this spec mounts.
    pub fn volumes(&self) -> BTreeSet<String> {
        self.mounts.iter().filter(|m| m.kind == MountKind::Volume).filter_map(|m| m.source.clone()).collect()
    }
}

/// What to do with a container of the desired revision that drifted from its spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriftPolicy {
    /// Replace it with a fresh container of the same revision.
    #[default]
    Replace,
    /// Leave it as it is and report it, for someone to look at.
    Report,
}

/// One set as it should be on one host.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredSet {
    pub key: SetKey,
    pub spec: ContainerSpec,
    /// `spec.revision()`, computed once.
    pub revision: String,
    pub replicas: u32,
    pub order: Order,
    pub pull: Pull,
    /// Not part of the revision: changing it changes what berth does, not what runs.
    pub drift_policy: DriftPolicy,
    /// Whether the user chose `order` (`strategy.type`). Left to berth, a set whose containers
    /// mount a named volume read-write is replaced StopFirst: two writers on one data volume
    /// never happen by default.
    pub order_declared: bool,
    /// A task whose revision completed on this host, as its history records (the exited
    /// container may be gone): nothing of it runs again. Filled in by the fleet runner from
    /// the history before it plans; always false for a service.
    pub task_completed: bool,
}

impl DesiredSet {
    /// A set with the default drift policy ([`DriftPolicy::Replace`]).
    pub fn new(key: SetKey, spec: ContainerSpec, replicas: u32, order: Order, pull: Pull) -> Self {
        let revision = spec.revision();
        DesiredSet {
            key,
            spec,
            revision,
            replicas,
            order,
            pull,
            drift_policy: DriftPolicy::default(),
            order_declared: true,
            task_completed: false,
        }
    }

    /// `order` is berth's default, not the user's choice ([`Self::order_declared`]).
    pub fn with_default_order(mut self) -> Self {
        self.order_declared = false;
        self
    }

    /// The networks its containers join: the spec's; with none declared, the namespace's
    /// default network ([`default_network`]), so the sets of a namespace reach each other by
    /// name with no YAML for it; none on the host's network. Not part of the revision: a
    /// container made before berth had default networks is not replaced for it.
    pub fn networks(&self) -> Vec<String> {
        if self.spec.host_network {
            Vec::new()
        } else if self.spec.networks.is_empty() {
            vec![default_network(&self.key.namespace)]
        } else {
            self.spec.networks.clone()
        }
    }

    /// The names a container of ordinal `ordinal` answers to on every network it joins (the
    /// engine's DNS): the set's name (round-robin over its containers) and `<set>-<ordinal>`.
    pub fn aliases(&self, ordinal: u32) -> Vec<String> {
        vec![self.key.name.clone(), format!("{}-{ordinal}", self.key.name)]
    }

    /// A named volume its containers mount read-write, if any.
    pub fn writable_volume(&self) -> Option<&str> {
        self.spec.mounts.iter().find(|m| m.kind == MountKind::Volume && !m.read_only).and_then(|m| m.source.as_deref())
    }

    pub fn with_drift_policy(mut self, policy: DriftPolicy) -> Self {
        self.drift_policy = policy;
        self
    }

    /// The labels berth writes on a container of this set.
    pub fn container_labels(&self, ordinal: u32) -> BTreeMap<String, String> {
        let mut l = self.spec.labels.clone();
        l.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        l.insert(labels::NAMESPACE.into(), self.key.namespace.clone());
        l.insert(labels::SET.into(), self.key.name.clone());
        l.insert(labels::REVISION.into(), self.revision.clone());
        l.insert(labels::ORDINAL.into(), ordinal.to_string());
        l.insert(labels::SPEC.into(), self.spec.canonical_json());
        let ports: Vec<String> = self.spec.host_bindings().iter().map(ToString::to_string).collect();
        if !ports.is_empty() {
            l.insert(labels::HOST_PORTS.into(), ports.join(","));
        }
        l
    }

    pub fn container_name(&self, ordinal: u32) -> String {
        container_name(&self.key, &self.revision, ordinal)
    }

    /// Who holds the name a create of `ordinal` finds taken, judged by the holder's labels
    /// (`label` looks one up). The executor and the simulated host both decide by this, so they
    /// cannot disagree on a name clash.
    pub fn name_holder<'a>(&self, ordinal: u32, label: impl Fn(&str) -> Option<&'a str>) -> NameHolder {
        if label(labels::MANAGED_BY) != Some(labels::MANAGED_BY_VALUE) {
            return NameHolder::Foreign;
        }
        let ordinal = ordinal.to_string();
        let this = label(labels::REVISION) == Some(self.revision.as_str())
            && label(labels::ORDINAL) == Some(ordinal.as_str())
            && label(labels::SET) == Some(self.key.name.as_str())
            && label(labels::NAMESPACE) == Some(self.key.namespace.as_str());
        if this { NameHolder::ThisContainer } else { NameHolder::OtherOfBerths }
    }
}

/// Who holds a name berth is about to create a container on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameHolder {
    /// A container berth did not make (a squatter): renamed aside under Replace, refused
    /// under Report.
    Foreign,
    /// berth's own container of this very set, revision and ordinal: a create already done
    /// (a crash after it), nothing to do.
    ThisContainer,
    /// berth's container of another set, revision or ordinal: the name is taken, an error.
    OtherOfBerths,
}

/// A container's lifecycle state as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl State {
    pub fn parse(s: &str) -> State {
        match s {
            "created" => State::Created,
            "running" => State::Running,
            "paused" => State::Paused,
            "restarting" => State::Restarting,
            "removing" => State::Removing,
            "exited" => State::Exited,
            _ => State::Dead,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        f.write_str(&s)
    }
}

/// The healthcheck verdict, when the container has a healthcheck.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// How a managed container differs from what berth created. The planner replaces it or
/// leaves it, per the set's [`DriftPolicy`].
///
/// What one container list shows is marked by the adapter's observe ([`list_drift`]); what only
/// the engine's event stream shows (update, exec, cp) is marked from a log the event follower
/// keeps (`docker::events::DriftLog`). [`Drift::Stopped`] is read from the state itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Drift {
    /// Exited, dead or paused, while its revision is current.
    Stopped,
    /// Its name is not the deterministic `<namespace>.<set>.<revision>.<ordinal>`.
    Renamed,
    /// Changed with `docker update` (resources, restart policy).
    Updated,
    /// A person (not its own healthcheck) ran a command in it.
    Exec,
    /// Files were copied into it with `docker cp`.
    Copied,
    /// It runs an image other than its spec label's: it claims a revision it was not created from.
    WrongImage,
    /// A container berth did not create holds its deterministic name.
    Squatter,
}

impl Drift {
    /// The kind's name as in JSON and metrics: `exec`, `wrongImage`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Stopped => "stopped",
            Drift::Renamed => "renamed",
            Drift::Updated => "updated",
            Drift::Exec => "exec",
            Drift::Copied => "copied",
            Drift::WrongImage => "wrongImage",
            Drift::Squatter => "squatter",
        }
    }
}

impl fmt::Display for Drift {
    /// A phrase that completes "container X ...".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Drift::Stopped => "stopped",
            Drift::Renamed => "renamed",
            Drift::Updated => "changed with docker update",
            Drift::Exec => "exec'd into",
            Drift::Copied => "copied into (docker cp)",
            Drift::WrongImage => "runs an image other than its spec's",
            Drift::Squatter => "a foreign container holds its name",
        })
    }
}

/// Drift one list entry shows by itself: a name other than the deterministic one, or an image
/// other than the one in its spec label. Pure, so the simulated host marks exactly what the
/// Docker adapter marks.
pub fn list_drift(
    set: &SetKey,
    revision: &str,
    ordinal: Option<u32>,
    name: &str,
    image: &str,
    spec_json: Option<&str>,
) -> Option<Drift> {
    let spec_image = spec_json.and_then(|j| serde_json::from_str::<ContainerSpec>(j).ok()).map(|s| s.image);
    if let Some(spec_image) = spec_image
        && same_image(image, &spec_image) == Some(false)
    {
        return Some(Drift::WrongImage);
    }
    // An unreadable ordinal has no deterministic name; the planner removes it as a duplicate.
    match ordinal {
        Some(o) if name != container_name(set, revision, o) => Some(Drift::Renamed),
        _ => None,
    }
}

/// Whether two image references name the same image (`nginx` is `docker.io/library/nginx:latest`).
/// `None` when it cannot be told from the text: the engine lists a bare image id when the
/// container was created by id, or when the tag it was created from has since moved; only an
/// image inspect could tell those apart, and observe makes one list call and nothing else.
pub fn same_image(listed: &str, spec: &str) -> Option<bool> {
    if listed == spec {
        return Some(true);
    }
    let id = listed.strip_prefix("sha256:").unwrap_or(listed);
    if id.len() >= 12 && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (Some(a), Some(b)) = (super::image_ref::ImageRef::parse(listed), super::image_ref::ImageRef::parse(spec))
    else {
        return None;
    };
    let same_name = a.same_repository(&b);
    Some(match (a.digest(), b.digest()) {
        (Some(x), Some(y)) => same_name && x == y,
        _ => same_name && a.tag() == b.tag(),
    })
}

/// Drift berth saw, and what it does about it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    pub set: SetKey,
    /// The drifted container's name as found (a renamed one under its new name).
    pub container: String,
    /// Its id (for a squatter, the foreign container's).
    pub id: String,
    pub kind: Drift,
    /// Replaced (driftPolicy Replace), or left as it is and reported (Report).
    pub replaced: bool,
}

impl fmt::Display for DriftReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.container, self.kind)
    }
}

/// One managed container as a host reports it (from one label-filtered list call).
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    pub set: SetKey,
    pub revision: String,
    /// `None` when the label is missing or garbled.
    pub ordinal: Option<u32>,
    pub state: State,
    pub health: Option<Health>,
    pub image: String,
    /// The redacted spec it was created from, if its label could be read.
    pub spec_json: Option<String>,
    pub host_bindings: Vec<HostBinding>,
    /// Drift marked by the adapter (from the list and the engine's events); see [`Self::drift_kind`].
    pub drift: Option<Drift>,
    /// How an exited container ended (from the list's status text, `Exited (3) ...`).
    pub exit_code: Option<i64>,
}

impl ObservedContainer {
    /// Serving: running and, if it has a healthcheck, healthy.
    pub fn is_ready(&self) -> bool {
        self.state == State::Running && matches!(self.health, None | Some(Health::Healthy))
    }

    /// A task's container that ran to completion: exited with code 0.
    pub fn completed(&self) -> bool {
        self.state == State::Exited && self.exit_code == Some(0)
    }

    /// The drift of this container: what the adapter marked, else [`Drift::Stopped`] when it is
    /// exited, dead or paused. (A created container is berth's own unfinished work, not drift.)
    pub fn drift_kind(&self) -> Option<Drift> {
        self.drift.or(matches!(self.state, State::Exited | State::Dead | State::Paused).then_some(Drift::Stopped))
    }
}
