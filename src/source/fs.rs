//! Manifests from directories and files on disk.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{is_hidden, is_manifest_name, RawFile, Source, MAX_FILE_BYTES};

/// One or more paths: directories are walked (following symbolic links, with loops
/// detected), files are taken as manifests whatever their extension.
#[derive(Debug, Clone)]
pub struct Paths {
    pub paths: Vec<PathBuf>,
}

impl Paths {
    pub fn new(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        Paths {
            paths: paths.into_iter().map(Into::into).collect(),
        }
    }
}

pub fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "file is {} MiB; manifest files over {} MiB are refused",
            len / (1024 * 1024),
            MAX_FILE_BYTES / (1024 * 1024)
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "file is larger than {} MiB; manifest files that large are refused",
            MAX_FILE_BYTES / (1024 * 1024)
        ));
    }
    Ok(buf)
}

/// Read the files at `wanted` in `files`, on every core: opening and reading thousands of small
/// files is system time per file (about 25 µs each here), which threads overlap.
fn read_all(files: &mut [RawFile], wanted: &[usize]) {
    let contents = crate::par::par_map(wanted, |&i| read_limited(&files[i].path));
    for (&i, content) in wanted.iter().zip(contents) {
        files[i].content = content;
    }
}

impl Source for Paths {
    fn manifest_files(&self) -> Vec<RawFile> {
        let mut out = Vec::new();
        // Which entries of `out` are files still to read (the others are walk errors).
        let mut wanted = Vec::new();
        for root in &self.paths {
            let walker = walkdir::WalkDir::new(root)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| e.depth() == 0 || !is_hidden(&e.file_name().to_string_lossy()));
            for entry in walker {
                match entry {
                    Ok(e) if e.file_type().is_file() => {
                        let name = e.file_name().to_string_lossy();
                        if e.depth() == 0 || is_manifest_name(&name) {
                            out.push(RawFile {
                                path: e.path().to_path_buf(),
                                content: Ok(Vec::new()),
                            });
                            wanted.push(out.len() - 1);
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let path = err
                            .path()
                            .map(Path::to_path_buf)
                            .unwrap_or_else(|| root.clone());
                        let msg = if let Some(anc) = err.loop_ancestor() {
                            format!(
                                "symbolic link loop: leads back to {}; remove the link",
                                anc.display()
                            )
                        } else if let Some(io) = err.io_error() {
                            format!("cannot read: {io}")
                        } else {
                            format!("cannot read: {err}")
                        };
                        out.push(RawFile {
                            path,
                            content: Err(msg),
                        });
                    }
                }
            }
        }
        read_all(&mut out, &wanted);
        out
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        read_limited(path)
    }
}
