//! `berth logs SET`: every container of the set on every host, lines prefixed with
//! `host/container`, optionally following.

use std::collections::HashMap;
use std::process::ExitCode;

use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
use futures::StreamExt;

use super::InputArgs;
use super::LogsArgs;
use super::apply::{load_input, observe_all};
use crate::docker;
use crate::engine::labels;
use crate::target::Endpoint;
use crate::target::HostTarget;

pub(super) async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let (mut namespace, name) = match args.set.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => ("default".to_string(), args.set.clone()),
    };
    let targets = if args.files.is_empty() {
        let endpoint = Endpoint::from_env().map_err(anyhow::Error::msg)?;
        vec![HostTarget { name: "local".into(), endpoint, desired: Vec::new(), scope: Default::default() }]
    } else {
        let resolved = load_input(&InputArgs { files: args.files.clone() }, false)?;
        // A bare name is the input's set of that name, in whichever namespace it declares it.
        if !args.set.contains('/') {
            let found: Vec<_> = resolved.sets.iter().filter(|k| k.name == name).collect();
            match found.as_slice() {
                [one] => namespace = one.namespace.clone(),
                [] => anyhow::bail!("the input declares no set named {name}"),
                many => anyhow::bail!(
                    "the input declares a set {name} in several namespaces ({}): say NAMESPACE/{name}",
                    many.iter().map(|k| k.namespace.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        resolved.hosts
    };
    let targets: Vec<HostTarget> =
        targets.into_iter().filter(|t| args.host.as_ref().is_none_or(|h| h == &t.name)).collect();
    if targets.is_empty() {
        anyhow::bail!("no host named {:?} in the input", args.host.unwrap_or_default());
    }
    let views = observe_all(targets).await;
    let mut streams = Vec::new();
    let mut ok = true;
    for v in &views {
        let Some(d) = &v.docker else {
            ok = false;
            eprintln!(
                "error: host {}: {}",
                v.target.name,
                v.observed.as_ref().err().map(ToString::to_string).unwrap_or_default()
            );
            continue;
        };
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}={namespace}", labels::NAMESPACE), format!("{}={name}", labels::SET)],
        )]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let list = docker::bounds::read(&v.target.name, "list containers", docker::bounds::LIST, || {
            d.list_containers(Some(opts.clone()))
        })
        .await?
        .map_err(|e| anyhow::anyhow!("host {}: {}", v.target.name, docker::message_of(&e)))?;
        for c in list {
            let cname =
                c.names.unwrap_or_default().first().cloned().unwrap_or_default().trim_start_matches('/').to_string();
            let mut opts = LogsOptionsBuilder::default().stdout(true).stderr(true).follow(args.follow);
            if let Some(t) = args.tail {
                opts = opts.tail(&t.to_string());
            }
            let prefix = format!("{}/{cname}", v.target.name);
            let id = c.id.unwrap_or_default();
            let stream = d.logs(&id, Some(opts.build())).map(move |chunk| (prefix.clone(), chunk));
            streams.push(stream.boxed());
        }
    }
    if streams.is_empty() {
        eprintln!("no containers of set {namespace}/{name} found");
    }
    let mut merged = futures::stream::select_all(streams);
    let mut partial: HashMap<String, String> = HashMap::new();
    while let Some((prefix, chunk)) = merged.next().await {
        match chunk {
            Ok(out) => {
                let buf = partial.entry(prefix.clone()).or_default();
                buf.push_str(&out.to_string());
                while let Some(i) = buf.find('\n') {
                    let line: String = buf.drain(..=i).collect();
                    println!("[{prefix}] {}", line.trim_end_matches('\n'));
                }
            }
            Err(e) => {
                ok = false;
                eprintln!("error: {prefix}: {}", docker::message_of(&e));
            }
        }
    }
    for (prefix, rest) in partial {
        if !rest.is_empty() {
            println!("[{prefix}] {rest}");
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
