//! An offline stand-in for the part of a Kubernetes API server that admits custom resources:
//! it reads the generated CRDs (`berth_crd::crds()`) and checks objects the way the server
//! does at create time — defaulting, then the structural schema (types, ranges, patterns,
//! enums, required fields, sizes), then the CEL rules of `x-kubernetes-validations` — and it
//! checks the CRD itself the way the server does when the CRD is applied (rules compile,
//! `fieldPath`s exist, defaults are valid, the estimated CEL cost is within budget).
//!
//! - The structural schema is checked by the `jsonschema` crate (draft 4, which OpenAPI v3's
//!   schema object follows), on a copy of the schema translated from OpenAPI: `nullable` becomes
//!   a `null` type, `x-kubernetes-int-or-string` an integer-or-string type, other
//!   `x-kubernetes-*` keys are dropped, and `format` is not checked (the server does not check
//!   integer formats either).
//! - Defaulting follows the server's structural defaulting: a `null` where the schema does not
//!   say `nullable` is dropped, then missing properties get their `default`, recursively,
//!   including inside defaults just inserted and inside list items and map values.
//! - CEL rules are evaluated by `kube-cel` (the evaluator behind kube-core's `cel` feature),
//!   on the defaulted object.
//! - The cost estimate follows cel-go's estimator in outline (comprehensions multiply by their
//!   list's `maxItems`, string operations cost a tenth of their `maxLength`, an unbounded size is
//!   what fits in a 3 MiB request) and the server's limits: 10,000,000 per rule, and
//!   100,000,000 for all rules of a CRD, each rule weighted by how often its node can occur.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use kube_cel::cel::Program;
use kube_cel::cel::common::ast::{Expr, IdedExpr, LiteralValue};
use kube_cel::{ErrorKind, Validator};
use serde_json::{Map, Value, json};

/// One reason the API server would refuse an object.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The field path as the server reports it (`spec.template.ports[0].containerPort`);
    /// empty for a rule on the root.
    pub path: String,
    pub message: String,
    /// `schema` or `cel`.
    pub by: &'static str,
    /// A CEL rule that could not be evaluated because it reads a value the schema refused.
    pub follows_schema_error: bool,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.by, self.path, self.message)
    }
}

struct Kind {
    /// `openAPIV3Schema`, as in the CRD.
    schema: Value,
    structural: jsonschema::Validator,
}

/// The admission checks of the API server for berth's CRDs.
pub struct ApiServer {
    kinds: BTreeMap<String, Kind>,
    cel: Validator,
}

impl ApiServer {
    pub fn new() -> Self {
        let mut kinds = BTreeMap::new();
        for crd in berth_crd::crds() {
            let version = &crd.spec.versions[0];
            let schema =
                version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("a CRD with a schema");
            let schema = serde_json::to_value(schema).expect("a schema serializes");
            let structural = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft4)
                .should_validate_formats(false)
                .build(&to_json_schema(&schema))
                .expect("the translated schema is a valid JSON schema");
            let api_version = format!("{}/{}", crd.spec.group, version.name);
            kinds.insert(format!("{api_version} {}", crd.spec.names.kind), Kind { schema, structural });
        }
        ApiServer { kinds, cel: Validator::new() }
    }

    /// Every kind's `openAPIV3Schema`.
    pub fn schemas(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.kinds.iter().map(|(k, kind)| (k.as_str(), &kind.schema))
    }

    /// Creates `object`: the defaulted object, or why the server refuses it.
    pub fn create(&self, object: &Value) -> Result<Value, Vec<Rejection>> {
        let key = format!(
            "{} {}",
            object["apiVersion"].as_str().unwrap_or_default(),
            object["kind"].as_str().unwrap_or_default()
        );
        let kind = self.kinds.get(&key).unwrap_or_else(|| panic!("no CRD serves {key:?}"));
        let mut object = object.clone();
        apply_defaults(&kind.schema, &mut object);

        let mut rejections: Vec<Rejection> = kind
            .structural
            .iter_errors(&object)
            .map(|e| Rejection {
                path: pointer_to_path(e.instance_path().as_str()),
                message: e.to_string(),
                by: "schema",
                follows_schema_error: false,
            })
            .collect();
        let structural_ok = rejections.is_empty();

        if let Err(errors) = self.cel.validate(&kind.schema, &object, None) {
            for e in errors.iter() {
                match e.kind {
                    ErrorKind::ValidationFailure => {}
                    // A rule that fails to evaluate rejects the object too, but only a rule that
                    // reads a field the schema already refused may do so: elsewhere it is a
                    // missing `has()` guard, and the server's message would be a CEL error.
                    ErrorKind::EvaluationError if !structural_ok => {}
                    _ => panic!(
                        "CEL rule {:?} at {:?} could not be evaluated: {:?} {}",
                        e.rule, e.field_path, e.kind, e.message
                    ),
                }
                rejections.push(Rejection {
                    path: e.field_path.clone(),
                    message: e.message.clone(),
                    by: "cel",
                    follows_schema_error: e.kind == ErrorKind::EvaluationError,
                });
            }
        }
        if rejections.is_empty() { Ok(object) } else { Err(rejections) }
    }
}

