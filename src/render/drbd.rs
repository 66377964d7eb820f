//! DRBD 9 resource files: `/etc/drbd.d/NAME.res` for each `drbd` Volume.
//!
//! One file per volume, identical on every replica node (drbdadm picks its own `on` section by
//! hostname), laid out like a hand-written `drbd.conf`:
//!
//! ```text
//! resource files {
//!     options {
//!         auto-promote no;
//!     }
//!     net {
//!         protocol C;
//!         fencing resource-and-stonith;
//!         after-sb-0pri discard-zero-changes;
//!         ...
//!     }
//!     handlers {
//!         fence-peer "/usr/sbin/rampart drbd-fence-peer";
//!         ...
//!     }
//!     on alpha {
//!         node-id 0;
//!         address 192.168.100.1:7788;
//!         volume 0 { device /dev/drbd0; disk /dev/vg0/files; meta-disk internal; }
//!     }
//!     ...
//!     connection-mesh {
//!         hosts alpha beta;
//!     }
//! }
//! ```
//!
//! Choices that are not spelled out in the manifest, and why:
//! - `auto-promote no`: the plan decides which node is Primary and the agent promotes
//!   explicitly (`drbdadm primary`) before it starts the VM. With auto-promote, a VM started by
//!   hand (or by a stale agent) on the wrong node would promote DRBD by merely opening the device.
//! - `fencing resource-and-stonith` (a `net` option in DRBD 9; it was a `disk` option in 8.4):
//!   when a Primary loses its peer, DRBD freezes I/O and calls the `fence-peer` handler, which is
//!   Rampart's own command: it answers only once the store holds a confirmed fence record for the
//!   peer (exit code 7, "peer was stonithed"), so a split brain cannot be written on both sides.
//!   `unfence-peer` runs when the peer is back and resynced. The handler receives DRBD's usual
//!   environment (`DRBD_RESOURCE`, `DRBD_PEER_NODE_ID`, ...).
//! - node ids are the replicas' positions in the manifest. DRBD keeps per-peer bitmap slots by
//!   node id in its metadata, so reordering replicas of an existing volume is not harmless.
//! - `connection-mesh`: every replica connects to every other one, as DRBD 9 full meshes do.
//!
//! Secrets: the file needs the shared secret's *value*, which only the node knows. The agent
//! reads the volume's [`SecretRef`] at apply time and passes the value to [`render_res`];
//! everything that shows a file to people (`diff`, logs) uses [`render_res_redacted`], which
//! writes a placeholder naming the reference instead.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::RenderError;
use crate::manifest::volume::{Drbd, DrbdProtocol};
use crate::manifest::{ManifestSet, SecretRef};

/// Where resource files live on a node.
pub const RES_DIR: &str = "/etc/drbd.d";

/// The `fence-peer` handler DRBD runs when it loses a peer while Primary.
pub const FENCE_PEER_HANDLER: &str = "/usr/sbin/rampart drbd-fence-peer";

/// The `unfence-peer` handler DRBD runs when the fenced peer is back and in sync.
pub const UNFENCE_PEER_HANDLER: &str = "/usr/sbin/rampart drbd-unfence-peer";

/// Message digest for peer authentication when a volume has a shared secret.
const CRAM_HMAC_ALG: &str = "sha256";

/// DRBD's `SHARED_SECRET_MAX` is 64 bytes including the terminating NUL; drbdadm refuses a
/// longer value with "Value is too long".
const SHARED_SECRET_MAX_BYTES: usize = 63;

const FILE: &str = "a DRBD resource file";

/// The file name of a volume's resource file inside [`RES_DIR`]: `NAME.res`.
pub fn res_file_name(volume: &str) -> String {
    format!("{volume}.res")
}

/// Where the shared secrets come from when rendering several files at once.
#[derive(Debug, Clone, Copy)]
pub enum Secrets<'a> {
    /// A placeholder naming each secret's reference: for `diff`, logs and status. A file
    /// rendered this way must never be written to a host.
    Redacted,
    /// The secret values by volume name, read by the caller from each volume's [`SecretRef`].
    /// A volume that has a secret but no entry here is an error.
    Values(&'a BTreeMap<String, String>),
}

