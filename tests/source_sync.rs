//! The git source: a mirror of a "remote" bare repository on disk (made with git2), synced,
//! validated, refused when invalid (S5: the last good revision stays), following force-pushes,
//! reporting unreachable and garbage sources, limits, and the signed webhook.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::{Oid, Repository, Signature};
use rampart::source::sync::{
    run, set_network_timeouts, GitSync, Limits, RevisionOutcome, SyncError, SyncOptions,
};
use rampart::source::webhook::{self, WebhookConfig};
use tokio::sync::{watch, Notify};

type Files = BTreeMap<String, Vec<u8>>;

/// The socket timeouts are process-wide (libgit2 globals): every test sets the same ones.
fn opts() -> SyncOptions {
    set_network_timeouts(Duration::from_secs(2), Duration::from_secs(2));
    SyncOptions {
        fetch_timeout: Duration::from_secs(60),
        ..SyncOptions::default()
    }
}

/// The reference cluster of the repository, under `prefix/`.
fn reference(prefix: &str) -> Files {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut out = Files::new();
    for e in walkdir::WalkDir::new(&root) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let key = if prefix.is_empty() {
                rel
            } else {
                format!("{prefix}/{rel}")
            };
            out.insert(key, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

fn edit(files: &mut Files, path: &str, from: &str, to: &str) {
    let text = String::from_utf8(files[path].clone()).unwrap();
    assert!(text.contains(from), "{path} has no `{from}`");
    files.insert(path.into(), text.replacen(from, to, 1).into_bytes());
}

const WWW: &str = "manifests/vms/www.yaml";

/// Valid: www gets a third CPU.
fn valid_change(files: &mut Files) {
    edit(files, WWW, "cpus: 2", "cpus: 3");
}

/// Invalid: www's memory is not a size (line 16 of www.yaml).
fn invalid_change(files: &mut Files) {
    edit(files, WWW, "memory: 4GiB", "memory: lots");
}

fn write_tree(repo: &Repository, files: &[(String, Vec<u8>)]) -> Oid {
    let mut tb = repo.treebuilder(None).unwrap();
    let mut dirs: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (path, content) in files {
        match path.split_once('/') {
            Some((dir, rest)) => dirs
                .entry(dir.into())
                .or_default()
                .push((rest.into(), content.clone())),
            None => {
                let blob = repo.blob(content).unwrap();
                tb.insert(path, blob, 0o100644).unwrap();
            }
        }
    }
    for (dir, sub) in dirs {
        let tree = write_tree(repo, &sub);
        tb.insert(&dir, tree, 0o040000).unwrap();
    }
    tb.write().unwrap()
}

/// A bare "remote" repository on disk, a state directory, and what `main` holds.
struct Fixture {
    _tmp: tempfile::TempDir,
    remote: PathBuf,
    state: PathBuf,
    repo: Repository,
    files: Files,
    head: Option<Oid>,
}

impl Fixture {
    fn new(files: Files) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("cluster.git");
        let repo = Repository::init_bare(&remote).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        let state = tmp.path().join("state");
        let mut f = Fixture {
            _tmp: tmp,
            remote,
            state,
            repo,
            files,
            head: None,
        };
        f.push(|_| {});
        f
    }

    fn commit_on(&self, files: &Files, parents: &[Oid], msg: &str) -> Oid {
        let list: Vec<(String, Vec<u8>)> =
            files.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let tree = self.repo.find_tree(write_tree(&self.repo, &list)).unwrap();
        let sig = Signature::now("Admin", "admin@example.com").unwrap();
        let parents: Vec<_> = parents
            .iter()
            .map(|p| self.repo.find_commit(*p).unwrap())
            .collect();
        let refs: Vec<_> = parents.iter().collect();
        self.repo
            .commit(None, &sig, &sig, msg, &tree, &refs)
            .unwrap()
    }

    fn set_main(&self, oid: Oid) {
        self.repo
            .reference("refs/heads/main", oid, true, "push")
            .unwrap();
    }

    /// A new commit on top of `main` (a normal push).
    fn push(&mut self, change: impl FnOnce(&mut Files)) -> Oid {
        change(&mut self.files);
        let parents: Vec<Oid> = self.head.into_iter().collect();
        let oid = self.commit_on(&self.files, &parents, "change");
        self.set_main(oid);
        self.head = Some(oid);
        oid
    }

    /// `main` rewritten to a new root commit holding `files` (a force-push of new history).
    fn force_push(&mut self, files: Files) -> Oid {
        let oid = self.commit_on(&files, &[], "rewritten history");
        self.set_main(oid);
        self.files = files;
        self.head = Some(oid);
        oid
    }

    fn sync(&self) -> GitSync {
        GitSync::new(self.remote.to_str().unwrap(), &self.state, opts()).unwrap()
    }
}

fn applied(r: &RevisionOutcome) -> &str {
    match r {
        RevisionOutcome::Applied { commit } => commit,
        other => panic!("expected Applied, got {other:?}"),
    }
}

fn refused(r: RevisionOutcome) -> (String, Vec<String>) {
    match r {
        RevisionOutcome::Refused { commit, reasons } => (commit, reasons),
        other => panic!("expected Refused, got {other:?}"),
    }
}

fn current_commit(s: &GitSync) -> Option<String> {
    s.current().map(|a| a.commit.clone())
}

#[tokio::test]
async fn applies_new_commits_and_refuses_invalid_ones() {
    let mut fx = Fixture::new(reference("manifests"));
    let a = fx.head.unwrap().to_string();
    let mut s = fx.sync();
    let desired = s.subscribe();
    assert!(s.status().last_fetch.is_none());

    // First sync: clone, validate, apply.
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()));
    assert_eq!(applied(&r.revision), a);
    assert_eq!(desired.borrow().as_ref().unwrap().commit, a);
    assert!(desired
        .borrow()
        .as_ref()
        .unwrap()
        .desired
        .vms
        .contains_key("www"));
    let st = s.status();
    assert_eq!(st.applied.as_ref().unwrap().commit, a);
    assert!(st.refused.is_none());
    assert!(st.last_fetch.as_ref().unwrap().ok);
    assert!(s.mirror_path().starts_with(&fx.state));

    // Nothing new: nothing re-checked.
    let r = s.sync().await;
    assert_eq!(r.revision, RevisionOutcome::Unchanged { commit: a.clone() });

    // A new valid commit.
    let b = fx.push(valid_change).to_string();
    let r = s.sync().await;
    assert_eq!(applied(&r.revision), b);
    assert_eq!(current_commit(&s).unwrap(), b);

    // An invalid commit: refused with located diagnostics; B stays in force.
    let c = fx.push(invalid_change).to_string();
    let r = s.sync().await;
    let (commit, reasons) = refused(r.revision.clone());
    assert_eq!(commit, c);
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("manifests/vms/www.yaml:16:")),
        "{reasons:#?}"
    );
    assert_eq!(
        current_commit(&s).unwrap(),
        b,
        "S5: the last good revision stays"
    );
    let st = s.status();
    assert_eq!(st.applied.as_ref().unwrap().commit, b);
    let why = st.refused.as_ref().unwrap();
    assert_eq!(why.commit, c);
    assert!(
        why.reasons.iter().any(|r| r.contains("www.yaml:16:")),
        "{why:#?}"
    );
    assert!(st.last_fetch.as_ref().unwrap().ok);
    // The status serializes for `rampart status` / the API.
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["refused"]["commit"], c.as_str());
    assert_eq!(json["lastFetch"]["ok"], true);
    assert_eq!(json["branch"], "main");
    assert_eq!(json["path"], "manifests");

    // The refused head is not re-validated on every poll.
    let r = s.sync().await;
    assert_eq!(r.revision, RevisionOutcome::Unchanged { commit: c.clone() });
    assert_eq!(s.status().refused.as_ref().unwrap().commit, c);

    // The fix is applied and the refusal cleared.
    let d = fx
        .push(|f| edit(f, WWW, "memory: lots", "memory: 4GiB"))
        .to_string();
    let r = s.sync().await;
    assert_eq!(applied(&r.revision), d);
    assert!(s.status().refused.is_none());
}

