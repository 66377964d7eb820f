//! The daemons end to end, as real processes on a real etcd: `rampart controller --fence sim`
//! following a git repository on disk, one `rampart agent --drivers sim` per node of the
//! reference cluster (alpha, beta, witness; timing shortened to a 2 s lease), and the admin
//! commands, all driven through the command line and the HTTP API, as an admin would.
//!
//! Every scenario waits for outcomes by polling `rampart status -o json` against deadlines,
//! and checks on every poll what must never be seen (S1: a VM running on two nodes, two
//! Primaries, an address held twice; S4: an assignment generation going backwards).
//!
//! Processes: each daemon runs under a small `sh` wrapper that reports the daemon's PID and
//! SIGKILLs it when its stdin closes, so a daemon dies with the test (also when the test
//! process is killed). The test kills daemons by PID: when a scenario asks for it, and all of
//! them when its fixture is dropped, which also happens when the test fails. Ports are ones
//! the kernel hands out as free (high, unusual); data lives in temporary directories.

#![cfg(feature = "etcd")]

#[path = "support/etcd_cluster.rs"]
mod etcd_cluster;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/status_check.rs"]
mod status_check;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use etcd_cluster::EtcdCluster;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

/// The shortened timing written into the test cluster's manifests.
const LEASE_TTL: Duration = Duration::from_secs(2);
const RENEW_INTERVAL: Duration = Duration::from_millis(500);

const NODES: [&str; 3] = ["alpha", "beta", "witness"];

/// Where each VM of the reference cluster runs by its preferences.
const HOME: [(&str, &str); 6] = [
    ("files", "alpha"),
    ("ns1", "alpha"),
    ("shell1", "alpha"),
    ("www", "beta"),
    ("ns2", "beta"),
    ("shell2", "beta"),
];

/// VMs on local disks: they run on their node or nowhere.
const PINNED: [(&str, &str); 4] = [
    ("ns1", "alpha"),
    ("shell1", "alpha"),
    ("ns2", "beta"),
    ("shell2", "beta"),
];

/// VMs on DRBD that fail over between alpha and beta.
const FAILOVER: [&str; 2] = ["files", "www"];

/// A VirtualIP that follows `files`: the valid change pushed by several scenarios.
const FILES_VIP: &str = "\
apiVersion: rampart.dev/v1alpha1
kind: VirtualIP
metadata:
  name: files
spec:
  address: 203.0.113.81/24
  interface: br0
  follows:
    virtualMachine: files
";

/// An invalid change: a VM whose volume is defined nowhere.
const DB_VM: &str = "\
apiVersion: rampart.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: db
spec:
  cpus: 1
  memory: 1GiB
  volumes:
    - volume: db
      target: vda
  placement:
    allowed: [alpha, beta]
";

// ---------------------------------------------------------------------------------------------
// Processes

/// A daemon, running under a wrapper shell that kills it when the wrapper's stdin closes.
struct Daemon {
    name: String,
    log: PathBuf,
    pid: u32,
    wrapper: Child,
    stdin: Option<ChildStdin>,
    /// Where its HTTP API listens, if it has one.
    api: Option<SocketAddr>,
    killed: bool,
}

impl Daemon {
    fn start(name: &str, log: PathBuf, args: &[String], api: Option<SocketAddr>) -> Daemon {
        let script = r#"log="$1"; shift; "$@" >>"$log" 2>&1 </dev/null & pid=$!; echo "$pid"; read _ignored; kill -9 "$pid" 2>/dev/null; exit 0"#;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&log)
            .arg(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sh to run rampart");
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the daemon's PID");
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the wrapper of {name} printed {line:?}, not a PID"));
        Daemon {
            name: name.to_string(),
            log,
            pid,
            wrapper,
            stdin,
            api,
            killed: false,
        }
    }

    /// SIGKILL by PID, and wait until the process is gone.
    fn kill(&mut self) {
        if let Err(e) = self.stop() {
            panic!("{e}");
        }
    }

    /// Like `kill`, without panicking (for `Drop`, which may run while a test unwinds).
    fn stop(&mut self) -> Result<(), String> {
        if self.killed {
            return Ok(());
        }
        self.killed = true;
        // Only while it is still the wrapper's child: a PID that was reaped and reused
        // belongs to someone else.
        if parent_of(self.pid) == Some(self.wrapper.id()) {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if process_alive(self.pid) {
            return Err(format!("{} (pid {}) survived SIGKILL", self.name, self.pid));
        }
        Ok(())
    }

    fn running(&self) -> bool {
        !self.killed && process_alive(self.pid)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("{e}");
        }
    }
}

/// The parent PID of a process, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is dead: only its exit status is left to reap.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A loopback address on a port the kernel says is free (from its high ephemeral range).
fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::free_tcp_port()))
}

// ---------------------------------------------------------------------------------------------
// HTTP (the daemons' API and the webhook), without a client library

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    Ok((code, body))
}

fn http_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let (code, body) = http(addr, "GET", path, &[], b"").ok()?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// The source repository

/// The manifests' repository: a work tree on disk, committed with git2; the controller
/// follows it by path.
struct Source {
    dir: PathBuf,
}

