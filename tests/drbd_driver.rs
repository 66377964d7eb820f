//! The real DRBD driver ([`DrbdAdm`]) against the real drbd-utils 9.22 (`drbdadm`, `drbdmeta`,
//! `drbdsetup`), and the events2 observer.
//!
//! There is no DRBD kernel module on these machines, so:
//! - `up`, `promote`, `demote`, `down` run in drbdadm's dry-run mode (`-d`) in a temporary
//!   directory, as a given node (a private UTS namespace with that hostname: drbdadm picks its
//!   `on HOST` section by hostname), and the test reads the drbdsetup commands drbdadm printed;
//!   the written file must pass `drbdadm -c FILE dump`;
//! - the meta-data check and `create-md` run for real with drbdmeta on a loop device;
//! - the secret-scrubbing of failures uses a stand-in `drbdsetup` that fails `new-peer`, since
//!   the real one cannot get that far without the module (drbdadm then prints the failed
//!   command line, shared secret included);
//! - the events2 observer reads a stand-in `drbdsetup` script that prints recorded events2
//!   lines (tests/data/drbd): a test double for the stream only.
//!
//! A missing drbd-utils, `unshare` or loop device fails the tests; they are never skipped.
//! Every process a test starts, it ends (the driver kills what outlives its timeout; the loop
//! device is detached by a guard).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rampart::drivers::config::{ConfigHandle, HostConfig, VolumeConfig};
use rampart::drivers::drbd::{
    parse_status_json, ConfigFile, DrbdAdm, DrbdAdmOptions, Events2Observer, Events2Options,
};
use rampart::drivers::Drbd;
use rampart::manifest::{ManifestSet, SecretRef};

/// Needs quoting and escaping in drbd.conf; must never leave the 0600 file.
const SECRET: &str = r#"s3cr"t hunter2\x"#;

fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH or in /usr/sbin: install drbd-utils \
                 (`apt-get install -y drbd-utils`). These tests run the real tool and are never \
                 skipped."
            )
        })
}

/// A wrapper that runs drbdadm with hostname `node`, in a private UTS namespace.
fn as_node(node: &str) -> Vec<OsString> {
    let probe = Command::new("unshare")
        .args(["--uts", "sh", "-c", "hostname rampart-probe"])
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        probe.status.success(),
        "cannot set a hostname in a private UTS namespace (`unshare --uts`): run as root. {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    [
        "unshare",
        "--uts",
        "sh",
        "-c",
        r#"hostname "$0" && exec "$@""#,
        node,
    ]
    .map(OsString::from)
    .to_vec()
}

fn reference_set() -> ManifestSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let report = rampart::manifest::check(&rampart::source::fs::Paths::new([&dir]));
    assert!(
        !report.has_errors(),
        "the reference manifests do not validate"
    );
    report.set
}

/// The VolumeConfig the controller publishes for `volume` on `node`, with the secret read from
/// `secret_file`.
fn volume_config(set: &ManifestSet, volume: &str, node: &str, secret_file: &Path) -> VolumeConfig {
    let d = set.volumes[volume].object.spec.drbd.as_ref().unwrap();
    let replica = d.replicas.iter().find(|r| r.node == node).unwrap();
    let res = rampart::render::render_res_redacted(set, volume).unwrap();
    // The published text names the manifest's reference; this node reads the test's file.
    let res = res.replace(
        "<secret from /etc/rampart/secrets/drbd>",
        &format!("<secret from {}>", secret_file.display()),
    );
    VolumeConfig {
        res,
        secret: Some(SecretRef::File(secret_file.to_path_buf())),
        minor: d.minor,
        disk: replica.disk.clone(),
        meta_disk: replica.meta_disk.clone(),
        initialize: d.initialize,
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    set: ManifestSet,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
        Fixture {
            dir,
            set: reference_set(),
        }
    }
    fn secret_file(&self) -> PathBuf {
        self.dir.path().join("secret")
    }
    fn res_dir(&self) -> PathBuf {
        self.dir.path().join("drbd.d")
    }
    fn top(&self) -> PathBuf {
        self.dir.path().join("drbd.conf")
    }
    fn host(&self, node: &str, volumes: &[&str]) -> ConfigHandle {
        let mut h = HostConfig::default();
        for v in volumes {
            h.volumes.insert(
                v.to_string(),
                volume_config(&self.set, v, node, &self.secret_file()),
            );
        }
        ConfigHandle::new(h)
    }
    fn driver(&self, node: &str, config: ConfigHandle, dry_run: bool) -> DrbdAdm {
        DrbdAdm::new(
            DrbdAdmOptions {
                res_dir: self.res_dir(),
                drbdadm: tool("drbdadm"),
                config: ConfigFile::Generated(self.top()),
                dry_run,
                wrapper: as_node(node),
                timeout: Duration::from_secs(30),
                ..Default::default()
            },
            config,
        )
    }
}

