//! How long each Docker call may take, and which ones are tried again.
//!
//! One flat client timeout fits no call: a list answers in milliseconds, a stop takes the
//! container's whole grace period, a pull takes as long as the registry does. So every call
//! site names its bound here and wraps its call in [`within`] (or [`read`] for idempotent
//! reads, which are tried again with backoff when the engine did not answer). A call that runs
//! past its bound fails as [`DockerError::Timeout`], naming the host, the call and the bound.
//!
//! bollard's own client timeout only bounds the wait for a response's *head* (a stream's body,
//! e.g. `/events` or a pull's progress, is not cut by it); it stays as a backstop for calls no
//! bound here covers ([`BACKSTOP_SECS`]).

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::DockerError;

/// The client timeout bollard applies to every response head: a backstop only.
pub const BACKSTOP_SECS: u64 = 120;
/// A label-filtered container list (observe): the largest read, still fast on any engine.
pub const LIST: Duration = Duration::from_secs(5);
/// Inspects (container, image, network, volume) and `/version`, `/info`.
pub const READ: Duration = Duration::from_secs(3);
/// Create, start, remove, rename, connect; networks and volumes.
pub const CHANGE: Duration = Duration::from_secs(30);
/// Docker's stop grace when the container sets none.
pub const DEFAULT_GRACE_SECONDS: u64 = 10;
/// What a stop may take beyond the grace: the kill after it and the engine's bookkeeping.
pub const STOP_MARGIN: Duration = Duration::from_secs(15);
/// A pull that sends no progress message for this long is stalled.
pub const PULL_IDLE: Duration = Duration::from_secs(60);
/// A build's overall bound when its caller sets none. Long on purpose: a build runs the
/// Dockerfile's own commands (compilers, package installs) and may pull base images, and none
/// of that says how long it takes; a build also sends no output while one step runs, so no
/// idle bound fits it either. Thirty minutes is what a CI job would allow one image.
pub const BUILD: Duration = Duration::from_secs(30 * 60);
/// A carry (one engine's `docker save` streamed into another's `docker load`): long, because
/// it moves the whole image at disk and link speed (the real-servers image is ~450 MB; a
/// slow link or a busy disk makes that minutes) and the load then unpacks every layer before
/// it answers. Stalls are caught sooner by [`CARRY_IDLE`].
pub const CARRY: Duration = Duration::from_secs(30 * 60);
/// A carry during which no byte moves from the exporting engine to the loading one for this
/// long is stalled (one engine stopped sending, or the other stopped reading).
pub const CARRY_IDLE: Duration = Duration::from_secs(60);
/// How long a carry may wait for the export's first byte: Docker 20.10's export writes the
/// whole image into a temporary folder before it sends anything, which for a large image takes
/// minutes on a slow disk.
pub const CARRY_START: Duration = Duration::from_secs(10 * 60);
/// A push's overall bound: every layer goes up to the registry, at the link's speed, as for
/// a carry.
pub const PUSH: Duration = Duration::from_secs(30 * 60);
/// A push that sends no progress message for this long is stalled (the engine reports each
/// layer's upload as it goes).
pub const PUSH_IDLE: Duration = Duration::from_secs(60);
/// Tries of an idempotent read, the first included.
pub const READ_TRIES: usize = 2;
/// The first pause before a read is tried again (doubled for each further try).
pub const RETRY_DELAY: Duration = Duration::from_millis(200);

/// A stop's grace (what the engine is told to wait before it kills) and the bound of the call.
/// `configured` is the container's own `StopTimeout` (its spec's `stopGracePeriodSeconds`).
pub fn stop(configured: Option<i64>) -> (i32, Duration) {
    let grace = configured.filter(|g| *g >= 0).map(|g| g as u64).unwrap_or(DEFAULT_GRACE_SECONDS);
    let grace = grace.min(i32::MAX as u64);
    (grace as i32, Duration::from_secs(grace) + STOP_MARGIN)
}

/// A pull's overall bound: the set's `progressDeadlineSeconds` (a pull is part of the progress
/// it bounds), never less than [`PULL_IDLE`].
pub fn pull(progress_deadline: Duration) -> Duration {
    progress_deadline.max(PULL_IDLE)
}

/// The error of a call that ran past `bound`.
pub fn timed_out(host: &str, call: &str, bound: Duration) -> DockerError {
    DockerError::Timeout { host: host.to_string(), call: call.to_string(), seconds: bound.as_secs_f64() }
}

