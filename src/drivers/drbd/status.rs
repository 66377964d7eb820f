//! `drbdsetup status --json` (drbd-utils 9.x) into [`DrbdObserved`], and the mapping both
//! parsers (this one and [`events2`](super::events2)) share.
//!
//! The JSON is an array of resources:
//!
//! ```json
//! [{"name": "r0", "node-id": 0, "role": "Primary", "suspended": false,
//!   "devices": [{"volume": 0, "minor": 0, "disk-state": "UpToDate", "size": 1048576, ...}],
//!   "connections": [{"peer-node-id": 1, "name": "beta", "connection-state": "Connected",
//!                    "peer-role": "Secondary",
//!                    "peer_devices": [{"volume": 0, "replication-state": "Established",
//!                                      "peer-disk-state": "UpToDate", "out-of-sync": 0, ...}]}]}]
//! ```
//!
//! Keys are kebab-case except `peer_devices`; sizes and counters are KiB. During a resync a
//! peer device carries more keys (`percent-resync-done`, `rs-total`, ...), and newer drbd-utils
//! add `paths`, `tls`, `open`. Every field is read with a default and unknown keys are ignored,
//! so a newer drbd-utils does not break the agent. The shape follows `resource_status_json`,
//! `connection_status_json` and `peer_device_status_json` in drbd-utils' `user/v9/drbdsetup.c`.
//!
//! How the model is filled:
//! - `role`, `disk`: the resource's role and the disk state of volume 0 (Rampart resources have
//!   one volume; a resource without a device reads as `Diskless`).
//! - `peers`: keyed by the connection's name, which drbdadm sets to the peer's `on HOST` name
//!   (the Rampart node name); a nameless connection is `node-id-N`.
//! - `out_of_sync_kib`: the largest `out-of-sync` over the peer devices of volume 0: how much
//!   of this copy is known to differ from some peer.
//! - `split_brain`: DRBD drops a connection whose split brain it cannot resolve to
//!   `StandAlone` ("Split-Brain detected but unresolved, dropping connection!") and then never
//!   reconnects it by itself; the DRBD user guide: "After split brain has been detected, one
//!   node will always have the resource in a StandAlone connection state". `drbdsetup status`
//!   has no split-brain flag, so here a `StandAlone` connection counts as split brain. Rampart
//!   never disconnects a resource by hand, so the other causes of `StandAlone` (unrelated
//!   data, incompatible settings) also need an admin before the volume is safe to promote
//!   elsewhere, and blocking them is the safe side. The events2 observer is more precise: it
//!   also sees the `split-brain` handler being called, and ignores a connection that is
//!   `StandAlone` only because it was just created.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::{DiskState, DrbdObserved, DrbdRole, PeerObserved};

/// Why `drbdsetup status --json` output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusParseError {
    #[error("drbdsetup status --json printed invalid JSON: {0}")]
    Json(String),
    #[error("drbdsetup status --json printed {0}, not an array of resources")]
    NotAnArray(&'static str),
}

/// Parse `drbdsetup status --json` output into one [`DrbdObserved`] per resource. Empty output
/// (no resources configured) is an empty map.
pub fn parse_status_json(text: &str) -> Result<BTreeMap<String, DrbdObserved>, StatusParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(BTreeMap::new());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| StatusParseError::Json(e.to_string()))?;
    let resources = match &value {
        Value::Array(a) => a,
        Value::Object(_) => return Err(StatusParseError::NotAnArray("an object")),
        _ => return Err(StatusParseError::NotAnArray("a scalar")),
    };
    let mut out = BTreeMap::new();
    for r in resources {
        let name = str_of(r, "name");
        if name.is_empty() {
            continue;
        }
        let devices: Vec<(i64, String)> = arr_of(r, "devices")
            .iter()
            .map(|d| (int_of(d, "volume"), str_of(d, "disk-state")))
            .collect();
        let connections = arr_of(r, "connections")
            .iter()
            .map(|c| {
                let state = str_of(c, "connection-state");
                let peer_devices: Vec<PeerDeviceView> = arr_of(c, "peer_devices")
                    .iter()
                    .map(|p| PeerDeviceView {
                        volume: int_of(p, "volume"),
                        peer_disk: str_of(p, "peer-disk-state"),
                        out_of_sync_kib: uint_of(p, "out-of-sync"),
                    })
                    .collect();
                ConnectionView {
                    name: str_of(c, "name"),
                    peer_node_id: int_of(c, "peer-node-id"),
                    split_brain: state == "StandAlone",
                    state,
                    peer_devices,
                }
            })
            .collect();
        let view = ResourceView {
            role: str_of(r, "role"),
            devices,
            connections,
        };
        out.insert(name, view.observed());
    }
    Ok(out)
}

