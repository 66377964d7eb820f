//! Where the store's leader runs. In the usual cluster of two hypervisors and a witness, each
//! with an etcd member, the etcd leader is on a hypervisor two times in three. A hypervisor is
//! what fails and gets fenced; when its member led the store, its death costs an election, and
//! etcd's new leader renews every lease for a full TTL plus an election timeout, so the dead
//! node's lease — and with it the failover — runs out that much later (measured at lease TTL
//! 1 s: about 2.5–3 s of outage instead of about 1.5 s). So the leading controller hands the
//! store's leadership to a witness's member when a hypervisor's member leads.
//!
//! Members are matched to nodes by name: the etcd member of a node is named like the Node.

use std::sync::Arc;
use std::time::Duration;

use crate::model::Desired;
use crate::store::{Members, Store};

/// How often the leading controller looks at where the store's leader is.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The member that should lead the store instead of the current leader: a witness's (the
/// first by name), when a hypervisor's member leads. Only when every started member answers:
/// a transfer to a member that is down or behind stalls the store's writes until it gives up
/// (an election timeout), and while a member is down a failover may be under way, whose dead
/// node's lease a second leader change would renew once more. `None` when the leader is where
/// it should be, when nothing leads, or when no witness has a member.
pub fn preferred_leader(d: &Desired, m: &Members) -> Option<String> {
    let leader = m.leader.as_deref()?;
    if !d.nodes.get(leader).is_some_and(|n| n.is_hypervisor()) {
        return None;
    }
    if m.names.iter().any(|n| !m.answering.contains(n)) {
        return None;
    }
    d.store_members()
        .filter(|n| !n.is_hypervisor())
        .map(|n| n.name.clone())
        .find(|w| m.answering.iter().any(|x| x == w))
}

/// After a move that failed, how long before the next try.
pub const AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Look once, and move the leadership if [`preferred_leader`] says so. Says what it did, for
/// the controller's events (`Err` when the move failed); `None` when there was nothing to do.
pub async fn place(store: Arc<dyn Store>, d: Arc<Desired>) -> Option<Result<String, String>> {
    let members = match store.members().await {
        Ok(Some(m)) => m,
        Ok(None) | Err(_) => return None,
    };
    let to = preferred_leader(&d, &members)?;
    let from = members.leader.unwrap_or_default();
    Some(match store.move_leader(&to).await {
        Ok(()) => Ok(format!(
            "moved the store's leadership from {from}'s member to {to}'s: a failing hypervisor must not also cost the store an election"
        )),
        Err(e) => Err(format!(
            "cannot move the store's leadership from {from}'s member to {to}'s (next try in {}s): {e}",
            AFTER_FAILURE.as_secs()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(leader: Option<&str>, names: &[&str]) -> Members {
        Members {
            leader: leader.map(str::to_string),
            names: names.iter().map(|s| s.to_string()).collect(),
            answering: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_hypervisor_leading_hands_over_to_the_witness() {
        // The reference cluster: alpha and beta (hypervisors), witness.
        let d = crate::model::reference_desired();
        let all = ["alpha", "beta", "witness"];
        assert_eq!(
            preferred_leader(&d, &members(Some("alpha"), &all)),
            Some("witness".to_string())
        );
        assert_eq!(
            preferred_leader(&d, &members(Some("beta"), &all)),
            Some("witness".to_string())
        );
        // Already there, nobody leads, or the witness's member is not started: nothing to do.
        assert_eq!(preferred_leader(&d, &members(Some("witness"), &all)), None);
        assert_eq!(preferred_leader(&d, &members(None, &all)), None);
        assert_eq!(
            preferred_leader(&d, &members(Some("alpha"), &["alpha", "beta"])),
            None
        );
        // A member named like no node is left alone.
        assert_eq!(preferred_leader(&d, &members(Some("etcd-7"), &all)), None);
        // Not while any member does not answer: the witness's (a transfer to it would stall
        // the store), or a hypervisor's (a failover may be under way).
        for silent in ["witness", "beta"] {
            let mut m = members(Some("alpha"), &all);
            m.answering.retain(|n| n != silent);
            assert_eq!(preferred_leader(&d, &m), None, "{silent} silent");
        }
    }
}
