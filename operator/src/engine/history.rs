//! Revision history: what each revision of a set was and how its rollout ended.
//!
//! One record per revision hash, numbered in the order the spec asked for them (a spec that
//! returns to an earlier template bumps that record to the next number, as Kubernetes does
//! with ControllerRevisions). A rollback records nothing new: the revision it leaves stays the
//! newest record, `Failed` or `RolledBack`, and so stays *held* — not rolled out again — until
//! the spec changes. "Where to go back to" is the newest `Ready` record that is not it. Stores (volumes on the hosts in
//! standalone mode, ControllerRevisions in the operator) only load, put and delete records;
//! every decision is here, pure.

use serde::{Deserialize, Serialize};

/// How a revision's rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Being rolled out (or the rollout was interrupted).
    Progressing,
    /// Rolled out and ready on every host: a revision to return to.
    Ready,
    /// A container exited, turned unhealthy or missed the deadline.
    Failed,
    /// Left by an explicit `berth rollback`.
    RolledBack,
}

impl Outcome {
    /// Outcomes that keep the revision from being rolled out again until the spec changes.
    pub fn holds(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::RolledBack)
    }
}

/// One revision as remembered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub number: u64,
    /// The revision hash (as in container names and labels).
    pub hash: String,
    /// The ContainerSet's `spec.template` as JSON, image pinned where it was.
    pub template: serde_json::Value,
    /// The image containers ran (`repo:tag@sha256:…` when pinned).
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// RFC 3339, when the outcome was recorded.
    pub time: String,
    pub outcome: Outcome,
    /// Why it failed: host, container, what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Hosts where berth pulled the image for this revision (for image garbage collection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pulled_on: Vec<String>,
    /// A task's revision: the hosts where it ran to completion. Its exited containers may be
    /// removed later; this record keeps it from running there again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed_on: Vec<String>,
}

/// A change a store carries out.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryWrite {
    /// Create or replace the record of this hash.
    Put(RevisionRecord),
    /// Delete the record of this hash (trimmed beyond the limit).
    Delete(RevisionRecord),
}

/// A set's records, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    records: Vec<RevisionRecord>,
}

impl History {
    /// From records as stores hold them: deduplicated by hash (the highest number wins, as
    /// when two hosts disagree after a partial write), ordered by number.
    pub fn new(mut records: Vec<RevisionRecord>) -> History {
        records.sort_by(|a, b| (b.number, &a.hash).cmp(&(a.number, &b.hash)));
        let mut seen = std::collections::BTreeSet::new();
        records.retain(|r| seen.insert(r.hash.clone()));
        records.reverse();
        History { records }
    }

    /// The history after a store carried out `writes`.
    pub fn apply(&self, writes: &[HistoryWrite]) -> History {
        let mut records = self.records.clone();
        for w in writes {
            match w {
                HistoryWrite::Put(r) => {
                    records.retain(|x| x.hash != r.hash);
                    records.push(r.clone());
                }
                HistoryWrite::Delete(r) => records.retain(|x| x.hash != r.hash),
            }
        }
        History::new(records)
    }

    pub fn records(&self) -> &[RevisionRecord] {
        &self.records
    }

    pub fn latest(&self) -> Option<&RevisionRecord> {
        self.records.last()
    }

    pub fn by_number(&self, number: u64) -> Option<&RevisionRecord> {
        self.records.iter().find(|r| r.number == number)
    }

    pub fn by_hash(&self, hash: &str) -> Option<&RevisionRecord> {
        self.records.iter().find(|r| r.hash == hash)
    }

    /// The newest revision that was ready everywhere, other than `except`: where a rollback
    /// returns to.
    pub fn last_ready(&self, except: &str) -> Option<&RevisionRecord> {
        self.records.iter().rev().find(|r| r.outcome == Outcome::Ready && r.hash != except)
    }

    /// The hosts where task revision `hash` completed: only while it is the newest record and
    /// Ready (a spec that went elsewhere and came back is a new run of the task).
    pub fn completed_on(&self, hash: &str) -> &[String] {
        self.latest().filter(|r| r.hash == hash && r.outcome == Outcome::Ready).map_or(&[], |r| &r.completed_on)
    }

    /// The record that holds `hash` back: the newest record is that revision and it failed or
    /// was rolled back. A spec change makes a new hash, and the hold is gone.
    pub fn held(&self, hash: &str) -> Option<&RevisionRecord> {
        self.latest().filter(|r| r.hash == hash && r.outcome.holds())
    }

