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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

/// Where each VM of the reference cluster runs when all is well.
const HOME: [(&str, &str); 6] = [
    ("files", "alpha"),
    ("ns1", "alpha"),
    ("shell1", "alpha"),
    ("www", "beta"),
    ("ns2", "beta"),
    ("shell2", "beta"),
];

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
        if self.killed {
            return;
        }
        self.killed = true;
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !process_alive(self.pid),
            "{} (pid {}) survived SIGKILL",
            self.name,
            self.pid
        );
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
        self.kill();
    }
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
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().unwrap()
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
    (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
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
        s.edit("manifests/cluster.yaml", "fenceTimeout: 60s", "fenceTimeout: 5s");
        for n in ["alpha", "beta"] {
            s.edit(&format!("manifests/nodes/{n}.yaml"), "timeout: 20s", "timeout: 3s");
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

    fn spawn(&mut self, name: &str, args: Vec<String>, api: Option<SocketAddr>) {
        let log = self
            .tmp
            .path()
            .join(format!("{}.log", name.replace(' ', "-")));
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
            &self.tmp.path().join(format!("state-{id}")).display().to_string(),
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
        if !extra.iter().any(|a| *a == "--poll") {
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

    fn daemon(&self, name: &str) -> &Daemon {
        self.daemons
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no daemon {name}"))
    }

    fn kill(&mut self, name: &str) -> Instant {
        let d = self
            .daemons
            .iter_mut()
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
        let mut broken = Vec::new();
        for (vm, l) in obj(&s["vms"]) {
            if l["running_on"].as_array().map_or(0, Vec::len) > 1 {
                broken.push(format!("S1: vm {vm} runs on {}", l["running_on"]));
            }
        }
        for (vol, l) in obj(&s["volumes"]) {
            if l["primary"].as_array().map_or(0, Vec::len) > 1 {
                broken.push(format!("S1: volume {vol} is Primary on {}", l["primary"]));
            }
        }
        for (vip, on) in obj(&s["vips"]) {
            if on.as_array().map_or(0, Vec::len) > 1 {
                broken.push(format!("S1: address {vip} is held by {on}"));
            }
        }
        for (n, x) in obj(&s["nodes"]) {
            if let Some(g) = x["assigned_generation"].as_u64() {
                let max = self.max_generation.entry(n.clone()).or_default();
                if g < *max {
                    broken.push(format!(
                        "S4: the assignment of {n} went back from generation {max} to {g}"
                    ));
                }
                *max = (*max).max(g);
            }
        }
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
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// What the status says

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

/// Every VM runs where `placement` says, every node runs its assignment, nothing is pending.
fn converged(s: &Value, placement: &[(&str, &str)]) -> bool {
    placement.iter().all(|(vm, n)| runs_on(s, vm, n))
        && obj(&s["vms"]).len() == placement.len()
        && acknowledged(s)
        && s["pending"].as_array().is_some_and(Vec::is_empty)
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

fn home_with(changes: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    HOME.iter()
        .map(|(vm, n)| {
            let n = changes
                .iter()
                .find(|(v, _)| v == vm)
                .map_or(*n, |(_, to)| *to);
            (*vm, n)
        })
        .collect()
}

/// Starts the reference cluster and waits until it has converged.
async fn converged_cluster(name: &str, etcd_members: usize) -> Fixture {
    let mut f = Fixture::new(name, etcd_members).await;
    f.start_cluster();
    let (_, took) = f
        .wait(
            "the cluster converges at startup",
            Duration::from_secs(30),
            |s| converged(s, &HOME),
        )
        .await;
    eprintln!("[{name}] converged {took:.2?} after the daemons started");
    f
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
            converged(s, &HOME) && applied_commit(s) == first
        })
        .await;
    eprintln!("[startup] converged {took:.2?} after the daemons started");
    assert_eq!(s["leader"], "c1");
    assert_eq!(applied_commit(&s), f.first_commit);
    assert_eq!(s["maintenance"], false);
    assert_eq!(strs(&s["vips"]["www"]), ["beta"]);
    assert_eq!(strs(&s["volumes"]["files"]["primary"]), ["alpha"]);
    assert_eq!(strs(&s["volumes"]["files"]["secondary"]), ["beta"]);
    assert_eq!(strs(&s["volumes"]["www"]["primary"]), ["beta"]);
    assert_eq!(strs(&s["volumes"]["www"]["secondary"]), ["alpha"]);
    for n in NODES {
        assert!(s["nodes"][n]["fenced"].is_null(), "{n} fenced at startup");
    }

    // The text form names the same facts.
    let out = f.rampart(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("leader: c1"), "{text}");
    assert!(text.contains(&format!("revision: {}", f.first_commit)), "{text}");

    // Each agent's API: healthy, holding the generation the store assigns it.
    let gens = generations(&s);
    for n in NODES {
        let api = f.api(&format!("agent {n}"));
        let (code, _) = http(api, "GET", "/healthz", &[], b"").unwrap();
        assert_eq!(code, 200, "agent {n} /healthz");
        let st = http_json(api, "/status").expect("agent /status");
        assert_eq!(st["node"], n);
        assert_eq!(st["lease_healthy"], true);
        assert_eq!(st["held_generation"].as_u64(), Some(gens[n]), "agent {n}: {st}");
        let (_, metrics) = http(api, "GET", "/metrics", &[], b"").unwrap();
        assert!(
            metrics.contains(&format!("rampart_agent_lease_healthy{{node=\"{n}\"}} 1")),
            "{metrics}"
        );
    }
    let st = http_json(f.api("agent alpha"), "/status").unwrap();
    for vm in ["files", "ns1", "shell1"] {
        assert_eq!(st["host"]["vms"][vm]["state"], "running", "alpha's host: {st}");
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
    let cs = http_json(api, "/status").expect("controller /status");
    assert_eq!(cs["leader"], "c1");
}

/// 2. alpha's agent is SIGKILLed: its lease expires, alpha is fenced (through the simulated
/// fence device), `files` restarts on beta, alpha's pinned VMs show down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_is_fenced_and_its_vm_fails_over() {
    let mut f = converged_cluster("failover", 1).await;
    let killed = f.kill("agent alpha");
    let (_, lost) = f
        .wait_from(killed, "alpha seen lost", Duration::from_secs(10), |s| {
            lease(s, "alpha").starts_with("LOST")
        })
        .await;
    let (_, fenced) = f
        .wait_from(killed, "alpha fenced", Duration::from_secs(10), |s| {
            s["nodes"]["alpha"]["fenced"].is_string()
        })
        .await;
    let (s, moved) = f
        .wait_from(killed, "files runs on beta", Duration::from_secs(15), |s| {
            runs_on(s, "files", "beta")
        })
        .await;
    eprintln!(
        "[failover] after SIGKILL of alpha's agent: lost at {lost:.2?}, fenced at {fenced:.2?}, files running on beta at {moved:.2?}"
    );
    // Not before the lease could have expired (the last renewal was at most one renew
    // interval before the kill).
    assert!(
        lost >= LEASE_TTL - RENEW_INTERVAL - Duration::from_millis(100),
        "alpha seen lost only {lost:?} after its agent died: earlier than its lease could expire"
    );
    let fence = s["nodes"]["alpha"]["fenced"].as_str().unwrap();
    assert!(fence.contains("alpha-ipmi"), "{fence}");
    // The simulated fence device really was told to power alpha off.
    let mut raw = f.etcd.raw_client().await;
    let key = "rampart-runtime/failover/sim/power-off/alpha";
    let r = raw.get(key, None).await.unwrap();
    assert_eq!(r.kvs().len(), 1, "no simulated power-off of alpha at {key}");

    let (s, _) = f
        .wait("the rest settles", Duration::from_secs(10), |s| {
            ["files", "www", "ns2", "shell2"]
                .iter()
                .all(|vm| runs_on(s, vm, "beta"))
                && strs(&s["vips"]["www"]) == ["beta"]
                && strs(&s["volumes"]["files"]["primary"]) == ["beta"]
        })
        .await;
    for vm in ["ns1", "shell1"] {
        assert_eq!(
            s["vms"][vm]["state"], "DOWN (alpha lost)",
            "pinned {vm}: {}",
            s["vms"][vm]
        );
        assert!(runs_nowhere(&s, vm));
    }
    for n in ["beta", "witness"] {
        assert_eq!(lease(&s, n), "alive");
        assert_eq!(
            s["nodes"][n]["held_generation"],
            s["nodes"][n]["assigned_generation"]
        );
    }
    let out = f.daemon("controller c1").output();
    assert!(out.contains("fence alpha level 1 via alpha-ipmi: confirmed off"), "{out}");
}

/// 3. A pushed revision is applied (a new VirtualIP follows `files`); an invalid one (a VM
/// on an undefined volume) is refused with reasons naming the file, and the cluster stays on
/// the last good revision; a fix after it is applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_revisions_apply_and_invalid_ones_are_refused() {
    let mut f = converged_cluster("revisions", 1).await;
    f.source.write("manifests/vips/files.yaml", FILES_VIP);
    let good = f.source.commit("files gets an address");
    let pushed = Instant::now();
    let (s, took) = f
        .wait_from(pushed, "the new revision converges", Duration::from_secs(15), |s| {
            applied_commit(s) == good && strs(&s["vips"]["files"]) == ["alpha"] && converged(s, &HOME)
        })
        .await;
    eprintln!("[revisions] a pushed revision converged {took:.2?} after the commit (poll 1s)");
    assert!(s["source"]["refused"].is_null());
    let gens = generations(&s);

    f.source.write("manifests/vms/db.yaml", DB_VM);
    let bad = f.source.commit("db, on a volume nobody defined");
    let (s, took) = f
        .wait("the invalid revision is refused", Duration::from_secs(15), |s| {
            s["source"]["refused"]["commit"] == bad.as_str()
        })
        .await;
    eprintln!("[revisions] an invalid revision was refused {took:.2?} after the commit");
    let reasons = strs(&s["source"]["refused"]["reasons"]);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("vms/db.yaml") && r.contains("`db`") && r.contains("not defined")),
        "the reasons name the file and the volume: {reasons:#?}"
    );
    assert_eq!(applied_commit(&s), good, "the last good revision stays applied");
    let text = String::from_utf8_lossy(&f.rampart(&["status"]).stdout).into_owned();
    assert!(text.contains(&format!("REFUSED revision {bad}")), "{text}");
    // Nothing of it is applied, now or a few polls later.
    f.hold(
        "the cluster stays on the last good revision",
        Duration::from_millis(2500),
        |s| {
            converged(s, &HOME)
                && s["vms"].get("db").is_none()
                && generations(s) == gens
                && applied_commit(s) == good
        },
    )
    .await;

    f.source.remove("manifests/vms/db.yaml");
    let fixed = f.source.commit("no db after all");
    let (s, _) = f
        .wait("the fixed revision is applied", Duration::from_secs(15), |s| {
            applied_commit(s) == fixed
        })
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
    let (s, _) = f
        .wait("the cluster converges", Duration::from_secs(30), |s| {
            converged(s, &HOME)
        })
        .await;
    let leader = s["leader"].as_str().expect("a leader").to_string();
    let other = if leader == "c1" { "c2" } else { "c1" };
    let before = generations(&s);
    let killed = f.kill(&format!("controller {leader}"));
    let (_, took) = f
        .wait_from(killed, "the standby leads", Duration::from_secs(10), |s| {
            s["leader"] == other
        })
        .await;
    eprintln!("[takeover] {other} leads {took:.2?} after {leader} was killed");

    f.source.write("manifests/vips/files.yaml", FILES_VIP);
    let commit = f.source.commit("files gets an address");
    let (s, took) = f
        .wait("the change converges under the new leader", Duration::from_secs(15), |s| {
            applied_commit(s) == commit && strs(&s["vips"]["files"]) == ["alpha"] && converged(s, &HOME)
        })
        .await;
    eprintln!("[takeover] a change pushed after the takeover converged in {took:.2?}");
    let after = generations(&s);
    for (n, g) in &before {
        assert!(after[n] >= *g, "{n}: generation {g} before, {} after", after[n]);
    }
    assert!(after["alpha"] > before["alpha"], "alpha was given the new address");
    let out = f.daemon(&format!("controller {other}")).output();
    assert!(out.contains(&format!("{other} leads")), "{out}");
}

/// 5. etcd with three members: a follower is killed (and restarted), then the leader, while
/// the agents run: no lease is lost, nothing is fenced, nothing moves, no agent self-demotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_loss_loses_no_lease() {
    let mut f = converged_cluster("members", 3).await;
    let s = f.status().unwrap();
    let gens = generations(&s);
    let steady = move |s: &Value| {
        NODES.iter().all(|n| lease(s, n) == "alive" && s["nodes"][n]["fenced"].is_null())
            && converged(s, &HOME)
            && generations(s) == gens
    };

    let leader = f.etcd.leader().await;
    let follower = (leader + 1) % 3;
    f.etcd.kill(follower);
    f.hold(
        "with a follower down",
        LEASE_TTL * 2,
        steady.clone(),
    )
    .await;
    f.etcd.restart(follower).await;

    let leader = f.etcd.leader().await;
    f.etcd.kill(leader);
    let killed = Instant::now();
    f.hold("with the leader down", LEASE_TTL * 2, steady.clone()).await;
    eprintln!(
        "[members] held steady {:.2?} after the etcd leader was killed ({} status reads failed)",
        killed.elapsed(),
        f.status_errors
    );
    for n in NODES {
        let out = f.daemon(&format!("agent {n}")).output();
        assert!(!out.contains("self-demotion"), "agent {n} demoted itself:\n{out}");
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
    let mut f = converged_cluster("outage", 1).await;
    f.etcd.kill(0);
    let killed = Instant::now();
    // An agent's host is clean: no VM running, no address, no Primary.
    let clean = |st: &Value| {
        let h = &st["host"];
        st["lease_healthy"] == false
            && obj(&h["vms"]).iter().all(|(_, v)| v["state"] != "running")
            && h["addresses"].as_array().is_none_or(Vec::is_empty)
            && obj(&h["volumes"]).iter().all(|(_, v)| v["role"] != "Primary")
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
    assert!(f.daemon("agent alpha").output().contains("stop vm files"));
    assert!(f.daemon("agent beta").output().contains("stop vm www"));

    f.etcd.restart(0).await;
    let restarted = Instant::now();
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
        .wait_from(restarted, "the cluster converges again", Duration::from_secs(20), |s| {
            converged(s, &HOME)
        })
        .await;
    eprintln!("[outage] after etcd restarted: agents healthy at {leases:.2?}, converged at {took:.2?}");
    for d in &f.daemons {
        assert!(d.running(), "{} died:\n{}", d.name, d.output());
    }
}

/// 7. The admin commands: drain moves www off beta (stopped there, started on alpha) and
/// stops beta's pinned VMs; undrain brings those back and nothing fails back; maintenance
/// freezes placement; `fence confirm` refuses without --yes and for a node with a live lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands() {
    let mut f = converged_cluster("admin", 1).await;

    let out = f.rampart(&["fence", "confirm", "alpha"]);
    assert!(!out.status.success(), "fence confirm without --yes succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--yes"), "{err}");
    let out = f.rampart(&["fence", "confirm", "alpha", "--yes"]);
    assert!(!out.status.success(), "fence confirm of a live node succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("live lease"), "{err}");
    let s = f.status().unwrap();
    assert!(s["nodes"]["alpha"]["fenced"].is_null(), "{}", s["nodes"]["alpha"]);

    let out = f.rampart(&["drain", "beta"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drained = Instant::now();
    let (_, took) = f
        .wait("www moves off drained beta", Duration::from_secs(15), |s| {
            runs_on(s, "www", "alpha")
                && strs(&s["vips"]["www"]) == ["alpha"]
                && runs_nowhere(s, "ns2")
                && runs_nowhere(s, "shell2")
                && ["files", "ns1", "shell1"].iter().all(|vm| runs_on(s, vm, "alpha"))
                && s["nodes"]["beta"]["drained"] == true
                && acknowledged(s)
        })
        .await;
    eprintln!("[admin] drain beta: www running on alpha {took:.2?} after the command");
    let out = f.daemon("agent beta").output();
    assert!(out.contains("stop vm www"), "{out}");
    assert!(f.daemon("agent alpha").output().contains("start vm www"));

    let out = f.rampart(&["undrain", "beta"]);
    assert!(out.status.success());
    let now_home = home_with(&[("www", "alpha")]);
    f.wait("beta's pinned VMs are back; www stays", Duration::from_secs(15), |s| {
        converged(s, &now_home) && s["nodes"]["beta"]["drained"] == false
    })
    .await;
    let _ = drained;

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
    let out = f.rampart(&["drain", "alpha"]);
    assert!(out.status.success());
    f.hold(
        "maintenance freezes placement (alpha drained meanwhile)",
        Duration::from_millis(2500),
        |s| {
            generations(s) == gens
                && now_home.iter().all(|(vm, n)| runs_on(s, vm, n))
                && s["nodes"]["alpha"]["drained"] == true
        },
    )
    .await;
    let out = f.rampart(&["maintenance", "off"]);
    assert!(out.status.success());
    let (_, took) = f
        .wait("after maintenance, alpha's drain goes ahead", Duration::from_secs(15), |s| {
            s["maintenance"] == false
                && runs_on(s, "files", "beta")
                && runs_on(s, "www", "beta")
                && runs_nowhere(s, "ns1")
                && runs_nowhere(s, "shell1")
                && acknowledged(s)
        })
        .await;
    eprintln!("[admin] maintenance off: alpha drained {took:.2?} later");
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
    f.wait("the cluster converges", Duration::from_secs(30), |s| {
        converged(s, &HOME)
    })
    .await;
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
        .wait_from(sent, "the signed webhook call applies the commit", Duration::from_secs(5), |s| {
            applied_commit(s) == commit
        })
        .await;
    let (_, converged_at) = f
        .wait_from(sent, "and it converges", Duration::from_secs(15), |s| {
            strs(&s["vips"]["files"]) == ["alpha"] && converged(s, &HOME)
        })
        .await;
    eprintln!("[webhook] signed call: revision applied {took:.2?}, converged {converged_at:.2?} after it");
    let (_, metrics) = http(api, "GET", "/metrics", &[], b"").unwrap();
    assert!(
        metrics.contains(&format!("rampart_applied_revision_info{{commit=\"{commit}\"}} 1")),
        "{metrics}"
    );
}
