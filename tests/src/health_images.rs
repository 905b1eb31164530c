//! Test images with a `HEALTHCHECK` of their own, built locally once per machine.
//!
//! Real images bring their own healthchecks, in every form the engine knows; the echo image
//! has none. Each image here is `FROM example/echo:latest` (so it serves the echo app on
//! 8080) plus one healthcheck, built with the legacy builder (offline: nothing is pulled):
//!
//! - [`HealthImage::Own`]: `HEALTHCHECK CMD ["/echo", "--probe"]`, exec form;
//! - [`HealthImage::OneArgument`]: `HEALTHCHECK CMD ["/probe"]`, a one-argument exec check
//!   (the engine's event text is `exec_start: /probe `, with a trailing space);
//! - [`HealthImage::Shell`]: `HEALTHCHECK CMD wget ...`, the `CMD-SHELL` form, run by the
//!   container's shell;
//! - [`HealthImage::ShellOverride`]: the same under `SHELL ["/bin/busybox", "sh", "-c"]`
//!   (which the engine does not pass on to the container: the probe still runs `/bin/sh -c`,
//!   so an implementation that took the image's `SHELL` would mistake it for a user's exec).
//!
//! The shell and `wget` come from Debian's static busybox (`busybox-static`, which `scripts/test.sh`
//! installs), copied in as `/bin/busybox` with its applets linked into `/bin`. Every probe
//! runs each second. An image's tag carries a hash of everything it is built from (the
//! Dockerfile's text, the files copied in, the echo image's id), so a machine that kept an
//! older image builds the current one instead of running a stale one.

use std::path::Path;
use std::process::Command;

use crate::image::{ECHO_IMAGE, ensure_echo_image};
use crate::lock;
use crate::rt;
use crate::trials::sha256_hex;

/// Where the static busybox is (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// A test image with a healthcheck of its own (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthImage {
    Own,
    OneArgument,
    Shell,
    ShellOverride,
}

/// The lines that give an image busybox's shell and tools.
const WITH_BUSYBOX: &str =
    "COPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n";

/// `/probe` of [`HealthImage::OneArgument`]: one command, no arguments.
const PROBE_SCRIPT: &str = "#!/bin/sh\nexec wget -q -O /dev/null http://127.0.0.1:8080/\n";

impl HealthImage {
    pub const ALL: [HealthImage; 4] =
        [HealthImage::Own, HealthImage::OneArgument, HealthImage::Shell, HealthImage::ShellOverride];

    /// A short name, for tags and set names.
    pub fn slug(self) -> &'static str {
        match self {
            HealthImage::Own => "own",
            HealthImage::OneArgument => "one-arg",
            HealthImage::Shell => "shell",
            HealthImage::ShellOverride => "shell-override",
        }
    }

    fn dockerfile(self) -> String {
        let check = match self {
            HealthImage::Own => "HEALTHCHECK --interval=1s --timeout=3s CMD [\"/echo\", \"--probe\"]\n".to_string(),
            HealthImage::OneArgument => {
                format!("{WITH_BUSYBOX}COPY probe /probe\nHEALTHCHECK --interval=1s --timeout=3s CMD [\"/probe\"]\n")
            }
            HealthImage::Shell => format!(
                "{WITH_BUSYBOX}HEALTHCHECK --interval=1s --timeout=3s CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1\n"
            ),
            HealthImage::ShellOverride => format!(
                "{WITH_BUSYBOX}SHELL [\"/bin/busybox\", \"sh\", \"-c\"]\n\
                 HEALTHCHECK --interval=1s --timeout=3s CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1\n"
            ),
        };
        format!("FROM {ECHO_IMAGE}\n{check}")
    }

    fn needs_busybox(self) -> bool {
        self != HealthImage::Own
    }

    /// The image's tag on the local engine, built if it is missing; works from sync and
    /// async tests alike.
    ///
    /// # Panics
    /// When no engine answers, busybox is missing, or the build fails (with its output).
    pub fn ensure(self) -> String {
        ensure_echo_image();
        let echo_id = rt::block_on(async {
            let docker = crate::engine::docker().await;
            docker.inspect_image(ECHO_IMAGE).await.ok().and_then(|i| i.id)
        })
        .unwrap_or_else(|| panic!("{ECHO_IMAGE} has no id on the local engine"));
        let dockerfile = self.dockerfile();
        let busybox = if self.needs_busybox() {
            Some(std::fs::read(BUSYBOX).unwrap_or_else(|e| {
                panic!(
                    "{BUSYBOX} is needed for the healthcheck test images ({e}): \
                     install Debian's static busybox with `apt-get install busybox-static` (scripts/test.sh does)"
                )
            }))
        } else {
            None
        };
        let mut inputs = format!("{dockerfile}\n{echo_id}\n").into_bytes();
        if let Some(b) = &busybox {
            inputs.extend_from_slice(sha256_hex(b).as_bytes());
            inputs.extend_from_slice(PROBE_SCRIPT.as_bytes());
        }
        let tag = format!("berth-test/healthcheck-{}:{}", self.slug(), &sha256_hex(&inputs)[..12]);
        if present(&tag) {
            return tag;
        }
        let _lock = lock::exclusive(&format!("health-image-{}", self.slug()));
        // Another process may have built it while we waited for the lock.
        if present(&tag) {
            return tag;
        }
        let ctx = tempfile::tempdir().expect("a build context folder");
        std::fs::write(ctx.path().join("Dockerfile"), &dockerfile).expect("write the Dockerfile");
        if let Some(b) = &busybox {
            write_executable(&ctx.path().join("busybox"), b);
            write_executable(&ctx.path().join("probe"), PROBE_SCRIPT.as_bytes());
        }
        let out = Command::new("docker")
            .args(["build", "-q", "-t", &tag])
            .arg(ctx.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap_or_else(|e| panic!("cannot run `docker build` (the Docker CLI): {e}"));
        assert!(
            out.status.success(),
            "docker build -t {tag} failed ({}):\n--- Dockerfile\n{dockerfile}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(present(&tag), "docker build succeeded but {tag} is missing on the engine");
        tag
    }
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

fn write_executable(path: &Path, data: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
