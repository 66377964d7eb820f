//! Manifest to running cluster: what the agents would do if these manifests were applied to
//! the cluster a [`Snapshot`] describes (`rampart diff PATH --observed FILE`).
//!
//! One planning round, exactly as the controller would run it: [`planner::plan`] over the
//! snapshot's observed state, with the snapshot's placement (or none) as the previous one, at
//! the snapshot's time. Then, per node:
//! - the fence requests the plan makes for it;
//! - its assignment change (generation, and what was added, removed or changed);
//! - the ordered actions its agent would take: [`local::actions`] of the node's new assignment
//!   against the host its last report describes. Only for a node whose agent would act: its
//!   lease is alive and it does not already hold a newer generation (S4). A lost node's agent
//!   takes nothing; the plan fences it or waits for its self-fence deadline;
//! - unified diffs between the rendered files the host reports having
//!   ([`HostReport::artifacts`]) and the files it would get: the `.res` file of every DRBD
//!   volume assigned to it, and the domain XML of every VM it holds (running, leaving by live
//!   migration or arriving). Files it has but would no longer get show as removed.
//!
//! Secrets: expected files are rendered with [`render_res_redacted`], and any
//! `shared-secret` value found in a host's file is replaced by the same placeholder before it
//! is compared or shown, so a secret never reaches the output — even from an agent that
//! reported its file verbatim. (The flip side: a changed secret *value* cannot show as a
//! change; `diff` never reads secrets.)
//!
//! Pure: no I/O apart from [`load_snapshot`], no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{colorize, unified_labelled, ChangeKind};
use crate::agent::local::{self, Action, LocalResources};
use crate::manifest::vm::Hypervisor;
use crate::manifest::ManifestSet;
use crate::model::{Assignment, Desired, HostReport, Lease, Placement, Time, VmTarget, VolumeRole};
use crate::planner::{self, FenceRequest, Pending, Subject, Wait};
use crate::render::{render_domain, render_res_redacted, res_file_name, RenderError, RES_DIR};
use crate::simulator::Snapshot;

/// Where libvirt keeps persistent domain definitions of the qemu (KVM) driver.
pub const QEMU_DOMAIN_DIR: &str = "/etc/libvirt/qemu";
/// Where libvirt keeps persistent domain definitions of the libxl (Xen) driver.
pub const LIBXL_DOMAIN_DIR: &str = "/etc/libvirt/libxl";

/// What a host shows instead of a DRBD shared secret that is not named by the manifests.
const REDACTED: &str = "\"<secret redacted>\"";

/// The path of a DRBD volume's resource file on a node.
pub fn res_path(volume: &str) -> String {
    format!("{RES_DIR}/{}", res_file_name(volume))
}

/// The path of a VM's domain definition on a node, by hypervisor.
pub fn domain_path(vm: &str, hypervisor: Hypervisor) -> String {
    let dir = match hypervisor {
        Hypervisor::Kvm => QEMU_DOMAIN_DIR,
        Hypervisor::Xen => LIBXL_DOMAIN_DIR,
    };
    format!("{dir}/{vm}.xml")
}

/// Every rendered file a node gets under `assignment`, by path, with secrets redacted: the
/// `.res` file of each DRBD volume assigned to it and the domain XML of each VM it holds.
pub fn expected_artifacts(
    set: &ManifestSet,
    desired: &Desired,
    assignment: &Assignment,
) -> Result<BTreeMap<String, String>, RenderError> {
    let mut out = BTreeMap::new();
    for volume in assignment.volumes.keys() {
        if desired.volumes.get(volume).is_some_and(|v| v.is_drbd()) {
            out.insert(res_path(volume), render_res_redacted(set, volume)?);
        }
    }
    for vm in assignment.vms.keys() {
        // A VM the manifests no longer describe (kept by a frozen placement) has no file to
        // render; the host's copy, if any, shows as removed.
        let Some(entry) = set.vms.get(vm) else {
            continue;
        };
        out.insert(
            domain_path(vm, entry.object.spec.hypervisor),
            render_domain(set, vm)?,
        );
    }
    Ok(out)
}

/// What the floating addresses are, for the agent's local plan.
pub fn local_resources(desired: &Desired) -> LocalResources {
    LocalResources::from_desired(desired)
}

