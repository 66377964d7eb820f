//! Credentials for fetching a git source from a server, and SSH host key verification.
//!
//! Secrets never travel in a command line, a URL, a log line or an error: the HTTP(S) password
//! or token is read from a file (or an environment variable) at every fetch, so a rotated token
//! is picked up without a restart; an SSH key is given as a file (or comes from the ssh-agent).
//! Messages name *where* a secret comes from, never its value.
//!
//! libgit2 asks for credentials again and again while the server refuses them; the callback
//! here offers each method once per fetch and then gives up with a clear message, so a wrong
//! token fails one fetch (the last good revision stays in force) instead of looping.
//!
//! SSH host keys are checked against OpenSSH `known_hosts` files (plain and hashed host names,
//! `[host]:port` entries, wildcards, negation, `@revoked`); an unknown or changed host key is
//! refused. HTTPS certificates are left to libgit2's own verification (the system's CA store;
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` point OpenSSL at another one).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::manifest::common::Secret;

/// The user name offered when neither the options nor the URL name one (what GitLab, Gitea and
/// GitHub accept with a token, and the usual SSH user of git servers).
pub const DEFAULT_USERNAME: &str = "git";

/// The environment variable the controller reads an HTTP(S) token from when no token file is
/// given.
pub const TOKEN_ENV: &str = "RAMPART_GIT_TOKEN";

/// Where the HTTP(S) password or access token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file holding only the token (a trailing newline is dropped); keep it `chmod 600`.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl TokenSource {
    /// The file when one is given, else [`TOKEN_ENV`] when it is set, else none.
    pub fn file_or_env(file: Option<PathBuf>) -> Option<TokenSource> {
        match file {
            Some(f) => Some(TokenSource::File(f)),
            None => std::env::var_os(TOKEN_ENV).map(|_| TokenSource::Env(TOKEN_ENV.into())),
        }
    }

    /// `the token file /etc/rampart/git-token`: where to look when authentication fails.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::File(p) => format!("the token file {}", p.display()),
            TokenSource::Env(v) => format!("the environment variable {v}"),
        }
    }

    /// Read the token. Errors name the file or variable, never any of its content.
    pub fn read(&self) -> Result<Secret, String> {
        let value = match self {
            TokenSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read the token file {}: {e}", p.display()))?,
            TokenSource::Env(v) => std::env::var(v)
                .map_err(|_| format!("the environment variable {v} is not set (or not UTF-8)"))?,
        };
        let value = value.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(format!("{} is empty", self.describe()));
        }
        if value.contains(['\n', '\r']) {
            return Err(format!(
                "{} holds more than one line; it must hold only the token",
                self.describe()
            ));
        }
        Ok(Secret::new(value))
    }
}

/// How to authenticate to the source's server. Holds no secret itself: only where to read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitCredentials {
    /// The user name for HTTP(S) and SSH. `None`: the one in the URL, else [`DEFAULT_USERNAME`].
    pub username: Option<String>,
    /// The HTTP(S) password or access token.
    pub token: Option<TokenSource>,
    /// The SSH private key. `None`: the keys of the ssh-agent (`SSH_AUTH_SOCK`).
    pub ssh_key: Option<PathBuf>,
    /// A file holding the SSH key's passphrase, when it has one.
    pub ssh_passphrase_file: Option<PathBuf>,
    /// The `known_hosts` file SSH host keys are checked against. `None`: `~/.ssh/known_hosts`
    /// and `/etc/ssh/ssh_known_hosts`, as OpenSSH does. A host key found in none is refused.
    pub known_hosts: Option<PathBuf>,
}

impl GitCredentials {
    /// Check, when the source is set up, that every file named can be read, so that a typo
    /// shows at startup rather than at the first fetch.
    pub fn check(&self) -> Result<(), String> {
        if let Some(t) = &self.token {
            t.read()?;
            if let TokenSource::File(p) = t {
                warn_if_readable_by_others(p, "token");
            }
        }
        if let Some(k) = &self.ssh_key {
            std::fs::metadata(k)
                .and_then(|_| std::fs::File::open(k).map(drop))
                .map_err(|e| format!("cannot read the SSH key {}: {e}", k.display()))?;
        }
        if let Some(p) = &self.ssh_passphrase_file {
            read_passphrase(p)?;
            warn_if_readable_by_others(p, "SSH key passphrase");
        }
        if let Some(k) = &self.known_hosts {
            std::fs::read_to_string(k)
                .map_err(|e| format!("cannot read the known_hosts file {}: {e}", k.display()))?;
        }
        Ok(())
    }

    fn known_hosts_files(&self) -> Vec<PathBuf> {
        match &self.known_hosts {
            Some(p) => vec![p.clone()],
            None => {
                let mut v = Vec::new();
                if let Some(home) = std::env::var_os("HOME") {
                    v.push(Path::new(&home).join(".ssh/known_hosts"));
                }
                v.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
                v
            }
        }
    }
}

fn warn_if_readable_by_others(path: &Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the git {what} file is readable by other users; chmod 600 it"
                );
            }
        }
    }
}

fn read_passphrase(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the SSH key passphrase file {}: {e}",
            path.display()
        )
    })?;
    Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
}

/// The host and port of an SSH URL (`ssh://[user@]host[:port]/path` or scp-like
/// `[user@]host:path`), for the known_hosts lookup.
pub fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    let authority = if let Some(i) = url.find("://") {
        let rest = &url[i + 3..];
        &rest[..rest.find('/').unwrap_or(rest.len())]
    } else {
        // scp-like: everything before the first colon, which carries no port.
        let before = &url[..url.find(':')?];
        let host = before.rsplit('@').next()?;
        return Some((host.trim_matches(['[', ']']).to_string(), 22));
    };
    let hostport = authority.rsplit('@').next()?;
    if let Some(rest) = hostport.strip_prefix('[') {
        // [v6]:port
        let close = rest.find(']')?;
        let host = &rest[..close];
        let port = rest[close + 1..]
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(22);
        return Some((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((hostport.to_string(), 22)),
    }
}

/// The user name the URL names, if any.
fn url_username(url: &str) -> Option<String> {
    let authority = match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            &rest[..rest.find('/').unwrap_or(rest.len())]
        }
        None => &url[..url.find(':')?],
    };
    let (user, _) = authority.rsplit_once('@')?;
    let user = user.split(':').next().unwrap_or(user);
    (!user.is_empty()).then(|| user.to_string())
}

