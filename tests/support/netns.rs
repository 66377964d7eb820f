//! Hosts on one Ethernet segment, made of network namespaces (iproute2's `ip netns`).
//!
//! A [`Lan`] is a bridge `br0` in a namespace of its own; each [`Host`] is a namespace with one
//! interface `eth0`, a veth whose other end is a port of that bridge, an address from the
//! LAN's private subnet (`10.213.S.0/24`, host N gets `.10+N`) and a fixed MAC
//! (`02:52:4d:S:0:N`). Nothing is ever created in the root namespace: the veth pair is made
//! inside the bridge namespace and its host end moved straight into the host's namespace.
//!
//! Namespace names are `rmp<PID>-<N>-<name>`, unique per test process and LAN. Dropping the
//! [`Lan`] (also when the test panics) kills the processes it started (by PID) and deletes
//! every namespace it made. Namespaces left behind by a test process that died without
//! dropping (SIGKILL) are deleted by the next [`Lan::new`], which removes every `rmp<PID>-*`
//! namespace whose PID no longer runs.
//!
//! Commands run inside with `ip netns exec` (or `ip -n`); [`Pinger`] pings from inside a
//! namespace with timestamps (no `ping` binary needed).
//!
//! Missing `ip` or namespace support fails the test with a message: these tests never skip.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static NEXT_LAN: AtomicU32 = AtomicU32::new(0);

/// One namespace on the LAN.
#[derive(Debug, Clone)]
pub struct Host {
    /// The name the test gave it.
    pub name: String,
    /// The namespace (`/run/netns/NAME`).
    pub netns: String,
    /// Its interface on the LAN.
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// `aa:bb:cc:dd:ee:ff`, lower case.
    pub mac: String,
}

impl Host {
    /// The namespace file, for `setns`.
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }
}

pub struct Lan {
    /// `rmp<PID>-<N>`: the start of every namespace name of this LAN.
    pub prefix: String,
    /// The namespace holding the bridge `br0`.
    pub bridge_netns: String,
    /// The third octet of the LAN's subnet `10.213.S.0/24`.
    pub subnet: u8,
    pub hosts: Vec<Host>,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

/// Run `ip ARGS`, panicking with its stderr unless it succeeds; its stdout.
pub fn ip(args: &[&str]) -> String {
    let out = try_ip(args);
    assert!(
        out.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn try_ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (install the Debian package iproute2): {e}"))
}

/// Delete `rmp<PID>-*` namespaces whose test process is gone.
fn delete_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("rmp") else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = try_ip(&["netns", "del", &name]);
        }
    }
}

impl Lan {
    /// A LAN on `10.213.0.0/24`.
    pub fn new() -> Lan {
        Lan::with_subnet(0)
    }

