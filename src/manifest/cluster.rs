//! The `Cluster` kind: cluster-wide policy. Exactly one per cluster.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Lease and timeout settings. Every field has a default.
    #[serde(default)]
    pub timing: Timing,
    /// What agents do when their node loses contact with the store's majority.
    #[serde(default)]
    pub no_quorum_policy: NoQuorumPolicy,
    /// Whether work returns to a node that recovers. Default `none`: a recovered node gets
    /// nothing back by itself.
    #[serde(default)]
    pub failback: Failback,
    /// While true, placement is frozen: nothing is started, stopped or moved, nothing is fenced.
    #[serde(default)]
    pub maintenance: bool,
    /// `required` (the default): every node that can host work needs a fencing level.
    /// `disabled` says plainly that the cluster runs without fencing; work then moves only
    /// after a node's self-fence deadline, and every validation run warns about it.
    #[serde(default)]
    pub fencing: FencingPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timing {
    /// How long a node stays alive in the store without renewing its lease.
    #[serde(default = "Timing::default_lease_ttl", rename = "leaseTTL")]
    pub lease_ttl: Duration,
    /// How often agents renew their lease. Must be well inside `leaseTTL` (at most a third).
    #[serde(default = "Timing::default_renew_interval")]
    pub renew_interval: Duration,
    /// How long one fence action may take before it counts as failed.
    #[serde(default = "Timing::default_fence_timeout")]
    pub fence_timeout: Duration,
    /// How long a VM gets to shut down gracefully before it is destroyed.
    #[serde(default = "Timing::default_stop_timeout")]
    pub stop_timeout: Duration,
    /// How long a VM gets to reach `running` after it was started.
    #[serde(default = "Timing::default_start_timeout")]
    pub start_timeout: Duration,
    /// Find a dead hypervisor sooner than its lease: the leading controller probes every
    /// fenceable node's agent (UDP, four probes per timeout) and, when one that has answered
    /// stays silent this long, revokes its lease, which starts fencing at once (corosync's
    /// token timeout plays this part in a Pacemaker cluster). Work still moves only after
    /// the node is confirmed off, so a false alarm costs a fenced node, never safety. Used
    /// only with `fencing: required`, for nodes with fencing levels and no watchdog. Off when
    /// unset; must be shorter than `leaseTTL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<Duration>,
}

impl Timing {
    fn default_lease_ttl() -> Duration {
        Duration::from_secs(10)
    }
    fn default_renew_interval() -> Duration {
        Duration::from_secs(2)
    }
    fn default_fence_timeout() -> Duration {
        Duration::from_secs(60)
    }
    fn default_stop_timeout() -> Duration {
        Duration::from_secs(120)
    }
    fn default_start_timeout() -> Duration {
        Duration::from_secs(120)
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_ttl: Self::default_lease_ttl(),
            renew_interval: Self::default_renew_interval(),
            fence_timeout: Self::default_fence_timeout(),
            stop_timeout: Self::default_stop_timeout(),
            start_timeout: Self::default_start_timeout(),
            heartbeat_timeout: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NoQuorumPolicy {
    /// Keep running what runs, start and move nothing (Pacemaker's `no-quorum-policy=freeze`).
    #[default]
    Freeze,
    /// Stop everything on the nodes without quorum (Pacemaker's `stop`).
    Stop,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Failback {
    /// Work stays where it is after its preferred node recovers.
    #[default]
    None,
    /// Work moves back to its most preferred node once that node is healthy again.
    Automatic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FencingPolicy {
    #[default]
    Required,
    Disabled,
}
