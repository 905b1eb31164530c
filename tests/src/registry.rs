//! A private image registry for pull and auth tests.
//!
//! Nothing can be pulled from a public registry on the test machines, and berth's pull and
//! registry-credential paths still need testing against a real registry. Debian's
//! `docker-registry` (distribution 2.8) serves one: [`Registry::start`] runs it on a free
//! 127.0.0.1 port with storage in a temp dir and, if asked, htpasswd (bcrypt) basic auth.
//! Engines treat 127.0.0.1 registries as insecure-allowed, so push and pull work without
//! TLS; [`push_image`] puts a locally built image (the echo image) into it.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use futures::StreamExt as _;

use crate::wait::http_request;

/// How long the registry may take to answer `GET /v2/` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Removes a tag from the local engine when dropped (also when the test panics), never the
/// image itself: e.g. a pushed reference of `example/echo:latest`, which other tests use.
pub struct TagGuard(pub String);

impl Drop for TagGuard {
    fn drop(&mut self) {
        let tag = self.0.clone();
        let _ = crate::rt::try_block_on(async move {
            let opts = bollard::query_parameters::RemoveImageOptions { noprune: true, ..Default::default() };
            let _ = crate::engine::docker().await.remove_image(&tag, Some(opts), None).await;
        });
    }
}

