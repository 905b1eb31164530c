//! Invalid input is refused before any host is touched.
//!
//! Every case is a YAML file in a temp dir, run through `berth apply -f FILE` with
//! `DOCKER_HOST` (and, where the input declares a DockerHost, its endpoint) pointing at a
//! fresh counting proxy. Each must exit 1, name the file, the object and the field path on
//! stderr with a distinctive word of the message, and leave the proxy with zero requests:
//! not even a GET.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_tests::{BerthOutput, CountingProxy, NamespaceGuard, berth, local_socket_path};

/// One invalid input and what berth must say about it.
struct Case {
    name: &'static str,
    /// The file's content; `None`: the path does not exist.
    yaml: Option<String>,
    /// `ContainerSet ns/name` or `DockerHost ns/name`, when the problem belongs to an object.
    object: Option<String>,
    /// The field path, when the problem belongs to a field.
    field: Option<&'static str>,
    /// A distinctive part of the message.
    word: &'static str,
}

/// A ContainerSet `name` in `ns`; `spec_extra` goes under `spec:` (2 spaces),
/// `template_extra` under `template:` (4 spaces).
fn set_yaml(ns: &str, name: &str, spec_extra: &str, template_extra: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\n\
         kind: ContainerSet\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n{spec_extra}  template:\n    image: example/echo:latest\n    imagePullPolicy: Never\n{template_extra}"
    )
}

fn host_yaml(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\n\
         kind: DockerHost\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n{spec}"
    )
}

fn secret_yaml(ns: &str, name: &str, ty: &str, string_data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\ntype: {ty}\nstringData:\n{string_data}"
    )
}

fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}

