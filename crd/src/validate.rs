//! Validation of one object on its own, the Rust twin of the CRD's schema and CEL rules.
//!
//! The CLI runs it on every object before the first Docker call; the operator runs it before
//! a reconcile touches a host (the API server's admission already checked the CEL half).
//! Each error names the field path, so a message reads `spec.template.ports[1].hostPort: ...`.
//!
//! `tests/consistency.rs` checks that this and the generated CRD accept and reject the same
//! objects. The regular expressions and list bounds both use live in [`crate::patterns`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::patterns::*;
use crate::quantity::{parse_cpus, parse_duration, parse_memory, parse_size};
use crate::{
    ContainerSet, ContainerSetSpec, ContainerTemplate, DockerHost, Image, ImagePolicy, MAX_DEPENDENCIES, MountKind,
    RestartPolicy, SetMode,
};

/// One invalid field: where, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.template.ports[0].containerPort`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Objects that can check themselves without looking anything up.
pub trait Validate {
    /// Every problem found; empty when the object is valid.
    fn validate(&self) -> Vec<FieldError>;
}

/// Why a path that policy compares by prefix is refused.
const NOT_NORMAL: &str =
    "is not a normalised path: no . or .. segments, no // and no trailing / (berth compares host paths as written)";

/// Collects errors under a path prefix.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into() });
    }
}

/// At most this many characters of a value are quoted in a message: an enormous value (a
/// megabyte image reference) would otherwise make an enormous error.
const MAX_QUOTED_CHARS: usize = 80;

/// Linux's limit on one environment string, `NAME=value` with its NUL (`MAX_ARG_STRLEN`).
const MAX_ENV_STRING: usize = 128 * 1024;

/// A name as part of a field path or an object's label, cut short when long.
pub fn shortened(key: &str) -> String {
    if key.chars().count() <= MAX_QUOTED_CHARS {
        key.to_string()
    } else {
        format!("{}...", key.chars().take(MAX_QUOTED_CHARS).collect::<String>())
    }
}

/// `value` quoted for a message, as `{:?}` does, cut short with its length when it is long.
pub fn quoted(value: &str) -> String {
    let count = value.chars().count();
    if count <= MAX_QUOTED_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX_QUOTED_CHARS).collect();
    format!("{head:?}... ({count} characters)")
}

/// RFC 1123 label: what namespaces and set names must be, since they end up in container
/// names and labels.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: what Secret and ConfigMap names must be.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_metadata(e: &mut Errors, name: Option<&str>, namespace: Option<&str>) {
    match name {
        None | Some("") => e.add("metadata.name", "is required"),
        Some(n) if !is_dns_label(n) => e.add(
            "metadata.name",
            format!("{} must be a DNS label: lowercase letters, digits and '-', at most 63 characters", quoted(n)),
        ),
        _ => {}
    }
    if let Some(ns) = namespace
        && !is_dns_label(ns)
    {
        e.add("metadata.namespace", format!("{} must be a DNS label", quoted(ns)));
    }
}

impl Validate for DockerHost {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        check_metadata(&mut e, self.metadata.name.as_deref(), self.metadata.namespace.as_deref());
        let spec = &self.spec;
        let ep = spec.endpoint.as_str();
        if !is_match(ENDPOINT, ep) {
            let message = if ep.starts_with("unix://") {
                format!(
                    "{}: a unix endpoint needs an absolute path without spaces (unix:///var/run/docker.sock)",
                    quoted(ep)
                )
            } else if ep.starts_with("tcp://") {
                format!(
                    "{}: a tcp endpoint needs host:port with a port from 1 to 65535 (tcp://10.0.0.5:2376)",
                    quoted(ep)
                )
            } else {
                format!("{} must start with unix:// or tcp://", quoted(ep))
            };
            e.add("spec.endpoint", message);
        }
        if ep.starts_with("tcp://") && spec.tls.is_none() && !spec.insecure {
            e.add("spec.tls", "a tcp:// endpoint needs tls.secretName (or spec.insecure: true to allow plain TCP)");
        }
        if let Some(tls) = &spec.tls
            && !is_dns_subdomain(&tls.secret_name)
        {
            e.add("spec.tls.secretName", format!("{} is not a valid Secret name", quoted(&tls.secret_name)));
        }
        for (i, p) in spec.policy.allowed_host_paths.iter().enumerate() {
            if !p.starts_with('/') {
                e.add(format!("spec.policy.allowedHostPaths[{i}]"), format!("{} must be an absolute path", quoted(p)));
            } else if !is_match(NORMAL_PATH, p) {
                e.add(format!("spec.policy.allowedHostPaths[{i}]"), format!("{} {NOT_NORMAL}", quoted(p)));
            }
        }
        for (i, c) in spec.policy.allowed_capabilities.iter().enumerate() {
            if !is_match(CAPABILITY, c) {
                e.add(
                    format!("spec.policy.allowedCapabilities[{i}]"),
                    format!("{} is not a capability name (NET_ADMIN, ALL)", quoted(c)),
                );
            }
        }
        check_policy_grants(&mut e, &spec.policy);
        e.0
    }
}

