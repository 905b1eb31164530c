//! A [`ContainerSpec`] in Docker's words: the create body.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};

use crate::engine::{ContainerSpec, EnvValue, MountKind};

/// The body of `POST /containers/create`. Only the first of `networks` is attached at create
/// (API 1.41 takes one endpoint there), answering to `aliases`; the executor connects the
/// others, with the same aliases, before start.
pub fn create_body(
    spec: &ContainerSpec,
    labels: HashMap<String, String>,
    networks: &[String],
    aliases: &[String],
) -> ContainerCreateBody {
    let env: Vec<String> = spec
        .env
        .iter()
        .map(|(k, v)| match v {
            EnvValue::Plain(s) => format!("{k}={s}"),
            EnvValue::Secret { value } => format!("{k}={}", value.expose()),
        })
        .collect();

    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        exposed.push(key.clone());
        if let Some(hp) = p.host_port {
            port_bindings.entry(key).or_insert_with(|| Some(Vec::new())).get_or_insert_with(Vec::new).push(
                PortBinding {
                    host_ip: (!p.host_ip.is_empty()).then(|| p.host_ip.clone()),
                    host_port: Some(hp.to_string()),
                },
            );
        }
    }

    let mounts = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: m.source.clone(),
            typ: Some(match m.kind {
                MountKind::Volume => MountType::VOLUME,
                MountKind::Bind => MountType::BIND,
                MountKind::Tmpfs => MountType::TMPFS,
            }),
            read_only: m.read_only.then_some(true),
            ..Default::default()
        })
        .collect();

    let restart = match spec.restart_policy.as_str() {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        "no" => RestartPolicyNameEnum::NO,
        _ => RestartPolicyNameEnum::UNLESS_STOPPED,
    };

    let host_config = HostConfig {
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        mounts: Some(mounts),
        restart_policy: Some(RestartPolicy { name: Some(restart), maximum_retry_count: None }),
        nano_cpus: spec.nano_cpus,
        memory: spec.memory_bytes,
        readonly_rootfs: spec.read_only_root_filesystem.then_some(true),
        cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
        privileged: spec.privileged.then_some(true),
        // Validation keeps `networks` empty on the host's network.
        network_mode: if spec.host_network { Some("host".into()) } else { networks.first().cloned() },
        pid_mode: spec.host_pid.then(|| "host".into()),
        ..Default::default()
    };

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        env: Some(env),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        labels: Some(labels),
        healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: h.interval_ns,
            timeout: h.timeout_ns,
            retries: h.retries,
            start_period: h.start_period_ns,
            start_interval: None,
        }),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec.stop_timeout_seconds,
        host_config: Some(host_config),
        networking_config: networks
            .first()
            .map(|n| NetworkingConfig { endpoints_config: Some(HashMap::from([(n.clone(), endpoint(aliases))])) }),
        ..Default::default()
    }
}

/// A network endpoint answering to `aliases` (Docker's embedded DNS).
pub fn endpoint(aliases: &[String]) -> EndpointSettings {
    EndpointSettings { aliases: (!aliases.is_empty()).then(|| aliases.to_vec()), ..Default::default() }
}
