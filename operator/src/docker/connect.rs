//! Reaching an engine: unix socket, or TCP with mutual TLS, with the API version agreed on
//! (bollard's default API version is newer than Docker 20.10's 1.41).
//!
//! Two ways: [`connect`] asks the engine (`GET /version`) and speaks the newest version both
//! know — for connections that live long (the operator's pool, `watch`). [`connect_observe`]
//! is for a run's first look at a host: it lists berth's containers speaking [`BASELINE`]
//! straight away, which every engine from Docker 20.10 to 28 accepts, so a converged host
//! costs one request in all; only an engine that refuses that version (Docker 29 wants ≥ 1.44)
//! is asked for its version, and the list sent again.

use std::sync::Arc;

use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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
            return pem_client(addr, ca, cert, key.expose(), version).map_err(tls_error);
        }
        Endpoint::Tcp { addr, tls: None } => Docker::connect_with_http(addr, TIMEOUT_SECS, version),
    }
    .map_err(|e| match endpoint {
        // No request was made: the certificate material itself is the problem.
        Endpoint::Tcp { tls: Some(_), .. } => tls_error(super::message_of(&e)),
        _ => connect_error(endpoint, &e),
    })
}

/// A client for a TLS endpoint whose certificates are PEM text in memory (a DockerHost's
/// Secret): rustls configured from it, trusting only the given CA, behind bollard's custom
/// transport. Nothing is written to disk (bollard's own TLS client would read key files at
/// every handshake). Like bollard's, it keeps no idle connections.
fn pem_client(addr: &str, ca: &str, cert: &str, key: &str, version: &ClientVersion) -> Result<Docker, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let c = c.map_err(|e| format!("ca.crt: {e}"))?;
        roots.add(c).map_err(|e| format!("ca.crt: {e}"))?;
    }
    if roots.is_empty() {
        return Err("ca.crt holds no certificate".into());
    }
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("tls.key: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("tls.crt and tls.key: {e}"))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnector::from((http, config));
    let client = Arc::new(Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(https));
    let transport = move |req: bollard::BollardRequest| {
        let client = client.clone();
        async move { client.request(req).await.map_err(bollard::errors::Error::from) }
    };
    Docker::connect_with_custom_transport(transport, Some(format!("https://{addr}")), TIMEOUT_SECS, version)
        .map_err(|e| super::message_of(&e))
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
