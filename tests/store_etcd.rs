//! The etcd store against real etcd (Debian's etcd-server, started by the tests on loopback).
//!
//! First the same behavioural tests as the in-memory store (tests/support/store_contract.rs),
//! each on a fresh one-member cluster; then what only a real cluster shows: members dying
//! under a kept-alive lease, a steady stream of writes and a watch, and a deposed controller
//! whose late write must fail.
//!
//! Needs `--features etcd`. A missing `etcd` binary fails these tests (install etcd-server);
//! they never skip.

#![cfg(feature = "etcd")]
// `etcd-tls` is not declared in Cargo.toml yet; see src/store/etcd.rs.

#[path = "support/store_contract.rs"]
mod contract;
#[path = "support/etcd_cluster.rs"]
mod etcd_cluster;
#[path = "support/ports.rs"]
mod ports;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::{millis, secs, Compactor, Ctx};
use etcd_cluster::EtcdCluster;
use rampart::store::etcd::{connect_cluster, EtcdOptions, EtcdStore};
use rampart::store::url::parse_etcd_url;
use rampart::store::{Compare, CompareOp, LeaseId, Op, Store, StoreError, Txn};
use tokio::time::{timeout, Instant};

/// Options for tests: probe members often, so a dead one is dropped within half a second.
fn test_options() -> EtcdOptions {
    EtcdOptions {
        health_interval: millis(200),
        health_timeout: millis(300),
        ..EtcdOptions::default()
    }
}

async fn connect(cluster: &EtcdCluster, prefix: &str, options: EtcdOptions) -> Arc<EtcdStore> {
    let address = parse_etcd_url(&cluster.address(prefix)).unwrap();
    EtcdStore::connect_with(&address, options)
        .await
        .expect("connect to etcd")
}

/// A test must finish in bounded time even if etcd misbehaves.
async fn bounded<F: Future<Output = ()>>(limit: Duration, test: F) {
    timeout(limit, test)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"));
}

