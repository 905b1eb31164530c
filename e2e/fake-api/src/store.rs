//! The object store: every object, the global resourceVersion and the change history.
//!
//! Exists because all of the server's write semantics must live in one place, under one lock, so
//! that each write is atomic and totally ordered: create / update / patch / delete turn a client's
//! candidate object into the stored one by the API server's rules — server-set metadata (uid,
//! creationTimestamp, namespace), a global resourceVersion bumped on every real change and never
//! otherwise (a write that changes nothing is a no-op without an event), `metadata.generation`
//! bumped only on spec changes, the status subresource split, optimistic concurrency (409 on a
//! stale resourceVersion), finalizers and graceful deletion, namespace and CRD cleanup. Every
//! change is appended to the history the watch module replays, so a watch from any kept
//! resourceVersion loses nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::discovery::{Registry, ResourceType, crd_type, namespace_type};
use crate::patch::{self, ApplyScope, PatchType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// Storage key of a type: `(group, plural)`.
pub type TypeKey = (String, String);
/// Storage key of an object within its type: `(namespace or "", name)`.
pub type ObjKey = (String, String);

/// The finalizer the real API server puts on every CRD until its instances are gone.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The namespaces a fresh cluster has.
pub const INITIAL_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// What a change did, as a watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed from the store.
    Deleted,
}

/// One entry of the change history.
#[derive(Clone, Debug)]
pub struct Change {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Type of the object.
    pub key: TypeKey,
    /// Namespace of the object (`""` for cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub change: ChangeType,
    /// The object after the change (for a deletion: its last state, with the deletion's rv).
    pub object: Value,
    /// The object before the change (for selector-filtered watches).
    pub previous: Option<Value>,
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    /// The main resource.
    Main,
    /// The `/status` subresource.
    Status,
}

/// Options of a PATCH.
#[derive(Clone, Debug, Default)]
pub struct PatchOpts {
    /// `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// `force` query parameter.
    pub force: bool,
}

/// `DeleteOptions.preconditions`.
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    /// Delete only if the uid is this.
    pub uid: Option<String>,
    /// Delete only if the resourceVersion is this.
    pub resource_version: Option<String>,
}

/// The whole server state.
pub struct Store {
    rv: u64,
    /// Served types.
    pub registry: Registry,
    objects: BTreeMap<TypeKey, BTreeMap<ObjKey, Value>>,
    history: VecDeque<Change>,
    floor: u64,
    epoch: u64,
    history_limit: usize,
    seq: u64,
    seed: u64,
    notify: tokio::sync::watch::Sender<u64>,
}

/// Current time as the API server writes it (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn is_deleting(obj: &Value) -> bool {
    meta(obj).get("deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// Drops null map values everywhere and empty metadata collections, as the API server's
/// decoding into typed (or structural, pruned) objects does.
fn normalize(v: &mut Value) {
    fn drop_nulls(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|_, x| !x.is_null());
                map.values_mut().for_each(drop_nulls);
            }
            Value::Array(items) => items.iter_mut().for_each(drop_nulls),
            _ => {}
        }
    }
    drop_nulls(v);
    let m = meta_mut(v);
    for field in ["labels", "annotations", "finalizers", "ownerReferences", "managedFields"] {
        let empty = match m.get(field) {
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if empty {
            m.remove(field);
        }
    }
}

