//! The behaviour Rampart relies on from its coordination store, as test bodies that run against
//! any [`Store`]: the in-memory store (tests/store_memory.rs, with paused time) and real etcd
//! (tests/store_etcd.rs, with real time).
//!
//! Revisions are counted from the store's revision when the test starts (a fresh etcd starts
//! at 1, the in-memory store at 0). Times are short enough to run against etcd in real time;
//! with the in-memory store the clock is paused and advanced exactly, so there the assertions
//! on time are exact, and against etcd they allow for its whole-second TTLs and its lease
//! expiry pass (every 500 ms).

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rampart::store::{
    Compare, CompareOp, KeyValue, LeaseId, Op, OpResponse, Store, StoreError, Txn, WatchEvent,
    WatchResponse, WatchStream, MAX_TXN_OPS,
};
use tokio::time::timeout;

/// How the test's clock runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Tokio's clock is paused; sleeping advances it at once and exactly.
    Paused,
    /// Real time: the store is a real server.
    Real,
}

/// Forgets history up to and including a revision (etcd's compaction).
pub type Compactor = Arc<dyn Fn(i64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    /// `None` when the store compacts by itself (the in-memory store made with a history
    /// limit for the compaction test).
    pub compactor: Option<Compactor>,
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Ctx {
    pub fn paused(store: Arc<dyn Store>) -> Self {
        Ctx {
            store,
            clock: Clock::Paused,
            compactor: None,
        }
    }

    pub fn real(store: Arc<dyn Store>, compactor: Compactor) -> Self {
        Ctx {
            store,
            clock: Clock::Real,
            compactor: Some(compactor),
        }
    }

    /// Lets time pass: advances the paused clock, or sleeps.
    pub async fn sleep(&self, d: Duration) {
        match self.clock {
            Clock::Paused => tokio::time::advance(d).await,
            Clock::Real => tokio::time::sleep(d).await,
        }
    }

    /// How long to wait for something that must happen: with a paused clock it must already be
    /// on its way (a millisecond is enough for the store's tasks to run, and far shorter than
    /// any lease here); a real server gets a few seconds.
    fn patience(&self) -> Duration {
        match self.clock {
            Clock::Paused => millis(1),
            Clock::Real => secs(5),
        }
    }

    /// How long to watch for something that must not happen.
    fn quiet_time(&self) -> Duration {
        match self.clock {
            Clock::Paused => millis(1),
            Clock::Real => millis(300),
        }
    }

    /// The next watch response, which must arrive.
    pub async fn next(&self, watch: &mut WatchStream) -> WatchResponse {
        timeout(self.patience(), watch.next())
            .await
            .expect("no watch response arrived")
            .expect("watch ended")
            .expect("watch failed")
    }

    /// Nothing more arrives on the watch for now.
    pub async fn assert_quiet(&self, watch: &mut WatchStream) {
        if let Ok(got) = timeout(self.quiet_time(), watch.next()).await {
            panic!("unexpected watch item: {got:?}");
        }
    }

    /// With a paused clock the condition must hold now; with a real server it must come to
    /// hold within a few seconds.
    pub async fn eventually<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + self.patience();
        loop {
            if condition().await {
                return;
            }
            if self.clock == Clock::Paused || tokio::time::Instant::now() >= deadline {
                panic!("{what}: did not happen");
            }
            tokio::time::sleep(millis(50)).await;
        }
    }

    /// A lease's remaining time: exact with a paused clock; etcd counts whole seconds (rounded
    /// down) and its answer is a little late.
    pub fn assert_ttl_about(&self, got: Option<Duration>, expected: Duration) {
        let got = got.expect("lease is gone");
        match self.clock {
            Clock::Paused => assert_eq!(got, expected),
            Clock::Real => assert!(
                got <= expected && got + millis(1300) >= expected,
                "remaining TTL {got:?}, expected about {expected:?}"
            ),
        }
    }

    async fn base(&self) -> i64 {
        self.store.current_revision().await.unwrap()
    }
}

