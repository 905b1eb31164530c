//! Digest pinning, the I/O half: between observing the hosts and planning them, give every
//! set one image reference on all its hosts.
//!
//! [`crate::engine::pin::decide`] says per set whether a running revision's digest can be
//! reused (no call at all: an unchanged apply stays at one list per host) or the tag must be
//! resolved. A resolve asks the first reachable host of the set ([`super::digest`]), once, and
//! the answer is used on every host, so all hosts run the same digest even when the tag moves
//! mid-rollout. When a new revision cannot be resolved (registry down), the set is held: no
//! host creates or removes any of its containers this time, the old ones keep serving, and
//! the problem is reported for that set; the other sets go on.

use std::collections::HashMap;
use std::fmt;

use bollard::Docker;
use bollard::auth::DockerCredentials;

use super::digest::{DigestSource, Resolution, ResolveError, resolve_digest};
use crate::engine::pin::{ImagePolicy, PinDecision, decide, digest_of, hold, repin};
use crate::engine::{ContainerSpec, ObservedContainer, SetKey};
use crate::target::HostTarget;
use crate::target::SetRuntime;

/// One host as pinning sees it: its desired state and scope (rewritten in place) and, when it
/// could be reached and observed, its engine and managed containers.
pub struct PinHost<'a> {
    pub target: &'a mut HostTarget,
    pub docker: Option<&'a Docker>,
    pub observed: Option<&'a [ObservedContainer]>,
}

impl<'a> PinHost<'a> {
    pub fn new(
        target: &'a mut HostTarget,
        docker: Option<&'a Docker>,
        observed: Option<&'a [ObservedContainer]>,
    ) -> Self {
        PinHost { target, docker, observed }
    }
}

/// What pinning did to each set placed on at least one host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PinReport {
    pub sets: Vec<SetPin>,
}

/// One set's image for this run.
#[derive(Clone, Debug, PartialEq)]
pub struct SetPin {
    pub set: SetKey,
    /// The image as declared (`repo:tag`, or `repo@sha256:…`).
    pub declared: String,
    pub outcome: PinOutcome,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PinOutcome {
    /// The template names a digest itself.
    Given,
    /// A running revision of the same template was made with `image`: kept, nobody asked.
    Reused { image: String },
    /// The tag was resolved on `host` (now, or from the host's copy of the image).
    Resolved { image: String, host: String, source: DigestSource },
    /// Not pinned: the image exists only on `host`, without a registry digest.
    Local { host: String },
    /// No host of the set could be reached: nothing to create anywhere, nothing resolved.
    NoHost,
    /// A new revision was needed and could not be pinned: the set is left as it is.
    Held(PinProblem),
}

/// A set whose new revision could not be pinned; it is left as it is on every host.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "set {set}: cannot pin the image to a digest (asked host {host}): {error}; the set is left as it is on every host"
)]
pub struct PinProblem {
    pub set: SetKey,
    pub host: String,
    pub error: ResolveError,
}

impl PinReport {
    /// The sets that were held, with why.
    pub fn problems(&self) -> impl Iterator<Item = &PinProblem> {
        self.sets.iter().filter_map(|s| match &s.outcome {
            PinOutcome::Held(p) => Some(p),
            _ => None,
        })
    }

    /// One line per set worth telling a user about: what was resolved, what is not pinned.
    /// Reused and given digests are the quiet, usual case.
    pub fn notes(&self) -> Vec<String> {
        self.sets.iter().filter_map(SetPin::note).collect()
    }
}

impl SetPin {
    fn note(&self) -> Option<String> {
        let set = &self.set;
        match &self.outcome {
            PinOutcome::Resolved { image, host, source } => {
                let digest = digest_of(image).unwrap_or(image);
                let from = match source {
                    DigestSource::Registry => "the registry",
                    DigestSource::HostRepoDigest => "the host's copy (the registry gave no digest)",
                };
                Some(format!("set {set}: {} is {digest} (asked {from} through host {host})", self.declared))
            }
            PinOutcome::Local { host } => Some(format!(
                "set {set}: {} not pinned: local image without a registry digest (on host {host})",
                self.declared
            )),
            PinOutcome::Held(p) => Some(p.to_string()),
            PinOutcome::Given | PinOutcome::Reused { .. } | PinOutcome::NoHost => None,
        }
    }
}

