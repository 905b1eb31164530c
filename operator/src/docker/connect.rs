//! Reaching an engine: unix socket, or TCP with mutual TLS, always with API version
//! negotiation (bollard's default API version is newer than Docker 20.10's 1.41).

use std::path::PathBuf;

use bollard::{API_DEFAULT_VERSION, Docker};

use super::DockerError;

/// Client certificate files for a TLS endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where an engine listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`; `tls` is `None` only when the user allowed plain TCP.
    Tcp {
        addr: String,
        tls: Option<TlsFiles>,
    },
}

impl Endpoint {
    /// The local engine as the Docker CLI finds it: `DOCKER_HOST`, `DOCKER_TLS_VERIFY`,
    /// `DOCKER_CERT_PATH`, else the default socket.
    pub fn from_env() -> Result<Endpoint, String> {
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
                TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") }
            });
            return Ok(Endpoint::Tcp { addr: addr.to_string(), tls });
        }
        Err(format!("DOCKER_HOST={host:?}: berth supports unix:// and tcp:// endpoints"))
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

/// Request timeout: long enough for a slow pull's first byte, short enough to notice a dead
/// host. Streaming calls (pull, logs) are not bounded by it per chunk.
const TIMEOUT_SECS: u64 = 120;

/// Connect and negotiate the API version. Fails when the engine does not answer.
pub async fn connect(endpoint: &Endpoint) -> Result<Docker, DockerError> {
    let err = |e: bollard::errors::Error| DockerError::Connect {
        endpoint: endpoint.to_string(),
        message: super::message_of(&e),
    };
    let docker = match endpoint {
        Endpoint::Unix(path) => {
            Docker::connect_with_unix(&path.to_string_lossy(), TIMEOUT_SECS, API_DEFAULT_VERSION).map_err(err)?
        }
        Endpoint::Tcp { addr, tls: Some(t) } => {
            Docker::connect_with_ssl(addr, &t.key, &t.cert, &t.ca, TIMEOUT_SECS, API_DEFAULT_VERSION).map_err(err)?
        }
        Endpoint::Tcp { addr, tls: None } => {
            Docker::connect_with_http(addr, TIMEOUT_SECS, API_DEFAULT_VERSION).map_err(err)?
        }
    };
    docker.negotiate_version().await.map_err(err)
}
