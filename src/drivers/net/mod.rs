//! Real floating addresses: netlink (rtnetlink), a duplicate-address check, gratuitous ARP.
//!
//! [`NetlinkAddresses`] implements [`Addresses`] for the VIPs of the node's
//! [`HostConfig`](crate::drivers::config::HostConfig) (`vips`, looked up by address):
//!
//! - **list** reports the configured VIP addresses that are present on their configured
//!   interface with their configured prefix, spelled exactly as the configuration spells them
//!   (the agent compares strings). Every other address — the node's own, a VIP's address on
//!   another interface or with another prefix — is not reported: the agent sees only floating
//!   addresses it manages and can never plan to remove a node's own address. An address this
//!   driver added is remembered (in memory) with its [`VipConfig`] until it is removed, so a VIP
//!   dropped from the configuration while held is still listed, and can still be removed. (An
//!   agent restarted after such a change no longer knows it: see "Limits" below.) A VIP whose
//!   interface does not exist is simply not present; [`add`](Addresses::add) reports the
//!   missing interface.
//! - **add** finds the VIP by address (an address not configured is a terminal error). If the
//!   address is already on the interface it only ensures the gateway route and announces again
//!   (finishing a partial "present but not announced" state). Otherwise, for IPv4, it first
//!   makes the RFC 5227 duplicate-address check: an ARP probe (sender IP 0.0.0.0) on an
//!   `AF_PACKET` socket, repeated halfway, listening for [`NetOptions::probe_wait`]; any host
//!   answering for the address (or probing for it at the same time) makes the add fail with
//!   the host's MAC in the message. Then it adds the address (rtnetlink), the default route
//!   through the VIP's gateway if it has one, and sends `arp_count` rounds of gratuitous ARP
//!   (a broadcast announcement request and a broadcast gratuitous reply, sender = target = VIP)
//!   `arp_interval_ms` apart; the first round leaves right after the address is added, and
//!   `add` returns after the first round; the rest follow in the background and stop when the
//!   address is removed (`arp_count: 0` announces nothing).
//!   A moving VIP is down for the remove, the probe wait and the add (the probe can start
//!   early, with [`Addresses::prepare`]): with the default 60 ms wait the tests measure a
//!   client outage of ~72 ms, and the client reaches the new holder before its `add` returns.
//! - **remove** deletes the gateway route (if configured and present), then the address.
//!   Absent address, route or interface: `Ok`.
//!
//! IPv6 VIPs are added and removed the same way, but the duplicate-address check is the
//! kernel's DAD (an address whose DAD failed is removed and reported as a conflict by the next
//! `add`) and no unsolicited neighbour advertisement is sent: neighbours learn the move when
//! their entry goes stale.
//!
//! Every operation runs under a timeout ([`NetOptions::timeout`], plus the probe wait and the
//! announcement time for `add`). Netlink and packet sockets belong to the network namespace
//! of the thread that creates them; [`NetlinkAddresses::in_netns`] runs every operation on a
//! [`NetnsThread`] inside a given namespace (tests, the multi-host harness).
//!
//! Needs CAP_NET_ADMIN (addresses, routes) and CAP_NET_RAW (ARP).
//!
//! Limits: IPv4 addresses are deleted as the kernel deletes them: removing the *primary*
//! address of a subnet also removes the secondaries of that subnet unless
//! `net.ipv4.conf.IF.promote_secondaries=1` — a node normally holds its own address in the
//! VIP's subnet, which keeps VIPs secondary. A VIP removed from the manifests while an agent
//! was down stays on its interface until removed by hand.

pub mod arp;
pub mod netns;
mod packet;
mod rtnl;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

pub use netns::{netns_path, run_in_netns, NetnsThread};

use super::config::{ConfigHandle, VipConfig};
use super::{Addresses, DriverError};
use arp::format_mac;
use packet::ArpSocket;
use rtnl::{describe, errno, Link, Rtnl};

