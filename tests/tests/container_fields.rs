//! The container fields real applications use reach a real engine as written.
//!
//! Each test applies a ContainerSet of the echo image with one field (or one group of them)
//! and then asks the engine what it made: `inspect_container` (Config and HostConfig), and,
//! where the container itself can show it, what its own process sees, read through the echo
//! app's `/file/...` route over HTTP (`/etc/hosts`, `/proc/self/limits`, `/proc/mounts`,
//! `/proc/sys/...`): no `docker exec`, which would be drift to berth. Fields behind host policy
//! (devices, securityOpt, pidMode/ipcMode other than private, sysctls outside the safe set)
//! run on a DockerHost for the local engine whose `spec.policy` grants exactly them.

use std::collections::HashMap;
use std::time::Duration;

use berth_tests::*;
use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, RestartPolicyNameEnum};
use bollard::query_parameters::LogsOptionsBuilder;
use futures::StreamExt;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A DockerHost `local` for the local engine, granting `policy`.
fn host(ns: &str, policy: Value) -> Value {
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "local", "namespace": ns},
        "spec": {"endpoint": format!("unix://{}", local_socket_path().display()), "policy": policy}
    })
}

/// A ContainerSet `name` of the echo image (healthchecked, one replica) with `fields` added to
/// its template.
fn set(ns: &str, name: &str, fields: Value) -> Value {
    let mut template = json!({
        "image": ECHO_IMAGE, "imagePullPolicy": "Never", "stopGracePeriodSeconds": 2,
        "ports": [{"containerPort": 8080}],
        "healthcheck": {"test": ["CMD", "/echo", "--probe"], "interval": "200ms", "retries": 3}
    });
    template.as_object_mut().unwrap().extend(fields.as_object().expect("fields are an object").clone());
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicasPerHost": 1, "strategy": {"progressDeadlineSeconds": 60}, "template": template}
    })
}

/// One test's namespace, its folder of YAML and the engine.
struct Case {
    ns: NamespaceGuard,
    dir: tempfile::TempDir,
    docker: Docker,
    applies: usize,
}

impl Case {
    async fn new(prefix: &str) -> Case {
        ensure_echo_image();
        Case { ns: NamespaceGuard::new(prefix), dir: tempfile::tempdir().unwrap(), docker: docker().await, applies: 0 }
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    /// `berth apply -f` of `docs` as one file.
    async fn apply(&mut self, docs: &[Value]) -> BerthOutput {
        self.applies += 1;
        let file = write_documents(self.dir.path(), &format!("apply-{}.yaml", self.applies), docs);
        berth_async(["apply", "-f", &file], &[]).await
    }

    /// `berth apply -f` of `docs`, which must succeed.
    async fn apply_ok(&mut self, docs: &[Value]) {
        let out = self.apply(docs).await;
        assert!(out.success(), "berth apply: {out}");
    }

    /// `berth apply -f` of `docs` set by set: first the DockerHost (if any) and the first set,
    /// then one more set each time. (The sets of a namespace share its default network, and
    /// sets created side by side in one apply may each create it; one at a time, they never
    /// race for it, which is not what these tests are about.)
    async fn apply_one_by_one(&mut self, docs: &[Value]) {
        let first_set = docs.iter().position(|d| d["kind"] == "ContainerSet").expect("a ContainerSet");
        for end in first_set + 1..=docs.len() {
            self.apply_ok(&docs[..end]).await;
        }
    }

    /// The container of set `name`, as the engine inspects it.
    async fn inspect(&self, name: &str) -> ContainerInspectResponse {
        let (docker, ns) = (&self.docker, self.ns());
        eventually(&format!("a container of set {name}"), WAIT, || async move {
            let all = containers_in(docker, ns).await;
            let c = all
                .into_iter()
                .find(|c| c.labels.as_ref().and_then(|l| l.get("berth.dev/set")).map(String::as_str) == Some(name))?;
            docker.inspect_container(c.id.as_deref()?, None).await.ok()
        })
        .await
    }

    /// The container name of set `name`.
    async fn name_of(&self, name: &str) -> String {
        self.inspect(name).await.name.unwrap_or_default().trim_start_matches('/').to_string()
    }

    /// The bytes of `path` as the container of set `name` reads it (the echo app's `/file/`).
    async fn read(&self, name: &str, path: &str) -> String {
        let container = self.name_of(name).await;
        let addr = container_addr(&self.docker, &container).await;
        let url = format!("/file{path}");
        eventually(&format!("{container} serves {path}"), WAIT, || {
            let (addr, url) = (addr.clone(), url.clone());
            async move {
                let answer = tokio::task::spawn_blocking(move || http_request(&addr, "GET", &url, &[])).await.ok()?;
                answer.filter(|(status, _)| *status == 200).map(|(_, body)| body)
            }
        })
        .await
    }

    /// The HTTP status of `GET /file{path}` from the container of set `name`.
    async fn status_of_file(&self, name: &str, path: &str) -> u16 {
        let container = self.name_of(name).await;
        let addr = container_addr(&self.docker, &container).await;
        let url = format!("/file{path}");
        eventually(&format!("{container} answers for {path}"), WAIT, || {
            let (addr, url) = (addr.clone(), url.clone());
            async move {
                let answer = tokio::task::spawn_blocking(move || http_request(&addr, "GET", &url, &[])).await.ok()?;
                answer.map(|(status, _)| status)
            }
        })
        .await
    }
}

impl Drop for Case {
    /// Removes the namespace's containers and then its default network, which berth creates for
    /// the namespace: an engine has room for about thirty bridge networks, so tests that left
    /// theirs behind (a failed one too) would starve the rest. On a thread and runtime of its
    /// own, since a test's runtime may be gone or panicking.
    fn drop(&mut self) {
        let ns = self.ns().to_string();
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async {
                let docker = docker().await;
                cleanup_containers(&docker, &ns).await;
                match docker.remove_network(&format!("{ns}_default")).await {
                    Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                    Err(e) => eprintln!("warning: cannot remove network {ns}_default: {e}"),
                }
            })
        })
        .join();
        if cleaned.is_err() {
            eprintln!("warning: cleanup of namespace {} failed (see the panic above)", self.ns());
        }
    }
}

