//! Invalid input is refused before any host is touched.
//!
//! The cases are files: `tests/data/invalid/*.yaml`, one invalid input each, with what berth
//! must say about it in a comment header (see [`Expectation`]). Every file is run through
//! `berth apply -f FILE` and `berth plan -f FILE` with `DOCKER_HOST` (and, where the input
//! declares a DockerHost, its endpoint) pointing at a fresh counting proxy. Each must exit 1
//! within a time limit, name the file, the object and the field path on stderr with the
//! expected message, never panic, and leave the proxy with zero requests: not even a GET.
//! The tests below the corpus cover what one file cannot: several objects, several files,
//! a path that does not exist.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_tests::{BerthOutput, CountingProxy, NamespaceGuard, berth, local_socket_path, spawn_berth};

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

fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}

// ---------------------------------------------------------------------------------------------
// The corpus

/// At least this many files: the issue asks for 50, and a corpus that shrank by accident
/// (a bad glob, a moved folder) must fail loudly.
const MIN_CORPUS: usize = 50;

/// How long one berth run on one file may take. Generous for a debug build on a loaded
/// machine; a YAML bomb that is not stopped by a limit takes far longer (or runs out of memory).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What a corpus file expects, from its leading comment lines:
///
/// ```text
/// # case: containerPort above 65535                 (what the file is about; required)
/// # expect-object: ContainerSet {ns}/cport          (`-`: the error belongs to no object)
/// # expect-field: spec.template.ports[0].containerPort   (`-`: to no field)
/// # expect-message: must be between 1 and 65535     (one or more; each must appear)
/// ```
///
/// `{ns}` is replaced by the test's namespace and `{endpoint}` by a counting proxy's
/// `unix://` address, in the header and in the file, before berth reads it. The object and
/// field must appear as berth prints them: `error: FILE (document N): OBJECT: FIELD: MESSAGE`.
#[derive(Debug)]
struct Expectation {
    case: String,
    object: Option<String>,
    field: Option<String>,
    messages: Vec<String>,
}

impl Expectation {
    /// The header of `bytes`, or what is wrong with it.
    fn parse(bytes: &[u8]) -> Result<Expectation, String> {
        let text = String::from_utf8_lossy(bytes);
        let (mut case, mut object, mut field, mut messages) = (None, None, None, Vec::new());
        for line in text.lines().take_while(|l| l.starts_with('#')) {
            let Some((key, value)) = line.trim_start_matches('#').trim().split_once(':') else { continue };
            let value = value.trim().to_string();
            let optional = |v: String| if v == "-" { None } else { Some(v) };
            match key.trim() {
                "case" => case = Some(value),
                "expect-object" => object = Some(optional(value)),
                "expect-field" => field = Some(optional(value)),
                "expect-message" if !value.is_empty() => messages.push(value),
                "expect-message" => return Err("an empty expect-message".into()),
                k if k.starts_with("expect") => return Err(format!("unknown header key {k:?}")),
                _ => {}
            }
        }
        let missing = |what: &str| format!("no `# {what}:` line in the leading comments");
        Ok(Expectation {
            case: case.ok_or_else(|| missing("case"))?,
            object: object.ok_or_else(|| missing("expect-object"))?,
            field: field.ok_or_else(|| missing("expect-field"))?,
            messages: if messages.is_empty() { return Err(missing("expect-message")) } else { messages },
        })
    }

