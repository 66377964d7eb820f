//! What one node's real drivers need to know from the manifests of the applied revision.
//!
//! The controller derives a [`HostConfig`] per node from the revision it applies and publishes
//! it in the store (`config/NODE`); that node's agent hands it to its drivers through a
//! [`ConfigHandle`]. The drivers look a resource up by name when an action names it. Secrets
//! never travel in it: a DRBD shared secret is a [`SecretRef`] the agent resolves on its own
//! host, and the published `.res` text carries the placeholder [`render_res_redacted`] writes.
//!
//! [`render_res_redacted`]: crate::render::drbd::render_res_redacted

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::manifest::common::SecretRef;

/// One node's configuration for its real drivers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostConfig {
    /// DRBD volumes with a replica on this node, by volume (= DRBD resource) name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeConfig>,
    /// VMs that may run on this node, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vms: BTreeMap<String, VmConfig>,
    /// Floating addresses that may be held on this node, by VirtualIP name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vips: BTreeMap<String, VipConfig>,
    /// Every other hypervisor, by node name: where a live migration goes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, PeerConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeConfig {
    /// The resource file, with the shared secret (if any) as the redacted placeholder.
    pub res: String,
    /// Where the shared secret comes from, resolved on the node when the file is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// DRBD minor: the device is `/dev/drbdMINOR`.
    pub minor: u32,
    /// This node's backing disk and meta-data disk (`internal` or a device).
    pub disk: String,
    pub meta_disk: String,
    /// The manifest allows `drbdadm create-md` on a disk that has no DRBD meta-data yet.
    #[serde(default)]
    pub initialize: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmConfig {
    /// The libvirt domain XML to define.
    pub xml: String,
    /// How long a graceful shutdown may take before the domain is destroyed, in ms.
    pub stop_timeout_ms: u64,
    /// Live migration is allowed (asked for, and every volume is shared storage).
    #[serde(default)]
    pub live_migration: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VipConfig {
    /// `ADDRESS/PREFIX`.
    pub address: String,
    /// The interface it is added on.
    pub interface: String,
    /// A default route through this gateway while the address is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Gratuitous ARPs sent after adding: how many, and how far apart in ms.
    pub arp_count: u32,
    pub arp_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerConfig {
    /// The node's management address.
    pub management: String,
    /// The node's libvirt URI as its manifest gives it, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_uri: Option<String>,
}

/// The configuration a node's drivers currently act on, shared between the agent (which
/// replaces it when the controller publishes a new one) and the drivers (which read it).
#[derive(Debug, Clone, Default)]
pub struct ConfigHandle(Arc<RwLock<Arc<HostConfig>>>);

impl ConfigHandle {
    pub fn new(config: HostConfig) -> Self {
        ConfigHandle(Arc::new(RwLock::new(Arc::new(config))))
    }
    /// The current configuration (a cheap snapshot; later replacements do not change it).
    pub fn get(&self) -> Arc<HostConfig> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set(&self, config: HostConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}
