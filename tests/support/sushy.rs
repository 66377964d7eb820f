//! A real Redfish BMC for tests: sushy-tools' `sushy-emulator` on loopback, over HTTPS with
//! basic authentication.
//!
//! sushy-tools is not packaged by Debian: ./scripts/test installs it into a venv under
//! `target/test-venv` and sets `RAMPART_SUSHY_EMULATOR`; without that variable the tests look
//! for `$CARGO_MANIFEST_DIR/target/test-venv/bin/sushy-emulator`. A missing emulator fails the
//! test with a message to run ./scripts/test: these tests never skip.
//!
//! Each emulator gets a fresh directory: a throwaway CA and a server certificate it signed for
//! 127.0.0.1 (made with `openssl`), an htpasswd file (bcrypt, the only kind sushy accepts,
//! hashed with the venv's Python) with a throwaway user, and a config using the fake driver
//! with the systems the test asks for. The fake driver applies a power change 1–11 s after the
//! request, as slow hardware would.
//!
//! The emulator is killed with SIGKILL by PID when the value is dropped (the test failing
//! too), and runs under a small `sh` wrapper that kills it when its stdin closes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "rampartfence";

/// One system of the fake driver.
pub struct System {
    pub uuid: &'static str,
    pub name: &'static str,
    pub on: bool,
}

pub struct Sushy {
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The CA that signed the emulator's certificate (trusted by nobody else).
    pub ca: PathBuf,
    pid: u32,
    wrapper: Child,
    stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
}

/// The emulator binary, or a failed test saying how to get it.
pub fn emulator() -> PathBuf {
    let p = std::env::var_os("RAMPART_SUSHY_EMULATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/sushy-emulator")
        });
    assert!(
        p.is_file(),
        "sushy-emulator not found at {}: run ./scripts/test once (it installs sushy-tools into target/test-venv), or set RAMPART_SUSHY_EMULATOR",
        p.display()
    );
    p
}

use crate::ports::free_tcp_port;

fn run(dir: &Path, program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway CA and a certificate it signed for 127.0.0.1: `ca.pem`, `server.pem`,
/// `server.key`.
fn certificates(dir: &Path) {
    let openssl = Path::new("openssl");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rampart test BMC CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(dir, openssl, &a);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=rampart test BMC",
    ]);
    run(dir, openssl, &a);
    run(
        dir,
        openssl,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

impl Sushy {
    pub fn start(systems: &[System]) -> Sushy {
        let bin = emulator();
        let python = bin.with_file_name("python3");
        let dir = tempfile::Builder::new()
            .prefix("rampart-sushy-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        certificates(d);
        let port = free_tcp_port();
        let password = format!("pw-{:x}", std::process::id() as u64 * 7919 + port as u64);
        let hash = run(
            d,
            &python,
            &[
                "-c",
                "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
                &password,
            ],
        );
        std::fs::write(d.join("htpasswd"), format!("{USER}:{}\n", hash.trim())).unwrap();
        std::fs::write(d.join("password"), format!("{password}\n")).unwrap();
        std::fs::write(d.join("username"), format!("{USER}\n")).unwrap();
        let systems = systems
            .iter()
            .map(|s| {
                format!(
                    "    {{'uuid': '{}', 'name': '{}', 'power_state': '{}', 'nics': []}},\n",
                    s.uuid,
                    s.name,
                    if s.on { "On" } else { "Off" }
                )
            })
            .collect::<String>();
        let p = |f: &str| d.join(f).display().to_string();
        std::fs::write(
            d.join("emulator.conf"),
            format!(
                "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
                 SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
                 SUSHY_EMULATOR_SSL_CERT = '{cert}'\n\
                 SUSHY_EMULATOR_SSL_KEY = '{key}'\n\
                 SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
                 SUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
                 SUSHY_EMULATOR_FAKE_SYSTEMS = [\n{systems}]\n",
                cert = p("server.pem"),
                key = p("server.key"),
                auth = p("htpasswd"),
                state = p("state"),
            ),
        )
        .unwrap();
        let script = r#"log="$1"; shift; "$@" >>"$log" 2>&1 & pid=$!; echo "$pid"; read _ignored; kill -9 "$pid" 2>/dev/null; wait "$pid"; exit 0"#;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(d.join("emulator.log"))
            .arg(&bin)
            .arg("--config")
            .arg(d.join("emulator.conf"))
            .current_dir(d)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sh to run sushy-emulator");
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the sushy-emulator wrapper printed {line:?}, not a PID"));
        Sushy {
            port,
            user: USER.into(),
            password,
            ca: d.join("ca.pem"),
            pid,
            wrapper,
            stdin,
            dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    pub fn username_file(&self) -> PathBuf {
        self.dir.path().join("username")
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&self.ca).unwrap()).unwrap(),
            )
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// Wait until the emulator answers an authenticated request.
    pub async fn ready(&self) {
        let t = Instant::now();
        let c = self.client();
        loop {
            let r = c
                .get(format!("{}/redfish/v1/Systems", self.endpoint()))
                .basic_auth(&self.user, Some(&self.password))
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status().is_success()) {
                return;
            }
            assert!(self.running(), "sushy-emulator exited: {}", self.log());
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "sushy-emulator did not answer within 30 s ({r:?}): {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The PowerState the emulator reports for a system (by UUID).
    pub async fn power_state(&self, uuid: &str) -> String {
        let v: serde_json::Value = self
            .client()
            .get(format!("{}/redfish/v1/Systems/{uuid}", self.endpoint()))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["PowerState"].as_str().unwrap().to_string()
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
    }
}
