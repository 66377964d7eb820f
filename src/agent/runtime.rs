//! The agent loop: hold the node's lease, take newer assignments, converge the host through
//! the drivers, report. Level-triggered: every tick compares the assignment with what the host
//! has, whatever woke it.
//!
//! Safety:
//! - S3: the lease is kept beside the work, so a slow host action or a store call retried for
//!   its whole budget never delays a renewal. When the lease has not been renewed for longer
//!   than [`lease_margin`] the agent assumes it is about to run out (or has): it
//!   cuts short whatever it was doing and stops everything on the host — addresses down, VMs
//!   stopped, volumes Secondary — before the controller may move them. It does nothing else
//!   until it holds a lease again and has re-read its assignment (so too after it starts).
//! - S4: an assignment is taken only if its generation is newer than the one held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::local::{self, Action, LocalResources};
use crate::drivers::config::HostConfig;
use crate::drivers::Drivers;
use crate::model::{Assignment, FailedAction, HostReport, Time};
use crate::store::cluster::ClusterStore;
use crate::store::{ensure_watch, next_event, LeaseId, Op, StoreError, Txn, WatchStream};

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node: String,
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    /// How often the lease keeper wakes.
    pub tick: Duration,
    /// How often the work loop compares and acts when nothing wakes it sooner: it also wakes
    /// at once on a change to its assignment or to the published resources (store watches),
    /// and when its lease may no longer be counted on.
    pub poll: Duration,
    /// Feed the watchdog device the node's configuration names. Off for simulated hosts:
    /// their node's real watchdog is none of their business.
    pub watchdog: bool,
    /// Where this agent answers the controller's heartbeat probes (already bound: see
    /// [`crate::agent::heartbeat`]); published in its lease key. None: no heartbeats, the node
    /// is found lost by its lease alone.
    pub heartbeat: Option<std::net::SocketAddr>,
}

/// Something worth showing an operator, from an agent or the controller.
#[derive(Debug, Clone)]
pub struct Event {
    pub source: String,
    pub message: String,
}

fn emit(events: &Option<mpsc::UnboundedSender<Event>>, source: &str, message: String) {
    if let Some(tx) = events {
        let _ = tx.send(Event {
            source: source.to_string(),
            message,
        });
    }
}

struct State {
    held: Assignment,
    demoted: bool,
    /// The held assignment may be out of date: nothing read since the agent started or since
    /// it last went without a lease (when the controller may have moved its work). Nothing
    /// is done on the host until a read succeeds.
    stale: bool,
    backoff: Duration,
    retry_at: Instant,
    last_report: Option<HostReport>,
    /// Write the report even if it has not changed: the lease keeper wrote one meanwhile.
    rewrite_report: bool,
    /// The rendered files last read from the host, for the report.
    artifacts: std::collections::BTreeMap<String, String>,
    /// They must be read again: the agent acted or its configuration changed.
    artifacts_due: bool,
    passes_since_artifacts: u32,
    last_error: Option<FailedAction>,
}

/// What an agent shows on its API.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AgentStats {
    pub node: String,
    pub lease_healthy: bool,
    pub held_generation: u64,
    pub reconciles: u64,
    pub actions: u64,
    pub failed_actions: u64,
    pub self_demotions: u64,
    /// The last report that reached the store.
    pub last_report: Option<HostReport>,
    /// What the host had when last observed, also while the store is unreachable (when
    /// `last_report` is stale and this API is the only way to see a self-demotion's result).
    pub host: Option<HostReport>,
}

