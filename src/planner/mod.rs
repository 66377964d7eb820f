//! The planner: `(Desired, Observed, previous Placement, now) -> Plan`.
//!
//! Pure and deterministic: no I/O, no clock, no randomness; equal inputs give equal plans.
//! The controller, `rampart simulate`, `rampart diff --observed`, the demo and the tests all
//! run this one function.
//!
//! A plan is the *next safe step*, not the whole journey. A move takes several plans: first
//! the old node is told to let go (or is fenced), and only once it has acknowledged and its
//! report shows the VM stopped, the volume Secondary and the address gone (or it is confirmed
//! fenced, or past its self-fence deadline) does the new node get the VM. That staging is what
//! keeps safety rule S1 (one holder at a time) without trusting any clock but the lease.
//!
//! Who may still hold a resource is read from the previous placement and the reports, and
//! from the generations: a node whose report is for an older generation than its assignment
//! may still be acting on an assignment in between, one that gave it something now gone from
//! the placement. Nothing it may hold (a VM it is allowed to run, a volume it has a replica
//! of, an address it may carry) is newly given to another node until it reports.
//!
//! A live migration (shared storage only) spans plans too: the source is told to migrate, the
//! destination to expect the VM (neither starts nor stops it), and the destination is told to
//! run it only once the source reports it gone.
//!
//! A DRBD volume is made Primary only on a node that reports its copy UpToDate; a node that
//! has not reported the volume at all (just rebooted, still to resync) gets nothing that needs
//! it.

mod report;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

pub use report::{Ineligible, Pending, Subject, Wait};

use crate::manifest::cluster::{Failback, FencingPolicy, NoQuorumPolicy};
use crate::model::{
    Assignment, Desired, DiskState, FenceStep, HostReport, Lease, Observed, Placement, Time,
    VipFollows, VmDesc, VmTarget, VolumeKind, VolumeRole,
};

/// A request to fence a node with one level of its fencing topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRequest {
    pub node: String,
    /// Counted from 1, as in the Node manifest.
    pub level: usize,
    pub devices: Vec<FenceStep>,
}

impl FenceRequest {
    /// The level's devices as an admin reads them: `pdu-a plug 3 + pdu-b plug 3`.
    pub fn devices_text(&self) -> String {
        self.devices
            .iter()
            .map(|d| match &d.plug {
                Some(p) => format!("{} plug {p}", d.device),
                None => d.device.clone(),
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// Where a VM stands after this plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// The node it runs on or is headed for.
    pub node: Option<String>,
    /// Assigned to run on `node` in this plan.
    pub assigned: bool,
}

/// The outcome of one planning round. Must be acted on (or shown): dropping it silently is a
/// bug, hence `must_use`.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub now: Time,
    /// Every node's assignment (generations grow when content changes), and the chosen
    /// nodes; the next round's "previous placement".
    pub placement: Placement,
    /// Fencing to do before anything else.
    pub fence: Vec<FenceRequest>,
    /// What is not done yet and why.
    pub pending: Vec<Pending>,
    pub vms: BTreeMap<String, VmStatus>,
}

impl Plan {
    /// Nodes whose assignment differs from `prev` (and so must be written).
    pub fn changed_nodes<'a>(&'a self, prev: &'a Placement) -> impl Iterator<Item = &'a str> {
        self.placement
            .assignments
            .iter()
            .filter(move |(n, a)| prev.assignments.get(*n) != Some(*a))
            .map(|(n, _)| n.as_str())
    }

    /// Whether the plan changes nothing and asks for no fencing.
    pub fn is_steady(&self, prev: &Placement) -> bool {
        self.fence.is_empty() && self.changed_nodes(prev).next().is_none()
    }
}

/// How the planner sees a node this round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeState {
    Alive,
    /// Never held a lease and holds nothing: gets no work.
    NotJoined,
    /// Lease expired (or never held while it had work). `safe` once fenced or past the
    /// self-fence deadline: nothing can run there any more.
    Lost {
        since: Time,
        safe: bool,
        deadline: Option<Time>,
    },
}

struct Ctx<'a> {
    d: &'a Desired,
    o: &'a Observed,
    prev: &'a Placement,
    now: Time,
    /// Every node the planner knows of (desired, or holding a previous assignment), sorted:
    /// what is done node by node is done in this order.
    nodes: Vec<&'a str>,
    state: Map<&'a str, NodeState>,
    reports: Map<&'a str, &'a HostReport>,
    /// The previous assignments by node, and by VM who was told what about it: the lookups
    /// made for every VM.
    prev_assignments: Map<&'a str, &'a Assignment>,
    prev_vm: Map<&'a str, SmallVec<[(&'a str, &'a VmTarget); 2]>>,
    /// The node each VM was placed on in the previous plan.
    prev_node: Map<&'a str, &'a str>,
    /// Inverted indexes over the previous assignments and the reports, so that finding who
    /// holds a resource is not a scan over every node.
    vm_holders: Map<&'a str, Holders<'a>>,
    volume_primaries: Map<&'a str, Holders<'a>>,
    split_brain: Map<&'a str, Vec<String>>,
    vip_holders: Map<&'a str, Holders<'a>>,
    /// Nodes whose report is behind their assignment (see [`Ctx::lagging`]), computed once:
    /// they are few, and every resource asks about them.
    lagging_nodes: Vec<&'a str>,
}

/// The nodes that may hold one resource: sorted, without repeats, and rarely more than two.
type Holders<'a> = SmallVec<[&'a str; 2]>;

fn add_holder<'a>(h: &mut Holders<'a>, n: &'a str) {
    if let Err(i) = h.binary_search(&n) {
        h.insert(i, n);
    }
}