/// The cases. `endpoint` is the proxy's `unix://` address, for DockerHosts that must be
/// valid (so a touch of the host would show in the proxy's count).
fn cases(ns: &str, endpoint: &str) -> Vec<Case> {
    let set = |name: &str| Some(format!("ContainerSet {ns}/{name}"));
    let host = |name: &str| Some(format!("DockerHost {ns}/{name}"));
    let good_host = host_yaml(ns, "h", &format!("  endpoint: {endpoint}\n"));
    vec![
        Case {
            name: "unknown field typo",
            yaml: Some(set_yaml(ns, "typo", "  replicaPerHost: 2\n", "")),
            object: set("typo"),
            field: Some("spec.replicaPerHost"),
            word: "unknown field",
        },
        Case {
            name: "wrong type",
            yaml: Some(set_yaml(ns, "wrongtype", "  replicasPerHost: \"two\"\n", "")),
            object: set("wrongtype"),
            field: Some("spec.replicasPerHost"),
            word: "invalid type",
        },
        Case {
            name: "containerPort out of range",
            yaml: Some(set_yaml(ns, "cport", "", "    ports:\n      - containerPort: 70000\n")),
            object: set("cport"),
            field: Some("spec.template.ports[0].containerPort"),
            word: "between 1 and 65535",
        },
        Case {
            name: "hostPort 0",
            yaml: Some(set_yaml(ns, "hport", "", "    ports:\n      - containerPort: 8080\n        hostPort: 0\n")),
            object: set("hport"),
            field: Some("spec.template.ports[0].hostPort"),
            word: "between 1 and 65535",
        },
        Case {
            name: "duplicate hostPort",
            yaml: Some(set_yaml(
                ns,
                "duphport",
                "",
                "    ports:\n      - containerPort: 8080\n        hostPort: 9000\n      - containerPort: 8081\n        hostPort: 9000\n",
            )),
            object: set("duphport"),
            field: Some("spec.template.ports[1].hostPort"),
            word: "already published by ports[0]",
        },
        Case {
            name: "two replicas with a hostPort",
            yaml: Some(set_yaml(
                ns,
                "replhport",
                "  replicasPerHost: 2\n",
                "    ports:\n      - containerPort: 8080\n        hostPort: 9000\n",
            )),
            object: set("replhport"),
            field: Some("spec.replicasPerHost"),
            word: "at most one replica per host",
        },
        Case {
            name: "relative mount target",
            yaml: Some(set_yaml(
                ns,
                "reltarget",
                "",
                "    mounts:\n      - type: volume\n        source: data\n        target: data\n",
            )),
            object: set("reltarget"),
            field: Some("spec.template.mounts[0].target"),
            word: "must be an absolute path",
        },
        Case {
            name: "tmpfs with a source",
            yaml: Some(set_yaml(
                ns,
                "tmpfssrc",
                "",
                "    mounts:\n      - type: tmpfs\n        source: data\n        target: /tmp\n",
            )),
            object: set("tmpfssrc"),
            field: Some("spec.template.mounts[0].source"),
            word: "not allowed for a tmpfs",
        },
        Case {
            name: "bind mount with a relative source",
            yaml: Some(set_yaml(
                ns,
                "relbind",
                "",
                "    mounts:\n      - type: bind\n        source: etc/config\n        target: /config\n",
            )),
            object: set("relbind"),
            field: Some("spec.template.mounts[0].source"),
            word: "absolute host path",
        },
        Case {
            name: "bad volume name",
            yaml: Some(set_yaml(
                ns,
                "badvol",
                "",
                "    mounts:\n      - type: volume\n        source: \"-bad/vol\"\n        target: /data\n",
            )),
            object: set("badvol"),
            field: Some("spec.template.mounts[0].source"),
            word: "not a valid volume name",
        },
        Case {
            name: "bad image reference",
            yaml: Some(
                set_yaml(ns, "badimage", "", "").replace("image: example/echo:latest", "image: \"Example/Echo::v1\""),
            ),
            object: set("badimage"),
            field: Some("spec.template.image"),
            word: "not a valid image reference",
        },
        Case {
            name: "env name starting with a digit",
            yaml: Some(set_yaml(ns, "envdigit", "", "    env:\n      - name: 1GREETING\n        value: hi\n")),
            object: set("envdigit"),
            field: Some("spec.template.env[0].name"),
            word: "not a valid environment variable name",
        },
        Case {
            name: "env value and valueFrom",
            yaml: Some(docs(&[
                secret_yaml(ns, "creds", "Opaque", "  token: abc\n"),
                set_yaml(
                    ns,
                    "envboth",
                    "",
                    "    env:\n      - name: TOKEN\n        value: plain\n        valueFrom:\n          secretKeyRef: {name: creds, key: token}\n",
                ),
            ])),
            object: set("envboth"),
            field: Some("spec.template.env[0]"),
            word: "mutually exclusive",
        },
        Case {
            name: "secretKeyRef to a Secret not in the input",
            yaml: Some(set_yaml(
                ns,
                "nosecret",
                "",
                "    env:\n      - name: TOKEN\n        valueFrom:\n          secretKeyRef: {name: absent, key: token}\n",
            )),
            object: set("nosecret"),
            field: Some("spec.template.env[0].valueFrom.secretKeyRef"),
            word: "is not in the input",
        },
        Case {
            name: "key missing in a Secret",
            yaml: Some(docs(&[
                secret_yaml(ns, "creds", "Opaque", "  token: abc\n"),
                set_yaml(
                    ns,
                    "nokey",
                    "",
                    "    env:\n      - name: TOKEN\n        valueFrom:\n          secretKeyRef: {name: creds, key: password}\n",
                ),
            ])),
            object: set("nokey"),
            field: Some("spec.template.env[0].valueFrom.secretKeyRef"),
            word: "has no key \"password\"",
        },
        Case {
            name: "imagePullSecrets of the wrong type",
            yaml: Some(docs(&[
                secret_yaml(ns, "pull", "Opaque", "  .dockerconfigjson: '{\"auths\":{}}'\n"),
                set_yaml(ns, "pulltype", "", "    imagePullSecrets:\n      - name: pull\n"),
            ])),
            object: set("pulltype"),
            field: Some("spec.template.imagePullSecrets[0]"),
            word: "expected \"kubernetes.io/dockerconfigjson\"",
        },
        Case {
            name: "healthcheck test without CMD",
            yaml: Some(set_yaml(ns, "hctest", "", "    healthcheck:\n      test: [\"CURL\", \"x\"]\n")),
            object: set("hctest"),
            field: Some("spec.template.healthcheck.test"),
            word: "CMD-SHELL",
        },
        Case {
            name: "bad duration",
            yaml: Some(set_yaml(
                ns,
                "hcinterval",
                "",
                "    healthcheck:\n      test: [\"CMD\", \"/echo\", \"--probe\"]\n      interval: soon\n",
            )),
            object: set("hcinterval"),
            field: Some("spec.template.healthcheck.interval"),
            word: "not a duration",
        },
        Case {
            name: "cpus not a quantity",
            yaml: Some(set_yaml(ns, "cpus", "", "    resources:\n      cpus: lots\n")),
            object: set("cpus"),
            field: Some("spec.template.resources.cpus"),
            word: "not a CPU quantity",
        },
        Case {
            name: "memory below Docker's minimum",
            yaml: Some(set_yaml(ns, "memory", "", "    resources:\n      memory: 1Ki\n")),
            object: set("memory"),
            field: Some("spec.template.resources.memory"),
            word: "minimum memory limit",
        },
        Case {
            name: "label key under berth.dev/",
            yaml: Some(set_yaml(ns, "reserved", "", "    labels:\n      berth.dev/revision: mine\n")),
            object: set("reserved"),
            field: Some("spec.template.labels.berth.dev/revision"),
            word: "reserved for berth",
        },
        Case {
            name: "uppercase metadata.name",
            yaml: Some(set_yaml(ns, "Echo", "", "")),
            object: set("Echo"),
            field: Some("metadata.name"),
            word: "must be a DNS label",
        },
        Case {
            name: "built-in network",
            yaml: Some(set_yaml(ns, "hostnet", "", "    networks: [host]\n")),
            object: set("hostnet"),
            field: Some("spec.template.networks[0]"),
            word: "built-in network",
        },
        Case {
            name: "set declared twice",
            yaml: Some(docs(&[set_yaml(ns, "twice", "", ""), set_yaml(ns, "twice", "", "")])),
            object: set("twice"),
            field: Some("metadata.name"),
            word: "declared twice",
        },
        Case {
            name: "DockerHost endpoint http://",
            yaml: Some(host_yaml(ns, "web", "  endpoint: http://x\n")),
            object: host("web"),
            field: Some("spec.endpoint"),
            word: "must start with unix:// or tcp://",
        },
        Case {
            name: "DockerHost tcp:// without tls",
            yaml: Some(host_yaml(ns, "plain", "  endpoint: tcp://10.0.0.5:2376\n")),
            object: host("plain"),
            field: Some("spec.tls"),
            word: "needs tls.secretName",
        },
        Case {
            name: "DockerHost tls Secret not in the input",
            yaml: Some(host_yaml(
                ns,
                "tlsless",
                "  endpoint: tcp://10.0.0.5:2376\n  tls:\n    secretName: client-cert\n",
            )),
            object: host("tlsless"),
            field: Some("spec.tls.secretName"),
            word: "is not in the input",
        },
        Case {
            name: "privileged on a host whose policy denies it",
            yaml: Some(docs(&[good_host.clone(), set_yaml(ns, "priv", "", "    privileged: true\n")])),
            object: set("priv"),
            field: Some("spec.template.privileged"),
            word: "does not allow privileged containers",
        },
        Case {
            name: "bind mount outside the host's allowed paths",
            yaml: Some(docs(&[
                good_host,
                set_yaml(
                    ns,
                    "bindpolicy",
                    "",
                    "    mounts:\n      - type: bind\n        source: /etc\n        target: /host-etc\n",
                ),
            ])),
            object: set("bindpolicy"),
            field: Some("spec.template.mounts[0].source"),
            word: "does not allow bind mounts",
        },
        Case {
            name: "unknown kind",
            yaml: Some(set_yaml(ns, "deploy", "", "").replace("kind: ContainerSet", "kind: Deployment")),
            object: Some(format!("Deployment {ns}/deploy")),
            field: Some("kind"),
            word: "is not something berth reads",
        },
        Case {
            name: "wrong apiVersion",
            yaml: Some(
                set_yaml(ns, "apiver", "", "").replace("apiVersion: berth.dev/v1alpha1", "apiVersion: berth.dev/v1"),
            ),
            object: set("apiver"),
            field: Some("apiVersion"),
            word: "should be \"berth.dev/v1alpha1\"",
        },
        Case {
            name: "malformed YAML",
            yaml: Some("apiVersion: berth.dev/v1alpha1\nkind: ContainerSet\nspec: [unclosed\n".to_string()),
            object: None,
            field: None,
            word: "not valid YAML",
        },
        Case { name: "missing file", yaml: None, object: None, field: None, word: "cannot read" },
    ]
}

