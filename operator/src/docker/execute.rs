//! Executing a host's plan through bollard.
//!
//! Sets on a host run side by side; within a set, the prepare steps (network, volume, image)
//! run first, then the changes run concurrently up to a bound (one at a time for StopFirst,
//! so at most one ordinal is down). A change's steps run in order. The first failure stops
//! the set's rollout: changes not yet begun are skipped, so the old containers keep serving.
//!
//! A create whose name is held by a foreign container (one without berth's labels: a squatter)
//! follows the set's drift policy: Replace stops it and renames it aside
//! (`<name>.squatter-<id>`), never deleting a container berth did not make, and creates berth's;
//! Report fails with [`DockerError::Squatter`]. Either way [`SetOutcome::drift`] says so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum, NetworkConnectRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use super::{DockerError, bounds, convert, network, status_of};
use crate::engine::{
    Change, DesiredSet, Drift, DriftPolicy, DriftReport, HostPlan, NameHolder, Pull, SetKey, SetPlan, Step, labels,
    squatter_name,
};
use crate::target::SetRuntime;

/// How long a create waits for a container being removed to give up its name.
const NAME_RELEASE: Duration = Duration::from_secs(10);

/// Options for executing plans, shared by every host and set of a run.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Concurrent changes per host.
    pub concurrency: usize,
    pub sets: HashMap<SetKey, SetRuntime>,
    /// One semaphore of `concurrency` permits per host, shared by every [`execute_host`] call
    /// with these options (and their clones): a run executes its sets side by side, one call
    /// per set, and the bound is per host, not per set.
    permits: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl ExecOptions {
    pub fn new(concurrency: usize, sets: HashMap<SetKey, SetRuntime>) -> ExecOptions {
        ExecOptions { concurrency, sets, permits: Arc::default() }
    }

    fn permits(&self, host: &str) -> Arc<Semaphore> {
        let mut permits = self.permits.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        permits.entry(host.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.concurrency.max(1)))).clone()
    }
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions::new(8, HashMap::new())
    }
}

/// Hooks for showing progress. Every method has an empty default.
pub trait Progress: Send + Sync {
    fn step_started(&self, _host: &str, _set: &SetKey, _step: &Step) {}
    fn step_finished(&self, _host: &str, _set: &SetKey, _step: &Step, _elapsed: Duration) {}
    fn pull_progress(&self, _host: &str, _image: &str, _layer: &str, _status: &str, _current: i64, _total: i64) {}
}

/// How a set's plan went on one host.
#[derive(Clone, Debug)]
pub struct SetOutcome {
    pub set: SetKey,
    /// Changes carried out in full.
    pub done: usize,
    /// Changes not begun because an earlier one failed.
    pub skipped: usize,
    /// Changes that failed part-way (their finished steps stay done).
    pub failed: usize,
    /// The first error; [`DockerError::not_ready`] tells a failed revision from a host's trouble.
    pub error: Option<DockerError>,
    /// Foreign containers found on the set's names: renamed aside (`replaced`), or refused.
    pub drift: Vec<DriftReport>,
}

/// How a host's plan went.
#[derive(Clone, Debug)]
pub struct HostOutcome {
    pub host: String,
    pub sets: Vec<SetOutcome>,
}

impl HostOutcome {
    pub fn errors(&self) -> impl Iterator<Item = (&SetKey, &DockerError)> {
        self.sets.iter().filter_map(|s| s.error.as_ref().map(|e| (&s.set, e)))
    }
}

/// Run a host's plan. `desired` provides what `Create` steps need.
pub async fn execute_host(
    docker: &Docker,
    plan: &HostPlan,
    desired: &[DesiredSet],
    options: &ExecOptions,
    progress: &dyn Progress,
) -> HostOutcome {
    let permits = options.permits(&plan.host);
    // Sets that free host ports for others finish first; the rest then run side by side.
    let (first, rest): (Vec<&SetPlan>, Vec<&SetPlan>) = plan.sets.iter().partition(|sp| sp.frees_ports);
    let mut sets = run_sets(docker, plan, &first, desired, options, progress, &permits).await;
    sets.extend(run_sets(docker, plan, &rest, desired, options, progress, &permits).await);
    HostOutcome { host: plan.host.clone(), sets }
}

