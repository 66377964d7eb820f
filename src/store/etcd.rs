//! The etcd [`Store`]: what production runs on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use rampart::store::{etcd::EtcdStore, Store};
//! let store: Arc<dyn Store> = EtcdStore::connect("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/prod").await?;
//! # Ok(()) }
//! ```
//!
//! The address format is described in [`super::url`]. Keys are stored under the address's
//! prefix; lease IDs and revisions are etcd's own and so are shared with everything else in the
//! same etcd cluster.
//!
//! # Robustness
//!
//! etcd-client spreads calls over every endpoint it was given. While a member is down, about
//! one call in four fails at once with `Unavailable`, and keep-alive and watch streams that ran
//! through that member break. This store hides what it safely can and reports the rest:
//!
//! - **Retries.** Each call is retried with exponential backoff and jitter, within a total
//!   budget ([`EtcdOptions::call_timeout`], 1.5 s by default: inside the default lease renew
//!   interval of 2 s, so a renewal loop never stalls on one call). Each attempt has its own
//!   deadline ([`EtcdOptions::attempt_timeout`], 500 ms) when it may be retried; a request stuck
//!   behind a dead leader is then sent again instead of waiting for etcd's own 5 s timeout.
//!   When the budget is spent, the last error is returned: the store never pretends.
//! - **What may be retried.** A failed attempt either *certainly did not apply* (the member
//!   could not be reached, or refused before doing anything: "no leader", "too many
//!   requests", ...) or *may have applied* (the connection broke or the attempt timed out after
//!   the request left). The first kind is retried for every call. The second kind is retried
//!   only when applying twice cannot do harm:
//!   - reads (`current_revision`, `lease_time_to_live`, transactions without writes),
//!     `keep_alive` (renewing twice is renewing), and opening a watch;
//!   - `grant_lease`: the store picks the lease ID itself, so a retry of a grant that did apply
//!     is answered "lease already exists" and the store knows the lease is its own;
//!   - `revoke`: a retry that finds the lease gone after an uncertain attempt counts as done;
//!   - transactions that only put, without compares (`Store::put`): applying them twice leaves
//!     the same values (watchers may see the same put twice, with consecutive revisions);
//!   - transactions whose compares make a second application impossible ("self-fencing"): some
//!     compare is `mod_revision == R` (R > 0) on a key the success branch writes or deletes
//!     (the write moves mod_revision past R for good), or "absent" (`create_revision == 0` or
//!     `version == 0`) on a key the success branch puts, and the failure branch writes nothing.
//!     If such a retry succeeds, the earlier attempt did not apply. If it fails its compares,
//!     the store cannot tell "someone else changed the key" from "my earlier attempt did
//!     it", so it returns the earlier uncertain error instead of a misleading
//!     `succeeded: false`. (An "absent" guard has one gap: if a third party deletes the key
//!     between the two attempts, the transaction applies twice; that is no different from the
//!     caller creating it again right after the delete.)
//!
//!   Every other transaction (deletes, guards on other keys such as a leader check) is
//!   returned as an uncertain error at once, as the [`StoreError`] docs require callers to
//!   expect: its caller re-reads and decides.
//! - **Keep-alive streams.** Each lease keeps one keep-alive stream, re-created when it breaks:
//!   a `keep_alive` that hits a broken stream opens a new one and renews through it, within the
//!   same call.
//! - **Watch streams.** A watch whose stream breaks (member killed, member without a leader,
//!   connection lost) is re-created from the last delivered revision + 1, so the consumer sees
//!   no gap and no duplicate. If history has been compacted meanwhile it gets
//!   [`StoreError::Compacted`]; if no member can be reached for
//!   [`EtcdOptions::watch_resume_timeout`] it gets [`StoreError::Unavailable`]. Responses that
//!   carry several revisions are split into one [`WatchResponse`] per revision.
//! - **Dead members.** A background task probes every member ([`EtcdOptions::health_interval`])
//!   and keeps only those that answer with a leader in the client's balancer, so calls stop
//!   going to a dead or isolated member; it adds a member back once it answers again. When no
//!   member answers, all are kept.
//! - Every request carries etcd's "require leader" flag, so a member cut off from the majority
//!   refuses at once ("no leader", certainly not applied) instead of waiting, and closes its
//!   watches, which then resume on a member that has a leader.

// `etcd-tls` (TLS through etcd-client's `tls` feature) is used below before Cargo.toml
// declares it; until it does, the TLS code is left out and etcds:// addresses are refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client as ec;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::url::{parse_etcd_url, AddressError, EtcdAddress};
use super::{
    Compare, CompareOp, CompareTarget, KeyValue, LeaseId, Op, OpResponse, Store, StoreError, Txn,
    TxnResponse, WatchEvent, WatchResponse, WatchStream,
};

/// Timing of the etcd store. The defaults suit etcd's default timing and Rampart's default
/// lease (TTL 10 s, renewed every 2 s).
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Bound on one store call, retries and backoff included.
    pub call_timeout: Duration,
    /// Bound on one attempt (one request and its answer) of a call that may be retried after
    /// an uncertain failure; other calls wait up to `call_timeout` for their one uncertain
    /// attempt. A request sent through a follower when the leader dies is not failed by etcd
    /// until its own request timeout (5 s and more), so this is what bounds the unavailability
    /// seen after a leader loss: election time, or this, whichever is longer.
    pub attempt_timeout: Duration,
    /// First backoff between attempts; doubled after each failure, up to `backoff_max`. Each
    /// sleep is drawn at random between half and all of the current backoff.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How long a broken watch tries to resume before it reports `Unavailable` and ends.
    pub watch_resume_timeout: Duration,
    /// How often every member is probed; see the module docs.
    pub health_interval: Duration,
    /// How long a probe may take before its member counts as down.
    pub health_timeout: Duration,
    /// TCP connect timeout per member.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval and timeout on open streams, to notice a member that
    /// vanished without closing its connections. etcd answers pings more often than every 5 s
    /// (`--grpc-keepalive-min-time`) with "too many pings", so keep the interval above that.
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            call_timeout: Duration::from_millis(1500),
            attempt_timeout: Duration::from_millis(500),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(400),
            watch_resume_timeout: Duration::from_secs(5),
            // A dead member is out of the balancer within 0.6 s: before a 1 s lease runs
            // out, so the failover's own calls (the controller's lease, its fence record and
            // assignments) no longer go to the member that died with the node. Measured at
            // 1 s + 0.5 s, those calls hung on the dead member and cost the controller its
            // leadership in the middle of failovers.
            health_interval: Duration::from_millis(300),
            health_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_millis(500),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
        }
    }
}