/// The resource file of DRBD volume `volume`, to be written to a host.
///
/// `secret` is the value of the volume's shared secret, read by the caller from the volume's
/// [`SecretRef`] (without a trailing newline); it must be `Some` exactly when the volume has a
/// secret. The value is checked (at most 63 bytes, no control characters) but never appears
/// in an error.
pub fn render_res(
    set: &ManifestSet,
    volume: &str,
    secret: Option<&str>,
) -> Result<String, RenderError> {
    render(set, volume, SecretText::Value(secret))
}

/// The resource file of `volume` as shown to people (`rampart diff`, logs): the shared secret
/// is replaced by a placeholder like `<secret from /etc/rampart/secrets/drbd>`. Identical to
/// [`render_res`] otherwise. Never write it to a host: drbdadm would take the placeholder as
/// the secret (or refuse it when longer than 63 bytes).
pub fn render_res_redacted(set: &ManifestSet, volume: &str) -> Result<String, RenderError> {
    render(set, volume, SecretText::Placeholder)
}

/// A redacted resource file ([`render_res_redacted`]) with the real shared secret filled in:
/// what a node writes to its disk when it has only the published text and the secret's
/// `reference`. The placeholder for `reference` must appear exactly once, as the value of
/// `shared-secret`. The value is checked as [`render_res`] checks it (at most 63 bytes, no
/// control characters) and quoted the same way; it never appears in an error.
pub fn fill_secret(
    redacted: &str,
    volume: &str,
    reference: &SecretRef,
    value: &str,
) -> Result<String, RenderError> {
    check_secret(volume, value)?;
    let holder = placeholder(reference);
    let needle = format!(
        "shared-secret {};",
        word("secret reference", &holder, true)?
    );
    if redacted.matches(needle.as_str()).count() != 1 {
        return Err(RenderError::BadText {
            what: "the secret placeholder".to_string(),
            value: holder,
            file: FILE,
            reason: format!(
                "it must appear exactly once as the `shared-secret` of Volume `{volume}`; \
                 the text was not rendered by render_res_redacted with this reference"
            ),
        });
    }
    Ok(redacted.replacen(
        needle.as_str(),
        &format!("shared-secret {};", quote_secret(value)),
        1,
    ))
}

/// Whether a resource file still holds a secret placeholder of [`render_res_redacted`]: such a
/// text must never be written to a host.
pub fn has_secret_placeholder(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("shared-secret \"<") && l.ends_with(">\";")
    })
}

