//! The corpus of invalid manifests: every directory under `tests/invalid/` is one case, one
//! problem class each. It holds manifest files that are valid except for that problem, and
//! `expected.txt`: exactly the diagnostics `rampart validate` prints for the directory (one
//! `Rendered::to_text()` after the other, without the summary line), with paths relative to
//! the case directory.
//!
//! To accept new output after a deliberate change of messages, hints or locations, run
//!
//! ```text
//! UPDATE_EXPECT=1 cargo test --test invalid_corpus
//! ```
//!
//! which rewrites every `expected.txt` from what the validator prints now; then read the diff
//! (`git diff tests/invalid`) before committing it: a wrong line or column is a bug, not a new
//! expectation.
//!
//! A few cases cannot sensibly be committed as files: a file over the size limit, a large file,
//! an unreadable file, a loop of symbolic links and a link to nowhere. Their directory holds the rest of the case
//! and `expected.txt`; the harness copies it to a temporary directory and adds the missing
//! piece there (see [`GENERATED`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rampart::manifest;
use rampart::source::fs::Paths;

/// A corpus smaller than this means cases went missing: fail rather than pass vacuously.
const MIN_CASES: usize = 70;

/// Adds the piece of a generated case that cannot be committed, and says how to run it.
type Complete = fn(&Path) -> Run;

/// How a generated case is completed, by case name.
const GENERATED: &[(&str, Complete)] = &[
    ("huge-file", huge_file),
    ("large-file-wrong-contents", large_file),
    ("unreadable-file", unreadable_file),
    ("symlink-loop", symlink_loop),
    ("dangling-symlink", dangling_symlink),
];

/// How to validate a prepared case directory.
enum Run {
    /// Through the library, as the CLI does.
    Library,
    /// Through the library, and the validation (loading, validating, rendering) must finish
    /// within this time.
    Timed(Duration),
    /// Through the `rampart` binary run as the unprivileged user `nobody`: for a file that
    /// only an unprivileged user cannot read.
    AsNobody,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid")
}

#[test]
fn invalid_corpus() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/invalid exists")
        .map(|e| e.expect("readable corpus directory").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= MIN_CASES,
        "tests/invalid holds {} cases; at least {MIN_CASES} are expected",
        cases.len()
    );
    for (name, _) in GENERATED {
        assert!(
            cases.iter().any(|c| c.file_name().unwrap() == *name),
            "generated case {name} has no directory under tests/invalid"
        );
    }

    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let actual = match run_case(case, &name) {
            Ok(text) => text,
            Err(e) => {
                failures.push(format!("--- {name}: {e}"));
                continue;
            }
        };
        let expected_path = case.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        if actual.trim().is_empty() {
            failures.push(format!(
                "--- {name}: the validator reports nothing for this case; an invalid case must produce a diagnostic"
            ));
            continue;
        }
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!(
                    "--- {name}: cannot read expected.txt ({e}); run with UPDATE_EXPECT=1 to create it. Output:\n{actual}"
                ));
                continue;
            }
        };
        if expected != actual {
            let diff = similar::TextDiff::from_lines(&expected, &actual)
                .unified_diff()
                .header("expected.txt", "actual")
                .to_string();
            failures.push(format!("--- {name}: output differs\n{diff}"));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} corpus cases failed (UPDATE_EXPECT=1 rewrites expected.txt; review the diff):\n\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}

/// Validate one case and return its diagnostics as text, paths relative to the case.
fn run_case(case: &Path, name: &str) -> Result<String, String> {
    let Some((_, generate)) = GENERATED.iter().find(|(n, _)| *n == name) else {
        return Ok(validate_with_library(case, None));
    };
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = tmp.path().join(name);
    copy_case(case, &dir).map_err(|e| format!("cannot copy the case: {e}"))?;
    match generate(&dir) {
        Run::Library => Ok(validate_with_library(&dir, None)),
        Run::Timed(limit) => Ok(validate_with_library(&dir, Some(limit))),
        Run::AsNobody => validate_as_nobody(tmp.path(), &dir),
    }
}