/// Why [`EtcdStore::connect`] failed. Unreachable members are not an error here: calls fail
/// with [`StoreError::Unavailable`] until they can be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("{0}")]
    Tls(String),
    #[error("cannot set up the etcd client: {0}")]
    Client(String),
}

/// A [`Store`] backed by an etcd cluster (v3 API; tested against etcd 3.4).
pub struct EtcdStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// The balanced client every call goes through.
    client: ec::Client,
    prefix: Vec<u8>,
    options: EtcdOptions,
    /// One single-member client per endpoint URL, for health probes.
    probes: Vec<(String, ec::Client)>,
    /// The endpoint URLs currently in `client`'s balancer.
    active: tokio::sync::Mutex<BTreeSet<String>>,
    /// One open keep-alive stream per lease, taken out while in use.
    keepers: Mutex<HashMap<i64, (ec::LeaseKeeper, ec::LeaseKeepAliveStream)>>,
    /// Ends the health task.
    stop: Arc<Notify>,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    retries: AtomicU64,
    keep_alive_streams_opened: AtomicU64,
    watch_resumes: AtomicU64,
}

/// What the store had to do to hide failures, since it was connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EtcdStats {
    /// Attempts made again after a failure, over all calls.
    pub retries: u64,
    /// Keep-alive streams opened: one per lease, plus one each time a stream broke.
    pub keep_alive_streams_opened: u64,
    /// Watches re-created after their stream broke.
    pub watch_resumes: u64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster at `address` (see [`super::url`]) with default
    /// [`EtcdOptions`], and the address's `timeout` as the call budget if it has one.
    ///
    /// Must be called inside a Tokio runtime (it spawns the health task). It probes the members
    /// once (at most [`EtcdOptions::health_timeout`]) but does not fail when none answers.
    pub async fn connect(address: &str) -> Result<Arc<Self>, ConnectError> {
        let address = parse_etcd_url(address)?;
        let mut options = EtcdOptions::default();
        if let Some(timeout) = address.timeout {
            options.call_timeout = timeout;
            options.attempt_timeout = options.attempt_timeout.min(timeout);
        }
        Self::connect_with(&address, options).await
    }

    /// Like [`EtcdStore::connect`], with explicit options (the address's `timeout` is not
    /// applied).
    pub async fn connect_with(
        address: &EtcdAddress,
        options: EtcdOptions,
    ) -> Result<Arc<Self>, ConnectError> {
        let connect_options = connect_options(address, &options)?;
        let urls = address.endpoint_urls();
        let client = ec::Client::connect(&urls, Some(connect_options.clone()))
            .await
            .map_err(|e| ConnectError::Client(e.to_string()))?;
        let mut probes = Vec::new();
        for url in &urls {
            let probe = ec::Client::connect([url], Some(connect_options.clone()))
                .await
                .map_err(|e| ConnectError::Client(e.to_string()))?;
            probes.push((url.clone(), probe));
        }
        let shared = Arc::new(Shared {
            client,
            prefix: address.prefix.clone(),
            options,
            probes,
            active: tokio::sync::Mutex::new(urls.iter().cloned().collect()),
            keepers: Mutex::new(HashMap::new()),
            stop: Arc::new(Notify::new()),
            stats: Counters::default(),
        });
        shared.check_health().await;
        tokio::spawn(health_loop(Arc::downgrade(&shared), shared.stop.clone()));
        Ok(Arc::new(EtcdStore { shared }))
    }

    /// The prefix put in front of every key.
    pub fn prefix(&self) -> &[u8] {
        &self.shared.prefix
    }

    /// The endpoint URLs calls currently go to (members that answered the last probe, or all
    /// of them when none did).
    pub async fn active_endpoints(&self) -> Vec<String> {
        self.shared.active.lock().await.iter().cloned().collect()
    }

    /// What the store has had to do to hide failures so far.
    pub fn stats(&self) -> EtcdStats {
        let c = &self.shared.stats;
        EtcdStats {
            retries: c.retries.load(Ordering::Relaxed),
            keep_alive_streams_opened: c.keep_alive_streams_opened.load(Ordering::Relaxed),
            watch_resumes: c.watch_resumes.load(Ordering::Relaxed),
        }
    }

    /// Probes every member now instead of waiting for the next round.
    pub async fn check_health(&self) {
        self.shared.check_health().await;
    }
}

/// The cluster state behind an `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` address, for
/// commands that start outside a Tokio runtime (`rampart status`, `maintenance`, ...).
///
/// PREFIX names the cluster's keys (`etcd://h:2379/rampart/prod` keeps them under
/// `rampart/prod/`); it is required, so that a typo cannot make a command act on another
/// cluster's keys or on the root of the keyspace. The address is checked here; the connection is
/// made on first use, inside the runtime of that use (the gRPC channel lives in the runtime
/// that created it), so use the returned store within one runtime.
pub fn connect_cluster(url: &str) -> Result<super::cluster::ClusterStore, String> {
    let mut address = parse_etcd_url(url).map_err(|e| e.to_string())?;
    let prefix = String::from_utf8(std::mem::take(&mut address.prefix))
        .map_err(|_| format!("store address {url:?}: the prefix must be UTF-8"))?;
    let prefix = prefix.trim_end_matches('/').to_string();
    if prefix.is_empty() {
        return Err(format!(
            "store address {url:?} has no /PREFIX naming the cluster's keys, e.g. etcd://127.0.0.1:2379/rampart/prod"
        ));
    }
    let mut options = EtcdOptions::default();
    if let Some(timeout) = address.timeout {
        options.call_timeout = timeout;
        options.attempt_timeout = options.attempt_timeout.min(timeout);
    }
    connect_options(&address, &options).map_err(|e| e.to_string())?;
    let store = Arc::new(LazyEtcdStore {
        address,
        options,
        store: tokio::sync::OnceCell::new(),
    });
    Ok(super::cluster::ClusterStore::new(store, &prefix))
}

