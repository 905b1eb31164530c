//! From declared objects to desired state per host: placement by label selector, env values
//! from Secrets and ConfigMaps, pull credentials, host policies. Still no I/O on any host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use berth_crd::host_ip::host_ips_overlap;
use berth_crd::quantity::{parse_cpus, parse_duration, parse_memory, parse_size};
use berth_crd::{
    ContainerSet, ContainerTemplate, DependencyCondition, DockerHost, MountKind as CrdMountKind, PullPolicy,
    RestartPolicy, SetMode, StrategyType,
};
use bollard::auth::DockerCredentials;
use k8s_openapi::api::core::v1::Secret;
use kube::core::{Selector, SelectorExt};
use serde::Deserialize;

use super::policy::{local_policy_violations, policy_violations};
use super::{Input, InputError, InputErrors, Located};
use crate::engine::order::{Condition, Dependency, find_cycle, show_cycle};
use crate::engine::pin::ImagePolicy;
use crate::engine::rollout::{MaxUnavailable, RolloutPolicy};
use crate::engine::{
    ContainerSpec, DesiredSet, DeviceSpec, DriftPolicy, EnvValue, HealthSpec, LogSpec, MountKind, MountSpec, Order,
    PortSpec, Pull, Scope, SecretString, SetKey, UlimitSpec,
};
use crate::target::{Endpoint, HostTarget, SetInfo, SetRuntime, Tls};

/// The input, resolved: what every host should run.
#[derive(Debug)]
pub struct Resolved {
    pub hosts: Vec<HostTarget>,
    /// Per-set execution settings (deadline, pull credentials).
    pub runtime: HashMap<SetKey, SetRuntime>,
    /// Every set the input declares.
    pub sets: Vec<SetKey>,
    /// How each set rolls out, and its template as declared (for history).
    pub set_infos: HashMap<SetKey, SetInfo>,
    /// What a moved image tag does, per set (the fleet runner pins images by it).
    pub image_policies: HashMap<SetKey, ImagePolicy>,
    /// The input's `Image`s, read and digested (filled in by whoever read them:
    /// [`super::images::resolve_images`] runs before `resolve`).
    pub images: Vec<crate::target::ImageTarget>,
}

/// Resolve the input. `prune` makes every set in the input's namespaces owned, so sets no
/// longer declared are removed.
pub fn resolve(input: &Input, prune: bool) -> Result<Resolved, InputErrors> {
    let mut errors = Vec::new();
    let mut hosts = Vec::new();

    for h in &input.hosts {
        match host_endpoint(h, input) {
            Ok(endpoint) => hosts.push((
                Some(h),
                HostTarget {
                    name: h.object.metadata.name.clone().unwrap_or_default(),
                    endpoint,
                    desired: Vec::new(),
                    scope: Scope::default(),
                },
            )),
            Err(e) => errors.push(e),
        }
    }
    if input.hosts.is_empty() {
        match Endpoint::from_env() {
            Ok(endpoint) => hosts.push((
                None,
                HostTarget { name: "local".into(), endpoint, desired: Vec::new(), scope: Scope::default() },
            )),
            Err(e) => errors.push(InputError {
                origin: "environment".into(),
                object: None,
                field: Some("DOCKER_HOST".into()),
                message: e.to_string(),
            }),
        }
    }

    let mut runtime = HashMap::new();
    let mut set_infos = HashMap::new();
    let mut image_policies = HashMap::new();
    let mut set_keys = Vec::new();
    let mut namespaces = BTreeSet::new();
    for s in &input.sets {
        let key = SetKey::new(
            s.object.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            s.object.metadata.name.clone().unwrap_or_default(),
        );
        namespaces.insert(key.namespace.clone());
        set_keys.push(key.clone());
        let err = |field: &str, message: String| InputError {
            origin: s.origin.to_string(),
            object: Some(format!("ContainerSet {key}")),
            field: Some(field.to_string()),
            message,
        };
        if let Some(from) = &s.object.spec.template.image_from {
            // Standalone, input::images replaced it with the build's tag before resolving.
            errors.push(err(
                "spec.template.imageFrom.name",
                format!(
                    "Image {} is not built here: declare it in the input (the operator does not build Images yet)",
                    from.name
                ),
            ));
            continue;
        }
        let spec = match container_spec(&s.object.spec.template, &key.namespace, input) {
            Ok(spec) if s.object.spec.mode == SetMode::Task => task_spec(spec, &s.object.spec.template),
            Ok(spec) => spec,
            Err(problems) => {
                errors.extend(problems.into_iter().map(|(f, m)| err(&f, m)));
                continue;
            }
        };
        let credentials = match pull_credentials(&s.object.spec.template, &key.namespace, input) {
            Ok(c) => c,
            Err((f, m)) => {
                errors.push(err(&f, m));
                None
            }
        };
        let selector = match Selector::try_from(s.object.spec.host_selector.clone()) {
            Ok(sel) => sel,
            Err(e) => {
                errors.push(err("spec.hostSelector", e.to_string()));
                continue;
            }
        };
        let d = desired_set(&s.object, key.clone(), spec);
        set_infos.insert(key.clone(), set_info(&s.object));
        image_policies.insert(key.clone(), image_policy(&s.object));
        runtime.insert(
            key.clone(),
            SetRuntime {
                progress_deadline: Duration::from_secs(s.object.spec.strategy.progress_deadline_seconds.max(1) as u64),
                credentials,
            },
        );
        for (host_obj, target) in hosts.iter_mut() {
            let placed = match host_obj {
                None => true, // the implicit local engine runs every set
                Some(h) => {
                    h.object.metadata.namespace == s.object.metadata.namespace
                        && selector.matches(&h.object.metadata.labels.clone().unwrap_or_default())
                }
            };
            if host_obj.is_none() {
                for v in local_policy_violations(&s.object.spec.template, input_folder(&s.origin).as_deref()) {
                    errors.push(err(&v.field, v.message));
                }
            }
            if let Some(h) = host_obj {
                if h.object.spec.unschedulable {
                    continue; // cordoned: neither placed nor owned, so nothing there changes
                }
                if placed {
                    for v in policy_violations(&s.object.spec.template, &h.object) {
                        errors.push(err(&v.field, v.message));
                    }
                }
            }
            target.scope.sets.insert(key.clone());
            if placed {
                target.desired.push(d.clone());
            }
        }
    }
    if prune {
        for (h, target) in hosts.iter_mut() {
            if !h.is_some_and(|h| h.object.spec.unschedulable) {
                target.scope.namespaces.extend(namespaces.iter().cloned());
            }
        }
    }
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }
    Ok(Resolved {
        hosts: hosts.into_iter().map(|(_, t)| t).collect(),
        runtime,
        sets: set_keys,
        set_infos,
        image_policies,
        images: Vec::new(),
    })
}

