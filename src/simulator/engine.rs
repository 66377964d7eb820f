//! The step engine: rounds of observe → plan → fence → assign → converge, in virtual time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::world::{SimNode, SimWorld};
use crate::agent::local::{self, Action, LocalResources};
use crate::invariants::{self, HostTruth, Violation};
use crate::model::{
    Desired, FenceAttempt, Lease, NodeObserved, Observed, Operations, Placement, Time,
};
use crate::planner::{self, FenceRequest, Plan};

/// A saved cluster state to start a simulation from (`rampart simulate --observed`): what
/// the store would hold. `rampart status -o yaml` writes this shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Snapshot {
    #[serde(default)]
    pub now: Time,
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeObserved>,
    #[serde(default)]
    pub operations: Operations,
    /// The controller's last placement; derived from the reports when absent.
    #[serde(default)]
    pub placement: Option<Placement>,
}

impl Snapshot {
    pub fn observed(&self) -> Observed {
        Observed {
            nodes: self.nodes.clone(),
            operations: self.operations.clone(),
        }
    }
}

/// What one agent did in a step.
#[derive(Debug, Clone, Serialize)]
pub struct NodeActions {
    pub node: String,
    /// Set when the agent took a newer assignment this step.
    pub took_generation: Option<u64>,
    pub self_demoted: bool,
    pub done: Vec<String>,
    pub failed: Option<(String, String)>,
}

/// One round.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub at: Time,
    pub plan: Plan,
    pub fence_results: Vec<(FenceRequest, bool, Option<String>)>,
    pub actions: Vec<NodeActions>,
    /// Nodes that took a lease for the first time in this round.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<String>,
    pub violations: Vec<String>,
}

/// A round whose plan is still being checked against S1-S6 on another core: the step it
/// makes once the check is done.
struct Checking {
    check: JoinHandle<(Vec<Violation>, Plan)>,
    at: Time,
    fence_results: Vec<(FenceRequest, bool, Option<String>)>,
    actions: Vec<NodeActions>,
    joined: Vec<String>,
    /// S1 and S3 over the hosts after the round.
    world: Vec<Violation>,
}

/// What the next round needs to know of one whose plan is still being checked.
struct RoundEnd {
    /// Nothing was fenced, assigned, taken, joined or done: the next round at a later time
    /// sees what this one saw, so it would change nothing either (unless a timer runs out,
    /// which [`Engine::run_until_stable`] checks apart).
    quiet: bool,
    /// The self-fence deadlines the plan waits on.
    deadlines: Vec<Time>,
}

pub struct Engine {
    /// Shared with the thread that checks each plan while the next round runs.
    pub desired: Arc<Desired>,
    pub world: SimWorld,
    pub placement: Placement,
    pub fence_attempts: BTreeMap<String, Vec<FenceAttempt>>,
    pub operations: Operations,
    pub now: Time,
    pub resources: LocalResources,
    pub violations: Vec<(Time, Violation)>,
}

fn resources(d: &Desired) -> LocalResources {
    LocalResources::from_desired(d)
}

impl Engine {
    /// Every node up with an empty host, at time zero.
    pub fn new(desired: impl Into<Arc<Desired>>) -> Engine {
        let desired = desired.into();
        let mut world = SimWorld::default();
        for n in desired.nodes.keys() {
            world.nodes.insert(n.clone(), SimNode::fresh());
        }
        let resources = resources(&desired);
        Engine {
            desired,
            world,
            placement: Placement::default(),
            fence_attempts: BTreeMap::new(),
            operations: Operations::default(),
            now: Time(0),
            resources,
            violations: Vec::new(),
        }
    }

    /// Every node up, its host already running what the planner assigns it: the steady state
    /// `simulate` starts from. Reached by planning alone (each round's hosts taken to have
    /// done what the previous round asked), which is what the agents' convergence amounts to,
    /// without simulating every host action on the way. Returns the rounds it took.
    pub fn steady(desired: impl Into<Arc<Desired>>) -> (Engine, usize) {
        let mut e = Engine::new(desired);
        let (placement, observed, rounds) = steady_state(&e.desired, e.now);
        let ttl = e.desired.cluster.lease_ttl;
        for (name, node) in e.world.nodes.iter_mut() {
            let report = observed
                .nodes
                .get(name)
                .and_then(|o| o.report.clone())
                .unwrap_or_default();
            node.host = report.clone();
            node.last_report = Some(report);
            node.held = placement.assignments.get(name).cloned().unwrap_or_default();
            node.joined = true;
            node.lease_expires = e.now.plus(ttl);
        }
        e.placement = placement;
        (e, rounds)
    }

