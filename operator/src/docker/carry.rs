//! Getting an image to the hosts that run it, without a registry or through one.
//!
//! [`carry`] streams one engine's export (`GET /images/{name}/get`, what `docker save` reads)
//! straight into another engine's load (`POST /images/load`): chunk by chunk, as the loading
//! engine reads, so neither berth's memory nor a temporary file ever holds the image. The
//! target then has the same image id under the same tag, which is checked. A carry is bounded
//! as a whole ([`bounds::CARRY`]) and stops early when no byte moves for [`bounds::CARRY_IDLE`]
//! (or, before the first one, [`bounds::CARRY_START`]).
//!
//! [`push`] sends an image to its registry and returns the manifest digest the registry
//! stored, so that hosts can pull exactly that (`repo@sha256:…`). A registry's refusal of the
//! credentials is [`DockerError::RegistryAuth`].

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{ImportImageOptions, PushImageOptionsBuilder};
use futures::{StreamExt, TryStreamExt};
use hyper::body::Bytes;
use tokio::time::Instant;

use super::build::{image_present, url_safe_registry_auth};
use super::{DockerError, bounds, message_of, status_of};
use crate::engine::image_ref::ImageRef;

/// Copy `image` (a tag, or an id) from the `from` host's engine to the `to` host's, as
/// `docker save IMAGE | docker -H TO load` would, streamed. Afterwards `image` names the same
/// image id on both.
///
/// Errors: [`DockerError::ImageNotFound`] when `from` lacks the image; [`DockerError::Api`]
/// naming the side that failed (`export image … on FROM`, `load image … into TO`);
/// [`DockerError::Timeout`] past [`bounds::CARRY`], or after [`bounds::CARRY_IDLE`] without a
/// byte moving ([`bounds::CARRY_START`] before the first); [`DockerError::CarryMismatch`]
/// when the target's `image` is not the image sent.
pub async fn carry(from: (&str, &Docker), to: (&str, &Docker), image: &str) -> Result<(), DockerError> {
    let ((from_host, source), (to_host, target)) = (from, to);
    let expected = image_present(from_host, source, image)
        .await?
        .ok_or_else(|| DockerError::ImageNotFound { host: from_host.to_string(), image: image.to_string() })?;

    let transfer = Arc::new(Transfer::new());
    let export = {
        let transfer = transfer.clone();
        // The export's head comes with its first byte (see CARRY_START): past bollard's backstop.
        let exporter = source.clone().with_timeout(bounds::CARRY + Duration::from_secs(1));
        let chunks = exporter.export_image(image);
        futures::stream::unfold((chunks, transfer), |(mut chunks, transfer)| async move {
            let item = match chunks.next().await {
                Some(Ok(chunk)) => {
                    transfer.moved();
                    Ok::<Bytes, io::Error>(chunk)
                }
                Some(Err(e)) => {
                    let message = message_of(&e);
                    transfer.failed(message.clone());
                    Err(io::Error::other(message))
                }
                None => {
                    transfer.done.store(true, Ordering::SeqCst);
                    return None;
                }
            };
            Some((item, (chunks, transfer)))
        })
    };
    // The load answers once it unpacked every layer: its head may come long after bollard's
    // client backstop, so that is lifted to the carry's own bound.
    let loader = target.clone().with_timeout(bounds::CARRY + Duration::from_secs(1));
    let options = ImportImageOptions { quiet: true, ..Default::default() };
    let loading = async {
        let mut answers = loader.import_image_stream(options, export, None);
        while answers.try_next().await?.is_some() {}
        Ok::<(), bollard::errors::Error>(())
    };
    let call = format!("carry of {image} from {from_host}");
    let loaded = tokio::time::timeout(bounds::CARRY, async {
        tokio::select! {
            loaded = loading => Ok(loaded),
            waited = transfer.stalled(bounds::CARRY_START, bounds::CARRY_IDLE) => {
                Err(bounds::timed_out(to_host, &format!("{call} (no byte moved)"), waited))
            }
        }
    })
    .await
    .map_err(|_| bounds::timed_out(to_host, &call, bounds::CARRY))??;
    if let Err(e) = loaded {
        // The export's own error, if it broke first: the load's is then only a cut body.
        if let Some(message) = transfer.error() {
            return Err(DockerError::Api { op: "export image", target: format!("{image} on {from_host}"), message });
        }
        return Err(DockerError::api("load image", format!("{image} into {to_host}"), e));
    }

    match image_present(to_host, target, image).await? {
        Some(id) if id == expected => Ok(()),
        found => Err(DockerError::CarryMismatch {
            image: image.to_string(),
            from: from_host.to_string(),
            to: to_host.to_string(),
            expected,
            found,
        }),
    }
}

