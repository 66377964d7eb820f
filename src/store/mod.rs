//! The coordination store: the one place where agents and the controller share state.
//!
//! The store owns node leases (liveness), the controller's leader key, per-node assignments,
//! agent reports and fence records. In production it is etcd; [`memory::MemoryStore`] serves
//! tests, the simulator and the embedded demo behind the same [`Store`] trait.
//!
//! The trait mirrors etcd's data model on purpose, so that code tested against the in-memory
//! store behaves the same on etcd:
//! - a flat, ordered space of byte-string keys and values;
//! - one global revision, incremented once by every transaction that changes something (all
//!   writes of one transaction share that revision);
//! - per key: `create_revision`, `mod_revision`, `version` and an optional lease;
//! - leases with a TTL that must be kept alive; when a lease expires or is revoked, all keys
//!   attached to it are deleted (one revision per lease, with a delete event per key);
//! - transactions `if (compares) then (ops) else (ops)`;
//! - watches on a prefix from a revision, delivering every change in revision order.
//!
//! What the store must never do: interpret keys or values (that belongs to the cluster-state
//! layer above it), decide anything, or hide a failure. A call that could not be carried out
//! returns an error; it never pretends to have succeeded, because S4 (a deposed leader's write
//! must fail) and S3 (an agent that cannot renew its lease stops its work) rest on that.

pub mod cluster;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
pub mod url;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

/// A key. Byte strings, as in etcd; Rampart's own keys are UTF-8 paths such as
/// `rampart/nodes/hv1/lease`.
pub type Key = Vec<u8>;

/// etcd refuses transactions with more compares, or more operations in one branch, than this
/// (its `--max-txn-ops` default). The in-memory store enforces the same limit so that code
/// which works in tests does not fail in production.
pub const MAX_TXN_OPS: usize = 128;

/// A lease: keys attached to it live only as long as it is kept alive.
///
/// etcd lease IDs are non-zero 64-bit integers; zero means "no lease", which is why
/// [`KeyValue::lease`] is an `Option` instead.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    /// Hexadecimal, as `etcdctl lease list` prints it, so IDs can be matched against etcd's
    /// own tools.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({self})")
    }
}

/// A key with its value and metadata, as etcd returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Key,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since it was last absent).
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// Number of writes since the key was created: 1 after the first put. Deleting the key
    /// resets it; a re-created key starts again at 1 with a new `create_revision`.
    pub version: i64,
    pub lease: Option<LeaseId>,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &Bytes(&self.key))
            .field("value", &Bytes(&self.value))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Shows a byte string as `b"..."` with non-printable bytes escaped, so keys and values in
/// test failures and logs are readable.
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.escape_ascii())
    }
}

/// How a [`Compare`] relates the key's current field to the given operand:
/// `Greater` means "the key's field is greater than the operand".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// Which field of the key a [`Compare`] tests, with the operand.
#[derive(Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// Bytewise comparison of the value. As in etcd, a value compare on an absent key is
    /// always false, whatever the operator: "absent" is not the empty value.
    Value(Vec<u8>),
    /// An absent key has version 0.
    Version(i64),
    /// An absent key has create_revision 0.
    CreateRevision(i64),
    /// An absent key has mod_revision 0.
    ModRevision(i64),
}

impl fmt::Debug for CompareTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompareTarget::Value(v) => f.debug_tuple("Value").field(&Bytes(v)).finish(),
            CompareTarget::Version(n) => f.debug_tuple("Version").field(n).finish(),
            CompareTarget::CreateRevision(n) => f.debug_tuple("CreateRevision").field(n).finish(),
            CompareTarget::ModRevision(n) => f.debug_tuple("ModRevision").field(n).finish(),
        }
    }
}

/// One condition of a transaction, evaluated against the state before the transaction.
#[derive(Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Key,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl fmt::Debug for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compare")
            .field("key", &Bytes(&self.key))
            .field("op", &self.op)
            .field("target", &self.target)
            .finish()
    }
}

impl Compare {
    pub fn value(key: impl Into<Key>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Value(value.into()),
        }
    }

    pub fn version(key: impl Into<Key>, op: CompareOp, version: i64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Version(version),
        }
    }

    pub fn create_revision(key: impl Into<Key>, op: CompareOp, revision: i64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::CreateRevision(revision),
        }
    }

    pub fn mod_revision(key: impl Into<Key>, op: CompareOp, revision: i64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::ModRevision(revision),
        }
    }

    /// The key does not exist: `create_revision == 0`, the usual etcd idiom for
    /// create-if-absent.
    pub fn absent(key: impl Into<Key>) -> Self {
        Compare::create_revision(key, CompareOp::Equal, 0)
    }

    /// The key exists.
    pub fn present(key: impl Into<Key>) -> Self {
        Compare::create_revision(key, CompareOp::Greater, 0)
    }
}

