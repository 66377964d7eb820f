//! What the controller tells each node: its [`Assignment`], with a generation that only grows,
//! and the [`Placement`] it remembers between plans.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VmTarget {
    /// Run the VM here.
    Run,
    /// The VM runs here; live-migrate it to this node.
    MigrateTo(String),
    /// The VM is arriving from this node by live migration: don't start it, don't stop it.
    Incoming(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeRole {
    Primary,
    Secondary,
}

/// Everything one node must have. Anything not listed must not run there: VMs stopped,
/// addresses removed, DRBD volumes not listed taken down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Assignment {
    /// Grows by one whenever the content changes. An agent applies only a generation newer
    /// than the one it holds (S4).
    pub generation: u64,
    /// VM -> `run`, `{migrateTo: NODE}` or `{incoming: NODE}`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "serde_yaml::with::singleton_map_recursive"
    )]
    pub vms: BTreeMap<String, VmTarget>,
    /// DRBD volumes with a replica here and the role they must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeRole>,
    /// Floating addresses to hold, by VirtualIP name.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub vips: BTreeSet<String>,
}

impl Assignment {
    /// Equal apart from the generation.
    pub fn same_content(&self, other: &Assignment) -> bool {
        self.vms == other.vms && self.volumes == other.volumes && self.vips == other.vips
    }

    /// Whether the VM may be active here under this assignment (running, leaving or arriving).
    pub fn holds_vm(&self, vm: &str) -> bool {
        self.vms.contains_key(vm)
    }

    /// Whether a node acting on this assignment may hold something only one node may hold
    /// (S1): a VM, an address, a Primary role. Secondary replicas alone are not such.
    pub fn may_hold_something(&self) -> bool {
        !self.vms.is_empty()
            || !self.vips.is_empty()
            || self.volumes.values().any(|r| *r == VolumeRole::Primary)
    }

    pub fn is_empty(&self) -> bool {
        self.vms.is_empty() && self.volumes.is_empty() && self.vips.is_empty()
    }
}

/// What the controller decided last time: every node's assignment, and the node chosen for
/// each VM and node-following address (chosen even while the move waits on something).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    #[serde(default)]
    pub assignments: BTreeMap<String, Assignment>,
    /// VM -> the node it runs on or is moving to.
    #[serde(default)]
    pub vms: BTreeMap<String, String>,
    /// Node-following VirtualIP -> the node it is on or moving to.
    #[serde(default)]
    pub vips: BTreeMap<String, String>,
}
