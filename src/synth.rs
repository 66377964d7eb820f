//! Synthetic clusters of any size, for benchmarks and experiments. The output is an ordinary
//! manifest repository: one file per node (with its fence device) and one per VM (with its
//! DRBD volume and, for some, a floating IP), and it validates cleanly.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::manifest::API_VERSION;

#[derive(Debug, Clone)]
pub struct Shape {
    pub hypervisors: usize,
    pub vms: usize,
    /// Every how many VMs one gets a floating IP (0 for none).
    pub vip_every: usize,
}

pub fn node_name(i: usize) -> String {
    format!("hv{i:04}")
}

pub fn vm_name(i: usize) -> String {
    format!("vm{i:06}")
}

fn mgmt(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1 + (i / 250) as u8, 0, (i % 250 + 1) as u8)
}

fn repl(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 128 + (i / 250) as u8, 0, (i % 250 + 1) as u8)
}

fn vip(k: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + k as u32 + 1)
}

/// The files of the repository, as (relative path, content).
pub fn files(shape: &Shape) -> Vec<(String, String)> {
    let n = shape.hypervisors.max(1);
    let witnesses = if n < 3 {
        3 - n
    } else if n % 2 == 0 {
        1
    } else {
        0
    };
    let per_node = shape.vms.div_ceil(n) * 2;
    let cpus = (per_node * 2).max(64);
    let mut out = Vec::with_capacity(shape.vms + n + witnesses + 1);
    out.push((
        "cluster.yaml".to_string(),
        format!(
            "apiVersion: {API_VERSION}\nkind: Cluster\nmetadata:\n  name: synthetic\nspec:\n  timing:\n    leaseTTL: 10s\n    renewInterval: 2s\n"
        ),
    ));
    for i in 0..n {
        let name = node_name(i);
        let peer = node_name((i + 1) % n);
        let text = format!(
            "apiVersion: {API_VERSION}
kind: Node
metadata:
  name: {name}
  labels:
    rack: r{rack}
spec:
  role: hypervisor
  addresses:
    management: {m}
    replication: {r}
  capacity:
    cpus: {cpus}
    memory: {mem}GiB
  fencing:
    - devices:
        - device: ipmi-{name}
---
apiVersion: {API_VERSION}
kind: FenceDevice
metadata:
  name: ipmi-{name}
spec:
  agent:
    name: fence_ipmilan
    parameters:
      ip: 10.200.{b}.{c}
      username: admin
      lanplus: \"1\"
    credentials:
      password:
        file: /etc/rampart/secrets/ipmi-{name}
  runsOn: [{peer}]
",
            rack = i % 8,
            m = mgmt(i),
            r = repl(i),
            mem = cpus * 2,
            b = i / 250,
            c = i % 250 + 1,
        );
        out.push((format!("nodes/{name}.yaml"), text));
    }
    for w in 0..witnesses {
        let i = n + w;
        out.push((
            format!("nodes/witness{w}.yaml"),
            format!(
                "apiVersion: {API_VERSION}\nkind: Node\nmetadata:\n  name: witness{w}\nspec:\n  role: witness\n  addresses:\n    management: {}\n",
                mgmt(i)
            ),
        ));
    }
    // DRBD ports must be unique per node. Volume k joins ring neighbours k%n and k%n+1: the
    // volumes are the ring's edges, taken vms/n times round. Colour the ring's edges so that
    // neighbouring edges differ (two colours for an even ring, three for an odd one) and give
    // each round its own block of ports.
    let colours = if n % 2 == 0 { 2 } else { 3 };
    for k in 0..shape.vms {
        let (a, b) = (k % n, (k + 1) % n);
        let edge = k % n;
        let colour = if n % 2 == 1 && edge == n - 1 {
            2
        } else {
            edge % 2
        };
        let port = 7788 + colours * (k / n) + colour;
        let name = vm_name(k);
        let (na, nb) = (node_name(a), node_name(b));
        let replicas = if n == 1 {
            format!("      - node: {na}\n        disk: /dev/vg0/{name}\n")
        } else {
            format!(
                "      - node: {na}\n        disk: /dev/vg0/{name}\n      - node: {nb}\n        disk: /dev/vg0/{name}\n"
            )
        };
        let allowed = if n == 1 {
            na.clone()
        } else {
            format!("{na}, {nb}")
        };
        let mut text = format!(
            "apiVersion: {API_VERSION}
kind: Volume
metadata:
  name: {name}-disk
spec:
  drbd:
    minor: {k}
    port: {port}
    replicas:
{replicas}---
apiVersion: {API_VERSION}
kind: VirtualMachine
metadata:
  name: {name}
spec:
  cpus: {cpus}
  memory: {mem}MiB
  volumes:
    - volume: {name}-disk
      target: vda
  placement:
    allowed: [{allowed}]
    preferred: [{na}]
",
            cpus = 1 + k % 2,
            mem = 512 * (1 + k % 4),
        );
        if shape.vip_every > 0 && k % shape.vip_every == 0 {
            write!(
                text,
                "---
apiVersion: {API_VERSION}
kind: VirtualIP
metadata:
  name: {name}-ip
spec:
  address: {}/12
  interface: br0
  follows:
    virtualMachine: {name}
",
                vip(k)
            )
            .unwrap();
        }
        out.push((format!("vms/{name}.yaml"), text));
    }
    out
}

