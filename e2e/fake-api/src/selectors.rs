//! `labelSelector` and `fieldSelector` query parameters: parsing and matching.
//!
//! Exists because controllers narrow lists and watches with selectors (kube-runtime's
//! `watcher::Config::labels/fields`, `Api::watch_object` = `fieldSelector=metadata.name=…`), and a
//! fake that ignored them would hand a controller objects the real server never would. The
//! grammar is the API server's: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
//! comma-separated (AND). A malformed selector is a 400, as on the real server.

use serde_json::Value;

use crate::status::ApiError;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

fn valid_key(key: &str) -> bool {
    // [prefix/]name; name ≤ 63 of [A-Za-z0-9._-] starting and ending alphanumeric; prefix a DNS subdomain.
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    name_ok && prefix_ok
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits at commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values, got {rest:?}"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if values.is_empty() {
        return Err("a set needs at least one value".into());
    }
    for v in &values {
        if !valid_value(v) {
            return Err(format!("invalid label value: {v:?}"));
        }
    }
    Ok(values)
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    let term = term.trim();
    if term.is_empty() {
        return Err("empty requirement".into());
    }
    let checked = |key: &str, op: Op| -> Result<Requirement, String> {
        let key = key.trim();
        if !valid_key(key) {
            return Err(format!("invalid label key {key:?}"));
        }
        if let Op::Eq(v) | Op::NotEq(v) = &op
            && !valid_value(v)
        {
            return Err(format!("invalid label value: {v:?}"));
        }
        Ok(Requirement { key: key.to_string(), op })
    };
    if let Some(key) = term.strip_prefix('!') {
        if key.contains(['=', '(', ' ']) {
            return Err(format!("unable to parse requirement {term:?}"));
        }
        return checked(key, Op::NotExists);
    }
    if let Some((k, v)) = term.split_once("!=") {
        return checked(k, Op::NotEq(v.trim().to_string()));
    }
    if let Some((k, v)) = term.split_once("==") {
        return checked(k, Op::Eq(v.trim().to_string()));
    }
    if let Some((k, v)) = term.split_once('=') {
        return checked(k, Op::Eq(v.trim().to_string()));
    }
    if let Some(idx) = term.find(char::is_whitespace) {
        let key = &term[..idx];
        let rest = term[idx..].trim_start();
        if let Some(set) = rest.strip_prefix("notin") {
            return checked(key, Op::NotIn(parse_set(set)?));
        }
        if let Some(set) = rest.strip_prefix("in") {
            return checked(key, Op::In(parse_set(set)?));
        }
        return Err(format!("unable to parse requirement {term:?}: unknown operator"));
    }
    checked(term, Op::Exists)
}

impl LabelSelector {
    /// Parses the `labelSelector` query value.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let reqs = split_top_level(s)
            .and_then(|terms| terms.into_iter().map(parse_requirement).collect::<Result<Vec<_>, _>>())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        Ok(LabelSelector { reqs })
    }

    /// Whether an object (its `metadata.labels`) is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match &r.op {
            Op::Eq(v) => get(&r.key) == Some(v.as_str()),
            Op::NotEq(v) => get(&r.key) != Some(v.as_str()),
            Op::In(vs) => get(&r.key).is_some_and(|x| vs.iter().any(|v| v == x)),
            Op::NotIn(vs) => get(&r.key).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Op::Exists => get(&r.key).is_some(),
            Op::NotExists => get(&r.key).is_none(),
        })
    }
}

/// A parsed field selector over `metadata.name` / `metadata.namespace` (the fields every
/// resource supports; other fields are refused with 400, as the API server refuses unknown
/// field labels).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>, // (field pointer, equal?, value)
}

impl FieldSelector {
    /// Parses the `fieldSelector` query value.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        for term in s.split(',') {
            let term = term.trim();
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{s}'; can't understand '{term}'")));
            };
            let pointer = match field.trim() {
                "metadata.name" => "/metadata/name",
                "metadata.namespace" => "/metadata/namespace",
                other => return Err(ApiError::bad_request(format!("field label not supported: {other}"))),
            };
            reqs.push((pointer.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    /// Whether an object is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(pointer, eq, value)| {
            let actual = obj.pointer(pointer).and_then(Value::as_str).unwrap_or("");
            (actual == value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_grammar() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("env!=prod"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("env notin (prod)"));
        assert!(m("!env"));
        assert!(!m("!app"));
        assert!(m("berth.dev/x notin (a), app"));
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("app=(").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_grammar() {
        let o = obj(json!({}));
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("metadata.name==a,metadata.namespace=ns"));
        assert!(!m("metadata.name!=a"));
        assert_eq!(FieldSelector::parse("spec.x=1").unwrap_err().code, 400);
    }
}
