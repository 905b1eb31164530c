//! `/metrics`, `/healthz` (the process answers) and `/readyz` (the watches have synced and
//! every DockerHost has been probed at least once — not before, so a rollout of the operator
//! waits for a replica that actually sees its hosts).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Metrics;

/// What `/readyz` asks.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready, else what is missing.
    fn ready(&self) -> Result<(), NotReady>;
}

/// Why the process is not ready yet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("watches not synced yet (or not the leader)")]
    NotSynced,
    /// DockerHosts (`namespace/name`) not probed once yet.
    #[error("hosts not probed yet: {}", .0.join(", "))]
    HostsNotProbed(Vec<String>),
}

/// Serve until the process ends. Binding errors are returned at once.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, readiness: Arc<dyn Readiness>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (metrics, readiness) = (metrics.clone(), readiness.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (metrics, readiness) = (metrics.clone(), readiness.clone());
                    async move { Ok::<_, Infallible>(route(req.uri().path(), &metrics, readiness.as_ref())) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(())
}

fn route(path: &str, metrics: &Metrics, readiness: &dyn Readiness) -> Response<Full<Bytes>> {
    let (code, body, content_type) = match path {
        "/healthz" => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
        "/readyz" => match readiness.ready() {
            Ok(()) => (StatusCode::OK, "ready\n".to_string(), "text/plain"),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"), "text/plain"),
        },
        "/metrics" => (StatusCode::OK, metrics.render(), "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string(), "text/plain"),
    };
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
