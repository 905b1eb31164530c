//! Images berth builds (`kind: Image`, issue 14), end to end through the CLI on real engines:
//!
//! - `.dockerignore` decides what rebuilds: an edit of an excluded file (and a touch of an
//!   included one) makes `berth plan` exit 0 and `berth apply` send no `/build` and no mutating
//!   request at all; an edit of an included file (a `*.md` below the root, which Docker's rules
//!   send and gitignore's would not) is a new tag, `would build` in the plan (exit 2), one build,
//!   and a new revision rolled out StartFirst;
//! - a build arg is an input: a new value is a new tag and a rollout, the old value again
//!   builds nothing (the tag is the cache) and rolls back to the old tag;
//! - a failing build (`RUN false`) fails the apply with the Dockerfile step in the error, and
//!   the running container is left untouched (no request but the `/build`);
//! - without a repository the image is carried from the builder (the local engine) to two
//!   test-bed hosts that run the set, and a second apply carries nothing;
//! - with a repository it is pushed to a registry with htpasswd auth (`pushSecret`) and the
//!   test-bed hosts pull it with the set's `imagePullSecrets`.
//!
//! Every context is `FROM example/echo:latest` (nothing is pulled; `/echo` serves `/file/PATH`
//! and `/env/NAME`, which show what went into the image) plus an `id.txt` holding the test's
//! namespace, so no two tests build the same image. The Image is named after the namespace,
//! and every tag of its repository on the local engine is removed at the end, after the
//! namespace's containers and history volumes, also when the test fails. Each test says how it
//! was seen to fail with berth broken on purpose (a copy of the tree built into `BERTH_BIN`).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use berth_tests::health_images::BUSYBOX;
use berth_tests::testbed::RemoteHost;
use berth_tests::{
    BerthOutput, CountingProxy, EchoSet, NamespaceGuard, Registry, Request, VolumeGuard, action_and_name, berth_async,
    container_addr, container_events, containers_in, docker, docker_host, ensure_echo_image, http_request,
    local_socket_path,
};
use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptions};
use tokio::task::block_in_place;

/// The echo image as the tests' fixtures write it, replaced by `imageFrom`.
const ECHO_TEMPLATE_IMAGE: &str = "    image: example/echo:latest\n    imagePullPolicy: Never\n";

/// The set every test runs.
const SET: &str = "web";

// ---------------------------------------------------------------------------------------------
// Cleanup

/// Removes every tag of `repos` from the local engine when dropped (also after a panic); an
/// image goes with its last tag, and its untagged parent layers with it.
#[derive(Default)]
struct BuiltImages(Mutex<Vec<String>>);

impl BuiltImages {
    fn add(&self, repo: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(repo.to_string());
    }
}

impl Drop for BuiltImages {
    fn drop(&mut self) {
        let repos = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        // Its own runtime on its own thread: works while a test's runtime unwinds.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(async {
                let docker = docker().await;
                for repo in repos {
                    let filters = std::collections::HashMap::from([("reference".to_string(), vec![repo.clone()])]);
                    let opts = ListImagesOptionsBuilder::default().filters(&filters).build();
                    for image in docker.list_images(Some(opts)).await.unwrap_or_default() {
                        for tag in image.repo_tags.iter().filter(|t| t.starts_with(&format!("{repo}:"))) {
                            if let Err(e) = docker.remove_image(tag, None::<RemoveImageOptions>, None).await {
                                eprintln!("warning: cannot remove test image {tag}: {e}");
                            }
                        }
                    }
                }
            })
        })
        .join();
    }
}

/// What one test makes, dropped in this order: the namespace's containers, then its history
/// volumes, then the images it built, then its folder.
struct Scene {
    ns: NamespaceGuard,
    _volumes: VolumeGuard,
    images: BuiltImages,
    dir: tempfile::TempDir,
}