/// An [`EtcdStore`] made on first use; see [`connect_cluster`].
struct LazyEtcdStore {
    address: EtcdAddress,
    options: EtcdOptions,
    store: tokio::sync::OnceCell<Arc<EtcdStore>>,
}

impl LazyEtcdStore {
    async fn get(&self) -> Result<&EtcdStore, StoreError> {
        let store = self
            .store
            .get_or_try_init(|| EtcdStore::connect_with(&self.address, self.options.clone()))
            .await
            .map_err(|e| StoreError::invalid(e.to_string()))?;
        Ok(store)
    }
}

#[async_trait::async_trait]
impl Store for LazyEtcdStore {
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.get().await?.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.get().await?.keep_alive(lease).await
    }
    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.get().await?.revoke(lease).await
    }
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        self.get().await?.lease_time_to_live(lease).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.get().await?.txn(txn).await
    }
    async fn watch(
        &self,
        prefix: &[u8],
        from_revision: Option<i64>,
    ) -> Result<WatchStream, StoreError> {
        self.get().await?.watch(prefix, from_revision).await
    }
    async fn current_revision(&self) -> Result<i64, StoreError> {
        self.get().await?.current_revision().await
    }
    async fn members(&self) -> Result<Option<super::Members>, StoreError> {
        self.get().await?.members().await
    }
    async fn move_leader(&self, to: &str) -> Result<(), StoreError> {
        self.get().await?.move_leader(to).await
    }
}

fn connect_options(
    address: &EtcdAddress,
    options: &EtcdOptions,
) -> Result<ec::ConnectOptions, ConnectError> {
    let connect = ec::ConnectOptions::new()
        .with_require_leader(true)
        .with_connect_timeout(options.connect_timeout)
        .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
        .with_keep_alive_while_idle(false);
    match &address.tls {
        None => Ok(connect),
        Some(files) => with_tls(connect, files),
    }
}

#[cfg(not(feature = "etcd-tls"))]
fn with_tls(
    _connect: ec::ConnectOptions,
    _files: &super::url::TlsFiles,
) -> Result<ec::ConnectOptions, ConnectError> {
    Err(ConnectError::Tls(
        "etcds:// (TLS) needs the etcd-tls feature: this build's etcd client has no TLS \
         (build with `--features etcd-tls`, which enables etcd-client's `tls` feature)"
            .to_string(),
    ))
}

/// Client-certificate TLS with rustls. The CA is required: etcd clusters run on a private CA,
/// and trusting the system's roots instead would accept any publicly certified host.
#[cfg(feature = "etcd-tls")]
fn with_tls(
    connect: ec::ConnectOptions,
    files: &super::url::TlsFiles,
) -> Result<ec::ConnectOptions, ConnectError> {
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            ConnectError::Tls(format!("cannot read the {what} {}: {e}", path.display()))
        })
    };
    let ca = files.ca_cert.as_deref().ok_or_else(|| {
        ConnectError::Tls(
            "etcds:// needs cacert=FILE: the CA certificate that signed the etcd members' certificates"
                .to_string(),
        )
    })?;
    let mut tls = ec::TlsOptions::new()
        .ca_certificate(ec::Certificate::from_pem(read("CA certificate", ca)?));
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        tls = tls.identity(ec::Identity::from_pem(
            read("client certificate", cert)?,
            read("client key", key)?,
        ));
    }
    if let Some(domain) = &files.domain {
        tls = tls.domain_name(domain.clone());
    }
    Ok(connect.with_tls(tls))
}

/// Re-probes the members every `health_interval` until the store is dropped.
async fn health_loop(shared: Weak<Shared>, stop: Arc<Notify>) {
    loop {
        let interval = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.check_health().await;
            shared.options.health_interval
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.notified() => return,
        }
    }
}

/// How a failed attempt may be followed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// The request certainly did not apply: any call may retry it.
    NotApplied,
    /// It may or may not have applied: only calls that are safe to apply twice retry.
    Uncertain,
    /// Retrying cannot help.
    Never,
}

#[derive(Debug)]
struct Failure {
    error: StoreError,
    retry: Retry,
}

impl Failure {
    fn never(error: StoreError) -> Self {
        Failure {
            error,
            retry: Retry::Never,
        }
    }

    fn uncertain(error: StoreError) -> Self {
        Failure {
            error,
            retry: Retry::Uncertain,
        }
    }

    fn not_applied(error: StoreError) -> Self {
        Failure {
            error,
            retry: Retry::NotApplied,
        }
    }
}

/// The underlying cause kept in [`StoreError::Unavailable`], as text (etcd-client's errors
/// are not `Clone`).
#[derive(Debug)]
struct Cause(String);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Cause {}

fn unavailable(cause: impl Into<String>) -> StoreError {
    StoreError::Unavailable {
        source: Some(Arc::new(Cause(cause.into()))),
    }
}

/// The whole chain of an error's messages: tonic hides the interesting part ("Connection
/// refused") in its sources.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Messages of errors raised before the request reached a member that could apply it.
const NOT_APPLIED: &[&str] = &[
    "etcdserver: no leader",
    "etcdserver: not capable",
    "etcdserver: too many requests",
    "proposal dropped",
    "tcp connect error",
    "error trying to connect",
    "Connection refused",
    "connection refused",
    "dns error",
    // The TLS handshake failed: nothing was sent.
    "invalid peer certificate",
];

