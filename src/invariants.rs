//! The one invariant checker for the safety rules of DESIGN.md, run over every plan and every
//! simulated step in the tests, the simulator and the demo.
//!
//! It is written independently of the planner, in the plainest terms, so that a planner bug
//! shows up as a violation here rather than being repeated.
//!
//! - S1: at most one node holds a VIP, runs a VM, or is DRBD Primary for a volume. A node
//!   counts as a possible holder when its previous assignment gives it the resource, its
//!   report shows it, or its report is for an older generation than its assignment and it
//!   may have been given the resource (allowed to run the VM, a replica of the volume): it
//!   may still be acting on an assignment in between. A VM handed over by live migration is
//!   the destination's once the source reports it gone.
//! - S2: work leaves an unreachable node only once it is fenced or past its self-fence deadline.
//! - S3: a node whose lease has expired and that is still powered holds nothing.
//! - S4: generations never go back, and grow whenever content changes.
//! - S5: only a valid revision is ever planned — by construction: [`Desired`] can only be
//!   built from a report without errors (see `Desired::from_report`).
//! - S6: no automatic failback unless asked; VMs that may not fail over never move.

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::cluster::{Failback, FencingPolicy};
use crate::model::{
    Desired, HostReport, Lease, Observed, Placement, Time, VipFollows, VmTarget, VolumeRole,
};
use crate::planner::Plan;

/// Lookups only; violations are sorted before they are reported.
type Map<K, V> = rustc_hash::FxHashMap<K, V>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

fn v(rule: &'static str, detail: String) -> Violation {
    Violation { rule, detail }
}

/// Whether nothing can run on `node` any more: lease expired and fenced since, or past the
/// self-fence deadline.
fn safe(d: &Desired, o: &Observed, prev: &Placement, node: &str, now: Time) -> bool {
    let Some(no) = o.nodes.get(node) else {
        return true; // never seen: holds nothing
    };
    let since = match no.lease {
        Lease::Alive => return false,
        Lease::Expired(t) => t,
        Lease::Never => {
            // Never held a lease, so its agent never acted on an assignment; unless it has a
            // report (only a node that once ran has one) or was told to hold something only
            // one node may hold (the same rule `ClusterView::node_observed` applies: a node
            // that joins late gets Secondary replicas before it shows up, and holds nothing
            // exclusive by them).
            let work = prev
                .assignments
                .get(node)
                .is_some_and(|a| a.may_hold_something());
            if !work && no.report.is_none() {
                return true;
            }
            Time(0)
        }
    };
    if no.fence_attempts.iter().any(|a| a.ok && a.at >= since) {
        return true;
    }
    let watchdog = d.nodes.get(node).and_then(|n| n.watchdog);
    // The rule written out here on its own, not through `NodeObserved::lease_end`, which the
    // planner uses, so that a mistake there shows: a node whose lease was revoked early may
    // count on it for a TTL after the revoke.
    let end = match no.lease_revoked {
        Some(revoked) => since.max(revoked.plus(d.cluster.lease_ttl)),
        None => since,
    };
    match (watchdog, d.cluster.fencing) {
        (Some(w), _) => now >= end.plus(w),
        (None, FencingPolicy::Disabled) => now >= end,
        (None, FencingPolicy::Required) => false,
    }
}

