//! What changes between two sets of manifests, object by object.
//!
//! Objects are compared in canonical form (parsed, then written back as YAML with defaults
//! filled in), so reformatting and comments are not changes, and a changed default shows.

use std::collections::BTreeMap;

use serde::Serialize;
use similar::{ChangeTag, TextDiff};

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

/// A unified diff with three lines of context, labelled `a/LABEL` and `b/LABEL`.
pub fn unified(old: &str, new: &str, label: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{label}"), &format!("b/{label}"))
        .to_string()
}

/// Colour a unified diff for a terminal: removed red, added green, hunk headers cyan.
pub fn colorize(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len() + diff.len() / 4);
    for line in diff.split_inclusive('\n') {
        let color = if line.starts_with("+++") || line.starts_with("---") {
            "\x1b[1m"
        } else if line.starts_with('+') {
            "\x1b[32m"
        } else if line.starts_with('-') {
            "\x1b[31m"
        } else if line.starts_with("@@") {
            "\x1b[36m"
        } else {
            ""
        };
        if color.is_empty() {
            out.push_str(line);
        } else {
            let body = line.trim_end_matches('\n');
            out.push_str(color);
            out.push_str(body);
            out.push_str("\x1b[0m");
            if line.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// Count of changed lines in a diff (for summaries).
pub fn changed_lines(old: &str, new: &str) -> usize {
    TextDiff::from_lines(old, new)
        .iter_all_changes()
        .filter(|c| c.tag() != ChangeTag::Equal)
        .count()
}
