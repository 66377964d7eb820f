//! Standard fence agents (`fence_ipmilan`, `fence_redfish`, `fence_virsh`, ...) through their
//! stdin protocol.
//!
//! The agent is `AGENT_DIR/<name>`, where the name must be `fence_[a-z0-9_]+` (never a path).
//! It gets no arguments; everything goes on stdin as `key=value` lines: `action=` first (an
//! agent given no action reboots), then `plug=` when the step names one, the device's
//! parameters, and its credentials read from their [`SecretRef`]s. Nothing secret is on the
//! command line (every user on the host can read that), in the environment, or in an error.
//!
//! The agent runs in a process group of its own with a clean environment (`PATH`, `LC_ALL=C`,
//! `HOME`); when its time is up, or its caller gives up on it, the whole group is killed with
//! SIGKILL, so no `ipmitool` or `ssh` it started is left behind.
//!
//! Exit codes: `off` 0 = done (the fencing library confirms the new state before it says so),
//! anything else failed; `status` 0 = on, 2 = off.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::time::Instant;

use super::{secs, PowerState, Scrubber};
use crate::drivers::DriverError;
use crate::manifest::common::{Secret, SecretRef};
use crate::manifest::fence::FenceAgent;

/// A failed agent call: what to tell the admin (already scrubbed of secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFailure {
    pub message: String,
    /// Retrying cannot help until the manifests change.
    pub terminal: bool,
}

impl AgentFailure {
    fn new(message: impl Into<String>) -> Self {
        AgentFailure {
            message: message.into(),
            terminal: false,
        }
    }
    fn terminal(message: impl Into<String>) -> Self {
        AgentFailure {
            message: message.into(),
            terminal: true,
        }
    }
    pub fn into_driver_error(self, step: String) -> DriverError {
        DriverError {
            step,
            message: self.message,
            terminal: self.terminal,
        }
    }
}

/// A successful `off`, with anything worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub warning: Option<String>,
}

/// `fence_[a-z0-9_]+`, nothing else: no path, no option, no shell.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = name.strip_prefix("fence_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a fence agent name: give the executable's name, `fence_` then lowercase letters, digits or `_` (for example `fence_ipmilan`), never a path"
        ))
    }
}

