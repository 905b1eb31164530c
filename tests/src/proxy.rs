//! A counting proxy in front of an engine's unix socket.
//!
//! berth's promises include how many API calls it makes (a converged host costs reads only;
//! no mutating call when nothing changed). Tests check that by pointing berth's
//! `DOCKER_HOST` at this proxy, which forwards every HTTP request to the real engine socket
//! and records (method, path, query) of each one, keep-alive connections included.
//! Bodies stream through unbuffered, so `/events` and `logs?follow=1` work through it.
//! Connection upgrades (attach, interactive exec start) are not supported: such requests
//! get `501 Not Implemented`.
//!
//! Each request also carries when it arrived and how long the engine took to answer (until
//! the response head), so a benchmark can draw a tool's request timeline.
//!
//! The proxy runs on its own thread with its own tokio runtime, so it serves sync and async
//! tests alike; it stops when dropped.

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: String,
    /// The path without the query, as sent (with bollard's `/v1.41` prefix, if any).
    pub path: String,
    /// The query string without `?`, if there was one.
    pub query: Option<String>,
    /// When the proxy received the request.
    pub at: Instant,
    /// How long until the engine's response head came back; `None` while in flight, or when
    /// the proxy answered itself (an upgrade, an unreachable engine).
    pub took: Option<Duration>,
    /// The request's sequence number in this proxy (unique, increasing).
    pub seq: u64,
}

impl Request {
    /// The path without an API version prefix: `/v1.41/containers/json` -> `/containers/json`.
    pub fn endpoint(&self) -> &str {
        strip_version(&self.path)
    }

    /// Whether this request may change the engine's state (any method but GET and HEAD).
    pub fn is_mutating(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.query {
            Some(q) => write!(f, "{} {}?{}", self.method, self.path, q),
            None => write!(f, "{} {}", self.method, self.path),
        }
    }
}

fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let version = &rest[..end];
        if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return &rest[end..];
        }
    }
    path
}

type Log = Arc<Mutex<Vec<Request>>>;
type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A counting HTTP proxy on a fresh unix socket, forwarding to an upstream unix socket.
pub struct CountingProxy {
    socket: PathBuf,
    log: Log,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl CountingProxy {
    /// Starts a proxy forwarding to the engine socket `upstream` (e.g.
    /// [`crate::local_socket_path()`]). It listens when this returns.
    pub fn start(upstream: &Path) -> CountingProxy {
        let dir = tempfile::Builder::new().prefix("berth-proxy-").tempdir().expect("a temp dir for the proxy socket");
        let socket = dir.path().join("docker.sock");
        let listener = StdUnixListener::bind(&socket)
            .unwrap_or_else(|e| panic!("cannot bind proxy socket {}: {e}", socket.display()));
        listener.set_nonblocking(true).expect("nonblocking proxy socket");
        let log: Log = Arc::default();
        let (stop_tx, stop_rx) = oneshot::channel();
        let upstream = upstream.to_path_buf();
        let thread_log = log.clone();
        let thread = std::thread::Builder::new()
            .name("counting-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the proxy");
                rt.block_on(serve(listener, upstream, thread_log, stop_rx));
                // Dropping the runtime cancels connections still open (streams included).
                rt.shutdown_background();
            })
            .expect("a thread for the proxy");
        CountingProxy { socket, log, stop: Some(stop_tx), thread: Some(thread), _dir: dir }
    }

    /// The proxy's unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// `unix:///...`: usable as `DOCKER_HOST` (for berth) or with [`crate::docker_at`].
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Every request seen since the start or the last [`reset`](Self::reset), in order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn reset(&self) {
        self.log.lock().unwrap().clear();
    }

    /// How many requests used a method other than GET or HEAD.
    pub fn count_mutating(&self) -> usize {
        self.log.lock().unwrap().iter().filter(|r| r.is_mutating()).count()
    }

    /// How many requests used each method.
    pub fn count_by_method(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in self.log.lock().unwrap().iter() {
            *counts.entry(r.method.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// How many requests satisfy `pred`.
    pub fn count_where(&self, pred: impl Fn(&Request) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|r| pred(r)).count()
    }

    /// The requests, one a line: for assertion messages.
    pub fn describe(&self) -> String {
        self.requests().iter().map(|r| format!("{r}\n")).collect()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: StdUnixListener, upstream: PathBuf, log: Log, mut stop: oneshot::Receiver<()>) {
    let listener = UnixListener::from_std(listener).expect("the proxy socket in tokio");
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(serve_connection(stream, upstream.clone(), log.clone()));
            }
        }
    }
}

/// One downstream connection gets one upstream connection (re-opened if the engine closed
/// it), so keep-alive behaves as it would against the engine itself.
async fn serve_connection(stream: UnixStream, upstream: PathBuf, log: Log) {
    let upstream = Arc::new(tokio::sync::Mutex::new(Upstream { path: upstream, sender: None }));
    let service = hyper::service::service_fn(move |req: HttpRequest<Incoming>| {
        let upstream = upstream.clone();
        let log = log.clone();
        async move { Ok::<_, std::convert::Infallible>(forward(req, &upstream, &log).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

struct Upstream {
    path: PathBuf,
    sender: Option<SendRequest<Incoming>>,
}

impl Upstream {
    async fn sender(&mut self) -> Result<&mut SendRequest<Incoming>, String> {
        let usable = match &mut self.sender {
            Some(s) => !s.is_closed() && s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let stream = UnixStream::connect(&self.path)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.path.display()))?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake with {}: {e}", self.path.display()))?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just set"))
    }
}

/// Numbers the requests of every proxy in the process, so an answer finds its entry even
/// after a [`CountingProxy::reset`].
static SEQ: AtomicU64 = AtomicU64::new(0);

async fn forward(
    req: HttpRequest<Incoming>,
    upstream: &tokio::sync::Mutex<Upstream>,
    log: &Log,
) -> Response<ProxyBody> {
    let at = Instant::now();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    log.lock().unwrap().push(Request {
        method: req.method().as_str().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        at,
        took: None,
        seq,
    });
    if req.headers().contains_key(hyper::header::UPGRADE) {
        return plain(
            StatusCode::NOT_IMPLEMENTED,
            "the counting proxy does not forward connection upgrades (attach, exec start)",
        );
    }
    let mut upstream = upstream.lock().await;
    let sender = match upstream.sender().await {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &e),
    };
    match sender.send_request(req).await {
        Ok(resp) => {
            let took = at.elapsed();
            if let Some(r) = log.lock().unwrap().iter_mut().rev().find(|r| r.seq == seq) {
                r.took = Some(took);
            }
            resp.map(|body| body.boxed())
        }
        Err(e) => plain(StatusCode::BAD_GATEWAY, &format!("upstream request failed: {e}")),
    }
}

fn plain(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::strip_version;

    #[test]
    fn strips_api_version_prefixes_only() {
        assert_eq!(strip_version("/v1.41/containers/json"), "/containers/json");
        assert_eq!(strip_version("/_ping"), "/_ping");
        assert_eq!(strip_version("/volumes/x"), "/volumes/x");
        assert_eq!(strip_version("/v1.41"), "");
    }
}
