//! Building an image from a Dockerfile on a host's engine.
//!
//! [`build`] goes through the engine's `/build` with the classic builder (`version=1`): no
//! BuildKit session, so it works on every engine berth supports, Docker 20.10 included. The
//! context is streamed to the engine as the caller produces it (a tar, never held whole by
//! berth), or named by URL for the engine to fetch ([`BuildContext::Remote`]). The builder's
//! output goes to a [`BuildProgress`] one line at a time; a failed build is a
//! [`DockerError::BuildFailed`] carrying the builder's own words: the step it stopped at
//! (`Step 3/4 : RUN false`), its error (`The command '/bin/sh -c false' returned a non-zero
//! code: 1`) and the step's last lines of output. The whole build runs within one bound, the
//! caller's ([`BuildRequest::timeout`], [`bounds::BUILD`] by default).
//!
//! Registry credentials (for base images behind auth) travel as the `X-Registry-Config`
//! header, and a push's as `X-Registry-Auth`. Engines decode both as URL-safe base64, and
//! an undecodable header is *silently* taken as no credentials at all ("no basic auth
//! credentials"); bollard 0.21 encodes them with the standard alphabet, which differs as soon
//! as the JSON's encoding holds a `+` or a `/` (a password with `?` or `~` in it is enough).
//! [`url_safe_registry_auth`] re-encodes them in a request modifier.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use bollard::{BollardRequest, Docker};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use hyper::body::Bytes;
use hyper::header::HeaderValue;

use super::{DockerError, bounds, status_of};

/// How many lines of a failed step's output a [`DockerError::BuildFailed`] keeps.
const OUTPUT_TAIL: usize = 10;

/// What to build and how; the context is passed beside it ([`BuildContext`]).
#[derive(Clone)]
pub struct BuildRequest {
    /// The reference the image is tagged with (`repo:tag`): the caller's content tag.
    pub tag: String,
    /// Labels set on the image (e.g. `berth.dev/input-digest`).
    pub labels: BTreeMap<String, String>,
    /// The Dockerfile's path inside the context (`Dockerfile` by default).
    pub dockerfile: String,
    /// `--build-arg`s: values for the Dockerfile's `ARG`s.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (`--target`); the last stage when `None`.
    pub target: Option<String>,
    /// Build every step again instead of using the engine's cache (`--no-cache`).
    pub no_cache: bool,
    /// Remove intermediate containers after a successful build (`--rm`).
    pub remove_intermediate: bool,
    /// Remove them after a failed build too (`--force-rm`).
    pub force_remove_intermediate: bool,
    /// Look for newer versions of the base images in their registries (`--pull`).
    pub pull: bool,
    /// Credentials for the registries of the base images, by registry host (`127.0.0.1:5000`,
    /// `docker.io`): sent as `X-Registry-Config`.
    pub registry_auth: HashMap<String, DockerCredentials>,
    /// The whole build's bound: sending the context, every step, tagging.
    pub timeout: Duration,
}

impl BuildRequest {
    /// A build of `./Dockerfile` tagged `tag`, with the engine's defaults otherwise (cache
    /// used, intermediate containers removed, also after a failure) and [`bounds::BUILD`].
    pub fn new(tag: impl Into<String>) -> BuildRequest {
        BuildRequest {
            tag: tag.into(),
            labels: BTreeMap::new(),
            dockerfile: "Dockerfile".into(),
            build_args: BTreeMap::new(),
            target: None,
            no_cache: false,
            remove_intermediate: true,
            force_remove_intermediate: true,
            pull: false,
            registry_auth: HashMap::new(),
            timeout: bounds::BUILD,
        }
    }

    fn options(&self, remote: Option<String>) -> BuildImageOptions {
        let map = |m: &BTreeMap<String, String>| {
            (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>())
        };
        BuildImageOptions {
            dockerfile: if self.dockerfile.is_empty() { "Dockerfile".into() } else { self.dockerfile.clone() },
            t: Some(self.tag.clone()),
            remote,
            q: false,
            nocache: self.no_cache,
            rm: self.remove_intermediate,
            forcerm: self.force_remove_intermediate,
            pull: self.pull.then(|| "1".to_string()),
            buildargs: map(&self.build_args),
            labels: map(&self.labels),
            target: self.target.clone().unwrap_or_default(),
            // The classic builder: BuildKit would need a session the engine dials back into.
            version: BuilderVersion::BuilderV1,
            ..Default::default()
        }
    }
}