/// Keys the agent reads; names of options as on its stdin.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The agent's stdin: `action=` first, then `plug=` (the step's), the parameters (a `plug` or
/// `port` among them only when the step names none), then the credentials.
pub fn render_stdin(
    action: &str,
    plug: Option<&str>,
    parameters: &std::collections::BTreeMap<String, String>,
    credentials: &[(String, Secret)],
) -> Result<String, String> {
    let mut out = format!("action={action}\n");
    let line = |out: &mut String, key: &str, value: &str, secret: bool| {
        if !valid_key(key) {
            return Err(format!(
                "`{key}` is not an agent option name (letters, digits, `_`, `-`)"
            ));
        }
        if matches!(key, "action" | "o" | "option") {
            return Err(format!(
                "`{key}` is set by Rampart (it sends `action=off` or `action=status`); remove it from the device"
            ));
        }
        if value.contains(['\n', '\r', '\0']) {
            return Err(if secret {
                format!("the secret for `{key}` contains a line break; an agent reads one line per option")
            } else {
                format!("the value of `{key}` contains a line break; an agent reads one line per option")
            });
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        out.push('\n');
        Ok(())
    };
    if let Some(p) = plug {
        line(&mut out, "plug", p, false)?;
    }
    for (k, v) in parameters {
        if plug.is_some() && matches!(k.as_str(), "plug" | "port") {
            // The node's step names the plug; the device's default does not apply.
            continue;
        }
        line(&mut out, k, v, false)?;
    }
    for (k, v) in credentials {
        line(&mut out, k, v.expose(), true)?;
    }
    Ok(out)
}

/// What the admin should look at when the agent failed.
fn hint(agent: &FenceAgent) -> String {
    let p = &agent.parameters;
    let address = ["ip", "ipaddr", "hostname"]
        .iter()
        .find_map(|k| p.get(*k))
        .map(|ip| match p.get("ipport") {
            Some(port) => format!("{ip} port {port}"),
            None => ip.clone(),
        });
    let address = match address {
        Some(a) => format!("the address ({a})"),
        None => "the address".into(),
    };
    let creds = if agent.credentials.is_empty() {
        String::new()
    } else {
        format!(
            ", the credentials ({})",
            agent
                .credentials
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!(
        "check {address}, the username{creds}, and that this node reaches the device; `{} -o status` with the same options shows the same answer",
        agent.name
    )
}

struct Prepared {
    path: std::path::PathBuf,
    credentials: Vec<(String, Secret)>,
    scrubber: Scrubber,
}

fn prepare(dir: &Path, agent: &FenceAgent) -> Result<Prepared, AgentFailure> {
    validate_name(&agent.name).map_err(AgentFailure::terminal)?;
    let mut scrubber = Scrubber::default();
    let mut credentials = Vec::new();
    for (key, r) in &agent.credentials {
        let s = read_secret(key, r)?;
        scrubber.add(&s);
        credentials.push((key.clone(), s));
    }
    let path = dir.join(&agent.name);
    if !path.is_file() {
        return Err(AgentFailure::new(format!(
            "the fence agent {} is not installed on this node (Debian and Red Hat: package fence-agents)",
            path.display()
        )));
    }
    Ok(Prepared {
        path,
        credentials,
        scrubber,
    })
}

fn read_secret(key: &str, r: &SecretRef) -> Result<Secret, AgentFailure> {
    r.read()
        .map_err(|e| AgentFailure::new(format!("credential `{key}`: {e}")))
}

/// Power the node off. See the module documentation for what counts as off.
pub async fn fence_off(
    dir: &Path,
    agent: &FenceAgent,
    plug: Option<&str>,
    timeout: Duration,
) -> Result<Outcome, AgentFailure> {
    let deadline = Instant::now() + timeout;
    let p = prepare(dir, agent)?;
    let input = render_stdin("off", plug, &agent.parameters, &p.credentials)
        .map_err(AgentFailure::terminal)?;
    let status_input = render_stdin("status", plug, &agent.parameters, &p.credentials)
        .map_err(AgentFailure::terminal)?;
    let off = run(&p.path, &input, timeout)
        .await
        .map_err(|e| AgentFailure::new(format!("cannot run {}: {e}", p.path.display())))?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    if off.timed_out {
        return Err(AgentFailure::new(format!(
            "{} timed out after {} and was killed{}; {}",
            agent.name,
            secs(timeout),
            off.said(&p.scrubber),
            hint(agent)
        )));
    }
    // The agent's `off` exit 0 is the positive answer: agents built on the fencing library
    // (every standard one) poll the device's power status until it reads off before they
    // exit 0, and fail otherwise (`power_wait`, `power_timeout`). Asking `status` again
    // would only repeat that check, at the cost of another agent run in every failover's
    // outage; Pacemaker's fencer trusts the exit code the same way.
    if off.code() == Some(0) {
        return Ok(Outcome { warning: None });
    }
    // `off` failed. A node the device reports off is fenced all the same.
    if !remaining.is_zero() {
        if let Ok(st) = run(&p.path, &status_input, remaining).await {
            // The fence agent protocol: `status` exits 2 for off.
            if st.code() == Some(2) {
                return Ok(Outcome {
                    warning: Some(format!(
                        "{} `off` failed ({}{}), but `status` reports the node off",
                        agent.name,
                        off.describe(),
                        off.said(&p.scrubber)
                    )),
                });
            }
        }
    }
    Err(AgentFailure::new(format!(
        "{} failed to power the node off ({}){}; {}",
        agent.name,
        off.describe(),
        off.said(&p.scrubber),
        hint(agent)
    )))
}

/// Ask the agent whether the node is on (exit 0) or off (exit 2).
pub async fn status(
    dir: &Path,
    agent: &FenceAgent,
    plug: Option<&str>,
    timeout: Duration,
) -> Result<PowerState, AgentFailure> {
    let p = prepare(dir, agent)?;
    let input = render_stdin("status", plug, &agent.parameters, &p.credentials)
        .map_err(AgentFailure::terminal)?;
    let r = run(&p.path, &input, timeout)
        .await
        .map_err(|e| AgentFailure::new(format!("cannot run {}: {e}", p.path.display())))?;
    if r.timed_out {
        return Err(AgentFailure::new(format!(
            "{} timed out after {} and was killed{}; {}",
            agent.name,
            secs(timeout),
            r.said(&p.scrubber),
            hint(agent)
        )));
    }
    match r.code() {
        Some(0) => Ok(PowerState::On),
        Some(2) => Ok(PowerState::Off),
        _ => Err(AgentFailure::new(format!(
            "{} could not tell the power state ({}){}; {}",
            agent.name,
            r.describe(),
            r.said(&p.scrubber),
            hint(agent)
        ))),
    }
}

/// One finished (or killed) agent run.
#[derive(Debug)]
pub struct Run {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        if self.timed_out {
            return None;
        }
        self.status.and_then(|s| s.code())
    }

    fn describe(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        match self.status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "no exit status".into(),
            },
            None => "no exit status".into(),
        }
    }

    /// The agent's meaningful words, scrubbed, as `: "..."` (or nothing).
    fn said(&self, scrubber: &Scrubber) -> String {
        let lines = meaningful_lines(&self.stderr, &self.stdout);
        if lines.is_empty() {
            String::new()
        } else {
            format!(": {}", scrubber.scrub(&lines.join(" / ")))
        }
    }
}

