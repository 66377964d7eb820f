//! `rampart diff --from REV --to REV` against a temporary git repository with several
//! commits: changes, additions, removals, a formatting-only commit, an invalid revision and a
//! revision that does not exist.

use std::path::Path;
use std::process::Command;

use git2::{Repository, Signature};

const CLUSTER: &str = "\
apiVersion: rampart.dev/v1alpha1
kind: Cluster
metadata:
  name: lab
spec: {}
";

fn node(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: rampart.dev/v1alpha1
kind: Node
metadata:
  name: {name}
spec:
  role: hypervisor
  addresses:
    management: {ip}
  capacity: {{cpus: 8, memory: 16GiB}}
  fencing:
    - devices: [{{device: ipmi-{name}}}]
---
apiVersion: rampart.dev/v1alpha1
kind: FenceDevice
metadata:
  name: ipmi-{name}
spec:
  agent:
    name: fence_ipmilan
    parameters: {{ip: 10.9.0.{last}, username: admin}}
    credentials:
      password: {{file: /etc/rampart/secrets/ipmi-{name}}}
",
        last = &ip[ip.rfind('.').unwrap() + 1..]
    )
}

fn vm(memory: &str) -> String {
    format!(
        "apiVersion: rampart.dev/v1alpha1
kind: Volume
metadata:
  name: web-disk
spec:
  drbd:
    minor: 1
    port: 7789
    replicas:
      - {{node: a, disk: /dev/vg0/web}}
      - {{node: b, disk: /dev/vg0/web}}
---
apiVersion: rampart.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: web
spec:
  cpus: 2
  memory: {memory}
  volumes: [{{volume: web-disk, target: vda}}]
  placement:
    allowed: [a, b]
"
    )
}

const VIP: &str = "\
apiVersion: rampart.dev/v1alpha1
kind: VirtualIP
metadata:
  name: web-ip
spec:
  address: 192.0.2.10/24
  interface: br0
  follows: {virtualMachine: web}
";

/// Write `files` (path, content; `None` deletes) into the work tree and commit them all.
fn commit(repo: &Repository, files: &[(&str, Option<&str>)], msg: &str) -> String {
    let root = repo.workdir().unwrap();
    for (path, content) in files {
        let p = root.join(path);
        match content {
            Some(c) => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, c).unwrap();
            }
            None => std::fs::remove_file(&p).unwrap(),
        }
    }
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.update_all(["*"].iter(), None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("Test", "test@example.invalid").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    let id = repo
        .commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
        .unwrap();
    id.to_string()
}

struct Fixture {
    dir: tempfile::TempDir,
    revs: Vec<String>,
}

/// c0 base; c1 memory changed + VIP added; c2 comments only; c3 VM removed (and its VIP);
/// c4 invalid (VIP follows a VM that doesn't exist).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let nodes = [
        node("a", "10.0.0.1"),
        node("b", "10.0.0.2"),
        node("c", "10.0.0.3"),
    ];
    let mut revs = Vec::new();
    revs.push(commit(
        &repo,
        &[
            ("manifests/cluster.yaml", Some(CLUSTER)),
            ("manifests/nodes/a.yaml", Some(&nodes[0])),
            ("manifests/nodes/b.yaml", Some(&nodes[1])),
            ("manifests/nodes/c.yaml", Some(&nodes[2])),
            ("manifests/vms/web.yaml", Some(&vm("2GiB"))),
            ("README.md", Some("not a manifest\n")),
        ],
        "base",
    ));
    revs.push(commit(
        &repo,
        &[
            ("manifests/vms/web.yaml", Some(&vm("4GiB"))),
            ("manifests/vips/web-ip.yaml", Some(VIP)),
        ],
        "grow web, give it an address",
    ));
    let commented = format!(
        "# the lab cluster\n{}",
        CLUSTER.replace("spec: {}", "spec: {}   # defaults")
    );
    revs.push(commit(
        &repo,
        &[("manifests/cluster.yaml", Some(&commented))],
        "comments only",
    ));
    revs.push(commit(
        &repo,
        &[
            ("manifests/vms/web.yaml", None),
            ("manifests/vips/web-ip.yaml", None),
        ],
        "retire web",
    ));
    revs.push(commit(
        &repo,
        &[("manifests/vips/web-ip.yaml", Some(VIP))],
        "broken: VIP without VM",
    ));
    Fixture { dir, revs }
}

