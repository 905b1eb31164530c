//! `berth status`: what runs for each declared set, per host, from one list call per host.

use std::process::ExitCode;

use berth_crd::{ContainerStatus, HostSetStatus};
use serde::Serialize;

use super::apply::{load_input, observe_all};
use super::{StatusArgs, StatusFormat};
use crate::engine::order::{HostState, gate};
use crate::engine::{Health, ObservedContainer, State};

/// One set's state across hosts.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SetStatus {
    set: String,
    revision: String,
    desired_replicas: u32,
    ready_replicas: u32,
    updated_replicas: u32,
    /// A task (`spec.mode: Task`): its ready replicas are the completed ones.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    task: bool,
    /// What its `dependsOn` still waits for, per host where its revision is not complete.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    waits_for: Vec<String>,
    hosts: Vec<HostSetStatus>,
}

pub(super) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let resolved = load_input(&args.input, false)?;
    let mut views = observe_all(resolved.hosts.clone()).await;
    // The revision a set should run covers its pinned image: the same as apply would choose.
    let pins = crate::fleet::pin_images(&mut views, &resolved.image_policies, &resolved.runtime).await;
    eprint!("{pins}");
    let mut out = Vec::new();
    let mut unreachable = false;
    for key in &resolved.sets {
        let mut s = SetStatus {
            set: key.to_string(),
            revision: String::new(),
            desired_replicas: 0,
            ready_replicas: 0,
            updated_replicas: 0,
            task: resolved.set_infos.get(key).is_some_and(|i| i.task),
            waits_for: Vec::new(),
            hosts: Vec::new(),
        };
        let deps = resolved.set_infos.get(key).map(|i| i.depends_on.as_slice()).unwrap_or_default();
        let states: Vec<HostState<'_>> = views
            .iter()
            .map(|v| HostState {
                host: &v.target.name,
                desired: &v.target.desired,
                observed: v.observed.as_deref().ok(),
            })
            .collect();
        for v in &views {
            let desired = v.target.desired.iter().find(|d| &d.key == key);
            if let Some(d) = desired {
                s.revision = d.revision.clone();
                s.desired_replicas += d.replicas;
            }
            let observed = match &v.observed {
                Ok(o) => o,
                Err(e) => {
                    unreachable = true;
                    if desired.is_some() {
                        s.hosts.push(HostSetStatus {
                            host: v.target.name.clone(),
                            ready: false,
                            message: Some(e.to_string()),
                            ..Default::default()
                        });
                    }
                    continue;
                }
            };
            let mine: Vec<_> = observed.iter().filter(|c| &c.set == key).collect();
            if mine.is_empty() && desired.is_none() {
                continue;
            }
            let rev = desired.map(|d| d.revision.clone());
            let done = |c: &ObservedContainer| if s.task { c.completed() } else { c.is_ready() };
            let ready = mine.iter().filter(|c| done(c) && Some(&c.revision) == rev.as_ref()).count() as u32;
            if desired.is_some() && ready < desired.map_or(0, |d| d.replicas) {
                s.waits_for.extend(gate(deps, &v.target.name, &states).iter().map(ToString::to_string));
            }
            let updated = mine.iter().filter(|c| Some(&c.revision) == rev.as_ref()).count() as u32;
            s.ready_replicas += ready;
            s.updated_replicas += updated;
            let want = desired.map(|d| d.replicas).unwrap_or(0);
            s.hosts.push(HostSetStatus {
                host: v.target.name.clone(),
                revision: rev,
                ready: ready == want && mine.len() as u32 == want,
                containers: mine
                    .iter()
                    .map(|c| ContainerStatus {
                        name: c.name.clone(),
                        id: c.id.chars().take(12).collect(),
                        revision: c.revision.clone(),
                        state: match (c.state, c.exit_code) {
                            (State::Exited, Some(code)) => format!("exited ({code})"),
                            (state, _) => state.to_string(),
                        },
                        health: c.health.map(|h| match h {
                            Health::Starting => "starting".to_string(),
                            Health::Healthy => "healthy".to_string(),
                            Health::Unhealthy => "unhealthy".to_string(),
                        }),
                        image_digest: None,
                        message: None,
                    })
                    .collect(),
                message: None,
            });
        }
        out.push(s);
    }
    match args.output {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        StatusFormat::Yaml => print!("{}", serde_saphyr::to_string(&out)?),
        StatusFormat::Table => print_table(&out),
    }
    for v in &views {
        if let Err(e) = &v.observed {
            eprintln!("error: host {}: {e}", v.target.name);
        }
    }
    Ok(if unreachable { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn print_table(sets: &[SetStatus]) {
    let mut rows = vec![["SET", "HOST", "CONTAINER", "REVISION", "STATE", "HEALTH"].map(String::from).to_vec()];
    for s in sets {
        for h in &s.hosts {
            if h.containers.is_empty() {
                rows.push(vec![
                    s.set.clone(),
                    h.host.clone(),
                    "-".into(),
                    "-".into(),
                    h.message.clone().unwrap_or_else(|| "none".into()),
                    "-".into(),
                ]);
            }
            for c in &h.containers {
                let rev = if Some(&c.revision) == h.revision.as_ref() {
                    c.revision.clone()
                } else {
                    format!("{} (old)", c.revision)
                };
                rows.push(vec![
                    s.set.clone(),
                    h.host.clone(),
                    c.name.clone(),
                    rev,
                    c.state.clone(),
                    c.health.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
        }
    }
    let widths: Vec<usize> = (0..6).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    for s in sets {
        println!(
            "{}{}: {}/{} {}, {}/{} at revision {}",
            s.set,
            if s.task { " (task)" } else { "" },
            s.ready_replicas,
            s.desired_replicas,
            if s.task { "completed" } else { "ready" },
            s.updated_replicas,
            s.desired_replicas,
            s.revision
        );
        for w in &s.waits_for {
            println!("  {w}");
        }
    }
}