/// `/spec/template/ports/0/hostPort` → `spec.template.ports[0].hostPort`.
fn pointer_to_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    path
}

fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

/// The API server's structural defaulting (with the pruning of non-nullable nulls before it).
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, prop) in props {
                    if map.get(key).is_some_and(Value::is_null) && !is_nullable(prop) {
                        map.remove(key);
                    }
                    if !map.contains_key(key)
                        && let Some(default) = prop.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                }
                for (key, child) in map.iter_mut() {
                    if let Some(prop) = props.get(key) {
                        apply_defaults(prop, child);
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    apply_defaults(additional, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// An OpenAPI v3 schema object (as in a CRD) as a draft-4 JSON schema.
pub fn to_json_schema(schema: &Value) -> Value {
    let Some(map) = schema.as_object() else { return schema.clone() };
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            k if k.starts_with("x-kubernetes-") => {}
            "nullable" | "format" => {}
            "properties" => {
                let props = value.as_object().expect("properties is a map");
                out.insert(
                    key.clone(),
                    Value::Object(props.iter().map(|(k, v)| (k.clone(), to_json_schema(v))).collect()),
                );
            }
            "items" | "not" => {
                out.insert(key.clone(), to_json_schema(value));
            }
            "additionalProperties" if value.is_object() => {
                out.insert(key.clone(), to_json_schema(value));
            }
            "anyOf" | "allOf" | "oneOf" => {
                let branches = value.as_array().expect("a list of schemas");
                out.insert(key.clone(), Value::Array(branches.iter().map(to_json_schema).collect()));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    let mut types: Vec<Value> = match out.remove("type") {
        Some(Value::String(t)) => vec![Value::String(t)],
        None if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) => {
            vec![json!("integer"), json!("string")]
        }
        None => vec![],
        Some(other) => panic!("unexpected type {other}"),
    };
    if !types.is_empty() {
        if is_nullable(schema) {
            types.push(json!("null"));
        }
        out.insert("type".into(), if types.len() == 1 { types.remove(0) } else { Value::Array(types) });
    }
    Value::Object(out)
}

/// One `x-kubernetes-validations` rule and where it sits.
#[derive(Debug, Clone)]
pub struct RuleAt {
    /// The schema path of the node: `spec.template`, `spec.template.ports[*]`.
    pub path: String,
    /// The node's schema.
    pub node: Value,
    pub rule: String,
    pub field_path: Option<String>,
    /// How many instances of the node one object can hold (the product of the bounds of the
    /// lists and maps around it).
    pub cardinality: u64,
}

/// Every rule of a schema, depth first.
pub fn rules(schema: &Value) -> Vec<RuleAt> {
    fn walk(schema: &Value, path: String, cardinality: u64, out: &mut Vec<RuleAt>) {
        for r in schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
            out.push(RuleAt {
                path: path.clone(),
                node: schema.clone(),
                rule: r["rule"].as_str().expect("a rule").to_string(),
                field_path: r.get("fieldPath").and_then(Value::as_str).map(str::to_string),
                cardinality,
            });
        }
        for (k, v) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            walk(v, p, cardinality, out);
        }
        if let Some(items) = schema.get("items") {
            walk(items, format!("{path}[*]"), cardinality.saturating_mul(max_size(schema)), out);
        }
        if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            walk(values, format!("{path}.*"), cardinality.saturating_mul(max_size(schema)), out);
        }
    }
    let mut out = Vec::new();
    walk(schema, String::new(), 1, &mut out);
    out
}

