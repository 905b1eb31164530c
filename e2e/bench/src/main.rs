//! `bench`: berth against docker-compose and the engine's own floor, on the local engine.
//!
//! ```text
//! cargo run --release -p e2e --bin bench [-- --sizes 20,100 --rounds 7]
//! ```
//!
//! For each size N it runs, round after round, berth's and docker-compose's cycle on the same
//! N containers (see [`workload`]) — converge from nothing, no-op, change one env value,
//! delete all — alternating which tool goes first, and the engine's floor (direct API calls:
//! [`floor`]). Every Docker API request goes through a counting proxy, which also times it.
//! Then it measures the StartFirst gap ([`gap`]) and prints a markdown report on stdout
//! (progress on stderr): medians, min–max, requests per method, the ratios, the issue-5
//! targets met or missed, and where each tool's time went.
//!
//! Setup is part of the run: docker-compose is installed from Debian's package when missing,
//! the echo image is built when missing, and berth is built in release when stale. The run
//! removes what it created, and only that ([`cleanup`]), also on an error, a panic or Ctrl-C.

mod cleanup;
mod floor;
mod gap;
mod machine;
mod report;
mod sample;
mod tools;
mod workload;

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_tests::{CountingProxy, berth_bin, docker_host, ensure_echo_image, local_socket_path, unique_ns};
use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use clap::Parser;

use crate::floor::Floor;
use crate::report::{Results, Scenario, Who};
use crate::sample::Sample;
use crate::tools::{Deployment, Runner, Tool};

/// berth against docker-compose and the engine's floor, on the local Docker engine.
#[derive(Parser, Debug)]
#[command(name = "bench", about)]
struct Args {
    /// How many containers, one measurement per size.
    #[arg(long, value_delimiter = ',', default_value = "20,100", value_parser = clap::value_parser!(u16).range(1..=500))]
    sizes: Vec<u16>,
    /// Rounds per size (each round runs every scenario once per tool).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Changes measured for the StartFirst gap, per tool (0 skips it).
    #[arg(long, default_value_t = 7)]
    gap_rounds: u16,
    /// Rounds (the first ones) that also time the sequential floor; the 4-parallel floor, the
    /// one the targets use, runs in every round.
    #[arg(long, default_value_t = 3)]
    seq_floor_rounds: u16,
    /// Write each tool's request timeline of the last round, per size and scenario, into DIR.
    #[arg(long, value_name = "DIR")]
    timelines: Option<std::path::PathBuf>,
    /// Pass `--concurrency N` to berth's apply and delete (default: berth's own default).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    berth_concurrency: Option<u16>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let began = Instant::now();
    let rt = tokio::runtime::Runtime::new().context("cannot start a tokio runtime")?;
    let host = docker_host();
    let docker = rt.block_on(connect(&host))?;
    let compose = tools::ensure_compose()?;
    let compose_version = tools::compose_version();
    eprintln!("docker-compose {compose_version} at {}", compose.display());
    ensure_echo_image();
    eprintln!("berth: checking the release binary (built when stale)…");
    let bin = berth_bin();
    eprintln!("berth binary: {}", bin.display());
    let proxy = CountingProxy::start(&local_socket_path());
    rt.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            cleanup::set_interrupted();
            eprintln!("interrupted: stopping after the current step and removing what the benchmark created");
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted again: exiting now; leftovers carry labels starting with berth.dev/namespace=bench- or com.docker.compose.project=bench-");
                std::process::exit(130);
            }
        }
    });

    let mut results = Results::default();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(bench(args, &docker, &proxy, &mut results))
    }));
    rt.block_on(cleanup::remove_all(&docker));
    let outcome = match outcome {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    // What was measured is printed even when the run failed part-way, marked as such.
    if outcome.is_ok() || !results.samples.is_empty() {
        if let Some(dir) = &args.timelines {
            write_timelines(&results, dir)?;
        }
        let machine = rt.block_on(machine::Machine::gather(&docker, &bin, compose_version));
        if let Err(e) = &outcome {
            println!(
                "> **Incomplete run** (it failed: {}); what follows is what was measured before.\n",
                e.to_string().lines().next().unwrap_or_default()
            );
        }
        print!(
            "{}",
            report::markdown(
                &results,
                args.rounds as usize,
                args.seq_floor_rounds as usize,
                &machine.markdown(),
                began.elapsed()
            )
        );
    }
    outcome
}

