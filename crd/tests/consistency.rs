//! Validation lives twice: in the generated CRD (schema + CEL, checked by the API server) and
//! in `Validate::validate()` (checked by the CLI). This test shows, without an API server, that
//! the two agree: on a table of invalid objects (each rejected by both, at the same field path,
//! unless marked Rust-only with the reason), on the examples, and on valid edge cases (accepted
//! by both). `support/` stands in for the API server; see there for how.

mod support;

use berth_crd::patterns::{MAX_PORTS, MAX_SELECTOR_EXPRESSIONS};
use berth_crd::{ContainerSet, DockerHost, FieldError, Validate};
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::{ApiServer, CRD_COST_LIMIT, RULE_COST_LIMIT, Rejection};

// ---------------------------------------------------------------------------------------------
// Objects

/// A ContainerSet named `name`; `spec` is the YAML below `spec:`, starting with a newline.
fn cs_named(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: ContainerSet\nmetadata:\n  name: {name}\n  namespace: default\nspec:{spec}"
    )
}

fn cs(spec: &str) -> String {
    cs_named("web", spec)
}

/// A ContainerSet whose template is `image: nginx:1.27` plus `template` (YAML lines at the
/// template's indentation, four spaces).
fn tpl(template: &str) -> String {
    cs(&format!("\n  template:\n    image: nginx:1.27\n{template}"))
}

fn dh_named(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: DockerHost\nmetadata:\n  name: {name}\n  namespace: default\nspec:{spec}"
    )
}

fn dh(spec: &str) -> String {
    dh_named("host-1", spec)
}

fn parse(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("not YAML: {e}\n{yaml}"))
}

// ---------------------------------------------------------------------------------------------
// The Rust half

/// What the CLI reports: a deserialization error at its field path (a wrong type, an unknown
/// enum value), or else every problem `validate()` finds.
fn rust_errors(object: &Value) -> Vec<FieldError> {
    fn typed<T: DeserializeOwned + Validate>(object: &Value) -> Vec<FieldError> {
        match serde_path_to_error::deserialize::<_, T>(object.clone()) {
            Ok(o) => o.validate(),
            Err(e) => vec![FieldError { path: e.path().to_string(), message: e.inner().to_string() }],
        }
    }
    match object["kind"].as_str() {
        Some("ContainerSet") => typed::<ContainerSet>(object),
        Some("DockerHost") => typed::<DockerHost>(object),
        other => panic!("not a berth object: {other:?}"),
    }
}

/// `a` is `b`, or one lies inside the other (`spec.template.ports` and
/// `spec.template.ports[1].hostPort`).
fn related(a: &str, b: &str) -> bool {
    fn inside(child: &str, parent: &str) -> bool {
        !parent.is_empty()
            && child.len() > parent.len()
            && child.starts_with(parent)
            && matches!(child.as_bytes()[parent.len()], b'.' | b'[')
    }
    a == b || inside(a, b) || inside(b, a)
}

/// Whether a rejection of the API server is about the field at `path`: it is reported there
/// (or at a list or object around it, or a field inside it), or, from a rule on the root,
/// its message names the field.
fn names(r: &Rejection, path: &str) -> bool {
    related(&r.path, path) || (r.path.is_empty() && r.message.contains(path))
}

// ---------------------------------------------------------------------------------------------
// The table

struct Case {
    what: &'static str,
    yaml: String,
    /// The field path `validate()` (or deserialization) must report.
    path: &'static str,
    /// Why the CRD cannot check this, when it cannot.
    rust_only: Option<&'static str>,
}

fn bad(what: &'static str, path: &'static str, yaml: String) -> Case {
    Case { what, yaml, path, rust_only: None }
}

