//! berth: converge Docker hosts to declared containers by replacing them, never mutating.
//!
//! - [`engine`]: the pure planner, `(desired, observed) -> Plan`;
//! - [`docker`]: the adapter that observes hosts and executes plans through bollard;
//! - [`input`]: reading YAML files into validated desired state (the standalone front end);
//! - [`rehearsal`]: all of `berth plan` in memory, with the planner's laws checked (fuzzing);
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
