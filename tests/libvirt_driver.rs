//! The libvirt VM driver against real libvirt.
//!
//! (a) libvirt's test driver in this process (`test:///default`): define, start, no-op start,
//!     redefinition on an XML change, stop, malformed XML, state reporting, the marker,
//!     autostart, lifecycle events, and migration refusals (the test driver cannot migrate).
//! (b) a private unprivileged `libvirtd` (tests/support/libvirtd.rs) with `test+unix://`:
//!     state shared between processes, and reconnection after a daemon restart.
//! (c) real qemu under TCG through `qemu+unix:///session` on such a daemon: a tiny diskless
//!     domain defined, started, observed, stopped (ACPI is ignored without a guest OS: the
//!     stop times out and destroys), and gone.
//!
//! Needs `--features libvirt`. Missing libvirtd, virsh or qemu fail these tests; they never
//! skip.

#![cfg(feature = "libvirt")]

#[path = "support/libvirtd.rs"]
mod libvirtd;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use libvirtd::Libvirtd;
use rampart::drivers::config::{ConfigHandle, HostConfig, PeerConfig, VmConfig};
use rampart::drivers::libvirt::{xml_hash, LibvirtOptions, LibvirtVms, METADATA_URI};
use rampart::drivers::Vms;
use rampart::model::VmState;
use virt::connect::Connect;
use virt::domain::Domain;

/// A domain name no other test in this process uses (they share `test:///default`).
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn test_xml(name: &str, memory_kib: u64) -> String {
    format!(
        "<domain type='test'>\n  <name>{name}</name>\n  <memory unit='KiB'>{memory_kib}</memory>\n  \
         <vcpu>1</vcpu>\n  <os><type arch='x86_64'>hvm</type></os>\n</domain>\n"
    )
}

fn vm(xml: String, stop_timeout_ms: u64, live_migration: bool) -> VmConfig {
    VmConfig {
        xml,
        stop_timeout_ms,
        live_migration,
        path: String::new(),
    }
}

fn config(vms: &[(&str, VmConfig)]) -> HostConfig {
    HostConfig {
        vms: vms
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect(),
        ..Default::default()
    }
}

fn fast(uri: &str) -> LibvirtOptions {
    LibvirtOptions {
        poll_interval: Duration::from_millis(50),
        call_timeout: Duration::from_secs(20),
        ..LibvirtOptions::with_uri(uri)
    }
}

async fn driver(uri: &str, cfg: &ConfigHandle) -> LibvirtVms {
    LibvirtVms::connect(fast(uri), cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("connect to {uri}: {e}"))
}

async fn state(d: &LibvirtVms, name: &str) -> Option<VmState> {
    d.list().await.unwrap().get(name).map(|o| o.state)
}

/// A raw connection to inspect and disturb domains behind the driver's back. For
/// `test:///default`, connections of one process share one state.
fn raw(uri: &str) -> Connect {
    Connect::open(Some(uri)).unwrap()
}

