//! The cluster's state in the store: one place that knows the key layout and the encoding
//! (JSON values), so the controller, the agents and `rampart status` read the same facts.
//!
//! Layout under `PREFIX/` (one prefix per cluster):
//! - `nodes/NODE/lease` — present while the node's agent keeps its lease alive;
//! - `lost/NODE` — when the controller first saw that lease gone (the start of an incident);
//! - `revoked/NODE` — when the controller revoked the node's lease early, and which lease
//!   (its heartbeat went silent): self-fence deadlines count a TTL later;
//! - `fence/NODE` — fence attempts of the current incident;
//! - `assignments/NODE` — the node's assignment, with its generation;
//! - `reports/NODE` — the agent's last report;
//! - `placement` — the controller's chosen nodes (VM -> node, VIP -> node);
//! - `operations` — maintenance and drained nodes, set by the admin;
//! - `leader` — the leading controller, on its lease.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Compare, CompareOp, LeaseId, Op, OpResponse, Store, StoreError, Txn};
use crate::model::{Assignment, FenceAttempt, HostReport, Operations, Placement, Time};

#[derive(Clone)]
pub struct ClusterStore {
    pub store: Arc<dyn Store>,
    prefix: String,
}

/// A value in the store that does not decode: garbage written by someone else, or a newer
/// format. Reported, never silently dropped.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("key {key} holds a value that does not decode: {message}")]
    Garbage { key: String, message: String },
}

/// Everything the controller reads in one consistent range.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub revision: i64,
    /// Live node leases: each node's lease key, while it exists.
    pub leases: BTreeMap<String, NodeLease>,
    pub lost: BTreeMap<String, Time>,
    /// Leases the controller revoked early (heartbeats), by node.
    pub revoked: BTreeMap<String, RevokedLease>,
    pub fence: BTreeMap<String, Vec<FenceAttempt>>,
    pub assignments: BTreeMap<String, Assignment>,
    pub reports: BTreeMap<String, HostReport>,
    pub placement: Placement,
    pub operations: Operations,
    pub leader: Option<String>,
    /// What the controller's last plan waits on, as text.
    pub pending: Vec<String>,
    /// The controller's git source status, as it published it.
    pub source: Option<serde_json::Value>,
    /// What agents need besides their assignment (VIP addresses), as the controller published it.
    pub resources: Option<crate::agent::local::LocalResources>,
    /// Nodes some node asked to have fenced (DRBD's fence-peer handler), by target node.
    pub fence_requests: BTreeMap<String, FenceRequestRecord>,
    /// Keys whose values did not decode.
    pub garbage: Vec<String>,
}

/// A node's live lease as its key shows it: the lease, and where its agent answers
/// heartbeats, if it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLease {
    pub id: Option<LeaseId>,
    pub heartbeat: Option<std::net::SocketAddr>,
}

/// The lease key's value, as the agent writes it. (Agents before heartbeats wrote `alive`:
/// any value that does not decode is a lease without a heartbeat address.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<std::net::SocketAddr>,
}

impl LeaseValue {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("lease values serialize")
    }
}

/// A node lease the controller revoked before it ran out, its heartbeat gone silent. Written
/// before the revoke; cleared when the node holds another lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedLease {
    pub at: Time,
    pub lease: i64,
}

/// A request to fence a node that is not (yet) lost: DRBD's `fence-peer` handler on a
/// Primary that lost its peer asks for it through `rampart drbd-fence-peer`. The controller
/// fences the node once per request and records the attempt in `fence/NODE`, where the
/// handler reads the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FenceRequestRecord {
    /// The node that asked.
    pub by: String,
    /// The DRBD resource whose peer was lost.
    pub resource: String,
    pub at: Time,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Chosen {
    #[serde(default)]
    vms: BTreeMap<String, String>,
    #[serde(default)]
    vips: BTreeMap<String, String>,
}

impl ClusterView {
    /// A node as the planner sees it: its lease (alive; lost since the controller first saw
    /// it gone, or since `now`; never joined), its fence attempts (only while it is not alive:
    /// a node that came back starts a new incident) and its last report.
    ///
    /// A node without a lease that never reported and was told to hold nothing only one node
    /// may hold (a VM, an address, a Primary role) has not joined yet: it is not lost, so a
    /// hypervisor that boots a little later than the rest is not fenced for it.
    pub fn node_observed(&self, node: &str, now: Time) -> crate::model::NodeObserved {
        use crate::model::Lease;
        let report = self.reports.get(node).cloned();
        let lease = if self.leases.contains_key(node) {
            Lease::Alive
        } else if let Some(t) = self.lost.get(node) {
            Lease::Expired(*t)
        } else if report.is_some()
            || self
                .assignments
                .get(node)
                .is_some_and(|a| a.may_hold_something())
        {
            Lease::Expired(now)
        } else {
            Lease::Never
        };
        let fence_attempts = if lease == Lease::Alive {
            Vec::new()
        } else {
            self.fence.get(node).cloned().unwrap_or_default()
        };
        let lease_revoked = if lease == Lease::Alive {
            None
        } else {
            self.revoked.get(node).map(|r| r.at)
        };
        crate::model::NodeObserved {
            lease,
            fence_attempts,
            report,
            lease_revoked,
        }
    }
}