fn rust_only(what: &'static str, path: &'static str, why: &'static str, yaml: String) -> Case {
    Case { what, yaml, path, rust_only: Some(why) }
}

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn invalid_cases() -> Vec<Case> {
    let too_many_ports: String = (0..=MAX_PORTS).map(|i| format!("      - containerPort: {}\n", 1000 + i)).collect();
    let too_many_selectors: String =
        (0..=MAX_SELECTOR_EXPRESSIONS).map(|i| format!("      - {{key: k{i}, operator: Exists}}\n")).collect();
    vec![
        // ports
        bad("containerPort 0", "spec.template.ports[0].containerPort", tpl("    ports: [{containerPort: 0}]")),
        bad("containerPort 70000", "spec.template.ports[0].containerPort", tpl("    ports: [{containerPort: 70000}]")),
        bad(
            "hostPort 70000",
            "spec.template.ports[0].hostPort",
            tpl("    ports: [{containerPort: 80, hostPort: 70000}]"),
        ),
        bad("hostPort 0", "spec.template.ports[0].hostPort", tpl("    ports: [{containerPort: 80, hostPort: 0}]")),
        bad(
            "duplicate hostPort/protocol/hostIP",
            "spec.template.ports[1].hostPort",
            tpl("    ports:\n      - {containerPort: 80, hostPort: 8080}\n      - {containerPort: 81, hostPort: 8080}"),
        ),
        bad(
            "duplicate hostPort/protocol/hostIP, one protocol defaulted",
            "spec.template.ports[1].hostPort",
            tpl(
                "    ports:\n      - {containerPort: 80, hostPort: 8080, hostIP: 127.0.0.1}\n      - {containerPort: 81, hostPort: 8080, protocol: TCP, hostIP: 127.0.0.1}",
            ),
        ),
        bad(
            "duplicate containerPort/protocol",
            "spec.template.ports[1].containerPort",
            tpl("    ports:\n      - {containerPort: 80}\n      - {containerPort: 80, protocol: TCP}"),
        ),
        bad(
            "hostIP not an address",
            "spec.template.ports[0].hostIP",
            tpl("    ports: [{containerPort: 80, hostPort: 80, hostIP: localhost}]"),
        ),
        bad(
            "hostIP an IPv4-mapped IPv6 address",
            "spec.template.ports[0].hostIP",
            tpl("    ports: [{containerPort: 80, hostPort: 80, hostIP: \"::ffff:10.0.0.1\"}]"),
        ),
        bad(
            "protocol HTTP (enum)",
            "spec.template.ports[0].protocol",
            tpl("    ports: [{containerPort: 80, protocol: HTTP}]"),
        ),
        bad(
            "containerPort a string (type)",
            "spec.template.ports[0].containerPort",
            tpl("    ports: [{containerPort: http}]"),
        ),
        bad("more ports than maxItems", "spec.template.ports", tpl(&format!("    ports:\n{too_many_ports}"))),
        // replicas
        bad(
            "replicasPerHost 2 with a hostPort",
            "spec.replicasPerHost",
            cs(
                "\n  replicasPerHost: 2\n  template:\n    image: nginx\n    ports: [{containerPort: 80, hostPort: 8080}]",
            ),
        ),
        bad("replicasPerHost -1", "spec.replicasPerHost", cs("\n  replicasPerHost: -1\n  template: {image: nginx}")),
        bad(
            "replicasPerHost 1001",
            "spec.replicasPerHost",
            cs("\n  replicasPerHost: 1001\n  template: {image: nginx}"),
        ),
        bad(
            "revisionHistoryLimit 101",
            "spec.revisionHistoryLimit",
            cs("\n  revisionHistoryLimit: 101\n  template: {image: nginx}"),
        ),
        // mounts
        bad(
            "relative mount target",
            "spec.template.mounts[0].target",
            tpl("    mounts: [{type: tmpfs, target: data}]"),
        ),
        bad(
            "mount target with a trailing /",
            "spec.template.mounts[0].target",
            tpl("    mounts: [{type: tmpfs, target: /data/}]"),
        ),
        bad("mount target /", "spec.template.mounts[0].target", tpl("    mounts: [{type: tmpfs, target: /}]")),
        bad(
            "duplicate mount target",
            "spec.template.mounts[1].target",
            tpl("    mounts:\n      - {type: tmpfs, target: /tmp}\n      - {source: data, target: /tmp}"),
        ),
        bad(
            "tmpfs with a source",
            "spec.template.mounts[0].source",
            tpl("    mounts: [{type: tmpfs, source: x, target: /tmp}]"),
        ),
        bad("volume mount without source", "spec.template.mounts[0].source", tpl("    mounts: [{target: /data}]")),
        bad(
            "bind mount with a relative source",
            "spec.template.mounts[0].source",
            tpl("    mounts: [{type: bind, source: ./data, target: /data}]"),
        ),
        bad(
            "volume with an invalid name",
            "spec.template.mounts[0].source",
            tpl("    mounts: [{source: _data, target: /data}]"),
        ),
        bad(
            "mount type nfs (enum)",
            "spec.template.mounts[0].type",
            tpl("    mounts: [{type: nfs, source: x, target: /data}]"),
        ),
        // image
        bad("image with an uppercase repository", "spec.template.image", cs("\n  template: {image: example/Echo}")),
        bad("image with a space", "spec.template.image", cs("\n  template: {image: nginx latest}")),
        bad("image ':' only", "spec.template.image", cs("\n  template: {image: \":\"}")),
        bad("image with an empty tag", "spec.template.image", cs("\n  template: {image: \"nginx:\"}")),
        bad("image with a short digest", "spec.template.image", cs("\n  template: {image: \"nginx@sha256:abc\"}")),
        bad(
            "image with an uppercase digest",
            "spec.template.image",
            cs(&format!("\n  template: {{image: \"nginx@sha256:{}\"}}", DIGEST.to_uppercase())),
        ),
        bad("image with a unicode tag", "spec.template.image", cs("\n  template: {image: \"nginx:t\u{e4}g\"}")),
        rust_only(
            "image name longer than 255 characters",
            "spec.template.image",
            "a pattern cannot count the name apart from its tag and digest",
            cs(&format!("\n  template: {{image: \"{}:1\"}}", "a".repeat(256))),
        ),
        // env
        bad("env name starting with a digit", "spec.template.env[0].name", tpl("    env: [{name: 1FOO, value: x}]")),
        bad(
            "env name twice",
            "spec.template.env[1].name",
            tpl("    env: [{name: FOO, value: a}, {name: FOO, value: b}]"),
        ),
        bad(
            "env with value and valueFrom",
            "spec.template.env[0]",
            tpl("    env: [{name: FOO, value: x, valueFrom: {secretKeyRef: {name: s, key: k}}}]"),
        ),
        bad(
            "env valueFrom with neither ref",
            "spec.template.env[0].valueFrom",
            tpl("    env: [{name: FOO, valueFrom: {}}]"),
        ),
        bad(
            "env valueFrom with both refs",
            "spec.template.env[0].valueFrom",
            tpl(
                "    env: [{name: FOO, valueFrom: {secretKeyRef: {name: s, key: k}, configMapKeyRef: {name: c, key: k}}}]",
            ),
        ),
        bad(
            "env valueFrom Secret name not a DNS subdomain",
            "spec.template.env[0].valueFrom.secretKeyRef.name",
            tpl("    env: [{name: FOO, valueFrom: {secretKeyRef: {name: My_Secret, key: k}}}]"),
        ),
        bad(
            "env valueFrom empty key",
            "spec.template.env[0].valueFrom.configMapKeyRef.key",
            tpl("    env: [{name: FOO, valueFrom: {configMapKeyRef: {name: cm, key: \"\"}}}]"),
        ),
        // healthcheck
        bad("healthcheck test [CURL]", "spec.template.healthcheck.test", tpl("    healthcheck: {test: [CURL]}")),
        bad("healthcheck test [CURL, x]", "spec.template.healthcheck.test", tpl("    healthcheck: {test: [CURL, x]}")),
        bad("healthcheck test [CMD]", "spec.template.healthcheck.test", tpl("    healthcheck: {test: [CMD]}")),
        bad("healthcheck test [NONE, x]", "spec.template.healthcheck.test", tpl("    healthcheck: {test: [NONE, x]}")),
        bad("healthcheck test []", "spec.template.healthcheck.test", tpl("    healthcheck: {test: []}")),
        bad(
            "healthcheck retries 0",
            "spec.template.healthcheck.retries",
            tpl("    healthcheck: {test: [CMD, /probe], retries: 0}"),
        ),
        rust_only(
            "healthcheck interval 'soon'",
            "spec.template.healthcheck.interval",
            "durations follow humantime's grammar (5s, 1m30s, 2min, 1 hour...), which no pattern of reasonable size matches, and CEL's duration() reads Go's, a different one",
            tpl("    healthcheck: {test: [CMD, /probe], interval: soon}"),
        ),
        rust_only(
            "healthcheck timeout below 1ms",
            "spec.template.healthcheck.timeout",
            "a range of a duration (see the interval case)",
            tpl("    healthcheck: {test: [CMD, /probe], timeout: 10us}"),
        ),
        // image policy
        bad(
            "imagePolicy Always (enum)",
            "spec.imagePolicy",
            cs("\n  template: {image: nginx:1}\n  imagePolicy: Always"),
        ),
        bad(
            "imagePolicy Follow with a digest",
            "spec.imagePolicy",
            cs(&format!("\n  template: {{image: \"nginx:1@sha256:{DIGEST}\"}}\n  imagePolicy: Follow")),
        ),
        bad(
            "imagePollInterval below 10s",
            "spec.imagePollInterval",
            cs("\n  template: {image: nginx:1}\n  imagePolicy: Follow\n  imagePollInterval: 9s"),
        ),
        bad(
            "imagePollInterval 0s",
            "spec.imagePollInterval",
            cs("\n  template: {image: nginx:1}\n  imagePollInterval: 0s"),
        ),
        bad(
            "imagePollInterval 5min",
            "spec.imagePollInterval",
            cs("\n  template: {image: nginx:1}\n  imagePollInterval: 5min"),
        ),
        bad(
            "imagePollInterval 1.5h",
            "spec.imagePollInterval",
            cs("\n  template: {image: nginx:1}\n  imagePollInterval: 1.5h"),
        ),
        bad(
            "imagePollInterval a number",
            "spec.imagePollInterval",
            cs("\n  template: {image: nginx:1}\n  imagePollInterval: 300"),
        ),
        bad(
            "imagePollInterval too long",
            "spec.imagePollInterval",
            cs("\n  template: {image: nginx:1}\n  imagePollInterval: 9999999h9999999m9999999s"),
        ),
        // names
        bad("uppercase metadata.name", "metadata.name", cs_named("Web", "\n  template: {image: nginx}")),
        bad("64-character metadata.name", "metadata.name", cs_named(&"a".repeat(64), "\n  template: {image: nginx}")),
        bad(
            "uppercase DockerHost metadata.name",
            "metadata.name",
            dh_named("Host_1", "\n  endpoint: unix:///var/run/docker.sock"),
        ),
        // strategy
        bad(
            "unknown strategy type (enum)",
            "spec.strategy.type",
            cs("\n  template: {image: nginx}\n  strategy: {type: RollingUpdate}"),
        ),
        bad(
            "progressDeadlineSeconds 0",
            "spec.strategy.progressDeadlineSeconds",
            cs("\n  template: {image: nginx}\n  strategy: {progressDeadlineSeconds: 0}"),
        ),
        bad(
            "minReadySeconds -1",
            "spec.strategy.minReadySeconds",
            cs("\n  template: {image: nginx}\n  strategy: {minReadySeconds: -1}"),
        ),
        bad(
            "maxUnavailable 150%",
            "spec.strategy.maxUnavailable",
            cs("\n  template: {image: nginx}\n  strategy: {maxUnavailable: 150%}"),
        ),
        bad(
            "maxUnavailable -1",
            "spec.strategy.maxUnavailable",
            cs("\n  template: {image: nginx}\n  strategy: {maxUnavailable: -1}"),
        ),
        bad(
            "maxUnavailable \"25\" (a string without %)",
            "spec.strategy.maxUnavailable",
            cs("\n  template: {image: nginx}\n  strategy: {maxUnavailable: \"25\"}"),
        ),
        bad(
            "maxUnavailable 05%",
            "spec.strategy.maxUnavailable",
            cs("\n  template: {image: nginx}\n  strategy: {maxUnavailable: 05%}"),
        ),
        bad(
            "unknown drift policy (enum)",
            "spec.driftPolicy",
            cs("\n  template: {image: nginx}\n  driftPolicy: Ignore"),
        ),
        bad("unknown pull policy (enum)", "spec.template.imagePullPolicy", tpl("    imagePullPolicy: Sometimes")),
        // resources
        bad("cpus 'lots'", "spec.template.resources.cpus", tpl("    resources: {cpus: lots}")),
        bad("cpus with a space", "spec.template.resources.cpus", tpl("    resources: {cpus: \" 1\"}")),
        bad("cpus a number, not a string (type)", "spec.template.resources.cpus", tpl("    resources: {cpus: 2}")),
        rust_only(
            "cpus 0",
            "spec.template.resources.cpus",
            "the range (1m to 1000000 CPUs) of a decimal with a unit suffix; the pattern checks the syntax",
            tpl("    resources: {cpus: \"0\"}"),
        ),
        rust_only(
            "memory 1Ki",
            "spec.template.resources.memory",
            "Docker's minimum of 6Mi is a comparison across unit suffixes; CEL's quantity() could compare, but it reads Kubernetes' quantity grammar, which differs from berth's (it refuses the suffix K)",
            tpl("    resources: {memory: 1Ki}"),
        ),
        bad("memory 12XB", "spec.template.resources.memory", tpl("    resources: {memory: 12XB}")),
        // other template fields
        bad("empty command", "spec.template.command", tpl("    command: []")),
        bad("built-in network", "spec.template.networks[0]", tpl("    networks: [host]")),
        bad("network name with a space", "spec.template.networks[0]", tpl("    networks: [my net]")),
        bad(
            "reserved label",
            "spec.template.labels.berth.dev/revision",
            tpl("    labels: {berth.dev/revision: \"7\"}"),
        ),
        bad("stop signal TERM", "spec.template.stopSignal", tpl("    stopSignal: TERM")),
        bad("stop signal 65", "spec.template.stopSignal", tpl("    stopSignal: \"65\"")),
        bad(
            "stopGracePeriodSeconds 3601",
            "spec.template.stopGracePeriodSeconds",
            tpl("    stopGracePeriodSeconds: 3601"),
        ),
        bad("user with a space", "spec.template.user", tpl("    user: app user")),
        bad("relative workingDir", "spec.template.workingDir", tpl("    workingDir: app")),
        bad("lowercase capability", "spec.template.capAdd[0]", tpl("    capAdd: [net_admin]")),
        bad(
            "pull secret name not a DNS subdomain",
            "spec.template.imagePullSecrets[0].name",
            tpl("    imagePullSecrets: [{name: Regcred}]"),
        ),
        // hostSelector
        bad(
            "selector operator Has",
            "spec.hostSelector.matchExpressions[0].operator",
            cs("\n  template: {image: nginx}\n  hostSelector: {matchExpressions: [{key: zone, operator: Has}]}"),
        ),
        bad(
            "selector In without values",
            "spec.hostSelector.matchExpressions[0].values",
            cs("\n  template: {image: nginx}\n  hostSelector: {matchExpressions: [{key: zone, operator: In}]}"),
        ),
        bad(
            "selector Exists with values",
            "spec.hostSelector.matchExpressions[0].values",
            cs(
                "\n  template: {image: nginx}\n  hostSelector: {matchExpressions: [{key: zone, operator: Exists, values: [a]}]}",
            ),
        ),
        bad(
            "selector with an empty key",
            "spec.hostSelector.matchExpressions[0].key",
            cs("\n  template: {image: nginx}\n  hostSelector: {matchExpressions: [{key: \"\", operator: Exists}]}"),
        ),
        bad(
            "more selector expressions than maxItems",
            "spec.hostSelector.matchExpressions",
            cs(&format!(
                "\n  template: {{image: nginx}}\n  hostSelector:\n    matchExpressions:\n{too_many_selectors}"
            )),
        ),
        // DockerHost
        bad("endpoint http://x", "spec.endpoint", dh("\n  endpoint: http://x")),
        bad("tcp:// without tls and without insecure", "spec.tls", dh("\n  endpoint: tcp://10.0.0.5:2376")),
        bad("tcp:// port 70000", "spec.endpoint", dh("\n  endpoint: tcp://10.0.0.5:70000\n  insecure: true")),
        bad("tcp:// port 0", "spec.endpoint", dh("\n  endpoint: tcp://10.0.0.5:0\n  insecure: true")),
        bad("tcp:// without a port", "spec.endpoint", dh("\n  endpoint: tcp://10.0.0.5\n  insecure: true")),
        bad("tcp:// host with _", "spec.endpoint", dh("\n  endpoint: tcp://docker_1:2376\n  insecure: true")),
        bad("unix:// relative path", "spec.endpoint", dh("\n  endpoint: unix://docker.sock")),
        bad("unix:/// alone", "spec.endpoint", dh("\n  endpoint: unix:///")),
        bad(
            "empty tls.secretName",
            "spec.tls.secretName",
            dh("\n  endpoint: tcp://10.0.0.5:2376\n  tls: {secretName: \"\"}"),
        ),
        bad(
            "tls.secretName not a DNS subdomain",
            "spec.tls.secretName",
            dh("\n  endpoint: tcp://10.0.0.5:2376\n  tls: {secretName: Docker_TLS}"),
        ),
        bad(
            "relative allowed host path",
            "spec.policy.allowedHostPaths[0]",
            dh("\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowedHostPaths: [srv]}"),
        ),
        bad("insecure a string (type)", "spec.insecure", dh("\n  endpoint: tcp://10.0.0.5:2375\n  insecure: \"yes\"")),
        // host policy: paths compared by prefix must be normalised; no host network with others
        bad(
            "allowed host path with a trailing /",
            "spec.policy.allowedHostPaths[0]",
            dh("\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowedHostPaths: [/srv/]}"),
        ),
        bad(
            "allowed host path with ..",
            "spec.policy.allowedHostPaths[0]",
            dh("\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowedHostPaths: [/srv/../etc]}"),
        ),
        bad(
            "lowercase allowed capability",
            "spec.policy.allowedCapabilities[0]",
            dh("\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowedCapabilities: [net_admin]}"),
        ),
        bad(
            "bind source with ..",
            "spec.template.mounts[0].source",
            tpl("    mounts: [{type: bind, source: /srv/../etc, target: /x}]"),
        ),
        bad(
            "bind source //etc",
            "spec.template.mounts[0].source",
            tpl("    mounts: [{type: bind, source: //etc, target: /x}]"),
        ),
        bad(
            "bind source /srv/",
            "spec.template.mounts[0].source",
            tpl("    mounts: [{type: bind, source: /srv/, target: /x}]"),
        ),
        bad(
            "bind source /srv/.",
            "spec.template.mounts[0].source",
            tpl("    mounts: [{type: bind, source: /srv/., target: /x}]"),
        ),
        bad(
            "hostNetwork with networks",
            "spec.template.networks",
            tpl("    hostNetwork: true\n    networks: [backend]"),
        ),
        bad(
            "hostNetwork with a hostPort",
            "spec.template.ports[0].hostPort",
            tpl("    hostNetwork: true\n    ports: [{containerPort: 80, hostPort: 8080}]"),
        ),
        // the fields applications use
        bad("hostname with _", "spec.template.hostname", tpl("    hostname: my_host")),
        bad("hostname of 65 characters", "spec.template.hostname", tpl(&format!("    hostname: {}", "a".repeat(65)))),
        bad("hostname starting with -", "spec.template.hostname", tpl("    hostname: -web")),
        bad(
            "extraHosts ip a name",
            "spec.template.extraHosts[0].ip",
            tpl("    extraHosts: [{hostname: db, ip: database}]"),
        ),
        bad(
            "extraHosts hostname with a space",
            "spec.template.extraHosts[0].hostname",
            tpl("    extraHosts: [{hostname: \"db host\", ip: 10.0.0.1}]"),
        ),
        bad("dns a name", "spec.template.dns[0]", tpl("    dns: [dns.google]")),
        bad(
            "more dns servers than maxItems",
            "spec.template.dns",
            tpl(&format!("    dns: [{}]", ["1.1.1.1"; 9].join(", "))),
        ),
        bad("dnsSearch starting with -", "spec.template.dnsSearch[0]", tpl("    dnsSearch: [-corp.example]")),
        bad(
            "ulimit name nofiles",
            "spec.template.ulimits[0].name",
            tpl("    ulimits: [{name: nofiles, soft: 1024, hard: 2048}]"),
        ),
        bad(
            "ulimit soft above hard",
            "spec.template.ulimits[0].soft",
            tpl("    ulimits: [{name: nofile, soft: 4096, hard: 1024}]"),
        ),
        bad(
            "ulimit soft unlimited, hard not",
            "spec.template.ulimits[0].soft",
            tpl("    ulimits: [{name: memlock, soft: -1, hard: 1024}]"),
        ),
        bad("ulimit hard -2", "spec.template.ulimits[0].hard", tpl("    ulimits: [{name: core, soft: -1, hard: -2}]")),
        bad(
            "ulimit twice",
            "spec.template.ulimits[1].name",
            tpl("    ulimits: [{name: nproc, soft: 1, hard: 1}, {name: nproc, soft: 2, hard: 2}]"),
        ),
        bad("shmSize negative", "spec.template.shmSize", tpl("    shmSize: -64Mi")),
        bad("shmSize 0", "spec.template.shmSize", tpl("    shmSize: 0Mi")),
        bad("shmSize 64MB", "spec.template.shmSize", tpl("    shmSize: 64MB")),
        bad("shmSize with ipcMode none", "spec.template.shmSize", tpl("    shmSize: 64Mi\n    ipcMode: none")),
        bad("logging driver with a space", "spec.template.logging.driver", tpl("    logging: {driver: json file}")),
        bad("logging driver in uppercase", "spec.template.logging.driver", tpl("    logging: {driver: JSON-File}")),
        bad("logging without a driver", "spec.template.logging", tpl("    logging: {options: {max-size: 10m}}")),
        rust_only(
            "logging option key with a space",
            "spec.template.logging.options.max size",
            "a map's keys have no maxLength, and a pattern over them exceeds the API server's CEL cost budget",
            tpl("    logging: {driver: json-file, options: {max size: 10m}}"),
        ),
        bad(
            "sysctl vm.swappiness (not namespaced)",
            "spec.template.sysctls[0].name",
            tpl("    sysctls: [{name: vm.swappiness, value: \"10\"}]"),
        ),
        bad(
            "sysctl kernel.hostname (not settable)",
            "spec.template.sysctls[0].name",
            tpl("    sysctls: [{name: kernel.hostname, value: web}]"),
        ),
        bad(
            "sysctl name with ..",
            "spec.template.sysctls[0].name",
            tpl("    sysctls: [{name: net..core, value: \"1\"}]"),
        ),
        bad(
            "sysctl value on two lines",
            "spec.template.sysctls[0].value",
            tpl("    sysctls: [{name: net.core.somaxconn, value: \"1\\n2\"}]"),
        ),
        bad(
            "sysctl value empty",
            "spec.template.sysctls[0].value",
            tpl("    sysctls: [{name: net.core.somaxconn, value: \"\"}]"),
        ),
        bad(
            "sysctl twice",
            "spec.template.sysctls[1].name",
            tpl(
                "    sysctls:\n      - {name: net.core.somaxconn, value: \"1\"}\n      - {name: net.core.somaxconn, value: \"2\"}",
            ),
        ),
        bad(
            "net.* sysctl on the host's network",
            "spec.template.sysctls[0].name",
            tpl("    hostNetwork: true\n    sysctls: [{name: net.core.somaxconn, value: \"1024\"}]"),
        ),
        bad(
            "IPC sysctl with the host's IPC namespace",
            "spec.template.sysctls[0].name",
            tpl("    ipcMode: host\n    sysctls: [{name: kernel.shmmax, value: \"1000000\"}]"),
        ),
        bad("restartMaxRetries with UnlessStopped", "spec.template.restartMaxRetries", tpl("    restartMaxRetries: 3")),
        bad(
            "restartMaxRetries 0",
            "spec.template.restartMaxRetries",
            tpl("    restartPolicy: OnFailure\n    restartMaxRetries: 0"),
        ),
        bad("expose 70000", "spec.template.expose[0]", tpl("    expose: [70000]")),
        bad("expose \"8080/http\"", "spec.template.expose[0]", tpl("    expose: [\"8080/http\"]")),
        bad("expose \"0\"", "spec.template.expose[0]", tpl("    expose: [\"0\"]")),
        bad(
            "device hostPath relative",
            "spec.template.devices[0].hostPath",
            tpl("    devices: [{hostPath: dev/fuse}]"),
        ),
        bad(
            "device hostPath with ..",
            "spec.template.devices[0].hostPath",
            tpl("    devices: [{hostPath: /dev/../etc/shadow}]"),
        ),
        bad(
            "device containerPath relative",
            "spec.template.devices[0].containerPath",
            tpl("    devices: [{hostPath: /dev/fuse, containerPath: fuse}]"),
        ),
        bad(
            "device permissions rwx",
            "spec.template.devices[0].permissions",
            tpl("    devices: [{hostPath: /dev/fuse, permissions: rwx}]"),
        ),
        bad("securityOpt privileged=true", "spec.template.securityOpt[0]", tpl("    securityOpt: [privileged=true]")),
        bad(
            "securityOpt seccomp:unconfined",
            "spec.template.securityOpt[0]",
            tpl("    securityOpt: [\"seccomp:unconfined\"]"),
        ),
        rust_only(
            "securityOpt seccomp profile not JSON",
            "spec.template.securityOpt[0]",
            "a pattern cannot parse JSON",
            tpl("    securityOpt: [\"seccomp={not json\"]"),
        ),
        bad("pidMode shared", "spec.template.pidMode", tpl("    pidMode: shared")),
        bad("pidMode private", "spec.template.pidMode", tpl("    pidMode: private")),
        bad(
            "pidMode container with hostPID",
            "spec.template.pidMode",
            tpl("    hostPID: true\n    pidMode: container:db"),
        ),
        bad("ipcMode sharable", "spec.template.ipcMode", tpl("    ipcMode: sharable")),
        bad("ipcMode container without a name", "spec.template.ipcMode", tpl("    ipcMode: \"container:\"")),
        bad(
            "tmpfs options on a volume",
            "spec.template.mounts[0].tmpfs",
            tpl("    mounts: [{source: data, target: /data, tmpfs: {size: 64Mi}}]"),
        ),
        bad(
            "tmpfs mode 999",
            "spec.template.mounts[0].tmpfs.mode",
            tpl("    mounts: [{type: tmpfs, target: /tmp, tmpfs: {mode: \"999\"}}]"),
        ),
        bad(
            "tmpfs mode a number",
            "spec.template.mounts[0].tmpfs.mode",
            tpl("    mounts: [{type: tmpfs, target: /tmp, tmpfs: {mode: 700}}]"),
        ),
        bad(
            "tmpfs size 0",
            "spec.template.mounts[0].tmpfs.size",
            tpl("    mounts: [{type: tmpfs, target: /tmp, tmpfs: {size: \"0\"}}]"),
        ),
        bad(
            "relative allowed device",
            "spec.policy.allowedDevices[0]",
            dh("\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowedDevices: [dev/fuse]}"),
        ),
        bad(
            "allowed security option privileged",
            "spec.policy.allowedSecurityOpts[0]",
            dh("\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowedSecurityOpts: [privileged]}"),
        ),
        bad(
            "allowed sysctl with * inside",
            "spec.policy.allowedSysctls[0]",
            dh("\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowedSysctls: [net.*.somaxconn]}"),
        ),
        // images built by berth
        bad(
            "both image and imageFrom",
            "spec.template.image",
            cs("\n  template: {image: nginx:1.27, imageFrom: {name: web}}"),
        ),
        bad("neither image nor imageFrom", "spec.template.image", cs("\n  template: {command: [x]}")),
        bad("imageFrom a bad name", "spec.template.imageFrom.name", cs("\n  template: {imageFrom: {name: Web_1}}")),
        // tasks and start order
        bad(
            "a Task restarted always",
            "spec.template.restartPolicy",
            cs("\n  mode: Task\n  template: {image: nginx:1.27, restartPolicy: Always}"),
        ),
        bad(
            "a Task restarted unless stopped",
            "spec.template.restartPolicy",
            cs("\n  mode: Task\n  template: {image: nginx:1.27, restartPolicy: UnlessStopped}"),
        ),
        bad(
            "a Task rolled back",
            "spec.strategy.autoRollback",
            cs("\n  mode: Task\n  strategy: {autoRollback: true}\n  template: {image: nginx:1.27}"),
        ),
        bad("mode Job (enum)", "spec.mode", cs("\n  mode: Job\n  template: {image: nginx:1.27}")),
        bad(
            "a set that depends on itself",
            "spec.dependsOn",
            cs("\n  dependsOn: [{name: web}]\n  template: {image: nginx:1.27}"),
        ),
        bad(
            "a dependency named twice",
            "spec.dependsOn",
            cs("\n  dependsOn: [{name: db}, {name: db, condition: Ready}]\n  template: {image: nginx:1.27}"),
        ),
        bad(
            "a dependency that is not a set name",
            "spec.dependsOn[0].name",
            cs("\n  dependsOn: [{name: Db_1}]\n  template: {image: nginx:1.27}"),
        ),
        bad(
            "a dependency condition Healthy (enum)",
            "spec.dependsOn[0].condition",
            cs("\n  dependsOn: [{name: db, condition: Healthy}]\n  template: {image: nginx:1.27}"),
        ),
        bad(
            "allowHostIPC a string (type)",
            "spec.policy.allowHostIPC",
            dh("\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowHostIPC: \"yes\"}"),
        ),
    ]
}

