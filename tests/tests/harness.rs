//! Tests of the shared harness itself, against the real engine: the counting proxy counts
//! what goes through it (and streams), the registry enforces auth and takes a push, the
//! namespace guard cleans up, and the helpers fail loudly instead of skipping.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use berth_tests::namespace::NAMESPACE_LABEL;
use berth_tests::{
    CountingProxy, ECHO_IMAGE, NamespaceGuard, Registry, basic_auth, berth, berth_bin, docker, docker_at,
    ensure_echo_image, eventually, http_request, local_socket_path, push_image,
};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, ListContainersOptions, RemoveContainerOptions, RemoveImageOptions,
};
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

const WAIT: Duration = Duration::from_secs(20);

/// Creates a stopped echo container labelled with `ns` (named after it), returns its id.
async fn create_labelled(docker: &Docker, ns: &str) -> String {
    let body = ContainerCreateBody {
        image: Some(ECHO_IMAGE.to_string()),
        labels: Some(HashMap::from([(NAMESPACE_LABEL.to_string(), ns.to_string())])),
        ..Default::default()
    };
    let opts = CreateContainerOptions { name: Some(ns.to_string()), ..Default::default() };
    docker.create_container(Some(opts), body).await.expect("create a container").id
}

async fn containers_of(docker: &Docker, ns: &str) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![format!("{NAMESPACE_LABEL}={ns}")])]);
    docker
        .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
        .await
        .expect("list containers")
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_counts_a_ping_and_a_list_as_two_gets() {
    docker().await;
    let proxy = CountingProxy::start(&local_socket_path());
    let client = docker_at(&proxy.docker_host()).await;
    proxy.reset(); // forget the version negotiation and ping of docker_at

    client.ping().await.expect("ping through the proxy");
    client.list_containers(None::<ListContainersOptions>).await.expect("list through the proxy");

    assert_eq!(proxy.count_by_method(), BTreeMap::from([("GET".to_string(), 2)]), "requests:\n{}", proxy.describe());
    assert_eq!(proxy.count_mutating(), 0);
    let endpoints: Vec<String> = proxy.requests().iter().map(|r| r.endpoint().to_string()).collect();
    assert_eq!(endpoints, ["/_ping", "/containers/json"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_counts_create_and_remove_as_mutating() {
    ensure_echo_image();
    let ns = NamespaceGuard::new("harness-proxy-mut");
    let proxy = CountingProxy::start(&local_socket_path());
    let client = docker_at(&proxy.docker_host()).await;
    proxy.reset();

    let id = create_labelled(&client, ns.name()).await;
    client
        .remove_container(&id, Some(RemoveContainerOptions { force: true, ..Default::default() }))
        .await
        .expect("remove through the proxy");

    assert_eq!(proxy.count_mutating(), 2, "requests:\n{}", proxy.describe());
    assert_eq!(proxy.count_by_method(), BTreeMap::from([("POST".to_string(), 1), ("DELETE".to_string(), 1)]));
    let create = &proxy.requests()[0];
    assert_eq!(create.endpoint(), "/containers/create");
    assert!(create.query.as_deref().unwrap_or("").contains(ns.name()), "{create}");
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_counts_every_request_of_a_keep_alive_connection() {
    docker().await;
    let proxy = CountingProxy::start(&local_socket_path());
    let stream = tokio::net::UnixStream::connect(proxy.socket_path()).await.expect("connect to the proxy");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP handshake with the proxy");
    tokio::spawn(conn);
    for path in ["/_ping", "/version", "/_ping"] {
        sender.ready().await.expect("the connection stays open between requests");
        let req = hyper::Request::get(path).header("Host", "docker").body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.expect("a response through the proxy");
        assert_eq!(resp.status(), 200, "{path}");
        resp.into_body().collect().await.expect("the whole body");
    }
    assert_eq!(proxy.count_by_method(), BTreeMap::from([("GET".to_string(), 3)]));
    let paths: Vec<String> = proxy.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/_ping", "/version", "/_ping"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_streams_events_without_buffering() {
    ensure_echo_image();
    let direct = docker().await;
    let ns = NamespaceGuard::new("harness-proxy-events");
    let proxy = CountingProxy::start(&local_socket_path());
    let client = docker_at(&proxy.docker_host()).await;
    let filters = HashMap::from([("label".to_string(), vec![ns.label_filter()])]);
    // The stream is lazy: poll it in a task so the request goes out now.
    let first_event = tokio::spawn(async move {
        let mut events = client.events(Some(EventsOptions { filters: Some(filters), ..Default::default() }));
        events.next().await
    });
    // The proxy records a request before forwarding it: once recorded, the container
    // created next cannot be missed by the stream.
    eventually("the /events request to reach the proxy", WAIT, || async {
        proxy.count_where(|r| r.endpoint() == "/events") == 1
    })
    .await;
    create_labelled(&direct, ns.name()).await;
    let event = tokio::time::timeout(WAIT, first_event)
        .await
        .expect("an event arrives through the proxy while the stream stays open")
        .expect("the events task")
        .expect("the stream is open")
        .expect("a valid event");
    assert_eq!(event.action.as_deref(), Some("create"), "{event:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_answers_upgrade_requests_with_501() {
    docker().await;
    let proxy = CountingProxy::start(&local_socket_path());
    let stream = tokio::net::UnixStream::connect(proxy.socket_path()).await.expect("connect to the proxy");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP handshake with the proxy");
    tokio::spawn(conn);
    let req = hyper::Request::post("/v1.41/containers/x/attach?stream=1")
        .header("Host", "docker")
        .header("Connection", "Upgrade")
        .header("Upgrade", "tcp")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("a response from the proxy");
    assert_eq!(resp.status(), 501);
    assert_eq!(proxy.count_mutating(), 1, "an upgrade request is still counted");
}

#[test]
fn registry_with_auth_rejects_anonymous_and_accepts_basic_auth() {
    let registry = Registry::start(Some(("berth", "s3cret-pass")));
    let anonymous = http_request(registry.addr(), "GET", "/v2/", &[]).expect("the registry answers");
    assert_eq!(anonymous.0, 401, "anonymous GET /v2/: {anonymous:?}");
    let right = basic_auth("berth", "s3cret-pass");
    let authed =
        http_request(registry.addr(), "GET", "/v2/", &[("Authorization", &right)]).expect("the registry answers");
    assert_eq!(authed.0, 200, "GET /v2/ with the right credentials: {authed:?}");
    let wrong = basic_auth("berth", "wrong");
    let refused =
        http_request(registry.addr(), "GET", "/v2/", &[("Authorization", &wrong)]).expect("the registry answers");
    assert_eq!(refused.0, 401, "GET /v2/ with a wrong password: {refused:?}");
}

#[test]
fn registry_without_auth_accepts_anonymous() {
    let registry = Registry::start(None);
    let anonymous = http_request(registry.addr(), "GET", "/v2/", &[]).expect("the registry answers");
    assert_eq!(anonymous.0, 200, "{anonymous:?}");
    assert!(registry.credentials().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_echo_image_pushes_to_a_registry_with_credentials() {
    ensure_echo_image();
    let docker = docker().await;
    let registry = Registry::start(Some(("pusher", "push-pass")));

    // Without credentials the registry refuses the push.
    let anonymous_ref = format!("{}/harness-echo:anonymous", registry.addr());
    let refused = push_image(&docker, ECHO_IMAGE, &anonymous_ref, None).await;
    assert!(refused.is_err(), "an anonymous push to an auth registry must fail");

    let remote = registry.push(&docker, ECHO_IMAGE, "harness-echo:v1").await;
    assert_eq!(remote, format!("{}/harness-echo:v1", registry.addr()));
    let auth = registry.basic_auth().expect("the registry has credentials");
    let tags = http_request(registry.addr(), "GET", "/v2/harness-echo/tags/list", &[("Authorization", &auth)])
        .expect("the registry answers");
    assert_eq!(tags.0, 200, "{tags:?}");
    assert!(tags.1.contains("\"v1\""), "tags list: {}", tags.1);

    // Leave the engine as we found it: drop the local tags this test created.
    for reference in [&remote, &anonymous_ref] {
        docker
            .remove_image(reference, Some(RemoveImageOptions { noprune: true, ..Default::default() }), None)
            .await
            .unwrap_or_else(|e| panic!("untag {reference}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_guard_removes_its_containers_on_drop() {
    ensure_echo_image();
    let docker = docker().await;
    let guard = NamespaceGuard::new("harness-guard");
    let ns = guard.name().to_string();
    create_labelled(&docker, &ns).await;
    assert_eq!(containers_of(&docker, &ns).await, 1);
    drop(guard);
    assert_eq!(containers_of(&docker, &ns).await, 0, "the guard removed the container");
}

#[test]
fn namespace_guard_cleans_up_when_the_test_panics() {
    ensure_echo_image();
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let guard = NamespaceGuard::new("harness-panic");
        tx.send(guard.name().to_string()).unwrap();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            create_labelled(&docker().await, guard.name()).await;
        });
        panic!("a failing test");
    })
    .join();
    assert!(failed.is_err());
    let ns = rx.recv().unwrap();
    let left = tokio::runtime::Runtime::new().unwrap().block_on(async { containers_of(&docker().await, &ns).await });
    assert_eq!(left, 0, "the guard removed the container while the test unwound");
}

#[tokio::test]
#[should_panic(
    expected = "no Docker engine answers at unix:///nonexistent/docker.sock: start one with scripts/start-docker.sh"
)]
async fn docker_fails_loudly_when_no_engine_answers() {
    docker_at("unix:///nonexistent/docker.sock").await;
}

#[tokio::test]
async fn eventually_returns_the_settled_value() {
    let mut tries = 0;
    let got = eventually("the third try", WAIT, || {
        tries += 1;
        let n = tries;
        async move { (n >= 3).then_some(n) }
    })
    .await;
    assert_eq!(got, 3);
}

#[tokio::test]
#[should_panic(expected = "waiting for a condition that never holds; last: \"nope\"")]
async fn eventually_panics_naming_what_it_waited_for() {
    eventually("a condition that never holds", Duration::from_millis(100), || async { Err::<(), _>("nope") }).await;
}

#[test]
fn the_berth_binary_is_built_and_runs() {
    let bin = berth_bin();
    assert!(bin.is_file(), "{}", bin.display());
    assert_eq!(bin.file_name().unwrap(), "berth");
    let out = berth(["--help"], &[]);
    out.assert_success();
}