/// Run the agent until `stop` turns true. `clock` gives the time stamped on failed actions.
/// `res` is used until the controller has published newer cluster resources in the store.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cs: ClusterStore,
    drivers: Drivers,
    mut res: LocalResources,
    opts: AgentOptions,
    clock: impl Fn() -> Time + Send,
    events: Option<mpsc::UnboundedSender<Event>>,
    stats: std::sync::Arc<std::sync::Mutex<AgentStats>>,
    mut stop: watch::Receiver<bool>,
) {
    let me = opts.node.clone();
    let mut st = State {
        held: Assignment::default(),
        demoted: false,
        stale: true,
        backoff: Duration::ZERO,
        retry_at: Instant::now(),
        last_report: None,
        rewrite_report: false,
        artifacts: Default::default(),
        artifacts_due: true,
        passes_since_artifacts: 0,
        last_error: None,
    };
    let (lease_tx, lease_rx) = watch::channel(None);
    let held_generation = AtomicU64::new(0);
    let keeper = keep_lease(&cs, &drivers, &held_generation, &opts, lease_tx);
    // The watchdog (when the node's configuration names one) is fed beside the work.
    let gate = super::watchdog::FeedGate::default();
    let watchdog = tokio::spawn({
        let config = drivers.config.clone();
        let (lease_rx, gate, stop) = (lease_rx.clone(), gate.clone(), stop.clone());
        let on = opts.watchdog;
        async move {
            if on {
                super::watchdog::run(config, lease_rx, gate, stop).await;
            }
        }
    });
    let work = async {
        let mut ticker = tokio::time::interval(opts.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut assignment_watch: Option<WatchStream> = None;
        let mut resources_watch: Option<WatchStream> = None;
        let mut config_watch: Option<WatchStream> = None;
        // The node's driver configuration must be (re)read: at start and after a change.
        let mut config_dirty = true;
        let mut was_healthy = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => {}
                // Only while the lease was healthy: once it isn't, this resolves at once.
                _ = lease_lost(lease_rx.clone()), if was_healthy => {}
                ev = next_event(&mut assignment_watch) => if !matches!(ev, Some(Ok(_))) { assignment_watch = None },
                ev = next_event(&mut resources_watch) => if !matches!(ev, Some(Ok(_))) { resources_watch = None },
                ev = next_event(&mut config_watch) => {
                    config_dirty = true;
                    if !matches!(ev, Some(Ok(_))) { config_watch = None }
                }
                // A driver saw the host change by itself (a VM crashed, a peer disconnected).
                _ = drivers.changed.notified() => st.artifacts_due = true,
            }
            if *stop.borrow() {
                return;
            }
            let healthy = match *lease_rx.borrow() {
                // Before the first try for a lease there is nothing to judge by: a restarted
                // agent must not stop the VMs of its host just because it has only started.
                None => continue,
                Some(until) => until.is_some_and(|t| Instant::now() < t),
            };
            was_healthy = healthy;
            // Watches that broke (or were never made) are made again while the store answers;
            // never for long, so a dying store cannot hold up the work loop.
            if healthy {
                ensure_watch(
                    cs.store.as_ref(),
                    &cs.assignment_key(&me),
                    &mut assignment_watch,
                )
                .await;
                ensure_watch(cs.store.as_ref(), &cs.resources_key(), &mut resources_watch).await;
                // Whatever changed while there was no watch is read again, and read every
                // pass while no watch can be made (nothing would say it changed).
                config_dirty |= ensure_watch(
                    cs.store.as_ref(),
                    &cs.host_config_key(&me),
                    &mut config_watch,
                )
                .await
                    || config_watch.is_none();
            }
            {
                let mut s = stats.lock().unwrap();
                s.node = me.clone();
                s.lease_healthy = healthy;
                s.held_generation = st.held.generation;
                s.last_report = st.last_report.clone();
            }
            if !healthy {
                st.stale = true;
                // The lease keeper writes a report before the next lease: write ours again
                // after it, whatever we wrote before.
                st.rewrite_report = true;
                // S3: stop everything before the lease can run out, then wait for a lease. Every
                // tick until the host is clean: a failed stop must not leave a VM running, so
                // each action is tried even when an earlier one failed. And every tick after
                // that too: a driver call cut off when the lease went (a `drbdadm primary`, a
                // domain start on a blocking thread) can still finish after the host was found
                // clean, and must be undone — the watchdog is fed only while it stays clean.
                if let Ok(host) = drivers.observe(st.held.generation).await {
                    stats.lock().unwrap().host = Some(host.clone());
                    let list = local::self_demote(&host, &res);
                    if list.is_empty() {
                        st.demoted = true;
                        gate.clean.store(true, Ordering::Relaxed);
                    } else {
                        gate.clean.store(false, Ordering::Relaxed);
                        emit(
                            &events,
                            &me,
                            if st.demoted {
                                "cannot renew its lease: something came up again after self-demotion; stops it".into()
                            } else {
                                "cannot renew its lease: stops everything (self-demotion)".into()
                            },
                        );
                        st.demoted = false;
                        stats.lock().unwrap().self_demotions += 1;
                        // Stage by stage as a pass goes (VM stops together, so twenty VMs do
                        // not take twenty stop timeouts), every action tried even when an
                        // earlier one failed.
                        let _ = run_stages(&drivers, &list, &me, &events, true).await;
                    }
                } else {
                    // A host that cannot be looked at is not known to be clean.
                    gate.clean.store(false, Ordering::Relaxed);
                }
                continue;
            }
            // S3 holds only if this pass cannot outlast the lease: a store call may retry for its
            // whole call budget when the store is unreachable, a host action may take long, and a
            // few of them in a row would keep the agent from noticing in time that it must stop
            // everything. So the pass is cut short when the lease may no longer be counted on;
            // the next tick finds it unhealthy and demotes.
            let pass = async {
                // The controller publishes what agents need from the manifests (addresses of VIPs).
                if let Ok(Some(r)) = cs.get::<LocalResources>(&cs.resources_key()).await {
                    res = r;
                }
                // ... and what this node's real drivers need (domain XML, resource files).
                if config_dirty {
                    match cs.get::<HostConfig>(&cs.host_config_key(&me)).await {
                        Ok(Some(c)) => {
                            if *drivers.config.get() != c {
                                drivers.config.set(c);
                                st.artifacts_due = true;
                            }
                            config_dirty = false;
                        }
                        Ok(None) => config_dirty = false,
                        Err(e) => emit(
                            &events,
                            &me,
                            format!("cannot read its host configuration: {e}"),
                        ),
                    }
                }
                // Take a newer assignment (S4).
                match cs.get::<Assignment>(&cs.assignment_key(&me)).await {
                    Ok(Some(a)) if a.generation > st.held.generation => {
                        emit(
                            &events,
                            &me,
                            format!("takes assignment generation {}", a.generation),
                        );
                        st.held = a;
                        held_generation.store(st.held.generation, Ordering::Relaxed);
                        st.stale = false;
                        st.backoff = Duration::ZERO;
                        st.retry_at = Instant::now();
                    }
                    Ok(_) => st.stale = false,
                    Err(e) => emit(&events, &me, format!("cannot read its assignment: {e}")),
                }
                if !st.stale {
                    st.demoted = false;
                    gate.clean.store(false, Ordering::Relaxed);
                }
                // The host as observed before acting, when acting changed nothing: reported as
                // it is instead of observed a second time.
                let mut unchanged: Option<HostReport> = None;
                if !st.stale && Instant::now() >= st.retry_at {
                    match drivers.observe(st.held.generation).await {
                        Ok(host) => {
                            let list = local::actions(&st.held, &host, &res);
                            let result = run_actions(&drivers, &list, &me, &events).await;
                            {
                                let mut s = stats.lock().unwrap();
                                s.reconciles += 1;
                                s.actions += list.len() as u64;
                                s.failed_actions += u64::from(result.is_err());
                            }
                            if !list.is_empty() {
                                st.artifacts_due = true;
                            } else if result.is_ok() {
                                unchanged = Some(host);
                            }
                            match result {
                                Ok(()) => {
                                    st.backoff = Duration::ZERO;
                                    if !list.is_empty() {
                                        st.last_error = None;
                                    }
                                }
                                Err((act, err)) => {
                                    // Back off: 1 tick, doubling, at most 16 ticks.
                                    st.backoff = (st.backoff * 2).clamp(opts.tick, opts.tick * 16);
                                    st.retry_at = Instant::now() + st.backoff;
                                    st.last_error = Some(FailedAction {
                                        action: act.to_string(),
                                        error: err,
                                        at: clock(),
                                    });
                                }
                            }
                        }
                        Err(e) => emit(&events, &me, format!("cannot observe its host: {e}")),
                    }
                }
                // Report what the host has now.
                let now = match unchanged {
                    Some(h) => Ok(h),
                    None => drivers.observe(st.held.generation).await,
                };
                if let Ok(mut report) = now {
                    report.last_error = st.last_error.clone();
                    // The rendered files change when the agent acts or its configuration does,
                    // or by hand: read again then, and every ARTIFACTS_EVERY passes.
                    st.passes_since_artifacts += 1;
                    if st.artifacts_due || st.passes_since_artifacts >= ARTIFACTS_EVERY {
                        st.artifacts = drivers.artifacts().await;
                        st.artifacts_due = false;
                        st.passes_since_artifacts = 0;
                    }
                    report.artifacts = st.artifacts.clone();
                    stats.lock().unwrap().host = Some(report.clone());
                    if (st.rewrite_report || st.last_report.as_ref() != Some(&report))
                        && cs.put(&cs.report_key(&me), &report, None).await.is_ok()
                    {
                        st.last_report = Some(report);
                        st.rewrite_report = false;
                    }
                }
            };
            tokio::select! {
                _ = pass => {}
                _ = lease_lost(lease_rx.clone()) => emit(
                    &events,
                    &me,
                    "its lease may run out: cut short what it was doing".into(),
                ),
            }
            // Show this pass's outcome now, not a tick later.
            {
                let mut s = stats.lock().unwrap();
                s.held_generation = st.held.generation;
                s.last_report = st.last_report.clone();
            }
        }
    };
    // The lease is kept beside the work, never behind it.
    tokio::select! {
        _ = keeper => {}
        _ = work => {}
    }
    // An orderly stop: the watchdog task sees `stop` too and disarms the device.
    let _ = tokio::time::timeout(Duration::from_secs(1), watchdog).await;
}

