//! Following a git repository: a private bare mirror of one branch, fetched on an interval or
//! when a webhook says so, each new head validated before it is accepted.
//!
//! [`GitSync`] keeps the mirror under a state directory (created on first use, then updated
//! with `fetch +refs/heads/BRANCH:refs/heads/BRANCH`, so force-pushes are followed). Every
//! [`GitSync::sync`] fetches (on its own thread, given up after a timeout), resolves the
//! branch head and, when that commit has not been seen before, reads the manifests at `PATH`
//! straight from the mirror's object database, validates them, and either *applies* the
//! revision (publishes its [`Desired`] on a `watch` channel) or *refuses* it with the reasons.
//! A refused revision changes nothing: the last good one stays current (S5). The state is
//! published as a serializable [`SourceStatus`].
//!
//! [`run`] is the poll loop: a sync on every interval tick and at once when triggered (the
//! webhook of [`super::webhook`] triggers it).
//!
//! Transports: local paths, `file://`, `git://` and plain `http://` work in every build.
//! `https://` and `ssh://` (or `user@host:path`) need git2's `https` / `ssh` features (OpenSSL,
//! libssh2; rampart's `git-remote` feature); a build without them refuses such a source when
//! the [`GitSync`] is created.
//!
//! Credentials ([`SyncOptions::credentials`], see [`super::credentials`]): an access token read
//! from a file (or an environment variable) for HTTP(S), a key file or the ssh-agent for SSH,
//! SSH host keys checked against known_hosts. A URL with a password in it is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use git2::{
    AutotagOption, ErrorCode, FetchOptions, FetchPrune, ObjectType, Oid, RemoteCallbacks,
    Repository,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch, Notify};

use super::credentials::{self, GitCredentials};
use super::git::{GitError, Revision};
use super::{is_hidden, is_manifest_name};
use crate::drivers::config::{host_configs, HostConfig};
use crate::manifest::{FenceDeviceSpec, Severity};
use crate::model::{Desired, Time};

/// Defaults of [`SyncOptions`].
pub const DEFAULT_BRANCH: &str = "main";
pub const DEFAULT_PATH: &str = "manifests";
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// At most this many fetches that timed out may still be running (hung on the network) before
/// a sync stops starting new ones. Each is cancelled and ends at the latest when libgit2's
/// socket timeout (see [`set_network_timeouts`]) fires.
const MAX_ABANDONED_FETCHES: usize = 2;

/// Limits that keep a huge or hostile repository from exhausting the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Total size of the manifest files (`*.yaml`, `*.yml`) under the path of one revision.
    pub max_manifest_bytes: u64,
    /// Number of manifest files under the path of one revision.
    pub max_manifest_files: usize,
    /// Bytes one fetch may receive; a fetch that goes past it is cancelled.
    pub max_fetch_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 256 * 1024 * 1024,
            max_manifest_files: 10_000,
            max_fetch_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The branch to follow.
    pub branch: String,
    /// The directory (or single file) inside the repository that holds the manifests; empty
    /// for the whole repository.
    pub path: PathBuf,
    /// How long one sync waits for its fetch before giving up on it (and cancelling it).
    pub fetch_timeout: Duration,
    pub limits: Limits,
    /// How to authenticate to the server (unused for local sources).
    pub credentials: GitCredentials,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            branch: DEFAULT_BRANCH.into(),
            path: PathBuf::from(DEFAULT_PATH),
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            limits: Limits::default(),
            credentials: GitCredentials::default(),
        }
    }
}

/// Why a [`GitSync`] cannot be set up at all. Problems that may go away (the remote is down,
/// the path does not exist yet) are not errors here: they show in the status of each sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("`{0}` is not a valid branch name")]
    BadBranch(String),
    #[error("source `{0}` is empty; give a repository path or URL")]
    EmptySource(String),
    #[error(
        "source `{url}`: {scheme} URLs need git2's `{feature}` transport, which this build of \
         rampart lacks; use a build with it, or serve the repository as a local path, file://, \
         git:// or http://"
    )]
    TransportUnavailable {
        url: String,
        scheme: String,
        feature: &'static str,
    },
    #[error("source `{url}`: unsupported URL scheme `{scheme}://`; use a local path, file://, git://, http://, https:// or ssh://")]
    UnsupportedScheme { url: String, scheme: String },
    #[error(
        "source `{0}` has a password in its URL, where process lists, logs and status would \
         show it; remove it from the URL, put the password or access token alone in a file \
         readable only by rampart's user, and give that file with --git-token-file (the user \
         name may stay in the URL, or go in --git-username)"
    )]
    PasswordInUrl(String),
    #[error("source `{url}`: {reason}")]
    Credentials { url: String, reason: String },
    #[error("cannot create the state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The last revision applied, as published to the controller.
