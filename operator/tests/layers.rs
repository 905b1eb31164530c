//! The layering rule, checked: each top-level module of `src/` uses only the modules below it
//! (docs/architecture.md draws the same picture). A `crate::<module>` path in a module that
//! may not use `<module>` fails this test with the file and line, so the rule does not rot.
//!
//! The engine also stays pure: it names no I/O crate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each module and the modules it may use. A module's own paths are always allowed.
const LAYERS: &[(&str, &[&str])] = &[
    // The pure planner: desired + observed in, steps out.
    ("engine", &[]),
    // Plain data of a run: host targets, endpoints, per-set runtime and rollout facts.
    ("target", &["engine"]),
    // Files (later: compose files, Images) to desired state.
    ("input", &["engine", "target"]),
    // The only place berth talks to engines.
    ("docker", &["engine", "target"]),
    // Metrics and logs, shared by the front ends.
    ("telemetry", &["engine"]),
    // Rollouts over many hosts: waves, gates, rollback, history.
    ("fleet", &["engine", "target", "docker"]),
    // `berth plan` in memory, for fuzzing.
    ("rehearsal", &["engine", "target", "input"]),
    // The front ends.
    ("controller", &["engine", "target", "input", "docker", "telemetry", "fleet"]),
    ("cli", &["engine", "target", "input", "docker", "telemetry", "fleet", "rehearsal", "controller"]),
];

/// Crates that do I/O (or speak Kubernetes); the engine names none of them.
const NOT_IN_ENGINE: &[&str] = &["bollard", "kube", "k8s_openapi", "tokio", "std::fs", "std::net", "std::process"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `.rs` files of top-level module `m`: `src/m.rs` and everything under `src/m/`.
fn files_of(m: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let file = src().join(format!("{m}.rs"));
    if file.exists() {
        out.push(file);
    }
    let mut dirs = vec![src().join(m)];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let p = e.expect("a readable folder").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Code of a line without its `//` comment (doc links may point anywhere).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(i) if !line[..i].contains('"') => &line[..i],
        Some(_) if line.trim_start().starts_with("//") => "",
        _ => line,
    }
}

/// The top-level modules a piece of code names as `crate::x`, `crate::{x, y::z}`, with the
/// text's position of each.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `berth_crd::` and other crates' names end in "crate" only by accident: need a boundary.
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(name);
        }
    }
    out
}

/// Every `file:line: module uses X` that breaks the rule.
fn violations() -> Vec<String> {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut found = Vec::new();
    for (module, allowed) in LAYERS {
        let files = files_of(module);
        assert!(!files.is_empty(), "no files for module {module} under {}", src().display());
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            for (n, line) in text.lines().enumerate() {
                let code = code_of(line);
                for used in crate_paths(code) {
                    if used == *module || !layers.contains_key(used.as_str()) {
                        continue; // its own paths, or items of lib.rs
                    }
                    if !allowed.contains(&used.as_str()) {
                        found.push(format!("{}:{}: {module} uses {used}: {}", f.display(), n + 1, line.trim()));
                    }
                }
                if *module == "engine" {
                    for c in NOT_IN_ENGINE {
                        if code.contains(&format!("{c}::")) {
                            found.push(format!("{}:{}: the engine names {c}: {}", f.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn each_module_uses_only_the_modules_below_it() {
    let found = violations();
    assert!(
        found.is_empty(),
        "{} back-import(s) against the layering (tests/layers.rs, docs/architecture.md):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn every_module_of_lib_rs_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let layered: Vec<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    for m in &declared {
        assert!(layered.contains(m), "module {m} of lib.rs has no place in LAYERS");
    }
    for m in &layered {
        assert!(declared.contains(m), "LAYERS names {m}, which lib.rs does not declare");
    }
}

#[test]
fn the_path_reader_finds_what_a_back_import_looks_like() {
    assert_eq!(crate_paths("use crate::docker::{self, Endpoint};"), ["docker"]);
    assert_eq!(crate_paths("use crate::{fleet, input::Resolved};"), ["fleet", "input"]);
    assert_eq!(crate_paths("let x = crate::input::resolve(&i);"), ["input"]);
    assert!(crate_paths("use berth_crd::ContainerSet;").is_empty());
    assert!(crate_paths("use subcrate::x;").is_empty());
    assert_eq!(code_of("/// see [`crate::docker::pin`]"), "");
    assert_eq!(code_of("use crate::engine; // why"), "use crate::engine; ");
}