/// Whether the URL carries a password (`https://user:password@host/...`).
pub fn url_has_password(url: &str) -> bool {
    let Some(i) = url.find("://") else {
        return false;
    };
    let rest = &url[i + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':'),
        None => false,
    }
}

/// `SHA256:base64` as `ssh-keygen -lf` prints it.
pub fn fingerprint(key_blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(key_blob))
    )
}

/// What the known_hosts files say about a host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// A line for this host holds this key.
    Known,
    /// The host is listed, but with other keys: the server's key changed, or someone is in
    /// the middle.
    Changed,
    /// The key is marked `@revoked`.
    Revoked,
    /// The host is in none of the files.
    Unknown,
}

/// Check `key_blob` (the SSH wire-format public key, as in a known_hosts line) of `host:port`
/// against the text of a known_hosts file.
pub fn check_known_hosts(text: &str, host: &str, port: u16, key_blob: &[u8]) -> HostKeyCheck {
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut listed = false;
    let mut known = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or("");
        let marker = if first.starts_with('@') {
            let m = first;
            first = fields.next().unwrap_or("");
            Some(m)
        } else {
            None
        };
        let (Some(_keytype), Some(key_b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if marker == Some("@cert-authority") || !host_matches(first, &name) {
            continue;
        }
        let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(key_b64) else {
            continue;
        };
        let same = blob == key_blob;
        match marker {
            Some("@revoked") if same => return HostKeyCheck::Revoked,
            Some(_) => {}
            None => {
                listed = true;
                known |= same;
            }
        }
    }
    if known {
        HostKeyCheck::Known
    } else if listed {
        HostKeyCheck::Changed
    } else {
        HostKeyCheck::Unknown
    }
}

/// The host field of a known_hosts line (comma-separated patterns, `!` negation, `*` and `?`
/// wildcards, or one hashed `|1|salt|hash` entry) against `name` (`host` or `[host]:port`).
fn host_matches(field: &str, name: &str) -> bool {
    if let Some(rest) = field.strip_prefix("|1|") {
        let Some((salt, hash)) = rest.split_once('|') else {
            return false;
        };
        let b64 = &base64::engine::general_purpose::STANDARD;
        let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(name.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    let name = name.to_ascii_lowercase();
    let mut matched = false;
    for pat in field.split(',') {
        let (negated, pat) = match pat.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pat),
        };
        if wildcard(&pat.to_ascii_lowercase(), &name) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

fn wildcard(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The first clear word about why authentication or host verification failed in a fetch (the
/// callbacks record it; libgit2's own message is vaguer).
pub type AuthFailure = Arc<Mutex<Option<String>>>;

/// Install the credentials and certificate callbacks for one fetch of `url` (`shown` is the
/// URL as it may be printed). Returns where a failure is explained.
pub fn install(
    callbacks: &mut RemoteCallbacks<'_>,
    creds: &GitCredentials,
    url: &str,
    shown: &str,
) -> AuthFailure {
    let failure: AuthFailure = Arc::default();
    let from_url = url_username(url);
    let user = creds
        .username
        .clone()
        .or_else(|| from_url.clone())
        .unwrap_or_else(|| DEFAULT_USERNAME.to_string());
    // A lone name in an https URL may be a token (`https://TOKEN@github.com/...`): never shown.
    let who = if creds.username.is_none()
        && from_url.is_some()
        && url.contains("://")
        && !url.to_ascii_lowercase().starts_with("ssh")
    {
        "the user named in the URL".to_string()
    } else {
        format!("user {user}")
    };
    {
        let creds = creds.clone();
        let failure = failure.clone();
        let shown = shown.to_string();
        let (mut gave_user, mut gave_token, mut gave_key, mut gave_agent) =
            (false, false, false, false);
        callbacks.credentials(move |_url, _user_from_url, allowed| {
            let fail = |msg: String| {
                let mut f = failure.lock().unwrap();
                if f.is_none() {
                    *f = Some(msg.clone());
                }
                Err(git2::Error::new(
                    git2::ErrorCode::Auth,
                    git2::ErrorClass::Callback,
                    msg,
                ))
            };
            if allowed.contains(CredentialType::USERNAME) {
                // SSH asks for the user name first when the URL has none.
                if gave_user {
                    return fail(format!(
                        "authentication failed for {shown}: the server refused {who}"
                    ));
                }
                gave_user = true;
                return Cred::username(&user);
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                return match &creds.ssh_key {
                    Some(key) if !gave_key => {
                        gave_key = true;
                        let pass = match &creds.ssh_passphrase_file {
                            Some(p) => match read_passphrase(p) {
                                Ok(s) => Some(s),
                                Err(e) => return fail(e),
                            },
                            None => None,
                        };
                        Cred::ssh_key(&user, None, key, pass.as_ref().map(|p| p.expose()))
                    }
                    Some(key) => fail(format!(
                        "authentication failed for {shown} ({who}): the server did not \
                         accept the SSH key {}; check that its public key is a deploy key of \
                         the repository (and the passphrase, if it has one)",
                        key.display()
                    )),
                    None if !gave_agent => {
                        gave_agent = true;
                        if std::env::var_os("SSH_AUTH_SOCK").is_none() {
                            return fail(format!(
                                "{shown} needs an SSH key: none is configured and no ssh-agent \
                                 is running (SSH_AUTH_SOCK is not set); give the deploy key \
                                 with --git-ssh-key FILE"
                            ));
                        }
                        Cred::ssh_key_from_agent(&user)
                    }
                    None => fail(format!(
                        "authentication failed for {shown} ({who}): no key of the \
                         ssh-agent was accepted; give the deploy key with --git-ssh-key FILE"
                    )),
                };
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                return match &creds.token {
                    None => fail(format!(
                        "{shown} asks for credentials and none are configured: give an access \
                         token with --git-token-file FILE (or {TOKEN_ENV}), and the user name \
                         with --git-username (default {DEFAULT_USERNAME})"
                    )),
                    Some(src) if gave_token => fail(format!(
                        "authentication failed for {shown} ({who}): check {}",
                        src.describe()
                    )),
                    Some(src) => {
                        gave_token = true;
                        match src.read() {
                            Ok(token) => Cred::userpass_plaintext(&user, token.expose()),
                            Err(e) => fail(format!("credentials for {shown}: {e}")),
                        }
                    }
                };
            }
            fail(format!(
                "{shown} asks for a kind of authentication rampart does not offer \
                 ({allowed:?}); use an access token over HTTPS or a key over SSH"
            ))
        });
    }
    {
        let failure = failure.clone();
        let files = creds.known_hosts_files();
        let explicit = creds.known_hosts.is_some();
        let port = ssh_host_port(url).map(|(_, p)| p).unwrap_or(22);
        callbacks.certificate_check(move |cert, host| {
            let Some(hk) = cert.as_hostkey() else {
                // X.509 (HTTPS): libgit2's verification decides.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let result = verify_host_key(&files, explicit, host, port, hk.hostkey());
            match result {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(msg) => {
                    let mut f = failure.lock().unwrap();
                    if f.is_none() {
                        *f = Some(msg.clone());
                    }
                    Err(git2::Error::new(
                        git2::ErrorCode::Certificate,
                        git2::ErrorClass::Ssh,
                        msg,
                    ))
                }
            }
        });
    }
    failure
}

fn verify_host_key(
    files: &[PathBuf],
    explicit: bool,
    host: &str,
    port: u16,
    key: Option<&[u8]>,
) -> Result<(), String> {
    let Some(key) = key else {
        return Err(format!(
            "the SSH server {host} did not show its host key in a form rampart can check; refused"
        ));
    };
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut changed_in = None;
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => continue,
            Err(e) => {
                return Err(format!(
                    "cannot read the known_hosts file {}: {e}",
                    f.display()
                ))
            }
        };
        match check_known_hosts(&text, host, port, key) {
            HostKeyCheck::Known => return Ok(()),
            HostKeyCheck::Revoked => {
                return Err(format!(
                    "the host key of {name} ({}) is marked @revoked in {}; refused",
                    fingerprint(key),
                    f.display()
                ))
            }
            HostKeyCheck::Changed => changed_in = Some(f.clone()),
            HostKeyCheck::Unknown => {}
        }
    }
    let list = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let keyscan = if port == 22 {
        format!("ssh-keyscan {host}")
    } else {
        format!("ssh-keyscan -p {port} {host}")
    };
    Err(match changed_in {
        Some(f) => format!(
            "the host key of {name} ({}) does not match the one in {}: the server's key \
             changed, or someone is intercepting the connection; refused. If the change is \
             expected, replace the line for {name} in that file",
            fingerprint(key),
            f.display()
        ),
        None => format!(
            "the host key of {name} ({}) is unknown (not in {list}); refused. Check the \
             fingerprint with the server's admin, then add it: `{keyscan} >> {}`",
            fingerprint(key),
            files
                .first()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "KNOWN_HOSTS".into())
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIKWhxllKJ6fZKyUK5F+prcknNqj2Kz7lh42OWaJpea0O";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFlC0ReGlffJqXf/SkxFQW+8PofQNaJawDI+P4hYTxOQ";

    fn blob(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn known_hosts_plain_ports_wildcards_negation() {
        let key = blob(KEY);
        let text = format!(
            "# comment\n\ngit.example.com,10.0.0.5 ssh-ed25519 {KEY}\n\
             [git.example.com]:2222 ssh-ed25519 {OTHER}\n\
             *.corp.example,!evil.corp.example ssh-ed25519 {KEY} comment here\n"
        );
        let c = |h: &str, p: u16| check_known_hosts(&text, h, p, &key);
        assert_eq!(c("git.example.com", 22), HostKeyCheck::Known);
        assert_eq!(c("GIT.example.com", 22), HostKeyCheck::Known);
        assert_eq!(c("10.0.0.5", 22), HostKeyCheck::Known);
        // A non-default port needs its own `[host]:port` entry, as in OpenSSH.
        assert_eq!(c("git.example.com", 2222), HostKeyCheck::Changed);
        assert_eq!(c("10.0.0.5", 2222), HostKeyCheck::Unknown);
        assert_eq!(c("a.corp.example", 22), HostKeyCheck::Known);
        assert_eq!(c("evil.corp.example", 22), HostKeyCheck::Unknown);
        assert_eq!(c("other.example.com", 22), HostKeyCheck::Unknown);
    }

    #[test]
    fn known_hosts_hashed_and_revoked() {
        // `ssh-keygen -H` of `[127.0.0.1]:2222`: HMAC-SHA1 keyed with the salt.
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let b64 = &base64::engine::general_purpose::STANDARD;
        let hashed = format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        let text = format!("{hashed} ssh-ed25519 {KEY}\n");
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 2222, &blob(KEY)),
            HostKeyCheck::Known
        );
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 2222, &blob(OTHER)),
            HostKeyCheck::Changed
        );
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 22, &blob(KEY)),
            HostKeyCheck::Unknown
        );
        let revoked = format!("@revoked * ssh-ed25519 {KEY}\n{text}");
        assert_eq!(
            check_known_hosts(&revoked, "127.0.0.1", 2222, &blob(KEY)),
            HostKeyCheck::Revoked
        );
        let ca = format!("@cert-authority * ssh-ed25519 {KEY}\n");
        assert_eq!(
            check_known_hosts(&ca, "h", 22, &blob(KEY)),
            HostKeyCheck::Unknown
        );
    }

    #[test]
    fn unknown_and_changed_keys_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, format!("[127.0.0.1]:2222 ssh-ed25519 {OTHER}\n")).unwrap();
        let files = vec![kh.clone()];
        let key = blob(KEY);
        let e = verify_host_key(&files, true, "127.0.0.1", 2222, Some(&key)).unwrap_err();
        assert!(
            e.contains("does not match") && e.contains(&fingerprint(&key)),
            "{e}"
        );
        let e = verify_host_key(&files, true, "127.0.0.1", 2223, Some(&key)).unwrap_err();
        assert!(
            e.contains("is unknown") && e.contains("ssh-keyscan -p 2223 127.0.0.1"),
            "{e}"
        );
        assert!(verify_host_key(&[dir.path().join("nope")], true, "h", 22, Some(&key)).is_err());
        std::fs::write(&kh, format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}\n")).unwrap();
        assert_eq!(
            verify_host_key(&files, true, "127.0.0.1", 2222, Some(&key)),
            Ok(())
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            ssh_host_port("ssh://git@h.example:2222/o/r.git"),
            Some(("h.example".into(), 2222))
        );
        assert_eq!(
            ssh_host_port("ssh://h.example/o/r.git"),
            Some(("h.example".into(), 22))
        );
        assert_eq!(
            ssh_host_port("ssh://[::1]:2200/r"),
            Some(("::1".into(), 2200))
        );
        assert_eq!(
            ssh_host_port("git@github.com:o/r.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(url_username("ssh://deploy@h/r"), Some("deploy".into()));
        assert_eq!(url_username("git@github.com:o/r.git"), Some("git".into()));
        assert_eq!(url_username("https://h/r"), None);
        assert!(url_has_password("https://bot:pw@h/r"));
        assert!(!url_has_password("https://bot@h/r"));
        assert!(!url_has_password("https://h/a:b@c"));
        assert!(!url_has_password("git@h:o/r"));
    }

    #[test]
    fn tokens_from_files_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "glpat-abc\n").unwrap();
        let src = TokenSource::File(f.clone());
        assert_eq!(src.read().unwrap().expose(), "glpat-abc");
        std::fs::write(&f, "\n").unwrap();
        let e = src.read().unwrap_err();
        assert!(e.contains("is empty") && e.contains("token"), "{e}");
        std::fs::write(&f, "a\nb\n").unwrap();
        assert!(src.read().unwrap_err().contains("more than one line"));
        let e = TokenSource::Env("RAMPART_TEST_NO_SUCH_TOKEN".into())
            .read()
            .unwrap_err();
        assert!(e.contains("RAMPART_TEST_NO_SUCH_TOKEN"), "{e}");
    }
}