    /// Start from a saved state: nodes whose lease is alive run with the hosts their reports
    /// describe; nodes whose lease expired are taken to be off.
    pub fn from_snapshot(desired: impl Into<Arc<Desired>>, snap: &Snapshot) -> Engine {
        let mut e = Engine::new(desired);
        e.now = snap.now;
        e.operations = snap.operations.clone();
        for (name, node) in e.world.nodes.iter_mut() {
            let Some(obs) = snap.nodes.get(name) else {
                node.powered = false;
                node.agent_up = false;
                continue;
            };
            let report = obs.report.clone().unwrap_or_default();
            node.host = report.clone();
            node.last_report = obs.report.clone();
            node.joined = obs.lease != Lease::Never;
            match obs.lease {
                Lease::Alive => node.lease_expires = snap.now.plus(e.desired.cluster.lease_ttl),
                Lease::Expired(t) => {
                    node.lease_expires = t;
                    node.powered = false;
                    node.agent_up = false;
                }
                Lease::Never => {
                    node.powered = false;
                    node.agent_up = false;
                }
            }
            if !obs.fence_attempts.is_empty() {
                e.fence_attempts
                    .insert(name.clone(), obs.fence_attempts.clone());
            }
        }
        if let Some(p) = &snap.placement {
            e.placement = p.clone();
            for (name, node) in e.world.nodes.iter_mut() {
                if let Some(a) = p.assignments.get(name) {
                    if node.host.generation >= a.generation {
                        node.held = a.clone();
                    }
                }
            }
        }
        e
    }

    /// What the store says now.
    pub fn observe(&self) -> Observed {
        let mut nodes = BTreeMap::new();
        for (name, n) in &self.world.nodes {
            let lease = if !n.joined {
                Lease::Never
            } else if self.now < n.lease_expires || n.reachable() {
                Lease::Alive
            } else {
                Lease::Expired(n.lease_expires)
            };
            let report = if n.reachable() {
                Some(n.host.clone())
            } else {
                n.last_report.clone()
            };
            nodes.insert(
                name.clone(),
                NodeObserved {
                    lease,
                    fence_attempts: self.fence_attempts.get(name).cloned().unwrap_or_default(),
                    report,
                    lease_revoked: None,
                },
            );
        }
        Observed {
            nodes,
            operations: self.operations.clone(),
        }
    }

    /// The node crashes: power off, everything on it gone, its lease left to run out.
    pub fn fail(&mut self, node: &str) {
        self.world.power_off(node);
    }

    /// The node boots again with an empty host and a fresh agent.
    pub fn recover(&mut self, node: &str) {
        self.world.power_on(node);
    }

    /// The node is cut off from the store and its peers, but keeps running.
    pub fn partition(&mut self, node: &str) {
        if let Some(n) = self.world.nodes.get_mut(node) {
            n.connected = false;
        }
    }

    pub fn heal(&mut self, node: &str) {
        if let Some(n) = self.world.nodes.get_mut(node) {
            n.connected = true;
        }
    }

    /// One round at the current time, then time advances by the renew interval.
    pub fn step(&mut self) -> Step {
        let (checking, _) = self.round();
        self.finish(checking)
    }

    /// Plan, fence and converge one round. The plan is checked against S1-S6 on another
    /// core meanwhile, and may still be when the next round starts: the check reads only what
    /// the plan was made from, and [`Engine::finish`] waits for it.
    fn round(&mut self) -> (Checking, RoundEnd) {
        let observed = self.observe();
        let plan = planner::plan(&self.desired, &observed, &self.placement, self.now);
        let prev = std::mem::replace(&mut self.placement, plan.placement.clone());
        let steady = plan.is_steady(&prev);
        let deadlines: Vec<Time> = plan
            .pending
            .iter()
            .filter_map(|p| p.wait.deadline())
            .collect();
        let fence = plan.fence.clone();
        let desired = Arc::clone(&self.desired);
        let check = std::thread::spawn(move || {
            let found = invariants::check_plan(&desired, &observed, &prev, &plan);
            (found, plan)
        });
        let (fence_results, actions, joined) = converge(
            &mut self.world,
            &mut self.fence_attempts,
            &self.desired,
            &self.resources,
            &self.placement,
            &fence,
            self.now,
        );
        let quiet = steady
            && fence_results.is_empty()
            && joined.is_empty()
            && actions.iter().all(|a| {
                a.done.is_empty()
                    && a.failed.is_none()
                    && !a.self_demoted
                    && a.took_generation.is_none()
            });
        let checking = Checking {
            check,
            at: self.now,
            fence_results,
            actions,
            joined,
            world: self.check_world(),
        };
        self.now = self.now.plus(self.desired.cluster.renew_interval);
        (checking, RoundEnd { quiet, deadlines })
    }