fn inactive_xml(c: &Connect, name: &str) -> String {
    Domain::lookup_by_name(c, name)
        .unwrap()
        .get_xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// (a) test:///default in this process

#[tokio::test]
async fn start_is_idempotent_redefines_on_change_and_stop_undefines() {
    let name = unique("idem");
    let cfg = ConfigHandle::new(config(&[(&name, vm(test_xml(&name, 65536), 2000, false))]));
    let d = driver("test:///default", &cfg).await;
    let mut c = raw("test:///default");

    assert_eq!(state(&d, &name).await, None, "not defined before start");
    d.start(&name).await.unwrap();
    assert_eq!(state(&d, &name).await, Some(VmState::Running));
    let dom = Domain::lookup_by_name(&c, &name).unwrap();
    assert!(dom.is_persistent().unwrap(), "defined, not transient");
    assert!(!dom.get_autostart().unwrap(), "autostart stays off");
    let xml = inactive_xml(&c, &name);
    assert!(
        xml.contains(METADATA_URI) && xml.contains(&xml_hash(&test_xml(&name, 65536))),
        "marker with the XML's hash in the definition:\n{xml}"
    );

    // A change behind Rampart's back that leaves the marker alone: an unchanged start must
    // not redefine (it would drop the description).
    dom.set_metadata(
        virt::sys::VIR_DOMAIN_METADATA_DESCRIPTION as i32,
        Some("hand-made note"),
        None,
        None,
        virt::sys::VIR_DOMAIN_AFFECT_CONFIG,
    )
    .unwrap();
    d.start(&name).await.unwrap();
    assert_eq!(state(&d, &name).await, Some(VmState::Running));
    assert!(
        inactive_xml(&c, &name).contains("hand-made note"),
        "an unchanged start redefined the domain"
    );

    // The manifest's XML changes: redefined (the running domain keeps going; the new
    // definition applies at its next start).
    let new_xml = test_xml(&name, 131072);
    cfg.set(config(&[(&name, vm(new_xml.clone(), 2000, false))]));
    d.start(&name).await.unwrap();
    let xml = inactive_xml(&c, &name);
    assert!(
        xml.contains("131072") && !xml.contains("hand-made note"),
        "{xml}"
    );
    assert!(xml.contains(&xml_hash(&new_xml)), "{xml}");
    assert_eq!(state(&d, &name).await, Some(VmState::Running));

    // Stop: off (the test driver shuts down at once) and undefined.
    d.stop(&name).await.unwrap();
    assert_eq!(state(&d, &name).await, None);
    assert!(
        Domain::lookup_by_name(&c, &name).is_err(),
        "undefined after stop"
    );
    d.stop(&name).await.unwrap(); // absent: Ok

    // Start again defines again.
    d.start(&name).await.unwrap();
    assert_eq!(state(&d, &name).await, Some(VmState::Running));
    d.stop(&name).await.unwrap();
    c.close().unwrap();
}

#[tokio::test]
async fn defined_but_stopped_is_started_and_autostart_is_switched_off() {
    let name = unique("partial");
    let xml = test_xml(&name, 65536);
    let cfg = ConfigHandle::new(config(&[(&name, vm(xml.clone(), 2000, false))]));
    let d = driver("test:///default", &cfg).await;
    let mut c = raw("test:///default");

    // A domain defined by hand (no marker) with autostart on, shut off.
    let dom = Domain::define_xml(&c, &xml).unwrap();
    dom.set_autostart(true).unwrap();
    assert_eq!(state(&d, &name).await, Some(VmState::Shutoff));
    d.start(&name).await.unwrap();
    assert_eq!(state(&d, &name).await, Some(VmState::Running));
    assert!(!dom.get_autostart().unwrap(), "autostart switched off");
    assert!(inactive_xml(&c, &name).contains(&xml_hash(&xml)), "marked");

    // Paused behind our back: reported, and start resumes it.
    dom.suspend().unwrap();
    assert_eq!(state(&d, &name).await, Some(VmState::Paused));
    d.start(&name).await.unwrap();
    assert_eq!(state(&d, &name).await, Some(VmState::Running));

    // Paused again: stop destroys at once (ACPI cannot reach a paused guest).
    dom.suspend().unwrap();
    d.stop(&name).await.unwrap();
    assert_eq!(state(&d, &name).await, None);
    drop(dom);
    c.close().unwrap();
}

#[tokio::test]
async fn list_reports_managed_and_marked_domains_only() {
    let (a, b) = (unique("lista"), unique("listb"));
    let cfg = ConfigHandle::new(config(&[
        (&a, vm(test_xml(&a, 65536), 2000, false)),
        (&b, vm(test_xml(&b, 65536), 2000, false)),
    ]));
    let d = driver("test:///default", &cfg).await;
    d.start(&a).await.unwrap();
    d.start(&b).await.unwrap();
    let all = d.list().await.unwrap();
    assert_eq!(all.get(&a).map(|o| o.state), Some(VmState::Running));
    assert!(
        !all.contains_key("test"),
        "the test driver's own domain is none of Rampart's business: {all:?}"
    );

    // `b` leaves this node's configuration: still reported (it carries the marker), so the
    // agent stops it; stop needs no configuration.
    cfg.set(config(&[(&a, vm(test_xml(&a, 65536), 2000, false))]));
    assert_eq!(state(&d, &b).await, Some(VmState::Running));
    d.stop(&b).await.unwrap();
    assert_eq!(state(&d, &b).await, None);

    // A VM that is not configured cannot be started here.
    let e = d.start(&b).await.unwrap_err();
    assert!(e.terminal, "{e}");
    assert!(
        e.message.contains("not in this node's configuration"),
        "{e}"
    );
    d.stop(&a).await.unwrap();
}

#[tokio::test]
async fn malformed_or_mismatched_xml_is_a_terminal_error() {
    let bad = unique("bad");
    let cases = [
        (
            format!("<domain type='test'><name>{bad}</name><memory>64"),
            "unterminated",
        ),
        (
            format!(
                "<domain type='test'><name>{bad}</name><memory unit='KiB'>lots</memory>\
                 <os><type>hvm</type></os></domain>"
            ),
            "bad memory",
        ),
        (test_xml("someone-else", 65536), "another name"),
    ];
    for (xml, what) in cases {
        let cfg = ConfigHandle::new(config(&[(&bad, vm(xml, 2000, false))]));
        let d = driver("test:///default", &cfg).await;
        let e = d.start(&bad).await.unwrap_err();
        assert!(e.terminal, "{what}: {e}");
        assert!(
            e.message.len() > 20 && e.step.contains(&bad),
            "{what}: libvirt's message expected: {e}"
        );
        eprintln!("{what}: {e}");
        assert_eq!(state(&d, &bad).await, None, "{what}: nothing defined");
    }
    let c = raw("test:///default");
    assert!(Domain::lookup_by_name(&c, "someone-else").is_err());
}

#[tokio::test]
async fn lifecycle_events_wake_the_agent() {
    let name = unique("events");
    let cfg = ConfigHandle::new(config(&[(&name, vm(test_xml(&name, 65536), 2000, false))]));
    let d = driver("test:///default", &cfg).await;
    let mut events = d.events();
    events.borrow_and_update();
    d.start(&name).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), events.changed())
        .await
        .expect("a lifecycle event within 5 s of starting")
        .unwrap();

    // A change made by someone else is announced too.
    let c = raw("test:///default");
    events.borrow_and_update();
    Domain::lookup_by_name(&c, &name)
        .unwrap()
        .suspend()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), events.changed())
        .await
        .expect("an event for a suspend by another connection")
        .unwrap();
    d.stop(&name).await.unwrap();
}

