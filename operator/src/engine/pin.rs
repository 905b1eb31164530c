//! Digest pinning, the deciding half: which image a set's new containers run.
//!
//! A revision runs one image digest on every host, even when its tag moves later. The
//! revision hash covers the image, so the pinned reference (`repo:tag@sha256:…`) is what goes
//! into [`ContainerSpec::image`] and from there into [`ContainerSpec::revision`].
//!
//! The hosts are the state here too: a running container's spec label carries the pinned
//! image it was made with. Under [`ImagePolicy::Pin`], when a container of the set (on any
//! host) runs exactly the desired template pinned to some digest, that digest is reused and
//! no registry is asked, so an unchanged set costs nothing and a moved tag changes nothing.
//! Otherwise (a new template, or [`ImagePolicy::Follow`]) the adapter asks a registry
//! ([`crate::docker::pin`]), then [`repin`] rewrites the set's desired state.
//!
//! Everything here is pure; the registry calls happen in the Docker adapter before planning.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::model::{ContainerSpec, DesiredSet, ObservedContainer, SetKey};
use super::plan::Scope;

/// What a moved image tag does to a set (`spec.imagePolicy`, with its poll interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ImagePolicy {
    /// Resolve a revision's tag once, when the revision is made.
    #[default]
    Pin,
    /// Resolve the tag at every apply, and every `poll_interval` in the operator: a digest
    /// that moved is a new revision.
    Follow { poll_interval: Duration },
}

impl ImagePolicy {
    /// How often the operator should look at the set again to see whether its tag moved.
    pub fn poll_interval(&self) -> Option<Duration> {
        match self {
            ImagePolicy::Pin => None,
            ImagePolicy::Follow { poll_interval } => Some(*poll_interval),
        }
    }
}

/// What to do with a set's image before planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinDecision {
    /// The template names a digest itself: nothing to resolve, nothing to rewrite.
    Given,
    /// Run this image, the one a running revision of the same template was made with: either
    /// pinned (`repo:tag@sha256:…`) or, for a revision made unpinned (a local image, or a set
    /// made before pinning existed), the tag itself. No registry call.
    Reuse(String),
    /// Ask a registry where the tag points now.
    Resolve,
}

/// Decide for one set: `desired` is its spec as declared (image `repo:tag`), `observed` the
/// set's containers on every host that could be observed.
pub fn decide<'a>(
    desired: &ContainerSpec,
    observed: impl IntoIterator<Item = &'a ObservedContainer>,
    policy: ImagePolicy,
) -> PinDecision {
    if has_digest(&desired.image) || is_content_tag(&desired.image) {
        return PinDecision::Given;
    }
    if let ImagePolicy::Follow { .. } = policy {
        return PinDecision::Resolve;
    }
    // Distinct (image, revision) pairs first: a fleet has many containers of few revisions,
    // and each check hashes a spec.
    let mut seen: BTreeMap<(String, &str), (usize, usize)> = BTreeMap::new();
    for c in observed {
        let Some(image) = image_of(c) else { continue };
        if image != desired.image && pinned_tag(&image) != Some(desired.image.as_str()) {
            continue;
        }
        let n = seen.entry((image, c.revision.as_str())).or_default();
        n.0 += usize::from(c.is_ready());
        n.1 += 1;
    }
    // Several matching revisions (a Follow rollout cut short, then switched to Pin): keep the
    // one most containers serve, so the fewest are replaced. Ties go to the greater
    // reference, so the choice never depends on the order hosts list containers in.
    let mut best: Option<((usize, usize), String)> = None;
    for ((image, revision), counts) in seen {
        if with_image(desired, &image).revision() != revision {
            continue; // the same image, but another template
        }
        if best.as_ref().is_none_or(|(c, i)| (counts, &image) > (*c, i)) {
            best = Some((counts, image));
        }
    }
    match best {
        Some((_, image)) => PinDecision::Reuse(image),
        None => PinDecision::Resolve,
    }
}

