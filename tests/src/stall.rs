//! A proxy in front of an engine's unix socket that never answers chosen requests.
//!
//! A stalled engine (a hung daemon, a lost packet on a TCP link, a list behind a lock) answers
//! nothing and closes nothing. berth must bound every call and say which host did not answer;
//! tests check that by pointing `DOCKER_HOST` at this proxy. Each request whose path (without
//! the API version prefix) equals the rule's endpoint is held open, unanswered, for the first
//! `times` matches (or always); every other request is forwarded to the real engine, one
//! upstream connection per request. Bodies stream through, so `/events` works.
//!
//! The proxy runs on its own thread with its own runtime and stops when dropped (held requests
//! are then dropped too).

use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Which requests get no answer.
#[derive(Clone, Debug)]
pub struct StallRule {
    /// e.g. `/containers/json`.
    pub endpoint: String,
    /// Stall only the first `n` matches; `None`: every one.
    pub times: Option<usize>,
}

struct Shared {
    upstream: PathBuf,
    rule: StallRule,
    matched: AtomicUsize,
    stalled: AtomicUsize,
    forwarded: AtomicUsize,
}

/// A proxy that holds the requests its [`StallRule`] matches and forwards the rest.
pub struct StallingProxy {
    socket: PathBuf,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl StallingProxy {
    /// Listens when this returns.
    pub fn start(upstream: &Path, rule: StallRule) -> StallingProxy {
        let dir = tempfile::Builder::new().prefix("berth-stall-").tempdir().expect("a temp dir for the proxy socket");
        let socket = dir.path().join("docker.sock");
        let listener = StdUnixListener::bind(&socket).expect("bind the stalling proxy's socket");
        listener.set_nonblocking(true).expect("nonblocking socket");
        let shared = Arc::new(Shared {
            upstream: upstream.to_path_buf(),
            rule,
            matched: AtomicUsize::new(0),
            stalled: AtomicUsize::new(0),
            forwarded: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("stalling-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                rt.block_on(serve(listener, thread_shared, stop_rx));
                rt.shutdown_background();
            })
            .expect("a thread for the proxy");
        StallingProxy { socket, shared, stop: Some(stop_tx), thread: Some(thread), _dir: dir }
    }

    /// `unix:///...`, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// How many requests were held unanswered so far.
    pub fn stalled(&self) -> usize {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// How many requests matching the rule were forwarded (after its `times` ran out).
    pub fn matched_forwarded(&self) -> usize {
        self.shared.matched.load(Ordering::SeqCst).saturating_sub(self.stalled())
    }

    /// How many requests were forwarded in all.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: StdUnixListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let listener = UnixListener::from_std(listener).expect("the socket in tokio");
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &shared).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        }
    }
}

fn endpoint(path: &str) -> &str {
    match path.strip_prefix("/v") {
        Some(rest) => {
            let end = rest.find('/').unwrap_or(rest.len());
            if rest[..end].chars().all(|c| c.is_ascii_digit() || c == '.') { &rest[end..] } else { path }
        }
        None => path,
    }
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<ProxyBody> {
    if endpoint(req.uri().path()) == shared.rule.endpoint {
        let n = shared.matched.fetch_add(1, Ordering::SeqCst);
        if shared.rule.times.is_none_or(|times| n < times) {
            shared.stalled.fetch_add(1, Ordering::SeqCst);
            // Held until the client gives up (hyper then drops this future) or the proxy stops.
            futures::future::pending::<()>().await;
        }
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let stream = match UnixStream::connect(&shared.upstream).await {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("cannot reach the engine: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("handshake with the engine: {e}")),
    };
    tokio::spawn(conn);
    match sender.send_request(req).await {
        Ok(resp) => resp.map(|body| body.boxed()),
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
