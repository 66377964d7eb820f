//! The reference cluster in `manifests/`, the example clusters under `examples/`, and the
//! pre-receive hook in `examples/hooks/`, exercised through the real `rampart` binary.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

const RAMPART: &str = env!("CARGO_BIN_EXE_rampart");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The summary line of `rampart validate`'s text output:
/// `valid: 0 errors, 0 warnings in 17 files, 19 objects`.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    valid: bool,
    errors: usize,
    warnings: usize,
    files: usize,
    objects: usize,
}

fn parse_summary(stdout: &str) -> Summary {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("valid: ") || l.starts_with("invalid: "))
        .unwrap_or_else(|| panic!("no summary line in the output:\n{stdout}"));
    let (verdict, rest) = line.split_once(": ").unwrap();
    let numbers: Vec<usize> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let shape_ok = numbers.len() == 4
        && rest.contains(" error")
        && rest.contains(" warning")
        && rest.contains(" file")
        && (rest.ends_with(" objects") || rest.ends_with(" object"));
    assert!(shape_ok, "unexpected summary line: {line}");
    Summary {
        valid: verdict == "valid",
        errors: numbers[0],
        warnings: numbers[1],
        files: numbers[2],
        objects: numbers[3],
    }
}

fn run_validate(dir: &Path) -> (Output, String) {
    let out = Command::new(RAMPART)
        .arg("validate")
        .arg(dir)
        .output()
        .expect("run rampart validate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

/// Every file under `dir` (recursively), skipping hidden entries as rampart does.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(dir, &mut all);
    all.retain(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")));
    all
}

/// Manifest documents in the files, counted independently of rampart: every document has
/// exactly one top-level `kind:` line.
fn count_documents(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|f| {
            fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("kind: "))
                .count()
        })
        .sum()
}

/// Validate a cluster directory and require a clean bill: exit 0, no diagnostics at all,
/// and every file and document accounted for.
fn assert_clean(dir: &Path) {
    let (out, stdout) = run_validate(dir);
    let files = yaml_files(dir);
    assert!(!files.is_empty(), "no manifests under {}", dir.display());
    assert_eq!(
        out.status.code(),
        Some(0),
        "rampart validate {} failed:\n{stdout}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = parse_summary(&stdout);
    assert_eq!(
        summary,
        Summary {
            valid: true,
            errors: 0,
            warnings: 0,
            files: files.len(),
            objects: count_documents(&files),
        },
        "validating {}:\n{stdout}",
        dir.display()
    );
    // Nothing but the summary: no diagnostics of any kind.
    assert_eq!(stdout.lines().count(), 1, "unexpected output:\n{stdout}");
}

#[test]
fn reference_cluster_validates_without_warnings() {
    assert_clean(&root().join("manifests"));
}

/// Every directory under `examples/` that holds a Cluster manifest is a complete cluster.
fn example_clusters() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root().join("examples")).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let has_cluster = yaml_files(&dir).iter().any(|f| {
            fs::read_to_string(f)
                .unwrap()
                .lines()
                .any(|l| l == "kind: Cluster")
        });
        if has_cluster {
            out.push(dir);
        }
    }
    out.sort();
    out
}

#[test]
fn example_clusters_validate_without_warnings() {
    let clusters = example_clusters();
    assert!(
        clusters.iter().any(|d| d.ends_with("three-node-redfish")),
        "examples/three-node-redfish not found among {clusters:?}"
    );
    for dir in &clusters {
        assert_clean(dir);
    }
}

#[test]
fn three_node_example_shows_what_it_promises() {
    let dir = root().join("examples/three-node-redfish");
    let text: String = yaml_files(&dir)
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    for needle in [
        "redfish:",
        "endpoint: https://",
        "nodeSelector:",
        "virtualMachine:",
        "antiAffinity:",
    ] {
        assert!(text.contains(needle), "three-node example lacks `{needle}`");
    }
    assert!(
        !text.contains("role: witness"),
        "three nodes need no witness"
    );
    assert_eq!(text.matches("role: hypervisor").count(), 3);
}

#[test]
fn reference_domain_xml_uses_the_drbd_device_of_its_volume() {
    let m = root().join("manifests");
    let vm = fs::read_to_string(m.join("vms/files.yaml")).unwrap();
    assert!(vm.contains("xmlFile: domains/files.xml"));
    let volume = fs::read_to_string(m.join("volumes/files.yaml")).unwrap();
    let minor: u32 = volume
        .lines()
        .find_map(|l| l.trim().strip_prefix("minor: "))
        .expect("volume `files` has a minor")
        .parse()
        .unwrap();
    let xml = fs::read_to_string(m.join("vms/domains/files.xml")).unwrap();
    assert!(xml.contains("<domain type='kvm'>"));
    assert!(
        xml.contains(&format!("<source dev='/dev/drbd{minor}'/>")),
        "files.xml must use /dev/drbd{minor}, the device of Volume `files`"
    );
}

