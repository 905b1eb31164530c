//! PATCH bodies: JSON merge patch, strategic merge patch, JSON patch and server-side apply.
//!
//! Exists because kube-rs' helpers each use a different patch type: the finalizer helper sends
//! RFC 6902 JSON patches guarded by `test` ops, the event recorder sends merge patches, and
//! status is written with server-side apply (`application/apply-patch+yaml` carrying JSON, with
//! `fieldManager` and `force`). Each function here turns the stored object plus a patch body
//! into the candidate object; the store then applies the server's rules (status subresource,
//! generation, resourceVersion, finalizers) to that candidate exactly as for a PUT.
//!
//! Simplifications, each safe for berth:
//! - strategic merge patch is a JSON merge patch with `$`-directives dropped: lists are replaced
//!   whole, never merged by `name`. berth's objects are custom resources, for which the real
//!   server also refuses strategic merge (so berth cannot depend on it), and kube-rs never sends it
//!   on its own.
//! - server-side apply merges the applied object over the stored one (maps merge, lists and
//!   scalars replace), records one `managedFields` entry per Apply manager whose `fieldsV1` lists
//!   the applied leaf paths (a list is one leaf), removes fields a manager applied before and
//!   no longer applies (unless another Apply manager owns them), and reports conflicts only
//!   between Apply managers (`force=true` takes the fields over). Non-apply writers are not
//!   recorded as field owners. berth applies only its own status and labels, so the
//!   per-list-item ownership the real server tracks is never needed.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::discovery::ResourceType;
use crate::status::ApiError;