/// Runs `berth <command> -f path` with `DOCKER_HOST` pointing at `proxy`.
fn run_through_proxy(command: &str, path: &Path, proxy: &CountingProxy) -> BerthOutput {
    let host = proxy.docker_host();
    berth([command, "-f", path.to_str().expect("a UTF-8 temp path")], &[("DOCKER_HOST", &host)])
}

/// What is wrong with the output of an invalid input, if anything.
fn check(out: &BerthOutput, proxy: &CountingProxy, path: &Path, expected: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if out.code != Some(1) {
        problems.push(format!("exit code {:?}, expected 1", out.code));
    }
    let file = path.display().to_string();
    if !out.stderr.contains(&format!("error: {file}")) {
        problems.push(format!("stderr does not name the file {file}"));
    }
    for e in expected {
        if !out.stderr.contains(e.as_str()) {
            problems.push(format!("stderr lacks {e:?}"));
        }
    }
    if !out.stderr.contains("problem(s) in the input; no host was touched.") {
        problems.push("stderr lacks the summary line".into());
    }
    let seen = proxy.requests();
    if !seen.is_empty() {
        problems.push(format!("the proxy saw {} request(s):\n{}", seen.len(), proxy.describe()));
    }
    problems
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("berth-invalid-").tempdir().expect("a temp dir")
}

