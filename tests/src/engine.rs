//! A bollard client for the real Docker engine the tests run against.
//!
//! Tests need a real engine and never skip: when none answers they fail with a message that
//! says how to start one. The client negotiates the API version down to what the engine
//! speaks (Debian's Docker 20.10 speaks API 1.41 only; bollard's default is newer).

use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;

/// How long connecting, negotiating and pinging may take before the engine counts as absent.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// The engine address in use: `DOCKER_HOST`, or the default unix socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// The unix socket of the local engine (from `DOCKER_HOST` when it is `unix://...`,
/// else `/var/run/docker.sock`): what a [`crate::CountingProxy`] forwards to.
pub fn local_socket_path() -> PathBuf {
    match docker_host().strip_prefix("unix://") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from("/var/run/docker.sock"),
    }
}

/// A client for the local engine (`DOCKER_HOST` or the default unix socket), with the API
/// version negotiated and a ping answered.
///
/// # Panics
/// When no engine answers: tests need a real engine; they never skip.
pub async fn docker() -> Docker {
    docker_at(&docker_host()).await
}

/// A client for the engine at `host` (`unix:///path`, `tcp://host:port`, ...), with the API
/// version negotiated and a ping answered. Use it to go through a [`crate::CountingProxy`]:
/// `docker_at(&proxy.docker_host())` (the negotiation and ping are requests the proxy sees:
/// `reset()` it afterwards).
///
/// # Panics
/// When no engine answers at `host`.
pub async fn docker_at(host: &str) -> Docker {
    let absent = |why: String| -> ! {
        panic!(
            "no Docker engine answers at {host}: start one with scripts/start-docker.sh \
             (tests need a real engine; they never skip) [{why}]"
        )
    };
    let client = Docker::connect_with_host(host).unwrap_or_else(|e| absent(e.to_string()));
    let answered = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let client = client.negotiate_version().await?;
        client.ping().await?;
        Ok::<_, bollard::errors::Error>(client)
    })
    .await;
    match answered {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => absent(e.to_string()),
        Err(_) => absent(format!("no answer within {ANSWER_TIMEOUT:?}")),
    }
}
