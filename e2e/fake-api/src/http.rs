//! The HTTP front: hyper 1 over plain HTTP/1.1, path routing, query parsing, responses.
//!
//! Exists to speak the API server's REST dialect to an unmodified client: it maps
//! `/api/v1/...` and `/apis/{group}/{version}/...` (collections, namespaced collections, objects,
//! `/status`) plus discovery, `/version` and health paths onto the store and the watch module,
//! returns errors as `metav1.Status` with the right HTTP code, refuses `dryRun` (400) and
//! unknown paths (404), answers `PartialObjectMetadata` requests in that form, and logs every
//! request for the test helpers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::discovery::ResourceType;
use crate::patch::PatchType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{PatchOpts, Preconditions, Sub};
use crate::watch::{self, WatchRequest};
use crate::{RequestRecord, Shared, lock};

/// A response body: a whole JSON document, or a watch's stream of lines.
pub enum Body {
    /// Sent at once, with a Content-Length.
    Full(Option<Bytes>),
    /// Sent chunked as the watch produces lines; ends when the watch does.
    Stream(mpsc::Receiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// An object as returned for a type at its requested version (or as PartialObjectMetadata).
pub fn present(obj: &Value, rt: &ResourceType, metadata_only: bool) -> Value {
    if metadata_only {
        return json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]});
    }
    let mut out = obj.clone();
    out["apiVersion"] = rt.api_version().into();
    out["kind"] = rt.kind.clone().into();
    out
}

fn json_response(code: u16, value: &Value, content_type: &str) -> Response<Body> {
    let mut resp = Response::new(Body::Full(Some(Bytes::from(value.to_string()))));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    resp
}

fn ok(code: u16, value: &Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(code, value, "application/json"))
}

fn error_response(err: &ApiError) -> Response<Body> {
    json_response(err.code, &err.to_status(), "application/json")
}

/// Serves connections until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let resp = route(&shared, &method, &path, &query, &headers, &body).unwrap_or_else(|e| error_response(&e));
    lock(&shared.log).push(RequestRecord { method: method.to_string(), path, query, status: resp.status().as_u16() });
    Ok(resp)
}

/// Where a resource path points.
enum Target {
    Collection { ns: Option<String> },
    Object { ns: Option<String>, name: String, sub: Sub },
}

fn header(headers: &HeaderMap, name: hyper::header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let accept = header(headers, ACCEPT);
    let aggregated = accept.contains("as=APIGroupDiscoveryList");
    let discovery_get = |doc: Option<Value>, content_type: &str| -> Result<Response<Body>, ApiError> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(format!("{method} is not supported on {path}")));
        }
        doc.map(|d| json_response(200, &d, content_type)).ok_or_else(ApiError::unknown_path)
    };
    const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    match segs.as_slice() {
        ["version"] => discovery_get(
            Some(json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-berth-fake", "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                "platform": "linux/amd64",
            })),
            "application/json",
        ),
        ["healthz" | "readyz" | "livez"] => {
            let mut resp = Response::new(Body::Full(Some(Bytes::from_static(b"ok"))));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(resp)
        }
        ["api"] => {
            let store = lock(&shared.store);
            if aggregated {
                discovery_get(Some(store.registry.aggregated(true)), AGGREGATED)
            } else {
                discovery_get(Some(store.registry.core_versions(&shared.addr.to_string())), "application/json")
            }
        }
        ["apis"] => {
            let store = lock(&shared.store);
            if aggregated {
                discovery_get(Some(store.registry.aggregated(false)), AGGREGATED)
            } else {
                discovery_get(Some(store.registry.group_list()), "application/json")
            }
        }
        ["api", "v1"] => discovery_get(lock(&shared.store).registry.resource_list("", "v1"), "application/json"),
        ["apis", group] => discovery_get(lock(&shared.store).registry.group(group), "application/json"),
        ["apis", group, version] => {
            discovery_get(lock(&shared.store).registry.resource_list(group, version), "application/json")
        }
        ["api", "v1", rest @ ..] => resource(shared, "", "v1", rest, method, &q, headers, body),
        ["apis", group, version, rest @ ..] => resource(shared, group, version, rest, method, &q, headers, body),
        _ => Err(ApiError::unknown_path()),
    }
}

