//! Fencing over Redfish against a real emulator (sushy-tools' `sushy-emulator`, fake driver)
//! on loopback over HTTPS: native Redfish and the `fence_redfish` agent, both through
//! [`RealFencer`] as the controller calls it.
//!
//! The fake driver applies a power change 1–11 s after the request, so the timeouts here
//! are generous. A missing emulator fails these tests (run ./scripts/test); they never skip.

#[path = "support/ipmi_sim.rs"]
mod ipmi_sim;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/sushy.rs"]
mod sushy;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rampart::drivers::fence::{PowerState, RealFencer};
use rampart::drivers::Fencer;
use rampart::manifest::FenceDeviceSpec;
use rampart::model::FenceStep;
use sushy::{Sushy, System};

const NODE1: &str = "5d4f2a0c-1111-4e6b-9a55-0c1b2d3e4f01";
const NODE2: &str = "5d4f2a0c-2222-4e6b-9a55-0c1b2d3e4f02";

fn one_system(on: bool) -> Vec<System> {
    vec![System {
        uuid: NODE1,
        name: "node1",
        on,
    }]
}

/// A native Redfish FenceDevice as an admin writes it.
fn native(s: &Sushy, extra: &str) -> FenceDeviceSpec {
    serde_yaml::from_str(&format!(
        r#"
redfish:
  endpoint: {endpoint}
  username: {{file: {user}}}
  password: {{file: {pw}}}
  {extra}
timeout: 40s
"#,
        endpoint = s.endpoint(),
        user = s.username_file().display(),
        pw = s.password_file().display(),
    ))
    .unwrap()
}

fn fencer(dev: FenceDeviceSpec) -> RealFencer {
    RealFencer::new(BTreeMap::from([("bmc".to_string(), dev)]))
}

fn step() -> FenceStep {
    FenceStep {
        device: "bmc".into(),
        plug: None,
    }
}

#[tokio::test]
async fn native_redfish_forces_the_system_off_and_sees_it_off() {
    let s = Sushy::start(&one_system(true));
    s.ready().await;
    let f = fencer(native(&s, "tlsVerify: false"));
    assert_eq!(f.status("hv1", &step()).await.unwrap(), PowerState::On);
    let t = Instant::now();
    f.fence_off("hv1", &step()).await.unwrap();
    eprintln!(
        "native Redfish ForceOff confirmed after {:?} (the fake driver waits 1-11 s)",
        t.elapsed()
    );
    assert_eq!(s.power_state(NODE1).await, "Off");
    // Again: already off, no reset needed.
    let t = Instant::now();
    f.fence_off("hv1", &step()).await.unwrap();
    eprintln!("native Redfish, already off: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn tls_is_verified_unless_turned_off() {
    let s = Sushy::start(&one_system(false));
    s.ready().await;
    // tlsVerify defaults to true; the emulator's CA is nobody's.
    let f = fencer(native(&s, ""));
    let e = f.fence_off("hv1", &step()).await.unwrap_err();
    eprintln!("{e}");
    assert!(e.message.starts_with("TLS error"), "{e}");
    assert!(e.message.contains("tlsVerify: false"), "{e}");
    assert!(!e.message.contains(&s.password), "{e}");
    // Verified against the CA that signed it, it is fine.
    let f = fencer(native(&s, "tlsVerify: true"))
        .with_ca_file(&s.ca)
        .unwrap();
    assert_eq!(f.status("hv1", &step()).await.unwrap(), PowerState::Off);
    f.fence_off("hv1", &step()).await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_said_plainly() {
    let s = Sushy::start(&one_system(true));
    s.ready().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-pw-4711").unwrap();
    let mut dev = native(&s, "tlsVerify: false");
    dev.redfish.as_mut().unwrap().password = rampart::manifest::common::SecretRef::File(wrong);
    let e = fencer(dev).fence_off("hv1", &step()).await.unwrap_err();
    eprintln!("{e}");
    assert!(e.message.contains("wrong username or password"), "{e}");
    assert!(e.message.contains("HTTP 401"), "{e}");
    assert!(!e.to_string().contains("not-the-pw-4711"), "{e}");
    assert_eq!(s.power_state(NODE1).await, "On");
}

#[tokio::test]
async fn several_systems_need_the_system_named() {
    let s = Sushy::start(&[
        System {
            uuid: NODE1,
            name: "node1",
            on: true,
        },
        System {
            uuid: NODE2,
            name: "node2",
            on: false,
        },
    ]);
    s.ready().await;
    let e = fencer(native(&s, "tlsVerify: false"))
        .fence_off("hv1", &step())
        .await
        .unwrap_err();
    assert!(e.message.contains("several systems"), "{e}");
    assert!(
        e.message.contains(NODE1) && e.message.contains(NODE2),
        "{e}"
    );
    assert!(e.message.contains("`system`"), "{e}");
    // Named by id: the one that is off is fenced at once, the other untouched.
    let f = fencer(native(&s, &format!("tlsVerify: false\n  system: {NODE2}")));
    f.fence_off("hv1", &step()).await.unwrap();
    assert_eq!(s.power_state(NODE1).await, "On");
    // Named by path.
    let f = fencer(native(
        &s,
        &format!("tlsVerify: false\n  system: /redfish/v1/Systems/{NODE1}"),
    ));
    assert_eq!(f.status("hv1", &step()).await.unwrap(), PowerState::On);
    let e = fencer(native(&s, "tlsVerify: false\n  system: no-such-system"))
        .fence_off("hv1", &step())
        .await
        .unwrap_err();
    assert!(e.message.contains("HTTP 404"), "{e}");
}

#[tokio::test]
async fn the_fence_redfish_agent_works_through_the_same_fencer() {
    ipmi_sim::require("fence_redfish", "fence-agents");
    let s = Sushy::start(&[
        System {
            uuid: NODE1,
            name: "node1",
            on: true,
        },
        System {
            uuid: NODE2,
            name: "node2",
            on: true,
        },
    ]);
    s.ready().await;
    let dev: FenceDeviceSpec = serde_yaml::from_str(&format!(
        r#"
agent:
  name: fence_redfish
  parameters:
    ip: 127.0.0.1
    ipport: {port}
    username: {user}
    ssl_insecure: true
    systems_uri: /redfish/v1/Systems/{NODE1}
  credentials:
    password: {{file: {pw}}}
timeout: 40s
"#,
        port = s.port,
        user = s.user,
        pw = s.password_file().display(),
    ))
    .unwrap();
    let f = fencer(dev);
    let t = Instant::now();
    f.fence_off("hv1", &step()).await.unwrap();
    eprintln!(
        "fence_redfish off confirmed after {:?} (the fake driver waits 1-11 s)",
        t.elapsed()
    );
    assert_eq!(s.power_state(NODE1).await, "Off");
    assert_eq!(s.power_state(NODE2).await, "On");
    assert_eq!(f.status("hv1", &step()).await.unwrap(), PowerState::Off);
}
