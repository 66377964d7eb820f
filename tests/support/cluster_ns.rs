//! A whole Rampart cluster on real parts, in network namespaces: the failover end-to-end
//! tests, the torture run and the failover benchmark all start one of these.
//!
//! Layout (one [`Lan`]: a bridge in a namespace of its own, a namespace per host):
//!
//! | host      | address  | runs                                                            |
//! |-----------|----------|-----------------------------------------------------------------|
//! | `alpha`   | `.11`    | etcd member, `rampart agent` (libvirt + netlink VIPs, DRBD      |
//! |           |          | simulated), `rampart controller --fence real`                   |
//! | `beta`    | `.12`    | the same                                                        |
//! | `witness` | `.13`    | etcd member, `rampart agent`, `rampart controller`              |
//! | `bmc`     | `.14`    | one `ipmi_sim` per hypervisor (alpha's on UDP 6230, beta's 6231) |
//! | `client`  | `.15`    | the [`Pinger`] probing the VIPs; `rampart status` runs here     |
//!
//! The BMCs sit in a namespace of their own on the same bridge, as a BMC's dedicated port on
//! the management switch would: a hypervisor whose link is cut can still be fenced by the
//! other side. Each hypervisor has its own private, unprivileged `libvirtd` (test driver over
//! `test+unix://`, see `libvirtd.rs`); unix sockets are not bound to network namespaces, so
//! the agent inside the namespace reaches it by path.
//!
//! A BMC's `chassis_control` script really powers its node off: it runs the node's
//! `poweroff` script, which SIGKILLs every process of the node (by the PIDs the harness keeps
//! in `NODE/pids`: etcd, agent, controller, libvirtd), takes the node's `eth0` down and
//! flushes its addresses (a powered-off host holds no VIP), and only then reports power off.
//! [`NsCluster::crash`] runs the same script with the BMC left on (a kernel panic: the host
//! is dead, its BMC answers and still says "on"). [`NsCluster::power_on`] boots the node
//! again: link up, its address back, a fresh libvirtd (the test driver's domains are gone, as
//! a real host's running VMs are after a reset), etcd (same data directory), controller and
//! agent.
//!
//! Manifests are generated for the namespaces (node addresses, `fence_ipmilan` with
//! `lanplus`, `cipher=3`, `power_wait=0`, the BMC's ip/ipport, the password from a throwaway
//! file; described domains, which libvirt's test driver accepts with `type='kvm'`; VIPs on
//! `eth0` following VMs) and committed to a git repository on disk that every controller
//! follows.
//!
//! A [`Monitor`] thread checks S1 continuously: it switches between the hypervisors'
//! namespaces (setns) and reads their addresses with getifaddrs every few milliseconds (a VIP
//! held by two namespaces in one sweep is a violation), and every ~250 ms lists the running
//! domains of every libvirtd (a VM running on two is a violation).
//!
//! Everything the harness starts it kills by PID, and every namespace it deletes, on `Drop`
//! (also when a test panics). Each daemon runs under a small `sh` wrapper that SIGKILLs it
//! when the wrapper's stdin closes, so nothing outlives a test process that dies. A missing
//! real part (ip, etcd, etcdctl, ipmi_sim, fence_ipmilan, libvirtd, virsh) fails the test.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CStr;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::libvirtd::Libvirtd;
use crate::netns::{Host, Lan, Pinger};

pub const BIN: &str = env!("CARGO_BIN_EXE_rampart");
pub const NODES: [&str; 3] = ["alpha", "beta", "witness"];
pub const HYPERVISORS: [&str; 2] = ["alpha", "beta"];
const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
const AGENT_PORT: u16 = 7710;
const CONTROLLER_PORT: u16 = 7711;
const HEARTBEAT_PORT: u16 = 7712;
const BMC_BASE_PORT: u16 = 6230;
const BMC_USER: &str = "rampartfence";

/// VMs of the test cluster: (name, allowed nodes, preferred node, fails over).
pub const VMS: [(&str, &[&str], &str, bool); 4] = [
    ("www", &["alpha", "beta"], "beta", true),
    ("files", &["alpha", "beta"], "alpha", true),
    ("ns1", &["alpha"], "alpha", false),
    ("ns2", &["beta"], "beta", false),
];
/// VIPs: (name, last octet, the VM it follows).
pub const VIPS: [(&str, u8, &str); 2] = [("www", 100, "www"), ("files", 101, "files")];

/// The cluster's timing, written into its Cluster manifest.
#[derive(Debug, Clone)]
pub struct Timing {
    pub lease_ttl: Duration,
    pub renew: Duration,
    pub fence_timeout: Duration,
    pub arp_count: u32,
    pub arp_interval: Duration,
    /// etcd's `--heartbeat-interval` and `--election-timeout`, in ms.
    pub etcd_heartbeat_ms: u64,
    pub etcd_election_ms: u64,
    /// The Cluster's `heartbeatTimeout` (agents always answer probes; the controller sends
    /// them only when this is set).
    pub heartbeat: Option<Duration>,
}

