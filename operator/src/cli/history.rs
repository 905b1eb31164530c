//! `history` and `rollback`: a set's revisions as the hosts remember them, and going back.
//!
//! A rollback records the revision it returns to as the newest ready one and the revision it
//! leaves as `RolledBack` after it, then applies as usual: the left revision is *held*, so a
//! later `apply` of the same files keeps the set where the rollback put it. Changing the spec
//! (a new revision) ends the hold.

use anyhow::{Context as _, bail};
use std::process::ExitCode;

use super::apply::{self, HostView};
use super::{HistoryArgs, InputArgs, RollbackArgs};
use crate::engine::SetKey;
use crate::engine::history::{History, Outcome, RevisionRecord};
use crate::fleet::history::{HistoryStore, HostVolumes};

/// Which revision a rollback returns to: `--to-revision N`, else the newest revision that was
/// ready everywhere other than the newest record.
fn rollback_target(
    history: &History,
    key: &SetKey,
    to: Option<u64>,
) -> anyhow::Result<(RevisionRecord, RevisionRecord)> {
    let from = history.latest().cloned().with_context(|| format!("set {key}: no revisions recorded yet"))?;
    let target = match to {
        Some(n) => {
            history.by_number(n).cloned().with_context(|| format!("set {key}: no revision {n} in the history"))?
        }
        None => history
            .last_ready(&from.hash)
            .cloned()
            .with_context(|| format!("set {key}: no earlier revision was ready everywhere"))?,
    };
    if target.hash == from.hash {
        bail!("set {key}: revision {} is the newest revision already", target.number);
    }
    Ok((from, target))
}

/// `NAME` (namespace `default`) or `NAMESPACE/NAME`.
pub(super) fn parse_set(s: &str) -> SetKey {
    match s.split_once('/') {
        Some((ns, name)) => SetKey::new(ns, name),
        None => SetKey::new("default", s),
    }
}

/// The history as a table; `running` says where (or whether) each revision runs now.
pub(super) fn history_table(history: &History, running: impl Fn(&RevisionRecord) -> String) -> String {
    let mut out =
        format!("{:<9} {:<11} {:<11} {:<31} {:<45} {}\n", "REVISION", "HASH", "OUTCOME", "TIME", "IMAGE", "RUNNING");
    for r in history.records() {
        out.push_str(&format!(
            "{:<9} {:<11} {:<11} {:<31} {:<45} {}\n",
            r.number,
            r.hash,
            format!("{:?}", r.outcome),
            r.time,
            r.image,
            running(r)
        ));
        if let Some(m) = &r.message {
            out.push_str(&format!("{:<9} {m}\n", ""));
        }
    }
    out
}