/// Resolve `rel` against `base` lexically (no file system access).
fn normalize(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[test]
fn every_manifest_points_its_editor_at_the_schema() {
    let schema = root().join("schemas/rampart.schema.json");
    let mut dirs = vec![root().join("manifests")];
    dirs.extend(example_clusters());
    let mut checked = 0;
    for dir in dirs {
        for file in yaml_files(&dir) {
            let text = fs::read_to_string(&file).unwrap();
            let first = text.lines().next().unwrap_or_default();
            let rel = first
                .strip_prefix("# yaml-language-server: $schema=")
                .unwrap_or_else(|| {
                    panic!("{} does not start with the schema comment", file.display())
                });
            assert_eq!(
                normalize(file.parent().unwrap(), rel),
                schema,
                "{}: schema path `{rel}` does not lead to schemas/rampart.schema.json",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} manifest files checked");
}

// ---------------------------------------------------------------------------------------
// The pre-receive hook, against a real bare repository.

/// A scratch area with a bare repository (hook installed) and a clone of it.
struct GitWorld {
    dir: tempfile::TempDir,
}

impl GitWorld {
    fn new() -> GitWorld {
        let w = GitWorld {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(w.hook_tmp()).unwrap();
        let out = w.git(w.path(), &["init", "--quiet", "--bare", "server.git"]);
        assert!(out.status.success(), "git init: {}", text(&out.stderr));
        let hook = w.server().join("hooks/pre-receive");
        fs::copy(root().join("examples/hooks/pre-receive"), &hook).unwrap();
        set_executable(&hook);
        let out = w.git(w.path(), &["clone", "--quiet", "server.git", "work"]);
        assert!(out.status.success(), "git clone: {}", text(&out.stderr));
        w
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn server(&self) -> PathBuf {
        self.path().join("server.git")
    }
    fn work(&self) -> PathBuf {
        self.path().join("work")
    }
    /// The hook's TMPDIR, to check that it cleans up after itself.
    fn hook_tmp(&self) -> PathBuf {
        self.path().join("hook-tmp")
    }

    fn command(&self, cwd: &Path) -> Command {
        let mut c = Command::new("git");
        c.current_dir(cwd)
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("TMPDIR", self.hook_tmp())
            .env("RAMPART", RAMPART)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_CONFIG_GLOBAL")
            .env_remove("GIT_CONFIG_PARAMETERS")
            .env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
            .env_remove("RAMPART_MANIFESTS")
            .env_remove("RAMPART_REFS")
            .args([
                "-c",
                "user.name=Rampart Test",
                "-c",
                "user.email=test@rampart.invalid",
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
            ]);
        c
    }

    fn git(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd).args(args).output().expect("run git")
    }

    /// Run git in the clone and require success.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.git(&self.work(), args);
        assert!(
            out.status.success(),
            "git {args:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn commit_all(&self, message: &str) -> String {
        self.ok(&["add", "--all"]);
        self.ok(&["commit", "--quiet", "-m", message]);
        self.ok(&["rev-parse", "HEAD"]).trim().to_string()
    }

    fn push(&self, args: &[&str]) -> Output {
        let mut all = vec!["push", "origin"];
        all.extend_from_slice(args);
        self.git(&self.work(), &all)
    }

    /// Where a branch of the server points, if it exists.
    fn server_ref(&self, branch: &str) -> Option<String> {
        let out = self.git(
            &self.server(),
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
        );
        out.status
            .success()
            .then(|| text(&out.stdout).trim().to_string())
    }

    fn assert_hook_cleaned_up(&self) {
        let left: Vec<_> = fs::read_dir(self.hook_tmp())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "the hook left files behind: {left:?}");
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(unix)]
fn set_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A VM that names a volume nobody defined.
const BROKEN_VM: &str = "\
apiVersion: rampart.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: mail
spec:
  cpus: 1
  memory: 1GiB
  volumes:
    - volume: mail-spool
      target: vda
  placement:
    allowed: [alpha, beta]
";

#[test]
fn pre_receive_hook_accepts_valid_pushes_and_rejects_invalid_ones() {
    let w = GitWorld::new();
    copy_dir(&root().join("manifests"), &w.work().join("manifests"));
    let good = w.commit_all("reference cluster");

    // A valid revision on a new branch (old revision all zeros) is accepted.
    let out = w.push(&["HEAD:refs/heads/main"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "valid push refused:\n{stderr}");
    assert!(
        stderr.contains("valid: 0 errors, 0 warnings"),
        "the hook did not report validating the push:\n{stderr}"
    );
    assert_eq!(w.server_ref("main").as_deref(), Some(good.as_str()));

    // A broken manifest is refused, with the diagnostic shown to the pusher.
    fs::write(w.work().join("manifests/vms/mail.yaml"), BROKEN_VM).unwrap();
    let bad = w.commit_all("add mail VM");
    let out = w.push(&["HEAD:refs/heads/main"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "broken push accepted:\n{stderr}");
    assert!(stderr.contains("pre-receive hook declined"), "{stderr}");
    assert!(
        stderr.contains("manifests/vms/mail.yaml:9:15: error: Volume `mail-spool` is not defined"),
        "the diagnostic is not shown to the pusher:\n{stderr}"
    );
    assert!(stderr.contains("refusing the push"), "{stderr}");
    assert_eq!(
        w.server_ref("main").as_deref(),
        Some(good.as_str()),
        "the server's branch moved despite the refusal"
    );

    // The same broken revision on a brand-new branch is refused as well.
    let out = w.push(&["HEAD:refs/heads/feature"]);
    assert!(!out.status.success(), "broken new branch accepted");
    assert!(text(&out.stderr).contains("Volume `mail-spool` is not defined"));
    assert_eq!(w.server_ref("feature"), None);

    // Fixing it is accepted, and the fix lands.
    fs::remove_file(w.work().join("manifests/vms/mail.yaml")).unwrap();
    fs::write(w.work().join("README.md"), "cluster colo1\n").unwrap();
    let fixed = w.commit_all("drop the mail VM again, add a README");
    assert_ne!(fixed, bad);
    let out = w.push(&["HEAD:refs/heads/main"]);
    assert!(
        out.status.success(),
        "fixed push refused:\n{}",
        text(&out.stderr)
    );
    assert_eq!(w.server_ref("main").as_deref(), Some(fixed.as_str()));

    // A new branch with valid manifests, then its deletion (new revision all zeros).
    let out = w.push(&["HEAD:refs/heads/topic"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(w.server_ref("topic").as_deref(), Some(fixed.as_str()));
    let out = w.push(&[":refs/heads/topic"]);
    assert!(
        out.status.success(),
        "deleting a branch was refused:\n{}",
        text(&out.stderr)
    );
    assert_eq!(w.server_ref("topic"), None);

    w.assert_hook_cleaned_up();
}

#[test]
fn pre_receive_hook_refuses_when_rampart_is_missing() {
    let w = GitWorld::new();
    copy_dir(&root().join("manifests"), &w.work().join("manifests"));
    w.commit_all("reference cluster");
    let out = w
        .command(&w.work())
        .env("RAMPART", w.path().join("no-such-rampart"))
        .args(["push", "origin", "HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "push accepted without a validator:\n{stderr}"
    );
    assert!(stderr.contains("rampart not found"), "{stderr}");
    assert_eq!(w.server_ref("main"), None);
}

#[test]
fn pre_receive_hook_honours_the_manifest_directory_setting() {
    let w = GitWorld::new();
    // Manifests kept under `cluster/`; a broken file elsewhere in the repository is no
    // concern of the hook.
    copy_dir(&root().join("manifests"), &w.work().join("cluster"));
    fs::create_dir(w.work().join("drafts")).unwrap();
    fs::write(w.work().join("drafts/mail.yaml"), BROKEN_VM).unwrap();
    let good = w.commit_all("cluster under cluster/");
    let push = |w: &GitWorld| {
        w.command(&w.work())
            .env("RAMPART_MANIFESTS", "./cluster/")
            .args(["push", "origin", "HEAD:refs/heads/main"])
            .output()
            .unwrap()
    };
    let out = push(&w);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(w.server_ref("main").as_deref(), Some(good.as_str()));

    fs::rename(
        w.work().join("drafts/mail.yaml"),
        w.work().join("cluster/vms/mail.yaml"),
    )
    .unwrap();
    w.commit_all("promote the draft");
    let out = push(&w);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "broken push accepted:\n{stderr}");
    assert!(
        stderr.contains("cluster/vms/mail.yaml:9:15: error: Volume `mail-spool` is not defined"),
        "{stderr}"
    );
    assert_eq!(w.server_ref("main").as_deref(), Some(good.as_str()));
    w.assert_hook_cleaned_up();
}

#[test]
fn summary_line_parser_reads_what_rampart_prints() {
    assert_eq!(
        parse_summary("x\ninvalid: 1 error, 12 warnings in 1 file, 3 objects\n"),
        Summary {
            valid: false,
            errors: 1,
            warnings: 12,
            files: 1,
            objects: 3
        }
    );
}