/// Sorts an etcd-client error into what the store reports and whether it may be retried.
/// Lease and compaction errors carry placeholder values that the caller fills in.
fn classify(err: ec::Error) -> Failure {
    match &err {
        ec::Error::GRpcStatus(status) => {
            classify_grpc(status.code() as i32, status.message(), error_chain(status))
        }
        ec::Error::InvalidArgs(reason) => Failure::never(StoreError::invalid(reason.clone())),
        ec::Error::InvalidUri(e) => Failure::never(StoreError::invalid(e.to_string())),
        ec::Error::LeaseKeepAliveError(m) if m.contains("lease not found") => {
            Failure::never(StoreError::LeaseNotFound { lease: LeaseId(0) })
        }
        ec::Error::TransportError(_) => {
            let text = error_chain(&err);
            if NOT_APPLIED.iter().any(|m| text.contains(m)) {
                Failure::not_applied(unavailable(text))
            } else {
                Failure::uncertain(unavailable(text))
            }
        }
        _ => Failure::uncertain(unavailable(error_chain(&err))),
    }
}

/// gRPC status codes (etcd-client does not re-export tonic's `Code`).
mod code {
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// `message` is the status's own message, `text` the whole chain of its causes.
fn classify_grpc(code: i32, message: &str, text: String) -> Failure {
    match code {
        code::NOT_FOUND if message.contains("lease not found") => {
            Failure::never(StoreError::LeaseNotFound { lease: LeaseId(0) })
        }
        code::OUT_OF_RANGE if message.contains("compacted") => Failure::never(StoreError::Compacted {
            requested: 0,
            compacted: 0,
        }),
        code::INVALID_ARGUMENT | code::FAILED_PRECONDITION | code::OUT_OF_RANGE | code::NOT_FOUND => {
            Failure::never(StoreError::invalid(format!("etcd refused the request: {message}")))
        }
        code::UNAUTHENTICATED | code::PERMISSION_DENIED => Failure::never(StoreError::invalid(
            format!("etcd refused the request (check the client certificate and etcd's permissions): {message}"),
        )),
        _ if NOT_APPLIED.iter().any(|m| text.contains(m)) => Failure::not_applied(unavailable(text)),
        code::DEADLINE_EXCEEDED => Failure::uncertain(StoreError::Timeout),
        _ if message.contains("timed out") => Failure::uncertain(StoreError::Timeout),
        _ => Failure::uncertain(unavailable(text)),
    }
}

/// Random bits without a random-number crate: std's hasher keys are random per process and
/// per hasher.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

/// A fresh lease ID: positive, non-zero, as etcd's own.
fn random_lease_id() -> i64 {
    ((random_u64() >> 1) as i64).max(1)
}

/// Half to all of `backoff`.
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    let nanos = half.as_nanos() as u64;
    half + Duration::from_nanos(if nanos == 0 { 0 } else { random_u64() % nanos })
}

