//! The real DRBD driver (drbd-utils): resource files, `drbdadm`, and the observers that parse
//! `drbdsetup status --json` and `drbdsetup events2`.
//!
//! - [`DrbdAdm`] implements [`Drbd`]: `up` writes `<res_dir>/<volume>.res` from the node's
//!   [`VolumeConfig`] with the shared secret filled in (atomically, mode 0600, only when the
//!   text changed), creates DRBD meta-data when the manifest allows it, and runs
//!   `drbdadm adjust`; `down`, `promote` and `demote` are `drbdadm down/primary/secondary`.
//! - [`status`]: `drbdsetup status --json` into [`DrbdObserved`]; [`events2`]: the same model
//!   from `drbdsetup events2` lines; [`Events2Observer`]: a long-running `events2` child whose
//!   state [`DrbdAdm::status`] uses when it has one.
//! - [`fence_peer`]: the environment DRBD gives a `fence-peer` handler and the exit codes it
//!   understands.
//!
//! Secrets: the value is read with [`SecretRef::read`] only in `up`, goes only into the 0600
//! resource file, never onto a command line, and is scrubbed (with any `--shared-secret=`
//! option drbdadm echoes when a drbdsetup call fails) from every captured output, error and
//! transcript entry.
//!
//! Which resources `status` reports: those the node's configuration lists, plus those whose
//! resource file in `res_dir` was written by Rampart (so a volume removed from the manifests is
//! still seen, and taken down). Resources the admin set up by hand are never reported, so the
//! agent never takes them down.

pub mod command;
pub mod events2;
pub mod fence_peer;
pub mod observer;
pub mod status;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

pub use events2::{parse_event_line, Event2, EventKind, Events2State};
pub use fence_peer::{parse_fence_peer_env, FencePeerEnvError, FencePeerExit, FencePeerRequest};
pub use observer::{Events2Observer, Events2Options, Snapshot};
pub use status::{parse_status_json, StatusParseError};

use super::config::{ConfigHandle, VolumeConfig};
use super::{Drbd, DriverError};
use crate::manifest::common::SecretError;
use crate::model::{DiskState, DrbdObserved};
use crate::render::drbd::{fill_secret, has_secret_placeholder, res_file_name, RES_DIR};
use command::{display_argv, meaningful_line, run_blocking, Finished, RunError};

/// The first line of every resource file Rampart renders.
const RAMPART_HEADER: &str = "# DRBD resource of Volume `";

/// Which top-level configuration drbdadm reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// drbdadm's own default (`/etc/drbd.conf`, which includes `/etc/drbd.d/*.res`).
    System,
    /// A file the driver writes, holding only `include "<res_dir>/*.res";`, passed as
    /// `drbdadm -c FILE`: for a `res_dir` other than `/etc/drbd.d`, and for tests.
    Generated(PathBuf),
}

/// How [`DrbdAdm`] runs drbd-utils.
#[derive(Debug, Clone)]
pub struct DrbdAdmOptions {
    /// Where resource files go (default `/etc/drbd.d`).
    pub res_dir: PathBuf,
    pub drbdadm: PathBuf,
    /// Used for `status --json`, and passed to drbdadm (`-s`) when not the default.
    pub drbdsetup: PathBuf,
    /// Passed to drbdadm (`-m`) when set.
    pub drbdmeta: Option<PathBuf>,
    /// Every command is killed (with its children) after this long.
    pub timeout: Duration,
    pub config: ConfigFile,
    /// `drbdadm -d`: print the drbdsetup/drbdmeta commands instead of running them (kept in
    /// the [transcript](DrbdAdm::transcript)). The meta-data probe is skipped.
    pub dry_run: bool,
    /// A command prefix for drbdadm, e.g. a private UTS namespace with another hostname in
    /// tests (`unshare --uts sh -c 'hostname "$0" && exec "$@"' alpha`). Empty in production.
    pub wrapper: Vec<OsString>,
}

