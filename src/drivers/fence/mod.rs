//! Real fencing: any standard fence agent through its stdin protocol, and native Redfish.
//!
//! [`RealFencer`] powers nodes off with the FenceDevices of the applied revision. It is a
//! shared handle: the controller keeps an `Arc<RealFencer>`, hands a clone to
//! [`controller::run`](crate::controller::run) as its `Arc<dyn Fencer>`, and calls
//! [`RealFencer::set_devices`] whenever a new revision is applied. A fence already running
//! finishes with the devices it started with.
//!
//! One call does one step of one level (the controller orders the levels) and answers `Ok` only
//! on a positive answer that the node is off:
//! - **fence agent** ([`agent`]): `/usr/sbin/<name>` with `key=value` lines on stdin
//!   (`action=off` first, then `plug=`, the parameters, the credentials; never on the command
//!   line). Exit 0 of `off` is fenced: standard agents poll the power status until it reads
//!   off before they exit 0 (as Pacemaker's fencer trusts). After a failed `off` the agent is
//!   asked for `status`: a node reported off (exit 2) counts as fenced.
//! - **Redfish** ([`redfish`]): `PowerState` of the ComputerSystem; `Off` is fenced, else
//!   `ComputerSystem.Reset` with `ForceOff`, then `PowerState` polled until `Off`.
//!
//! Each call is bounded by the device's `timeout` (default [`DEFAULT_TIMEOUT`]): an agent still
//! running then is killed with its whole process group; so is one whose caller gives up (the
//! controller's own `fenceTimeout` drops the future). Errors name the device, say what went
//! wrong and what to check, and never carry a secret: every credential value is scrubbed
//! from whatever an agent or a BMC printed.

pub mod agent;
pub mod redfish;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use super::{DriverError, Fencer};
use crate::manifest::common::Secret;
use crate::manifest::{FenceDeviceSpec, ManifestSet};
use crate::model::FenceStep;

/// Time for one fence call when the device names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where fence agents are installed (Debian's and Red Hat's `fence-agents`).
pub const AGENT_DIR: &str = "/usr/sbin";

/// What a device says about a node's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
}

/// Fence devices by name, as in the applied revision.
pub type Devices = BTreeMap<String, FenceDeviceSpec>;

/// Powers nodes off with the applied revision's FenceDevices. See the module documentation.
pub struct RealFencer {
    devices: RwLock<Arc<Devices>>,
    agent_dir: PathBuf,
    default_timeout: Duration,
    local_node: Option<String>,
    ca_certs: Vec<reqwest::Certificate>,
}

impl RealFencer {
    /// A fencer for these devices, with agents from [`AGENT_DIR`] and [`DEFAULT_TIMEOUT`].
    pub fn new(devices: Devices) -> Self {
        RealFencer {
            devices: RwLock::new(Arc::new(devices)),
            agent_dir: PathBuf::from(AGENT_DIR),
            default_timeout: DEFAULT_TIMEOUT,
            local_node: None,
            ca_certs: Vec::new(),
        }
    }

    /// The FenceDevices of a loaded (and validated) revision.
    pub fn devices_of(set: &ManifestSet) -> Devices {
        set.fence_devices
            .iter()
            .map(|(name, e)| (name.clone(), e.object.spec.clone()))
            .collect()
    }

    /// Replace the devices (a new revision was applied). Calls already running keep theirs.
    pub fn set_devices(&self, devices: Devices) {
        *self.devices.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(devices);
    }

