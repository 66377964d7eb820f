//! The agent loop: hold the node's lease, take newer assignments, converge the host through
//! the drivers, report. Level-triggered: every tick compares the assignment with what the host
//! has, whatever woke it.
//!
//! Safety:
//! - S3: when the agent has not renewed its lease for longer than `lease_ttl - renew_interval`
//!   it assumes the lease is about to run out (or has) and stops everything on the host —
//!   addresses down, VMs stopped, volumes Secondary — before the controller may move them.
//!   It does nothing else until it holds a lease again and has re-read its assignment.
//! - S4: an assignment is taken only if its generation is newer than the one held.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::local::{self, Action, LocalResources};
use crate::drivers::Drivers;
use crate::model::{Assignment, FailedAction, HostReport, Time};
use crate::store::cluster::ClusterStore;
use crate::store::{LeaseId, StoreError};

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node: String,
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    /// How often the loop wakes to compare and act.
    pub tick: Duration,
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
    lease: Option<LeaseId>,
    last_renew: Instant,
    held: Assignment,
    demoted: bool,
    backoff: Duration,
    retry_at: Instant,
    last_report: Option<HostReport>,
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
        lease: None,
        last_renew: Instant::now(),
        held: Assignment::default(),
        demoted: false,
        backoff: Duration::ZERO,
        retry_at: Instant::now(),
        last_report: None,
        last_error: None,
    };
    let mut ticker = tokio::time::interval(opts.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let healthy = renew(&cs, &opts, &mut st).await;
        {
            let mut s = stats.lock().unwrap();
            s.node = me.clone();
            s.lease_healthy = healthy;
            s.held_generation = st.held.generation;
            s.last_report = st.last_report.clone();
        }
        if !healthy {
            // S3: stop everything before the lease can run out, then wait for a lease. Every
            // tick until the host is clean: a failed stop must not leave a VM running, so
            // each action is tried even when an earlier one failed.
            if !st.demoted {
                if let Ok(host) = drivers.observe(st.held.generation).await {
                    stats.lock().unwrap().host = Some(host.clone());
                    let list = local::self_demote(&host, &res);
                    if list.is_empty() {
                        st.demoted = true;
                    } else {
                        emit(
                            &events,
                            &me,
                            "cannot renew its lease: stops everything (self-demotion)".into(),
                        );
                        stats.lock().unwrap().self_demotions += 1;
                        for a in &list {
                            match drivers.apply(a).await {
                                Ok(()) => emit(&events, &me, a.to_string()),
                                Err(e) => emit(
                                    &events,
                                    &me,
                                    format!("{a} FAILED during self-demotion: {e}"),
                                ),
                            }
                        }
                    }
                }
            }
            continue;
        }
        // The controller publishes what agents need from the manifests (addresses of VIPs).
        if let Ok(Some(r)) = cs.get::<LocalResources>(&cs.resources_key()).await {
            res = r;
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
                st.backoff = Duration::ZERO;
                st.retry_at = Instant::now();
            }
            Ok(_) => {}
            Err(e) => emit(&events, &me, format!("cannot read its assignment: {e}")),
        }
        st.demoted = false;
        if Instant::now() >= st.retry_at {
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
        if let Ok(mut report) = drivers.observe(st.held.generation).await {
            report.last_error = st.last_error.clone();
            stats.lock().unwrap().host = Some(report.clone());
            if st.last_report.as_ref() != Some(&report)
                && cs.put(&cs.report_key(&me), &report, None).await.is_ok()
            {
                st.last_report = Some(report);
            }
        }
        // Show this pass's outcome now, not a tick later.
        let mut s = stats.lock().unwrap();
        s.held_generation = st.held.generation;
        s.last_report = st.last_report.clone();
    }
}

/// Keep the lease; false when the agent must consider itself cut off (S3).
async fn renew(cs: &ClusterStore, opts: &AgentOptions, st: &mut State) -> bool {
    let now = Instant::now();
    match st.lease {
        None => {
            let granted: Result<LeaseId, StoreError> = async {
                let lease = cs.store.grant_lease(opts.lease_ttl).await?;
                cs.store
                    .put(&cs.lease_key(&opts.node), b"alive", Some(lease))
                    .await?;
                Ok(lease)
            }
            .await;
            if let Ok(l) = granted {
                st.lease = Some(l);
                st.last_renew = now;
            }
        }
        Some(l) => {
            if now.duration_since(st.last_renew) >= opts.renew_interval {
                match cs.store.keep_alive(l).await {
                    Ok(_) => st.last_renew = now,
                    Err(StoreError::LeaseNotFound { .. }) => st.lease = None,
                    Err(_) => {}
                }
            }
        }
    }
    let margin = opts.lease_ttl.saturating_sub(opts.renew_interval);
    st.lease.is_some() && now.duration_since(st.last_renew) < margin
}

async fn run_actions(
    drivers: &Drivers,
    list: &[Action],
    me: &str,
    events: &Option<mpsc::UnboundedSender<Event>>,
) -> Result<(), (Action, String)> {
    for a in list {
        match drivers.apply(a).await {
            Ok(()) => emit(events, me, a.to_string()),
            Err(e) => {
                emit(events, me, format!("{a} FAILED: {e}"));
                return Err((a.clone(), e.to_string()));
            }
        }
    }
    Ok(())
}
