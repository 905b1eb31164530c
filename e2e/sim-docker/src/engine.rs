//! One simulated engine's state: containers in memory (id, name, image, labels, state), the
//! images it claims to have, and its event stream. No I/O; [`crate::http`] speaks the API.
//!
//! Every transition happens at once: a create is a map insert, a start flips a state. What the
//! benchmark measures is the operator, so the engine is as close to free as it can be while
//! still answering what bollard asks the way Docker 20.10 (API 1.41) answers it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

/// How many events a slow event-stream reader may fall behind before it misses some.
const EVENT_BUFFER: usize = 4096;

/// A container's lifecycle state, as `docker ps` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
}

/// One container.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: State,
    pub created: i64,
    /// The create body as sent, for inspect's `Config` and `HostConfig`.
    pub body: Value,
}

/// One engine event, sent to every open `/events` stream of the host.
#[derive(Clone, Debug)]
pub struct Event {
    pub action: &'static str,
    pub id: String,
    /// The container's labels, plus `name` and `image`, as Docker puts them in `Actor.Attributes`.
    pub attributes: BTreeMap<String, String>,
    pub time_nano: i64,
}

impl Event {
    /// The event as one line of the `/events` stream.
    pub fn to_json(&self) -> Value {
        json!({
            "Type": "container",
            "Action": self.action,
            "status": self.action,
            "id": self.id,
            "from": self.attributes.get("image"),
            "Actor": {"ID": self.id, "Attributes": self.attributes},
            "scope": "local",
            "time": self.time_nano / 1_000_000_000,
            "timeNano": self.time_nano,
        })
    }
}

/// Why a container call failed, with Docker's status code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineError {
    pub code: u16,
    pub message: String,
}

impl EngineError {
    fn no_such_container(id: &str) -> Self {
        EngineError { code: 404, message: format!("No such container: {id}") }
    }
}

#[derive(Default)]
struct Containers {
    by_id: HashMap<String, Container>,
    by_name: HashMap<String, String>,
    seq: u64,
}

impl Containers {
    /// Docker's lookup order: full id, name, then a unique id prefix.
    fn resolve(&self, id_or_name: &str) -> Option<String> {
        let key = id_or_name.trim_start_matches('/');
        if self.by_id.contains_key(key) {
            return Some(key.to_string());
        }
        if let Some(id) = self.by_name.get(key) {
            return Some(id.clone());
        }
        let mut matches = self.by_id.keys().filter(|id| id.starts_with(key));
        match (matches.next(), matches.next()) {
            (Some(id), None) if !key.is_empty() => Some(id.clone()),
            _ => None,
        }
    }
}

/// One simulated engine.
pub struct Host {
    /// Its position in the fleet; part of every container id, so ids are unique fleet-wide.
    pub index: usize,
    containers: Mutex<Containers>,
    events: broadcast::Sender<Arc<Event>>,
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default()
}

/// `sha256:<hex>` of `text`: stable ids and digests for images that exist only here.
pub fn digest_of(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// The repository of an image reference: `sim/app:1@sha256:…` → `sim/app`.
pub fn repository_of(image: &str) -> &str {
    let no_digest = image.split_once('@').map_or(image, |(r, _)| r);
    match no_digest.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => no_digest,
    }
}

/// The image reference without its digest: `sim/app:1@sha256:…` → `sim/app:1`.
fn tagged(image: &str) -> &str {
    image.split_once('@').map_or(image, |(r, _)| r)
}

impl Host {
    pub fn new(index: usize) -> Host {
        Host { index, containers: Mutex::default(), events: broadcast::channel(EVENT_BUFFER).0 }
    }