    /// The devices in use now.
    pub fn devices(&self) -> Arc<Devices> {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Time for a call to a device without its own `timeout` (for example the Cluster's
    /// `timing.fenceTimeout`).
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Look for fence agents in `dir` instead of [`AGENT_DIR`] (tests).
    pub fn with_agent_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.agent_dir = dir.into();
        self
    }

    /// The node this fencer runs on: a device whose `runsOn` does not list it is refused.
    pub fn with_local_node(mut self, node: impl Into<String>) -> Self {
        self.local_node = Some(node.into());
        self
    }

    /// Trust the CA certificates of a PEM file for Redfish BMCs (besides the built-in
    /// web PKI roots), for BMCs whose certificates an in-house CA signs.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self, DriverError> {
        let what = format!("read the CA file {}", path.display());
        let pem = std::fs::read(path).map_err(|e| DriverError::new(&what, e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| DriverError::new(&what, format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(DriverError::new(what, "no certificate in the file"));
        }
        self.ca_certs.extend(certs);
        Ok(self)
    }

    fn device(
        &self,
        node: &str,
        step: &FenceStep,
    ) -> Result<(FenceDeviceSpec, Duration), DriverError> {
        let what = step_name(node, step);
        let devices = self.devices();
        let Some(spec) = devices.get(&step.device) else {
            return Err(terminal(
                what,
                format!(
                    "no FenceDevice `{}` in the applied revision (known: {})",
                    step.device,
                    list(devices.keys())
                ),
            ));
        };
        if let Some(me) = &self.local_node {
            if !spec.runs_on.is_empty() && !spec.runs_on.contains(me) {
                return Err(terminal(
                    what,
                    format!(
                        "FenceDevice `{}` runs only on {} and this is `{me}`",
                        step.device,
                        list(spec.runs_on.iter())
                    ),
                ));
            }
        }
        let timeout = spec.timeout.map(|t| t.0).unwrap_or(self.default_timeout);
        Ok((spec.clone(), timeout))
    }

    /// Ask the step's device whether the node is on or off.
    pub async fn status(&self, node: &str, step: &FenceStep) -> Result<PowerState, DriverError> {
        let (spec, timeout) = self.device(node, step)?;
        let what = format!("power status of {node} via {}", step.device);
        match (&spec.agent, &spec.redfish) {
            (Some(a), None) => agent::status(&self.agent_dir, a, step.plug.as_deref(), timeout)
                .await
                .map_err(|e| e.into_driver_error(what)),
            (None, Some(r)) => redfish::status(r, &self.ca_certs, timeout)
                .await
                .map_err(|m| DriverError::new(what, m)),
            _ => Err(neither(what, &step.device)),
        }
    }
}

#[async_trait]
impl Fencer for RealFencer {
    async fn fence_off(&self, node: &str, step: &FenceStep) -> Result<(), DriverError> {
        let (spec, timeout) = self.device(node, step)?;
        let what = step_name(node, step);
        match (&spec.agent, &spec.redfish) {
            (Some(a), None) => {
                let r = agent::fence_off(&self.agent_dir, a, step.plug.as_deref(), timeout).await;
                match r {
                    Ok(outcome) => {
                        if let Some(w) = outcome.warning {
                            tracing::warn!("{what}: {w}");
                        }
                        tracing::info!("{what}: confirmed off");
                        Ok(())
                    }
                    Err(e) => Err(e.into_driver_error(what)),
                }
            }
            (None, Some(r)) => {
                if step.plug.is_some() {
                    tracing::warn!("{what}: a Redfish device ignores the step's plug");
                }
                redfish::fence_off(r, &self.ca_certs, timeout)
                    .await
                    .map_err(|m| DriverError::new(what, m))
            }
            _ => Err(neither(what, &step.device)),
        }
    }
}

fn step_name(node: &str, step: &FenceStep) -> String {
    match &step.plug {
        Some(p) => format!("fence {node} via {} (plug {p})", step.device),
        None => format!("fence {node} via {}", step.device),
    }
}

fn neither(what: String, device: &str) -> DriverError {
    terminal(
        what,
        format!("FenceDevice `{device}` needs exactly one of `agent` or `redfish`"),
    )
}

fn terminal(step: String, message: String) -> DriverError {
    DriverError {
        step,
        message,
        terminal: true,
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Whole seconds when they are, else milliseconds: `3s`, `1.5s`.
pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Removes secret values from text meant for logs and errors.
#[derive(Default)]
pub(crate) struct Scrubber {
    values: Vec<String>,
}

impl Scrubber {
    pub fn add(&mut self, secret: &Secret) {
        let v = secret.expose();
        if !v.is_empty() && !self.values.iter().any(|x| x == v) {
            self.values.push(v.to_string());
            // Longest first, so a secret containing another is removed whole.
            self.values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "<redacted>");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::common::{Duration as MDuration, SecretRef};
    use crate::manifest::fence::{FenceAgent, Redfish};

    fn agent_device(name: &str) -> FenceDeviceSpec {
        FenceDeviceSpec {
            agent: Some(FenceAgent {
                name: name.into(),
                parameters: BTreeMap::new(),
                credentials: BTreeMap::new(),
            }),
            redfish: None,
            timeout: Some(MDuration::from_secs(5)),
            runs_on: vec![],
        }
    }

    fn step(device: &str) -> FenceStep {
        FenceStep {
            device: device.into(),
            plug: None,
        }
    }

    #[test]
    fn scrubs_every_secret_longest_first() {
        let mut s = Scrubber::default();
        s.add(&Secret::new("pw"));
        s.add(&Secret::new("pw-long"));
        s.add(&Secret::new(""));
        assert_eq!(
            s.scrub("login pw-long failed, pw wrong"),
            "login <redacted> failed, <redacted> wrong"
        );
        assert_eq!(Scrubber::default().scrub("as is"), "as is");
    }

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(secs(Duration::from_secs(3)), "3s");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5s");
    }

    #[tokio::test]
    async fn unknown_devices_and_devices_of_another_node_are_refused() {
        let f = RealFencer::new(BTreeMap::from([(
            "ipmi".to_string(),
            agent_device("fence_x"),
        )]));
        let e = f.fence_off("hv1", &step("nope")).await.unwrap_err();
        assert!(
            e.terminal && e.message.contains("no FenceDevice `nope`"),
            "{e}"
        );
        assert!(e.message.contains("`ipmi`"), "{e}");

        let mut d = agent_device("fence_x");
        d.runs_on = vec!["hv2".into()];
        let f = RealFencer::new(BTreeMap::from([("ipmi".to_string(), d)])).with_local_node("hv3");
        let e = f.fence_off("hv1", &step("ipmi")).await.unwrap_err();
        assert!(e.message.contains("runs only on `hv2`"), "{e}");
    }

    #[tokio::test]
    async fn set_devices_replaces_the_revision() {
        let f = RealFencer::new(Devices::new());
        assert!(f.fence_off("hv1", &step("ipmi")).await.is_err());
        f.set_devices(BTreeMap::from([(
            "ipmi".to_string(),
            FenceDeviceSpec {
                agent: None,
                redfish: Some(Redfish {
                    endpoint: "https://127.0.0.1:1".into(),
                    system: None,
                    username: SecretRef::Env("RAMPART_TEST_UNSET_A".into()),
                    password: SecretRef::Env("RAMPART_TEST_UNSET_B".into()),
                    tls_verify: true,
                }),
                timeout: None,
                runs_on: vec![],
            },
        )]));
        assert!(f.devices().contains_key("ipmi"));
        // Found now; fails on its unset secret, naming it.
        let e = f.fence_off("hv1", &step("ipmi")).await.unwrap_err();
        assert!(e.message.contains("RAMPART_TEST_UNSET_A"), "{e}");
    }

    #[tokio::test]
    async fn a_device_with_neither_method_is_refused() {
        let mut d = agent_device("fence_x");
        d.agent = None;
        let f = RealFencer::new(BTreeMap::from([("d".to_string(), d)]));
        let e = f.fence_off("hv1", &step("d")).await.unwrap_err();
        assert!(e.terminal && e.message.contains("exactly one"), "{e}");
    }
}
