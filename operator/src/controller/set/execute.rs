//! Observing and converging hosts through the operator's connection pool (whose event
//! followers trigger reconciles), and what a run changed, in a line.

use crate::controller::Context;
use crate::controller::status::HostReport;
use crate::docker::{self, ExecOptions};
use crate::engine::{Action as PlanAction, HostPlan, SetKey, plan_host};
use crate::fleet::HostView;
use crate::target::HostTarget;

/// Connect through the pool and observe one host.
pub(super) async fn view_of(target: &HostTarget, ctx: &Context) -> HostView {
    let docker = match ctx.pool.get(&target.name, &target.endpoint).await {
        Ok(d) => d,
        Err(e) => return HostView { target: target.clone(), docker: None, observed: Err(e) },
    };
    let observed = ctx.pool.observe(&target.name, &docker).await;
    if observed.is_err() {
        ctx.pool.forget(&target.name).await;
    }
    HostView { target: target.clone(), docker: Some(docker), observed }
}

/// Observe, plan and execute one host without waves or history (the finalizer's removal of
/// a deleted set); report what is there afterwards.
pub(super) async fn converge_host(
    target: &HostTarget,
    ctx: &Context,
    options: &ExecOptions,
    key: &crate::engine::SetKey,
) -> HostReport {
    let desired = target.desired.iter().find(|d| &d.key == key).map(|d| d.replicas).unwrap_or(0);
    let mut report = HostReport { host: target.name.clone(), desired, ..Default::default() };
    let docker = match ctx.pool.get(&target.name, &target.endpoint).await {
        Ok(d) => d,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let observed = match ctx.pool.observe(&target.name, &docker).await {
        Ok(o) => o,
        Err(e) => {
            ctx.pool.forget(&target.name).await;
            report.error = Some(e.to_string());
            return report;
        }
    };
    let plan = plan_host(&target.name, &target.desired, &observed, &target.scope);
    let mut after = observed;
    if !plan.is_empty() {
        let outcome = docker::execute_host(&docker, &plan, &target.desired, options, &StepCounter(&ctx.metrics)).await;
        for s in &outcome.sets {
            if let Some(e) = &s.error {
                report.error = Some(format!("{}: {e}", s.set));
            }
        }
        report.changed = change_summary(&plan, key, std::slice::from_ref(&outcome));
        after = match ctx.pool.observe(&target.name, &docker).await {
            Ok(o) => o,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let again = plan_host(&target.name, &target.desired, &after, &target.scope);
        report.pending = again.change_count();
        report.note_drift(key, Some((&plan, std::slice::from_ref(&outcome))), &again);
    } else {
        report.pending = plan.change_count();
        report.note_drift(key, None, &plan);
    }
    // Every observation covers all managed containers of the host: keep the gauge fresh.
    let mut by_state = std::collections::BTreeMap::new();
    for c in &after {
        *by_state.entry(c.state.to_string()).or_insert(0) += 1;
    }
    ctx.count_containers(&format!("{}/{}", key.namespace, target.name), by_state);
    report.containers = after.into_iter().filter(|c| &c.set == key).collect();
    report
}

/// What a host's execution did to the set, in words (for an Event).
pub(super) fn change_summary(plan: &HostPlan, key: &SetKey, ran: &[docker::HostOutcome]) -> Option<String> {
    let (mut created, mut replaced, mut removed) = (0, 0, 0);
    for sp in plan.sets.iter().filter(|sp| &sp.set == key) {
        for c in &sp.changes {
            match c.action {
                PlanAction::Create | PlanAction::Start => created += 1,
                PlanAction::Replace { .. } | PlanAction::Complete => replaced += 1,
                PlanAction::Remove { .. } => removed += 1,
            }
            tracing::info!(host = %plan.host, set = %sp.set, container = %c.container, action = ?c.action, "change");
        }
    }
    let done: usize = ran.iter().flat_map(|o| &o.sets).filter(|s| &s.set == key).map(|s| s.done).sum();
    (created + replaced + removed > 0).then(|| {
        format!("host {}: {created} to create, {replaced} to replace, {removed} to remove; {done} done", plan.host)
    })
}

/// The executor's finished steps, counted in `berth_docker_steps_total`.
pub(super) struct StepCounter<'a>(pub(super) &'a crate::telemetry::Metrics);

impl docker::Progress for StepCounter<'_> {
    fn step_finished(&self, _host: &str, _set: &SetKey, step: &crate::engine::Step, _elapsed: std::time::Duration) {
        self.0.step_finished(step.kind());
    }
}