impl Scene {
    fn new(prefix: &str) -> Scene {
        ensure_echo_image();
        let ns = NamespaceGuard::new(prefix);
        let volumes = VolumeGuard::new(&docker_host(), ns.name(), &[]);
        let images = BuiltImages::default();
        // Without a repository the Image's name is the repository of its tags.
        images.add(ns.name());
        let dir = tempfile::Builder::new().prefix("berth-images-").tempdir().expect("a temp dir");
        Scene { ns, _volumes: volumes, images, dir }
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    /// `NS/NAME` of the Image, as berth names it in its output.
    fn key(&self) -> String {
        format!("{}/{}", self.ns(), self.ns())
    }

    /// The build context folder, `site/` beside the input file.
    fn context(&self) -> PathBuf {
        self.dir.path().join("site")
    }

    /// Writes `files` (path in the context, contents) into the context.
    fn write(&self, files: &[(&str, &[u8])]) {
        for (path, data) in files {
            let p = self.context().join(path);
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("make the context's folders");
            std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        }
    }

    /// Writes the input file and returns its path.
    fn input(&self, yaml: &str) -> String {
        let path = self.dir.path().join("input.yaml");
        std::fs::write(&path, yaml).expect("write the input");
        path.to_str().expect("a UTF-8 path").to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Input

/// An Image named after the namespace, built from `site/`.
#[derive(Default)]
struct ImageDecl {
    args: Vec<(String, String)>,
    repository: Option<String>,
    push_secret: Option<String>,
    /// `role` label of the DockerHost that builds it.
    builder_role: Option<String>,
}

impl ImageDecl {
    fn yaml(&self, ns: &str) -> String {
        let mut y = format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Image\nmetadata:\n  name: {ns}\n  namespace: {ns}\nspec:\n  build:\n    context: site\n"
        );
        if !self.args.is_empty() {
            y.push_str("    args:\n");
            for (k, v) in &self.args {
                y.push_str(&format!("      {k}: {v:?}\n"));
            }
        }
        if let Some(r) = &self.repository {
            y.push_str(&format!("  repository: {r}\n"));
        }
        if let Some(s) = &self.push_secret {
            y.push_str(&format!("  pushSecret: {{name: {s}}}\n"));
        }
        if let Some(role) = &self.builder_role {
            y.push_str(&format!("  hostSelector:\n    matchLabels: {{role: {role}}}\n"));
        }
        y.push_str("---\n");
        y
    }
}

/// The echo set of the namespace running the Image (instead of the echo image), with
/// `extra_spec` lines under `spec:` and `extra_template` lines under `template:`.
fn set_yaml(ns: &str, extra_spec: &str, extra_template: &str) -> String {
    let y = EchoSet::new(ns, SET).yaml();
    assert!(y.contains(ECHO_TEMPLATE_IMAGE), "the fixture's template changed:\n{y}");
    y.replace(ECHO_TEMPLATE_IMAGE, &format!("    imageFrom: {{name: {ns}}}\n{extra_template}")).replacen(
        "spec:\n",
        &format!("spec:\n{extra_spec}"),
        1,
    )
}

fn host_yaml(ns: &str, name: &str, role: &str, socket: &Path) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: DockerHost\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{role: {role}}}\nspec:\n  endpoint: unix://{}\n---\n",
        socket.display()
    )
}

/// `FROM example/echo:latest`, the whole context copied to `/srv/`.
const COPY_ALL: &str = "FROM example/echo:latest\nCOPY . /srv/\n";

// ---------------------------------------------------------------------------------------------
// Looking at the result

/// One container of the namespace, as inspected.
#[derive(Clone, Debug, PartialEq)]
struct Ctr {
    name: String,
    id: String,
    state: String,
    /// The image it was created from (`Config.Image`).
    image: String,
    started_at: String,
}