#[tokio::test]
async fn follows_force_pushes_but_never_to_an_invalid_tree() {
    let mut fx = Fixture::new(reference("manifests"));
    let a_files = fx.files.clone();
    let mut s = fx.sync();
    s.sync().await;
    let b = fx.push(valid_change).to_string();
    assert_eq!(applied(&s.sync().await.revision), b);
    let b_cpus = s.current().unwrap().desired.vms["www"].cpus;

    // History rewritten to an older valid tree: followed (the refspec allows non-fast-forward).
    let a2 = fx.force_push(a_files.clone()).to_string();
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()));
    assert_eq!(applied(&r.revision), a2);
    assert_ne!(s.current().unwrap().desired.vms["www"].cpus, b_cpus);

    // Rewritten to an invalid tree: refused, the rewritten valid one stays.
    let mut bad = a_files.clone();
    invalid_change(&mut bad);
    let x = fx.force_push(bad).to_string();
    let (commit, reasons) = refused(s.sync().await.revision);
    assert_eq!(commit, x);
    assert!(
        reasons.iter().any(|r| r.contains("www.yaml:16:")),
        "{reasons:#?}"
    );
    assert_eq!(current_commit(&s).unwrap(), a2);

    // Reset back to a commit seen before: it is checked again and applied.
    fx.set_main(b.parse().unwrap());
    assert_eq!(applied(&s.sync().await.revision), b);
}

