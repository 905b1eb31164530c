//! Crash trials: berth SIGKILLed at a random point of a rollout, restarted, and the invariants
//! checked.
//!
//! Each trial comes from a seed (printed; `BERTH_TRIAL_SEED=N` replays that one trial). The
//! seed picks the front end (`berth apply` or `berth operator`; even seeds standalone), the
//! strategy (StartFirst or StopFirst, by the seed's second bit), the replicas (2 or 3), the
//! bytes written into the set's named volume, and the kill point: after the Nth mutating
//! Docker request through a counting proxy, or after a delay. berth is then SIGKILLed (no
//! cleanup of its own can run), started again (`apply` again, or a new operator process), and
//! the trial checks:
//!
//! - converged to the declared revision (every replica answers the new env value; `plan`
//!   shows nothing to do, or the operator's status is Ready at a new revision);
//! - no duplicates (one container per ordinal) and no orphans (nothing of the namespace but
//!   the declared set's replicas);
//! - the named volume is there with the bytes written before (sha256 over the archive API),
//!   and every new replica reads them;
//! - never fewer replicas answered at once than the strategy allows (all of them under
//!   StartFirst, one fewer under StopFirst), by a probe polling every running replica
//!   throughout, the kill and the restart included.
//!
//! The default run does a handful of trials from a random base seed; the long mode
//! `BERTH_TRIALS=100` does a hundred (`BERTH_TRIAL_BASE=N` fixes the base). The summary line
//! is `trials: N run, F failed`, followed by each failing seed.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_crd::{ContainerSet, DockerHost};
use berth_tests::*;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::block_in_place;

/// Trials in a default run: every front end with every strategy, and some.
const DEFAULT_TRIALS: u64 = 6;

/// Deadline of every wait for convergence (a loaded 2-core machine; not a measure of speed).
const WAIT: Duration = Duration::from_secs(120);

/// No mutating request for this long: the rollout is over (see [`kill_at`]).
const QUIET: Duration = Duration::from_secs(15);

/// The set every trial rolls out.
const SET: &str = "web";

#[derive(Clone, Copy, Debug, PartialEq)]
enum FrontEnd {
    Apply,
    Operator,
}

#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// After this many mutating requests reached the engine.
    AfterRequests(usize),
    /// This long after the rollout began.
    AfterDelay(Duration),
}

/// What one seed makes of a trial.
#[derive(Clone, Debug)]
struct Scenario {
    front_end: FrontEnd,
    strategy: &'static str,
    replicas: u32,
    kill: KillPoint,
    /// Written into the volume before the rollout (text, so that the echo app can serve it).
    blob: String,
}

impl Scenario {
    fn from_seed(seed: u64) -> Scenario {
        let mut rng = TrialRng::new(seed);
        let front_end = if seed.is_multiple_of(2) { FrontEnd::Apply } else { FrontEnd::Operator };
        let strategy = if (seed / 2).is_multiple_of(2) { "StartFirst" } else { "StopFirst" };
        let replicas = rng.between(2, 3) as u32;
        // A replacement is create, start, stop and remove per replica: kill anywhere in it,
        // and sometimes by time (which may fall before the first request or after the last).
        let kill = if rng.between(0, 3) > 0 {
            KillPoint::AfterRequests(rng.between(1, 4 * u64::from(replicas)) as usize)
        } else {
            KillPoint::AfterDelay(Duration::from_millis(rng.between(0, 2500)))
        };
        let len = rng.between(1, 32 * 1024) as usize;
        let blob = hex::encode(rng.bytes(len));
        Scenario { front_end, strategy, replicas, kill, blob }
    }

    /// The fewest replicas that must answer at any instant.
    fn min_serving(&self) -> usize {
        match self.strategy {
            "StartFirst" => self.replicas as usize,
            _ => self.replicas as usize - 1,
        }
    }

