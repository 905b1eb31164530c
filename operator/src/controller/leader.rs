//! Lease-based leader election: only the replica holding the Lease touches hosts.
//!
//! Plain optimistic concurrency on a `coordination.k8s.io/v1` Lease: read it, and take or
//! renew it with an update carrying the read resourceVersion; a 409 Conflict means another
//! replica won the race. A holder that stops renewing loses the Lease once
//! `leaseDurationSeconds` have passed since its last renewal, and a standby takes over.
//! (kube-lease-manager does the same over server-side apply; this is the few lines it takes
//! with the semantics every API server guarantees, and it is what our tests can exercise.)

use std::time::Duration;

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

/// Try once to take or renew the Lease. `Ok(true)`: this replica leads until
/// `now + duration`.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs() as i32),
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
    let expired = match (&current.renew_time, current.lease_duration_seconds) {
        (Some(MicroTime(renewed)), Some(secs)) => {
            now.as_millisecond() > renewed.as_millisecond() + i64::from(secs) * 1000
        }
        _ => true,
    };
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
    loop {
        match try_acquire(api, cfg).await {
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
    loop {
        tokio::time::sleep(cfg.duration / 3).await;
        match try_acquire(api, cfg).await {
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