/// The whole answer of `rampart diff --observed`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedDiff {
    /// The time the plan was made at: the snapshot's `now`.
    pub now: Time,
    /// Whether the snapshot carried the controller's last placement (if not, the plan starts
    /// from none, as a controller without history would).
    pub had_placement: bool,
    /// Every node: those in the manifests, in the snapshot, or in either placement.
    pub nodes: Vec<NodeDiff>,
    /// What the plan is waiting on, and why.
    pub pending: Vec<PendingWait>,
    pub summary: Summary,
}

impl ObservedDiff {
    /// Whether anything would be done: fencing, an assignment written, an agent action or a
    /// file written or removed. Pending waits alone are not a change.
    pub fn has_changes(&self) -> bool {
        self.summary.changes
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub changes: bool,
    pub fence_requests: usize,
    pub assignments_changed: usize,
    pub actions: usize,
    pub files_added: usize,
    pub files_removed: usize,
    pub files_changed: usize,
    pub pending: usize,
}

/// One node: what the plan does to it and what its agent would do.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDiff {
    pub node: String,
    /// Whether the manifests still describe the node.
    pub in_manifests: bool,
    pub lease: Lease,
    /// The generation of the assignment the node's last report says it holds.
    pub holds: Option<u64>,
    pub agent: Agent,
    pub fence: Vec<FenceRequest>,
    pub assignment: AssignmentChange,
    /// The agent's local plan, in the order it would run it. Empty unless `agent` is `acts`.
    pub actions: Vec<ActionItem>,
    /// Rendered files that differ, sorted by path. Empty unless `agent` is `acts`.
    pub artifacts: Vec<ArtifactChange>,
}

impl NodeDiff {
    /// Whether anything happens to or on this node.
    pub fn has_changes(&self) -> bool {
        !self.fence.is_empty()
            || self.assignment.changed
            || !self.actions.is_empty()
            || !self.artifacts.is_empty()
    }
}

/// Whether the node's agent would act on its new assignment, and if not why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Agent {
    /// Its lease is alive: it takes the assignment and converges its host.
    Acts,
    /// Its lease expired: it takes nothing; the node is fenced or waited out.
    Lost,
    /// It never held a lease: it gets no work until its agent joins.
    NotJoined,
    /// It holds a newer generation than the plan writes and would ignore it (S4).
    HoldsNewer,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentChange {
    /// The generation in the previous placement (none: the node had no assignment).
    pub from: Option<u64>,
    /// The generation the plan writes (none: the node gets no assignment).
    pub to: Option<u64>,
    /// Whether the assignment must be written.
    pub changed: bool,
    /// What differs from the previous assignment's content.
    pub lines: Vec<AssignmentLine>,
    /// The full new assignment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,
}

