//! The Docker adapter: the only place berth talks to engines.
//!
//! It stays thin on purpose. [`connect`] reaches an engine (negotiating the API version down
//! to what the engine speaks: Debian's Docker 20.10 knows API 1.41 only; a run's first look
//! at a host needs no round trip for that, see [`connect::connect_observe`]), [`observe`] turns
//! one label-filtered list into the planner's [`crate::engine::ObservedContainer`]s,
//! [`convert`] turns a [`crate::engine::ContainerSpec`] into Docker's create body, and
//! [`execute`] runs a [`crate::engine::HostPlan`]'s steps with bounded concurrency, and
//! [`events`] follows an engine's event stream: reconcile triggers and the drift only events
//! show ([`events::DriftLog`]), telling a container's own health probes ([`probe`]) from a
//! user's exec. [`build`] builds an image from a Dockerfile through an engine's classic
//! builder, and [`carry`] moves images between hosts: one engine's export streamed into
//! another's load, or a push to a registry.

pub mod bounds;
pub mod build;
pub mod carry;
pub mod connect;
pub mod convert;
pub mod digest;
pub mod events;
pub mod execute;
pub mod network;
pub mod observe;
pub mod pin;
pub mod probe;
pub mod volume;

pub use connect::connect;
pub use events::{ContainerEvent, DriftLog, follow};
pub use execute::{ExecOptions, HostOutcome, Progress, SetOutcome, execute_host};
pub use observe::observe;

/// An error from one Docker host, with what berth was doing. Callers decide on its
/// [`kind`](DockerError::kind), never on its text.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    /// Mutual TLS with the engine failed: its certificate is not signed by the CA berth was
    /// given, or it refused berth's client certificate, or the files do not parse.
    #[error(
        "TLS with the Docker engine at {endpoint} failed (certificate or CA): {message}; \
         check the host's ca.crt, tls.crt and tls.key (spec.tls.secretName)"
    )]
    Tls { endpoint: String, message: String },
    /// A call ran past its bound ([`bounds`]): the engine is stalled, overloaded or cut off.
    #[error("{call} on {host} got no answer within {seconds}s")]
    Timeout { host: String, call: String, seconds: f64 },
    #[error("{op} {target}: {message}")]
    Api { op: &'static str, target: String, message: String },
    #[error("container {name}: the name is taken by a container berth did not create for this revision and ordinal")]
    NameTaken { name: String },
    #[error(
        "container {name}: a foreign container ({id}) holds the name; driftPolicy Report leaves it alone: \
         remove or rename it, or set driftPolicy: Replace to have berth stop it and rename it aside"
    )]
    Squatter { name: String, id: String },
    #[error("image {image} is not on the host and imagePullPolicy is Never")]
    ImageMissing { image: String },
    #[error("container {name} did not become ready: {detail}")]
    NotReady { name: String, detail: String },
    /// A task's container exited with a code other than 0: the revision failed.
    #[error("task container {name} exited with code {exit_code}{detail}")]
    TaskFailed { name: String, exit_code: i64, detail: String },
    #[error("container {name} not ready after {seconds}s (progressDeadlineSeconds): {detail}")]
    Deadline { name: String, seconds: u64, detail: String },
    /// A set's preparation (network, volume, image) failed: no change of it was begun.
    #[error("{what}: {source}")]
    Preparing { what: &'static str, source: Box<DockerError> },
    /// A build failed on the builder's side (a Dockerfile step, the Dockerfile itself, the
    /// context): the step it stopped at, the builder's own error and the step's last output.
    #[error(
        "build of {image} on {host} failed{}: {message}{}",
        .step.as_ref().map(|s| format!(" at `{s}`")).unwrap_or_default(),
        if .output.is_empty() { String::new() } else { format!("; last output: {}", .output.join(" | ")) }
    )]
    BuildFailed { host: String, image: String, step: Option<String>, message: String, output: Vec<String> },
    /// The registry refused the credentials berth sent (or their absence): a wrong user or
    /// password, a token without the right, or none given.
    #[error("{op} {image} on {host}: the registry refused the credentials (authentication failed): {message}")]
    RegistryAuth { host: String, op: &'static str, image: String, message: String },
    /// An image an operation starts from (a carry's source, a push) is not on the host.
    #[error("image {image} is not on {host}")]
    ImageNotFound { host: String, image: String },
    /// After a carry, the target host's image under that name is not the one sent.
    #[error(
        "carry of {image} from {from} to {to}: {to} has {} under that name after the load, not {expected}",
        .found.as_deref().unwrap_or("no image")
    )]
    CarryMismatch { image: String, from: String, to: String, expected: String, found: Option<String> },
}

/// What kind of failure a [`DockerError`] is: what the fleet runner, the CLI and the operator
/// decide on, and the metrics' label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The engine does not answer (refused, cut off, or stalled past a call's bound).
    Unreachable,
    /// Mutual TLS failed: a certificate, CA or key problem, not a host that is down.
    Tls,
    /// The engine answered with an error.
    Engine,
    /// A name berth needs is held by a container that is not this revision's.
    NameConflict,
    /// The image is not there and the policy forbids pulling it.
    ImageMissing,
    /// A new container did not become ready: the revision failed, not the host.
    NotReady,
    /// A build failed: its Dockerfile, context or arguments, not the host.
    BuildFailed,
    /// A registry refused the credentials (or their absence).
    RegistryAuth,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Tls => "tls",
            ErrorKind::Engine => "engine",
            ErrorKind::NameConflict => "name_conflict",
            ErrorKind::ImageMissing => "image_missing",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::BuildFailed => "build_failed",
            ErrorKind::RegistryAuth => "registry_auth",
        }
    }
}

