//! Where revision history lives. The decisions are in [`crate::engine::history`]; a store
//! only loads, puts and deletes records.
//!
//! Standalone mode keeps records on the hosts themselves, as labels of one small Docker
//! volume per revision on every host of the set: the hosts are the state, so a fresh machine
//! with the same files and hosts sees the same history, and no local database can go stale.
//! Volume labels cannot change, so a record that changes gets a new volume: its name carries a
//! generation (`berth-history.<namespace>.<set>.<hash>.<generation>`; the bare
//! `berth-history.<namespace>.<set>.<hash>` of older berths is generation 0), the new one is
//! created *before* the old one is removed, and a reader takes the newest generation of each
//! revision. A crash between the two leaves both, never neither. The names a load saw are
//! remembered, so a write costs what it did before (one create, one remove).
//! (`docker volume prune` on Docker 20.10 would remove them with other unused volumes; the
//! containers are unaffected, only the history is lost.)
//! The operator keeps ControllerRevisions instead (`crate::controller::revisions`).

use std::collections::HashMap;
use std::sync::Mutex;

use bollard::Docker;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::ListVolumesOptionsBuilder;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::docker::{bounds, message_of, status_of};
use crate::engine::history::{History, HistoryWrite, RevisionRecord};
use crate::engine::{SetKey, labels};

/// Reading or writing history failed.
#[derive(Clone, Debug, thiserror::Error)]
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
const GENERATION: &str = "berth.dev/generation";

/// Per (host, set): per revision hash, the history volumes seen there, `(generation, name)`.
type Known = HashMap<(String, SetKey), HashMap<String, Vec<(u64, String)>>>;

/// Records as volumes on hosts. `hosts` are the engines of the run; each set's records go to
/// the hosts it is placed on (`placed`), and are read from every host given.
pub struct HostVolumes {
    pub hosts: Vec<(String, Docker)>,
    /// Per set, the hosts it is placed on.
    pub placed: HashMap<SetKey, Vec<String>>,
    /// The volumes the last load saw, so a write knows what to replace without a list.
    known: Mutex<Known>,
}

fn volume_name(set: &SetKey, hash: &str, generation: u64) -> String {
    match generation {
        0 => format!("berth-history.{}.{}.{}", set.namespace, set.name, hash),
        g => format!("berth-history.{}.{}.{}.{g}", set.namespace, set.name, hash),
    }
}

fn history_label(set: &SetKey) -> String {
    format!("{}.{}", set.namespace, set.name)
}

/// One request of a history write on one host, in the order they must run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeStep {
    Create { name: String, generation: u64 },
    Remove { name: String },
}

/// The steps of `write` on a host that holds `existing` volumes of its revision: a put
/// creates the next generation first and only then removes the older ones, so a crash in
/// between leaves a record to read; a delete removes them all.
pub fn steps(set: &SetKey, write: &HistoryWrite, existing: &[(u64, String)]) -> Vec<VolumeStep> {
    let removes = existing.iter().map(|(_, name)| VolumeStep::Remove { name: name.clone() });
    match write {
        HistoryWrite::Put(r) => {
            let generation = existing.iter().map(|(g, _)| g + 1).max().unwrap_or(1);
            let create = VolumeStep::Create { name: volume_name(set, &r.hash, generation), generation };
            std::iter::once(create).chain(removes).collect()
        }
        HistoryWrite::Delete(_) => removes.collect(),
    }
}

/// Of the records found on one host, `(generation, record)`, the newest generation of each
/// revision: what a put that was cut off between its create and its remove left is read as
/// the record it was writing.
pub fn newest(found: Vec<(u64, RevisionRecord)>) -> Vec<RevisionRecord> {
    let mut by_hash: HashMap<String, (u64, RevisionRecord)> = HashMap::new();
    for (g, r) in found {
        match by_hash.get(&r.hash) {
            Some((seen, _)) if *seen >= g => {}
            _ => {
                by_hash.insert(r.hash.clone(), (g, r));
            }
        }
    }
    by_hash.into_values().map(|(_, r)| r).collect()
}

impl HostVolumes {
    pub fn new(hosts: Vec<(String, Docker)>, placed: HashMap<SetKey, Vec<String>>) -> HostVolumes {
        HostVolumes { hosts, placed, known: Mutex::new(HashMap::new()) }
    }