    /// Record `record.hash` with its outcome, then trim to `limit` records. The record becomes
    /// the newest unless it already is (then only a changed outcome is written). Trimming keeps
    /// the newest `limit` records and, always, the newest one and the last ready one.
    pub fn record(&self, mut record: RevisionRecord, limit: usize) -> Vec<HistoryWrite> {
        let mut writes = Vec::new();
        let mut next = self.records.clone();
        match self.latest() {
            Some(latest) if latest.hash == record.hash => {
                // Completions are remembered across outcomes of the same revision, as long as it
                // stays the newest (a task that returns to an earlier revision runs again).
                for h in &latest.completed_on {
                    if !record.completed_on.contains(h) {
                        record.completed_on.push(h.clone());
                    }
                }
                record.completed_on.sort();
                if latest.outcome == record.outcome
                    && latest.message == record.message
                    && latest.completed_on == record.completed_on
                {
                    return writes;
                }
                record.number = latest.number;
                // Pulls are remembered across outcomes of the same rollout.
                for h in &latest.pulled_on {
                    if !record.pulled_on.contains(h) {
                        record.pulled_on.push(h.clone());
                    }
                }
                record.pulled_on.sort();
                next.pop();
            }
            latest => {
                record.number = latest.map_or(1, |l| l.number + 1);
                if let Some(old) = self.by_hash(&record.hash) {
                    for h in &old.pulled_on {
                        if !record.pulled_on.contains(h) {
                            record.pulled_on.push(h.clone());
                        }
                    }
                    record.pulled_on.sort();
                }
                next.retain(|r| r.hash != record.hash);
            }
        }
        next.push(record.clone());
        writes.push(HistoryWrite::Put(record));
        let keep_ready = History { records: next.clone() }.last_ready("").map(|r| r.hash.clone());
        let mut excess = next.len().saturating_sub(limit.max(1));
        let newest = next.len() - 1;
        for (i, r) in next.iter().enumerate() {
            if excess == 0 {
                break;
            }
            if i != newest && Some(&r.hash) != keep_ready.as_ref() {
                writes.push(HistoryWrite::Delete(r.clone()));
                excess -= 1;
            }
        }
        writes
    }
}