/// The folder an input file sits in, absolute and with symlinks resolved (bind sources are
/// compared with it by path prefix); `None` for objects read from the cluster.
fn input_folder(origin: &super::load::Origin) -> Option<std::path::PathBuf> {
    if origin.document == 0 {
        return None;
    }
    let parent = origin.file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::canonicalize(parent).ok()
}

/// Sets whose `hostSelector` picks none of the input's DockerHosts, as errors. Standalone, a
/// set placed nowhere is a mistake (a typo in a label), so `berth apply` refuses it; the
/// operator does not ask, since hosts may be added to the cluster later. With no DockerHost
/// in the input every set runs on the local engine, and none is reported.
pub fn sets_selecting_no_host(input: &Input) -> Vec<InputError> {
    if input.hosts.is_empty() {
        return Vec::new();
    }
    let mut errors = Vec::new();
    for s in &input.sets {
        // A selector that does not parse is reported by `resolve`.
        let Ok(selector) = Selector::try_from(s.object.spec.host_selector.clone()) else { continue };
        let namespace = s.object.metadata.namespace.as_deref().unwrap_or("default");
        let in_namespace: Vec<&Located<DockerHost>> = input
            .hosts
            .iter()
            .filter(|h| h.object.metadata.namespace.as_deref().unwrap_or("default") == namespace)
            .collect();
        if in_namespace.iter().any(|h| selector.matches(&h.object.metadata.labels.clone().unwrap_or_default())) {
            continue;
        }
        let message = if in_namespace.is_empty() {
            format!("selects no host: the input declares no DockerHost in namespace {namespace}")
        } else {
            let names: Vec<&str> = in_namespace.iter().filter_map(|h| h.object.metadata.name.as_deref()).collect();
            format!("selects no host: none of the DockerHosts in namespace {namespace} ({}) matches", names.join(", "))
        };
        errors.push(InputError {
            origin: s.origin.to_string(),
            object: Some(format!("ContainerSet {namespace}/{}", s.object.metadata.name.as_deref().unwrap_or_default())),
            field: Some("spec.hostSelector".into()),
            message,
        });
    }
    errors
}

/// Host ports that two containers on one host would both publish, as errors: the engine would
/// refuse the second at start, after the rollout had begun. Two sets placed on one host, or
/// two ports of one template (`""` overlaps every address, `0.0.0.0` every IPv4 and `::` every
/// IPv6 address: [`host_ips_overlap`], the planner's notion too). Standalone only, as [`sets_selecting_no_host`]: in a cluster one set's error must
/// not stop another's reconcile.
pub fn host_port_conflicts(input: &Input, resolved: &Resolved) -> Vec<InputError> {
    let mut found: BTreeMap<(SetKey, usize), String> = BTreeMap::new();
    for host in &resolved.hosts {
        // (set, index in its ports, port, protocol, address) of every published port here.
        let mut published: Vec<(&SetKey, usize, &PortSpec)> = Vec::new();
        for d in host.desired.iter().filter(|d| d.replicas > 0) {
            for (i, p) in d.spec.ports.iter().enumerate().filter(|(_, p)| p.host_port.is_some()) {
                let clash = published.iter().find(|(_, _, q)| {
                    q.host_port == p.host_port && q.protocol == p.protocol && host_ips_overlap(&q.host_ip, &p.host_ip)
                });
                if let Some((other, j, _)) = clash {
                    let by = if *other == &d.key { String::new() } else { format!("ContainerSet {other} ") };
                    let port = p.host_port.unwrap_or_default();
                    found.entry((d.key.clone(), i)).or_insert_with(|| {
                        format!("{port}/{} is also published by {by}ports[{j}] on host {}", p.protocol, host.name)
                    });
                }
                published.push((&d.key, i, p));
            }
        }
    }
    found
        .into_iter()
        .map(|((key, i), message)| {
            let origin = input.sets.iter().find(|s| is_set(s, &key)).map(|s| s.origin.to_string()).unwrap_or_default();
            InputError {
                origin,
                object: Some(format!("ContainerSet {key}")),
                field: Some(format!("spec.template.ports[{i}].hostPort")),
                message,
            }
        })
        .collect()
}

