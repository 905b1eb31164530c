//! Images berth builds (`kind: Image`), made present where they run, before a run plans.
//!
//! The tag is the cache: `<repository or name>:berth-<16 hex of the input digest>` (see
//! `crate::input::images`). For each Image: if the builder host has the tag, nothing is built;
//! else the context goes to the builder's `/build` (classic builder). Then, with a repository,
//! the builder pushes and every host pulls by itself (the plan's `EnsureImage`, with the sets'
//! pull credentials); without one, the image is carried from the builder to every host that
//! runs a set using it and lacks it (export streamed into load, host to host). An unchanged
//! source therefore costs one inspect per host that runs it, and no build.

use std::time::Duration;

use crate::docker::build::{BuildContext, BuildProgress, BuildRequest};
use crate::docker::{self, DockerError};
use crate::target::{ContextTar, ImageTarget};

use super::HostView;

/// What became of one Image in this run.
#[derive(Debug)]
pub struct ImageOutcome {
    pub image: String,
    pub tag: String,
    /// Built in this run (false: the builder had it).
    pub built: bool,
    /// Hosts it was carried to.
    pub carried_to: Vec<String>,
    /// Pushed, with the registry's digest.
    pub pushed: Option<String>,
    pub error: Option<ImageError>,
}

/// Why an Image could not be made present; the sets that use it do not roll out.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {image}: no host to build on (builder {builder:?} is not in the run or not reachable)")]
    NoBuilder { image: String, builder: Option<String> },
    #[error("image {image}: building on {host}: {source}")]
    Build { image: String, host: String, source: DockerError },
    #[error("image {image}: carrying it from {from} to {to}: {source}")]
    Carry { image: String, from: String, to: String, source: DockerError },
    #[error("image {image}: pushing {tag}: {source}")]
    Push { image: String, tag: String, source: DockerError },
    #[error("image {image}: reading its context: {message}")]
    Context { image: String, message: String },
}

/// The label on a built image that carries its full input digest.
pub const INPUT_DIGEST_LABEL: &str = "berth.dev/input-digest";

/// How long one build may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Which hosts would need what, without building: for `berth plan`. `(image, tag, reason)`
/// for each Image whose builder lacks its tag.
pub async fn pending_builds(views: &[HostView], builds: &[ImageTarget]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for b in builds {
        let Some(builder) = builder_of(views, b) else {
            out.push((b.key.to_string(), b.tag.clone(), "no reachable host to build on".into()));
            continue;
        };
        let d = builder.docker.as_ref().expect("a builder is connected");
        match docker::build::image_present(&builder.target.name, d, &b.tag).await {
            Ok(Some(_)) => {}
            Ok(None) => out.push((
                b.key.to_string(),
                b.tag.clone(),
                format!("no image for input digest {} on {}", short(&b.input_digest), builder.target.name),
            )),
            Err(e) => out.push((b.key.to_string(), b.tag.clone(), format!("cannot tell: {e}"))),
        }
    }
    out
}

/// What [`ensure_images`] does besides building what is missing.
#[derive(Clone, Copy, Debug, Default)]
pub struct EnsureOptions {
    /// Build even when the tag exists, without the engine's layer cache.
    pub no_cache: bool,
    /// Push Images that declare a repository.
    pub push: bool,
    /// Make each Image present where it runs: pushed (with a repository) or carried.
    pub distribute: bool,
}

/// Build what is missing and push or carry it where it runs, Image by Image.
pub async fn ensure_images(
    views: &[HostView],
    builds: &[ImageTarget],
    progress: &dyn BuildProgress,
    options: &EnsureOptions,
) -> Vec<ImageOutcome> {
    let mut outcomes = Vec::new();
    for b in builds {
        outcomes.push(ensure_one(views, b, progress, options).await);
    }
    outcomes
}