fn put_event(key: &str, value: &str, revision: i64) -> (Vec<u8>, Vec<u8>, i64) {
    (key.into(), value.into(), revision)
}

/// (key, value, mod_revision) of each put event, or (key, "<deleted>", revision).
pub fn summary(resp: &WatchResponse) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
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

/// The error of a watch that must fail: the store may refuse the call, or (as etcd does)
/// report the error as the stream's first item. Consumers must handle both.
async fn watch_error(ctx: &Ctx, prefix: &[u8], from: Option<i64>) -> StoreError {
    match ctx.store.watch(prefix, from).await {
        Err(e) => e,
        Ok(mut watch) => match timeout(ctx.patience(), watch.next()).await {
            Ok(Some(Err(e))) => {
                assert!(
                    timeout(ctx.patience(), watch.next())
                        .await
                        .unwrap()
                        .is_none(),
                    "the watch ends after its error"
                );
                e
            }
            other => panic!("watch from {from:?} should have failed, got {other:?}"),
        },
    }
}

pub async fn put_get_and_range_carry_revisions(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;

    assert_eq!(
        store.put(b"nodes/hv1", b"up", None).await.unwrap(),
        base + 1
    );
    assert_eq!(
        store.put(b"nodes/hv2", b"up", None).await.unwrap(),
        base + 2
    );
    assert_eq!(
        store.put(b"nodesx", b"not a node", None).await.unwrap(),
        base + 3
    );
    assert_eq!(store.put(b"a", b"before", None).await.unwrap(), base + 4);

    let hv1 = store.get(b"nodes/hv1").await.unwrap().unwrap();
    assert_eq!(hv1.value, b"up");
    assert_eq!(hv1.mod_revision, base + 1);
    assert_eq!(store.get(b"nodes/hv3").await.unwrap(), None);

    let (kvs, revision) = store.range(b"nodes/").await.unwrap();
    assert_eq!(
        revision,
        base + 4,
        "a range reports the store's revision, not its keys'"
    );
    let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [b"nodes/hv1".as_slice(), b"nodes/hv2".as_slice()]);

    let (all, _) = store.range(b"").await.unwrap();
    assert_eq!(all.len(), 4, "the empty prefix is the whole keyspace");
    assert_eq!(all[0].key, b"a", "in key order");
}

pub async fn versions_and_create_and_mod_revisions_follow_etcd(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    store.put(b"other", b"", None).await.unwrap(); // base + 1
    store.put(b"k", b"one", None).await.unwrap(); // base + 2
    store.put(b"k", b"two", None).await.unwrap(); // base + 3
    let kv = store.get(b"k").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (base + 2, base + 3, 2)
    );

    assert!(store.delete(b"k").await.unwrap()); // base + 4
    assert!(
        !store.delete(b"k").await.unwrap(),
        "second delete finds nothing"
    );
    assert_eq!(
        store.current_revision().await.unwrap(),
        base + 4,
        "a no-op delete writes nothing"
    );

    store.put(b"k", b"three", None).await.unwrap(); // base + 5
    let kv = store.get(b"k").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (base + 5, base + 5, 1),
        "a re-created key starts over"
    );
}

pub async fn create_if_absent_succeeds_once(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    let create = |value: &str| {
        Txn::new()
            .when([Compare::absent("fence/hv2")])
            .and_then([Op::put("fence/hv2", value)])
            .or_else([Op::get("fence/hv2")])
    };

    let first = store.txn(create("by controller A")).await.unwrap();
    assert!(first.succeeded);
    assert_eq!(first.responses, vec![OpResponse::Put]);
    assert_eq!(first.revision, base + 1);

    let second = store.txn(create("by controller B")).await.unwrap();
    assert!(!second.succeeded);
    assert_eq!(second.revision, base + 1, "the failed branch only read");
    let holder = &range_kvs(&second.responses[0])[0];
    assert_eq!(holder.value, b"by controller A");

    // The version spelling of "absent" agrees.
    let by_version = store
        .txn(Txn::new().when([Compare::version("fence/hv2", CompareOp::Equal, 0)]))
        .await
        .unwrap();
    assert!(!by_version.succeeded);
}