/// Keep the node's lease, beside the reconcile loop so that nothing the agent does on its host
/// (a VM that takes a minute to shut down, a store call retried for its whole budget) delays
/// a renewal. Publishes, from its first try on, until when the lease may be counted on: its
/// last renewal plus [`lease_margin`], which leaves the rest of the TTL to stop everything
/// (S3); `Some(None)` while there is no lease. Never returns.
async fn keep_lease(
    cs: &ClusterStore,
    drivers: &Drivers,
    held_generation: &AtomicU64,
    opts: &AgentOptions,
    until: watch::Sender<Option<Option<Instant>>>,
) {
    let margin = lease_margin(opts.lease_ttl, opts.renew_interval);
    let mut lease: Option<LeaseId> = None;
    let mut last_renew = Instant::now();
    let mut ticker = tokio::time::interval(opts.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Taken before each call: the lease runs at least from then.
        let now = Instant::now();
        match lease {
            None => {
                let granted: Result<LeaseId, String> = async {
                    // A node that comes (back) up shows what its host has now before it shows
                    // a live lease: otherwise the controller would take the report from before
                    // (the VMs it ran before a power-off or a self-demotion) for current.
                    // Both in one transaction: a controller woken by the report alone would
                    // see a node with a report and no lease, and take it for lost.
                    let report = drivers
                        .observe(held_generation.load(Ordering::Relaxed))
                        .await
                        .map_err(|e| e.to_string())?;
                    let lease = cs
                        .store
                        .grant_lease(opts.lease_ttl)
                        .await
                        .map_err(|e| e.to_string())?;
                    let txn = Txn::new().and_then([
                        Op::put(
                            cs.report_key(&opts.node),
                            serde_json::to_vec(&report).expect("reports serialize"),
                        ),
                        cs.lease_op(&opts.node, opts.heartbeat, lease),
                    ]);
                    cs.store.txn(txn).await.map_err(|e| e.to_string())?;
                    Ok(lease)
                }
                .await;
                if let Ok(l) = granted {
                    lease = Some(l);
                    last_renew = now;
                }
            }
            Some(l) if now.duration_since(last_renew) >= opts.renew_interval => {
                // A call stuck on an unreachable store is given up in time to try again: at
                // the point the lease stops being counted on, then every renew interval (the
                // lease may have survived: an etcd restart keeps leases).
                let deadline = last_renew + margin;
                let limit = if now < deadline {
                    deadline
                } else {
                    now + opts.renew_interval
                };
                match tokio::time::timeout_at(limit, cs.store.keep_alive(l)).await {
                    Ok(Ok(_)) => last_renew = now,
                    Ok(Err(StoreError::LeaseNotFound { .. })) => lease = None,
                    Ok(Err(_)) | Err(_) => {}
                }
            }
            Some(_) => {}
        }
        let next = Some(lease.map(|_| last_renew + margin));
        until.send_if_modified(|v| {
            let changed = *v != next;
            *v = next;
            changed
        });
    }
}

