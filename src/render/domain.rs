//! libvirt domain XML of each VirtualMachine.
//!
//! A VM that gives its own XML (`domain.xmlFile` or `domain.xml`) gets it back unchanged: the
//! admin owns every byte of it. Otherwise the domain is described from the manifest, in the
//! shape `virsh dumpxml` prints:
//! - `<domain type='kvm'>` or `type='xen'`, name, a UUID derived from the VM name (see
//!   [`derived_uuid`]: the same on every node, which libvirt needs to define the domain on a
//!   failover target or migrate it), memory and current memory in KiB, static vCPUs;
//! - an HVM guest booting from its first disk, with ACPI (so a graceful `virsh shutdown`
//!   reaches the guest) and a UTC clock; no `<cpu>` element, so the guest gets the hypervisor's
//!   default model, which every node can provide: a VM must start on whichever node it fails
//!   over to;
//! - `on_crash` destroy: a crashed guest stays off so Rampart sees it stopped and decides where
//!   it restarts, instead of libvirt restarting it behind Rampart's back;
//! - one disk per volume attachment, in order: `/dev/drbdMINOR` for DRBD volumes (never the
//!   backing disk, which would bypass replication), the path for local and shared volumes. Paths
//!   under `/dev/` are block devices; anything else is an image file, `qcow2` when its name ends
//!   in `.qcow2`, raw otherwise. KVM disks use `cache='none' io='native'`: no host page cache
//!   between the guest and the replicated device, so a write the guest was told is done really
//!   is on the disk (and libvirt allows live migration);
//! - one bridge interface per manifest interface, with its MAC (derived from the VM name when
//!   not given, see [`derived_mac`], so it survives failover) and model (`virtio` by default on
//!   KVM; left to libxl on Xen);
//! - a serial console on a pty. No graphics: libvirt 9 rejects `<graphics type='none'/>`, and
//!   leaving graphics out means none.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::id::{derived_mac, derived_uuid};
use super::RenderError;
use crate::manifest::vm::{Hypervisor, VirtualMachineSpec};
use crate::manifest::ManifestSet;

const FILE: &str = "a libvirt domain XML";

/// The domain XML of VM `vm`: its own XML unchanged when the manifest gives one, otherwise a
/// domain described from the manifest (see the module documentation).
pub fn render_domain(set: &ManifestSet, vm: &str) -> Result<String, RenderError> {
    let entry = set
        .vms
        .get(vm)
        .ok_or_else(|| RenderError::UnknownVm(vm.to_string()))?;
    if let Some(xml) = set.domain_xml.get(vm) {
        return Ok(xml.to_string());
    }
    let spec = &entry.object.spec;
    if spec.domain.is_some() {
        // The manifest names its XML but the loader could not read it (validation said why).
        // Describing a domain instead would silently run something the admin did not write.
        return Err(RenderError::DomainXmlMissing { vm: vm.to_string() });
    }
    describe(set, vm, spec)
}

struct Disk {
    /// `block` or `file`.
    kind: &'static str,
    /// `dev` for block devices, `file` for image files.
    source_attr: &'static str,
    path: String,
    format: &'static str,
    target: String,
}

fn disks(set: &ManifestSet, vm: &str, spec: &VirtualMachineSpec) -> Result<Vec<Disk>, RenderError> {
    let mut out = Vec::with_capacity(spec.volumes.len());
    for att in &spec.volumes {
        let volume = set
            .volumes
            .get(&att.volume)
            .ok_or_else(|| RenderError::DanglingVolume {
                vm: vm.to_string(),
                volume: att.volume.clone(),
            })?;
        let v = &volume.object.spec;
        let path: Cow<str> = match (&v.drbd, &v.local, &v.shared) {
            (Some(d), _, _) => Cow::Owned(format!("/dev/drbd{}", d.minor)),
            (None, Some(l), _) => Cow::Borrowed(&l.path),
            (None, None, Some(s)) => Cow::Borrowed(&s.path),
            (None, None, None) => return Err(RenderError::NoStorage(att.volume.clone())),
        };
        let block = path.starts_with("/dev/");
        out.push(Disk {
            kind: if block { "block" } else { "file" },
            source_attr: if block { "dev" } else { "file" },
            format: if !block && path.ends_with(".qcow2") {
                "qcow2"
            } else {
                "raw"
            },
            path: esc("disk path", &path)?,
            target: esc("disk target", &att.target)?,
        });
    }
    Ok(out)
}

