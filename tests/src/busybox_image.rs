//! A plain shell image, built locally once per machine: `FROM scratch` with Debian's static
//! busybox as `/bin/busybox` and its applets linked into `/bin` (`sh`, `echo`, `sleep`, ...).
//!
//! For containers that run a short script and exit (`Task` sets), or that do something
//! on a timer before they turn healthy. Unlike the [`crate::health_images`] it has no
//! `HEALTHCHECK` and no server: `ENTRYPOINT`/`CMD` are unset, so a template must give a
//! `command`. Built with the legacy builder (offline: nothing is pulled); the tag carries a
//! hash of the Dockerfile and of the busybox binary, so a machine that kept an older image
//! builds the current one instead of running a stale one.

use std::process::Command;

use crate::health_images::BUSYBOX;
use crate::lock;
use crate::rt;
use crate::trials::sha256_hex;

const DOCKERFILE: &str =
    "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n";

/// The busybox image's tag on the local engine, built if it is missing; works from sync and
/// async tests alike.
///
/// # Panics
/// When no engine answers, busybox is missing, or the build fails (with its output).
pub fn ensure_busybox_image() -> String {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!(
            "{BUSYBOX} is needed for the busybox test image ({e}): \
             install Debian's static busybox with `apt-get install busybox-static` (scripts/test.sh does)"
        )
    });
    let mut inputs = DOCKERFILE.as_bytes().to_vec();
    inputs.extend_from_slice(sha256_hex(&busybox).as_bytes());
    let tag = format!("berth-test/busybox:{}", &sha256_hex(&inputs)[..12]);
    if present(&tag) {
        return tag;
    }
    let _lock = lock::exclusive("busybox-image");
    // Another process may have built it while we waited for the lock.
    if present(&tag) {
        return tag;
    }
    let ctx = tempfile::tempdir().expect("a build context folder");
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).expect("write the Dockerfile");
    {
        use std::os::unix::fs::PermissionsExt;
        let path = ctx.path().join("busybox");
        std::fs::write(&path, &busybox).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
    let out = Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `docker build` (the Docker CLI): {e}"));
    assert!(
        out.status.success(),
        "docker build -t {tag} failed ({}):\n--- Dockerfile\n{DOCKERFILE}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(present(&tag), "docker build succeeded but {tag} is missing on the engine");
    tag
}

fn present(tag: &str) -> bool {
    rt::block_on(async {
        let docker = crate::engine::docker().await;
        match docker.inspect_image(tag).await {
            Ok(_) => true,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
            Err(e) => panic!("cannot inspect {tag} on the local engine: {e}"),
        }
    })
}
