//! Placement and what a set needs on a host: DockerHost objects chosen by label selector,
//! user-defined networks created on demand.

use berth_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_set_runs_on_the_hosts_its_selector_picks_and_nowhere_else() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("placement");
    let dir = tempfile::tempdir().unwrap();
    let socket = local_socket_path();
    let host = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: DockerHost\nmetadata:\n  name: engine-a\n  namespace: {ns}\n  labels:\n    role: web\nspec:\n  endpoint: unix://{}\n",
        socket.display(),
        ns = ns.name()
    );
    std::fs::write(dir.path().join("host.yaml"), host).unwrap();
    // A set that selects no host at all is refused as a mistake; "elsewhere" selects this one,
    // which is cordoned, so it runs nowhere (and the engine is the same, so a container placed
    // here by mistake would show).
    let cordoned = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: DockerHost\nmetadata:\n  name: engine-b\n  namespace: {ns}\n  labels:\n    role: db\nspec:\n  endpoint: unix://{}\n  unschedulable: true\n",
        socket.display(),
        ns = ns.name()
    );
    std::fs::write(dir.path().join("host-cordoned.yaml"), cordoned).unwrap();
    let mut picked = EchoSet::new(ns.name(), "picked").without_healthcheck();
    picked.extra_template = String::new();
    let picked_yaml = picked.yaml().replace("spec:\n", "spec:\n  hostSelector:\n    matchLabels:\n      role: web\n");
    std::fs::write(dir.path().join("picked.yaml"), picked_yaml).unwrap();
    let other = EchoSet::new(ns.name(), "elsewhere").without_healthcheck();
    let other_yaml = other.yaml().replace("spec:\n", "spec:\n  hostSelector:\n    matchLabels:\n      role: db\n");
    std::fs::write(dir.path().join("elsewhere.yaml"), other_yaml).unwrap();

    let plan = berth_async(["plan", "-f", dir.path().to_str().unwrap()], &[]).await;
    plan.assert_code(2);
    assert!(plan.stdout.contains("host engine-a (unix://"), "the plan is per declared host:\n{plan}");
    berth_async(["apply", "-f", dir.path().to_str().unwrap()], &[]).await.assert_success();
    let names: Vec<String> = names_ids_states(&docker, ns.name()).await.into_iter().map(|c| c.0).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].contains(".picked."), "only the selected set runs: {names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn networks_are_created_on_demand_and_containers_join_them() {
    ensure_echo_image();
    let docker = docker().await;
    let ns = NamespaceGuard::new("networks");
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (format!("{}-front", ns.name()), format!("{}-back", ns.name()));
    let mut set = EchoSet::new(ns.name(), "app").without_healthcheck();
    set.extra_template = format!("    networks: [{front}, {back}]\n");
    let file = set.write(dir.path());
    berth_async(["apply", "-f", file.to_str().unwrap()], &[]).await.assert_success();

    let c = &names_ids_states(&docker, ns.name()).await[0];
    let inspect = docker.inspect_container(&c.0, None).await.unwrap();
    let nets = inspect.network_settings.and_then(|n| n.networks).unwrap_or_default();
    assert!(nets.contains_key(&front) && nets.contains_key(&back), "joined both networks: {:?}", nets.keys());
    // Applying again changes nothing: the networks exist, the container is the same.
    let again = berth_async(["plan", "-f", file.to_str().unwrap()], &[]).await;
    again.assert_code(0);

    drop(ns); // remove the containers before their networks
    for n in [&front, &back] {
        docker.remove_network(n).await.unwrap_or_else(|e| panic!("remove test network {n}: {e}"));
    }
}
