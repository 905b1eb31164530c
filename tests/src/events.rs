//! The engine's container events of one namespace, read back after the fact: what the tests
//! use to see what berth did, in which order.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use futures::StreamExt as _;

/// Events of namespace `ns`'s containers on an engine from `since` until now, oldest first,
/// without the healthcheck's execs.
///
/// # Panics
/// When the engine's event stream cannot be read.
pub async fn container_events(docker: &Docker, ns: &str, since: SystemTime) -> Vec<EventMessage> {
    let since_ns = since.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as i64;
    let opts = EventsOptions {
        since: Some((since_ns / 1_000_000_000 - 1).to_string()),
        until: Some((SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() + 1).to_string()),
        filters: Some(HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![format!("berth.dev/namespace={ns}")]),
        ])),
    };
    let all: Vec<EventMessage> = docker.events(Some(opts)).map(|e| e.expect("read engine events")).collect().await;
    all.into_iter()
        .filter(|e| e.time_nano.unwrap_or(0) >= since_ns)
        .filter(|e| !e.action.as_deref().unwrap_or("").starts_with("exec_"))
        .collect()
}

/// `(action, container name)` of each event.
pub fn action_and_name(e: &EventMessage) -> (String, String) {
    let name = e.actor.as_ref().and_then(|a| a.attributes.as_ref()).and_then(|a| a.get("name").cloned());
    (e.action.clone().unwrap_or_default(), name.unwrap_or_default())
}
