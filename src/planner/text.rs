//! Plans as text: for `rampart simulate`, the scenario corpus (compared as text) and logs.
//! Stable by construction: everything comes out in sorted order.

use std::fmt::Write as _;

use super::Plan;
use crate::model::{Assignment, Placement, VmTarget, VolumeRole};

fn assignment_lines(a: &Assignment, out: &mut String, indent: &str) {
    for (vm, t) in &a.vms {
        let what = match t {
            VmTarget::Run => "run".to_string(),
            VmTarget::MigrateTo(n) => format!("migrate to {n}"),
            VmTarget::Incoming(n) => format!("incoming from {n}"),
        };
        writeln!(out, "{indent}vm {vm}: {what}").unwrap();
    }
    for (vol, r) in &a.volumes {
        let r = match r {
            VolumeRole::Primary => "primary",
            VolumeRole::Secondary => "secondary",
        };
        writeln!(out, "{indent}volume {vol}: {r}").unwrap();
    }
    for vip in &a.vips {
        writeln!(out, "{indent}vip {vip}").unwrap();
    }
}

/// The whole plan: fence requests, every node's assignment (marking what changed), where each
/// VM stands and what is pending.
pub fn render(plan: &Plan, prev: &Placement) -> String {
    let mut out = String::new();
    writeln!(out, "plan at {}", plan.now).unwrap();
    if !plan.fence.is_empty() {
        writeln!(out, "fence:").unwrap();
        for f in &plan.fence {
            let devs = f.devices_text();
            writeln!(out, "  {}: level {} via {}", f.node, f.level, devs).unwrap();
        }
    }
    writeln!(out, "assignments:").unwrap();
    for (node, a) in &plan.placement.assignments {
        let mark = match prev.assignments.get(node) {
            Some(p) if p == a => " (unchanged)".to_string(),
            Some(p) => format!(" (was {})", p.generation),
            None => " (new)".to_string(),
        };
        writeln!(out, "  {node} generation {}{mark}", a.generation).unwrap();
        assignment_lines(a, &mut out, "    ");
    }
    if !plan.vms.is_empty() {
        writeln!(out, "vms:").unwrap();
        for (vm, s) in &plan.vms {
            let state = match (&s.node, s.assigned) {
                (Some(n), true) => n.clone(),
                (Some(n), false) => format!("{n} (not assigned)"),
                (None, _) => "nowhere".into(),
            };
            writeln!(out, "  {vm}: {state}").unwrap();
        }
    }
    if !plan.pending.is_empty() {
        writeln!(out, "pending:").unwrap();
        for p in &plan.pending {
            writeln!(out, "  {}: {}", p.subject, p.wait).unwrap();
        }
    }
    out
}
