//! Which fields differ between two container specs, in words `plan` can print.
//!
//! The diff itself is RFC 6902 (`json-patch`) over the canonical JSON; this module only turns
//! JSON pointers back into field paths a person recognises (`env.GREETING`, `ports[0].hostPort`).

use serde::Serialize;
use serde_json::Value;

use super::model::ContainerSpec;

/// One changed field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// `env.GREETING`, `image`, `ports[0].hostPort`.
    pub field: String,
    /// The old value as JSON text, absent when the field was added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The new value as JSON text, absent when the field was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl std::fmt::Display for FieldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.from, &self.to) {
            (Some(a), Some(b)) => write!(f, "{}: {a} → {b}", self.field),
            (None, Some(b)) => write!(f, "{}: added {b}", self.field),
            (Some(a), None) => write!(f, "{}: removed (was {a})", self.field),
            (None, None) => write!(f, "{}", self.field),
        }
    }
}

/// The fields that differ, in a stable order.
pub fn diff_specs(old: &ContainerSpec, new: &ContainerSpec) -> Vec<FieldChange> {
    let a = serde_json::to_value(old).unwrap_or(Value::Null);
    let b = serde_json::to_value(new).unwrap_or(Value::Null);
    let patch = json_patch::diff(&a, &b);
    let mut out: Vec<FieldChange> = patch
        .0
        .iter()
        .map(|op| {
            use json_patch::PatchOperation::*;
            let (path, from, to) = match op {
                Add(o) => (o.path.to_string(), None, Some(short(&o.value))),
                Remove(o) => (o.path.to_string(), a.pointer(o.path.as_str()).map(short), None),
                Replace(o) => (o.path.to_string(), a.pointer(o.path.as_str()).map(short), Some(short(&o.value))),
                Move(o) => (o.path.to_string(), None, None),
                Copy(o) => (o.path.to_string(), None, None),
                Test(o) => (o.path.to_string(), None, None),
            };
            // A Secret's value is shown as its digest nowhere: `<secret>` says it changed.
            let (from, to) = if is_secret_value(&path) {
                (from.map(|_| SECRET.to_string()), to.map(|_| SECRET.to_string()))
            } else {
                (from, to)
            };
            FieldChange { field: field_path(&path, &a, &b), from, to }
        })
        .collect();
    out.sort_by(|x, y| x.field.cmp(&y.field));
    out.dedup();
    out
}

/// How a value from a Secret reads in a diff.
const SECRET: &str = "<secret>";

/// Whether a JSON pointer lies inside an env value that came from a Secret
/// (`/env/TOKEN/secret/value`).
fn is_secret_value(pointer: &str) -> bool {
    pointer.starts_with("/env/") && pointer.split('/').nth(3) == Some("secret")
}

/// `v` with every env value from a Secret (`{"secret": {...}}`) replaced by `"<secret>"`.
fn without_secrets(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("secret") => Value::String(SECRET.into()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), without_secrets(v))).collect()),
        Value::Array(xs) => Value::Array(xs.iter().map(without_secrets).collect()),
        other => other.clone(),
    }
}

/// JSON text of a value, cut short so one long command line does not flood the plan.
fn short(v: &Value) -> String {
    let s = match v {
        // Env values are `{"plain": "x"}` or `{"secret": {...}}`: show the inner value.
        Value::Object(m) if m.len() == 1 && m.contains_key("plain") => m["plain"].to_string(),
        Value::Object(m) if m.len() == 1 && m.contains_key("secret") => SECRET.to_string(),
        // A whole env map (or more) added or removed: its secrets read `<secret>` too.
        other => without_secrets(other).to_string(),
    };
    if s.chars().count() > 80 { format!("{}…", s.chars().take(79).collect::<String>()) } else { s }
}

/// `/ports/0/hostPort` → `ports[0].hostPort`; `/env/GREETING/plain` → `env.GREETING`.
fn field_path(pointer: &str, a: &Value, b: &Value) -> String {
    if is_secret_value(pointer) {
        // `/env/TOKEN/secret/value`: how a secret is encoded is no field a user wrote.
        return format!("env.{}", pointer.split('/').nth(2).unwrap_or_default().replace("~1", "/").replace("~0", "~"));
    }
    let mut out = String::new();
    let mut cur_a = Some(a);
    let mut cur_b = Some(b);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let is_array = cur_a.is_some_and(Value::is_array) || cur_b.is_some_and(Value::is_array);
        if is_array {
            out.push_str(&format!("[{seg}]"));
        } else if matches!(seg.as_str(), "plain" | "secret") && out.starts_with("env.") {
            // The env value's variant is an encoding detail, not a field a user wrote.
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
        cur_a = cur_a.and_then(|v| step(v, &seg));
        cur_b = cur_b.and_then(|v| step(v, &seg));
    }
    out
}