impl DockerError {
    pub fn api(op: &'static str, target: impl Into<String>, e: bollard::errors::Error) -> Self {
        DockerError::Api { op, target: target.into(), message: message_of(&e) }
    }
}

impl DockerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DockerError::Connect { .. } | DockerError::Timeout { .. } => ErrorKind::Unreachable,
            DockerError::Tls { .. } => ErrorKind::Tls,
            DockerError::Api { .. } | DockerError::CarryMismatch { .. } => ErrorKind::Engine,
            DockerError::NameTaken { .. } | DockerError::Squatter { .. } => ErrorKind::NameConflict,
            DockerError::ImageMissing { .. } | DockerError::ImageNotFound { .. } => ErrorKind::ImageMissing,
            DockerError::BuildFailed { .. } => ErrorKind::BuildFailed,
            DockerError::RegistryAuth { .. } => ErrorKind::RegistryAuth,
            DockerError::NotReady { .. } | DockerError::Deadline { .. } | DockerError::TaskFailed { .. } => {
                ErrorKind::NotReady
            }
            DockerError::Preparing { source, .. } => source.kind(),
        }
    }

    /// Whether this is a TLS failure (a certificate, CA or key problem, not a host that is down).
    pub fn is_tls(&self) -> bool {
        self.kind() == ErrorKind::Tls
    }

    /// The container that did not become ready, when that is what this is (the revision
    /// failed, as opposed to a step failing for a reason of the host's).
    pub fn not_ready(&self) -> Option<&str> {
        match self {
            DockerError::NotReady { name, .. }
            | DockerError::Deadline { name, .. }
            | DockerError::TaskFailed { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// The engine's own words for an error, without bollard's wrapping; for an error of the
/// connection, the whole chain of causes (hyper's "client error (Connect)" alone says nothing
/// of the certificate that was refused).
pub fn message_of(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, status_code } => {
            format!("{message} (HTTP {status_code})")
        }
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message = format!("{message}: {text}");
                }
                source = cause.source();
            }
            message
        }
    }
}

/// Whether a connection error is TLS failing. rustls' error sits inside an `io::Error`,
/// whose `source()` skips it, so its text is what there is to go by.
pub(crate) fn is_tls_failure(e: &bollard::errors::Error) -> bool {
    if matches!(e, bollard::errors::Error::DockerResponseServerError { .. }) {
        return false;
    }
    let text = message_of(e).to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownca", "unknown ca", "private key", "pem"]
        .iter()
        .any(|w| text.contains(w))
}

/// The HTTP status of an engine error, if it was one.
pub fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_what_callers_decide_on() {
        let timeout = DockerError::Timeout { host: "h".into(), call: "list".into(), seconds: 5.0 };
        assert_eq!(timeout.kind(), ErrorKind::Unreachable);
        let tls = DockerError::Tls { endpoint: "tcp://h:2376".into(), message: "unknown ca".into() };
        assert!(tls.is_tls());
        let deadline = DockerError::Deadline { name: "ns.web.r.0".into(), seconds: 30, detail: "starting".into() };
        assert_eq!((deadline.kind(), deadline.not_ready()), (ErrorKind::NotReady, Some("ns.web.r.0")));
        // Preparing keeps its cause's kind; it is never a revision's failure.
        let prep = DockerError::Preparing { what: "preparing the image", source: Box::new(timeout) };
        assert_eq!((prep.kind(), prep.not_ready()), (ErrorKind::Unreachable, None));
        assert_eq!(prep.to_string(), "preparing the image: list on h got no answer within 5s");
        let missing = DockerError::ImageMissing { image: "x".into() };
        assert_eq!(missing.kind().as_str(), "image_missing");
        let build = DockerError::BuildFailed {
            host: "a".into(),
            image: "app:1".into(),
            step: Some("Step 3/4 : RUN false".into()),
            message: "The command '/bin/sh -c false' returned a non-zero code: 1".into(),
            output: vec!["about to fail".into()],
        };
        assert_eq!(build.kind().as_str(), "build_failed");
        assert_eq!(
            build.to_string(),
            "build of app:1 on a failed at `Step 3/4 : RUN false`: \
             The command '/bin/sh -c false' returned a non-zero code: 1; last output: about to fail"
        );
        let auth = DockerError::RegistryAuth {
            host: "a".into(),
            op: "push image",
            image: "r/app:1".into(),
            message: "unauthorized".into(),
        };
        assert_eq!(auth.kind(), ErrorKind::RegistryAuth);
        let absent = DockerError::ImageNotFound { host: "a".into(), image: "app:1".into() };
        assert_eq!(absent.kind(), ErrorKind::ImageMissing);
    }
}