pub async fn compare_and_swap_on_mod_revision_and_value(ctx: &Ctx) {
    let store = &ctx.store;
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
pub async fn leader_guard_fails_after_leadership_changes(ctx: &Ctx) {
    let store = &ctx.store;
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

    let lease_a = store.grant_lease(secs(2)).await.unwrap();
    let won = store.txn(campaign("controller-a", lease_a)).await.unwrap();
    assert!(won.succeeded);
    let a_rev = won.revision;

    let lease_b = store.grant_lease(secs(4)).await.unwrap();
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
    ctx.sleep(millis(1500)).await;
    store.keep_alive(lease_b).await.unwrap();
    ctx.sleep(millis(1000)).await;
    ctx.eventually("controller A's lease expires", || async {
        store.lease_time_to_live(lease_a).await.unwrap().is_none()
    })
    .await;
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

pub async fn keep_alive_keeps_leased_keys(ctx: &Ctx) {
    let store = &ctx.store;
    let lease = store.grant_lease(secs(2)).await.unwrap();
    store
        .put(b"nodes/hv1/alive", b"", Some(lease))
        .await
        .unwrap();

    // Four renewals, each late in the TTL: more than twice the TTL in all.
    for _ in 0..4 {
        ctx.sleep(millis(1200)).await;
        assert_eq!(store.keep_alive(lease).await.unwrap(), secs(2));
    }
    let kv = store.get(b"nodes/hv1/alive").await.unwrap().unwrap();
    assert_eq!(kv.lease, Some(lease));

    ctx.sleep(millis(500)).await;
    ctx.assert_ttl_about(store.lease_time_to_live(lease).await.unwrap(), millis(1500));
}

pub async fn expiry_deletes_keys_and_watchers_see_it_without_any_call(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    let lease = store.grant_lease(secs(3)).await.unwrap();
    store
        .put(b"nodes/hv1/alive", b"", Some(lease))
        .await
        .unwrap(); // base + 1
    store
        .put(b"nodes/hv1/addr", b"10.0.0.1", Some(lease))
        .await
        .unwrap(); // base + 2
    store.put(b"nodes/hv2/alive", b"", None).await.unwrap(); // base + 3
    let mut watch = store.watch(b"nodes/", None).await.unwrap();

    ctx.sleep(secs(2)).await;
    ctx.assert_quiet(&mut watch).await;

    // Nobody touches the store: its own expiry must produce the deletes.
    ctx.sleep(secs(1)).await;
    let expired = ctx.next(&mut watch).await;
    assert_eq!(
        expired.revision,
        base + 4,
        "an expiry is a write with its own revision"
    );
    assert_eq!(
        summary(&expired),
        vec![
            put_event("nodes/hv1/addr", "<deleted>", base + 4),
            put_event("nodes/hv1/alive", "<deleted>", base + 4),
        ]
    );

    let (left, revision) = store.range(b"nodes/").await.unwrap();
    assert_eq!(revision, base + 4);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, b"nodes/hv2/alive");
}

pub async fn keep_alive_after_expiry_fails_for_good(ctx: &Ctx) {
    let store = &ctx.store;
    let lease = store.grant_lease(secs(2)).await.unwrap();
    store.put(b"k", b"", Some(lease)).await.unwrap();
    ctx.sleep(secs(3)).await;

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
    assert!(
        matches!(err, StoreError::LeaseNotFound { lease: l } if l == lease),
        "{err:?}"
    );
}

pub async fn revoke_deletes_keys_at_once(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    let lease = store.grant_lease(secs(60)).await.unwrap();
    store.put(b"k", b"", Some(lease)).await.unwrap();
    let mut watch = store.watch(b"", None).await.unwrap();

    store.revoke(lease).await.unwrap();
    assert_eq!(store.get(b"k").await.unwrap(), None);
    assert_eq!(
        ctx.next(&mut watch).await.events,
        vec![WatchEvent::Delete {
            key: b"k".to_vec(),
            revision: base + 2
        }]
    );
    let err = store.revoke(lease).await.unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseNotFound { lease: l } if l == lease),
        "{err:?}"
    );
}

