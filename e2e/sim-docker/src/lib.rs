//! Simulated Docker engines, many in one process: a **test and benchmark instrument only**.
//!
//! berth's operator at fleet scale (thousands of DockerHosts) cannot be measured against real
//! engines on one machine, and what such a benchmark measures is the operator, not the engine.
//! [`SimFleet`] serves N engines, each on its own `127.0.0.1` TCP port (a DockerHost endpoint
//! `tcp://127.0.0.1:PORT` with `insecure: true`), answering the subset of the Docker Engine API
//! (1.41, Docker 20.10) that berth calls: `/_ping`, `/version`, `/info`, `/containers/json` with
//! label filters, `/containers/create`, `/containers/{id}/start|stop|json`,
//! `DELETE /containers/{id}`, `/images/{name}/json`, `/distribution/{name}/json` and `/events`
//! (held open, with `create`/`start`/`die`/`destroy` events as Docker emits them). Containers
//! live in memory; every transition happens at once; nothing runs.
//!
//! Requests are counted by method and route; a route the simulation does not know answers 404
//! and is counted (and printed once) as unknown, so a new call berth starts making shows up.
//!
//! It is not a Docker engine: no processes, no images, no networks or volumes, no health
//! checks, no `since` replay on `/events`. Never point anything but tests and benchmarks at it.
//!
//! ```no_run
//! let fleet = berth_sim_docker::SimFleet::start(3).expect("listen");
//! let endpoint = fleet.endpoint(0); // tcp://127.0.0.1:PORT
//! # let _ = endpoint;
//! assert_eq!(fleet.host(0).len(), 0);
//! ```

pub mod engine;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;

pub use engine::{Container, Host, State};
pub use http::Requests;

/// N simulated engines served from one thread with its own tokio runtime. Stops when dropped.
pub struct SimFleet {
    hosts: Vec<(SocketAddr, Arc<Host>)>,
    requests: Arc<Requests>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimFleet {
    /// Start `n` engines, each on a free port of 127.0.0.1.
    pub fn start(n: usize) -> std::io::Result<SimFleet> {
        let mut listeners = Vec::with_capacity(n);
        let mut hosts = Vec::with_capacity(n);
        for i in 0..n {
            let l = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            l.set_nonblocking(true)?;
            hosts.push((l.local_addr()?, Arc::new(Host::new(i))));
            listeners.push(l);
        }
        let requests = Arc::new(Requests::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let served: Vec<Arc<Host>> = hosts.iter().map(|(_, h)| h.clone()).collect();
        let counted = requests.clone();
        let thread = std::thread::Builder::new().name("sim-docker".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(async move {
                for (listener, host) in listeners.into_iter().zip(served) {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("register listener");
                    tokio::spawn(serve(listener, host, counted.clone()));
                }
                let mut stop = stop_rx;
                let _ = stop.wait_for(|s| *s).await;
            });
            // Dropping the runtime ends every listener, connection and event stream.
            runtime.shutdown_background();
        })?;
        Ok(SimFleet { hosts, requests, shutdown: Some(stop_tx), thread: Some(thread) })
    }

    /// How many engines.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the fleet has no engine.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Engine `i`'s address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.hosts[i].0
    }

    /// Engine `i` as a DockerHost endpoint: `tcp://127.0.0.1:PORT` (plain HTTP: `insecure: true`).
    pub fn endpoint(&self, i: usize) -> String {
        format!("tcp://{}", self.hosts[i].0)
    }

    /// Engine `i`'s state.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i].1
    }

    /// Every container on every engine.
    pub fn container_count(&self) -> usize {
        self.hosts.iter().map(|(_, h)| h.len()).sum()
    }

    /// Requests served so far, by route, and those to unknown routes.
    pub fn requests(&self) -> &Requests {
        &self.requests
    }

    /// Stop serving and wait for the thread.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

async fn serve(listener: tokio::net::TcpListener, host: Arc<Host>, requests: Arc<Requests>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (host, requests) = (host.clone(), requests.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| http::handle(host.clone(), requests.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}