    fn set(&self, ns: &str, volume: &str, version: u32) -> EchoSet {
        EchoSet::new(ns, SET)
            .replicas(self.replicas)
            .strategy(self.strategy)
            .volume(volume, "/data")
            .env("V", &version.to_string())
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kill = match self.kill {
            KillPoint::AfterRequests(n) => format!("kill after {n} mutating request(s)"),
            KillPoint::AfterDelay(d) => format!("kill after {} ms", d.as_millis()),
        };
        write!(
            f,
            "{:?} {} x{}, {kill}, {} bytes in the volume",
            self.front_end,
            self.strategy,
            self.replicas,
            self.blob.len()
        )
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok().filter(|v| !v.is_empty())?;
    Some(v.parse().unwrap_or_else(|e| panic!("{name}={v} is not a number: {e}")))
}

#[test]
fn crash_trials_converge_without_duplicates_orphans_or_lost_data() {
    ensure_echo_image();
    let seeds: Vec<u64> = match env_u64("BERTH_TRIAL_SEED") {
        Some(seed) => vec![seed],
        None => {
            let n = env_u64("BERTH_TRIALS").unwrap_or(DEFAULT_TRIALS);
            let base = env_u64("BERTH_TRIAL_BASE").unwrap_or_else(|| {
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() % 1_000_000).unwrap_or(0) * 4
            });
            (base..base + n).collect()
        }
    };
    println!("crash trials: {} (seeds {:?}..; replay one with BERTH_TRIAL_SEED=N)", seeds.len(), seeds.first());
    let started = Instant::now();
    let mut failed = Vec::new();
    for &seed in &seeds {
        let scenario = Scenario::from_seed(seed);
        println!("trial {seed}: {scenario}");
        let t = Instant::now();
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                rt.block_on(async {
                    match scenario.front_end {
                        FrontEnd::Apply => apply_trial(&scenario).await,
                        FrontEnd::Operator => operator_trial(&scenario).await,
                    }
                })
            }))
        })
        .join()
        .expect("the trial thread");
        match outcome {
            Ok(summary) => println!("trial {seed}: ok in {:.1}s: {summary}", t.elapsed().as_secs_f64()),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("trial {seed}: FAILED after {:.1}s: {why}", t.elapsed().as_secs_f64());
                failed.push(seed);
            }
        }
    }
    println!("trials: {} run, {} failed ({:.0}s)", seeds.len(), failed.len(), started.elapsed().as_secs_f64());
    for seed in &failed {
        println!(
            "failing seed: {seed} (replay: BERTH_TRIAL_SEED={seed} cargo test -p berth-tests --test crash_trials)"
        );
    }
    assert!(failed.is_empty(), "{} of {} crash trials failed: seeds {failed:?}", failed.len(), seeds.len());
}

/// `berth apply` killed mid-rollout, then applied again.
async fn apply_trial(s: &Scenario) -> String {
    let docker = docker().await;
    let ns = NamespaceGuard::new("trial");
    let volume = format!("{}-data", ns.name());
    let _volumes = VolumeGuard::new(&docker_host(), ns.name(), &[&volume]);
    let dir = tempfile::tempdir().unwrap();
    let file = s.set(ns.name(), &volume, 1).write(dir.path());
    let file = file.to_str().unwrap().to_string();
    berth_async(["apply", "-f", &file], &[]).await.assert_success();
    write_volume_file(&docker, &volume, "blob", s.blob.as_bytes()).await.expect("write the volume's data");

    s.set(ns.name(), &volume, 2).write(dir.path());
    let proxy = CountingProxy::start(&local_socket_path());
    let probe = ServingProbe::containers(&docker_host(), ns.name());
    let run = spawn_berth(["apply", "-f", &file], &[("DOCKER_HOST", proxy.docker_host().as_str())]);
    let killed = block_in_place(|| kill_at(run, &proxy, s.kill));
    let t = Instant::now();
    let again = berth_async(["apply", "-f", &file], &[]).await;
    let recovery = t.elapsed();
    let serving = probe.stop();
    again.assert_success();
    let plan = berth_async(["plan", "-f", &file], &[]).await;
    assert_eq!(plan.code, Some(0), "converged: nothing left to do:\n{plan}");
    let revision = assert_invariants(&docker, ns.name(), &volume, s, None).await;
    assert_serving(&serving, s);
    format!(
        "{killed}; apply again converged in {:.1}s on {revision}; {}",
        recovery.as_secs_f64(),
        describe_serving(&serving, s)
    )
}

