//! A multi-host test bed: extra Docker engines on this machine, each in a network namespace
//! of its own.
//!
//! berth converges *several* Docker hosts, and how it copes with a host whose engine died or
//! that the network cut off can only be trusted when tested against real engines on real
//! addresses. The test machines have one engine and no other hosts, so [`RemoteHost::start`]
//! makes one: a `dockerd` in network namespace `berth-h<slot>-<pid>`, joined to the root
//! namespace by a veth pair (`10.250.<slot>.1` outside, `10.250.<slot>.2` inside), with its own
//! data root, exec root, bridge and iptables, reached over TCP with mutual TLS (a CA, server
//! and client certificates made per host by the `openssl` CLI) or over its own unix socket,
//! and with the echo test image loaded.
//!
//! Faults are real, not simulated: [`RemoteHost::kill_engine`] SIGKILLs the engine (its API is
//! gone, its containers run on, as after a dockerd crash), [`RemoteHost::power_off`] kills
//! everything the host runs (containers included), [`RemoteHost::partition`] cuts the link;
//! [`RemoteHost::start_engine`] and [`RemoteHost::heal`] bring the host back.
//!
//! Test processes run in parallel and each may start several hosts, so the slot (and with it
//! the address and every name) is claimed with a machine-wide file lock that the host holds
//! for its whole life. Every name carries the slot and the owner's pid (netns
//! `berth-h<slot>-<pid>`, veth `bh<slot>-<pid>`, directory `/tmp/berth-h<slot>-<pid>`, cgroup
//! parent `/berth-h<slot>-<pid>`), so [`cleanup_stale`] (which `start` calls) can find what a
//! crashed run left behind: a leftover is stale exactly when nobody holds its slot.
//!
//! Traps this module avoids (see the project's test-bed notes):
//! - `dockerd` is started with `nsenter --net=...`, not `ip netns exec`, which remounts `/sys`
//!   and makes dockerd fail with "Devices cgroup isn't mounted".
//! - The engine listens on TCP with TLS only: on plain TCP dockerd sleeps ~15 s at start.
//! - No engine here uses `--bridge=none` in the root namespace (it would delete the root
//!   engine's `docker0`); each has its own `docker0` inside its own namespace.
//! - A partition downs the *namespace* end of the veth. Downing the root end deletes the
//!   root namespace's route to `10.250.<slot>.0/24`, and the host's traffic then follows the
//!   default route off the machine (seen here: a stranger answered instead of a timeout).
//!   For the same reason `10.250.0.0/16` is made unreachable in the root namespace (once,
//!   and left so): a dropped host's address then fails at once instead of leaving the machine.
//! - Each engine has its own trust key (`deprecated-key-path` in its daemon.json): with the
//!   shared `/etc/docker/key.json`, every engine reports the root engine's ID.
//! - After a kill, stale pidfiles whose process is a zombie would make dockerd wait for a
//!   containerd that is gone; they are removed before each start.
//! - A SIGKILLed shim leaves its socket in `/run/containerd/s/`; removal deletes those too.
//!
//! Needs root, `ip` (iproute2), `nsenter` (util-linux), `dockerd`, `openssl` (3.x) and
//! `sha256sum`; without them `start` fails saying what to install (tests never skip).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{ImportImageOptions, ListContainersOptions, RemoveContainerOptions};
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use futures::{StreamExt as _, TryStreamExt as _};

use crate::image::{ECHO_IMAGE, ensure_echo_image};
use crate::rt;

/// Slots are `1..=MAX_SLOTS`: the third octet of the host's addresses.
pub const MAX_SLOTS: u8 = 200;

/// The TCP port each host's engine listens on (with TLS).
pub const ENGINE_PORT: u16 = 2376;

/// Where host directories live: short paths (unix sockets allow ~107 bytes), and the same
/// for every test process, so that leftovers of crashed runs can be found.
const BASE_DIR: &str = "/tmp";

/// Machine-wide (not per checkout: addresses and names are machine-wide) slot lock files.
const LOCK_DIR: &str = "/tmp/berth-testbed-slots";

/// Prefix of every name the test bed makes (netns, directory, cgroup).
const PREFIX: &str = "berth-h";

/// Prefix of the root-namespace end of a host's veth pair (interface names: 15 bytes max).
const VETH_PREFIX: &str = "bh";

/// How long a starting engine may take to answer on its unix socket and over TLS.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a SIGTERMed engine may take to exit before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long killed processes may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting, negotiating and pinging may take in [`RemoteHost::docker_tls`].
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// The API version of the engines here (Debian's Docker 20.10).
const API_1_41: ClientVersion = ClientVersion { major_version: 1, minor_version: 41 };

/// How long each phase of [`RemoteHost::start`] took.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartTimings {
    /// Claiming a slot and removing stale leftovers.
    pub claim_and_cleanup: Duration,
    /// Making sure the echo image exists on the local engine (its export then runs while
    /// the host is made).
    pub echo_image: Duration,
    /// CA, server and client certificates (openssl).
    pub certificates: Duration,
    /// Network namespace, veth pair, addresses.
    pub network: Duration,
    /// Starting dockerd until it answers on its socket and over TLS.
    pub engine: Duration,
    /// Loading the echo image into the engine (and waiting for its export, if still running).
    pub image_load: Duration,
    /// All of it.
    pub total: Duration,
}

