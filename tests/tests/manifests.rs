//! berth's deployment artefacts, checked offline: what `kubectl apply -k manifests/` would
//! install, the operator image, and the examples under `examples/operator/`.
//!
//! - `kubectl kustomize manifests/` builds, and lists every CRD of `manifests/crd/`.
//! - Every built document, and every example, validates against the Kubernetes 1.32 schemas
//!   (PyPI's `kubernetes-validate`, strict: unknown fields are errors); berth's own objects
//!   (DockerHost, ContainerSet) against the `openAPIV3Schema` of the CRDs being installed.
//!   The package is installed on first use into a venv under `target/` (under a file lock).
//! - The Deployment is locked down (non-root, read-only root filesystem, no privilege
//!   escalation, no capabilities, probes, limits) and RBAC is least privilege: exactly the
//!   rules the operator needs, no wildcards, Secrets read-only, no built-in role bound.
//! - `scripts/build-operator-image.sh` builds an image under 30 MB that runs as 65532.
//!
//! Nothing here skips: a missing `kubectl`, `python3` or `docker` is a failure saying what
//! to install.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use berth_tests::berth_cli::without_cargo_test_env;
use berth_tests::paths::{repo_root, target_dir};
use berth_tests::{berth, lock};
use serde_json::{Value, json};

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.32.0";
/// What is installed when `python3` cannot import `kubernetes_validate` (pinned: the
/// schemas it ships are part of what this test checks against).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// The operator's namespace, ServiceAccount, Lease and image.
const NAMESPACE: &str = "berth-system";
const SERVICE_ACCOUNT: &str = "berth-operator";
const LEASE_NAME: &str = "berth-operator";
const HTTP_PORT: i64 = 8080;
const NON_ROOT_UID: i64 = 65532;
const MAX_IMAGE_BYTES: u64 = 30_000_000;

fn image_tag() -> String {
    format!("berth/operator:{}", env!("CARGO_PKG_VERSION"))
}

// ---------------------------------------------------------------------------------------
// Helpers: running tools, parsing YAML, finding documents.
// ---------------------------------------------------------------------------------------

/// Runs `cmd`, failing the test with `install` as advice when the program does not exist.
fn run(cmd: &mut Command, install: &str) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("`{program}` is not installed (or not on PATH); this test needs it: {install}")
        }
        Err(e) => panic!("cannot run `{program}`: {e}"),
    }
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The documents of a multi-document YAML text, empty ones dropped.
fn yaml_docs(text: &str, origin: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{origin} is not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// `kubectl kustomize manifests/`: the documents `kubectl apply -k manifests/` would apply.
fn kustomized() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut cmd = Command::new("kubectl");
        cmd.args(["kustomize", "manifests/"]).current_dir(repo_root());
        let out = run(
            &mut cmd,
            "kubectl >= 1.14 (built-in kustomize), e.g. https://dl.k8s.io/release/v1.32.0/bin/linux/amd64/kubectl",
        );
        assert!(out.status.success(), "`kubectl kustomize manifests/` failed:\n{}", describe(&cmd, &out));
        let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout), "the output of `kubectl kustomize manifests/`");
        assert!(!docs.is_empty(), "`kubectl kustomize manifests/` built nothing");
        docs
    })
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

fn namespace(doc: &Value) -> Option<&str> {
    doc["metadata"]["namespace"].as_str()
}

fn label(doc: &Value) -> String {
    format!("{}/{}", kind(doc), name(doc))
}

fn all_of<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn one<'a>(docs: &'a [Value], k: &str, n: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kind(d) == k && name(d) == n).collect();
    assert_eq!(found.len(), 1, "expected exactly one {k}/{n} in the kustomize output, found {}", found.len());
    found[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// Where `a` and `b` differ, as `path: a vs b` lines. Numbers compare by value: the
/// generated CRDs say `minimum: 1.0` where kustomize writes `1`, the same to an API server.
fn differences(a: &Value, b: &Value, path: &str) -> Vec<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => vec![],
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    differences(
                        &x.get(k).cloned().unwrap_or(Value::Null),
                        &y.get(k).cloned().unwrap_or(Value::Null),
                        &format!("{path}.{k}"),
                    )
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().flat_map(|(i, (x, y))| differences(x, y, &format!("{path}[{i}]"))).collect()
        }
        _ if a == b => vec![],
        _ => vec![format!("{path}: {a} vs {b}")],
    }
}

