//! The echo test image, built locally once per machine.
//!
//! Nothing can be pulled from a public registry on the test machines, so every image a test
//! uses is built locally: `examples/echo/build-image.sh` builds `example/echo:latest`
//! (FROM scratch, `/echo` serving `Hello Docker!!` on 8080, `/echo --probe` as healthcheck).
//! Test processes run in parallel; the build runs under an exclusive file lock so it happens
//! once, and whoever waited for the lock finds the image there.

use std::process::Command;

use crate::lock;
use crate::paths::repo_root;
use crate::rt;

/// The echo test image's reference.
pub const ECHO_IMAGE: &str = "example/echo:latest";

/// Port the echo app listens on inside its container.
pub const ECHO_PORT: u16 = 8080;

/// What the echo app answers on `GET /`.
pub const ECHO_BODY: &str = "Hello Docker!!";

async fn echo_image_present() -> bool {
    let docker = crate::engine::docker().await;
    match docker.inspect_image(ECHO_IMAGE).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(e) => panic!("cannot inspect {ECHO_IMAGE} on the local engine: {e}"),
    }
}

/// Makes sure `example/echo:latest` exists on the local engine (`DOCKER_HOST` or the default
/// socket), building it with `examples/echo/build-image.sh` if it is missing.
///
/// Works from sync and async tests alike.
///
/// # Panics
/// When no engine answers, or the build fails (with the script's output).
pub fn ensure_echo_image() {
    if rt::block_on(echo_image_present()) {
        return;
    }
    let _lock = lock::exclusive("echo-image");
    // Another process may have built it while we waited for the lock.
    if rt::block_on(echo_image_present()) {
        return;
    }
    let script = repo_root().join("examples/echo/build-image.sh");
    assert!(script.is_file(), "{ECHO_IMAGE} is missing and its build script {} does not exist", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        rt::block_on(echo_image_present()),
        "{} succeeded but {ECHO_IMAGE} is still missing on the engine",
        script.display()
    );
}