/// The lines of an agent's output worth showing: its `ERROR:` lines (without the timestamp
/// the fencing library puts in front), else the last few other lines that are not Python's
/// noise.
pub fn meaningful_lines(stderr: &str, stdout: &str) -> Vec<String> {
    const MAX_LINES: usize = 4;
    const MAX_LINE: usize = 300;
    let clip = |s: &str| {
        let s = s.trim();
        if s.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &s[..end])
        } else {
            s.to_string()
        }
    };
    let errors: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.find("ERROR:").map(|i| l[i + "ERROR:".len()..].trim()))
        .filter(|l| !l.is_empty() && !l.starts_with("Please use '-h' for usage"))
        .map(clip)
        .collect();
    let mut errors = dedup(errors);
    if !errors.is_empty() {
        errors.truncate(MAX_LINES);
        return errors;
    }
    let noise = |l: &str| {
        l.is_empty()
            || l.contains("Warning:")
            || l.contains("DeprecationWarning")
            || l.starts_with("from ")
            || l.starts_with("import ")
            || l.contains("Please use '-h' for usage")
    };
    let others: Vec<String> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !noise(l))
        .map(clip)
        .collect();
    let mut others = dedup(others);
    let skip = others.len().saturating_sub(MAX_LINES);
    others.drain(..skip);
    others
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in v {
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// The agent's process, its group killed and the process reaped when dropped (a caller that
/// gives up on the future must not leave an agent running).
struct Group {
    child: Child,
    reaped: bool,
}

impl Group {
    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Whether the agent has exited, without reaping it: its PID, which is also its group's
    /// id, stays taken until `kill_group` is done with it.
    fn exited(&self) -> std::io::Result<bool> {
        // SAFETY: waitid writes into the zeroed siginfo we own; WNOWAIT leaves the child
        // waitable, WNOHANG makes it return at once.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                self.pid() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(info.si_pid() != 0)
        }
    }

    fn kill_group(&self) {
        // SAFETY: plain syscall; the group id is our unreaped child's PID, so it cannot name
        // anyone else's processes.
        unsafe {
            libc::kill(-self.pid(), libc::SIGKILL);
        }
    }

    fn reap(&mut self) -> std::io::Result<ExitStatus> {
        let s = self.child.wait();
        self.reaped = true;
        s
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

/// Output read by a thread, kept up to a limit; readable while the thread still runs.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

const CAPTURE_LIMIT: usize = 64 * 1024;

fn capture(pipe: Option<impl Read + Send + 'static>) -> Capture {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let thread = pipe.map(|mut pipe| {
        let buf = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                let room = CAPTURE_LIMIT.saturating_sub(b.len());
                b.extend_from_slice(&chunk[..n.min(room)]);
            }
        })
    });
    Capture { buf, thread }
}

