//! Rendered DRBD resource files checked by the real `drbdadm` (drbd-utils 9.22).
//!
//! For the reference cluster (`manifests/`), a generated cluster and a cluster of edge cases
//! (three-way mesh, IPv6, external metadata, a disk path that needs quoting, a secret that needs
//! escaping), every `.res` file must pass `drbdadm -c FILE dump`, all files of a node together
//! must pass as `/etc/drbd.d/*.res` would, and a dry run of `drbdadm up` as each replica node
//! must print the drbdsetup commands the manifests imply: the right node ids, peers, paths
//! (replication addresses and port), protocol, fencing, secret, minor and backing disk.
//!
//! No DRBD kernel module is needed: `dump` and `-d` never talk to it. The dry runs set the
//! hostname inside a private UTS namespace (`unshare --uts`), because drbdadm picks its `on`
//! section by hostname. A missing `drbdadm` fails the test; it is never skipped.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rampart::manifest::{ManifestSet, SecretRef};
use rampart::render::{self, Secrets};

/// The secret value used wherever a volume has a secret: it needs escaping in drbd.conf.
const SECRET: &str = r#"te"st\secret"#;

fn drbdadm() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("drbdadm"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "drbdadm not found on PATH or in /usr/sbin: install drbd-utils \
                 (`apt-get install -y drbd-utils`). This test checks rendered files with the real \
                 drbdadm and is never skipped."
            )
        })
}

