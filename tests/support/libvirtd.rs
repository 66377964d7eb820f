//! A private, unprivileged `libvirtd` per instance, for tests: one independent hypervisor
//! (libvirt's test driver, and real qemu under TCG) shared by every process that connects.
//!
//! Debian 12's libvirt-daemon ships the monolithic `libvirtd` (no modular `virtqemud`). Run as
//! a normal user it is a session daemon: its state, sockets and qemu domains live under its own
//! `HOME` and `XDG_RUNTIME_DIR`. Each instance gets a fresh temporary directory with
//! - `libvirtd.conf`: `unix_sock_dir` in the directory (`sock/libvirt-sock`), no authentication,
//!   sockets open to everyone (the directory is private to the test);
//! - `home/.config/libvirt/qemu.conf`: `stdio_handler = "file"`, so qemu's output goes to a
//!   file and the daemon spawns no `virtlogd` (one process fewer to account for);
//! - `run/` as `XDG_RUNTIME_DIR` (qemu pid files land in `run/libvirt/qemu/run/NAME.pid`).
//!
//! When the tests run as root, the daemon runs as uid/gid 65534 (`setpriv`), so it can touch
//! nothing of the host's. Connect with [`Libvirtd::test_uri`]
//! (`test+unix:///default?socket=…`) or [`Libvirtd::qemu_uri`]
//! (`qemu+unix:///session?socket=…`). The test driver drops its state when its last
//! connection closes, so [`Libvirtd::start`] keeps one open: `virsh event --all --loop`, whose
//! output ([`Libvirtd::events_log`]) is a log of every lifecycle event.
//!
//! Processes are killed by PID: the holder, the daemon and any qemu it started (from their
//! pid files), on `Drop` (which runs when a test fails, too) and by [`Libvirtd::restart`].
//! The daemon runs under a small `sh` wrapper that waits on its stdin; if the test process
//! dies without dropping, the kernel closes that pipe and the wrapper kills the daemon and its
//! qemu processes. A missing `libvirtd` or `virsh` fails the test with what to install: these
//! tests never skip.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const LIBVIRTD: &str = "/usr/sbin/libvirtd";
/// How long a daemon gets to answer on its socket.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The unprivileged user the daemon runs as when the tests run as root.
const NOBODY: u32 = 65534;

pub struct Libvirtd {
    dir: tempfile::TempDir,
    daemon: Option<Daemon>,
    holder: Option<Child>,
}

struct Daemon {
    /// The daemon's own PID.
    pid: u32,
    /// The `sh` wrapper that started it in the background.
    wrapper: Child,
    /// Held open; closing it makes the wrapper kill the daemon.
    stdin: Option<ChildStdin>,
}

impl Libvirtd {
    /// A fresh daemon, answering, with a holder connection to its test driver.
    pub fn start() -> Libvirtd {
        require(LIBVIRTD, "libvirt-daemon");
        require_in_path("virsh", "libvirt-clients");
        let dir = tempfile::Builder::new()
            .prefix("rampart-libvirtd-")
            .tempdir()
            .expect("create a temporary directory");
        let root = dir.path();
        let as_root = unsafe { libc::geteuid() } == 0;
        for sub in ["home/.config/libvirt", "home/.cache", "run", "sock"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(
            root.join("libvirtd.conf"),
            format!(
                "unix_sock_dir = \"{}\"\nunix_sock_rw_perms = \"0777\"\nunix_sock_ro_perms = \"0777\"\n\
                 unix_sock_admin_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
                root.join("sock").display()
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("home/.config/libvirt/qemu.conf"),
            "stdio_handler = \"file\"\n",
        )
        .unwrap();
        set_mode(root, 0o755);
        set_mode(&root.join("run"), 0o700);
        if as_root {
            for sub in [
                "home",
                "home/.config",
                "home/.config/libvirt",
                "home/.config/libvirt/qemu.conf",
                "home/.cache",
                "run",
                "sock",
            ] {
                std::os::unix::fs::chown(root.join(sub), Some(NOBODY), Some(NOBODY))
                    .expect("chown the daemon's directories");
            }
        }
        let mut d = Libvirtd {
            dir,
            daemon: None,
            holder: None,
        };
        d.launch();
        d
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock/libvirt-sock")
    }

    /// libvirt's test driver in this daemon.
    pub fn test_uri(&self) -> String {
        format!("test+unix:///default?socket={}", self.socket().display())
    }

    /// Real qemu (session mode, TCG without `/dev/kvm`) in this daemon.
    pub fn qemu_uri(&self) -> String {
        format!("qemu+unix:///session?socket={}", self.socket().display())
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|d| d.pid)
    }

    /// Run `virsh -c URI ARGS...`.
    pub fn virsh(&self, uri: &str, args: &[&str]) -> Output {
        Command::new("virsh")
            .arg("-c")
            .arg(uri)
            .args(args)
            .env("LIBVIRT_AUTOSTART", "0")
            .stdin(Stdio::null())
            .output()
            .expect("run virsh")
    }

    /// `virsh` that must succeed; its stdout.
    pub fn virsh_ok(&self, uri: &str, args: &[&str]) -> String {
        let out = self.virsh(uri, args);
        assert!(
            out.status.success(),
            "virsh {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The holder's lifecycle event log.
    pub fn events_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("events.log")).unwrap_or_default()
    }

    /// The daemon's log (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("libvirtd.log")).unwrap_or_default()
    }