    fn lock(&self) -> MutexGuard<'_, Containers> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    fn emit(&self, action: &'static str, c: &Container) {
        let mut attributes = c.labels.clone();
        attributes.insert("name".into(), c.name.clone());
        attributes.insert("image".into(), c.image.clone());
        // No receiver is fine: nobody follows this host's events.
        let _ = self.events.send(Arc::new(Event { action, id: c.id.clone(), attributes, time_nano: now_nanos() }));
    }

    /// How many `/events` streams are open on the host.
    pub fn followers(&self) -> usize {
        self.events.receiver_count()
    }

    /// How many containers the host holds.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether the host holds no container.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every container, in creation order.
    pub fn containers(&self) -> Vec<Container> {
        let mut all: Vec<Container> = self.lock().by_id.values().cloned().collect();
        all.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        all
    }

    /// `POST /containers/create?name=NAME` with Docker's create `body`.
    pub fn create(&self, name: Option<&str>, body: Value) -> Result<String, EngineError> {
        let image = body["Image"].as_str().unwrap_or_default().to_string();
        if image.is_empty() {
            return Err(EngineError {
                code: 400,
                message: "config cannot be empty in order to create a container".into(),
            });
        }
        let labels: BTreeMap<String, String> = body["Labels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        let mut all = self.lock();
        all.seq += 1;
        let id = format!("{:016x}{:048x}", self.index, all.seq);
        let name = name.map(|n| n.trim_start_matches('/').to_string()).unwrap_or_else(|| format!("sim_{}", all.seq));
        if let Some(holder) = all.by_name.get(&name) {
            return Err(EngineError {
                code: 409,
                message: format!(
                    "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". \
                     You have to remove (or rename) that container to be able to reuse that name."
                ),
            });
        }
        let c = Container {
            id: id.clone(),
            name: name.clone(),
            image,
            labels,
            state: State::Created,
            created: now_nanos() / 1_000_000_000,
            body,
        };
        self.emit("create", &c);
        all.by_name.insert(name, id.clone());
        all.by_id.insert(id.clone(), c);
        Ok(id)
    }

    /// Apply `f` to the container `id_or_name` under the lock.
    fn with<T>(&self, id_or_name: &str, f: impl FnOnce(&Host, &mut Container) -> T) -> Result<T, EngineError> {
        let mut all = self.lock();
        let id = all.resolve(id_or_name).ok_or_else(|| EngineError::no_such_container(id_or_name))?;
        let c = all.by_id.get_mut(&id).ok_or_else(|| EngineError::no_such_container(id_or_name))?;
        Ok(f(self, c))
    }

    /// Start: `Ok(false)` when it was running already (HTTP 304).
    pub fn start(&self, id_or_name: &str) -> Result<bool, EngineError> {
        self.with(id_or_name, |host, c| {
            if c.state == State::Running {
                return false;
            }
            c.state = State::Running;
            host.emit("start", c);
            true
        })
    }

    /// Stop: `Ok(false)` when it was not running (HTTP 304).
    pub fn stop(&self, id_or_name: &str) -> Result<bool, EngineError> {
        self.with(id_or_name, |host, c| {
            if c.state != State::Running {
                return false;
            }
            c.state = State::Exited;
            for action in ["kill", "die", "stop"] {
                host.emit(action, c);
            }
            true
        })
    }

    /// Remove; a running container only with `force`.
    pub fn remove(&self, id_or_name: &str, force: bool) -> Result<(), EngineError> {
        let mut all = self.lock();
        let id = all.resolve(id_or_name).ok_or_else(|| EngineError::no_such_container(id_or_name))?;
        let running = all.by_id.get(&id).is_some_and(|c| c.state == State::Running);
        if running && !force {
            return Err(EngineError {
                code: 409,
                message: format!(
                    "You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
                ),
            });
        }
        let Some(c) = all.by_id.remove(&id) else { return Err(EngineError::no_such_container(id_or_name)) };
        all.by_name.remove(&c.name);
        if running {
            self.emit("kill", &c);
            self.emit("die", &c);
        }
        self.emit("destroy", &c);
        Ok(())
    }

    /// `GET /containers/json?all=…&filters=…`: the summaries of the containers that pass.
    pub fn list(&self, all: bool, filters: &Filters) -> Vec<Value> {
        self.containers()
            .into_iter()
            .filter(|c| all || c.state == State::Running)
            .filter(|c| filters.matches(c))
            .map(|c| summary(&c))
            .collect()
    }

    /// `GET /containers/{id}/json`.
    pub fn inspect(&self, id_or_name: &str) -> Result<Value, EngineError> {
        self.with(id_or_name, |_, c| inspect(c))
    }
}

