//! The git source against real servers on loopback, with credentials: a smart-HTTP server
//! (`git http-backend` behind HTTP Basic auth) and a throwaway `sshd` with a deploy key and a
//! known_hosts check. A right token applies the revision; a wrong or missing one is a clear
//! status naming the URL and where the token comes from (never the token), fails fast (no
//! endless retries) and keeps the last good revision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use git2::{Oid, Repository, Signature};
use rampart::source::credentials::{GitCredentials, TokenSource};
use rampart::source::sync::{
    set_network_timeouts, GitSync, RevisionOutcome, SyncError, SyncOptions,
};

#[path = "support/git_http.rs"]
mod git_http;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/ssh_tls.rs"]
mod ssh_tls;

use git_http::GitHttpServer;

type Files = BTreeMap<String, Vec<u8>>;

fn opts(credentials: GitCredentials) -> SyncOptions {
    set_network_timeouts(Duration::from_secs(5), Duration::from_secs(5));
    SyncOptions {
        fetch_timeout: Duration::from_secs(60),
        credentials,
        ..SyncOptions::default()
    }
}

/// The reference cluster of the repository, under `manifests/`.
fn reference() -> Files {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut out = Files::new();
    for e in walkdir::WalkDir::new(&root) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(&root).unwrap().to_string_lossy();
            out.insert(format!("manifests/{rel}"), std::fs::read(e.path()).unwrap());
        }
    }
    out
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

/// A bare repository `cluster.git` under a served root, and its `main`.
struct Remote {
    tmp: tempfile::TempDir,
    repo: Repository,
    files: Files,
    head: Option<Oid>,
}

impl Remote {
    fn new() -> Remote {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path().join("root/cluster.git")).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        let mut r = Remote {
            tmp,
            repo,
            files: reference(),
            head: None,
        };
        r.push(|_| {});
        r
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// A file in the test's private directory.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// A new commit on `main`: www gets one more CPU each time.
    fn push(&mut self, change: impl FnOnce(&mut Files)) -> Oid {
        change(&mut self.files);
        let list: Vec<(String, Vec<u8>)> = self
            .files
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let tree = self.repo.find_tree(write_tree(&self.repo, &list)).unwrap();
        let sig = Signature::now("Admin", "admin@example.com").unwrap();
        let parents: Vec<_> = self
            .head
            .iter()
            .map(|p| self.repo.find_commit(*p).unwrap())
            .collect();
        let refs: Vec<_> = parents.iter().collect();
        let oid = self
            .repo
            .commit(None, &sig, &sig, "change", &tree, &refs)
            .unwrap();
        self.repo
            .reference("refs/heads/main", oid, true, "push")
            .unwrap();
        self.head = Some(oid);
        oid
    }
}

fn more_cpus(files: &mut Files) {
    let p = "manifests/vms/www.yaml";
    let text = String::from_utf8(files[p].clone()).unwrap();
    let n: u32 = text
        .split("cpus: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    files.insert(
        p.into(),
        text.replacen(&format!("cpus: {n}"), &format!("cpus: {}", n + 1), 1)
            .into_bytes(),
    );
}

fn applied(r: &RevisionOutcome) -> String {
    match r {
        RevisionOutcome::Applied { commit } => commit.clone(),
        other => panic!("expected Applied, got {other:?}"),
    }
}

