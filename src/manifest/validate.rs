//! Rules beyond the schema: references resolve, placement is possible, the store keeps a
//! majority, nothing secret sits in git. Every rule reports every violation it finds, each at
//! the field it is about, with a hint on how to fix it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use super::cluster::FencingPolicy;
use super::common::SecretRef;
use super::diag::{Anchor, Diagnostic, Part};
use super::fence::SECRET_PARAMETERS;
use super::load::did_you_mean;
use super::node::NodeRole;
use super::span::SpanIndex;
use super::volume::Drbd;
use super::xmlscan::{self, DrbdDevice};
use super::{Entry, Kind, ManifestSet, Origin};

/// Validate a loaded set. The set's own load diagnostics are not repeated here, and neither is
/// anything that follows only from a document that failed to load (see [`ManifestSet::failed`]):
/// a reference to it, a device only it would use, a count it would change.
pub fn validate(set: &ManifestSet) -> Vec<Diagnostic> {
    let mut v = Validator {
        set,
        out: Vec::new(),
        failed: set
            .failed
            .iter()
            .filter_map(|f| Some((f.kind, f.name.as_deref()?)))
            .collect(),
        node_failed: set.failed_any(Kind::Node),
        spans: HashMap::new(),
        facts: Vec::new(),
        xml_index: None,
    };
    if set.files.is_empty() {
        v.push(
            Diagnostic::error(
                "no-manifests",
                Anchor::None,
                "no manifest files (*.yaml, *.yml)",
            )
            .hint("point rampart at the directory holding your manifests"),
        );
    }
    v.cluster();
    v.names();
    v.nodes();
    v.fence_devices();
    v.volumes();
    v.vms();
    v.placement();
    v.vips();
    v.store_majority();
    v.out
}

struct Validator<'a> {
    set: &'a ManifestSet,
    out: Vec<Diagnostic>,
    /// Kind and name of every document that failed to load with a readable name.
    failed: HashSet<(Kind, &'a str)>,
    /// A Node document failed to load: conclusions from counting or adding up nodes (store
    /// majority, capacity) could be wrong, so they are not drawn.
    node_failed: bool,
    /// Span indexes of files, built only when a message names a place in another document.
    spans: HashMap<usize, SpanIndex>,
    /// What the placement checks need of each VM, gathered by [`Validator::vms`].
    facts: Vec<VmFacts<'a>>,
    /// Built when the first domain XML is checked.
    xml_index: Option<XmlIndex<'a>>,
}

/// What checking domain XML looks up, indexed once for all VMs.
#[derive(Default)]
struct XmlIndex<'a> {
    /// Backing disk path -> (DRBD volume, minor).
    backing: HashMap<&'a str, (&'a str, u32)>,
    /// Minor -> the first DRBD volume with it.
    minors: HashMap<u32, &'a str>,
    /// Volume -> the first VM attaching it.
    owners: HashMap<&'a str, &'a str>,
}

impl<'a> XmlIndex<'a> {
    fn build(set: &'a ManifestSet) -> Self {
        let mut x = XmlIndex::default();
        for (v, vol) in &set.volumes {
            if let Some(d) = &vol.object.spec.drbd {
                x.minors.entry(d.minor).or_insert(v);
                for r in &d.replicas {
                    x.backing
                        .entry(r.disk.as_str())
                        .or_insert((v.as_str(), d.minor));
                }
            }
        }
        for (vm, e) in &set.vms {
            for a in &e.object.spec.volumes {
                x.owners.entry(a.volume.as_str()).or_insert(vm);
            }
        }
        x
    }
}

/// A VM as the placement checks see it.
struct VmFacts<'a> {
    name: &'a str,
    origin: Origin,
    cpus: u64,
    memory: u64,
    failover: bool,
    /// Its valid `allowed` nodes, without repeats; `None` when it may run on every hypervisor.
    allowed: Option<Vec<&'a str>>,
    /// The node it can run on, when there is only one.
    only: Option<&'a str>,
    /// Where it normally runs: its first preferred node that it may run on, or its only node.
    home: Option<&'a str>,
    anti_affinity: &'a [String],
    /// The nodes it may run on are the ones written: no entry of `allowed` is unresolved, a
    /// witness or a Node that failed to load (each already reported), and it fits on one of
    /// them. Capacity conclusions are drawn only from such VMs.
    sound: bool,
}

/// Up to `max` names, quoted, and how many more there are.
fn quoted_some<'n>(names: impl ExactSizeIterator<Item = &'n str>, max: usize) -> String {
    let n = names.len();
    let shown = quoted(names.take(max));
    if n > max {
        format!("{shown} and {} more", n - max)
    } else {
        shown
    }
}

/// Every string value in a raw document (not the keys), for reading what a document that
/// failed to load refers to, whatever field was misspelt in it.
fn raw_strings<'v>(v: &'v serde_yaml::Value, out: &mut HashSet<&'v str>) {
    use serde_yaml::Value;
    match v {
        Value::String(s) => {
            out.insert(s);
        }
        Value::Sequence(items) => items.iter().for_each(|i| raw_strings(i, out)),
        Value::Mapping(m) => m.values().for_each(|i| raw_strings(i, out)),
        Value::Tagged(t) => raw_strings(&t.value, out),
        _ => {}
    }
}

/// Add (CPUs, MiB) pairs without overflowing: sizes come from the manifests, whatever they say.
fn add(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}

/// `n CPU(s) and MEMORY`.
fn size(cpus: u64, mib: u64) -> String {
    format!(
        "{cpus} CPU{} and {}",
        if cpus == 1 { "" } else { "s" },
        super::Memory::mib(mib)
    )
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

/// Where a MAC address was written, for naming the first place of a duplicate.
enum MacAt<'a> {
    /// A field of a VM manifest (`spec.interfaces[0].mac`).
    Field {
        vm: &'a str,
        origin: Origin,
        path: String,
    },
    /// An interface in a VM's domain XML, at `place` (`domains/files.xml:48`).
    Xml {
        vm: &'a str,
        origin: Origin,
        field: &'static str,
        place: String,
    },
}

impl MacAt<'_> {
    fn vm(&self) -> &str {
        match self {
            MacAt::Field { vm, .. } | MacAt::Xml { vm, .. } => vm,
        }
    }
    fn anchor(&self) -> Anchor {
        match self {
            MacAt::Field { origin, path, .. } => origin.at(path.clone()),
            MacAt::Xml { origin, field, .. } => origin.at(*field),
        }
    }
    /// ` (in the domain XML, FILE:LINE)` for an address from the XML.
    fn within(&self) -> String {
        match self {
            MacAt::Field { .. } => String::new(),
            MacAt::Xml { place, .. } => format!(" (in the domain XML, {place})"),
        }
    }
}

