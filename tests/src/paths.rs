//! Where the repository and its `target/` directory are.
//!
//! Tests run from `target/<profile>/deps/`, with a working directory cargo chooses; every
//! path the harness uses (build scripts, lock files, the `berth` binary) is derived here
//! from the crate's manifest directory or the running test executable, never from the cwd.

use std::path::PathBuf;

/// The repository root: the parent of this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = here.parent().expect("tests/ has a parent directory").to_path_buf();
    root.canonicalize().unwrap_or(root)
}

/// `<repo>/target`, created if missing: where the harness keeps its lock files.
pub fn target_dir() -> PathBuf {
    let dir = repo_root().join("target");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// The profile directory of the running test executable (`target/<profile>`).
///
/// A test executable lives in `target/<profile>/deps/`; binaries of the workspace are put
/// in `target/<profile>/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let dir = exe.parent().expect("the test executable has a parent directory");
    // Tests run from `deps/`, examples from `examples/`; binaries (e2e's bench) from here.
    if dir.file_name().is_some_and(|n| n == "deps" || n == "examples") {
        dir.parent().expect("deps/ has a parent directory").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}