/// The multi-member tests run one at a time: several 3-member clusters with 25 ms heartbeats
/// on two busy cores would hold spurious elections and blur what is measured.
async fn one_cluster_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// etcd's compaction, for the contract's "forget history up to and including `rev`".
fn compactor(cluster: &EtcdCluster) -> Compactor {
    let urls = cluster.client_urls();
    Arc::new(move |rev: i64| {
        let urls = urls.clone();
        Box::pin(async move {
            let mut client = etcd_client::Client::connect(urls, None).await.unwrap();
            // etcd keeps the compaction revision itself: compact at rev + 1 to drop rev.
            client.compact(rev + 1, None).await.unwrap();
        })
    })
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let cluster = EtcdCluster::start(1).await;
            let store = connect(&cluster, "contract", test_options()).await;
            let ctx = Ctx::real(store, compactor(&cluster));
            bounded(secs(60), contract::$name(&ctx)).await;
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
    watch_from_a_compacted_revision_fails,
    a_txn_without_writes_keeps_the_revision,
    all_writes_of_a_txn_share_one_revision_and_reads_see_them,
    refuses_what_etcd_refuses,
    put_on_a_dead_lease_writes_nothing,
    value_compare_on_absent_key_is_always_false,
    moving_a_key_to_another_lease_detaches_it_from_the_first,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_keeps_each_prefix_to_itself() {
    let cluster = EtcdCluster::start(1).await;
    bounded(secs(60), async {
        let a = connect(&cluster, "team-a", test_options()).await;
        let b = connect(&cluster, "team-b", test_options()).await;
        assert_eq!(a.prefix(), b"team-a/");
        let mut watch_a = a.watch(b"", None).await.unwrap();

        let rev_a = a.put(b"k", b"from a", None).await.unwrap();
        let rev_b = b.put(b"k", b"from b", None).await.unwrap();
        assert_eq!(rev_b, rev_a + 1, "one etcd, one revision counter");

        let (kvs, _) = a.range(b"").await.unwrap();
        assert_eq!(kvs.len(), 1);
        assert_eq!(
            (kvs[0].key.as_slice(), kvs[0].value.as_slice()),
            (&b"k"[..], &b"from a"[..])
        );

        let mut raw = cluster.raw_client().await;
        let stored = raw
            .get("team-", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let keys: Vec<&[u8]> = stored.kvs().iter().map(|kv| kv.key()).collect();
        assert_eq!(keys, [&b"team-a/k"[..], &b"team-b/k"[..]]);

        // Deleting "everything" in b leaves a alone, and a's watch sees only a's keys.
        b.txn(Txn::new().and_then([Op::delete_prefix("")]))
            .await
            .unwrap();
        assert!(a.get(b"k").await.unwrap().is_some());
        let got = timeout(secs(5), watch_a.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.revision, rev_a);
        assert_eq!(got.events[0].key(), b"k");
        assert!(timeout(millis(300), watch_a.next()).await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_that_cannot_be_served_are_refused_clearly() {
    let err = EtcdStore::connect("etcd://127.0.0.1:0/x")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("port"), "{err}");
    let err = connect_cluster("etcd://127.0.0.1:2379").err().unwrap();
    assert!(err.contains("no /PREFIX"), "{err}");
    let err = EtcdStore::connect("etcds://127.0.0.1:2379/x?cacert=/nonexistent/ca.pem")
        .await
        .err()
        .expect("refused")
        .to_string();
    if cfg!(feature = "etcd-tls") {
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    } else {
        assert!(err.contains("etcd-tls feature"), "{err}");
    }
}

/// Production etcd runs with TLS and client certificates (`--client-cert-auth`).
#[cfg(feature = "etcd-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let cluster = EtcdCluster::start_tls(1).await;
    bounded(secs(60), async {
        let address = cluster.address("tls");
        assert!(address.starts_with("etcds://"), "{address}");
        let store = EtcdStore::connect(&address)
            .await
            .expect("connect over TLS");
        let rev = store.put(b"k", b"v", None).await.unwrap();
        let kv = store.get(b"k").await.unwrap().unwrap();
        assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"v"[..], rev));
        let mut watch = store.watch(b"", Some(rev)).await.unwrap();
        assert_eq!(
            timeout(secs(5), watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .revision,
            rev
        );
        let lease = store.grant_lease(secs(5)).await.unwrap();
        assert_eq!(store.keep_alive(lease).await.unwrap(), secs(5));

        // Without a client certificate etcd refuses the connection.
        let certs = cluster.tls.clone().unwrap();
        let host = cluster.members[0].client_url.trim_start_matches("https://");
        let anonymous =
            EtcdStore::connect(&format!("etcds://{host}/tls?cacert={}", certs.ca.display()))
                .await
                .unwrap();
        let err = anonymous.get(b"k").await.unwrap_err();
        println!("without a client certificate: {err:?}");
        // Nor does the store trust a member whose certificate its CA did not sign.
        let stranger = EtcdStore::connect(&format!(
            "etcds://{host}/tls?cacert={}&cert={}&key={}",
            certs.client_cert.display(),
            certs.client_cert.display(),
            certs.client_key.display()
        ))
        .await
        .unwrap();
        let err = stranger.get(b"k").await.unwrap_err();
        println!("with the wrong CA: {err:?}");
    })
    .await;
}

/// `connect_cluster` is for commands that start outside a runtime: it only checks the address,
/// and connects on first use.
#[test]
fn connect_cluster_connects_on_first_use() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime.block_on(EtcdCluster::start(1));
    let cs = connect_cluster(&cluster.address("rampart/prod")).expect("address is fine");
    runtime.block_on(async {
        cs.store
            .put(&cs.leader_key(), b"controller-a", None)
            .await
            .unwrap();
        let mut raw = cluster.raw_client().await;
        let got = raw.get("rampart/prod/leader", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"controller-a");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_outage_fails_calls_then_recovery_keeps_the_lease() {
    let mut cluster = EtcdCluster::start(1).await;
    let options = EtcdOptions {
        call_timeout: millis(1000),
        attempt_timeout: millis(500),
        watch_resume_timeout: millis(1500),
        ..test_options()
    };
    let budget = options.call_timeout;
    let store = connect(&cluster, "outage", options).await;
    let lease = store.grant_lease(secs(5)).await.unwrap();
    let written = store
        .put(b"nodes/hv1/alive", b"", Some(lease))
        .await
        .unwrap();
    let mut watch = store.watch(b"", None).await.unwrap();

    cluster.kill(0);
    let killed = Instant::now();
    for (what, err) in [
        (
            "get",
            store.get(b"nodes/hv1/alive").await.map(|_| ()).unwrap_err(),
        ),
        (
            "put",
            store.put(b"x", b"", None).await.map(|_| ()).unwrap_err(),
        ),
        (
            "keep_alive",
            store.keep_alive(lease).await.map(|_| ()).unwrap_err(),
        ),
        (
            "grant_lease",
            store.grant_lease(secs(5)).await.map(|_| ()).unwrap_err(),
        ),
        (
            "current_revision",
            store.current_revision().await.map(|_| ()).unwrap_err(),
        ),
    ] {
        assert!(err.is_retryable(), "{what}: {err:?}");
        assert!(
            matches!(err, StoreError::Unavailable { .. } | StoreError::Timeout),
            "{what}: {err:?}"
        );
    }
    let five_calls = killed.elapsed();
    println!("five calls during the outage took {five_calls:?} in all (budget {budget:?} each)");
    assert!(
        five_calls < budget * 5 + secs(1),
        "calls are bounded by their budget"
    );

    // The open watch tries to resume, gives up, says so, and ends.
    let told = timeout(secs(10), watch.next())
        .await
        .expect("the watch reports the outage");
    assert!(
        matches!(told, Some(Err(StoreError::Unavailable { .. }))),
        "{told:?}"
    );
    assert!(watch.next().await.is_none());
    println!(
        "the watch reported the outage {:?} after the kill",
        killed.elapsed()
    );

    cluster.restart(0).await;
    let outage = killed.elapsed();
    println!("member back after {outage:?}");
    // A restarted etcd leader gives every lease its full TTL again.
    assert!(store.get(b"nodes/hv1/alive").await.unwrap().is_some());
    assert!(store.lease_time_to_live(lease).await.unwrap().is_some());
    assert_eq!(store.keep_alive(lease).await.unwrap(), secs(5));
    assert_eq!(
        store.current_revision().await.unwrap(),
        written,
        "nothing was written during the outage"
    );
    let mut watch = store.watch(b"", Some(written + 1)).await.unwrap();
    let rev = store.put(b"x", b"", None).await.unwrap();
    assert_eq!(
        timeout(secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .revision,
        rev
    );
}

/// (revision, key) of every event a watch delivered.
type Seen = Arc<Mutex<Vec<(i64, Vec<u8>)>>>;

/// One call's record: when it started and ended, and what it returned.
#[derive(Debug, Clone)]
struct Call {
    start: Instant,
    end: Instant,
    result: Result<i64, String>,
}

type CallLog = Arc<Mutex<Vec<Call>>>;

/// Writes one new key after another (10 ms apart) until `stop`, logging every call.
fn spawn_writer(
    store: Arc<EtcdStore>,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> (CallLog, tokio::task::JoinHandle<()>) {
    let log: CallLog = Arc::default();
    let task = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("{prefix}{n:06}");
                let start = Instant::now();
                let result = store
                    .put(key.as_bytes(), b"v", None)
                    .await
                    .map_err(|e| format!("{e:?}"));
                log.lock().unwrap().push(Call {
                    start,
                    end: Instant::now(),
                    result,
                });
                n += 1;
                tokio::time::sleep(millis(10)).await;
            }
        })
    };
    (log, task)
}

/// Renews the lease every 200 ms until `stop` or until it is lost, logging every call.
fn spawn_keeper(
    store: Arc<EtcdStore>,
    lease: LeaseId,
    stop: Arc<AtomicBool>,
) -> (CallLog, tokio::task::JoinHandle<()>) {
    let log: CallLog = Arc::default();
    let task = {
        let log = log.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let result = store.keep_alive(lease).await;
                let lost = matches!(result, Err(StoreError::LeaseNotFound { .. }));
                log.lock().unwrap().push(Call {
                    start,
                    end: Instant::now(),
                    result: result
                        .map(|ttl| ttl.as_secs() as i64)
                        .map_err(|e| format!("{e:?}")),
                });
                if lost {
                    return;
                }
                tokio::time::sleep(millis(200)).await;
            }
        })
    };
    (log, task)
}

