//! What crash trials and fault tests check besides convergence: that replicas kept serving,
//! and that named volumes kept their data.
//!
//! - [`TrialRng`]: a small seeded generator, so that a trial's choices replay from its seed.
//! - [`ServingProbe`]: a thread that probes a set's replicas round after round while berth is
//!   disrupted, and reports the fewest that answered at once.
//! - [`write_volume_file`] / [`read_volume_file`]: put bytes into a named volume and read them
//!   back through the Docker archive API, by way of a helper container that mounts the volume
//!   and is never started. Copying into one of berth's own containers would be drift
//!   (`docker cp` into a managed container is replaced by the operator), and the helper carries
//!   none of berth's labels, so it is neither counted as an orphan nor watched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptions, ListContainersOptionsBuilder, RemoveContainerOptions,
    UploadToContainerOptions,
};
use futures::TryStreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::image::{ECHO_BODY, ECHO_IMAGE};

/// splitmix64: tiny, and the same sequence for the same seed on every machine.
#[derive(Clone, Debug)]
pub struct TrialRng(u64);

impl TrialRng {
    pub fn new(seed: u64) -> TrialRng {
        TrialRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The sha256 of `data`, in hex: what a trial prints and compares.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// How a [`ServingProbe`] finds what to probe.
enum Targets {
    /// The running containers of a namespace on an engine whose bridge addresses the test
    /// reaches (the local engine), listed before and after each round.
    Containers { host: String, namespace: String, netns: Option<String> },
    /// Fixed addresses (published ports).
    Fixed(Vec<SocketAddr>),
}

/// What a [`ServingProbe`] saw.
#[derive(Clone, Debug, Default)]
pub struct ServingReport {
    /// Rounds probed; every one counts towards [`Self::min_serving`].
    pub rounds: usize,
    /// Rounds in which the set of running containers changed between the list before the
    /// probes and the list after them: the rounds where a gap shows, if there is one. They
    /// count like the others: what is probed is what was running a moment before (listed just
    /// before the probes, all sent at once), and no replacement can start, become ready and
    /// let its predecessor stop within that moment.
    pub changed_rounds: usize,
    /// The fewest replicas that answered in one round.
    pub min_serving: Option<usize>,
    /// The round with the fewest, described: when (since the start), whether the containers
    /// changed in it, and who answered.
    pub min_round: String,
}

/// Probes a set's replicas (`GET /` answering the echo body) round after round on its own
/// thread until [`ServingProbe::stop`].
pub struct ServingProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ServingReport>>,
}

/// How long one probe may take: a replica that does not answer within it is not serving.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl ServingProbe {
    /// Probes every running container of `namespace` on the engine at `host` (a
    /// `DOCKER_HOST` value) at its bridge address, port 8080. The probe has a client of its
    /// own: a client's pooled connections belong to the runtime that made them.
    pub fn containers(host: &str, namespace: &str) -> ServingProbe {
        Self::start(Targets::Containers { host: host.to_string(), namespace: namespace.to_string(), netns: None })
    }

    /// [`ServingProbe::containers`] of a test host's engine: its bridge addresses are reached
    /// from inside its network namespace `netns` ([`crate::RemoteHost::name`]), which the
    /// probe's thread enters.
    pub fn containers_in_netns(host: &str, namespace: &str, netns: &str) -> ServingProbe {
        Self::start(Targets::Containers {
            host: host.to_string(),
            namespace: namespace.to_string(),
            netns: Some(netns.to_string()),
        })
    }

    /// Probes fixed addresses (e.g. published host ports on test hosts).
    pub fn addresses(addrs: Vec<SocketAddr>) -> ServingProbe {
        Self::start(Targets::Fixed(addrs))
    }

