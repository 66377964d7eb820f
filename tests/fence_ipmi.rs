//! Fencing through a real fence agent (`fence_ipmilan`, Debian package fence-agents) against
//! a real IPMI BMC simulator (`ipmi_sim`, package openipmi) on loopback, through
//! [`RealFencer`] as the controller calls it.
//!
//! The simulator's chassis_control script records every power action, so "fenced" is checked
//! on the BMC's side too. Clients use cipher suite 3 (lanplus): without it each call loses
//! ~10 s. `power_wait: 0` drops the agent's default 2 s pause after a power change, which a
//! simulator does not need. A missing binary fails these tests; they never skip.

#[path = "support/ipmi_sim.rs"]
mod ipmi_sim;
#[path = "support/ports.rs"]
mod ports;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ipmi_sim::{require, IpmiSim};
use rampart::drivers::fence::{PowerState, RealFencer};
use rampart::drivers::Fencer;
use rampart::manifest::FenceDeviceSpec;
use rampart::model::FenceStep;

fn require_agent() {
    require("fence_ipmilan", "fence-agents");
    require("ipmitool", "ipmitool");
}

/// A FenceDevice as an admin writes it.
fn device(port: u16, user: &str, password_file: &Path, timeout: &str) -> FenceDeviceSpec {
    serde_yaml::from_str(&format!(
        r#"
agent:
  name: fence_ipmilan
  parameters:
    ip: 127.0.0.1
    ipport: {port}
    username: {user}
    lanplus: true
    cipher: 3
    power_wait: 0
  credentials:
    password: {{file: {pw}}}
timeout: {timeout}
"#,
        pw = password_file.display()
    ))
    .unwrap()
}

fn fencer(dev: FenceDeviceSpec) -> RealFencer {
    RealFencer::new(BTreeMap::from([("bmc".to_string(), dev)]))
}

fn step() -> FenceStep {
    FenceStep {
        device: "bmc".into(),
        plug: None,
    }
}

#[tokio::test]
async fn off_powers_the_node_off_and_the_bmc_did_it() {
    require_agent();
    let sim = IpmiSim::start();
    let f = fencer(device(sim.port, &sim.user, &sim.password_file(), "10s"));
    assert_eq!(f.status("hv1", &step()).await.unwrap(), PowerState::On);

    let t = Instant::now();
    f.fence_off("hv1", &step()).await.unwrap();
    let took = t.elapsed();
    eprintln!("fence_ipmilan off took {took:?}");
    assert_eq!(sim.actions(), vec!["power off"]);
    assert!(!sim.is_on());
    assert_eq!(f.status("hv1", &step()).await.unwrap(), PowerState::Off);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_node_already_off_is_fenced_without_a_power_action() {
    require_agent();
    let sim = IpmiSim::start();
    sim.set_on(false);
    let f = fencer(device(sim.port, &sim.user, &sim.password_file(), "10s"));
    let t = Instant::now();
    f.fence_off("hv1", &step()).await.unwrap();
    eprintln!(
        "fence_ipmilan off of a node already off took {:?}",
        t.elapsed()
    );
    assert_eq!(sim.actions(), Vec::<String>::new());
}

#[tokio::test]
async fn a_wrong_password_fails_clearly_and_never_shows_it() {
    require_agent();
    let sim = IpmiSim::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-pw-4711\n").unwrap();
    let f = fencer(device(sim.port, &sim.user, &wrong, "10s"));
    let t = Instant::now();
    let e = f.fence_off("hv1", &step()).await.unwrap_err();
    eprintln!("wrong password: failed after {:?}: {e}", t.elapsed());
    assert!(sim.is_on());
    assert!(sim.actions().is_empty(), "{:?}", sim.actions());
    assert!(!e.to_string().contains("not-the-pw-4711"), "{e}");
    assert!(!e.to_string().contains(&sim.password), "{e}");
    assert!(e.step.contains("fence hv1 via bmc"), "{e}");
    assert!(e.message.contains("fence_ipmilan failed"), "{e}");
    assert!(e.message.contains("exit code 1"), "{e}");
    // The agent's own words, and what to check.
    assert!(
        e.message.contains("Unable to obtain correct plug status"),
        "{e}"
    );
    assert!(e.message.contains("`password`"), "{e}");
    assert!(
        e.message.contains(&format!("127.0.0.1 port {}", sim.port)),
        "{e}"
    );
}

/// Every process whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces, so split after the last ')'.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        if rest.len() > 2 && rest[0] != "Z" && rest[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn a_dead_bmc_fails_within_the_device_timeout_and_leaves_no_agent_behind() {
    require_agent();
    // Nothing listens on this port: fence_ipmilan would retry for ~20 s.
    let port = ipmi_sim::free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
    // The real agent, through a wrapper that notes its PID (exec keeps it).
    let pidfile = dir.path().join("agent.pid");
    let wrapper = dir.path().join("fence_ipmilan");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho $$ >> {}\nexec /usr/sbin/fence_ipmilan \"$@\"\n",
            pidfile.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let f = fencer(device(port, "nobody", &dir.path().join("pw"), "3s")).with_agent_dir(dir.path());
    let t = Instant::now();
    let e = f.fence_off("hv1", &step()).await.unwrap_err();
    let took = t.elapsed();
    eprintln!("dead BMC: failed after {took:?}: {e}");
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_millis(4500), "{took:?}");
    assert!(e.message.contains("timed out after 3s"), "{e}");
    assert!(e.message.contains("killed"), "{e}");
    let pids = std::fs::read_to_string(&pidfile).unwrap();
    assert!(!pids.trim().is_empty());
    for pid in pids.split_whitespace() {
        let pid: u32 = pid.parse().unwrap();
        let left = group_members(pid);
        assert!(
            left.is_empty(),
            "agent {pid}'s processes still running: {left:?}"
        );
    }
}
