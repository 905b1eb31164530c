//! The CRDs checked in under `manifests/crd/` must be exactly what the code generates.
//! Regenerate them with `BERTH_UPDATE_CRDS=1 cargo test -p berth-crd --test manifests`.

use std::path::PathBuf;

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crd")
}

#[test]
fn checked_in_crds_match_the_code() {
    let update = std::env::var_os("BERTH_UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for (name, yaml) in berth_crd::crd_files() {
        let path = crd_dir().join(&name);
        if update {
            std::fs::create_dir_all(crd_dir()).unwrap();
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == yaml => {}
            _ => stale.push(path.display().to_string()),
        }
    }
    assert!(
        stale.is_empty(),
        "these CRD manifests differ from the code: {stale:?}\nregenerate with: BERTH_UPDATE_CRDS=1 cargo test -p berth-crd --test manifests"
    );
}

#[test]
fn crds_have_short_names_status_and_columns() {
    for crd in berth_crd::crds() {
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{:?} has a status subresource",
            crd.metadata.name
        );
        assert!(v.additional_printer_columns.as_ref().is_some_and(|c| c.len() >= 3));
        assert_eq!(crd.spec.group, "berth.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
    }
    let short: Vec<Vec<String>> =
        berth_crd::crds().iter().map(|c| c.spec.names.short_names.clone().unwrap_or_default()).collect();
    assert_eq!(short, vec![vec!["dh".to_string()], vec!["cs".to_string()], vec!["img".to_string()]]);
}