impl Validate for Image {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        check_metadata(&mut e, self.metadata.name.as_deref(), self.metadata.namespace.as_deref());
        let b = &self.spec.build;
        if b.context.trim().is_empty() {
            e.add("spec.build.context", "is required: the folder to build, relative to this file");
        }
        if let Some(f) = &b.dockerfile
            && (f.starts_with('/') || f.split('/').any(|s| s == "..") || f.trim().is_empty())
        {
            e.add(
                "spec.build.dockerfile",
                format!("{} must be a path inside the context (relative, no ..)", quoted(f)),
            );
        }
        for k in b.args.keys() {
            if !is_match(ENV_NAME, k) {
                e.add(format!("spec.build.args.{}", shortened(k)), "is not a build argument name");
            }
        }
        if let Some(t) = &b.target
            && !is_match(STAGE, t)
        {
            e.add("spec.build.target", format!("{} is not a stage name", quoted(t)));
        }
        for k in b.labels.keys().filter(|k| k.starts_with("berth.dev/")) {
            e.add(format!("spec.build.labels.{}", shortened(k)), "keys under berth.dev/ are reserved for berth");
        }
        if let Some(r) = &self.spec.repository
            && !is_match(REPOSITORY, r)
        {
            e.add(
                "spec.repository",
                format!("{} is not a repository ([registry[:port]/]path, lowercase, no tag)", quoted(r)),
            );
        }
        if let Some(s) = &self.spec.push_secret
            && !is_dns_subdomain(&s.name)
        {
            e.add("spec.pushSecret.name", format!("{} is not a valid Secret name", quoted(&s.name)));
        }
        if let Some(sel) = &self.spec.host_selector {
            check_selector(&mut e, "spec.hostSelector", sel);
        }
        e.0
    }
}

impl Validate for ContainerSet {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        check_metadata(&mut e, self.metadata.name.as_deref(), self.metadata.namespace.as_deref());
        let spec = &self.spec;
        if !(0..=1000).contains(&spec.replicas_per_host) {
            e.add("spec.replicasPerHost", format!("must be between 0 and 1000, got {}", spec.replicas_per_host));
        }
        if !(0..=100).contains(&spec.revision_history_limit) {
            e.add(
                "spec.revisionHistoryLimit",
                format!("must be between 0 and 100, got {}", spec.revision_history_limit),
            );
        }
        check_selector(&mut e, "spec.hostSelector", &spec.host_selector);
        check_template(&mut e, "spec.template", &spec.template);
        if spec.mode == SetMode::Task {
            if let Some(r @ (RestartPolicy::Always | RestartPolicy::UnlessStopped)) = spec.template.restart_policy {
                e.add(
                    "spec.template.restartPolicy",
                    format!("{r:?} would restart a Task that completed: a Task takes Never (the default) or OnFailure"),
                );
            }
            if spec.strategy.auto_rollback {
                e.add(
                    "spec.strategy.autoRollback",
                    "a Task is not rolled back: running an earlier revision again would repeat its work",
                );
            }
        }
        check_count(&mut e, "spec.dependsOn", spec.depends_on.len(), MAX_DEPENDENCIES, "dependencies");
        let mut named = BTreeSet::new();
        for (i, d) in spec.depends_on.iter().enumerate() {
            let p = format!("spec.dependsOn[{i}].name");
            if !is_dns_label(&d.name) {
                e.add(p, format!("{} is not a ContainerSet name (a DNS label)", quoted(&d.name)));
            } else if self.metadata.name.as_deref() == Some(d.name.as_str()) {
                e.add("spec.dependsOn", format!("a set cannot depend on itself (item {i})"));
            } else if !named.insert(d.name.as_str()) {
                e.add("spec.dependsOn", format!("{} is named twice (item {i})", d.name));
            }
        }
        if spec.replicas_per_host > 1 && spec.template.ports.iter().any(|p| p.host_port.is_some()) {
            e.add(
                "spec.replicasPerHost",
                format!("a fixed hostPort allows at most one replica per host, got {}", spec.replicas_per_host),
            );
        }
        let s = &spec.strategy;
        match &s.max_unavailable {
            Some(IntOrString::Int(n)) if *n < 0 => {
                e.add("spec.strategy.maxUnavailable", format!("must not be negative, got {n}"))
            }
            Some(IntOrString::String(p)) if !is_match(PERCENT, p) => e.add(
                "spec.strategy.maxUnavailable",
                format!("{} must be an integer or a percentage from \"0%\" to \"100%\"", quoted(p)),
            ),
            _ => {}
        }
        if let Some(m) = s.min_ready_seconds
            && m < 0
        {
            e.add("spec.strategy.minReadySeconds", format!("must not be negative, got {m}"));
        }
        if s.progress_deadline_seconds < 1 {
            e.add(
                "spec.strategy.progressDeadlineSeconds",
                format!("must be at least 1, got {}", s.progress_deadline_seconds),
            );
        }
        check_image_policy(&mut e, spec);
        e.0
    }
}

/// The shortest `imagePollInterval`: a registry asked more often than this gains nothing and
/// risks its rate limits.
pub const MIN_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

