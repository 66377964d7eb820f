//! Simulation: simulated hosts and a deterministic, step-by-step run of the real planner and
//! the real agent logic over them, in virtual time.
//!
//! Everything here is a simulation and named so: [`SimWorld`] holds simulated hosts (DRBD
//! roles and disk states, VMs, addresses, power, network reachability, fence devices that can
//! be made to fail); [`Engine`] runs rounds of "observe, plan, fence, assign, converge" over
//! it. `rampart simulate`, the scenario and property tests use it; the demo runs the same
//! planner and agent logic as concurrent loops instead.

mod engine;
mod world;

pub use engine::{steady_state, Engine, NodeActions, Snapshot, Step};
pub use world::{status_table, SimNode, SimWorld};
