//! Building a validated [`ManifestSet`] from YAML text, for the renderers' unit tests.

use crate::manifest::ManifestSet;

/// Write `files` (relative path, text) into a fresh directory and load it the way
/// `rampart validate` does. Panics, printing the diagnostics, if the set has errors: the
/// renderers are only ever given valid sets. The directory lives as long as the guard.
pub fn set_from(files: &[(&str, &str)]) -> (ManifestSet, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (rel, text) in files {
        let path = dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create directory");
        }
        std::fs::write(&path, text).expect("write manifest");
    }
    let report = crate::manifest::check(&crate::source::fs::Paths::new([dir.path()]));
    assert!(
        !report.has_errors(),
        "test manifests do not validate:\n{}",
        report
            .rendered()
            .iter()
            .map(|r| r.to_text())
            .collect::<Vec<_>>()
            .join("\n")
    );
    (report.set, dir)
}