/// Docker's `filters` query parameter, the part berth uses: `label` (`key` or `key=value`),
/// `name`, `id`, and `type` (for events). Anything else is refused, loudly.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    labels: Vec<(String, Option<String>)>,
    names: Vec<String>,
    ids: Vec<String>,
    types: Vec<String>,
}

impl Filters {
    /// Parse the JSON of a `filters` parameter (`{"label":["a=b"]}`, or the older
    /// `{"label":{"a=b":true}}`).
    pub fn parse(raw: Option<&str>) -> Result<Filters, EngineError> {
        let mut f = Filters::default();
        let Some(raw) = raw.filter(|r| !r.is_empty()) else { return Ok(f) };
        let bad = |m: String| EngineError { code: 400, message: m };
        let v: Value = serde_json::from_str(raw).map_err(|e| bad(format!("invalid filter {raw:?}: {e}")))?;
        let obj = v.as_object().ok_or_else(|| bad(format!("invalid filter {raw:?}")))?;
        for (key, values) in obj {
            let values: Vec<String> = match values {
                Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
                Value::Object(m) => m.keys().cloned().collect(),
                _ => return Err(bad(format!("invalid filter {raw:?}"))),
            };
            match key.as_str() {
                "label" => f.labels.extend(values.into_iter().map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (l, None),
                })),
                "name" => f.names.extend(values),
                "id" => f.ids.extend(values),
                "type" => f.types.extend(values),
                other => return Err(bad(format!("the simulated engine does not support the filter {other:?}"))),
            }
        }
        Ok(f)
    }

    fn labels_match(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| match v {
            Some(v) => labels.get(k) == Some(v),
            None => labels.contains_key(k),
        })
    }

    /// Whether a container passes (`type` does not apply to containers).
    pub fn matches(&self, c: &Container) -> bool {
        self.labels_match(&c.labels)
            && (self.names.is_empty() || self.names.iter().any(|n| c.name.contains(n.trim_start_matches('/'))))
            && (self.ids.is_empty() || self.ids.iter().any(|i| c.id.starts_with(i.as_str())))
    }

    /// Whether an event passes (every event here is of type `container`).
    pub fn matches_event(&self, e: &Event) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == "container")) && self.labels_match(&e.attributes)
    }
}

fn status_text(state: State) -> &'static str {
    match state {
        State::Created => "Created",
        State::Running => "Up 1 second",
        State::Exited => "Exited (0) 1 second ago",
    }
}

fn summary(c: &Container) -> Value {
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.image,
        "ImageID": digest_of(tagged(&c.image)),
        "Command": "/app",
        "Created": c.created,
        "Ports": [],
        "Labels": c.labels,
        "State": c.state.as_str(),
        "Status": status_text(c.state),
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    })
}

fn inspect(c: &Container) -> Value {
    let mut config = c.body.clone();
    if let Some(m) = config.as_object_mut() {
        m.remove("HostConfig");
        m.remove("NetworkingConfig");
    }
    json!({
        "Id": c.id,
        "Created": "2026-01-01T00:00:00Z",
        "Path": "/app",
        "Args": [],
        "State": {
            "Status": c.state.as_str(),
            "Running": c.state == State::Running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": if c.state == State::Running { 4242 } else { 0 },
            "ExitCode": 0,
            "Error": "",
            "StartedAt": "2026-01-01T00:00:00Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
        },
        "Image": digest_of(tagged(&c.image)),
        "Name": format!("/{}", c.name),
        "RestartCount": 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "Config": config,
        "HostConfig": c.body.get("HostConfig").cloned().unwrap_or_else(|| json!({})),
        "Mounts": [],
        "NetworkSettings": {"Networks": {}},
    })
}

