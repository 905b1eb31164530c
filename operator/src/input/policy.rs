//! Host policy: what a DockerHost lets the containers placed on it do.
//!
//! Whoever may write ContainerSets in a namespace may place containers on its hosts; a
//! privileged container, the host's network, PID or IPC namespace, an added capability, a bind
//! mount of a host path or a host device would hand them the host itself, and another
//! container's namespaces, a loosened seccomp/AppArmor/SELinux confinement or a sysctl outside
//! Kubernetes' safe set would reach past their own containers. Each is refused unless the
//! host's `spec.policy` grants it (`no-new-privileges`, `ipcMode` private/shareable/none and the
//! safe sysctls take nothing from the host and need no grant). Both front ends call [`policy_violations`] while resolving, before
//! any host is touched: the CLI then refuses the input, the operator the set.
//!
//! With no DockerHost in the input, sets run on the local engine, which gets a default policy
//! ([`local_policy`]): nothing granted but bind mounts under the folder of the input file.
//!
//! Host paths are compared as written, by whole segments: `/srv` allows `/srv` and
//! `/srv/data`, never `/srvx`. A path that is not in normal form (`/etc/../root`, `//etc`,
//! `/srv/`) is refused rather than resolved: validation rejects it already, and this check
//! does not rely on that. Symlinks on the host are out of sight (see docs/security.md).

use std::path::Path;

use berth_crd::patterns::{NORMAL_PATH, SAFE_SYSCTLS, is_match, is_namespaced_sysctl};
use berth_crd::validate::quoted;
use berth_crd::{ContainerTemplate, DockerHost, HostPolicy, MountKind};

/// One thing a template asks for that a host does not grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyViolation {
    /// The template's field, e.g. `spec.template.capAdd[1]`.
    pub field: String,
    /// What is refused, naming the host and the policy field that would allow it.
    pub message: String,
}

/// Everything in `t` that `host`'s policy does not allow; empty when it may run there.
pub fn policy_violations(t: &ContainerTemplate, host: &DockerHost) -> Vec<PolicyViolation> {
    let name = host.metadata.name.as_deref().unwrap_or_default();
    violations(t, &host.spec.policy, |what, grant| {
        format!("DockerHost {name} does not allow {what} (spec.policy.{grant})")
    })
}

/// The implicit local engine's default policy (no DockerHost in the input): it grants nothing
/// but bind mounts of paths under `folder`, the folder of the file that declares the set (so
/// compose's `./data` habit keeps working); `None` (no file) grants no bind mount at all.
pub fn local_policy(folder: Option<&Path>) -> HostPolicy {
    HostPolicy {
        allowed_host_paths: folder.map(|f| f.to_string_lossy().into_owned()).into_iter().collect(),
        ..HostPolicy::default()
    }
}

/// What `t` asks of the implicit local engine that its default policy ([`local_policy`]) does
/// not grant, each with how to allow it.
pub fn local_policy_violations(t: &ContainerTemplate, folder: Option<&Path>) -> Vec<PolicyViolation> {
    let under = match folder {
        Some(f) => format!(" outside {}", f.display()),
        None => String::new(),
    };
    violations(t, &local_policy(folder), |what, grant| {
        let what = if grant == "allowedHostPaths" { format!("{what}{under}") } else { what.to_string() };
        format!(
            "the local engine (no DockerHost in the input) does not allow {what}; to allow it, declare the \
             local engine as a DockerHost (spec.endpoint: unix:///var/run/docker.sock) whose spec.policy.{grant} \
             grants it"
        )
    })
}

