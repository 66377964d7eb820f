use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::{print_json, Output, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::manifest;
use crate::model::Desired;
use crate::simulator::{status_table, Engine, Snapshot, Step};
use crate::source::fs::Paths;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifests (a directory or files).
    #[arg(value_name = "PATH", default_value = "manifests")]
    pub path: PathBuf,
    /// Start from this saved state (`rampart status -o yaml`) instead of the steady state.
    #[arg(long, value_name = "FILE")]
    pub observed: Option<PathBuf>,
    /// Crash this node (power off, everything on it gone). Repeatable.
    #[arg(long, value_name = "NODE")]
    pub fail: Vec<String>,
    /// Power this node back on with an empty host. Repeatable.
    #[arg(long, value_name = "NODE")]
    pub recover: Vec<String>,
    /// Cut this node off from the store and its peers; it keeps running. Repeatable.
    #[arg(long, value_name = "NODE")]
    pub partition: Vec<String>,
    /// Make this fence device fail (a dead BMC). Repeatable.
    #[arg(long, value_name = "DEVICE")]
    pub fence_fails: Vec<String>,
    /// Drain this node (move its work off). Repeatable.
    #[arg(long, value_name = "NODE")]
    pub drain: Vec<String>,
    /// Stop after this many rounds.
    #[arg(long, default_value_t = 60)]
    pub max_steps: usize,
    /// With `--observed`: also print the rounds in which the hosts settle before the faults.
    #[arg(short, long)]
    pub verbose: bool,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    steps: &'a [Step],
    placement: std::collections::BTreeMap<String, Vec<String>>,
    violations: Vec<String>,
}

/// Load and validate manifests for a command that needs a valid revision; print the
/// diagnostics and give the exit code when they don't validate. The report comes along for a
/// one-shot caller to leave unfreed (see `run`).
pub(crate) fn load_desired(path: &PathBuf) -> Result<(Desired, manifest::Report), u8> {
    if std::fs::symlink_metadata(path).is_err() {
        eprintln!("rampart: {}: no such file or directory", path.display());
        return Err(EXIT_ERROR);
    }
    let (report, desired) = Desired::load(&Paths::new([path.clone()]));
    match desired {
        Ok(d) => Ok((d, report)),
        Err(e) => {
            for d in report.rendered() {
                eprintln!("{}", d.to_text());
            }
            eprintln!("rampart: {}: {e}", path.display());
            Err(EXIT_ERROR)
        }
    }
}

