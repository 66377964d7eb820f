//! Real etcd clusters for tests: Debian's `etcd` (package etcd-server) on loopback.
//!
//! Each member gets a data directory in a fresh temporary directory (on /dev/shm when there is
//! one, so fsync costs nothing), ports the kernel hands out as free (high, and unlikely to be
//! anyone's fixed port), a name unique to the cluster, and fast election timing
//! (`--heartbeat-interval 25 --election-timeout 250`). Members are stopped with SIGKILL, by
//! PID: when a test kills one, and for all of them when the cluster is dropped, which happens
//! when the test fails too. If the test process itself dies, each member's small shell
//! wrapper sees its stdin close and kills its etcd, so no member outlives the tests.
//!
//! A missing `etcd` binary fails the test with a message to install etcd-server: these tests
//! never skip.

#![allow(dead_code)]
// `etcd-tls` is not declared in Cargo.toml yet; see src/store/etcd.rs.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long a cluster (or a restarted member) gets to become healthy. etcd 3.4 usually takes
/// 0.3–2.6 s, but the machine may be busy with other tests.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

pub struct EtcdCluster {
    pub members: Vec<Member>,
    /// Unique per cluster; part of every member's name and the cluster token.
    pub name: String,
    /// Set when clients must use TLS with a client certificate.
    pub tls: Option<Certs>,
    dir: tempfile::TempDir,
}

/// A throwaway CA, a certificate for the members (127.0.0.1) and one for a client, made with
/// the `openssl` command.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certs {
    pub fn generate(dir: &Path) -> Certs {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl (Debian package openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=rampart test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        for (name, usage) in [
            ("server", "serverAuth,clientAuth"),
            ("client", "clientAuth"),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            let ext = format!("{name}.ext");
            std::fs::write(
                dir.join(&ext),
                format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature\n"),
            )
            .unwrap();
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &[
                        "-keyout",
                        &key,
                        "-out",
                        &csr,
                        "-subj",
                        &format!("/CN=rampart test {name}"),
                    ],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Certs {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    process: Option<Running>,
}

struct Running {
    /// `sh`, which started etcd in the background and kills it when its stdin closes.
    wrapper: Child,
    /// Held open; closing it makes the wrapper kill etcd.
    stdin: Option<ChildStdin>,
    /// etcd's own PID.
    pid: u32,
}

/// Fails the test unless etcd is installed.
pub fn require_etcd() {
    match Command::new("etcd").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`etcd --version` failed ({}): {}; install Debian's etcd-server (apt-get install etcd-server), or run scripts/test, which installs it",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "cannot run `etcd` ({e}): these tests need a real etcd; install Debian's etcd-server (apt-get install etcd-server), or run scripts/test, which installs it"
        ),
    }
}

/// Free loopback ports, all distinct and never given out before in this test process (see
/// `ports.rs`: a member restarted on its port must not find it handed to someone else).
fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| crate::ports::free_tcp_port()).collect()
}

fn temp_root() -> tempfile::TempDir {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("rampart-etcd-test-");
        b
    };
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("create a temporary directory")
}

