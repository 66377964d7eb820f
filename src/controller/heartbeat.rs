//! Heartbeats: find a dead hypervisor sooner than its lease does.
//!
//! A lease is found gone only when it has run out: its TTL after the node's last renewal, plus
//! up to half a second until etcd's lessor revokes it. With `timing.heartbeatTimeout` set, the
//! leading controller also probes the agent of every node it may fence (UDP, a few bytes, four
//! probes per timeout), and when a node that has answered during its current lease goes
//! silent for the timeout, the controller revokes that lease. From there on it is the path of
//! any lost node: the lease key is gone, the node is recorded lost, fenced, and its work moves
//! once the fence is confirmed.
//!
//! Why that is safe: only nodes whose work can leave them through a confirmed fence alone are
//! probed: `fencing: required`, at least one fencing level, and no watchdog. (A watchdog's
//! self-fence deadline counts from the lease's end as the controller sees it; a node whose
//! lease was revoked early may still count on it for up to a TTL, so its deadline would come
//! too soon.) A false alarm, a live node that did not answer, costs that node a fence and its
//! VMs a restart, never two holders of anything: what a power-off confirms does not depend on
//! why it was asked for. Answers can only ever delay an alarm (a forged one keeps a dead node
//! "alive" until its lease runs out, as without heartbeats), so they carry no secret.
//!
//! Against false alarms: a node is probed only while it holds a lease it has answered for at
//! least once (a node whose heartbeat port is firewalled is never revoked, it just gets no
//! faster detection), and only while it may hold something and the cluster is not in
//! maintenance. It is overdue only when the monitor itself sent it several probes since its
//! last answer, and after taking every answer that had already arrived (a monitor that was not
//! scheduled for a while does not blame the nodes). When every node that answered goes silent
//! at once, the fault is more likely the controller's own (its host's firewall, its link), so
//! nobody is blamed and the leases decide. The monitor publishes who is silent *now*, so a
//! node that answers again before the controller acted is not revoked. An agent stopped in
//! order takes its heartbeat address out of its lease first, so a restart is no alarm; an
//! agent that crashes and is not back within the timeout gets its node fenced (as a cluster
//! stack that dies does under Pacemaker).
//!
//! The decisions ([`targets`], [`overdue`]) are pure; the task around them only sends and
//! receives datagrams.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::manifest::cluster::FencingPolicy;
use crate::model::Desired;
use crate::store::cluster::ClusterView;
use crate::store::LeaseId;

/// Probes sent since the last answer before a node may be overdue.
pub const MIN_UNANSWERED: u32 = 3;

/// A node the monitor probes: where its agent answers, for which lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub lease: LeaseId,
}

/// What the monitor is told by the leading controller: the timeout and whom to probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub timeout: Option<Duration>,
    pub nodes: BTreeMap<String, Target>,
}

/// The nodes to probe: with a heartbeat timeout, fencing required and no maintenance, every
/// node with fencing levels and no watchdog that may hold something and whose live lease
/// names a heartbeat address.
pub fn targets(d: &Desired, view: &ClusterView) -> Targets {
    let Some(timeout) = d.cluster.heartbeat_timeout else {
        return Targets::default();
    };
    if d.cluster.fencing != FencingPolicy::Required || d.in_maintenance(&view.operations) {
        return Targets::default();
    }
    let nodes = d
        .nodes
        .values()
        .filter(|n| !n.fencing.is_empty() && n.watchdog.is_none())
        .filter(|n| {
            view.assignments
                .get(&n.name)
                .is_some_and(|a| a.may_hold_something())
        })
        .filter_map(|n| {
            let l = view.leases.get(&n.name)?;
            Some((
                n.name.clone(),
                Target {
                    addr: l.heartbeat?,
                    lease: l.id?,
                },
            ))
        })
        .collect();
    Targets {
        timeout: Some(timeout),
        nodes,
    }
}

/// A probe (and its answer, which is the same bytes): `rampart-hb/1 NODE LEASE SEQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe<'a> {
    pub node: &'a str,
    pub lease: i64,
    pub seq: u64,
}

impl<'a> Probe<'a> {
    const MAGIC: &'static str = "rampart-hb/1";

    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{} {} {:x} {}",
            Self::MAGIC,
            self.node,
            self.lease,
            self.seq
        )
        .into_bytes()
    }

    pub fn parse(b: &'a [u8]) -> Option<Probe<'a>> {
        let s = std::str::from_utf8(b).ok()?;
        let mut it = s.split(' ');
        if it.next()? != Self::MAGIC {
            return None;
        }
        let node = it.next().filter(|n| !n.is_empty())?;
        let lease = i64::from_str_radix(it.next()?, 16).ok()?;
        let seq = it.next()?.parse().ok()?;
        it.next().is_none().then_some(Probe { node, lease, seq })
    }
}