// ---------------------------------------------------------------------------------------
// kustomize
// ---------------------------------------------------------------------------------------

#[test]
fn kustomize_builds_everything_the_operator_needs() {
    let docs = kustomized();
    let kinds: Vec<String> = docs.iter().map(label).collect();

    let ns = one(docs, "Namespace", NAMESPACE);
    assert_eq!(ns["apiVersion"], "v1");

    // Every generated CRD is installed (kustomize has no globs: a new CRD file must be
    // added to manifests/kustomization.yaml by hand).
    let crd_dir = repo_root().join("manifests/crd");
    let mut crd_files: Vec<PathBuf> = std::fs::read_dir(&crd_dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", crd_dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    crd_files.sort();
    assert!(!crd_files.is_empty(), "no CRDs in {}", crd_dir.display());
    for file in &crd_files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for crd in yaml_docs(&text, &file.display().to_string()) {
            assert_eq!(kind(&crd), "CustomResourceDefinition", "{}", file.display());
            let installed = one(docs, "CustomResourceDefinition", name(&crd));
            let differences = differences(&crd, installed, "");
            assert!(
                differences.is_empty(),
                "kustomize changed the CRD of {} (file vs built):\n{}",
                file.display(),
                differences.join("\n")
            );
        }
    }
    assert_eq!(all_of(docs, "CustomResourceDefinition").len(), crd_files.len(), "{kinds:?}");

    for (k, n) in [
        ("ServiceAccount", SERVICE_ACCOUNT),
        ("ClusterRole", "berth-operator"),
        ("ClusterRoleBinding", "berth-operator"),
        ("Role", "berth-operator-leader-election"),
        ("RoleBinding", "berth-operator-leader-election"),
        ("Deployment", "berth-operator"),
    ] {
        let doc = one(docs, k, n);
        if !k.starts_with("Cluster") {
            assert_eq!(namespace(doc), Some(NAMESPACE), "{k}/{n} must be in {NAMESPACE}");
        }
    }
    // Only what the operator needs: nothing cluster-wide beyond its CRDs, role and binding.
    let allowed: BTreeSet<&str> = [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]
    .into();
    for doc in docs {
        assert!(allowed.contains(kind(doc)), "unexpected {} in manifests/", label(doc));
        if !matches!(kind(doc), "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding") {
            assert_eq!(namespace(doc), Some(NAMESPACE), "{} must be in {NAMESPACE}", label(doc));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Schema validation (kubernetes-validate)
// ---------------------------------------------------------------------------------------

/// A Python that can `import kubernetes_validate`: `python3` if it can, else a venv under
/// `target/` where it is installed (once per machine, under a file lock).
fn validator_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let install = "Python 3 with venv and pip (Debian: apt-get install python3 python3-venv python3-pip)";
            let importable = |python: &Path| {
                let mut cmd = Command::new(python);
                cmd.args(["-c", "import kubernetes_validate, jsonschema, yaml"]);
                run(&mut cmd, install).status.success()
            };
            let system = PathBuf::from("python3");
            if importable(&system) {
                return system;
            }
            let venv = target_dir().join("kubernetes-validate-venv");
            let python = venv.join("bin/python");
            let _lock = lock::exclusive("kubernetes-validate-venv");
            // Another process may have installed it while we waited for the lock.
            if python.is_file() && importable(&python) {
                return python;
            }
            if !python.is_file() {
                let mut cmd = Command::new("python3");
                cmd.args(["-m", "venv", "--clear"]).arg(&venv);
                let out = run(&mut cmd, install);
                assert!(
                    out.status.success(),
                    "cannot create a venv (is python3-venv installed?):\n{}",
                    describe(&cmd, &out)
                );
            }
            let mut cmd = Command::new(&python);
            cmd.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", KUBERNETES_VALIDATE]);
            let out = run(&mut cmd, install);
            assert!(
                out.status.success(),
                "cannot install {KUBERNETES_VALIDATE} from PyPI into {}:\n{}",
                venv.display(),
                describe(&cmd, &out)
            );
            assert!(
                importable(&python),
                "{KUBERNETES_VALIDATE} installed into {} but cannot be imported",
                venv.display()
            );
            python
        })
        .clone()
}