#[derive(Debug, Clone)]
pub struct AppliedRevision {
    /// Full commit id.
    pub commit: String,
    pub desired: Desired,
    /// Each node's driver configuration, rendered from the same revision.
    pub hosts: Arc<BTreeMap<String, HostConfig>>,
    /// The fence devices, by name, for the real fencer.
    pub fence_devices: Arc<BTreeMap<String, FenceDeviceSpec>>,
    /// Validation warnings of the revision (it is applied despite them).
    pub warnings: Vec<String>,
    pub at: Time,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedStatus {
    pub commit: String,
    pub at: Time,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedStatus {
    pub commit: String,
    /// Why: located diagnostics (`manifests/vms/www.yaml:7:11: error: ...`), or that the path is
    /// missing, or a limit it breaks.
    pub reasons: Vec<String>,
    pub at: Time,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchStatus {
    pub at: Time,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `rampart status` shows about the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The source as given, with any password in the URL masked.
    pub source: String,
    pub branch: String,
    pub path: String,
    /// The revision in force. Stays put while newer revisions are refused or fetches fail.
    pub applied: Option<AppliedStatus>,
    /// The newest revision refused, when it is newer than the one applied (cleared when a
    /// later revision is applied).
    pub refused: Option<RefusedStatus>,
    /// The last attempt to fetch; `None` before the first sync.
    pub last_fetch: Option<FetchStatus>,
}

/// What one [`GitSync::sync`] did with the branch head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionOutcome {
    /// A new revision was validated and is now current.
    Applied { commit: String },
    /// A new revision failed validation (or a limit); the previous one stays current.
    Refused {
        commit: String,
        reasons: Vec<String>,
    },
    /// The head is the commit already seen (applied or refused).
    Unchanged { commit: String },
    /// There is no head to look at (never fetched, branch missing, mirror unreadable).
    Unavailable { reason: String },
}

/// The result of one sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub fetch: Result<(), String>,
    pub revision: RevisionOutcome,
}

/// How the source is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Remote {
    /// A directory on this machine (a path, or a `file://` URL).
    Local(PathBuf),
    /// A network URL libgit2 handles itself.
    Url(String),
}

/// One fetch running on its own thread.
struct Fetch {
    done: oneshot::Receiver<Result<(), String>>,
    cancel: Arc<AtomicBool>,
    started: Instant,
}

/// A private mirror of one branch of a repository, and the last good revision of it.
pub struct GitSync {
    source: String,
    remote: Remote,
    url: String,
    mirror: PathBuf,
    opts: SyncOptions,
    /// The commit last validated (applied or refused): a head equal to it is not re-checked.
    last_seen: Option<Oid>,
    /// A fetch this sync is waiting for (kept across a dropped `sync` future).
    current: Option<Fetch>,
    /// Fetches that timed out and were cancelled but have not ended yet.
    abandoned: Vec<Fetch>,
    desired_tx: watch::Sender<Option<Arc<AppliedRevision>>>,
    status_tx: watch::Sender<SourceStatus>,
}

impl std::fmt::Debug for GitSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSync")
            .field("source", &self.source)
            .field("mirror", &self.mirror)
            .field("branch", &self.opts.branch)
            .field("path", &self.opts.path)
            .finish_non_exhaustive()
    }
}

static NETWORK_TIMEOUTS: Once = Once::new();