/// The drbdsetup/drbdmeta commands a dry run printed, split into words (drbdadm escapes blanks
/// with a backslash).
fn printed_commands(driver: &DrbdAdm, step: &str) -> Vec<Vec<String>> {
    let t = driver.transcript();
    let rec = t
        .iter()
        .rev()
        .find(|r| r.step == step)
        .unwrap_or_else(|| panic!("no `{step}` in the transcript: {t:#?}"));
    assert_eq!(rec.status, "exit 0", "{rec:#?}");
    // drbdadm started by its full path prints its tools by full path: keep the base name.
    rec.stdout
        .lines()
        .map(shell_words)
        .filter_map(|mut w| {
            let base = w.first()?.rsplit('/').next()?.to_string();
            (base == "drbdsetup" || base == "drbdmeta").then(|| {
                w[0] = base;
                w
            })
        })
        .collect()
}

fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

fn has(cmds: &[Vec<String>], want: &[&str]) -> bool {
    cmds.iter()
        .any(|c| c.len() >= want.len() && c.iter().zip(want).all(|(a, b)| a == b))
}

fn assert_no_secret(driver: &DrbdAdm) {
    for r in driver.transcript() {
        for text in [&r.argv, &r.stdout, &r.stderr] {
            assert!(
                !text.contains("hunter2"),
                "secret in the transcript of `{}`: {text}",
                r.step
            );
        }
    }
}

#[tokio::test]
async fn up_writes_a_file_drbdadm_accepts_and_dry_runs_the_right_commands() {
    let f = Fixture::new();
    for (node, my_id, peer, peer_id, my_ip, peer_ip) in [
        ("alpha", "0", "beta", "1", "192.168.100.1", "192.168.100.2"),
        ("beta", "1", "alpha", "0", "192.168.100.2", "192.168.100.1"),
    ] {
        let d = f.driver(node, f.host(node, &["files", "www"]), true);
        d.up("files").await.unwrap();
        let path = f.res_dir().join("files.res");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#"shared-secret "s3cr\"t hunter2\\x";"#),
            "{text}"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // The generated top-level config includes the file; drbdadm parses it.
        let dump = Command::new(tool("drbdadm"))
            .arg("-c")
            .arg(f.top())
            .arg("dump")
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "drbdadm dump refused the files: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        assert!(String::from_utf8_lossy(&dump.stdout).contains("resource files"));

        let cmds = printed_commands(&d, "drbdadm adjust files");
        assert!(
            has(&cmds, &["drbdsetup", "new-resource", "files", my_id]),
            "{cmds:?}"
        );
        assert!(
            has(&cmds, &["drbdsetup", "new-minor", "files", "0", "0"]),
            "{cmds:?}"
        );
        let new_peer = cmds
            .iter()
            .find(|c| c.get(1).map(String::as_str) == Some("new-peer"))
            .unwrap_or_else(|| panic!("no new-peer: {cmds:?}"));
        assert_eq!(&new_peer[2..4], ["files", peer_id]);
        assert!(
            new_peer.contains(&format!("--_name={peer}")),
            "{new_peer:?}"
        );
        assert!(
            new_peer.contains(&"--protocol=C".to_string()),
            "{new_peer:?}"
        );
        assert!(
            new_peer.contains(&"--fencing=resource-and-stonith".to_string()),
            "{new_peer:?}"
        );
        // drbdadm would pass the secret to drbdsetup; the transcript shows it redacted.
        assert!(
            new_peer.contains(&"--shared-secret=<redacted>".to_string()),
            "{new_peer:?}"
        );
        assert!(
            has(
                &cmds,
                &[
                    "drbdsetup",
                    "new-path",
                    "files",
                    peer_id,
                    &format!("ipv4:{my_ip}:7788"),
                    &format!("ipv4:{peer_ip}:7788"),
                ]
            ),
            "{cmds:?}"
        );
        assert!(
            has(
                &cmds,
                &[
                    "drbdsetup",
                    "attach",
                    "0",
                    "/dev/vg0/files",
                    "/dev/vg0/files",
                    "internal"
                ]
            ),
            "{cmds:?}"
        );
        assert!(
            has(&cmds, &["drbdsetup", "connect", "files", peer_id]),
            "{cmds:?}"
        );
        assert_no_secret(&d);
        // Dry run: the meta-data probe does not run (it would read the disk).
        assert!(d.transcript().iter().all(|r| !r.step.contains("dump-md")));
    }
}

