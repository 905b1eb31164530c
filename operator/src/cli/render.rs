//! How plans read: a diff a person can scan on a terminal, and JSON for scripts.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::engine::{Action, HostPlan, Reason, SetPlan, Step};
use crate::fleet::HostView;

/// The plan as text, per host and per set.
pub fn plan_text(views: &[HostView], plans: &[Option<HostPlan>]) -> String {
    let mut out = String::new();
    let (mut create, mut replace, mut remove, mut other) = (0, 0, 0, 0);
    for (v, p) in views.iter().zip(plans) {
        match (&v.observed, p) {
            (Err(e), _) => {
                let _ = writeln!(out, "host {} ({}): UNREACHABLE: {e}", v.target.name, v.target.endpoint);
            }
            (Ok(_), Some(p)) if !p.is_empty() => {
                let _ = writeln!(out, "host {} ({})", v.target.name, v.target.endpoint);
                for sp in &p.sets {
                    write_set(&mut out, sp);
                    for c in &sp.changes {
                        match c.action {
                            Action::Create => create += 1,
                            Action::Replace { .. } => replace += 1,
                            Action::Remove { .. } => remove += 1,
                            Action::Start | Action::Complete => other += 1,
                        }
                    }
                }
            }
            _ => {}
        }
        out.push_str(&drift_text(&v.target.name, p.as_ref()));
    }
    if create + replace + remove + other == 0 {
        if views.iter().all(|v| v.observed.is_ok()) {
            let _ = writeln!(out, "No changes: {} host(s) converged.", views.len());
        }
    } else {
        let _ = write!(out, "Plan: {create} to create, {replace} to replace, {remove} to remove");
        if other > 0 {
            let _ = write!(out, ", {other} to finish");
        }
        let _ = writeln!(out, ".");
    }
    out
}

/// Drift left as is (driftPolicy Report) on one host: no change, but a person should see it.
pub fn drift_text(host: &str, plan: Option<&HostPlan>) -> String {
    let mut out = String::new();
    let left: Vec<_> = plan.iter().flat_map(|p| &p.drifted).filter(|d| !d.replaced).collect();
    if !left.is_empty() {
        let _ = writeln!(out, "host {host}: drift left as it is (driftPolicy Report)");
        for d in left {
            let _ = writeln!(out, "    ! {} ({}): {d}", d.set, d.id.chars().take(12).collect::<String>());
        }
    }
    out
}

fn write_set(out: &mut String, sp: &SetPlan) {
    match &sp.revision {
        Some(r) => {
            let _ = writeln!(out, "  set {} → revision {r} ({:?})", sp.set, sp.order);
        }
        None => {
            let _ = writeln!(out, "  set {} (not declared here: its containers are removed)", sp.set);
        }
    }
    if let Some(why) = &sp.forced_stop_first {
        let _ = writeln!(out, "    ! StopFirst forced: {why}");
    }
    for c in &sp.changes {
        match &c.action {
            Action::Create if c.steps.iter().any(|s| matches!(s, Step::WaitExit { .. })) => {
                let _ = writeln!(out, "    + run     {} (task: once, to completion)", c.container);
            }
            Action::Create => {
                let _ = writeln!(out, "    + create  {}", c.container);
            }
            Action::Start => {
                let _ = writeln!(out, "    > start   {} (created earlier, never started)", c.container);
            }
            Action::Complete if c.steps.iter().any(|s| matches!(s, Step::WaitExit { .. })) => {
                let _ = writeln!(out, "    ~ finish  {} (the task runs: wait for it to complete)", c.container);
            }
            Action::Complete => {
                let _ = writeln!(
                    out,
                    "    ~ finish  {} (replacement was interrupted; remove the old container)",
                    c.container
                );
            }
            Action::Replace { reasons } => {
                let _ = writeln!(out, "    ~ replace {}", c.container);
                for r in reasons {
                    write_reason(out, r);
                }
            }
            Action::Remove { reason } => {
                let why = match reason {
                    Reason::ScaledDown => "scaled down",
                    Reason::NotDesired => "set not declared for this host",
                    Reason::Duplicate => "duplicate",
                    Reason::TaskDone { .. } => "task of an earlier revision; this one completed",
                    // Under driftPolicy Report: the drifted container of its ordinal stays.
                    Reason::SpecChanged { .. } => "old revision",
                    _ => "",
                };
                let _ = writeln!(out, "    - remove  {} ({why})", c.container);
            }
        }
    }
}

fn write_reason(out: &mut String, r: &Reason) {
    match r {
        Reason::SpecChanged { from_revision, fields } if fields.is_empty() => {
            let _ = writeln!(out, "        from revision {from_revision} (its spec label is unreadable)");
        }
        Reason::SpecChanged { from_revision, fields } => {
            let _ = writeln!(out, "        from revision {from_revision}, because:");
            for f in fields {
                let _ = writeln!(out, "          {f}");
            }
        }
        Reason::NotRunning { state } => {
            let _ = writeln!(out, "        the container of this revision is {state}");
        }
        Reason::Duplicate => {
            let _ = writeln!(out, "        another container claims the same ordinal");
        }
        Reason::Drifted { drift } => {
            let _ = writeln!(out, "        the container of this revision drifted: {drift}");
        }
        Reason::TaskFailed { state, exit_code } => {
            let how = match exit_code {
                Some(code) => format!("{state} with code {code}"),
                None => state.to_string(),
            };
            let _ =
                writeln!(out, "        the task's container of this revision did not complete ({how}): it runs again");
        }
        Reason::ScaledDown | Reason::NotDesired | Reason::TaskDone { .. } => {}
    }
}

/// The plan for scripts: `{"pending": bool, "hosts": [{"host", "endpoint", "error"?, "sets": [...]}]}`.
pub fn plan_json(views: &[HostView], plans: &[Option<HostPlan>]) -> Value {
    let hosts: Vec<Value> = views
        .iter()
        .zip(plans)
        .map(|(v, p)| {
            let mut h = json!({ "host": v.target.name, "endpoint": v.target.endpoint.to_string() });
            match (&v.observed, p) {
                (Err(e), _) => h["error"] = json!(e.to_string()),
                (Ok(_), Some(p)) => {
                    h["sets"] = serde_json::to_value(&p.sets).unwrap_or(Value::Null);
                    h["drifted"] = serde_json::to_value(&p.drifted).unwrap_or(Value::Null);
                }
                _ => {}
            }
            h
        })
        .collect();
    let pending = plans.iter().flatten().any(|p| !p.is_empty());
    json!({ "pending": pending, "hosts": hosts })
}
