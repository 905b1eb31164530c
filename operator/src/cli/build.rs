//! `berth build` and `berth images`: the input's Images, built where they are missing, and
//! where each is present.

use std::process::ExitCode;

use super::apply::{load, observe_all};
use super::{BuildArgs, ImagesArgs};
use crate::docker;
use crate::fleet::images::{EnsureOptions, ensure_images};

pub(super) async fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let (_, resolved) = load(&args.input, false)?;
    if resolved.images.is_empty() {
        println!("The input declares no Image.");
        return Ok(ExitCode::SUCCESS);
    }
    let views = observe_all(resolved.hosts.clone()).await;
    let options = EnsureOptions { no_cache: args.no_cache, push: args.push, distribute: false };
    let progress = super::progress::BuildLines;
    let mut ok = true;
    for o in ensure_images(&views, &resolved.images, &progress, &options).await {
        match &o.error {
            Some(e) => {
                ok = false;
                eprintln!("error: {e}");
            }
            None => println!(
                "image {}: {} {}{}",
                o.image,
                if o.built { "built" } else { "up to date" },
                o.tag,
                o.pushed.as_deref().map(|d| format!(" (pushed, {d})")).unwrap_or_default()
            ),
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(super) async fn images(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let (_, resolved) = load(&args.input, false)?;
    let views = observe_all(resolved.hosts.clone()).await;
    println!("{:<24} {:<40} {:<18} PRESENT ON", "IMAGE", "TAG", "INPUT");
    let mut ok = true;
    for b in &resolved.images {
        let mut present = Vec::new();
        for v in &views {
            let Some(d) = &v.docker else {
                ok = false;
                continue;
            };
            match docker::build::image_present(&v.target.name, d, &b.tag).await {
                Ok(Some(_)) => present.push(v.target.name.clone()),
                Ok(None) => {}
                Err(e) => {
                    ok = false;
                    eprintln!("error: host {}: {e}", v.target.name);
                }
            }
        }
        let hex = b.input_digest.strip_prefix("sha256:").unwrap_or(&b.input_digest);
        println!(
            "{:<24} {:<40} {:<18} {}",
            b.key.to_string(),
            b.tag,
            &hex[..hex.len().min(16)],
            if present.is_empty() { "-".to_string() } else { present.join(",") }
        );
    }
    for v in &views {
        if let Err(e) = &v.observed {
            eprintln!("error: host {}: {e}", v.target.name);
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
