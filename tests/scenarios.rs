//! The planner's regression corpus, after Pacemaker's `cts/scheduler`: every directory under
//! `tests/scenarios/` is one input state and the plan expected for it.
//!
//! A scenario holds
//! - `manifests/`: a small cluster (validated as `rampart validate` would; it must be valid);
//! - `scenario.yaml`: the observed state in the `rampart simulate --observed` format (a
//!   [`Snapshot`]: `now`, `nodes` with leases, fence attempts and reports, `operations`, and
//!   `placement`, the controller's previous placement; no placement means none yet);
//! - `expected.txt`: `planner::text::render` of ONE planning round over that input.
//!
//! Every plan is also run through the invariant checker; a violation fails the test whatever
//! the expected text says.
//!
//! To accept new output after a deliberate planner change, run
//!
//! ```text
//! UPDATE_EXPECT=1 cargo test --test scenarios
//! ```
//!
//! and read `git diff tests/scenarios` as a Pacemaker or DRBD admin would before committing:
//! a plan that moves something it should not is a planner bug, not a new expectation.

use std::path::{Path, PathBuf};

use rampart::invariants;
use rampart::manifest;
use rampart::model::Desired;
use rampart::planner::{self, text};
use rampart::simulator::Snapshot;
use rampart::source::fs::Paths;

/// A corpus smaller than this means scenarios went missing: fail rather than pass vacuously.
const MIN_SCENARIOS: usize = 22;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

/// Plan one scenario: the rendered plan, and the invariant violations found in it.
fn run(dir: &Path) -> Result<(String, Vec<String>), String> {
    let report = manifest::check(&Paths::new([dir.join("manifests")]));
    let desired = Desired::from_report(&report).map_err(|e| {
        let diags: Vec<String> = report.rendered().iter().map(|d| d.to_text()).collect();
        format!("{e}\n{}", diags.join("\n"))
    })?;
    let text_in = std::fs::read_to_string(dir.join("scenario.yaml"))
        .map_err(|e| format!("cannot read scenario.yaml: {e}"))?;
    let snap: Snapshot =
        serde_yaml::from_str(&text_in).map_err(|e| format!("scenario.yaml: {e}"))?;
    let observed = snap.observed();
    let prev = snap.placement.clone().unwrap_or_default();
    let plan = planner::plan(&desired, &observed, &prev, snap.now);
    let violations = invariants::check_plan(&desired, &observed, &prev, &plan)
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    Ok((text::render(&plan, &prev), violations))
}

fn diff(expected: &str, actual: &str) -> String {
    similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .header("expected.txt", "planned")
        .to_string()
}

#[test]
fn scenarios() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/scenarios exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (actual, violations) = match run(dir) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        for v in &violations {
            failures.push(format!("{name}: invariant violated: {v}"));
        }
        let path = dir.join("expected.txt");
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            if update {
                std::fs::write(&path, &actual).unwrap();
                eprintln!("updated {}", path.display());
            } else {
                failures.push(format!(
                    "{name}: plan differs\n{}",
                    diff(&expected, &actual)
                ));
            }
        }
    }
    for f in &failures {
        eprintln!("── {f}");
    }
    assert!(
        dirs.len() >= MIN_SCENARIOS,
        "only {} scenarios under tests/scenarios (want at least {MIN_SCENARIOS})",
        dirs.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed (see above)",
        failures.len(),
        dirs.len()
    );
}
