//! The embedded demo: an in-process cluster — the controller and one agent per node running
//! their real loops, an in-memory store, and simulated hosts — converges the manifests, then
//! loses a hypervisor (a simulated power failure) and shows detection, fencing and failover.
//!
//! Everything physical here is simulated and says so; the decisions and the loops are the
//! production ones.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::agent::local::{self, LocalResources};
use crate::agent::runtime::{self as agent, AgentOptions, Event};
use crate::controller::{self, ControllerOptions, ControllerStats};
use crate::drivers::sim::{SimFencer, SimHost, SimShared};
use crate::invariants::{self, HostTruth};
use crate::model::{Desired, Time};
use crate::simulator::{status_table, SimNode, SimWorld};
use crate::store::cluster::ClusterStore;
use crate::store::memory::MemoryStore;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The hypervisor to kill; default: the one running the most fail-over VMs.
    pub kill: Option<String>,
    /// Multiplies every timing of the manifests (lease TTL, renew interval, watchdog, ...).
    pub timescale: f64,
    /// Give up waiting for convergence after this long (per phase).
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub converged: bool,
    pub violations: Vec<String>,
    pub killed: Option<String>,
    /// VMs that may fail over, have a live allowed node, and are not running at the end.
    pub not_recovered: Vec<String>,
}

impl DemoOutcome {
    pub fn success(&self) -> bool {
        self.converged && self.violations.is_empty() && self.not_recovered.is_empty()
    }
}

fn scale(d: &mut Desired, f: f64) {
    let s = |x: Duration| x.mul_f64(f);
    d.cluster.lease_ttl = s(d.cluster.lease_ttl);
    d.cluster.renew_interval = s(d.cluster.renew_interval);
    d.cluster.fence_timeout = s(d.cluster.fence_timeout);
    for n in d.nodes.values_mut() {
        n.watchdog = n.watchdog.map(s);
    }
}

