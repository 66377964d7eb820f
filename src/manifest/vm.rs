//! The `VirtualMachine` kind: a libvirt domain and where it may run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, Memory};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    #[serde(default)]
    pub hypervisor: Hypervisor,
    /// Virtual CPUs; counted against the node's capacity.
    pub cpus: u32,
    /// Memory; counted against the node's capacity.
    pub memory: Memory,
    /// The volumes this VM needs, attached in this order. Each must be available on every
    /// node the VM may run on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeAttachment>,
    /// Network interfaces of a described domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// The libvirt domain. Leave it out to have Rampart describe one from `cpus`, `memory`,
    /// `volumes` and `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Domain>,
    #[serde(default)]
    pub placement: Placement,
    /// Whether the VM restarts on another node when its node fails. Turn off for VMs pinned
    /// to local storage or redundant at the application level (DNS, shell servers).
    #[serde(default = "default_true")]
    pub failover: bool,
    /// How the VM moves when its node is drained.
    #[serde(default)]
    pub migration: Migration,
    /// Lower starts first and stops last. Default 0.
    #[serde(default)]
    pub start_order: i32,
    /// Overrides the Cluster's `timing.stopTimeout` for this VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<Duration>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Hypervisor {
    #[default]
    Kvm,
    Xen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeAttachment {
    /// Name of a Volume.
    pub volume: String,
    /// Guest device, e.g. `vda` (KVM) or `xvda` (Xen).
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Interface {
    /// Host bridge the interface is attached to.
    pub bridge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Exactly one of `xmlFile` or `xml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Domain {
    /// Path of the domain XML, relative to this manifest's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xml_file: Option<String>,
    /// The domain XML inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xml: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    /// Nodes the VM may run on (its failover domain). Default: every hypervisor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// Nodes in order of preference; the first with room wins. Must be allowed nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred: Vec<String>,
    /// VMs this one must never share a node with (symmetric).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anti_affinity: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Migration {
    /// Live-migrate when draining; fall back to stop and start if it fails.
    #[default]
    Live,
    /// Always stop on the old node and start on the new one.
    Restart,
}