impl EtcdCluster {
    /// Starts `n` members and waits until they agree on a leader.
    pub async fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, false).await
    }

    /// Like `start`, with clients served over TLS and required to show a client certificate
    /// (`--client-cert-auth`), from a CA made for the cluster.
    pub async fn start_tls(n: usize) -> EtcdCluster {
        Self::start_with(n, true).await
    }

    async fn start_with(n: usize, tls: bool) -> EtcdCluster {
        require_etcd();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rampart-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = temp_root();
        let certs = tls.then(|| Certs::generate(dir.path()));
        let client_scheme = if tls { "https" } else { "http" };
        let ports = free_ports(2 * n);
        let peer_urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect();
        let initial_cluster = (0..n)
            .map(|i| format!("{name}-{i}={}", peer_urls[i]))
            .collect::<Vec<_>>()
            .join(",");
        let members = (0..n)
            .map(|i| {
                let member_name = format!("{name}-{i}");
                let client_url = format!("{client_scheme}://127.0.0.1:{}", ports[2 * i]);
                let data_dir = dir.path().join(&member_name);
                let args = vec![
                    "--name".into(),
                    member_name.clone(),
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                    "--listen-client-urls".into(),
                    client_url.clone(),
                    "--advertise-client-urls".into(),
                    client_url.clone(),
                    "--listen-peer-urls".into(),
                    peer_urls[i].clone(),
                    "--initial-advertise-peer-urls".into(),
                    peer_urls[i].clone(),
                    "--initial-cluster".into(),
                    initial_cluster.clone(),
                    "--initial-cluster-state".into(),
                    "new".into(),
                    "--initial-cluster-token".into(),
                    name.clone(),
                    "--heartbeat-interval".into(),
                    "25".into(),
                    "--election-timeout".into(),
                    "250".into(),
                    "--logger".into(),
                    "zap".into(),
                    "--log-outputs".into(),
                    "stderr".into(),
                ];
                let mut args = args;
                if let Some(c) = &certs {
                    for (flag, path) in [
                        ("--cert-file", &c.server_cert),
                        ("--key-file", &c.server_key),
                        ("--trusted-ca-file", &c.ca),
                    ] {
                        args.push(flag.into());
                        args.push(path.display().to_string());
                    }
                    args.push("--client-cert-auth".into());
                }
                Member {
                    log: dir.path().join(format!("{member_name}.log")),
                    name: member_name,
                    client_url,
                    peer_url: peer_urls[i].clone(),
                    data_dir,
                    args,
                    process: None,
                }
            })
            .collect();
        let mut cluster = EtcdCluster {
            members,
            name,
            tls: certs,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_healthy().await;
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let member = &mut self.members[i];
        assert!(
            member.process.is_none(),
            "{} is already running",
            member.name
        );
        // etcd runs in the background of a shell that reports its PID and then waits for its
        // own stdin to close (we close it, or the kernel does when the test process dies) to
        // SIGKILL it.
        let script = r#"log="$1"; shift; etcd "$@" >>"$log" 2>&1 & pid=$!; echo "$pid"; read _ignored; kill -9 "$pid" 2>/dev/null; exit 0"#;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&member.log)
            .args(&member.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sh to run etcd");
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().expect("wrapper stdout"))
            .read_line(&mut line)
            .expect("read etcd's PID");
        let pid: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the etcd wrapper printed {line:?}, not a PID"));
        member.process = Some(Running {
            wrapper,
            stdin,
            pid,
        });
    }

    /// Client URLs of all members, running or not.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// `etcd://HOST:PORT,.../PREFIX` for every member (`etcds://...?cacert=..&cert=..&key=..`
    /// for a TLS cluster).
    pub fn address(&self, prefix: &str) -> String {
        let hosts: Vec<&str> = self
            .members
            .iter()
            .map(|m| {
                m.client_url
                    .split_once("://")
                    .map_or(&*m.client_url, |(_, h)| h)
            })
            .collect();
        match &self.tls {
            None => format!("etcd://{}/{prefix}", hosts.join(",")),
            Some(c) => format!(
                "etcds://{}/{prefix}?cacert={}&cert={}&key={}",
                hosts.join(","),
                c.ca.display(),
                c.client_cert.display(),
                c.client_key.display()
            ),
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].process.is_some()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].process.as_ref().map(|p| p.pid)
    }

    /// SIGKILLs member `i` and waits until its process is gone.
    pub fn kill(&mut self, i: usize) {
        if let Err(e) = self.stop(i) {
            panic!("{e}");
        }
    }

    /// Like `kill`, without panicking (for `Drop`).
    fn stop(&mut self, i: usize) -> Result<(), String> {
        let Some(mut running) = self.members[i].process.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-9", &running.pid.to_string()])
            .status();
        // Let the wrapper go (its own kill finds nothing left) and reap it; etcd, reparented,
        // is reaped by init.
        drop(running.stdin.take());
        let _ = running.wrapper.kill();
        let _ = running.wrapper.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while process_alive(running.pid) {
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "etcd {} (pid {}) did not die after SIGKILL",
                    self.members[i].name, running.pid
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Starts member `i` again on its data directory and waits for the cluster to be healthy.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy().await;
    }

    /// Options for plain etcd-client connections to this cluster.
    fn client_options(&self) -> etcd_client::ConnectOptions {
        let options =
            etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_millis(200));
        match &self.tls {
            None => options,
            Some(c) => Self::with_client_cert(options, c),
        }
    }

    #[cfg(feature = "etcd-tls")]
    fn with_client_cert(
        options: etcd_client::ConnectOptions,
        c: &Certs,
    ) -> etcd_client::ConnectOptions {
        let read = |p: &Path| std::fs::read(p).unwrap();
        options.with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&c.ca)))
                .identity(etcd_client::Identity::from_pem(
                    read(&c.client_cert),
                    read(&c.client_key),
                )),
        )
    }

    #[cfg(not(feature = "etcd-tls"))]
    fn with_client_cert(_: etcd_client::ConnectOptions, _: &Certs) -> etcd_client::ConnectOptions {
        panic!("a TLS test cluster needs the etcd-tls feature");
    }

    async fn probe(&self, url: &str) -> Option<(u64, u64)> {
        let options = self.client_options();
        let attempt = async {
            let mut client = etcd_client::Client::connect([url], Some(options))
                .await
                .ok()?;
            let status = client.status().await.ok()?;
            Some((status.header()?.member_id(), status.leader()))
        };
        tokio::time::timeout(Duration::from_millis(500), attempt)
            .await
            .ok()
            .flatten()
    }

    /// Waits until every running member answers and all name the same leader; panics with the
    /// members' logs if that takes too long.
    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            let mut leaders = Vec::new();
            for (i, member) in self.members.iter().enumerate() {
                if self.is_running(i) {
                    leaders.push(self.probe(&member.client_url).await.map(|(_, l)| l));
                }
            }
            let agreed = leaders
                .iter()
                .all(|l| matches!(l, Some(id) if *id != 0 && Some(*id) == leaders[0]));
            if agreed {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcd cluster {} not healthy after {HEALTHY_WITHIN:?} (leaders seen: {leaders:?})\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index of the member that is the raft leader, as the running members see it.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            let mut ids = Vec::new();
            let mut leader = None;
            for (i, member) in self.members.iter().enumerate() {
                if !self.is_running(i) {
                    continue;
                }
                if let Some((id, l)) = self.probe(&member.client_url).await {
                    ids.push((i, id));
                    if l != 0 {
                        leader = Some(l);
                    }
                }
            }
            if let Some(l) = leader {
                if let Some((i, _)) = ids.iter().find(|(_, id)| *id == l) {
                    return *i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader among the running members of {}\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A plain etcd-client connected to every running member, for what the store does not do
    /// (compaction, reading raw keys).
    pub async fn raw_client(&self) -> etcd_client::Client {
        let urls: Vec<String> = (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .map(|i| self.members[i].client_url.clone())
            .collect();
        etcd_client::Client::connect(urls, Some(self.client_options()))
            .await
            .expect("connect etcd-client")
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!(
                "--- {} ({}) ---\n{}\n",
                m.name,
                m.log.display(),
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Err(e) = self.stop(i) {
                eprintln!("{e}");
            }
        }
        let _ = std::io::stderr().flush();
    }
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is dead: its sockets are closed, only its exit status is left to reap.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