/// Validates each `{"source", "doc"}` of the JSON on stdin: Kubernetes objects with
/// kubernetes_validate (strict), berth.dev objects against the openAPIV3Schema of the CRDs
/// given. First it makes sure the validator rejects known-bad objects (so a pass means
/// something). Prints one line per object; exits 1 when any fails.
const VALIDATOR: &str = r#"
import json, sys
import jsonschema
import kubernetes_validate
from kubernetes_validate import utils

version = sys.argv[1]
data = json.load(sys.stdin)
crds = {}
for crd in data["crds"]:
    spec = crd["spec"]
    for v in spec["versions"]:
        crds[(spec["group"] + "/" + v["name"], spec["names"]["kind"])] = v["schema"]["openAPIV3Schema"]

def check(doc):
    """Raises on an invalid doc; returns what it was validated against."""
    api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if (api, kind) in crds:
        jsonschema.Draft202012Validator(crds[(api, kind)]).validate(doc)
        return "its CRD's openAPIV3Schema"
    if api.split("/")[0].endswith("berth.dev"):
        raise Exception("no CRD among the manifests defines %s %s" % (api, kind))
    return "Kubernetes " + kubernetes_validate.validate(doc, version, strict=True)

def error_text(e):
    path = ".".join(str(p) for p in getattr(e, "path", []) or [])
    return "%s: %s" % (path or "<root>", getattr(e, "message", None) or str(e))

canaries = [
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
     "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "x", "imagee": "x"}]}}}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "x"},
     "rules": [{"verbs": "get"}]},
    {"apiVersion": "v1", "kind": "NoSuchKind", "metadata": {"name": "x"}},
]
for crd in data["crds"]:
    spec = crd["spec"]
    canaries.append({"apiVersion": spec["group"] + "/" + spec["versions"][0]["name"],
                     "kind": spec["names"]["kind"], "metadata": {"name": "x"}, "spec": 42})
for c in canaries:
    try:
        check(c)
    except Exception:
        continue
    print("BROKEN VALIDATOR: accepted %s" % json.dumps(c))
    sys.exit(3)

failed = 0
for item in data["docs"]:
    doc = item["doc"]
    what = "%s %s/%s" % (item["source"], doc.get("kind"), (doc.get("metadata") or {}).get("name"))
    try:
        print("ok   %s (against %s)" % (what, check(doc)))
    except Exception as e:
        failed += 1
        print("FAIL %s: %s" % (what, error_text(e)))
sys.exit(1 if failed else 0)
"#;

/// The examples under `examples/operator/`, with their file names.
fn operator_examples() -> Vec<(String, Value)> {
    let dir = repo_root().join("examples/operator");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let source = format!("examples/operator/{}", file.file_name().unwrap().to_string_lossy());
        for doc in yaml_docs(&text, &source) {
            docs.push((source.clone(), doc));
        }
    }
    docs
}

#[test]
fn manifests_and_examples_validate_against_the_kubernetes_schemas() {
    let manifests = kustomized();
    let examples = operator_examples();
    let examples_kinds: BTreeSet<&str> = examples.iter().map(|(_, d)| kind(d)).collect();
    assert_eq!(
        examples_kinds,
        ["ContainerSet", "DockerHost", "Secret"].into(),
        "examples/operator/ should show a DockerHost, a ContainerSet and Secrets"
    );

    let mut docs: Vec<Value> =
        manifests.iter().map(|d| json!({"source": "kubectl kustomize manifests/:", "doc": d})).collect();
    docs.extend(examples.iter().map(|(source, d)| json!({"source": format!("{source}:"), "doc": d})));
    let input = json!({
        "crds": all_of(manifests, "CustomResourceDefinition"),
        "docs": docs,
    });

    let python = validator_python();
    let mut child = Command::new(&python)
        .args(["-c", VALIDATOR, KUBERNETES_VERSION])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).expect("write the documents to the validator");
    let out = child.wait_with_output().expect("the validator's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schema validation (Kubernetes {KUBERNETES_VERSION}) failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");
    let ok = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(ok, docs.len(), "every document is validated:\n{stdout}");
    // The CRDs themselves validate as CustomResourceDefinition objects.
    for crd in all_of(manifests, "CustomResourceDefinition") {
        assert!(
            stdout.lines().any(
                |l| l.contains(&format!("CustomResourceDefinition/{}", name(crd))) && l.contains("Kubernetes 1.32")
            ),
            "{} was not validated against the Kubernetes 1.32 schema:\n{stdout}",
            name(crd)
        );
    }
}