/// Tuning of [`NetlinkAddresses`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    /// How long the duplicate-address check listens for an answer to its ARP probe. A host on
    /// the same LAN answers within a millisecond or two; the wait is part of every failover's
    /// outage, so it is kept short (RFC 5227's one to two seconds are meant for hosts
    /// configuring themselves at boot, not for a takeover that is already late).
    pub probe_wait: Duration,
    /// The time limit of one operation (for `add`, on top of the probe wait and the time the
    /// gratuitous ARPs take).
    pub timeout: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            probe_wait: Duration::from_millis(60),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Floating addresses through netlink, with an ARP duplicate-address check and gratuitous ARP.
/// See the [module documentation](self).
pub struct NetlinkAddresses {
    inner: Inner,
    netns: Option<Arc<NetnsThread>>,
}

#[derive(Clone)]
struct Inner {
    config: ConfigHandle,
    options: NetOptions,
    /// Addresses this driver added and has not removed since, with the configuration they
    /// were added with.
    held: Arc<Mutex<BTreeMap<String, VipConfig>>>,
    /// Gratuitous ARPs still to be sent after an `add` returned, by address: stopped when the
    /// address is removed (announcing an address given up would pull traffic back here).
    announcing: Arc<Mutex<BTreeMap<String, tokio::task::AbortHandle>>>,
    /// Duplicate-address probes started ahead of an `add` ([`Addresses::prepare`]), by
    /// address: when each started and where its answer (who answered, if anyone) will be.
    early_probes: Arc<Mutex<BTreeMap<String, EarlyProbe>>>,
}

/// A duplicate-address probe started ahead of its `add`.
struct EarlyProbe {
    started: std::time::Instant,
    answer: tokio::sync::oneshot::Receiver<Result<Option<arp::Mac>, String>>,
}

/// How long an early probe's "nobody answered" stands for the `add` that follows it.
const EARLY_PROBE_FOR: Duration = Duration::from_secs(1);

impl NetlinkAddresses {
    /// Acting in the network namespace of whichever thread runs the operation (the agent's).
    pub fn new(config: ConfigHandle) -> Self {
        Self::with_options(config, NetOptions::default())
    }

    pub fn with_options(config: ConfigHandle, options: NetOptions) -> Self {
        NetlinkAddresses {
            inner: Inner {
                config,
                options,
                held: Default::default(),
                announcing: Default::default(),
                early_probes: Default::default(),
            },
            netns: None,
        }
    }

    /// Acting inside the network namespace `netns` (a name under /run/netns, or a path):
    /// every operation runs on a thread of its own in that namespace.
    pub fn in_netns(config: ConfigHandle, options: NetOptions, netns: &str) -> io::Result<Self> {
        let mut d = Self::with_options(config, options);
        d.netns = Some(Arc::new(NetnsThread::spawn(netns)?));
        Ok(d)
    }

    async fn on_thread<T, F, Fut>(&self, make: F) -> Result<T, DriverError>
    where
        F: FnOnce(Inner) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, DriverError>> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        match &self.netns {
            None => make(inner).await,
            Some(thread) => thread.run(move || make(inner)).await?,
        }
    }
}

#[async_trait]
impl Addresses for NetlinkAddresses {
    async fn list(&self) -> Result<BTreeSet<String>, DriverError> {
        self.on_thread(|inner| async move { inner.list().await })
            .await
    }

    async fn add(&self, address: &str) -> Result<(), DriverError> {
        let address = address.to_string();
        self.on_thread(move |inner| async move { inner.add(&address).await })
            .await
    }

    async fn prepare(&self, addresses: &[String]) {
        let addresses = addresses.to_vec();
        let _ = self
            .on_thread(move |inner| async move {
                for a in &addresses {
                    inner.start_probe(a);
                }
                Ok(())
            })
            .await;
    }

    async fn remove(&self, address: &str) -> Result<(), DriverError> {
        let address = address.to_string();
        self.on_thread(move |inner| async move { inner.remove(&address).await })
            .await
    }
}

/// `ADDRESS/PREFIX` read as an address and a prefix length valid for its family.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
    let ip: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} in {s:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("prefix {p:?} in {s:?} is not a number from 0 to {max}"))?;
    Ok((ip, prefix))
}

fn terminal(step: &str, message: impl Into<String>) -> DriverError {
    DriverError {
        step: step.to_string(),
        message: message.into(),
        terminal: true,
    }
}