/// The names of the DRBD volumes with a replica on `node`, sorted.
pub fn drbd_volumes_on(set: &ManifestSet, node: &str) -> Vec<String> {
    set.volumes
        .iter()
        .filter(|(_, e)| {
            e.object
                .spec
                .drbd
                .as_ref()
                .is_some_and(|d| d.replicas.iter().any(|r| r.node == node))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Every resource file node `node` gets, by resource (volume) name. A node without DRBD
/// volumes (a witness) gets none.
pub fn render_all_for_node(
    set: &ManifestSet,
    node: &str,
    secrets: Secrets<'_>,
) -> Result<BTreeMap<String, String>, RenderError> {
    if !set.nodes.contains_key(node) {
        return Err(RenderError::UnknownNode(node.to_string()));
    }
    drbd_volumes_on(set, node)
        .into_iter()
        .map(|volume| {
            let text = match secrets {
                Secrets::Redacted => render_res_redacted(set, &volume)?,
                Secrets::Values(values) => {
                    render_res(set, &volume, values.get(&volume).map(String::as_str))?
                }
            };
            Ok((volume, text))
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum SecretText<'a> {
    Value(Option<&'a str>),
    Placeholder,
}

fn drbd_of<'a>(set: &'a ManifestSet, volume: &str) -> Result<&'a Drbd, RenderError> {
    let entry = set
        .volumes
        .get(volume)
        .ok_or_else(|| RenderError::UnknownVolume(volume.to_string()))?;
    let spec = &entry.object.spec;
    match (&spec.drbd, &spec.local, &spec.shared) {
        (Some(d), _, _) => Ok(d),
        (None, Some(_), _) => Err(RenderError::NotDrbd {
            volume: volume.to_string(),
            kind: "local",
        }),
        (None, None, Some(_)) => Err(RenderError::NotDrbd {
            volume: volume.to_string(),
            kind: "shared",
        }),
        (None, None, None) => Err(RenderError::NoStorage(volume.to_string())),
    }
}

fn render(set: &ManifestSet, volume: &str, secret: SecretText<'_>) -> Result<String, RenderError> {
    let drbd = drbd_of(set, volume)?;
    let shared_secret: Option<String> = match (secret, &drbd.secret) {
        (SecretText::Value(None), None) => None,
        (SecretText::Value(Some(_)), None) => {
            return Err(RenderError::SecretUnexpected {
                volume: volume.to_string(),
            })
        }
        (SecretText::Value(None), Some(_)) => {
            return Err(RenderError::SecretMissing {
                volume: volume.to_string(),
            })
        }
        (SecretText::Value(Some(value)), Some(_)) => {
            check_secret(volume, value)?;
            Some(quote_secret(value))
        }
        (SecretText::Placeholder, None) => None,
        (SecretText::Placeholder, Some(reference)) => {
            Some(word("secret reference", &placeholder(reference), true)?.into_owned())
        }
    };

    let name = word("resource name", volume, false)?;
    let mut hosts = Vec::with_capacity(drbd.replicas.len());
    for (i, replica) in drbd.replicas.iter().enumerate() {
        let node = set
            .nodes
            .get(&replica.node)
            .ok_or_else(|| RenderError::DanglingNode {
                what: format!("replica {i} of Volume `{volume}`"),
                node: replica.node.clone(),
            })?;
        hosts.push(Host {
            name: word("node name", &replica.node, false)?,
            node_id: i,
            address: node.object.spec.addresses.replication(),
            disk: word("backing disk", &replica.disk, false)?,
            meta_disk: word("meta-disk", &replica.meta_disk, false)?,
        });
    }

    // A DRBD path joins two addresses of one family; a mesh mixing families has connections
    // that can never be established, though drbdadm accepts the file.
    if let Some(first) = hosts.first() {
        if let Some(other) = hosts
            .iter()
            .find(|h| h.address.is_ipv4() != first.address.is_ipv4())
        {
            return Err(RenderError::MixedAddressFamilies {
                volume: volume.to_string(),
                a: format!("{} ({})", first.name, first.address),
                b: format!("{} ({})", other.name, other.address),
            });
        }
    }

    // `write!` into a String cannot fail; the results are ignored on purpose below.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# DRBD resource of Volume `{volume}`, rendered by Rampart."
    );
    let _ = writeln!(
        out,
        "# Edit the manifest, not this file: the agent overwrites it."
    );
    let _ = writeln!(out, "resource {name} {{");
    let _ = writeln!(out, "    options {{");
    let _ = writeln!(out, "        auto-promote no;");
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "    net {{");
    let _ = writeln!(out, "        protocol {};", protocol(drbd.protocol));
    let _ = writeln!(out, "        fencing resource-and-stonith;");
    let sb = &drbd.split_brain;
    let _ = writeln!(out, "        after-sb-0pri {};", sb.after_sb_0pri);
    let _ = writeln!(out, "        after-sb-1pri {};", sb.after_sb_1pri);
    let _ = writeln!(out, "        after-sb-2pri {};", sb.after_sb_2pri);
    if let Some(secret) = &shared_secret {
        let _ = writeln!(out, "        cram-hmac-alg {CRAM_HMAC_ALG};");
        let _ = writeln!(out, "        shared-secret {secret};");
    }
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "    handlers {{");
    let _ = writeln!(out, "        fence-peer \"{FENCE_PEER_HANDLER}\";");
    let _ = writeln!(out, "        unfence-peer \"{UNFENCE_PEER_HANDLER}\";");
    let _ = writeln!(out, "    }}");
    for h in &hosts {
        let _ = writeln!(out, "    on {} {{", h.name);
        let _ = writeln!(out, "        node-id {};", h.node_id);
        let _ = writeln!(out, "        address {};", address(h.address, drbd.port));
        let _ = writeln!(out, "        volume 0 {{");
        let _ = writeln!(out, "            device /dev/drbd{};", drbd.minor);
        let _ = writeln!(out, "            disk {};", h.disk);
        let _ = writeln!(out, "            meta-disk {};", h.meta_disk);
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "    }}");
    }
    let _ = writeln!(out, "    connection-mesh {{");
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_ref()).collect();
    let _ = writeln!(out, "        hosts {};", names.join(" "));
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "}}");
    Ok(out)
}

struct Host<'a> {
    name: Cow<'a, str>,
    node_id: usize,
    address: IpAddr,
    disk: Cow<'a, str>,
    meta_disk: Cow<'a, str>,
}

fn protocol(p: DrbdProtocol) -> &'static str {
    match p {
        DrbdProtocol::A => "A",
        DrbdProtocol::B => "B",
        DrbdProtocol::C => "C",
    }
}