/// One operation of a transaction. Operations run in order and later reads see earlier writes
/// of the same transaction.
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a key. `lease: None` detaches the key from any lease it had, as an
    /// etcd put without a lease does.
    Put {
        key: Key,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Delete one key.
    Delete { key: Key },
    /// Delete every key that starts with the prefix (the empty prefix means every key).
    DeletePrefix { prefix: Key },
    /// Read one key.
    Get { key: Key },
    /// Read every key that starts with the prefix, in key order.
    Range { prefix: Key },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value, lease } => f
                .debug_struct("Put")
                .field("key", &Bytes(key))
                .field("value", &Bytes(value))
                .field("lease", lease)
                .finish(),
            Op::Delete { key } => f.debug_struct("Delete").field("key", &Bytes(key)).finish(),
            Op::DeletePrefix { prefix } => f
                .debug_struct("DeletePrefix")
                .field("prefix", &Bytes(prefix))
                .finish(),
            Op::Get { key } => f.debug_struct("Get").field("key", &Bytes(key)).finish(),
            Op::Range { prefix } => f
                .debug_struct("Range")
                .field("prefix", &Bytes(prefix))
                .finish(),
        }
    }
}

impl Op {
    pub fn put(key: impl Into<Key>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    pub fn put_with_lease(key: impl Into<Key>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    pub fn delete(key: impl Into<Key>) -> Self {
        Op::Delete { key: key.into() }
    }

    pub fn delete_prefix(prefix: impl Into<Key>) -> Self {
        Op::DeletePrefix {
            prefix: prefix.into(),
        }
    }

    pub fn get(key: impl Into<Key>) -> Self {
        Op::Get { key: key.into() }
    }

    pub fn range(prefix: impl Into<Key>) -> Self {
        Op::Range {
            prefix: prefix.into(),
        }
    }
}

/// `if (all compares hold) then (success ops) else (failure ops)`, applied atomically.
///
/// ```
/// use rampart::store::{Compare, CompareOp, Op, Txn};
/// // Write an assignment only while we are still the leader we think we are (S4).
/// let txn = Txn::new()
///     .when([Compare::mod_revision("rampart/leader", CompareOp::Equal, 7)])
///     .and_then([Op::put("rampart/assignments/hv1", "generation 3")])
///     .or_else([Op::get("rampart/leader")]);
/// assert_eq!(txn.success.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }

    /// Adds conditions; all must hold for the success branch to run.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compare.extend(compares);
        self
    }

    /// Adds operations to run when every condition holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds operations to run when some condition does not hold.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The result of one [`Op`], in the order of the branch that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResponse {
    Put,
    /// How many keys the delete removed (0 if none matched).
    Delete {
        deleted: u64,
    },
    /// For `Get`, zero or one key; for `Range`, the matching keys in key order.
    Range {
        kvs: Vec<KeyValue>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held, i.e. the success branch ran.
    pub succeeded: bool,
    /// The store's revision after the transaction. It is the revision of this transaction's
    /// writes if it wrote anything; a transaction that changed nothing leaves it unchanged.
    pub revision: i64,
    pub responses: Vec<OpResponse>,
}

/// One change seen by a watch.
#[derive(Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key after the write; `kv.mod_revision` is the write's revision.
    Put(KeyValue),
    /// The key was deleted at `revision`, by a delete or by the expiry or revocation of its
    /// lease.
    Delete { key: Key, revision: i64 },
}

impl WatchEvent {
    pub fn key(&self) -> &[u8] {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

impl fmt::Debug for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchEvent::Put(kv) => f.debug_tuple("Put").field(kv).finish(),
            WatchEvent::Delete { key, revision } => f
                .debug_struct("Delete")
                .field("key", &Bytes(key))
                .field("revision", revision)
                .finish(),
        }
    }
}

/// All the events of one revision that match a watch, in the order the transaction wrote
/// them. A revision's events are never split across responses, so a consumer that has applied
/// a response has a view consistent as of `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchResponse {
    pub revision: i64,
    pub events: Vec<WatchEvent>,
}

/// What a watch delivers: responses in increasing revision order, then possibly one error,
/// then the end of the stream.
///
/// Dropping the stream cancels the watch. After an error (the store became unreachable, or
/// the watch fell behind compaction) the watch is over: re-read what is needed with
/// [`Store::range`] and watch again from that read's revision + 1.
pub struct WatchStream {
    rx: WatchReceiver,
}