fn check_image_policy(e: &mut Errors, spec: &ContainerSetSpec) {
    let iv = &spec.image_poll_interval;
    if iv.len() > 16 || !is_match(POLL_INTERVAL, iv) {
        e.add(
            "spec.imagePollInterval",
            format!("{} must be a duration in h, m and s, like \"30s\", \"5m\" or \"1h30m\"", quoted(iv)),
        );
    } else {
        match parse_duration(iv) {
            Ok(ns) if ns < MIN_POLL_INTERVAL.as_nanos() as i64 => {
                e.add("spec.imagePollInterval", format!("{}: must be at least 10s", quoted(iv)))
            }
            Ok(_) => {}
            Err(msg) => e.add("spec.imagePollInterval", msg),
        }
    }
    if spec.image_policy == ImagePolicy::Follow && spec.template.image.contains('@') {
        e.add("spec.imagePolicy", "Follow needs a tag to follow, and the image is already pinned to a digest");
    }
}

/// A label key as Kubernetes defines it: `[prefix/]name`, the prefix a DNS subdomain, the name
/// at most 63 characters of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(|p| !p.is_empty() && is_dns_subdomain(p)) && !name.is_empty() && is_label_value(name)
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9._-]` starting and ending
/// alphanumeric.
pub fn is_label_value(value: &str) -> bool {
    let b = value.as_bytes();
    value.is_empty()
        || (b.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

fn check_selector(e: &mut Errors, path: &str, sel: &LabelSelector) {
    // Not in the CRD's schema (Kubernetes' LabelSelector has none), but a selector that could
    // never match a label is a mistake that would otherwise place the set nowhere in silence.
    for (k, v) in sel.match_labels.iter().flatten() {
        let p = format!("{path}.matchLabels.{}", shortened(k));
        if !is_label_key(k) {
            e.add(p, format!("{} is not a valid label key ([prefix/]name, name at most 63 characters)", quoted(k)));
        } else if !is_label_value(v) {
            e.add(p, format!("{} is not a valid label value (at most 63 characters of [A-Za-z0-9._-])", quoted(v)));
        }
    }
    check_count(
        e,
        &format!("{path}.matchExpressions"),
        sel.match_expressions.as_ref().map_or(0, Vec::len),
        MAX_SELECTOR_EXPRESSIONS,
        "expressions",
    );
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if expr.values.as_ref().is_none_or(|v| v.is_empty()) {
                    e.add(format!("{p}.values"), format!("operator {} needs at least one value", expr.operator));
                }
            }
            "Exists" | "DoesNotExist" => {
                if expr.values.as_ref().is_some_and(|v| !v.is_empty()) {
                    e.add(format!("{p}.values"), format!("operator {} takes no values", expr.operator));
                }
            }
            other => e.add(
                format!("{p}.operator"),
                format!("{} is not one of In, NotIn, Exists, DoesNotExist", quoted(other)),
            ),
        }
        if expr.key.is_empty() {
            e.add(format!("{p}.key"), "is required");
        } else if !is_label_key(&expr.key) {
            e.add(format!("{p}.key"), format!("{} is not a valid label key", quoted(&expr.key)));
        }
        for (j, v) in expr.values.iter().flatten().enumerate() {
            if !is_label_value(v) {
                e.add(format!("{p}.values[{j}]"), format!("{} is not a valid label value", quoted(v)));
            }
        }
    }
}

/// Docker's rule for volume and network names.
fn is_docker_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// A list or map bounded in the CRD by `maxItems`/`maxProperties`.
fn check_count(e: &mut Errors, path: &str, len: usize, max: usize, what: &str) {
    if len > max {
        e.add(path, format!("at most {max} {what}, got {len}"));
    }
}

/// Docker's limit on an image reference's name (`distribution/reference`'s NameTotalLengthMax).
const MAX_IMAGE_NAME: usize = 255;

/// The name of a reference that matched [`IMAGE`]: without `@digest` and `:tag` (a `:` after
/// the last `/` starts the tag; one before it is the registry's port).
///
/// Not `oci_spec`'s parser: its pattern spells the tag `[\w][\w.-]{0,127}` with Unicode `\w`,
/// and compiling that took most of the CPU time of every `berth` command (70+ ms) — the
/// [`IMAGE`] pattern already checked the grammar in ASCII.
fn reference_name(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    }
}

/// The grants of a host policy for the fields applications use: devices by path, security
/// options and sysctls by name.
fn check_policy_grants(e: &mut Errors, policy: &crate::HostPolicy) {
    for (i, p) in policy.allowed_devices.iter().enumerate() {
        if !p.starts_with('/') {
            e.add(format!("spec.policy.allowedDevices[{i}]"), format!("{} must be an absolute path", quoted(p)));
        } else if !is_match(NORMAL_PATH, p) {
            e.add(format!("spec.policy.allowedDevices[{i}]"), format!("{} {NOT_NORMAL}", quoted(p)));
        }
    }
    for (i, o) in policy.allowed_security_opts.iter().enumerate() {
        if o.len() > MAX_SECURITY_OPT || !is_match(SECURITY_OPT_GRANT, o) {
            e.add(
                format!("spec.policy.allowedSecurityOpts[{i}]"),
                format!(
                    "{} is not a security option (seccomp=unconfined, apparmor=PROFILE, label=disable) or a kind of them (seccomp, apparmor, label)",
                    quoted(o)
                ),
            );
        }
    }
    for (i, s) in policy.allowed_sysctls.iter().enumerate() {
        if s.len() > MAX_SYSCTL || !is_match(SYSCTL_GLOB, s) {
            e.add(
                format!("spec.policy.allowedSysctls[{i}]"),
                format!(
                    "{} is not a sysctl name or prefix (net.core.somaxconn, kernel.msg*, net.core.*, *)",
                    quoted(s)
                ),
            );
        }
    }
}

/// Whether `s` is an IP address as CEL's `isIP()` reads one (no IPv4-mapped IPv6 addresses).
fn is_ip(s: &str) -> bool {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_none(),
        Ok(IpAddr::V4(_)) => true,
        Err(_) => false,
    }
}

/// The template's fields for what applications ask of the engine beyond image, ports and
/// mounts: names and resolution, limits, init and terminal, logging, sysctls, restarts,
/// exposed ports, devices, security options, PID and IPC namespaces, tmpfs options.
fn check_application_fields(e: &mut Errors, path: &str, t: &ContainerTemplate) {
    if let Some(h) = &t.hostname
        && (h.len() > MAX_CONTAINER_HOSTNAME || !is_match(HOSTNAME, h))
    {
        e.add(
            format!("{path}.hostname"),
            format!(
                "{} is not a host name: labels of letters, digits and '-' separated by '.', at most {MAX_CONTAINER_HOSTNAME} characters",
                quoted(h)
            ),
        );
    }

    check_count(e, &format!("{path}.extraHosts"), t.extra_hosts.len(), MAX_EXTRA_HOSTS, "entries");
    for (i, h) in t.extra_hosts.iter().enumerate() {
        let p = format!("{path}.extraHosts[{i}]");
        if h.hostname.len() > MAX_HOSTNAME || !is_match(HOSTNAME, &h.hostname) {
            e.add(format!("{p}.hostname"), format!("{} is not a host name", quoted(&h.hostname)));
        }
        if h.ip != "host-gateway" && !is_ip(&h.ip) {
            e.add(format!("{p}.ip"), format!("{} must be an IP address or host-gateway", quoted(&h.ip)));
        }
    }

    check_count(e, &format!("{path}.dns"), t.dns.len(), MAX_DNS, "servers");
    for (i, a) in t.dns.iter().enumerate() {
        if !is_ip(a) {
            e.add(format!("{path}.dns[{i}]"), format!("{} is not an IP address", quoted(a)));
        }
    }
    check_count(e, &format!("{path}.dnsSearch"), t.dns_search.len(), MAX_DNS, "domains");
    for (i, d) in t.dns_search.iter().enumerate() {
        if d.len() > MAX_HOSTNAME || !is_match(HOSTNAME, d) {
            e.add(format!("{path}.dnsSearch[{i}]"), format!("{} is not a domain name", quoted(d)));
        }
    }

    check_count(e, &format!("{path}.ulimits"), t.ulimits.len(), ULIMIT_NAMES.len(), "limits");
    let mut ulimit_names = BTreeSet::new();
    for (i, u) in t.ulimits.iter().enumerate() {
        let p = format!("{path}.ulimits[{i}]");
        if !ULIMIT_NAMES.contains(&u.name.as_str()) {
            e.add(format!("{p}.name"), format!("{} is not a ulimit ({})", quoted(&u.name), ULIMIT_NAMES.join(", ")));
        } else if !ulimit_names.insert(u.name.as_str()) {
            e.add(format!("{p}.name"), format!("{} is declared twice", quoted(&u.name)));
        }
        for (field, v) in [("soft", u.soft), ("hard", u.hard)] {
            if v < -1 {
                e.add(format!("{p}.{field}"), format!("must be -1 (unlimited) or more, got {v}"));
            }
        }
        if u.soft >= -1 && u.hard >= -1 && u.hard != -1 && (u.soft == -1 || u.soft > u.hard) {
            e.add(
                format!("{p}.soft"),
                format!("must not be above hard (-1 is unlimited), got {} > {}", u.soft, u.hard),
            );
        }
    }

    let ipc = t.ipc_mode.as_deref();
    if let Some(s) = &t.shm_size {
        if let Err(msg) = parse_size(s) {
            e.add(format!("{path}.shmSize"), msg);
        } else if ipc.is_some_and(|m| !matches!(m, "private" | "shareable")) {
            e.add(format!("{path}.shmSize"), "applies to a private or shareable ipcMode only");
        }
    }

    if let Some(l) = &t.logging {
        if l.driver.len() > MAX_LOG_TEXT || !is_match(LOG_DRIVER, &l.driver) {
            e.add(
                format!("{path}.logging.driver"),
                format!(
                    "{} is not a logging driver name (json-file, local, syslog, a plugin's name)",
                    quoted(&l.driver)
                ),
            );
        }
        check_count(e, &format!("{path}.logging.options"), l.options.len(), MAX_LOG_OPTIONS, "options");
        for k in l.options.keys() {
            if k.len() > MAX_LOG_TEXT || !is_match(LOG_OPTION, k) {
                e.add(
                    format!("{path}.logging.options.{}", shortened(k)),
                    "a key must be lowercase letters, digits, '_', '.' and '-', like max-size",
                );
            }
        }
    }

    check_count(e, &format!("{path}.sysctls"), t.sysctls.len(), MAX_SYSCTLS, "sysctls");
    let mut sysctl_names = BTreeSet::new();
    for (i, sysctl) in t.sysctls.iter().enumerate() {
        let (k, v) = (&sysctl.name, &sysctl.value);
        let p = format!("{path}.sysctls[{i}]");
        if k.len() > MAX_SYSCTL || !is_match(SYSCTL, k) {
            e.add(
                format!("{p}.name"),
                format!("{} is not a sysctl name (dot-separated, like net.core.somaxconn)", quoted(k)),
            );
        } else if !is_namespaced_sysctl(k) {
            e.add(
                format!("{p}.name"),
                format!("{k} is not a namespaced sysctl: it is the host kernel's, and runc refuses to set it in a container on any host (set it on the host itself)"),
            );
        } else if !sysctl_names.insert(k.as_str()) {
            e.add(format!("{p}.name"), format!("{k} is declared twice"));
        } else if t.host_network && k.starts_with("net.") {
            e.add(format!("{p}.name"), format!("{k} would change the host's network namespace (hostNetwork)"));
        } else if ipc == Some("host") && (IPC_SYSCTLS.contains(&k.as_str()) || k.starts_with("fs.mqueue.")) {
            e.add(format!("{p}.name"), format!("{k} would change the host's IPC namespace (ipcMode host)"));
        }
        if v.len() > MAX_SYSCTL || !is_match(SYSCTL_VALUE, v) {
            e.add(format!("{p}.value"), "must be one line, not empty, at most 256 characters");
        }
    }

    if let Some(n) = t.restart_max_retries {
        if !(1..=10000).contains(&n) {
            e.add(format!("{path}.restartMaxRetries"), format!("must be between 1 and 10000, got {n}"));
        } else if t.restart_policy != Some(RestartPolicy::OnFailure) {
            e.add(format!("{path}.restartMaxRetries"), "applies to restartPolicy OnFailure only");
        }
    }

    check_count(e, &format!("{path}.expose"), t.expose.len(), MAX_PORTS, "ports");
    for (i, x) in t.expose.iter().enumerate() {
        let ok = match x {
            IntOrString::Int(n) => (1..=65535).contains(n),
            IntOrString::String(s) => is_match(EXPOSE, s),
        };
        if !ok {
            let shown = match x {
                IntOrString::Int(n) => n.to_string(),
                IntOrString::String(s) => quoted(s),
            };
            e.add(
                format!("{path}.expose[{i}]"),
                format!("{shown} is not a port (1 to 65535), optionally with /tcp, /udp or /sctp (\"53/udp\")"),
            );
        }
    }

    check_count(e, &format!("{path}.devices"), t.devices.len(), MAX_DEVICES, "devices");
    for (i, d) in t.devices.iter().enumerate() {
        let p = format!("{path}.devices[{i}]");
        if d.host_path.len() > MAX_PATH || !d.host_path.starts_with('/') {
            e.add(format!("{p}.hostPath"), format!("{} must be an absolute host path", quoted(&d.host_path)));
        } else if !is_match(NORMAL_PATH, &d.host_path) {
            e.add(format!("{p}.hostPath"), format!("{} {NOT_NORMAL}", quoted(&d.host_path)));
        }
        if let Some(c) = &d.container_path
            && (c.len() > MAX_PATH || !is_match(MOUNT_TARGET, c))
        {
            e.add(
                format!("{p}.containerPath"),
                format!("{} must be an absolute path other than / and without a trailing /", quoted(c)),
            );
        }
        if let Some(m) = &d.permissions
            && !is_match(DEVICE_PERMISSIONS, m)
        {
            e.add(format!("{p}.permissions"), format!("{} must be some of r, w and m, in that order", quoted(m)));
        }
    }

    check_count(e, &format!("{path}.securityOpt"), t.security_opt.len(), MAX_SECURITY_OPTS, "options");
    for (i, o) in t.security_opt.iter().enumerate() {
        let p = format!("{path}.securityOpt[{i}]");
        if o.len() > MAX_SECURITY_OPT || !is_match(SECURITY_OPT, o) {
            e.add(
                p,
                format!(
                    "{} is not a security option the engine takes (no-new-privileges, seccomp=unconfined, seccomp={{profile JSON}}, apparmor=PROFILE, label=disable, label=type:VALUE)",
                    quoted(o)
                ),
            );
        } else if let Some(profile) = o.strip_prefix("seccomp=").filter(|p| p.starts_with('{'))
            && let Err(err) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(profile)
        {
            e.add(p, format!("the seccomp profile is not a JSON object: {err}"));
        }
    }

    if let Some(m) = &t.pid_mode {
        if m.len() > MAX_NAMESPACE_MODE || !is_match(PID_MODE, m) {
            e.add(format!("{path}.pidMode"), format!("{} must be host or container:NAME", quoted(m)));
        } else if t.host_pid && m != "host" {
            e.add(format!("{path}.pidMode"), "hostPID already puts the container in the host's PID namespace");
        }
    }
    if let Some(m) = ipc
        && (m.len() > MAX_NAMESPACE_MODE || !is_match(IPC_MODE, m))
    {
        e.add(
            format!("{path}.ipcMode"),
            format!("{} must be private, shareable, none, host or container:NAME", quoted(m)),
        );
    }

    for (i, m) in t.mounts.iter().enumerate() {
        let Some(tmpfs) = &m.tmpfs else { continue };
        let p = format!("{path}.mounts[{i}].tmpfs");
        if m.kind != MountKind::Tmpfs {
            e.add(p, "applies to a tmpfs mount only");
            continue;
        }
        if let Some(size) = &tmpfs.size
            && let Err(msg) = parse_size(size)
        {
            e.add(format!("{p}.size"), msg);
        }
        if let Some(mode) = &tmpfs.mode
            && !is_match(FILE_MODE, mode)
        {
            e.add(
                format!("{p}.mode"),
                format!("{} must be 3 or 4 octal digits, like \"1777\" or \"0700\"", quoted(mode)),
            );
        }
    }
}

fn check_template(e: &mut Errors, path: &str, t: &ContainerTemplate) {
    if t.image_from.is_some() {
        if !t.image.is_empty() {
            e.add(format!("{path}.image"), "give exactly one of image and imageFrom");
        }
        if let Some(f) = &t.image_from
            && !is_dns_label(&f.name)
        {
            e.add(format!("{path}.imageFrom.name"), format!("{} is not an Image name (a DNS label)", quoted(&f.name)));
        }
    } else if t.image.trim().is_empty() {
        e.add(format!("{path}.image"), "is required (or imageFrom: {name: IMAGE})");
    } else if !is_match(IMAGE, &t.image) {
        e.add(
            format!("{path}.image"),
            format!("{} is not a valid image reference ([registry[:port]/]repository[:tag][@digest], repository in lowercase)", quoted(&t.image)),
        );
    } else if reference_name(&t.image).len() > MAX_IMAGE_NAME {
        // The pattern cannot count the name apart from the tag and digest; this can.
        e.add(
            format!("{path}.image"),
            format!(
                "{} is not a valid image reference: its name is longer than {MAX_IMAGE_NAME} characters",
                quoted(&t.image)
            ),
        );
    }
    for (i, s) in t.image_pull_secrets.iter().enumerate() {
        if !is_dns_subdomain(&s.name) {
            e.add(
                format!("{path}.imagePullSecrets[{i}].name"),
                format!("{} is not a valid Secret name", quoted(&s.name)),
            );
        }
    }
    if let Some(cmd) = &t.command
        && cmd.is_empty()
    {
        e.add(format!("{path}.command"), "must not be empty when given (omit it to keep the image's entrypoint)");
    }

    check_count(e, &format!("{path}.env"), t.env.len(), MAX_ENV, "variables");
    check_count(e, &format!("{path}.ports"), t.ports.len(), MAX_PORTS, "ports");
    check_count(e, &format!("{path}.mounts"), t.mounts.len(), MAX_MOUNTS, "mounts");
    check_count(e, &format!("{path}.networks"), t.networks.len(), MAX_NETWORKS, "networks");
    check_count(e, &format!("{path}.labels"), t.labels.len(), MAX_LABELS, "labels");

    let mut env_names = BTreeSet::new();
    for (i, v) in t.env.iter().enumerate() {
        let p = format!("{path}.env[{i}]");
        let valid_name = v.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && v.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_name {
            e.add(format!("{p}.name"), format!("{} is not a valid environment variable name", quoted(&v.name)));
        } else if v.name.len() > MAX_ENV_NAME {
            e.add(format!("{p}.name"), format!("at most {MAX_ENV_NAME} characters, got {}", v.name.len()));
        }
        if let Some(value) = &v.value
            && v.name.len() + value.len() + 2 > MAX_ENV_STRING
        {
            // `NAME=value` and its NUL: Linux refuses to start a process with a longer one.
            e.add(
                format!("{p}.value"),
                format!("is {} bytes; a variable is at most {MAX_ENV_STRING} bytes with its name", value.len()),
            );
        }
        if !env_names.insert(v.name.as_str()) {
            e.add(format!("{p}.name"), format!("{} is declared twice", quoted(&v.name)));
        }
        match (&v.value, &v.value_from) {
            (Some(_), Some(_)) => e.add(p.clone(), "value and valueFrom are mutually exclusive"),
            (None, Some(from)) => match (&from.secret_key_ref, &from.config_map_key_ref) {
                (Some(r), None) | (None, Some(r)) => {
                    let which = if from.secret_key_ref.is_some() { "secretKeyRef" } else { "configMapKeyRef" };
                    if !is_dns_subdomain(&r.name) {
                        e.add(
                            format!("{p}.valueFrom.{which}.name"),
                            format!("{} is not a valid object name", quoted(&r.name)),
                        );
                    }
                    if r.key.is_empty() {
                        e.add(format!("{p}.valueFrom.{which}.key"), "is required");
                    }
                }
                _ => e.add(format!("{p}.valueFrom"), "needs exactly one of secretKeyRef and configMapKeyRef"),
            },
            _ => {}
        }
    }

    let mut host_bindings = BTreeMap::new();
    let mut container_ports = BTreeSet::new();
    for (i, port) in t.ports.iter().enumerate() {
        let p = format!("{path}.ports[{i}]");
        if !(1..=65535).contains(&port.container_port) {
            e.add(format!("{p}.containerPort"), format!("must be between 1 and 65535, got {}", port.container_port));
        }
        if !container_ports.insert((port.container_port, port.protocol)) {
            e.add(
                format!("{p}.containerPort"),
                format!("{}/{} is declared twice", port.container_port, port.protocol.as_docker()),
            );
        }
        // As CEL's isIP(): no IPv4-mapped IPv6 addresses (and, as Rust's parser, no zones).
        let ip_ok = match port.host_ip.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_none(),
            Ok(IpAddr::V4(_)) => true,
            Err(_) => false,
        };
        if !port.host_ip.is_empty() && !ip_ok {
            e.add(format!("{p}.hostIP"), format!("{} is not an IP address", quoted(&port.host_ip)));
        }
        if let Some(hp) = port.host_port {
            if !(1..=65535).contains(&hp) {
                e.add(format!("{p}.hostPort"), format!("must be between 1 and 65535, got {hp}"));
            }
            let key = (hp, port.protocol, port.host_ip.clone());
            if let Some(first) = host_bindings.insert(key, i) {
                e.add(
                    format!("{p}.hostPort"),
                    format!("{hp}/{} is already published by ports[{first}]", port.protocol.as_docker()),
                );
            }
        }
    }

    let mut targets = BTreeSet::new();
    for (i, m) in t.mounts.iter().enumerate() {
        let p = format!("{path}.mounts[{i}]");
        if !is_match(MOUNT_TARGET, &m.target) {
            e.add(
                format!("{p}.target"),
                format!("{} must be an absolute path other than / and without a trailing /", quoted(&m.target)),
            );
        }
        if m.target.len() > MAX_PATH {
            e.add(format!("{p}.target"), format!("at most {MAX_PATH} characters, got {}", m.target.len()));
        }
        if let Some(s) = &m.source
            && s.len() > MAX_PATH
        {
            e.add(format!("{p}.source"), format!("at most {MAX_PATH} characters, got {}", s.len()));
        }
        if !targets.insert(m.target.as_str()) {
            e.add(format!("{p}.target"), format!("{} is mounted twice", quoted(&m.target)));
        }
        match (m.kind, m.source.as_deref()) {
            (MountKind::Tmpfs, Some(_)) => e.add(format!("{p}.source"), "is not allowed for a tmpfs mount"),
            (MountKind::Volume | MountKind::Bind, None | Some("")) => {
                e.add(format!("{p}.source"), "is required for volume and bind mounts")
            }
            (MountKind::Volume, Some(s)) if !is_docker_name(s) => e.add(
                format!("{p}.source"),
                format!("{} is not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)", quoted(s)),
            ),
            (MountKind::Bind, Some(s)) if !s.starts_with('/') => e.add(
                format!("{p}.source"),
                format!("{}: a bind mount's source must be an absolute host path", quoted(s)),
            ),
            (MountKind::Bind, Some(s)) if !is_match(NORMAL_PATH, s) => {
                e.add(format!("{p}.source"), format!("{} {NOT_NORMAL}", quoted(s)))
            }
            _ => {}
        }
    }

    if t.host_network {
        // Docker ignores both on the host's network; saying so beats a silent surprise.
        if !t.networks.is_empty() {
            e.add(format!("{path}.networks"), "a container on the host's network (hostNetwork) joins no other network");
        }
        for (i, _) in t.ports.iter().enumerate().filter(|(_, p)| p.host_port.is_some()) {
            e.add(
                format!("{path}.ports[{i}].hostPort"),
                "does not apply with hostNetwork: the container listens on the host directly",
            );
        }
    }
    for (i, n) in t.networks.iter().enumerate() {
        let p = format!("{path}.networks[{i}]");
        if BUILTIN_NETWORKS.contains(&n.as_str()) {
            e.add(p, format!("{} is a built-in network; name a user-defined bridge network", quoted(n)));
        } else if !is_docker_name(n) {
            e.add(p, format!("{} is not a valid network name", quoted(n)));
        }
    }

    if let Some(h) = &t.healthcheck {
        let p = format!("{path}.healthcheck");
        match h.test.first().map(String::as_str) {
            Some("CMD" | "CMD-SHELL") if h.test.len() >= 2 => {}
            Some("NONE") if h.test.len() == 1 => {}
            _ => e.add(format!("{p}.test"), "must be [\"CMD\", exe, args...], [\"CMD-SHELL\", command] or [\"NONE\"]"),
        }
        for (field, value) in [("interval", &h.interval), ("timeout", &h.timeout), ("startPeriod", &h.start_period)] {
            if let Some(v) = value {
                match parse_duration(v) {
                    Ok(ns) if ns < 1_000_000 => {
                        e.add(format!("{p}.{field}"), format!("{} must be at least 1ms", quoted(v)))
                    }
                    Ok(_) => {}
                    Err(msg) => e.add(format!("{p}.{field}"), msg),
                }
            }
        }
        if let Some(r) = h.retries
            && !(1..=100).contains(&r)
        {
            e.add(format!("{p}.retries"), format!("must be between 1 and 100, got {r}"));
        }
    }

    if let Some(r) = &t.resources {
        if let Some(c) = &r.cpus
            && let Err(msg) = parse_cpus(c)
        {
            e.add(format!("{path}.resources.cpus"), msg);
        }
        if let Some(m) = &r.memory
            && let Err(msg) = parse_memory(m)
        {
            e.add(format!("{path}.resources.memory"), msg);
        }
    }
    if let Some(u) = &t.user
        && !is_match(USER, u)
    {
        e.add(format!("{path}.user"), format!("{} must be a user name or uid[:gid] without spaces", quoted(u)));
    }
    if let Some(w) = &t.working_dir
        && !w.starts_with('/')
    {
        e.add(format!("{path}.workingDir"), format!("{} must be an absolute path", quoted(w)));
    }
    for k in t.labels.keys() {
        if k.starts_with("berth.dev/") {
            e.add(format!("{path}.labels.{}", shortened(k)), "keys under berth.dev/ are reserved for berth");
        }
    }
    if let Some(sig) = &t.stop_signal
        && !is_match(STOP_SIGNAL, sig)
    {
        e.add(
            format!("{path}.stopSignal"),
            format!("{} is not a signal name (SIGTERM) or number (1 to 64)", quoted(sig)),
        );
    }
    if let Some(g) = t.stop_grace_period_seconds
        && !(0..=3600).contains(&g)
    {
        e.add(format!("{path}.stopGracePeriodSeconds"), format!("must be between 0 and 3600, got {g}"));
    }
    for (field, caps) in [("capAdd", &t.cap_add), ("capDrop", &t.cap_drop)] {
        for (i, c) in caps.iter().enumerate() {
            if !is_match(CAPABILITY, c) {
                e.add(
                    format!("{path}.{field}[{i}]"),
                    format!("{} is not a capability name (NET_ADMIN, ALL)", quoted(c)),
                );
            }
        }
    }
    check_application_fields(e, path, t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_leave_out_tag_digest_not_port() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(reference_name("nginx"), "nginx");
        assert_eq!(reference_name("nginx:1.25"), "nginx");
        assert_eq!(reference_name(&format!("nginx@{digest}")), "nginx");
        assert_eq!(reference_name(&format!("nginx:1.25@{digest}")), "nginx");
        assert_eq!(reference_name("127.0.0.1:5000/team/echo"), "127.0.0.1:5000/team/echo");
        assert_eq!(reference_name("127.0.0.1:5000/team/echo:live"), "127.0.0.1:5000/team/echo");
    }

    #[test]
    fn labels_and_subdomains() {
        assert!(is_dns_label("echo-1"));
        assert!(!is_dns_label("Echo"));
        assert!(!is_dns_label("-echo"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("pull.secret"));
    }

    #[test]
    fn poll_intervals() {
        let spec = |policy: &str, interval: &str, image: &str| -> ContainerSetSpec {
            serde_json::from_value(serde_json::json!({
                "imagePolicy": policy, "imagePollInterval": interval, "template": {"image": image}
            }))
            .expect("a spec")
        };
        let errors = |s: &ContainerSetSpec| {
            let mut e = Errors::default();
            check_image_policy(&mut e, s);
            e.0.into_iter().map(|f| f.to_string()).collect::<Vec<_>>()
        };
        for ok in ["10s", "5m", "1h30m", "2h0m5s", "999999s"] {
            assert_eq!(errors(&spec("Follow", ok, "nginx:1")), Vec::<String>::new(), "{ok}");
        }
        for bad in ["9s", "0s", "5", "5min", "1.5h", "30 s", "", "1h1h1h1h"] {
            let e = errors(&spec("Follow", bad, "nginx:1"));
            assert!(e.len() == 1 && e[0].starts_with("spec.imagePollInterval: "), "{bad}: {e:?}");
        }
        let digest = format!("nginx@sha256:{}", "a".repeat(64));
        assert_eq!(errors(&spec("Pin", "5m", &digest)), Vec::<String>::new());
        let e = errors(&spec("Follow", "5m", &digest));
        assert!(e.len() == 1 && e[0].starts_with("spec.imagePolicy: "), "{e:?}");
    }

    #[test]
    fn docker_names() {
        assert!(is_docker_name("data_1.x-y"));
        assert!(!is_docker_name("_data"));
        assert!(!is_docker_name("a/b"));
    }
}