/// Checks over one planning round: the plan against its inputs.
pub fn check_plan(d: &Desired, o: &Observed, prev: &Placement, plan: &Plan) -> Vec<Violation> {
    let mut out = Vec::new();
    let now = plan.now;
    let next = &plan.placement;

    // S1 within the plan: one runner per VM, one Primary per volume, one holder per VIP.
    let mut runners: Map<&str, Vec<&str>> = Map::default();
    let mut primaries: Map<&str, Vec<&str>> = Map::default();
    let mut vips: Map<&str, Vec<&str>> = Map::default();
    for (n, a) in &next.assignments {
        for (vm, t) in &a.vms {
            if matches!(t, VmTarget::Run | VmTarget::MigrateTo(_)) {
                runners.entry(vm).or_default().push(n);
            }
        }
        for (vol, r) in &a.volumes {
            if *r == VolumeRole::Primary {
                primaries.entry(vol).or_default().push(n);
            }
        }
        for vip in &a.vips {
            vips.entry(vip).or_default().push(n);
        }
    }
    for (what, m) in [
        ("vm", &runners),
        ("volume primary", &primaries),
        ("vip", &vips),
    ] {
        for (name, nodes) in m {
            if nodes.len() > 1 {
                out.push(v(
                    "S1",
                    format!("{what} {name} assigned to {}", nodes.join(" and ")),
                ));
            }
        }
    }

    // S1/S2 across time: a resource newly given to a node must be held by no other node that
    // could still be using it.
    let holds = |r: &HostReport, kind: &str, name: &str| -> bool {
        match kind {
            "vm" => r.vm_active(name),
            "volume primary" => r.primary(name),
            _ => d
                .vips
                .get(name)
                .is_some_and(|x| r.addresses.contains(&x.address)),
        }
    };
    // Whether the previous placement let `n` use the resource. A VM to hand over by live
    // migration to `to` does not count: the source never starts it again.
    let prev_holds = |n: &str, kind: &str, name: &str, to: &str| -> bool {
        prev.assignments.get(n).is_some_and(|a| match kind {
            "vm" => a
                .vms
                .get(name)
                .is_some_and(|t| *t != VmTarget::MigrateTo(to.to_string())),
            "volume primary" => a.volumes.get(name) == Some(&VolumeRole::Primary),
            _ => a.vips.contains(name),
        })
    };
    // Whether `t` was already running (or handing over) the resource: giving it again is
    // not new. Arriving by live migration is not running yet.
    let prev_runs = |t: &str, kind: &str, name: &str| -> bool {
        prev.assignments.get(t).is_some_and(|a| match kind {
            "vm" => matches!(
                a.vms.get(name),
                Some(VmTarget::Run | VmTarget::MigrateTo(_))
            ),
            "volume primary" => a.volumes.get(name) == Some(&VolumeRole::Primary),
            _ => a.vips.contains(name),
        })
    };
    // Whether any assignment may ever have given `n` the resource: it is allowed to run the
    // VM, holds a replica of the volume (or of the VM's DRBD volume), may hold the address,
    // or its host knows of it.
    let may_hold = |n: &str, kind: &str, name: &str| -> bool {
        let report = o.nodes.get(n).and_then(|x| x.report.as_ref());
        let vm_may = |vm: &str| {
            report.is_some_and(|r| r.vms.contains_key(vm))
                || d.vms.get(vm).is_some_and(|x| {
                    x.candidates.iter().any(|c| c == n)
                        || x.volumes.iter().any(|v| {
                            report.is_some_and(|r| r.volumes.contains_key(v))
                                || d.volumes
                                    .get(v)
                                    .is_some_and(|vd| vd.is_drbd() && vd.nodes().contains(&n))
                        })
                })
        };
        match kind {
            "vm" => vm_may(name),
            "volume primary" => {
                report.is_some_and(|r| r.volumes.contains_key(name))
                    || d.volumes
                        .get(name)
                        .is_some_and(|vd| vd.nodes().contains(&n))
            }
            _ => d.vips.get(name).is_some_and(|x| {
                report.is_some_and(|r| r.addresses.contains(&x.address))
                    || match &x.follows {
                        VipFollows::Vm(vm) => vm_may(vm),
                        VipFollows::Nodes(nodes) => nodes.iter().any(|m| m == n),
                    }
            }),
        }
    };
    let all_nodes: BTreeSet<&str> = o
        .nodes
        .keys()
        .map(String::as_str)
        .chain(prev.assignments.keys().map(String::as_str))
        .collect();
    for (kind, m) in [
        ("vm", &runners),
        ("volume primary", &primaries),
        ("vip", &vips),
    ] {
        for (name, nodes) in m {
            for t in nodes {
                if prev_runs(t, kind, name) {
                    continue; // not new here
                }
                for h in &all_nodes {
                    if h == t {
                        continue;
                    }
                    let report = o.nodes.get(*h).and_then(|x| x.report.as_ref());
                    let observed = report.is_some_and(|r| holds(r, kind, name));
                    let assigned = prev_holds(h, kind, name, t);
                    // A node whose report is older than its assignment may be acting on any
                    // assignment since: one that gave it this resource among them.
                    let prev_gen = prev.assignments.get(*h).map_or(0, |a| a.generation);
                    let behind = report.map_or(0, |r| r.generation) < prev_gen;
                    if !(observed || assigned || (behind && may_hold(h, kind, name))) {
                        continue;
                    }
                    let alive = o.nodes.get(*h).is_some_and(|x| x.lease == Lease::Alive);
                    let ok = if alive {
                        let prev_gen = prev.assignments.get(*h).map_or(0, |a| a.generation);
                        !assigned && !observed && report.is_some_and(|r| r.generation >= prev_gen)
                    } else {
                        safe(d, o, prev, h, now)
                    };
                    if !ok {
                        let rule = if alive { "S1" } else { "S2" };
                        out.push(v(
                            rule,
                            format!("{kind} {name} given to {t} while {h} may still hold it"),
                        ));
                    }
                }
            }
        }
    }

    // S4: generations.
    for (n, a) in &next.assignments {
        if let Some(p) = prev.assignments.get(n) {
            if a.generation < p.generation {
                out.push(v(
                    "S4",
                    format!(
                        "generation of {n} went back from {} to {}",
                        p.generation, a.generation
                    ),
                ));
            }
            if !a.same_content(p) && a.generation <= p.generation {
                out.push(v(
                    "S4",
                    format!("assignment of {n} changed without a new generation"),
                ));
            }
        }
    }

    // S6: pinned VMs never move; no failback unless asked.
    for (vm, desc) in &d.vms {
        let (Some(before), Some(after)) = (prev.vms.get(vm), next.vms.get(vm)) else {
            continue;
        };
        if before == after || !desc.candidates.contains(before) {
            continue; // unchanged, or the manifests moved it
        }
        if !desc.failover {
            out.push(v(
                "S6",
                format!("vm {vm} may not fail over but moved from {before} to {after}"),
            ));
            continue;
        }
        let healthy = o.nodes.get(before).is_some_and(|x| x.lease == Lease::Alive)
            && !o.operations.drained.contains(before);
        if healthy && d.cluster.failback == Failback::None {
            out.push(v(
                "S6",
                format!("vm {vm} moved from healthy {before} to {after} without failback"),
            ));
        }
    }
    out.sort_by(|a, b| (a.rule, &a.detail).cmp(&(b.rule, &b.detail)));
    out
}

