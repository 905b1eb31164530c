//! Watch streams: `?watch=true` as a chunked stream of JSON event lines.
//!
//! Exists because controllers are built on list-then-watch (kube-runtime's `watcher`, which
//! every `Controller` and `reflector` uses) and depend on its guarantees: a watch from
//! resourceVersion N delivers every change after N, in order, exactly once (replayed from the
//! store's history, so nothing written between the list and the watch is lost); a
//! resourceVersion older than the kept history yields an `ERROR` event with a 410 `Expired`
//! Status, on which the watcher re-lists; selector-filtered watches see an object enter
//! (`ADDED`) and leave (`DELETED`) the selection; `timeoutSeconds` ends the stream cleanly so
//! the client re-watches from its last resourceVersion; `allowWatchBookmarks` gets periodic
//! `BOOKMARK`s and `sendInitialEvents=true` the streaming-list form (synthetic `ADDED`s and a
//! bookmark annotated `k8s.io/initial-events-end`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::discovery::ResourceType;
use crate::http::present;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Change, ChangeType};
use crate::{Shared, lock};

/// How often a watch that asked for bookmarks gets one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a watch lasts when the client gives no `timeoutSeconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A parsed watch request.
#[derive(Clone, Debug)]
pub struct WatchRequest {
    /// The watched type (at the requested version).
    pub rt: ResourceType,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion`; `None` (or 0) starts with the current state as `ADDED` events.
    pub resource_version: Option<u64>,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// The client asked for `PartialObjectMetadata`.
    pub metadata_only: bool,
}

impl WatchRequest {
    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event type a change produces for this watch, if any.
    fn event_type(&self, change: &Change) -> Option<&'static str> {
        if change.key != self.rt.key() || self.namespace.as_ref().is_some_and(|ns| *ns != change.namespace) {
            return None;
        }
        let now = self.selects(&change.object);
        match change.change {
            ChangeType::Added => now.then_some("ADDED"),
            ChangeType::Deleted => {
                (now || change.previous.as_ref().is_some_and(|p| self.selects(p))).then_some("DELETED")
            }
            ChangeType::Modified => match (change.previous.as_ref().is_some_and(|p| self.selects(p)), now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }
    }

    fn line(&self, event_type: &str, obj: &Value) -> Bytes {
        let mut s = json!({"type": event_type, "object": present(obj, &self.rt, self.metadata_only)}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (api_version, kind) = if self.metadata_only {
            ("meta.k8s.io/v1".to_string(), "PartialObjectMetadata".to_string())
        } else {
            (self.rt.api_version(), self.rt.kind.clone())
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut s =
            json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": metadata}})
                .to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn error(err: &ApiError) -> Bytes {
        let mut s = json!({"type": "ERROR", "object": err.to_status()}).to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

/// Starts a watch; the returned receiver is the response body's stream of event lines.
pub fn start(shared: Arc<Shared>, req: WatchRequest) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(shared, req, tx));
    rx
}

async fn run(shared: Arc<Shared>, req: WatchRequest, tx: mpsc::Sender<Bytes>) {
    let deadline = tokio::time::Instant::now() + req.timeout;
    let mut notify = shared.notify.clone();
    notify.borrow_and_update();
    let from_now = req.send_initial_events || matches!(req.resource_version, None | Some(0));
    let (mut cursor, initial, epoch) = {
        let store = lock(&shared.store);
        if from_now {
            let objs = store.list(&req.rt, req.namespace.as_deref(), &req.labels, &req.fields);
            (store.rv(), objs, store.epoch())
        } else {
            (req.resource_version.unwrap_or_default(), vec![], store.epoch())
        }
    };
    for obj in &initial {
        if tx.send(req.line("ADDED", obj)).await.is_err() {
            return;
        }
    }
    if req.send_initial_events && tx.send(req.bookmark(cursor, true)).await.is_err() {
        return;
    }
    let mut bookmarks = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_INTERVAL, BOOKMARK_INTERVAL);
    loop {
        notify.borrow_and_update();
        let batch = {
            let store = lock(&shared.store);
            let batch = if store.epoch() == epoch { store.changes_after(cursor) } else { Err(store.floor()) };
            if batch.is_ok() {
                cursor = cursor.max(store.rv());
            }
            batch
        };
        let batch = match batch {
            Ok(changes) => changes,
            Err(floor) => {
                let _ = tx.send(WatchRequest::error(&ApiError::expired(cursor, floor))).await;
                return;
            }
        };
        for change in &batch {
            if let Some(t) = req.event_type(change)
                && tx.send(req.line(t, &change.object)).await.is_err()
            {
                return;
            }
        }
        tokio::select! {
            changed = notify.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = bookmarks.tick(), if req.bookmarks => {
                if tx.send(req.bookmark(cursor, false)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}
