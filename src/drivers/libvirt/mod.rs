//! VMs through libvirt (the `virt` crate), behind the `libvirt` feature.
//!
//! [`LibvirtVms`] implements [`Vms`] over one libvirt connection held for the driver's
//! lifetime (see the `conn` module for threads, reconnection and lifecycle events). It acts only on
//! domains whose name is a VM of the node's [`HostConfig`](super::config::HostConfig), or
//! that carry Rampart's marker; other domains on the host are neither reported nor touched.
//!
//! # Rampart's marker
//! After defining a domain, the driver stores in its persistent definition
//! `<metadata><rampart:vm xmlns:rampart="https://rampart.dev/xmlns/libvirt/1"
//! xml-sha256="…"/></metadata>` ([`METADATA_URI`]): the SHA-256 of the XML text Rampart
//! defined. It serves twice:
//! - `start` redefines a domain only when the manifest's XML changed (the hash differs, or
//!   the domain has no marker: someone defined it by hand), so an unchanged start is one
//!   lookup, and libvirt's own normalization of the XML never looks like a change;
//! - `list` reports marked domains even after their VM left this node's configuration, so the
//!   agent sees them and stops them.
//!
//! # What each call does
//! - `list`: every managed or marked domain, with its state (`running`/`blocked` → Running,
//!   `paused`/`pmsuspended` → Paused, `in shutdown` → Stopping, `crashed` → Crashed, `shut off`
//!   → Shutoff). A VM with no domain is absent.
//! - `start`: define when missing or changed (a malformed or refused XML is a terminal error
//!   carrying libvirt's message), turn autostart off, then bring it to running: start a shut-off
//!   domain, resume a paused one, wake a suspended one, destroy and start a crashed one. A
//!   running domain is left alone (`Ok`); a changed XML then takes effect at its next start,
//!   as with `virsh define`. A domain still shutting down is a retryable error.
//! - `stop`: ACPI shutdown, then wait (lifecycle events, with polling as a fallback) until it
//!   is off, up to the VM's `stop_timeout_ms`; then destroy. A paused, suspended or crashed
//!   domain cannot react to ACPI and is destroyed at once. Absent or off: `Ok`.
//! - `migrate`: live, peer-to-peer migration to the destination node's libvirt (see
//!   [`peer_uri`]), persistent on the destination and undefined here
//!   (`virsh migrate --live --p2p --persistent --undefinesource`). Refused (terminal) when the
//!   VM does not allow live migration or the destination is not a known peer. If it does not
//!   finish within [`LibvirtOptions::migrate_timeout`] the job is aborted and the VM keeps
//!   running here.
//!
//! # Stopped domains are undefined; autostart is never on
//! After a stop the domain is undefined (unless [`LibvirtOptions::undefine_on_stop`] is off),
//! with its managed-save image, snapshot and checkpoint metadata, keeping UEFI NVRAM and TPM
//! state. The agent stops a VM only when it is not assigned to this node, and a definition
//! left behind there is a trap: `virsh start` by hand, or a libvirt autostart after a reboot,
//! would run a second copy of a VM that runs elsewhere (S1). Pacemaker's `VirtualDomain`
//! leaves nothing defined either. The manifest keeps the XML, and `start` defines it again
//! wherever the VM goes. For the same reason `start` switches autostart off on every domain
//! it defines or starts: only the agent starts VMs.
//!
//! # Errors
//! Failures are retryable unless retrying cannot help until the manifests change: a VM that
//! is not in the configuration, an XML libvirt refuses, a refused migration, an operation the
//! driver does not support. Every call has a time limit ([`LibvirtOptions::call_timeout`]);
//! a call that exceeds it is reported as a retryable error.

mod conn;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorDomain, ErrorNumber};
use virt::sys;

use super::config::{ConfigHandle, PeerConfig, VmConfig};
use super::{DriverError, Vms};
use crate::model::{VmObserved, VmState};
use conn::{Conn, Link};

/// The XML namespace of Rampart's domain metadata.
pub const METADATA_URI: &str = "https://rampart.dev/xmlns/libvirt/1";
/// The prefix libvirt writes for [`METADATA_URI`].
pub const METADATA_KEY: &str = "rampart";

