//! What a plan is waiting on, as typed reasons an operator (or a test) can ask about.

use serde::{Deserialize, Serialize};

use crate::model::Time;

/// What a pending step is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Subject {
    Cluster,
    Node(String),
    Vm(String),
    Vip(String),
    Volume(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Cluster => write!(f, "cluster"),
            Subject::Node(n) => write!(f, "node {n}"),
            Subject::Vm(n) => write!(f, "vm {n}"),
            Subject::Vip(n) => write!(f, "vip {n}"),
            Subject::Volume(n) => write!(f, "volume {n}"),
        }
    }
}

/// Why a node cannot take a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Ineligible {
    Down,
    NotJoined,
    Drained,
    /// Not enough room: what is free there.
    Capacity {
        cpus_free: i64,
        memory_free_mib: i64,
    },
    AntiAffinity {
        vm: String,
    },
    /// The volume's disk there is not UpToDate.
    Disk {
        volume: String,
        state: String,
    },
    /// The node has not reported the volume's disk state (its agent has not brought the
    /// volume up yet, for example just after a reboot, when it may still need a resync).
    DiskUnknown {
        volume: String,
    },
    SplitBrain {
        volume: String,
    },
    /// The node the VM is leaving.
    Leaving,
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ineligible::Down => write!(f, "down"),
            Ineligible::NotJoined => write!(f, "has not joined"),
            Ineligible::Drained => write!(f, "drained"),
            Ineligible::Capacity {
                cpus_free,
                memory_free_mib,
            } => write!(f, "no room ({cpus_free} CPUs, {memory_free_mib}MiB free)"),
            Ineligible::AntiAffinity { vm } => write!(f, "runs anti-affine vm {vm}"),
            Ineligible::Disk { volume, state } => write!(f, "disk of {volume} is {state}"),
            Ineligible::DiskUnknown { volume } => write!(f, "disk of {volume} not reported yet"),
            Ineligible::SplitBrain { volume } => write!(f, "{volume} is split-brain"),
            Ineligible::Leaving => write!(f, "being left"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Wait {
    /// Fewer than a majority of store members are alive: placement is frozen.
    QuorumLost {
        alive: usize,
        members: usize,
    },
    /// Maintenance mode: placement is frozen, nothing is fenced.
    Maintenance,
    /// The node must be fenced (or pass its self-fence deadline) before work leaves it.
    Fencing {
        node: String,
        deadline: Option<Time>,
    },
    /// Every fencing level failed; nothing leaves the node until a retry succeeds, an admin
    /// confirms by hand, or its self-fence deadline (if it has a watchdog) passes.
    FencingFailed {
        node: String,
        retry_at: Time,
        deadline: Option<Time>,
    },
    /// The node is lost and has no fencing level: only its self-fence deadline can free it.
    Unfenceable {
        node: String,
    },
    /// Waiting for the node to give it up (stop the VM, demote the volume, drop the address).
    Release {
        node: String,
    },
    /// The node's last report is for an older generation than its assignment: it may still
    /// act on an older assignment (start what that gave it), so nothing it might hold is
    /// given to another node until it reports this generation.
    Acknowledge {
        node: String,
        generation: u64,
    },
    Migration {
        from: String,
        to: String,
    },
    NoEligibleNode {
        reasons: Vec<(String, Ineligible)>,
    },
    /// The VM may not fail over and its node is down: it stays down until the node returns.
    PinnedDown {
        node: String,
    },
    /// The VM may not fail over and its node is drained: stopped until the node is undrained.
    PinnedDrained {
        node: String,
    },
    SplitBrain {
        nodes: Vec<String>,
    },
    /// The address waits for its VM to run.
    VmNotRunning {
        vm: String,
    },
    /// The node has never reported; it gets no work until its agent joins.
    NotJoined {
        node: String,
    },
}

impl Wait {
    /// The self-fence deadline this wait ends at, if it is a wait on a lost node that has one.
    pub fn deadline(&self) -> Option<Time> {
        match self {
            Wait::Fencing { deadline, .. } | Wait::FencingFailed { deadline, .. } => *deadline,
            _ => None,
        }
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::QuorumLost { alive, members } => write!(
                f,
                "quorum lost: {alive} of {members} store members alive; placement frozen"
            ),
            Wait::Maintenance => write!(f, "maintenance mode: placement frozen"),
            Wait::Fencing { node, deadline } => match deadline {
                Some(t) => write!(f, "waiting on fencing of {node} (or its self-fence deadline {t})"),
                None => write!(f, "waiting on fencing of {node}"),
            },
            Wait::FencingFailed {
                node,
                retry_at,
                deadline,
            } => {
                write!(f, "every fencing level failed for {node}; nothing leaves it until ")?;
                if let Some(t) = deadline {
                    write!(f, "its self-fence deadline {t}, ")?;
                }
                write!(f, "a retry succeeds (next at {retry_at}) or `rampart fence confirm {node}`")
            }
            Wait::Unfenceable { node } => {
                write!(f, "{node} is lost and has no fencing level")
            }
            Wait::Release { node } => write!(f, "waiting on {node} to release it"),
            Wait::Acknowledge { node, generation } => {
                write!(f, "waiting on {node} to report generation {generation}")
            }
            Wait::Migration { from, to } => write!(f, "live-migrating from {from} to {to}"),
            Wait::NoEligibleNode { reasons } => {
                write!(f, "no eligible node")?;
                for (i, (n, why)) in reasons.iter().enumerate() {
                    write!(f, "{} {n}: {why}", if i == 0 { ":" } else { ";" })?;
                }
                Ok(())
            }
            Wait::PinnedDown { node } => {
                write!(f, "down: {node} is lost and the vm may not fail over")
            }
            Wait::PinnedDrained { node } => {
                write!(f, "stopped: {node} is drained and the vm may not fail over")
            }
            Wait::SplitBrain { nodes } => write!(
                f,
                "split brain reported by {}; resolve it by hand (drbdadm connect --discard-my-data on the victim)",
                nodes.join(", ")
            ),
            Wait::VmNotRunning { vm } => write!(f, "waiting on vm {vm} to run"),
            Wait::NotJoined { node } => write!(f, "{node} has not joined"),
        }
    }
}

/// One pending step: what, and what it waits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub subject: Subject,
    pub wait: Wait,
}
