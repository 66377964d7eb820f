use std::path::PathBuf;

use super::{EXIT_ERROR, EXIT_OK};
use crate::synth::{self, Shape};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hypervisors (a witness is added when that makes the store count odd).
    #[arg(long, default_value_t = 32)]
    pub nodes: usize,
    /// VMs, each with its own DRBD volume.
    #[arg(long, default_value_t = 1000)]
    pub vms: usize,
    /// Every how many VMs one gets a floating IP (2 = half of them).
    #[arg(long, default_value_t = 2)]
    pub vip_every: usize,
    /// Directory to write the repository into (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> u8 {
    let shape = Shape {
        hypervisors: args.nodes,
        vms: args.vms,
        vip_every: args.vip_every,
    };
    match synth::write_repo(&shape, &args.out) {
        Ok(n) => {
            println!("wrote {n} files to {}", args.out.display());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("rampart generate: {e}");
            EXIT_ERROR
        }
    }
}