/// What the monitor knows of one target.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub target: Target,
    /// When it last answered during this lease.
    pub last_answer: Option<Instant>,
    /// Probes sent since its last answer.
    pub unanswered: u32,
}

impl Tracked {
    fn new(target: Target) -> Tracked {
        Tracked {
            target,
            last_answer: None,
            unanswered: 0,
        }
    }
}

/// A node gone silent: the controller revokes `lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silent {
    pub node: String,
    pub lease: LeaseId,
    pub for_: Duration,
}

/// The nodes overdue now: answered during this lease, silent for `timeout` or longer, with at
/// least [`MIN_UNANSWERED`] probes sent since. None when two or more nodes answered and all of
/// them are silent: then the fault is more likely on this side.
pub fn overdue(
    tracked: &BTreeMap<String, Tracked>,
    now: Instant,
    timeout: Duration,
) -> Vec<Silent> {
    let out: Vec<Silent> = tracked
        .iter()
        .filter(|(_, t)| t.unanswered >= MIN_UNANSWERED)
        .filter_map(|(n, t)| {
            let silent = now.saturating_duration_since(t.last_answer?);
            (silent >= timeout).then(|| Silent {
                node: n.clone(),
                lease: t.target.lease,
                for_: silent,
            })
        })
        .collect();
    let answered = tracked.values().filter(|t| t.last_answer.is_some()).count();
    if answered >= 2 && out.len() == answered {
        return Vec::new();
    }
    out
}

/// Take new targets: a node keeps what is known of it while its target is the same (same
/// lease, same address); anything else starts afresh.
pub fn retarget(tracked: &mut BTreeMap<String, Tracked>, targets: &Targets) {
    tracked.retain(|n, t| targets.nodes.get(n) == Some(&t.target));
    for (n, t) in &targets.nodes {
        tracked
            .entry(n.clone())
            .or_insert_with(|| Tracked::new(t.clone()));
    }
}

/// Record an answer from `from`; ignored unless it is a probe of ours for a tracked node's
/// current lease, from that node's address.
pub fn answered(
    tracked: &mut BTreeMap<String, Tracked>,
    bytes: &[u8],
    from: SocketAddr,
    now: Instant,
) {
    let Some(p) = Probe::parse(bytes) else { return };
    if let Some(t) = tracked.get_mut(p.node) {
        if t.target.addr == from && t.target.lease.0 == p.lease {
            t.last_answer = Some(now);
            t.unanswered = 0;
        }
    }
}

/// The probe interval for a timeout.
pub fn interval(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(10))
}

/// Start the monitor. It probes whatever the last [`Targets`] sent name (none at first) and
/// publishes the nodes silent now (a change only when who is silent changes); it ends when
/// the sender is dropped.
pub fn spawn() -> (watch::Sender<Targets>, watch::Receiver<Vec<Silent>>) {
    let (targets_tx, targets_rx) = watch::channel(Targets::default());
    let (silent_tx, silent_rx) = watch::channel(Vec::new());
    tokio::spawn(monitor(targets_rx, silent_tx));
    (targets_tx, silent_rx)
}

/// The silent nodes whose lease the leading controller revokes now: those still probed for
/// the same lease under `targets`, which the round has just computed from its own view (a
/// revision may since have set maintenance or given the node a watchdog, or the node may hold
/// another lease), and not revoked before (`done`).
pub fn to_revoke<'s>(silent: &'s [Silent], targets: &Targets, done: &[LeaseId]) -> Vec<&'s Silent> {
    silent
        .iter()
        .filter(|s| {
            targets
                .nodes
                .get(&s.node)
                .is_some_and(|t| t.lease == s.lease)
        })
        .filter(|s| !done.contains(&s.lease))
        .collect()
}

/// Publish who is silent, waking the receiver only when the nodes or their leases change.
fn publish(tx: &watch::Sender<Vec<Silent>>, now: Vec<Silent>) {
    tx.send_if_modified(|v| {
        let key = |s: &[Silent]| {
            s.iter()
                .map(|x| (x.node.clone(), x.lease))
                .collect::<Vec<_>>()
        };
        let changed = key(v) != key(&now);
        *v = now;
        changed
    });
}