/// The six octets of `52:54:00:12:34:56`.
fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for o in &mut out {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A round duration at most `d`: whole seconds from a second up, tenths of a second below.
fn round_down(d: std::time::Duration) -> super::Duration {
    let ms = d.as_millis() as u64;
    let round = match ms {
        1000.. => ms / 1000 * 1000,
        100.. => ms / 100 * 100,
        _ => ms,
    };
    if round == 0 {
        super::Duration(d)
    } else {
        super::Duration::from_millis(round)
    }
}

impl<'a> Validator<'a> {
    fn push(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    /// `FILE:LINE` of the field at `path` of a document, for messages that point at a second
    /// place (where the other volume of a collision is defined).
    fn place(&mut self, origin: Origin, path: &str) -> String {
        let file = &self.set.files[origin.file];
        let index = self
            .spans
            .entry(origin.file)
            .or_insert_with(|| SpanIndex::build(&file.text));
        let (line, _) = index.locate(origin.doc, path, Part::Value);
        format!("{}:{line}", file.path.display())
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
                self.unresolved(Kind::Node, name, anchor, self.set.nodes.keys());
                false
            }
        }
    }

    /// Report a reference to an object that does not exist, unless its document exists but
    /// failed to load (that error says what is wrong).
    fn unresolved<'n>(
        &mut self,
        kind: Kind,
        name: &str,
        anchor: Anchor,
        known: impl Iterator<Item = &'n String> + Clone,
    ) {
        if self.failed.contains(&(kind, name)) {
            return;
        }
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
            // A Cluster document that failed to load is no missing Cluster.
            if set.object_count() > 0 && !set.failed_any(Kind::Cluster) {
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
        self.positive(
            t.renew_interval,
            o.at("spec.timing.renewInterval"),
            "renewInterval",
        );
        self.positive(
            t.fence_timeout,
            o.at("spec.timing.fenceTimeout"),
            "fenceTimeout",
        );
        self.positive(
            t.stop_timeout,
            o.at("spec.timing.stopTimeout"),
            "stopTimeout",
        );
        self.positive(
            t.start_timeout,
            o.at("spec.timing.startTimeout"),
            "startTimeout",
        );
        if !t.lease_ttl.is_zero()
            && !t.renew_interval.is_zero()
            && t.renew_interval.0 * 3 > t.lease_ttl.0
        {
            let third = round_down(t.lease_ttl.0 / 3);
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
        if let Some(h) = t.heartbeat_timeout {
            let at = o.at("spec.timing.heartbeatTimeout");
            if h.0 < std::time::Duration::from_millis(100) {
                self.push(
                    Diagnostic::error(
                        "timing",
                        at,
                        format!("heartbeatTimeout {h} is too short: a busy host or a dropped packet or two would get a healthy node fenced"),
                    )
                    .hint("use 100ms or more (corosync's token timeout is 1s to 3s), or remove it"),
                );
            } else if !t.lease_ttl.is_zero() && h.0 >= t.lease_ttl.0 {
                self.push(
                    Diagnostic::error(
                        "timing",
                        at,
                        format!(
                            "heartbeatTimeout {h} is not shorter than leaseTTL {}: the lease would always find a dead node first",
                            t.lease_ttl
                        ),
                    )
                    .hint(format!("make it shorter than {} or remove it", t.lease_ttl)),
                );
            } else if spec.fencing == FencingPolicy::Disabled {
                self.push(
                    Diagnostic::warning(
                        "timing",
                        at,
                        "heartbeatTimeout is not used with `fencing: disabled`: only a confirmed fence lets work leave a node before its lease runs out",
                    )
                    .hint("remove it, or set `fencing: required`"),
                );
            }
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
        fn each<T>(
            m: &BTreeMap<String, Entry<T>>,
            f: &mut impl FnMut(&str, Origin, &mut Vec<Diagnostic>),
            out: &mut Vec<Diagnostic>,
        ) {
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

    /// Whether hypervisors must have fencing. Without a Cluster the default (`required`)
    /// holds; when the Cluster failed to load, its raw `fencing` is read, and a value that
    /// cannot be read concludes nothing.
    fn fencing_required(&self) -> bool {
        if let Some(c) = self.set.clusters.first() {
            return c.object.spec.fencing == FencingPolicy::Required;
        }
        match self.set.failed.iter().find(|f| f.kind == Kind::Cluster) {
            None => true,
            Some(f) => match f.get("spec.fencing") {
                None => true,
                Some(v) => v.as_str() == Some("required"),
            },
        }
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
                            Diagnostic::error("capacity", o.at("spec.role"), format!("hypervisor `{name}` has no `capacity`"))
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
                                o.at("spec.role"),
                                format!("node `{name}` can host VMs but has no fencing level"),
                            )
                            .hint("add `fencing: [{devices: [{device: NAME}]}]` naming a FenceDevice, or set `fencing: disabled` in the Cluster to run without fencing (not for production)"),
                        );
                    }
                }
                NodeRole::Witness => {
                    if spec.libvirt_uri.is_some() {
                        self.push(
                            Diagnostic::error(
                                "witness-hosts-nothing",
                                o.key("spec.libvirtURI"),
                                "a witness node runs no VMs and needs no libvirt connection",
                            )
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
                        Diagnostic::error(
                            "fencing-level",
                            o.at(format!("spec.fencing[{li}].devices")),
                            "fencing level lists no device",
                        )
                        .hint("name at least one FenceDevice, or remove the level"),
                    );
                }
                for (di, r) in level.devices.iter().enumerate() {
                    let anchor = o.at(format!("spec.fencing[{li}].devices[{di}].device"));
                    match set.fence_devices.get(&r.device) {
                        None => self.unresolved(
                            Kind::FenceDevice,
                            &r.device,
                            anchor,
                            set.fence_devices.keys(),
                        ),
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
        if set.nodes.is_empty() && set.object_count() > 0 && !self.node_failed {
            let anchor = set
                .clusters
                .first()
                .map_or(Anchor::None, |c| c.origin.at("metadata.name"));
            self.push(
                Diagnostic::error("no-nodes", anchor, "the cluster has no nodes: there is no Node manifest")
                    .hint("add a `kind: Node` manifest for every host (see manifests/nodes/ in the Rampart repository); two hypervisors also need a witness node"),
            );
        }
        if !set.nodes.is_empty() && !self.node_failed && self.hypervisors().next().is_none() {
            self.push(
                Diagnostic::error(
                    "no-hypervisor",
                    Anchor::None,
                    "no node has `role: hypervisor`",
                )
                .hint("a cluster needs at least one hypervisor to run VMs"),
            );
        }
    }

    fn fence_devices(&mut self) {
        let set = self.set;
        let mut used: HashSet<&str> = set
            .nodes
            .values()
            .flat_map(|n| n.object.spec.fencing.iter())
            .flat_map(|l| l.devices.iter().map(|d| d.device.as_str()))
            .collect();
        // A Node that failed to load may name a device anywhere in its document.
        for f in set.failed.iter().filter(|f| f.kind == Kind::Node) {
            raw_strings(&f.value, &mut used);
        }
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
                        Diagnostic::error(
                            "fence-agent",
                            o.at("spec.agent.name"),
                            format!("`{}` is not a fence agent name", a.name),
                        )
                        .hint(
                            "give the executable's name as found on PATH, such as `fence_ipmilan`",
                        ),
                    );
                } else if !a.name.starts_with("fence_")
                    || a.name.len() == "fence_".len()
                    || !a
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    self.push(
                        Diagnostic::error("fence-agent", o.at("spec.agent.name"), format!("`{}` is not a standard fence agent name", a.name))
                            .hint("Rampart runs fence agents named fence_* (lower case, digits, `_`) from /usr/sbin, as the fence-agents package installs them"),
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
                    self.secret(
                        s,
                        o.at(format!("spec.agent.credentials.{key}")),
                        &format!("credential `{key}`"),
                        &format!("/etc/rampart/secrets/{name}"),
                    );
                }
            }
            if let Some(r) = &spec.redfish {
                if !r.endpoint.starts_with("https://") {
                    self.push(
                        Diagnostic::error("redfish-endpoint", o.at("spec.redfish.endpoint"), format!("Redfish endpoint `{}` is not an https:// URL", r.endpoint))
                            .hint("BMC credentials travel with every request; write it as `https://HOST[:PORT]`"),
                    );
                }
                self.secret(
                    &r.username,
                    o.at("spec.redfish.username"),
                    "the Redfish username",
                    &format!("/etc/rampart/secrets/{name}-user"),
                );
                self.secret(
                    &r.password,
                    o.at("spec.redfish.password"),
                    "the Redfish password",
                    &format!("/etc/rampart/secrets/{name}"),
                );
                if !r.tls_verify {
                    self.push(
                        Diagnostic::warning(
                            "tls-verify",
                            o.at("spec.redfish.tlsVerify"),
                            "TLS verification of the BMC is off",
                        )
                        .hint("install the BMC's certificate and remove `tlsVerify: false`"),
                    );
                }
            }
            if let Some(t) = spec.timeout {
                self.positive(t, o.at("spec.timeout"), "timeout");
                if let Some(c) = set.cluster() {
                    let limit = c.spec.timing.fence_timeout;
                    if t.0 > limit.0 {
                        self.push(
                            Diagnostic::error(
                                "fence-timeout",
                                o.at("spec.timeout"),
                                format!("the device's timeout ({t}) is longer than the Cluster's `timing.fenceTimeout` ({limit}), after which the controller gives up on a fence action"),
                            )
                            .hint(format!("lower it to at most {limit}, or raise `timing.fenceTimeout`")),
                        );
                    }
                }
            }
            for (i, n) in spec.runs_on.iter().enumerate() {
                match set.nodes.get(n) {
                    None => self.unresolved(Kind::Node, n, o.at(format!("spec.runsOn[{i}]")), set.nodes.keys()),
                    Some(node) if node.object.spec.role == NodeRole::Witness => self.push(
                        Diagnostic::error(
                            "witness-hosts-nothing",
                            o.at(format!("spec.runsOn[{i}]")),
                            format!("node `{n}` is a witness: it runs only a store member and cannot run fence agents"),
                        )
                        .hint(format!(
                            "list hypervisors that can reach the device in `runsOn`: {}",
                            quoted(self.hypervisors())
                        )),
                    ),
                    Some(_) => {}
                }
            }
            if !used.contains(name.as_str()) {
                self.push(
                    Diagnostic::warning(
                        "unused",
                        o.at("metadata.name"),
                        format!("FenceDevice `{name}` is not used by any node"),
                    )
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

    /// "DRBD minors are unique per node; N is free on ..." with the lowest minor or port at
    /// least `from` that no volume on `nodes` uses.
    fn free_hint(
        &self,
        what: &str,
        nodes: &[&str],
        of: impl Fn(&Drbd) -> u64,
        from: u64,
    ) -> String {
        let taken: HashSet<u64> = self
            .set
            .volumes
            .values()
            .filter_map(|v| v.object.spec.drbd.as_ref())
            .filter(|d| d.replicas.iter().any(|r| nodes.contains(&r.node.as_str())))
            .map(&of)
            .collect();
        let limit = if what == "port" { 65_535 } else { 1_048_575 };
        match (from..=limit).find(|n| !taken.contains(n)) {
            Some(free) => format!(
                "DRBD {what}s are unique per node; {what} {free} is free on {}",
                quoted(nodes)
            ),
            None => format!("DRBD {what}s are unique per node; pick a free one"),
        }
    }

    fn volumes(&mut self) {
        let set = self.set;
        // Which volume first took a minor or a port on a node.
        let mut minors: HashMap<(&str, u32), &str> = HashMap::new();
        let mut ports: HashMap<(&str, u16), &str> = HashMap::new();
        let mut used: HashSet<&str> = set
            .vms
            .values()
            .flat_map(|v| v.object.spec.volumes.iter().map(|a| a.volume.as_str()))
            .collect();
        // A VM that failed to load may attach a volume anywhere in its document.
        for f in set.failed.iter().filter(|f| f.kind == Kind::VirtualMachine) {
            raw_strings(&f.value, &mut used);
        }
        for (name, e) in &set.volumes {
            let o = e.origin;
            let spec = &e.object.spec;
            let kinds = usize::from(spec.drbd.is_some())
                + usize::from(spec.local.is_some())
                + usize::from(spec.shared.is_some());
            if kinds != 1 {
                self.push(
                    Diagnostic::error("volume-type", o.key("spec"), "a Volume needs exactly one of `drbd`, `local` or `shared`")
                        .hint("`drbd` replicates between nodes, `local` is a disk on one node, `shared` is iSCSI/FC storage seen by several nodes"),
                );
            }
            if let Some(d) = &spec.drbd {
                if d.replicas.len() < 2 {
                    self.push(
                        Diagnostic::error(
                            "drbd-replicas",
                            o.at("spec.drbd.replicas"),
                            format!(
                                "a DRBD volume needs at least two replicas, `{name}` has {}",
                                d.replicas.len()
                            ),
                        )
                        .hint("add a replica on a second hypervisor, or use a `local` volume"),
                    );
                }
                if d.replicas.len() > 32 {
                    self.push(Diagnostic::error(
                        "drbd-replicas",
                        o.at("spec.drbd.replicas"),
                        "DRBD 9 supports at most 32 replicas",
                    ));
                }
                if d.minor > 1_048_575 {
                    self.push(
                        Diagnostic::error(
                            "drbd-minor",
                            o.at("spec.drbd.minor"),
                            format!("minor {} is out of range", d.minor),
                        )
                        .hint("DRBD minors go from 0 to 1048575"),
                    );
                }
                if d.port == 0 {
                    self.push(
                        Diagnostic::error(
                            "drbd-port",
                            o.at("spec.drbd.port"),
                            "port 0 is not a port",
                        )
                        .hint("DRBD ports are usually 7788 and up"),
                    );
                } else if d.port < 1024 {
                    self.push(
                        Diagnostic::warning(
                            "drbd-port",
                            o.at("spec.drbd.port"),
                            format!("port {} is a privileged port", d.port),
                        )
                        .hint("DRBD ports are usually 7788 and up"),
                    );
                }
                if let Some(s) = &d.secret {
                    self.secret(
                        s,
                        o.at("spec.drbd.secret"),
                        "the DRBD shared secret",
                        &format!("/etc/rampart/secrets/drbd-{name}"),
                    );
                }
                let mut seen = BTreeSet::new();
                // Nodes shared with each volume that already uses this minor or port.
                let mut minor_clash: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                let mut port_clash: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                let mut families: (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
                for (i, r) in d.replicas.iter().enumerate() {
                    let anchor = o.at(format!("spec.drbd.replicas[{i}].node"));
                    if !seen.insert(r.node.as_str()) {
                        self.push(
                            Diagnostic::error(
                                "drbd-replicas",
                                anchor,
                                format!("node `{}` holds two replicas of `{name}`", r.node),
                            )
                            .hint("each replica must be on a different node"),
                        );
                        continue;
                    }
                    if !self.hypervisor_ref(&r.node, anchor, "a volume replica") {
                        continue;
                    }
                    if !r.disk.starts_with('/') {
                        self.push(
                            Diagnostic::error(
                                "disk-path",
                                o.at(format!("spec.drbd.replicas[{i}].disk")),
                                format!("backing disk `{}` is not an absolute path", r.disk),
                            )
                            .hint("give the block device, like `/dev/vg0/files`"),
                        );
                    }
                    let (node_name, node) = set.nodes.get_key_value(&r.node).expect("a hypervisor");
                    let node_name = node_name.as_str();
                    let first = *minors.entry((node_name, d.minor)).or_insert(name);
                    if first != name {
                        minor_clash.entry(first).or_default().push(node_name);
                    }
                    let first = *ports.entry((node_name, d.port)).or_insert(name);
                    if first != name {
                        port_clash.entry(first).or_default().push(node_name);
                    }
                    if node.object.spec.addresses.replication().is_ipv4() {
                        families.0.push(node_name);
                    } else {
                        families.1.push(node_name);
                    }
                }
                for (other, nodes) in minor_clash {
                    let at = self.place(set.volumes[other].origin, "spec.drbd.minor");
                    self.push(
                        Diagnostic::error(
                            "drbd-minor",
                            o.at("spec.drbd.minor"),
                            format!(
                                "minor {} is also used by volume `{other}` ({at}) on {}",
                                d.minor,
                                quoted(&nodes)
                            ),
                        )
                        .hint(self.free_hint(
                            "minor",
                            &nodes,
                            |v| u64::from(v.minor),
                            u64::from(d.minor),
                        )),
                    );
                }
                for (other, nodes) in port_clash {
                    let at = self.place(set.volumes[other].origin, "spec.drbd.port");
                    self.push(
                        Diagnostic::error(
                            "drbd-port",
                            o.at("spec.drbd.port"),
                            format!(
                                "port {} is also used by volume `{other}` ({at}) on {}",
                                d.port,
                                quoted(&nodes)
                            ),
                        )
                        .hint(self.free_hint(
                            "port",
                            &nodes,
                            |v| u64::from(v.port),
                            u64::from(d.port),
                        )),
                    );
                }
                if let ([v4, ..], [v6, ..]) = (families.0.as_slice(), families.1.as_slice()) {
                    let addr = |n: &str| set.nodes[n].object.spec.addresses.replication();
                    self.push(
                        Diagnostic::error(
                            "drbd-address-family",
                            o.at("spec.drbd.replicas"),
                            format!(
                                "the replicas of `{name}` mix IPv4 and IPv6 replication addresses (`{v4}` has {}, `{v6}` has {}): DRBD peers of different address families can never connect",
                                addr(v4),
                                addr(v6)
                            ),
                        )
                        .hint(format!(
                            "give the nodes of every replica a replication address of the same family (`spec.addresses.replication` of the Nodes; it defaults to `management`); IPv4: {}, IPv6: {}",
                            quoted(&families.0),
                            quoted(&families.1)
                        )),
                    );
                }
            }
            if let Some(l) = &spec.local {
                self.hypervisor_ref(&l.node, o.at("spec.local.node"), "a volume");
                if !l.path.starts_with('/') {
                    self.push(Diagnostic::error(
                        "disk-path",
                        o.at("spec.local.path"),
                        format!("`{}` is not an absolute path", l.path),
                    ));
                }
            }
            if let Some(s) = &spec.shared {
                if s.nodes.is_empty() {
                    self.push(
                        Diagnostic::error(
                            "shared-nodes",
                            o.at("spec.shared.nodes"),
                            "shared storage lists no node",
                        )
                        .hint("list the hypervisors that see the storage"),
                    );
                }
                for (i, n) in s.nodes.iter().enumerate() {
                    self.hypervisor_ref(n, o.at(format!("spec.shared.nodes[{i}]")), "a volume");
                }
                if !s.path.starts_with('/') {
                    self.push(Diagnostic::error(
                        "disk-path",
                        o.at("spec.shared.path"),
                        format!("`{}` is not an absolute path", s.path),
                    ));
                }
            }
            if !used.contains(name.as_str()) {
                self.push(
                    Diagnostic::warning(
                        "unused",
                        o.at("metadata.name"),
                        format!("Volume `{name}` is not used by any VM"),
                    )
                    .hint("attach it in a VM's `volumes`, or remove it"),
                );
            }
        }
    }

    fn vms(&mut self) {
        let set = self.set;
        let mut volume_owner: HashMap<&str, &str> = HashMap::new();
        let mut macs: HashMap<String, MacAt<'a>> = HashMap::new();
        let all_hypervisors: Vec<&str> = self.hypervisors().collect();
        for (name, e) in &set.vms {
            let o = e.origin;
            let spec = &e.object.spec;
            if spec.cpus == 0 {
                self.push(Diagnostic::error(
                    "vm-size",
                    o.at("spec.cpus"),
                    "a VM needs at least one CPU",
                ));
            }
            if spec.memory.mib == 0 {
                self.push(Diagnostic::error(
                    "vm-size",
                    o.at("spec.memory"),
                    "a VM needs some memory",
                ));
            }
            if let Some(d) = &spec.domain {
                if d.xml.is_some() == d.xml_file.is_some() {
                    self.push(
                        Diagnostic::error(
                            "domain",
                            o.key("spec.domain"),
                            "`domain` needs exactly one of `xmlFile` or `xml`",
                        )
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
                    let path = format!("spec.interfaces[{i}].mac");
                    if parse_mac(mac).is_none() {
                        self.push(
                            Diagnostic::error(
                                "mac",
                                o.at(path),
                                format!("`{mac}` is not a MAC address"),
                            )
                            .hint("write six hex pairs, like `52:54:00:12:34:56`"),
                        );
                    } else {
                        self.mac(
                            &mut macs,
                            mac,
                            MacAt::Field {
                                vm: name,
                                origin: o,
                                path,
                            },
                        );
                    }
                }
            }
            if let Some(xml) = set.domain_xml.get(name) {
                self.domain_xml(name, e, xml, &mut macs);
            }
            // Placement lists.
            let mut allowed: Vec<&str> = Vec::new();
            let mut sound = true;
            for (i, n) in spec.placement.allowed.iter().enumerate() {
                if self.hypervisor_ref(n, o.at(format!("spec.placement.allowed[{i}]")), "a VM") {
                    if !allowed.contains(&n.as_str()) {
                        allowed.push(n);
                    }
                } else {
                    sound = false;
                }
            }
            let every = spec.placement.allowed.is_empty();
            if every && self.node_failed {
                sound = false;
            }
            let eligible: &[&str] = if every { &all_hypervisors } else { &allowed };
            let mut home = None;
            for (i, n) in spec.placement.preferred.iter().enumerate() {
                let anchor = o.at(format!("spec.placement.preferred[{i}]"));
                if !self.hypervisor_ref(n, anchor.clone(), "a VM") {
                    continue;
                }
                if !every && !spec.placement.allowed.contains(n) {
                    self.push(
                        Diagnostic::error(
                            "preferred-not-allowed",
                            anchor,
                            format!("preferred node `{n}` is not in `allowed`"),
                        )
                        .hint(format!(
                            "add `{n}` to `placement.allowed` or remove it from `preferred`"
                        )),
                    );
                } else if home.is_none() {
                    home = eligible.iter().copied().find(|e| *e == n.as_str());
                }
            }
            // Volumes: resolvable, owned by this VM only, present on every eligible node.
            let mut targets = BTreeSet::new();
            for (i, a) in spec.volumes.iter().enumerate() {
                let anchor = o.at(format!("spec.volumes[{i}].volume"));
                if !targets.insert(a.target.as_str()) {
                    self.push(Diagnostic::error(
                        "volume-target",
                        o.at(format!("spec.volumes[{i}].target")),
                        format!("target `{}` is used twice", a.target),
                    ));
                }
                let Some(nodes) = self.volume_nodes(&a.volume) else {
                    self.unresolved(Kind::Volume, &a.volume, anchor, set.volumes.keys());
                    continue;
                };
                if let Some(other) = volume_owner.insert(a.volume.as_str(), name) {
                    if other != name {
                        self.push(
                            Diagnostic::error(
                                "volume-shared-by-vms",
                                anchor.clone(),
                                format!("volume `{}` is already used by VM `{other}`", a.volume),
                            )
                            .hint("a volume belongs to one VM: it is Primary where that VM runs"),
                        );
                    }
                }
                let missing: Vec<&str> = eligible
                    .iter()
                    .copied()
                    .filter(|n| !nodes.contains(n))
                    .collect();
                if !missing.is_empty() {
                    let hint = if every {
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
                            format!(
                                "volume `{}` is not available on {}, where VM `{name}` may run",
                                a.volume,
                                quoted(&missing)
                            ),
                        )
                        .hint(hint),
                    );
                }
            }
            for (i, other) in spec.placement.anti_affinity.iter().enumerate() {
                let anchor = o.at(format!("spec.placement.antiAffinity[{i}]"));
                if other == name {
                    self.push(
                        Diagnostic::error("anti-affinity", anchor, "a VM cannot be anti-affine with itself")
                            .hint(format!(
                                "remove `{name}` from its own `antiAffinity`; list the VMs it must never share a node with, such as the other half of a redundant pair"
                            )),
                    );
                } else if !set.vms.contains_key(other) {
                    self.unresolved(Kind::VirtualMachine, other, anchor, set.vms.keys());
                }
            }
            // Can it be placed at all? Only asked when its nodes are the ones written: a node
            // that is unresolved or failed to load is reported already, and may be the one it
            // was meant to fit on.
            let sized = spec.cpus > 0 && spec.memory.mib > 0;
            let fits = eligible.iter().any(|n| {
                set.nodes[*n]
                    .object
                    .spec
                    .capacity
                    .as_ref()
                    .is_some_and(|c| c.cpus >= spec.cpus && c.memory >= spec.memory)
            });
            if sound && sized && !eligible.is_empty() && !fits {
                self.push(
                    Diagnostic::error(
                        "does-not-fit",
                        o.at("spec.memory"),
                        format!(
                            "VM `{name}` ({} CPUs, {}) fits on none of the nodes it may run on",
                            spec.cpus, spec.memory
                        ),
                    )
                    .hint("make the VM smaller or allow a node with enough capacity"),
                );
            }
            if sound && spec.failover && eligible.len() == 1 {
                self.push(
                    Diagnostic::warning(
                        "failover-one-node",
                        o.at("spec.failover"),
                        format!(
                            "VM `{name}` may fail over but can run only on `{}`",
                            eligible[0]
                        ),
                    )
                    .hint("set `failover: false` to say it is pinned, or allow more nodes"),
                );
            }
            let only = match eligible {
                [one] => Some(*one),
                _ => None,
            };
            self.facts.push(VmFacts {
                name,
                origin: o,
                cpus: u64::from(spec.cpus),
                memory: spec.memory.mib,
                failover: spec.failover,
                allowed: (!every).then_some(allowed),
                only,
                home: home.or(only),
                anti_affinity: &spec.placement.anti_affinity,
                sound: sound && sized && fits,
            });
        }
    }

    /// Check a MAC address that is well formed: not multicast, and not used twice.
    fn mac(&mut self, seen: &mut HashMap<String, MacAt<'a>>, mac: &str, at: MacAt<'a>) {
        let Some(octets) = parse_mac(mac) else { return };
        if octets[0] & 1 == 1 {
            self.push(
                Diagnostic::error(
                    "mac",
                    at.anchor(),
                    format!("`{mac}` is a multicast MAC address{}; libvirt refuses it for an interface", at.within()),
                )
                .hint("the first octet must be even; KVM guests usually get `52:54:00:xx:xx:xx`, Xen guests `00:16:3e:xx:xx:xx`"),
            );
            return;
        }
        let key = mac.to_ascii_lowercase();
        match seen.get(&key) {
            None => {
                seen.insert(key, at);
            }
            Some(first) => {
                let (first_vm, where_first) = match first {
                    MacAt::Field { vm, origin, path } => {
                        let (vm, origin, path) = (*vm, *origin, path.clone());
                        (vm, self.place(origin, &path))
                    }
                    MacAt::Xml { vm, place, .. } => (*vm, place.clone()),
                };
                let other = if first_vm == at.vm() {
                    format!("another interface of this VM ({where_first})")
                } else {
                    format!("VM `{first_vm}` ({where_first})")
                };
                self.push(
                    Diagnostic::error(
                        "mac-duplicate",
                        at.anchor(),
                        format!("MAC address {mac}{} is also used by {other}", at.within()),
                    )
                    .hint("two interfaces with one MAC address break each other's traffic on the bridge; change one (without `mac`, Rampart derives one from the VM's name)"),
                );
            }
        }
    }

    /// Check a VM's own domain XML against its manifest: its name, the DRBD devices and
    /// backing disks its disks use, its MAC addresses.
    fn domain_xml(
        &mut self,
        name: &'a str,
        e: &'a Entry<super::VirtualMachine>,
        xml: &'a str,
        macs: &mut HashMap<String, MacAt<'a>>,
    ) {
        let set = self.set;
        let o = e.origin;
        let spec = &e.object.spec;
        let file = spec.domain.as_ref().and_then(|d| d.xml_file.as_deref());
        let field = if file.is_some() {
            "spec.domain.xmlFile"
        } else {
            "spec.domain.xml"
        };
        let place = |line: usize| match file {
            Some(f) => format!("{f}:{line}"),
            None => format!("line {line} of `xml`"),
        };
        let scan = xmlscan::scan(xml);
        match scan.name {
            Some((n, _)) if n == name => {}
            Some((n, line)) => self.push(
                Diagnostic::warning(
                    "domain-name",
                    o.at(field),
                    format!("the domain XML names the domain `{n}` ({}), but the VM is `{name}`", place(line)),
                )
                .hint(format!("Rampart looks the domain up by the VM's name; write `<name>{name}</name>`")),
            ),
            None => self.push(
                Diagnostic::warning("domain-name", o.at(field), "the domain XML has no `<name>`")
                    .hint(format!("libvirt needs one, and Rampart looks the domain up by the VM's name; add `<name>{name}</name>`")),
            ),
        }
        // The DRBD volumes this VM attaches, as (volume, minor).
        let own: Vec<(&str, u32)> = spec
            .volumes
            .iter()
            .filter_map(|a| {
                let (k, v) = set.volumes.get_key_value(&a.volume)?;
                Some((k.as_str(), v.object.spec.drbd.as_ref()?.minor))
            })
            .collect();
        let own_devices = || {
            let list: Vec<String> = own
                .iter()
                .map(|(v, m)| format!("/dev/drbd{m} (`{v}`)"))
                .collect();
            if list.is_empty() {
                "it attaches no DRBD volume".to_string()
            } else {
                format!("its own are {}", list.join(", "))
            }
        };
        // Taken out of `self` while reporting, and put back at the end.
        let index = self
            .xml_index
            .take()
            .unwrap_or_else(|| XmlIndex::build(set));
        let owner_of = |volume: &str| index.owners.get(volume).copied();
        let mut reported = HashSet::new();
        for attr in &scan.attrs {
            if attr.element == "mac" && attr.name == "address" {
                self.mac(
                    macs,
                    attr.value,
                    MacAt::Xml {
                        vm: name,
                        origin: o,
                        field,
                        place: place(attr.line),
                    },
                );
                continue;
            }
            let Some(device) = xmlscan::drbd_device(attr.value) else {
                continue;
            };
            let volume: Option<&str> = match device {
                DrbdDevice::Minor(m) => {
                    if own.iter().any(|(_, om)| *om == m) {
                        continue;
                    }
                    index.minors.get(&m).copied()
                }
                DrbdDevice::Resource(r) => {
                    if own.iter().any(|(v, _)| *v == r) {
                        continue;
                    }
                    set.volumes
                        .get_key_value(r)
                        .filter(|(_, v)| v.object.spec.drbd.is_some())
                        .map(|(k, _)| k.as_str())
                }
            };
            if !reported.insert(attr.value) {
                continue;
            }
            let whose = match volume {
                Some(v) => match owner_of(v) {
                    Some(vm) => format!("the device of volume `{v}`, which belongs to VM `{vm}`"),
                    None => format!("the device of volume `{v}`, which this VM does not attach"),
                },
                None => {
                    "a device that no DRBD Volume of the cluster defines, so nothing replicates it"
                        .to_string()
                }
            };
            let hint = match volume {
                Some(v) if owner_of(v).is_none() => format!(
                    "attach `{v}` in `spec.volumes` so Rampart makes the node Primary for it before starting the VM; {}",
                    own_devices()
                ),
                _ => format!("a VM may use only the devices of the volumes it attaches; {}", own_devices()),
            };
            self.push(
                Diagnostic::error(
                    "domain-xml-device",
                    o.at(field),
                    format!(
                        "the domain XML uses `{}` ({}), {whose}",
                        attr.value,
                        place(attr.line)
                    ),
                )
                .hint(hint),
            );
        }
        // A DRBD backing disk used directly: writes would bypass replication.
        let bypass: Vec<(&xmlscan::Attr, &str, u32)> = scan
            .attrs
            .iter()
            .filter(|a| a.element == "source")
            .filter_map(|a| index.backing.get(a.value).map(|(v, m)| (a, *v, *m)))
            .collect();
        for (attr, v, minor) in bypass {
            if !reported.insert(attr.value) {
                continue;
            }
            self.push(
                Diagnostic::error(
                    "domain-xml-device",
                    o.at(field),
                    format!(
                        "the domain XML uses `{}` ({}), the backing disk of DRBD volume `{v}`: writes there bypass replication and are lost on failover",
                        attr.value,
                        place(attr.line)
                    ),
                )
                .hint(format!("use the volume's DRBD device, `/dev/drbd{minor}`")),
            );
        }
        self.xml_index = Some(index);
    }

    /// Capacity across VMs: VMs that can run on one node only must fit there together, two
    /// anti-affine VMs must not both be bound to the same node, and the VMs that fail over
    /// from any one hypervisor should find room on the others.
    fn placement(&mut self) {
        let set = self.set;
        let facts = std::mem::take(&mut self.facts);
        let capacity: HashMap<&str, (u64, u64)> = set
            .nodes
            .iter()
            .filter(|(_, n)| n.object.spec.role == NodeRole::Hypervisor)
            .filter_map(|(k, n)| {
                let c = n.object.spec.capacity.as_ref()?;
                Some((k.as_str(), (u64::from(c.cpus), c.memory.mib)))
            })
            .collect();
        let by_name: HashMap<&str, &VmFacts> = facts.iter().map(|f| (f.name, f)).collect();

        // VMs bound to one node, by node.
        let mut bound: BTreeMap<&str, Vec<&VmFacts>> = BTreeMap::new();
        for f in facts.iter().filter(|f| f.sound) {
            if let Some(n) = f.only {
                bound.entry(n).or_default().push(f);
            }
        }
        for (node, vms) in &bound {
            let Some(&(cap_cpus, cap_mib)) = capacity.get(node) else {
                continue;
            };
            let (cpus, mib) = vms
                .iter()
                .fold((0, 0), |acc, f| add(acc, (f.cpus, f.memory)));
            if cpus <= cap_cpus && mib <= cap_mib {
                continue;
            }
            let origin = set.nodes[*node].origin;
            self.push(
                Diagnostic::error(
                    "bound-vms-do-not-fit",
                    origin.key("spec.capacity"),
                    format!(
                        "the VMs that can run only on `{node}` need {} together, more than its capacity of {}: {}",
                        size(cpus, mib),
                        size(cap_cpus, cap_mib),
                        quoted_some(vms.iter().map(|f| f.name), 10)
                    ),
                )
                .hint(format!(
                    "`{node}` is the only node they may run on (by `placement.allowed`, or as the only hypervisor); allow some of them on other nodes, make them smaller, or give `{node}` more capacity"
                )),
            );
        }

        // Anti-affine VMs bound to the same node.
        let mut pairs = HashSet::new();
        for f in facts.iter().filter(|f| f.sound) {
            let Some(node) = f.only else { continue };
            for (i, other) in f.anti_affinity.iter().enumerate() {
                let Some(g) = by_name.get(other.as_str()) else {
                    continue;
                };
                if g.name == f.name || !g.sound || g.only != Some(node) {
                    continue;
                }
                let pair = if f.name < g.name {
                    (f.name, g.name)
                } else {
                    (g.name, f.name)
                };
                if !pairs.insert(pair) {
                    continue;
                }
                self.push(
                    Diagnostic::error(
                        "anti-affinity",
                        f.origin.at(format!("spec.placement.antiAffinity[{i}]")),
                        format!("VMs `{}` and `{}` must never share a node, but both can run only on `{node}`", f.name, g.name),
                    )
                    .hint("allow one of them on another node (its volumes must be there too), or drop the anti-affinity; as it is, one of them never runs"),
                );
            }
        }

        // Spare capacity: what each hypervisor's loss would displace against what the others
        // have free. A sum check, O(nodes + VMs + the lengths of `allowed` lists): it ignores
        // how VMs pack and their anti-affinity, so it warns only when room is surely short.
        // VMs that prefer no node are counted nowhere, since where they run is not known.
        if self.node_failed {
            return;
        }
        let mut load: HashMap<&str, (u64, u64)> = HashMap::new();
        for f in facts.iter().filter(|f| f.sound) {
            if let Some(h) = f.home {
                let l = load.entry(h).or_default();
                *l = add(*l, (f.cpus, f.memory));
            }
        }
        let free = |n: &str| -> (u64, u64) {
            let (c, m) = capacity.get(n).copied().unwrap_or_default();
            let (lc, lm) = load.get(n).copied().unwrap_or_default();
            (c.saturating_sub(lc), m.saturating_sub(lm))
        };
        let total_free = capacity.keys().fold((0, 0), |acc, n| add(acc, free(n)));
        let mut displaced: BTreeMap<&str, Vec<&VmFacts>> = BTreeMap::new();
        for f in facts
            .iter()
            .filter(|f| f.sound && f.failover && f.only.is_none())
        {
            if let Some(h) = f.home {
                displaced.entry(h).or_default().push(f);
            }
        }
        for (node, vms) in displaced {
            // The VMs grouped by the nodes they may move to (`None`: every other hypervisor),
            // and all of them together against every node any of them may move to.
            let mut groups: BTreeMap<Option<Vec<&str>>, Vec<&VmFacts>> = BTreeMap::new();
            for f in &vms {
                let key = f.allowed.as_ref().map(|a| {
                    let mut a: Vec<&str> = a.iter().copied().filter(|n| *n != node).collect();
                    a.sort_unstable();
                    a
                });
                groups.entry(key).or_default().push(f);
            }
            let mut checks: Vec<(Option<Vec<&str>>, Vec<&VmFacts>)> = Vec::new();
            if groups.len() > 1 {
                let union = if groups.contains_key(&None) {
                    None
                } else {
                    let mut u: BTreeSet<&str> = BTreeSet::new();
                    for k in groups.keys().flatten() {
                        u.extend(k.iter().copied());
                    }
                    Some(u.into_iter().collect())
                };
                checks.push((union, vms.clone()));
            }
            checks.extend(groups);
            for (targets, group) in checks {
                let need = group
                    .iter()
                    .fold((0, 0), |acc, f| add(acc, (f.cpus, f.memory)));
                let have = match &targets {
                    None => {
                        let own = free(node);
                        (
                            total_free.0.saturating_sub(own.0),
                            total_free.1.saturating_sub(own.1),
                        )
                    }
                    Some(t) => t.iter().fold((0, 0), |acc, n| add(acc, free(n))),
                };
                if need.0 <= have.0 && need.1 <= have.1 {
                    continue;
                }
                let others = match &targets {
                    None => "the other hypervisors have".to_string(),
                    Some(t) if t.len() == 1 => format!("`{}` has", t[0]),
                    Some(t) => format!("{} have", quoted_some(t.iter().copied(), 10)),
                };
                self.push(
                    Diagnostic::warning(
                        "spare-capacity",
                        set.nodes[node].origin.at("metadata.name"),
                        format!(
                            "losing `{node}` would leave VMs down: {} would fail over from it and need {}, but {others} only {} free beside what runs there",
                            quoted_some(group.iter().map(|f| f.name), 10),
                            size(need.0, need.1),
                            size(have.0, have.1)
                        ),
                    )
                    .hint(format!(
                        "give the other nodes more capacity, allow these VMs on more nodes, or set `failover: false` on those that may stay down until `{node}` is back"
                    )),
                );
                break;
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
                [Some(a.management), a.replication]
                    .into_iter()
                    .flatten()
                    .map(move |ip| (ip, n.as_str()))
            })
            .collect();
        let mut seen: HashMap<IpAddr, &str> = HashMap::new();
        for (name, e) in &set.vips {
            let o = e.origin;
            let spec = &e.object.spec;
            match parse_cidr(&spec.address) {
                Err(msg) => self.push(
                    Diagnostic::error(
                        "vip-address",
                        o.at("spec.address"),
                        format!("invalid address: {msg}"),
                    )
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
                                    Diagnostic::error(
                                        "vip-address",
                                        o.at("spec.address"),
                                        format!(
                                            "{ip} is the network or broadcast address of /{prefix}"
                                        ),
                                    )
                                    .hint("pick a host address inside the subnet"),
                                );
                            }
                        }
                    }
                    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                        self.push(Diagnostic::error(
                            "vip-address",
                            o.at("spec.address"),
                            format!("{ip} cannot be a floating address"),
                        ));
                    }
                    if let Some(other) = seen.insert(ip, name) {
                        self.push(
                            Diagnostic::error(
                                "vip-duplicate",
                                o.at("spec.address"),
                                format!("address {ip} is also VirtualIP `{other}`"),
                            )
                            .hint("two floating addresses cannot share an IP"),
                        );
                    }
                    if let Some(node) = node_addrs.get(&ip) {
                        self.push(
                            Diagnostic::error(
                                "vip-collides",
                                o.at("spec.address"),
                                format!("address {ip} is an address of node `{node}`"),
                            )
                            .hint("a floating address must not be any node's own address"),
                        );
                    }
                    if let Some(gw) = &spec.gateway {
                        match gw.parse::<IpAddr>() {
                            Err(_) => self.push(Diagnostic::error(
                                "vip-gateway",
                                o.at("spec.gateway"),
                                format!("`{gw}` is not an IP address"),
                            )),
                            Ok(g) if !in_subnet(g, ip, prefix) => self.push(
                                Diagnostic::error(
                                    "vip-gateway",
                                    o.at("spec.gateway"),
                                    format!("gateway {g} is not inside {ip}/{prefix}"),
                                )
                                .hint("the gateway must be reachable on the address's own subnet"),
                            ),
                            Ok(g) if g == ip => self.push(Diagnostic::error(
                                "vip-gateway",
                                o.at("spec.gateway"),
                                "the gateway is the address itself",
                            )),
                            Ok(_) => {}
                        }
                    }
                }
            }
            let ifname = &spec.interface;
            if ifname.is_empty()
                || ifname.len() > 15
                || ifname.contains(['/', ' ', ':', '\t'])
                || ifname == "."
                || ifname == ".."
            {
                self.push(
                    Diagnostic::error("vip-interface", o.at("spec.interface"), format!("`{ifname}` is not a Linux interface name"))
                        .hint("interface names are 1 to 15 characters without `/`, `:` or spaces, like `br0`"),
                );
            }
            let f = &spec.follows;
            match (&f.virtual_machine, &f.node_selector) {
                (Some(vm), None) => {
                    if !set.vms.contains_key(vm) {
                        self.unresolved(Kind::VirtualMachine, vm, o.at("spec.follows.virtualMachine"), set.vms.keys());
                    }
                }
                (None, Some(sel)) if sel.is_empty() => self.push(
                    Diagnostic::warning(
                        "vip-selector",
                        o.at("spec.follows.nodeSelector"),
                        "an empty nodeSelector `{}` matches every hypervisor: the address may land on any of them",
                    )
                    .hint("select by label the hypervisors attached to the address's network, like `nodeSelector: {edge: \"true\"}`; if that is every hypervisor, label them all, so a new node takes the address only once it is labelled"),
                ),
                (None, Some(sel)) => {
                    let matching: Vec<(&String, NodeRole)> = set
                        .nodes
                        .iter()
                        .filter(|(_, n)| sel.iter().all(|(k, v)| n.object.metadata.labels.get(k) == Some(v)))
                        .map(|(k, n)| (k, n.object.spec.role))
                        .collect();
                    if !self.node_failed && !matching.iter().any(|(_, r)| *r == NodeRole::Hypervisor) {
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
                self.push(
                    Diagnostic::error(
                        "vip-arp",
                        o.at("spec.arp.count"),
                        "more than 100 gratuitous ARPs is a flood",
                    )
                    .hint("3 to 5 is usual"),
                );
            }
            if spec.arp.count > 1 && spec.arp.interval.is_zero() {
                self.push(Diagnostic::error(
                    "vip-arp",
                    o.at("spec.arp.interval"),
                    "several gratuitous ARPs need an interval between them",
                ));
            }
        }
    }

    fn store_majority(&mut self) {
        let set = self.set;
        // Without every Node, the members cannot be counted.
        if set.nodes.is_empty() || self.node_failed {
            return;
        }
        let members: Vec<&str> = set
            .nodes
            .iter()
            .filter(|(_, n)| n.object.spec.store_member)
            .map(|(k, _)| k.as_str())
            .collect();
        let anchor = set
            .clusters
            .first()
            .map_or(Anchor::None, |c| c.origin.at("kind"));
        let n = members.len();
        if n < 3 {
            let hint = if self.hypervisors().count() == 2 {
                "two hypervisors need a witness: add a small third node with `role: witness` that only runs a store member".to_string()
            } else {
                "run a store member on at least three nodes (`storeMember: true`, the default)"
                    .to_string()
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

    /// Load and validate manifests given as text, one file each.
    fn check(files: &[&str]) -> Vec<Diagnostic> {
        let source = crate::synth::MemSource {
            files: files
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("f{i}.yaml"), t.to_string()))
                .collect(),
        };
        let report = super::super::check(&source);
        report.diagnostics
    }

    fn codes(d: &[Diagnostic]) -> Vec<&'static str> {
        let mut c: Vec<_> = d
            .iter()
            .map(|d| d.code)
            .filter(|c| *c != "fencing-disabled")
            .collect();
        c.sort_unstable();
        c
    }

    const CLUSTER: &str = "apiVersion: rampart.dev/v1alpha1\nkind: Cluster\nmetadata: {name: lab}\nspec: {fencing: disabled}\n";

    fn node(name: &str, ip: u8, cpus: u32, gib: u32) -> String {
        format!(
            "apiVersion: rampart.dev/v1alpha1\nkind: Node\nmetadata: {{name: {name}}}\nspec:\n  role: hypervisor\n  addresses: {{management: 192.0.2.{ip}}}\n  capacity: {{cpus: {cpus}, memory: {gib}GiB}}\n"
        )
    }

    fn vm(name: &str, cpus: u32, gib: u32, placement: &str) -> String {
        format!(
            "apiVersion: rampart.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {{name: {name}}}\nspec:\n  cpus: {cpus}\n  memory: {gib}GiB\n  placement: {placement}\n"
        )
    }

    #[test]
    fn spare_capacity_counts_what_fails_over_against_what_is_free() {
        let nodes = [
            node("a", 1, 8, 32),
            node("b", 2, 8, 32),
            node("c", 3, 8, 32),
        ];
        let mut files: Vec<&str> = vec![CLUSTER];
        files.extend(nodes.iter().map(String::as_str));
        // x leaves a for b (2 CPUs free) or c (8 free); y leaves b for a or c: room enough.
        let fits = [
            vm("x", 6, 8, "{preferred: [a]}"),
            vm("y", 6, 8, "{preferred: [b]}"),
        ];
        let mut ok = files.clone();
        ok.extend(fits.iter().map(String::as_str));
        let d = check(&ok);
        assert_eq!(codes(&d), Vec::<&str>::new(), "{d:?}");
        let pinned = |n: &str, cpus: u32, on: &str| {
            vm(n, cpus, 8, &format!("{{allowed: [{on}]}}"))
                .replace("  placement:", "  failover: false\n  placement:")
        };
        // p and q may leave a only for b, which has 4 CPUs free beside r; s goes to c. All of
        // them together fit in b and c (8 CPUs in 12), but p and q do not fit in b.
        let grouped = [
            vm("p", 3, 8, "{allowed: [a, b], preferred: [a]}"),
            vm("q", 3, 8, "{allowed: [a, b], preferred: [a]}"),
            vm("s", 2, 8, "{allowed: [a, c], preferred: [a]}"),
            pinned("r", 4, "b"),
        ];
        let mut g = files.clone();
        g.extend(grouped.iter().map(String::as_str));
        let d = check(&g);
        assert_eq!(codes(&d), vec!["spare-capacity"], "{d:?}");
        let m = &d
            .iter()
            .find(|d| d.code == "spare-capacity")
            .unwrap()
            .message;
        assert!(
            m.contains("losing `a` would leave VMs down: `p`, `q` would"),
            "{m}"
        );
        assert!(
            m.contains("need 6 CPUs and 16GiB, but `b` has only 4 CPUs"),
            "{m}"
        );
        // Allowed everywhere: "the other hypervisors".
        let everywhere = [
            vm("big", 8, 30, "{preferred: [a]}"),
            pinned("b1", 6, "b"),
            pinned("c1", 6, "c"),
        ];
        let mut e = files.clone();
        e.extend(everywhere.iter().map(String::as_str));
        let d = check(&e);
        assert_eq!(codes(&d), vec!["spare-capacity"], "{d:?}");
        let m = &d
            .iter()
            .find(|d| d.code == "spare-capacity")
            .unwrap()
            .message;
        assert!(m.contains("the other hypervisors have only 4 CPUs"), "{m}");
        // A VM that prefers no node is counted nowhere: where it runs is not known.
        let floating = [
            vm("f", 8, 30, "{}"),
            pinned("b1", 6, "b"),
            pinned("c1", 6, "c"),
        ];
        let mut f = files.clone();
        f.extend(floating.iter().map(String::as_str));
        assert_eq!(codes(&check(&f)), Vec::<&str>::new());
    }

    #[test]
    fn load_errors_do_not_cascade_but_other_errors_stay() {
        let nodes = [node("a", 1, 8, 32), node("b", 2, 8, 32)];
        // A Cluster with no readable name still is a Cluster: no "no Cluster manifest".
        let broken_cluster = "apiVersion: rampart.dev/v1alpha1\nkind: Cluster\nmetadata: {nme: lab}\nspec: {fencing: disabled}\n";
        let broken_node = node("c", 3, 8, 32).replace("role:", "rol:");
        let d = check(&[
            broken_cluster,
            &nodes[0],
            &nodes[1],
            &broken_node,
            &vm("v", 1, 1, "{allowed: [a, c, nowhere]}"),
        ]);
        assert_eq!(
            codes(&d),
            vec!["unknown-field", "unknown-field", "unresolved-reference"],
            "{d:?}"
        );
        assert!(d
            .iter()
            .any(|d| d.message == "Node `nowhere` is not defined"));
        // With every Node missing, nothing concludes "no nodes".
        let d = check(&[CLUSTER, &broken_node]);
        assert_eq!(codes(&d), vec!["unknown-field"], "{d:?}");
        let d = check(&[CLUSTER]);
        assert_eq!(codes(&d), vec!["no-nodes"], "{d:?}");
    }

    #[test]
    fn huge_sizes_add_up_without_overflow() {
        let a = node("a", 1, 8, 32);
        let huge = |n: &str, pref: &str| {
            vm(n, 1, 1, pref).replace("memory: 1GiB", "memory: 17000000000000TiB")
        };
        let (x, y) = (huge("x", "{allowed: [a]}"), huge("y", "{allowed: [a]}"));
        let d = check(&[CLUSTER, &a, &x, &y]);
        // Each is too big alone: reported as such, not added up.
        assert_eq!(
            codes(&d),
            vec![
                "does-not-fit",
                "does-not-fit",
                "failover-one-node",
                "failover-one-node",
                "store-majority"
            ],
            "{d:?}"
        );
        let big = node("a", 1, 8, 32).replace("memory: 32GiB", "memory: 17000000000000TiB");
        let b = node("b", 2, 8, 32).replace("memory: 32GiB", "memory: 17000000000000TiB");
        let (x, y) = (huge("x", "{preferred: [a]}"), huge("y", "{preferred: [a]}"));
        let d = check(&[CLUSTER, &big, &b, &node("c", 3, 8, 32), &x, &y]);
        assert!(codes(&d).contains(&"spare-capacity"), "{d:?}");
    }

    #[test]
    fn round_durations() {
        let r = |ms: u64| round_down(std::time::Duration::from_millis(ms)).to_string();
        assert_eq!(r(3333), "3s");
        assert_eq!(r(666), "600ms");
        assert_eq!(r(33), "33ms");
        assert_eq!(
            round_down(std::time::Duration::from_micros(300)).to_string(),
            "300us"
        );
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:0f"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0x0f])
        );
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:0f:00"), None);
        assert_eq!(parse_mac("+2:54:00:ab:cd:0f"), None);
        assert_eq!(parse_mac("52-54-00-ab-cd-0f"), None);
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
