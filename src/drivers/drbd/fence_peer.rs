//! What DRBD tells a `fence-peer` handler, and what the handler answers: pure parsing of the
//! handler's environment and the exit codes DRBD understands. The lead wires this to the store
//! and the `rampart drbd-fence-peer` command.
//!
//! DRBD 9 runs the handler through drbdadm when a Primary (or a node that wants to become one)
//! loses a peer and the resource's `fencing` policy asks for it. The kernel sets
//! `DRBD_RESOURCE`, `DRBD_PEER_NODE_ID` (the connection that was lost), `DRBD_CSTATE`,
//! `DRBD_MINOR`/`DRBD_VOLUME` (or `DRBD_MINOR_<vol>` per volume), `DRBD_MY_AF`/`DRBD_MY_ADDRESS`,
//! `DRBD_PEER_AF`/`DRBD_PEER_ADDRESS` and `UP_TO_DATE_NODES` (a hex bit mask by node id);
//! drbdadm adds `DRBD_CONF`, `DRBD_MY_NODE_ID` and one `DRBD_NODE_ID_<id>=<hostname>` per
//! host of the resource, and older versions (8.4) `DRBD_PEERS`/`DRBD_PEER` with the peers'
//! hostnames. A real handler environment from the field:
//!
//! ```text
//! DRBD_BACKING_DEV_0=/dev/sdb DRBD_CONF=/etc/drbd.conf DRBD_CSTATE=Connecting DRBD_LL_DISK=/dev/sdb
//! DRBD_MINOR=0 DRBD_MINOR_0=0 DRBD_MY_ADDRESS=10.40.40.42 DRBD_MY_AF=ipv4 DRBD_MY_NODE_ID=1
//! DRBD_NODE_ID_0=node01 DRBD_NODE_ID_1=node02 DRBD_PEER_ADDRESS=10.40.40.41 DRBD_PEER_AF=ipv4
//! DRBD_PEER_NODE_ID=0 DRBD_RESOURCE=r0 DRBD_VOLUME=0 UP_TO_DATE_NODES=0x00000002
//! ```
//!
//! The peer to fence is the one DRBD lost: `DRBD_NODE_ID_<DRBD_PEER_NODE_ID>`. DRBD 9 calls the
//! handler once per lost connection, so that names exactly one node even in a three-way mesh.
//! Only without a peer node id (DRBD 8.4) do `DRBD_PEERS` (blank-separated) or `DRBD_PEER` say
//! which node(s) to fence. The same rules serve `unfence-peer`.

use std::collections::BTreeMap;

/// The exit codes of a `fence-peer` handler, as the DRBD kernel module reads them
/// (`conn_try_outdate_peer` in `drbd_nl.c`). Anything else means "the handler failed": DRBD
/// keeps I/O frozen (with `fencing resource-and-stonith`) and does not outdate the peer, which
/// is the safe answer whenever the handler cannot prove the peer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FencePeerExit {
    /// 1 (any code not below): fencing failed or is undecided; I/O stays frozen.
    Failed,
    /// 3: the peer's disk is already Inconsistent (or worse); DRBD marks it so.
    PeerInconsistent,
    /// 4: the peer's disk was outdated (or already was); DRBD marks it Outdated. ("peer was
    /// fenced")
    PeerOutdated,
    /// 5: the peer is unreachable and assumed dead; DRBD outdates it only if this node's disk
    /// is UpToDate. Rampart never answers this: an unreachable peer is not a fenced one.
    PeerUnreachable,
    /// 6: the peer is Primary (active); this node outdates itself instead.
    PeerPrimary,
    /// 7: the peer was powered off (STONITH); DRBD marks it Outdated and resumes I/O. Only
    /// valid with `fencing resource-and-stonith`, which Rampart's resource files set.
    PeerFenced,
}

impl FencePeerExit {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            FencePeerExit::Failed => 1,
            FencePeerExit::PeerInconsistent => 3,
            FencePeerExit::PeerOutdated => 4,
            FencePeerExit::PeerUnreachable => 5,
            FencePeerExit::PeerPrimary => 6,
            FencePeerExit::PeerFenced => 7,
        }
    }

    /// How DRBD reads an exit code.
    pub fn from_code(code: i32) -> FencePeerExit {
        match code {
            3 => FencePeerExit::PeerInconsistent,
            4 => FencePeerExit::PeerOutdated,
            5 => FencePeerExit::PeerUnreachable,
            6 => FencePeerExit::PeerPrimary,
            7 => FencePeerExit::PeerFenced,
            _ => FencePeerExit::Failed,
        }
    }

    /// DRBD's own words for it (the kernel log line "fence-peer helper returned N (...)").
    pub fn meaning(self) -> &'static str {
        match self {
            FencePeerExit::Failed => "fence-peer helper broken or fencing failed; I/O stays frozen",
            FencePeerExit::PeerInconsistent => "peer is inconsistent or worse",
            FencePeerExit::PeerOutdated => "peer was fenced (outdated)",
            FencePeerExit::PeerUnreachable => "peer is unreachable, assumed to be dead",
            FencePeerExit::PeerPrimary => "peer is active",
            FencePeerExit::PeerFenced => "peer was stonithed",
        }
    }
}

