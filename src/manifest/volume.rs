//! The `Volume` kind: storage a VM needs: a DRBD resource replicated between nodes, a disk
//! local to one node, or shared storage (iSCSI, FC) visible on several nodes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretRef;

/// Exactly one of `drbd`, `local` or `shared`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drbd: Option<Drbd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalDisk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedDisk>,
}

/// A DRBD 9 resource. Rendered into `/etc/drbd.d/NAME.res` on every replica node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Drbd {
    /// Device minor: the volume appears as `/dev/drbdMINOR`. Unique per node.
    pub minor: u32,
    /// TCP port of the replication link. Unique per node.
    pub port: u16,
    #[serde(default)]
    pub protocol: DrbdProtocol,
    /// The nodes holding a copy, with the backing disk on each.
    pub replicas: Vec<Replica>,
    /// Peer authentication secret (`shared-secret`), by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    #[serde(default)]
    pub split_brain: SplitBrain,
    /// Allow `drbdadm create-md` on a disk that has no DRBD metadata yet. Off by default so a
    /// typo in a disk path never wipes a disk.
    #[serde(default)]
    pub initialize: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Replica {
    pub node: String,
    /// Backing block device on that node, e.g. `/dev/vg0/files`.
    pub disk: String,
    /// Where DRBD keeps its metadata: `internal` (default) or a device.
    #[serde(default = "Replica::default_meta_disk")]
    pub meta_disk: String,
}

impl Replica {
    fn default_meta_disk() -> String {
        "internal".into()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DrbdProtocol {
    /// Asynchronous.
    A,
    /// Memory-synchronous.
    B,
    /// Synchronous (the default; the only safe choice for failover).
    #[default]
    C,
}

/// DRBD's automatic split-brain recovery policies (`after-sb-0pri`, `-1pri`, `-2pri`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SplitBrain {
    #[serde(default = "SplitBrain::default_zero", rename = "afterSb0Pri")]
    pub after_sb_0pri: AfterSb0Pri,
    #[serde(default = "SplitBrain::default_one", rename = "afterSb1Pri")]
    pub after_sb_1pri: AfterSb1Pri,
    #[serde(default = "SplitBrain::default_two", rename = "afterSb2Pri")]
    pub after_sb_2pri: AfterSb2Pri,
}

impl SplitBrain {
    fn default_zero() -> AfterSb0Pri {
        AfterSb0Pri::DiscardZeroChanges
    }
    fn default_one() -> AfterSb1Pri {
        AfterSb1Pri::DiscardSecondary
    }
    fn default_two() -> AfterSb2Pri {
        AfterSb2Pri::Disconnect
    }
}

impl Default for SplitBrain {
    fn default() -> Self {
        SplitBrain {
            after_sb_0pri: Self::default_zero(),
            after_sb_1pri: Self::default_one(),
            after_sb_2pri: Self::default_two(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AfterSb0Pri {
    Disconnect,
    DiscardYoungerPrimary,
    DiscardOlderPrimary,
    DiscardZeroChanges,
    DiscardLeastChanges,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AfterSb1Pri {
    Disconnect,
    Consensus,
    DiscardSecondary,
    CallPriLostAfterSb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AfterSb2Pri {
    Disconnect,
    CallPriLostAfterSb,
}

macro_rules! kebab_display {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let v = serde_yaml::to_value(self).map_err(|_| std::fmt::Error)?;
                f.write_str(v.as_str().unwrap_or_default())
            }
        }
    )*};
}
kebab_display!(AfterSb0Pri, AfterSb1Pri, AfterSb2Pri);

/// A disk that exists on one node only. A VM using it is pinned to that node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalDisk {
    pub node: String,
    /// Block device or image path on that node.
    pub path: String,
}

/// Shared storage (iSCSI, FC, multipath) reachable from several nodes at once. Rampart only
/// checks placement against `nodes`; exclusive use is guaranteed by running the VM on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SharedDisk {
    /// The same path on every node, e.g. `/dev/disk/by-id/...`.
    pub path: String,
    pub nodes: Vec<String>,
}