/// Set libgit2's socket timeouts (connecting, and each read or write) for the whole process.
/// They are what finally ends a fetch hung on a silent server after a sync stopped waiting for
/// it. The first call wins and later ones return `false`; [`GitSync::new`] makes the call with
/// its fetch timeout if nobody did before, so set them explicitly when running several
/// [`GitSync`]s with different timeouts.
pub fn set_network_timeouts(connect: Duration, io: Duration) -> bool {
    let mut first = false;
    NETWORK_TIMEOUTS.call_once(|| {
        let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: libgit2 reads these two integers when it opens a socket. Every fetch of this
        // module starts after `GitSync::new`, which passes through this `Once`, so the writes
        // happen-before any read by our fetches; nothing else in rampart opens git sockets.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
            let _ = git2::opts::set_server_timeout_in_milliseconds(ms(io));
        }
        first = true;
    });
    first
}

fn now() -> Time {
    Time(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

/// `https://user:token@host/x` → `https://user:***@host/x`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        // An SSH user name is no secret (`ssh://git@host/...`).
        None if url[..scheme_end].to_ascii_lowercase().contains("ssh") => url.to_string(),
        // A lone user name may be a token (`https://TOKEN@host/...`).
        None => format!("{}***{}", &url[..scheme_end + 3], &rest[at..]),
    }
}

/// Classify a source string and refuse transports this build cannot serve.
fn parse_source(source: &str) -> Result<Remote, SyncError> {
    let s = source.trim();
    if s.is_empty() {
        return Err(SyncError::EmptySource(source.into()));
    }
    let version = git2::Version::get();
    let need = |scheme: &str, feature: &'static str, have: bool| {
        if have {
            Ok(Remote::Url(s.to_string()))
        } else {
            Err(SyncError::TransportUnavailable {
                url: redact_url(s),
                scheme: scheme.into(),
                feature,
            })
        }
    };
    if let Some(i) = s.find("://") {
        let scheme = s[..i].to_ascii_lowercase();
        return match scheme.as_str() {
            "file" => Ok(Remote::Local(PathBuf::from(&s[i + 3..]))),
            "http" | "git" => Ok(Remote::Url(s.to_string())),
            "https" => need("https://", "https", version.https()),
            "ssh" | "ssh+git" | "git+ssh" => need("ssh://", "ssh", version.ssh()),
            _ => Err(SyncError::UnsupportedScheme {
                url: redact_url(s),
                scheme,
            }),
        };
    }
    // scp-like `git@host:org/repo.git`: a colon before any slash, and more than a drive letter.
    if let Some(colon) = s.find(':') {
        let before = &s[..colon];
        if colon > 1 && !before.contains('/') && !Path::new(s).exists() {
            return need("ssh (user@host:path)", "ssh", version.ssh());
        }
    }
    let path = Path::new(s);
    Ok(Remote::Local(
        std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    ))
}

impl GitSync {
    /// Follow `source` (a local path or a URL), keeping the mirror under `state_dir`. Nothing
    /// is fetched yet: the first [`sync`](Self::sync) does it.
    pub fn new(source: &str, state_dir: &Path, opts: SyncOptions) -> Result<GitSync, SyncError> {
        if opts.branch.is_empty()
            || !git2::Reference::is_valid_name(&format!("refs/heads/{}", opts.branch))
        {
            return Err(SyncError::BadBranch(opts.branch.clone()));
        }
        let remote = parse_source(source)?;
        if credentials::url_has_password(source.trim()) {
            return Err(SyncError::PasswordInUrl(redact_url(source.trim())));
        }
        if let Remote::Url(u) = &remote {
            let shown = redact_url(u);
            opts.credentials
                .check()
                .map_err(|reason| SyncError::Credentials {
                    url: shown.clone(),
                    reason,
                })?;
            let lower = u.to_ascii_lowercase();
            if opts.credentials.token.is_some() && lower.starts_with("http://") {
                tracing::warn!(
                    source = %shown,
                    "the git token is sent unencrypted over http://; use https://"
                );
            }
        }
        let url = match &remote {
            Remote::Local(p) => p.to_string_lossy().into_owned(),
            Remote::Url(u) => u.clone(),
        };
        let dir = state_dir.join("git");
        std::fs::create_dir_all(&dir).map_err(|source| SyncError::StateDir {
            path: dir.clone(),
            source,
        })?;
        let mirror = dir.join(mirror_name(&url));
        set_network_timeouts(opts.fetch_timeout, opts.fetch_timeout);
        let status = SourceStatus {
            source: redact_url(source.trim()),
            branch: opts.branch.clone(),
            path: opts.path.to_string_lossy().into_owned(),
            applied: None,
            refused: None,
            last_fetch: None,
        };
        Ok(GitSync {
            source: redact_url(source.trim()),
            remote,
            url,
            mirror,
            opts,
            last_seen: None,
            current: None,
            abandoned: Vec::new(),
            desired_tx: watch::channel(None).0,
            status_tx: watch::channel(status).0,
        })
    }