/// What a disruption at `at` did to the calls in `log` up to `until`.
struct Impact {
    /// From the disruption to the end of the first successful call that started after it.
    unavailable: Duration,
    /// The longest time without a successful call ending, around the disruption.
    longest_gap: Duration,
    failed: usize,
    calls: usize,
    slowest: Duration,
}

fn impact(log: &[Call], at: Instant, until: Instant) -> Impact {
    let window: Vec<&Call> = log
        .iter()
        .filter(|c| c.end >= at && c.start <= until)
        .collect();
    let unavailable = window
        .iter()
        .find(|c| c.start >= at && c.result.is_ok())
        .map(|c| c.end - at)
        .unwrap_or_else(|| panic!("no successful call after the disruption (calls: {window:?})"));
    let mut last_ok = log
        .iter()
        .filter(|c| c.end < at && c.result.is_ok())
        .map(|c| c.end)
        .max()
        .unwrap_or(at);
    let mut longest_gap = Duration::ZERO;
    for c in window.iter().filter(|c| c.result.is_ok()) {
        longest_gap = longest_gap.max(c.end.saturating_duration_since(last_ok));
        last_ok = last_ok.max(c.end);
    }
    Impact {
        unavailable,
        longest_gap,
        failed: window.iter().filter(|c| c.result.is_err()).count(),
        calls: window.len(),
        slowest: window
            .iter()
            .map(|c| c.end - c.start)
            .max()
            .unwrap_or_default(),
    }
}