/// Options of a [`LibvirtVms`].
#[derive(Debug, Clone, PartialEq)]
pub struct LibvirtOptions {
    /// This node's libvirt connection URI (the Node manifest's `libvirtURI`).
    pub uri: String,
    /// Time limit of each libvirt call (a start, a shutdown request, a lookup).
    pub call_timeout: Duration,
    /// Time limit of a live migration; the migration job is aborted when it passes.
    pub migrate_timeout: Duration,
    /// How long a graceful shutdown may take for a domain that is not in the configuration.
    pub default_stop_timeout: Duration,
    /// How often a stopping domain's state is read when no lifecycle event arrives.
    pub poll_interval: Duration,
    /// Undefine a domain after stopping it (see the module documentation).
    pub undefine_on_stop: bool,
    /// The destination URI of a migration to a peer whose manifest gives no `libvirtURI`:
    /// `{management}` is replaced by the peer's management address, `{node}` by its name.
    pub peer_uri_template: String,
    /// The transport put into a peer's local-form `libvirtURI` (`qemu:///system` becomes
    /// `qemu+ssh://MANAGEMENT/system`).
    pub peer_transport: String,
    /// libvirt keepalive for remote connections: probe interval in seconds and how many
    /// unanswered probes close the connection. `None` leaves libvirt's default.
    pub keepalive: Option<(i32, u32)>,
}

impl Default for LibvirtOptions {
    fn default() -> Self {
        LibvirtOptions {
            uri: "qemu:///system".into(),
            call_timeout: Duration::from_secs(30),
            migrate_timeout: Duration::from_secs(600),
            default_stop_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(250),
            undefine_on_stop: true,
            peer_uri_template: "qemu+ssh://{management}/system".into(),
            peer_transport: "ssh".into(),
            keepalive: Some((5, 3)),
        }
    }
}

impl LibvirtOptions {
    /// Defaults with this connection URI.
    pub fn with_uri(uri: impl Into<String>) -> Self {
        LibvirtOptions {
            uri: uri.into(),
            ..Default::default()
        }
    }
}

/// The flags of a migration: live, peer-to-peer, persistent on the destination, undefined
/// here, aborted on an I/O error.
pub const MIGRATION_FLAGS: u32 = sys::VIR_MIGRATE_LIVE
    | sys::VIR_MIGRATE_PEER2PEER
    | sys::VIR_MIGRATE_PERSIST_DEST
    | sys::VIR_MIGRATE_UNDEFINE_SOURCE
    | sys::VIR_MIGRATE_ABORT_ON_ERROR;

/// The libvirt URI a migration of a VM to peer `node` goes to:
/// - the peer's `libvirtURI` when it names a host (`qemu+tls://b.example/system`);
/// - its local form (`qemu:///system`, as manifests usually give it) made remote:
///   `DRIVER+TRANSPORT://MANAGEMENT/PATH`, without the query (a local socket path means
///   nothing on another host);
/// - otherwise `template` with `{management}` and `{node}` filled in.
///
/// An IPv6 management address is bracketed.
pub fn peer_uri(template: &str, transport: &str, node: &str, peer: &PeerConfig) -> String {
    let host = if peer.management.contains(':') && !peer.management.starts_with('[') {
        format!("[{}]", peer.management)
    } else {
        peer.management.clone()
    };
    let Some(uri) = peer.libvirt_uri.as_deref() else {
        return template
            .replace("{management}", &host)
            .replace("{node}", node);
    };
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let Some(path) = rest.strip_prefix('/') else {
        return uri.to_string(); // names a host already
    };
    let driver = scheme.split('+').next().unwrap_or(scheme);
    let path = path.split('?').next().unwrap_or(path);
    format!("{driver}+{transport}://{host}/{path}")
}

/// The SHA-256 of a domain XML as the marker records it.
pub fn xml_hash(xml: &str) -> String {
    hex::encode(Sha256::digest(xml.as_bytes()))
}

/// VMs as libvirt domains. See the module documentation.
pub struct LibvirtVms {
    link: Arc<Link>,
    options: LibvirtOptions,
    config: ConfigHandle,
}

impl LibvirtVms {
    /// A driver that connects on its first call (and again after the connection breaks).
    pub fn new(options: LibvirtOptions, config: ConfigHandle) -> LibvirtVms {
        LibvirtVms {
            link: Arc::new(Link::new(options.uri.clone(), options.keepalive)),
            options,
            config,
        }
    }

