//! What a run is about, as plain data: the hosts it converges ([`HostTarget`], reached at an
//! [`Endpoint`]) and the facts per set that execution and rollout need beyond the desired state
//! ([`SetRuntime`], [`SetInfo`]).
//!
//! It sits between the pure engine and everything that does I/O so that the input readers
//! (which produce these), the Docker adapter and the fleet runner (which consume them) need not
//! know of each other. No I/O here: TLS material stays in memory until
//! [`crate::docker::connect`] hands it to a client.

use std::path::PathBuf;
use std::time::Duration;

use bollard::auth::DockerCredentials;

use crate::engine::order::Dependency;
use crate::engine::rollout::RolloutPolicy;
use crate::engine::{DesiredSet, Scope, SecretString, SetKey};

/// One engine to converge.
#[derive(Clone, Debug)]
pub struct HostTarget {
    /// `local` for the implicit local engine, else the DockerHost's name.
    pub name: String,
    pub endpoint: Endpoint,
    /// Sets placed here.
    pub desired: Vec<DesiredSet>,
    /// Sets this run owns here (a cordoned host owns none: nothing there is touched).
    pub scope: Scope,
}

/// Where an engine listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`; `tls` is `None` only when the user allowed plain TCP.
    Tcp {
        addr: String,
        tls: Option<Tls>,
    },
}

/// Client certificate and CA for mutual TLS with an engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Files, as the Docker CLI finds them (`DOCKER_CERT_PATH`).
    Files { ca: PathBuf, cert: PathBuf, key: PathBuf },
    /// PEM text from a DockerHost's TLS Secret, in memory; the key never printed.
    Pem { ca: String, cert: String, key: SecretString },
}

/// `DOCKER_HOST` names an endpoint berth does not speak.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("DOCKER_HOST={0:?}: berth supports unix:// and tcp:// endpoints")]
pub struct UnsupportedEndpoint(pub String);

impl Endpoint {
    /// The local engine as the Docker CLI finds it: `DOCKER_HOST`, `DOCKER_TLS_VERIFY`,
    /// `DOCKER_CERT_PATH`, else the default socket.
    pub fn from_env() -> Result<Endpoint, UnsupportedEndpoint> {
        let host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
        let Some(host) = host else {
            return Ok(Endpoint::Unix(PathBuf::from("/var/run/docker.sock")));
        };
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            let verify = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0");
            let tls = verify.then(|| {
                let dir = std::env::var("DOCKER_CERT_PATH").map(PathBuf::from).unwrap_or_else(|_| home_docker_dir());
                Tls::Files { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") }
            });
            return Ok(Endpoint::Tcp { addr: addr.to_string(), tls });
        }
        Err(UnsupportedEndpoint(host))
    }
}

fn home_docker_dir() -> PathBuf {
    std::env::var("HOME").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/root")).join(".docker")
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "tcp://{addr}"),
        }
    }
}

/// What the executor needs per set beyond the plan.
#[derive(Clone, Default)]
pub struct SetRuntime {
    /// How long a new container may take to become ready.
    pub progress_deadline: Duration,
    /// Registry credentials for the set's image, from its `imagePullSecrets`.
    pub credentials: Option<DockerCredentials>,
}

/// By hand: bollard's `DockerCredentials` prints its password in `Debug`.
impl std::fmt::Debug for SetRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credentials = self
            .credentials
            .as_ref()
            .map(|c| format!("<credentials for {}>", c.serveraddress.as_deref().unwrap_or("a registry")));
        f.debug_struct("SetRuntime")
            .field("progress_deadline", &self.progress_deadline)
            .field("credentials", &credentials)
            .finish()
    }
}

/// What a run needs to know of each set beyond its desired state per host.
#[derive(Clone, Debug)]
pub struct SetInfo {
    pub policy: RolloutPolicy,
    /// The set's `spec.template` as declared, recorded in history (image pinned as run).
    pub template: serde_json::Value,
    /// `spec.mode: Task`: runs to completion once per revision.
    pub task: bool,
    /// `spec.dependsOn`: what must be satisfied before the set's new containers are created.
    pub depends_on: Vec<Dependency>,
}

/// One declared `Image` of a run, its inputs read: what the fleet builds and distributes.
pub struct ImageTarget {
    /// The Image's namespace and name.
    pub key: SetKey,
    /// `sha256:…` over the context as sent, the Dockerfile path, build args and target.
    pub input_digest: String,
    /// `<repository or name>:berth-<16 hex>`: what the sets run.
    pub tag: String,
    /// The context as read (the input layer's), sent to the builder as a tar.
    pub context: std::sync::Arc<dyn ContextTar>,
    pub args: std::collections::BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Push here; `None`: carried from the builder to each host that runs it.
    pub repository: Option<String>,
    /// From `spec.pushSecret`, for the repository's registry.
    pub push_credentials: Option<DockerCredentials>,
    /// The DockerHost that builds it (`None`: the run's first host that runs it).
    pub builder: Option<String>,
    /// The sets that run it.
    pub used_by: std::collections::BTreeSet<SetKey>,
}

/// By hand: the credentials print their password in `Debug`.
impl std::fmt::Debug for ImageTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageTarget").field("key", &self.key).field("tag", &self.tag).finish_non_exhaustive()
    }
}

/// A build context that can be written as the tar the engine's `/build` takes.
pub trait ContextTar: Send + Sync {
    /// The Dockerfile's path inside the context.
    fn dockerfile(&self) -> &str;
    /// Write the tar to `out` (blocking file reads); an error names the file concerned.
    fn write_tar(&self, out: &mut dyn std::io::Write) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}