    /// The bare mirror (inspect it with `git --git-dir=PATH log BRANCH`).
    pub fn mirror_path(&self) -> &Path {
        &self.mirror
    }

    pub fn status(&self) -> SourceStatus {
        self.status_tx.borrow().clone()
    }

    /// The status, updated after every sync.
    pub fn subscribe_status(&self) -> watch::Receiver<SourceStatus> {
        self.status_tx.subscribe()
    }

    /// The last good revision; `None` until one is applied. It only ever changes to another
    /// validated revision.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<AppliedRevision>>> {
        self.desired_tx.subscribe()
    }

    pub fn current(&self) -> Option<Arc<AppliedRevision>> {
        self.desired_tx.borrow().clone()
    }

    /// Fetch, then look at the branch head. Returns within about the fetch timeout (plus the
    /// time validation of a new revision takes); a fetch that does not finish in time is
    /// cancelled and reported, and the head already in the mirror is still looked at.
    pub async fn sync(&mut self) -> SyncReport {
        let fetch = self.fetch().await;
        let fetched_at = now();
        let mut fetch_result = fetch.clone();

        let mirror = self.mirror.clone();
        let branch = self.opts.branch.clone();
        let path = self.opts.path.clone();
        let limits = self.opts.limits.clone();
        let last_seen = self.last_seen;
        let inspected = tokio::task::spawn_blocking(move || {
            inspect(&mirror, &branch, &path, &limits, last_seen)
        })
        .await
        .unwrap_or_else(|e| Inspected::Unavailable(format!("validation task failed: {e}")));

        let at = now();
        let mut status = self.status();
        let revision = match inspected {
            Inspected::Unavailable(reason) => {
                // Only worth a separate word when the fetch itself said nothing.
                if fetch_result.is_ok() {
                    fetch_result = Err(reason.clone());
                }
                RevisionOutcome::Unavailable { reason }
            }
            Inspected::Unchanged(oid) => RevisionOutcome::Unchanged {
                commit: oid.to_string(),
            },
            Inspected::Valid {
                commit,
                desired,
                hosts,
                fence_devices,
                warnings,
            } => {
                self.last_seen = Some(commit);
                let commit = commit.to_string();
                tracing::info!(source = %self.source, %commit, "applied a new revision");
                self.desired_tx.send_replace(Some(Arc::new(AppliedRevision {
                    commit: commit.clone(),
                    desired: *desired,
                    hosts: Arc::new(hosts),
                    fence_devices: Arc::new(fence_devices),
                    warnings: warnings.clone(),
                    at,
                })));
                status.applied = Some(AppliedStatus {
                    commit: commit.clone(),
                    at,
                    warnings,
                });
                status.refused = None;
                RevisionOutcome::Applied { commit }
            }
            Inspected::Refused { commit, reasons } => {
                self.last_seen = Some(commit);
                let commit = commit.to_string();
                tracing::warn!(
                    source = %self.source,
                    %commit,
                    reasons = %reasons.join("\n"),
                    "refused a revision; the last good one stays in force"
                );
                status.refused = Some(RefusedStatus {
                    commit: commit.clone(),
                    reasons: reasons.clone(),
                    at,
                });
                RevisionOutcome::Refused { commit, reasons }
            }
        };
        if let Err(e) = &fetch_result {
            tracing::warn!(source = %self.source, error = %e, "fetch failed");
        }
        status.last_fetch = Some(FetchStatus {
            at: fetched_at,
            ok: fetch_result.is_ok(),
            error: fetch_result.clone().err(),
        });
        self.status_tx.send_replace(status);
        SyncReport {
            fetch: fetch_result,
            revision,
        }
    }

    /// Run one fetch on its own thread and wait for it at most the fetch timeout.
    async fn fetch(&mut self) -> Result<(), String> {
        self.abandoned.retain_mut(|f| {
            !matches!(
                f.done.try_recv(),
                Ok(_) | Err(oneshot::error::TryRecvError::Closed)
            )
        });
        if self.current.is_none() {
            if self.abandoned.len() >= MAX_ABANDONED_FETCHES {
                let oldest = self.abandoned.iter().map(|f| f.started).min().unwrap();
                return Err(format!(
                    "{} earlier fetches from {} timed out and have not ended yet (the oldest \
                     started {}s ago); not starting another until one ends",
                    self.abandoned.len(),
                    self.source,
                    oldest.elapsed().as_secs()
                ));
            }
            let (tx, rx) = oneshot::channel();
            let cancel = Arc::new(AtomicBool::new(false));
            let job = FetchJob {
                remote: self.remote.clone(),
                url: self.url.clone(),
                source: self.source.clone(),
                mirror: self.mirror.clone(),
                branch: self.opts.branch.clone(),
                max_bytes: self.opts.limits.max_fetch_bytes,
                credentials: self.opts.credentials.clone(),
                cancel: cancel.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name("rampart-git-fetch".into())
                .spawn(move || {
                    let r = job.run();
                    let _ = tx.send(r);
                });
            if let Err(e) = spawned {
                return Err(format!("cannot start a fetch thread: {e}"));
            }
            self.current = Some(Fetch {
                done: rx,
                cancel,
                started: Instant::now(),
            });
        }
        // `current` is left in place while waiting so that a dropped `sync` future does not
        // lose track of the thread: the next sync waits for the same fetch.
        let f = self.current.as_mut().unwrap();
        let remaining = self.opts.fetch_timeout.saturating_sub(f.started.elapsed());
        match tokio::time::timeout(remaining, &mut f.done).await {
            Ok(r) => {
                self.current = None;
                r.unwrap_or_else(|_| Err("the fetch thread ended without an answer".into()))
            }
            Err(_) => {
                let f = self.current.take().unwrap();
                f.cancel.store(true, Ordering::SeqCst);
                self.abandoned.push(f);
                Err(format!(
                    "fetch from {} did not finish within {}s; cancelled (is the server \
                     responding? a first clone of a large repository may need a longer fetch \
                     timeout)",
                    self.source,
                    self.opts.fetch_timeout.as_secs_f64()
                ))
            }
        }
    }
}

