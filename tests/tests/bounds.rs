//! No Docker call without a bound: an engine that stops answering is named within seconds,
//! a read that stalls once is tried again, and a stop waits the container's own grace period
//! (told to the engine explicitly), no more, no less.

use std::time::{Duration, Instant};

use berth_tests::stall::{StallRule, StallingProxy};
use berth_tests::*;

/// `berth plan` against an engine whose container list never answers: it fails, naming the
/// host, the call and its bound, in seconds (one flat client timeout made that 120 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_list_that_never_answers_fails_in_seconds_naming_the_host() {
    ensure_echo_image();
    let ns = NamespaceGuard::new("bounds-stall");
    let dir = tempfile::tempdir().unwrap();
    let file = EchoSet::new(ns.name(), "web").write(dir.path());
    let proxy =
        StallingProxy::start(&local_socket_path(), StallRule { endpoint: "/containers/json".into(), times: None });
    let host = proxy.docker_host();
    let started = Instant::now();
    let plan = berth_async(["plan", "-f", file.to_str().unwrap()], &[("DOCKER_HOST", host.as_str())]).await;
    let took = started.elapsed();
    plan.assert_code(1);
    let said = format!("{}{}", plan.stdout, plan.stderr);
    assert!(
        said.contains(&format!("list containers on {host} got no answer within 5s")),
        "the error names the call, the host and the bound:\n{plan}"
    );
    assert!(said.contains("host local"), "the error names the host:\n{plan}");
    assert_eq!(proxy.stalled(), 2, "the list was tried twice (one retry)");
    assert!(took < Duration::from_secs(20), "plan gave up after {took:?}:\n{plan}");
}

/// A list that stalls once and answers when tried again: the run goes on as if nothing happened.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_that_stalls_once_is_tried_again_and_the_apply_succeeds() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("bounds-retry");
    let dir = tempfile::tempdir().unwrap();
    let file = EchoSet::new(ns.name(), "web").write(dir.path());
    let proxy =
        StallingProxy::start(&local_socket_path(), StallRule { endpoint: "/containers/json".into(), times: Some(1) });
    let host = proxy.docker_host();
    let apply = berth_async(["apply", "-f", file.to_str().unwrap()], &[("DOCKER_HOST", host.as_str())]).await;
    apply.assert_success();
    assert_eq!(proxy.stalled(), 1, "the first list was held");
    assert!(proxy.matched_forwarded() >= 1, "the list was sent again and answered");
    let running = names_ids_states(&docker, ns.name()).await;
    assert_eq!(running.len(), 1, "the set runs: {running:?}");
}

/// A container that ignores its stop signal is stopped after its own grace period: berth tells
/// the engine that grace (`t=3`) and waits for it, within a bound derived from it.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_waits_the_containers_own_grace_and_says_so_to_the_engine() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("bounds-grace");
    let dir = tempfile::tempdir().unwrap();
    // PID 1 without a handler ignores SIGUSR1: the stop lasts the whole grace, then a kill.
    let yaml = EchoSet::new(ns.name(), "web")
        .yaml()
        .replace("stopGracePeriodSeconds: 5", "stopGracePeriodSeconds: 3\n    stopSignal: SIGUSR1");
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, yaml).unwrap();
    let file = file.to_str().unwrap();
    berth_async(["apply", "-f", file], &[]).await.assert_success();
    assert_eq!(names_ids_states(&docker, ns.name()).await.len(), 1);

    let proxy = CountingProxy::start(&local_socket_path());
    let host = proxy.docker_host();
    let started = Instant::now();
    berth_async(["delete", "-f", file], &[("DOCKER_HOST", host.as_str())]).await.assert_success();
    let took = started.elapsed();
    let stops: Vec<Request> =
        proxy.requests().into_iter().filter(|r| r.method == "POST" && r.endpoint().ends_with("/stop")).collect();
    assert_eq!(stops.len(), 1, "one stop: {}", proxy.describe());
    assert_eq!(stops[0].query.as_deref(), Some("t=3"), "the grace is passed explicitly: {}", proxy.describe());
    let stop_took = stops[0].took.expect("the engine answered the stop");
    assert!(stop_took >= Duration::from_secs(3), "the stop waited the grace: {stop_took:?}");
    assert!(took < Duration::from_secs(15), "delete took {took:?}");
    assert!(names_ids_states(&docker, ns.name()).await.is_empty(), "the container is gone");
}
