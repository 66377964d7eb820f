//! Rampart: keeps clusters of virtualization hosts highly available from YAML manifests in git.
//!
//! The modules follow the data flow of `DESIGN.md`:
//! - [`source`]: where manifests come from (a directory, a git revision);
//! - [`manifest`]: the manifest kinds, loading, validation and JSON Schemas;
//! - [`diff`]: what changes between two revisions;
//! - [`cli`]: the `rampart` command.

pub mod agent;
pub mod api;
pub mod cli;
pub mod controller;
pub mod demo;
pub mod diff;
pub mod drivers;
pub mod invariants;
pub mod manifest;
pub mod model;
mod par;
pub mod planner;
pub mod render;
pub mod simulator;
pub mod source;
pub mod store;
pub mod synth;