/// How a test host's engine is set up beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostOptions {
    /// `live-restore`: containers keep running while dockerd is down, and the engine adopts
    /// them when it starts again (without it, a restarted engine restarts them).
    pub live_restore: bool,
    /// The data root on a tmpfs of this many bytes (it must hold the echo image, a few MB):
    /// a disk that a test can fill. Unmounted with the host.
    pub data_root_bytes: Option<u64>,
}

/// An extra Docker host: a dockerd in its own network namespace at `10.250.<slot>.2`.
///
/// Dropping it stops the engine and removes everything it made (namespace, veth, mounts,
/// cgroups, directories), also when the test panicked.
pub struct RemoteHost {
    slot: u8,
    owner: u32,
    name: String,
    veth: String,
    dir: PathBuf,
    ip: String,
    tcp_endpoint: String,
    dockerd: Option<Child>,
    timings: StartTimings,
    // Released after `Drop::drop` has removed everything: the slot is free only then.
    _slot_lock: File,
}

impl RemoteHost {
    /// Starts a host in slot `index` if it is free, else in the next free slot (tests of
    /// different processes run at the same time: use [`RemoteHost::slot`] and
    /// [`RemoteHost::ip`], never the index asked for). Blocks until the engine answers over
    /// its unix socket and over TLS and has the echo image.
    ///
    /// # Panics
    /// When not root, a tool is missing, all slots are taken, or a step fails (a failing
    /// engine start shows the tail of its log). What was made so far is removed.
    pub fn start(index: u8) -> RemoteHost {
        Self::start_with(index, HostOptions::default())
    }

    /// [`RemoteHost::start`] with `options` (live restore, a small data root).
    pub fn start_with(index: u8, options: HostOptions) -> RemoteHost {
        let t0 = Instant::now();
        assert!(
            (1..=MAX_SLOTS).contains(&index),
            "RemoteHost::start({index}): the index must be in 1..={MAX_SLOTS} (the third octet of 10.250.x.2)"
        );
        require_prerequisites();
        let (slot, lock) = claim_slot(index);
        let owner = std::process::id();
        let name = tag(slot, owner);
        // Whatever still carries this slot's name is stale: we hold the slot now.
        sweep(Some(slot));
        let mut host = RemoteHost {
            slot,
            owner,
            veth: format!("{VETH_PREFIX}{slot}-{owner}"),
            dir: host_dir(slot, owner),
            ip: format!("10.250.{slot}.2"),
            tcp_endpoint: format!("tcp://10.250.{slot}.2:{ENGINE_PORT}"),
            name,
            dockerd: None,
            timings: StartTimings::default(),
            _slot_lock: lock,
        };
        let mut mark = Instant::now();
        let mut lap = || {
            let now = Instant::now();
            let d = now - mark;
            mark = now;
            d
        };
        host.timings.claim_and_cleanup = t0.elapsed();
        lap();
        ensure_echo_image();
        // Exported while the host is being made; loaded once its engine answers.
        let export = std::thread::spawn(export_echo_image);
        host.timings.echo_image = lap();
        for sub in ["tls", "client", "data", "exec"] {
            let d = host.dir.join(sub);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        }
        // The engine's ID (`docker info`) comes from its trust key, by default the shared
        // /etc/docker/key.json: every host gets its own, or all would have the root
        // engine's ID. Only daemon.json can say where it is in 20.10.
        let key = serde_json::to_string(&host.dir.join("key.json")).expect("a path as JSON");
        let daemon = format!("{{\"deprecated-key-path\": {key}, \"live-restore\": {}}}\n", options.live_restore);
        std::fs::write(host.dir.join("daemon.json"), daemon).expect("write the engine's daemon.json");
        if let Some(bytes) = options.data_root_bytes {
            host.mount_small_data_root(bytes);
        }
        generate_certificates(&host.dir, slot, &host.ip);
        host.timings.certificates = lap();
        host.create_network();
        host.timings.network = lap();
        host.start_engine();
        host.timings.engine = lap();
        let tar = export.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        host.load_echo_image(tar);
        host.timings.image_load = lap();
        host.timings.total = t0.elapsed();
        host
    }