#[tokio::test]
async fn unchanged_content_is_not_rewritten_a_new_secret_is() {
    let f = Fixture::new();
    let d = f.driver("alpha", f.host("alpha", &["files"]), true);
    d.up("files").await.unwrap();
    let path = f.res_dir().join("files.res");
    let ino = std::fs::metadata(&path).unwrap().ino();
    d.up("files").await.unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino, "rewritten");
    std::fs::write(f.secret_file(), "another hunter2\n").unwrap();
    d.up("files").await.unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert_ne!(m.ino(), ino, "a new secret must be written");
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains(r#"shared-secret "another hunter2";"#));
    // No temporary files left in the resource directory.
    let names: Vec<String> = std::fs::read_dir(f.res_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["files.res"]);
    assert_no_secret(&d);
}

#[tokio::test]
async fn promote_demote_down_dry_runs() {
    let f = Fixture::new();
    let d = f.driver("beta", f.host("beta", &["files"]), true);
    d.up("files").await.unwrap();
    d.promote("files").await.unwrap();
    assert_eq!(
        printed_commands(&d, "drbdadm primary files"),
        [["drbdsetup", "primary", "files"]]
    );
    d.demote("files").await.unwrap();
    assert_eq!(
        printed_commands(&d, "drbdadm secondary files"),
        [["drbdsetup", "secondary", "files"]]
    );
    d.down("files").await.unwrap();
    assert_eq!(
        printed_commands(&d, "drbdadm down files"),
        [["drbdsetup", "down", "files"]]
    );
    assert!(
        !f.res_dir().join("files.res").exists(),
        "down removes the file"
    );
    // Again: nothing left to do, no error.
    d.down("files").await.unwrap();
    assert_no_secret(&d);
}

#[tokio::test]
async fn unknown_volume_and_missing_secret_are_clear_errors() {
    let f = Fixture::new();
    let d = f.driver("alpha", f.host("alpha", &["files"]), true);
    let e = d.up("nope").await.unwrap_err();
    assert!(e.terminal, "{e}");
    assert!(e.to_string().contains("`nope`"), "{e}");

    std::fs::remove_file(f.secret_file()).unwrap();
    let e = d.up("files").await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("shared secret of Volume `files`"), "{text}");
    assert!(
        text.contains(&f.secret_file().display().to_string()),
        "the error names the file: {text}"
    );
    assert!(!f.res_dir().join("files.res").exists(), "nothing written");
    assert!(d.transcript().is_empty(), "no command ran");

    // A secret DRBD cannot take is refused without showing it.
    std::fs::write(f.secret_file(), "hunter2".repeat(10)).unwrap();
    let e = d.up("files").await.unwrap_err();
    assert!(e.terminal, "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("63"), "{e}");
}

/// A stand-in for drbdsetup (and drbdmeta) that fails `new-peer` the way a kernel refusal
/// would: the real drbdsetup cannot get that far without the DRBD module. drbdadm then prints
/// the failed command line, `--shared-secret=...` included.
const FAILING_NEW_PEER: &str = "#!/bin/sh\n# TEST DOUBLE for drbdsetup/drbdmeta (no DRBD kernel module here)\ncase \"$1\" in new-peer) echo \"new-peer: (10) kernel refused\" >&2; exit 10;; esac\nexit 0\n";