async fn run_sets(
    docker: &Docker,
    plan: &HostPlan,
    set_plans: &[&SetPlan],
    desired: &[DesiredSet],
    options: &ExecOptions,
    progress: &dyn Progress,
    permits: &Arc<Semaphore>,
) -> Vec<SetOutcome> {
    let runs = set_plans.iter().map(|sp| {
        let d = desired.iter().find(|d| d.key == sp.set);
        let rt = options
            .sets
            .get(&sp.set)
            .cloned()
            .unwrap_or_else(|| SetRuntime { progress_deadline: Duration::from_secs(600), credentials: None });
        let ctx = StepContext {
            docker,
            host: &plan.host,
            set: &sp.set,
            desired: d,
            runtime: rt,
            progress,
            drift: std::sync::Mutex::new(Vec::new()),
        };
        run_set(ctx, sp, permits.clone()).boxed()
    });
    futures::future::join_all(runs).await
}

struct StepContext<'a> {
    docker: &'a Docker,
    host: &'a str,
    set: &'a SetKey,
    desired: Option<&'a DesiredSet>,
    runtime: SetRuntime,
    progress: &'a dyn Progress,
    /// Squatters met while creating.
    drift: std::sync::Mutex<Vec<DriftReport>>,
}

async fn run_set(ctx: StepContext<'_>, sp: &SetPlan, permits: Arc<Semaphore>) -> SetOutcome {
    let mut outcome =
        SetOutcome { set: sp.set.clone(), done: 0, skipped: 0, failed: 0, error: None, drift: Vec::new() };
    for step in &sp.prepare {
        if let Err(e) = run_step(&ctx, step).await {
            outcome.error = Some(DockerError::Preparing { what: describe_prepare(step), source: Box::new(e) });
            outcome.skipped = sp.changes.len();
            return outcome;
        }
    }
    let failed = AtomicBool::new(false);
    let limit = if sp.sequential { 1 } else { sp.changes.len().max(1) };
    let tasks: Vec<_> = sp.changes.iter().map(|change| change_task(&ctx, change, &failed, permits.clone())).collect();
    let results: Vec<Result<bool, DockerError>> = futures::stream::iter(tasks).buffer_unordered(limit).collect().await;
    for r in results {
        match r {
            Ok(true) => outcome.done += 1,
            Ok(false) => outcome.skipped += 1,
            Err(e) => {
                outcome.failed += 1;
                if outcome.error.is_none() {
                    outcome.error = Some(e);
                }
            }
        }
    }
    outcome.drift = ctx.drift.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    outcome
}

fn describe_prepare(step: &Step) -> &'static str {
    match step {
        Step::EnsureNetwork { .. } => "preparing the network",
        Step::EnsureVolume { .. } => "preparing the volume",
        Step::EnsureImage { .. } => "preparing the image",
        _ => "preparing",
    }
}

/// One change as a task: skipped when an earlier change of the set failed. Boxed, with named
/// lifetimes, so callers can prove their futures `Send` (rust-lang/rust#102211).
fn change_task<'a>(
    ctx: &'a StepContext<'a>,
    change: &'a Change,
    failed: &'a AtomicBool,
    permits: Arc<Semaphore>,
) -> futures::future::BoxFuture<'a, Result<bool, DockerError>> {
    async move {
        if failed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let _permit = permits.acquire_owned().await.expect("the semaphore is never closed");
        if failed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let r = run_change(ctx, change).await;
        if r.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        r.map(|()| true)
    }
    .boxed()
}

async fn run_change(ctx: &StepContext<'_>, change: &Change) -> Result<(), DockerError> {
    for step in &change.steps {
        run_step(ctx, step).await?;
    }
    Ok(())
}