/// `GET /images/{name}/json`: every image exists, with one registry digest of its repository.
pub fn image_inspect(name: &str) -> Value {
    let reference = tagged(name);
    json!({
        "Id": digest_of(reference),
        "RepoTags": [reference],
        "RepoDigests": [format!("{}@{}", repository_of(reference), registry_digest(reference))],
        "Created": "2026-01-01T00:00:00Z",
        "Size": 1_000_000,
        "Os": "linux",
        "Architecture": "amd64",
    })
}

/// `GET /distribution/{name}/json`: the registry's digest of the tag (the same one the image
/// carries in `RepoDigests`).
pub fn distribution_inspect(name: &str) -> Value {
    json!({
        "Descriptor": {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": registry_digest(tagged(name)),
            "size": 1024,
        },
        "Platforms": [{"architecture": "amd64", "os": "linux"}],
    })
}

fn registry_digest(reference: &str) -> String {
    digest_of(&format!("registry:{reference}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(image: &str, labels: Value) -> Value {
        json!({"Image": image, "Labels": labels})
    }

    #[test]
    fn a_container_lives_through_create_start_stop_remove_with_its_events() {
        let host = Host::new(7);
        let mut events = host.subscribe();
        let id =
            host.create(Some("ns.web.abc.0"), body("sim/app:1", json!({"berth.dev/managed-by": "berth"}))).unwrap();
        assert!(id.starts_with("0000000000000007"), "{id}");
        assert_eq!(host.start("ns.web.abc.0"), Ok(true));
        assert_eq!(host.start(&id), Ok(false), "already running: 304");
        let managed = Filters::parse(Some(r#"{"label":["berth.dev/managed-by=berth"]}"#)).unwrap();
        let listed = host.list(true, &managed);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["State"], "running");
        assert_eq!(listed[0]["Names"][0], "/ns.web.abc.0");
        assert!(host.list(true, &Filters::parse(Some(r#"{"label":["other"]}"#)).unwrap()).is_empty());
        assert_eq!(host.remove(&id, false).map_err(|e| e.code), Err(409));
        assert_eq!(host.stop(&id[..12]), Ok(true), "an id prefix finds it");
        assert!(host.list(false, &managed).is_empty(), "stopped: only with all=true");
        host.remove(&id, false).unwrap();
        assert_eq!(host.inspect(&id).map_err(|e| e.code), Err(404));
        let mut actions = Vec::new();
        while let Ok(e) = events.try_recv() {
            assert_eq!(e.attributes.get("name").map(String::as_str), Some("ns.web.abc.0"));
            actions.push(e.action);
        }
        assert_eq!(actions, ["create", "start", "kill", "die", "stop", "destroy"]);
    }

    #[test]
    fn a_taken_name_is_a_conflict() {
        let host = Host::new(0);
        host.create(Some("web"), body("sim/app:1", json!({}))).unwrap();
        let e = host.create(Some("/web"), body("sim/app:1", json!({}))).unwrap_err();
        assert_eq!(e.code, 409);
        assert!(e.message.contains("is already in use"), "{}", e.message);
        assert_eq!(host.len(), 1);
    }

    #[test]
    fn images_carry_the_digest_the_registry_gives() {
        assert_eq!(repository_of("sim/app:1"), "sim/app");
        assert_eq!(repository_of("127.0.0.1:5000/app"), "127.0.0.1:5000/app");
        assert_eq!(repository_of("sim/app:1@sha256:00"), "sim/app");
        let image = image_inspect("sim/app:1");
        let dist = distribution_inspect("sim/app:1");
        let digest = dist["Descriptor"]["digest"].as_str().unwrap();
        assert_eq!(image["RepoDigests"][0], format!("sim/app@{digest}"));
        assert_eq!(image_inspect("sim/app:1@sha256:00")["Id"], image["Id"], "pinned or not: the same image");
    }

    #[test]
    fn unsupported_filters_are_refused() {
        assert_eq!(Filters::parse(Some(r#"{"status":["running"]}"#)).map(|_| ()).map_err(|e| e.code), Err(400));
        assert!(Filters::parse(Some(r#"{"label":{"a=b":true}}"#)).is_ok());
    }
}
