//! The regular expressions and limits shared by both halves of validation: the CRD schema
//! (`pattern`, `maxItems`, checked by the API server with Go's RE2) and [`crate::validate`]
//! (checked with the `regex` crate). One constant, two engines: the patterns use only ASCII
//! character classes (no `\w`, `\s`, `\d` or `.`, whose meaning differs between RE2, Rust's
//! `regex` and ECMA-262), so every engine reads them the same way.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;

/// Whether `s` matches one of the patterns of this module, as the API server would decide.
pub fn is_match(pattern: &'static str, s: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Regex>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern)
        .or_insert_with(|| Regex::new(pattern).expect("the patterns of berth_crd::patterns compile"))
        .is_match(s)
}

/// An image reference, as Docker's `distribution/reference` grammar defines it:
/// `[domain[:port]/]path[:tag][@digest]`, path components lowercase, digests sha256/384/512.
/// (IPv6 registry addresses are not accepted.) The 255-character limit on the name is checked
/// in Rust only: a pattern cannot count the name apart from the tag and digest.
pub const IMAGE: &str = concat!(
    "^(",
    "([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(\\.([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(:[0-9]+)?/",
    ")?",
    "[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*",
    "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?",
    "(@(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}))?$",
);

/// An image repository without tag or digest (`registry:5000/shop/web`): where an Image is
/// pushed.
pub const REPOSITORY: &str = concat!(
    "^(",
    "([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(\\.([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(:[0-9]+)?/",
    ")?",
    "[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$",
);

/// A Dockerfile stage name (`FROM ... AS build`).
pub const STAGE: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$";

/// A Docker engine endpoint: `unix:///path` or `tcp://host:port` with a port of 1-65535.
pub const ENDPOINT: &str = concat!(
    "^(unix:///[^\\t\\n\\f\\r\\x20]+",
    "|tcp://[A-Za-z0-9.:\\[\\]-]+:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))$",
);

/// An RFC 1123 label (metadata.name of every berth resource): at most 63 characters.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// An RFC 1123 subdomain (Secret and ConfigMap names), together with a `maxLength` of 253.
pub const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";

/// An environment variable name.
pub const ENV_NAME: &str = "^[A-Za-z_][A-Za-z0-9_.-]*$";

/// Docker's rule for volume and network names.
pub const DOCKER_NAME: &str = "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$";

/// An absolute path.
pub const ABSOLUTE_PATH: &str = "^/";

/// An absolute path in normal form: `/`, or `/`-separated segments none of which is empty,
/// `.` or `..` (so no `//`, no trailing `/`). Host policies compare such paths by prefix;
/// `/etc/../root` or `//etc` would slip past a prefix check, and berth refuses them rather
/// than resolve them (the host's symlinks are out of its sight anyway).
pub const NORMAL_PATH: &str = "^(/|(/([^/.][^/]*|[.][^/.][^/]*|[.][.][^/]+))+)$";

/// A mount target: an absolute path other than `/`, without a trailing `/` (so that two
/// spellings of one directory cannot hide a duplicate).
pub const MOUNT_TARGET: &str = "^/([^/]|/+[^/])+$";

/// A user name or `uid[:gid]`: no whitespace.
pub const USER: &str = "^[^\\t\\n\\f\\r\\x20]+$";

/// A stop signal: a name like `SIGTERM` or a number from 1 to 64.
pub const STOP_SIGNAL: &str = "^(SIG[A-Z0-9+]+|[1-9]|[1-5][0-9]|6[0-4])$";

/// A Linux capability name (`NET_ADMIN`, `ALL`).
pub const CAPABILITY: &str = "^[A-Z0-9_]+$";

/// CPUs as a decimal number of cores or millicores: `2`, `1.5`, `500m`. (The range, 1m to
/// 1000000 CPUs, is checked in Rust only.)
pub const CPUS: &str = "^[0-9]+(\\.[0-9]+)?m?$";

/// A memory size: a decimal number with an optional suffix, `256Mi`, `1G`, `1048576`. (Docker's
/// minimum of 6Mi is checked in Rust only.)
pub const MEMORY: &str = "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|K|M|G|T)?$";