/// Writes `DIR/<N>-<scenario>-<tool>.txt`: the last round's request timeline of each tool.
fn write_timelines(results: &Results, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for n in results.sizes() {
        for s in Scenario::ALL {
            for (who, name) in [(Who::Berth, "berth"), (Who::Compose, "compose")] {
                let Some(last) = results.get(n, s, who).last() else { continue };
                let path = dir.join(format!("{n}-{}-{name}.txt", s.slug()));
                std::fs::write(&path, last.timeline()).with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    eprintln!("request timelines written to {}", dir.display());
    Ok(())
}

/// A client for the engine at `host`, negotiated down to its API version.
async fn connect(host: &str) -> anyhow::Result<Docker> {
    let hint = || format!("no Docker engine answers at {host}: start one with scripts/start-docker.sh");
    let docker = Docker::connect_with_host(host).with_context(hint)?;
    let docker = tokio::time::timeout(Duration::from_secs(15), docker.negotiate_version())
        .await
        .with_context(hint)?
        .with_context(hint)?;
    docker.ping().await.with_context(hint)?;
    Ok(docker)
}

async fn bench(args: &Args, docker: &Docker, proxy: &CountingProxy, results: &mut Results) -> anyhow::Result<()> {
    let largest = args.sizes.iter().copied().max().unwrap_or(1) as usize;
    let runner = Runner {
        proxy,
        berth_concurrency: args.berth_concurrency,
        compose_parallel_limit: tools::compose_parallel_limit(largest),
    };
    // The floor's client connects and negotiates now, not inside a timed run.
    let floor_docker = connect(&proxy.docker_host()).await?;
    let work = tempfile::Builder::new().prefix("berth-bench-").tempdir().context("cannot create a temp dir")?;
    for &n in &args.sizes {
        let n = n as usize;
        for round in 0..args.rounds as usize {
            let started = Instant::now();
            // berth and compose take turns going first; the floor goes last, then first.
            let order: &[Who] = if round % 2 == 0 {
                &[Who::Berth, Who::Compose, Who::Floor]
            } else {
                &[Who::Floor, Who::Compose, Who::Berth]
            };
            for who in order {
                match who {
                    Who::Berth => tool_cycle(&runner, Tool::Berth, docker, work.path(), n, round, results).await?,
                    Who::Compose => tool_cycle(&runner, Tool::Compose, docker, work.path(), n, round, results).await?,
                    _ => {
                        let sequential = round < args.seq_floor_rounds as usize;
                        floor_cycle(&floor_docker, proxy, docker, n, round, sequential, results).await?
                    }
                }
            }
            eprintln!("N={n} round {}/{} done in {:.1} s", round + 1, args.rounds, started.elapsed().as_secs_f64());
        }
    }
    if args.gap_rounds > 0 {
        gap_runs(&runner, docker, work.path(), args.gap_rounds as usize, results).await?;
    }
    Ok(())
}

/// The value of the changed env var in round `round` (differs from the initial "1").
fn changed_value(round: usize) -> String {
    (round + 2).to_string()
}

/// One tool's cycle on `n` containers: converge, no-op, change one, delete.
async fn tool_cycle(
    runner: &Runner<'_>,
    tool: Tool,
    docker: &Docker,
    work: &Path,
    n: usize,
    round: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let d = Deployment::new(tool, work, "bench")?;
    let (label, name, who) = (d.label(), tool.name(), Who::from(tool));
    let file = d.write(n, None)?;
    let s = d.apply(runner, &file).await?;
    expect_containers(docker, &label, n, &format!("{name} converged")).await?;
    results.add(n, Scenario::Converge, who, s);
    results.add(n, Scenario::Noop, who, d.apply(runner, &file).await?);
    d.write(n, Some((round % n, &changed_value(round))))?;
    results.add(n, Scenario::ChangeOne, who, d.apply(runner, &file).await?);
    expect_containers(docker, &label, n, &format!("{name} changed one")).await?;
    results.add(n, Scenario::Delete, who, d.delete(runner, &file).await?);
    expect_containers(docker, &label, 0, &format!("{name} deleted all")).await?;
    finish(docker, &label).await
}

async fn floor_cycle(
    floor_docker: &Docker,
    proxy: &CountingProxy,
    docker: &Docker,
    n: usize,
    round: usize,
    sequential: bool,
    results: &mut Results,
) -> anyhow::Result<()> {
    let ns = unique_ns("bench-floor");
    let label = format!("berth.dev/namespace={ns}");
    cleanup::register(&label);
    let floor = Floor { docker: floor_docker, proxy, namespace: ns, n };
    if sequential {
        results.add(n, Scenario::Converge, Who::Floor, floor.converge_sequential().await?);
        results.add(n, Scenario::Delete, Who::FloorParallel, floor.delete_parallel().await?);
    }
    results.add(n, Scenario::Converge, Who::FloorParallel, floor.converge_parallel().await?);
    expect_containers(docker, &label, n, "the floor converged").await?;
    results.add(n, Scenario::Noop, Who::Floor, floor.noop().await?);
    results.add(n, Scenario::ChangeOne, Who::Floor, floor.change_one(round % n, &changed_value(round)).await?);
    if sequential {
        results.add(n, Scenario::Delete, Who::Floor, floor.delete_sequential().await?);
    } else {
        results.add(n, Scenario::Delete, Who::FloorParallel, floor.delete_parallel().await?);
    }
    expect_containers(docker, &label, 0, "the floor deleted all").await?;
    finish(docker, &label).await
}

/// Removes what is left under `label` (berth's history volumes, if its delete kept any) and
/// forgets the label.
async fn finish(docker: &Docker, label: &str) -> anyhow::Result<()> {
    let (c, v) = cleanup::remove_labelled(docker, label).await?;
    if c > 0 {
        eprintln!("note: {c} container(s) labelled {label} were still there after the delete");
    }
    let _ = v;
    cleanup::forget(label);
    Ok(())
}

/// Fails unless exactly `n` containers carry `label` (running ones, when `n` > 0).
async fn expect_containers(docker: &Docker, label: &str, n: usize, what: &str) -> anyhow::Result<()> {
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let list = docker
        .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
        .await
        .with_context(|| format!("list containers labelled {label}"))?;
    let running = list.iter().filter(|c| c.state.map(|s| s.to_string()).as_deref() == Some("running")).count();
    anyhow::ensure!(
        list.len() == n && running == n,
        "{what}: expected {n} running containers labelled {label}, found {} ({running} running)",
        list.len()
    );
    Ok(())
}

/// The StartFirst gap: `changes` env changes of a one-replica service per tool, alternating.
async fn gap_runs(
    runner: &Runner<'_>,
    docker: &Docker,
    work: &Path,
    changes: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let deployments =
        [Deployment::new(Tool::Berth, work, "bench-gap")?, Deployment::new(Tool::Compose, work, "bench-gap")?];
    let mut files = Vec::new();
    for d in &deployments {
        let file = d.write_gap("0")?;
        d.apply(runner, &file).await?;
        files.push(file);
    }
    let engine = docker_host();
    for k in 1..=changes {
        // berth and compose take turns going first.
        let order = if k % 2 == 1 { [0, 1] } else { [1, 0] };
        for i in order {
            let d = &deployments[i];
            d.write_gap(&k.to_string())?;
            let g = measure_gap(&engine, &d.label(), d.apply(runner, &files[i])).await?;
            results.gaps.entry(d.tool.name()).or_default().push(g);
        }
        eprintln!("StartFirst gap: change {k}/{changes} done");
    }
    for (d, file) in deployments.iter().zip(&files) {
        d.delete(runner, file).await?;
        finish(docker, &d.label()).await?;
    }
    Ok(())
}

/// Probes the service labelled `label` while `change` runs: the gap, and the change's wall time.
async fn measure_gap(
    engine: &str,
    label: &str,
    change: impl Future<Output = anyhow::Result<Sample>>,
) -> anyhow::Result<(gap::Gap, Duration)> {
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
    let prober = gap::Prober::start(engine, label)?;
    prober.answered_since(Instant::now(), ANSWER_TIMEOUT).await.context("the service answers before the change")?;
    let from = Instant::now();
    let sample = change.await?;
    let to =
        prober.answered_since(Instant::now(), ANSWER_TIMEOUT).await.context("the service answers after the change")?;
    let rounds = prober.finish();
    Ok((gap::gap(&rounds, from, to), sample.wall))
}