/// What a `fence-peer` (or `unfence-peer`) invocation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencePeerRequest {
    /// `DRBD_RESOURCE`: the Rampart volume.
    pub resource: String,
    /// The node(s) to fence, by hostname (= Rampart node name, as the `on` sections say).
    pub peers: Vec<String>,
    /// `DRBD_PEER_NODE_ID`, when DRBD 9 gave it.
    pub peer_node_id: Option<u32>,
    /// `DRBD_MY_NODE_ID` and this node's hostname from the node id map, when given.
    pub my_node_id: Option<u32>,
    pub my_node: Option<String>,
    /// `DRBD_CSTATE`: the connection state when the handler was called (`Connecting`, ...).
    pub connection_state: Option<String>,
    /// `DRBD_VOLUME`/`DRBD_MINOR`, when the handler runs for one device.
    pub volume: Option<u32>,
    pub minor: Option<u32>,
    /// `UP_TO_DATE_NODES`: node ids with UpToDate data, as DRBD knew it.
    pub up_to_date_nodes: Vec<u32>,
    /// `DRBD_NODE_ID_<id>`: every host of the resource by node id.
    pub nodes: BTreeMap<u32, String>,
}

/// Why the environment names nobody to fence. The handler must then answer
/// [`FencePeerExit::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FencePeerEnvError {
    #[error("DRBD_RESOURCE is not set: not run by DRBD as a fence-peer handler")]
    NoResource,
    #[error("DRBD_PEER_NODE_ID={id} but no DRBD_NODE_ID_{id} names that node (drbdadm sets one per host of the resource)")]
    UnknownPeerNodeId { id: u32 },
    #[error("{var}={value:?} is not a node id")]
    BadNodeId { var: String, value: String },
    #[error("no peer to fence: none of DRBD_PEER_NODE_ID, DRBD_PEERS or DRBD_PEER is set")]
    NoPeer,
}