/// `strategy.maxUnavailable` as a percentage, `0%` to `100%` (an integer must be `>= 0`).
pub const PERCENT: &str = "^(100|[1-9]?[0-9])%$";

/// `imagePollInterval`: whole hours, minutes and seconds, `30s`, `5m`, `1h30m`. The subset on
/// which Go's durations (CEL's `duration()`) and humantime (the CLI) agree.
pub const POLL_INTERVAL: &str = "^([0-9]{1,6}(h|m|s)){1,3}$";

/// A host name (`hostname`, `extraHosts[].hostname`, `dnsSearch`): dot-separated labels of
/// letters, digits and `-`, each at most 63 characters, not starting or ending with `-`.
/// (The total length is bounded by the field's `maxLength`.)
pub const HOSTNAME: &str =
    "^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$";

/// The resource names of `ulimits` (Docker's, as `docker run --ulimit` takes them).
pub const ULIMIT_NAMES: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// A quantity of bytes that is zero (`0`, `0Mi`, `0.0`): the syntax of [`MEMORY`] with only
/// zeros in the number. A size of zero means "the engine's default" to Docker; berth asks for
/// the field to be left out instead.
pub const ZERO_QUANTITY: &str = "^0+([.]0+)?(Ki|Mi|Gi|Ti|k|K|M|G|T)?$";

/// A tmpfs mount's mode: three or four octal digits (`700`, `1777`, `0755`), as a string (YAML
/// would read an unquoted `0700` as a decimal number).
pub const FILE_MODE: &str = "^[0-7]{3,4}$";

/// A logging driver: a built-in one (`json-file`, `local`, `none`, `syslog`, ...) or a
/// plugin's name (`grafana/loki:latest`).
pub const LOG_DRIVER: &str = "^[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)?(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$";

/// A logging option's key (`max-size`, `tag`, `syslog-address`).
pub const LOG_OPTION: &str = "^[a-z0-9][a-z0-9_.-]*$";

/// A sysctl's name: dot-separated segments (`net.core.somaxconn`, `kernel.shm_rmid_forced`).
pub const SYSCTL: &str = "^[a-z0-9_]+([.][A-Za-z0-9_-]+)+$";

/// A sysctl's value: anything on one line.
pub const SYSCTL_VALUE: &str = "^[^\\n\\r\\x00]+$";

/// A sysctl of a host policy's `allowedSysctls`: a name, a name prefix ending in `*`
/// (`kernel.msg*`, `net.core.*`), or `*` alone.
pub const SYSCTL_GLOB: &str = "^([*]|[a-z0-9_]+([.][A-Za-z0-9_-]+)*([.]?[*])?)$";

/// The sysctls runc sets in a container's IPC namespace (and refuses with the host's).
pub const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The sysctls a container may set on any host without a policy: Kubernetes' *safe* set
/// (namespaced, and isolated from other containers and the host). Every other namespaced
/// sysctl needs the host's `policy.allowedSysctls`.
pub const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_wmem",
];

/// Whether runc can set sysctl `name` inside a container at all: the IPC ones, `fs.mqueue.*`,
/// `net.*` and `kernel.domainname` live in the container's own namespaces; every other one
/// (`vm.*`, most of `kernel.*`) is the host kernel's, and runc refuses it on every host.
pub fn is_namespaced_sysctl(name: &str) -> bool {
    IPC_SYSCTLS.contains(&name)
        || name.starts_with("fs.mqueue.")
        || name.starts_with("net.")
        || name == "kernel.domainname"
}

/// A container's `expose` entry as a string: a port (1 to 65535), optionally `/tcp`, `/udp` or
/// `/sctp`. (An integer entry is a TCP port.)
pub const EXPOSE: &str =
    "^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})(/(tcp|udp|sctp))?$";

/// A device's cgroup permissions: some of `r` (read), `w` (write), `m` (mknod), in that order.
pub const DEVICE_PERMISSIONS: &str = "^(rwm|rw|rm|wm|r|w|m)$";

