//! A rehearsal: everything `berth plan` does with a file before it touches a host, run in
//! memory, with the planner's laws checked on the way.
//!
//! Bytes are read as a YAML file ([`load_bytes`]), each object validated, the input checked as
//! a whole and resolved to desired state per host, exactly as the CLI does. For input that
//! passes, every host is planned from empty and from a simulated earlier revision
//! ([`SimHost`]), the plan applied to the simulated host, and planned again: the host must
//! accept every step and the second plan must be empty (the convergence and idempotence laws
//! of [`crate::engine::plan`]).
//!
//! It is the body of the fuzz target (`fuzz/`) and of the corpus regression test, so that what
//! the fuzzer finds replays in `cargo test`. A panic here is a bug: either berth panicked on
//! some input, or a law does not hold for an input that validates.

use std::path::Path;

use crate::engine::sim::SimHost;
use crate::engine::{ContainerSpec, DesiredSet, HostPlan, Scope, plan_host};
use crate::input::load::load_bytes;
use crate::input::resolve::{dependency_errors, host_port_conflicts, resolve, sets_selecting_no_host};
use crate::input::{InputError, Resolved};

/// Above this many desired containers on a host, only planning from empty is rehearsed: the
/// simulated host is a test double (linear lookups), and a fuzzer's time is better spent on
/// more inputs than on one large one.
const MAX_SIMULATED_CONTAINERS: u32 = 64;

/// What came of a rehearsal.
#[derive(Debug)]
pub struct Rehearsal {
    /// Every problem found in the input, as `berth plan` reports them; empty if it is valid.
    pub errors: Vec<InputError>,
    /// Per host, the plan from an empty host.
    pub plans: Vec<HostPlan>,
}

/// Rehearse `bytes` as the content of a file named `file`. Panics when a law of the planner
/// fails for a valid input (see the module's doc).
pub fn rehearse(file: &Path, bytes: &[u8]) -> Rehearsal {
    let (input, mut errors) = load_bytes(file, bytes);
    errors.extend(sets_selecting_no_host(&input));
    errors.extend(dependency_errors(&input));
    let resolved = match resolve(&input, false) {
        Ok(r) => r,
        Err(e) => {
            errors.extend(e.0);
            return Rehearsal { errors, plans: Vec::new() };
        }
    };
    errors.extend(host_port_conflicts(&input, &resolved));
    if !errors.is_empty() {
        return Rehearsal { errors, plans: Vec::new() };
    }
    // `--prune` owns whole namespaces: the same desired state, a wider scope.
    if let Ok(pruning) = resolve(&input, true) {
        for host in &pruning.hosts {
            plan_host(&host.name, &host.desired, &[], &host.scope);
        }
    }
    Rehearsal { errors, plans: plan_every_host(&resolved) }
}

fn plan_every_host(resolved: &Resolved) -> Vec<HostPlan> {
    let mut plans = Vec::new();
    for host in &resolved.hosts {
        let from_empty = plan_host(&host.name, &host.desired, &[], &host.scope);
        let containers: u32 = host.desired.iter().map(|d| d.replicas).fold(0, u32::saturating_add);
        if containers <= MAX_SIMULATED_CONTAINERS {
            converge(&host.name, &host.desired, &host.scope, SimHost::default(), "an empty host");
            let earlier: Vec<DesiredSet> = host.desired.iter().map(earlier_revision).collect();
            let mut sim = SimHost::default();
            let plan = plan_host(&host.name, &earlier, &sim.observe(), &host.scope);
            sim.apply_plan(&plan, &earlier)
                .unwrap_or_else(|e| panic!("host {}: the earlier revision's plan was refused: {e:?}", host.name));
            converge(&host.name, &host.desired, &host.scope, sim, "a host running an earlier revision");
        }
        plans.push(from_empty);
    }
    plans
}

