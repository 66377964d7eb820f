//! Store addresses: which store a process uses, written as one string in flags and unit files.
//!
//! ```text
//! etcd://HOST:PORT[,HOST:PORT...][/PREFIX][?timeout=DURATION]
//! etcds://HOST:PORT[,HOST:PORT...][/PREFIX]?cacert=FILE[&cert=FILE&key=FILE][&domain=NAME][&timeout=DURATION]
//! ```
//!
//! - `etcd://` speaks plain gRPC, `etcds://` TLS. With `etcds://`, `cacert` is the CA that signed
//!   the members' certificates (the etcd store requires it), `cert` and `key` the client
//!   certificate for etcd's `--client-cert-auth` (both or neither), `domain` the name to check
//!   the members' certificates against when it is not the host in the address. TLS needs a
//!   build with the `etcd-tls` feature.
//! - HOST is a name, an IPv4 address, or an IPv6 address in brackets (`[::1]:2379`). PORT
//!   defaults to 2379, etcd's client port.
//! - PREFIX is put in front of every key, so several clusters (or tests) can share one etcd.
//!   A prefix that does not end with `/` gets one: `etcd://h:2379/prod` stores `rampart/leader`
//!   as `prod/rampart/leader`. Without a path, keys are stored as they are. `%XX` escapes are
//!   decoded, so a prefix may hold any byte.
//! - `timeout` bounds every store call, retries included (see the etcd store), e.g. `1500ms`.
//!
//! This module is compiled without the `etcd` feature, so `rampart validate` and friends can
//! check an address on any build; only connecting needs the feature.

use std::path::PathBuf;
use std::time::Duration;

/// etcd's client port.
pub const DEFAULT_ETCD_PORT: u16 = 2379;

/// A parsed `etcd://` or `etcds://` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdAddress {
    /// `HOST:PORT` of each member, in the order given (IPv6 hosts keep their brackets).
    pub endpoints: Vec<String>,
    /// Put in front of every key; empty for none.
    pub prefix: Vec<u8>,
    /// `Some` for `etcds://`.
    pub tls: Option<TlsFiles>,
    /// The `timeout` query parameter: a bound on each store call, retries included.
    pub timeout: Option<Duration>,
}

/// Where the TLS material lives. Files are read when connecting, not when parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) to verify the members with (PEM).
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with `cert`.
    pub key: Option<PathBuf>,
    /// Name to verify the members' certificates against, if not the host of the address.
    pub domain: Option<String>,
}

impl EtcdAddress {
    /// The endpoints as the gRPC client wants them: `http://HOST:PORT` or `https://HOST:PORT`.
    pub fn endpoint_urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect()
    }
}

/// Why an address does not parse. The message names the part at fault and shows the form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store address {address:?}: {reason} (expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX], or etcds://...?cacert=FILE&cert=FILE&key=FILE for TLS)")]
pub struct AddressError {
    pub address: String,
    pub reason: String,
}

/// Parses an `etcd://` or `etcds://` address.
pub fn parse_etcd_url(address: &str) -> Result<EtcdAddress, AddressError> {
    let fail = |reason: String| AddressError {
        address: address.to_string(),
        reason,
    };
    let (scheme, rest) = address
        .split_once("://")
        .ok_or_else(|| fail("no scheme".into()))?;
    let tls = match scheme {
        "etcd" => false,
        "etcds" => true,
        "http" | "https" => {
            return Err(fail(format!(
                "scheme {scheme}:// is for one member's URL; use etcd:// (or etcds:// for TLS) and list the members"
            )))
        }
        other => return Err(fail(format!("unknown scheme {other}://"))),
    };

    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    if rest.contains('#') || query.is_some_and(|q| q.contains('#')) {
        return Err(fail("fragments (#...) are not allowed".into()));
    }
    let (hosts, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    if hosts.contains('@') {
        return Err(fail(
            "user names and passwords do not belong in the address; use a client certificate (etcds://...?cert=..&key=..)".into(),
        ));
    }

    let mut endpoints = Vec::new();
    for host in hosts.split(',') {
        endpoints.push(parse_endpoint(host).map_err(&fail)?);
    }

    let mut prefix = percent_decode(path).map_err(&fail)?;
    if !prefix.is_empty() && !prefix.ends_with(b"/") {
        prefix.push(b'/');
    }

    let mut files = TlsFiles::default();
    let mut timeout = None;
    let mut tls_param = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| fail(format!("query parameter {pair:?} has no value")))?;
        let value = String::from_utf8(percent_decode(value).map_err(&fail)?)
            .map_err(|_| fail(format!("query parameter {name} is not UTF-8")))?;
        if value.is_empty() {
            return Err(fail(format!("query parameter {name} is empty")));
        }
        let slot = match name {
            "cacert" => &mut files.ca_cert,
            "cert" => &mut files.cert,
            "key" => &mut files.key,
            "domain" => {
                if files.domain.replace(value).is_some() {
                    return Err(fail("query parameter domain given twice".into()));
                }
                tls_param.get_or_insert(name);
                continue;
            }
            "timeout" => {
                let d = humantime::parse_duration(&value).map_err(|e| {
                    fail(format!(
                        "timeout {value:?} is not a duration like 1500ms or 2s: {e}"
                    ))
                })?;
                if d.is_zero() {
                    return Err(fail("timeout must be positive".into()));
                }
                if timeout.replace(d).is_some() {
                    return Err(fail("query parameter timeout given twice".into()));
                }
                continue;
            }
            other => {
                return Err(fail(format!(
                    "unknown query parameter {other:?} (known: cacert, cert, key, domain, timeout)"
                )))
            }
        };
        if slot.replace(PathBuf::from(value)).is_some() {
            return Err(fail(format!("query parameter {name} given twice")));
        }
        tls_param.get_or_insert(name);
    }
    if files.cert.is_some() != files.key.is_some() {
        return Err(fail(
            "a client certificate needs both cert= and key= (or neither)".into(),
        ));
    }
    if !tls {
        if let Some(name) = tls_param {
            return Err(fail(format!(
                "{name}= is a TLS setting, but etcd:// is plain text; use etcds://"
            )));
        }
    }
    Ok(EtcdAddress {
        endpoints,
        prefix,
        tls: tls.then_some(files),
        timeout,
    })
}

