//! Running driver code inside another network namespace.
//!
//! On Linux the network namespace belongs to a thread, and a socket belongs to the namespace of
//! the thread that created it. [`NetnsThread`] is a std thread that enters a namespace
//! (`setns(CLONE_NEWNET)`) once and then runs futures on its own current-thread tokio runtime:
//! the netlink and packet sockets the address driver creates there live in that namespace,
//! whichever runtime awaits the result. Tests and the multi-host harness run one per simulated
//! host; production runs the driver in the agent's own namespace and needs none.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::drivers::DriverError;

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// `/run/netns/NAME` for a bare name (as `ip netns add NAME` makes), the path itself for
/// anything with a `/` (e.g. `/proc/PID/ns/net`).
pub fn netns_path(netns: &str) -> PathBuf {
    if netns.contains('/') {
        PathBuf::from(netns)
    } else {
        Path::new("/run/netns").join(netns)
    }
}

/// A thread inside a network namespace that runs the futures handed to it.
/// Dropping it stops the thread (futures still running there are dropped).
pub struct NetnsThread {
    netns: PathBuf,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NetnsThread {
    /// Start a thread in `netns` (a name under /run/netns, or a path). Fails if the namespace
    /// cannot be opened or entered (needs CAP_SYS_ADMIN).
    pub fn spawn(netns: &str) -> io::Result<NetnsThread> {
        let path = netns_path(netns);
        let file = File::open(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("open network namespace {}: {e}", path.display()),
            )
        })?;
        let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name(format!(
                "netns {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ))
            .spawn(move || {
                // SAFETY: setns on an open namespace file; affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = io::Error::last_os_error();
                    let _ = ready_tx.send(Err(io::Error::new(
                        e.kind(),
                        format!("enter network namespace {shown}: {e}"),
                    )));
                    return;
                }
                drop(file);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    while let Some(job) = jobs_rx.recv().await {
                        tokio::task::spawn_local(job());
                    }
                });
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(NetnsThread {
                netns: path,
                jobs: Some(jobs_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other(
                    "network namespace thread died while starting",
                ))
            }
        }
    }

    /// The namespace this thread is in.
    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// Build a future with `make` on the namespace thread, run it there, and return its output.
    /// The future need not be `Send`; `make` and the output must be.
    pub async fn run<F, Fut, T>(&self, make: F) -> Result<T, DriverError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let stopped = || {
            DriverError::new(
                "network namespace",
                format!("the thread in {} has stopped", self.netns.display()),
            )
        };
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _ = tx.send(make().await);
            })
        });
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        self.jobs = None; // closes the channel: the thread's loop ends
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// Run one future inside `netns` (see [`NetnsThread`]): a thread is started for it and stopped
/// after.
pub async fn run_in_netns<F, Fut, T>(netns: &str, make: F) -> Result<T, DriverError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let thread = NetnsThread::spawn(netns)
        .map_err(|e| DriverError::new("network namespace", e.to_string()))?;
    thread.run(make).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(netns_path("a"), PathBuf::from("/run/netns/a"));
        assert_eq!(
            netns_path("/proc/1/ns/net"),
            PathBuf::from("/proc/1/ns/net")
        );
    }

    #[tokio::test]
    async fn runs_in_own_namespace() {
        // Our own namespace, entered again: needs no setup, and shows the thread works.
        let t = NetnsThread::spawn("/proc/self/ns/net").expect("setns needs root");
        let v = t.run(|| async { 6 * 7 }).await.unwrap();
        assert_eq!(v, 42);
        drop(t);
    }

    #[test]
    fn missing_namespace_is_a_clear_error() {
        let e = NetnsThread::spawn("rampart-no-such-netns").err().unwrap();
        assert!(
            e.to_string().contains("/run/netns/rampart-no-such-netns"),
            "{e}"
        );
    }
}
