//! An in-memory [`Store`] for tests, the simulator and the embedded demo.
//!
//! It owns a whole etcd-like keyspace in one process: keys, leases, a bounded history of
//! changes for watches, and the watchers. All of it sits behind one mutex, so every call is
//! trivially atomic and linearizable, and watchers receive changes in revision order because
//! they are sent while the lock is held. The lock is never held across an `.await`.
//!
//! Time is `tokio::time::Instant`, so tests drive lease expiry with `tokio::time::pause()` and
//! `advance()` instead of sleeping. Leases are expired lazily at the start of every call (a
//! call never sees a lease that should be gone) and by a background task (so watchers see the
//! deletes of an expired lease even when nobody calls the store, as they would with etcd).
//!
//! It must never behave more kindly than etcd: anything etcd refuses (writing one key twice
//! in a transaction, putting a key on a dead lease, too many operations) is refused here too,
//! so that code passing its tests here does not fail in production.
//!
//! Failure injection: [`MemoryStore::set_available`] simulates an outage of the whole store.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::{
    Compare, CompareOp, CompareTarget, Key, KeyValue, LeaseId, Op, OpResponse, Store, StoreError,
    Txn, TxnResponse, WatchEvent, WatchResponse, WatchStream,
};

/// How many events the store keeps for watches that start in the past. Older revisions are
/// forgotten ("compacted"), as etcd's auto-compaction forgets them.
pub const DEFAULT_HISTORY_LIMIT: usize = 10_000;

pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Wakes the expiry task early: a lease was granted (its deadline may be the earliest),
    /// the store came back from an outage, or the store is being dropped.
    wake: Arc<Notify>,
}

impl MemoryStore {
    /// An empty store at revision 0, with its lease-expiry task running.
    ///
    /// Must be called inside a Tokio runtime (it spawns the expiry task). The task holds only
    /// a weak reference and ends when the store is dropped.
    pub fn new() -> Arc<Self> {
        Self::with_history_limit(DEFAULT_HISTORY_LIMIT)
    }

    /// Like [`MemoryStore::new`], keeping at most `limit` events of history (whole revisions
    /// are dropped, oldest first). Small limits let tests reach compaction quickly.
    pub fn with_history_limit(limit: usize) -> Arc<Self> {
        let store = Arc::new(MemoryStore {
            inner: Mutex::new(Inner::new(limit)),
            wake: Arc::new(Notify::new()),
        });
        tokio::spawn(expire_leases_in_background(
            Arc::downgrade(&store),
            store.wake.clone(),
        ));
        store
    }

    /// Simulates an outage (`false`) of the whole store, and the recovery from it (`true`).
    ///
    /// During an outage every call fails with [`StoreError::Unavailable`], and every open
    /// watch receives that error and ends, as a client's watch does when it loses its
    /// connection. Leases do not expire during an outage and all get their full TTL back on
    /// recovery: etcd does the same, because only a leader expires leases and a newly elected
    /// leader renews every lease. So a store outage by itself never kills a node's lease;
    /// agents still have to assume the worst while they cannot renew (S3).
    pub fn set_available(&self, available: bool) {
        let mut inner = self.lock();
        if inner.available == available {
            return;
        }
        inner.available = available;
        if available {
            tracing::info!("simulated store outage ends");
            let now = Instant::now();
            for lease in inner.leases.values_mut() {
                lease.expires_at = now + lease.ttl;
            }
            drop(inner);
            self.wake.notify_one();
        } else {
            tracing::info!("simulated store outage begins");
            for watcher in inner.watchers.drain(..) {
                // The receiver may already be gone; then there is nobody to tell.
                let _ = watcher.tx.send(Err(StoreError::unavailable()));
            }
        }
    }

    pub fn is_available(&self) -> bool {
        self.lock().available
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock can only come from a bug in this file; the state may
        // be half-updated, so refuse to go on rather than serve it.
        self.inner.lock().expect("memory store state poisoned")
    }

