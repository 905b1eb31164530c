//! `berth_tests`: the harness shared by berth's integration tests.
//!
//! berth's tests run against real Docker engines and never skip: a missing engine, image,
//! binary or registry is a failure with a message saying how to provide it. This crate
//! gathers what every test needs so that no test re-invents it:
//!
//! - [`engine`]: a bollard client for the local engine, negotiated down to its API version.
//! - [`image`]: makes sure the locally built echo test image exists (built once per machine).
//! - [`servers`]: the real-servers image (PostgreSQL, Redis, nginx from Debian's packages),
//!   built offline once per machine and cached.
//! - [`berth_cli`]: finds (or builds) the `berth` binary and runs or spawns it.
//! - [`proxy`]: a counting proxy in front of an engine socket, to count API calls.
//! - [`registry`]: a private registry (Debian's `docker-registry`) with optional auth.
//! - [`forward`]: the registry's loopback address, reachable inside a test host's namespace.
//! - [`link`]: a TCP link to a server (the fake Kubernetes API) that a test cuts and restores.
//! - [`namespace`]: unique namespaces per test and cleanup of their containers.
//! - [`trials`]: seeded choices, a serving probe, and data written into and read out of volumes.
//! - [`wait`]: polling for conditions with deadlines (tests never sleep instead) and HTTP probes.

pub mod berth_cli;
pub mod busybox_image;
pub mod cluster;
pub mod engine;
pub mod events;
pub mod fixtures;
pub mod forward;
pub mod image;
pub mod link;
pub mod lock;
pub mod metrics;
pub mod namespace;
pub mod paths;
pub mod proxy;
pub mod registry;
mod rt;
pub mod servers;
pub mod testbed;
pub mod trials;
pub mod wait;

pub use berth_cli::{BerthOutput, BerthProcess, berth, berth_async, berth_bin, berth_command, spawn_berth};
pub use cluster::{
    OperatorLog, fake_cluster, ready_at_new_revision, spawn_operator, spawn_operator_logging, spawn_operator_via,
};
pub use engine::{docker, docker_at, docker_host, local_socket_path};
pub use events::{action_and_name, container_events};
pub use fixtures::{EchoSet, container_addr, containers_in, free_port, names_ids_states, write_documents};
pub use image::{ECHO_BODY, ECHO_IMAGE, ECHO_PORT, ensure_echo_image};
pub use link::Link;
pub use metrics::{metric_value, set_reconciles};
pub use namespace::{NamespaceGuard, cleanup_containers, unique_ns};
pub use proxy::{CountingProxy, Request};
pub use registry::{Registry, TagGuard, basic_auth, push_image};
pub use servers::{PGDATA, POSTGRES_START, ensure_servers_image};
pub use testbed::{ForeignPki, HostOptions, RemoteHost, StartTimings, cleanup_stale};
pub use trials::{ServingProbe, ServingReport, TrialRng, VolumeGuard, read_volume_file, sha256_hex, write_volume_file};
pub use wait::{eventually, eventually_sync, http_get, http_request};
pub mod health_images;
pub mod inspect_stall;
pub mod stall;