async fn containers(docker: &Docker, ns: &str) -> Vec<Ctr> {
    let mut out = Vec::new();
    for c in containers_in(docker, ns).await {
        let id = c.id.unwrap_or_default();
        let i = docker.inspect_container(&id, None).await.expect("inspect a container");
        out.push(Ctr {
            name: i.name.unwrap_or_default().trim_start_matches('/').to_string(),
            id,
            state: i.state.as_ref().and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default(),
            image: i.config.and_then(|c| c.image).unwrap_or_default(),
            started_at: i.state.and_then(|s| s.started_at).unwrap_or_default(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The namespace's only container, running `image`.
#[track_caller]
fn only_one_running(cs: &[Ctr], image: &str, out: &BerthOutput) -> Ctr {
    assert_eq!(cs.len(), 1, "one container: {cs:#?}\n{out}");
    assert_eq!(cs[0].state, "running", "{cs:#?}\n{out}");
    assert_eq!(cs[0].image, image, "it runs the built tag: {cs:#?}\n{out}");
    cs[0].clone()
}

/// `GET /PATH` of the echo app in container `name` (on its network): `(status, body)`.
async fn get(docker: &Docker, name: &str, path: &str) -> (u16, String) {
    let addr = container_addr(docker, name).await;
    let path = path.to_string();
    block_in_place(|| http_request(&addr, "GET", &path, &[]))
        .unwrap_or_else(|| panic!("no answer from {name} at {addr} for {path}"))
}

/// The tag of `berth apply`'s or `berth build`'s line `image KEY: built TAG`.
fn built_tag(out: &BerthOutput, key: &str) -> Option<String> {
    let prefix = format!("image {key}: built ");
    out.stdout.lines().find_map(|l| l.strip_prefix(&prefix)).map(|t| t.trim().to_string())
}

/// The tag of `berth plan`'s line `image KEY: would build TAG (why)`.
fn would_build(out: &BerthOutput, key: &str) -> Option<String> {
    let prefix = format!("image {key}: would build ");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|t| t.split_whitespace().next())
        .map(str::to_string)
}

fn count(proxy: &CountingProxy, endpoint: &str) -> usize {
    proxy.count_where(|r| r.endpoint() == endpoint)
}

/// An image load (`POST /images/load`): the receiving end of a carry.
fn is_load(r: &Request) -> bool {
    r.endpoint() == "/images/load"
}

/// An image export (`GET /images/NAME/get`): the sending end of a carry.
fn is_export(r: &Request) -> bool {
    r.endpoint().starts_with("/images/") && r.endpoint().ends_with("/get")
}

/// The namespace's container events since `since`, one a line: for assertion messages.
fn timeline(events: &[EventMessage]) -> String {
    events
        .iter()
        .map(|e| {
            let (action, name) = action_and_name(e);
            format!("{action:<28} {name}\n")
        })
        .collect()
}

/// Under StartFirst the new container starts before the old one is stopped.
async fn assert_started_before_stopped(docker: &Docker, ns: &str, since: SystemTime, new: &Ctr, old: &Ctr) {
    let events: Vec<EventMessage> = container_events(docker, ns, since)
        .await
        .into_iter()
        .filter(|e| !e.action.as_deref().unwrap_or("").starts_with("health_status"))
        .collect();
    let id = |e: &EventMessage| e.actor.as_ref().and_then(|a| a.id.clone()).unwrap_or_default();
    let started = events.iter().position(|e| e.action.as_deref() == Some("start") && id(e) == new.id);
    let stopped =
        events.iter().position(|e| matches!(e.action.as_deref(), Some("kill" | "stop" | "die")) && id(e) == old.id);
    let (Some(started), Some(stopped)) = (started, stopped) else {
        panic!("no start of {} or no stop of {}:\n{}", new.name, old.name, timeline(&events));
    };
    assert!(started < stopped, "StartFirst: the new container starts before the old one stops:\n{}", timeline(&events));
}

// ---------------------------------------------------------------------------------------------
// 1. .dockerignore

// Seen failing with berth broken on purpose (a copy of the tree, run with BERTH_BIN): with
// `DockerIgnore::read` returning no patterns, the excluded `notes.md` went into the image
// (`/file/srv/notes.md` answered 200, not 404); with `fleet::images::ensure_one` building even
// when the builder has the tag (`if true` for `if !present || no_cache`), the apply after the
// excluded edit sent a `POST /build` ("nothing to build" failed).
#[tokio::test(flavor = "multi_thread")]
async fn excluded_files_change_nothing_and_an_included_edit_rolls_out_start_first() {
    let scene = Scene::new("img-ignore");
    let (ns, key) = (scene.ns().to_string(), scene.key());
    let docker = docker().await;
    let proxy = CountingProxy::start(&local_socket_path());
    let via_proxy = proxy.docker_host();
    let env = [("DOCKER_HOST", via_proxy.as_str())];
    // Docker's rules: `*.md` is the root's markdown only; gitignore's would be every folder's.
    scene.write(&[
        ("Dockerfile", COPY_ALL.as_bytes()),
        (".dockerignore", b"*.md\n*.swp\n"),
        ("notes.md", b"notes v1"),
        ("docs/guide.md", b"guide v1"),
        ("page.txt", b"page"),
        ("id.txt", ns.as_bytes()),
    ]);
    let input = scene.input(&format!("{}{}", ImageDecl::default().yaml(&ns), set_yaml(&ns, "", "")));

    let first = berth_async(["apply", "-f", &input], &env).await;
    first.assert_success();
    let t1 = built_tag(&first, &key).unwrap_or_else(|| panic!("the first apply builds:\n{first}"));
    assert!(t1.starts_with(&format!("{ns}:berth-")) && t1.len() == ns.len() + 1 + 22, "{t1}");
    assert_eq!(count(&proxy, "/build"), 1, "{}", proxy.describe());
    let c1 = only_one_running(&containers(&docker, &ns).await, &t1, &first);
    assert_eq!(get(&docker, &c1.name, "/file/srv/docs/guide.md").await, (200, "guide v1".into()));
    assert_eq!(get(&docker, &c1.name, "/file/srv/notes.md").await.0, 404, "an excluded file is not sent");
    let image = docker.inspect_image(&t1).await.expect("the built image");
    let digest_label = image.config.and_then(|c| c.labels).and_then(|l| l.get("berth.dev/input-digest").cloned());
    let hex = &t1[t1.len() - 16..];
    assert!(
        digest_label.as_deref().is_some_and(|d| d.starts_with(&format!("sha256:{hex}")) && d.len() == 71),
        "the image is labelled with its full input digest: {digest_label:?}"
    );

    // Excluded files edited or added, an included file touched with its content unchanged.
    scene.write(&[("notes.md", b"notes v2"), ("scratch.swp", b"swap")]);
    let page = std::fs::File::options().write(true).open(scene.context().join("page.txt")).expect("page.txt");
    page.set_modified(SystemTime::now() + Duration::from_secs(3600)).expect("touch page.txt");
    drop(page);
    let plan = berth_async(["plan", "-f", &input], &[]).await;
    plan.assert_code(0);
    assert!(!plan.stdout.contains("would build"), "{plan}");
    proxy.reset();
    let again = berth_async(["apply", "-f", &input], &env).await;
    again.assert_success();
    assert_eq!(count(&proxy, "/build"), 0, "nothing to build:\n{}\n{again}", proxy.describe());
    assert_eq!(proxy.count_mutating(), 0, "nothing changed anywhere:\n{}\n{again}", proxy.describe());
    assert!(again.stdout.contains("No changes"), "{again}");
    assert_eq!(containers(&docker, &ns).await, vec![c1.clone()], "the same container, untouched");

    // An included file edited: a new tag, said by the plan, built once, rolled out StartFirst.
    scene.write(&[("docs/guide.md", b"guide v2")]);
    let plan = berth_async(["plan", "-f", &input], &[]).await;
    plan.assert_code(2);
    let t2 = would_build(&plan, &key).unwrap_or_else(|| panic!("the plan says it would build:\n{plan}"));
    assert_ne!(t2, t1, "{plan}");
    assert!(plan.stdout.contains("(no image for input digest "), "the plan says why:\n{plan}");
    assert!(docker.inspect_image(&t2).await.is_err(), "plan builds nothing: {t2} exists");
    proxy.reset();
    let since = SystemTime::now();
    let changed = berth_async(["apply", "-f", &input], &env).await;
    changed.assert_success();
    assert_eq!(built_tag(&changed, &key).as_deref(), Some(t2.as_str()), "{changed}");
    assert_eq!(count(&proxy, "/build"), 1, "{}", proxy.describe());
    let c2 = only_one_running(&containers(&docker, &ns).await, &t2, &changed);
    assert_ne!(c2.id, c1.id, "a new container for the new revision");
    assert_eq!(get(&docker, &c2.name, "/file/srv/docs/guide.md").await, (200, "guide v2".into()));
    assert_started_before_stopped(&docker, &ns, since, &c2, &c1).await;

    // Once more: nothing to build, nothing to do; `berth images` lists the tag and its host.
    proxy.reset();
    let third = berth_async(["apply", "-f", &input], &env).await;
    third.assert_success();
    assert_eq!(proxy.count_mutating(), 0, "{}\n{third}", proxy.describe());
    berth_async(["plan", "-f", &input], &[]).await.assert_code(0);
    let listed = berth_async(["images", "-f", &input], &[]).await;
    listed.assert_success();
    let row: Vec<&str> =
        listed.stdout.lines().find(|l| l.starts_with(&key)).unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        row,
        [key.as_str(), t2.as_str(), &t2[t2.len() - 16..], "local"],
        "IMAGE TAG INPUT PRESENT-ON:\n{listed}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Build args

// Seen failing with berth broken on purpose: with the build args left out of the input digest
// (`input_digest(.., &Default::default(), ..)` in `input::images`), the new value made no new
// tag: `berth plan` exited 0 ("No changes"), not 2; with the args not sent to the engine
// (`req.build_args` not set in `fleet::images`), `/env/VERSION` answered the Dockerfile's
// default `none`, not `1.0`.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_arg_change_builds_a_new_tag_and_the_old_value_builds_nothing() {
    let scene = Scene::new("img-args");
    let (ns, key) = (scene.ns().to_string(), scene.key());
    let docker = docker().await;
    let proxy = CountingProxy::start(&local_socket_path());
    let via_proxy = proxy.docker_host();
    let env = [("DOCKER_HOST", via_proxy.as_str())];
    scene.write(&[
        ("Dockerfile", b"FROM example/echo:latest\nARG VERSION=none\nENV VERSION=$VERSION\nCOPY id.txt /srv/id.txt\n"),
        ("id.txt", ns.as_bytes()),
    ]);
    let declare = |version: &str| {
        let image = ImageDecl { args: vec![("VERSION".into(), version.into())], ..Default::default() };
        scene.input(&format!("{}{}", image.yaml(&ns), set_yaml(&ns, "", "")))
    };

    let input = declare("1.0");
    let first = berth_async(["apply", "-f", &input], &env).await;
    first.assert_success();
    let t1 = built_tag(&first, &key).unwrap_or_else(|| panic!("{first}"));
    let c1 = only_one_running(&containers(&docker, &ns).await, &t1, &first);
    assert_eq!(get(&docker, &c1.name, "/env/VERSION").await, (200, "1.0".into()));

    let input = declare("2.0");
    let plan = berth_async(["plan", "-f", &input], &[]).await;
    plan.assert_code(2);
    let t2 = would_build(&plan, &key).unwrap_or_else(|| panic!("a new arg is a new build:\n{plan}"));
    assert_ne!(t1, t2);
    proxy.reset();
    let since = SystemTime::now();
    let second = berth_async(["apply", "-f", &input], &env).await;
    second.assert_success();
    assert_eq!(built_tag(&second, &key).as_deref(), Some(t2.as_str()), "{second}");
    assert_eq!(count(&proxy, "/build"), 1, "{}", proxy.describe());
    let c2 = only_one_running(&containers(&docker, &ns).await, &t2, &second);
    assert_ne!(c1.id, c2.id);
    assert_eq!(get(&docker, &c2.name, "/env/VERSION").await, (200, "2.0".into()));
    assert_started_before_stopped(&docker, &ns, since, &c2, &c1).await;

    // The old value again: its tag is still there, so nothing is built, and the set goes back.
    let input = declare("1.0");
    let plan = berth_async(["plan", "-f", &input], &[]).await;
    plan.assert_code(2);
    assert!(!plan.stdout.contains("would build"), "the tag is the cache:\n{plan}");
    proxy.reset();
    let back = berth_async(["apply", "-f", &input], &env).await;
    back.assert_success();
    assert_eq!(count(&proxy, "/build"), 0, "{}\n{back}", proxy.describe());
    assert_eq!(built_tag(&back, &key), None, "{back}");
    let c3 = only_one_running(&containers(&docker, &ns).await, &t1, &back);
    assert_eq!(get(&docker, &c3.name, "/env/VERSION").await, (200, "1.0".into()));
}

// ---------------------------------------------------------------------------------------------
// 3. A failing build

// Seen failing with berth broken on purpose: with `berth apply` going on after a failed build
// (`make_images`' answer ignored in `cli/apply.rs`), the run went on to the set (a
// `POST /volumes/create` besides the `/build`, then "image ... is not on the host and
// imagePullPolicy is Never"); with the builder's step not kept (`Output::line` setting `step`
// to `None`), the error line named no `Step N/M`.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_build_names_its_step_and_leaves_the_running_container_alone() {
    let scene = Scene::new("img-fail");
    let (ns, key) = (scene.ns().to_string(), scene.key());
    let docker = docker().await;
    let proxy = CountingProxy::start(&local_socket_path());
    let via_proxy = proxy.docker_host();
    let env = [("DOCKER_HOST", via_proxy.as_str())];
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("{BUSYBOX} is needed ({e}): install Debian's static busybox (apt-get install busybox-static)")
    });
    // A shell in the image, so that `RUN false` is the shell form a user writes.
    let good = "FROM example/echo:latest\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
                COPY id.txt /srv/id.txt\n";
    scene.write(&[("Dockerfile", good.as_bytes()), ("busybox", &busybox), ("id.txt", ns.as_bytes())]);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let p = scene.context().join("busybox");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod busybox");
    }
    let input = scene.input(&format!("{}{}", ImageDecl::default().yaml(&ns), set_yaml(&ns, "", "")));
    let first = berth_async(["apply", "-f", &input], &env).await;
    first.assert_success();
    let t1 = built_tag(&first, &key).unwrap_or_else(|| panic!("{first}"));
    let before = containers(&docker, &ns).await;
    only_one_running(&before, &t1, &first);

    scene.write(&[("Dockerfile", format!("{good}RUN echo about to fail && false\n").as_bytes())]);
    let plan = berth_async(["plan", "-f", &input], &[]).await;
    plan.assert_code(2);
    let t2 = would_build(&plan, &key).unwrap_or_else(|| panic!("{plan}"));
    proxy.reset();
    let failed = berth_async(["apply", "-f", &input], &env).await;
    failed.assert_code(1);
    eprintln!("the failed apply:\n{failed}");
    let error = failed
        .stderr
        .lines()
        .find(|l| l.starts_with("error: ") && l.contains(&key))
        .unwrap_or_else(|| panic!("an error line names the Image:\n{failed}"));
    let step = error.find("Step ").map(|i| &error[i..]).unwrap_or_else(|| panic!("the error names the step: {error}"));
    let (numbers, command) = step["Step ".len()..].split_once(" : ").unwrap_or_else(|| panic!("{error}"));
    assert!(
        numbers.split_once('/').is_some_and(|(n, m)| n.parse::<u32>().is_ok() && m.parse::<u32>().is_ok()),
        "`Step N/M : ...`: {error}"
    );
    assert!(command.starts_with("RUN echo about to fail && false"), "the failing Dockerfile line: {error}");
    assert!(error.contains("returned a non-zero code: 1"), "the builder's own error: {error}");
    assert!(error.contains("about to fail"), "the step's last output: {error}");
    assert!(failed.stderr.contains("no set was changed"), "{failed}");
    let mutating: Vec<String> = proxy.requests().iter().filter(|r| r.is_mutating()).map(|r| r.to_string()).collect();
    assert!(
        mutating.len() == 1 && mutating[0].contains("/build"),
        "the build was the only mutating request: {mutating:?}\n{failed}"
    );
    assert_eq!(containers(&docker, &ns).await, before, "the old container runs on, untouched");
    assert!(docker.inspect_image(&t2).await.is_err(), "a failed build leaves no tag: {t2}");

    // The Dockerfile fixed back: its tag exists, nothing is built and nothing changes.
    scene.write(&[("Dockerfile", good.as_bytes())]);
    proxy.reset();
    let fixed = berth_async(["apply", "-f", &input], &env).await;
    fixed.assert_success();
    assert_eq!(proxy.count_mutating(), 0, "{}\n{fixed}", proxy.describe());
    assert_eq!(containers(&docker, &ns).await, before);
}

