//! Converging a fleet: the hosts of a run, observed, planned, and rolled out set by set.
//!
//! Both modes come through here: `berth apply` with hosts from files, the operator with one
//! ContainerSet and its DockerHosts. The engine decides (what changes on a host, in which
//! waves, what history says); this module does the waiting and calls the Docker adapter.
//!
//! A run: [`observe_all`] → [`prepare`] (plan every host; for a set with pending changes,
//! read its history: a revision that failed or was rolled back is *held* and the set stays on
//! (or returns to) its last ready revision) → [`execute`] (removals first, then each set's
//! waves, `maxUnavailable` disruptive hosts at a time, each gated on readiness and
//! `minReadySeconds`; a failed revision is recorded and, with `autoRollback`, every host it
//! reached goes back).

pub mod history;
pub mod images;
mod min_ready;
mod prepare;
mod record;
mod report;
mod rollback;
mod waves;

use bollard::Docker;

pub use prepare::{Held, Prepared, Rebuild, RebuildError, prepare, prepare_consulting};
pub use report::{Failure, FailureReason, FleetReport, RollbackError, RunError, SetReport, SetResult};
pub use waves::{RunContext, execute};

use std::collections::HashMap;

use crate::docker::{self, DockerError};

use crate::engine::pin::ImagePolicy;
use crate::engine::{HostPlan, ObservedContainer, SetKey, plan_host};
use crate::target::{HostTarget, SetRuntime};

/// One host as observed for this run.
pub struct HostView {
    pub target: HostTarget,
    pub docker: Option<Docker>,
    pub observed: Result<Vec<ObservedContainer>, DockerError>,
}

/// Connect to and observe every host, concurrently: one request per host
/// ([`docker::connect::connect_observe`]). A host that fails is reported, not fatal.
pub async fn observe_all(targets: Vec<HostTarget>) -> Vec<HostView> {
    let views = targets.into_iter().map(|target| async move {
        match docker::connect::connect_observe(&target.endpoint).await {
            Ok((docker, observed)) => HostView { target, docker: Some(docker), observed },
            Err(e) => HostView { target, docker: None, observed: Err(e) },
        }
    });
    futures::future::join_all(views).await
}

/// Pin every set's image to one digest for all its hosts, rewriting the views' desired state
/// (see [`crate::docker::pin`]).
pub async fn pin_images(
    views: &mut [HostView],
    policies: &HashMap<SetKey, ImagePolicy>,
    runtime: &HashMap<SetKey, SetRuntime>,
) -> docker::pin::PinReport {
    docker::pin::pin_images(
        views
            .iter_mut()
            .map(|v| docker::pin::PinHost::new(&mut v.target, v.docker.as_ref(), v.observed.as_deref().ok())),
        policies,
        runtime,
    )
    .await
}

/// Plan every host that could be observed.
pub fn plan_all(views: &[HostView]) -> Vec<Option<HostPlan>> {
    views
        .iter()
        .map(|v| v.observed.as_ref().ok().map(|obs| plan_host(&v.target.name, &v.target.desired, obs, &v.target.scope)))
        .collect()
}
