//! `drbdsetup events2` lines into a state map that yields the same [`DrbdObserved`] as
//! [`parse_status_json`](super::status::parse_status_json).
//!
//! Each line is `EVENT OBJECT key:value ...` (drbd-utils `user/v9/drbdsetup_events2.c`, and the
//! expected outputs in its `tests/v9/events2-*.test`):
//!
//! ```text
//! exists resource name:files role:Secondary suspended:no
//! exists device name:files volume:0 minor:0 disk:UpToDate client:no quorum:yes
//! exists connection name:files peer-node-id:1 conn-name:beta connection:Connected role:Primary
//! exists peer-device name:files peer-node-id:1 conn-name:beta volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no
//! exists path name:files peer-node-id:1 conn-name:beta local:ipv4:192.168.100.1:7788 peer:ipv4:192.168.100.2:7788 established:yes
//! exists -
//! change peer-device name:files peer-node-id:1 conn-name:beta volume:0 replication:SyncSource peer-disk:Inconsistent done:37.50
//! call helper name:files peer-node-id:1 conn-name:beta volume:0 helper:split-brain
//! destroy connection name:files peer-node-id:1 conn-name:beta
//! ```
//!
//! `EVENT` is `exists` (the initial state, ended by `exists -`), `create`, `change`, `destroy`,
//! `rename`, `call` or `response` (a handler being run, and its exit status). A `change` line
//! names the object and only the keys that changed (all of them with `--full`), so the state
//! merges keys. `out-of-sync` (KiB) comes with `--statistics` or `--full`. A value runs to the
//! next blank and may itself hold colons (`local:ipv4:10.0.0.1:7788`): a word splits at its
//! first colon. A leading timestamp (`--timestamps`) is skipped; unknown events, objects and
//! keys are ignored.
//!
//! Split brain: DRBD runs the `split-brain` handler ("Split-Brain detected but unresolved,
//! dropping connection!") and leaves the connection `StandAlone`. Here a connection counts as
//! split brain when the `split-brain` handler was called for it (until it is `Connected`
//! again), or when it is `StandAlone` by a `change` or in the initial `exists` state. A
//! connection that is `StandAlone` only because it was just created (drbdadm's `new-peer`
//! comes before `connect`) does not count. `initial-split-brain` is called on every detection,
//! also one the after-sb policies resolved on their own, so it does not count either.

use std::collections::BTreeMap;

use super::status::{ConnectionView, PeerDeviceView, ResourceView};
use crate::model::DrbdObserved;

/// One parsed events2 line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event2 {
    pub kind: EventKind,
    /// `resource`, `device`, `connection`, `peer-device`, `path`, `helper`, or `-`.
    pub object: String,
    /// Keys in line order (a later duplicate wins).
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Exists,
    Create,
    Change,
    Destroy,
    Rename,
    Call,
    Response,
}

/// Parse one line; `None` for a blank line or one that is not an event.
pub fn parse_event_line(line: &str) -> Option<Event2> {
    let mut words = line.split_whitespace().peekable();
    // `--timestamps` puts an ISO 8601 time first.
    if words
        .peek()
        .is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit()))
    {
        words.next();
    }
    let kind = match words.next()? {
        "exists" => EventKind::Exists,
        "create" => EventKind::Create,
        "change" => EventKind::Change,
        "destroy" => EventKind::Destroy,
        "rename" => EventKind::Rename,
        "call" => EventKind::Call,
        "response" => EventKind::Response,
        _ => return None,
    };
    let object = words.next()?.to_string();
    let fields = words
        .filter_map(|w| w.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Event2 {
        kind,
        object,
        fields,
    })
}