impl Shared {
    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        full
    }

    fn strip_key(&self, key: &[u8]) -> Vec<u8> {
        key.strip_prefix(self.prefix.as_slice())
            .unwrap_or(key)
            .to_vec()
    }

    fn key_value(&self, kv: &ec::KeyValue) -> KeyValue {
        KeyValue {
            key: self.strip_key(kv.key()),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, may not be retried, or `budget` is
    /// spent. `idempotent` allows retrying after uncertain failures. The attempt gets the
    /// first uncertain error seen so far, if any, so it can interpret what a retry finds.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        budget: Duration,
        idempotent: bool,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(ec::Client, Option<StoreError>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let deadline = Instant::now() + budget;
        let mut backoff = self.options.backoff_initial;
        let mut uncertain: Option<StoreError> = None;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            // An attempt that may be repeated is cut short, so a request stuck on a member
            // that lost its leader is sent again elsewhere. One that may not be repeated after
            // an uncertain failure gets the whole budget: waiting is its only way to an answer.
            let limit = if idempotent {
                self.options.attempt_timeout.min(remaining)
            } else {
                remaining
            };
            let outcome =
                tokio::time::timeout(limit, attempt(self.client.clone(), uncertain.clone()))
                    .await
                    .unwrap_or_else(|_| Err(Failure::uncertain(StoreError::Timeout)));
            let failure = match outcome {
                Ok(value) => {
                    if attempts > 1 {
                        tracing::debug!(
                            call = what,
                            attempts,
                            "etcd call succeeded after retrying"
                        );
                    }
                    return Ok(value);
                }
                Err(failure) => failure,
            };
            let may_retry = match failure.retry {
                Retry::NotApplied => true,
                Retry::Uncertain => idempotent,
                Retry::Never => false,
            };
            if failure.retry == Retry::Uncertain && uncertain.is_none() {
                uncertain = Some(failure.error.clone());
            }
            let sleep = jitter(backoff);
            if !may_retry || Instant::now() + sleep >= deadline {
                if may_retry {
                    tracing::debug!(call = what, attempts, error = %failure.error, "etcd call gave up: budget spent");
                }
                return Err(failure.error);
            }
            tracing::debug!(call = what, attempts, error = ?failure.error, "etcd call failed; retrying");
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(sleep).await;
            backoff = (backoff * 2).min(self.options.backoff_max);
        }
    }

    /// The status of every member that answers within the health timeout, all asked at once:
    /// (index into `probes`, its member ID, the leader it knows, 0 for none), in index order.
    async fn statuses(&self) -> Vec<(usize, u64, u64)> {
        let mut asks = tokio::task::JoinSet::new();
        for (i, (_, client)) in self.probes.iter().enumerate() {
            let mut client = client.clone();
            let timeout = self.options.health_timeout;
            asks.spawn(async move {
                match tokio::time::timeout(timeout, client.status()).await {
                    Ok(Ok(s)) => Some((i, s.header().map_or(0, |h| h.member_id()), s.leader())),
                    _ => None,
                }
            });
        }
        let mut statuses = Vec::new();
        while let Some(r) = asks.join_next().await {
            if let Ok(Some(s)) = r {
                statuses.push(s);
            }
        }
        statuses.sort();
        statuses
    }

    /// The started members' names by ID, and [`Shared::statuses`].
    async fn member_view(
        &self,
    ) -> Result<(BTreeMap<u64, String>, Vec<(usize, u64, u64)>), StoreError> {
        let statuses = self.statuses().await;
        let mut client = self.client.clone();
        let list = match tokio::time::timeout(self.options.call_timeout, client.member_list()).await
        {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return Err(classify(e).error),
            Err(_) => return Err(unavailable("no etcd member listed the members".to_string())),
        };
        let names = list
            .members()
            .iter()
            .filter(|m| !m.name().is_empty())
            .map(|m| (m.id(), m.name().to_string()))
            .collect();
        Ok((names, statuses))
    }

    /// Probes every member; keeps those that answer with a leader in the balancer.
    async fn check_health(&self) {
        let healthy: BTreeSet<String> = self
            .statuses()
            .await
            .into_iter()
            .filter(|&(_, _, leader)| leader != 0)
            .map(|(i, _, _)| self.probes[i].0.clone())
            .collect();
        let target: BTreeSet<String> = if healthy.is_empty() {
            self.probes.iter().map(|(url, _)| url.clone()).collect()
        } else {
            healthy
        };
        let mut active = self.active.lock().await;
        if *active == target {
            return;
        }
        for url in target.difference(&active) {
            tracing::info!(endpoint = %url, "etcd member answers again; sending calls to it");
            if let Err(e) = self.client.add_endpoint(url).await {
                tracing::warn!(endpoint = %url, error = %e, "cannot add etcd endpoint");
            }
        }
        for url in active.difference(&target) {
            tracing::warn!(endpoint = %url, "etcd member does not answer; no longer sending calls to it");
            if let Err(e) = self.client.remove_endpoint(url).await {
                tracing::warn!(endpoint = %url, error = %e, "cannot remove etcd endpoint");
            }
        }
        *active = target;
    }

    fn etcd_txn(&self, txn: &Txn) -> ec::Txn {
        let compares: Vec<ec::Compare> = txn.compare.iter().map(|c| self.etcd_compare(c)).collect();
        let ops =
            |ops: &[Op]| -> Vec<ec::TxnOp> { ops.iter().map(|op| self.etcd_op(op)).collect() };
        ec::Txn::new()
            .when(compares)
            .and_then(ops(&txn.success))
            .or_else(ops(&txn.failure))
    }

    fn etcd_compare(&self, c: &Compare) -> ec::Compare {
        let key = self.full_key(&c.key);
        let op = match c.op {
            CompareOp::Equal => ec::CompareOp::Equal,
            CompareOp::NotEqual => ec::CompareOp::NotEqual,
            CompareOp::Greater => ec::CompareOp::Greater,
            CompareOp::Less => ec::CompareOp::Less,
        };
        match &c.target {
            CompareTarget::Value(v) => ec::Compare::value(key, op, v.clone()),
            CompareTarget::Version(n) => ec::Compare::version(key, op, *n),
            CompareTarget::CreateRevision(n) => ec::Compare::create_revision(key, op, *n),
            CompareTarget::ModRevision(n) => ec::Compare::mod_revision(key, op, *n),
        }
    }

    fn etcd_op(&self, op: &Op) -> ec::TxnOp {
        match op {
            Op::Put { key, value, lease } => ec::TxnOp::put(
                self.full_key(key),
                value.clone(),
                lease.map(|l| ec::PutOptions::new().with_lease(l.0)),
            ),
            Op::Delete { key } => ec::TxnOp::delete(self.full_key(key), None),
            Op::DeletePrefix { prefix } => ec::TxnOp::delete(
                self.full_key(prefix),
                Some(ec::DeleteOptions::new().with_prefix()),
            ),
            Op::Get { key } => ec::TxnOp::get(self.full_key(key), None),
            Op::Range { prefix } => ec::TxnOp::get(
                self.full_key(prefix),
                Some(ec::GetOptions::new().with_prefix()),
            ),
        }
    }

    fn txn_response(&self, resp: &ec::TxnResponse) -> TxnResponse {
        let responses = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                ec::TxnOpResponse::Put(_) => OpResponse::Put,
                ec::TxnOpResponse::Delete(d) => OpResponse::Delete {
                    deleted: d.deleted().max(0) as u64,
                },
                ec::TxnOpResponse::Get(g) => OpResponse::Range {
                    kvs: g.kvs().iter().map(|kv| self.key_value(kv)).collect(),
                },
                // Rampart never nests transactions.
                ec::TxnOpResponse::Txn(_) => OpResponse::Range { kvs: Vec::new() },
            })
            .collect();
        TxnResponse {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
            responses,
        }
    }

    /// Which lease a "lease not found" answer to `txn` is about: the only lease the
    /// transaction puts keys on, or else the first of them that is gone.
    async fn dead_lease(&self, txn: &Txn) -> LeaseId {
        let mut leases: Vec<LeaseId> = txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| match op {
                Op::Put { lease, .. } => *lease,
                _ => None,
            })
            .collect();
        leases.sort();
        leases.dedup();
        if leases.len() > 1 {
            for &lease in &leases {
                let mut client = self.client.clone();
                if let Ok(Ok(resp)) = tokio::time::timeout(
                    self.options.attempt_timeout,
                    client.lease_time_to_live(lease.0, None),
                )
                .await
                {
                    if resp.ttl() < 0 {
                        return lease;
                    }
                }
            }
        }
        leases.first().copied().unwrap_or(LeaseId(0))
    }

    /// Renews through the lease's keep-alive stream, opening one if there is none.
    async fn keep_alive_once(
        &self,
        client: ec::Client,
        lease: LeaseId,
    ) -> Result<Duration, Failure> {
        let not_found = || Failure::never(StoreError::LeaseNotFound { lease });
        let cached = self
            .keepers
            .lock()
            .expect("keepers poisoned")
            .remove(&lease.0);
        let (mut keeper, mut stream) = match cached {
            Some(open) => open,
            None => {
                self.stats
                    .keep_alive_streams_opened
                    .fetch_add(1, Ordering::Relaxed);
                // Opening sends a first renewal and waits for its answer.
                client
                    .lease_client()
                    .keep_alive(lease.0)
                    .await
                    .map_err(|e| match classify(e) {
                        Failure {
                            error: StoreError::LeaseNotFound { .. },
                            ..
                        } => not_found(),
                        other => other,
                    })?
            }
        };
        keeper.keep_alive().await.map_err(classify)?;
        match stream.message().await {
            Ok(Some(resp)) if resp.ttl() > 0 => {
                self.keepers
                    .lock()
                    .expect("keepers poisoned")
                    .insert(lease.0, (keeper, stream));
                Ok(Duration::from_secs(resp.ttl() as u64))
            }
            Ok(Some(_)) => Err(not_found()),
            Ok(None) => Err(Failure::uncertain(unavailable("keep-alive stream closed"))),
            Err(e) => Err(classify(e)),
        }
    }

    /// Opens a watch from `from` (None: from now) and waits until etcd has created it.
    /// Returns the stream and the first revision it will deliver.
    async fn open_watch(
        &self,
        client: ec::Client,
        prefix: Vec<u8>,
        from: Option<i64>,
    ) -> Result<(ec::WatchStream, i64), Failure> {
        let mut options = ec::WatchOptions::new().with_prefix().with_progress_notify();
        if let Some(r) = from {
            options = options.with_start_revision(r);
        }
        let mut stream = client
            .watch_client()
            .watch(prefix, Some(options))
            .await
            .map_err(classify)?;
        let first = stream.message().await.map_err(classify)?.ok_or_else(|| {
            Failure::uncertain(unavailable(
                "watch stream ended before the watch was created",
            ))
        })?;
        if first.canceled() {
            if first.compact_revision() > 0 {
                let requested = from.unwrap_or(0);
                return Err(Failure::never(StoreError::Compacted {
                    requested,
                    compacted: first.compact_revision() - 1,
                }));
            }
            return Err(Failure::uncertain(unavailable(format!(
                "etcd canceled the watch: {}",
                first.cancel_reason()
            ))));
        }
        if !first.created() {
            return Err(Failure::uncertain(unavailable(
                "watch stream answered before the watch was created",
            )));
        }
        let next = match from {
            Some(r) => r,
            None => first.header().map_or(0, |h| h.revision()) + 1,
        };
        Ok((stream, next))
    }

    /// Splits a watch response into one response per revision, leaving out revisions before
    /// `next` (already delivered).
    fn split_by_revision(&self, events: &[ec::Event], next: i64) -> Vec<WatchResponse> {
        let mut out: Vec<WatchResponse> = Vec::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            if revision < next {
                continue;
            }
            let event = match event.event_type() {
                ec::EventType::Put => WatchEvent::Put(self.key_value(kv)),
                ec::EventType::Delete => WatchEvent::Delete {
                    key: self.strip_key(kv.key()),
                    revision,
                },
            };
            match out.last_mut() {
                Some(last) if last.revision == revision => last.events.push(event),
                _ => out.push(WatchResponse {
                    revision,
                    events: vec![event],
                }),
            }
        }
        out
    }
}