fn node_known(e: &Engine, n: &str) -> Result<(), u8> {
    if e.world.nodes.contains_key(n) {
        Ok(())
    } else {
        eprintln!(
            "rampart simulate: no node `{n}`; nodes are {}",
            e.world.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        Err(EXIT_ERROR)
    }
}

pub fn render_step(s: &Step) -> String {
    let mut out = String::new();
    writeln!(out, "── {} ──", s.at).unwrap();
    for (req, ok, err) in &s.fence_results {
        let devs: Vec<&str> = req.devices.iter().map(|d| d.device.as_str()).collect();
        match (ok, err) {
            (true, _) => writeln!(
                out,
                "  fence {} level {} via {}: confirmed off",
                req.node,
                req.level,
                devs.join("+")
            ),
            (false, e) => writeln!(
                out,
                "  fence {} level {} via {}: FAILED ({})",
                req.node,
                req.level,
                devs.join("+"),
                e.as_deref().unwrap_or("")
            ),
        }
        .unwrap();
    }
    for n in &s.joined {
        writeln!(out, "  {n}: joins (takes its first lease)").unwrap();
    }
    for a in &s.actions {
        if let Some(g) = a.took_generation {
            writeln!(out, "  {}: takes assignment generation {g}", a.node).unwrap();
        }
        if a.self_demoted {
            writeln!(
                out,
                "  {}: cannot renew its lease: stops everything",
                a.node
            )
            .unwrap();
        }
        for d in &a.done {
            writeln!(out, "  {}: {d}", a.node).unwrap();
        }
        if let Some((act, err)) = &a.failed {
            writeln!(out, "  {}: {act} FAILED: {err}", a.node).unwrap();
        }
    }
    for p in &s.plan.pending {
        writeln!(out, "  pending {}: {}", p.subject, p.wait).unwrap();
    }
    for v in &s.violations {
        writeln!(out, "  VIOLATION {v}").unwrap();
    }
    out
}

pub fn run(args: Args) -> u8 {
    let desired = match load_desired(&args.path) {
        Ok((d, report)) => {
            // A one-shot command: the process's exit frees the parsed manifests faster than
            // their destructors would.
            std::mem::forget(report);
            d
        }
        Err(code) => return code,
    };
    let mut settle_rounds = 0;
    let mut engine = match &args.observed {
        Some(f) => {
            let text = match std::fs::read_to_string(f) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("rampart simulate: cannot read {}: {e}", f.display());
                    return EXIT_ERROR;
                }
            };
            match serde_yaml::from_str::<Snapshot>(&text) {
                Ok(s) => Engine::from_snapshot(desired, &s),
                Err(e) => {
                    eprintln!("rampart simulate: {}: {e}", f.display());
                    return EXIT_ERROR;
                }
            }
        }
        None => {
            let (e, rounds) = Engine::steady(desired);
            settle_rounds = rounds;
            e
        }
    };
    for n in args
        .fail
        .iter()
        .chain(&args.recover)
        .chain(&args.partition)
        .chain(&args.drain)
    {
        if let Err(c) = node_known(&engine, n) {
            return c;
        }
    }
    let text = args.output == Output::Text;
    // From a saved state the hosts first settle (simulated round by round); the steady
    // state is settled by construction.
    let settle = if args.observed.is_some() {
        engine.run_until_stable(args.max_steps)
    } else {
        Vec::new()
    };
    if text {
        if args.verbose {
            for s in &settle {
                print!("{}", render_step(s));
            }
        }
        println!(
            "start: {} after {} rounds\n{}",
            if args.observed.is_some() {
                "from the observed state"
            } else {
                "steady state"
            },
            if args.observed.is_some() {
                settle.len()
            } else {
                settle_rounds
            },
            status_table(&engine.desired, &engine.world)
        );
    }
    for d in &args.fence_fails {
        engine.world.failing_fence_devices.insert(d.clone());
    }
    for n in &args.drain {
        engine.operations.drained.insert(n.clone());
    }
    for n in &args.fail {
        engine.fail(n);
    }
    for n in &args.partition {
        engine.partition(n);
    }
    for n in &args.recover {
        engine.recover(n);
    }
    let steps = engine.run_until_stable(args.max_steps);
    let violations: Vec<String> = engine
        .violations
        .iter()
        .map(|(t, v)| format!("{t}: {v}"))
        .collect();
    match args.output {
        Output::Text => {
            let what: Vec<String> = args
                .fail
                .iter()
                .map(|n| format!("fail {n}"))
                .chain(args.partition.iter().map(|n| format!("partition {n}")))
                .chain(args.recover.iter().map(|n| format!("recover {n}")))
                .chain(args.drain.iter().map(|n| format!("drain {n}")))
                .chain(
                    args.fence_fails
                        .iter()
                        .map(|d| format!("fence device {d} fails")),
                )
                .collect();
            if !what.is_empty() {
                println!("inject at {}: {}\n", engine_start(&steps), what.join(", "));
            }
            for s in &steps {
                let out = render_step(s);
                if out.lines().count() > 1 {
                    print!("{out}");
                }
            }
            println!(
                "\nfinal after {} rounds:\n{}",
                steps.len(),
                status_table(&engine.desired, &engine.world)
            );
            if violations.is_empty() {
                println!("invariants S1-S6 held at every step");
            } else {
                println!("INVARIANT VIOLATIONS:");
                for v in &violations {
                    println!("  {v}");
                }
            }
        }
        Output::Json => print_json(&JsonOut {
            steps: &steps,
            placement: engine.running(),
            violations: violations.clone(),
        }),
    }
    // A one-shot command: the process's exit frees these faster than their destructors
    // would (tens of thousands of small maps for a large cluster).
    std::mem::forget(engine);
    std::mem::forget(steps);
    if violations.is_empty() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    }
}

fn engine_start(steps: &[Step]) -> String {
    steps.first().map(|s| s.at.to_string()).unwrap_or_default()
}
