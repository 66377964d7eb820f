//! [`Observed`]: what the store says about the cluster — node leases, fence attempts, the last
//! report of each node's agent, and the admin's day-to-day operations (maintenance, drain).
//!
//! The same shape is read from YAML by `rampart simulate --observed` and `rampart diff
//! --observed`, and written by `rampart status -o yaml`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Time;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Observed {
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeObserved>,
    #[serde(default)]
    pub operations: Operations,
}

/// Cluster state set by the admin without editing git. It never overrides the manifests;
/// it only freezes or empties nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operations {
    /// Freeze placement, like the Cluster's `maintenance: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintenance: bool,
    /// Nodes whose work is moved off (and that get no new work).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub drained: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeObserved {
    /// `alive`, `never`, or `{expired: TIME}`.
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub lease: Lease,
    /// Fence attempts since the node was last seen alive, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fence_attempts: Vec<FenceAttempt>,
    /// The last report of the node's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<HostReport>,
    /// When the controller revoked the node's lease early, its heartbeat gone silent (see
    /// `controller::heartbeat`). The node may have counted on that lease for up to a TTL
    /// after, so a self-fence deadline counts from then on ([`NodeObserved::lease_end`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_revoked: Option<Time>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Lease {
    /// The agent renews its lease: the node is up.
    Alive,
    /// The lease ran out at this time: the node is lost until it renews again.
    Expired(Time),
    /// The node has never held a lease.
    #[default]
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FenceAttempt {
    /// Fencing level, counted from 1 as in the Node manifest (0 for a manual confirmation).
    pub level: usize,
    /// The device, or `manual` for `rampart fence confirm`.
    pub device: String,
    pub at: Time,
    /// True only on a positive answer that the node is off.
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an agent saw on its host, with the assignment generation it holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostReport {
    /// The generation of the assignment the agent holds (0: none yet).
    #[serde(default)]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, DrbdObserved>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vms: BTreeMap<String, VmObserved>,
    /// Floating addresses present on the host, `ADDRESS/PREFIX`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub addresses: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<FailedAction>,
    /// The rendered files the host has, by path (`/etc/drbd.d/NAME.res`,
    /// `/etc/libvirt/qemu/NAME.xml`), for `rampart diff --observed`. An agent reports them with
    /// the DRBD shared secret replaced by a placeholder; `diff` redacts any secret it still
    /// finds before showing a file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DrbdRole {
    Primary,
    Secondary,
    Unknown,
}

/// DRBD disk states, as `drbdsetup` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskState {
    Diskless,
    Attaching,
    Detaching,
    Failed,
    Negotiating,
    Inconsistent,
    Outdated,
    DUnknown,
    Consistent,
    UpToDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DrbdObserved {
    pub role: DrbdRole,
    pub disk: DiskState,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, PeerObserved>,
    #[serde(default, rename = "outOfSyncKiB", skip_serializing_if = "is_zero")]
    pub out_of_sync_kib: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split_brain: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerObserved {
    /// `Connected`, `Connecting`, `StandAlone`, ... as drbdsetup prints it.
    pub connection: String,
    pub disk: DiskState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VmState {
    Running,
    Paused,
    /// Shutting down, not yet off.
    Stopping,
    Crashed,
    Shutoff,
}

impl VmState {
    /// Whether the domain may be using its disks and addresses.
    pub fn is_active(self) -> bool {
        !matches!(self, VmState::Shutoff)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmObserved {
    pub state: VmState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailedAction {
    pub action: String,
    pub error: String,
    pub at: Time,
}

impl NodeObserved {
    pub fn is_alive(&self) -> bool {
        self.lease == Lease::Alive
    }

    /// The latest moment the node may still count on its lease, for a lease found gone at
    /// `since`: then, or a TTL after an early revoke. Self-fence deadlines count from here;
    /// fence attempts still count from `since`.
    pub fn lease_end(&self, since: Time, lease_ttl: std::time::Duration) -> Time {
        match self.lease_revoked {
            Some(r) => since.max(r.plus(lease_ttl)),
            None => since,
        }
    }
}

impl HostReport {
    pub fn vm_active(&self, vm: &str) -> bool {
        self.vms.get(vm).is_some_and(|v| v.state.is_active())
    }
    pub fn vm_running(&self, vm: &str) -> bool {
        self.vms
            .get(vm)
            .is_some_and(|v| v.state == VmState::Running)
    }
    pub fn primary(&self, volume: &str) -> bool {
        self.volumes
            .get(volume)
            .is_some_and(|v| v.role == DrbdRole::Primary)
    }
}
