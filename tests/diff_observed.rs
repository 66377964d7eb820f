//! `rampart diff PATH --observed FILE`: the reference cluster's manifests against saved cluster
//! states. The converged state is not written by hand: the simulator runs the real planner and
//! agent logic to a steady state, and the hosts' files come from the renderers.

use std::path::{Path, PathBuf};
use std::process::Command;

use rampart::manifest::{self, ManifestSet};
use rampart::model::{Desired, DrbdRole, Lease, Time};
use rampart::render::{render_domain, render_res_redacted};
use rampart::simulator::{Engine, Snapshot};
use rampart::source::fs::Paths;

const SECRET: &str = "hunter2-never-show-me";

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

fn load() -> (ManifestSet, Desired) {
    let report = manifest::check(&Paths::new([manifests_dir()]));
    let desired = Desired::from_report(&report).expect("the reference cluster validates");
    (report.set, desired)
}

/// The reference cluster after the simulator has brought it to a steady state, with every
/// host reporting exactly the files the renderers give for its assignment.
fn converged() -> Snapshot {
    let (set, desired) = load();
    let mut engine = Engine::new(desired.clone());
    engine.run_until_stable(50);
    let mut observed = engine.observe();
    for (node, obs) in observed.nodes.iter_mut() {
        let assignment = &engine.placement.assignments[node];
        let report = obs.report.as_mut().expect("every node reports");
        for volume in assignment.volumes.keys() {
            if desired.volumes[volume].is_drbd() {
                report.artifacts.insert(
                    format!("/etc/drbd.d/{volume}.res"),
                    render_res_redacted(&set, volume).unwrap(),
                );
            }
        }
        for vm in assignment.vms.keys() {
            report.artifacts.insert(
                format!("/etc/libvirt/qemu/{vm}.xml"),
                render_domain(&set, vm).unwrap(),
            );
        }
    }
    Snapshot {
        now: engine.now,
        nodes: observed.nodes,
        operations: observed.operations,
        placement: Some(engine.placement.clone()),
    }
}

/// The node the simulator runs `vm` on.
fn runs_on(snap: &Snapshot, vm: &str) -> String {
    let nodes: Vec<&String> = snap
        .nodes
        .iter()
        .filter(|(_, o)| o.report.as_ref().is_some_and(|r| r.vm_running(vm)))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(nodes.len(), 1, "{vm} runs on exactly one node: {nodes:?}");
    nodes[0].clone()
}

fn write(dir: &Path, name: &str, snap: &Snapshot) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_yaml::to_string(snap).unwrap()).unwrap();
    p
}