/// The API server's largest request, which bounds every size it does not know.
const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;
/// cel-go's cost factor for walking a string.
const STRING_TRAVERSAL: f64 = 0.1;
/// cel-go's cost factor for the length of a regular expression.
const REGEX_LENGTH: f64 = 0.25;
/// The server's limit for the estimated cost of one rule.
pub const RULE_COST_LIMIT: u64 = 10_000_000;
/// The server's limit for the estimated cost of all rules of a CRD.
pub const CRD_COST_LIMIT: u64 = 100_000_000;

/// The most elements of a list, entries of a map or characters of a string the schema allows.
pub fn max_size(schema: &Value) -> u64 {
    let bound = |k: &str| schema.get(k).and_then(Value::as_u64);
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => bound("maxItems").unwrap_or(MAX_REQUEST_BYTES / 2),
        Some("object") => bound("maxProperties").unwrap_or(MAX_REQUEST_BYTES / 4),
        Some("string") => bound("maxLength").unwrap_or(MAX_REQUEST_BYTES),
        _ => 1,
    }
}

fn factor(size: u64, f: f64) -> u64 {
    (size as f64 * f).ceil() as u64
}

/// An upper estimate of a rule's cost at a node, in the manner of cel-go's estimator.
pub fn estimate_cost(rule: &str, node: &Value) -> Result<u64, String> {
    let program = Program::compile(rule).map_err(|e| format!("does not compile: {e}"))?;
    let mut scope = HashMap::new();
    scope.insert("self".to_string(), node.clone());
    Ok(Estimator.cost(&program.expression().expr, &scope))
}

struct Estimator;

impl Estimator {
    /// The schema of what `expr` evaluates to, where the rule's variables tell.
    fn schema_of(&self, expr: &Expr, scope: &HashMap<String, Value>) -> Option<Value> {
        match expr {
            Expr::Ident(name) => scope.get(name).cloned(),
            Expr::Select(s) => {
                let operand = self.schema_of(&s.operand.expr, scope)?;
                if s.test {
                    return Some(json!({"type": "boolean"}));
                }
                operand
                    .get("properties")
                    .and_then(|p| p.get(&s.field))
                    .or_else(|| operand.get("additionalProperties").filter(|a| a.is_object()))
                    .cloned()
            }
            Expr::Call(c) if c.func_name == "_[_]" => {
                let target = self.schema_of(&c.args[0].expr, scope)?;
                target.get("items").or_else(|| target.get("additionalProperties")).cloned()
            }
            // filter() and map() give at most as many elements as their list.
            Expr::Comprehension(c) => self.schema_of(&c.iter_range.expr, scope).filter(|s| s.get("items").is_some()),
            Expr::Literal(LiteralValue::String(s)) => Some(json!({"type": "string", "maxLength": s.len()})),
            Expr::Literal(_) => Some(json!({"type": "integer"})),
            _ => None,
        }
    }

    /// The most characters (or elements) `expr` can have.
    fn size_of(&self, expr: &Expr, scope: &HashMap<String, Value>) -> u64 {
        match self.schema_of(expr, scope) {
            Some(s) => max_size(&s),
            None => MAX_REQUEST_BYTES,
        }
    }

