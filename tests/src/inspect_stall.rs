//! A proxy in front of an engine socket that can stall the inspects of chosen containers.
//!
//! An engine answers an inspect only once it holds the container's lock, and a busy or sick
//! engine can take its time; berth must not stop following other containers meanwhile. Point
//! a DockerHost at [`StallProxy::docker_host`]: everything is forwarded to the real engine
//! (`/events` streams through), except that `GET .../containers/<id>/json` of a container
//! passed to [`StallProxy::hold`] waits until [`StallProxy::release`] (or the proxy is
//! dropped). The proxy runs on its own thread and runtime, so it serves sync and async tests
//! alike.

use std::collections::HashSet;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};

type ProxyBody = BoxBody<Bytes, hyper::Error>;

#[derive(Default)]
struct Holds {
    ids: HashSet<String>,
    /// Inspects waiting now, and ever held.
    waiting: usize,
    held: usize,
}

struct Shared {
    holds: Mutex<Holds>,
    /// Bumped on every release, waking the waiting inspects to look again.
    released: watch::Sender<u64>,
}

/// The proxy; it stops (releasing everything) when dropped.
pub struct StallProxy {
    socket: PathBuf,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl StallProxy {
    /// A proxy forwarding to the engine socket `upstream`; it listens when this returns.
    pub fn start(upstream: &Path) -> StallProxy {
        let dir = tempfile::Builder::new().prefix("berth-stall-").tempdir().expect("a temp dir for the proxy socket");
        let socket = dir.path().join("docker.sock");
        let listener = StdUnixListener::bind(&socket)
            .unwrap_or_else(|e| panic!("cannot bind proxy socket {}: {e}", socket.display()));
        listener.set_nonblocking(true).expect("nonblocking proxy socket");
        let shared = Arc::new(Shared { holds: Mutex::default(), released: watch::channel(0).0 });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (upstream, thread_shared) = (upstream.to_path_buf(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("stall-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the proxy");
                rt.block_on(serve(listener, upstream, thread_shared, stop_rx));
                rt.shutdown_background();
            })
            .expect("a thread for the proxy");
        StallProxy { socket, shared, stop: Some(stop_tx), thread: Some(thread), _dir: dir }
    }

    /// `unix:///...`, for a DockerHost's `spec.endpoint`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// From now on, inspects of container `id` (the full id) wait until released.
    pub fn hold(&self, id: &str) {
        self.shared.holds.lock().expect("never poisoned").ids.insert(id.to_string());
    }

    /// Let the inspects of `id` through, those waiting and later ones.
    pub fn release(&self, id: &str) {
        self.shared.holds.lock().expect("never poisoned").ids.remove(id);
        self.shared.released.send_modify(|n| *n += 1);
    }

    /// (inspects waiting now, inspects ever held).
    pub fn held(&self) -> (usize, usize) {
        let h = self.shared.holds.lock().expect("never poisoned");
        (h.waiting, h.held)
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: StdUnixListener, upstream: PathBuf, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let listener = UnixListener::from_std(listener).expect("the proxy socket in tokio");
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (upstream, shared) = (upstream.clone(), shared.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (upstream, shared) = (upstream.clone(), shared.clone());
                    async move { Ok::<_, std::convert::Infallible>(forward(req, &upstream, &shared).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        }
    }
}

/// The container id of an inspect (`GET [/v1.41]/containers/<id>/json`).
fn inspected(req: &Request<Incoming>) -> Option<String> {
    if req.method() != hyper::Method::GET {
        return None;
    }
    let path = req.uri().path();
    let rest = path.split_once("/containers/")?.1;
    let id = rest.strip_suffix("/json")?;
    (!id.contains('/')).then(|| id.to_string())
}

/// Counts a held inspect as waiting until it goes on or its client gives up (the server then
/// drops the request's future).
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.holds.lock().unwrap_or_else(|p| p.into_inner()).waiting -= 1;
    }
}

async fn forward(req: Request<Incoming>, upstream: &Path, shared: &Shared) -> Response<ProxyBody> {
    if let Some(id) = inspected(&req) {
        let mut released = shared.released.subscribe();
        let mut waiting: Option<Waiting> = None;
        loop {
            {
                let mut h = shared.holds.lock().expect("never poisoned");
                if !h.ids.contains(&id) {
                    break;
                }
                if waiting.is_none() {
                    h.waiting += 1;
                    h.held += 1;
                    waiting = Some(Waiting(shared));
                }
            }
            if released.changed().await.is_err() {
                break;
            }
        }
    }
    // One upstream connection per request: simple, and a held request holds nothing else up.
    let stream = match UnixStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("cannot connect to {}: {e}", upstream.display())),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("handshake: {e}")),
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