fn report(what: &str, i: &Impact) {
    println!(
        "{what}: writes unavailable for {:?} (first write started after the kill done then); longest gap between successful writes {:?}; {} of {} writes failed; slowest write {:?}",
        i.unavailable, i.longest_gap, i.failed, i.calls, i.slowest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_lease_and_writes_survive_losing_a_follower_then_the_leader() {
    let _one = one_cluster_at_a_time().await;
    let mut cluster = EtcdCluster::start(3).await;
    let store = connect(&cluster, "survive", test_options()).await;
    bounded(secs(90), async {
        let lease = store.grant_lease(secs(2)).await.unwrap();
        store.put(b"nodes/hv1/alive", b"", Some(lease)).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (keeps, keeper) = spawn_keeper(store.clone(), lease, stop.clone());
        let (writes, writer) = spawn_writer(store.clone(), "writes/", stop.clone());
        tokio::time::sleep(millis(600)).await;

        // A follower dies: the majority is intact, so nothing should show.
        let leader = cluster.leader().await;
        let follower = (leader + 1) % 3;
        cluster.kill(follower);
        let follower_killed = Instant::now();
        tokio::time::sleep(millis(1500)).await;
        let dead_url = cluster.members[follower].client_url.clone();
        assert!(
            !store.active_endpoints().await.contains(&dead_url),
            "the dead follower is no longer sent calls"
        );
        let after_follower = impact(&writes.lock().unwrap(), follower_killed, Instant::now());
        report("follower killed", &after_follower);

        // Back to three, then the leader dies: writes stop until a new leader is elected.
        cluster.restart(follower).await;
        tokio::time::sleep(millis(500)).await;
        let leader = cluster.leader().await;
        cluster.kill(leader);
        let leader_killed = Instant::now();
        tokio::time::sleep(millis(2500)).await;
        let after_leader = impact(&writes.lock().unwrap(), leader_killed, Instant::now());
        report("leader killed", &after_leader);
        let dead_url = cluster.members[leader].client_url.clone();
        assert!(!store.active_endpoints().await.contains(&dead_url));

        stop.store(true, Ordering::Relaxed);
        keeper.await.unwrap();
        writer.await.unwrap();

        let keeps = keeps.lock().unwrap().clone();
        let lost: Vec<&Call> = keeps.iter().filter(|c| matches!(&c.result, Err(e) if e.contains("LeaseNotFound"))).collect();
        assert!(lost.is_empty(), "the lease was lost: {lost:?}");
        let failed_keeps = keeps.iter().filter(|c| c.result.is_err()).count();
        let mut longest_renewal_gap = Duration::ZERO;
        let mut last = keeps[0].end;
        for c in keeps.iter().filter(|c| c.result.is_ok()) {
            longest_renewal_gap = longest_renewal_gap.max(c.end - last);
            last = c.end;
        }
        println!(
            "lease (TTL 2 s, renewed every 200 ms): {} renewals, {failed_keeps} failed, longest time between renewals {longest_renewal_gap:?}",
            keeps.len()
        );
        println!("store stats: {:?}", store.stats());
        assert!(store.lease_time_to_live(lease).await.unwrap().is_some());
        assert!(store.get(b"nodes/hv1/alive").await.unwrap().is_some(), "the leased key is still there");
        assert!(longest_renewal_gap < secs(2), "the lease was never at risk");

        assert_eq!(after_follower.failed, 0, "a dead follower is hidden by retries");
        assert!(after_follower.unavailable < secs(1), "{:?}", after_follower.unavailable);
        assert!(after_leader.unavailable < secs(2), "writes resumed after {:?}", after_leader.unavailable);
        store
            .put(b"after", b"", None)
            .await
            .expect("two of three members still take writes");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_keep_alive_survive_each_member_dying_in_turn() {
    let _one = one_cluster_at_a_time().await;
    let mut cluster = EtcdCluster::start(3).await;
    let store = connect(&cluster, "watched", test_options()).await;
    bounded(secs(120), async {
        let lease = store.grant_lease(secs(2)).await.unwrap();
        store.put(b"nodes/hv1/alive", b"", Some(lease)).await.unwrap();
        let mut watch = store.watch(b"w/", None).await.unwrap();
        let first_rev = store.current_revision().await.unwrap() + 1;

        // Collect the watch as it goes, checking order.
        let seen: Seen = Arc::default();
        let collector = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut last = 0;
                while let Some(item) = watch.next().await {
                    let resp = item.expect("the watch must not fail while a majority lives");
                    assert!(resp.revision > last, "revision {} after {last}: duplicate or out of order", resp.revision);
                    last = resp.revision;
                    let mut seen = seen.lock().unwrap();
                    for event in &resp.events {
                        assert_eq!(event.revision(), resp.revision, "one response, one revision");
                        seen.push((event.revision(), event.key().to_vec()));
                    }
                    if resp.events.iter().any(|e| e.key() == b"w/end") {
                        return;
                    }
                }
                panic!("the watch ended");
            })
        };

        let stop = Arc::new(AtomicBool::new(false));
        let (keeps, keeper) = spawn_keeper(store.clone(), lease, stop.clone());
        let (writes, writer) = spawn_writer(store.clone(), "w/", stop.clone());
        // Kill every member once (the watch's stream runs through one of them), each coming
        // back before the next goes.
        for i in 0..3 {
            tokio::time::sleep(millis(500)).await;
            cluster.kill(i);
            tokio::time::sleep(millis(700)).await;
            cluster.restart(i).await;
        }
        tokio::time::sleep(millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        keeper.await.unwrap();
        writer.await.unwrap();
        let end = store.put(b"w/end", b"", None).await.unwrap();
        timeout(secs(15), collector).await.expect("the watch delivered everything").unwrap();

        // What etcd itself recorded, read once more on the healthy cluster.
        let mut reference = Vec::new();
        let mut replay = store.watch(b"w/", Some(first_rev)).await.unwrap();
        while reference.last().is_none_or(|(rev, _)| *rev < end) {
            let resp = timeout(secs(5), replay.next()).await.unwrap().unwrap().unwrap();
            reference.extend(resp.events.iter().map(|e| (e.revision(), e.key().to_vec())));
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), reference.len(), "no event lost or repeated");
        assert!(seen == reference, "the surviving watch saw exactly etcd's history");
        let ok_writes: Vec<i64> = writes.lock().unwrap().iter().filter_map(|c| c.result.clone().ok()).collect();
        let seen_revs: std::collections::BTreeSet<i64> = seen.iter().map(|(r, _)| *r).collect();
        assert!(ok_writes.iter().all(|r| seen_revs.contains(r)), "every acknowledged write was seen");

        let keeps = keeps.lock().unwrap().clone();
        let writes = writes.lock().unwrap().clone();
        let failed_keeps: Vec<&Call> = keeps.iter().filter(|c| c.result.is_err()).collect();
        let stats = store.stats();
        println!(
            "{} writes ({} failed), {} events watched, {} renewals ({} failed); store stats: {stats:?}",
            writes.len(),
            writes.iter().filter(|c| c.result.is_err()).count(),
            seen.len(),
            keeps.len(),
            failed_keeps.len()
        );
        assert!(
            !failed_keeps.iter().any(|c| matches!(&c.result, Err(e) if e.contains("LeaseNotFound"))),
            "the lease was lost: {failed_keeps:?}"
        );
        assert!(store.lease_time_to_live(lease).await.unwrap().is_some());
        assert!(stats.watch_resumes >= 1, "the watch's member died, so it was resumed");
        assert!(
            stats.keep_alive_streams_opened >= 2,
            "the keep-alive stream's member died, so it was re-created"
        );
    })
    .await;
}

/// S4 on a real cluster: a controller that lost its lease while the etcd leader changed
/// cannot write, however late its write arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposed_controller_cannot_write_across_an_etcd_leader_change() {
    let _one = one_cluster_at_a_time().await;
    let mut cluster = EtcdCluster::start(3).await;
    let a = connect(&cluster, "guard", test_options()).await;
    let b = connect(&cluster, "guard", test_options()).await;
    bounded(secs(60), async {
        let leader_key = "rampart/leader";
        let assignment = "rampart/assignments/hv1";
        let campaign = |me: &str, lease: LeaseId| {
            Txn::new()
                .when([Compare::absent(leader_key)])
                .and_then([Op::put_with_lease(leader_key, me, lease)])
                .or_else([Op::get(leader_key)])
        };
        let guarded = |me: &str, rev: i64, value: &str| {
            Txn::new()
                .when([
                    Compare::value(leader_key, CompareOp::Equal, me),
                    Compare::mod_revision(leader_key, CompareOp::Equal, rev),
                ])
                .and_then([Op::put(assignment, value)])
        };

        let lease_a = a.grant_lease(secs(2)).await.unwrap();
        let won = a.txn(campaign("controller-a", lease_a)).await.unwrap();
        assert!(won.succeeded);
        let a_rev = won.revision;
        assert!(
            a.txn(guarded("controller-a", a_rev, "gen 1 by a"))
                .await
                .unwrap()
                .succeeded
        );

        let lease_b = b.grant_lease(secs(5)).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (_, keeper) = spawn_keeper(b.clone(), lease_b, stop.clone());

        // A stalls and stops renewing; meanwhile the etcd leader dies.
        let leader = cluster.leader().await;
        cluster.kill(leader);
        let deposed_at = Instant::now();
        let b_rev = loop {
            match b.txn(campaign("controller-b", lease_b)).await {
                Ok(resp) if resp.succeeded => break resp.revision,
                Ok(_) | Err(_) => {}
            }
            assert!(
                deposed_at.elapsed() < secs(20),
                "controller B never got elected"
            );
            tokio::time::sleep(millis(100)).await;
        };
        println!(
            "controller B elected {:?} after the etcd leader died and A stalled",
            deposed_at.elapsed()
        );
        assert!(
            b.txn(guarded("controller-b", b_rev, "gen 2 by b"))
                .await
                .unwrap()
                .succeeded
        );

        // A wakes up and writes what it planned.
        match a
            .txn(guarded("controller-a", a_rev, "gen 1 again by a"))
            .await
        {
            Ok(resp) => assert!(!resp.succeeded, "the deposed controller's write applied"),
            Err(e) => assert!(e.is_retryable(), "{e:?}"),
        }
        let kv = b.get(assignment.as_bytes()).await.unwrap().unwrap();
        assert_eq!(kv.value, b"gen 2 by b");
        assert_eq!(a.lease_time_to_live(lease_a).await.unwrap(), None);
        let err = a.keep_alive(lease_a).await.unwrap_err();
        assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err:?}");

        stop.store(true, Ordering::Relaxed);
        keeper.await.unwrap();
    })
    .await;
}