/// Without the credentials' secrets (build arguments are shown: they end up in the image's
/// history anyway, so they are no place for secrets).
impl std::fmt::Debug for BuildRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRequest")
            .field("tag", &self.tag)
            .field("labels", &self.labels)
            .field("dockerfile", &self.dockerfile)
            .field("build_args", &self.build_args)
            .field("target", &self.target)
            .field("no_cache", &self.no_cache)
            .field("remove_intermediate", &self.remove_intermediate)
            .field("force_remove_intermediate", &self.force_remove_intermediate)
            .field("pull", &self.pull)
            .field(
                "registry_auth",
                &self.registry_auth.keys().map(|r| format!("<credentials for {r}>")).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The build context: what the Dockerfile's `COPY`/`ADD` see.
pub enum BuildContext {
    /// A tar of the context folder (uncompressed, or gzip/bzip2/xz: the engine detects it),
    /// streamed to the engine as it comes.
    Tar(BoxStream<'static, Result<Bytes, io::Error>>),
    /// A URL the engine fetches itself: a Git repository, a tarball, or a plain Dockerfile.
    Remote(String),
}

impl BuildContext {
    /// A context streamed from `tar` (a tar archive's bytes, in order).
    pub fn tar(tar: impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static) -> BuildContext {
        BuildContext::Tar(tar.boxed())
    }

    /// A context whose tar is in memory already (small contexts, tests).
    pub fn tar_bytes(tar: impl Into<Bytes>) -> BuildContext {
        let tar = tar.into();
        BuildContext::Tar(futures::stream::once(async move { Ok(tar) }).boxed())
    }
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildContext::Tar(_) => f.write_str("BuildContext::Tar(<stream>)"),
            BuildContext::Remote(url) => f.debug_tuple("BuildContext::Remote").field(url).finish(),
        }
    }
}

/// Where a build's output goes: one call per line of the builder's output (steps, the
/// commands' own output, base image pulls), without its line end. Showing a bar on a
/// terminal or plain lines in a pipe is the implementation's business.
pub trait BuildProgress: Sync {
    fn line(&self, host: &str, line: &str);
}

impl<F: Fn(&str, &str) + Sync> BuildProgress for F {
    fn line(&self, host: &str, line: &str) {
        self(host, line)
    }
}

/// A built image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// The image id (`sha256:…`).
    pub id: String,
    /// The reference it is tagged with ([`BuildRequest::tag`]).
    pub tag: String,
}

/// Build `req` from `context` on `host`, streaming the builder's output to `progress`.
///
/// Errors: [`DockerError::BuildFailed`] when the builder refused or failed the build (its
/// step, error and last output); [`DockerError::Timeout`] past [`BuildRequest::timeout`];
/// [`DockerError::Api`] when the context could not be read or the engine could not be
/// talked to.
pub async fn build(
    host: &str,
    docker: &Docker,
    req: &BuildRequest,
    context: BuildContext,
    progress: &dyn BuildProgress,
) -> Result<BuiltImage, DockerError> {
    // bollard's client timeout bounds the response's head, which a classic build sends only
    // once the whole context is in: lift it to the build's own bound.
    let mut client = docker.clone().with_timeout(req.timeout + Duration::from_secs(1));
    if !req.registry_auth.is_empty() {
        client = client.with_request_modifier(url_safe_registry_auth);
    }
    // The first error of the caller's context stream, so that a failed upload names it
    // rather than the broken request it causes.
    let context_error: Arc<Mutex<Option<String>>> = Arc::default();
    let (body, remote) = match context {
        BuildContext::Tar(tar) => {
            let slot = context_error.clone();
            let tar = tar.map(move |chunk| {
                if let Err(e) = &chunk {
                    slot.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
                }
                chunk
            });
            (bollard::body_try_stream(tar), None)
        }
        // bollard unwraps the body: a remote context still sends one, empty.
        BuildContext::Remote(url) => (bollard::body_full(Bytes::new()), Some(url)),
    };
    let credentials = (!req.registry_auth.is_empty()).then(|| req.registry_auth.clone());
    let mut stream = client.build_image(req.options(remote), credentials, Some(body));

    let mut output = Output::default();
    let call = format!("build image {}", req.tag);
    let ran = bounds::within(host, &call, req.timeout, async {
        let mut image_id = None;
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(e) => {
                    output.flush(host, progress);
                    return Err(failure(host, req, &output, &context_error, e));
                }
            };
            if let Some(text) = info.stream.as_deref() {
                output.push(host, progress, text);
            }
            if let Some(status) = info.status.as_deref() {
                output.status(host, progress, info.id.as_deref(), status);
            }
            // The classic builder reports each stage's image; the last one is the result.
            if let Some(id) = info.aux.and_then(|a| a.id) {
                image_id = Some(id);
            }
        }
        output.flush(host, progress);
        Ok(image_id)
    })
    .await??;

    let id = match ran {
        Some(id) => id,
        // An engine that does not report the id: the tag says what was built.
        None => image_present(host, docker, &req.tag).await?.ok_or_else(|| DockerError::Api {
            op: "build image",
            target: req.tag.clone(),
            message: "the build ended without an image".into(),
        })?,
    };
    Ok(BuiltImage { id, tag: req.tag.clone() })
}