impl Drop for GitSync {
    fn drop(&mut self) {
        for f in self.current.iter().chain(&self.abandoned) {
            f.cancel.store(true, Ordering::SeqCst);
        }
    }
}

/// `cluster-3f2a…9c.git`: readable, and distinct per source URL.
fn mirror_name(url: &str) -> String {
    let hash = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
    let stem = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("")
        .trim_end_matches(".git");
    let stem: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let stem = stem.trim_start_matches('.');
    if stem.is_empty() {
        format!("{hash}.git")
    } else {
        format!("{stem}-{hash}.git")
    }
}

/// Everything the fetch thread needs (owned, `Send`).
struct FetchJob {
    remote: Remote,
    url: String,
    source: String,
    mirror: PathBuf,
    branch: String,
    max_bytes: u64,
    credentials: GitCredentials,
    cancel: Arc<AtomicBool>,
}

impl FetchJob {
    fn run(&self) -> Result<(), String> {
        if let Remote::Local(path) = &self.remote {
            check_local_source(path)?;
        }
        let repo = self.open_mirror()?;
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| format!("{}: {}", self.source, e.message()))?;

        let aborted: Arc<Mutex<Option<String>>> = Arc::default();
        let mut callbacks = RemoteCallbacks::new();
        let auth_failure =
            credentials::install(&mut callbacks, &self.credentials, &self.url, &self.source);
        {
            let cancel = self.cancel.clone();
            let aborted = aborted.clone();
            let max = self.max_bytes;
            callbacks.transfer_progress(move |p| {
                if cancel.load(Ordering::SeqCst) {
                    *aborted.lock().unwrap() = Some("cancelled".into());
                    return false;
                }
                if p.received_bytes() as u64 > max {
                    *aborted.lock().unwrap() = Some(format!(
                        "the fetch passed the limit of {} received; the repository is too \
                         large to follow (keep the manifests in a smaller repository)",
                        human_bytes(max)
                    ));
                    return false;
                }
                true
            });
        }
        {
            let cancel = self.cancel.clone();
            callbacks.sideband_progress(move |_| !cancel.load(Ordering::SeqCst));
        }
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(callbacks)
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        let refspec = format!("+refs/heads/{0}:refs/heads/{0}", self.branch);
        if let Err(e) = remote.fetch(&[refspec.as_str()], Some(&mut fo), None) {
            if let Some(why) = aborted.lock().unwrap().take() {
                return Err(format!("fetch from {}: {why}", self.source));
            }
            if let Some(why) = auth_failure.lock().unwrap().take() {
                return Err(format!("fetch from {} failed: {why}", self.source));
            }
            let mut msg = format!("fetch from {} failed: {}", self.source, e.message());
            if e.code() == ErrorCode::Auth {
                msg.push_str(" (authentication failed; check the credentials)");
            } else if e.code() == ErrorCode::Certificate || e.class() == git2::ErrorClass::Ssl {
                msg.push_str(
                    " (TLS: the server's certificate must be signed by a CA the system trusts \
                     and name the host; for a private CA, point SSL_CERT_FILE at a bundle \
                     that includes it)",
                );
            }
            return Err(msg);
        }
        // The refs the remote advertised stay readable after the fetch disconnected.
        let wanted = format!("refs/heads/{}", self.branch);
        if let Ok(heads) = remote.list() {
            if !heads.iter().any(|h| h.name() == wanted) {
                let mut branches: Vec<&str> = heads
                    .iter()
                    .filter_map(|h| h.name().strip_prefix("refs/heads/"))
                    .collect();
                branches.truncate(10);
                return Err(format!(
                    "branch `{}` does not exist in {}{}",
                    self.branch,
                    self.source,
                    if branches.is_empty() {
                        " (it has no branches: an empty repository?)".to_string()
                    } else {
                        format!("; it has: {}", branches.join(", "))
                    }
                ));
            }
        }
        Ok(())
    }

    /// Open the mirror, creating it on first use. A mirror that cannot be opened (a crash in
    /// the middle of creating it, a disk problem) is ours to throw away and make again.
    fn open_mirror(&self) -> Result<Repository, String> {
        if self.mirror.exists() {
            match Repository::open_bare(&self.mirror) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    tracing::warn!(
                        mirror = %self.mirror.display(),
                        error = %e.message(),
                        "the mirror is unreadable; recreating it"
                    );
                    std::fs::remove_dir_all(&self.mirror).map_err(|e| {
                        format!(
                            "the mirror {} is unreadable and cannot be removed: {e}",
                            self.mirror.display()
                        )
                    })?;
                }
            }
        }
        // Create under a temporary name and rename, so a half-made mirror is never opened.
        let tmp = self
            .mirror
            .with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        Repository::init_bare(&tmp)
            .and_then(|r| r.remote("origin", &self.url).map(|_| ()))
            .map_err(|e| {
                format!(
                    "cannot create the mirror {}: {}",
                    self.mirror.display(),
                    e.message()
                )
            })?;
        std::fs::rename(&tmp, &self.mirror)
            .map_err(|e| format!("cannot create the mirror {}: {e}", self.mirror.display()))?;
        Repository::open_bare(&self.mirror).map_err(|e| {
            format!(
                "cannot open the mirror {}: {}",
                self.mirror.display(),
                e.message()
            )
        })
    }
}