/// etcd refuses a transaction of more than 128 operations (`--max-txn-ops`); the controller's
/// guarded writes go in batches, each under the leader guard, and stop at the first refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_writes_larger_than_etcds_transaction_limit_go_in_batches() {
    use rampart::store::cluster::ClusterStore;
    let cluster = EtcdCluster::start(1).await;
    bounded(secs(60), async {
        let store = connect(&cluster, "batches", test_options()).await;
        // etcd itself refuses one transaction of 300 puts.
        let big = Txn::new().and_then((0..300).map(|i| Op::put(format!("raw/{i}"), b"x".to_vec())));
        assert!(
            store.txn(big).await.is_err(),
            "etcd accepted 300 operations in one transaction"
        );

        let cs = ClusterStore::new(store.clone() as Arc<dyn Store>, "c");
        let lease = store.grant_lease(secs(30)).await.unwrap();
        let elected = cs.campaign("me", lease).await.unwrap().expect("elected");
        let ops: Vec<Op> = (0..300)
            .map(|i| Op::put(cs.assignment_key(&format!("n{i:03}")), b"{}".to_vec()))
            .collect();
        assert!(cs.leader_txn("me", elected, &[], ops).await.unwrap());
        let (kvs, _) = store.range(b"c/assignments/").await.unwrap();
        assert_eq!(kvs.len(), 300, "every batch written");

        // A deposed leader writes nothing, however many operations it brings.
        let ops: Vec<Op> = (0..300)
            .map(|i| Op::put(cs.assignment_key(&format!("m{i:03}")), b"{}".to_vec()))
            .collect();
        assert!(!cs
            .leader_txn("someone-else", elected, &[], ops)
            .await
            .unwrap());
        let (kvs, _) = store.range(b"c/assignments/m").await.unwrap();
        assert!(kvs.is_empty());
    })
    .await;
}

