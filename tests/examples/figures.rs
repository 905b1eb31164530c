//! Figures for the core: converge 20 containers from nothing, a no-op apply, a change of one
//! container, and a delete — wall time of the `berth` command and the Docker API requests it
//! made, counted by a proxy in front of the engine.
//!
//! `cargo run --release -p berth-tests --example figures [-- ROUNDS]`
//!
//! The containers are the echo app without healthcheck or host port (20 sets of one replica
//! each, so "change one" touches exactly one container). The echo app exits on SIGTERM, so
//! stops take no grace period. Prints a markdown table of medians over ROUNDS (default 5).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_tests::*;

const N: usize = 20;

fn write_sets(dir: &std::path::Path, ns: &str, changed: Option<usize>) {
    let mut yaml = String::new();
    for i in 0..N {
        let mut set = EchoSet::new(ns, &format!("s{i:02}")).without_healthcheck().env("V", "1");
        if changed == Some(i) {
            set = set.env("V", "2");
        }
        yaml.push_str("---\n");
        yaml.push_str(&set.yaml());
    }
    std::fs::write(dir.join("sets.yaml"), yaml).unwrap();
}

struct Sample {
    wall: Duration,
    requests: BTreeMap<String, usize>,
    mutating: usize,
}

fn run(proxy: &CountingProxy, args: &[&str]) -> Sample {
    proxy.reset();
    let host = proxy.docker_host();
    let started = Instant::now();
    berth(args, &[("DOCKER_HOST", host.as_str())]).assert_success();
    let wall = started.elapsed();
    Sample { wall, requests: proxy.count_by_method(), mutating: proxy.count_mutating() }
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    ensure_echo_image();
    let bin = berth_bin(); // build it now, not inside the first timed run
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _ = rt.block_on(docker());
    let proxy = CountingProxy::start(&local_socket_path());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sets.yaml");
    let file = file.to_str().unwrap();
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        let ns = NamespaceGuard::new("figures");
        write_sets(dir.path(), ns.name(), None);
        samples.entry("1. converge 20 from nothing").or_default().push(run(&proxy, &["apply", "-f", file]));
        samples.entry("2. no-op apply").or_default().push(run(&proxy, &["apply", "-f", file]));
        samples.entry("3. plan (converged)").or_default().push({
            proxy.reset();
            let started = Instant::now();
            let host = proxy.docker_host();
            berth(["plan", "-f", file], &[("DOCKER_HOST", host.as_str())]).assert_code(0);
            Sample { wall: started.elapsed(), requests: proxy.count_by_method(), mutating: proxy.count_mutating() }
        });
        write_sets(dir.path(), ns.name(), Some(round % N));
        samples.entry("4. change one env value").or_default().push(run(&proxy, &["apply", "-f", file]));
        samples.entry("5. delete all").or_default().push(run(&proxy, &["delete", "-f", file]));
    }
    println!("berth {} — {N} containers, {rounds} rounds, binary {}", env!("CARGO_PKG_VERSION"), bin.display());
    println!();
    println!("| scenario | median | min – max | requests (last round) | mutating |");
    println!("|---|---|---|---|---|");
    for (name, s) in &samples {
        let mut walls: Vec<Duration> = s.iter().map(|x| x.wall).collect();
        walls.sort();
        let last = s.last().unwrap();
        let reqs: Vec<String> = last.requests.iter().map(|(m, n)| format!("{m} {n}")).collect();
        println!(
            "| {name} | {:.3} s | {:.3} – {:.3} s | {} | {} |",
            walls[walls.len() / 2].as_secs_f64(),
            walls[0].as_secs_f64(),
            walls[walls.len() - 1].as_secs_f64(),
            reqs.join(", "),
            last.mutating
        );
    }
}