/// A clear word for the usual mistakes with a local source.
fn check_local_source(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("source {} does not exist", path.display()))
        }
        Err(e) => Err(format!("source {}: {e}", path.display())),
        Ok(m) if !m.is_dir() => Err(format!(
            "source {} is not a directory, let alone a git repository",
            path.display()
        )),
        Ok(_) => match Repository::open(path) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "source {} is not a git repository (give the top directory of a repository \
                 or a bare repository): {}",
                path.display(),
                e.message()
            )),
        },
    }
}

enum Inspected {
    Unavailable(String),
    Unchanged(Oid),
    Valid {
        commit: Oid,
        desired: Box<Desired>,
        hosts: BTreeMap<String, HostConfig>,
        fence_devices: BTreeMap<String, FenceDeviceSpec>,
        warnings: Vec<String>,
    },
    Refused {
        commit: Oid,
        reasons: Vec<String>,
    },
}

/// Resolve the branch head in the mirror and, when it is new, validate it.
fn inspect(
    mirror: &Path,
    branch: &str,
    path: &Path,
    limits: &Limits,
    last_seen: Option<Oid>,
) -> Inspected {
    let repo = match Repository::open_bare(mirror) {
        Ok(r) => r,
        Err(e) => {
            return Inspected::Unavailable(format!(
                "nothing fetched yet (no mirror at {}: {})",
                mirror.display(),
                e.message()
            ))
        }
    };
    let head = match repo
        .find_reference(&format!("refs/heads/{branch}"))
        .and_then(|r| r.peel_to_commit())
    {
        Ok(c) => c.id(),
        Err(e) if e.code() == ErrorCode::NotFound => {
            return Inspected::Unavailable(format!("branch `{branch}` has not been fetched"))
        }
        Err(e) => {
            return Inspected::Unavailable(format!(
                "cannot read branch `{branch}` in the mirror {}: {}",
                mirror.display(),
                e.message()
            ))
        }
    };
    if last_seen == Some(head) {
        return Inspected::Unchanged(head);
    }
    let refuse = |reasons: Vec<String>| Inspected::Refused {
        commit: head,
        reasons,
    };
    if let Err(reason) = check_limits(&repo, head, path, limits) {
        return refuse(vec![reason]);
    }
    drop(repo);
    let revision = match Revision::open(mirror, &head.to_string(), path) {
        Ok(r) => r,
        Err(GitError::NoPath { path, .. }) => {
            return refuse(vec![format!(
                "path `{}` does not exist at commit {}; the manifests must be under it (or \
                 change the source path)",
                path.display(),
                short(head)
            )])
        }
        Err(e) => return refuse(vec![chain(&e)]),
    };
    let (report, desired) = Desired::load(&revision);
    let rendered = report.rendered();
    let texts = |sev: Severity| -> Vec<String> {
        rendered
            .iter()
            .filter(|r| r.severity == sev)
            .map(|r| r.to_text())
            .collect()
    };
    match desired {
        Ok(desired) => match host_configs(&report.set, &desired) {
            Ok(hosts) => Inspected::Valid {
                commit: head,
                desired: Box::new(desired),
                hosts,
                fence_devices: report
                    .set
                    .fence_devices
                    .iter()
                    .map(|(n, e)| (n.clone(), e.object.spec.clone()))
                    .collect(),
                warnings: texts(Severity::Warning),
            },
            // Validation should have caught it; never apply what cannot be rendered (S5).
            Err(e) => refuse(vec![format!("cannot render the host configuration: {e}")]),
        },
        Err(_) => {
            let mut reasons = texts(Severity::Error);
            if reasons.is_empty() {
                reasons.push("validation failed".into());
            }
            refuse(reasons)
        }
    }
}

fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    match n {
        n if n >= GIB && n % GIB == 0 => format!("{} GiB", n / GIB),
        n if n >= MIB => format!("{} MiB", n / MIB),
        n if n >= KIB => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

fn short(oid: Oid) -> String {
    oid.to_string()[..12].to_string()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Count and size the manifest files under `path` at `commit` without reading them (object
/// headers only), the same files the git source would read.
fn check_limits(
    repo: &Repository,
    commit: Oid,
    path: &Path,
    limits: &Limits,
) -> Result<(), String> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read commit {}: {}", short(commit), e.message()))?;
    let odb = repo
        .odb()
        .map_err(|e| format!("cannot read the mirror: {}", e.message()))?;
    let prefix = super::resolve_relative(Path::new("x"), &path.to_string_lossy());
    let (mut files, mut bytes) = (0usize, 0u64);
    let too_many = |files: usize, bytes: u64| -> Option<String> {
        if files > limits.max_manifest_files {
            Some(format!(
                "more than {} manifest files under `{}` at commit {}; refused as too large (split \
                 the repository or raise the limit)",
                limits.max_manifest_files,
                prefix.display(),
                short(commit)
            ))
        } else if bytes > limits.max_manifest_bytes {
            Some(format!(
                "the manifest files under `{}` at commit {} total more than {}; refused as too \
                 large (remove generated or binary files from it)",
                prefix.display(),
                short(commit),
                human_bytes(limits.max_manifest_bytes)
            ))
        } else {
            None
        }
    };
    let root = if prefix.as_os_str().is_empty() {
        tree
    } else {
        let entry = match tree.get_path(&prefix) {
            Ok(e) => e,
            // Revision::open reports a missing path with its own words.
            Err(_) => return Ok(()),
        };
        match entry.kind() {
            Some(ObjectType::Tree) => repo
                .find_tree(entry.id())
                .map_err(|e| format!("cannot read `{}`: {}", prefix.display(), e.message()))?,
            _ => {
                let size = odb
                    .read_header(entry.id())
                    .map(|(s, _)| s as u64)
                    .unwrap_or(0);
                return match too_many(1, size) {
                    Some(r) => Err(r),
                    None => Ok(()),
                };
            }
        }
    };
    let mut stack = vec![root];
    while let Some(t) = stack.pop() {
        for entry in t.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes());
            if is_hidden(&name) {
                continue;
            }
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    if let Ok(sub) = repo.find_tree(entry.id()) {
                        stack.push(sub);
                    }
                }
                Some(ObjectType::Blob) if is_manifest_name(&name) => {
                    files += 1;
                    bytes += odb
                        .read_header(entry.id())
                        .map(|(s, _)| s as u64)
                        .unwrap_or(0);
                    if let Some(r) = too_many(files, bytes) {
                        return Err(r);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Sync at once, then on every `interval` and whenever `trigger` is notified (a notification
/// during a sync leads to one more sync right after it), until `stop` turns true or its
/// sender is dropped. Returns the [`GitSync`] for reuse.
pub async fn run(
    mut sync: GitSync,
    interval: Duration,
    trigger: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> GitSync {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow() {
            return sync;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = trigger.notified() => {
                tracing::debug!(source = %sync.source, "sync triggered");
                ticker.reset();
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    return sync;
                }
                continue;
            }
        }
        tokio::select! {
            report = sync.sync() => {
                tracing::debug!(source = %sync.source, ?report, "sync done");
            }
            changed = stop.changed() => {
                // `sync` is cancellation-safe: a fetch under way is kept track of.
                if changed.is_err() || *stop.borrow() {
                    return sync;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("https://bot:s3cret@git.example.com/ops/cluster.git"),
            "https://bot:***@git.example.com/ops/cluster.git"
        );
        assert_eq!(
            redact_url("https://ghp_abc@github.com/o/r"),
            "https://***@github.com/o/r"
        );
        assert_eq!(
            redact_url("https://git.example.com/a@b"),
            "https://git.example.com/a@b"
        );
        assert_eq!(redact_url("/srv/git/cluster"), "/srv/git/cluster");
        assert_eq!(redact_url("ssh://git@h/o/r.git"), "ssh://git@h/o/r.git");
    }

    #[test]
    fn mirror_names() {
        let a = mirror_name("https://git.example.com/ops/cluster.git");
        assert!(a.starts_with("cluster-") && a.ends_with(".git"), "{a}");
        assert_ne!(a, mirror_name("https://git.example.com/dev/cluster.git"));
        assert!(mirror_name("/").ends_with(".git"));
    }

    #[test]
    fn classifies_sources() {
        assert!(matches!(parse_source("/srv/git/x"), Ok(Remote::Local(_))));
        assert!(
            matches!(parse_source("file:///srv/git/x"), Ok(Remote::Local(p)) if p == Path::new("/srv/git/x"))
        );
        assert!(matches!(parse_source("http://h/x.git"), Ok(Remote::Url(_))));
        assert!(matches!(
            parse_source("ftp://h/x"),
            Err(SyncError::UnsupportedScheme { .. })
        ));
        assert!(matches!(parse_source(""), Err(SyncError::EmptySource(_))));
    }
}