fn write(dir: &Path, file: &str, yaml: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, yaml).expect("write the test's YAML");
    path
}

/// Runs one case; `Some(description)` when berth did not refuse it as expected.
fn run_case(i: usize, case: &Case, dir: &Path, placeholder: &str) -> Option<String> {
    let proxy = CountingProxy::start(&local_socket_path());
    let path = match &case.yaml {
        Some(yaml) => write(dir, &format!("case-{i:02}.yaml"), &yaml.replace(placeholder, &proxy.docker_host())),
        None => dir.join("does-not-exist").join("input.yaml"),
    };
    let mut expected = Vec::new();
    // The object and the field are printed in this order, each after ": ".
    let mut located = String::new();
    if let Some(o) = &case.object {
        located.push_str(&format!(": {o}"));
    }
    if let Some(f) = case.field {
        located.push_str(&format!(": {f}: "));
    }
    if !located.is_empty() {
        expected.push(located);
    }
    expected.push(case.word.to_string());
    let out = run_through_proxy("apply", &path, &proxy);
    let problems = check(&out, &proxy, &path, &expected);
    (!problems.is_empty()).then(|| format!("case {i:02} ({}):\n  - {}\n{out}", case.name, problems.join("\n  - ")))
}

/// How many cases run at once.
const WORKERS: usize = 6;

#[test]
fn every_invalid_input_is_refused_naming_file_object_and_field_with_zero_requests() {
    let ns = NamespaceGuard::new("invalid-input");
    let dir = temp_dir();
    let probe = CountingProxy::start(&local_socket_path());
    // The DockerHosts that must be valid point at a proxy too: each case gets its own below,
    // and this endpoint is rewritten to it.
    let placeholder = probe.docker_host();
    let all = cases(ns.name(), &placeholder);
    assert!(all.len() >= 30, "the table has {} cases", all.len());

    // Cases are independent (own file, own proxy): run them a few at a time.
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = all.get(i) else { break };
                    if let Some(failure) = run_case(i, case, dir.path(), &placeholder) {
                        failures.lock().unwrap().push(failure);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    assert!(probe.requests().is_empty(), "the placeholder proxy was used:\n{}", probe.describe());
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), all.len(), failures.join("\n\n"));
}

