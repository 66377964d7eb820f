//! Failover end to end on real parts (issue #6): a cluster in network namespaces (see
//! `support/cluster_ns.rs`) with etcd members on the namespaces' addresses, agents with the
//! libvirt and netlink drivers (DRBD simulated: no kernel module here), a controller per node
//! fencing through `fence_ipmilan` and `ipmi_sim` BMCs that really power their node off, and a
//! client pinging the VIPs.
//!
//! Every scenario checks the safety rules on every status reading (S1, S4) and on the hosts
//! themselves, continuously (the harness's monitor: no VIP on two namespaces in one sweep, no
//! VM running on two libvirtds). The scenarios run one at a time (they share two cores).

#![cfg(all(feature = "etcd", feature = "libvirt"))]

#[path = "support/cluster_ns.rs"]
mod cluster_ns;
#[path = "support/libvirtd.rs"]
mod libvirtd;
#[path = "support/netns.rs"]
mod netns;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster_ns::*;
use serde_json::Value;

/// One cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The hypervisor running `vm` now.
fn host_of(s: &Value, vm: &str) -> String {
    placed(s, vm).unwrap_or_else(|| panic!("{vm} is placed nowhere: {}", pretty(s)))
}

/// Failover VMs of the cluster.
fn failover_vms() -> Vec<&'static str> {
    VMS.iter().filter(|v| v.3).map(|v| v.0).collect()
}

fn pinned_on(node: &str) -> Vec<&'static str> {
    VMS.iter()
        .filter(|v| !v.3 && v.1[0] == node)
        .map(|v| v.0)
        .collect()
}

/// After `victim` is gone: every failover VM and its VIP on the survivor, the victim's pinned
/// VMs down, the survivor's own VMs untouched, survivor and witness acknowledged.
fn failed_over(s: &Value, victim: &str) -> bool {
    let survivor = other(victim);
    failover_vms().iter().all(|vm| runs_on(s, vm, survivor))
        && pinned_on(victim).iter().all(|vm| runs_nowhere(s, vm))
        && pinned_on(survivor)
            .iter()
            .all(|vm| runs_on(s, vm, survivor))
        && acknowledged(s, &[survivor, "witness"])
        && vips_follow(s)
}

/// The pinned VMs of `victim` are reported down (state, and a pending reason).
fn pinned_reported_down(s: &Value, victim: &str) -> bool {
    pinned_on(victim)
        .iter()
        .all(|vm| s["vms"][*vm]["state"] != "running" && runs_nowhere(s, vm))
        && pinned_on(victim).iter().all(|vm| {
            s["pending"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x.as_str().is_some_and(|x| x.contains(vm))))
        })
}

/// Kill the hypervisor holding the `www` VIP: fenced via IPMI, work on the survivor.
#[test]
fn hypervisor_killed_is_fenced_and_its_work_fails_over() {
    let _g = serial();
    let mut c = NsCluster::start("killed", Timing::test());
    let s = c.status().expect("status");
    let victim = host_of(&s, "www");
    let survivor = other(&victim);
    let pinger = c.pinger("www", Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !pinger.replies().is_empty(),
        "the client gets no answer from the www VIP before the failure"
    );
    let t = c.crash(&victim);
    let (s, took) = c.wait_from(
        t,
        "work fails over to the survivor",
        Duration::from_secs(40),
        |s| failed_over(s, &victim),
    );
    // The client answers again from the survivor.
    let deadline = Instant::now() + Duration::from_secs(10);
    while outage(&pinger.replies(), t).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let replies = pinger.stop();
    let gap = outage(&replies, t).expect("the client never got an answer after the failover");
    eprintln!(
        "[killed] {victim} killed: failed over to {survivor} in {took:.2?}; client outage on the www VIP {gap:.2?}"
    );
    assert_eq!(
        c.bmc_actions(&victim),
        ["power off"],
        "the victim was fenced through its BMC, once"
    );
    assert!(!c.powered(&victim));
    assert!(
        c.bmc_actions(survivor).is_empty(),
        "the survivor was not fenced"
    );
    assert!(
        pinned_reported_down(&s, &victim),
        "pinned VMs of {victim} not reported down: {}",
        pretty(&s)
    );
    assert!(c.holds(survivor, "www") && !c.holds(&victim, "www"));
    let doms = c.running_domains(survivor);
    for vm in failover_vms() {
        assert!(
            doms.contains(vm),
            "{vm} not running in {survivor}'s libvirtd: {doms:?}"
        );
    }
    // The lease TTL (2 s) plus detection, fencing and start.
    assert!(gap < Duration::from_secs(10), "client outage {gap:?}");
    c.assert_safe();
}