/// The holders of `name` in an index, sorted.
fn holders<'m, 'a>(index: &'m Map<&'a str, Holders<'a>>, name: &str) -> &'m [&'a str] {
    index.get(name).map_or(&[], |h| h.as_slice())
}

/// Hash maps for the large per-resource indexes: lookups by VM name are the planner's hot
/// path, and a fixed-seed hash keeps iteration deterministic (equal inputs, equal plans);
/// nothing decided depends on their iteration order.
type Map<K, V> = rustc_hash::FxHashMap<K, V>;

fn map_with_capacity<K, V>(n: usize) -> Map<K, V> {
    Map::with_capacity_and_hasher(n, Default::default())
}

impl<'a> Ctx<'a> {
    fn new(d: &'a Desired, o: &'a Observed, prev: &'a Placement, now: Time) -> Self {
        let mut reports = Map::default();
        for (n, no) in &o.nodes {
            if let Some(r) = &no.report {
                reports.insert(n.as_str(), r);
            }
        }
        let nodes: Vec<&str> = d
            .nodes
            .keys()
            .map(String::as_str)
            .chain(prev.assignments.keys().map(String::as_str))
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .collect();
        let state = nodes
            .iter()
            .map(|n| (*n, node_state(d, o, prev, n, now)))
            .collect();
        let vms = d.vms.len();
        let mut vm_holders: Map<&str, Holders> = map_with_capacity(vms);
        let mut volume_primaries: Map<&str, Holders> = map_with_capacity(d.volumes.len());
        let mut split_brain: Map<&str, Vec<String>> = Map::default();
        let mut vip_holders: Map<&str, Holders> = map_with_capacity(d.vips.len());
        let mut prev_vm: Map<&str, SmallVec<[(&str, &VmTarget); 2]>> = map_with_capacity(vms);
        let prev_assignments = prev
            .assignments
            .iter()
            .map(|(n, a)| (n.as_str(), a))
            .collect();
        for (n, a) in &prev.assignments {
            for (vm, t) in &a.vms {
                add_holder(vm_holders.entry(vm).or_default(), n);
                prev_vm.entry(vm).or_default().push((n, t));
            }
            for (vol, role) in &a.volumes {
                if *role == VolumeRole::Primary {
                    add_holder(volume_primaries.entry(vol).or_default(), n);
                }
            }
            for vip in &a.vips {
                add_holder(vip_holders.entry(vip).or_default(), n);
            }
        }
        let prev_node = prev
            .vms
            .iter()
            .map(|(v, n)| (v.as_str(), n.as_str()))
            .collect();
        let addr_to_vip: Map<&str, &str> = d
            .vips
            .values()
            .map(|v| (v.address.as_str(), v.name.as_str()))
            .collect();
        for (n, r) in &reports {
            for (vm, v) in &r.vms {
                if v.state.is_active() {
                    add_holder(vm_holders.entry(vm).or_default(), n);
                }
            }
            for (vol, v) in &r.volumes {
                if v.role == crate::model::DrbdRole::Primary {
                    add_holder(volume_primaries.entry(vol).or_default(), n);
                }
                if v.split_brain {
                    split_brain.entry(vol).or_default().push(n.to_string());
                }
            }
            for addr in &r.addresses {
                if let Some(vip) = addr_to_vip.get(addr.as_str()) {
                    add_holder(vip_holders.entry(vip).or_default(), n);
                }
            }
        }
        let mut ctx = Ctx {
            d,
            o,
            prev,
            now,
            nodes,
            state,
            reports,
            prev_assignments,
            prev_vm,
            prev_node,
            vm_holders,
            volume_primaries,
            split_brain,
            vip_holders,
            lagging_nodes: Vec::new(),
        };
        ctx.lagging_nodes = ctx
            .nodes
            .iter()
            .copied()
            .filter(|n| ctx.lagging(n).is_some())
            .collect();
        ctx
    }

    fn prev_assignment(&self, n: &str) -> Option<&'a Assignment> {
        self.prev_assignments.get(n).copied()
    }

    /// What the previous placement told `node` to do with `vm`.
    fn prev_target(&self, vm: &str, node: &str) -> Option<&'a VmTarget> {
        self.prev_vm
            .get(vm)?
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, t)| *t)
    }

    fn state(&self, n: &str) -> &NodeState {
        self.state.get(n).unwrap_or(&NodeState::NotJoined)
    }

    fn alive(&self, n: &str) -> bool {
        *self.state(n) == NodeState::Alive
    }

    fn drained(&self, n: &str) -> bool {
        self.o.operations.drained.contains(n)
    }

    /// A node that no longer holds `what` and never will again without a new assignment:
    /// lost and safe (fenced or past its deadline), or alive, told in an earlier plan to let
    /// go, acknowledged that assignment, and reporting it gone.
    fn released(&self, n: &str, still_holds: impl Fn(&HostReport) -> bool, in_prev: bool) -> bool {
        match self.state(n) {
            NodeState::Lost { safe, .. } => *safe,
            NodeState::NotJoined => !in_prev,
            NodeState::Alive => {
                let prev_gen = self.prev_assignment(n).map_or(0, |a| a.generation);
                match self.reports.get(n) {
                    Some(r) => !in_prev && r.generation >= prev_gen && !still_holds(r),
                    None => false,
                }
            }
        }
    }

    /// Whether `n` has nothing that anything could wait on: an empty (or no) assignment,
    /// acknowledged, and nothing active in its last report.
    fn holds_nothing(&self, n: &str) -> bool {
        if self.d.nodes.get(n).is_some_and(|x| !x.is_hypervisor()) {
            return true; // a witness is never given anything
        }
        let assigned = self.prev_assignment(n);
        let report = self.reports.get(n);
        assigned.is_none_or(|a| a.is_empty())
            && report.map_or(0, |r| r.generation) >= assigned.map_or(0, |a| a.generation)
            && report.is_none_or(|r| {
                r.addresses.is_empty()
                    && !r.vms.values().any(|v| v.state.is_active())
                    && !r
                        .volumes
                        .values()
                        .any(|v| v.role == crate::model::DrbdRole::Primary)
            })
    }

    /// The wait that explains why `n` still blocks a resource.
    fn blocking_wait(&self, n: &str) -> Wait {
        match self.state(n) {
            NodeState::Lost { deadline, .. } => Wait::Fencing {
                node: n.to_string(),
                deadline: *deadline,
            },
            _ => match self.lagging(n) {
                Some(generation) => Wait::Acknowledge {
                    node: n.to_string(),
                    generation,
                },
                None => Wait::Release {
                    node: n.to_string(),
                },
            },
        }
    }

    /// For a node that may still act (alive, or lost and not yet safe) whose last report is
    /// for an older generation than its previous assignment: that generation. Such a node
    /// may be acting on any assignment it was given since its report, and a resource taken
    /// from it in one of those is gone from the previous placement while its agent may yet
    /// start it. So it counts as holding whatever it may hold (see [`Ctx::may_hold_vm`])
    /// until it reports (or, lost, until it is safe).
    fn lagging(&self, n: &str) -> Option<u64> {
        if !matches!(
            self.state(n),
            NodeState::Alive | NodeState::Lost { safe: false, .. }
        ) {
            return None;
        }
        let prev_gen = self.prev_assignment(n).map_or(0, |a| a.generation);
        let reported = self.reports.get(n).map_or(0, |r| r.generation);
        (reported < prev_gen).then_some(prev_gen)
    }

    /// Whether some assignment may have given `n` the VM (or the Primary role of one of its
    /// DRBD volumes): it may run there, or its host knows the VM or one of its volumes.
    fn may_hold_vm(&self, n: &str, vm: &VmDesc) -> bool {
        if vm.candidates.iter().any(|c| c == n) {
            return true;
        }
        let report = self.reports.get(n);
        if report.is_some_and(|r| r.vms.contains_key(&vm.name)) {
            return true;
        }
        vm.volumes.iter().any(|v| {
            report.is_some_and(|r| r.volumes.contains_key(v))
                || self
                    .d
                    .volumes
                    .get(v)
                    .is_some_and(|d| d.is_drbd() && d.nodes().contains(&n))
        })
    }

    /// Lagging nodes other than `node` that may hold the VM: they block giving it to `node`.
    fn lagging_holders_of_vm(&self, node: &str, vm: &VmDesc) -> Vec<&'a str> {
        self.lagging_nodes
            .iter()
            .copied()
            .filter(|h| *h != node && self.may_hold_vm(h, vm))
            .collect()
    }
}

