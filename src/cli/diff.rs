//! `rampart diff`: manifest to manifest (`--from REV --to REV`, [`crate::diff::manifests`])
//! or manifest to running cluster (`PATH --observed FILE`, [`crate::diff::observed`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{print_json, Color, Output, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::diff::{colorize, diff_sets, ChangeKind, ObjectChange, ObservedDiff};
use crate::manifest::{self, Rendered, Report};
use crate::model::Desired;
use crate::source::fs::Paths;
use crate::source::git::Revision;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The revision to compare from (a commit, branch or tag).
    #[arg(long, value_name = "REV")]
    pub from: Option<String>,
    /// The revision to compare to.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    pub to: String,
    /// The git repository (or any directory inside it).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// With --from: only manifests under this path, relative to the top of the repository.
    /// With --observed: the manifests to compare (a directory or files; default `manifests`).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Compare the manifests with a running cluster: this saved observed state (what
    /// `rampart status -o yaml` writes, as `rampart simulate --observed` reads). Shows what
    /// the controller and each node's agent would do, and the rendered files that would change.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "to", "repo"])]
    pub observed: Option<PathBuf>,
    /// Compare the manifests with the running cluster in this store
    /// (`etcd://HOST:PORT[,...]/PREFIX`), as `--observed` does with a saved state.
    #[arg(long, value_name = "URL", conflicts_with_all = ["from", "to", "repo", "observed"])]
    pub cluster: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
    #[arg(long, value_enum, default_value_t)]
    pub color: Color,
    /// List what changes without the unified diffs.
    #[arg(long)]
    pub summary: bool,
}

#[derive(Serialize)]
struct Side {
    rev: String,
    commit: String,
    valid: bool,
    diagnostics: Vec<Rendered>,
}

#[derive(Serialize)]
struct Counts {
    added: usize,
    removed: usize,
    changed: usize,
}

#[derive(Serialize)]
struct JsonDiff<'a> {
    from: Side,
    to: Side,
    changes: &'a [ObjectChange],
    summary: Counts,
}

fn side(rev: &Revision, report: &Report) -> Side {
    Side {
        rev: rev.rev.clone(),
        commit: rev.commit.to_string(),
        valid: !report.has_errors(),
        diagnostics: report.rendered(),
    }
}

pub fn run(args: Args) -> u8 {
    if let Some(file) = &args.observed {
        let snapshot = crate::diff::load_snapshot(file).map_err(|e| eprintln!("rampart diff: {e}"));
        return run_observed(&args, file, snapshot);
    }
    if let Some(url) = &args.cluster {
        let snapshot = cluster_snapshot(url).map_err(|e| eprintln!("rampart diff: {e}"));
        return run_observed(&args, Path::new(url), snapshot);
    }
    let Some(from) = args.from.as_deref() else {
        eprintln!("rampart diff: give `--from REV` (and optionally `--to REV`, default HEAD) to compare two revisions, or `PATH --observed FILE` to compare manifests with a running cluster");
        return EXIT_ERROR;
    };
    let prefix = args.path.clone().unwrap_or_default();
    let open = |rev: &str| Revision::open(&args.repo, rev, &prefix);
    let (a, b) = match (open(from), open(&args.to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("rampart diff: {}", error_chain(&e));
            return EXIT_ERROR;
        }
    };
    let (ra, rb) = (manifest::check(&a), manifest::check(&b));
    let changes = diff_sets(&ra.set, &rb.set);
    let count = |k: ChangeKind| changes.iter().filter(|c| c.change == k).count();
    let counts = Counts {
        added: count(ChangeKind::Added),
        removed: count(ChangeKind::Removed),
        changed: count(ChangeKind::Changed),
    };
    let invalid = ra.has_errors() || rb.has_errors();
    match args.output {
        Output::Json => print_json(&JsonDiff {
            from: side(&a, &ra),
            to: side(&b, &rb),
            changes: &changes,
            summary: counts,
        }),
        Output::Text => {
            let color = args.color.enabled();
            let short = |r: &Revision| r.commit.to_string()[..10].to_string();
            let under = if prefix.as_os_str().is_empty() {
                String::new()
            } else {
                format!(" under {}", prefix.display())
            };
            println!(
                "diff {} ({}) -> {} ({}){under}",
                a.rev,
                short(&a),
                b.rev,
                short(&b)
            );
            // The same commit twice (`--from X --to X`, or two names for one commit) has
            // one set of diagnostics: print them once.
            let sides: &[(&Revision, &Report)] = if a.commit == b.commit {
                &[(&b, &rb)]
            } else {
                &[(&a, &ra), (&b, &rb)]
            };
            for (rev, report) in sides {
                if report.has_errors() {
                    println!("\nrevision {} ({}) does not validate:", rev.rev, short(rev));
                    for d in report.rendered() {
                        println!("{}", d.to_text());
                    }
                }
            }
            for c in &changes {
                let (mark, word) = match c.change {
                    ChangeKind::Added => ("+", "added"),
                    ChangeKind::Removed => ("-", "removed"),
                    ChangeKind::Changed => ("~", "changed"),
                };
                println!("\n{mark} {}/{} {word}", c.kind, c.name);
                if !args.summary {
                    print!(
                        "{}",
                        if color {
                            colorize(&c.diff)
                        } else {
                            c.diff.clone()
                        }
                    );
                }
            }
            if changes.is_empty() {
                println!("\nno changes");
            } else {
                println!(
                    "\n{} {}: {} added, {} removed, {} changed",
                    changes.len(),
                    if changes.len() == 1 {
                        "object differs"
                    } else {
                        "objects differ"
                    },
                    counts.added,
                    counts.removed,
                    counts.changed
                );
            }
        }
    }
    if invalid {
        EXIT_ERROR
    } else if changes.is_empty() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[derive(Serialize)]
struct ManifestsSide<'a> {
    path: &'a Path,
    valid: bool,
    diagnostics: Vec<Rendered>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonObserved<'a> {
    manifests: ManifestsSide<'a>,
    observed: &'a Path,
    #[serde(flatten)]
    diff: Option<&'a ObservedDiff>,
}