fn valid_edge_cases() -> Vec<(&'static str, String)> {
    let max_ports: String = (0..MAX_PORTS).map(|i| format!("      - containerPort: {}\n", 1000 + i)).collect();
    vec![
        (
            "every field applications use",
            tpl(
                "    hostname: web-1.shop.internal\n    extraHosts: [{hostname: db.local, ip: 10.0.0.5}, {hostname: host.docker.internal, ip: host-gateway}, {hostname: v6, ip: \"fd00::1\"}]\n    dns: [10.0.0.2, \"2001:4860:4860::8888\"]\n    dnsSearch: [shop.internal, Example.COM]\n    ulimits: [{name: nofile, soft: 1024, hard: 4096}, {name: memlock, soft: -1, hard: -1}, {name: core, soft: 0, hard: -1}]\n    shmSize: 256Mi\n    ipcMode: shareable\n    init: true\n    tty: true\n    stdinOpen: true\n    logging: {driver: json-file, options: {max-size: 10m, max-file: \"3\", tag: \"{{.Name}}\"}}\n    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: \"80\"}, {name: net.ipv4.ip_local_port_range, value: \"1024 65000\"}, {name: kernel.shmmax, value: \"68719476736\"}, {name: fs.mqueue.msg_max, value: \"100\"}, {name: kernel.domainname, value: shop}]\n    restartPolicy: OnFailure\n    restartMaxRetries: 5\n    expose: [8080, \"9090\", \"53/udp\", \"3868/sctp\", 65535]\n    devices: [{hostPath: /dev/fuse}, {hostPath: /dev/snd, containerPath: /dev/sound, permissions: rw}]\n    securityOpt: [no-new-privileges, \"no-new-privileges:true\", no-new-privileges=false, seccomp=unconfined, \"seccomp={\\\"defaultAction\\\": \\\"SCMP_ACT_ALLOW\\\"}\", apparmor=unconfined, label=disable, \"label=type:svirt_apache_t\"]\n    pidMode: container:db\n    mounts: [{type: tmpfs, target: /run, tmpfs: {size: 64Mi, mode: \"1777\"}}, {type: tmpfs, target: /cache, tmpfs: {mode: \"0700\"}}]",
            ),
        ),
        ("pidMode host with hostPID", tpl("    hostPID: true\n    pidMode: host")),
        (
            "a Task that retries on failure, depended on by name and condition",
            cs(
                "\n  mode: Task\n  dependsOn: [{name: db, condition: Ready}, {name: cache}]\n  template: {image: nginx:1.27, restartPolicy: OnFailure, restartMaxRetries: 3}",
            ),
        ),
        ("a set that runs an Image", cs("\n  template: {imageFrom: {name: site}}")),
        ("a Task that never restarts", cs("\n  mode: Task\n  template: {image: nginx:1.27, restartPolicy: Never}")),
        (
            "the host's IPC namespace, net sysctls and container PID",
            tpl(
                "    ipcMode: host\n    pidMode: container:4f1c2a\n    sysctls: [{name: net.core.somaxconn, value: \"1024\"}]",
            ),
        ),
        ("ipcMode container and none", tpl("    ipcMode: container:db.0_x-y")),
        ("ipcMode none", tpl("    ipcMode: none")),
        ("shmSize with ipcMode private", tpl("    shmSize: \"1\"\n    ipcMode: private")),
        ("logging none", tpl("    logging: {driver: none}")),
        (
            "logging by a plugin",
            tpl("    logging: {driver: \"grafana/loki:2.9.2\", options: {loki-url: \"http://loki:3100\"}}"),
        ),
        (
            "IPC sysctls on the host's network",
            tpl("    hostNetwork: true\n    sysctls: [{name: kernel.shm_rmid_forced, value: \"1\"}]"),
        ),
        (
            "DockerHost granting the fields applications use",
            dh(
                "\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowHostIPC: true, allowContainerNamespaces: true, allowedDevices: [/dev/fuse, /dev], allowedSecurityOpts: [seccomp, apparmor=unconfined, label=disable, \"seccomp={}\"], allowedSysctls: [net.core.somaxconn, kernel.msg*, net.core.*, \"*\"]}",
            ),
        ),
        (
            "no hostPort, 3 replicas per host",
            cs("\n  replicasPerHost: 3\n  template:\n    image: nginx\n    ports: [{containerPort: 80}]"),
        ),
        (
            "replicasPerHost 0 with a hostPort",
            cs("\n  replicasPerHost: 0\n  template:\n    image: nginx\n    ports: [{containerPort: 80, hostPort: 80}]"),
        ),
        ("tmpfs without source", tpl("    mounts: [{type: tmpfs, target: /tmp}]")),
        (
            "volume and bind mounts",
            tpl(
                "    mounts:\n      - {source: data_1.x-y, target: /data}\n      - {type: bind, source: /srv/www, target: /www, readOnly: true}",
            ),
        ),
        (
            "same hostPort, different protocols",
            tpl(
                "    ports:\n      - {containerPort: 53, hostPort: 53}\n      - {containerPort: 53, hostPort: 53, protocol: UDP}",
            ),
        ),
        (
            "same hostPort, different hostIPs",
            tpl(
                "    ports:\n      - {containerPort: 80, hostPort: 80, hostIP: 127.0.0.1}\n      - {containerPort: 81, hostPort: 80, hostIP: \"::1\"}",
            ),
        ),
        ("as many ports as maxItems", tpl(&format!("    ports:\n{max_ports}"))),
        ("image with a registry and port", cs("\n  template: {image: \"localhost:5000/team/app:1.0\"}")),
        (
            "image with an uppercase registry and a digest",
            cs(&format!("\n  template: {{image: \"Registry.Example.com/app@sha256:{DIGEST}\"}}")),
        ),
        (
            "image with tag and sha512 digest",
            cs(&format!("\n  template: {{image: \"ghcr.io/org/app:v1.2_beta-3@sha512:{DIGEST}{DIGEST}\"}}")),
        ),
        ("image with separators", cs("\n  template: {image: \"a--b/c__d.e_f:latest\"}")),
        ("healthcheck [NONE]", tpl("    healthcheck: {test: [NONE]}")),
        (
            "healthcheck CMD-SHELL",
            tpl(
                "    healthcheck: {test: [CMD-SHELL, curl -f localhost], interval: 1m30s, timeout: 500ms, startPeriod: 2s, retries: 100}",
            ),
        ),
        (
            "env from Secret and ConfigMap",
            tpl(
                "    env:\n      - {name: _A.b-1, value: x}\n      - {name: B, valueFrom: {secretKeyRef: {name: s.example, key: k}}}\n      - {name: C, valueFrom: {configMapKeyRef: {name: cm, key: k, optional: true}}}",
            ),
        ),
        (
            "maxUnavailable 0% and a deadline",
            cs(
                "\n  template: {image: nginx}\n  strategy: {type: StopFirst, maxUnavailable: 0%, progressDeadlineSeconds: 1, minReadySeconds: 0}",
            ),
        ),
        ("maxUnavailable 100%", cs("\n  template: {image: nginx}\n  strategy: {maxUnavailable: 100%}")),
        ("maxUnavailable 3", cs("\n  template: {image: nginx}\n  strategy: {maxUnavailable: 3}")),
        ("resources", tpl("    resources: {cpus: 500m, memory: 256Mi}")),
        ("resources as plain numbers", tpl("    resources: {cpus: \"1.5\", memory: \"8388608\"}")),
        (
            "everything else",
            tpl(
                "    command: [/app]\n    args: []\n    networks: [backend, my_net.1]\n    labels: {team: web, example.com/tier: front}\n    stopSignal: SIGRTMIN+3\n    stopGracePeriodSeconds: 0\n    user: \"1000:1000\"\n    workingDir: /srv\n    capAdd: [NET_ADMIN]\n    capDrop: [ALL]\n    imagePullSecrets: [{name: regcred}]\n    restartPolicy: OnFailure\n    privileged: true\n    readOnlyRootFilesystem: true",
            ),
        ),
        ("stop signal as a number", tpl("    stopSignal: \"9\"")),
        (
            "host selector",
            cs(
                "\n  template: {image: nginx}\n  hostSelector:\n    matchLabels: {zone: a}\n    matchExpressions:\n      - {key: gpu, operator: Exists}\n      - {key: zone, operator: NotIn, values: [b, c]}\n      - {key: disk, operator: DoesNotExist, values: []}",
            ),
        ),
        (
            "imagePolicy Follow every 10s",
            cs("\n  template: {image: nginx:1}\n  imagePolicy: Follow\n  imagePollInterval: 10s"),
        ),
        (
            "imagePollInterval 1h30m",
            cs("\n  template: {image: nginx:1}\n  imagePolicy: Follow\n  imagePollInterval: 1h30m"),
        ),
        (
            "imagePolicy Pin with a digest",
            cs(&format!(
                "\n  template: {{image: \"nginx@sha256:{DIGEST}\"}}\n  imagePolicy: Pin\n  imagePollInterval: 1m"
            )),
        ),
        ("a 63-character name", cs_named(&"a".repeat(63), "\n  template: {image: nginx}")),
        ("DockerHost on the local socket", dh("\n  endpoint: unix:///var/run/docker.sock")),
        (
            "DockerHost over TLS",
            dh(
                "\n  endpoint: tcp://docker-1.example.com:2376\n  tls: {secretName: docker-1.tls}\n  unschedulable: true",
            ),
        ),
        (
            "DockerHost over plain TCP",
            dh(
                "\n  endpoint: \"tcp://[::1]:65535\"\n  insecure: true\n  policy: {allowPrivileged: true, allowedHostPaths: [/srv]}",
            ),
        ),
        (
            "DockerHost granting everything",
            dh(
                "\n  endpoint: unix:///var/run/docker.sock\n  policy: {allowPrivileged: true, allowHostNetwork: true, allowHostPID: true, allowedCapabilities: [ALL, NET_ADMIN, CAP_SYS_TIME], allowedHostPaths: [/, /srv/data, /srv/.hidden, /srv/...]}",
            ),
        ),
        (
            "host network and PID, a container port, a bind of /",
            tpl(
                "    hostNetwork: true\n    hostPID: true\n    ports: [{containerPort: 8080}]\n    mounts: [{type: bind, source: /, target: /host, readOnly: true}]",
            ),
        ),
    ]
}

