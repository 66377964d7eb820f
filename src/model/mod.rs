//! The model the planner works on: what the manifests want ([`Desired`]), what the cluster
//! reports ([`Observed`]), and what the controller decided last time ([`Placement`],
//! [`Assignment`]).
//!
//! Everything here is plain data: built from validated manifests or read from the store,
//! serializable, and free of I/O. Times are [`Time`] values handed in by the caller; nothing
//! here reads a clock.

mod assignment;
mod desired;
mod observed;

pub use assignment::{Assignment, Placement, VmTarget, VolumeRole};
#[cfg(test)]
pub(crate) use desired::reference_desired;
pub use desired::{
    ClusterPolicy, Desired, FenceStep, NodeDesc, VipDesc, VipFollows, VmDesc, VolumeDesc,
    VolumeKind,
};
pub use observed::{
    DiskState, DrbdObserved, DrbdRole, FailedAction, FenceAttempt, HostReport, Lease, NodeObserved,
    Observed, Operations, PeerObserved, VmObserved, VmState,
};

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since an epoch chosen by whoever supplies the observed
/// state (Unix time in a real cluster, zero at the start of a simulation).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    pub fn plus(self, d: std::time::Duration) -> Time {
        Time(self.0.saturating_add(d.as_millis() as u64))
    }
    pub fn since(self, earlier: Time) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Simulation times are small; show them as seconds since the start.
        if self.0 < 10_000_000_000 {
            write!(f, "t={}.{:03}s", self.0 / 1000, self.0 % 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}