async fn monitor(mut targets: watch::Receiver<Targets>, silent: watch::Sender<Vec<Silent>>) {
    let mut tracked: BTreeMap<String, Tracked> = BTreeMap::new();
    let mut v4: Option<UdpSocket> = None;
    let mut v6: Option<UdpSocket> = None;
    let mut timeout = None;
    let mut seq = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    let (mut buf4, mut buf6, mut buf) = ([0u8; 512], [0u8; 512], [0u8; 512]);
    loop {
        tokio::select! {
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
                let t = targets.borrow_and_update().clone();
                retarget(&mut tracked, &t);
                // Judged only at a tick, after the answers already here are taken; a change of
                // targets just drops those no longer probed for that lease.
                let still: Vec<Silent> = silent
                    .borrow()
                    .iter()
                    .filter(|s| tracked.get(&s.node).is_some_and(|t| t.target.lease == s.lease))
                    .cloned()
                    .collect();
                publish(&silent, still);
                if t.timeout != timeout {
                    timeout = t.timeout;
                    let every = timeout.map_or(Duration::from_secs(3600), interval);
                    ticker = tokio::time::interval(every);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                for t in tracked.values() {
                    let s = if t.target.addr.is_ipv4() { &mut v4 } else { &mut v6 };
                    if s.is_none() {
                        let any: SocketAddr = if t.target.addr.is_ipv4() {
                            "0.0.0.0:0".parse().unwrap()
                        } else {
                            "[::]:0".parse().unwrap()
                        };
                        match UdpSocket::bind(any).await {
                            Ok(sock) => *s = Some(sock),
                            Err(e) => tracing::warn!("heartbeats: cannot open a UDP socket: {e}"),
                        }
                    }
                }
            }
            r = recv(&v4, &mut buf4) => {
                if let Some((n, from)) = r {
                    answered(&mut tracked, &buf4[..n], from, Instant::now());
                }
            }
            r = recv(&v6, &mut buf6) => {
                if let Some((n, from)) = r {
                    answered(&mut tracked, &buf6[..n], from, Instant::now());
                }
            }
            _ = ticker.tick() => {
                let Some(timeout) = timeout else { continue };
                // Every answer already here counts before anyone is blamed.
                for s in [&v4, &v6].into_iter().flatten() {
                    while let Ok((n, from)) = s.try_recv_from(&mut buf) {
                        answered(&mut tracked, &buf[..n], from, Instant::now());
                    }
                }
                publish(&silent, overdue(&tracked, Instant::now(), timeout));
                seq += 1;
                for (n, t) in tracked.iter_mut() {
                    let sock = if t.target.addr.is_ipv4() { &v4 } else { &v6 };
                    let Some(sock) = sock else { continue };
                    let probe = Probe { node: n, lease: t.target.lease.0, seq }.encode();
                    if sock.try_send_to(&probe, t.target.addr).is_ok() {
                        t.unanswered = t.unanswered.saturating_add(1);
                    }
                }
            }
        }
    }
}