/// What a build's error was: the builder's (the stream's error message, or a refusal of the
/// request), reading the caller's context, or talking to the engine.
fn failure(
    host: &str,
    req: &BuildRequest,
    output: &Output,
    context_error: &Mutex<Option<String>>,
    e: bollard::errors::Error,
) -> DockerError {
    if let Some(read) = context_error.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return DockerError::Api { op: "read build context for", target: req.tag.clone(), message: read };
    }
    let message = match e {
        // The builder's error line, e.g. "The command '/bin/sh -c false' returned a non-zero code: 1".
        bollard::errors::Error::DockerStreamError { error } => error,
        // A build the engine refused before it began: "dockerfile parse error line 2: unknown
        // instruction: FOO" (400), "Cannot locate specified Dockerfile" (500), a bad tag.
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => return DockerError::api("build image", &req.tag, other),
    };
    DockerError::BuildFailed {
        host: host.to_string(),
        image: req.tag.clone(),
        step: output.step.clone(),
        message,
        output: output.tail.iter().cloned().collect(),
    }
}

/// The builder's output: split into lines for the progress, and what an error shows (the
/// last step and its last lines).
#[derive(Default)]
struct Output {
    partial: String,
    step: Option<String>,
    tail: VecDeque<String>,
    statuses: HashMap<String, String>,
}

impl Output {
    /// A piece of the builder's text: lines come split across messages ("Step 1/4 : FROM x",
    /// then "\n").
    fn push(&mut self, host: &str, progress: &dyn BuildProgress, text: &str) {
        self.partial.push_str(text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.line(host, progress, &line);
        }
    }

    fn flush(&mut self, host: &str, progress: &dyn BuildProgress) {
        let rest = std::mem::take(&mut self.partial);
        self.line(host, progress, &rest);
    }

    fn line(&mut self, host: &str, progress: &dyn BuildProgress, raw: &str) {
        // A command's own progress bar rewrites its line with '\r': its last state counts.
        let line = raw.trim_end_matches(['\n', '\r']).rsplit('\r').next().unwrap_or_default().trim_end();
        if line.trim().is_empty() {
            return;
        }
        progress.line(host, line);
        if line.starts_with("Step ") {
            self.step = Some(line.to_string());
            self.tail.clear();
        } else if !line.starts_with(" --->") && !line.starts_with("Removing intermediate container") {
            if self.tail.len() == OUTPUT_TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(line.to_string());
        }
    }

    /// A status message (a base image's pull): shown when it changes, not at every byte.
    fn status(&mut self, host: &str, progress: &dyn BuildProgress, id: Option<&str>, status: &str) {
        let key = id.unwrap_or_default();
        if self.statuses.get(key).is_some_and(|s| s == status) {
            return;
        }
        self.statuses.insert(key.to_string(), status.to_string());
        let line = match id {
            Some(id) if !id.is_empty() => format!("{id}: {status}"),
            _ => status.to_string(),
        };
        progress.line(host, &line);
    }
}

/// The id of the image `reference` (a tag, a digest reference or an id) on `host`, `None` when
/// the host does not have it.
pub async fn image_present(host: &str, docker: &Docker, reference: &str) -> Result<Option<String>, DockerError> {
    match bounds::read(host, "inspect image", bounds::READ, || docker.inspect_image(reference)).await? {
        Ok(image) => match image.id {
            Some(id) => Ok(Some(id)),
            None => Err(DockerError::Api {
                op: "inspect image",
                target: reference.to_string(),
                message: "the engine answered without an image id".into(),
            }),
        },
        Err(e) if status_of(&e) == Some(404) => Ok(None),
        Err(e) => Err(DockerError::api("inspect image", reference, e)),
    }
}

/// A request modifier that re-encodes the registry credential headers (`X-Registry-Auth`,
/// `X-Registry-Config`) from the standard base64 alphabet bollard 0.21 uses to the URL-safe
/// one engines decode (see the module docs). A header in the URL-safe alphabet already is left
/// as it is, so the modifier is harmless if bollard gets this right one day.
///
/// bollard keeps one modifier per client: installing this one on a clone replaces any other
/// (a request counter's); a caller with its own modifier can call this inside it instead.
pub fn url_safe_registry_auth(mut req: BollardRequest) -> BollardRequest {
    for name in ["x-registry-auth", "x-registry-config"] {
        let Some(fixed) = req.headers().get(name).and_then(|v| v.to_str().ok()).and_then(url_safe) else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_str(&fixed) {
            req.headers_mut().insert(name, value);
        }
    }
    req
}