/// One entry of an assignment that is added, removed or changed: `vm www: run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentLine {
    pub change: ChangeKind,
    /// `vm NAME`, `volume NAME` or `vip NAME`.
    pub item: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl std::fmt::Display for AssignmentLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.change, &self.from, &self.to) {
            (ChangeKind::Changed, Some(a), Some(b)) => write!(f, "~ {}: {a} -> {b}", self.item),
            (ChangeKind::Removed, Some(a), _) => write!(f, "- {}: {a}", self.item),
            (_, _, Some(b)) => write!(f, "+ {}: {b}", self.item),
            _ => write!(f, "  {}", self.item),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionItem {
    pub action: Action,
    /// As people read it: `promote volume www to primary`.
    pub text: String,
}

/// A rendered file that the host has and would lose, lacks, or has with other content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactChange {
    pub path: String,
    pub change: ChangeKind,
    /// Unified diff, host's file (`a/NODE/PATH`) to the rendered one (`b/NODE/PATH`);
    /// `/dev/null` for a side that has no file. Secrets redacted.
    pub diff: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingWait {
    pub subject: Subject,
    pub wait: Wait,
    /// As people read it.
    pub message: String,
}

impl From<&Pending> for PendingWait {
    fn from(p: &Pending) -> Self {
        PendingWait {
            subject: p.subject.clone(),
            wait: p.wait.clone(),
            message: format!("{}: {}", p.subject, p.wait),
        }
    }
}

/// Plan one round over `snapshot` with the manifests `set` (already validated into
/// `desired`), and say what would change on every node. Fails only when a file cannot be
/// rendered, which validated manifests should not allow.
pub fn against_observed(
    set: &ManifestSet,
    desired: &Desired,
    snapshot: &Snapshot,
) -> Result<ObservedDiff, RenderError> {
    let observed = snapshot.observed();
    let prev = snapshot.placement.clone().unwrap_or_default();
    let plan = planner::plan(desired, &observed, &prev, snapshot.now);
    let resources = local_resources(desired);

    let names: BTreeSet<&String> = desired
        .nodes
        .keys()
        .chain(snapshot.nodes.keys())
        .chain(prev.assignments.keys())
        .chain(plan.placement.assignments.keys())
        .collect();
    let mut nodes = Vec::with_capacity(names.len());
    for name in names {
        nodes.push(node_diff(
            set,
            desired,
            snapshot,
            &prev,
            &plan.placement,
            &plan.fence,
            &resources,
            name,
        )?);
    }
    let pending: Vec<PendingWait> = plan.pending.iter().map(PendingWait::from).collect();

    let mut summary = Summary {
        pending: pending.len(),
        ..Summary::default()
    };
    for n in &nodes {
        summary.fence_requests += n.fence.len();
        summary.assignments_changed += usize::from(n.assignment.changed);
        summary.actions += n.actions.len();
        for a in &n.artifacts {
            match a.change {
                ChangeKind::Added => summary.files_added += 1,
                ChangeKind::Removed => summary.files_removed += 1,
                ChangeKind::Changed => summary.files_changed += 1,
            }
        }
    }
    summary.changes = nodes.iter().any(NodeDiff::has_changes);
    Ok(ObservedDiff {
        now: snapshot.now,
        had_placement: snapshot.placement.is_some(),
        nodes,
        pending,
        summary,
    })
}

#[allow(clippy::too_many_arguments)]
fn node_diff(
    set: &ManifestSet,
    desired: &Desired,
    snapshot: &Snapshot,
    prev: &Placement,
    next: &Placement,
    fence: &[FenceRequest],
    resources: &LocalResources,
    name: &str,
) -> Result<NodeDiff, RenderError> {
    let obs = snapshot.nodes.get(name);
    let lease = obs.map_or(Lease::Never, |o| o.lease);
    let report = obs.and_then(|o| o.report.as_ref());
    let old = prev.assignments.get(name);
    let new = next.assignments.get(name);
    let assignment = AssignmentChange {
        from: old.map(|a| a.generation),
        to: new.map(|a| a.generation),
        changed: new.is_some_and(|n| old != Some(n)),
        lines: assignment_lines(old, new),
        assignment: new.cloned(),
    };
    let holds = report.map(|r| r.generation);
    let new_generation = new.map_or(0, |a| a.generation);
    let agent = match lease {
        Lease::Alive if holds.is_some_and(|h| h > new_generation) => Agent::HoldsNewer,
        Lease::Alive => Agent::Acts,
        Lease::Expired(_) => Agent::Lost,
        Lease::Never => Agent::NotJoined,
    };
    let (actions, artifacts) = if agent == Agent::Acts {
        // A node without an assignment must have nothing: everything it runs is stopped.
        let empty = Assignment::default();
        let target = new.unwrap_or(&empty);
        let no_report = HostReport::default();
        let host = report.unwrap_or(&no_report);
        let actions = local::actions(target, host, resources)
            .into_iter()
            .map(|a| ActionItem {
                text: a.to_string(),
                action: a,
            })
            .collect();
        let expected = expected_artifacts(set, desired, target)?;
        (actions, artifact_changes(name, &host.artifacts, &expected))
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(NodeDiff {
        node: name.to_string(),
        in_manifests: desired.nodes.contains_key(name),
        lease,
        holds,
        agent,
        fence: fence.iter().filter(|f| f.node == name).cloned().collect(),
        assignment,
        actions,
        artifacts,
    })
}

fn vm_target(t: &VmTarget) -> String {
    match t {
        VmTarget::Run => "run".to_string(),
        VmTarget::MigrateTo(n) => format!("migrate to {n}"),
        VmTarget::Incoming(n) => format!("incoming from {n}"),
    }
}

fn volume_role(r: &VolumeRole) -> String {
    match r {
        VolumeRole::Primary => "primary",
        VolumeRole::Secondary => "secondary",
    }
    .to_string()
}

/// Entry by entry: VMs, then volumes, then addresses, each sorted by name.
fn assignment_lines(old: Option<&Assignment>, new: Option<&Assignment>) -> Vec<AssignmentLine> {
    fn compare<V>(
        out: &mut Vec<AssignmentLine>,
        kind: &str,
        old: BTreeMap<&String, V>,
        new: BTreeMap<&String, V>,
        show: impl Fn(&V) -> String,
    ) {
        let keys: BTreeSet<&&String> = old.keys().chain(new.keys()).collect();
        for key in keys {
            let (a, b) = (old.get(*key).map(&show), new.get(*key).map(&show));
            let change = match (&a, &b) {
                (Some(x), Some(y)) if x == y => continue,
                (Some(_), Some(_)) => ChangeKind::Changed,
                (Some(_), None) => ChangeKind::Removed,
                (None, Some(_)) => ChangeKind::Added,
                (None, None) => continue,
            };
            out.push(AssignmentLine {
                change,
                item: format!("{kind} {key}"),
                from: a,
                to: b,
            });
        }
    }
    let empty = Assignment::default();
    let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let mut out = Vec::new();
    compare(
        &mut out,
        "vm",
        old.vms.iter().collect(),
        new.vms.iter().collect(),
        |t| vm_target(t),
    );
    compare(
        &mut out,
        "volume",
        old.volumes.iter().collect(),
        new.volumes.iter().collect(),
        |r| volume_role(r),
    );
    compare(
        &mut out,
        "vip",
        old.vips.iter().map(|v| (v, ())).collect(),
        new.vips.iter().map(|v| (v, ())).collect(),
        |_| "hold".to_string(),
    );
    out
}

/// The files that differ between the host's and the expected ones, sorted by path.
fn artifact_changes(
    node: &str,
    host: &BTreeMap<String, String>,
    expected: &BTreeMap<String, String>,
) -> Vec<ArtifactChange> {
    let paths: BTreeSet<&String> = host.keys().chain(expected.keys()).collect();
    let label = |side: &str, path: &str| format!("{side}/{node}/{}", path.trim_start_matches('/'));
    let mut out = Vec::new();
    for path in paths {
        let want = expected.get(path);
        let have = host.get(path).map(|text| {
            // The rendered file's placeholder (naming the secret's reference), so that a host
            // file that matches apart from the secret value compares equal.
            let placeholder = want
                .and_then(|w| secret_tokens(w).first().map(|&(a, b)| w[a..b].to_string()))
                .unwrap_or_else(|| REDACTED.to_string());
            redact_secrets(text, &placeholder)
        });
        let (change, old_label, new_label) = match (&have, want) {
            (Some(h), Some(w)) if h == w => continue,
            (Some(_), Some(_)) => (ChangeKind::Changed, label("a", path), label("b", path)),
            (None, Some(_)) => (ChangeKind::Added, "/dev/null".to_string(), label("b", path)),
            (Some(_), None) => (
                ChangeKind::Removed,
                label("a", path),
                "/dev/null".to_string(),
            ),
            (None, None) => continue,
        };
        let diff = unified_labelled(
            have.as_deref().unwrap_or(""),
            want.map_or("", String::as_str),
            &old_label,
            &new_label,
        );
        out.push(ArtifactChange {
            path: path.clone(),
            change,
            diff,
        });
    }
    out
}

/// Byte ranges of the values of every `shared-secret VALUE;` in a DRBD configuration text: a
/// quoted string (with `\` escapes) or a bare word.
fn secret_tokens(text: &str) -> Vec<(usize, usize)> {
    const KEY: &str = "shared-secret";
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(KEY) {
        let key_start = from + pos;
        let mut i = key_start + KEY.len();
        from = i;
        // Only the keyword itself: not inside a longer word, and followed by whitespace.
        let before_ok = key_start == 0 || {
            let c = bytes[key_start - 1];
            !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        };
        if !before_ok || i >= bytes.len() || !bytes[i].is_ascii_whitespace() {
            continue;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b';' {
                i += 1;
            }
        }
        if i > start {
            out.push((start, i));
        }
        from = i;
    }
    out
}

/// `text` with the value of every `shared-secret` replaced by `placeholder`.
pub fn redact_secrets(text: &str, placeholder: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (a, b) in secret_tokens(text) {
        out.push_str(&text[last..a]);
        out.push_str(placeholder);
        last = b;
    }
    out.push_str(&text[last..]);
    out
}

/// How [`ObservedDiff::to_text`] shows a diff.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// Colour the unified diffs for a terminal.
    pub color: bool,
    /// Name the files that differ without their diffs.
    pub summary: bool,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl NodeDiff {
    fn headline(&self) -> String {
        let mut s = match self.lease {
            Lease::Alive => "alive".to_string(),
            Lease::Expired(t) => format!("lease expired at {t}"),
            Lease::Never => "has never held a lease".to_string(),
        };
        if let Some(g) = self.holds {
            let _ = write!(s, ", holds generation {g}");
        }
        if !self.in_manifests {
            s.push_str(", not in the manifests");
        }
        s
    }
}

impl ObservedDiff {
    /// For people: per node what changes (nodes with nothing to do on one line), the
    /// pending waits, and a summary line (`nothing to do` when nothing would change).
    pub fn to_text(&self, opts: TextOptions) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let _ = write!(out, "\nnode {}: {}", n.node, n.headline());
            if !n.has_changes() {
                let what = match (n.agent, n.assignment.to) {
                    (Agent::NotJoined, _) => "gets no work until its agent joins",
                    (Agent::Lost, _) => "nothing to do (lost, nothing left to take from it)",
                    (_, Some(_)) => "assignment unchanged, host matches it: nothing to do",
                    (_, None) => "no assignment, host holds nothing: nothing to do",
                };
                let _ = writeln!(out, "; {what}");
                continue;
            }
            out.push('\n');
            for f in &n.fence {
                let devs = f.devices_text();
                let _ = writeln!(out, "  fence: level {} via {}", f.level, devs);
            }
            let a = &n.assignment;
            match (a.from, a.to, a.changed) {
                (_, None, _) => {
                    let _ = writeln!(out, "  no assignment");
                }
                (Some(f), Some(t), true) => {
                    let _ = writeln!(out, "  assignment generation {f} -> {t}");
                }
                (None, Some(t), true) => {
                    let _ = writeln!(out, "  assignment generation {t} (new)");
                }
                (_, Some(t), false) => {
                    let _ = writeln!(out, "  assignment generation {t} (unchanged)");
                }
            }
            for l in &a.lines {
                let _ = writeln!(out, "    {l}");
            }
            match n.agent {
                Agent::Acts => {}
                Agent::Lost => {
                    let _ = writeln!(
                        out,
                        "  its agent is lost: it takes no assignment; work leaves the node once it is fenced or past its self-fence deadline"
                    );
                }
                Agent::NotJoined => {
                    let _ = writeln!(out, "  its agent has not joined: it takes no assignment");
                }
                Agent::HoldsNewer => {
                    let _ = writeln!(
                        out,
                        "  its agent holds a newer generation and would ignore this assignment (a stale placement in the snapshot?)"
                    );
                }
            }
            if !n.actions.is_empty() {
                let _ = writeln!(out, "  agent actions, in order:");
                for (i, act) in n.actions.iter().enumerate() {
                    let _ = writeln!(out, "    {}. {}", i + 1, act.text);
                }
            }
            for f in &n.artifacts {
                let (mark, word) = match f.change {
                    ChangeKind::Added => ("+", "added"),
                    ChangeKind::Removed => ("-", "removed"),
                    ChangeKind::Changed => ("~", "changed"),
                };
                let _ = writeln!(out, "  {mark} {} {word}", f.path);
                if !opts.summary {
                    out.push_str(&if opts.color {
                        colorize(&f.diff)
                    } else {
                        f.diff.clone()
                    });
                }
            }
        }
        if !self.pending.is_empty() {
            let _ = writeln!(out, "\npending:");
            for p in &self.pending {
                let _ = writeln!(out, "  {}", p.message);
            }
        }
        let s = &self.summary;
        let pending = if s.pending > 0 {
            format!("; {} pending", s.pending)
        } else {
            String::new()
        };
        if s.changes {
            let files = s.files_added + s.files_removed + s.files_changed;
            let _ = writeln!(
                out,
                "\nwould change: {}, {}, {}, {} ({} added, {} removed, {} changed){pending}",
                plural(s.fence_requests, "fence request", "fence requests"),
                plural(s.assignments_changed, "assignment", "assignments"),
                plural(s.actions, "agent action", "agent actions"),
                plural(files, "file", "files"),
                s.files_added,
                s.files_removed,
                s.files_changed,
            );
        } else {
            let _ = writeln!(out, "\nnothing to do{pending}");
        }
        out
    }
}

