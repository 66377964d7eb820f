//! The controller: any node may run one; one leads. The leader reads the cluster state, plans
//! with the pure planner, fences first, then writes the assignments — every write guarded by
//! its leadership (S4), so a deposed controller changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::agent::runtime::Event;
use crate::drivers::config::HostConfig;
use crate::drivers::Fencer;
use crate::invariants;
use crate::model::{Desired, FenceAttempt, Lease, NodeObserved, Observed, Time};
use crate::planner;
use crate::store::cluster::{ClusterStore, ClusterView};
use crate::store::{ensure_watch, next_event, LeaseId, Op, WatchStream};
use futures_util::FutureExt;

pub mod heartbeat;
pub mod store_leader;

/// One validated revision of the manifests, as the controller applies it.
#[derive(Debug, Clone)]
pub struct Revision {
    pub desired: Arc<Desired>,
    /// Each node's driver configuration ([`crate::drivers::config::host_configs`]), published
    /// under `config/NODE` for the node's agent. Empty where only simulated hosts run: then
    /// nothing is published.
    pub hosts: Arc<BTreeMap<String, HostConfig>>,
}

impl From<Arc<Desired>> for Revision {
    fn from(desired: Arc<Desired>) -> Self {
        Revision {
            desired,
            hosts: Arc::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub id: String,
    pub lease_ttl: Duration,
    pub tick: Duration,
    /// Longest time one fence action may take.
    pub fence_timeout: Duration,
}

/// Counters the demo and the metrics endpoint show.
#[derive(Debug, Clone, Default)]
pub struct ControllerStats {
    pub rounds: u64,
    pub round_seconds: f64,
    pub leader: bool,
    pub store_reachable: bool,
    pub fence_actions: u64,
    pub fence_ok: u64,
    pub fence_failed: u64,
    /// VMs moved off a lost node.
    pub failovers: u64,
    pub violations: Vec<String>,
    pub last_plan: Option<planner::Plan>,
}

/// Build the planner's view from the store. Lease absence becomes `Expired(since)` with
/// `since` the moment the controller first saw it gone (recorded in the store so that a new
/// leader keeps it); that is never earlier than the real expiry, so deadlines only get later.
fn observed_from(view: &ClusterView, d: &Desired, now: Time) -> (Observed, Vec<String>) {
    let nodes: std::collections::BTreeMap<String, NodeObserved> = d
        .nodes
        .keys()
        .map(|n| (n.clone(), view.node_observed(n, now)))
        .collect();
    let lost = nodes
        .iter()
        .filter(|(_, o)| matches!(o.lease, Lease::Expired(_)))
        .map(|(n, _)| n.clone())
        .collect();
    (
        Observed {
            nodes,
            operations: view.operations.clone(),
        },
        lost,
    )
}

/// The previous placement as the store holds it. A node whose assignment is missing or did
/// not decode (garbage in the store) while its agent reports holding some generation is taken
/// to be at that generation, so the next assignment written for it is newer than anything the
/// agent holds; an older one would be ignored (S4) and the node never converge.
fn prev_placement(view: &ClusterView) -> crate::model::Placement {
    let mut prev = view.placement.clone();
    for (n, r) in &view.reports {
        // Generation 0 is an agent that never held an assignment: nothing to stay ahead of.
        if r.generation == 0 {
            continue;
        }
        let a = prev.assignments.entry(n.clone()).or_default();
        if a.generation < r.generation {
            a.generation = r.generation;
        }
    }
    prev
}

/// Fence `node` through every device of one level (all must confirm). Returns whether it
/// is confirmed off, the first error, and the devices as `a+b`.
async fn fence_level(
    fencer: &dyn Fencer,
    node: &str,
    steps: &[crate::model::FenceStep],
    timeout: Duration,
) -> (bool, Option<String>, String) {
    let devices = steps
        .iter()
        .map(|s| s.device.as_str())
        .collect::<Vec<_>>()
        .join("+");
    for step in steps {
        match tokio::time::timeout(timeout, fencer.fence_off(node, step)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (false, Some(e.to_string()), devices),
            Err(_) => return (false, Some(format!("{} timed out", step.device)), devices),
        }
    }
    (true, None, devices)
}

/// Run `fut` (a fence call) while renewing the leader's lease every `every`. A fence call
/// may take longer than the lease TTL (a real BMC takes seconds, a dead one the whole fence
/// timeout); a leader that renewed only between rounds lost its lead during every such call,
/// so the attempt was never recorded (its write was refused as a deposed leader's), the next
/// leader tried the same level again, and status never said that fencing failed. Returns the
/// call's result and whether every renewal succeeded (if one failed, the lead may be gone:
/// the round's guarded write then fails, as it should).
async fn keeping_lease<F: std::future::Future>(
    store: &dyn crate::store::Store,
    lease: LeaseId,
    every: Duration,
    fut: F,
) -> (F::Output, bool) {
    tokio::pin!(fut);
    let mut renewed = true;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the round renewed just now
    loop {
        tokio::select! {
            out = &mut fut => return (out, renewed),
            _ = ticker.tick(), if renewed => {
                renewed = store.keep_alive(lease).await.is_ok();
            }
        }
    }
}

/// How long the leader key must have been free before controller `me` campaigns for it. A
/// hypervisor is what fails and gets fenced; when its controller led, the next one must first
/// wait out that controller's lease (one TTL) before it can probe, revoke or fence anything,
/// so the failover starts that much later. So a hypervisor's controller leaves the key to a
/// witness's for a few of its ticks (the witness's campaigns at once, and looks every tick),
/// and takes it only when no witness's did. Zero for a witness's controller, for one named
/// like no node, and in a cluster without witnesses.
pub fn campaign_delay(d: &Desired, me: &str, tick: Duration) -> Duration {
    let hypervisor = d.nodes.get(me).is_some_and(|n| n.is_hypervisor());
    let witness = d.nodes.values().any(|n| !n.is_hypervisor());
    if hypervisor && witness {
        (tick * 4).max(Duration::from_millis(100))
    } else {
        Duration::ZERO
    }
}

/// Run the controller until `stop` turns true.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cs: ClusterStore,
    mut revisions: watch::Receiver<Arc<Revision>>,
    fencer: Arc<dyn Fencer>,
    opts: ControllerOptions,
    clock: impl Fn() -> Time + Send,
    events: Option<mpsc::UnboundedSender<Event>>,
    stats: Arc<std::sync::Mutex<ControllerStats>>,
    mut stop: watch::Receiver<bool>,
) {
    let emit = |m: String| {
        if let Some(tx) = &events {
            let _ = tx.send(Event {
                source: "controller".into(),
                message: m,
            });
        }
    };
    let mut lease: Option<LeaseId> = None;
    let mut elected: Option<i64> = None;
    // What was last published, so it is written only when it changes.
    let mut published_pending: Option<Vec<String>> = None;
    let mut published_resources: Option<crate::agent::local::LocalResources> = None;
    // Host configs as last written by this controller while it led; forgotten when it stops
    // leading, so a new term writes them all once.
    let mut published_hosts: BTreeMap<String, HostConfig> = BTreeMap::new();
    // The revision's host configs once all of them were written: no need to compare again.
    let mut hosts_done: Option<Arc<BTreeMap<String, HostConfig>>> = None;
    let mut ticker = tokio::time::interval(opts.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A leader plans at once when something in the cluster's state changes (a watch on its
    // keys: a lease gone, a report, a fence record, an operation) or a new revision arrives;
    // otherwise every `RESYNC_TICKS` ticks, for what only time changes (a self-fence deadline
    // passing) and in case a watch missed something.
    const RESYNC_TICKS: u32 = 4;
    let mut state_watch: Option<WatchStream> = None;
    let mut dirty = true;
    let mut quiet_ticks = 0u32;
    let mut source_open = true;
    // When this controller, leading, may next look at where the store's leader runs.
    let store_leader_next = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let config_prefix = cs.key("config/");
    // Heartbeats (when the Cluster asks for them): whom the monitor probes is set by each
    // round while this controller leads, and cleared when it stops leading.
    let (heartbeat_targets, mut silent) = heartbeat::spawn();
    let mut heartbeat_leader = false;
    let mut revoked_leases: Vec<LeaseId> = Vec::new();
    // Since when this controller has seen the leader key free (see `campaign_delay`).
    let mut leader_free_since: Option<std::time::Instant> = None;
    loop {
        if heartbeat_leader != elected.is_some() {
            heartbeat_leader = elected.is_some();
            if !heartbeat_leader {
                heartbeat_targets.send_replace(heartbeat::Targets::default());
            }
        }
        tokio::select! {
            _ = ticker.tick() => quiet_ticks += 1,
            // Someone went silent, or answered again: the round decides, on its own view.
            Ok(()) = silent.changed() => dirty = true,
            _ = stop.changed() => {}
            r = revisions.changed(), if source_open => {
                // A closed source leaves the last revision in force.
                source_open = r.is_ok();
                dirty = true;
            }
            ev = next_event(&mut state_watch) => {
                // Take whatever else is already there: one round covers it all. The host
                // configs (`config/`) are the controller's own output and not in its view.
                let mut ev = Some(ev);
                while let Some(e) = ev {
                    match e {
                        Some(Ok(r)) => dirty |= r.events.iter().any(|e| !e.key().starts_with(&config_prefix)),
                        _ => {
                            dirty = true;
                            state_watch = None;
                        }
                    }
                    ev = state_watch.as_mut().and_then(|w| w.next().now_or_never());
                }
            }
        }
        if *stop.borrow() {
            if let Some(l) = lease {
                let _ = cs.store.revoke(l).await;
            }
            return;
        }
        // Leadership on a lease.
        if lease.is_none() {
            lease = cs.store.grant_lease(opts.lease_ttl).await.ok();
        } else if let Some(l) = lease {
            if cs.store.keep_alive(l).await.is_err() {
                lease = None;
                published_hosts.clear();
                hosts_done = None;
                state_watch = None;
                if elected.take().is_some() {
                    emit("lost leadership".into());
                }
                continue;
            }
        }
        let Some(l) = lease else { continue };
        if elected.is_none() {
            // A hypervisor's controller lets the leader key stay free a while first: a
            // witness's takes it (see `campaign_delay`).
            let delay = campaign_delay(&revisions.borrow().desired, &opts.id, opts.tick);
            if !delay.is_zero() {
                match cs.store.get(&cs.leader_key()).await {
                    Ok(None) => {
                        let since = *leader_free_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() < delay {
                            continue;
                        }
                    }
                    _ => {
                        leader_free_since = None;
                        continue;
                    }
                }
            }
            if let Ok(Some(rev)) = cs.campaign(&opts.id, l).await {
                emit(format!("{} leads", opts.id));
                elected = Some(rev);
                leader_free_since = None;
            } else {
                continue;
            }
        }
        let rev = elected.expect("elected above");
        // While a fence call runs, the lease is renewed as often as between rounds' thirds.
        let renew_every = (opts.lease_ttl / 3).max(Duration::from_millis(20));
        // A new watch, or none to be had: what changed meanwhile is read now.
        dirty |= ensure_watch(cs.store.as_ref(), &cs.key(""), &mut state_watch).await
            || state_watch.is_none();
        if !dirty && quiet_ticks < RESYNC_TICKS {
            continue;
        }
        dirty = false;
        quiet_ticks = 0;
        let round_start = std::time::Instant::now();
        let revision = revisions.borrow().clone();
        let d = revision.desired.clone();
        let look = {
            let mut next = store_leader_next.lock().unwrap();
            let due = round_start >= *next;
            if due {
                *next = round_start + store_leader::CHECK_EVERY;
            }
            due
        };
        if look {
            // Beside the round: a slow or dead member must not hold up planning.
            let (store, d, events) = (cs.store.clone(), d.clone(), events.clone());
            let next = store_leader_next.clone();
            tokio::spawn(async move {
                if let Some(done) = store_leader::place(store, d).await {
                    let m = match done {
                        Ok(m) => {
                            tracing::info!("{m}");
                            m
                        }
                        Err(m) => {
                            tracing::warn!("{m}");
                            *next.lock().unwrap() =
                                std::time::Instant::now() + store_leader::AFTER_FAILURE;
                            m
                        }
                    };
                    if let Some(tx) = events {
                        let _ = tx.send(Event {
                            source: "controller".into(),
                            message: m,
                        });
                    }
                }
            });
        }
        let view = match cs.view().await {
            Ok(v) => v,
            Err(_) => {
                stats.lock().unwrap().store_reachable = false;
                dirty = true; // what this round was for is still to do
                continue;
            }
        };
        let targets = heartbeat::targets(&d, &view);
        // Revoke the lease of each node gone silent that is still probed for it under this
        // round's view. Only a leader revokes, each lease once, and the record goes first, in
        // a write guarded by its leadership (a deposed controller revokes nothing): from the
        // revoke on, the node's self-fence deadline counts a TTL later (it may still count on
        // the lease that long). A node back with a new lease has another, and a revoke of the
        // old one fails harmlessly. A write or revoke that fails is tried again next tick.
        let now_silent = silent.borrow_and_update().clone();
        revoked_leases.retain(|l| now_silent.iter().any(|s| s.lease == *l));
        let mut revoked_any = false;
        for s in heartbeat::to_revoke(&now_silent, &targets, &revoked_leases) {
            let record = crate::store::cluster::RevokedLease {
                at: clock(),
                lease: s.lease.0,
            };
            let put = Op::put(
                cs.revoked_key(&s.node),
                serde_json::to_vec(&record).unwrap(),
            );
            if !matches!(cs.leader_txn(&opts.id, rev, &[], vec![put]).await, Ok(true)) {
                dirty = true;
                continue;
            }
            match cs.store.revoke(s.lease).await {
                Ok(()) => {
                    let m = format!(
                        "node {} answered no heartbeat for {:?}: its lease {} revoked",
                        s.node, s.for_, s.lease
                    );
                    tracing::warn!("{m}");
                    emit(m);
                    revoked_leases.push(s.lease);
                    revoked_any = true;
                }
                Err(crate::store::StoreError::LeaseNotFound { .. }) => revoked_leases.push(s.lease),
                Err(_) => dirty = true,
            }
        }
        if revoked_any {
            // This view still has those leases: plan on the next one, at once.
            dirty = true;
            continue;
        }
        heartbeat_targets.send_if_modified(|t| {
            let changed = *t != targets;
            *t = targets;
            changed
        });
        let now = clock();
        let (observed, lost_nodes) = observed_from(&view, &d, now);
        // Record when each node was first seen lost, and clear the record of nodes back alive.
        let mut bookkeeping = Vec::new();
        for n in &lost_nodes {
            if !view.lost.contains_key(n) {
                emit(format!("node {n} lost: its lease expired"));
                bookkeeping.push(Op::put(cs.lost_key(n), serde_json::to_vec(&now).unwrap()));
            }
        }
        // A revoke record is over once the node holds another lease (back, or the revoke
        // never happened): a later incident's deadlines count from its own lease.
        for (n, r) in &view.revoked {
            if view
                .leases
                .get(n)
                .is_some_and(|l| l.id != Some(LeaseId(r.lease)))
            {
                bookkeeping.push(Op::delete(cs.revoked_key(n)));
            }
        }
        // Nodes back this round: their records (and any fence request against them) are
        // cleared below, and no request may fence them again on the strength of it.
        let mut back = std::collections::BTreeSet::new();
        for n in view.lost.keys() {
            if view.leases.contains_key(n) {
                back.insert(n.clone());
                emit(format!("node {n} is back"));
                bookkeeping.push(Op::delete(cs.lost_key(n)));
                bookkeeping.push(Op::delete(cs.fence_key(n)));
                bookkeeping.push(Op::delete(cs.fence_request_key(n)));
            }
        }
        // Fence requests (DRBD's fence-peer handler): each is carried out once, levels in
        // order, and the attempt recorded where the handler waits for it. A node fenced this
        // way is lost once its lease runs out, and handled as any lost node from then on.
        let mut requested_attempts: BTreeMap<String, Vec<FenceAttempt>> = BTreeMap::new();
        let maintenance = d.in_maintenance(&observed.operations);
        for (n, req) in fence_requests_to_carry_out(&d, &view, maintenance, &back) {
            let Some(node) = d.nodes.get(n) else { continue };
            let mut attempts = view.fence.get(n).cloned().unwrap_or_default();
            for (i, steps) in node.fencing.iter().enumerate() {
                let ((ok, error, devices), _) = keeping_lease(
                    cs.store.as_ref(),
                    l,
                    renew_every,
                    fence_level(fencer.as_ref(), n, steps, opts.fence_timeout),
                )
                .await;
                emit(format!(
                    "fence {n} (asked by {} for DRBD resource {}) level {} via {devices}: {}",
                    req.by,
                    req.resource,
                    i + 1,
                    if ok {
                        "confirmed off".to_string()
                    } else {
                        format!("FAILED ({})", error.clone().unwrap_or_default())
                    }
                ));
                attempts.push(FenceAttempt {
                    level: i + 1,
                    device: devices,
                    at: now.max(req.at),
                    ok,
                    error,
                });
                if ok {
                    break;
                }
            }
            if node.fencing.is_empty() {
                attempts.push(FenceAttempt {
                    level: 0,
                    device: "none".into(),
                    at: now.max(req.at),
                    ok: false,
                    error: Some(format!("node {n} has no fencing levels")),
                });
            }
            requested_attempts.insert(n.clone(), attempts);
        }
        for (n, attempts) in &requested_attempts {
            bookkeeping.push(Op::put(
                cs.fence_key(n),
                serde_json::to_vec(attempts).unwrap(),
            ));
        }
        let prev = prev_placement(&view);
        let plan = planner::plan(&d, &observed, &prev, now);
        let violations = invariants::check_plan(&d, &observed, &prev, &plan);
        // Fence first, level by level as the plan asks, recording every attempt.
        let mut fenced_any = false;
        let mut fence_ok = 0u64;
        for req in &plan.fence {
            let ((ok, error, devices), _) = keeping_lease(
                cs.store.as_ref(),
                l,
                renew_every,
                fence_level(fencer.as_ref(), &req.node, &req.devices, opts.fence_timeout),
            )
            .await;
            emit(format!(
                "fence {} level {} via {devices}: {}",
                req.node,
                req.level,
                if ok {
                    "confirmed off".to_string()
                } else {
                    format!("FAILED ({})", error.clone().unwrap_or_default())
                }
            ));
            let mut attempts = observed
                .nodes
                .get(&req.node)
                .map(|n| n.fence_attempts.clone())
                .unwrap_or_default();
            attempts.push(FenceAttempt {
                level: req.level,
                device: devices,
                at: now,
                ok,
                error,
            });
            bookkeeping.push(Op::put(
                cs.fence_key(&req.node),
                serde_json::to_vec(&attempts).unwrap(),
            ));
            fenced_any = true;
            fence_ok += u64::from(ok);
        }
        let pending: Vec<String> = plan
            .pending
            .iter()
            .map(|p| format!("{}: {}", p.subject, p.wait))
            .collect();
        if published_pending.as_ref() != Some(&pending) {
            bookkeeping.push(Op::put(
                cs.pending_key(),
                serde_json::to_vec(&pending).unwrap(),
            ));
        }
        let resources = crate::agent::local::LocalResources::from_desired(&d);
        if published_resources.as_ref() != Some(&resources)
            && view.resources.as_ref() != Some(&resources)
        {
            bookkeeping.push(Op::put(
                cs.resources_key(),
                serde_json::to_vec(&resources).unwrap(),
            ));
        }
        // Driver configuration before the assignments that need it (same transaction, or an
        // earlier batch of it).
        let mut config_ops = Vec::new();
        let mut hosts_written = Vec::new();
        let hosts_current = hosts_done
            .as_ref()
            .is_some_and(|h| Arc::ptr_eq(h, &revision.hosts));
        for (n, h) in revision.hosts.iter().filter(|_| !hosts_current) {
            if published_hosts.get(n) != Some(h) {
                config_ops.push(Op::put(
                    cs.host_config_key(n),
                    serde_json::to_vec(h).unwrap(),
                ));
                hosts_written.push(n.clone());
            }
        }
        if hosts_written.is_empty() {
            hosts_done = Some(revision.hosts.clone());
        }
        let mut ops = config_ops;
        ops.extend(bookkeeping);
        // After fencing, write only the bookkeeping: the next round plans with the result.
        if !fenced_any {
            ops.extend(cs.placement_ops(&prev, &plan.placement));
        }
        let changed: Vec<String> = plan.changed_nodes(&prev).map(str::to_string).collect();
        if !ops.is_empty() {
            let lost_refs: Vec<&str> = lost_nodes.iter().map(String::as_str).collect();
            match cs.leader_txn(&opts.id, rev, &lost_refs, ops).await {
                Ok(true) => {
                    published_pending = Some(pending);
                    published_resources = Some(resources);
                    for n in hosts_written {
                        if let Some(h) = revision.hosts.get(&n) {
                            published_hosts.insert(n, h.clone());
                        }
                    }
                    hosts_done = Some(revision.hosts.clone());
                    if !fenced_any {
                        for n in &changed {
                            let g = plan.placement.assignments[n].generation;
                            emit(format!("assigns generation {g} to {n}"));
                        }
                    }
                }
                Ok(false) => {
                    // Deposed, or a lost node came back: re-plan next round.
                    if cs
                        .view()
                        .await
                        .map(|v| v.leader.as_deref() != Some(&opts.id))
                        .unwrap_or(true)
                    {
                        emit("lost leadership".into());
                        elected = None;
                        published_hosts.clear();
                        hosts_done = None;
                        state_watch = None;
                    }
                }
                Err(e) => emit(format!("cannot write to the store: {e}")),
            }
        }
        let mut s = stats.lock().unwrap();
        s.rounds += 1;
        s.round_seconds += round_start.elapsed().as_secs_f64();
        s.leader = elected.is_some();
        s.store_reachable = true;
        s.fence_actions += plan.fence.len() as u64;
        s.fence_ok += fence_ok;
        s.fence_failed += plan.fence.len() as u64 - fence_ok;
        if !fenced_any {
            s.failovers += plan
                .placement
                .vms
                .iter()
                .filter(|(vm, n)| {
                    prev.vms
                        .get(*vm)
                        .is_some_and(|p| p != *n && lost_nodes.contains(p))
                })
                .count() as u64;
        }
        for v in violations {
            emit(format!("INVARIANT VIOLATION {v}"));
            s.violations.push(v.to_string());
        }
        s.last_plan = Some(plan);
    }
}

/// Which fence requests (DRBD's fence-peer handler, one per target node) to carry out this
/// round, in order. Each is carried out once: not when the target already has an attempt
/// since the request. Only a live member of the cluster may ask, and not one fenced since it
/// asked; a node already without a lease is the planner's to fence (its attempt answers the
/// request too); a node that comes back this round (`back`) is not fenced on an old request.
/// The first to ask wins: when both sides of a cut replication link ask to fence each other,
/// only the earlier request is carried out. None while placement is frozen (`maintenance`)
/// or fencing is turned off: the planner fences nothing then either.
fn fence_requests_to_carry_out<'a>(
    d: &Desired,
    view: &'a ClusterView,
    maintenance: bool,
    back: &std::collections::BTreeSet<String>,
) -> Vec<(&'a String, &'a crate::store::cluster::FenceRequestRecord)> {
    if maintenance || d.cluster.fencing == crate::manifest::cluster::FencingPolicy::Disabled {
        return Vec::new();
    }
    let mut requests: Vec<_> = view.fence_requests.iter().collect();
    requests.sort_by(|(a, x), (b, y)| (x.at, a).cmp(&(y.at, b)));
    let attempted_since = |who: &str, at: Time, ok_only: bool| {
        view.fence
            .get(who)
            .is_some_and(|a| a.iter().any(|x| x.at >= at && (x.ok || !ok_only)))
    };
    let mut targets = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (n, req) in requests {
        if !d.nodes.contains_key(n)
            || attempted_since(n, req.at, false)
            || !view.leases.contains_key(&req.by)
            || attempted_since(&req.by, req.at, true)
            || targets.contains(&req.by)
            || req.by == *n
            || !view.leases.contains_key(n)
            || back.contains(n)
        {
            continue;
        }
        targets.insert(n.clone());
        out.push((n, req));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Assignment, HostReport};
    use crate::store::Store;

    #[test]
    fn a_witness_controller_campaigns_at_once_a_hypervisor_one_defers() {
        let mut d = crate::model::reference_desired();
        let tick = Duration::from_millis(60);
        assert_eq!(campaign_delay(&d, "witness", tick), Duration::ZERO);
        assert_eq!(
            campaign_delay(&d, "alpha", tick),
            Duration::from_millis(240)
        );
        assert_eq!(campaign_delay(&d, "no-such-node", tick), Duration::ZERO);
        assert_eq!(
            campaign_delay(&d, "alpha", Duration::from_millis(10)),
            Duration::from_millis(100)
        );
        // Without a witness there is nobody to defer to.
        d.nodes.retain(|_, n| n.is_hypervisor());
        assert_eq!(campaign_delay(&d, "alpha", tick), Duration::ZERO);
    }

    #[test]
    fn a_lost_or_garbled_assignment_does_not_send_generations_back() {
        let mut view = ClusterView::default();
        view.reports.insert(
            "alpha".into(),
            HostReport {
                generation: 7,
                ..Default::default()
            },
        );
        view.reports.insert(
            "beta".into(),
            HostReport {
                generation: 2,
                ..Default::default()
            },
        );
        view.reports.insert("witness".into(), HostReport::default());
        view.placement.assignments.insert(
            "beta".into(),
            Assignment {
                generation: 3,
                ..Default::default()
            },
        );
        let prev = prev_placement(&view);
        assert_eq!(prev.assignments["alpha"].generation, 7);
        assert_eq!(prev.assignments["beta"].generation, 3);
        assert!(
            !prev.assignments.contains_key("witness"),
            "a fresh agent gets generation 1"
        );
    }

    fn request(by: &str, at: u64) -> crate::store::cluster::FenceRequestRecord {
        crate::store::cluster::FenceRequestRecord {
            by: by.into(),
            resource: "www".into(),
            at: Time(at),
        }
    }

    fn chosen(
        d: &Desired,
        view: &ClusterView,
        maintenance: bool,
        back: &[&str],
    ) -> Vec<(String, String)> {
        let back = back.iter().map(|s| s.to_string()).collect();
        fence_requests_to_carry_out(d, view, maintenance, &back)
            .into_iter()
            .map(|(n, r)| (n.clone(), r.by.clone()))
            .collect()
    }

    /// The fence requests of DRBD's fence-peer handler: carried out once, the first asker
    /// winning, never against a node that just came back, and not while placement is frozen
    /// or fencing is off.
    #[test]
    fn fence_requests_first_asker_wins_and_returning_nodes_are_spared() {
        let mut d = crate::model::reference_desired();
        let mut view = ClusterView::default();
        for n in ["alpha", "beta", "witness"] {
            view.leases.insert(n.into(), Default::default());
        }
        // A cut replication link: both hypervisors ask to fence each other.
        view.fence_requests
            .insert("beta".into(), request("alpha", 5));
        view.fence_requests
            .insert("alpha".into(), request("beta", 7));
        assert_eq!(
            chosen(&d, &view, false, &[]),
            vec![("beta".to_string(), "alpha".to_string())]
        );
        // Carried out once: an attempt since the request answers it; and one who was fenced
        // since it asked may no longer have its own request carried out.
        view.fence.insert(
            "beta".into(),
            vec![FenceAttempt {
                level: 1,
                device: "beta-ipmi".into(),
                at: Time(6),
                ok: true,
                error: None,
            }],
        );
        view.fence_requests
            .insert("alpha".into(), request("beta", 5));
        assert_eq!(chosen(&d, &view, false, &[]), vec![]);
        // A node that comes back this round is not fenced on its old request.
        view.fence.clear();
        view.fence_requests.remove("alpha");
        assert_eq!(chosen(&d, &view, false, &["beta"]), vec![]);
        assert_eq!(chosen(&d, &view, false, &[]).len(), 1);
        // Frozen placement, or fencing off: nothing.
        assert_eq!(chosen(&d, &view, true, &[]), vec![]);
        d.cluster.fencing = crate::manifest::cluster::FencingPolicy::Disabled;
        assert_eq!(chosen(&d, &view, false, &[]), vec![]);
    }

    /// A fence call that outlasts the lease TTL keeps the leader's lease alive (before, the
    /// leader lost its lead during every slow fence, and the attempt was never recorded).
    #[tokio::test]
    async fn a_slow_fence_call_keeps_the_leader_lease() {
        let store = crate::store::memory::MemoryStore::new();
        let ttl = Duration::from_millis(300);
        let lease = store.grant_lease(ttl).await.unwrap();
        let slow = tokio::time::sleep(ttl * 3);
        let ((), renewed) = keeping_lease(store.as_ref(), lease, ttl / 3, slow).await;
        assert!(renewed);
        assert!(
            store.keep_alive(lease).await.is_ok(),
            "the lease expired during the call"
        );
        // Without it, the same wait loses the lease.
        tokio::time::sleep(ttl * 3).await;
        assert!(store.keep_alive(lease).await.is_err());
    }
}
