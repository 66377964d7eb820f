//! The torture run (issue #6): the namespace cluster of `support/cluster_ns.rs` on real parts,
//! random faults round after round (hypervisor crashes, partitions, etcd members lost and
//! restarted, the leading controller killed, the witness lost), the safety rules checked
//! continuously (S1 on the hosts: no VIP on two namespaces in one sweep, no VM on two
//! libvirtds; S1 and S4 on every status reading) and convergence after each round.
//!
//! Seeded and bounded: `RAMPART_TORTURE_SEED` (default 6), `RAMPART_TORTURE_ROUNDS` (default
//! 5, enough for CI) and `RAMPART_TORTURE_SECS` (default 300: no new round starts after
//! that). It prints the seed, rounds run, faults injected and violations (which must be 0).

#![cfg(all(feature = "etcd", feature = "libvirt"))]

#[path = "support/cluster_ns.rs"]
mod cluster_ns;
#[path = "support/libvirtd.rs"]
mod libvirtd;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/status_check.rs"]
mod status_check;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_ns::*;
use serde_json::Value;

/// xorshift64*: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Everything placed runs where placed, every node acknowledged, every VIP with its VM.
fn settled(s: &Value) -> bool {
    placement(s).len() == VMS.len() && converged_on(s, &NODES)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    CrashHypervisor,
    Partition,
    EtcdMemberLoss,
    LeaderControllerKilled,
    WitnessCrash,
}

const FAULTS: [Fault; 5] = [
    Fault::CrashHypervisor,
    Fault::Partition,
    Fault::EtcdMemberLoss,
    Fault::LeaderControllerKilled,
    Fault::WitnessCrash,
];

#[test]
fn torture() {
    let seed = env_u64("RAMPART_TORTURE_SEED", 6);
    let rounds = env_u64("RAMPART_TORTURE_ROUNDS", 5);
    let budget = Duration::from_secs(env_u64("RAMPART_TORTURE_SECS", 300));
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut c = NsCluster::start("torture", Timing::test());
    let started = Instant::now();
    let mut faults: BTreeMap<String, u32> = BTreeMap::new();
    let mut run = 0;
    let mut fenced = 0;
    // Every kind once in the first five rounds (in a seeded order), then whatever comes.
    let mut order = FAULTS;
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for round in 1..=rounds {
        if started.elapsed() > budget {
            eprintln!("[torture] time budget {budget:?} spent: stopping after {run} rounds");
            break;
        }
        // Every kind once per five rounds (in a seeded order), then whatever comes.
        let fault = match order.get((round - 1) as usize) {
            Some(f) => *f,
            None => FAULTS[rng.below(FAULTS.len())],
        };
        let t = Instant::now();
        let s = c.status().expect("status before the round");
        let what = match fault {
            Fault::CrashHypervisor | Fault::Partition => {
                let victim = rng.pick(&HYPERVISORS).to_string();
                let before = c.bmc_actions(&victim).len();
                if matches!(fault, Fault::CrashHypervisor) {
                    c.crash(&victim);
                } else {
                    c.cut_link(&victim);
                }
                let v = victim.clone();
                c.wait_from(t, "fenced and failed over", Duration::from_secs(45), |s| {
                    lease(s, &v) != "alive"
                        && VMS
                            .iter()
                            .filter(|x| x.3)
                            .all(|(vm, ..)| runs_on(s, vm, other(&v)))
                        && vips_follow(s)
                });
                // Its failover VMs may all have run on the other node already: wait for the
                // fence too (the pinned VMs on it are reason enough to fence it).
                let deadline = Instant::now() + Duration::from_secs(30);
                while c.bmc_actions(&victim).len() == before && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                assert_eq!(
                    c.bmc_actions(&victim).len(),
                    before + 1,
                    "{victim} fenced exactly once"
                );
                fenced += 1;
                if matches!(fault, Fault::Partition) {
                    c.heal_link(&victim);
                }
                c.power_on(&victim);
                format!("{fault:?} {victim}")
            }
            Fault::EtcdMemberLoss => {
                let m = rng.pick(&NODES).to_string();
                c.kill_etcd(&m);
                let before = placement(&s);
                c.hold(
                    "nothing moves with one etcd member down",
                    Duration::from_secs(4),
                    |s| placement(s) == before,
                );
                c.start_etcd(&m);
                format!("{fault:?} {m}")
            }
            Fault::LeaderControllerKilled => {
                let leader = s["leader"].as_str().expect("a leader").to_string();
                c.kill_controller(&leader);
                let l = leader.clone();
                c.wait("another controller leads", Duration::from_secs(20), |s| {
                    s["leader"].as_str().is_some_and(|x| x != l)
                });
                c.start_controller(&leader);
                format!("{fault:?} {leader}")
            }
            Fault::WitnessCrash => {
                c.crash("witness");
                let before = placement(&s);
                c.hold(
                    "nothing moves without the witness",
                    Duration::from_secs(4),
                    |s| placement(s) == before,
                );
                c.power_on("witness");
                "WitnessCrash".to_string()
            }
        };
        *faults.entry(format!("{fault:?}")).or_default() += 1;
        let (_, took) = c.wait_from(
            t,
            "the cluster converges after the round",
            Duration::from_secs(60),
            settled,
        );
        run += 1;
        eprintln!("[torture] round {round}: {what}; converged {took:.2?} after the fault");
    }
    let report = c.stop_monitor().expect("monitor");
    let total: u32 = faults.values().sum();
    eprintln!(
        "[torture] seed {seed}: {run} rounds, {total} faults injected {faults:?}, {fenced} fenced; S1 monitor: {} address sweeps, {} VM sweeps; status errors {}; violations: {}",
        report.sweeps,
        report.vm_sweeps,
        c.status_errors,
        report.violations.len()
    );
    assert!(
        report.violations.is_empty(),
        "{:?}\n{}",
        report.violations,
        c.logs()
    );
    assert!(run >= 1 || rounds == 0, "no round ran");
}