/// `value` (standard base64) in the URL-safe alphabet; `None` when it is not standard base64
/// (a `-` or `_` in it: URL-safe already).
fn url_safe(value: &str) -> Option<String> {
    STANDARD.decode(value).ok().map(|bytes| URL_SAFE.encode(bytes))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn credential_headers_are_reencoded_url_safe() {
        // Five `?` in a row hold a whole 3-byte group at any alignment ("???" is "Pz8/"), five
        // `~` too ("~~~" is "fn5+"): the standard encoding has both a '/' and a '+'.
        let creds = DockerCredentials {
            username: Some("u".into()),
            password: Some("?????~~~~~".into()),
            serveraddress: Some("127.0.0.1:5000".into()),
            ..Default::default()
        };
        let json = serde_json::to_string(&creds).unwrap();
        let standard = STANDARD.encode(&json);
        assert!(standard.contains('+') && standard.contains('/'), "{standard}");
        let req = hyper::Request::builder()
            .header("X-Registry-Auth", &standard)
            .header("X-Registry-Config", &standard)
            .header("Content-Type", "application/json")
            .body(bollard::body_full(Bytes::new()))
            .unwrap();
        let req = url_safe_registry_auth(req);
        for name in ["X-Registry-Auth", "X-Registry-Config"] {
            let sent = req.headers()[name].to_str().unwrap().to_string();
            assert!(!sent.contains(['+', '/']), "{name}: {sent}");
            assert_eq!(URL_SAFE.decode(&sent).unwrap(), json.as_bytes());
            // Once URL-safe, it stays as it is.
            assert_eq!(url_safe(&sent).unwrap_or(sent.clone()), sent);
        }
        assert_eq!(req.headers()["Content-Type"], "application/json");
    }

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl BuildProgress for Lines {
        fn line(&self, _host: &str, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
    }

    #[test]
    fn output_is_split_into_lines_and_remembers_the_failing_step() {
        let lines = Lines::default();
        let mut out = Output::default();
        for piece in [
            "Step 1/2 : FROM scratch",
            "\n",
            " ---> \n",
            "Step 2/2 : RUN false",
            "\n",
            " ---> Running in 0f5516f75fd2\n",
            "one\ntw",
            "o\n",
            "10%\r50%\r100%\n",
            "no end",
        ] {
            out.push("h", &lines, piece);
        }
        out.flush("h", &lines);
        assert_eq!(
            *lines.0.lock().unwrap(),
            [
                "Step 1/2 : FROM scratch",
                " --->",
                "Step 2/2 : RUN false",
                " ---> Running in 0f5516f75fd2",
                "one",
                "two",
                "100%",
                "no end"
            ]
        );
        assert_eq!(out.step.as_deref(), Some("Step 2/2 : RUN false"));
        assert_eq!(out.tail, ["one", "two", "100%", "no end"]);
    }

    #[test]
    fn pull_statuses_are_shown_when_they_change() {
        let lines = Lines::default();
        let mut out = Output::default();
        out.status("h", &lines, Some("abc"), "Downloading");
        out.status("h", &lines, Some("abc"), "Downloading");
        out.status("h", &lines, Some("abc"), "Pull complete");
        out.status("h", &lines, None, "Digest: sha256:00");
        assert_eq!(*lines.0.lock().unwrap(), ["abc: Downloading", "abc: Pull complete", "Digest: sha256:00"]);
    }

    #[test]
    fn options_carry_the_request() {
        let mut req = BuildRequest::new("app:1");
        req.labels.insert("berth.dev/input-digest".into(), "sha256:1".into());
        req.build_args.insert("GREETING".into(), "hi".into());
        req.target = Some("final".into());
        req.dockerfile = "docker/Dockerfile".into();
        req.no_cache = true;
        let o = req.options(None);
        assert_eq!(o.t.as_deref(), Some("app:1"));
        assert_eq!(o.dockerfile, "docker/Dockerfile");
        assert_eq!(o.target, "final");
        assert!(o.nocache && o.rm && o.forcerm && o.pull.is_none());
        assert_eq!(o.labels.unwrap()["berth.dev/input-digest"], "sha256:1");
        assert_eq!(o.buildargs.unwrap()["GREETING"], "hi");
        assert_eq!(o.version, BuilderVersion::BuilderV1);
        let o = BuildRequest::new("app:1").options(Some("http://x/ctx.tar".into()));
        assert!(o.labels.is_none() && o.buildargs.is_none() && o.target.is_empty());
        assert_eq!(o.remote.as_deref(), Some("http://x/ctx.tar"));
        // No password in the debug text.
        req.registry_auth
            .insert("r:5000".into(), DockerCredentials { password: Some("s3cret".into()), ..Default::default() });
        assert!(!format!("{req:?}").contains("s3cret"));
    }
}