    /// A driver connected now: fails if libvirt cannot be reached. With `test:///default`,
    /// the connection's state starts here and lives as long as the driver.
    pub async fn connect(
        options: LibvirtOptions,
        config: ConfigHandle,
    ) -> Result<LibvirtVms, DriverError> {
        let d = LibvirtVms::new(options, config);
        d.call("connect", d.options.call_timeout, |_| Ok(()))
            .await?;
        Ok(d)
    }

    pub fn uri(&self) -> &str {
        self.link.uri()
    }

    pub fn options(&self) -> &LibvirtOptions {
        &self.options
    }

    /// A counter bumped by every domain lifecycle event (defined, started, stopped, crashed,
    /// migrated, ... on any domain of the connection) and when the connection closes: await
    /// `changed()` on it to re-observe at once instead of waiting for the next poll.
    pub fn events(&self) -> watch::Receiver<u64> {
        self.link.signals.events.subscribe()
    }

    /// The URI a migration to `node` would go to, from the current configuration.
    pub fn migration_uri(&self, node: &str) -> Result<String, DriverError> {
        let cfg = self.config.get();
        let peer = cfg.peers.get(node).ok_or_else(|| {
            terminal(
                format!("migrate to {node}"),
                format!("{node} is not a known peer of this node"),
            )
        })?;
        Ok(peer_uri(
            &self.options.peer_uri_template,
            &self.options.peer_transport,
            node,
            peer,
        ))
    }