/// Run `fut` within `bound`. The outer error is the timeout; the inner result is the call's own,
/// unchanged, so call sites keep telling a 404 from a 409.
pub async fn within<T, E>(
    host: &str,
    call: &str,
    bound: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, DockerError> {
    tokio::time::timeout(bound, fut).await.map_err(|_| timed_out(host, call, bound))
}

/// One try of a read: no answer within the bound, or the engine's (or the transport's) error.
enum Attempt {
    TimedOut,
    Failed(bollard::errors::Error),
}

impl Attempt {
    /// Worth another try: the engine did not answer, or the connection failed on the way. An
    /// answer (an HTTP error) is final, and so is a TLS failure (a certificate does not heal).
    fn transient(&self) -> bool {
        match self {
            Attempt::TimedOut => true,
            Attempt::Failed(bollard::errors::Error::DockerResponseServerError { .. }) => false,
            Attempt::Failed(e) => !super::is_tls_failure(e),
        }
    }
}

/// An idempotent read (list, inspect, version, distribution inspect) within `bound` per try,
/// tried [`READ_TRIES`] times with exponential backoff while it gets no answer.
pub async fn read<T, F, Fut>(
    host: &str,
    call: &str,
    bound: Duration,
    mut f: F,
) -> Result<Result<T, bollard::errors::Error>, DockerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, bollard::errors::Error>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(RETRY_DELAY)
        .with_max_times(READ_TRIES.saturating_sub(1))
        .with_jitter();
    let once = || {
        let fut = f();
        async move {
            match tokio::time::timeout(bound, fut).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(Attempt::Failed(e)),
                Err(_) => Err(Attempt::TimedOut),
            }
        }
    };
    let r = once
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(Attempt::transient)
        .notify(|a: &Attempt, pause: Duration| {
            let why = match a {
                Attempt::TimedOut => format!("no answer within {}s", bound.as_secs_f64()),
                Attempt::Failed(e) => super::message_of(e),
            };
            tracing::debug!(host, call, error = %why, pause_ms = pause.as_millis() as u64, "trying the read again");
        })
        .await;
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(Attempt::Failed(e)) => Ok(Err(e)),
        Err(Attempt::TimedOut) => Err(timed_out(host, call, bound)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_stop_is_bounded_by_its_own_grace_plus_a_margin() {
        let (grace, bound) = stop(Some(300));
        assert_eq!(grace, 300);
        assert!(bound > Duration::from_secs(300), "{bound:?}");
        assert!(bound > Duration::from_secs(BACKSTOP_SECS), "a 300 s grace outlives the client backstop: {bound:?}");
        assert_eq!(stop(None), (10, Duration::from_secs(10) + STOP_MARGIN));
        assert_eq!(stop(Some(-1)).0, 10);
        assert_eq!(stop(Some(0)), (0, STOP_MARGIN));
    }

    #[test]
    fn a_pull_is_bounded_by_the_progress_deadline() {
        assert_eq!(pull(Duration::from_secs(600)), Duration::from_secs(600));
        assert_eq!(pull(Duration::from_secs(1)), PULL_IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_bound_names_host_call_and_bound() {
        let never = futures::future::pending::<Result<(), bollard::errors::Error>>();
        let e = within("a", "stop container x", Duration::from_secs(25), never).await.unwrap_err();
        assert_eq!(e.to_string(), "stop container x on a got no answer within 25s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_stalls_once_is_tried_again() {
        let tries = AtomicUsize::new(0);
        let r = read("a", "list containers", READ, || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    futures::future::pending::<()>().await;
                }
                Ok::<_, bollard::errors::Error>(n)
            }
        })
        .await;
        assert_eq!(r.unwrap().unwrap(), 1);
        assert_eq!(tries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_never_answers_fails_after_its_tries() {
        let tries = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let r = read("a", "list containers", LIST, || {
            tries.fetch_add(1, Ordering::SeqCst);
            futures::future::pending::<Result<(), bollard::errors::Error>>()
        })
        .await;
        assert!(matches!(r, Err(DockerError::Timeout { .. })));
        assert_eq!(tries.load(Ordering::SeqCst), READ_TRIES);
        assert!(started.elapsed() < LIST * READ_TRIES as u32 + Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_answer_is_not_tried_again() {
        let tries = AtomicUsize::new(0);
        let r = read("a", "inspect container x", READ, || {
            tries.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<(), _>(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message: "no such container".into(),
                })
            }
        })
        .await;
        assert!(matches!(r, Ok(Err(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