/// The line of `text` that contains `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn hostname() {
    let mut c = Case::new("fields-hostname").await;
    c.apply_ok(&[set(c.ns(), "web", json!({"hostname": "berth-web"}))]).await;
    let config = c.inspect("web").await.config.expect("a Config");
    assert_eq!(config.hostname.as_deref(), Some("berth-web"));
    assert_eq!(c.read("web", "/etc/hostname").await, "berth-web\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_hosts() {
    let mut c = Case::new("fields-extra-hosts").await;
    let hosts = json!({"extraHosts": [
        {"hostname": "db.internal", "ip": "10.1.2.3"},
        {"hostname": "gw.internal", "ip": "host-gateway"}
    ]});
    c.apply_ok(&[set(c.ns(), "web", hosts)]).await;
    let hc = c.inspect("web").await.host_config.expect("a HostConfig");
    assert_eq!(hc.extra_hosts, Some(vec!["db.internal:10.1.2.3".to_string(), "gw.internal:host-gateway".to_string()]));
    let etc_hosts = c.read("web", "/etc/hosts").await;
    assert_eq!(
        line_with(&etc_hosts, "db.internal").split_whitespace().collect::<Vec<_>>(),
        ["10.1.2.3", "db.internal"]
    );
    // The engine put the host's address in for host-gateway.
    let gw: Vec<&str> = line_with(&etc_hosts, "gw.internal").split_whitespace().collect();
    assert!(gw[0].parse::<std::net::IpAddr>().is_ok(), "host-gateway became an address: {gw:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_and_dns_search() {
    let mut c = Case::new("fields-dns").await;
    c.apply_ok(&[set(c.ns(), "web", json!({"dns": ["10.9.8.7"], "dnsSearch": ["corp.example", "shop.example"]}))])
        .await;
    let hc = c.inspect("web").await.host_config.expect("a HostConfig");
    assert_eq!(hc.dns, Some(vec!["10.9.8.7".to_string()]));
    assert_eq!(hc.dns_search, Some(vec!["corp.example".to_string(), "shop.example".to_string()]));
    // On a user-defined network the container asks the engine's DNS (127.0.0.11), which
    // forwards to the declared servers; the search domains are the container's own.
    let resolv = c.read("web", "/etc/resolv.conf").await;
    assert_eq!(
        line_with(&resolv, "search").split_whitespace().collect::<Vec<_>>(),
        ["search", "corp.example", "shop.example"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ulimits() {
    let mut c = Case::new("fields-ulimits").await;
    // Below the engine's own limits: raising a hard limit above them needs CAP_SYS_RESOURCE.
    let limits =
        json!({"ulimits": [{"name": "nofile", "soft": 1000, "hard": 2000}, {"name": "core", "soft": 0, "hard": 0}]});
    c.apply_ok(&[set(c.ns(), "web", limits)]).await;
    let hc = c.inspect("web").await.host_config.expect("a HostConfig");
    let ulimits: HashMap<String, (i64, i64)> = hc
        .ulimits
        .unwrap_or_default()
        .into_iter()
        .map(|u| (u.name.unwrap_or_default(), (u.soft.unwrap_or_default(), u.hard.unwrap_or_default())))
        .collect();
    assert_eq!(ulimits, HashMap::from([("nofile".to_string(), (1000, 2000)), ("core".to_string(), (0, 0))]));
    let own = c.read("web", "/proc/self/limits").await;
    let fields: Vec<&str> = line_with(&own, "Max open files").split_whitespace().collect();
    assert_eq!(fields[3..5], ["1000", "2000"], "{own}");
    let fields: Vec<&str> = line_with(&own, "Max core file size").split_whitespace().collect();
    assert_eq!(fields[4..6], ["0", "0"], "{own}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shm_size() {
    let mut c = Case::new("fields-shm").await;
    c.apply_ok(&[set(c.ns(), "web", json!({"shmSize": "96Mi"}))]).await;
    let hc = c.inspect("web").await.host_config.expect("a HostConfig");
    assert_eq!(hc.shm_size, Some(96 << 20));
    let mounts = c.read("web", "/proc/mounts").await;
    assert!(line_with(&mounts, " /dev/shm ").contains("size=98304k"), "{mounts}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init() {
    let mut c = Case::new("fields-init").await;
    c.apply_ok(&[set(c.ns(), "web", json!({"init": true}))]).await;
    let hc = c.inspect("web").await.host_config.expect("a HostConfig");
    assert_eq!(hc.init, Some(true));
    // PID 1 is the engine's init, which started the app.
    let cmdline = c.read("web", "/proc/1/cmdline").await;
    assert!(cmdline.starts_with("/sbin/docker-init\0"), "PID 1 is docker-init: {cmdline:?}");
}

/// `tty_nr` of `/proc/self/stat`: the controlling terminal's device number, 0 without one.
fn tty_nr(stat: &str) -> i64 {
    let after_comm = &stat[stat.rfind(')').expect("a stat line") + 1..];
    after_comm.split_whitespace().nth(4).and_then(|f| f.parse().ok()).expect("a tty_nr field")
}

#[tokio::test(flavor = "multi_thread")]
async fn tty() {
    let mut c = Case::new("fields-tty").await;
    c.apply_one_by_one(&[set(c.ns(), "term", json!({"tty": true})), set(c.ns(), "plain", json!({}))]).await;
    let config = c.inspect("term").await.config.expect("a Config");
    assert_eq!(config.tty, Some(true));
    assert_ne!(tty_nr(&c.read("term", "/proc/self/stat").await), 0, "the app has a terminal");
    assert_eq!(tty_nr(&c.read("plain", "/proc/self/stat").await), 0, "without tty, none");
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_open() {
    let mut c = Case::new("fields-stdin").await;
    c.apply_ok(&[set(c.ns(), "web", json!({"stdinOpen": true}))]).await;
    let config = c.inspect("web").await.config.expect("a Config");
    assert_eq!(config.open_stdin, Some(true));
    assert_ne!(config.tty, Some(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn logging_driver_and_options() {
    let mut c = Case::new("fields-logging").await;
    let logging = json!({"logging": {"driver": "local", "options": {"max-size": "1m", "max-file": "2"}}});
    c.apply_ok(&[set(c.ns(), "web", logging)]).await;
    let inspect = c.inspect("web").await;
    let log = inspect.host_config.and_then(|h| h.log_config).expect("a LogConfig");
    assert_eq!(log.typ.as_deref(), Some("local"));
    let options = log.config.unwrap_or_default();
    assert_eq!((options.get("max-size"), options.get("max-file")), (Some(&"1m".to_string()), Some(&"2".to_string())));
    // The local driver keeps the output where the engine can read it back.
    let id = inspect.id.expect("an id");
    let docker = &c.docker;
    eventually("the app's start line in the local driver's log", WAIT, || {
        let id = id.clone();
        async move {
            let opts = LogsOptionsBuilder::default().stdout(true).stderr(true).build();
            let chunks: Vec<_> = docker.logs(&id, Some(opts)).collect().await;
            let text: String = chunks.into_iter().filter_map(Result::ok).map(|c| c.to_string()).collect();
            text.contains("listening on").then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sysctls_safe_ones_anywhere_others_by_policy() {
    let mut c = Case::new("fields-sysctls").await;
    // Kubernetes' safe set needs no policy: on the implicit local engine.
    let safe = json!({"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "99"}]});
    c.apply_ok(&[set(c.ns(), "safe", safe)]).await;
    let hc = c.inspect("safe").await.host_config.expect("a HostConfig");
    assert_eq!(
        hc.sysctls.unwrap_or_default().get("net.ipv4.ip_unprivileged_port_start").map(String::as_str),
        Some("99")
    );
    assert_eq!(c.read("safe", "/proc/sys/net/ipv4/ip_unprivileged_port_start").await, "99\n");

    // Others, on a host whose policy allows them.
    let policy = json!({"allowedSysctls": ["net.core.*", "kernel.msg*"]});
    let others = json!({"sysctls": [
        {"name": "net.core.somaxconn", "value": "512"},
        {"name": "kernel.msgmax", "value": "12345"}
    ]});
    c.apply_ok(&[host(c.ns(), policy), set(c.ns(), "tuned", others)]).await;
    assert_eq!(c.read("tuned", "/proc/sys/net/core/somaxconn").await, "512\n");
    assert_eq!(c.read("tuned", "/proc/sys/kernel/msgmax").await, "12345\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn tmpfs_size_and_mode() {
    let mut c = Case::new("fields-tmpfs").await;
    let mounts = json!({"mounts": [{"type": "tmpfs", "target": "/scratch", "tmpfs": {"size": "8Mi", "mode": "1770"}}]});
    c.apply_ok(&[set(c.ns(), "web", mounts)]).await;
    let hc = c.inspect("web").await.host_config.expect("a HostConfig");
    let mount = hc.mounts.unwrap_or_default().into_iter().find(|m| m.target.as_deref() == Some("/scratch"));
    let options = mount.and_then(|m| m.tmpfs_options).expect("tmpfs options");
    assert_eq!((options.size_bytes, options.mode), (Some(8 << 20), Some(0o1770)));
    let mounts = c.read("web", "/proc/mounts").await;
    let line = line_with(&mounts, " /scratch ");
    assert!(line.contains("size=8192k") && line.contains("mode=1770"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_on_failure_with_a_maximum() {
    let mut c = Case::new("fields-restart").await;
    // An app that fails at once: the engine restarts it twice, then leaves it exited.
    let failing = json!({
        "command": ["/echo", "--no-such-flag"], "restartPolicy": "OnFailure", "restartMaxRetries": 2,
        "healthcheck": {"test": ["NONE"]}
    });
    let out = c.apply(&[set(c.ns(), "crashy", failing)]).await;
    let docker = &c.docker;
    let inspect = c.inspect("crashy").await;
    let restart = inspect.host_config.and_then(|h| h.restart_policy).expect("a restart policy");
    assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
    assert_eq!(restart.maximum_retry_count, Some(2));
    let id = inspect.id.expect("an id");
    let (count, exit) = eventually("the engine gave up after 2 restarts", WAIT, || {
        let id = id.clone();
        async move {
            let i = docker.inspect_container(&id, None).await.ok()?;
            let state = i.state?;
            let exited = state.status == Some(ContainerStateStatusEnum::EXITED) && state.restarting != Some(true);
            (exited && i.restart_count == Some(2)).then_some((i.restart_count, state.exit_code))
        }
    })
    .await;
    assert_eq!((count, exit), (Some(2), Some(2)), "berth apply said: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expose() {
    let mut c = Case::new("fields-expose").await;
    c.apply_ok(&[set(c.ns(), "web", json!({"expose": [9090, "5353/udp"]}))]).await;
    let config = c.inspect("web").await.config.expect("a Config");
    let mut exposed = config.exposed_ports.unwrap_or_default();
    exposed.sort();
    assert_eq!(exposed, ["5353/udp", "8080/tcp", "9090/tcp"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_by_policy() {
    let mut c = Case::new("fields-devices").await;
    let devices =
        json!({"devices": [{"hostPath": "/dev/null", "containerPath": "/dev/berth-null", "permissions": "rw"}]});
    c.apply_ok(&[host(c.ns(), json!({"allowedDevices": ["/dev/null"]})), set(c.ns(), "web", devices)]).await;
    let hc = c.inspect("web").await.host_config.expect("a HostConfig");
    let d = hc.devices.unwrap_or_default();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].path_on_host.as_deref(), d[0].path_in_container.as_deref(), d[0].cgroup_permissions.as_deref()),
        (Some("/dev/null"), Some("/dev/berth-null"), Some("rw"))
    );
    // The device node is there, and reads as /dev/null does.
    assert_eq!(c.read("web", "/dev/berth-null").await, "");
    assert_eq!(c.status_of_file("web", "/dev/berth-none").await, 404);
}

/// A field of `/proc/self/status` (`NoNewPrivs`, `Seccomp`).
fn status_field(status: &str, key: &str) -> String {
    line_with(status, &format!("{key}:")).split_whitespace().nth(1).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn security_opt_by_policy() {
    let mut c = Case::new("fields-secopt").await;
    let policy = json!({"allowedSecurityOpts": ["seccomp=unconfined"]});
    c.apply_one_by_one(&[
        host(c.ns(), policy),
        set(c.ns(), "hardened", json!({"securityOpt": ["no-new-privileges"]})),
        set(c.ns(), "unconfined", json!({"securityOpt": ["seccomp=unconfined"]})),
        set(c.ns(), "plain", json!({})),
    ])
    .await;
    let opts = |i: ContainerInspectResponse| i.host_config.and_then(|h| h.security_opt).unwrap_or_default();
    assert_eq!(opts(c.inspect("hardened").await), ["no-new-privileges"]);
    assert_eq!(opts(c.inspect("unconfined").await), ["seccomp=unconfined"]);
    let (hardened, unconfined, plain) = (
        c.read("hardened", "/proc/self/status").await,
        c.read("unconfined", "/proc/self/status").await,
        c.read("plain", "/proc/self/status").await,
    );
    assert_eq!(status_field(&hardened, "NoNewPrivs"), "1");
    assert_eq!(status_field(&plain, "NoNewPrivs"), "0");
    // Seccomp 2 is the engine's default filter; 0 is none.
    assert_eq!((status_field(&unconfined, "Seccomp"), status_field(&plain, "Seccomp")), ("0".into(), "2".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_mode_by_policy() {
    let mut c = Case::new("fields-pidmode").await;
    let policy = json!({"allowContainerNamespaces": true, "allowHostPID": true});
    let target = set(c.ns(), "target", json!({"env": [{"name": "MARK", "value": "berth-pid-target"}]}));
    c.apply_ok(&[host(c.ns(), policy.clone()), target.clone()]).await;
    let target_name = c.name_of("target").await;
    let joined = set(c.ns(), "joined", json!({"pidMode": format!("container:{target_name}")}));
    let on_host = set(c.ns(), "onhost", json!({"pidMode": "host"}));
    c.apply_one_by_one(&[host(c.ns(), policy), target, joined, on_host]).await;
    // The engine keeps the namespace's owner by id.
    let target_id = c.inspect("target").await.id.expect("an id");
    let hc = c.inspect("joined").await.host_config.expect("a HostConfig");
    assert_eq!(hc.pid_mode, Some(format!("container:{target_id}")));
    // PID 1 of the namespace it joined is the target's app.
    let environ = c.read("joined", "/proc/1/environ").await;
    assert!(environ.split('\0').any(|v| v == "MARK=berth-pid-target"), "{environ:?}");
    let hc = c.inspect("onhost").await.host_config.expect("a HostConfig");
    assert_eq!(hc.pid_mode.as_deref(), Some("host"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ipc_mode_by_policy() {
    let mut c = Case::new("fields-ipcmode").await;
    let policy = json!({"allowContainerNamespaces": true, "allowHostIPC": true, "allowedSysctls": ["kernel.shm*"]});
    // A shareable IPC namespace (no policy needed) with a setting of its own.
    let owner =
        set(c.ns(), "owner", json!({"ipcMode": "shareable", "sysctls": [{"name": "kernel.shmmni", "value": "1234"}]}));
    c.apply_ok(&[host(c.ns(), policy.clone()), owner.clone()]).await;
    assert_eq!(c.inspect("owner").await.host_config.and_then(|h| h.ipc_mode).as_deref(), Some("shareable"));
    let owner_name = c.name_of("owner").await;
    let joined = set(c.ns(), "joined", json!({"ipcMode": format!("container:{owner_name}")}));
    let on_host = set(c.ns(), "onhost", json!({"ipcMode": "host"}));
    c.apply_one_by_one(&[host(c.ns(), policy), owner, joined, on_host]).await;
    // The engine keeps the namespace's owner by id.
    let owner_id = c.inspect("owner").await.id.expect("an id");
    assert_eq!(c.inspect("joined").await.host_config.and_then(|h| h.ipc_mode), Some(format!("container:{owner_id}")));
    // The joined container sees the owner's IPC namespace, setting and all.
    assert_eq!(c.read("joined", "/proc/sys/kernel/shmmni").await, "1234\n");
    assert_eq!(c.inspect("onhost").await.host_config.and_then(|h| h.ipc_mode).as_deref(), Some("host"));
    let host_shmmni = std::fs::read_to_string("/proc/sys/kernel/shmmni").expect("the host's kernel.shmmni");
    assert_eq!(c.read("onhost", "/proc/sys/kernel/shmmni").await, host_shmmni);
}
