//! The long-running `drbdsetup events2` observer: one child process streaming every DRBD state
//! change, parsed line by line into an [`Events2State`], published through a
//! [`tokio::sync::watch`] channel whenever the observed model changes.
//!
//! The child runs `drbdsetup events2 all --full`: the current state as `exists` lines, the
//! `exists -` marker, then every change (`--full` writes complete objects on change events and
//! includes the statistics, so `out-of-sync` is there). DRBD sends no event when only a
//! statistic changes; with [`Events2Options::poll_interval`] the observer adds `--poll` and
//! writes `n` to the child's stdin that often, which makes drbdsetup fetch the state and print
//! what changed (the resync progress). Nothing is published before the first `exists -`.
//!
//! When the child exits (module reloaded, drbdsetup killed), the snapshot is withdrawn (`None`)
//! and the child is restarted with exponential backoff; each restart starts from a fresh
//! `exists` dump. Dropping the observer kills the child (its whole process group) and joins the
//! supervisor thread. Built on `std::process` and threads: it needs no tokio `process` feature
//! and no runtime.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::command::kill_group;
use super::events2::Events2State;
use crate::model::DrbdObserved;

/// The observed DRBD resources, once the initial state is complete; `None` while the child is
/// (re)starting.
pub type Snapshot = Option<Arc<BTreeMap<String, DrbdObserved>>>;

#[derive(Debug, Clone)]
pub struct Events2Options {
    /// The `drbdsetup` program.
    pub drbdsetup: PathBuf,
    /// Its arguments; default `events2 all --full`.
    pub args: Vec<OsString>,
    /// Ask for a fresh state this often (`--poll` and `n` on stdin), to follow statistics such
    /// as the resync progress. `None`: changes only.
    pub poll_interval: Option<Duration>,
    /// First wait before restarting a child that exited; doubled up to `backoff_max`, and reset
    /// once a child has run for a minute.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for Events2Options {
    fn default() -> Self {
        Events2Options {
            drbdsetup: PathBuf::from("drbdsetup"),
            args: ["events2", "all", "--full"].map(OsString::from).to_vec(),
            poll_interval: Some(Duration::from_secs(5)),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

struct Shared {
    stop: AtomicBool,
    pid: Mutex<Option<libc::pid_t>>,
    starts: AtomicU64,
    supervisor: Mutex<Option<std::thread::Thread>>,
}

/// A running `drbdsetup events2` child and the state it reports. Killed when dropped.
pub struct Events2Observer {
    rx: watch::Receiver<Snapshot>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Events2Observer {
    /// Start the child (and restart it whenever it exits) until dropped.
    pub fn spawn(opts: Events2Options) -> Events2Observer {
        let (tx, rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            pid: Mutex::new(None),
            starts: AtomicU64::new(0),
            supervisor: Mutex::new(None),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("drbd-events2".into())
            .spawn(move || {
                *s.supervisor.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(std::thread::current());
                supervise(&opts, &s, &tx);
            })
            .expect("spawn the drbd-events2 thread");
        Events2Observer {
            rx,
            shared,
            thread: Some(thread),
        }
    }

    /// The current snapshot (`None` until the first complete initial state, and while the
    /// child restarts).
    pub fn current(&self) -> Snapshot {
        self.rx.borrow().clone()
    }

    /// A receiver that is notified on every change of the snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.rx.clone()
    }

    /// How many times a child was started (1 + restarts).
    pub fn starts(&self) -> u64 {
        self.shared.starts.load(Ordering::SeqCst)
    }

    /// The current child's process id, if one runs.
    pub fn child_pid(&self) -> Option<u32> {
        self.shared
            .pid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|p| p as u32)
    }
}

impl Drop for Events2Observer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(pid) = *self.shared.pid.lock().unwrap_or_else(|e| e.into_inner()) {
            kill_group(pid);
        }
        if let Some(t) = self
            .shared
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            t.unpark();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn supervise(opts: &Events2Options, shared: &Shared, tx: &watch::Sender<Snapshot>) {
    let mut backoff = opts.backoff_initial;
    while !shared.stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        shared.starts.fetch_add(1, Ordering::SeqCst);
        match run_once(opts, shared, tx) {
            Ok(()) => tracing::warn!("drbdsetup events2 exited; restarting"),
            Err(e) => tracing::warn!("drbdsetup events2: {e}; restarting"),
        }
        tx.send_if_modified(|cur| cur.take().is_some());
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = opts.backoff_initial;
        }
        let until = Instant::now() + backoff;
        while !shared.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::park_timeout(until - now);
        }
        backoff = (backoff * 2).min(opts.backoff_max);
    }
}

fn run_once(
    opts: &Events2Options,
    shared: &Shared,
    tx: &watch::Sender<Snapshot>,
) -> std::io::Result<()> {
    let mut cmd = Command::new(&opts.drbdsetup);
    cmd.args(&opts.args);
    if opts.poll_interval.is_some() {
        cmd.arg("--poll").stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    let mut child = {
        // Hold the pid lock while spawning so Drop either sees the pid or sees `stop` after.
        let mut pid = shared.pid.lock().unwrap_or_else(|e| e.into_inner());
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env("LC_ALL", "C")
            .process_group(0)
            .spawn()?;
        *pid = Some(child.id() as libc::pid_t);
        child
    };
    let pid = child.id() as libc::pid_t;
    if let (Some(interval), Some(mut stdin)) = (opts.poll_interval, child.stdin.take()) {
        std::thread::spawn(move || loop {
            std::thread::sleep(interval);
            if stdin.write_all(b"n\n").and_then(|_| stdin.flush()).is_err() {
                break;
            }
        });
    }
    let mut state = Events2State::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if state.apply_line(&line) && state.initial_done() {
                let observed = state.observed();
                tx.send_if_modified(|cur| {
                    if cur.as_deref() == Some(&observed) {
                        false
                    } else {
                        *cur = Some(Arc::new(observed));
                        true
                    }
                });
            }
        }
    }
    kill_group(pid);
    let status = child.wait();
    *shared.pid.lock().unwrap_or_else(|e| e.into_inner()) = None;
    status.map(|s| tracing::debug!("drbdsetup events2 ended: {s}"))
}