impl Default for DrbdAdmOptions {
    fn default() -> Self {
        DrbdAdmOptions {
            res_dir: PathBuf::from(RES_DIR),
            drbdadm: PathBuf::from("drbdadm"),
            drbdsetup: PathBuf::from("drbdsetup"),
            drbdmeta: None,
            timeout: Duration::from_secs(60),
            config: ConfigFile::System,
            dry_run: false,
            wrapper: Vec::new(),
        }
    }
}

/// One command the driver ran, as kept in the transcript: scrubbed of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// What it was for, e.g. `drbdadm adjust files`.
    pub step: String,
    /// The command line.
    pub argv: String,
    /// `exit 0`, `timeout`, `not started: ...`.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// Whether a backing disk holds DRBD meta-data, from `drbdadm dump-md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaData {
    Present,
    Absent,
}

/// Read `drbdadm dump-md` (drbdmeta) output. Only "No valid meta data found" means absent;
/// anything unexpected is an error, never permission to write meta-data.
pub fn classify_dump_md(success: bool, stdout: &str, stderr: &str) -> Result<MetaData, String> {
    let all = format!("{stdout}\n{stderr}");
    if success {
        return Ok(MetaData::Present);
    }
    if all.contains("No valid meta data found") {
        return Ok(MetaData::Absent);
    }
    // An unclean activity log is still meta-data (adjust applies the log).
    if all.contains("unclean") {
        return Ok(MetaData::Present);
    }
    let line = meaningful_line(stderr);
    Err(if line.is_empty() {
        meaningful_line(stdout)
    } else {
        line
    })
}

const TRANSCRIPT_MAX: usize = 512;

/// The DRBD driver on drbd-utils. See the module documentation.
pub struct DrbdAdm {
    opts: DrbdAdmOptions,
    config: ConfigHandle,
    observer: Option<Arc<Events2Observer>>,
    transcript: Mutex<Vec<CommandRecord>>,
}

impl DrbdAdm {
    pub fn new(opts: DrbdAdmOptions, config: ConfigHandle) -> DrbdAdm {
        DrbdAdm {
            opts,
            config,
            observer: None,
            transcript: Mutex::new(Vec::new()),
        }
    }

    /// Use an events2 observer's state for [`Drbd::status`] while it has one.
    pub fn with_observer(mut self, observer: Arc<Events2Observer>) -> DrbdAdm {
        self.observer = Some(observer);
        self
    }

    pub fn options(&self) -> &DrbdAdmOptions {
        &self.opts
    }

    /// Where the resource file of `volume` goes.
    pub fn res_path(&self, volume: &str) -> PathBuf {
        self.opts.res_dir.join(res_file_name(volume))
    }

    /// The commands run so far (the last 512), scrubbed of secrets. In dry-run mode their
    /// stdout holds the drbdsetup commands drbdadm would have run.
    pub fn transcript(&self) -> Vec<CommandRecord> {
        self.transcript
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, r: CommandRecord) {
        let mut t = self.transcript.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= TRANSCRIPT_MAX {
            t.remove(0);
        }
        t.push(r);
    }

    /// Write the generated top-level configuration, if that mode is on and it differs.
    fn ensure_top_config(&self) -> Result<(), DriverError> {
        let ConfigFile::Generated(path) = &self.opts.config else {
            return Ok(());
        };
        let dir = self.opts.res_dir.to_string_lossy();
        if dir.contains(['"', '\n', '\\']) {
            return Err(terminal(
                "write the drbdadm configuration",
                format!("the resource directory {dir:?} cannot be written in drbd.conf"),
            ));
        }
        let text = format!(
            "# Written by Rampart: the resource files it manages.\ninclude \"{dir}/*.res\";\n"
        );
        write_if_changed(path, &text, 0o644).map_err(|e| {
            DriverError::new(
                "write the drbdadm configuration",
                format!("{}: {e}", path.display()),
            )
        })?;
        Ok(())
    }