/// What one host really has at a moment (in a simulation: the ground truth).
#[derive(Debug, Clone)]
pub struct HostTruth<'a> {
    pub powered: bool,
    /// The node's lease has expired (it is unreachable from the store's point of view).
    pub lease_expired: bool,
    pub host: &'a HostReport,
}

/// Checks over the real state of every host at one moment: S1 and S3.
pub fn check_hosts(d: &Desired, hosts: &BTreeMap<String, HostTruth<'_>>) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut vms: Map<&str, Vec<&str>> = Map::default();
    let mut primaries: Map<&str, Vec<&str>> = Map::default();
    let mut addrs: Map<&str, Vec<&str>> = Map::default();
    for (n, h) in hosts {
        if !h.powered {
            continue;
        }
        let r = h.host;
        let active: Vec<&str> = r
            .vms
            .iter()
            .filter(|(_, x)| x.state.is_active())
            .map(|(k, _)| k.as_str())
            .collect();
        let prim: Vec<&str> = r
            .volumes
            .iter()
            .filter(|(_, x)| x.role == crate::model::DrbdRole::Primary)
            .map(|(k, _)| k.as_str())
            .collect();
        for vm in &active {
            vms.entry(vm).or_default().push(n);
        }
        for vol in &prim {
            primaries.entry(vol).or_default().push(n);
        }
        for a in &r.addresses {
            addrs.entry(a).or_default().push(n);
        }
        if h.lease_expired && (!active.is_empty() || !prim.is_empty() || !r.addresses.is_empty()) {
            out.push(v(
                "S3",
                format!("{n} lost its lease but still holds vms {active:?}, primaries {prim:?}, addresses {:?}", r.addresses),
            ));
        }
    }
    for (what, m) in [
        ("vm", &vms),
        ("volume primary", &primaries),
        ("address", &addrs),
    ] {
        for (name, nodes) in m {
            if nodes.len() > 1 {
                out.push(v(
                    "S1",
                    format!("{what} {name} held by {} at once", nodes.join(" and ")),
                ));
            }
        }
    }
    let _ = d;
    out.sort_by(|a, b| (a.rule, &a.detail).cmp(&(b.rule, &b.detail)));
    out
}