/// Why a snapshot file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: cannot read the observed state: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the file is empty; expected a saved cluster state (nodes, their leases and reports; `rampart status -o yaml` writes one)")]
    Empty { path: String },
    #[error("{path}:{line}:{column}: not a saved cluster state: {message}")]
    Yaml {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: not a saved cluster state: {message}")]
    Invalid { path: String, message: String },
}

/// Read a [`Snapshot`] from a YAML (or JSON) file.
pub fn load_snapshot(path: &Path) -> Result<Snapshot, SnapshotError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| SnapshotError::Read {
        path: shown.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| SnapshotError::Invalid {
        path: shown.clone(),
        message: format!(
            "the file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })?;
    parse_snapshot(&text, &shown)
}

/// Parse a [`Snapshot`]; `path` only names the source in errors.
pub fn parse_snapshot(text: &str, path: &str) -> Result<Snapshot, SnapshotError> {
    let meaningful = text
        .lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with('#') && l != "---" && l != "...");
    if !meaningful {
        return Err(SnapshotError::Empty {
            path: path.to_string(),
        });
    }
    serde_yaml::from_str::<Snapshot>(text).map_err(|e| {
        let message = e.to_string();
        match e.location() {
            Some(loc) => {
                // serde_yaml appends " at line L column C"; the location goes in front instead.
                let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                let message = message
                    .strip_suffix(&suffix)
                    .map(str::to_string)
                    .unwrap_or(message);
                SnapshotError::Yaml {
                    path: path.to_string(),
                    line: loc.line(),
                    column: loc.column(),
                    message,
                }
            }
            None => SnapshotError::Invalid {
                path: path.to_string(),
                message,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_quoted_or_bare() {
        let host = "net {\n    shared-secret \"hunter\\\"2\";\n    cram-hmac-alg sha256;\n}\n";
        let got = redact_secrets(host, "\"<secret from /etc/x>\"");
        assert_eq!(
            got,
            "net {\n    shared-secret \"<secret from /etc/x>\";\n    cram-hmac-alg sha256;\n}\n"
        );
        assert_eq!(
            redact_secrets("net { shared-secret hunter2; }", REDACTED),
            "net { shared-secret \"<secret redacted>\"; }"
        );
        // Not the keyword: left alone.
        assert_eq!(
            redact_secrets("# my-shared-secret x\n", REDACTED),
            "# my-shared-secret x\n"
        );
        // An unterminated quote is redacted to the end, never shown.
        assert_eq!(
            redact_secrets("shared-secret \"abc", "X"),
            "shared-secret X"
        );
    }

    #[test]
    fn assignment_lines_name_what_changes() {
        let old = Assignment {
            generation: 1,
            vms: [("www".to_string(), VmTarget::Run)].into(),
            volumes: [("www".to_string(), VolumeRole::Primary)].into(),
            vips: ["www-ip".to_string()].into(),
        };
        let new = Assignment {
            generation: 2,
            volumes: [("www".to_string(), VolumeRole::Secondary)].into(),
            ..Default::default()
        };
        let lines: Vec<String> = assignment_lines(Some(&old), Some(&new))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "- vm www: run",
                "~ volume www: primary -> secondary",
                "- vip www-ip: hold"
            ]
        );
        assert!(assignment_lines(Some(&old), Some(&old)).is_empty());
    }

    #[test]
    fn snapshot_errors_name_the_file_and_position() {
        let e = parse_snapshot("now: 5\nnodes: [1, 2\n", "snap.yaml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("snap.yaml:"), "{msg}");
        assert!(matches!(e, SnapshotError::Yaml { .. }), "{msg}");
        let e = parse_snapshot("now: 5\nbogus: 1\n", "snap.yaml").unwrap_err();
        assert!(e.to_string().starts_with("snap.yaml:2:1: "), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(matches!(
            parse_snapshot("# nothing\n", "s.yaml"),
            Err(SnapshotError::Empty { .. })
        ));
        assert!(parse_snapshot("now: 5\n", "s.yaml").is_ok());
    }
}