/// The most operations one transaction carries (etcd's default `--max-txn-ops` is 128).
pub const MAX_TXN_OPS: usize = 100;

/// The key subtrees (and single keys) that [`ClusterStore::view`] reads.
const VIEW_SUBTREES: &[&str] = &[
    "nodes/",
    "lost/",
    "revoked/",
    "fence/",
    "assignments/",
    "reports/",
    "placement",
    "operations",
    "leader",
    "status/",
    "resources",
    "fence-requests/",
];

impl ClusterStore {
    pub fn new(store: Arc<dyn Store>, prefix: &str) -> Self {
        ClusterStore {
            store,
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}/{rest}", self.prefix).into_bytes()
    }

    pub fn lease_key(&self, node: &str) -> Vec<u8> {
        self.key(&format!("nodes/{node}/lease"))
    }

    /// The write of a node's lease key, on its lease, naming its heartbeat address (if any).
    pub fn lease_op(
        &self,
        node: &str,
        heartbeat: Option<std::net::SocketAddr>,
        lease: LeaseId,
    ) -> Op {
        Op::put_with_lease(
            self.lease_key(node),
            LeaseValue { heartbeat }.encode(),
            lease,
        )
    }
    pub fn assignment_key(&self, node: &str) -> Vec<u8> {
        self.key(&format!("assignments/{node}"))
    }
    pub fn report_key(&self, node: &str) -> Vec<u8> {
        self.key(&format!("reports/{node}"))
    }
    pub fn fence_key(&self, node: &str) -> Vec<u8> {
        self.key(&format!("fence/{node}"))
    }
    pub fn revoked_key(&self, node: &str) -> Vec<u8> {
        self.key(&format!("revoked/{node}"))
    }

    pub fn lost_key(&self, node: &str) -> Vec<u8> {
        self.key(&format!("lost/{node}"))
    }
    pub fn leader_key(&self) -> Vec<u8> {
        self.key("leader")
    }
    pub fn operations_key(&self) -> Vec<u8> {
        self.key("operations")
    }
    pub fn pending_key(&self) -> Vec<u8> {
        self.key("status/pending")
    }
    pub fn source_status_key(&self) -> Vec<u8> {
        self.key("status/source")
    }
    pub fn fence_request_key(&self, node: &str) -> Vec<u8> {
        self.key(&format!("fence-requests/{node}"))
    }
    pub fn resources_key(&self) -> Vec<u8> {
        self.key("resources")
    }
    /// What node `node`'s real drivers need from the applied revision (a [`HostConfig`]).
    /// Kept out of [`ClusterStore::view`]: it holds every domain XML and resource file.
    ///
    /// [`HostConfig`]: crate::drivers::config::HostConfig
    pub fn host_config_key(&self, node: &str) -> Vec<u8> {
        self.key(&format!("config/{node}"))
    }

