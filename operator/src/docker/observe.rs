//! Observing a host: one label-filtered container list, nothing else. The list carries every
//! label and a status text with the health verdict, which is all the planner needs; no
//! per-container inspect on the hot path.
//!
//! Drift the list shows by itself is marked here ([`crate::engine::list_drift`]): a name other
//! than the deterministic one (renamed), an image other than its spec label's (a container that
//! claims a revision it was not created from). What only the event stream shows is marked
//! afterwards by the caller, from a [`super::events::DriftLog`].

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptionsBuilder;

use super::DockerError;
use crate::engine::{Health, HostBinding, ObservedContainer, SetKey, State, labels, list_drift};

/// Every container on the host that carries berth's managed-by label. `host` names the host
/// in a timeout's message.
pub async fn observe(host: &str, docker: &Docker) -> Result<Vec<ObservedContainer>, DockerError> {
    let list = list(host, docker).await?.map_err(|e| DockerError::api("list containers on", "host", e))?;
    Ok(observed(list))
}

/// The one request: berth's containers, stopped ones included; bounded and tried again while
/// the engine does not answer ([`super::bounds::read`]).
pub(super) async fn list(
    host: &str,
    docker: &Docker,
) -> Result<Result<Vec<ContainerSummary>, bollard::errors::Error>, DockerError> {
    let filters: HashMap<String, Vec<String>> =
        HashMap::from([("label".to_string(), vec![format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE)])]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    super::bounds::read(host, "list containers", super::bounds::LIST, || docker.list_containers(Some(options.clone())))
        .await
}

pub(super) fn observed(list: Vec<ContainerSummary>) -> Vec<ObservedContainer> {
    list.into_iter().filter_map(to_observed).collect()
}

fn to_observed(c: ContainerSummary) -> Option<ObservedContainer> {
    let labels = c.labels.unwrap_or_default();
    let name = c.names.unwrap_or_default().into_iter().next().unwrap_or_default();
    let state = c.state.map(|s| State::parse(s.as_ref())).unwrap_or(State::Dead);
    let name = name.trim_start_matches('/').to_string();
    let set = SetKey::new(
        labels.get(labels::NAMESPACE).cloned().unwrap_or_default(),
        labels.get(labels::SET).cloned().unwrap_or_default(),
    );
    let revision = labels.get(labels::REVISION).cloned().unwrap_or_default();
    let ordinal = labels.get(labels::ORDINAL).and_then(|o| o.parse().ok());
    let image = c.image.unwrap_or_default();
    let spec_json = labels.get(labels::SPEC).cloned();
    let drift = list_drift(&set, &revision, ordinal, &name, &image, spec_json.as_deref());
    Some(ObservedContainer {
        id: c.id?,
        name,
        set,
        revision,
        ordinal,
        state,
        health: c.status.as_deref().and_then(health_from_status),
        image,
        spec_json,
        host_bindings: labels
            .get(labels::HOST_PORTS)
            .map(|s| s.split(',').filter_map(HostBinding::parse).collect())
            .unwrap_or_default(),
        drift,
        exit_code: c.status.as_deref().and_then(exit_code_from_status),
    })
}

/// The list's status text of an exited container: `Exited (3) 5 seconds ago`.
pub fn exit_code_from_status(status: &str) -> Option<i64> {
    status.strip_prefix("Exited (")?.split_once(')')?.0.parse().ok()
}

/// The list's status text ends in `(healthy)`, `(unhealthy)` or `(health: starting)` when the
/// container has a healthcheck.
pub fn health_from_status(status: &str) -> Option<Health> {
    if status.ends_with("(healthy)") {
        Some(Health::Healthy)
    } else if status.ends_with("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.ends_with("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_text() {
        assert_eq!(health_from_status("Up 3 seconds (healthy)"), Some(Health::Healthy));
        assert_eq!(health_from_status("Up 1 second (health: starting)"), Some(Health::Starting));
        assert_eq!(health_from_status("Up 2 minutes (unhealthy)"), Some(Health::Unhealthy));
        assert_eq!(health_from_status("Up 2 minutes"), None);
        assert_eq!(health_from_status("Exited (0) 3 seconds ago"), None);
        assert_eq!(exit_code_from_status("Exited (0) 3 seconds ago"), Some(0));
        assert_eq!(exit_code_from_status("Exited (137) About a minute ago"), Some(137));
        assert_eq!(exit_code_from_status("Up 2 minutes"), None);
        assert_eq!(exit_code_from_status("Created"), None);
    }
}