enum WatchReceiver {
    Bounded(mpsc::Receiver<Result<WatchResponse, StoreError>>),
    Unbounded(mpsc::UnboundedReceiver<Result<WatchResponse, StoreError>>),
}

impl WatchStream {
    /// For an implementation that forwards responses from a task (etcd's watch stream); the
    /// channel's bound gives that task back-pressure.
    pub fn from_receiver(rx: mpsc::Receiver<Result<WatchResponse, StoreError>>) -> Self {
        WatchStream {
            rx: WatchReceiver::Bounded(rx),
        }
    }

    /// For an implementation that sends while holding a lock and so cannot wait for room.
    pub fn from_unbounded(rx: mpsc::UnboundedReceiver<Result<WatchResponse, StoreError>>) -> Self {
        WatchStream {
            rx: WatchReceiver::Unbounded(rx),
        }
    }

    /// The next response, or `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<WatchResponse, StoreError>> {
        match &mut self.rx {
            WatchReceiver::Bounded(rx) => rx.recv().await,
            WatchReceiver::Unbounded(rx) => rx.recv().await,
        }
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

/// Why a store call failed.
///
/// Retryable errors ([`StoreError::is_retryable`]) say nothing about the outcome: a write that
/// timed out may or may not have been applied, so a retry must be guarded by compares (or be
/// idempotent), never blind. Terminal errors will fail the same way until the request changes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or has no quorum (or, in the in-memory store, a simulated
    /// outage).
    #[error("coordination store unavailable")]
    Unavailable {
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The request got no answer in time; it may or may not have been applied.
    #[error("coordination store request timed out")]
    Timeout,
    /// The lease has expired or was revoked (or never existed). Keys that were attached to it
    /// are gone; a new lease must be granted and the keys written again.
    #[error("lease {lease} not found (expired or revoked)")]
    LeaseNotFound { lease: LeaseId },
    /// The watch's start revision is older than the history the store keeps.
    #[error("revision {requested} has been compacted (history kept after revision {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    /// A request the store will never accept as written, e.g. an empty key, a transaction
    /// that writes one key twice, or too many operations.
    #[error("invalid store request: {reason}")]
    InvalidArgument { reason: String },
}

impl StoreError {
    /// Unavailable without an underlying cause.
    pub fn unavailable() -> Self {
        StoreError::Unavailable { source: None }
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        StoreError::InvalidArgument {
            reason: reason.into(),
        }
    }

    /// Whether the same request may succeed later (back off and retry), as opposed to failing
    /// the same way until the request changes.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } | StoreError::Timeout => true,
            StoreError::LeaseNotFound { .. }
            | StoreError::Compacted { .. }
            | StoreError::InvalidArgument { .. } => false,
        }
    }
}

/// The members of a replicated store, by name, as far as they answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The leading member's name, when one leads and it has a name.
    pub leader: Option<String>,
    /// The names of the started members.
    pub names: Vec<String>,
    /// The names of the members that answered just now, each with a leader.
    pub answering: Vec<String>,
}

