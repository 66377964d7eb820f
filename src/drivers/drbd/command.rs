//! Running drbd-utils commands: every command has a timeout and is killed (with its whole
//! process group: drbdadm runs drbdsetup and drbdmeta as children) when it runs over; stdin is
//! `/dev/null`, so a tool that asks for confirmation (`create-md` finding a file system) gets
//! no answer and refuses instead of proceeding; output is scrubbed of shared secrets before it
//! is kept anywhere.
//!
//! Built on `std::process` and a blocking thread, so it needs no tokio `process` feature.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What a finished command left behind. `stdout` and `stderr` are already scrubbed.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }
    /// `exit 10`, or `killed by signal 9`.
    pub fn describe_status(&self) -> String {
        match (self.status.code(), self.status.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown exit status".to_string(),
        }
    }
}

/// Why a command gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The program could not be started (not installed, not executable).
    Spawn(String),
    /// It ran longer than its timeout and was killed.
    Timeout(Duration),
}

/// Run `argv` (program first) to completion or until `timeout`, then kill its process group.
/// `secrets` are replaced by `<redacted>` in the captured output.
pub fn run_blocking(
    argv: &[OsString],
    timeout: Duration,
    secrets: &[String],
) -> Result<Finished, RunError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| RunError::Spawn("empty command".to_string()))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        // Its own process group, so a timeout kills drbdadm's children too.
        .process_group(0)
        .spawn()
        .map_err(|e| RunError::Spawn(format!("cannot run {}: {e}", program.to_string_lossy())))?;
    let pid = child.id() as libc::pid_t;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    });
    // The waiter owns the child: the pid cannot be reused before it is reaped, so killing
    // by pid below never hits another process.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let (status, timed_out) = match rx.recv_timeout(timeout) {
        Ok(status) => (status, false),
        Err(_) => {
            kill_group(pid);
            (
                rx.recv()
                    .unwrap_or_else(|_| Err(std::io::Error::other("lost"))),
                true,
            )
        }
    };
    // A grandchild that keeps the pipes open must not hang us after the kill.
    kill_group(pid);
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if timed_out {
        return Err(RunError::Timeout(timeout));
    }
    let status = status.map_err(|e| RunError::Spawn(format!("waiting for the command: {e}")))?;
    Ok(Finished {
        status,
        stdout: scrub(&String::from_utf8_lossy(&stdout), secrets),
        stderr: scrub(&String::from_utf8_lossy(&stderr), secrets),
    })
}

/// SIGKILL to the process group led by `pid` (ignored if it is gone).
pub fn kill_group(pid: libc::pid_t) {
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// `text` with every known secret value, and the value of every `--shared-secret=` option
/// (drbdadm prints the failing drbdsetup command line, secret included), replaced by
/// `<redacted>`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "<redacted>");
    }
    const OPT: &str = "--shared-secret";
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find(OPT) {
        let after = &rest[i + OPT.len()..];
        let Some(sep) = after.chars().next().filter(|c| *c == '=' || *c == ' ') else {
            result.push_str(&rest[..i + OPT.len()]);
            rest = after;
            continue;
        };
        result.push_str(&rest[..i + OPT.len()]);
        result.push(sep);
        let value = &after[1..];
        // The value runs to the next unescaped blank or the end of the line; drbdadm escapes
        // blanks in arguments with a backslash.
        let mut end = value.len();
        let mut escaped = false;
        for (j, c) in value.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                c if c.is_whitespace() || c == '\'' => {
                    end = j;
                    break;
                }
                _ => {}
            }
        }
        result.push_str("<redacted>");
        rest = &value[end..];
    }
    result.push_str(rest);
    result
}

/// The line of a tool's stderr that says what went wrong: the last line that is not noise
/// (`modinfo` missing, "Command '...' terminated with exit code N" wrappers), or the last line.
pub fn meaningful_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let noise = |l: &str| {
        l.contains("modinfo: not found")
            || l.contains("modprobe: not found")
            || (l.starts_with("Command '") && l.contains("terminated with exit code"))
            || l.starts_with("additional info from kernel")
    };
    lines
        .iter()
        .rev()
        .find(|l| !noise(l))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// A command line as people read it (for errors and the transcript): arguments with blanks
/// quoted. Callers never put a secret on a command line.
pub fn display_argv(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let s = a.to_string_lossy();
            if s.is_empty() || s.contains(char::is_whitespace) {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn scrub_hides_values_and_shared_secret_options() {
        let s = vec!["hunter2".to_string()];
        let cases = [
            ("x hunter2 y", "x <redacted> y"),
            (
                "Command 'drbdsetup new-peer r0 1 --_name=b --shared-secret=te\\ st --protocol=C' terminated",
                "Command 'drbdsetup new-peer r0 1 --_name=b --shared-secret=<redacted> --protocol=C' terminated",
            ),
            ("--shared-secret=abc\nnext", "--shared-secret=<redacted>\nnext"),
            ("--shared-secret=zzz'", "--shared-secret=<redacted>'"),
            ("--shared-secretary", "--shared-secretary"),
            ("nothing here", "nothing here"),
        ];
        for (input, want) in cases {
            assert_eq!(scrub(input, &s), want, "{input}");
        }
    }

    #[test]
    fn meaningful_line_skips_noise() {
        let e = "sh: 1: modinfo: not found\nnew-peer: failure\nCommand 'x' terminated with exit code 10\n";
        assert_eq!(meaningful_line(e), "new-peer: failure");
        assert_eq!(meaningful_line(""), "");
        assert_eq!(
            meaningful_line("sh: 1: modinfo: not found\n"),
            "sh: 1: modinfo: not found"
        );
    }

    #[test]
    fn runs_captures_and_kills_on_timeout() {
        let ok = run_blocking(
            &argv(&["sh", "-c", "echo out; echo err hunter2 >&2; exit 3"]),
            Duration::from_secs(10),
            &["hunter2".into()],
        )
        .unwrap();
        assert_eq!(ok.status.code(), Some(3));
        assert_eq!(ok.stdout, "out\n");
        assert_eq!(ok.stderr, "err <redacted>\n");
        assert_eq!(ok.describe_status(), "exit 3");

        // A child that outlives its parent shell still dies with the group.
        let start = Instant::now();
        let err = run_blocking(
            &argv(&["sh", "-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(200),
            &[],
        )
        .unwrap_err();
        assert_eq!(err, RunError::Timeout(Duration::from_millis(200)));
        assert!(start.elapsed() < Duration::from_secs(5));

        let err = run_blocking(
            &argv(&["/nonexistent/drbdadm"]),
            Duration::from_secs(1),
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Spawn(m) if m.contains("/nonexistent/drbdadm")));
    }
}