/// Passes between two reads of the host's rendered files when nothing says they changed
/// (an edit by hand shows in the report within this many polls).
const ARTIFACTS_EVERY: u32 = 10;

/// How long after its last renewal a lease is still counted on: the TTL less the time kept
/// for stopping everything before it runs out (S3), which is the renew interval but at least
/// a third of the TTL. (With only one renew interval kept, a node cut off at TTL 2 s and
/// renew 500 ms was seen still holding its VMs at the lease's end on a busy machine.)
pub fn lease_margin(ttl: Duration, renew_interval: Duration) -> Duration {
    ttl.saturating_sub(renew_interval.max(ttl / 3))
}

/// Resolves once the lease may no longer be counted on (at once if it may not now).
async fn lease_lost(mut until: watch::Receiver<Option<Option<Instant>>>) {
    loop {
        let Some(Some(t)) = *until.borrow_and_update() else {
            return;
        };
        if Instant::now() >= t {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(t) => {}
            changed = until.changed() => if changed.is_err() { return },
        }
    }
}

/// How many actions of one stage run at once.
const STAGE_PARALLEL: usize = 8;

/// Carry out a pass's actions in their order, stage by stage: a run of consecutive VM starts
/// or VM stops does not depend within itself, so its actions run together (a node taking over
/// twenty VMs does not start them one after another). Everything else goes one at a time:
/// volumes and migrations, and addresses too (two VIPs with one gateway would race to add its
/// route; their duplicate-address probes already ran beside the VM starts). A failure ends
/// the pass after its stage: the next pass goes on from what the host then has.
async fn run_actions(
    drivers: &Drivers,
    list: &[Action],
    me: &str,
    events: &Option<mpsc::UnboundedSender<Event>>,
) -> Result<(), (Action, String)> {
    drivers.prepare(list).await;
    run_stages(drivers, list, me, events, false).await
}

