//! One connection per DockerHost, kept and reused, and the engine's event stream of each
//! turned into reconcile triggers.
//!
//! A connection is keyed by the host's name and endpoint; a changed endpoint (or TLS
//! material) makes a new one. For every connection a task follows `/events` filtered on
//! berth's label: a managed container that dies, is destroyed, renamed, updated or paused
//! wakes the owning set's reconcile at once instead of on the next resync.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Mutex, mpsc};

use berth_crd::ContainerSet;

use crate::docker::{self, DockerError, Endpoint};
use crate::engine::labels;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::MethodLabels;

/// Docker event actions that mean a managed container changed behind berth's back (or by
/// berth itself, which costs one no-op reconcile).
const TRIGGERS: [&str; 6] = ["die", "destroy", "rename", "update", "pause", "oom"];

struct Connection {
    endpoint: String,
    docker: Docker,
    events: tokio::task::JoinHandle<()>,
}

/// The live connections.
pub struct HostPool {
    connections: Mutex<HashMap<String, Connection>>,
    triggers: mpsc::UnboundedSender<ObjectRef<ContainerSet>>,
    metrics: Arc<Metrics>,
}

impl HostPool {
    /// A pool whose event followers send the sets to reconcile into `triggers`.
    pub fn new(triggers: mpsc::UnboundedSender<ObjectRef<ContainerSet>>, metrics: Arc<Metrics>) -> Arc<HostPool> {
        Arc::new(HostPool { connections: Mutex::new(HashMap::new()), triggers, metrics })
    }

    /// The connection to `host` at `endpoint`, made (and its event follower started) if new.
    /// `key` identifies the TLS material, so rotated certificates reconnect.
    pub async fn get(&self, host: &str, endpoint: &Endpoint, key: &str) -> Result<Docker, DockerError> {
        let id = format!("{endpoint}|{key}");
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(host)
            && c.endpoint == id
            && !c.events.is_finished()
        {
            return Ok(c.docker.clone());
        }
        let metrics = self.metrics.clone();
        // Count every request by method (labels stay bounded: a handful of methods).
        let docker = docker::connect(endpoint).await?.with_request_modifier(move |req| {
            metrics.docker_requests.get_or_create(&MethodLabels { method: req.method().to_string() }).inc();
            req
        });
        let events = tokio::spawn(follow_events(host.to_string(), docker.clone(), self.triggers.clone()));
        if let Some(old) = conns.insert(host.to_string(), Connection { endpoint: id, docker: docker.clone(), events }) {
            old.events.abort();
        }
        Ok(docker)
    }

    /// Drop a host's connection (after an error, so the next use reconnects).
    pub async fn forget(&self, host: &str) {
        if let Some(c) = self.connections.lock().await.remove(host) {
            c.events.abort();
        }
    }
}

/// Whether an exec's command line is the healthcheck of the spec in the container's label.
/// The engine reports the command as its arguments joined by spaces; a `CMD-SHELL` check runs
/// as `/bin/sh -c <command>`.
pub fn is_healthcheck(command: &str, spec_label: Option<&str>) -> bool {
    let Some(spec) = spec_label.and_then(|s| serde_json::from_str::<crate::engine::ContainerSpec>(s).ok()) else {
        return false;
    };
    let Some(test) = spec.healthcheck.map(|h| h.test) else { return false };
    match test.split_first() {
        Some((kind, args)) if kind == "CMD" => args.join(" ") == command,
        Some((kind, args)) if kind == "CMD-SHELL" => format!("/bin/sh -c {}", args.join(" ")) == command,
        _ => false,
    }
}

async fn follow_events(host: String, docker: Docker, triggers: mpsc::UnboundedSender<ObjectRef<ContainerSet>>) {
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), vec![format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE)]),
    ]);
    let opts = EventsOptionsBuilder::default().filters(&filters).build();
    let mut stream = docker.events(Some(opts));
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(host, error = %e, "docker event stream ended");
                return;
            }
        };
        let action = event.action.unwrap_or_default();
        let attrs = event.actor.and_then(|a| a.attributes).unwrap_or_default();
        let relevant = match action.strip_prefix("exec_start: ") {
            // An exec is drift, unless it is the container's own healthcheck running.
            Some(command) => !is_healthcheck(command, attrs.get(labels::SPEC).map(String::as_str)),
            None => TRIGGERS.iter().any(|t| action == *t),
        };
        if !relevant {
            continue;
        }
        let (Some(ns), Some(set)) = (attrs.get(labels::NAMESPACE), attrs.get(labels::SET)) else { continue };
        tracing::debug!(host, action, namespace = %ns, set = %set, "docker event");
        if triggers.send(ObjectRef::new(set).within(ns)).is_err() {
            return; // the controller is gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_healthcheck;

    #[test]
    fn a_healthcheck_exec_is_not_drift() {
        let spec = r#"{"image":"e:1","restartPolicy":"no","healthcheck":{"test":["CMD","/echo","--probe"]}}"#;
        assert!(is_healthcheck("/echo --probe", Some(spec)));
        assert!(!is_healthcheck("/bin/sh", Some(spec)));
        let shell = r#"{"image":"e:1","restartPolicy":"no","healthcheck":{"test":["CMD-SHELL","curl -f localhost"]}}"#;
        assert!(is_healthcheck("/bin/sh -c curl -f localhost", Some(shell)));
        assert!(!is_healthcheck("/echo --probe", None));
    }
}
