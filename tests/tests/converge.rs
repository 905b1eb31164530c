//! Converging a real engine: from nothing, then again with nothing to do.
//!
//! The second apply is measured through a counting proxy in front of dockerd: berth must
//! make zero mutating requests when the host already matches.

use std::time::Duration;

use berth_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn converges_from_nothing_then_changes_nothing() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("converge");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = EchoSet::new(ns.name(), "web").replicas(1).host_port(port).write(dir.path());
    let file = file.to_str().unwrap();

    // From nothing: plan says what it will create and exits 2 (changes pending).
    let plan = berth_async(["plan", "-f", file], &[]).await;
    plan.assert_code(2);
    assert!(plan.stdout.contains("+ create"), "plan shows a create:\n{plan}");

    berth_async(["apply", "-f", file], &[]).await.assert_success();
    let (status, body) = http_get(&format!("127.0.0.1:{port}")).expect("the set answers on its host port");
    assert_eq!((status, body.as_str()), (200, ECHO_BODY));
    let first = names_ids_states(&docker, ns.name()).await;
    assert_eq!(first.len(), 1, "exactly one container: {first:?}");
    assert_eq!(first[0].2, "running");

    // Again, through the counting proxy: nothing to do, and nothing mutating sent.
    let proxy = CountingProxy::start(&local_socket_path());
    let env = [("DOCKER_HOST", proxy.docker_host())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let again = berth_async(["apply", "-f", file], &env).await;
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "second apply reports no changes:\n{again}");
    assert_eq!(proxy.count_mutating(), 0, "second apply made mutating requests: {}", proxy.describe());
    // One request in all: the label-filtered list (no `/version` round trip first).
    let requests = proxy.requests();
    assert!(
        requests.len() == 1 && requests[0].endpoint() == "/containers/json",
        "a converged host costs one list request: {}",
        proxy.describe()
    );

    // Plan on a converged host exits 0 and is read-only too, the same one request.
    proxy.reset();
    berth_async(["plan", "-f", file], &env).await.assert_code(0);
    assert_eq!(proxy.count_mutating(), 0, "plan made mutating requests: {}", proxy.describe());
    assert_eq!(proxy.requests().len(), 1, "plan on a converged host: {}", proxy.describe());

    assert_eq!(names_ids_states(&docker, ns.name()).await, first, "the container is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn scales_up_and_down_by_ordinal() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("scale");
    let dir = tempfile::tempdir().unwrap();
    let set = EchoSet::new(ns.name(), "api");
    let file = set.clone().replicas(3).write(dir.path());
    let file = file.to_str().unwrap();
    berth_async(["apply", "-f", file], &[]).await.assert_success();
    let three = names_ids_states(&docker, ns.name()).await;
    assert_eq!(three.len(), 3);
    for (name, _, state) in &three {
        assert_eq!(state, "running", "{name}");
        let addr = container_addr(&docker, name).await;
        assert_eq!(http_get(&addr).map(|(s, _)| s), Some(200), "{name} serves");
    }

    let file2 = set.clone().replicas(1).write(dir.path());
    berth_async(["apply", "-f", file2.to_str().unwrap()], &[]).await.assert_success();
    let one = names_ids_states(&docker, ns.name()).await;
    assert_eq!(one.len(), 1, "scaled down to one: {one:?}");
    assert!(one[0].0.ends_with(".0"), "ordinal 0 is kept: {one:?}");
    assert_eq!(one[0].1, three[0].1, "the kept container is the same one, not a new one");

    // Zero replicas removes them all.
    let file3 = set.replicas(0).write(dir.path());
    berth_async(["apply", "-f", file3.to_str().unwrap()], &[]).await.assert_success();
    eventually("all containers removed", Duration::from_secs(10), || async {
        containers_in(&docker, ns.name()).await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_sets_no_longer_declared_in_the_namespace() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("prune");
    let dir = tempfile::tempdir().unwrap();
    let a = EchoSet::new(ns.name(), "a").without_healthcheck().write(dir.path());
    let b = EchoSet::new(ns.name(), "b").without_healthcheck().write(dir.path());
    berth_async(["apply", "-f", dir.path().to_str().unwrap()], &[]).await.assert_success();
    assert_eq!(containers_in(&docker, ns.name()).await.len(), 2);

    std::fs::remove_file(&b).unwrap();
    // Without --prune, b is not berth's business in this run.
    berth_async(["apply", "-f", a.to_str().unwrap()], &[]).await.assert_success();
    assert_eq!(containers_in(&docker, ns.name()).await.len(), 2, "without --prune nothing is removed");

    let plan = berth_async(["plan", "--prune", "-f", a.to_str().unwrap()], &[]).await;
    plan.assert_code(2);
    assert!(plan.stdout.contains(&format!("set {}/b", ns.name())), "plan names the pruned set:\n{plan}");
    berth_async(["apply", "--prune", "-f", a.to_str().unwrap()], &[]).await.assert_success();
    let left = names_ids_states(&docker, ns.name()).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].0.contains(".a."), "set a stays: {left:?}");
}

/// `--concurrency N` bounds the changes in flight on a host across all the sets of a run
/// (each set executes on its own, side by side): never more than N container starts at once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrency_bounds_a_host_across_sets() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("bound");
    let dir = tempfile::tempdir().unwrap();
    for i in 0..8 {
        EchoSet::new(ns.name(), &format!("s{i}")).without_healthcheck().write(dir.path());
    }
    let proxy = CountingProxy::start(&local_socket_path());
    let host = proxy.docker_host();
    berth_async(["apply", "--concurrency", "2", "-f", dir.path().to_str().unwrap()], &[("DOCKER_HOST", host.as_str())])
        .await
        .assert_success();
    assert_eq!(containers_in(&docker, ns.name()).await.len(), 8, "every set runs");
    let starts: Vec<(std::time::Instant, std::time::Instant)> = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.endpoint().ends_with("/start"))
        .map(|r| (r.at, r.at + r.took.expect("every start was answered")))
        .collect();
    assert_eq!(starts.len(), 8, "{}", proxy.describe());
    // The most starts in flight at once: at each start's beginning, count those open then.
    let most = starts.iter().map(|(t, _)| starts.iter().filter(|(a, b)| a <= t && t < b).count()).max().unwrap();
    assert!(most <= 2, "{most} starts were in flight at once with --concurrency 2: {}", proxy.describe());
}