#[cfg(test)]
mod tests {
    /// A node that has not joined yet was told to hold only Secondary replicas: granting the
    /// VM on another node is no S2 breach (it happened in the demo once the controller
    /// planned on store watches, before the late node's first lease).
    #[test]
    fn a_node_not_yet_joined_with_only_secondaries_holds_nothing() {
        use crate::model::{Assignment, Lease, NodeObserved, VolumeRole};
        let d = reference();
        let mut o = Observed::default();
        o.nodes.insert(
            "beta".into(),
            NodeObserved {
                lease: Lease::Never,
                fence_attempts: vec![],
                report: None,
                lease_revoked: None,
            },
        );
        let mut prev = Placement::default();
        let mut a = Assignment {
            generation: 1,
            ..Default::default()
        };
        a.volumes.insert("files".into(), VolumeRole::Secondary);
        prev.assignments.insert("beta".into(), a.clone());
        assert!(safe(&d, &o, &prev, "beta", Time(5)));
        // Told to be Primary, it might have acted on it had it ever run: not safe.
        a.volumes.insert("files".into(), VolumeRole::Primary);
        prev.assignments.insert("beta".into(), a);
        assert!(!safe(&d, &o, &prev, "beta", Time(5)));
    }

    use super::*;
    use crate::model::{Assignment, NodeObserved, VmObserved, VmState};

    /// A node with a watchdog whose lease was revoked early may count on it for a TTL after
    /// the revoke, so its self-fence deadline is a watchdog timeout after that, not after the
    /// moment the lease was found gone.
    #[test]
    fn an_early_revoke_puts_the_self_fence_deadline_a_ttl_later() {
        let mut d = reference();
        let w = std::time::Duration::from_secs(5);
        d.nodes.get_mut("beta").unwrap().watchdog = Some(w);
        d.cluster.fencing = crate::manifest::cluster::FencingPolicy::Required;
        let ttl = d.cluster.lease_ttl;
        let (revoked, since) = (Time(50_000), Time(51_000));
        let mut o = Observed::default();
        o.nodes.insert(
            "beta".into(),
            NodeObserved {
                lease: Lease::Expired(since),
                fence_attempts: vec![],
                report: None,
                lease_revoked: Some(revoked),
            },
        );
        let prev = Placement::default();
        let deadline = revoked.plus(ttl).plus(w);
        assert!(since.plus(w) < deadline);
        assert!(!safe(&d, &o, &prev, "beta", since.plus(w)));
        assert!(!safe(&d, &o, &prev, "beta", Time(deadline.0 - 1)));
        assert!(safe(&d, &o, &prev, "beta", deadline));
        // Without the revoke, the deadline counts from when the lease was found gone.
        o.nodes.get_mut("beta").unwrap().lease_revoked = None;
        assert!(safe(&d, &o, &prev, "beta", since.plus(w)));
    }