#[tokio::test]
async fn a_failure_names_the_step_and_never_the_secret() {
    let f = Fixture::new();
    let fake = f.dir.path().join("fake-drbdsetup");
    std::fs::write(&fake, FAILING_NEW_PEER).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // drbdadm checks that this node's address exists here before it runs anything.
    let mut vc = volume_config(&f.set, "files", "alpha", &f.secret_file());
    vc.res = vc
        .res
        .replace("192.168.100.1", "127.0.0.1")
        .replace("192.168.100.2", "127.0.0.2");
    let config = ConfigHandle::new(HostConfig {
        volumes: [("files".to_string(), vc)].into(),
        ..Default::default()
    });
    let d = DrbdAdm::new(
        DrbdAdmOptions {
            res_dir: f.res_dir(),
            drbdadm: tool("drbdadm"),
            drbdsetup: fake.clone(),
            drbdmeta: Some(fake.clone()),
            config: ConfigFile::Generated(f.top()),
            wrapper: as_node("alpha"),
            timeout: Duration::from_secs(30),
            ..Default::default()
        },
        config,
    );
    let e = d.up("files").await.unwrap_err();
    assert_eq!(e.step, "drbdadm adjust files");
    assert!(e.message.contains("kernel refused"), "{e}");
    assert!(
        !e.to_string().contains("hunter2"),
        "secret in the error: {e}"
    );
    assert!(
        !format!("{e:?}").contains("hunter2"),
        "secret in the error: {e:?}"
    );
    // drbdadm did print the secret; the transcript holds it redacted.
    let t = d.transcript();
    let adjust = t.iter().find(|r| r.step == "drbdadm adjust files").unwrap();
    assert!(
        adjust.stderr.contains("--shared-secret=<redacted>"),
        "{adjust:#?}"
    );
    assert_no_secret(&d);
}

/// A loop device over a file of `size` bytes, detached when dropped.
struct Loop {
    dev: String,
}