    fn drbdadm_argv(&self, args: &[&str]) -> Vec<OsString> {
        let mut argv: Vec<OsString> = self.opts.wrapper.clone();
        argv.push(self.opts.drbdadm.clone().into());
        if let ConfigFile::Generated(p) = &self.opts.config {
            argv.push("-c".into());
            argv.push(p.clone().into());
        }
        if self.opts.dry_run {
            argv.push("-d".into());
        }
        if self.opts.drbdsetup != Path::new("drbdsetup") {
            argv.push("-s".into());
            argv.push(self.opts.drbdsetup.clone().into());
        }
        if let Some(m) = &self.opts.drbdmeta {
            argv.push("-m".into());
            argv.push(m.clone().into());
        }
        argv.extend(args.iter().map(OsString::from));
        argv
    }

    /// Run a command; `Ok` with its result whatever its exit status, `Err` if it did not run
    /// to completion. Recorded in the transcript.
    async fn run(
        &self,
        step: &str,
        argv: Vec<OsString>,
        secrets: &[String],
    ) -> Result<Finished, DriverError> {
        let shown = command::scrub(&display_argv(&argv), secrets);
        let timeout = self.opts.timeout;
        let secrets_owned = secrets.to_vec();
        let result =
            tokio::task::spawn_blocking(move || run_blocking(&argv, timeout, &secrets_owned))
                .await
                .unwrap_or_else(|e| Err(RunError::Spawn(format!("command thread failed: {e}"))));
        match result {
            Ok(f) => {
                self.record(CommandRecord {
                    step: step.to_string(),
                    argv: shown,
                    status: f.describe_status(),
                    stdout: f.stdout.clone(),
                    stderr: f.stderr.clone(),
                });
                Ok(f)
            }
            Err(e) => {
                let (status, message) = match e {
                    RunError::Timeout(t) => (
                        "timeout".to_string(),
                        format!("no answer within {} ms; killed", t.as_millis()),
                    ),
                    RunError::Spawn(m) => (format!("not started: {m}"), m),
                };
                self.record(CommandRecord {
                    step: step.to_string(),
                    argv: shown,
                    status,
                    stdout: String::new(),
                    stderr: String::new(),
                });
                Err(DriverError::new(step, message))
            }
        }
    }

    /// Run a command that must succeed.
    async fn run_ok(
        &self,
        step: &str,
        argv: Vec<OsString>,
        secrets: &[String],
    ) -> Result<Finished, DriverError> {
        let f = self.run(step, argv, secrets).await?;
        if f.success() {
            Ok(f)
        } else {
            Err(DriverError::new(step, failure_message(&f)))
        }
    }

    async fn drbdadm(
        &self,
        command: &str,
        volume: &str,
        secrets: &[String],
    ) -> Result<Finished, DriverError> {
        let step = format!("drbdadm {command} {volume}");
        self.run_ok(&step, self.drbdadm_argv(&[command, volume]), secrets)
            .await
    }

    /// Whether the local disk of `volume` is attached (so it has meta-data and `dump-md`
    /// would refuse to read it). A failing `drbdsetup status` reads as not attached.
    async fn attached(&self, volume: &str) -> bool {
        let argv = vec![
            self.opts.drbdsetup.clone().into(),
            "status".into(),
            volume.into(),
            "--json".into(),
        ];
        match self
            .run(&format!("drbdsetup status {volume} --json"), argv, &[])
            .await
        {
            Ok(f) if f.success() => parse_status_json(&f.stdout)
                .ok()
                .and_then(|m| m.get(volume).map(|o| o.disk != DiskState::Diskless))
                .unwrap_or(false),
            _ => false,
        }
    }