fn step<'a>(v: &'a Value, seg: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(seg),
        Value::Array(xs) => seg.parse::<usize>().ok().and_then(|i| xs.get(i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::{EnvValue, PortSpec};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: "example/echo:latest".into(),
            restart_policy: "unless-stopped".into(),
            ..Default::default()
        }
    }

    #[test]
    fn env_change_names_the_variable() {
        let mut a = spec();
        a.env.insert("GREETING".into(), EnvValue::Plain("hi".into()));
        let mut b = a.clone();
        b.env.insert("GREETING".into(), EnvValue::Plain("hello".into()));
        let d = diff_specs(&a, &b);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].to_string(), "env.GREETING: \"hi\" → \"hello\"");
    }

    #[test]
    fn port_change_is_indexed() {
        let mut a = spec();
        a.ports.push(PortSpec {
            container_port: 8080,
            protocol: "tcp".into(),
            host_port: Some(9000),
            host_ip: String::new(),
        });
        let mut b = a.clone();
        b.ports[0].host_port = Some(9001);
        let d = diff_specs(&a, &b);
        assert_eq!(d[0].field, "ports[0].hostPort");
        assert_eq!(d[0].from.as_deref(), Some("9000"));
    }

    #[test]
    fn secret_values_read_as_secret_in_both_directions() {
        use crate::engine::model::SecretString;
        let with = |v: EnvValue| {
            let mut s = spec();
            s.env.insert("TOKEN".into(), v);
            s
        };
        let one = with(EnvValue::Secret { value: SecretString::new("hunter2") });
        let two = with(EnvValue::Secret { value: SecretString::new("hunter3") });
        let plain = with(EnvValue::Plain("open".into()));
        for (a, b, text) in [
            (&one, &two, &["env.TOKEN: <secret> → <secret>"][..]),
            (&plain, &one, &["env.TOKEN: added <secret>", "env.TOKEN: removed (was \"open\")"]),
            (&one, &plain, &["env.TOKEN: added \"open\"", "env.TOKEN: removed (was <secret>)"]),
            (&spec(), &one, &["env: added {\"TOKEN\":\"<secret>\"}"]),
        ] {
            let d = diff_specs(a, b);
            assert_eq!(d.iter().map(ToString::to_string).collect::<Vec<_>>(), text);
            let json = serde_json::to_string(&d).unwrap();
            assert!(!json.contains("sha256") && !json.contains("hunter"), "{json}");
        }
    }

    #[test]
    fn application_fields_are_named_as_a_person_wrote_them() {
        use crate::engine::model::{LogSpec, UlimitSpec};
        let mut a = spec();
        a.ulimits.insert("nofile".into(), UlimitSpec { soft: 1024, hard: 1024 });
        a.sysctls.insert("net.core.somaxconn".into(), "128".into());
        a.logging = Some(LogSpec { driver: "json-file".into(), options: [("max-size".into(), "1m".into())].into() });
        let mut b = a.clone();
        b.ulimits.get_mut("nofile").unwrap().soft = 2048;
        b.sysctls.insert("net.core.somaxconn".into(), "1024".into());
        b.logging.as_mut().unwrap().options.insert("max-size".into(), "10m".into());
        b.shm_size_bytes = Some(1 << 30);
        b.init = true;
        b.security_opt = vec!["no-new-privileges".into()];
        let d: Vec<String> = diff_specs(&a, &b).iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
            [
                "init: added true",
                "logging.options.max-size: \"1m\" → \"10m\"",
                "securityOpt: added [\"no-new-privileges\"]",
                "shmSizeBytes: added 1073741824",
                "sysctls.net.core.somaxconn: \"128\" → \"1024\"",
                "ulimits.nofile.soft: 1024 → 2048",
            ]
        );
    }

    #[test]
    fn added_and_removed_fields() {
        let a = spec();
        let mut b = spec();
        b.user = Some("1000".into());
        assert_eq!(diff_specs(&a, &b)[0].to_string(), "user: added \"1000\"");
        assert_eq!(diff_specs(&b, &a)[0].to_string(), "user: removed (was \"1000\")");
        assert!(diff_specs(&a, &a).is_empty());
    }
}