/// `berth operator` killed mid-rollout, then started again.
async fn operator_trial(s: &Scenario) -> String {
    let docker = docker().await;
    let ns = NamespaceGuard::new("otrial");
    let volume = format!("{}-data", ns.name());
    let _volumes = VolumeGuard::new(&docker_host(), ns.name(), &[&volume]);
    let dir = tempfile::tempdir().unwrap();
    let (fake, client) = fake_cluster(ns.name()).await;
    let proxy = CountingProxy::start(&local_socket_path());
    let host: DockerHost = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": "local", "namespace": ns.name(), "labels": {"role": "web"}},
        "spec": {"endpoint": proxy.docker_host()}
    }))
    .unwrap();
    Api::<DockerHost>::namespaced(client.clone(), ns.name()).create(&PostParams::default(), &host).await.unwrap();
    let mut cs: Value = serde_saphyr::from_str(&s.set(ns.name(), &volume, 1).yaml()).expect("the set's YAML");
    cs["spec"]["hostSelector"] = json!({"matchLabels": {"role": "web"}});
    let cs: ContainerSet = serde_json::from_value(cs).expect("a ContainerSet");
    let sets: Api<ContainerSet> = Api::namespaced(client.clone(), ns.name());
    sets.create(&PostParams::default(), &cs).await.unwrap();

    let mut op = OperatorLog(Some(spawn_operator(&fake, dir.path(), ns.name(), "trial", free_port())));
    let first = ready_at_new_revision(&sets, SET, s.replicas, None, WAIT).await;
    write_volume_file(&docker, &volume, "blob", s.blob.as_bytes()).await.expect("write the volume's data");

    proxy.reset();
    let probe = ServingProbe::containers(&docker_host(), ns.name());
    let patch = json!({"spec": {"template": {"env": [{"name": "V", "value": "2"}]}}});
    sets.patch(SET, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let killed = block_in_place(|| kill_at(op.0.take().unwrap(), &proxy, s.kill));
    let t = Instant::now();
    op.0 = Some(spawn_operator(&fake, dir.path(), ns.name(), "trial", free_port()));
    let revision = ready_at_new_revision(&sets, SET, s.replicas, Some(&first), WAIT).await;
    let recovery = t.elapsed();
    // The status may say Ready a moment before the last old container is gone.
    eventually("only the new revision's containers left", WAIT, || async {
        let all = containers_in(&docker, ns.name()).await;
        (all.len() == s.replicas as usize).then_some(())
    })
    .await;
    let serving = probe.stop();
    assert_invariants(&docker, ns.name(), &volume, s, Some(&revision)).await;
    assert_serving(&serving, s);
    format!(
        "{killed}; a new operator converged in {:.1}s on {revision}; {}",
        recovery.as_secs_f64(),
        describe_serving(&serving, s)
    )
}