    fn start(targets: Targets) -> ServingProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("serving-probe".into())
            .spawn(move || {
                if let Targets::Containers { netns: Some(netns), .. } = &targets {
                    // Threads spawned from here (one per probe) start in it too.
                    enter_netns(netns);
                }
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                let docker = match &targets {
                    Targets::Containers { host, .. } => Some(rt.block_on(crate::engine::docker_at(host))),
                    Targets::Fixed(_) => None,
                };
                let t0 = Instant::now();
                let mut report = ServingReport::default();
                let mut last_known: Option<BTreeMap<String, SocketAddr>> = None;
                while !flag.load(Ordering::SeqCst) {
                    // While the engine does not answer (it is down), its containers are
                    // those it last listed: nobody can start or stop one meanwhile.
                    let before = rt.block_on(targets.list(docker.as_ref())).or_else(|| last_known.clone());
                    let answered = before.as_ref().map(probe_all).unwrap_or_default();
                    let after = rt.block_on(targets.list(docker.as_ref())).or_else(|| before.clone());
                    report.rounds += 1;
                    let changed = match (&before, &after) {
                        (Some(b), Some(a)) => !b.keys().eq(a.keys()),
                        _ => false,
                    };
                    report.changed_rounds += usize::from(changed);
                    let n = answered.len();
                    if report.min_serving.is_none_or(|m| n < m) {
                        report.min_serving = Some(n);
                        let probed = before.as_ref().map(|b| b.keys().map(|k| (k.clone(), answered.contains(k))));
                        report.min_round = format!(
                            "+{:.3}s{}: {n} of {} answered ({:?})",
                            t0.elapsed().as_secs_f64(),
                            if changed { " (containers changed in this round)" } else { "" },
                            before.as_ref().map_or(0, BTreeMap::len),
                            probed.map(Iterator::collect::<Vec<_>>).unwrap_or_default()
                        );
                    }
                    if after.is_some() {
                        last_known = after;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                report
            })
            .expect("a thread for the serving probe");
        ServingProbe { stop, thread: Some(thread) }
    }

    /// Stops probing and returns what it saw.
    pub fn stop(mut self) -> ServingReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().expect("stopped once").join().expect("the serving probe thread")
    }
}

impl Drop for ServingProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Targets {
    /// What to probe now: a name (container or address) and its address; `None` when the
    /// engine does not answer.
    async fn list(&self, docker: Option<&Docker>) -> Option<BTreeMap<String, SocketAddr>> {
        match self {
            Targets::Fixed(addrs) => Some(addrs.iter().map(|a| (a.to_string(), *a)).collect()),
            Targets::Containers { namespace, .. } => {
                let docker = docker?;
                let filters = HashMap::from([
                    ("label".to_string(), vec![format!("berth.dev/namespace={namespace}")]),
                    ("status".to_string(), vec!["running".to_string()]),
                ]);
                let opts = ListContainersOptionsBuilder::default().filters(&filters).build();
                let list = docker.list_containers(Some(opts)).await.ok()?;
                let running = list
                    .into_iter()
                    .filter_map(|c| {
                        let name = c.names?.first()?.trim_start_matches('/').to_string();
                        let ip = c
                            .network_settings?
                            .networks?
                            .into_values()
                            .filter_map(|n| n.ip_address)
                            .find(|ip| !ip.is_empty())?;
                        Some((name, format!("{ip}:8080").parse().ok()?))
                    })
                    .collect();
                Some(running)
            }
        }
    }
}

/// Moves the calling thread into network namespace `/var/run/netns/<name>` for good.
fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd as _;
    let path = format!("/var/run/netns/{name}");
    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    // SAFETY: setns(2) with a valid descriptor of a network namespace; it affects the
    // calling thread only.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "cannot enter {path}: {}", std::io::Error::last_os_error());
}

/// The names whose address answered `GET /` with the echo body, probed all at once.
fn probe_all(targets: &BTreeMap<String, SocketAddr>) -> BTreeSet<String> {
    std::thread::scope(|s| {
        let probes: Vec<_> = targets.iter().map(|(name, addr)| (name, s.spawn(move || serves(*addr)))).collect();
        probes.into_iter().filter_map(|(n, p)| p.join().unwrap_or(false).then(|| n.clone())).collect()
    })
}

fn serves(addr: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else { return false };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
    if s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).is_ok() && {
        let raw = String::from_utf8_lossy(&raw);
        raw.starts_with("HTTP/1.1 200") && raw.ends_with(ECHO_BODY)
    }
}

