//! Revision history as ControllerRevisions, the Kubernetes convention (Deployments and
//! StatefulSets keep theirs the same way): one object per revision hash, named
//! `<set>-<hash>`, owned by the set (so the garbage collector removes them with it), labelled
//! `berth.dev/set=<set>`, `revision` = the record's number, `data` = the record. The outcome
//! is also an annotation, for `kubectl get controllerrevisions -L`.

use std::collections::BTreeMap;

use berth_crd::ContainerSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use crate::engine::history::{History, HistoryWrite, RevisionRecord};
use crate::engine::{SetKey, labels};
use crate::fleet::history::{HistoryError, HistoryStore};

const OUTCOME: &str = "berth.dev/outcome";

/// The ControllerRevisions of one ContainerSet.
pub struct ControllerRevisions {
    api: Api<ControllerRevision>,
    set: String,
    owner: Option<OwnerReference>,
}

impl ControllerRevisions {
    pub fn new(client: kube::Client, cs: &ContainerSet) -> Self {
        let ns = cs.namespace().unwrap_or_else(|| "default".into());
        ControllerRevisions {
            api: Api::namespaced(client, &ns),
            set: cs.name_any(),
            owner: cs.controller_owner_ref(&()),
        }
    }

    fn name(&self, hash: &str) -> String {
        format!("{}-{hash}", self.set)
    }

    fn object(&self, r: &RevisionRecord) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(self.name(&r.hash)),
                labels: Some(BTreeMap::from([
                    (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
                    (labels::SET.to_string(), self.set.clone()),
                    (labels::REVISION.to_string(), r.hash.clone()),
                ])),
                annotations: Some(BTreeMap::from([(OUTCOME.to_string(), format!("{:?}", r.outcome))])),
                owner_references: self.owner.clone().map(|o| vec![o]),
                ..Default::default()
            },
            revision: r.number as i64,
            data: Some(RawExtension(serde_json::to_value(r).expect("a record always serializes"))),
        }
    }

    fn error(&self, set: &SetKey, e: kube::Error) -> HistoryError {
        HistoryError { set: set.to_string(), message: format!("ControllerRevisions: {e}") }
    }
}

/// The record a ControllerRevision holds; its number is the object's `revision`.
pub fn record_of(cr: &ControllerRevision) -> Option<RevisionRecord> {
    let mut r: RevisionRecord = serde_json::from_value(cr.data.as_ref()?.0.clone()).ok()?;
    r.number = cr.revision.max(0) as u64;
    Some(r)
}

impl HistoryStore for ControllerRevisions {
    fn load<'a>(&'a self, set: &'a SetKey) -> BoxFuture<'a, Result<History, HistoryError>> {
        async move {
            let lp = ListParams::default().labels(&format!("{}={}", labels::SET, self.set));
            let list = self.api.list(&lp).await.map_err(|e| self.error(set, e))?;
            Ok(History::new(list.items.iter().filter_map(record_of).collect()))
        }
        .boxed()
    }

    fn write<'a>(&'a self, set: &'a SetKey, write: &'a HistoryWrite) -> BoxFuture<'a, Result<(), HistoryError>> {
        async move {
            match write {
                HistoryWrite::Put(r) => {
                    let obj = self.object(r);
                    match self.api.create(&PostParams::default(), &obj).await {
                        Ok(_) => {}
                        // The revision was seen before: a new number, a new outcome.
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            let patch = serde_json::json!({
                                "metadata": { "annotations": obj.metadata.annotations },
                                "revision": obj.revision,
                                "data": obj.data,
                            });
                            self.api
                                .patch(&self.name(&r.hash), &PatchParams::default(), &Patch::Merge(&patch))
                                .await
                                .map_err(|e| self.error(set, e))?;
                        }
                        Err(e) => return Err(self.error(set, e)),
                    }
                }
                HistoryWrite::Delete(r) => match self.api.delete(&self.name(&r.hash), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(self.error(set, e)),
                },
            }
            Ok(())
        }
        .boxed()
    }
}
