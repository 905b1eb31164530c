//! History writes of a run (a new revision recorded before its first container is made; its
//! outcome after) and the image collection that follows a trim: images berth pulled for
//! revisions the history no longer keeps.

use k8s_openapi::jiff::Timestamp;

use super::HostView;
use super::history::{HistoryError, HistoryStore};
use crate::docker;
use crate::engine::SetKey;
use crate::engine::history::{History, HistoryWrite, Outcome, RevisionRecord, collectable_images};
use crate::target::SetInfo;

/// The record of `revision` as this run knows it.
pub(super) fn new_record(
    views: &[HostView],
    key: &SetKey,
    revision: &str,
    info: &SetInfo,
    outcome: Outcome,
    message: Option<String>,
) -> RevisionRecord {
    let image = views
        .iter()
        .find_map(|v| v.target.desired.iter().find(|d| &d.key == key))
        .map(|d| d.spec.image.clone())
        .unwrap_or_default();
    let mut template = info.template.clone();
    if let Some(obj) = template.as_object_mut() {
        obj.insert("image".into(), image.clone().into());
    }
    RevisionRecord {
        number: 0,
        hash: revision.to_string(),
        template,
        digest: image.split_once('@').map(|(_, d)| d.to_string()),
        image,
        time: Timestamp::now().to_string(),
        outcome,
        message,
        pulled_on: Vec::new(),
        completed_on: Vec::new(),
    }
}

pub(super) async fn write_all(
    store: &dyn HistoryStore,
    key: &SetKey,
    history: &mut History,
    record: RevisionRecord,
    limit: usize,
) -> Result<(), HistoryError> {
    let writes = history.record(record, limit);
    for w in &writes {
        store.write(key, w).await?;
    }
    *history = history.apply(&writes);
    Ok(())
}

/// Remove images berth pulled for revisions the history no longer keeps. Docker refuses to
/// remove an image a container uses; that is fine, it is tried again after the next trim.
pub(super) async fn collect_images(views: &[HostView], writes: &[HistoryWrite], before: &History) {
    for v in views {
        let Some(d) = &v.docker else { continue };
        for image in collectable_images(writes, before, &v.target.name) {
            let remove = d.remove_image(&image, None::<bollard::query_parameters::RemoveImageOptions>, None);
            match docker::bounds::within(&v.target.name, "remove image", docker::bounds::CHANGE, remove).await {
                Err(e) => tracing::warn!(host = %v.target.name, image, error = %e, "image kept"),
                Ok(Ok(_)) => tracing::info!(host = %v.target.name, image, "removed an image no kept revision uses"),
                Ok(Err(e)) => {
                    tracing::debug!(host = %v.target.name, image, error = %docker::message_of(&e), "image kept")
                }
            }
        }
    }
}