/// Every ContainerSet and DockerHost in `examples/*.yaml`.
fn examples() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for (i, doc) in docs.into_iter().enumerate() {
            if matches!(doc["kind"].as_str(), Some("ContainerSet" | "DockerHost")) {
                out.push((format!("{} document {}", file.display(), i + 1), doc));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn invalid_objects_are_rejected_by_both_at_the_same_field() {
    let server = ApiServer::new();
    let cases = invalid_cases();
    assert!(cases.len() >= 24);
    let mut failures = Vec::new();
    for case in &cases {
        let object = parse(&case.yaml);
        let mut problems = Vec::new();

        let rust = rust_errors(&object);
        if !rust.iter().any(|e| e.path == case.path) {
            problems.push(format!("Rust does not report {}", case.path));
        }
        for e in rust.iter().filter(|e| !related(&e.path, case.path)) {
            problems.push(format!("Rust reports an unrelated problem (the case is not minimal): {e}"));
        }

        match (server.create(&object), case.rust_only) {
            (Ok(_), None) => problems.push("the CRD accepts it".into()),
            (Ok(_), Some(_)) => {}
            (Err(rejections), None) => {
                if !rejections.iter().any(|r| names(r, case.path)) {
                    problems.push(format!("the CRD rejects it, but not at {}", case.path));
                }
                for r in rejections.iter().filter(|r| !names(r, case.path) && !r.follows_schema_error) {
                    problems.push(format!("the CRD rejects an unrelated field: {r}"));
                }
            }
            (Err(rejections), Some(_)) => problems.push(format!(
                "marked Rust-only, but the CRD rejects it too (drop the mark): {}",
                rejections.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            )),
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({}):\n    {}\n    Rust: {:?}\n    CRD: {:?}",
                case.what,
                case.path,
                problems.join("\n    "),
                rust.iter().map(ToString::to_string).collect::<Vec<_>>(),
                server.create(&object).err().unwrap_or_default().iter().map(ToString::to_string).collect::<Vec<_>>(),
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases disagree:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Valid objects pass both, and the API server's defaults are serde's defaults: the object the
/// operator reads back from the server is the object the CLI read from the file.
fn assert_valid(server: &ApiServer, what: &str, object: &Value) -> Result<(), String> {
    let rust = rust_errors(object);
    if !rust.is_empty() {
        return Err(format!("{what}: Rust rejects it: {:?}", rust.iter().map(ToString::to_string).collect::<Vec<_>>()));
    }
    let defaulted = server.create(object).map_err(|r| {
        format!("{what}: the CRD rejects it: {:?}", r.iter().map(ToString::to_string).collect::<Vec<_>>())
    })?;
    let same = match object["kind"].as_str() {
        Some("ContainerSet") => {
            let (a, b): (ContainerSet, ContainerSet) =
                (serde_json::from_value(object.clone()).unwrap(), serde_json::from_value(defaulted).unwrap());
            a.spec == b.spec
        }
        _ => {
            let (a, b): (DockerHost, DockerHost) =
                (serde_json::from_value(object.clone()).unwrap(), serde_json::from_value(defaulted).unwrap());
            a.spec == b.spec
        }
    };
    if !same {
        return Err(format!("{what}: the CRD's defaults differ from serde's"));
    }
    Ok(())
}

#[test]
fn examples_pass_both() {
    let server = ApiServer::new();
    let examples = examples();
    assert!(!examples.is_empty(), "examples/*.yaml hold ContainerSets (at least examples/echo.yaml)");
    let failures: Vec<String> = examples.iter().filter_map(|(what, o)| assert_valid(&server, what, o).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_edge_cases_pass_both() {
    let server = ApiServer::new();
    let failures: Vec<String> =
        valid_edge_cases().iter().filter_map(|(what, yaml)| assert_valid(&server, what, &parse(yaml)).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rust_error_names_its_field() {
    for case in invalid_cases() {
        for e in rust_errors(&parse(&case.yaml)) {
            assert!(!e.path.is_empty() && e.to_string().starts_with(&format!("{}: ", e.path)), "{}: {e}", case.what);
        }
    }
}

/// What the API server checks when the CRD itself is applied.
#[test]
fn crds_pass_the_api_servers_own_checks() {
    let server = ApiServer::new();
    let mut failures = Vec::new();
    for (kind, schema) in server.schemas() {
        let compiled = kube_cel::compile_schema(schema);
        for e in compiled.compilation_errors() {
            failures.push(format!("{kind}: a rule does not compile: {e}"));
        }
        let mut total: u64 = 0;
        for r in support::rules(schema) {
            let here = format!("{kind} {} {:?}", r.path, r.rule);
            let allowed: &[&str] = if r.path.is_empty() {
                &["self", "oldSelf", "apiVersion", "apiGroup", "kind"]
            } else {
                &["self", "oldSelf"]
            };
            match support::free_variables(&r.rule) {
                Ok(vars) => {
                    for v in vars.iter().filter(|v| !allowed.contains(&v.as_str())) {
                        failures.push(format!("{here}: a CRD rule cannot read {v:?}"));
                    }
                }
                Err(e) => failures.push(format!("{here}: {e}")),
            }
            // fieldPath must name a property of the node's schema.
            if let Some(fp) = &r.field_path {
                let mut node = &r.node;
                for step in fp.trim_start_matches('.').split('.') {
                    match node.get("properties").and_then(|p| p.get(step)) {
                        Some(n) => node = n,
                        None => {
                            failures.push(format!("{here}: fieldPath {fp:?} is not in the schema"));
                            break;
                        }
                    }
                }
            }
            match support::estimate_cost(&r.rule, &r.node) {
                Ok(cost) => {
                    eprintln!(
                        "{kind} {}: cost {cost} x {} = {}",
                        r.path,
                        r.cardinality,
                        cost.saturating_mul(r.cardinality)
                    );
                    if cost > RULE_COST_LIMIT {
                        failures.push(format!("{here}: estimated cost {cost} exceeds {RULE_COST_LIMIT}"));
                    }
                    total = total.saturating_add(cost.saturating_mul(r.cardinality));
                }
                Err(e) => failures.push(format!("{here}: {e}")),
            }
        }
        eprintln!("{kind}: total estimated cost {total}");
        if total > CRD_COST_LIMIT {
            failures.push(format!("{kind}: total estimated cost {total} exceeds {CRD_COST_LIMIT}"));
        }
        // Every default is valid where it stands.
        check_defaults(kind, schema, "", &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The patterns mean the same to Go's RE2 (the API server), Rust's `regex` (validate.rs) and
/// ECMA-262 (the `jsonschema` crate here): no `\w`, `\d`, `\s`, `\b` and no `.` outside a
/// class, whose meanings differ (Unicode or not, which line breaks).
#[test]
fn patterns_avoid_constructs_whose_meaning_differs_between_engines() {
    fn collect(schema: &Value, out: &mut Vec<String>) {
        match schema {
            Value::Object(m) => {
                if let Some(Value::String(p)) = m.get("pattern") {
                    out.push(p.clone());
                }
                m.values().for_each(|v| collect(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let server = ApiServer::new();
    let mut patterns = Vec::new();
    for (_, schema) in server.schemas() {
        collect(schema, &mut patterns);
    }
    assert!(patterns.len() > 10);
    for p in &patterns {
        let mut chars = p.chars();
        let mut in_class = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let next = chars.next().unwrap_or_default();
                    assert!(!"wWdDsSbB".contains(next), "{p}: \\{next}");
                }
                '[' => in_class = true,
                ']' => in_class = false,
                '.' => assert!(in_class, "{p}: '.' outside a class"),
                _ => {}
            }
        }
        regex::Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}

fn check_defaults(kind: &str, schema: &Value, path: &str, failures: &mut Vec<String>) {
    if let Some(default) = schema.get("default") {
        let mut value = default.clone();
        support::apply_defaults(schema, &mut value);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(false)
            .build(&support::to_json_schema(schema))
            .unwrap();
        for e in validator.iter_errors(&value) {
            failures.push(format!("{kind} {path}: the default {default} is invalid: {e}"));
        }
        if let Err(errors) = kube_cel::Validator::new().validate(schema, &value, None) {
            for e in errors.iter() {
                failures.push(format!("{kind} {path}: the default {default} breaks a rule: {e}"));
            }
        }
    }
    for (k, v) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        check_defaults(kind, v, &format!("{path}.{k}"), failures);
    }
    if let Some(items) = schema.get("items") {
        check_defaults(kind, items, &format!("{path}[*]"), failures);
    }
}