/// Feeds one watch: forwards etcd's responses split per revision, and re-creates the etcd
/// watch from the next undelivered revision whenever its stream breaks.
async fn forward_watch(
    shared: Arc<Shared>,
    prefix: Vec<u8>,
    mut next: i64,
    mut stream: ec::WatchStream,
    tx: mpsc::Sender<Result<WatchResponse, StoreError>>,
) {
    loop {
        let message = tokio::select! {
            () = tx.closed() => return,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(resp)) if resp.canceled() && resp.compact_revision() > 0 => {
                let _ = tx
                    .send(Err(StoreError::Compacted {
                        requested: next,
                        compacted: resp.compact_revision() - 1,
                    }))
                    .await;
                return;
            }
            Ok(Some(resp)) if !resp.canceled() => {
                if resp.events().is_empty() {
                    // A progress notification: everything up to its revision has been sent.
                    if !resp.created() {
                        if let Some(h) = resp.header() {
                            next = next.max(h.revision() + 1);
                        }
                    }
                    continue;
                }
                for batch in shared.split_by_revision(resp.events(), next) {
                    next = batch.revision + 1;
                    if tx.send(Ok(batch)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Ok(Some(resp)) => {
                tracing::info!(
                    reason = resp.cancel_reason(),
                    next,
                    "etcd canceled a watch; resuming it"
                );
            }
            Ok(None) => tracing::info!(next, "etcd watch stream ended; resuming it"),
            Err(e) => tracing::info!(error = %e, next, "etcd watch stream broke; resuming it"),
        }
        let resumed = tokio::select! {
            () = tx.closed() => return,
            resumed = shared.call("watch (resume)", shared.options.watch_resume_timeout, true, |client, _| {
                shared.open_watch(client, prefix.clone(), Some(next))
            }) => resumed,
        };
        match resumed {
            Ok((new_stream, _)) => {
                shared.stats.watch_resumes.fetch_add(1, Ordering::Relaxed);
                stream = new_stream;
            }
            Err(error) => {
                tracing::warn!(%error, next, "cannot resume an etcd watch; ending it");
                let _ = tx.send(Err(error)).await;
                return;
            }
        }
    }
}

/// Whether a transaction may be retried after an attempt whose outcome is unknown, and how
/// to read the retry's answer. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnSafety {
    ReadOnly,
    BlindPuts,
    SelfFencing,
    Unsafe,
}

fn writes(ops: &[Op]) -> bool {
    ops.iter().any(|op| {
        matches!(
            op,
            Op::Put { .. } | Op::Delete { .. } | Op::DeletePrefix { .. }
        )
    })
}

fn txn_safety(txn: &Txn) -> TxnSafety {
    if !writes(&txn.success) && !writes(&txn.failure) {
        return TxnSafety::ReadOnly;
    }
    if txn.compare.is_empty()
        && txn
            .success
            .iter()
            .all(|op| matches!(op, Op::Put { .. } | Op::Get { .. } | Op::Range { .. }))
    {
        return TxnSafety::BlindPuts;
    }
    if !writes(&txn.failure) && txn.compare.iter().any(|c| fences_itself(c, &txn.success)) {
        return TxnSafety::SelfFencing;
    }
    TxnSafety::Unsafe
}

/// Whether applying `ops` makes `compare` false for good (see the module docs).
fn fences_itself(compare: &Compare, ops: &[Op]) -> bool {
    let key = compare.key.as_slice();
    let puts = || {
        ops.iter()
            .any(|op| matches!(op, Op::Put { key: k, .. } if k == key))
    };
    let removes = || {
        ops.iter().any(|op| match op {
            Op::Delete { key: k } => k == key,
            Op::DeletePrefix { prefix } => key.starts_with(prefix),
            _ => false,
        })
    };
    match (compare.op, &compare.target) {
        (CompareOp::Equal, CompareTarget::ModRevision(r)) if *r > 0 => puts() || removes(),
        (CompareOp::Equal, CompareTarget::CreateRevision(0))
        | (CompareOp::Equal, CompareTarget::Version(0)) => puts(),
        _ => false,
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::invalid("lease TTL must be positive"));
        }
        // etcd counts whole seconds; round up so the lease never lives shorter than asked.
        let seconds = ttl.as_secs() as i64 + i64::from(ttl.subsec_nanos() > 0);
        let id = AtomicI64::new(random_lease_id());
        let shared = &self.shared;
        let granted = shared
            .call(
                "grant_lease",
                shared.options.call_timeout,
                true,
                |mut client, uncertain| {
                    let id = &id;
                    async move {
                        let wanted = id.load(Ordering::Relaxed);
                        let options = ec::LeaseGrantOptions::new().with_id(wanted);
                        match client.lease_grant(seconds, Some(options)).await {
                            Ok(resp) if resp.error().is_empty() => Ok(LeaseId(resp.id())),
                            Ok(resp) => Err(Failure::never(StoreError::invalid(format!(
                                "etcd refused the lease: {}",
                                resp.error()
                            )))),
                            Err(ec::Error::GRpcStatus(s))
                                if s.message().contains("lease already exists") =>
                            {
                                if uncertain.is_some() {
                                    // An earlier attempt of this call granted it.
                                    Ok(LeaseId(wanted))
                                } else {
                                    // Someone else's lease has this ID: draw another.
                                    id.store(random_lease_id(), Ordering::Relaxed);
                                    Err(Failure::not_applied(unavailable("lease ID taken")))
                                }
                            }
                            Err(e) => Err(classify(e)),
                        }
                    }
                },
            )
            .await?;
        Ok(granted)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let shared = &self.shared;
        shared
            .call(
                "keep_alive",
                shared.options.call_timeout,
                true,
                |client, _| shared.keep_alive_once(client, lease),
            )
            .await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let shared = &self.shared;
        shared
            .keepers
            .lock()
            .expect("keepers poisoned")
            .remove(&lease.0);
        shared
            .call(
                "revoke",
                shared.options.call_timeout,
                true,
                |mut client, uncertain| async move {
                    match client.lease_revoke(lease.0).await {
                        Ok(_) => Ok(()),
                        Err(e) => match classify(e) {
                            Failure {
                                error: StoreError::LeaseNotFound { .. },
                                ..
                            } => {
                                if uncertain.is_some() {
                                    // Most likely our own earlier attempt revoked it.
                                    Ok(())
                                } else {
                                    Err(Failure::never(StoreError::LeaseNotFound { lease }))
                                }
                            }
                            other => Err(other),
                        },
                    }
                },
            )
            .await
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        let shared = &self.shared;
        shared
            .call(
                "lease_time_to_live",
                shared.options.call_timeout,
                true,
                |mut client, _| async move {
                    match client.lease_time_to_live(lease.0, None).await {
                        // etcd answers TTL -1 for a lease it does not know.
                        Ok(resp) if resp.ttl() < 0 => Ok(None),
                        Ok(resp) => Ok(Some(Duration::from_secs(resp.ttl() as u64))),
                        Err(e) => match classify(e) {
                            Failure {
                                error: StoreError::LeaseNotFound { .. },
                                ..
                            } => Ok(None),
                            other => Err(other),
                        },
                    }
                },
            )
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        txn.check()?;
        let shared = &self.shared;
        let safety = txn_safety(&txn);
        let request = shared.etcd_txn(&txn);
        let result = shared
            .call(
                "txn",
                shared.options.call_timeout,
                safety != TxnSafety::Unsafe,
                |mut client, uncertain| {
                    let request = request.clone();
                    async move {
                        let resp = client.txn(request).await.map_err(classify)?;
                        let resp = shared.txn_response(&resp);
                        if let (TxnSafety::SelfFencing, false, Some(earlier)) =
                            (safety, resp.succeeded, uncertain)
                        {
                            // The compares failed, perhaps because our earlier attempt applied.
                            return Err(Failure::never(earlier));
                        }
                        Ok(resp)
                    }
                },
            )
            .await;
        match result {
            Err(StoreError::LeaseNotFound { .. }) => Err(StoreError::LeaseNotFound {
                lease: shared.dead_lease(&txn).await,
            }),
            other => other,
        }
    }

    async fn watch(
        &self,
        prefix: &[u8],
        from_revision: Option<i64>,
    ) -> Result<WatchStream, StoreError> {
        if let Some(r) = from_revision {
            if r <= 0 {
                return Err(StoreError::invalid(format!(
                    "watch start revision must be positive, got {r}"
                )));
            }
        }
        let shared = &self.shared;
        let full_prefix = shared.full_key(prefix);
        let (stream, next) = shared
            .call("watch", shared.options.call_timeout, true, |client, _| {
                shared.open_watch(client, full_prefix.clone(), from_revision)
            })
            .await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(forward_watch(shared.clone(), full_prefix, next, stream, tx));
        Ok(WatchStream::from_receiver(rx))
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        let shared = &self.shared;
        // Any key will do: the answer's header carries the store's revision.
        let key = if shared.prefix.is_empty() {
            vec![0]
        } else {
            shared.prefix.clone()
        };
        shared
            .call(
                "current_revision",
                shared.options.call_timeout,
                true,
                |mut client, _| {
                    let key = key.clone();
                    async move {
                        let resp = client
                            .get(key, Some(ec::GetOptions::new().with_count_only()))
                            .await
                            .map_err(classify)?;
                        Ok(resp.header().map_or(0, |h| h.revision()))
                    }
                },
            )
            .await
    }

    async fn members(&self) -> Result<Option<super::Members>, StoreError> {
        let (names, statuses) = self.shared.member_view().await?;
        let leader = statuses
            .iter()
            .map(|&(_, _, leader)| leader)
            .find(|&l| l != 0)
            .and_then(|l| names.get(&l).cloned());
        let mut answering: Vec<String> = statuses
            .iter()
            .filter(|&&(_, _, leader)| leader != 0)
            .filter_map(|(_, id, _)| names.get(id).cloned())
            .collect();
        answering.sort();
        let mut names: Vec<String> = names.into_values().collect();
        names.sort();
        Ok(Some(super::Members {
            leader,
            names,
            answering,
        }))
    }

    async fn move_leader(&self, to: &str) -> Result<(), StoreError> {
        let (names, statuses) = self.shared.member_view().await?;
        let Some((&target, _)) = names.iter().find(|(_, n)| n.as_str() == to) else {
            return Err(StoreError::invalid(format!(
                "no started etcd member is named `{to}`"
            )));
        };
        // MoveLeader is only served by the leader itself.
        let Some(&(probe, _, _)) = statuses.iter().find(|&&(_, id, leader)| id == leader) else {
            return Err(unavailable(
                "no etcd member answers as the leader".to_string(),
            ));
        };
        if statuses
            .iter()
            .any(|&(_, id, leader)| id == leader && id == target)
        {
            return Ok(());
        }
        let mut client = self.shared.probes[probe].1.clone();
        match tokio::time::timeout(self.shared.options.call_timeout, client.move_leader(target))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(e).error),
            Err(_) => Err(unavailable(format!(
                "moving the etcd leadership to `{to}` did not finish within {:?}",
                self.shared.options.call_timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_safety_of_transactions() {
        let leader = "rampart/leader";
        let cases = [
            (
                Txn::new().and_then([Op::get("a"), Op::range("b/")]),
                TxnSafety::ReadOnly,
            ),
            (
                Txn::new().and_then([Op::put("a", "1")]),
                TxnSafety::BlindPuts,
            ),
            (Txn::new().and_then([Op::delete("a")]), TxnSafety::Unsafe),
            (
                Txn::new()
                    .when([Compare::absent(leader)])
                    .and_then([Op::put(leader, "me")])
                    .or_else([Op::get(leader)]),
                TxnSafety::SelfFencing,
            ),
            (
                Txn::new()
                    .when([Compare::mod_revision("k", CompareOp::Equal, 7)])
                    .and_then([Op::put("k", "v2")]),
                TxnSafety::SelfFencing,
            ),
            (
                Txn::new()
                    .when([Compare::mod_revision("k", CompareOp::Equal, 7)])
                    .and_then([Op::delete_prefix("")]),
                TxnSafety::SelfFencing,
            ),
            // The guard is on another key: applying twice is possible.
            (
                Txn::new()
                    .when([Compare::mod_revision(leader, CompareOp::Equal, 7)])
                    .and_then([Op::put("assignments/hv1", "g2")]),
                TxnSafety::Unsafe,
            ),
            // A failure branch that writes could apply twice.
            (
                Txn::new()
                    .when([Compare::absent("k")])
                    .and_then([Op::put("k", "v")])
                    .or_else([Op::put("conflicts", "1")]),
                TxnSafety::Unsafe,
            ),
            // mod_revision == 0 means absent, and a delete does not falsify it.
            (
                Txn::new()
                    .when([Compare::mod_revision("k", CompareOp::Equal, 0)])
                    .and_then([Op::delete("k")]),
                TxnSafety::Unsafe,
            ),
            (
                Txn::new()
                    .when([Compare::value("k", CompareOp::Equal, "v1")])
                    .and_then([Op::put("k", "v2")]),
                TxnSafety::Unsafe,
            ),
        ];
        for (txn, expected) in cases {
            assert_eq!(txn_safety(&txn), expected, "{txn:?}");
        }
    }

    #[test]
    fn errors_are_sorted_by_what_a_retry_may_do() {
        let status = |code, message: &str| classify_grpc(code, message, message.to_string());
        const UNAVAILABLE: i32 = 14;
        const UNKNOWN: i32 = 2;
        let no_leader = status(UNAVAILABLE, "etcdserver: no leader");
        assert_eq!(no_leader.retry, Retry::NotApplied);
        assert!(no_leader.error.is_retryable());
        let timed_out = status(UNAVAILABLE, "etcdserver: request timed out");
        assert_eq!(timed_out.retry, Retry::Uncertain);
        assert!(matches!(timed_out.error, StoreError::Timeout));
        let reset = status(
            UNKNOWN,
            "h2 protocol error: error reading a body from connection",
        );
        assert_eq!(reset.retry, Retry::Uncertain);
        assert!(matches!(reset.error, StoreError::Unavailable { .. }));
        let lease = status(code::NOT_FOUND, "etcdserver: requested lease not found");
        assert!(matches!(lease.error, StoreError::LeaseNotFound { .. }));
        assert_eq!(lease.retry, Retry::Never);
        let dup = status(
            code::INVALID_ARGUMENT,
            "etcdserver: duplicate key given in txn request",
        );
        assert!(matches!(dup.error, StoreError::InvalidArgument { .. }));
        assert_eq!(dup.retry, Retry::Never);
        let compacted = status(
            code::OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert!(matches!(compacted.error, StoreError::Compacted { .. }));
        let denied = status(code::PERMISSION_DENIED, "etcdserver: permission denied");
        assert!(!denied.error.is_retryable());
    }

    #[test]
    fn jitter_stays_within_half_and_all_of_the_backoff() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(100));
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        assert!((0..100).all(|_| random_lease_id() > 0));
    }
}