#[test]
fn errors_in_two_objects_are_both_reported() {
    let ns = NamespaceGuard::new("invalid-two");
    let ns = ns.name();
    let dir = temp_dir();
    let proxy = CountingProxy::start(&local_socket_path());
    let yaml = docs(&[
        set_yaml(ns, "first", "", "    ports:\n      - containerPort: 70000\n"),
        set_yaml(ns, "second", "", "    resources:\n      cpus: lots\n"),
    ]);
    let path = write(dir.path(), "two.yaml", &yaml);
    let out = run_through_proxy("apply", &path, &proxy);
    let file = path.display();
    let problems = check(
        &out,
        &proxy,
        &path,
        &[
            format!(
                "error: {file} (document 1): ContainerSet {ns}/first: spec.template.ports[0].containerPort: must be between 1 and 65535, got 70000"
            ),
            format!(
                "error: {file} (document 2): ContainerSet {ns}/second: spec.template.resources.cpus: \"lots\" is not a CPU quantity"
            ),
            "2 problem(s) in the input; no host was touched.".to_string(),
        ],
    );
    assert!(problems.is_empty(), "{}\n{out}", problems.join("\n"));
}

#[test]
fn errors_in_two_files_are_both_reported() {
    let ns = NamespaceGuard::new("invalid-two-files");
    let ns = ns.name();
    let dir = temp_dir();
    let proxy = CountingProxy::start(&local_socket_path());
    let a = write(dir.path(), "a.yaml", &set_yaml(ns, "a", "", "    env:\n      - name: 9LIVES\n        value: x\n"));
    let b = write(dir.path(), "b.yaml", &host_yaml(ns, "web", "  endpoint: http://x\n"));
    // The folder is read recursively, in name order.
    let out = run_through_proxy("apply", dir.path(), &proxy);
    assert_eq!(out.code, Some(1), "{out}");
    for expected in [
        format!("error: {} (document 1): ContainerSet {ns}/a: spec.template.env[0].name:", a.display()),
        format!("error: {} (document 1): DockerHost {ns}/web: spec.endpoint:", b.display()),
        "2 problem(s) in the input; no host was touched.".to_string(),
    ] {
        assert!(out.stderr.contains(&expected), "stderr lacks {expected:?}\n{out}");
    }
    assert!(proxy.requests().is_empty(), "requests:\n{}", proxy.describe());
}

#[test]
fn one_valid_and_one_invalid_object_applies_nothing() {
    let guard = NamespaceGuard::new("invalid-mixed");
    let ns = guard.name();
    let dir = temp_dir();
    let proxy = CountingProxy::start(&local_socket_path());
    let yaml = docs(&[
        set_yaml(ns, "good", "", "    ports:\n      - containerPort: 8080\n"),
        set_yaml(ns, "bad", "", "    healthcheck:\n      test: [\"CURL\", \"x\"]\n"),
    ]);
    let path = write(dir.path(), "mixed.yaml", &yaml);
    let out = run_through_proxy("apply", &path, &proxy);
    let problems = check(
        &out,
        &proxy,
        &path,
        &[
            format!("(document 2): ContainerSet {ns}/bad: spec.template.healthcheck.test: "),
            "1 problem(s) in the input".to_string(),
        ],
    );
    assert!(problems.is_empty(), "{}\n{out}", problems.join("\n"));
    assert!(!out.stderr.contains(&format!("{ns}/good")), "the valid set is not blamed\n{out}");
    assert!(out.stdout.is_empty(), "nothing is planned or applied: {out}");
}

#[test]
fn plan_on_an_invalid_file_exits_1_without_requests() {
    let ns = NamespaceGuard::new("invalid-plan");
    let ns = ns.name();
    let dir = temp_dir();
    let proxy = CountingProxy::start(&local_socket_path());
    let path = write(dir.path(), "plan.yaml", &set_yaml(ns, "planned", "  replicaPerHost: 2\n", ""));
    for command in ["plan", "status", "delete"] {
        let out = run_through_proxy(command, &path, &proxy);
        let problems =
            check(&out, &proxy, &path, &[format!("ContainerSet {ns}/planned: spec.replicaPerHost: unknown field")]);
        assert!(problems.is_empty(), "berth {command}: {}\n{out}", problems.join("\n"));
        assert!(out.stdout.is_empty(), "berth {command} printed a plan or status: {out}");
    }
}

