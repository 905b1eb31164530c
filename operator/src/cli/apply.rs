//! `apply`, `plan` and `delete`: read input, observe every host, plan, and (for apply and
//! delete) execute. They share one pipeline (`crate::fleet`); only what happens to the plan
//! differs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;
use std::time::Instant;

use super::progress::TerminalProgress;
use super::render;
use super::{ApplyArgs, DeleteArgs, InputArgs, PlanArgs, PlanFormat};
use crate::docker::volume::Reclaim;
use crate::docker::{self, DriftLog, ExecOptions};
use crate::engine::SetKey;
use crate::engine::history::{HistoryWrite, Outcome};
use crate::fleet::history::{HistoryStore, HostVolumes};
use crate::fleet::{self, FleetReport, Prepared, RunError, SetResult};
use crate::input::{self, Input, Resolved};

pub(super) use crate::fleet::{HostView, observe_all};

/// Read and check all input. No host is contacted before this succeeds.
pub(super) fn load_input(args: &InputArgs, prune: bool) -> anyhow::Result<Resolved> {
    load(args, prune).map(|(_, r)| r)
}

/// The input as read, and resolved.
pub(super) fn load(args: &InputArgs, prune: bool) -> anyhow::Result<(Input, Resolved)> {
    let (mut input, mut errors) = input::load::load_partial(&args.files);
    // Images first: the sets that run one get its content tag as their image.
    let images = match input::images::resolve_images(&mut input) {
        Ok(b) => b,
        Err(e) => {
            errors.extend(e.0);
            Vec::new()
        }
    };
    errors.extend(input::resolve::sets_selecting_no_host(&input));
    errors.extend(input::resolve::dependency_errors(&input));
    match input::resolve(&input, prune) {
        Ok(mut resolved) => {
            errors.extend(input::resolve::host_port_conflicts(&input, &resolved));
            resolved.images = images;
            if errors.is_empty() { Ok((input, resolved)) } else { Err(input::InputErrors(errors).into()) }
        }
        Err(input::InputErrors(more)) => {
            for e in more {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
            Err(input::InputErrors(errors).into())
        }
    }
}

/// Revision history on the run's hosts: each set's records on the hosts it is placed on.
pub(super) fn host_history(views: &[HostView]) -> HostVolumes {
    let mut placed: HashMap<SetKey, Vec<String>> = HashMap::new();
    for v in views.iter().filter(|v| v.docker.is_some()) {
        for d in &v.target.desired {
            placed.entry(d.key.clone()).or_default().push(v.target.name.clone());
        }
    }
    HostVolumes::new(views.iter().filter_map(|v| Some((v.target.name.clone(), v.docker.clone()?))).collect(), placed)
}

/// Observe, pin images to digests, and plan, reading history where sets have changes pending
/// (and for `consult`). Pin notes and problems are printed here; the flag says whether every
/// set could be pinned.
async fn prepare(
    input: &Input,
    resolved: &Resolved,
    prune: bool,
    consult: &BTreeSet<SetKey>,
    drift: Option<&DriftLog>,
) -> (Vec<HostView>, HostVolumes, Prepared, bool) {
    let mut views = observe_all(resolved.hosts.clone()).await;
    // Drift only the event stream showed (`berth watch` follows it).
    if let Some(log) = drift {
        for v in &mut views {
            if let Ok(observed) = &mut v.observed {
                log.mark(&v.target.name, observed);
            }
        }
    }
    let pins = fleet::pin_images(&mut views, &resolved.image_policies, &resolved.runtime).await;
    eprint!("{pins}");
    let pinned = pins.problems().next().is_none();
    let store = host_history(&views);
    let rebuild = |key: &SetKey, t: &serde_json::Value| {
        input::resolve::rebuild(input, prune, key, t).map_err(|e| std::sync::Arc::new(e) as fleet::RebuildError)
    };
    let prepared = fleet::prepare_consulting(&mut views, &resolved.set_infos, &store, &rebuild, consult).await;
    (views, store, prepared, pinned)
}

/// What the plan cannot show: sets held at an earlier revision, sets that cannot run.
fn held_notes(prepared: &Prepared) -> String {
    let mut out = String::new();
    let mut keys: Vec<&SetKey> = prepared.held.keys().chain(prepared.errors.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if let Some(h) = prepared.held.get(key) {
            out.push_str(&held_text(key, h));
            out.push('\n');
        }
        if let Some(e) = prepared.errors.get(key) {
            out.push_str(&format!("set {key}: {e}\n"));
        }
    }
    out
}

/// For `plan`: the sets with changes that wait for others (`dependsOn`), and for what.
pub(super) fn order_notes(resolved: &Resolved, prepared: &Prepared) -> String {
    let pending: BTreeSet<&SetKey> = prepared
        .plans
        .iter()
        .flatten()
        .flat_map(|p| &p.sets)
        .filter(|sp| sp.revision.is_some())
        .map(|sp| &sp.set)
        .collect();
    let mut out = String::new();
    for key in pending {
        let Some(info) = resolved.set_infos.get(key).filter(|i| !i.depends_on.is_empty()) else { continue };
        let deps: Vec<String> = info.depends_on.iter().map(ToString::to_string).collect();
        out.push_str(&format!("set {key}: its new containers are created after {} (dependsOn)\n", deps.join(", ")));
    }
    out
}

fn held_text(key: &SetKey, h: &fleet::Held) -> String {
    let r = &h.record;
    let what = match r.outcome {
        Outcome::RolledBack => "was rolled back",
        _ => "failed",
    };
    let why = r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
    let staying = match &h.fallback {
        Some(f) => format!("the set stays on revision {} ({})", f.number, f.hash),
        None => "the set is left as it is (autoRollback is off)".to_string(),
    };
    format!(
        "set {key}: revision {} ({}) {what}{why}\n  {staying}; change the spec to roll out again.",
        r.number, r.hash
    )
}

pub(super) async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (input, resolved) = load(&args.input, args.prune)?;
    let (views, _, prepared, pinned) = prepare(&input, &resolved, args.prune, &BTreeSet::new(), None).await;
    let builds = fleet::images::pending_builds(&views, &resolved.images).await;
    for (image, tag, why) in &builds {
        println!("image {image}: would build {tag} ({why})");
    }
    let plans = &prepared.plans;
    match args.output {
        PlanFormat::Text => {
            print!("{}{}{}", render::plan_text(&views, plans), order_notes(&resolved, &prepared), held_notes(&prepared))
        }
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&render::plan_json(&views, plans))?),
    }
    let unreachable = views.iter().any(|v| v.observed.is_err()) || !prepared.errors.is_empty() || !pinned;
    let pending = plans.iter().flatten().any(|p| !p.is_empty()) || !builds.is_empty();
    Ok(if unreachable {
        ExitCode::from(1)
    } else if pending {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    apply_consulting(args, &BTreeSet::new()).await
}

/// `apply`, reading the history of the sets in `consult` whatever the hosts run (for
/// `berth rollback`, whose target the hosts do not run yet while nothing else is pending).
pub(super) async fn apply_consulting(args: ApplyArgs, consult: &BTreeSet<SetKey>) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (input, resolved) = load(&args.input, args.prune)?;
    let (mut views, store, prepared, pinned) = prepare(&input, &resolved, args.prune, consult, None).await;
    if args.dry_run {
        print!("{}{}", render::plan_text(&views, &prepared.plans), held_notes(&prepared));
        let failed = views.iter().any(|v| v.observed.is_err()) || !pinned;
        return Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    if !make_images(&views, &resolved, false).await {
        return Ok(ExitCode::from(1));
    }
    let changes: usize = prepared.plans.iter().flatten().map(|p| p.change_count()).sum();
    let report = execute(&mut views, prepared, &resolved, &input, args.prune, &store, args.concurrency).await;
    let ok = report_run(&views, &report, changes, started, pinned);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Build the input's Images that are missing and carry or push them to where they run,
/// saying what was done. `false` (and nothing of any set touched) when one failed.
pub(super) async fn make_images(views: &[HostView], resolved: &Resolved, no_cache: bool) -> bool {
    if resolved.images.is_empty() {
        return true;
    }
    let progress = super::progress::BuildLines;
    let mut ok = true;
    let options = fleet::images::EnsureOptions { no_cache, push: false, distribute: true };
    for o in fleet::images::ensure_images(views, &resolved.images, &progress, &options).await {
        if o.built {
            println!("image {}: built {}", o.image, o.tag);
        }
        if !o.carried_to.is_empty() {
            println!("image {}: carried {} to {}", o.image, o.tag, o.carried_to.join(", "));
        }
        if let Some(d) = &o.pushed {
            println!("image {}: pushed {} ({d})", o.image, o.tag);
        }
        if let Some(e) = &o.error {
            ok = false;
            eprintln!("error: {e}\n  no set was changed; the containers that run keep running");
        }
    }
    ok
}

/// One apply pass over input already read (for `watch`): returns whether it all succeeded.
pub(super) async fn converge_once(
    input: &Input,
    resolved: &Resolved,
    prune: bool,
    concurrency: u16,
    drift: &DriftLog,
) -> bool {
    let started = Instant::now();
    let (mut views, store, prepared, pinned) = prepare(input, resolved, prune, &BTreeSet::new(), Some(drift)).await;
    if !make_images(&views, resolved, false).await {
        return false;
    }
    let changes: usize = prepared.plans.iter().flatten().map(|p| p.change_count()).sum();
    let report = execute(&mut views, prepared, resolved, input, prune, &store, concurrency).await;
    report_run(&views, &report, changes, started, pinned)
}

pub(super) async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (input, mut resolved) = load(&args.input, false)?;
    // Per host, the sets placed there, and the volumes each set mounts, before the desired
    // state is cleared: volumes are reclaimed only where their set ran.
    let placed: Vec<BTreeSet<SetKey>> =
        resolved.hosts.iter().map(|h| h.desired.iter().map(|d| d.key.clone()).collect()).collect();
    let mut volumes: BTreeMap<SetKey, BTreeSet<String>> = BTreeMap::new();
    for d in resolved.hosts.iter().flat_map(|h| &h.desired) {
        volumes.entry(d.key.clone()).or_default().extend(d.spec.volumes());
    }
    for h in &mut resolved.hosts {
        h.desired.clear();
    }
    let (mut views, _, prepared, _) = prepare(&input, &resolved, false, &BTreeSet::new(), None).await;
    let changes: usize = prepared.plans.iter().flatten().map(|p| p.change_count()).sum();
    // The history of a deleted set goes with it (from the hosts it was placed on).
    let store = HostVolumes::new(
        views.iter().filter_map(|v| Some((v.target.name.clone(), v.docker.clone()?))).collect(),
        resolved.sets.iter().map(|k| (k.clone(), views.iter().map(|v| v.target.name.clone()).collect())).collect(),
    );
    let report = execute(&mut views, prepared, &resolved, &input, false, &store, args.concurrency).await;
    let mut ok = report_run(&views, &report, changes, started, true);
    if ok {
        for key in &resolved.sets {
            if let Ok(history) = store.load(key).await {
                for r in history.records() {
                    if let Err(e) = store.write(key, &HistoryWrite::Delete(r.clone())).await {
                        eprintln!("warning: {e}");
                    }
                }
            }
        }
    }
    if ok {
        reclaim_default_networks(&views, &resolved.sets).await;
    }
    if args.volumes && ok && !reclaim_volumes(&views, &placed, &volumes).await {
        ok = false;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// After a delete: each namespace's default network goes on every host where nothing is
/// attached to it any more (as compose's `down` removes its project network). One that other
/// containers still use, or that berth did not make, stays.
async fn reclaim_default_networks(views: &[HostView], sets: &[SetKey]) {
    let namespaces: BTreeSet<&str> = sets.iter().map(|k| k.namespace.as_str()).collect();
    for view in views {
        let Some(d) = &view.docker else { continue };
        for ns in &namespaces {
            let name = crate::engine::default_network(ns);
            match docker::network::reclaim(&view.target.name, d, &name).await {
                Ok(docker::network::Reclaim::Removed) => println!("{}: removed network {name}", view.target.name),
                Ok(_) => {}
                Err(e) => eprintln!("warning: {}: {e}", view.target.name),
            }
        }
    }
}

/// `delete --volumes`: on each host where a set ran (placed there, or had containers there
/// before this delete), remove the named volumes it mounts that berth created for it. A
/// volume that is not the set's, or that a container still uses, is kept and said so.
async fn reclaim_volumes(
    views: &[HostView],
    placed: &[BTreeSet<SetKey>],
    volumes: &BTreeMap<SetKey, BTreeSet<String>>,
) -> bool {
    let mut ok = true;
    for (view, placed) in views.iter().zip(placed) {
        let Some(d) = &view.docker else { continue };
        let host = &view.target.name;
        for (key, vols) in volumes {
            let ran = placed.contains(key) || view.observed.as_deref().unwrap_or(&[]).iter().any(|c| &c.set == key);
            if !ran {
                continue;
            }
            for v in vols {
                match docker::volume::reclaim(host, d, v, key).await {
                    Ok(Reclaim::Removed) => println!("{host}: removed volume {v}"),
                    Ok(Reclaim::Absent) => {}
                    Ok(Reclaim::NotOwned) => println!("{host}: kept volume {v}: berth did not create it for {key}"),
                    Ok(Reclaim::InUse) => println!("{host}: kept volume {v}: still in use by a container"),
                    Err(e) => {
                        ok = false;
                        eprintln!("error: {host}: {e}");
                    }
                }
            }
        }
    }
    ok
}

/// Execute a prepared run with a progress bar (or plain lines off a terminal).
async fn execute(
    views: &mut [HostView],
    prepared: Prepared,
    resolved: &Resolved,
    input: &Input,
    prune: bool,
    store: &dyn HistoryStore,
    concurrency: u16,
) -> FleetReport {
    let total: usize = prepared
        .plans
        .iter()
        .flatten()
        .map(|p| {
            p.sets
                .iter()
                .map(|s| s.prepare.len() + s.changes.iter().map(|c| c.steps.len()).sum::<usize>())
                .sum::<usize>()
        })
        .sum();
    if total > 0 {
        print!("{}", render::plan_text(views, &prepared.plans));
    } else {
        for (v, p) in views.iter().zip(&prepared.plans) {
            print!("{}", render::drift_text(&v.target.name, p.as_ref()));
        }
    }
    print!("{}", held_notes(&prepared));
    let progress = TerminalProgress::new(total as u64);
    let options = ExecOptions::new(concurrency as usize, resolved.runtime.clone());
    let rebuild = |key: &SetKey, t: &serde_json::Value| {
        input::resolve::rebuild(input, prune, key, t).map_err(|e| std::sync::Arc::new(e) as fleet::RebuildError)
    };
    // Every dependency is in the input: validation refused any other.
    let outside = HashMap::new();
    let ctx = fleet::RunContext {
        sets: &resolved.set_infos,
        store,
        rebuild: &rebuild,
        options: &options,
        progress: &progress,
        outside: &outside,
    };
    let report = fleet::execute(views, prepared, &ctx).await;
    progress.finish();
    report
}

/// Print what happened. Returns whether everything succeeded.
/// `ok` is false when an earlier stage (pinning) already failed and said so.
fn report_run(views: &[HostView], report: &FleetReport, changes: usize, started: Instant, mut ok: bool) -> bool {
    // Changes of paused sets were planned but wait: they are not counted as made.
    let mut waiting = 0;
    for v in views {
        if let Err(e) = &v.observed {
            ok = false;
            eprintln!("error: host {}: {e}", v.target.name);
        }
    }
    for (v, outcomes) in views.iter().zip(&report.outcomes) {
        for s in outcomes.iter().flat_map(|o| &o.sets) {
            if let Some(e) = &s.error {
                ok = false;
                eprintln!(
                    "error: host {}: set {}: {e}\n  the rollout stopped: {} change(s) done, {} failed, {} not \
                     started; containers not yet replaced keep running",
                    v.target.name, s.set, s.done, s.failed, s.skipped
                );
            }
        }
    }
    for s in &report.sets {
        for h in &s.unreachable {
            if views.iter().any(|v| &v.target.name == h && v.observed.is_ok()) {
                ok = false;
                eprintln!("error: set {}: host {h} was cut off during the rollout; the other hosts went on", s.key);
            }
        }
        match &s.result {
            SetResult::Converged => {}
            SetResult::Paused { pending } => {
                waiting += pending;
                println!("set {}: paused (spec.paused); {pending} change(s) wait", s.key);
            }
            // A revision rolled back by hand stays back on purpose; a failed one is a problem.
            SetResult::Held { by_hand, .. } => ok &= *by_hand,
            SetResult::Failed { failure, rolled_back_to, rollback_error } => {
                ok = false;
                eprintln!("error: set {}: revision {} failed: {failure}", s.key, s.revision.as_deref().unwrap_or("?"));
                match (rolled_back_to, rollback_error) {
                    (Some(n), None) => {
                        eprintln!("  rolled back to revision {n} (autoRollback) on every host it reached")
                    }
                    (Some(n), Some(e)) => eprintln!("  rolling back to revision {n} failed: {e}"),
                    (None, Some(e)) => eprintln!("  no rollback: {e}"),
                    (None, None) => eprintln!("  the rollout stopped; hosts not yet reached keep the old revision"),
                }
            }
            SetResult::Waiting(unmet) => {
                ok = false;
                for u in unmet {
                    eprintln!(
                        "error: set {}: {u}\n  its new revision was not created there; its old containers keep running",
                        s.key
                    );
                }
            }
            SetResult::Error(e) => {
                ok = false;
                // A step's error was said above, with its host.
                if !matches!(e, RunError::Host { .. }) {
                    eprintln!("error: set {}: {e}", s.key);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let changes = changes.saturating_sub(waiting);
    if ok {
        if changes == 0 && waiting > 0 {
            println!("No changes made: {waiting} wait on paused sets ({:.2}s).", elapsed.as_secs_f64());
        } else if changes == 0 {
            println!("No changes: {} host(s) already converged ({:.2}s).", views.len(), elapsed.as_secs_f64());
        } else {
            println!("Converged: {changes} change(s) on {} host(s) in {:.2}s.", views.len(), elapsed.as_secs_f64());
        }
    }
    ok
}