fn violations(t: &ContainerTemplate, policy: &HostPolicy, say: impl Fn(&str, &str) -> String) -> Vec<PolicyViolation> {
    let mut out = Vec::new();
    let mut refuse =
        |field: String, what: String, grant: &str| out.push(PolicyViolation { field, message: say(&what, grant) });
    if t.privileged && !policy.allow_privileged {
        refuse("spec.template.privileged".into(), "privileged containers".into(), "allowPrivileged");
    }
    if t.host_network && !policy.allow_host_network {
        refuse("spec.template.hostNetwork".into(), "the host's network (hostNetwork)".into(), "allowHostNetwork");
    }
    if t.host_pid && !policy.allow_host_pid {
        refuse("spec.template.hostPID".into(), "the host's PID namespace (hostPID)".into(), "allowHostPID");
    }
    for (i, cap) in t.cap_add.iter().enumerate() {
        if !capability_allowed(policy, cap) {
            refuse(format!("spec.template.capAdd[{i}]"), format!("adding capability {cap}"), "allowedCapabilities");
        }
    }
    for (i, m) in t.mounts.iter().enumerate().filter(|(_, m)| m.kind == MountKind::Bind) {
        let source = m.source.as_deref().unwrap_or_default();
        if !host_path_allowed(policy, source) {
            refuse(
                format!("spec.template.mounts[{i}].source"),
                format!("bind mounts of {source:?}"),
                "allowedHostPaths",
            );
        }
    }
    let field = |name: &str| format!("spec.template.{name}");
    for (name, mode) in [("pidMode", &t.pid_mode), ("ipcMode", &t.ipc_mode)] {
        let kind = if name == "pidMode" { "PID" } else { "IPC" };
        match mode.as_deref() {
            Some("host") if name == "pidMode" && !policy.allow_host_pid => {
                refuse(field(name), "the host's PID namespace (pidMode host)".into(), "allowHostPID")
            }
            Some("host") if name == "ipcMode" && !policy.allow_host_ipc => {
                refuse(field(name), "the host's IPC namespace (ipcMode host)".into(), "allowHostIPC")
            }
            Some(m) if m.starts_with("container:") && !policy.allow_container_namespaces => refuse(
                field(name),
                format!("joining another container's {kind} namespace ({name} {})", quoted(m)),
                "allowContainerNamespaces",
            ),
            _ => {}
        }
    }
    for (i, d) in t.devices.iter().enumerate() {
        if !path_allowed(&policy.allowed_devices, &d.host_path) {
            refuse(
                format!("spec.template.devices[{i}].hostPath"),
                format!("the device {}", quoted(&d.host_path)),
                "allowedDevices",
            );
        }
    }
    for (i, o) in t.security_opt.iter().enumerate() {
        if !security_opt_allowed(policy, o) {
            refuse(
                format!("spec.template.securityOpt[{i}]"),
                format!("the security option {}", quoted(o)),
                "allowedSecurityOpts",
            );
        }
    }
    for (i, sysctl) in t.sysctls.iter().enumerate() {
        let name = &sysctl.name;
        // A sysctl that is not namespaced, validation refuses on every host.
        if is_namespaced_sysctl(name) && !sysctl_allowed(policy, name) {
            refuse(
                format!("spec.template.sysctls[{i}].name"),
                format!("the sysctl {name} (outside Kubernetes' safe set)"),
                "allowedSysctls",
            );
        }
    }
    out
}

/// Whether `opt` may be set: `no-new-privileges` (it only takes privileges away) always; any
/// other when listed as written or by its kind (`seccomp` allows every `seccomp=...`).
fn security_opt_allowed(policy: &HostPolicy, opt: &str) -> bool {
    opt.starts_with("no-new-privileges")
        || policy.allowed_security_opts.iter().any(|g| {
            g == opt
                || (matches!(g.as_str(), "seccomp" | "apparmor" | "label")
                    && opt.strip_prefix(g.as_str()).is_some_and(|r| r.starts_with('=')))
        })
}

/// Whether sysctl `name` may be set: it is in Kubernetes' safe set, or the policy lists it,
/// a prefix of it ending in `*`, or `*`.
fn sysctl_allowed(policy: &HostPolicy, name: &str) -> bool {
    SAFE_SYSCTLS.contains(&name)
        || policy.allowed_sysctls.iter().any(|g| match g.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => g == name,
        })
}

/// `NET_ADMIN` and `CAP_NET_ADMIN` are one capability to Docker.
fn capability_name(cap: &str) -> &str {
    cap.strip_prefix("CAP_").unwrap_or(cap)
}