fn retry(step: &str, message: impl Into<String>) -> DriverError {
    DriverError::new(step, message)
}

/// A VIP as an operation needs it.
struct Target {
    vip: VipConfig,
    ip: IpAddr,
    prefix: u8,
}

impl Inner {
    /// The configured (or held) VIP with this address.
    fn find(&self, step: &str, address: &str) -> Result<Target, DriverError> {
        let (ip, prefix) = parse_cidr(address).map_err(|e| terminal(step, e))?;
        let config = self.config.get();
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        config
            .vips
            .values()
            .chain(held.values())
            .find(|v| parse_cidr(&v.address) == Ok((ip, prefix)))
            .map(|v| Target {
                vip: v.clone(),
                ip,
                prefix,
            })
            .ok_or_else(|| {
                terminal(
                    step,
                    format!("{address} is not a VirtualIP of this node's configuration; not touching it"),
                )
            })
    }

    /// Start the duplicate-address probe for `address` in the background (IPv4 only, as in
    /// `add`; for an address already on its interface `add` does not probe, and this answer
    /// goes unused).
    fn start_probe(&self, address: &str) {
        let Ok(t) = self.find("probe", address) else {
            return;
        };
        let IpAddr::V4(v4) = t.ip else { return };
        let key = t.vip.address.clone();
        let (tx, answer) = tokio::sync::oneshot::channel();
        let wait = self.options.probe_wait;
        tokio::spawn(async move {
            let found = async {
                let iface = t.vip.interface.as_str();
                let nl = connect("probe").map_err(|e| e.to_string())?;
                let link = nl
                    .link(iface)
                    .await
                    .map_err(|e| describe(&e))?
                    .ok_or_else(|| format!("no interface {iface}"))?;
                let mac = link.mac.ok_or_else(|| format!("{iface} has no MAC"))?;
                let sock = ArpSocket::open(link.index).map_err(|e| e.to_string())?;
                packet::probe(&sock, mac, v4, wait)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            let _ = tx.send(found);
        });
        self.early_probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key,
                EarlyProbe {
                    started: std::time::Instant::now(),
                    answer,
                },
            );
    }

    /// The answer of the early probe for `address`, if one was started recently enough and
    /// finished without error (waiting for it if it still runs).
    async fn early_probe(&self, address: &str) -> Option<Option<arp::Mac>> {
        let p = self
            .early_probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(address)?;
        if p.started.elapsed() > EARLY_PROBE_FOR {
            return None;
        }
        p.answer.await.ok()?.ok()
    }

    /// Every VIP this driver may report: the configured ones and the ones it holds.
    fn known(&self) -> Vec<(VipConfig, IpAddr, u8)> {
        let config = self.config.get();
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(VipConfig, IpAddr, u8)> = Vec::new();
        for v in config.vips.values().chain(held.values()) {
            if let Ok((ip, prefix)) = parse_cidr(&v.address) {
                if !out.iter().any(|(_, i, p)| (*i, *p) == (ip, prefix)) {
                    out.push((v.clone(), ip, prefix));
                }
            }
        }
        out
    }

    async fn list(&self) -> Result<BTreeSet<String>, DriverError> {
        const STEP: &str = "list addresses";
        let known = self.known();
        if known.is_empty() {
            return Ok(BTreeSet::new());
        }
        let timeout = self.options.timeout;
        tokio::time::timeout(timeout, async {
            let nl = connect(STEP)?;
            let addrs = nl
                .addresses()
                .await
                .map_err(|e| retry(STEP, format!("netlink: {}", describe(&e))))?;
            let mut links: BTreeMap<String, Option<Link>> = BTreeMap::new();
            let mut out = BTreeSet::new();
            for (vip, ip, prefix) in known {
                if !links.contains_key(&vip.interface) {
                    let link = nl.link(&vip.interface).await.map_err(|e| {
                        retry(
                            STEP,
                            format!("interface {}: {}", vip.interface, describe(&e)),
                        )
                    })?;
                    links.insert(vip.interface.clone(), link);
                }
                let Some(link) = &links[&vip.interface] else {
                    continue;
                };
                let present = addrs.iter().any(|a| {
                    a.index == link.index && a.ip == ip && a.prefix == prefix && !a.dad_failed
                });
                // A held address found absent stays remembered until `remove` (which then
                // finds nothing to do): forgetting it here could race with an `add`.
                if present {
                    out.insert(vip.address.clone());
                }
            }
            Ok(out)
        })
        .await
        .map_err(|_| retry(STEP, format!("timed out after {timeout:?}")))?
    }

