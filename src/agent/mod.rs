//! The node agent: turns its node's assignment into ordered actions on its own host.
//!
//! [`local`] is the pure half: `(assignment, what the host has) -> ordered actions`. The loop
//! that holds the lease, watches the assignment and runs the actions through the drivers
//! builds on it.

pub mod heartbeat;
pub mod local;
pub mod runtime;
pub mod watchdog;