/// The next datagram on `s`; pending forever when there is no socket. Errors (an ICMP port
/// unreachable from an earlier probe) read as nothing received.
async fn recv(s: &Option<UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cluster::NodeLease;

    fn target(port: u16, lease: i64) -> Target {
        Target {
            addr: SocketAddr::from(([10, 0, 0, 11], port)),
            lease: LeaseId(lease),
        }
    }

    fn with(nodes: &[(&str, Target)]) -> Targets {
        Targets {
            timeout: Some(Duration::from_millis(400)),
            nodes: nodes
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
        }
    }

    #[test]
    fn probes_round_trip_and_strangers_are_refused() {
        let p = Probe {
            node: "alpha",
            lease: 0x1234_abcd,
            seq: 9,
        };
        let b = p.encode();
        assert_eq!(Probe::parse(&b), Some(p));
        for bad in [
            &b"rampart-hb/2 alpha 1 1"[..],
            b"rampart-hb/1  1 1",
            b"rampart-hb/1 alpha zz 1",
            b"rampart-hb/1 alpha 1 1 extra",
            b"\xff\xfe",
        ] {
            assert_eq!(
                Probe::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(crate::agent::heartbeat::is_probe_for(&b, "alpha"));
        assert!(!crate::agent::heartbeat::is_probe_for(&b, "beta"));
    }

    #[test]
    fn only_fenceable_nodes_without_a_watchdog_with_an_address_are_probed() {
        let mut d = crate::model::reference_desired();
        let mut view = ClusterView::default();
        for (i, n) in d.nodes.keys().enumerate() {
            view.leases.insert(
                n.clone(),
                NodeLease {
                    id: Some(LeaseId(i as i64 + 1)),
                    heartbeat: Some(SocketAddr::from(([10, 0, 0, 11 + i as u8], 7712))),
                },
            );
            let mut a = crate::model::Assignment::default();
            a.vips.insert(format!("vip-{n}"));
            view.assignments.insert(n.clone(), a);
        }
        assert_eq!(
            targets(&d, &view),
            Targets::default(),
            "off unless configured"
        );
        d.cluster.heartbeat_timeout = Some(Duration::from_millis(400));
        // The reference hypervisors have watchdogs, which take them out: see below.
        assert!(targets(&d, &view).nodes.is_empty());
        for n in d.nodes.values_mut() {
            n.watchdog = None;
        }
        let fenceable: Vec<String> = d
            .nodes
            .values()
            .filter(|n| !n.fencing.is_empty() && n.watchdog.is_none())
            .map(|n| n.name.clone())
            .collect();
        assert!(
            !fenceable.is_empty() && fenceable.len() < d.nodes.len(),
            "{fenceable:?}"
        );
        let t = targets(&d, &view);
        assert_eq!(t.nodes.keys().cloned().collect::<Vec<_>>(), fenceable);
        // A watchdog takes the node out (its deadline would count from an early revoke).
        let first = fenceable[0].clone();
        d.nodes.get_mut(&first).unwrap().watchdog = Some(Duration::from_secs(10));
        assert!(!targets(&d, &view).nodes.contains_key(&first));
        d.nodes.get_mut(&first).unwrap().watchdog = None;
        // No address in the lease: not probed. No lease: not probed.
        view.leases.get_mut(&first).unwrap().heartbeat = None;
        assert!(!targets(&d, &view).nodes.contains_key(&first));
        view.leases.remove(&first);
        assert!(!targets(&d, &view).nodes.contains_key(&first));
        // A node told to hold nothing: no point in fencing it sooner.
        let second = fenceable[1].clone();
        view.assignments
            .insert(second.clone(), crate::model::Assignment::default());
        assert!(!targets(&d, &view).nodes.contains_key(&second));
        // Maintenance (in the manifests or set by the admin): nobody.
        view.operations.maintenance = true;
        assert!(targets(&d, &view).nodes.is_empty());
        view.operations.maintenance = false;
        // Fencing disabled: nothing.
        d.cluster.fencing = FencingPolicy::Disabled;
        assert!(targets(&d, &view).nodes.is_empty());
    }

    #[test]
    fn only_silent_nodes_still_probed_for_that_lease_are_revoked_and_each_once() {
        let silent = |node: &str, lease: i64| Silent {
            node: node.into(),
            lease: LeaseId(lease),
            for_: Duration::from_secs(1),
        };
        let now = vec![silent("alpha", 1), silent("beta", 2), silent("gamma", 3)];
        // beta holds another lease by now; gamma is no longer probed (maintenance, a watchdog).
        let t = with(&[("alpha", target(7712, 1)), ("beta", target(7713, 9))]);
        let names = |v: Vec<&Silent>| v.iter().map(|s| s.node.clone()).collect::<Vec<_>>();
        assert_eq!(names(to_revoke(&now, &t, &[])), ["alpha"]);
        // Revoked already: not again.
        assert!(to_revoke(&now, &t, &[LeaseId(1)]).is_empty());
        // Nobody probed (no heartbeat timeout, or this controller no longer leads): nobody.
        assert!(to_revoke(&now, &Targets::default(), &[]).is_empty());
    }

    #[test]
    fn a_node_is_overdue_only_after_answering_then_staying_silent() {
        let timeout = Duration::from_millis(400);
        let t0 = Instant::now();
        let mut tr = BTreeMap::new();
        retarget(&mut tr, &with(&[("alpha", target(7712, 1))]));
        // Never answered: never overdue, however long (a firewalled port is no alarm).
        tr.get_mut("alpha").unwrap().unanswered = 100;
        assert!(overdue(&tr, t0 + Duration::from_secs(60), timeout).is_empty());
        // Answers count only from its address, for its lease.
        let probe = Probe {
            node: "alpha",
            lease: 1,
            seq: 1,
        }
        .encode();
        let wrong_lease = Probe {
            node: "alpha",
            lease: 2,
            seq: 1,
        }
        .encode();
        answered(
            &mut tr,
            &probe,
            SocketAddr::from(([10, 0, 0, 99], 7712)),
            t0,
        );
        answered(&mut tr, &wrong_lease, target(7712, 1).addr, t0);
        assert!(tr["alpha"].last_answer.is_none());
        answered(&mut tr, &probe, target(7712, 1).addr, t0);
        assert_eq!(tr["alpha"].last_answer, Some(t0));
        assert_eq!(tr["alpha"].unanswered, 0);
        // Silent past the timeout but too few probes sent (the monitor was not running).
        tr.get_mut("alpha").unwrap().unanswered = MIN_UNANSWERED - 1;
        assert!(overdue(&tr, t0 + Duration::from_secs(5), timeout).is_empty());
        tr.get_mut("alpha").unwrap().unanswered = MIN_UNANSWERED;
        // Enough probes, not yet long enough.
        assert!(overdue(&tr, t0 + timeout - Duration::from_millis(1), timeout).is_empty());
        let s = overdue(&tr, t0 + timeout, timeout);
        assert_eq!(
            s,
            [Silent {
                node: "alpha".into(),
                lease: LeaseId(1),
                for_: timeout
            }]
        );
        // Answering again takes it off.
        answered(&mut tr, &probe, target(7712, 1).addr, t0 + timeout);
        assert!(overdue(&tr, t0 + timeout, timeout).is_empty());
        // The same target keeps its state; a new lease starts afresh.
        retarget(&mut tr, &with(&[("alpha", target(7712, 1))]));
        assert!(tr["alpha"].last_answer.is_some());
        retarget(&mut tr, &with(&[("alpha", target(7712, 2))]));
        assert!(tr["alpha"].last_answer.is_none());
        retarget(&mut tr, &Targets::default());
        assert!(tr.is_empty());
    }

    #[test]
    fn when_every_answering_node_goes_silent_at_once_nobody_is_blamed() {
        let timeout = Duration::from_millis(400);
        let t0 = Instant::now();
        let mut tr = BTreeMap::new();
        retarget(
            &mut tr,
            &with(&[
                ("alpha", target(7712, 1)),
                ("beta", target(7713, 2)),
                ("gamma", target(7714, 3)),
            ]),
        );
        for (n, t) in tr.iter_mut() {
            // gamma never answered (its port is closed): it does not count either way.
            t.last_answer = (n != "gamma").then_some(t0);
            t.unanswered = MIN_UNANSWERED;
        }
        let later = t0 + timeout;
        assert!(
            overdue(&tr, later, timeout).is_empty(),
            "alpha and beta both silent"
        );
        tr.get_mut("beta").unwrap().last_answer = Some(later);
        let s = overdue(&tr, later, timeout);
        assert_eq!(
            s.iter().map(|x| x.node.as_str()).collect::<Vec<_>>(),
            ["alpha"]
        );
        // With one node answering at all, its silence counts.
        tr.remove("beta");
        assert_eq!(overdue(&tr, later, timeout).len(), 1);
    }

    /// The agent's responder and the monitor over loopback: a live agent is never reported;
    /// once it stops answering, it is published as silent until its target is withdrawn.
    #[tokio::test]
    async fn monitor_reports_an_agent_that_stops_answering() {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let agent = tokio::spawn(crate::agent::heartbeat::answer(sock, "alpha".into()));
        let (tx, mut rx) = spawn();
        let timeout = Duration::from_millis(200);
        tx.send(Targets {
            timeout: Some(timeout),
            nodes: [(
                "alpha".to_string(),
                Target {
                    addr,
                    lease: LeaseId(0x42),
                },
            )]
            .into(),
        })
        .unwrap();
        // Answering: nobody silent over several timeouts.
        let quiet = tokio::time::timeout(timeout * 5, rx.changed()).await;
        assert!(
            quiet.is_err(),
            "a live agent was reported: {:?}",
            *rx.borrow()
        );
        agent.abort();
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("the silent agent is reported")
            .expect("the monitor runs");
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!((s[0].node.as_str(), s[0].lease), ("alpha", LeaseId(0x42)));
        assert!(s[0].for_ >= timeout, "{s:?}");
        // Still silent: no new change (the controller is woken once).
        let again = tokio::time::timeout(timeout * 3, rx.changed()).await;
        assert!(again.is_err(), "woken again: {:?}", *rx.borrow());
        // Its target withdrawn (the lease revoked): nobody is silent.
        tx.send(Targets::default()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("the change is published")
            .unwrap();
        assert!(rx.borrow().is_empty());
    }
}
