//! The commands besides `apply`, as a user runs them: `status` in its three formats, `logs`,
//! `delete` with and without `--volumes`, `crd`, `--help`, and `plan -o json` with its exit
//! codes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_tests::{
    BerthOutput, EchoSet, NamespaceGuard, berth, berth_async, containers_in, docker, ensure_echo_image, eventually,
    names_ids_states,
};
use bollard::Docker;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("berth-cli-").tempdir().expect("a temp dir")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

async fn run(args: &[&str]) -> BerthOutput {
    berth_async(args, &[]).await
}

/// Applies `set` (written into `dir`) and returns the input's path and the one container's name.
async fn apply_one(docker: &Docker, dir: &Path, set: &EchoSet) -> (PathBuf, String) {
    ensure_echo_image();
    let path = set.write(dir);
    run(&["apply", "-f", path_str(&path)]).await.assert_success();
    let all = names_ids_states(docker, &set.namespace).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].2, "running", "{all:?}");
    (path, all[0].0.clone())
}

fn parse_json(out: &BerthOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{out}"))
}

/// A namespace with a named volume: on drop (also when the test panics) the namespace's
/// containers are removed first, then the volume (absent is fine).
struct VolumeGuard {
    namespace: Option<NamespaceGuard>,
    volume: String,
}

impl VolumeGuard {
    fn new(prefix: &str, suffix: &str) -> VolumeGuard {
        let namespace = NamespaceGuard::new(prefix);
        let volume = format!("{}-{suffix}", namespace.name());
        VolumeGuard { namespace: Some(namespace), volume }
    }

    fn namespace(&self) -> &str {
        self.namespace.as_ref().expect("set until dropped").name()
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        drop(self.namespace.take());
        let name = self.volume.clone();
        let removed = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(async {
                match docker().await.remove_volume(&name, None::<bollard::query_parameters::RemoveVolumeOptions>).await
                {
                    Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
                    Err(e) => Err(format!("cannot remove volume {name}: {e}")),
                }
            })
        })
        .join();
        if let Ok(Err(e)) = removed {
            eprintln!("warning: {e}");
        }
    }
}