/// Run `list` stage by stage (see [`stages`]), at most [`STAGE_PARALLEL`] actions of a stage at
/// once (a slow one holds back no more than its own slot). Returns the first failure; with
/// `keep_going` false a failure ends the run after its stage, otherwise every stage runs
/// (self-demotion: a failed stop must not keep the rest from being tried).
async fn run_stages(
    drivers: &Drivers,
    list: &[Action],
    me: &str,
    events: &Option<mpsc::UnboundedSender<Event>>,
    keep_going: bool,
) -> Result<(), (Action, String)> {
    use futures_util::StreamExt;
    let during = if keep_going {
        " during self-demotion"
    } else {
        ""
    };
    let mut failed = None;
    for stage in stages(list) {
        let started: Vec<_> = stage.iter().map(|a| drivers.apply(a)).collect();
        let results: Vec<_> = futures_util::stream::iter(started)
            .buffered(STAGE_PARALLEL)
            .collect()
            .await;
        for (a, r) in stage.iter().zip(results) {
            match r {
                Ok(()) => emit(events, me, a.to_string()),
                Err(e) => {
                    emit(events, me, format!("{a} FAILED{during}: {e}"));
                    failed.get_or_insert((a.clone(), e.to_string()));
                }
            }
        }
        if failed.is_some() && !keep_going {
            break;
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The stages of [`run_actions`]: runs of consecutive actions of one kind that may run
/// together, and every other action alone.
fn stages(list: &[Action]) -> Vec<&[Action]> {
    let together = |a: &Action, b: &Action| {
        std::mem::discriminant(a) == std::mem::discriminant(b)
            && matches!(a, Action::StartVm { .. } | Action::StopVm { .. })
    };
    list.chunk_by(|a, b| together(a, b)).collect()
}

#[cfg(test)]
mod margin_tests {
    use super::lease_margin;
    use std::time::Duration;

    #[test]
    fn at_least_a_third_of_the_lease_is_kept_for_stopping_everything() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(lease_margin(s(10), s(2)), s(10) - s(10) / 3);
        assert_eq!(lease_margin(s(2), ms(500)), s(2) - s(2) / 3);
        assert_eq!(lease_margin(s(10), s(5)), s(5));
        assert_eq!(lease_margin(s(1), ms(250)), s(1) - s(1) / 3);
    }
}

#[cfg(test)]
mod stage_tests {
    use super::*;
    use crate::drivers::{DriverError, Vms};
    use crate::model::VmObserved;
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// VMs that take 200 ms to start or stop, counting how many run at once; `bad` fails.
    #[derive(Default)]
    struct SlowVms {
        running: AtomicUsize,
        most: AtomicUsize,
        calls: AtomicUsize,
    }

    impl SlowVms {
        async fn work(&self, vm: &str) -> Result<(), DriverError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if vm == "bad" {
                return Err(DriverError::new(format!("start vm {vm}"), "it would not"));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl Vms for SlowVms {
        async fn list(&self) -> Result<BTreeMap<String, VmObserved>, DriverError> {
            Ok(BTreeMap::new())
        }
        async fn start(&self, vm: &str) -> Result<(), DriverError> {
            self.work(vm).await
        }
        async fn stop(&self, vm: &str) -> Result<(), DriverError> {
            self.work(vm).await
        }
        async fn migrate(&self, vm: &str, _to: &str) -> Result<(), DriverError> {
            self.work(vm).await
        }
    }

    fn drivers(vms: Arc<SlowVms>) -> Drivers {
        let desired = crate::model::reference_desired();
        let shared = crate::drivers::sim::SimShared {
            world: Default::default(),
            resources: Arc::new(LocalResources::from_desired(&desired)),
            desired: Arc::new(desired),
        };
        let mut d = crate::drivers::sim::SimHost::drivers(&shared, "alpha");
        d.vms = vms;
        d
    }

    fn start(vm: &str) -> Action {
        Action::StartVm { vm: vm.into() }
    }

    #[test]
    fn runs_of_vm_starts_and_stops_are_stages_the_rest_go_alone() {
        let list = vec![
            Action::StopVm { vm: "a".into() },
            Action::StopVm { vm: "b".into() },
            Action::Demote { volume: "a".into() },
            Action::Demote { volume: "b".into() },
            Action::Promote { volume: "c".into() },
            start("c"),
            start("d"),
            Action::MigrateVm {
                vm: "e".into(),
                to: "beta".into(),
            },
            Action::MigrateVm {
                vm: "f".into(),
                to: "beta".into(),
            },
            Action::AddAddress {
                vip: "g".into(),
                address: "192.0.2.7/24".into(),
            },
            Action::AddAddress {
                vip: "h".into(),
                address: "192.0.2.8/24".into(),
            },
        ];
        let sizes: Vec<usize> = stages(&list).iter().map(|s| s.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1, 1, 2, 1, 1, 1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stage_of_vm_starts_runs_together() {
        let vms = Arc::new(SlowVms::default());
        let d = drivers(vms.clone());
        let list: Vec<Action> = ["a", "b", "c", "d"].iter().map(|v| start(v)).collect();
        let t = Instant::now();
        run_actions(&d, &list, "alpha", &None).await.unwrap();
        // Virtual time: four starts of 200 ms each, together.
        assert_eq!(t.elapsed(), Duration::from_millis(200));
        assert_eq!(vms.most.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_ends_the_pass_after_its_stage() {
        let vms = Arc::new(SlowVms::default());
        let d = drivers(vms.clone());
        let list = vec![
            start("a"),
            start("bad"),
            start("c"),
            Action::StopVm { vm: "x".into() },
        ];
        let (failed, why) = run_actions(&d, &list, "alpha", &None)
            .await
            .expect_err("bad fails");
        assert_eq!(failed, start("bad"));
        assert!(why.contains("it would not"), "{why}");
        // The whole stage of starts ran (c too); the stop after it did not.
        assert_eq!(vms.calls.load(Ordering::SeqCst), 3);
        assert_eq!(vms.most.load(Ordering::SeqCst), 3);
        assert_eq!(vms.running.load(Ordering::SeqCst), 0);
    }

    /// Self-demotion's way: every stage runs past a failure; a stage never has more than
    /// STAGE_PARALLEL at once.
    #[tokio::test(start_paused = true)]
    async fn keep_going_runs_every_stage_past_a_failure_at_most_eight_at_once() {
        let vms = Arc::new(SlowVms::default());
        let d = drivers(vms.clone());
        let mut list: Vec<Action> = (0..10)
            .map(|i| Action::StopVm {
                vm: if i == 0 {
                    "bad".into()
                } else {
                    format!("v{i}")
                },
            })
            .collect();
        list.push(Action::MigrateVm {
            vm: "m".into(),
            to: "beta".into(),
        });
        let (failed, _) = run_stages(&d, &list, "alpha", &None, true)
            .await
            .expect_err("bad fails");
        assert_eq!(failed, Action::StopVm { vm: "bad".into() });
        // All ten stops and the migration after them ran; never more than eight at once.
        assert_eq!(vms.calls.load(Ordering::SeqCst), 11);
        assert_eq!(vms.most.load(Ordering::SeqCst), STAGE_PARALLEL);
    }
}