// ---------------------------------------------------------------------------------------------
// 4. Carried to two hosts, no registry

/// One engine of a fleet: its name in the input, how berth reaches it (a counting proxy) and
/// how the test looks at it.
struct Host {
    name: String,
    docker: Docker,
    proxy: CountingProxy,
}

/// The local engine (`local`, role `builder`) and test-bed hosts `h1`, `h2`... (role `web`).
async fn fleet(remotes: &[RemoteHost]) -> Vec<Host> {
    let local = docker().await;
    let mut hosts =
        vec![Host { name: "local".into(), docker: local, proxy: CountingProxy::start(&local_socket_path()) }];
    for (i, r) in remotes.iter().enumerate() {
        hosts.push(Host {
            name: format!("h{}", i + 1),
            docker: r.docker_unix().await,
            proxy: CountingProxy::start(&r.unix_socket()),
        });
    }
    hosts
}

fn hosts_yaml(ns: &str, hosts: &[Host]) -> String {
    hosts
        .iter()
        .map(|h| host_yaml(ns, &h.name, if h.name == "local" { "builder" } else { "web" }, h.proxy.socket_path()))
        .collect()
}

fn reset(hosts: &[Host]) {
    hosts.iter().for_each(|h| h.proxy.reset());
}

fn describe(hosts: &[Host]) -> String {
    hosts.iter().map(|h| format!("--- {}\n{}", h.name, h.proxy.describe())).collect()
}