/// What events2 has said so far: every resource with its devices, connections and peer
/// devices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events2State {
    resources: BTreeMap<String, Resource>,
    initial_done: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Resource {
    role: String,
    /// volume -> disk state
    devices: BTreeMap<i64, String>,
    /// peer node id -> connection
    connections: BTreeMap<i64, Connection>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Connection {
    name: String,
    state: String,
    /// Seen StandAlone other than right after its creation.
    stand_alone_settled: bool,
    /// The split-brain handler was called, and it has not been Connected since.
    split_brain_handler: bool,
    /// volume -> peer device
    peer_devices: BTreeMap<i64, PeerDevice>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct PeerDevice {
    peer_disk: String,
    out_of_sync_kib: u64,
}

impl Events2State {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the initial state has been dumped completely (`exists -` was seen).
    pub fn initial_done(&self) -> bool {
        self.initial_done
    }

    /// Parse and apply one line. Returns whether the observed model may have changed.
    pub fn apply_line(&mut self, line: &str) -> bool {
        match parse_event_line(line) {
            Some(e) => self.apply(&e),
            None => false,
        }
    }

    /// Apply one event. Returns whether the observed model may have changed.
    pub fn apply(&mut self, e: &Event2) -> bool {
        let f = |k: &str| e.fields.get(k).map(String::as_str);
        let int = |k: &str| f(k).and_then(|v| v.parse::<i64>().ok());
        if e.object == "-" {
            if e.kind == EventKind::Exists && !self.initial_done {
                self.initial_done = true;
                return true;
            }
            return false;
        }
        let Some(name) = f("name") else {
            return false;
        };
        let destroy = e.kind == EventKind::Destroy;
        match e.object.as_str() {
            "resource" => {
                if destroy {
                    return self.resources.remove(name).is_some();
                }
                if e.kind == EventKind::Rename {
                    let Some(new) = f("new_name").or(f("new-name")) else {
                        return false;
                    };
                    if let Some(r) = self.resources.remove(name) {
                        self.resources.insert(new.to_string(), r);
                        return true;
                    }
                    return false;
                }
                if !matches!(
                    e.kind,
                    EventKind::Exists | EventKind::Create | EventKind::Change
                ) {
                    return false;
                }
                let r = self.resources.entry(name.to_string()).or_default();
                if let Some(role) = f("role") {
                    r.role = role.to_string();
                }
                true
            }
            "device" => {
                let Some(volume) = int("volume") else {
                    return false;
                };
                if destroy {
                    return self
                        .resources
                        .get_mut(name)
                        .and_then(|r| r.devices.remove(&volume))
                        .is_some();
                }
                if !matches!(
                    e.kind,
                    EventKind::Exists | EventKind::Create | EventKind::Change
                ) {
                    return false;
                }
                let r = self.resources.entry(name.to_string()).or_default();
                let d = r.devices.entry(volume).or_default();
                if let Some(disk) = f("disk") {
                    *d = disk.to_string();
                }
                true
            }
            "connection" => {
                let Some(peer) = int("peer-node-id") else {
                    return false;
                };
                if destroy {
                    return self
                        .resources
                        .get_mut(name)
                        .and_then(|r| r.connections.remove(&peer))
                        .is_some();
                }
                if !matches!(
                    e.kind,
                    EventKind::Exists | EventKind::Create | EventKind::Change
                ) {
                    return false;
                }
                let r = self.resources.entry(name.to_string()).or_default();
                let c = r.connections.entry(peer).or_default();
                if let Some(n) = f("conn-name") {
                    c.name = n.to_string();
                }
                if let Some(state) = f("connection") {
                    c.state = state.to_string();
                    if state == "StandAlone" {
                        c.stand_alone_settled = e.kind != EventKind::Create;
                    } else {
                        c.stand_alone_settled = false;
                    }
                    if state == "Connected" {
                        c.split_brain_handler = false;
                    }
                }
                true
            }
            "peer-device" => {
                let (Some(peer), Some(volume)) = (int("peer-node-id"), int("volume")) else {
                    return false;
                };
                if destroy {
                    return self
                        .resources
                        .get_mut(name)
                        .and_then(|r| r.connections.get_mut(&peer))
                        .and_then(|c| c.peer_devices.remove(&volume))
                        .is_some();
                }
                if !matches!(
                    e.kind,
                    EventKind::Exists | EventKind::Create | EventKind::Change
                ) {
                    return false;
                }
                let r = self.resources.entry(name.to_string()).or_default();
                let c = r.connections.entry(peer).or_default();
                if let Some(n) = f("conn-name") {
                    c.name = n.to_string();
                }
                let p = c.peer_devices.entry(volume).or_default();
                if let Some(d) = f("peer-disk") {
                    p.peer_disk = d.to_string();
                }
                if let Some(oos) = f("out-of-sync").and_then(|v| v.parse::<u64>().ok()) {
                    p.out_of_sync_kib = oos;
                }
                true
            }
            "helper" => {
                if e.kind != EventKind::Call || f("helper") != Some("split-brain") {
                    return false;
                }
                let Some(peer) = int("peer-node-id") else {
                    return false;
                };
                let r = self.resources.entry(name.to_string()).or_default();
                let c = r.connections.entry(peer).or_default();
                if let Some(n) = f("conn-name") {
                    c.name = n.to_string();
                }
                c.split_brain_handler = true;
                true
            }
            _ => false,
        }
    }

    /// The observed model of every resource.
    pub fn observed(&self) -> BTreeMap<String, DrbdObserved> {
        self.resources
            .iter()
            .map(|(name, r)| {
                let view = ResourceView {
                    role: r.role.clone(),
                    devices: r.devices.iter().map(|(v, d)| (*v, d.clone())).collect(),
                    connections: r
                        .connections
                        .iter()
                        .map(|(id, c)| ConnectionView {
                            name: c.name.clone(),
                            peer_node_id: *id,
                            state: c.state.clone(),
                            peer_devices: c
                                .peer_devices
                                .iter()
                                .map(|(v, p)| PeerDeviceView {
                                    volume: *v,
                                    peer_disk: p.peer_disk.clone(),
                                    out_of_sync_kib: p.out_of_sync_kib,
                                })
                                .collect(),
                            split_brain: c.split_brain_handler
                                || (c.state == "StandAlone" && c.stand_alone_settled),
                        })
                        .collect(),
                };
                (name.clone(), view.observed())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::drbd::status::parse_status_json;
    use crate::model::{DiskState, DrbdRole, PeerObserved};

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/data/drbd/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Feed a fixture (its `#` header lines are comments, not events2 output).
    fn feed(name: &str) -> Events2State {
        let mut s = Events2State::new();
        for line in fixture(name).lines().filter(|l| !l.starts_with('#')) {
            s.apply_line(line);
        }
        s
    }

    fn peer(connection: &str, disk: DiskState) -> PeerObserved {
        PeerObserved {
            connection: connection.into(),
            disk,
        }
    }

    #[test]
    fn lines() {
        let e = parse_event_line(
            "exists path name:r0 peer-node-id:1 conn-name:b local:ipv4:1.2.3.4:7789 peer:ipv4:5.6.7.8:7790 established:no",
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Exists);
        assert_eq!(e.object, "path");
        assert_eq!(e.fields["local"], "ipv4:1.2.3.4:7789");
        assert_eq!(e.fields["established"], "no");
        let e = parse_event_line(
            "2024-01-09T14:51:18.123456+00:00 change resource name:r0 role:Primary",
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Change);
        assert_eq!(e.fields["role"], "Primary");
        let e = parse_event_line("exists -").unwrap();
        assert_eq!((e.kind, e.object.as_str()), (EventKind::Exists, "-"));
        assert!(e.fields.is_empty());
        for junk in [
            "",
            "   ",
            "hello world",
            "exists",
            "sh: 1: modinfo: not found",
        ] {
            assert_eq!(parse_event_line(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn upstream_create_change_sequence() {
        // drbd-utils tests/v9/events2-all-create-change.test, --statistics variant.
        let s = feed("events2-upstream-create-change.events2");
        assert!(s.initial_done());
        let got = s.observed();
        assert_eq!(
            got["some-resource"],
            DrbdObserved {
                role: DrbdRole::Primary,
                disk: DiskState::UpToDate,
                peers: [("some-peer".into(), peer("Connected", DiskState::UpToDate))].into(),
                out_of_sync_kib: 25,
                split_brain: false,
            }
        );
    }

    #[test]
    fn fixtures_match_the_status_json_of_the_same_state() {
        // Each events2 fixture ends in the state its status JSON twin shows.
        for (events, json) in [
            ("events2-connected.events2", "status-connected.json"),
            ("events2-resync.events2", "status-resync-source.json"),
            ("events2-split-brain.events2", "status-split-brain.json"),
            (
                "events2-peer-disconnected.events2",
                "status-peer-disconnected.json",
            ),
            ("events2-diskless.events2", "status-diskless.json"),
        ] {
            let s = feed(events);
            assert!(s.initial_done(), "{events}");
            assert_eq!(
                s.observed(),
                parse_status_json(&fixture(json)).unwrap(),
                "{events} vs {json}"
            );
        }
    }

    #[test]
    fn split_brain_needs_evidence_and_clears_on_connect() {
        let mut s = Events2State::new();
        for l in [
            "exists -",
            "create resource name:r0 role:Secondary suspended:no",
            "create device name:r0 volume:0 minor:0 disk:UpToDate client:no quorum:yes",
            // drbdadm adjust: new-peer creates the connection StandAlone, connect follows.
            "create connection name:r0 peer-node-id:1 conn-name:b connection:StandAlone role:Unknown",
            "create peer-device name:r0 peer-node-id:1 conn-name:b volume:0 replication:Off peer-disk:DUnknown peer-client:no resync-suspended:no",
        ] {
            s.apply_line(l);
        }
        assert!(
            !s.observed()["r0"].split_brain,
            "a fresh connection is not split brain"
        );
        s.apply_line("change connection name:r0 peer-node-id:1 conn-name:b connection:Connecting");
        s.apply_line("change connection name:r0 peer-node-id:1 conn-name:b connection:Connected role:Secondary");
        assert!(!s.observed()["r0"].split_brain);
        // The handshake finds a split brain: the handler runs, the connection drops.
        s.apply_line("call helper name:r0 peer-node-id:1 conn-name:b volume:0 helper:split-brain");
        s.apply_line("response helper name:r0 peer-node-id:1 conn-name:b volume:0 helper:split-brain status:0");
        assert!(s.observed()["r0"].split_brain);
        s.apply_line("change connection name:r0 peer-node-id:1 conn-name:b connection:StandAlone role:Unknown");
        assert!(s.observed()["r0"].split_brain);
        // `drbdadm connect` without --discard-my-data: Connecting, still split brain.
        s.apply_line("change connection name:r0 peer-node-id:1 conn-name:b connection:Connecting");
        assert!(s.observed()["r0"].split_brain);
        // Resolved by the admin: Connected again.
        s.apply_line("change connection name:r0 peer-node-id:1 conn-name:b connection:Connected role:Secondary");
        assert!(!s.observed()["r0"].split_brain);
        // initial-split-brain alone (auto-resolved) is not split brain.
        s.apply_line(
            "call helper name:r0 peer-node-id:1 conn-name:b volume:0 helper:initial-split-brain",
        );
        assert!(!s.observed()["r0"].split_brain);
        // A connection that is StandAlone when the observer starts counts.
        let mut t = Events2State::new();
        t.apply_line("exists resource name:r0 role:Secondary suspended:no");
        t.apply_line("exists connection name:r0 peer-node-id:1 conn-name:b connection:StandAlone role:Unknown");
        assert!(t.observed()["r0"].split_brain);
    }

    #[test]
    fn destroy_and_rename() {
        let mut s = feed("events2-connected.events2");
        assert!(
            s.apply_line("destroy peer-device name:files peer-node-id:1 conn-name:beta volume:0")
        );
        assert_eq!(
            s.observed()["files"].peers["beta"].disk,
            DiskState::DUnknown
        );
        assert!(s.apply_line("destroy connection name:files peer-node-id:1 conn-name:beta"));
        assert!(s.observed()["files"].peers.is_empty());
        assert!(s.apply_line("destroy device name:files volume:0 minor:0"));
        assert_eq!(s.observed()["files"].disk, DiskState::Diskless);
        assert!(s.apply_line("rename resource name:www new_name:web"));
        assert!(s.observed().contains_key("web"));
        assert!(s.apply_line("destroy resource name:files"));
        assert!(!s.observed().contains_key("files"));
        assert!(!s.apply_line("destroy resource name:files"));
        assert!(!s.apply_line("change path name:web peer-node-id:1 conn-name:beta established:no"));
        assert!(!s.apply_line("response helper name:web peer-node-id:1 helper:fence-peer status:7"));
    }
}