/// The command prefix that runs a program in a private UTS namespace: plain `unshare --uts`
/// as root, or with a user namespace otherwise.
fn unshare_prefix() -> Vec<&'static str> {
    for prefix in [
        vec!["unshare", "--uts"],
        vec!["unshare", "--user", "--map-root-user", "--uts"],
    ] {
        let ok = Command::new(prefix[0])
            .args(&prefix[1..])
            .args(["sh", "-c", "hostname rampart-probe"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return prefix;
        }
    }
    panic!(
        "cannot set a hostname in a private UTS namespace (`unshare --uts`, util-linux): run as \
         root or allow unprivileged user namespaces"
    )
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        // drbdadm calls modinfo to learn the module version; there is no module here.
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| !l.contains("modinfo: not found"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn dump(drbdadm: &Path, config: &Path) -> Output {
    Command::new(drbdadm)
        .arg("-c")
        .arg(config)
        .arg("dump")
        .output()
        .expect("run drbdadm")
}

/// `drbdadm -c CONFIG -d up RES` as if on host `node`.
fn dry_up(drbdadm: &Path, unshare: &[&str], node: &str, config: &Path, res: &str) -> Output {
    Command::new(unshare[0])
        .args(&unshare[1..])
        .args([
            "sh",
            "-c",
            r#"hostname "$1" && exec "$2" -c "$3" -d up "$4""#,
            "sh",
            node,
        ])
        .arg(drbdadm)
        .arg(config)
        .arg(res)
        .output()
        .expect("run unshare")
}

/// Split a command line printed by `drbdadm -d` into arguments: drbdadm shell-escapes
/// arguments with backslashes (`ipv6:\[fd00::1\]:7788`, `a\ b`).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

fn drbd_address(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ipv4:{v4}:{port}"),
        IpAddr::V6(v6) => format!("ipv6:[{v6}]:{port}"),
    }
}

fn load(dir: &Path, require_valid: bool) -> ManifestSet {
    let report = rampart::manifest::check(&rampart::source::fs::Paths::new([dir]));
    if require_valid {
        assert!(
            !report.has_errors(),
            "{} does not validate:\n{}",
            dir.display(),
            report
                .rendered()
                .iter()
                .map(|r| r.to_text())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    report.set
}

fn write_files(dir: &Path, files: &[(String, String)]) {
    for (rel, text) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// Everything checked for one cluster. Returns how many (node, resource) dry runs passed.
fn check_cluster(label: &str, set: &ManifestSet) -> usize {
    let drbdadm = drbdadm();
    let unshare = unshare_prefix();
    let work = tempfile::tempdir().unwrap();

    let secrets: BTreeMap<String, String> = set
        .volumes
        .iter()
        .filter(|(_, v)| {
            v.object
                .spec
                .drbd
                .as_ref()
                .is_some_and(|d| d.secret.is_some())
        })
        .map(|(name, _)| (name.clone(), SECRET.to_string()))
        .collect();
    let drbd_volumes: Vec<&String> = set
        .volumes
        .iter()
        .filter(|(_, v)| v.object.spec.drbd.is_some())
        .map(|(n, _)| n)
        .collect();
    assert!(
        !drbd_volumes.is_empty(),
        "{label}: no DRBD volumes to check"
    );

    // Each file on its own, with the secret and redacted.
    for name in &drbd_volumes {
        for (kind, text) in [
            (
                "value",
                render::render_res(set, name, secrets.get(*name).map(String::as_str)),
            ),
            ("redacted", render::render_res_redacted(set, name)),
        ] {
            let text = text.unwrap_or_else(|e| panic!("{label}: render {name}: {e}"));
            if kind == "redacted" {
                assert!(
                    !text.contains(SECRET),
                    "{label}: {name}: secret in redacted file"
                );
            }
            let dir = work.path().join(kind);
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(render::res_file_name(name));
            std::fs::write(&file, &text).unwrap();
            let out = dump(&drbdadm, &file);
            assert!(
                out.status.success(),
                "{label}: drbdadm rejects the {kind} file of `{name}`:\n{text}\n{}",
                show(&out)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("resource {name} {{")),
                "{label}: dump of `{name}` lacks the resource:\n{stdout}"
            );
        }
    }

    // Per node: every file the node gets, included together the way /etc/drbd.conf includes
    // /etc/drbd.d/*.res, then a dry-run `up` of each resource as that node.
    let mut dry_runs = 0;
    for node in set.nodes.keys() {
        let files = render::render_all_for_node(set, node, Secrets::Values(&secrets))
            .unwrap_or_else(|e| panic!("{label}: render for {node}: {e}"));
        if files.is_empty() {
            continue;
        }
        let dir = work.path().join("nodes").join(node);
        std::fs::create_dir_all(&dir).unwrap();
        for (res, text) in &files {
            std::fs::write(dir.join(render::res_file_name(res)), text).unwrap();
        }
        let config = dir.join("drbd.conf");
        std::fs::write(
            &config,
            format!(
                "global {{ usage-count no; }}\ninclude \"{}/*.res\";\n",
                dir.display()
            ),
        )
        .unwrap();
        let out = dump(&drbdadm, &config);
        assert!(
            out.status.success(),
            "{label}: drbdadm rejects the files of node {node} together:\n{}",
            show(&out)
        );
        for res in files.keys() {
            let out = dry_up(&drbdadm, &unshare, node, &config, res);
            assert!(
                out.status.success(),
                "{label}: `drbdadm -d up {res}` as {node} fails:\n{}",
                show(&out)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            // drbdadm names drbdsetup by the path it was itself run from; compare by name.
            let commands: Vec<Vec<String>> = stdout
                .lines()
                .map(|l| {
                    let mut words = shell_words(l);
                    if let Some(first) = words.first_mut() {
                        *first = first.rsplit('/').next().unwrap_or_default().to_string();
                    }
                    words
                })
                .collect();
            check_dry_run(label, set, node, res, &commands, &stdout);
            dry_runs += 1;
        }
    }
    dry_runs
}

/// The drbdsetup commands `drbdadm -d up` prints must be those the manifests imply. Expected
/// values come from the manifest model, not from the rendered text.
fn check_dry_run(
    label: &str,
    set: &ManifestSet,
    node: &str,
    res: &str,
    commands: &[Vec<String>],
    stdout: &str,
) {
    let drbd = set.volumes[res].object.spec.drbd.as_ref().unwrap();
    let me = drbd.replicas.iter().position(|r| r.node == node).unwrap();
    let my_addr = set.nodes[node].object.spec.addresses.replication();
    let ctx = format!("{label}: `drbdadm -d up {res}` as {node}:\n{stdout}");
    let find = |prefix: &[&str]| -> &Vec<String> {
        commands
            .iter()
            .find(|c| c.len() >= prefix.len() && c.iter().zip(prefix).all(|(a, b)| a == b))
            .unwrap_or_else(|| panic!("no `{}` in {ctx}", prefix.join(" ")))
    };
    let minor = drbd.minor.to_string();
    let my_id = me.to_string();

    let new_resource = find(&["drbdsetup", "new-resource", res, &my_id]);
    assert!(
        new_resource.contains(&"--auto-promote=no".to_string()),
        "auto-promote not off: {ctx}"
    );
    find(&["drbdsetup", "new-minor", res, &minor, "0"]);

    let protocol = format!("{:?}", drbd.protocol);
    let mut peers = 0;
    for (id, replica) in drbd.replicas.iter().enumerate() {
        if id == me {
            continue;
        }
        peers += 1;
        let id = id.to_string();
        let peer = find(&["drbdsetup", "new-peer", res, &id]);
        let mut want = vec![
            format!("--_name={}", replica.node),
            format!("--protocol={protocol}"),
            "--fencing=resource-and-stonith".to_string(),
            format!("--after-sb-0pri={}", drbd.split_brain.after_sb_0pri),
            format!("--after-sb-1pri={}", drbd.split_brain.after_sb_1pri),
            format!("--after-sb-2pri={}", drbd.split_brain.after_sb_2pri),
        ];
        if drbd.secret.is_some() {
            want.push("--cram-hmac-alg=sha256".to_string());
            want.push(format!("--shared-secret={SECRET}"));
        } else {
            assert!(
                !peer.iter().any(|a| a.starts_with("--shared-secret")),
                "secret without a reference: {ctx}"
            );
        }
        for w in &want {
            assert!(peer.contains(w), "new-peer lacks {w}: {ctx}");
        }
        let peer_addr = set.nodes[&replica.node].object.spec.addresses.replication();
        find(&[
            "drbdsetup",
            "new-path",
            res,
            &id,
            &drbd_address(my_addr, drbd.port),
            &drbd_address(peer_addr, drbd.port),
        ]);
        find(&["drbdsetup", "connect", res, &id]);
    }
    let new_peers = commands
        .iter()
        .filter(|c| c.get(1).is_some_and(|s| s == "new-peer"))
        .count();
    assert_eq!(new_peers, peers, "one new-peer per other replica: {ctx}");

    let mine = &drbd.replicas[me];
    let attach = if mine.meta_disk == "internal" {
        vec![
            "drbdsetup",
            "attach",
            &minor,
            &mine.disk,
            &mine.disk,
            "internal",
        ]
    } else {
        vec![
            "drbdsetup",
            "attach",
            &minor,
            &mine.disk,
            &mine.meta_disk,
            "flexible",
        ]
    };
    find(&attach);
}

#[test]
fn reference_cluster() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests");
    // The reference cluster's validity is the business of tests/examples.rs; here every
    // DRBD volume it has must render into files drbdadm accepts.
    let set = load(&dir, false);
    let runs = check_cluster("manifests/", &set);
    assert!(
        runs >= 2,
        "expected dry runs on at least two nodes, got {runs}"
    );
}

#[test]
fn generated_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let shape = rampart::synth::Shape {
        hypervisors: 4,
        vms: 8,
        vip_every: 0,
    };
    write_files(dir.path(), &rampart::synth::files(&shape));
    let set = load(dir.path(), true);
    assert_eq!(check_cluster("generated", &set), 16);
}

const EDGE: &str = r#"
apiVersion: rampart.dev/v1alpha1
kind: Cluster
metadata:
  name: edge
spec: {}
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: node-a
spec:
  role: hypervisor
  addresses: {management: 10.0.0.1, replication: "fd00:20::1"}
  capacity: {cpus: 8, memory: 16GiB}
  fencing: [{devices: [{device: fence-a}]}]
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: node-b
spec:
  role: hypervisor
  addresses: {management: "fd00:10::2"}
  capacity: {cpus: 8, memory: 16GiB}
  fencing: [{devices: [{device: fence-b}]}]
---
apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: node-c
spec:
  role: hypervisor
  addresses: {management: 10.0.0.3, replication: "fd00:20::3"}
  capacity: {cpus: 8, memory: 16GiB}
  fencing: [{devices: [{device: fence-c}]}]
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: fence-a
spec:
  agent: {name: fence_ipmilan, parameters: {ip: 10.9.0.1}}
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: fence-b
spec:
  agent: {name: fence_ipmilan, parameters: {ip: 10.9.0.2}}
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: fence-c
spec:
  agent: {name: fence_ipmilan, parameters: {ip: 10.9.0.3}}
---
apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: tri
spec:
  drbd:
    minor: 12
    port: 7800
    protocol: A
    replicas:
      - {node: node-c, disk: "/dev/disk/by-id/scsi-1 tri", metaDisk: /dev/vg1/tri-meta}
      - {node: node-a, disk: /dev/vg0/tri}
      - {node: node-b, disk: /dev/vg0/tri}
    secret: {env: RAMPART_DRBD_SECRET}
    splitBrain:
      afterSb0Pri: discard-older-primary
      afterSb1Pri: call-pri-lost-after-sb
      afterSb2Pri: call-pri-lost-after-sb
---
apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: duo
spec:
  drbd:
    minor: 13
    port: 7801
    protocol: B
    replicas:
      - {node: node-b, disk: /dev/vg0/duo}
      - {node: node-c, disk: /dev/vg0/duo}
    secret: {file: /etc/rampart/secrets/duo}
---
apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: open
spec:
  drbd:
    minor: 14
    port: 7802
    replicas:
      - {node: node-a, disk: /dev/vg0/open}
      - {node: node-b, disk: /dev/vg0/open}
"#;

#[test]
fn edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("edge.yaml".into(), EDGE.into())]);
    let set = load(dir.path(), true);
    // tri on 3 nodes, duo on 2, open on 2.
    assert_eq!(check_cluster("edge", &set), 7);
    let tri = &set.volumes["tri"].object.spec.drbd.as_ref().unwrap().secret;
    assert_eq!(tri, &Some(SecretRef::Env("RAMPART_DRBD_SECRET".into())));
}

/// The harness itself must notice a bad file: otherwise a green run proves nothing.
#[test]
fn drbdadm_rejects_a_broken_file() {
    let drbdadm = drbdadm();
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("edge.yaml".into(), EDGE.into())]);
    let set = load(dir.path(), true);
    let good = render::render_res(&set, "open", None).unwrap();
    let bad = good.replace("protocol C;", "protocol X;");
    assert_ne!(good, bad);
    let file = dir.path().join("open.res");
    std::fs::write(&file, bad).unwrap();
    let out = dump(&drbdadm, &file);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("open.res:"),
        "no file:line in {}",
        show(&out)
    );
}

#[test]
fn shell_words_unescapes() {
    assert_eq!(
        shell_words(r#"drbdsetup new-path r 1 ipv6:\[fd00::1\]:7788 a\ b --x=te\"st\\s"#),
        [
            "drbdsetup",
            "new-path",
            "r",
            "1",
            "ipv6:[fd00::1]:7788",
            "a b",
            r#"--x=te"st\s"#
        ]
    );
}