    fn reference() -> Desired {
        crate::model::reference_desired()
    }

    fn assignment(generation: u64, vms: &[(&str, VmTarget)]) -> Assignment {
        Assignment {
            generation,
            vms: vms
                .iter()
                .map(|(v, t)| (v.to_string(), t.clone()))
                .collect(),
            ..Default::default()
        }
    }

    fn node(generation: u64, vms: &[(&str, VmState)]) -> NodeObserved {
        NodeObserved {
            lease: Lease::Alive,
            fence_attempts: Vec::new(),
            lease_revoked: None,
            report: Some(HostReport {
                generation,
                vms: vms
                    .iter()
                    .map(|(v, s)| (v.to_string(), VmObserved { state: *s }))
                    .collect(),
                ..Default::default()
            }),
        }
    }

    fn plan_giving_alpha(vm: &str, prev: &Placement) -> Plan {
        let mut placement = prev.clone();
        let a = placement.assignments.get_mut("alpha").unwrap();
        a.generation += 1;
        a.vms.insert(vm.to_string(), VmTarget::Run);
        let b = placement.assignments.get_mut("beta").unwrap();
        if b.vms.remove(vm).is_some() {
            b.generation += 1;
        }
        Plan {
            now: Time(100_000),
            placement,
            fence: Vec::new(),
            pending: Vec::new(),
            vms: BTreeMap::new(),
        }
    }

    /// beta was told (generation 5) to let go of www but has only reported generation 4, in
    /// which it may still be told to run it: giving www to alpha now breaks S1, although no
    /// report shows www running anywhere.
    #[test]
    fn a_node_behind_its_assignment_may_still_hold_what_it_was_given() {
        let d = reference();
        let prev = Placement {
            assignments: [
                ("alpha".to_string(), assignment(3, &[])),
                ("beta".to_string(), assignment(5, &[])),
            ]
            .into(),
            ..Default::default()
        };
        let mut o = Observed::default();
        o.nodes.insert("alpha".into(), node(3, &[]));
        o.nodes
            .insert("beta".into(), node(4, &[("www", VmState::Shutoff)]));
        let plan = plan_giving_alpha("www", &prev);
        let v = check_plan(&d, &o, &prev, &plan);
        assert!(
            v.iter().any(|v| v.rule == "S1" && v.detail.contains("www")),
            "{v:?}"
        );
        // Once beta reports generation 5, alpha may have it.
        o.nodes
            .insert("beta".into(), node(5, &[("www", VmState::Shutoff)]));
        assert_eq!(check_plan(&d, &o, &prev, &plan), Vec::new());
    }

    /// Arriving by live migration is not running: "incoming" turning into "run" is checked
    /// like any new VM, and the source's hand-over counts only once it reports the VM gone.
    #[test]
    fn a_live_migration_is_the_destinations_once_the_source_reports_it_gone() {
        let d = reference();
        let prev = Placement {
            assignments: [
                (
                    "alpha".to_string(),
                    assignment(3, &[("www", VmTarget::Incoming("beta".into()))]),
                ),
                (
                    "beta".to_string(),
                    assignment(5, &[("www", VmTarget::MigrateTo("alpha".into()))]),
                ),
            ]
            .into(),
            ..Default::default()
        };
        let mut o = Observed::default();
        o.nodes.insert("alpha".into(), node(3, &[]));
        o.nodes
            .insert("beta".into(), node(5, &[("www", VmState::Running)]));
        let plan = plan_giving_alpha("www", &prev);
        let v = check_plan(&d, &o, &prev, &plan);
        assert!(
            v.iter().any(|v| v.rule == "S1" && v.detail.contains("www")),
            "{v:?}"
        );
        o.nodes
            .insert("alpha".into(), node(3, &[("www", VmState::Running)]));
        o.nodes.insert("beta".into(), node(5, &[]));
        assert_eq!(check_plan(&d, &o, &prev, &plan), Vec::new());
    }
}
