//! Image references read the way Docker reads them: `nginx` is `docker.io/library/nginx:latest`.
//!
//! oci-spec's `Reference` does the same, but its parser is a regular expression with Unicode
//! classes that takes ~100 ms of CPU to compile on first use — paid by every `berth apply` that
//! rolls out a new revision, before its first step (measured: the change-one benchmark waited
//! 130–600 ms between the list and the next request). References reaching this module were
//! validated already (`berth_crd::validate`, or listed by the engine), so splitting them is
//! string work; oci-spec stays the oracle in the tests below.

/// A reference split into its parts, normalised as Docker does (`index.docker.io` is
/// `docker.io`; a Docker Hub name without a namespace is in `library/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef<'a> {
    registry: &'a str,
    repository: String,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const DEFAULT_TAG: &str = "latest";

impl<'a> ImageRef<'a> {
    /// Splits `reference`; `None` when it has no name, or a tag or digest of the wrong shape.
    pub fn parse(reference: &'a str) -> Option<ImageRef<'a>> {
        let (name_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        if let Some(d) = digest {
            let (algorithm, hex) = d.split_once(':')?;
            if algorithm.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
        }
        // A tag follows the last ':' that no '/' follows (`host:5000/repo` has a port, no tag).
        let (name, tag) = match name_tag.rfind(':') {
            Some(colon) if !name_tag[colon..].contains('/') => (&name_tag[..colon], Some(&name_tag[colon + 1..])),
            _ => (name_tag, None),
        };
        if let Some(t) = tag {
            let valid = t.len() <= 128
                && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !valid {
                return None;
            }
        }
        let name_bytes = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':');
        if name.is_empty() || name.starts_with('/') || name.ends_with('/') || !name.bytes().all(name_bytes) {
            return None;
        }
        let (registry, remainder) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
            _ => (DOCKER_HUB, name),
        };
        let registry = if registry == DOCKER_HUB_LEGACY { DOCKER_HUB } else { registry };
        let repository = if registry == DOCKER_HUB && !remainder.contains('/') {
            format!("library/{remainder}")
        } else {
            remainder.to_string()
        };
        let tag = if tag.is_none() && digest.is_none() { Some(DEFAULT_TAG) } else { tag };
        Some(ImageRef { registry, repository, tag, digest })
    }

    /// The registry's host (and port): `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        self.registry
    }

    /// The repository within the registry: `library/nginx`, `team/echo`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag: `latest` when the reference names neither a tag nor a digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag
    }

    /// The digest (`sha256:…`), when the reference carries one.
    pub fn digest(&self) -> Option<&str> {
        self.digest
    }

    /// Whether both name the same repository in the same registry.
    pub fn same_repository(&self, other: &ImageRef<'_>) -> bool {
        self.registry == other.registry && self.repository == other.repository
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use oci_spec::distribution::Reference;
    use proptest::prelude::*;

    use super::*;

    fn parts(r: &ImageRef<'_>) -> (String, String, Option<String>, Option<String>) {
        (r.registry().into(), r.repository().into(), r.tag().map(Into::into), r.digest().map(Into::into))
    }

    fn oracle(s: &str) -> Option<(String, String, Option<String>, Option<String>)> {
        let r = Reference::from_str(s).ok()?;
        Some((r.registry().into(), r.repository().into(), r.tag().map(Into::into), r.digest().map(Into::into)))
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        let r = ImageRef::parse("nginx").expect("valid");
        assert_eq!(parts(&r), ("docker.io".into(), "library/nginx".into(), Some("latest".into()), None));
        let r = ImageRef::parse("index.docker.io/team/app:1").expect("valid");
        assert_eq!(parts(&r), ("docker.io".into(), "team/app".into(), Some("1".into()), None));
    }

    #[test]
    fn a_port_is_not_a_tag() {
        let r = ImageRef::parse("127.0.0.1:5000/team/echo").expect("valid");
        assert_eq!(parts(&r), ("127.0.0.1:5000".into(), "team/echo".into(), Some("latest".into()), None));
        let r = ImageRef::parse("localhost/echo:live").expect("valid");
        assert_eq!(parts(&r), ("localhost".into(), "echo".into(), Some("live".into()), None));
    }

    #[test]
    fn digests_and_tags_together() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let s = format!("registry.example:443/app:2@{d}");
        let r = ImageRef::parse(&s).expect("valid");
        assert_eq!(parts(&r), ("registry.example:443".into(), "app".into(), Some("2".into()), Some(d.clone())));
        let s = format!("app@{d}");
        assert_eq!(ImageRef::parse(&s).expect("valid").tag(), None, "a digest alone has no default tag");
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in
            ["", ":tag", "app:", "app:-x", "app@sha256", "app@sha256:xyz", "/app", "app/", "app:t@g", "not a reference"]
        {
            assert_eq!(ImageRef::parse(bad), None, "{bad:?}");
        }
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?"
    }

    fn reference() -> impl Strategy<Value = String> {
        let registry = prop_oneof![
            Just(String::new()),
            Just("docker.io/".to_string()),
            Just("index.docker.io/".to_string()),
            Just("localhost/".to_string()),
            Just("localhost:5000/".to_string()),
            Just("127.0.0.1:5000/".to_string()),
            "[a-z]{1,5}\\.[a-z]{2,3}(:[0-9]{2,5})?/",
        ];
        let tag = prop_oneof![Just(String::new()), "[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}".prop_map(|t| format!(":{t}"))];
        let digest = prop_oneof![Just(String::new()), "[0-9a-f]{64}".prop_map(|h| format!("@sha256:{h}"))];
        (registry, prop::collection::vec(component(), 1..4), tag, digest)
            .prop_map(|(r, path, t, d)| format!("{r}{}{t}{d}", path.join("/")))
    }

    proptest! {
        /// Wherever oci-spec reads a reference, this module reads the same parts.
        #[test]
        fn agrees_with_oci_spec(s in reference()) {
            let ours = ImageRef::parse(&s).map(|r| parts(&r));
            prop_assert_eq!(ours, oracle(&s), "{}", s);
        }
    }
}
