//! The Docker Engine API over HTTP/1.1 (hyper 1), the subset berth calls, onto one [`Host`].
//!
//! Paths may carry bollard's version prefix (`/v1.41/containers/json`). Every request is
//! counted by method and route (`POST /containers/{id}/start`); a route the simulation does not
//! know answers 404 and is counted apart ([`Requests::unknown`]), so a benchmark that makes the
//! operator call something new says so instead of measuring an error path.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::engine::{self, EngineError, Filters, Host};

/// The API version the simulated engines speak (Docker 20.10's).
pub const API_VERSION: &str = "1.41";

/// A response body: a whole document, or the endless `/events` stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Requests served, fleet-wide.
#[derive(Default)]
pub struct Requests {
    by_route: Mutex<BTreeMap<String, u64>>,
    unknown_total: AtomicU64,
    unknown: Mutex<BTreeMap<String, u64>>,
}

impl Requests {
    fn count(&self, method: &Method, route: &str) {
        let mut m = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(format!("{method} {route}")).or_default() += 1;
    }

    fn count_unknown(&self, method: &Method, path: &str) {
        let first = self.unknown_total.fetch_add(1, Ordering::Relaxed) == 0;
        let key = format!("{method} {path}");
        if first {
            eprintln!("sim-docker: UNKNOWN ROUTE {key} (answered 404; see Requests::unknown)");
        }
        *self.unknown.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default() += 1;
    }

    /// Requests by `METHOD route`, known routes only.
    pub fn by_route(&self) -> BTreeMap<String, u64> {
        self.by_route.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests to routes the simulation does not serve, by `METHOD path`.
    pub fn unknown(&self) -> BTreeMap<String, u64> {
        self.unknown.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many requests hit an unknown route.
    pub fn unknown_total(&self) -> u64 {
        self.unknown_total.load(Ordering::Relaxed)
    }
}

fn full(code: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).boxed_unsync());
    *resp.status_mut() = code;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert("Api-Version", HeaderValue::from_static(API_VERSION));
    resp
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "application/json",
        Bytes::from(value.to_string()),
    )
}

fn empty(code: StatusCode) -> Response<Body> {
    full(code, "text/plain", Bytes::new())
}

fn error(e: &EngineError) -> Response<Body> {
    json_response(e.code, &json!({"message": e.message}))
}

/// `%XX` decoding of one path segment (image names may arrive encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "1" || v == "true" || v == "True")
}

/// Serve one request against `host`.
pub async fn handle(
    host: Arc<Host>,
    requests: Arc<Requests>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()).into_owned().collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    // Strip bollard's `/v1.41` prefix.
    let unversioned = match path.strip_prefix("/v").and_then(|p| p.split_once('/')) {
        Some((version, rest)) if version.chars().all(|c| c.is_ascii_digit() || c == '.') => format!("/{rest}"),
        _ => path.clone(),
    };
    let (route, resp) = route(&host, &method, &unversioned, &q, &body);
    match route {
        Some(route) => requests.count(&method, route),
        None => requests.count_unknown(&method, &unversioned),
    }
    Ok(resp)
}

