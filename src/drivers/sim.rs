//! Simulated drivers: the driver traits over the simulator's [`SimWorld`]. Named as
//! simulations everywhere they appear; the demo and tests use them, never production.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Addresses, Drbd, DriverError, Drivers, Fencer, Vms};
use crate::agent::local::{Action, LocalResources};
use crate::model::{Desired, DrbdObserved, FenceStep, VmObserved};
use crate::simulator::SimWorld;

/// The simulated world shared by every simulated driver of an in-process cluster.
#[derive(Clone)]
pub struct SimShared {
    pub world: Arc<Mutex<SimWorld>>,
    pub desired: Arc<Desired>,
    pub resources: Arc<LocalResources>,
}

/// A simulated host's drivers: everything goes through [`SimWorld::apply`], which makes the
/// checks the real parts make (a second DRBD Primary refused, a VM without its Primary volume
/// refused, an address in use elsewhere refused).
pub struct SimHost {
    shared: SimShared,
    node: String,
}

impl SimHost {
    pub fn drivers(shared: &SimShared, node: &str) -> Drivers {
        let h = Arc::new(SimHost {
            shared: shared.clone(),
            node: node.to_string(),
        });
        Drivers {
            drbd: h.clone(),
            vms: h.clone(),
            addresses: h,
            config: Default::default(),
            changed: Default::default(),
        }
    }

    fn apply(&self, action: Action) -> Result<(), DriverError> {
        let mut w = self.shared.world.lock().unwrap();
        if !w.nodes.get(&self.node).is_some_and(|n| n.powered) {
            return Err(DriverError::new(
                action.to_string(),
                "simulated host is powered off",
            ));
        }
        w.apply(
            &self.shared.desired,
            &self.shared.resources,
            &self.node,
            &action,
        )
        .map_err(|e| DriverError::new(action.to_string(), e))
    }

    fn read<T>(&self, f: impl FnOnce(&crate::model::HostReport) -> T) -> Result<T, DriverError> {
        let w = self.shared.world.lock().unwrap();
        match w.nodes.get(&self.node) {
            Some(n) if n.powered => Ok(f(&n.host)),
            _ => Err(DriverError::new("observe", "simulated host is powered off")),
        }
    }
}

#[async_trait]
impl Drbd for SimHost {
    async fn status(&self) -> Result<BTreeMap<String, DrbdObserved>, DriverError> {
        self.read(|h| h.volumes.clone())
    }
    async fn up(&self, volume: &str) -> Result<(), DriverError> {
        self.apply(Action::UpVolume {
            volume: volume.into(),
        })
    }
    async fn down(&self, volume: &str) -> Result<(), DriverError> {
        self.apply(Action::DownVolume {
            volume: volume.into(),
        })
    }
    async fn promote(&self, volume: &str) -> Result<(), DriverError> {
        self.apply(Action::Promote {
            volume: volume.into(),
        })
    }
    async fn demote(&self, volume: &str) -> Result<(), DriverError> {
        self.apply(Action::Demote {
            volume: volume.into(),
        })
    }
}

#[async_trait]
impl Vms for SimHost {
    async fn list(&self) -> Result<BTreeMap<String, VmObserved>, DriverError> {
        self.read(|h| h.vms.clone())
    }
    async fn start(&self, vm: &str) -> Result<(), DriverError> {
        self.apply(Action::StartVm { vm: vm.into() })
    }
    async fn stop(&self, vm: &str) -> Result<(), DriverError> {
        self.apply(Action::StopVm { vm: vm.into() })
    }
    async fn migrate(&self, vm: &str, to_node: &str) -> Result<(), DriverError> {
        self.apply(Action::MigrateVm {
            vm: vm.into(),
            to: to_node.into(),
        })
    }
}

#[async_trait]
impl Addresses for SimHost {
    async fn list(&self) -> Result<BTreeSet<String>, DriverError> {
        self.read(|h| h.addresses.clone())
    }
    async fn add(&self, address: &str) -> Result<(), DriverError> {
        let vip = self
            .shared
            .resources
            .vip_addresses
            .iter()
            .find(|(_, a)| *a == address)
            .map(|(v, _)| v.clone())
            .unwrap_or_default();
        self.apply(Action::AddAddress {
            vip,
            address: address.into(),
        })
    }
    async fn remove(&self, address: &str) -> Result<(), DriverError> {
        self.apply(Action::RemoveAddress {
            vip: String::new(),
            address: address.into(),
        })
    }
}

/// Simulated fence devices: powering a node off in the simulated world, unless the device
/// was made to fail (`SimWorld::failing_fence_devices`).
pub struct SimFencer {
    pub shared: SimShared,
}

#[async_trait]
impl Fencer for SimFencer {
    async fn fence_off(&self, node: &str, step: &FenceStep) -> Result<(), DriverError> {
        let mut w = self.shared.world.lock().unwrap();
        if w.failing_fence_devices.contains(&step.device) {
            return Err(DriverError::new(
                format!("fence {node} via {}", step.device),
                "simulated fence device does not answer",
            ));
        }
        w.power_off(node);
        Ok(())
    }
}