impl Capture {
    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Run the agent at `path` with `input` on its stdin, for at most `timeout`.
pub async fn run(path: &Path, input: &str, timeout: Duration) -> std::io::Result<Run> {
    let start = Instant::now();
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(home) = std::env::var_os("HOME") {
        cmd.env("HOME", home);
    }
    let mut group = Group {
        child: cmd.spawn()?,
        reaped: false,
    };
    let out = capture(group.child.stdout.take());
    let err = capture(group.child.stderr.take());
    if let Some(mut stdin) = group.child.stdin.take() {
        // A few hundred bytes: they fit in the pipe, so this does not block. An agent that
        // exits without reading them breaks the pipe; its exit status tells the story.
        let _ = stdin.write_all(input.as_bytes());
    }
    let mut poll = Duration::from_millis(2);
    let timed_out = loop {
        if group.exited()? {
            break false;
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break true;
        }
        tokio::time::sleep(poll.min(left)).await;
        poll = (poll * 2).min(Duration::from_millis(25));
    };
    // Whatever the agent left running goes with it.
    group.kill_group();
    let status = group.reap()?;
    // The pipes close once every process of the group is gone; one that escaped the group
    // could hold them open, so wait only briefly.
    let until = Instant::now() + Duration::from_millis(500);
    while !(out.finished() && err.finished()) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Run {
        status: Some(status),
        timed_out,
        stdout: out.text(),
        stderr: err.text(),
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn agent_names_are_plain_fence_agent_names() {
        for ok in [
            "fence_ipmilan",
            "fence_redfish",
            "fence_virsh",
            "fence_apc_snmp",
            "fence_ilo4",
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "fence_",
            "ipmitool",
            "/usr/sbin/fence_ipmilan",
            "../fence_x",
            "fence_x/../../bin/sh",
            "fence_X",
            "fence_ipmi lan",
            "fence_ipmi;rm",
            "fence-ipmilan",
            "fence_\u{e9}",
        ] {
            let e = validate_name(bad).unwrap_err();
            assert!(e.contains("never a path"), "{bad}: {e}");
        }
    }

    fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn stdin_starts_with_the_action_then_plug_parameters_credentials() {
        let s = render_stdin(
            "off",
            Some("hv2"),
            &params(&[("ip", "10.0.0.5"), ("lanplus", "1"), ("port", "ignored")]),
            &[("password".into(), Secret::new("hunter2"))],
        )
        .unwrap();
        assert_eq!(
            s,
            "action=off\nplug=hv2\nip=10.0.0.5\nlanplus=1\npassword=hunter2\n"
        );
        // Without a step plug the device's own applies.
        let s = render_stdin("status", None, &params(&[("port", "3")]), &[]).unwrap();
        assert_eq!(s, "action=status\nport=3\n");
    }

    #[test]
    fn stdin_refuses_what_could_change_the_action_or_add_lines() {
        let e = render_stdin("off", None, &params(&[("action", "reboot")]), &[]).unwrap_err();
        assert!(e.contains("set by Rampart"), "{e}");
        let e = render_stdin("off", None, &params(&[("ip", "1\naction=reboot")]), &[]).unwrap_err();
        assert!(e.contains("line break"), "{e}");
        let e = render_stdin(
            "off",
            None,
            &BTreeMap::new(),
            &[("password".into(), Secret::new("a\nb-secret"))],
        )
        .unwrap_err();
        assert!(
            e.contains("secret for `password`") && !e.contains("b-secret"),
            "{e}"
        );
        let e = render_stdin("off", None, &params(&[("a b", "1")]), &[]).unwrap_err();
        assert!(e.contains("not an agent option"), "{e}");
        let e = render_stdin("off", Some("x\ny"), &BTreeMap::new(), &[]).unwrap_err();
        assert!(e.contains("`plug`"), "{e}");
    }

    #[test]
    fn meaningful_lines_are_the_error_lines_without_timestamps() {
        let stderr = "/usr/sbin/fence_ipmilan:5: DeprecationWarning: 'pipes' is deprecated\n  from pipes import quote\n2026-11-22 08:11:34,980 ERROR: Failed: Unable to obtain correct plug status or plug is not available\n\n2026-11-22 08:11:34,981 ERROR: Please use '-h' for usage\n";
        assert_eq!(
            meaningful_lines(stderr, ""),
            vec!["Failed: Unable to obtain correct plug status or plug is not available"]
        );
        assert_eq!(
            meaningful_lines("  from pipes import quote\n", "Connection refused\n"),
            vec!["Connection refused"]
        );
        assert!(meaningful_lines("", "").is_empty());
    }

    /// A fake agent in a fresh directory: a shell script.
    fn fake_agent(dir: &Path, name: &str, body: &str) -> FenceAgent {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        FenceAgent {
            name: name.into(),
            parameters: params(&[("ip", "192.0.2.9")]),
            credentials: BTreeMap::new(),
        }
    }

    fn secret_file(dir: &Path, value: &str) -> SecretRef {
        let p = dir.join("pw");
        std::fs::write(&p, format!("{value}\n")).unwrap();
        SecretRef::File(p)
    }

    #[tokio::test]
    async fn the_agent_gets_everything_on_stdin_and_nothing_on_its_command_line() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let mut a = fake_agent(
            d.path(),
            "fence_fake",
            &format!(
                "echo \"args:$#:$*\" >> {log}; cat >> {log}; echo --- >> {log}; env >> {log}; echo === >> {log}; grep -q action=status {log} && exit 2; exit 0",
                log = log.display()
            ),
        );
        a.credentials
            .insert("password".into(), secret_file(d.path(), "s3cr3t-pw"));
        let out = fence_off(d.path(), &a, Some("7"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.warning, None);
        let text = std::fs::read_to_string(&log).unwrap();
        let runs: Vec<&str> = text.split("===\n").collect();
        assert!(
            runs[0].starts_with(
                "args:0:\naction=off\nplug=7\nip=192.0.2.9\npassword=s3cr3t-pw\n---\n"
            ),
            "{text}"
        );
        // `off` exited 0: trusted, no second run (see `fence_off`).
        assert_eq!(runs.len(), 2, "one run only: {text}");
        assert_eq!(runs[1], "", "{text}");
        // A clean environment: nothing of Rampart's own (which may hold secrets) leaks.
        let env = runs[0].split("---\n").nth(1).unwrap();
        assert!(env.contains("LC_ALL=C"), "{env}");
        assert!(!env.contains("CARGO"), "{env}");
    }

    #[tokio::test]
    async fn errors_carry_the_agents_error_lines_scrubbed_and_a_hint() {
        let d = tempfile::tempdir().unwrap();
        let mut a = fake_agent(
            d.path(),
            "fence_fake",
            "read l; echo 'noise' >&2; echo \"2026-01-01 00:00:00,000 ERROR: login as admin with $(grep password= | cut -d= -f2) refused\" >&2; exit 1",
        );
        a.credentials
            .insert("password".into(), secret_file(d.path(), "s3cr3t-pw"));
        let e = fence_off(d.path(), &a, None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(!e.message.contains("s3cr3t-pw"), "{e:?}");
        assert!(
            e.message.contains("login as admin with <redacted> refused"),
            "{e:?}"
        );
        assert!(e.message.contains("exit code 1"), "{e:?}");
        assert!(
            e.message.contains("192.0.2.9") && e.message.contains("`password`"),
            "{e:?}"
        );
        assert!(!e.terminal);
    }

    #[tokio::test]
    async fn a_node_reported_off_after_a_failed_off_counts_and_one_still_on_does_not() {
        let d = tempfile::tempdir().unwrap();
        let a = fake_agent(
            d.path(),
            "fence_fake",
            "grep -q action=status && exit 2; echo 'x ERROR: already off' >&2; exit 1",
        );
        let out = fence_off(d.path(), &a, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(out.warning.unwrap().contains("reports the node off"));

        // A failed `off` with the device still reporting the node on is no fence.
        let a = fake_agent(
            d.path(),
            "fence_stuck",
            "grep -q action=status && exit 0; echo 'x ERROR: Timed out waiting to power OFF' >&2; exit 1",
        );
        let e = fence_off(d.path(), &a, None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            e.message.contains("Timed out waiting to power OFF"),
            "{e:?}"
        );
        assert_eq!(
            status(d.path(), &a, None, Duration::from_secs(5)).await,
            Ok(PowerState::On)
        );
    }

    /// Every PID listed is gone (or a zombie waiting for its reaper) within a second.
    async fn assert_gone(pids: &str) {
        for pid in pids.split_whitespace() {
            let alive = || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    })
                    .unwrap_or(false)
            };
            let t = Instant::now();
            while alive() && t.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(!alive(), "process {pid} still running");
        }
    }

    #[tokio::test]
    async fn a_hung_agent_is_killed_with_its_children_at_the_timeout() {
        let d = tempfile::tempdir().unwrap();
        let pids = d.path().join("pids");
        let a = fake_agent(
            d.path(),
            "fence_hang",
            &format!(
                "echo 'x ERROR: connecting' >&2; sleep 60 & echo $$ $! > {}; wait",
                pids.display()
            ),
        );
        let t = Instant::now();
        let e = fence_off(d.path(), &a, None, Duration::from_millis(400))
            .await
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(e.message.contains("timed out after 0.4s"), "{e:?}");
        assert!(e.message.contains("connecting"), "{e:?}");
        assert_gone(&std::fs::read_to_string(&pids).unwrap()).await;
    }

    #[tokio::test]
    async fn a_dropped_call_kills_the_agent() {
        let d = tempfile::tempdir().unwrap();
        let pids = d.path().join("pids");
        let a = fake_agent(
            d.path(),
            "fence_hang",
            &format!("sleep 60 & echo $$ $! > {}; wait", pids.display()),
        );
        let r = tokio::time::timeout(
            Duration::from_millis(300),
            fence_off(d.path(), &a, None, Duration::from_secs(30)),
        )
        .await;
        assert!(r.is_err());
        assert_gone(&std::fs::read_to_string(&pids).unwrap()).await;
    }

    #[tokio::test]
    async fn bad_names_missing_agents_and_missing_secrets_say_so() {
        let d = tempfile::tempdir().unwrap();
        let mut a = fake_agent(d.path(), "fence_fake", "exit 0");
        a.name = "/bin/true".into();
        let e = fence_off(d.path(), &a, None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.terminal && e.message.contains("never a path"), "{e:?}");
        a.name = "fence_missing".into();
        let e = fence_off(d.path(), &a, None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.message.contains("fence-agents"), "{e:?}");
        a.name = "fence_fake".into();
        a.credentials.insert(
            "password".into(),
            SecretRef::Env("RAMPART_TEST_UNSET_FENCE_PW".into()),
        );
        let e = fence_off(d.path(), &a, None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.message.contains("RAMPART_TEST_UNSET_FENCE_PW"), "{e:?}");
    }
}
