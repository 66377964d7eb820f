//! The `VirtualIP` kind: a floating address that follows a VM or a group of nodes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualIPSpec {
    /// Address with prefix length, e.g. `192.0.2.10/24` or `2001:db8::10/64`.
    pub address: String,
    /// Host interface the address is added to, e.g. `br0`.
    pub interface: String,
    /// Optional default route through this gateway, added with the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// What the address follows: exactly one of `virtualMachine` or `nodeSelector`.
    pub follows: Follows,
    /// Gratuitous ARP (or unsolicited neighbour advertisements) sent after the address moves.
    #[serde(default)]
    pub arp: ArpAnnounce,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Follows {
    /// Run the address on whichever node runs this VM, up after the VM runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<String>,
    /// Run the address on one hypervisor whose labels match all of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArpAnnounce {
    #[serde(default = "ArpAnnounce::default_count")]
    pub count: u32,
    #[serde(default = "ArpAnnounce::default_interval")]
    pub interval: Duration,
}

impl ArpAnnounce {
    fn default_count() -> u32 {
        3
    }
    fn default_interval() -> Duration {
        Duration::from_millis(200)
    }
}

impl Default for ArpAnnounce {
    fn default() -> Self {
        ArpAnnounce {
            count: Self::default_count(),
            interval: Self::default_interval(),
        }
    }
}
