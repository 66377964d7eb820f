//! The in-memory coordination store against the behaviour the rest of Rampart relies on from
//! etcd: revisions, compare-and-swap, leases, watches, outages. Time is paused throughout;
//! leases expire because the tests advance the clock, never because they sleep.
//!
//! The test bodies shared with the etcd store are in tests/support/store_contract.rs; the ones
//! here are about what only the in-memory store has (simulated outages).

#[path = "support/store_contract.rs"]
mod contract;

use std::time::Duration;

use contract::Ctx;
use rampart::store::memory::MemoryStore;
use rampart::store::{Store, StoreError, WatchEvent, WatchResponse, WatchStream};
use tokio::time::{advance, timeout};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The next watch response, which must already be on its way: a millisecond of paused time is
/// enough for the store's tasks to run, and far shorter than any lease in these tests.
async fn next(watch: &mut WatchStream) -> WatchResponse {
    timeout(Duration::from_millis(1), watch.next())
        .await
        .expect("no watch response arrived")
        .expect("watch ended")
        .expect("watch failed")
}

/// The store-contract tests, each on a fresh store with paused time.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            contract::$name(&Ctx::paused(MemoryStore::new())).await;
        }
    )*};
}

contract_tests!(
    put_get_and_range_carry_revisions,
    versions_and_create_and_mod_revisions_follow_etcd,
    create_if_absent_succeeds_once,
    compare_and_swap_on_mod_revision_and_value,
    leader_guard_fails_after_leadership_changes,
    keep_alive_keeps_leased_keys,
    expiry_deletes_keys_and_watchers_see_it_without_any_call,
    keep_alive_after_expiry_fails_for_good,
    revoke_deletes_keys_at_once,
    watch_replays_history_then_streams_live_changes_in_order,
    a_txn_without_writes_keeps_the_revision,
    all_writes_of_a_txn_share_one_revision_and_reads_see_them,
    refuses_what_etcd_refuses,
    put_on_a_dead_lease_writes_nothing,
    value_compare_on_absent_key_is_always_false,
    moving_a_key_to_another_lease_detaches_it_from_the_first,
);

#[tokio::test(start_paused = true)]
async fn watch_from_a_compacted_revision_fails() {
    // Five events of history: revisions 6..=10 are kept after ten puts.
    contract::watch_from_a_compacted_revision_fails(&Ctx::paused(MemoryStore::with_history_limit(
        5,
    )))
    .await;
}

#[tokio::test(start_paused = true)]
async fn outage_fails_calls_with_a_retryable_error_and_recovery_works() {
    let store = MemoryStore::new();
    let lease = store.grant_lease(secs(5)).await.unwrap();
    store
        .put(b"nodes/hv1/alive", b"", Some(lease))
        .await
        .unwrap();
    let mut watch = store.watch(b"", None).await.unwrap();

    store.set_available(false);
    assert!(!store.is_available());
    let errors = [
        store.get(b"nodes/hv1/alive").await.unwrap_err(),
        store.put(b"x", b"", None).await.unwrap_err(),
        store.keep_alive(lease).await.unwrap_err(),
        store.grant_lease(secs(5)).await.unwrap_err(),
        store.watch(b"", None).await.map(|_| ()).unwrap_err(),
        store.current_revision().await.unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert!(err.is_retryable());
    }
    // An open watch is told, then ends: its owner must watch again after recovery.
    let told = timeout(Duration::from_millis(1), watch.next())
        .await
        .unwrap();
    assert!(
        matches!(told, Some(Err(StoreError::Unavailable { .. }))),
        "{told:?}"
    );
    assert!(watch.next().await.is_none());

    // Much longer than the TTL; as with etcd, leases do not run out while the store is down,
    // and come back with their full TTL.
    advance(secs(60)).await;
    store.set_available(true);
    assert!(store.get(b"nodes/hv1/alive").await.unwrap().is_some());
    assert_eq!(
        store.lease_time_to_live(lease).await.unwrap(),
        Some(secs(5))
    );
    assert_eq!(
        store.current_revision().await.unwrap(),
        1,
        "nothing was written during the outage"
    );

    let mut watch = store.watch(b"", Some(2)).await.unwrap();
    store.put(b"x", b"", None).await.unwrap();
    assert_eq!(next(&mut watch).await.revision, 2);

    // Without renewal after recovery, the lease does run out.
    advance(secs(5)).await;
    assert_eq!(
        next(&mut watch).await.events,
        vec![WatchEvent::Delete {
            key: b"nodes/hv1/alive".to_vec(),
            revision: 3
        }]
    );
}