/// Write the repository under `dir`, which must not exist or be empty. Returns the file count.
pub fn write_repo(shape: &Shape, dir: &Path) -> std::io::Result<usize> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(std::io::Error::other(format!(
            "{} is not empty; give a new directory",
            dir.display()
        )));
    }
    let files = files(shape);
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(files.len())
}

/// Generated files served from memory, as a manifest [`Source`](crate::source::Source).
pub struct MemSource {
    pub files: Vec<(String, String)>,
}

impl crate::source::Source for MemSource {
    fn manifest_files(&self) -> Vec<crate::source::RawFile> {
        self.files
            .iter()
            .map(|(p, t)| crate::source::RawFile {
                path: p.into(),
                content: Ok(t.clone().into_bytes()),
            })
            .collect()
    }
    fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        self.files
            .iter()
            .find(|(p, _)| Path::new(p) == path)
            .map(|(_, t)| t.clone().into_bytes())
            .ok_or_else(|| format!("no such file: {}", path.display()))
    }
}

/// The steady state of a placement: every node alive, each host having exactly what its
/// assignment asks (VMs running, DRBD roles, addresses), reports acknowledging generations.
pub fn steady_observed(
    d: &crate::model::Desired,
    p: &crate::model::Placement,
) -> crate::model::Observed {
    use crate::model::*;
    let mut nodes = std::collections::BTreeMap::new();
    for name in d.nodes.keys() {
        let a = p.assignments.get(name).cloned().unwrap_or_default();
        let report = HostReport {
            generation: a.generation,
            volumes: a
                .volumes
                .iter()
                .map(|(v, r)| {
                    let role = match r {
                        VolumeRole::Primary => DrbdRole::Primary,
                        VolumeRole::Secondary => DrbdRole::Secondary,
                    };
                    (
                        v.clone(),
                        DrbdObserved {
                            role,
                            disk: DiskState::UpToDate,
                            peers: Default::default(),
                            out_of_sync_kib: 0,
                            split_brain: false,
                        },
                    )
                })
                .collect(),
            vms: a
                .vms
                .keys()
                .map(|v| {
                    (
                        v.clone(),
                        VmObserved {
                            state: VmState::Running,
                        },
                    )
                })
                .collect(),
            addresses: a
                .vips
                .iter()
                .filter_map(|v| d.vips.get(v).map(|x| x.address.clone()))
                .collect(),
            ..Default::default()
        };
        nodes.insert(
            name.clone(),
            NodeObserved {
                lease: Lease::Alive,
                fence_attempts: Vec::new(),
                lease_revoked: None,
                report: Some(report),
            },
        );
    }
    Observed {
        nodes,
        operations: Operations::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated repositories validate cleanly for even and odd rings, and for more VMs than
    /// there are ports in one naive sequence would allow per ring round.
    #[test]
    fn generated_repositories_validate() {
        for (hypervisors, vms) in [(2, 7), (3, 10), (5, 40), (32, 300), (7, 1000)] {
            let src = MemSource {
                files: files(&Shape {
                    hypervisors,
                    vms,
                    vip_every: 2,
                }),
            };
            let report = crate::manifest::check(&src);
            let rendered = report.rendered();
            assert!(
                rendered.is_empty(),
                "{hypervisors} nodes, {vms} VMs: {:?}",
                rendered
                    .iter()
                    .take(3)
                    .map(|d| d.to_text())
                    .collect::<Vec<_>>()
            );
        }
    }
}
