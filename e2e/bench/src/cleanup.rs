//! Removing what the benchmark created, and only that.
//!
//! Everything the benchmark makes carries a label unique to it: berth's namespaces
//! (`berth.dev/namespace=<unique>`, containers and berth's history volumes), compose's
//! projects (`com.docker.compose.project=<unique>`) and the floor's containers (a namespace
//! label of their own). Each label is registered before the first container exists and
//! forgotten once its owner was removed the normal way (`berth delete`, `docker-compose down`);
//! what is still registered when the run ends — normally, on an error, a panic or Ctrl-C —
//! is force-removed by label. Other containers and volumes on the engine are never touched.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, ListVolumesOptions, RemoveContainerOptions};

static OWNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Remembers `label` (`key=value`): what carries it is the benchmark's.
pub fn register(label: &str) {
    OWNED.lock().unwrap_or_else(|p| p.into_inner()).push(label.to_string());
}

/// Forgets `label`: its owner removed what carried it.
pub fn forget(label: &str) {
    OWNED.lock().unwrap_or_else(|p| p.into_inner()).retain(|l| l != label);
}

/// Whether Ctrl-C was pressed: the run stops at the next step.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails when Ctrl-C was pressed, so that the run stops before its next step.
pub fn check_interrupted() -> anyhow::Result<()> {
    anyhow::ensure!(!interrupted(), "interrupted");
    Ok(())
}

/// Marks the run as interrupted.
pub fn set_interrupted() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Force-removes the containers and volumes of every label still registered; says what it
/// removed on stderr. Errors are reported, not raised: cleanup goes on with the next label.
pub async fn remove_all(docker: &Docker) {
    let labels: Vec<String> = std::mem::take(&mut *OWNED.lock().unwrap_or_else(|p| p.into_inner()));
    for label in labels {
        match remove_labelled(docker, &label).await {
            Ok((0, 0)) => {}
            Ok((c, v)) => eprintln!("cleanup: removed {c} container(s) and {v} volume(s) labelled {label}"),
            Err(e) => eprintln!("warning: cleanup of {label}: {e:#}"),
        }
    }
}

/// Force-removes the containers (with their anonymous volumes), then the volumes, labelled
/// `label`. Returns how many of each it removed.
pub async fn remove_labelled(docker: &Docker, label: &str) -> anyhow::Result<(usize, usize)> {
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|e| anyhow::anyhow!("list containers labelled {label}: {e}"))?;
    let mut removed = (0, 0);
    for c in containers {
        let Some(id) = c.id else { continue };
        let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match docker.remove_container(&id, Some(opts)).await {
            Ok(()) => removed.0 += 1,
            Err(e) if gone(&e) => {}
            Err(e) => anyhow::bail!("remove container {id} labelled {label}: {e}"),
        }
    }
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions { filters: Some(filters) }))
        .await
        .map_err(|e| anyhow::anyhow!("list volumes labelled {label}: {e}"))?;
    for v in volumes.volumes.unwrap_or_default() {
        match docker.remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
            Ok(()) => removed.1 += 1,
            Err(e) if gone(&e) => {}
            Err(e) => anyhow::bail!("remove volume {} labelled {label}: {e}", v.name),
        }
    }
    Ok(removed)
}

/// 404 (already gone) or 409 (removal already in progress).
fn gone(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404 | 409, .. })
}
