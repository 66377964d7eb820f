//! [`Desired`]: the cluster as the manifests of one valid revision describe it, resolved and
//! indexed for the planner (preference orders computed, anti-affinity made symmetric, which
//! volumes each VM needs and where they exist).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::cluster::{Failback, FencingPolicy, NoQuorumPolicy};
use crate::manifest::node::NodeRole;
use crate::manifest::vm::Migration;
use crate::manifest::{ManifestSet, Report};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterPolicy {
    pub name: String,
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub fence_timeout: Duration,
    /// Silence after which the controller takes a fenceable node for dead (see
    /// [`crate::controller::heartbeat`]); None: leases alone.
    #[serde(default)]
    pub heartbeat_timeout: Option<Duration>,
    pub no_quorum: NoQuorumPolicy,
    pub failback: Failback,
    pub maintenance: bool,
    pub fencing: FencingPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceStep {
    pub device: String,
    pub plug: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDesc {
    pub name: String,
    pub role: NodeRole,
    pub cpus: u32,
    pub memory_mib: u64,
    pub labels: BTreeMap<String, String>,
    /// Fencing levels in order; each level's devices must all confirm.
    pub fencing: Vec<Vec<FenceStep>>,
    /// Watchdog timeout: added to lease expiry it gives the self-fence deadline.
    pub watchdog: Option<Duration>,
    pub store_member: bool,
}

impl NodeDesc {
    pub fn is_hypervisor(&self) -> bool {
        self.role == NodeRole::Hypervisor
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeKind {
    /// DRBD: one Primary at a time, among these replica nodes.
    Drbd { replicas: Vec<String> },
    /// A disk on one node.
    Local { node: String },
    /// Shared storage seen by these nodes; no role to manage.
    Shared { nodes: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDesc {
    pub name: String,
    pub kind: VolumeKind,
    /// The VM that uses it, if any.
    pub vm: Option<String>,
}

impl VolumeDesc {
    pub fn is_drbd(&self) -> bool {
        matches!(self.kind, VolumeKind::Drbd { .. })
    }
    pub fn nodes(&self) -> Vec<&str> {
        match &self.kind {
            VolumeKind::Drbd { replicas } => replicas.iter().map(String::as_str).collect(),
            VolumeKind::Local { node } => vec![node.as_str()],
            VolumeKind::Shared { nodes } => nodes.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmDesc {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub volumes: Vec<String>,
    /// Nodes the VM may run on, most preferred first: `preferred` in order, then the other
    /// allowed nodes by name.
    pub candidates: Vec<String>,
    /// VMs it must not share a node with (made symmetric).
    pub anti_affinity: BTreeSet<String>,
    pub failover: bool,
    /// Live migration is possible: asked for, and every volume is shared storage. DRBD
    /// volumes would need two Primaries during the migration, which safety rule S1 forbids.
    pub live_migration: bool,
    pub start_order: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VipFollows {
    Vm(String),
    /// Hypervisors whose labels match the selector, by name.
    Nodes(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipDesc {
    pub name: String,
    /// `ADDRESS/PREFIX`, as written.
    pub address: String,
    pub interface: String,
    pub follows: VipFollows,
}

/// The cluster the manifests ask for. Built only from a revision that validated (S5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub cluster: ClusterPolicy,
    pub nodes: BTreeMap<String, NodeDesc>,
    pub volumes: BTreeMap<String, VolumeDesc>,
    pub vms: BTreeMap<String, VmDesc>,
    pub vips: BTreeMap<String, VipDesc>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the manifests do not validate ({errors} error{}); a revision that fails validation is never applied",
    if *errors == 1 { "" } else { "s" }
)]
pub struct Invalid {
    pub errors: usize,
}

impl Desired {
    /// Build from a validation report; refuses a report with errors, so nothing downstream
    /// can ever act on an invalid revision.
    pub fn from_report(report: &Report) -> Result<Desired, Invalid> {
        Self::judged(report, || Self::build(&report.set))
    }

    /// `built` (called only for a report without errors), or the report's errors.
    fn judged(
        report: &Report,
        built: impl FnOnce() -> Option<Desired>,
    ) -> Result<Desired, Invalid> {
        if report.has_errors() {
            let errors = report
                .diagnostics
                .iter()
                .filter(|d| d.severity == crate::manifest::Severity::Error)
                .count();
            return Err(Invalid { errors });
        }
        // Validation refuses a set without exactly one Cluster, a volume without exactly one
        // kind, and a source without manifests.
        Ok(built().expect("a valid set has one Cluster, and one kind for each volume"))
    }

    /// Load the manifests of `source` and validate them, building the desired state from them
    /// on another core meanwhile; it is kept only if they validate. The same as
    /// [`manifest::check`](crate::manifest::check) then [`Desired::from_report`], sooner.
    pub fn load(source: &dyn crate::source::Source) -> (Report, Result<Desired, Invalid>) {
        let (set, mut diagnostics) = crate::manifest::load(source);
        let (found, built) = std::thread::scope(|s| {
            let building = std::thread::Builder::new().spawn_scoped(s, || Self::build(&set));
            let found = crate::manifest::validate(&set);
            let built = match building {
                Ok(b) => b.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                // No thread to be had: one after the other.
                Err(_) => Self::build(&set),
            };
            (found, built)
        });
        diagnostics.extend(found);
        let report = Report { set, diagnostics };
        let desired = Self::judged(&report, || built);
        (report, desired)
    }

    /// The desired state of a set, or `None` where the set lacks what validation requires of
    /// it. It reads any set without panicking, valid or not: [`Desired::load`] builds it
    /// before validation has judged the set.
    fn build(set: &ManifestSet) -> Option<Desired> {
        let c = set.cluster()?;
        let t = &c.spec.timing;
        let cluster = ClusterPolicy {
            name: c.metadata.name.clone(),
            lease_ttl: t.lease_ttl.0,
            renew_interval: t.renew_interval.0,
            fence_timeout: t.fence_timeout.0,
            heartbeat_timeout: t.heartbeat_timeout.map(|h| h.0),
            no_quorum: c.spec.no_quorum_policy,
            failback: c.spec.failback,
            maintenance: c.spec.maintenance,
            fencing: c.spec.fencing,
        };
        let nodes = set
            .nodes
            .iter()
            .map(|(name, e)| {
                let s = &e.object.spec;
                let desc = NodeDesc {
                    name: name.clone(),
                    role: s.role,
                    cpus: s.capacity.as_ref().map_or(0, |c| c.cpus),
                    memory_mib: s.capacity.as_ref().map_or(0, |c| c.memory.mib),
                    labels: e.object.metadata.labels.clone(),
                    fencing: s
                        .fencing
                        .iter()
                        .map(|l| {
                            l.devices
                                .iter()
                                .map(|d| FenceStep {
                                    device: d.device.clone(),
                                    plug: d.plug.clone(),
                                })
                                .collect()
                        })
                        .collect(),
                    watchdog: s.watchdog.as_ref().map(|w| w.timeout.0),
                    store_member: s.store_member,
                };
                (name.clone(), desc)
            })
            .collect::<BTreeMap<_, _>>();
        let mut volume_vm: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, e) in &set.vms {
            for a in &e.object.spec.volumes {
                volume_vm.insert(a.volume.as_str(), name.as_str());
            }
        }
        let volumes: BTreeMap<String, VolumeDesc> = set
            .volumes
            .iter()
            .map(|(name, e)| {
                let s = &e.object.spec;
                let kind = if let Some(d) = &s.drbd {
                    VolumeKind::Drbd {
                        replicas: d.replicas.iter().map(|r| r.node.clone()).collect(),
                    }
                } else if let Some(l) = &s.local {
                    VolumeKind::Local {
                        node: l.node.clone(),
                    }
                } else {
                    VolumeKind::Shared {
                        nodes: s.shared.as_ref()?.nodes.clone(),
                    }
                };
                let desc = VolumeDesc {
                    name: name.clone(),
                    kind,
                    vm: volume_vm.get(name.as_str()).map(|s| s.to_string()),
                };
                Some((name.clone(), desc))
            })
            .collect::<Option<_>>()?;
        let hypervisors: Vec<&String> = nodes
            .values()
            .filter(|n| n.is_hypervisor())
            .map(|n| &n.name)
            .collect();
        let mut anti: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, e) in &set.vms {
            for other in &e.object.spec.placement.anti_affinity {
                anti.entry(name.clone()).or_default().insert(other.clone());
                anti.entry(other.clone()).or_default().insert(name.clone());
            }
        }
        let vms = set
            .vms
            .iter()
            .map(|(name, e)| {
                let s = &e.object.spec;
                let allowed: Vec<&String> = if s.placement.allowed.is_empty() {
                    hypervisors.clone()
                } else {
                    s.placement.allowed.iter().collect()
                };
                let mut candidates: Vec<String> = Vec::new();
                for p in &s.placement.preferred {
                    if allowed.contains(&p) && !candidates.contains(p) {
                        candidates.push(p.clone());
                    }
                }
                let mut rest: Vec<&String> = allowed
                    .iter()
                    .copied()
                    .filter(|n| !candidates.contains(n))
                    .collect();
                rest.sort();
                rest.dedup();
                candidates.extend(rest.into_iter().cloned());
                let vol_names: Vec<String> = s.volumes.iter().map(|a| a.volume.clone()).collect();
                let all_shared = vol_names.iter().all(|v| {
                    matches!(
                        volumes.get(v).map(|d| &d.kind),
                        Some(VolumeKind::Shared { .. })
                    )
                });
                let desc = VmDesc {
                    name: name.clone(),
                    cpus: s.cpus,
                    memory_mib: s.memory.mib,
                    volumes: vol_names,
                    candidates,
                    anti_affinity: anti.remove(name).unwrap_or_default(),
                    failover: s.failover,
                    live_migration: s.migration == Migration::Live && all_shared,
                    start_order: s.start_order,
                };
                (name.clone(), desc)
            })
            .collect();
        let vips = set
            .vips
            .iter()
            .map(|(name, e)| {
                let s = &e.object.spec;
                let follows = match (&s.follows.virtual_machine, &s.follows.node_selector) {
                    (Some(vm), _) => VipFollows::Vm(vm.clone()),
                    (None, sel) => {
                        let sel = sel.clone().unwrap_or_default();
                        VipFollows::Nodes(
                            nodes
                                .values()
                                .filter(|n| {
                                    n.is_hypervisor()
                                        && sel.iter().all(|(k, v)| n.labels.get(k) == Some(v))
                                })
                                .map(|n| n.name.clone())
                                .collect(),
                        )
                    }
                };
                let desc = VipDesc {
                    name: name.clone(),
                    address: s.address.clone(),
                    interface: s.interface.clone(),
                    follows,
                };
                (name.clone(), desc)
            })
            .collect();
        Some(Desired {
            cluster,
            nodes,
            volumes,
            vms,
            vips,
        })
    }

    /// Store members, for quorum.
    pub fn store_members(&self) -> impl Iterator<Item = &NodeDesc> {
        self.nodes.values().filter(|n| n.store_member)
    }

    /// Whether placement is frozen: maintenance in the manifests or set by the admin.
    pub fn in_maintenance(&self, operations: &crate::model::Operations) -> bool {
        self.cluster.maintenance || operations.maintenance
    }
}

/// The reference cluster in `manifests/`, for tests; panics with its diagnostics if it does
/// not validate.
#[cfg(test)]
pub(crate) fn reference_desired() -> Desired {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests");
    let report = crate::manifest::check(&crate::source::fs::Paths::new([dir]));
    Desired::from_report(&report).unwrap_or_else(|e| {
        let diags: Vec<String> = report.rendered().iter().map(|d| d.to_text()).collect();
        panic!(
            "the reference cluster does not validate: {e}\n{}",
            diags.join("\n")
        )
    })
}