fn resolve(shared: &Shared, group: &str, version: &str, rest: &[&str]) -> Result<(ResourceType, Target), ApiError> {
    let store = lock(&shared.store);
    let lookup = |plural: &str| store.registry.lookup(group, version, plural).cloned();
    let not_found = ApiError::unknown_path;
    let cluster = |plural: &str| lookup(plural).filter(|t| !t.namespaced).ok_or_else(not_found);
    let namespaced = |plural: &str| lookup(plural).filter(|t| t.namespaced).ok_or_else(not_found);
    let status = |rt: &ResourceType, sub: &str| {
        if sub == "status" && rt.status_subresource { Ok(Sub::Status) } else { Err(not_found()) }
    };
    match rest {
        [plural] => Ok((lookup(plural).ok_or_else(not_found)?, Target::Collection { ns: None })),
        [plural, name] => Ok((cluster(plural)?, Target::Object { ns: None, name: name.to_string(), sub: Sub::Main })),
        ["namespaces", ns, plural] if lookup(plural).is_some_and(|t| t.namespaced) => {
            Ok((namespaced(plural)?, Target::Collection { ns: Some(ns.to_string()) }))
        }
        [plural, name, sub] => {
            let rt = cluster(plural)?;
            let sub = status(&rt, sub)?;
            Ok((rt, Target::Object { ns: None, name: name.to_string(), sub }))
        }
        ["namespaces", ns, plural, name] => Ok((
            namespaced(plural)?,
            Target::Object { ns: Some(ns.to_string()), name: name.to_string(), sub: Sub::Main },
        )),
        ["namespaces", ns, plural, name, sub] => {
            let rt = namespaced(plural)?;
            let sub = status(&rt, sub)?;
            Ok((rt, Target::Object { ns: Some(ns.to_string()), name: name.to_string(), sub }))
        }
        _ => Err(not_found()),
    }
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

fn parse_rv(q: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::bad_request(format!("invalid resource version: {v:?}"))),
    }
}

fn list_token(rv: u64, ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([rv, ns, name]).to_string())
}

fn parse_token(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v[0].as_u64().ok_or_else(bad)?,
        v[1].as_str().ok_or_else(bad)?.to_string(),
        v[2].as_str().ok_or_else(bad)?.to_string(),
    ))
}

fn obj_key(o: &Value) -> (String, String) {
    (
        o["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
        o["metadata"]["name"].as_str().unwrap_or_default().to_string(),
    )
}

fn list_doc(rt: &ResourceType, items: Vec<Value>, metadata: Value, metadata_only: bool) -> Value {
    let items: Vec<Value> = items.iter().map(|o| present(o, rt, metadata_only)).collect();
    if metadata_only {
        json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "items": items})
    } else {
        json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": metadata, "items": items})
    }
}

