//! berth: converge Docker hosts to declared containers by replacing them, never mutating.
//!
//! Layers, bottom to top (each uses only those below it; `tests/layers.rs` checks it, and
//! `docs/architecture.md` is the map):
//!
//! - [`engine`]: the pure planner, `(desired, observed) -> Plan`, rollout waves, history
//!   decisions, and the simulated host its laws are checked against;
//! - [`target`]: plain data of a run: host targets, endpoints, per-set runtime and rollout facts;
//! - [`input`]: reading YAML files into validated desired state per host;
//! - [`docker`]: the adapter that connects to, observes and executes plans on engines (bollard);
//! - [`telemetry`]: metrics, logs and the operator's HTTP endpoints;
//! - [`fleet`]: a run over many hosts: prepare, waves and gates, rollback, history records;
//! - [`rehearsal`]: all of `berth plan` in memory, with the planner's laws checked (fuzzing);
//! - [`controller`]: `berth operator`, the in-cluster front end;
//! - [`cli`]: the `berth` command line.

pub mod cli;
pub mod controller;
pub mod docker;
pub mod engine;
pub mod fleet;
pub mod input;
pub mod rehearsal;
pub mod target;
pub mod telemetry;
