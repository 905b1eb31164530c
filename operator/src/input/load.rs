//! Reading files into typed, individually validated objects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_crd::validate::{quoted, shortened};
use berth_crd::{ContainerSet, DockerHost, Image, Validate};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{InputError, InputErrors};

/// Where an object came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.document == 0 {
            // Objects read from the Kubernetes API have no file position.
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{} (document {})", self.file.display(), self.document)
        }
    }
}

/// An object with its origin.
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub origin: Origin,
    pub object: T,
}

/// Everything the files declare, each object valid on its own.
#[derive(Clone, Default)]
pub struct Input {
    pub hosts: Vec<Located<DockerHost>>,
    pub sets: Vec<Located<ContainerSet>>,
    /// Images to build (`kind: Image`); sets run them with `template.imageFrom`.
    pub images: Vec<Located<Image>>,
    /// By (namespace, name).
    pub secrets: BTreeMap<(String, String), Located<Secret>>,
    pub config_maps: BTreeMap<(String, String), Located<ConfigMap>>,
}

/// By hand: a Secret's `Debug` prints its data. Secrets and ConfigMaps show by name.
impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("hosts", &self.hosts)
            .field("sets", &self.sets)
            .field("images", &self.images)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("config_maps", &self.config_maps.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Input {
    /// The input of one reconcile in the operator: objects read from the Kubernetes API.
    pub fn from_cluster(
        sets: Vec<ContainerSet>,
        hosts: Vec<DockerHost>,
        secrets: Vec<Secret>,
        config_maps: Vec<ConfigMap>,
    ) -> Input {
        let origin = || Origin { file: PathBuf::from("kubernetes"), document: 0 };
        let key =
            |m: &kube::api::ObjectMeta| (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default());
        Input {
            hosts: hosts.into_iter().map(|object| Located { origin: origin(), object }).collect(),
            sets: sets.into_iter().map(|object| Located { origin: origin(), object }).collect(),
            images: Vec::new(),
            secrets: secrets.into_iter().map(|o| (key(&o.metadata), Located { origin: origin(), object: o })).collect(),
            config_maps: config_maps
                .into_iter()
                .map(|o| (key(&o.metadata), Located { origin: origin(), object: o }))
                .collect(),
        }
    }
}

/// Largest file berth reads: bigger is surely not a manifest, and bounds memory.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The YAML parser's limits. A manifest is shallow, has few anchors and a few hundred
/// documents at most; anything far beyond is an accident or an attack (a YAML bomb), and is
/// refused with an error before it costs memory or time. serde-saphyr's defaults are looser
/// (1,000,000 replayed alias events, 50,000 aliases); these are explicit so that a dependency
/// update cannot loosen them.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            // Nesting: a ContainerSet is 6 levels deep; 64 leaves room and bounds recursion.
            max_depth: 64,
            flow_nesting_limit: 64,
            // Documents per file: a "huge number of documents" is refused quickly.
            max_documents: 1_024,
            // Parser events and nodes in the whole file, aliases replayed included.
            max_events: 1_000_000,
            max_nodes: 250_000,
            // Anchors and aliases: billion laughs and friends. A manifest that anchors an env list
            // and reuses it a few times replays hundreds of events, not tens of thousands.
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_recorded_anchor_events: 20_000,
            max_recorded_anchor_bytes: 16 * 1024 * 1024,
            // Scalar text, replays included: no more than the largest file.
            max_total_scalar_bytes: MAX_FILE_BYTES as usize,
            max_merge_keys: 1_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 20_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
        // A key given twice (`image:` two times) is a mistake, never "the last one wins".
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
    }
}

/// Read files and folders (`.yaml` / `.yml` / `.json` in a folder, recursively, in name
/// order). All errors are collected before returning.
pub fn load(paths: &[PathBuf]) -> Result<Input, InputErrors> {
    let (input, errors) = load_partial(paths);
    if errors.is_empty() { Ok(input) } else { Err(InputErrors(errors)) }
}

/// [`load`], returning what could be read along with every error, so that the checks across
/// objects can still run and report in the same go.
pub fn load_partial(paths: &[PathBuf]) -> (Input, Vec<InputError>) {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files, &mut errors);
    }
    let first = paths.first().map(PathBuf::as_path).unwrap_or(Path::new("."));
    if files.is_empty() && errors.is_empty() {
        errors.push(err_file(first, "no YAML files found"));
    }
    let mut input = Input::default();
    for f in &files {
        match std::fs::read(f) {
            Ok(bytes) => add_file(f, &bytes, &mut input, &mut errors),
            Err(e) => errors.push(err_file(f, format!("cannot read: {e}"))),
        }
    }
    if errors.is_empty() && input.is_empty() {
        // Applying nothing would still reach every host (and `--prune` would empty them).
        errors.push(err_file(first, "declares no objects (DockerHost, ContainerSet, Secret, ConfigMap)"));
    }
    (input, errors)
}