    fn targets<'a>(&'a self, set: &SetKey) -> impl Iterator<Item = &'a (String, Docker)> {
        let placed = self.placed.get(set).cloned().unwrap_or_default();
        self.hosts.iter().filter(move |(name, _)| placed.contains(name))
    }

    /// List the set's history volumes on one host: `(generation, volume name, record)`.
    async fn list(docker: &Docker, host: &str, set: &SetKey) -> Result<Vec<(u64, String, RevisionRecord)>, String> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{HISTORY}={}", history_label(set))])]);
        let opts = ListVolumesOptionsBuilder::default().filters(&filters).build();
        let list = bounds::read(host, "list volumes", bounds::LIST, || docker.list_volumes(Some(opts.clone())))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("host {host}: list volumes: {}", message_of(&e)))?;
        let mut out = Vec::new();
        for v in list.volumes.unwrap_or_default() {
            let generation = v.labels.get(GENERATION).and_then(|g| g.parse().ok()).unwrap_or(0);
            match v.labels.get(RECORD).map(|r| serde_json::from_str::<RevisionRecord>(r)) {
                Some(Ok(r)) => out.push((generation, v.name, r)),
                _ => tracing::warn!(host, volume = v.name, "unreadable history record, ignored"),
            }
        }
        Ok(out)
    }

    fn remember(&self, host: &str, set: &SetKey, found: &[(u64, String, RevisionRecord)]) {
        let mut by_hash: HashMap<String, Vec<(u64, String)>> = HashMap::new();
        for (g, name, r) in found {
            by_hash.entry(r.hash.clone()).or_default().push((*g, name.clone()));
        }
        self.known.lock().expect("never poisoned").insert((host.to_string(), set.clone()), by_hash);
    }

    /// The volumes of `hash` on `host` as last seen; listed first when this host's volumes of
    /// the set were never loaded (not on the hot path: a run loads before it writes).
    async fn existing(
        &self,
        docker: &Docker,
        host: &str,
        set: &SetKey,
        hash: &str,
    ) -> Result<Vec<(u64, String)>, String> {
        let key = (host.to_string(), set.clone());
        let loaded = self.known.lock().expect("never poisoned").contains_key(&key);
        if !loaded {
            let found = Self::list(docker, host, set).await?;
            self.remember(host, set, &found);
        }
        let known = self.known.lock().expect("never poisoned");
        Ok(known.get(&key).and_then(|m| m.get(hash)).cloned().unwrap_or_default())
    }

    /// The steps `write` takes on `host` (for tests that stop a write half-way).
    pub async fn steps_on(
        &self,
        host: &str,
        set: &SetKey,
        write: &HistoryWrite,
    ) -> Result<Vec<VolumeStep>, HistoryError> {
        let (_, docker) = self.hosts.iter().find(|(h, _)| h == host).ok_or_else(|| HistoryError {
            set: set.to_string(),
            message: format!("host {host} is not one of the store's"),
        })?;
        let hash = match write {
            HistoryWrite::Put(r) | HistoryWrite::Delete(r) => &r.hash,
        };
        let existing = self
            .existing(docker, host, set, hash)
            .await
            .map_err(|message| HistoryError { set: set.to_string(), message })?;
        Ok(steps(set, write, &existing))
    }

    /// Run one step of `write` on `host`, and remember what it changed.
    pub async fn run_step(
        &self,
        host: &str,
        set: &SetKey,
        write: &HistoryWrite,
        step: &VolumeStep,
    ) -> Result<(), HistoryError> {
        let err = |op: &str, e: bollard::errors::Error| HistoryError {
            set: set.to_string(),
            message: format!("host {host}: {op}: {}", message_of(&e)),
        };
        let (_, docker) = self.hosts.iter().find(|(h, _)| h == host).ok_or_else(|| HistoryError {
            set: set.to_string(),
            message: format!("host {host} is not one of the store's"),
        })?;
        let record = match write {
            HistoryWrite::Put(r) | HistoryWrite::Delete(r) => r,
        };
        let key = (host.to_string(), set.clone());
        match step {
            VolumeStep::Create { name, generation } => {
                let json = serde_json::to_string(record).expect("a record always serializes");
                let req = VolumeCreateRequest {
                    name: Some(name.clone()),
                    labels: Some(HashMap::from([
                        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
                        (labels::NAMESPACE.to_string(), set.namespace.clone()),
                        (labels::SET.to_string(), set.name.clone()),
                        (labels::REVISION.to_string(), record.hash.clone()),
                        (HISTORY.to_string(), history_label(set)),
                        (GENERATION.to_string(), generation.to_string()),
                        (RECORD.to_string(), json),
                    ])),
                    ..Default::default()
                };
                bounds::within(host, "create history volume", bounds::CHANGE, docker.create_volume(req))
                    .await
                    .map_err(|e| HistoryError { set: set.to_string(), message: e.to_string() })?
                    .map_err(|e| err("create history volume", e))?;
                let mut known = self.known.lock().expect("never poisoned");
                known.entry(key).or_default().entry(record.hash.clone()).or_default().push((*generation, name.clone()));
            }
            VolumeStep::Remove { name } => {
                let remove = docker.remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>);
                let removed = bounds::within(host, "remove history volume", bounds::CHANGE, remove)
                    .await
                    .map_err(|e| HistoryError { set: set.to_string(), message: e.to_string() })?;
                match removed {
                    Err(e) if status_of(&e) != Some(404) => return Err(err("remove history volume", e)),
                    _ => {}
                }
                let mut known = self.known.lock().expect("never poisoned");
                if let Some(v) = known.get_mut(&key).and_then(|m| m.get_mut(&record.hash)) {
                    v.retain(|(_, n)| n != name);
                }
            }
        }
        Ok(())
    }
}