    /// PIDs of the qemu processes the daemon started, from their pid files.
    pub fn qemu_pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("run/libvirt/qemu/run")) else {
            return Vec::new();
        };
        entries
            .flatten()
            // `driver.pid` is the daemon's own lock file.
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter(|e| e.file_name() != "driver.pid")
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// Freeze the daemon (SIGSTOP): it keeps its sockets and answers nothing.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGSTOP);
        }
    }

    /// Let a frozen daemon go on (SIGCONT).
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGCONT);
        }
    }

    /// Kill the daemon (and the holder, and its qemu processes) and start a new one on the
    /// same socket: a libvirtd restart, as clients see it. The test driver's state is gone.
    pub fn restart(&mut self) {
        self.kill_all();
        self.launch();
    }

    fn launch(&mut self) {
        let root = self.dir.path().to_path_buf();
        let as_root = unsafe { libc::geteuid() } == 0;
        let _ = std::fs::remove_file(self.socket());
        // The wrapper starts the daemon in the background, prints its PID, and kills it (and
        // its qemu processes) when its stdin closes.
        let script = r#"dir="$1"; shift
"$@" >>"$dir/libvirtd.log" 2>&1 </dev/null & pid=$!
echo "$pid"
read _ignored
kill -9 "$pid" 2>/dev/null
for f in "$dir"/run/libvirt/qemu/run/*.pid; do
  case "$f" in */driver.pid) ;; *) [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null;; esac
done
exit 0"#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).arg("sh").arg(&root);
        if as_root {
            cmd.args([
                "setpriv",
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--",
            ]);
        }
        cmd.arg(LIBVIRTD)
            .arg("-f")
            .arg(root.join("libvirtd.conf"))
            .current_dir(&root)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", root.join("home"))
            .env("XDG_CONFIG_HOME", root.join("home/.config"))
            .env("XDG_CACHE_HOME", root.join("home/.cache"))
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut wrapper = cmd.spawn().expect("start sh to run libvirtd");
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read libvirtd's pid");
        let pid: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("libvirtd wrapper printed {line:?}, not a pid"));
        self.daemon = Some(Daemon {
            pid,
            wrapper,
            stdin,
        });
        self.wait_ready(pid);
        self.hold();
    }

    fn wait_ready(&self, pid: u32) {
        let started = Instant::now();
        loop {
            if self.socket().exists() {
                let out = self.virsh(&self.test_uri(), &["uri"]);
                if out.status.success() {
                    return;
                }
            }
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            assert!(
                alive,
                "libvirtd exited during startup; its log:\n{}",
                self.log()
            );
            assert!(
                started.elapsed() < READY_WITHIN,
                "libvirtd did not answer on {} within {READY_WITHIN:?}; its log:\n{}",
                self.socket().display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Keep one connection to the test driver open, logging lifecycle events.
    fn hold(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("events.log"))
            .expect("open the event log");
        let holder = Command::new("virsh")
            .arg("-c")
            .arg(self.test_uri())
            .args(["event", "--all", "--loop"])
            .env("LIBVIRT_AUTOSTART", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start virsh event as the holder connection");
        self.holder = Some(holder);
        // The holder counts once its connection is open and listening: define a probe
        // domain until the holder logs its event, then undefine it.
        let probe = "rampart-holder-probe";
        let xml = self.dir.path().join("probe.xml");
        std::fs::write(
            &xml,
            format!(
                "<domain type='test'><name>{probe}</name><memory>1024</memory>\
                 <os><type>hvm</type></os></domain>"
            ),
        )
        .unwrap();
        let started = Instant::now();
        loop {
            let xml = xml.display().to_string();
            self.virsh_ok(&self.test_uri(), &["define", &xml]);
            std::thread::sleep(Duration::from_millis(50));
            let seen = self.events_log().contains(probe);
            let _ = self.virsh(&self.test_uri(), &["undefine", probe]);
            if seen {
                return;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "the holder connection (virsh event) never saw an event; its log:\n{}",
                self.events_log()
            );
        }
    }

    fn kill_all(&mut self) {
        if let Some(mut h) = self.holder.take() {
            kill(h.id());
            let _ = h.wait();
        }
        let qemus = self.qemu_pids();
        if let Some(mut d) = self.daemon.take() {
            kill(d.pid);
            for q in qemus {
                kill(q);
            }
            drop(d.stdin.take());
            let _ = d.wrapper.wait();
        }
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn kill(pid: u32) {
    signal(pid, libc::SIGKILL);
}

fn signal(pid: u32, sig: libc::c_int) {
    if pid > 1 {
        // SAFETY: plain kill(2) on a PID this harness started (or read from its pid files).
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (--no-install-recommends)"
    );
}

fn require_in_path(bin: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` is not in PATH: install the Debian package {package}"
    );
}