#[tokio::test]
async fn unreachable_source_keeps_the_last_good_revision() {
    let fx = Fixture::new(reference("manifests"));
    let mut s = fx.sync();
    let a = applied(&s.sync().await.revision).to_string();

    // The remote disappears.
    let moved = fx.remote.with_extension("moved");
    std::fs::rename(&fx.remote, &moved).unwrap();
    let r = s.sync().await;
    let err = r.fetch.unwrap_err();
    assert!(
        err.contains("does not exist") && err.contains("cluster.git"),
        "{err}"
    );
    assert_eq!(r.revision, RevisionOutcome::Unchanged { commit: a.clone() });
    assert_eq!(current_commit(&s).unwrap(), a);
    let st = s.status();
    let lf = st.last_fetch.unwrap();
    assert!(!lf.ok);
    assert_eq!(lf.error.as_deref(), Some(err.as_str()));
    assert_eq!(st.applied.unwrap().commit, a);

    // A controller restarted while the remote is away still has the mirror's last revision,
    // validated again before use.
    let mut restarted = fx.sync();
    let r = restarted.sync().await;
    assert!(r.fetch.is_err());
    assert_eq!(applied(&r.revision), a);

    // Back: fine again.
    std::fs::rename(&moved, &fx.remote).unwrap();
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()));
}