async fn run_step(ctx: &StepContext<'_>, step: &Step) -> Result<(), DockerError> {
    let started = Instant::now();
    ctx.progress.step_started(ctx.host, ctx.set, step);
    let r = match step {
        Step::EnsureNetwork { name } => network::ensure(ctx.host, ctx.docker, name).await,
        Step::EnsureVolume { name } => ensure_volume(ctx, name).await,
        Step::EnsureImage { image, pull } => ensure_image(ctx, image, *pull).await,
        Step::Create { name, ordinal } => create(ctx, name, *ordinal).await,
        Step::Start { name } => start(ctx, name).await,
        Step::WaitReady { name } => wait_ready(ctx, name).await,
        Step::WaitExit { name } => wait_exit(ctx, name).await,
        Step::Stop { id, name } => match stop_container(ctx, id, name).await? {
            Err(e) if status_of(&e) != Some(404) => Err(DockerError::api("stop container", name.clone(), e)),
            _ => Ok(()),
        },
        Step::Rename { id, from, to } => rename(ctx, id, from, to).await,
        Step::Remove { id, name } => {
            // v=true drops the container's anonymous volumes; named volumes are never removed here.
            let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            match bounds::within(
                ctx.host,
                "remove container",
                bounds::CHANGE,
                ctx.docker.remove_container(id, Some(opts)),
            )
            .await?
            {
                // 404: gone already; 409 (forced): its removal is in progress, by someone else.
                Err(e) if !matches!(status_of(&e), Some(404 | 409)) => {
                    Err(DockerError::api("remove container", name.clone(), e))
                }
                _ => Ok(()),
            }
        }
    };
    if r.is_ok() {
        ctx.progress.step_finished(ctx.host, ctx.set, step, started.elapsed());
    }
    tracing::debug!(host = ctx.host, set = %ctx.set, ?step, ok = r.is_ok(), elapsed_ms = started.elapsed().as_millis() as u64, "step");
    r
}

/// A volume berth creates is labelled with the set whose step creates it (what reclaiming
/// checks); one that exists already is used as it is (Docker cannot relabel it).
async fn ensure_volume(ctx: &StepContext<'_>, name: &str) -> Result<(), DockerError> {
    let (host, docker) = (ctx.host, ctx.docker);
    match bounds::read(host, "inspect volume", bounds::READ, || docker.inspect_volume(name)).await? {
        Ok(_) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => {
            let req = VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(super::volume::labels_for(ctx.set)),
                ..Default::default()
            };
            bounds::within(host, "create volume", bounds::CHANGE, docker.create_volume(req))
                .await?
                .map(|_| ())
                .map_err(|e| DockerError::api("create volume", name, e))
        }
        Err(e) => Err(DockerError::api("inspect volume", name, e)),
    }
}

async fn ensure_image(ctx: &StepContext<'_>, image: &str, pull: Pull) -> Result<(), DockerError> {
    if pull != Pull::Always {
        match bounds::read(ctx.host, "inspect image", bounds::READ, || ctx.docker.inspect_image(image)).await? {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {
                if pull == Pull::Never {
                    return Err(DockerError::ImageMissing { image: image.to_string() });
                }
            }
            Err(e) => return Err(DockerError::api("inspect image", image, e)),
        }
    }
    let opts = CreateImageOptionsBuilder::default().from_image(image).build();
    // bollard sends X-Registry-Auth in standard base64, which the engine reads as no
    // credentials when it holds `+` or `/`: re-encoded URL-safe (docker::build).
    let client = match &ctx.runtime.credentials {
        Some(_) => ctx.docker.clone().with_request_modifier(super::build::url_safe_registry_auth),
        None => ctx.docker.clone(),
    };
    let mut stream = client.create_image(Some(opts), None, ctx.runtime.credentials.clone());
    // Bounded twice: each progress message within PULL_IDLE, the whole pull within the deadline.
    let overall = bounds::pull(ctx.runtime.progress_deadline);
    let until = tokio::time::Instant::now() + overall;
    let pulling = format!("pull image {image}");
    loop {
        let idle = bounds::within(ctx.host, &pulling, bounds::PULL_IDLE, stream.try_next());
        let next = tokio::time::timeout_at(until, idle)
            .await
            .map_err(|_| bounds::timed_out(ctx.host, &pulling, overall))??;
        let Some(info) = next.map_err(|e| DockerError::api("pull image", image, e))? else { break };
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(DockerError::Api { op: "pull image", target: image.to_string(), message: err });
        }
        let (current, total) =
            info.progress_detail.map(|p| (p.current.unwrap_or(0), p.total.unwrap_or(0))).unwrap_or((0, 0));
        ctx.progress.pull_progress(
            ctx.host,
            image,
            info.id.as_deref().unwrap_or(""),
            info.status.as_deref().unwrap_or(""),
            current,
            total,
        );
    }
    Ok(())
}

