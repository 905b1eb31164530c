//! Named volumes berth creates, and reclaiming them.
//!
//! A volume berth creates for a set carries berth's labels (managed-by, namespace, set: the
//! set whose step created it). Docker cannot relabel a volume, so one that existed before
//! keeps its labels and is never berth's to delete. Reclaiming (`berth delete --volumes`,
//! `volumeReclaimPolicy: Delete`) removes a volume only when its labels say berth created it
//! for that very set; one still mounted by any container (Docker answers 409) is kept.

use std::collections::HashMap;

use bollard::Docker;

use super::{DockerError, bounds, status_of};
use crate::engine::{SetKey, labels};

/// The labels of a volume berth creates for `set`.
pub fn labels_for(set: &SetKey) -> HashMap<String, String> {
    HashMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
        (labels::NAMESPACE.to_string(), set.namespace.clone()),
        (labels::SET.to_string(), set.name.clone()),
    ])
}

/// Whether a volume's labels say berth created it for `set`.
pub fn owned_by(volume_labels: &HashMap<String, String>, set: &SetKey) -> bool {
    labels_for(set).iter().all(|(k, v)| volume_labels.get(k) == Some(v))
}

/// What reclaiming one volume did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reclaim {
    Removed,
    /// No such volume on this host.
    Absent,
    /// Not created by berth for this set (a user's, another set's, or older than berth's
    /// labels): kept.
    NotOwned,
    /// Still mounted by a container: kept.
    InUse,
}

/// Remove `name` on `host` if berth created it for `set` and no container uses it.
pub async fn reclaim(host: &str, docker: &Docker, name: &str, set: &SetKey) -> Result<Reclaim, DockerError> {
    let volume = match bounds::read(host, "inspect volume", bounds::READ, || docker.inspect_volume(name)).await? {
        Ok(v) => v,
        Err(e) if status_of(&e) == Some(404) => return Ok(Reclaim::Absent),
        Err(e) => return Err(DockerError::api("inspect volume", name, e)),
    };
    if !owned_by(&volume.labels, set) {
        return Ok(Reclaim::NotOwned);
    }
    let remove = docker.remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>);
    match bounds::within(host, "remove volume", bounds::CHANGE, remove).await? {
        Ok(()) => Ok(Reclaim::Removed),
        Err(e) if status_of(&e) == Some(404) => Ok(Reclaim::Absent),
        Err(e) if status_of(&e) == Some(409) => Ok(Reclaim::InUse),
        Err(e) => Err(DockerError::api("remove volume", name, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sets_own_labels_make_a_volume_its_own() {
        let a = SetKey::new("prod", "db");
        assert!(owned_by(&labels_for(&a), &a));
        assert!(!owned_by(&labels_for(&SetKey::new("prod", "web")), &a), "another set's");
        assert!(!owned_by(&labels_for(&SetKey::new("dev", "db")), &a), "the same name in another namespace");
        assert!(!owned_by(&HashMap::new(), &a), "a user's volume");
        let mut old = labels_for(&a);
        old.remove(labels::SET);
        assert!(!owned_by(&old, &a), "berth's before volumes named their set");
    }
}
