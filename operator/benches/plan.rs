//! The planner at fleet scale (issue 5, item 3): plan every host of a 10,000-host fleet that
//! runs N = 1k … 1M managed containers, on one core, for three scenarios:
//!
//! - `converged`: every host runs what it should; every plan is empty;
//! - `one-set-changed`: one set got a new env value; only its hosts get changes;
//! - `one-host-lost`: one host's observation is missing; the other hosts are planned.
//!
//! Criterion measures N up to 100k. Every size, 1M included, is also timed by a short loop of
//! our own that prints the per-container cost in CPU time of the planning thread (wall time
//! beside it), so linearity shows at a glance:
//! `plan converged  N=1000000  hosts=10000  cpu=0.830s  per-container=830ns  (wall 0.84s; …)`.
//!
//! Run: `cargo bench -p berth --bench plan` (add `-- --quick` for a faster, rougher run).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use berth::engine::{
    ContainerSpec, DesiredSet, EnvValue, Health, HealthSpec, ObservedContainer, Order, PortSpec, Pull, Scope,
    SecretString, SetKey, State, plan_host,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const HOSTS: usize = 10_000;
/// Replicas of a set on each host it is placed on.
const REPLICAS: u32 = 4;
/// Hosts each set is placed on.
const HOSTS_PER_SET: usize = 5;
const PER_SET: usize = REPLICAS as usize * HOSTS_PER_SET;
const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Sizes criterion samples; 1M is timed by our own loop only, to keep the run short.
const CRITERION_SIZES: [usize; 3] = [1_000, 10_000, 100_000];

/// The whole fleet as the planner sees it: per host, the sets placed there and what it reported.
struct Fleet {
    containers: usize,
    desired: Vec<Vec<DesiredSet>>,
    /// `None`: the host did not answer (lost); it is not planned.
    observed: Vec<Option<Vec<ObservedContainer>>>,
    scope: Scope,
    sets: Vec<DesiredSet>,
}

/// A service's spec as people write them: image, command, env (one value from a Secret), one
/// port, a healthcheck, limits and a label.
fn spec(i: usize) -> ContainerSpec {
    let team = i % 20;
    ContainerSpec {
        image: format!("registry.example.com/team-{team}/svc-{i}:1.4.2"),
        cmd: Some(vec!["/app/server".into(), "--listen=:8080".into()]),
        env: BTreeMap::from([
            ("LOG_LEVEL".into(), EnvValue::Plain("info".into())),
            ("SERVICE_NAME".into(), EnvValue::Plain(format!("svc-{i}"))),
            ("DATABASE_URL".into(), EnvValue::Plain(format!("postgres://db.team-{team}:5432/svc_{i}"))),
            ("API_TOKEN".into(), EnvValue::Secret { value: SecretString::new(format!("token-{i}")) }),
        ]),
        ports: vec![PortSpec { container_port: 8080, protocol: "tcp".into(), host_port: None, host_ip: String::new() }],
        healthcheck: Some(HealthSpec {
            test: vec!["CMD".into(), "/app/server".into(), "--health".into()],
            interval_ns: Some(10_000_000_000),
            timeout_ns: Some(2_000_000_000),
            start_period_ns: None,
            retries: Some(3),
        }),
        restart_policy: "unless-stopped".into(),
        memory_bytes: Some(256 << 20),
        nano_cpus: Some(500_000_000),
        labels: BTreeMap::from([("app".into(), format!("svc-{i}"))]),
        ..ContainerSpec::default()
    }
}

/// The hosts set `i` is placed on: consecutive, wrapping, so sets interleave on hosts.
fn hosts_of(i: usize) -> impl Iterator<Item = usize> {
    (0..HOSTS_PER_SET).map(move |k| (i * HOSTS_PER_SET + k) % HOSTS)
}

/// The containers berth made for `d` on one host, as its one list call reports them.
fn observe(d: &DesiredSet, set: usize, host: usize, spec_json: &str) -> impl Iterator<Item = ObservedContainer> {
    (0..d.replicas).map(move |o| ObservedContainer {
        id: format!("{set:024x}{o:08x}{host:032x}"),
        name: d.container_name(o),
        set: d.key.clone(),
        revision: d.revision.clone(),
        ordinal: Some(o),
        state: State::Running,
        health: Some(Health::Healthy),
        image: d.spec.image.clone(),
        spec_json: Some(spec_json.to_string()),
        host_bindings: Vec::new(),
        drift: None,
        exit_code: None,
    })
}

/// A converged fleet of `containers` managed containers over [`HOSTS`] hosts.
fn converged(containers: usize) -> Fleet {
    assert_eq!(containers % PER_SET, 0, "N must be a multiple of {PER_SET}");
    let sets: Vec<DesiredSet> = (0..containers / PER_SET)
        .map(|i| {
            let key = SetKey::new(format!("team-{}", i % 20), format!("svc-{i}"));
            DesiredSet::new(key, spec(i), REPLICAS, Order::StartFirst, Pull::IfNotPresent)
        })
        .collect();
    let mut desired: Vec<Vec<DesiredSet>> = vec![Vec::new(); HOSTS];
    let mut observed: Vec<Vec<ObservedContainer>> = vec![Vec::new(); HOSTS];
    for (i, d) in sets.iter().enumerate() {
        let spec_json = d.spec.canonical_json();
        for h in hosts_of(i) {
            desired[h].push(d.clone());
            observed[h].extend(observe(d, i, h, &spec_json));
        }
    }
    let scope = Scope::of_sets(sets.iter().map(|d| &d.key));
    Fleet { containers, desired, observed: observed.into_iter().map(Some).collect(), scope, sets }
}

