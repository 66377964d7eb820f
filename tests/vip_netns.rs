//! The real floating-address driver (`NetlinkAddresses`) on real interfaces: hosts are network
//! namespaces on one bridge (tests/support/netns.rs), the driver of each runs on a thread
//! inside its host's namespace, and a client namespace pings the VIP.
//!
//! Needs root, iproute2 and network namespaces; without them these tests fail, never skip.

#[path = "support/netns.rs"]
mod netns;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netns::{Host, Lan, Pinger};
use rampart::drivers::config::{ConfigHandle, HostConfig, VipConfig};
use rampart::drivers::net::{NetOptions, NetlinkAddresses};
use rampart::drivers::Addresses;

fn vip(address: &str, interface: &str) -> VipConfig {
    VipConfig {
        address: address.into(),
        interface: interface.into(),
        gateway: None,
        arp_count: 3,
        arp_interval_ms: 20,
    }
}

fn config(vips: &[&VipConfig]) -> HostConfig {
    HostConfig {
        vips: vips
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("vip{i}"), (*v).clone()))
            .collect(),
        ..Default::default()
    }
}

/// A free address on the LAN as one VIP (`ADDRESS/24` on `eth0`), and a driver for it on `a`
/// and on `b` with the same configuration (also returned).
fn one_vip_two_drivers(
    lan: &Lan,
    a: &Host,
    b: &Host,
) -> (
    Ipv4Addr,
    String,
    ConfigHandle,
    NetlinkAddresses,
    NetlinkAddresses,
) {
    let ip = lan.free_address(100);
    let addr = format!("{ip}/24");
    let cfg = ConfigHandle::new(config(&[&vip(&addr, "eth0")]));
    let (da, db) = (driver(a, &cfg), driver(b, &cfg));
    (ip, addr, cfg, da, db)
}

/// The driver of `host`, acting inside its namespace (60 ms duplicate-address probes).
fn driver(host: &Host, config: &ConfigHandle) -> NetlinkAddresses {
    driver_with(host, config, Duration::from_millis(60))
}