const USER: &str = "deploy";
const TOKEN: &str = "glpat-Throwaway-7f3a9c";
const WRONG: &str = "glpat-Wrong-000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_style_token_auth_right_wrong_and_rotated() {
    let mut remote = Remote::new();
    let server = GitHttpServer::start(&remote.root(), Some((USER, TOKEN)));
    let url = server.url("cluster.git");
    let token_file = remote.file("git-token", &format!("{TOKEN}\n"));
    let creds = GitCredentials {
        username: Some(USER.into()),
        token: Some(TokenSource::File(token_file.clone())),
        ..Default::default()
    };
    let mut s = GitSync::new(&url, &remote.state(), opts(creds)).unwrap();

    // The right token: the revision is applied.
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()));
    let first = applied(&r.revision);
    assert_eq!(first, remote.head.unwrap().to_string());

    // The token is revoked and replaced by a wrong one; a new commit is pushed.
    std::fs::write(&token_file, WRONG).unwrap();
    remote.push(more_cpus);
    let before = server.counts.unauthorized.load(Ordering::SeqCst);
    let started = Instant::now();
    let r = s.sync().await;
    let took = started.elapsed();
    let err = r.fetch.clone().unwrap_err();
    assert_eq!(
        err,
        format!(
            "fetch from {url} failed: authentication failed for {url} (user {USER}): check \
             the token file {}",
            token_file.display()
        )
    );
    assert!(!err.contains(WRONG) && !err.contains(TOKEN), "{err}");
    // Bounded: the one challenge and the one refused attempt, not a loop.
    let refused = server.counts.unauthorized.load(Ordering::SeqCst) - before;
    assert!((1..=3).contains(&refused), "{refused} refused requests");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The last good revision stays in force, and status says why.
    assert_eq!(
        r.revision,
        RevisionOutcome::Unchanged {
            commit: first.clone()
        }
    );
    let st = s.status();
    assert_eq!(st.applied.as_ref().unwrap().commit, first);
    let lf = st.last_fetch.unwrap();
    assert!(!lf.ok && lf.error.as_deref() == Some(err.as_str()));
    let json = serde_json::to_string(&s.status()).unwrap();
    assert!(!json.contains(WRONG) && !json.contains(TOKEN));

    // The token file is fixed: read again at the next fetch, no restart needed.
    std::fs::write(&token_file, TOKEN).unwrap();
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()));
    assert_eq!(applied(&r.revision), remote.head.unwrap().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_a_clear_error() {
    let remote = Remote::new();
    let server = GitHttpServer::start(&remote.root(), Some((USER, TOKEN)));
    let url = server.url("cluster.git");
    let mut s = GitSync::new(&url, &remote.state(), opts(GitCredentials::default())).unwrap();
    let started = Instant::now();
    let r = s.sync().await;
    let err = r.fetch.unwrap_err();
    assert!(
        err.contains(&format!(
            "{url} asks for credentials and none are configured"
        )) && err.contains("--git-token-file"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(r.revision, RevisionOutcome::Unavailable { .. }));
    assert!(s.current().is_none());
    assert!(server.counts.unauthorized.load(Ordering::SeqCst) <= 2);
}

/// libgit2's own HTTP transport serves plain http:// with no credentials configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_without_auth() {
    let remote = Remote::new();
    let server = GitHttpServer::start(&remote.root(), None);
    let mut s = GitSync::new(
        &server.url("cluster.git"),
        &remote.state(),
        opts(GitCredentials::default()),
    )
    .unwrap();
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()));
    assert_eq!(applied(&r.revision), remote.head.unwrap().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_an_environment_variable() {
    let remote = Remote::new();
    let server = GitHttpServer::start(&remote.root(), Some((USER, TOKEN)));
    let var = "RAMPART_TEST_GIT_TOKEN_SOURCE_REMOTE";
    // Only this test reads the variable.
    std::env::set_var(var, TOKEN);
    let creds = GitCredentials {
        username: Some(USER.into()),
        token: Some(TokenSource::Env(var.into())),
        ..Default::default()
    };
    let mut s = GitSync::new(&server.url("cluster.git"), &remote.state(), opts(creds)).unwrap();
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()));
    applied(&r.revision);
    std::env::set_var(var, WRONG);
    let err = s.sync().await.fetch.unwrap_err();
    assert!(
        err.ends_with(&format!(
            "(user {USER}): check the environment variable {var}"
        )),
        "{err}"
    );
    std::env::remove_var(var);
}

#[test]
fn passwords_in_urls_and_unreadable_credentials_are_refused_at_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let e = GitSync::new(
        "https://bot:s3cr3t-t0ken@git.example.com/ops/cluster.git",
        tmp.path(),
        opts(GitCredentials::default()),
    )
    .unwrap_err();
    assert!(matches!(e, SyncError::PasswordInUrl(_)), "{e:?}");
    let msg = e.to_string();
    assert!(!msg.contains("s3cr3t"), "{msg}");
    assert!(
        msg.contains("https://bot:***@git.example.com/ops/cluster.git")
            && msg.contains("--git-token-file"),
        "{msg}"
    );
    let missing = tmp.path().join("no-such-token");
    for creds in [
        GitCredentials {
            token: Some(TokenSource::File(missing.clone())),
            ..Default::default()
        },
        GitCredentials {
            ssh_key: Some(missing.clone()),
            ..Default::default()
        },
        GitCredentials {
            known_hosts: Some(missing.clone()),
            ..Default::default()
        },
    ] {
        let e = GitSync::new(
            "https://git.example.com/ops/cluster.git",
            tmp.path(),
            opts(creds),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, SyncError::Credentials { .. }), "{msg}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
    }
    // A user name alone may stay in the URL.
    GitSync::new(
        "https://deploy@git.example.com/ops/cluster.git",
        tmp.path(),
        opts(GitCredentials::default()),
    )
    .unwrap();
}