/// Set 0 gets a new env value: a new revision, desired on its hosts only.
fn one_set_changed(containers: usize) -> (Fleet, Vec<usize>) {
    let mut fleet = converged(containers);
    let mut changed = fleet.sets[0].spec.clone();
    changed.env.insert("LOG_LEVEL".into(), EnvValue::Plain("debug".into()));
    let d = DesiredSet::new(fleet.sets[0].key.clone(), changed, REPLICAS, Order::StartFirst, Pull::IfNotPresent);
    assert_ne!(d.revision, fleet.sets[0].revision);
    let hosts: Vec<usize> = hosts_of(0).collect();
    for &h in &hosts {
        let slot = fleet.desired[h].iter_mut().find(|s| s.key == d.key).expect("set 0 is placed here");
        *slot = d.clone();
    }
    fleet.sets[0] = d;
    (fleet, hosts)
}

/// The busiest host stops answering: it has no observation and is not planned.
fn one_host_lost(containers: usize) -> (Fleet, usize) {
    let mut fleet = converged(containers);
    let lost = (0..HOSTS).max_by_key(|&h| fleet.desired[h].len()).unwrap();
    fleet.observed[lost] = None;
    (fleet, lost)
}

/// Plan every host that answered. Returns the hosts whose plan has changes.
fn plan_fleet(fleet: &Fleet) -> Vec<usize> {
    let mut changed = Vec::new();
    for (h, (desired, observed)) in fleet.desired.iter().zip(&fleet.observed).enumerate() {
        let Some(observed) = observed else { continue };
        let plan = plan_host(HOST_NAMES[h % HOST_NAMES.len()], desired, observed, &fleet.scope);
        if !plan.is_empty() {
            changed.push(h);
        }
        black_box(plan);
    }
    changed
}

/// Host names are the planner's input, not what is measured; a handful stands in for all.
const HOST_NAMES: [&str; 4] = ["host-a.example.com", "host-b.example.com", "host-c.example.com", "host-d.example.com"];

/// What each scenario means, checked before anything is timed.
fn check_converged(fleet: &Fleet) {
    assert!(plan_fleet(fleet).is_empty(), "converged: every plan is empty");
}

fn check_one_set_changed(fleet: &Fleet, hosts: &[usize]) {
    let changed = plan_fleet(fleet);
    assert_eq!(changed, hosts, "one set changed: exactly its hosts have changes");
    for &h in hosts {
        let plan = plan_host("h", &fleet.desired[h], fleet.observed[h].as_ref().unwrap(), &fleet.scope);
        assert_eq!(plan.sets.len(), 1, "only the changed set");
        assert_eq!(plan.sets[0].set, fleet.sets[0].key);
        assert_eq!(plan.change_count(), REPLICAS as usize, "each replica replaced");
    }
}

fn check_one_host_lost(fleet: &Fleet, lost: usize) {
    assert!(fleet.observed[lost].is_none() && !fleet.desired[lost].is_empty());
    assert!(plan_fleet(fleet).is_empty(), "one host lost: the others are converged");
}

/// One scenario at one size, built and checked.
fn scenario(name: &str, n: usize) -> Fleet {
    match name {
        "converged" => {
            let f = converged(n);
            check_converged(&f);
            f
        }
        "one-set-changed" => {
            let (f, hosts) = one_set_changed(n);
            check_one_set_changed(&f, &hosts);
            f
        }
        "one-host-lost" => {
            let (f, lost) = one_host_lost(n);
            check_one_host_lost(&f, lost);
            f
        }
        _ => unreachable!(),
    }
}

const SCENARIOS: [&str; 3] = ["converged", "one-set-changed", "one-host-lost"];

/// The median of a few whole-fleet plans, printed with the per-container cost.
fn per_container_lines() {
    for name in SCENARIOS {
        for n in SIZES {
            let fleet = scenario(name, n);
            assert_eq!(fleet.containers, n);
            let runs = if n >= 1_000_000 { 3 } else { 7 };
            let (mut wall, mut cpu): (Vec<Duration>, Vec<Duration>) = (0..runs)
                .map(|_| {
                    let (t, c) = (Instant::now(), thread_cpu_time());
                    black_box(plan_fleet(black_box(&fleet)));
                    (t.elapsed(), thread_cpu_time() - c)
                })
                .unzip();
            wall.sort();
            cpu.sort();
            let (wall, cpu) = (wall[runs / 2], cpu[runs / 2]);
            println!(
                "plan {name:<16} N={n:<8} hosts={HOSTS}  cpu={:.3}s  per-container={:.0}ns  (wall {:.3}s; medians of {runs})",
                cpu.as_secs_f64(),
                cpu.as_nanos() as f64 / n as f64,
                wall.as_secs_f64(),
            );
        }
    }
}

/// CPU time of the calling thread: what "on one core" means, and what a machine busy with
/// other work inflates far less than wall time.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn bench(c: &mut Criterion) {
    per_container_lines();
    for name in SCENARIOS {
        let mut group = c.benchmark_group(format!("plan_fleet/{name}"));
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        for n in CRITERION_SIZES {
            let fleet = scenario(name, n);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &fleet, |b, f| b.iter(|| plan_fleet(f)));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