impl Source {
    /// The reference cluster (`manifests/`), with the timing shortened for tests.
    fn new(dir: PathBuf) -> Source {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        for e in walkdir::WalkDir::new(&from) {
            let e = e.unwrap();
            let to = dir
                .join("manifests")
                .join(e.path().strip_prefix(&from).unwrap());
            if e.file_type().is_dir() {
                std::fs::create_dir_all(&to).unwrap();
            } else {
                std::fs::copy(e.path(), &to).unwrap();
            }
        }
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head("main");
        git2::Repository::init_opts(&dir, &opts).unwrap();
        let s = Source { dir };
        s.edit("manifests/cluster.yaml", "leaseTTL: 10s", "leaseTTL: 2s");
        s.edit(
            "manifests/cluster.yaml",
            "renewInterval: 2s",
            "renewInterval: 500ms",
        );
        s.edit(
            "manifests/cluster.yaml",
            "fenceTimeout: 60s",
            "fenceTimeout: 5s",
        );
        for n in ["alpha", "beta"] {
            s.edit(
                &format!("manifests/nodes/{n}.yaml"),
                "timeout: 20s",
                "timeout: 3s",
            );
            // A device may not take longer than the cluster waits for it.
            s.edit(
                &format!("manifests/fencing/{n}-ipmi.yaml"),
                "timeout: 30s",
                "timeout: 5s",
            );
        }
        s
    }

    fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.dir.join(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} has no `{from}`");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.dir.join(rel), text).unwrap();
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.join(rel)).unwrap();
    }

    /// Commit the whole work tree on `main`; returns the commit id.
    fn commit(&self, message: &str) -> String {
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

// ---------------------------------------------------------------------------------------------
// The fixture: etcd, the source, the daemons

struct Fixture {
    /// Dropped first: every daemon is killed before etcd goes and the directories are removed.
    daemons: Vec<Daemon>,
    etcd: EtcdCluster,
    url: String,
    source: Source,
    first_commit: String,
    tmp: tempfile::TempDir,
    /// The highest generation seen per node (S4: never goes backwards).
    max_generation: BTreeMap<String, u64>,
    /// Status reads that failed, for the record.
    status_errors: u64,
}

impl Fixture {
    async fn new(name: &str, etcd_members: usize) -> Fixture {
        let etcd = EtcdCluster::start(etcd_members).await;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("rampart-runtime-{name}-"))
            .tempdir()
            .unwrap();
        let url = etcd.address(&format!("rampart-runtime/{name}"));
        let source = Source::new(tmp.path().join("source"));
        let first_commit = source.commit("the reference cluster, test timing");
        Fixture {
            daemons: Vec::new(),
            etcd,
            url,
            source,
            first_commit,
            tmp,
            max_generation: BTreeMap::new(),
            status_errors: 0,
        }
    }

    /// Start a daemon; a name used before (a restart) gets a log of its own.
    fn spawn(&mut self, name: &str, args: Vec<String>, api: Option<SocketAddr>) {
        let n = self.daemons.iter().filter(|d| d.name == name).count();
        let log = self
            .tmp
            .path()
            .join(format!("{}.{n}.log", name.replace(' ', "-")));
        self.daemons.push(Daemon::start(name, log, &args, api));
    }

    /// `rampart controller --id ID` with `--poll 1s` unless `extra` says otherwise.
    fn controller(&mut self, id: &str, extra: &[&str]) {
        let api = free_addr();
        let mut args: Vec<String> = [
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
                .tmp
                .path()
                .join(format!("state-{id}"))
                .display()
                .to_string(),
            "--fence",
            "sim",
            "--id",
            id,
            "--listen",
            &api.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--poll") {
            args.extend(["--poll".to_string(), "1s".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn(&format!("controller {id}"), args, Some(api));
    }

    fn agent(&mut self, node: &str) {
        let api = free_addr();
        let args = [
            "agent",
            "--node",
            node,
            "--store",
            &self.url,
            "--drivers",
            "sim",
            "--listen",
            &api.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.spawn(&format!("agent {node}"), args, Some(api));
    }

    /// Controller `c1` and an agent on every node.
    fn start_cluster(&mut self) {
        self.controller("c1", &[]);
        for n in NODES {
            self.agent(n);
        }
    }

    /// The daemon of that name started last.
    fn daemon(&self, name: &str) -> &Daemon {
        self.daemons
            .iter()
            .rev()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no daemon {name}"))
    }

    fn kill(&mut self, name: &str) -> Instant {
        let d = self
            .daemons
            .iter_mut()
            .rev()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no daemon {name}"));
        d.kill();
        Instant::now()
    }

    fn api(&self, name: &str) -> SocketAddr {
        self.daemon(name).api.expect("the daemon has an API")
    }

    /// Run `rampart ARGS --store URL`.
    fn rampart(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--store", &self.url])
            .output()
            .expect("run rampart")
    }

    /// `rampart status -o json`, or `None` when it fails (the store is down).
    fn status(&mut self) -> Option<Value> {
        let out = self.rampart(&["status", "-o", "json"]);
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

    /// What must never be seen, whatever the scenario.
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
    }

    /// Poll the status until `pred` holds; returns it and how long that took. Panics with the
    /// last status and the daemons' logs when `within` passes first.
    async fn wait(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        self.wait_from(Instant::now(), what, within, pred).await
    }

    async fn wait_from(
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll the status for `period` and require `pred` of every reading (and at least a few
    /// readings).
    async fn hold(&mut self, what: &str, period: Duration, pred: impl Fn(&Value) -> bool) {
        let start = Instant::now();
        let mut readings = 0;
        while start.elapsed() < period {
            if let Some(s) = self.status() {
                readings += 1;
                if !pred(&s) {
                    panic!(
                        "{what}: broken after {:?}\nstatus: {}\n{}",
                        start.elapsed(),
                        pretty(&s),
                        self.logs()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            readings >= 5,
            "{what}: only {readings} status readings in {period:?}\n{}",
            self.logs()
        );
    }

    /// The tail of every daemon's output, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for d in &self.daemons {
            let text = d.output();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!(
                "--- {} (pid {}, {}) ---\n{}\n",
                d.name,
                d.pid,
                if d.running() { "running" } else { "gone" },
                tail.join("\n")
            ));
        }
        out
    }
}

fn obj(v: &Value) -> Vec<(String, &Value)> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// What the status says

/// VM -> node.
type Placement = BTreeMap<String, String>;

fn other(node: &str) -> &'static str {
    if node == "alpha" {
        "beta"
    } else {
        "alpha"
    }
}

/// The node chosen for each VM.
fn placement_of(s: &Value) -> Placement {
    obj(&s["vms"])
        .into_iter()
        .filter_map(|(vm, l)| l["placed_on"].as_str().map(|n| (vm, n.to_string())))
        .collect()
}

fn with(p: &Placement, changes: &[(&str, &str)]) -> Placement {
    let mut p = p.clone();
    for (vm, n) in changes {
        p.insert(vm.to_string(), n.to_string());
    }
    p
}

fn pinned_on(node: &str) -> impl Iterator<Item = &'static str> + '_ {
    PINNED
        .iter()
        .filter(move |(_, n)| *n == node)
        .map(|(vm, _)| *vm)
}

/// The VM runs on exactly `node`, where it is placed.
fn runs_on(s: &Value, vm: &str, node: &str) -> bool {
    let l = &s["vms"][vm];
    l["state"] == "running" && strs(&l["running_on"]) == [node] && l["placed_on"] == node
}

fn runs_nowhere(s: &Value, vm: &str) -> bool {
    strs(&s["vms"][vm]["running_on"]).is_empty()
}

fn lease(s: &Value, node: &str) -> String {
    s["nodes"][node]["lease"].as_str().unwrap_or("").to_string()
}

/// Every node holds a live lease and runs the assignment it was given.
fn acknowledged(s: &Value) -> bool {
    NODES.iter().all(|n| {
        let x = &s["nodes"][n];
        x["lease"] == "alive"
            && x["assigned_generation"].as_u64().is_some()
            && x["held_generation"] == x["assigned_generation"]
    })
}

/// Every VM runs where `p` says, every node runs its assignment, nothing is pending.
fn converged(s: &Value, p: &Placement) -> bool {
    p.iter().all(|(vm, n)| runs_on(s, vm, n))
        && obj(&s["vms"]).len() == p.len()
        && acknowledged(s)
        && s["pending"].as_array().is_some_and(Vec::is_empty)
}

/// Started: every VM of the reference cluster runs where it is placed, the pinned ones on
/// their own node, and every node runs its assignment.
fn started(s: &Value) -> bool {
    let p = placement_of(s);
    p.len() == HOME.len()
        && FAILOVER.iter().all(|vm| p.contains_key(*vm))
        && PINNED
            .iter()
            .all(|(vm, n)| p.get(*vm).map(String::as_str) == Some(n))
        && converged(s, &p)
}

fn generations(s: &Value) -> BTreeMap<String, u64> {
    obj(&s["nodes"])
        .into_iter()
        .filter_map(|(n, x)| x["assigned_generation"].as_u64().map(|g| (n, g)))
        .collect()
}

fn applied_commit(s: &Value) -> String {
    s["source"]["applied"]["commit"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Where the cluster placed its VMs at startup. Usually the preferences (files on alpha, www
/// on beta), but not always: the planner places a DRBD VM only on a node that has reported
/// its copy UpToDate, so when beta's agent reports before alpha's, files starts on beta and
/// stays there (no failback). The scenarios work from whatever placement it chose.
fn startup_placement(name: &str, s: &Value, took: Duration) -> Placement {
    let p = placement_of(s);
    let home: Placement = HOME
        .iter()
        .map(|(vm, n)| (vm.to_string(), n.to_string()))
        .collect();
    if p == home {
        eprintln!("[{name}] converged {took:.2?} after the daemons started");
    } else {
        eprintln!(
            "[{name}] converged {took:.2?} after the daemons started, NOT on the preferred nodes: {p:?}"
        );
    }
    p
}

/// Starts the reference cluster and waits until it has converged; returns its placement.
async fn converged_cluster(name: &str, etcd_members: usize) -> (Fixture, Placement) {
    let mut f = Fixture::new(name, etcd_members).await;
    f.start_cluster();
    let (s, took) = f
        .wait(
            "the cluster converges at startup",
            Duration::from_secs(30),
            started,
        )
        .await;
    let p = startup_placement(name, &s, took);
    (f, p)
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// 1. Startup: every VM runs on its planned node, every node runs its assignment, the leader
/// and the applied revision show, the daemons' APIs answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_converges() {
    let mut f = Fixture::new("startup", 1).await;
    f.start_cluster();
    let first = f.first_commit.clone();
    let (s, took) = f
        .wait("the cluster converges", Duration::from_secs(30), |s| {
            started(s) && applied_commit(s) == first
        })
        .await;
    let p = startup_placement("startup", &s, took);
    assert_eq!(s["leader"], "c1");
    assert_eq!(s["maintenance"], false);
    assert_eq!(strs(&s["vips"]["www"]), [p["www"].clone()]);
    for vol in FAILOVER {
        let on = &p[vol];
        assert_eq!(strs(&s["volumes"][vol]["primary"]), [on.as_str()], "{vol}");
        assert_eq!(strs(&s["volumes"][vol]["secondary"]), [other(on)], "{vol}");
    }
    for n in NODES {
        assert!(s["nodes"][n]["fenced"].is_null(), "{n} fenced at startup");
    }

    // The text form names the same facts.
    let out = f.rampart(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("leader: c1"), "{text}");
    assert!(
        text.contains(&format!("revision: {}", f.first_commit)),
        "{text}"
    );

    // `rampart diff --cluster`: the manifests against the running cluster. Nothing to fence,
    // nothing for any agent to do (the simulated hosts report no files, so the rendered files
    // show as to be added; that alone is a change).
    let manifests = f.source.dir.join("manifests");
    let out = Command::new(BIN)
        .args([
            "diff",
            &manifests.display().to_string(),
            "--cluster",
            &f.url,
        ])
        .output()
        .expect("run rampart diff --cluster");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("against the cluster observed in {}", f.url)),
        "{text}"
    );
    assert!(!text.contains("fence:"), "{text}");
    assert!(
        !text.contains("start vm") && !text.contains("stop vm"),
        "{text}"
    );

    // Each agent's API: healthy, holding the generation the store assigns it, its host
    // running what the status says.
    let gens = generations(&s);
    for n in NODES {
        let api = f.api(&format!("agent {n}"));
        let (code, _) = http(api, "GET", "/healthz", &[], b"").unwrap();
        assert_eq!(code, 200, "agent {n} /healthz");
        let st = http_json(api, "/status").expect("agent /status");
        assert_eq!(st["node"], n);
        assert_eq!(st["lease_healthy"], true);
        assert_eq!(
            st["held_generation"].as_u64(),
            Some(gens[n]),
            "agent {n}: {st}"
        );
        for (vm, on) in &p {
            let state = &st["host"]["vms"][vm]["state"];
            if on == n {
                assert_eq!(state, "running", "{vm} on {n}: {st}");
            } else {
                assert_ne!(state, "running", "{vm} on {n}: {st}");
            }
        }
        let (_, metrics) = http(api, "GET", "/metrics", &[], b"").unwrap();
        assert!(
            metrics.contains(&format!("rampart_agent_lease_healthy{{node=\"{n}\"}} 1")),
            "{metrics}"
        );
    }
    // The controller's.
    let api = f.api("controller c1");
    assert_eq!(http(api, "GET", "/healthz", &[], b"").unwrap().0, 200);
    let (_, metrics) = http(api, "GET", "/metrics", &[], b"").unwrap();
    assert!(metrics.contains("rampart_controller_leader 1"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "rampart_applied_revision_info{{commit=\"{}\"}} 1",
            f.first_commit
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("rampart_invariant_violations_total 0"),
        "{metrics}"
    );
    // Its status document is refreshed every second.
    let asked = Instant::now();
    while http_json(api, "/status").is_none_or(|cs| cs["leader"] != "c1") {
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "the controller's /status does not name c1 the leader: {:?}",
            http_json(api, "/status")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 2. The agent of the node running `files` is SIGKILLed: its lease expires, the node is
/// fenced (through the simulated fence device), `files` restarts on the other node, the
/// node's pinned VMs show down. Then the node boots again: it gets its pinned VMs back and
/// nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_is_fenced_and_its_vm_fails_over() {
    let (mut f, p) = converged_cluster("failover", 1).await;
    let victim = p["files"].clone();
    let survivor = other(&victim);
    let killed = f.kill(&format!("agent {victim}"));
    let (_, lost) = f
        .wait_from(killed, "the node seen lost", Duration::from_secs(10), |s| {
            lease(s, &victim).starts_with("LOST")
        })
        .await;
    let (_, fenced) = f
        .wait_from(killed, "the node fenced", Duration::from_secs(10), |s| {
            s["nodes"][&victim]["fenced"].is_string()
        })
        .await;
    let (s, moved) = f
        .wait_from(
            killed,
            "files runs on the other node",
            Duration::from_secs(15),
            |s| runs_on(s, "files", survivor),
        )
        .await;
    eprintln!(
        "[failover] after SIGKILL of {victim}'s agent: lost at {lost:.2?}, fenced at {fenced:.2?}, files running on {survivor} at {moved:.2?}"
    );
    // Not before the lease could have expired (the last renewal was at most one renew
    // interval before the kill).
    assert!(
        lost >= LEASE_TTL - RENEW_INTERVAL - Duration::from_millis(100),
        "{victim} seen lost only {lost:?} after its agent died: earlier than its lease could expire"
    );
    let device = format!("{victim}-ipmi");
    let fence = s["nodes"][&victim]["fenced"].as_str().unwrap();
    assert!(fence.contains(&device), "{fence}");
    // The simulated fence device really was told to power the node off.
    let mut raw = f.etcd.raw_client().await;
    let key = format!("rampart-runtime/failover/sim/power-off/{victim}");
    let r = raw.get(key.as_str(), None).await.unwrap();
    assert_eq!(r.kvs().len(), 1, "no simulated power-off at {key}");

    let (s, _) = f
        .wait("the rest settles", Duration::from_secs(10), |s| {
            FAILOVER.iter().all(|vm| runs_on(s, vm, survivor))
                && pinned_on(survivor).all(|vm| runs_on(s, vm, survivor))
                && strs(&s["vips"]["www"]) == [survivor]
                && strs(&s["volumes"]["files"]["primary"]) == [survivor]
        })
        .await;
    for vm in pinned_on(&victim) {
        assert_eq!(
            s["vms"][vm]["state"],
            format!("DOWN ({victim} lost)"),
            "pinned {vm}: {}",
            s["vms"][vm]
        );
        assert!(runs_nowhere(&s, vm));
    }
    for n in [survivor, "witness"] {
        assert_eq!(lease(&s, n), "alive");
        assert_eq!(
            s["nodes"][n]["held_generation"],
            s["nodes"][n]["assigned_generation"]
        );
    }
    let out = f.daemon("controller c1").output();
    let line = format!("fence {victim} level 1 via {device}: confirmed off");
    assert!(out.contains(&line), "{out}");

    // The node boots again (its agent starts): it takes a lease, its fence record is
    // cleared, its pinned VMs run there again, and files stays where it is (no failback, S6).
    f.agent(&victim);
    let now = with(&p, &[("files", survivor), ("www", survivor)]);
    let (s, took) = f
        .wait("the node is back", Duration::from_secs(15), |s| {
            converged(s, &now)
        })
        .await;
    eprintln!("[failover] {victim}'s agent started again: converged {took:.2?} later");
    assert!(
        s["nodes"][&victim]["fenced"].is_null(),
        "{}",
        s["nodes"][&victim]
    );
    let out = f.daemon("controller c1").output();
    assert!(out.contains(&format!("node {victim} is back")), "{out}");
    assert_eq!(
        out.matches(&format!("fence {victim} level")).count(),
        1,
        "fenced once:\n{out}"
    );
}

/// 3. A pushed revision is applied (a new VirtualIP follows `files`); an invalid one (a VM
/// on an undefined volume) is refused with reasons naming the file, and the cluster stays on
/// the last good revision; a fix after it is applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_revisions_apply_and_invalid_ones_are_refused() {
    let (mut f, p) = converged_cluster("revisions", 1).await;
    f.source.write("manifests/vips/files.yaml", FILES_VIP);
    let good = f.source.commit("files gets an address");
    let pushed = Instant::now();
    let (s, took) = f
        .wait_from(
            pushed,
            "the new revision converges",
            Duration::from_secs(15),
            |s| {
                applied_commit(s) == good
                    && strs(&s["vips"]["files"]) == [p["files"].clone()]
                    && converged(s, &p)
            },
        )
        .await;
    eprintln!("[revisions] a pushed revision converged {took:.2?} after the commit (poll 1s)");
    assert!(s["source"]["refused"].is_null());
    let gens = generations(&s);

    f.source.write("manifests/vms/db.yaml", DB_VM);
    let bad = f.source.commit("db, on a volume nobody defined");
    let (s, took) = f
        .wait(
            "the invalid revision is refused",
            Duration::from_secs(15),
            |s| s["source"]["refused"]["commit"] == bad.as_str(),
        )
        .await;
    eprintln!("[revisions] an invalid revision was refused {took:.2?} after the commit");
    let reasons = strs(&s["source"]["refused"]["reasons"]);
    assert!(
        reasons.iter().any(|r| r.contains("manifests/vms/db.yaml:")
            && r.contains("`db`")
            && r.contains("not defined")),
        "the reasons name the file and the volume: {reasons:#?}"
    );
    assert_eq!(
        applied_commit(&s),
        good,
        "the last good revision stays applied"
    );
    let text = String::from_utf8_lossy(&f.rampart(&["status"]).stdout).into_owned();
    assert!(text.contains(&format!("REFUSED revision {bad}")), "{text}");
    // Nothing of it is applied, now or a few polls later.
    f.hold(
        "the cluster stays on the last good revision",
        Duration::from_millis(2500),
        |s| {
            converged(s, &p)
                && s["vms"].get("db").is_none()
                && generations(s) == gens
                && applied_commit(s) == good
        },
    )
    .await;
    let out = f.daemon("controller c1").output();
    assert!(out.contains("refused a revision"), "{out}");

    f.source.remove("manifests/vms/db.yaml");
    let fixed = f.source.commit("no db after all");
    let (s, _) = f
        .wait(
            "the fixed revision is applied",
            Duration::from_secs(15),
            |s| applied_commit(s) == fixed,
        )
        .await;
    assert!(s["source"]["refused"].is_null(), "{}", s["source"]);
}

/// 4. With two controllers, the leader is SIGKILLed: the other takes over and a change
/// pushed afterwards still converges; no generation goes backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_controller_takes_over() {
    let mut f = Fixture::new("takeover", 1).await;
    f.controller("c1", &[]);
    f.controller("c2", &[]);
    for n in NODES {
        f.agent(n);
    }
    let (s, took) = f
        .wait("the cluster converges", Duration::from_secs(30), started)
        .await;
    let p = startup_placement("takeover", &s, took);
    let leader = s["leader"].as_str().expect("a leader").to_string();
    let standby = if leader == "c1" { "c2" } else { "c1" };
    let before = generations(&s);
    let killed = f.kill(&format!("controller {leader}"));
    let (_, took) = f
        .wait_from(killed, "the standby leads", Duration::from_secs(10), |s| {
            s["leader"] == standby
        })
        .await;
    eprintln!("[takeover] {standby} leads {took:.2?} after {leader} was killed");

    f.source.write("manifests/vips/files.yaml", FILES_VIP);
    let commit = f.source.commit("files gets an address");
    let (s, took) = f
        .wait(
            "the change converges under the new leader",
            Duration::from_secs(15),
            |s| {
                applied_commit(s) == commit
                    && strs(&s["vips"]["files"]) == [p["files"].clone()]
                    && converged(s, &p)
            },
        )
        .await;
    eprintln!("[takeover] a change pushed after the takeover converged in {took:.2?}");
    let after = generations(&s);
    for (n, g) in &before {
        assert!(
            after[n] >= *g,
            "{n}: generation {g} before, {} after",
            after[n]
        );
    }
    assert!(
        after[&p["files"]] > before[&p["files"]],
        "the node running files was given its new address"
    );
    let out = f.daemon(&format!("controller {standby}")).output();
    assert!(out.contains(&format!("{standby} leads")), "{out}");
}

/// 5. etcd with three members: a follower is killed (and restarted), then the leader, while
/// the agents run: no lease is lost, nothing is fenced, nothing moves, no agent self-demotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_loss_loses_no_lease() {
    let (mut f, p) = converged_cluster("members", 3).await;
    let s = f.status().unwrap();
    let gens = generations(&s);
    let steady = move |s: &Value| {
        NODES
            .iter()
            .all(|n| lease(s, n) == "alive" && s["nodes"][n]["fenced"].is_null())
            && converged(s, &p)
            && generations(s) == gens
    };

    let leader = f.etcd.leader().await;
    let follower = (leader + 1) % 3;
    f.etcd.kill(follower);
    f.hold("with a follower down", LEASE_TTL * 2, steady.clone())
        .await;
    f.etcd.restart(follower).await;

    let leader = f.etcd.leader().await;
    f.etcd.kill(leader);
    let killed = Instant::now();
    f.hold("with the leader down", LEASE_TTL * 2, steady.clone())
        .await;
    eprintln!(
        "[members] held steady {:.2?} after the etcd leader was killed ({} status reads failed)",
        killed.elapsed(),
        f.status_errors
    );
    for n in NODES {
        let out = f.daemon(&format!("agent {n}")).output();
        assert!(
            !out.contains("self-demotion"),
            "agent {n} demoted itself:\n{out}"
        );
        let st = http_json(f.api(&format!("agent {n}")), "/status").unwrap();
        assert_eq!(st["self_demotions"], 0, "{st}");
        assert_eq!(st["lease_healthy"], true, "{st}");
    }
    let out = f.daemon("controller c1").output();
    assert!(!out.contains("lost: its lease expired"), "{out}");
    assert!(!out.contains("fence "), "{out}");
}

/// 6. The only etcd member dies: every agent stops everything (S3) before its lease could
/// run out; etcd restarts on its data directory: the agents take their leases again and the
/// cluster converges as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_self_demote_without_store_and_recover() {
    let (mut f, p) = converged_cluster("outage", 1).await;
    f.etcd.kill(0);
    let killed = Instant::now();
    // An agent's host is clean: no VM running, no address, no Primary.
    let clean = |st: &Value| {
        let h = &st["host"];
        st["lease_healthy"] == false
            && obj(&h["vms"]).iter().all(|(_, v)| v["state"] != "running")
            && h["addresses"].as_array().is_none_or(Vec::is_empty)
            && obj(&h["volumes"])
                .iter()
                .all(|(_, v)| v["role"] != "Primary")
    };
    let mut demoted: BTreeMap<&str, Duration> = BTreeMap::new();
    while demoted.len() < NODES.len() {
        for n in NODES {
            if demoted.contains_key(n) {
                continue;
            }
            if let Some(st) = http_json(f.api(&format!("agent {n}")), "/status") {
                if clean(&st) {
                    demoted.insert(n, killed.elapsed());
                }
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "agents not all self-demoted: {demoted:?}\n{}",
            f.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("[outage] hosts emptied after etcd died: {demoted:?}");
    for (n, t) in &demoted {
        assert!(
            *t < LEASE_TTL,
            "agent {n} emptied its host {t:?} after the store died: later than its lease TTL {LEASE_TTL:?}"
        );
    }
    for n in ["alpha", "beta"] {
        let out = f.daemon(&format!("agent {n}")).output();
        assert!(out.contains("self-demotion"), "agent {n}:\n{out}");
        let st = http_json(f.api(&format!("agent {n}")), "/status").unwrap();
        assert!(st["self_demotions"].as_u64() >= Some(1), "{st}");
        let (code, _) = http(f.api(&format!("agent {n}")), "GET", "/healthz", &[], b"").unwrap();
        assert_eq!(code, 503, "agent {n} without a lease is not healthy");
    }
    for (vm, n) in &p {
        let out = f.daemon(&format!("agent {n}")).output();
        assert!(out.contains(&format!("stop vm {vm}")), "agent {n}:\n{out}");
    }

    let restarted = Instant::now();
    f.etcd.restart(0).await;
    let healthy = restarted.elapsed();
    for n in NODES {
        let api = f.api(&format!("agent {n}"));
        loop {
            if http_json(api, "/status").is_some_and(|st| st["lease_healthy"] == true) {
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(15),
                "agent {n} takes no lease again\n{}",
                f.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let leases = restarted.elapsed();
    let (_, took) = f
        .wait_from(
            restarted,
            "the cluster converges again",
            Duration::from_secs(20),
            |s| converged(s, &p),
        )
        .await;
    eprintln!(
        "[outage] after etcd was started again: etcd healthy at {healthy:.2?}, agents holding leases at {leases:.2?}, converged at {took:.2?}"
    );
    for d in &f.daemons {
        assert!(d.running(), "{} died:\n{}", d.name, d.output());
    }
}

/// 7. The admin commands: drain moves www (and files, if there) off its node, stopped there
/// and started on the other, and stops the node's pinned VMs; undrain brings those back and
/// nothing fails back; maintenance freezes placement; `fence confirm` refuses without --yes
/// and for a node with a live lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands() {
    let (mut f, p) = converged_cluster("admin", 1).await;

    let out = f.rampart(&["fence", "confirm", "alpha"]);
    assert!(
        !out.status.success(),
        "fence confirm without --yes succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--yes"), "{err}");
    let out = f.rampart(&["fence", "confirm", "alpha", "--yes"]);
    assert!(
        !out.status.success(),
        "fence confirm of a live node succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("live lease"), "{err}");
    let s = f.status().unwrap();
    assert!(
        s["nodes"]["alpha"]["fenced"].is_null(),
        "{}",
        s["nodes"]["alpha"]
    );

    let w = p["www"].clone();
    let o = other(&w);
    let out = f.rampart(&["drain", &w]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = format!("stopped ({w} drained)");
    let (_, took) = f
        .wait(
            "www moves off the drained node",
            Duration::from_secs(15),
            |s| {
                FAILOVER.iter().all(|vm| runs_on(s, vm, o))
                    && strs(&s["vips"]["www"]) == [o]
                    && pinned_on(o).all(|vm| runs_on(s, vm, o))
                    && pinned_on(&w)
                        .all(|vm| runs_nowhere(s, vm) && s["vms"][vm]["state"] == stopped)
                    && s["nodes"][&w]["drained"] == true
                    && acknowledged(s)
            },
        )
        .await;
    eprintln!("[admin] drain {w}: www running on {o} {took:.2?} after the command");
    let out = f.daemon(&format!("agent {w}")).output();
    assert!(out.contains("stop vm www"), "{out}");
    let out = f.daemon(&format!("agent {o}")).output();
    assert!(out.contains("start vm www"), "{out}");

    // Undrained, the node gets its pinned VMs back and nothing else (no failback, S6).
    let out = f.rampart(&["undrain", &w]);
    assert!(out.status.success());
    let now = with(&p, &[("www", o), ("files", o)]);
    f.wait(
        "the pinned VMs are back; www stays",
        Duration::from_secs(15),
        |s| converged(s, &now) && s["nodes"][&w]["drained"] == false,
    )
    .await;

    let out = f.rampart(&["maintenance", "on"]);
    assert!(out.status.success());
    let (s, _) = f
        .wait("maintenance shows", Duration::from_secs(10), |s| {
            s["maintenance"] == true
                && strs(&s["pending"])
                    .iter()
                    .any(|p| p.contains("maintenance mode"))
        })
        .await;
    let gens = generations(&s);
    let text = String::from_utf8_lossy(&f.rampart(&["status"]).stdout).into_owned();
    assert!(text.contains("MAINTENANCE MODE"), "{text}");
    let out = f.rampart(&["drain", o]);
    assert!(out.status.success());
    f.hold(
        "maintenance freezes placement (a drain meanwhile)",
        Duration::from_millis(2500),
        |s| {
            generations(s) == gens
                && now.iter().all(|(vm, n)| runs_on(s, vm, n))
                && s["nodes"][o]["drained"] == true
        },
    )
    .await;
    let out = f.rampart(&["maintenance", "off"]);
    assert!(out.status.success());
    let stopped = format!("stopped ({o} drained)");
    let (_, took) = f
        .wait(
            "after maintenance, the drain goes ahead",
            Duration::from_secs(15),
            |s| {
                s["maintenance"] == false
                    && FAILOVER.iter().all(|vm| runs_on(s, vm, &w))
                    && pinned_on(o)
                        .all(|vm| runs_nowhere(s, vm) && s["vms"][vm]["state"] == stopped)
                    && acknowledged(s)
            },
        )
        .await;
    eprintln!("[admin] maintenance off: {o} drained {took:.2?} later");

    let out = f.rampart(&["undrain", o]);
    assert!(out.status.success());
    let now = with(&p, &[("www", &w), ("files", &w)]);
    f.wait(
        "the pinned VMs are back; files and www stay",
        Duration::from_secs(15),
        |s| converged(s, &now) && s["nodes"][o]["drained"] == false,
    )
    .await;
}

/// 8. The webhook: a POST with a wrong signature gets 401 and changes nothing; a signed one
/// gets 202 and the new revision at once (the poll interval is an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_triggers_an_immediate_sync() {
    let mut f = Fixture::new("webhook", 1).await;
    let secret_file = f.tmp.path().join("webhook-secret");
    std::fs::write(&secret_file, "s3cret-for-tests\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    f.controller(
        "c1",
        &[
            "--poll",
            "1h",
            "--webhook-secret-file",
            &secret_file.display().to_string(),
        ],
    );
    for n in NODES {
        f.agent(n);
    }
    let (s, took) = f
        .wait("the cluster converges", Duration::from_secs(30), started)
        .await;
    let p = startup_placement("webhook", &s, took);
    f.source.write("manifests/vips/files.yaml", FILES_VIP);
    let commit = f.source.commit("files gets an address");
    let api = f.api("controller c1");
    let body = br#"{"ref":"refs/heads/main"}"#;
    let hook = |sig: Option<&str>| {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "push"),
        ];
        if let Some(s) = sig {
            headers.push(("X-Hub-Signature-256", s));
        }
        http(api, "POST", "/hooks/git", &headers, body).unwrap().0
    };
    assert_eq!(hook(None), 401, "unsigned");
    let wrong = rampart::source::webhook::sign(b"not-the-secret", body);
    assert_eq!(hook(Some(&wrong)), 401, "wrong signature");
    f.hold(
        "a refused webhook call syncs nothing",
        Duration::from_millis(1500),
        |s| applied_commit(s) != commit,
    )
    .await;
    let out = f.daemon("controller c1").output();
    assert!(out.contains("git webhook refused"), "{out}");

    let right = rampart::source::webhook::sign(b"s3cret-for-tests", body);
    let sent = Instant::now();
    assert_eq!(hook(Some(&right)), 202);
    let (_, took) = f
        .wait_from(
            sent,
            "the signed webhook call applies the commit",
            Duration::from_secs(5),
            |s| applied_commit(s) == commit,
        )
        .await;
    let (_, converged_at) = f
        .wait_from(sent, "and it converges", Duration::from_secs(15), |s| {
            strs(&s["vips"]["files"]) == [p["files"].clone()] && converged(s, &p)
        })
        .await;
    eprintln!(
        "[webhook] signed call: revision applied {took:.2?}, converged {converged_at:.2?} after it"
    );
    let (_, metrics) = http(api, "GET", "/metrics", &[], b"").unwrap();
    assert!(
        metrics.contains(&format!(
            "rampart_applied_revision_info{{commit=\"{commit}\"}} 1"
        )),
        "{metrics}"
    );
}

/// A hypervisor whose agent starts a little after the rest of the cluster (a slower boot)
/// must simply join, not be fenced.
///
/// The controller's first plan gives alpha an assignment (its DRBD replicas Secondary) before
/// alpha ever held a lease. A lease-less node counts as lost only if its assignment may hold
/// something only one node may hold (a VM, an address, a Primary role) or it has reported:
/// Secondary replicas alone don't make a never-seen node something to fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_agent_joins_without_being_fenced() {
    let mut f = Fixture::new("late", 1).await;
    f.controller("c1", &[]);
    f.agent("beta");
    f.agent("witness");
    f.wait(
        "beta and witness run their assignments, alpha has one waiting",
        Duration::from_secs(30),
        |s| {
            ["beta", "witness"].iter().all(|n| {
                s["nodes"][n]["lease"] == "alive"
                    && s["nodes"][n]["held_generation"] == s["nodes"][n]["assigned_generation"]
            }) && s["nodes"]["alpha"]["assigned_generation"].is_u64()
        },
    )
    .await;
    f.hold("alpha, not started yet, is not fenced", LEASE_TTL, |s| {
        s["nodes"]["alpha"]["fenced"].is_null()
    })
    .await;
    f.agent("alpha");
    f.wait("the cluster converges", Duration::from_secs(30), started)
        .await;
    let out = f.daemon("controller c1").output();
    assert!(!out.contains("fence alpha"), "{out}");
    let out = f.daemon("agent alpha").output();
    assert!(!out.contains("power-off"), "{out}");
}

/// DRBD's fence-peer handler on the Primary of `files` asks the cluster to fence its peer:
/// the controller fences it (the simulated power-off stops that node's agent), the handler
/// exits 7 ("peer fenced"), and the work stays where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drbd_fence_peer_handler_gets_the_peer_fenced() {
    let (mut f, p) = converged_cluster("fencepeer", 1).await;
    let primary = p["files"].clone();
    let peer = other(&primary).to_string();
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("drbd-fence-peer")
        .arg("--timeout")
        .arg("20s")
        .env_clear()
        .env("RAMPART_STORE", &f.url)
        .env("DRBD_RESOURCE", "files")
        .env("DRBD_MY_NODE_ID", "0")
        .env("DRBD_PEER_NODE_ID", "1")
        .env("DRBD_NODE_ID_0", &primary)
        .env("DRBD_NODE_ID_1", &peer)
        .output()
        .expect("run rampart drbd-fence-peer");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("[fence-peer] handler answered in {took:.2?}:\n{stderr}");
    assert_eq!(
        out.status.code(),
        Some(7),
        "exit 7 = peer fenced\n{stderr}\n{}",
        f.logs()
    );
    assert!(stderr.contains(&format!("{peer} is fenced")), "{stderr}");
    let log = f.daemon("controller c1").output();
    assert!(
        log.contains(&format!(
            "fence {peer} (asked by {primary} for DRBD resource files)"
        )),
        "{log}"
    );
    // The simulated fence device really powered the peer off.
    let mut raw = f.etcd.raw_client().await;
    let key = format!("rampart-runtime/fencepeer/sim/power-off/{peer}");
    let r = raw.get(key.as_str(), None).await.unwrap();
    assert_eq!(r.kvs().len(), 1, "no simulated power-off at {key}");
    // The Primary keeps its work: nothing moved towards the fenced node.
    let (s, _) = f
        .wait("the peer seen lost", Duration::from_secs(15), |s| {
            lease(s, &peer).starts_with("LOST")
        })
        .await;
    assert!(runs_on(&s, "files", &primary), "files left {primary}");
    // A second handler call for the same incident is answered by the same fence.
    let again = Command::new(BIN)
        .args(["drbd-fence-peer", "--timeout", "20s"])
        .env_clear()
        .env("RAMPART_STORE", &f.url)
        .env("DRBD_RESOURCE", "files")
        .env("DRBD_PEER_NODE_ID", "1")
        .env("DRBD_NODE_ID_0", &primary)
        .env("DRBD_NODE_ID_1", &peer)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// The handler without a store to ask keeps I/O frozen (exit 1) and says why.
#[test]
fn drbd_fence_peer_without_a_store_keeps_io_frozen() {
    let out = Command::new(BIN)
        .args([
            "drbd-fence-peer",
            "--store",
            "etcd://127.0.0.1:1/x",
            "--timeout",
            "1s",
        ])
        .env_clear()
        .env("DRBD_RESOURCE", "files")
        .env("DRBD_PEER_NODE_ID", "1")
        .env("DRBD_NODE_ID_1", "beta")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("I/O stays frozen"), "{stderr}");
    let no_env = Command::new(BIN)
        .args(["drbd-fence-peer", "--store", "etcd://127.0.0.1:1/x"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(no_env.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_env.stderr).contains("DRBD_RESOURCE"));
}