/// Whether `s` is the set `key` names.
fn is_set(s: &Located<ContainerSet>, key: &SetKey) -> bool {
    s.object.metadata.name.as_deref() == Some(key.name.as_str())
        && s.object.metadata.namespace.as_deref().unwrap_or("default") == key.namespace
}

/// A task's spec: marked as one, and not restarted by the engine once it completed unless the
/// template asks for `OnFailure` (validation refuses `Always` and `UnlessStopped` for a task).
fn task_spec(mut spec: ContainerSpec, t: &ContainerTemplate) -> ContainerSpec {
    spec.task = true;
    if t.restart_policy.is_none() {
        spec.restart_policy = "no".into();
    }
    spec
}

/// The input's `dependsOn` as a whole, as errors: a dependency on a set the input does not
/// declare in that namespace, `Completed` of a set that is not a Task, and loops (named once,
/// on the first set of the loop). Standalone only: the operator reconciles one set at a time
/// and finds its dependencies in the cluster.
pub fn dependency_errors(input: &Input) -> Vec<InputError> {
    let key_of = |s: &Located<ContainerSet>| {
        SetKey::new(
            s.object.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            s.object.metadata.name.clone().unwrap_or_default(),
        )
    };
    let declared: HashMap<SetKey, &Located<ContainerSet>> = input.sets.iter().map(|s| (key_of(s), s)).collect();
    let mut errors = Vec::new();
    let mut edges: BTreeMap<SetKey, Vec<SetKey>> = BTreeMap::new();
    for s in &input.sets {
        let key = key_of(s);
        let err = |field: String, message: String| InputError {
            origin: s.origin.to_string(),
            object: Some(format!("ContainerSet {key}")),
            field: Some(field),
            message,
        };
        for (i, d) in s.object.spec.depends_on.iter().enumerate() {
            let dep = SetKey::new(key.namespace.clone(), d.name.clone());
            match declared.get(&dep) {
                None => errors.push(err(
                    format!("spec.dependsOn[{i}].name"),
                    format!("no ContainerSet {} in namespace {} in the input", d.name, key.namespace),
                )),
                Some(other)
                    if d.condition == DependencyCondition::Completed && other.object.spec.mode != SetMode::Task =>
                {
                    errors.push(err(
                        format!("spec.dependsOn[{i}].condition"),
                        format!("{} is not a Task (spec.mode: Task): it never completes; use Started or Ready", d.name),
                    ))
                }
                // Depending on itself is the object's own error (validate), not a loop to name.
                Some(_) if dep == key => {}
                Some(_) => edges.entry(key.clone()).or_default().push(dep),
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let first = declared[&cycle[0]];
        errors.push(InputError {
            origin: first.origin.to_string(),
            object: Some(format!("ContainerSet {}", cycle[0])),
            field: Some("spec.dependsOn".into()),
            message: format!("the dependencies form a cycle: {} (no set of it could ever start)", show_cycle(&cycle)),
        });
    }
    errors
}

fn set_info(cs: &ContainerSet) -> SetInfo {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let st = &cs.spec.strategy;
    let max_unavailable = match &st.max_unavailable {
        None => MaxUnavailable::default(),
        Some(IntOrString::Int(n)) => MaxUnavailable::Hosts((*n).max(0) as u32),
        // Validation admits `N%` only.
        Some(IntOrString::String(s)) => MaxUnavailable::Percent(s.trim_end_matches('%').parse().unwrap_or(100)),
    };
    SetInfo {
        policy: RolloutPolicy {
            max_unavailable,
            min_ready: Duration::from_secs(st.min_ready_seconds.unwrap_or(0).max(0) as u64),
            paused: cs.spec.paused,
            auto_rollback: st.auto_rollback,
            history_limit: cs.spec.revision_history_limit.max(1) as usize,
        },
        template: serde_json::to_value(&cs.spec.template).unwrap_or_default(),
        task: cs.spec.mode == SetMode::Task,
        depends_on: cs
            .spec
            .depends_on
            .iter()
            .map(|d| Dependency {
                set: SetKey::new(cs.metadata.namespace.clone().unwrap_or_else(|| "default".into()), d.name.clone()),
                condition: match d.condition {
                    DependencyCondition::Started => Condition::Started,
                    DependencyCondition::Ready => Condition::Ready,
                    DependencyCondition::Completed => Condition::Completed,
                },
            })
            .collect(),
    }
}

/// Why a recorded template could not be turned back into desired state.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("the recorded template does not parse: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("set {0} is not in the input")]
    NotDeclared(SetKey),
    #[error(transparent)]
    Input(#[from] InputErrors),
}

/// The desired state per host of set `key` with a recorded `template` in place of the
/// declared one, resolved like the rest of the input (Secrets and ConfigMaps as they are now).
pub fn rebuild(
    input: &Input,
    prune: bool,
    key: &SetKey,
    template: &serde_json::Value,
) -> Result<HashMap<String, DesiredSet>, RebuildError> {
    let template: ContainerTemplate = serde_json::from_value(template.clone())?;
    let mut input = input.clone();
    let set = input.sets.iter_mut().find(|s| is_set(s, key)).ok_or_else(|| RebuildError::NotDeclared(key.clone()))?;
    set.object.spec.template = template;
    let resolved = resolve(&input, prune)?;
    Ok(resolved
        .hosts
        .into_iter()
        .filter_map(|h| {
            let name = h.name;
            h.desired.into_iter().find(|d| &d.key == key).map(|d| (name, d))
        })
        .collect())
}

/// `spec.imagePolicy` with its interval (validated before; the minimum applies regardless).
fn image_policy(cs: &ContainerSet) -> ImagePolicy {
    match cs.spec.image_policy {
        berth_crd::ImagePolicy::Pin => ImagePolicy::Pin,
        berth_crd::ImagePolicy::Follow => {
            let ns = parse_duration(&cs.spec.image_poll_interval).unwrap_or(DEFAULT_POLL_INTERVAL_NS);
            let poll_interval = Duration::from_nanos(ns.max(0) as u64).max(berth_crd::validate::MIN_POLL_INTERVAL);
            ImagePolicy::Follow { poll_interval }
        }
    }
}

/// `imagePollInterval`'s default, 5 minutes.
const DEFAULT_POLL_INTERVAL_NS: i64 = 300_000_000_000;

fn desired_set(cs: &ContainerSet, key: SetKey, spec: ContainerSpec) -> DesiredSet {
    let order = match cs.spec.strategy.kind.unwrap_or_default() {
        StrategyType::StartFirst => Order::StartFirst,
        StrategyType::StopFirst => Order::StopFirst,
    };
    let pull = match cs.spec.template.image_pull_policy {
        PullPolicy::IfNotPresent => Pull::IfNotPresent,
        PullPolicy::Always => Pull::Always,
        PullPolicy::Never => Pull::Never,
    };
    let drift = match cs.spec.drift_policy {
        berth_crd::DriftPolicy::Replace => DriftPolicy::Replace,
        berth_crd::DriftPolicy::Report => DriftPolicy::Report,
    };
    let d = DesiredSet::new(key, spec, cs.spec.replicas_per_host.max(0) as u32, order, pull).with_drift_policy(drift);
    if cs.spec.strategy.kind.is_none() { d.with_default_order() } else { d }
}

fn host_endpoint(h: &Located<DockerHost>, input: &Input) -> Result<Endpoint, InputError> {
    let spec = &h.object.spec;
    let ns = h.object.metadata.namespace.clone().unwrap_or_default();
    let name = h.object.metadata.name.clone().unwrap_or_default();
    let err = |field: &str, message: String| InputError {
        origin: h.origin.to_string(),
        object: Some(format!("DockerHost {ns}/{name}")),
        field: Some(field.into()),
        message,
    };
    if let Some(path) = spec.endpoint.strip_prefix("unix://") {
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    let addr = spec.endpoint.trim_start_matches("tcp://").to_string();
    let Some(tls) = &spec.tls else {
        return Ok(Endpoint::Tcp { addr, tls: None });
    };
    let secret = input
        .secrets
        .get(&(ns.clone(), tls.secret_name.clone()))
        .ok_or_else(|| err("spec.tls.secretName", format!("Secret {ns}/{} is not in the input", tls.secret_name)))?;
    let value = |key: &str| {
        secret_value(&secret.object, key)
            .ok_or_else(|| err("spec.tls.secretName", format!("Secret {ns}/{} has no key {key:?}", tls.secret_name)))
    };
    let tls = Tls::Pem { ca: value("ca.crt")?, cert: value("tls.crt")?, key: SecretString::new(value("tls.key")?) };
    Ok(Endpoint::Tcp { addr, tls: Some(tls) })
}

/// A Secret's value for a key, from `data` (base64 in YAML) or `stringData`.
pub fn secret_value(s: &Secret, key: &str) -> Option<String> {
    if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.clone());
    }
    s.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

type FieldProblems = Vec<(String, String)>;

/// The canonical, resolved spec of a template.
pub fn container_spec(t: &ContainerTemplate, namespace: &str, input: &Input) -> Result<ContainerSpec, FieldProblems> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut problems = Vec::new();
    let mut env = BTreeMap::new();
    for (i, v) in t.env.iter().enumerate() {
        let path = format!("spec.template.env[{i}]");
        if let Some(value) = &v.value {
            env.insert(v.name.clone(), EnvValue::Plain(value.clone()));
            continue;
        }
        let Some(from) = &v.value_from else {
            env.insert(v.name.clone(), EnvValue::Plain(String::new()));
            continue;
        };
        if let Some(r) = &from.secret_key_ref {
            let secret = input.secrets.get(&(namespace.to_string(), r.name.clone()));
            match secret.and_then(|s| secret_value(&s.object, &r.key)) {
                Some(value) => {
                    env.insert(v.name.clone(), EnvValue::Secret { value: SecretString::new(value) });
                }
                None if r.optional => {}
                None => problems.push((
                    format!("{path}.valueFrom.secretKeyRef"),
                    match secret {
                        None => format!("Secret {namespace}/{} is not in the input", r.name),
                        Some(_) => format!("Secret {namespace}/{} has no key {:?}", r.name, r.key),
                    },
                )),
            }
        } else if let Some(r) = &from.config_map_key_ref {
            let cm = input.config_maps.get(&(namespace.to_string(), r.name.clone()));
            match cm.and_then(|c| c.object.data.as_ref().and_then(|d| d.get(&r.key)).cloned()) {
                Some(value) => {
                    env.insert(v.name.clone(), EnvValue::Plain(value));
                }
                None if r.optional => {}
                None => problems.push((
                    format!("{path}.valueFrom.configMapKeyRef"),
                    match cm {
                        None => format!("ConfigMap {namespace}/{} is not in the input", r.name),
                        Some(_) => format!("ConfigMap {namespace}/{} has no key {:?}", r.name, r.key),
                    },
                )),
            }
        }
    }

    let healthcheck = t.healthcheck.as_ref().map(|h| {
        let dur = |v: &Option<String>| v.as_deref().and_then(|s| parse_duration(s).ok());
        HealthSpec {
            test: h.test.clone(),
            interval_ns: dur(&h.interval),
            timeout_ns: dur(&h.timeout),
            start_period_ns: dur(&h.start_period),
            retries: h.retries,
        }
    });
    let resources = t.resources.clone().unwrap_or_default();
    let spec = ContainerSpec {
        image: canonical_image(&t.image),
        entrypoint: t.command.clone(),
        cmd: t.args.clone(),
        env,
        ports: t
            .ports
            .iter()
            .map(|p| PortSpec {
                container_port: p.container_port.clamp(0, 65535) as u16,
                protocol: p.protocol.as_docker().to_string(),
                host_port: p.host_port.map(|h| h.clamp(0, 65535) as u16),
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        mounts: t
            .mounts
            .iter()
            .map(|m| MountSpec {
                kind: match m.kind {
                    CrdMountKind::Volume => MountKind::Volume,
                    CrdMountKind::Bind => MountKind::Bind,
                    CrdMountKind::Tmpfs => MountKind::Tmpfs,
                },
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
                tmpfs_size_bytes: m.tmpfs.as_ref().and_then(|o| o.size.as_deref()).and_then(|s| parse_size(s).ok()),
                tmpfs_mode: m
                    .tmpfs
                    .as_ref()
                    .and_then(|o| o.mode.as_deref())
                    .and_then(|s| u32::from_str_radix(s, 8).ok())
                    .map(|mode| format!("{mode:o}")),
            })
            .collect(),
        networks: t.networks.clone(),
        healthcheck,
        restart_policy: match t.restart_policy.unwrap_or_default() {
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "no",
        }
        .to_string(),
        nano_cpus: resources.cpus.as_deref().and_then(|c| parse_cpus(c).ok()),
        memory_bytes: resources.memory.as_deref().and_then(|m| parse_memory(m).ok()),
        user: t.user.clone(),
        working_dir: t.working_dir.clone(),
        labels: t.labels.clone(),
        stop_signal: t.stop_signal.clone(),
        stop_timeout_seconds: t.stop_grace_period_seconds,
        read_only_root_filesystem: t.read_only_root_filesystem,
        cap_add: t.cap_add.clone(),
        cap_drop: t.cap_drop.clone(),
        privileged: t.privileged,
        host_network: t.host_network,
        // `pidMode: host` is `hostPID: true`, spelled as compose does: one spec, one revision.
        host_pid: t.host_pid || t.pid_mode.as_deref() == Some("host"),
        hostname: t.hostname.clone(),
        extra_hosts: t.extra_hosts.iter().map(|h| format!("{}:{}", h.hostname, h.ip)).collect(),
        dns: t.dns.clone(),
        dns_search: t.dns_search.clone(),
        ulimits: t.ulimits.iter().map(|u| (u.name.clone(), UlimitSpec { soft: u.soft, hard: u.hard })).collect(),
        shm_size_bytes: t.shm_size.as_deref().and_then(|s| parse_size(s).ok()),
        init: t.init,
        tty: t.tty,
        stdin_open: t.stdin_open,
        logging: t.logging.as_ref().map(|l| LogSpec { driver: l.driver.clone(), options: l.options.clone() }),
        sysctls: t.sysctls.iter().map(|s| (s.name.clone(), s.value.clone())).collect(),
        restart_max_retries: t.restart_max_retries,
        expose: t
            .expose
            .iter()
            .map(|x| match x {
                IntOrString::Int(n) => format!("{n}/tcp"),
                IntOrString::String(s) if s.contains('/') => s.clone(),
                IntOrString::String(s) => format!("{s}/tcp"),
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        devices: t
            .devices
            .iter()
            .map(|d| DeviceSpec {
                host_path: d.host_path.clone(),
                container_path: d.container_path.clone().unwrap_or_else(|| d.host_path.clone()),
                permissions: d.permissions.clone().unwrap_or_else(|| "rwm".into()),
            })
            .collect(),
        security_opt: t.security_opt.clone(),
        pid_mode: t.pid_mode.clone().filter(|m| m != "host"),
        ipc_mode: t.ipc_mode.clone(),
        task: false,
    };
    if problems.is_empty() { Ok(spec) } else { Err(problems) }
}

/// `repo` means `repo:latest` to Docker; say so, so that a pull never fetches every tag.
pub fn canonical_image(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') { image.to_string() } else { format!("{image}:latest") }
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

/// `https://index.docker.io/v1/` and `docker.io` name the same registry.
fn normalize_registry(s: &str) -> String {
    let s = s.trim_start_matches("https://").trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

/// Credentials for the template's image from its `imagePullSecrets`, first match wins.
pub(super) fn pull_credentials(
    t: &ContainerTemplate,
    namespace: &str,
    input: &Input,
) -> Result<Option<DockerCredentials>, (String, String)> {
    if t.image_pull_secrets.is_empty() {
        return Ok(None);
    }
    let registry = crate::engine::image_ref::ImageRef::parse(&t.image)
        .map(|r| normalize_registry(r.registry()))
        .unwrap_or_else(|| "docker.io".into());
    for (i, r) in t.image_pull_secrets.iter().enumerate() {
        let field = format!("spec.template.imagePullSecrets[{i}]");
        let Some(secret) = input.secrets.get(&(namespace.to_string(), r.name.clone())) else {
            return Err((field, format!("Secret {namespace}/{} is not in the input", r.name)));
        };
        let ty = secret.object.type_.as_deref().unwrap_or("Opaque");
        if ty != "kubernetes.io/dockerconfigjson" {
            return Err((
                field,
                format!("Secret {namespace}/{} has type {ty:?}, expected \"kubernetes.io/dockerconfigjson\"", r.name),
            ));
        }
        let Some(json) = secret_value(&secret.object, ".dockerconfigjson") else {
            return Err((field, format!("Secret {namespace}/{} has no key \".dockerconfigjson\"", r.name)));
        };
        let config: DockerConfigJson = serde_json::from_str(&json).map_err(|e| {
            (field.clone(), format!("Secret {namespace}/{}: .dockerconfigjson is not valid: {e}", r.name))
        })?;
        for (server, auth) in config.auths {
            if normalize_registry(&server) != registry {
                continue;
            }
            let (mut username, mut password) = (auth.username, auth.password);
            if let (None, Some(encoded)) = (&username, &auth.auth) {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| {
                    (field.clone(), format!("Secret {namespace}/{}: auths.{server}.auth is not base64", r.name))
                })?;
                let text = String::from_utf8_lossy(&decoded).into_owned();
                if let Some((u, p)) = text.split_once(':') {
                    username = Some(u.to_string());
                    password = Some(p.to_string());
                }
            }
            return Ok(Some(DockerCredentials {
                username,
                password,
                serveraddress: Some(server),
                ..Default::default()
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_get_a_tag() {
        assert_eq!(canonical_image("example/echo"), "example/echo:latest");
        assert_eq!(canonical_image("example/echo:1"), "example/echo:1");
        assert_eq!(canonical_image("127.0.0.1:5000/echo"), "127.0.0.1:5000/echo:latest");
        assert_eq!(canonical_image("echo@sha256:abc"), "echo@sha256:abc");
    }

    /// Sets `name: spec-lines` in namespace shop, loaded.
    fn input_of(sets: &[(&str, &str)]) -> Input {
        let yaml: Vec<String> = sets
            .iter()
            .map(|(name, spec)| {
                let template = if spec.contains("template:") { "" } else { "  template: {image: example/echo:1}\n" };
                format!(
                    "apiVersion: berth.dev/v1alpha1\nkind: ContainerSet\nmetadata: {{name: {name}, namespace: shop}}\n\
                     spec:\n{template}{spec}"
                )
            })
            .collect();
        let (input, errors) =
            crate::input::load::load_bytes(std::path::Path::new("app.yaml"), yaml.join("---\n").as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        input
    }

    #[test]
    fn dependencies_must_be_declared_acyclic_and_completable() {
        let fine = input_of(&[
            ("db", ""),
            ("migrate", "  mode: Task\n  dependsOn: [{name: db, condition: Ready}]\n"),
            ("web", "  dependsOn: [{name: migrate, condition: Completed}, {name: db}]\n"),
        ]);
        assert_eq!(dependency_errors(&fine), []);
        let r = resolve(&fine, false).unwrap();
        let web = &r.set_infos[&SetKey::new("shop", "web")];
        assert_eq!(
            web.depends_on.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["migrate Completed", "db Started"]
        );
        let migrate = &r.hosts[0].desired.iter().find(|d| d.key.name == "migrate").unwrap().spec;
        assert!(migrate.task);
        assert_eq!(migrate.restart_policy, "no", "a task is not restarted unless it asks for OnFailure");

        let cyclic = input_of(&[
            ("a", "  dependsOn: [{name: b}]\n"),
            ("b", "  dependsOn: [{name: c, condition: Ready}]\n"),
            ("c", "  dependsOn: [{name: a}]\n"),
        ]);
        let e = dependency_errors(&cyclic);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field.as_deref(), Some("spec.dependsOn"));
        assert!(e[0].message.contains("a -> b -> c -> a"), "{}", e[0].message);
        assert_eq!(e[0].object.as_deref(), Some("ContainerSet shop/a"));

        let wrong =
            input_of(&[("db", ""), ("web", "  dependsOn: [{name: cache}, {name: db, condition: Completed}]\n")]);
        let e = dependency_errors(&wrong);
        let fields: Vec<&str> = e.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, ["spec.dependsOn[0].name", "spec.dependsOn[1].condition"]);
        assert!(e[0].message.contains("no ContainerSet cache in namespace shop"), "{}", e[0].message);
        assert!(e[1].message.contains("db is not a Task"), "{}", e[1].message);
    }

    #[test]
    fn a_task_and_a_service_of_one_template_are_different_revisions() {
        let input = input_of(&[("svc", "  template: {image: example/echo:1, restartPolicy: Never}\n")]);
        let svc = resolve(&input, false).unwrap().hosts[0].desired[0].clone();
        let input = input_of(&[("svc", "  mode: Task\n  template: {image: example/echo:1, restartPolicy: Never}\n")]);
        let task = resolve(&input, false).unwrap().hosts[0].desired[0].clone();
        assert_eq!(svc.spec.restart_policy, task.spec.restart_policy);
        assert_ne!(svc.revision, task.revision);
        assert!(!svc.spec.canonical_json().contains("task"), "a service's spec has no task key");
    }

    /// Two sets on one host publishing port 8080 on the given host IPs: the conflicts found.
    fn cross_set_conflicts(a: &str, b: &str) -> Vec<InputError> {
        let yaml = format!(
            "apiVersion: berth.dev/v1alpha1\nkind: ContainerSet\nmetadata: {{name: a}}\n\
             spec:\n  template:\n    image: example/echo:1\n    ports: [{{containerPort: 80, hostPort: 8080, hostIP: '{a}'}}]\n\
             ---\napiVersion: berth.dev/v1alpha1\nkind: ContainerSet\nmetadata: {{name: b}}\n\
             spec:\n  template:\n    image: example/echo:1\n    ports: [{{containerPort: 80, hostPort: 8080, hostIP: '{b}'}}]\n"
        );
        let (input, errors) = crate::input::load::load_bytes(std::path::Path::new("t.yaml"), yaml.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        let resolved = resolve(&input, false).expect("resolves");
        host_port_conflicts(&input, &resolved)
    }

    #[test]
    fn cross_set_host_ports_collide_by_the_planners_notion_of_every_address() {
        for (a, b) in [("0.0.0.0", ""), ("::", ""), ("127.0.0.1", "0.0.0.0"), ("::1", "::"), ("", "10.1.2.3")] {
            let errors = cross_set_conflicts(a, b);
            assert_eq!(errors.len(), 1, "{a:?} vs {b:?}: {errors:?}");
            assert!(errors[0].message.contains("also published by ContainerSet default/a"), "{:?}", errors[0]);
        }
        for (a, b) in [("0.0.0.0", "::"), ("127.0.0.1", "127.0.0.2"), ("::", "127.0.0.1")] {
            assert!(cross_set_conflicts(a, b).is_empty(), "{a:?} vs {b:?}");
        }
    }

    /// The resolved spec of a set with `template` (YAML at the template's indentation), on a
    /// host that grants everything.
    fn resolved_spec(template: &str) -> ContainerSpec {
        let yaml = format!(
            "apiVersion: berth.dev/v1alpha1\nkind: DockerHost\nmetadata: {{name: h}}\nspec:\n  endpoint: unix:///run/docker.sock\n  \
             policy: {{allowHostPID: true, allowHostIPC: true, allowContainerNamespaces: true, allowedDevices: [/dev], \
             allowedSecurityOpts: [seccomp, apparmor, label], allowedSysctls: ['*']}}\n\
             ---\napiVersion: berth.dev/v1alpha1\nkind: ContainerSet\nmetadata: {{name: a}}\n\
             spec:\n  template:\n    image: example/echo:1\n{template}"
        );
        let (input, errors) = crate::input::load::load_bytes(std::path::Path::new("t.yaml"), yaml.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        let resolved = resolve(&input, false).expect("resolves");
        resolved.hosts[0].desired[0].spec.clone()
    }

    #[test]
    fn application_fields_resolve_to_dockers_units_with_defaults_filled_in() {
        let spec = resolved_spec(
            "    hostname: web-1\n    extraHosts: [{hostname: db, ip: 10.0.0.5}, {hostname: gw, ip: host-gateway}]\n\
             \x20   dns: [10.0.0.2]\n    dnsSearch: [shop.internal]\n\
             \x20   ulimits: [{name: nproc, soft: 100, hard: 200}, {name: nofile, soft: 1024, hard: -1}]\n\
             \x20   shmSize: 128Mi\n    init: true\n    tty: true\n    stdinOpen: true\n\
             \x20   logging: {driver: local, options: {max-size: 10m}}\n\
             \x20   sysctls: [{name: net.core.somaxconn, value: '1024'}]\n\
             \x20   restartPolicy: OnFailure\n    restartMaxRetries: 3\n\
             \x20   expose: ['53/udp', 8080, '8080', '9090/tcp']\n\
             \x20   devices: [{hostPath: /dev/fuse}, {hostPath: /dev/null, containerPath: /dev/nothing, permissions: r}]\n\
             \x20   securityOpt: [no-new-privileges, seccomp=unconfined]\n    pidMode: container:db\n    ipcMode: shareable\n\
             \x20   mounts: [{type: tmpfs, target: /run, tmpfs: {size: 64Mi, mode: '1777'}}]\n",
        );
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.extra_hosts, ["db:10.0.0.5", "gw:host-gateway"]);
        assert_eq!(
            (spec.dns.as_slice(), spec.dns_search.as_slice()),
            (&["10.0.0.2".to_string()][..], &["shop.internal".to_string()][..])
        );
        assert_eq!(spec.ulimits.keys().collect::<Vec<_>>(), ["nofile", "nproc"], "by name");
        assert_eq!((spec.ulimits["nofile"].soft, spec.ulimits["nofile"].hard), (1024, -1));
        assert_eq!(spec.shm_size_bytes, Some(128 << 20));
        assert!(spec.init && spec.tty && spec.stdin_open);
        let logging = spec.logging.as_ref().expect("logging");
        assert_eq!((logging.driver.as_str(), logging.options["max-size"].as_str()), ("local", "10m"));
        assert_eq!(spec.sysctls["net.core.somaxconn"], "1024");
        assert_eq!((spec.restart_policy.as_str(), spec.restart_max_retries), ("on-failure", Some(3)));
        assert_eq!(spec.expose, ["53/udp", "8080/tcp", "9090/tcp"], "Docker's form, sorted, once each");
        assert_eq!(
            spec.devices,
            [
                DeviceSpec {
                    host_path: "/dev/fuse".into(),
                    container_path: "/dev/fuse".into(),
                    permissions: "rwm".into()
                },
                DeviceSpec {
                    host_path: "/dev/null".into(),
                    container_path: "/dev/nothing".into(),
                    permissions: "r".into()
                },
            ]
        );
        assert_eq!(spec.security_opt, ["no-new-privileges", "seccomp=unconfined"]);
        assert_eq!((spec.pid_mode.as_deref(), spec.ipc_mode.as_deref()), (Some("container:db"), Some("shareable")));
        assert_eq!(
            (spec.mounts[0].tmpfs_size_bytes, spec.mounts[0].tmpfs_mode.as_deref()),
            (Some(64 << 20), Some("1777"))
        );
    }

    #[test]
    fn one_meaning_one_revision() {
        let revision = |t: &str| resolved_spec(t).revision();
        // pidMode host is hostPID; a device's defaults written out; the order of ulimits and expose.
        assert_eq!(revision("    pidMode: host\n"), revision("    hostPID: true\n"));
        assert_eq!(revision("    pidMode: host\n"), revision("    hostPID: true\n    pidMode: host\n"));
        assert_eq!(
            revision("    devices: [{hostPath: /dev/fuse}]\n"),
            revision("    devices: [{hostPath: /dev/fuse, containerPath: /dev/fuse, permissions: rwm}]\n")
        );
        assert_eq!(
            revision("    ulimits: [{name: nproc, soft: 1, hard: 1}, {name: nofile, soft: 2, hard: 2}]\n"),
            revision("    ulimits: [{name: nofile, soft: 2, hard: 2}, {name: nproc, soft: 1, hard: 1}]\n")
        );
        assert_eq!(revision("    expose: [8080, '53/udp']\n"), revision("    expose: ['53/udp', '8080/tcp']\n"));
        assert_eq!(
            revision("    mounts: [{type: tmpfs, target: /t, tmpfs: {mode: '0700'}}]\n"),
            revision("    mounts: [{type: tmpfs, target: /t, tmpfs: {mode: '700'}}]\n")
        );
        // Off is the default, and the default is not in the spec: no new revision on upgrade.
        assert_eq!(revision("    init: false\n    tty: false\n    stdinOpen: false\n"), revision(""));
        let plain = resolved_spec("").canonical_json();
        for key in [
            "hostname",
            "extraHosts",
            "dns",
            "ulimits",
            "shmSizeBytes",
            "init",
            "tty",
            "stdinOpen",
            "logging",
            "sysctls",
            "restartMaxRetries",
            "expose",
            "devices",
            "securityOpt",
            "pidMode",
            "ipcMode",
            "tmpfs",
        ] {
            assert!(!plain.contains(&format!("\"{key}")), "{key} is not in a spec that does not use it: {plain}");
        }
    }

    #[test]
    fn registries_normalize() {
        assert_eq!(normalize_registry("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_registry("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