impl Loop {
    fn new(file: &Path, size: u64) -> Loop {
        std::fs::File::create(file).unwrap().set_len(size).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("run losetup (util-linux)");
        assert!(
            out.status.success(),
            "cannot attach a loop device (root and /dev/loop-control needed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn has_meta_data(dev: &str) -> bool {
    Command::new(tool("drbdmeta"))
        .args(["0", "v09", dev, "internal", "dump-md"])
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn meta_data_is_created_only_when_the_manifest_allows_it() {
    let f = Fixture::new();
    let disk = Loop::new(&f.dir.path().join("disk.img"), 64 << 20);
    assert!(!has_meta_data(&disk.dev));
    let mut vc = volume_config(&f.set, "files", "alpha", &f.secret_file());
    vc.res = vc.res.replace("/dev/vg0/files", &disk.dev);
    vc.disk = disk.dev.clone();
    assert!(
        !vc.initialize,
        "the reference manifest says initialize: false"
    );
    let config = ConfigHandle::new(HostConfig {
        volumes: [("files".to_string(), vc.clone())].into(),
        ..Default::default()
    });
    let d = f.driver("alpha", config.clone(), false);

    let e = d.up("files").await.unwrap_err();
    assert!(e.terminal, "{e}");
    assert!(e.message.contains("initialize: true"), "{e}");
    assert!(e.message.contains(&disk.dev), "{e}");
    assert!(
        !has_meta_data(&disk.dev),
        "create-md ran although not allowed"
    );
    assert!(d
        .transcript()
        .iter()
        .all(|r| r.step != "drbdadm create-md files"));

    vc.initialize = true;
    config.set(HostConfig {
        volumes: [("files".to_string(), vc)].into(),
        ..Default::default()
    });
    let e = d.up("files").await.unwrap_err();
    // Meta-data created; adjust then fails here (no module, no such address).
    assert!(has_meta_data(&disk.dev), "create-md did not run: {e}");
    assert_eq!(e.step, "drbdadm adjust files", "{e}");
    assert!(!e.terminal);
    let steps: Vec<String> = d.transcript().into_iter().map(|r| r.step).collect();
    let tail = &steps[steps.len() - 3..];
    assert_eq!(
        tail,
        [
            "drbdadm dump-md files",
            "drbdadm create-md files",
            "drbdadm adjust files"
        ]
    );

    // With meta-data present, up goes straight to adjust.
    let _ = d.up("files").await.unwrap_err();
    let steps: Vec<String> = d.transcript().into_iter().map(|r| r.step).collect();
    assert_eq!(
        &steps[steps.len() - 2..],
        ["drbdadm dump-md files", "drbdadm adjust files"]
    );
    assert_no_secret(&d);
}

#[tokio::test]
async fn status_without_a_kernel_module_is_empty() {
    let f = Fixture::new();
    let d = DrbdAdm::new(
        DrbdAdmOptions {
            res_dir: f.res_dir(),
            drbdsetup: tool("drbdsetup"),
            ..Default::default()
        },
        f.host("alpha", &["files"]),
    );
    assert_eq!(d.status().await.unwrap(), BTreeMap::new());
}

/// A stand-in for `drbdsetup events2` (no DRBD kernel module here): prints a recorded stream
/// (a tests/data/drbd fixture without its `#` header), then either stays (like the real one,
/// which waits for more events) or exits (like one killed by a module reload).
fn fake_events2(dir: &Path, fixture: &str, then: &str) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/drbd")
        .join(fixture);
    let path = dir.join(format!("fake-drbdsetup-{then}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# TEST DOUBLE: stands in for `drbdsetup events2` (no DRBD kernel module here)\ngrep -v '^#' '{}'\n{then}\n",
            data.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn json_twin(name: &str) -> BTreeMap<String, rampart::model::DrbdObserved> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/drbd")
        .join(name);
    parse_status_json(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[tokio::test]
async fn observer_publishes_the_stream_and_is_killed_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_events2(dir.path(), "events2-resync.events2", "exec sleep 300");
    let obs = Arc::new(Events2Observer::spawn(Events2Options {
        drbdsetup: fake,
        poll_interval: Some(Duration::from_millis(50)),
        ..Default::default()
    }));
    let mut rx = obs.subscribe();
    let want = json_twin("status-resync-source.json");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if rx.borrow_and_update().as_deref() == Some(&want) {
                break;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the observer did not reach the recorded final state");
    assert_eq!(obs.starts(), 1);

    // The driver reports the observer's state, for the resources it manages only.
    let f = Fixture::new();
    let managed_www = DrbdAdm::new(
        DrbdAdmOptions {
            res_dir: f.res_dir(),
            ..Default::default()
        },
        f.host("alpha", &["www"]),
    )
    .with_observer(obs.clone());
    assert!(
        managed_www.status().await.unwrap().is_empty(),
        "files is not managed here"
    );
    let d = DrbdAdm::new(
        DrbdAdmOptions {
            res_dir: f.res_dir(),
            ..Default::default()
        },
        f.host("alpha", &["files"]),
    )
    .with_observer(obs.clone());
    assert_eq!(d.status().await.unwrap(), want);
    drop(d);
    drop(managed_www);

    let pid = obs.child_pid().expect("the child runs");
    let obs = Arc::try_unwrap(obs).ok().expect("one owner left");
    drop(obs);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the events2 child {pid} outlived its observer"
    );
}

#[tokio::test]
async fn observer_restarts_a_child_that_exits() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_events2(dir.path(), "events2-split-brain.events2", "exit 0");
    let obs = Events2Observer::spawn(Events2Options {
        drbdsetup: fake,
        poll_interval: None,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..Default::default()
    });
    let want = json_twin("status-split-brain.json");
    assert!(want["files"].split_brain);
    let mut rx = obs.subscribe();
    let mut seen_state = 0;
    let mut seen_none_after = false;
    tokio::time::timeout(Duration::from_secs(10), async {
        while obs.starts() < 3 || !seen_none_after {
            // Intermediate states go by; the recorded stream ends in the split brain.
            match rx.borrow_and_update().clone() {
                Some(s) if *s == want => seen_state += 1,
                Some(_) => {}
                None => seen_none_after |= seen_state > 0,
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    })
    .await
    .expect("the observer did not restart its child");
    assert!(seen_state > 0);
    drop(obs);
}

/// The report carries the written file as published (secret as its placeholder) so that
/// `rampart diff --cluster` compares like with like; a file changed by hand shows with its
/// secret hidden.
#[tokio::test]
async fn artifacts_show_the_written_file_without_its_secret() {
    let f = Fixture::new();
    let host = f.host("alpha", &["files"]);
    let published = host.get().volumes["files"].res.clone();
    let d = f.driver("alpha", host, true);
    assert!(d.artifacts().await.is_empty(), "nothing written yet");
    d.up("files").await.unwrap();
    let a = d.artifacts().await;
    assert_eq!(a.keys().collect::<Vec<_>>(), ["/etc/drbd.d/files.res"]);
    assert_eq!(a["/etc/drbd.d/files.res"], published);
    assert!(!a["/etc/drbd.d/files.res"].contains("hunter2"));
    // Edited by hand: shown as it is, secret hidden.
    let path = f.res_dir().join("files.res");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("protocol C", "protocol A");
    std::fs::write(&path, &edited).unwrap();
    let a = d.artifacts().await;
    let shown = &a["/etc/drbd.d/files.res"];
    assert_ne!(shown, &published);
    assert!(shown.contains("protocol A"), "{shown}");
    assert!(shown.contains(r#"shared-secret "<redacted>";"#), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