struct Running {
    stops: BTreeMap<String, watch::Sender<bool>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

/// Whether the cluster has settled: the controller's last plan changes nothing and asks for
/// no fencing, and every powered node's host matches its assignment.
async fn settled(
    cs: &ClusterStore,
    shared: &SimShared,
    stats: &Arc<Mutex<ControllerStats>>,
) -> bool {
    let Ok(view) = cs.view().await else {
        return false;
    };
    {
        let s = stats.lock().unwrap();
        let Some(plan) = &s.last_plan else {
            return false;
        };
        if !plan.is_steady(&view.placement) {
            return false;
        }
    }
    let w = shared.world.lock().unwrap();
    for (n, x) in &w.nodes {
        if !x.powered {
            continue;
        }
        let Some(a) = view.assignments.get(n) else {
            continue;
        };
        if view
            .reports
            .get(n)
            .is_none_or(|r| r.generation != a.generation)
        {
            return false;
        }
        if !local::actions(a, &x.host, &shared.resources).is_empty() {
            return false;
        }
    }
    true
}

/// Run the demo. Prints live progress on stdout.
pub async fn run(mut desired: Desired, opts: DemoOptions) -> DemoOutcome {
    scale(&mut desired, opts.timescale);
    let d = Arc::new(desired);
    let store = MemoryStore::new();
    let cs = ClusterStore::new(
        store.clone() as Arc<dyn Store>,
        &format!("rampart/{}", d.cluster.name),
    );
    let mut world = SimWorld::default();
    for n in d.nodes.keys() {
        world.nodes.insert(n.clone(), SimNode::fresh());
    }
    let shared = SimShared {
        world: Arc::new(Mutex::new(world)),
        desired: d.clone(),
        resources: Arc::new(LocalResources::from_desired(&d)),
    };
    let epoch = Instant::now();
    let clock = move || Time(epoch.elapsed().as_millis() as u64);
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let printer = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let t = epoch.elapsed().as_secs_f64();
            println!("[{t:7.3}s] {:10} {}", e.source, e.message);
        }
    });
    let tick = (d.cluster.renew_interval / 4).max(Duration::from_millis(20));
    println!(
        "in-process cluster `{}`: {} nodes ({}), {} VMs, {} floating IPs",
        d.cluster.name,
        d.nodes.len(),
        d.nodes.keys().cloned().collect::<Vec<_>>().join(", "),
        d.vms.len(),
        d.vips.len()
    );
    println!(
        "controller and agents run their real loops; store in memory; hosts, DRBD, VMs, addresses and fence devices are SIMULATED"
    );
    println!(
        "timing x{}: lease TTL {:?}, renew every {:?}\n",
        opts.timescale, d.cluster.lease_ttl, d.cluster.renew_interval
    );
    let mut running = Running {
        stops: BTreeMap::new(),
        handles: Vec::new(),
    };
    for n in d.nodes.keys() {
        let (stop_tx, stop_rx) = watch::channel(false);
        running.stops.insert(n.clone(), stop_tx);
        let o = AgentOptions {
            node: n.clone(),
            lease_ttl: d.cluster.lease_ttl,
            renew_interval: d.cluster.renew_interval,
            tick,
            poll: d.cluster.renew_interval,
            watchdog: false,
            heartbeat: None,
        };
        running.handles.push(tokio::spawn(agent::run(
            cs.clone(),
            SimHost::drivers(&shared, n),
            (*shared.resources).clone(),
            o,
            clock,
            Some(tx.clone()),
            Arc::new(Mutex::new(agent::AgentStats::default())),
            stop_rx,
        )));
    }
    let stats = Arc::new(Mutex::new(ControllerStats::default()));
    let (desired_tx, desired_rx) = watch::channel(Arc::new(controller::Revision::from(d.clone())));
    let (ctl_stop_tx, ctl_stop_rx) = watch::channel(false);
    running.handles.push(tokio::spawn(controller::run(
        cs.clone(),
        desired_rx,
        Arc::new(SimFencer {
            shared: shared.clone(),
        }),
        ControllerOptions {
            id: "controller-1".into(),
            lease_ttl: d.cluster.lease_ttl,
            tick,
            fence_timeout: d.cluster.fence_timeout,
        },
        clock,
        Some(tx.clone()),
        stats.clone(),
        ctl_stop_rx,
    )));
    drop(desired_tx);

    // A monitor checks the simulated hosts against S1 and S3 all along.
    let world_violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let monitor = {
        let shared = shared.clone();
        let cs = cs.clone();
        let out = world_violations.clone();
        let d = d.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick / 2).await;
                let Ok(view) = cs.view().await else { continue };
                let w = shared.world.lock().unwrap();
                let truth: BTreeMap<String, HostTruth> = w
                    .nodes
                    .iter()
                    .map(|(n, x)| {
                        (
                            n.clone(),
                            HostTruth {
                                powered: x.powered,
                                lease_expired: !view.leases.contains_key(n)
                                    && view.reports.contains_key(n),
                                host: &x.host,
                            },
                        )
                    })
                    .collect();
                for v in invariants::check_hosts(&d, &truth) {
                    let s = v.to_string();
                    let _ = tx.send(Event {
                        source: "monitor".into(),
                        message: format!("INVARIANT VIOLATION {s}"),
                    });
                    out.lock().unwrap().push(s);
                }
            }
        })
    };

    let wait_settled = |label: &'static str| {
        let cs = cs.clone();
        let shared = shared.clone();
        let stats = stats.clone();
        async move {
            let start = Instant::now();
            let mut steady_since: Option<Instant> = None;
            while start.elapsed() < opts.timeout {
                tokio::time::sleep(tick).await;
                if settled(&cs, &shared, &stats).await {
                    // Settled for a few ticks in a row, not just between two steps.
                    let s = *steady_since.get_or_insert_with(Instant::now);
                    if s.elapsed() >= tick * 4 {
                        return Some(start.elapsed());
                    }
                } else {
                    steady_since = None;
                }
            }
            let _ = label;
            None
        }
    };

    let mut converged = wait_settled("start").await.is_some();
    println!(
        "\n{}",
        if converged {
            "converged:"
        } else {
            "did NOT converge:"
        }
    );
    println!("{}", status_table(&d, &shared.world.lock().unwrap()));

    let victim = opts.kill.clone().or_else(|| {
        let w = shared.world.lock().unwrap();
        d.nodes
            .values()
            .filter(|n| n.is_hypervisor())
            .max_by_key(|n| {
                let host = &w.nodes[&n.name].host;
                let failover = d
                    .vms
                    .values()
                    .filter(|v| v.failover && host.vm_running(&v.name))
                    .count();
                (failover, std::cmp::Reverse(n.name.clone()))
            })
            .map(|n| n.name.clone())
    });
    if let (true, Some(v)) = (converged, &victim) {
        let t = epoch.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {:10} power failure of {v} (simulated): its VMs, addresses and DRBD roles are gone\n", "demo");
        shared.world.lock().unwrap().power_off(v);
        if let Some(s) = running.stops.get(v) {
            let _ = s.send(true);
        }
        // Wait until the lost node is fenced and everything has settled again.
        let start = Instant::now();
        let mut done = false;
        while start.elapsed() < opts.timeout && !done {
            tokio::time::sleep(tick).await;
            let fenced = cs
                .view()
                .await
                .map(|v2| v2.fence.get(v).is_some_and(|a| a.iter().any(|x| x.ok)))
                .unwrap_or(false);
            let deadline_only = d.nodes[v].watchdog.is_some()
                && start.elapsed() > d.cluster.lease_ttl * 2 + d.nodes[v].watchdog.unwrap();
            if fenced || deadline_only {
                done = true;
            }
        }
        converged = done && wait_settled("failover").await.is_some();
        println!(
            "\n{}",
            if converged {
                "converged after the failure:"
            } else {
                "did NOT converge after the failure:"
            }
        );
        println!("{}", status_table(&d, &shared.world.lock().unwrap()));
    }

    // Stop everything; every task this demo started ends here.
    for s in running.stops.values() {
        let _ = s.send(true);
    }
    let _ = ctl_stop_tx.send(true);
    for h in running.handles {
        let _ = h.await;
    }
    monitor.abort();
    drop(tx);
    let _ = printer.await;

    let mut violations = world_violations.lock().unwrap().clone();
    violations.extend(stats.lock().unwrap().violations.clone());
    let w = shared.world.lock().unwrap();
    let not_recovered: Vec<String> = d
        .vms
        .values()
        .filter(|vm| {
            let live_allowed = vm.candidates.iter().any(|c| w.nodes[c].powered);
            let runs = w
                .nodes
                .values()
                .any(|x| x.powered && x.host.vm_running(&vm.name));
            vm.failover && live_allowed && !runs
        })
        .map(|vm| vm.name.clone())
        .collect();
    DemoOutcome {
        converged,
        violations,
        killed: victim,
        not_recovered,
    }
}