fn rampart(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("diff")
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

fn diff_observed(file: &Path, extra: &[&str]) -> (i32, String, String) {
    let dir = manifests_dir();
    let mut args = vec![dir.to_str().unwrap(), "--observed", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    rampart(&args)
}

#[test]
fn a_converged_cluster_has_nothing_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = converged();
    let file = write(tmp.path(), "steady.yaml", &snap);
    let (code, out, err) = diff_observed(&file, &[]);
    assert_eq!(code, 0, "nothing to do exits 0\n{out}\n{err}");
    assert!(out.contains("\nnothing to do\n"), "{out}");
    assert!(out.contains("steady.yaml"), "{out}");
    for node in ["alpha", "beta", "witness"] {
        assert!(out.contains(&format!("node {node}: alive")), "{out}");
    }
    assert!(!out.contains("---"), "no file differs: {out}");

    let (code, out, _) = diff_observed(&file, &["-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["changes"], false);
    assert_eq!(v["manifests"]["valid"], true);
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!(n["agent"], "acts", "{n}");
        assert!(n["actions"].as_array().unwrap().is_empty(), "{n}");
        assert!(n["artifacts"].as_array().unwrap().is_empty(), "{n}");
        assert_eq!(n["assignment"]["changed"], false, "{n}");
    }

    // The library says the same.
    let (set, desired) = load();
    let d = rampart::diff::against_observed(&set, &desired, &snap).unwrap();
    assert!(!d.has_changes(), "{}", d.to_text(Default::default()));
}

#[test]
fn a_host_missing_its_vm_with_an_outdated_res_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut snap = converged();
    let node = runs_on(&snap, "www");
    let report = snap.nodes.get_mut(&node).unwrap().report.as_mut().unwrap();
    // The VM is gone, its volume demoted, its address down.
    report.vms.remove("www");
    report.volumes.get_mut("www").unwrap().role = DrbdRole::Secondary;
    report.addresses.clear();
    // www.res is an old file: the previous port, written before the volume had a secret.
    let res = report.artifacts.get_mut("/etc/drbd.d/www.res").unwrap();
    assert!(res.contains(":7789;"), "{res}");
    *res = res
        .replace(":7789;", ":7790;")
        .lines()
        .filter(|l| !l.contains("cram-hmac-alg") && !l.contains("shared-secret"))
        .map(|l| format!("{l}\n"))
        .collect();
    // files.res as the agent might have read it from disk, with the secret's value: the same
    // file once redacted, so it is not a change, and the value never shows.
    let files = report.artifacts.get_mut("/etc/drbd.d/files.res").unwrap();
    *files = files.replace(
        "\"<secret from /etc/rampart/secrets/drbd>\"",
        &format!("\"{SECRET}\""),
    );
    assert!(files.contains(SECRET));
    let file = write(tmp.path(), "drifted.yaml", &snap);

    let (code, out, err) = diff_observed(&file, &["--color", "never"]);
    assert_eq!(code, 1, "something to do exits 1\n{out}\n{err}");
    let section = out
        .split(&format!("\nnode {node}: "))
        .nth(1)
        .expect("the node has a section")
        .split("\nnode ")
        .next()
        .unwrap();
    // The agent's actions, in order: promote before start, the address after its VM.
    let promote = section
        .find("1. promote volume www to primary")
        .expect(section);
    let start = section.find("2. start vm www").expect(section);
    let address = section
        .find("3. add address 203.0.113.80/24 (www)")
        .expect(section);
    assert!(promote < start && start < address, "{section}");
    assert!(section.contains("assignment generation"), "{section}");
    assert!(
        section.contains("(unchanged)"),
        "the plan stays; the agent converges: {section}"
    );
    // The .res diff: the port lines, and the secret line added as a placeholder.
    let www = format!("--- a/{node}/etc/drbd.d/www.res\n+++ b/{node}/etc/drbd.d/www.res\n");
    assert!(
        section.contains("~ /etc/drbd.d/www.res changed"),
        "{section}"
    );
    assert!(section.contains(&www), "{section}");
    assert!(
        section.contains("-        address 192.168.100.1:7790;\n"),
        "{section}"
    );
    assert!(
        section.contains("+        address 192.168.100.1:7789;\n"),
        "{section}"
    );
    assert!(
        section.contains("+        shared-secret \"<secret from /etc/rampart/secrets/drbd>\";\n"),
        "{section}"
    );
    assert!(
        !section.contains("files.res"),
        "files.res matches once redacted: {section}"
    );
    assert!(!out.contains(SECRET), "a secret is never shown: {out}");
    assert!(
        out.contains("would change: 0 fence requests, 0 assignments, 3 agent actions, 1 file"),
        "{out}"
    );
    // Other nodes have nothing to do.
    assert_eq!(out.matches("nothing to do").count(), 2, "{out}");

    // Same content for tools.
    let (code, json, _) = diff_observed(&file, &["-o", "json"]);
    assert_eq!(code, 1);
    assert!(!json.contains(SECRET));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let n = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node.as_str())
        .unwrap();
    let texts: Vec<&str> = n["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "promote volume www to primary",
            "start vm www",
            "add address 203.0.113.80/24 (www)"
        ]
    );
    assert_eq!(n["actions"][0]["action"]["promote"]["volume"], "www");
    assert_eq!(n["artifacts"][0]["path"], "/etc/drbd.d/www.res");
    assert_eq!(n["artifacts"][0]["change"], "changed");
    assert!(n["artifacts"][0]["diff"]
        .as_str()
        .unwrap()
        .contains("+        address 192.168.100.2:7789;"));
    assert_eq!(v["summary"]["actions"], 3);
    assert_eq!(v["summary"]["filesChanged"], 1);

    // Colour on request, only in the diffs.
    let (_, out, _) = diff_observed(&file, &["--color", "always"]);
    assert!(
        out.contains("\x1b[32m+        address 192.168.100.1:7789;\x1b[0m"),
        "{out}"
    );
    // --summary names the file without its diff.
    let (_, out, _) = diff_observed(&file, &["--summary"]);
    assert!(
        out.contains("~ /etc/drbd.d/www.res changed") && !out.contains("@@"),
        "{out}"
    );
}

