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
    /// The node's hardware watchdog, fed by the agent while its lease is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<WatchdogConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchdogConfig {
    /// The device, e.g. `/dev/watchdog`.
    pub device: String,
    /// Time from the last feed to the reset, in ms.
    pub timeout_ms: u64,
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
    /// Where the hypervisor keeps the definition (`/etc/libvirt/qemu/NAME.xml`), as
    /// `rampart diff` names it.
    #[serde(default)]
    pub path: String,
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

/// Every node's [`HostConfig`] for a validated revision, by node name (witnesses get an empty
/// one). `desired` must come from the same revision as `set`.
pub fn host_configs(
    set: &crate::manifest::ManifestSet,
    desired: &crate::model::Desired,
) -> Result<BTreeMap<String, HostConfig>, crate::render::RenderError> {
    use crate::model::VipFollows;
    use crate::render::{domain::render_domain, drbd::render_res_redacted};

    let mut hosts: BTreeMap<String, HostConfig> = desired
        .nodes
        .keys()
        .map(|n| (n.clone(), HostConfig::default()))
        .collect();
    for (name, e) in &set.volumes {
        let Some(d) = &e.object.spec.drbd else {
            continue;
        };
        let res = render_res_redacted(set, name)?;
        for r in &d.replicas {
            if let Some(h) = hosts.get_mut(&r.node) {
                h.volumes.insert(
                    name.clone(),
                    VolumeConfig {
                        res: res.clone(),
                        secret: d.secret.clone(),
                        minor: d.minor,
                        disk: r.disk.clone(),
                        meta_disk: r.meta_disk.clone(),
                        initialize: d.initialize,
                    },
                );
            }
        }
    }
    let default_stop = set
        .cluster()
        .map(|c| c.spec.timing.stop_timeout.0)
        .unwrap_or(std::time::Duration::from_secs(120));
    for (name, vm) in &desired.vms {
        let Some(e) = set.vms.get(name) else { continue };
        let cfg = VmConfig {
            xml: render_domain(set, name)?,
            stop_timeout_ms: e
                .object
                .spec
                .stop_timeout
                .map_or(default_stop, |d| d.0)
                .as_millis() as u64,
            live_migration: vm.live_migration,
            path: crate::diff::observed::domain_path(name, e.object.spec.hypervisor),
        };
        for n in &vm.candidates {
            if let Some(h) = hosts.get_mut(n) {
                h.vms.insert(name.clone(), cfg.clone());
            }
        }
    }
    for (name, vip) in &desired.vips {
        let Some(e) = set.vips.get(name) else {
            continue;
        };
        let s = &e.object.spec;
        let cfg = VipConfig {
            address: vip.address.clone(),
            interface: s.interface.clone(),
            gateway: s.gateway.clone(),
            arp_count: s.arp.count,
            arp_interval_ms: s.arp.interval.0.as_millis() as u64,
        };
        let nodes: &[String] = match &vip.follows {
            VipFollows::Vm(vm) => desired
                .vms
                .get(vm)
                .map(|v| v.candidates.as_slice())
                .unwrap_or_default(),
            VipFollows::Nodes(nodes) => nodes.as_slice(),
        };
        for n in nodes {
            if let Some(h) = hosts.get_mut(n) {
                h.vips.insert(name.clone(), cfg.clone());
            }
        }
    }
    let peers: BTreeMap<String, PeerConfig> = set
        .nodes
        .iter()
        .filter(|(n, _)| desired.nodes.get(*n).is_some_and(|d| d.is_hypervisor()))
        .map(|(n, e)| {
            let s = &e.object.spec;
            (
                n.clone(),
                PeerConfig {
                    management: s.addresses.management.to_string(),
                    libvirt_uri: s.libvirt_uri.clone(),
                },
            )
        })
        .collect();
    for (n, h) in hosts.iter_mut() {
        h.peers = peers
            .iter()
            .filter(|(p, _)| *p != n)
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect();
        if let Some(w) = set
            .nodes
            .get(n)
            .and_then(|e| e.object.spec.watchdog.as_ref())
        {
            h.watchdog = Some(WatchdogConfig {
                device: w.device.clone(),
                timeout_ms: w.timeout.0.as_millis() as u64,
            });
        }
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_cluster_configs_follow_placement() {
        let source =
            crate::source::fs::Paths::new([concat!(env!("CARGO_MANIFEST_DIR"), "/manifests")]);
        let report = crate::manifest::check(&source);
        let desired = crate::model::Desired::from_report(&report).unwrap();
        let hosts = host_configs(&report.set, &desired).unwrap();
        assert_eq!(
            hosts.keys().collect::<Vec<_>>(),
            desired.nodes.keys().collect::<Vec<_>>()
        );
        for (node, h) in &hosts {
            for vm in h.vms.keys() {
                assert!(desired.vms[vm].candidates.contains(node), "{vm} on {node}");
            }
            for (vol, c) in &h.volumes {
                assert!(
                    desired.volumes[vol].nodes().contains(&node.as_str()),
                    "{vol} on {node}"
                );
                assert!(
                    c.res.contains(&format!("resource \"{vol}\""))
                        || c.res.contains(&format!("resource {vol}")),
                    "{}",
                    c.res
                );
            }
            assert!(!h.peers.contains_key(node));
        }
        // The witness holds nothing.
        let witness: Vec<_> = desired
            .nodes
            .values()
            .filter(|n| !n.is_hypervisor())
            .collect();
        assert!(!witness.is_empty());
        for w in witness {
            let h = &hosts[&w.name];
            assert!(h.vms.is_empty() && h.volumes.is_empty() && h.vips.is_empty());
        }
        // Some hypervisor gets VMs, volumes and VIPs.
        assert!(hosts
            .values()
            .any(|h| !h.vms.is_empty() && !h.volumes.is_empty() && !h.vips.is_empty()));
    }
}
