//! Planner benchmarks (issue #3). `cargo bench --bench planner` (add `-- --big` for the
//! 100,000-VM case). Inputs are generated, never committed: `rampart::synth` builds the
//! repository in memory; the steady state is planned, then one node is lost and confirmed
//! fenced, and that failover plan is what is timed.
//!
//! Targets: 5,000 VMs (each with a DRBD volume, half with a VIP) on 32 nodes under 20 ms;
//! 100,000 VMs on 1,000 nodes under 1 s and 500 MB. Figures go in BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts heap bytes in use and their peak, so the planner's own memory can be told apart
/// from its inputs (the generated repository, the parsed manifests, the observed state).
/// Over mimalloc, the allocator of the `rampart` binary.
struct Counting;
static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc(l) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { MiMalloc.dealloc(p, l) };
        IN_USE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    /// mimalloc's own, which often grows a block in place, as in the binary.
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { MiMalloc.realloc(p, l, new_size) };
        if !q.is_null() {
            if new_size >= l.size() {
                let now =
                    IN_USE.fetch_add(new_size - l.size(), Ordering::Relaxed) + new_size - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                IN_USE.fetch_sub(l.size() - new_size, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

use rampart::model::{Desired, FenceAttempt, Lease, Time};
use rampart::planner;
use rampart::synth::{self, MemSource, Shape};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn case(hypervisors: usize, vms: usize, runs: usize) {
    let t0 = Instant::now();
    let src = MemSource {
        files: synth::files(&Shape {
            hypervisors,
            vms,
            vip_every: 2,
        }),
    };
    let report = rampart::manifest::check(&src);
    let d = Desired::from_report(&report).expect("generated repository validates");
    drop(report);
    let load = t0.elapsed();

    // The steady state: plan from nothing, then let the hosts match it.
    let (placement, mut observed, _) = rampart::simulator::steady_state(&d, Time(0));

    // hv0000 is lost and confirmed fenced: its fail-over VMs move.
    let victim = synth::node_name(0);
    let n = observed.nodes.get_mut(&victim).unwrap();
    n.lease = Lease::Expired(Time(10_000));
    n.fence_attempts.push(FenceAttempt {
        level: 1,
        device: format!("ipmi-{victim}"),
        at: Time(11_000),
        ok: true,
        error: None,
    });
    let mut times: Vec<Duration> = Vec::new();
    let mut moved = 0;
    let inputs = IN_USE.load(Ordering::Relaxed);
    let mut plan_peak = 0;
    for _ in 0..runs {
        PEAK.store(IN_USE.load(Ordering::Relaxed), Ordering::Relaxed);
        let before = IN_USE.load(Ordering::Relaxed);
        let t = Instant::now();
        let plan = planner::plan(&d, &observed, &placement, Time(12_000));
        times.push(t.elapsed());
        plan_peak = plan_peak.max(PEAK.load(Ordering::Relaxed) - before);
        moved = plan
            .placement
            .vms
            .iter()
            .filter(|(vm, node)| placement.vms.get(*vm) != Some(*node))
            .count();
        std::hint::black_box(&plan);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{vms} VMs on {hypervisors} nodes: failover plan median {:.2} ms, min {:.2} ms, max {:.2} ms over {runs} runs; {moved} VMs moved; planner heap peak {:.0} MiB over inputs of {:.0} MiB (desired, observed, placement); generate+load {:.0} ms; process peak RSS {:.0} MiB",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        mib(plan_peak),
        mib(inputs),
        ms(load),
        peak_rss_mib()
    );
}

fn main() {
    let big = std::env::args().any(|a| a == "--big");
    case(32, 5_000, 30);
    if big {
        case(1_000, 100_000, 5);
    }
}