/// One file's content, as [`load_partial`] reads it, without touching the filesystem: the
/// entry point of the fuzz target (`fuzz/`), and of anything that holds YAML in memory.
/// `file` only names the origin in messages.
pub fn load_bytes(file: &Path, bytes: &[u8]) -> (Input, Vec<InputError>) {
    let mut input = Input::default();
    let mut errors = Vec::new();
    if bytes.len() as u64 > MAX_FILE_BYTES {
        errors.push(err_file(file, format!("file is larger than {MAX_FILE_BYTES} bytes")));
    } else {
        add_file(file, bytes, &mut input, &mut errors);
    }
    if errors.is_empty() && input.is_empty() {
        errors.push(err_file(file, "declares no objects (DockerHost, ContainerSet, Secret, ConfigMap)"));
    }
    (input, errors)
}

impl Input {
    /// Whether no object was read.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.sets.is_empty() && self.secrets.is_empty() && self.config_maps.is_empty()
    }
}

fn err_file(file: &Path, message: impl Into<String>) -> InputError {
    InputError { origin: file.display().to_string(), object: None, field: None, message: message.into() }
}

fn collect_files(p: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<InputError>) {
    match std::fs::metadata(p) {
        Err(e) => errors.push(err_file(p, format!("cannot read: {e}"))),
        Ok(m) if m.is_dir() => {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => return errors.push(err_file(p, format!("cannot list folder: {e}"))),
            };
            entries.sort();
            for e in entries {
                let is_yaml =
                    e.extension().and_then(|x| x.to_str()).is_some_and(|x| matches!(x, "yaml" | "yml" | "json"));
                let hidden = e.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
                if hidden {
                    continue;
                }
                if e.is_dir() || is_yaml {
                    collect_files(&e, files, errors);
                }
            }
        }
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            errors.push(err_file(p, format!("file is larger than {MAX_FILE_BYTES} bytes")))
        }
        Ok(_) => files.push(p.to_path_buf()),
    }
}

/// Parse one file's bytes and add its objects (each validated on its own) to `input`.
fn add_file(file: &Path, bytes: &[u8], input: &mut Input, errors: &mut Vec<InputError>) {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
            return errors.push(err_file(
                file,
                format!("is not UTF-8 text: invalid byte 0x{:02x} at offset {at} (line {line})", bytes[at]),
            ));
        }
    };
    let docs: Vec<Value> = match serde_saphyr::from_multiple_with_options(text, yaml_options()) {
        Ok(d) => d,
        Err(e) => {
            // The parser's advice is for programmers: the policy is berth's, not the user's.
            let message = e.to_string().replace(", set DuplicateKeyPolicy in Options if acceptable", "");
            return errors.push(err_file(file, format!("not valid YAML: {message}")));
        }
    };
    for (i, doc) in docs.into_iter().enumerate() {
        let origin = Origin { file: file.to_path_buf(), document: i + 1 };
        if doc.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        load_document(origin, doc, input, errors);
    }
}