/// The notes as a terminal shows them: `note: …` and, for held sets, `error: …`.
impl fmt::Display for PinReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.sets {
            if let Some(n) = s.note() {
                let kind = if matches!(s.outcome, PinOutcome::Held(_)) { "error" } else { "note" };
                writeln!(f, "{kind}: {n}")?;
            }
        }
        Ok(())
    }
}

/// Pin every set's image on every host. `policies` and `runtime` come from
/// [`crate::input::Resolved`]; a set without a policy is pinned ([`ImagePolicy::Pin`]).
///
/// Makes no call at all for a set whose running revision is reused, and one or two calls on
/// one host (a local image inspect, then the registry through the engine) per set resolved.
pub async fn pin_images<'a>(
    hosts: impl IntoIterator<Item = PinHost<'a>>,
    policies: &HashMap<SetKey, ImagePolicy>,
    runtime: &HashMap<SetKey, SetRuntime>,
) -> PinReport {
    let mut hosts: Vec<PinHost<'a>> = hosts.into_iter().collect();
    // Each set once, in the order the hosts first name it, with its declared spec and the
    // first host of the set that was observed: that one answers for the set.
    let mut sets: Vec<(SetKey, ContainerSpec, Option<usize>)> = Vec::new();
    let mut index: HashMap<&SetKey, usize> = HashMap::new();
    for (i, h) in hosts.iter().enumerate() {
        let reachable = h.docker.is_some() && h.observed.is_some();
        for d in &h.target.desired {
            let at = *index.entry(&d.key).or_insert_with(|| {
                sets.push((d.key.clone(), d.spec.clone(), None));
                sets.len() - 1
            });
            if reachable && sets[at].2.is_none() {
                sets[at].2 = Some(i);
            }
        }
    }
    let mut observed: HashMap<&SetKey, Vec<&ObservedContainer>> = HashMap::new();
    for c in hosts.iter().flat_map(|h| h.observed.unwrap_or_default()) {
        observed.entry(&c.set).or_default().push(c);
    }
    let decisions: Vec<(SetKey, String, PinDecision, Option<usize>)> = sets
        .into_iter()
        .map(|(key, spec, asked)| {
            let running = observed.get(&key).into_iter().flatten().copied();
            let decision = decide(&spec, running, policies.get(&key).copied().unwrap_or_default());
            (key, spec.image, decision, asked)
        })
        .collect();

    // One question per host, image and credentials (sets that pull with other credentials
    // ask on their own), however many sets run that image.
    let mut questions: Vec<(usize, &str, Option<DockerCredentials>)> = Vec::new();
    let mut by_image: HashMap<(usize, &str), Vec<usize>> = HashMap::new();
    let asks: Vec<Option<usize>> = decisions
        .iter()
        .map(|(key, image, decision, asked)| {
            let host = asked.filter(|&i| *decision == PinDecision::Resolve && hosts[i].docker.is_some())?;
            let credentials = runtime.get(key).and_then(|r| r.credentials.clone());
            let asked_already = by_image.entry((host, image.as_str())).or_default();
            Some(asked_already.iter().copied().find(|&q| questions[q].2 == credentials).unwrap_or_else(|| {
                questions.push((host, image.as_str(), credentials));
                asked_already.push(questions.len() - 1);
                questions.len() - 1
            }))
        })
        .collect();
    let answers = futures::future::join_all(questions.iter().map(|(host, image, credentials)| {
        let docker = hosts[*host].docker.expect("questions go to connected hosts");
        resolve_digest(docker, image, credentials.clone())
    }))
    .await;
    let resolved: Vec<Option<Result<Resolution, ResolveError>>> =
        asks.iter().map(|q| q.map(|q| answers[q].clone())).collect();

    let mut report = PinReport::default();
    for ((key, declared, decision, asked), answer) in decisions.into_iter().zip(resolved) {
        let host = asked.map(|i| hosts[i].target.name.clone()).unwrap_or_default();
        let outcome = match (decision, answer) {
            (PinDecision::Given, _) => PinOutcome::Given,
            (PinDecision::Reuse(image), _) => {
                tracing::debug!(set = %key, %image, "reusing the running revision's image");
                PinOutcome::Reused { image }
            }
            (PinDecision::Resolve, None) => PinOutcome::NoHost,
            (PinDecision::Resolve, Some(Ok(Resolution::Pinned { digest, pinned, source }))) => {
                tracing::info!(set = %key, image = %declared, %digest, %host, ?source, "pinned the image");
                PinOutcome::Resolved { image: pinned, host, source }
            }
            (PinDecision::Resolve, Some(Ok(Resolution::Local))) => {
                tracing::debug!(set = %key, image = %declared, %host, "not pinned: local image without a registry digest");
                PinOutcome::Local { host }
            }
            (PinDecision::Resolve, Some(Err(error))) => {
                // Reported to the caller (the CLI prints it, the operator makes it an Event).
                tracing::warn!(set = %key, image = %declared, %host, %error, "cannot pin; the set is left as it is");
                PinOutcome::Held(PinProblem { set: key.clone(), host, error })
            }
        };
        for h in hosts.iter_mut() {
            match &outcome {
                PinOutcome::Reused { image } | PinOutcome::Resolved { image, .. } => {
                    for d in h.target.desired.iter_mut().filter(|d| d.key == key) {
                        repin(d, image);
                    }
                }
                PinOutcome::Held(_) => {
                    let observed = h.observed.unwrap_or_default();
                    hold(&mut h.target.desired, &mut h.target.scope, observed, &key);
                }
                PinOutcome::Given | PinOutcome::Local { .. } | PinOutcome::NoHost => {}
            }
        }
        report.sets.push(SetPin { set: key, declared, outcome });
    }
    report
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::engine::pin::pinned_reference;
    use crate::engine::sim::SimHost;
    use crate::engine::{DesiredSet, EnvValue, Order, Pull, Scope, plan_host};
    use crate::target::Endpoint;

    const TAGGED: &str = "127.0.0.1:5000/echo:live";

    fn desired(image: &str) -> DesiredSet {
        let spec = ContainerSpec {
            image: image.to_string(),
            env: BTreeMap::from([("GREETING".to_string(), EnvValue::Plain("hi".into()))]),
            restart_policy: "unless-stopped".into(),
            ..Default::default()
        };
        DesiredSet::new(SetKey::new("default", "web"), spec, 1, Order::StartFirst, Pull::IfNotPresent)
    }

    fn target(name: &str) -> HostTarget {
        HostTarget {
            name: name.into(),
            endpoint: Endpoint::Unix("/nonexistent.sock".into()),
            desired: vec![desired(TAGGED)],
            scope: Scope::of_sets([&SetKey::new("default", "web")]),
        }
    }

    /// Host `a` runs the set pinned to a digest, host `b` runs nothing yet. Neither has an
    /// engine client: any call would be impossible, so reusing must make none.
    #[tokio::test]
    async fn a_running_digest_is_reused_on_every_host_without_a_call() {
        let running = desired(&pinned_reference(TAGGED, &format!("sha256:{}", "1".repeat(64))));
        let mut sim = SimHost::default();
        let plan = plan_host("a", std::slice::from_ref(&running), &[], &Scope::of_sets([&running.key]));
        sim.apply_plan(&plan, std::slice::from_ref(&running)).expect("the sim accepts the plan");
        let on_a = sim.observe();
        let (mut a, mut b) = (target("a"), target("b"));
        let report = pin_images(
            [PinHost::new(&mut a, None, Some(&on_a)), PinHost::new(&mut b, None, Some(&[]))],
            &HashMap::new(),
            &HashMap::new(),
        )
        .await;
        assert_eq!(report.sets.len(), 1);
        assert_eq!(report.sets[0].outcome, PinOutcome::Reused { image: running.spec.image.clone() });
        for t in [&a, &b] {
            assert_eq!(t.desired[0].revision, running.revision, "host {}", t.name);
        }
        assert!(plan_host("a", &a.desired, &on_a, &a.scope).is_empty());
        assert!(report.notes().is_empty(), "reuse is the quiet case: {:?}", report.notes());
    }

    #[tokio::test]
    async fn follow_without_a_reachable_host_changes_nothing() {
        let mut a = target("a");
        let follow = HashMap::from([(
            SetKey::new("default", "web"),
            ImagePolicy::Follow { poll_interval: Duration::from_secs(30) },
        )]);
        let report = pin_images([PinHost::new(&mut a, None, None)], &follow, &HashMap::new()).await;
        assert_eq!(report.sets[0].outcome, PinOutcome::NoHost);
        assert_eq!(a.desired[0], desired(TAGGED));
        assert_eq!(report.problems().count(), 0);
    }
}
