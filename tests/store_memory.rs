//! The in-memory coordination store against the behaviour the rest of Rampart relies on from
//! etcd: revisions, compare-and-swap, leases, watches, outages. Time is paused throughout;
//! leases expire because the tests advance the clock, never because they sleep.

use std::sync::Arc;
use std::time::Duration;

use rampart::store::memory::MemoryStore;
use rampart::store::{
    Compare, CompareOp, KeyValue, LeaseId, Op, OpResponse, Store, StoreError, Txn, WatchEvent,
    WatchResponse, WatchStream,
};
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

/// Nothing more arrives on the watch for now.
async fn assert_quiet(watch: &mut WatchStream) {
    if let Ok(got) = timeout(Duration::from_millis(1), watch.next()).await {
        panic!("unexpected watch item: {got:?}");
    }
}

fn put_event(key: &str, value: &str, revision: i64) -> (Vec<u8>, Vec<u8>, i64) {
    (key.into(), value.into(), revision)
}

/// (key, value, mod_revision) of each put event, or (key, "<deleted>", revision).
fn summary(resp: &WatchResponse) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    resp.events
        .iter()
        .map(|e| match e {
            WatchEvent::Put(kv) => (kv.key.clone(), kv.value.clone(), kv.mod_revision),
            WatchEvent::Delete { key, revision } => (key.clone(), b"<deleted>".to_vec(), *revision),
        })
        .collect()
}