fn describe(set: &ManifestSet, vm: &str, spec: &VirtualMachineSpec) -> Result<String, RenderError> {
    let kvm = spec.hypervisor == Hypervisor::Kvm;
    let name = esc("VM name", vm)?;
    let disks = disks(set, vm, spec)?;
    let mut interfaces = Vec::with_capacity(spec.interfaces.len());
    for (i, nic) in spec.interfaces.iter().enumerate() {
        let mac = match &nic.mac {
            Some(m) => esc("MAC address", m)?,
            None => derived_mac(vm, i),
        };
        let model = match (&nic.model, kvm) {
            (Some(m), _) => Some(esc("interface model", m)?),
            (None, true) => Some("virtio".to_string()),
            (None, false) => None,
        };
        interfaces.push((mac, esc("bridge", &nic.bridge)?, model));
    }
    let kib = spec.memory.mib.saturating_mul(1024);

    // `write!` into a String cannot fail; the results are ignored on purpose below.
    let mut x = String::new();
    let _ = writeln!(x, "<domain type='{}'>", if kvm { "kvm" } else { "xen" });
    let _ = writeln!(x, "  <name>{name}</name>");
    let _ = writeln!(x, "  <uuid>{}</uuid>", derived_uuid("VirtualMachine", vm));
    let _ = writeln!(
        x,
        "  <description>Managed by Rampart (VirtualMachine {name}): edit the manifest, not this domain.</description>"
    );
    let _ = writeln!(x, "  <memory unit='KiB'>{kib}</memory>");
    let _ = writeln!(x, "  <currentMemory unit='KiB'>{kib}</currentMemory>");
    let _ = writeln!(x, "  <vcpu placement='static'>{}</vcpu>", spec.cpus);
    x.push_str("  <os>\n");
    x.push_str("    <type arch='x86_64'>hvm</type>\n");
    x.push_str("    <boot dev='hd'/>\n");
    x.push_str("  </os>\n");
    x.push_str("  <features>\n");
    x.push_str("    <acpi/>\n");
    x.push_str("    <apic/>\n");
    x.push_str("  </features>\n");
    x.push_str("  <clock offset='utc'/>\n");
    x.push_str("  <on_poweroff>destroy</on_poweroff>\n");
    x.push_str("  <on_reboot>restart</on_reboot>\n");
    x.push_str("  <on_crash>destroy</on_crash>\n");
    x.push_str("  <devices>\n");
    for d in &disks {
        let _ = writeln!(x, "    <disk type='{}' device='disk'>", d.kind);
        if kvm {
            let _ = writeln!(
                x,
                "      <driver name='qemu' type='{}' cache='none' io='native'/>",
                d.format
            );
        } else if d.kind == "block" {
            x.push_str("      <driver name='phy'/>\n");
        } else {
            let _ = writeln!(x, "      <driver name='qemu' type='{}'/>", d.format);
        }
        let _ = writeln!(x, "      <source {}='{}'/>", d.source_attr, d.path);
        let _ = writeln!(
            x,
            "      <target dev='{}' bus='{}'/>",
            d.target,
            if kvm { "virtio" } else { "xen" }
        );
        x.push_str("    </disk>\n");
    }
    for (mac, bridge, model) in &interfaces {
        x.push_str("    <interface type='bridge'>\n");
        let _ = writeln!(x, "      <mac address='{mac}'/>");
        let _ = writeln!(x, "      <source bridge='{bridge}'/>");
        if let Some(model) = model {
            let _ = writeln!(x, "      <model type='{model}'/>");
        }
        x.push_str("    </interface>\n");
    }
    x.push_str("    <serial type='pty'>\n");
    x.push_str("      <target port='0'/>\n");
    x.push_str("    </serial>\n");
    x.push_str("    <console type='pty'>\n");
    x.push_str("      <target type='serial' port='0'/>\n");
    x.push_str("    </console>\n");
    x.push_str("  </devices>\n");
    x.push_str("</domain>\n");
    Ok(x)
}