    async fn ensure_meta_data(
        &self,
        volume: &str,
        vc: &VolumeConfig,
        secrets: &[String],
    ) -> Result<(), DriverError> {
        if self.opts.dry_run || self.attached(volume).await {
            return Ok(());
        }
        let step = format!("drbdadm dump-md {volume}");
        let f = self
            .run(&step, self.drbdadm_argv(&["dump-md", volume]), secrets)
            .await?;
        match classify_dump_md(f.success(), &f.stdout, &f.stderr) {
            Ok(MetaData::Present) => Ok(()),
            Ok(MetaData::Absent) if vc.initialize => {
                tracing::info!(
                    volume,
                    disk = %vc.disk,
                    "no DRBD meta-data on the backing disk; creating it (initialize: true)"
                );
                self.drbdadm("create-md", volume, secrets).await.map(|_| ())
            }
            Ok(MetaData::Absent) => Err(terminal(
                format!("drbdadm create-md {volume}"),
                format!(
                    "the backing disk {} of Volume `{volume}` has no DRBD meta-data, and the \
                     manifest does not allow creating it: set `initialize: true` on the Volume \
                     to let the agent run `drbdadm create-md {volume}` once, or run it on this \
                     node by hand after checking the disk is the right one",
                    vc.disk
                ),
            )),
            Err(line) => Err(DriverError::new(
                step,
                format!(
                    "cannot tell whether {} has DRBD meta-data ({}): {line}",
                    vc.disk,
                    f.describe_status()
                ),
            )),
        }
    }

    /// Names of the resources Rampart manages here: configured, or with a Rampart-written file.
    fn managed(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> =
            self.config.get().volumes.keys().cloned().collect();
        if let Ok(dir) = std::fs::read_dir(&self.opts.res_dir) {
            for e in dir.flatten() {
                let p = e.path();
                let Some(name) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".res"))
                else {
                    continue;
                };
                let ours = std::fs::File::open(&p).is_ok_and(|f| {
                    let mut first = String::new();
                    std::io::BufRead::read_line(&mut std::io::BufReader::new(f), &mut first).is_ok()
                        && first.starts_with(RAMPART_HEADER)
                });
                if ours {
                    names.insert(name.to_string());
                }
            }
        }
        names
    }

    async fn status_all(&self) -> Result<BTreeMap<String, DrbdObserved>, DriverError> {
        if let Some(snapshot) = self.observer.as_ref().and_then(|o| o.current()) {
            return Ok((*snapshot).clone());
        }
        let step = "drbdsetup status --json";
        let argv = vec![
            self.opts.drbdsetup.clone().into(),
            "status".into(),
            "--json".into(),
        ];
        let f = self.run(step, argv, &[]).await?;
        if !f.success() {
            let all = format!("{}\n{}", f.stdout, f.stderr);
            // No DRBD module (and none loadable): nothing is configured.
            if all.contains("Failed to modprobe drbd")
                || all.contains("Could not connect to 'drbd' generic netlink family")
            {
                tracing::warn!("no DRBD kernel module: reporting no DRBD resources");
                return Ok(BTreeMap::new());
            }
            return Err(DriverError::new(step, failure_message(&f)));
        }
        parse_status_json(&f.stdout).map_err(|e| DriverError::new(step, e.to_string()))
    }
}

#[async_trait]
impl Drbd for DrbdAdm {
    async fn artifacts(&self) -> BTreeMap<String, String> {
        let cfg = self.config.get();
        let mut out = BTreeMap::new();
        for name in self.managed() {
            let Ok(on_disk) = std::fs::read_to_string(self.res_path(&name)) else {
                continue;
            };
            // The file as published (secret as its placeholder) when that is what was
            // written; otherwise the file itself with any shared secret hidden.
            let published = cfg.volumes.get(&name).and_then(|vc| {
                let filled = match &vc.secret {
                    None => vc.res.clone(),
                    Some(r) => {
                        let value = r.read().ok()?;
                        fill_secret(&vc.res, &name, r, value.expose()).ok()?
                    }
                };
                (filled == on_disk).then(|| vc.res.clone())
            });
            let text = published.unwrap_or_else(|| {
                crate::diff::observed::redact_secrets(&on_disk, "\"<redacted>\"")
            });
            out.insert(crate::diff::observed::res_path(&name), text);
        }
        out
    }

    async fn status(&self) -> Result<BTreeMap<String, DrbdObserved>, DriverError> {
        let all = self.status_all().await?;
        let managed = self.managed();
        Ok(all
            .into_iter()
            .filter(|(name, _)| managed.contains(name))
            .collect())
    }