async fn volume_exists(docker: &Docker, name: &str) -> bool {
    match docker.inspect_volume(name).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(e) => panic!("cannot inspect volume {name}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_sets_containers_as_table_json_and_yaml() {
    let docker = docker().await;
    let guard = NamespaceGuard::new("cli-status");
    let ns = guard.name().to_string();
    let dir = temp_dir();
    let set = EchoSet::new(&ns, "web");

    // Before the first apply: declared, nothing runs.
    let path = set.write(dir.path());
    let before = run(&["status", "-f", path_str(&path)]).await;
    before.assert_success();
    assert!(before.stdout.contains(&format!("{ns}/web: 0/1 ready")), "{before}");

    let (path, name) = apply_one(&docker, dir.path(), &set).await;
    let revision = name.split('.').nth(2).expect("<ns>.<set>.<revision>.<ordinal>").to_string();

    let table = run(&["status", "-f", path_str(&path)]).await;
    table.assert_success();
    let header = table.stdout.lines().next().unwrap_or_default();
    for column in ["SET", "HOST", "CONTAINER", "REVISION", "STATE", "HEALTH"] {
        assert!(header.contains(column), "header lacks {column}\n{table}");
    }
    let row = table.stdout.lines().find(|l| l.contains(&name)).unwrap_or_else(|| panic!("no row for {name}\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, [&format!("{ns}/web"), "local", &name, &revision, "running", "healthy"], "{table}");
    assert!(table.stdout.contains(&format!("{ns}/web: 1/1 ready, 1/1 at revision {revision}")), "{table}");

    let json = run(&["status", "-f", path_str(&path), "-o", "json"]).await;
    json.assert_success();
    let v = parse_json(&json);
    let s = &v[0];
    assert_eq!(s["set"], format!("{ns}/web"), "{json}");
    assert_eq!(s["revision"], revision.as_str(), "{json}");
    assert_eq!(
        (s["desiredReplicas"].as_u64(), s["readyReplicas"].as_u64(), s["updatedReplicas"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{json}"
    );
    let host = &s["hosts"][0];
    assert_eq!(host["host"], "local", "{json}");
    assert_eq!(host["ready"], true, "{json}");
    let c = &host["containers"][0];
    assert_eq!(
        (c["name"].as_str(), c["state"].as_str(), c["health"].as_str()),
        (Some(name.as_str()), Some("running"), Some("healthy")),
        "{json}"
    );
    assert_eq!(host["containers"].as_array().map(Vec::len), Some(1), "{json}");

    let yaml = run(&["status", "-f", path_str(&path), "-o", "yaml"]).await;
    yaml.assert_success();
    for expected in [
        format!("set: {ns}/web"),
        "readyReplicas: 1".to_string(),
        "desiredReplicas: 1".to_string(),
        format!("name: {name}"),
        "state: running".to_string(),
        "health: healthy".to_string(),
    ] {
        assert!(yaml.stdout.contains(&expected), "yaml lacks {expected:?}\n{yaml}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_prefix_every_line_with_host_and_container() {
    let docker = docker().await;
    let guard = NamespaceGuard::new("cli-logs");
    let ns = guard.name().to_string();
    let dir = temp_dir();
    let (path, name) = apply_one(&docker, dir.path(), &EchoSet::new(&ns, "talker")).await;

    // The echo app prints `echo <version> listening on 0.0.0.0:8080` when it starts.
    let prefix = format!("[local/{name}] ");
    let set = format!("{ns}/talker");
    let out = eventually("the startup line in berth logs", WAIT, || {
        let (set, path, prefix) = (set.clone(), path.clone(), prefix.clone());
        async move {
            let out = run(&["logs", &set, "--file", path_str(&path)]).await;
            let found = out.success()
                && out.stdout.lines().any(|l| l.starts_with(&prefix) && l.ends_with("listening on 0.0.0.0:8080"));
            if found { Ok(out) } else { Err(out.to_string()) }
        }
    })
    .await;
    for line in out.stdout.lines() {
        assert!(line.starts_with(&prefix), "every line carries the prefix: {line:?}\n{out}");
    }

    // Without --file: the local engine from DOCKER_HOST; --tail limits the lines.
    let local = run(&["logs", &set, "--tail", "1"]).await;
    local.assert_success();
    assert_eq!(local.stdout.lines().count(), 1, "{local}");
    assert!(local.stdout.starts_with(&prefix), "{local}");

    // --host names a host that is not in the input.
    let nohost = run(&["logs", &set, "--file", path_str(&path), "--host", "elsewhere"]).await;
    nohost.assert_code(1);
    assert!(nohost.stderr.contains("no host named \"elsewhere\""), "{nohost}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_keeps_named_volumes_unless_asked() {
    let docker = docker().await;
    let guard = VolumeGuard::new("cli-delete", "data");
    let (ns, volume) = (guard.namespace().to_string(), guard.volume.clone());
    let dir = temp_dir();
    let set = EchoSet::new(&ns, "keeper").volume(&volume, "/data");
    let (path, name) = apply_one(&docker, dir.path(), &set).await;
    assert!(volume_exists(&docker, &volume).await, "apply created the volume {volume}");

    let deleted = run(&["delete", "-f", path_str(&path)]).await;
    deleted.assert_success();
    assert!(deleted.stdout.contains(&format!("- remove  {name}")), "{deleted}");
    assert!(containers_in(&docker, &ns).await.is_empty(), "delete removed the containers\n{deleted}");
    assert!(volume_exists(&docker, &volume).await, "delete without --volumes keeps {volume}\n{deleted}");
    assert!(!deleted.stdout.contains("removed volume"), "{deleted}");

    // Nothing is left to delete; --volumes now removes the volume.
    let purged = run(&["delete", "-f", path_str(&path), "--volumes"]).await;
    purged.assert_success();
    assert!(purged.stdout.contains(&format!("local: removed volume {volume}")), "{purged}");
    assert!(!volume_exists(&docker, &volume).await, "delete --volumes removed {volume}\n{purged}");

    // And again: a volume already gone is no error.
    run(&["delete", "-f", path_str(&path), "--volumes"]).await.assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_volumes_keeps_a_volume_another_container_uses() {
    let docker = docker().await;
    let guard = VolumeGuard::new("cli-delete-shared", "shared");
    let (ns, volume) = (guard.namespace().to_string(), guard.volume.clone());
    let dir = temp_dir();
    // Two sets mount the same volume; deleting one of them must not take it.
    let (a_path, _) = apply_one(&docker, dir.path(), &EchoSet::new(&ns, "alpha").volume(&volume, "/data")).await;
    let b_path = EchoSet::new(&ns, "beta").volume(&volume, "/data").write(dir.path());
    run(&["apply", "-f", path_str(&b_path)]).await.assert_success();

    let out = run(&["delete", "-f", path_str(&a_path), "--volumes"]).await;
    out.assert_success();
    assert!(out.stdout.contains(&format!("kept volume {volume}: still in use")), "{out}");
    assert!(volume_exists(&docker, &volume).await, "{out}");
    let left = names_ids_states(&docker, &ns).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].0.starts_with(&format!("{ns}.beta.")), "{left:?}");
}

#[test]
fn crd_prints_every_custom_resource_definition() {
    let out = berth(["crd"], &[]);
    out.assert_success();
    assert_eq!(out.stdout.matches("kind: CustomResourceDefinition").count(), 3, "{out}");
    for name in ["dockerhosts.berth.dev", "containersets.berth.dev", "images.berth.dev"] {
        assert!(out.stdout.contains(&format!("name: {name}")), "berth crd lacks {name}\n{out}");
    }
    assert!(out.stdout.contains("v1alpha1"), "{out}");
}

#[test]
fn help_lists_every_subcommand() {
    let out = berth(["--help"], &[]);
    out.assert_success();
    let commands: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for c in ["apply", "plan", "status", "delete", "logs", "crd"] {
        assert!(commands.contains(&c), "--help lacks {c}: {commands:?}\n{out}");
    }
    // Every subcommand answers --help itself.
    for c in ["apply", "plan", "status", "delete", "logs", "crd"] {
        let sub = berth([c, "--help"], &[]);
        sub.assert_success();
        assert!(sub.stdout.contains(&format!("Usage: berth {c}")), "{sub}");
    }
    let version = berth(["--version"], &[]);
    version.assert_success();
    assert!(version.stdout.starts_with("berth "), "{version}");
}

#[test]
fn usage_errors_exit_nonzero() {
    // Without -f: clap refuses (exit 2 is clap's usage error, not `plan`'s pending changes).
    let out = berth(["apply"], &[]);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("--filename"), "{out}");
    let unknown = berth(["converge"], &[]);
    assert_ne!(unknown.code, Some(0), "{unknown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_json_reports_pending_and_exits_0_or_2() {
    let docker = docker().await;
    let guard = NamespaceGuard::new("cli-plan-json");
    let ns = guard.name().to_string();
    let dir = temp_dir();
    let set = EchoSet::new(&ns, "planned").env("GREETING", "one");

    // Nothing there yet: a create is pending.
    let path = set.write(dir.path());
    let fresh = run(&["plan", "-f", path_str(&path), "-o", "json"]).await;
    fresh.assert_code(2);
    let v = parse_json(&fresh);
    assert_eq!(v["pending"], true, "{fresh}");
    assert_eq!(v["hosts"][0]["sets"][0]["changes"][0]["action"], "create", "{fresh}");
    assert!(containers_in(&docker, &ns).await.is_empty(), "plan changes nothing");

    let (path, name) = apply_one(&docker, dir.path(), &set).await;
    let converged = run(&["plan", "-f", path_str(&path), "-o", "json"]).await;
    converged.assert_code(0);
    assert!(converged.stdout.contains("\"pending\": false"), "{converged}");
    let v = parse_json(&converged);
    assert_eq!(v["pending"], false, "{converged}");
    assert_eq!(v["hosts"][0]["host"], "local", "{converged}");
    assert_eq!(v["hosts"][0]["sets"].as_array().map(Vec::len), Some(0), "{converged}");
    let text = run(&["plan", "-f", path_str(&path)]).await;
    text.assert_code(0);
    assert!(text.stdout.contains("No changes: 1 host(s) converged."), "{text}");

    set.clone().env("GREETING", "two").write(dir.path());
    let pending = run(&["plan", "-f", path_str(&path), "-o", "json"]).await;
    pending.assert_code(2);
    assert!(pending.stdout.contains("\"pending\": true"), "{pending}");
    let v = parse_json(&pending);
    let change = &v["hosts"][0]["sets"][0]["changes"][0];
    assert_eq!(change["action"], "replace", "{pending}");
    let fields = change["reasons"][0]["fields"].as_array().cloned().unwrap_or_default();
    assert!(
        fields.iter().any(|f| f["field"] == "env.GREETING" && f["from"] == "\"one\"" && f["to"] == "\"two\""),
        "the plan names the changed field: {pending}"
    );
    // plan changed nothing: the same container still runs.
    let all = names_ids_states(&docker, &ns).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].0, name, "{all:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_volumes_never_removes_a_volume_berth_did_not_create() {
    let docker = docker().await;
    let guard = VolumeGuard::new("cli-delete-users", "users");
    let (ns, volume) = (guard.namespace().to_string(), guard.volume.clone());
    // The user made the volume (no berth labels) and put data in it before berth ran.
    let opts = bollard::models::VolumeCreateRequest { name: Some(volume.clone()), ..Default::default() };
    docker.create_volume(opts).await.expect("create the user's volume");
    let dir = temp_dir();
    let (path, _) = apply_one(&docker, dir.path(), &EchoSet::new(&ns, "borrower").volume(&volume, "/data")).await;

    let out = run(&["delete", "-f", path_str(&path), "--volumes"]).await;
    out.assert_success();
    assert!(containers_in(&docker, &ns).await.is_empty(), "the set's containers are gone\n{out}");
    assert!(
        out.stdout.contains(&format!("local: kept volume {volume}: berth did not create it for {ns}/borrower")),
        "{out}"
    );
    assert!(volume_exists(&docker, &volume).await, "the user's volume survives delete --volumes\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_volumes_of_one_set_keeps_the_volume_another_set_created() {
    let docker = docker().await;
    let guard = VolumeGuard::new("cli-delete-other", "theirs");
    let (ns, volume) = (guard.namespace().to_string(), guard.volume.clone());
    let dir = temp_dir();
    // `alpha` creates the volume, then goes (its volume kept); `beta` mounts it later.
    let (a_path, _) = apply_one(&docker, dir.path(), &EchoSet::new(&ns, "alpha").volume(&volume, "/data")).await;
    run(&["delete", "-f", path_str(&a_path)]).await.assert_success();
    assert!(volume_exists(&docker, &volume).await, "delete without --volumes keeps alpha's volume");
    let (b_path, _) = apply_one(&docker, dir.path(), &EchoSet::new(&ns, "beta").volume(&volume, "/data")).await;

    let out = run(&["delete", "-f", path_str(&b_path), "--volumes"]).await;
    out.assert_success();
    assert!(containers_in(&docker, &ns).await.is_empty(), "{out}");
    assert!(
        out.stdout.contains(&format!("local: kept volume {volume}: berth did not create it for {ns}/beta")),
        "{out}"
    );
    assert!(volume_exists(&docker, &volume).await, "beta's delete keeps alpha's volume\n{out}");

    // alpha's own delete --volumes (nothing of it runs any more) removes it.
    let purged = run(&["delete", "-f", path_str(&a_path), "--volumes"]).await;
    purged.assert_success();
    assert!(purged.stdout.contains(&format!("local: removed volume {volume}")), "{purged}");
    assert!(!volume_exists(&docker, &volume).await, "{purged}");
}