// ---------------------------------------------------------------------------------------
// The Deployment
// ---------------------------------------------------------------------------------------

#[test]
fn deployment_runs_two_locked_down_replicas() {
    let docs = kustomized();
    let deploy = one(docs, "Deployment", "berth-operator");
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 2, "two replicas (one leads, one stands by)");
    let selector = &spec["selector"]["matchLabels"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in selector.as_object().expect("spec.selector.matchLabels") {
        assert_eq!(&pod_labels[k], v, "the selector matches the pod template's labels");
    }

    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host], true, "{host}");
    }
    assert!(
        pod["volumes"].as_array().into_iter().flatten().all(|v| v.get("hostPath").is_none()),
        "no hostPath volumes"
    );

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let c = &containers[0];
    assert_eq!(c["image"], image_tag(), "the image the build script tags (workspace version)");
    assert!(pod["initContainers"].is_null() && pod["ephemeralContainers"].is_null());

    // Security: the pod's context, overridable per container; the container's wins.
    let psc = &pod["securityContext"];
    let csc = &c["securityContext"];
    let effective = |key: &str| if csc[key].is_null() { &psc[key] } else { &csc[key] };
    assert_eq!(effective("runAsNonRoot"), true, "runAsNonRoot");
    assert_eq!(effective("runAsUser"), NON_ROOT_UID, "runAsUser");
    assert_eq!(effective("runAsGroup"), NON_ROOT_UID, "runAsGroup");
    assert_eq!(effective("seccompProfile")["type"], "RuntimeDefault", "seccompProfile");
    assert_eq!(csc["readOnlyRootFilesystem"], true, "readOnlyRootFilesystem");
    assert_eq!(csc["allowPrivilegeEscalation"], false, "allowPrivilegeEscalation");
    assert_ne!(csc["privileged"], true, "privileged");
    assert_eq!(strings(&csc["capabilities"]["drop"]), ["ALL"], "capabilities.drop");
    assert!(csc["capabilities"]["add"].is_null(), "no capabilities added");

    // A read-only root filesystem: temporary files (host TLS material) need a writable /tmp.
    let tmp_mount = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == "/tmp")
        .expect("a volume mounted at /tmp (the root filesystem is read-only)");
    let tmp_volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == tmp_mount["name"])
        .expect("the /tmp volume");
    assert!(tmp_volume["emptyDir"].is_object(), "/tmp is an emptyDir: {tmp_volume}");

    // Resources: requests and limits for CPU and memory.
    for section in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][section][resource].is_string(),
                "resources.{section}.{resource} is set: {}",
                c["resources"]
            );
        }
    }

    // The port and the probes the operator serves.
    let ports = c["ports"].as_array().expect("ports");
    let http = ports.iter().find(|p| p["name"] == "http").expect("a port named http");
    assert_eq!(http["containerPort"], HTTP_PORT);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(get["port"] == "http" || get["port"] == HTTP_PORT, "{probe} probes port {HTTP_PORT}: {get}");
    }

    // Arguments: the operator subcommand, listening where the probes look, and the Lease
    // the Role grants access to. Identity and lease namespace come from the downward API.
    let args = strings(&c["args"]);
    assert_eq!(args.first(), Some(&"operator"), "args start with the subcommand: {args:?}");
    assert!(args.contains(&"--http-addr=0.0.0.0:8080"), "the http server listens on {HTTP_PORT}: {args:?}");
    let lease = args.iter().find_map(|a| a.strip_prefix("--lease-name=")).unwrap_or(LEASE_NAME);
    assert_eq!(lease, LEASE_NAME, "the Lease the Role grants is the one the operator uses");
    let env: BTreeMap<&str, &Value> =
        c["env"].as_array().expect("env").iter().map(|e| (e["name"].as_str().expect("env name"), e)).collect();
    assert_eq!(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");

    // The Service, if any, reaches the http port of these pods.
    for svc in all_of(docs, "Service") {
        for (k, v) in svc["spec"]["selector"].as_object().expect("a Service with a selector") {
            assert_eq!(&pod_labels[k], v, "{} selects the operator's pods", label(svc));
        }
        for p in svc["spec"]["ports"].as_array().expect("ports") {
            assert!(p["targetPort"] == "http" || p["targetPort"] == HTTP_PORT, "{p}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------------------

/// A rule as (apiGroup, resource, resourceNames) -> verbs, one entry per group and resource.
type Grants = BTreeMap<(String, String, Vec<String>), BTreeSet<String>>;

fn grants(role: &Value) -> Grants {
    let mut out = Grants::new();
    let rules = role["rules"].as_array().unwrap_or_else(|| panic!("{} has rules", label(role)));
    for rule in rules {
        assert!(rule.get("nonResourceURLs").is_none(), "{}: no nonResourceURLs: {rule}", label(role));
        let names: Vec<String> = strings(&rule["resourceNames"]).into_iter().map(String::from).collect();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for (what, value) in [("apiGroup", group), ("resource", resource), ("verb", verb)] {
                        assert!(!value.contains('*'), "{}: wildcard {what} {value:?} in {rule}", label(role));
                    }
                    out.entry((group.to_string(), resource.to_string(), names.clone()))
                        .or_default()
                        .insert(verb.to_string());
                }
            }
        }
    }
    out
}

fn grant(
    group: &str,
    resource: &str,
    names: &[&str],
    verbs: &[&str],
) -> ((String, String, Vec<String>), BTreeSet<String>) {
    (
        (group.into(), resource.into(), names.iter().map(|s| s.to_string()).collect()),
        verbs.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn rbac_grants_exactly_what_the_operator_uses() {
    let docs = kustomized();
    const READ: &[&str] = &["get", "list", "watch"];

    let cluster_role = one(docs, "ClusterRole", "berth-operator");
    assert!(cluster_role.get("aggregationRule").is_none(), "no aggregated ClusterRole");
    let expected: Grants = [
        grant("berth.dev", "containersets", &[], &["get", "list", "watch", "patch", "update"]),
        grant("berth.dev", "containersets/status", &[], &["get", "patch", "update"]),
        grant("berth.dev", "containersets/finalizers", &[], &["update"]),
        grant("berth.dev", "dockerhosts", &[], READ),
        grant("berth.dev", "dockerhosts/status", &[], &["get", "patch", "update"]),
        grant("", "secrets", &[], READ),
        grant("", "configmaps", &[], READ),
        grant("", "events", &[], &["create", "patch"]),
        grant("events.k8s.io", "events", &[], &["create", "patch"]),
        grant("apps", "controllerrevisions", &[], &["create", "get", "list", "watch", "delete", "patch"]),
    ]
    .into();
    assert_eq!(grants(cluster_role), expected, "the ClusterRole grants exactly what the operator uses");

    let role = one(docs, "Role", "berth-operator-leader-election");
    assert_eq!(namespace(role), Some(NAMESPACE));
    let expected: Grants = [
        // `create` cannot be limited by name; the rest is limited to the operator's Lease.
        grant("coordination.k8s.io", "leases", &[], &["create"]),
        grant("coordination.k8s.io", "leases", &[LEASE_NAME], &["get", "update", "patch"]),
    ]
    .into();
    assert_eq!(grants(role), expected, "the Role grants the leader-election Lease only");

    // Only these two roles exist, and nothing dangerous is in any role.
    assert_eq!(all_of(docs, "ClusterRole").len(), 1);
    assert_eq!(all_of(docs, "Role").len(), 1);
    for r in [cluster_role, role] {
        for ((group, resource, _), verbs) in grants(r) {
            for bad in ["escalate", "bind", "impersonate", "deletecollection"] {
                assert!(!verbs.contains(bad), "{}: {bad} on {group}/{resource}", label(r));
            }
            if resource == "secrets" || resource == "configmaps" {
                assert!(verbs.iter().all(|v| READ.contains(&v.as_str())), "{}: {resource} is read-only", label(r));
            }
        }
    }

    // Bindings: our roles, to our ServiceAccount, never a built-in role such as cluster-admin.
    let sa = one(docs, "ServiceAccount", SERVICE_ACCOUNT);
    assert_eq!(namespace(sa), Some(NAMESPACE));
    let bindings: Vec<&Value> =
        docs.iter().filter(|d| matches!(kind(d), "ClusterRoleBinding" | "RoleBinding")).collect();
    assert_eq!(bindings.len(), 2, "one ClusterRoleBinding, one RoleBinding");
    for b in bindings {
        let role_ref = &b["roleRef"];
        let ref_name = role_ref["name"].as_str().unwrap_or("");
        assert!(
            !matches!(ref_name, "cluster-admin" | "admin" | "edit" | "view") && !ref_name.starts_with("system:"),
            "{} binds the built-in role {ref_name}",
            label(b)
        );
        assert_eq!(role_ref["apiGroup"], "rbac.authorization.k8s.io");
        let (want_kind, want_name) = match kind(b) {
            "ClusterRoleBinding" => ("ClusterRole", name(cluster_role)),
            _ => ("Role", name(role)),
        };
        assert_eq!((role_ref["kind"].as_str(), ref_name), (Some(want_kind), want_name), "{}", label(b));
        if kind(b) == "RoleBinding" {
            assert_eq!(namespace(b), Some(NAMESPACE));
        }
        let subjects = b["subjects"].as_array().expect("subjects");
        assert_eq!(
            subjects,
            &vec![json!({"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE})],
            "{} binds the operator's ServiceAccount only",
            label(b)
        );
    }
}

// ---------------------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------------------

/// berth reads examples/operator/ as input: the only problem is reaching the example host
/// (its address is made up and its certificates are placeholders), never the YAML.
#[test]
fn operator_examples_are_valid_berth_input() {
    let out = berth(["plan", "-f", repo_root().join("examples/operator").to_str().expect("a UTF-8 path")], &[]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "plan fails only on the unreachable host:\n{all}");
    assert!(!all.contains("problem(s) in the input"), "the examples are valid input:\n{all}");
    assert!(all.contains("host docker-1") && all.contains("UNREACHABLE"), "the example host is unreachable:\n{all}");
}

// ---------------------------------------------------------------------------------------
// The operator image
// ---------------------------------------------------------------------------------------

fn docker_cmd() -> Command {
    Command::new("docker")
}

const DOCKER_INSTALL: &str = "the Docker CLI and an engine (scripts/start-docker.sh)";

/// `scripts/build-operator-image.sh` builds `berth/operator:<version>`: a static binary in a
/// FROM scratch image, small, non-root, whose `operator --help` runs.
#[test]
fn operator_image_is_small_non_root_and_runs() {
    let tag = image_tag();
    {
        let _lock = lock::exclusive("operator-image");
        let script = repo_root().join("scripts/build-operator-image.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg(&tag).current_dir(repo_root());
        without_cargo_test_env(&mut cmd);
        let out = run(&mut cmd, "bash");
        assert!(out.status.success(), "{} failed:\n{}", script.display(), describe(&cmd, &out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tag, "the script prints the tag it built");
    }

    let mut cmd = docker_cmd();
    cmd.args(["image", "inspect", &tag]);
    let out = run(&mut cmd, DOCKER_INSTALL);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    let inspect: Value = serde_json::from_slice(&out.stdout).expect("docker image inspect prints JSON");
    let image = &inspect[0];
    let size = image["Size"].as_u64().expect("the image's Size");
    assert!(size < MAX_IMAGE_BYTES, "{tag} is {size} bytes, more than {MAX_IMAGE_BYTES}");
    let config = &image["Config"];
    assert_eq!(config["User"], "65532:65532", "the image runs as non-root");
    assert_eq!(strings(&config["Entrypoint"]), ["/berth"]);
    assert_eq!(strings(&config["Cmd"]), ["operator"]);
    let layers = image["RootFS"]["Layers"].as_array().map_or(0, Vec::len);
    assert_eq!(layers, 1, "FROM scratch plus the binary: one layer");

    // The manifests' arguments are flags `berth operator` knows.
    let mut cmd = docker_cmd();
    cmd.args(["run", "--rm", "--network=none", &tag, "operator", "--help"]);
    let out = run(&mut cmd, DOCKER_INSTALL);
    assert!(out.status.success(), "`berth operator --help` in the image:\n{}", describe(&cmd, &out));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--http-addr", "--lease-name", "--lease-namespace", "--identity", "--namespace"] {
        assert!(help.contains(flag), "`berth operator --help` mentions {flag}:\n{help}");
    }
}