    fn cost(&self, expr: &Expr, scope: &HashMap<String, Value>) -> u64 {
        match expr {
            Expr::Ident(_) => 1,
            Expr::Select(s) => 1 + self.cost(&s.operand.expr, scope),
            Expr::Literal(_) => 0,
            Expr::List(l) => 10 + l.elements.iter().map(|e| self.cost(&e.expr, scope)).sum::<u64>(),
            Expr::Comprehension(c) => {
                let range = self.schema_of(&c.iter_range.expr, scope);
                let n = range.as_ref().map_or(MAX_REQUEST_BYTES, max_size);
                let mut inner = scope.clone();
                if let Some(range) = &range {
                    let element = range
                        .get("items")
                        .cloned()
                        // Iterating a map yields its keys.
                        .unwrap_or_else(|| json!({"type": "string"}));
                    inner.insert(c.iter_var.clone(), element);
                } else {
                    inner.remove(&c.iter_var);
                }
                // The accumulator of all(), exists(), exists_one() is a bool or a count.
                inner.insert(c.accu_var.clone(), json!({"type": "integer"}));
                let step = self.cost(&c.loop_cond.expr, &inner) + self.cost(&c.loop_step.expr, &inner);
                self.cost(&c.iter_range.expr, scope)
                    + self.cost(&c.accu_init.expr, scope)
                    + n.saturating_mul(step)
                    + self.cost(&c.result.expr, &inner)
            }
            Expr::Call(c) => {
                let args: Vec<&IdedExpr> = c.target.iter().map(|t| t.as_ref()).chain(c.args.iter()).collect();
                let operands: u64 = args.iter().map(|a| self.cost(&a.expr, scope)).sum();
                let size = |i: usize| args.get(i).map_or(0, |a| self.size_of(&a.expr, scope));
                let own = match c.func_name.as_str() {
                    "_==_" | "_!=_" => 1 + factor(size(0).min(size(1)), STRING_TRAVERSAL),
                    "@in" => match args.get(1).map(|l| &l.expr) {
                        // Each element is compared; a comparison walks the shorter string.
                        Some(Expr::List(l)) => {
                            let longest = l.elements.iter().map(|e| self.size_of(&e.expr, scope)).max().unwrap_or(0);
                            1 + l.elements.len() as u64 * (1 + factor(size(0).min(longest), STRING_TRAVERSAL))
                        }
                        _ => 1 + size(1) * (1 + factor(size(0), STRING_TRAVERSAL)),
                    },
                    "matches" => {
                        let regex = match args.get(1).map(|a| &a.expr) {
                            Some(Expr::Literal(LiteralValue::String(r))) => r.len() as u64,
                            _ => MAX_REQUEST_BYTES,
                        };
                        factor(size(0), STRING_TRAVERSAL) * factor(regex, REGEX_LENGTH)
                    }
                    "startsWith" | "endsWith" => 1 + factor(size(1), STRING_TRAVERSAL),
                    "contains" | "isIP" | "isCIDR" | "isQuantity" | "quantity" | "ip" | "cidr" | "isURL" | "url" => {
                        1 + factor(size(0), STRING_TRAVERSAL)
                    }
                    _ => 1,
                };
                operands + own
            }
            _ => 1,
        }
    }
}

/// The variables a rule reads that no macro binds: for a CRD rule, only `self` and `oldSelf`
/// (and the root's `apiVersion`, `apiGroup`, `kind`) exist.
pub fn free_variables(rule: &str) -> Result<Vec<String>, String> {
    fn bound(expr: &Expr, out: &mut Vec<String>) {
        match expr {
            Expr::Comprehension(c) => {
                out.push(c.iter_var.clone());
                out.extend(c.iter_var2.clone());
                out.push(c.accu_var.clone());
                for e in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    bound(&e.expr, out);
                }
            }
            Expr::Call(c) => {
                c.target.iter().for_each(|t| bound(&t.expr, out));
                c.args.iter().for_each(|a| bound(&a.expr, out));
            }
            Expr::Select(s) => bound(&s.operand.expr, out),
            Expr::List(l) => l.elements.iter().for_each(|e| bound(&e.expr, out)),
            _ => {}
        }
    }
    let program = Program::compile(rule).map_err(|e| format!("does not compile: {e}"))?;
    let mut macro_vars = Vec::new();
    bound(&program.expression().expr, &mut macro_vars);
    Ok(program
        .references()
        .variables()
        .into_iter()
        .filter(|v| !macro_vars.iter().any(|m| m == v))
        .map(str::to_string)
        .collect())
}