/// Runs `cases` through [`run_case`] one by one and fails listing those berth got wrong.
fn assert_refused(cases: &[Case], dir: &Path) {
    let failures: Vec<String> =
        cases.iter().enumerate().filter_map(|(i, c)| run_case(i, c, dir, "unix:///unused")).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

#[test]
fn unknown_fields_in_list_items_and_optional_objects_are_named_by_their_field_path() {
    let guard = NamespaceGuard::new("invalid-nested");
    let ns = guard.name();
    let set = |name: &str| Some(format!("ContainerSet {ns}/{name}"));
    let dir = temp_dir();
    let cases = [
        Case {
            name: "typo in a list item",
            yaml: Some(set_yaml(
                ns,
                "portkey",
                "",
                "    ports:\n      - containerPort: 8080\n        hostport: 9000\n",
            )),
            object: set("portkey"),
            field: Some("spec.template.ports[0].hostport"),
            word: "unknown field",
        },
        Case {
            name: "typo in an optional object",
            yaml: Some(set_yaml(
                ns,
                "hckey",
                "",
                "    healthcheck:\n      test: [\"CMD\", \"/echo\", \"--probe\"]\n      intervall: 1s\n",
            )),
            object: set("hckey"),
            field: Some("spec.template.healthcheck.intervall"),
            word: "unknown field",
        },
        Case {
            name: "typo in an optional object in a list item",
            yaml: Some(docs(&[
                secret_yaml(ns, "creds", "Opaque", "  token: abc\n"),
                set_yaml(
                    ns,
                    "optkey",
                    "",
                    "    env:\n      - name: TOKEN\n        valueFrom:\n          secretKeyRef: {name: creds, key: token, optinal: true}\n",
                ),
            ])),
            object: set("optkey"),
            field: Some("spec.template.env[0].valueFrom.secretKeyRef.optinal"),
            word: "unknown field",
        },
    ];
    assert_refused(&cases, dir.path());
}

#[test]
fn a_secret_declared_twice_is_reported() {
    let guard = NamespaceGuard::new("invalid-dup-secret");
    let ns = guard.name();
    let dir = temp_dir();
    let cases = [Case {
        name: "Secret declared twice",
        yaml: Some(docs(&[
            secret_yaml(ns, "creds", "Opaque", "  token: first\n"),
            secret_yaml(ns, "creds", "Opaque", "  other: second\n"),
            set_yaml(
                ns,
                "user",
                "",
                "    env:\n      - name: TOKEN\n        valueFrom:\n          secretKeyRef: {name: creds, key: token}\n",
            ),
        ])),
        object: Some(format!("Secret {ns}/creds")),
        field: Some("metadata.name"),
        word: "declared twice",
    }];
    assert_refused(&cases, dir.path());
}

#[test]
fn errors_found_by_both_checks_are_reported_together() {
    let guard = NamespaceGuard::new("invalid-two-stages");
    let ns = guard.name();
    let dir = temp_dir();
    let proxy = CountingProxy::start(&local_socket_path());
    let yaml = docs(&[
        // Wrong on its own (found by load).
        set_yaml(ns, "alone", "", "    ports:\n      - containerPort: 70000\n"),
        // Wrong only together with the rest of the input (found by resolve).
        set_yaml(
            ns,
            "together",
            "",
            "    env:\n      - name: TOKEN\n        valueFrom:\n          secretKeyRef: {name: absent, key: token}\n",
        ),
    ]);
    let path = write(dir.path(), "stages.yaml", &yaml);
    let out = run_through_proxy("apply", &path, &proxy);
    let problems = check(
        &out,
        &proxy,
        &path,
        &[
            format!("ContainerSet {ns}/alone: spec.template.ports[0].containerPort: "),
            format!(
                "ContainerSet {ns}/together: spec.template.env[0].valueFrom.secretKeyRef: Secret {ns}/absent is not in the input"
            ),
            "2 problem(s) in the input".to_string(),
        ],
    );
    assert!(problems.is_empty(), "{}\n{out}", problems.join("\n"));
}