/// Images that the trimmed records made berth pull on `host` and that no record still kept
/// refers to: the ones garbage collection may remove there.
pub fn collectable_images(writes: &[HistoryWrite], kept: &History, host: &str) -> Vec<String> {
    let mut out: Vec<String> = writes
        .iter()
        .filter_map(|w| match w {
            HistoryWrite::Delete(r) if r.pulled_on.iter().any(|h| h == host) => Some(r.image.clone()),
            _ => None,
        })
        .filter(|img| !still_kept(kept, writes, img))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a record that stays after `writes` refers to `image`.
fn still_kept(history: &History, writes: &[HistoryWrite], image: &str) -> bool {
    let deleted: Vec<&str> = writes
        .iter()
        .filter_map(|w| match w {
            HistoryWrite::Delete(r) => Some(r.hash.as_str()),
            _ => None,
        })
        .collect();
    let put = writes.iter().any(|w| matches!(w, HistoryWrite::Put(r) if r.image == image));
    put || history.records.iter().any(|r| r.image == image && !deleted.contains(&r.hash.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(hash: &str, outcome: Outcome) -> RevisionRecord {
        RevisionRecord {
            number: 0,
            hash: hash.into(),
            template: serde_json::json!({"image": format!("img:{hash}")}),
            image: format!("img:{hash}"),
            digest: None,
            time: "2026-11-28T00:00:00Z".into(),
            outcome,
            message: None,
            pulled_on: vec![],
            completed_on: vec![],
        }
    }

    fn apply(h: &History, writes: &[HistoryWrite]) -> History {
        h.apply(writes)
    }

    #[test]
    fn numbers_grow_and_a_rollback_bumps_the_old_revision() {
        let mut h = History::default();
        for (hash, o) in [("a", Outcome::Ready), ("b", Outcome::Ready), ("c", Outcome::Progressing)] {
            h = apply(&h, &h.record(rec(hash, o), 10));
        }
        assert_eq!(
            h.records().iter().map(|r| (r.hash.as_str(), r.number)).collect::<Vec<_>>(),
            [("a", 1), ("b", 2), ("c", 3)]
        );
        // c fails: same number, new outcome; the way back is b.
        h = apply(&h, &h.record(rec("c", Outcome::Failed), 10));
        assert_eq!(h.latest().unwrap().number, 3);
        assert_eq!(h.held("c").unwrap().outcome, Outcome::Failed);
        assert_eq!(h.last_ready("c").unwrap().hash, "b");
        assert!(h.held("b").is_none());
        // A rollback to b records nothing: c stays the newest record, so it stays held
        // until the spec changes (a new revision d).
        h = apply(&h, &h.record(rec("d", Outcome::Progressing), 10));
        assert!(h.held("c").is_none());
        assert_eq!(h.by_hash("c").unwrap().outcome, Outcome::Failed);
        // Reverting the spec to a earlier template rolls it forward again, as the newest.
        h = apply(&h, &h.record(rec("a", Outcome::Ready), 10));
        assert_eq!(h.latest().unwrap().hash, "a");
        assert_eq!(h.latest().unwrap().number, 5);
    }

    #[test]
    fn recording_the_same_outcome_twice_writes_nothing() {
        let h = History::default();
        let h = apply(&h, &h.record(rec("a", Outcome::Ready), 10));
        assert!(h.record(rec("a", Outcome::Ready), 10).is_empty());
    }

    #[test]
    fn trimming_keeps_the_last_ready_revision() {
        let mut h = History::default();
        h = apply(&h, &h.record(rec("a", Outcome::Ready), 2));
        for hash in ["b", "c", "d"] {
            h = apply(&h, &h.record(rec(hash, Outcome::Failed), 2));
        }
        let hashes: Vec<&str> = h.records().iter().map(|r| r.hash.as_str()).collect();
        assert_eq!(hashes, ["a", "d"], "a is the only way back, so it stays");
    }

    #[test]
    fn trimmed_images_berth_pulled_are_collectable_unless_still_used() {
        let mut h = History::default();
        let mut a = rec("a", Outcome::Ready);
        a.pulled_on = vec!["h1".into()];
        h = apply(&h, &h.record(a, 1));
        let mut b = rec("b", Outcome::Ready);
        b.pulled_on = vec!["h2".into()];
        let writes = h.record(b, 1);
        assert!(writes.iter().any(|w| matches!(w, HistoryWrite::Delete(r) if r.hash == "a")));
        assert_eq!(collectable_images(&writes, &h, "h1"), ["img:a"]);
        assert!(collectable_images(&writes, &h, "h2").is_empty(), "berth did not pull img:a on h2");
        // A revision that stays and runs the same image keeps it.
        let mut c = rec("c", Outcome::Ready);
        c.image = "img:a".into();
        let writes = h.record(c, 1);
        assert!(collectable_images(&writes, &h, "h1").is_empty());
    }

    #[test]
    fn loading_deduplicates_by_hash() {
        let mut a1 = rec("a", Outcome::Progressing);
        a1.number = 1;
        let mut a2 = rec("a", Outcome::Ready);
        a2.number = 3;
        let mut b = rec("b", Outcome::Ready);
        b.number = 2;
        let h = History::new(vec![a1, b.clone(), a2.clone(), b]);
        assert_eq!(h.records().iter().map(|r| (r.hash.as_str(), r.number)).collect::<Vec<_>>(), [("b", 2), ("a", 3)]);
    }

    proptest! {
        /// Whatever happens, the history stays within its limit (plus the last ready record),
        /// numbers are unique and increasing, and the newest record is the last one recorded.
        #[test]
        fn history_laws(events in prop::collection::vec((0u8..5, 0u8..4), 1..40), limit in 1usize..5) {
            let mut h = History::default();
            for (hash, outcome) in events {
                let outcome = [Outcome::Progressing, Outcome::Ready, Outcome::Failed, Outcome::RolledBack][outcome as usize];
                let hash = format!("r{hash}");
                h = apply(&h, &h.record(rec(&hash, outcome), limit));
                prop_assert_eq!(&h.latest().unwrap().hash, &hash);
                prop_assert_eq!(h.latest().unwrap().outcome, outcome);
                prop_assert!(h.records().len() <= limit + 1);
                let numbers: Vec<u64> = h.records().iter().map(|r| r.number).collect();
                prop_assert!(numbers.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