impl HistoryStore for HostVolumes {
    fn load<'a>(&'a self, set: &'a SetKey) -> BoxFuture<'a, Result<History, HistoryError>> {
        async move {
            let mut records = Vec::new();
            let mut answered = 0;
            let mut last_error = None;
            for (host, docker) in &self.hosts {
                match Self::list(docker, host, set).await {
                    Ok(found) => {
                        answered += 1;
                        self.remember(host, set, &found);
                        records.extend(newest(found.into_iter().map(|(g, _, r)| (g, r)).collect()));
                    }
                    Err(e) => last_error = Some(e),
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
            for (host, _) in self.targets(set) {
                let steps = self.steps_on(host, set, write).await?;
                for step in &steps {
                    match (step, self.run_step(host, set, write, step).await) {
                        (_, Ok(())) => {}
                        // The new record is in place; an older generation left behind is
                        // read as older, and removed by the next write of this revision.
                        (VolumeStep::Remove { name }, Err(e)) if matches!(write, HistoryWrite::Put(_)) => {
                            tracing::warn!(host, volume = name, error = %e, "an older history record stays");
                        }
                        (_, Err(e)) => return Err(e),
                    }
                }
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::history::Outcome;

    fn record(hash: &str, outcome: Outcome) -> RevisionRecord {
        RevisionRecord {
            number: 1,
            hash: hash.into(),
            template: serde_json::json!({}),
            image: "img".into(),
            digest: None,
            time: String::new(),
            outcome,
            message: None,
            pulled_on: Vec::new(),
            completed_on: Vec::new(),
        }
    }

    #[test]
    fn a_put_creates_the_new_record_before_it_removes_the_old_one() {
        let set = SetKey::new("ns", "web");
        let put = HistoryWrite::Put(record("abc", Outcome::Ready));
        // The volume of an older berth (no generation) is replaced by generation 1.
        let old = vec![(0, "berth-history.ns.web.abc".to_string())];
        assert_eq!(
            steps(&set, &put, &old),
            vec![
                VolumeStep::Create { name: "berth-history.ns.web.abc.1".into(), generation: 1 },
                VolumeStep::Remove { name: "berth-history.ns.web.abc".into() },
            ]
        );
        // A write cut off before its remove left two; the next one supersedes both.
        let two = vec![(1, "berth-history.ns.web.abc.1".to_string()), (2, "berth-history.ns.web.abc.2".to_string())];
        let s = steps(&set, &put, &two);
        assert_eq!(s[0], VolumeStep::Create { name: "berth-history.ns.web.abc.3".into(), generation: 3 });
        assert_eq!(s.len(), 3);
        // A new revision: one request.
        assert_eq!(
            steps(&set, &put, &[]),
            vec![VolumeStep::Create { name: "berth-history.ns.web.abc.1".into(), generation: 1 }]
        );
        let delete = HistoryWrite::Delete(record("abc", Outcome::Ready));
        assert_eq!(steps(&set, &delete, &two).len(), 2);
        assert!(steps(&set, &delete, &two).iter().all(|s| matches!(s, VolumeStep::Remove { .. })));
    }

    #[test]
    fn a_reader_takes_the_newest_generation_of_each_revision() {
        let found = vec![
            (0, record("abc", Outcome::Progressing)),
            (1, record("abc", Outcome::Ready)),
            (1, record("def", Outcome::Failed)),
        ];
        let mut got = newest(found);
        got.sort_by(|a, b| a.hash.cmp(&b.hash));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].outcome, Outcome::Ready);
        assert_eq!(got[1].outcome, Outcome::Failed);
    }
}
