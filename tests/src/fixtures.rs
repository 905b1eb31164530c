//! Builders for the YAML that tests feed to `berth`, and the queries tests make of an engine.
//!
//! Tests read like scenarios: "a set of 3 echo replicas with GREETING=hi", not a page of
//! YAML. The builder writes the same YAML a user would.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptionsBuilder;

use crate::image::ECHO_IMAGE;

/// A ContainerSet of the echo image, written as YAML.
#[derive(Clone, Debug)]
pub struct EchoSet {
    pub namespace: String,
    pub name: String,
    pub replicas: u32,
    pub env: Vec<(String, String)>,
    pub host_port: Option<u16>,
    pub healthcheck: bool,
    pub strategy: Option<&'static str>,
    /// `(volume name, target)` named volume mounts.
    pub volumes: Vec<(String, String)>,
    pub image: String,
    pub pull_policy: &'static str,
    pub pull_secret: Option<String>,
    /// Extra YAML lines appended under `template:` (already indented by 4 spaces).
    pub extra_template: String,
}

impl EchoSet {
    pub fn new(namespace: &str, name: &str) -> EchoSet {
        EchoSet {
            namespace: namespace.to_string(),
            name: name.to_string(),
            replicas: 1,
            env: Vec::new(),
            host_port: None,
            healthcheck: true,
            strategy: None,
            volumes: Vec::new(),
            image: ECHO_IMAGE.to_string(),
            pull_policy: "Never",
            pull_secret: None,
            extra_template: String::new(),
        }
    }

    pub fn replicas(mut self, n: u32) -> Self {
        self.replicas = n;
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.retain(|(name, _)| name != k);
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn host_port(mut self, p: u16) -> Self {
        self.host_port = Some(p);
        self
    }

    pub fn without_healthcheck(mut self) -> Self {
        self.healthcheck = false;
        self
    }

    pub fn strategy(mut self, s: &'static str) -> Self {
        self.strategy = Some(s);
        self
    }

    pub fn volume(mut self, name: &str, target: &str) -> Self {
        self.volumes.push((name.to_string(), target.to_string()));
        self
    }

    pub fn image(mut self, image: &str, pull_policy: &'static str) -> Self {
        self.image = image.to_string();
        self.pull_policy = pull_policy;
        self
    }

    pub fn pull_secret(mut self, name: &str) -> Self {
        self.pull_secret = Some(name.to_string());
        self
    }

    pub fn yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "apiVersion: berth.dev/v1alpha1\nkind: ContainerSet\nmetadata:");
        let _ = writeln!(y, "  name: {}\n  namespace: {}", self.name, self.namespace);
        let _ = writeln!(y, "spec:\n  replicasPerHost: {}", self.replicas);
        if let Some(s) = self.strategy {
            let _ = writeln!(y, "  strategy:\n    type: {s}\n    progressDeadlineSeconds: 30");
        } else {
            let _ = writeln!(y, "  strategy:\n    progressDeadlineSeconds: 30");
        }
        let _ = writeln!(y, "  template:\n    image: {}\n    imagePullPolicy: {}", self.image, self.pull_policy);
        if let Some(s) = &self.pull_secret {
            let _ = writeln!(y, "    imagePullSecrets:\n      - name: {s}");
        }
        let _ = writeln!(y, "    stopGracePeriodSeconds: 5");
        if !self.env.is_empty() {
            let _ = writeln!(y, "    env:");
            for (k, v) in &self.env {
                let _ = writeln!(y, "      - name: {k}\n        value: {v:?}");
            }
        }
        let _ = writeln!(y, "    ports:\n      - containerPort: 8080");
        if let Some(p) = self.host_port {
            let _ = writeln!(y, "        hostPort: {p}\n        hostIP: 127.0.0.1");
        }
        if !self.volumes.is_empty() {
            let _ = writeln!(y, "    mounts:");
            for (name, target) in &self.volumes {
                let _ = writeln!(y, "      - type: volume\n        source: {name}\n        target: {target}");
            }
        }
        if self.healthcheck {
            let _ = writeln!(
                y,
                "    healthcheck:\n      test: [\"CMD\", \"/echo\", \"--probe\"]\n      interval: 200ms\n      timeout: 1s\n      retries: 3"
            );
        }
        y.push_str(&self.extra_template);
        y
    }

    /// Write the YAML into `dir/<name>.yaml` and return the path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.yaml", self.name));
        std::fs::write(&path, self.yaml()).expect("write the test's YAML");
        path
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Every container (running or not) labelled with the test's namespace.
pub async fn containers_in(docker: &Docker, namespace: &str) -> Vec<ContainerSummary> {
    let filters = HashMap::from([("label".to_string(), vec![format!("berth.dev/namespace={namespace}")])]);
    let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    docker.list_containers(Some(opts)).await.expect("list containers")
}

/// `(name, id, state)` of the namespace's containers, sorted by name.
pub async fn names_ids_states(docker: &Docker, namespace: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = containers_in(docker, namespace)
        .await
        .into_iter()
        .map(|c| {
            (
                c.names.unwrap_or_default().first().cloned().unwrap_or_default().trim_start_matches('/').to_string(),
                c.id.unwrap_or_default(),
                c.state.map(|s| s.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `ip:8080` of a container on the default bridge: how tests reach replicas that publish no
/// host port.
pub async fn container_addr(docker: &Docker, name: &str) -> String {
    let c = docker.inspect_container(name, None).await.expect("inspect container");
    let nets = c.network_settings.and_then(|n| n.networks).unwrap_or_default();
    let ip = nets
        .values()
        .filter_map(|n| n.ip_address.clone())
        .find(|ip| !ip.is_empty())
        .unwrap_or_else(|| panic!("container {name} has no IP address"));
    format!("{ip}:8080")
}

/// Writes `docs` (objects as JSON values; JSON is YAML) into `dir/file` as one multi-document
/// file, as a user would hand it to `berth -f`, and returns its path.
pub fn write_documents(dir: &Path, file: &str, docs: &[serde_json::Value]) -> String {
    let text: Vec<String> = docs.iter().map(|d| serde_json::to_string(d).expect("JSON")).collect();
    let path = dir.join(file);
    std::fs::write(&path, text.join("\n---\n")).expect("write the test's YAML");
    path.display().to_string()
}
