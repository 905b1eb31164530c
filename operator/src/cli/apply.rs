//! `apply`, `plan` and `delete`: read input, observe every host, plan, and (for apply and
//! delete) execute. They share one pipeline; only what happens to the plan differs.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Instant;

use bollard::Docker;

use super::progress::TerminalProgress;
use super::render;
use super::{ApplyArgs, DeleteArgs, InputArgs, PlanArgs, PlanFormat};
use crate::docker::{self, ExecOptions, HostOutcome, status_of};
use crate::engine::{HostPlan, ObservedContainer, plan_host};
use crate::input::{self, HostTarget, Resolved};

/// One host as observed for this run.
pub(super) struct HostView {
    pub target: HostTarget,
    pub docker: Option<Docker>,
    pub observed: Result<Vec<ObservedContainer>, String>,
}

/// Read and check all input. No host is contacted before this succeeds.
pub(super) fn load_input(args: &InputArgs, prune: bool) -> anyhow::Result<Resolved> {
    let (input, mut errors) = input::load::load_partial(&args.files);
    match input::resolve(&input, prune) {
        Ok(resolved) if errors.is_empty() => Ok(resolved),
        Ok(_) => Err(input::InputErrors(errors).into()),
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

/// Connect to and observe every host, concurrently. A host that fails is reported, not fatal.
pub(super) async fn observe_all(targets: Vec<HostTarget>) -> Vec<HostView> {
    let views = targets.into_iter().map(|target| async move {
        let docker = match docker::connect(&target.endpoint).await {
            Ok(d) => d,
            Err(e) => return HostView { target, docker: None, observed: Err(e.to_string()) },
        };
        let observed = docker::observe(&docker).await.map_err(|e| e.to_string());
        HostView { target, docker: Some(docker), observed }
    });
    futures::future::join_all(views).await
}

/// Plan every host that could be observed.
pub(super) fn plan_all(views: &[HostView]) -> Vec<Option<HostPlan>> {
    views
        .iter()
        .map(|v| v.observed.as_ref().ok().map(|obs| plan_host(&v.target.name, &v.target.desired, obs, &v.target.scope)))
        .collect()
}

pub(super) async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let resolved = load_input(&args.input, args.prune)?;
    let mut views = observe_all(resolved.hosts.clone()).await;
    let pins = docker::pin::pin_images(
        views
            .iter_mut()
            .map(|v| docker::pin::PinHost::new(&mut v.target, v.docker.as_ref(), v.observed.as_deref().ok())),
        &resolved.image_policies,
        &resolved.runtime,
    )
    .await;
    let plans = plan_all(&views);
    eprint!("{pins}");
    match args.output {
        PlanFormat::Text => print!("{}", render::plan_text(&views, &plans)),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&render::plan_json(&views, &plans))?),
    }
    let unreachable = views.iter().any(|v| v.observed.is_err()) || pins.problems().next().is_some();
    let pending = plans.iter().flatten().any(|p| !p.is_empty());
    Ok(if unreachable {
        ExitCode::from(1)
    } else if pending {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let resolved = load_input(&args.input, args.prune)?;
    let mut views = observe_all(resolved.hosts.clone()).await;
    let pins = docker::pin::pin_images(
        views
            .iter_mut()
            .map(|v| docker::pin::PinHost::new(&mut v.target, v.docker.as_ref(), v.observed.as_deref().ok())),
        &resolved.image_policies,
        &resolved.runtime,
    )
    .await;
    let plans = plan_all(&views);
    eprint!("{pins}");
    let pinned = pins.problems().next().is_none();
    if args.dry_run {
        print!("{}", render::plan_text(&views, &plans));
        let failed = views.iter().any(|v| v.observed.is_err()) || !pinned;
        return Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    let outcomes = execute(&views, &plans, &resolved, args.concurrency).await;
    let ok = report(&views, &plans, &outcomes, started, pinned);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(super) async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut resolved = load_input(&args.input, false)?;
    // Volumes per host, remembered before the desired state is cleared.
    let volumes: Vec<BTreeSet<String>> =
        resolved.hosts.iter().map(|h| h.desired.iter().flat_map(|d| d.spec.volumes()).collect()).collect();
    for h in &mut resolved.hosts {
        h.desired.clear();
    }
    let views = observe_all(resolved.hosts.clone()).await;
    let plans = plan_all(&views);
    let outcomes = execute(&views, &plans, &resolved, args.concurrency).await;
    let mut ok = report(&views, &plans, &outcomes, started, true);
    if args.volumes && ok {
        for (view, vols) in views.iter().zip(&volumes) {
            let Some(d) = &view.docker else { continue };
            for v in vols {
                match d.remove_volume(v, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
                    Ok(()) => println!("{}: removed volume {v}", view.target.name),
                    Err(e) if status_of(&e) == Some(404) => {}
                    Err(e) if status_of(&e) == Some(409) => {
                        println!("{}: kept volume {v}: still in use by a container", view.target.name)
                    }
                    Err(e) => {
                        ok = false;
                        eprintln!("error: {}: remove volume {v}: {}", view.target.name, docker::message_of(&e));
                    }
                }
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Execute every host's plan concurrently.
async fn execute(
    views: &[HostView],
    plans: &[Option<HostPlan>],
    resolved: &Resolved,
    concurrency: u16,
) -> Vec<Option<HostOutcome>> {
    let total: usize = plans
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
        print!("{}", render::plan_text(views, plans));
    }
    let progress = TerminalProgress::new(total as u64);
    let options = ExecOptions { concurrency: concurrency as usize, sets: resolved.runtime.clone() };
    let runs = views.iter().zip(plans).map(|(v, p)| {
        let (progress, options) = (&progress, &options);
        async move {
            match (&v.docker, p) {
                (Some(d), Some(plan)) if !plan.is_empty() => {
                    Some(docker::execute_host(d, plan, &v.target.desired, options, progress).await)
                }
                _ => None,
            }
        }
    });
    let out = futures::future::join_all(runs).await;
    progress.finish();
    out
}

/// Print what happened. Returns whether everything succeeded (and `ok` was true: false when
/// an earlier stage already failed and said so).
fn report(
    views: &[HostView],
    plans: &[Option<HostPlan>],
    outcomes: &[Option<HostOutcome>],
    started: Instant,
    mut ok: bool,
) -> bool {
    let mut changes = 0;
    for ((v, p), o) in views.iter().zip(plans).zip(outcomes) {
        if let Err(e) = &v.observed {
            ok = false;
            eprintln!("error: host {}: {e}", v.target.name);
            continue;
        }
        changes += p.as_ref().map(HostPlan::change_count).unwrap_or(0);
        if let Some(o) = o {
            for s in &o.sets {
                if let Some(e) = &s.error {
                    ok = false;
                    eprintln!(
                        "error: host {}: set {}: {e}\n  the rollout stopped: {} change(s) done, {} failed, {} not started; \
                         containers not yet replaced keep running",
                        v.target.name, s.set, s.done, s.failed, s.skipped
                    );
                }
            }
        }
    }
    let elapsed = started.elapsed();
    if ok {
        if changes == 0 {
            println!("No changes: {} host(s) already converged ({:.2}s).", views.len(), elapsed.as_secs_f64());
        } else {
            println!("Converged: {changes} change(s) on {} host(s) in {:.2}s.", views.len(), elapsed.as_secs_f64());
        }
    }
    ok
}
