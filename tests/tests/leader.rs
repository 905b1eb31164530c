//! Leader election with skewed clocks, against the fake Kubernetes API's Leases.
//!
//! A replica must judge a Lease by what it *observes* change, on its own clock: a holder whose
//! clock is an hour behind but keeps renewing is alive; a holder whose `renewTime` is an hour
//! in the future but that stopped renewing is dead after `leaseDurationSeconds` of local time.

use std::time::{Duration, Instant};

use berth::controller::leader::{LeaseConfig, Observer, try_acquire};
use berth_tests::*;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};

const LEASE: &str = "berth-leader";

fn candidate(ns: &str) -> LeaseConfig {
    LeaseConfig {
        name: LEASE.into(),
        namespace: ns.into(),
        identity: "candidate".into(),
        duration: Duration::from_secs(1),
    }
}

/// A Lease held by `other` for 1 s, renewed at `renewed` (by the holder's clock).
fn held_by_other(ns: &str, renewed: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta { name: Some(LEASE.into()), namespace: Some(ns.into()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some("other".into()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    }
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_an_hour_behind_that_keeps_renewing_is_never_taken() {
    let ns = unique_ns("leader-behind");
    let (_fake, client) = fake_cluster(&ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let behind = Timestamp::now() - SignedDuration::from_hours(1);
    leases.create(&PostParams::default(), &held_by_other(&ns, behind)).await.unwrap();

    // The holder renews every 300 ms, stamping its own (an hour slow) clock.
    let renewer = {
        let leases = leases.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let Ok(mut lease) = leases.get(LEASE).await else { continue };
                if holder(&lease).as_deref() != Some("other") {
                    return;
                }
                let renewed = behind + SignedDuration::try_from(started.elapsed()).unwrap();
                lease.spec.as_mut().unwrap().renew_time = Some(MicroTime(renewed));
                let _ = leases.replace(LEASE, &PostParams::default(), &lease).await;
            }
        })
    };

    // The candidate tries as its acquire loop does, over four lease durations of local time.
    let cfg = candidate(&ns);
    let mut observer = Observer::default();
    let started = Instant::now();
    let mut tries = 0;
    while started.elapsed() < cfg.duration * 4 {
        assert!(
            !try_acquire(&leases, &cfg, &mut observer).await.unwrap(),
            "the candidate took a Lease whose holder kept renewing (try {tries}, after {:?})",
            started.elapsed()
        );
        tries += 1;
        tokio::time::sleep(cfg.duration / 4).await;
    }
    assert!(tries >= 12, "the candidate tried {tries} times");
    assert_eq!(holder(&leases.get(LEASE).await.unwrap()).as_deref(), Some("other"));
    renewer.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_an_hour_ahead_that_stopped_renewing_is_taken_after_the_lease_duration() {
    let ns = unique_ns("leader-ahead");
    let (_fake, client) = fake_cluster(&ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let ahead = Timestamp::now() + SignedDuration::from_hours(1);
    leases.create(&PostParams::default(), &held_by_other(&ns, ahead)).await.unwrap();

    let cfg = candidate(&ns);
    let mut observer = Observer::default();
    let started = Instant::now();
    loop {
        if try_acquire(&leases, &cfg, &mut observer).await.unwrap() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the dead holder's Lease was never taken");
        tokio::time::sleep(cfg.duration / 4).await;
    }
    let took = started.elapsed();
    assert!(took >= cfg.duration, "taken after {took:?}, before a lease duration of local time passed");
    assert_eq!(holder(&leases.get(LEASE).await.unwrap()).as_deref(), Some("candidate"));
    println!("a Lease with renewTime an hour ahead, not renewed, taken after {took:?} (duration 1 s)");
}