#[tokio::test]
async fn nonexistent_path_and_closed_port_are_clear_fetch_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let missing = tmp.path().join("no-such-repo");
    let mut s = GitSync::new(missing.to_str().unwrap(), &state, opts()).unwrap();
    let r = s.sync().await;
    let err = r.fetch.unwrap_err();
    assert_eq!(err, format!("source {} does not exist", missing.display()));
    assert!(matches!(r.revision, RevisionOutcome::Unavailable { .. }));
    assert!(s.current().is_none());
    assert!(s.status().applied.is_none());

    // A loopback port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/cluster.git");
    let mut s = GitSync::new(&url, &state, opts()).unwrap();
    let started = Instant::now();
    let r = s.sync().await;
    let err = r.fetch.unwrap_err();
    assert!(
        err.starts_with(&format!("fetch from {url} failed: ")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connect"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let lf = s.status().last_fetch.unwrap();
    assert!(!lf.ok && lf.error.unwrap().contains(&url));
}

/// A server that accepts connections and never answers.
struct Silent {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Silent {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_fetch_times_out_and_does_not_block_later_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Silent::start();
    let url = format!("http://{}/cluster.git", server.addr);
    let mut o = opts();
    o.fetch_timeout = Duration::from_secs(1);
    let mut s = GitSync::new(&url, tmp.path(), o).unwrap();

    let started = Instant::now();
    let r = s.sync().await;
    let took = started.elapsed();
    let err = r.fetch.unwrap_err();
    assert!(err.contains("did not finish within 1s"), "{err}");
    assert!(took < Duration::from_secs(5), "sync took {took:?}");
    assert!(!s.status().last_fetch.unwrap().ok);

    // The next syncs return just as quickly: either a new attempt times out too, or (with
    // two hung fetches still running) they say so without starting a third.
    for _ in 0..3 {
        let started = Instant::now();
        let err = s.sync().await.fetch.unwrap_err();
        assert!(
            err.contains("did not finish within") || err.contains("have not ended yet"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    // The hung fetches end by libgit2's socket timeout (2 s here); with the server gone, the
    // next fetch fails fast with a connection error instead.
    drop(server);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = s.sync().await.fetch.unwrap_err();
    assert!(
        err.starts_with(&format!("fetch from {url} failed: ")),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_repository_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("HEAD"), "this is not git\n").unwrap();
    std::fs::write(junk.join("cluster.yaml"), "kind: Cluster\n").unwrap();
    let mut s = GitSync::new(junk.to_str().unwrap(), &tmp.path().join("state"), opts()).unwrap();
    let r = s.sync().await;
    let err = r.fetch.unwrap_err();
    assert!(
        err.starts_with(&format!(
            "source {} is not a git repository",
            junk.display()
        )),
        "{err}"
    );
    assert!(s.current().is_none());

    // A file instead of a directory.
    let file = junk.join("cluster.yaml");
    let mut s = GitSync::new(file.to_str().unwrap(), &tmp.path().join("state"), opts()).unwrap();
    let err = s.sync().await.fetch.unwrap_err();
    assert!(err.contains("is not a directory"), "{err}");
}

#[tokio::test]
async fn a_broken_mirror_is_made_again() {
    let fx = Fixture::new(reference("manifests"));
    let mut s = fx.sync();
    let a = applied(&s.sync().await.revision).to_string();
    let mirror = s.mirror_path().to_path_buf();
    std::fs::remove_dir_all(&mirror).unwrap();
    std::fs::create_dir(&mirror).unwrap();
    std::fs::write(mirror.join("HEAD"), "garbage").unwrap();
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()));
    assert_eq!(r.revision, RevisionOutcome::Unchanged { commit: a });
}

#[tokio::test]
async fn missing_path_is_refused_with_that_reason() {
    let mut fx = Fixture::new(reference("manifests"));
    let mut s = fx.sync();
    let a = applied(&s.sync().await.revision).to_string();

    // Someone moves the manifests elsewhere.
    let moved: Files = fx
        .files
        .iter()
        .map(|(k, v)| (k.replacen("manifests/", "cluster/", 1), v.clone()))
        .collect();
    let b = fx.push(|f| *f = moved).to_string();
    let (commit, reasons) = refused(s.sync().await.revision);
    assert_eq!(commit, b);
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].starts_with("path `manifests` does not exist at commit "),
        "{reasons:?}"
    );
    assert_eq!(current_commit(&s).unwrap(), a);

    // A sync configured for that path applies it.
    let mut o = opts();
    o.path = "cluster".into();
    let mut other = GitSync::new(fx.remote.to_str().unwrap(), &fx.state.join("other"), o).unwrap();
    assert_eq!(applied(&other.sync().await.revision), b);
    assert_eq!(other.status().path, "cluster");
}

#[tokio::test]
async fn missing_or_deleted_branch_keeps_the_last_good_revision() {
    let fx = Fixture::new(reference("manifests"));
    let mut o = opts();
    o.branch = "production".into();
    let mut s = GitSync::new(fx.remote.to_str().unwrap(), &fx.state, o).unwrap();
    let r = s.sync().await;
    let err = r.fetch.unwrap_err();
    assert!(
        err.starts_with("branch `production` does not exist in") && err.ends_with("it has: main"),
        "{err}"
    );
    assert!(matches!(r.revision, RevisionOutcome::Unavailable { .. }));

    let mut s = fx.sync();
    let a = applied(&s.sync().await.revision).to_string();
    fx.repo
        .find_reference("refs/heads/main")
        .unwrap()
        .delete()
        .unwrap();
    let sha = fx.commit_on(&fx.files, &[], "other");
    fx.repo.reference("refs/heads/dev", sha, true, "").unwrap();
    let r = s.sync().await;
    assert!(r
        .fetch
        .unwrap_err()
        .starts_with("branch `main` does not exist in"));
    assert_eq!(current_commit(&s).unwrap(), a);
    assert_eq!(s.status().applied.unwrap().commit, a);
}

#[tokio::test]
async fn huge_revisions_are_refused() {
    let fx = Fixture::new(reference("manifests"));
    let count = fx.files.keys().filter(|k| k.ends_with(".yaml")).count();

    let mut o = opts();
    o.limits = Limits {
        max_manifest_files: count - 1,
        ..Limits::default()
    };
    let mut s = GitSync::new(fx.remote.to_str().unwrap(), &fx.state.join("a"), o).unwrap();
    let (_, reasons) = refused(s.sync().await.revision);
    assert!(
        reasons[0].starts_with(&format!(
            "more than {} manifest files under `manifests`",
            count - 1
        )),
        "{reasons:?}"
    );
    assert!(s.current().is_none());

    let mut o = opts();
    o.limits = Limits {
        max_manifest_bytes: 4096,
        ..Limits::default()
    };
    let mut s = GitSync::new(fx.remote.to_str().unwrap(), &fx.state.join("b"), o).unwrap();
    let (_, reasons) = refused(s.sync().await.revision);
    assert!(
        reasons[0].contains("total more than 4 KiB; refused as too large"),
        "{reasons:?}"
    );

    let mut o = opts();
    o.limits = Limits {
        max_fetch_bytes: 1024,
        ..Limits::default()
    };
    let mut s = GitSync::new(fx.remote.to_str().unwrap(), &fx.state.join("c"), o).unwrap();
    let err = s.sync().await.fetch.unwrap_err();
    assert!(err.contains("passed the limit of 1 KiB received"), "{err}");
    assert!(s.current().is_none());
}

#[tokio::test]
async fn file_urls_work() {
    let fx = Fixture::new(reference("manifests"));
    let url = format!("file://{}", fx.remote.display());
    let mut s = GitSync::new(&url, &fx.state, opts()).unwrap();
    assert_eq!(
        applied(&s.sync().await.revision),
        fx.head.unwrap().to_string()
    );
    assert_eq!(s.status().source, url);
}

#[test]
fn transports_this_build_cannot_serve_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let v = git2::Version::get();
    let https = GitSync::new(
        "https://bot:t0ken@git.example.com/ops/cluster.git",
        tmp.path(),
        opts(),
    );
    if v.https() {
        // A password in the URL is refused (tests/source_remote.rs), without showing it.
        let msg = https.unwrap_err().to_string();
        assert!(msg.contains("has a password in its URL"), "{msg}");
        assert!(!msg.contains("t0ken"), "the password is masked: {msg}");
        assert!(GitSync::new(
            "https://git.example.com/ops/cluster.git",
            tmp.path(),
            opts()
        )
        .is_ok());
    } else {
        let e = https.unwrap_err();
        assert!(matches!(e, SyncError::TransportUnavailable { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("https:// URLs need git2's `https` transport"),
            "{msg}"
        );
        assert!(!msg.contains("t0ken"), "the password is masked: {msg}");
    }
    for ssh in [
        "ssh://git@git.example.com/ops/cluster.git",
        "git@github.com:ops/cluster.git",
    ] {
        let r = GitSync::new(ssh, tmp.path(), opts());
        if v.ssh() {
            assert!(r.is_ok());
        } else {
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains("need git2's `ssh` transport"), "{msg}");
        }
    }
    let msg = GitSync::new("ftp://host/x", tmp.path(), opts())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unsupported URL scheme `ftp://`"), "{msg}");
    let mut o = opts();
    o.branch = "bad..name".into();
    assert!(matches!(
        GitSync::new("/srv/x", tmp.path(), o),
        Err(SyncError::BadBranch(_))
    ));
}

#[tokio::test]
async fn the_loop_polls_on_its_interval() {
    let mut fx = Fixture::new(reference("manifests"));
    let s = fx.sync();
    let mut desired = s.subscribe();
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(run(
        s,
        Duration::from_millis(200),
        Arc::new(Notify::new()),
        stop,
    ));
    wait_for(&mut desired, &fx.head.unwrap().to_string()).await;
    let b = fx.push(valid_change).to_string();
    wait_for(&mut desired, &b).await;
    stop_tx.send(true).unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current_commit(&s).unwrap(), b);
}

