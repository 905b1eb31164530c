//! A container's health probe as the engine runs it: what tells the container's own
//! healthcheck apart from a user's `docker exec` in the event stream.
//!
//! The engine runs every health probe as an exec in the container and reports it like any
//! other exec: `exec_start: <entrypoint> <args joined by spaces>` (moby's
//! `ContainerExecStart`, the same text in Docker 20.10 and 26; a command with no arguments
//! keeps the separating space, so `["CMD", "/probe"]` is `exec_start: /probe `). The probe's
//! command comes from the container's *effective* healthcheck, `Config.Healthcheck` of an
//! inspect, which the engine merged at create time (the container's own test, else the
//! image's `HEALTHCHECK`):
//!
//! | test                      | the probe runs                                          |
//! |---------------------------|---------------------------------------------------------|
//! | `["CMD", cmd, args...]`   | `cmd args...`                                           |
//! | `["CMD-SHELL", command]`  | `Config.Shell` + `command` (default `/bin/sh -c`, `cmd /S /C` on Windows) |
//! | `["NONE"]`, `[]`, none    | nothing: no probe                                       |
//!
//! `Config.Shell` is the container's own (its create request's): the engine does not merge an
//! image's `SHELL` into it (seen on 20.10, and moby's merge of image and container config has
//! no shell line up to 26), so an image with `SHELL ["/bin/busybox", "sh", "-c"]` still probes
//! with `/bin/sh -c`. berth reads it from the inspect either way.
//!
//! [`HealthProbe::of`] is that table as a pure function; [`learn`] asks the engine for its
//! inputs. Nothing here guesses from berth's own spec label: an image's `HEALTHCHECK` is known
//! only to the engine.

use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerInspectResponse;

/// How long [`learn`] waits for an inspect: it runs beside the event follower, and a slow
/// engine must not hold a container's events for long.
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The exec a container's health probe shows up as, or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthProbe {
    /// The container runs no health probe (no healthcheck, or `NONE`).
    None,
    /// Every probe is an `exec_start` event with exactly this action text.
    Exec(String),
}

impl HealthProbe {
    /// The probe of a container whose effective healthcheck test is `test` and whose shell is
    /// `shell` (`Config.Shell`, empty when the image sets none), on an engine of `os`
    /// (the inspect's `Platform`: `linux`, `windows`).
    pub fn of(test: &[String], shell: &[String], os: &str) -> HealthProbe {
        let command: Vec<&str> = match test.split_first() {
            Some((kind, args)) if kind == "CMD" => args.iter().map(String::as_str).collect(),
            Some((kind, args)) if kind == "CMD-SHELL" => {
                let default: &[&str] = if os == "windows" { &["cmd", "/S", "/C"] } else { &["/bin/sh", "-c"] };
                let shell: Vec<&str> =
                    if shell.is_empty() { default.to_vec() } else { shell.iter().map(String::as_str).collect() };
                shell.into_iter().chain(args.iter().map(String::as_str)).collect()
            }
            // `NONE`, an empty test or an unknown kind: the engine starts no probe.
            _ => return HealthProbe::None,
        };
        match command.split_first() {
            // The engine's own format: entrypoint, one space, the arguments joined by spaces.
            Some((entrypoint, args)) => HealthProbe::Exec(format!("exec_start: {entrypoint} {}", args.join(" "))),
            // `["CMD"]` alone: the engine cannot start it.
            None => HealthProbe::None,
        }
    }

    /// The probe of an inspected container.
    pub fn of_inspect(c: &ContainerInspectResponse) -> HealthProbe {
        let config = c.config.as_ref();
        let test = config.and_then(|c| c.healthcheck.as_ref()).and_then(|h| h.test.as_deref()).unwrap_or_default();
        let shell = config.and_then(|c| c.shell.as_deref()).unwrap_or_default();
        HealthProbe::of(test, shell, c.platform.as_deref().unwrap_or("linux"))
    }

    /// Whether an event's action (`exec_start: /echo --probe`) is one of this probe's runs.
    pub fn runs_as(&self, action: &str) -> bool {
        matches!(self, HealthProbe::Exec(a) if a == action)
    }
}

/// Why a container's probe could not be learned.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("inspect container {id}: {message}")]
    Inspect { id: String, message: String },
    #[error("inspect container {id}: no answer within {}s", INSPECT_TIMEOUT.as_secs())]
    Timeout { id: String },
}

