//! Native Redfish: `ComputerSystem.Reset` with `ForceOff` over HTTPS.
//!
//! The system is the manifest's `system` (an id, or a path such as `/redfish/v1/Systems/1`),
//! else the only member of `/redfish/v1/Systems`. Its `PowerState` `Off` is fenced already;
//! otherwise Rampart POSTs `{"ResetType": "ForceOff"}` to the reset action's `target` (as the
//! system lists it, or `SYSTEM/Actions/ComputerSystem.Reset`) and polls `PowerState` until it
//! reads `Off`, all within the device's timeout.
//!
//! Basic authentication with the `username` and `password` secrets; only `https://`
//! endpoints (the password travels with every request); certificates verified against the
//! built-in web PKI roots plus any CA given to the fencer, unless `tlsVerify: false`; no proxy
//! (a BMC sits on a management network, not behind the host's HTTP proxy).

use std::time::Duration;

use reqwest::{Certificate, Client, Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use super::{secs, PowerState, Scrubber};
use crate::manifest::common::Secret;
use crate::manifest::fence::Redfish;

const SYSTEMS: &str = "/redfish/v1/Systems";

struct Bmc {
    client: Client,
    endpoint: String,
    username: Secret,
    password: Secret,
    scrubber: Scrubber,
    deadline: Instant,
    timeout: Duration,
}

/// What went wrong, in words for the admin (scrubbed of secrets before it leaves).
type Failure = String;

impl Bmc {
    fn connect(spec: &Redfish, cas: &[Certificate], timeout: Duration) -> Result<Bmc, Failure> {
        let endpoint = spec.endpoint.trim_end_matches('/').to_string();
        if !endpoint.starts_with("https://") {
            return Err(format!(
                "the Redfish endpoint `{endpoint}` must start with https:// (the password goes with every request)"
            ));
        }
        let username = spec
            .username
            .read()
            .map_err(|e| format!("the Redfish username: {e}"))?;
        let password = spec
            .password
            .read()
            .map_err(|e| format!("the Redfish password: {e}"))?;
        let mut scrubber = Scrubber::default();
        scrubber.add(&password);
        scrubber.add(&username);
        let mut b = Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .danger_accept_invalid_certs(!spec.tls_verify)
            .user_agent(concat!("rampart/", env!("CARGO_PKG_VERSION")));
        for c in cas {
            b = b.add_root_certificate(c.clone());
        }
        let client = b
            .build()
            .map_err(|e| format!("cannot set up an HTTPS client: {e}"))?;
        Ok(Bmc {
            client,
            endpoint,
            username,
            password,
            scrubber,
            deadline: Instant::now() + timeout,
            timeout,
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("https://") || path.starts_with("http://") {
            path.to_string()
        } else if path.starts_with('/') {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}/{path}", self.endpoint)
        }
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn timed_out(&self) -> Failure {
        format!(
            "BMC unreachable: {} did not answer within {}; check the endpoint's address and port, that this node reaches the BMC's network, and the device's timeout",
            self.endpoint,
            secs(self.timeout)
        )
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let left = self.left();
        if left.is_zero() {
            return Err(self.timed_out());
        }
        let url = self.url(path);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .basic_auth(self.username.expose(), Some(self.password.expose()))
            .header("Accept", "application/json")
            .timeout(left);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| self.describe(&e))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).or_else(|e| {
                if method == Method::GET {
                    Err(format!("{url} answered something that is not JSON: {e}"))
                } else {
                    Ok(Value::Null)
                }
            });
        }
        let said = redfish_message(&text)
            .map(|m| format!(": {}", self.scrubber.scrub(&m)))
            .unwrap_or_default();
        Err(match status {
            StatusCode::UNAUTHORIZED => format!(
                "wrong username or password for {} (HTTP 401{said}); check the secrets the device's `username` and `password` name",
                self.endpoint
            ),
            StatusCode::FORBIDDEN => format!(
                "the BMC account may not do this (HTTP 403 for {method} {url}{said}); it needs a role allowed to reset the system (Operator or Administrator)"
            ),
            StatusCode::NOT_FOUND => format!("{url} does not exist (HTTP 404{said})"),
            s => format!("{method} {url} failed: HTTP {}{said}", s.as_u16()),
        })
    }

    fn describe(&self, e: &reqwest::Error) -> Failure {
        // The innermost cause says most ("Connection refused", "invalid peer certificate").
        let mut chain = vec![e.to_string()];
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            chain.push(s.to_string());
            src = s.source();
        }
        let all = chain.join(": ").to_lowercase();
        let cause = self
            .scrubber
            .scrub(chain.last().map(String::as_str).unwrap_or(""));
        if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
            format!(
                "TLS error: the certificate of {} is not trusted ({cause}); give Rampart the CA that signed it, or set `tlsVerify: false` for a BMC with a self-signed certificate",
                self.endpoint
            )
        } else if e.is_timeout() {
            self.timed_out()
        } else if e.is_connect() {
            format!(
                "BMC unreachable: cannot connect to {} ({cause}); check the endpoint's address and port, that the BMC's Redfish service is on, and that this node reaches it",
                self.endpoint
            )
        } else {
            format!("request to {} failed: {cause}", self.endpoint)
        }
    }

    /// The system's path: the manifest's, or the only member of the collection.
    async fn system(&self, spec: &Redfish) -> Result<String, Failure> {
        if let Some(s) = &spec.system {
            let s = s.trim_end_matches('/');
            return Ok(if s.contains('/') {
                s.to_string()
            } else {
                format!("{SYSTEMS}/{s}")
            });
        }
        let v = self.request(Method::GET, SYSTEMS, None).await?;
        let members: Vec<String> = v["Members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|x| x["@odata.id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        match members.len() {
            1 => Ok(members.into_iter().next().unwrap()),
            0 => Err(format!("{} lists no ComputerSystem under {SYSTEMS}", self.endpoint)),
            _ => Err(format!(
                "{} has several systems ({}); set the device's `system` to the one this device powers off",
                self.endpoint,
                members.join(", ")
            )),
        }
    }

    /// The system's `PowerState` and its reset action's target.
    async fn power(&self, system: &str) -> Result<(String, String), Failure> {
        let v = self.request(Method::GET, system, None).await.map_err(|e| {
            if e.contains("HTTP 404") {
                format!("{e}; check the device's `system`")
            } else {
                e
            }
        })?;
        let state = v["PowerState"]
            .as_str()
            .ok_or_else(|| format!("{} has no PowerState", self.url(system)))?
            .to_string();
        let target = v["Actions"]["#ComputerSystem.Reset"]["target"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{system}/Actions/ComputerSystem.Reset"));
        Ok((state, target))
    }
}

/// `error.message` and the extended messages of a Redfish error body.
fn redfish_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let e = &v["error"];
    let mut parts = Vec::new();
    if let Some(m) = e["message"].as_str() {
        parts.push(m.to_string());
    }
    for x in e["@Message.ExtendedInfo"].as_array().into_iter().flatten() {
        if let Some(m) = x["Message"].as_str() {
            if !parts.iter().any(|p| p == m) {
                parts.push(m.to_string());
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Power the system off and wait until it reads `Off`.
pub async fn fence_off(
    spec: &Redfish,
    cas: &[Certificate],
    timeout: Duration,
) -> Result<(), Failure> {
    let bmc = Bmc::connect(spec, cas, timeout)?;
    let work = async {
        let system = bmc.system(spec).await?;
        let (state, target) = bmc.power(&system).await?;
        if state == "Off" {
            tracing::info!("{}{system}: already off", bmc.endpoint);
            return Ok(());
        }
        let reset = bmc
            .request(
                Method::POST,
                &target,
                Some(serde_json::json!({"ResetType": "ForceOff"})),
            )
            .await;
        if let Err(e) = reset {
            // Some BMCs refuse a reset of a system already on its way down: what counts is
            // the state.
            return match bmc.power(&system).await {
                Ok((s, _)) if s == "Off" => Ok(()),
                _ => Err(format!("ForceOff refused: {e}")),
            };
        }
        let mut last = state;
        let mut pause = Duration::from_millis(200);
        loop {
            let left = bmc.left();
            if left.is_zero() {
                return Err(format!(
                    "{} accepted ForceOff but still reports PowerState {last} after {}; check the node, or give the device a longer timeout",
                    bmc.url(&system),
                    secs(timeout)
                ));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            match bmc.power(&system).await {
                Ok((s, _)) if s == "Off" => return Ok(()),
                Ok((s, _)) => last = s,
                // A BMC busy powering off may drop a poll; keep asking until the deadline.
                Err(e) if bmc.left().is_zero() => return Err(e),
                Err(e) => tracing::debug!("{}: polling PowerState: {e}", bmc.endpoint),
            }
        }
    };
    match tokio::time::timeout(timeout + Duration::from_millis(100), work).await {
        Ok(r) => r.map_err(|e| bmc.scrubber.scrub(&e)),
        Err(_) => Err(bmc.timed_out()),
    }
}

/// The system's power state (anything but `Off` is on: `On`, `PoweringOn`, `PoweringOff`).
pub async fn status(
    spec: &Redfish,
    cas: &[Certificate],
    timeout: Duration,
) -> Result<PowerState, Failure> {
    let bmc = Bmc::connect(spec, cas, timeout)?;
    let work = async {
        let system = bmc.system(spec).await?;
        let (state, _) = bmc.power(&system).await?;
        Ok(if state == "Off" {
            PowerState::Off
        } else {
            PowerState::On
        })
    };
    match tokio::time::timeout(timeout + Duration::from_millis(100), work).await {
        Ok(r) => r.map_err(|e: Failure| bmc.scrubber.scrub(&e)),
        Err(_) => Err(bmc.timed_out()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::common::SecretRef;
    use std::net::TcpListener;

    fn spec(dir: &std::path::Path, endpoint: &str) -> Redfish {
        let secret = |name: &str, value: &str| {
            let p = dir.join(name);
            std::fs::write(&p, value).unwrap();
            SecretRef::File(p)
        };
        Redfish {
            endpoint: endpoint.into(),
            system: None,
            username: secret("user", "admin"),
            password: secret("pw", "pw-9f8e7d"),
            tls_verify: false,
        }
    }

    #[test]
    fn redfish_error_bodies_read_as_text() {
        let body = r#"{"error":{"code":"Base.1.0.GeneralError","message":"Incorrect username or password","@Message.ExtendedInfo":[{"Message":"Incorrect username or password"},{"Message":"Try again"}]}}"#;
        assert_eq!(
            redfish_message(body).as_deref(),
            Some("Incorrect username or password; Try again")
        );
        assert_eq!(redfish_message("<html>"), None);
    }

    #[tokio::test]
    async fn plain_http_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = fence_off(
            &spec(d.path(), "http://127.0.0.1:1"),
            &[],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.contains("https://"), "{e}");
    }

    #[tokio::test]
    async fn nothing_listening_is_bmc_unreachable() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let d = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let e = fence_off(
            &spec(d.path(), &format!("https://127.0.0.1:{port}")),
            &[],
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(e.starts_with("BMC unreachable: cannot connect"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_silent_bmc_is_unreachable_within_the_timeout() {
        // Accepts the connection, never answers the TLS handshake.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hold = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_secs(1));
            drop(s);
        });
        let d = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let e = fence_off(
            &spec(d.path(), &format!("https://127.0.0.1:{port}")),
            &[],
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert!(e.contains("did not answer within 0.5s"), "{e}");
        let _ = hold.join();
    }
}
