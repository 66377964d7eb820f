//! Rules beyond the schema: references resolve, placement is possible, the store keeps a
//! majority, nothing secret sits in git. Every rule reports every violation it finds, each at
//! the field it is about, with a hint on how to fix it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::cluster::FencingPolicy;
use super::common::SecretRef;
use super::diag::{Anchor, Diagnostic};
use super::fence::SECRET_PARAMETERS;
use super::load::did_you_mean;
use super::node::NodeRole;
use super::{Entry, ManifestSet, Origin};

/// Validate a loaded set. The set's own load diagnostics are not repeated here.
pub fn validate(set: &ManifestSet) -> Vec<Diagnostic> {
    let mut v = Validator {
        set,
        out: Vec::new(),
    };
    v.cluster();
    v.names();
    v.nodes();
    v.fence_devices();
    v.volumes();
    v.vms();
    v.vips();
    v.store_majority();
    v.out
}

struct Validator<'a> {
    set: &'a ManifestSet,
    out: Vec<Diagnostic>,
}

/// Parse `ADDRESS/PREFIX`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` has no prefix length"))?;
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{addr}` is not an IP address"))?;
    let prefix: u8 = prefix
        .trim()
        .parse()
        .map_err(|_| format!("`{prefix}` is not a prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("prefix length /{prefix} is more than /{max}"));
    }
    Ok((ip, prefix))
}

fn in_subnet(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn quoted(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = names
        .into_iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

impl<'a> Validator<'a> {
    fn push(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    fn hypervisors(&self) -> impl Iterator<Item = &'a str> {
        self.set
            .nodes
            .iter()
            .filter(|(_, n)| n.object.spec.role == NodeRole::Hypervisor)
            .map(|(k, _)| k.as_str())
    }

    /// Check that `name` is a node that can host work; report at `anchor` otherwise.
    fn hypervisor_ref(&mut self, name: &str, anchor: Anchor, what: &str) -> bool {
        match self.set.nodes.get(name) {
            Some(n) if n.object.spec.role == NodeRole::Hypervisor => true,
            Some(_) => {
                self.push(
                    Diagnostic::error(
                        "witness-hosts-nothing",
                        anchor,
                        format!("node `{name}` is a witness and cannot hold {what}"),
                    )
                    .hint(format!(
                        "a witness only votes in the store; use a hypervisor: {}",
                        quoted(self.hypervisors())
                    )),
                );
                false
            }
            None => {
                self.unresolved("Node", name, anchor, self.set.nodes.keys());
                false
            }
        }
    }

    fn unresolved<'n>(
        &mut self,
        kind: &str,
        name: &str,
        anchor: Anchor,
        known: impl Iterator<Item = &'n String> + Clone,
    ) {
        let mut d = Diagnostic::error(
            "unresolved-reference",
            anchor,
            format!("{kind} `{name}` is not defined"),
        );
        d = match did_you_mean(name, known.clone().map(String::as_str)) {
            Some(s) => d.hint(format!("did you mean `{s}`?")),
            None => d.hint(format!(
                "define a {kind} named `{name}` or use one that exists: {}",
                quoted(known)
            )),
        };
        self.push(d);
    }

    fn secret(&mut self, s: &SecretRef, anchor: Anchor, what: &str, suggested_file: &str) {
        match s {
            SecretRef::Inline => self.push(
                Diagnostic::error(
                    "inline-secret",
                    anchor,
                    format!("{what} is written inline; secrets must not be kept in git"),
                )
                .hint(format!(
                    "write `{{file: {suggested_file}}}` or `{{env: VARIABLE}}` and keep the secret on the nodes; then rotate it, since git history keeps the old value"
                )),
            ),
            SecretRef::File(p) if !p.is_absolute() => self.push(
                Diagnostic::error(
                    "secret-path",
                    anchor,
                    format!("secret file `{}` is not an absolute path", p.display()),
                )
                .hint(format!("agents run from any directory; write it like `{suggested_file}`")),
            ),
            SecretRef::Env(v) if v.is_empty() || v.contains(['=', '\0']) => self.push(
                Diagnostic::error("secret-env", anchor, format!("`{v}` is not an environment variable name")),
            ),
            _ => {}
        }
    }

    fn positive(&mut self, d: super::Duration, anchor: Anchor, what: &str) {
        if d.is_zero() {
            self.push(
                Diagnostic::error("timing", anchor, format!("{what} must be more than zero"))
                    .hint("give a positive duration such as `30s`"),
            );
        }
    }

    fn cluster(&mut self) {
        let set = self.set;
        let Some(first) = set.clusters.first() else {
            if set.object_count() > 0 {
                self.push(
                    Diagnostic::error("no-cluster", Anchor::None, "no Cluster manifest")
                        .hint("add one document with `kind: Cluster` (see manifests/cluster.yaml in the Rampart repository)"),
                );
            }
            return;
        };
        for extra in &set.clusters[1..] {
            self.push(
                Diagnostic::error(
                    "duplicate-cluster",
                    extra.origin.at("kind"),
                    format!(
                        "a second Cluster manifest (`{}`; the first is `{}`)",
                        extra.object.metadata.name, first.object.metadata.name
                    ),
                )
                .hint("a repository describes one cluster; remove one of them"),
            );
        }
        let o = first.origin;
        let spec = &first.object.spec;
        let t = &spec.timing;
        self.positive(t.lease_ttl, o.at("spec.timing.leaseTTL"), "leaseTTL");
        self.positive(t.renew_interval, o.at("spec.timing.renewInterval"), "renewInterval");
        self.positive(t.fence_timeout, o.at("spec.timing.fenceTimeout"), "fenceTimeout");
        self.positive(t.stop_timeout, o.at("spec.timing.stopTimeout"), "stopTimeout");
        self.positive(t.start_timeout, o.at("spec.timing.startTimeout"), "startTimeout");
        if !t.lease_ttl.is_zero() && !t.renew_interval.is_zero() && t.renew_interval.0 * 3 > t.lease_ttl.0 {
            let third = super::Duration::from_millis((t.lease_ttl.0 / 3).as_millis() as u64);
            self.push(
                Diagnostic::error(
                    "timing",
                    o.at("spec.timing.renewInterval"),
                    format!(
                        "renewInterval {} is not well inside leaseTTL {}: one late renewal would expire the lease",
                        t.renew_interval, t.lease_ttl
                    ),
                )
                .hint(format!("make renewInterval at most a third of leaseTTL ({third} or less)")),
            );
        }
        if spec.fencing == FencingPolicy::Disabled {
            self.push(
                Diagnostic::warning(
                    "fencing-disabled",
                    o.at("spec.fencing"),
                    "the cluster runs without fencing: work leaves a silent node only after its self-fence deadline, and a node that is merely cut off can corrupt shared data",
                )
                .hint("configure fence devices and set `fencing: required` for production"),
            );
        }
        if spec.maintenance {
            self.push(
                Diagnostic::warning(
                    "maintenance",
                    o.at("spec.maintenance"),
                    "maintenance mode is on: placement is frozen and nothing is fenced",
                )
                .hint("set `maintenance: false` when the work is done"),
            );
        }
    }

    fn names(&mut self) {
        let set = self.set;
        let mut check = |name: &str, origin: Origin, out: &mut Vec<Diagnostic>| {
            if !is_dns_label(name) {
                out.push(
                    Diagnostic::error(
                        "invalid-name",
                        origin.at("metadata.name"),
                        format!("name `{name}` is not a DNS label"),
                    )
                    .hint("use lower-case letters, digits and `-`, at most 63 characters, not starting or ending with `-`"),
                );
            }
        };
        let mut out = Vec::new();
        for c in &set.clusters {
            check(&c.object.metadata.name, c.origin, &mut out);
        }
        fn each<T>(m: &BTreeMap<String, Entry<T>>, f: &mut impl FnMut(&str, Origin, &mut Vec<Diagnostic>), out: &mut Vec<Diagnostic>) {
            for (n, e) in m {
                f(n, e.origin, out);
            }
        }
        each(&set.nodes, &mut check, &mut out);
        each(&set.fence_devices, &mut check, &mut out);
        each(&set.volumes, &mut check, &mut out);
        each(&set.vms, &mut check, &mut out);
        each(&set.vips, &mut check, &mut out);
        self.out.extend(out);
    }

    fn fencing_required(&self) -> bool {
        self.set
            .cluster()
            .is_none_or(|c| c.spec.fencing == FencingPolicy::Required)
    }

    fn nodes(&mut self) {
        let set = self.set;
        let mut addresses: HashMap<IpAddr, (&str, &str)> = HashMap::new();
        for (name, e) in &set.nodes {
            let o = e.origin;
            let spec = &e.object.spec;
            for (field, addr) in [
                ("management", Some(spec.addresses.management)),
                ("replication", spec.addresses.replication),
            ] {
                let Some(addr) = addr else { continue };
                if let Some((other, other_field)) = addresses.get(&addr) {
                    if *other != name.as_str() {
                        self.push(
                            Diagnostic::error(
                                "duplicate-address",
                                o.at(format!("spec.addresses.{field}")),
                                format!("address {addr} is also the {other_field} address of node `{other}`"),
                            )
                            .hint("every node needs its own addresses"),
                        );
                    }
                } else {
                    addresses.insert(addr, (name, field));
                }
            }
            match spec.role {
                NodeRole::Hypervisor => {
                    match &spec.capacity {
                        None => self.push(
                            Diagnostic::error("capacity", o.key("spec"), format!("hypervisor `{name}` has no `capacity`"))
                                .hint("add `capacity: {cpus: N, memory: NGiB}` with what VMs may use on it"),
                        ),
                        Some(c) if c.cpus == 0 || c.memory.mib == 0 => self.push(
                            Diagnostic::error("capacity", o.at("spec.capacity"), "capacity must have more than zero CPUs and memory"),
                        ),
                        _ => {}
                    }
                    if spec.fencing.is_empty() && self.fencing_required() {
                        self.push(
                            Diagnostic::error(
                                "no-fencing",
                                o.key("spec"),
                                format!("node `{name}` can host VMs but has no fencing level"),
                            )
                            .hint("add `fencing: [{devices: [{device: NAME}]}]` naming a FenceDevice, or set `fencing: disabled` in the Cluster to run without fencing (not for production)"),
                        );
                    }
                }
                NodeRole::Witness => {
                    if spec.libvirt_uri.is_some() {
                        self.push(
                            Diagnostic::error("witness-hosts-nothing", o.key("spec.libvirtURI"), "a witness node runs no VMs and needs no libvirt connection")
                                .hint("remove `libvirtURI`, or make the node a hypervisor"),
                        );
                    }
                    if !spec.store_member {
                        self.push(
                            Diagnostic::error("witness-not-member", o.at("spec.storeMember"), "a witness that is not a store member does nothing")
                                .hint("remove `storeMember: false`; a witness exists to vote in the store"),
                        );
                    }
                }
            }
            for (li, level) in spec.fencing.iter().enumerate() {
                if level.devices.is_empty() {
                    self.push(
                        Diagnostic::error("fencing-level", o.at(format!("spec.fencing[{li}].devices")), "fencing level lists no device")
                            .hint("name at least one FenceDevice, or remove the level"),
                    );
                }
                for (di, r) in level.devices.iter().enumerate() {
                    let anchor = o.at(format!("spec.fencing[{li}].devices[{di}].device"));
                    match set.fence_devices.get(&r.device) {
                        None => self.unresolved("FenceDevice", &r.device, anchor, set.fence_devices.keys()),
                        Some(dev) => {
                            let runs_on = &dev.object.spec.runs_on;
                            if runs_on.len() == 1 && runs_on[0] == *name {
                                self.push(
                                    Diagnostic::error(
                                        "self-fencing",
                                        anchor,
                                        format!("FenceDevice `{}` runs only on `{name}` itself, so it can never fence `{name}`", r.device),
                                    )
                                    .hint("a node is fenced by its peers; list the peers in the device's `runsOn`"),
                                );
                            }
                        }
                    }
                }
            }
            if let Some(w) = &spec.watchdog {
                self.positive(w.timeout, o.at("spec.watchdog.timeout"), "watchdog timeout");
            }
        }
        if !set.nodes.is_empty() && self.hypervisors().next().is_none() {
            self.push(
                Diagnostic::error("no-hypervisor", Anchor::None, "no node has `role: hypervisor`")
                    .hint("a cluster needs at least one hypervisor to run VMs"),
            );
        }
    }

    fn fence_devices(&mut self) {
        let set = self.set;
        let used: BTreeSet<&str> = set
            .nodes
            .values()
            .flat_map(|n| n.object.spec.fencing.iter())
            .flat_map(|l| l.devices.iter().map(|d| d.device.as_str()))
            .collect();
        for (name, e) in &set.fence_devices {
            let o = e.origin;
            let spec = &e.object.spec;
            match (&spec.agent, &spec.redfish) {
                (Some(_), Some(_)) | (None, None) => self.push(
                    Diagnostic::error("fence-method", o.key("spec"), "a FenceDevice needs exactly one of `agent` or `redfish`")
                        .hint("use `agent:` for a fence agent such as fence_ipmilan, or `redfish:` for native Redfish"),
                ),
                _ => {}
            }
            if let Some(a) = &spec.agent {
                if a.name.is_empty() || a.name.contains(['/', ' ', '\t']) {
                    self.push(
                        Diagnostic::error("fence-agent", o.at("spec.agent.name"), format!("`{}` is not a fence agent name", a.name))
                            .hint("give the executable's name as found on PATH, such as `fence_ipmilan`"),
                    );
                } else if !a.name.starts_with("fence_") {
                    self.push(
                        Diagnostic::warning("fence-agent", o.at("spec.agent.name"), format!("`{}` does not look like a standard fence agent", a.name))
                            .hint("standard agents are named fence_*; Rampart speaks their stdin protocol"),
                    );
                }
                for key in a.parameters.keys() {
                    let k = key.to_ascii_lowercase();
                    if SECRET_PARAMETERS.contains(&k.as_str()) {
                        self.push(
                            Diagnostic::error(
                                "inline-secret",
                                o.at(format!("spec.agent.parameters.{key}")),
                                format!("credential `{key}` is written inline in `parameters`; secrets must not be kept in git"),
                            )
                            .hint(format!(
                                "move it to `credentials: {{{key}: {{file: /etc/rampart/secrets/{name}}}}}`, keep the file on the nodes, and rotate the secret"
                            )),
                        );
                    } else if matches!(k.as_str(), "action" | "plug" | "port" | "nodename") {
                        self.push(
                            Diagnostic::error("fence-parameter", o.key(format!("spec.agent.parameters.{key}")), format!("`{key}` is set by Rampart for each fence request"))
                                .hint("remove it; give a shared device's outlet as `plug` in the node's fencing level"),
                        );
                    }
                }
                for (key, s) in &a.credentials {
                    self.secret(s, o.at(format!("spec.agent.credentials.{key}")), &format!("credential `{key}`"), &format!("/etc/rampart/secrets/{name}"));
                }
            }
            if let Some(r) = &spec.redfish {
                if !r.endpoint.starts_with("https://") {
                    self.push(
                        Diagnostic::error("redfish-endpoint", o.at("spec.redfish.endpoint"), format!("Redfish endpoint `{}` is not an https:// URL", r.endpoint))
                            .hint("BMC credentials travel with every request; write it as `https://HOST[:PORT]`"),
                    );
                }
                self.secret(&r.username, o.at("spec.redfish.username"), "the Redfish username", &format!("/etc/rampart/secrets/{name}-user"));
                self.secret(&r.password, o.at("spec.redfish.password"), "the Redfish password", &format!("/etc/rampart/secrets/{name}"));
                if !r.tls_verify {
                    self.push(
                        Diagnostic::warning("tls-verify", o.at("spec.redfish.tlsVerify"), "TLS verification of the BMC is off")
                            .hint("install the BMC's certificate and remove `tlsVerify: false`"),
                    );
                }
            }
            if let Some(t) = spec.timeout {
                self.positive(t, o.at("spec.timeout"), "timeout");
            }
            for (i, n) in spec.runs_on.iter().enumerate() {
                if !set.nodes.contains_key(n) {
                    self.unresolved("Node", n, o.at(format!("spec.runsOn[{i}]")), set.nodes.keys());
                }
            }
            if !used.contains(name.as_str()) {
                self.push(
                    Diagnostic::warning("unused", o.at("metadata.name"), format!("FenceDevice `{name}` is not used by any node"))
                        .hint("name it in a node's `fencing` levels, or remove it"),
                );
            }
        }
    }

    /// Nodes on which a volume is available.
    fn volume_nodes(&self, name: &str) -> Option<BTreeSet<&'a str>> {
        let v = &self.set.volumes.get(name)?.object.spec;
        let mut out = BTreeSet::new();
        if let Some(d) = &v.drbd {
            out.extend(d.replicas.iter().map(|r| r.node.as_str()));
        }
        if let Some(l) = &v.local {
            out.insert(l.node.as_str());
        }
        if let Some(s) = &v.shared {
            out.extend(s.nodes.iter().map(String::as_str));
        }
        Some(out)
    }

    fn volumes(&mut self) {
        let set = self.set;
        let mut minors: HashMap<(&str, u32), &str> = HashMap::new();
        let mut ports: HashMap<(&str, u16), &str> = HashMap::new();
        let used: BTreeSet<&str> = set
            .vms
            .values()
            .flat_map(|v| v.object.spec.volumes.iter().map(|a| a.volume.as_str()))
            .collect();
        for (name, e) in &set.volumes {
            let o = e.origin;
            let spec = &e.object.spec;
            let kinds = usize::from(spec.drbd.is_some()) + usize::from(spec.local.is_some()) + usize::from(spec.shared.is_some());
            if kinds != 1 {
                self.push(
                    Diagnostic::error("volume-type", o.key("spec"), "a Volume needs exactly one of `drbd`, `local` or `shared`")
                        .hint("`drbd` replicates between nodes, `local` is a disk on one node, `shared` is iSCSI/FC storage seen by several nodes"),
                );
            }
            if let Some(d) = &spec.drbd {
                if d.replicas.len() < 2 {
                    self.push(
                        Diagnostic::error("drbd-replicas", o.at("spec.drbd.replicas"), format!("a DRBD volume needs at least two replicas, `{name}` has {}", d.replicas.len()))
                            .hint("add a replica on a second hypervisor, or use a `local` volume"),
                    );
                }
                if d.replicas.len() > 32 {
                    self.push(Diagnostic::error("drbd-replicas", o.at("spec.drbd.replicas"), "DRBD 9 supports at most 32 replicas"));
                }
                if d.minor > 1_048_575 {
                    self.push(
                        Diagnostic::error("drbd-minor", o.at("spec.drbd.minor"), format!("minor {} is out of range", d.minor))
                            .hint("DRBD minors go from 0 to 1048575"),
                    );
                }
                if d.port == 0 {
                    self.push(Diagnostic::error("drbd-port", o.at("spec.drbd.port"), "port 0 is not a port").hint("DRBD ports are usually 7788 and up"));
                } else if d.port < 1024 {
                    self.push(
                        Diagnostic::warning("drbd-port", o.at("spec.drbd.port"), format!("port {} is a privileged port", d.port))
                            .hint("DRBD ports are usually 7788 and up"),
                    );
                }
                if let Some(s) = &d.secret {
                    self.secret(s, o.at("spec.drbd.secret"), "the DRBD shared secret", &format!("/etc/rampart/secrets/drbd-{name}"));
                }
                let mut seen = BTreeSet::new();
                for (i, r) in d.replicas.iter().enumerate() {
                    let anchor = o.at(format!("spec.drbd.replicas[{i}].node"));
                    if !seen.insert(r.node.as_str()) {
                        self.push(
                            Diagnostic::error("drbd-replicas", anchor, format!("node `{}` holds two replicas of `{name}`", r.node))
                                .hint("each replica must be on a different node"),
                        );
                        continue;
                    }
                    if !self.hypervisor_ref(&r.node, anchor, "a volume replica") {
                        continue;
                    }
                    if !r.disk.starts_with('/') {
                        self.push(
                            Diagnostic::error("disk-path", o.at(format!("spec.drbd.replicas[{i}].disk")), format!("backing disk `{}` is not an absolute path", r.disk))
                                .hint("give the block device, like `/dev/vg0/files`"),
                        );
                    }
                    if let Some(other) = minors.insert((set.nodes.get_key_value(&r.node).map(|(k, _)| k.as_str()).unwrap_or(""), d.minor), name) {
                        if other != name {
                            self.push(
                                Diagnostic::error("drbd-minor", o.at("spec.drbd.minor"), format!("minor {} is already used on node `{}` by volume `{other}`", d.minor, r.node))
                                    .hint("DRBD minors are unique per node; pick a free one"),
                            );
                        }
                    }
                    if let Some(other) = ports.insert((set.nodes.get_key_value(&r.node).map(|(k, _)| k.as_str()).unwrap_or(""), d.port), name) {
                        if other != name {
                            self.push(
                                Diagnostic::error("drbd-port", o.at("spec.drbd.port"), format!("port {} is already used on node `{}` by volume `{other}`", d.port, r.node))
                                    .hint("DRBD ports are unique per node; pick a free one"),
                            );
                        }
                    }
                }
            }
            if let Some(l) = &spec.local {
                self.hypervisor_ref(&l.node, o.at("spec.local.node"), "a volume");
                if !l.path.starts_with('/') {
                    self.push(Diagnostic::error("disk-path", o.at("spec.local.path"), format!("`{}` is not an absolute path", l.path)));
                }
            }
            if let Some(s) = &spec.shared {
                if s.nodes.is_empty() {
                    self.push(Diagnostic::error("shared-nodes", o.at("spec.shared.nodes"), "shared storage lists no node").hint("list the hypervisors that see the storage"));
                }
                for (i, n) in s.nodes.iter().enumerate() {
                    self.hypervisor_ref(n, o.at(format!("spec.shared.nodes[{i}]")), "a volume");
                }
                if !s.path.starts_with('/') {
                    self.push(Diagnostic::error("disk-path", o.at("spec.shared.path"), format!("`{}` is not an absolute path", s.path)));
                }
            }
            if !used.contains(name.as_str()) {
                self.push(
                    Diagnostic::warning("unused", o.at("metadata.name"), format!("Volume `{name}` is not used by any VM"))
                        .hint("attach it in a VM's `volumes`, or remove it"),
                );
            }
        }
    }

    fn vms(&mut self) {
        let set = self.set;
        let mut volume_owner: HashMap<&str, &str> = HashMap::new();
        let all_hypervisors: Vec<&str> = self.hypervisors().collect();
        for (name, e) in &set.vms {
            let o = e.origin;
            let spec = &e.object.spec;
            if spec.cpus == 0 {
                self.push(Diagnostic::error("vm-size", o.at("spec.cpus"), "a VM needs at least one CPU"));
            }
            if spec.memory.mib == 0 {
                self.push(Diagnostic::error("vm-size", o.at("spec.memory"), "a VM needs some memory"));
            }
            if let Some(d) = &spec.domain {
                if d.xml.is_some() == d.xml_file.is_some() {
                    self.push(
                        Diagnostic::error("domain", o.key("spec.domain"), "`domain` needs exactly one of `xmlFile` or `xml`")
                            .hint("or leave `domain` out to have Rampart describe the domain"),
                    );
                }
                if !spec.interfaces.is_empty() {
                    self.push(
                        Diagnostic::error("domain", o.key("spec.interfaces"), "`interfaces` describe a domain, but this VM gives its domain XML")
                            .hint("put the interfaces in the domain XML, or remove `domain` to have Rampart describe it"),
                    );
                }
            }
            for (i, nic) in spec.interfaces.iter().enumerate() {
                if let Some(mac) = &nic.mac {
                    let ok = mac.split(':').count() == 6 && mac.split(':').all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
                    if !ok {
                        self.push(
                            Diagnostic::error("mac", o.at(format!("spec.interfaces[{i}].mac")), format!("`{mac}` is not a MAC address"))
                                .hint("write six hex pairs, like `52:54:00:12:34:56`"),
                        );
                    }
                }
            }
            // Placement lists.
            let mut allowed: Vec<&str> = Vec::new();
            for (i, n) in spec.placement.allowed.iter().enumerate() {
                if self.hypervisor_ref(n, o.at(format!("spec.placement.allowed[{i}]")), "a VM") {
                    allowed.push(n);
                }
            }
            for (i, n) in spec.placement.preferred.iter().enumerate() {
                let anchor = o.at(format!("spec.placement.preferred[{i}]"));
                if self.hypervisor_ref(n, anchor.clone(), "a VM")
                    && !spec.placement.allowed.is_empty()
                    && !spec.placement.allowed.contains(n)
                {
                    self.push(
                        Diagnostic::error("preferred-not-allowed", anchor, format!("preferred node `{n}` is not in `allowed`"))
                            .hint(format!("add `{n}` to `placement.allowed` or remove it from `preferred`")),
                    );
                }
            }
            let eligible: Vec<&str> = if spec.placement.allowed.is_empty() { all_hypervisors.clone() } else { allowed };
            // Volumes: resolvable, owned by this VM only, present on every eligible node.
            let mut targets = BTreeSet::new();
            for (i, a) in spec.volumes.iter().enumerate() {
                let anchor = o.at(format!("spec.volumes[{i}].volume"));
                if !targets.insert(a.target.as_str()) {
                    self.push(Diagnostic::error("volume-target", o.at(format!("spec.volumes[{i}].target")), format!("target `{}` is used twice", a.target)));
                }
                let Some(nodes) = self.volume_nodes(&a.volume) else {
                    self.unresolved("Volume", &a.volume, anchor, set.volumes.keys());
                    continue;
                };
                if let Some(other) = volume_owner.insert(a.volume.as_str(), name) {
                    if other != name {
                        self.push(
                            Diagnostic::error("volume-shared-by-vms", anchor.clone(), format!("volume `{}` is already used by VM `{other}`", a.volume))
                                .hint("a volume belongs to one VM: it is Primary where that VM runs"),
                        );
                    }
                }
                let missing: Vec<&str> = eligible.iter().copied().filter(|n| !nodes.contains(n)).collect();
                if !missing.is_empty() {
                    let hint = if spec.placement.allowed.is_empty() {
                        format!(
                            "the VM may run on every hypervisor because `placement.allowed` is empty; list only the nodes holding the volume ({}), or add replicas",
                            quoted(&nodes)
                        )
                    } else {
                        format!("add a replica on {} to the volume, or allow only nodes that hold it ({})", quoted(&missing), quoted(&nodes))
                    };
                    self.push(
                        Diagnostic::error(
                            "volume-not-replicated",
                            anchor,
                            format!("volume `{}` is not available on {}, where VM `{name}` may run", a.volume, quoted(&missing)),
                        )
                        .hint(hint),
                    );
                }
            }
            for (i, other) in spec.placement.anti_affinity.iter().enumerate() {
                let anchor = o.at(format!("spec.placement.antiAffinity[{i}]"));
                if other == name {
                    self.push(Diagnostic::error("anti-affinity", anchor, "a VM cannot be anti-affine with itself"));
                } else if !set.vms.contains_key(other) {
                    self.unresolved("VirtualMachine", other, anchor, set.vms.keys());
                }
            }
            // Can it be placed at all?
            let fits = eligible.iter().any(|n| {
                set.nodes[*n]
                    .object
                    .spec
                    .capacity
                    .as_ref()
                    .is_some_and(|c| c.cpus >= spec.cpus && c.memory >= spec.memory)
            });
            if !eligible.is_empty() && !fits && (spec.cpus > 0 && spec.memory.mib > 0) {
                self.push(
                    Diagnostic::error(
                        "does-not-fit",
                        o.at("spec.memory"),
                        format!("VM `{name}` ({} CPUs, {}) fits on none of the nodes it may run on", spec.cpus, spec.memory),
                    )
                    .hint("make the VM smaller or allow a node with enough capacity"),
                );
            }
            if spec.failover && eligible.len() == 1 {
                self.push(
                    Diagnostic::warning(
                        "failover-one-node",
                        o.at("spec.failover"),
                        format!("VM `{name}` may fail over but can run only on `{}`", eligible[0]),
                    )
                    .hint("set `failover: false` to say it is pinned, or allow more nodes"),
                );
            }
        }
    }

    fn vips(&mut self) {
        let set = self.set;
        let node_addrs: HashMap<IpAddr, &str> = set
            .nodes
            .iter()
            .flat_map(|(n, e)| {
                let a = &e.object.spec.addresses;
                [Some(a.management), a.replication].into_iter().flatten().map(move |ip| (ip, n.as_str()))
            })
            .collect();
        let mut seen: HashMap<IpAddr, &str> = HashMap::new();
        for (name, e) in &set.vips {
            let o = e.origin;
            let spec = &e.object.spec;
            match parse_cidr(&spec.address) {
                Err(msg) => self.push(
                    Diagnostic::error("vip-address", o.at("spec.address"), format!("invalid address: {msg}"))
                        .hint("write ADDRESS/PREFIX, like `192.0.2.10/24` or `2001:db8::10/64`"),
                ),
                Ok((ip, prefix)) => {
                    if let IpAddr::V4(v4) = ip {
                        let host_bits = 32 - u32::from(prefix);
                        if prefix < 31 {
                            let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
                            let bits = u32::from(v4);
                            if bits & !mask == 0 || bits & !mask == !mask {
                                self.push(
                                    Diagnostic::error("vip-address", o.at("spec.address"), format!("{ip} is the network or broadcast address of /{prefix}"))
                                        .hint("pick a host address inside the subnet"),
                                );
                            }
                        }
                    }
                    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                        self.push(Diagnostic::error("vip-address", o.at("spec.address"), format!("{ip} cannot be a floating address")));
                    }
                    if let Some(other) = seen.insert(ip, name) {
                        self.push(
                            Diagnostic::error("vip-duplicate", o.at("spec.address"), format!("address {ip} is also VirtualIP `{other}`"))
                                .hint("two floating addresses cannot share an IP"),
                        );
                    }
                    if let Some(node) = node_addrs.get(&ip) {
                        self.push(
                            Diagnostic::error("vip-collides", o.at("spec.address"), format!("address {ip} is an address of node `{node}`"))
                                .hint("a floating address must not be any node's own address"),
                        );
                    }
                    if let Some(gw) = &spec.gateway {
                        match gw.parse::<IpAddr>() {
                            Err(_) => self.push(Diagnostic::error("vip-gateway", o.at("spec.gateway"), format!("`{gw}` is not an IP address"))),
                            Ok(g) if !in_subnet(g, ip, prefix) => self.push(
                                Diagnostic::error("vip-gateway", o.at("spec.gateway"), format!("gateway {g} is not inside {ip}/{prefix}"))
                                    .hint("the gateway must be reachable on the address's own subnet"),
                            ),
                            Ok(g) if g == ip => self.push(Diagnostic::error("vip-gateway", o.at("spec.gateway"), "the gateway is the address itself")),
                            Ok(_) => {}
                        }
                    }
                }
            }
            let ifname = &spec.interface;
            if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ', ':', '\t']) || ifname == "." || ifname == ".." {
                self.push(
                    Diagnostic::error("vip-interface", o.at("spec.interface"), format!("`{ifname}` is not a Linux interface name"))
                        .hint("interface names are 1 to 15 characters without `/`, `:` or spaces, like `br0`"),
                );
            }
            let f = &spec.follows;
            match (&f.virtual_machine, &f.node_selector) {
                (Some(vm), None) => {
                    if !set.vms.contains_key(vm) {
                        self.unresolved("VirtualMachine", vm, o.at("spec.follows.virtualMachine"), set.vms.keys());
                    }
                }
                (None, Some(sel)) => {
                    let matching: Vec<(&String, NodeRole)> = set
                        .nodes
                        .iter()
                        .filter(|(_, n)| sel.iter().all(|(k, v)| n.object.metadata.labels.get(k) == Some(v)))
                        .map(|(k, n)| (k, n.object.spec.role))
                        .collect();
                    if !matching.iter().any(|(_, r)| *r == NodeRole::Hypervisor) {
                        self.push(
                            Diagnostic::error("vip-selector", o.at("spec.follows.nodeSelector"), "the node selector matches no hypervisor")
                                .hint("label the hypervisors that may hold the address, or fix the selector"),
                        );
                    }
                }
                _ => self.push(
                    Diagnostic::error("vip-follows", o.key("spec.follows"), "`follows` needs exactly one of `virtualMachine` or `nodeSelector`")
                        .hint("an address follows a VM, or floats among the hypervisors a selector picks"),
                ),
            }
            if spec.arp.count > 100 {
                self.push(Diagnostic::error("vip-arp", o.at("spec.arp.count"), "more than 100 gratuitous ARPs is a flood").hint("3 to 5 is usual"));
            }
            if spec.arp.count > 1 && spec.arp.interval.is_zero() {
                self.push(Diagnostic::error("vip-arp", o.at("spec.arp.interval"), "several gratuitous ARPs need an interval between them"));
            }
        }
    }

    fn store_majority(&mut self) {
        let set = self.set;
        if set.nodes.is_empty() {
            return;
        }
        let members: Vec<&str> = set
            .nodes
            .iter()
            .filter(|(_, n)| n.object.spec.store_member)
            .map(|(k, _)| k.as_str())
            .collect();
        let anchor = set.clusters.first().map_or(Anchor::None, |c| c.origin.at("kind"));
        let n = members.len();
        if n < 3 {
            let hint = if self.hypervisors().count() == 2 {
                "two hypervisors need a witness: add a small third node with `role: witness` that only runs a store member".to_string()
            } else {
                "run a store member on at least three nodes (`storeMember: true`, the default)".to_string()
            };
            self.push(
                Diagnostic::error(
                    "store-majority",
                    anchor,
                    format!(
                        "the store has {n} member{} ({}): losing any one node would leave no majority, and the cluster would stop deciding",
                        if n == 1 { "" } else { "s" },
                        quoted(&members)
                    ),
                )
                .hint(hint),
            );
        } else if n % 2 == 0 {
            self.push(
                Diagnostic::warning(
                    "store-majority",
                    anchor,
                    format!("the store has {n} members; {n} tolerate as many lost nodes as {}", n - 1),
                )
                .hint("an odd number of store members is better; set `storeMember: false` on one node or add a witness"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("192.0.2.10/24").unwrap().1, 24);
        assert!(parse_cidr("192.0.2.10").is_err());
        assert!(parse_cidr("192.0.2.10/33").is_err());
        assert!(parse_cidr("2001:db8::1/64").is_ok());
        assert!(parse_cidr("nonsense/24").is_err());
    }

    #[test]
    fn subnets() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_subnet(ip("192.0.2.1"), ip("192.0.2.10"), 24));
        assert!(!in_subnet(ip("192.0.3.1"), ip("192.0.2.10"), 24));
        assert!(in_subnet(ip("10.1.2.3"), ip("192.0.2.10"), 0));
        assert!(!in_subnet(ip("2001:db8::1"), ip("192.0.2.10"), 24));
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("node-1"));
        assert!(!is_dns_label("Node1"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
