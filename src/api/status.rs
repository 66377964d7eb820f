//! The cluster at a glance, like `crm_mon`: nodes and leases, the leader, the applied
//! revision, each VM, volume and address with where it runs, and what is pending. Built from
//! one consistent read of the store, without the manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{Time, VmState, VolumeRole};
use crate::simulator::Snapshot;
use crate::store::cluster::ClusterView;

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub lease: String,
    pub assigned_generation: Option<u64>,
    pub held_generation: Option<u64>,
    pub drained: bool,
    pub fenced: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VmLine {
    /// The node chosen for it.
    pub placed_on: Option<String>,
    /// Nodes reporting it running.
    pub running_on: Vec<String>,
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeLine {
    pub primary: Vec<String>,
    pub secondary: Vec<String>,
    pub split_brain: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub leader: Option<String>,
    pub source: Option<serde_json::Value>,
    pub maintenance: bool,
    pub nodes: BTreeMap<String, NodeStatus>,
    pub vms: BTreeMap<String, VmLine>,
    pub volumes: BTreeMap<String, VolumeLine>,
    /// VirtualIP name -> nodes holding it.
    pub vips: BTreeMap<String, Vec<String>>,
    pub pending: Vec<String>,
    /// Store keys whose values did not decode.
    pub garbage: Vec<String>,
}

fn node_names(view: &ClusterView) -> BTreeSet<String> {
    view.leases
        .keys()
        .chain(view.reports.keys())
        .chain(view.assignments.keys())
        .chain(view.lost.keys())
        .cloned()
        .collect()
}

/// The observed state as the store holds it (for `-o yaml`, usable as `--observed`).
pub fn snapshot(view: &ClusterView, now: Time) -> Snapshot {
    Snapshot {
        now,
        nodes: node_names(view)
            .into_iter()
            .map(|n| {
                let o = view.node_observed(&n, now);
                (n, o)
            })
            .collect(),
        operations: view.operations.clone(),
        placement: Some(view.placement.clone()),
    }
}

pub fn from_view(view: &ClusterView) -> ClusterStatus {
    let mut nodes = BTreeMap::new();
    for n in node_names(view) {
        let lease = if view.leases.contains_key(&n) {
            "alive".to_string()
        } else if let Some(t) = view.lost.get(&n) {
            format!("LOST since {t}")
        } else {
            "LOST".to_string()
        };
        let report = view.reports.get(&n);
        let fenced = view
            .fence
            .get(&n)
            .and_then(|a| a.iter().rev().find(|x| x.ok))
            .map(|a| format!("fenced at {} via {}", a.at, a.device));
        nodes.insert(
            n.clone(),
            NodeStatus {
                lease,
                assigned_generation: view.assignments.get(&n).map(|a| a.generation),
                held_generation: report.map(|r| r.generation),
                drained: view.operations.drained.contains(&n),
                fenced,
                last_error: report
                    .and_then(|r| r.last_error.as_ref())
                    .map(|e| format!("{}: {} (at {})", e.action, e.error, e.at)),
            },
        );
    }
    let mut vms: BTreeMap<String, VmLine> = BTreeMap::new();
    for (vm, node) in &view.placement.vms {
        vms.entry(vm.clone()).or_insert(VmLine {
            placed_on: Some(node.clone()),
            running_on: vec![],
            state: String::new(),
        });
    }
    let mut volumes: BTreeMap<String, VolumeLine> = BTreeMap::new();
    for (n, a) in &view.assignments {
        for vm in a.vms.keys() {
            vms.entry(vm.clone()).or_insert(VmLine {
                placed_on: Some(n.clone()),
                running_on: vec![],
                state: String::new(),
            });
        }
        for (vol, role) in &a.volumes {
            let line = volumes.entry(vol.clone()).or_insert(VolumeLine {
                primary: vec![],
                secondary: vec![],
                split_brain: false,
            });
            if *role == VolumeRole::Secondary {
                line.secondary.push(n.clone());
            }
        }
    }
    let mut vips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in view.assignments.values() {
        for vip in &a.vips {
            vips.entry(vip.clone()).or_default();
        }
    }
    for (n, r) in &view.reports {
        let alive = view.leases.contains_key(n);
        for (vm, o) in &r.vms {
            if o.state == VmState::Running && alive {
                vms.entry(vm.clone())
                    .or_insert(VmLine {
                        placed_on: None,
                        running_on: vec![],
                        state: String::new(),
                    })
                    .running_on
                    .push(n.clone());
            }
        }
        for (vol, o) in &r.volumes {
            let line = volumes.entry(vol.clone()).or_insert(VolumeLine {
                primary: vec![],
                secondary: vec![],
                split_brain: false,
            });
            if alive && o.role == crate::model::DrbdRole::Primary {
                line.primary.push(n.clone());
                line.secondary.retain(|x| x != n);
            }
            line.split_brain |= o.split_brain;
        }
        if alive {
            if let Some(res) = &view.resources {
                for (vip, addr) in &res.vip_addresses {
                    if r.addresses.contains(addr) {
                        vips.entry(vip.clone()).or_default().push(n.clone());
                    }
                }
            }
        }
    }
    for (vm, line) in vms.iter_mut() {
        line.state = match (line.running_on.len(), &line.placed_on) {
            (1, Some(p)) if line.running_on[0] == *p => "running".into(),
            (1, _) => "running (moving)".into(),
            (0, Some(p)) if !view.leases.contains_key(p) => format!("DOWN ({p} lost)"),
            // Chosen for a node that is not told to run it (yet): a pinned VM on a drained
            // node stays stopped; otherwise the plan waits on something (see `pending`).
            (0, Some(p)) if !view.assignments.get(p).is_some_and(|a| a.holds_vm(vm)) => {
                if view.operations.drained.contains(p) {
                    format!("stopped ({p} drained)")
                } else {
                    "waiting".into()
                }
            }
            (0, Some(_)) => "starting".into(),
            (0, None) => "not placed".into(),
            _ => "RUNNING ON SEVERAL NODES".into(),
        };
    }
    ClusterStatus {
        leader: view.leader.clone(),
        source: view.source.clone(),
        maintenance: view.operations.maintenance,
        nodes,
        vms,
        volumes,
        vips,
        pending: view.pending.clone(),
        garbage: view.garbage.clone(),
    }
}

/// The status as a table, for people.
pub fn render_text(s: &ClusterStatus) -> String {
    let mut out = String::new();
    writeln!(out, "leader: {}", s.leader.as_deref().unwrap_or("NONE")).unwrap();
    if let Some(src) = &s.source {
        let applied = src
            .pointer("/applied/commit")
            .and_then(|v| v.as_str())
            .unwrap_or("none");
        writeln!(out, "revision: {applied}").unwrap();
        if let Some(r) = src.pointer("/refused/commit").and_then(|v| v.as_str()) {
            writeln!(
                out,
                "REFUSED revision {r}: see `rampart status -o json` for why"
            )
            .unwrap();
        }
    }
    if s.maintenance {
        writeln!(out, "MAINTENANCE MODE: placement frozen").unwrap();
    }
    writeln!(out, "\nnodes:").unwrap();
    for (n, x) in &s.nodes {
        let gen = match (x.assigned_generation, x.held_generation) {
            (Some(a), Some(h)) if a == h => format!("gen {a}"),
            (Some(a), Some(h)) => format!("gen {h} -> {a}"),
            (Some(a), None) => format!("gen ? -> {a}"),
            _ => String::new(),
        };
        let mut extra = Vec::new();
        if x.drained {
            extra.push("drained".to_string());
        }
        if let Some(f) = &x.fenced {
            extra.push(f.clone());
        }
        if let Some(e) = &x.last_error {
            extra.push(format!("last error: {e}"));
        }
        writeln!(out, "  {n:12} {:24} {gen:12} {}", x.lease, extra.join("; ")).unwrap();
    }
    writeln!(out, "\nvms:").unwrap();
    for (vm, l) in &s.vms {
        let on = if l.running_on.is_empty() {
            "-".to_string()
        } else {
            l.running_on.join(",")
        };
        writeln!(out, "  {vm:12} {on:12} {}", l.state).unwrap();
    }
    if !s.volumes.is_empty() {
        writeln!(out, "\nvolumes:").unwrap();
        for (v, l) in &s.volumes {
            let p = if l.primary.is_empty() {
                "-".to_string()
            } else {
                l.primary.join(",")
            };
            writeln!(
                out,
                "  {v:12} primary {p:12} secondary {}{}",
                l.secondary.join(","),
                if l.split_brain { "  SPLIT BRAIN" } else { "" }
            )
            .unwrap();
        }
    }
    if !s.vips.is_empty() {
        writeln!(out, "\naddresses:").unwrap();
        for (v, on) in &s.vips {
            writeln!(
                out,
                "  {v:12} {}",
                if on.is_empty() {
                    "-".to_string()
                } else {
                    on.join(",")
                }
            )
            .unwrap();
        }
    }
    if !s.pending.is_empty() {
        writeln!(out, "\npending:").unwrap();
        for p in &s.pending {
            writeln!(out, "  {p}").unwrap();
        }
    }
    if !s.garbage.is_empty() {
        writeln!(out, "\nUNREADABLE STORE KEYS (ignored):").unwrap();
        for g in &s.garbage {
            writeln!(out, "  {g}").unwrap();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cluster::ClusterStore;
    use crate::store::memory::MemoryStore;
    use crate::store::Store;

    /// Values in the store that don't decode (someone else's writes, a newer format) are
    /// reported by status, never silently taken as absent.
    #[tokio::test]
    async fn garbage_in_the_store_is_reported() {
        let store = MemoryStore::new();
        let cs = ClusterStore::new(store.clone() as std::sync::Arc<dyn Store>, "rampart/t");
        cs.store
            .put(&cs.assignment_key("alpha"), b"{not json", None)
            .await
            .unwrap();
        cs.store
            .put(&cs.report_key("beta"), b"\xff\xfe", None)
            .await
            .unwrap();
        let view = cs.view().await.unwrap();
        assert!(view.assignments.is_empty() && view.reports.is_empty());
        let st = from_view(&view);
        assert_eq!(st.garbage.len(), 2, "{:?}", st.garbage);
        let text = render_text(&st);
        assert!(text.contains("UNREADABLE STORE KEYS"), "{text}");
        assert!(text.contains("assignments/alpha"), "{text}");
        assert!(text.contains("reports/beta"), "{text}");
    }
}