/// A running `docker-registry` process, killed on drop.
pub struct Registry {
    child: Child,
    addr: String,
    creds: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free 127.0.0.1 port, with htpasswd basic auth for
    /// `(user, password)` when given, and waits until `GET /v2/` answers.
    ///
    /// # Panics
    /// When `docker-registry` (or `htpasswd`, for auth) is not installed, or the registry
    /// does not answer in time (with its log).
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        let bin = find_binary("docker-registry").unwrap_or_else(|| {
            panic!(
                "docker-registry is not installed: install Debian's docker-registry package \
                 (apt-get install -y docker-registry); registry tests need it and never skip"
            )
        });
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().expect("a temp dir for the registry");
        let auth = htpasswd.map(|(user, pass)| {
            let path = dir.path().join("htpasswd");
            write_htpasswd(&path, user, pass);
            path
        });
        let creds = htpasswd.map(|(u, p)| (u.to_string(), p.to_string()));
        // A port found free may be taken before the registry binds it: try a few.
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(&addr, &dir.path().join("data"), auth.as_deref()))
                .expect("write the registry config");
            let log_path = dir.path().join("registry.log");
            let log = File::create(&log_path).expect("the registry log file");
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log file handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            match wait_ready(&mut child, &addr) {
                Ok(()) => {
                    return Registry { child, addr, creds, dir };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_log = format!("{why}\n--- registry log\n{log}");
                }
            }
        }
        panic!("docker-registry did not come up: {last_log}");
    }

    /// `127.0.0.1:PORT`: the registry's host part in image references.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("the registry's address has a port")
    }

    /// Makes the registry reachable from a test host's engine at the same address,
    /// `127.0.0.1:PORT`, so that one image reference names it on every engine (see
    /// [`crate::forward`]). Keep the forwarder as long as the host should reach it.
    pub fn expose_in(&self, host: &crate::testbed::RemoteHost) -> crate::forward::NetnsForward {
        crate::forward::NetnsForward::start(host.name(), self.port())
    }

    /// Stops the registry, as a registry host that went down; connections are refused from
    /// now on.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again after [`Registry::stop`], on the same address with the same
    /// storage and config: the registry host is back, with every image pushed before.
    ///
    /// # Panics
    /// When it does not come up (e.g. its port was taken meanwhile), with its log.
    pub fn restart(&mut self) {
        let bin = find_binary("docker-registry").expect("docker-registry was installed at start");
        let log = File::options().append(true).open(self.dir.path().join("registry.log")).expect("the registry log");
        self.child = Command::new(&bin)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        if let Err(why) = wait_ready(&mut self.child, &self.addr) {
            panic!("docker-registry did not come back on {}: {why}\n--- registry log\n{}", self.addr, self.log());
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `(user, password)` it was started with, if it requires auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// bollard credentials for this registry (`None` without auth).
    pub fn docker_credentials(&self) -> Option<DockerCredentials> {
        self.credentials().map(|(u, p)| credentials_for(&self.addr, u, p))
    }

    /// `Authorization: Basic ...` header value for the registry's own credentials.
    pub fn basic_auth(&self) -> Option<String> {
        self.credentials().map(|(u, p)| basic_auth(u, p))
    }

    /// The registry's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the local image `local_tag` to `<addr>/<name_tag>` (e.g. `echo:v1`) with this
    /// registry's credentials, and returns the remote reference.
    ///
    /// # Panics
    /// When the tag or push fails.
    pub async fn push(&self, docker: &Docker, local_tag: &str, name_tag: &str) -> String {
        let remote = format!("{}/{name_tag}", self.addr);
        push_image(docker, local_tag, &remote, self.credentials()).await.unwrap_or_else(|e| {
            panic!("push of {local_tag} to {remote} failed: {e:#}\n--- registry log\n{}", self.log())
        });
        remote
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(child: &mut Child, addr: &str) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on the registry") {
            return Err(format!("docker-registry exited early: {status}"));
        }
        if let Some((200 | 401, _)) = http_request(addr, "GET", "/v2/", &[]) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("GET http://{addr}/v2/ did not answer within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `Basic base64(user:pass)`.
pub fn basic_auth(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn credentials_for(server: &str, user: &str, pass: &str) -> DockerCredentials {
    DockerCredentials {
        username: Some(user.to_string()),
        password: Some(pass.to_string()),
        serveraddress: Some(server.to_string()),
        ..Default::default()
    }
}

/// Splits `host:port/name:tag` (or `name@digest`) into repository and tag (`latest` if none).
fn split_ref(reference: &str) -> (&str, &str) {
    if let Some((repo, _digest)) = reference.split_once('@') {
        return (repo, "latest");
    }
    let last_slash = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[last_slash..].rfind(':') {
        Some(i) => (&reference[..last_slash + i], &reference[last_slash + i + 1..]),
        None => (reference, "latest"),
    }
}

/// Tags the local image `local_tag` as `remote_ref` (`127.0.0.1:PORT/name:tag`) and pushes
/// it with basic credentials `creds` (for the registry host of `remote_ref`).
///
/// The tag `remote_ref` stays on the engine afterwards; remove it if the test should not
/// leave it.
pub async fn push_image(
    docker: &Docker,
    local_tag: &str,
    remote_ref: &str,
    creds: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let (repo, tag) = split_ref(remote_ref);
    let server = repo.split('/').next().unwrap_or(repo);
    docker
        .tag_image(local_tag, Some(TagImageOptions { repo: Some(repo.to_string()), tag: Some(tag.to_string()) }))
        .await
        .with_context(|| format!("tag {local_tag} as {repo}:{tag}"))?;
    let credentials = creds.map(|(u, p)| credentials_for(server, u, p));
    let mut progress = docker.push_image(
        repo,
        Some(PushImageOptions { tag: Some(tag.to_string()), ..Default::default() }),
        credentials,
    );
    let mut pushed = false;
    while let Some(item) = progress.next().await {
        let info = item.with_context(|| format!("push {repo}:{tag}"))?;
        if info.status.as_deref().is_some_and(|s| s.contains("digest:")) {
            pushed = true;
        }
    }
    anyhow::ensure!(pushed, "push of {repo}:{tag} ended without reporting a digest");
    Ok(())
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn write_htpasswd(path: &Path, user: &str, pass: &str) {
    let htpasswd = find_binary("htpasswd").unwrap_or_else(|| {
        panic!("htpasswd is not installed: install Debian's apache2-utils (registry auth tests need it)")
    });
    let out = Command::new(htpasswd).args(["-Bbn", user, pass]).output().expect("run htpasswd");
    assert!(out.status.success(), "htpasswd -Bbn failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(path, &out.stdout).expect("write the htpasswd file");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port on 127.0.0.1").port()
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string is a YAML string")
}

fn config_yaml(addr: &str, storage: &Path, htpasswd: Option<&Path>) -> String {
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {}\n  secret: berth-tests\n",
        yaml_str(&storage.to_string_lossy()),
        yaml_str(addr),
    );
    if let Some(path) = htpasswd {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: berth-tests\n    path: {}\n",
            yaml_str(&path.to_string_lossy())
        ));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::split_ref;

    #[test]
    fn splits_references() {
        assert_eq!(split_ref("127.0.0.1:5000/echo:v1"), ("127.0.0.1:5000/echo", "v1"));
        assert_eq!(split_ref("127.0.0.1:5000/a/echo"), ("127.0.0.1:5000/a/echo", "latest"));
        assert_eq!(split_ref("echo"), ("echo", "latest"));
    }
}