/// How a carry's bytes move: when the last chunk passed (none yet: `None`, since the start),
/// whether the export ended, and its error.
struct Transfer {
    started: Instant,
    last: Mutex<Option<Instant>>,
    done: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Transfer {
    fn new() -> Transfer {
        Transfer {
            started: Instant::now(),
            last: Mutex::new(None),
            done: AtomicBool::new(false),
            error: Mutex::new(None),
        }
    }

    fn moved(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn failed(&self, message: String) {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(message);
    }

    fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Returns (with the bound it ran past) once no first chunk came within `start`, or no
    /// chunk passed for `idle` since the last one, while the export still runs; never after
    /// the export ended (the load then unpacks, bounded by the carry's whole bound). Measured
    /// by a clock of its own, so a target that stops reading (and so stops the export being
    /// polled) stalls it as surely as a source that stops sending.
    async fn stalled(&self, start: Duration, idle: Duration) -> Duration {
        let tick = (idle / 8).clamp(Duration::from_millis(10), Duration::from_secs(5));
        loop {
            tokio::time::sleep(tick).await;
            if self.done.load(Ordering::SeqCst) {
                return futures::future::pending().await;
            }
            match *self.last.lock().unwrap_or_else(|p| p.into_inner()) {
                None if self.started.elapsed() >= start => return start,
                Some(last) if last.elapsed() >= idle => return idle,
                _ => {}
            }
        }
    }
}

/// Push `image` (`registry/repo:tag`) from `host` to its registry with `credentials` (none: as
/// anonymous), and return the manifest digest the registry stored (`sha256:…`).
///
/// Errors: [`DockerError::RegistryAuth`] when the registry refuses the credentials (or their
/// absence); [`DockerError::ImageNotFound`] when the host lacks the image;
/// [`DockerError::Api`] for other refusals (the registry's message) and a reference without a
/// tag; [`DockerError::Timeout`] past [`bounds::PUSH`] or [`bounds::PUSH_IDLE`] without a
/// progress message.
pub async fn push(
    host: &str,
    docker: &Docker,
    image: &str,
    credentials: Option<DockerCredentials>,
) -> Result<String, DockerError> {
    let (name, tag) = name_and_tag(image).ok_or_else(|| DockerError::Api {
        op: "push image",
        target: image.to_string(),
        message: "not a tagged image reference (registry/repository:tag)".into(),
    })?;
    if image_present(host, docker, image).await?.is_none() {
        return Err(DockerError::ImageNotFound { host: host.to_string(), image: image.to_string() });
    }
    let client = docker.clone().with_request_modifier(url_safe_registry_auth);
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let mut stream = client.push_image(name, Some(options), credentials.clone());
    // Bounded twice: each progress message within PUSH_IDLE, the whole push within PUSH.
    let until = Instant::now() + bounds::PUSH;
    let pushing = format!("push image {image}");
    let mut digest = None;
    loop {
        let idle = bounds::within(host, &pushing, bounds::PUSH_IDLE, stream.try_next());
        let next = tokio::time::timeout_at(until, idle)
            .await
            .map_err(|_| bounds::timed_out(host, &pushing, bounds::PUSH))??;
        let Some(info) = next.map_err(|e| push_error(host, image, "push image", e))? else { break };
        // bollard's PushImageInfo has no `aux` (where the engine puts {Tag, Digest, Size}):
        // the same digest comes in the status line beside it, "v1: digest: sha256:… size: 527".
        if let Some(d) = info.status.as_deref().and_then(pushed_digest) {
            digest = Some(d);
        }
    }
    if let Some(digest) = digest {
        return Ok(digest);
    }
    // An engine that words its status otherwise: ask the registry what the tag is now.
    let inspected = bounds::read(host, "inspect distribution", super::digest::RESOLVE_TIMEOUT, || {
        client.inspect_registry_image(image, credentials.clone())
    })
    .await?
    .map_err(|e| push_error(host, image, "inspect distribution of", e))?;
    match inspected.descriptor.digest {
        Some(d) if valid_digest(&d) => Ok(d),
        _ => Err(DockerError::Api {
            op: "push image",
            target: image.to_string(),
            message: "the push reported no digest, and the registry gave none for the tag".into(),
        }),
    }
}

/// A push's (or a distribution inspect's) error: an auth refusal named as such.
fn push_error(host: &str, image: &str, op: &'static str, e: bollard::errors::Error) -> DockerError {
    if status_of(&e) == Some(404) && op == "push image" {
        return DockerError::ImageNotFound { host: host.to_string(), image: image.to_string() };
    }
    let message = match e {
        bollard::errors::Error::DockerStreamError { error } => error,
        other => message_of(&other),
    };
    if is_auth_failure(&message) {
        DockerError::RegistryAuth { host: host.to_string(), op, image: image.to_string(), message }
    } else {
        DockerError::Api { op, target: image.to_string(), message }
    }
}

/// Whether a registry's error (as the engine passes it on) is a refusal of the credentials.
/// The engine gives only text: "unauthorized: authentication required" (a wrong password),
/// "no basic auth credentials" (none sent, or none the engine could decode), "denied:
/// requested access to the resource is denied" (a user without the right).
fn is_auth_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "incorrect username or password",
        "access to the resource is denied",
        "denied:",
        "(http 401)",
        "(http 403)",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// `registry/repo` and `tag` of a tagged reference (`latest` when none is written); `None` for
/// a digest reference or an invalid one.
fn name_and_tag(image: &str) -> Option<(&str, &str)> {
    let reference = ImageRef::parse(image)?;
    if reference.digest().is_some() {
        return None;
    }
    let tag = reference.tag()?;
    match image.rsplit_once(':') {
        Some((name, written)) if written == tag => Some((name, written)),
        // No tag written (a ':' is then the registry's port): the engine's default.
        _ => Some((image, "latest")),
    }
}

/// The digest in a push's final status line, "v1: digest: sha256:<64 hex> size: 527".
fn pushed_digest(status: &str) -> Option<String> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    valid_digest(digest).then(|| digest.to_string())
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:5b9e5e84e9b57692240537d1fc723b16544e9946f43cdcb10a4c651c4ce1b248";

    #[test]
    fn the_digest_is_read_from_the_push_status() {
        assert_eq!(pushed_digest(&format!("v1: digest: {DIGEST} size: 527")).as_deref(), Some(DIGEST));
        assert_eq!(pushed_digest("Pushed"), None);
        assert_eq!(pushed_digest("v1: digest: sha256:abc size: 1"), None);
    }

    #[test]
    fn references_split_into_name_and_tag() {
        assert_eq!(name_and_tag("127.0.0.1:5000/team/app:v1"), Some(("127.0.0.1:5000/team/app", "v1")));
        assert_eq!(name_and_tag("127.0.0.1:5000/app"), Some(("127.0.0.1:5000/app", "latest")));
        assert_eq!(name_and_tag("app:latest"), Some(("app", "latest")));
        assert_eq!(name_and_tag(&format!("127.0.0.1:5000/app@{DIGEST}")), None);
        assert_eq!(name_and_tag("UPPER:case!"), None);
    }

    #[test]
    fn auth_refusals_are_told_from_other_registry_errors() {
        assert!(is_auth_failure("unauthorized: authentication required"));
        assert!(is_auth_failure("no basic auth credentials"));
        assert!(is_auth_failure("denied: requested access to the resource is denied"));
        assert!(!is_auth_failure("Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"));
        assert!(!is_auth_failure("blob upload unknown"));
        let e = push_error(
            "h",
            "r/app:1",
            "push image",
            bollard::errors::Error::DockerStreamError { error: "unauthorized: authentication required".into() },
        );
        assert_eq!(e.kind(), super::super::ErrorKind::RegistryAuth);
    }

    #[tokio::test(start_paused = true)]
    async fn a_carry_stalls_when_no_byte_moves_but_not_while_bytes_move_or_after_the_end() {
        let (start, idle) = (Duration::from_secs(600), Duration::from_secs(60));
        // No first byte: the start's allowance.
        let t = Transfer::new();
        let started = Instant::now();
        assert_eq!(t.stalled(start, idle).await, start);
        assert!(started.elapsed() < start + Duration::from_secs(10), "{:?}", started.elapsed());

        // Bytes, then none: the idle bound.
        let t = Transfer::new();
        t.moved();
        let started = Instant::now();
        assert_eq!(t.stalled(start, idle).await, idle);
        assert!(started.elapsed() >= idle && started.elapsed() < idle + Duration::from_secs(10));

        // Bytes every 30 s for 5 minutes: no stall.
        let t = Arc::new(Transfer::new());
        let mover = {
            let t = t.clone();
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    t.moved();
                }
            }
        };
        t.moved();
        tokio::select! {
            _ = t.stalled(start, idle) => panic!("stalled while bytes moved"),
            () = mover => {}
        }

        // The export ended: the load may take its time.
        t.done.store(true, Ordering::SeqCst);
        let waited = tokio::time::timeout(Duration::from_secs(3600), t.stalled(start, idle)).await;
        assert!(waited.is_err(), "a finished export never stalls");
    }
}
