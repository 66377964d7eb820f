use std::path::PathBuf;
use std::time::Duration;

use super::simulate::load_desired;
use super::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::demo::{self, DemoOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifests to run.
    #[arg(value_name = "PATH", default_value = "manifests")]
    pub path: PathBuf,
    /// The hypervisor to kill (default: the one running the most fail-over VMs).
    #[arg(long, value_name = "NODE")]
    pub kill: Option<String>,
    /// Multiply every timing of the manifests by this (0.2 runs five times faster; 1 is real time).
    #[arg(long, default_value_t = 0.2)]
    pub timescale: f64,
    /// Give up waiting for each phase after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

pub fn run(args: Args) -> u8 {
    let desired = match load_desired(&args.path) {
        Ok((d, _)) => d,
        Err(c) => return c,
    };
    if !(args.timescale > 0.0 && args.timescale <= 10.0) {
        eprintln!("rampart demo: --timescale must be more than 0 and at most 10");
        return EXIT_ERROR;
    }
    if let Some(k) = &args.kill {
        if !desired.nodes.get(k).is_some_and(|n| n.is_hypervisor()) {
            eprintln!(
                "rampart demo: `{k}` is not a hypervisor; hypervisors are {}",
                desired
                    .nodes
                    .values()
                    .filter(|n| n.is_hypervisor())
                    .map(|n| n.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return EXIT_ERROR;
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rampart demo: cannot start the runtime: {e}");
            return EXIT_ERROR;
        }
    };
    let outcome = rt.block_on(demo::run(
        desired,
        DemoOptions {
            kill: args.kill,
            timescale: args.timescale,
            timeout: Duration::from_secs(args.timeout),
        },
    ));
    if outcome.violations.is_empty() {
        println!("invariants S1-S6 held throughout");
    } else {
        println!("INVARIANT VIOLATIONS:");
        for v in &outcome.violations {
            println!("  {v}");
        }
    }
    if !outcome.not_recovered.is_empty() {
        println!("not recovered: {}", outcome.not_recovered.join(", "));
    }
    if outcome.success() {
        println!("demo succeeded: converged, failed over, every invariant held");
        EXIT_OK
    } else {
        println!("demo FAILED");
        EXIT_FINDINGS
    }
}
