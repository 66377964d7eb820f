//! The git webhook: `POST /hooks/git`, signed with a shared secret, makes the source sync at
//! once instead of at the next poll.
//!
//! The signature is an HMAC-SHA256 of the raw request body with the shared secret, sent as
//! `X-Hub-Signature-256: sha256=HEX` (GitHub, Gitea, Forgejo, GitLab-compatible relays) or
//! `X-Gitea-Signature: HEX` (older Gitea, Gogs). It is checked in constant time. A request
//! without a valid signature gets 401 and triggers nothing; a valid one gets 202 and a sync.
//! The body itself is not trusted for anything: whatever the event, the sync fetches and
//! validates the branch as usual.
//!
//! The secret is read from a file or an environment variable, never from the command line
//! (where `ps` would show it).

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

/// The route the router serves.
pub const PATH: &str = "/hooks/git";
/// GitHub's header (`sha256=HEX`).
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// Gitea's header (bare `HEX`).
pub const GITEA_SIGNATURE: &str = "x-gitea-signature";
/// GitHub caps webhook payloads at 25 MB; larger bodies get 413 before any HMAC is computed.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The shared secret. Its `Debug` form never shows it.
#[derive(Clone)]
pub struct WebhookConfig {
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the webhook secret from {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("the webhook secret from {0} is empty")]
    Empty(String),
}

/// A trailing newline (as editors and `echo` leave) is not part of the secret.
fn trim_newline(mut b: Vec<u8>) -> Vec<u8> {
    while matches!(b.last(), Some(b'\n' | b'\r')) {
        b.pop();
    }
    b
}

impl WebhookConfig {
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(SecretError::Empty("the configuration".into()));
        }
        Ok(WebhookConfig { secret })
    }

    /// The secret from a file (a trailing newline is dropped). Warns when the file can be
    /// read by other users.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        "the webhook secret file is readable by other users; chmod 600 it"
                    );
                }
            }
        }
        let secret = trim_newline(bytes);
        if secret.is_empty() {
            return Err(SecretError::Empty(path.display().to_string()));
        }
        Ok(WebhookConfig { secret })
    }

    /// The secret from an environment variable (a trailing newline is dropped).
    pub fn from_env(var: &str) -> Result<Self, SecretError> {
        let value = std::env::var_os(var).ok_or_else(|| SecretError::EnvMissing(var.into()))?;
        let secret = trim_newline(value.into_encoded_bytes());
        if secret.is_empty() {
            return Err(SecretError::Empty(format!("${var}")));
        }
        Ok(WebhookConfig { secret })
    }
}

/// Why a request was refused (logged; never contains the secret or the expected MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingSignature,
    MalformedSignature,
    WrongSignature,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejection::MissingSignature => "no X-Hub-Signature-256 or X-Gitea-Signature header",
            Rejection::MalformedSignature => "the signature header is not sha256=HEX (or HEX)",
            Rejection::WrongSignature => "the signature does not match the body and the secret",
        })
    }
}

/// Check the request's signature over `body`.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), Rejection> {
    let hex_sig = if let Some(v) = headers.get(GITHUB_SIGNATURE) {
        let v = v
            .to_str()
            .map_err(|_| Rejection::MalformedSignature)?
            .trim();
        v.strip_prefix("sha256=")
            .ok_or(Rejection::MalformedSignature)?
            .to_string()
    } else if let Some(v) = headers.get(GITEA_SIGNATURE) {
        v.to_str()
            .map_err(|_| Rejection::MalformedSignature)?
            .trim()
            .to_string()
    } else {
        return Err(Rejection::MissingSignature);
    };
    let sig = hex::decode(hex_sig).map_err(|_| Rejection::MalformedSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&sig)
        .map_err(|_| Rejection::WrongSignature)
}

/// The signature a sender puts in `X-Hub-Signature-256` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

struct Hook {
    secret: Vec<u8>,
    trigger: Arc<Notify>,
}

/// `POST /hooks/git`: 202 and `trigger.notify_one()` on a valid signature, 401 otherwise.
/// Several notifications before the sync loop gets to them make one sync.
pub fn router(config: WebhookConfig, trigger: Arc<Notify>) -> Router {
    let hook = Arc::new(Hook {
        secret: config.secret,
        trigger,
    });
    Router::new()
        .route(PATH, post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(hook)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

async fn handle(
    State(hook): State<Arc<Hook>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    // The event and delivery ids help match a log line with the forge's delivery log.
    let event = header(&headers, "x-github-event");
    let event = if event == "-" {
        header(&headers, "x-gitea-event")
    } else {
        event
    };
    let delivery = header(&headers, "x-github-delivery");
    let delivery = if delivery == "-" {
        header(&headers, "x-gitea-delivery")
    } else {
        delivery
    };
    match verify(&hook.secret, &headers, &body) {
        Ok(()) => {
            tracing::info!(event, delivery, "git webhook: sync triggered");
            hook.trigger.notify_one();
            (StatusCode::ACCEPTED, "sync triggered\n")
        }
        Err(why) => {
            tracing::warn!(event, delivery, reason = %why, bytes = body.len(), "git webhook refused");
            (StatusCode::UNAUTHORIZED, "missing or invalid signature\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_and_gitea_signatures() {
        let body = b"{\"ref\":\"refs/heads/main\"}";
        let mut h = HeaderMap::new();
        assert_eq!(verify(b"k", &h, body), Err(Rejection::MissingSignature));
        h.insert(GITHUB_SIGNATURE, sign(b"k", body).parse().unwrap());
        assert_eq!(verify(b"k", &h, body), Ok(()));
        assert_eq!(verify(b"other", &h, body), Err(Rejection::WrongSignature));
        assert_eq!(
            verify(b"k", &h, b"tampered"),
            Err(Rejection::WrongSignature)
        );
        let mut g = HeaderMap::new();
        let hexsig = sign(b"k", body)["sha256=".len()..].to_string();
        g.insert(GITEA_SIGNATURE, hexsig.parse().unwrap());
        assert_eq!(verify(b"k", &g, body), Ok(()));
        g.insert(GITEA_SIGNATURE, "zz".parse().unwrap());
        assert_eq!(verify(b"k", &g, body), Err(Rejection::MalformedSignature));
        let mut bare = HeaderMap::new();
        bare.insert(GITHUB_SIGNATURE, hexsig.parse().unwrap());
        assert_eq!(
            verify(b"k", &bare, body),
            Err(Rejection::MalformedSignature)
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = WebhookConfig::new("hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(WebhookConfig::new("").is_err());
    }
}