impl Timing {
    /// For the end-to-end tests: 2 s lease.
    pub fn test() -> Timing {
        Timing {
            lease_ttl: Duration::from_secs(2),
            renew: Duration::from_millis(500),
            fence_timeout: Duration::from_secs(6),
            arp_count: 3,
            arp_interval: Duration::from_millis(100),
            etcd_heartbeat_ms: 50,
            etcd_election_ms: 500,
            heartbeat: None,
        }
    }
    /// The fast profile: 1 s lease.
    pub fn fast() -> Timing {
        Timing {
            lease_ttl: Duration::from_secs(1),
            renew: Duration::from_millis(250),
            ..Timing::test()
        }
    }
    /// The fast profile with heartbeats: a node silent for 300 ms is revoked and fenced.
    pub fn fast_heartbeat() -> Timing {
        Timing {
            heartbeat: Some(Duration::from_millis(300)),
            ..Timing::fast()
        }
    }
    /// Rampart's defaults (10 s lease, renew every 2 s).
    pub fn defaults() -> Timing {
        Timing {
            lease_ttl: Duration::from_secs(10),
            renew: Duration::from_secs(2),
            fence_timeout: Duration::from_secs(20),
            arp_count: 3,
            arp_interval: Duration::from_millis(200),
            etcd_heartbeat_ms: 100,
            etcd_election_ms: 1000,
            heartbeat: None,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process started inside a namespace under a wrapper shell that kills it when the
/// wrapper's stdin closes.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    pub pid: u32,
    wrapper: Child,
    stdin: Option<ChildStdin>,
    killed: bool,
}

impl Proc {
    pub fn start(netns: &str, name: &str, log: PathBuf, program: &str, args: &[String]) -> Proc {
        let script = r#"log="$1"; shift; "$@" >>"$log" 2>&1 </dev/null & pid=$!; echo "$pid"; read _ignored; kill -9 "$pid" 2>/dev/null; exit 0"#;
        let mut wrapper = Command::new("ip")
            .args(["netns", "exec", netns, "sh", "-c", script, "sh"])
            .arg(&log)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} in {netns}: {e}"));
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the PID from the wrapper");
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the wrapper of {name} printed {line:?}, not a PID"));
        Proc {
            name: name.to_string(),
            log,
            pid,
            wrapper,
            stdin,
            killed: false,
        }
    }

    /// SIGKILL by PID (only while it is still the wrapper's child), and wait until it is gone.
    pub fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        if parent_of(self.pid) == Some(self.wrapper.id()) {
            signal(self.pid, libc::SIGKILL);
        }
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn running(&self) -> bool {
        !self.killed && process_alive(self.pid)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill(2) on a PID this harness started.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

/// Fails the test unless `binary` is installed.
pub fn require(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(binary);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{binary}` is not installed: install the Debian package {package} (./scripts/test does)"
    );
}

/// Run a command, killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The manifests' repository

pub struct Source {
    pub dir: PathBuf,
}

impl Source {
    pub fn new(dir: PathBuf) -> Source {
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head("main");
        git2::Repository::init_opts(&dir, &opts).unwrap();
        Source { dir }
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel)).unwrap()
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.join(rel)).unwrap();
    }

    /// Commit the whole work tree on `main`; the commit id.
    pub fn commit(&self, message: &str) -> String {
        let repo = git2::Repository::open(&self.dir).unwrap();
        let mut index = repo.index().unwrap();
        index.clear().unwrap();
        index
            .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("rampart test", "test@example.invalid").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
            .to_string()
    }
}

/// The test cluster's manifests: (path under the repository, text).
pub fn manifests(
    timing: &Timing,
    addr: &BTreeMap<String, Ipv4Addr>,
    bmc: Ipv4Addr,
    password_file: &Path,
    subnet_prefix: &str,
) -> Vec<(String, String)> {
    let head = "apiVersion: rampart.dev/v1alpha1\n";
    let mut out = vec![(
        "manifests/cluster.yaml".to_string(),
        format!(
            "{head}kind: Cluster\nmetadata:\n  name: nsc\nspec:\n  timing:\n    leaseTTL: {}\n    renewInterval: {}\n    fenceTimeout: {}\n    stopTimeout: 2s\n    startTimeout: 10s\n{}  noQuorumPolicy: stop\n  failback: none\n  fencing: required\n",
            ms(timing.lease_ttl),
            ms(timing.renew),
            ms(timing.fence_timeout),
            timing
                .heartbeat
                .map(|h| format!("    heartbeatTimeout: {}\n", ms(h)))
                .unwrap_or_default()
        ),
    )];
    for (i, n) in HYPERVISORS.iter().enumerate() {
        out.push((
            format!("manifests/nodes/{n}.yaml"),
            format!(
                "{head}kind: Node\nmetadata:\n  name: {n}\nspec:\n  role: hypervisor\n  addresses:\n    management: {}\n  capacity:\n    cpus: 16\n    memory: 64GiB\n  fencing:\n    - devices:\n        - device: {n}-ipmi\n",
                addr[*n]
            ),
        ));
        out.push((
            format!("manifests/fencing/{n}-ipmi.yaml"),
            format!(
                "{head}kind: FenceDevice\nmetadata:\n  name: {n}-ipmi\nspec:\n  agent:\n    name: fence_ipmilan\n    parameters:\n      ip: {bmc}\n      ipport: \"{}\"\n      username: {BMC_USER}\n      lanplus: \"1\"\n      cipher: \"3\"\n      power_wait: \"0\"\n    credentials:\n      password:\n        file: {}\n  timeout: {}\n",
                BMC_BASE_PORT + i as u16,
                password_file.display(),
                ms(timing.fence_timeout)
            ),
        ));
    }
    out.push((
        "manifests/nodes/witness.yaml".to_string(),
        format!(
            "{head}kind: Node\nmetadata:\n  name: witness\nspec:\n  role: witness\n  addresses:\n    management: {}\n",
            addr["witness"]
        ),
    ));
    for (minor, (vm, allowed, preferred, failover)) in VMS.iter().enumerate() {
        let volume = if *failover {
            format!(
                "{head}kind: Volume\nmetadata:\n  name: {vm}\nspec:\n  drbd:\n    minor: {minor}\n    port: {}\n    replicas:\n      - node: alpha\n        disk: /dev/vg0/{vm}\n      - node: beta\n        disk: /dev/vg0/{vm}\n",
                7788 + minor
            )
        } else {
            format!(
                "{head}kind: Volume\nmetadata:\n  name: {vm}\nspec:\n  local:\n    node: {}\n    path: /dev/vg0/{vm}\n",
                allowed[0]
            )
        };
        out.push((format!("manifests/volumes/{vm}.yaml"), volume));
        out.push((
            format!("manifests/vms/{vm}.yaml"),
            format!(
                "{head}kind: VirtualMachine\nmetadata:\n  name: {vm}\nspec:\n  cpus: 1\n  memory: 64MiB\n  volumes:\n    - volume: {vm}\n      target: vda\n  placement:\n    allowed: [{}]\n    preferred: [{preferred}]\n  failover: {failover}\n  stopTimeout: 1s\n",
                allowed.join(", ")
            ),
        ));
    }
    for (name, last, vm) in VIPS {
        out.push((
            format!("manifests/vips/{name}.yaml"),
            format!(
                "{head}kind: VirtualIP\nmetadata:\n  name: {name}\nspec:\n  address: {subnet_prefix}.{last}/24\n  interface: eth0\n  follows:\n    virtualMachine: {vm}\n  arp:\n    count: {}\n    interval: {}\n",
                timing.arp_count,
                ms(timing.arp_interval)
            ),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The cluster

const CHASSIS: &str = r#"#!/bin/sh
# ipmi_sim's chassis_control: DEVICE get PARM... | DEVICE set PARM VALUE...
dir="$(dirname "$0")"
shift
op="$1"; shift
case "$op" in
get)
    for parm in "$@"; do
        case "$parm" in
        power) echo "power:$(cat "$dir/state")" ;;
        boot) echo "boot:default" ;;
        *) echo "Invalid parameter: $parm"; exit 1 ;;
        esac
    done ;;
set)
    while [ $# -ge 2 ]; do
        parm="$1"; val="$2"; shift 2
        case "$parm" in
        power)
            if [ "$val" = 0 ]; then
                "$dir/poweroff" bmc
                echo "power off" >> "$dir/actions"
                echo 0 > "$dir/state"
            else
                echo "power on" >> "$dir/actions"
                echo 1 > "$dir/state"
            fi ;;
        *) echo "$parm $val" >> "$dir/actions" ;;
        esac
    done ;;
*) echo "Unknown operation: $op"; exit 1 ;;
esac
"#;

/// One node: its namespace and what runs in it.
pub struct Node {
    pub name: String,
    pub host: Host,
    /// `DIR/NODE`: logs, the pid list, the BMC's files.
    pub dir: PathBuf,
    pub etcd: Option<Proc>,
    pub agent: Option<Proc>,
    pub controller: Option<Proc>,
    pub libvirtd: Option<Libvirtd>,
    pub bmc: Option<Proc>,
    /// Index of its veth on the bridge (the LAN's host number).
    pub port: String,
    starts: u32,
}

impl Node {
    pub fn hypervisor(&self) -> bool {
        HYPERVISORS.contains(&self.name.as_str())
    }
}

pub struct NsCluster {
    pub nodes: BTreeMap<String, Node>,
    pub timing: Timing,
    pub url: String,
    pub source: Source,
    pub bmc_host: Host,
    pub client: Host,
    pub vips: BTreeMap<String, Ipv4Addr>,
    pub monitor: Option<Monitor>,
    /// The test URI of every hypervisor's running libvirtd, for the monitor.
    uris: Arc<Mutex<BTreeMap<String, String>>>,
    /// The highest generation seen per node (S4).
    max_generation: BTreeMap<String, u64>,
    pub status_errors: u64,
    pub lan: Lan,
    /// Removed last.
    pub dir: tempfile::TempDir,
    ip_bin: PathBuf,
    token: String,
}

fn temp_root(name: &str) -> tempfile::TempDir {
    let prefix = format!("rampart-ns-{name}-");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    if Path::new("/dev/shm").is_dir() {
        if let Ok(d) = b.tempdir_in("/dev/shm") {
            return d;
        }
    }
    b.tempdir().unwrap()
}

impl NsCluster {
    /// Every part started; waits until the cluster has converged.
    pub fn start(name: &str, timing: Timing) -> NsCluster {
        let mut c = NsCluster::build(name, timing);
        let t = Instant::now();
        c.wait(
            "the cluster converges at startup",
            Duration::from_secs(90),
            converged_home,
        );
        eprintln!(
            "[{name}] converged {:.2?} after the daemons started",
            t.elapsed()
        );
        c
    }

    /// Every part started, without waiting for convergence.
    pub fn build(name: &str, timing: Timing) -> NsCluster {
        let ip_bin = require("ip", "iproute2");
        require("etcd", "etcd-server");
        require("etcdctl", "etcd-client");
        require("ipmi_sim", "openipmi");
        require("fence_ipmilan", "fence-agents");
        require("ipmitool", "ipmitool");
        let dir = temp_root(name);
        let mut lan = Lan::new();
        let mut hosts = BTreeMap::new();
        for n in NODES {
            hosts.insert(n.to_string(), lan.add_host(n));
        }
        let bmc_host = lan.add_host("bmc");
        let client = lan.add_host("client");
        let subnet_prefix = format!("10.213.{}", lan.subnet);
        let vips: BTreeMap<String, Ipv4Addr> = VIPS
            .iter()
            .map(|(n, last, _)| (n.to_string(), lan.free_address(*last)))
            .collect();
        let addr: BTreeMap<String, Ipv4Addr> =
            hosts.iter().map(|(n, h)| (n.clone(), h.address)).collect();
        let url = format!(
            "etcd://{}/nsc",
            NODES
                .iter()
                .map(|n| format!("{}:{ETCD_CLIENT_PORT}", addr[*n]))
                .collect::<Vec<_>>()
                .join(",")
        );
        let password = format!("pw-{:x}", std::process::id());
        let password_file = dir.path().join("bmc-password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let source = Source::new(dir.path().join("source"));
        for (rel, text) in manifests(
            &timing,
            &addr,
            bmc_host.address,
            &password_file,
            &subnet_prefix,
        ) {
            source.write(&rel, &text);
        }
        source.commit("the namespace test cluster");
        let mut nodes = BTreeMap::new();
        for (i, n) in NODES.iter().enumerate() {
            let ndir = dir.path().join(n);
            std::fs::create_dir_all(&ndir).unwrap();
            let host = hosts[*n].clone();
            let port = format!("v{}-{n}", i + 1)
                .chars()
                .take(15)
                .collect::<String>();
            nodes.insert(
                n.to_string(),
                Node {
                    name: n.to_string(),
                    host,
                    dir: ndir,
                    etcd: None,
                    agent: None,
                    controller: None,
                    libvirtd: None,
                    bmc: None,
                    port,
                    starts: 0,
                },
            );
        }
        let token = format!("rampart-nsc-{}-{}", std::process::id(), lan.prefix);
        let mut c = NsCluster {
            nodes,
            timing,
            url,
            source,
            bmc_host,
            client,
            vips,
            monitor: None,
            uris: Arc::new(Mutex::new(BTreeMap::new())),
            max_generation: BTreeMap::new(),
            status_errors: 0,
            lan,
            dir,
            ip_bin,
            token,
        };
        for n in NODES {
            c.write_power_scripts(n);
        }
        for (i, n) in HYPERVISORS.iter().enumerate() {
            c.start_bmc_with(n, BMC_BASE_PORT + i as u16, &password);
        }
        // Boot: libvirtds, etcd on every node, then the controllers and the agents.
        for n in HYPERVISORS {
            c.node_mut(n).libvirtd = Some(Libvirtd::start());
        }
        c.update_uris();
        for n in NODES {
            c.start_etcd(n);
        }
        c.wait_etcd_healthy();
        for n in NODES {
            c.start_controller(n);
        }
        for n in NODES {
            c.start_agent(n);
        }
        c.monitor = Some(Monitor::start(&c));
        c
    }

    pub fn node(&self, n: &str) -> &Node {
        self.nodes.get(n).unwrap_or_else(|| panic!("no node {n}"))
    }

    pub fn node_mut(&mut self, n: &str) -> &mut Node {
        self.nodes
            .get_mut(n)
            .unwrap_or_else(|| panic!("no node {n}"))
    }

    pub fn vip(&self, name: &str) -> Ipv4Addr {
        self.vips[name]
    }

    fn update_uris(&self) {
        *self.uris.lock().unwrap() = self
            .nodes
            .values()
            .filter_map(|n| n.libvirtd.as_ref().map(|l| (n.name.clone(), l.test_uri())))
            .collect();
    }

    fn write_power_scripts(&self, n: &str) {
        let node = self.node(n);
        let d = &node.dir;
        std::fs::write(d.join("state"), "1\n").unwrap();
        std::fs::write(d.join("actions"), "").unwrap();
        std::fs::write(d.join("pids"), "").unwrap();
        std::fs::write(d.join("chassis"), CHASSIS).unwrap();
        let poweroff = format!(
            "#!/bin/sh\n# {n} loses power: every process dies, the link goes down, addresses are gone.\ndir=\"$(dirname \"$0\")\"\nfor p in $(cat \"$dir/pids\"); do kill -9 \"$p\" 2>/dev/null; done\n{ip} -n {ns} link set eth0 down\n{ip} -n {ns} addr flush dev eth0\necho \"$(date +%s.%N) $1\" >> \"$dir/power.log\"\n",
            ip = self.ip_bin.display(),
            ns = node.host.netns
        );
        std::fs::write(d.join("poweroff"), poweroff).unwrap();
        for f in ["chassis", "poweroff"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    fn start_bmc_with(&mut self, n: &str, port: u16, password: &str) {
        let bmc_addr = self.bmc_host.address;
        let bmc_ns = self.bmc_host.netns.clone();
        let node = self.node_mut(n);
        let d = node.dir.join("bmc");
        std::fs::create_dir_all(d.join("state.d")).unwrap();
        std::fs::write(
            d.join("lan.conf"),
            format!(
                "name \"rampart-{n}\"\nset_working_mc 0x20\n  startlan 1\n    addr {bmc_addr} {port}\n    priv_limit admin\n    allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n    allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{} 0x20\"\n  user 2 true \"{BMC_USER}\" \"{password}\" admin 10 none md2 md5 straight\n",
                node.dir.join("chassis").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
        )
        .unwrap();
        let args: Vec<String> = vec![
            "-c".into(),
            d.join("lan.conf").display().to_string(),
            "-f".into(),
            d.join("bmc.emu").display().to_string(),
            "-s".into(),
            d.join("state.d").display().to_string(),
            "-n".into(),
        ];
        let p = Proc::start(
            &bmc_ns,
            &format!("ipmi_sim {n}"),
            d.join("ipmi_sim.log"),
            "ipmi_sim",
            &args,
        );
        node.bmc = Some(p);
        // ipmi_sim answers once it holds its port.
        let t = Instant::now();
        loop {
            let out = self
                .lan
                .exec(&bmc_ns, "ss", &["-Hlun", &format!("sport = :{port}")]);
            if String::from_utf8_lossy(&out.stdout).contains(&port.to_string()) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "ipmi_sim of {n} did not listen on {bmc_addr}:{port}: {}",
                std::fs::read_to_string(d.join("ipmi_sim.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The BMC of `n` dies (fencing it becomes impossible).
    pub fn kill_bmc(&mut self, n: &str) {
        if let Some(mut b) = self.node_mut(n).bmc.take() {
            b.kill();
        }
    }

    /// Start the BMC of `n` again.
    pub fn start_bmc(&mut self, n: &str) {
        let i = HYPERVISORS
            .iter()
            .position(|h| *h == n)
            .expect("a hypervisor");
        let password = format!("pw-{:x}", std::process::id());
        self.start_bmc_with(n, BMC_BASE_PORT + i as u16, &password);
    }

    /// Power actions the BMC of `n` carried out.
    pub fn bmc_actions(&self, n: &str) -> Vec<String> {
        std::fs::read_to_string(self.node(n).dir.join("actions"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Whether the node is powered (its BMC's power state; witnesses are always on).
    pub fn powered(&self, n: &str) -> bool {
        std::fs::read_to_string(self.node(n).dir.join("state"))
            .map(|s| s.trim() == "1")
            .unwrap_or(true)
    }

    fn log_path(&mut self, n: &str, what: &str) -> PathBuf {
        let node = self.node_mut(n);
        node.starts += 1;
        node.dir.join(format!("{what}.{}.log", node.starts))
    }

    /// Record the node's PIDs for its power-off script.
    fn write_pids(&self, n: &str) {
        let node = self.node(n);
        let mut pids = Vec::new();
        for p in [&node.etcd, &node.agent, &node.controller]
            .into_iter()
            .flatten()
        {
            if !p.killed {
                pids.push(p.pid);
            }
        }
        if let Some(l) = &node.libvirtd {
            pids.extend(l.pid());
        }
        let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
        std::fs::write(node.dir.join("pids"), text).unwrap();
    }

    pub fn start_etcd(&mut self, n: &str) {
        let a = self.node(n).host.address;
        let initial = NODES
            .iter()
            .map(|m| format!("{m}=http://{}:{ETCD_PEER_PORT}", self.node(m).host.address))
            .collect::<Vec<_>>()
            .join(",");
        let args: Vec<String> = [
            "--name",
            n,
            "--data-dir",
            &self.node(n).dir.join("etcd").display().to_string(),
            "--listen-client-urls",
            &format!("http://{a}:{ETCD_CLIENT_PORT}"),
            "--advertise-client-urls",
            &format!("http://{a}:{ETCD_CLIENT_PORT}"),
            "--listen-peer-urls",
            &format!("http://{a}:{ETCD_PEER_PORT}"),
            "--initial-advertise-peer-urls",
            &format!("http://{a}:{ETCD_PEER_PORT}"),
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &self.token,
            "--heartbeat-interval",
            &self.timing.etcd_heartbeat_ms.to_string(),
            "--election-timeout",
            &self.timing.etcd_election_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.log_path(n, "etcd");
        let ns = self.node(n).host.netns.clone();
        let p = Proc::start(&ns, &format!("etcd {n}"), log, "etcd", &args);
        self.node_mut(n).etcd = Some(p);
        self.write_pids(n);
    }

    pub fn kill_etcd(&mut self, n: &str) {
        if let Some(mut p) = self.node_mut(n).etcd.take() {
            p.kill();
        }
        self.write_pids(n);
    }

    /// `etcdctl endpoint health` from the client namespace, over every member.
    pub fn etcd_healthy_members(&self) -> usize {
        let endpoints = NODES
            .iter()
            .map(|n| format!("http://{}:{ETCD_CLIENT_PORT}", self.node(n).host.address))
            .collect::<Vec<_>>()
            .join(",");
        let out = run_with_timeout(
            Command::new("ip").args([
                "netns",
                "exec",
                &self.client.netns,
                "etcdctl",
                "--endpoints",
                &endpoints,
                "--command-timeout=1s",
                "--dial-timeout=1s",
                "endpoint",
                "health",
                "-w",
                "json",
            ]),
            Duration::from_secs(5),
        );
        let Some(out) = out else { return 0 };
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v.as_array()
            .map(|a| a.iter().filter(|m| m["health"] == true).count())
            .unwrap_or(0)
    }

    fn wait_etcd_healthy(&self) {
        let t = Instant::now();
        while self.etcd_healthy_members() < NODES.len() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "etcd did not become healthy in the namespaces:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The member that leads etcd now, if one does.
    pub fn etcd_leader(&self) -> Option<String> {
        let endpoints = NODES
            .iter()
            .filter(|n| self.node(n).etcd.as_ref().is_some_and(Proc::running))
            .map(|n| format!("http://{}:{ETCD_CLIENT_PORT}", self.node(n).host.address))
            .collect::<Vec<_>>()
            .join(",");
        let out = run_with_timeout(
            Command::new("ip").args([
                "netns",
                "exec",
                &self.client.netns,
                "etcdctl",
                "--endpoints",
                &endpoints,
                "--command-timeout=1s",
                "endpoint",
                "status",
                "-w",
                "json",
            ]),
            Duration::from_secs(5),
        )?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        for m in v.as_array()? {
            let st = &m["Status"];
            if st["header"]["member_id"] == st["leader"] && st["leader"].is_u64() {
                let ep = m["Endpoint"].as_str()?;
                return NODES
                    .iter()
                    .find(|n| ep.contains(&format!("//{}:", self.node(n).host.address)))
                    .map(|n| n.to_string());
            }
        }
        None
    }

    pub fn start_controller(&mut self, n: &str) {
        let a = self.node(n).host.address;
        let args: Vec<String> = [
            "controller",
            "--store",
            &self.url,
            "--source",
            &self.source.dir.display().to_string(),
            "--branch",
            "main",
            "--path",
            "manifests",
            "--state-dir",
            &self
                .node(n)
                .dir
                .join("controller-state")
                .display()
                .to_string(),
            "--fence",
            "real",
            "--id",
            n,
            "--listen",
            &format!("{a}:{CONTROLLER_PORT}"),
            "--poll",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.log_path(n, "controller");
        let ns = self.node(n).host.netns.clone();
        let p = Proc::start(&ns, &format!("controller {n}"), log, BIN, &args);
        self.node_mut(n).controller = Some(p);
        self.write_pids(n);
    }

    pub fn kill_controller(&mut self, n: &str) {
        if let Some(mut p) = self.node_mut(n).controller.take() {
            p.kill();
        }
        self.write_pids(n);
    }

    pub fn start_agent(&mut self, n: &str) {
        let a = self.node(n).host.address;
        let mut args: Vec<String> = [
            "agent",
            "--node",
            n,
            "--store",
            &self.url,
            "--drivers",
            "real",
            "--simulate",
            "drbd",
            "--no-watchdog",
            "--listen",
            &format!("{a}:{AGENT_PORT}"),
            "--heartbeat",
            &format!("{a}:{HEARTBEAT_PORT}"),
            "--drbd-res-dir",
            &self.node(n).dir.join("drbd.d").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &self.node(n).libvirtd {
            Some(l) => args.extend(["--libvirt-uri".to_string(), l.test_uri()]),
            // The witness hosts no VMs: a test:///default connection of its own.
            None => args.extend(["--libvirt-uri".to_string(), "test:///default".to_string()]),
        }
        let log = self.log_path(n, "agent");
        let ns = self.node(n).host.netns.clone();
        let p = Proc::start(&ns, &format!("agent {n}"), log, BIN, &args);
        self.node_mut(n).agent = Some(p);
        self.write_pids(n);
    }

    pub fn kill_agent(&mut self, n: &str) {
        if let Some(mut p) = self.node_mut(n).agent.take() {
            p.kill();
        }
        self.write_pids(n);
    }

    /// The host dies at once (power loss or kernel panic) while its BMC stays up and still
    /// says "on": every process of the node killed, its link down, its addresses gone.
    pub fn crash(&mut self, n: &str) -> Instant {
        let t = Instant::now();
        let script = self.node(n).dir.join("poweroff");
        let out = Command::new(&script)
            .arg("crash")
            .output()
            .expect("run poweroff");
        assert!(out.status.success(), "{}: {:?}", script.display(), out);
        self.reap(n);
        t
    }

    /// Forget the processes a power-off killed (their wrappers are collected).
    fn reap(&mut self, n: &str) {
        let node = self.node_mut(n);
        for p in [&mut node.etcd, &mut node.agent, &mut node.controller] {
            if let Some(mut p) = p.take() {
                p.kill();
            }
        }
        if let Some(l) = node.libvirtd.take() {
            drop(l);
        }
        self.update_uris();
        self.write_pids(n);
    }

    /// Whether the power-off script ran for `n` since it last booted (a crash or the BMC).
    pub fn powered_off_by(&self, n: &str) -> Vec<String> {
        std::fs::read_to_string(self.node(n).dir.join("power.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .collect()
    }

    /// The node boots again: BMC power on, link up with its address, a fresh libvirtd,
    /// etcd (same data), its controller and its agent.
    pub fn power_on(&mut self, n: &str) {
        self.reap(n);
        let node = self.node(n);
        std::fs::write(node.dir.join("state"), "1\n").unwrap();
        let ns = node.host.netns.clone();
        let addr = format!("{}/{}", node.host.address, node.host.prefix);
        let port = node.port.clone();
        let _ = self.lan.ip_in(&ns, &["addr", "flush", "dev", "eth0"]);
        self.lan.ip_in(&ns, &["addr", "add", &addr, "dev", "eth0"]);
        self.lan.ip_in(&ns, &["link", "set", "eth0", "up"]);
        let br = self.lan.bridge_netns.clone();
        self.lan.ip_in(&br, &["link", "set", &port, "up"]);
        if self.node(n).hypervisor() {
            self.node_mut(n).libvirtd = Some(Libvirtd::start());
            self.update_uris();
        }
        self.start_etcd(n);
        self.start_controller(n);
        self.start_agent(n);
    }

    /// Cut the node's link at the bridge (the node keeps running, alone).
    pub fn cut_link(&mut self, n: &str) -> Instant {
        let port = self.node(n).port.clone();
        let br = self.lan.bridge_netns.clone();
        self.lan.ip_in(&br, &["link", "set", &port, "down"]);
        Instant::now()
    }

    pub fn heal_link(&mut self, n: &str) {
        let port = self.node(n).port.clone();
        let br = self.lan.bridge_netns.clone();
        self.lan.ip_in(&br, &["link", "set", &port, "up"]);
    }

    /// Node `n` can no longer reach the BMCs (a `prohibit` route in its namespace: a fence
    /// agent it runs fails at once) while everything else on the LAN still can.
    pub fn block_bmcs_from(&self, n: &str) {
        let ns = self.node(n).host.netns.clone();
        let bmc = format!("{}/32", self.bmc_host.address);
        self.lan.ip_in(&ns, &["route", "add", "prohibit", &bmc]);
    }

    /// The domains running on a hypervisor's libvirtd (none when it is down).
    pub fn running_domains(&self, n: &str) -> BTreeSet<String> {
        running_domains(self.node(n).libvirtd.as_ref().map(|l| l.test_uri()))
    }

    /// Whether namespace of `n` holds the VIP now.
    pub fn holds(&self, n: &str, vip: &str) -> bool {
        let a = format!("{}/24", self.vip(vip));
        self.lan.has_address(&self.node(n).host.netns, "eth0", &a)
    }

    pub fn pinger(&self, vip: &str, interval: Duration) -> Pinger {
        Pinger::start(&self.client.netns, self.vip(vip), interval)
    }

    // --- status ---------------------------------------------------------------------------

    /// `rampart ARGS --store URL`, from the client namespace.
    pub fn rampart(&self, args: &[&str]) -> Option<Output> {
        run_with_timeout(
            Command::new("ip")
                .args(["netns", "exec", &self.client.netns, BIN])
                .args(args)
                .args(["--store", &self.url]),
            Duration::from_secs(10),
        )
    }

    /// `rampart status -o json`, checked (S1, S4); `None` when it could not be read.
    pub fn status(&mut self) -> Option<Value> {
        let out = self.rampart(&["status", "-o", "json"])?;
        if !out.status.success() {
            self.status_errors += 1;
            return None;
        }
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "rampart status -o json printed something that is not JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        self.check(&s);
        Some(s)
    }

    fn check(&mut self, s: &Value) {
        let broken = crate::status_check::violations(s, &mut self.max_generation);
        if !broken.is_empty() {
            panic!(
                "{}\nstatus: {}\n{}",
                broken.join("\n"),
                pretty(s),
                self.logs()
            );
        }
        self.assert_safe();
    }

    /// Panics with the monitor's violations, if any.
    pub fn assert_safe(&self) {
        if let Some(m) = &self.monitor {
            let v = m.violations();
            if !v.is_empty() {
                panic!("safety violated:\n{}\n{}", v.join("\n"), self.logs());
            }
        }
    }

    /// Poll the status until `pred` holds; it and how long that took.
    pub fn wait(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        self.wait_from(Instant::now(), what, within, pred)
    }

    pub fn wait_from(
        &mut self,
        start: Instant,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let mut last = None;
        loop {
            if let Some(s) = self.status() {
                if pred(&s) {
                    return (s, start.elapsed());
                }
                last = Some(s);
            }
            if start.elapsed() > within {
                panic!(
                    "{what}: not within {within:?}\nlast status: {}\n{}",
                    last.as_ref().map_or("(none could be read)".into(), pretty),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll the status for `period`; `pred` must hold on every reading.
    pub fn hold(&mut self, what: &str, period: Duration, pred: impl Fn(&Value) -> bool) {
        let start = Instant::now();
        let mut readings = 0;
        while start.elapsed() < period {
            if let Some(s) = self.status() {
                readings += 1;
                assert!(
                    pred(&s),
                    "{what}: broken after {:?}\nstatus: {}\n{}",
                    start.elapsed(),
                    pretty(&s),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            readings >= 3,
            "{what}: only {readings} status readings in {period:?}\n{}",
            self.logs()
        );
    }

    /// The tail of every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            for p in [&node.etcd, &node.controller, &node.agent, &node.bmc]
                .into_iter()
                .flatten()
            {
                let text = p.output();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                out.push_str(&format!(
                    "--- {} (pid {}, {}) ---\n{}\n",
                    p.name,
                    p.pid,
                    if p.running() { "running" } else { "gone" },
                    tail.join("\n")
                ));
            }
            let actions = self.bmc_actions(&node.name);
            if !actions.is_empty() {
                out.push_str(&format!("--- BMC of {}: {actions:?}\n", node.name));
            }
        }
        out
    }

    /// Stop the S1 monitor; its summary.
    pub fn stop_monitor(&mut self) -> Option<MonitorReport> {
        self.monitor.take().map(Monitor::stop)
    }
}

impl Drop for NsCluster {
    fn drop(&mut self) {
        if let Some(m) = self.monitor.take() {
            m.stop();
        }
        for node in self.nodes.values_mut() {
            for p in [
                &mut node.agent,
                &mut node.controller,
                &mut node.etcd,
                &mut node.bmc,
            ] {
                if let Some(mut p) = p.take() {
                    p.kill();
                }
            }
            node.libvirtd.take();
        }
        // The Lan (namespaces) and the directory go with the fields.
    }
}

pub fn running_domains(uri: Option<String>) -> BTreeSet<String> {
    let Some(uri) = uri else {
        return BTreeSet::new();
    };
    let out = run_with_timeout(
        Command::new("virsh")
            .args(["-c", &uri, "list", "--name"])
            .env("LIBVIRT_AUTOSTART", "0"),
        Duration::from_secs(5),
    );
    match out {
        Some(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        _ => BTreeSet::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// S1 monitor

#[derive(Debug, Clone, Default)]
pub struct MonitorReport {
    pub sweeps: u64,
    pub vm_sweeps: u64,
    pub violations: Vec<String>,
}

/// Checks S1 continuously on the hosts themselves. See the module documentation.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<MonitorReport>>,
    threads: Vec<JoinHandle<()>>,
}

fn addresses_here() -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it says.
            let fam = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(fam) == libc::AF_INET {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
                if name.to_bytes() == b"eth0" {
                    out.insert(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                }
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

impl Monitor {
    pub fn start(c: &NsCluster) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(MonitorReport::default()));
        let namespaces: Vec<(String, String)> = HYPERVISORS
            .iter()
            .map(|n| (n.to_string(), c.node(n).host.netns_path()))
            .collect();
        let vips: Vec<(String, Ipv4Addr)> = c.vips.iter().map(|(n, a)| (n.clone(), *a)).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let addr_thread = {
            let (stop, report) = (stop.clone(), report.clone());
            std::thread::spawn(move || {
                let files: Vec<(String, std::fs::File)> = namespaces
                    .iter()
                    .map(|(n, p)| (n.clone(), std::fs::File::open(p).expect("open netns")))
                    .collect();
                let _ = ready_tx.send(());
                while !stop.load(Ordering::SeqCst) {
                    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for (n, f) in &files {
                        // SAFETY: setns on an open namespace file; this thread only.
                        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                            continue;
                        }
                        let here = addresses_here();
                        for (v, a) in &vips {
                            if here.contains(a) {
                                holders.entry(v.clone()).or_default().push(n.clone());
                            }
                        }
                    }
                    let mut r = report.lock().unwrap();
                    r.sweeps += 1;
                    for (v, on) in holders {
                        if on.len() > 1 && r.violations.len() < 50 {
                            r.violations
                                .push(format!("S1: VIP {v} held by {on:?} at once"));
                        }
                    }
                    drop(r);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("monitor thread");
        // VMs: the sockets of every hypervisor's libvirtd (a down daemon runs nothing).
        let sockets = c.uris.clone();
        let vm_thread = {
            let (stop, report) = (stop.clone(), report.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut on: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    let now: Vec<(String, String)> = sockets
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(n, u)| (n.clone(), u.clone()))
                        .collect();
                    for (n, uri) in &now {
                        // The test driver's own `test` domain runs everywhere.
                        for d in running_domains(Some(uri.clone()))
                            .into_iter()
                            .filter(|d| VMS.iter().any(|v| v.0 == d))
                        {
                            on.entry(d).or_default().push(n.clone());
                        }
                    }
                    let mut r = report.lock().unwrap();
                    r.vm_sweeps += 1;
                    for (vm, nodes) in on {
                        if nodes.len() > 1 && r.violations.len() < 50 {
                            r.violations
                                .push(format!("S1: VM {vm} running on {nodes:?}"));
                        }
                    }
                    drop(r);
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        Monitor {
            stop,
            report,
            threads: vec![addr_thread, vm_thread],
        }
    }

    pub fn violations(&self) -> Vec<String> {
        self.report.lock().unwrap().violations.clone()
    }

    pub fn stop(mut self) -> MonitorReport {
        self.halt();
        self.report.lock().unwrap().clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.halt();
    }
}

// ---------------------------------------------------------------------------------------------
// What the status says

pub fn obj(v: &Value) -> Vec<(String, &Value)> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default()
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn other(n: &str) -> &'static str {
    if n == "alpha" {
        "beta"
    } else {
        "alpha"
    }
}

/// The VM runs on exactly `node`, where it is placed.
pub fn runs_on(s: &Value, vm: &str, node: &str) -> bool {
    let l = &s["vms"][vm];
    l["state"] == "running" && strs(&l["running_on"]) == [node] && l["placed_on"] == node
}

pub fn runs_nowhere(s: &Value, vm: &str) -> bool {
    strs(&s["vms"][vm]["running_on"]).is_empty()
}

pub fn placed(s: &Value, vm: &str) -> Option<String> {
    s["vms"][vm]["placed_on"].as_str().map(str::to_string)
}

pub fn lease(s: &Value, node: &str) -> String {
    s["nodes"][node]["lease"].as_str().unwrap_or("").to_string()
}

/// Where every VM is placed.
pub fn placement(s: &Value) -> BTreeMap<String, String> {
    obj(&s["vms"])
        .into_iter()
        .filter_map(|(vm, l)| l["placed_on"].as_str().map(|n| (vm, n.to_string())))
        .collect()
}

/// Every node named holds a live lease and runs its assignment.
pub fn acknowledged(s: &Value, nodes: &[&str]) -> bool {
    nodes.iter().all(|n| {
        let x = &s["nodes"][n];
        x["lease"] == "alive"
            && x["assigned_generation"].as_u64().is_some()
            && x["held_generation"] == x["assigned_generation"]
    })
}

/// Every VIP is held by exactly the node running the VM it follows.
pub fn vips_follow(s: &Value) -> bool {
    VIPS.iter().all(|(vip, _, vm)| {
        let on = strs(&s["vips"][*vip]);
        match s["vms"][*vm]["running_on"].as_array() {
            Some(r) if r.len() == 1 => on == strs(&s["vms"][*vm]["running_on"]),
            _ => on.is_empty(),
        }
    })
}

/// Every VM runs where placed, every live node runs its assignment, nothing pending.
pub fn converged_on(s: &Value, nodes: &[&str]) -> bool {
    placement(s).iter().all(|(vm, n)| runs_on(s, vm, n))
        && acknowledged(s, nodes)
        && vips_follow(s)
        && s["pending"].as_array().is_some_and(Vec::is_empty)
}

/// Startup: every VM placed and running (pinned ones at home), all three nodes acknowledged.
pub fn converged_home(s: &Value) -> bool {
    let p = placement(s);
    p.len() == VMS.len()
        && VMS
            .iter()
            .filter(|v| !v.3)
            .all(|(vm, allowed, _, _)| p.get(*vm).map(String::as_str) == Some(allowed[0]))
        && converged_on(s, &NODES)
}

/// The client's outage after a failure at `from`: the longest gap between consecutive replies,
/// from the last reply received before `from` over the replies to requests sent after it.
/// Answers still in flight at `from` (requests sent before it) do not end the outage. `None`
/// until a request sent after `from` is answered.
pub fn outage(replies: &[crate::netns::Reply], from: Instant) -> Option<Duration> {
    let before = replies
        .iter()
        .map(|r| r.received)
        .filter(|t| *t <= from)
        .max()?;
    let mut after: Vec<Instant> = replies
        .iter()
        .filter(|r| r.sent > from)
        .map(|r| r.received)
        .collect();
    after.sort();
    let mut prev = before;
    let mut worst = Duration::ZERO;
    for t in &after {
        worst = worst.max(t.saturating_duration_since(prev));
        prev = prev.max(*t);
    }
    (!after.is_empty()).then_some(worst)
}