async fn create(ctx: &StepContext<'_>, name: &str, ordinal: u32) -> Result<(), DockerError> {
    let d = ctx.desired.ok_or_else(|| DockerError::Api {
        op: "create container",
        target: name.to_string(),
        message: "no desired state for this set (a planner bug)".into(),
    })?;
    let labels: HashMap<String, String> = d.container_labels(ordinal).into_iter().collect();
    let (networks, aliases) = (d.networks(), d.aliases(ordinal));
    let body = || convert::create_body(&d.spec, labels.clone(), &networks, &aliases);
    let opts = CreateContainerOptionsBuilder::default().name(name).build();
    let deadline = Instant::now() + NAME_RELEASE;
    loop {
        let e = match bounds::within(
            ctx.host,
            "create container",
            bounds::CHANGE,
            ctx.docker.create_container(Some(opts.clone()), body()),
        )
        .await?
        {
            Ok(_) => break,
            Err(e) if status_of(&e) == Some(409) => e,
            Err(e) => return Err(DockerError::api("create container", name, e)),
        };
        let existing = match bounds::read(ctx.host, "inspect container", bounds::READ, || {
            ctx.docker.inspect_container(name, None)
        })
        .await?
        {
            Ok(c) => c,
            // Removed between the two calls: the name is free now.
            Err(i) if status_of(&i) == Some(404) && Instant::now() < deadline => continue,
            Err(_) => return Err(DockerError::api("create container", name, e)),
        };
        // A `docker rm -f` (the very event that woke this reconcile) is still removing it.
        if existing.state.as_ref().and_then(|s| s.status) == Some(ContainerStateStatusEnum::REMOVING)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let id = existing.id.clone().unwrap_or_default();
        let l = existing.config.and_then(|c| c.labels).unwrap_or_default();
        // Decided as the simulated host decides (engine::NameHolder).
        let holder = d.name_holder(ordinal, |k| l.get(k).map(String::as_str));
        if holder == NameHolder::Foreign {
            let short: String = id.chars().take(12).collect();
            let replace = d.drift_policy == DriftPolicy::Replace;
            ctx.drift.lock().unwrap_or_else(|p| p.into_inner()).push(DriftReport {
                set: d.key.clone(),
                container: name.to_string(),
                id: id.clone(),
                kind: Drift::Squatter,
                replaced: replace,
            });
            if !replace {
                return Err(DockerError::Squatter { name: name.to_string(), id: short });
            }
            move_aside(ctx, name, &id).await?;
            continue;
        }
        // A name conflict after a crash is work already done, if the labels say it is ours.
        if holder == NameHolder::OtherOfBerths {
            return Err(DockerError::NameTaken { name: name.to_string() });
        }
        break;
    }
    // API 1.41 attaches one network at create; connect the rest before start.
    for net in networks.iter().skip(1) {
        let req =
            NetworkConnectRequest { container: name.to_string(), endpoint_config: Some(convert::endpoint(&aliases)) };
        match bounds::within(ctx.host, "connect network", bounds::CHANGE, ctx.docker.connect_network(net, req)).await? {
            Err(e) if status_of(&e) != Some(403) && status_of(&e) != Some(409) => {
                return Err(DockerError::api("connect network", format!("{net} to {name}"), e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Start a created container. An engine killed while it started one can come back with the
/// container recorded as never started and its runtime task still there: every start then
/// fails with "task …: already exists". Such a container never ran for berth; it is removed
/// and made afresh, once.
async fn start(ctx: &StepContext<'_>, name: &str) -> Result<(), DockerError> {
    let e = match bounds::within(ctx.host, "start container", bounds::CHANGE, ctx.docker.start_container(name, None))
        .await?
    {
        Ok(()) => return Ok(()),
        Err(e) if is_stale_task(&e) => e,
        Err(e) => return Err(DockerError::api("start container", name, e)),
    };
    let ordinal =
        bounds::read(ctx.host, "inspect container", bounds::READ, || ctx.docker.inspect_container(name, None))
            .await?
            .ok()
            .and_then(|c| c.config?.labels?.get(labels::ORDINAL)?.parse::<u32>().ok())
            .ok_or_else(|| DockerError::api("start container", name, e))?;
    tracing::warn!(
        host = ctx.host,
        set = %ctx.set,
        container = name,
        "the engine holds a stale task for a container it never started (it crashed mid-start): making it afresh"
    );
    let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    match bounds::within(ctx.host, "remove container", bounds::CHANGE, ctx.docker.remove_container(name, Some(opts)))
        .await?
    {
        Err(e) if status_of(&e) != Some(404) => return Err(DockerError::api("remove container", name, e)),
        _ => {}
    }
    create(ctx, name, ordinal).await?;
    bounds::within(ctx.host, "start container", bounds::CHANGE, ctx.docker.start_container(name, None))
        .await?
        .map_err(|e| DockerError::api("start container", name, e))
}

/// Stop a container with its own grace period (its `StopTimeout`, from the spec's
/// `stopGracePeriodSeconds`), told to the engine explicitly, within that grace plus a margin.
/// The engine answers a stop only once the container is down, so bollard's client backstop,
/// which bounds the answer's head, is lifted for this one call.
async fn stop_container(
    ctx: &StepContext<'_>,
    id: &str,
    name: &str,
) -> Result<Result<(), bollard::errors::Error>, DockerError> {
    let configured =
        match bounds::read(ctx.host, "inspect container", bounds::READ, || ctx.docker.inspect_container(id, None))
            .await?
        {
            Ok(c) => c.config.and_then(|c| c.stop_timeout),
            Err(e) if status_of(&e) == Some(404) => return Ok(Err(e)),
            Err(_) => None,
        };
    let (grace, bound) = bounds::stop(configured);
    let opts = StopContainerOptionsBuilder::default().t(grace).build();
    let docker = ctx.docker.clone().with_timeout(bound + Duration::from_secs(1));
    let call = format!("stop container {name} ({grace}s grace)");
    bounds::within(ctx.host, &call, bound, docker.stop_container(id, Some(opts))).await
}

/// The engine refused a start because a runtime task of the container already exists.
fn is_stale_task(e: &bollard::errors::Error) -> bool {
    status_of(e) == Some(500) && super::message_of(e).contains("already exists")
}

/// Rename a (drifted) container aside. 404: gone already, so its name is free, as wanted. A
/// conflict on the new name means a berth that stopped after this very rename left it there:
/// the container has the aside name already when its own id is the one holding it.
async fn rename(ctx: &StepContext<'_>, id: &str, from: &str, to: &str) -> Result<(), DockerError> {
    let opts = RenameContainerOptionsBuilder::default().name(to).build();
    match bounds::within(ctx.host, "rename container", bounds::CHANGE, ctx.docker.rename_container(id, opts)).await? {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) if status_of(&e) == Some(409) => {
            match bounds::read(ctx.host, "inspect container", bounds::READ, || ctx.docker.inspect_container(to, None))
                .await?
            {
                Ok(c) if c.id.as_deref() == Some(id) => Ok(()),
                _ => Err(DockerError::api("rename container", from, e)),
            }
        }
        Err(e) => Err(DockerError::api("rename container", from, e)),
    }
}

/// Stop a foreign container that holds a managed name and rename it aside. berth never deletes
/// a container it did not make: whoever made it can still inspect, restart or remove it.
async fn move_aside(ctx: &StepContext<'_>, name: &str, id: &str) -> Result<(), DockerError> {
    let aside = squatter_name(name, id);
    match stop_container(ctx, id, name).await? {
        // 304: not running; 404: gone meanwhile (the create retry then simply succeeds).
        Err(e) if !matches!(status_of(&e), Some(304 | 404)) => {
            return Err(DockerError::api("stop foreign container", name, e));
        }
        _ => {}
    }
    let rename = ctx.docker.rename_container(id, RenameContainerOptionsBuilder::default().name(&aside).build());
    match bounds::within(ctx.host, "rename container", bounds::CHANGE, rename).await? {
        Err(e) if status_of(&e) != Some(404) => return Err(DockerError::api("rename foreign container", name, e)),
        _ => {}
    }
    tracing::warn!(
        host = ctx.host,
        set = %ctx.set,
        container = name,
        foreign = id,
        renamed_to = %aside,
        "a foreign container held a managed name: stopped it and renamed it aside"
    );
    Ok(())
}

/// The container's state, from one bounded inspect (the readiness and exit waits poll it).
async fn container_state(ctx: &StepContext<'_>, name: &str) -> Result<bollard::models::ContainerState, DockerError> {
    let c = bounds::read(ctx.host, "inspect container", bounds::READ, || ctx.docker.inspect_container(name, None))
        .await?
        .map_err(|e| DockerError::api("inspect container", name, e))?;
    Ok(c.state.unwrap_or_default())
}

/// Poll until running and healthy (or running, without a healthcheck). Fails at once when the
/// container exits or turns unhealthy, and at the set's progress deadline.
async fn wait_ready(ctx: &StepContext<'_>, name: &str) -> Result<(), DockerError> {
    let deadline = Instant::now() + ctx.runtime.progress_deadline;
    let mut interval = Duration::from_millis(50);
    loop {
        let state = container_state(ctx, name).await?;
        let health = state.health.as_ref().and_then(|h| h.status);
        match state.status {
            Some(ContainerStateStatusEnum::RUNNING) => match health {
                None
                | Some(HealthStatusEnum::NONE)
                | Some(HealthStatusEnum::EMPTY)
                | Some(HealthStatusEnum::HEALTHY) => {
                    return Ok(());
                }
                Some(HealthStatusEnum::UNHEALTHY) => {
                    let detail = state
                        .health
                        .and_then(|h| h.log)
                        .and_then(|log| log.last().cloned())
                        .map(|r| {
                            format!(
                                "healthcheck failed (exit {}): {}",
                                r.exit_code.unwrap_or(-1),
                                r.output.unwrap_or_default().trim()
                            )
                        })
                        .unwrap_or_else(|| "healthcheck reports unhealthy".into());
                    return Err(DockerError::NotReady { name: name.to_string(), detail });
                }
                Some(HealthStatusEnum::STARTING) => {}
            },
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                let tail = last_log_lines(ctx.docker, name).await;
                let detail = format!(
                    "exited with code {}{}{}",
                    state.exit_code.unwrap_or(-1),
                    state.error.filter(|e| !e.is_empty()).map(|e| format!(" ({e})")).unwrap_or_default(),
                    if tail.is_empty() { String::new() } else { format!("; last output: {tail}") }
                );
                return Err(DockerError::NotReady { name: name.to_string(), detail });
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(DockerError::Deadline {
                name: name.to_string(),
                seconds: ctx.runtime.progress_deadline.as_secs(),
                detail: format!("state {:?}, health {:?}", state.status, health),
            });
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

/// Poll until a task's container exits: code 0 completes it; any other code, or the set's
/// progress deadline (a task's time limit), fails it with its last output.
async fn wait_exit(ctx: &StepContext<'_>, name: &str) -> Result<(), DockerError> {
    let deadline = Instant::now() + ctx.runtime.progress_deadline;
    let mut interval = Duration::from_millis(50);
    loop {
        let state = container_state(ctx, name).await?;
        match state.status {
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                let code = state.exit_code.unwrap_or(-1);
                if code == 0 && state.status == Some(ContainerStateStatusEnum::EXITED) {
                    return Ok(());
                }
                let tail = last_log_lines(ctx.docker, name).await;
                let detail = format!(
                    "{}{}",
                    state.error.filter(|e| !e.is_empty()).map(|e| format!(" ({e})")).unwrap_or_default(),
                    if tail.is_empty() { String::new() } else { format!("; last output: {tail}") }
                );
                return Err(DockerError::TaskFailed { name: name.to_string(), exit_code: code, detail });
            }
            Some(ContainerStateStatusEnum::CREATED)
                if state.started_at.as_deref().is_none_or(|t| t.starts_with("0001")) =>
            {
                return Err(DockerError::NotReady { name: name.to_string(), detail: "never started".into() });
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(DockerError::Deadline {
                name: name.to_string(),
                seconds: ctx.runtime.progress_deadline.as_secs(),
                detail: format!("the task still runs ({:?})", state.status),
            });
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

async fn last_log_lines(docker: &Docker, name: &str) -> String {
    let opts = LogsOptionsBuilder::default().stdout(true).stderr(true).tail("5").build();
    // Only for an error message: a log that does not come within a read's bound is left out.
    let logs = docker.logs(name, Some(opts)).take(20).collect::<Vec<_>>();
    let chunks = tokio::time::timeout(bounds::READ, logs).await.unwrap_or_default();
    let text: String = chunks.into_iter().filter_map(Result::ok).map(|c| c.to_string()).collect();
    text.trim().replace('\n', " | ")
}

#[cfg(test)]
mod tests {
    use super::is_stale_task;

    #[test]
    fn a_stale_task_is_told_from_other_start_errors() {
        let err = |status_code: u16, message: &str| bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        };
        assert!(is_stale_task(&err(500, "task 74d8a83482b5: already exists")));
        assert!(!is_stale_task(&err(500, "driver failed programming external connectivity")));
        assert!(!is_stale_task(&err(409, "container already exists")));
    }
}
