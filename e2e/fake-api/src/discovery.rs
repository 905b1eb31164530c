//! Which resources the server serves, and the discovery documents that describe them.
//!
//! Exists because the fake is generic: every request path is resolved to a [`ResourceType`]
//! (group, version, plural → kind, scope, status subresource), and that table is exactly what
//! discovery publishes. kube-rs' `Discovery` (legacy `/api`, `/apis`, `/apis/{g}/{v}` and the
//! aggregated v2 form) and kubectl-style clients read it to learn scope, verbs, short names and
//! subresources. Built-in types are fixed; a custom resource becomes served when its
//! CustomResourceDefinition is stored, and stops being served when the CRD is gone.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One served resource at one version.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    /// API group; `""` for core.
    pub group: String,
    /// The version this entry is served at.
    pub version: String,
    /// Every served version of this group/plural (objects are stored once, at any of them).
    pub versions: Vec<String>,
    /// Plural resource name (the path segment).
    pub plural: String,
    /// Singular resource name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced (true) or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (then the main resource ignores `status`).
    pub status_subresource: bool,
    /// Defined by a CustomResourceDefinition (rather than built in).
    pub custom: bool,
}

/// The verbs every served resource supports.
pub const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
/// The verbs of the `status` subresource.
pub const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

impl ResourceType {
    fn builtin(group: &str, plural: &str, kind: &str, namespaced: bool, short: &[&str], status: bool) -> Self {
        ResourceType {
            group: group.into(),
            version: "v1".into(),
            versions: vec!["v1".into()],
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: vec![],
            status_subresource: status,
            custom: false,
        }
    }

    /// `apiVersion` as written in objects of this entry's version.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Storage key: objects are stored per group and plural, whatever version they are served at.
    pub fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    /// `secrets` or `containersets.berth.dev`, as in error messages.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// Whether an apiVersion names this group at one of its served versions.
    pub fn accepts_api_version(&self, api_version: &str) -> bool {
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        group == self.group && self.versions.iter().any(|v| v == version)
    }
}

/// The built-in types: what berth's operator and its libraries touch.
pub fn builtins() -> Vec<ResourceType> {
    vec![
        ResourceType::builtin("", "namespaces", "Namespace", false, &["ns"], true),
        ResourceType::builtin("", "secrets", "Secret", true, &[], false),
        ResourceType::builtin("", "configmaps", "ConfigMap", true, &["cm"], false),
        ResourceType::builtin("", "events", "Event", true, &["ev"], false),
        ResourceType::builtin("events.k8s.io", "events", "Event", true, &["ev"], false),
        ResourceType::builtin("coordination.k8s.io", "leases", "Lease", true, &[], false),
        ResourceType::builtin("apps", "controllerrevisions", "ControllerRevision", true, &[], false),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
        ),
    ]
}

/// The CRD type itself.
pub fn crd_type() -> ResourceType {
    builtins().into_iter().find(|t| t.plural == "customresourcedefinitions").expect("built in")
}

/// The Namespace type.
pub fn namespace_type() -> ResourceType {
    builtins().into_iter().find(|t| t.plural == "namespaces").expect("built in")
}

/// The served types a CustomResourceDefinition defines: one per served version.
pub fn types_from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let served: Vec<&Value> = spec["versions"]
        .as_array()
        .map(|vs| vs.iter().filter(|v| v["served"].as_bool().unwrap_or(false)).collect())
        .unwrap_or_default();
    let versions: Vec<String> = served.iter().map(|v| str_of(&v["name"])).collect();
    let kind = str_of(&names["kind"]);
    served
        .iter()
        .map(|v| ResourceType {
            group: str_of(&spec["group"]),
            version: str_of(&v["name"]),
            versions: versions.clone(),
            plural: str_of(&names["plural"]),
            singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.clone(),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: v.pointer("/subresources/status").is_some(),
            custom: true,
        })
        .collect()
}

