//! The real-servers image: PostgreSQL 15 (server and client), Redis and nginx from Debian's
//! packages, built offline once per machine.
//!
//! Stateful behaviour (two writers on one data directory, rows that must survive a
//! replacement) can only be trusted when tested with real servers; the echo image cannot show
//! it. Nothing can be pulled here, so the image is made from the Debian mirror the machine
//! already uses: `debootstrap --variant=minbase --include=...` of bookworm, then `docker import`
//! with PostgreSQL's binaries on `PATH`. The recipe lives in one place,
//! `scripts/build-servers-image.sh`, which `examples/app/build.sh` calls too; see it for the
//! details. In short:
//!
//! - the tag is `berth/servers:<hash of the recipe>` (suite, packages, mirror, architecture,
//!   clean-up, import options), so a machine that kept an older image builds the current one;
//! - the root file system's tarball stays in `/var/cache/berth-test/` (`BERTH_CACHE_DIR`):
//!   an engine that lost its images re-imports it in seconds, without debootstrap (about a
//!   minute and a half here) and without the mirror;
//! - concurrent test processes are safe: the harness builds under [`crate::lock`] and re-checks,
//!   and the script itself holds a machine-wide `flock`.
//!
//! Inside the image: `postgres`, `initdb`, `psql`, `pg_isready` (PATH has
//! `/usr/lib/postgresql/15/bin`), no cluster (each container runs `initdb` into its own
//! volume), `redis-server` / `redis-cli`, `nginx` (Debian's default site on port 80), bash and
//! coreutils. See the project's test-bed notes for PostgreSQL's traps: mount the volume at
//! `/var/lib/postgresql`, run as `postgres`, `initdb -A trust` plus a `host all all 0.0.0.0/0
//! trust` line for clients in other containers, healthcheck `pg_isready -h 127.0.0.1`.

use std::io::Write as _;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use crate::lock;
use crate::paths::repo_root;
use crate::rt;

/// The script with the recipe, relative to the repository root.
pub const SERVERS_SCRIPT: &str = "scripts/build-servers-image.sh";

/// PostgreSQL's data directory in the containers of the tests and the example: under the
/// mount point, so the volume (mounted at `/var/lib/postgresql`) holds it.
pub const PGDATA: &str = "/var/lib/postgresql/data";

/// A `bash -c` script that starts PostgreSQL 15 as PID 1 on [`PGDATA`], making the cluster on
/// first start (`initdb -A trust`, and trust for clients on other containers' addresses).
/// Run it as `user: postgres`, with `stopSignal: SIGINT` (PostgreSQL's fast shutdown: its
/// SIGTERM waits for every client to leave).
pub const POSTGRES_START: &str = r#"set -e
export PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb -D "$PGDATA" -A trust -U postgres >/dev/null
    echo "host all all 0.0.0.0/0 trust" >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
"#;

/// The tag of the real-servers image on the local engine, built (or re-imported from the
/// cached root file system) if it is missing. Works from sync and async tests alike; the
/// first call of a process that builds prints how long it took.
///
/// # Panics
/// When no engine answers, or the build fails: debootstrap missing (`apt-get install
/// debootstrap`, which `scripts/test.sh` does), the mirror unreachable, not root. The message
/// has the script's output.
pub fn ensure_servers_image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let tag = run_script(&["--tag"]).trim().to_string();
        assert!(tag.starts_with("berth/servers:"), "{SERVERS_SCRIPT} --tag printed {tag:?}");
        if present(&tag) {
            return tag;
        }
        let _lock = lock::exclusive("servers-image");
        // Another process may have built it while we waited for the lock.
        if present(&tag) {
            return tag;
        }
        let started = Instant::now();
        let built = run_script(&[]);
        let built = built.lines().last().unwrap_or_default().trim();
        assert_eq!(built, tag, "{SERVERS_SCRIPT} made another tag than --tag said");
        assert!(present(&tag), "{SERVERS_SCRIPT} succeeded but {tag} is not on the local engine");
        // Straight to the process's stderr (the test harness captures only `eprintln!`): a
        // test that took minutes says why.
        let _ = writeln!(
            std::io::stderr(),
            "berth-tests: the servers image {tag} was missing; made it in {:.1?} (debootstrap, or a re-import of the cached root file system)",
            started.elapsed()
        );
        tag
    })
}

/// Runs the recipe script with `args`; its stdout. Its stderr (progress) is shown on failure.
fn run_script(args: &[&str]) -> String {
    let script = repo_root().join(SERVERS_SCRIPT);
    assert!(script.is_file(), "the servers image's recipe {} does not exist", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        script.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