/// HTTPS keeps libgit2's certificate verification: a self-signed server is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_verifies_the_server_certificate() {
    let remote = Remote::new();
    let tls = ssh_tls::TlsServer::start(remote.tmp.path());
    let url = format!("https://127.0.0.1:{}/cluster.git", tls.port);
    let token_file = remote.file("git-token", TOKEN);
    let creds = GitCredentials {
        token: Some(TokenSource::File(token_file)),
        ..Default::default()
    };
    let mut s = GitSync::new(&url, &remote.state(), opts(creds)).unwrap();
    let err = s.sync().await.fetch.unwrap_err();
    assert!(
        err.starts_with(&format!("fetch from {url} failed: ")) && err.contains("SSL_CERT_FILE"),
        "{err}"
    );
    assert!(!err.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_with_a_deploy_key_and_known_hosts() {
    let mut remote = Remote::new();
    let server = ssh_tls::Sshd::start(remote.tmp.path());
    let repo = remote.root().join("cluster.git");
    let url = format!("ssh://root@127.0.0.1:{}{}", server.port, repo.display());
    let known_hosts = remote.file(
        "known_hosts",
        &format!("[127.0.0.1]:{} {}\n", server.port, server.host_key_pub),
    );
    // Hashed the way `ssh-keygen -H` (and HashKnownHosts) writes it.
    let hashed = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&known_hosts)
        .output()
        .unwrap();
    assert!(hashed.status.success());
    assert!(std::fs::read_to_string(&known_hosts)
        .unwrap()
        .starts_with("|1|"));
    let creds = GitCredentials {
        ssh_key: Some(server.client_key.clone()),
        known_hosts: Some(known_hosts.clone()),
        ..Default::default()
    };
    let mut s = GitSync::new(&url, &remote.state(), opts(creds.clone())).unwrap();
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()), "sshd log:\n{}", server.log());
    let first = applied(&r.revision);

    // A key the server does not know: refused after one attempt, the last revision kept.
    remote.push(more_cpus);
    let mut wrong = creds.clone();
    wrong.ssh_key = Some(server.other_key.clone());
    let mut w = GitSync::new(&url, &remote.tmp.path().join("state2"), opts(wrong)).unwrap();
    let started = Instant::now();
    let err = w.sync().await.fetch.unwrap_err();
    assert!(
        err.contains(&format!(
            "authentication failed for {url} (user root): the server did not accept the SSH key {}",
            server.other_key.display()
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // An unknown host key is refused, with its fingerprint and how to add it.
    let empty = remote.file("known_hosts_empty", "");
    let mut unknown = creds.clone();
    unknown.known_hosts = Some(empty.clone());
    let mut u = GitSync::new(&url, &remote.tmp.path().join("state3"), opts(unknown)).unwrap();
    let err = u.sync().await.fetch.unwrap_err();
    assert!(
        err.contains(&format!(
            "the host key of [127.0.0.1]:{} (SHA256:",
            server.port
        )) && err.contains("is unknown")
            && err.contains(&format!("ssh-keyscan -p {} 127.0.0.1", server.port)),
        "{err}"
    );
    assert!(u.current().is_none());

    // A changed host key (another key listed for the host) is refused too.
    let changed = remote.file(
        "known_hosts_changed",
        &format!(
            "[127.0.0.1]:{} {}\n",
            server.port,
            std::fs::read_to_string(server.other_key.with_extension("pub"))
                .unwrap()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    let mut c = creds.clone();
    c.known_hosts = Some(changed);
    let mut c = GitSync::new(&url, &remote.tmp.path().join("state4"), opts(c)).unwrap();
    let err = c.sync().await.fetch.unwrap_err();
    assert!(err.contains("does not match"), "{err}");

    // A key with a passphrase, read from a file.
    let mut p = creds.clone();
    p.ssh_key = Some(server.protected_key.clone());
    p.ssh_passphrase_file = Some(remote.file("passphrase", &format!("{}\n", ssh_tls::PASSPHRASE)));
    let mut p = GitSync::new(&url, &remote.tmp.path().join("state5"), opts(p)).unwrap();
    let r = p.sync().await;
    assert_eq!(r.fetch, Ok(()), "sshd log:\n{}", server.log());

    // No key file: the ssh-agent's keys; without an agent, a clear word. (Only this test
    // touches SSH_AUTH_SOCK.)
    let mut a = creds.clone();
    a.ssh_key = None;
    std::env::remove_var("SSH_AUTH_SOCK");
    let mut no_agent =
        GitSync::new(&url, &remote.tmp.path().join("state6"), opts(a.clone())).unwrap();
    let err = no_agent.sync().await.fetch.unwrap_err();
    assert!(
        err.contains("no ssh-agent is running") && err.contains("--git-ssh-key"),
        "{err}"
    );
    let agent = ssh_tls::Agent::start(remote.tmp.path(), &[&server.client_key]);
    std::env::set_var("SSH_AUTH_SOCK", &agent.socket);
    let mut with_agent =
        GitSync::new(&url, &remote.tmp.path().join("state7"), opts(a.clone())).unwrap();
    let r = with_agent.sync().await;
    assert_eq!(r.fetch, Ok(()), "sshd log:\n{}", server.log());
    drop(agent);
    let wrong_agent = ssh_tls::Agent::start(&remote.tmp.path().join("sshd"), &[&server.other_key]);
    std::env::set_var("SSH_AUTH_SOCK", &wrong_agent.socket);
    let mut w = GitSync::new(&url, &remote.tmp.path().join("state8"), opts(a)).unwrap();
    let err = w.sync().await.fetch.unwrap_err();
    assert!(
        err.contains("no key of the ssh-agent was accepted"),
        "{err}"
    );
    std::env::remove_var("SSH_AUTH_SOCK");

    // The good one follows the new commit.
    let r = s.sync().await;
    assert_eq!(r.fetch, Ok(()));
    assert_ne!(applied(&r.revision), first);
}