fn route(
    host: &Host,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    body: &Bytes,
) -> (Option<&'static str>, Response<Body>) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let filters = || Filters::parse(q.get("filters").map(String::as_str));
    let known = |route: &'static str, resp: Response<Body>| (Some(route), resp);
    match (method.clone(), segs.as_slice()) {
        (Method::GET | Method::HEAD, ["_ping"]) => {
            known("/_ping", full(StatusCode::OK, "text/plain", Bytes::from_static(b"OK")))
        }
        (Method::GET, ["version"]) => known("/version", json_response(200, &version())),
        (Method::GET, ["info"]) => known("/info", json_response(200, &info(host))),
        (Method::GET, ["containers", "json"]) => known(
            "/containers/json",
            match filters() {
                Ok(f) => json_response(200, &Value::Array(host.list(flag(q, "all"), &f))),
                Err(e) => error(&e),
            },
        ),
        (Method::POST, ["containers", "create"]) => known(
            "/containers/create",
            match serde_json::from_slice::<Value>(body) {
                Err(e) => error(&EngineError { code: 400, message: format!("invalid JSON: {e}") }),
                Ok(b) => match host.create(q.get("name").map(String::as_str), b) {
                    Ok(id) => json_response(201, &json!({"Id": id, "Warnings": []})),
                    Err(e) => error(&e),
                },
            },
        ),
        (Method::POST, ["containers", id, "start"]) => known(
            "/containers/{id}/start",
            match host.start(&percent_decode(id)) {
                Ok(true) => empty(StatusCode::NO_CONTENT),
                Ok(false) => empty(StatusCode::NOT_MODIFIED),
                Err(e) => error(&e),
            },
        ),
        (Method::POST, ["containers", id, "stop" | "kill"]) => known(
            "/containers/{id}/stop",
            match host.stop(&percent_decode(id)) {
                Ok(true) => empty(StatusCode::NO_CONTENT),
                Ok(false) => empty(StatusCode::NOT_MODIFIED),
                Err(e) => error(&e),
            },
        ),
        (Method::GET, ["containers", id, "json"]) => known(
            "/containers/{id}/json",
            match host.inspect(&percent_decode(id)) {
                Ok(v) => json_response(200, &v),
                Err(e) => error(&e),
            },
        ),
        (Method::DELETE, ["containers", id]) => known(
            "/containers/{id}",
            match host.remove(&percent_decode(id), flag(q, "force")) {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(e) => error(&e),
            },
        ),
        // Image names hold slashes: everything between the prefix and `/json` is the name.
        (Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            known("/images/{name}/json", json_response(200, &engine::image_inspect(&percent_decode(&name.join("/")))))
        }
        (Method::GET, ["distribution", name @ .., "json"]) if !name.is_empty() => known(
            "/distribution/{name}/json",
            json_response(200, &engine::distribution_inspect(&percent_decode(&name.join("/")))),
        ),
        (Method::GET, ["events"]) => known(
            "/events",
            match filters() {
                Ok(f) => events(host.subscribe(), f),
                Err(e) => error(&e),
            },
        ),
        _ => (None, error(&EngineError { code: 404, message: format!("page not found: {method} {path}") })),
    }
}

/// The event stream: open until the client goes, one JSON line per matching event. `since` is
/// ignored: a reconnecting follower gets what happens from then on.
fn events(rx: broadcast::Receiver<Arc<engine::Event>>, filters: Filters) -> Response<Body> {
    let lines = futures::stream::unfold((rx, filters), |(mut rx, filters)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if filters.matches_event(&e) => {
                    let mut line = e.to_json().to_string();
                    line.push('\n');
                    return Some((Ok(Frame::data(Bytes::from(line))), (rx, filters)));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let mut resp = Response::new(StreamBody::new(lines.boxed()).boxed_unsync());
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert("Api-Version", HeaderValue::from_static(API_VERSION));
    resp
}

fn version() -> Value {
    json!({
        "Platform": {"Name": "berth sim-docker"},
        "Version": "20.10.24+sim",
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.12",
        "GitCommit": "sim",
        "GoVersion": "go1.19",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": "sim",
        "BuildTime": "2026-01-01T00:00:00.000000000+00:00",
    })
}

fn info(host: &Host) -> Value {
    let containers = host.containers();
    let running = containers.iter().filter(|c| c.state == engine::State::Running).count();
    json!({
        "ID": format!("SIM-{}", host.index),
        "Name": format!("sim-{}", host.index),
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers.len() - running,
        "Images": 1,
        "ServerVersion": "20.10.24+sim",
        "OperatingSystem": "berth sim-docker",
        "OSType": "linux",
        "Architecture": "x86_64",
        "NCPU": 4,
        "MemTotal": 8_589_934_592_i64,
        "KernelVersion": "sim",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("sim%2Fapp%3A1"), "sim/app:1");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