/// The coordination store, modelled on etcd 3.4's KV, lease and watch APIs.
///
/// Every read is linearizable: it sees every write that completed before it began.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Grants a lease. etcd counts TTLs in whole seconds (rounding up, with a minimum of a
    /// few seconds); the TTL returned by [`Store::keep_alive`] is the one actually in force.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews the lease for its full TTL and returns that TTL. Fails with
    /// [`StoreError::LeaseNotFound`] once the lease has expired or been revoked: renewing
    /// cannot bring it (or its deleted keys) back.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Ends the lease now and deletes its keys. [`StoreError::LeaseNotFound`] if it is
    /// already gone.
    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// The time the lease has left, or `None` if it has expired or been revoked.
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError>;

    /// Applies a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;

    /// Starts a watch on every key beginning with `prefix` (the empty prefix watches
    /// everything). With `from_revision: Some(r)`, events from revision `r` on are delivered
    /// first (history replay), then live ones; with `None`, only changes after the call.
    ///
    /// A start revision older than the kept history fails with [`StoreError::Compacted`],
    /// either from this call or as the stream's first item (etcd reports it asynchronously);
    /// consumers must handle both.
    async fn watch(
        &self,
        prefix: &[u8],
        from_revision: Option<i64>,
    ) -> Result<WatchStream, StoreError>;

    /// The revision of the last change.
    async fn current_revision(&self) -> Result<i64, StoreError>;

    /// The members the store is replicated over and which one leads; `None` for a store that
    /// is not replicated (the in-memory one).
    async fn members(&self) -> Result<Option<Members>, StoreError> {
        Ok(None)
    }

    /// Hands the store's leadership to the member named `to` (etcd's MoveLeader).
    async fn move_leader(&self, to: &str) -> Result<(), StoreError> {
        Err(StoreError::invalid(format!(
            "this store has no members; cannot move its leadership to `{to}`"
        )))
    }

    /// Reads one key.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let resp = self.txn(Txn::new().and_then([Op::get(key)])).await?;
        Ok(single_range(resp)?.0.into_iter().next())
    }

    /// Reads every key starting with `prefix`, in key order, with the revision the read saw.
    /// Watching from that revision + 1 misses nothing and repeats nothing.
    async fn range(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, i64), StoreError> {
        let resp = self.txn(Txn::new().and_then([Op::range(prefix)])).await?;
        single_range(resp)
    }

    /// Writes a key unconditionally; returns the write's revision. Code that must not
    /// overwrite someone else's change (anything a leader writes) uses [`Store::txn`] instead.
    async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        let op = Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
        };
        Ok(self.txn(Txn::new().and_then([op])).await?.revision)
    }

    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        let resp = self.txn(Txn::new().and_then([Op::delete(key)])).await?;
        match resp.responses.as_slice() {
            [OpResponse::Delete { deleted }] => Ok(*deleted > 0),
            other => Err(StoreError::invalid(format!(
                "store answered a delete with {other:?}"
            ))),
        }
    }
}

fn single_range(resp: TxnResponse) -> Result<(Vec<KeyValue>, i64), StoreError> {
    let revision = resp.revision;
    match resp.responses.into_iter().next() {
        Some(OpResponse::Range { kvs }) => Ok((kvs, revision)),
        other => Err(StoreError::invalid(format!(
            "store answered a read with {other:?}"
        ))),
    }
}

impl Txn {
    /// Refuses what etcd refuses before looking at the data, for both branches (as etcd
    /// does), so a transaction that would fail in production fails in tests too, whichever
    /// branch runs. Both stores call it; the etcd store also because the key prefix would hide
    /// an empty key from etcd.
    pub fn check(&self) -> Result<(), StoreError> {
        let txn = self;
        if txn.compare.len() > MAX_TXN_OPS
            || txn.success.len() > MAX_TXN_OPS
            || txn.failure.len() > MAX_TXN_OPS
        {
            return Err(StoreError::invalid(format!(
                "too many operations in txn request (limit {MAX_TXN_OPS})"
            )));
        }
        if txn.compare.iter().any(|c| c.key.is_empty()) {
            return Err(StoreError::invalid("empty key in compare"));
        }
        check_branch(&txn.success)?;
        check_branch(&txn.failure)
    }
}

/// etcd refuses a transaction that writes a key twice, or puts and deletes the same key:
/// the order would matter and etcd applies all writes of a revision as one.
fn check_branch(ops: &[Op]) -> Result<(), StoreError> {
    let mut puts = std::collections::BTreeSet::new();
    for op in ops {
        match op {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } if key.is_empty() => {
                return Err(StoreError::invalid("empty key in txn operation"));
            }
            Op::Put { key, .. } if !puts.insert(key.as_slice()) => {
                return Err(StoreError::invalid(format!(
                    "duplicate key given in txn request: {}",
                    Bytes(key)
                )));
            }
            _ => {}
        }
    }
    for op in ops {
        let overlaps = match op {
            Op::Delete { key } => puts.contains(key.as_slice()),
            Op::DeletePrefix { prefix } => puts.iter().any(|k| k.starts_with(prefix)),
            _ => false,
        };
        if overlaps {
            return Err(StoreError::invalid(
                "txn request puts and deletes the same key",
            ));
        }
    }
    Ok(())
}

/// Make the watch on `key` if there is none, giving up after a short while (a dying store
/// must not hold up the loop that asks). Whether a new watch was made.
pub async fn ensure_watch(store: &dyn Store, key: &[u8], w: &mut Option<WatchStream>) -> bool {
    if w.is_some() {
        return false;
    }
    *w = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        store.watch(key, None),
    )
    .await
    .ok()
    .and_then(Result::ok);
    w.is_some()
}

/// The next event of a watch that may not exist (yet): never resolves without one, so a
/// `select!` branch on it simply stays idle until the watch is made.
pub async fn next_event(w: &mut Option<WatchStream>) -> Option<Result<WatchResponse, StoreError>> {
    match w {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
