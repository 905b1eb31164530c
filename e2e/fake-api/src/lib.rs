//! An in-process fake Kubernetes API server for berth's operator tests.
//!
//! No API server can run on berth's build machines, yet the operator must be tested as it runs:
//! the unmodified `berth operator` binary (kube-rs client, kube-runtime `Controller`, watches,
//! server-side apply, finalizers, Events, Leases) pointed at a kubeconfig. [`FakeApi`] serves
//! the Kubernetes REST API over plain HTTP on 127.0.0.1 from its own thread and tokio runtime,
//! so both sync and async tests can use it, and writes a kubeconfig for it.
//!
//! It is strict where controllers depend on the server (see each module): server-set metadata,
//! a global resourceVersion that changes on every real write and never otherwise, no-op writes,
//! `metadata.generation`, the status subresource, 409/404/422/410 as `metav1.Status`, selectors,
//! loss-free watches with 410 on expired versions, finalizers and graceful deletion, JSON /
//! merge / apply patches, CRDs that make their resources served with discovery. What it
//! simplifies is listed in the README of this crate's folder and in [`patch`].
//!
//! ```no_run
//! # async fn demo() {
//! let api = berth_fake_api::FakeApi::start();
//! let client = api.client().await;
//! # let _ = client;
//! assert_eq!(api.count_writes(), 0);
//! # }
//! ```

pub mod discovery;
pub mod http;
pub mod patch;
pub mod selectors;
pub mod status;
pub mod store;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

pub use status::ApiError;

/// One request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (may be empty).
    pub query: String,
    /// Response status code (for a watch: 200 when the stream started).
    pub status: u16,
}

impl RequestRecord {
    /// A request that asks to change state (POST, PUT, PATCH or DELETE), whatever its outcome.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    /// A list or get with `watch=true`.
    pub fn is_watch(&self) -> bool {
        self.method == "GET"
            && form_urlencoded::parse(self.query.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    }
}

/// State shared by the HTTP tasks and the test-facing handle.
pub struct Shared {
    pub(crate) store: Mutex<store::Store>,
    pub(crate) notify: tokio::sync::watch::Receiver<u64>,
    pub(crate) log: Mutex<Vec<RequestRecord>>,
    pub(crate) addr: SocketAddr,
}

/// Locks a mutex, ignoring poisoning (a panicking test must not cascade into the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake API server. Stops when dropped.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    /// Starts a server on `127.0.0.1` at a free port. Panics if it cannot bind.
    pub fn start() -> FakeApi {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind 127.0.0.1:0")
    }

    /// Starts a server on `addr` (port 0 picks a free one).
    pub fn start_on(addr: SocketAddr) -> std::io::Result<FakeApi> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new(tx)),
            notify: rx,
            log: Mutex::new(Vec::new()),
            addr,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new().name(format!("fake-api-{}", addr.port())).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("register listener");
                http::serve(listener, server_shared, stop_rx).await;
            });
            // Dropping the runtime cancels every connection and watch task.
            runtime.shutdown_background();
        })?;
        Ok(FakeApi { shared, addr, shutdown: Some(stop_tx), thread: Some(thread) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose current context points at this server, namespace `default`, no auth.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: berth-fake\n  cluster:\n    server: {url}\n\
             contexts:\n\
             - name: berth-fake\n  context:\n    cluster: berth-fake\n    user: berth-fake\n    namespace: default\n\
             current-context: berth-fake\n\
             users:\n\
             - name: berth-fake\n  user: {{}}\n\
             preferences: {{}}\n",
            url = self.url()
        )
    }

    /// Writes [`kubeconfig_yaml`](Self::kubeconfig_yaml) to `dir/kubeconfig` and returns the
    /// path (for `KUBECONFIG=`). Panics if the file cannot be written.
    pub fn write_kubeconfig(&self, dir: impl AsRef<Path>) -> PathBuf {
        let path = dir.as_ref().join("kubeconfig");
        std::fs::write(&path, self.kubeconfig_yaml())
            .unwrap_or_else(|e| panic!("write kubeconfig {}: {e}", path.display()));
        path
    }

    /// A kube client configured from the kubeconfig, as the operator's would be. Must be called
    /// inside a tokio runtime (kube's client spawns its buffer task there).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml()).expect("kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig loads");
        kube::Client::try_from(config).expect("kube client")
    }

    /// Every request so far, in order of completion.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// How many write requests (POST, PUT, PATCH, DELETE) the server has received, whatever
    /// their outcome — including no-op writes, so a client that keeps re-writing identical
    /// state is caught.
    pub fn count_writes(&self) -> usize {
        lock(&self.shared.log).iter().filter(|r| r.is_write()).count()
    }

    /// The current global resourceVersion (changes exactly when stored state changes).
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv()
    }

    /// A stored object, by `apiVersion` (`v1`, `berth.dev/v1alpha1`), plural, namespace (`""`
    /// for cluster-scoped) and name.
    pub fn object(&self, api_version: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or_default();
        lock(&self.shared.store).get_raw(&(group.to_string(), plural.to_string()), namespace, name)
    }

    /// `f` of a stored object, read in place: no copy, so a benchmark can poll thousands of
    /// objects without slowing the server it measures. `f` runs under the store's lock.
    pub fn with_object<T>(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&Value) -> T,
    ) -> Option<T> {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or_default();
        lock(&self.shared.store).get_raw_ref(&(group.to_string(), plural.to_string()), namespace, name).map(f)
    }

    /// Forgets the change history, as etcd compaction (plus a watch-cache reset) does: every
    /// open watch, and any later watch from an earlier resourceVersion, gets a 410 `Expired`
    /// `ERROR` event, on which kube-runtime's watcher re-lists.
    pub fn compact_history(&self) {
        lock(&self.shared.store).compact();
    }

    /// Keeps at most `limit` changes in the watch history (default 100 000).
    pub fn set_history_limit(&self, limit: usize) {
        lock(&self.shared.store).set_history_limit(limit);
    }

    /// Stops the server and waits for its thread. Open watches end; later requests fail to
    /// connect.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}