fn range_kvs(resp: &OpResponse) -> &[KeyValue] {
    match resp {
        OpResponse::Range { kvs } => kvs,
        other => panic!("expected a range response, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn put_get_and_range_carry_revisions() {
    let store: Arc<dyn Store> = MemoryStore::new();
    assert_eq!(store.current_revision().await.unwrap(), 0);

    assert_eq!(store.put(b"nodes/hv1", b"up", None).await.unwrap(), 1);
    assert_eq!(store.put(b"nodes/hv2", b"up", None).await.unwrap(), 2);
    assert_eq!(store.put(b"nodesx", b"not a node", None).await.unwrap(), 3);
    assert_eq!(store.put(b"a", b"before", None).await.unwrap(), 4);

    let hv1 = store.get(b"nodes/hv1").await.unwrap().unwrap();
    assert_eq!(hv1.value, b"up");
    assert_eq!(hv1.mod_revision, 1);
    assert_eq!(store.get(b"nodes/hv3").await.unwrap(), None);

    let (kvs, revision) = store.range(b"nodes/").await.unwrap();
    assert_eq!(
        revision, 4,
        "a range reports the store's revision, not its keys'"
    );
    let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [b"nodes/hv1".as_slice(), b"nodes/hv2".as_slice()]);

    let (all, _) = store.range(b"").await.unwrap();
    assert_eq!(all.len(), 4, "the empty prefix is the whole keyspace");
    assert_eq!(all[0].key, b"a", "in key order");
}

#[tokio::test(start_paused = true)]
async fn versions_and_create_and_mod_revisions_follow_etcd() {
    let store = MemoryStore::new();
    store.put(b"other", b"", None).await.unwrap(); // rev 1
    store.put(b"k", b"one", None).await.unwrap(); // rev 2
    store.put(b"k", b"two", None).await.unwrap(); // rev 3
    let kv = store.get(b"k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));

    assert!(store.delete(b"k").await.unwrap()); // rev 4
    assert!(
        !store.delete(b"k").await.unwrap(),
        "second delete finds nothing"
    );
    assert_eq!(
        store.current_revision().await.unwrap(),
        4,
        "a no-op delete writes nothing"
    );

    store.put(b"k", b"three", None).await.unwrap(); // rev 5
    let kv = store.get(b"k").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (5, 5, 1),
        "a re-created key starts over"
    );
}

#[tokio::test(start_paused = true)]
async fn create_if_absent_succeeds_once() {
    let store = MemoryStore::new();
    let create = |value: &str| {
        Txn::new()
            .when([Compare::absent("fence/hv2")])
            .and_then([Op::put("fence/hv2", value)])
            .or_else([Op::get("fence/hv2")])
    };

    let first = store.txn(create("by controller A")).await.unwrap();
    assert!(first.succeeded);
    assert_eq!(first.responses, vec![OpResponse::Put]);
    assert_eq!(first.revision, 1);

    let second = store.txn(create("by controller B")).await.unwrap();
    assert!(!second.succeeded);
    assert_eq!(second.revision, 1, "the failed branch only read");
    let holder = &range_kvs(&second.responses[0])[0];
    assert_eq!(holder.value, b"by controller A");

    // The version spelling of "absent" agrees.
    let by_version = store
        .txn(Txn::new().when([Compare::version("fence/hv2", CompareOp::Equal, 0)]))
        .await
        .unwrap();
    assert!(!by_version.succeeded);
}

#[tokio::test(start_paused = true)]
async fn compare_and_swap_on_mod_revision_and_value() {
    let store = MemoryStore::new();
    let rev = store.put(b"k", b"v1", None).await.unwrap();

    let swap = |expected_rev: i64, value: &str| {
        Txn::new()
            .when([Compare::mod_revision("k", CompareOp::Equal, expected_rev)])
            .and_then([Op::put("k", value)])
    };
    let ok = store.txn(swap(rev, "v2")).await.unwrap();
    assert!(ok.succeeded);
    let stale = store.txn(swap(rev, "v3")).await.unwrap();
    assert!(!stale.succeeded, "the read it was based on is out of date");
    assert!(stale.responses.is_empty());
    assert_eq!(store.get(b"k").await.unwrap().unwrap().value, b"v2");

    let ordered = store
        .txn(
            Txn::new()
                .when([
                    Compare::value("k", CompareOp::Greater, "v1"),
                    Compare::value("k", CompareOp::Less, "v3"),
                    Compare::value("k", CompareOp::NotEqual, "v1"),
                    Compare::version("k", CompareOp::Greater, 1),
                    Compare::create_revision("k", CompareOp::Less, ok.revision),
                    Compare::present("k"),
                ])
                .and_then([Op::delete("k")]),
        )
        .await
        .unwrap();
    assert!(ordered.succeeded);
    assert_eq!(ordered.responses, vec![OpResponse::Delete { deleted: 1 }]);
}

/// How S4 is enforced: a controller writes assignments only in a transaction that checks the
/// leader key is still the one it wrote. Once another controller has taken over, the deposed
/// one's writes fail, however late they arrive.
#[tokio::test(start_paused = true)]
async fn leader_guard_fails_after_leadership_changes() {
    let store = MemoryStore::new();
    let leader_key = "rampart/leader";
    let campaign = |me: &str, lease: LeaseId| {
        Txn::new()
            .when([Compare::absent(leader_key)])
            .and_then([Op::put_with_lease(leader_key, me, lease)])
            .or_else([Op::get(leader_key)])
    };
    let guarded_assign = |me: &str, leader_rev: i64, generation: &str| {
        Txn::new()
            .when([
                Compare::value(leader_key, CompareOp::Equal, me),
                Compare::mod_revision(leader_key, CompareOp::Equal, leader_rev),
            ])
            .and_then([Op::put("rampart/assignments/hv1", generation)])
    };

    let lease_a = store.grant_lease(secs(10)).await.unwrap();
    let won = store.txn(campaign("controller-a", lease_a)).await.unwrap();
    assert!(won.succeeded);
    let a_rev = won.revision;

    let lease_b = store.grant_lease(secs(10)).await.unwrap();
    assert!(
        !store
            .txn(campaign("controller-b", lease_b))
            .await
            .unwrap()
            .succeeded
    );

    assert!(
        store
            .txn(guarded_assign("controller-a", a_rev, "gen 1"))
            .await
            .unwrap()
            .succeeded
    );

    // Controller A stalls (a long GC pause, a partition) and its lease runs out; B takes over.
    advance(secs(6)).await;
    store.keep_alive(lease_b).await.unwrap();
    advance(secs(5)).await;
    assert_eq!(store.lease_time_to_live(lease_a).await.unwrap(), None);
    let won = store.txn(campaign("controller-b", lease_b)).await.unwrap();
    assert!(won.succeeded);
    let b_rev = won.revision;
    assert!(
        store
            .txn(guarded_assign("controller-b", b_rev, "gen 2"))
            .await
            .unwrap()
            .succeeded
    );

    // A wakes up and carries on with what it planned: the guard stops it.
    let late = store
        .txn(guarded_assign("controller-a", a_rev, "gen 1 again"))
        .await
        .unwrap();
    assert!(!late.succeeded);
    let assignment = store
        .get(b"rampart/assignments/hv1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(assignment.value, b"gen 2");

    // Even if A is elected again with the same value, its old revision no longer matches.
    store.revoke(lease_b).await.unwrap();
    let lease_a2 = store.grant_lease(secs(10)).await.unwrap();
    assert!(
        store
            .txn(campaign("controller-a", lease_a2))
            .await
            .unwrap()
            .succeeded
    );
    let stale = store
        .txn(guarded_assign("controller-a", a_rev, "gen 1 again"))
        .await
        .unwrap();
    assert!(!stale.succeeded);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_keeps_leased_keys() {
    let store = MemoryStore::new();
    let lease = store.grant_lease(secs(5)).await.unwrap();
    store
        .put(b"nodes/hv1/alive", b"", Some(lease))
        .await
        .unwrap();

    for _ in 0..10 {
        advance(secs(3)).await;
        assert_eq!(store.keep_alive(lease).await.unwrap(), secs(5));
    }
    let kv = store.get(b"nodes/hv1/alive").await.unwrap().unwrap();
    assert_eq!(kv.lease, Some(lease));

    advance(secs(2)).await;
    assert_eq!(
        store.lease_time_to_live(lease).await.unwrap(),
        Some(secs(3))
    );
}

#[tokio::test(start_paused = true)]
async fn expiry_deletes_keys_and_watchers_see_it_without_any_call() {
    let store = MemoryStore::new();
    let lease = store.grant_lease(secs(5)).await.unwrap();
    store
        .put(b"nodes/hv1/alive", b"", Some(lease))
        .await
        .unwrap(); // rev 1
    store
        .put(b"nodes/hv1/addr", b"10.0.0.1", Some(lease))
        .await
        .unwrap(); // rev 2
    store.put(b"nodes/hv2/alive", b"", None).await.unwrap(); // rev 3
    let mut watch = store.watch(b"nodes/", None).await.unwrap();

    advance(secs(4)).await;
    assert_quiet(&mut watch).await;

    // Nobody touches the store: the expiry task alone must produce the deletes.
    advance(secs(1)).await;
    let expired = next(&mut watch).await;
    assert_eq!(
        expired.revision, 4,
        "an expiry is a write with its own revision"
    );
    assert_eq!(
        summary(&expired),
        vec![
            put_event("nodes/hv1/addr", "<deleted>", 4),
            put_event("nodes/hv1/alive", "<deleted>", 4),
        ]
    );

    let (left, revision) = store.range(b"nodes/").await.unwrap();
    assert_eq!(revision, 4);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, b"nodes/hv2/alive");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_after_expiry_fails_for_good() {
    let store = MemoryStore::new();
    let lease = store.grant_lease(secs(5)).await.unwrap();
    store.put(b"k", b"", Some(lease)).await.unwrap();
    advance(secs(6)).await;

    let err = store.keep_alive(lease).await.unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseNotFound { lease: l } if l == lease),
        "{err:?}"
    );
    assert!(
        !err.is_retryable(),
        "renewing cannot bring an expired lease back"
    );
    assert_eq!(store.lease_time_to_live(lease).await.unwrap(), None);
    assert_eq!(store.get(b"k").await.unwrap(), None);

    let err = store.put(b"k", b"", Some(lease)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn revoke_deletes_keys_at_once() {
    let store = MemoryStore::new();
    let lease = store.grant_lease(secs(60)).await.unwrap();
    store.put(b"k", b"", Some(lease)).await.unwrap();
    let mut watch = store.watch(b"", None).await.unwrap();

    store.revoke(lease).await.unwrap();
    assert_eq!(store.get(b"k").await.unwrap(), None);
    assert_eq!(
        next(&mut watch).await.events,
        vec![WatchEvent::Delete {
            key: b"k".to_vec(),
            revision: 2
        }]
    );
    let err = store.revoke(lease).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn watch_replays_history_then_streams_live_changes_in_order() {
    let store = MemoryStore::new();
    store.put(b"assignments/hv1", b"g1", None).await.unwrap(); // rev 1
    store.put(b"reports/hv1", b"ok", None).await.unwrap(); // rev 2
    store
        .txn(Txn::new().and_then([
            Op::put("assignments/hv1", "g2"),
            Op::put("assignments/hv2", "g1"),
        ]))
        .await
        .unwrap(); // rev 3
    store.delete(b"assignments/hv2").await.unwrap(); // rev 4

    let mut watch = store.watch(b"assignments/", Some(2)).await.unwrap();
    let replayed = next(&mut watch).await;
    assert_eq!(
        replayed.revision, 3,
        "revision 2 has nothing under the prefix"
    );
    assert_eq!(
        summary(&replayed),
        vec![
            put_event("assignments/hv1", "g2", 3),
            put_event("assignments/hv2", "g1", 3),
        ],
        "one response holds a whole revision, in write order"
    );
    assert_eq!(
        summary(&next(&mut watch).await),
        vec![put_event("assignments/hv2", "<deleted>", 4)]
    );
    assert_quiet(&mut watch).await;

    store.put(b"reports/hv2", b"ok", None).await.unwrap(); // rev 5, not watched
    store.put(b"assignments/hv1", b"g3", None).await.unwrap(); // rev 6
    let live = next(&mut watch).await;
    assert_eq!(summary(&live), vec![put_event("assignments/hv1", "g3", 6)]);
    let WatchEvent::Put(kv) = &live.events[0] else {
        unreachable!()
    };
    assert_eq!((kv.create_revision, kv.version), (1, 3));
    assert_quiet(&mut watch).await;

    // A watch from "now" sees only later changes; one from the future waits for it.
    let mut from_now = store.watch(b"", None).await.unwrap();
    let mut from_future = store.watch(b"", Some(8)).await.unwrap();
    assert_quiet(&mut from_now).await;
    store.put(b"x", b"7", None).await.unwrap(); // rev 7
    store.put(b"x", b"8", None).await.unwrap(); // rev 8
    assert_eq!(next(&mut from_now).await.revision, 7);
    assert_eq!(next(&mut from_now).await.revision, 8);
    assert_eq!(next(&mut from_future).await.revision, 8);
}

#[tokio::test(start_paused = true)]
async fn watch_from_a_compacted_revision_fails() {
    let store = MemoryStore::with_history_limit(5);
    for i in 0..10 {
        store
            .put(b"k", format!("{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    // Revisions 6..=10 are kept.
    let err = store.watch(b"", Some(5)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 5,
                compacted: 5
            }
        ),
        "{err:?}"
    );
    assert!(
        !err.is_retryable(),
        "retrying the same start revision cannot work"
    );

    let mut watch = store.watch(b"", Some(6)).await.unwrap();
    for rev in 6..=10 {
        assert_eq!(next(&mut watch).await.revision, rev);
    }
    let err = store.watch(b"", Some(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err:?}");
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
        summary(&next(&mut watch).await),
        vec![put_event("nodes/hv1/alive", "<deleted>", 3)]
    );
}