#[tokio::test]
async fn migration_is_refused_unless_allowed_and_the_peer_is_known() {
    let (pinned, mobile) = (unique("pinned"), unique("mobile"));
    let mut host = config(&[
        (&pinned, vm(test_xml(&pinned, 65536), 2000, false)),
        (&mobile, vm(test_xml(&mobile, 65536), 2000, true)),
    ]);
    host.peers.insert(
        "beta".into(),
        PeerConfig {
            management: "10.0.0.2".into(),
            libvirt_uri: Some("qemu:///system".into()),
        },
    );
    host.peers.insert(
        "gamma".into(),
        PeerConfig {
            management: "10.0.0.3".into(),
            libvirt_uri: None,
        },
    );
    // A test-driver destination: the test driver refuses (peer-to-peer) migration itself.
    host.peers.insert(
        "delta".into(),
        PeerConfig {
            management: "127.0.0.1".into(),
            libvirt_uri: Some("test:///default".into()),
        },
    );
    let cfg = ConfigHandle::new(host);
    let d = driver("test:///default", &cfg).await;
    assert_eq!(
        d.migration_uri("beta").unwrap(),
        "qemu+ssh://10.0.0.2/system"
    );
    assert_eq!(
        d.migration_uri("gamma").unwrap(),
        "qemu+ssh://10.0.0.3/system"
    );
    assert!(d.migration_uri("nobody").unwrap_err().terminal);

    d.start(&pinned).await.unwrap();
    d.start(&mobile).await.unwrap();
    let e = d.migrate(&pinned, "beta").await.unwrap_err();
    assert!(
        e.terminal && e.message.contains("does not allow live migration"),
        "{e}"
    );
    let e = d.migrate(&mobile, "nobody").await.unwrap_err();
    assert!(e.terminal && e.message.contains("not a known peer"), "{e}");
    let e = d.migrate(&unique("unknown"), "beta").await.unwrap_err();
    assert!(e.terminal, "{e}");
    let e = d.migrate(&mobile, "delta").await.unwrap_err();
    eprintln!("test driver migration: {e}");
    assert!(e.terminal, "the test driver cannot migrate: {e}");
    assert_eq!(
        state(&d, &mobile).await,
        Some(VmState::Running),
        "still here"
    );
    assert_eq!(state(&d, &pinned).await, Some(VmState::Running));
    d.stop(&pinned).await.unwrap();
    d.stop(&mobile).await.unwrap();
}

#[tokio::test]
async fn unreachable_libvirt_is_a_retryable_error() {
    let cfg = ConfigHandle::new(HostConfig::default());
    let d = LibvirtVms::new(
        fast("test+unix:///default?socket=/nonexistent/rampart/libvirt-sock"),
        cfg,
    );
    let e = d.list().await.unwrap_err();
    assert!(!e.terminal, "{e}");
    assert!(e.message.contains("cannot connect"), "{e}");
}

