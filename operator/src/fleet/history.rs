//! Where revision history lives. The decisions are in [`crate::engine::history`]; a store
//! only loads, puts and deletes records.
//!
//! Standalone mode keeps records on the hosts themselves, as labels of one small Docker
//! volume per revision (`berth-history.<namespace>.<set>.<hash>`) on every host of the set:
//! the hosts are the state, so a fresh machine with the same files and hosts sees the same
//! history, and no local database can go stale. Volume labels cannot change, so a put
//! replaces the volume. (`docker volume prune` on Docker 20.10 would remove them with other
//! unused volumes; the containers are unaffected, only the history is lost.)
//! The operator keeps ControllerRevisions instead (`crate::controller::revisions`).

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::ListVolumesOptionsBuilder;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::docker::{message_of, status_of};
use crate::engine::history::{History, HistoryWrite, RevisionRecord};
use crate::engine::{SetKey, labels};

/// Reading or writing history failed.
#[derive(Debug, thiserror::Error)]
#[error("revision history of {set}: {message}")]
pub struct HistoryError {
    pub set: String,
    pub message: String,
}

/// A place that keeps a set's revision records.
pub trait HistoryStore: Send + Sync {
    fn load<'a>(&'a self, set: &'a SetKey) -> BoxFuture<'a, Result<History, HistoryError>>;
    fn write<'a>(&'a self, set: &'a SetKey, write: &'a HistoryWrite) -> BoxFuture<'a, Result<(), HistoryError>>;
}

/// Label keys of a history volume.
const HISTORY: &str = "berth.dev/history";
const RECORD: &str = "berth.dev/record";

/// Records as volumes on hosts. `hosts` are the engines of the run; each set's records go to
/// the hosts it is placed on (`placed`), and are read from every host given.
pub struct HostVolumes {
    pub hosts: Vec<(String, Docker)>,
    /// Per set, the hosts it is placed on.
    pub placed: HashMap<SetKey, Vec<String>>,
}

fn volume_name(set: &SetKey, hash: &str) -> String {
    format!("berth-history.{}.{}.{}", set.namespace, set.name, hash)
}

fn history_label(set: &SetKey) -> String {
    format!("{}.{}", set.namespace, set.name)
}

impl HostVolumes {
    fn targets<'a>(&'a self, set: &SetKey) -> impl Iterator<Item = &'a (String, Docker)> {
        let placed = self.placed.get(set).cloned().unwrap_or_default();
        self.hosts.iter().filter(move |(name, _)| placed.contains(name))
    }
}

impl HistoryStore for HostVolumes {
    fn load<'a>(&'a self, set: &'a SetKey) -> BoxFuture<'a, Result<History, HistoryError>> {
        async move {
            let filters = HashMap::from([("label".to_string(), vec![format!("{HISTORY}={}", history_label(set))])]);
            let mut records = Vec::new();
            let mut answered = 0;
            let mut last_error = None;
            for (host, docker) in &self.hosts {
                let opts = ListVolumesOptionsBuilder::default().filters(&filters).build();
                match docker.list_volumes(Some(opts)).await {
                    Ok(list) => {
                        answered += 1;
                        for v in list.volumes.unwrap_or_default() {
                            match v.labels.get(RECORD).map(|r| serde_json::from_str::<RevisionRecord>(r)) {
                                Some(Ok(r)) => records.push(r),
                                _ => tracing::warn!(host, volume = v.name, "unreadable history record, ignored"),
                            }
                        }
                    }
                    Err(e) => last_error = Some(format!("host {host}: list volumes: {}", message_of(&e))),
                }
            }
            match (answered, last_error) {
                (0, Some(message)) => Err(HistoryError { set: set.to_string(), message }),
                _ => Ok(History::new(records)),
            }
        }
        .boxed()
    }

    fn write<'a>(&'a self, set: &'a SetKey, write: &'a HistoryWrite) -> BoxFuture<'a, Result<(), HistoryError>> {
        async move {
            let err = |host: &str, op: &str, e: bollard::errors::Error| HistoryError {
                set: set.to_string(),
                message: format!("host {host}: {op}: {}", message_of(&e)),
            };
            let (record, keep) = match write {
                HistoryWrite::Put(r) => (r, true),
                HistoryWrite::Delete(r) => (r, false),
            };
            let name = volume_name(set, &record.hash);
            for (host, docker) in self.targets(set) {
                match docker.remove_volume(&name, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
                    Err(e) if status_of(&e) != Some(404) => return Err(err(host, "remove history volume", e)),
                    _ => {}
                }
                if !keep {
                    continue;
                }
                let json = serde_json::to_string(record).expect("a record always serializes");
                let req = VolumeCreateRequest {
                    name: Some(name.clone()),
                    labels: Some(HashMap::from([
                        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
                        (labels::NAMESPACE.to_string(), set.namespace.clone()),
                        (labels::SET.to_string(), set.name.clone()),
                        (labels::REVISION.to_string(), record.hash.clone()),
                        (HISTORY.to_string(), history_label(set)),
                        (RECORD.to_string(), json),
                    ])),
                    ..Default::default()
                };
                docker.create_volume(req).await.map_err(|e| err(host, "create history volume", e))?;
            }
            Ok(())
        }
        .boxed()
    }
}
