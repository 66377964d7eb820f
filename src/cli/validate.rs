use std::path::PathBuf;

use serde::Serialize;

use super::{print_json, Output, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::manifest::{self, diag, Rendered, Severity};
use crate::source::fs::Paths;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest files or directories (walked recursively; hidden entries skipped).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
    /// Print only errors, not warnings.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    errors: usize,
    warnings: usize,
    files: usize,
    objects: usize,
    diagnostics: &'a [Rendered],
}

pub fn run(args: Args) -> u8 {
    for p in &args.paths {
        if std::fs::symlink_metadata(p).is_err() {
            eprintln!("rampart: {}: no such file or directory", p.display());
            return EXIT_ERROR;
        }
    }
    let report = manifest::check(&Paths::new(args.paths.clone()));
    let mut rendered = report.rendered();
    // Validation finds a source without manifest files; say where it looked.
    for d in rendered.iter_mut().filter(|d| d.code == "no-manifests") {
        d.message = format!(
            "{} under {}",
            d.message,
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if args.quiet {
        rendered.retain(|d| d.severity == Severity::Error);
    }
    let errors = rendered
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    match args.output {
        Output::Text => {
            for d in &rendered {
                println!("{}", d.to_text());
            }
            let summary = diag::summary(&rendered, report.set.files.len());
            let objects = report.set.object_count();
            println!(
                "{}: {summary}, {objects} object{}",
                if errors == 0 { "valid" } else { "invalid" },
                if objects == 1 { "" } else { "s" }
            );
        }
        Output::Json => print_json(&JsonReport {
            valid: errors == 0,
            errors,
            warnings: rendered.len() - errors,
            files: report.set.files.len(),
            objects: report.set.object_count(),
            diagnostics: &rendered,
        }),
    }
    if errors == 0 {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    }
}