    /// The step of a round, once its plan is checked.
    fn finish(&mut self, c: Checking) -> Step {
        let (mut violations, plan) = c.check.join().expect("the plan checker panicked");
        violations.extend(c.world);
        for v in &violations {
            self.violations.push((c.at, v.clone()));
        }
        Step {
            at: c.at,
            plan,
            fence_results: c.fence_results,
            actions: c.actions,
            joined: c.joined,
            violations: violations.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// S1 and S3 over the simulated hosts as they are now.
    pub fn check_world(&self) -> Vec<Violation> {
        let truth: BTreeMap<String, HostTruth> = self
            .world
            .nodes
            .iter()
            .map(|(n, x)| {
                (
                    n.clone(),
                    HostTruth {
                        powered: x.powered,
                        lease_expired: x.joined && self.now >= x.lease_expires && !x.reachable(),
                        host: &x.host,
                    },
                )
            })
            .collect();
        invariants::check_hosts(&self.desired, &truth)
    }

    /// The next moment at which time alone changes something: a lease running out on a node
    /// that stopped renewing, or a self-fence deadline the last plan waits on passing.
    fn next_timer(&self, deadlines: &[Time]) -> Option<Time> {
        let leases = self
            .world
            .nodes
            .values()
            .filter(|n| n.joined && !n.reachable() && self.now <= n.lease_expires)
            .map(|n| n.lease_expires);
        // A self-fence deadline frees the node's work whether or not fencing answered. (Retries
        // of fencing that failed are not waited for: the simulated devices fail until told
        // otherwise, so a retry would change nothing.)
        let deadline = deadlines.iter().copied().filter(|t| *t >= self.now).min();
        leases.chain(deadline).min()
    }

    /// Step until a round changes nothing and no timer is pending, or `max` rounds.
    pub fn run_until_stable(&mut self, max: usize) -> Vec<Step> {
        let mut steps = Vec::new();
        // The round before, whose plan may still be being checked while this one runs.
        let mut checking = None;
        for _ in 0..max {
            let (c, end) = self.round();
            if let Some(before) = checking.replace(c) {
                steps.push(self.finish(before));
            }
            // Time alone will still change something: a lease yet to expire on a node that
            // stopped renewing, or a self-fence deadline yet to pass.
            let timer = self.next_timer(&end.deadlines);
            // Nothing happened and only a timer can change that: jump to it rather than
            // planning round after idle round (a quiet round changes nothing by definition).
            if end.quiet {
                if let Some(t) = timer {
                    self.now = self.now.max(t);
                }
            }
            if end.quiet && timer.is_none() {
                break;
            }
        }
        if let Some(last) = checking {
            steps.push(self.finish(last));
        }
        steps
    }

    /// The nodes on which each VM really runs now.
    pub fn running(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = self
            .desired
            .vms
            .keys()
            .map(|v| (v.clone(), Vec::new()))
            .collect();
        for (vm, nodes) in self.world.running() {
            out.entry(vm.to_string())
                .or_default()
                .extend(nodes.into_iter().map(str::to_string));
        }
        out
    }
}

/// The fence requests carried out and every agent's pass over its host, for one round's plan.
type Converged = (
    Vec<(FenceRequest, bool, Option<String>)>,
    Vec<NodeActions>,
    Vec<String>,
);

/// Carry out one round's plan in the simulated cluster: the controller's fencing, then every
/// agent that can converges its host (one that cannot renew its lease stops everything).
fn converge(
    world: &mut SimWorld,
    fence_attempts: &mut BTreeMap<String, Vec<FenceAttempt>>,
    desired: &Desired,
    resources: &LocalResources,
    placement: &Placement,
    fence: &[FenceRequest],
    now: Time,
) -> Converged {
    // The controller fences first: a level counts only if every device in it confirms.
    let mut fence_results = Vec::new();
    for req in fence {
        let failed: Vec<&str> = req
            .devices
            .iter()
            .filter(|s| world.failing_fence_devices.contains(&s.device))
            .map(|s| s.device.as_str())
            .collect();
        let ok = failed.is_empty();
        let error = (!ok).then(|| format!("simulated: {} did not answer", failed.join(", ")));
        if ok {
            world.power_off(&req.node);
        }
        fence_attempts
            .entry(req.node.clone())
            .or_default()
            .push(FenceAttempt {
                level: req.level,
                device: req
                    .devices
                    .iter()
                    .map(|s| s.device.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                at: now,
                ok,
                error: error.clone(),
            });
        fence_results.push((req.clone(), ok, error));
    }

    // Every agent that can, converges; one that cannot renew its lease stops everything
    // before the lease runs out (S3).
    let mut actions = Vec::new();
    let mut joined = Vec::new();
    let names: Vec<String> = world.nodes.keys().cloned().collect();
    for name in names {
        let node = &world.nodes[&name];
        if !node.powered || !node.agent_up {
            continue;
        }
        let mut rec = NodeActions {
            node: name.clone(),
            took_generation: None,
            self_demoted: false,
            done: Vec::new(),
            failed: None,
        };
        let forced = !node.connected;
        let list: Vec<Action> = if node.connected {
            if let Some(a) = placement.assignments.get(&name) {
                if a.generation > node.held.generation {
                    rec.took_generation = Some(a.generation);
                    let n = world.nodes.get_mut(&name).unwrap();
                    n.held = a.clone();
                    n.host.generation = a.generation;
                }
            }
            let node = &world.nodes[&name];
            local::actions(&node.held, &node.host, resources)
        } else {
            let list = local::self_demote(&node.host, resources);
            rec.self_demoted = !list.is_empty();
            list
        };
        for act in list {
            // Self-demotion (S3) goes the forced way and past any failure: everything it
            // can stop must be stopped before the lease runs out.
            let done = if forced {
                world.apply_forced(desired, resources, &name, &act)
            } else {
                world.apply(desired, resources, &name, &act)
            };
            match done {
                Ok(()) => rec.done.push(act.to_string()),
                Err(e) => {
                    rec.failed = Some((act.to_string(), e));
                    if !forced {
                        break;
                    }
                }
            }
        }
        let n = world.nodes.get_mut(&name).unwrap();
        if n.connected {
            if !n.joined {
                joined.push(name.clone());
            }
            n.joined = true;
            n.lease_expires = now.plus(desired.cluster.lease_ttl);
            n.last_report = Some(n.host.clone());
        }
        if !rec.done.is_empty() || rec.failed.is_some() || rec.took_generation.is_some() {
            actions.push(rec);
        }
    }
    (fence_results, actions, joined)
}

/// Plan from empty hosts, each round taking the hosts to have done what the previous one
/// asked, until the plan stops changing: the placement and the hosts of the steady state,
/// with the rounds it took.
pub fn steady_state(d: &Desired, now: Time) -> (Placement, Observed, usize) {
    let mut observed = crate::synth::steady_observed(d, &Placement::default());
    let mut placement = Placement::default();
    for round in 1.. {
        let next = planner::plan(d, &observed, &placement, now);
        let steady = next.is_steady(&placement);
        placement = next.placement;
        observed = crate::synth::steady_observed(d, &placement);
        if steady || round >= 50 {
            return (placement, observed, round);
        }
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Desired {
        crate::model::reference_desired()
    }

    /// A graceful stop that fails (a guest ignoring ACPI) must not keep a cut-off node from
    /// stopping everything before its lease runs out: self-demotion is the forced path.
    #[test]
    fn self_demotion_is_forced_past_a_failing_graceful_stop() {
        let mut e = Engine::new(reference());
        e.run_until_stable(20);
        assert_eq!(e.running()["www"], vec!["beta".to_string()]);
        e.world.failing_actions.insert(
            ("beta".into(), "stop vm www".into()),
            "guest ignores ACPI".into(),
        );
        e.partition("beta");
        e.step();
        let beta = &e.world.nodes["beta"].host;
        assert!(!beta.vm_active("www") && !beta.primary("www") && beta.addresses.is_empty());
        e.run_until_stable(40);
        let v: Vec<String> = e
            .violations
            .iter()
            .map(|(t, v)| format!("{t}: {v}"))
            .collect();
        assert!(v.is_empty(), "{v:#?}");
        assert_eq!(e.running()["www"], vec!["alpha".to_string()]);
    }
}