/// Whether `cap` may be added: it is listed, or `ALL` is. `capAdd: [ALL]` needs `ALL` listed.
fn capability_allowed(policy: &HostPolicy, cap: &str) -> bool {
    policy
        .allowed_capabilities
        .iter()
        .any(|a| capability_name(a) == "ALL" || capability_name(a) == capability_name(cap))
}

/// Whether `source` is a normalised absolute path equal to or under an allowed prefix (itself
/// normalised: a prefix that is not, validation rejects and this ignores).
fn host_path_allowed(policy: &HostPolicy, source: &str) -> bool {
    path_allowed(&policy.allowed_host_paths, source)
}

/// Whether `source` is a normalised absolute path equal to or under one of `prefixes`, by whole
/// segments (bind mounts' sources, devices' host paths).
fn path_allowed(prefixes: &[String], source: &str) -> bool {
    if !is_match(NORMAL_PATH, source) {
        return false;
    }
    prefixes.iter().filter(|p| is_match(NORMAL_PATH, p)).any(|prefix| {
        prefix == "/"
            || source == prefix
            || source.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(policy: serde_json::Value) -> DockerHost {
        serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
            "metadata": {"name": "edge", "namespace": "ns"},
            "spec": {"endpoint": "unix:///run/docker.sock", "policy": policy}
        }))
        .expect("a DockerHost")
    }

    fn template(fields: serde_json::Value) -> ContainerTemplate {
        let mut t = json!({"image": "echo:1"});
        t.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        serde_json::from_value(t).expect("a template")
    }

    fn bind(source: &str) -> ContainerTemplate {
        template(json!({"mounts": [{"type": "bind", "source": source, "target": "/host"}]}))
    }

    /// The fields refused, in order.
    fn refused(t: &ContainerTemplate, policy: serde_json::Value) -> Vec<String> {
        policy_violations(t, &host(policy)).into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn the_local_engine_grants_binds_under_the_input_folder_only() {
        let folder = Some(Path::new("/home/u/app"));
        let local = |t: &ContainerTemplate| -> Vec<String> {
            local_policy_violations(t, folder).into_iter().map(|v| v.field).collect()
        };
        assert!(local(&bind("/home/u/app/data")).is_empty(), "compose's ./data");
        assert!(local(&bind("/home/u/app")).is_empty());
        assert_eq!(local(&bind("/home/u/apps")), ["spec.template.mounts[0].source"]);
        assert_eq!(local(&bind("/var/run/docker.sock")), ["spec.template.mounts[0].source"]);
        let everything =
            template(json!({"privileged": true, "hostNetwork": true, "hostPID": true, "capAdd": ["NET_ADMIN"]}));
        assert_eq!(
            local(&everything),
            [
                "spec.template.privileged",
                "spec.template.hostNetwork",
                "spec.template.hostPID",
                "spec.template.capAdd[0]"
            ]
        );
        let v = &local_policy_violations(&everything, folder)[0];
        assert!(
            v.message.contains("declare the local engine as a DockerHost")
                && v.message.contains("spec.policy.allowPrivileged"),
            "{}",
            v.message
        );
        // Objects from the cluster have no folder: no bind at all.
        assert_eq!(local_policy_violations(&bind("/home/u/app/data"), None).len(), 1);
    }

    #[test]
    fn a_plain_template_runs_anywhere() {
        assert_eq!(refused(&template(json!({"capDrop": ["ALL"], "readOnlyRootFilesystem": true})), json!({})), [""; 0]);
    }

    #[test]
    fn each_grant_is_refused_by_default_and_allowed_by_its_policy_field() {
        let cases = [
            ("privileged", json!({"privileged": true}), json!({"allowPrivileged": true}), "spec.template.privileged"),
            (
                "hostNetwork",
                json!({"hostNetwork": true}),
                json!({"allowHostNetwork": true}),
                "spec.template.hostNetwork",
            ),
            ("hostPID", json!({"hostPID": true}), json!({"allowHostPID": true}), "spec.template.hostPID"),
            (
                "capAdd",
                json!({"capAdd": ["NET_ADMIN"]}),
                json!({"allowedCapabilities": ["NET_ADMIN"]}),
                "spec.template.capAdd[0]",
            ),
            (
                "bind",
                json!({"mounts": [{"type": "bind", "source": "/srv/data", "target": "/data"}]}),
                json!({"allowedHostPaths": ["/srv"]}),
                "spec.template.mounts[0].source",
            ),
        ];
        for (what, fields, grant, field) in cases {
            let t = template(fields);
            let violations = policy_violations(&t, &host(json!({})));
            assert_eq!(violations.len(), 1, "{what}: {violations:?}");
            assert_eq!(violations[0].field, field, "{what}");
            let policy_field = grant.as_object().unwrap().keys().next().unwrap().clone();
            assert!(
                violations[0].message.starts_with("DockerHost edge does not allow")
                    && violations[0].message.contains(&format!("spec.policy.{policy_field}")),
                "{what}: the message names the host and the policy field: {}",
                violations[0].message
            );
            assert_eq!(refused(&t, grant), [""; 0], "{what} allowed by its grant");
        }
    }

    #[test]
    fn each_application_grant_is_refused_by_default_and_allowed_by_its_policy_field() {
        let cases = [
            ("pidMode host", json!({"pidMode": "host"}), json!({"allowHostPID": true}), "spec.template.pidMode"),
            (
                "pidMode container",
                json!({"pidMode": "container:db"}),
                json!({"allowContainerNamespaces": true}),
                "spec.template.pidMode",
            ),
            ("ipcMode host", json!({"ipcMode": "host"}), json!({"allowHostIPC": true}), "spec.template.ipcMode"),
            (
                "ipcMode container",
                json!({"ipcMode": "container:db"}),
                json!({"allowContainerNamespaces": true}),
                "spec.template.ipcMode",
            ),
            (
                "device",
                json!({"devices": [{"hostPath": "/dev/fuse"}]}),
                json!({"allowedDevices": ["/dev/fuse"]}),
                "spec.template.devices[0].hostPath",
            ),
            (
                "securityOpt",
                json!({"securityOpt": ["seccomp=unconfined"]}),
                json!({"allowedSecurityOpts": ["seccomp=unconfined"]}),
                "spec.template.securityOpt[0]",
            ),
            (
                "sysctl outside the safe set",
                json!({"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}),
                json!({"allowedSysctls": ["net.core.somaxconn"]}),
                "spec.template.sysctls[0].name",
            ),
        ];
        for (what, fields, grant, field) in cases {
            let t = template(fields);
            let violations = policy_violations(&t, &host(json!({})));
            assert_eq!(violations.len(), 1, "{what}: {violations:?}");
            assert_eq!(violations[0].field, field, "{what}");
            let policy_field = grant.as_object().unwrap().keys().next().unwrap().clone();
            assert!(
                violations[0].message.starts_with("DockerHost edge does not allow")
                    && violations[0].message.contains(&format!("spec.policy.{policy_field}")),
                "{what}: {}",
                violations[0].message
            );
            assert_eq!(refused(&t, grant), [""; 0], "{what} allowed by its grant");
            // The implicit local engine grants none of them.
            let local = local_policy_violations(&t, Some(Path::new("/home/u/app")));
            assert_eq!(
                local.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
                [field],
                "{what} on the local engine"
            );
            assert!(local[0].message.contains("declare the local engine as a DockerHost"), "{}", local[0].message);
        }
        // One namespace grant is not the other's.
        assert_eq!(
            refused(
                &template(json!({"pidMode": "host", "ipcMode": "host"})),
                json!({"allowContainerNamespaces": true})
            ),
            ["spec.template.pidMode", "spec.template.ipcMode"]
        );
        assert_eq!(
            refused(&template(json!({"ipcMode": "host"})), json!({"allowHostPID": true})),
            ["spec.template.ipcMode"]
        );
    }

    #[test]
    fn what_takes_nothing_from_the_host_needs_no_grant() {
        let harmless = template(json!({
            "securityOpt": ["no-new-privileges", "no-new-privileges:true", "no-new-privileges=false"],
            "ipcMode": "shareable",
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"},
                        {"name": "kernel.shm_rmid_forced", "value": "1"},
                        {"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}],
            "hostname": "web", "dns": ["10.0.0.2"], "ulimits": [{"name": "nofile", "soft": 10, "hard": 10}],
            "init": true, "tty": true, "shmSize": "1Gi", "logging": {"driver": "local"}, "expose": [8080]
        }));
        assert_eq!(refused(&harmless, json!({})), [""; 0]);
        assert!(local_policy_violations(&harmless, None).is_empty());
        for mode in ["private", "none"] {
            assert_eq!(refused(&template(json!({"ipcMode": mode})), json!({})), [""; 0], "{mode}");
        }
    }

    #[test]
    fn security_opts_are_granted_as_written_or_by_kind() {
        let opts = |o: &[&str]| template(json!({"securityOpt": o}));
        let all = [
            "seccomp=unconfined",
            "apparmor=unconfined",
            "label=disable",
            "seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}",
        ];
        assert_eq!(
            refused(&opts(&all), json!({"allowedSecurityOpts": ["seccomp=unconfined", "label"]})),
            ["spec.template.securityOpt[1]", "spec.template.securityOpt[3]"]
        );
        assert_eq!(refused(&opts(&all), json!({"allowedSecurityOpts": ["seccomp", "apparmor", "label"]})), [""; 0]);
        // A kind allows its own options only, not another kind's that starts alike.
        assert_eq!(
            refused(&opts(&["seccomp=unconfined"]), json!({"allowedSecurityOpts": ["seccom"]})),
            ["spec.template.securityOpt[0]"]
        );
    }

    #[test]
    fn sysctls_are_granted_by_name_prefix_or_star() {
        let sysctls = template(json!({"sysctls": [
            {"name": "kernel.msgmax", "value": "1"}, {"name": "kernel.shmmax", "value": "1"},
            {"name": "net.core.somaxconn", "value": "1"}, {"name": "fs.mqueue.msg_max", "value": "1"}
        ]}));
        assert_eq!(
            refused(&sysctls, json!({"allowedSysctls": ["kernel.msg*", "net.core.*"]})),
            ["spec.template.sysctls[1].name", "spec.template.sysctls[3].name"]
        );
        assert_eq!(refused(&sysctls, json!({"allowedSysctls": ["*"]})), [""; 0]);
        assert_eq!(refused(&sysctls, json!({"allowedSysctls": ["kernel.*", "net.*", "fs.mqueue.msg_max"]})), [""; 0]);
    }

    #[test]
    fn devices_are_granted_by_whole_segments() {
        let device = |p: &str| template(json!({"devices": [{"hostPath": p}]}));
        let snd = json!({"allowedDevices": ["/dev/snd", "/dev/fuse"]});
        for ok in ["/dev/snd", "/dev/snd/controlC0", "/dev/fuse"] {
            assert_eq!(refused(&device(ok), snd.clone()), [""; 0], "{ok}");
        }
        for bad in ["/dev/sndx", "/dev/sda", "/dev/snd/../sda", "/dev"] {
            assert_eq!(refused(&device(bad), snd.clone()), ["spec.template.devices[0].hostPath"], "{bad}");
        }
        assert_eq!(
            refused(&device("/dev/sda"), json!({"allowedHostPaths": ["/"]})),
            ["spec.template.devices[0].hostPath"]
        );
    }

    #[test]
    fn one_grant_does_not_allow_another() {
        let everything = template(json!({
            "privileged": true, "hostNetwork": true, "hostPID": true, "capAdd": ["SYS_ADMIN"],
            "mounts": [{"type": "bind", "source": "/", "target": "/host"}]
        }));
        assert_eq!(
            refused(&everything, json!({"allowPrivileged": true})),
            [
                "spec.template.hostNetwork",
                "spec.template.hostPID",
                "spec.template.capAdd[0]",
                "spec.template.mounts[0].source"
            ]
        );
        let all = json!({"allowPrivileged": true, "allowHostNetwork": true, "allowHostPID": true,
                         "allowedCapabilities": ["ALL"], "allowedHostPaths": ["/"]});
        assert_eq!(refused(&everything, all), [""; 0]);
    }

    #[test]
    fn capabilities_are_listed_one_by_one_and_all_only_by_all() {
        let allowed = json!({"allowedCapabilities": ["NET_ADMIN", "CAP_SYS_TIME"]});
        assert_eq!(refused(&template(json!({"capAdd": ["NET_ADMIN", "SYS_TIME"]})), allowed.clone()), [""; 0]);
        assert_eq!(refused(&template(json!({"capAdd": ["CAP_NET_ADMIN"]})), allowed.clone()), [""; 0]);
        assert_eq!(
            refused(&template(json!({"capAdd": ["NET_ADMIN", "SYS_ADMIN", "ALL"]})), allowed),
            ["spec.template.capAdd[1]", "spec.template.capAdd[2]"]
        );
        assert_eq!(refused(&template(json!({"capAdd": ["ALL"]})), json!({"allowedCapabilities": ["ALL"]})), [""; 0]);
        assert_eq!(
            refused(&template(json!({"capAdd": ["SYS_MODULE"]})), json!({"allowedCapabilities": ["ALL"]})),
            [""; 0]
        );
        // capDrop takes nothing from the host: never refused.
        assert_eq!(refused(&template(json!({"capDrop": ["ALL"]})), json!({})), [""; 0]);
    }

    #[test]
    fn host_paths_are_allowed_by_whole_segments() {
        let srv = json!({"allowedHostPaths": ["/srv", "/var/log/app"]});
        for ok in ["/srv", "/srv/data", "/srv/a/b/c", "/var/log/app", "/var/log/app/x.log", "/srv/.hidden", "/srv/..."]
        {
            assert_eq!(refused(&bind(ok), srv.clone()), [""; 0], "{ok}");
        }
        for bad in ["/", "/srvx", "/sr", "/var/log", "/var/log/apps", "/etc", "/root"] {
            assert_eq!(refused(&bind(bad), srv.clone()), ["spec.template.mounts[0].source"], "{bad}");
        }
        // "/" allows every (normalised) path.
        for ok in ["/", "/etc", "/var/run/docker.sock"] {
            assert_eq!(refused(&bind(ok), json!({"allowedHostPaths": ["/"]})), [""; 0], "{ok}");
        }
        // No paths listed: no bind mount at all; volumes and tmpfs are not host paths.
        assert_eq!(refused(&bind("/srv"), json!({})), ["spec.template.mounts[0].source"]);
        let not_binds = template(json!({"mounts": [
            {"type": "volume", "source": "data", "target": "/data"}, {"type": "tmpfs", "target": "/tmp"}
        ]}));
        assert_eq!(refused(&not_binds, json!({})), [""; 0]);
    }

    #[test]
    fn path_tricks_are_refused_not_resolved() {
        let srv = json!({"allowedHostPaths": ["/srv", "/"]});
        let only_srv = json!({"allowedHostPaths": ["/srv"]});
        for trick in [
            "/srv/../etc",
            "/srv/../../root",
            "/srv/./data",
            "/srv/.",
            "/srv/..",
            "//srv",
            "/srv//data",
            "/srv/",
            "/srv/data/",
            "//",
            "/./",
        ] {
            assert_eq!(refused(&bind(trick), only_srv.clone()), ["spec.template.mounts[0].source"], "{trick}");
            // Refused even where "/" would allow its resolved form: berth does not resolve.
            assert_eq!(refused(&bind(trick), srv.clone()), ["spec.template.mounts[0].source"], "{trick} under /");
        }
        // A prefix that is not normalised allows nothing (validation rejects it anyway).
        for prefix in ["/srv/", "/srv/../etc", "//srv"] {
            assert_eq!(
                refused(&bind("/srv/data"), json!({"allowedHostPaths": [prefix]})),
                ["spec.template.mounts[0].source"],
                "{prefix}"
            );
        }
    }
}
