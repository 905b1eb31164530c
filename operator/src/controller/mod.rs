//! `berth operator`: the in-cluster front end. The engine is the same as the CLI's; this is
//! one more adapter, from the Kubernetes API instead of files.
//!
//! - [`set`]: the ContainerSet controller (reconcile, finalizer, status, Events);
//! - [`depends`]: `dependsOn`, judged from the status of the sets depended on;
//! - [`host`]: the DockerHost controller (probe, status);
//! - [`pool`]: kept Docker connections, and engine events as reconcile triggers;
//! - [`leader`]: Lease-based leader election, so several replicas can run;
//! - [`status`]: status and conditions as a pure function;
//! - [`written`]: the status last written, while the watch cache has not caught up.
//!
//! Re-triggers of a set: its own changes; changes of a DockerHost it selects; changes of a
//! Secret or ConfigMap it references (a changed value is a new revision); Docker events of its
//! containers; a change of a set it depends on that changes whether that set satisfies it
//! (`dependsOn`); and a periodic resync as the safety net.

pub mod depends;
pub mod host;
pub mod leader;
pub mod pool;
pub mod revisions;
pub mod set;
pub mod status;
pub mod written;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_crd::{ContainerSet, DockerHost};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Store;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio_stream_shim::UnboundedReceiverStream;

use crate::telemetry::http::{NotReady, Readiness};
use crate::telemetry::{self, Metrics};
use pool::HostPool;

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "berth";

/// Errors of a reconcile; the variant names are the `error` label of the metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("input: {0}")]
    Input(#[from] crate::input::InputErrors),
    #[error("cleanup: {0}")]
    Cleanup(String),
    #[error("the operator is stopping: its DockerHost cache is gone")]
    Stopped,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Input(_) => "input",
            Error::Cleanup(_) => "cleanup",
            Error::Stopped => "stopped",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub pool: Arc<HostPool>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Every DockerHost in the watched namespaces, kept by a watch (a reconcile reads these
    /// instead of listing them).
    pub hosts: Store<DockerHost>,
    /// Every ContainerSet in the watched namespaces: the controller's own cache (a reconcile
    /// reads the sets its `dependsOn` names from it).
    pub sets: Store<ContainerSet>,
    /// ContainerSet status as berth last wrote it (see [`written`]).
    pub written: written::Written<berth_crd::ContainerSetStatus>,
    probed: Mutex<HashSet<String>>,
    /// Consecutive failed reconciles per object, for exponential backoff.
    failures: Mutex<std::collections::HashMap<String, u32>>,
    /// Managed containers per host and state, last probed; summed into a gauge.
    containers: Mutex<std::collections::HashMap<String, std::collections::BTreeMap<String, i64>>>,
}

impl Context {
    /// Note that a DockerHost (`namespace/name`) has been probed at least once.
    pub fn probed(&self, host: &str) {
        self.probed.lock().expect("never poisoned").insert(host.to_string());
    }

    /// Backoff after a failed reconcile of `key`: 2 s, 4 s, … up to 5 minutes.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().expect("never poisoned");
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(2u64.saturating_pow((*n).min(9))).min(Duration::from_secs(300))
    }

    /// A reconcile of `key` succeeded: the next failure starts the backoff afresh.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("never poisoned").remove(key);
    }

    /// Record a host's managed containers by state and refresh the gauge across hosts.
    pub fn count_containers(&self, host: &str, by_state: std::collections::BTreeMap<String, i64>) {
        let mut all = self.containers.lock().expect("never poisoned");
        all.insert(host.to_string(), by_state);
        let mut total: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for counts in all.values() {
            for (state, n) in counts {
                *total.entry(state.as_str()).or_default() += n;
            }
        }
        self.metrics.containers.clear();
        for (state, n) in total {
            self.metrics
                .containers
                .get_or_create(&crate::telemetry::metrics::StateLabels { state: state.to_string() })
                .set(n);
        }
    }
}

/// How `berth operator` runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch only these namespaces (all when empty).
    pub namespaces: Vec<String>,
    pub http_addr: SocketAddr,
    pub lease: leader::LeaseConfig,
}