    async fn up(&self, volume: &str) -> Result<(), DriverError> {
        let step = format!("drbd up {volume}");
        check_name(&step, volume)?;
        let vc = self
            .config
            .get()
            .volumes
            .get(volume)
            .cloned()
            .ok_or_else(|| {
                terminal(
                    &step,
                    format!(
                        "Volume `{volume}` is not in this node's configuration: the applied \
                     revision has no replica of it here"
                    ),
                )
            })?;
        let (text, secrets) = match &vc.secret {
            Some(reference) => {
                let secret = reference.read().map_err(|e| DriverError {
                    step: format!("read the shared secret of Volume `{volume}`"),
                    message: e.to_string(),
                    // A file or variable that appears later is picked up by a retry.
                    terminal: matches!(e, SecretError::Inline),
                })?;
                let text = fill_secret(&vc.res, volume, reference, secret.expose())
                    .map_err(|e| terminal(&step, e.to_string()))?;
                (text, vec![secret.expose().to_string()])
            }
            None => {
                if has_secret_placeholder(&vc.res) {
                    return Err(terminal(
                        &step,
                        format!(
                            "the resource file of Volume `{volume}` holds a secret placeholder \
                             but the configuration names no secret to fill in"
                        ),
                    ));
                }
                (vc.res.clone(), Vec::new())
            }
        };
        self.ensure_top_config()?;
        let path = self.res_path(volume);
        let changed = write_if_changed(&path, &text, 0o600).map_err(|e| {
            DriverError::new(
                format!("write {}", path.display()),
                command::scrub(&e.to_string(), &secrets),
            )
        })?;
        if changed {
            tracing::info!(volume, path = %path.display(), "resource file written");
        }
        self.ensure_meta_data(volume, &vc, &secrets).await?;
        self.drbdadm("adjust", volume, &secrets).await?;
        Ok(())
    }

    async fn down(&self, volume: &str) -> Result<(), DriverError> {
        let step = format!("drbd down {volume}");
        check_name(&step, volume)?;
        let path = self.res_path(volume);
        if path.exists() {
            self.ensure_top_config()?;
            self.drbdadm("down", volume, &[]).await?;
            std::fs::remove_file(&path)
                .or_else(ignore_missing)
                .map_err(|e| {
                    DriverError::new(format!("remove {}", path.display()), e.to_string())
                })?;
            return Ok(());
        }
        if self.opts.dry_run {
            return Ok(());
        }
        // No file (removed by hand, or never written): drbdsetup needs none.
        let step = format!("drbdsetup down {volume}");
        let argv = vec![
            self.opts.drbdsetup.clone().into(),
            "down".into(),
            volume.into(),
        ];
        let f = self.run(&step, argv, &[]).await?;
        if f.success() || unknown_resource(&f) {
            Ok(())
        } else {
            Err(DriverError::new(step, failure_message(&f)))
        }
    }

    async fn promote(&self, volume: &str) -> Result<(), DriverError> {
        check_name(&format!("drbd promote {volume}"), volume)?;
        self.ensure_top_config()?;
        self.drbdadm("primary", volume, &[]).await.map(|_| ())
    }

    async fn demote(&self, volume: &str) -> Result<(), DriverError> {
        check_name(&format!("drbd demote {volume}"), volume)?;
        if !self.res_path(volume).exists() && !self.opts.dry_run {
            let step = format!("drbdsetup secondary {volume}");
            let argv = vec![
                self.opts.drbdsetup.clone().into(),
                "secondary".into(),
                volume.into(),
            ];
            let f = self.run(&step, argv, &[]).await?;
            return if f.success() || unknown_resource(&f) {
                Ok(())
            } else {
                Err(DriverError::new(step, failure_message(&f)))
            };
        }
        self.ensure_top_config()?;
        self.drbdadm("secondary", volume, &[]).await.map(|_| ())
    }
}

fn terminal(step: impl Into<String>, message: impl Into<String>) -> DriverError {
    DriverError {
        step: step.into(),
        message: message.into(),
        terminal: true,
    }
}

fn failure_message(f: &Finished) -> String {
    let line = meaningful_line(&f.stderr);
    let line = if line.is_empty() {
        meaningful_line(&f.stdout)
    } else {
        line
    };
    if line.is_empty() {
        f.describe_status()
    } else {
        format!("{line} ({})", f.describe_status())
    }
}