/// `s` escaped for XML text and for attribute values in either quote style. Tabs and line
/// breaks become character references so attribute normalization cannot change them;
/// characters XML 1.0 cannot carry at all are refused.
fn esc(what: &str, s: &str) -> Result<String, RenderError> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {
                return Err(RenderError::BadText {
                    what: what.to_string(),
                    value: s.to_string(),
                    file: FILE,
                    reason: format!("XML cannot contain the character {c:?}"),
                })
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::set_from;

    const SET: &str = r#"
apiVersion: rampart.dev/v1alpha1
kind: Cluster
metadata:
  name: t
spec: {}
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: a
spec:
  role: hypervisor
  addresses: {management: 10.0.0.1}
  capacity: {cpus: 16, memory: 64GiB}
  fencing:
    - devices: [{device: fa}]
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: b
spec:
  role: hypervisor
  addresses: {management: 10.0.0.2}
  capacity: {cpus: 16, memory: 64GiB}
  fencing:
    - devices: [{device: fb}]
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: w
spec:
  role: witness
  addresses: {management: 10.0.0.3}
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: fa
spec:
  agent: {name: fence_ipmilan, parameters: {ip: 10.9.0.1}}
  runsOn: [b]
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: fb
spec:
  agent: {name: fence_ipmilan, parameters: {ip: 10.9.0.2}}
  runsOn: [a]
---
apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: web
spec:
  drbd:
    minor: 7
    port: 7795
    replicas:
      - {node: a, disk: /dev/vg0/web}
      - {node: b, disk: /dev/vg0/web}
---
apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: cache
spec:
  local: {node: a, path: /var/lib/images/web cache.qcow2}
---
apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: san
spec:
  shared: {path: /dev/disk/by-id/dm-uuid-mpath-3600a0b8, nodes: [a, b]}
---
apiVersion: rampart.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: web
spec:
  cpus: 2
  memory: 1536MiB
  volumes:
    - {volume: web, target: vda}
    - {volume: cache, target: vdb}
  interfaces:
    - {bridge: br0, mac: "52:54:00:aa:bb:cc"}
    - {bridge: "br-<&'\">", model: e1000}
  placement: {allowed: [a]}
  failover: false
---
apiVersion: rampart.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: xen1
spec:
  hypervisor: xen
  cpus: 1
  memory: 2GiB
  volumes:
    - {volume: san, target: xvda}
  interfaces:
    - {bridge: xenbr0}
---
apiVersion: rampart.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: inline
spec:
  cpus: 1
  memory: 512MiB
  domain:
    xml: "<domain type='kvm'><name>inline</name></domain>"
---
apiVersion: rampart.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: fromfile
spec:
  cpus: 1
  memory: 512MiB
  domain:
    xmlFile: domains/fromfile.xml
"#;

    const FROM_FILE: &str =
        "<!-- kept as written -->\n<domain type='kvm'>\n  <name>fromfile</name>\n</domain>\n";

    fn set() -> (ManifestSet, tempfile::TempDir) {
        set_from(&[("all.yaml", SET), ("domains/fromfile.xml", FROM_FILE)])
    }

    #[test]
    fn golden_kvm() {
        let (set, _dir) = set();
        let got = render_domain(&set, "web").unwrap();
        let want = format!(
            r#"<domain type='kvm'>
  <name>web</name>
  <uuid>{uuid}</uuid>
  <description>Managed by Rampart (VirtualMachine web): edit the manifest, not this domain.</description>
  <memory unit='KiB'>1572864</memory>
  <currentMemory unit='KiB'>1572864</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/drbd7'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native'/>
      <source file='/var/lib/images/web cache.qcow2'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='br-&lt;&amp;&apos;&quot;&gt;'/>
      <model type='e1000'/>
    </interface>
    <serial type='pty'>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
"#,
            uuid = derived_uuid("VirtualMachine", "web"),
            mac = derived_mac("web", 1),
        );
        assert_eq!(got, want);
        well_formed(&got).unwrap();
    }

    #[test]
    fn golden_xen() {
        let (set, _dir) = set();
        let got = render_domain(&set, "xen1").unwrap();
        let want = format!(
            r#"<domain type='xen'>
  <name>xen1</name>
  <uuid>{uuid}</uuid>
  <description>Managed by Rampart (VirtualMachine xen1): edit the manifest, not this domain.</description>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='block' device='disk'>
      <driver name='phy'/>
      <source dev='/dev/disk/by-id/dm-uuid-mpath-3600a0b8'/>
      <target dev='xvda' bus='xen'/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='xenbr0'/>
    </interface>
    <serial type='pty'>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
"#,
            uuid = derived_uuid("VirtualMachine", "xen1"),
            mac = derived_mac("xen1", 0),
        );
        assert_eq!(got, want);
        well_formed(&got).unwrap();
    }

    #[test]
    fn own_xml_is_returned_unchanged() {
        let (set, _dir) = set();
        assert_eq!(render_domain(&set, "fromfile").unwrap(), FROM_FILE);
        assert_eq!(
            render_domain(&set, "inline").unwrap(),
            "<domain type='kvm'><name>inline</name></domain>"
        );
    }

    #[test]
    fn refuses_unknown_and_unreadable() {
        let (mut set, _dir) = set();
        assert_eq!(
            render_domain(&set, "nope"),
            Err(RenderError::UnknownVm("nope".into()))
        );
        set.domain_xml.remove("fromfile");
        assert_eq!(
            render_domain(&set, "fromfile"),
            Err(RenderError::DomainXmlMissing {
                vm: "fromfile".into()
            })
        );
    }

    #[test]
    fn stable_and_distinct_identities() {
        let (set, _dir) = set();
        let a = render_domain(&set, "web").unwrap();
        assert_eq!(a, render_domain(&set, "web").unwrap());
        assert_ne!(
            derived_uuid("VirtualMachine", "web"),
            derived_uuid("VirtualMachine", "xen1")
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("x", "a<b>&'\"").unwrap(), "a&lt;b&gt;&amp;&apos;&quot;");
        assert_eq!(esc("x", "tab\there\n").unwrap(), "tab&#9;here&#10;");
        assert_eq!(esc("x", "grüß").unwrap(), "grüß");
        assert!(matches!(
            esc("bridge", "br\u{1}"),
            Err(RenderError::BadText { .. })
        ));
    }

    /// Every described domain of the reference cluster is well-formed.
    #[test]
    fn reference_cluster_domains_are_well_formed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        let report = crate::manifest::check(&crate::source::fs::Paths::new([dir]));
        let mut checked = 0;
        for name in report.set.vms.keys() {
            if report.set.domain_xml.contains_key(name) {
                continue;
            }
            let xml = render_domain(&report.set, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            well_formed(&xml).unwrap_or_else(|e| panic!("{name}: {e}\n{xml}"));
            checked += 1;
        }
        assert!(checked > 0, "the reference cluster has no described domain");
    }

    #[test]
    fn checker_catches_mistakes() {
        for bad in [
            "<a><b></a></b>",
            "<a x='1>",
            "<a>&bogus;</a>",
            "<a x='1' x='2'/>",
            "<a>1 < 2</a>",
            "<a/><b/>",
            "<a>",
            "text",
        ] {
            assert!(well_formed(bad).is_err(), "accepted {bad}");
        }
        well_formed("<a x=\"1\" y='&amp;'><b/>t&#9;&lt;<c></c></a>\n").unwrap();
    }

    /// A small well-formedness check, enough for what the renderer writes: one root element,
    /// properly nested and closed tags, quoted and unique attributes, only the predefined or
    /// numeric entity references, no raw `<` or `&` in text. No comments, PIs or DOCTYPE (the
    /// renderer writes none).
    fn well_formed(xml: &str) -> Result<(), String> {
        fn name_end(s: &str) -> usize {
            s.find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
                .unwrap_or(s.len())
        }
        fn check_refs(s: &str) -> Result<(), String> {
            if s.contains('<') {
                return Err(format!("raw `<` in {s:?}"));
            }
            let mut rest = s;
            while let Some(i) = rest.find('&') {
                let tail = &rest[i + 1..];
                let end = tail
                    .find(';')
                    .ok_or(format!("unterminated reference in {s:?}"))?;
                let r = &tail[..end];
                let ok = matches!(r, "amp" | "lt" | "gt" | "apos" | "quot")
                    || r.strip_prefix("#x")
                        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                    || r.strip_prefix('#')
                        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
                if !ok {
                    return Err(format!("bad reference &{r}; in {s:?}"));
                }
                rest = &tail[end + 1..];
            }
            Ok(())
        }
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = xml;
        loop {
            let (text, tag) = match rest.find('<') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root element: {text:?}"));
            }
            check_refs(text)?;
            let Some(tag) = tag else { break };
            let end = tag.find('>').ok_or("unterminated tag")?;
            let inner = &tag[..end];
            rest = &tag[end + 1..];
            if let Some(closing) = inner.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("stray </{closing}>"))?;
                if open != closing.trim_end() {
                    return Err(format!("<{open}> closed by </{closing}>"));
                }
                continue;
            }
            let (inner, empty) = match inner.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inner, false),
            };
            let n = name_end(inner);
            if n == 0 {
                return Err(format!("bad tag <{inner}>"));
            }
            let name = &inner[..n];
            let mut attrs = inner[n..].trim_start();
            let mut seen = Vec::new();
            while !attrs.is_empty() {
                let an = name_end(attrs);
                if an == 0 {
                    return Err(format!("bad attribute in <{inner}>"));
                }
                let aname = &attrs[..an];
                if seen.contains(&aname) {
                    return Err(format!("duplicate attribute {aname} in <{inner}>"));
                }
                seen.push(aname);
                let after = attrs[an..]
                    .trim_start()
                    .strip_prefix('=')
                    .ok_or(format!("attribute {aname} without value in <{inner}>"))?
                    .trim_start();
                let quote = after
                    .chars()
                    .next()
                    .filter(|q| *q == '\'' || *q == '"')
                    .ok_or(format!("unquoted attribute {aname} in <{inner}>"))?;
                let close = after[1..]
                    .find(quote)
                    .ok_or(format!("unterminated attribute {aname} in <{inner}>"))?;
                check_refs(&after[1..1 + close])?;
                let next = &after[close + 2..];
                if !next.is_empty() && !next.starts_with(char::is_whitespace) {
                    return Err(format!("no space between attributes in <{inner}>"));
                }
                attrs = next.trim_start();
            }
            if stack.is_empty() {
                roots += 1;
                if roots > 1 {
                    return Err("more than one root element".into());
                }
            }
            if !empty {
                stack.push(name);
            }
        }
        match (stack.last(), roots) {
            (Some(open), _) => Err(format!("<{open}> is never closed")),
            (None, 0) => Err("no root element".into()),
            _ => Ok(()),
        }
    }
}
