//! The agent's local plan: from its assignment and what its host reports, the actions that
//! bring the host to the assignment, in a safe order. Pure: no I/O.
//!
//! Order, and why:
//! 1. addresses not assigned here are removed first — a floating address must be down before
//!    the VM behind it stops, and before another node may bring it up;
//! 2. VMs to hand over by live migration are migrated;
//! 3. VMs not assigned here are stopped;
//! 4. volumes assigned Secondary (or not at all) are demoted, now that nothing uses them,
//!    and volumes no longer assigned are taken down;
//! 5. volumes assigned here are brought up, then promoted where assigned Primary;
//! 6. VMs assigned here are started — after their volumes are Primary;
//! 7. addresses assigned here are added — after their VM runs.
//!
//! The executor runs the list in order and stops at the first failure; the next pass starts
//! again from what the host then reports, so every partial state is finished idempotently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Assignment, DrbdRole, HostReport, VmTarget, VolumeRole};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    RemoveAddress { vip: String, address: String },
    MigrateVm { vm: String, to: String },
    StopVm { vm: String },
    Demote { volume: String },
    DownVolume { volume: String },
    UpVolume { volume: String },
    Promote { volume: String },
    StartVm { vm: String },
    AddAddress { vip: String, address: String },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::RemoveAddress { vip, address } => write!(f, "remove address {address} ({vip})"),
            Action::MigrateVm { vm, to } => write!(f, "live-migrate vm {vm} to {to}"),
            Action::StopVm { vm } => write!(f, "stop vm {vm}"),
            Action::Demote { volume } => write!(f, "demote volume {volume} to secondary"),
            Action::DownVolume { volume } => write!(f, "take volume {volume} down"),
            Action::UpVolume { volume } => write!(f, "bring volume {volume} up (secondary)"),
            Action::Promote { volume } => write!(f, "promote volume {volume} to primary"),
            Action::StartVm { vm } => write!(f, "start vm {vm}"),
            Action::AddAddress { vip, address } => write!(f, "add address {address} ({vip})"),
        }
    }
}

/// What the agent needs to know besides the assignment: the address of each floating IP.
/// (Rendered volume and domain configs travel alongside for the real drivers.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalResources {
    /// VirtualIP name -> `ADDRESS/PREFIX`.
    pub vip_addresses: BTreeMap<String, String>,
    /// VirtualIP name -> the VM it follows, if it follows one.
    pub vip_vm: BTreeMap<String, String>,
    /// The Cluster's lease TTL and renew interval, in milliseconds.
    #[serde(default)]
    pub lease_ttl_ms: u64,
    #[serde(default)]
    pub renew_interval_ms: u64,
}

impl LocalResources {
    /// What agents need to know from the manifests of one revision.
    pub fn from_desired(d: &crate::model::Desired) -> Self {
        use crate::model::VipFollows;
        LocalResources {
            vip_addresses: d
                .vips
                .iter()
                .map(|(n, v)| (n.clone(), v.address.clone()))
                .collect(),
            vip_vm: d
                .vips
                .iter()
                .filter_map(|(n, v)| match &v.follows {
                    VipFollows::Vm(vm) => Some((n.clone(), vm.clone())),
                    VipFollows::Nodes(_) => None,
                })
                .collect(),
            lease_ttl_ms: d.cluster.lease_ttl.as_millis() as u64,
            renew_interval_ms: d.cluster.renew_interval.as_millis() as u64,
        }
    }
}

