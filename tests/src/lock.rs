//! An exclusive lock across test processes.
//!
//! Test binaries (and nextest, one process per test) run in parallel; work that must happen
//! once per machine (building the echo image, building the `berth` binary) is done under an
//! exclusive `flock` on a file in `<repo>/target/`, then re-checked by whoever waited.

use std::fs::{File, OpenOptions};

use crate::paths::target_dir;

/// Holds the lock until dropped.
pub struct FileLock {
    file: File,
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Blocks until this process holds the exclusive lock `<repo>/target/<name>.lock`.
///
/// `flock` locks belong to the open file description, so two threads of one process
/// exclude each other too.
pub fn exclusive(name: &str) -> FileLock {
    let path = target_dir().join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open lock file {}: {e}", path.display()));
    file.lock().unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    FileLock { file }
}
