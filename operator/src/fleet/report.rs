//! What a run says: per set, converged, paused, held, failed (the revision's fault: the
//! host, the container, what it did) or stopped by an error that is not the revision's; each
//! by kind, so the CLI, the operator and the metrics decide on kinds, not on text.

use super::history::HistoryError;
use super::prepare::RebuildError;
use crate::docker::{DockerError, HostOutcome};
use crate::engine::SetKey;
use crate::engine::history::History;
use crate::engine::order::Unmet;

/// Why a set could not finish its run for a reason that is not its revision's: nothing is
/// recorded as failed or rolled back, and the next run tries again.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RunError {
    /// A host's engine failed a step.
    #[error("host {host}: {source}")]
    Host { host: String, source: DockerError },
    /// A host could not be looked at during the `minReadySeconds` window.
    #[error("host {host}: minReadySeconds check: {source}")]
    MinReadyCheck { host: String, source: DockerError },
    /// The set's history could not be read or written.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A recorded revision to go back to no longer resolves (say, a Secret it used is gone).
    #[error("revision {number} cannot be rebuilt: {source}")]
    Rebuild { number: u64, source: RebuildError },
}

/// What went wrong after a revision failed: recording it, or going back.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no earlier revision was ready everywhere")]
    NothingToGoBackTo,
    /// Recording the failure, or rebuilding the revision to go back to.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Hosts that could not be brought back (the others were).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Hosts(Vec<RunError>),
}

impl RunError {
    /// The kind, for decisions and metric labels: the host's error kind, `history` or `rebuild`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Host { source, .. } | RunError::MinReadyCheck { source, .. } => source.kind().as_str(),
            RunError::History(_) => "history",
            RunError::Rebuild { .. } => "rebuild",
        }
    }
}

impl FailureReason {
    /// `not_ready` or `did_not_stay_ready`, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FailureReason::NotReady(_) => "not_ready",
            FailureReason::DidNotStayReady { .. } => "did_not_stay_ready",
        }
    }
}

/// Why a rollout stopped: the host, the container, what happened.
#[derive(Clone, Debug)]
pub struct Failure {
    pub host: String,
    pub container: Option<String>,
    pub reason: FailureReason,
}

/// What the revision's container did.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FailureReason {
    /// It exited, turned unhealthy, or missed `progressDeadlineSeconds`
    /// ([`DockerError::not_ready`]).
    #[error(transparent)]
    NotReady(DockerError),
    /// `minReadySeconds`: it was restarted, or stopped being ready, inside the window.
    #[error("did not stay ready for {seconds}s (minReadySeconds): {detail}")]
    DidNotStayReady { seconds: u64, detail: String },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = self.reason.to_string();
        match &self.container {
            Some(c) if !reason.contains(c.as_str()) => write!(f, "host {}: container {c}: {reason}", self.host),
            _ => write!(f, "host {}: {reason}", self.host),
        }
    }
}

/// How one set's part of the run ended.
#[derive(Clone, Debug)]
pub enum SetResult {
    /// Every reachable host runs the revision the run aimed for.
    Converged,
    /// `spec.paused`: the changes wait.
    Paused { pending: usize },
    /// The declared revision failed before (or was rolled back) and is not retried until the
    /// spec changes; the set stays on `fallback` if there is one.
    Held { revision: String, number: u64, fallback: Option<u64>, message: Option<String>, by_hand: bool },
    /// The revision failed in this run.
    Failed { failure: Failure, rolled_back_to: Option<u64>, rollback_error: Option<RollbackError> },
    /// A step failed for a reason that is not the revision's (a pull, the engine); retried
    /// next time.
    Error(RunError),
    /// `dependsOn` not satisfied on these hosts: the set's new containers were not created
    /// there (its old ones serve on); the next run tries again.
    Waiting(Vec<Unmet>),
}

/// One set's part of the run.
#[derive(Clone, Debug)]
pub struct SetReport {
    pub key: SetKey,
    /// The revision the run aimed for (a fallback when held).
    pub revision: Option<String>,
    pub result: SetResult,
    /// Hosts of the set that could not be reached; the others went on.
    pub unreachable: Vec<String>,
    /// History as it stands after the run, when the run read it.
    pub history: Option<History>,
}

/// What a run did.
pub struct FleetReport {
    /// Per view: what its execution did.
    pub outcomes: Vec<Vec<HostOutcome>>,
    pub sets: Vec<SetReport>,
}