/// When the last `/images/load` of the run was answered: the load's answer comes once the
/// engine has every layer.
fn carry_span(hosts: &[Host]) -> Option<Duration> {
    let exports: Vec<Request> = hosts.iter().flat_map(|h| h.proxy.requests()).filter(is_export).collect();
    let loads: Vec<Request> = hosts.iter().flat_map(|h| h.proxy.requests()).filter(is_load).collect();
    let start = exports.iter().map(|r| r.at).min()?;
    let end = loads.iter().filter_map(|r| r.took.map(|t| r.at + t)).max()?;
    Some(end.duration_since(start))
}

// Seen failing with berth broken on purpose: with `fleet::images::ensure_one` carrying to a
// host that has the tag already (`Ok(Some(_)) => {}` for `=> continue`), the second apply said
// "carried ... to h1, h2" again and loaded it into both.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_registry_the_image_is_carried_to_the_hosts_that_run_it_once() {
    let scene = Scene::new("img-carry");
    let (ns, key) = (scene.ns().to_string(), scene.key());
    let remotes = block_in_place(|| RemoteHost::start_all(&[71, 72]));
    let hosts = fleet(&remotes).await;
    scene.write(&[("Dockerfile", COPY_ALL.as_bytes()), ("page.txt", b"carried"), ("id.txt", ns.as_bytes())]);
    let image = ImageDecl { builder_role: Some("builder".into()), ..Default::default() };
    let input = scene.input(&format!(
        "{}{}{}",
        hosts_yaml(&ns, &hosts),
        image.yaml(&ns),
        set_yaml(&ns, "  hostSelector:\n    matchLabels: {role: web}\n", "")
    ));

    // Built on the builder only, nothing anywhere else.
    let started = Instant::now();
    let built = berth_async(["build", "-f", &input], &[]).await;
    let build_time = started.elapsed();
    built.assert_success();
    let tag = built_tag(&built, &key).unwrap_or_else(|| panic!("{built}"));
    assert_eq!(count(&hosts[0].proxy, "/build"), 1, "{}", describe(&hosts));
    for h in &hosts[1..] {
        assert_eq!(h.proxy.count_mutating(), 0, "`berth build` leaves {} alone:\n{}", h.name, describe(&hosts));
    }

    reset(&hosts);
    let started = Instant::now();
    let first = berth_async(["apply", "-f", &input], &[]).await;
    let apply_time = started.elapsed();
    first.assert_success();
    assert!(first.stdout.contains(&format!("image {key}: carried {tag} to h1, h2")), "{first}");
    assert_eq!(built_tag(&first, &key), None, "built already:\n{first}");
    assert_eq!(hosts[0].proxy.count_where(is_export), 2, "exported once per host:\n{}", describe(&hosts));
    for h in &hosts[1..] {
        assert_eq!(h.proxy.count_where(is_load), 1, "{}: loaded once:\n{}", h.name, describe(&hosts));
        assert_eq!(count(&h.proxy, "/build"), 0, "{}", describe(&hosts));
        let cs = containers(&h.docker, &ns).await;
        only_one_running(&cs, &tag, &first);
        assert!(h.docker.inspect_image(&tag).await.is_ok(), "{} has {tag}", h.name);
    }
    assert!(containers(&hosts[0].docker, &ns).await.is_empty(), "the builder runs nothing of the set");
    let span = carry_span(&hosts);
    let size = hosts[0].docker.inspect_image(&tag).await.ok().and_then(|i| i.size).unwrap_or_default();
    eprintln!(
        "FIGURES carry: image {tag} of {:.1} MB; `berth build` {:.2} s; `berth apply` (carry to h1, h2 and rollout) \
         {:.2} s, of which the carries (first export to last load answered) {:.2} s; loads: {:?}",
        size as f64 / 1e6,
        build_time.as_secs_f64(),
        apply_time.as_secs_f64(),
        span.map_or(f64::NAN, |d| d.as_secs_f64()),
        hosts[1..]
            .iter()
            .flat_map(|h| h.proxy.requests().into_iter().filter(is_load).map(|r| r.took))
            .collect::<Vec<_>>()
    );

    // Again: every host has it, so nothing is carried, built or changed.
    reset(&hosts);
    let again = berth_async(["apply", "-f", &input], &[]).await;
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "{again}");
    assert!(!again.stdout.contains("carried"), "{again}");
    for h in &hosts {
        assert_eq!(h.proxy.count_where(is_load), 0, "{}: no load:\n{}", h.name, describe(&hosts));
        assert_eq!(h.proxy.count_mutating(), 0, "{}: nothing changed:\n{}", h.name, describe(&hosts));
    }
    let listed = berth_async(["images", "-f", &input], &[]).await;
    listed.assert_success();
    let row = listed.stdout.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains(&tag) && row.ends_with("local,h1,h2"), "{listed}");
    drop(hosts);
    drop(remotes);
}