/// Read a handler's environment (`std::env::vars()`, or a test's pairs).
pub fn parse_fence_peer_env<I, K, V>(vars: I) -> Result<FencePeerRequest, FencePeerEnvError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let env: BTreeMap<String, String> = vars
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let id = |k: &str| -> Result<Option<u32>, FencePeerEnvError> {
        match get(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<u32>()
                .map(Some)
                .map_err(|_| FencePeerEnvError::BadNodeId {
                    var: k.to_string(),
                    value: v.to_string(),
                }),
        }
    };

    let resource = get("DRBD_RESOURCE")
        .ok_or(FencePeerEnvError::NoResource)?
        .to_string();
    let nodes: BTreeMap<u32, String> = env
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix("DRBD_NODE_ID_")?.parse::<u32>().ok()?;
            let v = v.trim();
            (!v.is_empty()).then(|| (n, v.to_string()))
        })
        .collect();
    let peer_node_id = id("DRBD_PEER_NODE_ID")?;
    let my_node_id = id("DRBD_MY_NODE_ID")?;
    let peers = if let Some(pid) = peer_node_id {
        vec![nodes
            .get(&pid)
            .cloned()
            .ok_or(FencePeerEnvError::UnknownPeerNodeId { id: pid })?]
    } else if let Some(list) = get("DRBD_PEERS") {
        list.split_whitespace().map(str::to_string).collect()
    } else if let Some(one) = get("DRBD_PEER") {
        vec![one.to_string()]
    } else {
        return Err(FencePeerEnvError::NoPeer);
    };
    let up_to_date_nodes = get("UP_TO_DATE_NODES")
        .and_then(|v| {
            let hex = v.strip_prefix("0x").or(v.strip_prefix("0X")).unwrap_or(v);
            u64::from_str_radix(hex, 16).ok()
        })
        .map(|mask| (0..64).filter(|i| mask & (1u64 << i) != 0).collect())
        .unwrap_or_default();
    Ok(FencePeerRequest {
        resource,
        peers,
        peer_node_id,
        my_node: my_node_id.and_then(|i| nodes.get(&i).cloned()),
        my_node_id,
        connection_state: get("DRBD_CSTATE").map(str::to_string),
        volume: get("DRBD_VOLUME").and_then(|v| v.parse().ok()),
        minor: get("DRBD_MINOR").and_then(|v| v.parse().ok()),
        up_to_date_nodes,
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment of a real crm-fence-peer.9.sh run (logged by the handler, DRBD 9).
    const FIELD: &str = "DRBD_BACKING_DEV_0=/dev/sdb DRBD_CONF=/etc/drbd.conf DRBD_CSTATE=Connecting \
        DRBD_LL_DISK=/dev/sdb DRBD_MINOR=0 DRBD_MINOR_0=0 DRBD_MY_ADDRESS=10.40.40.42 DRBD_MY_AF=ipv4 \
        DRBD_MY_NODE_ID=1 DRBD_NODE_ID_0=node01 DRBD_NODE_ID_1=node02 DRBD_PEER_ADDRESS=10.40.40.41 \
        DRBD_PEER_AF=ipv4 DRBD_PEER_NODE_ID=0 DRBD_RESOURCE=r0 DRBD_VOLUME=0 UP_TO_DATE_NODES=0x00000002";

    fn env(s: &str) -> Vec<(String, String)> {
        s.split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn drbd9_environment() {
        let r = parse_fence_peer_env(env(FIELD)).unwrap();
        assert_eq!(
            r,
            FencePeerRequest {
                resource: "r0".into(),
                peers: vec!["node01".into()],
                peer_node_id: Some(0),
                my_node_id: Some(1),
                my_node: Some("node02".into()),
                connection_state: Some("Connecting".into()),
                volume: Some(0),
                minor: Some(0),
                up_to_date_nodes: vec![1],
                nodes: [(0, "node01".into()), (1, "node02".into())].into(),
            }
        );
    }

    #[test]
    fn three_way_mesh_fences_only_the_lost_peer() {
        let r = parse_fence_peer_env([
            ("DRBD_RESOURCE", "files"),
            ("DRBD_PEER_NODE_ID", "2"),
            ("DRBD_MY_NODE_ID", "0"),
            ("DRBD_NODE_ID_0", "alpha"),
            ("DRBD_NODE_ID_1", "beta"),
            ("DRBD_NODE_ID_2", "gamma"),
            ("DRBD_PEERS", "beta gamma"),
            ("UP_TO_DATE_NODES", "0x3"),
        ])
        .unwrap();
        assert_eq!(r.peers, ["gamma"]);
        assert_eq!(r.up_to_date_nodes, [0, 1]);
        assert_eq!(r.my_node.as_deref(), Some("alpha"));
    }

    #[test]
    fn older_environments_and_errors() {
        let r = parse_fence_peer_env(env("DRBD_RESOURCE=r0 DRBD_PEER=beta")).unwrap();
        assert_eq!(r.peers, ["beta"]);
        let r = parse_fence_peer_env([("DRBD_RESOURCE", "r0"), ("DRBD_PEERS", " beta  gamma ")])
            .unwrap();
        assert_eq!(r.peers, ["beta", "gamma"]);
        assert!(r.up_to_date_nodes.is_empty());

        let cases: [(&str, FencePeerEnvError); 4] = [
            ("DRBD_PEER=beta", FencePeerEnvError::NoResource),
            ("DRBD_RESOURCE=r0", FencePeerEnvError::NoPeer),
            (
                "DRBD_RESOURCE=r0 DRBD_PEER_NODE_ID=3 DRBD_NODE_ID_0=alpha",
                FencePeerEnvError::UnknownPeerNodeId { id: 3 },
            ),
            (
                "DRBD_RESOURCE=r0 DRBD_PEER_NODE_ID=x",
                FencePeerEnvError::BadNodeId {
                    var: "DRBD_PEER_NODE_ID".into(),
                    value: "x".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_fence_peer_env(env(input)), Err(want), "{input}");
        }
    }

    #[test]
    fn exit_codes() {
        for (code, exit) in [
            (1, FencePeerExit::Failed),
            (3, FencePeerExit::PeerInconsistent),
            (4, FencePeerExit::PeerOutdated),
            (5, FencePeerExit::PeerUnreachable),
            (6, FencePeerExit::PeerPrimary),
            (7, FencePeerExit::PeerFenced),
        ] {
            assert_eq!(exit.code(), code);
            assert_eq!(FencePeerExit::from_code(code), exit);
            assert!(!exit.meaning().is_empty());
        }
        for other in [0, 2, 8, 255, -1] {
            assert_eq!(FencePeerExit::from_code(other), FencePeerExit::Failed);
        }
        assert_eq!(FencePeerExit::PeerFenced.meaning(), "peer was stonithed");
    }
}
