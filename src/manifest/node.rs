//! The `Node` kind: a host in the cluster, hypervisor or witness.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, Memory};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// `hypervisor` runs VMs and holds volumes; `witness` only votes in the store.
    pub role: NodeRole,
    pub addresses: NodeAddresses,
    /// What the node offers to VMs. Required for hypervisors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// Fencing levels in order: level 1 is tried first; a level succeeds only when every device
    /// in it confirms the node is off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fencing: Vec<FencingLevel>,
    /// A hardware or softdog watchdog the agent feeds; when the agent cannot renew its lease it
    /// stops feeding it, so the node resets itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<Watchdog>,
    /// Whether this node runs a member of the coordination store (etcd). Default true.
    #[serde(default = "default_true")]
    pub store_member: bool,
    /// The libvirt connection URI on this node (hypervisors only).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "libvirtURI"
    )]
    pub libvirt_uri: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NodeRole {
    Hypervisor,
    Witness,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeAddresses {
    /// Where the agent, the controller and the store member listen.
    pub management: IpAddr,
    /// The DRBD replication link (often a back-to-back crosslink). Defaults to `management`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<IpAddr>,
}

impl NodeAddresses {
    pub fn replication(&self) -> IpAddr {
        self.replication.unwrap_or(self.management)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capacity {
    pub cpus: u32,
    pub memory: Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FencingLevel {
    /// Every device in a level must confirm (for example both PDUs of a dual-PSU host).
    pub devices: Vec<FenceRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FenceRef {
    /// Name of a FenceDevice.
    pub device: String,
    /// The outlet, plug or VM name on a shared device (passed as `plug=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plug: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Watchdog {
    #[serde(default = "Watchdog::default_device")]
    pub device: String,
    /// Time from the last feed to the reset. Added to the lease TTL to give the self-fence
    /// deadline after which work may move even without fence confirmation.
    pub timeout: Duration,
}

impl Watchdog {
    fn default_device() -> String {
        "/dev/watchdog".into()
    }
}