    async fn add(&self, address: &str) -> Result<(), DriverError> {
        let step = format!("add address {address}");
        let step = step.as_str();
        let t = self.find(step, address)?;
        let timeout = self.options.timeout + self.options.probe_wait;
        tokio::time::timeout(timeout, self.add_now(step, &t))
            .await
            .map_err(|_| retry(step, format!("timed out after {timeout:?}")))?
    }

    async fn add_now(&self, step: &str, t: &Target) -> Result<(), DriverError> {
        let (vip, ip, prefix) = (&t.vip, t.ip, t.prefix);
        let iface = vip.interface.as_str();
        let nl = connect(step)?;
        let link = nl
            .link(iface)
            .await
            .map_err(|e| retry(step, format!("interface {iface}: {}", describe(&e))))?
            .ok_or_else(|| {
                retry(
                    step,
                    format!("interface {iface} does not exist on this host"),
                )
            })?;
        if !link.up {
            return Err(retry(step, format!("interface {iface} is down")));
        }
        let addrs = nl
            .addresses()
            .await
            .map_err(|e| retry(step, format!("netlink: {}", describe(&e))))?;
        let mut present = false;
        for a in addrs.iter().filter(|a| a.ip == ip) {
            if a.index != link.index {
                return Err(terminal(
                    step,
                    format!("{ip} is already on another interface (index {}) of this host, not on {iface}; not adding it", a.index),
                ));
            }
            if a.prefix != prefix {
                return Err(terminal(
                    step,
                    format!("{ip} is already on {iface} as {ip}/{}, not /{prefix}; it is not this VIP's, not adding it", a.prefix),
                ));
            }
            if a.dad_failed {
                let _ = nl.del_address(a).await;
                return Err(retry(
                    step,
                    format!("{ip} is in use on the network: the kernel's duplicate address detection failed on {iface}; removed it again"),
                ));
            }
            present = true;
        }

        // IPv4: ARP needs the interface's MAC and a packet socket.
        let arp = match ip {
            IpAddr::V4(v4) => {
                let mac = link.mac.ok_or_else(|| {
                    terminal(
                        step,
                        format!("interface {iface} has no Ethernet address; cannot send ARP"),
                    )
                })?;
                let sock = ArpSocket::open(link.index)
                    .map_err(|e| retry(step, format!("open ARP socket on {iface}: {e}")))?;
                Some((sock, mac, v4))
            }
            IpAddr::V6(_) => None,
        };

        if !present {
            if let Some((sock, mac, v4)) = &arp {
                let holder = match self.early_probe(&vip.address).await {
                    Some(answer) => answer,
                    None => packet::probe(sock, *mac, *v4, self.options.probe_wait)
                        .await
                        .map_err(|e| retry(step, format!("ARP probe on {iface}: {e}")))?,
                };
                if let Some(other) = holder {
                    return Err(retry(
                        step,
                        format!(
                            "{ip} is already in use on the network: {} answered the duplicate-address ARP probe on {iface}; not adding it",
                            format_mac(&other)
                        ),
                    ));
                }
            }
            match nl.add_address(link.index, ip, prefix).await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(retry(
                        step,
                        format!("add {ip}/{prefix} on {iface}: {}", describe(&e)),
                    ))
                }
            }
            tracing::info!(address = %vip.address, interface = iface, "floating address added");
        }
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(vip.address.clone(), vip.clone());

        // The route and the first announcement. If either fails after this call added the
        // address, the address is taken off again: the agent acts only on missing addresses,
        // so one left up but unannounced (or without its route) would stay that way.
        let mut added_route = None;
        let finished = self
            .finish_add(step, &nl, &link, vip, arp, &mut added_route)
            .await;
        if let Err(mut e) = finished {
            if !present {
                // With the route this call added for it (one that was there before stays).
                let mut what = "the address was";
                if let Some(gw) = added_route {
                    if delete_default_routes(&nl, &link, gw).await.is_ok() {
                        what = "the address and the route added for it were";
                    }
                }
                let addrs = nl.addresses().await.unwrap_or_default();
                for a in addrs
                    .iter()
                    .filter(|a| a.index == link.index && a.ip == ip && a.prefix == prefix)
                {
                    let _ = nl.del_address(a).await;
                }
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&vip.address);
                e.message.push_str(&format!(
                    "; {what} taken off again, so the next pass adds it anew"
                ));
            }
            return Err(e);
        }
        Ok(())
    }

    /// After the address is up: its gateway route, then the first round of gratuitous ARP
    /// (the rest in the background). `added_route` tells the gateway of a route this call
    /// added, for the caller to take off with the address if what follows fails.
    async fn finish_add(
        &self,
        step: &str,
        nl: &Rtnl,
        link: &Link,
        vip: &VipConfig,
        arp: Option<(ArpSocket, arp::Mac, std::net::Ipv4Addr)>,
        added_route: &mut Option<IpAddr>,
    ) -> Result<(), DriverError> {
        let iface = vip.interface.as_str();
        if let Some(gateway) = &vip.gateway {
            let gw: IpAddr = gateway
                .parse()
                .map_err(|_| terminal(step, format!("gateway {gateway:?} is not an IP address")))?;
            let existing = nl
                .default_routes_via(link.index, gw)
                .await
                .map_err(|e| retry(step, format!("netlink: {}", describe(&e))))?;
            if existing.is_empty() {
                match nl.add_default_route(link.index, gw).await {
                    Ok(()) => *added_route = Some(gw),
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {
                        return Err(retry(
                            step,
                            format!("cannot add the default route via {gw} dev {iface}: another default route exists in the main table"),
                        ))
                    }
                    Err(e) => {
                        return Err(retry(
                            step,
                            format!("add default route via {gw} dev {iface}: {}", describe(&e)),
                        ))
                    }
                }
            }
        }

        if let Some((sock, mac, v4)) = arp {
            // The first round before returning: from then on the address answers here. The
            // others follow in the background, so that the next action (another address, the
            // report that ends a failover) does not wait out `count - 1` intervals.
            let interval = Duration::from_millis(vip.arp_interval_ms);
            packet::announce(&sock, mac, v4, vip.arp_count.min(1), interval)
                .await
                .map_err(|e| retry(step, format!("gratuitous ARP on {iface}: {e}")))?;
            if vip.arp_count > 1 {
                let rest = vip.arp_count - 1;
                let (address, iface) = (vip.address.clone(), iface.to_string());
                let task = tokio::spawn(async move {
                    tokio::time::sleep(interval).await;
                    if let Err(e) = packet::announce(&sock, mac, v4, rest, interval).await {
                        tracing::warn!(%address, interface = %iface, error = %e, "gratuitous ARP failed");
                    }
                });
                if let Some(old) = self
                    .announcing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(vip.address.clone(), task.abort_handle())
                {
                    old.abort();
                }
            }
        }
        Ok(())
    }

    async fn remove(&self, address: &str) -> Result<(), DriverError> {
        let step = format!("remove address {address}");
        let step = step.as_str();
        let t = self.find(step, address)?;
        if let Some(a) = self
            .announcing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&t.vip.address)
        {
            a.abort();
        }
        let timeout = self.options.timeout;
        tokio::time::timeout(timeout, self.remove_now(step, &t))
            .await
            .map_err(|_| retry(step, format!("timed out after {timeout:?}")))??;
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&t.vip.address);
        Ok(())
    }

    async fn remove_now(&self, step: &str, t: &Target) -> Result<(), DriverError> {
        let (vip, ip, prefix) = (&t.vip, t.ip, t.prefix);
        let iface = vip.interface.as_str();
        let nl = connect(step)?;
        let Some(link) = nl
            .link(iface)
            .await
            .map_err(|e| retry(step, format!("interface {iface}: {}", describe(&e))))?
        else {
            // No interface, no address on it.
            return Ok(());
        };
        if let Some(gateway) = &vip.gateway {
            if let Ok(gw) = gateway.parse::<IpAddr>() {
                delete_default_routes(&nl, &link, gw).await.map_err(|e| {
                    retry(
                        step,
                        format!(
                            "delete default route via {gw} dev {iface}: {}",
                            describe(&e)
                        ),
                    )
                })?;
            }
        }
        let addrs = nl
            .addresses()
            .await
            .map_err(|e| retry(step, format!("netlink: {}", describe(&e))))?;
        for a in addrs
            .iter()
            .filter(|a| a.index == link.index && a.ip == ip && a.prefix == prefix)
        {
            match nl.del_address(a).await {
                Ok(()) => {
                    tracing::info!(address = %vip.address, interface = iface, "floating address removed");
                }
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => {
                    return Err(retry(
                        step,
                        format!("delete {ip}/{prefix} from {iface}: {}", describe(&e)),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Every default route via `gw` on `link`; one already gone is no error.
async fn delete_default_routes(nl: &Rtnl, link: &Link, gw: IpAddr) -> Result<(), rtnetlink::Error> {
    for r in nl.default_routes_via(link.index, gw).await? {
        match nl.del_route(r).await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn connect(step: &str) -> Result<Rtnl, DriverError> {
    Rtnl::connect().map_err(|e| retry(step, format!("open netlink socket: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::config::HostConfig;

    fn vip(address: &str, interface: &str) -> VipConfig {
        VipConfig {
            address: address.into(),
            interface: interface.into(),
            gateway: None,
            arp_count: 1,
            arp_interval_ms: 0,
        }
    }

    fn inner(vips: &[(&str, VipConfig)]) -> Inner {
        let config = HostConfig {
            vips: vips
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            ..Default::default()
        };
        NetlinkAddresses::new(ConfigHandle::new(config)).inner
    }

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("10.0.0.5/24"),
            Ok(("10.0.0.5".parse().unwrap(), 24))
        );
        assert_eq!(
            parse_cidr("2001:db8::10/64"),
            Ok(("2001:db8::10".parse().unwrap(), 64))
        );
        assert!(parse_cidr("10.0.0.5").is_err());
        assert!(parse_cidr("10.0.0.5/33").unwrap_err().contains("0 to 32"));
        assert!(parse_cidr("2001:db8::1/129").is_err());
        assert!(parse_cidr("10.0.0/24").is_err());
        assert!(parse_cidr("10.0.0.5/x").is_err());
    }

    #[test]
    fn finds_vips_by_address_not_spelling() {
        let i = inner(&[("web", vip("2001:db8::0010/64", "eth0"))]);
        let t = i.find("add", "2001:db8::10/64").unwrap();
        assert_eq!(
            t.vip.address, "2001:db8::0010/64",
            "the configured spelling"
        );
        assert!(i.find("add", "2001:db8::10/48").is_err(), "other prefix");
    }

    #[test]
    fn unknown_and_malformed_addresses_are_terminal() {
        let i = inner(&[("web", vip("10.0.0.5/24", "eth0"))]);
        let e = i
            .find("add address 10.0.0.6/24", "10.0.0.6/24")
            .err()
            .unwrap();
        assert!(e.terminal);
        assert!(
            e.to_string().contains("10.0.0.6/24 is not a VirtualIP"),
            "{e}"
        );
        let e = i.find("add", "garbage").err().unwrap();
        assert!(e.terminal);
    }

    #[test]
    fn held_addresses_outlive_their_configuration() {
        let i = inner(&[]);
        assert!(i.find("remove", "10.0.0.5/24").is_err());
        i.held
            .lock()
            .unwrap()
            .insert("10.0.0.5/24".into(), vip("10.0.0.5/24", "eth0"));
        assert_eq!(
            i.find("remove", "10.0.0.5/24").unwrap().vip.interface,
            "eth0"
        );
        assert_eq!(i.known().len(), 1);
    }

    #[tokio::test]
    async fn nothing_configured_lists_nothing_without_netlink() {
        let d = NetlinkAddresses::new(ConfigHandle::default());
        assert!(d.list().await.unwrap().is_empty());
    }
}