struct Ready {
    leading: Arc<std::sync::atomic::AtomicBool>,
    synced: Arc<std::sync::atomic::AtomicBool>,
    hosts: Store<DockerHost>,
    ctx: Arc<Context>,
}

impl Readiness for Ready {
    fn ready(&self) -> Result<(), NotReady> {
        // A standby is ready: ready to take over. The leader is ready once it sees its world.
        if !self.leading.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        if !self.synced.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(NotReady::NotSynced);
        }
        let probed = self.ctx.probed.lock().expect("never poisoned");
        let missing: Vec<String> = self
            .hosts
            .state()
            .iter()
            .map(|h| format!("{}/{}", h.namespace().unwrap_or_default(), h.name_any()))
            .filter(|k| !probed.contains(k))
            .collect();
        if missing.is_empty() { Ok(()) } else { Err(NotReady::HostsNotProbed(missing)) }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Run until SIGTERM/SIGINT or until leadership is lost.
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = mpsc::unbounded_channel::<ObjectRef<ContainerSet>>();
    let wake_dependents = tx.clone();
    let reporter = Reporter { controller: "berth".into(), instance: Some(opts.lease.identity.clone()) };

    // One namespace at most for now; several watch streams per kind would need merging.
    let ns = match opts.namespaces.as_slice() {
        [] => None,
        [one] => Some(one.as_str()),
        _ => anyhow::bail!("--namespace may be given once (or not at all, for every namespace)"),
    };
    let sets: Api<ContainerSet> = api(&client, ns);
    let hosts: Api<DockerHost> = api(&client, ns);
    let secrets: Api<Secret> = api(&client, ns);
    let config_maps: Api<ConfigMap> = api(&client, ns);

    // One watch of the DockerHosts feeds both the cache reconciles read and the set triggers,
    // in that order, so a set woken by a host change sees that change.
    let (host_cache, host_writer) = reflector::store::<DockerHost>();
    let mut placement = PlacementChanges::default();
    let host_triggers =
        reflector(host_writer, watcher(hosts.clone(), watcher::Config::default())).try_filter_map(move |event| {
            futures::future::ready(Ok(match event {
                watcher::Event::Apply(h) | watcher::Event::InitApply(h) => placement.applied(&h).then_some(h),
                watcher::Event::Delete(h) => {
                    placement.deleted(&h);
                    Some(h)
                }
                watcher::Event::InitDone => {
                    placement.synced();
                    None
                }
                watcher::Event::Init => None,
            }))
        });

    // The cache of sets holds 10k objects at fleet scale: without their managedFields (and a
    // client-side apply's copy of the spec), which no reconcile reads.
    let (set_cache, set_writer) = reflector::store::<ContainerSet>();

    let ctx = Arc::new(Context {
        client: client.clone(),
        pool: HostPool::new(tx, metrics.clone()),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        hosts: host_cache,
        sets: set_cache.clone(),
        written: written::Written::default(),
        probed: Mutex::new(HashSet::new()),
        containers: Mutex::new(std::collections::HashMap::new()),
        failures: Mutex::new(std::collections::HashMap::new()),
    });

