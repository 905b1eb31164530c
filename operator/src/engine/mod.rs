//! The engine: the pure heart of berth.
//!
//! [`plan::plan_host`] takes what should run on a host ([`model::DesiredSet`]) and what runs
//! there ([`model::ObservedContainer`]) and returns the steps between the two. No I/O happens
//! here: observing is the Docker adapter's job before, executing its job after. That keeps
//! every decision testable exhaustively ([`sim`] is a host in memory for that) and cheap
//! enough to plan a fleet.

pub mod diff;
pub mod history;
pub mod image_ref;
pub mod model;
pub mod order;
pub mod pin;
pub mod plan;
pub mod rollout;
pub mod sim;

pub use model::*;
pub use plan::{Action, Change, HostPlan, Reason, Scope, SetPlan, Step, plan_host};

#[cfg(test)]
mod laws;
#[cfg(test)]
mod task_laws;
