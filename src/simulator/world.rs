//! Simulated hosts: the ground truth a simulation runs against.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::agent::local::{Action, LocalResources};
use crate::model::Desired;
use crate::model::{
    Assignment, DiskState, DrbdObserved, DrbdRole, HostReport, Time, VmObserved, VmState,
    VolumeKind,
};

/// One simulated node.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Powered on. A fenced or crashed node is off and holds nothing.
    pub powered: bool,
    /// The agent process runs.
    pub agent_up: bool,
    /// The node reaches the store (false: cut off by a partition).
    pub connected: bool,
    /// What the host really has. Its `generation` is that of the assignment the agent holds.
    pub host: HostReport,
    /// The assignment the agent holds.
    pub held: Assignment,
    /// When the node's lease runs out unless renewed.
    pub lease_expires: Time,
    /// The last report that reached the store.
    pub last_report: Option<HostReport>,
    /// Ever held a lease.
    pub joined: bool,
}

impl SimNode {
    pub fn fresh() -> SimNode {
        SimNode {
            powered: true,
            agent_up: true,
            connected: true,
            host: HostReport::default(),
            held: Assignment::default(),
            lease_expires: Time(0),
            last_report: None,
            joined: false,
        }
    }

    /// Whether the agent can act and renew its lease.
    pub fn reachable(&self) -> bool {
        self.powered && self.agent_up && self.connected
    }
}

/// All simulated hosts, plus simulated fence devices.
#[derive(Debug, Clone, Default)]
pub struct SimWorld {
    pub nodes: BTreeMap<String, SimNode>,
    /// Fence devices that do not answer (a dead BMC, a wrong password).
    pub failing_fence_devices: BTreeSet<String>,
    /// Actions that fail on a node, by their text (`start vm www`), with the error.
    pub failing_actions: BTreeMap<(String, String), String>,
}

impl SimWorld {
    /// The powered nodes on which each VM runs now (VMs running nowhere are absent).
    pub fn running(&self) -> HashMap<&str, Vec<&str>> {
        let mut out: HashMap<&str, Vec<&str>> = HashMap::new();
        for (n, x) in self.nodes.iter().filter(|(_, x)| x.powered) {
            for (vm, o) in &x.host.vms {
                if o.state == VmState::Running {
                    out.entry(vm.as_str()).or_default().push(n.as_str());
                }
            }
        }
        out
    }

    pub fn power_off(&mut self, node: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.powered = false;
            n.agent_up = false;
            // Power off takes everything with it: VMs, addresses, DRBD roles.
            n.host.vms.clear();
            n.host.addresses.clear();
            n.host.volumes.clear();
        }
    }

    /// Power a node on with a fresh agent and an empty host, as after a reboot.
    pub fn power_on(&mut self, node: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.powered = true;
            n.agent_up = true;
            n.connected = true;
            n.host = HostReport::default();
            n.held = Assignment::default();
        }
    }

    /// Run one action on a node's simulated host, with the checks the real parts make:
    /// DRBD refuses a second Primary among connected peers, a VM does not start without its
    /// DRBD volumes Primary, an address in use elsewhere is refused (duplicate address
    /// detection).
    pub fn apply(
        &mut self,
        d: &Desired,
        res: &LocalResources,
        node: &str,
        action: &Action,
    ) -> Result<(), String> {
        if let Some(err) = self
            .failing_actions
            .get(&(node.to_string(), action.to_string()))
        {
            return Err(format!("simulated failure: {err}"));
        }
        self.apply_forced(d, res, node, action)
    }

    /// Run an action the forced way (`virsh destroy`, a forced demotion), as an agent does
    /// when it must stop everything before its lease runs out (S3): the failures scripted in
    /// `failing_actions` stand for graceful operations and do not apply. The checks the real
    /// parts make still do.
    pub fn apply_forced(
        &mut self,
        d: &Desired,
        res: &LocalResources,
        node: &str,
        action: &Action,
    ) -> Result<(), String> {
        let peers_with = |w: &SimWorld, f: &dyn Fn(&HostReport) -> bool| -> Option<String> {
            w.nodes
                .iter()
                .find(|(n, x)| *n != node && x.powered && f(&x.host))
                .map(|(n, _)| n.clone())
        };
        match action {
            Action::Promote { volume } => {
                let connected = self.nodes.get(node).is_some_and(|n| n.connected);
                let other = peers_with(self, &|h: &HostReport| h.primary(volume));
                if let (true, Some(other)) = (connected, other) {
                    return Err(format!("drbd: peer {other} is Primary for {volume}"));
                }
            }
            Action::StartVm { vm } => {
                let host = &self.nodes[node].host;
                if let Some(desc) = d.vms.get(vm) {
                    for v in &desc.volumes {
                        let drbd = d
                            .volumes
                            .get(v)
                            .is_some_and(|x| matches!(x.kind, VolumeKind::Drbd { .. }));
                        if drbd && !host.primary(v) {
                            return Err(format!("cannot open /dev/drbd of {v}: not Primary"));
                        }
                    }
                }
            }
            Action::AddAddress { address, .. } => {
                if let Some(other) =
                    peers_with(self, &|h: &HostReport| h.addresses.contains(address))
                {
                    return Err(format!("address {address} is in use by {other}"));
                }
            }
            Action::MigrateVm { vm, to } => {
                let ok = self.nodes.get(to).is_some_and(|n| n.powered);
                if !ok {
                    return Err(format!(
                        "migration of {vm} to {to}: destination unreachable"
                    ));
                }
                self.nodes.get_mut(node).unwrap().host.vms.remove(vm);
                self.nodes.get_mut(to).unwrap().host.vms.insert(
                    vm.clone(),
                    VmObserved {
                        state: VmState::Running,
                    },
                );
                return Ok(());
            }
            _ => {}
        }
        let _ = res;
        let h = &mut self.nodes.get_mut(node).ok_or("no such node")?.host;
        match action {
            Action::RemoveAddress { address, .. } => {
                h.addresses.remove(address);
            }
            Action::StopVm { vm } => {
                h.vms.insert(
                    vm.clone(),
                    VmObserved {
                        state: VmState::Shutoff,
                    },
                );
            }
            Action::Demote { volume } => {
                if let Some(v) = h.volumes.get_mut(volume) {
                    v.role = DrbdRole::Secondary;
                }
            }
            Action::DownVolume { volume } => {
                h.volumes.remove(volume);
            }
            Action::UpVolume { volume } => {
                h.volumes.insert(
                    volume.clone(),
                    DrbdObserved {
                        role: DrbdRole::Secondary,
                        disk: DiskState::UpToDate,
                        peers: Default::default(),
                        out_of_sync_kib: 0,
                        split_brain: false,
                    },
                );
            }
            Action::Promote { volume } => {
                if let Some(v) = h.volumes.get_mut(volume) {
                    v.role = DrbdRole::Primary;
                }
            }
            Action::StartVm { vm } => {
                h.vms.insert(
                    vm.clone(),
                    VmObserved {
                        state: VmState::Running,
                    },
                );
            }
            Action::AddAddress { address, .. } => {
                h.addresses.insert(address.clone());
            }
            Action::MigrateVm { .. } => unreachable!("handled above"),
        }
        Ok(())
    }
}