fn driver_with(host: &Host, config: &ConfigHandle, probe_wait: Duration) -> NetlinkAddresses {
    NetlinkAddresses::in_netns(
        config.clone(),
        NetOptions {
            probe_wait,
            timeout: Duration::from_secs(5),
        },
        &host.netns,
    )
    .unwrap_or_else(|e| panic!("driver in {}: {e}", host.netns))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Point `client`'s neighbour entry for `ip` at a MAC nobody has, so that only an
/// announcement can correct it.
fn poison_neighbour(lan: &Lan, client: &Host, ip: Ipv4Addr) {
    lan.ip_in(
        &client.netns,
        &[
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            &client.interface,
            "nud",
            "stale",
        ],
    );
    assert_eq!(
        lan.neighbour(&client.netns, ip).map(|n| n.0),
        Some("02:00:00:00:00:99".to_string())
    );
}

/// Wait (up to `within`) until `client` gets an echo reply from `ip`.
fn answers(client: &Host, ip: Ipv4Addr, within: Duration) -> bool {
    let p = Pinger::start(&client.netns, ip, Duration::from_millis(10));
    let start = Instant::now();
    while start.elapsed() < within {
        if !p.replies().is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// `a - b` in ms, negative if `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(b - a).as_secs_f64() * 1e3,
    }
}

#[tokio::test]
async fn add_puts_the_address_up_and_announces_it() {
    let mut lan = Lan::new();
    let a = lan.add_host("a");
    let c = lan.add_host("c");
    let ip = lan.free_address(100);
    let addr = format!("{ip}/24");
    let d = driver(&a, &ConfigHandle::new(config(&[&vip(&addr, "eth0")])));

    assert_eq!(
        d.list().await.unwrap(),
        set(&[]),
        "the node's own address is not listed"
    );
    poison_neighbour(&lan, &c, ip);
    d.add(&addr).await.unwrap();

    assert!(lan.has_address(&a.netns, "eth0", &addr));
    assert_eq!(d.list().await.unwrap(), set(&[&addr]));
    // No traffic from the client yet: only the gratuitous ARP can have fixed its entry.
    let (mac, state) = lan
        .neighbour(&c.netns, ip)
        .expect("neighbour entry in the client");
    assert_eq!(
        mac, a.mac,
        "client's entry updated by the gratuitous ARP ({state})"
    );
    assert!(
        answers(&c, ip, Duration::from_secs(2)),
        "client cannot ping the VIP"
    );
}

#[tokio::test]
async fn move_between_hosts_within_100ms_of_the_add() {
    let mut lan = Lan::new();
    let a = lan.add_host("a");
    let b = lan.add_host("b");
    let c = lan.add_host("c");
    let (ip, addr, _, da, db) = one_vip_two_drivers(&lan, &a, &b);

    da.add(&addr).await.unwrap();
    let pinger = Pinger::start(&c.netns, ip, Duration::from_millis(5));
    let start = Instant::now();
    while pinger.replies().len() < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no steady replies from A before the move ({} of {} answered)",
            pinger.replies().len(),
            pinger.sent()
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let t_remove = Instant::now();
    da.remove(&addr).await.unwrap();
    let t_removed = Instant::now();
    db.add(&addr).await.unwrap();
    let t_added = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let replies = pinger.stop();

    let first_from_b = replies
        .iter()
        .find(|r| r.sent > t_removed)
        .unwrap_or_else(|| panic!("no reply after the move ({} replies in all)", replies.len()));
    let after_add_ms = signed_ms(first_from_b.received, t_added);
    let last_from_a = replies
        .iter()
        .rev()
        .find(|r| r.received < t_remove)
        .expect("replies before the move");
    let outage = first_from_b.received - last_from_a.received;
    let longest = replies
        .windows(2)
        .map(|w| w[1].received - w[0].received)
        .max()
        .unwrap();
    eprintln!(
        "VIP move: remove took {:.1} ms, add took {:.1} ms (probe 60 ms, then the first of 3 GARP rounds 20 ms apart); \
         first reply from B {after_add_ms:+.1} ms relative to add returning; \
         client outage {:.1} ms; longest gap between replies {:.1} ms",
        (t_removed - t_remove).as_secs_f64() * 1e3,
        (t_added - t_removed).as_secs_f64() * 1e3,
        outage.as_secs_f64() * 1e3,
        longest.as_secs_f64() * 1e3,
    );
    assert!(
        first_from_b.received <= t_added + Duration::from_millis(100),
        "the VIP answered from B only {after_add_ms:.1} ms after the add returned"
    );
    assert_eq!(
        lan.neighbour(&c.netns, ip).map(|n| n.0),
        Some(b.mac.clone()),
        "client now reaches B"
    );
    assert!(!lan.has_address(&a.netns, "eth0", &addr));
    assert!(lan.has_address(&b.netns, "eth0", &addr));
    assert_eq!(da.list().await.unwrap(), set(&[]));
    assert_eq!(db.list().await.unwrap(), set(&[&addr]));
}

#[tokio::test]
async fn duplicate_address_check_refuses_an_address_held_elsewhere() {
    let mut lan = Lan::new();
    let a = lan.add_host("a");
    let b = lan.add_host("b");
    let (ip, addr, _, da, db) = one_vip_two_drivers(&lan, &a, &b);

    da.add(&addr).await.unwrap();
    let e = db
        .add(&addr)
        .await
        .expect_err("B must refuse an address A holds");
    eprintln!("refused as expected: {e}");
    let text = e.to_string();
    assert!(text.contains(&a.mac), "error names who answered: {text}");
    assert!(
        text.contains("already in use") && text.contains(&ip.to_string()),
        "{text}"
    );
    assert!(!e.terminal, "the holder may release it: retryable");
    assert!(!lan.has_address(&b.netns, "eth0", &addr));
    assert_eq!(db.list().await.unwrap(), set(&[]));

    // Also refused when A's address is not one of A's VIPs (someone configured it by hand).
    da.remove(&addr).await.unwrap();
    lan.ip_in(&a.netns, &["addr", "add", &addr, "dev", "eth0"]);
    let e = db.add(&addr).await.expect_err("refused");
    assert!(e.to_string().contains(&a.mac), "{e}");
    lan.ip_in(&a.netns, &["addr", "del", &addr, "dev", "eth0"]);
    db.add(&addr).await.unwrap();
    assert!(lan.has_address(&b.netns, "eth0", &addr));
}

#[tokio::test]
async fn add_and_remove_are_idempotent() {
    let mut lan = Lan::new();
    let a = lan.add_host("a");
    let c = lan.add_host("c");
    let ip = lan.free_address(100);
    let addr = format!("{ip}/24");
    let cfg = ConfigHandle::new(config(&[&vip(&addr, "eth0")]));
    let d = driver(&a, &cfg);
    let count = || {
        lan.ip_in(&a.netns, &["-o", "addr", "show", "dev", "eth0"])
            .matches(&format!(" {addr} "))
            .count()
    };

    d.add(&addr).await.unwrap();
    d.add(&addr).await.unwrap();
    assert_eq!(count(), 1);
    assert_eq!(d.list().await.unwrap(), set(&[&addr]));

    d.remove(&addr).await.unwrap();
    d.remove(&addr).await.unwrap();
    assert_eq!(count(), 0);
    assert_eq!(d.list().await.unwrap(), set(&[]));

    // A partial add: the address is there but was never announced. add finishes it.
    lan.ip_in(&a.netns, &["addr", "add", &addr, "dev", "eth0"]);
    poison_neighbour(&lan, &c, ip);
    d.add(&addr).await.unwrap();
    assert_eq!(count(), 1);
    assert_eq!(
        lan.neighbour(&c.netns, ip).map(|n| n.0),
        Some(a.mac.clone())
    );

    // The VIP leaves the configuration while held: still listed, still removable.
    cfg.set(HostConfig::default());
    assert_eq!(d.list().await.unwrap(), set(&[&addr]));
    d.remove(&addr).await.unwrap();
    assert_eq!(count(), 0);
    assert_eq!(d.list().await.unwrap(), set(&[]));
    let e = d.remove(&addr).await.expect_err("no longer known at all");
    assert!(e.terminal, "{e}");
}

#[tokio::test]
async fn unknown_interface_and_address_are_clear_errors() {
    let mut lan = Lan::new();
    let a = lan.add_host("a");
    let addr = format!("{}/24", lan.free_address(100));
    let d = driver(&a, &ConfigHandle::new(config(&[&vip(&addr, "nosuch0")])));

    let e = d.add(&addr).await.expect_err("no such interface");
    eprintln!("{e}");
    assert!(
        e.to_string().contains("interface nosuch0 does not exist"),
        "{e}"
    );
    assert_eq!(
        d.list().await.unwrap(),
        set(&[]),
        "a missing interface holds nothing"
    );
    d.remove(&addr).await.expect("nothing to remove is fine");

    let e = d.add("10.213.0.200/24").await.expect_err("not configured");
    eprintln!("{e}");
    assert!(e.terminal);
    assert!(
        e.to_string().contains("10.213.0.200/24 is not a VirtualIP"),
        "{e}"
    );

    // An interface that is down.
    lan.ip_in(&a.netns, &["link", "set", "eth0", "down"]);
    let d = driver(&a, &ConfigHandle::new(config(&[&vip(&addr, "eth0")])));
    let e = d.add(&addr).await.expect_err("interface down");
    assert!(e.to_string().contains("interface eth0 is down"), "{e}");
}

#[tokio::test]
async fn gateway_route_follows_the_address() {
    let mut lan = Lan::new();
    let a = lan.add_host("a");
    let addr = format!("{}/24", lan.free_address(100));
    let mut v = vip(&addr, "eth0");
    v.gateway = Some("10.213.0.1".into());
    let d = driver(&a, &ConfigHandle::new(config(&[&v])));
    let defaults = || lan.ip_in(&a.netns, &["route", "show", "default"]);

    assert_eq!(defaults().trim(), "");
    d.add(&addr).await.unwrap();
    assert!(
        defaults().contains("default via 10.213.0.1 dev eth0"),
        "{}",
        defaults()
    );
    d.add(&addr).await.unwrap();
    assert_eq!(defaults().lines().count(), 1, "{}", defaults());

    d.remove(&addr).await.unwrap();
    assert_eq!(defaults().trim(), "", "route removed with the address");
    assert!(!lan.has_address(&a.netns, "eth0", &addr));
    d.remove(&addr).await.unwrap();

    // Route there, address gone (a partial remove): remove finishes it.
    d.add(&addr).await.unwrap();
    lan.ip_in(&a.netns, &["addr", "del", &addr, "dev", "eth0"]);
    if !defaults().contains("10.213.0.1") {
        // The kernel may have dropped the route with the address; put it back.
        lan.ip_in(
            &a.netns,
            &[
                "route",
                "add",
                "default",
                "via",
                "10.213.0.1",
                "dev",
                "eth0",
            ],
        );
    }
    d.remove(&addr).await.unwrap();
    assert_eq!(defaults().trim(), "");

    // Another default route is there: a clear error, and the address is not left up without
    // its route and its announcement (the agent acts only on missing addresses, so a next
    // pass would not finish it); once the other route is gone, the add goes through.
    lan.ip_in(
        &a.netns,
        &[
            "route",
            "add",
            "default",
            "via",
            "10.213.0.2",
            "dev",
            "eth0",
        ],
    );
    let e = d.add(&addr).await.expect_err("another default route");
    eprintln!("{e}");
    assert!(
        e.to_string().contains("another default route exists")
            && e.to_string().contains("taken off again"),
        "{e}"
    );
    assert!(!lan.has_address(&a.netns, "eth0", &addr));
    assert_eq!(d.list().await.unwrap(), set(&[]));
    lan.ip_in(&a.netns, &["route", "del", "default", "via", "10.213.0.2"]);
    d.add(&addr).await.unwrap();
    assert!(lan.has_address(&a.netns, "eth0", &addr));
    assert!(
        defaults().contains("default via 10.213.0.1 dev eth0"),
        "{}",
        defaults()
    );
}

#[tokio::test]
async fn ipv6_addresses_are_added_and_removed() {
    let mut lan = Lan::new();
    let a = lan.add_host("a");
    let addr = "fd00:213::100/64";
    let d = driver(&a, &ConfigHandle::new(config(&[&vip(addr, "eth0")])));

    d.add(addr).await.unwrap();
    assert!(lan.has_address(&a.netns, "eth0", addr));
    assert_eq!(d.list().await.unwrap(), set(&[addr]));
    d.add(addr).await.unwrap();
    d.remove(addr).await.unwrap();
    d.remove(addr).await.unwrap();
    assert!(!lan.has_address(&a.netns, "eth0", addr));
    assert_eq!(d.list().await.unwrap(), set(&[]));
}

#[tokio::test]
async fn run_in_netns_runs_inside_the_namespace() {
    let mut lan = Lan::new();
    let a = lan.add_host("a");
    // /proc/thread-self/net shows the calling thread's namespace.
    let devices = rampart::drivers::net::run_in_netns(&a.netns, || async {
        std::fs::read_to_string("/proc/thread-self/net/dev").unwrap()
    })
    .await
    .unwrap();
    assert!(devices.contains("eth0:"), "{devices}");
    let e = rampart::drivers::net::run_in_netns("rmp-no-such-netns", || async {})
        .await
        .expect_err("no such namespace");
    assert!(
        e.to_string().contains("/run/netns/rmp-no-such-netns"),
        "{e}"
    );
}

/// The duplicate-address probe started ahead of the add (while the VMs start) gives the same
/// answers as the add's own: an address held elsewhere is refused, naming who answered; a
/// free one is added. A probe answer older than a second is not used.
#[tokio::test]
async fn probe_started_ahead_of_the_add_refuses_and_allows_the_same() {
    let mut lan = Lan::new();
    let a = lan.add_host("a");
    let b = lan.add_host("b");
    let (_, addr, cfg, da, db) = one_vip_two_drivers(&lan, &a, &b);

    da.add(&addr).await.unwrap();
    db.prepare(std::slice::from_ref(&addr)).await;
    let e = db
        .add(&addr)
        .await
        .expect_err("B must refuse an address A holds");
    assert!(e.to_string().contains(&a.mac), "names who answered: {e}");
    assert!(!lan.has_address(&b.netns, "eth0", &addr));

    // A stale early answer ("nobody") is not trusted: A took the address after B's probe.
    da.remove(&addr).await.unwrap();
    db.prepare(std::slice::from_ref(&addr)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    da.add(&addr).await.unwrap();
    let e = db.add(&addr).await.expect_err("probed again at the add");
    assert!(e.to_string().contains(&a.mac), "{e}");

    // Free: the early probe's "nobody answered" lets the add go ahead without probing again.
    // With a 500 ms probe wait, an add that probed itself could not take less than 500 ms.
    da.remove(&addr).await.unwrap();
    let slow = driver_with(&b, &cfg, Duration::from_millis(500));
    slow.prepare(std::slice::from_ref(&addr)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = Instant::now();
    slow.add(&addr).await.unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "the add used the early probe's answer instead of probing again: took {took:?}"
    );
    assert!(lan.has_address(&b.netns, "eth0", &addr));
}