/// `10.0.0.1:7788`, or `ipv6 [fd00::1]:7788` (IPv6 needs the family keyword and brackets).
fn address(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("ipv6 [{v6}]:{port}"),
    }
}

fn placeholder(reference: &SecretRef) -> String {
    match reference {
        SecretRef::File(path) => format!("<secret from {}>", path.display()),
        SecretRef::Env(var) => format!("<secret from environment variable {var}>"),
        SecretRef::Inline => "<inline secret, refused by validation>".to_string(),
    }
}

fn check_secret(volume: &str, value: &str) -> Result<(), RenderError> {
    let bad = |reason: &str| {
        Err(RenderError::BadSecret {
            volume: volume.to_string(),
            reason: reason.to_string(),
        })
    };
    if value.is_empty() {
        return bad("it is empty");
    }
    if value.ends_with('\n') {
        return bad("it ends with a newline; strip it when reading the secret file");
    }
    if value.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if value.len() > SHARED_SECRET_MAX_BYTES {
        return bad(&format!(
            "it is {} bytes long; DRBD takes at most {SHARED_SECRET_MAX_BYTES}",
            value.len()
        ));
    }
    Ok(())
}

/// A secret is always quoted, so its shape never decides whether it is.
fn quote_secret(value: &str) -> String {
    let mut q = String::with_capacity(value.len() + 2);
    q.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// `s` as one token of drbd.conf: bare when it is made only of characters drbdadm's scanner
/// takes in a bare word (so hand-written-looking files stay so), otherwise double-quoted with
/// `\` and `"` escaped (drbdadm reads `\x` as `x`). Control characters cannot be written at all:
/// a quoted string ends at a newline.
fn word<'a>(what: &str, s: &'a str, always_quote: bool) -> Result<Cow<'a, str>, RenderError> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(RenderError::BadText {
            what: what.to_string(),
            value: s.to_string(),
            file: FILE,
            reason: format!("it contains the control character {c:?}"),
        });
    }
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-'));
    if bare && !always_quote {
        Ok(Cow::Borrowed(s))
    } else {
        Ok(Cow::Owned(quote_secret(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::set_from;

    const BASE: &str = r#"
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
  addresses:
    management: 10.0.0.1
    replication: 192.168.1.1
  capacity: {cpus: 8, memory: 16GiB}
  fencing:
    - devices: [{device: fa}]
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: b
spec:
  role: hypervisor
  addresses:
    management: 10.0.0.2
  capacity: {cpus: 8, memory: 16GiB}
  fencing:
    - devices: [{device: fb}]
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: c
spec:
  role: hypervisor
  addresses:
    management: fd00::3
  capacity: {cpus: 8, memory: 16GiB}
  fencing:
    - devices: [{device: fc}]
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: d
spec:
  role: hypervisor
  addresses:
    management: 10.0.0.4
    replication: fd00::4
  capacity: {cpus: 8, memory: 16GiB}
  fencing:
    - devices: [{device: fd}]
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: w
spec:
  role: witness
  addresses:
    management: 10.0.0.9
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: fa
spec:
  agent: {name: fence_ipmilan, parameters: {ip: 10.9.0.1}}
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: fb
spec:
  agent: {name: fence_ipmilan, parameters: {ip: 10.9.0.2}}
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: fc
spec:
  agent: {name: fence_ipmilan, parameters: {ip: 10.9.0.3}}
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: fd
spec:
  agent: {name: fence_ipmilan, parameters: {ip: 10.9.0.4}}
---
apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: data
spec:
  drbd:
    minor: 3
    port: 7790
    protocol: A
    replicas:
      - node: a
        disk: /dev/vg0/data
      - node: b
        disk: /dev/disk/by-id/wwn x
        metaDisk: /dev/vg0/data-meta
    secret:
      file: /etc/rampart/secrets/drbd-data
    splitBrain:
      afterSb0Pri: discard-least-changes
      afterSb1Pri: consensus
      afterSb2Pri: call-pri-lost-after-sb
---
apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: plain
spec:
  drbd:
    minor: 4
    port: 7791
    replicas:
      - node: d
        disk: /dev/vg0/plain
      - node: c
        disk: /dev/vg0/plain
---
apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: scratch
spec:
  local:
    node: a
    path: /dev/vg0/scratch
"#;

    const DATA_HEAD: &str = r#"# DRBD resource of Volume `data`, rendered by Rampart.
# Edit the manifest, not this file: the agent overwrites it.
resource data {
    options {
        auto-promote no;
    }
    net {
        protocol A;
        fencing resource-and-stonith;
        after-sb-0pri discard-least-changes;
        after-sb-1pri consensus;
        after-sb-2pri call-pri-lost-after-sb;
        cram-hmac-alg sha256;
"#;

    const DATA_TAIL: &str = r#"    }
    handlers {
        fence-peer "/usr/sbin/rampart drbd-fence-peer";
        unfence-peer "/usr/sbin/rampart drbd-unfence-peer";
    }
    on a {
        node-id 0;
        address 192.168.1.1:7790;
        volume 0 {
            device /dev/drbd3;
            disk /dev/vg0/data;
            meta-disk internal;
        }
    }
    on b {
        node-id 1;
        address 10.0.0.2:7790;
        volume 0 {
            device /dev/drbd3;
            disk "/dev/disk/by-id/wwn x";
            meta-disk /dev/vg0/data-meta;
        }
    }
    connection-mesh {
        hosts a b;
    }
}
"#;

    #[test]
    fn golden_with_secret_value() {
        let (set, _dir) = set_from(&[("all.yaml", BASE)]);
        let got = render_res(&set, "data", Some(r#"s3cr"t\x"#)).unwrap();
        let want = format!("{DATA_HEAD}        shared-secret \"s3cr\\\"t\\\\x\";\n{DATA_TAIL}");
        assert_eq!(got, want);
    }

    #[test]
    fn golden_redacted_names_the_reference_not_the_value() {
        let (set, _dir) = set_from(&[("all.yaml", BASE)]);
        let got = render_res_redacted(&set, "data").unwrap();
        let want = format!(
            "{DATA_HEAD}        shared-secret \"<secret from /etc/rampart/secrets/drbd-data>\";\n{DATA_TAIL}"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn golden_defaults_without_secret() {
        let (set, _dir) = set_from(&[("all.yaml", BASE)]);
        let got = render_res(&set, "plain", None).unwrap();
        assert_eq!(got, render_res_redacted(&set, "plain").unwrap());
        let want = r#"# DRBD resource of Volume `plain`, rendered by Rampart.
# Edit the manifest, not this file: the agent overwrites it.
resource plain {
    options {
        auto-promote no;
    }
    net {
        protocol C;
        fencing resource-and-stonith;
        after-sb-0pri discard-zero-changes;
        after-sb-1pri discard-secondary;
        after-sb-2pri disconnect;
    }
    handlers {
        fence-peer "/usr/sbin/rampart drbd-fence-peer";
        unfence-peer "/usr/sbin/rampart drbd-unfence-peer";
    }
    on d {
        node-id 0;
        address ipv6 [fd00::4]:7791;
        volume 0 {
            device /dev/drbd4;
            disk /dev/vg0/plain;
            meta-disk internal;
        }
    }
    on c {
        node-id 1;
        address ipv6 [fd00::3]:7791;
        volume 0 {
            device /dev/drbd4;
            disk /dev/vg0/plain;
            meta-disk internal;
        }
    }
    connection-mesh {
        hosts d c;
    }
}
"#;
        assert_eq!(got, want);
    }

    #[test]
    fn secret_must_match_the_manifest_and_never_leaks() {
        let (set, _dir) = set_from(&[("all.yaml", BASE)]);
        assert_eq!(
            render_res(&set, "data", None),
            Err(RenderError::SecretMissing {
                volume: "data".into()
            })
        );
        assert_eq!(
            render_res(&set, "plain", Some("x")),
            Err(RenderError::SecretUnexpected {
                volume: "plain".into()
            })
        );
        for bad in [
            "",
            "hunter2\n",
            "hun\tter2",
            "hunter2hunter2hunter2hunter2hunter2hunter2hunter2hunter2hunter2hunter2",
        ] {
            let err = render_res(&set, "data", Some(bad)).unwrap_err();
            assert!(matches!(err, RenderError::BadSecret { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                bad.is_empty() || !text.contains("hunter2"),
                "secret leaked: {text}"
            );
        }
        // 63 bytes is DRBD's limit and fine.
        assert!(render_res(&set, "data", Some(&"x".repeat(63))).is_ok());
    }

    #[test]
    fn fill_secret_turns_the_redacted_text_into_the_real_one() {
        let (set, _dir) = set_from(&[("all.yaml", BASE)]);
        let redacted = render_res_redacted(&set, "data").unwrap();
        assert!(has_secret_placeholder(&redacted));
        let reference = SecretRef::File("/etc/rampart/secrets/drbd-data".into());
        let value = r#"s3cr"t\x"#;
        let filled = fill_secret(&redacted, "data", &reference, value).unwrap();
        assert_eq!(filled, render_res(&set, "data", Some(value)).unwrap());
        assert!(!has_secret_placeholder(&filled));
        // Another reference's placeholder is not there: refused, naming the reference only.
        let other = SecretRef::Env("DRBD_SECRET".into());
        let err = fill_secret(&redacted, "data", &other, "hunter2").unwrap_err();
        assert!(err.to_string().contains("DRBD_SECRET"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // The value is checked like render_res checks it, and never shown.
        for bad in ["", "hunter2\n", "hun\tter2", &"hunter2".repeat(10)] {
            let err = fill_secret(&redacted, "data", &reference, bad).unwrap_err();
            assert!(matches!(err, RenderError::BadSecret { .. }), "{err:?}");
            assert!(bad.is_empty() || !err.to_string().contains("hunter2"));
        }
        let plain = render_res_redacted(&set, "plain").unwrap();
        assert!(!has_secret_placeholder(&plain));
    }

    #[test]
    fn all_for_node() {
        let (set, _dir) = set_from(&[("all.yaml", BASE)]);
        let redacted = render_all_for_node(&set, "a", Secrets::Redacted).unwrap();
        assert_eq!(
            redacted.keys().collect::<Vec<_>>(),
            ["data"],
            "local volumes get no resource file"
        );
        assert_eq!(redacted["data"], render_res_redacted(&set, "data").unwrap());

        let values = BTreeMap::from([("data".to_string(), "k".to_string())]);
        let real = render_all_for_node(&set, "b", Secrets::Values(&values)).unwrap();
        assert_eq!(real.len(), 1);
        assert_eq!(real["data"], render_res(&set, "data", Some("k")).unwrap());
        let real = render_all_for_node(&set, "c", Secrets::Values(&values)).unwrap();
        assert_eq!(real.len(), 1);
        assert_eq!(real["plain"], render_res(&set, "plain", None).unwrap());

        let none = BTreeMap::new();
        assert_eq!(
            render_all_for_node(&set, "b", Secrets::Values(&none)),
            Err(RenderError::SecretMissing {
                volume: "data".into()
            })
        );
        assert!(render_all_for_node(&set, "w", Secrets::Redacted)
            .unwrap()
            .is_empty());
        assert_eq!(
            render_all_for_node(&set, "nope", Secrets::Redacted),
            Err(RenderError::UnknownNode("nope".into()))
        );
        assert_eq!(res_file_name("data"), "data.res");
    }

    #[test]
    fn refuses_a_mesh_mixing_address_families() {
        let (mut set, _dir) = set_from(&[("all.yaml", BASE)]);
        let plain = set.volumes.get_mut("plain").unwrap();
        plain.object.spec.drbd.as_mut().unwrap().replicas[0].node = "a".into();
        let err = render_res(&set, "plain", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the replicas of Volume `plain` mix IPv4 and IPv6 replication addresses \
             (a (192.168.1.1), c (fd00::3)); DRBD connects only addresses of one family"
        );
    }

    #[test]
    fn refuses_what_has_no_resource_file() {
        let (set, _dir) = set_from(&[("all.yaml", BASE)]);
        assert_eq!(
            render_res_redacted(&set, "scratch"),
            Err(RenderError::NotDrbd {
                volume: "scratch".into(),
                kind: "local"
            })
        );
        assert_eq!(
            render_res_redacted(&set, "nope"),
            Err(RenderError::UnknownVolume("nope".into()))
        );
    }

    #[test]
    fn words_are_bare_or_quoted() {
        assert_eq!(
            word("x", "/dev/vg0/a-b_c.d", false).unwrap(),
            "/dev/vg0/a-b_c.d"
        );
        assert_eq!(word("x", "a b", false).unwrap(), "\"a b\"");
        assert_eq!(word("x", "a\"b\\c", false).unwrap(), r#""a\"b\\c""#);
        assert_eq!(word("x", "", false).unwrap(), "\"\"");
        assert_eq!(word("x", "plain", true).unwrap(), "\"plain\"");
        assert!(matches!(
            word("backing disk", "/dev/a\nb", false),
            Err(RenderError::BadText { .. })
        ));
    }
}
