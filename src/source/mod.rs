//! Where manifests come from: a directory tree on disk or a revision of a git repository.
//!
//! A source lists manifest files (`*.yaml`, `*.yml`; hidden files and directories skipped)
//! and reads auxiliary files they name (domain XML). It only reads; it never checks anything
//! out or writes to a repository.

pub mod credentials;
pub mod fs;
pub mod git;
pub mod sync;
pub mod webhook;

use std::path::{Path, PathBuf};

/// Manifests larger than this are refused rather than parsed: no real cluster needs one, and
/// it keeps a stray disk image from eating the controller's memory.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One manifest file as listed by a source.
#[derive(Debug)]
pub struct RawFile {
    /// Path shown in diagnostics.
    pub path: PathBuf,
    /// The bytes, or why they could not be read.
    pub content: Result<Vec<u8>, String>,
}

pub trait Source {
    /// Every manifest file, in a stable order. Problems reading the tree itself (a loop of
    /// symbolic links, an unreadable directory) come back as files whose content is an error.
    fn manifest_files(&self) -> Vec<RawFile>;
    /// Read a file named by a manifest, relative to the source's root.
    fn read(&self, path: &Path) -> Result<Vec<u8>, String>;
}

/// Whether a file name is a manifest file.
pub fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Hidden files and directories (`.git`, `.gitlab-ci.yml`, editor swap files) are not manifests.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.') && name != "." && name != ".."
}

/// Join `rel` to the directory of `manifest`, normalising `.` and `..` lexically, so a domain
/// XML path is resolved the same way on disk and inside a git tree.
pub fn resolve_relative(manifest: &Path, rel: &str) -> PathBuf {
    let base = manifest.parent().unwrap_or(Path::new(""));
    let mut out = PathBuf::new();
    let joined = if Path::new(rel).is_absolute() {
        PathBuf::from(rel)
    } else {
        base.join(rel)
    };
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