fn rampart(repo: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("diff")
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn changes_are_reported_per_object_with_unified_diffs() {
    let f = fixture();
    let (code, out, err) = rampart(
        f.dir.path(),
        &["--from", &f.revs[0], "--to", &f.revs[1], "manifests"],
    );
    assert_eq!(code, 1, "changes exit 1; stderr: {err}");
    assert!(out.contains("+ VirtualIP/web-ip added"), "{out}");
    assert!(out.contains("~ VirtualMachine/web changed"), "{out}");
    assert!(out.contains("-  memory: 2GiB\n"), "{out}");
    assert!(out.contains("+  memory: 4GiB\n"), "{out}");
    assert!(
        out.contains("--- a/VirtualMachine/web\n+++ b/VirtualMachine/web\n"),
        "{out}"
    );
    assert!(
        out.contains("2 objects differ: 1 added, 0 removed, 1 changed"),
        "{out}"
    );
    assert!(
        !out.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
    assert!(
        !out.contains("Volume/web-disk"),
        "unchanged objects are not listed: {out}"
    );
}

#[test]
fn formatting_and_comments_are_not_changes() {
    let f = fixture();
    let (code, out, _) = rampart(f.dir.path(), &["--from", &f.revs[1], "--to", &f.revs[2]]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");
}

#[test]
fn removals_and_json_output() {
    let f = fixture();
    let (code, out, _) = rampart(
        f.dir.path(),
        &[
            "--from",
            &f.revs[2],
            "--to",
            &f.revs[3],
            "-o",
            "json",
            "manifests",
        ],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let changes: Vec<(String, String, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("Volume".into(), "web-disk".into(), "removed".into()),
            ("VirtualMachine".into(), "web".into(), "removed".into()),
            ("VirtualIP".into(), "web-ip".into(), "removed".into()),
        ]
    );
    assert_eq!(v["summary"]["removed"], 3);
    assert_eq!(v["from"]["commit"], f.revs[2]);
    assert_eq!(v["to"]["valid"], true);
}

#[test]
fn an_invalid_revision_is_reported_with_its_diagnostics() {
    let f = fixture();
    let (code, out, _) = rampart(
        f.dir.path(),
        &["--from", &f.revs[3], "--to", &f.revs[4], "manifests"],
    );
    assert_eq!(code, 2, "an invalid revision is an error: {out}");
    assert!(out.contains("does not validate"), "{out}");
    assert!(
        out.contains("manifests/vips/web-ip.yaml:8:29: error: VirtualMachine `web` is not defined"),
        "{out}"
    );
    assert!(
        out.contains("+ VirtualIP/web-ip added"),
        "the diff is still shown: {out}"
    );
    let (code, out, _) = rampart(
        f.dir.path(),
        &["--from", &f.revs[3], "--to", &f.revs[4], "-o", "json"],
    );
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["to"]["valid"], false);
    assert_eq!(v["to"]["diagnostics"][0]["code"], "unresolved-reference");
    assert_eq!(v["to"]["diagnostics"][0]["line"], 8);
}

#[test]
fn colour_on_request_and_branch_names_as_revisions() {
    let f = fixture();
    let (code, out, _) = rampart(
        f.dir.path(),
        &[
            "--from",
            "HEAD~4",
            "--to",
            "HEAD~3",
            "--color",
            "always",
            "manifests",
        ],
    );
    assert_eq!(code, 1);
    assert!(out.contains("\x1b[32m+  memory: 4GiB\x1b[0m"), "{out}");
    assert!(out.contains("\x1b[31m-  memory: 2GiB\x1b[0m"), "{out}");
}

#[test]
fn bad_revisions_and_paths_are_clear_errors() {
    let f = fixture();
    let (code, _, err) = rampart(f.dir.path(), &["--from", "no-such-branch"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("revision `no-such-branch` does not exist"),
        "{err}"
    );
    let (code, _, err) = rampart(f.dir.path(), &["--from", "HEAD~1", "no/such/dir"]);
    assert_eq!(code, 2);
    assert!(err.contains("path `no/such/dir` does not exist"), "{err}");
    let not_a_repo = tempfile::tempdir().unwrap();
    let (code, _, err) = rampart(not_a_repo.path(), &["--from", "HEAD"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot open git repository"), "{err}");
}
