//! Throwaway servers on loopback for the git source's transports: an OpenSSH `sshd` (Debian
//! package openssh-server) with a temporary host key that lets one temporary client key log
//! in as root, and an `openssl s_server` with a self-signed certificate. Each is killed by its
//! PID when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_tcp_port as free_port;

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("the tests need {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_listening(port: u16, child: &mut Child, log: &dyn Fn() -> String) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the server exited ({st}) before listening:\n{}", log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the server does not listen on {port} after 10s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The passphrase of [`Sshd::protected_key`].
pub const PASSPHRASE: &str = "correct horse battery staple";

fn keygen(path: &Path, passphrase: &str) {
    run(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                passphrase,
                "-C",
                "rampart-test",
                "-f",
            ])
            .arg(path),
        "ssh-keygen (Debian package openssh-client)",
    );
}

/// Kills the process by its PID when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Sshd {
    pub port: u16,
    /// `ssh-ed25519 AAAA...` of the server's host key.
    pub host_key_pub: String,
    /// A private key the server accepts for root.
    pub client_key: PathBuf,
    /// A private key the server does not accept.
    pub other_key: PathBuf,
    /// A private key the server accepts, encrypted with [`PASSPHRASE`].
    pub protected_key: PathBuf,
    log: PathBuf,
    _child: Guard,
}

impl Sshd {
    /// Start under `dir` (a private temporary directory).
    pub fn start(dir: &Path) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "the SSH test needs /usr/sbin/sshd (Debian package openssh-server)"
        );
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        let other_key = dir.join("other_key");
        let protected_key = dir.join("protected_key");
        for k in [&host_key, &client_key, &other_key] {
            keygen(k, "");
        }
        keygen(&protected_key, PASSPHRASE);
        let pubkey = |k: &Path| {
            std::fs::read_to_string(k.with_extension("pub"))
                .unwrap()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let authorized = dir.join("authorized_keys");
        std::fs::write(
            &authorized,
            format!("{}\n{}\n", pubkey(&client_key), pubkey(&protected_key)),
        )
        .unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nPidFile none\n\
                 AuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 AllowUsers root\nLogLevel VERBOSE\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .unwrap();
        // The privilege separation directory the package's init script would make.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = dir.join("sshd.log");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start sshd");
        let mut guard = Guard(child);
        let show = {
            let log = log.clone();
            move || std::fs::read_to_string(&log).unwrap_or_default()
        };
        wait_listening(port, &mut guard.0, &show);
        Sshd {
            port,
            host_key_pub: pubkey(&host_key),
            client_key,
            other_key,
            protected_key,
            log,
            _child: guard,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An `ssh-agent` on a socket under a directory, holding some keys.
pub struct Agent {
    pub socket: PathBuf,
    _child: Guard,
}

impl Agent {
    pub fn start(dir: &Path, keys: &[&Path]) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("the tests need ssh-agent (Debian package openssh-client)");
        let guard = Guard(child);
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "ssh-agent made no socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for k in keys {
            run(
                Command::new("ssh-add")
                    .arg("-q")
                    .arg(k)
                    .env("SSH_AUTH_SOCK", &socket),
                "ssh-add (Debian package openssh-client)",
            );
        }
        Agent {
            socket,
            _child: guard,
        }
    }
}

/// A TLS server with a self-signed certificate for 127.0.0.1 (`openssl s_server`).
pub struct TlsServer {
    pub port: u16,
    _child: Guard,
}

impl TlsServer {
    pub fn start(dir: &Path) -> TlsServer {
        let dir = dir.join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        run(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            "openssl (Debian package openssl)",
        );
        let port = free_port();
        let log = dir.join("s_server.log");
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the tests need openssl (Debian package openssl)");
        let mut guard = Guard(child);
        let show = move || std::fs::read_to_string(&log).unwrap_or_default();
        wait_listening(port, &mut guard.0, &show);
        TlsServer {
            port,
            _child: guard,
        }
    }
}
