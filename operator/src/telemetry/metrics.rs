//! Prometheus metrics. Labels are kinds and reasons only, never object names, so the series
//! count stays bounded however many sets and hosts there are.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `containerset` or `dockerhost`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    /// The error variant, e.g. `kube`, `host`, `finalizer`.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutErrorLabels {
    /// What kind of failure: `not_ready`, `did_not_stay_ready` (the revision's), or the
    /// host's (`unreachable`, `tls`, `engine`, `name_conflict`, `image_missing`), `history`,
    /// `rebuild`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// `create`, `start`, `stop`, `remove`, ...
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The HTTP method of a Docker API request.
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// The drift kind: `stopped`, `renamed`, `updated`, `exec`, `copied`, `wrongImage`, `squatter`.
    pub kind: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub docker_steps: Family<StepLabels, Counter>,
    pub docker_requests: Family<MethodLabels, Counter>,
    pub containers: Family<StateLabels, Gauge>,
    pub drift_events: Family<DriftLabels, Counter>,
    pub rollout_errors: Family<RolloutErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        });
        let docker_steps = Family::<StepLabels, Counter>::default();
        let docker_requests = Family::<MethodLabels, Counter>::default();
        let containers = Family::<StateLabels, Gauge>::default();
        let drift_events = Family::<DriftLabels, Counter>::default();
        let rollout_errors = Family::<RolloutErrorLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run, by resource kind", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by kind and error", errors.clone());
        registry.register("reconcile_duration_seconds", "Time a reconcile took", duration.clone());
        registry.register("docker_steps", "Docker operations carried out, by step", docker_steps.clone());
        registry.register("docker_requests", "Docker API requests sent, by HTTP method", docker_requests.clone());
        registry.register("managed_containers", "Managed containers last observed, by state", containers.clone());
        registry.register(
            "drift_events",
            "Drift found on managed containers (replaced, or reported once), by kind",
            drift_events.clone(),
        );
        registry.register(
            "rollout_errors",
            "Rollouts that stopped, by kind: the revision failed, or a host or history failed",
            rollout_errors.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            docker_steps,
            docker_requests,
            containers,
            drift_events,
            rollout_errors,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, kind: &str, took: Duration) {
        let l = KindLabels { kind: kind.to_string() };
        self.reconciles.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: &str, error: &str) {
        self.errors.get_or_create(&ErrorLabels { kind: kind.to_string(), error: error.to_string() }).inc();
    }

    pub fn drifted(&self, kind: crate::engine::Drift) {
        self.drift_events.get_or_create(&DriftLabels { kind: kind.as_str().to_string() }).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Metrics {
    /// A rollout stopped; `kind` from the fleet runner's error or failure kind.
    pub fn rollout_stopped(&self, kind: &str) {
        self.rollout_errors.get_or_create(&RolloutErrorLabels { kind: kind.to_string() }).inc();
    }

    /// A step of kind `step` ([`crate::engine::Step::kind`]) was carried out.
    pub fn step_finished(&self, step: &str) {
        self.docker_steps.get_or_create(&StepLabels { step: step.to_string() }).inc();
    }
}