/// `pidMode`: the host's PID namespace, or another container's (`container:NAME`, a name or id).
pub const PID_MODE: &str = concat!("^(host|", "container:[a-zA-Z0-9][a-zA-Z0-9_.-]*", ")$");

/// `ipcMode`: Docker's IPC modes.
pub const IPC_MODE: &str = concat!("^(private|shareable|none|host|", "container:[a-zA-Z0-9][a-zA-Z0-9_.-]*", ")$");

/// A `securityOpt` entry Docker's engine takes: `no-new-privileges` (optionally `:true`,
/// `=false`, ...), `seccomp=unconfined` or a seccomp profile's JSON (`seccomp={...}`),
/// `apparmor=PROFILE`, `label=disable` or `label=user|role|type|level:VALUE`.
pub const SECURITY_OPT: &str = concat!(
    "^(no-new-privileges([:=](true|false))?",
    "|seccomp=(unconfined|[{][^\\x00]*)",
    "|apparmor=[^\\t\\n\\f\\r\\x20=]+",
    "|label=(disable|(user|role|type|level):[^\\t\\n\\f\\r\\x20]+))$",
);

/// A host policy's `allowedSecurityOpts` entry: an option as a template writes it (see
/// [`SECURITY_OPT`]), or one of its kinds alone (`seccomp`, `apparmor`, `label`), which allows
/// every option of that kind.
pub const SECURITY_OPT_GRANT: &str = concat!(
    "^(seccomp|apparmor|label",
    "|seccomp=(unconfined|[{][^\\x00]*)",
    "|apparmor=[^\\t\\n\\f\\r\\x20=]+",
    "|label=(disable|(user|role|type|level):[^\\t\\n\\f\\r\\x20]+))$",
);

/// Docker's built-in networks, which a template may not name.
pub const BUILTIN_NETWORKS: [&str; 4] = ["host", "none", "bridge", "default"];

/// At most this many `ports` (bounds the CEL duplicate checks' cost at the API server).
pub const MAX_PORTS: usize = 128;
/// At most this many `env` entries.
pub const MAX_ENV: usize = 256;
/// At most this many `mounts`.
pub const MAX_MOUNTS: usize = 64;
/// At most this many `networks`.
pub const MAX_NETWORKS: usize = 16;
/// At most this many template `labels`.
pub const MAX_LABELS: usize = 64;
/// At most this many characters in an environment variable name (bounds the cost of the CEL
/// duplicate check, which compares names).
pub const MAX_ENV_NAME: usize = 256;
/// At most this many characters in a mount's source and target (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// At most this many characters in a `hostIP` (the longest IPv6 text form).
pub const MAX_IP: usize = 45;
/// At most this many `extraHosts`.
pub const MAX_EXTRA_HOSTS: usize = 64;
/// At most this many `dns` servers and `dnsSearch` domains each.
pub const MAX_DNS: usize = 8;
/// At most this many characters in a host or domain name (DNS' limit).
pub const MAX_HOSTNAME: usize = 253;
/// At most this many characters in a container's `hostname` (Linux's `HOST_NAME_MAX`).
pub const MAX_CONTAINER_HOSTNAME: usize = 64;
/// At most this many `sysctls`.
pub const MAX_SYSCTLS: usize = 64;
/// At most this many characters in a sysctl's name or value.
pub const MAX_SYSCTL: usize = 256;
/// At most this many logging options.
pub const MAX_LOG_OPTIONS: usize = 32;
/// At most this many characters in a logging driver's name, an option's key or its value.
pub const MAX_LOG_TEXT: usize = 1024;
/// At most this many `devices`.
pub const MAX_DEVICES: usize = 64;
/// At most this many `securityOpt` entries.
pub const MAX_SECURITY_OPTS: usize = 16;
/// At most this many characters in one `securityOpt` entry (a seccomp profile's JSON fits).
pub const MAX_SECURITY_OPT: usize = 256 * 1024;
/// At most this many characters in `pidMode` or `ipcMode`.
pub const MAX_NAMESPACE_MODE: usize = 256;
/// At most this many `hostSelector.matchExpressions`.
pub const MAX_SELECTOR_EXPRESSIONS: usize = 32;
