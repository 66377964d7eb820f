//! Manifests from a revision of a git repository, read straight from its object database
//! with git2: no checkout, no working tree, nothing written.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};

use super::{is_hidden, is_manifest_name, RawFile, Source, MAX_FILE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot open git repository at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("revision `{rev}` does not exist in {repo}; check the name with `git log --oneline`")]
    NoRevision {
        rev: String,
        repo: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("path `{path}` does not exist at revision `{rev}`")]
    NoPath { rev: String, path: PathBuf },
    #[error("reading revision `{rev}`")]
    Read {
        rev: String,
        #[source]
        source: git2::Error,
    },
}

/// The manifests of one revision, under an optional subdirectory.
pub struct Revision {
    repo: Repository,
    /// The revision as the user wrote it.
    pub rev: String,
    pub commit: Oid,
    tree: Oid,
    prefix: PathBuf,
}

impl Revision {
    /// Open `repo` (the repository or any directory inside it) at `rev`, limited to `prefix`
    /// (relative to the repository's top; empty for all of it).
    pub fn open(repo: &Path, rev: &str, prefix: &Path) -> Result<Revision, GitError> {
        let repository = Repository::discover(repo).map_err(|source| GitError::Open {
            path: repo.to_path_buf(),
            source,
        })?;
        let obj = repository
            .revparse_single(rev)
            .map_err(|source| GitError::NoRevision {
                rev: rev.into(),
                repo: repo.to_path_buf(),
                source,
            })?;
        let commit = obj
            .peel_to_commit()
            .map_err(|source| GitError::NoRevision {
                rev: rev.into(),
                repo: repo.to_path_buf(),
                source,
            })?;
        let root = commit.tree().map_err(|source| GitError::Read {
            rev: rev.into(),
            source,
        })?;
        let prefix = super::resolve_relative(Path::new("x"), &prefix.to_string_lossy());
        let tree = if prefix.as_os_str().is_empty() {
            root.id()
        } else {
            let entry = root.get_path(&prefix).map_err(|_| GitError::NoPath {
                rev: rev.into(),
                path: prefix.clone(),
            })?;
            entry.id()
        };
        let commit_id = commit.id();
        drop(root);
        drop(commit);
        drop(obj);
        Ok(Revision {
            repo: repository,
            rev: rev.into(),
            commit: commit_id,
            tree,
            prefix,
        })
    }

    fn walk(&self, tree: &Tree<'_>, dir: &Path, out: &mut Vec<RawFile>) {
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
            if is_hidden(&name) {
                continue;
            }
            let path = dir.join(&name);
            match entry.kind() {
                Some(ObjectType::Tree) => match entry
                    .to_object(&self.repo)
                    .and_then(|o| o.peel_to_tree())
                {
                    Ok(sub) => self.walk(&sub, &path, out),
                    Err(e) => out.push(RawFile {
                        path,
                        content: Err(format!("cannot read directory from git: {}", e.message())),
                    }),
                },
                Some(ObjectType::Blob) if is_manifest_name(&name) => {
                    out.push(RawFile {
                        content: self.blob(entry.id()),
                        path,
                    });
                }
                _ => {}
            }
        }
    }

    fn blob(&self, id: Oid) -> Result<Vec<u8>, String> {
        let blob = self
            .repo
            .find_blob(id)
            .map_err(|e| format!("cannot read from git: {}", e.message()))?;
        if blob.size() as u64 > MAX_FILE_BYTES {
            return Err(format!(
                "file is {} MiB; manifest files over {} MiB are refused",
                blob.size() / (1024 * 1024),
                MAX_FILE_BYTES / (1024 * 1024)
            ));
        }
        Ok(blob.content().to_vec())
    }
}

impl Source for Revision {
    fn manifest_files(&self) -> Vec<RawFile> {
        let mut out = Vec::new();
        match self.repo.find_object(self.tree, None) {
            Ok(obj) => match obj.kind() {
                Some(ObjectType::Tree) => {
                    if let Ok(tree) = obj.peel_to_tree() {
                        self.walk(&tree, &self.prefix, &mut out);
                    }
                }
                _ => out.push(RawFile {
                    path: self.prefix.clone(),
                    content: self.blob(self.tree),
                }),
            },
            Err(e) => out.push(RawFile {
                path: self.prefix.clone(),
                content: Err(format!("cannot read from git: {}", e.message())),
            }),
        }
        out
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        let commit = self
            .repo
            .find_commit(self.commit)
            .map_err(|e| e.message().to_string())?;
        let tree = commit.tree().map_err(|e| e.message().to_string())?;
        let entry = tree
            .get_path(path)
            .map_err(|_| format!("no such file at revision `{}`", self.rev))?;
        self.blob(entry.id())
    }
}
