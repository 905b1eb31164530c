//! A [`ContainerSpec`] in Docker's words: the create body.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Mount,
    MountTmpfsOptions, MountType, NetworkingConfig, PortBinding, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum,
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
            tmpfs_options: (m.tmpfs_size_bytes.is_some() || m.tmpfs_mode.is_some()).then(|| MountTmpfsOptions {
                size_bytes: m.tmpfs_size_bytes,
                mode: m.tmpfs_mode.as_deref().and_then(|mode| i64::from_str_radix(mode, 8).ok()),
                options: None,
            }),
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
        restart_policy: Some(RestartPolicy { name: Some(restart), maximum_retry_count: spec.restart_max_retries }),
        nano_cpus: spec.nano_cpus,
        memory: spec.memory_bytes,
        readonly_rootfs: spec.read_only_root_filesystem.then_some(true),
        cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
        privileged: spec.privileged.then_some(true),
        // Validation keeps `networks` empty on the host's network.
        network_mode: if spec.host_network { Some("host".into()) } else { networks.first().cloned() },
        pid_mode: if spec.host_pid { Some("host".into()) } else { spec.pid_mode.clone() },
        ipc_mode: spec.ipc_mode.clone(),
        extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
        dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
        dns_search: (!spec.dns_search.is_empty()).then(|| spec.dns_search.clone()),
        ulimits: (!spec.ulimits.is_empty()).then(|| {
            spec.ulimits
                .iter()
                .map(|(name, u)| ResourcesUlimits { name: Some(name.clone()), soft: Some(u.soft), hard: Some(u.hard) })
                .collect()
        }),
        shm_size: spec.shm_size_bytes,
        init: spec.init.then_some(true),
        log_config: spec.logging.as_ref().map(|l| HostConfigLogConfig {
            typ: Some(l.driver.clone()),
            config: Some(l.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        }),
        sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        devices: (!spec.devices.is_empty()).then(|| {
            spec.devices
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.host_path.clone()),
                    path_in_container: Some(d.container_path.clone()),
                    cgroup_permissions: Some(d.permissions.clone()),
                })
                .collect()
        }),
        security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
        ..Default::default()
    };
    for x in &spec.expose {
        if !exposed.contains(x) {
            exposed.push(x.clone());
        }
    }

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
        hostname: spec.hostname.clone(),
        tty: spec.tty.then_some(true),
        open_stdin: spec.stdin_open.then_some(true),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::{DeviceSpec, LogSpec, MountSpec, UlimitSpec};

    #[test]
    fn application_fields_reach_the_create_body() {
        let spec = ContainerSpec {
            image: "example/echo:latest".into(),
            restart_policy: "on-failure".into(),
            restart_max_retries: Some(3),
            hostname: Some("web-1".into()),
            extra_hosts: vec!["db:10.0.0.5".into()],
            dns: vec!["10.0.0.2".into()],
            dns_search: vec!["shop.internal".into()],
            ulimits: BTreeMap::from([("nofile".into(), UlimitSpec { soft: 1024, hard: 2048 })]),
            shm_size_bytes: Some(128 << 20),
            init: true,
            tty: true,
            stdin_open: true,
            logging: Some(LogSpec {
                driver: "local".into(),
                options: BTreeMap::from([("max-size".into(), "1m".into())]),
            }),
            sysctls: BTreeMap::from([("net.core.somaxconn".into(), "1024".into())]),
            expose: vec!["53/udp".into(), "8080/tcp".into()],
            devices: vec![DeviceSpec {
                host_path: "/dev/null".into(),
                container_path: "/dev/nothing".into(),
                permissions: "r".into(),
            }],
            security_opt: vec!["no-new-privileges".into()],
            pid_mode: Some("container:db".into()),
            ipc_mode: Some("shareable".into()),
            mounts: vec![MountSpec {
                kind: MountKind::Tmpfs,
                source: None,
                target: "/run".into(),
                read_only: false,
                tmpfs_size_bytes: Some(1 << 20),
                tmpfs_mode: Some("1777".into()),
            }],
            ..Default::default()
        };
        let body = create_body(&spec, HashMap::new(), &[], &[]);
        assert_eq!(body.hostname.as_deref(), Some("web-1"));
        assert_eq!((body.tty, body.open_stdin), (Some(true), Some(true)));
        assert_eq!(body.exposed_ports, Some(vec!["53/udp".to_string(), "8080/tcp".to_string()]));
        let hc = body.host_config.expect("a HostConfig");
        let restart = hc.restart_policy.expect("a restart policy");
        assert_eq!((restart.name, restart.maximum_retry_count), (Some(RestartPolicyNameEnum::ON_FAILURE), Some(3)));
        assert_eq!(hc.extra_hosts, Some(vec!["db:10.0.0.5".to_string()]));
        assert_eq!(
            (hc.dns, hc.dns_search),
            (Some(vec!["10.0.0.2".to_string()]), Some(vec!["shop.internal".to_string()]))
        );
        assert_eq!(
            hc.ulimits,
            Some(vec![ResourcesUlimits { name: Some("nofile".into()), soft: Some(1024), hard: Some(2048) }])
        );
        assert_eq!((hc.shm_size, hc.init), (Some(128 << 20), Some(true)));
        let log = hc.log_config.expect("a log config");
        assert_eq!(
            (log.typ.as_deref(), log.config.unwrap_or_default().get("max-size").map(String::as_str)),
            (Some("local"), Some("1m"))
        );
        assert_eq!(hc.sysctls.unwrap_or_default().get("net.core.somaxconn").map(String::as_str), Some("1024"));
        assert_eq!(
            hc.devices,
            Some(vec![DeviceMapping {
                path_on_host: Some("/dev/null".into()),
                path_in_container: Some("/dev/nothing".into()),
                cgroup_permissions: Some("r".into()),
            }])
        );
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!((hc.pid_mode.as_deref(), hc.ipc_mode.as_deref()), (Some("container:db"), Some("shareable")));
        let tmpfs = hc.mounts.unwrap_or_default()[0].tmpfs_options.clone().expect("tmpfs options");
        assert_eq!((tmpfs.size_bytes, tmpfs.mode), (Some(1 << 20), Some(0o1777)));
    }

    #[test]
    fn a_spec_without_them_sends_none_of_them() {
        let spec =
            ContainerSpec { image: "example/echo:latest".into(), restart_policy: "no".into(), ..Default::default() };
        let body = create_body(&spec, HashMap::new(), &[], &[]);
        assert_eq!((body.hostname, body.tty, body.open_stdin, body.exposed_ports), (None, None, None, None));
        let hc = body.host_config.expect("a HostConfig");
        assert!(hc.extra_hosts.is_none() && hc.dns.is_none() && hc.dns_search.is_none() && hc.ulimits.is_none());
        assert!(hc.shm_size.is_none() && hc.init.is_none() && hc.log_config.is_none() && hc.sysctls.is_none());
        assert!(hc.devices.is_none() && hc.security_opt.is_none() && hc.pid_mode.is_none() && hc.ipc_mode.is_none());
        assert_eq!(hc.restart_policy.and_then(|r| r.maximum_retry_count), None);
    }
}