/// Whether `image` carries the tag of an Image berth built, `:berth-<16 hex>` of its input
/// digest: as fixed as a digest (other inputs, another tag), so there is nothing to resolve;
/// and a carried image is known to no registry anyway.
pub fn is_content_tag(image: &str) -> bool {
    let tag = image.rsplit_once(':').map(|(repo, tag)| (repo.contains('/') || !repo.is_empty(), tag));
    matches!(tag, Some((true, t)) if t.len() == 22 && t.starts_with("berth-") && t[6..].bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `repo:tag` pinned to `digest`: `repo:tag@sha256:…`. Docker 20.10 pulls (by the digest,
/// whatever the tag points to now), inspects and creates from this form, and it keeps the tag
/// readable in `docker ps`, in the spec label and in plans.
pub fn pinned_reference(tagged: &str, digest: &str) -> String {
    format!("{tagged}@{digest}")
}

/// The digest of a reference, if it names one.
pub fn digest_of(image: &str) -> Option<&str> {
    image.rsplit_once('@').map(|(_, d)| d).filter(|d| is_digest(d))
}

fn has_digest(image: &str) -> bool {
    digest_of(image).is_some()
}

/// `repo:tag` of a reference made by [`pinned_reference`].
fn pinned_tag(image: &str) -> Option<&str> {
    image.rsplit_once('@').filter(|(_, d)| is_digest(d)).map(|(t, _)| t)
}

fn is_digest(d: &str) -> bool {
    let Some((algo, hex)) = d.split_once(':') else { return false };
    let len = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The image a container was created with: its spec label says it exactly; the list's image
/// field is the fallback (it shows an image ID instead once the reference is gone).
fn image_of(c: &ObservedContainer) -> Option<String> {
    #[derive(Deserialize)]
    struct ImageOnly {
        image: String,
    }
    c.spec_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<ImageOnly>(j).ok())
        .map(|s| s.image)
        .or_else(|| (!c.image.is_empty()).then(|| c.image.clone()))
}

fn with_image(spec: &ContainerSpec, image: &str) -> ContainerSpec {
    ContainerSpec { image: image.to_string(), ..spec.clone() }
}

/// Make `d` run `image`: its spec and revision change together.
pub fn repin(d: &mut DesiredSet, image: &str) {
    if d.spec.image != image {
        d.spec.image = image.to_string();
        d.revision = d.spec.revision();
    }
}

/// Leave `set` as it is on this host for this run: not desired and not owned, so the plan
/// neither creates nor removes any of its containers. Used when its new revision cannot be
/// pinned. Under `--prune` the namespace-wide ownership becomes the list of the namespace's
/// other sets seen here (`observed`) or desired here, which owns the same containers but one.
pub fn hold(desired: &mut Vec<DesiredSet>, scope: &mut Scope, observed: &[ObservedContainer], set: &SetKey) {
    desired.retain(|d| &d.key != set);
    scope.sets.remove(set);
    if scope.namespaces.remove(&set.namespace) {
        let others: BTreeSet<SetKey> = observed
            .iter()
            .map(|c| &c.set)
            .chain(desired.iter().map(|d| &d.key))
            .filter(|k| k.namespace == set.namespace && *k != set)
            .cloned()
            .collect();
        scope.sets.extend(others);
    }
}

#[cfg(test)]
mod content_tag_tests {
    use super::is_content_tag;

    #[test]
    fn a_built_images_tag_is_fixed_like_a_digest() {
        assert!(is_content_tag("site:berth-f4d4d54979456102"));
        assert!(is_content_tag("127.0.0.1:5000/shop/site:berth-0123456789abcdef"));
        assert!(!is_content_tag("site:berth-f4d4"));
        assert!(!is_content_tag("site:latest"));
        assert!(!is_content_tag("127.0.0.1:5000/site"));
        assert!(!is_content_tag("site:berth-f4d4d54979456102x"));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::engine::model::{EnvValue, Order, Pull, State};
    use crate::engine::plan::plan_host;
    use crate::engine::sim::SimHost;

    const TAGGED: &str = "127.0.0.1:5000/echo:live";

    fn digest(n: u64) -> String {
        format!("sha256:{:064x}", n)
    }

    fn spec(image: &str, greeting: &str) -> ContainerSpec {
        ContainerSpec {
            image: image.to_string(),
            env: BTreeMap::from([("GREETING".to_string(), EnvValue::Plain(greeting.to_string()))]),
            restart_policy: "unless-stopped".into(),
            ..Default::default()
        }
    }

    fn key() -> SetKey {
        SetKey::new("default", "web")
    }

    fn desired(spec: ContainerSpec, replicas: u32) -> DesiredSet {
        DesiredSet::new(key(), spec, replicas, Order::StartFirst, Pull::IfNotPresent)
    }

    /// A host converged to `d` through the planner, as a real apply would leave it.
    fn host_running(d: &DesiredSet) -> SimHost {
        let mut host = SimHost::default();
        let plan = plan_host("h", std::slice::from_ref(d), &[], &Scope::of_sets([&d.key]));
        host.apply_plan(&plan, std::slice::from_ref(d)).expect("the sim accepts the plan");
        host
    }

    #[test]
    fn pin_reuses_the_digest_a_running_revision_was_made_with() {
        let running = desired(spec(&pinned_reference(TAGGED, &digest(1)), "hi"), 2);
        let observed = host_running(&running).observe();
        let decision = decide(&spec(TAGGED, "hi"), &observed, ImagePolicy::Pin);
        assert_eq!(decision, PinDecision::Reuse(running.spec.image.clone()));

        // Reused, the desired state is the running one: the plan is empty.
        let mut d = desired(spec(TAGGED, "hi"), 2);
        let PinDecision::Reuse(image) = decision else { unreachable!() };
        repin(&mut d, &image);
        assert_eq!(d.revision, running.revision);
        assert!(plan_host("h", &[d], &observed, &Scope::of_sets([&key()])).is_empty());
    }

    #[test]
    fn a_new_template_or_tag_is_resolved_again() {
        let running = desired(spec(&pinned_reference(TAGGED, &digest(1)), "hi"), 1);
        let observed = host_running(&running).observe();
        assert_eq!(decide(&spec(TAGGED, "hello"), &observed, ImagePolicy::Pin), PinDecision::Resolve);
        assert_eq!(decide(&spec("127.0.0.1:5000/echo:v2", "hi"), &observed, ImagePolicy::Pin), PinDecision::Resolve);
        assert_eq!(decide(&spec(TAGGED, "hi"), &[], ImagePolicy::Pin), PinDecision::Resolve);
    }

    #[test]
    fn follow_always_resolves_and_a_given_digest_never_does() {
        let running = desired(spec(&pinned_reference(TAGGED, &digest(1)), "hi"), 1);
        let observed = host_running(&running).observe();
        let follow = ImagePolicy::Follow { poll_interval: Duration::from_secs(60) };
        assert_eq!(decide(&spec(TAGGED, "hi"), &observed, follow), PinDecision::Resolve);
        let given = format!("127.0.0.1:5000/echo@{}", digest(7));
        assert_eq!(decide(&spec(&given, "hi"), &observed, follow), PinDecision::Given);
        assert_eq!(decide(&spec(&given, "hi"), &[], ImagePolicy::Pin), PinDecision::Given);
    }

    #[test]
    fn an_unpinned_running_revision_is_kept_without_asking() {
        // A local image (nothing to pin against), or a set made before pinning existed.
        let running = desired(spec("example/echo:latest", "hi"), 1);
        let observed = host_running(&running).observe();
        assert_eq!(
            decide(&spec("example/echo:latest", "hi"), &observed, ImagePolicy::Pin),
            PinDecision::Reuse("example/echo:latest".into())
        );
    }

    #[test]
    fn the_image_field_is_the_fallback_for_a_missing_spec_label() {
        let running = desired(spec(&pinned_reference(TAGGED, &digest(3)), "hi"), 1);
        let mut observed = host_running(&running).observe();
        for c in &mut observed {
            c.spec_json = None;
            c.image = running.spec.image.clone();
        }
        assert_eq!(decide(&spec(TAGGED, "hi"), &observed, ImagePolicy::Pin), PinDecision::Reuse(running.spec.image));
    }

    #[test]
    fn of_two_matching_revisions_the_one_more_containers_serve_wins() {
        let d1 = desired(spec(&pinned_reference(TAGGED, &digest(1)), "hi"), 1);
        let d2 = desired(spec(&pinned_reference(TAGGED, &digest(2)), "hi"), 3);
        let mut observed = host_running(&d1).observe();
        observed.extend(host_running(&d2).observe());
        assert_eq!(decide(&spec(TAGGED, "hi"), &observed, ImagePolicy::Pin), PinDecision::Reuse(d2.spec.image));
    }

    #[test]
    fn a_held_set_is_neither_created_nor_removed_even_under_prune() {
        let old = desired(spec(&pinned_reference(TAGGED, &digest(1)), "hi"), 1);
        let other_old = DesiredSet { key: SetKey::new("default", "gone"), ..old.clone() };
        let mut host = host_running(&old);
        let plan = plan_host("h", std::slice::from_ref(&other_old), &[], &Scope::of_sets([&other_old.key]));
        host.apply_plan(&plan, std::slice::from_ref(&other_old)).expect("the sim accepts the plan");
        let observed = host.observe();

        let mut want = vec![desired(spec(TAGGED, "new"), 1)];
        let mut scope = Scope { namespaces: ["default".to_string()].into(), ..Scope::default() };
        hold(&mut want, &mut scope, &observed, &key());
        let plan = plan_host("h", &want, &observed, &scope);
        // The held set is untouched; the pruned namespace's other undeclared set still goes.
        assert_eq!(plan.sets.len(), 1, "{plan:#?}");
        assert_eq!(plan.sets[0].set, other_old.key);
    }

    fn arb_digest() -> impl Strategy<Value = String> {
        any::<u64>().prop_map(digest)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever digests ran before, Pin reuses one that matches the template exactly, and
        /// resolves when none does; never a digest of another template or tag.
        #[test]
        fn pin_reuses_only_an_exact_match(
            runs in proptest::collection::vec((arb_digest(), 0usize..3, 0usize..2, 1u32..3, any::<bool>()), 0..4),
            want_greeting in 0usize..3,
            want_tag in 0usize..2,
            order in any::<u64>(),
        ) {
            let greetings = ["hi", "hello", "hey"];
            let tags = [TAGGED, "127.0.0.1:5000/echo:v2"];
            let mut observed = Vec::new();
            let mut exact = BTreeSet::new();
            for (i, (dg, g, t, replicas, stopped)) in runs.iter().enumerate() {
                let image = pinned_reference(tags[*t], dg);
                let d = DesiredSet { key: key(), ..desired(spec(&image, greetings[*g]), *replicas) };
                let mut host = host_running(&d).observe();
                for c in &mut host {
                    c.id = format!("{i}-{}", c.id);
                    if *stopped { c.state = State::Exited; }
                }
                if *g == want_greeting && *t == want_tag {
                    exact.insert(image);
                }
                observed.extend(host);
            }
            let want = spec(tags[want_tag], greetings[want_greeting]);
            let decision = decide(&want, &observed, ImagePolicy::Pin);
            match &decision {
                PinDecision::Reuse(image) => prop_assert!(exact.contains(image), "{image} is not an exact match"),
                PinDecision::Resolve => prop_assert!(exact.is_empty()),
                PinDecision::Given => prop_assert!(false, "no digest was given"),
            }
            // The host's listing order does not matter.
            let n = observed.len().max(1);
            observed.rotate_left((order as usize) % n);
            observed.reverse();
            prop_assert_eq!(decide(&want, &observed, ImagePolicy::Pin), decision);
        }

        /// Repinning to any digest changes the revision, and repinning back restores it.
        #[test]
        fn the_revision_covers_the_digest(a in arb_digest(), b in arb_digest()) {
            let mut d = desired(spec(TAGGED, "hi"), 1);
            repin(&mut d, &pinned_reference(TAGGED, &a));
            let first = d.revision.clone();
            prop_assert_eq!(&first, &d.spec.revision());
            repin(&mut d, &pinned_reference(TAGGED, &b));
            prop_assert_eq!(a == b, d.revision == first);
            repin(&mut d, &pinned_reference(TAGGED, &a));
            prop_assert_eq!(d.revision, first);
        }
    }

    #[test]
    fn digests_are_recognised() {
        assert_eq!(digest_of(&pinned_reference(TAGGED, &digest(5))), Some(digest(5).as_str()));
        assert_eq!(digest_of(TAGGED), None);
        assert_eq!(digest_of("echo@sha256:abc"), None);
        assert_eq!(pinned_tag(&pinned_reference(TAGGED, &digest(5))), Some(TAGGED));
    }
}