/// Waits for the kill point, then SIGKILLs berth; says what happened.
fn kill_at(mut run: BerthProcess, proxy: &CountingProxy, kill: KillPoint) -> String {
    let start = Instant::now();
    let (mut seen, mut quiet_since) = (0, Instant::now());
    // Poll tightly: the point is to stop between two particular requests.
    loop {
        let reached = match kill {
            KillPoint::AfterRequests(n) => proxy.count_mutating() >= n,
            KillPoint::AfterDelay(d) => start.elapsed() >= d,
        };
        if reached {
            break;
        }
        // An operator never exits by itself: a rollout that made its last request before the
        // kill point is over once the requests stop.
        let count = proxy.count_mutating();
        if count != seen {
            (seen, quiet_since) = (count, Instant::now());
        } else if count > 0 && quiet_since.elapsed() > QUIET {
            let out = run.kill();
            return format!(
                "the rollout was over before the kill point ({count} mutating requests); killed then (signal {:?})",
                out.signal
            );
        }
        if !run.is_running() {
            let out = run.wait();
            return format!(
                "finished before the kill point ({} mutating requests, exit code {:?})",
                proxy.count_mutating(),
                out.code
            );
        }
        assert!(start.elapsed() < WAIT, "the kill point {kill:?} not reached within {WAIT:?}:\n{}", proxy.describe());
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = run.kill();
    let last = proxy.requests().into_iter().rev().find(|r| r.is_mutating());
    format!(
        "killed (signal {:?}) after {} mutating requests, the last {}",
        out.signal,
        proxy.count_mutating(),
        last.map(|r| format!("{} {}", r.method, r.endpoint())).unwrap_or_else(|| "none".into())
    )
}

/// Converged, no duplicates, no orphans, the volume's data intact. Returns the revision.
async fn assert_invariants(
    docker: &bollard::Docker,
    ns: &str,
    volume: &str,
    s: &Scenario,
    revision: Option<&str>,
) -> String {
    let all = containers_in(docker, ns).await;
    let listing = names_ids_states(docker, ns).await;
    let mut ordinals = Vec::new();
    let mut revisions = std::collections::BTreeSet::new();
    for c in &all {
        let labels = c.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("berth.dev/set").map(String::as_str), Some(SET), "an orphan: {listing:?}");
        ordinals.push(labels.get("berth.dev/ordinal").cloned().unwrap_or_default());
        revisions.insert(labels.get("berth.dev/revision").cloned().unwrap_or_default());
        assert_eq!(c.state.map(|s| s.to_string()).as_deref(), Some("running"), "every replica runs: {listing:?}");
    }
    ordinals.sort();
    let expected: Vec<String> = (0..s.replicas).map(|o| o.to_string()).collect();
    assert_eq!(ordinals, expected, "one container per ordinal, no duplicates: {listing:?}");
    assert_eq!(revisions.len(), 1, "a single revision: {listing:?}");
    let serving = revisions.into_iter().next().unwrap();
    if let Some(r) = revision {
        assert_eq!(serving, r, "the replicas run the revision the status names: {listing:?}");
    }
    for (name, _, _) in &listing {
        let addr = container_addr(docker, name).await;
        let env = http_request(&addr, "GET", "/env/V", &[]);
        assert_eq!(env, Some((200, "2".to_string())), "{name} runs the declared spec");
        let file = http_request(&addr, "GET", "/file/data/blob", &[]);
        assert!(file == Some((200, s.blob.clone())), "{name} reads the volume's data");
    }
    let read = read_volume_file(docker, volume, "blob").await.unwrap_or_else(|e| panic!("the volume is lost: {e}"));
    assert_eq!(sha256_hex(&read), sha256_hex(s.blob.as_bytes()), "the volume's data is intact");
    serving
}

fn assert_serving(report: &ServingReport, s: &Scenario) {
    assert!(report.rounds >= 5, "too few probe rounds to say anything: {report:?}");
    let min = report.min_serving.unwrap_or(0);
    assert!(
        min >= s.min_serving(),
        "only {min} replica(s) answered at once, {} allows no fewer than {}: {}",
        s.strategy,
        s.min_serving(),
        report.min_round
    );
}

fn describe_serving(report: &ServingReport, s: &Scenario) -> String {
    format!(
        "min serving {}/{} (allowed {}) over {} probe rounds ({} while containers changed)",
        report.min_serving.unwrap_or(0),
        s.replicas,
        s.min_serving(),
        report.rounds,
        report.changed_rounds
    )
}