    /// Starts one host per index at the same time (each in its own thread), in the order
    /// given. If one fails, the others are dropped (removed) and its panic is re-raised.
    pub fn start_all(indexes: &[u8]) -> Vec<RemoteHost> {
        let results: Vec<std::thread::Result<RemoteHost>> = std::thread::scope(|s| {
            let handles: Vec<_> = indexes.iter().map(|&i| s.spawn(move || RemoteHost::start(i))).collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut hosts = Vec::new();
        let mut failure = None;
        for r in results {
            match r {
                Ok(h) => hosts.push(h),
                Err(p) => failure = failure.or(Some(p)),
            }
        }
        if let Some(p) = failure {
            drop(hosts);
            std::panic::resume_unwind(p);
        }
        hosts
    }

    /// The slot this host got: the third octet of its addresses.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The network namespace's name, `berth-h<slot>-<pid>` (also the directory's and the
    /// cgroup parent's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root-namespace end of the veth pair, `bh<slot>-<pid>`.
    pub fn veth(&self) -> &str {
        &self.veth
    }

    /// The host's address, `10.250.<slot>.2`: the engine listens on it, and containers
    /// publish their ports on it.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// The root namespace's address on the link to this host, `10.250.<slot>.1`: what the
    /// host's containers reach the root namespace at (e.g. a registry listening there).
    pub fn gateway_ip(&self) -> String {
        format!("10.250.{}.1", self.slot)
    }

    /// `tcp://10.250.<slot>.2:2376`: the engine over TLS.
    pub fn tcp_endpoint(&self) -> &str {
        &self.tcp_endpoint
    }

    /// The engine's unix socket (reachable from the root namespace).
    pub fn unix_socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix:///tmp/berth-h<slot>-<pid>/docker.sock`.
    pub fn unix_endpoint(&self) -> String {
        format!("unix://{}", self.unix_socket().display())
    }

    /// The host's directory (data root, exec root, certificates, engine log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A directory with `ca.pem`, `cert.pem` and `key.pem` for a client: what
    /// `DOCKER_CERT_PATH` names (with `DOCKER_HOST=tcp://...:2376 DOCKER_TLS_VERIFY=1`).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.join("client")
    }

    /// The CA certificate (PEM) that signed the engine's and the client's certificates.
    pub fn ca_pem(&self) -> String {
        self.read_client_file("ca.pem")
    }

    /// The client certificate (PEM) the engine accepts.
    pub fn cert_pem(&self) -> String {
        self.read_client_file("cert.pem")
    }

    /// The client certificate's private key (PEM, PKCS#8).
    pub fn key_pem(&self) -> String {
        self.read_client_file("key.pem")
    }

    fn read_client_file(&self, file: &str) -> String {
        let path = self.cert_dir().join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// How long each phase of `start` took.
    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    /// A client for the engine over TCP with mutual TLS, its API version negotiated and a
    /// ping answered.
    ///
    /// # Panics
    /// When the engine does not answer within 15 s (with the tail of its log).
    pub async fn docker_tls(&self) -> Docker {
        let client = self.tls_client_with(Duration::from_secs(120), API_DEFAULT_VERSION);
        self.negotiated(client, &self.tcp_endpoint).await
    }

    /// A client for the engine over its unix socket, its API version negotiated and a ping
    /// answered.
    ///
    /// # Panics
    /// When the engine does not answer within 15 s (with the tail of its log).
    pub async fn docker_unix(&self) -> Docker {
        let endpoint = self.unix_endpoint();
        let client = Docker::connect_with_unix(&endpoint, 120, API_DEFAULT_VERSION)
            .unwrap_or_else(|e| panic!("cannot make a client for {endpoint}: {e}"));
        self.negotiated(client, &endpoint).await
    }

    /// A client over TLS that has not talked to the engine yet (API 1.41, what the engines
    /// here speak), whose every request gives up after `timeout` (whole seconds, at least 1):
    /// for checks that expect the host to be down or cut off.
    pub fn tls_client(&self, timeout: Duration) -> Docker {
        self.tls_client_with(timeout, &API_1_41)
    }

    fn tls_client_with(&self, timeout: Duration, version: &ClientVersion) -> Docker {
        let dir = self.cert_dir();
        Docker::connect_with_ssl(
            &self.tcp_endpoint,
            &dir.join("key.pem"),
            &dir.join("cert.pem"),
            &dir.join("ca.pem"),
            timeout.as_secs().max(1),
            version,
        )
        .unwrap_or_else(|e| panic!("cannot make a TLS client for {}: {e}", self.tcp_endpoint))
    }

    async fn negotiated(&self, client: Docker, endpoint: &str) -> Docker {
        let answered = tokio::time::timeout(ANSWER_TIMEOUT, async {
            let client = client.negotiate_version().await?;
            client.ping().await?;
            Ok::<_, bollard::errors::Error>(client)
        })
        .await;
        let why = match answered {
            Ok(Ok(client)) => return client,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {ANSWER_TIMEOUT:?}"),
        };
        panic!(
            "the engine of test host {} does not answer at {endpoint} [{why}] (engine {}, link {})\n{}",
            self.name,
            if self.engine_running() { "running" } else { "not running" },
            if self.is_partitioned() { "partitioned" } else { "up" },
            self.log_tail(40)
        );
    }

    /// The engine's data root (`--data-root`).
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn mount_small_data_root(&self, bytes: u64) {
        let out = Command::new(tool("mount"))
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(self.data_root())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "mount of a {bytes}-byte tmpfs on {} failed: {}",
            self.data_root().display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether dockerd runs (it may still be starting, or be cut off by a partition).
    pub fn engine_running(&self) -> bool {
        self.engine_pid().is_some_and(|pid| process_alive(pid as i32))
    }

    /// dockerd's pid while it runs.
    pub fn engine_pid(&self) -> Option<u32> {
        self.dockerd.as_ref().map(Child::id)
    }

    /// The engine's log (stdout and stderr of every dockerd run of this host).
    pub fn engine_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.engine_log();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- last {lines} lines of {}\n{tail}", self.dir.join("dockerd.log").display())
    }

    /// Starts dockerd (again) on the same data root, and waits until it answers on its unix
    /// socket and over TLS. After [`RemoteHost::kill_engine`] or [`RemoteHost::power_off`],
    /// containers with a restart policy (`always`, `unless-stopped`) come back; the engine
    /// runs without live-restore, so it restarts them rather than adopting them.
    ///
    /// # Panics
    /// When the engine already runs, exits, or does not answer within 30 s (with its log).
    pub fn start_engine(&mut self) {
        assert!(!self.engine_running(), "start_engine: the engine of test host {} already runs", self.name);
        if let Some(mut old) = self.dockerd.take() {
            let _ = old.wait();
        }
        self.remove_stale_pidfiles();
        let nsenter = tool("nsenter");
        let dockerd = tool("dockerd");
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let log_path = self.dir.join("dockerd.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        let mut cmd = Command::new(nsenter);
        cmd.arg(format!("--net=/var/run/netns/{}", self.name))
            .arg("--")
            .arg(dockerd)
            .args(["--config-file", &d("daemon.json")])
            .args(["--data-root", &d("data")])
            .args(["--exec-root", &d("exec")])
            .args(["--pidfile", &d("docker.pid")])
            .args(["-H", &self.unix_endpoint()])
            .args(["-H", &self.tcp_endpoint])
            .arg("--tlsverify")
            .args(["--tlscacert", &d("tls/ca.pem")])
            .args(["--tlscert", &d("tls/server-cert.pem")])
            .args(["--tlskey", &d("tls/server-key.pem")])
            // Its own containerd (dockerd starts one under --exec-root), but should a system
            // containerd be there, dockerd would share it: keep the namespaces apart.
            .args(["--containerd-namespace", &self.name])
            .args(["--containerd-plugins-namespace", &format!("{}-plugins", self.name)])
            // Containers' cgroups under /berth-h<slot>-<pid>: power_off and cleanup find them.
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .args(["--cgroup-parent", &format!("/{}", self.name)])
            // Registries the tests run in the root namespace, reached at a 10.250.x.1.
            .args(["--insecure-registry", "10.250.0.0/16"])
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the engine log handle"))
            .stderr(log);
        // Its own session (no terminal signals), and SIGTERM when the spawning thread (which
        // lives as long as this process) dies: a test process killed outright takes its
        // engines down with it; cleanup_stale removes the rest later.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_from_lasting_thread(cmd)
            .unwrap_or_else(|e| panic!("cannot start dockerd for test host {}: {e}", self.name));
        self.dockerd = Some(child);
        if let Err(why) = self.wait_ready() {
            panic!("the engine of test host {} did not come up: {why}\n{}", self.name, self.log_tail(40));
        }
    }

    /// After a kill, the pidfiles of dockerd and of its containerd remain. dockerd checks
    /// them with `kill(pid, 0)`, which a zombie passes: the killed containerd, orphaned,
    /// stays a zombie until init reaps it, and dockerd would then wait for that "running"
    /// containerd and give up. A pidfile whose process is dead, a zombie or not this host's
    /// goes.
    fn remove_stale_pidfiles(&self) {
        let under_dir = format!("{}/", self.dir.display());
        for file in ["docker.pid", "exec/containerd/containerd.pid"] {
            let path = self.dir.join(file);
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let ours_and_alive = text.trim().parse::<i32>().is_ok_and(|pid| {
                process_alive(pid)
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&under_dir))
            });
            if !ours_and_alive {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Polls the unix socket, then pings over TLS (which also checks the certificates).
    fn wait_ready(&mut self) -> Result<(), String> {
        let endpoint = self.unix_endpoint();
        let tls = self.tls_client(Duration::from_secs(5));
        let tcp = self.tcp_endpoint.clone();
        let child = self.dockerd.as_mut().expect("dockerd was just spawned");
        rt::block_on(async move {
            let deadline = Instant::now() + READY_TIMEOUT;
            let mut last;
            loop {
                if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                    return Err(format!("dockerd exited: {status}"));
                }
                let ping = async {
                    let client = Docker::connect_with_unix(&endpoint, 2, &API_1_41)?;
                    client.ping().await
                };
                match tokio::time::timeout(Duration::from_secs(2), ping).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "no answer within 2s".into(),
                }
                if Instant::now() >= deadline {
                    return Err(format!("no answer at {endpoint} within {READY_TIMEOUT:?}; last: {last}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            loop {
                match tokio::time::timeout(Duration::from_secs(5), tls.ping()).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "no answer within 5s".into(),
                }
                if Instant::now() >= deadline {
                    return Err(format!("answers on its socket but not at {tcp} over TLS; last: {last}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// SIGKILLs dockerd: the engine's API is gone (on the socket and over TCP) until
    /// [`RemoteHost::start_engine`]. Like a dockerd crash, it leaves the containers
    /// running (their shims survive); [`RemoteHost::power_off`] takes them down too.
    ///
    /// # Panics
    /// When the engine does not run.
    pub fn kill_engine(&mut self) {
        assert!(self.engine_running(), "kill_engine: the engine of test host {} does not run", self.name);
        let mut child = self.dockerd.take().expect("a running engine has a child");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The whole host goes down as if its power was cut: dockerd, its containerd, the
    /// shims and every container process are SIGKILLed. [`RemoteHost::start_engine`] boots
    /// it again.
    ///
    /// # Panics
    /// When a process survives SIGKILL for 10 s.
    pub fn power_off(&mut self) {
        if let Some(mut child) = self.dockerd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(left) = kill_all(&self.name, &self.dir) {
            panic!("power_off of test host {}: processes survive SIGKILL: {left:?}", self.name);
        }
    }

    /// Cuts the host off the network: its end of the veth pair goes down. Connections to
    /// it hang (packets are dropped; no error comes back) until [`RemoteHost::heal`]; the
    /// engine itself runs on and still answers on its unix socket.
    ///
    /// # Panics
    /// When `ip` fails.
    pub fn partition(&self) {
        ip(&["-n", &self.name, "link", "set", "eth0", "down"])
            .unwrap_or_else(|e| panic!("partition of test host {}: {e}", self.name));
    }

    /// Reconnects a partitioned host.
    ///
    /// # Panics
    /// When `ip` fails.
    pub fn heal(&self) {
        ip(&["-n", &self.name, "link", "set", "eth0", "up"])
            .unwrap_or_else(|e| panic!("heal of test host {}: {e}", self.name));
    }

    /// Whether the host's end of the link is down (see [`RemoteHost::partition`]).
    pub fn is_partitioned(&self) -> bool {
        ip(&["-n", &self.name, "-o", "link", "show", "eth0"])
            .map(|out| {
                let flags = out.split('<').nth(1).and_then(|s| s.split('>').next()).unwrap_or("");
                !flags.split(',').any(|f| f == "UP")
            })
            .unwrap_or(false)
    }

    fn create_network(&self) {
        let slot = self.slot;
        let subnet = format!("10.250.{slot}.0/24");
        let taken = ip(&["-o", "-4", "addr", "show", "to", &subnet]).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            taken.trim().is_empty(),
            "test host slot {slot}: {subnet} is already in use in the root namespace (not by the test bed):\n{taken}"
        );
        // Without a host on it (dropped, or not made yet), 10.250.<slot>.2 would be routed
        // off the machine by the default route, and something out there may answer. The
        // /16 is the test bed's: make it unreachable unless a host's /24 is more specific.
        // Idempotent, machine-wide, left in place.
        ip(&["route", "replace", "unreachable", "10.250.0.0/16"])
            .unwrap_or_else(|e| panic!("cannot guard 10.250.0.0/16 in the root namespace: {e}"));
        let host_side = format!("10.250.{slot}.1/24");
        let inside = format!("10.250.{slot}.2/24");
        let steps: [&[&str]; 7] = [
            &["netns", "add", &self.name],
            &["link", "add", &self.veth, "type", "veth", "peer", "name", "eth0", "netns", &self.name],
            &["addr", "add", &host_side, "dev", &self.veth],
            &["link", "set", &self.veth, "up"],
            &["-n", &self.name, "addr", "add", &inside, "dev", "eth0"],
            &["-n", &self.name, "link", "set", "eth0", "up"],
            &["-n", &self.name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            ip(step).unwrap_or_else(|e| panic!("network of test host {}: {e}", self.name));
        }
    }

    /// Loads the echo image exported from the local engine (`docker save | docker load`).
    fn load_echo_image(&self, tar: Vec<u8>) {
        self.load_image_stream(ECHO_IMAGE, futures::stream::iter([Ok::<_, std::io::Error>(tar.into())]));
    }

    /// Copies `image` from the local engine onto this host, as `docker save IMAGE | docker
    /// -H HOST load` would: streamed, so a large image (the real-servers one, ~450 MB) never
    /// sits in memory. Same image ID on both engines.
    ///
    /// # Panics
    /// When the image is not on the local engine, or the export or the load fails.
    pub fn load_image(&self, image: &str) {
        let local = rt::block_on(crate::engine::docker());
        self.load_image_stream(image, local.export_image(image));
    }

    /// Loads the `docker save` tar that `tar` streams, and checks that `image` is then on the
    /// host.
    fn load_image_stream<S, E>(&self, image: &str, tar: S)
    where
        S: futures::Stream<Item = Result<hyper::body::Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let endpoint = self.unix_endpoint();
        let (name, image) = (self.name.clone(), image.to_string());
        rt::block_on(async move {
            let remote = Docker::connect_with_unix(&endpoint, 120, &API_1_41)
                .unwrap_or_else(|e| panic!("cannot make a client for {endpoint}: {e}"));
            let options = ImportImageOptions { quiet: true, ..Default::default() };
            let mut progress = remote.import_image_stream(options, tar, None);
            while let Some(item) = progress.next().await {
                let info = item.unwrap_or_else(|e| panic!("loading {image} into test host {name} failed: {e}"));
                if let Some(err) = info.error_detail {
                    panic!("loading {image} into test host {name} failed: {err:?}");
                }
            }
            remote
                .inspect_image(&image)
                .await
                .unwrap_or_else(|e| panic!("{image} is not on test host {name} after loading it: {e}"));
        });
    }

    /// SIGTERM, wait, SIGKILL. Containers are force-removed first, so that the engine's
    /// shutdown does not wait for containers that ignore SIGTERM.
    fn stop_engine(&mut self) {
        if !self.engine_running() {
            if let Some(mut child) = self.dockerd.take() {
                let _ = child.wait();
            }
            return;
        }
        let endpoint = self.unix_endpoint();
        let _ = rt::try_block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), remove_all_containers(&endpoint)).await;
        });
        let mut child = self.dockerd.take().expect("a running engine has a child");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            eprintln!("test host {}: dockerd ignored SIGTERM for {STOP_TIMEOUT:?}; killing it", self.name);
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        self.stop_engine();
        let problems = remove_leftovers(self.slot, self.owner);
        if !problems.is_empty() {
            let msg = format!("removing test host {} left problems: {problems:#?}", self.name);
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// The echo image as `docker save` writes it (a tar), from the local engine.
fn export_echo_image() -> Vec<u8> {
    rt::block_on(async {
        let local = crate::engine::docker().await;
        local
            .export_image(ECHO_IMAGE)
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await
            .unwrap_or_else(|e| panic!("cannot export {ECHO_IMAGE} from the local engine: {e}"))
    })
}

async fn remove_all_containers(endpoint: &str) {
    let Ok(client) = Docker::connect_with_unix(endpoint, 10, &API_1_41) else { return };
    let Ok(list) = client.list_containers(Some(ListContainersOptions { all: true, ..Default::default() })).await else {
        return;
    };
    let removals = list.into_iter().filter_map(|c| c.id).map(|id| {
        let client = client.clone();
        async move {
            let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
            let _ = client.remove_container(&id, Some(opts)).await;
        }
    });
    futures::future::join_all(removals).await;
}

/// Removes what crashed test runs left behind: engines, network namespaces, veths, mounts,
/// cgroups and directories named `berth-h<slot>-<pid>` whose slot nobody holds. Returns the
/// names it removed. [`RemoteHost::start`] calls it.
///
/// # Panics
/// When a leftover cannot be removed (with what remains).
pub fn cleanup_stale() -> Vec<String> {
    sweep(None)
}

/// Removes the leftovers of every free slot, and of `held` (which this process holds).
fn sweep(held: Option<u8>) -> Vec<String> {
    let mut removed = Vec::new();
    for (slot, owner) in leftovers() {
        let _claim = if Some(slot) == held {
            None
        } else {
            match try_claim(slot) {
                Some(lock) => Some(lock),
                None => continue, // a live host (here or in another process)
            }
        };
        let problems = remove_leftovers(slot, owner);
        assert!(problems.is_empty(), "cannot remove the leftovers of test host {}: {problems:#?}", tag(slot, owner));
        removed.push(tag(slot, owner));
    }
    removed
}

/// `(slot, owner pid)` of everything named like a test host: netns, veths, directories,
/// cgroups.
fn leftovers() -> BTreeSet<(u8, u32)> {
    let mut found = BTreeSet::new();
    if let Ok(out) = ip(&["netns", "list"]) {
        for line in out.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            found.extend(parse_tag(name, PREFIX));
        }
    }
    if let Ok(out) = ip(&["-o", "link", "show"]) {
        for line in out.lines() {
            // "7: bh3-1234@if2: <...> ..."
            let name = line.split(": ").nth(1).unwrap_or("").split('@').next().unwrap_or("");
            found.extend(parse_tag(name, VETH_PREFIX));
        }
    }
    if let Ok(entries) = std::fs::read_dir(BASE_DIR) {
        for e in entries.flatten() {
            found.extend(parse_tag(&e.file_name().to_string_lossy(), PREFIX));
        }
    }
    for root in cgroup_roots() {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                found.extend(parse_tag(&e.file_name().to_string_lossy(), PREFIX));
            }
        }
    }
    found
}

/// Everything a host with this slot and owner may have left: processes, mounts, veth,
/// netns, cgroups, directory. Returns what could not be removed.
fn remove_leftovers(slot: u8, owner: u32) -> Vec<String> {
    let name = tag(slot, owner);
    let dir = host_dir(slot, owner);
    let veth = format!("{VETH_PREFIX}{slot}-{owner}");
    let mut problems = Vec::new();
    if let Err(left) = kill_all(&name, &dir) {
        problems.push(format!("processes survive SIGKILL: {left:?}"));
    }
    problems.extend(remove_shim_sockets(&name, &dir));
    for _ in 0..10 {
        let mounts = mounts_under(&dir);
        if mounts.is_empty() {
            break;
        }
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
    let mounts = mounts_under(&dir);
    if !mounts.is_empty() {
        problems.push(format!("mounts remain: {mounts:?}"));
    }
    // Deleting one end of a veth pair deletes the other.
    if link_exists(&veth)
        && let Err(e) = ip(&["link", "del", &veth])
    {
        problems.push(e);
    }
    if netns_exists(&name)
        && let Err(e) = ip(&["netns", "del", &name])
    {
        problems.push(e);
    }
    for root in cgroup_roots() {
        let top = root.join(&name);
        if top.is_dir() {
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                if let Err(e) = std::fs::remove_dir(&d) {
                    problems.push(format!("cannot remove cgroup {}: {e}", d.display()));
                }
            }
        }
    }
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        problems.push(format!("cannot remove {}: {e}", dir.display()));
    }
    problems
}

/// containerd's shims listen on `/run/containerd/s/<sha256(containerd address/namespace/id)>`
/// (containerd 1.6), outside the host's directory, and a SIGKILLed shim leaves its socket
/// there: remove those of the host's containers (the shims must be dead already).
fn remove_shim_sockets(name: &str, dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("data/containers")) else { return Vec::new() };
    let address = dir.join("exec/containerd/containerd.sock");
    let mut problems = Vec::new();
    for id in entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()) {
        let key = format!("{}/{name}/{id}", address.display());
        let socket = Path::new("/run/containerd/s").join(sha256_hex(&key));
        if socket.exists()
            && let Err(e) = std::fs::remove_file(&socket)
        {
            problems.push(format!("cannot remove the shim socket {} of container {id}: {e}", socket.display()));
        }
    }
    problems
}

/// sha256 of `text`, in hex (coreutils' sha256sum: the harness has no hashing crate).
fn sha256_hex(text: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(tool("sha256sum"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sha256sum: {e}"));
    child.stdin.take().expect("piped stdin").write_all(text.as_bytes()).expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum's output");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// SIGKILLs the host's processes until none is left: its dockerd (by pidfile), everything
/// in its network namespace (containerd, shims, docker-proxy) and in its cgroups (the
/// containers). `Err` lists the survivors.
fn kill_all(name: &str, dir: &Path) -> Result<(), Vec<i32>> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let pids = host_pids(name, dir);
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(pids);
        }
        for &pid in &pids {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn host_pids(name: &str, dir: &Path) -> Vec<i32> {
    let mut pids = BTreeSet::new();
    // dockerd, containerd and the shims name the host's directory in their arguments (the
    // shims even when the namespace is gone already).
    let under_dir = format!("{}/", dir.display());
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if matches!(comm.trim(), "dockerd" | "containerd" | "containerd-shim" | "runc" | "docker-proxy")
                && std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).split('\0').any(|arg| arg.contains(&under_dir)))
            {
                pids.insert(pid);
            }
        }
    }
    if netns_exists(name)
        && let Ok(out) = ip(&["netns", "pids", name])
    {
        pids.extend(out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    for root in cgroup_roots() {
        let top = root.join(name);
        if top.is_dir() {
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            for d in dirs {
                if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    pids.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
                }
            }
        }
    }
    pids.into_iter().filter(|&p| process_alive(p)).collect()
}

/// Alive and not a zombie (a zombie is gone for every purpose here).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// The cgroup hierarchies: `/sys/fs/cgroup` (v2) and each v1 controller under it, once.
fn cgroup_roots() -> Vec<PathBuf> {
    static ROOTS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let base = PathBuf::from("/sys/fs/cgroup");
            let mut roots = BTreeSet::new();
            if base.join("cgroup.procs").exists() {
                roots.insert(base.clone());
            }
            if let Ok(entries) = std::fs::read_dir(&base) {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.join("cgroup.procs").exists() {
                        roots.insert(p.canonicalize().unwrap_or(p));
                    }
                }
            }
            roots.into_iter().collect()
        })
        .clone()
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// `berth-h<slot>-<pid>`.
fn tag(slot: u8, owner: u32) -> String {
    format!("{PREFIX}{slot}-{owner}")
}

fn host_dir(slot: u8, owner: u32) -> PathBuf {
    Path::new(BASE_DIR).join(tag(slot, owner))
}

/// `<prefix><slot>-<pid>` → `(slot, pid)` (canonical numbers only: no leading zeros).
fn parse_tag(name: &str, prefix: &str) -> Option<(u8, u32)> {
    let (slot_text, owner_text) = name.strip_prefix(prefix)?.split_once('-')?;
    let slot: u8 = slot_text.parse().ok()?;
    let owner: u32 = owner_text.parse().ok()?;
    let canonical = slot.to_string() == slot_text && owner.to_string() == owner_text;
    (canonical && (1..=MAX_SLOTS).contains(&slot)).then_some((slot, owner))
}

fn open_slot_lock(slot: u8) -> (PathBuf, File) {
    std::fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| panic!("cannot create {LOCK_DIR}: {e}"));
    let path = Path::new(LOCK_DIR).join(format!("slot-{slot}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the slot lock {}: {e}", path.display()));
    (path, file)
}

fn try_claim(slot: u8) -> Option<File> {
    let (path, file) = open_slot_lock(slot);
    match file.try_lock() {
        Ok(()) => Some(file),
        Err(std::fs::TryLockError::WouldBlock) => None,
        Err(std::fs::TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
    }
}

/// The first free slot from `preferred` on (wrapping), and its lock.
fn claim_slot(preferred: u8) -> (u8, File) {
    for k in 0..MAX_SLOTS as u16 {
        let slot = ((preferred as u16 - 1 + k) % MAX_SLOTS as u16 + 1) as u8;
        if let Some(lock) = try_claim(slot) {
            return (slot, lock);
        }
    }
    panic!("all {MAX_SLOTS} test host slots are in use (locks in {LOCK_DIR}): too many test hosts at once");
}

/// Spawns `cmd` from one thread that lives as long as the process, so that the child's
/// parent-death signal fires when the process dies, not when the calling thread ends.
fn spawn_from_lasting_thread(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("berth-testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the test bed's spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner.send((cmd, reply_tx)).expect("the test bed's spawner thread is alive");
    reply_rx.recv().expect("the test bed's spawner thread answers")
}

/// Runs `ip ARGS`: its stdout, or `Err` with the command and its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool("ip"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The path of a required program (PATH, then the sbin directories a non-login root shell
/// may lack).
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: the multi-host test bed needs it ({})", install_hint(name)))
}

fn install_hint(name: &str) -> &'static str {
    match name {
        "ip" => "apt-get install -y iproute2",
        "nsenter" => "apt-get install -y util-linux",
        "dockerd" => "apt-get install -y docker.io iptables",
        "openssl" => "apt-get install -y openssl",
        "sha256sum" => "apt-get install -y coreutils",
        _ => "install it",
    }
}

fn require_prerequisites() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the multi-host test bed needs root (network namespaces, veth pairs, a dockerd per host); \
         run the tests as root, as CI does"
    );
    for name in ["ip", "nsenter", "dockerd", "openssl", "sha256sum"] {
        tool(name);
    }
}