    let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let host_controller = Controller::new(hosts.clone(), watcher::Config::default());
    let ready =
        Ready { leading: leading.clone(), synced: synced.clone(), hosts: host_controller.store(), ctx: ctx.clone() };
    telemetry::http::serve(opts.http_addr, metrics.clone(), Arc::new(ready)).await?;

    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &opts.lease.namespace);
    tracing::info!(identity = %opts.lease.identity, lease = %opts.lease.name, "waiting to lead");
    leader::acquire(&lease_api, &opts.lease).await;
    leading.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!(identity = %opts.lease.identity, "leading: reconciling");

    // A short debounce lets a burst settle (`docker rm -f` emits kill, die and destroy) before
    // the host is looked at. Engine events are throttled per set in the pool, so a set that
    // cannot converge is not retried in a tight loop; a longer debounce would delay every heal.
    // Bounded concurrency: at 10k sets, an unbounded controller starts every reconcile at once
    // and holds all their inputs and connections in memory together.
    //
    // A set whose change changes what the sets depending on it make of it (it turned Ready,
    // completed, got a new generation, went away) wakes them, from the one watch of the sets
    // and after the cache took the change in, so that they see it. (A second watch of the sets
    // through `Controller::watches` would list every set twice, and its trigger could overtake
    // the cache's update: the dependent would see the old status and wait for its retry;
    // `reconcile_all_on` would wake 10k sets for one set's change.)
    let mut dependents = depends::Dependents::default();
    let set_stream = reflector(set_writer, watcher(sets, watcher::Config::default()).modify(slim))
        .inspect_ok(move |event| {
            for dependent in dependents.on_event(event) {
                tracing::debug!(set = %dependent, "woken: a set it depends on changed");
                // The receiver lives as long as the controller; a send after it ended is moot.
                let _ = wake_dependents.send(dependent);
            }
        })
        .applied_objects();
    let set_controller = Controller::for_stream(set_stream, set_cache).with_config(
        kube::runtime::controller::Config::default().debounce(Duration::from_millis(200)).concurrency(SET_CONCURRENCY),
    );
    let set_store = set_controller.store();
    let store_for_hosts = set_store.clone();
    let store_for_secrets = set_store.clone();
    let store_for_cms = set_store.clone();
    let set_controller = set_controller
        .watches_stream(host_triggers, move |host: DockerHost| sets_selecting(&store_for_hosts, &host))
        .watches(secrets, watcher::Config::default(), move |s: Secret| {
            sets_referencing(&store_for_secrets, &s.metadata, RefKind::Secret)
        })
        .watches(config_maps, watcher::Config::default(), move |c: ConfigMap| {
            sets_referencing(&store_for_cms, &c.metadata, RefKind::ConfigMap)
        })
        .reconcile_on(UnboundedReceiverStream(rx))
        .shutdown_on_signal();

    let sets_run = set_controller.run(set::reconcile, set::error_policy, ctx.clone()).for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "containerset controller");
        }
    });
    let hosts_run = host_controller
        .shutdown_on_signal()
        .run(host::reconcile, host::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "dockerhost controller");
            }
        });
    let mark_synced = async {
        set_store.wait_until_ready().await.ok();
        synced.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!("watches synced");
        futures::future::pending::<()>().await
    };
    // Losing the Lease drops the controllers with their reconciles in flight (see lead_while).
    let leading_run =
        leader::lead_while(leader::hold(&lease_api, &opts.lease), futures::future::join(sets_run, hosts_run));
    tokio::select! {
        r = leading_run => match r {
            Some(_) => tracing::info!("shutting down"),
            None => anyhow::bail!(
                "lost the lease {}: another replica leads now; exiting so that only one acts",
                opts.lease.name
            ),
        },
        _ = mark_synced => {}
    }
    Ok(())
}

/// What the cache keeps of a set: no managedFields, no client-side apply annotation.
fn slim(cs: &mut ContainerSet) {
    cs.metadata.managed_fields = None;
    if let Some(a) = cs.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// How many ContainerSet reconciles run at once.
pub const SET_CONCURRENCY: u16 = 32;

/// Which DockerHost changes can change a set's reconcile: its labels (placement), its spec
/// (endpoint, TLS, cordon, policy; `metadata.generation`), whether it is Ready (a host that
/// comes back), and its deletion. A probe's other status updates (last seen, container count,
/// every minute on every host) are not: re-reconciling every set on the host for them would
/// cost thousands of reconciles a minute at fleet scale.
///
/// Until the first list is complete, no host wakes anything: every set is reconciled at start
/// anyway, and mapping 1k hosts onto 10k sets then would cost 10M selector matches.
#[derive(Default)]
struct PlacementChanges {
    seen: std::collections::HashMap<ObjectRef<DockerHost>, u64>,
    synced: bool,
}

impl PlacementChanges {
    fn fingerprint(host: &DockerHost) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        host.metadata.labels.hash(&mut h);
        host.metadata.generation.hash(&mut h);
        // Without a generation (an API server that does not set it), the spec itself.
        serde_json::to_string(&host.spec).unwrap_or_default().hash(&mut h);
        let ready = host.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        ready.map(|c| c.status.as_str()).hash(&mut h);
        h.finish()
    }

    /// Whether this version of `host` differs in what matters from the last one seen (and the
    /// first list is complete).
    fn applied(&mut self, host: &DockerHost) -> bool {
        let print = Self::fingerprint(host);
        self.seen.insert(ObjectRef::from(host), print) != Some(print) && self.synced
    }

    /// The first list is complete: from now on, changes wake sets.
    fn synced(&mut self) {
        self.synced = true;
    }

    fn deleted(&mut self, host: &DockerHost) {
        self.seen.remove(&ObjectRef::from(host));
    }
}