pub async fn watch_replays_history_then_streams_live_changes_in_order(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    store.put(b"assignments/hv1", b"g1", None).await.unwrap(); // base + 1
    store.put(b"reports/hv1", b"ok", None).await.unwrap(); // base + 2
    store
        .txn(Txn::new().and_then([
            Op::put("assignments/hv1", "g2"),
            Op::put("assignments/hv2", "g1"),
        ]))
        .await
        .unwrap(); // base + 3
    store.delete(b"assignments/hv2").await.unwrap(); // base + 4

    let mut watch = store.watch(b"assignments/", Some(base + 2)).await.unwrap();
    let replayed = ctx.next(&mut watch).await;
    assert_eq!(
        replayed.revision,
        base + 3,
        "revision base + 2 has nothing under the prefix"
    );
    assert_eq!(
        summary(&replayed),
        vec![
            put_event("assignments/hv1", "g2", base + 3),
            put_event("assignments/hv2", "g1", base + 3),
        ],
        "one response holds a whole revision, in write order"
    );
    assert_eq!(
        summary(&ctx.next(&mut watch).await),
        vec![put_event("assignments/hv2", "<deleted>", base + 4)]
    );
    ctx.assert_quiet(&mut watch).await;

    store.put(b"reports/hv2", b"ok", None).await.unwrap(); // base + 5, not watched
    store.put(b"assignments/hv1", b"g3", None).await.unwrap(); // base + 6
    let live = ctx.next(&mut watch).await;
    assert_eq!(
        summary(&live),
        vec![put_event("assignments/hv1", "g3", base + 6)]
    );
    let WatchEvent::Put(kv) = &live.events[0] else {
        unreachable!()
    };
    assert_eq!((kv.create_revision, kv.version), (base + 1, 3));
    ctx.assert_quiet(&mut watch).await;

    // A watch from "now" sees only later changes; one from the future waits for it.
    let mut from_now = store.watch(b"", None).await.unwrap();
    let mut from_future = store.watch(b"", Some(base + 8)).await.unwrap();
    ctx.assert_quiet(&mut from_now).await;
    store.put(b"x", b"7", None).await.unwrap(); // base + 7
    store.put(b"x", b"8", None).await.unwrap(); // base + 8
    assert_eq!(ctx.next(&mut from_now).await.revision, base + 7);
    assert_eq!(ctx.next(&mut from_now).await.revision, base + 8);
    assert_eq!(ctx.next(&mut from_future).await.revision, base + 8);
}

