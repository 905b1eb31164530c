//! User-defined networks: the ones sets declare and each namespace's default network
//! (`<namespace>_default`), created on demand and labelled as berth's; a namespace's default
//! network is removed again when berth deletes its last set there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::NetworkCreateRequest;

use super::{DockerError, bounds, status_of};
use crate::engine::labels;

fn managed_labels() -> HashMap<String, String> {
    HashMap::from([(labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string())])
}

/// A lock per `(host, network name)`.
type NetworkLocks = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// One creation at a time per host and network name, for the whole process: Docker before API
/// 1.44 makes a second network of the same name when two creates race (sets of a namespace
/// rolled out side by side all ensure its default network), and a name two networks share
/// cannot be used.
fn network_lock(host: &str, name: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<Mutex<NetworkLocks>> = std::sync::OnceLock::new();
    let mut locks = LOCKS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    locks.entry((host.to_string(), name.to_string())).or_default().clone()
}

/// Create the user-defined bridge network `name` unless it exists, labelled as berth's.
pub async fn ensure(host: &str, docker: &Docker, name: &str) -> Result<(), DockerError> {
    let lock = network_lock(host, name);
    let _one_at_a_time = lock.lock().await;
    let inspect = || docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>);
    match bounds::read(host, "inspect network", bounds::READ, inspect).await? {
        Ok(_) => return Ok(()),
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => return Err(DockerError::api("inspect network", name, e)),
    }
    let req = NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("bridge".into()),
        labels: Some(managed_labels()),
        ..Default::default()
    };
    match bounds::within(host, "create network", bounds::CHANGE, docker.create_network(req)).await? {
        // 409: created meanwhile by a concurrent run.
        Err(e) if status_of(&e) != Some(409) => Err(DockerError::api("create network", name, e)),
        _ => Ok(()),
    }
}

/// What reclaiming a network did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reclaim {
    Removed,
    /// No such network.
    Absent,
    /// Not berth's (a user's network of that name): kept.
    NotOwned,
    /// Containers are still attached (other sets of the namespace, or a user's): kept.
    InUse,
}

/// Remove network `name` on `host` if berth made it and nothing is attached to it.
pub async fn reclaim(host: &str, docker: &Docker, name: &str) -> Result<Reclaim, DockerError> {
    let inspect = || docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>);
    let network = match bounds::read(host, "inspect network", bounds::READ, inspect).await? {
        Ok(n) => n,
        Err(e) if status_of(&e) == Some(404) => return Ok(Reclaim::Absent),
        Err(e) => return Err(DockerError::api("inspect network", name, e)),
    };
    let ours = network.labels.as_ref().and_then(|l| l.get(labels::MANAGED_BY)).map(String::as_str)
        == Some(labels::MANAGED_BY_VALUE);
    if !ours {
        return Ok(Reclaim::NotOwned);
    }
    if network.containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Ok(Reclaim::InUse);
    }
    match bounds::within(host, "remove network", bounds::CHANGE, docker.remove_network(name)).await? {
        Ok(()) => Ok(Reclaim::Removed),
        Err(e) if status_of(&e) == Some(404) => Ok(Reclaim::Absent),
        // Attached meanwhile ("has active endpoints").
        Err(e) if matches!(status_of(&e), Some(403) | Some(409)) => Ok(Reclaim::InUse),
        Err(e) => Err(DockerError::api("remove network", name, e)),
    }
}
