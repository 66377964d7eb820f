//! `rampart diff`: what a revision of the manifests would change, two ways.
//!
//! - [`manifests`]: manifest to manifest (`--from REV --to REV`), object by object, in
//!   canonical form;
//! - [`observed`]: manifest to running cluster (`--observed FILE`): one planning round over a
//!   saved observed state, and per node the fence requests, the assignment change, the ordered
//!   actions its agent would take, and unified diffs of the rendered files (DRBD `.res`, libvirt
//!   domain XML) between what the host has and what it would get — secrets never shown.
//!
//! Both are pure: they take loaded manifests (and a snapshot) and return data; the CLI prints it.

pub mod manifests;
pub mod observed;

use similar::{ChangeTag, TextDiff};

pub use manifests::{diff_sets, ChangeKind, ObjectChange};
pub use observed::{against_observed, load_snapshot, ObservedDiff, SnapshotError, TextOptions};

/// A unified diff with three lines of context, labelled `a/LABEL` and `b/LABEL`.
pub fn unified(old: &str, new: &str, label: &str) -> String {
    unified_labelled(old, new, &format!("a/{label}"), &format!("b/{label}"))
}

/// A unified diff with three lines of context and the given `---`/`+++` labels (for example
/// `/dev/null` for a file that is added or removed). Empty when the texts are equal.
pub fn unified_labelled(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
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