/// With the in-memory store, `ctx.store` must keep 5 events of history and start empty.
pub async fn watch_from_a_compacted_revision_fails(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    for i in 0..10 {
        store
            .put(b"k", format!("{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    // Forget revisions up to base + 5; base + 6 ..= base + 10 are kept.
    match &ctx.compactor {
        Some(compact) => compact(base + 5).await,
        None => assert_eq!(base, 0, "the in-memory store compacts by its history limit"),
    }
    let err = watch_error(ctx, b"", Some(base + 5)).await;
    assert!(
        matches!(
            err,
            StoreError::Compacted { requested, compacted } if requested == base + 5 && compacted == base + 5
        ),
        "{err:?}"
    );
    assert!(
        !err.is_retryable(),
        "retrying the same start revision cannot work"
    );

    let mut watch = store.watch(b"", Some(base + 6)).await.unwrap();
    for rev in base + 6..=base + 10 {
        assert_eq!(ctx.next(&mut watch).await.revision, rev);
    }
    let err = store.watch(b"", Some(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err:?}");
}

pub async fn a_txn_without_writes_keeps_the_revision(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    store.put(b"a", b"1", None).await.unwrap();
    let resp = store
        .txn(Txn::new().and_then([Op::get("a"), Op::delete("missing")]))
        .await
        .unwrap();
    assert_eq!(resp.revision, base + 1);
    assert_eq!(
        resp.responses[1],
        OpResponse::Delete { deleted: 0 },
        "deleting an absent key deletes nothing"
    );
    assert_eq!(store.current_revision().await.unwrap(), base + 1);
}

pub async fn all_writes_of_a_txn_share_one_revision_and_reads_see_them(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    let resp = store
        .txn(Txn::new().and_then([Op::put("a", "1"), Op::put("b", "2"), Op::range("")]))
        .await
        .unwrap();
    assert_eq!(resp.revision, base + 1);
    let kvs = range_kvs(&resp.responses[2]);
    assert_eq!(kvs.len(), 2);
    assert!(kvs.iter().all(|kv| kv.mod_revision == base + 1));
}

pub async fn refuses_what_etcd_refuses(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    let cases = [
        Txn::new().and_then([Op::put("a", "1"), Op::put("a", "2")]),
        Txn::new().and_then([Op::put("a/x", "1"), Op::delete_prefix("a/")]),
        Txn::new().or_else([Op::delete("a"), Op::put("a", "1")]),
        Txn::new().and_then([Op::put("", "1")]),
        Txn::new().when([Compare::absent("")]),
        Txn::new().and_then((0..=MAX_TXN_OPS).map(|i| Op::put(format!("k{i}"), "v"))),
    ];
    for txn in cases {
        let err = store.txn(txn.clone()).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidArgument { .. }),
            "{txn:?} gave {err:?}"
        );
        assert!(!err.is_retryable());
    }
    assert_eq!(
        store.current_revision().await.unwrap(),
        base,
        "nothing was written"
    );
}

pub async fn put_on_a_dead_lease_writes_nothing(ctx: &Ctx) {
    let store = &ctx.store;
    let lease = store.grant_lease(secs(5)).await.unwrap();
    store.revoke(lease).await.unwrap();
    let err = store
        .txn(Txn::new().and_then([Op::put("a", "1"), Op::put_with_lease("b", "2", lease)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseNotFound { lease: l } if l == lease),
        "{err:?}"
    );
    assert_eq!(store.get(b"a").await.unwrap(), None);
}

pub async fn value_compare_on_absent_key_is_always_false(ctx: &Ctx) {
    let store = &ctx.store;
    for op in [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Greater,
        CompareOp::Less,
    ] {
        let resp = store
            .txn(Txn::new().when([Compare::value("missing", op, "")]))
            .await
            .unwrap();
        assert!(!resp.succeeded, "{op:?}");
    }
    let resp = store
        .txn(Txn::new().when([Compare::version("missing", CompareOp::Equal, 0)]))
        .await
        .unwrap();
    assert!(resp.succeeded);
}

pub async fn moving_a_key_to_another_lease_detaches_it_from_the_first(ctx: &Ctx) {
    let store = &ctx.store;
    let base = ctx.base().await;
    let first = store.grant_lease(secs(5)).await.unwrap();
    let second = store.grant_lease(secs(60)).await.unwrap();
    store.put(b"k", b"1", Some(first)).await.unwrap();
    store.put(b"k", b"2", Some(second)).await.unwrap();
    store.revoke(first).await.unwrap();
    let kv = store
        .get(b"k")
        .await
        .unwrap()
        .expect("key survives its old lease");
    assert_eq!(kv.lease, Some(second));
    assert_eq!(
        store.current_revision().await.unwrap(),
        base + 2,
        "revoking an empty lease writes nothing"
    );
}
