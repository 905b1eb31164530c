//! Reaching an engine: unix socket, or TCP with mutual TLS, with the API version agreed on
//! (bollard's default API version is newer than Docker 20.10's 1.41).
//!
//! Two ways: [`connect`] asks the engine (`GET /version`) and speaks the newest version both
//! know — for connections that live long (the operator's pool, `watch`). [`connect_observe`]
//! is for a run's first look at a host: it lists berth's containers speaking [`BASELINE`]
//! straight away, which every engine from Docker 20.10 to 28 accepts, so a converged host
//! costs one request in all; only an engine that refuses that version (Docker 29 wants ≥ 1.44)
//! is asked for its version, and the list sent again.

use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};

use super::DockerError;
use crate::engine::ObservedContainer;
use crate::target::{Endpoint, Tls};

/// The API version berth speaks before it asked: Docker 20.10's, the oldest engine berth
/// supports and the one its tests run against.
pub const BASELINE: &ClientVersion = &ClientVersion { major_version: 1, minor_version: 41 };

/// bollard's client timeout (response heads only): a backstop; each call's own bound is in
/// [`super::bounds`].
const TIMEOUT_SECS: u64 = super::bounds::BACKSTOP_SECS;

fn connect_error(endpoint: &Endpoint, e: &bollard::errors::Error) -> DockerError {
    let (endpoint, message) = (endpoint.to_string(), super::message_of(e));
    if super::is_tls_failure(e) {
        DockerError::Tls { endpoint, message }
    } else {
        DockerError::Connect { endpoint, message }
    }
}

/// A client speaking `version`; no request is made.
fn client(endpoint: &Endpoint, version: &ClientVersion) -> Result<Docker, DockerError> {
    let tls_error = |message: String| DockerError::Tls { endpoint: endpoint.to_string(), message };
    match endpoint {
        Endpoint::Unix(path) => Docker::connect_with_unix(&path.to_string_lossy(), TIMEOUT_SECS, version),
        Endpoint::Tcp { addr, tls: Some(Tls::Files { ca, cert, key }) } => {
            Docker::connect_with_ssl(addr, key, cert, ca, TIMEOUT_SECS, version)
        }
        Endpoint::Tcp { addr, tls: Some(Tls::Pem { ca, cert, key }) } => {
            // bollard reads certificates from files, once, while it builds the client: they
            // exist, readable by this user only, for that moment.
            let dir = pem_files(ca, cert, key.expose())
                .map_err(|e| tls_error(format!("cannot write the client certificate for the connection: {e}")))?;
            let p = |f: &str| dir.path().join(f);
            Docker::connect_with_ssl(addr, &p("tls.key"), &p("tls.crt"), &p("ca.crt"), TIMEOUT_SECS, version)
        }
        Endpoint::Tcp { addr, tls: None } => Docker::connect_with_http(addr, TIMEOUT_SECS, version),
    }
    .map_err(|e| match endpoint {
        // No request was made: the certificate material itself is the problem.
        Endpoint::Tcp { tls: Some(_), .. } => tls_error(super::message_of(&e)),
        _ => connect_error(endpoint, &e),
    })
}

/// `ca.crt`, `tls.crt` and `tls.key` in a fresh private folder, removed when dropped.
fn pem_files(ca: &str, cert: &str, key: &str) -> std::io::Result<tempfile::TempDir> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = tempfile::Builder::new().prefix("berth-tls-").tempdir()?;
    for (name, text) in [("ca.crt", ca), ("tls.crt", cert), ("tls.key", key)] {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.path().join(name))?;
        f.write_all(text.as_bytes())?;
    }
    Ok(dir)
}

/// Connect and negotiate the API version. Fails when the engine does not answer.
pub async fn connect(endpoint: &Endpoint) -> Result<Docker, DockerError> {
    let docker = client(endpoint, API_DEFAULT_VERSION)?;
    let host = endpoint.to_string();
    // negotiate_version consumes the client: each try negotiates on a clone (same connection pool).
    super::bounds::read(&host, "GET /version", super::bounds::READ, || docker.clone().negotiate_version())
        .await?
        .map_err(|e| connect_error(endpoint, &e))
}

/// Connect and observe in one request where the engine accepts [`BASELINE`]; else negotiate
/// and list again. Fails (as [`DockerError::Connect`]) when the engine does not answer; the
/// observation's own error, if the engine answered, is the second field.
pub async fn connect_observe(
    endpoint: &Endpoint,
) -> Result<(Docker, Result<Vec<ObservedContainer>, DockerError>), DockerError> {
    let docker = client(endpoint, BASELINE)?;
    match super::observe::list(&endpoint.to_string(), &docker).await? {
        Ok(list) => Ok((docker, Ok(super::observe::observed(list)))),
        Err(e) if refuses_version(&e) => {
            tracing::debug!(%endpoint, error = %super::message_of(&e), "the engine refuses API 1.41; negotiating");
            let docker = connect(endpoint).await?;
            let observed = super::observe(&endpoint.to_string(), &docker).await;
            Ok((docker, observed))
        }
        Err(e @ bollard::errors::Error::DockerResponseServerError { .. }) => {
            Ok((docker, Err(DockerError::api("list containers on", "host", e))))
        }
        Err(e) => Err(connect_error(endpoint, &e)),
    }
}

/// The engine refused the request's API version ("client version 1.41 is too old. Minimum
/// supported API version is 1.44" or "… is too new. Maximum supported …").
fn refuses_version(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 400, message }
        if message.contains("client version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError { status_code, message: message.into() }
    }

    #[test]
    fn version_refusals_are_told_from_other_errors() {
        assert!(refuses_version(&server_error(
            400,
            "client version 1.41 is too old. Minimum supported API version is 1.44, please upgrade your client to a newer version"
        )));
        assert!(refuses_version(&server_error(
            400,
            "client version 1.53 is too new. Maximum supported API version is 1.41"
        )));
        assert!(!refuses_version(&server_error(400, "invalid filter 'label'")));
        assert!(!refuses_version(&server_error(500, "client version: internal error")));
    }
}