async fn wait_for(
    rx: &mut watch::Receiver<Option<Arc<rampart::source::sync::AppliedRevision>>>,
    commit: &str,
) {
    tokio::time::timeout(
        Duration::from_secs(30),
        rx.wait_for(|d| d.as_ref().is_some_and(|d| d.commit == commit)),
    )
    .await
    .unwrap_or_else(|_| panic!("{commit} was not applied in time"))
    .unwrap();
}

/// A raw HTTP/1.1 request; returns the status code.
async fn http(addr: SocketAddr, method: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let mut req = format!(
        "{method} /hooks/git HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(&bytes).unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        resp.split(' ').nth(1).unwrap().parse().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_with_the_right_signature_triggers_a_sync() {
    let mut fx = Fixture::new(reference("manifests"));
    let s = fx.sync();
    let mut desired = s.subscribe();
    let mut status = s.subscribe_status();
    let trigger = Arc::new(Notify::new());
    let (stop_tx, stop) = watch::channel(false);
    // An hour between polls: anything sooner is the webhook's doing.
    let task = tokio::spawn(run(s, Duration::from_secs(3600), trigger.clone(), stop));
    wait_for(&mut desired, &fx.head.unwrap().to_string()).await;

    let secret = b"correct horse battery staple".to_vec();
    let app = webhook::router(
        WebhookConfig {
            secret: secret.clone(),
        },
        trigger,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let b = fx.push(valid_change).to_string();
    let body = br#"{"ref":"refs/heads/main","after":"x"}"#;
    status.borrow_and_update();

    // Wrong secret, no signature, garbage signature: 401, no sync.
    let wrong = webhook::sign(b"guess", body);
    assert_eq!(
        http(addr, "POST", &[("X-Hub-Signature-256", wrong)], body).await,
        401
    );
    assert_eq!(http(addr, "POST", &[], body).await, 401);
    assert_eq!(
        http(
            addr,
            "POST",
            &[("X-Hub-Signature-256", "sha256=zz".into())],
            body
        )
        .await,
        401
    );
    // Right signature of another body.
    let other = webhook::sign(&secret, b"{}");
    assert_eq!(
        http(addr, "POST", &[("X-Hub-Signature-256", other)], body).await,
        401
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !status.has_changed().unwrap(),
        "a refused webhook must not sync"
    );
    assert_ne!(desired.borrow().as_ref().unwrap().commit, b);
    assert_eq!(http(addr, "GET", &[], b"").await, 405);

    // GitHub style.
    let good = webhook::sign(&secret, body);
    assert_eq!(
        http(addr, "POST", &[("X-Hub-Signature-256", good)], body).await,
        202
    );
    wait_for(&mut desired, &b).await;

    // Gitea style.
    let c = fx.push(|f| edit(f, WWW, "cpus: 3", "cpus: 4")).to_string();
    let hex_only = webhook::sign(&secret, body)["sha256=".len()..].to_string();
    assert_eq!(
        http(addr, "POST", &[("X-Gitea-Signature", hex_only)], body).await,
        202
    );
    wait_for(&mut desired, &c).await;

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn webhook_secret_from_file_or_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("secret");
    std::fs::write(&path, "s3cret\n").unwrap();
    assert_eq!(WebhookConfig::from_file(&path).unwrap().secret, b"s3cret");
    std::fs::write(&path, "\n").unwrap();
    assert!(WebhookConfig::from_file(&path).is_err());
    assert!(WebhookConfig::from_file(&tmp.path().join("none")).is_err());
    // SAFETY of set_var: this variable is private to this test.
    std::env::set_var("RAMPART_TEST_WEBHOOK_SECRET", "from-env");
    assert_eq!(
        WebhookConfig::from_env("RAMPART_TEST_WEBHOOK_SECRET")
            .unwrap()
            .secret,
        b"from-env"
    );
    assert!(WebhookConfig::from_env("RAMPART_TEST_WEBHOOK_SECRET_UNSET").is_err());
}