/// Applies OpenAPI `default`s of a structural schema to missing properties.
fn schema_defaults(v: &mut Value, schema: &Value) {
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(props) = props {
                for (k, s) in props {
                    if !map.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(k) {
                        schema_defaults(child, s);
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in map.iter_mut() {
                    if props.is_none_or(|p| !p.contains_key(k)) {
                        schema_defaults(child, extra);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|i| schema_defaults(i, s));
            }
        }
        _ => {}
    }
}

/// A name the API server accepts for most types: a DNS subdomain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl Store {
    /// A fresh store with the namespaces a new cluster has.
    pub fn new(notify: tokio::sync::watch::Sender<u64>) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        let mut store = Store {
            rv: 0,
            registry: Registry::default(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            floor: 0,
            epoch: 0,
            history_limit: 100_000,
            seq: 0,
            seed,
            notify,
        };
        let ns = namespace_type();
        for name in INITIAL_NAMESPACES {
            store
                .create(&ns, "", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}), None)
                .expect("initial namespaces");
        }
        store
    }

    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Watches may start at any resourceVersion ≥ this; older ones are gone (410).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Forgets the change history (as etcd compaction plus a watch-cache reset does): watches
    /// from any earlier resourceVersion now get 410 Gone, and so does every open watch.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
        self.epoch += 1;
        self.notify.send_replace(self.rv);
    }

    /// Bumped by [`compact`](Self::compact); a watch started in an earlier epoch is expired.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Keeps at most `limit` changes.
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(c) = self.history.pop_front() {
                self.floor = c.rv;
            }
        }
    }

    /// Every change after `rv`, or `Err(floor)` when some of them are no longer kept.
    pub fn changes_after(&self, rv: u64) -> Result<Vec<Change>, u64> {
        if rv < self.floor {
            return Err(self.floor);
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Ok(self.history.range(start..).cloned().collect())
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn uid(&mut self) -> String {
        self.seq += 1;
        let a = splitmix(self.seed ^ self.seq);
        let b = splitmix(a ^ self.seq.rotate_left(17));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    fn generated_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.seq += 1;
        let mut x = splitmix(self.seed ^ self.seq);
        (0..5)
            .map(|_| {
                let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
                x /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn record(&mut self, key: TypeKey, namespace: String, change: ChangeType, object: Value, previous: Option<Value>) {
        self.history.push_back(Change { rv: self.rv, key, namespace, change, object, previous });
        self.trim_history();
        self.notify.send_replace(self.rv);
    }

    fn scope_ns(rt: &ResourceType, ns: &str) -> String {
        if rt.namespaced { ns.to_string() } else { String::new() }
    }

    /// One stored object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&rt.key())
            .and_then(|m| m.get(&(Self::scope_ns(rt, ns), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Any stored object by raw keys (for inspection helpers).
    pub fn get_raw(&self, key: &TypeKey, ns: &str, name: &str) -> Option<Value> {
        self.objects.get(key).and_then(|m| m.get(&(ns.to_string(), name.to_string()))).cloned()
    }

    /// Any stored object by raw keys, borrowed (for pollers over many objects).
    pub fn get_raw_ref(&self, key: &TypeKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(key).and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    /// Objects of a type in a namespace (`None`: all), selected, sorted by namespace and name.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .get(&rt.key())
            .map(|m| {
                m.iter()
                    .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons))
                    .filter(|(_, o)| labels.matches(o) && fields.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn check_type(rt: &ResourceType, body: &mut Value) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let api_version = body.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        if (!api_version.is_empty() && !rt.accepts_api_version(&api_version)) || (!kind.is_empty() && kind != rt.kind) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) and kind ({kind}) do not match the resource {} ({})",
                rt.resource_name(),
                rt.api_version()
            )));
        }
        body["apiVersion"] = rt.api_version().into();
        body["kind"] = rt.kind.clone().into();
        Ok(())
    }

    fn check_namespace(rt: &ResourceType, body: &mut Value, ns: &str) -> Result<(), ApiError> {
        let m = meta_mut(body);
        if rt.namespaced {
            if let Some(given) = m.get("namespace").and_then(Value::as_str)
                && !given.is_empty()
                && given != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            m.insert("namespace".into(), ns.into());
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    fn crd_for(&self, key: &TypeKey) -> Option<&Value> {
        self.objects.get(&crd_type().key())?.values().find(|crd| {
            crd["spec"]["group"].as_str() == Some(key.0.as_str())
                && crd["spec"]["names"]["plural"].as_str() == Some(key.1.as_str())
        })
    }

    /// Built-in defaulting, the CRD controller's status, and CRD schema defaults.
    fn defaults(&self, rt: &ResourceType, obj: &mut Value, creating: bool) {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "secrets") => {
                if let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
                    if !obj["data"].is_object() {
                        obj["data"] = json!({});
                    }
                    for (k, v) in string_data {
                        let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
                        obj["data"][k] = encoded.into();
                    }
                }
                if obj.get("type").is_none_or(Value::is_null) {
                    obj["type"] = "Opaque".into();
                }
            }
            ("", "namespaces") => {
                if obj.pointer("/spec/finalizers").is_none() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                }
                if creating {
                    obj["status"] = json!({"phase": "Active"});
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if creating {
                    let m = meta_mut(obj);
                    let mut fins = m.get("finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
                    if !fins.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                        fins.push(CRD_CLEANUP_FINALIZER.into());
                    }
                    m.insert("finalizers".into(), fins.into());
                }
                let mut names = obj["spec"]["names"].clone();
                if names.get("singular").is_none() {
                    names["singular"] = obj["spec"]["names"]["kind"].as_str().unwrap_or_default().to_lowercase().into();
                }
                if names.get("listKind").is_none() {
                    names["listKind"] =
                        format!("{}List", obj["spec"]["names"]["kind"].as_str().unwrap_or_default()).into();
                }
                if !obj["status"].is_object() {
                    obj["status"] = json!({});
                }
                obj["status"]["acceptedNames"] = names;
                if obj["status"].get("conditions").is_none() {
                    let t = now();
                    obj["status"]["conditions"] = json!([
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t},
                    ]);
                }
                let mut stored: Vec<Value> = obj["status"]["storedVersions"].as_array().cloned().unwrap_or_default();
                for v in obj["spec"]["versions"].as_array().into_iter().flatten() {
                    if v["storage"].as_bool() == Some(true) && !stored.contains(&v["name"]) {
                        stored.push(v["name"].clone());
                    }
                }
                obj["status"]["storedVersions"] = stored.into();
            }
            _ if rt.custom => {
                let version = obj["apiVersion"].as_str().and_then(|a| a.rsplit_once('/')).map(|(_, v)| v.to_string());
                let schema = self.crd_for(&rt.key()).and_then(|crd| {
                    crd["spec"]["versions"]
                        .as_array()?
                        .iter()
                        .find(|v| v["name"].as_str() == version.as_deref())
                        .and_then(|v| v.pointer("/schema/openAPIV3Schema"))
                        .cloned()
                });
                if let (Some(schema), Some(map)) = (schema, obj.as_object_mut()) {
                    for (k, child) in map.iter_mut() {
                        if k == "metadata" || k == "apiVersion" || k == "kind" {
                            continue;
                        }
                        if let Some(s) = schema.pointer(&format!("/properties/{k}")) {
                            schema_defaults(child, s);
                        }
                    }
                    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                        for (k, s) in props {
                            if !map.contains_key(k)
                                && k != "status"
                                && let Some(d) = s.get("default")
                            {
                                map.insert(k.clone(), d.clone());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The CRD rules the API server enforces on the names.
    fn validate_crd(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").unwrap_or_default();
        let spec = &obj["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let plural = spec["names"]["plural"].as_str().unwrap_or_default();
        let mut causes: Vec<(&str, &str, String)> = Vec::new();
        if group.is_empty() {
            causes.push(("spec.group", "FieldValueRequired", "Required value".into()));
        }
        if plural.is_empty() {
            causes.push(("spec.names.plural", "FieldValueRequired", "Required value".into()));
        }
        if spec["names"]["kind"].as_str().unwrap_or_default().is_empty() {
            causes.push(("spec.names.kind", "FieldValueRequired", "Required value".into()));
        }
        if name != format!("{plural}.{group}") {
            causes.push((
                "metadata.name",
                "FieldValueInvalid",
                format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
            ));
        }
        let versions = spec["versions"].as_array().cloned().unwrap_or_default();
        if versions.is_empty() {
            causes.push((
                "spec.versions",
                "FieldValueRequired",
                "Required value: must have at least one version".into(),
            ));
        } else if versions.iter().filter(|v| v["storage"].as_bool() == Some(true)).count() != 1 {
            causes.push((
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version".into(),
            ));
        }
        if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
            causes.push((
                "spec.scope",
                "FieldValueNotSupported",
                "Unsupported value: supported values: \"Cluster\", \"Namespaced\"".into(),
            ));
        }
        if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(rt, name, &causes)) }
    }

    fn refresh_registry(&mut self) {
        let crds: Vec<Value> =
            self.objects.get(&crd_type().key()).map(|m| m.values().cloned().collect()).unwrap_or_default();
        self.registry.set_crds(crds.iter());
    }

    fn after_write(&mut self, rt: &ResourceType) {
        if rt.key() == crd_type().key() {
            self.refresh_registry();
        }
        self.gc();
    }

    /// POST. `managed` carries `managedFields` when the create comes from a server-side apply.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut body: Value,
        managed: Option<Value>,
    ) -> Result<Value, ApiError> {
        Self::check_type(rt, &mut body)?;
        Self::check_namespace(rt, &mut body, ns)?;
        let m = meta_mut(&mut body);
        let mut name = m.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let generate = m.get("generateName").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() && generate.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                &[("metadata.name", "FieldValueRequired", "Required value: name or generateName is required".into())],
            ));
        }
        if m.get("resourceVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        if name.is_empty() {
            name = format!("{generate}{}", self.generated_suffix());
        }
        if !valid_name(&name) {
            return Err(ApiError::invalid(
                rt,
                &name,
                &[(
                    "metadata.name",
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                )],
            ));
        }
        let scope_ns = Self::scope_ns(rt, ns);
        if rt.namespaced {
            let nst = namespace_type();
            let namespace = self.get(&nst, "", ns).map_err(|_| ApiError::not_found(&nst, ns))?;
            if is_deleting(&namespace) {
                return Err(ApiError::forbidden(
                    rt,
                    &name,
                    &format!("unable to create new content in namespace {ns} because it is being terminated"),
                ));
            }
        }
        if rt.custom && self.crd_for(&rt.key()).is_some_and(is_deleting) {
            return Err(ApiError::method_not_allowed(format!(
                "create not allowed while custom resource definition is terminating ({})",
                rt.resource_name()
            )));
        }
        if self.objects.get(&rt.key()).is_some_and(|o| o.contains_key(&(scope_ns.clone(), name.clone()))) {
            return Err(ApiError::already_exists(rt, &name));
        }
        if rt.key() == crd_type().key() {
            meta_mut(&mut body).insert("name".into(), name.clone().into());
            Self::validate_crd(rt, &body)?;
        }
        let uid = self.uid();
        let m = meta_mut(&mut body);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "managedFields",
        ] {
            m.remove(field);
        }
        m.insert("name".into(), name.clone().into());
        m.insert("uid".into(), uid.into());
        m.insert("creationTimestamp".into(), now().into());
        m.insert("generation".into(), 1.into());
        if let Some(managed) = managed {
            m.insert("managedFields".into(), managed);
        }
        if rt.status_subresource
            && let Some(o) = body.as_object_mut()
        {
            o.remove("status");
        }
        self.defaults(rt, &mut body, true);
        normalize(&mut body);
        let rv = self.next_rv();
        meta_mut(&mut body).insert("resourceVersion".into(), rv.to_string().into());
        self.objects.entry(rt.key()).or_default().insert((scope_ns.clone(), name), body.clone());
        self.record(rt.key(), scope_ns, ChangeType::Added, body.clone(), None);
        self.after_write(rt);
        Ok(body)
    }

    /// PUT on the object or its `/status`.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut body: Value,
        sub: Sub,
    ) -> Result<Value, ApiError> {
        Self::check_type(rt, &mut body)?;
        let body_name = meta_str(&body, "name").unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        Self::check_namespace(rt, &mut body, ns)?;
        let old = self.get(rt, ns, name)?;
        if rt.custom && meta_str(&body, "resourceVersion").is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                rt,
                name,
                &[(
                    "metadata.resourceVersion",
                    "FieldValueInvalid",
                    "Invalid value: 0x0: must be specified for an update".into(),
                )],
            ));
        }
        self.commit(rt, name, old, body, sub, None)
    }

    /// PATCH on the object or its `/status`. Returns the object and whether it was created (an
    /// apply of an absent object creates it).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        sub: Sub,
        opts: &PatchOpts,
    ) -> Result<(Value, bool), ApiError> {
        let old = self.get(rt, ns, name).ok();
        if patch_type == PatchType::Apply {
            let mut applied = patch::parse_body(body)?;
            let Some(manager) = opts.field_manager.as_deref().filter(|m| !m.is_empty()) else {
                return Err(ApiError::unprocessable(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            };
            if !applied.is_object() {
                return Err(ApiError::bad_request("an applied configuration must be an object"));
            }
            let applied_name = meta_str(&applied, "name").unwrap_or_default();
            if applied_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({applied_name}) does not match the name on the URL ({name})"
                )));
            }
            let mut probe = applied.clone();
            Self::check_type(rt, &mut probe)?;
            Self::check_namespace(rt, &mut applied, ns)?;
            let scope = match sub {
                Sub::Status => ApplyScope::Status,
                Sub::Main => ApplyScope::Main { status_subresource: rt.status_subresource },
            };
            let mut candidate =
                patch::server_side_apply(rt, name, old.as_ref(), &applied, manager, opts.force, scope, &now())?;
            let managed = meta_mut(&mut candidate).remove("managedFields").unwrap_or(Value::Array(vec![]));
            return match old {
                Some(old) => self.commit(rt, name, old, candidate, sub, Some(managed)).map(|o| (o, false)),
                None if sub == Sub::Status => Err(ApiError::not_found(rt, name)),
                None => self.create(rt, ns, candidate, Some(managed)).map(|o| (o, true)),
            };
        }
        let old = old.ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut candidate = old.clone();
        match patch_type {
            PatchType::Merge => patch::merge(&mut candidate, &patch::parse_body(body)?)?,
            PatchType::Strategic => patch::strategic(&mut candidate, &patch::parse_body(body)?)?,
            PatchType::Json => patch::json_patch(&mut candidate, body)?,
            PatchType::Apply => unreachable!("handled above"),
        }
        if meta_str(&candidate, "name") != Some(name) {
            return Err(ApiError::bad_request("a patch may not change metadata.name"));
        }
        self.commit(rt, name, old, candidate, sub, None).map(|o| (o, false))
    }

    /// The part of an object whose change bumps `metadata.generation`: everything but metadata
    /// (and but status when status is a subresource).
    fn generation_part(rt: &ResourceType, obj: &Value) -> Value {
        let mut part = obj.clone();
        if let Some(map) = part.as_object_mut() {
            map.remove("metadata");
            map.remove("apiVersion");
            map.remove("kind");
            if rt.status_subresource {
                map.remove("status");
            }
        }
        part
    }

    /// Turns a candidate into the stored object by the server's rules and stores it (or does
    /// nothing when nothing changed).
    fn commit(
        &mut self,
        rt: &ResourceType,
        name: &str,
        old: Value,
        candidate: Value,
        sub: Sub,
        managed: Option<Value>,
    ) -> Result<Value, ApiError> {
        let old_rv = meta_str(&old, "resourceVersion").unwrap_or_default().to_string();
        if let Some(given) = meta_str(&candidate, "resourceVersion").filter(|s| !s.is_empty())
            && given != old_rv
        {
            return Err(ApiError::conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let mut new = match sub {
            Sub::Main => {
                let mut n = candidate;
                if rt.status_subresource
                    && let Some(map) = n.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => map.insert("status".into(), s.clone()),
                        None => map.remove("status"),
                    };
                }
                n
            }
            Sub::Status => {
                let mut n = old.clone();
                if let Some(map) = n.as_object_mut() {
                    match candidate.get("status") {
                        Some(s) => map.insert("status".into(), s.clone()),
                        None => map.remove("status"),
                    };
                }
                n
            }
        };
        new["apiVersion"] = candidate_or(&new, &old, "apiVersion");
        new["kind"] = rt.kind.clone().into();
        {
            let old_meta = meta(&old).clone();
            let m = meta_mut(&mut new);
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
                "managedFields",
                "generateName",
            ] {
                match old_meta.get(field) {
                    Some(v) => m.insert(field.into(), v.clone()),
                    None => m.remove(field),
                };
            }
            if let Some(managed) = managed {
                m.insert("managedFields".into(), managed);
            }
        }
        if rt.key() == crd_type().key() {
            Self::validate_crd(rt, &new)?;
        }
        self.defaults(rt, &mut new, false);
        normalize(&mut new);
        let deleting = is_deleting(&old);
        if deleting {
            let before: BTreeSet<String> = finalizers(&old).into_iter().collect();
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    &[(
                        "metadata.finalizers",
                        "FieldValueForbidden",
                        "Forbidden: no new finalizers can be added if the object is being deleted".into(),
                    )],
                ));
            }
        }
        if Self::generation_part(rt, &old) != Self::generation_part(rt, &new) {
            let generation = meta(&old).get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            meta_mut(&mut new).insert("generation".into(), generation.into());
        }
        if new == old {
            return Ok(old);
        }
        let rv = self.next_rv();
        meta_mut(&mut new).insert("resourceVersion".into(), rv.to_string().into());
        let ns = meta_str(&new, "namespace").unwrap_or_default().to_string();
        let key = (ns.clone(), name.to_string());
        let gone = deleting && finalizers(&new).is_empty() && rt.key() != namespace_type().key();
        if gone {
            self.objects.get_mut(&rt.key()).map(|m| m.remove(&key));
            self.record(rt.key(), ns, ChangeType::Deleted, new.clone(), Some(old));
        } else {
            self.objects.entry(rt.key()).or_default().insert(key, new.clone());
            self.record(rt.key(), ns, ChangeType::Modified, new.clone(), Some(old));
        }
        self.after_write(rt);
        Ok(new)
    }

    /// DELETE of one object.
    pub fn delete(&mut self, rt: &ResourceType, ns: &str, name: &str, pre: &Preconditions) -> Result<Value, ApiError> {
        let old = self.get(rt, ns, name)?;
        if let Some(uid) = &pre.uid
            && meta_str(&old, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &pre.resource_version
            && meta_str(&old, "resourceVersion") != Some(rv.as_str())
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        let out = self.delete_object(&rt.key(), &Self::scope_ns(rt, ns), name);
        self.gc();
        Ok(out.expect("checked present"))
    }

    /// Deletes (or starts the graceful deletion of) one object; cascades for namespaces and CRDs.
    fn delete_object(&mut self, key: &TypeKey, ns: &str, name: &str) -> Option<Value> {
        let old = self.get_raw(key, ns, name)?;
        if is_deleting(&old) {
            return Some(old);
        }
        let is_namespace = *key == namespace_type().key();
        if !finalizers(&old).is_empty() || is_namespace {
            let mut new = old.clone();
            let rv = self.next_rv();
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), now().into());
            m.insert("deletionGracePeriodSeconds".into(), 0.into());
            m.insert("resourceVersion".into(), rv.to_string().into());
            if is_namespace {
                new["status"] = json!({"phase": "Terminating"});
            }
            self.objects.entry(key.clone()).or_default().insert((ns.to_string(), name.to_string()), new.clone());
            self.record(key.clone(), ns.to_string(), ChangeType::Modified, new.clone(), Some(old));
            if is_namespace {
                let contents: Vec<(TypeKey, String)> = self
                    .objects
                    .iter()
                    .flat_map(|(k, objs)| {
                        objs.keys().filter(|(ons, _)| ons == name).map(move |(_, n)| (k.clone(), n.clone()))
                    })
                    .collect();
                for (k, n) in contents {
                    self.delete_object(&k, name, &n);
                }
            } else if *key == crd_type().key() {
                let instances = Self::crd_instance_key(&new);
                let contents: Vec<ObjKey> =
                    self.objects.get(&instances).map(|m| m.keys().cloned().collect()).unwrap_or_default();
                for (ins, n) in contents {
                    self.delete_object(&instances, &ins, &n);
                }
            }
            return Some(new);
        }
        let mut gone = self.objects.get_mut(key)?.remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        meta_mut(&mut gone).insert("resourceVersion".into(), rv.to_string().into());
        self.record(key.clone(), ns.to_string(), ChangeType::Deleted, gone.clone(), Some(old));
        if *key == crd_type().key() {
            self.refresh_registry();
        }
        Some(gone)
    }

    /// DELETE of a collection: every selected object in scope.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        let targets = self.list(rt, ns, labels, fields);
        let mut out = Vec::new();
        for t in targets {
            let tns = meta_str(&t, "namespace").unwrap_or_default().to_string();
            let tname = meta_str(&t, "name").unwrap_or_default().to_string();
            if let Some(o) = self.delete_object(&rt.key(), &tns, &tname) {
                out.push(o);
            }
        }
        self.gc();
        out
    }

    fn crd_instance_key(crd: &Value) -> TypeKey {
        (
            crd["spec"]["group"].as_str().unwrap_or_default().to_string(),
            crd["spec"]["names"]["plural"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// The namespace and CRD controllers: a terminating namespace goes once it is empty (and its
    /// own finalizers are gone); a terminating CRD drops its cleanup finalizer once it has no
    /// instances, and then goes.
    fn gc(&mut self) {
        loop {
            let mut changed = false;
            let nsk = namespace_type().key();
            let terminating: Vec<String> = self
                .objects
                .get(&nsk)
                .map(|m| {
                    m.values()
                        .filter(|o| is_deleting(o) && finalizers(o).is_empty())
                        .map(|o| meta_str(o, "name").unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default();
            for ns in terminating {
                let empty = self.objects.iter().all(|(_, objs)| objs.keys().all(|(ons, _)| *ons != ns));
                if empty {
                    let old = self.get_raw(&nsk, "", &ns).expect("listed");
                    self.objects.get_mut(&nsk).map(|m| m.remove(&(String::new(), ns.clone())));
                    let mut gone = old.clone();
                    let rv = self.next_rv();
                    meta_mut(&mut gone).insert("resourceVersion".into(), rv.to_string().into());
                    self.record(nsk.clone(), String::new(), ChangeType::Deleted, gone, Some(old));
                    changed = true;
                }
            }
            let crdk = crd_type().key();
            let crds: Vec<Value> = self
                .objects
                .get(&crdk)
                .map(|m| {
                    m.values()
                        .filter(|o| is_deleting(o) && finalizers(o).iter().any(|f| f == CRD_CLEANUP_FINALIZER))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for crd in crds {
                if self.objects.get(&Self::crd_instance_key(&crd)).is_some_and(|m| !m.is_empty()) {
                    continue;
                }
                let name = meta_str(&crd, "name").unwrap_or_default().to_string();
                let mut new = crd.clone();
                let rest: Vec<Value> =
                    finalizers(&crd).into_iter().filter(|f| f != CRD_CLEANUP_FINALIZER).map(Value::from).collect();
                meta_mut(&mut new).insert("finalizers".into(), rest.into());
                normalize(&mut new);
                let rv = self.next_rv();
                meta_mut(&mut new).insert("resourceVersion".into(), rv.to_string().into());
                if finalizers(&new).is_empty() {
                    self.objects.get_mut(&crdk).map(|m| m.remove(&(String::new(), name)));
                    self.record(crdk.clone(), String::new(), ChangeType::Deleted, new, Some(crd));
                } else {
                    self.objects.entry(crdk.clone()).or_default().insert((String::new(), name), new.clone());
                    self.record(crdk.clone(), String::new(), ChangeType::Modified, new, Some(crd));
                }
                self.refresh_registry();
                changed = true;
            }
            if !changed {
                break;
            }
        }
    }
}

fn candidate_or(new: &Value, old: &Value, field: &str) -> Value {
    new.get(field).filter(|v| !v.is_null()).or_else(|| old.get(field)).cloned().unwrap_or(Value::Null)
}
