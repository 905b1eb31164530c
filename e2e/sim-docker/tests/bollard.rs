//! bollard, as berth uses it, against a simulated engine: version negotiation, a label-filtered
//! list, create/start/stop/remove, inspect, images, and the event stream.

use std::collections::HashMap;
use std::time::Duration;

use berth_sim_docker::SimFleet;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;

const MANAGED: &str = "berth.dev/managed-by=berth";

async fn connect(fleet: &SimFleet, i: usize) -> Docker {
    let addr = fleet.addr(i).to_string();
    Docker::connect_with_http(&addr, 10, bollard::API_DEFAULT_VERSION).unwrap().negotiate_version().await.unwrap()
}

fn managed_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![MANAGED.to_string()])])
}

#[tokio::test]
async fn bollard_runs_a_container_through_its_life_on_a_simulated_engine() {
    let fleet = SimFleet::start(2).unwrap();
    let docker = connect(&fleet, 1).await;
    assert_eq!(docker.client_version().to_string(), "1.41");
    let info = docker.info().await.unwrap();
    assert_eq!(info.ncpu, Some(4));

    // The stream is lazy: follow it from a task, and go on once the engine has the follower.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let follower = docker.clone();
    tokio::spawn(async move {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![MANAGED.to_string()]),
        ]);
        let mut stream = follower.events(Some(EventsOptionsBuilder::default().filters(&filters).build()));
        while let Some(e) = stream.next().await {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while fleet.host(1).followers() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the event stream reaches the engine");
    let image = docker.inspect_image("sim/app:1").await.unwrap();
    let registry = docker.inspect_registry_image("sim/app:1", None).await.unwrap();
    let digest = registry.descriptor.digest.unwrap();
    assert_eq!(image.repo_digests.unwrap(), [format!("sim/app@{digest}")]);

    let body = ContainerCreateBody {
        image: Some(format!("sim/app:1@{digest}")),
        labels: Some(HashMap::from([("berth.dev/managed-by".to_string(), "berth".to_string())])),
        ..Default::default()
    };
    let name = "ns.web.abc.0";
    docker.create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body).await.unwrap();
    docker.start_container(name, None).await.unwrap();
    let list_opts = ListContainersOptionsBuilder::default().all(true).filters(&managed_filter()).build();
    let listed = docker.list_containers(Some(list_opts.clone())).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, Some(ContainerSummaryStateEnum::RUNNING));
    assert_eq!(listed[0].names.as_deref(), Some(&[format!("/{name}")][..]));
    let inspected = docker.inspect_container(name, None).await.unwrap();
    assert_eq!(inspected.state.unwrap().status, Some(ContainerStateStatusEnum::RUNNING));
    assert_eq!(fleet.host(0).len(), 0, "engines are apart");

    docker.stop_container(name, None).await.unwrap();
    let force = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    docker.remove_container(name, Some(force)).await.unwrap();
    assert!(docker.list_containers(Some(list_opts)).await.unwrap().is_empty());

    let mut actions = Vec::new();
    while actions.last().map(String::as_str) != Some("destroy") {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(e.actor.unwrap().attributes.unwrap().get("name").map(String::as_str), Some(name));
        actions.push(e.action.unwrap());
    }
    assert_eq!(actions, ["create", "start", "kill", "die", "stop", "destroy"]);
    assert_eq!(fleet.requests().unknown_total(), 0, "{:?}", fleet.requests().unknown());
    let routes = fleet.requests().by_route();
    assert_eq!(routes.get("GET /containers/json"), Some(&2));
    assert_eq!(routes.get("POST /containers/create"), Some(&1));
}

#[tokio::test]
async fn an_unknown_route_is_a_404_and_counted() {
    let fleet = SimFleet::start(1).unwrap();
    let docker = connect(&fleet, 0).await;
    let e =
        docker.inspect_network("berth", None::<bollard::query_parameters::InspectNetworkOptions>).await.unwrap_err();
    assert!(matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }), "{e:?}");
    assert_eq!(fleet.requests().unknown_total(), 1);
    assert_eq!(fleet.requests().unknown().keys().collect::<Vec<_>>(), ["GET /networks/berth"]);
}