fn validate_with_library(dir: &Path, limit: Option<Duration>) -> String {
    let start = Instant::now();
    let report = manifest::check(&Paths::new([dir]));
    let rendered = report.rendered();
    let elapsed = start.elapsed();
    if let Some(limit) = limit {
        assert!(
            elapsed < limit,
            "validating {} took {elapsed:?}, more than {limit:?}",
            dir.display()
        );
    }
    let mut out = String::new();
    for r in &rendered {
        writeln!(out, "{}", r.to_text()).unwrap();
    }
    relative(&out, dir)
}

/// Paths as the CLI prints them when run inside the case directory (`rampart validate .`,
/// without the leading `./`).
fn relative(text: &str, dir: &Path) -> String {
    let dir = dir.display().to_string();
    text.replace(&format!("{dir}/"), "").replace(&dir, ".")
}

fn copy_case(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() && e.file_name() != "expected.txt" {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// A file over the 64 MiB limit. Sparse, so it costs no disk and no time to make; the limit is
/// checked before reading.
fn huge_file(dir: &Path) -> Run {
    let f = std::fs::File::create(dir.join("disk-image.yaml")).unwrap();
    f.set_len(rampart::source::MAX_FILE_BYTES + 1024 * 1024)
        .unwrap();
    Run::Library
}

/// About 5 MB of valid YAML: a VM with 50,000 annotations and, at the very end, a misspelt
/// field. It must be located at the right line and found in no pathological time.
fn large_file(dir: &Path) -> Run {
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("big.yaml")).unwrap());
    write!(
        f,
        "apiVersion: rampart.dev/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: big\n  annotations:\n"
    )
    .unwrap();
    for i in 0..50_000 {
        writeln!(
            f,
            "    note-{i:05}: \"imported from the old cluster.conf, service group {i}; keep until migrated\""
        )
        .unwrap();
    }
    write!(
        f,
        "spec:\n  cpus: 2\n  memory: 4GiB\n  placment:\n    allowed: [hv1, hv2]\n"
    )
    .unwrap();
    f.flush().unwrap();
    drop(f);
    let len = std::fs::metadata(dir.join("big.yaml")).unwrap().len();
    assert!(len > 4_500_000, "big.yaml is only {len} bytes");
    // Generous for a debug build on a loaded two-core machine; a quadratic step would take
    // minutes.
    Run::Timed(Duration::from_secs(30))
}

/// A manifest file nobody may read. Root reads it anyway (mode bits do not bind it), so when
/// the tests run as root the case runs the `rampart` binary as user `nobody` instead.
fn unreadable_file(dir: &Path) -> Run {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("secret-node.yaml");
    std::fs::write(&path, "apiVersion: rampart.dev/v1alpha1\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&path).is_err() {
        Run::Library
    } else {
        Run::AsNobody
    }
}

/// `sub/up` points back at the case directory: walking it would never end.
fn symlink_loop(dir: &Path) -> Run {
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("sub/up")).unwrap();
    Run::Library
}

/// `vip.yaml` links to a file that was moved away.
fn dangling_symlink(dir: &Path) -> Run {
    std::os::unix::fs::symlink("../shared/vip.yaml", dir.join("vip.yaml")).unwrap();
    Run::Library
}

/// Run `rampart validate DIR` as `nobody` and return its diagnostics (the output without the
/// summary line), paths relative to `dir`.
fn validate_as_nobody(tmp: &Path, dir: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    // The temporary directory is private to its owner; let `nobody` in.
    for d in [tmp, dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("validate")
        .arg(dir)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .map_err(|e| {
            format!(
                "the tests run with privileges that read any file, so this case must run rampart as user `nobody` (uid {NOBODY}), which failed: {e}"
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.is_empty() || out.status.code() != Some(1) {
        return Err(format!(
            "rampart run as nobody exited with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status.code()
        ));
    }
    // Every line but the summary.
    let mut lines: Vec<&str> = stdout.lines().collect();
    match lines.pop() {
        Some(summary) if summary.starts_with("invalid: ") => {}
        other => return Err(format!("unexpected last line of output: {other:?}")),
    }
    let mut text = String::new();
    for l in lines {
        writeln!(text, "{l}").unwrap();
    }
    Ok(relative(&text, dir))
}