    /// Locks the state for a client call: fails during a simulated outage, and first expires
    /// the leases that are due, so the call sees exactly what etcd would show at this instant.
    fn begin(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let mut inner = self.lock();
        if !inner.available {
            return Err(StoreError::unavailable());
        }
        inner.expire_leases(Instant::now());
        Ok(inner)
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        // Lets the expiry task notice that the store is gone and end.
        self.wake.notify_one();
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let id = self.begin()?.grant(ttl, Instant::now())?;
        self.wake.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.begin()?.keep_alive(lease, Instant::now())
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut inner = self.begin()?;
        if inner.end_lease(lease) {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound { lease })
        }
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        let inner = self.begin()?;
        let now = Instant::now();
        Ok(inner
            .leases
            .get(&lease)
            .map(|l| l.expires_at.saturating_duration_since(now)))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.begin()?.txn(txn)
    }

    async fn watch(
        &self,
        prefix: &[u8],
        from_revision: Option<i64>,
    ) -> Result<WatchStream, StoreError> {
        self.begin()?.watch(prefix, from_revision)
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        Ok(self.begin()?.revision)
    }
}

/// Expires leases when they fall due, so that watchers learn of it without anyone calling the
/// store. Sleeps until the earliest deadline, or until woken because that may have changed.
async fn expire_leases_in_background(store: Weak<MemoryStore>, wake: Arc<Notify>) {
    loop {
        let deadline = {
            let Some(store) = store.upgrade() else {
                return;
            };
            let mut inner = store.lock();
            if inner.available {
                inner.expire_leases(Instant::now());
                inner.next_deadline()
            } else {
                // No lease expires during an outage; recovery wakes us.
                None
            }
        };
        match deadline {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

struct Inner {
    available: bool,
    /// Revision of the last change; 0 for an empty, never-written store.
    revision: i64,
    kvs: BTreeMap<Key, KeyValue>,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease_id: i64,
    /// Every change after `compacted`, one entry per revision, oldest first.
    history: VecDeque<WatchResponse>,
    history_events: usize,
    history_limit: usize,
    /// The newest revision no longer in `history`; watches must start after it.
    compacted: i64,
    watchers: Vec<Watcher>,
}

struct Lease {
    ttl: Duration,
    expires_at: Instant,
    keys: BTreeSet<Key>,
}

struct Watcher {
    prefix: Key,
    /// Changes before this revision are not wanted.
    start: i64,
    /// Unbounded because it is fed under the lock, where waiting for a slow reader is not an
    /// option; the readers are tests and the simulator, which keep up.
    tx: mpsc::UnboundedSender<Result<WatchResponse, StoreError>>,
}

impl Watcher {
    /// Sends what this watcher wants of a revision's changes. Returns false once the watch's
    /// stream has been dropped, so the watcher can be forgotten.
    fn offer(&self, changes: &WatchResponse) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if changes.revision < self.start {
            return true;
        }
        let events: Vec<WatchEvent> = changes
            .events
            .iter()
            .filter(|e| e.key().starts_with(&self.prefix))
            .cloned()
            .collect();
        if events.is_empty() {
            return true;
        }
        self.tx
            .send(Ok(WatchResponse {
                revision: changes.revision,
                events,
            }))
            .is_ok()
    }
}

impl Inner {
    fn new(history_limit: usize) -> Self {
        Inner {
            available: true,
            revision: 0,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
            next_lease_id: 1,
            history: VecDeque::new(),
            history_events: 0,
            history_limit,
            compacted: 0,
            watchers: Vec::new(),
        }
    }

    fn grant(&mut self, ttl: Duration, now: Instant) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::invalid("lease TTL must be positive"));
        }
        let id = LeaseId(self.next_lease_id);
        self.next_lease_id += 1;
        self.leases.insert(
            id,
            Lease {
                ttl,
                expires_at: now + ttl,
                keys: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<Duration, StoreError> {
        let lease = self
            .leases
            .get_mut(&id)
            .ok_or(StoreError::LeaseNotFound { lease: id })?;
        lease.expires_at = now + lease.ttl;
        Ok(lease.ttl)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expires_at).min()
    }

    /// Ends every lease whose deadline has passed, earliest first. Each lease's keys go in a
    /// revision of their own, with a delete event per key, because that is what etcd does (it
    /// revokes an expired lease through an ordinary delete transaction): watchers cannot tell
    /// an expiry from a delete, and a watch resumed from a revision replays expiries too.
    fn expire_leases(&mut self, now: Instant) {
        loop {
            let due = self
                .leases
                .iter()
                .filter(|(_, lease)| lease.expires_at <= now)
                .min_by_key(|(id, lease)| (lease.expires_at, **id))
                .map(|(id, _)| *id);
            let Some(id) = due else { break };
            tracing::debug!(lease = %id, "lease expired");
            self.end_lease(id);
        }
    }

    /// Removes a lease and deletes its keys. Returns whether the lease existed.
    fn end_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        let rev = self.revision + 1;
        let events = lease
            .keys
            .iter()
            .filter_map(|key| self.delete_key(key, rev))
            .collect();
        self.commit(rev, events);
        true
    }

    fn txn(&mut self, txn: Txn) -> Result<TxnResponse, StoreError> {
        txn.check()?;
        let succeeded = txn.compare.iter().all(|c| self.holds(c));
        let ops = if succeeded { txn.success } else { txn.failure };
        // The transaction is all or nothing, so refuse a dead lease before writing anything.
        for op in &ops {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
            {
                if !self.leases.contains_key(lease) {
                    return Err(StoreError::LeaseNotFound { lease: *lease });
                }
            }
        }
        // Every write of the transaction carries the same revision; it becomes the store's
        // revision only if something was written.
        let rev = self.revision + 1;
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                Op::Put { key, value, lease } => {
                    events.push(self.put_key(key, value, lease, rev));
                    OpResponse::Put
                }
                Op::Delete { key } => {
                    let deleted = self.delete_key(&key, rev);
                    let count = u64::from(deleted.is_some());
                    events.extend(deleted);
                    OpResponse::Delete { deleted: count }
                }
                Op::DeletePrefix { prefix } => {
                    let keys: Vec<Key> = self.range(&prefix).map(|kv| kv.key.clone()).collect();
                    let before = events.len();
                    events.extend(keys.iter().filter_map(|key| self.delete_key(key, rev)));
                    OpResponse::Delete {
                        deleted: (events.len() - before) as u64,
                    }
                }
                Op::Get { key } => OpResponse::Range {
                    kvs: self.kvs.get(&key).cloned().into_iter().collect(),
                },
                Op::Range { prefix } => OpResponse::Range {
                    kvs: self.range(&prefix).cloned().collect(),
                },
            };
            responses.push(response);
        }
        self.commit(rev, events);
        Ok(TxnResponse {
            succeeded,
            revision: self.revision,
            responses,
        })
    }

    /// Evaluates a compare the way etcd does: an absent key has version, create_revision and
    /// mod_revision 0, and no value at all, so a value compare on it is false.
    fn holds(&self, compare: &Compare) -> bool {
        let kv = self.kvs.get(&compare.key);
        let ordering = match (&compare.target, kv) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(value), Some(kv)) => kv.value.as_slice().cmp(value.as_slice()),
            (CompareTarget::Version(n), kv) => kv.map_or(0, |kv| kv.version).cmp(n),
            (CompareTarget::CreateRevision(n), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(n),
            (CompareTarget::ModRevision(n), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(n),
        };
        match compare.op {
            CompareOp::Equal => ordering.is_eq(),
            CompareOp::NotEqual => ordering.is_ne(),
            CompareOp::Greater => ordering.is_gt(),
            CompareOp::Less => ordering.is_lt(),
        }
    }

    fn range<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.kvs
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv)
    }

    /// Writes a key at revision `rev`. The caller has checked that the lease exists.
    fn put_key(
        &mut self,
        key: Key,
        value: Vec<u8>,
        lease: Option<LeaseId>,
        rev: i64,
    ) -> WatchEvent {
        let old = self.kvs.get(&key);
        let (create_revision, version) =
            old.map_or((rev, 1), |o| (o.create_revision, o.version + 1));
        let old_lease = old.and_then(|o| o.lease);
        if old_lease != lease {
            if let Some(old_lease) = old_lease.and_then(|id| self.leases.get_mut(&id)) {
                old_lease.keys.remove(&key);
            }
            if let Some(new_lease) = lease.and_then(|id| self.leases.get_mut(&id)) {
                new_lease.keys.insert(key.clone());
            }
        }
        let kv = KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: rev,
            version,
            lease,
        };
        self.kvs.insert(key, kv.clone());
        WatchEvent::Put(kv)
    }

    /// Deletes a key at revision `rev`; `None` if it did not exist.
    fn delete_key(&mut self, key: &[u8], rev: i64) -> Option<WatchEvent> {
        let kv = self.kvs.remove(key)?;
        if let Some(lease) = kv.lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.remove(key);
        }
        Some(WatchEvent::Delete {
            key: kv.key,
            revision: rev,
        })
    }

    /// Makes `rev` the current revision if anything changed, records the changes for watches
    /// that start in the past, and sends them to the live watchers.
    fn commit(&mut self, rev: i64, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        debug_assert_eq!(rev, self.revision + 1);
        self.revision = rev;
        let changes = WatchResponse {
            revision: rev,
            events,
        };
        self.watchers.retain(|watcher| watcher.offer(&changes));
        self.history_events += changes.events.len();
        self.history.push_back(changes);
        while self.history_events > self.history_limit {
            let Some(oldest) = self.history.pop_front() else {
                break;
            };
            self.history_events -= oldest.events.len();
            self.compacted = oldest.revision;
        }
    }

    fn watch(
        &mut self,
        prefix: &[u8],
        from_revision: Option<i64>,
    ) -> Result<WatchStream, StoreError> {
        let start = match from_revision {
            None => self.revision + 1,
            Some(r) if r > 0 => r,
            Some(r) => {
                return Err(StoreError::invalid(format!(
                    "watch start revision must be positive, got {r}"
                )))
            }
        };
        if start <= self.compacted {
            return Err(StoreError::Compacted {
                requested: start,
                compacted: self.compacted,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = Watcher {
            prefix: prefix.to_vec(),
            start,
            tx,
        };
        // Replay and registration happen under the same lock as every write, so no change
        // can fall between the history and the live stream, nor be sent twice.
        let first = self
            .history
            .partition_point(|changes| changes.revision < start);
        for changes in self.history.range(first..) {
            watcher.offer(changes);
        }
        self.watchers.push(watcher);
        Ok(WatchStream::from_unbounded(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Op {
        Op::put(key, value)
    }

    #[tokio::test(start_paused = true)]
    async fn a_txn_without_writes_keeps_the_revision() {
        let store = MemoryStore::new();
        store.put(b"a", b"1", None).await.unwrap();
        let resp = store
            .txn(Txn::new().and_then([Op::get("a"), Op::delete("missing")]))
            .await
            .unwrap();
        assert_eq!(resp.revision, 1);
        assert_eq!(
            resp.responses[1],
            OpResponse::Delete { deleted: 0 },
            "deleting an absent key deletes nothing"
        );
        assert_eq!(store.current_revision().await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn all_writes_of_a_txn_share_one_revision_and_reads_see_them() {
        let store = MemoryStore::new();
        let resp = store
            .txn(Txn::new().and_then([put("a", "1"), put("b", "2"), Op::range("")]))
            .await
            .unwrap();
        assert_eq!(resp.revision, 1);
        let OpResponse::Range { kvs } = &resp.responses[2] else {
            panic!("expected a range response, got {:?}", resp.responses[2]);
        };
        assert_eq!(kvs.len(), 2);
        assert!(kvs.iter().all(|kv| kv.mod_revision == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_what_etcd_refuses() {
        let store = MemoryStore::new();
        let cases = [
            Txn::new().and_then([put("a", "1"), put("a", "2")]),
            Txn::new().and_then([put("a/x", "1"), Op::delete_prefix("a/")]),
            Txn::new().or_else([Op::delete("a"), put("a", "1")]),
            Txn::new().and_then([put("", "1")]),
            Txn::new().when([Compare::absent("")]),
            Txn::new()
                .and_then((0..=crate::store::MAX_TXN_OPS).map(|i| put(&format!("k{i}"), "v"))),
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
            0,
            "nothing was written"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn put_on_a_dead_lease_writes_nothing() {
        let store = MemoryStore::new();
        let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
        store.revoke(lease).await.unwrap();
        let err = store
            .txn(Txn::new().and_then([put("a", "1"), Op::put_with_lease("b", "2", lease)]))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::LeaseNotFound { lease: l } if l == lease));
        assert_eq!(store.get(b"a").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn value_compare_on_absent_key_is_always_false() {
        let store = MemoryStore::new();
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

    #[tokio::test(start_paused = true)]
    async fn moving_a_key_to_another_lease_detaches_it_from_the_first() {
        let store = MemoryStore::new();
        let first = store.grant_lease(Duration::from_secs(5)).await.unwrap();
        let second = store.grant_lease(Duration::from_secs(60)).await.unwrap();
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
            2,
            "revoking an empty lease writes nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_in_deadline_order_one_revision_each() {
        let store = MemoryStore::new();
        let late = store.grant_lease(Duration::from_secs(10)).await.unwrap();
        let early = store.grant_lease(Duration::from_secs(5)).await.unwrap();
        store.put(b"late/a", b"", Some(late)).await.unwrap();
        store.put(b"late/b", b"", Some(late)).await.unwrap();
        store.put(b"early", b"", Some(early)).await.unwrap();
        let mut watch = store.watch(b"", None).await.unwrap();
        // Expire both in one lazy pass: no await between advancing and the lock.
        {
            let mut inner = store.lock();
            inner.expire_leases(Instant::now() + Duration::from_secs(11));
        }
        let first = watch.next().await.unwrap().unwrap();
        assert_eq!(first.revision, 4);
        assert_eq!(
            first.events,
            vec![WatchEvent::Delete {
                key: b"early".to_vec(),
                revision: 4
            }]
        );
        let second = watch.next().await.unwrap().unwrap();
        assert_eq!(second.revision, 5);
        let keys: Vec<&[u8]> = second.events.iter().map(WatchEvent::key).collect();
        assert_eq!(keys, [b"late/a".as_slice(), b"late/b".as_slice()]);
    }

    #[tokio::test(start_paused = true)]
    async fn history_drops_whole_revisions() {
        let store = MemoryStore::with_history_limit(3);
        store
            .txn(Txn::new().and_then([put("a", "1"), put("b", "1")]))
            .await
            .unwrap(); // rev 1, 2 events
        store.put(b"a", b"2", None).await.unwrap(); // rev 2, 3 events in all
        store.put(b"a", b"3", None).await.unwrap(); // rev 3: 4 events, rev 1 goes
        let err = store.watch(b"", Some(1)).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Compacted {
                    requested: 1,
                    compacted: 1
                }
            ),
            "{err:?}"
        );
        let mut watch = store.watch(b"", Some(2)).await.unwrap();
        assert_eq!(watch.next().await.unwrap().unwrap().revision, 2);
        assert_eq!(watch.next().await.unwrap().unwrap().revision, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_task_ends_with_the_store() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        let store = MemoryStore::new();
        let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
        store.put(b"k", b"", Some(lease)).await.unwrap();
        tokio::task::yield_now().await;
        assert_eq!(tasks(), before + 1, "the expiry task is running");
        drop(store);
        tokio::task::yield_now().await;
        assert_eq!(tasks(), before, "the expiry task ended with the store");
    }
}