/// The ordered actions that bring `host` to `assignment`.
pub fn actions(assignment: &Assignment, host: &HostReport, res: &LocalResources) -> Vec<Action> {
    let mut out = Vec::new();
    let assigned_addresses: BTreeMap<&str, &str> = assignment
        .vips
        .iter()
        .filter_map(|v| res.vip_addresses.get(v).map(|a| (a.as_str(), v.as_str())))
        .collect();
    // 1. Addresses that must go: not assigned, or their VM is leaving this host.
    for addr in &host.addresses {
        let keep = assigned_addresses.get(addr.as_str()).is_some_and(|vip| {
            res.vip_vm
                .get(*vip)
                .is_none_or(|vm| assignment.vms.get(vm) == Some(&VmTarget::Run))
        });
        if !keep {
            // Looked up only for an address being removed: a map of every floating address
            // of the cluster, built for every node's pass, cost more than all the rest.
            let vip = res
                .vip_addresses
                .iter()
                .find(|(_, a)| *a == addr)
                .map_or("unknown", |(v, _)| v.as_str());
            out.push(Action::RemoveAddress {
                vip: vip.to_string(),
                address: addr.clone(),
            });
        }
    }
    // 2. and 3. VMs leaving.
    for (vm, obs) in &host.vms {
        if !obs.state.is_active() {
            continue;
        }
        match assignment.vms.get(vm) {
            Some(VmTarget::Run) | Some(VmTarget::Incoming(_)) => {}
            Some(VmTarget::MigrateTo(to)) => out.push(Action::MigrateVm {
                vm: vm.clone(),
                to: to.clone(),
            }),
            None => out.push(Action::StopVm { vm: vm.clone() }),
        }
    }
    // 4. Volumes to demote or take down.
    for (vol, obs) in &host.volumes {
        match assignment.volumes.get(vol) {
            Some(VolumeRole::Primary) => {}
            Some(VolumeRole::Secondary) => {
                if obs.role == DrbdRole::Primary {
                    out.push(Action::Demote {
                        volume: vol.clone(),
                    });
                }
            }
            None => {
                if obs.role == DrbdRole::Primary {
                    out.push(Action::Demote {
                        volume: vol.clone(),
                    });
                }
                out.push(Action::DownVolume {
                    volume: vol.clone(),
                });
            }
        }
    }
    // 5. Volumes to bring up and promote.
    for (vol, role) in &assignment.volumes {
        let obs = host.volumes.get(vol);
        if obs.is_none() {
            out.push(Action::UpVolume {
                volume: vol.clone(),
            });
        }
        if *role == VolumeRole::Primary && obs.is_none_or(|o| o.role != DrbdRole::Primary) {
            out.push(Action::Promote {
                volume: vol.clone(),
            });
        }
    }
    // 6. VMs to start.
    for (vm, target) in &assignment.vms {
        if *target == VmTarget::Run && !host.vm_running(vm) {
            out.push(Action::StartVm { vm: vm.clone() });
        }
    }
    // 7. Addresses to add, once their VM runs (it was started above if it wasn't).
    for (addr, vip) in &assigned_addresses {
        if host.addresses.contains(*addr) {
            continue;
        }
        let vm_ok = res
            .vip_vm
            .get(*vip)
            .is_none_or(|vm| assignment.vms.get(vm) == Some(&VmTarget::Run));
        if vm_ok {
            out.push(Action::AddAddress {
                vip: vip.to_string(),
                address: addr.to_string(),
            });
        }
    }
    out
}

/// Everything off: what an agent does when it cannot renew its lease (S3).
pub fn self_demote(host: &HostReport, res: &LocalResources) -> Vec<Action> {
    let empty = Assignment {
        volumes: host
            .volumes
            .keys()
            .map(|v| (v.clone(), VolumeRole::Secondary))
            .collect(),
        ..Default::default()
    };
    actions(&empty, host, res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DiskState, DrbdObserved, VmObserved, VmState};

    fn res() -> LocalResources {
        LocalResources {
            vip_addresses: [("www-ip".to_string(), "192.0.2.10/24".to_string())].into(),
            vip_vm: [("www-ip".to_string(), "www".to_string())].into(),
            ..Default::default()
        }
    }

    fn drbd(role: DrbdRole) -> DrbdObserved {
        DrbdObserved {
            role,
            disk: DiskState::UpToDate,
            peers: Default::default(),
            out_of_sync_kib: 0,
            split_brain: false,
        }
    }

    #[test]
    fn start_orders_promote_then_vm_then_address() {
        let a = Assignment {
            generation: 1,
            vms: [("www".to_string(), VmTarget::Run)].into(),
            volumes: [("www".to_string(), VolumeRole::Primary)].into(),
            vips: ["www-ip".to_string()].into(),
        };
        let got = actions(&a, &HostReport::default(), &res());
        assert_eq!(
            got,
            vec![
                Action::UpVolume {
                    volume: "www".into()
                },
                Action::Promote {
                    volume: "www".into()
                },
                Action::StartVm { vm: "www".into() },
                Action::AddAddress {
                    vip: "www-ip".into(),
                    address: "192.0.2.10/24".into()
                },
            ]
        );
    }

    #[test]
    fn stop_orders_address_then_vm_then_demote() {
        let host = HostReport {
            generation: 1,
            volumes: [("www".to_string(), drbd(DrbdRole::Primary))].into(),
            vms: [(
                "www".to_string(),
                VmObserved {
                    state: VmState::Running,
                },
            )]
            .into(),
            addresses: ["192.0.2.10/24".to_string()].into(),
            last_error: None,
            artifacts: Default::default(),
        };
        let a = Assignment {
            generation: 2,
            volumes: [("www".to_string(), VolumeRole::Secondary)].into(),
            ..Default::default()
        };
        assert_eq!(
            actions(&a, &host, &res()),
            vec![
                Action::RemoveAddress {
                    vip: "www-ip".into(),
                    address: "192.0.2.10/24".into()
                },
                Action::StopVm { vm: "www".into() },
                Action::Demote {
                    volume: "www".into()
                },
            ]
        );
        assert_eq!(self_demote(&host, &res()), actions(&a, &host, &res()));
        // A converged host needs nothing.
        let done = HostReport {
            generation: 2,
            volumes: [("www".to_string(), drbd(DrbdRole::Secondary))].into(),
            ..Default::default()
        };
        assert!(actions(&a, &done, &res()).is_empty());
    }
}