    /// Run `f` against the connection on a blocking thread, within `limit`.
    async fn call<T, F>(&self, step: &str, limit: Duration, f: F) -> Result<T, DriverError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, DriverError> + Send + 'static,
    {
        let link = self.link.clone();
        let step_owned = step.to_string();
        let job = tokio::task::spawn_blocking(move || {
            let conn: Arc<Conn> = link.get().map_err(|e| {
                DriverError::new(
                    step_owned.clone(),
                    format!("cannot connect to {}: {}", link.uri(), e.message()),
                )
            })?;
            match f(&conn.conn) {
                Ok(v) => Ok(v),
                Err(mut e) => {
                    if link.check(&conn) {
                        // The connection died under the call: whatever it said, retry.
                        e.terminal = false;
                        e.message = format!("{} (connection lost; reconnecting)", e.message);
                    }
                    Err(e)
                }
            }
        });
        match tokio::time::timeout(limit, job).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(DriverError::new(
                step,
                format!("libvirt call failed: {join}"),
            )),
            Err(_) => Err(DriverError::new(
                step,
                format!(
                    "libvirt ({}) did not answer within {} ms",
                    self.link.uri(),
                    limit.as_millis()
                ),
            )),
        }
    }

    fn vm_config(&self, step: &str, vm: &str) -> Result<VmConfig, DriverError> {
        self.config.get().vms.get(vm).cloned().ok_or_else(|| {
            terminal(
                step,
                format!("vm {vm} is not in this node's configuration (not allowed to run here)"),
            )
        })
    }

    /// The domain's state, `None` when there is no such domain.
    async fn state(&self, step: &str, vm: &str) -> Result<Option<VmState>, DriverError> {
        let (s, v) = (step.to_string(), vm.to_string());
        self.call(step, self.options.call_timeout, move |c| {
            match lookup(c, &v).map_err(|e| lv(&s, e))? {
                None => Ok(None),
                Some(d) => match d.get_state() {
                    Ok((st, _)) => Ok(Some(map_state(st))),
                    Err(e) if e.code() == ErrorNumber::NoDomain => Ok(None),
                    Err(e) => Err(lv(&s, e)),
                },
            }
        })
        .await
    }

    /// Destroy (ignoring "not running") and undefine if configured.
    async fn destroy_and_forget(&self, step: &str, vm: &str) -> Result<(), DriverError> {
        let (s, v, undefine) = (
            step.to_string(),
            vm.to_string(),
            self.options.undefine_on_stop,
        );
        self.call(step, self.options.call_timeout, move |c| {
            let Some(d) = lookup(c, &v).map_err(|e| lv(&s, e))? else {
                return Ok(());
            };
            match d.destroy() {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.code(),
                        ErrorNumber::OperationInvalid | ErrorNumber::NoDomain
                    ) => {}
                Err(e) => return Err(lv(&s, e)),
            }
            match d.get_state() {
                Ok((st, _)) if map_state(st) != VmState::Shutoff => {
                    return Err(DriverError::new(
                        &s,
                        format!("domain {v} is still {:?} after destroy", map_state(st)),
                    ))
                }
                Err(e) if e.code() == ErrorNumber::NoDomain => return Ok(()),
                Err(e) => return Err(lv(&s, e)),
                Ok(_) => {}
            }
            if undefine {
                undefine_domain(&d).map_err(|e| lv(&s, e))?;
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Vms for LibvirtVms {
    async fn list(&self) -> Result<BTreeMap<String, VmObserved>, DriverError> {
        let cfg = self.config.get();
        self.call("list vms", self.options.call_timeout, move |c| {
            let step = "list vms";
            let mut out = BTreeMap::new();
            for d in c.list_all_domains(0).map_err(|e| lv(step, e))? {
                let name = match d.get_name() {
                    Ok(n) => n,
                    Err(e) if e.code() == ErrorNumber::NoDomain => continue,
                    Err(e) => return Err(lv(step, e)),
                };
                if !cfg.vms.contains_key(&name) && marker(&d, 0).is_none() {
                    continue;
                }
                match d.get_state() {
                    Ok((st, _)) => {
                        out.insert(
                            name,
                            VmObserved {
                                state: map_state(st),
                            },
                        );
                    }
                    // Undefined between the listing and now.
                    Err(e) if e.code() == ErrorNumber::NoDomain => {}
                    Err(e) => return Err(lv(step, e)),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn artifacts(&self) -> BTreeMap<String, String> {
        // The definition Rampart made, as it wrote it, when the domain's marker says it is
        // still that one; otherwise what libvirt holds (`dumpxml --inactive`), which `rampart
        // diff` then shows as differing.
        let cfg = self.config.get();
        self.call(
            "read domain definitions",
            self.options.call_timeout,
            move |c| {
                let mut out = BTreeMap::new();
                for (name, vc) in &cfg.vms {
                    let Ok(Some(d)) = lookup(c, name) else {
                        continue;
                    };
                    let path = if vc.path.is_empty() {
                        crate::diff::observed::domain_path(
                            name,
                            crate::manifest::vm::Hypervisor::Kvm,
                        )
                    } else {
                        vc.path.clone()
                    };
                    let flags = if d.is_persistent().unwrap_or(false) {
                        sys::VIR_DOMAIN_AFFECT_CONFIG
                    } else {
                        0
                    };
                    let text = if marker(&d, flags).as_deref() == Some(xml_hash(&vc.xml).as_str()) {
                        vc.xml.clone()
                    } else {
                        match d.get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE) {
                            Ok(x) => x,
                            Err(_) => continue,
                        }
                    };
                    out.insert(path, text);
                }
                Ok(out)
            },
        )
        .await
        .unwrap_or_default()
    }

    async fn start(&self, vm: &str) -> Result<(), DriverError> {
        let step = format!("start vm {vm}");
        let cfg = self.vm_config(&step, vm)?;
        let v = vm.to_string();
        let s = step.clone();
        self.call(&step, self.options.call_timeout, move |c| {
            start_blocking(c, &s, &v, &cfg.xml)
        })
        .await
    }

    async fn stop(&self, vm: &str) -> Result<(), DriverError> {
        let step = format!("stop vm {vm}");
        let limit = self
            .config
            .get()
            .vms
            .get(vm)
            .map(|c| Duration::from_millis(c.stop_timeout_ms))
            .unwrap_or(self.options.default_stop_timeout);
        let mut events = self.events();
        let Some(state) = self.state(&step, vm).await? else {
            return Ok(());
        };
        match state {
            VmState::Shutoff => return self.destroy_and_forget(&step, vm).await,
            VmState::Paused | VmState::Crashed => {
                tracing::info!(vm, ?state, "cannot shut down gracefully; destroying");
                return self.destroy_and_forget(&step, vm).await;
            }
            VmState::Running | VmState::Stopping => {}
        }
        let deadline = Instant::now() + limit;
        if state == VmState::Running {
            let (s, v) = (step.clone(), vm.to_string());
            let asked = self
                .call(&step, self.options.call_timeout, move |c| {
                    let Some(d) = lookup(c, &v).map_err(|e| lv(&s, e))? else {
                        return Ok(());
                    };
                    d.shutdown().map(|_| ()).map_err(|e| lv(&s, e))
                })
                .await;
            if let Err(e) = asked {
                // Not fatal: the domain may have stopped meanwhile; destroy follows anyway.
                tracing::warn!(vm, "graceful shutdown request failed: {e}");
            }
        }
        loop {
            match self.state(&step, vm).await? {
                None => return Ok(()),
                Some(VmState::Shutoff) => return self.destroy_and_forget(&step, vm).await,
                Some(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    vm,
                    timeout_ms = limit.as_millis() as u64,
                    "graceful shutdown timed out; destroying"
                );
                return self.destroy_and_forget(&step, vm).await;
            }
            let wait = self.options.poll_interval.min(deadline - now);
            let _ = tokio::time::timeout(wait, events.changed()).await;
        }
    }

    async fn migrate(&self, vm: &str, to_node: &str) -> Result<(), DriverError> {
        let step = format!("live-migrate vm {vm} to {to_node}");
        let cfg = self.vm_config(&step, vm)?;
        if !cfg.live_migration {
            return Err(terminal(
                &step,
                format!("vm {vm} does not allow live migration (it needs shared or replicated storage and the manifest's consent)"),
            ));
        }
        let dest = self.migration_uri(to_node).map_err(|mut e| {
            e.step = step.clone();
            e
        })?;
        let (s, v, d2) = (step.clone(), vm.to_string(), dest.clone());
        let run = self.call(&step, self.options.migrate_timeout, move |c| {
            let Some(d) = lookup(c, &v).map_err(|e| lv(&s, e))? else {
                // Already gone from here: a migration that finished before we could say so.
                return Ok(());
            };
            let (st, _) = d.get_state().map_err(|e| lv(&s, e))?;
            if map_state(st) == VmState::Shutoff {
                return Err(terminal(
                    &s,
                    format!("vm {v} is shut off here; a live migration needs a running domain"),
                ));
            }
            d.migrate_to_uri(&d2, MIGRATION_FLAGS, None, 0)
                .map_err(|e| classify(&s, e, &format!("migration to {d2} failed"), false))
        });
        match run.await {
            Err(e) if !e.terminal && e.message.contains("did not answer within") => {
                let v = vm.to_string();
                let _ = self
                    .call(&step, self.options.call_timeout, move |c| {
                        if let Ok(Some(d)) = lookup(c, &v) {
                            // SAFETY: `d` is a valid domain handle for the call's duration.
                            unsafe { sys::virDomainAbortJob(d.as_ptr()) };
                        }
                        Ok(())
                    })
                    .await;
                Err(DriverError::new(
                    step,
                    format!(
                        "migration to {dest} did not finish within {} s; aborted, the vm keeps running here",
                        self.options.migrate_timeout.as_secs()
                    ),
                ))
            }
            r => r,
        }
    }
}

/// Define if needed, then bring the domain to running. Blocking.
fn start_blocking(c: &Connect, step: &str, vm: &str, xml: &str) -> Result<(), DriverError> {
    let hash = xml_hash(xml);
    let existing = lookup(c, vm).map_err(|e| lv(step, e))?;
    let current = existing.as_ref().and_then(|d| {
        let flags = if d.is_persistent().unwrap_or(false) {
            sys::VIR_DOMAIN_AFFECT_CONFIG
        } else {
            0
        };
        marker(d, flags)
    });
    let d = match existing {
        Some(d) if current.as_deref() == Some(hash.as_str()) => d,
        other => define(c, step, vm, xml, &hash, other.as_ref())?,
    };
    if d.get_autostart().unwrap_or(false) {
        tracing::warn!(
            vm,
            "autostart was on; switching it off (only the agent starts VMs)"
        );
        d.set_autostart(false).map_err(|e| lv(step, e))?;
    }
    let (st, _) = d.get_state().map_err(|e| lv(step, e))?;
    match st {
        sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED | sys::VIR_DOMAIN_NOSTATE => Ok(()),
        sys::VIR_DOMAIN_PAUSED => d.resume().map(|_| ()).map_err(|e| lv(step, e)),
        sys::VIR_DOMAIN_PMSUSPENDED => d.pm_wakeup(0).map(|_| ()).map_err(|e| lv(step, e)),
        sys::VIR_DOMAIN_SHUTDOWN => Err(DriverError::new(
            step,
            format!("domain {vm} is shutting down; it can start once it is off"),
        )),
        sys::VIR_DOMAIN_CRASHED => {
            match d.destroy() {
                Ok(()) => {}
                Err(e) if e.code() == ErrorNumber::OperationInvalid => {}
                Err(e) => return Err(lv(step, e)),
            }
            create(&d, step)
        }
        _ => create(&d, step),
    }
}

fn create(d: &Domain, step: &str) -> Result<(), DriverError> {
    d.create()
        .map(|_| ())
        .map_err(|e| classify(step, e, "libvirt could not start the domain", false))
}

/// Define `xml` as domain `vm` and mark it with the XML's hash. Blocking.
///
/// An XML without `<uuid>` gets the existing domain's UUID: libvirt would make up a new one
/// and refuse to redefine a domain of the same name under it. (Rampart's described domains
/// carry a UUID derived from the VM name, the same on every node.)
fn define(
    c: &Connect,
    step: &str,
    vm: &str,
    xml: &str,
    hash: &str,
    existing: Option<&Domain>,
) -> Result<Domain, DriverError> {
    if let Some(named) = domain_name(xml) {
        if named != vm {
            return Err(terminal(
                step,
                format!(
                    "the domain XML names domain `{named}`, but the VM is `{vm}`; they must match"
                ),
            ));
        }
    }
    let with_uuid;
    let xml = match existing {
        Some(d) if !xml.contains("<uuid") => {
            let uuid = d.get_uuid_string().map_err(|e| lv(step, e))?;
            match insert_uuid(xml, &uuid) {
                Some(x) => {
                    with_uuid = x;
                    &with_uuid
                }
                None => xml,
            }
        }
        _ => xml,
    };
    let d = match Domain::define_xml_flags(c, xml, sys::VIR_DOMAIN_DEFINE_VALIDATE) {
        Ok(d) => d,
        // A driver without schema validation: define without it.
        Err(e) if matches!(e.code(), ErrorNumber::InvalidArg | ErrorNumber::NoSupport) => {
            Domain::define_xml(c, xml)
                .map_err(|e| classify(step, e, "libvirt refused the domain XML", true))?
        }
        Err(e) => return Err(classify(step, e, "libvirt refused the domain XML", true)),
    };
    let name = d.get_name().map_err(|e| lv(step, e))?;
    if name != vm {
        return Err(terminal(
            step,
            format!(
                "the domain XML defined domain `{name}`, but the VM is `{vm}`; they must match"
            ),
        ));
    }
    d.set_metadata(
        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(&format!("<vm xml-sha256='{hash}'/>")),
        Some(METADATA_KEY),
        Some(METADATA_URI),
        sys::VIR_DOMAIN_AFFECT_CONFIG,
    )
    .map_err(|e| lv(step, e))?;
    tracing::info!(vm, "domain defined");
    Ok(d)
}

/// Undefine with everything libvirt keeps beside the definition, except UEFI NVRAM and TPM
/// state (the guest's own data). Drivers that know fewer flags get fewer.
fn undefine_domain(d: &Domain) -> Result<(), VirtError> {
    if !d.is_persistent().unwrap_or(true) {
        return Ok(());
    }
    let full = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        | sys::VIR_DOMAIN_UNDEFINE_KEEP_TPM;
    let basic = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
    let mut last = None;
    for flags in [full, basic, 0] {
        match d.undefine_flags(flags) {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == ErrorNumber::NoDomain => return Ok(()),
            Err(e) if matches!(e.code(), ErrorNumber::InvalidArg | ErrorNumber::NoSupport) => {
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(VirtError::last_error))
}

/// The hash in the domain's Rampart marker, if it has one.
fn marker(d: &Domain, flags: u32) -> Option<String> {
    let m = d
        .get_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_URI),
            flags,
        )
        .ok()?;
    Some(attr(&m, "xml-sha256").unwrap_or_default().to_string())
}

/// The value of attribute `name` in a one-element XML snippet, in either quote style.
fn attr<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = xml;
    while let Some(i) = rest.find(name) {
        let before_ok = i > 0 && rest.as_bytes()[i - 1].is_ascii_whitespace();
        let after = rest[i + name.len()..].trim_start();
        if let (true, Some(v)) = (before_ok, after.strip_prefix('=')) {
            let v = v.trim_start();
            if let Some(q) = v.chars().next().filter(|q| *q == '"' || *q == '\'') {
                return v[1..].find(q).map(|end| &v[1..1 + end]);
            }
        }
        rest = &rest[i + name.len()..];
    }
    None
}

/// The text of the first `<name>` element outside comments: the domain's name in any domain
/// XML libvirt accepts (the name precedes `<metadata>` and devices by convention; if it does
/// not, libvirt's own answer is checked after defining).
fn domain_name(xml: &str) -> Option<&str> {
    let mut rest = xml;
    loop {
        let open = rest.find("<name>");
        let comment = rest.find("<!--");
        match (open, comment) {
            (Some(o), Some(c)) if c < o => {
                let end = rest[c..].find("-->")?;
                rest = &rest[c + end + 3..];
            }
            (Some(o), _) => {
                let after = &rest[o + "<name>".len()..];
                let end = after.find("</name>")?;
                return Some(after[..end].trim());
            }
            (None, _) => return None,
        }
    }
}

/// `xml` with `<uuid>UUID</uuid>` right after the domain's `</name>`.
fn insert_uuid(xml: &str, uuid: &str) -> Option<String> {
    let name = domain_name(xml)?;
    let at = xml.find(&format!("{name}</name>")).or_else(|| {
        // The name had whitespace around it.
        let i = xml.find(name)?;
        xml[i..].find("</name>").map(|j| i + j - name.len())
    })? + name.len()
        + "</name>".len();
    Some(format!("{}<uuid>{uuid}</uuid>{}", &xml[..at], &xml[at..]))
}

fn lookup(c: &Connect, vm: &str) -> Result<Option<Domain>, VirtError> {
    match Domain::lookup_by_name(c, vm) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.code() == ErrorNumber::NoDomain => Ok(None),
        Err(e) => Err(e),
    }
}

/// libvirt's domain state as Rampart reports it.
pub fn map_state(state: sys::virDomainState) -> VmState {
    match state {
        sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => VmState::Paused,
        sys::VIR_DOMAIN_SHUTDOWN => VmState::Stopping,
        sys::VIR_DOMAIN_SHUTOFF => VmState::Shutoff,
        sys::VIR_DOMAIN_CRASHED => VmState::Crashed,
        // Running, blocked on a resource, or a state libvirt cannot tell: the domain is
        // active and may be using its disks, so it counts as running.
        _ => VmState::Running,
    }
}

fn terminal(step: impl Into<String>, message: impl Into<String>) -> DriverError {
    DriverError {
        step: step.into(),
        message: message.into(),
        terminal: true,
    }
}

/// A libvirt error, retryable.
fn lv(step: &str, e: VirtError) -> DriverError {
    DriverError::new(step, e.message().to_string())
}

/// Whether retrying cannot help until the input changes: the XML or the configuration is
/// wrong, or the driver cannot do this at all. `defining`: any refusal of a definition that
/// is not about the connection (a UUID clash is an "operation failed", a bad value an
/// "internal error"); when starting or migrating, those are often passing conditions (a
/// DRBD device not yet Primary, a busy network) and stay retryable.
fn is_input_error(e: &VirtError, defining: bool) -> bool {
    if matches!(e.domain(), ErrorDomain::Rpc | ErrorDomain::Remote) {
        return false;
    }
    match e.code() {
        ErrorNumber::XmlError
        | ErrorNumber::XmlDetail
        | ErrorNumber::XmlInvalidSchema
        | ErrorNumber::ConfigUnsupported
        | ErrorNumber::NoSupport
        | ErrorNumber::ArgumentUnsupported
        | ErrorNumber::OperationUnsupported => true,
        ErrorNumber::InvalidArg
        | ErrorNumber::DomExist
        | ErrorNumber::OperationFailed
        | ErrorNumber::InternalError => defining,
        _ => false,
    }
}

/// A libvirt error with context, terminal when [`is_input_error`].
fn classify(step: &str, e: VirtError, what: &str, defining: bool) -> DriverError {
    DriverError {
        step: step.into(),
        message: format!("{what}: {}", e.message()),
        terminal: is_input_error(&e, defining),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(mgmt: &str, uri: Option<&str>) -> PeerConfig {
        PeerConfig {
            management: mgmt.into(),
            libvirt_uri: uri.map(Into::into),
        }
    }

    #[test]
    fn peer_uris() {
        let t = "qemu+ssh://{management}/system";
        assert_eq!(
            peer_uri(t, "ssh", "b", &peer("10.0.0.2", None)),
            "qemu+ssh://10.0.0.2/system"
        );
        assert_eq!(
            peer_uri(t, "ssh", "b", &peer("10.0.0.2", Some("qemu:///system"))),
            "qemu+ssh://10.0.0.2/system"
        );
        assert_eq!(
            peer_uri(t, "tls", "b", &peer("b.example", Some("xen:///system"))),
            "xen+tls://b.example/system"
        );
        assert_eq!(
            peer_uri(
                t,
                "ssh",
                "b",
                &peer("fd00::2", Some("qemu+unix:///system?socket=/run/x"))
            ),
            "qemu+ssh://[fd00::2]/system"
        );
        assert_eq!(
            peer_uri(
                t,
                "ssh",
                "b",
                &peer("10.0.0.2", Some("qemu+tls://hv-b.example/system"))
            ),
            "qemu+tls://hv-b.example/system"
        );
        assert_eq!(
            peer_uri(
                "qemu+tcp://{node}.cluster:16509/system",
                "ssh",
                "b",
                &peer("10.0.0.2", None)
            ),
            "qemu+tcp://b.cluster:16509/system"
        );
    }

    #[test]
    fn states() {
        assert_eq!(map_state(sys::VIR_DOMAIN_RUNNING), VmState::Running);
        assert_eq!(map_state(sys::VIR_DOMAIN_BLOCKED), VmState::Running);
        assert_eq!(map_state(sys::VIR_DOMAIN_NOSTATE), VmState::Running);
        assert_eq!(map_state(sys::VIR_DOMAIN_PAUSED), VmState::Paused);
        assert_eq!(map_state(sys::VIR_DOMAIN_PMSUSPENDED), VmState::Paused);
        assert_eq!(map_state(sys::VIR_DOMAIN_SHUTDOWN), VmState::Stopping);
        assert_eq!(map_state(sys::VIR_DOMAIN_SHUTOFF), VmState::Shutoff);
        assert_eq!(map_state(sys::VIR_DOMAIN_CRASHED), VmState::Crashed);
    }

    #[test]
    fn names_and_attributes() {
        assert_eq!(
            domain_name("<domain type='kvm'>\n  <name> web </name><uuid/></domain>"),
            Some("web")
        );
        assert_eq!(
            domain_name("<!-- <name>old</name> --><domain><name>new</name></domain>"),
            Some("new")
        );
        assert_eq!(domain_name("<domain/>"), None);
        assert_eq!(
            insert_uuid("<domain><name>web</name><memory/></domain>", "u-1").as_deref(),
            Some("<domain><name>web</name><uuid>u-1</uuid><memory/></domain>")
        );
        assert_eq!(
            insert_uuid("<domain><name> web </name></domain>", "u-1").as_deref(),
            Some("<domain><name> web </name><uuid>u-1</uuid></domain>")
        );
        assert_eq!(
            attr(
                "<rampart:vm xmlns:rampart=\"u\" xml-sha256=\"ab12\"/>",
                "xml-sha256"
            ),
            Some("ab12")
        );
        assert_eq!(attr("<vm xml-sha256 = 'cd'/>", "xml-sha256"), Some("cd"));
        assert_eq!(attr("<vm other-xml-sha256='x'/>", "xml-sha256"), None);
        assert_eq!(xml_hash("a").len(), 64);
        assert_ne!(xml_hash("a"), xml_hash("b"));
    }

    #[test]
    fn migration_flags() {
        assert_eq!(
            MIGRATION_FLAGS,
            1 | 2 | 8 | 16 | 4096,
            "live, p2p, persist-dest, undefine-source, abort-on-error"
        );
    }
}