// ---------------------------------------------------------------------------------------
// (b) a private libvirtd with the test driver

#[tokio::test]
async fn private_daemon_state_is_shared_between_processes() {
    let daemon = Libvirtd::start();
    let uri = daemon.test_uri();
    let name = unique("shared");
    let cfg = ConfigHandle::new(config(&[(&name, vm(test_xml(&name, 65536), 2000, false))]));
    let d = driver(&uri, &cfg).await;
    d.start(&name).await.unwrap();

    // Another process sees it running.
    let out = daemon.virsh_ok(&uri, &["domstate", &name]);
    assert_eq!(out.trim(), "running", "virsh domstate {name}");
    // So does a second driver (another connection).
    let other = driver(&uri, &cfg).await;
    assert_eq!(state(&other, &name).await, Some(VmState::Running));
    drop(other);

    // Another process stops it; the driver sees that.
    daemon.virsh_ok(&uri, &["shutdown", &name]);
    assert_eq!(state(&d, &name).await, Some(VmState::Shutoff));
    d.start(&name).await.unwrap();
    assert_eq!(
        daemon.virsh_ok(&uri, &["domstate", &name]).trim(),
        "running"
    );

    // The driver goes away; the holder keeps the daemon's state.
    drop(d);
    assert_eq!(
        daemon.virsh_ok(&uri, &["domstate", &name]).trim(),
        "running"
    );
    let log = daemon.events_log();
    assert!(log.contains(&name) && log.contains("Started"), "{log}");
}

