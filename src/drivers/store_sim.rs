//! Simulated power control through the store, for agents running as separate processes with
//! simulated hosts (`rampart agent --drivers sim`, `rampart controller --fence sim`).
//!
//! A simulated fence device writes `PREFIX/sim/power-off/NODE`; the simulated node's agent
//! sees it and powers its simulated host off (its process exits, as a machine losing power).
//! The device confirms at once, as a BMC answering "off" would. Simulation only.

use async_trait::async_trait;

use super::{DriverError, Fencer};
use crate::model::FenceStep;
use crate::store::cluster::ClusterStore;

pub fn power_off_key(cs: &ClusterStore, node: &str) -> Vec<u8> {
    cs.key(&format!("sim/power-off/{node}"))
}

/// A simulated fence device that powers simulated nodes off through the store.
pub struct StoreSimFencer {
    pub cs: ClusterStore,
    /// Devices made to fail (a dead BMC), by name.
    pub failing: std::collections::BTreeSet<String>,
}

#[async_trait]
impl Fencer for StoreSimFencer {
    async fn fence_off(&self, node: &str, step: &FenceStep) -> Result<(), DriverError> {
        let what = format!("fence {node} via {} (simulated)", step.device);
        if self.failing.contains(&step.device) {
            return Err(DriverError::new(
                what,
                "simulated fence device does not answer",
            ));
        }
        self.cs
            .store
            .put(&power_off_key(&self.cs, node), b"off", None)
            .await
            .map(|_| ())
            .map_err(|e| DriverError::new(what, e.to_string()))
    }
}
