//! A real IPMI BMC for tests: OpenIPMI's `ipmi_sim` (Debian package openipmi) on loopback.
//!
//! Each simulator gets a fresh directory with a generated `lan.conf` (one LAN channel on
//! 127.0.0.1 at a free high UDP port, one admin user with a throwaway password), a minimal
//! emulator command file (one BMC at 0x20), and a `chassis_control` script: ipmi_sim runs it
//! for every power query and action, and it answers queries from a state file (`1` on, `0`
//! off) and appends every action to an actions file (`power off`, `power on`, `reset 1`).
//!
//! The simulator is killed with SIGKILL by PID when the value is dropped, which happens when
//! the test fails too. It runs under a small `sh` wrapper that kills it when its stdin
//! closes, so it does not outlive a test process that dies. A missing `ipmi_sim` fails the
//! test with a message to install openipmi: these tests never skip.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "rampartfence";

pub struct IpmiSim {
    pub port: u16,
    pub user: String,
    pub password: String,
    pid: u32,
    wrapper: Child,
    stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
}

/// Fails the test unless the binary is installed.
pub fn require(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(binary);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{binary}` is not installed: install the Debian package {package} (./scripts/test does)"
    );
}

pub use crate::ports::free_udp_port;

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
            if [ "$val" = 0 ]; then echo "power off" >> "$dir/actions"; else echo "power on" >> "$dir/actions"; fi
            echo "$val" > "$dir/state" ;;
        *) echo "$parm $val" >> "$dir/actions" ;;
        esac
    done ;;
*) echo "Unknown operation: $op"; exit 1 ;;
esac
"#;

impl IpmiSim {
    /// A simulated BMC whose machine is on.
    pub fn start() -> IpmiSim {
        let bin = require("ipmi_sim", "openipmi");
        let dir = tempfile::Builder::new()
            .prefix("rampart-ipmi-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let port = free_udp_port();
        let password = format!("pw-{:x}", std::process::id() as u64 * 7919 + port as u64);
        std::fs::write(d.join("state"), "1\n").unwrap();
        std::fs::write(d.join("actions"), "").unwrap();
        std::fs::write(d.join("chassis"), CHASSIS).unwrap();
        std::fs::set_permissions(d.join("chassis"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::create_dir(d.join("state.d")).unwrap();
        std::fs::write(
            d.join("lan.conf"),
            format!(
                r#"name "rampart-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{chassis} 0x20"
  user 2 true "{USER}" "{password}" admin 10 none md2 md5 straight
"#,
                chassis = d.join("chassis").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
        )
        .unwrap();
        std::fs::write(d.join("password"), format!("{password}\n")).unwrap();
        // The wrapper starts ipmi_sim in the background, prints its PID, and kills it when its
        // own stdin closes (we close it, or the kernel does when the test process dies).
        let script = r#"log="$1"; shift; "$@" >>"$log" 2>&1 & pid=$!; echo "$pid"; read _ignored; kill -9 "$pid" 2>/dev/null; wait "$pid"; exit 0"#;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(d.join("ipmi_sim.log"))
            .arg(&bin)
            .arg("-c")
            .arg(d.join("lan.conf"))
            .arg("-f")
            .arg(d.join("bmc.emu"))
            .arg("-s")
            .arg(d.join("state.d"))
            .arg("-n")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sh to run ipmi_sim");
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the ipmi_sim wrapper printed {line:?}, not a PID"));
        let sim = IpmiSim {
            port,
            user: USER.into(),
            password,
            pid,
            wrapper,
            stdin,
            dir,
        };
        sim.wait_listening();
        sim
    }

    /// ipmi_sim holds its UDP port once it is up.
    fn wait_listening(&self) {
        let t = Instant::now();
        while UdpSocket::bind(("127.0.0.1", self.port)).is_ok() {
            assert!(self.running(), "ipmi_sim exited at startup: {}", self.log());
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "ipmi_sim did not listen on 127.0.0.1:{} within 10 s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ipmi_sim.log")).unwrap_or_default()
    }

    /// The power actions the BMC carried out, in order (`power off`, `power on`, ...).
    pub fn actions(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("actions"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn is_on(&self) -> bool {
        std::fs::read_to_string(self.dir.path().join("state"))
            .unwrap()
            .trim()
            == "1"
    }

    pub fn set_on(&self, on: bool) {
        std::fs::write(
            self.dir.path().join("state"),
            if on { "1\n" } else { "0\n" },
        )
        .unwrap();
    }

    /// A file holding the password, for a `{file: ...}` secret reference.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
    }
}