    /// What stderr must contain, with the placeholders filled in.
    fn expected(&self, ns: &str, endpoint: &str) -> Vec<String> {
        let fill = |s: &str| s.replace("{ns}", ns).replace("{endpoint}", endpoint);
        // The object and the field are printed in this order, each after ": ".
        let mut located = String::new();
        if let Some(o) = &self.object {
            located.push_str(&format!(": {}", fill(o)));
        }
        if let Some(f) = &self.field {
            located.push_str(&format!(": {}: ", fill(f)));
        }
        let mut expected: Vec<String> = self.messages.iter().map(|m| fill(m)).collect();
        if !located.is_empty() {
            expected.insert(0, located);
        }
        expected
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join("invalid")
}

/// The corpus' files, in name order.
fn corpus_files() -> Vec<PathBuf> {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list the corpus {}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// `bytes` with every `from` replaced by `to` (the files need not be UTF-8).
fn replace_bytes(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let from = from.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to.as_bytes());
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Runs `berth <command> -f path` behind `proxy`, killing it after [`RUN_LIMIT`].
fn run_limited(command: &str, path: &Path, proxy: &CountingProxy) -> Result<BerthOutput, String> {
    let host = proxy.docker_host();
    let started = Instant::now();
    let process = spawn_berth([command, "-f", path.to_str().expect("a UTF-8 temp path")], &[("DOCKER_HOST", &host)]);
    process.wait_timeout(RUN_LIMIT).map_err(|p| {
        let out = p.kill();
        format!("berth {command} still ran after {:?}; killed\n{out}", started.elapsed())
    })
}

/// Runs one corpus file; `Some(description)` when berth did not refuse it as expected.
fn run_corpus_file(file: &Path, ns: &str, dir: &Path) -> Option<String> {
    let name = file.file_name().expect("a file name").to_string_lossy().into_owned();
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let expectation = match Expectation::parse(&bytes) {
        Ok(e) => e,
        Err(problem) => return Some(format!("{name}: bad header: {problem}")),
    };
    let mut failures = Vec::new();
    for command in ["apply", "plan"] {
        let proxy = CountingProxy::start(&local_socket_path());
        let endpoint = proxy.docker_host();
        let content = replace_bytes(&replace_bytes(&bytes, "{ns}", ns), "{endpoint}", &endpoint);
        let path = dir.join(format!("{command}-{name}"));
        std::fs::write(&path, content).expect("write the corpus file");
        let out = match run_limited(command, &path, &proxy) {
            Ok(out) => out,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let problems = check(&out, &proxy, &path, &expectation.expected(ns, &endpoint));
        if !problems.is_empty() {
            failures.push(format!("berth {command}:\n  - {}\n{out}", problems.join("\n  - ")));
        }
    }
    (!failures.is_empty()).then(|| format!("{name} ({}):\n{}", expectation.case, failures.join("\n")))
}

/// How many corpus files run at once.
const WORKERS: usize = 6;

#[test]
fn every_file_of_the_invalid_corpus_is_refused_naming_file_object_and_field_with_zero_requests() {
    let ns = NamespaceGuard::new("invalid-corpus");
    let dir = temp_dir();
    let files = corpus_files();
    assert!(
        files.len() >= MIN_CORPUS,
        "the corpus {} has {} files, fewer than {MIN_CORPUS}",
        corpus_dir().display(),
        files.len()
    );
    let started = Instant::now();
    // Files are independent (own copy, own proxy per run): run them a few at a time.
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(file) = files.get(i) else { break };
                    if let Some(failure) = run_corpus_file(file, ns.name(), dir.path()) {
                        failures.lock().unwrap().push(failure);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    assert!(failures.is_empty(), "{} of {} files failed:\n\n{}", failures.len(), files.len(), failures.join("\n\n"));
    println!(
        "{} invalid inputs rejected (apply and plan each, zero requests to the engine) in {:.1?}",
        files.len(),
        started.elapsed()
    );
}

#[test]
fn a_header_without_an_expectation_is_refused() {
    let good = b"# case: x\n# expect-object: -\n# expect-field: spec\n# expect-message: m\nkind: X\n";
    assert!(Expectation::parse(good).is_ok());
    for bad in [
        &b"# case: x\n# expect-object: -\n# expect-field: spec\nkind: X\n"[..],
        b"# case: x\n# expect-field: spec\n# expect-message: m\n",
        b"# case: x\n# expect-object: -\n# expect-message: m\n",
        b"# expect-object: -\n# expect-field: -\n# expect-message: m\n",
        b"# case: x\n# expect-object: -\n# expect-field: -\n# expect-message:\n",
        b"# case: x\n# expect-objet: -\n# expect-field: -\n# expect-message: m\n",
        // An expectation after the first non-comment line is no header.
        b"# case: x\n# expect-object: -\n# expect-field: -\nkind: X\n# expect-message: m\n",
    ] {
        assert!(Expectation::parse(bad).is_err(), "accepted {:?}", String::from_utf8_lossy(bad));
    }
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
    if out.stderr.contains("panicked") {
        problems.push("berth panicked".into());
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

#[test]
fn a_path_that_does_not_exist_is_refused() {
    let dir = temp_dir();
    let proxy = CountingProxy::start(&local_socket_path());
    let path = dir.path().join("does-not-exist").join("input.yaml");
    let out = run_through_proxy("apply", &path, &proxy);
    let problems = check(&out, &proxy, &path, &["cannot read".to_string()]);
    assert!(problems.is_empty(), "{}\n{out}", problems.join("\n"));
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
