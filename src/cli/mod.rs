//! The `rampart` command line. Each subcommand parses its arguments, calls into the library
//! and prints; no decision is made here.

mod admin;
mod daemon;
mod demo;
mod diff;
mod drbd_handler;
mod generate;
mod schema;
mod simulate;
mod validate;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit status of a command that compares or checks: 0 clean, 1 findings, 2 could not run.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FINDINGS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "rampart",
    version,
    about = "Keeps clusters of virtualization hosts highly available from manifests in git",
    long_about = "Rampart reconciles nodes, fence devices, DRBD volumes, libvirt VMs and floating IPs \
                  from YAML manifests kept in git. See README.md for a tour."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an in-process cluster on the manifests (simulated hosts), kill a hypervisor, watch it fail over.
    Demo(demo::Args),
    /// Check manifests: schema, references, placement, fencing, quorum, secrets.
    Validate(validate::Args),
    /// Write the JSON Schemas of the manifest kinds.
    Schema(schema::Args),
    /// Show what a new revision of the manifests changes.
    Diff(diff::Args),
    /// What if a node dies? Run the planner and simulated hosts step by step.
    Simulate(simulate::Args),
    /// Run a node's agent: hold its lease, converge its host to its assignment.
    Agent(daemon::AgentArgs),
    /// Run a controller: fetch manifests from git, plan, fence, assign. One of them leads.
    Controller(daemon::ControllerArgs),
    /// The cluster at a glance: nodes and leases, leader, revision, VMs, volumes, addresses, pending steps.
    Status(admin::StatusArgs),
    /// Freeze placement (on) or let it move again (off), without editing git.
    Maintenance(admin::MaintenanceArgs),
    /// Move a node's work off it and give it no new work.
    Drain(admin::DrainArgs),
    /// Let a drained node take work again.
    Undrain(admin::DrainArgs),
    /// Fencing done by hand.
    #[command(subcommand)]
    Fence(FenceCommand),
    /// Generate a synthetic cluster repository (for benchmarks and experiments).
    #[command(hide = true)]
    Generate(generate::Args),
    /// DRBD's fence-peer handler: have the cluster fence the lost peer; exit 7 once it is off.
    DrbdFencePeer(drbd_handler::Args),
    /// DRBD's unfence-peer handler: the peer is back and in sync; withdraw the fence request.
    DrbdUnfencePeer(drbd_handler::Args),
}

#[derive(Debug, Subcommand)]
pub enum FenceCommand {
    /// Tell the cluster a lost node was powered off by hand, so its work may move.
    Confirm(admin::FenceConfirmArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Color {
    #[default]
    Auto,
    Always,
    Never,
}

impl Color {
    pub fn enabled(self) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    let code = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Schema(a) => schema::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Status(a) => admin::status(a),
        Command::Agent(a) => daemon::agent(a),
        Command::Controller(a) => daemon::controller(a),
        Command::Maintenance(a) => admin::maintenance(a),
        Command::Drain(a) => admin::drain(a, true),
        Command::Undrain(a) => admin::drain(a, false),
        Command::Fence(FenceCommand::Confirm(a)) => admin::fence_confirm(a),
        Command::DrbdFencePeer(a) => drbd_handler::fence_peer(a),
        Command::DrbdUnfencePeer(a) => drbd_handler::unfence_peer(a),
    };
    ExitCode::from(code)
}

/// Print a JSON value on stdout.
pub(crate) fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("rampart: cannot render JSON: {e}"),
    }
}