/// The members by name and which one leads, as the controller's store-leader placement reads
/// them; and etcd's MoveLeader through the store, which only the leader serves (the store
/// finds it among the members).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_name_the_leader_and_leadership_moves_on_request() {
    let _one = one_cluster_at_a_time().await;
    let cluster = EtcdCluster::start(3).await;
    let s = connect(&cluster, "members", test_options()).await;
    bounded(secs(60), async {
        let m = s.members().await.unwrap().expect("etcd has members");
        let mut want: Vec<String> = (0..3).map(|i| format!("{}-{i}", cluster.name)).collect();
        want.sort();
        assert_eq!(m.names, want);
        assert_eq!(m.answering, want, "all three answer");
        // The store's view and etcd's own members name the same leader (polled: a follower
        // that has not heard from a new leader yet still names the old one).
        let agreed = || async {
            let deadline = Instant::now() + secs(10);
            loop {
                let m = s.members().await.unwrap().expect("etcd has members");
                let theirs = format!("{}-{}", cluster.name, cluster.leader().await);
                if m.leader.as_deref() == Some(theirs.as_str()) {
                    return theirs;
                }
                assert!(
                    Instant::now() < deadline,
                    "members() says {:?}, etcd's members {theirs}",
                    m.leader
                );
                tokio::time::sleep(millis(50)).await;
            }
        };
        let leader = agreed().await;
        let to = want.iter().find(|n| **n != leader).unwrap().clone();
        s.move_leader(&to).await.unwrap();
        let deadline = Instant::now() + secs(5);
        loop {
            let now = agreed().await;
            if now == to {
                break;
            }
            assert!(Instant::now() < deadline, "leadership still with {now}");
            tokio::time::sleep(millis(50)).await;
        }
        // Moving it where it already is changes nothing; an unknown member is refused.
        s.move_leader(&to).await.unwrap();
        assert_eq!(agreed().await, to);
        let err = s.move_leader("no-such-member").await.unwrap_err();
        assert!(err.to_string().contains("no-such-member"), "{err}");
    })
    .await;
}
