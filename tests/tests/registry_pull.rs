//! Pulling a set's image from a private registry with `imagePullSecrets`.
//!
//! A registry with htpasswd auth gets the echo image under a repository unique to the test;
//! the local tag is then removed so berth must pull. The credentials come from a
//! `kubernetes.io/dockerconfigjson` Secret in the input. `example/echo:latest` itself stays:
//! other tests use it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use berth_tests::{
    CountingProxy, ECHO_BODY, ECHO_IMAGE, EchoSet, NamespaceGuard, Registry, TagGuard, berth_async, containers_in,
    docker, ensure_echo_image, eventually, free_port, http_get, local_socket_path, names_ids_states,
};
use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;

const WAIT: Duration = Duration::from_secs(30);

/// Removes the tag `reference` from the local engine (absent is fine), never the image.
async fn untag(docker: &Docker, reference: &str) {
    let opts = RemoveImageOptions { noprune: true, ..Default::default() };
    match docker.remove_image(reference, Some(opts), None).await {
        Ok(_) => {}
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(e) => panic!("cannot untag {reference}: {e}"),
    }
}

async fn image_present(docker: &Docker, reference: &str) -> bool {
    match docker.inspect_image(reference).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(e) => panic!("cannot inspect image {reference}: {e}"),
    }
}

/// Pushes the echo image to `registry` as `<repo>:v1`, then removes the remote-named tag
/// locally so that only a pull can bring it back. Returns the remote reference and the guard
/// that removes the tag again at the end.
async fn push_and_forget(docker: &Docker, registry: &Registry, repo: &str) -> (String, TagGuard) {
    ensure_echo_image();
    let remote = registry.push(docker, ECHO_IMAGE, &format!("{repo}:v1")).await;
    let guard = TagGuard(remote.clone());
    untag(docker, &remote).await;
    assert!(!image_present(docker, &remote).await, "{remote} must not be on the engine before berth pulls it");
    assert!(image_present(docker, ECHO_IMAGE).await, "{ECHO_IMAGE} itself stays");
    (remote, guard)
}

/// The input: a dockerconfigjson Secret (`secret_body` holds its `stringData`/`data`
/// section) and the set pulling `image` with it, published on 127.0.0.1:`port`.
fn write_input(dir: &Path, ns: &str, set: &str, image: &str, secret_body: &str, port: u16) -> PathBuf {
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: registry-creds\n  namespace: {ns}\n\
         type: kubernetes.io/dockerconfigjson\n{secret_body}"
    );
    let set = EchoSet::new(ns, set).image(image, "IfNotPresent").pull_secret("registry-creds").host_port(port);
    let path = dir.join("input.yaml");
    std::fs::write(&path, format!("{secret}---\n{}", set.yaml())).expect("write the input");
    path
}

/// `%3A` → `:` and so on, for reading a request's query.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("berth-registry-pull-").tempdir().expect("a temp dir")
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_pulls_a_private_image_with_an_image_pull_secret() {
    let docker = docker().await;
    let registry = Registry::start(Some(("puller", "right-pass-123")));
    let guard = NamespaceGuard::new("registry-pull");
    let ns = guard.name().to_string();
    let (image, _tag) = push_and_forget(&docker, &registry, &format!("{ns}/echo")).await;

    // Credentials as username/password under stringData.
    let config = serde_json::json!({
        "auths": { registry.addr(): { "username": "puller", "password": "right-pass-123" } }
    });
    let body = format!("stringData:\n  .dockerconfigjson: '{config}'\n");
    let dir = temp_dir();
    let port = free_port();
    let input = write_input(dir.path(), &ns, "pulled", &image, &body, port);
    let proxy = CountingProxy::start(&local_socket_path());
    let host = proxy.docker_host();
    let file = input.to_str().unwrap();

    let out = berth_async(["apply", "-f", file], &[("DOCKER_HOST", &host)]).await;
    out.assert_success();
    let pulls: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.endpoint() == "/images/create")
        .map(|r| r.to_string())
        .collect();
    assert_eq!(pulls.len(), 1, "one pull; requests:\n{}", proxy.describe());
    assert!(
        percent_decode(&pulls[0]).contains(&format!("fromImage={image}")),
        "the pull names the image {image}: {}",
        pulls[0]
    );

    let containers = names_ids_states(&docker, &ns).await;
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].2, "running", "{containers:?}");
    let inspect = docker.inspect_container(&containers[0].1, None).await.expect("inspect the container");
    // The tag was resolved to its digest (with the same credentials) and pulled by it.
    let created_from = inspect.config.and_then(|c| c.image).unwrap_or_default();
    let _pinned = TagGuard(created_from.clone());
    assert!(created_from.starts_with(&format!("{image}@sha256:")), "{image} pinned to its digest: {created_from}");
    assert!(image_present(&docker, &created_from).await, "{created_from} was pulled");
    let addr = format!("127.0.0.1:{port}");
    eventually("the pulled container to answer", WAIT, || {
        let addr = addr.clone();
        async move { http_get(&addr).filter(|(s, b)| *s == 200 && b == ECHO_BODY) }
    })
    .await;

    // The image is present now: a second apply neither pulls nor changes anything.
    proxy.reset();
    let again = berth_async(["apply", "-f", file], &[("DOCKER_HOST", &host)]).await;
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "{again}");
    assert_eq!(proxy.count_mutating(), 0, "requests:\n{}", proxy.describe());

    // Containers first, then the tag they were created from.
    drop(guard);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_registry_password_fails_the_apply_and_creates_nothing() {
    let docker = docker().await;
    let registry = Registry::start(Some(("puller", "right-pass-456")));
    let guard = NamespaceGuard::new("registry-wrong");
    let ns = guard.name().to_string();
    let (image, _tag) = push_and_forget(&docker, &registry, &format!("{ns}/echo")).await;

    // Credentials as a base64 `auth` under data (the other way Secrets carry them).
    let auth = base64::engine::general_purpose::STANDARD.encode("puller:wrong-pass");
    let config = serde_json::json!({ "auths": { registry.addr(): { "auth": auth } } });
    let body = format!(
        "data:\n  .dockerconfigjson: {}\n",
        base64::engine::general_purpose::STANDARD.encode(config.to_string())
    );
    let dir = temp_dir();
    let input = write_input(dir.path(), &ns, "refused", &image, &body, free_port());
    let proxy = CountingProxy::start(&local_socket_path());

    let out = berth_async(["apply", "-f", input.to_str().unwrap()], &[("DOCKER_HOST", &proxy.docker_host())]).await;
    out.assert_code(1);
    assert!(out.stderr.contains(&image), "the error names the image {image}\n{out}");
    let lower = out.stderr.to_lowercase();
    assert!(
        lower.contains("unauthorized") || lower.contains("authentication required"),
        "the error says the registry refused the credentials\n{out}"
    );
    // The credentials are first used to resolve the tag to a digest (through the engine),
    // and refused there.
    assert!(
        proxy.count_where(|r| r.endpoint().starts_with("/distribution/")) >= 1,
        "berth asked the registry; requests:\n{}",
        proxy.describe()
    );
    assert_eq!(
        proxy.count_where(|r| r.endpoint() == "/containers/create"),
        0,
        "no container is created when the image cannot be pulled; requests:\n{}",
        proxy.describe()
    );
    assert!(containers_in(&docker, &ns).await.is_empty(), "no container of the set exists");
    assert!(!image_present(&docker, &image).await, "nothing was pulled");
    drop(guard);
}
