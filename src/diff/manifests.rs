//! Manifest to manifest: what changes between two sets of manifests, object by object.
//!
//! Objects are compared in canonical form (parsed, then written back as YAML with defaults
//! filled in), so reformatting and comments are not changes, and a changed default shows.

use std::collections::BTreeMap;

use serde::Serialize;

use super::unified;
use crate::manifest::{Kind, ManifestSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectChange {
    pub kind: Kind,
    pub name: String,
    pub change: ChangeKind,
    /// Unified diff of the canonical YAML (`---`/`+++` headers, `@@` hunks).
    pub diff: String,
}

/// Objects added, removed and changed from `from` to `to`, sorted by kind then name.
pub fn diff_sets(from: &ManifestSet, to: &ManifestSet) -> Vec<ObjectChange> {
    let index = |s: &ManifestSet| -> BTreeMap<(Kind, String), String> {
        s.canonical_objects()
            .into_iter()
            .map(|(k, n, y)| ((k, n), y))
            .collect()
    };
    let (a, b) = (index(from), index(to));
    let mut keys: Vec<&(Kind, String)> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (old, new) = (a.get(key), b.get(key));
            let change = match (old, new) {
                (Some(o), Some(n)) if o == n => return None,
                (Some(_), Some(_)) => ChangeKind::Changed,
                (None, Some(_)) => ChangeKind::Added,
                (Some(_), None) => ChangeKind::Removed,
                (None, None) => return None,
            };
            let label = format!("{}/{}", key.0, key.1);
            let old_text = old.map_or("", String::as_str);
            let new_text = new.map_or("", String::as_str);
            let diff = unified(old_text, new_text, &label);
            Some(ObjectChange {
                kind: key.0,
                name: key.1.clone(),
                change,
                diff,
            })
        })
        .collect()
}