    /// Read the whole cluster state at one revision.
    pub async fn view(&self) -> Result<ClusterView, StoreError> {
        // Every subtree the view decodes, read in one transaction so they share a revision;
        // `config/` (large, and needed only by each node's agent) is left out.
        let ops: Vec<Op> = VIEW_SUBTREES
            .iter()
            .map(|t| Op::range(self.key(t)))
            .collect();
        let resp = self.store.txn(Txn::new().and_then(ops)).await?;
        let revision = resp.revision;
        let kvs = resp.responses.into_iter().flat_map(|r| match r {
            OpResponse::Range { kvs } => kvs,
            _ => Vec::new(),
        });
        let mut v = ClusterView {
            revision,
            ..Default::default()
        };
        let skip = self.prefix.len() + 1;
        for kv in kvs {
            let Ok(key) = std::str::from_utf8(&kv.key[skip..]) else {
                v.garbage
                    .push(String::from_utf8_lossy(&kv.key).into_owned());
                continue;
            };
            let parts: Vec<&str> = key.split('/').collect();
            let mut bad = |k: &str, e: String| v.garbage.push(format!("{k}: {e}"));
            fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
                serde_json::from_slice(b).map_err(|e| e.to_string())
            }
            match parts.as_slice() {
                ["nodes", n, "lease"] => {
                    let value: LeaseValue = dec(&kv.value).unwrap_or_default();
                    v.leases.insert(
                        n.to_string(),
                        NodeLease {
                            id: kv.lease,
                            heartbeat: value.heartbeat,
                        },
                    );
                }
                ["revoked", n] => match dec(&kv.value) {
                    Ok(t) => {
                        v.revoked.insert(n.to_string(), t);
                    }
                    Err(e) => bad(key, e),
                },
                ["lost", n] => match dec(&kv.value) {
                    Ok(t) => {
                        v.lost.insert(n.to_string(), t);
                    }
                    Err(e) => bad(key, e),
                },
                ["fence", n] => match dec(&kv.value) {
                    Ok(t) => {
                        v.fence.insert(n.to_string(), t);
                    }
                    Err(e) => bad(key, e),
                },
                ["assignments", n] => match dec(&kv.value) {
                    Ok(t) => {
                        v.assignments.insert(n.to_string(), t);
                    }
                    Err(e) => bad(key, e),
                },
                ["reports", n] => match dec(&kv.value) {
                    Ok(t) => {
                        v.reports.insert(n.to_string(), t);
                    }
                    Err(e) => bad(key, e),
                },
                ["placement"] => match dec::<Chosen>(&kv.value) {
                    Ok(c) => {
                        v.placement.vms = c.vms;
                        v.placement.vips = c.vips;
                    }
                    Err(e) => bad(key, e),
                },
                ["operations"] => match dec(&kv.value) {
                    Ok(o) => v.operations = o,
                    Err(e) => bad(key, e),
                },
                ["leader"] => v.leader = Some(String::from_utf8_lossy(&kv.value).into_owned()),
                ["status", "pending"] => match dec(&kv.value) {
                    Ok(p) => v.pending = p,
                    Err(e) => bad(key, e),
                },
                ["resources"] => match dec(&kv.value) {
                    Ok(p) => v.resources = Some(p),
                    Err(e) => bad(key, e),
                },
                ["fence-requests", n] => match dec(&kv.value) {
                    Ok(r) => {
                        v.fence_requests.insert(n.to_string(), r);
                    }
                    Err(e) => bad(key, e),
                },
                ["status", "source"] => match dec(&kv.value) {
                    Ok(p) => v.source = Some(p),
                    Err(e) => bad(key, e),
                },
                _ => {}
            }
        }
        v.placement.assignments = v.assignments.clone();
        Ok(v)
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(kv) => {
                serde_json::from_slice(&kv.value)
                    .map(Some)
                    .map_err(|e| StateError::Garbage {
                        key: String::from_utf8_lossy(key).into_owned(),
                        message: e.to_string(),
                    })
            }
        }
    }

    pub async fn put<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        lease: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("state values serialize");
        self.store.put(key, &bytes, lease).await.map(|_| ())
    }

    /// Write `ops` only while `me` still leads, with the leader key at the revision at which
    /// `me` was elected. A deposed controller's write fails here (S4).
    ///
    /// `lost` names the nodes the plan treated as gone: the write also fails if any of them has
    /// taken a lease again since the view was read, so work is never moved off a node that has
    /// just come back (the controller re-plans instead).
    pub async fn leader_txn(
        &self,
        me: &str,
        elected_rev: i64,
        lost: &[&str],
        ops: Vec<Op>,
    ) -> Result<bool, StoreError> {
        let k = self.leader_key();
        let mut compares = vec![
            Compare::value(k.clone(), CompareOp::Equal, me.as_bytes().to_vec()),
            Compare::mod_revision(k, CompareOp::Equal, elected_rev),
        ];
        compares.extend(lost.iter().map(|n| Compare::absent(self.lease_key(n))));
        // etcd refuses a transaction of more than 128 operations (`--max-txn-ops`): write in
        // batches, each under the same guard, stopping at the first that fails. A part written
        // alone is safe: the planner grants a resource only once its previous holder has
        // released it or been fenced, so no subset of one plan's assignments lets two nodes
        // hold the same thing; a later round writes what is missing.
        let mut ops = ops;
        if ops.is_empty() {
            let txn = Txn::new().when(compares);
            return Ok(self.store.txn(txn).await?.succeeded);
        }
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(MAX_TXN_OPS));
            let txn = Txn::new().when(compares.clone()).and_then(ops);
            if !self.store.txn(txn).await?.succeeded {
                return Ok(false);
            }
            ops = rest;
        }
        Ok(true)
    }

    /// Try to become leader on `lease`. Returns the revision of the leader key when elected.
    pub async fn campaign(&self, me: &str, lease: LeaseId) -> Result<Option<i64>, StoreError> {
        let k = self.leader_key();
        let txn = Txn::new()
            .when([Compare::absent(k.clone())])
            .and_then([Op::put_with_lease(k, me.as_bytes().to_vec(), lease)]);
        let r = self.store.txn(txn).await?;
        Ok(r.succeeded.then_some(r.revision))
    }

    /// The placement write: changed assignments plus the chosen nodes.
    pub fn placement_ops(&self, prev: &Placement, next: &Placement) -> Vec<Op> {
        let mut ops = Vec::new();
        for (n, a) in &next.assignments {
            if prev.assignments.get(n) != Some(a) {
                ops.push(Op::put(
                    self.assignment_key(n),
                    serde_json::to_vec(a).expect("serialize"),
                ));
            }
        }
        if prev.vms != next.vms || prev.vips != next.vips {
            let c = Chosen {
                vms: next.vms.clone(),
                vips: next.vips.clone(),
            };
            ops.push(Op::put(
                self.key("placement"),
                serde_json::to_vec(&c).expect("serialize"),
            ));
        }
        ops
    }
}