fn sets_selecting(store: &Store<ContainerSet>, host: &DockerHost) -> Vec<ObjectRef<ContainerSet>> {
    let labels = host.metadata.labels.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|cs| cs.namespace() == host.namespace())
        .filter(|cs| Selector::try_from(cs.spec.host_selector.clone()).is_ok_and(|s| s.matches(&labels)))
        .map(|cs| ObjectRef::from(cs.as_ref()))
        .collect()
}

#[derive(Clone, Copy)]
enum RefKind {
    Secret,
    ConfigMap,
}

fn sets_referencing(
    store: &Store<ContainerSet>,
    meta: &kube::api::ObjectMeta,
    kind: RefKind,
) -> Vec<ObjectRef<ContainerSet>> {
    let name = meta.name.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|cs| cs.metadata.namespace == meta.namespace)
        .filter(|cs| {
            let t = &cs.spec.template;
            let env = t.env.iter().filter_map(|e| e.value_from.as_ref());
            match kind {
                RefKind::Secret => {
                    t.image_pull_secrets.iter().any(|s| s.name == name)
                        || env.clone().any(|v| v.secret_key_ref.as_ref().is_some_and(|r| r.name == name))
                }
                RefKind::ConfigMap => {
                    env.clone().any(|v| v.config_map_key_ref.as_ref().is_some_and(|r| r.name == name))
                }
            }
        })
        .map(|cs| ObjectRef::from(cs.as_ref()))
        .collect()
}

/// How long a Lease claim holds by default.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// `tokio::sync::mpsc::UnboundedReceiver` as a `Stream`, without pulling in tokio-stream.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct UnboundedReceiverStream<T>(pub tokio::sync::mpsc::UnboundedReceiver<T>);

    impl<T> futures::Stream for UnboundedReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(group: &str, ready: &str, containers: i64) -> DockerHost {
        serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
            "metadata": {"name": "h", "namespace": "ns", "generation": 1, "labels": {"group": group}},
            "spec": {"endpoint": "unix:///run/h.sock"},
            "status": {"managedContainers": containers, "lastSeen": format!("2026-01-01T00:{containers:02}:00Z"),
                       "conditions": [{"type": "Ready", "status": ready, "reason": "R", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .expect("a DockerHost")
    }

    #[test]
    fn only_placement_readiness_and_deletion_of_a_host_wake_its_sets() {
        let mut changes = PlacementChanges::default();
        assert!(!changes.applied(&host("web", "True", 0)), "the first list wakes nothing");
        changes.synced();
        assert!(changes.applied(&host("web", "False", 0)), "after it, a change does");
        assert!(changes.applied(&host("web", "True", 0)));
        assert!(!changes.applied(&host("web", "True", 7)), "a probe's count and last-seen: no");
        assert!(changes.applied(&host("api", "True", 7)), "relabelled: placement may change");
        assert!(changes.applied(&host("api", "False", 7)), "down");
        assert!(changes.applied(&host("api", "True", 7)), "back");
        let mut moved = host("api", "True", 7);
        moved.spec.endpoint = "unix:///run/other.sock".into();
        moved.metadata.generation = Some(2);
        assert!(changes.applied(&moved), "a new endpoint");
        changes.deleted(&moved);
        assert!(changes.applied(&moved), "re-created after deletion: seen afresh");
    }
}