/// Certificates from a CA of their own, unrelated to any test host's: what a test needs to
/// show that an engine refuses a client certificate it did not sign, and that berth refuses
/// an engine whose certificate its configured CA did not sign.
pub struct ForeignPki {
    /// The foreign CA (PEM).
    pub ca_pem: String,
    /// A client certificate signed by the foreign CA (PEM).
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl ForeignPki {
    /// Makes a CA and a client certificate in `dir` with the openssl CLI.
    ///
    /// # Panics
    /// When openssl is missing or fails.
    pub fn generate(dir: &Path) -> ForeignPki {
        for sub in ["tls", "client"] {
            std::fs::create_dir_all(dir.join(sub)).expect("a folder for certificates");
        }
        generate_certificates(dir, 0, "10.250.0.250");
        let read = |f: &str| std::fs::read_to_string(dir.join("client").join(f)).expect("a generated PEM file");
        ForeignPki { ca_pem: read("ca.pem"), cert_pem: read("cert.pem"), key_pem: read("key.pem") }
    }
}

/// A CA, a server certificate for `ip` and a client certificate, all ECDSA P-256, made
/// with the openssl CLI (3.x): `tls/` has the engine's files, `client/` a `DOCKER_CERT_PATH`.
fn generate_certificates(dir: &Path, slot: u8, ip: &str) {
    let tls = dir.join("tls");
    let client = dir.join("client");
    let cnf = tls.join("openssl.cnf");
    // Our own config: the system's defaults (e.g. CA:TRUE on every req -x509) stay out.
    let config = format!(
        "[req]\ndistinguished_name = dn\n[dn]\n\
         [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:{ip}\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
         [client]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = clientAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
    );
    std::fs::write(&cnf, config).expect("write openssl.cnf");
    let p = |path: PathBuf| path.display().to_string();
    let (cnf, ca, ca_key) = (p(cnf), p(tls.join("ca.pem")), p(tls.join("ca-key.pem")));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3"];
    let ca_subject = format!("/CN=berth test CA h{slot}");
    openssl(
        &[
            &["req", "-x509", "-config", &cnf, "-extensions", "ca"][..],
            &ec,
            &["-keyout", &ca_key, "-out", &ca, "-subj", &ca_subject],
        ]
        .concat(),
    );
    // OpenSSL 3's `req -x509 -CA`: key, certificate and signature in one command.
    let leaf = |section: &str, subject: &str, key: String, cert: String| {
        let head = ["req", "-x509", "-config", &cnf, "-extensions", section, "-CA", &ca, "-CAkey", &ca_key];
        openssl(&[&head[..], &ec, &["-keyout", &key, "-out", &cert, "-subj", subject]].concat());
    };
    leaf("server", &format!("/CN={ip}"), p(tls.join("server-key.pem")), p(tls.join("server-cert.pem")));
    leaf("client", "/CN=berth-test-client", p(client.join("key.pem")), p(client.join("cert.pem")));
    std::fs::copy(&ca, client.join("ca.pem")).expect("copy ca.pem for the client");
}

fn openssl(args: &[&str]) {
    let out = Command::new(tool("openssl"))
        .args(args)
        .env_remove("OPENSSL_CONF")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags() {
        assert_eq!(parse_tag("berth-h3-12345", PREFIX), Some((3, 12345)));
        assert_eq!(parse_tag("bh200-4194304", VETH_PREFIX), Some((200, 4194304)));
        assert_eq!(parse_tag("berth-h0-1", PREFIX), None);
        assert_eq!(parse_tag("berth-h201-1", PREFIX), None);
        assert_eq!(parse_tag("berth-h03-1", PREFIX), None);
        assert_eq!(parse_tag("berth-h3-x", PREFIX), None);
        assert_eq!(parse_tag("berth-registry-abc", PREFIX), None);
        assert_eq!(parse_tag("bridge", VETH_PREFIX), None);
    }

    #[test]
    fn names_fit_interface_limits() {
        // IFNAMSIZ is 16 with the NUL: 15 bytes at most, for the largest slot and pid.
        assert!(format!("{VETH_PREFIX}{MAX_SLOTS}-{}", 4_194_304).len() <= 15);
    }

    #[test]
    fn hashes_shim_socket_keys() {
        // The root engine's shim socket, checked on this machine (containerd 1.6).
        let key = "/var/run/docker/containerd/containerd.sock/moby/\
                   6ec1fd999ef8daaadc696c05f49b34d66359573a03149d5be28899aedca9a8d4";
        assert_eq!(sha256_hex(key), "a838839fc96eafb2759e2d91fcb110f9287ea991c8e0778b5d18776732f8a189");
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mount(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount("/tmp/plain"), "/tmp/plain");
    }
}
