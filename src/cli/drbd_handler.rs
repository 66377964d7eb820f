//! `rampart drbd-fence-peer` and `rampart drbd-unfence-peer`: the handlers DRBD runs for a
//! resource with `fencing resource-and-stonith` (the rendered `.res` files name them).
//!
//! When a Primary loses its peer, DRBD freezes I/O and runs `fence-peer`. The handler asks
//! the cluster to fence the peer (a request under `fence-requests/PEER`), waits for the
//! leading controller's answer in the peer's fence record, and exits 7 ("peer fenced") only on
//! a confirmed power-off. Anything else — a failed fence, no answer in time, no store — exits 1,
//! which keeps I/O frozen: a Primary that cannot be sure its peer is gone must not write on.
//! `unfence-peer` runs when the peer is back and in sync: it withdraws the request.

use std::path::Path;
use std::time::Duration;

use super::admin::{connect, unix_now};
use crate::drivers::drbd::fence_peer::{parse_fence_peer_env, FencePeerExit};
use crate::model::FenceAttempt;
use crate::store::cluster::FenceRequestRecord;

/// Where the store URL is read from when neither `--store` nor RAMPART_STORE gives it:
/// handlers run from the kernel with an almost empty environment.
pub const STORE_FILE: &str = "/etc/rampart/store";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store [default: $RAMPART_STORE, else the first line of /etc/rampart/store].
    #[arg(long, value_name = "URL", env = "RAMPART_STORE")]
    pub store: Option<String>,
    /// How long to wait for the controller's answer.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// This node's name [default: DRBD's name for it, else the host name].
    #[arg(long)]
    pub node: Option<String>,
}

fn store_url(args: &Args) -> Result<String, String> {
    if let Some(s) = &args.store {
        return Ok(s.clone());
    }
    let text = std::fs::read_to_string(Path::new(STORE_FILE)).map_err(|e| {
        format!("no store given: pass --store, set RAMPART_STORE, or write the URL into {STORE_FILE} ({e})")
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| format!("{STORE_FILE} holds no store URL"))
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The decision, pure: what the peer's fence record says about a request made at `asked`.
/// A confirmed fence counts if it came after the request, or if the peer has held no lease
/// since (the record is cleared when a fenced node comes back, so a node without a lease and
/// with a confirmed fence on record has been off ever since).
pub fn answer(
    attempts: &[FenceAttempt],
    asked: crate::model::Time,
    peer_has_lease: bool,
) -> Option<FencePeerExit> {
    if !peer_has_lease && attempts.iter().any(|a| a.ok) {
        return Some(FencePeerExit::PeerFenced);
    }
    let after: Vec<&FenceAttempt> = attempts.iter().filter(|a| a.at >= asked).collect();
    if after.iter().any(|a| a.ok) {
        Some(FencePeerExit::PeerFenced)
    } else if !after.is_empty() {
        Some(FencePeerExit::Failed)
    } else {
        None
    }
}

pub fn fence_peer(args: Args) -> u8 {
    let code = |e: FencePeerExit| e.code() as u8;
    let req = match parse_fence_peer_env(std::env::vars()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rampart drbd-fence-peer: {e}");
            return code(FencePeerExit::Failed);
        }
    };
    let me = args
        .node
        .clone()
        .or_else(|| req.my_node.clone())
        .or_else(host_name)
        .unwrap_or_default();
    let url = match store_url(&args) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("rampart drbd-fence-peer: {e}");
            return code(FencePeerExit::Failed);
        }
    };
    let cs = match connect(&url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart drbd-fence-peer: {e}");
            return code(FencePeerExit::Failed);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rampart drbd-fence-peer: {e}");
            return code(FencePeerExit::Failed);
        }
    };
    rt.block_on(async move {
        let asked = unix_now();
        for peer in &req.peers {
            let record = FenceRequestRecord {
                by: me.clone(),
                resource: req.resource.clone(),
                at: asked,
            };
            if let Err(e) = cs.put(&cs.fence_request_key(peer), &record, None).await {
                eprintln!("rampart drbd-fence-peer: cannot ask the cluster to fence {peer}: {e}; I/O stays frozen");
                return code(FencePeerExit::Failed);
            }
            eprintln!(
                "rampart drbd-fence-peer: {me} lost peer {peer} of resource {}; asked the cluster to fence it",
                req.resource
            );
        }
        let deadline = tokio::time::Instant::now() + args.timeout;
        let mut pending: Vec<&String> = req.peers.iter().collect();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for peer in pending {
                let attempts: Vec<FenceAttempt> =
                    match cs.get(&cs.fence_key(peer)).await {
                        Ok(a) => a.unwrap_or_default(),
                        Err(_) => Vec::new(),
                    };
                let has_lease = !matches!(cs.store.get(&cs.lease_key(peer)).await, Ok(None));
                match answer(&attempts, asked, has_lease) {
                    Some(FencePeerExit::PeerFenced) => {
                        eprintln!("rampart drbd-fence-peer: {peer} is fenced");
                    }
                    Some(other) => {
                        let why = attempts
                            .iter()
                            .rev()
                            .find_map(|a| a.error.clone())
                            .unwrap_or_default();
                        eprintln!("rampart drbd-fence-peer: fencing {peer} FAILED ({why}); I/O stays frozen");
                        return code(other);
                    }
                    None => still.push(peer),
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "rampart drbd-fence-peer: no answer from the cluster within {:?}; I/O stays frozen",
                    args.timeout
                );
                return code(FencePeerExit::Failed);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        code(FencePeerExit::PeerFenced)
    })
}

pub fn unfence_peer(args: Args) -> u8 {
    let req = match parse_fence_peer_env(std::env::vars()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rampart drbd-unfence-peer: {e}");
            return 1;
        }
    };
    let cs = match store_url(&args).and_then(|u| connect(&u)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart drbd-unfence-peer: {e}");
            return 1;
        }
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 1;
    };
    rt.block_on(async move {
        for peer in &req.peers {
            if let Err(e) = cs.store.delete(&cs.fence_request_key(peer)).await {
                eprintln!(
                    "rampart drbd-unfence-peer: cannot withdraw the fence request for {peer}: {e}"
                );
                return 1;
            }
        }
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Time;

    fn attempt(at: u64, ok: bool) -> FenceAttempt {
        FenceAttempt {
            level: 1,
            device: "ipmi".into(),
            at: Time(at),
            ok,
            error: (!ok).then(|| "no answer".into()),
        }
    }

    #[test]
    fn only_an_attempt_after_the_request_answers_it() {
        assert_eq!(answer(&[], Time(10), true), None);
        // An old success says nothing about a peer that holds a lease now.
        assert_eq!(answer(&[attempt(5, true)], Time(10), true), None);
        // ... but a peer without a lease since a confirmed fence is still off.
        assert_eq!(
            answer(&[attempt(5, true)], Time(10), false),
            Some(FencePeerExit::PeerFenced)
        );
        assert_eq!(answer(&[attempt(5, false)], Time(10), false), None);
        assert_eq!(
            answer(&[attempt(10, true)], Time(10), true),
            Some(FencePeerExit::PeerFenced)
        );
        assert_eq!(
            answer(&[attempt(11, false)], Time(10), true),
            Some(FencePeerExit::Failed)
        );
        // Level 1 failed, level 2 confirmed.
        assert_eq!(
            answer(&[attempt(11, false), attempt(12, true)], Time(10), true),
            Some(FencePeerExit::PeerFenced)
        );
    }
}