#[allow(clippy::too_many_arguments)]
fn resource(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    method: &Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    let (rt, target) = resolve(shared, group, version, rest)?;
    if q.get("dryRun").is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request("dryRun is not supported by berth's fake API server"));
    }
    let metadata_only = header(headers, ACCEPT).contains("as=PartialObjectMetadata");
    let labels = || LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or_default());
    let fields = || FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or_default());
    let parse_json = || -> Result<Value, ApiError> {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
    };
    match (target, method.clone()) {
        (Target::Collection { ns }, Method::GET) => {
            let (labels, fields) = (labels()?, fields()?);
            if flag(q, "watch") {
                let timeout = match q.get("timeoutSeconds") {
                    Some(t) => Duration::from_secs(
                        t.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
                    ),
                    None => watch::DEFAULT_TIMEOUT,
                };
                let req = WatchRequest {
                    rt,
                    namespace: ns,
                    labels,
                    fields,
                    resource_version: parse_rv(q)?,
                    send_initial_events: flag(q, "sendInitialEvents"),
                    bookmarks: flag(q, "allowWatchBookmarks"),
                    timeout,
                    metadata_only,
                };
                let rx = watch::start(shared.clone(), req);
                let mut resp = Response::new(Body::Stream(rx));
                resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                return Ok(resp);
            }
            parse_rv(q)?;
            let (mut items, current) = {
                let store = lock(&shared.store);
                (store.list(&rt, ns.as_deref(), &labels, &fields), store.rv())
            };
            let mut list_rv = current;
            if let Some(token) = q.get("continue").filter(|t| !t.is_empty()) {
                let (rv, tns, tname) = parse_token(token)?;
                list_rv = rv;
                items.retain(|o| obj_key(o) > (tns.clone(), tname.clone()));
            }
            let mut metadata = json!({"resourceVersion": list_rv.to_string()});
            let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
            if limit > 0 && items.len() > limit {
                let remaining = items.len() - limit;
                items.truncate(limit);
                let (lns, lname) = obj_key(items.last().expect("limit > 0"));
                metadata["continue"] = list_token(list_rv, &lns, &lname).into();
                metadata["remainingItemCount"] = remaining.into();
            }
            ok(200, &list_doc(&rt, items, metadata, metadata_only))
        }
        (Target::Collection { ns }, Method::POST) => {
            let Some(ns) = ns.or_else(|| (!rt.namespaced).then(String::new)) else {
                return Err(ApiError::method_not_allowed(format!(
                    "create of {} needs a namespace in the path",
                    rt.resource_name()
                )));
            };
            let created = lock(&shared.store).create(&rt, &ns, parse_json()?, None)?;
            ok(201, &present(&created, &rt, false))
        }
        (Target::Collection { ns }, Method::DELETE) => {
            let (labels, fields) = (labels()?, fields()?);
            let (deleted, rv) = {
                let mut store = lock(&shared.store);
                (store.delete_collection(&rt, ns.as_deref(), &labels, &fields), store.rv())
            };
            ok(200, &list_doc(&rt, deleted, json!({"resourceVersion": rv.to_string()}), false))
        }
        (Target::Object { ns, name, .. }, Method::GET) => {
            let obj = lock(&shared.store).get(&rt, ns.as_deref().unwrap_or_default(), &name)?;
            ok(200, &present(&obj, &rt, metadata_only))
        }
        (Target::Object { ns, name, sub }, Method::PUT) => {
            let obj = lock(&shared.store).update(&rt, ns.as_deref().unwrap_or_default(), &name, parse_json()?, sub)?;
            ok(200, &present(&obj, &rt, false))
        }
        (Target::Object { ns, name, sub }, Method::PATCH) => {
            let patch_type = PatchType::from_content_type(header(headers, CONTENT_TYPE))?;
            let opts = PatchOpts { field_manager: q.get("fieldManager").cloned(), force: flag(q, "force") };
            let (obj, created) = lock(&shared.store).patch(
                &rt,
                ns.as_deref().unwrap_or_default(),
                &name,
                patch_type,
                body,
                sub,
                &opts,
            )?;
            ok(if created { 201 } else { 200 }, &present(&obj, &rt, false))
        }
        (Target::Object { ns, name, sub: Sub::Main }, Method::DELETE) => {
            let options: Value = if body.is_empty() { json!({}) } else { parse_json()? };
            if options.get("dryRun").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
                return Err(ApiError::bad_request("dryRun is not supported by berth's fake API server"));
            }
            let pre = Preconditions {
                uid: options.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
                resource_version: options
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from),
            };
            let obj = lock(&shared.store).delete(&rt, ns.as_deref().unwrap_or_default(), &name, &pre)?;
            ok(200, &present(&obj, &rt, false))
        }
        (_, m) => Err(ApiError::method_not_allowed(format!("{m} is not supported on this path"))),
    }
}