/// The table of served types.
#[derive(Clone, Debug)]
pub struct Registry {
    builtin: Vec<ResourceType>,
    custom: Vec<ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { builtin: builtins(), custom: vec![] }
    }
}

impl Registry {
    /// Every served type, built-in first.
    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.builtin.iter().chain(self.custom.iter())
    }

    /// The type served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.all().find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// Any served version of a stored group/plural.
    pub fn lookup_key(&self, key: &(String, String)) -> Option<&ResourceType> {
        self.all().find(|t| t.group == key.0 && t.plural == key.1)
    }

    /// Replaces the custom types with those the given CRD objects define.
    pub fn set_crds<'a>(&mut self, crds: impl Iterator<Item = &'a Value>) {
        self.custom = crds.flat_map(types_from_crd).collect();
    }

    /// Groups in discovery order (core first, then built-in groups, then custom ones), each with
    /// its versions in preference order.
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.all() {
            let entry = match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some(e) => e,
                None => {
                    out.push((t.group.clone(), vec![]));
                    out.last_mut().expect("just pushed")
                }
            };
            for v in &t.versions {
                if !entry.1.contains(v) {
                    entry.1.push(v.clone());
                }
            }
        }
        out
    }

    /// `GET /api`.
    pub fn core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    fn group_doc(group: &str, versions: &[String]) -> Value {
        let gvs: Vec<Value> =
            versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
        json!({"name": group, "versions": gvs, "preferredVersion": gvs.first().cloned().unwrap_or(Value::Null)})
    }

    /// `GET /apis`.
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> =
            self.groups().into_iter().filter(|(g, _)| !g.is_empty()).map(|(g, vs)| Self::group_doc(&g, &vs)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/{group}`.
    pub fn group(&self, group: &str) -> Option<Value> {
        let (g, vs) = self.groups().into_iter().find(|(g, _)| g == group && !g.is_empty())?;
        let mut doc = Self::group_doc(&g, &vs);
        doc["kind"] = "APIGroup".into();
        doc["apiVersion"] = "v1".into();
        Some(doc)
    }

    /// `GET /api/v1` or `GET /apis/{group}/{version}`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let types: Vec<&ResourceType> = self.all().filter(|t| t.group == group && t.version == version).collect();
        if types.is_empty() {
            return None;
        }
        let mut resources = Vec::new();
        for t in types {
            resources.push(json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": VERBS,
                "shortNames": t.short_names,
                "categories": t.categories,
            }));
            if t.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", t.plural),
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": STATUS_VERBS,
                }));
            }
        }
        let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`) for `/api`
    /// (`core == true`) or `/apis`.
    pub fn aggregated(&self, core: bool) -> Value {
        let mut items = Vec::new();
        for (group, versions) in self.groups().into_iter().filter(|(g, _)| g.is_empty() == core) {
            let mut vdocs = Vec::new();
            for version in &versions {
                let resources: Vec<Value> = self
                    .all()
                    .filter(|t| t.group == group && &t.version == version)
                    .map(|t| {
                        let kind = json!({"group": group, "version": version, "kind": t.kind});
                        let subresources: Vec<Value> = if t.status_subresource {
                            vec![json!({"subresource": "status", "responseKind": kind, "verbs": STATUS_VERBS})]
                        } else {
                            vec![]
                        };
                        json!({
                            "resource": t.plural,
                            "responseKind": kind,
                            "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": t.singular,
                            "verbs": VERBS,
                            "shortNames": t.short_names,
                            "categories": t.categories,
                            "subresources": subresources,
                        })
                    })
                    .collect();
                vdocs.push(json!({"version": version, "resources": resources, "freshness": "Current"}));
            }
            let mut meta = BTreeMap::new();
            if !group.is_empty() {
                meta.insert("name", group.clone());
            }
            items.push(json!({"metadata": meta, "versions": vdocs}));
        }
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }
}
