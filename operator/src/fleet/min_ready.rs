//! `minReadySeconds` means "stayed ready the whole time": every container of the revision is
//! marked (start time, restart count, readiness) as its wave becomes ready and again after
//! the window; a restart or a lapse inside it fails the revision. A host that cannot be
//! looked at is the host's error, not the revision's.

use std::time::Duration;

use super::HostView;
use super::report::{Failure, FailureReason, RunError};
use crate::docker::{self, DockerError};
use crate::engine::SetKey;
use crate::engine::rollout::{ReadyMark, stayed_ready};

/// How a `minReadySeconds` window ended when it did not end well.
pub(super) enum WindowEnd {
    /// A container of the revision did not stay ready: the revision failed.
    Failed(Failure),
    /// A host could not be looked at: a host error, not the revision's.
    HostError(RunError),
}

/// `minReadySeconds`: mark every container of the revision on `hosts` (inspect: start time,
/// restart count) as the wave becomes ready, wait the window, mark again; each must have
/// stayed ready the whole time ([`stayed_ready`]), not just look ready at the end.
pub(super) async fn min_ready_window(
    views: &[HostView],
    hosts: &[usize],
    key: &SetKey,
    revision: &str,
    min_ready: Duration,
) -> Result<(), WindowEnd> {
    let mark_all = || futures::future::join_all(hosts.iter().map(|&i| ready_marks(&views[i], key, revision)));
    let at_start = mark_all().await;
    tokio::time::sleep(min_ready).await;
    let at_end = mark_all().await;
    for ((&i, start), end) in hosts.iter().zip(at_start).zip(at_end) {
        let host = &views[i].target.name;
        let (start, end) = match (start, end) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(e), _) | (_, Err(e)) => {
                return Err(WindowEnd::HostError(RunError::MinReadyCheck { host: host.clone(), source: e }));
            }
        };
        if let Err(n) = stayed_ready(&start, &end) {
            return Err(WindowEnd::Failed(Failure {
                host: host.clone(),
                container: Some(n.container),
                reason: FailureReason::DidNotStayReady { seconds: min_ready.as_secs(), detail: n.reason },
            }));
        }
    }
    Ok(())
}

/// The containers of `revision` of `key` on one host, each inspected. One that is gone by
/// the time it is inspected is left out (the comparison then finds it missing).
async fn ready_marks(view: &HostView, key: &SetKey, revision: &str) -> Result<Vec<ReadyMark>, DockerError> {
    let Some(d) = view.docker.as_ref() else { return Ok(Vec::new()) };
    let host = &view.target.name;
    let observed = docker::observe(host, d).await?;
    let mut marks = Vec::new();
    for c in observed.iter().filter(|c| &c.set == key && c.revision == revision) {
        let inspect =
            docker::bounds::read(host, "inspect container", docker::bounds::READ, || d.inspect_container(&c.id, None));
        let inspect = match inspect.await? {
            Ok(i) => i,
            Err(e) if docker::status_of(&e) == Some(404) => continue,
            Err(e) => return Err(DockerError::api("inspect container", &c.name, e)),
        };
        let state = inspect.state.unwrap_or_default();
        let running = state.running == Some(true) && state.restarting != Some(true);
        let health = state
            .health
            .as_ref()
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none");
        let ready = running && matches!(health.as_deref(), None | Some("healthy"));
        marks.push(ReadyMark {
            id: c.id.clone(),
            name: c.name.clone(),
            started_at: state.started_at.unwrap_or_default(),
            restart_count: inspect.restart_count.unwrap_or_default(),
            ready,
            state: match (&state.status, health) {
                (Some(s), Some(h)) => format!("{s}, {h}"),
                (Some(s), None) => s.to_string(),
                (None, _) => "unknown".into(),
            },
        });
    }
    Ok(marks)
}
