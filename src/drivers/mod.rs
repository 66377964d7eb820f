//! Host drivers: the narrow traits through which an agent changes its host, and the
//! controller powers nodes off.
//!
//! Each part has one trait with a real implementation (drbd-utils, libvirt, netlink, fence
//! agents and Redfish; issue #5) and a simulated one ([`sim`]) driving the simulator's
//! [`SimWorld`](crate::simulator::SimWorld). Decision code never calls a driver; it returns
//! [`Action`](crate::agent::local::Action)s that [`Drivers::apply`] carries out. Every call is
//! idempotent: doing it twice leaves the host as doing it once.

pub mod config;
pub mod drbd;
pub mod fence;
#[cfg(feature = "libvirt")]
pub mod libvirt;
pub mod net;
pub mod sim;
pub mod store_sim;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

use crate::agent::local::Action;
use crate::model::{DrbdObserved, FenceStep, HostReport, VmObserved};

/// A driver call that did not succeed: which step, and why. Retryable unless `terminal`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{step}: {message}")]
pub struct DriverError {
    pub step: String,
    pub message: String,
    /// Retrying cannot help until the input changes (a missing disk, a malformed domain).
    pub terminal: bool,
}

impl DriverError {
    pub fn new(step: impl Into<String>, message: impl Into<String>) -> Self {
        DriverError {
            step: step.into(),
            message: message.into(),
            terminal: false,
        }
    }
}

/// DRBD volumes on this host.
#[async_trait]
pub trait Drbd: Send + Sync {
    async fn status(&self) -> Result<BTreeMap<String, DrbdObserved>, DriverError>;
    /// Configure and connect the volume as Secondary (real: write the .res file, `drbdadm adjust`).
    async fn up(&self, volume: &str) -> Result<(), DriverError>;
    async fn down(&self, volume: &str) -> Result<(), DriverError>;
    async fn promote(&self, volume: &str) -> Result<(), DriverError>;
    async fn demote(&self, volume: &str) -> Result<(), DriverError>;
    /// The resource files this host has, by the path `rampart diff` shows
    /// (`/etc/drbd.d/NAME.res`), with the shared secret as the published placeholder (or
    /// `<redacted>`). For the report only; simulated hosts have none.
    async fn artifacts(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

/// Virtual machines on this host.
#[async_trait]
pub trait Vms: Send + Sync {
    async fn list(&self) -> Result<BTreeMap<String, VmObserved>, DriverError>;
    /// Define (or redefine) and start the domain.
    async fn start(&self, vm: &str) -> Result<(), DriverError>;
    /// Graceful shutdown with a timeout, then destroy.
    async fn stop(&self, vm: &str) -> Result<(), DriverError>;
    async fn migrate(&self, vm: &str, to_node: &str) -> Result<(), DriverError>;
    /// The domain definitions this host has, by the path `rampart diff` shows. For the report
    /// only; simulated hosts have none.
    async fn artifacts(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

/// Floating addresses on this host.
#[async_trait]
pub trait Addresses: Send + Sync {
    /// Floating addresses present, `ADDRESS/PREFIX`.
    async fn list(&self) -> Result<BTreeSet<String>, DriverError>;
    /// Add after a duplicate-address check, then announce with gratuitous ARP.
    async fn add(&self, address: &str) -> Result<(), DriverError>;
    /// A pass is about to add these addresses after other actions (starting the VMs they
    /// follow): a driver may start their duplicate-address checks now, beside those actions,
    /// so that the check does not add to a failover's outage. Returns at once; `add` checks
    /// again whatever was not checked here, or was checked too long ago.
    async fn prepare(&self, _addresses: &[String]) {}
    async fn remove(&self, address: &str) -> Result<(), DriverError>;
}

/// Powering a node off. `Ok` only on a positive answer that the node is off.
#[async_trait]
pub trait Fencer: Send + Sync {
    async fn fence_off(&self, node: &str, step: &FenceStep) -> Result<(), DriverError>;
}

/// One host's drivers.
#[derive(Clone)]
pub struct Drivers {
    pub drbd: Arc<dyn Drbd>,
    pub vms: Arc<dyn Vms>,
    pub addresses: Arc<dyn Addresses>,
    /// The configuration the real drivers read (the agent replaces it when the controller
    /// publishes a new one). Simulated drivers ignore it.
    pub config: config::ConfigHandle,
    /// Woken by drivers that notice a change on the host by themselves (libvirt lifecycle
    /// events, DRBD state changes), so the agent observes at once instead of at its next poll.
    pub changed: Arc<tokio::sync::Notify>,
}

impl Drivers {
    /// What the host has now.
    pub async fn observe(&self, generation: u64) -> Result<HostReport, DriverError> {
        Ok(HostReport {
            generation,
            volumes: self.drbd.status().await?,
            vms: self.vms.list().await?,
            addresses: self.addresses.list().await?,
            last_error: None,
            artifacts: Default::default(),
        })
    }

    /// The rendered files the host has (for the report `rampart diff --cluster` compares).
    pub async fn artifacts(&self) -> BTreeMap<String, String> {
        let mut out = self.drbd.artifacts().await;
        out.extend(self.vms.artifacts().await);
        out
    }

    /// Before a pass carries out `list`: the addresses it will add once the actions before
    /// them are done may be checked for duplicates meanwhile ([`Addresses::prepare`]); adds go
    /// one at a time, so even when an add comes first the later ones' probes overlap it.
    pub async fn prepare(&self, list: &[Action]) {
        let addresses: Vec<String> = list
            .iter()
            .filter_map(|a| match a {
                Action::AddAddress { address, .. } => Some(address.clone()),
                _ => None,
            })
            .collect();
        if !addresses.is_empty() {
            self.addresses.prepare(&addresses).await;
        }
    }

    /// Carry out one action.
    pub async fn apply(&self, action: &Action) -> Result<(), DriverError> {
        match action {
            Action::RemoveAddress { address, .. } => self.addresses.remove(address).await,
            Action::MigrateVm { vm, to } => self.vms.migrate(vm, to).await,
            Action::StopVm { vm } => self.vms.stop(vm).await,
            Action::Demote { volume } => self.drbd.demote(volume).await,
            Action::DownVolume { volume } => self.drbd.down(volume).await,
            Action::UpVolume { volume } => self.drbd.up(volume).await,
            Action::Promote { volume } => self.drbd.promote(volume).await,
            Action::StartVm { vm } => self.vms.start(vm).await,
            Action::AddAddress { address, .. } => self.addresses.add(address).await,
        }
    }
}