async fn ensure_one(
    views: &[HostView],
    b: &ImageTarget,
    progress: &dyn BuildProgress,
    options: &EnsureOptions,
) -> ImageOutcome {
    let no_cache = options.no_cache;
    let mut out = ImageOutcome {
        image: b.key.to_string(),
        tag: b.tag.clone(),
        built: false,
        carried_to: Vec::new(),
        pushed: None,
        error: None,
    };
    let Some(builder) = builder_of(views, b) else {
        out.error = Some(ImageError::NoBuilder { image: b.key.to_string(), builder: b.builder.clone() });
        return out;
    };
    let bname = builder.target.name.clone();
    let bd = builder.docker.as_ref().expect("a builder is connected");
    let build_err = |source| ImageError::Build { image: b.key.to_string(), host: bname.clone(), source };
    let present = match docker::build::image_present(&bname, bd, &b.tag).await {
        Ok(p) => p.is_some(),
        Err(e) => {
            out.error = Some(build_err(e));
            return out;
        }
    };
    if !present || no_cache {
        let mut labels = b.labels.clone();
        labels.insert(INPUT_DIGEST_LABEL.into(), b.input_digest.clone());
        labels.insert(crate::engine::labels::MANAGED_BY.into(), crate::engine::labels::MANAGED_BY_VALUE.into());
        let mut req = BuildRequest::new(b.tag.clone());
        req.dockerfile = b.context.dockerfile().to_string();
        req.build_args = b.args.clone();
        req.target = b.target.clone();
        req.labels = labels;
        req.no_cache = no_cache;
        tracing::info!(image = %b.key, tag = %b.tag, host = %bname, "building");
        let (tar, written) = context_stream(b.context.clone());
        let built = docker::build::build(&bname, bd, &req, BuildContext::tar(tar), progress).await;
        // A context that changed while it was sent is the reason, not what the engine said.
        if let Ok(Err(e)) = written.await {
            out.error = Some(ImageError::Context { image: b.key.to_string(), message: e.to_string() });
            return out;
        }
        if let Err(e) = built {
            out.error = Some(build_err(e));
            return out;
        }
        out.built = true;
    }
    // Pushed before, unchanged since: the builder's image lists the repository's digest.
    let pushed_before = match (&b.repository, out.built) {
        (Some(repo), false) => {
            let inspect =
                docker::bounds::read(&bname, "inspect image", docker::bounds::READ, || bd.inspect_image(&b.tag));
            matches!(inspect.await, Ok(Ok(i)) if i.repo_digests.as_deref().unwrap_or_default().iter().any(|d| d.starts_with(&format!("{repo}@"))))
        }
        _ => false,
    };
    if b.repository.is_some() && (options.push || options.distribute) && !pushed_before {
        match docker::carry::push(&bname, bd, &b.tag, b.push_credentials.clone()).await {
            Ok(digest) => out.pushed = Some(digest),
            Err(source) => out.error = Some(ImageError::Push { image: b.key.to_string(), tag: b.tag.clone(), source }),
        }
        return out;
    }
    if !options.distribute || b.repository.is_some() {
        return out;
    }
    // Carried: to every host of the run that runs a set using it, and lacks it.
    for v in views.iter().filter(|v| v.target.name != bname) {
        let Some(d) = &v.docker else { continue };
        if !v.target.desired.iter().any(|s| b.used_by.contains(&s.key)) {
            continue;
        }
        let carry_err = |source| ImageError::Carry {
            image: b.key.to_string(),
            from: bname.clone(),
            to: v.target.name.clone(),
            source,
        };
        match docker::build::image_present(&v.target.name, d, &b.tag).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                out.error = Some(carry_err(e));
                continue;
            }
        }
        match docker::carry::carry((&bname, bd), (&v.target.name, d), &b.tag).await {
            Ok(()) => out.carried_to.push(v.target.name.clone()),
            Err(e) => out.error = Some(carry_err(e)),
        }
    }
    out
}

/// The blocking task that writes a context's tar; its error names the file concerned.
type TarWriter = tokio::task::JoinHandle<Result<(), Box<dyn std::error::Error + Send + Sync>>>;

/// The context's tar as a stream of chunks, written by a blocking task (file reads) as the
/// engine takes them: one chunk in flight at a time, never the whole context in memory.
fn context_stream(
    context: std::sync::Arc<dyn ContextTar>,
) -> (impl futures::Stream<Item = Result<hyper::body::Bytes, std::io::Error>> + Send + 'static, TarWriter) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Bytes, std::io::Error>>(4);
    struct Chunks(tokio::sync::mpsc::Sender<Result<hyper::body::Bytes, std::io::Error>>);
    impl std::io::Write for Chunks {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .blocking_send(Ok(hyper::body::Bytes::copy_from_slice(buf)))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the engine stopped reading"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, Chunks(tx.clone()));
        let written = context.write_tar(&mut out).and_then(|()| std::io::Write::flush(&mut out).map_err(Into::into));
        match written {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    });
    (tokio_stream_of(rx), writer)
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The builder: the Image's selected host, else the first reachable host of the run that runs
/// a set using it, else the first reachable host.
fn builder_of<'a>(views: &'a [HostView], b: &ImageTarget) -> Option<&'a HostView> {
    let reachable = |v: &&HostView| v.docker.is_some() && v.observed.is_ok();
    match &b.builder {
        Some(name) => views.iter().filter(reachable).find(|v| &v.target.name == name),
        None => views
            .iter()
            .filter(reachable)
            .find(|v| v.target.desired.iter().any(|s| b.used_by.contains(&s.key)))
            .or_else(|| views.iter().find(reachable)),
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(16)]
}