fn node_state(d: &Desired, o: &Observed, prev: &Placement, n: &str, now: Time) -> NodeState {
    let obs = o.nodes.get(n);
    let lease = obs.map_or(Lease::Never, |x| x.lease);
    let since = match lease {
        Lease::Alive => return NodeState::Alive,
        Lease::Expired(t) => t,
        Lease::Never => {
            let has_work = prev
                .assignments
                .get(n)
                .is_some_and(|a| a.may_hold_something())
                || obs.is_some_and(|x| x.report.is_some());
            if !has_work {
                return NodeState::NotJoined;
            }
            Time(0)
        }
    };
    let desc = d.nodes.get(n);
    let fenced = obs.is_some_and(|x| x.fence_attempts.iter().any(|a| a.ok && a.at >= since));
    // The self-fence deadline: by then the agent has stopped everything (S3) or the watchdog
    // has reset the node. Without a watchdog there is none while fencing is required; with
    // fencing disabled the lease expiry itself is all there is to trust.
    // A lease revoked early (heartbeats) may have been counted on for a TTL after.
    let watchdog = desc.and_then(|x| x.watchdog);
    let end = obs.map_or(since, |x| x.lease_end(since, d.cluster.lease_ttl));
    let deadline = match (d.cluster.fencing, watchdog) {
        (_, Some(w)) => Some(end.plus(w)),
        (FencingPolicy::Disabled, None) => Some(end),
        (FencingPolicy::Required, None) => None,
    };
    let safe = fenced || deadline.is_some_and(|t| now >= t);
    NodeState::Lost {
        since,
        safe,
        deadline,
    }
}

/// Plan the next step. See the module documentation.
pub fn plan(d: &Desired, o: &Observed, prev: &Placement, now: Time) -> Plan {
    let ctx = Ctx::new(d, o, prev, now);
    let mut pending = Vec::new();

    // Quorum: a majority of store members must be alive, or placement freezes (or stops).
    let members: Vec<&str> = d.store_members().map(|n| n.name.as_str()).collect();
    let alive = members.iter().filter(|n| ctx.alive(n)).count();
    if alive * 2 <= members.len() {
        pending.push(Pending {
            subject: Subject::Cluster,
            wait: Wait::QuorumLost {
                alive,
                members: members.len(),
            },
        });
        let placement = match d.cluster.no_quorum {
            NoQuorumPolicy::Freeze => prev.clone(),
            NoQuorumPolicy::Stop => stop_everything(prev),
        };
        return finish(&ctx, placement, Vec::new(), pending);
    }
    if d.in_maintenance(&o.operations) {
        pending.push(Pending {
            subject: Subject::Cluster,
            wait: Wait::Maintenance,
        });
        return finish(&ctx, prev.clone(), Vec::new(), pending);
    }

    let fence = fence_requests(&ctx, &mut pending);
    let mut b = Builder::new(&ctx);
    b.place_vms(&mut pending);
    b.activate_vms(&mut pending);
    b.volumes();
    b.vips(&mut pending);
    let placement = b.into_placement();
    finish(&ctx, placement, fence, pending)
}

fn stop_everything(prev: &Placement) -> Placement {
    let mut p = prev.clone();
    for a in p.assignments.values_mut() {
        let empty = Assignment {
            generation: a.generation,
            volumes: a
                .volumes
                .keys()
                .map(|v| (v.clone(), VolumeRole::Secondary))
                .collect(),
            ..Default::default()
        };
        if !empty.same_content(a) {
            *a = Assignment {
                generation: a.generation + 1,
                ..empty
            };
        }
    }
    p
}

