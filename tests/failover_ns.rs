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
#[path = "support/status_check.rs"]
mod status_check;

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

/// The leading controller's node, and a hypervisor other than it: the one with the www VM
/// unless the leader runs there.
fn leader_and_victim(s: &Value) -> (String, String) {
    let leader = s["leader"].as_str().expect("a leader").to_string();
    let www = host_of(s, "www");
    let victim = if www != leader {
        www
    } else {
        other(&www).to_string()
    };
    (leader, victim)
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

/// Where the VMs are and that everything placed runs: nothing moved, nothing stopped.
fn unchanged(s: &Value, before: &std::collections::BTreeMap<String, String>) -> bool {
    placement(s) == *before && before.iter().all(|(vm, n)| runs_on(s, vm, n)) && vips_follow(s)
}

/// Cut the link of the hypervisor holding the www VIP: it self-demotes before its lease runs
/// out; the majority fences it and takes over; the VIP is never on two namespaces.
#[test]
fn partitioned_hypervisor_self_demotes_and_is_fenced() {
    let _g = serial();
    let mut c = NsCluster::start("partition", Timing::test());
    let s = c.status().expect("status");
    let victim = host_of(&s, "www");
    let survivor = other(&victim);
    let mine: Vec<String> = placement(&s)
        .into_iter()
        .filter(|(_, n)| *n == victim)
        .map(|(vm, _)| vm)
        .collect();
    let pinger = c.pinger("www", Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(300));
    let t = c.cut_link(&victim);
    // The isolated node stops everything on its own: VIPs gone, no domain running.
    let ttl = c.timing.lease_ttl;
    let demoted = loop {
        let holds = VIPS.iter().any(|(v, _, _)| c.holds(&victim, v));
        let doms = c.running_domains(&victim);
        let running: Vec<&String> = mine.iter().filter(|vm| doms.contains(*vm)).collect();
        if !holds && running.is_empty() {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < ttl * 3,
            "{victim} still holds a VIP ({holds}) or runs {running:?} {:?} after its link was cut\n{}",
            t.elapsed(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let fenced_before = !c.powered_off_by(&victim).is_empty();
    eprintln!("[partition] {victim} cut off: self-demoted after {demoted:.2?} (lease TTL {ttl:?})");
    assert!(
        !fenced_before,
        "{victim} was powered off before it demoted itself: self-demotion not observed"
    );
    assert!(
        demoted < ttl,
        "{victim} demoted itself only after {demoted:?}, its lease TTL is {ttl:?}"
    );
    let (s, took) = c.wait_from(
        t,
        "the majority fences and takes over",
        Duration::from_secs(40),
        |s| failed_over(s, &victim),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while outage(&pinger.replies(), t).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let gap = outage(&pinger.stop(), t).expect("no answer from the www VIP after the takeover");
    eprintln!("[partition] taken over by {survivor} after {took:.2?}; client outage {gap:.2?}");
    assert_eq!(
        c.bmc_actions(&victim),
        ["power off"],
        "the isolated node was fenced"
    );
    assert!(pinned_reported_down(&s, &victim), "{}", pretty(&s));
    c.heal_link(&victim);
    let report = c.stop_monitor().unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.sweeps > 100, "the monitor barely ran: {report:?}");
    eprintln!(
        "[partition] S1 monitor: {} address sweeps, {} VM sweeps, 0 violations",
        report.sweeps, report.vm_sweeps
    );
}

/// The BMC of a dead hypervisor is dead too: fencing is impossible, nothing moves, status
/// says why. Once the BMC answers again, the node is fenced and its work fails over.
#[test]
fn bmc_dead_nothing_moves_and_status_says_why() {
    let _g = serial();
    let mut c = NsCluster::start("bmc-dead", Timing::test());
    let s = c.status().expect("status");
    let victim = host_of(&s, "www");
    let survivor = other(&victim);
    let before = placement(&s);
    c.kill_bmc(&victim);
    let t = c.crash(&victim);
    let (s, _) = c.wait_from(
        t,
        "the victim's lease expires",
        Duration::from_secs(20),
        |s| lease(s, &victim) != "alive",
    );
    let _ = s;
    let victim2 = victim.clone();
    let before2 = before.clone();
    c.hold(
        "nothing moves while fencing is impossible",
        Duration::from_secs(12),
        move |s| {
            placement(s) == before2
                && before2
                    .iter()
                    .filter(|(_, n)| **n == victim2)
                    .all(|(vm, _)| runs_nowhere(s, vm))
                && before2
                    .iter()
                    .filter(|(_, n)| **n != victim2)
                    .all(|(vm, n)| runs_on(s, vm, n))
        },
    );
    let s = c.status().expect("status");
    let pending = strs(&s["pending"]).join("\n");
    eprintln!("[bmc-dead] pending while {victim}'s BMC is dead:\n{pending}");
    assert!(
        pending.contains(&victim) && pending.to_lowercase().contains("fenc"),
        "status does not say the work waits on fencing {victim}: {}\n{}",
        pretty(&s),
        c.logs()
    );
    assert!(c
        .running_domains(survivor)
        .iter()
        .all(|d| before.get(d).is_none_or(|n| *n != victim)));
    assert!(!c.holds(survivor, "www") || before["www"] == survivor);
    // The BMC comes back: the node is fenced and its work fails over.
    c.start_bmc(&victim);
    let (_, took) = c.wait(
        "fenced once the BMC answers",
        Duration::from_secs(40),
        |s| failed_over(s, &victim),
    );
    eprintln!("[bmc-dead] BMC back: failed over {took:.2?} later");
    assert_eq!(c.bmc_actions(&victim), ["power off"]);
    c.assert_safe();
}

/// A killed hypervisor boots again: it rejoins (lease, assignment, its pinned VMs) and gets
/// none of the work that failed over back (failback: none).
#[test]
fn returning_node_rejoins_and_gets_nothing_back() {
    let _g = serial();
    let mut c = NsCluster::start("return", Timing::test());
    let s = c.status().expect("status");
    let victim = host_of(&s, "www");
    let survivor = other(&victim).to_string();
    let t = c.crash(&victim);
    c.wait_from(t, "work fails over", Duration::from_secs(40), |s| {
        failed_over(s, &victim)
    });
    let t = Instant::now();
    c.power_on(&victim);
    let v = victim.clone();
    let (_, took) = c.wait_from(t, "the node rejoins", Duration::from_secs(40), |s| {
        acknowledged(s, &NODES) && pinned_on(&v).iter().all(|vm| runs_on(s, vm, &v))
    });
    eprintln!("[return] {victim} rejoined {took:.2?} after booting");
    let v = victim.clone();
    c.hold("nothing fails back", Duration::from_secs(6), move |s| {
        failover_vms().iter().all(|vm| runs_on(s, vm, &survivor))
            && pinned_on(&v).iter().all(|vm| runs_on(s, vm, &v))
            && acknowledged(s, &NODES)
            && vips_follow(s)
    });
    assert!(!c.holds(&victim, "www") && !c.holds(&victim, "files"));
    let doms = c.running_domains(&victim);
    assert!(
        failover_vms().iter().all(|vm| !doms.contains(*vm)),
        "{doms:?}"
    );
    c.assert_safe();
}

/// Heartbeats: with `heartbeatTimeout` set, a crashed hypervisor is found by the silence of
/// its agent, its lease revoked and the node fenced long before the lease could run out
/// (20 s here, renewed every 2 s: it cannot expire within 18 s of the crash, and the test
/// asks for the whole failover within 12). While everyone answers, nobody is fenced.
#[test]
fn silent_hypervisor_is_fenced_before_its_lease_runs_out() {
    let _g = serial();
    let timing = Timing {
        lease_ttl: Duration::from_secs(20),
        renew: Duration::from_secs(2),
        heartbeat: Some(Duration::from_millis(500)),
        ..Timing::test()
    };
    let mut c = NsCluster::start("hbeat", timing);
    let s = c.status().expect("status");
    // Not the leader's node: a new leader would wait out the old one's 20 s lease.
    let (_, victim) = leader_and_victim(&s);
    let survivor = other(&victim).to_string();
    let before = placement(&s);
    c.hold(
        "no false alarm while every agent answers",
        Duration::from_secs(3),
        move |s| unchanged(s, &before) && acknowledged(s, &NODES),
    );
    assert!(c.bmc_actions("alpha").is_empty() && c.bmc_actions("beta").is_empty());
    let t = c.crash(&victim);
    let (s, took) = c.wait_from(
        t,
        "the silent node is fenced and its work moves (its lease still runs)",
        Duration::from_secs(12),
        |s| failed_over(s, &victim) && fenced(s, &victim),
    );
    eprintln!("[hbeat] {victim} crashed: fenced and failed over in {took:.2?} (lease TTL 20 s)");
    assert!(
        lease(&s, &victim) != "alive",
        "{victim}'s lease is revoked: {}",
        pretty(&s)
    );
    assert_eq!(c.bmc_actions(&victim), ["power off"], "fenced once");
    assert!(
        c.bmc_actions(&survivor).is_empty(),
        "the survivor was not fenced"
    );
    assert!(c.holds(&survivor, "www") && !c.holds(&victim, "www"));
    c.assert_safe();
}

/// The leading controller is killed while a failover is under way: another controller
/// finishes it. The leader cannot reach the BMCs, so its fencing fails (it is under way and
/// cannot finish); once the status says so, it is killed, and the next leader must fence.
#[test]
fn leading_controller_killed_mid_failover_another_finishes() {
    let _g = serial();
    let mut c = NsCluster::start("controller", Timing::test());
    let s = c.status().expect("status");
    let (leader, victim) = leader_and_victim(&s);
    c.block_bmcs_from(&leader);
    let t = c.crash(&victim);
    let failed = format!("every fencing level failed for {victim}");
    c.wait_from(
        t,
        "the leader's fencing fails",
        Duration::from_secs(30),
        |s| {
            s["pending"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|x| x.as_str().is_some_and(|x| x.contains(&failed)))
            })
        },
    );
    assert!(
        c.bmc_actions(&victim).is_empty() && c.powered(&victim),
        "the leader reached the BMC through a prohibit route"
    );
    let killed = Instant::now();
    c.kill_controller(&leader);
    eprintln!(
        "[controller] {victim} crashed; its fencing failed; leader {leader} killed {:.2?} after the crash",
        killed - t
    );
    // Finished means fenced as well: when the victim held only its pinned VM, the status
    // shows the work "failed over" as soon as its lease is gone, before anyone fenced it.
    let (_, took) = c.wait_from(
        t,
        "another controller finishes the failover",
        Duration::from_secs(40),
        |s| failed_over(s, &victim) && fenced(s, &victim),
    );
    // The killed leader's key lasts until its lease runs out: then another one leads.
    let (l, v) = (leader.clone(), victim.clone());
    let (s, _) = c.wait(
        "another controller leads",
        Duration::from_secs(20),
        move |s| s["leader"].as_str().is_some_and(|x| x != l) && failed_over(s, &v),
    );
    let new_leader = s["leader"].as_str().unwrap_or("").to_string();
    eprintln!("[controller] failed over {took:.2?} after the crash; {new_leader} leads now");
    assert_eq!(c.bmc_actions(&victim), ["power off"], "fenced once");
    assert!(!c.powered(&victim));
    c.assert_safe();
}

/// The status records a successful fence of `node`.
fn fenced(s: &Value, node: &str) -> bool {
    s["nodes"][node]["fenced"].is_string()
}

/// The witness is lost: the hypervisors keep a store majority; nothing moves.
#[test]
fn witness_lost_nothing_moves() {
    let _g = serial();
    let mut c = NsCluster::start("witness", Timing::test());
    let s = c.status().expect("status");
    let before = placement(&s);
    c.crash("witness");
    let b = before.clone();
    c.hold(
        "nothing moves without the witness",
        Duration::from_secs(8),
        move |s| unchanged(s, &b) && acknowledged(s, &HYPERVISORS),
    );
    assert!(c.bmc_actions("alpha").is_empty() && c.bmc_actions("beta").is_empty());
    c.assert_safe();
}

/// `rampart diff --cluster` against the running cluster: the domain definitions the agents
/// report (libvirt, real) match what the manifests render, so no VM's file shows as changed.
/// (DRBD is simulated here: its resource files are not on any host and show as to be added.)
#[test]
fn diff_against_the_running_cluster_shows_no_domain_changes() {
    let _g = serial();
    let c = NsCluster::start("diffcl", Timing::test());
    let out = run_with_timeout(
        std::process::Command::new("ip")
            .args(["netns", "exec", &c.client.netns, BIN, "diff"])
            .arg(c.source.dir.join("manifests"))
            .args(["--cluster", &c.url, "-o", "json"]),
        Duration::from_secs(20),
    )
    .expect("rampart diff --cluster finished");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut resource_files = 0;
    for n in v["nodes"].as_array().expect("nodes") {
        for a in n["artifacts"].as_array().into_iter().flatten() {
            let path = a["path"].as_str().unwrap_or_default();
            // The diff does compare files: the simulated DRBD's resource files are missing.
            resource_files += usize::from(path.starts_with("/etc/drbd.d/"));
            assert!(
                !path.starts_with("/etc/libvirt/"),
                "{} would change {path}: {}",
                n["node"],
                a["diff"]
            );
        }
    }
    assert!(resource_files >= 2, "no file compared at all: {v}");
}

/// The etcd leader is killed: a new one is elected within the lease; nothing moves.
#[test]
fn etcd_leader_killed_nothing_moves() {
    let _g = serial();
    let mut c = NsCluster::start("etcd-leader", Timing::test());
    let s = c.status().expect("status");
    let before = placement(&s);
    let leader = c.etcd_leader().expect("an etcd leader");
    c.kill_etcd(&leader);
    eprintln!("[etcd-leader] killed the etcd member of {leader}");
    let b = before.clone();
    c.hold(
        "nothing moves after the etcd leader is lost",
        Duration::from_secs(8),
        move |s| unchanged(s, &b) && acknowledged(s, &NODES),
    );
    c.start_etcd(&leader);
    let b = before.clone();
    c.hold(
        "nothing moves when it returns",
        Duration::from_secs(3),
        move |s| unchanged(s, &b),
    );
    assert!(c.bmc_actions("alpha").is_empty() && c.bmc_actions("beta").is_empty());
    c.assert_safe();
}

/// A valid change pushed to the git source converges (a new VM with its VIP address moves
/// nothing else); an invalid one is refused and the cluster stays on the last good revision.
#[test]
fn pushed_change_converges_invalid_one_is_refused() {
    let _g = serial();
    let mut c = NsCluster::start("push", Timing::test());
    let s = c.status().expect("status");
    let before = placement(&s);
    let head = "apiVersion: rampart.dev/v1alpha1\n";
    c.source.write(
        "manifests/volumes/web2.yaml",
        &format!("{head}kind: Volume\nmetadata:\n  name: web2\nspec:\n  drbd:\n    minor: 9\n    port: 7799\n    replicas:\n      - node: alpha\n        disk: /dev/vg0/web2\n      - node: beta\n        disk: /dev/vg0/web2\n"),
    );
    c.source.write(
        "manifests/vms/web2.yaml",
        &format!("{head}kind: VirtualMachine\nmetadata:\n  name: web2\nspec:\n  cpus: 1\n  memory: 64MiB\n  volumes:\n    - volume: web2\n      target: vda\n  placement:\n    allowed: [alpha, beta]\n    preferred: [alpha]\n"),
    );
    let good = c.source.commit("add web2");
    let t = Instant::now();
    let b = before.clone();
    let g2 = good.clone();
    let (s, took) = c.wait_from(t, "the new VM runs", Duration::from_secs(30), move |s| {
        s["source"]["applied"]["commit"] == g2.as_str()
            && placed(s, "web2").is_some_and(|n| runs_on(s, "web2", &n))
            && b.iter().all(|(vm, n)| runs_on(s, vm, n))
            && converged_on(s, &NODES)
    });
    let n = placed(&s, "web2").unwrap();
    assert!(
        c.running_domains(&n).contains("web2"),
        "web2 not in {n}'s libvirtd"
    );
    eprintln!("[push] web2 running on {n} {took:.2?} after the commit");
    // Invalid: a VM on a volume that exists nowhere.
    c.source.write(
        "manifests/vms/db.yaml",
        &format!("{head}kind: VirtualMachine\nmetadata:\n  name: db\nspec:\n  cpus: 1\n  memory: 64MiB\n  volumes:\n    - volume: nope\n      target: vda\n  placement:\n    allowed: [alpha, beta]\n"),
    );
    let bad = c.source.commit("add db on a missing volume");
    let b2 = bad.clone();
    let (s, took) = c.wait(
        "the invalid revision is refused",
        Duration::from_secs(30),
        move |s| s["source"]["refused"]["commit"] == b2.as_str(),
    );
    eprintln!(
        "[push] invalid revision refused {took:.2?} after the commit: {}",
        s["source"]["refused"]["reasons"]
    );
    assert_eq!(s["source"]["applied"]["commit"], good.as_str());
    assert!(s["vms"]["db"].is_null(), "{}", pretty(&s));
    let g3 = good.clone();
    c.hold(
        "the cluster stays on the last good revision",
        Duration::from_secs(3),
        move |s| {
            s["source"]["applied"]["commit"] == g3.as_str()
                && s["vms"]["db"].is_null()
                && converged_on(s, &NODES)
        },
    );
    c.assert_safe();
}

// ---------------------------------------------------------------------------------------------
// The failover benchmark (run by scripts/bench-failover; ignored in the normal suite)

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn summary(name: &str, outages: &[Duration]) -> String {
    let mut v: Vec<f64> = outages.iter().map(Duration::as_secs_f64).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    format!(
        "BENCH {name}: rounds={} median={median:.2}s min={:.2}s max={:.2}s all=[{}]",
        v.len(),
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Client outage on the www VIP over repeated kills of the hypervisor holding it (each
/// round: crash, fenced via IPMI, failed over; the victim boots again and rejoins).
fn rampart_outages(name: &str, timing: Timing, rounds: usize) -> Vec<Duration> {
    let _g = serial();
    let within = timing.lease_ttl * 3 + Duration::from_secs(30);
    let mut c = NsCluster::start(name, timing);
    let mut out = Vec::new();
    for round in 1..=rounds {
        let s = c.status().expect("status");
        let victim = host_of(&s, "www");
        let pinger = c.pinger("www", Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !pinger.replies().is_empty(),
            "no answer from the VIP before round {round}"
        );
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let t = c.crash(&victim);
        c.wait_from(t, "failover", within, |s| failed_over(s, &victim));
        let deadline = Instant::now() + Duration::from_secs(10);
        while outage(&pinger.replies(), t).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let gap = outage(&pinger.stop(), t).expect("no answer after the failover");
        eprintln!(
            "[{name}] round {round}: {victim} killed at unix {:.3}, client outage {gap:.2?}",
            wall.as_secs_f64()
        );
        out.push(gap);
        c.power_on(&victim);
        c.wait("the victim rejoins", within, |s| {
            placement(s).len() == VMS.len() && converged_on(s, &NODES)
        });
    }
    c.assert_safe();
    // For a breakdown of the outage: keep the daemons' logs (run with RUST_LOG=rampart=info
    // for time stamps).
    if let Ok(keep) = std::env::var("RAMPART_BENCH_KEEP_LOGS") {
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(c.dir.path())
            .arg(&keep)
            .status();
    }
    out
}

/// keepalived (VRRP, advert_int 1) moving a VIP between two namespaces of the same layout
/// when its master is killed the same way (processes killed, link down, addresses gone).
fn keepalived_outages(rounds: usize) -> Vec<Duration> {
    let _g = serial();
    let bin = require("keepalived", "keepalived");
    let dir = tempfile::tempdir().unwrap();
    let mut lan = netns::Lan::new();
    let hosts = [lan.add_host("alpha"), lan.add_host("beta")];
    let client = lan.add_host("client");
    let vip = lan.free_address(100);
    let cidr = format!("{vip}/24");
    let start = |lan: &netns::Lan, i: usize, n: u32| -> Proc {
        let h = &hosts[i];
        let conf = dir.path().join(format!("{}.conf", h.name));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id {}\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  nopreempt\n  interface eth0\n  virtual_router_id 51\n  priority {}\n  advert_int 1\n  virtual_ipaddress {{\n    {cidr} dev eth0\n  }}\n}}\n",
                h.name,
                100 - 10 * i
            ),
        )
        .unwrap();
        let _ = lan;
        let d = dir.path().display();
        let args: Vec<String> = [
            "-n",
            "-l",
            "-D",
            "-P",
            "-f",
            &conf.display().to_string(),
            "-p",
            &format!("{d}/{}-{n}.pid", h.name),
            "-r",
            &format!("{d}/{}-{n}-vrrp.pid", h.name),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Proc::start(
            &h.netns,
            &format!("keepalived {}", h.name),
            dir.path().join(format!("{}-{n}.log", h.name)),
            &bin.display().to_string(),
            &args,
        )
    };
    let mut procs: Vec<Option<Proc>> = vec![Some(start(&lan, 0, 0)), Some(start(&lan, 1, 0))];
    let mut keepalived_starts = [0u32; 2];
    let holder = |lan: &netns::Lan| -> Vec<usize> {
        (0..2)
            .filter(|i| lan.has_address(&hosts[*i].netns, "eth0", &cidr))
            .collect()
    };
    let mut out = Vec::new();
    for round in 1..=rounds {
        let t0 = Instant::now();
        let master = loop {
            let h = holder(&lan);
            assert!(h.len() <= 1, "keepalived: the VIP on both namespaces");
            if h.len() == 1 {
                break h[0];
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "keepalived elected no master"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let pinger = netns::Pinger::start(&client.netns, vip, Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !pinger.replies().is_empty(),
            "keepalived VIP does not answer"
        );
        assert_eq!(
            holder(&lan),
            [master],
            "keepalived: the VIP moved or doubled before the kill"
        );
        // The master dies as a host does when its power goes: its link first (nothing more
        // leaves it), then its processes. Killed the other way round, keepalived's VRRP child
        // outlives its parent long enough to send a priority-0 advert, a clean handover.
        let t = Instant::now();
        let ns = hosts[master].netns.clone();
        lan.ip_in(&ns, &["link", "set", "eth0", "down"]);
        lan.ip_in(&ns, &["addr", "flush", "dev", "eth0"]);
        let vrrp_pid = dir.path().join(format!(
            "{}-{}-vrrp.pid",
            hosts[master].name, keepalived_starts[master]
        ));
        if let Some(pid) = std::fs::read_to_string(&vrrp_pid)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the VRRP process of a keepalived this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        procs[master].take().unwrap().kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        while outage(&pinger.replies(), t).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let gap = outage(&pinger.stop(), t).expect("keepalived: no answer after the failover");
        eprintln!(
            "[keepalived] round {round}: master {} killed, client outage {gap:.2?}",
            hosts[master].name
        );
        out.push(gap);
        // It boots again, as a backup (nopreempt).
        let addr = format!("{}/24", hosts[master].address);
        lan.ip_in(&ns, &["addr", "add", &addr, "dev", "eth0"]);
        lan.ip_in(&ns, &["link", "set", "eth0", "up"]);
        procs[master] = Some(start(&lan, master, round as u32));
        keepalived_starts[master] = round as u32;
        // Longer than VRRP's master-down interval (3 x advert_int + skew): the new backup has
        // heard the master before the next round.
        std::thread::sleep(Duration::from_secs(5));
    }
    drop(procs);
    if std::env::var_os("RAMPART_BENCH_DEBUG").is_some() {
        for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                eprintln!(
                    "--- {}\n{}",
                    e.path().display(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                );
            }
        }
    }
    out
}

#[test]
#[ignore = "the failover benchmark: run scripts/bench-failover"]
fn failover_benchmark() {
    let rounds: usize = env_or("RAMPART_BENCH_ROUNDS", "5")
        .parse()
        .expect("RAMPART_BENCH_ROUNDS");
    let mut lines = Vec::new();
    for profile in env_or(
        "RAMPART_BENCH_PROFILES",
        "fast,fast-heartbeat,default,keepalived",
    )
    .split(',')
    {
        let outages = match profile {
            "fast" => rampart_outages("bench-fast", Timing::fast(), rounds),
            "fast-heartbeat" => rampart_outages("bench-fasthb", Timing::fast_heartbeat(), rounds),
            "test" => rampart_outages("bench-test", Timing::test(), rounds),
            "default" => rampart_outages("bench-default", Timing::defaults(), rounds),
            "keepalived" => keepalived_outages(rounds),
            other => {
                panic!("unknown profile {other}: fast, fast-heartbeat, test, default or keepalived")
            }
        };
        let line = summary(profile, &outages);
        eprintln!("{line}");
        lines.push(line);
    }
    println!("{}", lines.join("\n"));
}

/// The namespace cluster for manual use (scripts/nscluster): started, described, and kept
/// until the file `RAMPART_NSCLUSTER_STOP` names exists or `RAMPART_NSCLUSTER_SECS` pass.
#[test]
#[ignore = "a cluster for manual use: run scripts/nscluster"]
fn manual_cluster() {
    let _g = serial();
    let secs: u64 = env_or("RAMPART_NSCLUSTER_SECS", "3600")
        .parse()
        .expect("RAMPART_NSCLUSTER_SECS");
    let stop = std::env::var("RAMPART_NSCLUSTER_STOP").ok();
    let timing = match env_or("RAMPART_NSCLUSTER_TIMING", "test").as_str() {
        "fast" => Timing::fast(),
        "fast-heartbeat" => Timing::fast_heartbeat(),
        "default" => Timing::defaults(),
        _ => Timing::test(),
    };
    let mut c = NsCluster::start("manual", timing);
    let mut text = String::from("namespace cluster up:\n");
    for n in c.nodes.values() {
        text.push_str(&format!(
            "  {:8} {:15} netns {}\n",
            n.name,
            n.host.address.to_string(),
            n.host.netns
        ));
    }
    text.push_str(&format!(
        "  {:8} {:15} netns {} (ipmi_sim of alpha on UDP 6230, beta 6231)\n",
        "bmc",
        c.bmc_host.address.to_string(),
        c.bmc_host.netns
    ));
    text.push_str(&format!(
        "  {:8} {:15} netns {}\n",
        "client",
        c.client.address.to_string(),
        c.client.netns
    ));
    for (v, a) in &c.vips {
        text.push_str(&format!("  VIP {v}: {a}\n"));
    }
    text.push_str(&format!(
        "store: {url}\nmanifests (git, committed on main): {src}\nlogs and BMC power files: {dir}\n\
         try: ip netns exec {client} {bin} status --store {url}\n\
         \x20    {dir}/alpha/poweroff crash    (alpha dies; its BMC still answers)\n",
        url = c.url,
        src = c.source.dir.display(),
        dir = c.dir.path().display(),
        client = c.client.netns,
        bin = BIN,
    ));
    println!("{text}");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if stop
            .as_ref()
            .is_some_and(|f| std::path::Path::new(f).exists())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = c.status();
    println!("namespace cluster: stopping");
}
