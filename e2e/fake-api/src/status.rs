//! API errors as `metav1.Status` JSON.
//!
//! Exists because kube-rs (and therefore kube-runtime's finalizer helper, watcher and
//! leader-election crates) decide what to do from an error's `code` and `reason`: a 409 with
//! `Conflict` is retried after a re-read, `AlreadyExists` is tolerated on create, a 410 `Expired`
//! makes the watcher re-list. Every error the fake returns is built here, with the same reasons,
//! codes, message shapes and `details` as the real API server.

use serde_json::{Value, json};

use crate::discovery::ResourceType;

/// One failed request, as the API server reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`,
    /// `Expired`, `Forbidden`, `MethodNotAllowed`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the reason has any.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>, details: Option<Value>) -> Self {
        ApiError { code, reason, message: message.into(), details }
    }

    /// 404 for a named object of a known type.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.resource_name()),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        )
    }

    /// 404 for a path the server does not serve (unknown group, version, resource or verb).
    pub fn unknown_path() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource", Some(json!({})))
    }

    /// 409 on create of a name that exists.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.resource_name()),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        )
    }

    /// 409 on a write whose `metadata.resourceVersion` (or delete precondition) is stale.
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", rt.resource_name()),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        )
    }

    /// 409 from server-side apply when another manager owns a field with another value.
    pub fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[(String, String)]) -> Self {
        let list: Vec<String> = conflicts.iter().map(|(m, f)| format!("conflict with \"{m}\": {f}")).collect();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f}))
            .collect();
        let n = conflicts.len();
        Self::new(
            409,
            "Conflict",
            format!("Apply failed with {n} conflict{}: {}", if n == 1 { "" } else { "s" }, list.join(", ")),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes})),
        )
    }

    /// 422: the object fails validation. `causes` are `(field, reason, message)`.
    pub fn invalid(rt: &ResourceType, name: &str, causes: &[(&str, &str, String)]) -> Self {
        let text: Vec<String> = causes.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
        let causes: Vec<Value> =
            causes.iter().map(|(f, r, m)| json!({"reason": r, "message": m, "field": f})).collect();
        let gk = if rt.group.is_empty() { rt.kind.clone() } else { format!("{}.{}", rt.kind, rt.group) };
        let message = if text.len() == 1 {
            format!("{gk} \"{name}\" is invalid: {}", text[0])
        } else {
            format!("{gk} \"{name}\" is invalid: [{}]", text.join(", "))
        };
        Self::new(
            422,
            "Invalid",
            message,
            Some(json!({"name": name, "group": rt.group, "kind": rt.kind, "causes": causes})),
        )
    }

    /// 422 without a specific object (e.g. a JSON patch whose `test` fails).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message, Some(json!({})))
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    /// 403: refused (e.g. creating in a terminating namespace).
    pub fn forbidden(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", rt.resource_name()),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        )
    }

    /// 405: the verb is not served on this path.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message, Some(json!({})))
    }

    /// 410: the requested resourceVersion is older than the kept history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {requested} ({oldest})"), None)
    }

    /// 415: a PATCH with a content type the server does not take.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
            None,
        )
    }

    /// The `metav1.Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}