/// One resource as either parser sees it, before it becomes a [`DrbdObserved`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ResourceView {
    pub role: String,
    /// (volume, disk state)
    pub devices: Vec<(i64, String)>,
    pub connections: Vec<ConnectionView>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionView {
    pub name: String,
    pub peer_node_id: i64,
    pub state: String,
    pub peer_devices: Vec<PeerDeviceView>,
    /// The parser's evidence of a split brain on this connection.
    pub split_brain: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PeerDeviceView {
    pub volume: i64,
    pub peer_disk: String,
    pub out_of_sync_kib: u64,
}

impl ResourceView {
    pub fn observed(&self) -> DrbdObserved {
        let disk = pick_volume(&self.devices, |(v, _)| *v)
            .map(|(_, d)| disk_state(d))
            .unwrap_or(DiskState::Diskless);
        let mut peers = BTreeMap::new();
        let mut out_of_sync_kib = 0;
        let mut split_brain = false;
        for c in &self.connections {
            let pd = pick_volume(&c.peer_devices, |p| p.volume);
            out_of_sync_kib = out_of_sync_kib.max(pd.map_or(0, |p| p.out_of_sync_kib));
            split_brain |= c.split_brain;
            let key = if c.name.is_empty() {
                format!("node-id-{}", c.peer_node_id)
            } else {
                c.name.clone()
            };
            peers.insert(
                key,
                PeerObserved {
                    connection: if c.state.is_empty() {
                        "Unknown".to_string()
                    } else {
                        c.state.clone()
                    },
                    disk: pd.map_or(DiskState::DUnknown, |p| disk_state(&p.peer_disk)),
                },
            );
        }
        DrbdObserved {
            role: role(&self.role),
            disk,
            peers,
            out_of_sync_kib,
            split_brain,
        }
    }
}

/// Volume 0 if there is one, else the lowest volume.
fn pick_volume<T>(items: &[T], volume: impl Fn(&T) -> i64) -> Option<&T> {
    items
        .iter()
        .find(|i| volume(i) == 0)
        .or_else(|| items.iter().min_by_key(|i| volume(i)))
}

/// A role as drbdsetup prints it; anything else is `Unknown`.
pub fn role(s: &str) -> DrbdRole {
    match s {
        "Primary" => DrbdRole::Primary,
        "Secondary" => DrbdRole::Secondary,
        _ => DrbdRole::Unknown,
    }
}

/// A disk state as drbdsetup prints it. An unknown word is `DUnknown`: never read as a disk
/// that could be promoted.
pub fn disk_state(s: &str) -> DiskState {
    match s {
        "Diskless" => DiskState::Diskless,
        "Attaching" => DiskState::Attaching,
        "Detaching" => DiskState::Detaching,
        "Failed" => DiskState::Failed,
        "Negotiating" => DiskState::Negotiating,
        "Inconsistent" => DiskState::Inconsistent,
        "Outdated" => DiskState::Outdated,
        "Consistent" => DiskState::Consistent,
        "UpToDate" => DiskState::UpToDate,
        _ => DiskState::DUnknown,
    }
}

fn str_of(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn int_of(v: &Value, key: &str) -> i64 {
    match v.get(key) {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn uint_of(v: &Value, key: &str) -> u64 {
    int_of(v, key).max(0) as u64
}

fn arr_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    match v.get(key) {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/data/drbd/{name}", env!("CARGO_MANIFEST_DIR"));
        // Where each fixture's shape comes from: tests/data/drbd/README.md.
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn peer(connection: &str, disk: DiskState) -> PeerObserved {
        PeerObserved {
            connection: connection.into(),
            disk,
        }
    }

    #[test]
    fn fixtures() {
        use DiskState::*;
        use DrbdRole::*;
        struct Case {
            file: &'static str,
            resource: &'static str,
            want: DrbdObserved,
        }
        let cases = [
            Case {
                file: "status-connected.json",
                resource: "files",
                want: DrbdObserved {
                    role: Primary,
                    disk: UpToDate,
                    peers: [("beta".into(), peer("Connected", UpToDate))].into(),
                    out_of_sync_kib: 0,
                    split_brain: false,
                },
            },
            Case {
                file: "status-connected.json",
                resource: "www",
                want: DrbdObserved {
                    role: Secondary,
                    disk: UpToDate,
                    peers: [("beta".into(), peer("Connected", UpToDate))].into(),
                    out_of_sync_kib: 0,
                    split_brain: false,
                },
            },
            Case {
                file: "status-resync-source.json",
                resource: "files",
                want: DrbdObserved {
                    role: Primary,
                    disk: UpToDate,
                    peers: [("beta".into(), peer("Connected", Inconsistent))].into(),
                    out_of_sync_kib: 1_373_584,
                    split_brain: false,
                },
            },
            Case {
                file: "status-resync-target.json",
                resource: "files",
                want: DrbdObserved {
                    role: Secondary,
                    disk: Inconsistent,
                    peers: [("alpha".into(), peer("Connected", UpToDate))].into(),
                    out_of_sync_kib: 1_373_584,
                    split_brain: false,
                },
            },
            Case {
                file: "status-split-brain.json",
                resource: "files",
                want: DrbdObserved {
                    role: Primary,
                    disk: UpToDate,
                    peers: [("beta".into(), peer("StandAlone", DUnknown))].into(),
                    out_of_sync_kib: 76,
                    split_brain: true,
                },
            },
            Case {
                file: "status-peer-disconnected.json",
                resource: "files",
                want: DrbdObserved {
                    role: Primary,
                    disk: UpToDate,
                    peers: [("beta".into(), peer("Connecting", DUnknown))].into(),
                    out_of_sync_kib: 2048,
                    split_brain: false,
                },
            },
            Case {
                file: "status-diskless.json",
                resource: "files",
                want: DrbdObserved {
                    role: Secondary,
                    disk: Diskless,
                    peers: [("beta".into(), peer("Connected", UpToDate))].into(),
                    out_of_sync_kib: 0,
                    split_brain: false,
                },
            },
            Case {
                file: "status-unknown-keys.json",
                resource: "files",
                want: DrbdObserved {
                    role: Secondary,
                    disk: UpToDate,
                    peers: [
                        ("beta".into(), peer("Connected", UpToDate)),
                        ("node-id-2".into(), peer("Connecting", DUnknown)),
                    ]
                    .into(),
                    out_of_sync_kib: 0,
                    split_brain: false,
                },
            },
        ];
        for c in cases {
            let got = parse_status_json(&fixture(c.file)).unwrap();
            assert_eq!(
                got.get(c.resource),
                Some(&c.want),
                "{} {}",
                c.file,
                c.resource
            );
        }
    }

    #[test]
    fn empty_and_malformed() {
        assert!(parse_status_json("").unwrap().is_empty());
        assert!(parse_status_json(" \n[]\n").unwrap().is_empty());
        assert!(matches!(
            parse_status_json("[{"),
            Err(StatusParseError::Json(_))
        ));
        assert_eq!(
            parse_status_json("{}"),
            Err(StatusParseError::NotAnArray("an object"))
        );
        // Missing keys read as defaults; wrong types too.
        let got = parse_status_json(
            r#"[{"name": "r", "devices": "x", "connections": [{"peer-node-id": "3"}]}]"#,
        )
        .unwrap();
        assert_eq!(
            got["r"],
            DrbdObserved {
                role: DrbdRole::Unknown,
                disk: DiskState::Diskless,
                peers: [("node-id-3".into(), peer("Unknown", DiskState::DUnknown))].into(),
                out_of_sync_kib: 0,
                split_brain: false,
            }
        );
        // A resource without a name is skipped, not invented.
        assert!(parse_status_json(r#"[{"role": "Primary"}]"#)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn words() {
        for (s, d) in [
            ("Diskless", DiskState::Diskless),
            ("Attaching", DiskState::Attaching),
            ("Detaching", DiskState::Detaching),
            ("Failed", DiskState::Failed),
            ("Negotiating", DiskState::Negotiating),
            ("Inconsistent", DiskState::Inconsistent),
            ("Outdated", DiskState::Outdated),
            ("DUnknown", DiskState::DUnknown),
            ("Consistent", DiskState::Consistent),
            ("UpToDate", DiskState::UpToDate),
            ("Sideways", DiskState::DUnknown),
        ] {
            assert_eq!(disk_state(s), d, "{s}");
        }
        assert_eq!(role("Primary"), DrbdRole::Primary);
        assert_eq!(role("Secondary"), DrbdRole::Secondary);
        assert_eq!(role("Unknown"), DrbdRole::Unknown);
        assert_eq!(role(""), DrbdRole::Unknown);
    }
}