/// The status table: where each VM and address really is (simulated hosts).
pub fn status_table(d: &Desired, world: &SimWorld) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let w = d
        .vms
        .keys()
        .chain(d.nodes.keys())
        .map(String::len)
        .max()
        .unwrap_or(2)
        .max(4);
    writeln!(out, "  {:w$}  {:8}  {:8}  state", "node", "role", "power").unwrap();
    for (n, desc) in &d.nodes {
        let x = &world.nodes[n];
        let role = if desc.is_hypervisor() {
            "hyperv"
        } else {
            "witness"
        };
        let power = if x.powered { "on" } else { "off" };
        writeln!(
            out,
            "  {n:w$}  {role:8}  {power:8}  {}",
            if x.powered { "online" } else { "fenced / down" }
        )
        .unwrap();
    }
    writeln!(out).unwrap();
    writeln!(
        out,
        "  {:w$}  {:8}  {:8}  volumes",
        "vm", "runs on", "failover"
    )
    .unwrap();
    // Who runs each VM, holds each Primary and each address: one pass over the hosts rather
    // than every host asked about every resource.
    let running = world.running();
    let mut primaries: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut holders: HashMap<&str, Vec<&str>> = HashMap::new();
    for (n, x) in world.nodes.iter().filter(|(_, x)| x.powered) {
        for v in x.host.volumes.keys().filter(|v| x.host.primary(v)) {
            primaries.entry(v.as_str()).or_default().push(n.as_str());
        }
        for a in &x.host.addresses {
            holders.entry(a.as_str()).or_default().push(n.as_str());
        }
    }
    let on = |who: Option<&Vec<&str>>| who.map_or_else(|| "DOWN".to_string(), |v| v.join(","));
    for (vm, desc) in &d.vms {
        let vols: Vec<String> = desc
            .volumes
            .iter()
            .map(|v| match primaries.get(v.as_str()) {
                Some(p) => format!("{v} (primary on {})", p.join(",")),
                None => v.clone(),
            })
            .collect();
        writeln!(
            out,
            "  {vm:w$}  {:8}  {:8}  {}",
            on(running.get(vm.as_str())),
            if desc.failover { "yes" } else { "pinned" },
            vols.join(", ")
        )
        .unwrap();
    }
    for (vip, desc) in &d.vips {
        writeln!(
            out,
            "  vip {vip} {} on {}",
            desc.address,
            on(holders.get(desc.address.as_str()))
        )
        .unwrap();
    }
    out
}
