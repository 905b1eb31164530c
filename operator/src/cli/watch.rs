//! `watch`: keep a folder of files and its hosts converged — GitOps on one machine.
//!
//! One apply pass, then wait for a reason to do another: a file under the given paths changed
//! (polled by modification time and size, twice a second, so it works on any filesystem), a
//! managed container on one of the hosts died, was removed, renamed, updated, exec'd into or
//! copied into (the engine's event stream), or the resync interval passed (the safety net for
//! anything the events missed). Triggers that arrive together make one pass. Invalid files are
//! reported and nothing is touched until they are fixed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use std::ops::ControlFlow;
use tokio::sync::mpsc;

use super::apply;
use super::{InputArgs, WatchArgs};
use crate::docker::{self, DriftLog};
use crate::engine::SetKey;
use crate::target::HostTarget;

/// Why a pass runs.
#[derive(Debug)]
enum Trigger {
    Files,
    Engine { host: String, set: SetKey, action: String, container: String },
}

/// The modification stamp of every file under `paths`.
fn stamp(paths: &[PathBuf]) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, (SystemTime, u64)>) {
        let Ok(meta) = std::fs::metadata(p) else { return };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    walk(&e.path(), out);
                }
            }
        } else {
            out.insert(p.to_path_buf(), (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len()));
        }
    }
    let mut out = BTreeMap::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

/// Follow one host's events of managed containers; each is a trigger, and drift only an
/// event shows goes into `log`. Ends when the watch does; the follower reconnects by itself.
async fn follow(host: String, target: HostTarget, log: DriftLog, tx: mpsc::UnboundedSender<Trigger>) {
    let Ok(d) = docker::connect(&target.endpoint).await else { return };
    docker::follow(&host, &d, &log, |e| {
        let trigger = Trigger::Engine { host: host.clone(), set: e.set, action: e.action, container: e.container_name };
        if tx.send(trigger).is_err() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })
    .await
}

pub(super) async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Trigger>();
    // Files: poll their stamps.
    {
        let tx = tx.clone();
        let files = args.files.clone();
        tokio::spawn(async move {
            let mut last = stamp(&files);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = stamp(&files);
                if now != last {
                    last = now;
                    if tx.send(Trigger::Files).is_err() {
                        return;
                    }
                }
            }
        });
    }
    let resync = Duration::from_secs(args.resync_seconds);
    let mut followers: HashMap<String, (String, tokio::task::JoinHandle<()>)> = HashMap::new();
    let input_args = InputArgs { files: args.files.clone() };
    println!("watching {} (resync every {}s); Ctrl-C stops", display(&args.files), args.resync_seconds);
    let drift = DriftLog::new();
    let mut sets: Vec<SetKey> = Vec::new();
    let mut next_pass = resync;
    loop {
        match apply::load(&input_args, args.prune) {
            Err(e) => {
                match e.downcast_ref::<crate::input::InputErrors>() {
                    Some(list) => list.0.iter().for_each(|item| eprintln!("error: {item}")),
                    None => eprintln!("error: {e:#}"),
                }
                eprintln!("the input has problems; no host was touched. Waiting for the files to change.");
            }
            Ok((input, resolved)) => {
                // One event follower per host, restarted when it ended or the endpoint changed.
                for t in &resolved.hosts {
                    let endpoint = t.endpoint.to_string();
                    let alive = followers.get(&t.name).is_some_and(|(e, h)| e == &endpoint && !h.is_finished());
                    if !alive {
                        let handle = tokio::spawn(follow(t.name.clone(), t.clone(), drift.clone(), tx.clone()));
                        followers.insert(t.name.clone(), (endpoint, handle));
                    }
                }
                sets = resolved.sets.clone();
                // imagePolicy: Follow polls its registry at its own interval.
                next_pass =
                    resolved.image_policies.values().filter_map(|p| p.poll_interval()).fold(resync, Duration::min);
                apply::converge_once(&input, &resolved, args.prune, args.concurrency, &drift).await;
            }
        }
        // Wait for a reason (an event of another set's container is none), then take every
        // trigger that came with it.
        let mut why = Vec::new();
        let deadline = tokio::time::Instant::now() + next_pass;
        loop {
            let first = tokio::select! {
                t = rx.recv() => t,
                _ = tokio::time::sleep_until(deadline) => None,
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            };
            let Some(t) = first else { break };
            why.push(t);
            tokio::time::sleep(Duration::from_millis(50)).await;
            while let Ok(t) = rx.try_recv() {
                why.push(t);
            }
            why.retain(|t| match t {
                Trigger::Files => true,
                Trigger::Engine { set, .. } => {
                    args.prune && sets.iter().any(|s| s.namespace == set.namespace) || sets.contains(set)
                }
            });
            if !why.is_empty() {
                break;
            }
        }
        let reasons: Vec<String> = why
            .iter()
            .map(|t| match t {
                Trigger::Files => "files changed".to_string(),
                Trigger::Engine { host, action, container, .. } => format!("{host}: {container} {action}"),
            })
            .collect();
        if reasons.is_empty() {
            tracing::debug!("resync");
        } else {
            println!("-- {}", reasons.join("; "));
        }
    }
}

fn display(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