// ---------------------------------------------------------------------------------------------
// 5. Pushed to a registry with auth, pulled by the hosts

/// A password whose credentials JSON encodes to standard base64 with a `+` and a `/`: sent
/// that way (bollard's default) the engine would read no credentials at all.
const PASSWORD: &str = "?????~~~~~";

/// `(status, Docker-Content-Digest)` of a HEAD of `repo:tag`'s manifest, asked of the registry
/// over HTTP directly, with `authorization` if given.
fn registry_manifest(addr: &str, repo: &str, tag: &str, authorization: Option<&str>) -> (u16, Option<String>) {
    let mut s = TcpStream::connect(addr).expect("connect to the registry");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(
        s,
        "HEAD /v2/{repo}/manifests/{tag} HTTP/1.0\r\nHost: {addr}\r\n{auth}\
         Accept: application/vnd.docker.distribution.manifest.v2+json\r\n\r\n"
    )
    .expect("send a HEAD request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read the response");
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let digest = response
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("docker-content-digest")))
        .map(|(_, v)| v.trim().to_string());
    (status, digest)
}

// Seen failing with berth broken on purpose: with `spec.pushSecret` not read
// (`push_credentials: None` in `input::images`), apply exited 1: "the registry refused the
// credentials (authentication failed): no basic auth credentials"; with the push's
// `X-Registry-Auth` in bollard's standard base64 (`docker::carry::push` without the
// `url_safe_registry_auth` modifier), the same: the engine read no credentials at all.
//
// Fails as berth is (issue 14, item 7): the unchanged second apply pushes the image again
// (`POST /images/REPO/push`), a mutating request and a registry round trip on every apply.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_repository_the_image_is_pushed_with_credentials_and_the_hosts_pull_it() {
    let scene = Scene::new("img-push");
    let (ns, key) = (scene.ns().to_string(), scene.key());
    let registry = Registry::start(Some(("pusher", PASSWORD)));
    let repo_path = format!("{ns}/site");
    let repository = format!("{}/{repo_path}", registry.addr());
    scene.images.add(&repository);
    let remotes = block_in_place(|| RemoteHost::start_all(&[73, 74]));
    let _forwards: Vec<_> = remotes.iter().map(|r| registry.expose_in(r)).collect();
    let hosts = fleet(&remotes).await;
    scene.write(&[("Dockerfile", COPY_ALL.as_bytes()), ("page.txt", b"pushed"), ("id.txt", ns.as_bytes())]);
    let config = serde_json::json!({"auths": {registry.addr(): {"username": "pusher", "password": PASSWORD}}});
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: registry-creds\n  namespace: {ns}\n\
         type: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{config}'\n---\n"
    );
    let image = ImageDecl {
        repository: Some(repository.clone()),
        push_secret: Some("registry-creds".into()),
        builder_role: Some("builder".into()),
        ..Default::default()
    };
    let set = set_yaml(
        &ns,
        "  hostSelector:\n    matchLabels: {role: web}\n",
        "    imagePullPolicy: IfNotPresent\n    imagePullSecrets:\n      - name: registry-creds\n",
    );
    let input = scene.input(&format!("{}{secret}{}{set}", hosts_yaml(&ns, &hosts), image.yaml(&ns)));

    let started = Instant::now();
    let first = berth_async(["apply", "-f", &input], &[]).await;
    let apply_time = started.elapsed();
    first.assert_success();
    let tag = built_tag(&first, &key).unwrap_or_else(|| panic!("{first}"));
    let tag_name = tag.strip_prefix(&format!("{repository}:")).unwrap_or_else(|| panic!("{tag} is in {repository}"));
    let pushed_line = format!("image {key}: pushed {tag} (");
    let pushed = first
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(&pushed_line))
        .map(|d| d.trim_end_matches(')').to_string())
        .unwrap_or_else(|| panic!("apply says it pushed:\n{first}"));
    let auth = registry.basic_auth().expect("the registry has auth");
    assert_eq!(
        registry_manifest(registry.addr(), &repo_path, tag_name, Some(&auth)),
        (200, Some(pushed.clone())),
        "the registry has the tag, with the digest apply printed\n--- registry log\n{}",
        registry.log()
    );
    assert_eq!(registry_manifest(registry.addr(), &repo_path, tag_name, None).0, 401, "the registry demands auth");
    assert_eq!(hosts[0].proxy.count_where(|r| r.endpoint().ends_with("/push")), 1, "{}", describe(&hosts));
    for h in &hosts[1..] {
        let pulls = h.proxy.count_where(|r| {
            r.endpoint() == "/images/create"
                && r.query
                    .as_deref()
                    .is_some_and(|q| q.contains(&repo_path.replace('/', "%2F")) || q.contains(&repo_path))
        });
        assert!(pulls >= 1, "{} pulled the image:\n{}", h.name, describe(&hosts));
        assert_eq!(h.proxy.count_where(is_load), 0, "{}: not carried:\n{}", h.name, describe(&hosts));
        only_one_running(&containers(&h.docker, &ns).await, &tag, &first);
    }
    eprintln!("FIGURES push: `berth apply` (build, push, two pulls, rollout) {:.2} s", apply_time.as_secs_f64());

    // Again: nothing is built, pulled, or pushed (the registry has had it since the last run),
    // and no request of the run changes anything anywhere.
    reset(&hosts);
    let again = berth_async(["apply", "-f", &input], &[]).await;
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "{again}");
    assert_eq!(count(&hosts[0].proxy, "/build"), 0, "{}", describe(&hosts));
    for h in &hosts[1..] {
        assert_eq!(count(&h.proxy, "/images/create"), 0, "{}: no pull:\n{}", h.name, describe(&hosts));
    }
    let pushes = hosts[0].proxy.count_where(|r| r.endpoint().ends_with("/push"));
    assert_eq!(pushes, 0, "an unchanged Image is not pushed again:\n{}\n{again}", describe(&hosts));
    for h in &hosts {
        assert_eq!(h.proxy.count_mutating(), 0, "{}: nothing changed:\n{}", h.name, describe(&hosts));
    }
    drop(hosts);
    drop(remotes);
}