/// Fill in per-VM status and sort the pending list.
fn finish(
    ctx: &Ctx,
    placement: Placement,
    fence: Vec<FenceRequest>,
    mut pending: Vec<Pending>,
) -> Plan {
    // Both in name order: walk the placed VMs beside the desired ones rather than look each
    // one up, and build the map in one go.
    let mut placed = placement.vms.iter().peekable();
    let by_node: Map<&str, &Assignment> = placement
        .assignments
        .iter()
        .map(|(n, a)| (n.as_str(), a))
        .collect();
    let vms = ctx
        .d
        .vms
        .keys()
        .map(|name| {
            while placed.next_if(|(v, _)| *v < name).is_some() {}
            let node = placed.next_if(|(v, _)| *v == name).map(|(_, n)| n);
            let assigned = node.is_some_and(|n| {
                by_node
                    .get(n.as_str())
                    .and_then(|a| a.vms.get(name))
                    .is_some_and(|t| *t == VmTarget::Run)
            });
            (
                name.clone(),
                VmStatus {
                    node: node.cloned(),
                    assigned,
                },
            )
        })
        .collect();
    pending.sort_by(|a, b| a.subject.cmp(&b.subject));
    pending.dedup();
    Plan {
        now: ctx.now,
        placement,
        fence,
        pending,
        vms,
    }
}

/// Fence every lost node that is not yet safe, one level at a time, in order.
fn fence_requests(ctx: &Ctx, pending: &mut Vec<Pending>) -> Vec<FenceRequest> {
    let mut out = Vec::new();
    if ctx.d.cluster.fencing == FencingPolicy::Disabled {
        return out;
    }
    for n in &ctx.nodes {
        let NodeState::Lost {
            since,
            safe: false,
            deadline,
        } = ctx.state(n)
        else {
            continue;
        };
        let levels = ctx
            .d
            .nodes
            .get(*n)
            .map(|x| x.fencing.as_slice())
            .unwrap_or(&[]);
        if levels.is_empty() && ctx.holds_nothing(n) {
            // A witness (or any node that was never given work): nothing to take over from
            // it, so nothing waits on it.
            continue;
        }
        if levels.is_empty() {
            pending.push(Pending {
                subject: Subject::Node(n.to_string()),
                wait: Wait::Unfenceable {
                    node: n.to_string(),
                },
            });
            continue;
        }
        let attempts = ctx
            .o
            .nodes
            .get(*n)
            .map(|x| x.fence_attempts.as_slice())
            .unwrap_or(&[]);
        match next_level(
            levels.len(),
            attempts,
            *since,
            ctx.d.cluster.fence_timeout,
            ctx.now,
        ) {
            Ok(level) => out.push(FenceRequest {
                node: n.to_string(),
                level: level + 1,
                devices: levels[level].clone(),
            }),
            Err(retry_at) => pending.push(Pending {
                subject: Subject::Node(n.to_string()),
                wait: Wait::FencingFailed {
                    node: n.to_string(),
                    retry_at,
                    deadline: *deadline,
                },
            }),
        }
    }
    out
}

/// The next fencing level (0-based) to try, given the attempts since the node was lost: the
/// first level of the current round that has not failed. When a whole round has failed, the
/// next round starts `backoff` after its last failure; until then, `Err(retry time)`.
fn next_level(
    levels: usize,
    attempts: &[crate::model::FenceAttempt],
    since: Time,
    backoff: std::time::Duration,
    now: Time,
) -> Result<usize, Time> {
    let mut level = 0;
    let mut round_failed_at = None;
    for a in attempts.iter().filter(|a| a.at >= since && a.level >= 1) {
        if let Some(t) = round_failed_at {
            if a.at < Time::plus(t, backoff) {
                continue;
            }
            round_failed_at = None;
            level = 0;
        }
        if !a.ok && a.level == level + 1 {
            level += 1;
            if level == levels {
                round_failed_at = Some(a.at);
            }
        }
    }
    match round_failed_at {
        Some(t) if now < t.plus(backoff) => Err(t.plus(backoff)),
        Some(_) => Ok(0),
        None => Ok(level),
    }
}

struct Builder<'c, 'a> {
    ctx: &'c Ctx<'a>,
    /// Chosen node per VM (kept or new).
    target: Map<&'a str, &'a str>,
    /// CPUs and memory (MiB) of the VMs chosen per node.
    used: Map<&'a str, (i64, i64)>,
    /// VMs moving off an alive node (drain, failback, manifest change), with the source.
    leaving: Map<&'a str, &'a str>,
    assignments: Map<&'a str, Assignment>,
    /// VM -> node where it is assigned to run in this plan.
    active: Map<&'a str, &'a str>,
    vip_target: Map<&'a str, &'a str>,
}