/// Plan `desired` against `sim`, apply it, and check that a second plan is empty.
fn converge(host: &str, desired: &[DesiredSet], scope: &Scope, mut sim: SimHost, from: &str) {
    let plan = plan_host(host, desired, &sim.observe(), scope);
    if let Err(e) = sim.apply_plan(&plan, desired) {
        panic!("host {host}, from {from}: the simulated host refused a step: {e:?}\nplan: {plan:#?}");
    }
    let again = plan_host(host, desired, &sim.observe(), scope);
    assert!(again.is_empty(), "host {host}, from {from}: not converged after one plan; the next plan is {again:#?}");
    assert_eq!(plan_host(host, desired, &sim.observe(), scope), again, "host {host}: planning is not deterministic");
}

/// The set as it might have run before: another image, one replica more.
fn earlier_revision(d: &DesiredSet) -> DesiredSet {
    let spec = ContainerSpec { image: "example/earlier:0".into(), ..d.spec.clone() };
    let replicas = if d.spec.host_bindings().is_empty() { d.replicas.saturating_add(1) } else { d.replicas };
    DesiredSet::new(d.key.clone(), spec, replicas, d.order, d.pull).with_drift_policy(d.drift_policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rehearse_str(yaml: &str) -> Rehearsal {
        rehearse(Path::new("test.yaml"), yaml.as_bytes())
    }

    #[test]
    fn a_valid_set_is_planned_and_converges() {
        let r = rehearse_str(
            "apiVersion: berth.dev/v1alpha1\nkind: ContainerSet\nmetadata: {name: web}\n\
             spec:\n  replicasPerHost: 2\n  template:\n    image: example/echo:1\n    ports: [{containerPort: 8080}]\n",
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.plans.len(), 1);
        assert_eq!(r.plans[0].change_count(), 2, "{:#?}", r.plans[0]);
    }

    /// The YAML files under `dir` (relative to the repository), recursively, in name order.
    fn files_under(dir: &str) -> Vec<std::path::PathBuf> {
        fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
            let mut entries: Vec<_> = std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path()).collect();
            entries.sort();
            for e in entries {
                if e.is_dir() {
                    walk(&e, out);
                } else if e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    out.push(e);
                }
            }
        }
        let mut out = Vec::new();
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir), &mut out);
        out
    }

    /// The bytes of a corpus file with its placeholders filled in, as the CLI test does.
    fn filled(path: &Path) -> Vec<u8> {
        let bytes = std::fs::read(path).expect("a corpus file");
        let text = String::from_utf8_lossy(&bytes);
        if text.contains('\u{FFFD}') {
            return bytes; // not UTF-8 on purpose: no placeholders to fill
        }
        text.replace("{ns}", "corpus").replace("{endpoint}", "unix:///nonexistent.sock").into_bytes()
    }

    #[test]
    fn every_invalid_corpus_file_is_refused_in_memory_without_a_panic() {
        let files = files_under("tests/data/invalid");
        assert!(files.len() >= 50, "the corpus has {} files", files.len());
        for f in &files {
            let r = rehearse(f, &filled(f));
            assert!(!r.errors.is_empty(), "{} was accepted", f.display());
            assert!(r.plans.is_empty());
        }
    }

    /// What the fuzzer found (`fuzz/regressions/`), and the examples: no panic, no broken law.
    #[test]
    fn fuzz_regressions_and_examples_rehearse_without_a_panic() {
        let files: Vec<_> = files_under("fuzz/regressions").into_iter().chain(files_under("examples")).collect();
        assert!(!files.is_empty());
        for f in &files {
            rehearse(f, &std::fs::read(f).expect("a file"));
        }
        for valid in files_under("fuzz/seeds")
            .into_iter()
            .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/echo.yaml")])
        {
            let r = rehearse(&valid, &std::fs::read(&valid).expect("a valid seed"));
            assert!(r.errors.is_empty() && !r.plans.is_empty(), "{}: {:?}", valid.display(), r.errors);
        }
    }

    #[test]
    fn invalid_input_is_reported_and_not_planned() {
        let r = rehearse_str("kind: ContainerSet\n");
        assert!(!r.errors.is_empty());
        assert!(r.plans.is_empty());
    }
}
