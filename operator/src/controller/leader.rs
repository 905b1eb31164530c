//! Lease-based leader election: only the replica holding the Lease touches hosts.
//!
//! Plain optimistic concurrency on a `coordination.k8s.io/v1` Lease: read it, and take or
//! renew it with an update carrying the read resourceVersion; a 409 Conflict means another
//! replica won the race.
//!
//! Expiry is judged on this replica's own monotonic clock, never by comparing the holder's
//! `renewTime` with this replica's wall clock (a skewed clock would then steal a live Lease,
//! or never take a dead one): as client-go does, the replica notes when it *observed* the
//! holder's record (holder, renewTime, resourceVersion) change ([`Observer`]); the Lease is
//! expired once that record stayed unchanged for `leaseDurationSeconds` of local time.
//! (kube-lease-manager, which updates over server-side apply, tolerates a configured skew
//! instead; it is not what this needs.)

use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

/// Who competes for which Lease, and for how long a claim holds.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// What this replica last saw of the holder's record, and when (on its own clock).
#[derive(Clone, Debug, Default)]
pub struct Observer {
    seen: Option<(Record, Instant)>,
}

/// The parts of a Lease whose change shows its holder is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    pub resource_version: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string()),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

impl Observer {
    /// Whether the holder let the Lease lapse: its record has not changed for `duration`
    /// since this replica first saw it as it is now. A changed record restarts the count.
    pub fn expired(&mut self, record: Record, now: Instant, duration: Duration) -> bool {
        match &self.seen {
            Some((seen, at)) if *seen == record => now.duration_since(*at) >= duration,
            _ => {
                self.seen = Some((record, now));
                duration.is_zero()
            }
        }
    }
}

/// Try once to take or renew the Lease. `Ok(true)`: this replica leads.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig, observer: &mut Observer) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs().max(1) as i32),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec(0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let mine = current.holder_identity.as_deref() == Some(cfg.identity.as_str());
    // The holder's own duration, on this replica's clock since its record last changed.
    let duration = Duration::from_secs(current.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    let expired = observer.expired(Record::of(&lease), Instant::now(), duration);
    if !mine && !expired && current.holder_identity.is_some() {
        return Ok(false);
    }
    let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!mine);
    let acquired = if mine { current.acquire_time.clone() } else { None };
    lease.spec = Some(spec(transitions, acquired));
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Wait until this replica holds the Lease.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaseConfig) {
    let mut observer = Observer::default();
    loop {
        match try_acquire(api, cfg, &mut observer).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "lease: cannot read or write"),
        }
        tokio::time::sleep(cfg.duration / 4).await;
    }
}

/// Keep renewing; returns when the Lease is lost (another replica took it, or renewals kept
/// failing past the duration) — the caller must then stop touching hosts.
pub async fn hold(api: &Api<Lease>, cfg: &LeaseConfig) {
    let mut last_ok = tokio::time::Instant::now();
    let mut observer = Observer::default();
    loop {
        tokio::time::sleep(cfg.duration / 3).await;
        match try_acquire(api, cfg, &mut observer).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "lease: renewal failed");
                // Give up before the Lease can lapse, so two replicas never act at once.
                if last_ok.elapsed() >= cfg.duration * 2 / 3 {
                    return;
                }
            }
        }
    }
}

/// Run `work` (the controllers, with every reconcile in flight) while `hold` keeps the Lease.
/// `None`: the Lease was lost, and `work` was dropped at once, mid-reconcile — no further
/// Docker call is made by this replica. A rollout cut off there is half done on the hosts;
/// their labels (revision, ordinal) say how far it got, and the next leader's first reconcile
/// of the set observes that and carries on from there, as after a crash.
pub async fn lead_while<W: std::future::Future>(
    hold: impl std::future::Future<Output = ()>,
    work: W,
) -> Option<W::Output> {
    tokio::select! {
        // Biased: once the Lease is lost, the work is not polled again.
        biased;
        () = hold => None,
        out = work => Some(out),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn host_work_in_flight_stops_when_the_lease_is_lost() {
        let steps = Arc::new(AtomicUsize::new(0));
        let work = {
            let steps = steps.clone();
            async move {
                // A rollout: one host step a second.
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    steps.fetch_add(1, Ordering::SeqCst);
                }
            }
        };
        let lost = tokio::time::sleep(Duration::from_millis(2500));
        let started = Instant::now();
        assert!(lead_while(lost, work).await.is_none(), "the Lease was lost");
        assert_eq!(started.elapsed(), Duration::from_millis(2500), "returned as soon as hold did");
        let done = steps.load(Ordering::SeqCst);
        assert_eq!(done, 2, "the steps before the loss ran");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(steps.load(Ordering::SeqCst), done, "no step after the loss");
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_ends_while_leading_returns_its_output() {
        let hold = futures::future::pending::<()>();
        assert_eq!(lead_while(hold, async { 7 }).await, Some(7));
    }

    fn record(holder: &str, renewed: &str, version: &str) -> Record {
        Record { holder: Some(holder.into()), renew_time: Some(renewed.into()), resource_version: Some(version.into()) }
    }

    const LEASE: Duration = Duration::from_secs(15);

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_keeps_renewing_never_expires_whatever_its_clock_says() {
        let mut observer = Observer::default();
        // renewTime an hour behind this replica's clock: only its changes count.
        for i in 0..20 {
            let r = record("other", &format!("2026-01-01T00:00:{i:02}Z"), &i.to_string());
            assert!(!observer.expired(r, Instant::now(), LEASE), "renewal {i}");
            tokio::time::advance(LEASE / 2).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_unchanged_for_the_duration_expires_even_with_a_future_renew_time() {
        let mut observer = Observer::default();
        let r = record("other", "2099-01-01T00:00:00Z", "7");
        assert!(!observer.expired(r.clone(), Instant::now(), LEASE), "first seen: the count starts");
        tokio::time::advance(LEASE - Duration::from_millis(1)).await;
        assert!(!observer.expired(r.clone(), Instant::now(), LEASE));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(observer.expired(r, Instant::now(), LEASE), "unchanged for a full duration of local time");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_holder_restarts_the_count() {
        let mut observer = Observer::default();
        assert!(!observer.expired(record("a", "t1", "1"), Instant::now(), LEASE));
        tokio::time::advance(LEASE).await;
        assert!(!observer.expired(record("b", "t1", "2"), Instant::now(), LEASE));
        tokio::time::advance(LEASE).await;
        assert!(observer.expired(record("b", "t1", "2"), Instant::now(), LEASE));
    }
}