/// The PATCH content types the server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json` (treated as merge patch; see module docs).
    Strategic,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/apply-patch+yaml` (server-side apply; the body may be JSON, which is YAML).
    Apply,
}

impl PatchType {
    /// From the request's `Content-Type`.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let base = content_type.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// Parses a JSON body (the apply body is YAML by content type, but kube-rs and berth send JSON,
/// a subset of YAML; plain YAML is refused with 400).
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

/// RFC 7386 merge patch. The patch must be a JSON object.
pub fn merge(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    }
    json_patch::merge(target, patch);
    Ok(())
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Strategic merge patch, simplified to a merge patch without `$` directives.
pub fn strategic(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let mut patch = patch.clone();
    strip_directives(&mut patch);
    merge(target, &patch)
}

/// RFC 6902 JSON patch, all-or-nothing. A `test` op on a missing path compares against null,
/// as the API server's JSON patch library does (kube-runtime's finalizer helper relies on it:
/// `test /metadata/finalizers == null` before the first `add`).
pub fn json_patch(target: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON patch: {e}")))?;
    let mut doc = target.clone();
    for op in ops.0 {
        if let json_patch::PatchOperation::Test(test) = &op
            && doc.pointer(test.path.as_str()).is_none()
        {
            if test.value.is_null() {
                continue;
            }
            return Err(ApiError::unprocessable(format!(
                "the server rejected our request due to an error in our request: testing value {} failed: path not found",
                test.path.as_str()
            )));
        }
        json_patch::patch(&mut doc, std::slice::from_ref(&op)).map_err(|e| {
            ApiError::unprocessable(format!("the server rejected our request due to an error in our request: {e}"))
        })?;
    }
    *target = doc;
    Ok(())
}

/// A field path: map keys from the object's root. Lists are leaves.
pub type FieldPath = Vec<String>;

/// metadata fields that are the object's identity or the server's, never owned by a manager.
const SYSTEM_METADATA: [&str; 11] = [
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

fn leaves(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// Which part of the object an apply may own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyScope {
    /// The main resource; `status` excluded when the type has a status subresource.
    Main {
        /// The type has a status subresource.
        status_subresource: bool,
    },
    /// The `/status` subresource: only `status`.
    Status,
}

/// The leaf paths an applied object sets, within its scope.
pub fn field_set(applied: &Value, scope: ApplyScope) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(map) = applied.as_object() else { return out };
    for (k, v) in map {
        let keep = match (scope, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (ApplyScope::Status, key) => key == "status",
            (ApplyScope::Main { status_subresource }, "status") => !status_subresource,
            _ => true,
        };
        if !keep {
            continue;
        }
        if k == "metadata" {
            if let Some(meta) = v.as_object() {
                for (mk, mv) in meta {
                    if SYSTEM_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    let mut prefix = vec![k.clone(), mk.clone()];
                    leaves(mv, &mut prefix, &mut out);
                }
            }
            continue;
        }
        let mut prefix = vec![k.clone()];
        leaves(v, &mut prefix, &mut out);
    }
    out
}

/// A field set as `fieldsV1` (`{"f:spec":{"f:x":{}}}`).
pub fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for key in path {
            node = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// The leaf paths of a `fieldsV1` document.
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let children: Vec<(&String, &Value)> =
            v.as_object().map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect()).unwrap_or_default();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, child) in children {
            prefix.push(k[2..].to_string());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |node, key| node.as_object()?.get(key))
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = v;
    for key in parents {
        match node.as_object_mut().and_then(|m| m.get_mut(key)) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn dotted(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

/// One server-side apply. Returns the candidate object (before the store's rules) with its new
/// `metadata.managedFields`.
#[allow(clippy::too_many_arguments)]
pub fn server_side_apply(
    rt: &ResourceType,
    name: &str,
    old: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: ApplyScope,
    now: &str,
) -> Result<Value, ApiError> {
    let api_version = applied.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = applied.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid object type: {api_version}, Kind={kind}: apply needs apiVersion and kind"
        )));
    }
    let subresource = if scope == ApplyScope::Status { Some("status") } else { None };
    let is_own = |e: &Value| {
        e["manager"].as_str() == Some(manager)
            && e["operation"].as_str() == Some("Apply")
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let mut entries: Vec<Value> =
        old.and_then(|o| o.pointer("/metadata/managedFields")).and_then(Value::as_array).cloned().unwrap_or_default();
    let new_set = field_set(applied, scope);
    let empty = json!({});
    let current = old.unwrap_or(&empty);

    // Conflicts with other Apply managers: a field they own that this apply sets differently.
    let mut conflicts = Vec::new();
    let mut others: Vec<(usize, BTreeSet<FieldPath>)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if is_own(entry) || entry["operation"].as_str() != Some("Apply") {
            continue;
        }
        let mut set = from_fields_v1(&entry["fieldsV1"]);
        let before = set.len();
        let mut taken = Vec::new();
        for q in &set {
            for p in &new_set {
                if !overlaps(p, q) {
                    continue;
                }
                let shorter = if p.len() <= q.len() { p } else { q };
                if value_at(current, shorter) != value_at(applied, shorter) {
                    conflicts.push((entry["manager"].as_str().unwrap_or_default().to_string(), dotted(shorter)));
                    taken.push(q.clone());
                }
            }
        }
        for q in taken {
            set.remove(&q);
        }
        if set.len() != before {
            others.push((i, set));
        }
    }
    conflicts.sort();
    conflicts.dedup();
    if !conflicts.is_empty() && !force {
        return Err(ApiError::apply_conflict(rt, name, &conflicts));
    }
    for (i, set) in &others {
        entries[*i]["fieldsV1"] = to_fields_v1(set);
    }
    entries.retain(|e| {
        e["operation"].as_str() != Some("Apply") || !from_fields_v1(&e["fieldsV1"]).is_empty() || is_own(e)
    });

    // Fields this manager applied before and dropped now are removed, unless someone else owns them.
    let own_index = entries.iter().position(is_own);
    let previous = own_index.map(|i| from_fields_v1(&entries[i]["fieldsV1"])).unwrap_or_default();
    let other_sets: Vec<BTreeSet<FieldPath>> = entries
        .iter()
        .filter(|e| !is_own(e) && e["operation"].as_str() == Some("Apply"))
        .map(|e| from_fields_v1(&e["fieldsV1"]))
        .collect();
    let mut object = current.clone();
    for p in previous.difference(&new_set) {
        let kept = new_set.iter().any(|n| overlaps(n, p)) || other_sets.iter().flatten().any(|o| overlaps(o, p));
        if !kept {
            remove_at(&mut object, p);
        }
    }
    json_patch::merge(&mut object, applied);

    // Record this manager's fields.
    let fields = to_fields_v1(&new_set);
    match own_index {
        Some(i) if entries[i]["fieldsV1"] == fields && entries[i]["apiVersion"].as_str() == Some(api_version) => {}
        Some(i) if new_set.is_empty() => {
            entries.remove(i);
        }
        _ => {
            let mut entry = json!({
                "manager": manager,
                "operation": "Apply",
                "apiVersion": api_version,
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            });
            if let Some(sub) = subresource {
                entry["subresource"] = sub.into();
            }
            match own_index {
                Some(i) => entries[i] = entry,
                None if !new_set.is_empty() => entries.push(entry),
                None => {}
            }
        }
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]["managedFields"] = Value::Array(entries);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_op_on_missing_path_is_null() {
        let mut doc = json!({"metadata": {"name": "a"}});
        let body = br#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["f"]}]"#;
        json_patch(&mut doc, body).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
        let body = br#"[{"op":"test","path":"/metadata/labels","value":{"a":"b"}}]"#;
        assert_eq!(json_patch(&mut doc, body).unwrap_err().code, 422);
    }

    #[test]
    fn fields_v1_roundtrip() {
        let applied = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"a": [1], "b": {"c": 2}}, "status": {"s": 1}});
        let set = field_set(&applied, ApplyScope::Main { status_subresource: true });
        assert_eq!(set.len(), 3);
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        let status = field_set(&applied, ApplyScope::Status);
        assert_eq!(status.into_iter().collect::<Vec<_>>(), vec![vec!["status".to_string(), "s".to_string()]]);
    }
}
