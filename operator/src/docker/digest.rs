//! Resolving an image tag to the digest its registry serves, through a host's engine.
//!
//! The engine asks the registry (`GET /distribution/{name}/json`): it already knows the
//! host's registry settings (mirrors, insecure registries, proxies), takes the set's pull
//! credentials, and answers with the manifest digest without pulling a layer.
//!
//! Before that, one local `inspect_image` tells a locally built image (present, with no
//! digest from the image's repository) from one a registry serves. A local image has nothing
//! to pin against and is run as it is — not an error, and no registry round trip. The
//! inspect's `RepoDigests` are also the fallback when the registry answers but will not say
//! (the tag is gone, or the credentials do not allow it), the image having come from there.
//! A registry that cannot be reached at all is an error: the digest the host last saw may be
//! stale, and pinning a new revision to it would be a guess.

use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;

use super::{message_of, status_of};
use crate::engine::image_ref::ImageRef;
use crate::engine::pin::pinned_reference;

/// How long the engine may take to get an answer from the registry.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a tag points, as far as berth can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The manifest digest: run `pinned` (`repo:tag@sha256:…`).
    Pinned { digest: String, pinned: String, source: DigestSource },
    /// The image exists only on this host (built or loaded here, never pushed or pulled):
    /// there is no registry digest to pin to.
    Local,
}

/// Who said what the digest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestSource {
    /// The registry, asked now.
    Registry,
    /// The host's copy of the image, which came from the image's repository (the registry
    /// answered, but not with a digest).
    HostRepoDigest,
}

/// Why a tag could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{image} is not a valid image reference: {message}")]
    Invalid { image: String, message: String },
    #[error("cannot reach the registry of {image}: {message}")]
    Unreachable { image: String, message: String },
    #[error("the registry has no {image} and the host does not have it either: {message}")]
    NotFound { image: String, message: String },
    #[error("the registry refused to tell the digest of {image} (check imagePullSecrets): {message}")]
    Denied { image: String, message: String },
    #[error("the registry answered for {image} without a digest")]
    NoDigest { image: String },
    #[error("inspect image {image}: {message}")]
    Engine { image: String, message: String },
}

/// Resolve `image` (a tagged reference, `repo:tag`) on the host behind `docker`.
pub async fn resolve_digest(
    docker: &Docker,
    image: &str,
    credentials: Option<DockerCredentials>,
) -> Result<Resolution, ResolveError> {
    let reference = ImageRef::parse(image).ok_or_else(|| ResolveError::Invalid {
        image: image.to_string(),
        message: "cannot split it into name, tag and digest".into(),
    })?;
    // Both reads are idempotent: bounded, and tried again while the engine does not answer.
    let inspected =
        super::bounds::read("the host", "inspect image", super::bounds::READ, || docker.inspect_image(image))
            .await
            .map_err(|t| ResolveError::Engine { image: image.to_string(), message: t.to_string() })?;
    let local = match inspected {
        Ok(i) => Some(same_repository_digests(&reference, i.repo_digests.unwrap_or_default())),
        Err(e) if status_of(&e) == Some(404) => None,
        Err(e) => return Err(ResolveError::Engine { image: image.to_string(), message: message_of(&e) }),
    };
    if local.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Resolution::Local);
    }
    // URL-safe X-Registry-Auth, as for pulls (docker::build::url_safe_registry_auth).
    let client = match &credentials {
        Some(_) => docker.clone().with_request_modifier(super::build::url_safe_registry_auth),
        None => docker.clone(),
    };
    let asked = super::bounds::read("the host", "inspect distribution", RESOLVE_TIMEOUT, || {
        client.inspect_registry_image(image, credentials.clone())
    })
    .await;
    let answer = match asked {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            let message = message_of(&e);
            // Answered, but not with a digest: the copy that came from there is the best
            // knowledge left.
            let answered = matches!(status_of(&e), Some(401 | 403 | 404));
            if answered && let Some(digest) = local.into_iter().flatten().next() {
                tracing::info!(%image, %digest, %message, "the registry gave no digest; using the host's");
                let pinned = pinned_reference(image, &digest);
                return Ok(Resolution::Pinned { digest, pinned, source: DigestSource::HostRepoDigest });
            }
            let image = image.to_string();
            return Err(match status_of(&e) {
                Some(404) => ResolveError::NotFound { image, message },
                Some(401 | 403) => ResolveError::Denied { image, message },
                _ => ResolveError::Unreachable { image, message },
            });
        }
        Err(_) => {
            return Err(ResolveError::Unreachable {
                image: image.to_string(),
                message: format!(
                    "no answer within {}s ({} tries)",
                    RESOLVE_TIMEOUT.as_secs(),
                    super::bounds::READ_TRIES
                ),
            });
        }
    };
    let digest = answer.descriptor.digest.ok_or_else(|| ResolveError::NoDigest { image: image.to_string() })?;
    let pinned = pinned_reference(image, &digest);
    Ok(Resolution::Pinned { digest, pinned, source: DigestSource::Registry })
}

/// The digests among `repo_digests` (`registry/repo@sha256:…`) that belong to the repository
/// of `reference`, in a stable order. An image pushed to several repositories carries one
/// per repository; another repository's digest says nothing about this one.
fn same_repository_digests(reference: &ImageRef<'_>, repo_digests: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = repo_digests
        .iter()
        .filter_map(|rd| ImageRef::parse(rd))
        .filter(|r| r.same_repository(reference))
        .filter_map(|r| r.digest().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:c6217de04d7d9cc1615d8b82c5936f24c9a8bfa367fe7f38d7c9a9fe21559e03";
    const D2: &str = "sha256:799506186824a92d29da63000c210853fa02de0859bc34f06807021f1b25642a";

    #[test]
    fn only_digests_of_the_same_repository_count() {
        let r = ImageRef::parse("127.0.0.1:5000/team/echo:live").expect("valid");
        let digests = vec![
            format!("127.0.0.1:5000/other/echo@{D1}"),
            format!("127.0.0.1:5001/team/echo@{D1}"),
            format!("127.0.0.1:5000/team/echo@{D2}"),
            "not a reference".to_string(),
        ];
        assert_eq!(same_repository_digests(&r, digests), vec![D2.to_string()]);
    }

    #[test]
    fn docker_hub_names_match_in_their_short_forms() {
        let r = ImageRef::parse("echo:1").expect("valid");
        assert_eq!(same_repository_digests(&r, vec![format!("echo@{D1}")]), vec![D1.to_string()]);
        assert_eq!(same_repository_digests(&r, vec![format!("docker.io/library/echo@{D1}")]), vec![D1.to_string()]);
        let r = ImageRef::parse("example/echo:latest").expect("valid");
        assert!(same_repository_digests(&r, vec![format!("127.0.0.1:5000/example/echo@{D1}")]).is_empty());
    }
}