/// Where a revision runs ready, by host name.
fn running_on(views: &[HostView], key: &SetKey, hash: &str) -> String {
    views
        .iter()
        .filter(|v| {
            v.observed.as_ref().is_ok_and(|o| o.iter().any(|c| &c.set == key && c.revision == hash && c.is_ready()))
        })
        .map(|v| v.target.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A set's history as its files' hosts hold it, the hosts as observed, and the set's
/// `revisionHistoryLimit`.
async fn hosts_history(
    files: &[std::path::PathBuf],
    key: &SetKey,
) -> anyhow::Result<(Vec<HostView>, HostVolumes, History, usize)> {
    let (_, resolved) = apply::load(&InputArgs { files: files.to_vec() }, false)?;
    if !resolved.sets.contains(key) {
        bail!("set {key} is not declared in the input");
    }
    let views = apply::observe_all(resolved.hosts.clone()).await;
    for v in &views {
        if let Err(e) = &v.observed {
            eprintln!("warning: host {}: {e}", v.target.name);
        }
    }
    let store = apply::host_history(&views);
    let history = store.load(key).await?;
    let limit = resolved.set_infos.get(key).map(|i| i.policy.history_limit).unwrap_or(10);
    Ok((views, store, history, limit))
}

pub(super) async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let key = parse_set(&args.set);
    if args.files.is_empty() {
        return cluster::history(&key, args.output_json).await;
    }
    let (views, _, history, _) = hosts_history(&args.files, &key).await?;
    if args.output_json {
        println!("{}", serde_json::to_string_pretty(history.records())?);
    } else if history.records().is_empty() {
        println!("set {key}: no revisions recorded yet");
    } else {
        print!("{}", history_table(&history, |r| running_on(&views, &key, &r.hash)));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let key = parse_set(&args.set);
    if args.files.is_empty() {
        return cluster::rollback(&key, args.to_revision).await;
    }
    let (views, store, history, limit) = hosts_history(&args.files, &key).await?;
    let from = history.latest().cloned().with_context(|| format!("set {key}: no revisions recorded yet"))?;
    let target = match args.to_revision {
        Some(n) => {
            history.by_number(n).cloned().with_context(|| format!("set {key}: no revision {n} in the history"))?
        }
        None => history
            .last_ready(&from.hash)
            .cloned()
            .with_context(|| format!("set {key}: no earlier revision was ready everywhere"))?,
    };
    if target.hash == from.hash {
        bail!("set {key}: revision {} is the newest revision already", target.number);
    }
    let mut h = history.clone();
    let mut back = target.clone();
    back.outcome = Outcome::Ready;
    back.time = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut left = from.clone();
    left.outcome = Outcome::RolledBack;
    left.time = k8s_openapi::jiff::Timestamp::now().to_string();
    left.message = Some(format!("rolled back to revision {} by hand", target.number));
    for record in [back, left] {
        let writes = h.record(record, limit.max(2));
        for w in &writes {
            store.write(&key, w).await?;
        }
        h = h.apply(&writes);
    }
    println!(
        "set {key}: rolling back from revision {} ({}) to {} ({})",
        from.number, from.hash, target.number, target.hash
    );
    drop(views);
    // The hosts may run exactly the revision the files declare (nothing pending): the apply
    // must read the history just written all the same, or it changes nothing.
    let args = super::ApplyArgs {
        input: InputArgs { files: args.files },
        prune: false,
        dry_run: false,
        concurrency: args.concurrency,
    };
    apply::apply_consulting(args, &std::collections::BTreeSet::from([key])).await
}

/// The same two commands against the cluster: history from ControllerRevisions, rollback by
/// writing the template back to the ContainerSet.
mod cluster {
    use std::process::ExitCode;

    use anyhow::Context as _;
    use berth_crd::ContainerSet;
    use kube::api::{Api, Patch, PatchParams};

    use super::rollback_target;
    use crate::controller::revisions::ControllerRevisions;
    use crate::engine::SetKey;
    use crate::fleet::history::HistoryStore;

    async fn set(key: &SetKey) -> anyhow::Result<(Api<ContainerSet>, ContainerSet, kube::Client)> {
        let client =
            kube::Client::try_default().await.map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API: {e}"))?;
        let api: Api<ContainerSet> = Api::namespaced(client.clone(), &key.namespace);
        let cs = api.get(&key.name).await.with_context(|| format!("ContainerSet {key}"))?;
        Ok((api, cs, client))
    }

    pub async fn history(key: &SetKey, json: bool) -> anyhow::Result<ExitCode> {
        let (_, cs, client) = set(key).await?;
        let history = ControllerRevisions::new(client, &cs).load(key).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(history.records())?);
            return Ok(ExitCode::SUCCESS);
        }
        let current = cs.status.as_ref().and_then(|s| s.current_revision.clone()).unwrap_or_default();
        let table =
            super::history_table(&history, |r| if r.hash == current { "current".into() } else { String::new() });
        print!("{table}");
        Ok(ExitCode::SUCCESS)
    }

    pub async fn rollback(key: &SetKey, to: Option<u64>) -> anyhow::Result<ExitCode> {
        let (api, cs, client) = set(key).await?;
        let history = ControllerRevisions::new(client, &cs).load(key).await?;
        let (from, target) = rollback_target(&history, key, to)?;
        // Write the template back as the user would: a spec change the operator rolls out
        // (as the newest revision) and GitOps tools see as drift from git.
        // The whole template is replaced (a merge patch would keep fields the target lacks).
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            { "op": "replace", "path": "/spec/template", "value": target.template }
        ]))?;
        api.patch(&key.name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .with_context(|| format!("writing revision {}'s template to ContainerSet {key}", target.number))?;
        println!(
            "set {key}: template of revision {} ({}) written back (was revision {} ({})); the operator rolls it out",
            target.number, target.hash, from.number, from.hash
        );
        Ok(ExitCode::SUCCESS)
    }
}
