//! What must never be seen in `rampart status -o json`, whatever the scenario: the safety
//! rules a status shows. Shared by the runtime tests on loopback and the namespace cluster.

use std::collections::BTreeMap;

use serde_json::Value;

fn entries(v: &Value) -> Vec<(&String, &Value)> {
    v.as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default()
}

/// The broken rules in status `s`: a VM running, a volume Primary or an address held on two
/// nodes (S1), a node's assignment generation going back (S4; `max_generation` keeps the
/// highest seen per node across calls).
pub fn violations(s: &Value, max_generation: &mut BTreeMap<String, u64>) -> Vec<String> {
    let mut broken = Vec::new();
    for (vm, l) in entries(&s["vms"]) {
        if l["running_on"].as_array().map_or(0, Vec::len) > 1 {
            broken.push(format!("S1: vm {vm} runs on {}", l["running_on"]));
        }
    }
    for (vol, l) in entries(&s["volumes"]) {
        if l["primary"].as_array().map_or(0, Vec::len) > 1 {
            broken.push(format!("S1: volume {vol} is Primary on {}", l["primary"]));
        }
    }
    for (vip, on) in entries(&s["vips"]) {
        if on.as_array().map_or(0, Vec::len) > 1 {
            broken.push(format!("S1: address {vip} is held by {on}"));
        }
    }
    for (n, x) in entries(&s["nodes"]) {
        if let Some(g) = x["assigned_generation"].as_u64() {
            let max = max_generation.entry(n.clone()).or_default();
            if g < *max {
                broken.push(format!(
                    "S4: the assignment of {n} went back from generation {max} to {g}"
                ));
            }
            *max = (*max).max(g);
        }
    }
    broken
}