/// The observed state of a running cluster, read from its store.
fn cluster_snapshot(url: &str) -> Result<crate::simulator::Snapshot, String> {
    let cs = super::admin::connect(url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let view = rt
        .block_on(cs.view())
        .map_err(|e| format!("cannot read the store: {e}"))?;
    Ok(crate::api::status::snapshot(
        &view,
        super::admin::unix_now(),
    ))
}

/// `rampart diff PATH --observed FILE` and `rampart diff PATH --cluster URL`.
fn run_observed(args: &Args, file: &Path, snapshot: Result<crate::simulator::Snapshot, ()>) -> u8 {
    let path = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from("manifests"));
    // Both inputs are checked before giving up, so one run reports every problem.
    let report = if std::fs::symlink_metadata(&path).is_err() {
        eprintln!(
            "rampart diff: {}: no such file or directory",
            path.display()
        );
        None
    } else {
        Some(manifest::check(&Paths::new([path.clone()])))
    };
    let Some(report) = report else {
        return EXIT_ERROR;
    };
    let desired = match Desired::from_report(&report) {
        Ok(d) => d,
        Err(e) => {
            match args.output {
                Output::Json => print_json(&JsonObserved {
                    manifests: ManifestsSide {
                        path: &path,
                        valid: false,
                        diagnostics: report.rendered(),
                    },
                    observed: file,
                    diff: None,
                }),
                Output::Text => {
                    for d in report.rendered() {
                        eprintln!("{}", d.to_text());
                    }
                }
            }
            eprintln!("rampart diff: {}: {e}", path.display());
            return EXIT_ERROR;
        }
    };
    let Ok(snapshot) = snapshot else {
        return EXIT_ERROR;
    };
    let diff = match crate::diff::against_observed(&report.set, &desired, &snapshot) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rampart diff: {}: cannot render: {e}", path.display());
            return EXIT_ERROR;
        }
    };
    match args.output {
        Output::Json => print_json(&JsonObserved {
            manifests: ManifestsSide {
                path: &path,
                valid: true,
                diagnostics: report.rendered(),
            },
            observed: file,
            diff: Some(&diff),
        }),
        Output::Text => {
            let mut out = String::new();
            let note = match diff.had_placement {
                true => "",
                false => "; no placement in it: planned from none",
            };
            let _ = writeln!(
                out,
                "diff {} against the cluster observed in {} (at {}{note})",
                path.display(),
                file.display(),
                diff.now,
            );
            out.push_str(&diff.to_text(crate::diff::TextOptions {
                color: args.color.enabled(),
                summary: args.summary,
            }));
            print!("{out}");
        }
    }
    if diff.has_changes() {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}