impl<'c, 'a> Builder<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>) -> Self {
        let assignments = ctx
            .nodes
            .iter()
            .map(|n| (*n, Assignment::default()))
            .collect();
        Builder {
            ctx,
            target: map_with_capacity(ctx.d.vms.len()),
            used: Map::default(),
            leaving: Map::default(),
            assignments,
            active: map_with_capacity(ctx.d.vms.len()),
            vip_target: Map::default(),
        }
    }

    fn take(&mut self, vm: &'a VmDesc, node: &'a str) {
        self.target.insert(&vm.name, node);
        let u = self.used.entry(node).or_default();
        u.0 += i64::from(vm.cpus);
        u.1 += vm.memory_mib as i64;
    }

    /// Why `node` cannot take `vm` now, if it cannot.
    fn ineligible(&self, vm: &VmDesc, node: &str) -> Option<Ineligible> {
        let ctx = self.ctx;
        match ctx.state(node) {
            NodeState::Alive => {}
            NodeState::NotJoined => return Some(Ineligible::NotJoined),
            NodeState::Lost { .. } => return Some(Ineligible::Down),
        }
        if ctx.drained(node) {
            return Some(Ineligible::Drained);
        }
        let Some(desc) = ctx.d.nodes.get(node) else {
            return Some(Ineligible::Down);
        };
        let (cpus, mem) = self.used.get(node).copied().unwrap_or_default();
        let (cpus_free, memory_free_mib) =
            (i64::from(desc.cpus) - cpus, desc.memory_mib as i64 - mem);
        if cpus_free < i64::from(vm.cpus) || memory_free_mib < vm.memory_mib as i64 {
            return Some(Ineligible::Capacity {
                cpus_free,
                memory_free_mib,
            });
        }
        // The first by name of the VMs it must not share a node with that are chosen here.
        if let Some(other) = vm
            .anti_affinity
            .iter()
            .filter(|o| self.target.get(o.as_str()) == Some(&node))
            .min()
        {
            return Some(Ineligible::AntiAffinity { vm: other.clone() });
        }
        let report = ctx.reports.get(node);
        for vol in &vm.volumes {
            if ctx.split_brain.contains_key(vol.as_str()) {
                return Some(Ineligible::SplitBrain {
                    volume: vol.clone(),
                });
            }
            if !ctx.d.volumes.get(vol).is_some_and(|v| v.is_drbd()) {
                continue;
            }
            // Only a copy known to be UpToDate is promoted: a node that has not reported
            // the volume (just rebooted, not attached yet) may hold an old copy it has still
            // to resync.
            match report.and_then(|r| r.volumes.get(vol)) {
                None => {
                    return Some(Ineligible::DiskUnknown {
                        volume: vol.clone(),
                    })
                }
                Some(obs) if obs.disk != DiskState::UpToDate => {
                    return Some(Ineligible::Disk {
                        volume: vol.clone(),
                        state: format!("{:?}", obs.disk),
                    });
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Decide every VM's node: keep what is healthy where it is, then place the rest.
    fn place_vms(&mut self, pending: &mut Vec<Pending>) {
        let ctx = self.ctx;
        let mut order: Vec<&'a VmDesc> = ctx.d.vms.values().collect();
        // `d.vms` is ordered by name already; a stable sort by start order keeps that order
        // among equals, without comparing names again.
        order.sort_by_key(|v| v.start_order);
        let mut to_place: Vec<(&'a VmDesc, Option<&'a str>)> = Vec::new();
        for vm in &order {
            let vm = *vm;
            let current: Option<&'a str> = ctx
                .prev_node
                .get(vm.name.as_str())
                .copied()
                .or_else(|| self.adopt(vm));
            let Some(cur) = current
                .and_then(|c| vm.candidates.iter().find(|x| *x == c))
                .map(String::as_str)
            else {
                // New, or its node is no longer allowed (a manifest change moves it).
                let leaving = current.filter(|c| ctx.alive(c));
                to_place.push((vm, leaving));
                continue;
            };
            // A live migration into `cur` (under way, or done but not yet confirmed by a
            // "run" there) finishes before anything else happens to the VM: a drain of the
            // destination moves it again afterwards.
            let in_flight = self.migration_into(&vm.name, cur).is_some();
            match ctx.state(cur) {
                NodeState::Alive if ctx.drained(cur) && !in_flight => {
                    if vm.failover {
                        to_place.push((vm, Some(cur)));
                    } else {
                        self.take(vm, cur);
                    }
                }
                NodeState::Alive => self.take(vm, cur),
                NodeState::Lost { safe: true, .. } if vm.failover => to_place.push((vm, None)),
                NodeState::Lost { .. } => self.take(vm, cur),
                NodeState::NotJoined => to_place.push((vm, None)),
            }
        }
        for (vm, leaving) in to_place {
            let mut reasons = Vec::new();
            let mut chosen = None;
            for c in &vm.candidates {
                if Some(c.as_str()) == leaving {
                    reasons.push((c.clone(), Ineligible::Leaving));
                    continue;
                }
                match self.ineligible(vm, c) {
                    None => {
                        chosen = Some(c.as_str());
                        break;
                    }
                    Some(why) => reasons.push((c.clone(), why)),
                }
            }
            match chosen {
                Some(n) => {
                    self.take(vm, n);
                    if let Some(src) = leaving {
                        self.leaving.insert(&vm.name, src);
                    }
                }
                None => {
                    if let Some(src) = leaving {
                        // Nowhere to go: it stays where it is rather than stopping.
                        self.take(vm, src);
                    }
                    pending.push(Pending {
                        subject: Subject::Vm(vm.name.clone()),
                        wait: Wait::NoEligibleNode { reasons },
                    });
                }
            }
        }
        if ctx.d.cluster.failback == Failback::Automatic {
            self.failback(&order);
        }
    }

    /// A VM that runs, on exactly one alive allowed node, with no node chosen for it yet
    /// (a controller taking over a running cluster): keep it there rather than restart it.
    fn adopt(&self, vm: &VmDesc) -> Option<&'a str> {
        let ctx = self.ctx;
        let running: Vec<&'a str> = holders(&ctx.vm_holders, &vm.name)
            .iter()
            .copied()
            .filter(|n| ctx.reports.get(n).is_some_and(|r| r.vm_running(&vm.name)))
            .collect();
        match running.as_slice() {
            [one] if ctx.alive(one) => Some(one),
            _ => None,
        }
    }

    /// With automatic failback, move a running VM to a more preferred node that can take it.
    fn failback(&mut self, order: &[&'a VmDesc]) {
        let ctx = self.ctx;
        for vm in order {
            if !vm.failover || self.leaving.contains_key(vm.name.as_str()) {
                continue;
            }
            let Some(&cur) = self.target.get(vm.name.as_str()) else {
                continue;
            };
            let running_here = ctx.reports.get(cur).is_some_and(|r| r.vm_running(&vm.name));
            // Only a VM settled where it is: not one still arriving by live migration.
            let settled = ctx.prev_target(&vm.name, cur) == Some(&VmTarget::Run);
            if !ctx.alive(cur) || !running_here || !settled {
                continue;
            }
            for c in &vm.candidates {
                if c == cur {
                    break;
                }
                if self.ineligible(vm, c).is_none() {
                    self.release_capacity(vm, cur);
                    self.take(vm, c);
                    self.leaving.insert(&vm.name, cur);
                    break;
                }
            }
        }
    }

    /// Give back the room `vm` took on `node`, before it is chosen elsewhere (which
    /// replaces its entry in `target`).
    fn release_capacity(&mut self, vm: &'a VmDesc, node: &'a str) {
        if let Some(u) = self.used.get_mut(node) {
            u.0 -= i64::from(vm.cpus);
            u.1 -= vm.memory_mib as i64;
        }
    }

    /// Give each VM to its node once every other holder has let go.
    fn activate_vms(&mut self, pending: &mut Vec<Pending>) {
        let ctx = self.ctx;
        for vm in ctx.d.vms.values() {
            let Some(&node) = self.target.get(vm.name.as_str()) else {
                continue;
            };
            let vm_name = vm.name.as_str();
            let subject = || Subject::Vm(vm.name.clone());
            // Pinned VMs on a drained node are stopped until it is undrained.
            if ctx.drained(node) && !vm.failover && ctx.alive(node) {
                pending.push(Pending {
                    subject: subject(),
                    wait: Wait::PinnedDrained {
                        node: node.to_string(),
                    },
                });
                continue;
            }
            let prev_here = ctx.prev_target(vm_name, node);
            let migration_from = self.migration_into(vm_name, node);
            match ctx.state(node) {
                NodeState::Lost { safe, .. } => {
                    if let Some(src) = migration_from.filter(|_| !*safe) {
                        // The destination of a live migration was lost mid-way: the VM may
                        // have arrived. Leave both sides as they are until it is fenced.
                        self.assign_vm(src, vm_name, VmTarget::MigrateTo(node.to_string()));
                        self.assign_vm(node, vm_name, VmTarget::Incoming(src.to_string()));
                        pending.push(Pending {
                            subject: subject(),
                            wait: ctx.blocking_wait(node),
                        });
                        continue;
                    }
                    // Keep it in the lost node's assignment: nothing else may take it until
                    // the node is safe, and a pinned VM restarts when its node returns. A VM
                    // the node was not already told to run is not given to it now: the node
                    // cannot act on it, and might when it comes back, before anything that
                    // still holds it elsewhere has let go.
                    if prev_here == Some(&VmTarget::Run) {
                        self.assign_vm(node, vm_name, VmTarget::Run);
                        self.active.insert(vm_name, node);
                    }
                    let wait = if !vm.failover {
                        Wait::PinnedDown {
                            node: node.to_string(),
                        }
                    } else if *safe {
                        continue;
                    } else {
                        ctx.blocking_wait(node)
                    };
                    pending.push(Pending {
                        subject: subject(),
                        wait,
                    });
                    continue;
                }
                NodeState::NotJoined => continue,
                NodeState::Alive => {}
            }
            let mut others = self.other_holders(vm, node);
            // A live migration started in an earlier plan: the source hands the VM over
            // itself, however many rounds that takes. Only once the source no longer has it
            // (or is fenced) does the destination run it; until then its "incoming" keeps it
            // from stopping the VM it is receiving.
            let mut arriving_from = None;
            if let Some(src) = migration_from {
                if self.migration_source_done(vm_name, src) {
                    others.retain(|h| *h != src);
                    arriving_from = Some(src);
                } else if ctx.alive(src) {
                    let taken = ctx.lagging(src).is_none();
                    let running = ctx.reports.get(src).is_some_and(|r| r.vm_running(vm_name));
                    if vm.live_migration && (running || !taken) && others.iter().all(|h| *h == src)
                    {
                        self.assign_vm(src, vm_name, VmTarget::MigrateTo(node.to_string()));
                        self.assign_vm(node, vm_name, VmTarget::Incoming(src.to_string()));
                        pending.push(Pending {
                            subject: subject(),
                            wait: Wait::Migration {
                                from: src.to_string(),
                                to: node.to_string(),
                            },
                        });
                        continue;
                    }
                    // The source cannot hand it over (the VM is paused or crashed there):
                    // fall back to stop and start, below.
                } else {
                    // The source was lost mid-way and is not yet safe: wait for its fencing,
                    // leaving the destination's "incoming" in place.
                    self.assign_vm(src, vm_name, VmTarget::MigrateTo(node.to_string()));
                    self.assign_vm(node, vm_name, VmTarget::Incoming(src.to_string()));
                    pending.push(Pending {
                        subject: subject(),
                        wait: ctx.blocking_wait(src),
                    });
                    continue;
                }
            }
            // Live migration: the source hands the running VM over itself. Only from a node
            // told to run it: one where it has just arrived is first confirmed there.
            if let Some(&src) = self.leaving.get(vm_name) {
                let src_running = ctx.reports.get(src).is_some_and(|r| r.vm_running(vm_name));
                let src_runs = ctx.prev_target(vm_name, src) == Some(&VmTarget::Run);
                if vm.live_migration
                    && ctx.alive(src)
                    && src_running
                    && src_runs
                    && others.iter().all(|h| *h == src)
                {
                    self.assign_vm(src, vm_name, VmTarget::MigrateTo(node.to_string()));
                    self.assign_vm(node, vm_name, VmTarget::Incoming(src.to_string()));
                    pending.push(Pending {
                        subject: subject(),
                        wait: Wait::Migration {
                            from: src.to_string(),
                            to: node.to_string(),
                        },
                    });
                    continue;
                }
            }
            // Starting it here is new: a node that has not reported its latest assignment
            // may still be acting on one that gave it the VM.
            if prev_here != Some(&VmTarget::Run) {
                for h in ctx.lagging_holders_of_vm(node, vm) {
                    if !others.contains(&h) {
                        others.push(h);
                    }
                }
            }
            if let Some(sb) = self.split_brain_of(vm) {
                // Keep a VM that already runs; start nothing on a split-brain volume.
                let running_here = ctx.reports.get(node).is_some_and(|r| r.vm_active(vm_name));
                if running_here && others.is_empty() {
                    self.assign_vm(node, vm_name, VmTarget::Run);
                    self.active.insert(vm_name, node);
                }
                pending.push(Pending {
                    subject: subject(),
                    wait: Wait::SplitBrain { nodes: sb },
                });
                continue;
            }
            let blocked = others.iter().find(|h| {
                let prev_h = ctx.prev_assignment(h);
                let in_prev = prev_h.is_some_and(|a| {
                    a.holds_vm(vm_name)
                        || vm
                            .volumes
                            .iter()
                            .any(|v| a.volumes.get(v) == Some(&VolumeRole::Primary))
                });
                !ctx.released(
                    h,
                    |r| r.vm_active(vm_name) || vm.volumes.iter().any(|v| r.primary(v)),
                    in_prev,
                )
            });
            match blocked {
                Some(h) => {
                    if let Some(src) = arriving_from {
                        // It may be running here already: keep "incoming" (neither start
                        // nor stop) until it can be confirmed.
                        self.assign_vm(node, vm_name, VmTarget::Incoming(src.to_string()));
                    }
                    pending.push(Pending {
                        subject: subject(),
                        wait: ctx.blocking_wait(h),
                    })
                }
                None => {
                    self.assign_vm(node, vm_name, VmTarget::Run);
                    self.active.insert(vm_name, node);
                }
            }
        }
    }

    /// The source of a live migration into `node` started in an earlier plan: the previous
    /// placement told the source to migrate the VM to `node` and `node` to expect it.
    fn migration_into(&self, vm: &str, node: &str) -> Option<&'a str> {
        let ctx = self.ctx;
        let Some(VmTarget::Incoming(src)) = ctx.prev_target(vm, node) else {
            return None;
        };
        let handed = ctx.prev_target(vm, src);
        matches!(handed, Some(VmTarget::MigrateTo(to)) if to == node).then_some(src.as_str())
    }

    /// Whether the source of a migration no longer has the VM and will not start it: it
    /// reports the generation that told it to migrate (which never starts anything) and
    /// the VM gone, or it is lost and safe.
    fn migration_source_done(&self, vm: &str, src: &str) -> bool {
        let ctx = self.ctx;
        match ctx.state(src) {
            NodeState::Lost { safe, .. } => *safe,
            NodeState::NotJoined => true,
            NodeState::Alive => {
                ctx.lagging(src).is_none() && ctx.reports.get(src).is_some_and(|r| !r.vm_active(vm))
            }
        }
    }

    fn split_brain_of(&self, vm: &VmDesc) -> Option<Vec<String>> {
        if self.ctx.split_brain.is_empty() {
            return None;
        }
        let mut nodes: Vec<String> = vm
            .volumes
            .iter()
            .filter_map(|v| self.ctx.split_brain.get(v.as_str()))
            .flatten()
            .cloned()
            .collect();
        nodes.sort();
        nodes.dedup();
        (!nodes.is_empty()).then_some(nodes)
    }

    /// Every node that may hold the VM or one of its DRBD volumes as Primary.
    /// Every node but `node` that may hold the VM or one of its DRBD volumes as Primary,
    /// sorted and without repeats.
    fn other_holders(&self, vm: &VmDesc, node: &str) -> Vec<&'a str> {
        let ctx = self.ctx;
        let mut out: Vec<&'a str> = holders(&ctx.vm_holders, &vm.name)
            .iter()
            .copied()
            .filter(|h| *h != node)
            .collect();
        for v in &vm.volumes {
            out.extend(
                holders(&ctx.volume_primaries, v)
                    .iter()
                    .copied()
                    .filter(|h| *h != node),
            );
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    fn assign_vm(&mut self, node: &'a str, vm: &str, t: VmTarget) {
        self.assignments
            .entry(node)
            .or_default()
            .vms
            .insert(vm.to_string(), t);
    }

    /// DRBD roles: Primary where the VM is assigned to run, Secondary on every other replica.
    fn volumes(&mut self) {
        let ctx = self.ctx;
        // Volumes come in name order, so each node's list is sorted and becomes its map in
        // one go rather than by a search per insert.
        let mut roles: Map<&'a str, Vec<(String, VolumeRole)>> = Map::default();
        for (name, vol) in &ctx.d.volumes {
            let VolumeKind::Drbd { replicas } = &vol.kind else {
                continue;
            };
            let primary_on = vol
                .vm
                .as_deref()
                .and_then(|vm| self.active.get(vm))
                .copied();
            for r in replicas {
                let role = if Some(r.as_str()) == primary_on {
                    VolumeRole::Primary
                } else {
                    VolumeRole::Secondary
                };
                if self.assignments.contains_key(r.as_str()) {
                    roles
                        .entry(r.as_str())
                        .or_default()
                        .push((name.clone(), role));
                }
            }
        }
        for (n, list) in roles {
            if let Some(a) = self.assignments.get_mut(n) {
                // Nothing else gives volume roles.
                debug_assert!(a.volumes.is_empty());
                a.volumes = list.into_iter().collect();
            }
        }
    }

    fn vips(&mut self, pending: &mut Vec<Pending>) {
        let ctx = self.ctx;
        for (name, vip) in &ctx.d.vips {
            let subject = Subject::Vip(name.clone());
            let cur = ctx.prev.vips.get(name).map(String::as_str);
            let target: Option<&'a str> = match &vip.follows {
                VipFollows::Vm(vm) => self.active.get(vm.as_str()).copied(),
                VipFollows::Nodes(nodes) => {
                    let ok = |n: &str| ctx.alive(n) && !ctx.drained(n);
                    let kept = cur.and_then(|c| nodes.iter().find(|n| *n == c && ok(n)));
                    let lost_unsafe =
                        cur.filter(|c| matches!(ctx.state(c), NodeState::Lost { safe: false, .. }));
                    match lost_unsafe {
                        Some(c) => Some(c),
                        None => kept
                            .or_else(|| nodes.iter().find(|n| ok(n)))
                            .map(String::as_str),
                    }
                }
            };
            let Some(node) = target else {
                if let VipFollows::Vm(vm) = &vip.follows {
                    pending.push(Pending {
                        subject,
                        wait: Wait::VmNotRunning { vm: vm.clone() },
                    });
                }
                continue;
            };
            if matches!(vip.follows, VipFollows::Nodes(_)) {
                self.vip_target.insert(name, node);
            }
            let prev_here = ctx
                .prev_assignment(node)
                .is_some_and(|a| a.vips.contains(name));
            if !ctx.alive(node) {
                // On a lost node (not yet safe, or holding a pinned VM): kept there if it was
                // there, as the VM is; nothing else may take it meanwhile.
                if prev_here {
                    self.assignments
                        .entry(node)
                        .or_default()
                        .vips
                        .insert(name.clone());
                }
                let wait = match &vip.follows {
                    VipFollows::Vm(vm) => Wait::VmNotRunning { vm: vm.clone() },
                    VipFollows::Nodes(_) => ctx.blocking_wait(node),
                };
                pending.push(Pending { subject, wait });
                continue;
            }
            let mut others: Vec<&str> = holders(&ctx.vip_holders, name)
                .iter()
                .copied()
                .filter(|h| *h != node)
                .collect();
            if !prev_here {
                // New here: a node that has not reported its latest assignment may still be
                // acting on one that gave it the address.
                for h in ctx.lagging_nodes.iter().copied() {
                    if h != node && self.may_hold_vip(h, vip) && !others.contains(&h) {
                        others.push(h);
                    }
                }
            }
            let blocked = others.iter().find(|h| {
                let in_prev = ctx
                    .prev_assignment(h)
                    .is_some_and(|a| a.vips.contains(name));
                !ctx.released(h, |r| r.addresses.contains(&vip.address), in_prev)
            });
            match blocked {
                Some(h) => pending.push(Pending {
                    subject,
                    wait: ctx.blocking_wait(h),
                }),
                None => {
                    self.assignments
                        .entry(node)
                        .or_default()
                        .vips
                        .insert(name.clone());
                    if let VipFollows::Vm(vm) = &vip.follows {
                        if !ctx.reports.get(node).is_some_and(|r| r.vm_running(vm)) {
                            pending.push(Pending {
                                subject,
                                wait: Wait::VmNotRunning { vm: vm.clone() },
                            });
                        }
                    }
                }
            }
        }
    }

    /// Whether some assignment may have given `n` the address: it may run the VM the
    /// address follows, it is one of the nodes the address floats among, or its host has it.
    fn may_hold_vip(&self, n: &str, vip: &crate::model::VipDesc) -> bool {
        let ctx = self.ctx;
        if ctx
            .reports
            .get(n)
            .is_some_and(|r| r.addresses.contains(&vip.address))
        {
            return true;
        }
        match &vip.follows {
            VipFollows::Vm(vm) => ctx.d.vms.get(vm).is_some_and(|d| ctx.may_hold_vm(n, d)),
            VipFollows::Nodes(nodes) => nodes.iter().any(|x| x == n),
        }
    }

    /// Stamp generations: a node's generation grows by one when its content changes.
    fn into_placement(self) -> Placement {
        let ctx = self.ctx;
        let assignments = self
            .assignments
            .into_iter()
            .map(|(n, mut a)| {
                a.generation = match ctx.prev_assignment(n) {
                    Some(p) if p.same_content(&a) => p.generation,
                    Some(p) => p.generation + 1,
                    None => 1,
                };
                (n.to_string(), a)
            })
            .collect();
        Placement {
            assignments,
            // In name order, as the maps keep them: built in one go rather than sorted.
            vms: ctx
                .d
                .vms
                .keys()
                .filter_map(|v| Some((v.clone(), self.target.get(v.as_str())?.to_string())))
                .collect(),
            vips: ctx
                .d
                .vips
                .keys()
                .filter_map(|v| Some((v.clone(), self.vip_target.get(v.as_str())?.to_string())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FenceAttempt, NodeObserved};

    fn attempt(level: usize, at: u64, ok: bool) -> FenceAttempt {
        FenceAttempt {
            level,
            device: "d".into(),
            at: Time(at),
            ok,
            error: None,
        }
    }

    #[test]
    fn fencing_levels_are_tried_in_order_then_retried_after_backoff() {
        let b = std::time::Duration::from_secs(60);
        assert_eq!(next_level(2, &[], Time(0), b, Time(1)), Ok(0));
        assert_eq!(
            next_level(2, &[attempt(1, 5, false)], Time(0), b, Time(6)),
            Ok(1)
        );
        let both = [attempt(1, 5, false), attempt(2, 7, false)];
        assert_eq!(next_level(2, &both, Time(0), b, Time(8)), Err(Time(60_007)));
        assert_eq!(next_level(2, &both, Time(0), b, Time(60_007)), Ok(0));
        // Attempts from before the node was lost this time don't count.
        assert_eq!(next_level(2, &both, Time(10), b, Time(11)), Ok(0));
    }

    /// A lease the controller revoked early (heartbeats) may have been counted on by its node
    /// for a TTL after: a self-fence deadline counts from there, a fence from the loss itself.
    #[test]
    fn an_early_revoke_moves_the_self_fence_deadline_not_the_fence() {
        let mut d = crate::model::reference_desired();
        let ttl = d.cluster.lease_ttl;
        let w = std::time::Duration::from_secs(30);
        d.nodes.get_mut("beta").unwrap().watchdog = Some(w);
        let mut o = Observed::default();
        let lost = NodeObserved {
            lease: Lease::Expired(Time(100_000)),
            lease_revoked: Some(Time(100_000)),
            ..Default::default()
        };
        o.nodes.insert("beta".into(), lost.clone());
        let prev = Placement::default();
        let deadline =
            |d: &Desired, o: &Observed, now| match node_state(d, o, &prev, "beta", Time(now)) {
                NodeState::Lost { deadline, safe, .. } => (deadline, safe),
                other => panic!("{other:?}"),
            };
        let end = Time(100_000).plus(ttl).plus(w);
        assert_eq!(deadline(&d, &o, end.0 - 1), (Some(end), false));
        assert_eq!(deadline(&d, &o, end.0), (Some(end), true));
        // Not revoked: from the loss.
        let mut plain = o.clone();
        plain.nodes.get_mut("beta").unwrap().lease_revoked = None;
        assert_eq!(deadline(&d, &plain, 130_000), (Some(Time(130_000)), true));
        // A confirmed fence after the loss counts at once either way.
        o.nodes.get_mut("beta").unwrap().fence_attempts = vec![attempt(1, 100_200, true)];
        assert!(deadline(&d, &o, 100_300).1);
        // Fencing disabled, no watchdog: the deadline is the lease's end, a TTL on.
        d.nodes.get_mut("beta").unwrap().watchdog = None;
        d.cluster.fencing = FencingPolicy::Disabled;
        o.nodes.insert("beta".into(), lost);
        assert_eq!(
            deadline(&d, &o, 100_001),
            (Some(Time(100_000).plus(ttl)), false)
        );
    }
}