/// A created (never started) echo container that mounts `volume` at `/data`, without berth's
/// labels; removed when `f` is done with it.
async fn with_volume_helper<T>(
    docker: &Docker,
    volume: &str,
    f: impl AsyncFnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    let body = ContainerCreateBody {
        image: Some(ECHO_IMAGE.to_string()),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some("/data".into()),
                source: Some(volume.to_string()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = format!("berth-volume-helper-{}-{}", std::process::id(), rand_suffix());
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    let id = docker.create_container(Some(opts), body).await.map_err(|e| format!("create a helper: {e}"))?.id;
    let result = f(&id).await;
    let _ = docker.remove_container(&id, Some(RemoveContainerOptions { force: true, ..Default::default() })).await;
    result
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Writes `data` as `/<file>` into the named volume `volume` (which must exist, or is created
/// empty by the engine) through the archive API.
pub async fn write_volume_file(docker: &Docker, volume: &str, file: &str, data: &[u8]) -> Result<(), String> {
    let tar = tar_one_file(file, data);
    with_volume_helper(docker, volume, async |id| {
        let opts = UploadToContainerOptions { path: "/data".into(), ..Default::default() };
        docker
            .upload_to_container(id, Some(opts), bollard::body_full(tar.into()))
            .await
            .map_err(|e| format!("upload into volume {volume}: {e}"))
    })
    .await
}

/// Reads `/<file>` of the named volume `volume` through the archive API.
pub async fn read_volume_file(docker: &Docker, volume: &str, file: &str) -> Result<Vec<u8>, String> {
    with_volume_helper(docker, volume, async |id| {
        let opts = DownloadFromContainerOptions { path: format!("/data/{file}") };
        let tar: Vec<u8> = docker
            .download_from_container(id, Some(opts))
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await
            .map_err(|e| format!("download /data/{file} from volume {volume}: {e}"))?;
        untar_file(&tar, file).ok_or_else(|| format!("no file {file} in the archive of volume {volume}"))
    })
    .await
}

/// A ustar archive of one regular file.
pub fn tar_one_file(name: &str, data: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar_one_file: name too long");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut field = |at: usize, text: &str| h[at..at + text.len()].copy_from_slice(text.as_bytes());
    field(100, "0000644\0");
    field(108, "0000000\0");
    field(116, "0000000\0");
    field(124, &format!("{:011o}\0", data.len()));
    field(136, "00000000000\0");
    field(156, "0");
    field(257, "ustar\0");
    field(263, "00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The contents of the regular file named `name` (its last path component) in a tar archive.
pub fn untar_file(tar: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            return None;
        }
        let entry = String::from_utf8_lossy(&h[..100]).trim_end_matches('\0').to_string();
        let size_text = String::from_utf8_lossy(&h[124..136]).trim_matches(|c: char| c == '\0' || c == ' ').to_string();
        let size = usize::from_str_radix(&size_text, 8).ok()?;
        let body = at + 512;
        if matches!(h[156], b'0' | 0) && entry.trim_end_matches('/').rsplit('/').next() == Some(name) {
            return tar.get(body..body + size).map(<[u8]>::to_vec);
        }
        at = body + size.div_ceil(512) * 512;
    }
    None
}

/// Removes named volumes when dropped (also when the test panicked): a trial's data volume,
/// and every volume labelled with the test's namespace (berth's history volumes).
pub struct VolumeGuard {
    host: String,
    namespace: String,
    names: Vec<String>,
}

impl VolumeGuard {
    /// Volumes `names`, and those labelled `berth.dev/namespace=<namespace>`, on the engine at
    /// `host` (a `DOCKER_HOST` value).
    pub fn new(host: &str, namespace: &str, names: &[&str]) -> VolumeGuard {
        VolumeGuard {
            host: host.to_string(),
            namespace: namespace.to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let (host, namespace, mut names) = (self.host.clone(), self.namespace.clone(), self.names.clone());
        let _ = crate::rt::try_block_on(async move {
            let docker = crate::engine::docker_at(&host).await;
            let filters = HashMap::from([("label".to_string(), vec![format!("berth.dev/namespace={namespace}")])]);
            let opts = bollard::query_parameters::ListVolumesOptionsBuilder::default().filters(&filters).build();
            if let Ok(list) = docker.list_volumes(Some(opts)).await {
                names.extend(list.volumes.unwrap_or_default().into_iter().map(|v| v.name));
            }
            for name in names {
                let _ = docker.remove_volume(&name, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_survives_tar_and_untar() {
        let data = TrialRng::new(7).bytes(1000);
        let tar = tar_one_file("blob", &data);
        assert_eq!(tar.len() % 512, 0);
        assert_eq!(untar_file(&tar, "blob"), Some(data));
        assert_eq!(untar_file(&tar, "other"), None);
    }

    #[test]
    fn the_generator_replays_from_its_seed() {
        let a: Vec<u64> = (0..5).scan(TrialRng::new(42), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..5).scan(TrialRng::new(42), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        let mut r = TrialRng::new(1);
        assert!((0..100).map(|_| r.between(3, 5)).all(|n| (3..=5).contains(&n)));
    }
}
