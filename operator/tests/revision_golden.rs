//! Upgrading berth never replaces a container by itself: the revision hashes of a fixed set of
//! specs (tests/data/golden.yaml, every template field in use somewhere) are held here. A new
//! field whose default enters the canonical spec — or any change to how a spec is resolved or
//! serialized — changes a hash, and this test says which set, so the change gets a
//! `skip_serializing_if` (or a deliberate, documented re-roll) instead of rolling every
//! container on upgrade.

use std::collections::BTreeMap;
use std::path::Path;

/// `namespace/set` → revision, as berth resolved tests/data/golden.yaml on 2026-12-04.
const GOLDEN: &[(&str, &str)] = &[
    ("golden/host-net", "e7594d3387"),
    ("golden/minimal", "1d1597868c"),
    ("golden/shell-probe", "222191911b"),
    ("golden/web", "9ba4b3616d"),
];

fn revisions() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden.yaml");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (input, errors) = berth::input::load::load_bytes(&path, &bytes);
    assert!(errors.is_empty(), "the golden input does not load: {errors:?}");
    let resolved = berth::input::resolve(&input, false).unwrap_or_else(|e| panic!("the golden input: {e}"));
    let mut out = BTreeMap::new();
    for host in &resolved.hosts {
        for d in &host.desired {
            out.insert(d.key.to_string(), d.revision.clone());
        }
    }
    out
}

#[test]
fn revision_hashes_of_existing_specs_never_change() {
    let got = revisions();
    let want: BTreeMap<String, String> = GOLDEN.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let changed: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: was {v}, now {}", got.get(k).map_or("absent", String::as_str)))
        .collect();
    assert!(
        changed.is_empty() && got.len() == want.len(),
        "revision hashes changed: every container of these specs would be replaced on upgrade:\n{}\n(all now: {got:?})",
        changed.join("\n")
    );
}