fn load_document(origin: Origin, doc: Value, input: &mut Input, errors: &mut Vec<InputError>) {
    let here = |object: Option<String>, field: Option<&str>, message: String| InputError {
        origin: origin.to_string(),
        object,
        field: field.map(str::to_string),
        message,
    };
    let Some(map) = doc.as_object() else {
        return errors.push(here(
            None,
            None,
            format!("a document must be a mapping with apiVersion and kind, got {}", json_type(&doc)),
        ));
    };
    for field in ["apiVersion", "kind"] {
        if let Some(v) = map.get(field).filter(|v| !v.is_string()) {
            return errors.push(here(None, Some(field), format!("must be a string, got {}", json_type(v))));
        }
    }
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let meta = map.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("<unnamed>");
    let namespace = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default");
    let object = format!("{} {}/{}", shortened(&kind), shortened(namespace), shortened(name));

    let expected = match kind.as_str() {
        "DockerHost" | "ContainerSet" | "Image" => berth_crd::API_VERSION,
        "Secret" | "ConfigMap" => "v1",
        "" => return errors.push(here(None, Some("kind"), "is required".into())),
        other => {
            return errors.push(here(
                Some(object),
                Some("kind"),
                format!(
                    "{} is not something berth reads (DockerHost, ContainerSet, Image, Secret, ConfigMap)",
                    quoted(other)
                ),
            ));
        }
    };
    if api_version != expected {
        return errors.push(here(
            Some(object),
            Some("apiVersion"),
            format!("{} should be {expected:?}", quoted(&api_version)),
        ));
    }

    macro_rules! typed {
        ($t:ty) => {
            match parse_strict::<$t>(doc) {
                Ok(mut o) => {
                    if o.metadata.namespace.is_none() {
                        o.metadata.namespace = Some("default".into());
                    }
                    o
                }
                Err(problems) => {
                    for (field, message) in problems {
                        errors.push(here(Some(object.clone()), Some(&field), message));
                    }
                    return;
                }
            }
        };
    }

    match kind.as_str() {
        "DockerHost" => {
            let o: DockerHost = typed!(DockerHost);
            push_validation(&o.validate(), &origin, &object, errors);
            if input.hosts.iter().any(|h| {
                h.object.metadata.name == o.metadata.name && h.object.metadata.namespace == o.metadata.namespace
            }) {
                errors.push(here(Some(object), Some("metadata.name"), "is declared twice".into()));
                return;
            }
            input.hosts.push(Located { origin, object: o });
        }
        "ContainerSet" => {
            let o: ContainerSet = typed!(ContainerSet);
            push_validation(&o.validate(), &origin, &object, errors);
            if input.sets.iter().any(|s| {
                s.object.metadata.name == o.metadata.name && s.object.metadata.namespace == o.metadata.namespace
            }) {
                errors.push(here(Some(object), Some("metadata.name"), "is declared twice".into()));
                return;
            }
            input.sets.push(Located { origin, object: o });
        }
        "Image" => {
            let o: Image = typed!(Image);
            push_validation(&o.validate(), &origin, &object, errors);
            if input.images.iter().any(|i| {
                i.object.metadata.name == o.metadata.name && i.object.metadata.namespace == o.metadata.namespace
            }) {
                errors.push(here(Some(object), Some("metadata.name"), "is declared twice".into()));
                return;
            }
            input.images.push(Located { origin, object: o });
        }
        "Secret" => {
            let o: Secret = typed!(Secret);
            let key = (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default());
            if input.secrets.contains_key(&key) {
                return errors.push(here(Some(object), Some("metadata.name"), "is declared twice".into()));
            }
            input.secrets.insert(key, Located { origin, object: o });
        }
        _ => {
            let o: ConfigMap = typed!(ConfigMap);
            let key = (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default());
            if input.config_maps.contains_key(&key) {
                return errors.push(here(Some(object), Some("metadata.name"), "is declared twice".into()));
            }
            input.config_maps.insert(key, Located { origin, object: o });
        }
    }
}

/// What a JSON value is, for a message.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

fn push_validation(problems: &[berth_crd::FieldError], origin: &Origin, object: &str, errors: &mut Vec<InputError>) {
    for p in problems {
        errors.push(InputError {
            origin: origin.to_string(),
            object: Some(object.to_string()),
            field: Some(p.path.clone()),
            message: p.message.clone(),
        });
    }
}

/// Deserialize, reporting the field path of a type error and every unknown field (a typo
/// such as `replicaPerHost` must not be silently ignored).
fn parse_strict<T: DeserializeOwned>(doc: Value) -> Result<T, Vec<(String, String)>> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = {
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
        let ignored = serde_ignored::Deserializer::new(doc, &mut record);
        serde_path_to_error::deserialize(ignored)
    };
    match result {
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." { "(document)".to_string() } else { path };
            Err(vec![(field, e.into_inner().to_string())])
        }
        Ok(v) => {
            // `apiVersion` and `kind` were checked already; `status` is berth's to write.
            let unknown: Vec<(String, String)> = unknown
                .into_iter()
                .filter(|u| !matches!(u.as_str(), "apiVersion" | "kind" | "status") && !u.starts_with("status."))
                .map(|u| (u, "unknown field (check its spelling)".to_string()))
                .collect();
            if unknown.is_empty() { Ok(v) } else { Err(unknown) }
        }
    }
}

/// `spec.template.ports[0].hostport`, as every other message writes a field path
/// (serde_ignored's `Display` gives `spec.template.ports.0.hostport` and `healthcheck.?.x`).
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => field_path(parent),
    }
}