fn unknown_resource(f: &Finished) -> bool {
    let all = format!("{}\n{}", f.stdout, f.stderr).to_lowercase();
    all.contains("unknown resource") || all.contains("resource unknown")
}

/// A volume name is a DRBD resource name and a file name: letters, digits, `_ . -`, not
/// starting with a dot.
fn check_name(step: &str, volume: &str) -> Result<(), DriverError> {
    let ok = !volume.is_empty()
        && !volume.starts_with('.')
        && volume
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(terminal(
            step,
            format!("{volume:?} cannot be a DRBD resource name"),
        ))
    }
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Write `text` to `path` unless it already holds exactly that (and has `mode`): a temporary
/// file in the same directory, created with `mode`, written, fsynced, renamed over `path`, and
/// the directory fsynced. Returns whether it wrote.
pub fn write_if_changed(path: &Path, text: &str, mode: u32) -> std::io::Result<bool> {
    if let (Ok(old), Ok(meta)) = (std::fs::read(path), std::fs::metadata(path)) {
        if old == text.as_bytes() && meta.permissions().mode() & 0o7777 == mode {
            return Ok(false);
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.rampart-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; a pre-existing temporary file kept its own.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_md_outputs() {
        let cases: [(bool, &str, &str, Result<MetaData, &str>); 6] = [
            (true, "# DRBD meta data dump\n", "", Ok(MetaData::Present)),
            (false, "", "No valid meta data found\n", Ok(MetaData::Absent)),
            (false, "No valid meta data found\n", "", Ok(MetaData::Absent)),
            (
                false,
                "",
                "Found meta data is \"unclean\", please apply-al first\n",
                Ok(MetaData::Present),
            ),
            (
                false,
                "",
                "sh: 1: modinfo: not found\n'/dev/x' is not a block device!\nCommand 'drbdmeta 0 v09 /dev/x internal dump-md' terminated with exit code 20\n",
                Err("'/dev/x' is not a block device!"),
            ),
            (false, "", "", Err("")),
        ];
        for (ok, out, err, want) in cases {
            assert_eq!(
                classify_dump_md(ok, out, err),
                want.map_err(str::to_string),
                "{out:?} {err:?}"
            );
        }
    }

    #[test]
    fn names() {
        for good in ["files", "www-2", "a_b.c"] {
            assert!(check_name("s", good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "../x", "x\n"] {
            let e = check_name("s", bad).unwrap_err();
            assert!(e.terminal, "{bad}");
        }
    }

    #[test]
    fn atomic_write_only_on_change() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/r.res");
        assert!(write_if_changed(&p, "a\n", 0o600).unwrap());
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        let ino = m.ino();
        assert!(!write_if_changed(&p, "a\n", 0o600).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
        // A wrong mode is fixed even if the text is the same.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(write_if_changed(&p, "a\n", 0o600).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_if_changed(&p, "b\n", 0o600).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b\n");
        // No temporary files left behind.
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("r.res")]);
    }
}

#[cfg(test)]
mod artifact_tests {
    /// The files the agent reports (to etcd) carry no shared secret, written on its own line
    /// or inline (`net { shared-secret "x"; }`, as a hand edit may leave it).
    fn hide_shared_secret(text: &str) -> String {
        crate::diff::observed::redact_secrets(text, "\"<redacted>\"")
    }

    #[test]
    fn shared_secrets_are_hidden_and_nothing_else_changes() {
        let text = "resource r0 {\n  net {\n    cram-hmac-alg sha256;\n    shared-secret \"hunter2\";\n  }\n}\n";
        let inline = hide_shared_secret("resource r0 { net { shared-secret \"hunter2\"; } }\n");
        assert!(!inline.contains("hunter2"), "{inline}");
        let out = hide_shared_secret(text);
        assert!(!out.contains("hunter2"), "{out}");
        assert_eq!(
            out,
            "resource r0 {\n  net {\n    cram-hmac-alg sha256;\n    shared-secret \"<redacted>\";\n  }\n}\n"
        );
    }
}
