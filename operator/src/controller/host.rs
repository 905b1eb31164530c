//! Reconciling one DockerHost: probe the engine over the kept connection and write what it
//! says into status (`Ready`, engine and API version, OS, arch, CPUs, memory, managed
//! containers, last seen). A host that stops answering turns `Ready=False`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_crd::{DockerHost, DockerHostStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::{Context, Error, FIELD_MANAGER};
use crate::docker;
use crate::input::{self, Input};

/// `Ready=False` reasons: the host's spec does not resolve (say, its TLS Secret is missing),
/// TLS with the engine failed (certificate, CA or key), or the engine does not answer.
const INVALID_SPEC: &str = "InvalidSpec";
const TLS_ERROR: &str = "TLSError";
const UNREACHABLE: &str = "Unreachable";

/// How often a host is probed.
const PROBE_EVERY: Duration = Duration::from_secs(30);

pub async fn reconcile(host: Arc<DockerHost>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = host.namespace().unwrap_or_else(|| "default".into());
    let name = host.name_any();
    let mut secrets = Vec::new();
    if let Some(tls) = &host.spec.tls {
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), &ns);
        if let Some(s) = api.get_opt(&tls.secret_name).await? {
            secrets.push(s);
        }
    }
    let input = Input::from_cluster(Vec::new(), vec![(*host).clone()], secrets, Vec::new());
    // Err is (reason, message): the Ready condition says which kind of problem it is.
    let probe = match input::resolve(&input, false) {
        Err(e) => Err((INVALID_SPEC, e.to_string())),
        Ok(resolved) => {
            let target = &resolved.hosts[0];
            match ctx.pool.get(&name, &target.endpoint).await {
                Err(e) if e.is_tls() => Err((TLS_ERROR, e.to_string())),
                Err(e) => Err((UNREACHABLE, e.to_string())),
                // Through the pool: a probe keeps its record of which sets the host holds fresh.
                Ok(d) => match (
                    docker::bounds::read(&name, "GET /version", docker::bounds::READ, || d.version()).await,
                    docker::bounds::read(&name, "GET /info", docker::bounds::READ, || d.info()).await,
                    ctx.pool.observe(&name, &d).await,
                ) {
                    (Ok(Ok(v)), Ok(Ok(i)), Ok(o)) => {
                        let mut by_state = std::collections::BTreeMap::new();
                        for c in &o {
                            *by_state.entry(c.state.to_string()).or_insert(0) += 1;
                        }
                        ctx.count_containers(&format!("{ns}/{name}"), by_state);
                        Ok((v, i, o.len()))
                    }
                    (Err(timeout), _, _) | (_, Err(timeout), _) => {
                        ctx.pool.forget(&name).await;
                        Err((UNREACHABLE, timeout.to_string()))
                    }
                    (Ok(Err(e)), _, _) | (_, Ok(Err(e)), _) => {
                        ctx.pool.forget(&name).await;
                        let reason = if docker::is_tls_failure(&e) { TLS_ERROR } else { UNREACHABLE };
                        Err((reason, docker::message_of(&e)))
                    }
                    (_, _, Err(e)) => Err((if e.is_tls() { TLS_ERROR } else { UNREACHABLE }, e.to_string())),
                },
            }
        }
    };
    let now = Timestamp::now();
    let prev = host.status.clone().unwrap_or_default();
    let mut status = prev.clone();
    let (cond_status, reason, message) = match &probe {
        Ok((v, _, _)) => ("True", "Reachable", format!("Docker {} answers", v.version.clone().unwrap_or_default())),
        Err((reason, e)) => ("False", *reason, e.clone()),
    };
    if let Ok((v, i, managed)) = probe {
        status.engine_version = v.version;
        status.api_version = v.api_version;
        status.os = i.operating_system.or(v.os);
        status.arch = i.architecture.or(v.arch);
        status.cpus = i.ncpu;
        status.memory_bytes = i.mem_total;
        status.managed_containers = Some(managed as i64);
        // Minute resolution keeps the status (and the write) from changing on every probe.
        status.last_seen = Some(now.strftime("%Y-%m-%dT%H:%M:00Z").to_string());
    }
    let since = prev
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == cond_status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    status.conditions = vec![Condition {
        type_: "Ready".into(),
        status: cond_status.into(),
        reason: reason.into(),
        message,
        observed_generation: host.metadata.generation,
        last_transition_time: since,
    }];
    ctx.probed(&format!("{ns}/{name}"));
    if host.status.as_ref() != Some(&status) {
        write_status(&host, &ctx, &status).await?;
    }
    ctx.metrics.reconciled("dockerhost", started.elapsed());
    ctx.succeeded(&format!("host/{ns}/{name}"));
    Ok(Action::requeue(PROBE_EVERY))
}

pub fn error_policy(host: Arc<DockerHost>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(host = %host.name_any(), %error, "host reconcile failed");
    ctx.metrics.failed("dockerhost", error.metric_label());
    Action::requeue(ctx.backoff(&format!("host/{}/{}", host.namespace().unwrap_or_default(), host.name_any())))
}

async fn write_status(host: &DockerHost, ctx: &Context, status: &DockerHostStatus) -> Result<(), Error> {
    let api: Api<DockerHost> = Api::namespaced(ctx.client.clone(), &host.namespace().unwrap_or_default());
    let patch = json!({ "apiVersion": berth_crd::API_VERSION, "kind": "DockerHost", "metadata": { "name": host.name_any() }, "status": status });
    api.patch_status(&host.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}
