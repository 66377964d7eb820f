//! The node's watchdog: the backstop that makes the self-fence deadline (lease expiry plus the
//! watchdog timeout, safety rule S2) true even when the agent cannot stop its resources.
//!
//! Linux watchdog devices (`/dev/watchdog`, a BMC's or the `softdog` module's) arm when opened;
//! every write feeds them; if no write comes for the timeout, the node resets. Writing the
//! magic character `V` before closing disarms them (`CONFIG_WATCHDOG_NOWAYOUT` aside).
//!
//! The agent feeds while its lease is healthy, and after losing it only while its host is
//! verified clean (its self-demotion stopped everything: nothing it could still hold may run
//! elsewhere twice). When it cannot make the host clean in time — a VM that will not stop, a
//! volume that will not demote, an agent hung in the kernel — it stops feeding and the node
//! resets itself before the controller's deadline lets its work move.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::drivers::config::ConfigHandle;

/// An open (armed) watchdog device.
#[derive(Debug)]
pub struct Watchdog {
    path: PathBuf,
    file: File,
}

impl Watchdog {
    /// Open (and so arm) the device.
    pub fn open(path: &Path) -> std::io::Result<Watchdog> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Watchdog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Feed: the node lives for another timeout.
    pub fn feed(&mut self) -> std::io::Result<()> {
        self.file.write_all(b"\0")?;
        self.file.flush()
    }

    /// Disarm (magic close) and close: for an orderly stop of the agent.
    pub fn disarm(mut self) -> std::io::Result<()> {
        self.file.write_all(b"V")?;
        self.file.flush()
    }
}

/// Whether the agent may feed: set by the work loop.
#[derive(Debug, Default, Clone)]
pub struct FeedGate {
    /// The host is verified clean after a self-demotion.
    pub clean: Arc<AtomicBool>,
}

/// How often to feed a watchdog with this timeout: three times per timeout, at most once per
/// 10 ms.
pub fn feed_interval(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_millis(10))
}

/// The pure decision: feed while the lease is healthy, or while the host is verified clean.
pub fn may_feed(lease_until: Option<Option<Instant>>, now: Instant, clean: bool) -> bool {
    let healthy = matches!(lease_until, Some(Some(t)) if now < t);
    healthy || clean
}

/// Feed the watchdog the node's configuration names, as [`may_feed`] allows, until `stop`.
/// Opens the device the first time a configuration names one; on `stop` disarms it (an
/// orderly shutdown of the agent is not a failure to reset for).
pub async fn run(
    config: ConfigHandle,
    lease_until: watch::Receiver<Option<Option<Instant>>>,
    gate: FeedGate,
    mut stop: watch::Receiver<bool>,
) {
    let mut dog: Option<Watchdog> = None;
    // Until a configuration names a device, look for one this often.
    let mut interval = Duration::ZERO;
    let mut reported = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = stop.changed() => if r.is_err() {
                // The agent is gone without an orderly stop: leave the device armed (and
                // unfed) so the node resets unless someone else takes over.
                return;
            }
        }
        if *stop.borrow() {
            if let Some(d) = dog.take() {
                let path = d.path().to_path_buf();
                if let Err(e) = d.disarm() {
                    tracing::warn!(device = %path.display(), error = %e, "cannot disarm the watchdog");
                }
            }
            return;
        }
        let cfg = config.get();
        let Some(w) = cfg.watchdog.as_ref() else {
            interval = Duration::from_millis(200);
            continue;
        };
        interval = feed_interval(Duration::from_millis(w.timeout_ms));
        if dog.is_none() {
            match Watchdog::open(Path::new(&w.device)) {
                Ok(d) => {
                    tracing::info!(device = %w.device, "watchdog armed");
                    dog = Some(d);
                }
                Err(e) => {
                    if !reported {
                        tracing::error!(device = %w.device, error = %e, "cannot open the watchdog device; this node has no self-fencing backstop");
                        reported = true;
                    }
                    continue;
                }
            }
        }
        let clean = gate.clean.load(Ordering::Relaxed);
        if may_feed(*lease_until.borrow(), Instant::now(), clean) {
            if let Some(d) = dog.as_mut() {
                if let Err(e) = d.feed() {
                    tracing::error!(device = %w.device, error = %e, "cannot feed the watchdog");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_only_while_healthy_or_clean() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let earlier = now - Duration::from_millis(1);
        // Before the first lease attempt, and without a lease: only when clean.
        assert!(!may_feed(None, now, false));
        assert!(!may_feed(Some(None), now, false));
        assert!(may_feed(Some(None), now, true));
        assert!(may_feed(Some(Some(later)), now, false));
        assert!(!may_feed(Some(Some(earlier)), now, false));
        assert!(may_feed(Some(Some(earlier)), now, true));
        assert_eq!(
            feed_interval(Duration::from_secs(9)),
            Duration::from_secs(3)
        );
        assert_eq!(feed_interval(Duration::ZERO), Duration::from_millis(10));
    }

    #[test]
    fn feeds_and_disarms_a_device_file() {
        // A regular file stands in for the device: the kernel's softdog is not available on
        // the test machines. It records what a device would receive.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("watchdog");
        std::fs::write(&p, b"").unwrap();
        let mut d = Watchdog::open(&p).unwrap();
        d.feed().unwrap();
        d.feed().unwrap();
        d.disarm().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"\0\0V");
    }

    #[tokio::test]
    async fn stops_feeding_when_the_lease_is_lost_and_the_host_is_not_clean() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("watchdog");
        std::fs::write(&p, b"").unwrap();
        let config = ConfigHandle::new(crate::drivers::config::HostConfig {
            watchdog: Some(crate::drivers::config::WatchdogConfig {
                device: p.display().to_string(),
                timeout_ms: 60,
            }),
            ..Default::default()
        });
        let (lease_tx, lease_rx) =
            watch::channel(Some(Some(Instant::now() + Duration::from_secs(60))));
        let gate = FeedGate::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(config, lease_rx, gate.clone(), stop_rx));
        let size = || std::fs::metadata(&p).unwrap().len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(size() >= 2, "fed while the lease is healthy: {}", size());
        // The lease is lost and the host is not clean: no more feeding.
        lease_tx.send(Some(None)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped_at = size();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(size(), stopped_at, "fed without a lease on an unclean host");
        // The self-demotion finished: the host is clean, feeding resumes.
        gate.clean.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(size() > stopped_at);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap().last(),
            Some(&b'V'),
            "disarmed on an orderly stop"
        );
    }
}
