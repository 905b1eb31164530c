//! Declared `Image`s, translated into what the layers below already know: each Image's build
//! inputs are read (its context as the engine would receive it, `.dockerignore` applied) and
//! digested, and every ContainerSet with `template.imageFrom` gets the build's content tag as
//! its `template.image`. From there on an image built by berth is an image like any other:
//! the tag is part of the revision, so a source change rolls out, health-gated, and an
//! unchanged source changes nothing. The builds themselves (engine I/O) are the fleet's
//! (`crate::fleet::images`); this module only reads files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_crd::{Image, build_tag};

use super::build_context::{self, Context};
use super::{Input, InputError, InputErrors, Located};
use crate::engine::SetKey;
use crate::target::{ContextTar, ImageTarget};

/// Read and digest every Image of `input` and point the sets that use one at its tag. Errors
/// name the file, the object and the field; nothing is built or touched here.
pub fn resolve_images(input: &mut Input) -> Result<Vec<ImageTarget>, InputErrors> {
    let mut errors = Vec::new();
    let mut builds = Vec::new();
    for img in &input.images {
        match read_image(img, input) {
            Ok(b) => builds.push(b),
            Err(e) => errors.push(e),
        }
    }
    for s in input.sets.iter_mut() {
        let Some(from) = s.object.spec.template.image_from.clone() else { continue };
        let ns = s.object.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let set = SetKey::new(ns.clone(), s.object.metadata.name.clone().unwrap_or_default());
        let image = SetKey::new(ns.clone(), from.name.clone());
        match builds.iter_mut().find(|b| b.key == image) {
            Some(b) => {
                let t = &mut s.object.spec.template;
                t.image = b.tag.clone();
                t.image_from = None;
                // Carried images are never pulled: no registry knows them.
                if b.repository.is_none() {
                    t.image_pull_policy = berth_crd::PullPolicy::Never;
                }
                b.used_by.insert(set);
            }
            // An Image whose inputs could not be read was reported above.
            None if input.images.iter().any(|i| key_of(i) == image) => {}
            None => errors.push(InputError {
                origin: s.origin.to_string(),
                object: Some(format!("ContainerSet {set}")),
                field: Some("spec.template.imageFrom.name".into()),
                message: format!("no Image {} in namespace {ns} in the input", from.name),
            }),
        }
    }
    if errors.is_empty() { Ok(builds) } else { Err(InputErrors(errors)) }
}

fn key_of(i: &Located<Image>) -> SetKey {
    SetKey::new(
        i.object.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        i.object.metadata.name.clone().unwrap_or_default(),
    )
}

fn read_image(img: &Located<Image>, input: &Input) -> Result<ImageTarget, InputError> {
    let key = key_of(img);
    let err = |field: &str, message: String| InputError {
        origin: img.origin.to_string(),
        object: Some(format!("Image {key}")),
        field: Some(field.to_string()),
        message,
    };
    let b = &img.object.spec.build;
    let dir = context_dir(&img.origin.file, &b.context);
    if !dir.is_dir() {
        return Err(err("spec.build.context", format!("{} is not a folder", dir.display())));
    }
    let dockerfile = b.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into());
    if !dir.join(&dockerfile).is_file() {
        return Err(err("spec.build.dockerfile", format!("no file {dockerfile} in {}", dir.display())));
    }
    let context = build_context::DockerIgnore::read(&dir)
        .and_then(|ignore| build_context::read_context(&dir, Path::new(&dockerfile), &ignore))
        .map_err(|e| err("spec.build.context", e.to_string()))?;
    let input_digest = context.input_digest(context.dockerfile(), &b.args, b.target.as_deref(), None);
    let builder = match &img.object.spec.host_selector {
        None => None,
        Some(sel) => {
            let selector =
                kube::core::Selector::try_from(sel.clone()).map_err(|e| err("spec.hostSelector", e.to_string()))?;
            let mut names: Vec<String> = input
                .hosts
                .iter()
                .filter(|h| h.object.metadata.namespace.as_deref().unwrap_or("default") == key.namespace)
                .filter(|h| !h.object.spec.unschedulable)
                .filter(|h| {
                    kube::core::SelectorExt::matches(&selector, &h.object.metadata.labels.clone().unwrap_or_default())
                })
                .filter_map(|h| h.object.metadata.name.clone())
                .collect();
            names.sort();
            match names.into_iter().next() {
                Some(n) => Some(n),
                None => return Err(err("spec.hostSelector", "selects no DockerHost of the input to build on".into())),
            }
        }
    };
    let push_credentials = match (&img.object.spec.repository, &img.object.spec.push_secret) {
        (Some(repo), Some(secret)) => {
            let t = berth_crd::ContainerTemplate {
                image: repo.clone(),
                image_pull_secrets: vec![secret.clone()],
                ..Default::default()
            };
            super::resolve::pull_credentials(&t, &key.namespace, input).map_err(|(_, m)| err("spec.pushSecret", m))?
        }
        _ => None,
    };
    Ok(ImageTarget {
        push_credentials,
        tag: build_tag(&img.object, &input_digest),
        key,
        input_digest,
        context: std::sync::Arc::new(context),
        args: b.args.clone(),
        target: b.target.clone(),
        labels: b.labels.clone(),
        repository: img.object.spec.repository.clone(),
        builder,
        used_by: BTreeSet::new(),
    })
}

/// The context folder: relative to the folder of the file that declares the Image.
fn context_dir(file: &Path, context: &str) -> PathBuf {
    let c = Path::new(context);
    if c.is_absolute() {
        return c.to_path_buf();
    }
    file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join(c)
}

impl ContextTar for Context {
    fn dockerfile(&self) -> &str {
        Context::dockerfile(self)
    }

    fn write_tar(&self, out: &mut dyn std::io::Write) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.tar(out).map(|_| ()).map_err(Into::into)
    }
}