/// Inspect container `id` (bounded by [`INSPECT_TIMEOUT`]) and return its health probe.
///
/// The inspect also waits for the container's lock, which the engine holds while it records
/// an exit: after a `die`, a list made once this returns shows the container stopped (see
/// `events::follow`).
pub async fn learn(docker: &Docker, id: &str) -> Result<HealthProbe, LearnError> {
    match tokio::time::timeout(INSPECT_TIMEOUT, docker.inspect_container(id, None)).await {
        Ok(Ok(c)) => Ok(HealthProbe::of_inspect(&c)),
        Ok(Err(e)) => Err(LearnError::Inspect { id: id.to_string(), message: super::message_of(&e) }),
        Err(_) => Err(LearnError::Timeout { id: id.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn exec(text: &str) -> HealthProbe {
        HealthProbe::Exec(text.to_string())
    }

    /// (test, shell, os) → the action text the engine emits for each probe (or no probe).
    #[test]
    fn the_probe_is_the_engines_exact_event_text() {
        let table: &[(&[&str], &[&str], &str, HealthProbe)] = &[
            (&["CMD", "/echo", "--probe"], &[], "linux", exec("exec_start: /echo --probe")),
            // One argument: the engine still puts the space before the (empty) argument list.
            (&["CMD", "/probe"], &[], "linux", exec("exec_start: /probe ")),
            (&["CMD", "pg_isready", "-h", "127.0.0.1"], &[], "linux", exec("exec_start: pg_isready -h 127.0.0.1")),
            // The shell of a CMD-SHELL check is the container's, default /bin/sh -c.
            (
                &["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/"],
                &[],
                "linux",
                exec("exec_start: /bin/sh -c wget -q -O- http://127.0.0.1:8080/"),
            ),
            (
                &["CMD-SHELL", "curl -f localhost || exit 1"],
                &["/bin/busybox", "sh", "-c"],
                "linux",
                exec("exec_start: /bin/busybox sh -c curl -f localhost || exit 1"),
            ),
            (
                &["CMD-SHELL", "curl -f localhost"],
                &["/bin/bash", "-o", "pipefail", "-c"],
                "linux",
                exec("exec_start: /bin/bash -o pipefail -c curl -f localhost"),
            ),
            (&["CMD-SHELL", "dir"], &[], "windows", exec("exec_start: cmd /S /C dir")),
            // A SHELL override does not touch an exec-form check.
            (&["CMD", "/echo", "--probe"], &["/bin/busybox", "sh", "-c"], "linux", exec("exec_start: /echo --probe")),
            // An argument with spaces is joined as it is: the event text cannot tell them apart.
            (&["CMD", "/bin/check", "a b"], &[], "linux", exec("exec_start: /bin/check a b")),
            (&["NONE"], &[], "linux", HealthProbe::None),
            (&[], &[], "linux", HealthProbe::None),
            (&["CMD"], &[], "linux", HealthProbe::None),
            (&["BOGUS", "x"], &[], "linux", HealthProbe::None),
        ];
        for (test, shell, os, want) in table {
            assert_eq!(&HealthProbe::of(&v(test), &v(shell), os), want, "{test:?} {shell:?} {os}");
        }
    }

    #[test]
    fn a_probe_matches_only_its_own_text() {
        let p = HealthProbe::of(&v(&["CMD", "/probe"]), &[], "linux");
        assert!(p.runs_as("exec_start: /probe "));
        assert!(!p.runs_as("exec_start: /probe"));
        assert!(!p.runs_as("exec_start: /probe --other"));
        assert!(!HealthProbe::None.runs_as("exec_start: /probe "));
    }

    #[test]
    fn an_inspect_gives_the_merged_healthcheck_and_shell() {
        let c: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Platform": "linux",
            "Config": {
                "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/"], "Interval": 1000000000},
                "Shell": ["/bin/busybox", "sh", "-c"]
            }
        }))
        .expect("an inspect");
        assert_eq!(
            HealthProbe::of_inspect(&c),
            exec("exec_start: /bin/busybox sh -c wget -q -O- http://127.0.0.1:8080/")
        );
        let bare: ContainerInspectResponse =
            serde_json::from_value(serde_json::json!({"Config": {}})).expect("an inspect");
        assert_eq!(HealthProbe::of_inspect(&bare), HealthProbe::None);
    }
}