/// `HOST[:PORT]` → `HOST:PORT`.
fn parse_endpoint(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("empty member address (HOST:PORT expected)".into());
    }
    let (host, port) = if let Some(after) = text.strip_prefix('[') {
        let (v6, tail) = after
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: unclosed [ in IPv6 address"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{text:?}: {v6:?} is not an IPv6 address"));
        }
        let port = match tail {
            "" => None,
            t => Some(
                t.strip_prefix(':')
                    .ok_or_else(|| format!("{text:?}: expected :PORT after ]"))?,
            ),
        };
        (format!("[{v6}]"), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "{text:?}: IPv6 addresses go in brackets, e.g. [::1]:2379"
                ))
            }
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (text.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{text:?}: no host"));
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!("{text:?}: {host:?} is not a host name or address"));
    }
    let port = match port {
        None => DEFAULT_ETCD_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "{text:?}: port {p:?} is not a number from 1 to 65535"
                ))
            }
        },
    };
    Ok(format!("{host}:{port}"))
}

fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> EtcdAddress {
        parse_etcd_url(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match parse_etcd_url(s) {
            Ok(a) => panic!("{s} parsed as {a:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn one_member_without_prefix() {
        let a = ok("etcd://127.0.0.1:2379");
        assert_eq!(a.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(a.prefix, b"");
        assert_eq!(a.tls, None);
        assert_eq!(a.timeout, None);
        assert_eq!(a.endpoint_urls(), ["http://127.0.0.1:2379"]);
        assert_eq!(ok("etcd://127.0.0.1:2379/").prefix, b"");
    }

    #[test]
    fn several_members_prefix_and_default_port() {
        let a = ok("etcd://hv1:2379,hv2,[::1]:32379,witness.example.org:2379/prod");
        assert_eq!(
            a.endpoints,
            [
                "hv1:2379",
                "hv2:2379",
                "[::1]:32379",
                "witness.example.org:2379"
            ]
        );
        assert_eq!(a.prefix, b"prod/");
        assert_eq!(ok("etcd://h/a/b/").prefix, b"a/b/");
        assert_eq!(ok("etcd://h//rooted").prefix, b"/rooted/");
        assert_eq!(ok("etcd://h/sp%20ace%2f").prefix, b"sp ace/");
        assert_eq!(ok("etcd://[::1]").endpoints, ["[::1]:2379"]);
    }

    #[test]
    fn timeout_parameter() {
        let a = ok("etcd://h:1/p?timeout=1500ms");
        assert_eq!(a.timeout, Some(Duration::from_millis(1500)));
        assert!(err("etcd://h?timeout=soon").contains("not a duration"));
        assert!(err("etcd://h?timeout=0s").contains("positive"));
    }

    #[test]
    fn tls_with_client_certificate() {
        let a = ok("etcds://10.0.0.1:2379,10.0.0.2:2379/rampart?cacert=/etc/rampart/ca.pem&cert=/etc/rampart/client.pem&key=/etc/rampart/client%2Dkey.pem&domain=etcd.internal");
        let tls = a.tls.clone().unwrap();
        assert_eq!(tls.ca_cert, Some(PathBuf::from("/etc/rampart/ca.pem")));
        assert_eq!(tls.cert, Some(PathBuf::from("/etc/rampart/client.pem")));
        assert_eq!(tls.key, Some(PathBuf::from("/etc/rampart/client-key.pem")));
        assert_eq!(tls.domain.as_deref(), Some("etcd.internal"));
        assert_eq!(
            a.endpoint_urls(),
            ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
        );
        // Server-authenticated TLS only, with the system's roots.
        assert_eq!(ok("etcds://h").tls, Some(TlsFiles::default()));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (address, expected) in [
            ("127.0.0.1:2379", "no scheme"),
            ("http://127.0.0.1:2379", "use etcd://"),
            ("redis://h", "unknown scheme"),
            ("etcd://", "empty member address"),
            ("etcd://a,,b", "empty member address"),
            ("etcd://h:0", "port"),
            ("etcd://h:99999", "port"),
            ("etcd://h:x", "port"),
            ("etcd://::1:2379", "brackets"),
            ("etcd://[::1", "unclosed"),
            ("etcd://[nope]:1", "not an IPv6"),
            ("etcd://user:pw@h", "passwords"),
            ("etcd://h/p#frag", "fragments"),
            ("etcd://h/%zz", "%-escape"),
            ("etcd://h?cacert=/ca.pem", "use etcds://"),
            ("etcds://h?cert=/c.pem", "both cert= and key="),
            ("etcds://h?key=/k.pem", "both cert= and key="),
            ("etcds://h?cacert=a&cacert=b", "twice"),
            ("etcds://h?cacert=", "empty"),
            ("etcds://h?cacert", "no value"),
            ("etcd://h?user=root", "unknown query parameter"),
            ("etcd://h o:1", "not a host name"),
        ] {
            let message = err(address);
            assert!(
                message.contains(expected),
                "{address}: {message:?} does not say {expected:?}"
            );
        }
    }
}
