//! `autoRollback`: every host a failed revision reached goes back to the last revision that
//! was ready everywhere, all at once (each already lost what the failed revision took).

use std::collections::HashMap;

use futures::FutureExt;

use super::HostView;
use super::report::RunError;
use super::waves::RunContext;
use crate::docker::{self, HostOutcome, Progress};
use crate::engine::{DesiredSet, SetKey, plan_host};

/// Return the hosts a failed revision reached to the fallback revision, all at once: each
/// already lost what the failed revision took.
pub(super) async fn roll_back(
    views: &[HostView],
    key: &SetKey,
    by_host: &HashMap<String, DesiredSet>,
    touched: &[usize],
    ctx: &RunContext<'_>,
    progress: &dyn Progress,
    outcomes: &mut Vec<(usize, HostOutcome)>,
) -> Vec<RunError> {
    let runs = touched.iter().map(|&i| {
        let v = &views[i];
        async move {
            let d = v.docker.as_ref()?;
            let mut desired: Vec<DesiredSet> = v.target.desired.iter().filter(|d| &d.key != key).cloned().collect();
            desired.extend(by_host.get(&v.target.name).cloned());
            let observed = match docker::observe(&v.target.name, d).await {
                Ok(o) => o,
                Err(e) => return Some(Err(RunError::Host { host: v.target.name.clone(), source: e })),
            };
            let mut plan = plan_host(&v.target.name, &desired, &observed, &v.target.scope);
            plan.sets.retain(|sp| &sp.set == key);
            let outcome = docker::execute_host(d, &plan, &desired, ctx.options, progress).await;
            Some(Ok((i, outcome)))
        }
        .boxed()
    });
    let mut errors = Vec::new();
    for r in futures::future::join_all(runs).await.into_iter().flatten() {
        match r {
            Ok((i, outcome)) => {
                for (_, e) in outcome.errors() {
                    errors.push(RunError::Host { host: views[i].target.name.clone(), source: e.clone() });
                }
                outcomes.push((i, outcome));
            }
            Err(e) => errors.push(e),
        }
    }
    errors
}