#[test]
fn files_a_host_would_no_longer_get_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut snap = converged();
    let report = snap
        .nodes
        .get_mut("witness")
        .unwrap()
        .report
        .as_mut()
        .unwrap();
    report.artifacts.insert(
        "/etc/drbd.d/old.res".into(),
        format!("resource old {{\n    net {{ shared-secret {SECRET}; }}\n}}\n"),
    );
    let file = write(tmp.path(), "leftover.yaml", &snap);
    let (code, out, _) = diff_observed(&file, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("- /etc/drbd.d/old.res removed"), "{out}");
    assert!(
        out.contains("--- a/witness/etc/drbd.d/old.res\n+++ /dev/null\n"),
        "{out}"
    );
    assert!(out.contains("shared-secret \"<secret redacted>\""), "{out}");
    assert!(!out.contains(SECRET), "{out}");
}

#[test]
fn a_node_whose_lease_expired_is_fenced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut snap = converged();
    let node = runs_on(&snap, "files");
    // Its lease ran out a moment ago; its last report still shows what it ran.
    snap.nodes.get_mut(&node).unwrap().lease = Lease::Expired(Time(snap.now.0 - 1000));
    let file = write(tmp.path(), "lost.yaml", &snap);
    let (code, out, err) = diff_observed(&file, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    let section = out.split(&format!("\nnode {node}: ")).nth(1).unwrap();
    let section = section.split("\nnode ").next().unwrap();
    assert!(section.starts_with("lease expired at"), "{section}");
    assert!(
        section.contains(&format!("fence: level 1 via {node}-ipmi")),
        "{section}"
    );
    assert!(section.contains("its agent is lost"), "{section}");
    assert!(
        !section.contains("agent actions"),
        "a lost agent takes nothing: {section}"
    );
    assert!(out.contains("would change: 1 fence request"), "{out}");
    assert!(
        out.contains(&format!("waiting on fencing of {node}")),
        "the moves wait on it: {out}"
    );

    let (_, json, _) = diff_observed(&file, &["-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let n = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node.as_str())
        .unwrap();
    assert_eq!(n["agent"], "lost");
    assert_eq!(n["fence"][0]["level"], 1);
    assert_eq!(
        n["fence"][0]["devices"][0]["device"],
        format!("{node}-ipmi")
    );
}

#[test]
fn unusable_snapshots_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.yaml");
    std::fs::write(&garbage, "\u{1}\u{2} this is {not: [a snapshot\n").unwrap();
    let (code, out, err) = diff_observed(&garbage, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("garbage.yaml"), "{err}");
    assert!(out.is_empty(), "{out}");

    // A YAML error is located.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "now: 5\nnodes:\n  alpha:\n    lease: sleepy\n").unwrap();
    let (code, _, err) = diff_observed(&bad, &[]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("{}:4:12: ", bad.display())), "{err}");
    assert!(err.contains("sleepy"), "{err}");

    let empty = tmp.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    let (code, _, err) = diff_observed(&empty, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("empty.yaml: the file is empty"), "{err}");

    let missing = tmp.path().join("missing.yaml");
    let (code, _, err) = diff_observed(&missing, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.yaml: cannot read"), "{err}");
}

#[test]
fn invalid_manifests_are_errors_with_their_diagnostics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("cluster.yaml"),
        "apiVersion: rampart.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: lab\nspec:\n  colour: blue\n",
    )
    .unwrap();
    let snap = write(tmp.path(), "steady.yaml", &converged());
    let (code, out, err) = rampart(&[dir.to_str().unwrap(), "--observed", snap.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("cluster.yaml:6:3: error"), "{err}");
    assert!(err.contains("do not validate"), "{err}");

    // --observed is a mode of its own.
    let (code, _, err) = rampart(&["--observed", snap.to_str().unwrap(), "--from", "HEAD"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");
}