#[tokio::test]
async fn reconnects_after_a_daemon_restart() {
    let mut daemon = Libvirtd::start();
    let uri = daemon.test_uri();
    let name = unique("restart");
    let cfg = ConfigHandle::new(config(&[(&name, vm(test_xml(&name, 65536), 2000, false))]));
    let d = driver(&uri, &cfg).await;
    d.start(&name).await.unwrap();
    let mut events = d.events();
    events.borrow_and_update();

    daemon.restart();
    // The close is announced (keepalive or the socket closing).
    let _ = tokio::time::timeout(Duration::from_secs(10), events.changed()).await;
    // A call may fail once while the broken connection is noticed; then it reconnects.
    let started = Instant::now();
    let listed = loop {
        match d.list().await {
            Ok(l) => break l,
            Err(e) => {
                assert!(!e.terminal, "{e}");
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "no reconnect within 20 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // A new test driver: the old state is gone.
    assert_eq!(listed, BTreeMap::new());
    d.start(&name).await.unwrap();
    assert_eq!(
        daemon.virsh_ok(&uri, &["domstate", &name]).trim(),
        "running"
    );
}

#[tokio::test]
async fn a_hung_daemon_is_a_timeout_not_a_hang() {
    let daemon = Libvirtd::start();
    let name = unique("hung");
    let cfg = ConfigHandle::new(config(&[(&name, vm(test_xml(&name, 65536), 2000, false))]));
    let options = LibvirtOptions {
        call_timeout: Duration::from_millis(500),
        ..fast(&daemon.test_uri())
    };
    let d = LibvirtVms::connect(options, cfg).await.unwrap();
    d.start(&name).await.unwrap();

    daemon.freeze();
    let t = Instant::now();
    let e = d.list().await.unwrap_err();
    let took = t.elapsed();
    daemon.thaw();
    assert!(
        !e.terminal && e.message.contains("did not answer within 500 ms"),
        "{e}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Once the daemon answers again, so does the driver (the late answer is discarded).
    let started = Instant::now();
    loop {
        match d.list().await {
            Ok(l) => {
                assert_eq!(l.get(&name).map(|o| o.state), Some(VmState::Running));
                break;
            }
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "still failing after the daemon resumed: {e}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// (c) real qemu under TCG

const QEMU: &str = "/usr/bin/qemu-system-x86_64";

fn qemu_xml(name: &str) -> String {
    // No disk, no graphics (libvirt 9 refuses `<graphics type='none'/>`), a serial console:
    // SeaBIOS finds nothing to boot and waits, which is all a test needs of a guest.
    format!(
        "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>64</memory>\n  \
         <vcpu>1</vcpu>\n  <os><type arch='x86_64'>hvm</type></os>\n  \
         <features><acpi/></features>\n  <on_poweroff>destroy</on_poweroff>\n  \
         <on_crash>destroy</on_crash>\n  <devices>\n    <serial type='pty'/>\n  </devices>\n\
         </domain>\n"
    )
}

#[tokio::test]
async fn real_qemu_domain_starts_and_is_destroyed_after_the_stop_timeout() {
    assert!(
        std::path::Path::new(QEMU).exists(),
        "{QEMU} is missing: install qemu-system-x86 (--no-install-recommends)"
    );
    let daemon = Libvirtd::start();
    let uri = daemon.qemu_uri();
    let name = unique("tcg");
    let stop_timeout_ms = 1500;
    let cfg = ConfigHandle::new(config(&[(
        &name,
        vm(qemu_xml(&name), stop_timeout_ms, false),
    )]));
    let d = driver(&uri, &cfg).await;

    let t = Instant::now();
    d.start(&name)
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}\nlibvirtd log:\n{}", daemon.log()));
    let started = t.elapsed();
    eprintln!("qemu/TCG domain defined and started in {started:?}");
    assert_eq!(state(&d, &name).await, Some(VmState::Running));
    assert_eq!(
        daemon.virsh_ok(&uri, &["domstate", &name]).trim(),
        "running"
    );
    let pids = daemon.qemu_pids();
    assert_eq!(pids.len(), 1, "one qemu process: {pids:?}");
    let pid = pids[0];
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // Starting again is a no-op.
    d.start(&name).await.unwrap();
    assert_eq!(daemon.qemu_pids(), vec![pid], "same qemu process");

    // No guest OS answers ACPI: the stop waits out its timeout, then destroys.
    let t = Instant::now();
    d.stop(&name).await.unwrap();
    let stopped = t.elapsed();
    eprintln!("qemu/TCG domain stopped (timeout path) in {stopped:?}");
    assert!(
        stopped >= Duration::from_millis(stop_timeout_ms),
        "destroyed before the graceful timeout: {stopped:?}"
    );
    assert!(stopped < Duration::from_secs(20), "{stopped:?}");
    assert_eq!(state(&d, &name).await, None, "stopped and undefined");
    let out = daemon.virsh_ok(&uri, &["list", "--all", "--name"]);
    assert!(!out.contains(&name), "still defined: {out}");
    wait_gone(pid);

    // Once more, with qemu's capabilities probed: the start itself.
    let t = Instant::now();
    d.start(&name).await.unwrap();
    eprintln!(
        "qemu/TCG domain defined and started again in {:?}",
        t.elapsed()
    );
    assert_eq!(state(&d, &name).await, Some(VmState::Running));
    let pid = daemon.qemu_pids()[0];
    d.stop(&name).await.unwrap();
    assert_eq!(state(&d, &name).await, None);
    wait_gone(pid);
}

fn wait_gone(pid: u32) {
    let gone = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if zombie {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "qemu {pid} still running after stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The report carries the definition Rampart made, as it wrote it, while the domain still is
/// that one; a domain redefined behind Rampart's back shows as libvirt holds it.
#[tokio::test]
async fn artifacts_show_the_definition_rampart_made() {
    let name = unique("artifact");
    let xml = test_xml(&name, 65536);
    let mut v = vm(xml.clone(), 2000, false);
    v.path = format!("/etc/libvirt/qemu/{name}.xml");
    let cfg = ConfigHandle::new(config(&[(&name, v)]));
    let d = driver("test:///default", &cfg).await;
    assert!(d.artifacts().await.is_empty(), "not defined yet");
    d.start(&name).await.unwrap();
    let a = d.artifacts().await;
    assert_eq!(a.get(&format!("/etc/libvirt/qemu/{name}.xml")), Some(&xml));
    // Redefined outside Rampart (more memory, no Rampart marker): the report shows libvirt's
    // definition instead. (An edit that keeps the marker, as `virsh edit` does, is not seen:
    // the marker records what Rampart defined, not what the domain holds now.)
    let c = raw("test:///default");
    let by_hand = inactive_xml(&c, &name).replace("65536", "131072");
    let by_hand = match (by_hand.find("<metadata>"), by_hand.find("</metadata>")) {
        (Some(a), Some(b)) => format!("{}{}", &by_hand[..a], &by_hand[b + "</metadata>".len()..]),
        _ => by_hand,
    };
    Domain::define_xml(&c, &by_hand).unwrap();
    let a = d.artifacts().await;
    let shown = &a[&format!("/etc/libvirt/qemu/{name}.xml")];
    assert_ne!(shown, &xml);
    assert!(shown.contains("131072"), "{shown}");
    d.stop(&name).await.unwrap();
}