    /// A LAN on `10.213.SUBNET.0/24`.
    pub fn with_subnet(subnet: u8) -> Lan {
        let version = try_ip(&["-V"]);
        assert!(version.status.success(), "`ip -V` failed: install iproute2");
        delete_stale_namespaces();
        let prefix = format!(
            "rmp{}-{}",
            std::process::id(),
            NEXT_LAN.fetch_add(1, Ordering::SeqCst)
        );
        let mut lan = Lan {
            bridge_netns: format!("{prefix}-br"),
            prefix,
            subnet,
            hosts: Vec::new(),
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        let br = lan.bridge_netns.clone();
        lan.add_netns(&br);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        lan
    }

    fn add_netns(&mut self, name: &str) {
        let out = try_ip(&["netns", "add", name]);
        assert!(
            out.status.success(),
            "cannot create network namespace {name} (needs root and namespace support): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// A new host on the LAN, with its address on `eth0` and every link up.
    pub fn add_host(&mut self, name: &str) -> Host {
        assert!(
            !self.hosts.iter().any(|h| h.name == name),
            "host {name} already exists"
        );
        let n = self.hosts.len() as u8 + 1;
        let netns = format!("{}-{name}", self.prefix);
        self.add_netns(&netns);
        let mac = format!("02:52:4d:{:02x}:00:{:02x}", self.subnet, n);
        let port = format!("v{n}-{name}").chars().take(15).collect::<String>();
        let br = self.bridge_netns.clone();
        ip(&[
            "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "address",
            &mac, "netns", &netns,
        ]);
        ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
        let address = Ipv4Addr::new(10, 213, self.subnet, 10 + n);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        let host = Host {
            name: name.to_string(),
            netns,
            interface: "eth0".into(),
            address,
            prefix: 24,
            mac,
        };
        self.hosts.push(host.clone());
        host
    }

    /// An address of the LAN's subnet no host has: `10.213.S.LAST`.
    pub fn free_address(&self, last: u8) -> Ipv4Addr {
        assert!(last >= 100, "hosts use .11 up to .99");
        Ipv4Addr::new(10, 213, self.subnet, last)
    }

    /// `ip -n NETNS ARGS`, panicking unless it succeeds; its stdout.
    pub fn ip_in(&self, netns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", netns];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip netns exec NETNS PROGRAM ARGS`, waited for.
    pub fn exec(&self, netns: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", netns, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {netns} {program}: {e}"))
    }

    /// Start `PROGRAM ARGS` inside `netns`; it is killed (by PID) when the LAN is dropped, or
    /// by [`Lan::kill`]. Returns its PID.
    pub fn spawn(&mut self, netns: &str, program: &str, args: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("ip netns exec {netns} {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Kill a process [`Lan::spawn`] started and collect its output.
    pub fn kill(&mut self, pid: u32) -> Output {
        let i = self
            .children
            .iter()
            .position(|c| c.id() == pid)
            .unwrap_or_else(|| panic!("no child with PID {pid}"));
        let mut child = self.children.remove(i);
        let _ = child.kill();
        child.wait_with_output().expect("wait for child")
    }

    /// The neighbour entry for `ip` in `netns`: `(MAC, state)`, or `None` if there is none
    /// (or it has no MAC, e.g. INCOMPLETE or FAILED).
    pub fn neighbour(&self, netns: &str, ip: Ipv4Addr) -> Option<(String, String)> {
        let out = self.ip_in(netns, &["neigh", "show", &ip.to_string()]);
        let line = out.lines().find(|l| l.starts_with(&format!("{ip} ")))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let mac = words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|i| words.get(i + 1))?
            .to_string();
        let state = words.last().unwrap_or(&"").to_string();
        Some((mac, state))
    }

    /// Whether `netns` has `addr` (`A/P`) on `interface`.
    pub fn has_address(&self, netns: &str, interface: &str, addr: &str) -> bool {
        self.ip_in(netns, &["-o", "addr", "show", "dev", interface])
            .split_whitespace()
            .any(|w| w == addr)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let out = try_ip(&["netns", "del", ns]);
            if !out.status.success() {
                eprintln!(
                    "warning: ip netns del {ns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
}

/// Enter the network namespace `netns` on the current thread.
pub fn enter_netns(netns: &str) {
    let path = format!("/run/netns/{netns}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on an open namespace file; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// One echo reply.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub seq: u16,
    pub sent: Instant,
    pub received: Instant,
}

/// ICMP echo requests to one address every `interval`, from a thread inside a namespace,
/// with the time each reply arrived. Stopped when dropped.
pub struct Pinger {
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Reply>>>,
    sent: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pinger {
    pub fn start(netns: &str, target: Ipv4Addr, interval: Duration) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU32::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let netns = netns.to_string();
        let thread = {
            let (stop, replies, sent) = (stop.clone(), replies.clone(), sent.clone());
            std::thread::spawn(move || {
                enter_netns(&netns);
                // SAFETY: plain socket(2); owned right after.
                let raw =
                    unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
                assert!(
                    raw >= 0,
                    "raw ICMP socket: {}",
                    std::io::Error::last_os_error()
                );
                // SAFETY: fresh descriptor.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 1000,
                };
                // SAFETY: option value pointer and size describe `tv`.
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        &tv as *const libc::timeval as *const libc::c_void,
                        std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                    )
                };
                // SAFETY: sockaddr_in is plain data.
                let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                to.sin_family = libc::AF_INET as u16;
                to.sin_addr.s_addr = u32::from_ne_bytes(target.octets());
                let id = (std::process::id() as u16) ^ 0x5a5a;
                let _ = ready_tx.send(());
                let mut sent_at: Vec<Instant> = Vec::new();
                let mut next = Instant::now();
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::SeqCst) {
                    if Instant::now() >= next {
                        let seq = sent_at.len() as u16;
                        let mut pkt = [0u8; 16];
                        pkt[0] = 8; // echo request
                        pkt[4..6].copy_from_slice(&id.to_be_bytes());
                        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
                        let c = checksum(&pkt);
                        pkt[2..4].copy_from_slice(&c.to_be_bytes());
                        sent_at.push(Instant::now());
                        // SAFETY: buffer and address describe `pkt` and `to`.
                        unsafe {
                            libc::sendto(
                                fd.as_raw_fd(),
                                pkt.as_ptr() as *const libc::c_void,
                                pkt.len(),
                                0,
                                &to as *const libc::sockaddr_in as *const libc::sockaddr,
                                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                            )
                        };
                        sent.fetch_add(1, Ordering::SeqCst);
                        next += interval;
                    }
                    // SAFETY: buffer pointer and length.
                    let n = unsafe {
                        libc::recv(
                            fd.as_raw_fd(),
                            buf.as_mut_ptr() as *mut libc::c_void,
                            buf.len(),
                            0,
                        )
                    };
                    let received = Instant::now();
                    if n < 20 {
                        continue;
                    }
                    let n = n as usize;
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    if n < ihl + 8 || buf[12..16] != target.octets() {
                        continue;
                    }
                    let icmp = &buf[ihl..n];
                    if icmp[0] != 0 || icmp[4..6] != id.to_be_bytes() {
                        continue;
                    }
                    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
                    if let Some(sent) = sent_at.get(usize::from(seq)) {
                        replies.lock().unwrap().push(Reply {
                            seq,
                            sent: *sent,
                            received,
                        });
                    }
                }
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("pinger thread did not start");
        Pinger {
            stop,
            replies,
            sent,
            thread: Some(thread),
        }
    }

    /// The replies so far.
    pub fn replies(&self) -> Vec<Reply> {
        self.replies.lock().unwrap().clone()
    }

    pub fn sent(&self) -> u32 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stop and return every reply.
    pub fn stop(mut self) -> Vec<Reply> {
        self.halt();
        self.replies()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
